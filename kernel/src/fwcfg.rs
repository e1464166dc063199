//! QEMU's fw_cfg device, read through its legacy I/O ports: where the command line comes from.
//!
//! fw_cfg is a key-value store QEMU exposes to firmware: write a 16-bit selector to port 0x510,
//! then read the item byte by byte from port 0x511. Selector 0 holds the signature "QEMU";
//! selector 0x19 holds the file directory (a big-endian count, then 64-byte entries of size,
//! selector and a NUL-padded name), which is how `-fw_cfg name=opt/cowlab/cmdline,string=...`
//! items are found. Absent device or absent file both read as "no such file".

use x86_64::instructions::port::Port;

const SELECTOR_PORT: u16 = 0x510;
const DATA_PORT: u16 = 0x511;
const SIGNATURE_SELECTOR: u16 = 0x0000;
const FILE_DIR_SELECTOR: u16 = 0x0019;
const NAME_LEN: usize = 56;

/// A cursor over the fw_cfg item most recently selected.
struct Item;

impl Item {
    fn select(selector: u16) -> Item {
        // SAFETY: fw_cfg's selector port; selecting an item only rewinds the read cursor of the
        // device, and nothing else in the kernel uses fw_cfg concurrently (boot is single-threaded).
        unsafe { Port::<u16>::new(SELECTOR_PORT).write(selector) };
        Item
    }

    fn read_u8(&mut self) -> u8 {
        // SAFETY: reads the next byte of the selected item (0 past its end, or with no device).
        unsafe { Port::<u8>::new(DATA_PORT).read() }
    }

    fn read_into(&mut self, buf: &mut [u8]) {
        for byte in buf {
            *byte = self.read_u8();
        }
    }

    fn read_be_u32(&mut self) -> u32 {
        let mut bytes = [0; 4];
        self.read_into(&mut bytes);
        u32::from_be_bytes(bytes)
    }

    fn read_be_u16(&mut self) -> u16 {
        let mut bytes = [0; 2];
        self.read_into(&mut bytes);
        u16::from_be_bytes(bytes)
    }
}

/// Whether a fw_cfg device answers with the "QEMU" signature.
pub fn present() -> bool {
    let mut item = Item::select(SIGNATURE_SELECTOR);
    let mut signature = [0; 4];
    item.read_into(&mut signature);
    &signature == b"QEMU"
}

/// Reads the fw_cfg file `name` into `buf`, returning its length (truncated to `buf.len()`), or
/// `None` if there is no fw_cfg device or no such file.
pub fn read_file(name: &str, buf: &mut [u8]) -> Option<usize> {
    if !present() {
        return None;
    }
    let mut dir = Item::select(FILE_DIR_SELECTOR);
    let count = dir.read_be_u32();
    let mut found = None;
    for _ in 0..count {
        let size = dir.read_be_u32();
        let selector = dir.read_be_u16();
        let _reserved = dir.read_be_u16();
        let mut entry_name = [0u8; NAME_LEN];
        dir.read_into(&mut entry_name);
        let len = entry_name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        if &entry_name[..len] == name.as_bytes() && found.is_none() {
            found = Some((selector, size as usize));
        }
    }
    let (selector, size) = found?;
    let len = size.min(buf.len());
    Item::select(selector).read_into(&mut buf[..len]);
    Some(len)
}
