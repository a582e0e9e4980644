//! The kernel heap: the `talc` allocator behind an interrupts-off spin lock.
//!
//! It starts on an arena in `.bss`, so allocation works from the first line of common code (the
//! per-CPU tables of the application processors, the ACPI copies); `grow` hands it more memory from
//! the frame allocator once that exists.

use talc::{TalcLock, source::Claim};

use crate::irqlock::RawIrqSpin;

const BOOT_ARENA_BYTES: usize = 8 << 20;

#[repr(C, align(4096))]
struct Arena([u8; BOOT_ARENA_BYTES]);

static mut BOOT_ARENA: Arena = Arena([0; BOOT_ARENA_BYTES]);

#[global_allocator]
static HEAP: TalcLock<RawIrqSpin, Claim> =
    // SAFETY: BOOT_ARENA is used by nothing but this allocator, which claims it once on first use.
    TalcLock::new(unsafe { Claim::new((&raw mut BOOT_ARENA).cast(), BOOT_ARENA_BYTES) });

/// Bytes currently allocated.
pub fn allocated_bytes() -> usize {
    HEAP.lock().counters().allocated_bytes
}
