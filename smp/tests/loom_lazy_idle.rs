//! Loom model: a CPU waking from a halt during which it kept an address space loaded, lazily,
//! races a change to that space on another CPU.
//!
//! The halted CPU has the space loaded (it is in `active`) and its flag says lazy; a change that
//! frees no page table spares lazy CPUs the IPI (`begin_change_sparing`, the flag read after the
//! generation's bump). The waking CPU clears its flag, then reads the generation, and flushes its
//! slot if it is behind. Whatever the interleaving, the change must not be missed: either the plan
//! targets the waking CPU, or the waking CPU reads the new generation.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p smp --release --test loom_lazy_idle`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering, fence};
use loom::thread;
use smp::{AsId, CpuId, CpuSet, PageRange, PcidTable, TlbStats, TlbTracker};

const CHANGER: CpuId = CpuId::BSP;

fn sleeper() -> CpuId {
    CpuId::new(1).unwrap()
}

const RANGE: PageRange = PageRange {
    start_vpage: 0x10,
    pages: 1,
};

#[test]
fn a_waking_lazy_cpu_is_targeted_or_sees_the_new_gen() {
    loom::model(|| {
        let tracker = Arc::new(TlbTracker::new(AsId::new(1)));
        let mut table: PcidTable<2> = PcidTable::new();
        // The sleeper runs the space (its slot synced to generation 0), then halts lazily.
        tracker.switch_in(sleeper(), &mut table);
        let lazy = Arc::new(AtomicBool::new(true));

        let (t, l) = (Arc::clone(&tracker), Arc::clone(&lazy));
        let waking = thread::spawn(move || {
            l.store(false, Ordering::SeqCst);
            // The kernel's SeqCst store then SeqCst load; loom needs the fence to order them.
            fence(Ordering::SeqCst);
            let now = t.tlb_gen();
            let (_, synced) = table.slot_of(AsId::new(1)).unwrap();
            synced < now
        });
        let stats = TlbStats::new();
        let plan = tracker.begin_change_sparing(CHANGER, RANGE, &stats, |others| {
            let mut spared = CpuSet::new();
            for cpu in others.iter() {
                if lazy.load(Ordering::SeqCst) {
                    spared.insert(cpu);
                }
            }
            spared
        });
        let caught_up = waking.join().unwrap();

        let targeted = plan.ipi_targets.contains(sleeper());
        assert!(targeted || caught_up, "the change was missed: {plan:?}");
        if !targeted {
            assert!(plan.avoided.contains(sleeper()), "a spared CPU counts as avoided: {plan:?}");
        }
    });
}
