//! Ring 3 on this CPU: `syscall` enabled (STAR, LSTAR, SFMASK), the TSS known to the entry paths,
//! SMEP and SMAP on where the CPU has them, and CR4.FSGSBASE on where the CPU has it (the FS/GS-base
//! method).
//!
//! Neighbours: `arch::syscall`, `arch::usercopy` and `arch::fsbase` do the work; `arch::gdt` provides
//! the selectors and the TSS; the scheduler glue (`task::platform`) points the entry stack at each
//! user thread's kernel stack when it switches to it.

use arch::gdt::Loaded;

/// Set up this CPU for user mode.
///
/// # Safety
/// On the CPU that loaded `tables`, once, interrupts off, after its per-CPU block is installed (GS)
/// and before any user mapping exists.
pub unsafe fn init_this_cpu(tables: Loaded) {
    // SAFETY: per the caller: GS is this CPU's block, which embeds the entry slots at the arch
    // offset (asserted in percpu); the TSS is this CPU's and lives for ever; the GDT is in the order
    // tables.rs documents.
    unsafe { arch::syscall::init_cpu(tables.kernel_cs, tables.kernel_ss, tables.user_cs, tables.user_ss, tables.tss) }
        .expect("GDT selectors in the order SYSCALL/SYSRET need");
    // SAFETY: every CPU runs this at bring-up, before any user page exists; all CPUs are the same
    // model, so the stac/clac choice is the same everywhere; only arch's copy loops touch user pages.
    let p = unsafe { arch::usercopy::enable_smap_smep() };
    PROTECTIONS.call_once(|| p);
    // SAFETY: per the caller: GS is this CPU's block, `tables.tss` its loaded TSS (its IST entries
    // set by arch::gdt), no user thread has run here yet; all CPUs are the same model.
    let fsgsbase = unsafe { arch::fsbase::init_cpu(tables.tss) };
    FSGSBASE.call_once(|| fsgsbase);
}

static FSGSBASE: spin::Once<bool> = spin::Once::new();

/// Whether the boot CPU turned CR4.FSGSBASE on: user threads may then set their own FS and GS bases
/// (`AT_HWCAP2`'s `HWCAP2_FSGSBASE` tells them).
pub fn fsgsbase() -> bool {
    FSGSBASE.get().copied().unwrap_or(false)
}

static PROTECTIONS: spin::Once<arch::usercopy::Protections> = spin::Once::new();

/// What the boot CPU turned on, for the boot log: (SMEP, SMAP).
pub fn protections() -> (bool, bool) {
    PROTECTIONS.get().map_or((false, false), |p| (p.smep, p.smap))
}
