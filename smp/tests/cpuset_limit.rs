//! `cpuset::limit_ids`: with the words in use bounded, every whole-set operation still gives the
//! right answer for the ids below the bound, on plain and atomic sets. A test binary of its own,
//! since the bound is global to the process.

use smp::cpuset::limit_ids;
use smp::{AtomicCpuSet, CpuId, CpuSet};
use std::sync::Mutex;

/// Held by each test while it sets and relies on the bound (the tests run in parallel threads).
static BOUND: Mutex<()> = Mutex::new(());

fn cpu(index: u32) -> CpuId {
    CpuId::new(index).unwrap()
}

fn set(indices: &[u32]) -> CpuSet {
    indices.iter().map(|&i| cpu(i)).collect()
}

fn ids(s: &CpuSet) -> Vec<u32> {
    s.iter().map(CpuId::get).collect()
}

#[test]
fn bounded_sets_answer_as_unbounded_ones_for_the_ids_in_use() {
    let _bound = BOUND.lock().unwrap();
    for (nr_cpus, a, b) in [
        (2, vec![0, 1], vec![1, 2]),
        (64, vec![0, 63, 64], vec![5, 64]),
        (130, vec![3, 70, 129, 130], vec![70, 128, 130]),
    ] {
        limit_ids(nr_cpus);
        let (x, y) = (set(&a), set(&b));
        assert_eq!(x.len(), a.len(), "len at {nr_cpus}");
        assert!(!x.is_empty() && CpuSet::EMPTY.is_empty());
        assert_eq!(ids(&x), a);
        let union: Vec<u32> = {
            let mut u: Vec<u32> = a.iter().chain(&b).copied().collect();
            u.sort_unstable();
            u.dedup();
            u
        };
        assert_eq!(ids(&x.union(&y)), union);
        assert_eq!(ids(&x.intersection(&y)), a.iter().copied().filter(|i| b.contains(i)).collect::<Vec<_>>());
        assert_eq!(ids(&x.difference(&y)), a.iter().copied().filter(|i| !b.contains(i)).collect::<Vec<_>>());

        let atomic = AtomicCpuSet::new();
        assert!(atomic.is_empty());
        atomic.insert_all(&x);
        assert_eq!(atomic.snapshot(), x);
        assert!(!atomic.is_empty());
        atomic.remove_all(&y);
        assert_eq!(atomic.snapshot(), x.difference(&y));
        assert_eq!(atomic.take(), x.difference(&y));
        assert!(atomic.is_empty() && atomic.snapshot().is_empty());
    }
}

#[test]
fn spin_until_empty_gives_up_after_its_checks_and_sees_the_set_empty() {
    let _bound = BOUND.lock().unwrap();
    limit_ids(130);
    let s = AtomicCpuSet::new();
    assert!(s.spin_until_empty(0) && s.spin_until_empty(3));
    s.insert_all(&set(&[1, 129]));
    assert!(!s.spin_until_empty(3));
    s.remove(cpu(1));
    assert!(!s.spin_until_empty(1), "word 2 still holds 129");
    std::thread::scope(|scope| {
        scope.spawn(|| s.remove(cpu(129)));
        while !s.spin_until_empty(128) {}
    });
    assert!(s.is_empty());
}
