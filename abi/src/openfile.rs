//! Opening and using files of the RAM filesystem the way `open`, `read`, `write`, `lseek`,
//! `fcntl(F_GETFL/F_SETFL)` and `ftruncate` do: an open file description ([`OpenFile`]: the inode,
//! the offset, the access mode and the status flags), [`open_at`] with each flag's rule and errno,
//! and the offset arithmetic. Pipes, terminals and devices have their own descriptions in the
//! kernel; this is the one for inodes.
//!
//! Rules kept from Linux's `do_sys_open` and `generic_file_llseek`:
//! - `O_CREAT | O_EXCL` on an existing name is `EEXIST`, and never follows a final symbolic link;
//! - `O_NOFOLLOW` on a final symbolic link is `ELOOP`; `O_DIRECTORY` on a non-directory `ENOTDIR`;
//! - a directory opened for writing is `EISDIR`; `O_TRUNC` empties a regular file opened for
//!   writing (and is ignored on devices);
//! - `O_APPEND` writes at the end whatever the offset; `pread`/`pwrite` leave the offset alone;
//! - `lseek` to a negative offset is `EINVAL`; `F_SETFL` changes only `O_APPEND` and `O_NONBLOCK`.

use crate::{
    linux::errno,
    ramfs::{Errno, Fs, Ino},
};
use linux_raw_sys::general as g;

/// How a description was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFile {
    pub ino: Ino,
    pub offset: u64,
    /// `O_ACCMODE` bits and the status flags (`O_APPEND`, `O_NONBLOCK`, ...), as `F_GETFL` shows.
    pub flags: u32,
}

impl OpenFile {
    pub fn readable(&self) -> bool {
        self.flags & g::O_ACCMODE != g::O_WRONLY && self.flags & g::O_PATH == 0
    }

    pub fn writable(&self) -> bool {
        matches!(self.flags & g::O_ACCMODE, g::O_WRONLY | g::O_RDWR) && self.flags & g::O_PATH == 0
    }

    pub fn nonblocking(&self) -> bool {
        self.flags & g::O_NONBLOCK != 0
    }

    /// `F_GETFL`: the flags as Linux shows them (O_LARGEFILE is always set on 64-bit).
    pub fn getfl(&self) -> u32 {
        (self.flags & !(g::O_CREAT | g::O_EXCL | g::O_NOCTTY | g::O_TRUNC | g::O_CLOEXEC)) | g::O_LARGEFILE
    }

    /// `F_SETFL`: only `O_APPEND` and `O_NONBLOCK` change (and `O_NOATIME`, `O_DIRECT`, which mean
    /// nothing here and are dropped).
    pub fn setfl(&mut self, new: u32) {
        let m = g::O_APPEND | g::O_NONBLOCK;
        self.flags = (self.flags & !m) | (new & m);
    }

    /// `read` at the offset, advancing it.
    pub fn read(&mut self, fs: &Fs, out: &mut [u8]) -> Result<usize, Errno> {
        if !self.readable() {
            return Err(errno::EBADF);
        }
        let n = fs.read_at(self.ino, self.offset, out)?;
        self.offset += n as u64;
        Ok(n)
    }

    /// `write` at the offset (or at the end under `O_APPEND`), advancing it.
    pub fn write(&mut self, fs: &mut Fs, data: &[u8]) -> Result<usize, Errno> {
        if !self.writable() {
            return Err(errno::EBADF);
        }
        if self.flags & g::O_APPEND != 0 {
            self.offset = fs.stat(self.ino)?.size as u64;
        }
        let n = fs.write_at(self.ino, self.offset, data)?;
        self.offset += n as u64;
        Ok(n)
    }

    /// `pread64`: at `offset`, which must not be negative; the description's offset stays.
    pub fn pread(&self, fs: &Fs, offset: i64, out: &mut [u8]) -> Result<usize, Errno> {
        if !self.readable() {
            return Err(errno::EBADF);
        }
        let off = u64::try_from(offset).map_err(|_| errno::EINVAL)?;
        fs.read_at(self.ino, off, out)
    }

    /// `pwrite64` at `offset`. Under `O_APPEND` Linux appends anyway (pwrite(2), BUGS); so do we,
    /// since that is what programs see there.
    pub fn pwrite(&self, fs: &mut Fs, offset: i64, data: &[u8]) -> Result<usize, Errno> {
        if !self.writable() {
            return Err(errno::EBADF);
        }
        let off = u64::try_from(offset).map_err(|_| errno::EINVAL)?;
        let at = if self.flags & g::O_APPEND != 0 { fs.stat(self.ino)?.size as u64 } else { off };
        fs.write_at(self.ino, at, data)
    }

    /// `lseek(offset, whence)`: the new offset. `SEEK_DATA`/`SEEK_HOLE` treat the file as all data.
    pub fn lseek(&mut self, fs: &Fs, offset: i64, whence: u32) -> Result<u64, Errno> {
        let size = fs.stat(self.ino)?.size;
        let base: i64 = match whence {
            g::SEEK_SET => 0,
            g::SEEK_CUR => self.offset as i64,
            g::SEEK_END => size,
            // SEEK_DATA, SEEK_HOLE
            3 | 4 => {
                if offset < 0 || offset >= size {
                    return Err(errno::ENXIO);
                }
                let to = if whence == 3 { offset } else { size };
                self.offset = to as u64;
                return Ok(self.offset);
            }
            _ => return Err(errno::EINVAL),
        };
        let new = base.checked_add(offset).ok_or(errno::EOVERFLOW)?;
        if new < 0 {
            return Err(errno::EINVAL);
        }
        self.offset = new as u64;
        Ok(self.offset)
    }

    /// `ftruncate`: the file must be open for writing.
    pub fn truncate(&self, fs: &mut Fs, len: i64) -> Result<(), Errno> {
        if !self.writable() {
            return Err(errno::EINVAL);
        }
        fs.truncate(self.ino, u64::try_from(len).map_err(|_| errno::EINVAL)?)
    }
}

/// `openat(dir, path, flags, mode)` resolved in `dir` (the caller maps `AT_FDCWD` and directory
/// descriptors to inodes). `mode` has the umask already applied. The new description holds an
/// open reference on the inode ([`Fs::open`]); the caller calls [`Fs::release`] when it closes.
pub fn open_at(fs: &mut Fs, dir: Ino, path: &str, flags: u32, mode: u32) -> Result<OpenFile, Errno> {
    let acc = flags & g::O_ACCMODE;
    if acc == 3 && flags & g::O_PATH == 0 {
        return Err(errno::EINVAL);
    }
    if flags & g::O_TMPFILE == g::O_TMPFILE {
        return Err(errno::EOPNOTSUPP);
    }
    let follow = flags & g::O_NOFOLLOW == 0;
    let ino = if flags & g::O_CREAT != 0 {
        if flags & g::O_DIRECTORY != 0 {
            return Err(errno::EINVAL);
        }
        if !follow && fs.lookup(dir, path, false).is_ok_and(|i| fs.readlink(i).is_ok()) {
            return Err(if flags & g::O_EXCL != 0 { errno::EEXIST } else { errno::ELOOP });
        }
        fs.create(dir, path, mode, flags & g::O_EXCL != 0)?
    } else {
        fs.lookup(dir, path, follow)?
    };
    let st = fs.stat(ino)?;
    let ty = st.mode & crate::ramfs::S_IFMT;
    if ty == crate::ramfs::S_IFLNK && flags & g::O_PATH == 0 {
        // Only reachable with O_NOFOLLOW (or O_CREAT|O_EXCL, which EEXISTs before this).
        return Err(errno::ELOOP);
    }
    if flags & g::O_DIRECTORY != 0 && ty != crate::ramfs::S_IFDIR {
        return Err(errno::ENOTDIR);
    }
    let writing = matches!(acc, g::O_WRONLY | g::O_RDWR) && flags & g::O_PATH == 0;
    if ty == crate::ramfs::S_IFDIR && writing {
        return Err(errno::EISDIR);
    }
    if flags & g::O_TRUNC != 0 && writing && ty == crate::ramfs::S_IFREG {
        fs.truncate(ino, 0)?;
    }
    fs.open(ino)?;
    Ok(OpenFile { ino, offset: 0, flags: flags & !(g::O_CREAT | g::O_EXCL | g::O_NOCTTY | g::O_TRUNC | g::O_CLOEXEC) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ramfs::ROOT;

    fn fs() -> Fs {
        let mut f = Fs::new();
        f.populate_dev().unwrap();
        let ino = f.create(ROOT, "/etc", 0o644, true).unwrap();
        f.write_at(ino, 0, b"0123456789").unwrap();
        f.symlink("/etc", ROOT, "/lnk").unwrap();
        f.mkdir(ROOT, "/d", 0o755).unwrap();
        f
    }

    #[test]
    fn open_flags_and_their_errors() {
        let mut f = fs();
        assert_eq!(open_at(&mut f, ROOT, "/etc", g::O_CREAT | g::O_EXCL | g::O_WRONLY, 0o644), Err(errno::EEXIST));
        assert_eq!(open_at(&mut f, ROOT, "/lnk", g::O_CREAT | g::O_EXCL | g::O_WRONLY, 0o644), Err(errno::EEXIST), "O_EXCL does not follow the link");
        assert_eq!(open_at(&mut f, ROOT, "/lnk", g::O_RDONLY | g::O_NOFOLLOW, 0), Err(errno::ELOOP));
        assert_eq!(open_at(&mut f, ROOT, "/lnk", g::O_CREAT | g::O_NOFOLLOW | g::O_WRONLY, 0o644), Err(errno::ELOOP));
        assert!(open_at(&mut f, ROOT, "/lnk", g::O_RDONLY, 0).is_ok());
        assert_eq!(open_at(&mut f, ROOT, "/etc", g::O_RDONLY | g::O_DIRECTORY, 0), Err(errno::ENOTDIR));
        assert_eq!(open_at(&mut f, ROOT, "/d", g::O_WRONLY, 0), Err(errno::EISDIR));
        assert!(open_at(&mut f, ROOT, "/d", g::O_RDONLY | g::O_DIRECTORY, 0).is_ok());
        assert_eq!(open_at(&mut f, ROOT, "/nope", g::O_RDONLY, 0), Err(errno::ENOENT));
        assert_eq!(open_at(&mut f, ROOT, "/etc", 3, 0), Err(errno::EINVAL));
        let n = open_at(&mut f, ROOT, "/new", g::O_CREAT | g::O_WRONLY | g::O_CLOEXEC, 0o600).unwrap();
        assert_eq!(f.stat(n.ino).unwrap().mode & 0o777, 0o600);
        assert_eq!(n.getfl() & g::O_CLOEXEC, 0, "O_CLOEXEC belongs to the descriptor");
        let t = open_at(&mut f, ROOT, "/etc", g::O_WRONLY | g::O_TRUNC, 0).unwrap();
        assert_eq!(f.stat(t.ino).unwrap().size, 0);
        assert!(open_at(&mut f, ROOT, "/dev/null", g::O_WRONLY | g::O_TRUNC, 0).is_ok(), "O_TRUNC ignored on devices");
    }

    #[test]
    fn offsets_append_and_access() {
        let mut f = fs();
        let mut r = open_at(&mut f, ROOT, "/etc", g::O_RDONLY, 0).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&f, &mut buf), Ok(4));
        assert_eq!(r.read(&f, &mut buf), Ok(4));
        assert_eq!(&buf, b"4567");
        assert_eq!(r.pread(&f, 1, &mut buf), Ok(4));
        assert_eq!(&buf, b"1234");
        assert_eq!(r.offset, 8, "pread leaves the offset");
        assert_eq!(r.write(&mut f, b"x"), Err(errno::EBADF));
        assert_eq!(r.lseek(&f, -2, g::SEEK_END), Ok(8));
        assert_eq!(r.lseek(&f, -9, g::SEEK_CUR), Err(errno::EINVAL));
        assert_eq!(r.lseek(&f, 5, 9), Err(errno::EINVAL));
        assert_eq!(r.lseek(&f, 100, g::SEEK_SET), Ok(100), "past the end is allowed");
        assert_eq!(r.read(&f, &mut buf), Ok(0));
        assert_eq!(r.lseek(&f, 3, 4), Ok(10), "SEEK_HOLE: the end");
        assert_eq!(r.lseek(&f, 10, 3), Err(errno::ENXIO));
        let mut a = open_at(&mut f, ROOT, "/etc", g::O_WRONLY | g::O_APPEND, 0).unwrap();
        a.offset = 0;
        assert_eq!(a.write(&mut f, b"AB"), Ok(2));
        assert_eq!(a.pwrite(&mut f, 0, b"CD"), Ok(2));
        assert_eq!(f.contents(a.ino).unwrap(), b"0123456789ABCD");
        a.setfl(g::O_NONBLOCK | g::O_RDWR);
        assert!(a.nonblocking() && a.flags & g::O_APPEND == 0 && !a.readable(), "F_SETFL cannot change the access mode");
        assert_eq!(a.getfl() & g::O_LARGEFILE, g::O_LARGEFILE);
        assert_eq!(r.truncate(&mut f, 0), Err(errno::EINVAL));
        a.truncate(&mut f, 3).unwrap();
        assert_eq!(f.contents(a.ino).unwrap(), b"012");
        assert_eq!(a.pwrite(&mut f, -1, b"x"), Err(errno::EINVAL));
    }

    #[test]
    fn open_references_keep_unlinked_files() {
        let mut f = fs();
        let before = f.inode_count();
        let o = open_at(&mut f, ROOT, "/tmp/t", g::O_CREAT | g::O_RDWR, 0o644).unwrap();
        f.unlink(ROOT, "/tmp/t").unwrap();
        let mut o2 = o;
        assert_eq!(o2.write(&mut f, b"still here"), Ok(10));
        assert_eq!(f.inode_count(), before + 1);
        f.release(o.ino);
        assert_eq!(f.inode_count(), before);
    }
}
