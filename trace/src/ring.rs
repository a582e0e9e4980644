//! One CPU's overwrite ring of [`Record`]s: writers never block and never wait for a reader; a
//! full ring overwrites its oldest records, and a reader learns how many it lost.
//!
//! ```text
//!   head (u64, only grows)          slot = pos % capacity
//!   ...  | pos-2 | pos-1 | pos | ...   each slot: seq + 4 record words
//!        seq = 2*pos+2: slot holds record `pos`, complete
//!        seq = 2*pos+1: record `pos` is being written
//! ```
//!
//! # Writers
//! [`Ring::push`] reserves a position with one `fetch_add` on `head`, claims the slot with a
//! compare-exchange of its sequence number from an older complete record to "writing `pos`",
//! writes the four words after a release fence, and marks the slot complete with a release store.
//! The reservation and the claim make writers safe against each other, so the ring's discipline
//! is not a promise every caller must keep: an interrupt that records while the code it
//! interrupted was recording on the same CPU gets the next position; a thread that migrated
//! between choosing the ring and writing it costs an out-of-order time stamp; and a writer a whole
//! lap behind another (possible only with that many records in between) loses its record, counted
//! as dropped, instead of tearing the other's. In the kernel only a CPU itself touches its ring's
//! `head` and slots while recording, so both locked instructions hit lines in that CPU's cache:
//! tens of cycles, paid only while tracing is on.
//!
//! # Readers
//! [`Ring::read`] visits the last `capacity` positions in order and keeps a slot only when its
//! sequence number says "record `pos`, complete" both before and after the words were read (a
//! writer lapping the reader changes it). Every position it cannot deliver, overwritten before the
//! read or torn during it, counts as dropped, so `delivered + dropped == head` always holds.
//! Readers run at dump time, normally after recording stopped; they are correct while writers run.
//!
//! The memory-ordering argument is the classic sequence lock's (writer: odd (here by the claim),
//! release fence, data, even with release; reader: acquire load, data, acquire fence, reload), with every data word an
//! atomic so a torn read is a detected inconsistency, never a data race. `tests/loom_ring.rs`
//! model-checks it.

extern crate alloc;

use alloc::{boxed::Box, vec::Vec};

use crossbeam_utils::CachePadded;

use crate::{
    event::Record,
    sync::{AtomicU64, Ordering, fence},
};

struct Slot {
    seq: AtomicU64,
    words: [AtomicU64; 4],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            words: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One CPU's ring of trace records.
pub struct Ring {
    /// Positions reserved so far (the next record's position).
    head: CachePadded<AtomicU64>,
    slots: Box<[Slot]>,
    /// `capacity - 1`; the capacity is a power of two.
    index_mask: u64,
}

/// What one [`Ring::read`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReadStats {
    /// Records delivered to the visitor.
    pub delivered: u64,
    /// Records lost: overwritten before the read, or being rewritten while it read them.
    pub dropped: u64,
}

impl Ring {
    /// An empty ring holding the last `capacity` records (rounded up to a power of two, at
    /// least 2).
    pub fn new(capacity: usize) -> Ring {
        let capacity = capacity.max(2).next_power_of_two();
        Ring {
            head: CachePadded::new(AtomicU64::new(0)),
            slots: (0..capacity)
                .map(|_| Slot::new())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
            index_mask: capacity as u64 - 1,
        }
    }

    /// How many records the ring keeps.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Records pushed since the ring was made or last cleared, lost ones included.
    pub fn pushed(&self) -> u64 {
        self.head.load(Ordering::Relaxed)
    }

    /// Append `record`, overwriting the oldest one if the ring is full. Never blocks.
    #[inline]
    pub fn push(&self, record: &Record) {
        let pos = self.head.fetch_add(1, Ordering::Relaxed);
        let slot = &self.slots[(pos & self.index_mask) as usize];
        // Claim the slot: only from a complete older record. A writer a whole lap ahead or behind
        // (still busy, or already done with a newer position) keeps it, and this record is lost,
        // which the reader counts as its position never turning complete.
        let seen = slot.seq.load(Ordering::Relaxed);
        if seen & 1 == 1
            || seen > 2 * pos
            || slot
                .seq
                .compare_exchange(seen, 2 * pos + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // (Acquire on the claim: it reads the previous writer's "complete" store, so our words are
        // ordered after that writer's words, never under them.)
        // Orders the odd marker before the words: a reader that sees a new word also sees "busy".
        fence(Ordering::Release);
        for (cell, word) in slot.words.iter().zip(record.to_words()) {
            cell.store(word, Ordering::Relaxed);
        }
        // Publishes the words with the "complete" marker.
        slot.seq.store(2 * pos + 2, Ordering::Release);
    }

    /// Visit the records still in the ring, oldest first, and say how many were lost.
    pub fn read(&self, mut visit: impl FnMut(&Record)) -> ReadStats {
        let head = self.head.load(Ordering::Acquire);
        let first = head.saturating_sub(self.slots.len() as u64);
        let mut stats = ReadStats {
            delivered: 0,
            dropped: first,
        };
        for pos in first..head {
            match self.read_slot(pos) {
                Some(record) => {
                    visit(&record);
                    stats.delivered += 1;
                }
                None => stats.dropped += 1,
            }
        }
        stats
    }

    /// The record at `pos`, if its slot holds it complete and unchanged across the read.
    fn read_slot(&self, pos: u64) -> Option<Record> {
        let slot = &self.slots[(pos & self.index_mask) as usize];
        let before = slot.seq.load(Ordering::Acquire);
        if before != 2 * pos + 2 {
            return None;
        }
        let mut words = [0; 4];
        for (word, cell) in words.iter_mut().zip(&slot.words) {
            *word = cell.load(Ordering::Relaxed);
        }
        // Orders the word loads before the re-check: a changed word implies a changed marker.
        fence(Ordering::Acquire);
        (slot.seq.load(Ordering::Relaxed) == before).then(|| Record::from_words(words))
    }

    /// Forget every record (call only while nobody pushes, e.g. before recording starts).
    pub fn clear(&self) {
        for slot in self.slots.iter() {
            slot.seq.store(0, Ordering::Relaxed);
        }
        self.head.store(0, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::event::Kind;

    fn rec(n: u64) -> Record {
        Record {
            a: n,
            ..Record::new(n * 10, 0, Kind::TimerFire)
        }
    }

    fn collect(ring: &Ring) -> (Vec<u64>, ReadStats) {
        let mut got = Vec::new();
        let stats = ring.read(|r| got.push(r.a));
        (got, stats)
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        assert_eq!(Ring::new(0).capacity(), 2);
        assert_eq!(Ring::new(5).capacity(), 8);
        assert_eq!(Ring::new(64).capacity(), 64);
    }

    #[test]
    fn a_ring_that_did_not_fill_delivers_everything_in_order() {
        let ring = Ring::new(8);
        (0..5).for_each(|n| ring.push(&rec(n)));
        let (got, stats) = collect(&ring);
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(
            stats,
            ReadStats {
                delivered: 5,
                dropped: 0
            }
        );
    }

    #[test]
    fn a_full_ring_keeps_the_newest_and_counts_the_overwritten() {
        let ring = Ring::new(4);
        (0..11).for_each(|n| ring.push(&rec(n)));
        let (got, stats) = collect(&ring);
        assert_eq!(got, [7, 8, 9, 10]);
        assert_eq!(
            stats,
            ReadStats {
                delivered: 4,
                dropped: 7
            }
        );
        assert_eq!(stats.delivered + stats.dropped, ring.pushed());
    }

    #[test]
    fn clear_empties_the_ring() {
        let ring = Ring::new(4);
        (0..6).for_each(|n| ring.push(&rec(n)));
        ring.clear();
        assert_eq!(collect(&ring), (Vec::new(), ReadStats::default()));
        ring.push(&rec(42));
        assert_eq!(collect(&ring).0, [42]);
    }

    #[test]
    fn records_are_whole_under_concurrent_writers_and_a_reader() {
        use std::{sync::Arc, thread};
        let ring = Arc::new(Ring::new(64));
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    for n in 0..20_000u64 {
                        let v = w << 32 | n;
                        ring.push(&Record {
                            a: v,
                            b: !v,
                            ..Record::new(v, 0, Kind::TimerFire)
                        });
                    }
                })
            })
            .collect();
        loop {
            let done = writers.iter().all(|w| w.is_finished());
            let stats = ring.read(|r| {
                assert_eq!(r.b, !r.a, "torn record");
                assert_eq!(r.tsc, r.a, "torn record");
            });
            assert!(stats.delivered <= 64);
            if done {
                break;
            }
        }
        writers.into_iter().for_each(|w| w.join().unwrap());
        let (got, stats) = collect(&ring);
        assert_eq!(got.len(), 64);
        assert_eq!(stats.delivered + stats.dropped, 60_000);
    }
}
