//! Scenario files: the TOML schema with its defaults, parsing, and validation with errors
//! that name the file, the line and the field.

use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A latency or service-time distribution, in the unit its field name states.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum DistConfig {
    /// Always `value`.
    Constant { value: f64 },
    /// Uniform between `min` and `max`.
    Uniform { min: f64, max: f64 },
    /// Exponential with the given mean (memoryless service, M/M/c).
    Exponential { mean: f64 },
    /// Log-normal fitted to a median and a 99th percentile (a long right tail).
    Lognormal { p50: f64, p99: f64 },
}

impl DistConfig {
    /// The distribution's mean, for analytic load predictions.
    pub fn mean(&self) -> f64 {
        match *self {
            DistConfig::Constant { value } => value,
            DistConfig::Uniform { min, max } => (min + max) / 2.0,
            DistConfig::Exponential { mean } => mean,
            DistConfig::Lognormal { p50, p99 } => {
                let sigma = (p99 / p50).ln() / Z_99;
                p50 * (sigma * sigma / 2.0).exp()
            }
        }
    }

    /// The distribution's smallest value (0 for the unbounded ones).
    pub fn min(&self) -> f64 {
        match *self {
            DistConfig::Constant { value } => value,
            DistConfig::Uniform { min, .. } => min,
            DistConfig::Exponential { .. } | DistConfig::Lognormal { .. } => 0.0,
        }
    }

    /// The distribution's 99th percentile (its largest value where it has one).
    pub fn p99(&self) -> f64 {
        match *self {
            DistConfig::Constant { value } => value,
            DistConfig::Uniform { max, .. } => max,
            DistConfig::Exponential { mean } => mean * 100f64.ln(),
            DistConfig::Lognormal { p99, .. } => p99,
        }
    }
}

/// The standard normal's 99th percentile: a log-normal's sigma is ln(p99 / p50) / Z_99.
pub const Z_99: f64 = 2.326_347_874;

fn d_exponential(mean: f64) -> DistConfig {
    DistConfig::Exponential { mean }
}

/// The whole scenario file. Every field has a default; unknown keys are errors.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used for the default output folder (default: the file's stem).
    #[serde(default)]
    pub name: String,
    /// One or two sentences on what the scenario shows (default: empty).
    #[serde(default)]
    pub description: String,
    /// The run seed; `--seed` overrides it (default 1).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated seconds of measured load after the warm-up (default 30).
    #[serde(default = "default_duration_s")]
    pub duration_s: u64,
    /// Seconds of load before measuring starts; users connect during it (default 5).
    #[serde(default = "default_warmup_s")]
    pub warmup_s: u64,
    /// Seconds after the last send for in-flight messages to finish (default 5).
    #[serde(default = "default_drain_s")]
    pub drain_s: u64,
    /// The simulation tick: the granularity at which nodes exchange batches (default 1,000).
    #[serde(default = "default_tick_us")]
    pub tick_us: u64,
    #[serde(default)]
    pub fleet: Fleet,
    #[serde(default)]
    pub users: Users,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub groups: Groups,
    #[serde(default)]
    pub media: Media,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub service_us: ServiceTimes,
    #[serde(default)]
    pub workers: Workers,
    #[serde(default)]
    pub balancer: LoadBalancer,
    #[serde(default)]
    pub slo: Slo,
    #[serde(default)]
    pub checks: Checks,
    /// Faults with their times (default none).
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// A fault injected at a time. Its window must lie after the connect ramp and end by the
/// end of sends.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "FaultFields")]
pub enum Fault {
    /// `users` users (every `users.concurrent / users`th, from user 0) lose their network
    /// at `at_s` for `for_s` seconds: nothing reaches their devices and they send nothing;
    /// the servers are not told. Their devices reconnect, with jitter, when it returns.
    CutNetwork { at_s: u64, for_s: u64, users: u64 },
    /// From `at_s` for `for_s` seconds, each delivered-ACK a device sends is lost in
    /// transit with probability `share`.
    LoseDeliveredAcks { at_s: u64, for_s: u64, share: f64 },
    /// The process `target` (`chat_server-47`, `cassandra-2`, `kafka-1`, `router-0`) is
    /// killed at `at_s`: its memory is gone,
    /// what it had queued or not yet sent is lost, and what reaches it is dropped. It
    /// restarts empty `for_s` seconds later and rejoins. `detect` says how its peers learn
    /// of it: `reset` (the process died, its host resets every connection: devices and
    /// routers notice after one network hop) or `timeout` (the host is gone: devices notice
    /// when a heartbeat goes unanswered for `users.ping_timeout_ms`, servers when their
    /// health checks fail for as long).
    Crash { at_s: u64, for_s: u64, target: String, detect: Detect },
    /// From `at_s` for `for_s` seconds the links between the processes `between` and `and`
    /// (a kind, `router`, or one process, `chat_server-3`) are clogged: what is sent either
    /// way waits and arrives, in order, once they clear. Nothing is lost.
    Clog { at_s: u64, for_s: u64, between: String, and: String },
    /// From `at_s` for `for_s` seconds every hop of the `link` class (`client_server` or
    /// `in_datacenter`) takes `add_ms` longer.
    Latency { at_s: u64, for_s: u64, link: String, add_ms: f64 },
    /// The primary of the Redis shard `target` (`redis_session-2`, `redis_presence-0`) dies
    /// at `at_s`; its replica is promoted `failover_s` seconds later (the cluster's failure
    /// detection and election). Until then a session shard's commands wait (its clients
    /// retry until the new primary answers), and a presence shard's are lost (heartbeats and
    /// presence reads fail; nobody retries a heartbeat). The replica lacks the session keys
    /// written in the last `replication_lag_ms` before the crash (asynchronous
    /// replication); inbox pointers and stored receipts are written with `WAIT 1` and
    /// survive.
    RedisDown { at_s: u64, failover_s: u64, target: String, replication_lag_ms: u64 },
    /// From `at_s` for `for_s` seconds each packet of the `link` class (`client_server` or
    /// `in_datacenter`) is lost with probability `share`. Every link is TCP: a lost segment
    /// is sent again after the retransmission timeout (200 ms, doubling), so the hop is
    /// late and what follows it on the connection waits; nothing is lost.
    PacketLoss { at_s: u64, for_s: u64, link: String, share: f64 },
    /// From `at_s` for `for_s` seconds the clock of chat server `target` reads `skew_ms`
    /// off (ahead if positive): the Snowflake ids it mints carry its time, and its timers
    /// run on it. (Its clock jumps at both ends; ids stay increasing on each server.)
    ClockSkew { at_s: u64, for_s: u64, target: String, skew_ms: i64 },
    /// From `at_s` for `for_s` seconds the object store's ingest is `factor` times slower
    /// (the bytes it takes in then): uploads queue, their messages wait; the backlog drains
    /// at the full bandwidth after.
    ObjectStoreSlow { at_s: u64, for_s: u64, factor: f64 },
    /// From `at_s` for `for_s` seconds the object store answers every request with 503:
    /// uploads are retried with backoff (their messages wait; a send whose retries run out
    /// fails visibly), and CDN misses cannot reach the origin.
    ObjectStoreDown { at_s: u64, for_s: u64 },
    /// The CDN edge `target` (`cdn-N`) is lost at `at_s` for `for_s` seconds: its cache is
    /// gone and every request it takes meanwhile is a miss served from the origin (the
    /// object store); it comes back cold.
    CdnEdgeLoss { at_s: u64, for_s: u64, target: String },
}

/// How the peers of a crashed process learn of it.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Detect {
    /// The process died on a live host: connections are reset at once.
    #[default]
    Reset,
    /// The host is gone: nothing answers, peers notice by timeouts.
    Timeout,
}

impl Fault {
    /// The fault's `kind` as written in a scenario.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::CutNetwork { .. } => "cut_network",
            Fault::LoseDeliveredAcks { .. } => "lose_delivered_acks",
            Fault::Crash { .. } => "crash",
            Fault::Clog { .. } => "clog",
            Fault::Latency { .. } => "latency",
            Fault::RedisDown { .. } => "redis_down",
            Fault::PacketLoss { .. } => "packet_loss",
            Fault::ClockSkew { .. } => "clock_skew",
            Fault::ObjectStoreSlow { .. } => "object_store_slow",
            Fault::ObjectStoreDown { .. } => "object_store_down",
            Fault::CdnEdgeLoss { .. } => "cdn_edge_loss",
        }
    }

    /// What the fault hits, in words (for reports).
    pub fn target(&self) -> String {
        match *self {
            Fault::CutNetwork { users, .. } => format!("{users} users' networks"),
            Fault::LoseDeliveredAcks { share, .. } => format!("{:.1}% of delivered ACKs", share * 100.0),
            Fault::Crash { ref target, detect, .. } => format!("{target} (detected by {detect:?})").to_lowercase(),
            Fault::Clog { ref between, ref and, .. } => format!("links between {between} and {and}"),
            Fault::Latency { ref link, add_ms, .. } => format!("{link} links +{add_ms} ms"),
            Fault::RedisDown { ref target, replication_lag_ms, .. } => {
                format!("{target} primary (replica {replication_lag_ms} ms behind)")
            }
            Fault::PacketLoss { ref link, share, .. } => {
                format!("{link} links losing {:.1}% of packets", share * 100.0)
            }
            Fault::ClockSkew { ref target, skew_ms, .. } => format!("{target}'s clock {skew_ms:+} ms"),
            Fault::ObjectStoreSlow { factor, .. } => format!("the object store {factor}x slower"),
            Fault::ObjectStoreDown { .. } => "the object store (503 to every request)".into(),
            Fault::CdnEdgeLoss { ref target, .. } => format!("{target} (cache lost, misses to the origin)"),
        }
    }

    /// Whether the fault is active at `t_s` seconds into the run.
    pub fn active_at(&self, t_s: f64) -> bool {
        let (at_s, for_s) = self.window_s();
        t_s >= at_s as f64 && t_s < (at_s + for_s) as f64
    }

    /// The fault's start and length, to change them (a Redis failover's delay is its
    /// length).
    pub fn window_mut(&mut self) -> (&mut u64, &mut u64) {
        fault_window!(self)
    }

    /// When the fault starts and how long it lasts, in seconds.
    pub fn window_s(&self) -> (u64, u64) {
        let (at_s, lasts_s) = fault_window!(self);
        (*at_s, *lasts_s)
    }
}

/// A fault's (start, length) fields, borrowed as `$fault` is (shared or mutable): one match
/// for `window_s` and `window_mut`.
macro_rules! fault_window {
    ($fault:expr) => {
        match $fault {
            Fault::CutNetwork { at_s, for_s, .. }
            | Fault::LoseDeliveredAcks { at_s, for_s, .. }
            | Fault::Crash { at_s, for_s, .. }
            | Fault::Clog { at_s, for_s, .. }
            | Fault::Latency { at_s, for_s, .. }
            | Fault::PacketLoss { at_s, for_s, .. }
            | Fault::ClockSkew { at_s, for_s, .. }
            | Fault::ObjectStoreSlow { at_s, for_s, .. }
            | Fault::ObjectStoreDown { at_s, for_s }
            | Fault::CdnEdgeLoss { at_s, for_s, .. } => (at_s, for_s),
            Fault::RedisDown { at_s, failover_s, .. } => (at_s, failover_s),
        }
    };
}
use fault_window;

/// The keys a `[[faults]]` entry may have, as a plain struct: an error in one then names its
/// key and line, where an internally tagged enum would buffer the entry and lose both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultFields {
    kind: FaultKind,
    at_s: u64,
    for_s: Option<u64>,
    failover_s: Option<u64>,
    replication_lag_ms: Option<u64>,
    skew_ms: Option<i64>,
    users: Option<u64>,
    share: Option<f64>,
    target: Option<String>,
    detect: Option<Detect>,
    between: Option<String>,
    and: Option<String>,
    link: Option<String>,
    add_ms: Option<f64>,
    factor: Option<f64>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultKind {
    CutNetwork,
    LoseDeliveredAcks,
    Crash,
    Clog,
    Latency,
    RedisDown,
    PacketLoss,
    ClockSkew,
    ObjectStoreSlow,
    ObjectStoreDown,
    CdnEdgeLoss,
}

impl FaultKind {
    /// The kind as written, the optional keys it takes, and what each needs said of it.
    fn keys(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            FaultKind::CutNetwork => ("cut_network", &["users"], "`users`: how many users lose their network"),
            FaultKind::LoseDeliveredAcks => {
                ("lose_delivered_acks", &["share"], "`share`: the probability that an ACK is lost")
            }
            FaultKind::Crash => ("crash", &["target", "detect"], "`target`: the process, e.g. \"chat_server-47\""),
            FaultKind::Clog => {
                ("clog", &["between", "and"], "`between` and `and`: e.g. between = \"router\", and = \"chat_server-3\"")
            }
            FaultKind::Latency => {
                ("latency", &["link", "add_ms"], "`link` (\"client_server\" or \"in_datacenter\") and `add_ms`")
            }
            FaultKind::ClockSkew => {
                ("clock_skew", &["target", "skew_ms"], "`target` (\"chat_server-N\") and `skew_ms`")
            }
            FaultKind::PacketLoss => {
                ("packet_loss", &["link", "share"], "`link` (\"client_server\" or \"in_datacenter\") and `share`")
            }
            FaultKind::ObjectStoreSlow => {
                ("object_store_slow", &["factor"], "`factor`: how many times slower, e.g. 10")
            }
            FaultKind::ObjectStoreDown => ("object_store_down", &[], ""),
            FaultKind::CdnEdgeLoss => ("cdn_edge_loss", &["target"], "`target`: the edge, e.g. \"cdn-0\""),
            FaultKind::RedisDown => (
                "redis_down",
                &["target", "failover_s", "replication_lag_ms"],
                "`target` (\"redis_session-N\" or \"redis_presence-N\") and `failover_s`",
            ),
        }
    }
}

impl TryFrom<FaultFields> for Fault {
    type Error = String;

    fn try_from(f: FaultFields) -> Result<Fault, String> {
        let FaultFields {
            kind,
            at_s,
            for_s,
            failover_s,
            replication_lag_ms,
            skew_ms,
            users,
            share,
            target,
            detect,
            between,
            and,
            link,
            add_ms,
            factor,
        } = f;
        let (name, takes, needs) = kind.keys();
        let redis = matches!(kind, FaultKind::RedisDown);
        let given = [
            ("for_s", for_s.is_some() && redis),
            ("failover_s", failover_s.is_some()),
            ("replication_lag_ms", replication_lag_ms.is_some()),
            ("skew_ms", skew_ms.is_some()),
            ("users", users.is_some()),
            ("share", share.is_some()),
            ("target", target.is_some()),
            ("detect", detect.is_some()),
            ("between", between.is_some()),
            ("and", and.is_some()),
            ("link", link.is_some()),
            ("add_ms", add_ms.is_some()),
            ("factor", factor.is_some()),
        ];
        if let Some((key, _)) = given.iter().find(|&&(key, set)| set && !takes.contains(&key)) {
            let takes: Vec<String> = takes.iter().map(|k| format!("`{k}`")).collect();
            if takes.is_empty() {
                return Err(format!("{name} takes `at_s` and `for_s`, nothing else: no `{key}`"));
            }
            return Err(format!("{name} takes {}, nothing else: no `{key}`", takes.join(" and ")));
        }
        let missing = || format!("{name} needs {needs}");
        // Every kind but redis_down lasts `for_s`; redis_down lasts until its failover.
        let for_s = match for_s {
            Some(for_s) => for_s,
            None if redis => 0,
            None => return Err(format!("{name} needs `for_s`: how long it lasts, in seconds")),
        };
        Ok(match kind {
            FaultKind::CutNetwork => Fault::CutNetwork { at_s, for_s, users: users.ok_or_else(missing)? },
            FaultKind::LoseDeliveredAcks => Fault::LoseDeliveredAcks { at_s, for_s, share: share.ok_or_else(missing)? },
            FaultKind::Crash => {
                Fault::Crash { at_s, for_s, target: target.ok_or_else(missing)?, detect: detect.unwrap_or_default() }
            }
            FaultKind::Clog => match (between, and) {
                (Some(between), Some(and)) => Fault::Clog { at_s, for_s, between, and },
                _ => return Err(missing()),
            },
            FaultKind::Latency => match (link, add_ms) {
                (Some(link), Some(add_ms)) => Fault::Latency { at_s, for_s, link, add_ms },
                _ => return Err(missing()),
            },
            FaultKind::ClockSkew => match (target, skew_ms) {
                (Some(target), Some(skew_ms)) => Fault::ClockSkew { at_s, for_s, target, skew_ms },
                _ => return Err(missing()),
            },
            FaultKind::PacketLoss => match (link, share) {
                (Some(link), Some(share)) => Fault::PacketLoss { at_s, for_s, link, share },
                _ => return Err(missing()),
            },
            FaultKind::ObjectStoreSlow => Fault::ObjectStoreSlow { at_s, for_s, factor: factor.ok_or_else(missing)? },
            FaultKind::ObjectStoreDown => Fault::ObjectStoreDown { at_s, for_s },
            FaultKind::CdnEdgeLoss => Fault::CdnEdgeLoss { at_s, for_s, target: target.ok_or_else(missing)? },
            FaultKind::RedisDown => match (target, failover_s) {
                (Some(target), Some(failover_s)) => Fault::RedisDown {
                    at_s,
                    failover_s,
                    target,
                    replication_lag_ms: replication_lag_ms.unwrap_or(REPLICATION_LAG_MS_DEFAULT),
                },
                _ => return Err(missing()),
            },
        })
    }
}

/// How far a Redis replica trails its primary when a fault does not say (asynchronous
/// replication on a busy shard: a few round trips and the replication buffer's flush).
pub const REPLICATION_LAG_MS_DEFAULT: u64 = 100;

fn default_seed() -> u64 {
    1
}
fn default_duration_s() -> u64 {
    30
}
fn default_warmup_s() -> u64 {
    5
}
fn default_drain_s() -> u64 {
    5
}
fn default_tick_us() -> u64 {
    1_000
}

/// The processes of the backend.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    /// Chat servers (default 2; the card has 1,000).
    pub chat_servers: u32,
    /// Connections one chat server accepts (default 100,000, the card's figure).
    pub connections_per_server_max: u32,
    /// Client-population shards: simulated processes that hold the phones (default 1).
    pub client_shards: u32,
    /// Redis shards of the session store (default 1, the card's "fits 1 node").
    pub redis_session_shards: u32,
    /// Cassandra nodes (default 3; the card has ~548).
    pub cassandra_nodes: u32,
    /// Replicas of each message row (default 3).
    pub cassandra_replication_factor: u32,
    /// Kafka brokers (default 1).
    pub kafka_brokers: u32,
    /// Partitions of the `messages` topic (default 4).
    pub kafka_partitions: u32,
    /// How long a dead broker's partitions wait for a new leader, in ms (default 6,000: the
    /// controller notices the broker's session expire, then elects).
    pub kafka_election_ms: u64,
    /// Router instances in the consumer group (default 1).
    pub routers: u32,
    /// How long the group coordinator waits for a silent router before it moves the
    /// router's partitions to the others (Kafka's `session.timeout.ms`; default 10,000, its
    /// long-standing value, which deployments that want fast failover keep).
    pub kafka_session_timeout_ms: u64,
    /// Redis shards of the presence store (default 1; the card has 10+ at full scale).
    pub redis_presence_shards: u32,
    /// After a session shard's failover, each chat server re-registers the sessions of
    /// its live connections on that shard; a device whose session the new primary had
    /// lost (or pointed elsewhere) is asked to reconnect, which fetches what went to its
    /// inbox meanwhile (default false: the card's design, which does nothing, so those
    /// devices are routed to their inbox until they next reconnect).
    pub session_reregister: bool,
    /// Fan-out service instances, the consumer group of the group-messages topic (default
    /// 2; present only when `groups.active` > 0).
    pub fanouts: u32,
    /// Partitions of the `group-messages` topic (default 4).
    pub group_partitions: u32,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            chat_servers: 2,
            connections_per_server_max: 100_000,
            client_shards: 1,
            redis_session_shards: 1,
            cassandra_nodes: 3,
            cassandra_replication_factor: 3,
            kafka_brokers: 1,
            kafka_partitions: 4,
            kafka_election_ms: 6_000,
            routers: 1,
            kafka_session_timeout_ms: 10_000,
            redis_presence_shards: 1,
            session_reregister: false,
            fanouts: 2,
            group_partitions: 4,
        }
    }
}

/// Devices per user, by kind: every user has a phone; a share also has a web client.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesPerUser {
    /// Phones per user: always 1.0 (default 1.0).
    pub phone: f64,
    /// Share of users with a web client too (default 0.2).
    pub web: f64,
}

impl Default for DevicesPerUser {
    fn default() -> Self {
        DevicesPerUser { phone: 1.0, web: 0.2 }
    }
}

/// The user population.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Users {
    /// Users online during the run (default 10,000).
    pub concurrent: u64,
    /// Users with an account (default 0: as many as `concurrent`). Those beyond the
    /// concurrent ones start offline (their messages wait in their inboxes) and come online
    /// after `offline_for_s`; they are members of groups and contacts like the others, and
    /// send nothing while offline.
    pub registered: u64,
    /// How long a registered user who starts offline stays so (default exponential, mean
    /// 600: most of a short run's offline users stay offline).
    pub offline_for_s: DistConfig,
    /// Devices of each kind per user (default phone 1.0, web 0.2).
    pub devices_per_user: DevicesPerUser,
    /// Contacts each user messages, drawn from the whole population (default 20).
    pub contacts_per_user: u32,
    /// Users connect evenly over this many seconds from t = 0 (default 2; at most warm-up).
    pub connect_ramp_s: u64,
    /// Every connected device heartbeats this often (default 30,000, the card's 30 s).
    pub heartbeat_interval_ms: u64,
    /// TTL of `presence:{user}`; also the chat server's silence timeout (default 45,000).
    pub presence_ttl_ms: u64,
    /// Share of users hiding their last-seen (default 0.1).
    pub hide_last_seen_share: f64,
    /// Share of users who turned read receipts off (default 0.05).
    pub read_receipts_off_share: f64,
    /// Share of users with a chat open with their first contact, watching its presence
    /// (default 0.1).
    pub chat_open_share: f64,
    /// A device's first reconnect waits up to this (full jitter), after its network
    /// returns or a refusal (default 1,000).
    pub reconnect_backoff_ms_base: u64,
    /// The reconnect window doubles after each failure up to this (default 30,000).
    pub reconnect_backoff_ms_max: u64,
    /// A connect to a host that does not answer fails after this (default 10,000).
    pub connect_timeout_ms: u64,
    /// A heartbeat to a host that does not answer is given up after this, and the
    /// connection with it (default 10,000).
    pub ping_timeout_ms: u64,
}

impl Default for Users {
    fn default() -> Self {
        Users {
            concurrent: 10_000,
            registered: 0,
            offline_for_s: d_exponential(600.0),
            devices_per_user: DevicesPerUser::default(),
            contacts_per_user: 20,
            connect_ramp_s: 2,
            heartbeat_interval_ms: 30_000,
            presence_ttl_ms: 45_000,
            hide_last_seen_share: 0.1,
            read_receipts_off_share: 0.05,
            chat_open_share: 0.1,
            reconnect_backoff_ms_base: 1_000,
            reconnect_backoff_ms_max: 30_000,
            connect_timeout_ms: 10_000,
            ping_timeout_ms: 10_000,
        }
    }
}

/// The offered load.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// 1:1 sends per second across all online users, Poisson, from phones (default 1,000).
    pub messages_per_s: u64,
    /// From a message reaching the phone to its user reading it (default exponential,
    /// mean 20,000).
    pub read_delay_ms: DistConfig,
    /// How often an online phone closes the app (a clean disconnect), per hour, Poisson
    /// (default 6: every 10 minutes on average).
    pub app_closes_per_hour: f64,
    /// How long the app stays closed before it connects again (default exponential, mean
    /// 60,000).
    pub app_closed_ms: DistConfig,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            messages_per_s: 1_000,
            read_delay_ms: d_exponential(20_000.0),
            app_closes_per_hour: 6.0,
            app_closed_ms: d_exponential(60_000.0),
        }
    }
}

/// Group chats: one sender, every other member a recipient (the card's group deep dive).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Groups {
    /// Groups that carry messages during the run (default 0: no group traffic).
    pub active: u32,
    /// Members per group, sender included: `constant` or `uniform` (whole numbers, at most
    /// 1,024, WhatsApp's limit; default constant 64).
    pub members: DistConfig,
    /// Messages each group carries per second, Poisson, from a member drawn uniformly
    /// (default 1.0, the card's example); a member whose app is closed sends nothing.
    pub messages_per_group_per_s: f64,
}

impl Default for Groups {
    fn default() -> Self {
        Groups { active: 0, members: DistConfig::Constant { value: 64.0 }, messages_per_group_per_s: 1.0 }
    }
}

/// Media messages: the card's pre-signed upload, object store and CDN. A media send
/// encrypts on the device, asks the API tier for an upload URL, PUTs the bytes to the
/// object store and only then sends its message (reference and thumbnail) through the chat
/// servers; each recipient device that shows it downloads it from its CDN edge.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Media {
    /// Share of sends, 1:1 and group, that carry media (default 0: none, and no media
    /// tiers run).
    pub share: f64,
    /// Shares of the media kinds among media sends (default image 0.6, video 0.1, audio
    /// 0.2, document 0.1; they need not sum to 1).
    pub kinds: MediaKinds,
    /// Sizes in kB (1,000 bytes) of each kind, after encryption (defaults log-normal:
    /// image p50 150 p99 1,500; video p50 3,000 p99 16,000; audio p50 60 p99 1,000;
    /// document p50 300 p99 10,000). At most 2,000,000 kB (2 GB) a file.
    pub image_kb: DistConfig,
    pub video_kb: DistConfig,
    pub audio_kb: DistConfig,
    pub document_kb: DistConfig,
    /// A device's uplink and downlink in Mbit/s, drawn per transfer (defaults log-normal
    /// uplink p50 10 p99 50, downlink p50 40 p99 200).
    pub uplink_mbps: DistConfig,
    pub downlink_mbps: DistConfig,
    /// How fast a device encrypts before uploading, MB/s (default 200).
    pub encrypt_mb_per_s: f64,
    /// API servers that sign upload URLs, their workers, and the service time of a
    /// presign request in µs (defaults 2, 8, exponential mean 500).
    pub api_servers: u32,
    pub api_workers: u32,
    pub presign_us: DistConfig,
    /// Object-store nodes, and the store's ingest bandwidth in Gbit/s, shared by every
    /// upload, split evenly over its nodes (defaults 4, 10).
    pub object_store_nodes: u32,
    pub ingest_gbps: f64,
    /// An object-store request's time to first byte in µs (default log-normal p50 20,000
    /// p99 100,000).
    pub object_store_us: DistConfig,
    /// CDN edges (a user's devices download from one, by user), an edge's service time per
    /// request in µs, and its cache in GB, the oldest object evicted first (defaults 8,
    /// exponential mean 200, 1,000).
    pub cdn_edges: u32,
    pub cdn_us: DistConfig,
    pub cdn_cache_gb: f64,
    /// Attempts of an upload (or a download) before it fails visibly (default 5).
    pub attempts_max: u32,
    /// Backoff between attempts: exponential with full jitter from this window, doubling
    /// up to the max (defaults 1,000 and 30,000).
    pub retry_backoff_ms_base: u64,
    pub retry_backoff_ms_max: u64,
    /// How long a device waits for an answer beyond the transfer's own time (default
    /// 30,000).
    pub timeout_ms: u64,
}

/// Shares of the media kinds.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaKinds {
    pub image: f64,
    pub video: f64,
    pub audio: f64,
    pub document: f64,
}

impl Default for MediaKinds {
    fn default() -> Self {
        MediaKinds { image: 0.6, video: 0.1, audio: 0.2, document: 0.1 }
    }
}

impl MediaKinds {
    /// The shares in `MediaKind::ALL` order.
    pub fn shares(&self) -> [f64; 4] {
        [self.image, self.video, self.audio, self.document]
    }
}

fn d_lognormal(p50: f64, p99: f64) -> DistConfig {
    DistConfig::Lognormal { p50, p99 }
}

impl Default for Media {
    fn default() -> Self {
        Media {
            share: 0.0,
            kinds: MediaKinds::default(),
            image_kb: d_lognormal(150.0, 1_500.0),
            video_kb: d_lognormal(3_000.0, 16_000.0),
            audio_kb: d_lognormal(60.0, 1_000.0),
            document_kb: d_lognormal(300.0, 10_000.0),
            uplink_mbps: d_lognormal(10.0, 50.0),
            downlink_mbps: d_lognormal(40.0, 200.0),
            encrypt_mb_per_s: 200.0,
            api_servers: 2,
            api_workers: 8,
            presign_us: d_exponential(500.0),
            object_store_nodes: 4,
            ingest_gbps: 10.0,
            object_store_us: d_lognormal(20_000.0, 100_000.0),
            cdn_edges: 8,
            cdn_us: d_exponential(200.0),
            cdn_cache_gb: 1_000.0,
            attempts_max: 5,
            retry_backoff_ms_base: 1_000,
            retry_backoff_ms_max: 30_000,
            timeout_ms: 30_000,
        }
    }
}

impl Media {
    /// Whether media runs: a share above zero.
    pub fn on(&self) -> bool {
        self.share > 0.0
    }

    /// The size distribution of a kind, in kB.
    pub fn size_kb(&self, kind: wasim_model::MediaKind) -> &DistConfig {
        match kind {
            wasim_model::MediaKind::Image => &self.image_kb,
            wasim_model::MediaKind::Video => &self.video_kb,
            wasim_model::MediaKind::Audio => &self.audio_kb,
            wasim_model::MediaKind::Document => &self.document_kb,
        }
    }

    /// The mean size of a media send in bytes, over the kinds' shares.
    pub fn mean_bytes(&self) -> f64 {
        let shares = self.kinds.shares();
        let total: f64 = shares.iter().sum();
        wasim_model::MediaKind::ALL
            .iter()
            .zip(shares)
            .map(|(&k, w)| w / total * self.size_kb(k).mean().min(MEDIA_KB_MAX as f64) * 1e3)
            .sum()
    }
}

/// Workers of a CDN edge (an edge serves many requests at once; its service time is per
/// request).
pub const CDN_WORKERS: u32 = 256;

/// The largest media file, in kB (WhatsApp's document limit, 2 GB).
pub const MEDIA_KB_MAX: u64 = 2_000_000;

/// One-way network latency per link class, in milliseconds.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Phone <-> chat server over the internet (default log-normal p50 30, p99 150).
    pub client_server_ms: DistConfig,
    /// Between servers in one datacenter (default uniform 0.2-1.0).
    pub in_datacenter_ms: DistConfig,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            client_server_ms: DistConfig::Lognormal { p50: 30.0, p99: 150.0 },
            in_datacenter_ms: DistConfig::Uniform { min: 0.2, max: 1.0 },
        }
    }
}

/// Per-request service time of each tier, in microseconds.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceTimes {
    /// A chat server handling one frame or reply (default exponential, mean 50).
    pub chat_server: DistConfig,
    /// A router handling one record or reply (default exponential, mean 20).
    pub router: DistConfig,
    /// One Redis command (default exponential, mean 10).
    pub redis: DistConfig,
    /// One Cassandra replica write (default log-normal p50 400, p99 3,000).
    pub cassandra_write: DistConfig,
    /// One Kafka append or commit (default exponential, mean 100).
    pub kafka: DistConfig,
    /// A fan-out instance handling one record, page or route reply (default exponential,
    /// mean 20, as a router).
    pub fanout: DistConfig,
    /// Reading one page of a group's membership (256 members) from a Cassandra replica
    /// (default log-normal p50 500, p99 3,000).
    pub membership_page: DistConfig,
}

impl Default for ServiceTimes {
    fn default() -> Self {
        ServiceTimes {
            chat_server: d_exponential(50.0),
            router: d_exponential(20.0),
            redis: d_exponential(10.0),
            cassandra_write: DistConfig::Lognormal { p50: 400.0, p99: 3_000.0 },
            kafka: d_exponential(100.0),
            fanout: d_exponential(20.0),
            membership_page: DistConfig::Lognormal { p50: 500.0, p99: 3_000.0 },
        }
    }
}

/// Requests each process serves in parallel (its FIFO queue feeds this many workers).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workers {
    /// Cores of a chat server (default 16).
    pub chat_server: u32,
    /// Cores of a router (default 8).
    pub router: u32,
    /// Redis executes commands on one thread (default 1).
    pub redis: u32,
    /// Cassandra's `concurrent_writes` (default 32).
    pub cassandra: u32,
    /// A broker's request handler threads (default 8).
    pub kafka: u32,
    /// Cores of a fan-out instance (default 8).
    pub fanout: u32,
}

impl Default for Workers {
    fn default() -> Self {
        Workers { chat_server: 16, router: 8, redis: 1, cassandra: 32, kafka: 8, fanout: 8 }
    }
}

/// The load balancer in front of the chat servers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadBalancer {
    /// How a connect picks a chat server: `least_connections` (default), `consistent_hash`
    /// or `random`.
    pub placement: PlacementPolicy,
    /// A server that failed, reset or refused a connect is out of service this long
    /// (default 2,000).
    pub health_check_ms: u64,
    /// Points per server on the consistent-hash ring (default 100).
    pub virtual_nodes: u32,
}

impl Default for LoadBalancer {
    fn default() -> Self {
        LoadBalancer { placement: PlacementPolicy::LeastConnections, health_check_ms: 2_000, virtual_nodes: 100 }
    }
}

/// `balancer.placement`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlacementPolicy {
    #[default]
    LeastConnections,
    ConsistentHash,
    Random,
}

impl PlacementPolicy {
    /// Every policy.
    pub const ALL: [PlacementPolicy; 3] =
        [PlacementPolicy::LeastConnections, PlacementPolicy::ConsistentHash, PlacementPolicy::Random];

    /// The model's policy.
    pub fn model(self) -> wasim_model::Placement {
        match self {
            PlacementPolicy::LeastConnections => wasim_model::Placement::LeastConnections,
            PlacementPolicy::ConsistentHash => wasim_model::Placement::ConsistentHash,
            PlacementPolicy::Random => wasim_model::Placement::Random,
        }
    }

    /// The name as written in a scenario.
    pub fn name(self) -> &'static str {
        match self {
            PlacementPolicy::LeastConnections => "least_connections",
            PlacementPolicy::ConsistentHash => "consistent_hash",
            PlacementPolicy::Random => "random",
        }
    }
}

/// How the invariant checkers follow the run.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// Follow one conversation in this many (a power of two; default: all of them, unless
    /// the run would log more than `CHECKED_DISPLAYS_MAX` displays, then the smallest
    /// power of two that keeps it within that).
    pub conversations_one_in: Option<u32>,
}

/// The service-level objectives the verdicts are judged against.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slo {
    /// Send -> recipient device, p99, in ms (default 500, the card's figure).
    pub delivery_ms_p99: u64,
    /// Status change -> subscribed watcher's view, p99, in ms (default 1,000).
    pub presence_ms_p99: u64,
    /// A send counts as available when its ✓ arrives within this, in ms (default 5,000).
    pub sent_ack_timeout_ms: u64,
    /// The share of sends that must be available (default 0.9999, the card's 99.99%).
    pub availability: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo { delivery_ms_p99: 500, presence_ms_p99: 1_000, sent_ack_timeout_ms: 5_000, availability: 0.9999 }
    }
}

/// A scenario that could not be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    pub file: PathBuf,
    /// 1-based line of the offending field, when it is in the file.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `fleet.chat_servers`; empty when not about a field.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Scenario {
    /// Read, parse and validate a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = read_text(path)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Scenario::parse(&text, path, &report_name_from(&stem))
    }

    /// Parse and validate scenario text; `path` is only used in error messages, and
    /// `default_name` names the scenario when the file does not.
    pub fn parse(text: &str, path: &Path, default_name: &str) -> Result<Scenario, ScenarioError> {
        let (tree, errors) = DeTable::parse_recoverable(text);
        let doc = Doc::index(text, &tree);
        let at = |span: Option<Range<usize>>, message: &str| doc.error_at(path, span, message);
        if let Some(e) = errors.first() {
            return Err(at(e.span(), e.message()));
        }
        if let Some(mistake) = doc.first_shape_mistake(path) {
            return Err(mistake);
        }
        // Each fault is read on its own first: an error inside the third `[[faults]]` then
        // names `faults[2]` and its line, where the whole file's reader would point at the
        // first `[[faults]]` header.
        if let Some(faults) = tree.get_ref().get("faults").and_then(|f| f.get_ref().as_array()) {
            for (i, fault) in faults.iter().enumerate() {
                Fault::deserialize(fault.clone().into_deserializer()).map_err(|e| {
                    let mut error = at(Some(e.span().unwrap_or_else(|| fault.span())), e.message());
                    if !error.field.starts_with(&format!("faults[{i}]")) {
                        error.field = format!("faults[{i}]");
                        error.line = Some(line_of(text, fault.span().start));
                    }
                    error
                })?;
            }
        }
        let mut scenario =
            Scenario::deserialize(toml::de::Deserializer::from(tree)).map_err(|e| at(e.span(), e.message()))?;
        if scenario.name.is_empty() && !doc.sets("name") {
            scenario.name = default_name.to_string();
        }
        crate::limits::check(&scenario).map_err(|failure| doc.error_for(path, failure))?;
        Ok(scenario)
    }

    /// Whether a fault crashes a chat server.
    pub fn crashes_a_chat_server(&self) -> bool {
        self.faults.iter().any(|f| matches!(f, Fault::Crash { target, .. } if target.starts_with("chat_server-")))
    }

    /// How long a router keeps what it forwarded, to route it again if the chat server
    /// crashes: as long as a server holds a push unacknowledged before it closes the silent
    /// connection and hands the push back itself (the presence TTL), and a margin; and as
    /// long as the scenario's faults may hold a forward on its way (a lossy link's
    /// retransmissions, a latency spike, a clog of the routers' or the chat servers'
    /// links): one that reaches its server after the server died is lost with it.
    pub fn forward_retain(&self) -> std::time::Duration {
        let datacenter = |link: &str| link == "in_datacenter";
        let serving = |t: &str| t.starts_with("router") || t.starts_with("chat_server");
        let on_the_way_ms: u64 = self
            .faults
            .iter()
            .map(|f| match f {
                Fault::PacketLoss { link, .. } if datacenter(link) => {
                    crate::faults::RETRANSMISSION_BACKOFF_MAX_US / 1_000
                }
                Fault::Latency { link, add_ms, .. } if datacenter(link) => add_ms.ceil() as u64,
                Fault::Clog { for_s, between, and, .. } if serving(between) || serving(and) => for_s * 1_000,
                _ => 0,
            })
            .sum();
        std::time::Duration::from_millis(self.users.presence_ttl_ms + 5_000 + on_the_way_ms)
    }

    /// How long the routers of this run keep forwards: `forward_retain`, or nothing when no
    /// chat server crashes (only a crash makes a router route its forwards again, so
    /// nothing would read them).
    pub fn forwards_kept(&self) -> std::time::Duration {
        if self.crashes_a_chat_server() {
            self.forward_retain()
        } else {
            std::time::Duration::ZERO
        }
    }

    /// Whether the run ends before a router's dedup window passes: nothing routed is
    /// forgotten, so the routers need not keep the order to forget it in.
    pub fn remembers_all_routed(&self) -> bool {
        self.dedup_window().as_secs() >= self.total_s()
    }

    /// How long a router remembers what it routed, to drop a retried send's repeats and
    /// late records: as long as a device may be away with a send it has no ✓ for (ten
    /// minutes; a retry later than that could be shown twice, and invariant 2 says so).
    pub fn dedup_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(600)
    }

    /// Seconds of 1:1 sends at the full rate: sends ramp up with the connects (the ramp
    /// counts half) and stop at the measuring window's end.
    fn sends_s(&self) -> f64 {
        (self.warmup_s + self.duration_s) as f64 - self.users.connect_ramp_s as f64 / 2.0
    }

    /// The (device, 1:1 conversation) pairs `users` users' devices show a message of by the
    /// end, expected, 5% over: a user is sent its share of the messages (`sends_s`) by its
    /// contacts, and shows a pair for each contact that sent one, on each device:
    /// contacts x (1 - e^(-received / contacts)). Their table is made for them, not grown
    /// to them.
    pub fn shown_pairs_expected(&self, users: usize) -> usize {
        let received = self.workload.messages_per_s as f64 * self.sends_s() / self.registered_users() as f64;
        let contacts = f64::from(self.users.contacts_per_user.max(1));
        let per_user = contacts * (1.0 - (-received / contacts).exp());
        (users as f64 * (1.0 + self.users.devices_per_user.web) * per_user * 1.05).ceil() as usize
    }

    /// The 1:1 messages a router's memory of one partition holds at most, expected: those
    /// sent within the dedup window (`sends_s`), spread over the partitions. Its table is
    /// made for them, not grown to them.
    pub fn routed_per_partition(&self) -> usize {
        self.per_partition(self.workload.messages_per_s as f64 * self.remembered_s())
    }

    /// The forwards a router's memory of one partition keeps at most, expected (see
    /// `forwards_on_their_way`). Its table is made for them, not grown to them.
    pub fn forwards_per_partition(&self) -> usize {
        // The 1:1 messages' alone: routers route no group message.
        self.per_partition(self.forwards_on_their_way(0.0))
    }

    /// How long a forward is kept, expected at most: until its device acknowledges the
    /// push (a round trip to the device, well within a second), or the retention if that
    /// is shorter; none when nothing is kept (`forwards_kept`). The few a crash or a cut
    /// leaves unacknowledged, kept for the retention, are counted with the devices cut off
    /// or crashed.
    fn forward_held_s(&self) -> f64 {
        self.forwards_kept().as_secs_f64().min(FORWARD_ACKED_WITHIN_S)
    }

    /// The forwards the routers and fan-outs keep at once: those on their way to a device
    /// and not yet acknowledged (`forward_held_s`), a copy for each device, of 1:1 and
    /// group messages.
    fn forwards_on_their_way(&self, group_copies_per_s: f64) -> f64 {
        (self.workload.messages_per_s as f64 * (1.0 + self.users.devices_per_user.web) + group_copies_per_s)
            * self.forward_held_s()
    }

    /// `total` spread over the Kafka partitions, 5% over for the partitions' spread and the
    /// retries.
    fn per_partition(&self, total: f64) -> usize {
        (total / f64::from(self.fleet.kafka_partitions.max(1)) * 1.05).ceil() as usize
    }

    /// Seconds of sends the routers remember at once: the dedup window or the run's sends,
    /// whichever is shorter.
    fn remembered_s(&self) -> f64 {
        self.sends_s().max(0.0).min(self.dedup_window().as_secs_f64())
    }

    /// The messages the routers remember at most, as slots of their tables
    /// (`routed_per_partition`); a window shorter than the run also keeps each message's key
    /// in order for forgetting it (8 bytes, in a queue that doubles: as much as 0.6 of a slot).
    fn routed_remembered(&self) -> f64 {
        let ordered = if self.remembers_all_routed() { 0.0 } else { 0.6 };
        self.workload.messages_per_s as f64 * self.remembered_s() * (1.0 + ordered)
    }

    /// Processes of every kind (each field is a `u32`, so the sum fits).
    pub fn processes(&self) -> u64 {
        let f = &self.fleet;
        [
            f.chat_servers,
            f.client_shards,
            f.redis_session_shards,
            f.redis_presence_shards,
            f.cassandra_nodes,
            f.kafka_brokers,
            f.routers,
            self.fanout_processes(),
            self.media_processes(crate::topology::NodeKind::Api),
            self.media_processes(crate::topology::NodeKind::ObjectStore),
            self.media_processes(crate::topology::NodeKind::Cdn),
        ]
        .into_iter()
        .map(u64::from)
        .sum()
    }

    /// Processes of a media tier: none without media.
    pub fn media_processes(&self, kind: crate::topology::NodeKind) -> u32 {
        use crate::topology::NodeKind;
        let m = &self.media;
        match kind {
            _ if !m.on() => 0,
            NodeKind::Api => m.api_servers,
            NodeKind::ObjectStore => m.object_store_nodes,
            NodeKind::Cdn => m.cdn_edges,
            _ => 0,
        }
    }

    /// Fan-out instances of the run: none without group traffic.
    pub fn fanout_processes(&self) -> u32 {
        if self.groups.active > 0 {
            self.fleet.fanouts
        } else {
            0
        }
    }

    /// Partitions of the group-messages topic: none without group traffic.
    pub fn group_partitions(&self) -> u32 {
        if self.groups.active > 0 {
            self.fleet.group_partitions
        } else {
            0
        }
    }

    /// The checkers follow one conversation in this many: `checks.conversations_one_in` if
    /// set, else 1 (all) unless the run would log more than `CHECKED_DISPLAYS_MAX` displays
    /// (the largest of the checkers' logs, one per device a message is shown on), then the
    /// smallest power of two that keeps the displays of the conversations followed below it
    /// (the card's full load: 8).
    pub fn checked_one_in(&self) -> u32 {
        if let Some(one_in) = self.checks.conversations_one_in {
            return one_in;
        }
        let group_displays = f64::from(self.groups.active)
            * self.groups.messages_per_group_per_s
            * if self.groups.active > 0 { self.groups.members.mean() } else { 0.0 };
        let displays = (self.workload.messages_per_s as f64 * (1.0 + self.users.devices_per_user.web) + group_displays)
            * (self.warmup_s + self.duration_s) as f64;
        let mut one_in = 1u32;
        while displays / f64::from(one_in) > CHECKED_DISPLAYS_MAX && one_in < 1 << 16 {
            one_in *= 2;
        }
        one_in
    }

    /// Users with an account: `users.registered`, at least the concurrent ones.
    /// The card's estimation inputs with this scenario's numbers where it has them: users
    /// (its registered users, all taken as daily users), users online, messages a day (1:1
    /// and group sends), the heartbeat, connections a chat server, replicas, and the groups;
    /// the card's own for the rest (message sizes, node sizes, history kept).
    pub fn estimate_inputs(&self) -> wasim_model::estimate::EstimateInputs {
        let card = wasim_model::estimate::EstimateInputs::card();
        let registered = self.registered_users() as f64;
        let concurrent = self.users.concurrent as f64;
        let group_sends = f64::from(self.groups.active) * self.groups.messages_per_group_per_s;
        wasim_model::estimate::EstimateInputs {
            users: registered,
            dau: registered,
            concurrent,
            messages_per_day: (self.workload.messages_per_s as f64 + group_sends) * wasim_model::estimate::DAY_S,
            replication: f64::from(self.fleet.cassandra_replication_factor),
            connections_per_server: f64::from(self.fleet.connections_per_server_max),
            heartbeat_s: self.users.heartbeat_interval_ms as f64 / 1e3,
            groups_active: f64::from(self.groups.active),
            group_members: if self.groups.active > 0 { self.groups.members.mean() } else { 0.0 },
            group_messages_per_s: self.groups.messages_per_group_per_s,
            online_share: if registered > 0.0 { concurrent / registered } else { 0.0 },
            media_share: self.media.share,
            media_bytes: if self.media.on() { self.media.mean_bytes() } else { card.media_bytes },
            media_downloads: self.media_downloads_per_message(),
            ..card
        }
    }

    /// The devices that download a media message, expected: every device of a 1:1
    /// message's recipient, of each member but the sender in a group's.
    pub fn media_downloads_per_message(&self) -> f64 {
        let devices = 1.0 + self.users.devices_per_user.web;
        let one_to_one = self.workload.messages_per_s as f64;
        let group_sends = f64::from(self.groups.active) * self.groups.messages_per_group_per_s;
        let members = if self.groups.active > 0 { self.groups.members.mean() - 1.0 } else { 0.0 };
        let total = one_to_one + group_sends;
        if total <= 0.0 {
            return 0.0;
        }
        devices * (one_to_one + group_sends * members) / total
    }

    pub fn registered_users(&self) -> u64 {
        self.users.registered.max(self.users.concurrent)
    }

    /// Total simulated time: warm-up, measured load, then the drain. Validation keeps it
    /// within a day; it saturates rather than wraps on a scenario not yet validated.
    pub fn total_s(&self) -> u64 {
        self.warmup_s.saturating_add(self.duration_s).saturating_add(self.drain_s)
    }

    /// A generous estimate of the memory a run needs, to refuse one the machine cannot hold.
    /// The limits keep every term far below `u64::MAX`; the arithmetic saturates anyway, so
    /// that no scenario can wrap the estimate down to a size that looks harmless.
    pub fn estimated_memory_bytes(&self) -> u64 {
        let terms = self.memory_terms().into_iter();
        // The peak comes at the end of the run (what it grew with) or, after a fast connect
        // ramp, at the ramp's end: the state that does not grow with the run, plus the
        // connects in flight, which the run reuses once they are done.
        let at_end: f64 = terms.clone().map(|(b, _)| b).sum();
        let kept: f64 = terms.filter(|&(_, grows)| !grows).map(|(b, _)| b).sum();
        let devices = self.users.concurrent as f64 * (1.0 + self.users.devices_per_user.web);
        let connects_per_s = devices / (self.users.connect_ramp_s as f64).max(1.0);
        let at_ramp_end = kept + connects_per_s * MEMORY_BYTES_PER_CONNECT_PER_S;
        let bytes = at_end.max(at_ramp_end);
        // Saturates at u64::MAX (a float-to-integer cast does), never wraps; a scenario whose
        // figures overflow to infinity or NaN is too large.
        if bytes.is_finite() {
            bytes as u64
        } else {
            u64::MAX
        }
    }

    /// The memory estimate term by term: each term's bytes, and whether it grows with the
    /// run (see `MEMORY_TERMS`).
    pub fn memory_terms(&self) -> Vec<(f64, bool)> {
        self.memory_features().into_iter().zip(MEMORY_TERMS).map(|(x, t)| (x * t.bytes, t.grows_with_run)).collect()
    }

    /// What the memory of a run grows with, term by term (see `MEMORY_TERMS`).
    fn memory_features(&self) -> [f64; MEMORY_FEATURES] {
        let (f, u) = (&self.fleet, &self.users);
        let users = u.concurrent as f64;
        let devices = users * (1.0 + u.devices_per_user.web);
        let watchers = users * u.chat_open_share;
        let ramp_s = (u.connect_ramp_s as f64).max(1.0);
        let redis_per_s = f64::from(self.workers.redis) / (self.service_us.redis.mean().max(1e-3) * 1e-6);
        let queued = |ops: f64, shards: u32| (ops / ramp_s - f64::from(shards) * redis_per_s).max(0.0) * ramp_s;
        let presence_ops = devices + watchers;
        let rates = crate::visits::predicted_rates(self);
        let per_s = |k: crate::visits::OpKind| rates[k as usize];
        use crate::visits::OpKind as K;
        let run_s = (self.warmup_s + self.duration_s) as f64;
        let per_user_per_s = self.workload.messages_per_s as f64 / users.max(1.0);
        let (mut cut_devices, mut long_cut_messages, mut acks_lost) = (0.0, 0.0, 0.0);
        let mut crashed_devices = 0.0;
        let (mut stalled_sends, mut failover_sends) = (0.0, 0.0);
        let mut cassandra_down: Vec<(u64, u64)> = Vec::new();
        for fault in &self.faults {
            match *fault {
                Fault::CutNetwork { for_s, users: cut, .. } => {
                    let cut_devices_here = cut as f64 * (1.0 + u.devices_per_user.web);
                    cut_devices += cut_devices_here;
                    // A cut longer than the connection timeout (the presence TTL): its
                    // servers close the dead connections and hand everything they held back
                    // to the inbox at once, and the devices fetch all that came during the
                    // cut in one burst when it ends.
                    if for_s * 1_000 > u.presence_ttl_ms {
                        long_cut_messages += cut_devices_here * per_user_per_s * for_s as f64;
                    }
                }
                // Each delivered ACK lost leaves a push held unacknowledged, pushed again or
                // handed back to the inbox.
                Fault::LoseDeliveredAcks { for_s, share, .. } => {
                    acks_lost +=
                        self.workload.messages_per_s as f64 * (1.0 + u.devices_per_user.web) * share * for_s as f64;
                }
                // A crashed chat server's devices reconnect and catch up, like a cut's. A
                // Cassandra node down holds up writes of the partitions that lose their
                // quorum: the sends waiting meanwhile (counted with the overload backlog).
                // Hops held by a clog wait in the network, and the work they bring comes at
                // once when it clears (counted like the sends a Cassandra outage holds up).
                Fault::Clog { for_s, .. } => stalled_sends += self.workload.messages_per_s as f64 * for_s as f64,
                Fault::Latency { .. } | Fault::PacketLoss { .. } | Fault::ClockSkew { .. } => {}
                // Uploads held by the store wait in their devices (counted with the media).
                Fault::ObjectStoreSlow { .. } | Fault::ObjectStoreDown { .. } | Fault::CdnEdgeLoss { .. } => {}
                // A session shard's commands wait for the failover: the sends of its users
                // meanwhile (an upper bound: the whole load); a presence shard's are lost.
                Fault::RedisDown { ref target, failover_s, .. } => {
                    if target.starts_with("redis_session-") {
                        let sends = self.workload.messages_per_s as f64 * failover_s as f64;
                        stalled_sends += sends;
                        // The mitigation (re-registering, sending devices away to reconnect)
                        // holds more for the sends of the failover.
                        if f.session_reregister {
                            failover_sends += sends;
                        }
                    }
                }
                Fault::Crash { ref target, at_s, for_s, .. } => {
                    if target.starts_with("chat_server-") {
                        crashed_devices += devices / f64::from(f.chat_servers);
                    } else if target.starts_with("cassandra-") {
                        cassandra_down.push((at_s, at_s + for_s));
                    } else {
                        stalled_sends += self.workload.messages_per_s as f64 * for_s as f64;
                    }
                }
            }
        }
        // Cassandra nodes down hold up the writes of the partitions that lose their quorum:
        // while enough of a partition's replicas are down (one of three is not), the share
        // of the partitions two down nodes both replicate (at most rf - 1 ranges of the ring).
        let (rf, nodes) = (f.cassandra_replication_factor, f.cassandra_nodes.max(1));
        let need = rf - rf / 2;
        let quorum_lost_s = seconds_with_at_least(&cassandra_down, need);
        let share = f64::from(if need <= 1 { rf } else { rf - 1 }) / f64::from(nodes);
        stalled_sends += self.workload.messages_per_s as f64 * quorum_lost_s as f64 * share.min(1.0);
        // Group messages' recipients online at the start (the others wait in inboxes).
        let online_recipients = f64::from(self.groups.active)
            * self.groups.messages_per_group_per_s
            * run_s
            * self.group_members_max()
            * (users / self.registered_users() as f64);
        // The catch-ups' reads of 1:1 messages: a group message's inbox pointers and the
        // copies fetched are the group recipients' terms (its reads are in `rates` for the
        // tiers' load, not counted twice here).
        let one_to_one_reads = if self.groups.active > 0 {
            let mut one_to_one = self.clone();
            one_to_one.groups.active = 0;
            crate::visits::predicted_rates(&one_to_one)[K::Read as usize]
        } else {
            per_s(K::Read)
        };
        // Work a tier past capacity cannot serve waits, its replies held in an outbox: the
        // excess of its predicted load over its capacity, for the run. The largest such
        // excess, not their sum: a tier behind an overloaded one is offered only what that
        // one lets through.
        let backlog: f64 = crate::visits::predicted_load_from(self, &rates)
            .iter()
            .filter(|t| t.utilisation > 1.0)
            .map(|t| t.ops_per_s * (1.0 - 1.0 / t.utilisation) * run_s)
            .fold(0.0, f64::max)
            + stalled_sends;
        [
            1.0,
            users,
            users * u.devices_per_user.web,
            watchers,
            per_s(K::Write) * run_s,
            (per_s(K::Connect) + per_s(K::Disconnect)) * run_s,
            self.processes() as f64,
            f64::from(f.client_shards),
            queued(devices, f.redis_session_shards),
            queued(presence_ops, f.redis_presence_shards) * (watchers / presence_ops.max(1.0)),
            cut_devices,
            crashed_devices,
            one_to_one_reads * run_s,
            long_cut_messages,
            acks_lost,
            backlog,
            self.forwards_on_their_way(online_recipients / run_s.max(1.0)),
            self.routed_remembered(),
            (self.registered_users() - u.concurrent) as f64,
            f64::from(self.groups.active) * self.group_members_max(),
            f64::from(self.groups.active) * self.groups.messages_per_group_per_s * run_s * self.group_members_max(),
            online_recipients,
            (self.workload.messages_per_s as f64 * (1.0 + u.devices_per_user.web) * run_s + online_recipients)
                * (CHECKS_UNSAMPLED_SHARE + (1.0 - CHECKS_UNSAMPLED_SHARE) / f64::from(self.checked_one_in())),
            self.workload.messages_per_s as f64 * u.devices_per_user.web * run_s,
            self.workload.messages_per_s as f64 * (1.0 + u.devices_per_user.web),
            online_recipients / run_s.max(1.0),
            failover_sends,
            per_s(K::Put) * run_s,
        ]
    }

    /// The most members a group of this scenario can have (0 without groups).
    fn group_members_max(&self) -> f64 {
        match self.groups.members {
            _ if self.groups.active == 0 => 0.0,
            DistConfig::Constant { value } => value,
            DistConfig::Uniform { max, .. } => max,
            _ => f64::from(crate::limits::GROUP_MEMBERS_MAX),
        }
    }
}

/// A forward is acknowledged by its device within this, expected (a round trip to the
/// device and back: 80 ms at the card's network), but for the few a crash or a cut holds
/// up (`forward_held_s`).
const FORWARD_ACKED_WITHIN_S: f64 = 1.0;

/// The share of what the checkers keep per display that a sample of the conversations does
/// not thin: a margin, now that the sender's views checked as the run goes and the ✓s'
/// replica writes are held only for the conversations followed (4% when they were held for
/// every message), set to keep the full load at 1% and 4% of its users, fleet and load,
/// following one conversation in 64, near 1.1 of their peaks.
const CHECKS_UNSAMPLED_SHARE: f64 = 0.01;

/// The share of the estimate a run that maps its large buffers peaks at (`wasim scenario`
/// maps them when the estimate is over a quarter of the memory available: each goes back
/// to the system when freed, rather than staying with the heap): the terms are
/// fitted to runs that take them from the heap, where one freed between live allocations
/// stays with the process. Measured: the full load at 1%, 5 to 7% lower mapped; the
/// estimate is 1.02 to 1.05 times the heap runs' peaks (1%, 4%, cell-8pct); the mapped
/// peaks of a quarter of the card (5,189 MiB) and of the card (21,521 MiB) came at 0.87 of
/// it, but crash-server-47-full.toml, admitted at 0.9, had reached 0.9 of it (23,069 MiB)
/// with the machine's memory gone and was still growing: 0.94 refused it. (It kept every
/// forward for the retention then; kept only until acknowledged, it peaked at 0.86 of its
/// estimate, 20,229 MiB.)
pub const MAPPED_PEAK_SHARE: f64 = 0.94;

/// The most displays the checkers log in a run: a larger run checks a sample of its
/// conversations (`Scenario::checked_one_in`), so that the logs (the estimate charges 152 bytes a message
/// followed) stay within a few GiB.
pub const CHECKED_DISPLAYS_MAX: f64 = 40e6;

/// Seconds during which at least `need` of the `[from, until)` intervals overlap.
fn seconds_with_at_least(intervals: &[(u64, u64)], need: u32) -> u64 {
    let mut edges: Vec<(u64, i64)> = intervals.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
    edges.sort_unstable();
    let (mut open, mut since, mut seconds) = (0i64, 0u64, 0u64);
    for (t, step) in edges {
        if open >= i64::from(need) {
            seconds += t - since;
        }
        open += step;
        since = t;
    }
    seconds
}

/// The terms of the memory estimate.
const MEMORY_FEATURES: usize = 28;

/// One term of the memory estimate: bytes per unit of its feature, and whether it grows
/// over the run (rather than being there from the ramp's end).
#[derive(Clone, Copy)]
struct MemoryTerm {
    bytes: f64,
    grows_with_run: bool,
}

const fn held(bytes: f64) -> MemoryTerm {
    MemoryTerm { bytes, grows_with_run: false }
}

const fn grows(bytes: f64) -> MemoryTerm {
    MemoryTerm { bytes, grows_with_run: true }
}

/// The terms of `Scenario::memory_features`, in order: fitted to the peak resident memory
/// of runs from 100 to 2M users, 100 to 90,000 msg/s, 1 to 1,000 chat servers, fast and
/// slow connect ramps, heavy app-close churn, short fleets, lost ACKs and network cuts,
/// then raised so that no run is above its estimate (README, "Memory").
const MEMORY_TERMS: [MemoryTerm; MEMORY_FEATURES] = [
    held(11.0e6),  // the binary, the runtime, the quantile tables, the gang's threads
    held(135.0), // a user: phone (24 bytes), connection, session (14) and presence (9) keys, inbox, checker state (9 less for the inbox heads of only the users with an inbox, the connections' table without a power of two, and wheels' buckets grown by a quarter)
    held(400.0), // a web client: its device, connection and session entries, a display logged per message
    held(146.0), // a watcher: its subscription (its slot in the channels' table: 40 bytes less than a hash map's entry took)
    grows(4.67), // a replica row written: its share of the row (one `u64` of id and cell: 8 bytes, 10 and 12 before), the message's shown ids (partitions are counted only where paged)
    grows(30.0), // a connect or close: its presence key lifetime, its registration, its notifications
    held(156e3), // a process: its network wheel (its own buffers, cut back after a burst), outbox and queue
    held(1.4e6), // a client shard's latency histograms
    held(390.0), // a connect queued behind a Redis shard a fast ramp overloads
    held(420.0), // a subscription queued likewise (its answer waits too)
    held(900.0), // a device cut off: what its server holds for it, its reconnect and catch-up
    held(400.0), // a device of a chat server that crashed: its reconnect and catch-up (the forwards replayed are only those it had not acknowledged)
    grows(100.0), // a replica read of an inbox entry: the pointer, the fetch's rows, the re-push
    grows(1300.0), // a message for a device cut past the timeout: rerouted, then fetched in a burst
    grows(80.0), // a delivered ACK lost: the push held, pushed again or handed back to the inbox
    grows(130.0), // a request an overloaded tier has not served: its reply waiting in an outbox
    held(64.0), // a forward kept for replay (should its chat server crash) until its device acknowledges it: a router's table slot of 44 bytes at 7/8 load, or a fan-out's hash map entry of 56
    held(19.2), // a message a router remembers, to drop its repeats and late copies: a 16-byte slot of a table made for them at 7/8 load, 5% over
    held(200.0), // a registered user offline at the start: its devices, its wake-up timer
    held(40.0), // a group membership: the member list, a group sender entry
    grows(6.0), // a group message's recipient: its inbox pointer or receipt bits
    grows(2.5), // one online at the start: its shown ids, the receipt rows
    grows(152.0), // a display, followed by the checkers (one conversation in `checks.conversations_one_in`; `CHECKS_UNSAMPLED_SHARE` of it whatever the sample): its display, ✓, read in their logs
    grows(250.0), // a 1:1 message's copy for a web client: its push, receipt and display on their way
    held(640.0), // a 1:1 message a second to each device: what is on its way at any time (reads pending, pushes, receipts until heard; 830 before the reads' buckets grew by a quarter)
    held(300.0), // a group message a second to each member online: its pushes and reads on their way
    held(1_700.0), // a send during a session shard's failover with re-registration: its routes retried, the devices sent away, their fetches
    grows(300.0), // a media upload: the object store's entry, the CDN edges' cached copies, the checker's logs of it, its upload and downloads on their way
];

/// Bytes at the end of the connect ramp per connect per second of the ramp: the connects
/// in flight (their messages on the network, queued commands, fetch jobs) and the buffers
/// the burst grows (fitted to ramps of 0.4M to 1M connects in 1 s, at 1.14 to 1.29 of
/// their peaks).
const MEMORY_BYTES_PER_CONNECT_PER_S: f64 = 300.0;

/// Read a scenario file: at most `SCENARIO_FILE_BYTES_MAX`, and UTF-8 (a bad byte is
/// located by its line).
fn read_text(path: &Path) -> Result<String, ScenarioError> {
    let error = |line: Option<usize>, message: String| ScenarioError {
        file: path.to_path_buf(),
        line,
        field: String::new(),
        message,
    };
    let limit = crate::limits::SCENARIO_FILE_BYTES_MAX;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| error(None, format!("cannot read the scenario file: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(error(None, format!("larger than {} KiB: a scenario is a page of TOML", limit / 1_024)));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid].iter().filter(|&&b| b == b'\n').count() + 1;
        error(Some(line), format!("not UTF-8 text (byte {valid} of the file)"))
    })
}

/// A report name made from a file's stem: characters that are unsafe in a folder name
/// become `_`, and no dot starts it or follows another (see `limits::check_name`).
fn report_name_from(stem: &str) -> String {
    let mut name = String::new();
    for c in stem.chars().take(crate::limits::NAME_LEN_MAX) {
        let safe = c.is_ascii_alphanumeric()
            || matches!(c, '_' | '-')
            || (c == '.' && !name.is_empty() && !name.ends_with('.'));
        name.push(if safe { c } else { '_' });
    }
    if name.is_empty() {
        name.push_str("scenario");
    }
    name
}

/// 1-based line number of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Where each field of a scenario file is: the span of every key, value and array entry
/// with its dotted path (`users.concurrent`, `faults[1].at_s`; array indices are 0-based),
/// and the mistakes of shape found on the way (a table-typed field given as an array).
struct Doc<'t> {
    text: &'t str,
    entries: Vec<(Range<usize>, String)>,
    /// (span, field, what is wrong)
    shape_mistakes: Vec<(Range<usize>, String, String)>,
}

impl<'t> Doc<'t> {
    fn index(text: &'t str, tree: &Spanned<DeTable<'_>>) -> Doc<'t> {
        let mut doc = Doc { text, entries: Vec::new(), shape_mistakes: Vec::new() };
        let schema = Schema::of_defaults();
        doc.walk_table(tree.get_ref(), "", &schema);
        doc
    }

    fn walk_table(&mut self, table: &DeTable<'_>, prefix: &str, schema: &Schema) {
        for (key, value) in table.iter() {
            let path =
                if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
            self.entries.push((key.span(), path.clone()));
            self.walk_value(value, &path, schema);
        }
    }

    fn walk_value(&mut self, value: &Spanned<DeValue<'_>>, path: &str, schema: &Schema) {
        self.entries.push((value.span(), path.to_string()));
        if let Some(mistake) = schema.shape_mistake(path, value.get_ref()) {
            self.shape_mistakes.push((value.span(), path.to_string(), mistake));
        }
        match value.get_ref() {
            DeValue::Table(t) => self.walk_table(t, path, schema),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk_value(item, &format!("{path}[{i}]"), schema);
                }
            }
            _ => {}
        }
    }

    /// The first mistake of shape in the file, if any.
    fn first_shape_mistake(&self, file: &Path) -> Option<ScenarioError> {
        let (span, field, message) = self.shape_mistakes.iter().min_by_key(|(span, _, _)| span.start)?;
        Some(ScenarioError {
            file: file.to_path_buf(),
            line: Some(line_of(self.text, span.start)),
            field: field.clone(),
            message: message.clone(),
        })
    }

    /// Whether the file sets `field`.
    fn sets(&self, field: &str) -> bool {
        self.entries.iter().any(|(_, path)| path == field)
    }

    /// The field whose key or value holds byte `at`: the innermost one (entries are indexed
    /// parent first, so of two equal spans, `faults` and `faults[0]`, the later is inner).
    fn field_at(&self, at: usize) -> Option<&str> {
        let inner = self.entries.iter().rev().filter(|(span, _)| span.contains(&at)).min_by_key(|(span, _)| span.len());
        inner.map(|(_, p)| p.as_str())
    }

    /// The field a parse error at `span` is about. A key the parser refused (a duplicate)
    /// is not in the index: it is taken to be the nearest earlier key of the same name.
    fn field_of_parse_error(&self, span: &Range<usize>) -> Option<&str> {
        if let Some(field) = self.field_at(span.start) {
            return Some(field);
        }
        let word = self.text.get(span.clone())?.trim().trim_matches(['"', '\'']);
        let same_key = |path: &str| path == word || path.ends_with(&format!(".{word}"));
        let earlier = self.entries.iter().filter(|(s, path)| s.start < span.start && same_key(path));
        earlier.max_by_key(|(s, _)| s.start).map(|(_, p)| p.as_str())
    }

    /// The line on which `field` is set; if the file does not set it, the line of the
    /// nearest enclosing table or array entry that it does set (a fault's `[[faults]]`).
    fn line_of_field(&self, field: &str) -> Option<usize> {
        let mut field = field;
        loop {
            let start = self.entries.iter().filter(|(_, path)| path == field).map(|(span, _)| span.start).min();
            if let Some(start) = start {
                return Some(line_of(self.text, start));
            }
            field = &field[..field.rfind(['.', '['])?];
        }
    }

    /// An error at a span the TOML parser or deserializer reported.
    fn error_at(&self, file: &Path, span: Option<Range<usize>>, message: &str) -> ScenarioError {
        ScenarioError {
            file: file.to_path_buf(),
            line: span.as_ref().map(|s| line_of(self.text, s.start)),
            field: span.and_then(|s| self.field_of_parse_error(&s)).unwrap_or_default().to_string(),
            message: message.to_string(),
        }
    }

    /// An error about a field that validation refused, placed on the first of the fields
    /// involved that the file sets (else where the field's table or fault is).
    fn error_for(&self, file: &Path, failure: crate::limits::Failure) -> ScenarioError {
        let crate::limits::Failure { field, related, message } = failure;
        let set = std::iter::once(field.as_str()).chain(related).find(|f| self.sets(f));
        let field = set.map_or(field.clone(), str::to_string);
        ScenarioError { file: file.to_path_buf(), line: self.line_of_field(&field), field, message }
    }
}

/// The fields whose type is a table, read off the defaults so that it cannot fall behind
/// the structs: serde would accept an array for a struct (`fleet = [1, 2]` sets its first
/// two fields) and for an internally tagged enum, so the shape is checked before.
struct Schema {
    /// Dotted paths of table-typed fields, with whether each is a distribution.
    tables: Vec<(String, bool)>,
}

impl Schema {
    fn of_defaults() -> Schema {
        let defaults: Scenario = toml::from_str("").expect("every field has a default");
        let value = toml::Value::try_from(&defaults).expect("the defaults serialise");
        let mut tables = Vec::new();
        collect_tables(&value, "", &mut tables);
        Schema { tables }
    }

    /// What is wrong with the shape of `value` at `path`, if anything.
    fn shape_mistake(&self, path: &str, value: &DeValue<'_>) -> Option<String> {
        let found = match value.type_str() {
            kind @ ("array" | "integer") => format!("an {kind}"),
            kind => format!("a {kind}"),
        };
        if path == "faults" {
            return (!value.is_array()).then(|| {
                format!("must be a list of `[[faults]]` tables, not {found} (write `[[faults]]`, not `[faults]`)")
            });
        }
        if path.starts_with("faults[") && !path.contains('.') {
            return (!value.is_table())
                .then(|| format!("each fault must be a table (`[[faults]]` with `kind = ...`), not {found}"));
        }
        let &(_, is_dist) = self.tables.iter().find(|(p, _)| p == path)?;
        if value.is_table() {
            return None;
        }
        Some(if is_dist {
            format!("must be a distribution table like `{{ dist = \"exponential\", mean = 10 }}`, not {found}")
        } else {
            let name = path.rsplit('.').next().unwrap_or(path);
            format!("must be a table (`[{path}]` or `{name} = {{ ... }}`), not {found}")
        })
    }
}

fn collect_tables(value: &toml::Value, prefix: &str, out: &mut Vec<(String, bool)>) {
    let Some(table) = value.as_table() else { return };
    for (key, v) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if let Some(t) = v.as_table() {
            out.push((path.clone(), t.contains_key("dist")));
            collect_tables(v, &path, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("s.toml"), "s")
    }

    #[test]
    fn empty_file_takes_every_default() {
        let s = parse("").unwrap();
        assert_eq!(s.name, "s");
        assert_eq!(s.fleet.chat_servers, 2);
        assert_eq!(s.slo.delivery_ms_p99, 500);
    }

    #[test]
    fn unknown_key_names_line_and_field() {
        let e = parse("seed = 3\n[fleet]\nchat_servers = 4\nchat_serverz = 5\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.field, "fleet.chat_serverz");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn zero_size_names_line_and_field() {
        let e = parse("[fleet]\n\nchat_servers = 0\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(3), "fleet.chat_servers"));
        assert_eq!(e.to_string(), "s.toml:3: field `fleet.chat_servers`: must be greater than zero");
    }

    #[test]
    fn negative_size_names_line_and_field() {
        let e = parse("[users]\nconcurrent = -5\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "users.concurrent"));
    }

    #[test]
    fn bad_distribution_names_its_field() {
        let e = parse("[network]\nclient_server_ms = { dist = \"lognormal\", p50 = 50, p99 = 10 }\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(2), "network.client_server_ms"));
    }

    /// The refusal of `text`: (line, field, message).
    fn refused(text: &str) -> (Option<usize>, String, String) {
        let e = parse(text).expect_err(text);
        (e.line, e.field, e.message)
    }

    /// Assert that `text` is refused at `line` for `field`, with a message containing `says`.
    #[track_caller]
    fn assert_refused(text: &str, line: usize, field: &str, says: &str) {
        let (l, f, m) = refused(text);
        assert_eq!((l, f.as_str()), (Some(line), field), "{text:?}: {m}");
        assert!(m.contains(says), "{text:?}: {m:?} does not say {says:?}");
    }

    /// The card's full scale, as a later issue runs it, is within every limit.
    #[test]
    fn the_cards_full_scale_is_admitted() {
        let card = "duration_s = 240\nwarmup_s = 10\ntick_us = 1000\n\
            [fleet]\nchat_servers = 1000\nconnections_per_server_max = 100_000\nclient_shards = 100\n\
            redis_presence_shards = 12\ncassandra_nodes = 548\nkafka_brokers = 30\nkafka_partitions = 600\nrouters = 100\n\
            [users]\nconcurrent = 100_000_000\nheartbeat_interval_ms = 30_000\npresence_ttl_ms = 45_000\nconnect_ramp_s = 10\n\
            [workload]\nmessages_per_s = 1_160_000\n";
        let s = parse(card).unwrap();
        assert_eq!(s.processes(), 1000 + 100 + 1 + 12 + 548 + 30 + 100);
        let margin =
            card.replace("1_160_000", "100_000_000").replace("100_000_000\nheartbeat", "1_000_000_000\nheartbeat");
        parse(&margin.replace(
            "chat_servers = 1000\nconnections_per_server_max = 100_000",
            "chat_servers = 1000\nconnections_per_server_max = 1_000_000",
        ))
        .unwrap();
    }

    #[test]
    fn values_above_their_limit_name_line_and_field() {
        let cases = [
            ("duration_s = 86_401", "duration_s"),
            ("tick_us = 100_001", "tick_us"),
            ("[fleet]\nchat_servers = 1_025", "fleet.chat_servers"),
            ("[fleet]\nconnections_per_server_max = 4_294_967_295", "fleet.connections_per_server_max"),
            ("[fleet]\nclient_shards = 1_025", "fleet.client_shards"),
            ("[fleet]\nredis_session_shards = 1_025", "fleet.redis_session_shards"),
            ("[fleet]\nredis_presence_shards = 4_294_967_295", "fleet.redis_presence_shards"),
            ("[fleet]\ncassandra_nodes = 2_049", "fleet.cassandra_nodes"),
            ("[fleet]\ncassandra_replication_factor = 13", "fleet.cassandra_replication_factor"),
            // A chat server minting more than a million ids a second.
            (
                "[fleet]\nchat_servers = 2\nconnections_per_server_max = 1_000_000\n[users]\nconcurrent = 1_000_000\n[workload]\nmessages_per_s = 2_000_001",
                "workload.messages_per_s",
            ),
            ("[fleet]\nkafka_brokers = 1_025", "fleet.kafka_brokers"),
            ("[fleet]\nkafka_partitions = 100_000_000", "fleet.kafka_partitions"),
            ("[fleet]\nrouters = 1_025", "fleet.routers"),
            ("[users]\nconcurrent = 1_000_000_001", "users.concurrent"),
            ("[users]\ncontacts_per_user = 10_001", "users.contacts_per_user"),
            ("[users]\nheartbeat_interval_ms = 600_001", "users.heartbeat_interval_ms"),
            ("[users]\npresence_ttl_ms = 3_600_001", "users.presence_ttl_ms"),
            ("[users]\nhide_last_seen_share = 1.5", "users.hide_last_seen_share"),
            ("[users]\nread_receipts_off_share = inf", "users.read_receipts_off_share"),
            ("[users]\nchat_open_share = nan", "users.chat_open_share"),
            ("[workload]\nmessages_per_s = 9_223_372_036_854_775_807", "workload.messages_per_s"),
            ("[workload]\napp_closes_per_hour = 1e308", "workload.app_closes_per_hour"),
            ("[workers]\nchat_server = 4_294_967_295", "workers.chat_server"),
            ("[workers]\nkafka = 1_025", "workers.kafka"),
            ("[slo]\ndelivery_ms_p99 = 3_600_001", "slo.delivery_ms_p99"),
        ];
        for (text, field) in cases {
            let line = text.lines().count();
            assert_refused(&format!("{text}\n"), line, field, "");
        }
    }

    #[test]
    fn values_below_their_limit_name_line_and_field() {
        let cases = [
            ("duration_s = 0", "duration_s", "greater than zero"),
            ("drain_s = 0", "drain_s", "in flight"),
            ("tick_us = 9", "tick_us", "at least 10"),
            ("[users]\nconcurrent = 1", "users.concurrent", "at least 2"),
            ("[users]\ncontacts_per_user = 0", "users.contacts_per_user", "greater than zero"),
            ("[users]\nheartbeat_interval_ms = 999", "users.heartbeat_interval_ms", "at least 1,000"),
            ("[users]\nhide_last_seen_share = -0.1", "users.hide_last_seen_share", "share"),
            ("[workload]\nmessages_per_s = 0", "workload.messages_per_s", "greater than zero"),
            ("[workload]\napp_closes_per_hour = -1", "workload.app_closes_per_hour", "between 0"),
            ("[workers]\nredis = 0", "workers.redis", "greater than zero"),
            ("[slo]\npresence_ms_p99 = 0", "slo.presence_ms_p99", "greater than zero"),
        ];
        for (text, field, says) in cases {
            assert_refused(&format!("{text}\n"), text.lines().count(), field, says);
        }
    }

    #[test]
    fn totals_that_would_wrap_are_refused() {
        // warm-up + duration + drain near u64::MAX used to wrap to a run of 0 s.
        let (_, field, m) = refused("warmup_s = 9_223_372_036_854_775_000\nduration_s = 9_223_372_036_854_775_000\n");
        assert_eq!(field, "duration_s", "{m}");
        assert_refused("warmup_s = 50_000\nduration_s = 40_000\n", 2, "duration_s", "at most 86,400");
        let s = Scenario { duration_s: u64::MAX, drain_s: u64::MAX, ..parse("").unwrap() };
        assert_eq!(s.total_s(), u64::MAX, "saturates, never wraps");
        let huge = Scenario {
            workload: Workload { messages_per_s: 1 << 63, ..Workload::default() },
            users: Users { concurrent: u64::MAX, ..Users::default() },
            ..s
        };
        assert_eq!(huge.estimated_memory_bytes(), u64::MAX, "saturates, never wraps");
    }

    #[test]
    fn relationships_between_fields_are_checked() {
        assert_refused("[users]\nconcurrent = 10\ncontacts_per_user = 10\n", 3, "users.contacts_per_user", "at most 9");
        assert_refused(
            "[users]\nconcurrent = 100\n[workload]\nmessages_per_s = 1_001\n",
            4,
            "workload.messages_per_s",
            "10 msg/s per user",
        );
        assert_refused(
            "[users]\nheartbeat_interval_ms = 30_000\npresence_ttl_ms = 30_000\n",
            3,
            "users.presence_ttl_ms",
            "exceed the heartbeat",
        );
        assert_refused("[fleet]\ncassandra_nodes = 2\n", 2, "fleet.cassandra_nodes", "at least as many nodes");
        assert_refused("[fleet]\nrouters = 5\nkafka_partitions = 4\n", 2, "fleet.routers", "idle");
        assert_refused(
            "[fleet]\nkafka_brokers = 200\nkafka_partitions = 100_000\nrouters = 1\n",
            3,
            "fleet.kafka_partitions",
            "partition slots",
        );
        assert_refused(
            "[fleet]\nchat_servers = 1_024\nclient_shards = 1_024\ncassandra_nodes = 2_048\nrouters = 4\n",
            1,
            "fleet",
            "processes",
        );
        assert_refused(
            "[users]\nconcurrent = 3\ncontacts_per_user = 1\n[fleet]\nclient_shards = 4\n",
            5,
            "fleet.client_shards",
            "more shards than users",
        );
        assert_refused("[users]\nconcurrent = 300_000\n", 2, "users.concurrent", "cannot hold");
        assert_refused("warmup_s = 1\n[users]\nconnect_ramp_s = 2\n", 3, "users.connect_ramp_s", "warm-up");
    }

    #[test]
    fn distributions_must_be_finite_ordered_and_bounded() {
        let cases = [
            ("[network]\nclient_server_ms = { dist = \"lognormal\", p50 = 50, p99 = 10 }", "0 < p50 < p99"),
            ("[network]\nclient_server_ms = { dist = \"lognormal\", p50 = nan, p99 = 10 }", "finite"),
            ("[network]\nclient_server_ms = { dist = \"lognormal\", p50 = 0.001, p99 = 10 }", "times p50"),
            ("[network]\nin_datacenter_ms = { dist = \"uniform\", min = 2, max = 1 }", "below min"),
            ("[network]\nin_datacenter_ms = { dist = \"constant\", value = 10_001 }", "at most 10000 ms"),
            ("[service_us]\nredis = { dist = \"exponential\", mean = 0 }", "greater than 0"),
            ("[service_us]\nredis = { dist = \"exponential\", mean = -inf }", "finite"),
            ("[service_us]\nkafka = { dist = \"constant\", value = 60_000_001 }", "at most 60000000 µs"),
            ("[workload]\nread_delay_ms = { dist = \"exponential\", mean = 1e308 }", "at most 60000 ms"),
            ("[workload]\napp_closed_ms = { dist = \"uniform\", min = -1, max = 1 }", "at least 0"),
        ];
        for (text, says) in cases {
            let field = format!(
                "{}.{}",
                &text[1..text.find(']').unwrap()],
                text.lines().nth(1).unwrap().split(' ').next().unwrap()
            );
            assert_refused(&format!("{text}\n"), 2, &field, says);
        }
    }

    #[test]
    fn a_table_given_as_an_array_names_line_and_field() {
        assert_refused("seed = 1\nfleet = [1, 2]\n", 2, "fleet", "must be a table");
        assert_refused("[users]\ndevices_per_user = [1, 0.2]\n", 2, "users.devices_per_user", "must be a table");
        assert_refused(
            "[workload]\nread_delay_ms = [\"exponential\", 5]\n",
            2,
            "workload.read_delay_ms",
            "distribution",
        );
        assert_refused("[network]\nclient_server_ms = 5\n", 2, "network.client_server_ms", "not an integer");
        assert_refused("seed = 1\n[[fleet]]\nchat_servers = 2\n", 2, "fleet", "not an array");
        assert_refused("[faults]\nkind = \"cut_network\"\n", 1, "faults", "[[faults]]");
        assert_refused("faults = [1, 2]\n", 1, "faults[0]", "each fault must be a table");
    }

    const CUT: &str = "[[faults]]\nkind = \"cut_network\"\nat_s = 3\nfor_s = 2\nusers = 10\n";

    #[test]
    fn a_crash_names_a_process_that_can_crash() {
        let crash =
            |target: &str| format!("[[faults]]\nkind = \"crash\"\nat_s = 3\nfor_s = 2\ntarget = \"{target}\"\n");
        assert!(parse(&crash("chat_server-1")).is_ok());
        assert!(parse(&crash("cassandra-2")).is_ok());
        assert_refused(&crash("chat_server-2"), 5, "faults[0].target", "numbered 0 to 1");
        assert_refused(&crash("redis_session-0"), 5, "faults[0].target", "kind = \"redis_down\"");
        assert!(parse(&crash("router-0")).is_ok());
        assert_refused(&crash("client_shard-0"), 5, "faults[0].target", "cut_network");
        assert_refused(&crash("mainframe-0"), 5, "faults[0].target", "not a process kind");
        assert_refused(&crash("chat_server"), 5, "faults[0].target", "not a process name");
        let no_target = "[[faults]]\nkind = \"crash\"\nat_s = 3\nfor_s = 2\n";
        assert_refused(no_target, 1, "faults[0]", "needs `target`");
        let twice = format!("{}{}", crash("chat_server-1"), crash("chat_server-1").replace("at_s = 3", "at_s = 4"));
        assert_refused(&twice, 8, "faults[1].at_s", "already down");
        assert!(parse(&format!("{}{}", crash("chat_server-1"), crash("chat_server-0"))).is_ok(), "two processes");
        let shared = "[[faults]]\nkind = \"crash\"\nat_s = 3\nfor_s = 2\ntarget = \"chat_server-1\"\nusers = 3\n";
        assert_refused(shared, 1, "faults[0]", "no `users`");
    }

    #[test]
    fn a_redis_down_names_a_shard_and_its_failover() {
        let down = |rest: &str| {
            format!("[fleet]\nredis_session_shards = 2\n[[faults]]\nkind = \"redis_down\"\nat_s = 3\n{rest}")
        };
        let ok = down("target = \"redis_session-1\"\nfailover_s = 2\n");
        match parse(&ok).unwrap().faults[0] {
            Fault::RedisDown { failover_s: 2, replication_lag_ms, .. } => {
                assert_eq!(replication_lag_ms, REPLICATION_LAG_MS_DEFAULT)
            }
            ref f => panic!("{f:?}"),
        }
        assert!(parse(&down("target = \"redis_presence-0\"\nfailover_s = 2\nreplication_lag_ms = 0\n")).is_ok());
        assert_refused(
            &down("target = \"redis_session-2\"\nfailover_s = 2\n"),
            6,
            "faults[0].target",
            "numbered 0 to 1",
        );
        assert_refused(&down("target = \"cassandra-0\"\nfailover_s = 2\n"), 6, "faults[0].target", "not a Redis shard");
        assert_refused(&down("target = \"redis_session-0\"\n"), 3, "faults[0]", "needs `target`");
        assert_refused(&down("target = \"redis_session-0\"\nfor_s = 2\n"), 3, "faults[0]", "no `for_s`");
        assert_refused(
            &down("target = \"redis_session-0\"\nfailover_s = 2\nreplication_lag_ms = 60001\n"),
            8,
            "faults[0].replication_lag_ms",
            "full resync",
        );
        let crash_failover =
            "[[faults]]\nkind = \"crash\"\nat_s = 3\nfor_s = 2\ntarget = \"chat_server-1\"\nfailover_s = 2\n";
        assert_refused(crash_failover, 1, "faults[0]", "no `failover_s`");
        let no_for = "[[faults]]\nkind = \"clog\"\nat_s = 3\nbetween = \"router\"\nand = \"redis_session\"\n";
        assert_refused(no_for, 1, "faults[0]", "needs `for_s`");
        let twice =
            format!("{ok}[[faults]]\nkind = \"redis_down\"\nat_s = 4\ntarget = \"redis_session-1\"\nfailover_s = 2\n");
        assert_refused(&twice, 10, "faults[1].at_s", "already down");
    }

    #[test]
    fn faults_are_named_by_index_and_line() {
        // Two good faults, then the mistake in the third (faults[2], 0-based).
        let three = |third: &str| format!("{CUT}{CUT}{third}");
        assert_refused(
            &three("[[faults]]\nkind = \"crash_server\"\nat_s = 3\n"),
            12,
            "faults[2].kind",
            "unknown variant",
        );
        assert_refused(
            &three(&CUT.replace("users = 10", "users = 10\nusesr = 1")),
            16,
            "faults[2].usesr",
            "unknown field",
        );
        assert_refused(&three(&CUT.replace("at_s = 3", "at_s = \"3\"")), 13, "faults[2].at_s", "invalid type");
        assert_refused(&three(&CUT.replace("users = 10\n", "")), 11, "faults[2]", "needs `users`");
        assert_refused(&three(&CUT.replace("users = 10", "users = 10\nshare = 0.5")), 11, "faults[2]", "no `share`");
        assert_refused(&three(&CUT.replace("at_s = 3", "at_s = 1")), 13, "faults[2].at_s", "after the connect ramp");
        assert_refused(
            &three(&CUT.replace("for_s = 2", "for_s = 40")),
            14,
            "faults[2].for_s",
            "end by the end of sends",
        );
        assert_refused(&three(&CUT.replace("for_s = 2", "for_s = 0")), 14, "faults[2].for_s", "at least 1 s");
        assert_refused(&three(&CUT.replace("users = 10", "users = 0")), 15, "faults[2].users", "greater than zero");
        let acks = "[[faults]]\nkind = \"lose_delivered_acks\"\nat_s = 3\nfor_s = 2\nshare = 1.5\n";
        assert_refused(&three(acks), 15, "faults[2].share", "share between 0 and 1");
        // A window near u64::MAX used to wrap round to a time inside the run.
        let wrap = acks.replace("share = 1.5", "share = 0.5").replace("for_s = 2", "for_s = 9_223_372_036_854_775_807");
        assert_refused(&three(&wrap), 14, "faults[2].for_s", "end by the end of sends");
        assert_refused(&CUT.repeat(65), 321, "faults[64]", "at most 64");
    }

    #[test]
    fn the_name_cannot_leave_the_output_folder() {
        assert_refused("seed = 1\nname = \"../../etc\"\n", 2, "name", "'/'");
        assert_refused("name = \"..\"\n", 1, "name", "must not start with '.'");
        assert_refused("name = \"\"\n", 1, "name", "must not be empty");
        assert_refused("name = \"a\\u0007b\"\n", 1, "name", "contains");
        assert_refused(&format!("name = \"{}\"\n", "x".repeat(65)), 1, "name", "at most 64");
        assert_eq!(report_name_from("my scenario (2)"), "my_scenario__2_");
        assert_eq!(report_name_from("..hidden"), "_.hidden");
        assert_eq!(report_name_from(""), "scenario");
    }

    #[test]
    fn parse_errors_name_line_and_field() {
        assert_refused("[fleet]\nchat_servers = 2\nchat_servers = 3\n", 3, "fleet.chat_servers", "duplicate key");
        let (line, _, _) = refused("name = \"x\"\n[fleet\nchat_servers = 2\n");
        assert_eq!(line, Some(2));
    }

    #[test]
    fn a_file_that_is_not_utf8_names_the_line() {
        let dir = std::env::temp_dir().join(format!("wasim-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, b"seed = 1\n\nname = \"\xff\"\n").unwrap();
        let e = Scenario::load(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("UTF-8"), "{e}");
    }

    #[test]
    fn lognormal_mean_matches_its_fit() {
        let d = DistConfig::Lognormal { p50: 400.0, p99: 3_000.0 };
        assert!((d.mean() - 582.0).abs() < 2.0, "{}", d.mean());
    }
}
