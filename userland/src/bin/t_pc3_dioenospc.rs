//! An `O_DIRECT` write that runs out of space leaves the file's size at what reached the disk
//! (Linux: `ext2_write_failed` after a direct write trims the blocks and size its allocation
//! prepared; `i_size` grows only by what was written). cowlab's `direct_write_begin` grows the
//! disk's size over the blocks it allocated before `ENOSPC` (a block past the size is an
//! e2fsck error); the caller must give those back under the same lock, or the file, once its
//! cache is forgotten, shows a size (and blocks of zeroes) nobody wrote.
//!
//! In `<dir>/t_pc3_dioenospc.PID`: a 100 KiB file (not a whole number of the 64 KiB pieces
//! a direct write is taken in, so the piece that runs out allocates some blocks first) is written and synced, the disk is filled,
//! the small file is removed (a little room), then one 1 MiB `O_DIRECT` write into an empty
//! file: a short count `n` (or `ENOSPC`, `n` = 0); the size is `n` before and after the cache
//! is dropped, and the file holds no more blocks than `n` needs.
//!
//! QEMU-only (`xtask/src/usertest.rs`): it fills the filesystem it runs on.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, drop_caches};
use cowlab_userland::sys::Errno;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const ENOSPC: i32 = 28;
const LEN: usize = 1 << 20;

fn errno_of<T>(r: Result<T, Errno>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.0,
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc3_dioenospc");
    let base = base_dir();
    let dir = format!("{base}/t_pc3_dioenospc.{}", cowlab_userland::sys::getpid());
    t.eq(
        "mkdir",
        errno_of(sys(83, &[P::new(&dir).c().as_ptr() as usize, 0o755])),
        0,
    );
    let small_name = P::new(&format!("{dir}/small"));
    let fill_name = P::new(&format!("{dir}/fill"));
    let dio_name = P::new(&format!("{dir}/dio"));
    let small = open_mode(small_name.c(), O_CREAT | O_EXCL | O_WRONLY, 0o644).unwrap_or(-1);
    t.eq(
        "write 100 KiB",
        write(small, &vec![0x11u8; 100 << 10]),
        Ok(100 << 10),
    );
    t.eq("fsync", errno_of(sys(74, &[small as usize])), 0);
    let _ = close(small);
    let dio = open_mode(dio_name.c(), O_CREAT | O_EXCL | O_RDWR | O_DIRECT, 0o644).unwrap_or(-1);
    t.check("open O_DIRECT", dio >= 0);

    let fill = open_mode(fill_name.c(), O_CREAT | O_EXCL | O_WRONLY, 0o644).unwrap_or(-1);
    let mut last = Ok(0);
    for chunk in [1 << 20, 4096, 1024] {
        let buf = vec![0x5au8; chunk];
        for _ in 0..100_000 {
            last = write(fill, &buf);
            if last != Ok(chunk) {
                break;
            }
        }
    }
    t.eq("the filler ends in ENOSPC", errno_of(last), ENOSPC);
    t.eq("fsync the filler", errno_of(sys(74, &[fill as usize])), 0);
    t.eq(
        "unlink the small file (a little room)",
        errno_of(unlink(small_name.c())),
        0,
    );

    let buf = mmap(0, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    t.check("mmap the buffer", buf != 0);
    if buf == 0 || dio < 0 {
        return t.finish();
    }
    // SAFETY: `buf` is a fresh private mapping of LEN bytes, ours alone.
    let data = unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, LEN) };
    data.fill(0x77);
    let r = pwrite(dio, data, 0);
    t.check(
        "the 1 MiB direct write is cut short or ENOSPC",
        matches!(r, Ok(n) if n < LEN) || errno_of(r) == ENOSPC,
    );
    let n = r.unwrap_or(0);
    t.check("its count is whole sectors", n % 512 == 0);
    t.eq(
        "the size is what was written",
        fstat(dio).map(|s| s.st_size),
        Ok(n as i64),
    );
    let _ = close(dio);
    let _ = close(fill);
    let dropped = drop_caches();
    t.check("drop_caches", dropped);
    let dio = open(dio_name.c(), O_RDONLY).unwrap_or(-1);
    let st = fstat(dio);
    t.eq(
        "after the cache is dropped, the disk's size is what was written",
        st.map(|s| s.st_size),
        Ok(n as i64),
    );
    // The data blocks `n` needs, and at most two indirect blocks of up to 4 KiB.
    let room = (n as i64 + 4095) / 4096 * 4096 + 2 * 4096;
    let held = st.map(|s| s.st_blocks * 512).unwrap_or(-1);
    t.check(
        &format!("no blocks held past what was written ({held} bytes for {n})"),
        (0..=room).contains(&held) && (n > 0 || held == 0),
    );
    if n > 0 {
        let mut back = vec![0u8; 512];
        t.eq(
            "the written bytes read back",
            pread(dio, &mut back, (n - 512) as u64),
            Ok(512),
        );
        t.check("(their value)", back.iter().all(|&b| b == 0x77));
    }
    let _ = close(dio);
    let _ = munmap(buf, LEN);
    t.eq("unlink the filler", errno_of(unlink(fill_name.c())), 0);
    t.eq("unlink", errno_of(unlink(dio_name.c())), 0);
    t.eq("rmdir", errno_of(rmdir(P::new(&dir).c())), 0);
    t.finish()
}
