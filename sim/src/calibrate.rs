//! `wasim calibrate`: the engine's queues against queueing theory.
//!
//! Each row runs a single-tier scenario: one tier queues, with exponential service (mean
//! `SERVICE_MEAN_US`) on `workers` workers, and everything else is constant (every other
//! tier serves in no time, every link takes `LINK_MS`). A probe stands where the phones
//! stand and sends the tier a Poisson stream of one kind of request, at the rate that
//! loads it to `rho`; the sojourn it measures (time in queue and in service) is compared
//! with the M/M/c closed form of `wasim_model::capacity` (Erlang C; M/M/1 at one worker).
//!
//! Where the tier answers the requester (Redis: route; Cassandra: read; Kafka: produce;
//! chat server: connect, answered with its acceptance) the probe times the replies, so
//! the order replies leave in is measured too. A router answers nobody: its queue records
//! the sojourn of every visit itself.
//!
//! Some requests visit the tier twice: a router serves a record and then the session
//! store's answer; a chat server serves a connect and then the end of its inbox fetch.
//! The second visit comes back after constant delays without forking, so the tier and its
//! delays form a BCMP network: each visit's sojourn is that of an M/M/c queue with the
//! total arrival rate, which is the rate the probe sets. Kafka also serves the routers'
//! offset commits (10 per second, `COMMITS_PER_S`), counted in its rate.

use crate::run::simulate_with_probe;
use crate::scenario::Scenario;
use crate::topology::NodeKind;
use serde::Serialize;
use std::path::Path;
use wasim_model::Mmc;

/// The mean service time of the tier under test, µs: a tenth of the default tick, so the
/// queue works below the tick (as real service times do: 10 to 400 µs).
pub const SERVICE_MEAN_US: f64 = 100.0;
/// Every link's one-way latency by default, ms (constant): one tick (the default tick), so
/// every arrival is handed to its process in the tick it falls in, in time order. A link
/// shorter than the tick brings a request back to a queue that has served later ones
/// already (a chain of sub-tick hops runs ahead of the tick); the queue then fits it into
/// the gaps it remembers, which is exact at low load and approximate when busy:
/// `wasim calibrate --link-ms 0.5` shows how far.
pub const LINK_MS: f64 = 1.0;
/// Offset commits a router sends per partition per second (its commit interval: 100 ms).
pub const COMMITS_PER_S: f64 = crate::visits::COMMITS_PER_PARTITION_PER_S;
/// Users the probe draws its conversations and devices from.
const POOL: u32 = 50_000;

/// The tiers calibrated, in table order.
pub const TIERS: [NodeKind; 5] =
    [NodeKind::Redis, NodeKind::Cassandra, NodeKind::Kafka, NodeKind::Router, NodeKind::ChatServer];

/// What the probe does in one calibration run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProbePlan {
    pub tier: NodeKind,
    /// Requests per second.
    pub per_s: f64,
    /// Users the requests are spread over.
    pub pool: u32,
    /// The two links a request and its reply cross, µs.
    pub links_us: u64,
    /// The probe times replies (else the tier's queue records its visits).
    pub seen_by_requester: bool,
}

/// One row of the calibration table: a tier, its workers, the load, and how many requests.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Row {
    #[serde(serialize_with = "tier_name")]
    pub tier: NodeKind,
    pub workers: u32,
    pub rho: f64,
    /// Requests measured (at least; the arrivals are random).
    pub customers: u64,
    /// Every link's one-way latency, ms.
    pub link_ms: f64,
}

fn tier_name<S: serde::Serializer>(k: &NodeKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

impl Row {
    /// Visits the tier serves per request (see the module notes).
    pub fn visits_per_request(&self) -> u32 {
        match self.tier {
            NodeKind::Router | NodeKind::ChatServer => 2,
            _ => 1,
        }
    }

    /// Whether the requester times the replies (else the tier's queue records its visits).
    pub fn seen_by_requester(&self) -> bool {
        self.tier != NodeKind::Router
    }

    /// Arrivals per second at the tier that load it to `rho`.
    pub fn arrivals_per_s(&self) -> f64 {
        self.rho * f64::from(self.workers) / (SERVICE_MEAN_US / 1e6)
    }

    /// Requests per second the probe sends.
    fn requests_per_s(&self) -> f64 {
        let extra = if self.tier == NodeKind::Kafka { COMMITS_PER_S } else { 0.0 };
        (self.arrivals_per_s() - extra) / f64::from(self.visits_per_request())
    }

    /// The closed form this row is judged against.
    pub fn model(&self) -> Mmc {
        Mmc::new(self.arrivals_per_s(), SERVICE_MEAN_US / 1e6, self.workers).expect("a calibration load is stable")
    }

    /// The single-tier scenario of this row.
    pub fn scenario(&self) -> Scenario {
        // Long enough for `customers` requests but for a 1-in-3-million draw (5 σ).
        let n = self.customers as f64;
        let window_s = ((n + 5.0 * n.sqrt()) / self.requests_per_s()).ceil().max(1.0) as u64;
        let dist = |tier: NodeKind| {
            if tier == self.tier {
                format!("{{ dist = \"exponential\", mean = {SERVICE_MEAN_US} }}")
            } else {
                "{ dist = \"constant\", value = 0 }".to_string()
            }
        };
        // Presence shares Redis's settings; it serves nothing in a Redis row.
        let text = format!(
            r#"
name = "calibrate-{tier}-c{workers}-rho{rho}"
duration_s = {window_s}
warmup_s = 2
drain_s = 1

[fleet]
chat_servers = 1
client_shards = 1
redis_session_shards = 1
redis_presence_shards = 1
cassandra_nodes = 1
cassandra_replication_factor = 1
kafka_brokers = 1
kafka_partitions = 1
routers = 1

[users]
concurrent = {POOL}
connect_ramp_s = 1

[workload]
messages_per_s = 1

[network]
client_server_ms = {{ dist = "constant", value = {link} }}
in_datacenter_ms = {{ dist = "constant", value = {link} }}

[service_us]
chat_server = {chat}
router = {router}
redis = {redis}
cassandra_write = {cassandra}
kafka = {kafka}

[workers]
chat_server = {workers}
router = {workers}
redis = {workers}
cassandra = {workers}
kafka = {workers}
"#,
            tier = self.tier.name(),
            workers = self.workers,
            rho = self.rho,
            link = self.link_ms,
            chat = dist(NodeKind::ChatServer),
            router = dist(NodeKind::Router),
            redis = dist(NodeKind::Redis),
            cassandra = dist(NodeKind::Cassandra),
            kafka = dist(NodeKind::Kafka),
        );
        Scenario::parse(&text, Path::new("calibrate.toml"), "calibrate").expect("the calibration scenario is valid")
    }

    fn probe(&self) -> ProbePlan {
        ProbePlan {
            tier: self.tier,
            per_s: self.requests_per_s(),
            pool: POOL,
            links_us: 2 * (self.link_ms * 1e3).round() as u64,
            seen_by_requester: self.seen_by_requester(),
        }
    }
}

/// The rows of a calibration: every tier at `rhos` with 1 and 4 workers.
pub fn plan(rhos: &[f64], customers: u64, link_ms: f64) -> Vec<Row> {
    let mut rows = Vec::new();
    for tier in TIERS {
        for workers in [1, 4] {
            for &rho in rhos {
                rows.push(Row { tier, workers, rho, customers, link_ms });
            }
        }
    }
    rows
}

/// A mean and two percentiles of the sojourn, µs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Sojourn {
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Sojourn {
    fn errors(&self, expected: &Sojourn) -> Sojourn {
        let e = |a: f64, b: f64| a / b - 1.0;
        Sojourn {
            mean_us: e(self.mean_us, expected.mean_us),
            p50_us: e(self.p50_us, expected.p50_us),
            p99_us: e(self.p99_us, expected.p99_us),
        }
    }
}

/// What one row measured, beside its closed form.
#[derive(Clone, Debug, Serialize)]
pub struct RowResult {
    pub row: Row,
    /// Who timed the sojourns: "requester" (replies) or "queue" (the tier's own visits).
    pub seen_by: &'static str,
    /// Visits measured.
    pub measured: u64,
    /// The tier's utilisation over the window, as measured.
    pub utilisation: f64,
    pub simulated: Sojourn,
    pub closed_form: Sojourn,
    /// Relative errors (simulated / closed form - 1).
    pub error: Sojourn,
    pub simulated_s: u64,
}

impl RowResult {
    /// The largest of the three relative errors, in absolute value.
    pub fn worst_error(&self) -> f64 {
        [self.error.mean_us, self.error.p50_us, self.error.p99_us].into_iter().map(f64::abs).fold(0.0, f64::max)
    }
}

/// Run one row with `seed`.
pub fn run_row(row: &Row, seed: u64) -> RowResult {
    let scenario = row.scenario();
    let outcome = simulate_with_probe(&scenario, seed, row.probe());
    let h = outcome.calibration.as_ref().expect("a calibration run records sojourns");
    let simulated = Sojourn {
        mean_us: h.mean(),
        p50_us: h.value_at_quantile(0.5) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
    };
    let m = row.model();
    let closed_form = Sojourn {
        mean_us: m.sojourn_s_mean() * 1e6,
        p50_us: m.sojourn_s_quantile(0.5) * 1e6,
        p99_us: m.sojourn_s_quantile(0.99) * 1e6,
    };
    let tier = outcome.tiers.iter().find(|t| t.kind == row.tier).expect("the tier ran");
    RowResult {
        row: *row,
        seen_by: if row.seen_by_requester() { "requester" } else { "queue" },
        measured: h.len(),
        utilisation: tier.utilisation,
        error: simulated.errors(&closed_form),
        simulated,
        closed_form,
        simulated_s: outcome.simulated_s(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_a_valid_scenario_loading_its_tier_as_planned() {
        for row in plan(&[0.5, 0.8, 0.9], 2_000_000, LINK_MS) {
            let s = row.scenario();
            assert_eq!(s.network.in_datacenter_ms, crate::DistConfig::Constant { value: LINK_MS });
            // Visits per second at the tier: the probe's requests times their visits, plus
            // Kafka's commits; service 100 µs: ρ × c of them fill the workers.
            let extra = if row.tier == NodeKind::Kafka { COMMITS_PER_S } else { 0.0 };
            let visits = row.requests_per_s() * f64::from(row.visits_per_request()) + extra;
            assert!((visits * SERVICE_MEAN_US / 1e6 / f64::from(row.workers) - row.rho).abs() < 1e-9, "{row:?}");
            assert!(s.duration_s as f64 * row.requests_per_s() >= row.customers as f64, "{row:?}");
        }
    }

    #[test]
    fn a_row_measures_a_single_worker_queue_near_its_closed_form() {
        let row = Row { tier: NodeKind::Redis, workers: 1, rho: 0.5, customers: 20_000, link_ms: LINK_MS };
        let r = run_row(&row, 9);
        assert!(r.measured >= 19_000, "{r:?}");
        // M/M/1 at ρ = 0.5: mean sojourn 2 E[S] = 200 µs.
        assert!((r.closed_form.mean_us - 200.0).abs() < 1e-6);
        assert!(r.error.mean_us.abs() < 0.1, "{r:?}");
    }
}
