//! Loom model (a): a CPU switching into an address space races a change to it on another CPU.
//!
//! Whatever the interleaving, the change must not be missed: either the changer's plan targets
//! the switching CPU with an IPI, or the switching CPU read the new generation and flushes its
//! stale PCID slot (or it has left again, and its slot is behind, so it catches up at its next
//! switch-in). This is the store-then-load pairing argued in `smp::tracker`: `switch_in` marks
//! `active` then reads `tlb_gen`; `begin_change` bumps `tlb_gen` then reads `active`.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p smp --release --test loom_switch_vs_change`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use smp::{AsId, CpuId, PageRange, PcidTable, SwitchKind, TlbStats, TlbTracker};

const CHANGER: CpuId = CpuId::BSP;

fn switcher() -> CpuId {
    CpuId::new(1).unwrap()
}

const RANGE: PageRange = PageRange {
    start_vpage: 0x10,
    pages: 1,
};

/// A tracker, and the switching CPU's table holding a slot synced to generation 0: without a
/// change, the switch-in is a hit that keeps the PCID's entries.
fn setup() -> (Arc<TlbTracker>, PcidTable<2>) {
    let tracker = Arc::new(TlbTracker::new(AsId::new(1)));
    let mut table = PcidTable::new();
    tracker.switch_in(switcher(), &mut table);
    tracker.switch_out(switcher());
    (tracker, table)
}

#[test]
fn a_racing_switch_in_is_either_targeted_or_sees_the_new_gen() {
    loom::model(|| {
        let (tracker, mut table) = setup();
        let stats = TlbStats::new();
        let t = Arc::clone(&tracker);
        let switching = thread::spawn(move || t.switch_in(switcher(), &mut table));
        let plan = tracker.begin_change(CHANGER, RANGE, &stats);
        let switch = switching.join().unwrap();

        let targeted = plan.ipi_targets.contains(switcher());
        assert!(
            targeted || switch.flush,
            "the change was missed: {plan:?} {switch:?}"
        );
        if !targeted {
            assert_eq!(switch.kind, SwitchKind::Stale);
        }
    });
}

#[test]
fn a_cpu_passing_through_is_targeted_or_flushes_or_is_left_behind() {
    loom::model(|| {
        let (tracker, mut table) = setup();
        let stats = TlbStats::new();
        let t = Arc::clone(&tracker);
        let switching = thread::spawn(move || {
            let switch = t.switch_in(switcher(), &mut table);
            t.switch_out(switcher());
            (switch, table)
        });
        let plan = tracker.begin_change(CHANGER, RANGE, &stats);
        let (switch, table) = switching.join().unwrap();

        let targeted = plan.ipi_targets.contains(switcher());
        let (_, synced) = table.slot_of(tracker.asid()).unwrap();
        if !targeted && !switch.flush {
            // Read the old generation, then left before the changer looked: the slot is behind,
            // so the next switch-in flushes; and the change counts the CPU as avoided.
            assert!(synced < plan.new_gen);
            assert!(plan.avoided.contains(switcher()));
        }
        if switch.flush {
            assert_eq!(synced, plan.new_gen);
        }
    });
}

/// The same race on a CPU without PCIDs (`switch_in_untagged`, one slot, held by another
/// address space): the CPU never enters `may_cache`, so `active` alone must catch it. Either
/// the change targets it, or its switch-in read the new generation (its CR3 write, which empties
/// the TLB, comes after that read, and the edits are visible to whoever read the bump).
#[test]
fn an_untagged_switch_in_is_either_targeted_or_sees_the_new_gen() {
    loom::model(|| {
        let tracker = Arc::new(TlbTracker::new(AsId::new(1)));
        let other = TlbTracker::new(AsId::new(2));
        let mut table: PcidTable<1> = PcidTable::new();
        other.switch_in_untagged(switcher(), &mut table);
        let stats = TlbStats::new();
        let t = Arc::clone(&tracker);
        let switching = thread::spawn(move || {
            let switch = t.switch_in_untagged(switcher(), &mut table);
            (switch, table)
        });
        let plan = tracker.begin_change(CHANGER, RANGE, &stats);
        let (switch, table) = switching.join().unwrap();

        assert_eq!(switch.kind, SwitchKind::Recycled(AsId::new(2)));
        assert!(switch.flush);
        assert!(tracker.may_cache().is_empty() && other.may_cache().is_empty());
        let (_, synced) = table.slot_of(tracker.asid()).unwrap();
        assert!(
            plan.ipi_targets.contains(switcher()) || synced == plan.new_gen,
            "the change was missed: {plan:?} {switch:?}"
        );
    });
}
