//! System calls on the Linux x86_64 ABI: number in RAX, arguments in RDI, RSI, RDX, R10, R8, R9,
//! result in RAX with `-errno` for errors.
//!
//! [`dispatch`] decodes the number and hands raw arguments to one function per call, grouped by
//! subject (`fs`, `mm`, `proc`, `time`, `info`). User pointers among the arguments are turned into
//! `uaccess::UserSlice`/`UserPtr` there, the only way to reach user memory. Unknown numbers
//! answer `ENOSYS` and are logged once each.

pub(crate) mod abi;
mod admit;
mod cred;
pub mod entry;
mod epoll;
mod fs;
mod info;
mod mlock;
mod mm;
mod poll;
mod proc;
mod signal;
mod time;

use core::sync::atomic::{AtomicU64, Ordering};

pub use crate::errno::{Errno, SysResult};

use crate::idt::TrapFrame;

/// The six argument registers.
#[derive(Clone, Copy)]
pub struct Args([u64; 6]);

impl Args {
    pub fn get(&self, i: usize) -> u64 {
        self.0[i]
    }

    pub fn int(&self, i: usize) -> i64 {
        self.0[i] as i64
    }

    /// The low 32 bits as a C `int`.
    pub fn i32(&self, i: usize) -> i32 {
        self.0[i] as i32
    }
}

/// Numbers seen and unknown, one bit each for 0..1024 (Linux's x86_64 numbers end below 512),
/// so each is logged once; every larger number shares the last bit (one line for all of them,
/// so a program or the fuzzer spraying random numbers cannot flood the console).
static UNKNOWN_LOGGED: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];

/// Whether call `nr` passes a gate before it runs: a 32-bit argument to narrow
/// ([`abi::narrow`]) or the heap admission ([`admit::admit`]). Both tests by number in one
/// table built at compile time, so a call with neither (getppid) pays one load and a branch
/// for the two (each had its own bounds check, load and branch). Numbers from 512 on have
/// neither.
static GATED: [bool; 512] = {
    let mut table = [false; 512];
    let mut nr = 0;
    while nr < table.len() {
        table[nr] = abi::narrows(nr as u64) || admit::is_gated(nr as u64);
        nr += 1;
    }
    table
};

/// Runs the system call in `frame` and stores its result in `frame.rax`.
pub fn dispatch(frame: &mut TrapFrame) {
    let nr = frame.rax;
    let mut regs = [
        frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
    ];
    let mut admitted = Ok(());
    if GATED.get(nr as usize).copied().unwrap_or(false) {
        abi::narrow(nr, &mut regs);
        admitted = admit::admit(nr);
    }
    let args = Args(regs);
    let result = admitted.and_then(|()| call(nr, args, frame));
    frame.rax = match result {
        Ok(value) => value,
        Err(errno) => errno.to_ret(),
    };
}

fn call(nr: u64, a: Args, frame: &mut TrapFrame) -> SysResult {
    match nr {
        0 => fs::read(a),
        1 => fs::write(a),
        2 => fs::open(a),
        3 => fs::close(a),
        4 => fs::stat(a, false),
        5 => fs::fstat(a),
        6 => fs::stat(a, true),
        8 => fs::lseek(a),
        9 => mm::mmap(a),
        10 => mm::mprotect(a),
        11 => mm::munmap(a),
        12 => mm::brk(a),
        13 => signal::rt_sigaction(a),
        14 => signal::rt_sigprocmask(a),
        15 => signal::rt_sigreturn(frame),
        16 => fs::ioctl(a),
        17 => fs::pread64(a),
        18 => fs::pwrite64(a),
        19 => fs::readv(a),
        20 => fs::writev(a),
        21 => fs::access(a),
        22 => fs::pipe2(a.get(0), 0),
        24 => proc::sched_yield(),
        25 => mm::mremap(a),
        26 => mm::msync(a),
        27 => mm::mincore(a),
        28 => mm::madvise(a),
        32 => fs::dup(a),
        33 => fs::dup2(a),
        34 => signal::pause(),
        35 => time::nanosleep(a),
        36 => signal::getitimer(a),
        37 => signal::alarm(a),
        38 => signal::setitimer(a),
        39 => proc::getpid(),
        56 => proc::clone(a, frame),
        57 => proc::fork(frame),
        58 => proc::vfork(frame),
        59 => proc::execve(a, frame),
        60 => proc::exit(a),
        61 => proc::wait4(a),
        247 => proc::waitid(a),
        62 => signal::kill(a),
        63 => info::uname(a),
        72 => fs::fcntl(a),
        74 | 75 => fs::fsync(a),
        77 => fs::ftruncate(a),
        79 => fs::getcwd(a),
        80 => fs::chdir(a),
        81 => fs::fchdir(a),
        82 => fs::rename(a),
        83 => fs::mkdir(a),
        84 => fs::rmdir(a),
        86 => fs::link(a),
        87 => fs::unlink(a),
        88 => fs::symlink(a),
        89 => fs::readlink(a),
        90 => fs::chmod(a),
        91 => fs::fchmod(a),
        96 => time::gettimeofday(a),
        97 => info::getrlimit(a),
        98 => proc::getrusage(a),
        99 => info::sysinfo(a),
        100 => proc::times(a),
        // The id getters read the credentials (`proc::cred`).
        102 => cred::getuid(),
        104 => cred::getgid(),
        107 => cred::geteuid(),
        108 => cred::getegid(),
        110 => proc::getppid(),
        // tty: process groups and sessions, poll/select.
        7 => poll::poll(a),
        23 => poll::select(a),
        270 => poll::pselect6(a),
        271 => poll::ppoll(a),
        109 => proc::setpgid(a),
        111 => proc::getpgrp(),
        112 => proc::setsid(),
        121 => proc::getpgid(a),
        124 => proc::getsid(a),
        // abimisc: getgroups (the other id calls are ext2fin's, `cred`).
        115 => cred::getgroups(a),
        127 => signal::rt_sigpending(a),
        128 => signal::rt_sigtimedwait(a),
        129 => signal::rt_sigqueueinfo(a),
        130 => signal::rt_sigsuspend(a),
        131 => signal::sigaltstack(a, frame),
        137 => fs::statfs(a),
        138 => fs::fstatfs(a),
        149 => mlock::mlock(a),
        150 => mlock::munlock(a),
        151 => mlock::mlockall(a),
        152 => mlock::munlockall(),
        157 => proc::prctl(a),
        158 => proc::arch_prctl(a),
        160 => info::setrlimit(a),
        162 => fs::sync(a),
        169 => proc::reboot(a),
        186 => proc::gettid(),
        200 => signal::tkill(a),
        201 => time::time(a),
        202 => proc::futex(a),
        206 => fs::io_setup(a),
        207 => fs::io_destroy(a),
        208 => fs::io_getevents(a),
        209 => fs::io_submit(a),
        210 => fs::io_cancel(a),
        217 => fs::getdents64(a),
        218 => proc::set_tid_address(a),
        228 => time::clock_gettime(a),
        229 => time::clock_getres(a),
        230 => time::clock_nanosleep(a),
        231 => proc::exit_group(a),
        234 => signal::tgkill(a),
        257 => fs::openat(a),
        262 => fs::newfstatat(a),
        263 => fs::unlinkat(a),
        264 => fs::renameat(a),
        265 => fs::linkat(a),
        266 => fs::symlinkat(a),
        267 => fs::readlinkat(a),
        268 => fs::fchmodat(a),
        // set_robust_list: accepted (nothing walks the list yet), but as Linux only with
        // len == sizeof(struct robust_list_head).
        273 if a.get(1) != 24 => Err(Errno::EINVAL),
        273 => Ok(0),
        278 => fs::vmsplice(a),
        280 => fs::utimensat(a),
        285 => fs::fallocate(a),
        292 => fs::dup3(a),
        293 => fs::pipe2(a.get(0), a.i32(1) as u32),
        295 => fs::preadv(a, false),
        296 => fs::pwritev(a, false),
        297 => signal::rt_tgsigqueueinfo(a),
        302 => info::prlimit64(a),
        306 => fs::syncfs(a),
        316 => fs::renameat2(a),
        318 => info::getrandom(a),
        325 => mlock::mlock2(a),
        319 => fs::memfd_create(a),
        327 => fs::preadv(a, true),
        328 => fs::pwritev(a, true),
        334 => Err(Errno::ENOSYS),
        425 => fs::io_uring_setup(a),
        426 => fs::io_uring_enter(a),
        427 => fs::io_uring_register(a),
        435 => proc::clone3(a, frame),
        // smp (issue 16): affinity and the CPU a thread runs on.
        203 => proc::sched_setaffinity(a),
        204 => proc::sched_getaffinity(a),
        309 => proc::getcpu(a),
        // ext2fin: credentials, umask and faccessat.
        95 => cred::umask(a),
        105 => cred::setuid(a),
        106 => cred::setgid(a),
        113 => cred::setreuid(a),
        114 => cred::setregid(a),
        117 => cred::setresuid(a),
        118 => cred::getresuid(a),
        119 => cred::setresgid(a),
        120 => cred::getresgid(a),
        122 => cred::setfsuid(a),
        123 => cred::setfsgid(a),
        269 => fs::faccessat(a, false),
        439 => fs::faccessat(a, true),
        // epoll (issue 13): epoll and the event files.
        213 => epoll::epoll_create(a),
        291 => epoll::epoll_create1(a),
        233 => epoll::epoll_ctl(a),
        232 => epoll::epoll_wait(a),
        281 => epoll::epoll_pwait(a),
        441 => epoll::epoll_pwait2(a),
        284 => epoll::eventfd(a),
        290 => epoll::eventfd2(a),
        283 => epoll::timerfd_create(a),
        286 => epoll::timerfd_settime(a),
        287 => epoll::timerfd_gettime(a),
        282 => epoll::signalfd(a),
        289 => epoll::signalfd4(a),
        // cred: supplementary groups, chown.
        116 => cred::setgroups(a),
        92 => fs::chown(a),
        93 => fs::fchown(a),
        94 => fs::lchown(a),
        260 => fs::fchownat(a),
        // abi (issue 13 leftovers): sendfile, copy_file_range.
        40 => fs::sendfile(a),
        326 => fs::copy_file_range(a),
        219 => time::restart_syscall(),
        _ => {
            let last = UNKNOWN_LOGGED.len() as u64 * 64 - 1;
            let bit = nr.min(last);
            let word = &UNKNOWN_LOGGED[(bit / 64) as usize];
            if word.fetch_or(1 << (bit % 64), Ordering::Relaxed) & (1 << (bit % 64)) == 0 {
                let more = if bit == last {
                    " (further unknown numbers above 1022 are not logged)"
                } else {
                    ""
                };
                warn!(
                    "unknown system call {nr} (pid {}): ENOSYS{more}",
                    crate::proc::current_pid()
                );
            }
            Err(Errno::ENOSYS)
        }
    }
}
