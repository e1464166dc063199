//! Process tests: fork, exec, wait statuses, kill, faults that kill only the child.
#![no_std]
#![no_main]

extern crate alloc;

use cowlab_userland::calls::*;
use cowlab_userland::process;
use cowlab_userland::rlimit::{
    getrlimit, set_soft, setrlimit, Rlimit, RLIMIT_NPROC, RLIM_INFINITY,
};
use cowlab_userland::sys::{self, errno, Errno};
use cowlab_userland::test::{in_child, sibling, Tester};

cowlab_userland::entry!(main);

fn main() -> i32 {
    if cowlab_userland::args().nth(1).map(|a| a.to_bytes()) == Some(b"--args") {
        return check_args();
    }
    let mut t = Tester::new("t_process");
    let me = sys::getpid();
    raise_nproc(&mut t);

    let status = in_child(|| 42);
    t.check_why(
        "child exit(42) is WIFEXITED 42",
        wifexited(status) && wexitstatus(status) == 42,
        status,
    );

    let status = in_child(|| i32::from(sys::getppid() != me));
    t.eq("getppid in the child is the parent", status, 0);

    let status = in_child(|| i32::from(sys::getpid() == me));
    t.eq("the child has its own pid", status, 0);

    let path = sibling("status");
    match process::run(&[&path, b"7"]) {
        Ok(status) => t.check_why(
            "exec status 7 exits 7",
            wifexited(status) && wexitstatus(status) == 7,
            status,
        ),
        Err(e) => t.check_why("exec status 7 exits 7", false, e.0),
    }

    let missing = process::exec(&[b"/no-such-program-cowlab"]);
    t.eq(
        "execve of a missing file is ENOENT",
        missing,
        Errno(errno::ENOENT),
    );

    t.eq(
        "wait4 without children is ECHILD",
        waitpid(-1, 0).map(|_| ()),
        Err(Errno(errno::ECHILD)),
    );

    // WNOHANG on a running child answers 0, then SIGKILL ends it.
    let pid = fork().unwrap_or(-1);
    if pid == 0 {
        loop {
            let _ = sleep_ms(1000);
        }
    }
    t.eq(
        "wait4 WNOHANG on a running child is 0",
        waitpid(pid, 1).map(|r| r.0),
        Ok(0),
    );
    t.check("kill SIGKILL succeeds", kill(pid, 9).is_ok());
    let status = waitpid(pid, 0).map(|r| r.1).unwrap_or(-1);
    t.check_why(
        "a SIGKILLed child is WIFSIGNALED 9",
        wifsignaled(status) && wtermsig(status) == 9,
        status,
    );

    let pid = fork().unwrap_or(-1);
    if pid == 0 {
        loop {
            sched_yield();
        }
    }
    let _ = kill(pid, 15);
    let status = waitpid(pid, 0).map(|r| r.1).unwrap_or(-1);
    t.check_why(
        "SIGTERM's default action terminates",
        wifsignaled(status) && wtermsig(status) == 15,
        status,
    );

    // SIGCONT's default action is to continue (ignored here): the child lives on.
    let pid = fork().unwrap_or(-1);
    if pid == 0 {
        let _ = sleep_ms(100);
        exit_now(6);
    }
    t.eq("kill SIGCONT", kill(pid, 18).map(|_| ()), Ok(()));
    let status = waitpid(pid, 0).map(|r| r.1).unwrap_or(-1);
    t.check_why(
        "SIGCONT does not terminate",
        wifexited(status) && wexitstatus(status) == 6,
        status,
    );

    // A child spinning without system calls is preempted by the timer: the parent still runs.
    let pid = fork().unwrap_or(-1);
    if pid == 0 {
        #[allow(clippy::empty_loop)]
        loop {}
    }
    t.eq(
        "the parent runs while a child spins (preemption)",
        sleep_ms(30),
        Ok(0),
    );
    let _ = kill(pid, 9);
    let status = waitpid(pid, 0).map(|r| r.1).unwrap_or(-1);
    t.check_why(
        "the spinning child is killed",
        wifsignaled(status) && wtermsig(status) == 9,
        status,
    );

    t.eq(
        "kill of a missing pid is ESRCH",
        kill(999_999, 0).map(|_| ()),
        Err(Errno(errno::ESRCH)),
    );

    let status = in_child(|| {
        // SAFETY: a deliberate write to an unmapped address: the child dies of SIGSEGV.
        unsafe { core::ptr::write_volatile(0x10 as *mut u64, 1) };
        0
    });
    t.check_why(
        "a NULL write kills the child with SIGSEGV",
        wifsignaled(status) && wtermsig(status) == 11,
        status,
    );

    let status = in_child(|| {
        // SAFETY: ud2 raises #UD: the child dies of SIGILL.
        unsafe { core::arch::asm!("ud2") };
        0
    });
    t.check_why(
        "ud2 kills the child with SIGILL",
        wifsignaled(status) && wtermsig(status) == 4,
        status,
    );

    let status = in_child(|| {
        // SAFETY: dividing by zero raises #DE: the child dies of SIGFPE.
        unsafe {
            core::arch::asm!("xor ecx, ecx", "div ecx", out("eax") _, out("edx") _, out("ecx") _)
        };
        0
    });
    t.check_why(
        "division by zero kills the child with SIGFPE",
        wifsignaled(status) && wtermsig(status) == 8,
        status,
    );

    let status = in_child(|| {
        // SAFETY: a jump to a non-canonical address: #GP, the child dies of SIGSEGV.
        unsafe { core::arch::asm!("mov rax, 0x8000000000000000", "jmp rax", out("rax") _) };
        0
    });
    t.check_why(
        "a non-canonical jump kills the child with SIGSEGV",
        wifsignaled(status) && wtermsig(status) == 11,
        status,
    );

    // Many children at once, reaped in any order.
    let mut pids = alloc::vec::Vec::new();
    for i in 0..8 {
        match fork() {
            Ok(0) => exit_now(i),
            Ok(pid) => pids.push((pid, i)),
            Err(_) => {}
        }
    }
    let mut good = pids.len() == 8;
    for _ in 0..pids.len() {
        match waitpid(-1, 0) {
            Ok((pid, status)) => {
                let want = pids.iter().find(|p| p.0 == pid).map(|p| p.1);
                good &= want == Some(wexitstatus(status));
            }
            Err(_) => good = false,
        }
    }
    t.check("eight children reaped with their statuses", good);

    // clone(SIGCHLD) is fork: the child execs.
    // SAFETY: clone without CLONE_VM: the child has its own copy of memory, like fork.
    let pid = unsafe { raw(sys::nr::CLONE, [17, 0, 0, 0, 0, 0]) };
    match pid {
        Ok(0) => {
            let _ = process::exec(&[&path, b"3"]);
            exit_now(127);
        }
        Ok(pid) => {
            let status = waitpid(pid as i32, 0).map(|r| r.1).unwrap_or(-1);
            t.check_why(
                "clone(SIGCHLD) + exec status 3",
                wifexited(status) && wexitstatus(status) == 3,
                status,
            );
        }
        Err(e) => t.check_why("clone(SIGCHLD) + exec status 3", false, e.0),
    }

    // An argument larger than the kernel accepts: E2BIG (Linux: MAX_ARG_STRLEN is 128 KiB).
    let huge = alloc::vec![b'a'; 200_000];
    t.eq(
        "execve with a 200 KB argument is E2BIG",
        process::exec(&[&path, &huge]),
        Errno(7),
    );

    // The process table is bounded: fork fails with EAGAIN instead of exhausting the kernel.
    // (Only on cowlab: the host's limit is far higher.)
    if cowlab_userland::test::on_cowlab() {
        let mut children = alloc::vec::Vec::new();
        let mut last = Ok(0);
        for _ in 0..4000 {
            last = fork();
            match last {
                Ok(0) => loop {
                    let _ = sleep_ms(1000);
                },
                Ok(pid) => children.push(pid),
                Err(_) => break,
            }
        }
        t.eq(
            "fork beyond the process limit is EAGAIN",
            last.map(|_| 0),
            Err(Errno(11)),
        );
        for &pid in &children {
            let _ = kill(pid, 9);
        }
        let reaped = children
            .iter()
            .filter(|&&pid| waitpid(pid, 0).is_ok())
            .count();
        t.eq("every child killed and reaped", reaped, children.len());
        t.check_why(
            "the system keeps forking afterwards",
            in_child(|| 5) == 5 << 8,
            "",
        );
    }

    exec_limits(&mut t);
    subreaper(&mut t);
    orphans(&mut t);

    t.finish()
}

/// `t_process --args LEN COUNT ARGS...` (exec'd by [`exec_limits`]): exits 0 if exactly COUNT
/// arguments follow, each LEN bytes of 0xff (not UTF-8), else 1.
fn check_args() -> i32 {
    let mut args = cowlab_userland::args().skip(2);
    let mut number = || {
        args.next()
            .and_then(|a| a.to_str().ok())
            .and_then(|s| s.parse::<usize>().ok())
    };
    let (Some(len), Some(count)) = (number(), number()) else {
        return 1;
    };
    let rest: alloc::vec::Vec<_> = cowlab_userland::args().skip(4).collect();
    let intact = rest.len() == count
        && rest
            .iter()
            .all(|a| a.to_bytes().len() == len && a.to_bytes().iter().all(|&b| b == 0xff));
    i32::from(!intact)
}

/// execve's limits are Linux's (`MAX_ARG_STRLEN`, a quarter of the stack for all of argv and
/// envp), not fixed counts, and any bytes but NUL are accepted; exec of something that exists
/// but is not an executable regular file is EACCES.
fn exec_limits(t: &mut Tester) {
    let path = sibling("t_process");
    let run = |len, count| {
        let arg = alloc::vec![0xffu8; len];
        let (len_s, count_s) = (alloc::format!("{len}"), alloc::format!("{count}"));
        let mut argv: alloc::vec::Vec<&[u8]> =
            alloc::vec![&path, b"--args", len_s.as_bytes(), count_s.as_bytes()];
        argv.extend(core::iter::repeat_n(&arg[..], count));
        let mut errno_out = 0;
        let status = in_child(|| {
            let e = process::exec(&argv);
            exit_now(100 + e.0)
        });
        if wifexited(status) && wexitstatus(status) >= 100 {
            errno_out = wexitstatus(status) - 100;
        }
        (status, errno_out)
    };
    let ok = |(status, _): (i32, i32)| wifexited(status) && wexitstatus(status) == 0;
    let r = run(100_000, 1);
    t.check_why(
        "execve with a 100000-byte non-UTF-8 argument",
        ok(r),
        format_args!("{r:?}"),
    );
    let r = run(1, 3000);
    t.check_why("execve with 3000 arguments", ok(r), format_args!("{r:?}"));
    let r = run(131_071, 1);
    t.check_why(
        "execve with a MAX_ARG_STRLEN argument (131071 bytes and the NUL)",
        ok(r),
        format_args!("{r:?}"),
    );
    let r = run(120_000, 12);
    t.check_why(
        "execve with 1.4 MB of arguments",
        ok(r),
        format_args!("{r:?}"),
    );
    t.eq(
        "execve with a 131072-byte argument is E2BIG",
        run(131_072, 1).1,
        errno::E2BIG,
    );
    t.eq(
        "execve with 7.2 MB of arguments is E2BIG",
        run(120_000, 60).1,
        errno::E2BIG,
    );
    for (what, target) in [
        ("a directory", &b"/"[..]),
        ("/tmp", b"/tmp"),
        ("/dev/null", b"/dev/null"),
    ] {
        t.eq(
            &alloc::format!("execve of {what} is EACCES"),
            process::exec(&[target]),
            Errno(errno::EACCES),
        );
    }
}

const PR_SET_CHILD_SUBREAPER: usize = 36;
const PR_GET_CHILD_SUBREAPER: usize = 37;

fn prctl(option: usize, arg: usize) -> Result<usize, Errno> {
    // SAFETY: the subreaper options take an integer or a pointer to an `i32` we own.
    unsafe { raw(157, [option, arg, 0, 0, 0, 0]) }
}

fn subreaper_flag() -> Result<i32, Errno> {
    let mut flag = -1i32;
    prctl(PR_GET_CHILD_SUBREAPER, &mut flag as *mut i32 as usize).map(|_| flag)
}

/// Reads exactly `buf.len()` bytes unless the pipe ends first; the bytes read.
fn read_full(fd: i32, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match read(fd, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno(sys::EINTR)) => {}
            Err(_) => break,
        }
    }
    done
}

/// Waits (bounded) until the parent is no longer `parent`: the moment of adoption.
fn wait_adopted(parent: i32) -> i32 {
    for _ in 0..5000 {
        let now = sys::getppid();
        if now != parent {
            return now;
        }
        let _ = sleep_ms(1);
    }
    sys::getppid()
}

/// PR_SET_CHILD_SUBREAPER: a grandchild orphaned by its parent's exit is adopted by us, not by
/// init, and we reap it with its status.
fn subreaper(t: &mut Tester) {
    let me = sys::getpid();
    t.eq(
        "PR_GET_CHILD_SUBREAPER is 0 at first",
        subreaper_flag(),
        Ok(0),
    );
    t.eq(
        "PR_SET_CHILD_SUBREAPER",
        prctl(PR_SET_CHILD_SUBREAPER, 1),
        Ok(0),
    );
    t.eq("PR_GET_CHILD_SUBREAPER is 1", subreaper_flag(), Ok(1));
    let Ok([r, w]) = pipe() else {
        t.check("pipe for the subreaper test", false);
        return;
    };
    let Ok(middle) = fork() else {
        t.check("fork for the subreaper test", false);
        return;
    };
    if middle == 0 {
        let middle = sys::getpid();
        match fork() {
            Ok(0) => {
                let adopter = wait_adopted(middle);
                let _ = write(w, &adopter.to_ne_bytes());
                exit_now(7);
            }
            Ok(grandchild) => {
                let _ = write(w, &grandchild.to_ne_bytes());
                exit_now(0);
            }
            Err(_) => exit_now(1),
        }
    }
    let _ = close(w);
    let middle_status = waitpid(middle, 0).map(|r| r.1);
    t.eq("the middle child exits 0", middle_status, Ok(0));
    let mut words = [0u8; 8];
    let got = read_full(r, &mut words);
    let _ = close(r);
    let grandchild = i32::from_ne_bytes([words[0], words[1], words[2], words[3]]);
    let adopter = i32::from_ne_bytes([words[4], words[5], words[6], words[7]]);
    t.eq("the orphan reported its new parent", got, 8);
    t.eq("the orphan's new parent is the subreaper", adopter, me);
    t.eq(
        "the subreaper reaps the orphan with its status",
        waitpid(-1, 0),
        Ok((grandchild, 7 << 8)),
    );
    t.eq(
        "PR_SET_CHILD_SUBREAPER 0",
        prctl(PR_SET_CHILD_SUBREAPER, 0),
        Ok(0),
    );
    t.eq("PR_GET_CHILD_SUBREAPER is 0 again", subreaper_flag(), Ok(0));
    t.eq(
        "no child is left",
        waitpid(-1, 1).map(|_| ()),
        Err(Errno(errno::ECHILD)),
    );
    t.eq(
        "an unknown prctl option is EINVAL",
        prctl(0x7fff_0000, 0),
        Err(Errno(errno::EINVAL)),
    );
}

/// MemFree in kB from /proc/meminfo.
fn mem_free() -> Option<u64> {
    let mut buf = [0u8; 2048];
    let n = read_file(c"/proc/meminfo", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemFree:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The fork-limit and orphan checks need more tasks than `RLIMIT_NPROC`'s default allows (128
/// on cowlab, where every process is uid 0 and the limit is enforced as for an unprivileged
/// user): raise it, as root may, so that the task table's own bound (`max_tasks`) is what the
/// fork-limit loop meets. A host run without root raises the soft limit to the hard one.
fn raise_nproc(t: &mut Tester) {
    let unlimited = Rlimit {
        cur: RLIM_INFINITY,
        max: RLIM_INFINITY,
    };
    let raised = setrlimit(RLIMIT_NPROC, unlimited);
    if cowlab_userland::test::on_cowlab() {
        t.eq("root raises RLIMIT_NPROC to unlimited", raised, Ok(0));
    } else if raised.is_err() {
        let _ = getrlimit(RLIMIT_NPROC).and_then(|r| set_soft(RLIMIT_NPROC, r.max));
    }
}

const ORPHAN_BATCHES: usize = 32;
const ORPHANS_PER_BATCH: usize = 10;
const ORPHANS: usize = ORPHAN_BATCHES * ORPHANS_PER_BATCH;
/// Each orphan's record in the pipe: its pid, the parent that left it, the parent it got.
const RECORD: usize = 12;
const LIVE_AFTER: usize = 400;

/// 320 grandchildren orphaned by their parents' exits (half still running, half already
/// zombies when the parent goes) are adopted and reaped by init (pid 1), so the task table
/// does not fill: afterwards 400 children can live at once, and on cowlab every orphan is gone
/// (`kill(pid, 0)` is ESRCH) and MemFree is back to its baseline.
fn orphans(t: &mut Tester) {
    let cowlab = cowlab_userland::test::on_cowlab();
    // Everything this test stores is allocated and touched before the baseline.
    let mut records = alloc::vec![0u8; ORPHANS * RECORD];
    let mut live = alloc::vec![0i32; LIVE_AFTER];
    let before = mem_free();
    let Ok([r, w]) = pipe() else {
        t.check("pipe for the orphan test", false);
        return;
    };
    let mut middles_ok = 0;
    for _ in 0..ORPHAN_BATCHES {
        match fork() {
            Ok(0) => {
                let middle = sys::getpid();
                for i in 0..ORPHANS_PER_BATCH {
                    if let Ok(0) = fork() {
                        let pid = sys::getpid();
                        // Odd ones outlive the middle and see their adoption; even ones
                        // report and exit at once, so most are zombies when it goes.
                        let adopter = if i % 2 == 1 { wait_adopted(middle) } else { 0 };
                        let mut rec = [0u8; RECORD];
                        rec[..4].copy_from_slice(&pid.to_ne_bytes());
                        rec[4..8].copy_from_slice(&middle.to_ne_bytes());
                        rec[8..].copy_from_slice(&adopter.to_ne_bytes());
                        let _ = write(w, &rec);
                        exit_now(0);
                    }
                }
                exit_now(0);
            }
            Ok(pid) => {
                if waitpid(pid, 0) == Ok((pid, 0)) {
                    middles_ok += 1;
                }
            }
            Err(_) => break,
        }
    }
    let _ = close(w);
    t.eq("32 parents of orphans exited", middles_ok, ORPHAN_BATCHES);
    let got = read_full(r, &mut records) / RECORD;
    let _ = close(r);
    t.eq("320 orphans reported", got, ORPHANS);
    let field = |rec: &[u8; RECORD], at: usize| {
        i32::from_ne_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]])
    };
    let recs = || records[..got * RECORD].as_chunks::<RECORD>().0.iter();
    let adopted = recs()
        .filter(|rec| field(rec, 8) != 0)
        .filter(|rec| {
            let adopter = field(rec, 8);
            adopter > 0 && adopter != field(rec, 4) && (!cowlab || adopter == 1)
        })
        .count();
    t.eq(
        "every running orphan was adopted (by init on cowlab)",
        adopted,
        ORPHANS / 2,
    );
    if cowlab {
        // init reaps them as they exit; give it the CPU until none is left.
        let mut left = usize::MAX;
        for _ in 0..200 {
            left = recs().filter(|rec| kill(field(rec, 0), 0).is_ok()).count();
            if left == 0 {
                break;
            }
            let _ = sleep_ms(10);
        }
        t.eq("init reaped every orphan", left, 0);
    }
    // The table has room: 400 children alive at once, then all reaped.
    let Ok([r2, w2]) = pipe() else {
        t.check("pipe for the fork check", false);
        return;
    };
    let mut forked = 0;
    let mut error = None;
    for slot in live.iter_mut() {
        match fork() {
            Ok(0) => {
                let _ = close(w2);
                let mut byte = [0u8; 1];
                let _ = read(r2, &mut byte);
                exit_now(0);
            }
            Ok(pid) => {
                *slot = pid;
                forked += 1;
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let _ = close(r2);
    let _ = close(w2);
    t.check_why(
        "400 children live at once after the orphans",
        forked == LIVE_AFTER,
        format_args!("{forked} forked, then {error:?}"),
    );
    let reaped = live[..forked]
        .iter()
        .filter(|&&pid| waitpid(pid, 0) == Ok((pid, 0)))
        .count();
    t.eq("the 400 children exit and are reaped", reaped, forked);
    if cowlab {
        t.eq_some("MemFree back to baseline", mem_free(), before);
    }
}
