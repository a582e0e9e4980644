//! The FS base of user threads (their thread pointer: `arch_prctl(ARCH_SET_FS)`, `clone(CLONE_SETTLS)`),
//! read and written with RDFSBASE/WRFSBASE where CR4.FSGSBASE is on, else through MSR IA32_FS_BASE
//! (C000_0100h; SDM vol. 3A, 3.4.4.1). The kernel itself never uses FS, so the scheduler saves and
//! restores the value at each switch between user threads.
//!
//! Whether CR4.FSGSBASE is on is the kernel's choice, read here from CR4 at [`init_cpu`]. Turning it on
//! also lets user code run WRGSBASE, so a user could load a kernel-half GS base; the trap entry's
//! paranoid path ([`crate::trap`]) then saves and reloads GS base unconditionally (the flag below
//! picks that way), but user GS bases are not yet per-thread state: leave FSGSBASE off until the
//! switch saves and restores them.
#![cfg(target_os = "none")]

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::{
    registers::{
        control::{Cr4, Cr4Flags},
        model_specific::{FsBase, GsBase, Msr},
    },
    structures::tss::TaskStateSegment,
};

/// Whether CR4.FSGSBASE is on (on every CPU alike). One byte, read by the paranoid trap entry too,
/// which picks its way of handling GS by it.
pub(crate) static ARCH_FSGSBASE: AtomicBool = AtomicBool::new(false);

/// The value is not a canonical address; the CPU would raise #GP on writing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonCanonical;

/// Learn from CR4 whether the FSGSBASE instructions may be used, after writing this CPU's kernel GS
/// base into the slot of each of its IST stacks that the paranoid entry reads (see [`crate::gdt`]).
///
/// # Safety
/// On every CPU at bring-up (they all have the same setting), interrupts off, after this CPU's
/// per-CPU block is installed (GS base) and its TSS `tss` loaded.
pub unsafe fn init_cpu(tss: *const TaskStateSegment) {
    // SAFETY: per the caller: GS base is this CPU's block, and `tss` is its loaded TSS, whose IST
    // entries name stacks built by `crate::gdt` (with the slot).
    unsafe { crate::gdt::write_ist_kernel_gs(tss, GsBase::read().as_u64()) };
    let on = Cr4::read().contains(Cr4Flags::FSGSBASE);
    ARCH_FSGSBASE.store(on, Ordering::Relaxed);
}

/// Set this CPU's FS base (the running user thread's TLS pointer).
///
/// Inline, as every switch to a user thread calls it: the canonical test is one sign extension
/// and a compare, and the MSR is written directly (no `VirtAddr` round trip, no call).
#[inline]
pub fn write(base: u64) -> Result<(), NonCanonical> {
    // Canonical: bits 63..47 all equal, i.e. the value survives sign extension from bit 47.
    if ((base << 16) as i64 >> 16) as u64 != base {
        return Err(NonCanonical);
    }
    if ARCH_FSGSBASE.load(Ordering::Relaxed) {
        // SAFETY: CR4.FSGSBASE is on (checked at init_cpu), so WRFSBASE is defined; the value is
        // canonical; the kernel does not address through FS.
        unsafe { core::arch::asm!("wrfsbase {}", in(reg) base, options(nostack, preserves_flags)) };
    } else {
        // SAFETY: IA32_FS_BASE exists on every x86_64 CPU; the value is canonical (tested above),
        // so WRMSR does not fault; the kernel does not address through FS.
        unsafe { Msr::new(FS_BASE_MSR).write(base) };
    }
    Ok(())
}

/// IA32_FS_BASE (SDM vol. 4, table 2-2).
const FS_BASE_MSR: u32 = 0xC000_0100;

/// This CPU's FS base.
pub fn read() -> u64 {
    if ARCH_FSGSBASE.load(Ordering::Relaxed) {
        let v: u64;
        // SAFETY: CR4.FSGSBASE is on, so RDFSBASE is defined; it only reads a register.
        unsafe { core::arch::asm!("rdfsbase {}", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    } else {
        FsBase::read().as_u64()
    }
}
