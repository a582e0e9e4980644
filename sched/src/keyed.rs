//! Threads waiting on keyed words: the queue of a futex bucket.
//!
//! Key type: [`KeyedWaitQueue`], one list of waiters under one spin lock, each waiting on a key
//! (a futex word) with a bitset. A waiter queues itself only if the caller's check, run under the
//! lock, says so (the futex value compare); a wake takes waiters of one key, a requeue wakes some
//! and moves others to another queue and key.
//!
//! Neighbours: [`Parker`] (each waiter sleeps on its own, so a signal can wake it without this
//! queue), `Scheduler` (blocks and wakes the threads). Nothing here allocates.
//!
//! How a wake-up is never lost, and no node is touched after its waiter left:
//! - The waiter links its node, which lives on its own stack, under the lock once its check
//!   passed, then parks until its node is off the list (or it stops: a signal, a deadline). The
//!   parker's protocol (`Blocked`, a `SeqCst` fence, then the condition) meets the waker's (the
//!   node unlinked, a `SeqCst` fence, then `rq::wake`): either the waiter sees its node unlinked,
//!   or the waker sees `Blocked` and makes it runnable.
//! - A waker unlinks a node and wakes its thread *under the lock* (the reschedule IPI goes out after
//!   it, as `WaitQueue::wake_one` does), then sets the node's `done`, its last touch of the node
//!   and the thread. A taken waiter leaves once it sees `done` (at once on one CPU, where the waker
//!   finished before the waiter ran; after a short spin at worst on another, the waker's interrupts
//!   being off); a waiter that stopped takes the lock before it leaves. Either way no waker still
//!   holds its node or its thread when its frame goes, and neither needs a reference count.
//! - A waiter that stopped (timeout, signal) unlinks itself under the lock if its node is still
//!   linked (the wait failed); if a waker took it first, the wait succeeded, as Linux's futex
//!   says (a wake is never both delivered and reported as a timeout).
//! - A requeue moves a node to another queue under both locks and records that queue in the node
//!   (`home`); a leaving waiter locks the queue its node names and checks that the name did not
//!   change before it got the lock (Linux's `lock_ptr` check).
//!
//! Every lock is taken with interrupts disabled: a holder preempted by the timer would leave a
//! waker on its CPU spinning with interrupts off, forever on one CPU.

use core::ptr::{NonNull, null_mut};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering, fence};

use spin::mutex::SpinMutex;

use crate::platform::{IrqState, Platform};
use crate::scheduler::{Kick, Scheduler};
use crate::ilist::{self, Links};
use crate::thread::Thread;
use crate::wait::Parker;

/// A waiter's entry, on its own stack while it is inside [`KeyedWaitQueue::wait`].
struct Node<K> {
    thread: NonNull<Thread>,
    links: Links<Node<K>>,
    /// What it waits on (a requeue changes it, holding the lock of the queue it moves to).
    key: K,
    bitset: u32,
    /// Linked in a queue (a requeue moves it without clearing this); set and cleared under that
    /// queue's lock, read by the waiter without it.
    queued: AtomicBool,
    /// Set by the waker that took the node, after its last access to the node and the thread.
    done: AtomicBool,
    /// The queue whose list holds (or last held) the node: changed only by a requeue, under the
    /// locks of both queues.
    home: AtomicPtr<KeyedWaitQueue<K>>,
}

impl<K> ilist::Node for Node<K> {
    unsafe fn links(n: *mut Self) -> *mut Links<Self> {
        // SAFETY: `n` is valid (caller).
        unsafe { &raw mut (*n).links }
    }
}

/// FIFO of waiter nodes. A requeue moves a node without clearing its `queued` flag, so the flag
/// is the callers' to set and clear.
type List<K> = ilist::List<Node<K>>;

/// Threads waiting on keys (futex words), woken by key and bitset. Queues are `'static` (a
/// requeued node names its new queue, which its waiter locks on the way out).
pub struct KeyedWaitQueue<K> {
    list: SpinMutex<List<K>>,
}

// SAFETY: the list is reached only under its lock; the keys it holds are `Send`.
unsafe impl<K: Send> Sync for KeyedWaitQueue<K> {}

impl<K> Default for KeyedWaitQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> KeyedWaitQueue<K> {
    /// An empty queue.
    pub const fn new() -> Self {
        KeyedWaitQueue {
            list: SpinMutex::new(List::new()),
        }
    }
}

/// Unlink `n` and wake its thread, the list locked and interrupts disabled: the thread's
/// reschedule interrupt is the caller's to send ([`Scheduler::send_kick`]), once it has let go of
/// the lock if it can.
///
/// # Safety
/// `n` is linked in `list`, whose lock the caller holds.
#[inline(always)]
unsafe fn take<K, P: Platform>(
    list: &mut List<K>,
    s: &Scheduler<P>,
    n: *mut Node<K>,
) -> Option<Kick> {
    // SAFETY: `n` is linked (caller), so valid; its waiter cannot leave `wait` (nor its thread
    // end) before we drop the lock, so the thread is valid for the wake.
    unsafe {
        list.unlink(n);
        (*n).queued.store(false, Ordering::Relaxed);
        // The other half of the parker's fence: the unlink is visible before `rq::wake` reads the
        // thread's state.
        fence(Ordering::SeqCst);
        let kick = s.wake_thread_deferred((*n).thread);
        // Release: the waiter that sees it may reuse the node's frame and end its thread.
        (*n).done.store(true, Ordering::Release);
        kick
    }
}

impl<K: Copy + Eq + Send> KeyedWaitQueue<K> {
    /// The calling thread, owner of `parker`, waits on `key` (woken by wakes whose bitset meets
    /// `bitset`) if `check()`, run under the lock with interrupts disabled, returns `Ok`; until a
    /// waker takes it (`Ok(())`) or `stop()` returns a reason (`Err`, unless a waker took it
    /// first). `stop` runs with interrupts disabled, before each sleep and after each wake-up.
    ///
    /// Without `nap` the thread blocks on its parker, so whatever makes `stop` return a reason must
    /// then wake the parker ([`Parker::wake`]). With `nap` (a bounded sleep, run with interrupts
    /// enabled) the thread naps until taken or stopped, checking both after each nap: a timed wait.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn wait<P: Platform, E>(
        &'static self,
        s: &Scheduler<P>,
        parker: &Parker,
        key: K,
        bitset: u32,
        check: impl FnOnce() -> Result<(), E>,
        stop: impl FnMut() -> Option<E>,
        nap: Option<&dyn Fn()>,
    ) -> Result<(), E> {
        let irq = s.platform().irq_save_disable();
        self.wait_from(s, irq, parker, key, bitset, check, stop, nap)
    }

    /// [`KeyedWaitQueue::wait`] for a caller that runs with interrupts enabled (a system call's
    /// own code): they go off without a read of the flag ([`Platform::irq_disable_from_on`]).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn wait_irqs_on<P: Platform, E>(
        &'static self,
        s: &Scheduler<P>,
        parker: &Parker,
        key: K,
        bitset: u32,
        check: impl FnOnce() -> Result<(), E>,
        stop: impl FnMut() -> Option<E>,
        nap: Option<&dyn Fn()>,
    ) -> Result<(), E> {
        let irq = s.platform().irq_disable_from_on();
        self.wait_from(s, irq, parker, key, bitset, check, stop, nap)
    }

    /// The body of both: interrupts are disabled, `irq` says how to put them back.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn wait_from<P: Platform, E>(
        &'static self,
        s: &Scheduler<P>,
        mut irq: IrqState,
        parker: &Parker,
        key: K,
        bitset: u32,
        check: impl FnOnce() -> Result<(), E>,
        mut stop: impl FnMut() -> Option<E>,
        nap: Option<&dyn Fn()>,
    ) -> Result<(), E> {
        let mut node = Node {
            thread: parker.thread(),
            links: Links::new(),
            key,
            bitset,
            queued: AtomicBool::new(false),
            done: AtomicBool::new(false),
            home: AtomicPtr::new(core::ptr::from_ref(self).cast_mut()),
        };
        let node: *mut Node<K> = &raw mut node;
        {
            let mut list = self.list.lock();
            if let Err(e) = check() {
                drop(list);
                s.platform().irq_restore(irq);
                return Err(e);
            }
            // SAFETY: `node` lives on this frame until the function returns, and is unlinked before
            // that (`leave`); only the lock holder touches its links.
            unsafe {
                (*node).queued.store(true, Ordering::Relaxed);
                list.push_back(node);
            }
        }
        // SAFETY: `node` lives on this frame; `queued` is atomic, read here without the lock.
        let taken = || !unsafe { &(*node).queued }.load(Ordering::Acquire);
        let why = match nap {
            None => {
                let mut why = None;
                parker.park_until_irqs_off_inline(s, || {
                    taken() || {
                        why = stop();
                        why.is_some()
                    }
                });
                why
            }
            Some(nap) => loop {
                if taken() {
                    break None;
                }
                if let Some(why) = stop() {
                    break Some(why);
                }
                s.platform().irq_restore(irq);
                nap();
                irq = s.platform().irq_save_disable();
            },
        };
        // SAFETY: `node` is this frame's and was linked by this call.
        let r = unsafe { Self::finish(node, why) };
        s.platform().irq_restore(irq);
        r
    }

    /// [`KeyedWaitQueue::wait`] that also ends at `deadline_ns` (the platform clock): a timed wait
    /// whose sleep ends at the waker's wake-up, not at a nap's end. `stop` is checked as in an
    /// untimed wait (whatever makes it return a reason wakes the parker), and again once the
    /// deadline has ended the sleep: it must then return a reason (the timeout), or the thread
    /// sleeps again until the next wake-up or deadline. Its own copy of `wait`'s steps, so that
    /// `wait`, inlined into the futex system call, keeps its shape.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn wait_until<P: Platform, E>(
        &'static self,
        s: &Scheduler<P>,
        parker: &Parker,
        key: K,
        bitset: u32,
        check: impl FnOnce() -> Result<(), E>,
        mut stop: impl FnMut() -> Option<E>,
        deadline_ns: u64,
    ) -> Result<(), E> {
        let irq = s.platform().irq_save_disable();
        let mut node = Node {
            thread: parker.thread(),
            links: Links::new(),
            key,
            bitset,
            queued: AtomicBool::new(false),
            done: AtomicBool::new(false),
            home: AtomicPtr::new(core::ptr::from_ref(self).cast_mut()),
        };
        let node: *mut Node<K> = &raw mut node;
        {
            let mut list = self.list.lock();
            if let Err(e) = check() {
                drop(list);
                s.platform().irq_restore(irq);
                return Err(e);
            }
            // SAFETY: `node` lives on this frame until the function returns, and is unlinked before
            // that (`leave`); only the lock holder touches its links.
            unsafe {
                (*node).queued.store(true, Ordering::Relaxed);
                list.push_back(node);
            }
        }
        // SAFETY: `node` lives on this frame; `queued` is atomic, read here without the lock.
        let taken = || !unsafe { &(*node).queued }.load(Ordering::Acquire);
        // Unlike `wait`'s naps, the sleep ends at the waker's wake-up or at the deadline.
        let why = loop {
            let mut why = None;
            let done = parker.park_until_deadline_irqs_off(s, deadline_ns, || {
                taken() || {
                    why = stop();
                    why.is_some()
                }
            });
            if done {
                break why;
            }
            // Past the deadline: `stop` says why (or, on a clock a little behind, sleep on).
            if taken() {
                break None;
            }
            if let Some(why) = stop() {
                break Some(why);
            }
        };
        // SAFETY: `node` is this frame's and was linked by this call.
        let r = unsafe { Self::finish(node, why) };
        s.platform().irq_restore(irq);
        r
    }

    /// The end of a wait whose sleep is over: taken (`why` is `None`), wait until the waker is
    /// done with the node and the thread; stopped, leave the queue, unless a waker took the node
    /// first (then the wait succeeded after all, as on Linux).
    ///
    /// # Safety
    /// `node` is the caller's own, linked by its wait (interrupts disabled).
    #[inline(always)]
    unsafe fn finish<E>(node: *mut Node<K>, why: Option<E>) -> Result<(), E> {
        match why {
            None => {
                // SAFETY: `node` is valid (caller); `done` is atomic.
                while !unsafe { &(*node).done }.load(Ordering::Acquire) {
                    core::hint::spin_loop();
                }
                Ok(())
            }
            // SAFETY: as the caller promises.
            Some(why) => match unsafe { Self::leave(node) } {
                true => Err(why),
                // A waker took it first (and, holding the lock we then took, is done with it).
                false => Ok(()),
            },
        }
    }

    /// Take the lock of the queue that holds `node` (or last did), unlink it if it is still
    /// linked, and let go: whether it was. After this no waker touches the node or its thread.
    ///
    /// # Safety
    /// `node` is the caller's own, linked by its `wait` (interrupts disabled).
    #[inline(always)]
    unsafe fn leave(node: *mut Node<K>) -> bool {
        loop {
            // SAFETY: the node is valid (caller); `home` names a `'static` queue.
            let home = unsafe { &(*node).home }.load(Ordering::Acquire);
            // SAFETY: queues are `'static` (`wait` and `requeue` take them so).
            let mut list = unsafe { &*home }.list.lock();
            // A requeue may have moved the node between the load and the lock: then the lock to
            // take is the other queue's.
            // SAFETY: as above.
            if unsafe { &(*node).home }.load(Ordering::Relaxed) != home {
                continue;
            }
            // SAFETY: as above; under the lock of the list that holds the node if it is linked.
            let queued = unsafe { &(*node).queued }.load(Ordering::Relaxed);
            if queued {
                // SAFETY: linked in this list (its home), whose lock we hold.
                unsafe {
                    list.unlink(node);
                    (*node).queued.store(false, Ordering::Relaxed);
                }
            }
            return queued;
        }
    }

    /// Wake up to `nr` (at least one is the caller's business) waiters of `key` whose bitset meets
    /// `bitset`, oldest first; how many.
    #[inline]
    pub fn wake<P: Platform>(&self, s: &Scheduler<P>, key: K, nr: u32, bitset: u32) -> u32 {
        let irq = s.platform().irq_save_disable();
        self.wake_from(s, irq, key, nr, bitset)
    }

    /// [`KeyedWaitQueue::wake`] for a caller that runs with interrupts enabled (a system call's
    /// own code): they go off without a read of the flag ([`Platform::irq_disable_from_on`]).
    #[inline]
    pub fn wake_irqs_on<P: Platform>(&self, s: &Scheduler<P>, key: K, nr: u32, bitset: u32) -> u32 {
        let irq = s.platform().irq_disable_from_on();
        self.wake_from(s, irq, key, nr, bitset)
    }

    /// The body of both: interrupts are disabled, `irq` says how to put them back.
    #[inline(always)]
    fn wake_from<P: Platform>(&self, s: &Scheduler<P>, irq: IrqState, key: K, nr: u32, bitset: u32) -> u32 {
        let mut list = self.list.lock();
        let wanted = |n: *mut Node<K>| {
            // SAFETY: a linked node is valid while we hold the lock (its waiter takes it before
            // leaving).
            unsafe { (*n).key == key && (*n).bitset & bitset != 0 }
        };
        // The next node from `n` on that the wake wants (null if none).
        let find = |mut n: *mut Node<K>| {
            while !n.is_null() && !wanted(n) {
                // SAFETY: as in `wanted`.
                n = unsafe { List::next(n) };
            }
            n
        };
        let mut count = 0;
        let mut n = find(list.head);
        while !n.is_null() {
            count += 1;
            // The one after is found before `n` is unlinked: the last one woken is known as such,
            // and its reschedule interrupt waits for the unlock.
            let after = if count < nr {
                // SAFETY: as in `wanted`.
                find(unsafe { List::next(n) })
            } else {
                null_mut()
            };
            // SAFETY: `n` is linked in this list, whose lock we hold.
            let kick = unsafe { take(&mut list, s, n) };
            if after.is_null() {
                drop(list);
                if let Some(kick) = kick {
                    s.send_kick(kick);
                }
                s.platform().irq_restore(irq);
                return count;
            }
            if let Some(kick) = kick {
                s.send_kick(kick);
            }
            n = after;
        }
        drop(list);
        s.platform().irq_restore(irq);
        0
    }

    /// `FUTEX_REQUEUE`: if `check()` (run under both locks, interrupts disabled) returns `Ok`, wake
    /// up to `nr_wake` waiters of `from` here (bitsets ignored, as on Linux), then move up to
    /// `nr_requeue` more to the tail of `to`, waiting on `to_key` there, in the order they had.
    /// Returns (woken, moved).
    #[allow(clippy::too_many_arguments)]
    pub fn requeue<P: Platform, E>(
        &'static self,
        s: &Scheduler<P>,
        from: K,
        to: &'static Self,
        to_key: K,
        nr_wake: u32,
        nr_requeue: u32,
        check: impl FnOnce() -> Result<(), E>,
    ) -> Result<(u32, u32), E> {
        let irq = s.platform().irq_save_disable();
        let same = core::ptr::eq(self, to);
        // Lock order: the queue at the lower address first.
        let (mut src, mut dst);
        if same || core::ptr::from_ref(self) < core::ptr::from_ref(to) {
            src = self.list.lock();
            dst = (!same).then(|| to.list.lock());
        } else {
            dst = Some(to.list.lock());
            src = self.list.lock();
        }
        if let Err(e) = check() {
            drop((src, dst));
            s.platform().irq_restore(irq);
            return Err(e);
        }
        let mut last = None;
        let (mut woken, mut moved) = (0, 0);
        let mut moving = List::new();
        let mut n = src.head;
        while !n.is_null() && (woken < nr_wake || moved < nr_requeue) {
            // SAFETY: linked nodes are valid under the lock (see `wake`); a moved node goes to
            // `moving`, a list of ours, then to `to`'s, under its lock, before we let go.
            unsafe {
                let next = List::next(n);
                if (*n).key == from {
                    if woken < nr_wake {
                        // The kicks but the last under the locks (as `WaitQueue::wake_all`).
                        if let Some(kick) = take(&mut src, s, n)
                            && let Some(earlier) = last.replace(kick)
                        {
                            s.send_kick(earlier);
                        }
                        woken += 1;
                    } else {
                        src.unlink(n);
                        moving.push_back(n);
                        moved += 1;
                    }
                }
                n = next;
            }
        }
        let target = match dst.as_deref_mut() {
            Some(d) => d,
            None => &mut *src,
        };
        let home = core::ptr::from_ref(to).cast_mut();
        let mut n = moving.head;
        while !n.is_null() {
            // SAFETY: `n` is on `moving` (valid, its waiter spins on a lock we hold to leave); the
            // target's lock is held. Its waiter may read `home` now: it then locks `to`, which we
            // hold, and finds the node linked there.
            unsafe {
                let next = List::next(n);
                (*n).key = to_key;
                (*n).home.store(home, Ordering::Release);
                target.push_back(n);
                n = next;
            }
        }
        drop((src, dst));
        if let Some(kick) = last {
            s.send_kick(kick);
        }
        s.platform().irq_restore(irq);
        Ok((woken, moved))
    }
}
