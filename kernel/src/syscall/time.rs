//! Clocks and sleeping: clock_gettime, time, gettimeofday, nanosleep, clock_nanosleep (interruptible
//! by signals), and the timespec helpers the futex calls share.
//!
//! Clocks: MONOTONIC (and _RAW, _COARSE, BOOTTIME) count from boot on the kernel's TSC clock.
//! REALTIME is the CMOS clock's reading at its first use, advanced by the same TSC clock. The
//! CPU-time clocks count what the scheduler charged on the same clock at its accounting points
//! (ticks, switches that read the clock, thread end, and this read itself; see `sched::scheduler`):
//! THREAD_CPUTIME_ID the calling thread's run time, PROCESS_CPUTIME_ID its address space's account
//! (every thread of the process, live or ended) plus the caller's part not yet charged (none, as
//! the read charges it). The
//! process's other threads running at that moment are behind by at most one tick each; time in
//! the kernel counts, as on Linux (user + system).

use abi::linux::{errno, general as g};
use arch::usercopy;

use super::SysResult;
use crate::process::signal;

const NS: u64 = 1_000_000_000;

/// Read a `struct timespec` at `addr` as nanoseconds (`EINVAL` for a negative or out-of-range one).
pub fn read_timespec(addr: u64) -> Result<u64, u32> {
    let mut raw = [0u8; 16];
    usercopy::copy_from_user(&mut raw, addr).map_err(|_| errno::EFAULT)?;
    let sec = i64::from_ne_bytes(raw[..8].try_into().unwrap_or_default());
    let nsec = i64::from_ne_bytes(raw[8..].try_into().unwrap_or_default());
    if sec < 0 || !(0..NS as i64).contains(&nsec) {
        return Err(errno::EINVAL);
    }
    Ok((sec as u64).saturating_mul(NS).saturating_add(nsec as u64))
}

fn write_timespec(addr: u64, ns: u64) -> Result<(), u32> {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&((ns / NS) as i64).to_ne_bytes());
    raw[8..].copy_from_slice(&((ns % NS) as i64).to_ne_bytes());
    usercopy::copy_to_user(addr, &raw).map_err(|_| errno::EFAULT)
}

/// An absolute time on the wall clock (`realtime`) or the monotonic clock, as a monotonic deadline.
pub fn clock_to_monotonic(t: u64, realtime: bool) -> u64 {
    if realtime { t.saturating_sub(crate::time::wall_clock_ns().saturating_sub(crate::time::now_ns())) } else { t }
}

fn clock_now(clock: u64) -> Result<u64, u32> {
    match u32::try_from(clock).map_err(|_| errno::EINVAL)? {
        g::CLOCK_REALTIME | g::CLOCK_REALTIME_COARSE => Ok(crate::time::wall_clock_ns()),
        g::CLOCK_MONOTONIC
        | g::CLOCK_MONOTONIC_RAW
        | g::CLOCK_MONOTONIC_COARSE
        | g::CLOCK_BOOTTIME => Ok(crate::time::now_ns()),
        g::CLOCK_THREAD_CPUTIME_ID => Ok(crate::task::sched().current_cpu_time().0),
        g::CLOCK_PROCESS_CPUTIME_ID => {
            let (thread_ns, uncharged_ns) = crate::task::sched().current_cpu_time();
            Ok(crate::process::current().map_or(thread_ns, |p| p.space().cpu_ns() + uncharged_ns))
        }
        _ => Err(errno::EINVAL),
    }
}

pub fn clock_gettime(clock: u64, tp: u64) -> SysResult {
    let now = clock_now(clock)?;
    write_timespec(tp, now)?;
    Ok(0)
}

pub fn clock_getres(clock: u64, tp: u64) -> SysResult {
    clock_now(clock)?;
    if tp != 0 {
        write_timespec(tp, 1)?;
    }
    Ok(0)
}

/// An interruptible sleep of `ns`: a signal ends it with the time left in `rem` (when given).
/// Relative sleeps answer `ERESTART_RESTARTBLOCK`: `EINTR` after a handler, and when no handler ran
/// (a stop and SIGCONT), `restart_syscall` sleeps the time left, as on Linux. Absolute ones answer
/// `ERESTARTNOHAND`: the same call again is the same deadline.
fn sleep(ns: u64, rem: Option<u64>, absolute: bool) -> SysResult {
    match crate::ipc::intr::sleep_ns(ns) {
        Ok(()) => Ok(0),
        Err(i) => {
            if let Some(r) = rem {
                write_timespec(r, i.left_ns)?;
            }
            if absolute {
                return Err(abi::signal::restart::ERESTARTNOHAND);
            }
            let deadline_ns = crate::time::now_ns().saturating_add(i.left_ns);
            signal::set_restart(signal::RestartBlock::Sleep { deadline_ns, rem: rem.unwrap_or(0) });
            Err(abi::signal::restart::ERESTART_RESTARTBLOCK)
        }
    }
}

pub fn nanosleep(req: u64, rem: u64) -> SysResult {
    let ns = read_timespec(req)?;
    sleep(ns, (rem != 0).then_some(rem), false)
}

/// restart_syscall: the rest of the call a signal interrupted without a handler; `EINTR` when
/// nothing was recorded (Linux's `do_no_restart_syscall`).
pub fn restart_syscall() -> SysResult {
    match signal::take_restart() {
        Some(signal::RestartBlock::Sleep { deadline_ns, rem }) => {
            sleep(deadline_ns.saturating_sub(crate::time::now_ns()), (rem != 0).then_some(rem), false)
        }
        None => Err(errno::EINTR),
    }
}

pub fn clock_nanosleep(clock: u64, flags: u64, req: u64, rem: u64) -> SysResult {
    // As on Linux: a thread cannot sleep on its own CPU-time clock.
    if clock == u64::from(g::CLOCK_THREAD_CPUTIME_ID) {
        return Err(errno::EOPNOTSUPP);
    }
    let clock_ns = clock_now(clock)?;
    let t = read_timespec(req)?;
    let realtime = matches!(u32::try_from(clock), Ok(g::CLOCK_REALTIME | g::CLOCK_REALTIME_COARSE));
    // The process clock advances at most as fast as the monotonic one times its running threads:
    // sleeping the difference in monotonic time wakes no later than Linux would, maybe earlier.
    let now = if realtime || clock == u64::from(g::CLOCK_PROCESS_CPUTIME_ID) { clock_ns } else { crate::time::now_ns() };
    let abs = flags & u64::from(g::TIMER_ABSTIME) != 0;
    let ns = if abs { t.saturating_sub(now) } else { t };
    sleep(ns, (rem != 0 && !abs).then_some(rem), abs)
}

/// `time`: seconds of the wall clock, also stored at `tloc` unless it is null.
pub fn time(tloc: u64) -> SysResult {
    let s = crate::time::wall_clock_ns() / NS;
    if tloc != 0 {
        usercopy::copy_to_user(tloc, &(s as i64).to_ne_bytes()).map_err(|_| errno::EFAULT)?;
    }
    Ok(s)
}

/// `gettimeofday`: the wall clock as a `struct timeval`; the time-zone argument, obsolete on
/// Linux, is filled with zeros (UTC) when given.
pub fn gettimeofday(tv: u64, tz: u64) -> SysResult {
    let ns = crate::time::wall_clock_ns();
    if tv != 0 {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&((ns / NS) as i64).to_ne_bytes());
        raw[8..].copy_from_slice(&(((ns % NS) / 1000) as i64).to_ne_bytes());
        usercopy::copy_to_user(tv, &raw).map_err(|_| errno::EFAULT)?;
    }
    if tz != 0 {
        usercopy::copy_to_user(tz, &[0u8; 8]).map_err(|_| errno::EFAULT)?;
    }
    Ok(0)
}
