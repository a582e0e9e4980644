//! Four-level x86_64 page tables as plain logic, and the plan of the kernel's direct map.
//!
//! - [`TableMemory`]: how the logic reaches page-table frames. The kernel implements it over its
//!   direct map (and refuses frames outside RAM, so a walk never faults); the host tests implement it
//!   over boxed arrays. Entries are [`AtomicU64`]s: walkers (the fault path's `is_mapped`) read them
//!   without a lock while one locked writer changes them.
//! - [`translate`], [`map`], [`unmap`], [`unmap_range`], [`for_each_leaf`]: walk, add, remove and
//!   list mappings of 4 KiB, 2 MiB and 1 GiB pages. Callers serialise the mutating calls (one lock per tree).
//! - [`populate_slots`], [`copy_slots`]: give the kernel half its permanent PDPTs, and share them
//!   with a new tree.
//! - [`direct_map_ranges`] and [`DirectMapChunks`]: which physical memory the kernel's direct map
//!   covers, with which rights, and in which page sizes.
//!
//! Neighbours: `memmap` feeds the plan; the kernel's `mm` module owns the real tables.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::structures::paging::PageTableFlags as Flags;

use crate::memmap::{MemoryMap, RegionKind};

/// Entries per table.
pub const ENTRIES: usize = 512;

/// One page table: a 4 KiB frame of entries.
pub type Table = [AtomicU64; ENTRIES];

/// Bits 12-51 of an entry: the physical address it points at.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The first PML4 slot of the kernel half (`0xffff_8000_0000_0000`).
pub const KERNEL_HALF_FIRST_SLOT: usize = 256;

/// The sizes of page a leaf entry can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    Size4K,
    Size2M,
    Size1G,
}

impl PageSize {
    /// The page's size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }

    /// The table level whose entries map pages of this size (PT = 1, PD = 2, PDPT = 3).
    const fn level(self) -> usize {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }
}

/// Access to page-table frames by physical address.
pub trait TableMemory {
    /// The table in frame `pa`, or `None` if that frame cannot be read (not RAM, not aligned).
    fn table(&self, pa: u64) -> Option<&Table>;
    /// A new, zeroed table frame.
    fn alloc_table(&self) -> Option<u64>;
    /// Give back a table frame that no entry points at any more.
    fn free_table(&self, pa: u64);
}

/// Where a virtual address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address of the byte the virtual address names.
    pub pa: u64,
    /// The size of the page that maps it.
    pub size: PageSize,
    /// The leaf entry's flags (without the address bits).
    pub flags: Flags,
}

impl Translation {
    /// Writable through this mapping.
    pub fn writable(&self) -> bool {
        self.flags.contains(Flags::WRITABLE)
    }

    /// Instruction fetches allowed through this mapping.
    pub fn executable(&self) -> bool {
        !self.flags.contains(Flags::NO_EXECUTE)
    }
}

/// Why [`map`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The virtual address is not canonical, or either address is not aligned to the page size.
    BadAddress,
    /// A page already maps this address (the existing mapping is returned).
    AlreadyMapped(Translation),
    /// No frame for a new table.
    NoMemory,
    /// A table on the way cannot be read.
    Unreadable,
}

/// Why [`unmap`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapError {
    /// Nothing maps this address.
    NotMapped,
    /// The address is inside a page but not at its start.
    NotPageStart,
}

/// True if bits 48-63 of `va` copy bit 47 (4-level paging).
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

/// Sign-extend a 48-bit address.
pub const fn canonical(va: u64) -> u64 {
    (((va << 16) as i64) >> 16) as u64
}

/// The index of `va` in its table at `level` (4 = PML4 ... 1 = PT).
const fn index(va: u64, level: usize) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Bytes one entry of a table at `level` spans.
const fn span(level: usize) -> u64 {
    1 << (12 + 9 * (level - 1))
}

/// The size of the page an entry at `level` (1 = page table .. 4 = PML4) maps, if it is a leaf:
/// every entry of a page table, a huge entry of a page directory (2 MiB) or a PDPT (1 GiB).
#[inline]
fn leaf_size(level: usize, flags: Flags) -> Option<PageSize> {
    match level {
        1 => Some(PageSize::Size4K),
        2 if flags.contains(Flags::HUGE_PAGE) => Some(PageSize::Size2M),
        3 if flags.contains(Flags::HUGE_PAGE) => Some(PageSize::Size1G),
        _ => None,
    }
}

#[inline]
fn entry_flags(e: u64) -> Flags {
    Flags::from_bits_truncate(e & !ADDR_MASK)
}

/// Where `va` leads in the tree rooted at `root`, if anywhere.
pub fn translate(mem: &impl TableMemory, root: u64, va: u64) -> Option<Translation> {
    if !is_canonical(va) {
        return None;
    }
    let mut table = root;
    for level in (1..=4).rev() {
        let e = mem.table(table)?[index(va, level)].load(Ordering::Acquire);
        let flags = entry_flags(e);
        if !flags.contains(Flags::PRESENT) {
            return None;
        }
        let size = leaf_size(level, flags);
        if let Some(size) = size {
            let base = e & ADDR_MASK & !(size.bytes() - 1);
            return Some(Translation { pa: base + (va & (size.bytes() - 1)), size, flags });
        }
        table = e & ADDR_MASK;
    }
    None
}

/// Map the page of `size` at `va` to `pa` with `flags` (PRESENT is added; HUGE_PAGE is added for
/// large pages). Missing tables are created with PRESENT | WRITABLE (plus USER_ACCESSIBLE if the leaf
/// has it), so the leaf alone decides the rights.
pub fn map(mem: &impl TableMemory, root: u64, va: u64, pa: u64, size: PageSize, flags: Flags) -> Result<(), MapError> {
    let align = size.bytes() - 1;
    if !is_canonical(va) || va & align != 0 || pa & align != 0 || pa & !ADDR_MASK != 0 {
        return Err(MapError::BadAddress);
    }
    let table_flags = Flags::PRESENT | Flags::WRITABLE | (flags & Flags::USER_ACCESSIBLE);
    let mut table = root;
    for level in ((size.level() + 1)..=4).rev() {
        let slot = &mem.table(table).ok_or(MapError::Unreadable)?[index(va, level)];
        let e = slot.load(Ordering::Acquire);
        if e & Flags::PRESENT.bits() == 0 {
            let new = mem.alloc_table().ok_or(MapError::NoMemory)?;
            // Release: the zeroed table is visible before the entry that publishes it.
            slot.store(new | table_flags.bits(), Ordering::Release);
            table = new;
        } else if level <= 3 && e & Flags::HUGE_PAGE.bits() != 0 {
            let existing = translate(mem, root, va).ok_or(MapError::Unreadable)?;
            return Err(MapError::AlreadyMapped(existing));
        } else {
            table = e & ADDR_MASK;
        }
    }
    let slot = &mem.table(table).ok_or(MapError::Unreadable)?[index(va, size.level())];
    if slot.load(Ordering::Acquire) & Flags::PRESENT.bits() != 0 {
        let existing = translate(mem, root, va).ok_or(MapError::Unreadable)?;
        return Err(MapError::AlreadyMapped(existing));
    }
    let huge = if size == PageSize::Size4K { Flags::empty() } else { Flags::HUGE_PAGE };
    slot.store(pa | (flags | Flags::PRESENT | huge).bits(), Ordering::Release);
    Ok(())
}

/// Remove the page that starts at `va` and return what it mapped. Tables of the user half that this
/// leaves empty are freed; tables of the kernel half stay, since every address space shares them.
/// The caller flushes the TLBs.
pub fn unmap(mem: &impl TableMemory, root: u64, va: u64) -> Result<Translation, UnmapError> {
    let t = translate(mem, root, va).ok_or(UnmapError::NotMapped)?;
    if va & (t.size.bytes() - 1) != 0 {
        return Err(UnmapError::NotPageStart);
    }
    // The tables on the path: path[4 - level] is the table at `level` (PML4 first); translate
    // just read every one of them.
    let leaf_level = t.size.level();
    let mut path = [root; 4];
    for level in ((leaf_level + 1)..=4).rev() {
        let e = mem.table(path[4 - level]).ok_or(UnmapError::NotMapped)?[index(va, level)].load(Ordering::Acquire);
        path[5 - level] = e & ADDR_MASK;
    }
    mem.table(path[4 - leaf_level]).ok_or(UnmapError::NotMapped)?[index(va, leaf_level)].store(0, Ordering::Release);
    if index(va, 4) < KERNEL_HALF_FIRST_SLOT {
        for level in (leaf_level + 1)..=4 {
            // The table at `level - 1` hangs off entry index(va, level) of the table at `level`.
            let child = path[5 - level];
            let Some(entries) = mem.table(child) else { break };
            if entries.iter().any(|e| e.load(Ordering::Acquire) != 0) {
                break;
            }
            if let Some(parent) = mem.table(path[4 - level]) {
                parent[index(va, level)].store(0, Ordering::Release);
            }
            mem.free_table(child);
        }
    }
    Ok(t)
}

/// Remove every leaf of the lower half that lies wholly inside `range` (byte addresses, clamped to
/// the lower half), calling `removed(va, translation)` for each, in address order, in one walk.
/// A table is freed only when its whole span lies inside `range` (everything it mapped was just
/// removed); a table the range covers in part stays even if it is left empty, without scanning its
/// 512 entries (the cost [`unmap`] pays per page): it serves the next mapping there, and the walk
/// of the tree's destruction frees it. A large leaf the range covers in part stays mapped.
/// The caller flushes the TLBs.
pub fn unmap_range(mem: &impl TableMemory, root: u64, range: core::ops::Range<u64>, mut removed: impl FnMut(u64, Translation)) {
    fn walk(
        mem: &impl TableMemory,
        at: u64,
        level: usize,
        base: u64,
        range: &core::ops::Range<u64>,
        removed: &mut impl FnMut(u64, Translation),
    ) {
        let Some(entries) = mem.table(at) else { return };
        let (span, shift) = (span(level), 12 + 9 * (level as u32 - 1));
        // The entries whose span meets the range; the caller only descends where it does.
        let first = (range.start.saturating_sub(base) >> shift) as usize;
        let last = (((range.end - 1).saturating_sub(base) >> shift) as usize).min(ENTRIES - 1);
        for (i, slot) in (first..).zip(&entries[first..=last]) {
            let e = slot.load(Ordering::Acquire);
            if e & Flags::PRESENT.bits() == 0 {
                continue;
            }
            let va = base + i as u64 * span;
            let covered = va >= range.start && va + span <= range.end;
            let flags = entry_flags(e);
            let size = leaf_size(level, flags);
            match size {
                Some(size) if covered => {
                    slot.store(0, Ordering::Release);
                    removed(va, Translation { pa: e & ADDR_MASK & !(size.bytes() - 1), size, flags });
                }
                Some(_) => {}
                None => {
                    walk(mem, e & ADDR_MASK, level - 1, va, range, removed);
                    if covered {
                        slot.store(0, Ordering::Release);
                        mem.free_table(e & ADDR_MASK);
                    }
                }
            }
        }
    }
    let lower_half_end = (KERNEL_HALF_FIRST_SLOT as u64) << 39;
    let range = range.start..range.end.min(lower_half_end);
    if range.start >= range.end {
        return;
    }
    // A range inside one page table's span and short of all of it (most unmaps: a few pages) can
    // free no table and remove no large leaf (it covers none whole): go straight down to that
    // table, without the levels' loops and calls. Nothing there (an entry not present, or a large
    // leaf on the way) is nothing to remove.
    let pt_span = span(2);
    if range.end - range.start < pt_span && range.start / pt_span == (range.end - 1) / pt_span {
        let mut table = root;
        for level in (2..=4).rev() {
            let Some(entries) = mem.table(table) else { return };
            let e = entries[index(range.start, level)].load(Ordering::Acquire);
            if e & Flags::PRESENT.bits() == 0 || (level < 4 && e & Flags::HUGE_PAGE.bits() != 0) {
                return;
            }
            table = e & ADDR_MASK;
        }
        walk(mem, table, 1, range.start & !(pt_span - 1), &range, &mut removed);
        return;
    }
    walk(mem, root, 4, 0, &range, &mut removed);
}

/// Give every empty PML4 slot in `slots` an empty PDPT (PRESENT | WRITABLE), so that whatever is
/// mapped under those slots later shows in every tree that copied them ([`copy_slots`]). Returns
/// how many tables it created.
pub fn populate_slots(mem: &impl TableMemory, root: u64, slots: core::ops::Range<usize>) -> Result<usize, MapError> {
    let pml4 = mem.table(root).ok_or(MapError::Unreadable)?;
    let mut created = 0;
    for entry in pml4.iter().take(slots.end).skip(slots.start) {
        if entry.load(Ordering::Acquire) & Flags::PRESENT.bits() == 0 {
            let pdpt = mem.alloc_table().ok_or(MapError::NoMemory)?;
            entry.store(pdpt | (Flags::PRESENT | Flags::WRITABLE).bits(), Ordering::Release);
            created += 1;
        }
    }
    Ok(created)
}

/// Copy the PML4 entries `slots` of `from` into `to`: both trees then share everything below them.
pub fn copy_slots(mem: &impl TableMemory, from: u64, to: u64, slots: core::ops::Range<usize>) -> Result<(), MapError> {
    let (src, dst) = (mem.table(from).ok_or(MapError::Unreadable)?, mem.table(to).ok_or(MapError::Unreadable)?);
    for (d, s) in dst.iter().zip(src).take(slots.end).skip(slots.start) {
        d.store(s.load(Ordering::Acquire), Ordering::Release);
    }
    Ok(())
}

/// Call `f(va, translation)` for every leaf under the PML4 slots `slots`, in address order. The
/// translation's `pa` is the start of the page.
pub fn for_each_leaf(
    mem: &impl TableMemory,
    root: u64,
    slots: core::ops::Range<usize>,
    f: impl FnMut(u64, Translation),
) {
    walk_tree(mem, root, slots, f, |_| {});
}

/// [`for_each_leaf`], and `table(pa)` for every table below `root` on the way, each after the
/// leaves and tables it holds: all a tree being destroyed gives back besides its root, found in
/// one walk. Nothing is changed.
pub fn for_each_leaf_and_table(
    mem: &impl TableMemory,
    root: u64,
    slots: core::ops::Range<usize>,
    leaf: impl FnMut(u64, Translation),
    table: impl FnMut(u64),
) {
    walk_tree(mem, root, slots, leaf, table);
}

fn walk_tree(
    mem: &impl TableMemory,
    root: u64,
    slots: core::ops::Range<usize>,
    mut leaf: impl FnMut(u64, Translation),
    mut table: impl FnMut(u64),
) {
    fn walk(
        mem: &impl TableMemory,
        at: u64,
        level: usize,
        base: u64,
        leaf: &mut impl FnMut(u64, Translation),
        table: &mut impl FnMut(u64),
    ) {
        let Some(entries) = mem.table(at) else { return };
        for (i, slot) in entries.iter().enumerate() {
            let e = slot.load(Ordering::Acquire);
            // Most entries of a user tree are empty: test the bit before decoding the flags.
            if e & Flags::PRESENT.bits() == 0 {
                continue;
            }
            let flags = entry_flags(e);
            let va = base + i as u64 * span(level);
            let size = leaf_size(level, flags);
            match size {
                Some(size) => leaf(canonical(va), Translation { pa: e & ADDR_MASK & !(size.bytes() - 1), size, flags }),
                None => {
                    walk(mem, e & ADDR_MASK, level - 1, va, leaf, table);
                    table(e & ADDR_MASK);
                }
            }
        }
    }
    let Some(pml4) = mem.table(root) else { return };
    for (slot, entry) in pml4.iter().enumerate().take(slots.end).skip(slots.start) {
        let e = entry.load(Ordering::Acquire);
        if e & Flags::PRESENT.bits() != 0 {
            walk(mem, e & ADDR_MASK, 3, slot as u64 * span(4), &mut leaf, &mut table);
            table(e & ADDR_MASK);
        }
    }
}

/// A stretch of physical memory the direct map covers, `[start, end)`, page-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectRange {
    pub start: u64,
    pub end: u64,
    /// Data may be written through the direct map (false for the kernel image: its only writable
    /// mapping is its own, so code cannot be changed through an alias).
    pub writable: bool,
}

/// What the direct map covers: the first 1 MiB whole (BIOS data, the ACPI root pointer, the AP
/// trampoline), and every region that is RAM: usable, boot loader, ACPI tables and ACPI NVS
/// read-write, the kernel image read-only. Regions are widened to whole pages; where a widened page
/// would be both, read-only wins. Calls `f` with merged ranges in address order.
pub fn direct_map_ranges(map: &MemoryMap, mut f: impl FnMut(DirectRange)) {
    const PAGE: u64 = 4096;
    let low = DirectRange { start: 0, end: 1 << 20, writable: true };
    let ram = map.regions().iter().filter_map(|r| {
        let writable = match r.kind {
            RegionKind::Usable
            | RegionKind::BootloaderReclaimable
            | RegionKind::AcpiReclaimable
            | RegionKind::AcpiNvs => true,
            RegionKind::Kernel => false,
            RegionKind::Framebuffer | RegionKind::Reserved | RegionKind::Bad => return None,
        };
        Some(DirectRange { start: r.base / PAGE * PAGE, end: r.end().next_multiple_of(PAGE), writable })
    });
    let mut input = core::iter::once(low).chain(ram);
    let mut pending: Option<DirectRange> = None;
    // The part of a read-write range beyond a read-only range inside it, still to be placed.
    let mut carry: Option<DirectRange> = None;
    while let Some(mut r) = carry.take().or_else(|| input.next()) {
        let Some(p) = pending.as_mut() else {
            pending = Some(r);
            continue;
        };
        if r.start < p.end && r.writable != p.writable {
            // Shared pages: the read-only side keeps them.
            if r.writable {
                r.start = p.end;
            } else {
                if p.end > r.end {
                    carry = Some(DirectRange { start: r.end, end: p.end, writable: p.writable });
                }
                p.end = r.start;
            }
        }
        if r.start >= r.end {
            continue;
        }
        if r.start <= p.end && r.writable == p.writable {
            p.end = p.end.max(r.end);
            continue;
        }
        if p.start < p.end {
            f(*p);
        }
        *p = r;
    }
    if let Some(p) = pending.filter(|p| p.start < p.end) {
        f(p);
    }
}

/// The pages that map one [`DirectRange`]: the largest size that is aligned and fits at each step
/// (1 GiB only if the CPU has it).
pub struct DirectMapChunks {
    at: u64,
    end: u64,
    allow_1g: bool,
}

impl DirectMapChunks {
    pub fn new(range: DirectRange, allow_1g: bool) -> Self {
        Self { at: range.start, end: range.end, allow_1g }
    }
}

impl Iterator for DirectMapChunks {
    /// `(physical address, page size)`.
    type Item = (u64, PageSize);

    fn next(&mut self) -> Option<(u64, PageSize)> {
        if self.at >= self.end {
            return None;
        }
        let fits = |s: PageSize| self.at.is_multiple_of(s.bytes()) && self.end - self.at >= s.bytes();
        let size = if self.allow_1g && fits(PageSize::Size1G) {
            PageSize::Size1G
        } else if fits(PageSize::Size2M) {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        let at = self.at;
        self.at += size.bytes();
        Some((at, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memmap::Region;
    use std::{cell::RefCell, collections::BTreeMap};

    /// Page tables in boxed arrays, with a count of live tables.
    struct FakeMemory {
        tables: RefCell<BTreeMap<u64, &'static Table>>,
        next: RefCell<u64>,
        freed: RefCell<Vec<u64>>,
        limit: usize,
    }

    impl FakeMemory {
        fn new(limit: usize) -> (Self, u64) {
            let m = FakeMemory {
                tables: RefCell::default(),
                next: RefCell::new(0x10_0000),
                freed: RefCell::default(),
                limit,
            };
            let root = m.alloc_table().unwrap();
            (m, root)
        }

        fn live(&self) -> usize {
            self.tables.borrow().len()
        }
    }

    impl TableMemory for FakeMemory {
        fn table(&self, pa: u64) -> Option<&Table> {
            self.tables.borrow().get(&pa).copied()
        }

        fn alloc_table(&self) -> Option<u64> {
            if self.live() >= self.limit {
                return None;
            }
            let pa = *self.next.borrow();
            *self.next.borrow_mut() += 4096;
            let t: &'static Table = Box::leak(Box::new([const { AtomicU64::new(0) }; ENTRIES]));
            self.tables.borrow_mut().insert(pa, t);
            Some(pa)
        }

        fn free_table(&self, pa: u64) {
            assert!(self.tables.borrow_mut().remove(&pa).is_some(), "freed {pa:#x}, which is no table");
            self.freed.borrow_mut().push(pa);
        }
    }

    const KERNEL: u64 = 0xffff_ffff_8000_0000;
    const HHDM: u64 = 0xffff_8000_0000_0000;
    const RW_NX: Flags = Flags::WRITABLE.union(Flags::NO_EXECUTE);

    #[test]
    fn map_then_translate_each_size() {
        let (m, root) = FakeMemory::new(64);
        map(&m, root, KERNEL + 0x20_1000, 0x20_1000, PageSize::Size4K, Flags::GLOBAL).unwrap();
        map(&m, root, HHDM + (1 << 30), 1 << 30, PageSize::Size1G, RW_NX).unwrap();
        map(&m, root, HHDM + (2 << 20), 2 << 20, PageSize::Size2M, RW_NX).unwrap();
        let t = translate(&m, root, KERNEL + 0x20_1234).unwrap();
        assert_eq!((t.pa, t.size, t.writable(), t.executable()), (0x20_1234, PageSize::Size4K, false, true));
        let t = translate(&m, root, HHDM + (1 << 30) + 0x1234_5678).unwrap();
        assert_eq!(
            (t.pa, t.size, t.writable(), t.executable()),
            ((1 << 30) + 0x1234_5678, PageSize::Size1G, true, false)
        );
        let t = translate(&m, root, HHDM + (2 << 20) + 0x1_2345).unwrap();
        assert_eq!((t.pa, t.size), ((2 << 20) + 0x1_2345, PageSize::Size2M));
        assert_eq!(translate(&m, root, KERNEL + 0x20_2000), None);
        assert_eq!(translate(&m, root, 0x20_1000), None, "nothing maps the lower half");
        assert_eq!(translate(&m, root, 0x0000_8000_0000_0000), None, "non-canonical");
    }

    #[test]
    fn refuses_overlaps_and_misalignment() {
        let (m, root) = FakeMemory::new(64);
        map(&m, root, HHDM, 0, PageSize::Size2M, RW_NX).unwrap();
        let e = map(&m, root, HHDM + 0x1000, 0x1000, PageSize::Size4K, RW_NX);
        assert!(matches!(e, Err(MapError::AlreadyMapped(t)) if t.size == PageSize::Size2M && t.pa == 0x1000), "{e:?}");
        let e = map(&m, root, HHDM, 0x4000_0000, PageSize::Size2M, RW_NX);
        assert!(matches!(e, Err(MapError::AlreadyMapped(_))), "{e:?}");
        assert_eq!(map(&m, root, HHDM + 0x1000, 0, PageSize::Size2M, RW_NX), Err(MapError::BadAddress));
        assert_eq!(map(&m, root, HHDM, 0x1000, PageSize::Size2M, RW_NX), Err(MapError::BadAddress));
        assert_eq!(map(&m, root, 0x0000_9000_0000_0000, 0, PageSize::Size4K, RW_NX), Err(MapError::BadAddress));
    }

    #[test]
    fn running_out_of_tables_is_reported() {
        let (m, root) = FakeMemory::new(2);
        assert_eq!(map(&m, root, KERNEL, 0, PageSize::Size4K, RW_NX), Err(MapError::NoMemory));
    }

    #[test]
    fn unmap_returns_the_page_and_prunes_only_the_user_half() {
        let (m, root) = FakeMemory::new(64);
        map(&m, root, 0x8000, 0x8000, PageSize::Size4K, Flags::WRITABLE).unwrap();
        assert_eq!(m.live(), 4);
        map(&m, root, KERNEL, 0x20_0000, PageSize::Size4K, RW_NX).unwrap();
        assert_eq!(m.live(), 7);
        let t = unmap(&m, root, 0x8000).unwrap();
        assert_eq!((t.pa, t.size), (0x8000, PageSize::Size4K));
        assert_eq!(m.live(), 4, "the PT, PD and PDPT of the identity page are freed");
        assert_eq!(m.table(root).unwrap()[0].load(Ordering::Relaxed), 0, "PML4 slot 0 is empty again");
        unmap(&m, root, KERNEL).unwrap();
        assert_eq!(m.live(), 4, "kernel-half tables stay for the next mapping");
        assert_eq!(translate(&m, root, KERNEL), None);
        assert_eq!(unmap(&m, root, KERNEL), Err(UnmapError::NotMapped));
    }

    #[test]
    fn unmap_keeps_tables_that_still_map_something() {
        let (m, root) = FakeMemory::new(64);
        map(&m, root, 0x8000, 0x8000, PageSize::Size4K, Flags::WRITABLE).unwrap();
        map(&m, root, 0x9000, 0x9000, PageSize::Size4K, Flags::WRITABLE).unwrap();
        unmap(&m, root, 0x8000).unwrap();
        assert_eq!(translate(&m, root, 0x9000).map(|t| t.pa), Some(0x9000));
        assert_eq!(m.live(), 4);
    }

    #[test]
    fn unmap_range_removes_covered_leaves_and_frees_only_covered_tables() {
        let (m, root) = FakeMemory::new(64);
        for va in [0x8000, 0x9000, 0xa000, 0x40_0000] {
            map(&m, root, va, va + 0x100_0000, PageSize::Size4K, Flags::WRITABLE).unwrap();
        }
        map(&m, root, KERNEL, 0x20_0000, PageSize::Size4K, RW_NX).unwrap();
        assert_eq!(m.live(), 8);
        let mut got = Vec::new();
        unmap_range(&m, root, 0x8000..0xa000, |va, t| got.push((va, t.pa)));
        assert_eq!(got, [(0x8000, 0x100_8000), (0x9000, 0x100_9000)]);
        assert_eq!(translate(&m, root, 0xa000).map(|t| t.pa), Some(0x100_a000));
        got.clear();
        unmap_range(&m, root, 0xa000..0xb000, |va, t| got.push((va, t.pa)));
        assert_eq!(got, [(0xa000, 0x100_a000)]);
        assert_eq!(m.live(), 8, "a table the range covers in part stays, empty or not");
        got.clear();
        // The PT of 0x40_0000 spans 0x40_0000..0x60_0000: covered whole, so freed; the PD above it
        // is covered in part, so it stays.
        unmap_range(&m, root, 0x20_0000..0x60_0000, |va, t| got.push((va, t.pa)));
        assert_eq!(got, [(0x40_0000, 0x140_0000)]);
        assert_eq!(m.live(), 7);
        assert_eq!(m.freed.borrow().len(), 1, "only the covered PT was freed");
        // The whole lower half: every user table but the PML4 goes; the kernel half is untouched.
        unmap_range(&m, root, 0..u64::MAX, |_, _| panic!("nothing is mapped in the lower half"));
        assert_eq!(m.live(), 4, "the PML4 and the kernel page's three tables are left");
        assert_eq!(translate(&m, root, KERNEL).map(|t| t.pa), Some(0x20_0000));
    }

    #[test]
    fn unmap_range_leaves_a_large_page_it_covers_in_part() {
        let (m, root) = FakeMemory::new(64);
        map(&m, root, 0x20_0000, 0x20_0000, PageSize::Size2M, Flags::WRITABLE).unwrap();
        unmap_range(&m, root, 0x20_0000..0x30_0000, |_, _| panic!("a 2 MiB page covered in half was removed"));
        assert_eq!(translate(&m, root, 0x20_0000).map(|t| t.size), Some(PageSize::Size2M));
        let mut got = Vec::new();
        unmap_range(&m, root, 0x20_0000..0x40_0000, |va, t| got.push((va, t.size)));
        assert_eq!(got, [(0x20_0000, PageSize::Size2M)]);
    }

    #[test]
    fn unmap_range_inside_one_table_removes_its_leaves_and_nothing_else() {
        let (m, root) = FakeMemory::new(64);
        for va in [0x1f_f000, 0x20_0000, 0x20_1000, 0x20_2000, 0x3f_f000, 0x40_0000] {
            map(&m, root, va, va + 0x100_0000, PageSize::Size4K, Flags::WRITABLE).unwrap();
        }
        let live = m.live();
        let mut got = Vec::new();
        unmap_range(&m, root, 0x20_1000..0x20_3000, |va, t| got.push((va, t.pa)));
        assert_eq!(got, [(0x20_1000, 0x120_1000), (0x20_2000, 0x120_2000)]);
        got.clear();
        // The last page of the table's span, and a range below anything mapped.
        unmap_range(&m, root, 0x3f_f000..0x40_0000, |va, t| got.push((va, t.pa)));
        assert_eq!(got, [(0x3f_f000, 0x13f_f000)]);
        unmap_range(&m, root, 0x8000_0000..0x8000_2000, |_, _| panic!("nothing is mapped there"));
        assert_eq!(m.live(), live, "no table freed");
        for (va, left) in [(0x1f_f000, true), (0x20_0000, true), (0x20_1000, false), (0x20_2000, false), (0x3f_f000, false), (0x40_0000, true)] {
            assert_eq!(translate(&m, root, va).is_some(), left, "{va:#x}");
        }
        // Inside a 1 GiB page: covered in part, it stays.
        map(&m, root, 0x4000_0000, 0x4000_0000, PageSize::Size1G, Flags::WRITABLE).unwrap();
        unmap_range(&m, root, 0x4000_0000..0x4000_1000, |_, _| panic!("a 1 GiB page covered in part was removed"));
        assert_eq!(translate(&m, root, 0x4000_0000).map(|t| t.size), Some(PageSize::Size1G));
    }

    #[test]
    fn unmap_large_pages_needs_their_start() {
        let (m, root) = FakeMemory::new(64);
        map(&m, root, 0x4000_0000, 0x4000_0000, PageSize::Size1G, Flags::WRITABLE).unwrap();
        assert_eq!(unmap(&m, root, 0x4000_1000), Err(UnmapError::NotPageStart));
        assert_eq!(unmap(&m, root, 0x4000_0000).map(|t| t.size), Ok(PageSize::Size1G));
        assert_eq!(m.live(), 1, "only the PML4 is left");
    }

    #[test]
    fn a_destroyed_tree_gives_back_every_leaf_and_table_once() {
        let (m, root) = FakeMemory::new(64);
        map(&m, root, 0x1000, 0xa000, PageSize::Size4K, Flags::WRITABLE).unwrap();
        map(&m, root, 0x2000, 0xb000, PageSize::Size4K, Flags::WRITABLE).unwrap();
        map(&m, root, 1 << 39, 0xc000, PageSize::Size4K, Flags::WRITABLE).unwrap();
        map(&m, root, KERNEL, 0xd000, PageSize::Size4K, RW_NX).unwrap();
        let (mut leaves, mut tables) = (Vec::new(), Vec::new());
        for_each_leaf_and_table(&m, root, 0..KERNEL_HALF_FIRST_SLOT, |va, t| leaves.push((va, t.pa)), |pa| tables.push(pa));
        assert_eq!(leaves, vec![(0x1000, 0xa000), (0x2000, 0xb000), (1 << 39, 0xc000)]);
        // Two user paths of three tables each below the root; the kernel half's tables are not ours.
        assert_eq!(tables.len(), 6);
        let mut unique = tables.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 6, "a table listed twice");
        // Each table comes after the tables it holds: the PT of 0x1000 first, its PDPT third.
        let pdpt = m.table(root).unwrap()[0].load(Ordering::Relaxed) & ADDR_MASK;
        assert_eq!(tables[2], pdpt);
        assert_eq!(translate(&m, root, 0x2000).map(|t| t.pa), Some(0xb000), "nothing was unmapped");
    }

    #[test]
    fn leaves_are_listed_in_order_with_their_sizes() {
        let (m, root) = FakeMemory::new(64);
        map(&m, root, KERNEL + 0x1000, 0x5000, PageSize::Size4K, Flags::empty()).unwrap();
        map(&m, root, HHDM + (1 << 30), 1 << 30, PageSize::Size1G, RW_NX).unwrap();
        map(&m, root, HHDM, 0, PageSize::Size2M, RW_NX).unwrap();
        map(&m, root, 0x1000, 0x1000, PageSize::Size4K, Flags::WRITABLE).unwrap();
        let mut seen = Vec::new();
        for_each_leaf(&m, root, KERNEL_HALF_FIRST_SLOT..ENTRIES, |va, t| seen.push((va, t.pa, t.size)));
        assert_eq!(
            seen,
            vec![
                (HHDM, 0, PageSize::Size2M),
                (HHDM + (1 << 30), 1 << 30, PageSize::Size1G),
                (KERNEL + 0x1000, 0x5000, PageSize::Size4K)
            ]
        );
    }

    #[test]
    fn shared_kernel_half_sees_later_mappings() {
        let (m, root) = FakeMemory::new(600);
        assert_eq!(populate_slots(&m, root, KERNEL_HALF_FIRST_SLOT..ENTRIES), Ok(256));
        assert_eq!(populate_slots(&m, root, KERNEL_HALF_FIRST_SLOT..ENTRIES), Ok(0), "populating twice adds nothing");
        let other = m.alloc_table().unwrap();
        map(&m, other, 0x40_0000, 0x40_0000, PageSize::Size4K, Flags::USER_ACCESSIBLE).unwrap();
        copy_slots(&m, root, other, KERNEL_HALF_FIRST_SLOT..ENTRIES).unwrap();
        map(&m, root, HHDM + 0x7000, 0x7000, PageSize::Size4K, RW_NX).unwrap();
        assert_eq!(translate(&m, other, HHDM + 0x7000).map(|t| t.pa), Some(0x7000), "a later kernel mapping shows");
        assert_eq!(translate(&m, other, 0x40_0000).map(|t| t.pa), Some(0x40_0000), "the user half is untouched");
        assert_eq!(translate(&m, root, 0x40_0000), None, "the user half is not shared");
    }

    fn ranges(rs: &[(u64, u64, RegionKind)]) -> Vec<(u64, u64, bool)> {
        let mut m = MemoryMap::new();
        for &(base, len, kind) in rs {
            m.push(Region { base, len, kind }).unwrap();
        }
        m.normalize().unwrap();
        let mut out = Vec::new();
        direct_map_ranges(&m, |r| out.push((r.start, r.end, r.writable)));
        out
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn direct_map_covers_ram_and_low_memory_only() {
        use RegionKind::*;
        let got = ranges(&[
            (0, 0x9fc00, Usable),
            (0x9fc00, 0x400, Reserved),
            (0xf0000, 0x10000, Reserved),
            (MIB, MIB, Usable),
            (2 * MIB, 6 * MIB, Kernel),
            (8 * MIB, 504 * MIB, Usable),
            (512 * MIB - 0x20000, 0x20000, Reserved),
            (0xfd00_0000, 16 * MIB, Framebuffer),
            (0xfee0_0000, 0x1000, Reserved),
            (4096 * MIB, 1024 * MIB, Usable),
        ]);
        assert_eq!(
            got,
            vec![
                (0, 2 * MIB, true),
                (2 * MIB, 8 * MIB, false),
                (8 * MIB, 512 * MIB - 0x20000, true),
                (4096 * MIB, 5120 * MIB, true),
            ]
        );
    }

    #[test]
    fn a_shared_page_goes_to_the_read_only_side() {
        use RegionKind::*;
        let got = ranges(&[
            (2 * MIB, 0x1800, Usable),
            (2 * MIB + 0x1800, 0x2800, Kernel),
            (2 * MIB + 0x4000, 0x1000, AcpiNvs),
        ]);
        assert_eq!(
            got,
            vec![
                (0, MIB, true),
                (2 * MIB, 2 * MIB + 0x1000, true),
                (2 * MIB + 0x1000, 2 * MIB + 0x4000, false),
                (2 * MIB + 0x4000, 2 * MIB + 0x5000, true)
            ]
        );
    }

    #[test]
    fn read_only_inside_low_memory_splits_it() {
        use RegionKind::*;
        let got = ranges(&[(0x8000, 0x2000, Kernel), (0xa000, 0x1000, Usable)]);
        assert_eq!(got, vec![(0, 0x8000, true), (0x8000, 0xa000, false), (0xa000, MIB, true)]);
    }

    #[test]
    fn chunks_use_the_largest_aligned_pages() {
        let r = DirectRange { start: MIB - 0x1000, end: 2048 * MIB + 0x3000, writable: true };
        let sizes = |allow_1g| {
            let mut count = BTreeMap::new();
            let mut at = r.start;
            for (pa, size) in DirectMapChunks::new(r, allow_1g) {
                assert_eq!(pa, at, "chunks are contiguous");
                assert_eq!(pa % size.bytes(), 0, "chunk at {pa:#x} misaligned for {size:?}");
                at += size.bytes();
                *count.entry(size.bytes()).or_insert(0) += 1;
            }
            assert_eq!(at, r.end);
            count
        };
        // 1 page up to 1 MiB, 256 pages up to 2 MiB, 2 MiB pages to 1 GiB, one 1 GiB page, 3 pages.
        assert_eq!(sizes(true), BTreeMap::from([(4096, 1 + 256 + 3), (2 * MIB, 511), (1024 * MIB, 1)]));
        assert_eq!(sizes(false), BTreeMap::from([(4096, 1 + 256 + 3), (2 * MIB, 511 + 512)]));
    }
}
