//! The summary: every figure a run produced, with SLO verdicts, as one serialisable value.

use hdrhistogram::Histogram;
use serde::Serialize;
use wasim_sim::{Counters, Outcome, Scenario, TierStats};

/// PASS or FAIL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        })
    }
}

/// Percentiles of one latency metric, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    pub name: &'static str,
    pub definition: &'static str,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Percentiles that rest on too few samples to mean much (p99 needs 100, p99.9 1,000).
    pub thin: Vec<&'static str>,
}

impl LatencySummary {
    fn new(name: &'static str, definition: &'static str, h: &Histogram<u64>) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1_000.0;
        let count = h.len();
        let q = |p: f64| if count == 0 { 0.0 } else { ms(h.value_at_quantile(p)) };
        let mut thin = Vec::new();
        if count < 100 {
            thin.push("p99");
        }
        if count < 1_000 {
            thin.push("p99.9");
        }
        LatencySummary {
            name,
            definition,
            count,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: if count == 0 { 0.0 } else { ms(h.max()) },
            thin,
        }
    }
}

/// One SLO and its verdict.
#[derive(Clone, Debug, Serialize)]
pub struct SloVerdict {
    pub name: &'static str,
    pub metric: &'static str,
    pub objective: String,
    pub objective_ms: f64,
    pub measured_ms: f64,
    pub samples: u64,
    pub verdict: Verdict,
    pub note: String,
}

/// Load the run achieved, per second of the measuring window.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub offered_msg_per_s: u64,
    pub sent_msg_per_s: f64,
    pub acked_msg_per_s: f64,
    pub delivered_msg_per_s: f64,
}

/// One tier's load in the measuring window.
#[derive(Clone, Debug, Serialize)]
pub struct TierSummary {
    pub tier: &'static str,
    pub nodes: u32,
    pub workers_per_node: u32,
    pub ops_per_s: f64,
    pub ops_per_s_per_node: f64,
    pub utilisation_mean: f64,
    pub utilisation_max: f64,
    pub gauge_end: u64,
    pub gauge: &'static str,
}

impl TierSummary {
    fn new(t: &TierStats, window_s: f64) -> TierSummary {
        let ops = t.served as f64 / window_s;
        let gauge = match t.kind.name() {
            "chat_server" => "connections",
            "redis_session" => "session keys",
            "cassandra" => "replica rows",
            "kafka" => "consumer lag (records)",
            "router" => "routes in flight",
            _ => "",
        };
        TierSummary {
            tier: t.kind.name(),
            nodes: t.nodes,
            workers_per_node: t.workers_per_node,
            ops_per_s: round3(ops),
            ops_per_s_per_node: round3(ops / f64::from(t.nodes.max(1))),
            utilisation_mean: round3(t.utilisation),
            utilisation_max: round3(t.utilisation_max),
            gauge_end: t.gauge_end,
            gauge,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

/// Everything a run produced, deterministic for a scenario and seed (no wall-clock
/// figures: those go to `timing.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub wasim_version: &'static str,
    pub scenario_name: String,
    pub scenario_hash: String,
    pub seed: u64,
    pub replay: String,
    pub tick_us: u64,
    pub simulated_s: u64,
    pub measured_window_s: [u64; 2],
    pub processes: usize,
    pub verdict: Verdict,
    pub slos: Vec<SloVerdict>,
    pub latencies: Vec<LatencySummary>,
    pub throughput: Throughput,
    pub counters: Counters,
    /// Acknowledged (✓) in the window but not delivered by the end of the drain.
    pub acked_not_delivered: u64,
    pub tiers: Vec<TierSummary>,
    pub scenario: Scenario,
}

/// FNV-1a over the scenario as wasim understood it (defaults filled in): two files that
/// mean the same run hash the same.
fn scenario_hash(s: &Scenario) -> String {
    let text = toml::to_string(s).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Summary {
    /// Summarise an outcome. `file` is the scenario path, for the replay command.
    pub fn new(o: &Outcome, file: &str) -> Summary {
        let s = &o.scenario;
        let window_s = s.duration_s as f64;
        let l = &o.latencies;
        let latencies = vec![
            LatencySummary::new("delivery", "send -> recipient device has it (recipients online at send)", &l.delivery),
            LatencySummary::new("sent_ack", "send -> ✓ at the sender", &l.sent_ack),
            LatencySummary::new("receipt", "recipient's delivered ACK -> ✓✓ at the sender", &l.receipt),
        ];
        let delivery = &latencies[0];
        let objective_ms = s.slo.delivery_ms_p99 as f64;
        let (verdict, note) = if delivery.count == 0 {
            (Verdict::Fail, "no deliveries were measured".to_string())
        } else if delivery.p99_ms < objective_ms {
            (Verdict::Pass, String::new())
        } else {
            (Verdict::Fail, format!("p99 {:.1} ms >= {objective_ms} ms", delivery.p99_ms))
        };
        let slos = vec![SloVerdict {
            name: "delivery latency",
            metric: "delivery",
            objective: format!("p99 < {} ms", s.slo.delivery_ms_p99),
            objective_ms,
            measured_ms: delivery.p99_ms,
            samples: delivery.count,
            verdict,
            note,
        }];
        let c = &o.counters;
        let overall = if slos.iter().all(|v| v.verdict == Verdict::Pass) { Verdict::Pass } else { Verdict::Fail };
        Summary {
            wasim_version: env!("CARGO_PKG_VERSION"),
            scenario_name: s.name.clone(),
            scenario_hash: scenario_hash(s),
            seed: o.seed,
            replay: format!("wasim scenario {file} --seed {}", o.seed),
            tick_us: s.tick_us,
            simulated_s: o.simulated_s(),
            measured_window_s: [s.warmup_s, s.warmup_s + s.duration_s],
            processes: o.node_count,
            verdict: overall,
            slos,
            throughput: Throughput {
                offered_msg_per_s: s.workload.messages_per_s,
                sent_msg_per_s: round3(c.sends_measured as f64 / window_s),
                acked_msg_per_s: round3(c.sent_acks_measured as f64 / window_s),
                delivered_msg_per_s: round3(c.deliveries_measured as f64 / window_s),
            },
            latencies,
            counters: *c,
            acked_not_delivered: c.sent_acks_measured.saturating_sub(c.deliveries_measured),
            tiers: o.tiers.iter().map(|t| TierSummary::new(t, window_s)).collect(),
            scenario: s.clone(),
        }
    }
}
