//! The practical floor for a user-space switch: a well-kept coroutine crate (corosensei) on the
//! same machine.
//!
//! A round trip is `resume` into the coroutine plus its `suspend` back: two switches, each saving
//! the callee-saved registers and swapping stacks, which is the same work as our window switch.
//! Neighbours: `measure` for timing; `ours` measures our switch the same way.

use corosensei::{Coroutine, CoroutineResult};

use crate::measure::{BATCH, Sampling, cycles_per_op};

/// Per-switch samples of corosensei resume/suspend round trips, timed in batches of [`BATCH`]
/// round trips. The coroutine counts its round trips and the count is checked on the way out.
pub fn corosensei_switch(sampling: Sampling) -> Vec<f64> {
    // Input: whether to finish. Yield: round trips so far. Return: the final count.
    let mut coroutine = Coroutine::new(|yielder, mut finish: bool| {
        let mut nr_round_trips: u64 = 0;
        while !finish {
            nr_round_trips += 1;
            finish = yielder.suspend(nr_round_trips);
        }
        nr_round_trips
    });
    let mut last_seen = 0_u64;
    let samples = cycles_per_op(sampling, 2 * BATCH, || {
        for _ in 0..BATCH {
            match coroutine.resume(false) {
                CoroutineResult::Yield(count) => last_seen = count,
                CoroutineResult::Return(_) => unreachable!("the coroutine only returns when told to finish"),
            }
        }
    });
    let CoroutineResult::Return(nr_round_trips) = coroutine.resume(true) else {
        unreachable!("told to finish, the coroutine returns");
    };
    let expected = (sampling.nr_calls() * BATCH as usize) as u64;
    assert_eq!((last_seen, nr_round_trips), (expected, expected), "every resume must be one round trip");
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corosensei_switch_counts_every_round_trip_and_returns_one_sample_per_batch() {
        let sampling = Sampling { nr_warmup: 2, nr_samples: 10 };
        assert_eq!(corosensei_switch(sampling).len(), 10);
    }
}
