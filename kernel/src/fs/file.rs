//! Open file descriptions: what a descriptor refers to ([`Node`]), its offset and status flags
//! (an `abi::openfile::OpenFile`, under a sleeping lock that serialises the offset as Linux's
//! `f_pos_lock` does), and the operations every kind answers: read, write, positioned I/O, seek,
//! stat, readiness for poll, directory listing.
//!
//! Reads and writes move bytes between a kernel buffer and the object; the system-call layer
//! copies that buffer from or to user memory, so no user copy happens under a lock.

use alloc::{sync::Arc, vec::Vec};
use core::sync::atomic::{AtomicBool, Ordering};

use abi::{
    linux::{errno, general as g},
    openfile::OpenFile,
    poll::{POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM},
    ramfs::{DirEntry, Errno, Ino, Stat},
};

use super::{dev::Device, pipe::PipeObj, with_fs};
use crate::task::{self, uctx::UserCtx};

/// What an open file description refers to.
pub enum Node {
    /// A file, directory or (under `O_PATH`) symbolic link of the RAM filesystem; the description
    /// holds an open reference on the inode, released at its drop.
    Inode(Ino),
    /// The read end of a pipe. The two ends are two variants, not one with a flag, so a read or
    /// write call tells the kind of its file and the end with one test.
    PipeRead(Arc<PipeObj>),
    /// The write end of a pipe.
    PipeWrite(Arc<PipeObj>),
    Dev(Device),
    /// A `/proc` file: its text, generated when it was opened.
    Text(Vec<u8>),
    /// A `/proc` directory: its entries, listed when it was opened.
    Listing(Vec<DirEntry>),
}

pub struct File {
    pub node: Node,
    state: sched::Mutex<OpenFile>,
    /// `O_NONBLOCK` of the status flags, kept beside them (changed only under `state`'s lock) so
    /// a pipe's read or write, which takes no offset, reads it without that sleeping lock.
    nonblock: AtomicBool,
}

impl File {
    fn new(node: Node, of: OpenFile) -> Self {
        let nonblock = AtomicBool::new(of.nonblocking());
        Self { node, state: sched::Mutex::new(of), nonblock }
    }

    pub fn inode(of: OpenFile) -> Self {
        Self::new(Node::Inode(of.ino), of)
    }

    pub fn device(dev: Device, flags: u32) -> Self {
        Self::new(Node::Dev(dev), OpenFile { ino: 0, offset: 0, flags })
    }

    pub fn text(bytes: Vec<u8>, flags: u32) -> Self {
        Self::new(Node::Text(bytes), OpenFile { ino: 0, offset: 0, flags })
    }

    pub fn listing(entries: Vec<DirEntry>, flags: u32) -> Self {
        Self::new(Node::Listing(entries), OpenFile { ino: 0, offset: 0, flags })
    }

    pub fn pipe_end(pipe: Arc<PipeObj>, write: bool, flags: u32) -> Self {
        let acc = if write { g::O_WRONLY } else { g::O_RDONLY };
        Self::new(if write { Node::PipeWrite(pipe) } else { Node::PipeRead(pipe) }, OpenFile { ino: 0, offset: 0, flags: acc | (flags & g::O_NONBLOCK) })
    }

    fn st(&self) -> sched::MutexGuard<'_, OpenFile, task::KernelPlatform> {
        self.state.lock(task::sched())
    }

    /// `F_GETFL`.
    pub fn getfl(&self) -> u32 {
        self.st().getfl()
    }

    /// `F_SETFL` (only `O_APPEND` and `O_NONBLOCK` change).
    pub fn setfl(&self, flags: u32) {
        let mut st = self.st();
        st.setfl(flags);
        self.nonblock.store(st.nonblocking(), Ordering::Relaxed);
    }

    fn nonblocking(&self) -> bool {
        self.nonblock.load(Ordering::Relaxed)
    }

    /// Whether the description is a directory (for `*at` calls and `fchdir`).
    pub fn dir_ino(&self) -> Result<Ino, Errno> {
        match self.node {
            Node::Inode(ino) if with_fs(|fs| fs.is_dir(ino)) => Ok(ino),
            _ => Err(errno::ENOTDIR),
        }
    }

    /// [`File::read`] by a system call that holds its thread's context `me`: a pipe sleeps
    /// without searching for it. `#[inline(always)]`: the dispatch costs the system call no frame
    /// of its own (and a pipe's one-byte read, inlined here, runs in the call's frame).
    #[inline(always)]
    pub fn read_as(&self, me: &UserCtx, out: &mut [u8]) -> Result<usize, Errno> {
        match &self.node {
            Node::PipeRead(pipe) => pipe.read_as(Some(me), out, self.nonblocking()),
            _ => self.read(out),
        }
    }

    /// [`File::write`] by a system call that holds its thread's context `me`. `#[inline(always)]`:
    /// the dispatch costs the system call no frame of its own.
    #[inline(always)]
    pub fn write_as(&self, me: &UserCtx, data: &[u8]) -> Result<usize, Errno> {
        match &self.node {
            Node::PipeWrite(pipe) => pipe.write_as(Some(me), data, self.nonblocking()),
            _ => self.write(data),
        }
    }

    /// `read`: up to `out.len()` bytes at the offset. A pipe or the console may block.
    pub fn read(&self, out: &mut [u8]) -> Result<usize, Errno> {
        match &self.node {
            Node::Inode(_) => {
                let mut st = self.st();
                with_fs(|fs| st.read(fs, out))
            }
            Node::Text(t) => {
                let mut st = self.st();
                if !st.readable() {
                    return Err(errno::EBADF);
                }
                let n = text_at(t, st.offset, out);
                st.offset += n as u64;
                Ok(n)
            }
            Node::PipeRead(pipe) => pipe.read(out, self.nonblocking()),
            Node::PipeWrite(_) => Err(errno::EBADF),
            Node::Listing(_) => Err(errno::EISDIR),
            Node::Dev(d) => {
                if !self.st().readable() {
                    return Err(errno::EBADF);
                }
                d.read(out, self.nonblocking())
            }
        }
    }

    /// `write` at the offset (at the end under `O_APPEND`).
    pub fn write(&self, data: &[u8]) -> Result<usize, Errno> {
        match &self.node {
            Node::Inode(_) => {
                let mut st = self.st();
                with_fs(|fs| st.write(fs, data))
            }
            Node::Text(_) | Node::Listing(_) => Err(errno::EBADF),
            Node::PipeWrite(pipe) => pipe.write(data, self.nonblocking()),
            Node::PipeRead(_) => Err(errno::EBADF),
            Node::Dev(d) => {
                if !self.st().writable() {
                    return Err(errno::EBADF);
                }
                d.write(data)
            }
        }
    }

    /// `pread64`.
    pub fn pread(&self, offset: i64, out: &mut [u8]) -> Result<usize, Errno> {
        match &self.node {
            Node::Inode(_) => {
                let st = *self.st();
                with_fs(|fs| st.pread(fs, offset, out))
            }
            Node::Text(t) => Ok(text_at(t, u64::try_from(offset).map_err(|_| errno::EINVAL)?, out)),
            Node::Listing(_) => Err(errno::EISDIR),
            Node::PipeRead(_) | Node::PipeWrite(_) => Err(errno::ESPIPE),
            Node::Dev(_) => self.read(out),
        }
    }

    /// `pwrite64`.
    pub fn pwrite(&self, offset: i64, data: &[u8]) -> Result<usize, Errno> {
        match &self.node {
            Node::Inode(_) => {
                let st = *self.st();
                with_fs(|fs| st.pwrite(fs, offset, data))
            }
            Node::PipeRead(_) | Node::PipeWrite(_) => Err(errno::ESPIPE),
            _ => self.write(data),
        }
    }

    /// `lseek`.
    pub fn lseek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        match &self.node {
            Node::Inode(_) => {
                let mut st = self.st();
                with_fs(|fs| st.lseek(fs, offset, whence))
            }
            Node::Text(t) => {
                let mut st = self.st();
                let base = match whence {
                    g::SEEK_SET => 0,
                    g::SEEK_CUR => st.offset as i64,
                    g::SEEK_END => t.len() as i64,
                    _ => return Err(errno::EINVAL),
                };
                let new = base.checked_add(offset).filter(|n| *n >= 0).ok_or(errno::EINVAL)?;
                st.offset = new as u64;
                Ok(st.offset)
            }
            Node::Listing(_) => {
                let mut st = self.st();
                if whence != g::SEEK_SET || offset < 0 {
                    return Err(errno::EINVAL);
                }
                st.offset = offset as u64;
                Ok(st.offset)
            }
            Node::PipeRead(_) | Node::PipeWrite(_) => Err(errno::ESPIPE),
            // A terminal cannot seek (Linux's `no_llseek`); null, zero and urandom accept any seek
            // and stay at 0.
            Node::Dev(super::dev::Device::Console) => Err(errno::ESPIPE),
            Node::Dev(_) => Ok(0),
        }
    }

    /// `ftruncate`.
    pub fn truncate(&self, len: i64) -> Result<(), Errno> {
        match &self.node {
            Node::Inode(_) => {
                let st = *self.st();
                if with_fs(|fs| fs.is_dir(st.ino)) {
                    return Err(errno::EINVAL);
                }
                with_fs(|fs| st.truncate(fs, len))
            }
            _ => Err(errno::EINVAL),
        }
    }

    /// `fstat`.
    pub fn stat(&self) -> Result<Stat, Errno> {
        let now = crate::time::wall_clock_ns();
        let base = Stat { dev: abi::ramfs::DEV, blksize: 4096, atime_ns: now, mtime_ns: now, ctime_ns: now, nlink: 1, ..Stat::default() };
        match &self.node {
            Node::Inode(ino) => with_fs(|fs| fs.stat(*ino)),
            Node::Text(t) => Ok(Stat { dev: 3, ino: 0x7001, mode: g::S_IFREG | 0o444, size: t.len() as i64, ..base }),
            Node::Listing(_) => Ok(Stat { dev: 3, ino: 0x7000, mode: g::S_IFDIR | 0o555, nlink: 2, ..base }),
            Node::PipeRead(pipe) | Node::PipeWrite(pipe) => Ok(Stat { dev: 9, ino: pipe.id(), mode: g::S_IFIFO | 0o600, ..base }),
            Node::Dev(d) => Ok(Stat { dev: 5, ino: d.rdev(), mode: g::S_IFCHR | 0o666, rdev: d.rdev(), ..base }),
        }
    }

    /// The `poll` bits this description is ready for now.
    pub fn poll(&self) -> u16 {
        match &self.node {
            Node::Inode(_) | Node::Text(_) | Node::Listing(_) => POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM,
            Node::PipeRead(pipe) => pipe.poll(false),
            Node::PipeWrite(pipe) => pipe.poll(true),
            Node::Dev(d) => d.poll(),
        }
    }

    /// `FIONREAD`: unread bytes, for the objects that have a notion of it.
    pub fn nread(&self) -> Result<usize, Errno> {
        match &self.node {
            Node::PipeRead(pipe) => Ok(pipe.len()),
            Node::Inode(ino) => {
                let off = self.st().offset;
                let size = with_fs(|fs| fs.stat(*ino))?.size as u64;
                Ok(size.saturating_sub(off) as usize)
            }
            Node::Text(t) => Ok(t.len().saturating_sub(self.st().offset as usize)),
            Node::Dev(d) => d.nread(),
            _ => Err(errno::ENOTTY),
        }
    }

    /// `getdents64`: records from the directory offset, at most `buf_len` bytes.
    pub fn getdents(&self, buf_len: usize) -> Result<Vec<u8>, Errno> {
        let mut st = self.st();
        let entries = match &self.node {
            Node::Inode(ino) => with_fs(|fs| fs.readdir(*ino))?,
            Node::Listing(e) => e.clone(),
            _ => return Err(errno::ENOTDIR),
        };
        let (bytes, next) = abi::ramfs::encode_dirents(&entries, st.offset as usize, buf_len)?;
        st.offset = next as u64;
        Ok(bytes)
    }
}

fn text_at(t: &[u8], offset: u64, out: &mut [u8]) -> usize {
    let src = usize::try_from(offset).ok().and_then(|o| t.get(o..)).unwrap_or(&[]);
    let n = src.len().min(out.len());
    out[..n].copy_from_slice(&src[..n]);
    n
}

impl Drop for File {
    fn drop(&mut self) {
        match &self.node {
            Node::Inode(ino) => with_fs(|fs| fs.release(*ino)),
            Node::PipeRead(pipe) => pipe.close_end(false),
            Node::PipeWrite(pipe) => pipe.close_end(true),
            _ => {}
        }
    }
}
