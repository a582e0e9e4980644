//! Interruptible sleep: the one way a user thread blocks in a system call that a signal must be
//! able to cut short (futex waits, `nanosleep`, `pause`, `rt_sigsuspend`, and for the layers above,
//! pipe reads, `poll` and `wait4`).
//!
//! Each user thread is tracked (registered when the thread starts, forgotten when it ends) by its
//! context (`task::uctx::UserCtx`), whose `intr` field holds a *pending* flag, which the signal
//! layer keeps equal to "a signal this thread would act on is waiting" (`process::signal`
//! recomputes it whenever a send, a mask change or a delivery changes that), and the wait queue
//! the thread sleeps on, if any. A system call that holds its context sleeps with [`wait_as`],
//! which searches no table.
//!
//! How to sleep, for any layer at or above this one:
//!
//! ```text
//! let q: Arc<sched::WaitQueue> = ...;          // the queue the resource's wakers wake
//! match intr::wait(&q, || resource_ready()) {
//!     Ok(())            => ...,                // ready (checked before the signal)
//!     Err(Interrupted)  => return Err(ERESTARTSYS), // or EINTR / ERESTARTNOHAND, per call
//! }
//! intr::sleep_ns(ns)   // a timed sleep: Ok(()) after ns, Err(Interrupted { .. }) with the time left
//! ```
//!
//! A wake-up is never lost: the sleeper records its queue (which stays recorded after the wait,
//! see [`wait_as`]), then (inside `WaitQueue::wait_until`,
//! linked on the queue) reads the flag; a sender sets the flag, then reads the recorded queue and
//! wakes it. Whichever is second sees the other. The flag is `SeqCst` and the queue slot is under a
//! lock, so the two orders are total. Spurious wake-ups of other sleepers of the same queue cost
//! them one more check.
//!
//! Timed sleeps: the scheduler's `sleep_ns` cannot be cut short, so [`sleep_ns`] sleeps in slices
//! of at most [`SLICE_NS`] and checks the flag between them: a signal ends a timed sleep within one
//! slice (named trade-off: a sleeping thread wakes once per slice).
//!
//! From interrupt context only [`set_pending`] and [`kick`] may be called (both take interrupts-off
//! locks and never allocate).

use alloc::{collections::BTreeMap, sync::Arc};
use core::sync::atomic::{AtomicUsize, Ordering};

use talc::lock_api::Mutex as SpinMutex;

use crate::{
    cpu::irqlock::RawIrqSpin,
    task::{self, uctx::UserCtx},
};

/// Longest slice of a timed interruptible sleep.
pub const SLICE_NS: u64 = 1_000_000;

/// The tracked threads: their contexts, whose `intr` field holds the flag and the queue.
static ENTRIES: SpinMutex<RawIrqSpin, BTreeMap<u64, Arc<UserCtx>>> = SpinMutex::new(BTreeMap::new());

/// A signal cut the sleep short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupted {
    /// For a timed sleep: the nanoseconds that were left (0 for an untimed wait).
    pub left_ns: u64,
}

fn current_tid() -> u64 {
    task::sched().current().map_or(0, |t| t.id.0)
}

fn entry(tid: u64) -> Option<Arc<UserCtx>> {
    ENTRIES.lock().get(&tid).cloned()
}

/// Start tracking thread `tid` (at its start, before it can be sent anything; after its context
/// is registered).
pub fn register(tid: u64) {
    if let Some(ctx) = task::uctx::get(tid) {
        ENTRIES.lock().entry(tid).or_insert(ctx);
    }
}

/// Stop tracking thread `tid` (at its end).
pub fn forget(tid: u64) {
    let e = ENTRIES.lock().remove(&tid);
    if let Some(e) = e {
        set_flag(&e, false);
        // The queue its last wait recorded (see `wait_as`).
        let q = {
            let mut slot = e.intr.sleeping_on.lock();
            e.intr.recorded.store(0, Ordering::Relaxed);
            slot.take()
        };
        drop(q);
    }
}

/// An upper bound of the number of threads whose `pending` flag is set: raised before a flag is set, lowered
/// after one is cleared. While it is 0 no flag is set, and [`is_pending`], which every system
/// call's return asks, answers without the lock and the search of [`ENTRIES`].
static PENDING_BOUND: AtomicUsize = AtomicUsize::new(0);

/// Set `e`'s flag to `pending`, keeping [`PENDING_BOUND`] at or above the flags set.
fn set_flag(e: &UserCtx, pending: bool) {
    let flag = &e.intr.pending;
    if pending {
        PENDING_BOUND.fetch_add(1, Ordering::SeqCst);
        if flag.swap(true, Ordering::SeqCst) {
            PENDING_BOUND.fetch_sub(1, Ordering::SeqCst);
        }
    } else if flag.swap(false, Ordering::SeqCst) {
        PENDING_BOUND.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Say whether thread `tid` has a signal to act on (the signal layer's call).
pub fn set_pending(tid: u64, pending: bool) {
    if let Some(e) = entry(tid) {
        set_flag(&e, pending);
        // The system-call exit tests the thread's work word, not this flag.
        task::uctx::set_work(tid, task::uctx::work::SIGNAL, pending);
    }
}

/// Whether thread `tid` has a signal to act on. A flag set concurrently with this call may be
/// missed, as it would be by a call made just before; one set before it is seen (`SeqCst`).
pub fn is_pending(tid: u64) -> bool {
    if PENDING_BOUND.load(Ordering::SeqCst) == 0 {
        return false;
    }
    entry(tid).is_some_and(|e| e.intr.pending.load(Ordering::SeqCst))
}

/// Wake thread `tid` if it sleeps interruptibly (after [`set_pending`] said true).
pub fn kick(tid: u64) {
    // A futex wait sleeps on the thread's own park, not through `wait`.
    task::uctx::kick_park(tid);
    let Some(e) = entry(tid) else { return };
    let q = e.intr.sleeping_on.lock().clone();
    if let Some(q) = q {
        q.wake_all(task::sched());
    }
}

/// Block the calling thread on `queue` until `ready()` holds (`Ok`) or a signal is pending for it
/// (`Err`); `ready` wins when both hold. `ready` runs with interrupts off and must not block; the
/// resource's wakers wake `queue` after making it true. A kernel thread (no entry) cannot be
/// interrupted.
pub fn wait(queue: &Arc<sched::WaitQueue>, mut ready: impl FnMut() -> bool) -> Result<(), Interrupted> {
    let Some(e) = entry(current_tid()) else {
        queue.wait_until(task::sched(), ready);
        return Ok(());
    };
    if ready() {
        return Ok(());
    }
    wait_as(&e, queue, ready)
}

/// [`wait`] for a caller that holds its own context `me` (a system call): no search for it, and
/// no test of `ready` before the thread links itself on `queue`: the caller has just found it
/// false (the first test, made linked, sees a change since).
///
/// The queue stays recorded after the wait (until the thread's next wait on another queue, or its
/// end): a thread that sleeps on one queue again and again (a pipe's reader) records it once, and
/// a signal that finds a queue it no longer sleeps on wakes that queue's sleepers spuriously, which
/// costs them one more check of their condition.
///
/// Only the thread itself records a queue (and forgets it at its end), so when the address it
/// recorded last is `queue`'s, the slot holds `queue` (which it keeps alive, so no other queue can
/// have that address) and the wait takes no lock to record it again. A sender that kicks the
/// thread still reads the slot under its lock, after this thread's earlier record.
pub fn wait_as(me: &UserCtx, queue: &Arc<sched::WaitQueue>, mut ready: impl FnMut() -> bool) -> Result<(), Interrupted> {
    let addr = Arc::as_ptr(queue) as usize;
    if me.intr.recorded.load(Ordering::Relaxed) != addr {
        let old = {
            let mut slot = me.intr.sleeping_on.lock();
            me.intr.recorded.store(addr, Ordering::Relaxed);
            slot.replace(queue.clone())
        };
        // The queue a previous wait left is dropped after the (interrupts-off) lock is released.
        drop(old);
    }
    let mut done = false;
    queue.wait_until_linked(task::sched(), || {
        done = ready();
        done || me.intr.pending.load(Ordering::SeqCst)
    });
    if done { Ok(()) } else { Err(Interrupted { left_ns: 0 }) }
}

/// Sleep `ns` nanoseconds unless a signal is (or becomes) pending for the calling thread.
pub fn sleep_ns(ns: u64) -> Result<(), Interrupted> {
    let s = task::sched();
    let e = entry(current_tid());
    let deadline = crate::time::now_ns().saturating_add(ns);
    loop {
        let now = crate::time::now_ns();
        if now >= deadline {
            return Ok(());
        }
        if e.as_ref().is_some_and(|e| e.intr.pending.load(Ordering::SeqCst)) {
            return Err(Interrupted { left_ns: deadline - now });
        }
        s.sleep_ns((deadline - now).min(if e.is_some() { SLICE_NS } else { u64::MAX }));
    }
}
