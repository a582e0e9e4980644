//! Lock-free allocation of physical frames from a two-level atomic bitmap.
//!
//! - [`BitAlloc`]: a set of free indices `0..len` kept as one bit per index (set = free) plus a
//!   summary bit per 64-bit word ("this word may hold a free bit"), so a search skips 64 empty words
//!   with one load. Taking an index is a compare-and-swap on its word, so two CPUs can never take the
//!   same index; giving one back is a `fetch_or`. No locks, no allocation: the caller hands over the
//!   storage (the kernel carves it from RAM, tests from a `Vec`).
//! - [`FrameAllocator`]: physical 4 KiB frames on top of a [`BitAlloc`]: frames are added region by
//!   region from the [`MemoryMap`] (holes stay taken), [`FrameAllocator::alloc`] hands out frames
//!   at or above 1 MiB only, and the scarce low frames (the application processors' real-mode
//!   trampoline) come only through [`FrameAllocator::alloc_below`].
//!
//! Each caller passes a search cursor (the kernel keeps one per CPU) so that CPUs allocating at the
//! same time start in different words instead of fighting over one.
//!
//! The summary protocol: whoever empties a word clears its summary bit and then looks at the word
//! again, setting the bit back if a free raced in; whoever frees sets the word bit first and the
//! summary bit second. So a word with a free bit never stays hidden behind a clear summary bit (the
//! loom model in `kernel/tests/loom_frame_alloc.rs` checks this); a summary bit over an empty word
//! only costs a look.
//!
//! Neighbours: `memmap` supplies the regions; the kernel's `mm::frames` owns the one instance and
//! the per-CPU cursors.

use core::ops::Range;

use crate::memmap::{MemoryMap, RegionKind};

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bytes in a frame.
pub const FRAME_BYTES: u64 = 4096;

/// Frames below this address are handed out only by [`FrameAllocator::alloc_below`].
pub const LOW_MEMORY_END: u64 = 1 << 20;

/// Why an index or frame could not be given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// It was free already: a double free.
    AlreadyFree,
    /// It lies outside what the allocator covers.
    OutOfRange,
    /// A frame address that is not a multiple of [`FRAME_BYTES`].
    Unaligned,
}

/// A lock-free set of free indices `0..len` (see the module documentation).
pub struct BitAlloc<'a> {
    /// Bit `i % 64` of word `i / 64` is set while index `i` is free.
    words: &'a [AtomicU64],
    /// Bit `w % 64` of summary word `w / 64` is set whenever word `w` has a free bit (and possibly
    /// for a while after it lost its last one).
    summary: &'a [AtomicU64],
    len: usize,
    free: AtomicUsize,
    total: AtomicUsize,
}

impl<'a> BitAlloc<'a> {
    /// How many 64-bit words of storage [`BitAlloc::new`] needs for `len` indices.
    pub const fn storage_words(len: usize) -> usize {
        let words = len.div_ceil(64);
        words + words.div_ceil(64)
    }

    /// An allocator over `len` indices, all taken, in `storage` (which it zeroes). Panics if
    /// `storage` is shorter than [`BitAlloc::storage_words`].
    pub fn new(storage: &'a [AtomicU64], len: usize) -> Self {
        let nr_words = len.div_ceil(64);
        assert!(storage.len() >= Self::storage_words(len), "bitmap storage too small for {len} indices");
        let (words, rest) = storage.split_at(nr_words);
        let summary = &rest[..nr_words.div_ceil(64)];
        for w in words.iter().chain(summary) {
            w.store(0, Ordering::Relaxed);
        }
        Self { words, summary, len, free: AtomicUsize::new(0), total: AtomicUsize::new(0) }
    }

    /// How many indices the allocator covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if it covers no index at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Make every index of `range` (clipped to `0..len`) free and count it in the total; returns how
    /// many became free. Indices already free stay free and are not counted twice.
    pub fn insert_range(&self, range: Range<usize>) -> usize {
        let (start, end) = (range.start, range.end.min(self.len));
        let mut added = 0;
        let mut i = start;
        while i < end {
            let w = i / 64;
            let hi = end.min((w + 1) * 64);
            let mask = bits_between(i % 64, hi - w * 64);
            let old = self.words[w].fetch_or(mask, Ordering::AcqRel);
            self.summary[w / 64].fetch_or(1 << (w % 64), Ordering::AcqRel);
            added += (mask & !old).count_ones() as usize;
            i = hi;
        }
        self.total.fetch_add(added, Ordering::Relaxed);
        self.free.fetch_add(added, Ordering::Relaxed);
        added
    }

    /// Take one free index from `range`, starting the search at the word `cursor` names (wrapping
    /// around once), and leave `cursor` at the word the index came from.
    pub fn alloc_in(&self, range: Range<usize>, cursor: &AtomicUsize) -> Option<usize> {
        let (start, end) = (range.start, range.end.min(self.len));
        if start >= end {
            return None;
        }
        let (first_w, end_w) = (start / 64, end.div_ceil(64));
        let from = cursor.load(Ordering::Relaxed).clamp(first_w, end_w - 1);
        let found = self.scan(from..end_w, start..end).or_else(|| self.scan(first_w..from, start..end));
        if let Some(i) = found {
            cursor.store(i / 64, Ordering::Relaxed);
        }
        found
    }

    /// Search the words `words` for a free index inside `range`.
    fn scan(&self, words: Range<usize>, range: Range<usize>) -> Option<usize> {
        let mut w = words.start;
        while w < words.end {
            let s = w / 64;
            let lo = w % 64;
            let hi = (words.end - s * 64).min(64);
            let mut candidates = self.summary[s].load(Ordering::Acquire) & bits_between(lo, hi);
            while candidates != 0 {
                let cw = s * 64 + candidates.trailing_zeros() as usize;
                let lo_bit = range.start.saturating_sub(cw * 64).min(64);
                let hi_bit = (range.end - cw * 64).min(64);
                if let Some(i) = self.take_from_word(cw, bits_between(lo_bit, hi_bit)) {
                    return Some(i);
                }
                if self.words[cw].load(Ordering::Acquire) == 0 {
                    // A stale summary bit: drop it so later searches skip the word.
                    self.clear_summary(cw);
                }
                candidates &= candidates - 1;
            }
            w = (s + 1) * 64;
        }
        None
    }

    /// Claim the lowest free bit of word `w` within `mask`.
    fn take_from_word(&self, w: usize, mask: u64) -> Option<usize> {
        let word = &self.words[w];
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            let avail = cur & mask;
            if avail == 0 {
                return None;
            }
            let bit = avail.trailing_zeros() as usize;
            let new = cur & !(1 << bit);
            // Acquire: whatever the last owner wrote before freeing is visible to the new owner.
            match word.compare_exchange_weak(cur, new, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => {
                    if new == 0 {
                        self.clear_summary(w);
                    }
                    self.free.fetch_sub(1, Ordering::Relaxed);
                    return Some(w * 64 + bit);
                }
                Err(seen) => cur = seen,
            }
        }
    }

    /// Clear word `w`'s summary bit, then set it again if a free raced in (module documentation).
    fn clear_summary(&self, w: usize) {
        let (s, bit) = (w / 64, 1u64 << (w % 64));
        self.summary[s].fetch_and(!bit, Ordering::AcqRel);
        if self.words[w].load(Ordering::Acquire) != 0 {
            self.summary[s].fetch_or(bit, Ordering::AcqRel);
        }
    }

    /// Give index `i` back.
    pub fn free(&self, i: usize) -> Result<(), FreeError> {
        if i >= self.len {
            return Err(FreeError::OutOfRange);
        }
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        // Release: the owner's writes happen before the next owner's (see take_from_word).
        let old = self.words[w].fetch_or(bit, Ordering::AcqRel);
        if old & bit != 0 {
            return Err(FreeError::AlreadyFree);
        }
        self.summary[w / 64].fetch_or(1 << (w % 64), Ordering::AcqRel);
        self.free.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Is index `i` free right now?
    pub fn is_free(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// `(free, total)`: indices free now, and indices ever made free by [`BitAlloc::insert_range`].
    /// A snapshot: exact when nobody allocates at the same time.
    pub fn stats(&self) -> (usize, usize) {
        (self.free.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed))
    }
}

/// The bits `lo..hi` of a word (`hi` at most 64).
fn bits_between(lo: usize, hi: usize) -> u64 {
    if lo >= hi {
        return 0;
    }
    let upto_hi = if hi >= 64 { !0 } else { (1u64 << hi) - 1 };
    upto_hi & !((1u64 << lo) - 1)
}

/// Physical frames (see the module documentation).
pub struct FrameAllocator<'a> {
    bits: BitAlloc<'a>,
}

/// The kinds whose frames the allocator may ever hold: free RAM now, and boot loader memory once it
/// is reclaimed.
fn covered_kind(kind: RegionKind) -> bool {
    matches!(kind, RegionKind::Usable | RegionKind::BootloaderReclaimable)
}

impl<'a> FrameAllocator<'a> {
    /// The physical address the bitmap must reach for `map`: the end of the highest region that is
    /// or may become free RAM.
    pub fn coverage(map: &MemoryMap) -> u64 {
        map.regions().iter().filter(|r| covered_kind(r.kind)).map(|r| r.end()).max().unwrap_or(0)
    }

    /// How many 64-bit words of storage frames up to `top` (exclusive) need.
    pub const fn storage_words(top: u64) -> usize {
        BitAlloc::storage_words(top.div_ceil(FRAME_BYTES) as usize)
    }

    /// Where to put `bytes` of bitmap storage: the lowest page-aligned spot inside one Usable region,
    /// at or above 1 MiB, ending at or below `limit` (the boot page tables reach only so far).
    pub fn storage_site(map: &MemoryMap, bytes: u64, limit: u64) -> Option<u64> {
        let bytes = bytes.next_multiple_of(FRAME_BYTES);
        map.regions().iter().filter(|r| r.kind == RegionKind::Usable).find_map(|r| {
            let base = r.base.max(LOW_MEMORY_END).next_multiple_of(FRAME_BYTES);
            let end = base.checked_add(bytes)?;
            (end <= r.end() && end <= limit).then_some(base)
        })
    }

    /// An allocator for frames below `top`, all taken, in `storage`.
    pub fn new(storage: &'a [AtomicU64], top: u64) -> Self {
        Self { bits: BitAlloc::new(storage, top.div_ceil(FRAME_BYTES) as usize) }
    }

    /// Make the whole frames inside `[base, base + len)` free, except those overlapping `hole` and
    /// frame 0 (address 0 would look like a null pointer). Returns how many frames became free.
    pub fn add_free(&self, base: u64, len: u64, hole: Range<u64>) -> usize {
        let first = base.max(FRAME_BYTES).div_ceil(FRAME_BYTES);
        let end = base.saturating_add(len) / FRAME_BYTES;
        if first >= end {
            return 0;
        }
        let (hole_first, hole_end) = (hole.start / FRAME_BYTES, hole.end.div_ceil(FRAME_BYTES));
        let below_hole = first..end.min(hole_first);
        let above_hole = first.max(hole_end)..end;
        let mut added = 0;
        for r in [below_hole, above_hole] {
            if r.start < r.end {
                added += self.bits.insert_range(r.start as usize..r.end as usize);
            }
        }
        added
    }

    /// Add every region of `kind` in `map`, except `hole`; returns how many frames became free.
    pub fn add_regions(&self, map: &MemoryMap, kind: RegionKind, hole: Range<u64>) -> usize {
        map.regions().iter().filter(|r| r.kind == kind).map(|r| self.add_free(r.base, r.len, hole.clone())).sum()
    }

    /// One free frame at or above 1 MiB.
    pub fn alloc(&self, cursor: &AtomicUsize) -> Option<u64> {
        let low = (LOW_MEMORY_END / FRAME_BYTES) as usize;
        self.bits.alloc_in(low..self.bits.len(), cursor).map(frame_address)
    }

    /// One free frame whose whole page lies below `limit`: from `[1 MiB, limit)` if it has one (the
    /// low frames are scarce), else from below 1 MiB.
    pub fn alloc_below(&self, limit: u64) -> Option<u64> {
        let end = (limit / FRAME_BYTES) as usize;
        let low = (LOW_MEMORY_END / FRAME_BYTES) as usize;
        let cursor = AtomicUsize::new(0);
        self.bits
            .alloc_in(low..end, &cursor)
            .or_else(|| self.bits.alloc_in(0..end.min(low), &cursor))
            .map(frame_address)
    }

    /// Give frame `pa` back.
    pub fn free(&self, pa: u64) -> Result<(), FreeError> {
        if !pa.is_multiple_of(FRAME_BYTES) {
            return Err(FreeError::Unaligned);
        }
        self.bits.free((pa / FRAME_BYTES) as usize)
    }

    /// Is frame `pa` free right now?
    pub fn is_free(&self, pa: u64) -> bool {
        pa.is_multiple_of(FRAME_BYTES) && self.bits.is_free((pa / FRAME_BYTES) as usize)
    }

    /// `(free, total)` in frames; see [`BitAlloc::stats`].
    pub fn stats(&self) -> (usize, usize) {
        self.bits.stats()
    }
}

fn frame_address(i: usize) -> u64 {
    i as u64 * FRAME_BYTES
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::memmap::Region;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn storage(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(!0)).collect()
    }

    fn drain(f: &FrameAllocator<'_>) -> Vec<u64> {
        let cursor = AtomicUsize::new(0);
        core::iter::from_fn(|| f.alloc(&cursor)).collect()
    }

    fn map(rs: &[(u64, u64, RegionKind)]) -> MemoryMap {
        let mut m = MemoryMap::new();
        for &(base, len, kind) in rs {
            m.push(Region { base, len, kind }).unwrap();
        }
        m.normalize().unwrap();
        m
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn new_allocator_hands_out_nothing() {
        let s = storage(FrameAllocator::storage_words(64 * MIB));
        let f = FrameAllocator::new(&s, 64 * MIB);
        assert_eq!(f.stats(), (0, 0));
        assert_eq!(drain(&f), Vec::<u64>::new());
        assert_eq!(f.alloc_below(MIB), None);
    }

    #[test]
    fn every_frame_once_then_every_frame_back() {
        let s = storage(FrameAllocator::storage_words(16 * MIB));
        let f = FrameAllocator::new(&s, 16 * MIB);
        assert_eq!(f.add_free(MIB, 15 * MIB, 0..0), 15 * 256);
        let got = drain(&f);
        assert_eq!(got.len(), 15 * 256);
        let distinct: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(distinct.len(), got.len(), "a frame was handed out twice");
        assert!(got.iter().all(|&pa| pa % FRAME_BYTES == 0 && (MIB..16 * MIB).contains(&pa)));
        assert_eq!(f.stats(), (0, 15 * 256));
        for &pa in &got {
            f.free(pa).unwrap();
        }
        assert_eq!(f.stats(), (15 * 256, 15 * 256));
        assert_eq!(drain(&f).len(), 15 * 256, "not every frame came back");
    }

    #[test]
    fn holes_and_partial_frames_are_never_handed_out() {
        let m = map(&[
            (0, 0x9fc00, RegionKind::Usable),
            (0x9fc00, 0x400, RegionKind::Reserved),
            (MIB, 3 * MIB, RegionKind::Usable),
            (4 * MIB, MIB, RegionKind::Reserved),
            (5 * MIB, MIB + 0x800, RegionKind::Usable),
            (8 * MIB, MIB, RegionKind::AcpiReclaimable),
        ]);
        let top = FrameAllocator::coverage(&m);
        assert_eq!(top, 6 * MIB + 0x800);
        let s = storage(FrameAllocator::storage_words(top));
        let f = FrameAllocator::new(&s, top);
        let added = f.add_regions(&m, RegionKind::Usable, 0..0);
        // 0x9f frames below 1 MiB (frame 0 excluded: 0x9e), 768 + 256 above.
        assert_eq!(added, 0x9e + 768 + 256);
        let got = drain(&f);
        assert_eq!(got.len(), 768 + 256);
        assert!(got.iter().all(|&pa| (MIB..4 * MIB).contains(&pa) || (5 * MIB..6 * MIB).contains(&pa)));
        let low: Vec<u64> = core::iter::from_fn(|| f.alloc_below(MIB)).collect();
        assert_eq!(low.len(), 0x9e);
        assert!(low.iter().all(|&pa| pa != 0 && pa + FRAME_BYTES <= 0x9fc00));
    }

    #[test]
    fn storage_hole_is_skipped() {
        let m = map(&[(0, 32 * MIB, RegionKind::Usable)]);
        let bytes = 8 * FrameAllocator::storage_words(32 * MIB) as u64;
        let site = FrameAllocator::storage_site(&m, bytes, u64::MAX).unwrap();
        assert_eq!(site, MIB, "storage goes at the lowest spot above 1 MiB");
        let s = storage(FrameAllocator::storage_words(32 * MIB));
        let f = FrameAllocator::new(&s, 32 * MIB);
        f.add_regions(&m, RegionKind::Usable, site..site + bytes);
        let got = drain(&f);
        assert!(got.iter().all(|&pa| pa + FRAME_BYTES <= site || pa >= site + bytes));
        assert_eq!(got.len() as u64, (31 * MIB - bytes.next_multiple_of(FRAME_BYTES)) / FRAME_BYTES);
    }

    #[test]
    fn storage_site_respects_the_limit_and_region_sizes() {
        let m = map(&[(0, 2 * MIB, RegionKind::Usable), (4 * MIB, 64 * MIB, RegionKind::Usable)]);
        assert_eq!(FrameAllocator::storage_site(&m, MIB, u64::MAX), Some(MIB));
        assert_eq!(FrameAllocator::storage_site(&m, 2 * MIB, u64::MAX), Some(4 * MIB));
        assert_eq!(FrameAllocator::storage_site(&m, 2 * MIB, 5 * MIB), None);
        assert_eq!(FrameAllocator::storage_site(&m, 128 * MIB, u64::MAX), None);
    }

    #[test]
    fn alloc_below_prefers_frames_above_1mib() {
        let s = storage(FrameAllocator::storage_words(8 * MIB));
        let f = FrameAllocator::new(&s, 8 * MIB);
        f.add_free(0x8000, 0x2000, 0..0);
        f.add_free(7 * MIB, 2 * FRAME_BYTES, 0..0);
        assert_eq!(f.alloc_below(4 * MIB), Some(0x8000), "nothing in [1 MiB, 4 MiB): falls back to low memory");
        assert_eq!(f.alloc_below(8 * MIB), Some(7 * MIB));
        assert_eq!(f.alloc_below(7 * MIB + 2 * FRAME_BYTES), Some(7 * MIB + FRAME_BYTES));
        assert_eq!(f.alloc_below(MIB), Some(0x9000));
        assert_eq!(f.alloc_below(u64::MAX), None);
    }

    #[test]
    fn alloc_below_limit_is_exclusive_of_the_whole_page() {
        let s = storage(FrameAllocator::storage_words(4 * MIB));
        let f = FrameAllocator::new(&s, 4 * MIB);
        f.add_free(2 * MIB, FRAME_BYTES, 0..0);
        assert_eq!(f.alloc_below(2 * MIB + FRAME_BYTES - 1), None);
        assert_eq!(f.alloc_below(2 * MIB + FRAME_BYTES), Some(2 * MIB));
    }

    #[test]
    fn frees_are_checked() {
        let s = storage(FrameAllocator::storage_words(4 * MIB));
        let f = FrameAllocator::new(&s, 4 * MIB);
        f.add_free(MIB, MIB, 0..0);
        let pa = f.alloc(&AtomicUsize::new(0)).unwrap();
        assert_eq!(f.free(pa + 8), Err(FreeError::Unaligned));
        assert_eq!(f.free(64 * MIB), Err(FreeError::OutOfRange));
        assert_eq!(f.free(pa), Ok(()));
        assert_eq!(f.free(pa), Err(FreeError::AlreadyFree));
        assert_eq!(f.stats(), (256, 256), "a rejected free changes no count");
    }

    #[test]
    fn adding_twice_counts_once() {
        let s = storage(FrameAllocator::storage_words(4 * MIB));
        let f = FrameAllocator::new(&s, 4 * MIB);
        assert_eq!(f.add_free(MIB, MIB, 0..0), 256);
        assert_eq!(f.add_free(MIB + MIB / 2, MIB, 0..0), 128);
        assert_eq!(f.stats(), (384, 384));
    }

    #[test]
    fn cursors_spread_and_wrap() {
        let s = storage(BitAlloc::storage_words(64 * 200));
        let b = BitAlloc::new(&s, 64 * 200);
        b.insert_range(0..64 * 200);
        let cursor = AtomicUsize::new(150);
        assert_eq!(b.alloc_in(0..64 * 200, &cursor), Some(150 * 64), "search starts at the cursor's word");
        let c2 = AtomicUsize::new(10_000);
        assert_eq!(b.alloc_in(0..64 * 200, &c2), Some(199 * 64), "a cursor past the end is clamped");
        for _ in 0..64 * 200 - 2 {
            assert!(b.alloc_in(0..64 * 200, &cursor).is_some());
        }
        assert_eq!(b.alloc_in(0..64 * 200, &cursor), None);
        b.free(3).unwrap();
        assert_eq!(b.alloc_in(0..64 * 200, &cursor), Some(3), "the search wraps around to the start");
    }

    #[test]
    fn ranges_inside_one_word_are_masked() {
        let s = storage(BitAlloc::storage_words(64));
        let b = BitAlloc::new(&s, 64);
        b.insert_range(0..64);
        let c = AtomicUsize::new(0);
        assert_eq!(b.alloc_in(10..12, &c), Some(10));
        assert_eq!(b.alloc_in(10..12, &c), Some(11));
        assert_eq!(b.alloc_in(10..12, &c), None);
        assert_eq!(b.alloc_in(63..64, &c), Some(63));
    }

    #[test]
    fn threads_never_share_a_frame_and_return_all() {
        const TOP: u64 = 64 * MIB;
        let s = storage(FrameAllocator::storage_words(TOP));
        let f = FrameAllocator::new(&s, TOP);
        let total = f.add_free(MIB, TOP - MIB, 0..0);
        let owners: Vec<AtomicUsize> = (0..TOP / FRAME_BYTES).map(|_| AtomicUsize::new(usize::MAX)).collect();
        std::thread::scope(|scope| {
            for t in 0..4usize {
                let (f, owners) = (&f, &owners);
                scope.spawn(move || {
                    let cursor = AtomicUsize::new(t * 1000);
                    let mut held = Vec::new();
                    for round in 0..20_000usize {
                        if round % 3 == 2 {
                            if let Some(pa) = held.pop() {
                                let i = (pa / FRAME_BYTES) as usize;
                                assert_eq!(owners[i].swap(usize::MAX, Ordering::SeqCst), t);
                                f.free(pa).unwrap();
                            }
                        } else if let Some(pa) = f.alloc(&cursor) {
                            let i = (pa / FRAME_BYTES) as usize;
                            let prev = owners[i].swap(t, Ordering::SeqCst);
                            assert_eq!(
                                prev,
                                usize::MAX,
                                "frame {pa:#x} handed to thread {t} while thread {prev} held it"
                            );
                            held.push(pa);
                        }
                    }
                    for pa in held {
                        owners[(pa / FRAME_BYTES) as usize].store(usize::MAX, Ordering::SeqCst);
                        f.free(pa).unwrap();
                    }
                });
            }
        });
        assert_eq!(f.stats(), (total, total));
        assert_eq!(drain(&f).len(), total, "every frame is back and reachable");
    }

    proptest! {
        /// Any sequence of allocations and frees agrees with a plain set model.
        #[test]
        fn matches_a_set_model(
            regions in proptest::collection::vec((0u64..512, 1u64..64), 1..6),
            ops in proptest::collection::vec((any::<bool>(), any::<u16>()), 1..400),
        ) {
            const TOP: u64 = 600 * FRAME_BYTES;
            let s = storage(FrameAllocator::storage_words(TOP));
            let f = FrameAllocator::new(&s, TOP);
            let mut model_free = BTreeSet::new();
            for &(start, len) in &regions {
                f.add_free(start * FRAME_BYTES, len * FRAME_BYTES, 0..0);
                model_free.extend((start.max(1)..start + len).map(|i| i * FRAME_BYTES));
            }
            let total = model_free.len();
            prop_assert_eq!(f.stats(), (total, total));
            let mut held: Vec<u64> = Vec::new();
            let cursor = AtomicUsize::new(0);
            for (alloc, pick) in ops {
                if alloc || held.is_empty() {
                    let low = model_free.range(..LOW_MEMORY_END).count();
                    match f.alloc(&cursor) {
                        Some(pa) => {
                            prop_assert!(pa >= LOW_MEMORY_END);
                            prop_assert!(model_free.remove(&pa), "frame {:#x} was not free", pa);
                            held.push(pa);
                        }
                        None => prop_assert_eq!(model_free.len(), low),
                    }
                } else {
                    let pa = held.swap_remove(pick as usize % held.len());
                    prop_assert_eq!(f.free(pa), Ok(()));
                    model_free.insert(pa);
                }
                prop_assert_eq!(f.stats(), (model_free.len(), total));
            }
        }
    }
}
