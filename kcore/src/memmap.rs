//! The physical memory map in one form for both boot paths.
//!
//! Limine hands over its own entry types, the PVH start info hands over E820 types; both become a
//! [`MemoryMap`] of [`Region`]s. [`MemoryMap::normalize`] sorts the regions, clips overlaps (the more
//! restrictive kind wins the overlapping bytes, so a firmware map that lists RAM over a reserved hole
//! never hands the hole out) and merges neighbours of one kind. Fixed capacity: it exists before the
//! heap does.

/// How many regions a map can hold; firmware maps on real machines stay well below this.
pub const MAX_REGIONS: usize = 256;

/// What a range of physical memory is. The order is the precedence when two regions overlap: a later
/// variant wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RegionKind {
    /// Free RAM.
    Usable,
    /// RAM the boot loader used (its page tables, the boot information); free once the kernel no longer
    /// reads the boot information.
    BootloaderReclaimable,
    /// ACPI tables; RAM once the tables have been read and copied.
    AcpiReclaimable,
    /// The kernel image and boot modules.
    Kernel,
    /// Framebuffer memory.
    Framebuffer,
    /// ACPI non-volatile storage: never usable.
    AcpiNvs,
    /// Reserved by the firmware or hardware.
    Reserved,
    /// Memory reported bad.
    Bad,
}

impl RegionKind {
    /// The E820 type numbers (ACPI 6.5, table 15.312 "Address Range Types").
    pub fn from_e820(ty: u32) -> Self {
        match ty {
            1 => RegionKind::Usable,
            3 => RegionKind::AcpiReclaimable,
            4 => RegionKind::AcpiNvs,
            5 => RegionKind::Bad,
            _ => RegionKind::Reserved,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RegionKind::Usable => "usable",
            RegionKind::BootloaderReclaimable => "bootloader-reclaimable",
            RegionKind::AcpiReclaimable => "acpi-reclaimable",
            RegionKind::Kernel => "kernel",
            RegionKind::Framebuffer => "framebuffer",
            RegionKind::AcpiNvs => "acpi-nvs",
            RegionKind::Reserved => "reserved",
            RegionKind::Bad => "bad",
        }
    }
}

/// A range of physical memory `[base, base + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub len: u64,
    pub kind: RegionKind,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }
}

/// The map ran out of room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// A fixed-capacity memory map.
#[derive(Clone, Debug)]
pub struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    len: usize,
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMap {
    pub const fn new() -> Self {
        Self { regions: [Region { base: 0, len: 0, kind: RegionKind::Reserved }; MAX_REGIONS], len: 0 }
    }

    /// Add a region (empty ones are dropped).
    pub fn push(&mut self, r: Region) -> Result<(), Full> {
        if r.len == 0 {
            return Ok(());
        }
        let slot = self.regions.get_mut(self.len).ok_or(Full)?;
        *slot = r;
        self.len += 1;
        Ok(())
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Sort, resolve overlaps (the higher-precedence kind keeps the bytes) and merge neighbours of the
    /// same kind. Works in place by sweeping over the region boundaries.
    pub fn normalize(&mut self) -> Result<(), Full> {
        let input = self.clone();
        let mut points = [0u64; 2 * MAX_REGIONS];
        let mut n = 0;
        for r in input.regions() {
            points[n] = r.base;
            points[n + 1] = r.end();
            n += 2;
        }
        let points = &mut points[..n];
        points.sort_unstable();
        self.len = 0;
        let mut i = 0;
        while i + 1 < points.len() {
            let (a, b) = (points[i], points[i + 1]);
            i += 1;
            if a == b {
                continue;
            }
            // The kind of [a, b): the strongest region covering it, if any.
            let kind = input.regions().iter().filter(|r| r.base <= a && r.end() >= b).map(|r| r.kind).max();
            let Some(kind) = kind else { continue };
            match self.len.checked_sub(1).map(|l| &mut self.regions[l]) {
                Some(last) if last.kind == kind && last.end() == a => last.len += b - a,
                _ => self.push(Region { base: a, len: b - a, kind })?,
            }
        }
        Ok(())
    }

    /// Total bytes of one kind.
    pub fn bytes(&self, kind: RegionKind) -> u64 {
        self.regions().iter().filter(|r| r.kind == kind).map(|r| r.len).sum()
    }

    /// The highest address of any RAM-backed region (what the direct map must cover; device memory
    /// such as a framebuffer is mapped on its own).
    pub fn top_of_ram(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| !matches!(r.kind, RegionKind::Reserved | RegionKind::Bad | RegionKind::Framebuffer))
            .map(|r| r.end())
            .max()
            .unwrap_or(0)
    }

    /// Turn every region of `from` into `to` (reclaiming boot memory), then re-normalise.
    pub fn reclassify(&mut self, from: RegionKind, to: RegionKind) {
        for r in &mut self.regions[..self.len] {
            if r.kind == from {
                r.kind = to;
            }
        }
        // Merging only shrinks the map, so this cannot run out of room.
        let _ = self.normalize();
    }

    /// Mark `[base, base + len)` as `kind`, overriding whatever was there (the kernel image on the PVH
    /// path, whose E820 map calls it RAM).
    pub fn carve(&mut self, base: u64, len: u64, kind: RegionKind) -> Result<(), Full> {
        // Cut every region at the carve's edges so the carved bytes can be retyped without precedence.
        let input = self.clone();
        self.len = 0;
        let end = base.saturating_add(len);
        for r in input.regions() {
            let pieces = [
                Region { base: r.base, len: r.end().min(base).saturating_sub(r.base), kind: r.kind },
                Region { base: end.max(r.base), len: r.end().saturating_sub(end.max(r.base)), kind: r.kind },
            ];
            for p in pieces {
                if p.base < p.end() && (p.end() <= base || p.base >= end) {
                    self.push(p)?;
                }
            }
        }
        self.push(Region { base, len, kind })?;
        self.normalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rs: &[(u64, u64, RegionKind)]) -> MemoryMap {
        let mut m = MemoryMap::new();
        for &(base, len, kind) in rs {
            m.push(Region { base, len, kind }).unwrap();
        }
        m
    }

    fn triples(m: &MemoryMap) -> Vec<(u64, u64, RegionKind)> {
        m.regions().iter().map(|r| (r.base, r.len, r.kind)).collect()
    }

    use RegionKind::*;

    #[test]
    fn sorts_and_merges_neighbours() {
        let mut m = map(&[(0x2000, 0x1000, Usable), (0x0, 0x1000, Usable), (0x1000, 0x1000, Usable)]);
        m.normalize().unwrap();
        assert_eq!(triples(&m), vec![(0, 0x3000, Usable)]);
    }

    #[test]
    fn overlap_goes_to_the_more_restrictive_kind() {
        let mut m = map(&[(0, 0x10000, Usable), (0x4000, 0x2000, Reserved)]);
        m.normalize().unwrap();
        assert_eq!(triples(&m), vec![(0, 0x4000, Usable), (0x4000, 0x2000, Reserved), (0x6000, 0xa000, Usable)]);
    }

    #[test]
    fn holes_stay_holes() {
        let mut m = map(&[(0, 0x1000, Usable), (0x3000, 0x1000, Usable)]);
        m.normalize().unwrap();
        assert_eq!(triples(&m), vec![(0, 0x1000, Usable), (0x3000, 0x1000, Usable)]);
    }

    #[test]
    fn e820_types_map() {
        assert_eq!(RegionKind::from_e820(1), Usable);
        assert_eq!(RegionKind::from_e820(2), Reserved);
        assert_eq!(RegionKind::from_e820(3), AcpiReclaimable);
        assert_eq!(RegionKind::from_e820(4), AcpiNvs);
        assert_eq!(RegionKind::from_e820(5), Bad);
        assert_eq!(RegionKind::from_e820(12), Reserved);
    }

    #[test]
    fn carve_retypes_the_kernel_inside_ram() {
        let mut m = map(&[(0, 0x100000, Usable)]);
        m.carve(0x20000, 0x10000, Kernel).unwrap();
        assert_eq!(triples(&m), vec![(0, 0x20000, Usable), (0x20000, 0x10000, Kernel), (0x30000, 0xd0000, Usable)]);
        assert_eq!(m.bytes(Usable), 0xf0000);
    }

    #[test]
    fn reclaim_merges_into_usable() {
        let mut m = map(&[(0, 0x1000, Usable), (0x1000, 0x1000, BootloaderReclaimable), (0x2000, 0x1000, Usable)]);
        m.normalize().unwrap();
        m.reclassify(BootloaderReclaimable, Usable);
        assert_eq!(triples(&m), vec![(0, 0x3000, Usable)]);
    }

    #[test]
    fn full_map_reports_full() {
        let mut m = MemoryMap::new();
        for i in 0..MAX_REGIONS as u64 {
            m.push(Region { base: i * 0x2000, len: 0x1000, kind: Usable }).unwrap();
        }
        assert_eq!(m.push(Region { base: 1 << 40, len: 1, kind: Usable }), Err(Full));
    }

    #[test]
    fn top_of_ram_ignores_reserved() {
        let m = map(&[(0, 0x1000, Usable), (0xfee0_0000, 0x1000, Reserved), (0x8000, 0x1000, AcpiNvs)]);
        assert_eq!(m.top_of_ram(), 0x9000);
    }
}
