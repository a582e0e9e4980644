//! File-system calls: opening and closing, descriptors (the dup family, `fcntl`), paths
//! (`stat`, `mkdir`, `unlink`, `rename`, `readlink`, `symlink`, `access`, `truncate`), the working
//! directory and umask, directory listing, pipes, and the process's resource limits and
//! `sysinfo`.
//!
//! Each call decodes its arguments, finds the calling process's descriptor table or working
//! directory, and leaves the rules to `crate::fs` and `abi`. Paths are copied in through
//! `arch::usercopy` (a bad pointer is `EFAULT`; no NUL within `PATH_MAX` is `ENAMETOOLONG`).

use alloc::{string::String, sync::Arc, vec, vec::Vec};

use abi::{
    limits::RLimit,
    linux::{errno, general as g},
    ramfs::{Ino, PATH_MAX, ROOT, STAT_SIZE, Stat},
};
use arch::usercopy;

use super::SysResult;
use crate::{
    fs::{self, File, pipe::PipeObj, proc::ProcNode},
    process::{self, Process},
};

const AT_FDCWD: i32 = g::AT_FDCWD;

pub(super) fn me() -> Result<Arc<Process>, u32> {
    process::current().ok_or(errno::ESRCH)
}

/// The file behind descriptor `fd` of the calling process.
pub(super) fn file(fd: u64) -> Result<Arc<File>, u32> {
    me()?.files().get(fd as i32)
}

/// A path argument.
fn path_arg(addr: u64) -> Result<String, u32> {
    let mut buf = vec![0u8; PATH_MAX];
    let n = usercopy::strncpy_from_user(&mut buf, addr).map_err(|_| errno::EFAULT)?;
    if n == PATH_MAX {
        return Err(errno::ENAMETOOLONG);
    }
    buf.truncate(n);
    String::from_utf8(buf).map_err(|_| errno::EINVAL)
}

/// The directory a `*at` call resolves from: the working directory for `AT_FDCWD`.
fn dir_of(p: &Process, dirfd: u64, path: &str) -> Result<Ino, u32> {
    if path.starts_with('/') {
        return Ok(ROOT);
    }
    let fd = dirfd as i32;
    if fd == AT_FDCWD {
        return Ok(p.fs.cwd());
    }
    p.files().get(fd)?.dir_ino()
}

fn put<T: AsRef<[u8]>>(addr: u64, bytes: T) -> Result<(), u32> {
    usercopy::copy_to_user(addr, bytes.as_ref()).map_err(|_| errno::EFAULT)
}

pub fn openat(dirfd: u64, path: u64, flags: u64, mode: u64) -> SysResult {
    let p = me()?;
    let path = path_arg(path)?;
    let flags = flags as u32;
    let dir = dir_of(&p, dirfd, &path)?;
    let mode = (mode as u32) & 0o7777 & !p.fs.umask();
    let f = fs::open(dir, &path, flags, mode)?;
    let fd = p.files().install(Arc::new(f), flags & g::O_CLOEXEC != 0, 0)?;
    Ok(fd as u64)
}

pub fn open(path: u64, flags: u64, mode: u64) -> SysResult {
    openat(AT_FDCWD as u64, path, flags, mode)
}

pub fn creat(path: u64, mode: u64) -> SysResult {
    openat(AT_FDCWD as u64, path, u64::from(g::O_CREAT | g::O_WRONLY | g::O_TRUNC), mode)
}

pub fn close(fd: u64) -> SysResult {
    me()?.files().close(fd as i32)?;
    Ok(0)
}

pub fn dup(fd: u64) -> SysResult {
    me()?.files().with(|t| t.dup(fd as i32)).map(|n| n as u64)
}

pub fn dup2(old: u64, new: u64) -> SysResult {
    let p = me()?;
    let (n, replaced) = p.files().with(|t| t.dup2(old as i32, new as i32))?;
    drop(replaced);
    Ok(n as u64)
}

pub fn dup3(old: u64, new: u64, flags: u64) -> SysResult {
    let p = me()?;
    let (n, replaced) = p.files().with(|t| t.dup3(old as i32, new as i32, flags as u32))?;
    drop(replaced);
    Ok(n as u64)
}

pub fn fcntl(fd: u64, cmd: u64, arg: u64) -> SysResult {
    let p = me()?;
    let fd = fd as i32;
    match cmd as u32 {
        g::F_DUPFD => p.files().with(|t| t.dup_from(fd, arg as i64, false)).map(|n| n as u64),
        g::F_DUPFD_CLOEXEC => p.files().with(|t| t.dup_from(fd, arg as i64, true)).map(|n| n as u64),
        g::F_GETFD => p.files().with(|t| t.cloexec(fd)).map(|c| if c { u64::from(g::FD_CLOEXEC) } else { 0 }),
        g::F_SETFD => p.files().with(|t| t.set_cloexec(fd, arg & u64::from(g::FD_CLOEXEC) != 0)).map(|_| 0),
        g::F_GETFL => Ok(u64::from(p.files().get(fd)?.getfl())),
        g::F_SETFL => {
            p.files().get(fd)?.setfl(arg as u32);
            Ok(0)
        }
        // Advisory locks: one process owns every file here, so a lock always succeeds.
        g::F_SETLK | g::F_SETLKW | g::F_GETLK => {
            p.files().get(fd)?;
            Ok(0)
        }
        _ => Err(errno::EINVAL),
    }
}

pub fn lseek(fd: u64, offset: u64, whence: u64) -> SysResult {
    file(fd)?.lseek(offset as i64, whence as u32)
}

pub fn ftruncate(fd: u64, len: u64) -> SysResult {
    file(fd)?.truncate(len as i64).map(|_| 0)
}

pub fn truncate(path: u64, len: u64) -> SysResult {
    let p = me()?;
    let path = path_arg(path)?;
    let dir = dir_of(&p, AT_FDCWD as u64, &path)?;
    let len = u64::try_from(len as i64).map_err(|_| errno::EINVAL)?;
    fs::with_fs(|f| {
        let ino = f.lookup(dir, &path, true)?;
        if f.is_dir(ino) {
            return Err(errno::EISDIR);
        }
        f.truncate(ino, len)
    })?;
    Ok(0)
}

/// The `stat` of `path` from `dir`, `/proc` included.
fn stat_path(dir: Ino, path: &str, follow: bool) -> Result<Stat, u32> {
    if let Some(node) = fs::proc::lookup(dir, path, follow)? {
        let now = crate::time::wall_clock_ns();
        let base = Stat { dev: 3, nlink: 1, blksize: 4096, atime_ns: now, mtime_ns: now, ctime_ns: now, ..Stat::default() };
        return Ok(match node {
            ProcNode::Dir(_) => Stat { ino: 0x7000, mode: g::S_IFDIR | 0o555, nlink: 2, ..base },
            ProcNode::Text(t) => Stat { ino: 0x7001, mode: g::S_IFREG | 0o444, size: t.len() as i64, ..base },
            ProcNode::Link(target) if follow => return stat_path(ROOT, &target, true),
            ProcNode::Link(target) => Stat { ino: 0x7002, mode: g::S_IFLNK | 0o777, size: target.len() as i64, ..base },
        });
    }
    fs::with_fs(|f| f.lookup(dir, path, follow).and_then(|ino| f.stat(ino)))
}

pub fn fstat(fd: u64, buf: u64) -> SysResult {
    let st = file(fd)?.stat()?;
    put(buf, st.to_bytes())?;
    Ok(0)
}

pub fn newfstatat(dirfd: u64, path: u64, buf: u64, flags: u64) -> SysResult {
    let flags = flags as u32;
    if flags & !(g::AT_SYMLINK_NOFOLLOW | g::AT_EMPTY_PATH | g::AT_NO_AUTOMOUNT) != 0 {
        return Err(errno::EINVAL);
    }
    let p = me()?;
    let path = path_arg(path)?;
    let st = if path.is_empty() && flags & g::AT_EMPTY_PATH != 0 {
        if dirfd as i32 == AT_FDCWD { fs::with_fs(|f| f.stat(p.fs.cwd()))? } else { p.files().get(dirfd as i32)?.stat()? }
    } else {
        let dir = dir_of(&p, dirfd, &path)?;
        stat_path(dir, &path, flags & g::AT_SYMLINK_NOFOLLOW == 0)?
    };
    const _: () = assert!(STAT_SIZE == 144);
    put(buf, st.to_bytes())?;
    Ok(0)
}

pub fn stat(path: u64, buf: u64) -> SysResult {
    newfstatat(AT_FDCWD as u64, path, buf, 0)
}

pub fn lstat(path: u64, buf: u64) -> SysResult {
    newfstatat(AT_FDCWD as u64, path, buf, u64::from(g::AT_SYMLINK_NOFOLLOW))
}

pub fn faccessat(dirfd: u64, path: u64, mode: u64, flags: u64) -> SysResult {
    if mode & !7 != 0 || flags as u32 & !(g::AT_SYMLINK_NOFOLLOW | g::AT_EACCESS | g::AT_EMPTY_PATH) != 0 {
        return Err(errno::EINVAL);
    }
    let p = me()?;
    let path = path_arg(path)?;
    let dir = dir_of(&p, dirfd, &path)?;
    let st = stat_path(dir, &path, flags as u32 & g::AT_SYMLINK_NOFOLLOW == 0)?;
    // Everything runs as root: reading and writing are allowed; executing needs an x bit (or a
    // directory), as Linux checks even for root.
    if mode & 1 != 0 && st.mode & 0o111 == 0 && st.mode & g::S_IFMT != g::S_IFDIR {
        return Err(errno::EACCES);
    }
    Ok(0)
}

pub fn access(path: u64, mode: u64) -> SysResult {
    faccessat(AT_FDCWD as u64, path, mode, 0)
}

pub fn getdents64(fd: u64, buf: u64, len: u64) -> SysResult {
    let f = file(fd)?;
    let bytes = f.getdents(len.min(1 << 20) as usize)?;
    put(buf, &bytes)?;
    Ok(bytes.len() as u64)
}

pub fn getcwd(buf: u64, size: u64) -> SysResult {
    let p = me()?;
    let mut path = fs::path_of(p.fs.cwd())?.into_bytes();
    path.push(0);
    if (path.len() as u64) > size {
        return Err(errno::ERANGE);
    }
    put(buf, &path)?;
    Ok(path.len() as u64)
}

pub fn chdir(path: u64) -> SysResult {
    let p = me()?;
    let path = path_arg(path)?;
    let dir = dir_of(&p, AT_FDCWD as u64, &path)?;
    let ino = fs::with_fs(|f| f.lookup(dir, &path, true))?;
    p.fs.chdir(ino)?;
    Ok(0)
}

pub fn fchdir(fd: u64) -> SysResult {
    let p = me()?;
    let ino = p.files().get(fd as i32)?.dir_ino()?;
    p.fs.chdir(ino)?;
    Ok(0)
}

pub fn mkdirat(dirfd: u64, path: u64, mode: u64) -> SysResult {
    let p = me()?;
    let path = path_arg(path)?;
    let dir = dir_of(&p, dirfd, &path)?;
    let mode = mode as u32 & 0o7777 & !p.fs.umask();
    fs::with_fs(|f| f.mkdir(dir, &path, mode))?;
    Ok(0)
}

pub fn mkdir(path: u64, mode: u64) -> SysResult {
    mkdirat(AT_FDCWD as u64, path, mode)
}

pub fn unlinkat(dirfd: u64, path: u64, flags: u64) -> SysResult {
    let flags = flags as u32;
    if flags & !g::AT_REMOVEDIR != 0 {
        return Err(errno::EINVAL);
    }
    let p = me()?;
    let path = path_arg(path)?;
    let dir = dir_of(&p, dirfd, &path)?;
    fs::with_fs(|f| if flags & g::AT_REMOVEDIR != 0 { f.rmdir(dir, &path) } else { f.unlink(dir, &path) })?;
    Ok(0)
}

pub fn unlink(path: u64) -> SysResult {
    unlinkat(AT_FDCWD as u64, path, 0)
}

pub fn rmdir(path: u64) -> SysResult {
    unlinkat(AT_FDCWD as u64, path, u64::from(g::AT_REMOVEDIR))
}

pub fn renameat2(olddir: u64, old: u64, newdir: u64, new: u64, flags: u64) -> SysResult {
    let p = me()?;
    let (old, new) = (path_arg(old)?, path_arg(new)?);
    let (od, nd) = (dir_of(&p, olddir, &old)?, dir_of(&p, newdir, &new)?);
    let flags = flags as u32;
    if flags & !g::RENAME_NOREPLACE != 0 {
        return Err(errno::EINVAL);
    }
    fs::with_fs(|f| {
        if flags & g::RENAME_NOREPLACE != 0 && f.lookup(nd, &new, false).is_ok() {
            return Err(errno::EEXIST);
        }
        f.rename(od, &old, nd, &new)
    })?;
    Ok(0)
}

pub fn rename(old: u64, new: u64) -> SysResult {
    renameat2(AT_FDCWD as u64, old, AT_FDCWD as u64, new, 0)
}

pub fn linkat(olddir: u64, old: u64, newdir: u64, new: u64, _flags: u64) -> SysResult {
    let p = me()?;
    let (old, new) = (path_arg(old)?, path_arg(new)?);
    let (od, nd) = (dir_of(&p, olddir, &old)?, dir_of(&p, newdir, &new)?);
    fs::with_fs(|f| f.link_at(od, &old, nd, &new))?;
    Ok(0)
}

pub fn link(old: u64, new: u64) -> SysResult {
    linkat(AT_FDCWD as u64, old, AT_FDCWD as u64, new, 0)
}

pub fn symlinkat(target: u64, dirfd: u64, path: u64) -> SysResult {
    let p = me()?;
    let (target, path) = (path_arg(target)?, path_arg(path)?);
    let dir = dir_of(&p, dirfd, &path)?;
    fs::with_fs(|f| f.symlink(&target, dir, &path))?;
    Ok(0)
}

pub fn symlink(target: u64, path: u64) -> SysResult {
    symlinkat(target, AT_FDCWD as u64, path)
}

pub fn readlinkat(dirfd: u64, path: u64, buf: u64, size: u64) -> SysResult {
    if (size as i64) <= 0 {
        return Err(errno::EINVAL);
    }
    let p = me()?;
    let path = path_arg(path)?;
    let dir = dir_of(&p, dirfd, &path)?;
    let target = match fs::proc::lookup(dir, &path, false)? {
        Some(ProcNode::Link(t)) => t,
        Some(_) => return Err(errno::EINVAL),
        None => fs::with_fs(|f| f.lookup(dir, &path, false).and_then(|i| f.readlink(i).map(String::from)))?,
    };
    let n = target.len().min(size as usize);
    put(buf, &target.as_bytes()[..n])?;
    Ok(n as u64)
}

pub fn readlink(path: u64, buf: u64, size: u64) -> SysResult {
    readlinkat(AT_FDCWD as u64, path, buf, size)
}

pub fn fchmodat(dirfd: u64, path: u64, mode: u64) -> SysResult {
    let p = me()?;
    let path = path_arg(path)?;
    let dir = dir_of(&p, dirfd, &path)?;
    fs::with_fs(|f| f.lookup(dir, &path, true).and_then(|i| f.chmod(i, mode as u32 & 0o7777)))?;
    Ok(0)
}

pub fn chmod(path: u64, mode: u64) -> SysResult {
    fchmodat(AT_FDCWD as u64, path, mode)
}

pub fn umask(mask: u64) -> SysResult {
    Ok(u64::from(me()?.fs.set_umask(mask as u32)))
}

pub fn pipe2(fds: u64, flags: u64) -> SysResult {
    let flags = flags as u32;
    if flags & !(g::O_CLOEXEC | g::O_NONBLOCK | g::O_DIRECT) != 0 {
        return Err(errno::EINVAL);
    }
    let p = me()?;
    let pipe = Arc::new(PipeObj::new());
    let r = Arc::new(File::pipe_end(pipe.clone(), false, flags));
    let w = Arc::new(File::pipe_end(pipe, true, flags));
    let cloexec = flags & g::O_CLOEXEC != 0;
    let (rfd, wfd) = p.files().with(|t| {
        let rfd = t.alloc(r, cloexec).map_err(|e| (e, None))?;
        match t.alloc(w, cloexec) {
            Ok(wfd) => Ok((rfd, wfd)),
            Err(e) => {
                // Handed back to be dropped outside the lock, below.
                Err((e, t.close(rfd).ok()))
            }
        }
    }).map_err(|(e, closed): (u32, Option<Arc<File>>)| {
        drop(closed);
        e
    })?;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&rfd.to_ne_bytes());
    out[4..].copy_from_slice(&wfd.to_ne_bytes());
    if put(fds, out).is_err() {
        let _ = p.files().close(rfd);
        let _ = p.files().close(wfd);
        return Err(errno::EFAULT);
    }
    Ok(0)
}

pub fn pipe(fds: u64) -> SysResult {
    pipe2(fds, 0)
}

pub fn prlimit64(pid: u64, resource: u64, new: u64, old: u64) -> SysResult {
    let p = me()?;
    if pid != 0 && pid != u64::from(p.pid()) {
        return Err(errno::ESRCH);
    }
    let resource = resource as u32;
    let new = if new != 0 {
        let mut b = [0u8; 16];
        usercopy::copy_from_user(&mut b, new).map_err(|_| errno::EFAULT)?;
        Some(RLimit::from_bytes(&b))
    } else {
        None
    };
    let prev = {
        let mut l = p.limits.lock();
        let prev = l.get(resource)?;
        if let Some(n) = new {
            l.set(resource, n)?;
        }
        prev
    };
    if let Some(n) = new
        && resource == g::RLIMIT_NOFILE
    {
        p.files().set_limit(n.cur.min(abi::limits::NR_OPEN) as usize);
    }
    if old != 0 {
        put(old, prev.to_bytes())?;
    }
    Ok(0)
}

pub fn getrlimit(resource: u64, old: u64) -> SysResult {
    prlimit64(0, resource, 0, old)
}

pub fn setrlimit(resource: u64, new: u64) -> SysResult {
    prlimit64(0, resource, new, 0)
}

pub fn sysinfo(buf: u64) -> SysResult {
    let (free, total) = crate::mm::frames::stats();
    let procs = process::list().len();
    let info = abi::limits::SysInfo {
        uptime_s: (crate::time::now_ns() / 1_000_000_000) as i64,
        loads_fixed11: fs::proc::load_average().avg,
        total_ram: total as u64 * 4096,
        free_ram: free as u64 * 4096,
        procs: procs.min(usize::from(u16::MAX)) as u16,
        ..Default::default()
    };
    put(buf, info.to_bytes())?;
    Ok(0)
}

/// The path (or with `AT_EMPTY_PATH`, or a null path as `utimensat` allows, the descriptor) a
/// metadata call names must exist; what it would change is not kept.
fn must_exist(dirfd: u64, path: u64, flags: u32) -> SysResult {
    let p = me()?;
    if path == 0 {
        p.files().get(dirfd as i32)?;
        return Ok(0);
    }
    let path = path_arg(path)?;
    if path.is_empty() && flags & g::AT_EMPTY_PATH != 0 {
        if dirfd as i32 != AT_FDCWD {
            p.files().get(dirfd as i32)?;
        }
        return Ok(0);
    }
    let dir = dir_of(&p, dirfd, &path)?;
    stat_path(dir, &path, flags & g::AT_SYMLINK_NOFOLLOW == 0)?;
    Ok(0)
}

/// `utimensat`: the file must exist; its times are not changed (the RAM filesystem stamps
/// modifications itself and has no call to set them: a trade-off `touch` on an existing file
/// shows).
pub fn utimensat(dirfd: u64, path: u64, _times: u64, flags: u64) -> SysResult {
    if flags as u32 & !(g::AT_SYMLINK_NOFOLLOW | g::AT_EMPTY_PATH) != 0 {
        return Err(errno::EINVAL);
    }
    must_exist(dirfd, path, flags as u32)
}

/// `fchownat` and friends: everything belongs to root here, and stays so.
pub fn fchownat(dirfd: u64, path: u64, _uid: u64, _gid: u64, flags: u64) -> SysResult {
    must_exist(dirfd, path, flags as u32)
}

pub fn chown(path: u64, uid: u64, gid: u64) -> SysResult {
    fchownat(AT_FDCWD as u64, path, uid, gid, 0)
}

pub fn lchown(path: u64, uid: u64, gid: u64) -> SysResult {
    fchownat(AT_FDCWD as u64, path, uid, gid, u64::from(g::AT_SYMLINK_NOFOLLOW))
}

/// `fchown`, `fsync`, `fdatasync`, `flock`: the descriptor must be open; nothing else to do for
/// files that live in memory.
pub fn fd_only(fd: u64) -> SysResult {
    file(fd)?;
    Ok(0)
}

pub fn fchmod(fd: u64, mode: u64) -> SysResult {
    let f = file(fd)?;
    match f.node {
        fs::Node::Inode(ino) => fs::with_fs(|x| x.chmod(ino, mode as u32 & 0o7777))?,
        _ => return Err(errno::EPERM),
    }
    Ok(0)
}

/// The `struct statfs` of the RAM filesystem (as Linux's tmpfs: memory is its size) or of
/// `/proc`.
fn statfs_bytes(proc: bool) -> Vec<u8> {
    use core::mem::{offset_of, size_of};
    let (free, total) = crate::mm::frames::stats();
    let inodes = fs::with_fs(|f| f.inode_count()) as u64;
    let mut b = vec![0u8; size_of::<g::statfs>()];
    let mut put = |at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    let (kind, blocks, bfree, files, ffree) =
        if proc { (g::PROC_SUPER_MAGIC, 0, 0, 0, 0) } else { (g::TMPFS_MAGIC, total as u64, free as u64, inodes + free as u64, free as u64) };
    put(offset_of!(g::statfs, f_type), u64::from(kind));
    put(offset_of!(g::statfs, f_bsize), 4096);
    put(offset_of!(g::statfs, f_blocks), blocks);
    put(offset_of!(g::statfs, f_bfree), bfree);
    put(offset_of!(g::statfs, f_bavail), bfree);
    put(offset_of!(g::statfs, f_files), files);
    put(offset_of!(g::statfs, f_ffree), ffree);
    put(offset_of!(g::statfs, f_namelen), abi::ramfs::NAME_MAX as u64);
    put(offset_of!(g::statfs, f_frsize), 4096);
    b
}

pub fn statfs(path: u64, buf: u64) -> SysResult {
    let p = me()?;
    let path = path_arg(path)?;
    let dir = dir_of(&p, AT_FDCWD as u64, &path)?;
    let proc = fs::proc::lookup(dir, &path, true)?.is_some();
    if !proc {
        stat_path(dir, &path, true)?;
    }
    put(buf, statfs_bytes(proc))?;
    Ok(0)
}

pub fn fstatfs(fd: u64, buf: u64) -> SysResult {
    let f = file(fd)?;
    let proc = matches!(f.node, fs::Node::Text(_) | fs::Node::Listing(_));
    put(buf, statfs_bytes(proc))?;
    Ok(0)
}
