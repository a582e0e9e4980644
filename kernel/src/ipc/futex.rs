//! Futexes: user threads sleep on a 32-bit word of their memory until another thread wakes them.
//!
//! The queues are `abi::futex` buckets, each under its own spin lock ([`BUCKETS`], Linux's futex
//! hash); a queued waiter is a [`Sleeper`], a handle of the thread's context, which holds the
//! thread's own place to sleep (`task::uctx::Park`: a flag and a `sched::Parker`). Neither side
//! searches a table, takes a lock beyond the bucket's, or allocates per wait. A wake-up is never
//! lost:
//! - the waiter locks its bucket, reads the word through the user-copy routine, compares, clears its
//!   park's flag and enqueues itself, all under the lock, then unlocks and sleeps until the flag is
//!   set;
//! - a waker changed the word before calling in; it locks the bucket, takes the waiters, unlocks,
//!   sets each one's flag and wakes its parker. If the waker came first, the waiter's compare sees the
//!   new value (`EAGAIN`); if it came after, it finds the waiter queued.
//! - a timed-out (or interrupted) waiter cancels itself under the lock; if a waker took it first,
//!   the wait returns 0, but only once that waker has set its flag: a flag set late would end the
//!   thread's next wait at once and leave that wait's entry queued, to take a wake meant for
//!   another waiter. No wait returns with its entry still queued, and a thread's exit ([`forget`])
//!   takes out any entry it has, so no entry outlives its thread to meet a reused process id.
//!
//! Timeouts: the scheduler has no timed wait on a queue, so a timed waiter sleeps in slices of at
//! most [`TIMEOUT_SLICE_NS`] and checks its flag and the deadline after each (a wake-up that comes
//! during a slice is seen at its end: the parker's wake is a spurious one for `sleep_ns`). The trade-off: a timed wait costs a wake-up per slice.
//!
//! A signal interrupts a wait ([`WaitError::Interrupted`]): the sender sets the thread's pending
//! flag (`intr`'s, in the context), then `intr::kick` wakes the park (`uctx::kick_park`);
//! the untimed sleeper's condition reads that flag, the timed one checks it between its slices.
//!
//! Keys are (process memory, address) for private words, (frame, offset) for shared ones (see
//! `syscall::futex`).

use alloc::{collections::BTreeMap, sync::Arc};
use core::sync::atomic::Ordering;

use abi::futex::{Bucket, FutexKey, bucket_of, requeue};

use crate::task::{self, uctx::UserCtx};

const NR_BUCKETS: usize = 64;
/// Longest sleep of a timed waiter between checks of its deadline.
pub const TIMEOUT_SLICE_NS: u64 = 1_000_000;

/// A queued waiter: its thread's context. Two are equal when they are the same thread's.
#[derive(Clone)]
struct Sleeper(Arc<UserCtx>);

impl PartialEq for Sleeper {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Sleeper {}

static BUCKETS: [spin::Mutex<Bucket<Sleeper>>; NR_BUCKETS] = [const { spin::Mutex::new(Bucket::new()) }; NR_BUCKETS];

/// Forget a thread at its exit: any queue entry it still has. A `wait` leaves no entry behind when
/// it returns, so this finds one only if that invariant broke; it is cheap (one pass over the
/// buckets per thread exit) and keeps an ended thread from taking the wake of a later waiter with
/// the same key, which a reused process id makes possible.
pub fn forget(tid: u64) {
    MOVED.lock().remove(&tid);
    for b in &BUCKETS {
        b.lock().forget_where(|s| s.0.tid() == tid);
    }
}

/// Why a wait did not sleep or ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The word did not hold the expected value (`EAGAIN`).
    Changed,
    /// The word is not readable (`EFAULT`).
    Fault,
    /// The deadline passed (`ETIMEDOUT`).
    TimedOut,
    /// A signal is pending for the waiter (`intr`): the call is interrupted or restarted.
    Interrupted,
}

/// The futex word at user address `addr` (4-aligned: the system call checked), in one load.
fn read_word(addr: u64) -> Result<u32, WaitError> {
    arch::usercopy::read_u32(addr).map_err(|_| WaitError::Fault)
}

/// The calling thread (context `me`) sleeps on `key` while the word at user address `word` (which
/// `key` names) holds `expected`, until woken through a wake whose bitset meets `bitset`, or until
/// `deadline_ns` (monotonic) passes.
pub fn wait(me: &UserCtx, key: FutexKey, word: u64, expected: u32, bitset: u32, deadline_ns: Option<u64>) -> Result<(), WaitError> {
    // Fault the word in first: the read under the bucket lock should not need the page-fault path.
    read_word(word)?;
    let handle = me.handle().ok_or(WaitError::Interrupted)?;
    let park = &me.park;
    // Made before the thread can first sleep, so a waker that takes it from the bucket finds it.
    let parker = park.parker();
    {
        let mut bucket = BUCKETS[bucket_of(key, NR_BUCKETS)].lock();
        if read_word(word)? != expected {
            return Err(WaitError::Changed);
        }
        park.woken.store(false, Ordering::Relaxed);
        bucket.enqueue(key, Sleeper(handle), bitset);
    }
    let s = task::sched();
    // Leave the queue unless a waker took the waiter first (then the wait succeeded).
    let leave = |why: WaitError| {
        // Under the lock: either still queued (a timeout, a signal) or already taken by a waker.
        let cancelled = cancel(key, me) || requeued_cancel(me);
        if cancelled {
            return Err(why);
        }
        // A waker took this waiter but may not have set its flag yet. Returning now would let
        // that late store land on the thread's next wait, which would then return at once with
        // its entry still queued: a stale entry that takes a later wake meant for another waiter
        // (a lost wake-up). The waker sets the flag right after it unlocks, so this is short.
        parker.park_until(s, || park.woken.load(Ordering::Acquire));
        Ok(())
    };
    let Some(deadline) = deadline_ns else {
        let mut woken = false;
        parker.park_until(s, || {
            woken = park.woken.load(Ordering::Acquire);
            woken || me.intr.pending.load(Ordering::SeqCst)
        });
        return if woken { Ok(()) } else { leave(WaitError::Interrupted) };
    };
    loop {
        if park.woken.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = crate::time::now_ns();
        if now >= deadline {
            return leave(WaitError::TimedOut);
        }
        if me.intr.pending.load(Ordering::SeqCst) {
            return leave(WaitError::Interrupted);
        }
        s.sleep_ns((deadline - now).min(TIMEOUT_SLICE_NS));
    }
}

/// Take `me`'s entry out of `key`'s bucket; whether it was there.
fn cancel(key: FutexKey, me: &UserCtx) -> bool {
    let mut bucket = BUCKETS[bucket_of(key, NR_BUCKETS)].lock();
    let mut found = false;
    bucket.forget_where(|s| {
        let mine = !found && core::ptr::eq(Arc::as_ptr(&s.0), me);
        found |= mine;
        mine
    });
    found
}

/// A waiter moved by a requeue sits under another key: find it there.
fn requeued_cancel(me: &UserCtx) -> bool {
    let moved = MOVED.lock().remove(&me.tid());
    match moved {
        Some(key) => cancel(key, me),
        None => false,
    }
}

/// Waiters a requeue moved, by thread id, with their new key (for their timeout's cancel).
static MOVED: spin::Mutex<BTreeMap<u64, FutexKey>> = spin::Mutex::new(BTreeMap::new());

/// Wake waiters taken out of their bucket (after it is unlocked). A taken waiter is still in its
/// wait: it waits for this flag even when it timed out or was interrupted.
fn wake_sleeper(sleeper: &Sleeper) {
    let park = &sleeper.0.park;
    park.woken.store(true, Ordering::Release);
    park.wake();
}

/// Waiters one pass of [`wake`] takes out of the bucket, into an array on the stack.
const WAKE_BATCH: usize = 8;

/// Wake up to `n` waiters of `key` whose bitset meets `bitset`; returns how many.
///
/// The waiters are taken in batches of [`WAKE_BATCH`] (no allocation per wake) and woken after
/// the bucket is unlocked; another batch follows only when one came back full, so a waiter that
/// queues during the wake is taken only when more than a batch was asked for and found.
pub fn wake(key: FutexKey, n: u32, bitset: u32) -> u32 {
    // As on Linux, `n` 0 still wakes one.
    let limit = n.max(1);
    if limit == 1 {
        // The common wake of one: no batch to fill and drop.
        let mut one = None;
        let took = BUCKETS[bucket_of(key, NR_BUCKETS)].lock().wake(key, 1, bitset, |t| one = Some(t));
        if let Some(sleeper) = one {
            wake_sleeper(&sleeper);
        }
        return took;
    }
    let mut count = 0;
    loop {
        let want = (limit - count).min(WAKE_BATCH as u32);
        let mut batch: [Option<Sleeper>; WAKE_BATCH] = Default::default();
        let mut taken = 0;
        let took = BUCKETS[bucket_of(key, NR_BUCKETS)].lock().wake(key, want, bitset, |t| {
            batch[taken] = Some(t);
            taken += 1;
        });
        for sleeper in batch[..taken].iter().flatten() {
            wake_sleeper(sleeper);
        }
        count += took;
        if took < WAKE_BATCH as u32 || count >= limit {
            return count;
        }
    }
}

/// `FUTEX_REQUEUE`/`FUTEX_CMP_REQUEUE`: wake `nr_wake` waiters of `from`, move up to `nr_requeue`
/// more to `to`; with `expected`, only if the word at user address `word` (which `from` names)
/// holds it (checked under the locks). Returns woken plus moved.
pub fn requeue_waiters(from: FutexKey, word: u64, to: FutexKey, nr_wake: u32, nr_requeue: u32, expected: Option<u32>) -> Result<u64, WaitError> {
    let (a, b) = (bucket_of(from, NR_BUCKETS), bucket_of(to, NR_BUCKETS));
    if expected.is_some() {
        read_word(word)?;
    }
    let result = {
        // Lock order: lower bucket index first.
        let (first, second) = (a.min(b), a.max(b));
        let mut g1 = BUCKETS[first].lock();
        let mut g2 = (first != second).then(|| BUCKETS[second].lock());
        if let Some(e) = expected
            && read_word(word)? != e
        {
            return Err(WaitError::Changed);
        }
        let r = match g2.as_deref_mut() {
            None => requeue(&mut g1, None, from, to, nr_wake, nr_requeue),
            Some(other) if a == first => requeue(&mut g1, Some(other), from, to, nr_wake, nr_requeue),
            Some(other) => requeue(other, Some(&mut g1), from, to, nr_wake, nr_requeue),
        };
        let mut moved = MOVED.lock();
        for t in &r.moved {
            moved.insert(t.0.tid(), to);
        }
        r
    };
    for sleeper in &result.woken {
        wake_sleeper(sleeper);
    }
    Ok(result.total() as u64)
}
