//! The three ways a processor is named, as distinct types that cannot be mixed up.
//!
//! - [`CpuId`]: the kernel's own dense index `0..nr_cpus`, used to index per-CPU arrays and the
//!   bits of a [`CpuSet`](crate::cpuset::CpuSet). CPU 0 is always the bootstrap processor.
//! - [`ApicId`]: the local APIC id the hardware answers to (32 bits wide with x2APIC), used to
//!   address IPIs.
//! - [`AcpiUid`]: the ACPI processor UID, used to match the processor's objects in the ACPI
//!   namespace.
//!
//! The translation between them is [`CpuMap`](crate::cpumap::CpuMap). None of these types has
//! arithmetic: an id is a name, not a number to compute with.

use core::fmt;

/// The largest number of CPUs the kernel supports.
///
/// 512 rather than 255: with x2APIC the MADT may describe processors whose APIC id does not fit
/// in a byte, and machines with more than 255 logical processors exist.
pub const MAX_CPUS: usize = 512;

/// A dense CPU index in `0..nr_cpus` (always below [`MAX_CPUS`]).
///
/// Built only through [`CpuId::new`] (or handed out by a `CpuMap` or a `CpuSet`), so every value
/// is a valid index for an array of `MAX_CPUS` entries.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct CpuId(u32);

impl CpuId {
    /// The bootstrap processor, always index 0.
    pub const BSP: CpuId = CpuId(0);

    /// The CPU with dense index `index`, or `None` if `index >= MAX_CPUS`.
    pub const fn new(index: u32) -> Option<CpuId> {
        if (index as usize) < MAX_CPUS {
            Some(CpuId(index))
        } else {
            None
        }
    }

    /// The index into a per-CPU array.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The raw index.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}

/// A local APIC id, as found in the MADT and in the APIC's id register (32 bits with x2APIC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ApicId(u32);

impl ApicId {
    /// The APIC id `raw`.
    pub const fn new(raw: u32) -> ApicId {
        ApicId(raw)
    }

    /// The raw id, as written into the ICR destination field.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ApicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "apic{}", self.0)
    }
}

/// An ACPI processor UID, as found in the MADT and in the processor's `_UID` object.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct AcpiUid(u32);

impl AcpiUid {
    /// The ACPI processor UID `raw`.
    pub const fn new(raw: u32) -> AcpiUid {
        AcpiUid(raw)
    }

    /// The raw UID.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for AcpiUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_id_new_accepts_exactly_the_indices_below_max_cpus() {
        assert_eq!(CpuId::new(0), Some(CpuId::BSP));
        let last = CpuId::new(MAX_CPUS as u32 - 1).expect("last index is valid");
        assert_eq!(last.index(), MAX_CPUS - 1);
        assert_eq!(CpuId::new(MAX_CPUS as u32), None);
        assert_eq!(CpuId::new(u32::MAX), None);
    }

    #[test]
    fn cpu_id_index_and_get_return_the_index() {
        let cpu = CpuId::new(37).unwrap();
        assert_eq!(cpu.index(), 37);
        assert_eq!(cpu.get(), 37);
        assert_eq!(CpuId::BSP.index(), 0);
    }

    #[test]
    fn cpu_ids_order_by_index() {
        assert!(CpuId::new(3).unwrap() < CpuId::new(10).unwrap());
    }

    #[test]
    fn apic_id_and_acpi_uid_round_trip_the_full_32_bits() {
        assert_eq!(ApicId::new(0xffff_fffe).get(), 0xffff_fffe);
        assert_eq!(AcpiUid::new(0x1_0000).get(), 0x1_0000);
    }

    #[test]
    fn display_names_the_kind_of_id() {
        assert_eq!(CpuId::new(5).unwrap().to_string(), "cpu5");
        assert_eq!(ApicId::new(300).to_string(), "apic300");
        assert_eq!(AcpiUid::new(7).to_string(), "uid7");
    }

    #[test]
    fn debug_names_the_type() {
        assert_eq!(format!("{:?}", CpuId::new(2).unwrap()), "CpuId(2)");
        assert_eq!(format!("{:?}", ApicId::new(2)), "ApicId(2)");
        assert_eq!(format!("{:?}", AcpiUid::new(2)), "AcpiUid(2)");
    }
}
