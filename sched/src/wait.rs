//! Sleeping synchronisation: wait queues, and the mutex and semaphore built on them.
//!
//! Key types: [`WaitQueue`] (block until a condition holds; wake one or all), [`Parker`] (one
//! thread's own place to sleep, for callers that keep their own sleeper lists), its waker's
//! handle [`Unparker`] and [`ParkSlot`] (one sleeper's place, no lock), [`Mutex`] /
//! [`MutexGuard`] (a sleeping lock: waiters block, they do not spin), [`Semaphore`].
//!
//! Neighbours: `Scheduler` blocks and wakes the threads (`rq` decides); thread joins use a
//! `WaitQueue` too. Every operation takes the `&Scheduler` whose threads use the object.
//!
//! How a wake-up is never lost: a waiter marks itself `Blocked` and links itself into the queue
//! (under the queue lock) *before* it checks its condition one last time, and a waker changes the
//! condition *before* it looks at the queue (under the same lock). Whichever comes second sees the
//! other: either the waiter sees the new condition and does not sleep, or the waker sees the waiter
//! and wakes it (and `rq::wake` makes that safe even if the waiter has not switched away yet).
//! Waiters re-check after every wake-up, so a spurious one (e.g. a wake-up meant for a wait that
//! was already abandoned) costs only a loop iteration.
//!
//! Waiter nodes live on the waiting threads' own stacks; a waker wakes a thread while holding the
//! queue lock, and a waiter takes that lock before leaving `wait_until`, so no node or thread is
//! touched after its waiter has gone. The reschedule IPI of a wake-up goes out after the lock is
//! dropped (it names a CPU, not the thread): the woken thread's first step is to take that lock. Nothing here allocates, so wake-ups work from interrupt
//! handlers.
//!
//! `sched/tests/loom_wait.rs` model-checks this protocol (its steps mirrored on the real `rq`
//! primitives, since this module's spin lock is not loom's): a change to `wait_until` or
//! `wake_one` belongs there too.

use crate::platform::Platform;
use crate::scheduler::{Kick, Scheduler};
use crate::ilist::{self, Links};
use crate::thread::Thread;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering, fence};
use spin::mutex::SpinMutex;

/// A waiting thread's entry, on its own stack.
struct Node {
    thread: NonNull<Thread>,
    links: Links<Node>,
    /// On the list (set and cleared under its lock).
    linked: bool,
}

impl ilist::Node for Node {
    unsafe fn links(n: *mut Self) -> *mut Links<Self> {
        // SAFETY: `n` is valid (caller).
        unsafe { &raw mut (*n).links }
    }
}

type List = ilist::List<Node>;

/// Take the first waiter off `list`.
#[inline(always)]
fn pop_waiter(list: &mut List) -> Option<NonNull<Thread>> {
    let n = list.pop_front()?;
    // SAFETY: a node just unlinked under the lock is still valid: its waiter leaves only after
    // taking that lock.
    unsafe {
        (*n).linked = false;
        Some((*n).thread)
    }
}

/// Threads waiting for a condition.
pub struct WaitQueue {
    list: SpinMutex<List>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> WaitQueue {
        WaitQueue {
            list: SpinMutex::new(List::new()),
        }
    }

    /// Block the calling thread until `cond()` returns true. `cond` runs with interrupts disabled
    /// and must not block; whoever makes it true must then call [`WaitQueue::wake_one`] or
    /// [`WaitQueue::wake_all`]. Must be called from a scheduler thread (not an idle thread, not an
    /// interrupt handler).
    #[inline]
    pub fn wait_until<P: Platform>(&self, s: &Scheduler<P>, mut cond: impl FnMut() -> bool) {
        if cond() {
            return;
        }
        self.wait_until_linked(s, cond);
    }

    /// [`WaitQueue::wait_until`] without its first test, the one made before the thread links
    /// itself (which can only save a sleep, never lose a wake-up): for a caller that has just
    /// found `cond()` false itself. The test made once linked comes first here.
    #[inline]
    pub fn wait_until_linked<P: Platform>(&self, s: &Scheduler<P>, mut cond: impl FnMut() -> bool) {
        let irq = s.platform().irq_save_disable();
        let me = s.current_blockable();
        // SAFETY: the running thread is alive while it runs.
        let thread = unsafe { me.as_ref() };
        let mut node = Node {
            thread: me,
            links: Links::new(),
            linked: false,
        };
        let node: *mut Node = &raw mut node;
        // Before leaving: take the node off the list if no waker did. The lock is taken even when
        // it is off: the waker that popped it may hold the lock yet, and reaches the node and the
        // thread only under it. (`move`: the closure holds the pointer, not a borrow of the node's
        // fields, which the loop below writes through it too.)
        let leave = move || {
            let mut list = self.list.lock();
            // SAFETY: `node` lives on this frame until the function returns; only the lock holder
            // touches it while linked.
            unsafe {
                if (*node).linked {
                    list.unlink(node);
                    (*node).linked = false;
                }
            }
        };
        loop {
            {
                let mut list = self.list.lock();
                thread.entity.set_blocked();
                // SAFETY: `node` lives on this frame until the function returns, and it is unlinked
                // before that (below); only the lock holder touches it while linked.
                unsafe {
                    if !(*node).linked {
                        list.push_back(node);
                        (*node).linked = true;
                    }
                }
            }
            if cond() {
                leave();
                thread.entity.set_running();
                break;
            }
            s.block();
            // Woken (running again): test first, and leave without linking the node again when the
            // condition holds.
            if cond() {
                leave();
                break;
            }
        }
        s.platform().irq_restore(irq);
    }

    /// Wake the longest-waiting thread; false if there was none.
    pub fn wake_one<P: Platform>(&self, s: &Scheduler<P>) -> bool {
        let irq = s.platform().irq_save_disable();
        let mut list = self.list.lock();
        // SAFETY: the thread cannot leave `wait_until` (and so stays alive) before we drop the
        // queue lock; the kick sent after it touches no thread.
        let kick = pop_waiter(&mut list).map(|t| unsafe { s.wake_thread_deferred(t) });
        drop(list);
        let woke = kick.is_some();
        if let Some(Some(kick)) = kick {
            s.send_kick(kick);
        }
        s.platform().irq_restore(irq);
        woke
    }

    /// Wake every waiting thread; how many there were.
    pub fn wake_all<P: Platform>(&self, s: &Scheduler<P>) -> usize {
        let irq = s.platform().irq_save_disable();
        let mut list = self.list.lock();
        let mut woken = 0;
        // The last kick goes out after the lock is dropped (see
        // `Scheduler::wake_thread_deferred`); those before it, when several wake, under it.
        let mut last: Option<Kick> = None;
        while let Some(t) = pop_waiter(&mut list) {
            // SAFETY: as in `wake_one`.
            if let Some(kick) = unsafe { s.wake_thread_deferred(t) }
                && let Some(earlier) = last.replace(kick)
            {
                s.send_kick(earlier);
            }
            woken += 1;
        }
        drop(list);
        if let Some(kick) = last {
            s.send_kick(kick);
        }
        s.platform().irq_restore(irq);
        woken
    }
}

/// One thread's own place to sleep, for a caller that keeps its own list of sleepers under its own
/// lock (a futex bucket): [`Parker::park_until`] blocks the thread that owns the parker until its
/// condition holds, and [`Parker::wake`] (from any thread or CPU, interrupts on or off, with no
/// lock of the caller's held across it needed) makes it check again. No lock and no list: a
/// parker counts a reference to its thread, so a wake that arrives after the thread has left its
/// wait touches a live thread and is merely spurious (every sleep tolerates those: see
/// [`WaitQueue::wait_until`] and `Scheduler::sleep_ns`).
///
/// How a wake-up is never lost (the store-buffering pattern, closed by one `SeqCst` fence on each
/// side): the sleeper marks itself `Blocked`, fences, then reads its condition; a waker makes the
/// condition true, fences, then wakes the thread (`rq::wake`, which reads its state under its run
/// queue's lock). Either the sleeper sees the condition and withdraws its `Blocked`, or the waker
/// sees `Blocked` and makes the thread runnable (before or after it reached the switch path: see
/// `rq`). `sched/tests/loom_wait.rs` models this protocol.
pub struct Parker {
    thread: Arc<Thread>,
}

impl Parker {
    /// A parker owned by the calling thread (a scheduler thread, not an idle thread).
    pub fn for_current<P: Platform>(s: &Scheduler<P>) -> Parker {
        let irq = s.platform().irq_save_disable();
        let me = s.current_blockable().as_ptr().cast_const();
        // SAFETY: every scheduler thread's pointer is its `Arc`'s (`Arc::into_raw` in `spawn`),
        // and the running thread holds that reference while it runs, so the count is live.
        let thread = unsafe {
            Arc::increment_strong_count(me);
            Arc::from_raw(me)
        };
        s.platform().irq_restore(irq);
        Parker { thread }
    }

    /// Block the calling thread, which must own this parker, until `cond()` returns true. `cond`
    /// runs with interrupts disabled (but the first time) and must not block; whoever makes it true
    /// must then call [`Parker::wake`].
    #[inline]
    pub fn park_until<P: Platform>(&self, s: &Scheduler<P>, mut cond: impl FnMut() -> bool) {
        if cond() {
            return;
        }
        let irq = s.platform().irq_save_disable();
        self.park_until_irqs_off(s, cond);
        s.platform().irq_restore(irq);
    }

    /// [`Parker::park_until`] without its first test, the one made before the thread marks itself
    /// `Blocked` (which can only save a sleep, never lose a wake-up): for a caller that has just
    /// found `cond()` false itself, or has just made the offer that its first test must follow
    /// ([`ParkSlot::offer`]). The test made after the fence comes first here. The caller runs
    /// with interrupts enabled (a system call's own code): they go off without a read of the flag
    /// ([`Platform::irq_disable_from_on`]) and are on again at the return.
    #[inline]
    pub fn park_until_blocked<P: Platform>(&self, s: &Scheduler<P>, cond: impl FnMut() -> bool) {
        let irq = s.platform().irq_disable_from_on();
        self.park_until_irqs_off_inline(s, cond);
        s.platform().irq_restore(irq);
    }

    /// [`Parker::park_until`] called with interrupts disabled, which it leaves disabled; `cond`
    /// runs with them disabled every time.
    #[inline]
    pub(crate) fn park_until_irqs_off<P: Platform>(&self, s: &Scheduler<P>, cond: impl FnMut() -> bool) {
        self.park_until_irqs_off_with(s, cond, false);
    }

    /// [`Parker::park_until_irqs_off`] with the block's switch path in the caller's frame
    /// ([`Scheduler::block_inline`]): for the waits of a hand-off (a futex wait, a pipe's parked
    /// read), whose system call's frame already saves every register the switch needs.
    #[inline(always)]
    pub(crate) fn park_until_irqs_off_inline<P: Platform>(&self, s: &Scheduler<P>, cond: impl FnMut() -> bool) {
        self.park_until_irqs_off_with(s, cond, true);
    }

    /// The body of both: `inline` (a constant in each) picks the block's copy.
    #[inline(always)]
    fn park_until_irqs_off_with<P: Platform>(&self, s: &Scheduler<P>, mut cond: impl FnMut() -> bool, inline: bool) {
        // A parker names a scheduler thread, never an idle one (`for_current`). Checked in debug
        // builds (the in-kernel tests run one): this is the hand-off path of every futex and pipe
        // wait, and its callers reach a parker only through its owner's own state (the kernel's
        // per-thread `Park`, which only that thread's system calls use).
        debug_assert!(
            s.is_current(Arc::as_ptr(&self.thread)),
            "a thread parked on another thread's parker"
        );
        let entity = &self.thread.entity;
        loop {
            entity.set_blocked();
            fence(Ordering::SeqCst);
            if cond() {
                // A waker may be setting `Running` too (it saw `Blocked`): the same store.
                entity.set_running();
                break;
            }
            if inline {
                s.block_inline();
            } else {
                s.block();
            }
            // Woken (running again), maybe spuriously: a wake meant for an earlier wait.
            if cond() {
                break;
            }
        }
    }

    /// [`Parker::park_until`] that also ends when the clock reaches `deadline_ns` (interrupts
    /// disabled, and left so): whether `cond()` held. The sleep ends at the wake-up itself (no
    /// slices): `Scheduler::block_until` under the parker's protocol, so a wake that comes
    /// between the check of `cond` and the block is not lost. The loop is `park_until_irqs_off`'s
    /// written again, so that the untimed park, on the futex hand-off's path, keeps its code.
    #[inline]
    pub(crate) fn park_until_deadline_irqs_off<P: Platform>(
        &self,
        s: &Scheduler<P>,
        deadline_ns: u64,
        mut cond: impl FnMut() -> bool,
    ) -> bool {
        assert!(
            s.is_current(Arc::as_ptr(&self.thread)),
            "a thread parked on another thread's parker"
        );
        let entity = &self.thread.entity;
        loop {
            entity.set_blocked();
            fence(Ordering::SeqCst);
            if cond() {
                // As in `park_until_irqs_off`.
                entity.set_running();
                return true;
            }
            let fired = s.block_until(deadline_ns);
            // Woken (maybe spuriously: a wake meant for an earlier wait) or past the deadline.
            if cond() {
                return true;
            }
            if fired {
                return false;
            }
        }
    }

    /// [`Parker::park_until`] that also ends when the clock reaches `deadline_ns`: whether
    /// `cond()` held (else the deadline passed).
    pub fn park_until_deadline<P: Platform>(
        &self,
        s: &Scheduler<P>,
        deadline_ns: u64,
        mut cond: impl FnMut() -> bool,
    ) -> bool {
        if cond() {
            return true;
        }
        let irq = s.platform().irq_save_disable();
        let r = self.park_until_deadline_irqs_off(s, deadline_ns, cond);
        s.platform().irq_restore(irq);
        r
    }

    /// The thread that owns this parker (alive while the parker is).
    pub(crate) fn thread(&self) -> NonNull<Thread> {
        NonNull::from(&*self.thread)
    }

    /// Make the owner check its condition again (after the caller made it true), if it sleeps.
    pub fn wake<P: Platform>(&self, s: &Scheduler<P>) {
        fence(Ordering::SeqCst);
        wake_held(s, &self.thread);
    }
}

/// Wake `thread`, which the caller holds a reference to, with interrupts off for the call: the
/// waker's step of the parker's protocol, after its `SeqCst` fence.
#[inline]
fn wake_held<P: Platform>(s: &Scheduler<P>, thread: &Thread) {
    let irq = s.platform().irq_save_disable();
    // SAFETY: the caller's reference keeps the thread alive for the call.
    unsafe { s.wake_thread(NonNull::from(thread)) };
    s.platform().irq_restore(irq);
}

/// The waker's half of a [`Parker`], taken from a [`ParkSlot`]: [`Unparker::wake`] is
/// [`Parker::wake`], under the same protocol (the caller made the sleeper's condition true
/// first). It counts a reference to the thread, so it may outlive the wait it was made for.
pub struct Unparker {
    thread: Arc<Thread>,
}

impl Unparker {
    /// As [`Parker::wake`].
    #[inline]
    pub fn wake<P: Platform>(&self, s: &Scheduler<P>) {
        fence(Ordering::SeqCst);
        wake_held(s, &self.thread);
    }
}

/// A place for one sleeper's waker that takes no lock: a sleeper offers its [`Parker`]'s owner
/// ([`ParkSlot::offer`]), then tests its condition and parks until the slot no longer holds it; a
/// waker that made the condition true takes whoever is there ([`ParkSlot::take`]) and wakes it.
/// The slot holds a counted reference to the thread (as an [`Unparker`] does), so a take that
/// comes after its sleeper left is merely a spurious wake-up of that thread.
///
/// How a wake-up is never lost (the store-buffering pattern, closed by a `SeqCst` fence on each
/// side, as the parker's): the sleeper's offer (a compare-exchange) comes before its test of the
/// condition, the waker's change of the condition before its read of the slot. Either the sleeper sees the change, or the waker sees
/// the offer and takes it, and the sleeper's park (whose condition includes "no longer held")
/// then meets the waker's wake under the parker's protocol. Only the owner offers or withdraws
/// its own thread, so "held" cannot be fooled by another sleeper's later offer.
/// `sched/tests/loom_wait.rs` models this slot.
pub struct ParkSlot {
    thread: AtomicPtr<Thread>,
}

// SAFETY: the slot holds an `Arc<Thread>` reference (`Arc::into_raw`), moved in and out with
// atomic swaps; `Thread` is shared between CPUs by the scheduler already.
unsafe impl Send for ParkSlot {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for ParkSlot {}

impl Default for ParkSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl ParkSlot {
    /// An empty slot.
    pub const fn new() -> ParkSlot {
        ParkSlot {
            thread: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Put `parker`'s owner in the slot if it is empty: whether it went in. The caller then tests
    /// its condition (after this, `SeqCst`) before it parks.
    ///
    /// No load of the slot first: a sleeper finds it empty but when two sleep on one slot, and
    /// then the failed exchange costs a count taken and given back.
    #[inline]
    pub fn offer(&self, parker: &Parker) -> bool {
        let me = Arc::into_raw(parker.thread.clone()).cast_mut();
        match self.thread.compare_exchange(
            core::ptr::null_mut(),
            me,
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                // The offer before the caller's test of its condition (the waker's side fences
                // in `take`): the store-buffering pattern, closed by a fence on each side.
                fence(Ordering::SeqCst);
                true
            }
            Err(_) => {
                // SAFETY: `me` came from `Arc::into_raw` above and went nowhere.
                drop(unsafe { Arc::from_raw(me) });
                false
            }
        }
    }

    /// Whether the slot holds `parker`'s owner (its offer was not taken yet).
    #[inline]
    pub fn holds(&self, parker: &Parker) -> bool {
        core::ptr::eq(
            self.thread.load(Ordering::SeqCst),
            Arc::as_ptr(&parker.thread),
        )
    }

    /// Take `parker`'s owner back out: whether it was still there (false: a waker took it, and
    /// its wake-up is on its way or done).
    #[inline]
    pub fn withdraw(&self, parker: &Parker) -> bool {
        let me = Arc::as_ptr(&parker.thread).cast_mut();
        if self
            .thread
            .compare_exchange(
                me,
                core::ptr::null_mut(),
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        // SAFETY: the slot held `me` from an offer's `Arc::into_raw`; the exchange moved that
        // reference out to us.
        drop(unsafe { Arc::from_raw(me) });
        true
    }

    /// [`ParkSlot::take`] and [`Unparker::wake`] in one step, after the caller made the sleeper's
    /// condition true (`SeqCst`): whether the slot held a thread. One fence, `take`'s, serves both
    /// halves: it orders the condition's change before the read of the slot and, the wake coming
    /// after it in program order, before the wake's read of the thread's state, which is all that
    /// the wake's own fence orders. `#[inline(always)]`: the waker's step of a hand-off (a pipe
    /// write), in its caller's frame.
    #[inline(always)]
    pub fn wake<P: Platform>(&self, s: &Scheduler<P>) -> bool {
        self.wake_with(s, false)
    }

    /// [`ParkSlot::wake`] for a caller that runs with interrupts enabled (a system call's own
    /// code): they go off for the wake without a read of the flag
    /// ([`Platform::irq_disable_from_on`]).
    #[inline(always)]
    pub fn wake_irqs_on<P: Platform>(&self, s: &Scheduler<P>) -> bool {
        self.wake_with(s, true)
    }

    /// The body of both; `irqs_on` (a constant in each): the caller runs with interrupts enabled.
    #[inline(always)]
    fn wake_with<P: Platform>(&self, s: &Scheduler<P>, irqs_on: bool) -> bool {
        // The caller's change of the condition before the read of the slot (see `offer`) and
        // before `wake_thread` reads the thread's state (see `Parker`).
        fence(Ordering::SeqCst);
        let Some(thread) = self.take_unfenced() else { return false };
        let irq = if irqs_on { s.platform().irq_disable_from_on() } else { s.platform().irq_save_disable() };
        // SAFETY: `thread`, a counted reference, keeps the thread alive for the call.
        unsafe { s.wake_thread_inline(NonNull::from(&*thread)) };
        s.platform().irq_restore(irq);
        true
    }

    /// Take the thread the slot holds, if any, to wake it ([`Unparker::wake`]): after the caller
    /// made the sleeper's condition true (`SeqCst`).
    #[inline]
    pub fn take(&self) -> Option<Unparker> {
        // The caller's change of the condition before the read of the slot (see `offer`).
        fence(Ordering::SeqCst);
        self.take_unfenced().map(|thread| Unparker { thread })
    }

    /// The thread the slot holds, if any, moved out of it (the callers fence first).
    #[inline]
    fn take_unfenced(&self) -> Option<Arc<Thread>> {
        if self.thread.load(Ordering::SeqCst).is_null() {
            return None;
        }
        let t = self.thread.swap(core::ptr::null_mut(), Ordering::SeqCst);
        if t.is_null() {
            return None;
        }
        // SAFETY: a non-null value came from an offer's `Arc::into_raw`; the swap moved it to us.
        Some(unsafe { Arc::from_raw(t) })
    }
}

impl Drop for ParkSlot {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// A lock whose waiters sleep on a wait queue.
///
/// An unlock wakes a waiter only when one may be there: `waiting` counts the threads in the slow
/// path of [`Mutex::lock`], each from before its first test of `locked` to after the test that won.
/// The unlock's release of `locked` and its read of `waiting`, like the waiter's count and its
/// test of `locked`, are separated by a `SeqCst` fence (the store-buffering pattern): either the
/// waiter sees the lock free or the unlock sees the waiter. An unlock that sees one calls
/// [`WaitQueue::wake_one`], whose own protocol covers a waiter that has counted itself but not yet
/// queued (it tests `locked` once queued). `sched/tests/loom_wait.rs` models it.
pub struct Mutex<T> {
    locked: AtomicBool,
    waiting: AtomicUsize,
    waiters: WaitQueue,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and one guard exists at a time (`locked`,
// taken with Acquire and released with Release); `T: Send` because guards hand it across threads.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: moving the mutex moves the value; nothing else in it is tied to a thread.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            locked: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            waiters: WaitQueue::new(),
            value: UnsafeCell::new(value),
        }
    }

    fn try_acquire(&self) -> bool {
        !self.locked.load(Ordering::Relaxed)
            && self
                .locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Lock, sleeping while another thread holds it.
    pub fn lock<'a, P: Platform>(&'a self, s: &'a Scheduler<P>) -> MutexGuard<'a, T, P> {
        if !self.try_acquire() {
            self.lock_slow(s);
        }
        MutexGuard {
            mutex: self,
            sched: s,
        }
    }

    /// The contended [`Mutex::lock`]: count this thread among the waiters, then sleep until a
    /// test of `locked` wins it.
    #[inline(never)]
    fn lock_slow<P: Platform>(&self, s: &Scheduler<P>) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // The count before the test of `locked` (the unlock fences between its release and its
        // read of the count).
        fence(Ordering::SeqCst);
        self.waiters.wait_until(s, || self.try_acquire());
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// Lock if nobody holds it.
    pub fn try_lock<'a, P: Platform>(
        &'a self,
        s: &'a Scheduler<P>,
    ) -> Option<MutexGuard<'a, T, P>> {
        // Build the guard only on success: a guard made and dropped on failure would unlock the
        // mutex under its holder.
        self.try_acquire().then(|| MutexGuard {
            mutex: self,
            sched: s,
        })
    }

    /// The value, through exclusive access to the mutex.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// The value, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

/// Access to a locked [`Mutex`]'s value; unlocks (and wakes a waiter) when dropped.
pub struct MutexGuard<'a, T, P: Platform> {
    mutex: &'a Mutex<T>,
    sched: &'a Scheduler<P>,
}

impl<T, P: Platform> Deref for MutexGuard<'_, T, P> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (the mutex is locked).
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T, P: Platform> DerefMut for MutexGuard<'_, T, P> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and the guard is borrowed mutably.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T, P: Platform> Drop for MutexGuard<'_, T, P> {
    fn drop(&mut self) {
        self.mutex.locked.store(false, Ordering::Release);
        // The release before the read of the count (see `Mutex`): a waiter that this read misses
        // finds the lock free.
        fence(Ordering::SeqCst);
        if self.mutex.waiting.load(Ordering::Relaxed) != 0 {
            self.mutex.waiters.wake_one(self.sched);
        }
    }
}

/// A counting semaphore whose waiters sleep on a wait queue.
pub struct Semaphore {
    count: AtomicUsize,
    waiters: WaitQueue,
}

impl Semaphore {
    /// A semaphore with `permits` available.
    pub const fn new(permits: usize) -> Semaphore {
        Semaphore {
            count: AtomicUsize::new(permits),
            waiters: WaitQueue::new(),
        }
    }

    /// Permits available right now.
    pub fn available(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Take a permit if one is available.
    pub fn try_acquire(&self) -> bool {
        let mut n = self.count.load(Ordering::Relaxed);
        while n > 0 {
            match self
                .count
                .compare_exchange_weak(n, n - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
        false
    }

    /// Take a permit, sleeping until one is available.
    pub fn acquire<P: Platform>(&self, s: &Scheduler<P>) {
        if !self.try_acquire() {
            self.waiters.wait_until(s, || self.try_acquire());
        }
    }

    /// Give a permit back (or a new one) and wake a waiter.
    pub fn release<P: Platform>(&self, s: &Scheduler<P>) {
        self.count.fetch_add(1, Ordering::Release);
        self.waiters.wake_one(s);
    }
}
