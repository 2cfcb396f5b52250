//! Many runs of one scenario: across seeds (`wasim scenario FILE --seeds N`) and across
//! offered loads (`--find-max-load`). Each run is a report folder of its own; these reports
//! read what they need of each run from its summary ([`RunDigest`]) and render the spread or
//! the knee as text, Markdown, JSON and SVG. Nothing here reads the clock or a file.

mod knee;
mod seeds;
mod stats;

pub use knee::{render_knee_md, render_knee_svg, render_knee_table, KneeReport, KneeRun, KneeSearch};
pub use seeds::{render_seeds_md, render_seeds_table, SeedRun, SeedsReport};
pub use stats::{bootstrap_median_interval, median, quantile, Spread};

use serde::{Deserialize, Serialize};

/// What a multi-run report needs of one run: the parts of its `summary.json`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RunDigest {
    pub seed: u64,
    /// `PASS` or `FAIL`: every SLO, availability and every invariant.
    pub verdict: String,
    pub replay: String,
    pub slos: Vec<SloDigest>,
    pub availability: AvailabilityDigest,
    pub latencies: Vec<LatencyDigest>,
    pub tiers: Vec<TierDigest>,
    pub throughput: ThroughputDigest,
    pub invariants: InvariantsDigest,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SloDigest {
    pub name: String,
    pub metric: String,
    pub objective: String,
    pub objective_ms: f64,
    pub measured_ms: f64,
    pub samples: u64,
    /// `PASS`, `FAIL` or `NO DATA` (no samples, none required: not a failure).
    pub verdict: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AvailabilityDigest {
    pub objective: f64,
    pub measured: f64,
    pub sends: u64,
    pub verdict: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LatencyDigest {
    pub name: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TierDigest {
    pub tier: String,
    pub nodes: u32,
    pub utilisation_mean: f64,
    pub utilisation_max: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ThroughputDigest {
    pub offered_msg_per_s: u64,
    pub sent_msg_per_s: f64,
    pub delivered_msg_per_s: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct InvariantsDigest {
    /// Violations found per invariant number.
    pub counts: Vec<(u8, u64)>,
}

impl RunDigest {
    /// The digest of a run's summary JSON (`summary.json`, or `wasim scenario --json`).
    pub fn from_summary_json(text: &str) -> Result<RunDigest, String> {
        serde_json::from_str(text).map_err(|e| format!("not a run's summary: {e}"))
    }

    pub fn passes(&self) -> bool {
        self.verdict == "PASS"
    }

    /// Violations of every invariant.
    pub fn violations(&self) -> u64 {
        self.invariants.counts.iter().map(|c| c.1).sum()
    }

    pub fn latency(&self, name: &str) -> Option<&LatencyDigest> {
        self.latencies.iter().find(|l| l.name == name)
    }

    /// The tier busiest at its busiest node (then on average): the first to saturate.
    pub fn busiest_tier(&self) -> Option<&TierDigest> {
        self.tiers.iter().filter(|t| t.nodes > 0).reduce(|best, t| {
            let key = |t: &TierDigest| (t.utilisation_max, t.utilisation_mean);
            if key(t).partial_cmp(&key(best)) == Some(std::cmp::Ordering::Greater) {
                t
            } else {
                best
            }
        })
    }

    /// What failed, worst first: each failing SLO (by how far past its objective), then
    /// availability, then the invariants.
    pub fn failures(&self) -> Vec<String> {
        let mut slos: Vec<&SloDigest> = self.slos.iter().filter(|v| v.verdict == "FAIL").collect();
        slos.sort_by(|a, b| (b.measured_ms / b.objective_ms).total_cmp(&(a.measured_ms / a.objective_ms)));
        let mut failed: Vec<String> = slos
            .iter()
            .map(|v| format!("{} (p99 {} ms, objective {})", v.name, ms(v.measured_ms), v.objective))
            .collect();
        let a = &self.availability;
        if a.verdict == "FAIL" {
            failed.push(format!(
                "availability ({:.4}% of sends acknowledged in time, objective {:.4}%)",
                a.measured * 100.0,
                a.objective * 100.0
            ));
        }
        if self.violations() > 0 {
            failed.push(format!("invariants ({} violations)", self.violations()));
        }
        failed
    }
}

/// Milliseconds for people: whole above 100, one decimal below.
fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// `n` out of `of` as a whole percentage.
fn percent(n: usize, of: usize) -> String {
    format!("{:.0}%", n as f64 * 100.0 / of.max(1) as f64)
}
