//! What the page-cache test programs (`t_pcache_*`, `t_pcfix_*`, `t_pc2_*`, `t_pc3_*`,
//! `t_pagecache`, `t_filemap`, `t_seed002`) share to set up their files: the directory they
//! work in (the first argument, else the working directory: on the host a real disk
//! filesystem, on cowlab the ext2 root), the memory manager's counters
//! (`/proc/cowlab/mmstat`, cowlab only) and `drop_caches`. Paths and raw calls are
//! [`crate::cpath`]'s.

use alloc_crate::string::String;

use crate::calls::{close, open, read_file, write, O_WRONLY};

/// The directory a test works in: its first argument, else `.`.
pub fn base_dir() -> String {
    crate::args::args()
        .nth(1)
        .and_then(|a| a.to_str().ok().map(String::from))
        .unwrap_or_else(|| String::from("."))
}

/// One counter of `/proc/cowlab/mmstat` (`None` on the host, or if it is not there).
pub fn mmstat(name: &str) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(c"/proc/cowlab/mmstat", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `echo 3 > /proc/sys/vm/drop_caches`: whether it was done (on the host it needs root).
pub fn drop_caches() -> bool {
    let Ok(fd) = open(c"/proc/sys/vm/drop_caches", O_WRONLY) else {
        return false;
    };
    let ok = write(fd, b"3") == Ok(1);
    let _ = close(fd);
    ok
}
