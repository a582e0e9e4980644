//! Per-CPU run queues and the protocol by which CPUs hand threads to each other: wake-up, put-back,
//! steal, and the `on_cpu` handshake.
//!
//! Key types:
//! - [`Entity`]: the scheduling state every thread carries: its queue link, its CPU, its [`State`],
//!   `on_rq` (runnable: queued or running) and `on_cpu` (some CPU still runs it or has not finished
//!   saving its window).
//! - [`RunQueue`]: a CPU's runnable threads, round robin, O(1) push/pop/steal whatever their number.
//!   Two intrusive FIFOs (pinned and free-to-migrate threads) share one sequence counter, so `pop`
//!   takes the older of two heads (global FIFO order) and `steal` takes the oldest migratable thread
//!   without scanning past pinned ones.
//! - [`CpuQueue`]: a `RunQueue` behind its spin lock, with lock-free hints (length, halted) for
//!   other CPUs, and the idle CPU's halt/kick bookkeeping.
//! - [`wake`]: the wake-up protocol.
//!
//! Neighbours: `Scheduler` (the switch path, idle loop, wake-ups) drives this module; threads embed
//! an `Entity` through the [`Queued`] trait; the loom models (`tests/loom.rs`) and the native
//! benchmark use it directly with their own entity types.
//!
//! # The protocol
//! Lock rule: an entity's `on_rq` and its link are only touched under the lock of the queue of the
//! entity's current `cpu`, and `cpu` only changes under that lock (by `steal`, while the entity is
//! queued; by a migration, while the thread is switching away from its CPU: see below). Interrupts
//! are disabled while any queue lock is held. A thread's `pinned` flag changes only while it runs
//! (under its CPU's queue lock), so it always names the FIFO a queued thread is on.
//!
//! - Blocking: the thread sets `Blocked` *before* publishing itself as a waiter (see `WaitQueue`),
//!   then calls the switch path, which under its queue lock either takes it off the queue
//!   (`Blocked`: `on_rq = false`) or, if a waker has meanwhile made it `Running`, puts it back.
//! - Waking ([`wake`]): under the entity's queue lock, `Blocked -> Running`; if it is still `on_rq`
//!   (it has not reached the switch path yet), nothing else is needed; otherwise it is pushed on its
//!   CPU's queue. Both sides decide under the same lock, so a wake-up is never lost.
//! - `on_cpu`: set by the CPU that picks a thread, cleared with `Release` by the thread that runs
//!   next on that CPU once the switch away from it is complete. A thread can be queued (woken, or put
//!   back after preemption) while its old CPU is still saving its window; whoever picks it waits for
//!   `on_cpu == false` with `Acquire` before switching to it. Only a thief can see it set: a CPU's
//!   own earlier switches are all finished when it picks.
//! - Stealing: an idle CPU takes the oldest migratable thread from a busy CPU's queue, sets its
//!   `cpu` under the victim's lock, and pushes it on its own queue.
//! - Migrating (a running thread whose CPU its affinity no longer allows): its switch path, under
//!   its CPU's lock, takes it off the queue (`on_rq = false`, still `Running`) and sets its `cpu`
//!   to the target ([`RunQueue::migrate_prev_pick_next`]); after unlocking, it pushes it on the
//!   target's queue ([`CpuQueue::activate`]), whose CPU waits for `on_cpu` as a thief does. In
//!   between, a waker finds it `Running` and does nothing, as for any running thread.

use crate::sync::{
    AtomicBool, AtomicU8, AtomicUsize, Ordering, SpinGuard, SpinLock, UnsafeCell, spin_loop,
};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// A type that carries an [`Entity`], so run queues can link it.
///
/// # Safety
/// `entity` must always return the same `Entity`, owned by `self` (not shared with another value).
pub unsafe trait Queued: Sync + Sized {
    /// The scheduling state embedded in `self`.
    fn entity(&self) -> &Entity<Self>;
}

/// Where a thread stands, as far as wake-ups are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Running or runnable.
    Running = 0,
    /// Waiting for a wake-up (possibly still on its CPU, about to switch away).
    Blocked = 1,
    /// Finished; never runs again.
    Dead = 2,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Running,
            1 => State::Blocked,
            _ => State::Dead,
        }
    }
}

/// Queue link: guarded by the lock of the queue the entity is on.
struct Link<T> {
    next: Option<NonNull<T>>,
    seq: u64,
}

/// The scheduling state of one thread (see the module documentation for the rules).
pub struct Entity<T> {
    link: UnsafeCell<Link<T>>,
    cpu: AtomicUsize,
    state: AtomicU8,
    on_rq: AtomicBool,
    on_cpu: AtomicBool,
    pinned: AtomicBool,
}

// SAFETY: the link (the only non-atomic field) is read and written only under the lock of the queue
// holding the entity, which serialises all CPUs; the pointers in it refer to `Sync` entities.
unsafe impl<T: Sync> Sync for Entity<T> {}
// SAFETY: as above; an entity owns nothing through its link.
unsafe impl<T: Sync> Send for Entity<T> {}

impl<T> Entity<T> {
    /// A thread that belongs to `cpu`, runnable but not yet on any queue; `pinned` threads are never
    /// stolen.
    pub fn new(cpu: usize, pinned: bool) -> Self {
        Entity {
            link: UnsafeCell::new(Link { next: None, seq: 0 }),
            cpu: AtomicUsize::new(cpu),
            state: AtomicU8::new(State::Running as u8),
            on_rq: AtomicBool::new(false),
            on_cpu: AtomicBool::new(false),
            pinned: AtomicBool::new(pinned),
        }
    }

    /// The CPU whose queue this thread belongs to (where it runs or last ran).
    #[inline]
    pub fn cpu(&self) -> usize {
        self.cpu.load(Ordering::Relaxed)
    }

    /// Current state.
    #[inline]
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether the thread may only run on its CPU.
    #[inline]
    pub fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// The running thread changes whether it may be stolen. Call under the lock of its CPU's
    /// queue, while it runs there (so it is on no FIFO: `push` reads the flag to choose one).
    #[inline]
    pub fn set_pinned(&self, pinned: bool) {
        self.pinned.store(pinned, Ordering::Relaxed);
    }

    /// Runnable (queued or running): only meaningful under the queue lock of [`Entity::cpu`].
    #[inline]
    pub fn is_on_rq(&self) -> bool {
        self.on_rq.load(Ordering::Relaxed)
    }

    /// The running thread announces it is about to wait. Must precede publishing itself to wakers.
    #[inline]
    pub fn set_blocked(&self) {
        self.state.store(State::Blocked as u8, Ordering::Release);
    }

    /// The running thread withdraws a [`Entity::set_blocked`] (its wait condition came true).
    #[inline]
    pub fn set_running(&self) {
        self.state.store(State::Running as u8, Ordering::Release);
    }

    /// The running thread is exiting: it is never put back on a queue after its last switch.
    #[inline]
    pub fn set_dead(&self) {
        self.state.store(State::Dead as u8, Ordering::Release);
    }

    /// Some CPU runs the thread or has not finished switching away from it.
    #[inline]
    pub fn is_on_cpu(&self) -> bool {
        self.on_cpu.load(Ordering::Acquire)
    }

    /// Wait until the CPU that last ran this thread has finished saving it (`Acquire`: its window
    /// and everything it wrote before are visible afterwards).
    #[inline]
    pub fn wait_off_cpu(&self) {
        while self.on_cpu.load(Ordering::Acquire) {
            spin_loop();
        }
    }

    /// The picking CPU takes the thread (after [`Entity::wait_off_cpu`]).
    #[inline]
    pub fn set_on_cpu(&self) {
        self.on_cpu.store(true, Ordering::Relaxed);
    }

    /// The switch away from the thread is complete; another CPU may now run it (`Release`).
    #[inline]
    pub fn clear_on_cpu(&self) {
        self.on_cpu.store(false, Ordering::Release);
    }
}

/// One intrusive FIFO through the entities' links.
struct Fifo<T> {
    head: Option<NonNull<T>>,
    tail: Option<NonNull<T>>,
}

impl<T: Queued> Fifo<T> {
    const fn new() -> Self {
        Fifo {
            head: None,
            tail: None,
        }
    }

    /// # Safety
    /// `t` is valid and on no queue; the caller holds this queue's lock.
    unsafe fn push(&mut self, t: NonNull<T>, seq: u64) {
        // SAFETY: `t` is valid (caller); its link is ours under the queue lock.
        unsafe {
            t.as_ref().entity().link.with_mut(|l| {
                (*l).next = None;
                (*l).seq = seq;
            });
            match self.tail {
                // SAFETY: the tail is on this queue, hence valid, and its link is ours.
                Some(tail) => tail
                    .as_ref()
                    .entity()
                    .link
                    .with_mut(|l| (*l).next = Some(t)),
                None => self.head = Some(t),
            }
        }
        self.tail = Some(t);
    }

    fn head_seq(&self) -> Option<u64> {
        // SAFETY: the head is on this queue (valid); its link is read under the queue lock.
        self.head
            .map(|h| unsafe { h.as_ref().entity().link.with(|l| (*l).seq) })
    }

    /// If `self` holds a thread, take it and leave `t` as the only one in its place: a `pop` then
    /// a `push` of `t`, with the links of the one popped left as they are (as the tail, it links
    /// to nothing) and no test of an emptied queue. `t` takes the sequence number of the one it
    /// replaces (see [`RunQueue::trade_single`]).
    ///
    /// # Safety
    /// As for [`Fifo::push`], and `self` holds at most one thread.
    #[inline(always)]
    unsafe fn trade_single(&mut self, t: NonNull<T>) -> Option<NonNull<T>> {
        let head = self.head?;
        debug_assert!(self.tail == Some(head), "a trade with more than one thread queued");
        // SAFETY: the head is on this queue (valid), `t` is valid (caller): their links are ours
        // under the queue lock.
        unsafe {
            let seq = head.as_ref().entity().link.with(|l| (*l).seq);
            t.as_ref().entity().link.with_mut(|l| {
                (*l).next = None;
                (*l).seq = seq;
            });
        }
        self.head = Some(t);
        self.tail = Some(t);
        Some(head)
    }

    fn pop(&mut self) -> Option<NonNull<T>> {
        let head = self.head?;
        // SAFETY: as in `head_seq`.
        let next = unsafe { head.as_ref().entity().link.with(|l| (*l).next) };
        self.head = next;
        if next.is_none() {
            self.tail = None;
        }
        Some(head)
    }
}

/// What the switch path runs next ([`RunQueue::put_prev_pick`]).
pub enum Pick<T> {
    /// The thread that was running runs on: no switch.
    Prev,
    /// This queued thread, never the one that was running.
    Next(NonNull<T>),
    /// This queued thread, never the one that was running, whose place in the queue the running
    /// one took: the queue's length is unchanged (as it is for `Prev` and `Idle`: only a `Next`
    /// changes it).
    Swapped(NonNull<T>),
    /// The idle thread, which was not the one running.
    Idle,
}

/// A CPU's runnable threads that are not running (see the module documentation).
pub struct RunQueue<T> {
    pinned: Fifo<T>,
    free: Fifo<T>,
    next_seq: u64,
    len: usize,
    /// The CPU is about to halt or halted (set by its idle loop, under the lock).
    halted: bool,
    /// A reschedule IPI is on its way to the halted CPU.
    kick_pending: bool,
}

// SAFETY: the raw pointers refer to `Sync` entities, and a `RunQueue` is only reachable through its
// lock.
unsafe impl<T: Sync> Send for RunQueue<T> {}

impl<T: Queued> RunQueue<T> {
    fn new() -> Self {
        RunQueue {
            pinned: Fifo::new(),
            free: Fifo::new(),
            next_seq: 0,
            len: 0,
            halted: false,
            kick_pending: false,
        }
    }

    /// Number of queued threads.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No queued threads.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `t` (round robin: it runs after everything queued now).
    ///
    /// # Safety
    /// `t` is valid until popped, runnable (`on_rq`), on no queue, and belongs to this queue's CPU.
    #[inline]
    pub unsafe fn push(&mut self, t: NonNull<T>) {
        // SAFETY: the caller's guarantee.
        unsafe { self.append(t) };
        self.len += 1;
    }

    /// [`RunQueue::push`] without counting `t` in `len` (the caller does, or takes one out).
    ///
    /// # Safety
    /// As for [`RunQueue::push`].
    #[inline(always)]
    unsafe fn append(&mut self, t: NonNull<T>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        // SAFETY: `t` is valid and on no queue (caller).
        unsafe {
            if t.as_ref().entity().is_pinned() {
                self.pinned.push(t, seq);
            } else {
                self.free.push(t, seq);
            }
        }
    }

    /// The common yield or preemption with one other thread queued: when the FIFO `t` goes to
    /// holds exactly one thread and the other FIFO none, that thread is the oldest and `t` takes
    /// its place, as [`RunQueue::take_oldest`] then [`RunQueue::append`] would leave them. `None`
    /// (nothing changed) otherwise. Told by `len` (one thread queued in all) and then the head of
    /// `t`'s FIFO alone: with one thread in all, a FIFO that holds one holds only it, and the
    /// other none.
    ///
    /// `t` takes the sequence number of the thread it replaces, with no new one drawn: a number
    /// only orders the two FIFOs' heads, and `t`, then queued alone, must come before every thread
    /// pushed later, whose numbers are all at least `next_seq`, above any this queue gave so far
    /// (as was the one replaced; a number `t` brought from another CPU's queue would not do).
    /// That is the order a fresh number would give.
    ///
    /// # Safety
    /// As for [`RunQueue::push`].
    #[inline(always)]
    unsafe fn trade_single(&mut self, t: NonNull<T>) -> Option<NonNull<T>> {
        if self.len != 1 {
            return None;
        }
        // Two arms written out, each with constant offsets (one picked by the flag would cost
        // more than the queue operations it saves).
        // SAFETY: `t` is valid (caller).
        if unsafe { t.as_ref() }.entity().is_pinned() {
            // SAFETY: `t` is valid and on no queue (caller); one thread is queued in all.
            unsafe { self.pinned.trade_single(t) }
        } else {
            // SAFETY: as above.
            unsafe { self.free.trade_single(t) }
        }
    }

    /// Take `t` if it is the thread queued longest (the one [`RunQueue::pop`] would take); true if
    /// it was. O(1).
    #[inline]
    pub fn pop_if_oldest(&mut self, t: NonNull<T>) -> bool {
        let oldest = match (self.pinned.head_seq(), self.free.head_seq()) {
            (Some(p), Some(f)) if p < f => self.pinned.head,
            (_, Some(_)) => self.free.head,
            (Some(_), None) => self.pinned.head,
            (None, None) => None,
        };
        if oldest != Some(t) {
            return false;
        }
        self.pop();
        true
    }

    /// Take the thread queued longest, pinned or not. O(1).
    #[inline]
    pub fn pop(&mut self) -> Option<NonNull<T>> {
        let t = self.take_oldest()?;
        self.len -= 1;
        Some(t)
    }

    /// [`RunQueue::pop`] without counting it out of `len` (the caller does, or puts one back).
    #[inline(always)]
    fn take_oldest(&mut self) -> Option<NonNull<T>> {
        match (self.pinned.head_seq(), self.free.head_seq()) {
            (Some(p), Some(f)) if p < f => self.pinned.pop(),
            (_, Some(_)) => self.free.pop(),
            (Some(_), None) => self.pinned.pop(),
            (None, None) => None,
        }
    }

    /// Take the migratable thread queued longest. O(1).
    #[inline]
    pub fn pop_unpinned(&mut self) -> Option<NonNull<T>> {
        let t = self.free.pop()?;
        self.len -= 1;
        Some(t)
    }

    /// The switch path's decision for the thread that is stopping, then the thread to run next:
    /// `prev` goes back to the tail if it is still `Running` (yield, preemption, or a wake-up that
    /// beat it to the switch), or leaves the runnable set if `Blocked` or `Dead`. The idle thread is
    /// never queued. `None` means "run the idle thread". May return `prev` itself.
    ///
    /// # Safety
    /// `prev` is the thread running on this queue's CPU and is valid.
    #[inline]
    pub unsafe fn put_prev_pick_next(
        &mut self,
        prev: NonNull<T>,
        prev_is_idle: bool,
    ) -> Option<NonNull<T>> {
        // SAFETY: the caller's guarantee.
        match unsafe { self.put_prev_pick(prev, prev_is_idle, false) } {
            Pick::Prev if !prev_is_idle => Some(prev),
            Pick::Next(next) | Pick::Swapped(next) => Some(next),
            Pick::Prev | Pick::Idle => None,
        }
    }

    /// [`RunQueue::put_prev_pick_next`], with `prev` running on told apart from a thread to switch
    /// to: a `Next` is never `prev` (it was queued, and a running thread is not), which the switch
    /// path then need not compare. `running_likely`: the caller expects `prev` to be `Running` (a
    /// yield or a preemption), a hint for the code's layout only.
    ///
    /// # Safety
    /// As for [`RunQueue::put_prev_pick_next`].
    #[inline(always)]
    pub unsafe fn put_prev_pick(&mut self, prev: NonNull<T>, prev_is_idle: bool, running_likely: bool) -> Pick<T> {
        if !prev_is_idle {
            // SAFETY: `prev` is valid (caller).
            let e = unsafe { prev.as_ref() }.entity();
            let state = e.state();
            if running_likely && state != State::Running {
                core::hint::cold_path();
            }
            match state {
                State::Running => {
                    // The oldest queued thread runs next and `prev` goes to the tail: the same
                    // choice as appending `prev` and then taking the oldest (its sequence number
                    // would be the newest), with `len` unchanged and, with nothing queued, `prev`
                    // running on without passing through the queue.
                    // SAFETY: `prev` runs here, so it is on no queue, and it is `on_rq`.
                    if let Some(next) = unsafe { self.trade_single(prev) } {
                        return Pick::Swapped(next);
                    }
                    let Some(next) = self.take_oldest() else {
                        return Pick::Prev;
                    };
                    // SAFETY: `prev` runs here, so it is on no queue, and it is `on_rq`.
                    unsafe { self.append(prev) };
                    return Pick::Swapped(next);
                }
                State::Blocked | State::Dead => e.on_rq.store(false, Ordering::Relaxed),
            }
        }
        match self.pop() {
            Some(next) => Pick::Next(next),
            // The idle thread with nothing queued runs on.
            None if prev_is_idle => Pick::Prev,
            None => Pick::Idle,
        }
    }

    /// The switch path of a thread leaving this CPU for `target` (its affinity no longer allows
    /// this one): `prev` leaves the runnable set here, still `Running`, and now belongs to
    /// `target`, whose queue the caller must push it on with [`CpuQueue::activate`] once this lock
    /// is released. Then the thread to run next, as [`RunQueue::put_prev_pick_next`].
    ///
    /// # Safety
    /// `prev` is the thread running on this queue's CPU, is valid and `Running`, and is not the
    /// idle thread.
    #[inline]
    pub unsafe fn migrate_prev_pick_next(
        &mut self,
        prev: NonNull<T>,
        target: usize,
    ) -> Option<NonNull<T>> {
        // SAFETY: `prev` is valid (caller).
        let e = unsafe { prev.as_ref() }.entity();
        debug_assert_eq!(e.state(), State::Running, "only a running thread migrates");
        e.on_rq.store(false, Ordering::Relaxed);
        e.cpu.store(target, Ordering::Relaxed);
        self.pop()
    }
}

/// What an enqueue found out about the target CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// Threads queued there after the push.
    pub queued: usize,
    /// The CPU was halted (or about to halt) in its idle loop, or polling its queue before a
    /// halt: either way it runs the thread without being kicked to steal it elsewhere.
    pub halted: bool,
    /// ... and nobody had sent it a reschedule IPI yet: the caller must send one.
    pub kick: bool,
}

/// The outcome of [`wake`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The thread was not blocked (already woken, running, or dead): nothing done.
    NotBlocked,
    /// The thread had not yet switched away: it is now `Running` and will stay runnable.
    Running,
    /// The thread was queued on `cpu`.
    Enqueued {
        /// Its CPU.
        cpu: usize,
        /// What the push found.
        info: Enqueued,
    },
}

/// A CPU's run queue behind its lock, plus lock-free hints for other CPUs.
pub struct CpuQueue<T> {
    rq: SpinLock<RunQueue<T>>,
    len: AtomicUsize,
    halted: AtomicBool,
    /// The CPU polls this queue before it halts (`begin_poll`..`end_poll`): a hint only, for
    /// wakers (no steal kick elsewhere) and thieves (no steal of its one thread); no kick depends
    /// on it, since the halt that may follow checks the queue under the lock.
    polling: AtomicBool,
}

/// The locked run queue; refreshes the length hint when released (the halted hint is published
/// where it changes, by the idle loop's two calls, so the switch path's unlock does not rewrite it).
pub struct RqGuard<'a, T> {
    guard: SpinGuard<'a, RunQueue<T>>,
    queue: &'a CpuQueue<T>,
}

impl<T> Drop for RqGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.queue.len.store(self.guard.len, Ordering::Relaxed);
    }
}

impl<T> RqGuard<'_, T> {
    /// Release the lock without refreshing the length hint, for a caller whose operations left
    /// the length as it was (a [`Pick::Swapped`] or [`Pick::Prev`]): the hint, stored at every
    /// release and never written elsewhere, already holds it.
    #[inline(always)]
    pub fn unlock_same_len(self) {
        debug_assert_eq!(self.queue.len.load(Ordering::Relaxed), self.guard.len, "the length changed");
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped nor used again, so the guard is moved out once; dropping
        // it releases the lock, all that `drop` does besides the store of the hint.
        drop(unsafe { core::ptr::read(&this.guard) });
    }
}

impl<T> Deref for RqGuard<'_, T> {
    type Target = RunQueue<T>;
    fn deref(&self) -> &RunQueue<T> {
        &self.guard
    }
}

impl<T> DerefMut for RqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut RunQueue<T> {
        &mut self.guard
    }
}

impl<T: Queued> Default for CpuQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Queued> CpuQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        CpuQueue {
            rq: SpinLock::new(RunQueue::new()),
            len: AtomicUsize::new(0),
            halted: AtomicBool::new(false),
            polling: AtomicBool::new(false),
        }
    }

    /// Lock the queue (interrupts must be disabled).
    #[inline]
    pub fn lock(&self) -> RqGuard<'_, T> {
        RqGuard {
            guard: self.rq.lock(),
            queue: self,
        }
    }

    /// Queue length as of the last unlock (a hint: may be stale by the time it is used).
    #[inline]
    pub fn len_hint(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the CPU was halting as of the last unlock (a hint).
    #[inline]
    pub fn halted_hint(&self) -> bool {
        self.halted.load(Ordering::Relaxed)
    }

    /// Whether the CPU is idle: halted, or polling this queue before it halts (a hint).
    #[inline]
    pub fn idle_hint(&self) -> bool {
        self.halted.load(Ordering::Relaxed) || self.polling.load(Ordering::Relaxed)
    }

    /// Whether the CPU is polling this queue before it halts (a hint).
    #[inline]
    pub fn polling_hint(&self) -> bool {
        self.polling.load(Ordering::Relaxed)
    }

    /// This queue's CPU starts polling it before a halt (interrupts off). Lock-free: the flag
    /// is a hint (see `polling`).
    #[inline]
    pub fn begin_poll(&self) {
        self.polling.store(true, Ordering::Relaxed);
    }

    /// The poll of [`CpuQueue::begin_poll`] is over.
    #[inline]
    pub fn end_poll(&self) {
        self.polling.store(false, Ordering::Relaxed);
    }

    /// [`RunQueue::enqueued`], with a polling CPU reported as halted (it needs no steal kick).
    #[inline(always)]
    fn enqueued_in(&self, rq: &mut RunQueue<T>) -> Enqueued
    where
        T: Queued,
    {
        let mut info = rq.enqueued();
        info.halted |= self.polling.load(Ordering::Relaxed);
        info
    }

    /// Make `t` runnable here: `on_rq = true`, push, and report whether the CPU needs a kick.
    ///
    /// # Safety
    /// `t` is valid until popped, on no queue, not running (it may still be `on_cpu` somewhere:
    /// pickers wait for that), and its `cpu` is this queue's CPU.
    #[inline]
    pub unsafe fn activate(&self, t: NonNull<T>) -> Enqueued {
        let mut rq = self.lock();
        // SAFETY: `t` is valid (caller).
        unsafe { t.as_ref() }
            .entity()
            .on_rq
            .store(true, Ordering::Relaxed);
        // SAFETY: on no queue and belongs here (caller).
        unsafe { rq.push(t) };
        self.enqueued_in(&mut rq)
    }

    /// Take the oldest migratable thread for CPU `thief`, whose queue it must then be pushed on
    /// (with [`CpuQueue::activate`]). Its window may still be being saved: run it only after
    /// [`Entity::wait_off_cpu`].
    pub fn steal(&self, thief: usize) -> Option<NonNull<T>> {
        let mut rq = self.lock();
        let t = rq.pop_unpinned()?;
        // SAFETY: `t` was on this queue, so it is valid; its `cpu` changes under this queue's lock.
        unsafe { t.as_ref() }
            .entity()
            .cpu
            .store(thief, Ordering::Relaxed);
        Some(t)
    }

    /// Whether a migratable thread waits here (takes the lock: for the slice-end check, not the
    /// switch path). A look that changes nothing: the lock without the guard that refreshes the
    /// length hint at the unlock.
    pub fn has_migratable(&self) -> bool {
        self.rq.lock().free.head.is_some()
    }

    /// The idle loop of this queue's CPU is about to halt: record it, unless work has arrived.
    /// From now on enqueuers see `halted` and kick.
    pub fn try_halt(&self) -> bool {
        let mut rq = self.lock();
        if !rq.is_empty() {
            return false;
        }
        rq.halted = true;
        rq.kick_pending = false;
        // Under the lock, as every change of `halted`: the hint never disagrees with the queue at
        // an unlock.
        self.halted.store(true, Ordering::Relaxed);
        true
    }

    /// [`CpuQueue::try_halt`] for a thread that halts in place while it waits (`prev`, blocked on
    /// this queue's CPU and still `on_cpu` there): halt only if `prev` is still `Blocked`. Its
    /// wake changes that under this lock (the thread belongs to this CPU while it is blocked), so
    /// a wake after this halt is recorded kicks the CPU. A wake that came before could have made
    /// it a thief's, which then waits for its `on_cpu`: a CPU halted with it would never clear
    /// that, as nobody would kick it.
    ///
    /// # Safety
    /// `prev` is valid for the call.
    pub unsafe fn try_halt_blocked(&self, prev: NonNull<T>) -> bool {
        let mut rq = self.lock();
        // SAFETY: valid for the call (caller).
        if !rq.is_empty() || unsafe { prev.as_ref() }.entity().state() != State::Blocked {
            return false;
        }
        rq.halted = true;
        rq.kick_pending = false;
        // As in `try_halt`.
        self.halted.store(true, Ordering::Relaxed);
        true
    }

    /// The idle loop of this queue's CPU is awake again.
    pub fn unhalt(&self) {
        let mut rq = self.lock();
        rq.halted = false;
        rq.kick_pending = false;
        self.halted.store(false, Ordering::Relaxed);
    }

    /// Claim the right to kick this CPU out of its halt (so it can steal work): true if it is halted
    /// and nobody has kicked it yet. The caller then sends the reschedule IPI.
    pub fn kick_if_halted(&self) -> bool {
        let mut rq = self.lock();
        let kick = rq.halted && !rq.kick_pending;
        rq.kick_pending |= kick;
        kick
    }
}

impl<T: Queued> RunQueue<T> {
    /// After a push: the target's state, claiming the kick if it is halted and not yet kicked.
    fn enqueued(&mut self) -> Enqueued {
        let kick = self.halted && !self.kick_pending;
        self.kick_pending |= kick;
        Enqueued {
            queued: self.len,
            halted: self.halted,
            kick,
        }
    }
}

/// Wake `t` if it is blocked (see the module documentation). `queue_of(cpu)` gives a CPU's queue.
///
/// # Safety
/// `t` is valid for the duration of the call (the caller keeps it alive, e.g. by holding the wait
/// queue lock the thread must take before it can leave its wait).
pub unsafe fn wake<'a, T: Queued + 'a>(
    queue_of: impl Fn(usize) -> &'a CpuQueue<T>,
    t: NonNull<T>,
) -> Wake {
    // SAFETY: as for this function.
    unsafe { wake_noting(queue_of, t, |_, _| {}) }
}

/// [`wake`], calling `note(cpu, queued)` under `cpu`'s queue lock once the thread is runnable
/// there (`queued`: pushed on the queue; otherwise it had not left the CPU), so whatever `note`
/// records is ordered before any CPU can pick the thread.
///
/// # Safety
/// As for [`wake`].
#[inline(always)]
pub unsafe fn wake_noting<'a, T: Queued + 'a>(
    queue_of: impl Fn(usize) -> &'a CpuQueue<T>,
    t: NonNull<T>,
    note: impl FnOnce(usize, bool),
) -> Wake {
    // SAFETY: valid for the call (caller).
    let e = unsafe { t.as_ref() }.entity();
    loop {
        let cpu = e.cpu.load(Ordering::Relaxed);
        let queue = queue_of(cpu);
        let mut rq = queue.lock();
        if e.cpu.load(Ordering::Relaxed) != cpu {
            // Stolen between the read and the lock: its queue is elsewhere now.
            continue;
        }
        // One atomic step from Blocked to Running: a thread that waits without this lock (a
        // `Parker`) can withdraw its Blocked and go on to exit (Dead) between a load and a store
        // here, and a plain store would then bring a dead thread back to the queue.
        if e
            .state
            .compare_exchange(State::Blocked as u8, State::Running as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Wake::NotBlocked;
        }
        if e.on_rq.load(Ordering::Relaxed) {
            note(cpu, false);
            return Wake::Running;
        }
        e.on_rq.store(true, Ordering::Relaxed);
        // SAFETY: a blocked thread that is not `on_rq` is on no queue and no longer running: its
        // switch path took it off under this lock (and may still be saving it, which pickers wait
        // for through `on_cpu`); it belongs to `cpu`.
        unsafe { rq.push(t) };
        note(cpu, true);
        return Wake::Enqueued {
            cpu,
            info: queue.enqueued_in(&mut rq),
        };
    }
}
