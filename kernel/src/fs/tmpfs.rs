//! tmpfs at `/tmp`: one flat directory of regular files whose data are shmem objects (Linux
//! `mm/shmem.c` as a file system).
//!
//! Picture: the directory maps names to [`Entry`]s; an entry holds the file's inode (number,
//! link count, mode) and one reference to its [`ShmemObject`]. Every open-file description of
//! the file holds another reference (`tmpfs_file::TmpfsFile`), and every mapping one more (inside the
//! memory manager), exactly as memfds do, so `read`/`write`/`mmap` share the memfd code paths.
//! A name removed (unlink, or replaced by rename) takes its entry's reference with it and
//! lowers the inode's link count: the data live on while another name, a descriptor or a
//! mapping holds the object, and the last [`ShmemObject::put`] frees the cache frames. Hard
//! links are entries sharing an inode and object; an `O_TMPFILE` file starts with no entry
//! and may get one through `linkat(fd, "", .., AT_EMPTY_PATH)` unless it was opened `O_EXCL`.
//!
//! No subdirectories: `mkdir` under `/tmp` answers `EPERM`, as Linux does for a directory whose
//! file system has no `mkdir`.
#![deny(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use cowlab_mm::shmem::{ShmemObject, ShmemQuota};
use spin::Mutex;

use super::perm::{self, Owner};
use super::tmpfs_file::TmpfsFile;
use super::{O_ACCMODE, O_CREAT, O_DIRECTORY, O_TRUNC};
use crate::errno::Errno;
use crate::memory;
use crate::proc::cred;

/// `f_type` of tmpfs (Linux `TMPFS_MAGIC`).
pub const TMPFS_MAGIC: u64 = 0x0102_1994;
/// `st_dev` of every tmpfs inode (an anonymous device number, as Linux gives tmpfs mounts).
pub const TMPFS_DEV: u64 = 0x21;
/// The inode number of `/tmp` itself.
pub const TMPFS_ROOT_INO: u64 = 1;
/// Linux `NAME_MAX`.
pub const NAME_MAX: usize = 255;
pub const O_EXCL: u32 = 0o200;
/// Linux `O_TMPFILE`: `__O_TMPFILE | O_DIRECTORY`.
pub const O_TMPFILE: u32 = 0o20_200_000;
const O_TMPFILE_BIT: u32 = 0o20_000_000;
/// `/tmp` itself for the permission checks: root's, world-writable and sticky, as on Linux.
const TMP_DIR: Owner = Owner {
    mode: super::stat::S_IFDIR | 0o1777,
    uid: 0,
    gid: 0,
};

/// A tmpfs inode: what `fstat` reports about a file besides its data.
pub struct TmpInode {
    pub ino: u64,
    /// The number of names (entries) of the file: 0 once unlinked, or for an `O_TMPFILE` file.
    nlink: AtomicU32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// The owner: the creator's filesystem ids.
    pub uid: u32,
    pub gid: u32,
    /// Linux `I_LINKABLE`: set for an `O_TMPFILE` file opened without `O_EXCL` until it gets
    /// its first name; the only way a file with no names can get one.
    linkable: AtomicBool,
    /// Creation time (`st_atime`: reads do not update it, as with `noatime`), last data
    /// change (`st_mtime`: write, truncate, fallocate through a descriptor; stores through a
    /// shared mapping are not seen), last inode change (`st_ctime`: also links and renames), in
    /// microseconds of real time.
    atime: AtomicU64,
    mtime: AtomicU64,
    ctime: AtomicU64,
}

impl TmpInode {
    /// Owner and mode, for `perm`.
    pub fn owner(&self) -> Owner {
        Owner {
            mode: super::stat::S_IFREG | self.mode,
            uid: self.uid,
            gid: self.gid,
        }
    }

    pub fn nlink(&self) -> u32 {
        self.nlink.load(Ordering::Relaxed)
    }

    /// (atime, mtime, ctime) in microseconds since the epoch.
    pub fn times(&self) -> [u64; 3] {
        [&self.atime, &self.mtime, &self.ctime].map(|t| t.load(Ordering::Relaxed))
    }

    /// The data changed (Linux `file_update_time`).
    pub fn touch_modified(&self) {
        let now = crate::rtc::realtime_micros();
        self.mtime.store(now, Ordering::Relaxed);
        self.ctime.store(now, Ordering::Relaxed);
    }

    /// The inode changed (a name added or removed).
    fn touch_changed(&self) {
        self.ctime
            .store(crate::rtc::realtime_micros(), Ordering::Relaxed);
    }
}

/// A directory entry: the inode and the directory's reference to the data.
struct Entry {
    inode: Arc<TmpInode>,
    obj: Arc<ShmemObject>,
}

static DIR: Mutex<BTreeMap<String, Entry>> = Mutex::new(BTreeMap::new());
static NEXT_INO: AtomicU64 = AtomicU64::new(TMPFS_ROOT_INO + 1);

/// The most inodes (and the most names) tmpfs holds: Linux's `nr_inodes` mount option. Names
/// and inodes live on the fixed kernel heap, so the limit is far below Linux's default (half of
/// memory in pages); beyond it creating a file or a link answers `ENOSPC`.
pub const MAX_INODES: u64 = 16384;
/// Inodes alive: named, or unlinked but still open or mapped, or `O_TMPFILE`.
static INODES: AtomicU64 = AtomicU64::new(0);

impl Drop for TmpInode {
    fn drop(&mut self) {
        INODES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The size limit of `/tmp` (Linux's `size=` default: half of RAM), charged with every cache
/// page of its files; beyond it writes, `fallocate` and faults get `ENOSPC`/`SIGBUS`.
static QUOTA: spin::Once<ShmemQuota> = spin::Once::new();

/// `/tmp`'s block quota, set to half of the usable frames on first use.
pub fn quota() -> &'static ShmemQuota {
    QUOTA.call_once(|| ShmemQuota::new(memory::frames().usable_frames() as u64 / 2))
}

/// Inodes in use (for `statfs`'s `f_ffree`).
pub fn inodes_in_use() -> u64 {
    INODES.load(Ordering::Relaxed)
}

/// A new inode owned by the caller with the permission bits `mode` (the umask was applied by
/// the VFS), `ENOSPC` if tmpfs holds [`MAX_INODES`] (Linux `shmem_reserve_inode`).
fn new_inode(mode: u32, nlink: u32, linkable: bool) -> Result<Arc<TmpInode>, Errno> {
    let cred = cred::current();
    let mut n = INODES.load(Ordering::Relaxed);
    loop {
        if n >= MAX_INODES {
            return Err(Errno::ENOSPC);
        }
        match INODES.compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => n = now,
        }
    }
    let now = crate::rtc::realtime_micros();
    Ok(Arc::new(TmpInode {
        atime: AtomicU64::new(now),
        mtime: AtomicU64::new(now),
        ctime: AtomicU64::new(now),
        ino: NEXT_INO.fetch_add(1, Ordering::Relaxed),
        nlink: AtomicU32::new(nlink),
        mode: mode & 0o7777,
        uid: cred.fsuid,
        gid: cred.fsgid,
        linkable: AtomicBool::new(linkable),
    }))
}

/// Opens (or creates) `/tmp/name` with the `open` flags; the file kind to wrap.
/// Linux: `O_CREAT|O_EXCL` on an existing name is `EEXIST`, `O_TRUNC` truncates, an existing
/// file needs the access the flags ask (`perm::may_open`), a trailing slash makes a regular
/// file `ENOTDIR` and a creation `EISDIR`.
pub fn open(name: &str, trailing_slash: bool, flags: u32, mode: u32) -> Result<TmpfsFile, Errno> {
    let cred = cred::current();
    let mut dir = DIR.lock();
    let (inode, obj) = match dir.get(name) {
        Some(_) if flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL => return Err(Errno::EEXIST),
        Some(_) if trailing_slash || flags & O_DIRECTORY != 0 => return Err(Errno::ENOTDIR),
        Some(e) => {
            perm::may_open(&cred, e.inode.owner(), flags)?;
            (e.inode.clone(), e.obj.clone())
        }
        None if flags & O_CREAT == 0 => return Err(Errno::ENOENT),
        None if trailing_slash => return Err(Errno::EISDIR),
        None => {
            let entry = Entry {
                inode: new_inode(mode, 1, false)?,
                obj: ShmemObject::new_in(Some(quota())),
            };
            let pair = (entry.inode.clone(), entry.obj.clone());
            dir.insert(String::from(name), entry);
            pair
        }
    };
    drop(dir);
    if flags & O_TRUNC != 0 {
        if let Err(e) = obj.set_size(memory::mm(), 0) {
            ShmemObject::put(obj, memory::mm());
            return Err(e.into());
        }
        inode.touch_modified();
    }
    Ok(TmpfsFile::new(obj, inode))
}

/// `open("/tmp", O_TMPFILE | O_RDWR/O_WRONLY, mode)`: a new file with no name (Linux
/// `shmem_tmpfile`); with `O_EXCL` it can never be linked. The caller checked the flags.
pub fn open_tmpfile(flags: u32, mode: u32) -> Result<TmpfsFile, Errno> {
    let linkable = flags & O_EXCL == 0;
    let inode = new_inode(mode, 0, linkable)?;
    Ok(TmpfsFile::new(ShmemObject::new_in(Some(quota())), inode))
}

/// Checks the `O_TMPFILE` flag combination (Linux `build_open_flags`): `None` without
/// `__O_TMPFILE`; `EINVAL` unless it comes with `O_DIRECTORY`, without `O_CREAT`, and with
/// write access.
pub fn tmpfile_flags(flags: u32) -> Option<Result<(), Errno>> {
    if flags & O_TMPFILE_BIT == 0 {
        return None;
    }
    let acc = flags & O_ACCMODE;
    Some(
        if flags & (O_TMPFILE | O_CREAT) != O_TMPFILE || !(acc == 1 || acc == 2) {
            Err(Errno::EINVAL)
        } else {
            Ok(())
        },
    )
}

/// Removes `/tmp/name` (Linux `shmem_unlink`); its data go with the last holder.
pub fn unlink(name: &str) -> Result<(), Errno> {
    let cred = cred::current();
    let mut dir = DIR.lock();
    let victim = dir.get(name).ok_or(Errno::ENOENT)?.inode.owner();
    perm::may_delete(&cred, TMP_DIR, victim)?;
    let entry = dir.remove(name).expect("checked above");
    drop(dir);
    release(entry);
    Ok(())
}

fn release(entry: Entry) {
    entry.inode.nlink.fetch_sub(1, Ordering::Relaxed);
    entry.inode.touch_changed();
    ShmemObject::put(entry.obj, memory::mm());
}

/// Gives an open tmpfs file the (new) name `new` (Linux `shmem_link`): `link` and `linkat`
/// of a path open the file first; `linkat(fd, "", .., AT_EMPTY_PATH)` names a descriptor's file,
/// so an `O_TMPFILE` file becomes a named one. `EEXIST` if `new` exists; `ENOENT` for a file
/// with no name, unless it is an `O_TMPFILE` file opened without `O_EXCL` and never linked
/// before (Linux `vfs_link` and `I_LINKABLE`).
pub fn link_open(obj: &Arc<ShmemObject>, inode: &Arc<TmpInode>, new: &str) -> Result<(), Errno> {
    let mut dir = DIR.lock();
    if inode.nlink() == 0 && !inode.linkable.load(Ordering::Relaxed) {
        return Err(Errno::ENOENT);
    }
    if dir.contains_key(new) {
        return Err(Errno::EEXIST);
    }
    if dir.len() as u64 >= MAX_INODES {
        return Err(Errno::ENOSPC);
    }
    inode.linkable.store(false, Ordering::Relaxed);
    inode.touch_changed();
    inode.nlink.fetch_add(1, Ordering::Relaxed);
    dir.insert(
        String::from(new),
        Entry {
            inode: inode.clone(),
            obj: obj.clone(),
        },
    );
    Ok(())
}

/// Whether `/tmp/name` exists.
pub fn exists(name: &str) -> bool {
    DIR.lock().contains_key(name)
}

/// `rename("/tmp/old", "/tmp/new")` (Linux `shmem_rename2`): replaces an existing `new`
/// unless `noreplace` (`EEXIST`). Renaming a file to itself does nothing.
pub fn rename(old: &str, new: &str, noreplace: bool) -> Result<(), Errno> {
    let cred = cred::current();
    let mut dir = DIR.lock();
    let Some(moved) = dir.get(old) else {
        return Err(Errno::ENOENT);
    };
    perm::may_delete(&cred, TMP_DIR, moved.inode.owner())?;
    if let Some(target) = dir.get(new) {
        perm::check_sticky(&cred, TMP_DIR, target.inode.owner())?;
    }
    // Two names of one file: Linux's rename does nothing.
    let same = dir
        .get(new)
        .is_some_and(|n| Arc::ptr_eq(&n.inode, &dir[old].inode));
    if old == new || same {
        return Ok(());
    }
    if noreplace && dir.contains_key(new) {
        return Err(Errno::EEXIST);
    }
    let entry = dir.remove(old).expect("checked above");
    entry.inode.touch_changed();
    let replaced = dir.insert(String::from(new), entry);
    drop(dir);
    if let Some(replaced) = replaced {
        release(replaced);
    }
    Ok(())
}

/// The directory's entries (name, inode number) in name order, for `getdents64`.
///
/// Fallible: a full directory's copy is large, and a heap with room in total may still lack
/// one block that size (`t_rob3_heap exhaust` panicked here once the heap was fragmented).
pub fn entries() -> Result<Vec<(String, u64)>, crate::errno::Errno> {
    let dir = DIR.lock();
    let mut out = Vec::new();
    crate::heap::try_reserve(&mut out, dir.len())?;
    for (name, e) in dir.iter() {
        out.push((crate::heap::try_string(name)?, e.inode.ino));
    }
    Ok(out)
}
