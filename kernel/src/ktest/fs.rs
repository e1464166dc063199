//! Tests of the file seam from inside the kernel: `FileOps` reached through `fs::rw` with
//! kernel buffers (`ITER_KVEC`), as a kernel caller (a loader, a file system) would use them.
#![deny(unsafe_code)]

use super::{ensure, TestResult};
use crate::fs::iter::IoIter;
use crate::fs::{self, rw};

/// A ramdisk file read through a `KVEC` iterator at the file's position, which moves on; a
/// memfd written from one and read back into another at explicit offsets; a `KVEC` source
/// cannot be read into (nothing moves) and a `KVEC` destination cannot be written from.
pub fn fs_kvec_read_write_through_file_ops() -> TestResult {
    let Ok(init) = fs::open_mode("/init", 0, 0) else {
        return Ok(()); // an image without init (not one xtask builds)
    };
    let mut head = [0u8; 4];
    let n = rw::vfs_read(&init, None, &mut IoIter::kernel_dest(&mut head));
    ensure!(n == Ok(4), "read of /init: {n:?}");
    ensure!(
        head == *b"\x7fELF",
        "/init does not start with the ELF magic"
    );
    let n = rw::vfs_read(&init, None, &mut IoIter::kernel_dest(&mut head));
    ensure!(
        n == Ok(4) && head[0] == 2,
        "the second read did not continue at byte 4 (ELFCLASS64)"
    );

    let memfd = fs::memfd::create("ktest", false);
    let n = rw::vfs_write(&memfd, Some(3), &mut IoIter::kernel_source(b"seam"));
    ensure!(n == Ok(4), "write to a memfd: {n:?}");
    let mut back = [0xffu8; 10];
    let n = rw::vfs_read(&memfd, Some(0), &mut IoIter::kernel_dest(&mut back));
    ensure!(n == Ok(7), "read of a 7-byte memfd: {n:?}");
    ensure!(back[..7] == *b"\0\0\0seam", "memfd holds {:?}", &back[..7]);
    ensure!(
        back[7..] == [0xff; 3],
        "the read wrote past what it returned"
    );

    let mut wrong = IoIter::kernel_source(b"abc");
    ensure!(wrong.copy_to(b"xyz") == 0, "a KVEC source was written into");
    let mut buf = [0u8; 3];
    let mut wrong = IoIter::kernel_dest(&mut buf);
    let mut out = [0u8; 3];
    ensure!(
        wrong.copy_from(&mut out) == 0,
        "a KVEC destination was read from"
    );
    Ok(())
}

/// The mount table: the longest mount prefix takes a path, after `.` and `..`; what lies
/// below the mount is left to its directory.
pub fn fs_mount_walk_longest_prefix() -> TestResult {
    use crate::fs::mount::walk;
    let cases: [(&str, &str, Option<&str>, bool); 8] = [
        ("/", "/", None, false),
        ("init", "/", Some("init"), false),
        ("/tmp/", "/tmp", None, false),
        ("/tmp/x/", "/tmp", Some("x"), true),
        ("/tmp/../dev/./null", "/dev", Some("null"), false),
        (
            "/sys/kernel/debug/gup_test",
            "/sys/kernel/debug",
            Some("gup_test"),
            false,
        ),
        ("/sys/kernel", "/", Some("sys/kernel"), false),
        ("/proc/self/maps", "/proc", Some("self/maps"), false),
    ];
    for (path, mount, name, slash) in cases {
        let w = walk(path);
        ensure!(
            w.mount.path == mount && w.name.as_deref() == name && w.trailing_slash == slash,
            "walk({path:?}) = ({:?}, {:?}, {})",
            w.mount.path,
            w.name,
            w.trailing_slash
        );
    }
    Ok(())
}
