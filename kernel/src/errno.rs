//! Linux errno values: a leaf module every layer may use (`syscall/`, `fs/`, `drivers/`,
//! `proc/`). A system call returns `Result<u64, Errno>`; the dispatcher turns `Err(e)` into `-e`
//! in RAX, as the Linux ABI does.
#![deny(unsafe_code)]

use cowlab_mm::MmError;

#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(i32)]
pub enum Errno {
    EPERM = 1,
    ENOENT = 2,
    ESRCH = 3,
    EINTR = 4,
    EIO = 5,
    ENXIO = 6,
    E2BIG = 7,
    ENOEXEC = 8,
    EBADF = 9,
    ECHILD = 10,
    EAGAIN = 11,
    ENOMEM = 12,
    EACCES = 13,
    EFAULT = 14,
    EBUSY = 16,
    EEXIST = 17,
    EXDEV = 18,
    ENODEV = 19,
    ENOTDIR = 20,
    EISDIR = 21,
    EINVAL = 22,
    ENFILE = 23,
    EMFILE = 24,
    ENOTTY = 25,
    EFBIG = 27,
    ENOSPC = 28,
    ESPIPE = 29,
    EROFS = 30,
    EMLINK = 31,
    EPIPE = 32,
    ERANGE = 34,
    ENAMETOOLONG = 36,
    ENOSYS = 38,
    ENOTEMPTY = 39,
    ELOOP = 40,
    EOVERFLOW = 75,
    EOPNOTSUPP = 95,
    ETIMEDOUT = 110,
    EUCLEAN = 117,
    ECANCELED = 125,
    /// Kernel-internal, never seen by user space: a blocking call interrupted by a signal,
    /// restarted if no handler runs or the handler has `SA_RESTART`, else `EINTR` (Linux
    /// `-ERESTARTSYS`; the signal code rewrites it on the way out).
    ERESTARTSYS = 512,
    /// Kernel-internal: restarted only if no handler runs, else `EINTR` (Linux
    /// `-ERESTARTNOHAND`: sigsuspend, nanosleep, rt_sigtimedwait).
    ERESTARTNOHAND = 514,
    /// Kernel-internal: `EINTR` if a handler runs, else the call goes on through
    /// `restart_syscall` with what the task's restart block recorded (Linux
    /// `-ERESTART_RESTARTBLOCK`: relative nanosleep, poll: the time left, not the whole).
    #[allow(non_camel_case_types)]
    ERESTART_RESTARTBLOCK = 516,
}

impl Errno {
    /// The value for RAX: `-errno`.
    pub fn to_ret(self) -> u64 {
        (-(self as i64)) as u64
    }
}

impl From<MmError> for Errno {
    fn from(error: MmError) -> Errno {
        match error {
            MmError::Perm => Errno::EPERM,
            MmError::NoMem => Errno::ENOMEM,
            MmError::Access => Errno::EACCES,
            MmError::Fault => Errno::EFAULT,
            MmError::Busy => Errno::EBUSY,
            MmError::Exist => Errno::EEXIST,
            MmError::NoDev => Errno::ENODEV,
            MmError::NoSpc => Errno::ENOSPC,
            MmError::Again => Errno::EAGAIN,
            MmError::Inval => Errno::EINVAL,
        }
    }
}

/// What a system call returns.
pub type SysResult = Result<u64, Errno>;
