//! Loom model (c): `AtomicCpuSet` insert, remove, take and snapshot under concurrency.
//!
//! Checks what the module comment of `smp::cpuset` promises: of racing inserts (or removes, or
//! takes) of one bit exactly one wins; the final set is the outcome the winners imply; and a
//! snapshot that sees a bit also sees every bit inserted before it that lives in a word the
//! snapshot reads later.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p smp --release --test loom_cpuset`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use smp::{AtomicCpuSet, CpuId, CpuSet};

fn cpu(index: u32) -> CpuId {
    CpuId::new(index).unwrap()
}

#[test]
fn racing_inserts_of_one_bit_have_exactly_one_winner() {
    loom::model(|| {
        let set = Arc::new(AtomicCpuSet::new());
        let s = Arc::clone(&set);
        let other = thread::spawn(move || s.insert(cpu(9)));
        let mine = set.insert(cpu(9));
        let theirs = other.join().unwrap();
        assert!(mine ^ theirs);
        assert_eq!(set.snapshot(), CpuSet::single(cpu(9)));
    });
}

#[test]
fn insert_and_remove_race_to_a_consistent_end() {
    loom::model(|| {
        let set = Arc::new(AtomicCpuSet::new());
        let s = Arc::clone(&set);
        let inserter = thread::spawn(move || {
            assert!(s.insert(cpu(3)));
            assert!(s.insert(cpu(70)));
        });
        let removed = set.remove(cpu(3));
        inserter.join().unwrap();
        // The remove either came after the insert (and won the bit) or before it (and found
        // nothing), and the final state says which.
        assert_eq!(set.contains(cpu(3)), !removed);
        assert!(set.contains(cpu(70)));
        let expected: CpuSet = if removed {
            [cpu(70)].into_iter().collect()
        } else {
            [cpu(3), cpu(70)].into_iter().collect()
        };
        assert_eq!(set.snapshot(), expected);
    });
}

#[test]
fn each_bit_is_taken_exactly_once() {
    loom::model(|| {
        let set = Arc::new(AtomicCpuSet::new());
        set.insert(cpu(1));
        let s = Arc::clone(&set);
        let taker = thread::spawn(move || s.take());
        set.insert(cpu(200));
        let mine = set.take();
        let theirs = taker.join().unwrap();
        let rest = set.take();
        assert!(mine.intersection(&theirs).is_empty());
        let all = mine.union(&theirs).union(&rest);
        assert_eq!(all, [cpu(1), cpu(200)].into_iter().collect());
        assert_eq!(mine.len() + theirs.len() + rest.len(), 2);
        assert!(set.is_empty());
    });
}

#[test]
fn a_snapshot_that_sees_a_bit_sees_the_bits_inserted_before_it_in_later_words() {
    loom::model(|| {
        let set = Arc::new(AtomicCpuSet::new());
        let s = Arc::clone(&set);
        // Word 1 first, then word 0; a snapshot reads word 0 before word 1.
        let inserter = thread::spawn(move || {
            s.insert(cpu(70));
            s.insert(cpu(3));
        });
        let seen = set.snapshot();
        if seen.contains(cpu(3)) {
            assert!(seen.contains(cpu(70)), "{seen}");
        }
        inserter.join().unwrap();
    });
}
