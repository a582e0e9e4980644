//! Time-stamp counter reads with the fencing a measurement needs.
//!
//! `start()` keeps earlier instructions from leaking into the measured region, `end()` keeps the
//! measured region from leaking past the read (Intel's "How to Benchmark Code Execution Times",
//! 2010, section 3.2: fence before the first read, `rdtscp` then fence for the last).

/// A plain TSC read, unordered with respect to the surrounding instructions.
#[inline(always)]
pub fn read() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads a counter; it touches no memory. CR4.TSD is clear in the kernel, and
    // Linux leaves it clear for user space.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Read the TSC at the start of a measured region: `lfence; rdtsc; lfence`.
#[inline(always)]
pub fn start() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: as in `read`; lfence only orders instruction execution.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", "lfence", out("eax") lo, out("edx") hi, options(nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Read the TSC at the end of a measured region: `rdtscp; lfence`.
#[inline(always)]
pub fn end() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: as in `read`; rdtscp also writes the TSC_AUX value into ecx, which we discard.
    unsafe {
        core::arch::asm!("rdtscp", "lfence", out("eax") lo, out("edx") hi, out("ecx") _, options(nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}
