//! Running a program (in the forked child): arguments resolved against the resources made so
//! far, one system call each, results recorded as new resources. Whatever a call does to the
//! child (unmapping its own code, a fault, a signal) ends at most the child.

use alloc::vec::Vec;

use cowlab_userland::aio::{Iocb, IO_DESTROY, IO_GETEVENTS, IO_SETUP, IO_SUBMIT};
use cowlab_userland::calls::{raw, IoUringSqe};
use cowlab_userland::uring::{word, Ring};

use super::layout::{self, Region, SCRATCH};
use super::prog::{Arg, Prog, RES_ADDR, RES_EXT2, RES_FD, RES_PID, RES_RING};
use super::table::{Kind, Ret, Ty, CALLS};

const IO_URING_REGISTER: usize = 427;
const PIPE2: usize = 293;
const GETPID: usize = 39;
const FORK: usize = 57;
const WAIT4: usize = 61;
const KILL: usize = 62;
const NANOSLEEP: usize = 35;
const OPENAT: usize = 257;

/// What the child opens before the program, on the ext2 root's scratch directory (its working
/// directory, `layout::SCRATCH_DIR`): a regular file read-write and read-only, the directory,
/// the root directory. (Absent on the ramdisk root: then `r5` resolves to -1.)
const EXT2_FDS: &[(&core::ffi::CStr, u64)] = &[
    (c"base", 0o102), // O_RDWR | O_CREAT
    (c"base", 0),     // O_RDONLY
    (c".", 0o200000), // O_DIRECTORY
    (c"/", 0o200000),
];

#[derive(Default)]
struct Resources {
    fds: Vec<u64>,
    addrs: Vec<u64>,
    rings: Vec<Ring>,
    aio: Vec<u64>,
    pids: Vec<u64>,
    /// Descriptors of ext2 files and directories opened before the program (`r5.n`).
    ext2: Vec<u64>,
}

impl Resources {
    fn get(&self, kind: u8, n: u8) -> u64 {
        let pick = |v: &[u64], none: u64| {
            if v.is_empty() {
                none
            } else {
                v[n as usize % v.len()]
            }
        };
        match kind {
            RES_FD => pick(&self.fds, u64::MAX),
            RES_ADDR => pick(&self.addrs, layout::PLAY),
            RES_RING => {
                let fds: Vec<u64> = self.rings.iter().map(|r| r.fd as u64).collect();
                pick(&fds, u64::MAX)
            }
            RES_PID => {
                // SAFETY: getpid takes no arguments.
                let own = unsafe { raw(GETPID, [0; 6]) }.unwrap_or(1) as u64;
                pick(&self.pids, own)
            }
            RES_EXT2 => pick(&self.ext2, u64::MAX),
            _ => pick(&self.aio, 0),
        }
    }
}

/// Where scratch structures go: iovec arrays in the first scratch page, iocbs in the second,
/// kernel-written results in the third and fourth.
const IOV_AT: u64 = SCRATCH;
const IOCB_AT: u64 = SCRATCH + 4096;
const OUT_AT: u64 = SCRATCH + 2 * 4096;

/// Writes an iovec array of `count` entries (at most 16 written; a larger count makes the
/// kernel read what follows) of `len` bytes each into scratch; `bad` 1 makes the last entry
/// point into the kernel, 2 into the read-only page. Returns its address.
fn iovecs(count: u16, len: u32, bad: u8) -> u64 {
    let written = count.min(16) as u64;
    for i in 0..written {
        let base = match (bad, i + 1 == written) {
            (1, true) => 0xffff_ffff_8000_0000,
            (2, true) => layout::RO,
            _ => layout::DATA + (i * 3 * 4096 + i * 100) % (56 * 4096),
        };
        // SAFETY: 16 iovecs of 16 bytes fit in the first scratch page, which is mapped
        // read-write (unless the program unmapped it, in which case the child dies here).
        unsafe {
            let at = (IOV_AT + i * 16) as *mut u64;
            core::ptr::write_volatile(at, base);
            core::ptr::write_volatile(at.add(1), u64::from(len));
        }
    }
    IOV_AT
}

fn resolve(res: &Resources, arg: Arg) -> u64 {
    match arg {
        Arg::Imm(v) => v,
        Arg::Res(kind, n) => res.get(kind, n),
        Arg::Buf(region, off) => Region::base(region) + u64::from(off),
        Arg::Path(i) => layout::path_addr(i),
        Arg::Iov(count, len, bad) => iovecs(count, len, bad),
    }
}

/// Runs every call of `prog` in order.
pub fn run(prog: &Prog) {
    let mut res = Resources::default();
    for (path, flags) in EXT2_FDS {
        if let Some(fd) = sys(
            OPENAT,
            [(-100i64) as u64, path.as_ptr() as u64, *flags, 0o644, 0, 0],
        ) {
            res.ext2.push(fd);
        }
    }
    for call in prog {
        let desc = &CALLS[call.call as usize];
        let mut a = [0u64; 6];
        for (i, (&arg, &ty)) in call.args.iter().zip(desc.args).enumerate() {
            a[i] = match (ty, i.checked_sub(1).map(|p| call.args[p])) {
                (Ty::IovCount, Some(Arg::Iov(count, ..))) => u64::from(count),
                _ => resolve(&res, arg),
            };
        }
        let result = execute(&mut res, desc.kind, a, &call.args);
        if let Some(v) = result {
            match desc.ret {
                Ret::Fd => res.fds.push(v),
                Ret::Addr => res.addrs.push(v),
                Ret::Nothing => {}
            }
        }
    }
    // The children go with the program (the parent, a subreaper, collects any left when the
    // program dies first).
    for &pid in &res.pids {
        let _ = sys(KILL, [pid, 9, 0, 0, 0, 0]);
        let _ = sys(WAIT4, [pid, 0, 0, 0, 0, 0]);
    }
}

fn sys(n: usize, a: [u64; 6]) -> Option<u64> {
    let args = a.map(|v| v as usize);
    // SAFETY: deliberately arbitrary arguments: the kernel must refuse what is invalid, and
    // what it does with valid ones (overwriting or unmapping this child's memory) ends at most
    // this child.
    unsafe { raw(n, args) }.ok().map(|v| v as u64)
}

fn execute(res: &mut Resources, kind: Kind, a: [u64; 6], args: &[Arg]) -> Option<u64> {
    match kind {
        Kind::Sys(n) => sys(n, a),
        Kind::PipeTwo => {
            sys(PIPE2, [OUT_AT, a[0], 0, 0, 0, 0])?;
            // SAFETY: the kernel wrote two descriptors there (the call succeeded).
            let fds = unsafe { core::ptr::read_volatile(OUT_AT as *const [i32; 2]) };
            res.fds.extend(fds.map(|f| f as u64));
            Some(0)
        }
        Kind::UringSetup => {
            let ring = Ring::new(a[0] as u32).ok()?;
            res.fds.push(ring.fd as u64);
            res.rings.push(ring);
            Some(0)
        }
        Kind::UringSqe => {
            let Arg::Res(_, n) = args[0] else {
                return None;
            };
            if res.rings.is_empty() {
                return None;
            }
            let ring = &res.rings[n as usize % res.rings.len()];
            ring.push(IoUringSqe {
                opcode: a[1] as u8,
                fd: a[2] as i32,
                addr: a[3],
                len: a[4] as u32,
                off: a[5],
                user_data: 7,
                ..IoUringSqe::default()
            });
            let r = ring.enter(1, 0).ok().map(|v| v as u64);
            // Reap everything so the CQ never fills.
            let tail = word(ring.cq + ring.p.cq_off.tail as usize)
                .load(core::sync::atomic::Ordering::Acquire);
            word(ring.cq + ring.p.cq_off.head as usize)
                .store(tail, core::sync::atomic::Ordering::Release);
            r
        }
        Kind::UringRegister => sys(IO_URING_REGISTER, [a[0], a[1], a[2], a[3], 0, 0]),
        Kind::AioSetup => {
            sys(IO_SETUP, [a[0], OUT_AT, 0, 0, 0, 0])?;
            // SAFETY: the kernel wrote the context there (the call succeeded).
            res.aio
                .push(unsafe { core::ptr::read_volatile(OUT_AT as *const u64) });
            Some(0)
        }
        Kind::AioRw => {
            let iocb = Iocb {
                data: 9,
                opcode: a[2] as u16,
                fildes: a[1] as u32,
                buf: a[3],
                nbytes: a[4],
                offset: a[5] as i64,
                ..Iocb::default()
            };
            // SAFETY: the iocb and the one-pointer array fit in the second scratch page.
            unsafe {
                core::ptr::write_volatile(IOCB_AT as *mut Iocb, iocb);
                core::ptr::write_volatile((IOCB_AT + 128) as *mut u64, IOCB_AT);
            }
            sys(IO_SUBMIT, [a[0], 1, IOCB_AT + 128, 0, 0, 0])
        }
        Kind::AioEvents => {
            // A zero timeout: never wait.
            // SAFETY: 16 bytes of the fourth scratch page.
            unsafe { core::ptr::write_volatile((OUT_AT + 4096) as *mut [u64; 2], [0, 0]) };
            sys(
                IO_GETEVENTS,
                [a[0], a[1] & 7, a[2] & 15, OUT_AT, OUT_AT + 4096, 0],
            )
        }
        Kind::Spawn => {
            let pid = sys(FORK, [0; 6])?;
            if pid == 0 {
                let ts = [0u64, (a[0] % 32) * 1_000_000];
                // SAFETY: nanosleep reads the timespec from a local.
                let _ = unsafe { raw(NANOSLEEP, [ts.as_ptr() as usize, 0, 0, 0, 0, 0]) };
                cowlab_userland::calls::exit_now(a[1] as i32 & 0xff);
            }
            res.pids.push(pid);
            Some(0)
        }
        Kind::AioDestroy => {
            let r = sys(IO_DESTROY, [a[0], 0, 0, 0, 0, 0]);
            res.aio.retain(|&c| c != a[0]);
            r
        }
    }
}
