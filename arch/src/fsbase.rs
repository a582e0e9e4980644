//! The FS and GS bases of user threads. FS is their thread pointer (`arch_prctl(ARCH_SET_FS)`,
//! `clone(CLONE_SETTLS)`); GS is theirs to use as they like (`arch_prctl(ARCH_SET_GS)`, WRGSBASE).
//! The kernel itself never uses FS, and uses GS only as its per-CPU pointer, with the user's GS base
//! parked in IA32_KERNEL_GS_BASE (C000_0102h) while the kernel runs (`swapgs` at every entry from and
//! exit to ring 3).
//!
//! CR4.FSGSBASE is turned on at [`init_cpu`] where CPUID.(EAX=7,ECX=0):EBX[0] says the CPU has it
//! (SDM vol. 3A, 2.5; vol. 2, RDFSBASE/WRFSBASE). Then:
//! - the bases are read and written with RDFSBASE/WRFSBASE/RDGSBASE/WRGSBASE, which under QEMU TCG
//!   are plain loads and stores of the CPU state, where WRMSR ends the translation block and calls a
//!   helper, and on hardware cost a few cycles instead of a serialising MSR write;
//! - user code may run WRFSBASE and WRGSBASE itself, so the bases are per-thread state the kernel's
//!   copy does not track: the scheduler reads both back from the CPU when a user thread leaves it
//!   ([`user_bases`]) and loads the next one's ([`load_user_bases`]);
//! - a user may load a kernel-half GS base, so the paranoid trap entry ([`crate::trap`]) can no
//!   longer tell user GS from kernel GS by the sign of the base: with FSGSBASE on it saves the
//!   interrupted GS base and loads this CPU's own one unconditionally, and puts the saved one back
//!   on exit, finding the kernel's base in a slot at the top of its IST stack ([`crate::gdt`]).
//!
//! Without FSGSBASE (QEMU's default `qemu64` model lacks it) the FS base goes through MSR
//! IA32_FS_BASE (C000_0100h) at each switch to a user thread, as the kernel's copy is then the only
//! way it changes, and the user's GS base stays 0.
#![cfg(target_os = "none")]

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::{
    registers::{
        control::{Cr4, Cr4Flags},
        model_specific::{FsBase, GsBase, KernelGsBase, Msr},
    },
    structures::tss::TaskStateSegment,
};

/// Whether CR4.FSGSBASE is on (on every CPU alike, set before any AP starts). One byte, read by the
/// paranoid trap entry, which picks its way of handling GS by it.
pub(crate) static ARCH_FSGSBASE: AtomicBool = AtomicBool::new(false);

/// The value is not a canonical address; the CPU would raise #GP on writing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonCanonical;

/// Turn CR4.FSGSBASE on where the CPU has it, after writing this CPU's kernel GS base into the slot
/// of each of its IST stacks that the paranoid entry reads (see [`crate::gdt`]). Returns whether it
/// is on.
///
/// # Safety
/// On every CPU at bring-up, interrupts off, after this CPU's per-CPU block is installed (GS base)
/// and its TSS `tss` loaded, before any user thread runs here; all CPUs are the same model.
pub unsafe fn init_cpu(tss: *const TaskStateSegment) -> bool {
    // SAFETY: per the caller: GS base is this CPU's block, and `tss` is its loaded TSS, whose IST
    // entries name stacks built by `crate::gdt` (with the slot).
    unsafe { crate::gdt::write_ist_kernel_gs(tss, GsBase::read().as_u64()) };
    let has = raw_cpuid::CpuId::new().get_extended_feature_info().is_some_and(|f| f.has_fsgsbase());
    if has {
        // SAFETY: the CPU has the feature (CPUID above). What it allows ring 3 (its own FS and GS
        // bases, any canonical value) is what the paranoid entry and the switch handle from the flag
        // below on; the slots it reads were written above, before the bit is on. The flag is set
        // after CR4 on the boot CPU, and the APs copy CR4 before they load the IDT.
        unsafe { Cr4::update(|f| f.insert(Cr4Flags::FSGSBASE)) };
        ARCH_FSGSBASE.store(true, Ordering::Relaxed);
    }
    has
}

/// Whether the FSGSBASE instructions are on: user threads then own their FS and GS bases.
#[inline(always)]
pub fn enabled() -> bool {
    ARCH_FSGSBASE.load(Ordering::Relaxed)
}

#[inline(always)]
fn canonical(base: u64) -> bool {
    // Canonical: bits 63..47 all equal, i.e. the value survives sign extension from bit 47.
    ((base << 16) as i64 >> 16) as u64 == base
}

/// Set this CPU's FS base (the running user thread's TLS pointer).
///
/// Inline, as every switch to a user thread calls it without FSGSBASE: the canonical test is one
/// sign extension and a compare, and the MSR is written directly (no `VirtAddr` round trip, no call).
#[inline]
pub fn write(base: u64) -> Result<(), NonCanonical> {
    if !canonical(base) {
        return Err(NonCanonical);
    }
    if enabled() {
        // SAFETY: CR4.FSGSBASE is on (set at init_cpu), so WRFSBASE is defined; the value is
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

/// This CPU's FS base: the running user thread's, live (it may have changed it with WRFSBASE).
pub fn read() -> u64 {
    if enabled() {
        let v: u64;
        // SAFETY: CR4.FSGSBASE is on, so RDFSBASE is defined; it only reads a register.
        unsafe { core::arch::asm!("rdfsbase {}", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    } else {
        FsBase::read().as_u64()
    }
}

/// The running user thread's GS base, live: parked in IA32_KERNEL_GS_BASE while the kernel runs.
/// Always 0 without FSGSBASE.
pub fn read_user_gs() -> u64 {
    if enabled() {
        crate::interrupts::without_interrupts(|| {
            // SAFETY: FSGSBASE is on; interrupts are off, as `user_bases` needs.
            unsafe { user_bases() }.1
        })
    } else {
        KernelGsBase::read().as_u64()
    }
}

/// Set the running user thread's GS base, which it finds in GS at its next return to ring 3.
/// Without FSGSBASE user GS bases are not supported (the paranoid entry's sign test relies on them
/// being in the lower half): `Ok(false)`, nothing written.
pub fn write_user_gs(base: u64) -> Result<bool, NonCanonical> {
    if !canonical(base) {
        return Err(NonCanonical);
    }
    if !enabled() {
        return Ok(false);
    }
    crate::interrupts::without_interrupts(|| {
        // SAFETY: FSGSBASE is on; the value is canonical; interrupts are off.
        unsafe { wrgsbase_user(base) };
    });
    Ok(true)
}

/// WRGSBASE of the user's GS base, between two `swapgs` (it is parked in IA32_KERNEL_GS_BASE while
/// the kernel runs).
///
/// # Safety
/// FSGSBASE is on, so WRGSBASE is defined; `base` is canonical, so it does not fault (a fault between
/// the swaps would enter the kernel on the user's GS); interrupts are off, so nothing runs between
/// the swaps (an NMI or machine check takes the paranoid entry, which does not trust GS).
#[inline(always)]
unsafe fn wrgsbase_user(base: u64) {
    // SAFETY: per the caller; GS is the kernel's again after the second swap.
    unsafe { core::arch::asm!("swapgs", "wrgsbase {}", "swapgs", in(reg) base, options(nostack, preserves_flags)) };
}

/// The running (or just stopped) user thread's FS and GS bases, read from the CPU: RDFSBASE, and
/// RDGSBASE between two `swapgs` (the user's base is in IA32_KERNEL_GS_BASE while the kernel runs).
/// Six instructions, none a WRMSR.
///
/// # Safety
/// FSGSBASE is on ([`enabled`]); interrupts are off (between the two `swapgs` GS is the user's: an
/// interrupt there would run the kernel on it; an NMI or machine check takes the paranoid entry,
/// which reloads the kernel's base from its IST slot whatever GS holds).
#[inline(always)]
pub unsafe fn user_bases() -> (u64, u64) {
    let (fs, gs): (u64, u64);
    // SAFETY: per the caller: the instructions are defined, and nothing runs between the swaps.
    unsafe {
        core::arch::asm!(
            "rdfsbase {fs}",
            "swapgs",
            "rdgsbase {gs}",
            "swapgs",
            fs = out(reg) fs,
            gs = out(reg) gs,
            options(nomem, nostack, preserves_flags),
        )
    };
    (fs, gs)
}

/// Load a user thread's FS and GS bases, skipping each whose value the CPU already holds
/// (`cur_fs`, `cur_gs`: what [`user_bases`] read): two threads of one process differ in FS, but
/// most threads leave GS at 0.
///
/// # Safety
/// As for [`user_bases`], and `fs` and `gs` are canonical (a WRGSBASE that faulted between the
/// swaps would enter the kernel on the user's GS); `cur_fs`/`cur_gs` are this CPU's current values
/// (a skipped load must leave the value asked for).
#[inline(always)]
pub unsafe fn load_user_bases(fs: u64, gs: u64, cur_fs: u64, cur_gs: u64) {
    if fs != cur_fs {
        // SAFETY: per the caller; the kernel does not address through FS.
        unsafe { core::arch::asm!("wrfsbase {}", in(reg) fs, options(nostack, preserves_flags)) };
    }
    if gs != cur_gs {
        // SAFETY: per the caller.
        unsafe { wrgsbase_user(gs) };
    }
}

/// How a test raises an NMI on its own CPU: the ICR write of a self-IPI (NMI delivery, "self"
/// shorthand), through the x2APIC MSR or the xAPIC register page.
#[derive(Clone, Copy, Debug)]
pub enum SelfNmi {
    /// WRMSR of `value` to MSR `msr` (x2APIC ICR).
    Msr { msr: u32, value: u64 },
    /// A 32-bit store of `value` at virtual address `addr` (xAPIC ICR low word).
    Mmio { addr: u64, value: u32 },
}

/// The window of [`raise_nmi_on_gs`] and [`raise_nmi_on_swapped_gs`], in one block of assembly that
/// never addresses through GS: `$enter` loads the GS base under test, `$send` (operands after the
/// shared ones) sends the self-NMI, a spin waits until `seen` is nonzero or `spins` pauses pass,
/// and `$leave` puts the real GS base back.
macro_rules! on_test_gs {
    ($enter:literal, $leave:literal, $seen:expr, $spins:expr, $send:literal, $($operands:tt)*) => {
        core::arch::asm!(
            $enter,
            $send,
            "2:",
            "cmp qword ptr [{seen}], 0",
            "jne 3f",
            "pause",
            "dec {spins}",
            "jnz 2b",
            "3:",
            $leave,
            seen = in(reg) $seen,
            spins = inout(reg) $spins => _,
            $($operands)*
            options(nostack),
        )
    };
}

/// [`on_test_gs`] with each way of sending the self-NMI `$nmi`.
macro_rules! on_test_gs_sending {
    ($nmi:expr, $enter:literal, $leave:literal, $seen:expr, $spins:expr, $($operands:tt)*) => {
        match $nmi {
            // SAFETY: per the caller of the function this expands in; WRMSR to the x2APIC ICR sends
            // the self-NMI.
            SelfNmi::Msr { msr, value } => unsafe {
                on_test_gs!($enter, $leave, $seen, $spins, "wrmsr", $($operands)*
                    in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,)
            },
            // SAFETY: as above; the store to the xAPIC ICR's low word sends the self-NMI.
            SelfNmi::Mmio { addr, value } => unsafe {
                on_test_gs!($enter, $leave, $seen, $spins, "mov dword ptr [{addr}], {value:e}", $($operands)*
                    addr = in(reg) addr, value = in(reg) value,)
            },
        }
    };
}

/// For tests of the paranoid entry with FSGSBASE on: load GS base `bogus`, raise the NMI `nmi`
/// describes, and spin until `seen` is nonzero (the handler's mark) or `spins` pauses pass, all in
/// one block of assembly that never addresses through GS; then read the GS base the NMI's return
/// left, put the real one back, and return what was read.
///
/// # Safety
/// FSGSBASE is on; interrupts are off (nothing else may run on the bogus GS); `bogus` is canonical;
/// `nmi` names this CPU's APIC ICR; the NMI handler returns normally for this NMI, and touches
/// nothing through GS but this CPU's block (which the paranoid entry must have loaded).
pub unsafe fn raise_nmi_on_gs(bogus: u64, nmi: SelfNmi, seen: &core::sync::atomic::AtomicU64, spins: u64) -> u64 {
    let after: u64;
    let seen = seen.as_ptr();
    on_test_gs_sending!(nmi, "rdgsbase {saved}\nwrgsbase {bogus}", "rdgsbase {after}\nwrgsbase {saved}", seen, spins,
        saved = out(reg) _, bogus = in(reg) bogus, after = out(reg) after,);
    after
}

/// For tests of the paranoid entry without FSGSBASE: with the user-half GS base `user` parked in
/// IA32_KERNEL_GS_BASE, `swapgs` to it (the state between the system-call exit's `swapgs` and its
/// `sysretq`), raise the NMI `nmi` describes, spin as [`raise_nmi_on_gs`] does, `swapgs` back, and
/// return the parked base the NMI's return left; the parked base is then put back as it was.
///
/// # Safety
/// Interrupts are off (nothing else may run on the user's GS); `user` is canonical and in the
/// lower half (the sign test's premise); `nmi` names this CPU's APIC ICR; the NMI handler returns
/// normally for this NMI, and touches nothing through GS but this CPU's block.
pub unsafe fn raise_nmi_on_swapped_gs(user: u64, nmi: SelfNmi, seen: &core::sync::atomic::AtomicU64, spins: u64) -> u64 {
    let seen = seen.as_ptr();
    let parked = KernelGsBase::read();
    // The kernel reads IA32_KERNEL_GS_BASE only at `swapgs`, and it is put back below before
    // anything else runs here (interrupts are off).
    KernelGsBase::write(x86_64::VirtAddr::new_truncate(user));
    on_test_gs_sending!(nmi, "swapgs", "swapgs", seen, spins,);
    let after = KernelGsBase::read().as_u64();
    KernelGsBase::write(parked);
    after
}
