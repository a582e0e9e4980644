//! Console input and output: read, write, readv, writev, and ioctl's terminal requests. File
//! descriptors 0, 1 and 2 are the console, a terminal (`crate::tty`); there is no other file yet.

use abi::linux::{errno, general::iovec};
use arch::usercopy;

use super::SysResult;

/// Most bytes one call moves (Linux's MAX_RW_COUNT is about 2 GiB; this keeps a call short).
const MAX_IO: u64 = 1 << 20;

fn console_out(fd: u64) -> Result<(), u32> {
    match fd {
        1 | 2 => Ok(()),
        _ => Err(errno::EBADF),
    }
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

pub fn write(fd: u64, buf: u64, len: u64) -> SysResult {
    console_out(fd)?;
    let len = len.min(MAX_IO);
    let mut chunk = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        if usercopy::copy_from_user(&mut chunk[..n], buf.wrapping_add(done)).is_err() {
            return if done == 0 { Err(errno::EFAULT) } else { Ok(done) };
        }
        console_write(&chunk[..n]);
        done += n as u64;
    }
    Ok(done)
}

/// Console input through the line discipline (fd 0; Linux lets fds 1 and 2 of a terminal read too,
/// but ours are the console only by convention).
pub fn read(fd: u64, buf: u64, len: u64) -> SysResult {
    if fd != 0 {
        return Err(errno::EBADF);
    }
    if len == 0 {
        return Ok(0);
    }
    // One canonical line is at most 4 KiB; a raw read takes what is there, so a page bounds a call.
    let mut kbuf = alloc::vec![0u8; len.min(4096) as usize];
    let n = crate::tty::read(&mut kbuf, false)?;
    usercopy::copy_to_user(buf, &kbuf[..n]).map_err(|_| errno::EFAULT)?;
    Ok(n as u64)
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

pub fn writev(fd: u64, iov: u64, count: u64) -> SysResult {
    console_out(fd)?;
    if count > IOV_MAX {
        return Err(errno::EINVAL);
    }
    let mut total = 0u64;
    for i in 0..count {
        let (base, len) = iovec_at(iov, i)?;
        if len > i64::MAX as u64 {
            return Err(errno::EINVAL);
        }
        match write(fd, base, len) {
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

/// Reads into the first non-empty buffer only: a terminal read returns at most a line anyway.
pub fn readv(fd: u64, iov: u64, count: u64) -> SysResult {
    if fd != 0 {
        return Err(errno::EBADF);
    }
    if count > IOV_MAX {
        return Err(errno::EINVAL);
    }
    for i in 0..count {
        let (base, len) = iovec_at(iov, i)?;
        if len > 0 {
            return read(fd, base, len);
        }
    }
    Ok(0)
}

/// The console's terminal requests (termios, window size, foreground group, FIONREAD).
pub fn ioctl(fd: u64, cmd: u64, arg: u64) -> SysResult {
    match fd {
        0..=2 => crate::tty::ioctl(cmd as u32, arg),
        _ => Err(errno::EBADF),
    }
}
