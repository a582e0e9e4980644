//! Model-specific registers: RDMSR and WRMSR (SDM vol. 4 lists them). Each access is unsafe with
//! one contract, stated once here; the MSR numbers the kernel uses are named below.
#![cfg(target_os = "none")]

use x86_64::registers::model_specific::Msr;

/// IA32_APIC_BASE: the local APIC's physical base and its enable and x2APIC bits (SDM 11.4.4).
pub const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_TSC_DEADLINE: the local APIC timer's deadline in TSC-deadline mode (SDM 11.5.4.1).
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// The first x2APIC register; register `r` (xAPIC offset `r << 4`) is MSR `0x800 + r` (SDM 11.12).
pub const X2APIC_BASE: u32 = 0x800;

/// RDMSR.
///
/// # Safety
/// This CPU implements `msr` (a missing one raises #GP), and reading it has no side effect the
/// caller has not accounted for.
#[inline]
pub unsafe fn read(msr: u32) -> u64 {
    // SAFETY: per the caller.
    unsafe { Msr::new(msr).read() }
}

/// WRMSR.
///
/// # Safety
/// This CPU implements `msr`, `value` is valid for it (reserved bits clear), and the effect of the
/// write keeps the running kernel's memory and control flow as they were (an APIC register, a
/// timer deadline: not a system-call entry or a segment base the kernel relies on).
#[inline]
pub unsafe fn write(msr: u32, value: u64) {
    // SAFETY: per the caller.
    unsafe { Msr::new(msr).write(value) }
}
