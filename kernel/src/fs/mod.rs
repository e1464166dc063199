//! Files: open-file descriptions and each process's descriptor table.
//!
//! Model (Linux): a descriptor is an index into the process's [`FdTable`]; it names an
//! [`OpenFile`] (an open-file description: the file's [`FileOps`], its offset, its status
//! flags), shared by `dup` and by `fork`. `FD_CLOEXEC` belongs to the descriptor, not the
//! description. Files are the console (`/dev/console` and descriptors 0-2 of `init`),
//! `/dev/null`, read-only regular files of the ramdisk (the root directory `/`), pipe ends,
//! memfds, the tmpfs at `/tmp` (see `tmpfs`), `/proc`, `/sys/kernel/debug/gup_test`,
//! `/dev/vda` and io_uring instances (see `io_uring`), one `FileOps` implementation each (see
//! `file`). Reads and writes from every caller go through `rw` with an `iter::IoIter`.
#![deny(unsafe_code)]

pub mod aio;
pub mod console;
pub mod copy;
pub mod epoll;
pub mod eventfd;
pub mod ext2_cache;
pub mod ext2_dir;
pub mod ext2_direct;
pub mod ext2_file;
pub mod ext2_glue;
pub mod ext2_mount;
pub mod ext2_race;
pub mod ext2_throttle;
pub mod file;
pub mod fsize;
pub mod guptest;
pub mod hugetlbfs;
pub mod io_uring;
pub mod iter;
#[cfg(feature = "kcov")]
pub mod kcov;
pub mod memdev;
pub mod memfd;
pub mod mount;
pub mod mount_dir;
pub mod namei;
pub mod null;
pub mod perm;
pub mod pipe;
pub mod poll;
pub mod proc_file;
pub mod procdir;
pub mod procfd;
pub mod procfs;
pub mod procpid;
pub mod procstat;
pub mod ramfs;
pub mod rw;
pub mod signalfd;
pub mod splice;
pub mod stat;
pub mod sysmm;
pub mod timerfd;
pub mod tmpfs;
pub mod tmpfs_file;
pub mod tty;
pub mod vda;
pub mod writeback;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

pub use file::{FileOps, OpenFile};
pub use stat::{Stat, StatFs};

use crate::errno::Errno;

pub const O_ACCMODE: u32 = 3;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_CREAT: u32 = 0o100;
pub const O_TRUNC: u32 = 0o1000;
pub const O_APPEND: u32 = 0o2000;
pub const O_NONBLOCK: u32 = 0o4000;
pub const O_DIRECTORY: u32 = 0o200000;
pub const O_CLOEXEC: u32 = 0o2000000;
pub const O_NOFOLLOW: u32 = 0o400000;
/// `O_PATH`: with `O_NOFOLLOW`, a symbolic link itself (for `lstat`).
pub const O_PATH: u32 = 0o10000000;

/// One descriptor slot.
#[derive(Clone)]
pub struct Fd {
    pub file: Arc<OpenFile>,
    pub cloexec: bool,
}

/// How many descriptors the caller may have: its `RLIMIT_NOFILE` (`proc::rlimit`), read at
/// each allocation as Linux's `alloc_fd` does.
pub fn max_fds() -> usize {
    crate::proc::rlimit::nofile()
}

/// A process's descriptors.
#[derive(Clone, Default)]
pub struct FdTable {
    slots: Vec<Option<Fd>>,
}

impl FdTable {
    /// Descriptors 0, 1, 2 on the console (what `init` starts with).
    pub fn with_console() -> FdTable {
        let console = OpenFile::new(Box::new(console::Console), O_RDWR);
        console
            .path
            .call_once(|| alloc::string::String::from("/dev/console"));
        let fd = Fd {
            file: console,
            cloexec: false,
        };
        FdTable {
            slots: alloc::vec![Some(fd.clone()), Some(fd.clone()), Some(fd)],
        }
    }

    pub fn get(&self, fd: i64) -> Result<Arc<OpenFile>, Errno> {
        self.slot(fd).map(|s| s.file.clone())
    }

    pub fn slot(&self, fd: i64) -> Result<&Fd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get(i))
            .and_then(Option::as_ref)
            .ok_or(Errno::EBADF)
    }

    pub fn slot_mut(&mut self, fd: i64) -> Result<&mut Fd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or(Errno::EBADF)
    }

    /// Installs `fd` at the lowest free slot at or above `min`.
    pub fn install_from(&mut self, min: usize, fd: Fd) -> Result<usize, Errno> {
        let index = (min..max_fds())
            .find(|&i| self.slots.get(i).is_none_or(Option::is_none))
            .ok_or(Errno::EMFILE)?;
        // The table grows with the highest descriptor: fallible, as Linux's `expand_files`.
        if let Some(more) = (index + 1).checked_sub(self.slots.len()) {
            crate::heap::try_reserve(&mut self.slots, more)?;
        }
        self.set(index, fd);
        Ok(index)
    }

    /// Whether `n` more descriptors fit (checked before creating what would be installed, so a
    /// failure drops nothing while the caller holds locks).
    pub fn has_room_for(&self, n: usize) -> bool {
        let used = self.slots.iter().filter(|s| s.is_some()).count();
        max_fds().saturating_sub(used) >= n
    }

    pub fn install(&mut self, fd: Fd) -> Result<usize, Errno> {
        self.install_from(0, fd)
    }

    /// Puts `fd` at `index`, closing what was there. Returns the old one (drop it outside
    /// locks: closing a pipe end wakes sleepers).
    pub fn set(&mut self, index: usize, fd: Fd) -> Option<Fd> {
        if self.slots.len() <= index {
            self.slots.resize(index + 1, None);
        }
        self.slots[index].replace(fd)
    }

    pub fn close(&mut self, fd: i64) -> Result<Fd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .and_then(Option::take)
            .ok_or(Errno::EBADF)
    }

    /// Closes the `FD_CLOEXEC` descriptors (execve).
    pub fn close_on_exec(&mut self) -> Vec<Fd> {
        let mut closed = Vec::new();
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|f| f.cloexec) {
                closed.extend(slot.take());
            }
        }
        closed
    }

    /// The open descriptors and their files, lowest first (`/proc/<pid>/fd/`).
    pub fn files(&self) -> Vec<(usize, Arc<OpenFile>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.as_ref()?.file.clone())))
            .collect()
    }

    /// Takes every descriptor (exit).
    pub fn take_all(&mut self) -> Vec<Fd> {
        self.slots.drain(..).flatten().collect()
    }
}

/// Finds `path` (absolute or relative to `/`) for the kernel's own use (stat, statfs, access,
/// chdir, execve): an `O_PATH` open, which asks no read or write permission of the file (the
/// directories on the way must still be searchable).
pub fn open(path: &str, flags: u32) -> Result<Arc<OpenFile>, Errno> {
    open_mode(path, flags | O_PATH, 0)
}

/// Whether some component of `path` is longer than `NAME_MAX` (Linux checks this for every
/// path before looking anything up: `ENAMETOOLONG`).
pub fn name_too_long(path: &str) -> bool {
    path.split('/').any(|c| c.len() > tmpfs::NAME_MAX)
}

/// Linux `build_open_flags`: an `O_PATH` open keeps only `O_CLOEXEC`, `O_DIRECTORY` and
/// `O_NOFOLLOW` beside itself; the access mode, `O_CREAT`, `O_TRUNC` and the rest are ignored.
fn path_open_flags(flags: u32) -> u32 {
    if flags & O_PATH != 0 {
        flags & (O_PATH | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW)
    } else {
        flags
    }
}

/// Opens `path` with the permission bits `mode` for a file `O_CREAT` or `O_TMPFILE` creates:
/// the mount table finds the file system (`mount::walk`), whose directory opens the rest.
pub fn open_mode(path: &str, flags: u32, mode: u32) -> Result<Arc<OpenFile>, Errno> {
    if name_too_long(path) {
        return Err(Errno::ENAMETOOLONG);
    }
    let flags = path_open_flags(flags);
    // Linux keeps every other flag in `f_flags` (`do_dentry_open`), O_TMPFILE included.
    let status = flags & !(O_CLOEXEC | O_CREAT | O_TRUNC | tmpfs::O_EXCL);
    let tmpfile = tmpfs::tmpfile_flags(flags).transpose()?.is_some();
    // Linux applies the umask in the VFS (`vfs_prepare_mode`) for file systems without ACLs.
    let mode = if flags & (O_CREAT | tmpfs::O_TMPFILE) != 0 {
        mode & 0o7777 & !crate::proc::cred::current_umask()
    } else {
        mode
    };
    let walk = mount::walk_checked(path)?;
    if walk.mount.path == "/proc" {
        if let Some(file) = procfd::open(walk.name.as_deref().unwrap_or(""), flags, mode) {
            return file;
        }
    }
    let dir = walk.mount.root;
    let ops = match &walk.name {
        None => dir.open_self(flags, mode)?,
        // O_TMPFILE names a directory: an existing file is not one.
        Some(name) if tmpfile => {
            return Err(match dir.lookup(name) {
                Ok(_) => Errno::ENOTDIR,
                Err(e) => e,
            })
        }
        Some(name) => dir.open(name, walk.trailing_slash, flags, mode)?,
    };
    let file = OpenFile::new(ops, status);
    let mount = walk.mount.path;
    file.path.call_once(|| match (&walk.name, mount) {
        (None, m) => alloc::string::String::from(m),
        (Some(name), "/") => alloc::format!("/{name}"),
        (Some(name), m) => alloc::format!("{m}/{name}"),
    });
    Ok(file)
}

/// The bytes of the program `path` for execve (Linux `do_open_execat` + `kernel_read`): `path`
/// is resolved through the mount table, relative paths (a bare name too: searching `PATH` is
/// the C library's business) from the caller's working directory. `EACCES` for a directory, a
/// file that is not regular, or one the caller may not execute (`perm::generic_permission`:
/// root too when no `x` bit is set). Read completely before the caller builds the address space (the filesystem
/// lock must not be taken under the address-space locks, see `ext2_mount`). Also returns the
/// file's owner and mode (set-user-ID and set-group-ID programs, `cred::bprm_fill_uid`).
pub fn program_image(
    path: &str,
) -> Result<(alloc::borrow::Cow<'static, [u8]>, perm::Owner), Errno> {
    use alloc::borrow::Cow;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let in_process = crate::proc::current_pid() != 0;
    let full = if in_process {
        namei::at_path(None, path)?
    } else {
        alloc::string::String::from(path)
    };
    let file = open(&full, 0)?;
    let st = file.ops.stat();
    if st.st_mode & stat::S_IFMT != stat::S_IFREG {
        return Err(Errno::EACCES);
    }
    let inode = perm::Owner {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
    };
    perm::generic_permission(&crate::proc::cred::current(), inode, perm::MAY_EXEC)?;
    if let Some(f) = file.downcast::<ext2_file::Ext2File>() {
        return Ok((Cow::Owned(f.read_all()?), inode));
    }
    if let Some(f) = file.downcast::<ramfs::RamFile>() {
        return Ok((Cow::Borrowed(f.0.data), inode));
    }
    Err(Errno::EACCES)
}

/// The absolute path [`program_image`] loads for `path` (what `/proc/<pid>/exe` shows): from
/// the working directory, or from `/` for a bare name found only there.
pub fn program_path(path: &str) -> alloc::string::String {
    if path.starts_with('/') || crate::proc::current_pid() == 0 {
        return alloc::format!("/{}", path.trim_start_matches('/'));
    }
    // `at_path` leaves a path relative to `/` as it is.
    match namei::at_path(None, path) {
        Ok(full) if open(&full, 0).is_ok() || path.contains('/') => {
            alloc::format!("/{}", full.trim_start_matches('/'))
        }
        _ => alloc::format!("/{path}"),
    }
}

/// `fstat` of an open file.
pub fn stat(file: &OpenFile) -> Stat {
    file.ops.stat()
}

/// `fstatfs` of an open file: the file system Linux would report for it (see each file type's
/// `statfs` and `fs::stat`).
pub fn statfs(file: &OpenFile) -> StatFs {
    file.ops.statfs()
}
