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

/// Run `f` with interrupts off, then restore the flag as it was.
#[inline]
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    x86::without_interrupts(f)
}
