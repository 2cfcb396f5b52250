//! wasim-sim: the simulated world on madsim.
//!
//! One madsim node per simulated process (chat servers, client-population shards, Redis
//! shards, Cassandra nodes, Kafka brokers, routers). Inside each, one task runs a tick
//! loop over data: users, connections and in-flight messages are vectors and maps, not
//! tasks. Processes exchange messages through wasim's own network (`net`), which carries
//! exact arrival times in per-tick buckets. The system's logic is `wasim-model`'s; the
//! serve loops in `nodes` only translate between the network and the models.

pub mod calibrate;
mod check;
mod dist;
mod faults;
pub mod fuzz;
mod gang;
mod groups;
mod infra;
pub mod knee;
mod limits;
mod metrics;
mod msg;
mod net;
mod node;
mod nodes;
mod outbox;
mod population;
mod run;
mod scenario;
mod sizing;
mod topology;
mod visits;
mod workload;

pub use check::{CheckReport, InFlight, Violation};
pub use groups::{GroupStats, Milestones, Spread};
pub use limits::{crash_target, thousands};
pub use metrics::{
    Backlog, Counters, Latencies, SecondCounters, SecondHistogram, SecondLatencies, TraceEvent, LATENCY_US_MAX,
};
pub use population::Population;
pub use run::{run, simulate, Outcome, RunOptions, TierStats, TierWork};
pub use scenario::{
    Detect, DevicesPerUser, DistConfig, Fault, Fleet, LoadBalancer, Network, PlacementPolicy, Scenario, ScenarioError,
    ServiceTimes, Slo, Users, Workers, Workload, MAPPED_PEAK_SHARE,
};
pub use sizing::{sizing, three_zones, NodeCapacity, Sizing, SizingRow};
pub use topology::NodeKind;
pub use visits::{
    estimate_queue, predicted_load, predicted_load_from, predicted_rates, OpCounts, OpKind, TierLoad, OP_KINDS,
    TARGET_UTILISATION,
};
pub use wasim_model::estimate;
pub use wasim_model::plant;
pub use wasim_model::{ReceiptState, SenderEvent, FRAME_BYTES_MAX, SENDER_TRANSITIONS};
