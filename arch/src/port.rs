//! I/O ports: IN and OUT (SDM vol. 2A/2B). Each access is unsafe with one contract, stated once
//! here. The QEMU exit device and the debug console port, port writes with no memory effect at
//! all, are safe.
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

/// The port of QEMU's (and Bochs') debug console (`-debugcon file:PATH`): each byte written there
/// goes to the host, on a channel separate from the serial console.
pub const DEBUGCON: u16 = 0xe9;

/// Write `bytes` to the debug console port with one `rep outsb` (SDM vol. 2B, OUTS), which QEMU
/// serves in batches rather than one exit per byte. On a PC without the device the bytes go
/// nowhere.
pub fn debugcon_write(bytes: &[u8]) {
    // SAFETY: port 0xe9 is QEMU's debug console and unused on PCs, so the writes disturb no
    // driver and the device touches no memory; `rep outsb` reads `rcx` bytes at `rsi`, which
    // `bytes` covers, and the direction flag is clear as the ABI guarantees between functions.
    unsafe {
        core::arch::asm!(
            "rep outsb",
            inout("rcx") bytes.len() => _,
            inout("rsi") bytes.as_ptr() => _,
            in("dx") DEBUGCON,
            options(nostack, preserves_flags, readonly)
        )
    };
}
