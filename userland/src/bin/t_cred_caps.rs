//! The privilege model (issue 17): root's capabilities as Linux grants them, none for anyone
//! else. `CAP_SYS_RESOURCE`: raising a hard limit (`EPERM` unprivileged), forking past
//! `RLIMIT_NPROC` (counted per real uid: other users' tasks do not count), `prlimit64` on
//! another user's process (`EPERM` unless its real, effective and saved ids are the caller's);
//! `CAP_IPC_LOCK`: `mlock` past `RLIMIT_MEMLOCK` (even at 0); `CAP_KILL`: signalling a process
//! of another user (`EPERM`, signal 0 included; `SIGCONT` within the session allowed). Runs as
//! root; the unprivileged halves in children that drop to a uid of their own, on cowlab and on
//! the host. Kernel threads are no process: every pid call on one is `ESRCH`.
#![no_std]
#![no_main]

extern crate alloc;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{errno_of, sys};
use cowlab_userland::cred::drop_to;
use cowlab_userland::rlimit::*;
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const EPERM: i32 = 1;
const EAGAIN: i32 = 11;
const SIGCONT: usize = 18;
const MLOCK: usize = 149;
const TKILL: usize = 200;

/// A uid no other process has: `RLIMIT_NPROC` counts the tasks of the real uid.
fn private_uid() -> u32 {
    50000 + cowlab_userland::sys::getpid() as u32 % 10000
}

fn child(f: impl FnOnce() -> i32) -> i32 {
    let status = in_child(f);
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        -1
    }
}

fn kill_err(pid: i32, sig: usize) -> i32 {
    errno_of(sys(62, &[pid as usize, sig]))
}

fn prlimit_err(pid: i32) -> i32 {
    errno_of(prlimit(pid, RLIMIT_NOFILE, None))
}

const LOW: Rlimit = Rlimit { cur: 256, max: 512 };
const HIGH: Rlimit = Rlimit {
    cur: 256,
    max: 1024,
};

const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this root process has capability `bit`: `CapEff` of `/proc/self/status` on Linux
/// (a container may withhold some); cowlab shows no `CapEff` and gives root all of them.
fn root_has(bit: u32) -> bool {
    let mut buf = [0u8; 4096];
    let n = read_file(c"/proc/self/status", &mut buf).unwrap_or(0);
    let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
    match text.lines().find_map(|l| l.strip_prefix("CapEff:")) {
        None => true,
        Some(hex) => u64::from_str_radix(hex.trim(), 16).is_ok_and(|caps| caps & (1 << bit) != 0),
    }
}

/// A child blocked reading `fd` until every write end (`w` is the one it inherits) is closed.
fn sleeper(fd: i32, w: i32) -> i32 {
    match fork() {
        Ok(0) => {
            let _ = close(w);
            let mut b = [0u8; 1];
            let _ = read(fd, &mut b);
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(e) => -e.0,
    }
}

fn page() -> usize {
    mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0)
}

fn main() -> i32 {
    let mut t = Tester::new("t_cred_caps");
    if cowlab_userland::cred::getresuid()[1] != 0 {
        cowlab_userland::println!("t_cred_caps: skip: needs root");
        return t.finish();
    }
    let me = cowlab_userland::sys::getpid();

    // Root: the bypasses.
    let root = child(|| {
        let mut c = Tester::new("t_cred_caps-root");
        c.eq(
            "root lowers the hard RLIMIT_NOFILE",
            errno_of(setrlimit(RLIMIT_NOFILE, LOW)),
            0,
        );
        // A container's root may lack CAP_SYS_RESOURCE (Docker drops it): then Linux says EPERM.
        let want = if root_has(CAP_SYS_RESOURCE) { 0 } else { EPERM };
        c.eq(
            "... and raises it again (EPERM without CAP_SYS_RESOURCE)",
            errno_of(setrlimit(RLIMIT_NOFILE, HIGH)),
            want,
        );
        c.eq(
            "root forks under RLIMIT_NPROC 1 (CAP_SYS_RESOURCE, INIT_USER)",
            errno_of(setrlimit(RLIMIT_NPROC, Rlimit { cur: 1, max: 1 })).max(match fork() {
                Ok(0) => exit_now(0),
                Ok(pid) => errno_of(waitpid(pid, 0)),
                Err(e) => e.0,
            }),
            0,
        );
        let a = page();
        if root_has(CAP_IPC_LOCK) {
            c.eq(
                "root mlocks under RLIMIT_MEMLOCK 0 (CAP_IPC_LOCK)",
                errno_of(setrlimit(RLIMIT_MEMLOCK, Rlimit { cur: 0, max: 0 }))
                    .max(errno_of(sys(MLOCK, &[a, 4096]))),
                0,
            );
        }
        c.finish()
    });
    t.eq("root's checks pass", root, 0);

    let uid = private_uid();
    let user = child(|| {
        let Ok([r, w]) = pipe() else {
            return 100;
        };
        // A root process to fail on (the parent is root too).
        let root_sleeper = sleeper(r, w);
        if drop_to(uid, uid).is_err() {
            return 101;
        }
        let mut c = Tester::new("t_cred_caps-user");
        c.eq(
            "lowering the hard limit",
            errno_of(setrlimit(RLIMIT_NOFILE, LOW)),
            0,
        );
        c.eq(
            "raising it again: EPERM",
            errno_of(setrlimit(RLIMIT_NOFILE, HIGH)),
            EPERM,
        );
        c.eq(
            "prlimit64 raising it: EPERM",
            errno_of(prlimit(0, RLIMIT_NOFILE, Some(HIGH))),
            EPERM,
        );
        c.eq(
            "setting it unchanged",
            errno_of(setrlimit(RLIMIT_NOFILE, LOW)),
            0,
        );
        c.eq("prlimit64 on itself", prlimit_err(0), 0);
        c.eq(
            "prlimit64 on a root process: EPERM",
            prlimit_err(root_sleeper),
            EPERM,
        );
        c.eq(
            "prlimit64 on its root parent: EPERM",
            prlimit_err(me),
            EPERM,
        );
        c.eq(
            "kill(root process, 0): EPERM",
            kill_err(root_sleeper, 0),
            EPERM,
        );
        c.eq(
            "kill(root process, SIGTERM): EPERM",
            kill_err(root_sleeper, 15),
            EPERM,
        );
        c.eq(
            "tkill(root process, 0): EPERM",
            errno_of(sys(TKILL, &[root_sleeper as usize, 0])),
            EPERM,
        );
        c.eq(
            "SIGCONT to a root process of its session",
            kill_err(root_sleeper, SIGCONT),
            0,
        );
        // Its own processes, under RLIMIT_NPROC 2: itself and one more.
        let _ = setrlimit(RLIMIT_NPROC, Rlimit { cur: 2, max: 2 });
        let own = sleeper(r, w);
        c.check(
            "under RLIMIT_NPROC 2 one child forks (root's tasks do not count)",
            own > 0,
        );
        c.eq(
            "a second: EAGAIN",
            errno_of(fork().inspect(|&pid| {
                if pid == 0 {
                    exit_now(0);
                }
            })),
            EAGAIN,
        );
        c.eq("kill(own child, 0)", kill_err(own, 0), 0);
        c.eq("prlimit64 on its own child", prlimit_err(own), 0);
        let _ = close(w);
        let _ = waitpid(own, 0);
        let _ = waitpid(root_sleeper, 0);
        c.eq(
            "after the child is reaped, fork works again",
            child(|| 0),
            0,
        );
        let a = page();
        let _ = setrlimit(
            RLIMIT_MEMLOCK,
            Rlimit {
                cur: 4096,
                max: 4096,
            },
        );
        c.eq(
            "mlock within RLIMIT_MEMLOCK",
            errno_of(sys(MLOCK, &[a, 4096])),
            0,
        );
        let b = mmap(
            0,
            2 * 4096,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
        )
        .unwrap_or(0);
        c.eq(
            "mlock past it: ENOMEM",
            errno_of(sys(MLOCK, &[b, 2 * 4096])),
            12,
        );
        let _ = setrlimit(RLIMIT_MEMLOCK, Rlimit { cur: 0, max: 0 });
        c.eq(
            "mlock at RLIMIT_MEMLOCK 0: EPERM",
            errno_of(sys(MLOCK, &[b, 4096])),
            EPERM,
        );
        c.finish()
    });
    t.eq("the unprivileged checks pass", user, 0);
    kernel_threads_hidden(&mut t);
    t.finish()
}

/// A pid that no user process has (`getpgid` says `ESRCH`) is not found by any other pid
/// call either: on cowlab the page-cache flusher kernel thread has such a tid (Linux: kernel
/// threads live in no user pid namespace of a container; outside one they have a group and
/// are skipped here).
fn kernel_threads_hidden(t: &mut Tester) {
    let me = cowlab_userland::sys::getpid() as usize;
    let mut hidden = 0;
    let mut bad = alloc::string::String::new();
    let mut mask = [u64::MAX; 1];
    let mut lim = [0u64; 2];
    for tid in 2..me {
        if errno_of(sys(121, &[tid])) != 3 {
            continue;
        }
        hidden += 1;
        let got = [
            errno_of(sys(62, &[tid, 0])),
            errno_of(sys(200, &[tid, 0])),
            errno_of(sys(203, &[tid, 8, mask.as_mut_ptr() as usize])),
            errno_of(sys(204, &[tid, 8, mask.as_mut_ptr() as usize])),
            errno_of(sys(302, &[tid, 7, 0, lim.as_mut_ptr() as usize])),
            errno_of(sys(234, &[tid, tid, 0])),
        ];
        if got != [3; 6] {
            bad.push_str(&alloc::format!("tid {tid}: {got:?}; "));
        }
    }
    t.check_why(
        "a tid with no process: kill, tkill, sched_set/getaffinity, prlimit64, tgkill ESRCH",
        bad.is_empty(),
        &bad,
    );
    if cowlab_userland::test::on_cowlab() {
        t.check("cowlab has a kernel thread below this pid", hidden > 0);
    }
}
