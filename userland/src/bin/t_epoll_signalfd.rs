//! signalfd/signalfd4: blocked signals read as `signalfd_siginfo` records (signo, code, pid,
//! uid, sigqueue's value, SIGCHLD's status), several per read, the mask changed on an existing
//! signalfd, signals outside the mask left pending, SFD_NONBLOCK/SFD_CLOEXEC, Linux's errnos, a
//! blocked read and an epoll_wait woken by a signal from another process. The same checks on
//! the host Linux.
#![no_std]
#![no_main]

extern crate alloc;

use cowlab_userland::calls::*;
use cowlab_userland::epoll::{epoll_create1, epoll_ctl, epoll_wait, ADD};
use cowlab_userland::sys::{errno, getpid, nr, Errno};
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const POLL: usize = 7;
const GETUID: usize = 102;
const RT_SIGPENDING: usize = 127;
const RT_SIGQUEUEINFO: usize = 129;
const SIGNALFD4: usize = 289;
const SIGUSR1: i32 = 10;
const SIGUSR2: i32 = 12;
const SIGCHLD: i32 = 17;
const SI_QUEUE: i32 = -1;
const CLD_EXITED: i32 = 1;
const SFD_NONBLOCK: u32 = 0o4000;
const SFD_CLOEXEC: u32 = 0o2000000;
const EAGAIN: i32 = 11;
const F_GETFD: u32 = 1;
const IN: u32 = 1;

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

fn signalfd4(fd: i32, mask: u64, size: usize, flags: u32) -> Result<i32, Errno> {
    // SAFETY: a live 8-byte mask.
    unsafe {
        raw(
            SIGNALFD4,
            [
                fd as u32 as usize,
                &mask as *const u64 as usize,
                size,
                flags as usize,
                0,
                0,
            ],
        )
    }
    .map(|f| f as i32)
}

fn block(set: u64) {
    // SAFETY: a live 8-byte set; no old set.
    let _ = unsafe {
        raw(
            nr::RT_SIGPROCMASK,
            [0, &set as *const u64 as usize, 0, 8, 0, 0],
        )
    };
}

fn pending() -> u64 {
    let mut set = 0u64;
    // SAFETY: a live 8-byte set.
    let _ = unsafe {
        raw(
            RT_SIGPENDING,
            [&mut set as *mut u64 as usize, 8, 0, 0, 0, 0],
        )
    };
    set
}

/// (signo, code, pid, uid, status, int) of one record.
fn fields(r: &[u8]) -> (u32, i32, u32, u32, i32, i32) {
    let w = |at: usize| u32::from_ne_bytes(r[at..at + 4].try_into().unwrap_or([0; 4]));
    (w(0), w(8) as i32, w(12), w(16), w(40) as i32, w(44) as i32)
}

fn read_one(fd: i32) -> Result<(u32, i32, u32, u32, i32, i32), Errno> {
    let mut r = [0u8; 128];
    read(fd, &mut r).map(|_| fields(&r))
}

fn revents(fd: i32) -> i64 {
    let mut pfd = [fd as u32 as i64 | (i64::from(IN as u16) << 32)];
    // SAFETY: one live pollfd.
    let _ = unsafe { raw(POLL, [pfd.as_mut_ptr() as usize, 1, 0, 0, 0, 0]) };
    pfd[0] >> 48
}

fn main() -> i32 {
    let mut t = Tester::new("t_epoll_signalfd");
    let e = Errno;
    let me = getpid() as u32;
    // SAFETY: no arguments.
    let uid = unsafe { raw(GETUID, [0; 6]) }.unwrap_or(0) as u32;
    block(bit(SIGUSR1) | bit(SIGUSR2) | bit(SIGCHLD));

    t.eq(
        "sizemask 4 is EINVAL",
        signalfd4(-1, bit(SIGUSR1), 4, 0),
        Err(e(errno::EINVAL)),
    );
    t.eq(
        "an unknown flag is EINVAL",
        signalfd4(-1, bit(SIGUSR1), 8, 1),
        Err(e(errno::EINVAL)),
    );
    // SAFETY: a null mask pointer: the kernel must answer EFAULT.
    let r = unsafe { raw(SIGNALFD4, [u32::MAX as usize, 0, 8, 0, 0, 0]) };
    t.eq("a null mask is EFAULT", r, Err(e(errno::EFAULT)));
    let p = pipe().unwrap_or([-1, -1]);
    t.eq(
        "a pipe as ufd is EINVAL",
        signalfd4(p[0], bit(SIGUSR1), 8, 0),
        Err(e(errno::EINVAL)),
    );
    t.eq(
        "a closed ufd is EBADF",
        signalfd4(900, bit(SIGUSR1), 8, 0),
        Err(e(errno::EBADF)),
    );
    let _ = close(p[0]);
    let _ = close(p[1]);

    let sfd = signalfd4(-1, bit(SIGUSR1), 8, SFD_NONBLOCK | SFD_CLOEXEC).unwrap_or(-1);
    t.eq("SFD_CLOEXEC", fcntl(sfd, F_GETFD, 0), Ok(1));
    t.eq("nothing pending: EAGAIN", read_one(sfd), Err(e(EAGAIN)));
    let mut small = [0u8; 64];
    t.eq(
        "a 64-byte read is EINVAL",
        read(sfd, &mut small),
        Err(e(errno::EINVAL)),
    );
    t.eq("poll: nothing", revents(sfd), 0);
    let _ = kill(me as i32, SIGUSR1);
    t.eq("poll after kill: POLLIN", revents(sfd), i64::from(IN));
    t.eq(
        "read: SIGUSR1, SI_USER, our pid and uid",
        read_one(sfd),
        Ok((SIGUSR1 as u32, 0, me, uid, 0, 0)),
    );
    t.eq("read takes it off the pending set", pending(), 0);

    let _ = kill(me as i32, SIGUSR2);
    t.eq(
        "a signal outside the mask is not read",
        read_one(sfd),
        Err(e(EAGAIN)),
    );
    t.eq("... and stays pending", pending(), bit(SIGUSR2));
    t.eq(
        "signalfd4 on the signalfd changes its mask",
        signalfd4(sfd, bit(SIGUSR1) | bit(SIGUSR2), 8, 0),
        Ok(sfd),
    );
    t.eq(
        "now it is read",
        read_one(sfd).map(|f| f.0),
        Ok(SIGUSR2 as u32),
    );

    // sigqueue's value; two records in one read.
    let mut info = [0u8; 128];
    info[..4].copy_from_slice(&SIGUSR2.to_ne_bytes());
    info[8..12].copy_from_slice(&SI_QUEUE.to_ne_bytes());
    info[16..20].copy_from_slice(&me.to_ne_bytes());
    info[24..32].copy_from_slice(&1234u64.to_ne_bytes());
    // SAFETY: a live 128-byte siginfo.
    let r = unsafe {
        raw(
            RT_SIGQUEUEINFO,
            [
                me as usize,
                SIGUSR2 as usize,
                info.as_ptr() as usize,
                0,
                0,
                0,
            ],
        )
    };
    t.eq("rt_sigqueueinfo to ourselves", r, Ok(0));
    let _ = kill(me as i32, SIGUSR1);
    let mut two = [0u8; 300];
    t.eq(
        "a 300-byte read takes two records",
        read(sfd, &mut two),
        Ok(256),
    );
    t.eq(
        "first the lower signal",
        fields(&two[..128]),
        (SIGUSR1 as u32, 0, me, uid, 0, 0),
    );
    t.eq(
        "then the queued one with its value",
        fields(&two[128..256]),
        (SIGUSR2 as u32, SI_QUEUE, me, 0, 0, 1234),
    );

    // SIGCHLD through a signalfd: the child's status.
    let cfd = signalfd4(-1, bit(SIGCHLD), 8, 0).unwrap_or(-1);
    let child = match fork() {
        Ok(0) => exit_now(3),
        Ok(pid) => pid,
        Err(_) => -1,
    };
    t.eq(
        "SIGCHLD read (blocking): CLD_EXITED, the child's pid, status 3",
        read_one(cfd).map(|f| (f.0, f.1, f.2, f.4)),
        Ok((SIGCHLD as u32, CLD_EXITED, child as u32, 3)),
    );
    let _ = waitpid(child, 0);

    // A blocked read woken by another process's kill.
    let bfd = signalfd4(-1, bit(SIGUSR1), 8, 0).unwrap_or(-1);
    let sender = match fork() {
        Ok(0) => {
            let _ = sleep_ms(50);
            let _ = kill(me as i32, SIGUSR1);
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    let start = monotonic_ns();
    t.eq(
        "a blocked read gets a child's SIGUSR1",
        read_one(bfd).map(|f| (f.0, f.2)),
        Ok((SIGUSR1 as u32, sender as u32)),
    );
    let waited = (monotonic_ns() - start) / 1_000_000;
    t.check_why(
        "... after the child's 50 ms",
        (45..2000).contains(&waited),
        waited,
    );
    let _ = waitpid(sender, 0);
    let _ = read_one(cfd);

    // epoll on a signalfd.
    let ep = epoll_create1(0).unwrap_or(-1);
    let r = epoll_ctl(ep, ADD, sfd, IN, 6);
    t.eq("ADD a signalfd", r, Ok(0));
    let sender = match fork() {
        Ok(0) => {
            let _ = sleep_ms(40);
            let _ = kill(me as i32, SIGUSR2);
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    let evs = epoll_wait(ep, 2, 2000);
    let n = evs.as_ref().map(|e| e.len()).map_err(|&e| e);
    let got = evs.ok().and_then(|e| e.first().map(|e| e.0)).unwrap_or(0);
    t.eq(
        "epoll_wait woken by a child's kill: EPOLLIN",
        (n, got),
        (Ok(1), IN),
    );
    let _ = waitpid(sender, 0);
    t.eq(
        "... and the signal is read",
        read_one(sfd).map(|f| f.0),
        Ok(SIGUSR2 as u32),
    );
    let _ = read_one(cfd);
    for fd in [ep, sfd, cfd, bfd] {
        let _ = close(fd);
    }
    t.finish()
}
