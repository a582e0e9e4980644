//! futex(2): WAIT, WAKE, REQUEUE, CMP_REQUEUE, WAIT_BITSET, WAKE_BITSET, with PRIVATE and
//! CLOCK_REALTIME, and timeouts. The queues and the sleeping are `ipc::futex`'s. Words in
//! `MAP_SHARED` memory are shared between processes unless the call says `FUTEX_PRIVATE_FLAG`.

use abi::{
    futex::{FutexKey, MATCH_ANY},
    linux::{errno, general as g},
};

use arch::syscall::InSyscall;

use super::{SysResult, time};
use crate::{
    ipc::futex,
    process,
    task::uctx::{self, UserCtx},
};

/// The `space` of a key that names a word by its frame: no pid is this large.
const BY_FRAME: u64 = u64::MAX;

/// The key of the futex word at `addr`. A word in `MAP_SHARED` memory, without
/// `FUTEX_PRIVATE_FLAG`, is named by its frame and offset (as Linux names a shared futex by its
/// page), so processes that share the frame meet on one queue; every other word by (the process's
/// memory, `Process::futex_space`, shared under `CLONE_VM`; address). The word is read first, which fills a page never touched (its frame is the one a
/// later fork shares); `EFAULT` if it cannot be read. A private key needs no lock: the caller's
/// context holds the memory's name.
fn key_of(ctx: &UserCtx, addr: u64, op: u32) -> Result<FutexKey, u32> {
    if !addr.is_multiple_of(4) {
        return Err(errno::EINVAL);
    }
    if op & g::FUTEX_PRIVATE_FLAG == 0 {
        let p = process::current().ok_or(errno::ESRCH)?;
        let shared = p.mem().lock(crate::task::sched()).vmas.find(addr).is_some_and(|v| v.kind == abi::vma::VmaKind::Shared);
        if shared {
            let mut word = [0u8; 4];
            arch::usercopy::copy_from_user(&mut word, addr).map_err(|_| errno::EFAULT)?;
            let page = addr & !(abi::PAGE_SIZE - 1);
            if let Some((pa, _)) = p.space().translate(page) {
                return Ok(FutexKey { space: BY_FRAME, addr: pa | (addr - page) });
            }
        }
    }
    Ok(FutexKey { space: ctx.ids().futex_space(), addr })
}

fn wait_error(e: futex::WaitError) -> u32 {
    match e {
        futex::WaitError::Changed => errno::EAGAIN,
        futex::WaitError::Fault => errno::EFAULT,
        futex::WaitError::TimedOut => errno::ETIMEDOUT,
        // Linux: ERESTARTSYS for an untimed wait, ERESTART_RESTARTBLOCK (EINTR under a handler)
        // for a timed one; see `wait` below.
        futex::WaitError::Interrupted => abi::signal::restart::ERESTARTSYS,
    }
}

/// The call: the two operations of every hand-off here, inline in the table's handler, the rest in
/// [`futex_general`], whose frame the hand-off does not pay for.
#[inline(always)]
pub fn futex(proof: &InSyscall, uaddr: u64, op: u64, val: u64, timeout: u64, uaddr2: u64, val3: u64) -> SysResult {
    let ctx = uctx::current(proof);
    let op = op as u32;
    // The two calls of every hand-off first, with what the general path below would decide for
    // them: a private FUTEX_WAKE, and a private FUTEX_WAIT without a timeout.
    if op == g::FUTEX_WAKE | g::FUTEX_PRIVATE_FLAG && uaddr.is_multiple_of(4) {
        let key = FutexKey { space: ctx.ids().futex_space(), addr: uaddr };
        return Ok(u64::from(futex::wake_from_syscall(ctx, key, val as u32, MATCH_ANY)));
    }
    if op == g::FUTEX_WAIT | g::FUTEX_PRIVATE_FLAG && timeout == 0 && uaddr.is_multiple_of(4) {
        let key = FutexKey { space: ctx.ids().futex_space(), addr: uaddr };
        futex::wait(ctx, key, uaddr, val as u32, MATCH_ANY, None).map_err(wait_error)?;
        return Ok(0);
    }
    futex_general(ctx, uaddr, op, val, timeout, uaddr2, val3)
}

/// Every operation, by the general rules.
#[inline(never)]
fn futex_general(ctx: &UserCtx, uaddr: u64, op: u32, val: u64, timeout: u64, uaddr2: u64, val3: u64) -> SysResult {
    let cmd = op & !(g::FUTEX_PRIVATE_FLAG | g::FUTEX_CLOCK_REALTIME);
    let realtime = op & g::FUTEX_CLOCK_REALTIME != 0;
    let val = val as u32;
    match cmd {
        g::FUTEX_WAIT | g::FUTEX_WAIT_BITSET => {
            let bitset = if cmd == g::FUTEX_WAIT { MATCH_ANY } else { val3 as u32 };
            if bitset == 0 {
                return Err(errno::EINVAL);
            }
            if realtime && cmd == g::FUTEX_WAIT {
                // Linux accepts CLOCK_REALTIME only with the bitset variant (and LOCK_PI ops).
                return Err(errno::ENOSYS);
            }
            let key = key_of(ctx, uaddr, op)?;
            let deadline = if timeout == 0 {
                None
            } else {
                let t = time::read_timespec(timeout)?;
                Some(if cmd == g::FUTEX_WAIT {
                    // Relative, on the monotonic clock.
                    crate::time::now_ns().saturating_add(t)
                } else {
                    // Absolute, on the clock the flag names; both clocks count from boot here.
                    time::clock_to_monotonic(t, realtime)
                })
            };
            futex::wait(ctx, key, uaddr, val, bitset, deadline).map_err(|e| match (e, deadline) {
                // A timed wait is not restarted after a handler (its deadline would move); without
                // one it restarts with the same relative timeout (Linux keeps the first deadline).
                (futex::WaitError::Interrupted, Some(_)) => abi::signal::restart::ERESTARTNOHAND,
                _ => wait_error(e),
            })?;
            Ok(0)
        }
        g::FUTEX_WAKE | g::FUTEX_WAKE_BITSET => {
            let bitset = if cmd == g::FUTEX_WAKE { MATCH_ANY } else { val3 as u32 };
            if bitset == 0 {
                return Err(errno::EINVAL);
            }
            Ok(u64::from(futex::wake_from_syscall(ctx, key_of(ctx, uaddr, op)?, val, bitset)))
        }
        g::FUTEX_REQUEUE | g::FUTEX_CMP_REQUEUE => {
            // For the requeue ops the timeout argument carries nr_requeue.
            let nr_requeue = u32::try_from(timeout).map_err(|_| errno::EINVAL)?;
            if (val as i32) < 0 || (nr_requeue as i32) < 0 {
                return Err(errno::EINVAL);
            }
            let expected = (cmd == g::FUTEX_CMP_REQUEUE).then_some(val3 as u32);
            futex::requeue_waiters(key_of(ctx, uaddr, op)?, uaddr, key_of(ctx, uaddr2, op)?, val, nr_requeue, expected).map_err(wait_error)
        }
        _ => Err(errno::ENOSYS),
    }
}
