//! Process tests: fork, exec, wait statuses, kill, faults that kill only the child.
#![no_std]
#![no_main]

extern crate alloc;

use cowlab_userland::calls::*;
use cowlab_userland::process;
use cowlab_userland::sys::{self, errno, Errno};
use cowlab_userland::test::{in_child, sibling, Tester};

cowlab_userland::entry!(main);

fn main() -> i32 {
    let mut t = Tester::new("t_process");
    let me = sys::getpid();

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
        for _ in 0..300 {
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

    t.finish()
}
