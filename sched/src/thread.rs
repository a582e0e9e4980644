//! Threads: the control block, how to describe a new one, and the handle to wait for it.
//!
//! Key types: [`Builder`] (name, affinity, FPU use, stack size, address space), [`JoinHandle`]
//! (`join` returns the closure's value), [`ThreadId`], [`CurrentThread`] (for panic messages),
//! [`SpawnError`], and the crate-internal `Thread` control block: its [`Window`] first (one cache
//! line, what the switch saves), then its run-queue `Entity`, FPU area, stack and join state.
//!
//! Neighbours: `Scheduler` creates, switches and reaps threads; `rq` links them through their
//! `Entity`; `wait` parks them on wait queues; `arch::switch` and `arch::fpu` hold their machine
//! state.

extern crate alloc;

use crate::platform::{CpuIndex, Mm, Platform, Stack, UserBases};
use crate::rq::{Entity, Queued};
use crate::scheduler::Scheduler;
use crate::wait::WaitQueue;
use alloc::boxed::Box;
use alloc::sync::Arc;
use arch::fpu::FpuArea;
use arch::switch::Window;
use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use spin::mutex::SpinMutex;

/// A thread's number: unique for the scheduler's lifetime, never reused (0 is never a thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ThreadId(pub u64);

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What to create: see [`Scheduler::spawn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Builder {
    /// Shown in panic messages and by [`Scheduler::current`].
    pub name: &'static str,
    /// `Some(cpu)`: the thread runs only on `cpu` (never stolen). `None`: starts on the spawning
    /// CPU and may migrate.
    pub affinity: Option<CpuIndex>,
    /// The thread uses x87/SSE/AVX registers: its extended state is saved and restored on switches.
    /// Kernel code is built without SSE, so only threads that opt in ever touch those registers.
    pub fpu: bool,
    /// With `fpu`: the thread starts with a copy of the spawning thread's extended state (`fork`)
    /// instead of the clean state.
    pub fpu_of_caller: bool,
    /// Usable stack size in bytes.
    pub stack_bytes: usize,
    /// The address space the thread runs in; `None` for kernel-only threads, which borrow whatever
    /// space the CPU has loaded.
    pub mm: Option<Mm>,
    /// The thread enters user mode: each switch to it tells the platform its kernel stack top and
    /// user FS and GS bases, and each switch from it lets the platform save those bases
    /// ([`crate::Platform::switch_user`]).
    pub user: bool,
}

impl Builder {
    /// Default usable stack size.
    pub const DEFAULT_STACK_BYTES: usize = 64 * 1024;

    /// A migratable kernel-only thread without FPU use and with the default stack.
    pub const fn new(name: &'static str) -> Builder {
        Builder {
            name,
            affinity: None,
            fpu: false,
            fpu_of_caller: false,
            stack_bytes: Self::DEFAULT_STACK_BYTES,
            mm: None,
            user: false,
        }
    }

    /// Pin to `cpu`.
    pub const fn pinned(mut self, cpu: CpuIndex) -> Builder {
        self.affinity = Some(cpu);
        self
    }

    /// Save and restore extended state for this thread.
    pub const fn with_fpu(mut self) -> Builder {
        self.fpu = true;
        self
    }

    /// Save and restore extended state for this thread, starting from a copy of the spawning
    /// thread's registers (an FPU thread itself): `fork`'s child continues the parent's vector and
    /// x87 state, MXCSR included.
    pub const fn with_fpu_of_caller(mut self) -> Builder {
        self.fpu = true;
        self.fpu_of_caller = true;
        self
    }

    /// Usable stack size in bytes.
    pub const fn stack_bytes(mut self, bytes: usize) -> Builder {
        self.stack_bytes = bytes;
        self
    }

    /// Run in address space `mm`; the thread owns that reference and gives it up when its body
    /// has returned.
    pub fn in_mm(mut self, mm: Mm) -> Builder {
        self.mm = Some(mm);
        self
    }

    /// The thread runs user code: the platform hears of each switch to it.
    pub const fn user_thread(mut self) -> Builder {
        self.user = true;
        self
    }
}

/// Why [`Scheduler::spawn`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// The affinity names a CPU the scheduler does not have.
    NoSuchCpu(CpuIndex),
    /// `fpu: true`, but the platform offers no FPU to threads.
    NoFpu,
    /// The platform had no stack (or the FPU area could not be allocated).
    OutOfMemory,
}

/// Why [`Scheduler::set_current_affinity`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityError {
    /// The mask names no CPU the scheduler has.
    NoCpu,
    /// No live user thread has that id.
    NoThread,
}

/// The running thread, as panic messages and logs want it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrentThread {
    /// Its number.
    pub id: ThreadId,
    /// Its name (`"idle"` for a CPU's idle thread).
    pub name: &'static str,
    /// The CPU it runs on (as of the call).
    pub cpu: CpuIndex,
    /// Spawned with [`Builder::user_thread`]: it runs user code, entering the kernel only through
    /// its system-call, interrupt and exception paths.
    pub user: bool,
}

impl fmt::Display for CurrentThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "thread {} '{}' on CPU {}",
            self.id, self.name, self.cpu.0
        )
    }
}

/// The thread control block.
#[repr(C)]
pub(crate) struct Thread {
    /// Saved registers while the thread is not running (first: it is the cache line the switch
    /// touches). Written by the switch away from the thread, read by the switch back to it; the
    /// `on_cpu` handshake keeps the two apart.
    pub(crate) window: UnsafeCell<Window>,
    pub(crate) entity: Entity<Thread>,
    /// 0 for a plain kernel thread: no extended-state area, no space of its own, no user stack;
    /// else 1. A switch between two plain threads has none of the FPU, space and user steps to
    /// take, and tests the two words or-ed (on the cache line the switch touches: one branch)
    /// instead of each step's own test. Set for good when the thread is given a space
    /// ([`Thread::replace_mm`]); like `mm`, written by the thread itself with interrupts off and
    /// read by the CPU switching to it.
    switch_work: AtomicU8,
    pub(crate) id: ThreadId,
    pub(crate) name: &'static str,
    /// The space the thread runs in, owned; taken out by the thread itself when its body has
    /// returned ([`Thread::take_mm`]). Read by the CPU switching to the thread (the `on_cpu`
    /// handshake orders it after the thread's own last write).
    mm: UnsafeCell<Option<Mm>>,
    /// Extended state, for threads created with `fpu: true`; touched only by the switch path of
    /// the CPU running or switching the thread.
    pub(crate) fpu: Option<UnsafeCell<FpuArea>>,
    /// The CPU whose registers held this thread's extended state when it was last saved or
    /// restored (`usize::MAX`: none).
    pub(crate) fpu_cpu: AtomicUsize,
    /// How many slices in a row ended with the thread's extended state in use: its trap taken, or
    /// restored eagerly (`FPU_HOT_SLICES`). Wrapping: after 256 such slices a steady user is
    /// switched in lazily again, taking a trap in each of the next few slices if it still uses the
    /// state, so that one that stopped is noticed. Written by the CPU switching it out; read by the
    /// one switching it in (`on_cpu` orders the two).
    pub(crate) fpu_uses: AtomicU8,
    /// Set (with `Release`) when the thread has finished; its joiners wait for it on `joiners`.
    pub(crate) finished: AtomicBool,
    /// A user thread: the platform hears of each switch to it.
    pub(crate) user: bool,
    /// The top of a user thread's stack, which the platform hears of at each switch to it (0: a
    /// kernel thread, or one without a stack of its own). Fixed at creation, so a switch reads one
    /// word where it would test `user` and then the stack.
    pub(crate) user_stack_top: usize,
    /// The user FS and GS bases of a user thread, saved at each switch from it and restored at each
    /// switch to it.
    pub(crate) bases: UserBases,
    /// CPU time charged to the thread, in nanoseconds of the platform clock (see the accounting
    /// rule in `scheduler`). Written only by the CPU running the thread, interrupts off.
    pub(crate) run_ns: AtomicU64,
    pub(crate) joiners: WaitQueue,
    /// The thread's current sleep deadline has passed and its timer entry has fired (guarded by the
    /// sleeper heap lock of the CPU it went to sleep on).
    pub(crate) sleep_fired: AtomicBool,
    /// The CPUs the thread was restricted to at run time (`None`: as spawned, see
    /// `Scheduler::current_affinity`).
    pub(crate) affinity: SpinMutex<Option<Box<[u64]>>>,
    /// Another thread changed `affinity` ([`crate::Scheduler::set_affinity`]); this thread takes
    /// it at its next switch point.
    pub(crate) affinity_pending: AtomicBool,
    /// `None` for a CPU's boot thread (which runs on the stack it was booted with).
    stack: UnsafeCell<Option<Stack>>,
    /// The closure to run, taken by the thread when it starts.
    body: UnsafeCell<Option<Body>>,
    /// What the body refers to without owning it (its join result slot), kept alive here and
    /// given up by the thread itself when it ends, in thread context ([`Thread::take_keep`]): a
    /// thread that ends through `Scheduler::exit` abandons its stack, so nothing it must free may
    /// live there, and a value nobody joins is dropped where its thread ran, not by the reaper.
    keep: UnsafeCell<Option<Arc<dyn Send + Sync>>>,
}

/// A thread's closure in a box that is freed before the closure runs: the closure is moved onto
/// the thread's stack first, so a thread that never returns (it ends through `Scheduler::exit`,
/// as user threads do) leaks nothing. A `Box<dyn FnOnce()>` would be freed only after its call
/// returned.
pub(crate) struct Body {
    data: NonNull<()>,
    run: unsafe fn(NonNull<()>),
    free: unsafe fn(NonNull<()>),
}

// SAFETY: it owns a `Box<F>` with `F: Send`.
unsafe impl Send for Body {}

impl Body {
    pub(crate) fn new<F: FnOnce() + Send + 'static>(f: F) -> Body {
        /// # Safety
        /// `data` is the `Box<F>` of `Body::new`, given up here once.
        unsafe fn run<F: FnOnce()>(data: NonNull<()>) {
            // SAFETY: per the caller; the box is freed at the end of this statement.
            let f = *unsafe { Box::from_raw(data.cast::<F>().as_ptr()) };
            f()
        }
        /// # Safety
        /// As for `run`.
        unsafe fn free<F>(data: NonNull<()>) {
            // SAFETY: per the caller.
            drop(unsafe { Box::from_raw(data.cast::<F>().as_ptr()) });
        }
        let data = NonNull::new(Box::into_raw(Box::new(f)))
            .expect("a box is never null")
            .cast();
        Body {
            data,
            run: run::<F>,
            free: free::<F>,
        }
    }

    /// Run the closure (its box is gone before it starts).
    pub(crate) fn run(self) {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: `data` is this body's box, given up once: `me` is never dropped.
        unsafe { (me.run)(me.data) }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // SAFETY: a body not run still owns its box.
        unsafe { (self.free)(self.data) }
    }
}

// SAFETY: every non-`Sync` field has a single owner at a time: `window` and `fpu` belong to the CPU
// running or switching the thread (the `on_cpu` handshake orders successive owners), `body` to the
// thread itself at its start, `stack` to its reaper after its death; the rest is atomic or locked.
unsafe impl Sync for Thread {}
// SAFETY: as above; nothing in a thread is tied to the CPU that created it.
unsafe impl Send for Thread {}

// SAFETY: `entity` is a field of `self`, always the same one.
unsafe impl Queued for Thread {
    #[inline(always)]
    fn entity(&self) -> &Entity<Thread> {
        &self.entity
    }
}

impl Thread {
    /// A new thread that starts in `window`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ThreadId,
        name: &'static str,
        cpu: usize,
        pinned: bool,
        window: Window,
        stack: Option<Stack>,
        fpu: Option<FpuArea>,
        mm: Option<Mm>,
        user: bool,
        body: Option<Body>,
        keep: Option<Arc<dyn Send + Sync>>,
    ) -> Thread {
        Thread {
            window: UnsafeCell::new(window),
            entity: Entity::new(cpu, pinned),
            switch_work: AtomicU8::new(u8::from(fpu.is_some() || mm.is_some() || user)),
            id,
            name,
            mm: UnsafeCell::new(mm),
            fpu: fpu.map(UnsafeCell::new),
            fpu_cpu: AtomicUsize::new(usize::MAX),
            fpu_uses: AtomicU8::new(0),
            finished: AtomicBool::new(false),
            user,
            user_stack_top: if user {
                stack.as_ref().map_or(0, |s| s.top)
            } else {
                0
            },
            bases: UserBases::default(),
            run_ns: AtomicU64::new(0),
            joiners: WaitQueue::new(),
            sleep_fired: AtomicBool::new(false),
            affinity: SpinMutex::new(None),
            affinity_pending: AtomicBool::new(false),
            stack: UnsafeCell::new(stack),
            body: UnsafeCell::new(body),
            keep: UnsafeCell::new(keep),
        }
    }

    /// Take what the thread keeps alive for its body (by the thread itself as it ends).
    ///
    /// # Safety
    /// Called only by the thread itself, after its body has finished with it.
    pub(crate) unsafe fn take_keep(&self) -> Option<Arc<dyn Send + Sync>> {
        // SAFETY: only the thread touches `keep` (caller).
        unsafe { (*self.keep.get()).take() }
    }

    /// Take the closure (once, by the thread itself as it starts).
    ///
    /// # Safety
    /// Called only by the thread itself.
    pub(crate) unsafe fn take_body(&self) -> Option<Body> {
        // SAFETY: only the thread touches `body`, and it is running this (caller).
        unsafe { (*self.body.get()).take() }
    }

    /// The space the thread runs in.
    ///
    /// # Safety
    /// Called by the thread itself, or by the CPU switching to it (which owns it until it runs).
    #[inline(always)]
    pub(crate) unsafe fn mm(&self) -> Option<&Mm> {
        // SAFETY: only the thread or the CPU switching to it touch `mm`, never both at once.
        unsafe { (*self.mm.get()).as_ref() }
    }

    /// 0 for a plain kernel thread (see the field): a switch to or from it has no FPU, space or
    /// user step of its own. Read by the thread itself or by the CPU switching to or from it.
    #[inline(always)]
    pub(crate) fn switch_work(&self) -> u8 {
        self.switch_work.load(Ordering::Relaxed)
    }

    /// Take the space out (the thread itself, interrupts off, so no switch reads it meanwhile).
    ///
    /// # Safety
    /// Called by the thread itself with interrupts disabled.
    pub(crate) unsafe fn take_mm(&self) -> Option<Mm> {
        // SAFETY: the running thread owns `mm`; with interrupts off no switch away reads it.
        unsafe { (*self.mm.get()).take() }
    }

    /// Put `mm` in place of the thread's space and return the old one (the thread itself,
    /// interrupts off, as for [`Thread::take_mm`]).
    ///
    /// # Safety
    /// Called by the thread itself with interrupts disabled.
    pub(crate) unsafe fn replace_mm(&self, mm: Mm) -> Option<Mm> {
        self.switch_work.store(1, Ordering::Relaxed);
        // SAFETY: as for `take_mm`.
        unsafe { (*self.mm.get()).replace(mm) }
    }

    /// Take the stack (once, by the reaper).
    ///
    /// # Safety
    /// The thread is dead and has switched away for the last time; the caller is its only reaper.
    pub(crate) unsafe fn take_stack(&self) -> Option<Stack> {
        // SAFETY: nobody else touches `stack` after the thread's death (caller).
        unsafe { (*self.stack.get()).take() }
    }
}

/// The closure's value, written by the thread before it finishes and read by its joiner after.
pub(crate) struct ResultSlot<T>(UnsafeCell<Option<T>>);

// SAFETY: the thread writes the slot before setting `finished` (Release); the joiner reads it only
// after seeing `finished` (Acquire); never both at once. `T: Send` because the value crosses threads.
unsafe impl<T: Send> Sync for ResultSlot<T> {}

impl<T> ResultSlot<T> {
    pub(crate) fn new() -> Self {
        ResultSlot(UnsafeCell::new(None))
    }

    /// # Safety
    /// Called by the thread, once, before it finishes.
    pub(crate) unsafe fn put(&self, value: T) {
        // SAFETY: no joiner reads before `finished` (caller's timing).
        unsafe { *self.0.get() = Some(value) };
    }

    /// # Safety
    /// Called after the thread has finished (its `finished` seen with `Acquire`).
    unsafe fn take(&self) -> Option<T> {
        // SAFETY: the thread no longer touches the slot (caller's timing).
        unsafe { (*self.0.get()).take() }
    }
}

/// Owns the right to wait for a thread and take its value. Dropping it detaches the thread.
pub struct JoinHandle<T, P: Platform> {
    pub(crate) thread: Arc<Thread>,
    pub(crate) result: Arc<ResultSlot<T>>,
    pub(crate) sched: &'static Scheduler<P>,
}

impl<T, P: Platform> JoinHandle<T, P> {
    /// The thread's number.
    pub fn id(&self) -> ThreadId {
        self.thread.id
    }

    /// The thread's name.
    pub fn name(&self) -> &'static str {
        self.thread.name
    }

    /// The thread has finished (returned or called [`Scheduler::exit`]).
    pub fn is_finished(&self) -> bool {
        self.thread.finished.load(Ordering::Acquire)
    }

    /// Sleep until the thread finishes; its closure's value, or `None` if it ended through
    /// [`Scheduler::exit`]. Must be called from a scheduler thread (it blocks).
    pub fn join(self) -> Option<T> {
        let finished = &self.thread.finished;
        self.thread
            .joiners
            .wait_until(self.sched, || finished.load(Ordering::Acquire));
        // SAFETY: `finished` was seen with Acquire.
        unsafe { self.result.take() }
    }
}
