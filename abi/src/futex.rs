//! Futex wait queues as a pure data structure: which waiters sleep on which word, and who a wake or a
//! requeue takes. The kernel puts each [`Bucket`] under its own spin lock and keeps the sleeping and
//! waking; this module decides who.
//!
//! The protocol that avoids lost wake-ups (Linux's `futex_wait_setup`, and the bugs peers shipped when
//! they skipped it): a waiter locks the bucket of its key, reads the user word, compares it with the
//! expected value and, only if equal, [`Bucket::enqueue`]s itself before it unlocks and sleeps. A waker
//! changes the word first and then locks the bucket to [`Bucket::wake`]. Either the waker's lock comes
//! after the enqueue (the waiter is found), or before the waiter's check (the waiter sees the new
//! value and does not sleep). A waiter whose timeout fires takes itself out with [`Bucket::cancel`]:
//! `false` means a waker already took it, so the wait returns 0, not `ETIMEDOUT`.
//!
//! Order: waiters of one key are woken in the order they queued (FIFO); a requeued waiter goes to the
//! tail of its new key's queue, in the order it had. The kernel must learn the new key of a moved
//! waiter (its timeout path locks the bucket of the key it is on now): [`requeue`] lists them.
//!
//! Keys: `(space, addr)`. The address space id makes private futexes of two processes distinct. Until
//! memory is shared between processes, a non-private futex (the CHILD_CLEARTID wake) lives in one
//! space too, so the same key serves; shared mappings will key by frame instead.

use alloc::{collections::VecDeque, vec::Vec};

/// A futex word: which address space, which user address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FutexKey {
    pub space: u64,
    pub addr: u64,
}

/// `FUTEX_BITSET_MATCH_ANY`: the bitset of plain `FUTEX_WAIT` and `FUTEX_WAKE`.
pub const MATCH_ANY: u32 = linux_raw_sys::general::FUTEX_BITSET_MATCH_ANY;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Waiter<W> {
    key: FutexKey,
    who: W,
    bitset: u32,
}

/// The waiters whose keys hash to one bucket, in queue order.
#[derive(Clone, Debug)]
pub struct Bucket<W> {
    queue: VecDeque<Waiter<W>>,
}

impl<W> Default for Bucket<W> {
    fn default() -> Self {
        Self { queue: VecDeque::new() }
    }
}

/// `W` names a waiter: a thread id, or a handle the kernel wakes directly (cloned only where a
/// requeue copies it out).
impl<W: Clone + Eq> Bucket<W> {
    pub const fn new() -> Self {
        Self { queue: VecDeque::new() }
    }

    /// Queue `who` on `key`. Call with the bucket locked, after the user word compared equal.
    /// `bitset` must be non-zero (the syscall layer answers `EINVAL` to 0).
    pub fn enqueue(&mut self, key: FutexKey, who: W, bitset: u32) {
        self.queue.push_back(Waiter { key, who, bitset });
    }

    /// Take up to `nr_wake` waiters on `key` whose bitset shares a bit with `bitset`, oldest first, and
    /// hand each to `woken`. Returns how many. As on Linux, `nr_wake` 0 still wakes one.
    #[inline]
    pub fn wake(&mut self, key: FutexKey, nr_wake: u32, bitset: u32, mut woken: impl FnMut(W)) -> u32 {
        let limit = nr_wake.max(1);
        let mut count = 0;
        // Stops at the limit: a wake of one usually takes the head and looks no further.
        let mut i = 0;
        while count < limit && i < self.queue.len() {
            let w = &self.queue[i];
            if w.key == key && w.bitset & bitset != 0 {
                // The head is the common case: no elements move.
                let w = if i == 0 { self.queue.pop_front() } else { self.queue.remove(i) }.expect("index in range");
                count += 1;
                woken(w.who);
            } else {
                i += 1;
            }
        }
        count
    }

    /// Take `who` out of the queue of `key` (its timeout fired or it was interrupted). `true`: it was
    /// still queued; `false`: a waker (or a requeue to another key) took it first.
    pub fn cancel(&mut self, key: FutexKey, who: W) -> bool {
        match self.queue.iter().position(|w| w.key == key && w.who == who) {
            Some(i) => {
                self.queue.remove(i);
                true
            }
            None => false,
        }
    }

    /// Number of waiters on `key`.
    pub fn waiters(&self, key: FutexKey) -> usize {
        self.queue.iter().filter(|w| w.key == key).count()
    }

    /// Take every entry of `who`, on any key, out of the queue (the waiter has ended); returns how
    /// many there were. A waiter left queued after its end would take a later wake of its key, and
    /// keys outlive their owners: a process id, and so a key, comes back in a later process.
    pub fn forget(&mut self, who: W) -> usize {
        let before = self.queue.len();
        self.queue.retain(|w| w.who != who);
        before - self.queue.len()
    }

    /// [`Bucket::forget`] of every waiter for which `f` holds (a kernel that names waiters by a
    /// handle finds an ended thread's by its id).
    pub fn forget_where(&mut self, mut f: impl FnMut(&W) -> bool) -> usize {
        let before = self.queue.len();
        self.queue.retain(|w| !f(&w.who));
        before - self.queue.len()
    }

    /// Whether `who` waits on `key`.
    pub fn contains(&self, key: FutexKey, who: W) -> bool {
        self.queue.iter().any(|w| w.key == key && w.who == who)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// What a requeue did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requeued<W> {
    /// Woken from `from`, in order.
    pub woken: Vec<W>,
    /// Moved to `to`, in order: the kernel records their new key.
    pub moved: Vec<W>,
}

impl<W> Requeued<W> {
    /// What `FUTEX_REQUEUE` and `FUTEX_CMP_REQUEUE` return: woken plus moved.
    pub fn total(&self) -> usize {
        self.woken.len() + self.moved.len()
    }
}

/// `FUTEX_REQUEUE`: wake up to `nr_wake` waiters of `from` (bitsets ignored, as on Linux), then move up
/// to `nr_requeue` more of them to `to`. `dst` is the bucket of `to` when it differs from `src` (the
/// bucket of `from`); the caller holds both locks, taken in bucket-index order. For
/// `FUTEX_CMP_REQUEUE` the caller compares the word at `from` under the locks first.
pub fn requeue<W: Clone + Eq>(
    src: &mut Bucket<W>,
    dst: Option<&mut Bucket<W>>,
    from: FutexKey,
    to: FutexKey,
    nr_wake: u32,
    nr_requeue: u32,
) -> Requeued<W> {
    let mut out = Requeued { woken: Vec::new(), moved: Vec::new() };
    let mut moving = Vec::new();
    src.queue.retain(|w| {
        if w.key != from {
            true
        } else if (out.woken.len() as u64) < u64::from(nr_wake) {
            out.woken.push(w.who.clone());
            false
        } else if (moving.len() as u64) < u64::from(nr_requeue) {
            moving.push(Waiter { key: to, who: w.who.clone(), bitset: w.bitset });
            false
        } else {
            true
        }
    });
    out.moved = moving.iter().map(|w| w.who.clone()).collect();
    let target = match dst {
        Some(d) => d,
        None => src,
    };
    target.queue.extend(moving);
    out
}

/// Which of `nr_buckets` (a power of two) buckets `key` belongs to.
pub fn bucket_of(key: FutexKey, nr_buckets: usize) -> usize {
    debug_assert!(nr_buckets.is_power_of_two());
    // Futex words are 4-byte aligned; mix both halves so neighbours and spaces spread.
    let h = (key.addr >> 2).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key.space.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    (h ^ (h >> 29)) as usize & (nr_buckets - 1)
}

/// All buckets under one owner: what a single-lock user (and the tests) takes. The kernel keeps its
/// own array of locked [`Bucket`]s and [`bucket_of`] instead.
#[derive(Clone, Debug)]
pub struct FutexTable<W> {
    buckets: Vec<Bucket<W>>,
}

impl<W: Clone + Eq> FutexTable<W> {
    /// A table of `nr_buckets` buckets (a power of two).
    pub fn new(nr_buckets: usize) -> Self {
        assert!(nr_buckets.is_power_of_two());
        Self { buckets: (0..nr_buckets).map(|_| Bucket::new()).collect() }
    }

    pub fn bucket(&mut self, key: FutexKey) -> &mut Bucket<W> {
        let i = bucket_of(key, self.buckets.len());
        &mut self.buckets[i]
    }

    pub fn enqueue(&mut self, key: FutexKey, who: W, bitset: u32) {
        self.bucket(key).enqueue(key, who, bitset);
    }

    pub fn wake(&mut self, key: FutexKey, nr_wake: u32, bitset: u32, woken: impl FnMut(W)) -> u32 {
        self.bucket(key).wake(key, nr_wake, bitset, woken)
    }

    pub fn cancel(&mut self, key: FutexKey, who: W) -> bool {
        self.bucket(key).cancel(key, who)
    }

    pub fn requeue(&mut self, from: FutexKey, to: FutexKey, nr_wake: u32, nr_requeue: u32) -> Requeued<W> {
        let n = self.buckets.len();
        let (a, b) = (bucket_of(from, n), bucket_of(to, n));
        if a == b {
            return requeue(&mut self.buckets[a], None, from, to, nr_wake, nr_requeue);
        }
        // Two distinct buckets borrowed at once, as the kernel holds two locks.
        let (lo, hi) = self.buckets.split_at_mut(a.max(b));
        let (src, dst) = if a < b { (&mut lo[a], &mut hi[0]) } else { (&mut hi[0], &mut lo[b]) };
        requeue(src, Some(dst), from, to, nr_wake, nr_requeue)
    }

    pub fn waiters(&self, key: FutexKey) -> usize {
        self.buckets[bucket_of(key, self.buckets.len())].waiters(key)
    }

    /// Waiters in all buckets.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.queue.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use alloc::{vec, vec::Vec};

    use proptest::prelude::*;

    use super::*;

    const A: FutexKey = FutexKey { space: 1, addr: 0x1000 };
    const B: FutexKey = FutexKey { space: 1, addr: 0x2000 };
    const OTHER_SPACE: FutexKey = FutexKey { space: 2, addr: 0x1000 };

    fn woken(t: &mut FutexTable<u32>, key: FutexKey, n: u32, bits: u32) -> Vec<u32> {
        let mut v = Vec::new();
        let count = t.wake(key, n, bits, |w| v.push(w));
        assert_eq!(count as usize, v.len());
        v
    }

    #[test]
    fn wake_is_fifo_and_bounded() {
        let mut t = FutexTable::new(8);
        for w in 1..=4 {
            t.enqueue(A, w, MATCH_ANY);
        }
        assert_eq!(woken(&mut t, A, 2, MATCH_ANY), [1, 2]);
        assert_eq!(woken(&mut t, A, u32::MAX, MATCH_ANY), [3, 4]);
        assert!(t.is_empty());
    }

    #[test]
    fn zero_wakes_one_like_linux() {
        let mut t = FutexTable::new(8);
        t.enqueue(A, 1, MATCH_ANY);
        t.enqueue(A, 2, MATCH_ANY);
        assert_eq!(woken(&mut t, A, 0, MATCH_ANY), [1]);
    }

    #[test]
    fn spaces_and_addresses_are_distinct() {
        let mut t = FutexTable::new(1); // one bucket: keys must still be told apart
        t.enqueue(A, 1, MATCH_ANY);
        t.enqueue(OTHER_SPACE, 2, MATCH_ANY);
        t.enqueue(B, 3, MATCH_ANY);
        assert_eq!(woken(&mut t, OTHER_SPACE, 10, MATCH_ANY), [2]);
        assert_eq!(woken(&mut t, A, 10, MATCH_ANY), [1]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bitsets_select_waiters() {
        let mut t = FutexTable::new(8);
        t.enqueue(A, 1, 0b01);
        t.enqueue(A, 2, 0b10);
        t.enqueue(A, 3, MATCH_ANY);
        assert_eq!(woken(&mut t, A, 10, 0b10), [2, 3]);
        assert_eq!(woken(&mut t, A, 10, 0b10), Vec::<u32>::new());
        assert_eq!(woken(&mut t, A, 10, MATCH_ANY), [1]);
    }

    #[test]
    fn cancel_tells_timeout_from_wake() {
        let mut t = FutexTable::new(8);
        t.enqueue(A, 1, MATCH_ANY);
        t.enqueue(A, 2, MATCH_ANY);
        assert_eq!(woken(&mut t, A, 1, MATCH_ANY), [1]);
        assert!(!t.cancel(A, 1), "a woken waiter must not also time out");
        assert!(t.cancel(A, 2));
        assert!(t.is_empty());
    }

    #[test]
    fn a_forgotten_waiter_takes_no_later_wake() {
        // A waiter of a process that ended, left queued, must not absorb the one wake meant for
        // a waiter of a later process whose key (same process id, same address) is equal.
        let mut t = FutexTable::new(1);
        t.enqueue(A, 1, MATCH_ANY);
        t.enqueue(B, 1, MATCH_ANY);
        assert_eq!(t.bucket(A).forget(1), 2);
        t.enqueue(A, 2, MATCH_ANY);
        t.enqueue(A, 3, MATCH_ANY);
        assert_eq!(t.bucket(A).forget_where(|w| *w == 3), 1);
        assert_eq!(woken(&mut t, A, 1, MATCH_ANY), [2]);
        assert!(t.is_empty());
    }

    #[test]
    fn requeue_wakes_then_moves_to_the_tail() {
        for buckets in [1, 2, 64] {
            let mut t = FutexTable::new(buckets);
            t.enqueue(B, 10, MATCH_ANY);
            for w in 1..=5 {
                t.enqueue(A, w, MATCH_ANY);
            }
            let r = t.requeue(A, B, 1, 2);
            assert_eq!(r, Requeued { woken: vec![1], moved: vec![2, 3] });
            assert_eq!(r.total(), 3);
            assert_eq!(t.waiters(A), 2);
            assert_eq!(woken(&mut t, B, 10, MATCH_ANY), [10, 2, 3]);
            assert!(!t.cancel(A, 2), "a moved waiter is no longer on its old key");
        }
    }

    /// The specification: one global FIFO list of (key, who, bitset).
    #[derive(Default)]
    struct Model(Vec<(FutexKey, u32, u32)>);

    impl Model {
        fn wake(&mut self, key: FutexKey, n: u32, bits: u32) -> Vec<u32> {
            let mut out = Vec::new();
            let limit = n.max(1) as usize;
            self.0.retain(|&(k, w, b)| {
                if out.len() < limit && k == key && b & bits != 0 {
                    out.push(w);
                    false
                } else {
                    true
                }
            });
            out
        }
        fn requeue(&mut self, from: FutexKey, to: FutexKey, nw: u32, nr: u32) -> (Vec<u32>, Vec<u32>) {
            let (mut woken, mut moved) = (Vec::new(), Vec::new());
            let mut tail = Vec::new();
            self.0.retain(|&(k, w, b)| {
                if k != from {
                    true
                } else if woken.len() < nw as usize {
                    woken.push(w);
                    false
                } else if moved.len() < nr as usize {
                    moved.push(w);
                    tail.push((to, w, b));
                    false
                } else {
                    true
                }
            });
            self.0.extend(tail);
            (woken, moved)
        }
        fn cancel(&mut self, key: FutexKey, who: u32) -> bool {
            match self.0.iter().position(|&(k, w, _)| k == key && w == who) {
                Some(i) => {
                    self.0.remove(i);
                    true
                }
                None => false,
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Wait(u8, u32),
        Wake(u8, u32, u32),
        Requeue(u8, u8, u32, u32),
        Cancel(u8, u8),
    }

    fn key(k: u8) -> FutexKey {
        FutexKey { space: u64::from(k % 2), addr: 0x1000 + 4 * u64::from(k / 2) }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, prop_oneof![Just(MATCH_ANY), 1u32..8]).prop_map(|(k, b)| Op::Wait(k, b)),
            (0u8..6, 0u32..4, prop_oneof![Just(MATCH_ANY), 1u32..8]).prop_map(|(k, n, b)| Op::Wake(k, n, b)),
            (0u8..6, 0u8..6, 0u32..3, 0u32..3).prop_map(|(a, b, w, r)| Op::Requeue(a, b, w, r)),
            (0u8..6, 0u8..40).prop_map(|(k, w)| Op::Cancel(k, w)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any sequence of operations gives the same answers as the one-list model, whatever the
        /// bucket count; and every waiter is accounted for exactly once: queued, woken or cancelled.
        #[test]
        fn matches_the_model(ops in proptest::collection::vec(op(), 1..80), buckets in prop_oneof![Just(1usize), Just(2), Just(16)]) {
            let mut t = FutexTable::new(buckets);
            let mut m = Model::default();
            let (mut next, mut queued, mut woken_total, mut cancelled) = (0u32, 0usize, 0usize, 0usize);
            for op in ops {
                match op {
                    Op::Wait(k, b) => {
                        t.enqueue(key(k), next, b);
                        m.0.push((key(k), next, b));
                        next += 1;
                        queued += 1;
                    }
                    Op::Wake(k, n, b) => {
                        let got = woken(&mut t, key(k), n, b);
                        prop_assert_eq!(&got, &m.wake(key(k), n, b));
                        woken_total += got.len();
                    }
                    Op::Requeue(a, b, nw, nr) => {
                        let r = t.requeue(key(a), key(b), nw, nr);
                        let (mw, mm) = m.requeue(key(a), key(b), nw, nr);
                        prop_assert_eq!(&r.woken, &mw);
                        prop_assert_eq!(&r.moved, &mm);
                        woken_total += r.woken.len();
                    }
                    Op::Cancel(k, w) => {
                        let c = t.cancel(key(k), u32::from(w));
                        prop_assert_eq!(c, m.cancel(key(k), u32::from(w)));
                        cancelled += usize::from(c);
                    }
                }
                prop_assert_eq!(t.len(), m.0.len());
                prop_assert_eq!(t.len() + woken_total + cancelled, queued);
            }
        }
    }
}
