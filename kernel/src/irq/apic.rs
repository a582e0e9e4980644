//! The local APIC of every CPU: enabling it, end-of-interrupt, its id, sending inter-processor
//! interrupts, and the one-shot timer.
//!
//! Mode: x2APIC (registers are MSRs 0x800 + offset/16) where the CPU has it and `nox2apic` is not on
//! the command line, xAPIC (registers are MMIO at the base `IA32_APIC_BASE` names) otherwise. Every
//! CPU runs in the boot CPU's mode. The register layer is written here rather than taken from the
//! `x2apic` crate, whose `LocalApic` picks x2APIC whenever CPUID offers it (so `nox2apic` could not
//! be honoured), unmasks LINT0/LINT1 with vector 0, and leaves the xAPIC details (destination in ICR
//! bits 56-63, id in bits 24-31, waiting for the previous IPI's delivery) to its caller.
//!
//! Vectors: timer 0xf0, error 0xfe, spurious 0xff (`trap`'s plan). LINT0 and LINT1 are masked (no
//! device interrupts are used), so are the thermal and performance-counter entries.
//!
//! Timer: TSC-deadline mode (`IA32_TSC_DEADLINE`, MSR 0x6e0) where the CPU has it and
//! `notscdeadline` is not given, one-shot mode with divide-by-1 otherwise; `time::arm_oneshot_ns` (which
//! converts nanoseconds with the calibration it owns) and [`disarm`] work the same either way.
//!
//! Neighbours: `acpi` (the MADT's local APIC address), `time` (calibration, conversions), `ipi`
//! (the sending API for everyone else), `cpus::bringup` (INIT and start-up IPIs, [`init_ap`]).

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use arch::trap::TrapFrame;
use smp::ApicId;
use arch::{interrupts, msr};

use crate::{cpu::percpu, irq::trap};

use arch::msr::{IA32_APIC_BASE, IA32_TSC_DEADLINE, X2APIC_BASE};
const BASE_ENABLE: u64 = 1 << 11;
const BASE_X2APIC: u64 = 1 << 10;
const BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

// Register offsets in the xAPIC page; the x2APIC MSR is 0x800 + offset / 16.
const REG_ID: u32 = 0x20;
const REG_VERSION: u32 = 0x30;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
#[cfg(feature = "ktest")]
const REG_IRR: u32 = 0x200;
const REG_ESR: u32 = 0x280;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_THERMAL: u32 = 0x330;
const REG_LVT_PERF: u32 = 0x340;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3e0;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_ONESHOT: u32 = 0b00 << 17;
const LVT_TIMER_TSC_DEADLINE: u32 = 0b10 << 17;
const TIMER_DIVIDE_BY_1: u32 = 0b1011;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;

const MODE_OFF: u8 = 0;
const MODE_XAPIC: u8 = 1;
const MODE_X2APIC: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(MODE_OFF);
/// Virtual address of the xAPIC register page (xAPIC mode only).
static XAPIC_VA: AtomicU64 = AtomicU64::new(0);
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);

/// Where an IPI goes.
#[derive(Clone, Copy, Debug)]
pub enum Dest {
    /// One CPU, by its APIC id.
    Apic(ApicId),
    /// Every CPU but the sender (the ICR's "all excluding self" shorthand).
    AllButSelf,
}

/// What an IPI delivers (SDM vol. 3A, 11.6.1 "Interrupt Command Register").
#[derive(Clone, Copy, Debug)]
pub enum Delivery {
    /// An ordinary interrupt on this vector.
    Fixed(u8),
    /// A non-maskable interrupt.
    Nmi,
    /// INIT: the target resets into wait-for-SIPI.
    Init,
    /// Start-up: a CPU in wait-for-SIPI starts in real mode at `page << 12`.
    Startup(u8),
}

fn mode() -> u8 {
    MODE.load(Ordering::Relaxed)
}

fn read(reg: u32) -> u32 {
    match mode() {
        // SAFETY: x2APIC mode is on (MODE says so, and every CPU turns it on before it sets up its
        // APIC); 0x800 + reg/16 is the architectural MSR of this register (SDM table 11-6).
        MODE_X2APIC => unsafe { msr::read(X2APIC_BASE + reg / 16) as u32 },
        // SAFETY: XAPIC_VA maps the register page (set before MODE); reg is a register offset in
        // it; registers are read as aligned 32-bit words.
        MODE_XAPIC => unsafe { arch::mmio::read_u32(XAPIC_VA.load(Ordering::Relaxed) + u64::from(reg)) },
        _ => 0,
    }
}

/// The mode test is the register page's address: set only in xAPIC mode, and before any write
/// (`init_bsp` maps it, then `enable_this_cpu` sets MODE and writes), so a non-zero one says xAPIC
/// mode as MODE would, and the xAPIC write (the EOI and the timer's re-arming on every tick) loads
/// it once, for the test and the store both.
#[inline]
fn write(reg: u32, value: u32) {
    let va = XAPIC_VA.load(Ordering::Relaxed);
    if va != 0 {
        // SAFETY: as in `read`: `va` maps the register page (xAPIC mode only).
        unsafe { arch::mmio::write_u32(va + u64::from(reg), value) };
    } else if mode() == MODE_X2APIC {
        // SAFETY: as in `read`; writing these registers only changes this CPU's APIC.
        unsafe { msr::write(X2APIC_BASE + reg / 16, u64::from(value)) };
    }
}

/// Turn on the boot CPU's local APIC: choose the mode, register the handlers, set up its registers.
/// `allow_x2apic` and `allow_tsc_deadline` are false with `nox2apic` and `notscdeadline`.
pub fn init_bsp(madt_lapic_phys: Option<u64>, allow_x2apic: bool, allow_tsc_deadline: bool) {
    let f = crate::cpu::features::features();
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no side effects.
    let base = unsafe { msr::read(IA32_APIC_BASE) };
    let phys = base & BASE_ADDR_MASK;
    let x2 = f.x2apic && allow_x2apic;
    if !x2 {
        XAPIC_VA.store(crate::mm::map_mmio(phys, 0x1000), Ordering::Relaxed);
    }
    TSC_DEADLINE.store(f.tsc_deadline && allow_tsc_deadline, Ordering::Relaxed);
    trap::register(trap::VECTOR_TIMER, on_timer);
    trap::register(trap::VECTOR_APIC_ERROR, on_error);
    enable_this_cpu(x2);
    if let Some(m) = madt_lapic_phys
        && m != phys
    {
        log::warn!("apic: the MADT says the local APIC is at {m:#x}, IA32_APIC_BASE says {phys:#x}; using the latter");
    }
    let why = match (x2, f.x2apic) {
        (true, _) => "x2APIC mode",
        (false, true) => "xAPIC mode (nox2apic given)",
        (false, false) => "xAPIC mode (the CPU has no x2APIC)",
    };
    let timer = match (deadline_mode(), f.tsc_deadline) {
        (true, _) => "TSC-deadline",
        (false, true) => "one-shot (notscdeadline given)",
        (false, false) => "one-shot (the CPU has no TSC-deadline mode)",
    };
    let version = read(REG_VERSION);
    log::info!(
        "apic: {why}, registers at {phys:#x}, id {}, version {:#x}, {} LVT entries, timer {timer}",
        id().get(),
        version & 0xff,
        ((version >> 16) & 0xff) + 1
    );
}

/// Turn on this application processor's local APIC in the boot CPU's mode. Runs before the CPU has
/// its per-CPU block, so it neither logs nor panics.
pub fn init_ap() {
    enable_this_cpu(mode() == MODE_X2APIC);
}

fn enable_this_cpu(x2: bool) {
    // SAFETY: the APIC base MSR: setting EN (and then EXTD) follows the legal transitions
    // disabled -> xAPIC -> x2APIC (SDM vol. 3A, figure 11-27); leaving x2APIC for xAPIC goes
    // through disabled, the only legal way back. Nothing else on this CPU uses the APIC meanwhile.
    unsafe {
        let base = msr::read(IA32_APIC_BASE);
        if base & BASE_X2APIC != 0 && !x2 {
            msr::write(IA32_APIC_BASE, base & !(BASE_ENABLE | BASE_X2APIC));
        }
        let base = msr::read(IA32_APIC_BASE) | BASE_ENABLE;
        msr::write(IA32_APIC_BASE, base);
        if x2 {
            msr::write(IA32_APIC_BASE, base | BASE_X2APIC);
        }
    }
    MODE.store(if x2 { MODE_X2APIC } else { MODE_XAPIC }, Ordering::Relaxed);
    // Software-enable first: while the APIC is software-disabled (as an AP's is after INIT) the
    // mask bits of the LVT entries are forced on and writes cannot clear them (SDM vol. 3A,
    // 11.4.7.2), so entries programmed before this would stay masked. TCG does not enforce this;
    // KVM's APIC does, and an AP's timer then never fired.
    write(REG_SVR, SVR_ENABLE | u32::from(trap::VECTOR_SPURIOUS));
    let max_lvt = (read(REG_VERSION) >> 16) & 0xff;
    write(REG_TPR, 0);
    write(REG_LVT_LINT0, LVT_MASKED);
    write(REG_LVT_LINT1, LVT_MASKED);
    if max_lvt >= 4 {
        write(REG_LVT_PERF, LVT_MASKED);
    }
    if max_lvt >= 5 {
        write(REG_LVT_THERMAL, LVT_MASKED);
    }
    write(REG_LVT_ERROR, u32::from(trap::VECTOR_APIC_ERROR));
    // The error status register latches on a write; two writes clear what was there before.
    write(REG_ESR, 0);
    write(REG_ESR, 0);
    write(REG_TIMER_DIVIDE, TIMER_DIVIDE_BY_1);
    set_timer_mode();
}

/// Put the timer in its working mode (TSC-deadline or one-shot), unmasked and disarmed.
fn set_timer_mode() {
    let vector = u32::from(trap::VECTOR_TIMER);
    if deadline_mode() {
        write(REG_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | vector);
        // The deadline MSR write must not pass the mode change (Linux works around the same
        // reordering on some CPUs with this fence).
        arch::cpu::fence_before_wrmsr();
        write_deadline(0);
    } else {
        write(REG_TIMER_INITIAL, 0);
        write(REG_LVT_TIMER, LVT_TIMER_ONESHOT | vector);
    }
}

fn deadline_mode() -> bool {
    TSC_DEADLINE.load(Ordering::Relaxed)
}

fn write_deadline(tsc: u64) {
    // SAFETY: the CPU has TSC-deadline mode (checked before TSC_DEADLINE was set) and the timer is
    // in it; the write only (re)arms or (with 0) disarms this CPU's timer.
    unsafe { msr::write(IA32_TSC_DEADLINE, tsc) };
}

/// Signal end of interrupt to this CPU's local APIC.
#[inline]
pub fn eoi() {
    write(REG_EOI, 0);
}

/// This CPU's APIC id (32 bits in x2APIC mode, 8 in xAPIC mode).
pub fn id() -> ApicId {
    let raw = read(REG_ID);
    ApicId::new(if mode() == MODE_X2APIC { raw } else { raw >> 24 })
}

/// Whether the APIC runs in x2APIC mode (32-bit ids) rather than xAPIC mode (8-bit ids).
pub fn is_x2apic() -> bool {
    mode() == MODE_X2APIC
}

/// Whether the timer runs in TSC-deadline mode.
pub fn timer_is_tsc_deadline() -> bool {
    deadline_mode()
}

/// Whether `vector` is requested and not yet delivered on this CPU (its IRR bit); for tests.
#[cfg(feature = "ktest")]
pub fn is_pending(vector: u8) -> bool {
    let reg = REG_IRR + 0x10 * u32::from(vector / 32);
    read(reg) & (1 << (vector % 32)) != 0
}

/// Send an IPI. Every store before the call is visible to the target before the IPI can arrive.
///
/// In x2APIC mode the ICR is one MSR and one WRMSR sends: an interrupt cannot fall between two
/// halves of it, so the interrupt flag is left as it is (the reschedule IPI's senders already run
/// with interrupts off, and saving the flag cost them a PUSHF, a test and a branch on every IPI).
/// Inlined, a caller's constant `dest` and `what` fold into the ICR value.
#[inline]
pub fn send(dest: Dest, what: Delivery) {
    let (mode_bits, vector) = match what {
        Delivery::Fixed(v) => (0b000, v),
        Delivery::Nmi => (0b100, 0),
        Delivery::Init => (0b101, 0),
        Delivery::Startup(page) => (0b110, page),
    };
    let (shorthand, apic) = match dest {
        Dest::Apic(a) => (0b00, a.get()),
        Dest::AllButSelf => (0b11, 0),
    };
    let low = u32::from(vector) | (mode_bits << 8) | ICR_LEVEL_ASSERT | (shorthand << 18);
    if mode() == MODE_X2APIC {
        // The WRMSR does not wait for earlier stores; the fence keeps the IPI behind them. An
        // interrupt taken between the two changes neither: the caller's stores are already ordered.
        arch::cpu::fence_before_wrmsr();
        // SAFETY: the x2APIC ICR is one 64-bit MSR, destination in bits 32-63; one write sends.
        unsafe { msr::write(X2APIC_BASE + 0x30, (u64::from(apic) << 32) | u64::from(low)) };
    } else if mode() == MODE_XAPIC {
        send_xapic(shorthand == 0, apic, low);
    }
}

/// The ICR write that sends an NMI to this CPU itself (the "self" shorthand), for a test that must
/// send it from assembly that cannot call [`send`] (it runs on a GS base that is not the kernel's).
#[cfg(feature = "ktest")]
pub fn self_nmi() -> Option<arch::fsbase::SelfNmi> {
    let low = (0b100 << 8) | ICR_LEVEL_ASSERT | (0b01 << 18);
    match mode() {
        MODE_X2APIC => Some(arch::fsbase::SelfNmi::Msr { msr: X2APIC_BASE + 0x30, value: u64::from(low) }),
        MODE_XAPIC => {
            let va = XAPIC_VA.load(Ordering::Relaxed);
            wait_icr_idle(|| {
                // SAFETY: as in `send_xapic`: the ICR's low word of the mapped register page.
                unsafe { arch::mmio::read_u32(va + u64::from(REG_ICR_LOW)) }
            });
            Some(arch::fsbase::SelfNmi::Mmio { addr: va + u64::from(REG_ICR_LOW), value: low })
        }
        _ => None,
    }
}

/// `send` in xAPIC mode: the ICR is two registers, so interrupts are held off while they are
/// written (a handler sending its own IPI in between would mix them up). `to_one` says whether the
/// destination word `apic` is written (no shorthand). Out of line, so that `send` inlines small.
#[inline(never)]
fn send_xapic(to_one: bool, apic: u32, low: u32) {
    interrupts::without_interrupts(|| {
        // The ICR is a store to the uncacheable register page, which x86 keeps behind every
        // earlier store (stores are not reordered with stores): no fence. The mode and the page
        // are read once, not once per register access.
        let va = XAPIC_VA.load(Ordering::Relaxed);
        // SAFETY: XAPIC_VA maps the register page (set before MODE); the offset is the ICR's
        // aligned 32-bit low word; reading it has no effect.
        let icr_low = || unsafe { arch::mmio::read_u32(va + u64::from(REG_ICR_LOW)) };
        wait_icr_idle(icr_low);
        if to_one {
            // SAFETY: as above, for the ICR's high word (the destination); writing it sends
            // nothing.
            unsafe { arch::mmio::write_u32(va + u64::from(REG_ICR_HIGH), apic << 24) };
        }
        // The hardware keeps the order; this keeps the compiler from moving an earlier plain
        // store (a queue insertion, a mailbox) past the volatile write. No instruction.
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        // SAFETY: as above; writing the low word sends the IPI this function is asked for.
        unsafe { arch::mmio::write_u32(va + u64::from(REG_ICR_LOW), low) };
    });
}

/// xAPIC: wait until the previous IPI left this APIC (delivery status idle). Modern APICs clear it
/// within a few cycles; the bound only keeps a broken APIC from hanging the caller forever.
/// `icr_low` reads the ICR's low word.
#[inline(always)]
fn wait_icr_idle(icr_low: impl Fn() -> u32) {
    for _ in 0..10_000_000u32 {
        if icr_low() & ICR_DELIVERY_PENDING == 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

/// Arm this CPU's timer (in TSC-deadline mode) to interrupt once when the TSC reaches `tsc`.
/// Replaces any earlier arming; `time::arm_oneshot_ns` turns a delay into this.
#[inline]
pub fn arm_deadline(tsc: u64) {
    write_deadline(tsc.max(1));
}

/// Arm this CPU's timer (in one-shot mode) to interrupt once after `ticks` timer ticks (at least
/// 1). Replaces any earlier arming; `time::arm_oneshot_ns` turns a delay into this. Inline: it
/// is the timer tick's re-arming, a mode test and one register write.
#[inline(always)]
pub fn arm_count(ticks: u32) {
    write(REG_TIMER_INITIAL, ticks.max(1));
}

/// Cancel this CPU's pending timer interrupt, if it was armed and has not fired.
#[inline]
pub fn disarm() {
    if deadline_mode() {
        write_deadline(0);
    } else {
        write(REG_TIMER_INITIAL, 0);
    }
}

/// For calibration: run the timer masked in one-shot mode from 2^32 - 1 downwards.
pub(crate) fn start_free_count() {
    write(REG_LVT_TIMER, LVT_MASKED | LVT_TIMER_ONESHOT | u32::from(trap::VECTOR_TIMER));
    write(REG_TIMER_INITIAL, u32::MAX);
}

/// For calibration: the timer's current count.
pub(crate) fn current_count() -> u32 {
    read(REG_TIMER_CURRENT)
}

/// For calibration: back to the working mode, disarmed.
pub(crate) fn stop_free_count() {
    write(REG_TIMER_INITIAL, 0);
    set_timer_mode();
}

/// Test support: while `vector` is pending on this CPU, halt with interrupts on so that it is
/// delivered (a pending interrupt ends the halt at once; a short window of `sti` is not enough
/// where a hypervisor injects interrupts only at its own exits), then go back to the caller's
/// interrupt state.
#[cfg(feature = "ktest")]
pub fn deliver_pending(vector: u8) {
    let was_enabled = interrupts::are_enabled();
    while is_pending(vector) {
        arch::cpu::enable_interrupts_and_halt();
    }
    if was_enabled {
        interrupts::enable();
    }
}

fn on_timer(_frame: &mut TrapFrame) {
    percpu::count(percpu::Counter::TimerInterrupts);
    eoi();
}

fn on_error(_frame: &mut TrapFrame) {
    // The ESR holds the errors latched since the last write: write, then read (SDM 11.5.3).
    write(REG_ESR, 0);
    let esr = read(REG_ESR);
    eoi();
    log::warn!("apic: error interrupt, error status {esr:#x}");
}
