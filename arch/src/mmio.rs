//! Memory-mapped device registers: volatile 32-bit reads and writes at a virtual address the
//! kernel mapped uncached (the local APIC's page, the I/O APIC's).
#![cfg(target_os = "none")]

/// Read the 32-bit register at `va`.
///
/// # Safety
/// `va` is 4-byte aligned and lies in a mapping of a device's registers that stays mapped, and
/// reading the register disturbs no other driver.
#[inline]
pub unsafe fn read_u32(va: u64) -> u32 {
    // SAFETY: per the caller.
    unsafe { core::ptr::read_volatile(va as *const u32) }
}

/// Write the 32-bit register at `va`.
///
/// # Safety
/// As for [`read_u32`], and the write cannot make the device write to memory the kernel uses.
#[inline]
pub unsafe fn write_u32(va: u64, value: u32) {
    // SAFETY: per the caller.
    unsafe { core::ptr::write_volatile(va as *mut u32, value) }
}

/// Read the 64-bit register at `va` with one 64-bit access.
///
/// # Safety
/// As for [`read_u32`], with `va` 8-byte aligned.
#[inline]
pub unsafe fn read_u64(va: u64) -> u64 {
    // SAFETY: per the caller.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

/// Write the 64-bit register at `va` with one 64-bit access.
///
/// # Safety
/// As for [`write_u32`], with `va` 8-byte aligned.
#[inline]
pub unsafe fn write_u64(va: u64, value: u64) {
    // SAFETY: per the caller.
    unsafe { core::ptr::write_volatile(va as *mut u64, value) }
}
