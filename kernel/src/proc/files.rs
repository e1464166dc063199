//! The descriptor table as threads share it (`CLONE_FILES`): one `fs::FdTable` behind a lock,
//! reference counted by the threads that use it.
//!
//! [`SharedFdTable`] offers `FdTable`'s methods under the same names, so a system call reads
//! `with_current(|p| p.fds.get(fd))` whether or not the table is shared. Each method takes the
//! table's lock for its own duration only, except [`SharedFdTable::slot`] and
//! [`SharedFdTable::slot_mut`], whose results hold it until they are dropped (within one
//! statement at every call site): a caller must not call another method while holding one, or
//! the one CPU spins forever. Lock order: the task table, then a descriptor table. Closing what a
//! method returns (`close`, `set`, `take_all`) is the caller's job, outside both locks, because
//! dropping a pipe end wakes sleepers.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::{Deref, DerefMut};

use spin::{Mutex, MutexGuard};

use crate::errno::Errno;
use crate::fs::{Fd, FdTable, OpenFile};

/// A descriptor table, possibly shared by several threads.
#[derive(Default)]
pub struct SharedFdTable(Arc<Mutex<FdTable>>);

impl SharedFdTable {
    pub fn new(table: FdTable) -> SharedFdTable {
        SharedFdTable(Arc::new(Mutex::new(table)))
    }

    /// Descriptors 0, 1, 2 on the console (what `init` starts with).
    pub fn with_console() -> SharedFdTable {
        SharedFdTable::new(FdTable::with_console())
    }

    /// The same table, for a thread created with `CLONE_FILES`.
    pub fn share(&self) -> SharedFdTable {
        SharedFdTable(self.0.clone())
    }

    /// A private copy (fork, or clone without `CLONE_FILES`): the same open-file descriptions
    /// in new slots, as Linux `dup_fd`.
    pub fn duplicate(&self) -> SharedFdTable {
        SharedFdTable::new(self.0.lock().clone())
    }

    /// Linux `unshare_files` (execve, `begin_new_exec`): a table another process shares
    /// (`CLONE_FILES` without a thread group) becomes a private copy, so the new program's
    /// descriptors, set-user-ID or not, are not another process's to use or change. Gives
    /// back the shared table to drop outside the locks (its files may be the last references
    /// if the sharer exits meanwhile).
    pub fn unshare(&mut self) -> Option<SharedFdTable> {
        if Arc::strong_count(&self.0) == 1 {
            return None;
        }
        let copy = self.duplicate();
        Some(core::mem::replace(self, copy))
    }

    pub fn get(&self, fd: i64) -> Result<Arc<OpenFile>, Errno> {
        self.0.lock().get(fd)
    }

    /// The open descriptors and their files (drop them outside the task table's lock).
    pub fn files(&self) -> Vec<(usize, Arc<OpenFile>)> {
        self.0.lock().files()
    }

    /// The slot `fd`, the table locked while the result lives.
    pub fn slot(&self, fd: i64) -> Result<FdRef<'_>, Errno> {
        let guard = self.0.lock();
        guard.slot(fd)?;
        Ok(FdRef { guard, fd })
    }

    /// The slot `fd` for changing (its `cloexec`), the table locked while the result lives.
    pub fn slot_mut(&self, fd: i64) -> Result<FdMut<'_>, Errno> {
        let mut guard = self.0.lock();
        guard.slot_mut(fd)?;
        Ok(FdMut { guard, fd })
    }

    pub fn install_from(&self, min: usize, fd: Fd) -> Result<usize, Errno> {
        self.0.lock().install_from(min, fd)
    }

    pub fn has_room_for(&self, n: usize) -> bool {
        self.0.lock().has_room_for(n)
    }

    pub fn install(&self, fd: Fd) -> Result<usize, Errno> {
        self.0.lock().install(fd)
    }

    pub fn set(&self, index: usize, fd: Fd) -> Option<Fd> {
        self.0.lock().set(index, fd)
    }

    pub fn close(&self, fd: i64) -> Result<Fd, Errno> {
        self.0.lock().close(fd)
    }

    pub fn close_on_exec(&self) -> Vec<Fd> {
        self.0.lock().close_on_exec()
    }

    pub fn take_all(&self) -> Vec<Fd> {
        self.0.lock().take_all()
    }
}

/// A slot of a locked table (see [`SharedFdTable::slot`]).
pub struct FdRef<'a> {
    guard: MutexGuard<'a, FdTable>,
    fd: i64,
}

impl Deref for FdRef<'_> {
    type Target = Fd;

    fn deref(&self) -> &Fd {
        self.guard
            .slot(self.fd)
            .expect("the slot was checked when the table was locked")
    }
}

/// A slot of a locked table, writable (see [`SharedFdTable::slot_mut`]).
pub struct FdMut<'a> {
    guard: MutexGuard<'a, FdTable>,
    fd: i64,
}

impl Deref for FdMut<'_> {
    type Target = Fd;

    fn deref(&self) -> &Fd {
        self.guard
            .slot(self.fd)
            .expect("the slot was checked when the table was locked")
    }
}

impl DerefMut for FdMut<'_> {
    fn deref_mut(&mut self) -> &mut Fd {
        self.guard
            .slot_mut(self.fd)
            .expect("the slot was checked when the table was locked")
    }
}
