//! The calling thread and its process: exit, exit_group, getpid, gettid, set_tid_address,
//! arch_prctl, uname, sched_yield, and the signal calls that only record for now (delivery comes
//! with signals proper).

use alloc::collections::BTreeMap;

use abi::linux::{errno, general as g, system::new_utsname};
use arch::usercopy;

use super::SysResult;
use crate::{process, task};

pub fn exit(code: u64) -> SysResult {
    process::exit_current(((code & 0xff) << 8) as i32, false)
}

pub fn exit_group(code: u64) -> SysResult {
    process::exit_current(((code & 0xff) << 8) as i32, true)
}

pub fn getpid() -> SysResult {
    process::current().map(|p| u64::from(p.pid)).ok_or(errno::ESRCH)
}

/// Thread ids are the scheduler's; the first thread's is not the pid (as in Linux after a
/// `clone`, unlike its main thread): programs compare gettid with itself, not with getpid.
pub fn gettid() -> SysResult {
    Ok(process::current_tid())
}

pub fn set_tid_address(addr: u64) -> SysResult {
    process::set_clear_tid(addr);
    Ok(process::current_tid())
}

// From Linux's arch/x86/include/uapi/asm/prctl.h, next to ARCH_SET_FS (which linux-raw-sys has):
// 0x1001 ARCH_SET_GS, 0x1002 ARCH_SET_FS, 0x1003 ARCH_GET_FS, 0x1004 ARCH_GET_GS.
const ARCH_SET_GS: u64 = g::ARCH_SET_FS as u64 - 1;
const ARCH_SET_FS: u64 = g::ARCH_SET_FS as u64;
const ARCH_GET_FS: u64 = g::ARCH_SET_FS as u64 + 1;
const ARCH_GET_GS: u64 = g::ARCH_SET_FS as u64 + 2;

/// End of addresses a thread pointer may hold (Linux: `TASK_SIZE_MAX`, else `EPERM`).
const USER_TOP: u64 = abi::USER_TOP;

pub fn arch_prctl(code: u64, addr: u64) -> SysResult {
    match code {
        ARCH_SET_FS => {
            if addr >= USER_TOP {
                return Err(errno::EPERM);
            }
            // Record first: a switch between the two steps then restores the new value anyway.
            task::sched().set_current_fs_base(addr);
            arch::fsbase::write(addr).map_err(|_| errno::EPERM)?;
            Ok(0)
        }
        ARCH_GET_FS => {
            usercopy::copy_to_user(addr, &arch::fsbase::read().to_ne_bytes()).map_err(|_| errno::EFAULT)?;
            Ok(0)
        }
        // User GS bases are not supported: the kernel's entry relies on user GS base 0.
        ARCH_SET_GS => Err(errno::EPERM),
        ARCH_GET_GS => {
            usercopy::copy_to_user(addr, &0u64.to_ne_bytes()).map_err(|_| errno::EFAULT)?;
            Ok(0)
        }
        _ => Err(errno::EINVAL),
    }
}

pub fn uname(buf: u64) -> SysResult {
    const FIELD: usize = 65;
    const _: () = assert!(core::mem::size_of::<new_utsname>() == 6 * FIELD);
    let mut raw = [0u8; 6 * FIELD];
    for (i, s) in ["Linux", "multicore", "6.1.0", "#1 SMP", "x86_64", "(none)"].iter().enumerate() {
        raw[i * FIELD..i * FIELD + s.len()].copy_from_slice(s.as_bytes());
    }
    usercopy::copy_to_user(buf, &raw).map_err(|_| errno::EFAULT)?;
    Ok(0)
}

pub fn sched_yield() -> SysResult {
    task::sched().yield_now();
    Ok(0)
}

/// The kernel's `sigset_t` is 8 bytes; the calls take its size and refuse any other.
const SIGSET_BYTES: u64 = 8;
const SIGKILL: u64 = 9;
const SIGSTOP: u64 = 19;

/// Each thread's signal mask (recorded; nothing is delivered yet).
static MASKS: spin::Mutex<BTreeMap<u64, u64>> = spin::Mutex::new(BTreeMap::new());
/// Each process's `struct sigaction`s, as the program gave them (32 bytes on x86-64).
static ACTIONS: spin::Mutex<BTreeMap<(u32, u64), [u8; 32]>> = spin::Mutex::new(BTreeMap::new());

pub fn rt_sigprocmask(how: u64, set: u64, oldset: u64, size: u64) -> SysResult {
    if size != SIGSET_BYTES {
        return Err(errno::EINVAL);
    }
    let tid = process::current_tid();
    let old = MASKS.lock().get(&tid).copied().unwrap_or(0);
    let new = if set != 0 {
        let mut raw = [0u8; 8];
        usercopy::copy_from_user(&mut raw, set).map_err(|_| errno::EFAULT)?;
        let v = u64::from_ne_bytes(raw);
        let unblockable = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));
        let m = match u32::try_from(how).map_err(|_| errno::EINVAL)? {
            g::SIG_BLOCK => old | v,
            g::SIG_UNBLOCK => old & !v,
            g::SIG_SETMASK => v,
            _ => return Err(errno::EINVAL),
        };
        Some(m & !unblockable)
    } else {
        None
    };
    if oldset != 0 {
        usercopy::copy_to_user(oldset, &old.to_ne_bytes()).map_err(|_| errno::EFAULT)?;
    }
    if let Some(m) = new {
        MASKS.lock().insert(tid, m);
    }
    Ok(0)
}

pub fn rt_sigaction(sig: u64, act: u64, oact: u64, size: u64) -> SysResult {
    if size != SIGSET_BYTES || !(1..=64).contains(&sig) {
        return Err(errno::EINVAL);
    }
    let pid = process::current().map_or(0, |p| p.pid);
    let old = ACTIONS.lock().get(&(pid, sig)).copied().unwrap_or([0; 32]);
    let new = if act != 0 {
        if sig == SIGKILL || sig == SIGSTOP {
            return Err(errno::EINVAL);
        }
        let mut raw = [0u8; 32];
        usercopy::copy_from_user(&mut raw, act).map_err(|_| errno::EFAULT)?;
        Some(raw)
    } else {
        None
    };
    if oact != 0 {
        usercopy::copy_to_user(oact, &old).map_err(|_| errno::EFAULT)?;
    }
    if let Some(raw) = new {
        ACTIONS.lock().insert((pid, sig), raw);
    }
    Ok(0)
}
