//! Order statistics of a handful of runs: the median, a quantile, and a percentile-bootstrap
//! interval of the median. The resampling draws from a seeded ChaCha generator, so the same
//! values and seed give the same interval on every machine.

use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The median of `values` (the mean of the middle two of an even count). Panics on an empty
/// slice or a NaN: a caller has at least one measured value.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN among measured values"));
    quantile(&sorted, 0.5)
}

/// The `q` quantile of `sorted` (ascending), interpolated linearly between the two nearest
/// ranks (Hyndman and Fan's type 7, R's and NumPy's default): rank `(n - 1) q`, 0-based.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "a quantile of no values");
    assert!((0.0..=1.0).contains(&q), "a quantile is between 0 and 1: {q}");
    assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "quantile wants sorted values");
    let rank = (sorted.len() - 1) as f64 * q;
    let (below, frac) = (rank.floor() as usize, rank.fract());
    match sorted.get(below + 1) {
        Some(&above) if frac > 0.0 => sorted[below] + (above - sorted[below]) * frac,
        _ => sorted[below],
    }
}

/// The 95% percentile-bootstrap interval of the median of `values`: draw `resamples`
/// samples of the same size with replacement (a ChaCha8 generator seeded with `seed`), take
/// each one's median, and return the 2.5% and 97.5% quantiles of those medians.
pub fn bootstrap_median_interval(values: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    assert!(!values.is_empty() && resamples > 0, "a bootstrap needs values and resamples");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut sample = vec![0.0; values.len()];
    let mut medians: Vec<f64> = (0..resamples)
        .map(|_| {
            for x in sample.iter_mut() {
                *x = values[rng.random_range(0..values.len())];
            }
            median(&sample)
        })
        .collect();
    medians.sort_by(|a, b| a.partial_cmp(b).expect("medians of numbers"));
    (quantile(&medians, 0.025), quantile(&medians, 0.975))
}

/// The spread of one figure over runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// Runs that measured the figure.
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// The 95% percentile-bootstrap interval of the median.
    pub median_ci95: [f64; 2],
}

impl Spread {
    /// The spread of `values`, or `None` without any.
    pub fn of(values: &[f64], resamples: usize, seed: u64) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let (lo, hi) = bootstrap_median_interval(values, resamples, seed);
        Some(Spread {
            n: values.len(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            median: median(values),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            median_ci95: [lo, hi],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_and_an_even_count() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert_eq!(median(&[5.0, 5.0, 1.0, 9.0, 5.0]), 5.0);
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        // Rank (5 - 1) x 0.025 = 0.1: a tenth of the way from 1 to 2.
        assert!((quantile(&v, 0.025) - 1.1).abs() < 1e-12);
        assert!((quantile(&v, 0.975) - 4.9).abs() < 1e-12);
        assert_eq!((quantile(&v, 0.0), quantile(&v, 1.0), quantile(&v, 0.5)), (1.0, 5.0, 3.0));
    }

    #[test]
    fn the_interval_of_a_constant_is_the_constant() {
        assert_eq!(bootstrap_median_interval(&[42.0; 7], 10_000, 1), (42.0, 42.0));
    }

    #[test]
    fn the_interval_holds_the_median_and_lies_within_the_values() {
        let v = [120.0, 95.0, 130.0, 101.0, 99.0, 250.0, 110.0, 105.0, 98.0, 140.0];
        for seed in 0..5 {
            let (lo, hi) = bootstrap_median_interval(&v, 10_000, seed);
            let m = median(&v);
            assert!(95.0 <= lo && lo <= m && m <= hi && hi <= 250.0, "{lo} <= {m} <= {hi}");
        }
    }

    #[test]
    fn two_values_give_the_interval_from_one_to_the_other() {
        // Resampling [1, 2]: medians 1, 1.5 and 2 with chances 1/4, 1/2 and 1/4. A quarter
        // of the 10,000 resamples lie at each end, so the 2.5% and 97.5% quantiles are 1 and 2.
        assert_eq!(bootstrap_median_interval(&[1.0, 2.0], 10_000, 9), (1.0, 2.0));
        // Three values 1, 2, 10: the resample's median is 10 only when two of three draws
        // are 10 (7/27, 26%), and 1 likewise: the interval is [1, 10].
        assert_eq!(bootstrap_median_interval(&[1.0, 2.0, 10.0], 10_000, 9), (1.0, 10.0));
    }

    #[test]
    fn the_same_seed_gives_the_same_interval() {
        let v = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        assert_eq!(bootstrap_median_interval(&v, 10_000, 7), bootstrap_median_interval(&v, 10_000, 7));
        let s = Spread::of(&v, 1_000, 7).unwrap();
        assert_eq!((s.n, s.min, s.median, s.max), (8, 1.0, 3.5, 9.0));
        assert!(Spread::of(&[], 1_000, 7).is_none());
    }
}
