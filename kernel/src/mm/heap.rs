//! The kernel heap: the `talc` allocator behind an interrupts-off spin lock, growing from frames.
//!
//! It starts on an 8 MiB arena in `.bss`, so allocation works from the first line of common code
//! (the per-CPU tables of the application processors, the ACPI copies). Once `mm::init` has the
//! frame allocator and the kernel's page tables, [`enable_growth`] lets the heap's source, when the
//! arena runs out, map fresh frames at the end of a dedicated virtual region (`mm::HEAP_BASE`) and
//! hand them to talc as a second heap that only ever extends. Memory the heap gained stays with the
//! heap: giving it back would mean unmapping kernel pages under other CPUs' TLBs for little gain.
//!
//! Key types: [`FrameSource`] (talc's `Source`). Neighbours: `mm::tables` maps the growth pages under
//! the page-table lock, which the heap lock may hold but never the other way round.

use core::{
    alloc::Layout,
    ptr::NonNull,
    sync::atomic::{AtomicBool, Ordering},
};

use talc::{TalcLock, base::Talc, base::binning::Binning, source::Source};

use crate::cpu::irqlock::RawIrqSpin;

const BOOT_ARENA_BYTES: usize = 8 << 20;

/// The least the heap grows by at a time, so growth stays rare.
const GROW_STEP_BYTES: usize = 2 << 20;

#[repr(C, align(4096))]
struct Arena([u8; BOOT_ARENA_BYTES]);

static mut BOOT_ARENA: Arena = Arena([0; BOOT_ARENA_BYTES]);

static GROWTH_ENABLED: AtomicBool = AtomicBool::new(false);

/// Where the heap's memory comes from: the boot arena first, then mapped frames.
#[derive(Debug)]
struct FrameSource {
    arena_claimed: bool,
    /// End of the grown heap (talc's handle for extending it), once it exists.
    grown_end: Option<NonNull<u8>>,
    /// End of the mapped part of the growth region.
    mapped_end: u64,
}

// SAFETY: `FrameSource` only holds addresses; it is only reached under the TalcLock.
unsafe impl Send for FrameSource {}

// SAFETY: `acquire` never touches the global allocator: it claims the static arena or maps frames
// (frame allocator and page tables, neither of which allocates from the heap).
unsafe impl Source for FrameSource {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        if !talc.source.arena_claimed {
            talc.source.arena_claimed = true;
            // SAFETY: BOOT_ARENA is used by nothing but this allocator, and this branch runs once.
            let claimed = unsafe { talc.claim((&raw mut BOOT_ARENA).cast(), BOOT_ARENA_BYTES) };
            return claimed.map(drop).ok_or(());
        }
        if !GROWTH_ENABLED.load(Ordering::Acquire) {
            return Err(());
        }
        // Room for the block, its alignment and talc's tags, rounded to whole pages.
        let want = (layout.size() + layout.align() + 4096).max(GROW_STEP_BYTES).next_multiple_of(4096) as u64;
        let start = if talc.source.mapped_end == 0 { super::HEAP_BASE } else { talc.source.mapped_end };
        let new_end = super::map_heap_pages(start, want);
        if new_end == start {
            return Err(());
        }
        talc.source.mapped_end = new_end;
        let grown = match talc.source.grown_end {
            // SAFETY: [HEAP_BASE, new_end) is freshly mapped RAM that nothing but this heap uses.
            None => unsafe { talc.claim(super::HEAP_BASE as *mut u8, (new_end - super::HEAP_BASE) as usize) },
            // SAFETY: `end` is this heap's current end as talc returned it; [start, new_end) is freshly
            // mapped RAM right after it that nothing else uses.
            Some(end) => Some(unsafe { talc.extend(end, new_end as *mut u8) }),
        };
        talc.source.grown_end = grown;
        grown.map(drop).ok_or(())
    }
}

#[global_allocator]
static HEAP: TalcLock<RawIrqSpin, FrameSource> =
    TalcLock::new(FrameSource { arena_claimed: false, grown_end: None, mapped_end: 0 });

/// Let the heap grow from frames (`mm::init`, once the kernel's page tables are live).
pub(super) fn enable_growth() {
    GROWTH_ENABLED.store(true, Ordering::Release);
}

/// Bytes currently allocated.
#[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "only the in-kernel tests use it so far"))]
pub fn allocated_bytes() -> usize {
    HEAP.lock().counters().allocated_bytes
}

/// Bytes the heap holds: the boot arena plus everything it grew by.
#[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "only the in-kernel tests use it so far"))]
pub fn claimed_bytes() -> usize {
    HEAP.lock().counters().claimed_bytes
}

/// The size of the boot arena (the tests allocate past it).
#[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "only the in-kernel tests use it so far"))]
pub const fn boot_arena_bytes() -> usize {
    BOOT_ARENA_BYTES
}
