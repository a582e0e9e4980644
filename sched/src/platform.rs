//! What the scheduler needs from the machine, as one trait the kernel (or a host harness) implements.
//!
//! Key types: [`Platform`] (statically dispatched: `Scheduler<P: Platform>`, so every call inlines),
//! [`CpuIndex`] (dense CPU numbers `0..nr_cpus`), [`IrqState`], [`Stack`] and [`Mm`].
//!
//! Neighbours: `sched::Scheduler` is the only caller; the kernel implements the trait on top of
//! `arch` (APIC timer and IPIs, `sti; hlt`, page-mapped stacks with guard pages, CR3 switching);
//! `sched::host` implements it with OS threads for tests and benchmarks.

use crate::trace::TraceEvent;
use arch::fpu::FpuFeatures;
use core::fmt;
use core::num::NonZeroUsize;
use core::ops::Range;
use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

/// A CPU as the scheduler numbers them: dense, `0..nr_cpus`. The kernel maps its own CPU ids
/// (APIC ids, `smp` ids) onto these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuIndex(pub u32);

impl CpuIndex {
    /// The index as a `usize`, for indexing per-CPU arrays.
    #[inline(always)]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Whether interrupts were enabled before [`Platform::irq_save_disable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqState {
    /// Interrupts were enabled.
    pub enabled: bool,
}

/// A thread stack handed out by [`Platform::alloc_stack`]. Addresses are plain numbers: the
/// scheduler never dereferences them, it only starts the thread at `top` and gives the stack back.
#[derive(Debug, PartialEq, Eq)]
pub struct Stack {
    /// Lowest usable address.
    pub bottom: usize,
    /// One past the highest usable address (16-byte aligned).
    pub top: usize,
    /// Unmapped guard range below `bottom` (empty where there is none, e.g. on a host).
    pub guard: Range<usize>,
}

/// An owned reference to an address space: what a thread runs in. The thread owns it and gives
/// it up itself when its body has returned (as Linux's `exit_mm`), in thread context, so dropping
/// the last reference may sleep and shoot down other CPUs; from then until it is reaped the
/// thread is kernel-only. Threads without one are kernel-only from the start and borrow whatever
/// space the CPU has loaded (lazy TLB).
///
/// The scheduler knows a space by its [`word`](Mm::word), an opaque non-zero number that the
/// kernel chooses and keeps unique for as long as any CPU may still have that space loaded (so a
/// CPU never skips loading a new space that happens to reuse the word of its old one). The owner
/// behind it is counted by `ops`: [`Clone`] takes one more reference, [`Drop`] gives one back.
pub struct Mm {
    word: NonZeroUsize,
    owner: NonNull<()>,
    ops: &'static MmOps,
}

/// How an [`Mm`]'s owner is counted (a vtable the kernel writes once per kind of owner).
#[derive(Debug)]
pub struct MmOps {
    /// Take one more reference to `owner`.
    pub clone: unsafe fn(owner: NonNull<()>),
    /// Give back one reference to `owner` (may free it, sleep, wait for other CPUs).
    pub release: unsafe fn(owner: NonNull<()>),
    /// Add `ns` nanoseconds of CPU time, run by a thread in this space, to `owner`'s account (the
    /// process clock of the threads sharing it). Called with interrupts disabled, from the switch
    /// path and the timer tick: it must neither block nor take a lock.
    pub charge: unsafe fn(owner: NonNull<()>, ns: u64),
}

// SAFETY: per `Mm::from_raw`, the owner is a reference-counted object that may be shared and
// released from any thread.
unsafe impl Send for Mm {}
// SAFETY: as above; `&Mm` gives only the word and the owner's address.
unsafe impl Sync for Mm {}

impl Mm {
    /// Wrap one counted reference to `owner`, known to the scheduler as `word`.
    ///
    /// # Safety
    /// 1. The caller hands over one reference to `owner`, which `ops.clone` and `ops.release`
    ///    count (each callable from any thread; `release` in thread context).
    /// 2. While any reference to `owner` lives, `word` names this space alone, and it keeps
    ///    naming it while a CPU may have it loaded ([`Platform::switch_mm`] keeps it loaded).
    /// 3. `word` is not `usize::MAX`, which the scheduler keeps as a marker of its own.
    pub const unsafe fn from_raw(word: NonZeroUsize, owner: NonNull<()>, ops: &'static MmOps) -> Mm {
        Mm { word, owner, ops }
    }

    /// Add `ns` of CPU time run in this space to its owner's account.
    pub(crate) fn charge(&self, ns: u64) {
        // SAFETY: `self` holds a reference, so the owner is alive (from_raw, condition 1).
        unsafe { (self.ops.charge)(self.owner, ns) }
    }

    /// The word the scheduler knows this space by.
    #[inline(always)]
    pub fn word(&self) -> NonZeroUsize {
        self.word
    }

    /// The owner this reference counts (alive while `self` is).
    #[inline(always)]
    pub fn owner(&self) -> NonNull<()> {
        self.owner
    }
}

impl Clone for Mm {
    fn clone(&self) -> Mm {
        // SAFETY: `self` holds a reference, so the owner is alive (from_raw, condition 1).
        unsafe { (self.ops.clone)(self.owner) };
        Mm { word: self.word, owner: self.owner, ops: self.ops }
    }
}

impl Drop for Mm {
    fn drop(&mut self) {
        // SAFETY: gives back the reference `self` held (from_raw, condition 1), once.
        unsafe { (self.ops.release)(self.owner) };
    }
}

impl fmt::Debug for Mm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mm({:#x})", self.word)
    }
}

impl PartialEq for Mm {
    fn eq(&self, other: &Mm) -> bool {
        self.word == other.word
    }
}

impl Eq for Mm {}

/// The machine below the scheduler.
///
/// Every method may be called with interrupts disabled; `timer_interrupt` and `preempt_if_needed`
/// call some of them from interrupt context, so none of them may block, allocate memory, or take a
/// lock that interrupted code could hold.
pub trait Platform: 'static + Sync + Sized {
    /// The CPU this code runs on. Must read fresh state on every call (a thread can migrate between
    /// two calls in the same function).
    fn cpu_id(&self) -> CpuIndex;

    /// Disable interrupts on this CPU and return whether they were enabled.
    fn irq_save_disable(&self) -> IrqState;

    /// [`Platform::irq_save_disable`], then [`Platform::cpu_id`], which cannot change while
    /// interrupts stay disabled: for a platform that finds both through the same lookup, one.
    #[inline]
    fn irq_save_disable_on(&self) -> (IrqState, CpuIndex) {
        let irq = self.irq_save_disable();
        (irq, self.cpu_id())
    }

    /// Whether this platform keeps a word per CPU that one load reaches (the kernel's GS-relative
    /// per-CPU block): [`Scheduler::run_cpu`](crate::Scheduler::run_cpu) then stores there the
    /// address of the CPU's own scheduler state ([`Platform::set_cpu_word`]), and the switch path
    /// finds that state with that one load ([`Platform::cpu_word`]) instead of a CPU id, a bounds
    /// check and an indexed address. False (the default): the scheduler indexes its CPUs by
    /// [`Platform::cpu_id`], and the two methods are never called.
    ///
    /// A platform that says true serves one scheduler (the words would otherwise name one
    /// scheduler's state to another) and returns from [`Platform::cpu_word`] exactly what the last
    /// [`Platform::set_cpu_word`] on the calling CPU stored, 0 before any: the scheduler takes a
    /// nonzero word for its own state without checking it.
    const CPU_WORD: bool = false;

    /// Store `word` as the calling CPU's word (interrupts disabled; only where
    /// [`Platform::CPU_WORD`]).
    #[inline(always)]
    fn set_cpu_word(&self, word: usize) {
        let _ = word;
    }

    /// The calling CPU's word, as its last [`Platform::set_cpu_word`] stored it, 0 before any
    /// (interrupts disabled; only where [`Platform::CPU_WORD`]).
    #[inline(always)]
    fn cpu_word(&self) -> usize {
        0
    }

    /// Put the interrupt flag back as `state` says.
    fn irq_restore(&self, state: IrqState);

    /// [`Platform::irq_save_disable`] for a caller that runs with interrupts enabled (a system
    /// call's own code, whose entry enables them): a platform may disable them without reading the
    /// flag first and return "enabled", so that the matching [`Platform::irq_restore`] enables them
    /// without a test. The default reads the flag.
    #[inline]
    fn irq_disable_from_on(&self) -> IrqState {
        self.irq_save_disable()
    }

    /// Send the reschedule IPI to `cpu` (never the calling CPU). Its handler calls
    /// [`crate::Scheduler::preempt_if_needed`] (and does nothing else when the CPU was idle: waking
    /// it from `idle_wait` is the point).
    fn send_resched(&self, cpu: CpuIndex);

    /// Monotonic nanoseconds, comparable between CPUs.
    fn now_ns(&self) -> u64;

    /// Program this CPU's timer interrupt for `deadline_ns` (on the `now_ns` clock), replacing any
    /// earlier setting; `None` stops it (tickless idle). A deadline in the past fires at once.
    fn arm_timer(&self, deadline_ns: Option<u64>);

    /// [`Platform::arm_timer`] for `Some(deadline_ns)`, given `now_ns`, a reading of
    /// [`Platform::now_ns`] this CPU took a little earlier (the timer tick's own). A platform whose
    /// timer counts down may count the delay from that reading instead of reading the clock again:
    /// the time since it only delays the interrupt, never brings it earlier. The default ignores it.
    #[inline]
    fn arm_timer_from(&self, deadline_ns: u64, now_ns: u64) {
        let _ = now_ns;
        self.arm_timer(Some(deadline_ns));
    }

    /// One turn of the idle poll's wait (`Config::idle_poll_ns`), called with interrupts
    /// disabled and returning with them disabled: a spin-wait hint, and a moment with interrupts
    /// enabled so that those pending are handled as they would be in a halt. The default only
    /// hints.
    #[inline]
    fn idle_poll_relax(&self) {
        core::hint::spin_loop();
    }

    /// Enable interrupts and halt until one arrives, atomically (`sti; hlt`: an interrupt pending at
    /// the `sti` still wakes the halt); return with interrupts disabled again.
    fn idle_wait(&self);

    /// A new stack of at least `bytes` usable bytes, `None` if out of memory.
    fn alloc_stack(&self, bytes: usize) -> Option<Stack>;

    /// Give back a stack from `alloc_stack`. Called on some other thread's stack, after the owner
    /// has switched away for the last time (with interrupts disabled, from thread context).
    fn free_stack(&self, stack: Stack);

    /// The extended-state features threads created with `fpu: true` are saved with (already
    /// enabled on every CPU), or `None` if the platform offers no FPU to threads.
    fn fpu_features(&self) -> Option<FpuFeatures>;

    /// Whether the scheduler may arm the trap on first use of the extended state
    /// ([`Platform::set_fpu_trap`]). With it, user threads switch without saving or loading
    /// extended state that they do not use (see `switch_fpu`); without it (the default), every
    /// switch of an FPU thread saves and restores. Asked once, when the scheduler is created.
    #[inline(always)]
    fn lazy_fpu(&self) -> bool {
        false
    }

    /// Arm (`on`) or disarm this CPU's trap on the next use of the extended state (x86: CR0.TS,
    /// whose #NM the platform hands to [`crate::Scheduler::fpu_trap`]; `xsave` and `xrstor` trap
    /// too). Called only where [`Platform::lazy_fpu`] says yes, with interrupts disabled, and only to
    /// change the setting (the scheduler keeps a copy of it per CPU, starting disarmed).
    fn set_fpu_trap(&self, on: bool) {
        let _ = on;
    }

    /// Load address space `next` on this CPU; `prev` is the word of the one loaded so far (`None`
    /// if none yet). Called only when they differ, never for kernel-only threads (which keep the
    /// loaded one). The CPU must keep `next`'s word unique while it stays loaded (by holding a
    /// reference of its own, for instance), since `next` may be dropped before the CPU switches
    /// again.
    fn switch_mm(&self, prev: Option<NonZeroUsize>, next: &Mm);

    /// This CPU is about to halt with nothing to run: leave the address space it has loaded (for
    /// the kernel-only context), so that changes to that space need not interrupt it. Returns
    /// whether it did; if so, the next thread with a space gets a `switch_mm` with `prev` `None`.
    /// The default keeps the space loaded.
    fn leave_mm_idle(&self) -> bool {
        false
    }

    /// This CPU's `idle_wait` just returned (interrupts off, before anything else runs here): the
    /// platform catches its loaded address space up with what changed during the halt. Returns
    /// whether it left that space meanwhile; if so the next thread with a space gets a
    /// `switch_mm` with `prev` `None`. The default keeps it.
    fn mm_after_idle(&self) -> bool {
        false
    }

    /// A scheduling event on this CPU, for a trace (see [`crate::trace`]). Called with interrupts
    /// disabled; switches and wake-ups under a run-queue lock, and wake-ups also from the timer
    /// interrupt, so for those it must be short and must neither block nor allocate (spawns and
    /// idle threads are reported from thread context, where allocating is fine). The default
    /// records nothing and compiles to nothing; a tracing platform keeps the off case to one test
    /// of its enable mask, and calls `event` (which reads the threads involved) only when on.
    #[inline(always)]
    fn trace(&self, event: impl FnOnce() -> TraceEvent) {
        let _ = event;
    }

    /// Whether [`Platform::trace`] may record now: a hint, read once before a path that would
    /// otherwise call it under a lock, so that the untraced copy of that path calls nothing there
    /// (a trace switched on meanwhile misses that one event, as it would a moment earlier). The
    /// default says yes, which keeps every call: right for any platform, and free for one whose
    /// `trace` is the default's nothing.
    #[inline(always)]
    fn tracing(&self) -> bool {
        true
    }

    /// A switch where either side runs user code (spawned with `Builder::user_thread`). `prev`:
    /// the outgoing thread's user bases, if it is a user thread: store into them what its code may
    /// have changed on the CPU without the kernel hearing of it (where user code can write its FS
    /// and GS bases itself). `next`: the incoming user thread's kernel stack top, which its entries
    /// from user mode land on, and its user bases, to load. Called with interrupts off, after
    /// `switch_mm`, before the register switch (so before `prev` can run anywhere else).
    fn switch_user(&self, prev: Option<&UserBases>, next: Option<(usize, &UserBases)>) {
        let _ = (prev, next);
    }
}

/// A user thread's FS and GS bases as the kernel knows them: exact while the thread is off the
/// CPU (its switch-out saves them, [`Platform::switch_user`]); while it runs the CPU holds them, and
/// these may lag behind what its code set itself.
#[derive(Debug, Default)]
pub struct UserBases {
    pub fs: AtomicU64,
    pub gs: AtomicU64,
}
