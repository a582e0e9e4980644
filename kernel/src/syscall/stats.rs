//! This kernel's own calls beyond Linux's numbers, for the user tests' information lines:
//! [`abi::SYS_KERNEL_TLB_COUNTERS`]. Linux answers them `ENOSYS`, so a program that uses them runs
//! unchanged there and prints that the count is not available.

use arch::usercopy;

use super::SysResult;
use crate::vm::tlb;

/// Copy `(changes, shootdown IPIs sent, changes without an IPI)` summed over the online CPUs since
/// boot to `out`.
pub fn tlb_counters(out: u64) -> SysResult {
    let c = tlb::sum(&crate::cpu::map::online());
    let mut raw = [0u8; 24];
    for (chunk, v) in raw.chunks_mut(8).zip([c.changes, c.ipis_sent, c.changes_without_ipi]) {
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    usercopy::copy_to_user(out, &raw).map_err(|_| abi::linux::errno::EFAULT)?;
    Ok(0)
}
