//! fork (and vfork and clone with fork semantics): a copy of the caller with a copy-on-write
//! copy of its address space (`AddressSpace::fork`), the same open files (shared descriptions),
//! and a kernel stack whose first switch-in returns to ring 3 from the same system call with 0.

use alloc::boxed::Box;
use alloc::sync::Arc;

use spin::Mutex;

use super::switch::{FpuState, KernelStack};
use super::{alloc_pid, with_current, Pid, Process, State, TABLE};
use crate::idt::TrapFrame;
use crate::memory;
use crate::syscall::Errno;

/// The most processes (zombies included) that may exist at once.
pub const MAX_PROCESSES: usize = 128;

/// Creates the child of the current process; `frame` is the caller's system-call frame.
pub fn fork(frame: &TrapFrame) -> Result<Pid, Errno> {
    // Each process costs a kernel stack from the (16 MiB) kernel heap: bound their number
    // (Linux `RLIMIT_NPROC` answers EAGAIN too).
    if TABLE.lock().len() >= MAX_PROCESSES {
        return Err(Errno::EAGAIN);
    }
    let aspace = super::current_aspace();
    let child_aspace = aspace.lock().fork(memory::mm())?;
    drop(aspace);
    let pid = alloc_pid();
    let mut child_frame = *frame;
    child_frame.rax = 0;
    let mut kstack = KernelStack::new();
    let ctx_rsp = kstack.prepare(&child_frame);
    // The parent's FPU registers are live in the CPU: the child starts with a copy.
    let mut fpu = FpuState::initial();
    fpu.save();
    let child = with_current(|parent| Process {
        pid,
        parent: parent.pid,
        name: parent.name.clone(),
        state: State::Runnable,
        aspace: Some(Arc::new(Mutex::new(child_aspace))),
        kstack,
        ctx_rsp,
        fpu,
        fds: parent.fds.clone(),
        fs_base: parent.fs_base,
        pending_kill: None,
        sigactions: parent.sigactions,
        sigmask: parent.sigmask,
        child_minflt: 0,
        own_minflt: 0,
    });
    TABLE.lock().insert(pid, Box::new(child));
    Ok(pid)
}
