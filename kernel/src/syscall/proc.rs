//! The calling thread and its process: exit, exit_group, getpid, gettid, set_tid_address,
//! arch_prctl, uname, sched_yield; clone (threads, and processes by copy-on-write), fork, vfork;
//! wait4, waitid, getppid, getpgid, getpgrp, setpgid, setsid, getsid and kill's target selection
//! (the process tree is `process::tree`; `execve` is `process::execve`); affinity, getcpu,
//! getrandom. The signal calls are `syscall::signal`'s.

use abi::linux::{errno, general as g, system::new_utsname};
use arch::{syscall::InSyscall, usercopy};

use super::SysResult;
use crate::{
    process::{self, tree},
    task::{self, uctx},
};

pub fn exit(code: u64) -> SysResult {
    process::exit_current(((code & 0xff) << 8) as i32, false)
}

pub fn exit_group(code: u64) -> SysResult {
    process::exit_current(((code & 0xff) << 8) as i32, true)
}

/// Lock-free: the caller's context holds its process's ids.
pub fn getpid(proof: &InSyscall) -> SysResult {
    Ok(u64::from(uctx::current(proof).pid()))
}

/// The main thread's id is the pid, as on Linux; other threads' ids are `process::THREAD_ID_BASE`
/// plus their scheduler id.
pub fn gettid(proof: &InSyscall) -> SysResult {
    let ctx = uctx::current(proof);
    let main = ctx.ids().main_tid.load(core::sync::atomic::Ordering::Acquire);
    Ok(if main == ctx.tid() { u64::from(ctx.pid()) } else { process::THREAD_ID_BASE + ctx.tid() })
}

pub fn set_tid_address(addr: u64) -> SysResult {
    process::set_clear_tid(addr);
    Ok(process::current_linux_tid())
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
        // The live value: with FSGSBASE on the thread may have changed it with WRFSBASE.
        ARCH_GET_FS => {
            usercopy::copy_to_user(addr, &arch::fsbase::read().to_ne_bytes()).map_err(|_| errno::EFAULT)?;
            Ok(0)
        }
        // The thread's own GS base, which the switch saves and restores like the FS base. Only with
        // FSGSBASE on: without it the paranoid trap entry tells user GS from kernel GS by its sign,
        // and the switch keeps no GS base, so user threads keep GS base 0.
        ARCH_SET_GS => {
            if addr >= USER_TOP {
                return Err(errno::EPERM);
            }
            match arch::fsbase::write_user_gs(addr) {
                Ok(true) => Ok(0),
                _ => Err(errno::EPERM),
            }
        }
        ARCH_GET_GS => {
            usercopy::copy_to_user(addr, &arch::fsbase::read_user_gs().to_ne_bytes()).map_err(|_| errno::EFAULT)?;
            Ok(0)
        }
        _ => Err(errno::EINVAL),
    }
}

/// `prctl`: PR_SET_NAME and PR_GET_NAME (the name `ps`, `/proc/PID/stat` and the fault reports
/// show; Linux's is per thread, this kernel keeps one per process); every other option is EINVAL,
/// as Linux answers an option it does not know.
pub fn prctl(option: u64, arg2: u64) -> SysResult {
    use abi::linux::prctl::{PR_GET_NAME, PR_SET_NAME};
    const TASK_COMM_LEN: usize = 16;
    let p = crate::process::current().ok_or(errno::ESRCH)?;
    match u32::try_from(option) {
        Ok(PR_SET_NAME) => {
            let mut raw = [0u8; TASK_COMM_LEN];
            usercopy::copy_from_user(&mut raw[..TASK_COMM_LEN - 1], arg2).map_err(|_| errno::EFAULT)?;
            let len = raw.iter().position(|&b| b == 0).unwrap_or(TASK_COMM_LEN - 1);
            *p.name.lock() = alloc::string::String::from_utf8_lossy(&raw[..len]).into_owned();
            Ok(0)
        }
        Ok(PR_GET_NAME) => {
            let mut raw = [0u8; TASK_COMM_LEN];
            let name = p.name();
            let n = name.len().min(TASK_COMM_LEN - 1);
            raw[..n].copy_from_slice(&name.as_bytes()[..n]);
            usercopy::copy_to_user(arg2, &raw).map_err(|_| errno::EFAULT)?;
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

/// sched_yield(). The stub turns interrupts off after the handler, so the yield may return with
/// them off.
pub fn sched_yield() -> SysResult {
    task::sched().yield_now_irqs_off();
    Ok(0)
}

/// The thread flags musl's and glibc's `pthread_create` pass.
const THREAD_FLAGS: u64 = (g::CLONE_VM | g::CLONE_FS | g::CLONE_FILES | g::CLONE_SIGHAND | g::CLONE_THREAD) as u64;
const ACCEPTED: u64 = THREAD_FLAGS
    | (g::CLONE_SYSVSEM | g::CLONE_SETTLS | g::CLONE_PARENT_SETTID | g::CLONE_CHILD_CLEARTID | g::CLONE_CHILD_SETTID | g::CLONE_DETACHED) as u64;
/// What a new process (no `CLONE_THREAD`) may ask for: its memory copied, or shared
/// (`CLONE_VM`, with or without `CLONE_VFORK`), the thread-id words, its TLS. Namespaces, pidfds, ptrace: never.
const PROCESS_FLAGS: u64 =
    (g::CLONE_VM | g::CLONE_VFORK | g::CLONE_FS | g::CLONE_FILES | g::CLONE_SYSVSEM | g::CLONE_SETTLS | g::CLONE_PARENT_SETTID | g::CLONE_CHILD_CLEARTID | g::CLONE_CHILD_SETTID) as u64;

/// clone(flags, stack, parent_tid, child_tid, tls): a thread (`CLONE_THREAD` with the flags
/// pthreads use) or a new process (by copy-on-write, or in the caller's memory with `CLONE_VM`;
/// the low byte, the exit signal, is not read: the parent gets SIGCHLD).
pub fn clone(frame: &arch::syscall::UserFrame, flags: u64, stack: u64, parent_tid: u64, child_tid: u64, tls: u64) -> SysResult {
    let flags = flags & !0xff;
    let has = |f: u32| flags & u64::from(f) != 0;
    if has(g::CLONE_THREAD) {
        if flags & THREAD_FLAGS != THREAD_FLAGS || flags & !ACCEPTED != 0 {
            return Err(errno::EINVAL);
        }
        return process::clone_thread(
            frame,
            stack,
            has(g::CLONE_SETTLS).then_some(tls),
            has(g::CLONE_PARENT_SETTID).then_some(parent_tid),
            has(g::CLONE_CHILD_SETTID).then_some(child_tid),
            has(g::CLONE_CHILD_CLEARTID).then_some(child_tid),
        );
    }
    if has(g::CLONE_SIGHAND) && !has(g::CLONE_VM) {
        return Err(errno::EINVAL);
    }
    if flags & !(PROCESS_FLAGS | u64::from(g::CLONE_SIGHAND)) != 0 {
        return Err(errno::EINVAL);
    }
    process::fork(
        frame,
        process::ForkArgs {
            stack,
            vfork: has(g::CLONE_VFORK),
            share_vm: has(g::CLONE_VM),
            share_files: has(g::CLONE_FILES),
            share_sighand: has(g::CLONE_SIGHAND),
            tls: has(g::CLONE_SETTLS).then_some(tls),
            parent_tid: has(g::CLONE_PARENT_SETTID).then_some(parent_tid),
            child_tid: has(g::CLONE_CHILD_SETTID).then_some(child_tid),
            clear_tid: has(g::CLONE_CHILD_CLEARTID).then_some(child_tid),
        },
    )
}

/// fork, and vfork (Linux's `CLONE_VM | CLONE_VFORK`: the child runs in the parent's memory, and
/// the parent waits for its exec or exit).
pub fn fork(frame: &arch::syscall::UserFrame, vfork: bool) -> SysResult {
    process::fork(frame, process::ForkArgs { stack: 0, vfork, share_vm: vfork, share_files: false, share_sighand: false, tls: None, parent_tid: None, child_tid: None, clear_tid: None })
}

/// The caller's pid.
fn me() -> Result<u32, u32> {
    process::current().map(|p| p.pid()).ok_or(errno::ESRCH)
}

/// A pid argument: 0 means the caller; negative ones do not name a process.
fn target(pid: u64) -> Result<u32, u32> {
    match pid as i32 {
        0 => me(),
        p if p > 0 => Ok(p as u32),
        _ => Err(errno::ESRCH),
    }
}

/// The parent's pid; 0 for pid 1 (as Linux gives init).
/// Lock-free, as [`getpid`]; the process tree updates the cached parent when it changes.
pub fn getppid(proof: &InSyscall) -> SysResult {
    Ok(u64::from(uctx::current(proof).ids().ppid()))
}

pub fn getpgid(pid: u64) -> SysResult {
    tree::pgid(target(pid)?).map(u64::from)
}

pub fn getsid(pid: u64) -> SysResult {
    tree::sid(target(pid)?).map(u64::from)
}

pub fn setpgid(pid: u64, pgid: u64) -> SysResult {
    let pid = pid as i32;
    if pid < 0 {
        return Err(errno::EINVAL);
    }
    tree::setpgid(me()?, pid as u32, i64::from(pgid as i32)).map(|()| 0)
}

pub fn setsid() -> SysResult {
    tree::setsid(me()?).map(u64::from)
}

/// kill(pid, sig): target selection by pid, group or all; delivery by the signal layer.
pub fn kill(pid: u64, sig: u64) -> SysResult {
    let sig = u32::try_from(sig).map_err(|_| errno::EINVAL)?;
    tree::kill(me()?, pid as i32, sig).map(|()| 0)
}

/// `struct rusage` (144 bytes on x86-64): reported as zeros (no accounting yet).
const RUSAGE_BYTES: usize = 144;

/// wait4(pid, wstatus, options, rusage): Linux's selection (`> 0`, `-1`, `0`, `< -1`) and status word.
pub fn wait4(pid: u64, wstatus: u64, options: u64, rusage: u64) -> SysResult {
    let pid = pid as i32;
    if pid == i32::MIN {
        return Err(errno::ESRCH);
    }
    let opts = abi::jobs::WaitOpts::from_wait4(options as u32)?;
    let me = me()?;
    let sel = abi::jobs::Select::from_wait4(pid, tree::pgid(me)?);
    match tree::wait(me, sel, opts)? {
        None => Ok(0),
        Some((child, ev)) => {
            if wstatus != 0 {
                usercopy::copy_to_user(wstatus, &ev.wait_status().to_ne_bytes()).map_err(|_| errno::EFAULT)?;
            }
            if rusage != 0 {
                usercopy::copy_to_user(rusage, &[0u8; RUSAGE_BYTES]).map_err(|_| errno::EFAULT)?;
            }
            Ok(u64::from(child))
        }
    }
}

const P_ALL: u64 = 0;
const P_PID: u64 = 1;
const P_PGID: u64 = 2;
/// `siginfo_t` is 128 bytes; waitid fills signo, errno, code, then pid, uid, status.
const SIGINFO_BYTES: usize = 128;
const SIGCHLD: u32 = 17;

/// waitid(idtype, id, infop, options, rusage): `P_ALL`, `P_PID`, `P_PGID` (0: the caller's group);
/// returns 0, with the child's `siginfo_t` (zeros under `WNOHANG` when none is ready).
pub fn waitid(idtype: u64, id: u64, infop: u64, options: u64, rusage: u64) -> SysResult {
    use abi::jobs::Select;
    let opts = abi::jobs::WaitOpts::from_waitid(options as u32)?;
    let me = me()?;
    let id = id as u32;
    let sel = match idtype {
        P_ALL => Select::Any,
        P_PID if id > 0 && id < i32::MAX as u32 => Select::Pid(id),
        P_PGID if id == 0 => Select::Group(tree::pgid(me)?),
        P_PGID if id < i32::MAX as u32 => Select::Group(id),
        _ => return Err(errno::EINVAL),
    };
    let found = tree::wait(me, sel, opts)?;
    let mut info = [0u8; SIGINFO_BYTES];
    if let Some((child, ev)) = found {
        let (code, status) = ev.cld();
        info[0..4].copy_from_slice(&SIGCHLD.to_ne_bytes());
        info[8..12].copy_from_slice(&code.to_ne_bytes());
        info[16..20].copy_from_slice(&child.to_ne_bytes());
        info[24..28].copy_from_slice(&status.to_ne_bytes());
    }
    if infop != 0 {
        usercopy::copy_to_user(infop, &info).map_err(|_| errno::EFAULT)?;
    }
    if rusage != 0 {
        usercopy::copy_to_user(rusage, &[0u8; RUSAGE_BYTES]).map_err(|_| errno::EFAULT)?;
    }
    Ok(0)
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

/// getresuid and getresgid: every process runs as root, so the real, effective and saved ids
/// are 0, written in that order (Linux's `put_user` each; a bad pointer is `EFAULT`).
pub fn getres_ids(real: u64, effective: u64, saved: u64) -> SysResult {
    for addr in [real, effective, saved] {
        usercopy::copy_to_user(addr, &0u32.to_ne_bytes()).map_err(|_| errno::EFAULT)?;
    }
    Ok(0)
}

/// getgroups: no supplementary groups, so the count is 0 and nothing is copied; a negative size
/// is `EINVAL`, as Linux's.
pub fn getgroups(size: u64) -> SysResult {
    if (size as i32) < 0 { Err(errno::EINVAL) } else { Ok(0) }
}

/// `pid` 0 (the caller) or a thread of the caller's process; others are `ESRCH` (processes do not
/// see each other's threads yet).
/// `Ok(None)` for the caller itself, else the other thread's scheduler id.
fn own_thread(pid: u64) -> Result<Option<u64>, u32> {
    let p = process::current().ok_or(errno::ESRCH)?;
    if pid == 0 || pid == process::current_linux_tid() {
        return Ok(None);
    }
    match process::sched_tid(pid) {
        Some(t) if process::is_thread_of(&p, t) => Ok(Some(t)),
        _ => Err(errno::ESRCH),
    }
}

/// The caller's allowed CPUs, in the kernel's `cpumask` size (8 bytes per 64 CPUs). Returns the
/// bytes copied, as Linux does (musl's sysconf counts the bits).
pub fn sched_getaffinity(pid: u64, len: u64, mask: u64) -> SysResult {
    let other = own_thread(pid)?;
    let nr = task::sched().nr_cpus();
    let bytes = nr.div_ceil(64) * 8;
    if (len as usize) < bytes || !len.is_multiple_of(8) {
        return Err(errno::EINVAL);
    }
    let mut words = alloc::vec![0u64; bytes / 8];
    match other {
        None => task::sched().current_affinity(&mut words),
        // Another thread of the process, which may have ended since the check.
        Some(t) => task::sched().affinity(sched::ThreadId(t), &mut words).map_err(|_| errno::ESRCH)?,
    }
    let raw: alloc::vec::Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    usercopy::copy_to_user(mask, &raw).map_err(|_| errno::EFAULT)?;
    Ok(bytes as u64)
}

/// Applied to the calling thread: it moves to an allowed CPU before the call returns. Another
/// thread of the process takes the mask at its next switch: at once if it is running (a
/// reschedule IPI interrupts it), when it next runs otherwise.
pub fn sched_setaffinity(pid: u64, len: u64, mask: u64) -> SysResult {
    let other = own_thread(pid)?;
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
    match other {
        None => {
            task::sched().set_current_affinity(&words).map_err(|_| errno::EINVAL)?;
        }
        Some(t) => task::sched().set_affinity(sched::ThreadId(t), &words).map_err(|e| match e {
            sched::AffinityError::NoCpu => errno::EINVAL,
            sched::AffinityError::NoThread => errno::ESRCH,
        })?,
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
