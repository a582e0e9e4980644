//! The signal calls: rt_sigaction, rt_sigprocmask, rt_sigpending, rt_sigsuspend, rt_sigtimedwait, pause,
//! sigaltstack, rt_sigreturn, kill, tkill, tgkill, alarm, setitimer, getitimer. The state and the
//! delivery are `process::signal`'s; this file decodes the user structures.
//!
//! `kill(pid)` with `pid` > 0 sends to that process; 0 and negative values (process groups, every
//! process) reach the caller's own process until the process tree selects targets.

use alloc::sync::Arc;

use abi::{
    linux::{errno, general as g},
    signal::{AltStack, SIGACTION_SIZE, SigAction, SigInfo, SigSet, restart},
    timer::ITimerVal,
};
use arch::{syscall::UserFrame, usercopy};

use super::SysResult;
use crate::{ipc::intr, process, process::signal};

/// The kernel's `sigset_t` is 8 bytes; the calls take its size and refuse any other.
const SIGSET_BYTES: u64 = 8;

fn read_set(addr: u64) -> Result<SigSet, u32> {
    let mut raw = [0u8; 8];
    usercopy::copy_from_user(&mut raw, addr).map_err(|_| errno::EFAULT)?;
    Ok(SigSet(u64::from_ne_bytes(raw)))
}

fn write_set(addr: u64, s: SigSet) -> Result<(), u32> {
    usercopy::copy_to_user(addr, &s.0.to_ne_bytes()).map_err(|_| errno::EFAULT)
}

fn signo(sig: u64) -> Result<u32, u32> {
    u32::try_from(sig).ok().filter(|s| (1..=abi::signal::NSIG).contains(s)).ok_or(errno::EINVAL)
}

pub fn rt_sigaction(sig: u64, act: u64, oact: u64, size: u64) -> SysResult {
    if size != SIGSET_BYTES {
        return Err(errno::EINVAL);
    }
    let s = signo(sig)?;
    let new = if act != 0 {
        let mut raw = [0u8; SIGACTION_SIZE];
        usercopy::copy_from_user(&mut raw, act).map_err(|_| errno::EFAULT)?;
        Some(SigAction::from_bytes(&raw))
    } else {
        None
    };
    let old = signal::set_action(s, new)?;
    if oact != 0 {
        usercopy::copy_to_user(oact, &old.to_bytes()).map_err(|_| errno::EFAULT)?;
    }
    Ok(0)
}

pub fn rt_sigprocmask(how: u64, set: u64, oldset: u64, size: u64) -> SysResult {
    if size != SIGSET_BYTES {
        return Err(errno::EINVAL);
    }
    let how = u32::try_from(how).map_err(|_| errno::EINVAL)?;
    let new = if set != 0 {
        if !matches!(how, g::SIG_BLOCK | g::SIG_UNBLOCK | g::SIG_SETMASK) {
            return Err(errno::EINVAL);
        }
        Some(read_set(set)?)
    } else {
        None
    };
    let old = signal::change_mask(how, new)?;
    if oldset != 0 {
        write_set(oldset, old)?;
    }
    Ok(0)
}

pub fn rt_sigpending(set: u64, size: u64) -> SysResult {
    if size > SIGSET_BYTES {
        return Err(errno::EINVAL);
    }
    write_set(set, signal::pending_blocked()?)?;
    Ok(0)
}

/// Sleep until a signal is to be acted on (the flag `process::signal` keeps): `pause` and
/// `rt_sigsuspend` never return otherwise.
fn wait_for_signal() -> SysResult {
    let q = Arc::new(sched::WaitQueue::new());
    let _ = intr::wait(&q, || false);
    Err(restart::ERESTARTNOHAND)
}

pub fn rt_sigsuspend(mask: u64, size: u64) -> SysResult {
    if size != SIGSET_BYTES {
        return Err(errno::EINVAL);
    }
    signal::suspend_mask(read_set(mask)?)?;
    wait_for_signal()
}

pub fn pause() -> SysResult {
    wait_for_signal()
}

/// rt_sigtimedwait(set, info, timeout, size): take a pending signal of `set` (normally blocked)
/// without running its handler; wait up to `timeout` (for ever without one) for one to come. The
/// wait polls in slices of `intr::SLICE_NS` (the set's signals are blocked, so no flag says they
/// came); another signal to act on ends it with `EINTR`.
pub fn rt_sigtimedwait(set: u64, info: u64, timeout: u64, size: u64) -> SysResult {
    if size != SIGSET_BYTES {
        return Err(errno::EINVAL);
    }
    let want = read_set(set)?;
    let deadline = if timeout != 0 { Some(crate::time::now_ns().saturating_add(super::time::read_timespec(timeout)?)) } else { None };
    loop {
        if let Some(i) = signal::take_waited(want)? {
            if info != 0 {
                usercopy::copy_to_user(info, &i.to_bytes()).map_err(|_| errno::EFAULT)?;
            }
            return Ok(u64::from(i.signo));
        }
        let now = crate::time::now_ns();
        let left = match deadline {
            Some(d) if now >= d => return Err(errno::EAGAIN),
            Some(d) => d - now,
            None => u64::MAX,
        };
        if intr::sleep_ns(left.min(intr::SLICE_NS)).is_err() {
            return Err(errno::EINTR);
        }
    }
}

/// `stack_t`: ss_sp, ss_flags (int, padded), ss_size.
const STACK_T_BYTES: usize = 24;

pub fn sigaltstack(ss: u64, old: u64, rsp: u64) -> SysResult {
    let new = if ss != 0 {
        let mut raw = [0u8; STACK_T_BYTES];
        usercopy::copy_from_user(&mut raw, ss).map_err(|_| errno::EFAULT)?;
        let w = |i: usize| u64::from_ne_bytes(raw[i..i + 8].try_into().unwrap_or_default());
        Some(AltStack { sp: w(0), flags: w(8) as u32, size: w(16) })
    } else {
        None
    };
    let prev = signal::alt_stack(new, rsp)?;
    if old != 0 {
        let mut raw = [0u8; STACK_T_BYTES];
        raw[0..8].copy_from_slice(&prev.sp.to_ne_bytes());
        raw[8..12].copy_from_slice(&prev.flags.to_ne_bytes());
        raw[16..24].copy_from_slice(&prev.size.to_ne_bytes());
        usercopy::copy_to_user(old, &raw).map_err(|_| errno::EFAULT)?;
    }
    Ok(0)
}

pub fn rt_sigreturn(frame: &mut UserFrame) -> SysResult {
    Ok(signal::sigreturn(frame))
}

fn sender() -> u32 {
    process::current().map_or(0, |p| p.pid())
}

/// tkill (`tgid` None) and tgkill: thread `tid` (of process `tgid`).
pub fn tgkill(tgid: Option<u64>, tid: u64, sig: u64) -> SysResult {
    if sig > u64::from(abi::signal::NSIG) || (tid as i64) <= 0 || tgid.is_some_and(|t| (t as i64) <= 0) {
        return Err(errno::EINVAL);
    }
    // Linux's thread id to the scheduler's (the main thread's id is the pid).
    let tid = process::sched_tid(tid).ok_or(errno::ESRCH)?;
    if let Some(tg) = tgid
        && !process::thread_in_process(tid, tg as u32)
    {
        return Err(errno::ESRCH);
    }
    if sig == 0 {
        return signal::check_target(Some(tid), None).map(|()| 0);
    }
    signal::send_to_thread(tid, SigInfo::user(sig as u32, sender(), true))?;
    Ok(0)
}

pub fn alarm(seconds: u64) -> SysResult {
    // Linux takes an unsigned int; larger values are cut to it.
    Ok(u64::from(signal::alarm(seconds as u32)?))
}

const ITIMER_REAL: u64 = 0;

fn write_itimer(addr: u64, v: ITimerVal) -> Result<(), u32> {
    usercopy::copy_to_user(addr, &v.to_bytes()).map_err(|_| errno::EFAULT)
}

pub fn setitimer(which: u64, new: u64, old: u64) -> SysResult {
    if which != ITIMER_REAL {
        // ITIMER_VIRTUAL and ITIMER_PROF need per-thread CPU time, which the scheduler does not keep.
        return Err(errno::EINVAL);
    }
    let v = if new != 0 {
        let mut raw = [0u8; 32];
        usercopy::copy_from_user(&mut raw, new).map_err(|_| errno::EFAULT)?;
        ITimerVal::from_bytes(&raw)
    } else {
        ITimerVal::default()
    };
    let prev = signal::set_timer(v)?;
    if old != 0 {
        write_itimer(old, prev)?;
    }
    Ok(0)
}

pub fn getitimer(which: u64, cur: u64) -> SysResult {
    if which != ITIMER_REAL {
        return Err(errno::EINVAL);
    }
    write_itimer(cur, signal::get_timer()?)?;
    Ok(0)
}
