//! The scheduler on the machine: the kernel's [`sched::Platform`], the timer and reschedule
//! interrupt handlers, and each CPU's entry into the scheduler.
//!
//! Neighbours: `sched` decides (run queues, the windowed switch path); this module supplies the
//! machine: `percpu` for the CPU id, `ipi` for reschedule IPIs, `apic` for the one-shot or
//! TSC-deadline timer, `time` for the clock, `mm::stacks` for guarded stacks, `vm` (above) for CR3 through [`set_mm_switch`].

use core::fmt::Write;

use crossbeam_utils::atomic::AtomicCell;

use sched::{CpuIndex, IrqState, Mm, Platform, Scheduler, Stack};

use crate::{cpu::percpu, irq::{apic, ipi, trap}, mm, time};

/// The kernel's machine below the scheduler.
pub struct KernelPlatform {
    fpu: Option<arch::fpu::FpuFeatures>,
}

pub type KSched = Scheduler<KernelPlatform>;

static SCHED: spin::Once<&'static KSched> = spin::Once::new();

/// The scheduler, once `init` ran.
pub fn sched() -> &'static KSched {
    SCHED.get().expect("scheduler used before task::init")
}

impl Platform for KernelPlatform {
    #[inline]
    fn cpu_id(&self) -> CpuIndex {
        CpuIndex(percpu::cpu_index())
    }

    #[inline]
    fn irq_save_disable(&self) -> IrqState {
        let enabled = arch::interrupts::are_enabled();
        arch::interrupts::disable();
        IrqState { enabled }
    }

    #[inline]
    fn irq_restore(&self, state: IrqState) {
        if state.enabled {
            arch::interrupts::enable();
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
        match deadline_ns {
            Some(d) => time::arm_at_ns(d),
            None => apic::disarm(),
        }
    }

    #[inline]
    fn idle_wait(&self) {
        arch::cpu::enable_interrupts_and_halt();
    }

    fn alloc_stack(&self, bytes: usize) -> Option<Stack> {
        let s = mm::stacks::KernelStack::new(bytes, "kernel thread")?;
        let (bottom, top) = (s.bottom() as usize, s.top() as usize);
        // The stack is rebuilt from its addresses in free_stack; until then the scheduler owns it.
        core::mem::forget(s);
        Some(Stack { bottom, top, guard: bottom - 4096..bottom })
    }

    fn free_stack(&self, stack: Stack) {
        // SAFETY: `stack` came from alloc_stack, which forgot the KernelStack with exactly these
        // addresses, and the scheduler gives each stack back once, after its thread is gone.
        drop(unsafe { mm::stacks::KernelStack::from_raw(stack.bottom as u64, stack.top as u64) });
    }

    fn fpu_features(&self) -> Option<arch::fpu::FpuFeatures> {
        self.fpu
    }

    fn switch_mm(&self, prev: Option<Mm>, next: Mm) {
        let switch = MM_SWITCH.load().expect("a thread has an address space only after vm installed its switch");
        switch(prev, next);
    }
}

fn timer_handler(_frame: &mut arch::trap::TrapFrame) {
    percpu::count(percpu::Counter::TimerInterrupts);
    apic::eoi();
    time::power_off_if_due();
    if let Some(s) = SCHED.get() {
        s.timer_interrupt();
        s.preempt_if_needed();
    }
}

fn resched_handler(_frame: &mut arch::trap::TrapFrame) {
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
type MmSwitch = fn(Option<Mm>, Mm);

/// Install the function that loads address space `next` on this CPU in place of `prev`
/// (interrupts off), for the scheduler's `switch_mm`.
pub fn set_mm_switch(f: fn(Option<Mm>, Mm)) {
    MM_SWITCH.store(Some(f));
}

/// Create the scheduler for `nr_cpus` CPUs and route the timer and reschedule vectors to it.
pub fn init(nr_cpus: u32, slice_ns: u64, fpu: arch::fpu::FpuFeatures) {
    let platform = KernelPlatform { fpu: Some(fpu) };
    let config = sched::Config { slice_ns, ..sched::Config::default() };
    SCHED.call_once(|| Scheduler::new(platform, nr_cpus as usize, config));
    trap::register(trap::VECTOR_TIMER, timer_handler);
    trap::register(trap::VECTOR_RESCHED, resched_handler);
    crate::irq::panic::set_thread_name(write_current);
}

/// This CPU's boot thread becomes its idle thread; never returns.
pub fn run_this_cpu() -> ! {
    // SAFETY: called once per CPU, on that CPU's boot stack, after `init`, with the CPU's per-CPU
    // block, APIC and timer set up; the boot thread is adopted as the idle thread.
    unsafe { sched().run_cpu(&|| false) };
    unreachable!("run_cpu returns only when asked to stop, and the kernel never asks")
}
