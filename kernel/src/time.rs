//! Time: the TSC and the local APIC timer, calibrated at boot against the best reference clock the
//! machine has, and the conversions the rest of the kernel uses ([`now_ns`], [`delay_us`],
//! [`ns_to_tsc_ticks_ceil`]) and the timer's arming ([`arm_at_ns`], [`arm_oneshot_ns`]).
//!
//! Reference, in order of preference: the HPET main counter, the ACPI PM timer (both from `acpi`),
//! the TSC frequency CPUID leaf 0x15 states, the PIT's channel 2 counting down 10 ms, and last the
//! nominal base frequency of CPUID leaf 0x16. With a counting reference the TSC is measured over
//! 10 ms windows, each reference read bracketed by two TSC reads: at least 3 windows, more (up to
//! 20) while none has brackets under 0.2% of its length; the window whose brackets are narrowest
//! wins, and the boot log warns if even those exceed 1%.
//!
//! The local APIC timer is then measured against the TSC itself, and its rate kept as an upper bound
//! of "timer ticks per TSC tick": a one-shot of `d` ns so computed never fires before `d` ns have
//! passed on the TSC clock (the `timer_calibrated` test checks exactly that). The boot line shows
//! the best estimate of the rate instead.
//!
//! [`now_ns`] counts from calibration and assumes the TSCs of all CPUs tick together (invariant,
//! synchronised at reset, as on current machines and under QEMU); the boot line says when CPUID does
//! not promise an invariant TSC.
//!
//! `exit-after=` is kept here as a power-off deadline on the same clock ([`set_power_off_after_s`]):
//! it counts from calibration (the first milliseconds of boot, before the APs start) and every
//! CPU's timer interrupt checks it ([`power_off_if_due`]), so neither a slow bring-up nor a run
//! queue full of demonstration threads ahead of the main thread can push it back.
//!
//! Neighbours: `acpi` (HPET and PM timer addresses), `cpu::features` (CPUID frequencies), `apic` (the
//! timer [`arm_oneshot_ns`] arms with these conversions).
//!
//! Layer: above `irq` (the APIC timer, the timer vector), below `cpus`.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};


use crate::{
    acpi::{self, PmTimer},
    cpu::power,
};

const NS_PER_S: u128 = 1_000_000_000;
const WINDOW_NS: u64 = 10_000_000;
/// Windows measured at least...
const MIN_TRIALS: u32 = 3;
/// ...and at most, while no window's brackets are narrower than [`GOOD_PPM`] of it.
const MAX_TRIALS: u32 = 20;
/// A window is good when the reads around its ends take less than this share of it (millionths):
/// always on hardware (a read takes well under a microsecond), mostly under emulation (tens of
/// microseconds), not always on a busy host, where one read can take milliseconds.
const GOOD_PPM: u64 = 2_000;
/// Past this, the boot log warns that the rate is uncertain.
const WARN_PPM: u64 = 10_000;
const PM_TIMER_HZ: u64 = 3_579_545;
const PIT_HZ: u64 = 1_193_182;

/// TSC ticks per second; 0 until calibrated.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// The `exit-after=` deadline in [`now_ns`] time; 0: none.
static POWER_OFF_AT_NS: AtomicU64 = AtomicU64::new(0);
/// Set by the CPU that powers off, so that one CPU says it.
static POWERING_OFF: AtomicBool = AtomicBool::new(false);
/// The TSC at calibration: [`now_ns`] counts from here.
static TSC_BASE: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC tick, as a 32.32 fixed-point number.
static NS_PER_TSC_FP32: AtomicU64 = AtomicU64::new(0);
/// An upper bound of local APIC timer ticks per TSC tick, 32.32 fixed point.
static LAPIC_PER_TSC_FP32: AtomicU64 = AtomicU64::new(0);
/// TSC ticks per nanosecond, 32.32 fixed point, the reciprocal of [`NS_PER_TSC_FP32`] rounded up:
/// turns a deadline on the [`now_ns`] clock back into a TSC value with a multiplication, and never
/// into an earlier one.
static TSC_PER_NS_FP32: AtomicU64 = AtomicU64::new(0);
/// Local APIC timer ticks per nanosecond, 32.32 fixed point: the product of [`TSC_PER_NS_FP32`]
/// and [`LAPIC_PER_TSC_FP32`], rounded up, so a count made with it never falls short. One
/// multiplication turns a delay into a one-shot count ([`arm_after_ns`]). 0 before calibration
/// and in TSC-deadline mode, which arms no count: one test tells [`arm_at_ns_from`] its way.
static LAPIC_PER_NS_FP32: AtomicU64 = AtomicU64::new(0);

/// A counting reference clock.
enum RefClock {
    Hpet { va: u64, wide: bool },
    Pm(PmTimer),
}

impl RefClock {
    fn read(&self) -> u64 {
        match *self {
            // SAFETY: the HPET's main counter register (offset 0xf0) in its register block, mapped
            // uncached by `hpet_clock`; a read has no side effects.
            RefClock::Hpet { va, wide: true } => unsafe { arch::mmio::read_u64(va + 0xf0) },
            // SAFETY: as above; a 32-bit counter is read with a 32-bit access.
            RefClock::Hpet { va, wide: false } => unsafe { u64::from(arch::mmio::read_u32(va + 0xf0)) },
            // SAFETY: the FADT names this port as the PM timer's; reading it has no side effects.
            RefClock::Pm(PmTimer::Port { port, .. }) => u64::from(unsafe { arch::port::read_u32(port) }),
            // SAFETY: the FADT names this address as the PM timer's; `acpi` mapped it uncached at its
            // direct-map address.
            RefClock::Pm(PmTimer::Mmio { phys, .. }) => unsafe {
                u64::from(arch::mmio::read_u32(crate::mm::phys_to_virt(phys)))
            },
        }
    }

    /// Ticks between two reads, through one wrap-around of the counter.
    fn delta(&self, from: u64, to: u64) -> u64 {
        let bits = match *self {
            RefClock::Hpet { wide: true, .. } => 64,
            RefClock::Hpet { wide: false, .. } => 32,
            RefClock::Pm(PmTimer::Port { bits32, .. } | PmTimer::Mmio { bits32, .. }) => {
                if bits32 {
                    32
                } else {
                    24
                }
            }
        };
        let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        to.wrapping_sub(from) & mask
    }
}

/// Set up the HPET as a reference: read its period, start its main counter if it is stopped.
fn hpet_clock(h: &acpi::HpetInfo) -> Option<(RefClock, u64)> {
    let va = crate::mm::map_mmio(h.phys, 0x400);
    // SAFETY: the ACPI HPET table names this register block; offset 0 is the capabilities register
    // (read only), 0x10 the general configuration whose bit 0 starts the main counter. No other
    // code uses the HPET.
    let period_fs = unsafe {
        let caps = arch::mmio::read_u64(va);
        let c = arch::mmio::read_u64(va + 0x10);
        if c & 1 == 0 {
            arch::mmio::write_u64(va + 0x10, c | 1);
        }
        caps >> 32
    };
    // A period of zero or above 100 ns (10 MHz) is not a working HPET (the specification's bound).
    if period_fs == 0 || period_fs > 100_000_000 {
        log::warn!("time: the HPET reports a period of {period_fs} fs; not using it");
        return None;
    }
    Some((RefClock::Hpet { va, wide: h.counter_64bit }, 1_000_000_000_000_000 / period_fs))
}

/// Whether to stop measuring after `trials` windows, the narrowest brackets being `width` TSC ticks
/// for a window of `window` TSC ticks.
fn enough(trials: u32, width: u64, window: u64) -> bool {
    trials >= MAX_TRIALS || (trials >= MIN_TRIALS && u128::from(width) * 1_000_000 <= u128::from(window) * u128::from(GOOD_PPM))
}

/// TSC ticks per second measured against `clock` (`clock_hz` ticks per second) over 10 ms windows,
/// from the window whose brackets are narrowest; with that width relative to the window, in
/// millionths.
fn tsc_hz_against(clock: &RefClock, clock_hz: u64) -> (u64, u64) {
    let window = (u128::from(clock_hz) * u128::from(WINDOW_NS) / NS_PER_S) as u64;
    let bracket = || {
        let a = arch::tsc::start();
        let r = clock.read();
        let b = arch::tsc::start();
        (a, r, b)
    };
    let mut best = (u64::MAX, 1, 0); // (bracket width, window, hz), in TSC ticks
    let mut trials = 0;
    while !enough(trials, best.0, best.1) {
        trials += 1;
        let (a0, r0, a1) = bracket();
        let (b0, r1, b1) = loop {
            let s = bracket();
            if clock.delta(r0, s.1) >= window {
                break s;
            }
        };
        let tsc = (b0 + b1) / 2 - (a0 + a1) / 2;
        let hz = (u128::from(tsc) * u128::from(clock_hz) / u128::from(clock.delta(r0, r1))) as u64;
        let width = (a1 - a0) + (b1 - b0);
        log::debug!("time: TSC window {trials}: {tsc} TSC ticks, {hz} Hz, read brackets {} ppm of it", ppm(width, tsc));
        if width < best.0 {
            best = (width, tsc, hz);
        }
    }
    (best.2, ppm(best.0, best.1))
}

fn ppm(part: u64, whole: u64) -> u64 {
    (u128::from(part) * 1_000_000 / u128::from(whole.max(1))) as u64
}

/// TSC ticks per second from the PIT's channel 2 counting down 10 ms: the median of a few runs, or
/// None if the PIT never signals the end of its count.
fn tsc_hz_against_pit() -> Option<u64> {
    let count = (PIT_HZ * WINDOW_NS / 1_000_000_000) as u16;
    let mut samples = [0u64; 5];
    for s in samples.iter_mut() {
        // SAFETY: ports 0x61 (gate of channel 2 and its output), 0x43 (mode) and 0x42 (channel 2
        // count) of the 8254 PIT on every PC-compatible machine. Channel 2 only drives the speaker,
        // which the gate bits keep off; nothing else in the kernel uses it.
        let done = unsafe {
            use arch::port::{read_u8, write_u8};
            let v = read_u8(0x61);
            write_u8(0x61, (v & !0x02) | 0x01);
            write_u8(0x43, 0b1011_0000); // channel 2, low then high byte, mode 0
            write_u8(0x42, count as u8);
            write_u8(0x42, (count >> 8) as u8);
            let t0 = arch::tsc::start();
            let mut done = None;
            for _ in 0..100_000_000u32 {
                if read_u8(0x61) & 0x20 != 0 {
                    done = Some(arch::tsc::start() - t0);
                    break;
                }
            }
            done
        };
        *s = done?;
    }
    samples.sort_unstable();
    Some(samples[samples.len() / 2] * PIT_HZ / u64::from(count))
}

/// Local APIC timer ticks per TSC tick (32.32) over 10 ms windows: an upper bound (the tightest
/// of the windows), which arming uses, and the best estimate (the midpoints of the window with the
/// narrowest brackets), which the boot line shows, with that window's bracket width in millionths.
/// Under emulation a register read takes microseconds, so the bound and the estimate differ by a
/// few tenths of a percent; on hardware by far less.
fn lapic_per_tsc(tsc_hz: u64) -> (u64, u64, u64) {
    let window_tsc = (u128::from(tsc_hz) * u128::from(WINDOW_NS) / NS_PER_S) as u64;
    crate::irq::apic::start_free_count();
    let bracket = || {
        let a = arch::tsc::start();
        let c = crate::irq::apic::current_count();
        let b = arch::tsc::start();
        (a, c, b)
    };
    let (mut upper, mut best) = (u64::MAX, (u64::MAX, 0));
    let mut trials = 0;
    while !enough(trials, best.0, window_tsc) {
        trials += 1;
        let (a0, c0, a1) = bracket();
        while arch::tsc::read() - a1 < window_tsc {
            core::hint::spin_loop();
        }
        let (b0, c1, b1) = bracket();
        // The reads are at least b0 - a1 TSC ticks apart; the count may be off by one tick.
        let ticks = u128::from(c0.wrapping_sub(c1));
        upper = upper.min((((ticks + 1) << 32) / u128::from(b0 - a1)) as u64 + 1);
        let width = (a1 - a0) + (b1 - b0);
        log::debug!("time: LAPIC window {trials}: {ticks} timer ticks in {} TSC ticks, read brackets {} ppm of it", b0 - a1, ppm(width, window_tsc));
        if width < best.0 {
            best = (width, ((ticks << 32) / u128::from((b0 + b1) / 2 - (a0 + a1) / 2)) as u64);
        }
    }
    crate::irq::apic::stop_free_count();
    (upper, best.1, ppm(best.0, window_tsc))
}

/// Calibrate the TSC and the local APIC timer (boot CPU, after `acpi` and the boot CPU's APIC) and
/// print the result.
pub fn init() {
    let p = acpi::platform();
    let f = crate::cpu::features::features();
    let hpet = p.hpet.as_ref().and_then(hpet_clock);
    let (tsc_hz, tsc_ppm, source) = if let Some((clock, hz)) = hpet {
        let (tsc_hz, ppm) = tsc_hz_against(&clock, hz);
        (tsc_hz, Some(ppm), "HPET")
    } else if let Some(pm) = p.pm_timer {
        let (tsc_hz, ppm) = tsc_hz_against(&RefClock::Pm(pm), PM_TIMER_HZ);
        (tsc_hz, Some(ppm), "ACPI PM timer")
    } else if let Some(hz) = f.tsc_hz_cpuid_15 {
        (hz, None, "CPUID leaf 0x15, no HPET or PM timer")
    } else if let Some(hz) = tsc_hz_against_pit() {
        (hz, None, "PIT channel 2, no HPET or PM timer")
    } else if let Some(hz) = f.base_hz_cpuid_16 {
        (hz, None, "CPUID leaf 0x16 nominal frequency, no HPET, PM timer or PIT")
    } else {
        panic!("time: no HPET, PM timer, PIT or CPUID frequency to calibrate the TSC against")
    };
    assert!(tsc_hz >= 1_000_000, "time: TSC calibrated at {tsc_hz} Hz against the {source}; not believable");
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);
    let ns_per_tsc_fp32 = ((NS_PER_S << 32) / u128::from(tsc_hz)) as u64;
    NS_PER_TSC_FP32.store(ns_per_tsc_fp32, Ordering::Relaxed);
    TSC_PER_NS_FP32.store((1u128 << 64).div_ceil(u128::from(ns_per_tsc_fp32)) as u64, Ordering::Relaxed);
    TSC_BASE.store(arch::tsc::read(), Ordering::Relaxed);
    let (lapic_upper, lapic_estimate, lapic_ppm) = lapic_per_tsc(tsc_hz);
    for (what, ppm) in [("TSC", tsc_ppm.unwrap_or(0)), ("LAPIC timer", lapic_ppm)] {
        if ppm > WARN_PPM {
            log::warn!(
                "time: the {what} rate is uncertain by {}.{:02}%: reading the reference took that long (a busy host?)",
                ppm / 10_000,
                ppm / 100 % 100
            );
        }
    }
    LAPIC_PER_TSC_FP32.store(lapic_upper, Ordering::Relaxed);
    let tsc_per_ns = u128::from(TSC_PER_NS_FP32.load(Ordering::Relaxed));
    let lapic_per_ns = (tsc_per_ns * u128::from(lapic_upper)).div_ceil(1 << 32).min(u128::from(u64::MAX));
    if !crate::irq::apic::timer_is_tsc_deadline() {
        LAPIC_PER_NS_FP32.store(lapic_per_ns as u64, Ordering::Relaxed);
    }
    let lapic_hz = (u128::from(lapic_estimate) * u128::from(tsc_hz)) >> 32;
    log::info!(
        "time: TSC {}.{:03} MHz ({source}), LAPIC timer {}.{:03} MHz (bus clock, divide by 1), timer mode {}{}",
        tsc_hz / 1_000_000,
        tsc_hz / 1_000 % 1_000,
        lapic_hz / 1_000_000,
        lapic_hz / 1_000 % 1_000,
        if crate::irq::apic::timer_is_tsc_deadline() { "TSC-deadline" } else { "one-shot" },
        if f.invariant_tsc { "" } else { "; CPUID does not promise an invariant TSC" }
    );
}

/// Power the machine off (success) once `s` seconds have passed since calibration. After [`init`].
pub fn set_power_off_after_s(s: u64) {
    let at = now_ns().saturating_add(s.saturating_mul(1_000_000_000)).max(1);
    POWER_OFF_AT_NS.store(at, Ordering::Relaxed);
}

/// The `exit-after=` deadline in [`now_ns`] time, if one was set.
pub fn power_off_deadline_ns() -> Option<u64> {
    let at = POWER_OFF_AT_NS.load(Ordering::Relaxed);
    (at != 0).then_some(at)
}

/// Power off if the `exit-after=` deadline has passed: one load when there is none. Called from
/// every CPU's timer interrupt and by the thread that sleeps until the deadline; the first caller
/// past it says so and powers off, the others halt.
#[inline(always)]
pub fn power_off_if_due() {
    let at = POWER_OFF_AT_NS.load(Ordering::Relaxed);
    if at == 0 || now_ns() < at {
        return;
    }
    power_off_now();
}

/// The rest of [`power_off_if_due`], once the deadline has passed: out of line, so that its frame
/// (the log's formatting) stays off the timer interrupt's path.
#[cold]
#[inline(never)]
fn power_off_now() -> ! {
    if POWERING_OFF.swap(true, Ordering::AcqRel) {
        arch::cpu::halt_forever();
    }
    if let Some((written, lost)) = crate::cpu::trace::dump(tsc_hz()) {
        log::info!("trace: {written} records written to the debug console, {lost} lost (overwritten or in flight)");
    }
    log::info!("exit-after: {} ms since boot, powering off", now_ns() / 1_000_000);
    power::exit(power::Exit::Success)
}

/// TSC ticks per second (0 before calibration).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Nanoseconds since calibration, from this CPU's TSC (0 before calibration).
pub fn now_ns() -> u64 {
    tsc_ticks_to_ns(arch::tsc::read().wrapping_sub(TSC_BASE.load(Ordering::Relaxed)))
}

/// `ticks` TSC ticks in nanoseconds, rounded down (0 before calibration).
pub fn tsc_ticks_to_ns(ticks: u64) -> u64 {
    ((u128::from(ticks) * u128::from(NS_PER_TSC_FP32.load(Ordering::Relaxed))) >> 32) as u64
}

/// `ns` nanoseconds in TSC ticks, rounded up; None before calibration.
pub fn ns_to_tsc_ticks_ceil(ns: u64) -> Option<u64> {
    let hz = u128::from(tsc_hz());
    (hz != 0).then(|| (u128::from(ns) * hz).div_ceil(NS_PER_S).min(u128::from(u64::MAX)) as u64)
}

/// Arm this CPU's timer to interrupt (vector 0xf0) once, no earlier than `ns` nanoseconds from now.
/// Replaces any earlier arming (`apic::disarm` cancels it). In one-shot mode the longest delay is
/// 2^32 - 1 timer ticks (4.29 s at 1 GHz); a longer one fires at that limit, which the timer
/// handler must tell from its deadline. Before calibration it does nothing.
#[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "the scheduler arms deadlines; only the timer test arms a delay"))]
pub fn arm_oneshot_ns(ns: u64) {
    // One more nanosecond: `now_ns` rounds down, so the deadline is at least `ns` after now.
    arm_at_ns(now_ns().saturating_add(ns).saturating_add(1));
}

/// Arm this CPU's timer to interrupt (vector 0xf0) once, no earlier than the moment [`now_ns`]
/// reads `deadline_ns` (at once if that has passed). Replaces any earlier arming; the one-shot
/// limit of [`arm_oneshot_ns`] applies. Before calibration it does nothing.
///
/// The timer tick's path: the deadline goes to the TSC by one multiplication, no division, and
/// the clock is read only in one-shot mode (to turn the deadline into a count), not at all in
/// TSC-deadline mode.
#[inline(never)]
pub fn arm_at_ns(deadline_ns: u64) {
    use crate::irq::apic;
    let tsc_per_ns = TSC_PER_NS_FP32.load(Ordering::Relaxed);
    if tsc_per_ns == 0 {
        return;
    }
    // Rounded up twice (the factor and the product), so `now_ns` at this TSC value reads at least
    // `deadline_ns`.
    let ticks = ((u128::from(deadline_ns) * u128::from(tsc_per_ns) + u128::from(u32::MAX)) >> 32).min(u128::from(u64::MAX)) as u64;
    let deadline_tsc = TSC_BASE.load(Ordering::Relaxed).saturating_add(ticks);
    if apic::timer_is_tsc_deadline() {
        // A deadline of 0 would disarm; any TSC value already past fires at once.
        apic::arm_deadline(deadline_tsc.max(1));
    } else {
        let tsc_ticks = deadline_tsc.saturating_sub(arch::tsc::read()).max(1);
        let per_tsc = u128::from(LAPIC_PER_TSC_FP32.load(Ordering::Relaxed));
        let lapic_ticks = (u128::from(tsc_ticks) * per_tsc + u128::from(u32::MAX)) >> 32;
        apic::arm_count(lapic_ticks.clamp(1, u128::from(u32::MAX)) as u32);
    }
}

/// Arm this CPU's timer for `deadline_ns`, as [`arm_at_ns`] does, given `now_ns`, a reading of
/// [`now_ns`] this CPU took a little earlier (the timer tick's, say). In one-shot mode the count is
/// the gap from that reading, by one multiplication: no clock read, no conversion to TSC ticks.
/// The time since the reading only delays the interrupt, never brings it earlier. TSC-deadline
/// mode takes [`arm_at_ns`], which reads no clock either.
#[inline]
pub fn arm_at_ns_from(deadline_ns: u64, now_ns: u64) {
    let per_ns = LAPIC_PER_NS_FP32.load(Ordering::Relaxed);
    if per_ns == 0 {
        arm_at_ns(deadline_ns);
        return;
    }
    arm_after_ns(deadline_ns.saturating_sub(now_ns), per_ns);
}

/// Arm the one-shot count for `delay_ns`, at `per_ns` timer ticks per nanosecond (32.32): rounded
/// up, plus one tick for the rounding of the factor's two parts, at least 1 and at most the
/// count's limit (see [`arm_oneshot_ns`]).
#[inline(always)]
fn arm_after_ns(delay_ns: u64, per_ns: u64) {
    let ticks = (u128::from(delay_ns) * u128::from(per_ns)) >> 32;
    let ticks = u32::try_from(ticks).unwrap_or(u32::MAX).saturating_add(2);
    crate::irq::apic::arm_count(ticks);
}

/// Spin for at least `us` microseconds.
///
/// # Panics
/// Before calibration, when the TSC's rate is unknown.
pub fn delay_us(us: u64) {
    let ticks = ns_to_tsc_ticks_ceil(us.saturating_mul(1_000)).expect("time::delay_us before the TSC was calibrated");
    let start = arch::tsc::read();
    while arch::tsc::read().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

#[cfg(feature = "ktest")]
mod tests {
    use alloc::string::String;

    use arch::interrupts;

    use super::*;
    use crate::{cpu::percpu, ensure, irq::{apic, trap::VECTOR_TIMER}, testing::Test};

    crate::register_tests![Test { name: "timer_calibrated", min_cpus: 1, expect_fault: false, run: timer_calibrated }];

    /// Arm the timer for d and watch its request bit with interrupts off: it must appear no earlier
    /// than d after arming, measured on the TSC, and within a generous bound; then, with interrupts
    /// on, its handler must run exactly once.
    fn timer_calibrated() -> Result<(), String> {
        let mode = if apic::timer_is_tsc_deadline() { "TSC-deadline" } else { "one-shot" };
        interrupts::without_interrupts(|| {
            apic::disarm();
            apic::deliver_pending(VECTOR_TIMER);
            for d_ns in [20_000u64, 200_000, 1_000_000, 5_000_000] {
                ensure!(!apic::is_pending(VECTOR_TIMER), "timer vector pending before arming");
                let limit_ticks = ns_to_tsc_ticks_ceil(10 * d_ns + 500_000_000).unwrap_or(u64::MAX);
                let t0 = arch::tsc::start();
                crate::time::arm_oneshot_ns(d_ns);
                let fired = loop {
                    if apic::is_pending(VECTOR_TIMER) {
                        break Some(arch::tsc::start());
                    }
                    if arch::tsc::read() - t0 > limit_ticks {
                        break None;
                    }
                };
                let Some(t1) = fired else {
                    apic::disarm();
                    return Err(alloc::format!(
                        "{mode} timer armed for {d_ns} ns had not fired after {} ns",
                        tsc_ticks_to_ns(limit_ticks)
                    ));
                };
                let elapsed_ns = tsc_ticks_to_ns(t1 - t0);
                ensure!(elapsed_ns >= d_ns, "{mode} timer armed for {d_ns} ns fired after {elapsed_ns} ns on the TSC clock");
                let handled = || {
                    // SAFETY: interrupts are off here (without_interrupts).
                    let guard = unsafe { percpu::IrqOff::assume() };
                    percpu::get(&guard).counters.timer_interrupts.load(Ordering::Relaxed)
                };
                let before = handled();
                apic::deliver_pending(VECTOR_TIMER);
                let times = handled() - before;
                ensure!(times == 1, "{mode} timer armed for {d_ns} ns was handled {times} times once interrupts were on");
            }
            Ok(())
        })
    }
}

/// Nanoseconds since 1970 at the moment `now_ns` read 0, from the CMOS real-time clock (read once,
/// by [`wall_clock_ns`]'s first caller); 0 if the clock reads as nonsense.
static EPOCH_AT_ZERO_NS: spin::Once<u64> = spin::Once::new();

/// The wall clock (CLOCK_REALTIME): the CMOS clock's reading at first use, advanced by the TSC.
pub fn wall_clock_ns() -> u64 {
    let base = *EPOCH_AT_ZERO_NS.call_once(|| {
        let now = now_ns();
        cmos_unix_seconds().map_or(0, |s| (s * 1_000_000_000).saturating_sub(now))
    });
    base.saturating_add(now_ns())
}

/// One CMOS register (the RTC's index and data ports, 0x70 and 0x71; bit 7 of the index keeps NMI
/// enabled as it is).
fn cmos(reg: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the PC's CMOS index and data registers; reading a clock register
    // has no side effect beyond selecting it, and only this function (called under the Once above)
    // uses them.
    unsafe {
        arch::port::write_u8(0x70, reg);
        arch::port::read_u8(0x71)
    }
}

/// The RTC's date and time as seconds since 1970 (MC146818 registers: 0 s, 2 min, 4 h, 7 day,
/// 8 month, 9 year, 0x32 century where present; status B bit 2 = binary, bit 1 = 24-hour).
fn cmos_unix_seconds() -> Option<u64> {
    let read = || {
        for _ in 0..1_000_000 {
            if cmos(0x0a) & 0x80 == 0 {
                break;
            }
        }
        [cmos(0), cmos(2), cmos(4), cmos(7), cmos(8), cmos(9), cmos(0x32)]
    };
    // Read until two readings agree, so an update between the reads cannot tear the date.
    let mut r = read();
    for _ in 0..10 {
        let again = read();
        if again == r {
            break;
        }
        r = again;
    }
    let b = cmos(0x0b);
    let bin = |v: u8| if b & 4 != 0 { u64::from(v) } else { u64::from((v >> 4) * 10 + (v & 0x0f)) };
    let [s, m, h, d, mo, y, c] = r;
    let mut hour = bin(h & 0x7f);
    if b & 2 == 0 && h & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    let century = if c != 0 && bin(c) >= 19 { bin(c) } else { 20 };
    let year = century * 100 + bin(y);
    let (month, day) = (bin(mo), bin(d));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || year < 1970 {
        return None;
    }
    // Days from 1970-01-01 to the date (the proleptic Gregorian calendar, March-based years).
    let (y2, m2) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y2 / 400;
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3600 + bin(m) * 60 + bin(s))
}
