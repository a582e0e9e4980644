//! This CPU's interrupt flag (RFLAGS.IF): reading it, and CLI/STI (SDM vol. 2B).
//!
//! Turning interrupts off or on is memory-safe by itself; what depends on it (per-CPU borrows,
//! locks an interrupt handler also takes) is argued where it is relied on.
#![cfg(target_os = "none")]

use x86_64::instructions::interrupts as x86;

/// Interrupts are enabled on this CPU.
#[inline]
pub fn are_enabled() -> bool {
    x86::are_enabled()
}

/// CLI.
#[inline]
pub fn disable() {
    x86::disable();
}

/// STI.
#[inline]
pub fn enable() {
    x86::enable();
}

/// STI alone, for restoring the flag at the end of a section run with interrupts off (Linux's
/// `local_irq_restore` is the same one instruction). [`enable`] adds a NOP so that the STI's
/// interrupt shadow (the one instruction after it runs before a pending interrupt is taken) ends
/// inside it; here the shadow covers whatever instruction follows, which only delays a pending
/// interrupt by that instruction. Do not follow it directly with [`disable`]: with no instruction
/// between them the shadow leaves no window for an interrupt.
#[inline]
pub fn restore_enabled() {
    // SAFETY: STI only sets RFLAGS.IF; it touches no memory (no `nomem`, so the compiler does not
    // move memory accesses across it, as across a lock release).
    unsafe { core::arch::asm!("sti", options(preserves_flags, nostack)) };
}

/// Run `f` with interrupts off, then restore the flag as it was.
#[inline]
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    x86::without_interrupts(f)
}
