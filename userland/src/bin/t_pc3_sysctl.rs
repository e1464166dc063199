//! The length limit of a number written to `/proc/sys/vm/dirty_*` (docs/file-memory.md, "Dirty
//! limits"; Linux `proc_get_long`): from the first non-space byte, the sign, a `0x` prefix and
//! the digits must stay under 21 bytes, leading zeroes included; 21 or more are `EINVAL`, and
//! the value is left as it was. White space before or after the number does not count.
//!
//! Everywhere (cowlab and the host, where `/proc/sys/vm` is writable: root; skipped, said so,
//! elsewhere). The writes run in a forked child; the parent restores `dirty_ratio`,
//! `dirty_bytes` and `dirty_expire_centisecs` whatever the child did.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::CPath as P;
use cowlab_userland::println;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const EINVAL: i32 = 22;

fn path(name: &str) -> P {
    P::new(&format!("/proc/sys/vm/{name}"))
}

fn get(name: &str) -> Option<i64> {
    let mut buf = [0u8; 64];
    let n = read_file(path(name).c(), &mut buf)?;
    core::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

fn set(name: &str, text: &str) -> Result<usize, Errno> {
    let fd = open(path(name).c(), O_WRONLY)?;
    let r = write(fd, text.as_bytes());
    let _ = close(fd);
    r
}

fn errno_of<T>(r: Result<T, Errno>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.0,
    }
}

fn writes(t: &mut Tester, ratio: i64) {
    let zeroes = |n: usize| "0".repeat(n);
    // 20 bytes: taken (octal, since it starts with 0: 020 is 16).
    let twenty = format!("{}20", zeroes(18));
    t.eq(
        "dirty_ratio = 20 bytes of digits",
        set("dirty_ratio", &twenty),
        Ok(20),
    );
    t.eq("reads 16 (octal 020)", get("dirty_ratio"), Some(16));
    for (name, text) in [
        ("dirty_ratio", format!("{}20", zeroes(19))),
        ("dirty_ratio", format!("{}20", zeroes(20))),
        ("dirty_ratio", format!("{}20", zeroes(40))),
        ("dirty_ratio", format!("   {}7\n", zeroes(20))),
        ("dirty_ratio", format!("-{}", zeroes(20))),
        ("dirty_expire_centisecs", format!("0x{}BB8", zeroes(16))),
    ] {
        t.eq(
            &format!("{name} = {} bytes {text:?} is EINVAL", text.len()),
            errno_of(set(name, &text)),
            EINVAL,
        );
    }
    t.eq(
        "the refused writes left dirty_ratio",
        get("dirty_ratio"),
        Some(16),
    );
    // White space around the number does not count towards the limit.
    let spaced = format!("{}{ratio}{}", " ".repeat(25), " ".repeat(25));
    t.eq(
        "25 spaces, the number, 25 spaces: all counted",
        set("dirty_ratio", &spaced),
        Ok(spaced.len()),
    );
    t.eq("reads the number", get("dirty_ratio"), Some(ratio));
    let hex = format!("0x{}BB8", zeroes(15));
    t.eq(
        "dirty_expire_centisecs = 0x, 15 zeroes, BB8 (20 bytes)",
        set("dirty_expire_centisecs", &hex),
        Ok(20),
    );
    t.eq("reads 3000", get("dirty_expire_centisecs"), Some(3000));
    let negative = format!("-{}", zeroes(19));
    t.eq(
        "dirty_ratio = minus and 19 zeroes (20 bytes)",
        set("dirty_ratio", &negative),
        Ok(20),
    );
    t.eq("reads 0", get("dirty_ratio"), Some(0));
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc3_sysctl");
    let saved = ["dirty_ratio", "dirty_bytes", "dirty_expire_centisecs"].map(get);
    t.check(
        "the three files read numbers",
        saved.iter().all(Option::is_some),
    );
    let [Some(ratio), Some(bytes), Some(expire)] = saved else {
        return t.finish();
    };
    if let Err(e) = set("dirty_expire_centisecs", &format!("{expire}")) {
        println!(
            "t_pc3_sysctl: skip the writes (/proc/sys/vm is not writable here: errno {}; needs root)",
            e.0
        );
        return t.finish();
    }
    let status = in_child(|| {
        let mut c = Tester::new("t_pc3_sysctl");
        writes(&mut c, if ratio == 0 { 20 } else { ratio });
        c.status()
    });
    // The non-zero one of the pair counts; writing it zeroes the other.
    if bytes > 0 {
        let _ = set("dirty_bytes", &format!("{bytes}"));
    } else {
        let _ = set("dirty_ratio", &format!("{ratio}"));
    }
    let _ = set("dirty_expire_centisecs", &format!("{expire}"));
    t.eq("the writing checks (a child) passed", status, 0);
    t.eq(
        "every value restored",
        ["dirty_ratio", "dirty_bytes", "dirty_expire_centisecs"].map(get),
        saved,
    );
    t.finish()
}
