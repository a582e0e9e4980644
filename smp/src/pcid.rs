//! Per-CPU PCID slots: which address spaces this CPU keeps tagged TLB entries for, and whether a
//! switch to one of them must flush.
//!
//! With CR4.PCIDE set, every TLB entry carries the 12-bit PCID that was in CR3 (bits 0-11) when it
//! was filled. A CR3 write with bit 63 set keeps the entries of the new PCID; without it, that
//! PCID's entries are dropped. Each CPU owns a [`PcidTable`] of `N` slots (PCIDs `1..=N`; PCID 0
//! stays with the boot / kernel-only context) and hands them to address spaces ([`AsId`]) in
//! least-recently-used order. A slot remembers the TLB generation of its address space that its
//! entries are synced to (see `tracker::TlbTracker` for who bumps generations), so
//! [`PcidTable::switch_to`] can tell a clean hit from a stale one.
//!
//! The table is private to its CPU (`&mut self`, no atomics, no lock): the kernel keeps one in
//! each CPU's data and touches it only from that CPU with interrupts off. `tracker` builds the
//! cross-CPU protocol on top of it.

use core::fmt;

/// The number of PCID slots per CPU unless a table is declared with another `N`.
///
/// Six, as Linux has settled on: a CPU's second-level TLB holds on the order of 1,500 to 2,000
/// 4 KiB entries, so the entries of more than a handful of recently run address spaces are gone
/// by capacity before their owner returns and a slot for them buys no hits; every slot also
/// keeps this CPU in its address space's `may_cache` set (longer lazy catch-up lists for
/// shootdowns), and the LRU scan on each switch is linear in `N`.
pub const DEFAULT_PCID_SLOTS: usize = 6;

/// A PCID that can be handed to an address space: `1..=4095` (0 is the kernel-only context's).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Pcid(u16);

impl Pcid {
    /// The largest PCID (12 bits).
    pub const MAX: u16 = 4095;

    /// The PCID `raw`, or `None` unless `1 <= raw <= 4095`.
    pub const fn new(raw: u16) -> Option<Pcid> {
        if raw >= 1 && raw <= Pcid::MAX {
            Some(Pcid(raw))
        } else {
            None
        }
    }

    /// The raw value, for CR3 bits 0-11 or an INVPCID descriptor.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Pcid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pcid{}", self.0)
    }
}

/// The identity of an address space, unique for the kernel's lifetime: the kernel hands them out
/// from a counter and never reuses one, so a slot still naming a destroyed address space can
/// never be mistaken for a live one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct AsId(u64);

impl AsId {
    /// The address-space identity `raw`.
    pub const fn new(raw: u64) -> AsId {
        AsId(raw)
    }

    /// The raw identity.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for AsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "as{}", self.0)
    }
}

/// How a switch found its slot; see [`PcidTable::switch_to`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SwitchKind {
    /// The address space held a slot synced to its current generation: no flush.
    Hit,
    /// The address space held a slot synced to an older generation: flush that PCID.
    Stale,
    /// No slot; a free one was taken (it may hold entries of a former owner): flush.
    Miss,
    /// No slot and none free: the least recently used one was taken from the given address
    /// space, which loses its entries on this CPU with the flush.
    Recycled(AsId),
}

/// What the kernel must do to enter an address space: load its CR3 with `pcid`, with bit 63 set
/// (keep entries) unless `flush`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SwitchIn {
    /// The PCID to load.
    pub pcid: Pcid,
    /// Whether the CR3 write must drop `pcid`'s entries (bit 63 clear).
    pub flush: bool,
    /// Why.
    pub kind: SwitchKind,
}

/// Counts of [`PcidTable::switch_to`] outcomes, one per kind; they add up to the number of calls.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PcidStats {
    /// [`SwitchKind::Hit`] outcomes.
    pub hits: u64,
    /// [`SwitchKind::Stale`] outcomes.
    pub stale_flushes: u64,
    /// [`SwitchKind::Miss`] outcomes.
    pub misses: u64,
    /// [`SwitchKind::Recycled`] outcomes.
    pub recycles: u64,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    asid: AsId,
    /// The address space's TLB generation this PCID's entries are synced to.
    synced_gen: u64,
    /// The number of the switch that last used this slot; the smallest is the LRU victim.
    last_switch: u64,
}

/// One CPU's PCID slots. `N` (1 to 4095, default [`DEFAULT_PCID_SLOTS`]) slots own PCIDs `1..=N`.
#[derive(Clone, Debug)]
pub struct PcidTable<const N: usize = DEFAULT_PCID_SLOTS> {
    slots: [Option<Slot>; N],
    /// The slot whose PCID is in CR3, `None` in the kernel-only context.
    current: Option<usize>,
    /// Switches so far: numbers them for the LRU order.
    switches: u64,
    stats: PcidStats,
}

impl<const N: usize> PcidTable<N> {
    /// An empty table: every slot free, the kernel-only context current.
    pub const fn new() -> PcidTable<N> {
        const {
            assert!(
                N >= 1 && N <= Pcid::MAX as usize,
                "a PcidTable has 1 to 4095 slots"
            )
        };
        PcidTable {
            slots: [None; N],
            current: None,
            switches: 0,
            stats: PcidStats {
                hits: 0,
                stale_flushes: 0,
                misses: 0,
                recycles: 0,
            },
        }
    }

    /// Picks the slot for `asid`, whose TLB generation is now `as_gen`, and makes it current.
    ///
    /// - slot held and synced to `as_gen` (or later): [`SwitchKind::Hit`], no flush;
    /// - slot held but synced to an older generation: [`SwitchKind::Stale`], flush;
    /// - no slot, one free: [`SwitchKind::Miss`], flush;
    /// - no slot, none free: the least recently used slot is taken, [`SwitchKind::Recycled`]
    ///   naming its former owner, flush.
    ///
    /// After a flushing switch the slot is synced to `as_gen`. The kernel must perform the CR3
    /// write this returns before it runs anything that could fill the TLB for `asid`.
    pub fn switch_to(&mut self, asid: AsId, as_gen: u64) -> SwitchIn {
        self.switches += 1;
        let (index, kind) = match self.find(asid) {
            Some(index) => {
                let slot = self.slots[index].as_mut().expect("found slots are held");
                slot.last_switch = self.switches;
                if slot.synced_gen >= as_gen {
                    (index, SwitchKind::Hit)
                } else {
                    slot.synced_gen = as_gen;
                    (index, SwitchKind::Stale)
                }
            }
            None => {
                let (index, kind) = match self.slots.iter().position(Option::is_none) {
                    Some(free) => (free, SwitchKind::Miss),
                    None => {
                        let victim = self.lru();
                        let evicted = self.slots[victim].expect("the table is full").asid;
                        (victim, SwitchKind::Recycled(evicted))
                    }
                };
                self.slots[index] = Some(Slot {
                    asid,
                    synced_gen: as_gen,
                    last_switch: self.switches,
                });
                (index, kind)
            }
        };
        self.current = Some(index);
        match kind {
            SwitchKind::Hit => self.stats.hits += 1,
            SwitchKind::Stale => self.stats.stale_flushes += 1,
            SwitchKind::Miss => self.stats.misses += 1,
            SwitchKind::Recycled(_) => self.stats.recycles += 1,
        }
        SwitchIn {
            pcid: slot_pcid(index),
            flush: kind != SwitchKind::Hit,
            kind,
        }
    }

    /// Records that this CPU loaded the kernel-only context (PCID 0): no slot is current.
    pub fn switch_to_kernel(&mut self) {
        self.current = None;
    }

    /// The address space whose PCID is loaded, with that PCID; `None` in the kernel-only context.
    pub fn current(&self) -> Option<(AsId, Pcid)> {
        let index = self.current?;
        let slot = self.slots[index].as_ref()?;
        Some((slot.asid, slot_pcid(index)))
    }

    /// The PCID `asid` holds on this CPU and the generation its entries are synced to.
    pub fn slot_of(&self, asid: AsId) -> Option<(Pcid, u64)> {
        let index = self.find(asid)?;
        let slot = self.slots[index].as_ref()?;
        Some((slot_pcid(index), slot.synced_gen))
    }

    /// Records that every entry of `asid`'s PCID made stale by changes up to generation
    /// `tlb_gen` has been invalidated on this CPU (a shootdown was serviced here), so the slot is
    /// synced to `tlb_gen` if it was behind. Returns whether `asid` holds a slot.
    pub fn note_flushed(&mut self, asid: AsId, tlb_gen: u64) -> bool {
        match self.find(asid).and_then(|index| self.slots[index].as_mut()) {
            Some(slot) => {
                slot.synced_gen = slot.synced_gen.max(tlb_gen);
                true
            }
            None => false,
        }
    }

    /// Frees `asid`'s slot (its address space is destroyed) and returns its PCID. The PCID's
    /// entries stay in the TLB until the slot's next owner flushes them on its first switch
    /// ([`SwitchKind::Miss`] always flushes). If `asid` was current, no slot is current anymore.
    pub fn forget(&mut self, asid: AsId) -> Option<Pcid> {
        let index = self.find(asid)?;
        self.slots[index] = None;
        if self.current == Some(index) {
            self.current = None;
        }
        Some(slot_pcid(index))
    }

    /// How the switches so far turned out.
    pub fn stats(&self) -> PcidStats {
        self.stats
    }

    fn find(&self, asid: AsId) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.is_some_and(|s| s.asid == asid))
    }

    /// The held slot used longest ago.
    fn lru(&self) -> usize {
        let mut victim = 0;
        let mut oldest = u64::MAX;
        for (index, slot) in self.slots.iter().enumerate() {
            if let Some(slot) = slot
                && slot.last_switch < oldest
            {
                oldest = slot.last_switch;
                victim = index;
            }
        }
        victim
    }
}

impl<const N: usize> Default for PcidTable<N> {
    fn default() -> PcidTable<N> {
        PcidTable::new()
    }
}

impl PcidTable<1> {
    /// [`PcidTable::switch_to`] for a table of one slot (a CPU whose CR3 carries no PCID): that
    /// slot is the answer whoever holds it, so no search and no LRU scan. The same outcomes, slot
    /// and counts as `switch_to`.
    #[inline]
    pub fn switch_to_only(&mut self, asid: AsId, as_gen: u64) -> SwitchIn {
        self.switches += 1;
        let switches = self.switches;
        let kind = match &mut self.slots[0] {
            Some(slot) if slot.asid == asid => {
                slot.last_switch = switches;
                if slot.synced_gen >= as_gen {
                    self.stats.hits += 1;
                    SwitchKind::Hit
                } else {
                    slot.synced_gen = as_gen;
                    self.stats.stale_flushes += 1;
                    SwitchKind::Stale
                }
            }
            held => {
                let kind = match held {
                    Some(slot) => {
                        self.stats.recycles += 1;
                        SwitchKind::Recycled(slot.asid)
                    }
                    None => {
                        self.stats.misses += 1;
                        SwitchKind::Miss
                    }
                };
                *held = Some(Slot {
                    asid,
                    synced_gen: as_gen,
                    last_switch: switches,
                });
                kind
            }
        };
        self.current = Some(0);
        SwitchIn {
            pcid: slot_pcid(0),
            flush: kind != SwitchKind::Hit,
            kind,
        }
    }
}

/// Slot `index` owns PCID `index + 1`.
#[inline]
fn slot_pcid(index: usize) -> Pcid {
    Pcid::new(index as u16 + 1).expect("slot counts are checked against Pcid::MAX")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_to_only_matches_switch_to_on_one_slot() {
        let mut a = PcidTable::<1>::new();
        let mut b = PcidTable::<1>::new();
        let steps = [(1, 0), (1, 0), (2, 0), (1, 3), (1, 3), (1, 4), (2, 1), (2, 1), (3, 0)];
        for (raw, tlb_gen) in steps {
            assert_eq!(a.switch_to(asid(raw), tlb_gen), b.switch_to_only(asid(raw), tlb_gen));
            assert_eq!(a.current(), b.current());
            assert_eq!(a.slot_of(asid(raw)), b.slot_of(asid(raw)));
        }
        assert_eq!(a.stats(), b.stats());
    }

    fn asid(raw: u64) -> AsId {
        AsId::new(raw)
    }

    fn pcid(raw: u16) -> Pcid {
        Pcid::new(raw).unwrap()
    }

    #[test]
    fn pcid_new_accepts_1_to_4095_only() {
        assert_eq!(Pcid::new(0), None);
        assert_eq!(Pcid::new(1).map(Pcid::get), Some(1));
        assert_eq!(Pcid::new(4095).map(Pcid::get), Some(4095));
        assert_eq!(Pcid::new(4096), None);
        assert_eq!(Pcid::new(u16::MAX), None);
    }

    #[test]
    fn ids_display_and_round_trip() {
        assert_eq!(pcid(7).to_string(), "pcid7");
        assert_eq!(asid(42).to_string(), "as42");
        assert_eq!(asid(u64::MAX).get(), u64::MAX);
    }

    #[test]
    fn first_switch_misses_and_flushes() {
        let mut t = PcidTable::<3>::new();
        let s = t.switch_to(asid(1), 5);
        assert_eq!(
            s,
            SwitchIn {
                pcid: pcid(1),
                flush: true,
                kind: SwitchKind::Miss
            }
        );
        assert_eq!(t.slot_of(asid(1)), Some((pcid(1), 5)));
        assert_eq!(t.current(), Some((asid(1), pcid(1))));
    }

    #[test]
    fn switch_back_at_the_same_gen_hits_without_flush() {
        let mut t = PcidTable::<3>::new();
        t.switch_to(asid(1), 5);
        t.switch_to(asid(2), 0);
        let s = t.switch_to(asid(1), 5);
        assert_eq!(
            s,
            SwitchIn {
                pcid: pcid(1),
                flush: false,
                kind: SwitchKind::Hit
            }
        );
    }

    #[test]
    fn switch_back_at_a_newer_gen_flushes_that_pcid_and_syncs_the_slot() {
        let mut t = PcidTable::<3>::new();
        t.switch_to(asid(1), 5);
        t.switch_to(asid(2), 0);
        let s = t.switch_to(asid(1), 7);
        assert_eq!(
            s,
            SwitchIn {
                pcid: pcid(1),
                flush: true,
                kind: SwitchKind::Stale
            }
        );
        assert_eq!(t.slot_of(asid(1)), Some((pcid(1), 7)));
        assert_eq!(t.switch_to(asid(1), 7).kind, SwitchKind::Hit);
    }

    #[test]
    fn a_slot_ahead_of_the_given_gen_is_a_hit_and_keeps_its_gen() {
        let mut t = PcidTable::<2>::new();
        t.switch_to(asid(1), 9);
        assert_eq!(t.switch_to(asid(1), 8).kind, SwitchKind::Hit);
        assert_eq!(t.slot_of(asid(1)), Some((pcid(1), 9)));
    }

    #[test]
    fn a_full_table_recycles_the_least_recently_used_slot() {
        let mut t = PcidTable::<3>::new();
        t.switch_to(asid(1), 0);
        t.switch_to(asid(2), 0);
        t.switch_to(asid(3), 0);
        t.switch_to(asid(1), 0); // 2 is now the least recently used
        let s = t.switch_to(asid(4), 3);
        assert_eq!(
            s,
            SwitchIn {
                pcid: pcid(2),
                flush: true,
                kind: SwitchKind::Recycled(asid(2))
            }
        );
        assert_eq!(t.slot_of(asid(2)), None);
        assert_eq!(t.slot_of(asid(4)), Some((pcid(2), 3)));
        // Next victim: 3, then 1.
        assert_eq!(t.switch_to(asid(5), 0).kind, SwitchKind::Recycled(asid(3)));
        assert_eq!(t.switch_to(asid(6), 0).kind, SwitchKind::Recycled(asid(1)));
    }

    #[test]
    fn a_single_slot_table_recycles_on_every_change_of_address_space() {
        let mut t = PcidTable::<1>::new();
        assert_eq!(t.switch_to(asid(1), 0).kind, SwitchKind::Miss);
        assert_eq!(t.switch_to(asid(1), 0).kind, SwitchKind::Hit);
        assert_eq!(t.switch_to(asid(2), 0).kind, SwitchKind::Recycled(asid(1)));
        assert_eq!(t.switch_to(asid(2), 0).pcid, pcid(1));
    }

    #[test]
    fn the_default_table_has_six_slots() {
        let mut t: PcidTable = PcidTable::default();
        for i in 1..=6 {
            assert_eq!(
                t.switch_to(asid(i), 0),
                SwitchIn {
                    pcid: pcid(i as u16),
                    flush: true,
                    kind: SwitchKind::Miss
                }
            );
        }
        assert_eq!(t.switch_to(asid(7), 0).kind, SwitchKind::Recycled(asid(1)));
    }

    #[test]
    fn switch_to_kernel_leaves_no_current_slot_but_keeps_the_slots() {
        let mut t = PcidTable::<2>::new();
        assert_eq!(t.current(), None);
        t.switch_to(asid(1), 0);
        t.switch_to_kernel();
        assert_eq!(t.current(), None);
        assert_eq!(t.slot_of(asid(1)), Some((pcid(1), 0)));
        assert_eq!(t.switch_to(asid(1), 0).kind, SwitchKind::Hit);
    }

    #[test]
    fn note_flushed_advances_the_gen_and_never_moves_it_back() {
        let mut t = PcidTable::<2>::new();
        t.switch_to(asid(1), 3);
        assert!(t.note_flushed(asid(1), 4));
        assert_eq!(t.slot_of(asid(1)), Some((pcid(1), 4)));
        assert!(t.note_flushed(asid(1), 2));
        assert_eq!(t.slot_of(asid(1)), Some((pcid(1), 4)));
        assert_eq!(t.switch_to(asid(1), 4).kind, SwitchKind::Hit);
        assert!(!t.note_flushed(asid(9), 4));
    }

    #[test]
    fn forget_frees_the_slot_and_its_next_owner_flushes() {
        let mut t = PcidTable::<2>::new();
        t.switch_to(asid(1), 0);
        t.switch_to(asid(2), 0);
        assert_eq!(t.forget(asid(1)), Some(pcid(1)));
        assert_eq!(t.forget(asid(1)), None);
        assert_eq!(t.slot_of(asid(1)), None);
        assert_eq!(t.current(), Some((asid(2), pcid(2))));
        // The freed slot is taken as a miss (flushing), not by evicting asid 2.
        assert_eq!(
            t.switch_to(asid(3), 0),
            SwitchIn {
                pcid: pcid(1),
                flush: true,
                kind: SwitchKind::Miss
            }
        );
        assert_eq!(t.slot_of(asid(2)), Some((pcid(2), 0)));
    }

    #[test]
    fn forgetting_the_current_address_space_leaves_no_current_slot() {
        let mut t = PcidTable::<2>::new();
        t.switch_to(asid(1), 0);
        t.forget(asid(1));
        assert_eq!(t.current(), None);
    }

    #[test]
    fn stats_count_each_kind_and_add_up_to_the_switches() {
        let mut t = PcidTable::<2>::new();
        t.switch_to(asid(1), 0); // miss
        t.switch_to(asid(2), 0); // miss
        t.switch_to(asid(1), 0); // hit
        t.switch_to(asid(1), 1); // stale
        t.switch_to(asid(3), 0); // recycles 2
        let s = t.stats();
        assert_eq!(
            s,
            PcidStats {
                hits: 1,
                stale_flushes: 1,
                misses: 2,
                recycles: 1
            }
        );
        assert_eq!(s.hits + s.stale_flushes + s.misses + s.recycles, 5);
    }
}
