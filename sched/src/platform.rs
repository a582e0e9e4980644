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
use core::num::NonZeroUsize;
use core::ops::Range;

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

/// An address space, as an opaque non-zero word the kernel chooses (e.g. its page-table root).
/// Threads without one are kernel-only and borrow whatever space the CPU has loaded (lazy TLB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mm(pub NonZeroUsize);

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

    /// Put the interrupt flag back as `state` says.
    fn irq_restore(&self, state: IrqState);

    /// Send the reschedule IPI to `cpu` (never the calling CPU). Its handler calls
    /// [`crate::Scheduler::preempt_if_needed`] (and does nothing else when the CPU was idle: waking
    /// it from `idle_wait` is the point).
    fn send_resched(&self, cpu: CpuIndex);

    /// Monotonic nanoseconds, comparable between CPUs.
    fn now_ns(&self) -> u64;

    /// Program this CPU's timer interrupt for `deadline_ns` (on the `now_ns` clock), replacing any
    /// earlier setting; `None` stops it (tickless idle). A deadline in the past fires at once.
    fn arm_timer(&self, deadline_ns: Option<u64>);

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

    /// Load address space `next` on this CPU; `prev` is the one loaded so far (`None` if none yet).
    /// Called only when they differ, never for kernel-only threads (which keep the loaded one).
    fn switch_mm(&self, prev: Option<Mm>, next: Mm);

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

    /// The next thread on this CPU runs user code (spawned with `Builder::user_thread`): make
    /// `kernel_stack_top` the stack its entries from user mode land on and load its user FS base.
    /// Called with interrupts off, after `switch_mm`, before the register switch.
    fn switch_to_user_thread(&self, kernel_stack_top: usize, fs_base: u64) {
        let _ = (kernel_stack_top, fs_base);
    }
}
