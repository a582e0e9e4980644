//! The scheduler: per-CPU run queues, threads, sleeping timers, wait queues, sleeping locks, and
//! the windowed switch path, without a global lock. Portable: no asm and no hardware access of its
//! own; the machine comes in through the [`Platform`] trait (the kernel's implementation in the
//! kernel, [`host::HostPlatform`] on a Linux host for tests and the benchmark).
//!
//! Neighbours: `arch` (below: `arch::switch` moves the registers, `arch::fpu` the extended state);
//! `kernel` (above: implements `Platform`, calls `tick`/`preempt_if_needed` from its
//! handlers and `run_cpu` on each CPU); `bench` (drives it natively through [`host`]).
//!
//! # Public API
//! Setup (modules `scheduler`, `platform`):
//! - `Scheduler::new(platform: P, nr_cpus: usize, config: Config) -> &'static Scheduler<P>`;
//!   [`Config`] `{ slice_ns: u64 (default 10 ms), idle_poll_ns: u64 (default 200 us) }`.
//! - `unsafe fn Scheduler::run_cpu<F: Fn() -> bool + ?Sized>(&'static self, stop: &F)`: each CPU's boot thread
//!   becomes its idle thread and runs the idle loop (returns only when `stop()` and no work).
//! - [`Platform`]: `cpu_id`, `irq_save_disable`/`irq_restore` ([`IrqState`]; `irq_save_disable_on` also names the CPU), `send_resched`,
//!   `now_ns`, `arm_timer(Option<u64>)` (and `arm_timer_from`, given a recent clock reading), `idle_wait`, `alloc_stack`/`free_stack` ([`Stack`]),
//!   `fpu_features() -> Option<arch::fpu::FpuFeatures>`, `switch_mm(Option<NonZeroUsize>, &Mm)` ([`Mm`]: an owned, counted handle
//!   the kernel makes with `unsafe Mm::from_raw(word, owner, &MmOps)`), `leave_mm_idle()`, `mm_after_idle()`,
//!   `trace(impl FnOnce() -> TraceEvent)` (default: nothing); [`CpuIndex`]`(u32)` numbers CPUs densely.
//! - Trace points (module `trace`): [`TraceEvent`] (`Switch` with a [`SwitchReason`], `Wakeup`,
//!   `Spawn`, `Idle`, `Steal`), reported in causal order across CPUs.
//!
//! Threads (module `thread`):
//! - `Scheduler::spawn(&'static self, Builder, impl FnOnce() -> T) -> Result<JoinHandle<T, P>,
//!   SpawnError>`; [`Builder`] `{ name, affinity: Option<CpuIndex>, fpu: bool, stack_bytes,
//!   mm: Option<Mm> }` (`Builder::new(name)` then `.pinned(cpu)`, `.with_fpu()`,
//!   `.stack_bytes(n)`, `.in_mm(mm)`). A new migratable thread starts on the least loaded CPU;
//!   a thread owns its `Mm` and drops it when its body returns (`exit_mm`).
//! - `JoinHandle::join(self) -> Option<T>` (`None` if the thread called `exit`), `id`, `name`,
//!   `is_finished`.
//! - `Scheduler::yield_now(&self)`, `sleep_ns(&self, u64)`, `unsafe exit(&self) -> !`,
//!   `current(&self) -> Option<CurrentThread>` ([`CurrentThread`] `{ id, name, cpu }`, `Display`).
//! - `Scheduler::set_current_affinity(&self, &[u64]) -> Result<CpuIndex, AffinityError>` (moves
//!   the caller if its CPU is no longer allowed), `current_affinity(&self, &mut [u64])`.
//!
//! Interrupt side (called by the kernel with interrupts disabled):
//! - `Scheduler::tick(&self)` from the timer interrupt: `Scheduler::timer_interrupt(&self)`, then
//!   `Scheduler::preempt_if_needed(&self)` (which the reschedule IPI handler calls alone), with
//!   the CPU looked up once.
//! - `Scheduler::preempt_disable(&self) -> PreemptGuard` (nestable).
//!
//! Synchronisation (module `wait`), every call takes the `&Scheduler`:
//! - [`WaitQueue`]: `const fn new()`, `wait_until(&self, s, cond)`, `wake_one(&self, s) -> bool`,
//!   `wake_all(&self, s) -> usize`.
//! - [`Parker`]: `for_current(s) -> Parker` (owned by the calling thread), `park_until(&self, s,
//!   cond)` and `park_until_deadline(&self, s, deadline_ns, cond) -> bool` (by its owner; the
//!   deadline's timer entry is gone when it returns), `wake(&self, s)` (by anyone): no lock, no
//!   list.
//! - [`KeyedWaitQueue<K>`] (module `keyed`, a futex bucket): `const fn new()`, `wait(&'static
//!   self, s, parker, key, bitset, check, stop, nap) -> Result<(), E>`, `wait_until(.., stop,
//!   deadline_ns)` (a timed wait that a wake-up ends at once), `wake(&self, s, key, nr,
//!   bitset) -> u32`, `requeue(&'static self, s, from, to_queue, to_key, nr_wake, nr_requeue,
//!   check) -> Result<(woken, moved), E>`: waiter nodes on the waiters' stacks, no allocation.
//! - [`Mutex<T>`]: `const fn new(T)`, `lock(&self, s) -> MutexGuard`, `try_lock`, `get_mut`,
//!   `into_inner`; [`Semaphore`]: `const fn new(n)`, `acquire(&self, s)`, `try_acquire`,
//!   `release(&self, s)`, `available`.
//!
//! Statistics (module `stats`): `Scheduler::counters(&self, CpuIndex) -> Counters` and
//! `total_counters`; [`Counters`] holds context switches, preemptions, voluntary yields, migrations
//! in and out, idle time, IPIs sent and avoided, wake-ups, and FPU saves/restores/skipped restores.
//!
//! Lower layers, public for the loom models and the benchmark: [`rq`] (run queues and the
//! wake/steal/`on_cpu` protocol) and [`host`] (`run`, `tick`, `HostPlatform`; not in kernel builds).
//!
//! # Design in brief
//! Each CPU owns a run queue under its own spin lock (taken with interrupts disabled, by other CPUs
//! only to push a wake-up or to steal). Round robin with an O(1) pick; the running thread is not on
//! its queue. A woken thread goes to its own CPU's queue; that CPU gets an IPI only if it is halted
//! (wake-ups never preempt in round robin: the slice tick does). Idle CPUs steal the oldest
//! migratable thread from a busy CPU, and halt otherwise with a timer only for their own sleepers,
//! after polling their queue for an adaptive while (`Config::idle_poll_ns`; a polling CPU takes its
//! wake-ups without an IPI).
//! At the end of a busy slice a CPU pulls from one two threads busier, and, if a migratable thread
//! still waits on its queue, kicks one halted CPU to steal it (halted CPUs get no tick of their
//! own). See `rq` for the wake-up and `on_cpu` protocol and `scheduler` for the switch path.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod ilist;
mod keyed;
pub mod platform;
pub mod rq;
mod scheduler;
mod stats;
mod sync;
mod thread;
pub mod trace;
mod wait;

#[cfg(not(target_os = "none"))]
pub mod host;

pub use keyed::KeyedWaitQueue;
pub use platform::{CpuIndex, IrqState, Mm, MmOps, Platform, Stack, UserBases};
pub use scheduler::{Config, PreemptGuard, Scheduler};
pub use stats::Counters;
pub use thread::{AffinityError, Builder, CurrentThread, JoinHandle, SpawnError, ThreadId};
pub use trace::{SwitchReason, TraceEvent};
pub use wait::{Mutex, MutexGuard, ParkSlot, Parker, Semaphore, Unparker, WaitQueue};
