//! Futex keys: which word a futex operation names, and which bucket of the kernel's futex hash
//! it lives in. The queues themselves (`sched::KeyedWaitQueue`, one per bucket) and the protocol
//! that loses no wake-up are the kernel's; see `kernel::ipc::futex`.
//!
//! Keys: `(space, addr)`. The address space id makes private futexes of two processes distinct; a
//! word in shared memory is keyed by its frame instead (`syscall::futex`), so every process that
//! maps it meets on one queue.

/// A futex word: which address space, which user address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FutexKey {
    pub space: u64,
    pub addr: u64,
}

/// `FUTEX_BITSET_MATCH_ANY`: the bitset of plain `FUTEX_WAIT` and `FUTEX_WAKE`.
pub const MATCH_ANY: u32 = linux_raw_sys::general::FUTEX_BITSET_MATCH_ANY;

/// Which of `nr_buckets` (a power of two) buckets `key` belongs to.
#[inline]
pub fn bucket_of(key: FutexKey, nr_buckets: usize) -> usize {
    debug_assert!(nr_buckets.is_power_of_two());
    if nr_buckets == 1 {
        return 0;
    }
    // Fibonacci hashing: the product's top bits depend on every bit of the input, so the top
    // log2(nr_buckets) bits spread neighbouring words (which differ in low bits) and spaces
    // (moved to the high half) alike; one multiply, as the bucket is found on every futex call.
    let h = (key.addr ^ key.space.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - nr_buckets.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Neighbouring words of one space, and one word in many spaces, spread over the buckets
    /// rather than piling into a few (a crowded bucket makes every wake walk its neighbours).
    #[test]
    fn neighbouring_words_and_spaces_spread_over_the_buckets() {
        const N: usize = 64;
        let mut by_addr = [0usize; N];
        let mut by_space = [0usize; N];
        for i in 0..(4 * N as u64) {
            by_addr[bucket_of(FutexKey { space: 1, addr: 0x1000 + 4 * i }, N)] += 1;
            by_space[bucket_of(FutexKey { space: i, addr: 0x1000 }, N)] += 1;
        }
        for counts in [by_addr, by_space] {
            assert!(counts.iter().all(|&c| c < 12), "a bucket holds {} of {}: {counts:?}", counts.iter().max().unwrap(), 4 * N);
            assert!(counts.iter().filter(|&&c| c == 0).count() < N / 4, "too many empty buckets: {counts:?}");
        }
    }
}
