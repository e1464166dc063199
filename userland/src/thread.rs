//! Threads on the raw Linux ABI: `clone` with the flags `pthread_create` passes, a join through
//! `CLONE_CHILD_CLEARTID` and a futex, and the futex calls themselves.
//!
//! No allocation happens on a thread's behalf (the runtime's allocator is single-threaded): a
//! thread's stack is its own `mmap`, and the little the start needs (entry, argument, the tid
//! word the kernel clears at exit) sits at the bottom of that mapping, below the stack. A thread
//! must not allocate either, or must make sure no other thread does meanwhile.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::calls::{mmap, munmap, raw, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE};
use crate::sys::{nr, Errno};

pub const CLONE_VM: usize = 0x100;
pub const CLONE_FS: usize = 0x200;
pub const CLONE_FILES: usize = 0x400;
pub const CLONE_SIGHAND: usize = 0x800;
pub const CLONE_THREAD: usize = 0x1_0000;
pub const CLONE_SYSVSEM: usize = 0x4_0000;
pub const CLONE_SETTLS: usize = 0x8_0000;
pub const CLONE_PARENT_SETTID: usize = 0x10_0000;
pub const CLONE_CHILD_CLEARTID: usize = 0x20_0000;
pub const CLONE_CHILD_SETTID: usize = 0x100_0000;

/// glibc's `pthread_create` flags without `CLONE_SETTLS` (the runtime has no TLS).
pub const THREAD_FLAGS: usize = CLONE_VM
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SIGHAND
    | CLONE_THREAD
    | CLONE_SYSVSEM
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID;

pub const FUTEX: usize = 202;
pub const FUTEX_WAIT: usize = 0;
pub const FUTEX_WAKE: usize = 1;
pub const FUTEX_PRIVATE_FLAG: usize = 128;

/// Size of a thread's stack mapping.
pub const STACK_SIZE: usize = 64 * 1024;

/// `clone(flags, stack_top, ptid, ctid, tls)` whose child calls `entry(arg)` on the new stack
/// (the calling convention's 16-byte alignment is restored first). Returns the child's tid.
///
/// # Safety
/// With `CLONE_VM`, `stack_top` must be the top of memory that nothing else uses for the
/// child's lifetime; `ptid`, `ctid` must be valid for the flags that use them; `entry` must
/// never return (it ends with `exit`).
pub unsafe fn clone_raw(
    flags: usize,
    stack_top: usize,
    ptid: usize,
    ctid: usize,
    tls: usize,
    entry: extern "C" fn(usize) -> !,
    arg: usize,
) -> Result<i32, Errno> {
    let ret: isize;
    // SAFETY: the parent's side is an ordinary system call (clobbers declared); the child's
    // side runs only on its new stack and leaves through `entry`, which never returns, so it
    // never reaches compiler-generated code that would expect the parent's stack. The caller
    // guarantees the memory obligations above.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") nr::CLONE as isize => ret,
            in("rdi") flags,
            in("rsi") stack_top,
            in("rdx") ptid,
            in("r10") ctid,
            in("r8") tls,
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    crate::sys::check(ret).map(|tid| tid as i32)
}

/// What a thread started by [`spawn`] finds at the bottom of its stack mapping.
#[repr(C)]
struct Start {
    entry: fn(usize) -> i32,
    arg: usize,
    /// Set to the tid by `CLONE_PARENT_SETTID`, zeroed and futex-woken by the kernel at exit.
    tid: AtomicU32,
}

extern "C" fn thread_start(start: usize) -> ! {
    // SAFETY: `spawn` passes the address of the `Start` it wrote; it stays mapped until the
    // thread is joined, which is after this thread exited.
    let start = unsafe { &*(start as *const Start) };
    let status = (start.entry)(start.arg);
    crate::sys::exit(status)
}

/// A running (or finished, not yet joined) thread.
pub struct Thread {
    tid: i32,
    stack: usize,
}

/// Starts a thread running `entry(arg)` with [`THREAD_FLAGS`]; it ends with `exit` of the
/// value `entry` returns (the process goes on).
pub fn spawn(entry: fn(usize) -> i32, arg: usize) -> Result<Thread, Errno> {
    let stack = mmap(
        0,
        STACK_SIZE,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
    )?;
    let start = stack as *mut Start;
    // SAFETY: the fresh mapping is writable and large enough; nothing else uses it.
    unsafe {
        start.write(Start {
            entry,
            arg,
            tid: AtomicU32::new(0),
        })
    };
    // SAFETY: the stack is the new mapping's top, used only by the child; the tid word lives in
    // the same mapping, valid until `join` unmaps it after the kernel cleared it.
    let tid = unsafe {
        let tid_word = &(*start).tid as *const AtomicU32 as usize;
        clone_raw(
            THREAD_FLAGS,
            stack + STACK_SIZE,
            tid_word,
            tid_word,
            0,
            thread_start,
            start as usize,
        )
    };
    match tid {
        Ok(tid) => Ok(Thread { tid, stack }),
        Err(e) => {
            let _ = munmap(stack, STACK_SIZE);
            Err(e)
        }
    }
}

impl Thread {
    pub fn tid(&self) -> i32 {
        self.tid
    }

    fn tid_word(&self) -> &AtomicU32 {
        // SAFETY: the mapping holds a `Start` until `join` unmaps it.
        unsafe { &(*(self.stack as *const Start)).tid }
    }

    /// Whether the kernel has cleared the tid word (the thread has exited).
    pub fn finished(&self) -> bool {
        self.tid_word().load(Ordering::Acquire) == 0
    }

    /// Waits for the thread's exit (the kernel's `CLONE_CHILD_CLEARTID` wake), then frees its
    /// stack.
    pub fn join(self) {
        loop {
            let v = self.tid_word().load(Ordering::Acquire);
            if v == 0 {
                break;
            }
            // EAGAIN (the word changed meanwhile) and wake-ups just go around again.
            let _ = futex_wait(self.tid_word(), v, None);
        }
        let _ = munmap(self.stack, STACK_SIZE);
    }
}

/// `futex(word, FUTEX_WAIT, expected, timeout)`, `timeout` relative (`[sec, nsec]`).
pub fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<&[i64; 2]>,
) -> Result<usize, Errno> {
    let ts = timeout.map_or(0, |t| t.as_ptr() as usize);
    // SAFETY: `word` is a live u32; `ts` is null or a live timespec.
    unsafe {
        raw(
            FUTEX,
            [
                word.as_ptr() as usize,
                FUTEX_WAIT,
                expected as usize,
                ts,
                0,
                0,
            ],
        )
    }
}

/// `futex(word, FUTEX_WAKE, n)`: how many waiters were woken.
pub fn futex_wake(word: &AtomicU32, n: u32) -> Result<usize, Errno> {
    // SAFETY: FUTEX_WAKE does not access the word.
    unsafe {
        raw(
            FUTEX,
            [word.as_ptr() as usize, FUTEX_WAKE, n as usize, 0, 0, 0],
        )
    }
}

/// `gettid()`.
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no pointers.
    unsafe { raw(nr::GETTID, [0; 6]) }.map_or(-1, |t| t as i32)
}
