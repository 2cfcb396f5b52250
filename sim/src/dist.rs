//! Sampling the scenario's distributions from a node's seeded RNG.

use crate::scenario::{DistConfig, Z_99};
use rand::Rng;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The largest sample any distribution returns: a cap on absurd log-normal tails, which
/// would otherwise park messages beyond the end of a run.
pub const SAMPLE_US_MAX: u64 = 60_000_000;

/// A distribution ready to sample, in microseconds.
#[derive(Clone, Debug)]
pub enum Sampler {
    Constant(f64),
    Uniform {
        min: f64,
        span: f64,
    },
    /// By inverting the distribution function: a table of quantiles, interpolated, for the
    /// body, and the exact inverse in the tails. One uniform draw per sample, where the
    /// Gaussian-then-`exp` and the ziggurat routes cost several times as much on the hottest
    /// path of a run (every hop and every request served takes a sample).
    Inverse {
        exact: Exact,
        table: Arc<[f32]>,
    },
}

/// One draw of `d` in its own units, exact and uncapped (for the rare draws of long
/// durations, such as how long a user stays offline, which a `Sampler` would cap).
pub fn draw_uncapped<R: Rng>(d: &DistConfig, rng: &mut R) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    match *d {
        DistConfig::Constant { value } => value,
        DistConfig::Uniform { min, max } => min + (max - min) * u,
        DistConfig::Exponential { mean } => Exact::Exponential { mean }.quantile(u),
        DistConfig::Lognormal { p50, p99 } => {
            Exact::LogNormal { mu: p50.ln(), sigma: (p99 / p50).ln() / crate::scenario::Z_99 }.quantile(u)
        }
    }
}

/// The exact inverse distribution function of a continuous distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Exact {
    LogNormal { mu: f64, sigma: f64 },
    Exponential { mean: f64 },
}

impl Exact {
    /// The quantile of `u` in (0, 1).
    fn quantile(self, u: f64) -> f64 {
        match self {
            Exact::LogNormal { mu, sigma } => (mu + sigma * normal_quantile(u)).exp(),
            Exact::Exponential { mean } => -mean * (-u).ln_1p(),
        }
    }

    /// `quantile`, kept out of line: the tails beyond the table are 1 draw in 256.
    #[cold]
    #[inline(never)]
    fn tail_quantile(self, u: f64) -> f64 {
        self.quantile(u)
    }

    fn key(self) -> (u8, u64, u64) {
        match self {
            Exact::LogNormal { mu, sigma } => (0, mu.to_bits(), sigma.to_bits()),
            Exact::Exponential { mean } => (1, mean.to_bits(), 0),
        }
    }
}

/// Intervals of a quantile table: the interpolation error is below 0.25% of the value over
/// the table's range for exponentials and log-normals up to p99/p50 = 10 (tested; the
/// shipped scenarios go to 7.5), largest in the last interval; it grows with the spread,
/// to about 1% at p99/p50 = 1000. Points are `f32` (a relative
/// error of 6e-8), so a table is 8 KB: every process draws from several of them on every
/// hop and request, and they must stay in cache.
const QUANTILE_TABLE_INTERVALS: usize = 2_048;
/// The table covers `u` in `[TAIL, 1 - TAIL]`; the tails beyond take the exact inverse.
const TAIL: f64 = 1.0 / 512.0;

/// The standard normal's inverse distribution function (Acklam's rational approximation,
/// relative error below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    const P_LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

/// The quantile table of a distribution, shared by every sampler with the same parameters.
fn quantile_table(exact: Exact) -> Arc<[f32]> {
    type Tables = Vec<((u8, u64, u64), Arc<[f32]>)>;
    static TABLES: OnceLock<Mutex<Tables>> = OnceLock::new();
    let key = exact.key();
    let mut tables = TABLES.get_or_init(Default::default).lock().expect("quantile tables");
    if let Some((_, t)) = tables.iter().find(|(k, _)| *k == key) {
        return t.clone();
    }
    let step = (1.0 - 2.0 * TAIL) / QUANTILE_TABLE_INTERVALS as f64;
    let table: Arc<[f32]> =
        (0..=QUANTILE_TABLE_INTERVALS).map(|i| exact.quantile(TAIL + step * i as f64) as f32).collect();
    tables.push((key, table.clone()));
    table
}

impl Sampler {
    /// Compile a distribution whose values are in units of `unit_us` microseconds
    /// (1,000 for fields in ms, 1 for fields in µs).
    pub fn new(d: &DistConfig, unit_us: f64) -> Sampler {
        match *d {
            DistConfig::Constant { value } => Sampler::Constant(value * unit_us),
            DistConfig::Uniform { min, max } => Sampler::Uniform { min: min * unit_us, span: (max - min) * unit_us },
            DistConfig::Exponential { mean } => Sampler::inverse(Exact::Exponential { mean: mean * unit_us }),
            DistConfig::Lognormal { p50, p99 } => {
                Sampler::inverse(Exact::LogNormal { mu: (p50 * unit_us).ln(), sigma: (p99 / p50).ln() / Z_99 })
            }
        }
    }

    fn inverse(exact: Exact) -> Sampler {
        Sampler::Inverse { exact, table: quantile_table(exact) }
    }

    /// One sample.
    #[inline]
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Duration {
        Duration::from_micros(self.sample_us(rng))
    }

    /// One sample in whole microseconds (the hot path adds it to a `Time` directly).
    /// Inlined: every hop and every request served takes one, and the call costs as much
    /// as the table lookup.
    #[inline(always)]
    pub fn sample_us<R: Rng>(&self, rng: &mut R) -> u64 {
        let us = match self {
            Sampler::Constant(v) => *v,
            Sampler::Uniform { min, span } => min + span * rng.random::<f64>(),
            Sampler::Inverse { exact, table } => {
                // A uniform draw strictly inside (0, 1).
                let u = ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
                let x = (u - TAIL) * (QUANTILE_TABLE_INTERVALS as f64 / (1.0 - 2.0 * TAIL));
                if x >= 0.0 && x < QUANTILE_TABLE_INTERVALS as f64 {
                    // `x` is in [0, 2048): the 32-bit conversion truncates it as the 64-bit
                    // one would, without the 64-bit unsigned conversion's range handling.
                    let i = x as u32 as usize;
                    let f = x - f64::from(i as u32);
                    // One bounds check for both points.
                    let points = &table[i..i + 2];
                    let (a, b) = (f64::from(points[0]), f64::from(points[1]));
                    a + f * (b - a)
                } else {
                    exact.tail_quantile(u)
                }
            }
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

    fn quantile(s: &Sampler, q: f64) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut v: Vec<u64> = (0..200_000).map(|_| s.sample(&mut rng).as_micros() as u64).collect();
        v.sort_unstable();
        v[(q * v.len() as f64) as usize] as f64
    }

    #[test]
    fn lognormal_hits_its_median_and_p99() {
        let s = Sampler::new(&DistConfig::Lognormal { p50: 30.0, p99: 150.0 }, 1_000.0);
        assert!((quantile(&s, 0.5) - 30_000.0).abs() < 500.0);
        assert!((quantile(&s, 0.99) - 150_000.0).abs() < 4_000.0);
        assert!((quantile(&s, 0.999) / 30_000.0 - (5f64.ln() / Z_99 * 3.090_232).exp()).abs() < 0.3, "the tail");
    }

    #[test]
    fn the_normal_quantile_matches_known_values() {
        for (p, z) in
            [(0.5, 0.0), (0.975, 1.959_963_985), (0.99, Z_99), (0.001, -3.090_232_306), (1e-9, -5.997_807_015)]
        {
            assert!((normal_quantile(p) - z).abs() < 1e-7, "{p}: {}", normal_quantile(p));
        }
    }

    #[test]
    fn the_table_interpolates_within_a_quarter_percent_of_the_exact_inverse() {
        for exact in
            [Exact::Exponential { mean: 50.0 }, Exact::LogNormal { mu: 400f64.ln(), sigma: 7.5f64.ln() / Z_99 }]
        {
            let s = Sampler::inverse(exact);
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let Sampler::Inverse { table, .. } = &s else { unreachable!() };
            let step = (1.0 - 2.0 * TAIL) / QUANTILE_TABLE_INTERVALS as f64;
            let mut worst: f64 = 0.0;
            for _ in 0..200_000 {
                let x = rng.random::<f64>() * QUANTILE_TABLE_INTERVALS as f64;
                let (i, f) = (x as usize, x.fract());
                let (a, b) = (f64::from(table[i]), f64::from(table[i + 1]));
                let exact_value = exact.quantile(TAIL + step * x);
                worst = worst.max(((a + f * (b - a)) / exact_value - 1.0).abs());
            }
            assert!(worst < 0.0025 && worst > 0.0, "{exact:?}: {worst}");
        }
    }

    #[test]
    fn uniform_and_exponential_stay_in_range() {
        let u = Sampler::new(&DistConfig::Uniform { min: 0.2, max: 1.0 }, 1_000.0);
        assert!(quantile(&u, 0.0) >= 200.0 && quantile(&u, 0.9999) <= 1_000.0);
        let e = Sampler::new(&DistConfig::Exponential { mean: 10.0 }, 1.0);
        assert!((quantile(&e, 0.5) - 10.0 * 2f64.ln()).abs() < 1.0);
    }
}
