//! Just enough ELF reading to check that a userland program is what the kernel's loader and the
//! host Linux expect: a static, non-PIE x86_64 executable (`ET_EXEC`, no interpreter, no dynamic
//! section) whose lowest segment starts at 0x400000.

use anyhow::{bail, ensure, Context, Result};

/// Where every userland program is linked (userland/build.rs).
pub const USER_IMAGE_BASE: u64 = 0x40_0000;

/// Where the bootloader loads the kernel (`kernel_base` in docs/architecture.md).
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;

fn u16_at(bytes: &[u8], at: usize) -> Result<u16> {
    let b = bytes.get(at..at + 2).context("ELF truncated")?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32> {
    let b = bytes.get(at..at + 4).context("ELF truncated")?;
    Ok(u32::from_le_bytes(b.try_into()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64> {
    let b = bytes.get(at..at + 8).context("ELF truncated")?;
    Ok(u64::from_le_bytes(b.try_into()?))
}

/// How far the loaded kernel sits above its ELF addresses: a position-independent kernel
/// (`ET_DYN`, linked at 0) is loaded at [`KERNEL_BASE`]; one linked at its load address
/// (`ET_EXEC`) is where its ELF says.
pub fn kernel_load_offset(bytes: &[u8]) -> Result<u64> {
    ensure!(
        bytes.starts_with(b"\x7fELF\x02\x01"),
        "not a little-endian ELF64 file"
    );
    match u16_at(bytes, 16)? {
        ET_EXEC => Ok(0),
        ET_DYN => Ok(KERNEL_BASE),
        other => bail!("ELF type {other} is neither ET_EXEC nor ET_DYN"),
    }
}

/// Checks `bytes` is a static non-PIE x86_64 executable based at [`USER_IMAGE_BASE`]; returns
/// its entry point.
pub fn check_static_exec(bytes: &[u8]) -> Result<u64> {
    ensure!(
        bytes.starts_with(b"\x7fELF\x02\x01"),
        "not a little-endian ELF64 file"
    );
    let e_type = u16_at(bytes, 16)?;
    ensure!(
        e_type == ET_EXEC,
        "ELF type is {e_type}, not ET_EXEC (2): linked as PIE or a shared object"
    );
    let machine = u16_at(bytes, 18)?;
    ensure!(machine == EM_X86_64, "ELF machine is {machine}, not x86_64");
    let entry = u64_at(bytes, 24)?;
    let phoff = usize::try_from(u64_at(bytes, 32)?)?;
    let phentsize = usize::from(u16_at(bytes, 54)?);
    let phnum = usize::from(u16_at(bytes, 56)?);
    let mut lowest_load = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(bytes, ph)? {
            PT_INTERP => bail!("has a program interpreter (PT_INTERP): dynamically linked"),
            PT_DYNAMIC => bail!("has a dynamic section (PT_DYNAMIC): not fully static"),
            PT_LOAD => {
                let vaddr = u64_at(bytes, ph + 16)?;
                lowest_load = Some(lowest_load.map_or(vaddr, |low: u64| low.min(vaddr)));
            }
            _ => {}
        }
    }
    let base = lowest_load.context("no loadable segment")?;
    ensure!(
        base == USER_IMAGE_BASE,
        "lowest segment at {base:#x}, expected {USER_IMAGE_BASE:#x}"
    );
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF header with one program header of type `ptype` at `vaddr`.
    fn elf(e_type: u16, ptype: u32, vaddr: u64) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[24..32].copy_from_slice(&0x40_1000u64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&ptype.to_le_bytes());
        b[64 + 16..64 + 24].copy_from_slice(&vaddr.to_le_bytes());
        b
    }

    #[test]
    fn accepts_static_exec_at_the_base() {
        assert_eq!(
            check_static_exec(&elf(ET_EXEC, PT_LOAD, USER_IMAGE_BASE)).unwrap(),
            0x40_1000
        );
    }

    #[test]
    fn pie_kernels_are_offset_by_the_kernel_base() {
        assert_eq!(
            kernel_load_offset(&elf(ET_DYN, PT_LOAD, 0)).unwrap(),
            KERNEL_BASE
        );
        assert_eq!(
            kernel_load_offset(&elf(ET_EXEC, PT_LOAD, KERNEL_BASE)).unwrap(),
            0
        );
    }

    #[test]
    fn rejects_pie_dynamic_and_wrong_base() {
        assert!(check_static_exec(&elf(3, PT_LOAD, 0)).is_err());
        assert!(check_static_exec(&elf(ET_EXEC, PT_INTERP, 0)).is_err());
        assert!(check_static_exec(&elf(ET_EXEC, PT_LOAD, 0x20_0000)).is_err());
        assert!(check_static_exec(b"MZ").is_err());
    }
}
