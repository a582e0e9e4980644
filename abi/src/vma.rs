//! The set of a process's user mappings (its VMAs): which page-aligned ranges exist, with which
//! rights and of which kind. `mmap`, `munmap`, `mprotect`, `mremap` and `brk` are decided here; each
//! operation returns what the kernel must then do to page tables (unmap these ranges, move those
//! pages) through the targeted shootdown.
//!
//! Invariants, checked after every operation by the property test against a page-by-page model:
//! - ranges are page-aligned, non-empty, sorted and disjoint, and lie in `[MIN, USER_TOP)`;
//! - neighbours that touch and have equal rights and kind are merged, so the set is minimal and a
//!   process that maps page after page does not grow its tree without bound.
//!
//! Semantics follow Linux where a program can observe them: `MAP_FIXED` replaces what was there,
//! `munmap` of an unmapped range succeeds, `mprotect` of a range with a hole fails with `ENOMEM`
//! (Linux changes the part before the hole first; this set changes nothing, a trade-off no correct
//! program can see), `mremap` needs the old range inside one mapping (`EFAULT` otherwise), grows in
//! place when the next pages are free and moves only with `MREMAP_MAYMOVE`. New mappings without a
//! hint go top-down below the caller's limit (the stack gap), as Linux's default layout does.

use alloc::{
    collections::{BTreeMap, btree_map},
    vec::Vec,
};
use core::ops::Range;

use crate::{PAGE_SIZE, USER_TOP};

/// What a mapping is, which decides what a fault in it does and which neighbours it may merge with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmaKind {
    /// Anonymous memory from `mmap`: demand-zero.
    Anon,
    /// Anonymous memory from `mmap` with `MAP_SHARED`: demand-zero, and a fork maps the same frames
    /// in the child instead of copying them on write, so parent and child see each other's writes.
    /// Never merges with a private neighbour (the kind differs).
    Shared,
    /// A segment of the executable: filled at load, then ordinary private memory.
    Image,
    /// The `brk` heap: demand-zero.
    Heap,
    /// The main thread's stack: demand-zero.
    Stack,
    /// No access ever: the gap below the stack, so an overflow faults instead of running into a
    /// neighbour (reported as a stack overflow).
    Guard,
}

/// `PROT_READ`, `PROT_WRITE`, `PROT_EXEC` bits as `mmap` takes them.
pub type Prot = u32;
pub const PROT_READ: Prot = linux_raw_sys::general::PROT_READ;
pub const PROT_WRITE: Prot = linux_raw_sys::general::PROT_WRITE;
pub const PROT_EXEC: Prot = linux_raw_sys::general::PROT_EXEC;
/// Every bit `mprotect` and `mmap` accept in `prot` here (`PROT_GROWSDOWN`/`UP` are refused).
pub const PROT_MASK: Prot = PROT_READ | PROT_WRITE | PROT_EXEC;

/// One mapping: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: Prot,
    pub kind: VmaKind,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn joins(&self, next: &Vma) -> bool {
        self.end == next.start && self.prot == next.prot && self.kind == next.kind
    }
}

/// Why an operation was refused; [`VmaError::errno`] gives Linux's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaError {
    /// An address or length is not page-aligned, a length is 0, or `prot` has unknown bits.
    Invalid,
    /// Part of the range is not mapped (`mprotect`, `mremap` growth).
    NotMapped,
    /// The range leaves `[MIN, USER_TOP)` or wraps.
    OutOfRange,
    /// No free range is large enough.
    NoSpace,
    /// `mremap`'s old range is not inside a single mapping.
    NotOneMapping,
}

impl VmaError {
    pub fn errno(self) -> u32 {
        use linux_raw_sys::errno::*;
        match self {
            VmaError::Invalid => EINVAL,
            VmaError::NotMapped | VmaError::OutOfRange | VmaError::NoSpace => ENOMEM,
            VmaError::NotOneMapping => EFAULT,
        }
    }
}

/// What the kernel must do to page tables after [`VmaSet::remap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remap {
    /// Same size: nothing.
    Unchanged { addr: u64 },
    /// Shrunk in place: unmap `unmapped`.
    Shrunk { addr: u64, unmapped: Range<u64> },
    /// Grown in place: the new pages are demand-zero, nothing to do.
    Grown { addr: u64 },
    /// Moved: carry the pages of `from` to `to` (same length, then demand-zero up to the new size),
    /// and flush `from`.
    Moved { from: Range<u64>, to: Range<u64>, new_len: u64 },
}

impl Remap {
    /// The address `mremap` returns.
    pub fn addr(&self) -> u64 {
        match self {
            Remap::Unchanged { addr } | Remap::Shrunk { addr, .. } | Remap::Grown { addr } => *addr,
            Remap::Moved { to, .. } => to.start,
        }
    }
}

/// The mappings of one address space, keyed by start address.
#[derive(Clone, Debug)]
pub struct VmaSet {
    map: BTreeMap<u64, Vma>,
    /// Lowest address any mapping may use (`mmap_min_addr`).
    min: u64,
}

fn aligned(x: u64) -> bool {
    x.is_multiple_of(PAGE_SIZE)
}

impl VmaSet {
    /// An empty set whose mappings stay within `[min, USER_TOP)`.
    pub fn new(min: u64) -> Self {
        Self { map: BTreeMap::new(), min }
    }

    /// The checked range `[start, start + len)`.
    fn range(&self, start: u64, len: u64) -> Result<Range<u64>, VmaError> {
        if !aligned(start) || len == 0 {
            return Err(VmaError::Invalid);
        }
        let len = len.checked_next_multiple_of(PAGE_SIZE).ok_or(VmaError::OutOfRange)?;
        let end = start.checked_add(len).ok_or(VmaError::OutOfRange)?;
        if start < self.min || end > USER_TOP {
            return Err(VmaError::OutOfRange);
        }
        Ok(start..end)
    }

    /// The mapping containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.map.range(..=addr).next_back().map(|(_, v)| v).filter(|v| addr < v.end)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes mapped in all.
    pub fn mapped_bytes(&self) -> u64 {
        self.map.values().map(Vma::len).sum()
    }

    /// Mappings overlapping `[start, end)`, in order.
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Vma> {
        let first = self.map.range(..start).next_back().filter(|(_, v)| v.end > start).map(|(_, v)| v);
        first.into_iter().chain(self.map.range(start..end).map(|(_, v)| v))
    }

    /// Whether nothing is mapped in `[start, start + len)` (and the range is valid).
    pub fn is_free(&self, start: u64, len: u64) -> bool {
        match self.range(start, len) {
            Ok(r) => self.overlapping(r.start, r.end).next().is_none(),
            Err(_) => false,
        }
    }

    /// Remove `[start, end)` from every mapping, splitting the ones that straddle its ends; returns
    /// the removed pieces in address order.
    fn carve(&mut self, start: u64, end: u64) -> Vec<Vma> {
        let mut removed = Vec::new();
        self.carve_with(start, end, |v| removed.push(v));
        removed.reverse();
        removed
    }

    /// [`VmaSet::carve`] handing each removed piece to `f` instead, last first, without a list of
    /// keys: each step looks up the last mapping that starts below `end`, and stops at one that
    /// ends at or below `start` (the head left of a cut mapping is one), or after one that starts
    /// at or below `start`: mappings do not overlap, so every one below it ends by its start. That
    /// saves the unmap of a range inside one mapping (the common case) a second lookup.
    fn carve_with(&mut self, start: u64, end: u64, mut f: impl FnMut(Vma)) {
        while let Some((&k, &v)) = self.map.range(..end).next_back() {
            if v.end <= start {
                break;
            }
            self.map.remove(&k);
            if v.start < start {
                self.map.insert(v.start, Vma { end: start, ..v });
            }
            if v.end > end {
                self.map.insert(end, Vma { start: end, ..v });
            }
            f(Vma { start: v.start.max(start), end: v.end.min(end), ..v });
            if v.start <= start {
                break;
            }
        }
    }

    /// Merge compatible neighbours among the mappings touching `[start, end]`.
    fn merge_around(&mut self, start: u64, end: u64) {
        let from = self.map.range(..start).next_back().map_or(start, |(&k, _)| k);
        let keys: Vec<u64> = self.map.range(from..=end).map(|(&k, _)| k).collect();
        let mut cur: Option<u64> = None;
        for k in keys {
            let next = self.map[&k];
            match cur {
                Some(c) if self.map[&c].joins(&next) => {
                    self.map.remove(&k);
                    self.map.get_mut(&c).expect("current mapping").end = next.end;
                }
                _ => cur = Some(k),
            }
        }
    }

    /// `mmap` with `MAP_FIXED`: map `[start, start + len)` whatever was there. Returns the ranges that
    /// were mapped before and must be unmapped (and flushed) by the caller.
    pub fn map_fixed(&mut self, start: u64, len: u64, prot: Prot, kind: VmaKind) -> Result<Vec<Range<u64>>, VmaError> {
        if prot & !PROT_MASK != 0 {
            return Err(VmaError::Invalid);
        }
        let r = self.range(start, len)?;
        let removed = self.carve(r.start, r.end);
        self.map.insert(r.start, Vma { start: r.start, end: r.end, prot, kind });
        self.merge_around(r.start, r.end);
        Ok(removed.into_iter().map(|v| v.start..v.end).collect())
    }

    /// The highest free range of `len` bytes inside `[lo, hi)`.
    pub fn find_free(&self, len: u64, lo: u64, hi: u64) -> Option<u64> {
        if len == 0 {
            return None;
        }
        let len = len.checked_next_multiple_of(PAGE_SIZE)?;
        let lo = lo.max(self.min).checked_next_multiple_of(PAGE_SIZE)?;
        let hi = hi.min(USER_TOP) & !(PAGE_SIZE - 1);
        // Walk the gaps from the top down: each gap ends at a mapping's start (or hi).
        let mut gap_end = hi;
        for v in self.map.range(..hi).rev().map(|(_, v)| v) {
            if v.end < gap_end {
                let start = gap_end.checked_sub(len)?;
                if start >= v.end && start >= lo {
                    return Some(start);
                }
            }
            gap_end = gap_end.min(v.start);
            if gap_end <= lo {
                return None;
            }
        }
        let start = gap_end.checked_sub(len)?;
        (start >= lo).then_some(start)
    }

    /// `mmap` without `MAP_FIXED`: the hint when that range is free, else the highest free range below
    /// `hi`. Returns the address.
    pub fn map_anywhere(&mut self, hint: u64, len: u64, prot: Prot, kind: VmaKind, hi: u64) -> Result<u64, VmaError> {
        if len == 0 || prot & !PROT_MASK != 0 {
            return Err(VmaError::Invalid);
        }
        let hint = hint & !(PAGE_SIZE - 1);
        let start = if hint != 0 && self.is_free(hint, len) {
            hint
        } else {
            self.find_free(len, self.min, hi).ok_or(VmaError::NoSpace)?
        };
        self.map_fixed(start, len, prot, kind)?;
        Ok(start)
    }

    /// `munmap`: returns the ranges that were mapped (possibly none: that is no error).
    pub fn unmap(&mut self, start: u64, len: u64) -> Result<Vec<Range<u64>>, VmaError> {
        let mut removed = Vec::new();
        self.unmap_with(start, len, |r| removed.push(r))?;
        removed.reverse();
        Ok(removed)
    }

    /// [`VmaSet::unmap`] handing each range that was mapped to `removed`, the highest first,
    /// without building a list. The set is already without the range when the call returns, and
    /// without the ranges handed over so far during it.
    pub fn unmap_with(&mut self, start: u64, len: u64, mut removed: impl FnMut(Range<u64>)) -> Result<(), VmaError> {
        let r = self.range(start, len)?;
        // The common unmap: the range starts where a mapping starts and ends inside it or at its
        // end (often the whole mapping). No other mapping can overlap the range then, so one
        // descent finds and removes it, where `carve_with` descends once to find and again to
        // remove. (Only here: the other carvers, `mmap` first, mostly find nothing at `start`.)
        if let btree_map::Entry::Occupied(entry) = self.map.entry(r.start)
            && entry.get().end >= r.end
        {
            let v = entry.remove();
            if v.end > r.end {
                self.map.insert(r.end, Vma { start: r.end, ..v });
            }
            removed(r);
            return Ok(());
        }
        self.carve_with(r.start, r.end, |v| removed(v.start..v.end));
        Ok(())
    }

    /// `mprotect`: give `[start, start + len)` the rights `prot`. Every page must be mapped. Returns
    /// the ranges whose rights changed.
    pub fn protect(&mut self, start: u64, len: u64, prot: Prot) -> Result<Vec<Range<u64>>, VmaError> {
        if prot & !PROT_MASK != 0 {
            return Err(VmaError::Invalid);
        }
        let r = self.range(start, len)?;
        let mut covered = r.start;
        for v in self.overlapping(r.start, r.end) {
            if v.start > covered {
                break;
            }
            covered = v.end;
        }
        if covered < r.end {
            return Err(VmaError::NotMapped);
        }
        let pieces = self.carve(r.start, r.end);
        let changed = pieces.iter().filter(|v| v.prot != prot).map(|v| v.start..v.end).collect();
        for v in pieces {
            self.map.insert(v.start, Vma { prot, ..v });
        }
        self.merge_around(r.start, r.end);
        Ok(changed)
    }

    /// `mremap` without `MREMAP_FIXED`: resize the mapping part `[old, old + old_len)` to `new_len`,
    /// in place when the next pages are free and below `hi` (the top of the mmap area), else (with
    /// `may_move`) to the highest free range below `hi`.
    pub fn remap(&mut self, old: u64, old_len: u64, new_len: u64, may_move: bool, hi: u64) -> Result<Remap, VmaError> {
        let r = self.range(old, old_len)?;
        if new_len == 0 {
            return Err(VmaError::Invalid);
        }
        let new_len = new_len.checked_next_multiple_of(PAGE_SIZE).ok_or(VmaError::OutOfRange)?;
        let vma = *self.find(r.start).ok_or(VmaError::NotOneMapping)?;
        if r.end > vma.end {
            return Err(VmaError::NotOneMapping);
        }
        let old_len = r.end - r.start;
        if new_len == old_len {
            return Ok(Remap::Unchanged { addr: old });
        }
        if new_len < old_len {
            let unmapped = old + new_len..r.end;
            self.carve(unmapped.start, unmapped.end);
            return Ok(Remap::Shrunk { addr: old, unmapped });
        }
        let grow = new_len - old_len;
        if self.is_free(r.end, grow) && r.end.checked_add(grow).is_some_and(|e| e <= hi.min(USER_TOP)) {
            self.map_fixed(r.end, grow, vma.prot, vma.kind)?;
            return Ok(Remap::Grown { addr: old });
        }
        if !may_move {
            return Err(VmaError::NoSpace);
        }
        // Choose the new place while the old one is still mapped, so the two never overlap.
        let to = self.find_free(new_len, self.min, hi).ok_or(VmaError::NoSpace)?;
        self.carve(r.start, r.end);
        self.map_fixed(to, new_len, vma.prot, vma.kind)?;
        Ok(Remap::Moved { from: r.clone(), to: to..to + old_len, new_len })
    }
}

#[cfg(test)]
mod tests {
    use alloc::{vec, vec::Vec};

    use proptest::prelude::*;

    use super::*;

    const P: u64 = PAGE_SIZE;
    const RW: Prot = PROT_READ | PROT_WRITE;
    const R: Prot = PROT_READ;

    fn ranges(s: &VmaSet) -> Vec<(u64, u64, Prot)> {
        s.iter().map(|v| (v.start, v.end, v.prot)).collect()
    }

    #[test]
    fn fixed_replaces_and_reports_what_it_replaced() {
        let mut s = VmaSet::new(0x10000);
        s.map_fixed(0x10000, 4 * P, RW, VmaKind::Anon).unwrap();
        let gone = s.map_fixed(0x11000, P, R, VmaKind::Anon).unwrap();
        assert_eq!(gone, vec![0x11000..0x12000]);
        assert_eq!(ranges(&s), vec![(0x10000, 0x11000, RW), (0x11000, 0x12000, R), (0x12000, 0x14000, RW)]);
        // Mapping it back to RW merges all three.
        s.map_fixed(0x11000, P, RW, VmaKind::Anon).unwrap();
        assert_eq!(ranges(&s), vec![(0x10000, 0x14000, RW)]);
    }

    #[test]
    fn unmap_with_hands_over_each_mapped_piece_highest_first() {
        let mut s = VmaSet::new(0x10000);
        s.map_fixed(0x10000, 2 * P, RW, VmaKind::Anon).unwrap();
        s.map_fixed(0x13000, 2 * P, R, VmaKind::Anon).unwrap();
        s.map_fixed(0x16000, P, RW, VmaKind::Anon).unwrap();
        let mut got = Vec::new();
        s.unmap_with(0x11000, 0x4000, |r| got.push(r)).unwrap();
        assert_eq!(got, vec![0x13000..0x15000, 0x11000..0x12000]);
        assert_eq!(ranges(&s), vec![(0x10000, 0x11000, RW), (0x16000, 0x17000, RW)]);
        s.unmap_with(0x12000, P, |_| panic!("nothing is mapped there")).unwrap();
    }

    #[test]
    fn unmap_with_at_the_start_of_a_mapping_takes_it_or_its_head() {
        let mut s = VmaSet::new(0x10000);
        s.map_fixed(0x10000, P, RW, VmaKind::Anon).unwrap();
        s.map_fixed(0x12000, 3 * P, R, VmaKind::Anon).unwrap();
        let mut got = Vec::new();
        // The whole first mapping, then the head of the second: each one piece, the rest kept.
        s.unmap_with(0x10000, P, |r| got.push(r)).unwrap();
        s.unmap_with(0x12000, P, |r| got.push(r)).unwrap();
        assert_eq!(got, vec![0x10000..0x11000, 0x12000..0x13000]);
        assert_eq!(ranges(&s), vec![(0x13000, 0x15000, R)]);
        // Past its end the range is carved as usual: the mapping and the hole after it.
        got.clear();
        s.unmap_with(0x13000, 4 * P, |r| got.push(r)).unwrap();
        assert_eq!(got, vec![0x13000..0x15000]);
        assert!(ranges(&s).is_empty());
    }

    #[test]
    fn kinds_do_not_merge() {
        let mut s = VmaSet::new(0x10000);
        s.map_fixed(0x10000, P, RW, VmaKind::Heap).unwrap();
        s.map_fixed(0x11000, P, RW, VmaKind::Anon).unwrap();
        assert_eq!(s.len(), 2);
    }

    fn kinds(s: &VmaSet) -> Vec<(u64, u64, VmaKind)> {
        s.iter().map(|v| (v.start, v.end, v.kind)).collect()
    }

    #[test]
    fn shared_and_private_never_merge() {
        let mut s = VmaSet::new(0x10000);
        s.map_fixed(0x10000, P, RW, VmaKind::Anon).unwrap();
        s.map_fixed(0x11000, P, RW, VmaKind::Shared).unwrap();
        s.map_fixed(0x12000, P, RW, VmaKind::Anon).unwrap();
        assert_eq!(kinds(&s), vec![(0x10000, 0x11000, VmaKind::Anon), (0x11000, 0x12000, VmaKind::Shared), (0x12000, 0x13000, VmaKind::Anon)]);
        // Two shared neighbours with equal rights do merge.
        s.map_fixed(0x13000, P, RW, VmaKind::Shared).unwrap();
        s.map_fixed(0x14000, P, RW, VmaKind::Shared).unwrap();
        assert_eq!(s.find(0x13000).map(|v| (v.start, v.end, v.kind)), Some((0x13000, 0x15000, VmaKind::Shared)));
        // mprotect of the private pages around the shared one to its rights merges nothing across.
        s.protect(0x10000, 3 * P, R).unwrap();
        assert_eq!(s.len(), 4);
        assert!(s.iter().all(|v| v.start != 0x10000 || v.end == 0x11000));
    }

    #[test]
    fn shared_survives_split_protect_and_remap() {
        let mut s = VmaSet::new(0x10000);
        let hi = 0x100000;
        s.map_fixed(0x20000, 6 * P, RW, VmaKind::Shared).unwrap();
        // munmap in the middle splits; both pieces stay shared.
        s.unmap(0x22000, P).unwrap();
        assert_eq!(kinds(&s), vec![(0x20000, 0x22000, VmaKind::Shared), (0x23000, 0x26000, VmaKind::Shared)]);
        // mprotect of a part splits again and keeps the kind; giving the rights back merges.
        s.protect(0x24000, P, R).unwrap();
        assert!(s.iter().all(|v| v.kind == VmaKind::Shared));
        assert_eq!(s.len(), 4);
        s.protect(0x24000, P, RW).unwrap();
        assert_eq!(kinds(&s), vec![(0x20000, 0x22000, VmaKind::Shared), (0x23000, 0x26000, VmaKind::Shared)]);
        // mremap grows in place, shrinks and moves, shared throughout.
        assert_eq!(s.remap(0x20000, 2 * P, 3 * P, false, hi).unwrap(), Remap::Grown { addr: 0x20000 });
        assert_eq!(s.find(0x22000).map(|v| v.kind), Some(VmaKind::Shared));
        assert_eq!(s.len(), 1, "the grown part fills the hole and merges");
        s.remap(0x20000, 6 * P, 4 * P, false, hi).unwrap();
        s.map_fixed(0x24000, P, RW, VmaKind::Anon).unwrap();
        let m = s.remap(0x20000, 4 * P, 5 * P, true, hi).unwrap();
        assert_eq!(m, Remap::Moved { from: 0x20000..0x24000, to: hi - 5 * P..hi - P, new_len: 5 * P });
        assert_eq!(kinds(&s), vec![(0x24000, 0x25000, VmaKind::Anon), (hi - 5 * P, hi, VmaKind::Shared)]);
    }

    #[test]
    fn munmap_splits_and_tolerates_holes() {
        let mut s = VmaSet::new(0x10000);
        s.map_fixed(0x10000, 8 * P, RW, VmaKind::Anon).unwrap();
        assert_eq!(s.unmap(0x12000, 2 * P).unwrap(), vec![0x12000..0x14000]);
        assert_eq!(s.unmap(0x12000, 2 * P).unwrap(), vec![]);
        assert_eq!(ranges(&s), vec![(0x10000, 0x12000, RW), (0x14000, 0x18000, RW)]);
        assert_eq!(s.unmap(0x11000, 0), Err(VmaError::Invalid));
        assert_eq!(s.unmap(0x11001, P), Err(VmaError::Invalid));
    }

    #[test]
    fn mprotect_needs_every_page_and_changes_nothing_otherwise() {
        let mut s = VmaSet::new(0x10000);
        s.map_fixed(0x10000, 2 * P, RW, VmaKind::Anon).unwrap();
        s.map_fixed(0x13000, P, RW, VmaKind::Anon).unwrap();
        assert_eq!(s.protect(0x10000, 4 * P, R), Err(VmaError::NotMapped));
        assert_eq!(ranges(&s), vec![(0x10000, 0x12000, RW), (0x13000, 0x14000, RW)]);
        assert_eq!(s.protect(0x11000, P, R).unwrap(), vec![0x11000..0x12000]);
        assert_eq!(ranges(&s), vec![(0x10000, 0x11000, RW), (0x11000, 0x12000, R), (0x13000, 0x14000, RW)]);
        assert_eq!(s.protect(0x10000, 2 * P, R).unwrap(), vec![0x10000..0x11000]);
        assert_eq!(ranges(&s), vec![(0x10000, 0x12000, R), (0x13000, 0x14000, RW)]);
        assert_eq!(VmaError::NotMapped.errno(), linux_raw_sys::errno::ENOMEM);
    }

    #[test]
    fn find_free_is_top_down_and_respects_bounds() {
        let mut s = VmaSet::new(0x10000);
        let hi = 0x100000;
        assert_eq!(s.find_free(P, 0, hi), Some(hi - P));
        s.map_fixed(hi - 2 * P, 2 * P, RW, VmaKind::Anon).unwrap();
        assert_eq!(s.find_free(P, 0, hi), Some(hi - 3 * P));
        s.map_fixed(0x10000, hi - 0x10000 - 3 * P, RW, VmaKind::Anon).unwrap();
        assert_eq!(s.find_free(P, 0, hi), Some(hi - 3 * P));
        assert_eq!(s.find_free(2 * P, 0, hi), None);
        assert_eq!(s.map_anywhere(0, 2 * P, RW, VmaKind::Anon, hi), Err(VmaError::NoSpace));
        assert_eq!(s.find_free(u64::MAX, 0, hi), None);
    }

    #[test]
    fn mremap_shrinks_grows_and_moves() {
        let mut s = VmaSet::new(0x10000);
        let hi = 0x100000;
        s.map_fixed(0x20000, 2 * P, RW, VmaKind::Anon).unwrap();
        assert_eq!(s.remap(0x20000, 2 * P, P, false, hi).unwrap(), Remap::Shrunk { addr: 0x20000, unmapped: 0x21000..0x22000 });
        assert_eq!(s.remap(0x20000, P, 3 * P, false, hi).unwrap(), Remap::Grown { addr: 0x20000 });
        assert_eq!(ranges(&s), vec![(0x20000, 0x23000, RW)]);
        s.map_fixed(0x23000, P, R, VmaKind::Anon).unwrap();
        assert_eq!(s.remap(0x20000, 3 * P, 4 * P, false, hi), Err(VmaError::NoSpace));
        let m = s.remap(0x20000, 3 * P, 4 * P, true, hi).unwrap();
        assert_eq!(m, Remap::Moved { from: 0x20000..0x23000, to: hi - 4 * P..hi - P, new_len: 4 * P });
        assert_eq!(ranges(&s), vec![(0x23000, 0x24000, R), (hi - 4 * P, hi, RW)]);
        assert_eq!(s.remap(0x22000, 2 * P, 3 * P, true, hi), Err(VmaError::NotOneMapping));
        assert_eq!(s.remap(0x23000, 2 * P, 3 * P, true, hi), Err(VmaError::NotOneMapping));
    }

    #[test]
    fn bounds_are_enforced() {
        let mut s = VmaSet::new(0x10000);
        assert_eq!(s.map_fixed(0, P, RW, VmaKind::Anon), Err(VmaError::OutOfRange));
        assert_eq!(s.map_fixed(USER_TOP, P, RW, VmaKind::Anon), Err(VmaError::OutOfRange));
        assert_eq!(s.map_fixed(USER_TOP - P, 2 * P, RW, VmaKind::Anon), Err(VmaError::OutOfRange));
        assert_eq!(s.map_fixed(0x10000, u64::MAX, RW, VmaKind::Anon), Err(VmaError::OutOfRange));
        assert_eq!(s.map_fixed(0x10000, P, 0x8, VmaKind::Anon), Err(VmaError::Invalid));
        assert!(s.map_fixed(USER_TOP - P, P, RW, VmaKind::Anon).is_ok());
    }

    // ---- the page model --------------------------------------------------------------------------

    const BASE: u64 = 0x10000;
    const PAGES: usize = 48;
    const HI: u64 = BASE + PAGES as u64 * P;

    type Page = Option<(Prot, VmaKind)>;

    fn page_view(s: &VmaSet) -> Vec<Page> {
        (0..PAGES).map(|i| s.find(BASE + i as u64 * P).map(|v| (v.prot, v.kind))).collect()
    }

    fn check_invariants(s: &VmaSet) -> Result<(), TestCaseError> {
        let v: Vec<&Vma> = s.iter().collect();
        for x in &v {
            prop_assert!(x.start < x.end && aligned(x.start) && aligned(x.end));
            prop_assert!(x.start >= BASE && x.end <= HI);
        }
        for w in v.windows(2) {
            prop_assert!(w[0].end <= w[1].start, "overlap {:?}", w);
            prop_assert!(!w[0].joins(w[1]), "not merged {:?}", w);
        }
        Ok(())
    }

    fn model_free_top_down(m: &[Page], pages: usize) -> Option<usize> {
        (0..=PAGES.checked_sub(pages)?).rev().find(|&i| m[i..i + pages].iter().all(Option::is_none))
    }

    #[derive(Clone, Debug)]
    enum Op {
        Fixed(usize, usize, Prot, u8),
        Anywhere(usize, Prot),
        Unmap(usize, usize),
        Protect(usize, usize, Prot),
        Remap(usize, usize, usize, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let at = 0..PAGES;
        let n = 1usize..8;
        let prot = prop_oneof![Just(R), Just(RW), Just(PROT_READ | PROT_EXEC), Just(0)];
        prop_oneof![
            (at.clone(), n.clone(), prot.clone(), 0u8..3).prop_map(|(a, n, p, k)| Op::Fixed(a, n, p, k)),
            (n.clone(), prot.clone()).prop_map(|(n, p)| Op::Anywhere(n, p)),
            (at.clone(), n.clone()).prop_map(|(a, n)| Op::Unmap(a, n)),
            (at.clone(), n.clone(), prot).prop_map(|(a, n, p)| Op::Protect(a, n, p)),
            (at, n.clone(), n, any::<bool>()).prop_map(|(a, o, nn, m)| Op::Remap(a, o, nn, m)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Every operation does to the set exactly what it does to an array of pages, answers the same
        /// way, reports exactly the pages that changed, and leaves the set minimal.
        #[test]
        fn matches_the_page_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut s = VmaSet::new(BASE);
            let mut m: Vec<Page> = vec![None; PAGES];
            let addr = |i: usize| BASE + i as u64 * P;
            let pages_of = |rs: &[Range<u64>]| -> Vec<usize> {
                rs.iter().flat_map(|r| ((r.start - BASE) / P) as usize..((r.end - BASE) / P) as usize).collect()
            };
            for op in ops {
                match op {
                    Op::Fixed(a, n, p, k) => {
                        let kind = [VmaKind::Anon, VmaKind::Heap, VmaKind::Shared][usize::from(k)];
                        let r = s.map_fixed(addr(a), n as u64 * P, p, kind);
                        if a + n > PAGES {
                            // Beyond the model's window: only check it stays inside USER_TOP rules.
                            prop_assert!(r.is_ok());
                            s.unmap(HI, (a + n - PAGES) as u64 * P).unwrap();
                            for pg in &mut m[a..] { *pg = Some((p, kind)); }
                            continue;
                        }
                        let was: Vec<usize> = (a..a + n).filter(|&i| m[i].is_some()).collect();
                        prop_assert_eq!(pages_of(&r.unwrap()), was);
                        for pg in &mut m[a..a + n] { *pg = Some((p, kind)); }
                    }
                    Op::Anywhere(n, p) => {
                        let got = s.map_anywhere(0, n as u64 * P, p, VmaKind::Anon, HI);
                        match model_free_top_down(&m, n) {
                            Some(i) => {
                                prop_assert_eq!(got, Ok(addr(i)));
                                for pg in &mut m[i..i + n] { *pg = Some((p, VmaKind::Anon)); }
                            }
                            None => prop_assert_eq!(got, Err(VmaError::NoSpace)),
                        }
                    }
                    Op::Unmap(a, n) => {
                        let n = n.min(PAGES - a);
                        let r = s.unmap(addr(a), n as u64 * P).unwrap();
                        let was: Vec<usize> = (a..a + n).filter(|&i| m[i].is_some()).collect();
                        prop_assert_eq!(pages_of(&r), was);
                        for pg in &mut m[a..a + n] { *pg = None; }
                    }
                    Op::Protect(a, n, p) => {
                        let n = n.min(PAGES - a);
                        let r = s.protect(addr(a), n as u64 * P, p);
                        if m[a..a + n].iter().all(Option::is_some) {
                            let changed: Vec<usize> = (a..a + n).filter(|&i| m[i].unwrap().0 != p).collect();
                            prop_assert_eq!(pages_of(&r.unwrap()), changed);
                            for pg in &mut m[a..a + n] { *pg = pg.map(|(_, k)| (p, k)); }
                        } else {
                            prop_assert_eq!(r, Err(VmaError::NotMapped));
                        }
                    }
                    Op::Remap(a, old_n, new_n, may_move) => {
                        let old_n = old_n.min(PAGES - a);
                        let r = s.remap(addr(a), old_n as u64 * P, new_n as u64 * P, may_move, HI);
                        // The old range must lie in one mapping: same attributes on every page and
                        // no merge boundary inside, which in a minimal set means one run.
                        let Some(first) = m[a] else {
                            prop_assert_eq!(r, Err(VmaError::NotOneMapping));
                            continue;
                        };
                        if !m[a..a + old_n].iter().all(|&pg| pg == Some(first)) {
                            prop_assert_eq!(r, Err(VmaError::NotOneMapping));
                            continue;
                        }
                        if new_n <= old_n {
                            prop_assert!(r.is_ok());
                            for pg in &mut m[a + new_n..a + old_n] { *pg = None; }
                        } else if a + new_n <= PAGES && m[a + old_n..a + new_n].iter().all(Option::is_none) {
                            prop_assert_eq!(r, Ok(Remap::Grown { addr: addr(a) }));
                            for pg in &mut m[a + old_n..a + new_n] { *pg = Some(first); }
                        } else if !may_move {
                            prop_assert!(r.is_err());
                        } else {
                            match model_free_top_down(&m, new_n) {
                                Some(i) => {
                                    prop_assert_eq!(r.clone().map(|x| x.addr()), Ok(addr(i)));
                                    for pg in &mut m[a..a + old_n] { *pg = None; }
                                    for pg in &mut m[i..i + new_n] { *pg = Some(first); }
                                }
                                None => prop_assert_eq!(r, Err(VmaError::NoSpace)),
                            }
                        }
                    }
                }
                check_invariants(&s)?;
                prop_assert_eq!(page_view(&s), m.clone());
            }
        }
    }
}
