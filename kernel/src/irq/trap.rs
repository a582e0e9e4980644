//! The IDT (one, shared by all CPUs) and the Rust side of every interrupt: exceptions become fault
//! reports, device and inter-processor vectors go to the handler registered for them.
//!
//! Vector plan (0-31 are the CPU's exceptions):
//!
//! | vector | use                                      |
//! |--------|------------------------------------------|
//! | 0x24   | COM1 (ISA IRQ 4 through the I/O APIC), the console's input (`tty`) |
//! | 0xf0   | local APIC timer (`arch::trap::DIRECT_VECTOR`: from ring 0, straight to its entry) |
//! | 0xf1   | reschedule IPI (`arch::trap::DIRECT_VECTOR_IPI`: from ring 0, straight to its entry) |
//! | 0xf2   | cross-CPU call IPI                       |
//! | 0xf3   | TLB shootdown IPI                        |
//! | 0xfe   | local APIC error                         |
//! | 0xff   | local APIC spurious (no EOI, SDM 11.9)   |
//!
//! Stopping the other CPUs after a fault uses NMI, which arrives even with interrupts disabled.

use arch::trap::TrapFrame;
use crossbeam_utils::atomic::AtomicCell;

use crate::cpu::{percpu, trace};

pub const VECTOR_TIMER: u8 = arch::trap::DIRECT_VECTOR;
pub const VECTOR_RESCHED: u8 = arch::trap::DIRECT_VECTOR_IPI;
pub const VECTOR_XCALL: u8 = 0xf2;
pub const VECTOR_SHOOTDOWN: u8 = 0xf3;
pub const VECTOR_APIC_ERROR: u8 = 0xfe;
pub const VECTOR_SPURIOUS: u8 = 0xff;

const NMI: u64 = 2;
const DEVICE_NOT_AVAILABLE: u64 = 7;
const DOUBLE_FAULT: u64 = 8;
const MACHINE_CHECK: u64 = 18;

/// A handler for a device or IPI vector. It runs with interrupts off, on the interrupted thread's
/// stack, and may switch threads (the scheduler's preemption path). End-of-interrupt is the
/// handler's job (it must come before any switch: another thread may run for a long time).
pub type Handler = fn(&mut TrapFrame);

static HANDLERS: [AtomicCell<Option<Handler>>; 256] = [const { AtomicCell::new(None) }; 256];

/// What the process layer does with exceptions that user programs cause.
#[derive(Clone, Copy)]
pub struct UserFaultHooks {
    /// A page fault at user address `addr` with error code `error`, from ring 3 or from a user-copy
    /// loop: map the page if the process may have it (demand-zero), and say whether it did. Runs in
    /// the faulting thread with interrupts enabled, so it may sleep.
    pub resolve_page: fn(addr: u64, error: u64) -> bool,
    /// An exception from ring 3 that no page resolves: queue its signal for an installed handler
    /// and return, or report it and end the process (never returns then). `addr` is CR2 for a page
    /// fault, else 0.
    pub fault: fn(frame: &mut TrapFrame, addr: u64),
    /// An interrupt or exception is about to return to ring 3 with `frame`: end the thread if its
    /// process is being ended (so a thread that never makes a system call still ends), deliver
    /// pending signals (which rewrites the frame). Interrupts off; may enable them.
    pub before_user_return: fn(frame: &mut TrapFrame),
}

static USER_FAULTS: AtomicCell<Option<UserFaultHooks>> = AtomicCell::new(None);

/// Install the process layer's handling of user faults (once, before the first user program).
pub fn set_user_fault_hooks(hooks: UserFaultHooks) {
    USER_FAULTS.store(Some(hooks));
}

const PAGE_FAULT: u64 = 14;
const GENERAL_PROTECTION: u64 = 13;
/// End of the user half: faults above it are never the user's to resolve.
const USER_END: u64 = 0x0000_8000_0000_0000;

/// An exception a user program caused, from ring 3 or inside a user-copy loop: resolve it, redirect
/// the copy to its fixup, or end the process. Returns whether it was handled; `false` leaves it to
/// the kernel fault path (a kernel bug).
fn user_exception(frame: &mut TrapFrame) -> bool {
    let from_user = frame.cs & 3 == 3;
    let fixup = arch::usercopy::fixup_for(frame.rip);
    if !from_user && fixup.is_none() {
        return false;
    }
    let Some(hooks) = USER_FAULTS.load() else { return false };
    let addr = if frame.vector == PAGE_FAULT { arch::cr::cr2() } else { 0 };
    if frame.vector == PAGE_FAULT && addr < USER_END && frame.rflags & (1 << 9) != 0 {
        // The interrupted code had interrupts on (ring 3 always does; the copy loops run in system
        // calls, which enable them): so may the resolution, which can sleep on the space's lock.
        arch::interrupts::enable();
        let resolved = (hooks.resolve_page)(addr, frame.error_code);
        arch::interrupts::disable();
        if resolved {
            return true;
        }
    }
    match fixup {
        Some(fix) if !from_user && matches!(frame.vector, PAGE_FAULT | GENERAL_PROTECTION) => {
            frame.rip = fix;
            true
        }
        Some(_) if !from_user => false,
        _ => {
            (hooks.fault)(frame, addr);
            true
        }
    }
}

/// The scheduler's handling of #NM (its lazy extended-state switch armed CR0.TS): true when it
/// took the trap and the faulting instruction may run again.
static FPU_TRAP: AtomicCell<Option<fn() -> bool>> = AtomicCell::new(None);

/// Install the scheduler's #NM handling (once, before the first thread with extended state runs).
pub fn set_fpu_trap_hook(take: fn() -> bool) {
    FPU_TRAP.store(Some(take));
}

/// Route `vector` (32-255) to `handler`.
pub fn register(vector: u8, handler: Handler) {
    assert!(vector >= 32, "vectors 0-31 are exceptions");
    HANDLERS[usize::from(vector)].store(Some(handler));
}

/// Called by `arch::trap`'s common stub for every vector, interrupts off.
///
/// Interrupts (vectors 32-255) take the short path: count, trace, call the handler. Exceptions and
/// NMI go to `dispatch_exception`, kept out of line so that its fault reports and user-fault
/// handling do not widen the interrupt path's frame.
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: *mut TrapFrame) {
    // SAFETY: the stub passes a pointer to the frame it just built on this stack.
    let frame = unsafe { &mut *frame };
    let v = frame.vector;
    if v < 32 {
        dispatch_exception(frame);
        return;
    }
    interrupt_entered(v as u8);
    let Some(h) = HANDLERS[usize::from(v as u8)].load() else {
        no_handler(v);
        return;
    };
    h(frame);
    before_user_return(frame);
}

/// What [`trap_dispatch`] does for every interrupt before its handler runs: count it, trace it.
/// A direct entry (`arch::trap::set_direct_entry`: the timer's, the reschedule IPI's) does the same.
#[inline(always)]
pub fn interrupt_entered(vector: u8) {
    percpu::count(percpu::Counter::Interrupts);
    trace_interrupt(vector);
}

/// [`trap_dispatch`] for vectors 0-31: NMI, and exceptions of the kernel or of user programs.
#[cold]
#[inline(never)]
fn dispatch_exception(frame: &mut TrapFrame) {
    let v = frame.vector;
    if v == NMI {
        percpu::count(percpu::Counter::Nmis);
        #[cfg(feature = "ktest")]
        if tests::expected_nmi() {
            return;
        }
        if crate::irq::panic::stop_requested() {
            crate::irq::panic::park_this_cpu();
        }
        crate::irq::panic::fault(frame, "non-maskable interrupt");
    }
    if v == DEVICE_NOT_AVAILABLE && FPU_TRAP.load().is_some_and(|take| take()) {
        // A lazy switch's trap, from ring 3 or from kernel code saving or loading the running
        // thread's state (signal frames): the state is the thread's now, the use runs again.
        before_user_return(frame);
        return;
    }
    if v != DOUBLE_FAULT && v != MACHINE_CHECK && user_exception(frame) {
        before_user_return(frame);
        return;
    }
    let what = match v {
        DOUBLE_FAULT => "double fault",
        MACHINE_CHECK => "machine check",
        _ => exception_name(v),
    };
    crate::irq::panic::fault(frame, what);
}

/// An interrupt on a vector nobody registered (the spurious vector is expected).
#[cold]
#[inline(never)]
fn no_handler(v: u64) {
    if v == u64::from(VECTOR_SPURIOUS) {
        percpu::count(percpu::Counter::Spurious);
        return;
    }
    log::warn!("interrupt on vector {v:#x} with no handler; ignored");
    crate::irq::apic::eoi();
}

/// The process layer's last word before an entry from ring 3 returns there.
#[inline(always)]
fn before_user_return(frame: &mut TrapFrame) {
    if frame.cs & 3 == 3
        && let Some(hooks) = USER_FAULTS.load()
    {
        (hooks.before_user_return)(frame);
    }
}

/// Trace point: the timer fired, or an IPI arrived (before its handler runs).
#[inline(always)]
fn trace_interrupt(vector: u8) {
    use ::trace::{Category, Kind, Record};
    match vector {
        VECTOR_TIMER => trace::event(Category::Timer, |tsc, cpu| Record::new(tsc, cpu, Kind::TimerFire)),
        VECTOR_RESCHED | VECTOR_XCALL | VECTOR_SHOOTDOWN => trace::event(Category::Ipi, |tsc, cpu| {
            Record::ipi_receive(tsc, cpu, crate::irq::ipi::trace_kind(vector))
        }),
        _ => {}
    }
}

pub fn exception_name(v: u64) -> &'static str {
    match v {
        0 => "divide error",
        1 => "debug",
        2 => "non-maskable interrupt",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating-point error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating-point exception",
        20 => "virtualization exception",
        21 => "control protection exception",
        _ => "reserved exception",
    }
}

#[cfg(feature = "ktest")]
mod tests {
    use alloc::{format, string::String};
    use core::sync::atomic::{AtomicU64, Ordering};

    use crate::{cpu::percpu, irq::apic, testing::Test};

    crate::register_tests![Test {
        name: "nmi_paranoid_gs",
        min_cpus: 1,
        expect_fault: false,
        run: nmi_paranoid_gs
    }];

    /// The CPU (index + 1) whose next NMI a test raised on purpose; 0: none.
    static EXPECT: AtomicU64 = AtomicU64::new(0);
    /// The NMI handler's mark: the CPU (index + 1) it found through GS.
    static SEEN: AtomicU64 = AtomicU64::new(0);

    /// In the NMI handler: whether this NMI is the one a test raised on this CPU (then the handler
    /// returns). Reads the CPU's index through GS, so a handler on a GS base that is not this CPU's
    /// block marks another CPU, or faults.
    pub(super) fn expected_nmi() -> bool {
        let me = u64::from(percpu::cpu_index()) + 1;
        if EXPECT.load(Ordering::Relaxed) != me {
            return false;
        }
        SEEN.store(me, Ordering::Relaxed);
        true
    }

    /// With FSGSBASE on, a user may load any canonical GS base, a kernel-half one included, and an
    /// NMI may arrive while the kernel runs on it (between a `swapgs` and `sysretq`, say). With
    /// interrupts off, load such bases (and 0, and a user-half one), send this CPU an NMI and
    /// check that the handler ran on this CPU's block (its NMI counter, bumped through GS, moved;
    /// the CPU it found through GS is this one) and that the NMI's return left the bogus base in
    /// GS. Without FSGSBASE the entry decides by the sign of the GS base: the test parks
    /// lower-half bases (a user's, 0 among them) in IA32_KERNEL_GS_BASE and `swapgs` to them, as
    /// the system-call exit does before `sysretq`, with the same checks. The NMIs arrive in the
    /// test's own spin loop, never in the idle halt, which an NMI must not return into.
    fn nmi_paranoid_gs() -> Result<(), String> {
        // With FSGSBASE any canonical base may be the user's; without it only lower-half ones are
        // (the sign test's premise), reached by the entry's `swapgs` rather than WRGSBASE.
        let fsgsbase = arch::fsbase::enabled();
        let bases: &[u64] =
            if fsgsbase { &[0xffff_8000_0000_1000, 0xffff_ffff_ffff_f000, 0x7fff_dead_0000, 0] } else { &[0x7fff_dead_0000, 0] };
        for &bogus in bases {
            arch::interrupts::without_interrupts(|| -> Result<(), String> {
                // SAFETY: interrupts are off for the whole closure.
                let irq = unsafe { percpu::IrqOff::assume() };
                let block = percpu::this_block(&irq);
                let me = u64::from(percpu::cpu_index()) + 1;
                let nmi = apic::self_nmi().ok_or_else(|| String::from("no local APIC"))?;
                let before = block.counters.nmis.load(Ordering::Relaxed);
                SEEN.store(0, Ordering::Relaxed);
                EXPECT.store(me, Ordering::Relaxed);
                // SAFETY: interrupts are off; the values are canonical (and lower-half without
                // FSGSBASE); `nmi` is this CPU's ICR; with EXPECT set the handler returns,
                // touching only this CPU's block through GS (if the paranoid entry loaded it).
                let after = unsafe {
                    if fsgsbase {
                        arch::fsbase::raise_nmi_on_gs(bogus, nmi, &SEEN, 1 << 26)
                    } else {
                        arch::fsbase::raise_nmi_on_swapped_gs(bogus, nmi, &SEEN, 1 << 26)
                    }
                };
                EXPECT.store(0, Ordering::Relaxed);
                let seen = SEEN.load(Ordering::Relaxed);
                let counted = block.counters.nmis.load(Ordering::Relaxed) - before;
                if seen != me {
                    return Err(format!(
                        "GS base {bogus:#x}: the NMI handler marked CPU {seen} (index + 1; 0: none), not {me}"
                    ));
                }
                if counted != 1 {
                    return Err(format!("GS base {bogus:#x}: this CPU's NMI counter moved by {counted}, not 1"));
                }
                if after != bogus {
                    return Err(format!("GS base {bogus:#x}: after the NMI's return GS base was {after:#x}"));
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}
