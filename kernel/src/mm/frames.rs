//! Physical frames for the whole kernel: the one [`FrameAllocator`] (lock-free, from
//! `kcore::frame_alloc`) over the boot memory map, with one search cursor per CPU.
//!
//! The bitmap lives in RAM taken from the first usable region above 1 MiB that the boot page tables
//! reach (below 4 GiB), reached through the direct map. [`alloc`] hands out frames at or above
//! 1 MiB; frames below 1 MiB (the application processors' trampoline) only come from
//! [`alloc_below`]. Boot loader memory joins the pool later ([`reclaim`]).
//!
//! Neighbours: `mm::init` calls [`init`] first of all; the page tables, the heap's growth and the
//! kernel stacks take their frames here.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kcore::{
    frame_alloc::{FRAME_BYTES, FrameAllocator},
    memmap::{MemoryMap, RegionKind},
};
use smp::MAX_CPUS;

use crate::cpu::percpu;

static FRAMES: spin::Once<FrameAllocator<'static>> = spin::Once::new();

/// Where each CPU's next search starts (a hint: a stale value only costs a longer search).
static CURSORS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// The bitmap's own frames, `[start, end)`, kept out of the pool.
static STORAGE: spin::Once<(u64, u64)> = spin::Once::new();

/// Build the allocator from `map`'s usable regions. The boot page tables must map
/// `[0, 4 GiB)` at `hhdm_offset` (both boot paths do). Returns the number of free frames.
pub(super) fn init(map: &MemoryMap, hhdm_offset: u64) -> usize {
    let top = FrameAllocator::coverage(map);
    let words = FrameAllocator::storage_words(top);
    let bytes = (words * 8) as u64;
    let Some(site) = FrameAllocator::storage_site(map, bytes, 1 << 32) else {
        panic!("no usable region below 4 GiB holds the {bytes}-byte frame bitmap")
    };
    let storage_ptr = (site + hhdm_offset) as *const AtomicU64;
    // SAFETY: `site` is the start of `bytes` of usable RAM below 4 GiB that nothing else uses (it is
    // kept out of the pool below), mapped at `hhdm_offset` by the boot page tables and, later, by the
    // kernel's own direct map; any bit pattern is a valid AtomicU64, and BitAlloc::new zeroes it.
    let storage: &'static [AtomicU64] = unsafe { core::slice::from_raw_parts(storage_ptr, words) };
    let end = site + bytes.next_multiple_of(FRAME_BYTES);
    STORAGE.call_once(|| (site, end));
    let frames = FRAMES.call_once(|| FrameAllocator::new(storage, top));
    frames.add_regions(map, RegionKind::Usable, site..end);
    let nr_words = words.max(1);
    for (i, c) in CURSORS.iter().enumerate() {
        // Spread the CPUs' starting words (multiplicative hashing) so they rarely meet.
        c.store(i.wrapping_mul(0x9e37_79b9) % nr_words, Ordering::Relaxed);
    }
    frames.stats().0
}

fn frames() -> &'static FrameAllocator<'static> {
    FRAMES.get().expect("frame allocator used before mm::init")
}

/// One free 4 KiB frame at or above 1 MiB (contents undefined), or `None` if memory is exhausted.
pub fn alloc() -> Option<u64> {
    let cpu = percpu::cpu_index() as usize % MAX_CPUS;
    frames().alloc(&CURSORS[cpu])
}

/// One free frame whose first word is `value` (the rest undefined), or `None` if memory is
/// exhausted.
pub fn alloc_with_word(value: u64) -> Option<u64> {
    let pa = alloc()?;
    // SAFETY: the frame was just handed out, so nothing else maps or reads it yet; the direct map
    // covers every frame the allocator hands out.
    unsafe { core::ptr::write_volatile(super::phys_to_virt(pa) as *mut u64, value) };
    Some(pa)
}

/// One free frame lying wholly below `limit`, preferring frames above 1 MiB; the only way to get a
/// frame below 1 MiB (the real-mode trampoline).
pub fn alloc_below(limit: u64) -> Option<u64> {
    frames().alloc_below(limit)
}

/// Give frame `pa` back. Panics on a double free or a frame the allocator never covered: either is
/// a kernel bug that would otherwise hand one frame to two owners.
pub fn free(pa: u64) {
    if let Err(e) = frames().free(pa) {
        panic!("frames::free({pa:#x}): {e:?}");
    }
}

/// Is frame `pa` free right now?
#[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "only the in-kernel tests use it so far"))]
pub fn is_free(pa: u64) -> bool {
    frames().is_free(pa)
}

/// `(free, total)` frames: free now, and ever added to the pool (a snapshot).
pub fn stats() -> (usize, usize) {
    FRAMES.get().map_or((0, 0), FrameAllocator::stats)
}

/// Add the boot loader's memory to the pool, except the regions `keep` says are still in use.
/// Returns how many frames became free.
pub(super) fn reclaim(map: &MemoryMap, keep: impl Fn(u64, u64) -> bool) -> usize {
    let storage = STORAGE.get().copied().unwrap_or((0, 0));
    map.regions()
        .iter()
        .filter(|r| r.kind == RegionKind::BootloaderReclaimable && !keep(r.base, r.end()))
        .map(|r| frames().add_free(r.base, r.len, storage.0..storage.1))
        .sum()
}
