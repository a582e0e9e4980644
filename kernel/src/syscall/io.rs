//! Reading and writing descriptors: read, write, readv, writev, pread64, pwrite64, ioctl, and the
//! readiness calls poll, ppoll, select, pselect6. Also the kernel's console ([`KernelConsole`]),
//! the terminal behind `/dev/console` until a line discipline replaces it.
//!
//! Bytes go through a kernel buffer of at most [`CHUNK`] bytes per step: a write copies from user
//! memory first (a bad pointer is `EFAULT` before anything is written), a read copies out after the
//! file answered.

use alloc::vec;

use abi::{
    linux::{errno, general::iovec, ioctl as io},
    poll,
};
use arch::{syscall::InSyscall, usercopy};

use super::{SysResult, fs::file};
use crate::{
    fs::{self, File, dev::Console},
    task::uctx::{self, UserCtx},
};

/// Most bytes one call moves (Linux's MAX_RW_COUNT is about 2 GiB; this keeps a call short).
const MAX_IO: u64 = 1 << 20;
/// Bytes moved per step of a long read or write.
const CHUNK: usize = 64 * 1024;
/// A transfer of at most this many bytes goes through a buffer on the stack, not the heap: the
/// bytes of a short message (hackbench's are 64 bytes) cost no allocation. Safe code zeroes the
/// buffer at every call, so it is no larger than those need.
const SMALL: usize = 64;
/// A transfer of at most this many bytes (a pipe ping-pong's byte, an eventfd-sized word) goes
/// through one word on the stack, zeroed by one store.
const WORD: usize = 8;

/// The kernel buffer of one transfer, sized for it: only the variant made is zeroed.
enum Chunk {
    Word([u8; WORD]),
    Small([u8; SMALL]),
    Heap(alloc::vec::Vec<u8>),
}

impl Chunk {
    /// The buffer of a transfer of `len` bytes: at most [`CHUNK`] of them at a time.
    #[inline(always)]
    fn for_len(len: u64) -> Chunk {
        let size = (len as usize).min(CHUNK);
        if size <= WORD {
            Chunk::Word([0; WORD])
        } else if size <= SMALL {
            Chunk::Small([0; SMALL])
        } else {
            Chunk::Heap(vec![0u8; size])
        }
    }

    /// Its bytes for the transfer of `len` bytes it was made for.
    #[inline(always)]
    fn bytes(&mut self, len: u64) -> &mut [u8] {
        let size = (len as usize).min(CHUNK);
        match self {
            Chunk::Word(b) => &mut b[..size],
            Chunk::Small(b) => &mut b[..size],
            Chunk::Heap(v) => v,
        }
    }
}

/// The console behind `/dev/console`, `/dev/tty` and descriptors 0-2: the terminal service
/// (`crate::tty`: line discipline, termios, foreground group), with the output of a process whose
/// console output the tests capture kept in its buffer instead.
pub struct KernelConsole;

pub static CONSOLE: KernelConsole = KernelConsole;

impl Console for KernelConsole {
    fn read(&self, out: &mut [u8], nonblock: bool) -> Result<usize, u32> {
        crate::tty::read(out, nonblock)
    }

    fn write(&self, data: &[u8]) -> Result<usize, u32> {
        crate::tty::check_write()?;
        console_write(data);
        Ok(data.len())
    }

    fn ioctl(&self, cmd: u32, arg: u64) -> Result<u64, u32> {
        crate::tty::ioctl(cmd, arg)
    }

    fn readable(&self) -> bool {
        crate::tty::readable()
    }

    fn pending(&self) -> usize {
        crate::tty::pending()
    }
}

fn put(addr: u64, bytes: &[u8]) -> Result<u64, u32> {
    usercopy::copy_to_user(addr, bytes).map_err(|_| errno::EFAULT)?;
    Ok(0)
}

/// Print `bytes`, or keep them where the process's output is captured.
fn console_write(bytes: &[u8]) {
    if let Some(p) = crate::process::current()
        && let Some(out) = p.captured.lock().as_mut()
    {
        out.extend_from_slice(bytes);
        return;
    }
    let _ = crate::tty::write(bytes);
}

/// Write `len` bytes from user `buf` through `op` (the file's write or positioned write), chunk
/// by chunk; a short write or a failure after some bytes ends the call with the count.
/// `#[inline(always)]`: a pipe's message (`write` above) costs the handler no call of its own.
#[inline(always)]
fn write_with(buf: u64, len: u64, mut op: impl FnMut(&[u8], u64) -> Result<usize, u32>) -> SysResult {
    let len = len.min(MAX_IO);
    let mut buffer = Chunk::for_len(len);
    let chunk = buffer.bytes(len);
    let mut done = 0u64;
    while done < len || len == 0 {
        let n = (len - done).min(chunk.len() as u64) as usize;
        if usercopy::copy_from_user(&mut chunk[..n], buf.wrapping_add(done)).is_err() {
            return if done == 0 { Err(errno::EFAULT) } else { Ok(done) };
        }
        match op(&chunk[..n], done) {
            Ok(w) => {
                done += w as u64;
                if w < n || len == 0 {
                    break;
                }
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// Read up to `len` bytes into user `buf` through `op`: one call of the file for pipes and
/// terminals (a read returns what is there), repeated for files until short.
fn read_with(buf: u64, len: u64, mut op: impl FnMut(&mut [u8], u64) -> Result<usize, u32>) -> SysResult {
    let len = len.min(MAX_IO);
    // A buffer outside user space (or below the lowest mappable address) fails before the file
    // gives anything up (a pipe's bytes would be lost). An unmapped user buffer is found only at the copy, after the read: the trade-off of
    // reading through a kernel buffer.
    if len > 0 && (buf < abi::elf::MIN_USER_ADDR || !usercopy::is_user_range(buf, len as usize)) {
        return Err(errno::EFAULT);
    }
    let mut buffer = Chunk::for_len(len);
    let chunk = buffer.bytes(len);
    let mut done = 0u64;
    loop {
        let want = (len - done).min(chunk.len() as u64) as usize;
        let n = match op(&mut chunk[..want], done) {
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        if usercopy::copy_to_user(buf.wrapping_add(done), &chunk[..n]).is_err() {
            return if done == 0 { Err(errno::EFAULT) } else { Ok(done) };
        }
        done += n as u64;
        if n < want || done == len {
            break;
        }
    }
    Ok(done)
}

fn is_stream(f: &File) -> bool {
    matches!(f.node, fs::Node::PipeRead(_) | fs::Node::PipeWrite(_) | fs::Node::Dev(_))
}

/// The caller's descriptor `fd`, found through its context (no process-table lock). `#[inline]`
/// with the two lookups under it (the process's table handle, the table's slot): the read and
/// write handlers then make no call to find their file.
#[inline]
fn own_file(ctx: &UserCtx, fd: u64) -> Result<alloc::sync::Arc<File>, u32> {
    crate::process::of(ctx).with_files(|t| t.get(fd as i32))
}

/// `#[inline]`: offered to the table's handler in whatever codegen unit it falls (the pipe
/// ping-pong's path), so the handler's frame is the call's only one.
#[inline]
pub fn write(proof: &InSyscall, fd: u64, buf: u64, len: u64) -> SysResult {
    let ctx = uctx::current(proof);
    let f = own_file(ctx, fd)?;
    if len <= WORD as u64 {
        return write_word(ctx, &f, buf, len as usize);
    }
    write_with(buf, len, |b, _| f.write_as(ctx, b))
}

/// [`write_with`] for at most a word (a ping-pong's byte): the one copy in and the one call of the
/// file that its loop makes for a transfer that fits its buffer, without the loop.
/// `#[inline(always)]`, with the file's `write_as`: the handler's frame is the call's only one.
#[inline(always)]
fn write_word(ctx: &UserCtx, f: &File, buf: u64, len: usize) -> SysResult {
    let mut word = [0u8; WORD];
    let data = &mut word[..len];
    usercopy::copy_from_user(data, buf).map_err(|_| errno::EFAULT)?;
    Ok(f.write_as(ctx, data)? as u64)
}

/// `#[inline]`: as [`write`].
#[inline]
pub fn read(proof: &InSyscall, fd: u64, buf: u64, len: u64) -> SysResult {
    let ctx = uctx::current(proof);
    let f = own_file(ctx, fd)?;
    if len <= WORD as u64 {
        return read_word(ctx, &f, buf, len as usize);
    }
    let stream = is_stream(&f);
    read_with(buf, len, |b, done| if stream && done > 0 { Ok(0) } else { f.read_as(ctx, b) })
}

/// [`read_with`] for at most a word: the buffer's test, the one call of the file and the one copy
/// out that its loop makes for a transfer that fits its buffer, without the loop.
/// The range is tested once, before the read ([`usercopy::UserRange`]), not again at the copy.
/// `#[inline(always)]`, as [`write_word`].
#[inline(always)]
fn read_word(ctx: &UserCtx, f: &File, buf: u64, len: usize) -> SysResult {
    if len > 0 && buf < abi::elf::MIN_USER_ADDR {
        return Err(errno::EFAULT);
    }
    let dst = usercopy::UserRange::new(buf, len).ok_or(errno::EFAULT)?;
    let mut word = [0u8; WORD];
    let out = &mut word[..len];
    let n = f.read_as(ctx, out)?;
    usercopy::copy_to_user_range(dst, &out[..n]).map_err(|_| errno::EFAULT)?;
    Ok(n as u64)
}

/// `sendfile(out_fd, in_fd, offset, count)`: copy through a kernel buffer, from `in_fd`'s offset
/// (or from `*offset`, which is then advanced, leaving the file's offset alone) to `out_fd`. Stops
/// at a short read (end of file) or a short write; an error after some bytes ends the call with
/// the count, as `write` does.
pub fn sendfile(out_fd: u64, in_fd: u64, offset: u64, count: u64) -> SysResult {
    let out = file(out_fd)?;
    let inp = file(in_fd)?;
    let mut pos = if offset != 0 {
        let mut raw = [0u8; 8];
        usercopy::copy_from_user(&mut raw, offset).map_err(|_| errno::EFAULT)?;
        let v = i64::from_ne_bytes(raw);
        if v < 0 {
            return Err(errno::EINVAL);
        }
        Some(v)
    } else {
        None
    };
    let count = count.min(MAX_IO);
    let mut chunk = vec![0u8; (count as usize).min(CHUNK)];
    let mut done = 0u64;
    while done < count {
        let want = (count - done).min(chunk.len() as u64) as usize;
        let got = match pos {
            Some(p) => inp.pread(p, &mut chunk[..want]),
            None => inp.read(&mut chunk[..want]),
        };
        let n = match got {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        let w = match out.write(&chunk[..n]) {
            Ok(w) => w,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        done += w as u64;
        if let Some(p) = pos.as_mut() {
            *p += w as i64;
        }
        if w < n {
            // The file's own offset moved past bytes that were not written: put them back (a
            // pipe cannot, and Linux's splice has the same limit for one).
            if pos.is_none() {
                let _ = inp.lseek(-((n - w) as i64), abi::linux::general::SEEK_CUR);
            }
            break;
        }
        if n < want {
            break;
        }
    }
    if let (Some(p), true) = (pos, offset != 0) {
        usercopy::copy_to_user(offset, &p.to_ne_bytes()).map_err(|_| errno::EFAULT)?;
    }
    Ok(done)
}

pub fn pread64(fd: u64, buf: u64, len: u64, offset: u64) -> SysResult {
    let f = file(fd)?;
    if (offset as i64) < 0 {
        return Err(errno::EINVAL);
    }
    read_with(buf, len, |b, done| f.pread(offset as i64 + done as i64, b))
}

pub fn pwrite64(fd: u64, buf: u64, len: u64, offset: u64) -> SysResult {
    let f = file(fd)?;
    if (offset as i64) < 0 {
        return Err(errno::EINVAL);
    }
    write_with(buf, len, |b, done| f.pwrite(offset as i64 + done as i64, b))
}

/// Read the `i`-th `struct iovec` of the array at `iov`.
fn iovec_at(iov: u64, i: u64) -> Result<(u64, u64), u32> {
    let size = core::mem::size_of::<iovec>() as u64;
    let mut raw = [0u8; 16];
    usercopy::copy_from_user(&mut raw, iov.wrapping_add(i * size)).map_err(|_| errno::EFAULT)?;
    let base = u64::from_ne_bytes(raw[..8].try_into().unwrap_or_default());
    let len = u64::from_ne_bytes(raw[8..].try_into().unwrap_or_default());
    Ok((base, len))
}

const IOV_MAX: u64 = abi::linux::general::UIO_MAXIOV as u64;

/// Run `op` over each buffer of the vector until one comes back short.
fn vectored(iov: u64, count: u64, mut op: impl FnMut(u64, u64) -> SysResult) -> SysResult {
    if count > IOV_MAX {
        return Err(errno::EINVAL);
    }
    let mut total = 0u64;
    for i in 0..count {
        let (base, len) = iovec_at(iov, i)?;
        if len > i64::MAX as u64 {
            return Err(errno::EINVAL);
        }
        if len == 0 {
            continue;
        }
        match op(base, len) {
            Ok(n) => {
                total += n;
                if n < len {
                    break;
                }
            }
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(total)
}

pub fn writev(fd: u64, iov: u64, count: u64) -> SysResult {
    let f = file(fd)?;
    vectored(iov, count, |b, l| write_with(b, l, |c, _| f.write(c)))
}

pub fn readv(fd: u64, iov: u64, count: u64) -> SysResult {
    let f = file(fd)?;
    let stream = is_stream(&f);
    let mut any = false;
    vectored(iov, count, |b, l| {
        // A pipe or terminal read returns what is there: only the first buffer may wait.
        if stream && any {
            let ready = f.poll() & poll::POLLIN != 0;
            if !ready {
                return Ok(0);
            }
        }
        any = true;
        read_with(b, l, |c, done| if stream && done > 0 { Ok(0) } else { f.read(c) })
    })
}

pub fn ioctl(fd: u64, cmd: u64, arg: u64) -> SysResult {
    let f = file(fd)?;
    let cmd = cmd as u32;
    match cmd {
        io::FIONREAD => {
            let n = f.nread()?;
            put(arg, &(n.min(i32::MAX as usize) as i32).to_ne_bytes())
        }
        io::FIONBIO => {
            let mut v = [0u8; 4];
            usercopy::copy_from_user(&mut v, arg).map_err(|_| errno::EFAULT)?;
            let fl = f.getfl();
            let nb = abi::linux::general::O_NONBLOCK;
            f.setfl(if i32::from_ne_bytes(v) != 0 { fl | nb } else { fl & !nb });
            Ok(0)
        }
        io::FIOCLEX | io::FIONCLEX => {
            let p = super::fs::me()?;
            p.files().with(|t| t.set_cloexec(fd as i32, cmd == io::FIOCLEX))?;
            Ok(0)
        }
        _ => match &f.node {
            fs::Node::Dev(d) => d.ioctl(cmd, arg),
            _ => Err(errno::ENOTTY),
        },
    }
}

/// The readiness of descriptor `fd` of the table, `None` when it is not open.
fn readiness(files: &fs::Files, fd: i32) -> Option<u16> {
    files.get(fd).ok().map(|f| f.poll())
}

/// The common loop of poll and select: `round` checks every descriptor and says how many are
/// ready; with none, sleep until a readiness change or the deadline. The call counts as a poller
/// ([`fs::polling`]) from before its first sample of the generation, so every change after that
/// bumps it.
fn wait_ready<T>(timeout_ns: Option<u64>, mut round: impl FnMut() -> Result<(usize, T), u32>) -> Result<(usize, T), u32> {
    let deadline = timeout_ns.map(|t| crate::time::now_ns().saturating_add(t));
    let _polling = fs::polling();
    loop {
        let seen = fs::poll_generation();
        let (n, out) = round()?;
        if n > 0 || deadline.is_some_and(|d| crate::time::now_ns() >= d) {
            return Ok((n, out));
        }
        fs::poll_wait(seen, deadline)?;
    }
}

fn do_poll(fds: u64, nfds: u64, timeout_ns: Option<u64>) -> SysResult {
    let p = super::fs::me()?;
    let limit = p.files().limit();
    if nfds > limit as u64 {
        return Err(errno::EINVAL);
    }
    let mut raw = vec![0u8; nfds as usize * 8];
    usercopy::copy_from_user(&mut raw, fds).map_err(|_| errno::EFAULT)?;
    let mut list = poll::parse_pollfds(&raw, nfds, limit)?;
    let files = p.files();
    drop(p);
    let (n, ()) = wait_ready(timeout_ns, || Ok((poll::poll_round(&mut list, |fd| readiness(&files, fd)), ())))?;
    usercopy::copy_to_user(fds, &poll::encode_pollfds(&list)).map_err(|_| errno::EFAULT)?;
    Ok(n as u64)
}

pub fn poll(fds: u64, nfds: u64, timeout_ms: u64) -> SysResult {
    do_poll(fds, nfds, poll::poll_timeout_ns(timeout_ms as i32))
}

/// A `struct timespec` argument as nanoseconds (`None` for a null pointer: wait for ever).
fn timespec_arg(addr: u64) -> Result<Option<u64>, u32> {
    if addr == 0 {
        return Ok(None);
    }
    let mut b = [0u8; 16];
    usercopy::copy_from_user(&mut b, addr).map_err(|_| errno::EFAULT)?;
    let sec = i64::from_ne_bytes(b[..8].try_into().unwrap_or_default());
    let nsec = i64::from_ne_bytes(b[8..].try_into().unwrap_or_default());
    poll::timespec_ns(sec, nsec).map(Some)
}

/// `ppoll`: the signal mask argument is accepted and not applied (signal delivery lives in the
/// signal service, which swaps the mask here at merge).
pub fn ppoll(fds: u64, nfds: u64, tsp: u64, _sigmask: u64, _size: u64) -> SysResult {
    do_poll(fds, nfds, timespec_arg(tsp)?)
}

fn do_select(nfds: u64, r: u64, w: u64, e: u64, timeout_ns: Option<u64>) -> SysResult {
    let nfds_i = nfds as i64;
    if !(0..=poll::FD_SETSIZE as i64).contains(&nfds_i) {
        return Err(errno::EINVAL);
    }
    let n = nfds as usize;
    let read_set = |addr: u64| -> Result<Option<poll::FdSet>, u32> {
        if addr == 0 {
            return Ok(None);
        }
        let mut b = vec![0u8; n.div_ceil(64) * 8];
        usercopy::copy_from_user(&mut b, addr).map_err(|_| errno::EFAULT)?;
        poll::FdSet::from_bytes(&b, n).map(Some)
    };
    let (rs, ws, es) = (read_set(r)?, read_set(w)?, read_set(e)?);
    let interest = poll::select_interest(nfds_i, rs.as_ref(), ws.as_ref(), es.as_ref())?;
    let files = super::fs::me()?.files();
    let (count, sets) = wait_ready(timeout_ns, || {
        let (a, b, c, k) = poll::select_round(n, &interest, |fd| readiness(&files, fd))?;
        Ok((k, (a, b, c)))
    })?;
    for (addr, set) in [(r, &sets.0), (w, &sets.1), (e, &sets.2)] {
        if addr != 0 {
            usercopy::copy_to_user(addr, &set.to_bytes()).map_err(|_| errno::EFAULT)?;
        }
    }
    Ok(count as u64)
}

pub fn select(nfds: u64, r: u64, w: u64, e: u64, tv: u64) -> SysResult {
    let timeout = if tv == 0 {
        None
    } else {
        let mut b = [0u8; 16];
        usercopy::copy_from_user(&mut b, tv).map_err(|_| errno::EFAULT)?;
        let sec = i64::from_ne_bytes(b[..8].try_into().unwrap_or_default());
        let usec = i64::from_ne_bytes(b[8..].try_into().unwrap_or_default());
        Some(poll::timeval_ns(sec, usec)?)
    };
    do_select(nfds, r, w, e, timeout)
}

/// `pselect6`: as `select` with a timespec; the signal mask is not applied (see [`ppoll`]).
pub fn pselect6(nfds: u64, r: u64, w: u64, e: u64, tsp: u64, _sig: u64) -> SysResult {
    do_select(nfds, r, w, e, timespec_arg(tsp)?)
}
