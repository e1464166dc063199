//! Per-phase accounting of whole operations (fork, GUP-fast pinning, a file's `pread`/`pwrite`,
//! vmsplice), the companion of
//! [`crate::faultstat`] and compiled in only with the same `faultstat` cargo feature.
//!
//! Picture: an operation is cut into phases by timestamps. [`begin`] starts a record; each
//! [`mark`] adds the ticks since the previous mark to the phase that just ended; [`end`] closes
//! the record and adds it to the operation's totals with a count of `units` (forks, pages), or
//! drops it when `units` is 0. Marks outside a record do nothing, so a path shared with other
//! callers (GUP-fast under vmsplice) is only measured when the caller being studied opened a
//! record. A phase may be marked many times per record (per page-table page, per page): its
//! ticks add up. Each mark costs about a dozen instructions, which land in the phase it ends.
//!
//! Without the feature every function is an empty `#[inline(always)]` body. With it, records
//! must not nest or interleave (one CPU; the operations measured do not fault).

/// The operation a record belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Op {
    /// fork/clone of a new process: the kernel's `clone` with `AddressSpace::fork` inside.
    Fork,
    /// `pin_user_pages_fast` as the `gup_test` `PIN_FAST_BENCHMARK` ioctl drives it, with the
    /// unpin; units are pages.
    GupFast,
    /// `pread64` (the buffered read of a file's cached page): from the system call's handler
    /// to its return; units are calls.
    FileRead,
    /// `pwrite64` (the buffered write into a file's cached page): as [`Op::FileRead`].
    FileWrite,
    /// `vmsplice` of user pages into a pipe: the GUP-fast phases inside it are
    /// [`Op::GupFast`]'s; units are pages queued.
    Vmsplice,
    /// `open(O_CREAT|O_EXCL)` + `close` + `unlink` of a new file (the `file_create_unlink`
    /// row): one record from the `openat` handler to the `unlink` handler's return, the
    /// user code and system-call entries and exits between them in the `between` phases;
    /// units are calls.
    FileCreateUnlink,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Fork,
        Op::GupFast,
        Op::FileRead,
        Op::FileWrite,
        Op::Vmsplice,
        Op::FileCreateUnlink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Fork => "fork",
            Op::GupFast => "gup_fast",
            Op::FileRead => "file_read",
            Op::FileWrite => "file_write",
            Op::Vmsplice => "vmsplice",
            Op::FileCreateUnlink => "file_create_unlink",
        }
    }

    /// The phases of this operation, in the order they are printed.
    pub fn phases(self) -> &'static [Phase] {
        match self {
            Op::Fork => &[
                Phase::ForkSetup,
                Phase::ForkVmas,
                Phase::ForkTables,
                Phase::ForkPtes,
                Phase::ForkFlush,
            ],
            Op::GupFast => &[
                Phase::GupIoctl,
                Phase::GupEnter,
                Phase::GupWalk,
                Phase::GupGrab,
                Phase::GupCheck,
                Phase::GupLeave,
                Phase::GupUnpin,
            ],
            Op::FileRead => &[
                Phase::FileFd,
                Phase::FileVfs,
                Phase::FileBuffer,
                Phase::FileLookup,
                Phase::FileCopy,
                Phase::FileToUser,
                Phase::FileLeave,
            ],
            Op::FileWrite => &[
                Phase::FileFd,
                Phase::FileVfs,
                Phase::FileLock,
                Phase::FileFromUser,
                Phase::FileLookup,
                Phase::FileBlocks,
                Phase::FileCopy,
                Phase::FileDirty,
                Phase::FileThrottle,
                Phase::FileLeave,
            ],
            Op::Vmsplice => &[
                Phase::VsSyscall,
                Phase::GupEnter,
                Phase::GupWalk,
                Phase::GupGrab,
                Phase::GupCheck,
                Phase::GupLeave,
                Phase::VsPipe,
                Phase::VsRelease,
                Phase::VsReturn,
            ],
            Op::FileCreateUnlink => &[
                Phase::CuPath,
                Phase::CuResolve,
                Phase::CuCreate,
                Phase::CuOpen,
                Phase::CuInstall,
                Phase::CuBetween,
                Phase::CuClose,
                Phase::CuUnlinkLookup,
                Phase::CuUnlink,
                Phase::CuForget,
                Phase::FileLeave,
            ],
        }
    }
}

/// A phase of an [`Op`], ended by a call to [`mark`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Phase {
    /// Process set-up outside the memory manager: the task, pid, kernel stack, FPU state, file
    /// table, the child's `AddressSpace` shell, and the system call's own checks.
    ForkSetup,
    /// The VMA-count check and copying the VMAs into the child.
    ForkVmas,
    /// Page tables: the child's root, walking the parent's tables, allocating the child's.
    ForkTables,
    /// The per-PTE work: metadata, reference counts, write-protecting, the child's PTE.
    ForkPtes,
    /// After the copy: VMA accounting, the parent's TLB flush, the write-protect sequence.
    ForkFlush,
    /// The ioctl's own work: reading the arguments, the page array, writing the result.
    GupIoctl,
    /// From the entry point to the walk: flag checks, the fork sequence count, interrupts off.
    GupEnter,
    /// Finding the PT page (once per 2 MiB) and reading and checking the PTE, per page.
    GupWalk,
    /// Taking the reference and the pin count (`try_grab_folio_fast`), per page.
    GupGrab,
    /// The checks after taking it (`gup_fast_may_keep`, the PTE re-read) and the store.
    GupCheck,
    /// After the loop: interrupts on, the fence and sequence re-check, the counters, return.
    GupLeave,
    /// Unpinning every page (`unpin_user_pages`).
    GupUnpin,
    /// File I/O: the system call's arguments and the descriptor's file (`fdget`).
    FileFd,
    /// The VFS: the offset and access checks, the user buffer's iterator, the size limits
    /// (writes), the dispatch to the filesystem's `read_iter`/`write_iter`.
    FileVfs,
    /// A read's kernel bounce buffer: allocated and zeroed.
    FileBuffer,
    /// A write's inode lock and the set-ID check (`file_remove_privs`).
    FileLock,
    /// A write's bytes copied from the user into a kernel buffer (allocated here).
    FileFromUser,
    /// Finding the page in the page cache, its reference (and for a write its lock) taken and
    /// (for a read) released.
    FileLookup,
    /// A write's blocks: the filesystem's `write_begin` (the block map, the on-disk size).
    FileBlocks,
    /// The 4 KiB copy between the cached page and the kernel buffer.
    FileCopy,
    /// A read's copy from the kernel buffer to the user.
    FileToUser,
    /// A write's page made dirty, the size and the page's unlock and release (`write_end`).
    FileDirty,
    /// A write's dirty-page throttle (`balance_dirty_pages`).
    FileThrottle,
    /// After the copy: the buffer freed, the lock dropped, the result, back to the handler.
    FileLeave,
    /// vmsplice before GUP: the system call's arguments, the pipe's file, the iovec.
    VsSyscall,
    /// vmsplice: queueing the pages into the pipe's buffers (`add_to_pipe`), the pipe lock
    /// and the reader's wake-up.
    VsPipe,
    /// vmsplice: releasing the pages the pipe did not take, the loop.
    VsRelease,
    /// vmsplice: from the last batch to the handler's return.
    VsReturn,
    /// create+unlink: `openat`'s path copied from the user and resolved to its mount
    /// (`at_path`, `walk_checked`), the descriptor-table room check.
    CuPath,
    /// create+unlink: ext2's lookup of the name, which misses (`resolve`).
    CuResolve,
    /// create+unlink: the parent walked again, the permission and owner checks and ext2's
    /// `create` (the name looked up once more, the inode allocated and written, the directory
    /// entry added).
    CuCreate,
    /// create+unlink: the new file opened (`Ext2File::open`: the open reference, the page
    /// cache attached) and its `OpenFile` made.
    CuOpen,
    /// create+unlink: the descriptor installed, back to `openat`'s return.
    CuInstall,
    /// create+unlink: between the system calls (their exits and entries, the user code).
    CuBetween,
    /// create+unlink: `close`: the descriptor taken out and the last reference dropped
    /// (`Ext2File`'s drop: the inode's link count read, the cache kept, the open reference
    /// released).
    CuClose,
    /// create+unlink: `unlink`'s path, the parent walked, the sticky-bit check and the name
    /// looked up.
    CuUnlinkLookup,
    /// create+unlink: ext2's `unlink` (the entry removed, the inode written, and with no link
    /// and no opener left its blocks and inode freed).
    CuUnlink,
    /// create+unlink: the page cache kept past the last close forgotten (`forget_closed`).
    CuForget,
}

impl Phase {
    pub const COUNT: usize = 38;

    pub fn name(self) -> &'static str {
        match self {
            Phase::ForkSetup => "setup",
            Phase::ForkVmas => "vmas",
            Phase::ForkTables => "tables",
            Phase::ForkPtes => "ptes",
            Phase::ForkFlush => "flush",
            Phase::GupIoctl => "ioctl",
            Phase::GupEnter => "enter",
            Phase::GupWalk => "walk",
            Phase::GupGrab => "grab",
            Phase::GupCheck => "check",
            Phase::GupLeave => "leave",
            Phase::GupUnpin => "unpin",
            Phase::FileFd => "fd",
            Phase::FileVfs => "vfs",
            Phase::FileBuffer => "buffer",
            Phase::FileLock => "lock",
            Phase::FileFromUser => "from_user",
            Phase::FileLookup => "lookup",
            Phase::FileBlocks => "blocks",
            Phase::FileCopy => "copy",
            Phase::FileToUser => "to_user",
            Phase::FileDirty => "dirty",
            Phase::FileThrottle => "throttle",
            Phase::FileLeave => "leave",
            Phase::VsSyscall => "syscall",
            Phase::VsPipe => "pipe",
            Phase::VsRelease => "release",
            Phase::VsReturn => "return",
            Phase::CuPath => "path",
            Phase::CuResolve => "resolve",
            Phase::CuCreate => "create",
            Phase::CuOpen => "open",
            Phase::CuInstall => "install",
            Phase::CuBetween => "between",
            Phase::CuClose => "close",
            Phase::CuUnlinkLookup => "unlink_lookup",
            Phase::CuUnlink => "unlink",
            Phase::CuForget => "forget",
        }
    }
}

/// Whether this build measures (the `faultstat` feature).
pub const ENABLED: bool = cfg!(feature = "faultstat");

pub use imp::{begin, end, for_each, mark};

#[cfg(feature = "faultstat")]
mod imp {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

    use super::{Op, Phase};

    const OPS: usize = Op::ALL.len();

    static ACTIVE: AtomicBool = AtomicBool::new(false);
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SCRATCH: [AtomicU64; Phase::COUNT] = [const { AtomicU64::new(0) }; Phase::COUNT];
    static COUNT: [AtomicU64; OPS] = [const { AtomicU64::new(0) }; OPS];
    static TOTAL: [[AtomicU64; Phase::COUNT]; OPS] =
        [const { [const { AtomicU64::new(0) }; Phase::COUNT] }; OPS];

    #[inline(always)]
    fn now() -> u64 {
        // SAFETY: rdtsc reads the time-stamp counter; it touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// A record starts now (any unfinished one is dropped).
    #[inline(always)]
    pub fn begin(_op: Op) {
        for s in &SCRATCH {
            s.store(0, Relaxed);
        }
        ACTIVE.store(true, Relaxed);
        LAST.store(now(), Relaxed);
    }

    /// `p` ends now.
    #[inline(always)]
    pub fn mark(p: Phase) {
        if !ACTIVE.load(Relaxed) {
            return;
        }
        let t = now();
        let last = LAST.swap(t, Relaxed);
        SCRATCH[p as usize].fetch_add(t.wrapping_sub(last), Relaxed);
    }

    /// `last` ends now and so does the record: added to `op`'s totals as `units` units, or
    /// dropped if `units` is 0.
    #[inline(always)]
    pub fn end(op: Op, last: Phase, units: u64) {
        mark(last);
        if !ACTIVE.swap(false, Relaxed) || units == 0 {
            return;
        }
        COUNT[op as usize].fetch_add(units, Relaxed);
        for (total, s) in TOTAL[op as usize].iter().zip(&SCRATCH) {
            total.fetch_add(s.load(Relaxed), Relaxed);
        }
    }

    /// Calls `f(op, units, [(phase, ticks)])` for every operation, phases in [`Op::phases`]
    /// order.
    pub fn for_each(mut f: impl FnMut(Op, u64, &mut dyn Iterator<Item = (Phase, u64)>)) {
        for op in Op::ALL {
            let totals = &TOTAL[op as usize];
            let mut phases = op
                .phases()
                .iter()
                .map(|&p| (p, totals[p as usize].load(Relaxed)));
            f(op, COUNT[op as usize].load(Relaxed), &mut phases);
        }
    }
}

#[cfg(not(feature = "faultstat"))]
mod imp {
    use super::{Op, Phase};

    #[inline(always)]
    pub fn begin(_: Op) {}

    #[inline(always)]
    pub fn mark(_: Phase) {}

    #[inline(always)]
    pub fn end(_: Op, _: Phase, _: u64) {}

    /// Nothing is measured without the feature: `f` is never called.
    pub fn for_each(_: impl FnMut(Op, u64, &mut dyn Iterator<Item = (Phase, u64)>)) {}
}
