//! The namespace operations a VFS calls, by inode number: lookup, create/mknod, mkdir, symlink,
//! link, unlink, rmdir, rename, readlink, attributes and stat, and the open/release counts that
//! decide when an unlinked inode is freed. Each allocates everything it needs before it links
//! anything, and undoes its allocations if a later step fails, so `ENOSPC` never leaves a
//! half-made file behind.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::errno::{Errno, Result};
use crate::fs::Ext2;
use crate::layout::*;

/// `stat(2)` fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ino: u32,
    pub mode: u16,
    pub nlink: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte units, as `st_blocks`.
    pub blocks: u64,
    pub atime: u32,
    pub mtime: u32,
    pub ctime: u32,
    pub blksize: u32,
    /// Device number of a character or block special file (Linux's `new_encode_dev` form).
    pub rdev: u32,
}

/// Which names a directory operation refuses before it looks anything up.
fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() {
        return Err(Errno::ENOENT);
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// Linux's `new_encode_dev`/`old_encode_dev` split of a device number into `i_block`.
fn encode_rdev(inode: &mut Inode, rdev: u32) {
    let (major, minor) = (
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    );
    if major < 256 && minor < 256 {
        inode.block[0] = (major << 8) | minor;
        inode.block[1] = 0;
    } else {
        inode.block[0] = 0;
        inode.block[1] = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
    }
}

fn decode_rdev(inode: &Inode) -> u32 {
    let (major, minor) = if inode.block[0] != 0 {
        ((inode.block[0] >> 8) & 0xff, inode.block[0] & 0xff)
    } else {
        let d = inode.block[1];
        ((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00))
    };
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

impl<D: BlockDevice> Ext2<D> {
    /// The root directory's inode number.
    pub fn root(&self) -> u32 {
        ROOT_INO
    }

    fn live_dir(&mut self, dir: u32) -> Result<Inode> {
        let inode = self.read_live(dir)?;
        if !inode.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(inode)
    }

    /// The inode `name` names in `dir`.
    pub fn lookup(&mut self, dir: u32, name: &[u8]) -> Result<u32> {
        check_name(name)?;
        let inode = self.live_dir(dir)?;
        match self.find_entry(dir, &inode, name)? {
            Some(f) => {
                self.read_referenced(dir, f.ino)?;
                Ok(f.ino)
            }
            None => Err(Errno::ENOENT),
        }
    }

    /// A new inode for a file in `dir` (set-group-ID directories pass their group on, and their
    /// set-group-ID bit to new subdirectories, as Linux's `inode_init_owner`).
    fn new_inode(
        &mut self,
        dir: u32,
        mut mode: u16,
        uid: u32,
        mut gid: u32,
    ) -> Result<(u32, Inode)> {
        let parent = self.read_live(dir)?;
        let is_dir = mode & S_IFMT == S_IFDIR;
        if parent.mode & S_ISGID != 0 {
            gid = parent.gid;
            if is_dir {
                mode |= S_ISGID;
            }
        }
        let ino = self.alloc_inode(dir, is_dir)?;
        let now = self.now();
        self.next_generation = self.next_generation.wrapping_add(1);
        let inode = Inode {
            mode,
            uid,
            gid,
            atime: now,
            ctime: now,
            mtime: now,
            links_count: 1,
            generation: self.next_generation,
            ..Inode::default()
        };
        self.clear_inode_slot(ino)?;
        self.write_inode(ino, &inode)?;
        Ok((ino, inode))
    }

    /// Undoes `new_inode` (and any blocks it got) after a later step failed.
    fn discard_inode(&mut self, ino: u32) {
        let _ = self.evict(ino);
    }

    /// The checks before a new name: as Linux's `filename_create`, an existing name is `EEXIST`
    /// even on a read-only filesystem.
    fn must_not_exist(&mut self, dir: u32, name: &[u8]) -> Result<Inode> {
        check_name(name)?;
        let inode = self.live_dir(dir)?;
        if is_dot(name) || self.find_entry(dir, &inode, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        self.writable()?;
        Ok(inode)
    }

    /// Creates a regular file (`open(O_CREAT)`; `O_EXCL` is the caller's: this fails with
    /// `EEXIST` whenever the name exists). `mode` holds the permission bits.
    pub fn create(&mut self, dir: u32, name: &[u8], mode: u16, uid: u32, gid: u32) -> Result<u32> {
        self.mknod(dir, name, S_IFREG | (mode & 0o7777), 0, uid, gid)
    }

    /// `mknod(2)`: a regular file, FIFO, socket or device special file (`mode` carries the type).
    pub fn mknod(
        &mut self,
        dir: u32,
        name: &[u8],
        mode: u16,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<u32> {
        let ty = match mode & S_IFMT {
            0 => S_IFREG,
            t @ (S_IFREG | S_IFIFO | S_IFSOCK | S_IFCHR | S_IFBLK) => t,
            _ => return Err(Errno::EINVAL),
        };
        self.must_not_exist(dir, name)?;
        let (ino, mut inode) = self.new_inode(dir, ty | (mode & 0o7777), uid, gid)?;
        if ty == S_IFCHR || ty == S_IFBLK {
            encode_rdev(&mut inode, rdev);
            self.write_inode(ino, &inode)?;
        }
        if let Err(e) = self.add_entry(dir, name, ino, inode.mode) {
            self.discard_inode(ino);
            return Err(e);
        }
        Ok(ino)
    }

    /// `mkdir(2)`.
    pub fn mkdir(&mut self, dir: u32, name: &[u8], mode: u16, uid: u32, gid: u32) -> Result<u32> {
        let parent = self.must_not_exist(dir, name)?;
        if parent.links_count >= LINK_MAX {
            return Err(Errno::EMLINK);
        }
        let (ino, mut inode) = self.new_inode(dir, S_IFDIR | (mode & 0o7777), uid, gid)?;
        let mut goal = 0;
        let blk = match self.bmap_alloc(ino, &mut inode, 0, &mut goal) {
            Ok((b, _)) => b,
            Err(e) => {
                self.discard_inode(ino);
                return Err(e);
            }
        };
        let bs = self.bs as usize;
        let ft = self.entry_ft(S_IFDIR);
        inode.links_count = 2;
        inode.size = bs as u64;
        // The inode is written first so that, if the block's buffer cannot be set up (a device
        // error on a cache write-back), discarding the inode frees its block too.
        self.write_inode(ino, &inode)?;
        match self.disk.bnew(blk) {
            Ok(buf) => {
                crate::dir::put_entry(buf, 0, ino, 12, b".", ft);
                crate::dir::put_entry(buf, 12, dir, bs - 12, b"..", ft);
            }
            Err(e) => {
                self.discard_inode(ino);
                return Err(e);
            }
        }
        if let Err(e) = self.add_entry(dir, name, ino, inode.mode) {
            self.discard_inode(ino);
            return Err(e);
        }
        let mut parent = self.read_live(dir)?;
        parent.links_count += 1;
        self.write_inode(dir, &parent)?;
        Ok(ino)
    }

    /// `symlink(2)`: targets under 60 bytes live in `i_block` (fast), longer ones in a block.
    pub fn symlink(
        &mut self,
        dir: u32,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<u32> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() >= self.bs as usize {
            return Err(Errno::ENAMETOOLONG);
        }
        self.must_not_exist(dir, name)?;
        let (ino, mut inode) = self.new_inode(dir, S_IFLNK | 0o777, uid, gid)?;
        inode.size = target.len() as u64;
        if target.len() < N_BLOCKS * 4 {
            let mut raw = [0u8; N_BLOCKS * 4];
            raw[..target.len()].copy_from_slice(target);
            for (i, p) in inode.block.iter_mut().enumerate() {
                *p = u32::from_le_bytes([
                    raw[4 * i],
                    raw[4 * i + 1],
                    raw[4 * i + 2],
                    raw[4 * i + 3],
                ]);
            }
        } else {
            let mut goal = 0;
            match self.bmap_alloc(ino, &mut inode, 0, &mut goal) {
                Ok((blk, _)) => {
                    let mut buf = vec![0u8; self.bs as usize];
                    buf[..target.len()].copy_from_slice(target);
                    let r = self.disk.write_data(blk, &buf);
                    self.write_inode(ino, &inode)?;
                    if let Err(e) = r {
                        self.discard_inode(ino);
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.discard_inode(ino);
                    return Err(e);
                }
            }
        }
        self.write_inode(ino, &inode)?;
        if let Err(e) = self.add_entry(dir, name, ino, inode.mode) {
            self.discard_inode(ino);
            return Err(e);
        }
        Ok(ino)
    }

    /// `readlink(2)`: the target bytes.
    pub fn readlink(&mut self, ino: u32) -> Result<Vec<u8>> {
        let inode = self.read_live(ino)?;
        if !inode.is_symlink() {
            return Err(Errno::EINVAL);
        }
        let len = inode.size as usize;
        if self.is_fast_symlink(&inode) {
            if len >= N_BLOCKS * 4 {
                return Err(self.corrupt(format!("fast symlink inode {ino}: size {len}")));
            }
            let mut raw = Vec::with_capacity(N_BLOCKS * 4);
            for p in inode.block {
                raw.extend_from_slice(&p.to_le_bytes());
            }
            raw.truncate(len);
            return Ok(raw);
        }
        if len >= self.bs as usize || len == 0 {
            return Err(self.corrupt(format!("symlink inode {ino}: size {len}")));
        }
        let blk = self.bmap(ino, &inode, 0)?;
        if blk == 0 {
            return Err(self.corrupt(format!("symlink inode {ino}: no block")));
        }
        let mut buf = vec![0u8; self.bs as usize];
        self.disk.read_data(blk, &mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }

    /// `link(2)`: a new name `name` in `dir` for `ino`.
    pub fn link(&mut self, ino: u32, dir: u32, name: &[u8]) -> Result<()> {
        let inode = self.read_live(ino)?;
        if inode.is_dir() {
            return Err(Errno::EPERM);
        }
        if inode.links_count == 0 {
            return Err(Errno::ENOENT);
        }
        if inode.links_count >= LINK_MAX {
            return Err(Errno::EMLINK);
        }
        self.must_not_exist(dir, name)?;
        self.add_entry(dir, name, ino, inode.mode)?;
        let mut inode = self.read_live(ino)?;
        inode.links_count += 1;
        inode.ctime = self.now();
        self.write_inode(ino, &inode)
    }

    /// Frees an inode that lost its last link now, or at its last `release`.
    fn drop_link_target(&mut self, ino: u32) -> Result<()> {
        if self.open.contains_key(&ino) {
            self.orphans.insert(ino);
            Ok(())
        } else {
            self.evict(ino)
        }
    }

    /// `unlink(2)`.
    pub fn unlink(&mut self, dir: u32, name: &[u8]) -> Result<()> {
        check_name(name)?;
        self.writable()?;
        let ino = self.lookup(dir, name)?;
        let mut inode = self.read_live(ino)?;
        if inode.is_dir() {
            return Err(Errno::EISDIR);
        }
        self.remove_entry(dir, name)?;
        inode.links_count = inode.links_count.saturating_sub(1);
        inode.ctime = self.now();
        self.write_inode(ino, &inode)?;
        if inode.links_count == 0 {
            self.drop_link_target(ino)?;
        }
        Ok(())
    }

    /// `rmdir(2)`.
    pub fn rmdir(&mut self, dir: u32, name: &[u8]) -> Result<()> {
        check_name(name)?;
        self.writable()?;
        if name == b"." {
            return Err(Errno::EINVAL);
        }
        if name == b".." {
            return Err(Errno::ENOTEMPTY);
        }
        let ino = self.lookup(dir, name)?;
        let mut inode = self.read_live(ino)?;
        if !inode.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if ino == ROOT_INO {
            return Err(Errno::EBUSY);
        }
        if !self.dir_is_empty(ino, &inode)? {
            return Err(Errno::ENOTEMPTY);
        }
        self.remove_entry(dir, name)?;
        inode.links_count = 0;
        inode.ctime = self.now();
        self.write_inode(ino, &inode)?;
        let mut parent = self.read_live(dir)?;
        parent.links_count = parent.links_count.saturating_sub(1).max(1);
        self.write_inode(dir, &parent)?;
        self.drop_link_target(ino)
    }

    /// Whether `dir` is `anc` or lies below it, following `..` (bounded: a `..` cycle is
    /// corruption).
    fn is_within(&mut self, mut dir: u32, anc: u32) -> Result<bool> {
        for _ in 0..=self.sb.inodes_count {
            if dir == anc {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            let inode = self.read_referenced(dir, dir)?;
            if !inode.is_dir() {
                return Err(self.corrupt(format!("'..' chain reaches non-directory {dir}")));
            }
            let up = match self.find_entry(dir, &inode, b"..")? {
                Some(f) => f.ino,
                None => return Err(self.corrupt(format!("directory inode {dir} has no '..'"))),
            };
            dir = up;
        }
        Err(self.corrupt(format!("directory loop above inode {dir}")))
    }

    /// `rename(2)` with POSIX semantics: an existing target is replaced (a directory only by an
    /// empty directory); a directory cannot move into its own subtree (`EINVAL`); renaming a name
    /// onto another name of the same inode does nothing.
    pub fn rename(&mut self, odir: u32, oname: &[u8], ndir: u32, nname: &[u8]) -> Result<()> {
        check_name(oname)?;
        check_name(nname)?;
        self.writable()?;
        if is_dot(oname) || is_dot(nname) {
            return Err(Errno::EBUSY);
        }
        let nd = self.live_dir(ndir)?;
        self.live_dir(odir)?;
        let src = self.lookup(odir, oname)?;
        let s = self.read_live(src)?;
        let tgt = self.find_entry(ndir, &nd, nname)?.map(|f| f.ino);
        if tgt == Some(src) {
            return Ok(());
        }
        let src_dir = s.is_dir();
        if src_dir && odir != ndir && self.is_within(ndir, src)? {
            return Err(Errno::EINVAL);
        }
        let target = match tgt {
            Some(t) => {
                let ti = self.read_referenced(ndir, t)?;
                if src_dir && !ti.is_dir() {
                    return Err(Errno::ENOTDIR);
                }
                if !src_dir && ti.is_dir() {
                    return Err(Errno::EISDIR);
                }
                if ti.is_dir() && !self.dir_is_empty(t, &ti)? {
                    return Err(Errno::ENOTEMPTY);
                }
                Some((t, ti.is_dir()))
            }
            None => {
                if src_dir && odir != ndir && nd.links_count >= LINK_MAX {
                    return Err(Errno::EMLINK);
                }
                None
            }
        };
        // The only step that may allocate comes first: if it fails, nothing has changed.
        match target {
            None => self.add_entry(ndir, nname, src, s.mode)?,
            Some(_) => self.set_entry(ndir, nname, src, s.mode)?,
        }
        self.remove_entry(odir, oname)?;
        let now = self.now();
        let mut s = self.read_live(src)?;
        s.ctime = now;
        self.write_inode(src, &s)?;
        if src_dir && odir != ndir {
            self.set_entry(src, b"..", ndir, S_IFDIR)?;
            let mut o = self.read_live(odir)?;
            o.links_count = o.links_count.saturating_sub(1).max(1);
            self.write_inode(odir, &o)?;
            let mut n = self.read_live(ndir)?;
            n.links_count = n.links_count.saturating_add(1);
            self.write_inode(ndir, &n)?;
        }
        if let Some((t, t_dir)) = target {
            let mut ti = self.read_live(t)?;
            ti.links_count = if t_dir {
                0
            } else {
                ti.links_count.saturating_sub(1)
            };
            ti.ctime = now;
            self.write_inode(t, &ti)?;
            if t_dir {
                let mut n = self.read_live(ndir)?;
                n.links_count = n.links_count.saturating_sub(1).max(1);
                self.write_inode(ndir, &n)?;
            }
            if ti.links_count == 0 {
                self.drop_link_target(t)?;
            }
        }
        Ok(())
    }

    /// The inode's generation (`i_generation`, new for every inode the filesystem allocates),
    /// and its size: what a cache kept past a file's last close compares before it is used
    /// again, since a freed inode number may name another file by then.
    pub fn generation(&mut self, ino: u32) -> Result<(u32, u64)> {
        let inode = self.read_live(ino)?;
        Ok((inode.generation, inode.size))
    }

    /// `stat(2)`.
    pub fn stat(&mut self, ino: u32) -> Result<Stat> {
        let inode = self.read_live(ino)?;
        let rdev = match inode.file_type() {
            S_IFCHR | S_IFBLK => decode_rdev(&inode),
            _ => 0,
        };
        Ok(Stat {
            ino,
            mode: inode.mode,
            nlink: inode.links_count,
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            blocks: inode.blocks as u64,
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            blksize: self.bs,
            rdev,
        })
    }

    /// `chmod(2)`: the permission bits (07777) change, the file type stays.
    pub fn chmod(&mut self, ino: u32, mode: u16) -> Result<()> {
        self.writable()?;
        let mut inode = self.read_live(ino)?;
        inode.mode = (inode.mode & S_IFMT) | (mode & 0o7777);
        inode.ctime = self.now();
        self.write_inode(ino, &inode)
    }

    /// `chown(2)`: `None` leaves an id as it is.
    pub fn chown(&mut self, ino: u32, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        self.writable()?;
        let mut inode = self.read_live(ino)?;
        if let Some(u) = uid {
            inode.uid = u;
        }
        if let Some(g) = gid {
            inode.gid = g;
        }
        inode.ctime = self.now();
        self.write_inode(ino, &inode)
    }

    /// `utimensat(2)`: `None` leaves a time as it is; ctime becomes now.
    pub fn set_times(&mut self, ino: u32, atime: Option<u32>, mtime: Option<u32>) -> Result<()> {
        self.writable()?;
        let mut inode = self.read_live(ino)?;
        if let Some(a) = atime {
            inode.atime = a;
        }
        if let Some(m) = mtime {
            inode.mtime = m;
        }
        inode.ctime = self.now();
        self.write_inode(ino, &inode)
    }

    /// The kernel opened `ino`: an unlinked inode stays allocated until the matching `release`.
    pub fn open(&mut self, ino: u32) -> Result<()> {
        self.read_live(ino)?;
        *self.open.entry(ino).or_insert(0) += 1;
        Ok(())
    }

    /// The kernel closed `ino` (the "last close" of an orphan frees it here).
    pub fn release(&mut self, ino: u32) -> Result<()> {
        let Some(n) = self.open.get_mut(&ino) else {
            return Err(Errno::EINVAL);
        };
        *n -= 1;
        if *n == 0 {
            self.open.remove(&ino);
            if self.orphans.contains(&ino) && !self.read_only {
                return self.evict(ino);
            }
        }
        Ok(())
    }
}
