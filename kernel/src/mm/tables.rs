//! The kernel's own page tables: the tree every CPU runs on, reached through the direct map.
//!
//! [`Frames`] is `kcore::paging`'s [`TableMemory`] over real RAM: a table frame is read through the
//! direct map, and only if it lies in a range the direct map covers, so a walk with a corrupt entry
//! (the fault path's `is_mapped`) stops instead of faulting. New table frames come from
//! `mm::frames`, below 4 GiB until the kernel runs on its own tables (the boot tables of the direct
//! boot reach no further).
//!
//! Every change to the tree goes through [`with_tables`], which holds one interrupts-off spin lock;
//! walks need no lock. The lock is never held while allocating from the heap (the heap's growth maps
//! pages under its own lock, so heap -> tables is the only order).
//!
//! Neighbours: `mm` (init, the public mapping calls), `mm::heap` (growth), `mm::stacks`.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kcore::{
    frame_alloc::FRAME_BYTES,
    paging::{DirectRange, Table, TableMemory},
};
use talc::lock_api::Mutex;

use super::frames;
use crate::cpu::irqlock::RawIrqSpin;

/// The ranges the direct map covers (readable table frames lie in them), in address order.
pub(super) struct DirectRanges {
    ranges: [DirectRange; MAX_RANGES],
    len: usize,
}

/// direct_map_ranges yields at most one range per region plus the low megabyte, and one more for
/// each read-only region that splits a read-write range in two.
const MAX_RANGES: usize = 2 * kcore::memmap::MAX_REGIONS + 1;

impl DirectRanges {
    pub(super) const fn new() -> Self {
        Self { ranges: [DirectRange { start: 0, end: 0, writable: false }; MAX_RANGES], len: 0 }
    }

    pub(super) fn push(&mut self, r: DirectRange) {
        self.ranges[self.len] = r;
        self.len += 1;
    }

    pub(super) fn as_slice(&self) -> &[DirectRange] {
        &self.ranges[..self.len]
    }

    /// The range holding `pa`, if any.
    pub(super) fn find(&self, pa: u64) -> Option<&DirectRange> {
        let rs = self.as_slice();
        let i = rs.partition_point(|r| r.end <= pa);
        rs.get(i).filter(|r| r.start <= pa)
    }
}

static DIRECT: spin::Once<DirectRanges> = spin::Once::new();
static HHDM_OFFSET: AtomicU64 = AtomicU64::new(0);
/// Set once CR3 holds the kernel's own tables: from then on table frames may come from anywhere.
static ON_OWN_TABLES: AtomicBool = AtomicBool::new(false);
static ROOT: AtomicU64 = AtomicU64::new(0);
static LOCK: Mutex<RawIrqSpin, ()> = Mutex::new(());

/// Record the direct map's offset and extent (before any table is read).
pub(super) fn set_direct_map(hhdm_offset: u64, ranges: DirectRanges) {
    HHDM_OFFSET.store(hhdm_offset, Ordering::Release);
    DIRECT.call_once(|| ranges);
}

/// The direct map's offset, or 0 before `mm::init` recorded it.
pub(super) fn hhdm_offset() -> u64 {
    HHDM_OFFSET.load(Ordering::Acquire)
}

pub(super) fn direct_ranges() -> &'static [DirectRange] {
    DIRECT.get().map_or(&[], DirectRanges::as_slice)
}

/// Is `pa` inside the direct map?
pub(super) fn in_direct_map(pa: u64) -> bool {
    DIRECT.get().is_some_and(|d| d.find(pa).is_some())
}

/// Page tables in RAM, through the direct map.
pub(super) struct Frames;

impl TableMemory for Frames {
    fn table(&self, pa: u64) -> Option<&Table> {
        let offset = hhdm_offset();
        if offset == 0 || !pa.is_multiple_of(FRAME_BYTES) || !in_direct_map(pa) {
            return None;
        }
        // SAFETY: `pa` is a page-aligned frame inside the direct map, which maps it (the boot tables
        // map the same ranges at the same offset); every bit pattern is a valid AtomicU64, and
        // entries are only ever accessed atomically.
        Some(unsafe { &*((pa + offset) as *const Table) })
    }

    fn alloc_table(&self) -> Option<u64> {
        let pa = if ON_OWN_TABLES.load(Ordering::Acquire) { frames::alloc() } else { frames::alloc_below(1 << 32) }?;
        // SAFETY: a fresh frame from the allocator, owned by nobody else, mapped by the direct map.
        unsafe { core::ptr::write_bytes((pa + hhdm_offset()) as *mut u8, 0, FRAME_BYTES as usize) };
        Some(pa)
    }

    fn free_table(&self, pa: u64) {
        frames::free(pa);
    }
}

/// The kernel's PML4, or 0 before `mm::init` built it.
pub(super) fn root() -> u64 {
    ROOT.load(Ordering::Acquire)
}

/// Record the freshly built PML4 (once) and that CR3 now holds it.
pub(super) fn set_root(pml4: u64) {
    ROOT.store(pml4, Ordering::Release);
    ON_OWN_TABLES.store(true, Ordering::Release);
}

/// Run `f` on the kernel's tables with the lock held (interrupts off).
pub(super) fn with_tables<R>(f: impl FnOnce(&Frames, u64) -> R) -> R {
    let _held = LOCK.lock();
    f(&Frames, root())
}
