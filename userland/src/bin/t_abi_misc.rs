//! Issue 13's small calls and devices, with Linux's answers (the same checks pass on the host):
//! `/dev/zero` (reads zeros, takes writes), `/dev/full` (reads zeros, writes `ENOSPC`),
//! `/dev/urandom` and `/dev/random` (bytes that differ between reads), their device numbers;
//! the id calls (`getuid`, `geteuid`, `getgid`, `getegid`, `getgroups`, `getresuid`,
//! `getresgid`: consistent with each other, `EINVAL`/`EFAULT` as Linux).
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

fn sc(n: usize, a: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: the calls below pass valid buffers or deliberately bad addresses to be refused.
    unsafe { raw(n, a) }
}

fn main() -> i32 {
    let mut t = Tester::new("t_abi_misc");
    let efault = Err(Errno(errno::EFAULT));
    let einval = Err(Errno(errno::EINVAL));

    // /dev/zero
    let z = open(c"/dev/zero", O_RDWR).unwrap_or(-1);
    let mut buf = [0xaau8; 10000];
    t.eq("read /dev/zero", read(z, &mut buf), Ok(10000));
    t.check("/dev/zero reads zeros", buf.iter().all(|&b| b == 0));
    t.eq("write /dev/zero", write(z, b"abc"), Ok(3));
    t.eq(
        "read /dev/zero into a bad buffer",
        sc(0, [z as usize, 8, 16, 0, 0, 0]),
        efault,
    );
    let st = fstat(z).ok();
    t.eq(
        "/dev/zero is char 1:5",
        st.map(|s| (s.st_mode & S_IFMT, s.st_rdev)),
        Some((0o020000, 0x105)),
    );
    let _ = close(z);

    // /dev/full
    let f = open(c"/dev/full", O_RDWR).unwrap_or(-1);
    buf[..4].copy_from_slice(b"abcd");
    t.eq("read /dev/full", read(f, &mut buf[..4]), Ok(4));
    t.eq("/dev/full reads zeros", &buf[..4], &[0u8; 4][..]);
    t.eq("write /dev/full", write(f, b"x"), Err(Errno(28)));
    t.eq(
        "/dev/full is char 1:7",
        fstat(f).ok().map(|s| s.st_rdev),
        Some(0x107),
    );
    let _ = close(f);

    // /dev/urandom and /dev/random
    for (name, path, rdev) in [
        ("urandom", c"/dev/urandom", 0x109),
        ("random", c"/dev/random", 0x108),
    ] {
        let r = open(path, O_RDONLY).unwrap_or(-1);
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        let ok = read(r, &mut a) == Ok(32) && read(r, &mut b) == Ok(32);
        t.check_why(&alloc::format!("read /dev/{name}"), ok, r);
        t.check(
            &alloc::format!("/dev/{name}: two reads differ"),
            a != b && a != [0; 32],
        );
        t.eq(
            &alloc::format!("/dev/{name} rdev"),
            fstat(r).ok().map(|s| s.st_rdev),
            Some(rdev),
        );
        let _ = close(r);
    }
    let r = open(c"/dev/urandom", O_RDWR).unwrap_or(-1);
    t.eq("write /dev/urandom", write(r, b"entropy"), Ok(7));
    let _ = close(r);

    // The id calls.
    let uid = sc(102, [0; 6]);
    let gid = sc(104, [0; 6]);
    t.eq("geteuid = getuid (not set-uid)", sc(107, [0; 6]), uid);
    t.eq("getegid = getgid", sc(108, [0; 6]), gid);
    let mut ids = [u32::MAX; 3];
    t.eq(
        "getresuid",
        sc(
            118,
            [
                ids.as_mut_ptr() as usize,
                ids[1..].as_mut_ptr() as usize,
                ids[2..].as_mut_ptr() as usize,
                0,
                0,
                0,
            ],
        ),
        Ok(0),
    );
    t.eq(
        "getresuid = (uid, euid, suid)",
        ids.map(|i| i as usize),
        [uid.unwrap_or(9); 3],
    );
    let mut ids = [u32::MAX; 3];
    t.eq(
        "getresgid",
        sc(
            120,
            [
                ids.as_mut_ptr() as usize,
                ids[1..].as_mut_ptr() as usize,
                ids[2..].as_mut_ptr() as usize,
                0,
                0,
                0,
            ],
        ),
        Ok(0),
    );
    t.eq(
        "getresgid = (gid, egid, sgid)",
        ids.map(|i| i as usize),
        [gid.unwrap_or(9); 3],
    );
    let mut one = 0u32;
    let p = &mut one as *mut u32 as usize;
    t.eq(
        "getresuid to a bad address",
        sc(118, [p, p, 8, 0, 0, 0]),
        efault,
    );
    let n = sc(115, [0, 0, 0, 0, 0, 0]);
    t.check_why("getgroups(0) counts", n.is_ok(), format_args!("{n:?}"));
    let mut groups = [0u32; 64];
    let got = sc(115, [64, groups.as_mut_ptr() as usize, 0, 0, 0, 0]);
    t.eq("getgroups fills the count", got, n);
    t.eq(
        "getgroups(-1)",
        sc(115, [usize::MAX, groups.as_mut_ptr() as usize, 0, 0, 0, 0]),
        einval,
    );
    t.finish()
}

extern crate alloc;
