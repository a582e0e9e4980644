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
    process::current().map(|p| u64::from(p.pid())).ok_or(errno::ESRCH)
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
    let pid = process::current().map_or(0, |p| p.pid());
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

/// The thread flags musl's and glibc's `pthread_create` pass; anything else (a new process: fork
/// comes later, namespaces never) is refused.
const THREAD_FLAGS: u64 = (g::CLONE_VM | g::CLONE_FS | g::CLONE_FILES | g::CLONE_SIGHAND | g::CLONE_THREAD) as u64;
const ACCEPTED: u64 = THREAD_FLAGS
    | (g::CLONE_SYSVSEM | g::CLONE_SETTLS | g::CLONE_PARENT_SETTID | g::CLONE_CHILD_CLEARTID | g::CLONE_CHILD_SETTID | g::CLONE_DETACHED) as u64;

/// clone(flags, stack, parent_tid, child_tid, tls): threads only.
pub fn clone(frame: &arch::syscall::UserFrame, flags: u64, stack: u64, parent_tid: u64, child_tid: u64, tls: u64) -> SysResult {
    // The low byte is the exit signal (0 for threads).
    let flags = flags & !0xff;
    if flags & THREAD_FLAGS != THREAD_FLAGS || flags & !ACCEPTED != 0 {
        return Err(errno::ENOSYS);
    }
    let has = |f: u32| flags & u64::from(f) != 0;
    process::clone_thread(
        frame,
        stack,
        has(g::CLONE_SETTLS).then_some(tls),
        has(g::CLONE_PARENT_SETTID).then_some(parent_tid),
        has(g::CLONE_CHILD_SETTID).then_some(child_tid),
        has(g::CLONE_CHILD_CLEARTID).then_some(child_tid),
    )
}

pub fn getcpu(cpu: u64, node: u64) -> SysResult {
    let here = task::sched().current().map_or(0, |t| t.cpu.0);
    if cpu != 0 {
        usercopy::copy_to_user(cpu, &here.to_ne_bytes()).map_err(|_| errno::EFAULT)?;
    }
    if node != 0 {
        usercopy::copy_to_user(node, &0u32.to_ne_bytes()).map_err(|_| errno::EFAULT)?;
    }
    Ok(0)
}

/// `pid` 0 (the caller) or a thread of the caller's process; others are `ESRCH` (processes do not
/// see each other's threads yet).
/// `Ok(true)` for the caller itself.
fn own_thread(pid: u64) -> Result<bool, u32> {
    let p = process::current().ok_or(errno::ESRCH)?;
    if pid == 0 || pid == process::current_tid() {
        Ok(true)
    } else if process::is_thread_of(&p, pid) {
        Ok(false)
    } else {
        Err(errno::ESRCH)
    }
}

/// The caller's allowed CPUs, in the kernel's `cpumask` size (8 bytes per 64 CPUs). Returns the
/// bytes copied, as Linux does (musl's sysconf counts the bits).
pub fn sched_getaffinity(pid: u64, len: u64, mask: u64) -> SysResult {
    let me = own_thread(pid)?;
    let nr = task::sched().nr_cpus();
    let bytes = nr.div_ceil(64) * 8;
    if (len as usize) < bytes || !len.is_multiple_of(8) {
        return Err(errno::EINVAL);
    }
    let mut words = alloc::vec![0u64; bytes / 8];
    if me {
        task::sched().current_affinity(&mut words);
    } else {
        // Another thread of the process, which may have ended since the check.
        task::sched().affinity(sched::ThreadId(pid), &mut words).map_err(|_| errno::ESRCH)?;
    }
    let raw: alloc::vec::Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    usercopy::copy_to_user(mask, &raw).map_err(|_| errno::EFAULT)?;
    Ok(bytes as u64)
}

/// Applied to the calling thread: it moves to an allowed CPU before the call returns. Another
/// thread of the process takes the mask at its next switch: at once if it is running (a
/// reschedule IPI interrupts it), when it next runs otherwise.
pub fn sched_setaffinity(pid: u64, len: u64, mask: u64) -> SysResult {
    let me = own_thread(pid)?;
    let nr = task::sched().nr_cpus();
    let len = (len as usize).min(nr.div_ceil(64) * 8).min(128);
    let mut raw = alloc::vec![0u8; len];
    usercopy::copy_from_user(&mut raw, mask).map_err(|_| errno::EFAULT)?;
    let words: alloc::vec::Vec<u64> = raw
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    if !(0..nr).any(|c| words.get(c / 64).is_some_and(|w| w & (1 << (c % 64)) != 0)) {
        return Err(errno::EINVAL);
    }
    if me {
        task::sched()
            .set_current_affinity(&words)
            .map_err(|_| errno::EINVAL)?;
    } else {
        task::sched().set_affinity(sched::ThreadId(pid), &words).map_err(|e| match e {
            sched::AffinityError::NoCpu => errno::EINVAL,
            sched::AffinityError::NoThread => errno::ESRCH,
        })?;
    }
    Ok(0)
}

/// getrandom: RDRAND where the CPU has it, else the TSC mix of `process::random_bytes` (not for
/// keys; said in the boot log's CPU line, which names RDRAND's absence).
pub fn getrandom(buf: u64, len: u64, flags: u64) -> SysResult {
    if flags & !u64::from(g::GRND_NONBLOCK | g::GRND_RANDOM | g::GRND_INSECURE) != 0 {
        return Err(errno::EINVAL);
    }
    let len = len.min(1 << 20);
    let mut done = 0;
    while done < len {
        let chunk = process::random_bytes();
        let n = (len - done).min(chunk.len() as u64);
        usercopy::copy_to_user(buf + done, &chunk[..n as usize]).map_err(|_| errno::EFAULT)?;
        done += n;
    }
    Ok(done)
}

/// tkill/tgkill: SIGKILL and SIGABRT end the process (the signal as its status); other signals are
/// not delivered yet and report success, as a blocked signal would.
pub fn tgkill(tgid: Option<u64>, tid: u64, sig: u64) -> SysResult {
    let p = process::current().ok_or(errno::ESRCH)?;
    if tgid.is_some_and(|g| g != u64::from(p.pid())) || sig > 64 {
        return Err(if sig > 64 { errno::EINVAL } else { errno::ESRCH });
    }
    if !process::is_thread_of(&p, tid) {
        return Err(errno::ESRCH);
    }
    if sig == u64::from(g::SIGKILL) || sig == u64::from(g::SIGABRT) {
        drop(p);
        process::exit_current(sig as i32, true);
    }
    Ok(0)
}
