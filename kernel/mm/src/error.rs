//! Errors, saying who is at fault and what happens next.
//!
//! [`MmError`] is the answer to a system call that asked for something impossible (the caller's
//! fault, reported as a Linux errno) or that ran out of memory. [`FaultError`] is the verdict on
//! a page fault: the process touched memory it may not (`Segv`: it gets SIGSEGV, the kernel keeps
//! running) or the machine is out of memory (`Oom`). Broken kernel invariants are never errors:
//! they panic with a message naming the invariant.

#![deny(unsafe_code)]

/// A failed memory-management system call; [`MmError::errno`] is what user space sees.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MmError {
    /// Bad arguments: unaligned address, zero length, unknown flags (`EINVAL`).
    Inval,
    /// Out of memory, or the range is not (entirely) mapped, or no room for it (`ENOMEM`).
    NoMem,
    /// A bad user address (`EFAULT`).
    Fault,
    /// `MAP_FIXED_NOREPLACE` over an existing mapping (`EEXIST`).
    Exist,
    /// The mapping does not allow the requested permission (`EACCES`).
    Access,
    /// A fixed mapping below `mmap_min_addr`, or an operation a memfd seal forbids (`EPERM`).
    Perm,
    /// `F_SEAL_WRITE` while a shared mapping may still write the object (`EBUSY`).
    Busy,
    /// The kind of mapping is not implemented yet, e.g. shared anonymous memory before shmem
    /// (`ENODEV`, as Linux answers for a file that cannot be mapped).
    NoDev,
    /// A tmpfs file past its mount's size limit (`ENOSPC`).
    NoSpc,
    /// Transiently impossible, e.g. `MADV_COLLAPSE` of a page someone holds (`EAGAIN`).
    Again,
}

impl MmError {
    /// The positive Linux errno value.
    pub const fn errno(self) -> i32 {
        match self {
            MmError::Perm => 1,
            MmError::NoMem => 12,
            MmError::Access => 13,
            MmError::Fault => 14,
            MmError::Busy => 16,
            MmError::Exist => 17,
            MmError::NoDev => 19,
            MmError::NoSpc => 28,
            MmError::Again => 11,
            MmError::Inval => 22,
        }
    }
}

/// Why an access was refused (the `si_code` of the SIGSEGV).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SegvReason {
    /// No mapping at that address, or a kernel address (`SEGV_MAPERR`).
    NoMapping,
    /// The mapping exists but forbids this access (`SEGV_ACCERR`).
    Protection,
    /// The page lies beyond the end of the shmem object (or file) the mapping maps: Linux
    /// delivers `SIGBUS` with `BUS_ADRERR` ([`SegvReason::signal`]).
    BeyondEof,
}

impl SegvReason {
    /// Linux `si_code` (`SEGV_MAPERR` 1, `SEGV_ACCERR` 2; `BUS_ADRERR` 2 with `SIGBUS`).
    pub const fn si_code(self) -> i32 {
        match self {
            SegvReason::NoMapping => 1,
            SegvReason::Protection => 2,
            SegvReason::BeyondEof => 2,
        }
    }

    /// The signal Linux delivers: `SIGSEGV` (11), or `SIGBUS` (7) beyond the end of an object.
    pub const fn signal(self) -> i32 {
        match self {
            SegvReason::NoMapping | SegvReason::Protection => 11,
            SegvReason::BeyondEof => 7,
        }
    }
}

/// A page fault that could not be resolved.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FaultError {
    /// The process is at fault: deliver SIGSEGV.
    Segv(SegvReason),
    /// No memory for the page or a page table: the process is killed (Linux `VM_FAULT_OOM`).
    Oom,
    /// The fault needs a file page read in (or another task's read of it finished) and its
    /// caller allowed a retry (`handle_x86_page_fault_retry`): it drops the address space's
    /// lock, fills the page asleep, and faults again (Linux `VM_FAULT_RETRY`). Never returned
    /// to a caller that did not ask for it.
    Retry,
}
