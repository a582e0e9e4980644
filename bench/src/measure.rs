//! The sampling loop every row shares: warm up, then time each sample with fenced TSC reads.
//!
//! Key types: [`Sampling`] (how many samples, how many operations each) and [`cycles_per_op`].
//! The fenced reads are `arch::tsc::{start, end}`; `stats` turns the samples into figures.

use arch::tsc;

/// How a row is sampled.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// Untimed samples run first, to fault in stacks, fill caches and train branch predictors.
    pub nr_warmup: usize,
    /// Timed samples kept.
    pub nr_samples: usize,
}

impl Sampling {
    /// Scale a full run's sampling down for `--quick`, keeping at least a handful of samples.
    pub fn scaled(self, quick: bool) -> Self {
        if quick {
            Self { nr_warmup: (self.nr_warmup / 100).max(10), nr_samples: (self.nr_samples / 100).max(100) }
        } else {
            self
        }
    }

    /// Every call of the sample body a run makes, warm-up included.
    pub fn nr_calls(self) -> usize {
        self.nr_warmup + self.nr_samples
    }
}

/// Per-operation samples for operations long enough to time one round trip at a time.
pub const PER_ITERATION: Sampling = Sampling { nr_warmup: 10_000, nr_samples: 100_000 };

/// Round trips per sample for operations too short to time one at a time.
pub const BATCH: u32 = 100;

/// Round trips per sample of our yield rows: a round trip (a few hundred cycles) is too short to
/// time alone, and a short sample window keeps the p99 about the operation rather than about how
/// often the host preempts a long window.
pub const YIELD_BATCH: u32 = 10;

/// Samples for batched rows: 10^4 batches of [`BATCH`] round trips, so 10^6 round trips.
pub const BATCHED: Sampling = Sampling { nr_warmup: 1_000, nr_samples: 10_000 };

/// Run `body` `nr_warmup` times untimed, then `nr_samples` times between `tsc::start()` and
/// `tsc::end()`, returning each sample's cycles divided by `ops_per_sample` (the operations one
/// call of `body` performs, e.g. 2 switches per round trip times the batch size).
pub fn cycles_per_op(sampling: Sampling, ops_per_sample: u32, mut body: impl FnMut()) -> Vec<f64> {
    for _ in 0..sampling.nr_warmup {
        body();
    }
    let ops = f64::from(ops_per_sample);
    (0..sampling.nr_samples)
        .map(|_| {
            let t0 = tsc::start();
            body();
            let t1 = tsc::end();
            t1.wrapping_sub(t0) as f64 / ops
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_runs_warmup_plus_samples_times_and_one_figure_per_sample_returns() {
        let sampling = Sampling { nr_warmup: 3, nr_samples: 7 };
        let mut nr_calls = 0;
        let samples = cycles_per_op(sampling, 2, || nr_calls += 1);
        assert_eq!(nr_calls, sampling.nr_calls());
        assert_eq!(samples.len(), 7);
    }

    #[test]
    fn quick_sampling_is_smaller_but_not_empty() {
        let quick = PER_ITERATION.scaled(true);
        assert!(quick.nr_samples < PER_ITERATION.nr_samples);
        assert!(quick.nr_samples >= 100 && quick.nr_warmup >= 10);
        assert_eq!(PER_ITERATION.scaled(false).nr_samples, PER_ITERATION.nr_samples);
    }
}
