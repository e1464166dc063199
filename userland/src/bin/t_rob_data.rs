//! `RLIMIT_DATA` (issue 17): private writable mappings and the heap are limited (Linux
//! `may_expand_vm`'s `data_vm`, `check_data_rlimit`): past the limit a private writable `mmap`
//! and an `mremap` that grows one are `ENOMEM`, and `brk` keeps the old break; shared,
//! read-only and `PROT_NONE` mappings are not counted. Runs on the host Linux too.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::rlimit::*;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const ENOMEM: Errno = Errno(12);
const RLIMIT_DATA: u32 = 2;
const MIB: usize = 1 << 20;
const MAP_SHARED: u32 = 0x01;
const MREMAP_MAYMOVE: u32 = 1;

/// Each check in a child (the limit dies with it): the step that failed, or 0.
fn case(t: &mut Tester, name: &str, body: fn() -> i32) {
    let status = in_child(|| {
        if set_soft(RLIMIT_DATA, 4 * MIB as u64).is_err() {
            return 100;
        }
        body()
    });
    t.check_why(name, status == 0, status >> 8);
}

fn main() -> i32 {
    let mut t = Tester::new("t_rob_data");
    case(
        &mut t,
        "a private writable mmap past RLIMIT_DATA: ENOMEM",
        || match mmap(
            0,
            8 * MIB,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
        ) {
            Err(ENOMEM) => 0,
            _ => 1,
        },
    );
    case(&mut t, "one below it: mapped", || {
        match mmap(0, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) {
            Ok(_) => 0,
            _ => 1,
        }
    });
    case(
        &mut t,
        "shared, read-only and PROT_NONE mappings are not counted",
        || {
            let rw = PROT_READ | PROT_WRITE;
            if mmap(0, 8 * MIB, rw, MAP_SHARED | MAP_ANONYMOUS).is_err() {
                return 1;
            }
            if mmap(0, 8 * MIB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS).is_err() {
                return 2;
            }
            if mmap(0, 8 * MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS).is_err() {
                return 3;
            }
            0
        },
    );
    case(
        &mut t,
        "mremap growing a private writable mapping past it: ENOMEM",
        || {
            let Ok(at) = mmap(0, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) else {
                return 1;
            };
            match mremap(at, MIB, 16 * MIB, MREMAP_MAYMOVE) {
                Err(ENOMEM) => 0,
                _ => 2,
            }
        },
    );
    case(
        &mut t,
        "brk past it keeps the old break; a small growth works",
        || {
            let cur = brk(0);
            if cur == 0 {
                return 1;
            }
            if brk(cur + 8 * MIB) != cur {
                return 2;
            }
            if brk(cur + 64 * 1024) != cur + 64 * 1024 {
                return 3;
            }
            0
        },
    );
    case(
        &mut t,
        "the limit counts what is mapped: 3 x 1 MiB fit, the 4th MiB does not",
        || {
            let rw = PROT_READ | PROT_WRITE;
            for _ in 0..3 {
                if mmap(0, MIB, rw, MAP_PRIVATE | MAP_ANONYMOUS).is_err() {
                    return 1;
                }
            }
            match mmap(0, MIB, rw, MAP_PRIVATE | MAP_ANONYMOUS) {
                Err(ENOMEM) => 0,
                _ => 2,
            }
        },
    );
    t.finish()
}
