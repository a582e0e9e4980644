//! Control registers and EFER: reads are safe, writes are unsafe with the invariant argued here once
//! (SDM vol. 3A, 2.5 "Control Registers"; EFER: 2.2.1).
//!
//! The flag constants are the bits the kernel sets; values travel as plain `u64`s so that a CPU's
//! CR0 and CR4 can be copied to another (the APs take the boot CPU's).
#![cfg(target_os = "none")]

use x86_64::registers::{
    control::{Cr0, Cr2, Cr3, Cr4, Cr4Flags},
    model_specific::{Efer, EferFlags},
};

/// CR0.WP: supervisor writes honour read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// CR4.PGE: global pages.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.PCIDE: CR3 carries a process-context identifier.
pub const CR4_PCIDE: u64 = 1 << 17;
/// CR4.SMEP: the kernel never executes user pages.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP: the kernel touches user pages only inside STAC/CLAC.
pub const CR4_SMAP: u64 = 1 << 21;

pub fn cr0() -> u64 {
    Cr0::read_raw()
}

pub fn cr2() -> u64 {
    Cr2::read_raw()
}

pub fn cr4() -> u64 {
    Cr4::read_raw()
}

/// CR3 as a whole: the PML4's physical address and, in bits 0-11, the PCID (or cache flags).
pub fn cr3() -> u64 {
    let (frame, low) = Cr3::read_raw();
    frame.start_address().as_u64() | u64::from(low)
}

/// The physical address of the loaded PML4 (CR3 without its low 12 bits).
pub fn cr3_root() -> u64 {
    Cr3::read_raw().0.start_address().as_u64()
}

/// Write CR0.
///
/// # Safety
/// `value` keeps protected mode, paging and caching as the running code needs them: only
/// protection bits (WP) or the values another CPU of this kernel runs with may change.
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: per the caller.
    unsafe { Cr0::write_raw(value) };
}

/// Write CR4.
///
/// # Safety
/// Every bit set is supported by this CPU; PAE stays set; PCIDE is set only while CR3's low 12
/// bits are zero; SMEP/SMAP only while the kernel neither executes nor touches user pages outside
/// STAC/CLAC. Toggling PGE flushes the TLB, which is always sound.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: per the caller.
    unsafe { Cr4::write_raw(value) };
}

/// Toggle CR4.PGE off and on again: flushes every TLB entry of every PCID, global ones and the
/// paging-structure caches included (SDM 4.10.4.1). Every x86-64 processor has PGE.
pub fn flush_tlb_with_pge_toggle() {
    let cr4 = Cr4::read();
    // SAFETY: any change of CR4.PGE only flushes; the second write restores the bit, so nothing
    // else changes.
    unsafe {
        Cr4::write(cr4 ^ Cr4Flags::PAGE_GLOBAL);
        Cr4::write(cr4);
    }
}

/// Set EFER.NXE: page-table bit 63 means no-execute from now on.
///
/// # Safety
/// The CPU supports NX (CPUID 8000_0001h EDX bit 20), and no loaded table sets bit 63 where it
/// should mean something else (it is reserved while NXE is clear, so no valid table sets it).
pub unsafe fn enable_nx() {
    // SAFETY: per the caller.
    unsafe { Efer::update(|e| e.insert(EferFlags::NO_EXECUTE_ENABLE)) };
}

/// EFER.NXE is set.
pub fn nx_enabled() -> bool {
    Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE)
}
