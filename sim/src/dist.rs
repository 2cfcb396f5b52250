//! Sampling the scenario's distributions from a node's seeded RNG.

use crate::scenario::{DistConfig, Z_99};
use rand::Rng;
use rand_distr::{Exp1, StandardNormal};
use std::time::Duration;

/// The largest sample any distribution returns: a cap on absurd log-normal tails, which
/// would otherwise park messages beyond the end of a run.
pub const SAMPLE_US_MAX: u64 = 60_000_000;

/// A distribution ready to sample, in microseconds.
#[derive(Clone, Copy, Debug)]
pub enum Sampler {
    Constant(f64),
    Uniform { min: f64, span: f64 },
    Exponential { mean: f64 },
    LogNormal { mu: f64, sigma: f64 },
}

impl Sampler {
    /// Compile a distribution whose values are in units of `unit_us` microseconds
    /// (1,000 for fields in ms, 1 for fields in µs).
    pub fn new(d: &DistConfig, unit_us: f64) -> Sampler {
        match *d {
            DistConfig::Constant { value } => Sampler::Constant(value * unit_us),
            DistConfig::Uniform { min, max } => Sampler::Uniform { min: min * unit_us, span: (max - min) * unit_us },
            DistConfig::Exponential { mean } => Sampler::Exponential { mean: mean * unit_us },
            DistConfig::Lognormal { p50, p99 } => {
                Sampler::LogNormal { mu: (p50 * unit_us).ln(), sigma: (p99 / p50).ln() / Z_99 }
            }
        }
    }

    /// One sample.
    #[inline]
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Duration {
        Duration::from_micros(self.sample_us(rng))
    }

    /// One sample in whole microseconds (the hot path adds it to a `Time` directly).
    #[inline]
    pub fn sample_us<R: Rng>(&self, rng: &mut R) -> u64 {
        let us = match *self {
            Sampler::Constant(v) => v,
            Sampler::Uniform { min, span } => min + span * rng.random::<f64>(),
            Sampler::Exponential { mean } => mean * rng.sample::<f64, _>(Exp1),
            Sampler::LogNormal { mu, sigma } => (mu + sigma * rng.sample::<f64, _>(StandardNormal)).exp(),
        };
        // `+ 0.5` then truncation rounds a non-negative value without a libm call; clamping
        // in floating point first keeps the conversion to the cheap signed form.
        (us + 0.5).min(SAMPLE_US_MAX as f64) as i64 as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn quantile(s: Sampler, q: f64) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut v: Vec<u64> = (0..100_000).map(|_| s.sample(&mut rng).as_micros() as u64).collect();
        v.sort_unstable();
        v[(q * v.len() as f64) as usize] as f64
    }

    #[test]
    fn lognormal_hits_its_median_and_p99() {
        let s = Sampler::new(&DistConfig::Lognormal { p50: 30.0, p99: 150.0 }, 1_000.0);
        assert!((quantile(s, 0.5) - 30_000.0).abs() < 1_000.0);
        assert!((quantile(s, 0.99) - 150_000.0).abs() < 10_000.0);
    }

    #[test]
    fn uniform_and_exponential_stay_in_range() {
        let u = Sampler::new(&DistConfig::Uniform { min: 0.2, max: 1.0 }, 1_000.0);
        assert!(quantile(u, 0.0) >= 200.0 && quantile(u, 0.9999) <= 1_000.0);
        let e = Sampler::new(&DistConfig::Exponential { mean: 10.0 }, 1.0);
        assert!((quantile(e, 0.5) - 10.0 * 2f64.ln()).abs() < 1.0);
    }
}
