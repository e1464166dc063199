//! Robustness: children call the implemented system calls with random arguments (random
//! 64-bit values, small integers, and pointers into, near and far from their own memory). The
//! kernel must answer each call (an errno or a result) or kill the child with a signal; it
//! must never crash. Calls that would end, block or replace the child are left out. Runs only
//! on cowlab (on a real system random arguments could create files or change limits).
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::nr;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

/// System calls fuzzed: those that return whatever their arguments (no exit, fork, exec,
/// kill, reboot, sleeps, wait, pause-like reads of the console).
const CALLS: &[usize] = &[
    nr::WRITE,
    nr::OPEN,
    nr::CLOSE,
    nr::FSTAT,
    nr::LSEEK,
    nr::MMAP,
    nr::MPROTECT,
    nr::MUNMAP,
    nr::BRK,
    nr::RT_SIGACTION,
    nr::RT_SIGPROCMASK,
    nr::IOCTL,
    nr::PREAD64,
    nr::WRITEV,
    nr::PIPE,
    nr::MREMAP,
    nr::MADVISE,
    nr::DUP,
    nr::DUP2,
    nr::UNAME,
    nr::FCNTL,
    nr::GETCWD,
    nr::READLINK,
    nr::GETRUSAGE,
    nr::SYSINFO,
    nr::ARCH_PRCTL,
    nr::CLOCK_GETTIME,
    nr::OPENAT,
    nr::NEWFSTATAT,
    nr::DUP3,
    nr::PIPE2,
    nr::PRLIMIT64,
    nr::GETRANDOM,
    nr::GETDENTS64,
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// An argument: small integers, page-ish sizes, pointers near the stack or the program,
    /// kernel addresses, or anything.
    fn arg(&mut self, stack: usize) -> usize {
        let r = self.next();
        (match r % 8 {
            0 => r >> 60,
            1 => (r >> 32) % 70_000,
            2 => stack.wrapping_add(((r >> 16) % 8192) as usize) as u64,
            3 => 0x40_0000 + (r >> 40) % 0x10_0000,
            4 => 0xffff_ffff_8000_0000 + ((r >> 20) & 0xfff_ffff),
            5 => 0x7fff_ffff_f000 - ((r >> 30) % 0x4000),
            _ => r,
        }) as usize
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_fuzz");
    if !cowlab_userland::test::on_cowlab() {
        // On a real system random arguments can create files (open with O_CREAT and a pointer
        // that happens to name something) or change other processes' limits (prlimit64).
        cowlab_userland::println!("t_fuzz: skipped: runs only on cowlab");
        return t.finish();
    }
    let mut seed = [0u8; 8];
    // SAFETY: getrandom writes 8 bytes into `seed`.
    let _ = unsafe { raw(nr::GETRANDOM, [seed.as_mut_ptr() as usize, 8, 0, 0, 0, 0]) };
    let seed = u64::from_le_bytes(seed) | 1;
    cowlab_userland::println!("t_fuzz: seed {seed:#x}");
    let children: u64 = 24;
    let calls_each = 400;
    let mut answered = 0;
    for c in 0..children {
        let pid = fork().unwrap_or(-1);
        if pid == 0 {
            let mut rng = Rng(seed.wrapping_add(c.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
            let local = [0u8; 256];
            let stack = local.as_ptr() as usize;
            for _ in 0..calls_each {
                let n = CALLS[(rng.next() % CALLS.len() as u64) as usize];
                let mut args = [0; 6].map(|_: usize| rng.arg(stack));
                // Defence in depth: never create files, never touch another process's limits.
                match n {
                    nr::OPEN => args[1] &= !0o100,
                    nr::OPENAT => args[2] &= !0o100,
                    nr::PRLIMIT64 => args[0] = 0,
                    _ => {}
                }
                // Leave descriptors 0-2 alone: no garbage on the console, which xtask parses.
                if matches!(n, nr::CLOSE | nr::DUP2 | nr::DUP3 | nr::WRITE | nr::WRITEV)
                    && (args[0] < 3 || args[1] < 3)
                {
                    continue;
                }
                // SAFETY: deliberately arbitrary: the kernel must reject what is invalid, and
                // whatever valid damage a call does (unmapping our own memory, say) ends at
                // most this child.
                let _ = unsafe { raw(n, args) };
            }
            exit_now(0);
        }
        if let Ok((_, status)) = waitpid(pid, 0) {
            if wifexited(status) || wifsignaled(status) {
                answered += 1;
            }
        }
    }
    t.eq(
        "every fuzzing child exited or was killed by a signal",
        answered,
        children,
    );
    t.check("the system still forks and execs", in_child_status() == 0);
    t.finish()
}

fn in_child_status() -> i32 {
    let path = cowlab_userland::test::sibling("status");
    match cowlab_userland::process::run(&[&path]) {
        Ok(status) if wifexited(status) => wexitstatus(status),
        _ => -1,
    }
}
