//! The devices of `/dev`: the console (and `/dev/tty`, the same terminal), `null`, `zero`,
//! `random` and `urandom`.
//!
//! The console's behaviour lives with the terminal service above: it registers a [`Console`]
//! ([`set_console`]) whose `read`, `write`, `ioctl`, `readable` this layer calls. Until one is
//! registered, output goes to the kernel console and input is at its end.

use abi::{
    linux::errno,
    poll::{POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM},
    ramfs::{Errno, makedev},
};

/// The terminal behind `/dev/console`, `/dev/tty` and descriptors 0-2 of the first process.
pub trait Console: Sync {
    /// Read input; `nonblock`: `EAGAIN` rather than waiting.
    fn read(&self, out: &mut [u8], nonblock: bool) -> Result<usize, Errno>;
    fn write(&self, data: &[u8]) -> Result<usize, Errno>;
    /// A terminal `ioctl` (`TCGETS`, `TIOCGWINSZ`, ...), with the user's argument address.
    fn ioctl(&self, cmd: u32, arg: u64) -> Result<u64, Errno>;
    /// Whether a read would not block.
    fn readable(&self) -> bool;
    /// Bytes waiting to be read (`FIONREAD`).
    fn pending(&self) -> usize;
}

static CONSOLE: spin::Once<&'static dyn Console> = spin::Once::new();

/// Register the terminal (once, at boot).
pub fn set_console(c: &'static dyn Console) {
    CONSOLE.call_once(|| c);
}

fn console() -> Option<&'static dyn Console> {
    CONSOLE.get().copied()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Console,
    Null,
    Zero,
    Urandom,
}

impl Device {
    /// The driver of a device number (`abi::ramfs::DEVICES`).
    pub fn from_rdev(rdev: u64) -> Option<Self> {
        Some(match rdev {
            r if r == makedev(1, 3) => Device::Null,
            r if r == makedev(1, 5) => Device::Zero,
            r if r == makedev(1, 8) || r == makedev(1, 9) => Device::Urandom,
            r if r == makedev(5, 0) || r == makedev(5, 1) => Device::Console,
            _ => return None,
        })
    }

    pub fn rdev(self) -> u64 {
        match self {
            Device::Console => makedev(5, 1),
            Device::Null => makedev(1, 3),
            Device::Zero => makedev(1, 5),
            Device::Urandom => makedev(1, 9),
        }
    }

    pub fn read(self, out: &mut [u8], nonblock: bool) -> Result<usize, Errno> {
        match self {
            Device::Console => console().map_or(Ok(0), |c| c.read(out, nonblock)),
            Device::Null => Ok(0),
            Device::Zero => {
                out.fill(0);
                Ok(out.len())
            }
            Device::Urandom => {
                fill_random(out);
                Ok(out.len())
            }
        }
    }

    pub fn write(self, data: &[u8]) -> Result<usize, Errno> {
        match self {
            Device::Console => match console() {
                Some(c) => c.write(data),
                None => {
                    crate::cpu::console::lock(false).write_bytes(data);
                    Ok(data.len())
                }
            },
            _ => Ok(data.len()),
        }
    }

    pub fn ioctl(self, cmd: u32, arg: u64) -> Result<u64, Errno> {
        match (self, console()) {
            (Device::Console, Some(c)) => c.ioctl(cmd, arg),
            _ => Err(errno::ENOTTY),
        }
    }

    pub fn poll(self) -> u16 {
        let readable = match self {
            Device::Console => console().is_none_or(|c| c.readable()),
            _ => true,
        };
        (if readable { POLLIN | POLLRDNORM } else { 0 }) | POLLOUT | POLLWRNORM
    }

    pub fn nread(self) -> Result<usize, Errno> {
        match self {
            Device::Console => Ok(console().map_or(0, |c| c.pending())),
            _ => Err(errno::ENOTTY),
        }
    }
}

/// Random bytes for `/dev/urandom`: RDRAND where the CPU has it, else a xorshift stream seeded by
/// the clock (good enough for programs that want varied bytes, not for keys).
fn fill_random(out: &mut [u8]) {
    let mut seed = crate::time::now_ns() | 1;
    for chunk in out.chunks_mut(8) {
        let v = arch::cpu::rdrand64().unwrap_or_else(|| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        });
        chunk.copy_from_slice(&v.to_ne_bytes()[..chunk.len()]);
    }
}
