//! [`CpuMap`]: the translation between the kernel's dense [`CpuId`]s and the firmware's
//! [`ApicId`]s and [`AcpiUid`]s, built once at bring-up from the MADT's processor list.
//!
//! The bootstrap processor becomes `CpuId` 0 wherever it appears in the list; the others follow in
//! list order. The kernel parses the MADT (skipping disabled entries) and hands the resulting
//! `(ApicId, AcpiUid)` pairs to [`CpuMap::from_firmware`]; IPIs then go to
//! [`CpuMap::apic_of`] and interrupts arriving with an APIC id find their CPU through
//! [`CpuMap::cpu_of`]. Storage is fixed-size (about 5 KiB), so no allocator is needed.

use core::fmt;

use crate::cpuset::CpuSet;
use crate::ids::{AcpiUid, ApicId, CpuId, MAX_CPUS};

/// Why a firmware processor list was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CpuMapError {
    /// Two entries carry the same APIC id: IPIs to it would be ambiguous.
    DuplicateApicId(ApicId),
    /// Two entries carry the same ACPI processor UID: namespace objects would be ambiguous.
    DuplicateAcpiUid(AcpiUid),
    /// The list describes more processors than [`MAX_CPUS`].
    TooManyCpus {
        /// The limit that was exceeded.
        max: usize,
    },
    /// The processor the kernel booted on is not in the list.
    BspNotListed(ApicId),
}

impl fmt::Display for CpuMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuMapError::DuplicateApicId(apic) => {
                write!(f, "firmware lists {apic} more than once")
            }
            CpuMapError::DuplicateAcpiUid(uid) => {
                write!(f, "firmware lists ACPI processor {uid} more than once")
            }
            CpuMapError::TooManyCpus { max } => {
                write!(f, "firmware lists more than {max} processors")
            }
            CpuMapError::BspNotListed(apic) => {
                write!(
                    f,
                    "the bootstrap processor ({apic}) is not in the firmware list"
                )
            }
        }
    }
}

impl core::error::Error for CpuMapError {}

/// The CPUs a map is built from, out of what firmware lists: the boot CPU (`bsp`) wherever it is
/// listed, and the first `keep - 1` others that `usable` accepts, in the listed order. `keep` is
/// capped at [`MAX_CPUS`], so a machine with more CPUs runs on the first ones instead of failing
/// [`CpuMap::from_firmware`] with [`CpuMapError::TooManyCpus`].
pub fn choose_cpus(
    bsp: ApicId,
    cpus: impl IntoIterator<Item = (ApicId, AcpiUid)>,
    keep: usize,
    usable: impl Fn(ApicId) -> bool,
) -> impl Iterator<Item = (ApicId, AcpiUid)> {
    let keep = keep.clamp(1, MAX_CPUS);
    let mut others = 0usize;
    cpus.into_iter().filter(move |&(apic, _)| {
        apic == bsp
            || usable(apic) && {
                others += 1;
                others < keep
            }
    })
}

/// The CPUs of this machine: `CpuId` <-> `ApicId`, and each CPU's `AcpiUid`.
#[derive(Clone)]
pub struct CpuMap {
    nr_cpus: usize,
    apic_ids: [ApicId; MAX_CPUS],
    acpi_uids: [AcpiUid; MAX_CPUS],
    /// The first `nr_cpus` entries are the CPU indices sorted by APIC id, for `cpu_of`.
    by_apic: [u16; MAX_CPUS],
}

impl CpuMap {
    /// Builds the map from the firmware's enabled processors, `bsp` being the APIC id of the
    /// processor running this code. The BSP becomes `CpuId` 0; the others are numbered from 1 in
    /// the order of `cpus`.
    pub fn from_firmware(
        bsp: ApicId,
        cpus: impl IntoIterator<Item = (ApicId, AcpiUid)>,
    ) -> Result<CpuMap, CpuMapError> {
        let mut map = CpuMap {
            nr_cpus: 1,
            apic_ids: [ApicId::new(0); MAX_CPUS],
            acpi_uids: [AcpiUid::new(0); MAX_CPUS],
            by_apic: [0; MAX_CPUS],
        };
        map.apic_ids[0] = bsp;
        let mut bsp_seen = false;
        for (apic, uid) in cpus {
            // A linear scan: at most MAX_CPUS^2 / 2 comparisons, once, at boot.
            let uid_taken = map.acpi_uids[1..map.nr_cpus].contains(&uid)
                || (bsp_seen && map.acpi_uids[0] == uid);
            if apic == bsp {
                if bsp_seen {
                    return Err(CpuMapError::DuplicateApicId(apic));
                }
                if uid_taken {
                    return Err(CpuMapError::DuplicateAcpiUid(uid));
                }
                bsp_seen = true;
                map.acpi_uids[0] = uid;
                continue;
            }
            let pos = match map.search(apic) {
                Ok(_) => return Err(CpuMapError::DuplicateApicId(apic)),
                Err(pos) => pos,
            };
            if map.nr_cpus == MAX_CPUS {
                return Err(CpuMapError::TooManyCpus { max: MAX_CPUS });
            }
            if uid_taken {
                return Err(CpuMapError::DuplicateAcpiUid(uid));
            }
            let index = map.nr_cpus;
            map.apic_ids[index] = apic;
            map.acpi_uids[index] = uid;
            // Keep `by_apic` sorted: shift the larger ids up by one and slot the new CPU in.
            map.by_apic.copy_within(pos..index, pos + 1);
            map.by_apic[pos] = index as u16;
            map.nr_cpus += 1;
        }
        if bsp_seen {
            Ok(map)
        } else {
            Err(CpuMapError::BspNotListed(bsp))
        }
    }

    /// Binary search of `apic` in the sorted index: `Ok(position)` if present, else
    /// `Err(insertion position)`.
    fn search(&self, apic: ApicId) -> Result<usize, usize> {
        self.by_apic[..self.nr_cpus].binary_search_by_key(&apic, |&i| self.apic_ids[usize::from(i)])
    }

    /// The number of CPUs, at least 1 (the BSP).
    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// All CPUs: `0..nr_cpus`.
    pub fn cpus(&self) -> CpuSet {
        CpuSet::first_n(self.nr_cpus)
    }

    /// The CPU answering to `apic`, if it is one of ours.
    pub fn cpu_of(&self, apic: ApicId) -> Option<CpuId> {
        let pos = self.search(apic).ok()?;
        CpuId::new(u32::from(self.by_apic[pos]))
    }

    /// The APIC id of `cpu`, or `None` if `cpu` is not below `nr_cpus`.
    #[inline]
    pub fn apic_of(&self, cpu: CpuId) -> Option<ApicId> {
        self.apic_ids[..self.nr_cpus].get(cpu.index()).copied()
    }

    /// The ACPI processor UID of `cpu`, or `None` if `cpu` is not below `nr_cpus`.
    pub fn acpi_uid_of(&self, cpu: CpuId) -> Option<AcpiUid> {
        self.acpi_uids[..self.nr_cpus].get(cpu.index()).copied()
    }

    /// Every CPU with its ids, in `CpuId` order.
    pub fn iter(&self) -> impl Iterator<Item = (CpuId, ApicId, AcpiUid)> + '_ {
        self.cpus()
            .iter()
            .map(|cpu| (cpu, self.apic_ids[cpu.index()], self.acpi_uids[cpu.index()]))
    }
}

/// Lists the CPUs only; the unused tail of the arrays is noise.
impl fmt::Debug for CpuMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apic(raw: u32) -> ApicId {
        ApicId::new(raw)
    }

    fn uid(raw: u32) -> AcpiUid {
        AcpiUid::new(raw)
    }

    fn cpu(index: u32) -> CpuId {
        CpuId::new(index).unwrap()
    }

    #[test]
    fn bsp_becomes_cpu_0_and_the_rest_keep_list_order() {
        let list = [
            (apic(4), uid(1)),
            (apic(0), uid(0)),
            (apic(2), uid(5)),
            (apic(6), uid(3)),
        ];
        let map = CpuMap::from_firmware(apic(2), list).unwrap();
        assert_eq!(map.nr_cpus(), 4);
        let got: Vec<_> = map.iter().collect();
        assert_eq!(
            got,
            vec![
                (cpu(0), apic(2), uid(5)),
                (cpu(1), apic(4), uid(1)),
                (cpu(2), apic(0), uid(0)),
                (cpu(3), apic(6), uid(3)),
            ]
        );
    }

    #[test]
    fn cpu_of_inverts_apic_of() {
        // Scrambled, sparse and x2APIC-sized ids.
        let ids = [7u32, 1, 300, 0x1_0000, 2, 64, 0xffff_fff0, 5];
        let list = ids
            .iter()
            .enumerate()
            .map(|(i, &a)| (apic(a), uid(i as u32)));
        let map = CpuMap::from_firmware(apic(300), list).unwrap();
        assert_eq!(map.nr_cpus(), ids.len());
        for c in map.cpus().iter() {
            let a = map.apic_of(c).unwrap();
            assert_eq!(map.cpu_of(a), Some(c));
        }
        assert_eq!(map.cpu_of(apic(300)), Some(CpuId::BSP));
        assert_eq!(map.cpu_of(apic(3)), None);
        assert_eq!(map.cpu_of(apic(u32::MAX)), None);
    }

    #[test]
    fn apic_of_and_acpi_uid_of_reject_cpus_beyond_nr_cpus() {
        let map = CpuMap::from_firmware(apic(0), [(apic(0), uid(10)), (apic(1), uid(11))]).unwrap();
        assert_eq!(map.apic_of(cpu(1)), Some(apic(1)));
        assert_eq!(map.acpi_uid_of(cpu(0)), Some(uid(10)));
        assert_eq!(map.acpi_uid_of(cpu(1)), Some(uid(11)));
        assert_eq!(map.apic_of(cpu(2)), None);
        assert_eq!(map.acpi_uid_of(cpu(2)), None);
    }

    #[test]
    fn cpus_is_the_first_nr_cpus() {
        let map = CpuMap::from_firmware(apic(9), [(apic(9), uid(0)), (apic(3), uid(1))]).unwrap();
        assert_eq!(map.cpus(), CpuSet::first_n(2));
    }

    #[test]
    fn a_single_cpu_machine_works() {
        let map = CpuMap::from_firmware(apic(0), [(apic(0), uid(0))]).unwrap();
        assert_eq!(map.nr_cpus(), 1);
        assert_eq!(map.cpu_of(apic(0)), Some(CpuId::BSP));
        assert_eq!(format!("{map:?}"), "[(CpuId(0), ApicId(0), AcpiUid(0))]");
    }

    #[test]
    fn duplicate_apic_ids_are_refused() {
        let list = [(apic(0), uid(0)), (apic(1), uid(1)), (apic(1), uid(2))];
        assert_eq!(
            CpuMap::from_firmware(apic(0), list).unwrap_err(),
            CpuMapError::DuplicateApicId(apic(1))
        );
        let bsp_twice = [(apic(0), uid(0)), (apic(0), uid(1))];
        assert_eq!(
            CpuMap::from_firmware(apic(0), bsp_twice).unwrap_err(),
            CpuMapError::DuplicateApicId(apic(0))
        );
    }

    #[test]
    fn duplicate_acpi_uids_are_refused() {
        let list = [(apic(0), uid(0)), (apic(1), uid(4)), (apic(2), uid(4))];
        assert_eq!(
            CpuMap::from_firmware(apic(0), list).unwrap_err(),
            CpuMapError::DuplicateAcpiUid(uid(4))
        );
        // The BSP listed after a CPU with the same UID, and before one.
        let bsp_late = [(apic(1), uid(4)), (apic(0), uid(4))];
        assert_eq!(
            CpuMap::from_firmware(apic(0), bsp_late).unwrap_err(),
            CpuMapError::DuplicateAcpiUid(uid(4))
        );
        let bsp_early = [(apic(0), uid(4)), (apic(1), uid(4))];
        assert_eq!(
            CpuMap::from_firmware(apic(0), bsp_early).unwrap_err(),
            CpuMapError::DuplicateAcpiUid(uid(4))
        );
    }

    #[test]
    fn a_missing_bsp_is_refused() {
        let list = [(apic(1), uid(1)), (apic(2), uid(2))];
        assert_eq!(
            CpuMap::from_firmware(apic(0), list).unwrap_err(),
            CpuMapError::BspNotListed(apic(0))
        );
    }

    #[test]
    fn exactly_max_cpus_fit_and_one_more_is_refused() {
        let full = (0..MAX_CPUS as u32).rev().map(|i| (apic(i * 2), uid(i)));
        let map = CpuMap::from_firmware(apic(0), full).unwrap();
        assert_eq!(map.nr_cpus(), MAX_CPUS);
        assert_eq!(map.cpu_of(apic(0)), Some(CpuId::BSP));
        assert_eq!(map.cpu_of(apic(2 * (MAX_CPUS as u32 - 1))), Some(cpu(1)));
        for c in map.cpus().iter() {
            assert_eq!(map.cpu_of(map.apic_of(c).unwrap()), Some(c));
        }

        let over = (0..=MAX_CPUS as u32).map(|i| (apic(i), uid(i)));
        assert_eq!(
            CpuMap::from_firmware(apic(0), over).unwrap_err(),
            CpuMapError::TooManyCpus { max: MAX_CPUS }
        );
    }

    #[test]
    fn errors_explain_themselves() {
        assert_eq!(
            CpuMapError::DuplicateApicId(apic(3)).to_string(),
            "firmware lists apic3 more than once"
        );
        assert_eq!(
            CpuMapError::DuplicateAcpiUid(uid(3)).to_string(),
            "firmware lists ACPI processor uid3 more than once"
        );
        assert_eq!(
            CpuMapError::TooManyCpus { max: 512 }.to_string(),
            "firmware lists more than 512 processors"
        );
        assert_eq!(
            CpuMapError::BspNotListed(apic(8)).to_string(),
            "the bootstrap processor (apic8) is not in the firmware list"
        );
    }

    #[test]
    fn choose_keeps_the_first_512_of_600_with_the_bsp_anywhere() {
        for bsp_at in [0u32, 300, 599] {
            let listed = (0..600u32).map(|i| (apic(i), uid(i)));
            let map = CpuMap::from_firmware(apic(bsp_at), choose_cpus(apic(bsp_at), listed, usize::MAX, |_| true))
                .expect("the first 512 make a map");
            assert_eq!(map.nr_cpus(), MAX_CPUS);
            assert_eq!(map.apic_of(cpu(0)), Some(apic(bsp_at)));
            // The others are the first 511 listed after setting the boot CPU aside.
            let last_in = if bsp_at < MAX_CPUS as u32 { MAX_CPUS as u32 - 1 } else { MAX_CPUS as u32 - 2 };
            assert!(map.cpu_of(apic(last_in)).is_some(), "bsp at {bsp_at}");
            assert!(map.cpu_of(apic(last_in + 1)).is_none(), "bsp at {bsp_at}");
        }
    }

    #[test]
    fn choose_honours_keep_and_usable() {
        let listed = (0..10u32).map(|i| (apic(i), uid(i)));
        let chosen: std::vec::Vec<u32> = choose_cpus(apic(5), listed, 4, |a| a.get() % 2 == 0).map(|(a, _)| a.get()).collect();
        assert_eq!(chosen, [0, 2, 4, 5]);
    }
}
