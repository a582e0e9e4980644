//! The scheduler on the machine: the kernel's [`sched::Platform`], the timer and reschedule
//! interrupt handlers, and each CPU's entry into the scheduler.
//!
//! Neighbours: `sched` decides (run queues, the windowed switch path); this module supplies the
//! machine: `percpu` for the CPU id, `ipi` for reschedule IPIs, `apic` for the one-shot or
//! TSC-deadline timer, `time` for the clock, `mm::stacks` for guarded stacks, `vm` (above) for CR3 through [`set_mm_switch`],
//! `cpu::trace` for the scheduler's trace points, halts and timer settings.

use core::{fmt::Write, num::NonZeroUsize, sync::atomic::Ordering};

use crossbeam_utils::atomic::AtomicCell;

use sched::{CpuIndex, IrqState, Mm, Platform, Scheduler, Stack};

use ::trace::{Category, Kind, Record};

use crate::{cpu::{percpu, trace}, irq::{apic, ipi, trap}, mm, time};

/// The kernel's machine below the scheduler.
pub struct KernelPlatform {
    fpu: Option<arch::fpu::FpuFeatures>,
    /// Lazy extended-state switching within a space (CR0.TS); off with `eagerfpu`.
    lazy_fpu: bool,
}

pub type KSched = Scheduler<KernelPlatform>;

static SCHED: spin::Once<&'static KSched> = spin::Once::new();

/// The extended-state features user threads run with (set by [`init`]).
pub fn fpu_features() -> Option<arch::fpu::FpuFeatures> {
    SCHED.get().and_then(|s| s.platform().fpu)
}

/// A device-not-available exception (#NM): the scheduler's trap on first use of the extended
/// state, armed by a lazy switch. True when the scheduler took it (the faulting instruction can
/// run again); false when it was not armed, or before the scheduler exists: a fault to report.
pub fn fpu_trap() -> bool {
    SCHED.get().is_some_and(|s| s.fpu_trap())
}

/// The scheduler, once `init` ran.
pub fn sched() -> &'static KSched {
    SCHED.get().expect("scheduler used before task::init")
}

/// End the calling user thread, from its system-call or fault path (`process::exit_current`).
///
/// Offered safely because of what a user thread's kernel stack can hold: the thread enters the
/// kernel only from ring 3 (system call, interrupt, exception), and those paths pin nothing, hold
/// no lock guard and lend no borrow across the call that ends the thread (the caller drops its own
/// handles first; anything else left would only leak). Panics for a kernel thread, whose stack may
/// hold exactly such things.
pub fn exit_user_thread() -> ! {
    let me = sched().current().expect("exit_user_thread outside a thread");
    assert!(me.user, "exit_user_thread called by kernel thread {me}");
    // SAFETY: a user thread's kernel stack holds nothing whose destructor must run (above).
    unsafe { sched().exit() }
}

impl Platform for KernelPlatform {
    #[inline(always)]
    fn cpu_id(&self) -> CpuIndex {
        // SAFETY: the scheduler exists only after the boot CPU installed its per-CPU block (`init`
        // runs later), and an AP installs its own before it runs anything that could reach the
        // scheduler (it neither logs nor panics before: `cpus::bringup::ap_start`).
        CpuIndex(unsafe { percpu::cpu_index_installed() })
    }

    /// The word is a field of the GS-relative per-CPU block, and the kernel has one scheduler
    /// (`init` makes it once).
    const CPU_WORD: bool = true;

    #[inline(always)]
    fn set_cpu_word(&self, word: usize) {
        // SAFETY: as in `cpu_id`: a CPU joins the scheduler after it installed its block.
        unsafe { percpu::set_sched_word(word) }
    }

    #[inline(always)]
    fn cpu_word(&self) -> usize {
        // SAFETY: as in `cpu_id`.
        unsafe { percpu::sched_word() }
    }

    #[inline]
    fn irq_save_disable(&self) -> IrqState {
        let enabled = arch::interrupts::are_enabled();
        arch::interrupts::disable();
        IrqState { enabled }
    }

    /// The caller runs with interrupts on (checked in debug builds), as `cpu::irqlock::lock_irqs_on`
    /// asks: no read of the flags, and a restore that is one STI.
    #[inline]
    fn irq_disable_from_on(&self) -> IrqState {
        debug_assert!(arch::interrupts::are_enabled(), "irq_disable_from_on with interrupts off");
        arch::interrupts::disable();
        IrqState { enabled: true }
    }

    #[inline]
    fn irq_restore(&self, state: IrqState) {
        if state.enabled {
            // The scheduler's next disable reads the flag first (`irq_save_disable`), so an
            // instruction sits between this STI and its CLI. Were a CLI ever placed right after
            // it, a pending interrupt would wait for the next enable: delayed, not lost.
            arch::interrupts::restore_enabled();
        }
    }

    fn send_resched(&self, cpu: CpuIndex) {
        if let Some(cpu) = smp::CpuId::new(cpu.0) {
            ipi::send(cpu, trap::VECTOR_RESCHED);
        }
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }

    fn arm_timer(&self, deadline_ns: Option<u64>) {
        trace::event(Category::Timer, |tsc, cpu| Record {
            a: deadline_ns.unwrap_or(0),
            arg: u8::from(deadline_ns.is_none()),
            ..Record::new(tsc, cpu, Kind::TimerArm)
        });
        match deadline_ns {
            Some(d) => time::arm_at_ns(d),
            None => apic::disarm(),
        }
    }

    fn arm_timer_from(&self, deadline_ns: u64, now_ns: u64) {
        // `move`: a closure borrowing the deadline would keep it in a stack slot on every tick,
        // for a record that is mostly off.
        trace::event(Category::Timer, move |tsc, cpu| Record { a: deadline_ns, arg: 0, ..Record::new(tsc, cpu, Kind::TimerArm) });
        time::arm_at_ns_from(deadline_ns, now_ns);
    }

    #[inline(always)]
    fn idle_poll_relax(&self) {
        // The scheduler polls with this CPU idle (its idle thread, or a blocked thread halting
        // in place, both where `idle_wait` may halt): its interrupt handlers run there as they
        // would in the halt.
        arch::cpu::pause_with_interrupts();
    }

    #[inline]
    fn idle_wait(&self) {
        trace::event(Category::Idle, |tsc, cpu| Record::new(tsc, cpu, Kind::IdleEnter));
        if let Some((enter, _)) = MM_IDLE.get() {
            enter();
        }
        // The reschedule IPI that ends this halt takes `resched_halt_exit`, with nothing saved.
        arch::trap::idle_halt();
        trace::event(Category::Idle, |tsc, cpu| Record::new(tsc, cpu, Kind::IdleExit));
    }

    fn alloc_stack(&self, bytes: usize) -> Option<Stack> {
        let s = mm::stacks::obtain(bytes, "kernel thread")?;
        let (bottom, top) = (s.bottom() as usize, s.top() as usize);
        // The stack is rebuilt from its addresses in free_stack; until then the scheduler owns it.
        core::mem::forget(s);
        Some(Stack { bottom, top, guard: bottom - 4096..bottom })
    }

    fn free_stack(&self, stack: Stack) {
        // SAFETY: `stack` came from alloc_stack, which forgot the KernelStack with exactly these
        // addresses, and the scheduler gives each stack back once, after its thread is gone.
        // Kept mapped for a later thread, or listed to be unmapped in a batch outside the switch
        // path (which this may be): no shootdown here.
        mm::stacks::release(unsafe { mm::stacks::KernelStack::from_raw(stack.bottom as u64, stack.top as u64) });
    }

    fn fpu_features(&self) -> Option<arch::fpu::FpuFeatures> {
        self.fpu
    }

    #[inline(always)]
    fn lazy_fpu(&self) -> bool {
        self.lazy_fpu
    }

    #[inline(always)]
    fn set_fpu_trap(&self, on: bool) {
        // SAFETY: ring 0 on a CPU whose FPU `enable_on_this_cpu` set up; the #NM handler
        // (`fpu_trap`) is installed before any thread runs.
        unsafe { arch::fpu::set_trap(on) };
    }

    fn switch_mm(&self, prev: Option<NonZeroUsize>, next: &Mm) {
        let switch = MM_SWITCH.load().expect("a thread has an address space only after vm installed its switch");
        switch(prev, next);
    }

    /// While the trace's `sched` category is off: one load and one test.
    #[inline(always)]
    fn trace(&self, event: impl FnOnce() -> sched::TraceEvent) {
        if trace::enabled(Category::Sched) {
            trace::sched_event(event());
        }
    }

    #[inline(always)]
    fn tracing(&self) -> bool {
        trace::enabled(Category::Sched)
    }

    fn mm_after_idle(&self) -> bool {
        MM_IDLE.get().is_some_and(|(_, exit)| exit())
    }

    /// With FSGSBASE on, user code may have changed its FS and GS bases with WRFSBASE/WRGSBASE:
    /// both are read back from the CPU (no WRMSR: RDFSBASE, and RDGSBASE between two `swapgs`),
    /// saved for `prev`, and `next`'s loaded only where they differ from what the CPU holds (two
    /// threads of one process differ in FS, most threads share GS 0). Without it the kernel's copy
    /// of the FS base is exact (only the kernel writes it) and goes through the MSR, and the user's
    /// GS base stays 0.
    #[inline]
    fn switch_user(&self, prev: Option<&sched::UserBases>, next: Option<(usize, &sched::UserBases)>) {
        if let Some((top, _)) = next {
            // SAFETY: ring 3 was set up on this CPU at bring-up (cpu::ring3); the scheduler calls
            // this with interrupts off, for the thread about to run, whose stack outlives its running.
            unsafe { arch::syscall::set_kernel_stack(top as u64) };
        }
        if arch::fsbase::enabled() {
            // SAFETY: FSGSBASE is on; the scheduler calls this with interrupts off.
            let (fs, gs) = unsafe { arch::fsbase::user_bases() };
            if let Some(p) = prev {
                p.fs.store(fs, Ordering::Relaxed);
                p.gs.store(gs, Ordering::Relaxed);
            }
            if let Some((_, n)) = next {
                // SAFETY: as above; the values were read from the CPU at a switch-out, or checked
                // canonical by whoever set them (`set_current_fs_base`'s callers), or are 0; `fs`
                // and `gs` are the CPU's current values.
                unsafe {
                    arch::fsbase::load_user_bases(n.fs.load(Ordering::Relaxed), n.gs.load(Ordering::Relaxed), fs, gs)
                };
            }
        } else if let Some((_, n)) = next {
            // The value was checked when the thread set it; a non-canonical one cannot be stored.
            let _ = arch::fsbase::write(n.fs.load(Ordering::Relaxed));
        }
    }
}

/// The timer's interrupts of ring 0, straight from the entry stub (`arch::trap`'s direct vector):
/// what `trap_dispatch` and its handler table would do for them, without the table. Interrupts of
/// ring 3 still take `trap_dispatch`, which also runs the process layer's return-to-user work.
extern "C" fn timer_entry(_frame: *mut arch::trap::TrapFrame) {
    trap::interrupt_entered(trap::VECTOR_TIMER);
    // SAFETY: SCHED is complete here: `init` installs this entry only after it set SCHED, with a
    // release store the entry stub's load of the entry orders after (x86 keeps a CPU's loads in
    // order, and stores in order to all), and a `Once` once set stays set.
    let s = unsafe { SCHED.get_unchecked() };
    timer_tick::<false>(Some(s));
}

/// The timer's interrupts from user mode (and from ring 0 before the direct entry is installed).
fn timer_handler(frame: &mut arch::trap::TrapFrame) {
    if frame.cs & 3 == 3 {
        timer_tick::<true>(SCHED.get().copied());
    } else {
        timer_tick::<false>(SCHED.get().copied());
    }
}

/// The timer interrupt's work, from either entry, with the scheduler if there is one yet; `USER`:
/// it interrupted user mode, so the interrupted thread's time since the last accounting point
/// counts as user time.
#[inline(always)]
fn timer_tick<const USER: bool>(sched: Option<&KSched>) {
    percpu::count(percpu::Counter::TimerInterrupts);
    apic::eoi();
    time::power_off_if_due();
    if let Some(s) = sched {
        if USER {
            s.tick_user();
        } else {
            s.tick();
        }
    }
}

/// The reschedule IPI's interrupts of ring 0, straight from the entry stub (`arch::trap`'s direct
/// vector for IPIs): what `trap_dispatch` and its table would do for them. This is the way out of
/// the halt of an idle CPU another one queued a thread on, on every cross-CPU wake-up; a thread
/// interrupted in ring 0 still gets its preemption check here. Interrupts of ring 3 take
/// `trap_dispatch` and [`resched_handler`].
extern "C" fn resched_entry(_frame: *mut arch::trap::TrapFrame) {
    trap::interrupt_entered(trap::VECTOR_RESCHED);
    resched();
}

/// The reschedule IPI that ended the idle loop's halt (`arch::trap::idle_halt`), straight from the
/// entry stub with nothing saved: count, trace, EOI. The interrupted thread is the idle thread,
/// which has nothing to be preempted for (`resched` would only clear its `need_resched`, which
/// nothing reads on an idle thread and its next switch clears): its loop looks for work next.
extern "C" fn resched_halt_exit() {
    trap::interrupt_entered(trap::VECTOR_RESCHED);
    percpu::count(percpu::Counter::IpisReceived);
    apic::eoi();
}

/// The reschedule IPI from user mode (and from ring 0 before the direct entry is installed).
fn resched_handler(_frame: &mut arch::trap::TrapFrame) {
    resched();
}

/// The reschedule IPI's work, from either entry: acknowledge it, then switch if the thread it
/// interrupted is to make way (an idle thread only clears its flag: its loop looks for work).
#[inline(always)]
fn resched() {
    percpu::count(percpu::Counter::IpisReceived);
    apic::eoi();
    if let Some(s) = SCHED.get() {
        s.preempt_if_needed();
    }
}

fn write_current(w: &mut dyn Write) {
    match SCHED.get().and_then(|s| s.current()) {
        Some(t) => {
            let _ = write!(w, "{t}");
        }
        None => {
            let _ = w.write_str("boot");
        }
    }
}

/// How this CPU loads an address space, installed by `vm` (the layer above) with
/// [`set_mm_switch`]; the scheduler calls it only for threads spawned into a space.
static MM_SWITCH: AtomicCell<Option<MmSwitch>> = AtomicCell::new(None);

/// Loads address space `next` on this CPU in place of `prev`.
type MmSwitch = fn(Option<NonZeroUsize>, &Mm);

/// Install the function that loads address space `next` on this CPU in place of `prev`
/// (interrupts off), for the scheduler's `switch_mm`.
pub fn set_mm_switch(f: MmSwitch) {
    MM_SWITCH.store(Some(f));
}

/// What a CPU does about its loaded address space right before it halts and right after the
/// halt ends (interrupts off both times), installed by `vm` with [`set_mm_idle`]. A halted CPU
/// keeps its space loaded (the scheduler's `leave_mm_idle` stays false), lazily; `exit` returns
/// whether it left the space during the halt (the scheduler's `mm_after_idle`).
///
/// A `spin::Once`, not an `AtomicCell`: the pair is two words, which `AtomicCell` guards with a
/// sequence lock (two loads of its stamp around the two words, on each side of every halt); once
/// set it never changes, and reading a `Once` is one acquire load and a test.
static MM_IDLE: spin::Once<(fn(), fn() -> bool)> = spin::Once::new();

/// Install the functions a CPU calls right before it halts (`enter`) and right after (`exit`),
/// with interrupts off, for its loaded address space. Only the first call counts.
pub fn set_mm_idle(enter: fn(), exit: fn() -> bool) {
    MM_IDLE.call_once(|| (enter, exit));
}

/// Create the scheduler for `nr_cpus` CPUs and route the timer and reschedule vectors to it.
pub fn init(nr_cpus: u32, slice_ns: u64, idle_poll_ns: u64, fpu: arch::fpu::FpuFeatures, lazy_fpu: bool) {
    let platform = KernelPlatform { fpu: Some(fpu), lazy_fpu };
    let config = sched::Config { slice_ns, idle_poll_ns, ..sched::Config::default() };
    SCHED.call_once(|| Scheduler::new(platform, nr_cpus as usize, config));
    trap::set_fpu_trap_hook(fpu_trap);
    trap::register(trap::VECTOR_TIMER, timer_handler);
    arch::trap::set_direct_entry(trap::VECTOR_TIMER, timer_entry);
    trap::register(trap::VECTOR_RESCHED, resched_handler);
    arch::trap::set_direct_entry(trap::VECTOR_RESCHED, resched_entry);
    arch::trap::set_halt_exit_entry(resched_halt_exit);
    crate::irq::panic::set_thread_name(write_current);
}

/// This CPU's boot thread becomes its idle thread; never returns.
pub fn run_this_cpu() -> ! {
    // SAFETY: called once per CPU, on that CPU's boot stack, after `init`, with the CPU's per-CPU
    // block, APIC and timer set up; the boot thread is adopted as the idle thread.
    unsafe { sched().run_cpu(&|| false) };
    unreachable!("run_cpu returns only when asked to stop, and the kernel never asks")
}
