//! I/O ports: IN and OUT (SDM vol. 2A/2B). Each access is unsafe with one contract, stated once
//! here. The QEMU exit device, the one port write with no memory effect at all, is safe.
#![cfg(target_os = "none")]

use x86_64::instructions::port::Port;

/// IN, one byte.
///
/// # Safety
/// `port` is a device register the caller owns, and reading it (which may change the device's
/// state) disturbs no other driver.
#[inline]
pub unsafe fn read_u8(port: u16) -> u8 {
    // SAFETY: per the caller.
    unsafe { Port::<u8>::new(port).read() }
}

/// IN, four bytes.
///
/// # Safety
/// As for [`read_u8`].
#[inline]
pub unsafe fn read_u32(port: u16) -> u32 {
    // SAFETY: per the caller.
    unsafe { Port::<u32>::new(port).read() }
}

/// OUT, one byte.
///
/// # Safety
/// `port` is a device register the caller owns, and the write cannot make the device write to
/// memory (DMA) or disturb another driver.
#[inline]
pub unsafe fn write_u8(port: u16, value: u8) {
    // SAFETY: per the caller.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// The port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4`).
pub const QEMU_DEBUG_EXIT: u16 = 0xf4;

/// Write `code` to QEMU's `isa-debug-exit` device, which ends QEMU with status `(code << 1) | 1`.
/// On a PC without the device the write goes nowhere.
pub fn qemu_debug_exit(code: u32) {
    // SAFETY: port 0xf4 is the isa-debug-exit device under QEMU and unused on PCs; a write to an
    // absent device is ignored, and the device touches no memory.
    unsafe { Port::<u32>::new(QEMU_DEBUG_EXIT).write(code) };
}
