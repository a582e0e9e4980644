//! Futexes: user threads sleep on a 32-bit word of their memory until another thread wakes them.
//!
//! The queues are [`BUCKETS`] (Linux's futex hash), each a `sched::KeyedWaitQueue` under its own
//! spin lock. A waiter's entry lives on its own kernel stack for the length of its wait; it sleeps
//! on its thread's own parker (`task::uctx::Park`), which a signal wakes too. Neither side searches
//! a table, takes a lock beyond the bucket's, counts a reference, or allocates per wait. A wake-up
//! is never lost:
//! - the waiter, interrupts off, locks its bucket, reads the word through the user-copy routine,
//!   compares, and queues itself, all under the lock, then unlocks and sleeps until it is taken off;
//! - a waker changed the word before calling in; it locks the bucket, takes the waiters and wakes
//!   them under the lock. If the waker came first, the waiter's compare sees the new value
//!   (`EAGAIN`); if it came after, it finds the waiter queued.
//! - a timed-out (or interrupted) waiter takes itself off under the lock; if a waker took it
//!   first, the wait returns 0. A taken waiter leaves once its waker has said it is done with the
//!   entry, a stopped one under the bucket lock, so no waker still holds its entry when it goes
//!   (see `sched::KeyedWaitQueue`); no wait returns with its entry queued.
//!
//! The word is read under the lock with interrupts off, where a page fault cannot be resolved
//! (`irq::trap` sends it to the copy's fixup): a word on a page not yet present fails that read,
//! and the wait reads it again with interrupts on (which faults the page in, or is `EFAULT`) and
//! starts over.
//!
//! Timeouts: a timed waiter parks with a deadline (`sched::KeyedWaitQueue::wait_until`): the
//! scheduler's timer ends its sleep at the deadline, and a waker's (or a signal's) wake-up ends it
//! at once; the timer entry of a wait that ended early is taken out, so it wakes nobody later.
//!
//! A signal interrupts a wait ([`WaitError::Interrupted`]): the sender sets the thread's pending
//! flag (`intr`'s, in the context), then `intr::kick` wakes the park (`uctx::kick_park`); the
//! sleeper's condition reads that flag.
//!
//! Keys are (process memory, address) for private words, (frame, offset) for shared ones (see
//! `syscall::futex`).

use core::sync::atomic::Ordering;

use abi::futex::{FutexKey, bucket_of};
use sched::KeyedWaitQueue;

use crate::task::{self, uctx::UserCtx};

const NR_BUCKETS: usize = 64;

static BUCKETS: [KeyedWaitQueue<FutexKey>; NR_BUCKETS] = [const { KeyedWaitQueue::new() }; NR_BUCKETS];

/// The bucket of `key`.
fn bucket(key: FutexKey) -> &'static KeyedWaitQueue<FutexKey> {
    &BUCKETS[bucket_of(key, NR_BUCKETS)]
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

/// Whether the word at `addr` holds `expected`: the compare under the bucket lock.
fn compare(addr: u64, expected: u32) -> Result<(), WaitError> {
    match read_word(addr)? {
        v if v == expected => Ok(()),
        _ => Err(WaitError::Changed),
    }
}

/// The calling thread (context `me`) sleeps on `key` while the word at user address `word` (which
/// `key` names) holds `expected`, until woken through a wake whose bitset meets `bitset`, or until
/// `deadline_ns` (monotonic) passes. `#[inline(always)]`: the hand-off's wait runs in the table's
/// handler (`syscall::futex`), whatever the inliner's budget there.
#[inline(always)]
pub fn wait(me: &UserCtx, key: FutexKey, word: u64, expected: u32, bitset: u32, deadline_ns: Option<u64>) -> Result<(), WaitError> {
    match wait_once(me, key, word, expected, bitset, deadline_ns) {
        Err(WaitError::Fault) => wait_after_fault(me, key, word, expected, bitset, deadline_ns),
        r => r,
    }
}

/// One try of a [`wait`], untimed or timed.
#[inline(always)]
fn wait_once(me: &UserCtx, key: FutexKey, word: u64, expected: u32, bitset: u32, deadline_ns: Option<u64>) -> Result<(), WaitError> {
    match deadline_ns {
        None => wait_untimed(me, key, word, expected, bitset),
        Some(deadline) => wait_timed(me, key, word, expected, bitset, deadline),
    }
}

/// The rest of a [`wait`] whose word was not readable with interrupts off: fault it in (or fail)
/// with them on, and try again, until a try ends otherwise. Out of line, so that the hand-off's
/// wait keeps no state of this loop live across its sleep.
#[cold]
#[inline(never)]
fn wait_after_fault(me: &UserCtx, key: FutexKey, word: u64, expected: u32, bitset: u32, deadline_ns: Option<u64>) -> Result<(), WaitError> {
    loop {
        read_word(word)?;
        match wait_once(me, key, word, expected, bitset, deadline_ns) {
            Err(WaitError::Fault) => {}
            r => return r,
        }
    }
}

/// One try of an untimed [`wait`]: asleep on the parker until taken or signalled.
#[inline(always)]
fn wait_untimed(me: &UserCtx, key: FutexKey, word: u64, expected: u32, bitset: u32) -> Result<(), WaitError> {
    // Made before the thread can first sleep, so a signal's kick finds it.
    let parker = me.park.parker();
    let pending = || me.intr.pending.load(Ordering::SeqCst).then_some(WaitError::Interrupted);
    // `wait`'s one caller is the system call, which runs with interrupts on.
    bucket(key).wait_irqs_on(me.sched(), parker, key, bitset, || compare(word, expected), pending, None)
}

/// One try of a timed [`wait`]: asleep on the parker until taken, signalled or past `deadline`
/// (monotonic ns), which the scheduler's timer ends without slices.
#[inline(never)]
fn wait_timed(me: &UserCtx, key: FutexKey, word: u64, expected: u32, bitset: u32, deadline: u64) -> Result<(), WaitError> {
    let parker = me.park.parker();
    let s = task::sched();
    let stop = || match crate::time::now_ns() {
        now if now >= deadline => Some(WaitError::TimedOut),
        _ => me.intr.pending.load(Ordering::SeqCst).then_some(WaitError::Interrupted),
    };
    bucket(key).wait_until(s, parker, key, bitset, || compare(word, expected), stop, deadline)
}

/// Wake up to `n` waiters of `key` whose bitset meets `bitset`; returns how many.
/// `#[inline(always)]`: the hand-off's wake runs in the table's handler (`syscall::futex`), as
/// its wait does, whose frame already saves the registers the wake needs.
#[inline(always)]
pub fn wake(key: FutexKey, n: u32, bitset: u32) -> u32 {
    // As on Linux, `n` 0 still wakes one.
    bucket(key).wake(task::sched(), key, n.max(1), bitset)
}

/// [`wake`] from a system call's own code (the caller's context `me`), which runs with interrupts
/// on: they go off without a read of the flag (`KeyedWaitQueue::wake_irqs_on`).
#[inline(always)]
pub fn wake_from_syscall(me: &UserCtx, key: FutexKey, n: u32, bitset: u32) -> u32 {
    bucket(key).wake_irqs_on(me.sched(), key, n.max(1), bitset)
}

/// `FUTEX_REQUEUE`/`FUTEX_CMP_REQUEUE`: wake `nr_wake` waiters of `from`, move up to `nr_requeue`
/// more to `to`; with `expected`, only if the word at user address `word` (which `from` names)
/// holds it (checked under the locks). Returns woken plus moved.
pub fn requeue_waiters(from: FutexKey, word: u64, to: FutexKey, nr_wake: u32, nr_requeue: u32, expected: Option<u32>) -> Result<u64, WaitError> {
    let s = task::sched();
    loop {
        let check = || match expected {
            Some(e) => compare(word, e),
            None => Ok(()),
        };
        match bucket(from).requeue(s, from, bucket(to), to, nr_wake, nr_requeue, check) {
            Ok((woken, moved)) => return Ok(u64::from(woken) + u64::from(moved)),
            // As in `wait`.
            Err(WaitError::Fault) => {
                read_word(word)?;
            }
            Err(e) => return Err(e),
        }
    }
}
