//! Summaries of timing samples: nearest-rank median and 99th percentile; the median and range of
//! a few figures.
//!
//! Key type: [`Summary`], built by [`summarize`] from per-operation cycle counts that `measure`
//! collects; `report` prints and serialises it. [`median`] and [`range`] summarise the two-guest
//! part's rounds (`guests`).

/// The figures one measured row reports, in TSC cycles per operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The sample at rank ceil(0.50 * n) of the sorted samples.
    pub median_cycles: f64,
    /// The sample at rank ceil(0.99 * n) of the sorted samples.
    pub p99_cycles: f64,
    /// How many samples the figures were taken from.
    pub nr_samples: usize,
}

/// The nearest-rank percentile `pct` (0 < pct <= 100) of samples already sorted ascending.
fn nearest_rank(sorted: &[f64], pct: f64) -> f64 {
    let rank = (pct / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sort the samples and take their median and 99th percentile.
///
/// Panics on an empty sample set: a row with no samples has nothing honest to report.
pub fn summarize(mut per_op_cycles: Vec<f64>) -> Summary {
    assert!(!per_op_cycles.is_empty(), "a summary needs at least one sample");
    per_op_cycles.sort_unstable_by(f64::total_cmp);
    Summary {
        median_cycles: nearest_rank(&per_op_cycles, 50.0),
        p99_cycles: nearest_rank(&per_op_cycles, 99.0),
        nr_samples: per_op_cycles.len(),
    }
}

/// The median of a few figures (the laps of a program, the rounds of a run): the middle one, or
/// the mean of the middle two for an even count, where the nearest rank would always take the
/// lower one. `None` for no figures.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The smallest and the largest of `values`; `None` for none.
pub fn range(values: &[f64]) -> Option<(f64, f64)> {
    let min = values.iter().copied().min_by(f64::total_cmp)?;
    let max = values.iter().copied().max_by(f64::total_cmp)?;
    Some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_few_figures_is_the_middle_or_the_mean_of_two() {
        assert_eq!(median(&[0.9, 0.3, 0.5]), Some(0.5));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(range(&[0.9, 0.3, 0.5]), Some((0.3, 0.9)));
        assert_eq!(range(&[]), None);
    }

    #[test]
    fn hundred_samples_give_the_50th_and_99th_values() {
        // Shuffled on purpose: summarize must sort.
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = summarize(samples);
        assert_eq!(s.median_cycles, 50.0);
        assert_eq!(s.p99_cycles, 99.0);
        assert_eq!(s.nr_samples, 100);
    }

    #[test]
    fn odd_count_median_is_the_middle_value() {
        let s = summarize(vec![7.0, 1.0, 5.0]);
        assert_eq!(s.median_cycles, 5.0);
        assert_eq!(s.p99_cycles, 7.0);
    }

    #[test]
    fn single_sample_is_its_own_median_and_p99() {
        let s = summarize(vec![42.0]);
        assert_eq!((s.median_cycles, s.p99_cycles), (42.0, 42.0));
    }

    #[test]
    fn one_outlier_in_a_hundred_reaches_only_the_maximum() {
        let mut samples = vec![10.0; 99];
        samples.push(1e6);
        let s = summarize(samples);
        assert_eq!(s.median_cycles, 10.0);
        assert_eq!(s.p99_cycles, 10.0);
    }

    #[test]
    #[should_panic(expected = "at least one sample")]
    fn empty_samples_are_refused() {
        summarize(Vec::new());
    }
}
