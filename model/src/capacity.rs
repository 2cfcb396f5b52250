//! Closed-form queueing results: the yardstick the simulator is held against.
//!
//! `wasim calibrate` runs a tier alone with Poisson arrivals and exponential service and
//! compares what the simulator measures with these formulas; a later `wasim estimate` table
//! sizes tiers with them directly. Both need the formulas to be exact where the model's
//! assumptions hold (M/M/c: Poisson arrivals, exponential service, `c` identical servers,
//! one FIFO queue, steady state) and numerically sound at fleet scale (thousands of
//! servers), so nothing here uses factorials or powers that overflow.
//!
//! Rates are per second and times are seconds, as `f64`: the formulas are continuous and a
//! calibration compares them with measurements to a fraction of a microsecond, which a
//! `Duration` cannot always represent.

use crate::ModelError;
use std::time::Duration;

/// The most servers an `Mmc` accepts. The Erlang C computation takes one step per server,
/// so a million keeps a constructor within milliseconds; no pool a table sizes comes close
/// (a whole fleet of chat servers times their cores is of the order of 10^5).
pub const MMC_SERVERS_MAX: u32 = 1_000_000;

/// How closely `Mmc::sojourn_s_quantile` pins its answer, relative to the answer: far
/// finer than any latency a report prints, and far coarser than `f64`'s rounding, so the
/// bisection always ends.
const QUANTILE_PRECISION: f64 = 1e-9;

/// The most doublings from the mean sojourn time that bracket a quantile. A quantile below
/// 1 lies within about 1 / (1 − p) mean sojourns (the worst case is a rare wait, C near
/// 1 − p, drained slowly), and 1 − p is at least 2^-53 in `f64`, so 64 leaves a wide margin.
const QUANTILE_DOUBLINGS_MAX: u32 = 64;

/// The most halvings of the bracket. Each halves its width, and no width between positive
/// `f64`s survives 2,099 halvings (from 2^1024 down past 2^-1074), so the loop ends by then
/// whatever the queue; the usual case takes about 30.
const QUANTILE_BISECTIONS_MAX: u32 = 2_200;

/// An M/M/c queue in steady state: Poisson arrivals at rate λ, exponential service times of
/// mean E[S] (rate μ = 1 / E[S]), `c` servers sharing one FIFO queue.
///
/// This is the shape of every tier in the simulator (a process whose FIFO queue feeds its
/// workers), so its closed forms are what a calibration run must reproduce. The probability
/// of waiting (Erlang C) is computed once, at construction; every other quantity follows
/// from it in constant time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mmc {
    arrival_per_s: f64,
    service_s_mean: f64,
    servers: u32,
    /// The Erlang C probability that an arrival finds every server busy.
    wait_probability: f64,
}

impl Mmc {
    /// An M/M/c queue with arrivals at `arrival_per_s` (λ), mean service time
    /// `service_s_mean` (E[S]) and `servers` (c).
    ///
    /// Refuses a NaN, infinite or negative arrival rate, a service time that is not finite
    /// and positive, a server count outside `1..=MMC_SERVERS_MAX`, and a queue that is not
    /// stable (utilisation ρ = λ·E[S] / c at or above 1, where no steady state exists).
    /// These come from scenarios and command lines, so they are errors, not panics.
    pub fn new(arrival_per_s: f64, service_s_mean: f64, servers: u32) -> Result<Mmc, ModelError> {
        if !(arrival_per_s.is_finite() && arrival_per_s >= 0.0) {
            let must = "a finite rate >= 0";
            return Err(ModelError::InvalidQuantity { name: "arrival_per_s", value: arrival_per_s, must });
        }
        if !(service_s_mean.is_finite() && service_s_mean > 0.0) {
            let must = "a finite time > 0";
            return Err(ModelError::InvalidQuantity { name: "service_s_mean", value: service_s_mean, must });
        }
        if servers == 0 || servers > MMC_SERVERS_MAX {
            return Err(ModelError::InvalidServers { servers });
        }
        let rho = utilisation(arrival_per_s, service_s_mean, servers);
        if rho >= 1.0 {
            return Err(ModelError::Unstable { utilisation: rho });
        }
        let wait_probability = erlang_c(arrival_per_s * service_s_mean, servers);
        // Not `< 1`: a hair below ρ = 1 the wait is certain to within rounding.
        assert!((0.0..=1.0).contains(&wait_probability), "Erlang C {wait_probability} outside [0, 1] at rho {rho}");
        Ok(Mmc { arrival_per_s, service_s_mean, servers, wait_probability })
    }

    /// `new` with the mean service time as a `Duration`, as scenario code holds it.
    pub fn with_service_time(arrival_per_s: f64, service_mean: Duration, servers: u32) -> Result<Mmc, ModelError> {
        Mmc::new(arrival_per_s, service_mean.as_secs_f64(), servers)
    }

    /// The arrival rate λ, per second.
    pub fn arrival_per_s(&self) -> f64 {
        self.arrival_per_s
    }

    /// The mean service time E[S], in seconds.
    pub fn service_s_mean(&self) -> f64 {
        self.service_s_mean
    }

    /// The number of servers c.
    pub fn servers(&self) -> u32 {
        self.servers
    }

    /// ρ = λ·E[S] / c: the fraction of time each server is busy, and the number a capacity
    /// table keeps below a headroom target.
    pub fn utilisation(&self) -> f64 {
        utilisation(self.arrival_per_s, self.service_s_mean, self.servers)
    }

    /// Erlang C, the probability that an arrival finds all c servers busy and waits:
    ///
    /// C(c, a) = B(c, a) / (1 − ρ·(1 − B(c, a))), with a = λ·E[S] the offered load in
    /// Erlangs and B the Erlang B blocking probability. It is the one quantity that sets
    /// every queueing delay below; at c = 1 it is ρ.
    pub fn erlang_c(&self) -> f64 {
        self.wait_probability
    }

    /// The mean time an arrival waits for a server, W_q = C / (cμ − λ), in seconds.
    ///
    /// A waiting arrival waits an exponential time at the rate cμ − λ at which a full
    /// system drains, and it waits at all with probability C.
    pub fn wait_s_mean(&self) -> f64 {
        self.wait_probability / self.drain_per_s()
    }

    /// The mean sojourn (response) time, W = W_q + E[S], in seconds: what a client of the
    /// tier sees, queueing plus service.
    pub fn sojourn_s_mean(&self) -> f64 {
        self.wait_s_mean() + self.service_s_mean
    }

    /// The mean number of requests in the system, waiting or in service, L = λ·W (Little's
    /// law): the memory a tier holds for its requests in flight.
    pub fn in_system_mean(&self) -> f64 {
        little_l(self.arrival_per_s, self.sojourn_s_mean())
    }

    /// The mean number of requests waiting for a server, L_q = λ·W_q (Little's law): the
    /// queue depth a bounded inbox must allow for.
    pub fn in_queue_mean(&self) -> f64 {
        little_l(self.arrival_per_s, self.wait_s_mean())
    }

    /// The p-quantile of the waiting time, in seconds.
    ///
    /// The wait is 0 with probability 1 − C and otherwise exponential at rate cμ − λ, so
    /// P(W_q > t) = C·e^{−(cμ − λ)t}: the quantile is 0 for p <= 1 − C, else
    /// ln(C / (1 − p)) / (cμ − λ).
    ///
    /// Panics unless 0 <= p < 1 (the 1-quantile is infinite): p is a constant of the
    /// caller's, such as 0.99, not an input.
    pub fn wait_s_quantile(&self, p: f64) -> f64 {
        assert!((0.0..1.0).contains(&p), "quantile {p} outside [0, 1)");
        let tail = 1.0 - p;
        if self.wait_probability <= tail {
            return 0.0;
        }
        (self.wait_probability / tail).ln() / self.drain_per_s()
    }

    /// P(T > t): the probability that a request spends longer than `t_s` seconds in the
    /// system, such as the fraction of requests that miss a latency objective. Computed
    /// directly rather than as 1 − `sojourn_cdf` so that small tails keep their precision.
    ///
    /// The sojourn is T = W_q + S with the service time S ~ Exp(μ) independent of the wait.
    /// With probability 1 − C there is no wait and T = S; otherwise T = X + Y with
    /// X ~ Exp(α), α = cμ − λ, and Y ~ Exp(μ). So
    ///
    /// P(T > t) = (1 − C)·e^{−μt} + C·P(X + Y > t),
    /// P(X + Y > t) = (α·e^{−μt} − μ·e^{−αt}) / (α − μ) for α ≠ μ, (1 + μt)·e^{−μt} for α = μ.
    ///
    /// Panics if `t_s` is NaN.
    pub fn sojourn_survival(&self, t_s: f64) -> f64 {
        assert!(!t_s.is_nan(), "sojourn time is NaN");
        if t_s <= 0.0 {
            return 1.0;
        }
        if t_s == f64::INFINITY {
            return 0.0;
        }
        let service_per_s = 1.0 / self.service_s_mean;
        let no_wait = (1.0 - self.wait_probability) * (-service_per_s * t_s).exp();
        no_wait + self.wait_probability * two_exponentials_survival(self.drain_per_s(), service_per_s, t_s)
    }

    /// P(T <= t): the sojourn time's distribution function, 1 − `sojourn_survival(t_s)`.
    ///
    /// For c = 1 this is 1 − e^{−(μ − λ)t}: an M/M/1 sojourn is exponential at μ − λ.
    pub fn sojourn_cdf(&self, t_s: f64) -> f64 {
        1.0 - self.sojourn_survival(t_s)
    }

    /// The p-quantile of the sojourn time, in seconds, to a relative precision of 1e-9.
    ///
    /// The distribution has no closed-form inverse (it mixes two exponentials), so this
    /// brackets the answer by doubling from the mean and bisects P(T > t) = 1 − p. The
    /// precision holds where 1 − p is exact enough, that is for every p from about 1e-6 up.
    ///
    /// Panics unless 0 <= p < 1 (the 1-quantile is infinite).
    pub fn sojourn_s_quantile(&self, p: f64) -> f64 {
        assert!((0.0..1.0).contains(&p), "quantile {p} outside [0, 1)");
        if p == 0.0 {
            return 0.0;
        }
        let tail = 1.0 - p;
        let (mut below, mut above) = (0.0, self.sojourn_s_mean());
        let mut doublings = 0;
        while self.sojourn_survival(above) > tail {
            assert!(doublings < QUANTILE_DOUBLINGS_MAX, "no bracket for quantile {p} of {self:?}");
            below = above;
            above *= 2.0;
            doublings += 1;
        }
        let mut bisections = 0;
        while above - below > QUANTILE_PRECISION * above {
            assert!(bisections < QUANTILE_BISECTIONS_MAX, "bisection for quantile {p} of {self:?} did not converge");
            let middle = 0.5 * (below + above);
            if self.sojourn_survival(middle) > tail {
                below = middle;
            } else {
                above = middle;
            }
            bisections += 1;
        }
        0.5 * (below + above)
    }

    /// α = cμ − λ, the rate at which a system with every server busy drains: the rate of
    /// the wait's exponential part. Computed as (c − a)·μ, where c − a is positive exactly
    /// because a < c, so that α cannot round to zero or below.
    fn drain_per_s(&self) -> f64 {
        let offered = self.arrival_per_s * self.service_s_mean;
        (f64::from(self.servers) - offered) / self.service_s_mean
    }
}

/// Little's law, L = λ·W: the mean number of requests in a system is the arrival rate
/// times the mean time each spends there. It holds for any stable system, whatever the
/// distributions, so a table can apply it to measured times as well as to formulas.
///
/// Panics if either input is NaN, infinite or negative: a table computes them, it does not
/// read them.
pub fn little_l(arrival_per_s: f64, time_s_mean: f64) -> f64 {
    assert!(arrival_per_s.is_finite() && arrival_per_s >= 0.0, "arrival rate {arrival_per_s}");
    assert!(time_s_mean.is_finite() && time_s_mean >= 0.0, "mean time {time_s_mean}");
    arrival_per_s * time_s_mean
}

/// Utilisation ρ = λ·E[S] / c: the offered load in Erlangs spread over the servers. At or
/// above 1 a queue has no steady state; a table reports such a value rather than refusing
/// it, which is why this returns it instead of an error.
///
/// Panics on a zero server count or a NaN, infinite or negative rate or time: a table
/// computes them from a validated scenario.
pub fn utilisation(arrival_per_s: f64, service_s_mean: f64, servers: u32) -> f64 {
    assert!(servers > 0, "utilisation of zero servers");
    assert!(arrival_per_s.is_finite() && arrival_per_s >= 0.0, "arrival rate {arrival_per_s}");
    assert!(service_s_mean.is_finite() && service_s_mean >= 0.0, "mean service time {service_s_mean}");
    arrival_per_s * service_s_mean / f64::from(servers)
}

/// Erlang C for `servers` (c) and an offered load `offered` (a = λ·E[S] < c), through the
/// Erlang B recursion B(0) = 1, B(k) = a·B(k − 1) / (k + a·B(k − 1)), then
/// C = B / (1 − ρ·(1 − B)).
///
/// The textbook form divides sums of a^k / k!, which overflow `f64` beyond c ≈ 170; every
/// step of the recursion stays in [0, 1] and adds one rounding, so it holds for any c. B may
/// underflow to 0 when waiting is vanishingly rare, which is then the right answer.
fn erlang_c(offered: f64, servers: u32) -> f64 {
    assert!(servers > 0 && offered >= 0.0 && offered < f64::from(servers), "a = {offered}, c = {servers}");
    let mut blocking = 1.0;
    for k in 1..=servers {
        let carried = offered * blocking;
        blocking = carried / (f64::from(k) + carried);
    }
    let rho = offered / f64::from(servers);
    blocking / (1.0 - rho * (1.0 - blocking))
}

/// P(X + Y > t) for independent X ~ Exp(`rate_a`) and Y ~ Exp(`rate_b`) (a hypoexponential
/// tail), both rates positive.
///
/// The textbook (α·e^{−μt} − μ·e^{−αt}) / (α − μ) cancels catastrophically as α → μ. The
/// tail is symmetric in the two rates, so with m the smaller rate and δ ≥ 0 the gap it is
/// e^{−mt}·(1 + m·t·φ(δt)), φ(x) = (1 − e^{−x}) / x = −expm1(−x) / x. `exp_m1` keeps φ
/// exact to rounding however small x is, so no switch-over threshold is needed; only
/// x = 0 itself takes the limit φ(0) = 1, which gives the equal-rates form (1 + mt)·e^{−mt}.
/// With δ ≥ 0 nothing grows, so large t cannot overflow.
fn two_exponentials_survival(rate_a: f64, rate_b: f64, t: f64) -> f64 {
    assert!(rate_a > 0.0 && rate_b > 0.0 && t >= 0.0 && t.is_finite(), "rates {rate_a}, {rate_b}, t {t}");
    let slower = rate_a.min(rate_b);
    let gap = (rate_a - rate_b).abs();
    let x = gap * t;
    let decay = (-slower * t).exp();
    if decay == 0.0 {
        // m·t > 745: the tail, below (1 + m·t)·e^{−mt}, is under 1e-320; returning early
        // keeps an overflowing m·t from making infinity times zero.
        return 0.0;
    }
    let phi = if x == 0.0 { 1.0 } else { -(-x).exp_m1() / x };
    decay * (1.0 + slower * t * phi)
}

#[cfg(test)]
mod tests;
