//! The RAM filesystem at `/`: inodes (regular files, directories, symbolic links, character
//! devices) in a table, path resolution as Linux's `namei` does it, and each call's failure as the
//! errno Linux gives. Filled from the initramfs ([`Fs::from_cpio`]); nothing persists across a boot.
//!
//! ```text
//!  Fs { inodes: ino -> Inode }          Inode { mode, nlink, opens, times, kind }
//!   ino 1 = "/" (its ".." is itself)     kind: File(bytes) | Dir { parent, entries: name -> ino }
//!                                              | Symlink(target) | CharDev(rdev)
//! ```
//!
//! - Resolution follows `.`, `..` (never above `/`) and symbolic links, at most [`MAX_SYMLINKS`] per
//!   lookup (then `ELOOP`); a trailing `/` demands a directory.
//! - Permissions are not checked (everything runs as root), but modes are kept and reported.
//! - An inode lives while a name or an open file refers to it: the kernel calls [`Fs::open`] and
//!   [`Fs::release`] around each open file description, so an unlinked file stays readable through
//!   its descriptors, as on Linux.
//! - Directory offsets for `getdents64` are indices into the sorted entry list (`.`, `..`, then names
//!   in byte order); an entry added or removed during a listing can shift the rest by one, a
//!   trade-off Linux's tmpfs avoids with per-directory cursors.
//!
//! Neighbours: the kernel's file service holds one [`Fs`] under a lock and maps file descriptors to
//! inode numbers; `cpio` reads the archive.

use alloc::{
    collections::BTreeMap,
    string::{String, ToString},
    vec::Vec,
};

use crate::{cpio, linux::errno};

/// An inode number.
pub type Ino = u64;
/// A Linux errno value (positive).
pub type Errno = u32;

/// The root directory's inode number.
pub const ROOT: Ino = 1;
/// Symbolic links followed in one lookup before `ELOOP` (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;
/// Longest name of one directory entry (`NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Longest path accepted (`PATH_MAX`, counting the NUL).
pub const PATH_MAX: usize = 4096;
/// The device number `stat` reports for this filesystem.
pub const DEV: u64 = 1;

pub use linux_raw_sys::general::{S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};

/// What an inode is.
#[derive(Clone, Debug)]
pub enum Kind {
    File(Vec<u8>),
    Dir { parent: Ino, entries: BTreeMap<String, Ino> },
    Symlink(String),
    /// A character device; the kernel maps its number to a driver.
    CharDev(u64),
}

#[derive(Clone, Debug)]
pub struct Inode {
    /// Permission bits only (the type is in `kind`).
    perm: u32,
    nlink: u64,
    opens: u64,
    mtime_ns: u64,
    ctime_ns: u64,
    kind: Kind,
}

/// The fields of `struct stat` this filesystem knows; [`Stat::to_bytes`] lays them out as Linux's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: i64,
    pub blksize: i64,
    pub blocks: i64,
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
}

/// Size of Linux's x86-64 `struct stat`.
pub const STAT_SIZE: usize = 144;

impl Stat {
    /// The bytes of Linux's x86-64 `struct stat` (`arch/x86/include/uapi/asm/stat.h`).
    pub fn to_bytes(&self) -> [u8; STAT_SIZE] {
        let mut b = [0u8; STAT_SIZE];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        let s = |ns: u64| (ns / 1_000_000_000).to_le_bytes();
        let n = |ns: u64| (ns % 1_000_000_000).to_le_bytes();
        put(0, &self.dev.to_le_bytes());
        put(8, &self.ino.to_le_bytes());
        put(16, &self.nlink.to_le_bytes());
        put(24, &self.mode.to_le_bytes());
        put(28, &self.uid.to_le_bytes());
        put(32, &self.gid.to_le_bytes());
        put(40, &self.rdev.to_le_bytes());
        put(48, &self.size.to_le_bytes());
        put(56, &self.blksize.to_le_bytes());
        put(64, &self.blocks.to_le_bytes());
        put(72, &s(self.atime_ns));
        put(80, &n(self.atime_ns));
        put(88, &s(self.mtime_ns));
        put(96, &n(self.mtime_ns));
        put(104, &s(self.ctime_ns));
        put(112, &n(self.ctime_ns));
        b
    }
}

/// One directory entry as `getdents64` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub name: String,
    /// `DT_*` type.
    pub d_type: u8,
}

pub const DT_CHR: u8 = 2;
pub const DT_DIR: u8 = 4;
pub const DT_REG: u8 = 8;
pub const DT_LNK: u8 = 10;

/// Encode `entries[start..]` as `linux_dirent64` records into at most `buf_len` bytes. Returns the
/// bytes and the index to continue from (the `d_off` of the last record). `EINVAL` when not even
/// the first record fits, as Linux says for a too-small buffer; an empty result means the end.
pub fn encode_dirents(entries: &[DirEntry], start: usize, buf_len: usize) -> Result<(Vec<u8>, usize), Errno> {
    let mut out = Vec::new();
    let mut i = start;
    while let Some(e) = entries.get(i) {
        // d_ino u64, d_off i64, d_reclen u16, d_type u8, name, NUL, padded to 8.
        let reclen = (19 + e.name.len() + 1).next_multiple_of(8);
        if out.len() + reclen > buf_len {
            if out.is_empty() {
                return Err(errno::EINVAL);
            }
            break;
        }
        let at = out.len();
        out.resize(at + reclen, 0);
        out[at..at + 8].copy_from_slice(&e.ino.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&((i + 1) as i64).to_le_bytes());
        out[at + 16..at + 18].copy_from_slice(&(reclen as u16).to_le_bytes());
        out[at + 18] = e.d_type;
        out[at + 19..at + 19 + e.name.len()].copy_from_slice(e.name.as_bytes());
        i += 1;
    }
    Ok((out, i))
}

/// The filesystem.
#[derive(Clone, Debug)]
pub struct Fs {
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    now_ns: u64,
}

impl Default for Fs {
    fn default() -> Self {
        Self::new()
    }
}

/// Split a path into its last component and what precedes it: `"a/b/"` gives `("a", "b", true)`.
fn split_last(path: &str) -> (&str, &str, bool) {
    let trailing = path.len() > 1 && path.ends_with('/');
    let p = path.trim_end_matches('/');
    if p.is_empty() {
        // "/" or "///": the root itself, no last name.
        return ("/", ".", trailing);
    }
    match p.rfind('/') {
        Some(i) => (if i == 0 { "/" } else { &p[..i] }, &p[i + 1..], trailing),
        None => ("", p, trailing),
    }
}

impl Fs {
    /// An empty filesystem: only `/`.
    pub fn new() -> Self {
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT, Inode { perm: 0o755, nlink: 2, opens: 0, mtime_ns: 0, ctime_ns: 0, kind: Kind::Dir { parent: ROOT, entries: BTreeMap::new() } });
        Self { inodes, next_ino: ROOT + 1, now_ns: 0 }
    }

    /// The time stamped on changes from now on (the kernel sets it from its clock).
    pub fn set_now(&mut self, ns: u64) {
        self.now_ns = ns;
    }

    /// Number of live inodes (a leak check for tests).
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// A filesystem holding the initramfs: directories are created as their members' paths need
    /// them, and a later member of the same path replaces an earlier one.
    pub fn from_cpio(archive: &[u8]) -> Result<Self, cpio::CpioError> {
        Self::from_cpio_at(archive, 0)
    }

    /// [`Fs::from_cpio`] with every inode stamped `now_ns` (the boot's wall clock), as Linux's
    /// initramfs unpacking does when the archive's times are not kept.
    pub fn from_cpio_at(archive: &[u8], now_ns: u64) -> Result<Self, cpio::CpioError> {
        let mut fs = Self::new();
        fs.now_ns = now_ns;
        for ino in fs.inodes.values_mut() {
            ino.mtime_ns = now_ns;
            ino.ctime_ns = now_ns;
        }
        for e in cpio::entries(archive) {
            let e = e?;
            if e.path.is_empty() {
                continue;
            }
            let (dir, _, _) = split_last(e.path);
            if !dir.is_empty() && fs.mkdir_p(ROOT, dir).is_err() {
                continue;
            }
            let perm = e.mode & 0o7777;
            let _ = fs.remove_any(ROOT, e.path);
            let _ = if e.is_dir() {
                fs.mkdir(ROOT, e.path, perm)
            } else if e.is_symlink() {
                fs.symlink(core::str::from_utf8(e.data).unwrap_or(""), ROOT, e.path)
            } else if e.is_file() {
                fs.create(ROOT, e.path, perm, true).and_then(|ino| fs.write_at(ino, 0, e.data).map(|_| ino))
            } else {
                Ok(0)
            };
        }
        Ok(fs)
    }

    fn node(&self, ino: Ino) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(errno::ENOENT)
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(errno::ENOENT)
    }

    fn dir_entries(&self, ino: Ino) -> Result<&BTreeMap<String, Ino>, Errno> {
        match &self.node(ino)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(errno::ENOTDIR),
        }
    }

    pub fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.inodes.get(&ino).map(|n| &n.kind), Some(Kind::Dir { .. }))
    }

    /// The inode `path` names, relative to directory `cwd` unless absolute. With `follow` false a
    /// symbolic link in the last place is returned itself (`lstat`, `O_NOFOLLOW`, `readlink`).
    pub fn lookup(&self, cwd: Ino, path: &str, follow: bool) -> Result<Ino, Errno> {
        if path.is_empty() {
            return Err(errno::ENOENT);
        }
        if path.len() >= PATH_MAX {
            return Err(errno::ENAMETOOLONG);
        }
        let mut links = 0;
        self.walk(cwd, path, follow, &mut links)
    }

    fn walk(&self, cwd: Ino, path: &str, follow: bool, links: &mut usize) -> Result<Ino, Errno> {
        let mut cur = if path.starts_with('/') { ROOT } else { cwd };
        if !self.is_dir(cur) {
            return Err(errno::ENOTDIR);
        }
        let trailing = path.ends_with('/');
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            if c.len() > NAME_MAX {
                return Err(errno::ENAMETOOLONG);
            }
            let next = match (&self.node(cur)?.kind, *c) {
                (Kind::Dir { .. }, ".") => cur,
                (Kind::Dir { parent, .. }, "..") => *parent,
                (Kind::Dir { entries, .. }, name) => *entries.get(name).ok_or(errno::ENOENT)?,
                _ => return Err(errno::ENOTDIR),
            };
            let next = match &self.node(next)?.kind {
                Kind::Symlink(target) if !last || follow || trailing => {
                    *links += 1;
                    if *links > MAX_SYMLINKS {
                        return Err(errno::ELOOP);
                    }
                    if target.is_empty() {
                        return Err(errno::ENOENT);
                    }
                    self.walk(cur, target, true, links)?
                }
                _ => next,
            };
            cur = next;
        }
        if trailing && !self.is_dir(cur) {
            return Err(errno::ENOTDIR);
        }
        Ok(cur)
    }

    /// The directory that will hold `path`'s last name, and that name. The name is `.` or `..`
    /// when the path ends so; callers refuse those as Linux does.
    fn parent_of<'p>(&self, cwd: Ino, path: &'p str) -> Result<(Ino, &'p str, bool), Errno> {
        if path.is_empty() {
            return Err(errno::ENOENT);
        }
        let (dir, name, trailing) = split_last(path);
        if name.len() > NAME_MAX {
            return Err(errno::ENAMETOOLONG);
        }
        let dir_ino = if dir.is_empty() { cwd } else { self.lookup(cwd, dir, true)? };
        if !self.is_dir(dir_ino) {
            return Err(errno::ENOTDIR);
        }
        Ok((dir_ino, name, trailing))
    }

    fn alloc(&mut self, perm: u32, kind: Kind) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if matches!(kind, Kind::Dir { .. }) { 2 } else { 1 };
        self.inodes.insert(ino, Inode { perm: perm & 0o7777, nlink, opens: 0, mtime_ns: self.now_ns, ctime_ns: self.now_ns, kind });
        ino
    }

    fn link_into(&mut self, dir: Ino, name: &str, ino: Ino) -> Result<(), Errno> {
        let now = self.now_ns;
        let d = self.node_mut(dir)?;
        d.mtime_ns = now;
        d.ctime_ns = now;
        match &mut d.kind {
            Kind::Dir { entries, .. } => {
                entries.insert(name.to_string(), ino);
                Ok(())
            }
            _ => Err(errno::ENOTDIR),
        }
    }

    fn new_entry(&mut self, cwd: Ino, path: &str, perm: u32, kind: Kind) -> Result<Ino, Errno> {
        let (dir, name, trailing) = self.parent_of(cwd, path)?;
        if name == "." || name == ".." {
            return Err(errno::EEXIST);
        }
        if self.dir_entries(dir)?.contains_key(name) {
            return Err(errno::EEXIST);
        }
        let is_dir = matches!(kind, Kind::Dir { .. });
        if trailing && !is_dir {
            return Err(errno::ENOENT);
        }
        let kind = match kind {
            Kind::Dir { entries, .. } => Kind::Dir { parent: dir, entries },
            k => k,
        };
        let ino = self.alloc(perm, kind);
        self.link_into(dir, name, ino)?;
        if is_dir {
            self.node_mut(dir)?.nlink += 1;
        }
        Ok(ino)
    }

    /// `open(O_CREAT)`: the existing file (following links), or a new empty regular file. With
    /// `excl` (`O_EXCL`), an existing name is `EEXIST`.
    pub fn create(&mut self, cwd: Ino, path: &str, perm: u32, excl: bool) -> Result<Ino, Errno> {
        match self.lookup(cwd, path, !excl) {
            Ok(_) if excl => Err(errno::EEXIST),
            Ok(ino) => {
                if self.is_dir(ino) {
                    Err(errno::EISDIR)
                } else {
                    Ok(ino)
                }
            }
            Err(errno::ENOENT) => {
                let (_, _, trailing) = split_last(path);
                if trailing {
                    return Err(errno::EISDIR);
                }
                self.new_entry(cwd, path, perm, Kind::File(Vec::new()))
            }
            Err(e) => Err(e),
        }
    }

    /// `mkdir`.
    pub fn mkdir(&mut self, cwd: Ino, path: &str, perm: u32) -> Result<Ino, Errno> {
        self.new_entry(cwd, path, perm, Kind::Dir { parent: 0, entries: BTreeMap::new() })
    }

    /// `mkdir -p`: every missing directory along `path`.
    pub fn mkdir_p(&mut self, cwd: Ino, path: &str) -> Result<Ino, Errno> {
        let mut cur = if path.starts_with('/') { ROOT } else { cwd };
        for c in path.split('/').filter(|c| !c.is_empty()) {
            cur = match self.lookup(cur, c, true) {
                Ok(ino) if self.is_dir(ino) => ino,
                Ok(_) => return Err(errno::ENOTDIR),
                Err(errno::ENOENT) => self.mkdir(cur, c, 0o755)?,
                Err(e) => return Err(e),
            };
        }
        Ok(cur)
    }

    /// `symlink(target, path)`.
    pub fn symlink(&mut self, target: &str, cwd: Ino, path: &str) -> Result<Ino, Errno> {
        if target.is_empty() {
            return Err(errno::ENOENT);
        }
        self.new_entry(cwd, path, 0o777, Kind::Symlink(target.to_string()))
    }

    /// `mknod` of a character device with device number `rdev`.
    pub fn mknod_char(&mut self, cwd: Ino, path: &str, perm: u32, rdev: u64) -> Result<Ino, Errno> {
        self.new_entry(cwd, path, perm, Kind::CharDev(rdev))
    }

    /// `link(old, new)`: a second name for a non-directory.
    pub fn link(&mut self, cwd: Ino, old: &str, new: &str) -> Result<(), Errno> {
        self.link_at(cwd, old, cwd, new)
    }

    /// `linkat(old_cwd, old, new_cwd, new)`: as [`Fs::link`], each path from its own directory.
    pub fn link_at(&mut self, old_cwd: Ino, old: &str, new_cwd: Ino, new: &str) -> Result<(), Errno> {
        let ino = self.lookup(old_cwd, old, false)?;
        if self.is_dir(ino) {
            return Err(errno::EPERM);
        }
        let (dir, name, trailing) = self.parent_of(new_cwd, new)?;
        if trailing || name == "." || name == ".." || self.dir_entries(dir)?.contains_key(name) {
            return Err(errno::EEXIST);
        }
        self.link_into(dir, name, ino)?;
        let now = self.now_ns;
        let n = self.node_mut(ino)?;
        n.nlink += 1;
        n.ctime_ns = now;
        Ok(())
    }

    fn drop_link(&mut self, ino: Ino) {
        if let Some(n) = self.inodes.get_mut(&ino) {
            n.nlink = if matches!(n.kind, Kind::Dir { .. }) { 0 } else { n.nlink.saturating_sub(1) };
            n.ctime_ns = self.now_ns;
            if n.nlink == 0 && n.opens == 0 {
                self.inodes.remove(&ino);
            }
        }
    }

    fn unlink_from(&mut self, dir: Ino, name: &str) -> Result<Ino, Errno> {
        let now = self.now_ns;
        let d = self.node_mut(dir)?;
        d.mtime_ns = now;
        d.ctime_ns = now;
        match &mut d.kind {
            Kind::Dir { entries, .. } => entries.remove(name).ok_or(errno::ENOENT),
            _ => Err(errno::ENOTDIR),
        }
    }

    /// `unlink`: a name of anything but a directory (`EISDIR`, as Linux says).
    pub fn unlink(&mut self, cwd: Ino, path: &str) -> Result<(), Errno> {
        let (dir, name, trailing) = self.parent_of(cwd, path)?;
        let ino = match name {
            "." | ".." => return Err(errno::EISDIR),
            n => *self.dir_entries(dir)?.get(n).ok_or(errno::ENOENT)?,
        };
        if self.is_dir(ino) {
            return Err(errno::EISDIR);
        }
        if trailing {
            return Err(errno::ENOTDIR);
        }
        self.unlink_from(dir, name)?;
        self.drop_link(ino);
        Ok(())
    }

    /// `rmdir`: an empty directory other than `/` and other than through `.` (`EINVAL`) or `..`
    /// (`ENOTEMPTY`).
    pub fn rmdir(&mut self, cwd: Ino, path: &str) -> Result<(), Errno> {
        let (dir, name, _) = self.parent_of(cwd, path)?;
        let ino = match name {
            "." => return Err(if path.trim_end_matches('/').is_empty() { errno::EBUSY } else { errno::EINVAL }),
            ".." => return Err(errno::ENOTEMPTY),
            n => *self.dir_entries(dir)?.get(n).ok_or(errno::ENOENT)?,
        };
        if !self.dir_entries(ino)?.is_empty() {
            return Err(errno::ENOTEMPTY);
        }
        self.unlink_from(dir, name)?;
        self.node_mut(dir)?.nlink -= 1;
        self.drop_link(ino);
        Ok(())
    }

    /// Remove whatever `path` names (used when the initramfs repeats a path).
    fn remove_any(&mut self, cwd: Ino, path: &str) -> Result<(), Errno> {
        let ino = self.lookup(cwd, path, false)?;
        if self.is_dir(ino) { self.rmdir(cwd, path) } else { self.unlink(cwd, path) }
    }

    /// Whether `ino` is `anc` or lies below it.
    fn is_within(&self, mut ino: Ino, anc: Ino) -> bool {
        loop {
            if ino == anc {
                return true;
            }
            match self.inodes.get(&ino).map(|n| &n.kind) {
                Some(Kind::Dir { parent, .. }) if *parent != ino => ino = *parent,
                _ => return false,
            }
        }
    }

    /// `rename(old, new)`, with Linux's rules: a directory replaces only an empty directory
    /// (`ENOTEMPTY`, `ENOTDIR`), a non-directory never replaces a directory (`EISDIR`), a directory
    /// cannot move below itself (`EINVAL`), `.` and `..` cannot be renamed (`EBUSY`), and renaming
    /// onto another name of the same inode does nothing.
    pub fn rename(&mut self, old_cwd: Ino, old: &str, new_cwd: Ino, new: &str) -> Result<(), Errno> {
        let (odir, oname, otrail) = self.parent_of(old_cwd, old)?;
        let (ndir, nname, ntrail) = self.parent_of(new_cwd, new)?;
        if matches!(oname, "." | "..") || matches!(nname, "." | "..") {
            return Err(errno::EBUSY);
        }
        let src = *self.dir_entries(odir)?.get(oname).ok_or(errno::ENOENT)?;
        let src_dir = self.is_dir(src);
        if (otrail || ntrail) && !src_dir {
            return Err(errno::ENOTDIR);
        }
        let dst = self.dir_entries(ndir)?.get(nname).copied();
        if dst == Some(src) {
            return Ok(());
        }
        if src_dir && self.is_within(ndir, src) {
            return Err(errno::EINVAL);
        }
        if let Some(dst) = dst {
            match (src_dir, self.is_dir(dst)) {
                (true, false) => return Err(errno::ENOTDIR),
                (false, true) => return Err(errno::EISDIR),
                (true, true) if !self.dir_entries(dst)?.is_empty() => return Err(errno::ENOTEMPTY),
                _ => {}
            }
            self.unlink_from(ndir, nname)?;
            if src_dir {
                self.node_mut(ndir)?.nlink -= 1;
            }
            self.drop_link(dst);
        }
        self.unlink_from(odir, oname)?;
        self.link_into(ndir, nname, src)?;
        if src_dir {
            self.node_mut(odir)?.nlink -= 1;
            self.node_mut(ndir)?.nlink += 1;
            if let Kind::Dir { parent, .. } = &mut self.node_mut(src)?.kind {
                *parent = ndir;
            }
        }
        self.node_mut(src)?.ctime_ns = self.now_ns;
        Ok(())
    }

    /// An open file description now refers to `ino`.
    pub fn open(&mut self, ino: Ino) -> Result<(), Errno> {
        self.node_mut(ino)?.opens += 1;
        Ok(())
    }

    /// An open file description of `ino` closed; an unlinked inode goes with its last one.
    pub fn release(&mut self, ino: Ino) {
        if let Some(n) = self.inodes.get_mut(&ino) {
            n.opens = n.opens.saturating_sub(1);
            if n.nlink == 0 && n.opens == 0 {
                self.inodes.remove(&ino);
            }
        }
    }

    /// `pread`: bytes at `offset` into `out`; 0 at or past the end.
    pub fn read_at(&self, ino: Ino, offset: u64, out: &mut [u8]) -> Result<usize, Errno> {
        match &self.node(ino)?.kind {
            Kind::File(data) => {
                let Ok(off) = usize::try_from(offset) else { return Ok(0) };
                let src = data.get(off..).unwrap_or(&[]);
                let n = src.len().min(out.len());
                out[..n].copy_from_slice(&src[..n]);
                Ok(n)
            }
            Kind::Dir { .. } => Err(errno::EISDIR),
            _ => Err(errno::EINVAL),
        }
    }

    /// `pwrite`: `data` at `offset`, growing the file (a hole reads as zeros).
    pub fn write_at(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        let now = self.now_ns;
        let n = self.node_mut(ino)?;
        match &mut n.kind {
            Kind::File(bytes) => {
                let off = usize::try_from(offset).map_err(|_| errno::EFBIG)?;
                let end = off.checked_add(data.len()).ok_or(errno::EFBIG)?;
                if end > bytes.len() {
                    bytes.try_reserve(end - bytes.len()).map_err(|_| errno::ENOSPC)?;
                    bytes.resize(end, 0);
                }
                bytes[off..end].copy_from_slice(data);
                n.mtime_ns = now;
                n.ctime_ns = now;
                Ok(data.len())
            }
            Kind::Dir { .. } => Err(errno::EISDIR),
            _ => Err(errno::EINVAL),
        }
    }

    /// `truncate` to `len` bytes (growing fills with zeros).
    pub fn truncate(&mut self, ino: Ino, len: u64) -> Result<(), Errno> {
        let now = self.now_ns;
        let n = self.node_mut(ino)?;
        match &mut n.kind {
            Kind::File(bytes) => {
                let len = usize::try_from(len).map_err(|_| errno::EFBIG)?;
                if len > bytes.len() {
                    bytes.try_reserve(len - bytes.len()).map_err(|_| errno::ENOSPC)?;
                }
                bytes.resize(len, 0);
                n.mtime_ns = now;
                n.ctime_ns = now;
                Ok(())
            }
            Kind::Dir { .. } => Err(errno::EISDIR),
            _ => Err(errno::EINVAL),
        }
    }

    /// The bytes of a regular file (for `execve`).
    pub fn contents(&self, ino: Ino) -> Result<&[u8], Errno> {
        match &self.node(ino)?.kind {
            Kind::File(b) => Ok(b),
            Kind::Dir { .. } => Err(errno::EISDIR),
            _ => Err(errno::EACCES),
        }
    }

    /// `readlink`: the target of a symbolic link (`EINVAL` for anything else).
    pub fn readlink(&self, ino: Ino) -> Result<&str, Errno> {
        match &self.node(ino)?.kind {
            Kind::Symlink(t) => Ok(t),
            _ => Err(errno::EINVAL),
        }
    }

    /// The device number of a character device, if `ino` is one.
    pub fn char_dev(&self, ino: Ino) -> Option<u64> {
        match self.inodes.get(&ino)?.kind {
            Kind::CharDev(rdev) => Some(rdev),
            _ => None,
        }
    }

    /// `stat`.
    pub fn stat(&self, ino: Ino) -> Result<Stat, Errno> {
        let n = self.node(ino)?;
        let (ty, size, rdev) = match &n.kind {
            Kind::File(b) => (S_IFREG, b.len() as i64, 0),
            Kind::Dir { entries, .. } => (S_IFDIR, (entries.len() as i64 + 2) * 32, 0),
            Kind::Symlink(t) => (S_IFLNK, t.len() as i64, 0),
            Kind::CharDev(r) => (S_IFCHR, 0, *r),
        };
        Ok(Stat {
            dev: DEV,
            ino,
            nlink: n.nlink,
            mode: ty | n.perm,
            uid: 0,
            gid: 0,
            rdev,
            size,
            blksize: 4096,
            blocks: if ty == S_IFREG { (size + 511) / 512 } else { 0 },
            atime_ns: n.mtime_ns,
            mtime_ns: n.mtime_ns,
            ctime_ns: n.ctime_ns,
        })
    }

    /// `chmod`: new permission bits.
    pub fn chmod(&mut self, ino: Ino, perm: u32) -> Result<(), Errno> {
        let now = self.now_ns;
        let n = self.node_mut(ino)?;
        n.perm = perm & 0o7777;
        n.ctime_ns = now;
        Ok(())
    }

    /// The entries of directory `ino` for `getdents64`: `.`, `..`, then names in byte order.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, Errno> {
        let Kind::Dir { parent, entries } = &self.node(ino)?.kind else { return Err(errno::ENOTDIR) };
        let mut out = Vec::with_capacity(entries.len() + 2);
        out.push(DirEntry { ino, name: ".".to_string(), d_type: DT_DIR });
        out.push(DirEntry { ino: *parent, name: "..".to_string(), d_type: DT_DIR });
        for (name, &child) in entries {
            let d_type = match self.inodes.get(&child).map(|n| &n.kind) {
                Some(Kind::File(_)) => DT_REG,
                Some(Kind::Dir { .. }) => DT_DIR,
                Some(Kind::Symlink(_)) => DT_LNK,
                Some(Kind::CharDev(_)) => DT_CHR,
                None => 0,
            };
            out.push(DirEntry { ino: child, name: name.clone(), d_type });
        }
        Ok(out)
    }

    /// The absolute path of directory `ino` (`getcwd`); `ENOENT` once it was removed.
    pub fn path_of(&self, ino: Ino) -> Result<String, Errno> {
        let mut names = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let Kind::Dir { parent, .. } = &self.node(cur)?.kind else { return Err(errno::ENOTDIR) };
            let name = self.dir_entries(*parent)?.iter().find(|(_, c)| **c == cur).map(|(n, _)| n.as_str()).ok_or(errno::ENOENT)?;
            names.push(name);
            cur = *parent;
        }
        if names.is_empty() {
            return Ok("/".to_string());
        }
        let mut s = String::new();
        for n in names.iter().rev() {
            s.push('/');
            s.push_str(n);
        }
        Ok(s)
    }
}

/// A device number as `stat`'s `st_rdev` carries it (Linux's `new_encode_dev`).
pub const fn makedev(major: u32, minor: u32) -> u64 {
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u64
}

/// The character devices of `/dev`, with Linux's numbers (`Documentation/admin-guide/devices.txt`).
pub const DEVICES: [(&str, u64); 6] = [
    ("null", makedev(1, 3)),
    ("zero", makedev(1, 5)),
    ("random", makedev(1, 8)),
    ("urandom", makedev(1, 9)),
    ("tty", makedev(5, 0)),
    ("console", makedev(5, 1)),
];

impl Fs {
    /// Create `/dev` with [`DEVICES`] (an entry already there is left alone) and the mount points
    /// `/proc` and `/tmp`.
    pub fn populate_dev(&mut self) -> Result<(), Errno> {
        let dev = self.mkdir_p(ROOT, "/dev")?;
        for (name, rdev) in DEVICES {
            match self.mknod_char(dev, name, 0o666, rdev) {
                Ok(_) | Err(errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        self.mkdir_p(ROOT, "/proc")?;
        let tmp = self.mkdir_p(ROOT, "/tmp")?;
        self.chmod(tmp, 0o1777)
    }
}

#[cfg(test)]
mod tests {
    use alloc::{format, vec};

    use proptest::prelude::*;

    use super::*;

    fn fs() -> Fs {
        let mut f = Fs::new();
        f.mkdir_p(ROOT, "/a/b/c").unwrap();
        let ino = f.create(ROOT, "/a/file", 0o644, true).unwrap();
        f.write_at(ino, 0, b"hello").unwrap();
        f.symlink("/a/b", ROOT, "/a/lnk").unwrap();
        f.symlink("../file", ROOT, "/a/b/up").unwrap();
        f
    }

    #[test]
    fn resolves_dots_and_links() {
        let f = fs();
        let b = f.lookup(ROOT, "/a/b", true).unwrap();
        assert_eq!(f.lookup(ROOT, "/a/./b/../b/c/..", true), Ok(b));
        assert_eq!(f.lookup(ROOT, "/../../a/b", true), Ok(b), "no way above /");
        assert_eq!(f.lookup(ROOT, "/a/lnk", true), Ok(b));
        assert_ne!(f.lookup(ROOT, "/a/lnk", false), Ok(b), "lstat sees the link");
        assert_eq!(f.lookup(ROOT, "/a/lnk/c", false), f.lookup(ROOT, "/a/b/c", true), "links in the middle are always followed");
        let file = f.lookup(ROOT, "/a/file", true).unwrap();
        assert_eq!(f.lookup(b, "up", true), Ok(file), "a relative target resolves from the link's directory");
        assert_eq!(f.lookup(b, "c/../../file", true), Ok(file));
        assert_eq!(f.lookup(ROOT, "/a/file/x", true), Err(errno::ENOTDIR));
        assert_eq!(f.lookup(ROOT, "/a/file/", true), Err(errno::ENOTDIR));
        assert_eq!(f.lookup(ROOT, "/a/lnk/", false), Ok(b), "a trailing slash follows the link");
        assert_eq!(f.lookup(ROOT, "/nope", true), Err(errno::ENOENT));
        assert_eq!(f.lookup(ROOT, "", true), Err(errno::ENOENT));
        assert_eq!(f.lookup(ROOT, &format!("/{}", "x".repeat(256)), true), Err(errno::ENAMETOOLONG));
    }

    #[test]
    fn symlink_loops_end_in_eloop() {
        let mut f = Fs::new();
        f.symlink("b", ROOT, "a").unwrap();
        f.symlink("a", ROOT, "b").unwrap();
        assert_eq!(f.lookup(ROOT, "/a", true), Err(errno::ELOOP));
        assert!(f.lookup(ROOT, "/a", false).is_ok());
        // A chain of exactly 40 links resolves; 41 does not.
        f.create(ROOT, "/t", 0o644, true).unwrap();
        f.symlink("/t", ROOT, "/l0").unwrap();
        for i in 1..41 {
            f.symlink(&format!("/l{}", i - 1), ROOT, &format!("/l{i}")).unwrap();
        }
        assert!(f.lookup(ROOT, "/l39", true).is_ok());
        assert_eq!(f.lookup(ROOT, "/l40", true), Err(errno::ELOOP));
    }

    #[test]
    fn create_mkdir_and_their_errors() {
        let mut f = fs();
        assert_eq!(f.mkdir(ROOT, "/a", 0o755), Err(errno::EEXIST));
        assert_eq!(f.mkdir(ROOT, "/x/y", 0o755), Err(errno::ENOENT));
        assert_eq!(f.mkdir(ROOT, "/a/file/y", 0o755), Err(errno::ENOTDIR));
        assert!(f.mkdir(ROOT, "/d/", 0o700).is_ok(), "mkdir accepts a trailing slash");
        assert_eq!(f.create(ROOT, "/a/file", 0o644, true), Err(errno::EEXIST));
        assert_eq!(f.create(ROOT, "/a/file", 0o644, false), f.lookup(ROOT, "/a/file", true));
        assert_eq!(f.create(ROOT, "/a", 0o644, false), Err(errno::EISDIR));
        assert_eq!(f.create(ROOT, "/new/", 0o644, false), Err(errno::EISDIR));
        let st = f.stat(f.lookup(ROOT, "/d", true).unwrap()).unwrap();
        assert_eq!(st.mode, S_IFDIR | 0o700);
        assert_eq!(st.nlink, 2);
        assert_eq!(f.stat(ROOT).unwrap().nlink, 4, "/, /., /a/.., /d/..");
    }

    #[test]
    fn unlink_rmdir_rules() {
        let mut f = fs();
        assert_eq!(f.unlink(ROOT, "/a/b"), Err(errno::EISDIR));
        assert_eq!(f.rmdir(ROOT, "/a/file"), Err(errno::ENOTDIR));
        assert_eq!(f.rmdir(ROOT, "/a/b"), Err(errno::ENOTEMPTY));
        assert_eq!(f.rmdir(ROOT, "/a/b/c/."), Err(errno::EINVAL));
        assert_eq!(f.rmdir(ROOT, "/a/b/c/.."), Err(errno::ENOTEMPTY));
        assert_eq!(f.rmdir(ROOT, "/"), Err(errno::EBUSY));
        let before = f.inode_count();
        f.rmdir(ROOT, "/a/b/c").unwrap();
        f.unlink(ROOT, "/a/b/up").unwrap();
        f.unlink(ROOT, "/a/lnk").unwrap();
        assert_eq!(f.inode_count(), before - 3);
        f.rmdir(ROOT, "/a/b").unwrap();
        assert_eq!(f.lookup(ROOT, "/a/b", true), Err(errno::ENOENT));
        assert_eq!(f.unlink(ROOT, "/a/b"), Err(errno::ENOENT));
    }

    #[test]
    fn unlinked_open_file_lives_until_released() {
        let mut f = fs();
        let ino = f.lookup(ROOT, "/a/file", true).unwrap();
        f.open(ino).unwrap();
        f.unlink(ROOT, "/a/file").unwrap();
        let mut buf = [0u8; 5];
        assert_eq!(f.read_at(ino, 0, &mut buf), Ok(5));
        assert_eq!(f.stat(ino).unwrap().nlink, 0);
        f.release(ino);
        assert_eq!(f.read_at(ino, 0, &mut buf), Err(errno::ENOENT));
    }

    #[test]
    fn rename_rules() {
        let mut f = fs();
        let file = f.lookup(ROOT, "/a/file", true).unwrap();
        f.rename(ROOT, "/a/file", ROOT, "/a/b/moved").unwrap();
        assert_eq!(f.lookup(ROOT, "/a/b/moved", true), Ok(file));
        assert_eq!(f.lookup(ROOT, "/a/file", true), Err(errno::ENOENT));
        // Over an existing file: the old one is gone.
        let other = f.create(ROOT, "/o", 0o644, true).unwrap();
        f.rename(ROOT, "/a/b/moved", ROOT, "/o").unwrap();
        assert_eq!(f.lookup(ROOT, "/o", true), Ok(file));
        assert_eq!(f.stat(other), Err(errno::ENOENT));
        // Directory rules.
        f.mkdir(ROOT, "/e", 0o755).unwrap();
        assert_eq!(f.rename(ROOT, "/o", ROOT, "/e"), Err(errno::EISDIR));
        assert_eq!(f.rename(ROOT, "/e", ROOT, "/o"), Err(errno::ENOTDIR));
        assert_eq!(f.rename(ROOT, "/e", ROOT, "/a"), Err(errno::ENOTEMPTY));
        assert_eq!(f.rename(ROOT, "/a", ROOT, "/a/b/c/inside"), Err(errno::EINVAL));
        assert_eq!(f.rename(ROOT, "/a/.", ROOT, "/z"), Err(errno::EBUSY));
        assert_eq!(f.rename(ROOT, "/missing", ROOT, "/z"), Err(errno::ENOENT));
        let b = f.lookup(ROOT, "/a/b", true).unwrap();
        f.rename(ROOT, "/a/b", ROOT, "/e").unwrap();
        assert_eq!(f.lookup(ROOT, "/e", true), Ok(b));
        assert_eq!(f.lookup(ROOT, "/e/..", true), Ok(ROOT), "the moved directory's .. follows it");
        assert_eq!(f.path_of(f.lookup(ROOT, "/e/c", true).unwrap()).unwrap(), "/e/c");
        // Two names of one inode: nothing happens.
        f.link(ROOT, "/o", "/o2").unwrap();
        let a = f.lookup(ROOT, "/a", true).unwrap();
        f.link_at(ROOT, "o", a, "o3").unwrap();
        assert_eq!(f.lookup(ROOT, "/a/o3", true), Ok(file), "each path from its own directory");
        assert_eq!(f.link_at(ROOT, "/a", ROOT, "/a2"), Err(errno::EPERM), "no links to directories");
        f.unlink(ROOT, "/a/o3").unwrap();
        f.rename(ROOT, "/o", ROOT, "/o2").unwrap();
        assert_eq!(f.lookup(ROOT, "/o", true), Ok(file));
        assert_eq!(f.stat(file).unwrap().nlink, 2);
    }

    #[test]
    fn read_write_truncate() {
        let mut f = Fs::new();
        let ino = f.create(ROOT, "f", 0o600, true).unwrap();
        assert_eq!(f.write_at(ino, 3, b"xy"), Ok(2));
        let mut out = [9u8; 8];
        assert_eq!(f.read_at(ino, 0, &mut out), Ok(5));
        assert_eq!(&out[..5], b"\0\0\0xy");
        assert_eq!(f.read_at(ino, 5, &mut out), Ok(0));
        assert_eq!(f.read_at(ino, u64::MAX, &mut out), Ok(0));
        f.truncate(ino, 1).unwrap();
        assert_eq!(f.stat(ino).unwrap().size, 1);
        f.truncate(ino, 1000).unwrap();
        assert_eq!(f.stat(ino).unwrap().blocks, 2);
        assert_eq!(f.read_at(ROOT, 0, &mut out), Err(errno::EISDIR));
        assert_eq!(f.write_at(ROOT, 0, b"x"), Err(errno::EISDIR));
        assert_eq!(f.write_at(ino, u64::MAX, b"x"), Err(errno::EFBIG));
    }

    #[test]
    fn stat_layout_is_linuxs() {
        use core::mem::{offset_of, size_of};
        use linux_raw_sys::general::stat;
        assert_eq!(size_of::<stat>(), STAT_SIZE);
        let st = Stat { dev: 1, ino: 2, nlink: 3, mode: 4, uid: 5, gid: 6, rdev: 7, size: 8, blksize: 9, blocks: 10, atime_ns: 11_000_000_012, mtime_ns: 13_000_000_014, ctime_ns: 15_000_000_016 };
        let b = st.to_bytes();
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(u64_at(offset_of!(stat, st_dev)), 1);
        assert_eq!(u64_at(offset_of!(stat, st_ino)), 2);
        assert_eq!(u64_at(offset_of!(stat, st_nlink)), 3);
        assert_eq!(u32_at(offset_of!(stat, st_mode)), 4);
        assert_eq!(u32_at(offset_of!(stat, st_uid)), 5);
        assert_eq!(u32_at(offset_of!(stat, st_gid)), 6);
        assert_eq!(u64_at(offset_of!(stat, st_rdev)), 7);
        assert_eq!(u64_at(offset_of!(stat, st_size)), 8);
        assert_eq!(u64_at(offset_of!(stat, st_blksize)), 9);
        assert_eq!(u64_at(offset_of!(stat, st_blocks)), 10);
        assert_eq!((u64_at(offset_of!(stat, st_atime)), u64_at(offset_of!(stat, st_atime_nsec))), (11, 12));
        assert_eq!((u64_at(offset_of!(stat, st_mtime)), u64_at(offset_of!(stat, st_mtime_nsec))), (13, 14));
        assert_eq!((u64_at(offset_of!(stat, st_ctime)), u64_at(offset_of!(stat, st_ctime_nsec))), (15, 16));
    }

    #[test]
    fn getdents_records_and_resume() {
        let f = fs();
        let a = f.lookup(ROOT, "/a", true).unwrap();
        let ents = f.readdir(a).unwrap();
        let names: Vec<&str> = ents.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, [".", "..", "b", "file", "lnk"]);
        assert_eq!(ents[1].ino, ROOT);
        assert_eq!(ents[3].d_type, DT_REG);
        assert_eq!(ents[4].d_type, DT_LNK);
        assert_eq!(encode_dirents(&ents, 0, 10), Err(errno::EINVAL));
        // Each record is 24 bytes for names up to 4 bytes; 50 bytes holds two.
        let (bytes, next) = encode_dirents(&ents, 0, 50).unwrap();
        assert_eq!((bytes.len(), next), (48, 2));
        assert_eq!(u16::from_le_bytes([bytes[16], bytes[17]]), 24);
        assert_eq!(i64::from_le_bytes(bytes[8..16].try_into().unwrap()), 1);
        assert_eq!(&bytes[19..21], b".\0");
        let (rest, end) = encode_dirents(&ents, next, 4096).unwrap();
        assert_eq!(end, 5);
        assert_eq!(&rest[24 + 19..24 + 24], b"file\0");
        assert_eq!(encode_dirents(&ents, end, 4096).unwrap().0.len(), 0, "end of directory");
    }

    #[test]
    fn filled_from_cpio() {
        let a = crate::cpio::tests::archive(&[(".", 0o40755, b""), ("bin/busybox", 0o100755, b"ELF"), ("bin/sh", 0o120777, b"busybox"), ("etc", 0o40700, b""), ("etc/x/y", 0o100600, b"deep")]);
        let f = Fs::from_cpio(&a).unwrap();
        let sh = f.lookup(ROOT, "/bin/sh", true).unwrap();
        assert_eq!(f.contents(sh), Ok(&b"ELF"[..]));
        assert_eq!(f.readlink(f.lookup(ROOT, "/bin/sh", false).unwrap()), Ok("busybox"));
        assert_eq!(f.stat(f.lookup(ROOT, "/etc", true).unwrap()).unwrap().mode, S_IFDIR | 0o700);
        assert_eq!(f.contents(f.lookup(ROOT, "/etc/x/y", true).unwrap()), Ok(&b"deep"[..]));
        assert_eq!(f.path_of(f.lookup(ROOT, "/etc/x", true).unwrap()).unwrap(), "/etc/x");
        let at = Fs::from_cpio_at(&a, 5_000_000_000).unwrap();
        for path in ["/", "/bin/sh", "/etc/x/y"] {
            assert_eq!(at.stat(at.lookup(ROOT, path, false).unwrap()).unwrap().mtime_ns, 5_000_000_000, "{path}");
        }
    }

    #[test]
    fn dev_nodes() {
        let mut f = Fs::new();
        f.populate_dev().unwrap();
        f.populate_dev().unwrap();
        let n = f.lookup(ROOT, "/dev/null", true).unwrap();
        let st = f.stat(n).unwrap();
        assert_eq!((st.mode, st.rdev), (S_IFCHR | 0o666, 0x103));
        assert_eq!(f.char_dev(f.lookup(ROOT, "/dev/console", true).unwrap()), Some(makedev(5, 1)));
        assert_eq!(makedev(1, 300), 0x10_012c, "minor bits above 8 go to bits 20 and up");
        assert_eq!(f.readdir(f.lookup(ROOT, "/dev", true).unwrap()).unwrap()[2].d_type, DT_CHR);
        assert_eq!(f.stat(f.lookup(ROOT, "/tmp", true).unwrap()).unwrap().mode, S_IFDIR | 0o1777);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Mkdir(usize),
        Create(usize),
        Unlink(usize),
        Rmdir(usize),
        Rename(usize, usize),
    }

    const PATHS: [&str; 8] = ["/p", "/q", "/p/r", "/p/s", "/q/r", "/p/r/t", "/q/s", "/q/r/t"];

    fn op() -> impl Strategy<Value = Op> {
        let i = 0..PATHS.len();
        prop_oneof![
            i.clone().prop_map(Op::Mkdir),
            i.clone().prop_map(Op::Create),
            i.clone().prop_map(Op::Unlink),
            i.clone().prop_map(Op::Rmdir),
            (i.clone(), i).prop_map(|(a, b)| Op::Rename(a, b)),
        ]
    }

    /// Every reachable inode is counted once per name, every directory's `..` names its parent,
    /// and no inode outlives its names (no leak).
    fn check(f: &Fs) -> Result<(), TestCaseError> {
        let mut names: BTreeMap<Ino, u64> = BTreeMap::new();
        let mut subdirs: BTreeMap<Ino, u64> = BTreeMap::new();
        let mut stack = vec![ROOT];
        while let Some(d) = stack.pop() {
            for &c in f.dir_entries(d).unwrap().values() {
                *names.entry(c).or_default() += 1;
                if f.is_dir(c) {
                    *subdirs.entry(d).or_default() += 1;
                    prop_assert_eq!(f.lookup(c, "..", true), Ok(d));
                    stack.push(c);
                }
            }
        }
        prop_assert_eq!(f.inode_count(), names.len() + 1);
        for (ino, n) in names {
            let st = f.stat(ino).unwrap();
            if f.is_dir(ino) {
                prop_assert_eq!(st.nlink, 2 + subdirs.get(&ino).copied().unwrap_or(0));
            } else {
                prop_assert_eq!(st.nlink, n);
            }
        }
        Ok(())
    }

    proptest! {
        /// Random namespace changes keep the tree consistent, and an operation that fails changes
        /// nothing.
        #[test]
        fn namespace_stays_consistent(ops in proptest::collection::vec(op(), 1..40)) {
            let mut f = Fs::new();
            for o in ops {
                let before = f.clone();
                let r = match o {
                    Op::Mkdir(i) => f.mkdir(ROOT, PATHS[i], 0o755).map(|_| ()),
                    Op::Create(i) => f.create(ROOT, PATHS[i], 0o644, true).map(|_| ()),
                    Op::Unlink(i) => f.unlink(ROOT, PATHS[i]),
                    Op::Rmdir(i) => f.rmdir(ROOT, PATHS[i]),
                    Op::Rename(a, b) => f.rename(ROOT, PATHS[a], ROOT, PATHS[b]),
                };
                if r.is_err() {
                    prop_assert_eq!(format!("{:?}", before.inodes), format!("{:?}", f.inodes));
                }
                check(&f)?;
            }
        }
    }
}
