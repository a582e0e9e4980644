//! A [`Platform`] made of OS threads, so the real scheduler runs natively on a Linux host: the
//! ground for the host tests and the native benchmark.
//!
//! Key items: [`HostPlatform`] (each "CPU" is an OS thread), [`run`] (bring up `nr_cpus` CPUs, run
//! a main thread on the scheduler, shut down, hand back its value and the scheduler for its
//! counters), [`run_on`] (the same on a given platform, e.g. one built `with_trace_hook`),
//! [`tick`] (a stand-in for the timer interrupt).
//!
//! Neighbours: implements `platform::Platform` for `Scheduler`; used by `tests/` and by `bench`.
//!
//! How the machine is modelled:
//! - `cpu_id`, and the scheduler's per-CPU word (`cpu_word`, as the kernel's GS-relative one): a
//!   thread-local read through an `#[inline(never)]` function. Scheduler threads move
//!   between OS threads, so a caller must never reuse a thread-local address computed before a
//!   switch; an opaque call recomputes it every time. (Code running in scheduler threads should not
//!   use thread-locals directly for the same reason.)
//! - interrupts: a per-CPU flag, saved and restored like `rflags.IF` (a plain load and store: only
//!   its own CPU writes it); there are no interrupts, so preemption happens only where a thread
//!   calls [`tick`].
//! - the clock: the kernel's, the TSC scaled by a 32.32 fixed-point factor (here measured once per
//!   process against `Instant`), so the native benchmark times the same clock reads as the kernel.
//! - `send_resched`: unpark the CPU's OS thread; `idle_wait`: park it until the armed timer
//!   deadline, or indefinitely when none is armed (tickless), then expire sleepers on return.
//! - stacks: heap blocks without guard pages; the address-space hook only counts its calls.
//! - extended state: the host CPU's, through `arch::fpu` (XSAVE needs no privilege). Host code is
//!   compiled with SSE and uses vector registers freely, but it only switches at calls, across
//!   which the ABI lets every vector register change; register-level FPU isolation is therefore
//!   tested in `arch::fpu` (save/restore) and by the kernel's own tests, and here only the save and
//!   restore decisions are.

extern crate std;

use crate::platform::{CpuIndex, IrqState, Mm, MmOps, Platform, Stack};
use crate::scheduler::{Config, Scheduler};
use crate::thread::Builder;
use crate::trace::TraceEvent;
use arch::fpu::FpuFeatures;
use core::cell::Cell;
use core::num::NonZeroUsize;
use core::ptr::NonNull;
use crossbeam_utils::CachePadded;
use std::alloc::{Layout, alloc, dealloc};
use std::boxed::Box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};
use std::vec::Vec;

/// No timer armed.
const NEVER: u64 = u64::MAX;
/// Host stacks are page-aligned heap blocks.
const STACK_ALIGN: usize = 4096;

std::thread_local! {
    /// The CPU the calling OS thread is (`u32::MAX`: none).
    static CPU: Cell<u32> = const { Cell::new(u32::MAX) };
    /// The scheduler's word for the CPU the calling OS thread is ([`Platform::cpu_word`]).
    static WORD: Cell<usize> = const { Cell::new(0) };
}

/// The CPU the calling OS thread is. Never inlined: see the module documentation.
#[inline(never)]
fn os_thread_cpu() -> u32 {
    CPU.with(Cell::get)
}

/// The scheduler's word of the CPU the calling OS thread is. Never inlined, as `os_thread_cpu`.
#[inline(never)]
fn os_thread_word() -> usize {
    WORD.with(Cell::get)
}

/// Set the scheduler's word of the CPU the calling OS thread is.
#[inline(never)]
fn set_os_thread_word(word: usize) {
    WORD.with(|w| w.set(word));
}

struct HostCpu {
    os_thread: OnceLock<std::thread::Thread>,
    irqs_enabled: AtomicBool,
    halted: AtomicBool,
    timer_deadline_ns: AtomicU64,
    mm_switches: AtomicU64,
}

/// Where a [`HostPlatform`] reports scheduling events (the CPU that reports, the event).
pub type TraceHook = fn(CpuIndex, TraceEvent);

/// The host machine: `nr_cpus` OS threads acting as CPUs.
pub struct HostPlatform {
    cpus: Box<[CachePadded<HostCpu>]>,
    clock: TscClock,
    fpu: FpuFeatures,
    trace_hook: Option<TraceHook>,
}

/// The kernel's clock on a host: the TSC, counted from a base and scaled to nanoseconds by a
/// 32.32 fixed-point factor (as the kernel's `time::now_ns`), the factor measured once per
/// process against `Instant`.
#[derive(Clone, Copy)]
struct TscClock {
    base: u64,
    ns_per_tick_fp32: u64,
}

impl TscClock {
    /// How long the one calibration per process lasts.
    const CALIBRATION: Duration = Duration::from_millis(5);

    fn new() -> TscClock {
        static NS_PER_TICK_FP32: OnceLock<u64> = OnceLock::new();
        let ns_per_tick_fp32 = *NS_PER_TICK_FP32.get_or_init(|| {
            let (t0, c0) = (Instant::now(), arch::tsc::read());
            while t0.elapsed() < Self::CALIBRATION {
                std::hint::spin_loop();
            }
            let (ticks, ns) = (arch::tsc::read() - c0, t0.elapsed().as_nanos());
            // The error is the jitter of the reads over the window: a few parts per million.
            u64::try_from((ns << 32) / u128::from(ticks.max(1))).unwrap_or(u64::MAX)
        });
        TscClock { base: arch::tsc::read(), ns_per_tick_fp32 }
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        let ticks = arch::tsc::read().wrapping_sub(self.base);
        ((u128::from(ticks) * u128::from(self.ns_per_tick_fp32)) >> 32) as u64
    }
}

impl HostPlatform {
    /// A machine of `nr_cpus` CPUs, none entered yet.
    pub fn new(nr_cpus: usize) -> HostPlatform {
        let cpus = (0..nr_cpus)
            .map(|_| {
                CachePadded::new(HostCpu {
                    os_thread: OnceLock::new(),
                    irqs_enabled: AtomicBool::new(true),
                    halted: AtomicBool::new(false),
                    timer_deadline_ns: AtomicU64::new(NEVER),
                    mm_switches: AtomicU64::new(0),
                })
            })
            .collect();
        HostPlatform {
            cpus,
            clock: TscClock::new(),
            fpu: FpuFeatures::detect().for_threads(),
            trace_hook: None,
        }
    }

    /// The same machine, reporting scheduling events to `hook` (see [`run_on`]).
    pub fn with_trace_hook(self, hook: TraceHook) -> HostPlatform {
        HostPlatform {
            trace_hook: Some(hook),
            ..self
        }
    }

    /// Number of CPUs.
    pub fn nr_cpus(&self) -> usize {
        self.cpus.len()
    }

    /// Make the calling OS thread CPU `cpu` (once per CPU, before it calls `run_cpu`).
    pub fn enter(&self, cpu: CpuIndex) {
        CPU.with(|c| c.set(cpu.0));
        self.cpus[cpu.index()]
            .os_thread
            .set(std::thread::current())
            .expect("a CPU was entered twice");
    }

    #[inline]
    fn this(&self) -> &HostCpu {
        let i = os_thread_cpu();
        self.cpus
            .get(i as usize)
            .expect("this OS thread is not a CPU of this platform")
    }

    /// Whether `cpu`'s simulated interrupts are enabled.
    pub fn irqs_enabled(&self, cpu: CpuIndex) -> bool {
        self.cpus[cpu.index()].irqs_enabled.load(Ordering::Relaxed)
    }

    /// Whether `cpu` is halted in `idle_wait` right now.
    pub fn is_halted(&self, cpu: CpuIndex) -> bool {
        self.cpus[cpu.index()].halted.load(Ordering::Relaxed)
    }

    /// The deadline `cpu`'s timer is armed for (`None`: stopped).
    pub fn timer_deadline(&self, cpu: CpuIndex) -> Option<u64> {
        Some(
            self.cpus[cpu.index()]
                .timer_deadline_ns
                .load(Ordering::Relaxed),
        )
        .filter(|&d| d != NEVER)
    }

    /// How many times `switch_mm` ran on `cpu`.
    pub fn mm_switches(&self, cpu: CpuIndex) -> u64 {
        self.cpus[cpu.index()].mm_switches.load(Ordering::Relaxed)
    }

    /// Unpark every CPU (for shutdown).
    fn unpark_all(&self) {
        for cpu in self.cpus.iter() {
            if let Some(t) = cpu.os_thread.get() {
                t.unpark();
            }
        }
    }
}

impl Platform for HostPlatform {
    #[inline]
    fn cpu_id(&self) -> CpuIndex {
        CpuIndex(os_thread_cpu())
    }

    /// As the kernel's, so the native rows run the kernel's path: the word is a thread-local of
    /// the CPU's OS thread, which only the scheduler running on that thread sets (`run_cpu`, for
    /// as long as it runs).
    const CPU_WORD: bool = true;

    #[inline]
    fn set_cpu_word(&self, word: usize) {
        set_os_thread_word(word);
    }

    #[inline]
    fn cpu_word(&self) -> usize {
        os_thread_word()
    }

    #[inline]
    fn irq_save_disable(&self) -> IrqState {
        // Only its own CPU writes the flag (nothing interrupts a host CPU), so a load and a store
        // are the whole of `pushf; cli`: no locked exchange.
        let flag = &self.this().irqs_enabled;
        let enabled = flag.load(Ordering::Relaxed);
        flag.store(false, Ordering::Relaxed);
        IrqState { enabled }
    }

    #[inline]
    fn irq_save_disable_on(&self) -> (IrqState, CpuIndex) {
        // One thread-local lookup for both (the kernel's are `pushf; cli` and a GS load anyway).
        let i = os_thread_cpu();
        let flag = &self
            .cpus
            .get(i as usize)
            .expect("this OS thread is not a CPU of this platform")
            .irqs_enabled;
        let enabled = flag.load(Ordering::Relaxed);
        flag.store(false, Ordering::Relaxed);
        (IrqState { enabled }, CpuIndex(i))
    }

    #[inline]
    fn irq_restore(&self, state: IrqState) {
        self.this()
            .irqs_enabled
            .store(state.enabled, Ordering::Relaxed);
    }

    fn send_resched(&self, cpu: CpuIndex) {
        if let Some(t) = self.cpus[cpu.index()].os_thread.get() {
            t.unpark();
        }
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn arm_timer(&self, deadline_ns: Option<u64>) {
        self.this()
            .timer_deadline_ns
            .store(deadline_ns.unwrap_or(NEVER), Ordering::Relaxed);
    }

    fn idle_wait(&self) {
        let cpu = self.this();
        cpu.irqs_enabled.store(true, Ordering::Relaxed);
        cpu.halted.store(true, Ordering::Relaxed);
        match cpu.timer_deadline_ns.load(Ordering::Relaxed) {
            NEVER => std::thread::park(),
            deadline_ns => {
                let now_ns = self.now_ns();
                if deadline_ns > now_ns {
                    std::thread::park_timeout(Duration::from_nanos(deadline_ns - now_ns));
                }
            }
        }
        cpu.halted.store(false, Ordering::Relaxed);
        cpu.irqs_enabled.store(false, Ordering::Relaxed);
    }

    fn alloc_stack(&self, bytes: usize) -> Option<Stack> {
        let layout = Layout::from_size_align(
            bytes.max(STACK_ALIGN).next_multiple_of(STACK_ALIGN),
            STACK_ALIGN,
        )
        .ok()?;
        // SAFETY: the layout has a non-zero size.
        let bottom = unsafe { alloc(layout) } as usize;
        (bottom != 0).then(|| Stack {
            bottom,
            top: bottom + layout.size(),
            guard: bottom..bottom,
        })
    }

    fn free_stack(&self, stack: Stack) {
        let layout = Layout::from_size_align(stack.top - stack.bottom, STACK_ALIGN)
            .expect("a stack from alloc_stack");
        // SAFETY: `alloc_stack` allocated exactly this block with this layout.
        unsafe { dealloc(stack.bottom as *mut u8, layout) };
    }

    fn fpu_features(&self) -> Option<FpuFeatures> {
        Some(self.fpu)
    }

    fn switch_mm(&self, _prev: Option<NonZeroUsize>, _next: &Mm) {
        let n = &self.this().mm_switches;
        n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// One test of the hook when none is installed: what the native benchmark's rows pay for
    /// the trace points.
    #[inline(always)]
    fn trace(&self, event: impl FnOnce() -> TraceEvent) {
        if let Some(hook) = self.trace_hook {
            hook(self.cpu_id(), event());
        }
    }

    #[inline(always)]
    fn tracing(&self) -> bool {
        self.trace_hook.is_some()
    }
}

/// An address space for host tests: the scheduler knows it as `word`, and it owns one reference
/// to `owner`, so a test sees when the threads in it have given it up (`Arc::strong_count`).
/// Tests keep `word` unique per owner.
pub fn mm(word: NonZeroUsize, owner: Arc<()>) -> Mm {
    static OPS: MmOps = MmOps { clone: clone_owner, release: release_owner, charge: charge_nobody };
    unsafe fn charge_nobody(_owner: NonNull<()>, _ns: u64) {}
    unsafe fn clone_owner(owner: NonNull<()>) {
        // SAFETY: `owner` came from `Arc::into_raw` below and a reference to it is alive.
        unsafe { Arc::increment_strong_count(owner.as_ptr().cast_const()) };
    }
    unsafe fn release_owner(owner: NonNull<()>) {
        // SAFETY: gives back one reference taken by `into_raw` or `clone_owner`.
        unsafe { Arc::decrement_strong_count(owner.as_ptr().cast_const()) };
    }
    let owner = NonNull::new(Arc::into_raw(owner).cast_mut()).expect("an Arc is never null");
    assert_ne!(word.get(), usize::MAX, "the scheduler's marker, not a space's word");
    // SAFETY: one reference handed over, counted by OPS from any thread; the word is the test's,
    // and not the marker (checked).
    unsafe { Mm::from_raw(word, owner, &OPS) }
}

/// An address space for host tests whose CPU time is counted: the scheduler adds what its threads
/// run to `account` (nanoseconds), which the space holds a reference to.
pub fn mm_with_account(word: NonZeroUsize, account: Arc<AtomicU64>) -> Mm {
    static OPS: MmOps = MmOps { clone: clone_owner, release: release_owner, charge: charge_owner };
    unsafe fn clone_owner(owner: NonNull<()>) {
        // SAFETY: `owner` came from `Arc::into_raw` below and a reference to it is alive.
        unsafe { Arc::increment_strong_count(owner.as_ptr().cast_const().cast::<AtomicU64>()) };
    }
    unsafe fn release_owner(owner: NonNull<()>) {
        // SAFETY: gives back one reference taken by `into_raw` or `clone_owner`.
        unsafe { Arc::decrement_strong_count(owner.as_ptr().cast_const().cast::<AtomicU64>()) };
    }
    unsafe fn charge_owner(owner: NonNull<()>, ns: u64) {
        // SAFETY: the caller holds a reference, so the `AtomicU64` behind `owner` is alive.
        unsafe { owner.cast::<AtomicU64>().as_ref() }.fetch_add(ns, Ordering::Relaxed);
    }
    let owner = NonNull::new(Arc::into_raw(account).cast_mut()).expect("an Arc is never null").cast();
    assert_ne!(word.get(), usize::MAX, "the scheduler's marker, not a space's word");
    // SAFETY: one reference handed over, counted by OPS from any thread; the word is the test's,
    // and not the marker (checked).
    unsafe { Mm::from_raw(word, owner, &OPS) }
}

/// Run `main` as a thread of a new scheduler on `nr_cpus` host CPUs: the calling OS thread becomes
/// CPU 0's boot (then idle) thread, `nr_cpus - 1` new OS threads the others. Returns `main`'s value
/// once it has finished and every CPU has run out of work, with the scheduler (for its counters).
///
/// A panic inside a scheduler thread aborts the process (after printing its message): it cannot
/// unwind past the thread's first frame.
pub fn run<T, F>(nr_cpus: usize, config: Config, main: F) -> (T, &'static Scheduler<HostPlatform>)
where
    F: FnOnce(&'static Scheduler<HostPlatform>) -> T + Send + 'static,
    T: Send + 'static,
{
    run_on(HostPlatform::new(nr_cpus), config, main)
}

/// [`run`] on a machine made beforehand (e.g. with a trace hook), with as many CPUs as it has.
pub fn run_on<T, F>(
    platform: HostPlatform,
    config: Config,
    main: F,
) -> (T, &'static Scheduler<HostPlatform>)
where
    F: FnOnce(&'static Scheduler<HostPlatform>) -> T + Send + 'static,
    T: Send + 'static,
{
    let nr_cpus = platform.nr_cpus();
    let sched = Scheduler::new(platform, nr_cpus, config);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(nr_cpus));
    let others: Vec<_> = (1..nr_cpus)
        .map(|i| {
            let (stop, ready) = (stop.clone(), ready.clone());
            std::thread::Builder::new()
                .name(std::format!("cpu{i}"))
                .spawn(move || {
                    sched.platform().enter(CpuIndex(i as u32));
                    ready.wait();
                    // SAFETY: this OS thread is CPU i's boot thread, entered as CPU i, joining once.
                    unsafe { sched.run_cpu(&|| stop.load(Ordering::Acquire)) };
                })
                .expect("start a CPU thread")
        })
        .collect();
    sched.platform().enter(CpuIndex(0));
    ready.wait();
    let result = Arc::new(Mutex::new(None));
    let (done, slot) = (stop.clone(), result.clone());
    let main_thread = sched.spawn(Builder::new("main"), move || {
        let value = main(sched);
        *slot.lock().expect("result slot") = Some(value);
        done.store(true, Ordering::Release);
        sched.platform().unpark_all();
    });
    drop(main_thread.expect("spawn the main thread"));
    // SAFETY: the calling OS thread is CPU 0's boot thread, entered as CPU 0, joining once.
    unsafe { sched.run_cpu(&|| stop.load(Ordering::Acquire)) };
    for t in others {
        t.join().expect("a CPU thread failed");
    }
    let value = result
        .lock()
        .expect("result slot")
        .take()
        .expect("main has finished");
    (value, sched)
}

/// Stand-in for the timer interrupt on a host, which has none: call it from a scheduler thread
/// where an interrupt could arrive. Runs [`Scheduler::tick`] (the timer interrupt's work, then
/// the preemption it may ask for) with interrupts disabled, as the kernel's handler does.
pub fn tick(s: &Scheduler<HostPlatform>) {
    let irq = s.platform().irq_save_disable();
    s.tick();
    s.platform().irq_restore(irq);
}

/// [`tick`] for a timer interrupt that found the thread in user mode ([`Scheduler::tick_user`]).
pub fn tick_user(s: &Scheduler<HostPlatform>) {
    let irq = s.platform().irq_save_disable();
    s.tick_user();
    s.platform().irq_restore(irq);
}
