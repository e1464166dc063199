//! Credentials for the tests that must run unprivileged on both systems (cowlab and a root
//! host): dropping every id and the supplementary groups, and the auxiliary vector's values.

use crate::sys::Errno;

/// setgroups(0), setresgid(gid x3), setresuid(uid x3): from root to a process without any
/// privilege (Linux clears all capabilities when no uid is 0 any more).
pub fn drop_to(uid: u32, gid: u32) -> Result<(), Errno> {
    let (u, g) = (uid as usize, gid as usize);
    // SAFETY: setgroups with size 0 reads no memory; the id calls take integers.
    unsafe {
        crate::calls::raw(116, [0, 0, 0, 0, 0, 0])?;
        crate::calls::raw(119, [g, g, g, 0, 0, 0])?;
        crate::calls::raw(117, [u, u, u, 0, 0, 0])?;
    }
    Ok(())
}

/// The real, effective and saved uids (getresuid).
pub fn getresuid() -> [u32; 3] {
    ids(118)
}

/// The real, effective and saved gids (getresgid).
pub fn getresgid() -> [u32; 3] {
    ids(120)
}

fn ids(nr: usize) -> [u32; 3] {
    let mut ids = [u32::MAX; 3];
    let [a, b, c] = ids.each_mut().map(|r| r as *mut u32 as usize);
    // SAFETY: the three pointers are to live `u32`s.
    let _ = unsafe { crate::calls::raw(nr, [a, b, c, 0, 0, 0]) };
    ids
}

/// The value of auxiliary-vector entry `key` (Linux `getauxval`), if the kernel passed one.
pub fn getauxval(key: u64) -> Option<u64> {
    crate::args::auxv().find(|&(k, _)| k == key).map(|(_, v)| v)
}

/// The path of the running program (`/proc/self/exe`), for copying or running it again.
pub fn self_exe() -> alloc_crate::string::String {
    let mut buf = [0u8; 512];
    let link = c"/proc/self/exe";
    // SAFETY: readlink writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        crate::calls::raw(
            89,
            [
                link.as_ptr() as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
                0,
                0,
                0,
            ],
        )
    }
    .unwrap_or(0);
    alloc_crate::string::String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A fresh directory (mode 0755) for a credentials test named `name`: `$T_CRED_DIR/name.PID`,
/// else under `/` on cowlab (the ext2 root: chown and chmod work on ext2 only) and `/tmp` on
/// the host.
pub fn work_dir(name: &str) -> alloc_crate::string::String {
    let mut base = alloc_crate::string::String::new();
    for var in crate::args::env() {
        if let Some(v) = var.to_bytes().strip_prefix(b"T_CRED_DIR=") {
            base = alloc_crate::string::String::from_utf8_lossy(v).into_owned();
        }
    }
    if base.is_empty() && !crate::test::on_cowlab() {
        base.push_str("/tmp");
    }
    alloc_crate::format!("{base}/{name}.{}", crate::sys::getpid())
}
