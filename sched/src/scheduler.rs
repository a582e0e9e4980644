//! The scheduler: per-CPU state, the switch path, the idle loop, timers and preemption.
//!
//! Key types: [`Scheduler`] (one per system; generic over the [`Platform`], so platform calls are
//! static and inline), [`Config`], [`PreemptGuard`]. Internals: `Cpu` (one per CPU: its run queue
//! in its own cache line, the CPU-local switch state, its sleeper heap, its counters).
//!
//! Neighbours: `rq` (queues and the wake/steal/on_cpu protocol), `thread` (control blocks, spawn
//! and join types), `wait` (wait queues, which call `block` and `wake_thread` here), `stats`
//! (counters), `arch::switch` (the register switch) and `arch::fpu` (extended state).
//!
//! The switch path (`schedule`), always with interrupts disabled:
//! 1. only if this CPU has a sleeper, read the clock and expire the due ones (the timer interrupt
//!    and the idle loop expire them too, so a switch on a CPU without sleepers reads no clock);
//! 2. under this CPU's queue lock: put the outgoing thread back (still `Running`) or take it off
//!    (`Blocked`/`Dead`), pop the next one (or run the idle thread);
//! 3. `switch_to`: wait for the next thread's `on_cpu` to clear (only a thread just stolen from a
//!    CPU still switching away from it can have it set); prefetch its stack top (its window is
//!    read at once for that, so prefetching the window too would only add an instruction); save the outgoing extended state if it is an FPU thread and restore the incoming
//!    one if it is an FPU thread whose state is not live in this CPU's registers; switch address
//!    space if the incoming thread has one that is not loaded; `arch::switch::switch_window`, which
//!    hands the outgoing thread to the incoming one in a register (Linux's `switch_to(prev, next,
//!    last)`);
//! 4. `finish_switch`, run by whichever thread the CPU switched to, with the thread the switch
//!    handed it: clear that thread's `on_cpu` (`Release`: its window is complete) and, if it is
//!    dead, free its stack and drop the scheduler's reference to it.
//!
//! Time slices: a preemption stamps `slice_start_ns` for the incoming thread with the clock of the
//! tick that asked for it (read once per tick, and the tick armed the next one from it), and the timer
//! interrupt when it renews the slice of a thread nobody waits for. A voluntary switch (yield,
//! block, exit) reads no clock: it leaves the incoming thread `UNSTAMPED`, and the next tick
//! (which the outgoing thread's slice had armed) charges it half a slice, the mean of what it can
//! have run since it came in. So a thread that comes in through a voluntary switch runs between
//! half a slice and one and a half, a full one on average, before a tick preempts it.
//!
//! CPU time (the thread and process CPU-time clocks) is charged at the moments the clock is read
//! anyway, never by a read of its own on a voluntary switch. Each CPU keeps `acct_ns`, the clock
//! at its last accounting point; at the next one (a tick, a switch that read the clock for
//! sleepers, a preemption or the idle hand-over, a thread's reading of its own clock, its exit
//! from its space) the thread running then is charged everything since, and `acct_ns` moves to
//! now. A thread that ran alone on its CPU since the last point is charged exactly; where
//! voluntary switches (yield, block, exit with no sleeper due) came in between, the thread found
//! running takes the whole interval, as with Linux's tick-sampled user and system times: at most
//! one slice per interval goes to the wrong thread of that CPU, none is lost, and a thread's clock
//! never goes back (a reading charges what it returns).
//!
//! Memory rule for the kernel: wake-ups and `timer_interrupt` never allocate or free. A dead
//! thread's stack is freed (and the scheduler's reference to its control block dropped; the block
//! goes with the last `JoinHandle`) in `finish_switch`, by the thread that runs next, with
//! interrupts disabled; if that thread had been preempted, this happens in its interrupt handler
//! frame, above code that was preemptible. `sleep_ns` may grow its CPU's sleeper heap, in thread
//! context with interrupts disabled. So the kernel allocator must work with interrupts disabled and
//! must not be preemptible (nor interruptible by code that allocates) while it holds its lock.

extern crate alloc;

use crate::platform::{CpuIndex, IrqState, Mm, Platform};
use crate::rq::{CpuQueue, Enqueued, Pick, State, Wake};
use crate::stats::{Counters, CpuCounters, add, bump};
use crate::thread::{
    AffinityError, Body, Builder, CurrentThread, JoinHandle, ResultSlot, SpawnError, Thread,
    ThreadId,
};
use crate::trace::{SwitchReason, TraceEvent};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BinaryHeap};
use alloc::sync::Arc;
use alloc::vec::Vec;
use arch::fpu::{self, FpuArea, FpuFeatures, FpuKind};
use arch::switch::{Window, prefetch, switch_window};
use core::cmp::{Ordering as CmpOrdering, Reverse};
use core::marker::PhantomData;
use core::num::NonZeroUsize;
use core::ptr::{NonNull, null_mut};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;
use spin::mutex::SpinMutex;

/// Tunables fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Round-robin time slice: a thread runs at most this long while others wait on its CPU. At
    /// most [`Config::MAX_SLICE_NS`]: [`Scheduler::new`] cuts a longer one to it.
    pub slice_ns: u64,
    /// The longest an idle CPU polls its queue before it halts (0: never poll). Each CPU
    /// adapts its own limit within this bound, as Linux's guest halt-polling does: halts that
    /// end soon grow it, long idle periods shrink it to nothing (see `Scheduler::adapt_idle_poll`).
    pub idle_poll_ns: u64,
}

impl Config {
    /// Default time slice: 10 ms.
    pub const DEFAULT_SLICE_NS: u64 = 10_000_000;
    /// The longest time slice, 2^40 ns (about 18 minutes): a clock reading plus a slice then
    /// cannot overflow for the first 584 years of the clock (2^64 - 2^40 ns), so the tick adds
    /// the two without a saturation.
    pub const MAX_SLICE_NS: u64 = 1 << 40;
    /// Default bound of the idle poll: 200 us, the default of Linux's `guest_halt_poll_ns`
    /// (drivers/cpuidle/governors/haltpoll.c).
    pub const DEFAULT_IDLE_POLL_NS: u64 = 200_000;
}

/// The first poll limit a CPU's short halts grow it to (capped by `Config::idle_poll_ns`); a
/// limit halved below it is dropped to 0. Linux's haltpoll grows from 50 us.
const IDLE_POLL_GROW_START_NS: u64 = 50_000;

impl Default for Config {
    fn default() -> Config {
        Config {
            slice_ns: Self::DEFAULT_SLICE_NS,
            idle_poll_ns: Self::DEFAULT_IDLE_POLL_NS,
        }
    }
}

/// No deadline (for `armed_ns` and `next_sleeper_ns`).
const NEVER: u64 = u64::MAX;

/// Slices in a row that ended with a thread's extended state in use (its trap taken, or restored
/// eagerly), after which its switch-in restores the state eagerly instead of arming the trap on
/// first use (`switch_fpu`): a thread that uses it in every slice would otherwise take a trap in
/// every one. Linux's lazy-FPU days used 5 as well (`fpu_counter`, before 4.6).
const FPU_HOT_SLICES: u8 = 5;

/// `Local::fpu_owner_mm` when the registers hold the clean extended state: a thread of any space may
/// run over it. Never a space's word (`Mm::from_raw`, condition 3).
const FPU_ANY_SPACE: usize = usize::MAX;

/// A busy CPU balances at every this many ends of a slice, not at each: Linux, too, balances a
/// busy CPU on an interval (its `busy_factor` stretches the idle one), and a slice end is the
/// clock this scheduler has. With 10 ms slices that is every 40 ms, near Linux's busy interval
/// for a few CPUs; the balancing pass itself (a scan of every CPU's load, the halted-CPU kick's
/// queue lock) is then paid once per four preemptions.
const BALANCE_EVERY_SLICES: u32 = 4;

/// `slice_start_ns` of a thread that came in through a voluntary switch: the next tick dates its
/// slice's start (see `timer_interrupt`).
const UNSTAMPED: u64 = u64::MAX;

/// Why the switch path runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// `yield_now`.
    Yield,
    /// The thread blocks (wait queue, sleep).
    Block,
    /// The thread exits.
    Exit,
    /// Timer or reschedule IPI, or the end of a preemption-disabled section.
    Preempt,
    /// The idle thread has work to hand the CPU to; the clock it read, and expired this CPU's
    /// sleepers by, just before.
    Idle(u64),
    /// The thread moves to another CPU (its affinity no longer allows this one).
    Migrate(usize),
}

impl Reason {
    /// The reason as a trace reports it.
    fn traced(self) -> SwitchReason {
        match self {
            // It stays runnable, as after a yield (on the CPU it moved to).
            Reason::Yield | Reason::Migrate(_) => SwitchReason::Yield,
            Reason::Block => SwitchReason::Block,
            Reason::Exit => SwitchReason::Exit,
            Reason::Preempt => SwitchReason::Preempt,
            Reason::Idle(_) => SwitchReason::Idle,
        }
    }
}

/// A sleeping thread's timer entry.
struct SleepEntry {
    deadline_ns: u64,
    /// Tie-break, so equal deadlines wake in sleep order.
    seq: u64,
    thread: NonNull<Thread>,
}

impl PartialEq for SleepEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for SleepEntry {}
impl PartialOrd for SleepEntry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for SleepEntry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.deadline_ns, self.seq).cmp(&(other.deadline_ns, other.seq))
    }
}

/// A CPU's sleeping threads, earliest deadline on top.
struct Sleepers {
    heap: BinaryHeap<Reverse<SleepEntry>>,
    next_seq: u64,
}

// SAFETY: the thread pointers refer to threads that stay inside `sleep_ns` or `block_until` (alive)
// until their entry has been popped or taken out under the heap lock; the heap is only reached
// through that lock.
unsafe impl Send for Sleepers {}

/// State only its own CPU writes (with interrupts disabled). Atomics, so other CPUs may read it and
/// the type is `Sync`; on x86 relaxed loads and stores are plain moves.
struct Local {
    /// This CPU's index (constant): for the paths that found this state by the platform's
    /// per-CPU word ([`Platform::CPU_WORD`]) rather than by the index.
    index: usize,
    current: AtomicPtr<Thread>,
    idle: AtomicPtr<Thread>,
    need_resched: AtomicBool,
    /// The clock when the tick set `need_resched`: the preemption it asked for stamps the next
    /// slice with it (the tick armed the next one from it too) instead of reading the clock again.
    resched_ns: AtomicU64,
    preempt_count: AtomicU32,
    /// When the running thread's slice started (`UNSTAMPED`: dated by the next tick).
    slice_start_ns: AtomicU64,
    /// Deadline the platform timer is programmed for (`NEVER`: none).
    armed_ns: AtomicU64,
    /// Earliest sleeper deadline (`NEVER`: none); written under the sleeper lock.
    next_sleeper_ns: AtomicU64,
    /// Busy slice ends left before this CPU balances again (see `BALANCE_EVERY_SLICES`).
    slice_ends_to_balance: AtomicU32,
    /// The clock at this CPU's last CPU-time accounting point: what has run since is charged to
    /// the thread running at the next one.
    acct_ns: AtomicU64,
    /// Id of the thread whose extended state this CPU's registers hold (0: none known).
    fpu_owner: AtomicU64,
    /// Whose threads may run over the registers' extended state without their own (`switch_fpu`):
    /// [`FPU_ANY_SPACE`] when the registers hold the clean state, which reveals nothing; else the
    /// space of `fpu_owner` when its state was loaded here, while that space has stayed loaded on
    /// this CPU ever since (the registers then hold nothing that space does not already share with
    /// its threads); else 0, nobody. A space is kept only while it stays loaded because only then
    /// is its word sure to name it (a space's word may be reused once it is freed):
    /// [`Local::set_active_mm`] clears it.
    fpu_owner_mm: AtomicUsize,
    /// Whether this CPU's trap on the next use of the extended state is armed
    /// ([`Platform::set_fpu_trap`]; always false without [`Platform::lazy_fpu`]).
    fpu_trap: AtomicBool,
    /// The address space loaded on this CPU (0: none yet). Written only through `set_active_mm`.
    active_mm: AtomicUsize,
    /// How long this CPU polls its queue before it halts (adapted; see `adapt_idle_poll`).
    idle_poll_ns: AtomicU64,
}

impl Local {
    /// Record that this CPU loaded space `word` (0: left every space). The registers' extended
    /// state no longer belongs to a space known to be loaded here since it was put there.
    #[inline(always)]
    fn set_active_mm(&self, word: usize) {
        self.active_mm.store(word, Ordering::Relaxed);
        if self.fpu_owner_mm.load(Ordering::Relaxed) != FPU_ANY_SPACE {
            self.fpu_owner_mm.store(0, Ordering::Relaxed);
        }
    }
}

/// One CPU's scheduler state.
// In the declared order: left to the compiler, the order changed when the counters grew by a
// cache line, and the yield path's code with it (one instruction more per yield).
#[repr(C)]
struct Cpu {
    /// Touched by other CPUs (wake-ups, steals, kicks): its own cache lines.
    queue: CachePadded<CpuQueue<Thread>>,
    local: CachePadded<Local>,
    sleepers: CachePadded<SpinMutex<Sleepers>>,
    counters: CachePadded<CpuCounters>,
}

impl Cpu {
    fn new(index: usize) -> Cpu {
        Cpu {
            queue: CachePadded::new(CpuQueue::new()),
            local: CachePadded::new(Local {
                index,
                current: AtomicPtr::new(null_mut()),
                idle: AtomicPtr::new(null_mut()),
                need_resched: AtomicBool::new(false),
                resched_ns: AtomicU64::new(0),
                preempt_count: AtomicU32::new(0),
                slice_start_ns: AtomicU64::new(0),
                armed_ns: AtomicU64::new(NEVER),
                next_sleeper_ns: AtomicU64::new(NEVER),
                slice_ends_to_balance: AtomicU32::new(0),
                acct_ns: AtomicU64::new(0),
                fpu_owner: AtomicU64::new(0),
                fpu_owner_mm: AtomicUsize::new(0),
                fpu_trap: AtomicBool::new(false),
                active_mm: AtomicUsize::new(0),
                idle_poll_ns: AtomicU64::new(0),
            }),
            sleepers: CachePadded::new(SpinMutex::new(Sleepers {
                heap: BinaryHeap::new(),
                next_seq: 0,
            })),
            counters: CachePadded::new(CpuCounters::default()),
        }
    }
}

/// What is left of a wake-up after the thread was made runnable: the reschedule IPI (or steal
/// kick) to send, if any; see [`Scheduler::wake_thread_deferred`].
#[derive(Clone, Copy)]
#[must_use = "a woken thread's CPU may be halted: send the kick"]
pub(crate) struct Kick(Option<(usize, usize, Enqueued, bool)>);

/// The scheduler of a system of `nr_cpus` CPUs.
pub struct Scheduler<P: Platform> {
    platform: P,
    config: Config,
    /// The idle poll's bound now: `config.idle_poll_ns` until [`Scheduler::set_idle_poll_ns`].
    idle_poll_bound_ns: AtomicU64,
    cpus: Box<[Cpu]>,
    fpu: Option<(FpuKind, FpuFeatures)>,
    /// The clean extended state, loaded to wipe another space's values from the registers before
    /// a thread runs over them lazily (`switch_fpu`); only where the platform is lazy.
    fpu_clean: Option<FpuArea>,
    next_id: AtomicU64,
    /// The live user threads by id, so that one may change another's affinity
    /// ([`Scheduler::set_affinity`]). Locked with interrupts off; lock order: this -> runq(cpu).
    user_threads: SpinMutex<BTreeMap<u64, Arc<Thread>>>,
}

impl<P: Platform> Scheduler<P> {
    /// A scheduler for CPUs `0..nr_cpus`, living for the rest of the program. Each CPU joins it by
    /// calling [`Scheduler::run_cpu`] from its boot thread.
    pub fn new(platform: P, nr_cpus: usize, config: Config) -> &'static Scheduler<P> {
        assert!(
            nr_cpus > 0 && u32::try_from(nr_cpus).is_ok(),
            "bad CPU count {nr_cpus}"
        );
        assert!(config.slice_ns > 0, "a zero time slice");
        let config = Config { slice_ns: config.slice_ns.min(Config::MAX_SLICE_NS), ..config };
        let fpu = platform.fpu_features().map(|f| (f.kind(), f));
        let fpu_clean = fpu
            .filter(|_| platform.lazy_fpu())
            .and_then(|(kind, features)| FpuArea::new(kind, &features));
        let cpus: Vec<Cpu> = (0..nr_cpus).map(Cpu::new).collect();
        Box::leak(Box::new(Scheduler {
            platform,
            idle_poll_bound_ns: AtomicU64::new(config.idle_poll_ns),
            config,
            cpus: cpus.into_boxed_slice(),
            fpu,
            fpu_clean,
            next_id: AtomicU64::new(1),
            user_threads: SpinMutex::new(BTreeMap::new()),
        }))
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The idle poll's bound now (see `Config::idle_poll_ns`).
    pub fn idle_poll_ns(&self) -> u64 {
        self.idle_poll_bound_ns.load(Ordering::Relaxed)
    }

    /// Change the idle poll's bound (0: idle CPUs halt at once), from now on: a CPU polling
    /// already finishes its poll. For measurements that compare the two ways of waiting.
    pub fn set_idle_poll_ns(&self, ns: u64) {
        self.idle_poll_bound_ns.store(ns, Ordering::Relaxed);
    }

    /// Number of CPUs.
    pub fn nr_cpus(&self) -> usize {
        self.cpus.len()
    }

    /// A snapshot of `cpu`'s counters.
    pub fn counters(&self, cpu: CpuIndex) -> Counters {
        self.cpus[cpu.index()].counters.snapshot()
    }

    /// The sum of all CPUs' counters.
    pub fn total_counters(&self) -> Counters {
        self.cpus
            .iter()
            .fold(Counters::default(), |sum, c| sum + c.counters.snapshot())
    }

    /// Heap bytes the CPUs' sleep queues hold, counted by capacity, not by sleepers. A sleep queue
    /// keeps the capacity its most crowded moment needed (at most one entry per thread that can
    /// sleep on that CPU at once), so the heap level of a system that leaks nothing still rises a
    /// little whenever some CPU sees more sleepers at once than ever before. A leak check subtracts
    /// this to compare levels.
    pub fn sleep_queue_bytes(&self) -> usize {
        self.cpus
            .iter()
            .map(|c| c.sleepers.lock().heap.capacity() * core::mem::size_of::<Reverse<SleepEntry>>())
            .sum()
    }

    /// The calling CPU's index, checked (the message names no index: formatting it would keep the
    /// index in a stack slot on every switch path, for a panic that never comes).
    #[inline]
    fn this_cpu(&self) -> usize {
        let i = self.platform.cpu_id().index();
        assert!(i < self.cpus.len(), "a CPU index that is not part of this scheduler");
        i
    }

    /// The calling CPU's state (interrupts disabled), for a CPU that has joined
    /// ([`Scheduler::run_cpu`]): one load of the platform's per-CPU word where it has one, else
    /// the CPU array indexed by [`Platform::cpu_id`].
    #[inline(always)]
    fn this_cpu_state(&self) -> &Cpu {
        if P::CPU_WORD {
            let word = self.platform.cpu_word();
            assert!(word != 0, "scheduling on a CPU that has not joined the scheduler");
            // SAFETY: a nonzero word is what `run_cpu` stored on this CPU (platform contract, which
            // also makes this the only scheduler storing words there): the address of this CPU's
            // element of `self.cpus`, which lives as long as `self`; `run_cpu` clears it before
            // it returns.
            let cpu = unsafe { &*(word as *const Cpu) };
            debug_assert!(core::ptr::eq(cpu, &self.cpus[self.platform.cpu_id().index()]), "a per-CPU word of another CPU");
            cpu
        } else {
            &self.cpus[self.this_cpu()]
        }
    }

    fn new_id(&self) -> ThreadId {
        ThreadId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The running thread, if the calling CPU has joined the scheduler.
    pub fn current(&self) -> Option<CurrentThread> {
        let irq = self.platform.irq_save_disable();
        let i = self.platform.cpu_id().index();
        let info = self.cpus.get(i).and_then(|cpu| {
            let p = cpu.local.current.load(Ordering::Relaxed);
            // SAFETY: the current thread of the CPU we run on is us (interrupts are off, so it
            // cannot change under us), alive while it runs.
            let t = unsafe { p.as_ref() }?;
            Some(CurrentThread {
                id: t.id,
                name: t.name,
                cpu: CpuIndex(i as u32),
                user: t.user,
            })
        });
        self.platform.irq_restore(irq);
        info
    }

    /// Record the running user thread's FS base, which the platform restores at each switch to it
    /// (the caller also loads it into the CPU, where the platform's switch-out may read it back). No
    /// effect for a kernel thread.
    pub fn set_current_fs_base(&self, fs_base: u64) {
        let irq = self.platform.irq_save_disable();
        let p = self.cpus[self.this_cpu()].local.current.load(Ordering::Relaxed);
        // SAFETY: the current thread of this CPU is the caller, alive while it runs; interrupts are
        // off, so it cannot change under us.
        if let Some(t) = unsafe { p.as_ref() } {
            t.bases.fs.store(fs_base, Ordering::Relaxed);
        }
        self.platform.irq_restore(irq);
    }

    /// Restrict the calling thread to the CPUs set in `mask` (bit `c % 64` of word `c / 64` is CPU
    /// `c`; bits of CPUs this scheduler does not have are ignored), remembered for
    /// [`Scheduler::current_affinity`]. If its CPU is no longer allowed, the thread moves to the
    /// lowest allowed one before this returns. Returns the CPU it runs on.
    ///
    /// Placement is simple: a thread allowed every CPU may be stolen by any idle CPU; a thread
    /// restricted to some of them stays on one of those (it is pinned there, never stolen), so a
    /// mask of several CPUs is honoured but not balanced within.
    pub fn set_current_affinity(&self, mask: &[u64]) -> Result<CpuIndex, AffinityError> {
        let (first, stored) = self.affinity_mask(mask)?;
        let all = stored.is_none();
        let allowed = |c: usize| stored.as_ref().is_none_or(|m| m[c / 64] & (1 << (c % 64)) != 0);
        let irq = self.platform.irq_save_disable();
        let me = self.this_cpu();
        let t = self.current_blockable();
        // SAFETY: the running thread is alive while it runs.
        let thread = unsafe { t.as_ref() };
        let target = if allowed(me) { me } else { first };
        let old = {
            let _rq = self.cpus[me].queue.lock();
            // Under our queue lock while we run: not on a FIFO (see `Entity::set_pinned`).
            thread.entity.set_pinned(!all);
            // Its own choice replaces any another thread made for it meanwhile.
            thread.affinity_pending.store(false, Ordering::Relaxed);
            core::mem::replace(&mut *thread.affinity.lock(), stored)
        };
        if target != me {
            self.schedule(Reason::Migrate(target));
        }
        let now = self.this_cpu();
        self.platform.irq_restore(irq);
        // Freed with interrupts enabled, outside every lock.
        drop(old);
        Ok(CpuIndex(now as u32))
    }

    /// `mask` as a thread stores it: the lowest allowed CPU, and the mask cut to this scheduler's
    /// CPUs (`None`: all of them).
    fn affinity_mask(&self, mask: &[u64]) -> Result<(usize, Option<Box<[u64]>>), AffinityError> {
        let n = self.cpus.len();
        let allowed = |c: usize| mask.get(c / 64).is_some_and(|w| w & (1 << (c % 64)) != 0);
        let Some(first) = (0..n).find(|&c| allowed(c)) else {
            return Err(AffinityError::NoCpu);
        };
        let all = (0..n).all(allowed);
        let stored: Option<Box<[u64]>> = (!all).then(|| {
            (0..n.div_ceil(64))
                .map(|w| {
                    let bits = mask.get(w).copied().unwrap_or(0);
                    let valid = n - w * 64;
                    if valid >= 64 {
                        bits
                    } else {
                        bits & ((1 << valid) - 1)
                    }
                })
                .collect()
        });
        Ok((first, stored))
    }

    /// Restrict the user thread `id` (the caller or another) to the CPUs set in `mask`, as
    /// [`Scheduler::set_current_affinity`] does for the caller. Another thread takes the new mask
    /// at its next switch: a running one is interrupted now (a reschedule IPI to its CPU) and moves
    /// if its CPU is no longer allowed; a queued or blocked one moves when it next runs.
    /// `Err(NoThread)` unless `id` is a live user thread.
    pub fn set_affinity(&self, id: ThreadId, mask: &[u64]) -> Result<(), AffinityError> {
        if self.current().is_some_and(|c| c.id == id) {
            return self.set_current_affinity(mask).map(|_| ());
        }
        let (_, stored) = self.affinity_mask(mask)?;
        let irq = self.platform.irq_save_disable();
        let thread = self.user_threads.lock().get(&id.0).cloned();
        let Some(thread) = thread else {
            self.platform.irq_restore(irq);
            drop(stored);
            return Err(AffinityError::NoThread);
        };
        let old = core::mem::replace(&mut *thread.affinity.lock(), stored);
        thread.affinity_pending.store(true, Ordering::Release);
        // On another CPU it may be running: interrupt it there (its handler takes the mask). A
        // thread that is not running there takes it when it is next switched in, wherever.
        let cpu = thread.entity.cpu();
        if cpu != self.this_cpu() {
            self.platform.send_resched(CpuIndex(cpu as u32));
            bump(&self.cpus[self.this_cpu()].counters.ipis_sent);
        }
        self.platform.irq_restore(irq);
        drop(old);
        drop(thread);
        Ok(())
    }

    /// Whether the user thread `id` waits for a wake-up (`/proc`'s `S`; running or runnable is
    /// `R`): a snapshot that may change at once. `None` unless `id` is a live user thread.
    pub fn is_blocked(&self, id: ThreadId) -> Option<bool> {
        if self.current().is_some_and(|c| c.id == id) {
            return Some(false);
        }
        let irq = self.platform.irq_save_disable();
        let thread = self.user_threads.lock().get(&id.0).cloned();
        self.platform.irq_restore(irq);
        // Dropped outside the interrupts-off section, as `affinity` does.
        thread.map(|t| t.entity.state() == State::Blocked)
    }

    /// The affinity of the user thread `id` (the layout of [`Scheduler::current_affinity`]);
    /// `Err(NoThread)` unless it is a live user thread.
    pub fn affinity(&self, id: ThreadId, out: &mut [u64]) -> Result<(), AffinityError> {
        if self.current().is_some_and(|c| c.id == id) {
            self.current_affinity(out);
            return Ok(());
        }
        let irq = self.platform.irq_save_disable();
        let thread = self.user_threads.lock().get(&id.0).cloned();
        let result = match &thread {
            Some(t) => {
                self.write_affinity(t, out);
                Ok(())
            }
            None => Err(AffinityError::NoThread),
        };
        self.platform.irq_restore(irq);
        drop(thread);
        result
    }

    /// Take a mask another thread set for the calling one ([`Scheduler::set_affinity`]): pin or
    /// unpin it and move it if its CPU is no longer allowed (interrupts off, its own context,
    /// preemption enabled: a switch point).
    /// Returns whether it moved.
    #[cold]
    #[inline(never)]
    fn take_pending_affinity(&self, thread: &Thread) -> bool {
        if !thread.affinity_pending.swap(false, Ordering::Acquire) {
            return false;
        }
        let me = self.this_cpu();
        let n = self.cpus.len();
        let target = {
            let _rq = self.cpus[me].queue.lock();
            let mask = thread.affinity.lock();
            let allowed = |c: usize| mask.as_ref().is_none_or(|m| m[c / 64] & (1 << (c % 64)) != 0);
            // Under our queue lock while we run: not on a FIFO (see `Entity::set_pinned`).
            thread.entity.set_pinned(mask.is_some());
            if allowed(me) { me } else { (0..n).find(|&c| allowed(c)).unwrap_or(me) }
        };
        if target != me {
            self.schedule(Reason::Migrate(target));
        }
        target != me
    }

    /// The CPUs the calling thread may run on, as set bits in `out` (cleared first; the layout of
    /// [`Scheduler::set_current_affinity`]); CPUs beyond `out` are left out.
    pub fn current_affinity(&self, out: &mut [u64]) {
        let irq = self.platform.irq_save_disable();
        // SAFETY: the running thread is alive while it runs.
        let thread = unsafe { self.current_blockable().as_ref() };
        self.write_affinity(thread, out);
        self.platform.irq_restore(irq);
    }

    /// `thread`'s allowed CPUs as set bits in `out` (cleared first).
    fn write_affinity(&self, thread: &Thread, out: &mut [u64]) {
        out.fill(0);
        let mut set = |c: usize| {
            if let Some(w) = out.get_mut(c / 64) {
                *w |= 1 << (c % 64);
            }
        };
        match &*thread.affinity.lock() {
            Some(mask) => {
                for (c, _) in (0..self.cpus.len())
                    .map(|c| (c, mask[c / 64] & (1 << (c % 64)) != 0))
                    .filter(|&(_, on)| on)
                {
                    set(c);
                }
            }
            // Pinned when spawned: its one CPU.
            None if thread.entity.is_pinned() => set(thread.entity.cpu()),
            None => (0..self.cpus.len()).for_each(&mut set),
        }
    }

    /// Whether `t` is the thread running on the calling CPU (interrupts disabled by the caller).
    #[inline]
    pub(crate) fn is_current(&self, t: *const Thread) -> bool {
        let current = self.cpus[self.this_cpu()].local.current.load(Ordering::Relaxed);
        core::ptr::eq(current.cast_const(), t)
    }

    /// The running thread, which is about to block (interrupts disabled by the caller).
    #[inline]
    pub(crate) fn current_blockable(&self) -> NonNull<Thread> {
        let local = &self.cpus[self.this_cpu()].local;
        let current = local.current.load(Ordering::Relaxed);
        assert!(
            current != local.idle.load(Ordering::Relaxed),
            "an idle thread cannot block"
        );
        NonNull::new(current).expect("blocking on a CPU that has not joined the scheduler")
    }

    /// Create a thread running `f` and make it runnable (pinned to `builder.affinity`, or on the
    /// calling CPU, from where idle CPUs may steal it). Call from a CPU that has joined the
    /// scheduler (or whose boot thread is about to, see [`Scheduler::run_cpu`]).
    pub fn spawn<F, T>(
        &'static self,
        builder: Builder,
        f: F,
    ) -> Result<JoinHandle<T, P>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let here = self.this_cpu();
        let cpu = match builder.affinity {
            Some(c) if c.index() < self.cpus.len() => c.index(),
            Some(c) => return Err(SpawnError::NoSuchCpu(c)),
            None => self.least_loaded(here),
        };
        let fpu_area = match (builder.fpu, &self.fpu) {
            (false, _) => None,
            (true, None) => return Err(SpawnError::NoFpu),
            (true, Some((kind, features))) => {
                let mut area = FpuArea::new(*kind, features).ok_or(SpawnError::OutOfMemory)?;
                if builder.fpu_of_caller {
                    let irq = self.platform.irq_save_disable();
                    // The caller's registers are its own once claimed (a lazy switch may have left
                    // another thread's of its space there), and kernel code never touches them.
                    let running = self.cpus[self.this_cpu()]
                        .local
                        .current
                        .load(Ordering::Relaxed);
                    // SAFETY: the current thread of this CPU is the caller (interrupts are off, so
                    // it stays), alive while it runs.
                    if unsafe { running.as_ref() }.is_some_and(|t| t.fpu.is_some()) {
                        // Its registers, not another thread's of its space (a lazy switch).
                        let me = self.this_cpu();
                        self.fpu_claim(&self.cpus[me], me);
                        // SAFETY: `area` is a fresh image of `kind`, enabled on every CPU (platform
                        // contract); saving reads the registers and writes only `area`. The full
                        // save: a fresh area may sit where a freed one was restored from, and
                        // XSAVEOPT would skip what it thinks that restore left unchanged.
                        unsafe { fpu::save_full(&mut area) };
                    }
                    self.platform.irq_restore(irq);
                }
                Some(area)
            }
        };
        let stack = self
            .platform
            .alloc_stack(builder.stack_bytes)
            .ok_or(SpawnError::OutOfMemory)?;
        let result = Arc::new(ResultSlot::new());
        // The thread keeps the slot alive (`keep` below), so the body holds only its address.
        let slot = SlotRef(Arc::as_ptr(&result));
        let body = Body::new(move || {
            let value = f();
            let slot = slot;
            // SAFETY: 1. the slot lives as long as the thread (its `keep`), which runs this. 2. The
            // thread itself, once, before it finishes (it exits right after the body).
            unsafe { (*slot.0).put(value) };
        });
        let keep: Arc<dyn Send + Sync> = result.clone();
        // SAFETY: the platform just gave this stack to the new thread, which has not run: its top
        // 8 bytes are writable and nothing else uses them.
        let window = unsafe {
            Window::new_thread(
                stack.top as *mut u8,
                thread_entry::<P>,
                self as *const Self as usize,
            )
        };
        let thread = Arc::new(Thread::new(
            self.new_id(),
            builder.name,
            cpu,
            builder.affinity.is_some(),
            window,
            Some(stack),
            fpu_area,
            builder.mm,
            builder.user,
            Some(body),
            Some(keep),
        ));
        if builder.user {
            let irq = self.platform.irq_save_disable();
            self.user_threads.lock().insert(thread.id.0, thread.clone());
            self.platform.irq_restore(irq);
        }
        // The scheduler's own reference, given up by `reap` when the thread is dead.
        let raw =
            NonNull::new(Arc::into_raw(thread.clone()).cast_mut()).expect("Arc is never null");
        let irq = self.platform.irq_save_disable();
        self.platform.trace(|| TraceEvent::Spawn {
            thread: thread.id,
            name: thread.name,
            target: CpuIndex(cpu as u32),
        });
        // SAFETY: a new thread is valid (the scheduler's reference), on no queue, not running, and
        // belongs to `cpu`.
        let info = unsafe { self.cpus[cpu].queue.activate(raw) };
        self.after_enqueue(here, cpu, info, builder.affinity.is_some());
        self.platform.irq_restore(irq);
        Ok(JoinHandle {
            thread,
            result,
            sched: self,
        })
    }

    /// Give the CPU to the next runnable thread on this CPU, if any; come back after it (round
    /// robin).
    pub fn yield_now(&self) {
        let irq = self.platform.irq_save_disable();
        // The switch path inlined with its reason a constant: no dispatch on the reason, and only
        // the steps a yield takes.
        self.switch_path_on(self.this_cpu_state(), Reason::Yield);
        self.platform.irq_restore(irq);
    }

    /// [`Scheduler::yield_now`] for a caller that turns interrupts off right after it anyway (the
    /// system-call exit, before SYSRET restores the caller's flag): it returns with them off,
    /// and leaves out the restore's STI, which under an emulator also ends a translated block.
    pub fn yield_now_irqs_off(&self) {
        let _ = self.platform.irq_save_disable();
        self.switch_path_on(self.this_cpu_state(), Reason::Yield);
    }

    /// Sleep for at least `duration_ns` (on the platform clock); never wakes earlier. Its protocol
    /// with `expire_due_sleepers` is mirrored in the loom model `tests/loom_wait.rs`.
    pub fn sleep_ns(&self, duration_ns: u64) {
        let irq = self.platform.irq_save_disable();
        let home = self.this_cpu();
        let me = self.current_blockable();
        // SAFETY: the running thread is alive while it runs.
        let thread = unsafe { me.as_ref() };
        let now_ns = self.platform.now_ns();
        let deadline_ns = now_ns.saturating_add(duration_ns);
        let cpu = &self.cpus[home];
        {
            let mut sleepers = cpu.sleepers.lock();
            thread.sleep_fired.store(false, Ordering::Relaxed);
            thread.entity.set_blocked();
            Self::queue_sleeper(cpu, &mut sleepers, me, deadline_ns);
        }
        if deadline_ns < cpu.local.armed_ns.load(Ordering::Relaxed) {
            self.arm_from(cpu, deadline_ns, now_ns);
        }
        loop {
            self.block();
            // Woken; possibly spuriously, and possibly now on another CPU: the entry lives on `home`.
            let _sleepers = self.cpus[home].sleepers.lock();
            if thread.sleep_fired.load(Ordering::Relaxed) {
                break;
            }
            thread.entity.set_blocked();
        }
        self.platform.irq_restore(irq);
    }

    /// Block the calling thread, which its caller has marked blocked (interrupts disabled), until
    /// a wake-up or until the clock reaches `deadline_ns`, whichever comes first; whether the
    /// deadline ended it. A wake-up that came after the thread was marked blocked ends it at once
    /// (as it does a plain block). Unlike [`Scheduler::sleep_ns`], any wake-up counts; the caller
    /// tells a spurious one from its own by its condition (see `Parker::park_until_deadline`).
    ///
    /// Its timer entry is gone when it returns: popped by the expiry (which set `sleep_fired`), or
    /// else taken out here under the home CPU's sleeper lock, so a timer of a wait that is over
    /// never wakes the thread in a later block. Mirrored in the loom model `tests/loom_wait.rs`.
    pub(crate) fn block_until(&self, deadline_ns: u64) -> bool {
        let home = self.this_cpu();
        let me = self.current_blockable();
        // SAFETY: the running thread is alive while it runs.
        let thread = unsafe { me.as_ref() };
        let now_ns = self.platform.now_ns();
        if now_ns >= deadline_ns {
            // A waker may be setting `Running` too (it saw `Blocked`): the same store.
            thread.entity.set_running();
            return true;
        }
        let cpu = &self.cpus[home];
        let seq = {
            let mut sleepers = cpu.sleepers.lock();
            thread.sleep_fired.store(false, Ordering::Relaxed);
            Self::queue_sleeper(cpu, &mut sleepers, me, deadline_ns)
        };
        if deadline_ns < cpu.local.armed_ns.load(Ordering::Relaxed) {
            self.arm_from(cpu, deadline_ns, now_ns);
        }
        self.block();
        // Running again, possibly on another CPU: the entry lives on `home`.
        let cpu = &self.cpus[home];
        let mut sleepers = cpu.sleepers.lock();
        if thread.sleep_fired.load(Ordering::Relaxed) {
            return true;
        }
        // Woken first: the entry is still queued (sequence numbers are unique per heap).
        sleepers.heap.retain(|Reverse(e)| e.seq != seq);
        let next = sleepers
            .heap
            .peek()
            .map_or(NEVER, |Reverse(e)| e.deadline_ns);
        // Its CPU's timer may stay armed for the old deadline: that expiry finds nobody due.
        cpu.local.next_sleeper_ns.store(next, Ordering::Relaxed);
        false
    }

    /// Under `cpu`'s sleeper lock (`sleepers`): queue thread `me`'s timer entry for `deadline_ns`
    /// and bring the CPU's earliest-sleeper mark forward to it; returns the entry's sequence number.
    #[inline(always)]
    fn queue_sleeper(cpu: &Cpu, sleepers: &mut Sleepers, me: NonNull<Thread>, deadline_ns: u64) -> u64 {
        let seq = sleepers.next_seq;
        sleepers.next_seq += 1;
        sleepers.heap.push(Reverse(SleepEntry {
            deadline_ns,
            seq,
            thread: me,
        }));
        let next = cpu
            .local
            .next_sleeper_ns
            .load(Ordering::Relaxed)
            .min(deadline_ns);
        cpu.local.next_sleeper_ns.store(next, Ordering::Relaxed);
        seq
    }

    /// End the calling thread now. Its joiner gets `None`; destructors of values on its stack do
    /// not run (as with a process exit), and its stack is freed.
    ///
    /// # Safety
    /// Called from a spawned thread whose stack holds nothing whose destructor must run before
    /// its memory is reused: no pinned value (`Pin`'s drop guarantee), no guard, no borrow lent
    /// to another thread. Returning from the thread's body is the safe way to end it.
    ///
    /// Safe code cannot call it (it once could, which let a safe caller free a pinned value's
    /// memory without its drop):
    ///
    /// ```compile_fail,E0133
    /// fn end<P: sched::Platform>(s: &sched::Scheduler<P>) -> ! {
    ///     s.exit()
    /// }
    /// ```
    ///
    /// ```no_run
    /// fn end<P: sched::Platform>(s: &sched::Scheduler<P>) -> ! {
    ///     // SAFETY: (an example) the caller's stack holds nothing to drop.
    ///     unsafe { s.exit() }
    /// }
    /// ```
    pub unsafe fn exit(&self) -> ! {
        self.exit_keep();
        self.exit_mm();
        self.forget_user_thread();
        // Interrupts stay disabled: the thread never runs again.
        self.platform.irq_save_disable();
        let me = self.current_blockable();
        // SAFETY: the running thread is alive while it runs.
        let thread = unsafe { me.as_ref() };
        thread.finished.store(true, Ordering::Release);
        thread.joiners.wake_all(self);
        thread.entity.set_dead();
        self.schedule(Reason::Exit);
        unreachable!("a dead thread was switched back to");
    }

    /// Move the calling thread to address space `mm` and load that space on this CPU before
    /// returning (`execve`: the same thread, a new image). Returns the space it ran in, for the
    /// caller to drop in thread context with interrupts as it likes: dropping the last reference
    /// may destroy that space, which this CPU no longer has loaded.
    pub fn replace_current_mm(&self, mm: Mm) -> Option<Mm> {
        let irq = self.platform.irq_save_disable();
        let me = self.current_blockable();
        let cpu = &self.cpus[self.this_cpu()];
        // SAFETY: the running thread is alive while it runs, and interrupts are off, so no switch
        // reads its space meanwhile.
        let thread = unsafe { me.as_ref() };
        // SAFETY: this thread, interrupts off.
        let old = unsafe { thread.replace_mm(mm) };
        // SAFETY: this thread reads its own space.
        let new = unsafe { thread.mm() }.expect("the space was just set");
        let active = cpu.local.active_mm.load(Ordering::Relaxed);
        if active != new.word().get() {
            self.platform.switch_mm(NonZeroUsize::new(active), new);
            cpu.local.set_active_mm(new.word().get());
        }
        self.platform.irq_restore(irq);
        old
    }

    /// Give up what the calling thread kept alive for its body (its join slot), in thread context.
    fn exit_keep(&self) {
        let me = self.current_blockable();
        // SAFETY: the running thread is alive while it runs; its body is done with `keep`.
        drop(unsafe { me.as_ref().take_keep() });
    }

    /// Take the calling thread out of the user-thread table (at its end; a no-op for others).
    fn forget_user_thread(&self) {
        let irq = self.platform.irq_save_disable();
        let id = self.current().map(|c| c.id.0);
        let entry = id.and_then(|id| self.user_threads.lock().remove(&id));
        self.platform.irq_restore(irq);
        // Not the last reference (the scheduler's own lives until the thread is reaped).
        drop(entry);
    }

    /// Give up the calling thread's address space (Linux's `exit_mm`): from here on it is
    /// kernel-only, borrowing whatever space its CPU has loaded, so no later switch to it loads
    /// (or names) the space. The reference is dropped here, in thread context with interrupts as
    /// they were: dropping the last one may destroy the space, which sleeps and waits for CPUs.
    fn exit_mm(&self) {
        let irq = self.platform.irq_save_disable();
        let me = self.current_blockable();
        // The space's account gets the thread's time up to here, the last it runs in the space.
        // SAFETY: the running thread is alive while it runs.
        Self::account(&self.cpus[self.this_cpu()], unsafe { me.as_ref() }, self.platform.now_ns());
        // SAFETY: the running thread is alive while it runs, and interrupts are off.
        let mm = unsafe { me.as_ref().take_mm() };
        self.platform.irq_restore(irq);
        drop(mm);
    }

    /// Disable preemption on this CPU until the guard drops (nestable). The holder must not block,
    /// yield or exit. A preemption requested meanwhile happens when the last guard drops.
    pub fn preempt_disable(&self) -> PreemptGuard<'_, P> {
        let irq = self.platform.irq_save_disable();
        let count = &self.cpus[self.this_cpu()].local.preempt_count;
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.platform.irq_restore(irq);
        PreemptGuard {
            sched: self,
            _not_send: PhantomData,
        }
    }

    /// The kernel's timer interrupt handler calls this (interrupts disabled, on the interrupted
    /// thread's stack): wakes this CPU's due sleepers, ends the running thread's slice if it is
    /// used up and others wait, and re-arms the timer (only for sleepers while idle: tickless).
    /// Follow it with [`Scheduler::preempt_if_needed`].
    pub fn timer_interrupt(&self) {
        let me = self.this_cpu();
        let cpu = &self.cpus[me];
        if let Some((_, Some(now))) = self.timer_interrupt_on::<false>(me, cpu) {
            Self::request_resched(cpu, now);
        }
    }

    /// The timer interrupt's whole work: [`Scheduler::timer_interrupt`], then
    /// [`Scheduler::preempt_if_needed`], in one function with the CPU looked up once (interrupts
    /// disabled, on the interrupted thread's stack).
    pub fn tick(&self) {
        self.tick_in::<false>();
    }

    /// [`Scheduler::tick`] for a timer interrupt that came from user mode: what the interrupted
    /// thread ran since the last accounting point is also counted as this CPU's user time
    /// (`Counters::user_ns`).
    pub fn tick_user(&self) {
        self.tick_in::<true>();
    }

    #[inline(always)]
    fn tick_in<const USER: bool>(&self) {
        let me = self.this_cpu();
        let cpu = &self.cpus[me];
        let Some((t, ended)) = self.timer_interrupt_on::<USER>(me, cpu) else {
            return;
        };
        // `preemption_due`, with the request of a slice that ended at this tick in hand rather
        // than stored only to be loaded back: it is stored only if it has to wait.
        if cpu.local.preempt_count.load(Ordering::Relaxed) != 0 {
            // The last guard's drop (or a later tick) preempts.
            if let Some(now) = ended {
                Self::request_resched(cpu, now);
            }
            return;
        }
        if t.affinity_pending.load(Ordering::Relaxed) && self.take_pending_affinity(t) {
            // It moved, and ran again on another CPU, whose need for a switch is not this one's.
            // The move was a switch here, which would have cleared this tick's request anyway.
            return;
        }
        // As in `switch_path_on` for a preemption: the clock the request was stamped with.
        let now = match ended {
            Some(now) => now,
            None if cpu.local.need_resched.load(Ordering::Relaxed) => cpu.local.resched_ns.load(Ordering::Relaxed),
            None => return,
        };
        bump(&cpu.counters.preemptions);
        // The switch path inline, in the tick's own frame: the CPU, its state and the registers
        // the tick saved serve the switch too (one prologue, not two). The tick has just made an
        // accounting point at its own clock, which is no earlier than the request's: the switch's
        // would charge nothing. And it hands over the interrupted thread it holds, known not to be
        // the idle thread.
        self.switch_path_from(cpu, Reason::Preempt, Some(now), Some(t), false);
    }

    /// Ask for a preemption of this CPU's running thread at its next check (`preempt_if_needed`,
    /// the last preemption guard's drop), the slice having ended at the tick that read `now`.
    #[inline(always)]
    fn request_resched(cpu: &Cpu, now: u64) {
        // The switch stamps the next thread's slice with this tick's clock.
        cpu.local.resched_ns.store(now, Ordering::Relaxed);
        cpu.local.need_resched.store(true, Ordering::Relaxed);
    }

    /// [`Scheduler::timer_interrupt`] on CPU `me`, the calling one, whose state is `cpu`, except
    /// that the preemption request of a slice that ended is returned, not made. Returns the
    /// interrupted thread unless it is the idle thread (which never has a preemption due), with
    /// the tick's clock if its slice is over and others wait: the caller preempts it at that clock
    /// or makes the request (`request_resched`).
    #[inline(always)]
    fn timer_interrupt_on<'a, const USER: bool>(&self, me: usize, cpu: &'a Cpu) -> Option<(&'a Thread, Option<u64>)> {
        let now = self.platform.now_ns();
        let next_sleeper = self.expire_sleepers(me, cpu, now);
        let current = cpu.local.current.load(Ordering::Relaxed);
        if current == cpu.local.idle.load(Ordering::Relaxed) {
            self.rearm(cpu, next_sleeper, now);
            return None;
        }
        // SAFETY: the interrupted thread is alive and running here, interrupts off; it stays
        // alive while it is this CPU's current thread, which it is until the tick switches away.
        let Some(t) = (unsafe { current.as_ref() }) else {
            // No thread joined yet (`run_cpu` sets the idle and the current thread together, so
            // not reached today): keep the timer running all the same.
            self.rearm(cpu, next_sleeper, now);
            return None;
        };
        let ran = Self::account(cpu, t, now);
        if USER {
            add(&cpu.counters.user_ns, ran);
        }
        let slice = self.config.slice_ns;
        let mut start = cpu.local.slice_start_ns.load(Ordering::Relaxed);
        if start == UNSTAMPED {
            // The thread came in through a voluntary switch, which reads no clock, at some moment
            // since the last tick: charge it half a slice, the mean of what it can have run. Its
            // slice then ends half a slice from now: it runs between half a slice and one and a
            // half, a full one on average.
            start = now.saturating_sub(slice / 2);
            cpu.local.slice_start_ns.store(start, Ordering::Relaxed);
        }
        // `start` is a clock reading, or one less half a slice: with the slice's bound
        // (`Config::MAX_SLICE_NS`), the sums below cannot overflow. The slice's end is finite,
        // so the deadline armed is: no test for `NEVER`.
        if now < start + slice {
            self.rearm_at(cpu, (start + slice).min(next_sleeper), now);
            return Some((t, None));
        }
        let to_balance = &cpu.local.slice_ends_to_balance;
        match to_balance.load(Ordering::Relaxed) {
            0 => {
                to_balance.store(BALANCE_EVERY_SLICES - 1, Ordering::Relaxed);
                self.balance(me, cpu);
            }
            left => to_balance.store(left - 1, Ordering::Relaxed),
        }
        if cpu.queue.len_hint() > 0 {
            self.rearm_at(cpu, (now + slice).min(next_sleeper), now);
            return Some((t, Some(now)));
        }
        // Nobody waits: a new slice.
        cpu.local.slice_start_ns.store(now, Ordering::Relaxed);
        self.rearm_at(cpu, (now + slice).min(next_sleeper), now);
        Some((t, None))
    }

    /// Arm the timer for `deadline_ns` from the tick (`NEVER`: leave it off), given the tick's
    /// clock reading: the timer has just fired, so nothing is armed, and `arm_from`'s test of the
    /// armed deadline would only find that out again.
    #[inline(always)]
    fn rearm(&self, cpu: &Cpu, deadline_ns: u64, now_ns: u64) {
        if deadline_ns == NEVER {
            cpu.local.armed_ns.store(NEVER, Ordering::Relaxed);
        } else {
            self.rearm_at(cpu, deadline_ns, now_ns);
        }
    }

    /// [`Scheduler::rearm`] for a deadline that is not `NEVER`.
    #[inline(always)]
    fn rearm_at(&self, cpu: &Cpu, deadline_ns: u64, now_ns: u64) {
        debug_assert_ne!(deadline_ns, NEVER, "rearm_at without a deadline");
        cpu.local.armed_ns.store(deadline_ns, Ordering::Relaxed);
        self.platform.arm_timer_from(deadline_ns, now_ns);
    }

    /// Switch away from the interrupted thread if its slice is over (and preemption is enabled).
    /// Called at the end of the timer and reschedule-IPI handlers, interrupts disabled; returns when
    /// the thread is resumed (maybe much later, maybe on another CPU), and the handler's exit path
    /// then returns to it. Does nothing on an idle thread (the idle loop looks for work itself).
    pub fn preempt_if_needed(&self) {
        self.preempt_if_needed_on(&self.cpus[self.this_cpu()]);
    }

    /// [`Scheduler::preempt_if_needed`] on the calling CPU, whose state is `cpu`.
    #[inline(always)]
    fn preempt_if_needed_on(&self, cpu: &Cpu) {
        let current = cpu.local.current.load(Ordering::Relaxed);
        if current == cpu.local.idle.load(Ordering::Relaxed) {
            cpu.local.need_resched.store(false, Ordering::Relaxed);
            return;
        }
        // SAFETY: the interrupted thread is alive and running here, interrupts off.
        if let Some(t) = unsafe { current.as_ref() } {
            self.preempt_busy_if_needed(cpu, t);
        }
    }

    /// [`Scheduler::preempt_if_needed_on`] once the interrupted thread `t` is known not to be the
    /// idle thread (the tick's case: it returns early for the idle thread, whose `need_resched`
    /// the switch to it cleared and nothing sets).
    #[inline(always)]
    fn preempt_busy_if_needed(&self, cpu: &Cpu, t: &Thread) {
        if self.preemption_due(cpu, t) {
            self.schedule_preempt();
        }
    }

    /// Whether the interrupted thread `t` (not the idle thread) is to be preempted now; counts the
    /// preemption it says is due. A pending affinity change is taken first (it may move `t`).
    #[inline(always)]
    fn preemption_due(&self, cpu: &Cpu, t: &Thread) -> bool {
        if cpu.local.preempt_count.load(Ordering::Relaxed) != 0 {
            return false;
        }
        if t.affinity_pending.load(Ordering::Relaxed) {
            // Another thread changed its affinity ([`Scheduler::set_affinity`]): take it now. If
            // it moved, it ran again on another CPU, whose need for a switch is not this one's.
            if self.take_pending_affinity(t) {
                return false;
            }
        }
        if !cpu.local.need_resched.load(Ordering::Relaxed) {
            return false;
        }
        bump(&cpu.counters.preemptions);
        true
    }

    /// The idle thread's switch path on CPU `me` (the calling one), its reason a constant (see
    /// `switch_path`); `now` is the clock the idle loop expired this CPU's sleepers by. Inline in
    /// the idle loop, whose frame already holds the registers the switch saves and whose CPU is
    /// already looked up: a call of its own would save them again and read the CPU index again,
    /// on every switch out of idle (every cross-CPU wake-up of a halted CPU).
    #[inline(always)]
    fn schedule_idle(&self, me: usize, now: u64) {
        self.switch_path_on(&self.cpus[me], Reason::Idle(now));
    }

    /// The switch path of a preemption, its reason a constant (see `switch_path`).
    #[inline(never)]
    fn schedule_preempt(&self) {
        self.switch_path(Reason::Preempt);
    }

    /// Make the calling boot thread this CPU's idle thread and run the idle loop: run queued
    /// threads, steal from busy CPUs, and otherwise halt in [`Platform::idle_wait`] with the timer
    /// armed only for this CPU's next sleeper. Returns when `stop()` is true at a moment this CPU
    /// has nothing to run (a kernel passes `&|| false` and never returns).
    ///
    /// Generic over `stop`, so the kernel's `&|| false` costs nothing per turn (a `&dyn Fn` is
    /// accepted too).
    ///
    /// # Safety
    /// Called once per CPU, by the thread the CPU booted on, on that CPU ([`Platform::cpu_id`]
    /// names it) and with that CPU's scheduler state not in use by anything else; it must not be
    /// called from a thread the scheduler created.
    pub unsafe fn run_cpu<F: Fn() -> bool + ?Sized>(&'static self, stop: &F) {
        let irq = self.platform.irq_save_disable();
        let me = self.this_cpu();
        let cpu = &self.cpus[me];
        assert!(
            cpu.local.idle.load(Ordering::Relaxed).is_null(),
            "CPU {me} joined the scheduler twice"
        );
        let idle = Arc::new(Thread::new(
            self.new_id(),
            "idle",
            me,
            true,
            Window::default(),
            None,
            None,
            None,
            false,
            None,
            None,
        ));
        idle.entity.set_on_cpu();
        self.platform.trace(|| TraceEvent::Idle { thread: idle.id });
        let idle = Arc::into_raw(idle).cast_mut();
        cpu.local.idle.store(idle, Ordering::Relaxed);
        cpu.local.current.store(idle, Ordering::Relaxed);
        cpu.local.acct_ns.store(self.platform.now_ns(), Ordering::Relaxed);
        if P::CPU_WORD {
            // From here on the switch path finds this CPU's state by the word
            // (`this_cpu_state`); it names it while `current` is set.
            self.platform.set_cpu_word(core::ptr::from_ref(cpu) as usize);
        }
        self.idle_loop(me, stop);
        if P::CPU_WORD {
            self.platform.set_cpu_word(0);
        }
        cpu.local.current.store(null_mut(), Ordering::Relaxed);
        cpu.local.idle.store(null_mut(), Ordering::Relaxed);
        // SAFETY: the reference made above; no other CPU ever holds an idle thread.
        drop(unsafe { Arc::from_raw(idle) });
        self.arm(cpu, NEVER);
        self.platform.irq_restore(irq);
    }

    /// The idle thread's loop (interrupts disabled; only the halt enables them).
    fn idle_loop<F: Fn() -> bool + ?Sized>(&self, me: usize, stop: &F) {
        let cpu = &self.cpus[me];
        // One clock reading per turn: taken after a switch back to idle, or at the end of a halt,
        // where it also closes the halt's idle time.
        let mut now = self.platform.now_ns();
        loop {
            self.expire_sleepers(me, cpu, now);
            if cpu.queue.len_hint() == 0 {
                self.steal_into(me);
            }
            if cpu.queue.len_hint() > 0 {
                self.schedule_idle(me, now);
                now = self.platform.now_ns();
                continue;
            }
            if stop() {
                return;
            }
            if cpu.local.active_mm.load(Ordering::Relaxed) != 0 && self.platform.leave_mm_idle() {
                // An idle CPU is spared the shootdowns of the space it last ran (it catches up
                // through the space's generation when it next loads it).
                cpu.local.set_active_mm(0);
            }
            self.arm_from(cpu, cpu.local.next_sleeper_ns.load(Ordering::Relaxed), now);
            if self.idle_poll(cpu, now) {
                // Work came while polling (a sleeper's timer may have fired in it): no halt.
                let end = self.platform.now_ns();
                add(&cpu.counters.idle_ns, end.saturating_sub(now));
                now = end;
            } else if cpu.queue.try_halt() {
                self.platform.idle_wait();
                if self.platform.mm_after_idle() {
                    cpu.local.set_active_mm(0);
                }
                cpu.queue.unhalt();
                // The halt counts as idle from this turn's reading: the few steps between it and
                // the halt (the steal check, the timer, the poll) are idle work too.
                let end = self.platform.now_ns();
                add(&cpu.counters.idle_ns, end.saturating_sub(now));
                self.adapt_idle_poll(cpu, end.saturating_sub(now));
                now = end;
            } else {
                now = self.platform.now_ns();
            }
        }
    }

    /// How many threads CPU `c` has, as of its last queue unlock: those queued, and the one it
    /// runs unless it is idle, halted or polling (a hint, read without its lock).
    #[inline]
    fn load_hint(&self, c: usize) -> usize {
        let q = &self.cpus[c].queue;
        q.len_hint() + usize::from(!q.idle_hint())
    }

    /// Fork balancing: the CPU where a new migratable thread starts, the least loaded one
    /// (`here` on a tie, keeping a spawner's threads near it while CPUs are equally busy).
    fn least_loaded(&self, here: usize) -> usize {
        let mut best = (self.load_hint(here), here);
        for c in (0..self.cpus.len()).filter(|&c| c != here) {
            if best.0 == 0 {
                break;
            }
            let load = self.load_hint(c);
            if load < best.0 {
                best = (load, c);
            }
        }
        best.1
    }

    /// Periodic balancing, at every `BALANCE_EVERY_SLICES`-th end of a busy slice (timer
    /// interrupt, interrupts disabled): pull from a busier CPU, kick a halted one. One pass over
    /// the other CPUs' hints finds both the busiest CPU and the halted one to kick. Out of line,
    /// so that the ticks that skip it keep a small frame.
    ///
    /// The pull: if the busiest CPU has at least two threads more than this one (running one
    /// included), its oldest migratable queued thread comes here. Each pull narrows the gap by
    /// two, so free-running threads end up spread however they were created; idle CPUs steal on
    /// their own.
    ///
    /// The kick: threads waiting here and a CPU halted elsewhere, the first after this one
    /// (wrapping around): kick that CPU so its idle loop steals one (Linux's nohz idle-balance
    /// kick). A halted CPU is tickless and looks for work only when woken, and the pull pulls into
    /// busy CPUs only, so without this a thread that became migratable while queued here (its
    /// affinity widened, or created pinned then let go) would never reach an idle CPU. One kick
    /// per balancing, and only when a migratable thread is queued, so a queue of pinned threads
    /// wakes nobody.
    ///
    /// `cpu` is CPU `me`'s state, which the tick has in hand.
    #[inline(never)]
    fn balance(&self, me: usize, cpu: &Cpu) {
        // The slice is read once (the hints' atomics would make the compiler reload it per CPU).
        let cpus: &[Cpu] = &self.cpus;
        let n = cpus.len();
        debug_assert!(me < n && core::ptr::eq(cpu, &cpus[me]), "balance off its CPU");
        let here = &cpu.queue;
        let mine = here.len_hint() + 1;
        let mut busiest = (mine, me);
        // The first halted CPU after this one (`me`: none yet).
        let mut halted = me;
        // The CPUs after this one, wrapping around, without a division per step: the first halted
        // one met is the one to kick, and the busiest is the first met of those equally busy.
        let mut c = me;
        loop {
            c = if c + 1 == n { 0 } else { c + 1 };
            if c == me {
                break;
            }
            // SAFETY: `c < n`: it starts at `me`, the calling CPU's index, which `this_cpu` checked
            // against `n` for the tick that calls this, and it wraps to 0 at `n`. Unchecked: the
            // wrap-around already keeps it in bounds, and the test would be repeated per CPU.
            let q = unsafe { &cpus.get_unchecked(c).queue };
            let is_halted = q.halted_hint();
            // `load_hint`, with the halted flag read once for both uses.
            let load = q.len_hint() + usize::from(!(is_halted || q.polling_hint()));
            if load > busiest.0 {
                busiest = (load, c);
            }
            if is_halted && halted == me {
                halted = c;
            }
        }
        let (load, victim) = busiest;
        if load >= mine + 2 {
            self.pull_from(me, victim);
        }
        if halted == me || here.len_hint() == 0 {
            return;
        }
        let idle = halted;
        if here.has_migratable() && cpus[idle].queue.kick_if_halted() {
            self.platform.send_resched(CpuIndex(idle as u32));
            bump(&cpu.counters.ipis_sent);
        }
    }

    /// The pull of `balance` from CPU `victim`, the busiest: out of line and cold, so
    /// that the balancing that finds the CPUs even (most of it) keeps a small frame.
    #[cold]
    #[inline(never)]
    fn pull_from(&self, me: usize, victim: usize) {
        let from = &self.cpus[victim];
        if let Some(t) = from.queue.steal(me) {
            // A pull is a steal by a busy CPU: the trace says so, or the thread's next switch-in
            // here would look like a thread appearing on a CPU it was never sent to.
            self.platform.trace(|| TraceEvent::Steal {
                // SAFETY: a stolen thread is valid and ours now.
                thread: unsafe { t.as_ref() }.id,
                victim: CpuIndex(victim as u32),
            });
            // SAFETY: as in `steal_into`: `steal` made the thread ours and it is on no queue.
            let info = unsafe { self.cpus[me].queue.activate(t) };
            debug_assert!(!info.kick, "a busy CPU's queue is not halted");
            self.cpus[me].counters.migrations_in.fetch_add(1, Ordering::Relaxed);
            bump(&self.cpus[me].counters.balance_pulls);
            from.counters.migrations_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Steal one migratable thread from another CPU's queue into ours.
    ///
    /// A CPU still halted (or polling before its halt) with one thread queued is passed over:
    /// whoever queued it there has kicked it (`enqueued` claims the kick for every push onto a
    /// halted queue; a polling CPU sees the push itself), so it runs the thread in a moment. Taking its lock only to look would make it wait for the lock
    /// on its way out of the halt, which is the hand-off of every cross-CPU wake-up.
    fn steal_into(&self, me: usize) -> bool {
        // The CPUs after this one, wrapping around, without a division; the slice is read once
        // (the queue hints' atomics would make the compiler reload it per CPU).
        let cpus: &[Cpu] = &self.cpus;
        let n = cpus.len();
        let mut c = me;
        loop {
            c += 1;
            if c >= n {
                c = 0;
            }
            if c == me {
                return false;
            }
            let victim = &cpus[c];
            let queued = victim.queue.len_hint();
            if queued == 0 || (queued == 1 && victim.queue.idle_hint()) {
                continue;
            }
            if let Some(t) = victim.queue.steal(me) {
                self.platform.trace(|| TraceEvent::Steal {
                    // SAFETY: a stolen thread is valid and ours now (see below).
                    thread: unsafe { t.as_ref() }.id,
                    victim: CpuIndex(c as u32),
                });
                // SAFETY: a queued thread is valid; `steal` made it ours (cpu = me) and it is on no
                // queue; it may still be on_cpu on the victim, which `switch_to` waits for.
                let info = unsafe { self.cpus[me].queue.activate(t) };
                debug_assert!(!info.kick, "the thief's own queue is not halted");
                self.cpus[me].counters.migrations_in.fetch_add(1, Ordering::Relaxed);
                victim
                    .counters
                    .migrations_out
                    .fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
    }

    /// Whether `steal_into` on CPU `me` may find a thread (the queue hints, read without locks):
    /// another CPU has threads queued, unless it is one idle with one thread (see `steal_into`).
    fn stealable_elsewhere(&self, me: usize) -> bool {
        self.cpus.iter().enumerate().any(|(c, victim)| {
            let queued = victim.queue.len_hint();
            c != me && queued != 0 && !(queued == 1 && victim.queue.idle_hint())
        })
    }

    /// Block the running thread (its state is already `Blocked`; interrupts disabled). Returns once
    /// it has been woken and runs again.
    ///
    /// The switch path inlined with its reason a constant, as in `yield_now`: every hand-off
    /// through a wait queue or a parker comes here, and a constant reason leaves out the dispatch
    /// on it and the steps a block does not take.
    #[inline(never)]
    pub(crate) fn block(&self) {
        self.switch_path(Reason::Block);
    }

    /// [`Scheduler::block`] in its caller's frame: for a hand-off's wait in a system call whose
    /// frame already saves the callee-saved registers, which then pays no call, no saves and no
    /// restores for the block.
    #[inline(always)]
    pub(crate) fn block_inline(&self) {
        self.switch_path(Reason::Block);
    }

    /// Wake a blocked thread (interrupts disabled).
    ///
    /// # Safety
    /// `t` stays valid for the call (see `rq::wake`).
    ///
    /// The steps of [`Scheduler::wake_thread_deferred`] and [`Scheduler::send_kick`] without the
    /// [`Kick`] between them: the outcome goes straight to the kick, with no record to build and
    /// read back.
    pub(crate) unsafe fn wake_thread(&self, t: NonNull<Thread>) -> bool {
        // SAFETY: the caller's guarantee.
        unsafe { self.wake_thread_inline(t) }
    }

    /// [`Scheduler::wake_thread`] in its caller's frame: for a hand-off's waker whose frame
    /// already saves the registers the wake needs (a pipe's one-byte write), which then pays no
    /// call, no saves and no restores for it.
    ///
    /// # Safety
    /// As for [`Scheduler::wake_thread`].
    #[inline(always)]
    pub(crate) unsafe fn wake_thread_inline(&self, t: NonNull<Thread>) -> bool {
        // Two copies of one body. With tracing off, nothing is called under the queue lock, and
        // the one call left, `after_enqueue`, comes last: the common wake saves no registers. A
        // record under the lock would keep the thread and the queue live across a call on every
        // wake, traced or not.
        if self.platform.tracing() {
            // SAFETY: the caller's guarantee.
            unsafe { self.wake_thread_traced(t) }
        } else {
            // SAFETY: the caller's guarantee.
            unsafe { self.wake_thread_with(t, false) }
        }
    }

    /// [`Scheduler::wake_thread`] while the trace is on: out of line, so that its saves stay
    /// out of the untraced wake.
    ///
    /// # Safety
    /// As for [`Scheduler::wake_thread`].
    #[cold]
    #[inline(never)]
    unsafe fn wake_thread_traced(&self, t: NonNull<Thread>) -> bool {
        // SAFETY: the caller's guarantee.
        unsafe { self.wake_thread_with(t, true) }
    }

    /// The body of [`Scheduler::wake_thread`]; `traced`: record the wake-up (a constant in both
    /// copies).
    ///
    /// # Safety
    /// As for [`Scheduler::wake_thread`].
    #[inline(always)]
    unsafe fn wake_thread_with(&self, t: NonNull<Thread>, traced: bool) -> bool {
        let me = self.this_cpu();
        // Taken before the wake, whose atomics would make the compiler check the index again.
        let counters = &*self.cpus[me].counters;
        let wakeups = &counters.wakeups;
        let woke = if traced {
            // SAFETY: the caller's guarantee.
            unsafe { self.wake_noting_on(t) }
        } else {
            // SAFETY: the caller's guarantee.
            unsafe { crate::rq::wake_noting(|c| &*self.cpus[c].queue, t, |_, _| {}) }
        };
        match woke {
            Wake::NotBlocked => false,
            Wake::Running => {
                bump(wakeups);
                true
            }
            Wake::Enqueued { cpu, info } => {
                bump(wakeups);
                // Inline, it tests the target and the count once: a hand-off onto our own queue
                // with nobody else waiting there returns at its first tests.
                self.after_wake_enqueue(me, counters, cpu, info, || {
                    // SAFETY: valid for the call (caller).
                    unsafe { t.as_ref() }.entity.is_pinned()
                });
                true
            }
        }
    }

    /// Make `t` runnable on its CPU (`rq::wake_noting`), tracing the wake-up under that CPU's
    /// queue lock.
    ///
    /// # Safety
    /// As for [`Scheduler::wake_thread`].
    #[inline(always)]
    unsafe fn wake_noting_on(&self, t: NonNull<Thread>) -> Wake {
        let note = |cpu: usize, queued: bool| {
            self.platform.trace(|| TraceEvent::Wakeup {
                // SAFETY: valid for the call (caller).
                thread: unsafe { t.as_ref() }.id,
                target: CpuIndex(cpu as u32),
                queued,
            })
        };
        // SAFETY: valid for the call (caller).
        unsafe { crate::rq::wake_noting(|c| &*self.cpus[c].queue, t, note) }
    }

    /// [`Scheduler::wake_thread`] without its last step: the thread is runnable on its CPU, and
    /// the returned [`Kick`] (`None`: it was not blocked) says whom to interrupt, which the caller
    /// does with [`Scheduler::send_kick`] once it has dropped the lock it woke the thread under.
    /// A waker that sends the IPI holding that lock makes the woken thread, on the CPU it kicked,
    /// spin on the lock until the waker lets go; under a hypervisor the IPI's wake-up of the
    /// target vCPU can deschedule the waker right there, and that spin then lasts a host slice.
    /// Interrupts stay disabled from the wake to the kick (so the target is kicked at once).
    ///
    /// # Safety
    /// As for [`Scheduler::wake_thread`]; the kick itself touches no thread.
    #[inline(always)]
    pub(crate) unsafe fn wake_thread_deferred(&self, t: NonNull<Thread>) -> Option<Kick> {
        let me = self.this_cpu();
        // Taken before the wake, whose atomics would make the compiler check the index again (as
        // in `wake_thread_with`).
        let wakeups = &self.cpus[me].counters.wakeups;
        // SAFETY: valid for the call (caller).
        match unsafe { self.wake_noting_on(t) } {
            Wake::NotBlocked => None,
            Wake::Running => {
                bump(wakeups);
                Some(Kick(None))
            }
            Wake::Enqueued { cpu, info } => {
                bump(wakeups);
                // SAFETY: as above.
                let pinned = unsafe { t.as_ref() }.entity.is_pinned();
                Some(Kick(Some((me, cpu, info, pinned))))
            }
        }
    }

    /// The last step of a wake from [`Scheduler::wake_thread_deferred`], on the same CPU with
    /// interrupts still disabled since.
    #[inline]
    pub(crate) fn send_kick(&self, kick: Kick) {
        if let Kick(Some((me, cpu, info, pinned))) = kick {
            // The common wake of a hand-off, a thread made runnable on our own queue with nobody
            // else waiting there, needs nothing more (see `after_enqueue`): no call for it.
            if cpu == me && info.queued < 2 {
                return;
            }
            self.after_wake_enqueue(me, &self.cpus[me].counters, cpu, info, || pinned);
        }
    }

    /// After CPU `me` made a thread runnable on `target`: kick `target` out of its halt, or, if it
    /// is busy and the thread may migrate, kick a halted CPU so it steals the thread. Our own queue
    /// gets a steal kick only once two threads wait there, so a thread that wakes another and then
    /// blocks does not scatter the pair.
    #[inline(never)]
    fn after_enqueue(&self, me: usize, target: usize, info: Enqueued, pinned: bool) {
        self.after_wake_enqueue(me, &self.cpus[me].counters, target, info, || pinned);
    }

    /// [`Scheduler::after_enqueue`] inline, for the wake paths, given `me`'s counters (which the
    /// wake found already), and `pinned` asked only once the thread may be stolen. Each call it
    /// makes is its last step: a wake that ends here keeps nothing live across a call, so it saves
    /// no registers for it, and `info` stays in registers rather than going through the frame.
    #[inline(always)]
    fn after_wake_enqueue(
        &self,
        me: usize,
        counters: &CpuCounters,
        target: usize,
        info: Enqueued,
        pinned: impl FnOnce() -> bool,
    ) {
        if target != me {
            if info.kick {
                // Counted before the send, which is then the last step.
                bump(&counters.ipis_sent);
                self.platform.send_resched(CpuIndex(target as u32));
                return;
            }
            bump(&counters.ipis_avoided);
            if info.halted {
                return;
            }
        } else if info.queued < 2 {
            return;
        }
        if pinned() || self.cpus.len() < 2 {
            return;
        }
        self.kick_halted_for(me, target);
    }

    /// [`Scheduler::after_enqueue`]'s steal kick: the first halted CPU after `target` (not `me`),
    /// if any, is kicked so it steals.
    #[inline(never)]
    fn kick_halted_for(&self, me: usize, target: usize) {
        let n = self.cpus.len();
        for k in 1..n {
            let c = (target + k) % n;
            if c != me && self.cpus[c].queue.halted_hint() && self.cpus[c].queue.kick_if_halted() {
                bump(&self.cpus[me].counters.ipis_sent);
                self.platform.send_resched(CpuIndex(c as u32));
                return;
            }
        }
    }

    /// Program this CPU's timer for `deadline_ns` (`NEVER`: off), unless it already is.
    #[inline]
    fn arm(&self, cpu: &Cpu, deadline_ns: u64) {
        let armed = &cpu.local.armed_ns;
        if armed.load(Ordering::Relaxed) != deadline_ns {
            armed.store(deadline_ns, Ordering::Relaxed);
            self.platform
                .arm_timer((deadline_ns != NEVER).then_some(deadline_ns));
        }
    }

    /// [`Scheduler::arm`], with `now_ns` a clock reading this CPU took a little earlier, which the
    /// platform may count the delay from ([`Platform::arm_timer_from`]).
    #[inline]
    fn arm_from(&self, cpu: &Cpu, deadline_ns: u64, now_ns: u64) {
        let armed = &cpu.local.armed_ns;
        if armed.load(Ordering::Relaxed) != deadline_ns {
            armed.store(deadline_ns, Ordering::Relaxed);
            if deadline_ns == NEVER {
                self.platform.arm_timer(None);
            } else {
                self.platform.arm_timer_from(deadline_ns, now_ns);
            }
        }
    }

    /// Wake this CPU's sleepers whose deadline is `<= now_ns` (interrupts disabled); returns the
    /// earliest deadline left (`next_sleeper_ns` as it leaves it: the tick arms for it without
    /// loading it again). Inline: the tick and the preemption that follows it each ask, and mostly
    /// nobody is due.
    #[inline]
    fn expire_sleepers(&self, me: usize, cpu: &Cpu, now_ns: u64) -> u64 {
        let next = cpu.local.next_sleeper_ns.load(Ordering::Relaxed);
        if now_ns >= next {
            return self.expire_due_sleepers(me, now_ns);
        }
        next
    }

    /// [`Scheduler::expire_sleepers`] once one is due.
    #[inline(never)]
    fn expire_due_sleepers(&self, me: usize, now_ns: u64) -> u64 {
        let cpu = &self.cpus[me];
        let mut sleepers = cpu.sleepers.lock();
        while let Some(Reverse(top)) = sleepers.heap.peek() {
            if top.deadline_ns > now_ns {
                break;
            }
            let Some(Reverse(entry)) = sleepers.heap.pop() else {
                break;
            };
            // SAFETY: the sleeper stays inside `sleep_ns` or `block_until` until it sees
            // `sleep_fired` or takes its entry out under this lock, which we hold; so it is alive, here and in `wake_thread`.
            unsafe {
                entry
                    .thread
                    .as_ref()
                    .sleep_fired
                    .store(true, Ordering::Relaxed);
                self.wake_thread(entry.thread);
            }
        }
        let next = sleepers
            .heap
            .peek()
            .map_or(NEVER, |Reverse(e)| e.deadline_ns);
        cpu.local.next_sleeper_ns.store(next, Ordering::Relaxed);
        next
    }

    /// The switch path (interrupts disabled). Returns when the calling thread runs again.
    ///
    /// The clock is read only where it is needed: when this CPU has a sleeper (to expire it), when
    /// the idle thread hands over (to arm the slice tick) and on a preemption (to stamp the next
    /// slice). On a voluntary switch otherwise, the incoming thread's slice is left `UNSTAMPED`
    /// for the next tick to date (see `timer_interrupt`).
    #[inline(never)]
    fn schedule(&self, reason: Reason) {
        self.switch_path(reason);
    }

    /// The body of [`Scheduler::schedule`], inlined where the reason is a constant (`yield_now`,
    /// `schedule_preempt`) so that the tests of the reason fold away.
    #[inline(always)]
    fn switch_path(&self, reason: Reason) {
        self.switch_path_on(self.this_cpu_state(), reason);
    }

    /// [`Scheduler::switch_path`] on `cpu`, the calling CPU's state (interrupts disabled).
    #[inline(always)]
    fn switch_path_on(&self, cpu: &Cpu, reason: Reason) {
        if matches!(
            reason,
            Reason::Yield | Reason::Block | Reason::Exit | Reason::Migrate(_)
        ) {
            // A caller's bug, not a state the switch could mend: checked in debug builds (and by
            // the tests), as Linux's `schedule_debug` checks it only where configured to.
            debug_assert!(
                cpu.local.preempt_count.load(Ordering::Relaxed) == 0,
                "a thread yielded, blocked or exited with preemption disabled"
            );
            if reason == Reason::Yield {
                bump(&cpu.counters.voluntary_yields);
            }
        }
        let now = match reason {
            // Only the tick asks for a preemption, and it has just expired the sleepers due by
            // the clock it read then; a later one is due no earlier than the timer it armed.
            Reason::Preempt => Some(cpu.local.resched_ns.load(Ordering::Relaxed)),
            // The idle loop has just done the same with its own reading (no clock read here).
            Reason::Idle(now) => Some(now),
            // A sleeper here: the rare case, out of line with its own copy of the rest, so that
            // the common one carries no clock reading at all.
            _ if cpu.local.next_sleeper_ns.load(Ordering::Relaxed) != NEVER => {
                return self.switch_path_expiring(cpu, reason);
            }
            _ => None,
        };
        self.switch_path_at(cpu, reason, now);
    }

    /// The switch path on CPU `me` (the calling one) with this CPU's sleepers expired first, by a
    /// clock reading that then serves as the switch's accounting point: the rare case of
    /// [`Scheduler::switch_path_on`], kept out of line so the common one stays short.
    #[cold]
    #[inline(never)]
    fn switch_path_expiring(&self, cpu: &Cpu, reason: Reason) {
        let now = self.platform.now_ns();
        self.expire_sleepers(cpu.local.index, cpu, now);
        self.switch_path_at(cpu, reason, Some(now));
    }

    /// The rest of the switch path on CPU `me` (the calling one, whose state is `cpu`), from the
    /// clock reading `now` it was given, if any.
    #[inline(always)]
    fn switch_path_at(&self, cpu: &Cpu, reason: Reason, now: Option<u64>) {
        self.switch_path_from(cpu, reason, now, None, true);
    }

    /// [`Scheduler::switch_path_at`]; `tick_prev`: the tick's preemption, which passes the
    /// interrupted thread it holds (this CPU's current thread, not the idle thread) and has made
    /// an accounting point for it at a clock no earlier than `now`, so the switch makes none.
    /// `split_idle_yield`: a yield finds the idle thread running (rare) and takes an out-of-line
    /// copy of this path (`idle_yield`), so that the common one, where `prev` is not the idle
    /// thread as a constant, tests `prev == idle` once.
    #[inline(always)]
    fn switch_path_from(&self, cpu: &Cpu, reason: Reason, now: Option<u64>, tick_prev: Option<&Thread>, split_idle_yield: bool) {
        // This CPU's index, read where a step needs it (most need only `cpu`).
        let me = || cpu.local.index;
        let idle = cpu.local.idle.load(Ordering::Relaxed);
        // The idle loop's switch runs on the idle thread, the tick's on a thread that is not it:
        // said as constants, so that the tests of `prev == idle` below fold away on those paths.
        let (prev, prev_is_idle) = if matches!(reason, Reason::Idle(_)) {
            debug_assert_eq!(cpu.local.current.load(Ordering::Relaxed), idle, "schedule_idle off the idle thread");
            (idle, true)
        } else if let Some(t) = tick_prev {
            let t = core::ptr::from_ref(t).cast_mut();
            debug_assert_eq!(cpu.local.current.load(Ordering::Relaxed), t, "the tick's thread is not current");
            debug_assert_ne!(t, idle, "the tick preempts no idle thread");
            (t, false)
        } else if matches!(reason, Reason::Block) {
            // Every caller of `block` is a thread that waits (`current_blockable`, or a parker,
            // which never names an idle thread): not the idle thread, as a constant.
            let prev = cpu.local.current.load(Ordering::Relaxed);
            debug_assert_ne!(prev, idle, "the idle thread blocked");
            (prev, false)
        } else if matches!(reason, Reason::Yield) && split_idle_yield {
            let prev = cpu.local.current.load(Ordering::Relaxed);
            if prev == idle {
                return self.idle_yield(cpu, now);
            }
            (prev, false)
        } else {
            let prev = cpu.local.current.load(Ordering::Relaxed);
            (prev, prev == idle)
        };
        cpu.local.need_resched.store(false, Ordering::Relaxed);
        let prev_nn = if P::CPU_WORD {
            debug_assert!(!prev.is_null(), "scheduling on a CPU that has not joined the scheduler");
            // SAFETY: with the per-CPU word every path here runs on a CPU that has joined: the
            // ones through `this_cpu_state` checked its word, which `run_cpu` sets only while the
            // CPU's `current` is set, and the idle loop and the tick run only there; `current` is
            // never null in between (every switch stores a thread).
            unsafe { NonNull::new_unchecked(prev) }
        } else {
            NonNull::new(prev).expect("scheduling on a CPU that has not joined the scheduler")
        };
        let next = {
            let mut rq = cpu.queue.lock();
            let picked = match reason {
                // SAFETY: `prev` runs on this CPU, is alive, `Running` (it called
                // `set_current_affinity` with interrupts off) and not the idle thread.
                Reason::Migrate(target) => match unsafe { rq.migrate_prev_pick_next(prev_nn, target) } {
                    Some(next) => Pick::Next(next),
                    None => Pick::Idle,
                },
                // SAFETY: `prev` runs on this CPU and is alive.
                _ => unsafe {
                    rq.put_prev_pick(prev_nn, prev_is_idle, matches!(reason, Reason::Yield | Reason::Preempt))
                },
            };
            // A block with nothing else to run here, no sleeper and no trace (which would have
            // to show a switch): the thread halts in place, out of line (`block_halting`).
            if matches!(reason, Reason::Block) && matches!(picked, Pick::Idle) && now.is_none() && !self.platform.tracing() {
                drop(rq);
                self.block_halting(me(), cpu, prev_nn, idle);
                return;
            }
            // Under the queue lock, so a thief that takes `prev` next reports after this. The
            // record takes copies (`move`): a closure borrowing the locals would keep them in
            // memory, reloaded all along the switch path, for a record that is mostly off.
            let trace_switch = move |next: *mut Thread| {
                self.platform.trace(move || {
                    // SAFETY: `prev` is us; `next` was on our queue or is our idle thread: both
                    // alive.
                    let (p, n) = unsafe { (&*prev, &*next) };
                    TraceEvent::Switch {
                        prev: p.id,
                        next: n.id,
                        reason: reason.traced(),
                        prev_queued: !prev_is_idle && p.entity.state() == State::Running,
                        prev_idle: prev_is_idle,
                        next_idle: next == idle,
                    }
                });
            };
            // The thread to switch to (`None`: `prev` runs on), never `prev` itself. Only a `Next`
            // took a thread off the queue: after the others its length hint is still right, and
            // the unlock leaves it (each arm unlocks, so that no flag is tested for it later).
            match picked {
                Pick::Prev => {
                    rq.unlock_same_len();
                    None
                }
                Pick::Swapped(next) => {
                    trace_switch(next.as_ptr());
                    rq.unlock_same_len();
                    Some(next.as_ptr())
                }
                Pick::Next(next) => {
                    trace_switch(next.as_ptr());
                    drop(rq);
                    Some(next.as_ptr())
                }
                Pick::Idle => {
                    trace_switch(idle);
                    rq.unlock_same_len();
                    Some(idle)
                }
            }
        };
        if let Reason::Migrate(target) = reason {
            // SAFETY: `prev` is alive (it is us), on no queue, and belongs to `target` now; it is
            // still running here, which `target`'s picker waits out through `on_cpu`.
            let info = unsafe { self.cpus[target].queue.activate(prev_nn) };
            self.platform.trace(|| TraceEvent::Migrate {
                // SAFETY: `prev` is alive: it is the calling thread.
                thread: unsafe { prev_nn.as_ref() }.id,
                from: CpuIndex(me() as u32),
                to: CpuIndex(target as u32),
            });
            self.after_enqueue(me(), target, info, true);
            cpu.counters.migrations_out.fetch_add(1, Ordering::Relaxed);
            self.cpus[target]
                .counters
                .migrations_in
                .fetch_add(1, Ordering::Relaxed);
        }
        let Some(next) = next else {
            if let Some(now) = now {
                cpu.local.slice_start_ns.store(now, Ordering::Relaxed);
            }
            return;
        };
        if let Reason::Idle(now) = reason {
            // The accounting point of the idle thread: nothing reads its `run_ns` and it has no
            // space to charge, so only the point moves (the halts are counted in `idle_ns`).
            cpu.local.acct_ns.store(now, Ordering::Relaxed);
        } else if tick_prev.is_none()
            && let Some(now) = now
        {
            // An accounting point for free: the clock was read anyway. Without one, what `prev`
            // ran goes to whoever runs at the next point (see the module doc).
            // SAFETY: `prev` is alive and running here (it is us).
            Self::account(cpu, unsafe { &*prev }, now);
        }
        cpu.local
            .slice_start_ns
            .store(now.unwrap_or(UNSTAMPED), Ordering::Relaxed);
        if prev_is_idle && next != idle {
            if let Reason::Idle(now) = reason {
                // The idle thread's own path (`schedule_idle`): inline, with the clock in hand.
                self.arm_leaving_idle_at(cpu, now);
            } else {
                self.arm_leaving_idle(me(), now);
            }
        }
        // SAFETY: `prev` is alive (it is us); `next` was on our queue (alive, owned by us now) or is
        // our idle thread.
        let from = unsafe { self.switch_to(cpu, &*prev, &*next) };
        // `finish_switch`, with its reaping and the pending affinity change both behind one rare
        // branch, so the common switch keeps nothing of them in line.
        // SAFETY: `from` is what the switch that resumed us handed over.
        let dead = unsafe { Self::release_from(from) };
        // SAFETY: `prev` is the calling thread, running again.
        let me_thread = unsafe { &*prev };
        if dead || me_thread.affinity_pending.load(Ordering::Relaxed) {
            // SAFETY: as for `release_from`, which found `from` dead if `dead`.
            unsafe { self.after_switch_rare(from, dead, me_thread) };
        }
    }

    /// The switch path of a yield that found the idle thread running (or, without the per-CPU
    /// word, no thread at all), out of line: see `switch_path_from`.
    #[cold]
    #[inline(never)]
    fn idle_yield(&self, cpu: &Cpu, now: Option<u64>) {
        self.switch_path_from(cpu, Reason::Yield, now, None, false);
    }

    /// The rare end of a switch (see `switch_path_from`): reap `from` if `dead`, then take
    /// `me_thread`'s pending affinity change, if any.
    ///
    /// # Safety
    /// As for [`Scheduler::reap`] if `dead`; `me_thread` is the calling thread.
    #[cold]
    #[inline(never)]
    unsafe fn after_switch_rare(&self, from: *const Thread, dead: bool, me_thread: &Thread) {
        if dead {
            // SAFETY: the caller's.
            unsafe { self.reap(from) };
        }
        if me_thread.affinity_pending.load(Ordering::Relaxed) {
            self.take_pending_affinity(me_thread);
        }
    }

    /// The rest of the switch path of a block that found nothing else to run on CPU `me` (the
    /// calling one, whose state is `cpu`), with no sleeper there and no trace on: the thread
    /// halts in place ([`Scheduler::halt_in_place`]) and runs on if it was woken meanwhile, or
    /// switches to the idle thread. Out of line, so
    /// that the block that finds a thread to run (every hand-off on one CPU) keeps its code.
    #[inline(never)]
    fn block_halting(&self, me: usize, cpu: &Cpu, prev: NonNull<Thread>, idle: *mut Thread) {
        let (next, now) = self.halt_in_place(me, cpu, prev, idle);
        cpu.local.slice_start_ns.store(now, Ordering::Relaxed);
        // SAFETY: `prev` is the calling thread, alive.
        let prev = unsafe { prev.as_ref() };
        if !core::ptr::eq(next, prev) {
            // The halt's clock is already the accounting point (`halt_in_place`): `prev` is
            // charged nothing more, as the switch path charges a block that reads no clock.
            // SAFETY: `prev` is alive and running here (it is us); `next` is our idle thread.
            let from = unsafe { self.switch_to(cpu, prev, &*next) };
            // SAFETY: `from` is what the switch that resumed us handed over.
            unsafe { self.finish_switch(from) };
        }
        // Running again, switched in or never switched out: a mask another thread set meanwhile
        // is taken now, as at the end of every switch.
        if prev.affinity_pending.load(Ordering::Relaxed) {
            self.take_pending_affinity(prev);
        }
    }

    /// The block of `prev` on CPU `me` (the calling one, whose state is `cpu`; interrupts
    /// disabled) found nothing else to run here: rather than switch to the idle thread, which would
    /// halt and then switch back to `prev` once it is woken, run one turn of the idle loop right
    /// here on `prev`'s stack: unless another CPU has work to steal, halt until an interrupt. When
    /// `prev` is then next in turn here (woken during the halt: every hand-off between two threads
    /// on two CPUs) it runs on with no switch at all, its registers, extended state, space, FS
    /// base and kernel stack still in place.
    ///
    /// While it halts the CPU is idle in all but the stack: `current` is the idle thread, so the
    /// tick and the reschedule IPI see an idle CPU (they neither charge nor preempt the blocked
    /// thread); the time from here to the end of the halt counts in `idle_ns`, and the accounting
    /// point moves past it, as the idle thread's switch would move it; the timer is off (no
    /// sleeper here, the caller checked); the space stays loaded lazily, as the idle loop leaves
    /// it (`idle_wait`, `mm_after_idle`); and the queue is marked halted, so enqueuers kick.
    ///
    /// The halt waits for `prev` only while it is blocked (`try_halt_blocked`): once it is woken,
    /// a thief may take it and wait for its `on_cpu`, which only a switch away from it clears.
    ///
    /// One halt only: when it ends with `prev` not next in turn (a stray interrupt, a kick to
    /// steal, another thread queued first, or `prev` stolen by another CPU once woken), the caller
    /// switches to the idle thread, whose loop does the rest (picking, stealing, sleepers,
    /// balancing, `stop`). `prev` stays `on_cpu` all along, so a thief that took it waits for that
    /// switch, which comes next and waits for no other CPU.
    ///
    /// Returns the thread to run next (`prev` or the idle thread) and the clock read after the
    /// halt, the accounting point; for `prev`, the slice tick is armed from it.
    #[inline(always)]
    fn halt_in_place(&self, me: usize, cpu: &Cpu, prev: NonNull<Thread>, idle: *mut Thread) -> (*mut Thread, u64) {
        let local = &cpu.local;
        local.current.store(idle, Ordering::Relaxed);
        let start = self.platform.now_ns();
        // Work to steal elsewhere (a hint): the idle thread steals it, at once. This CPU does not
        // steal here: it holds `prev`'s `on_cpu`, and a thread it stole could be another CPU's
        // woken `prev`, held the same way by a CPU that may be stealing this one's: each would
        // wait for the other's.
        let mut halted = false;
        if !self.stealable_elsewhere(me) {
            if local.active_mm.load(Ordering::Relaxed) != 0 && self.platform.leave_mm_idle() {
                local.set_active_mm(0);
            }
            // The slice tick of `prev` is off: no sleeper here (the caller's `now` was `None`).
            self.arm(cpu, NEVER);
            // A poll that sees the queue fill (`prev` woken, which pushes it here, or another
            // thread queued) skips the halt; `try_halt_blocked` checks again under the lock.
            // SAFETY: `prev` is the calling thread, alive.
            if !self.idle_poll(cpu, start) && unsafe { cpu.queue.try_halt_blocked(prev) } {
                self.platform.idle_wait();
                if self.platform.mm_after_idle() {
                    local.set_active_mm(0);
                }
                cpu.queue.unhalt();
                halted = true;
            }
        }
        let now = self.platform.now_ns();
        if halted {
            self.adapt_idle_poll(cpu, now.saturating_sub(start));
        }
        add(&cpu.counters.idle_ns, now.saturating_sub(start));
        local.acct_ns.store(now, Ordering::Relaxed);
        // Only `prev` itself, and only if it is next in turn; anything else is the idle thread's
        // to pick, after the switch to it has cleared `prev`'s `on_cpu`: a thread queued here may
        // still be `on_cpu` elsewhere (pulled here by a balancing), and this CPU must not wait for
        // it holding `prev` (see above).
        let next = if cpu.queue.lock().pop_if_oldest(prev) { prev.as_ptr() } else { idle };
        local.current.store(prev.as_ptr(), Ordering::Relaxed);
        if next == prev.as_ptr() {
            self.arm_leaving_idle_at(cpu, now);
            // SAFETY: `prev` is the calling thread, alive and runnable here again.
            if let Some(mm) = unsafe { prev.as_ref().mm() } {
                let active = local.active_mm.load(Ordering::Relaxed);
                if active != mm.word().get() {
                    // The space was left during the halt: load it again, as a switch in would.
                    self.platform.switch_mm(NonZeroUsize::new(active), mm);
                    local.set_active_mm(mm.word().get());
                }
            }
        }
        (next, now)
    }

    /// Before a halt of CPU `cpu` (the calling one, interrupts disabled, its queue empty a moment
    /// ago), idle since `start`: poll the queue for up to this CPU's poll limit, and return whether
    /// work came. A wake-up that finds the CPU polling sends no IPI (the poll is not a halt, so
    /// `enqueued` claims no kick), and the woken thread runs a few instructions after its push
    /// instead of after the IPI's delivery and the halt's end: on a hypervisor, or under QEMU,
    /// that halt and its wake-up cost the host a thread wake-up each, which dwarfs a hand-off.
    /// The price is the CPU time of the poll, which the adaptation keeps to idle periods that
    /// are short (see `adapt_idle_poll`). Interrupts are let in between two looks at the queue
    /// (`Platform::idle_poll_relax`), as a halt lets them in: the CPU is idle all along, so an
    /// interrupt handled here preempts nothing.
    ///
    /// The poll is a hint for wakers and thieves only (`CpuQueue::begin_poll`): the halt that may
    /// follow takes the queue lock and checks again, so a push the poll missed is never lost.
    #[inline(always)]
    fn idle_poll(&self, cpu: &Cpu, start: u64) -> bool {
        let limit = cpu.local.idle_poll_ns.load(Ordering::Relaxed).min(self.idle_poll_ns());
        if limit == 0 {
            return false;
        }
        let end = start.saturating_add(limit);
        cpu.queue.begin_poll();
        let found = loop {
            if cpu.queue.len_hint() != 0 {
                break true;
            }
            self.platform.idle_poll_relax();
            if self.platform.now_ns() >= end {
                break cpu.queue.len_hint() != 0;
            }
        };
        cpu.queue.end_poll();
        found
    }

    /// After an idle period of CPU `cpu` (the calling one) that the poll did not end and a halt
    /// did, `idle_ns` long in all: adapt its poll limit as Linux's haltpoll governor does. A halt
    /// that ended within the bound (`Config::idle_poll_ns`) would have been a successful poll with
    /// a longer limit: double the limit (from `IDLE_POLL_GROW_START_NS`), up to the bound
    /// (`Config::idle_poll_ns`, or as [`Scheduler::set_idle_poll_ns`] changed it). A
    /// longer idle period is one a poll only wastes: halve the limit, to 0 below the grow start,
    /// so a CPU that sits idle stops polling after a few of them.
    #[inline]
    fn adapt_idle_poll(&self, cpu: &Cpu, idle_ns: u64) {
        let bound = self.idle_poll_ns();
        if bound == 0 {
            return;
        }
        let limit = &cpu.local.idle_poll_ns;
        let now = limit.load(Ordering::Relaxed);
        let grow_start = IDLE_POLL_GROW_START_NS.min(bound);
        let next = if idle_ns <= bound {
            now.saturating_mul(2).clamp(grow_start, bound)
        } else if now / 2 < grow_start {
            0
        } else {
            now / 2
        };
        if next != now {
            limit.store(next, Ordering::Relaxed);
        }
    }

    /// [`Scheduler::arm_leaving_idle`] on CPU `cpu` (the calling one) with the clock read.
    #[inline(always)]
    fn arm_leaving_idle_at(&self, cpu: &Cpu, now: u64) {
        let next_sleeper = cpu.local.next_sleeper_ns.load(Ordering::Relaxed);
        self.arm_from(
            cpu,
            // No overflow: see `Config::MAX_SLICE_NS`.
            (now + self.config.slice_ns).min(next_sleeper),
            now,
        );
    }

    /// Leaving idle for a thread: the slice tick runs again while a thread does.
    #[inline(never)]
    fn arm_leaving_idle(&self, me: usize, now: Option<u64>) {
        let now = now.unwrap_or_else(|| self.platform.now_ns());
        self.arm_leaving_idle_at(&self.cpus[me], now);
    }

    /// An accounting point on CPU `me` (the calling one, interrupts off) at `now_ns`: charge `t`,
    /// the thread running there, and its space's account with everything since the last point.
    #[inline]
    fn account(cpu: &Cpu, t: &Thread, now_ns: u64) -> u64 {
        let acct = &cpu.local.acct_ns;
        let ran = now_ns.saturating_sub(acct.load(Ordering::Relaxed));
        if ran == 0 {
            return 0;
        }
        acct.store(now_ns, Ordering::Relaxed);
        t.run_ns
            .store(t.run_ns.load(Ordering::Relaxed) + ran, Ordering::Relaxed);
        // SAFETY: `t` is running on this CPU with interrupts off: its own `take_mm` (interrupts
        // off too) is either done or not begun.
        if let Some(mm) = unsafe { t.mm() } {
            mm.charge(ran);
        }
        ran
    }

    /// CPU time of the calling thread, as of now: `(run_ns, uncharged_ns)`, the whole time charged
    /// to it (nanoseconds of the platform clock; the reading is an accounting point, so it charges
    /// the caller up to now first) and the part of it not yet added to its space's account, which
    /// that charge makes 0. So a process clock is its space's account plus `uncharged_ns` of the
    /// caller; other threads of the space running at that moment are behind by at most one tick
    /// each.
    pub fn current_cpu_time(&self) -> (u64, u64) {
        let irq = self.platform.irq_save_disable();
        let cpu = &self.cpus[self.this_cpu()];
        let p = cpu.local.current.load(Ordering::Relaxed);
        let now = self.platform.now_ns();
        // SAFETY: the current thread of this CPU is the caller, alive while it runs; interrupts are
        // off, so its accounting (by this CPU only) does not change under us.
        let time = unsafe { p.as_ref() }.map_or((0, 0), |t| {
            Self::account(cpu, t, now);
            (t.run_ns.load(Ordering::Relaxed), 0)
        });
        self.platform.irq_restore(irq);
        time
    }

    /// Step 3 of the switch path: hand the CPU from `prev` to `next`; returns when
    /// `prev` runs again, with the thread the CPU (maybe another one) switched away from to resume it.
    ///
    /// # Safety
    /// Interrupts disabled; `cpu` is the calling CPU's state; `prev` is the thread running there; `next`
    /// was just picked there (no other CPU will run it) and is not `prev`.
    #[inline(always)]
    unsafe fn switch_to(&self, cpu: &Cpu, prev: &Thread, next: &Thread) -> *const Thread {
        next.entity.wait_off_cpu();
        next.entity.set_on_cpu();
        // Always (a switch has no case where it would not pay): the window's line and the
        // stack slot the switch's `ret` reads.
        // SAFETY: `next` is ours now and its window complete (`wait_off_cpu` synchronised with
        // the end of its last switch), so reading it races with nothing.
        let rsp = unsafe { (*next.window.get()).rsp };
        prefetch(rsp as *const u8);
        cpu.local
            .current
            .store((next as *const Thread).cast_mut(), Ordering::Relaxed);
        // Between two plain kernel threads neither has an FPU area, `next` no space and no user
        // stack: every step below would find nothing to do, so one test of both words skips them.
        if prev.switch_work() | next.switch_work() != 0 {
            // SAFETY: as for this function.
            unsafe { self.switch_state(cpu, prev, next) };
        }
        bump(&cpu.counters.context_switches);
        // SAFETY: interrupts are off; `prev` is the running thread, whose window no other CPU
        // touches until `finish_switch` clears its `on_cpu`; `next` is suspended in a switch or
        // fresh from `Window::new_thread`, with its stack alive, and runs nowhere else (`on_cpu`).
        // The handoff is `prev` itself, which the switch passes on to `next`; what comes back is
        // the thread that later switched to us.
        unsafe {
            switch_window(
                prev.window.get(),
                next.window.get(),
                core::ptr::from_ref(prev) as usize,
            ) as *const Thread
        }
    }

    /// The steps of a switch that a plain kernel thread on both sides skips: the space, extended
    /// state, the user threads' stack and FS and GS bases.
    ///
    /// # Safety
    /// As for `switch_to`.
    #[inline(always)]
    unsafe fn switch_state(&self, cpu: &Cpu, prev: &Thread, next: &Thread) {
        // The space first: the extended-state step asks whether the registers' owner shares the
        // space `next` runs in, which loading another one rules out.
        // SAFETY: `next` is ours until it runs (as for `switch_to`).
        let next_mm = match unsafe { next.mm() } {
            Some(mm) => {
                let word = mm.word().get();
                let active = cpu.local.active_mm.load(Ordering::Relaxed);
                if active != word {
                    self.platform.switch_mm(NonZeroUsize::new(active), mm);
                    cpu.local.set_active_mm(word);
                }
                word
            }
            None => 0,
        };
        if let Some((kind, _)) = self.fpu {
            // SAFETY: `prev` runs here; `next` is ours (as for `switch_to`); `kind` is enabled on
            // every CPU (platform contract).
            unsafe { self.switch_fpu(cpu.local.index, cpu, prev, next, next_mm, kind) };
        }
        let top = next.user_stack_top;
        let prev_user = prev.user_stack_top != 0;
        if top != 0 || prev_user {
            self.platform
                .switch_user(prev_user.then_some(&prev.bases), (top != 0).then_some((top, &next.bases)));
        }
    }

    /// The extended-state step of a switch.
    ///
    /// Eager by default: save the outgoing FPU thread's state, restore the incoming one's unless it
    /// is still live in the registers. Where the platform can trap the first use of the state
    /// ([`Platform::lazy_fpu`]), a user thread that did not use it in its last slices runs with
    /// the trap armed instead, and pays only when it uses the state:
    /// - at switch-out, a thread that ran with the trap still armed never touched its registers:
    ///   its image is current and nothing is saved;
    /// - at switch-in, such a thread runs without its own state if the registers hold the clean
    ///   state or the state of a thread of its own space, which shares all its memory with it
    ///   anyway (Linux draws the same line for its indirect-branch barrier, issued only between
    ///   spaces). Its first use traps to [`Scheduler::fpu_trap`], which restores its state. If
    ///   the registers hold another space's values, they are first replaced with the clean state:
    ///   left there, they would be readable, speculatively, by the incoming thread (LazyFP,
    ///   CVE-2018-3665).
    ///
    /// Threads that pass the CPU back and forth without vector code (a `sched_yield`, futex or
    /// pipe ping-pong, within a process or between processes) then switch with no save, no restore
    /// and no change to the trap. A thread that used the state in each of its last
    /// `FPU_HOT_SLICES` slices is restored eagerly with the trap disarmed, as before, so that a
    /// vector-heavy thread takes no trap per slice.
    ///
    /// The eager save and restore go through `arch::fpu::save_switch` and `restore_switch`: with
    /// x87 in its init state (on the CPU, and in the incoming image) they move the vector
    /// registers with plain stores and loads in the standard XSAVE layout, which costs a fraction
    /// of `xsaveopt` plus `xrstor`; anything else takes the instructions.
    ///
    /// # Safety
    /// As for `switch_to`, and `kind` is enabled on this CPU; `next_mm` is the word of `next`'s
    /// space, already loaded here (0 for a thread without one).
    #[inline(always)]
    unsafe fn switch_fpu(&self, me: usize, cpu: &Cpu, prev: &Thread, next: &Thread, next_mm: usize, kind: FpuKind) {
        let local = &cpu.local;
        // Never set where the platform is not lazy: only a lazy switch below arms the trap.
        let armed = local.fpu_trap.load(Ordering::Relaxed);
        // Whether a save below found x87 in its init state on this CPU (and so left it): the
        // restore can then load `next`'s vector registers without reading XINUSE again.
        let mut x87_init = false;
        if let Some(area) = &prev.fpu
            && prev.entity.state() != State::Dead
        {
            if armed {
                // `prev` did not touch the registers since its switch-in: its image is current
                // (and it may run anywhere without them).
                prev.fpu_uses.store(0, Ordering::Relaxed);
            } else {
                // Disarmed while `prev` ran: it owns the registers (restored at its switch-in or by
                // its trap) and may have changed them.
                // SAFETY: only the CPU running or switching a thread touches its area: that is us.
                x87_init = unsafe { fpu::save_switch(&mut *area.get(), kind) };
                if x87_init {
                    bump(&cpu.counters.fpu_fast_saves);
                }
                prev.fpu_cpu.store(me, Ordering::Relaxed);
                prev.fpu_uses
                    .store(prev.fpu_uses.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
                // The registers still hold `prev`'s state, now equal to its image.
                local.fpu_owner.store(prev.id.0, Ordering::Relaxed);
                bump(&cpu.counters.fpu_saves);
            }
        }
        let Some(area) = &next.fpu else { return };
        // `fpu_clean` exists only where the platform is lazy.
        if let Some(clean) = &self.fpu_clean
            && next_mm != 0
            && next.fpu_uses.load(Ordering::Relaxed) < FPU_HOT_SLICES
        {
            let shared = local.fpu_owner_mm.load(Ordering::Relaxed);
            if shared != next_mm && shared != FPU_ANY_SPACE {
                // Another space's values, or unknown ones: replace them with the clean state.
                if armed {
                    // `xrstor` traps too while the trap is armed.
                    self.platform.set_fpu_trap(false);
                }
                // SAFETY: `kind` is enabled here and the clean image is valid for it (made for it
                // by `FpuArea::new`, never written).
                unsafe { fpu::restore(clean, kind) };
                local.fpu_owner.store(0, Ordering::Relaxed);
                local.fpu_owner_mm.store(FPU_ANY_SPACE, Ordering::Relaxed);
                bump(&cpu.counters.fpu_restores);
                self.platform.set_fpu_trap(true);
                local.fpu_trap.store(true, Ordering::Relaxed);
            } else if !armed {
                self.platform.set_fpu_trap(true);
                local.fpu_trap.store(true, Ordering::Relaxed);
            }
            bump(&cpu.counters.fpu_lazy_switches);
            return;
        }
        // Eager: the registers must hold `next`'s own state, trap disarmed. They already do if it
        // was the last one restored or saved here and has not been restored elsewhere since.
        if armed {
            self.platform.set_fpu_trap(false);
            local.fpu_trap.store(false, Ordering::Relaxed);
        }
        if local.fpu_owner.load(Ordering::Relaxed) == next.id.0 && next.fpu_cpu.load(Ordering::Relaxed) == me {
            bump(&cpu.counters.fpu_restores_skipped);
        } else {
            // SAFETY: as above; the area holds a valid image (clean, or saved by a switch that
            // `wait_off_cpu` ordered before us). `x87_init` is true only if the save above just
            // found x87 in its init state here; nothing between touched x87 (this path, and the
            // kernel, use no x87 code).
            if unsafe { fpu::restore_switch(&*area.get(), kind, x87_init) } {
                bump(&cpu.counters.fpu_fast_restores);
            }
            local.fpu_owner.store(next.id.0, Ordering::Relaxed);
            local.fpu_owner_mm.store(next_mm, Ordering::Relaxed);
            next.fpu_cpu.store(me, Ordering::Relaxed);
            bump(&cpu.counters.fpu_restores);
        }
    }

    /// The CPU trapped on a use of the extended state while its trap was armed (x86: #NM with
    /// CR0.TS set): give the running thread its state, disarm, and let the use run again. Called by
    /// the platform's handler with interrupts disabled, for a use in user mode or in kernel mode
    /// (kernel code touches the registers only for the running thread: its signal frames, a
    /// clone's copy of them). False when the trap is not the scheduler's (none armed, or the
    /// running thread has no extended state): a fault for the caller to report.
    pub fn fpu_trap(&self) -> bool {
        let (irq, i) = self.platform.irq_save_disable_on();
        let i = i.index();
        let claimed = i < self.cpus.len() && self.fpu_claim(&self.cpus[i], i);
        if claimed {
            bump(&self.cpus[i].counters.fpu_traps);
        }
        self.platform.irq_restore(irq);
        claimed
    }

    /// Give the calling thread the clean extended state, in its area and in the registers
    /// (`execve`: a new image starts clean, as on Linux, and nothing of the old image's state, or
    /// of whatever another thread left in the registers, survives into it). No effect for a thread
    /// without extended state. Only for a platform whose own code never uses the extended
    /// registers (a kernel built without SSE): the registers change under the caller.
    pub fn reset_current_fpu(&self) {
        let Some((kind, _)) = self.fpu else { return };
        let irq = self.platform.irq_save_disable();
        let me = self.this_cpu();
        let local = &self.cpus[me].local;
        // SAFETY: the current thread of this CPU is the caller (interrupts are off, so it stays),
        // alive while it runs.
        if let Some(t) = unsafe { local.current.load(Ordering::Relaxed).as_ref() }
            && let Some(area) = &t.fpu
        {
            if local.fpu_trap.load(Ordering::Relaxed) {
                // `xrstor` traps too while the trap is armed.
                self.platform.set_fpu_trap(false);
                local.fpu_trap.store(false, Ordering::Relaxed);
            }
            // SAFETY: only the CPU running a thread touches its area while it runs.
            let area = unsafe { &mut *area.get() };
            area.clear();
            // SAFETY: `kind` is enabled on every CPU; a cleared area is a valid clean image.
            unsafe { fpu::restore(area, kind) };
            // SAFETY: the running thread reads its own space.
            let mm = unsafe { t.mm() }.map_or(0, |m| m.word().get());
            local.fpu_owner.store(t.id.0, Ordering::Relaxed);
            local.fpu_owner_mm
                .store(if mm == local.active_mm.load(Ordering::Relaxed) { mm } else { 0 }, Ordering::Relaxed);
            t.fpu_cpu.store(me, Ordering::Relaxed);
            t.fpu_uses.store(0, Ordering::Relaxed);
            bump(&self.cpus[me].counters.fpu_restores);
        }
        self.platform.irq_restore(irq);
    }

    /// Disarm this CPU's trap and make the registers hold the running thread's extended state
    /// (interrupts disabled). False if no trap was armed or the thread has no state to claim.
    fn fpu_claim(&self, cpu: &Cpu, me: usize) -> bool {
        let local = &cpu.local;
        let Some((kind, _)) = self.fpu else { return false };
        if !local.fpu_trap.load(Ordering::Relaxed) {
            return false;
        }
        // SAFETY: the current thread of this CPU is the caller (interrupts are off, so it stays),
        // alive while it runs.
        let Some(t) = (unsafe { local.current.load(Ordering::Relaxed).as_ref() }) else { return false };
        let Some(area) = &t.fpu else { return false };
        self.platform.set_fpu_trap(false);
        local.fpu_trap.store(false, Ordering::Relaxed);
        if local.fpu_owner.load(Ordering::Relaxed) != t.id.0 || t.fpu_cpu.load(Ordering::Relaxed) != me {
            // SAFETY: only the CPU running a thread touches its area while it runs, and its image
            // is current (saved at its last switch-out, or unchanged since, `switch_fpu`); `kind`
            // is enabled on every CPU. The registers hold another thread's state, which is in that
            // thread's area already: nothing is lost by overwriting them.
            unsafe { fpu::restore(&*area.get(), kind) };
            // SAFETY: the running thread reads its own space.
            let mm = unsafe { t.mm() }.map_or(0, |m| m.word().get());
            local.fpu_owner.store(t.id.0, Ordering::Relaxed);
            local.fpu_owner_mm
                .store(if mm == local.active_mm.load(Ordering::Relaxed) { mm } else { 0 }, Ordering::Relaxed);
            t.fpu_cpu.store(me, Ordering::Relaxed);
            bump(&cpu.counters.fpu_restores);
        } else {
            bump(&cpu.counters.fpu_restores_skipped);
        }
        true
    }

    /// Step 4 of the switch path, run by the thread the CPU switched to (interrupts disabled):
    /// `from` is the thread the switch that resumed us left, as `switch_to` returned it (or as
    /// `thread_entry` received it).
    ///
    /// # Safety
    /// `from` is the handoff of the switch that resumed the calling thread, and this is the first
    /// `finish_switch` for that switch.
    #[inline]
    unsafe fn finish_switch(&self, from: *const Thread) {
        // SAFETY: the caller's.
        if unsafe { Self::release_from(from) } {
            // SAFETY: `release_from` found it dead.
            unsafe { self.reap(from) };
        }
    }

    /// The first part of [`Scheduler::finish_switch`]: let `from` run elsewhere (clear its
    /// `on_cpu`) and say whether it is dead, for the caller to [`Scheduler::reap`].
    ///
    /// # Safety
    /// As for [`Scheduler::finish_switch`].
    #[inline(always)]
    unsafe fn release_from(from: *const Thread) -> bool {
        debug_assert!(!from.is_null(), "finish_switch without a switch");
        // SAFETY: the `switch_to` that brought us here passed its running thread (a reference, so
        // never null), which is alive until reaped (by us, after this) and which nobody else runs
        // before we clear its `on_cpu`.
        let from_ref = unsafe { &*from };
        let dead = from_ref.entity.state() == State::Dead;
        from_ref.entity.clear_on_cpu();
        dead
    }

    /// The last part of [`Scheduler::finish_switch`] for a `from` that was dead: free its stack
    /// and drop the reference `spawn` made.
    ///
    /// # Safety
    /// `from` is the handoff of the switch that resumed the calling thread, [`Scheduler::release_from`]
    /// found it dead, and this is its only reaping.
    #[inline]
    unsafe fn reap(&self, from: *const Thread) {
        // SAFETY: a dead thread is on no queue and in no wait; its last switch is complete.
        // This drops the reference `spawn` made.
        let thread = unsafe { Arc::from_raw(from) };
        // SAFETY: as above: we are its only reaper.
        if let Some(stack) = unsafe { thread.take_stack() } {
            self.platform.free_stack(stack);
        }
    }
}

/// The address of a thread's result slot, which its `Thread` keeps alive.
struct SlotRef<T>(*const ResultSlot<T>);

// SAFETY: the slot is `Sync` for `T: Send` and outlives the thread that uses the address.
unsafe impl<T: Send> Send for SlotRef<T> {}

/// Where every spawned thread starts (via `arch::switch`'s start trampoline), interrupts disabled.
extern "C" fn thread_entry<P: Platform>(sched: usize, from: usize) -> ! {
    // SAFETY: `spawn` passes the address of the `'static` scheduler.
    let s = unsafe { &*(sched as *const Scheduler<P>) };
    // SAFETY: `from` is the handoff of the switch that started this thread, finished only here.
    unsafe { s.finish_switch(from as *const Thread) };
    let me = s.current_blockable();
    // SAFETY: we are this thread, alive while running.
    let me_thread = unsafe { me.as_ref() };
    if me_thread.affinity_pending.load(Ordering::Relaxed) {
        s.take_pending_affinity(me_thread);
    }
    // SAFETY: we are this thread, alive while running, and take our own body once.
    let body = unsafe { me.as_ref().take_body() }.expect("a thread started twice");
    s.platform.irq_restore(IrqState { enabled: true });
    body.run();
    s.exit_keep();
    s.exit_mm();
    // SAFETY: the body has returned: every value it owned was dropped, and this frame holds none.
    unsafe { s.exit() }
}

/// Keeps preemption disabled on this CPU while it lives (see [`Scheduler::preempt_disable`]).
/// Mirrored, with the tick, in the loom model `tests/loom_wait.rs`.
pub struct PreemptGuard<'a, P: Platform> {
    sched: &'a Scheduler<P>,
    /// Must be dropped on the CPU it was created on.
    _not_send: PhantomData<*const ()>,
}

impl<P: Platform> Drop for PreemptGuard<'_, P> {
    fn drop(&mut self) {
        let s = self.sched;
        let irq = s.platform.irq_save_disable();
        let cpu = &s.cpus[s.this_cpu()];
        let count = cpu.local.preempt_count.load(Ordering::Relaxed) - 1;
        cpu.local.preempt_count.store(count, Ordering::Relaxed);
        if count == 0 && irq.enabled {
            s.preempt_if_needed();
        }
        s.platform.irq_restore(irq);
    }
}
