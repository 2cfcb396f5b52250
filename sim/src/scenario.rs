//! Scenario files: the TOML schema with its defaults, parsing, and validation with errors
//! that name the file, the line and the field.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

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

    /// The distribution's 99th percentile (its largest value where it has one).
    pub fn p99(&self) -> f64 {
        match *self {
            DistConfig::Constant { value } => value,
            DistConfig::Uniform { max, .. } => max,
            DistConfig::Exponential { mean } => mean * 100f64.ln(),
            DistConfig::Lognormal { p99, .. } => p99,
        }
    }

    fn check(&self) -> Result<(), String> {
        let ok = match *self {
            DistConfig::Constant { value } => value >= 0.0 && value.is_finite(),
            DistConfig::Uniform { min, max } => min >= 0.0 && max >= min && max.is_finite(),
            DistConfig::Exponential { mean } => mean > 0.0 && mean.is_finite(),
            DistConfig::Lognormal { p50, p99 } => p50 > 0.0 && p99 > p50 && p99.is_finite(),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{self:?} is not a valid distribution (values must be non-negative, min <= max, p50 < p99)"))
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
    pub network: Network,
    #[serde(default)]
    pub service_us: ServiceTimes,
    #[serde(default)]
    pub workers: Workers,
    #[serde(default)]
    pub slo: Slo,
    /// Faults with their times (default none).
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// A fault injected at a time.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// `users` users (every `users.concurrent / users`th, from user 0) lose their network
    /// at `at_s` for `for_s` seconds: nothing reaches their devices and they send nothing;
    /// the servers are not told. Their devices reconnect, with jitter, when it returns.
    CutNetwork { at_s: u64, for_s: u64, users: u64 },
    /// From `at_s` for `for_s` seconds, each delivered-ACK a device sends is lost in
    /// transit with probability `share`.
    LoseDeliveredAcks { at_s: u64, for_s: u64, share: f64 },
}

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
    /// Router instances in the consumer group (default 1).
    pub routers: u32,
    /// Redis shards of the presence store (default 1; the card has 10+ at full scale).
    pub redis_presence_shards: u32,
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
            routers: 1,
            redis_presence_shards: 1,
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
}

impl Default for Users {
    fn default() -> Self {
        Users {
            concurrent: 10_000,
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
}

impl Default for ServiceTimes {
    fn default() -> Self {
        ServiceTimes {
            chat_server: d_exponential(50.0),
            router: d_exponential(20.0),
            redis: d_exponential(10.0),
            cassandra_write: DistConfig::Lognormal { p50: 400.0, p99: 3_000.0 },
            kafka: d_exponential(100.0),
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
}

impl Default for Workers {
    fn default() -> Self {
        Workers { chat_server: 16, router: 8, redis: 1, cassandra: 32, kafka: 8 }
    }
}

/// The service-level objectives the verdicts are judged against.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slo {
    /// Send -> recipient device, p99, in ms (default 500, the card's figure).
    pub delivery_ms_p99: u64,
    /// Status change -> subscribed watcher's view, p99, in ms (default 1,000).
    pub presence_ms_p99: u64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo { delivery_ms_p99: 500, presence_ms_p99: 1_000 }
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
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            line: None,
            field: String::new(),
            message: format!("cannot read the scenario file: {e}"),
        })?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Scenario::parse(&text, path, &stem)
    }

    /// Parse and validate scenario text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path, default_name: &str) -> Result<Scenario, ScenarioError> {
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ScenarioError {
                file: path.to_path_buf(),
                line,
                field: line.map(|l| field_at_line(text, l)).unwrap_or_default(),
                message: e.message().to_string(),
            }
        })?;
        if scenario.name.is_empty() {
            scenario.name = default_name.to_string();
        }
        scenario.validate().map_err(|(field, message)| ScenarioError {
            file: path.to_path_buf(),
            line: locate_field(text, &field),
            field,
            message,
        })?;
        Ok(scenario)
    }

    /// Check ranges and relationships between fields. Returns the field and the reason.
    fn validate(&self) -> Result<(), (String, String)> {
        let positive: [(&str, u64); 21] = [
            ("duration_s", self.duration_s),
            ("tick_us", self.tick_us),
            ("fleet.chat_servers", self.fleet.chat_servers.into()),
            ("fleet.connections_per_server_max", self.fleet.connections_per_server_max.into()),
            ("fleet.client_shards", self.fleet.client_shards.into()),
            ("fleet.redis_session_shards", self.fleet.redis_session_shards.into()),
            ("fleet.cassandra_nodes", self.fleet.cassandra_nodes.into()),
            ("fleet.cassandra_replication_factor", self.fleet.cassandra_replication_factor.into()),
            ("fleet.kafka_brokers", self.fleet.kafka_brokers.into()),
            ("fleet.kafka_partitions", self.fleet.kafka_partitions.into()),
            ("fleet.routers", self.fleet.routers.into()),
            ("users.concurrent", self.users.concurrent),
            ("workload.messages_per_s", self.workload.messages_per_s),
            ("workers.chat_server", self.workers.chat_server.into()),
            ("workers.router", self.workers.router.into()),
            ("workers.redis", self.workers.redis.into()),
            ("workers.cassandra", self.workers.cassandra.into()),
            ("workers.kafka", self.workers.kafka.into()),
            ("fleet.redis_presence_shards", self.fleet.redis_presence_shards.into()),
            ("users.heartbeat_interval_ms", self.users.heartbeat_interval_ms),
            ("users.presence_ttl_ms", self.users.presence_ttl_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err((field.into(), "must be greater than zero".into()));
            }
        }
        crate::limits::check(self)?;
        let dists = [
            ("network.client_server_ms", &self.network.client_server_ms),
            ("network.in_datacenter_ms", &self.network.in_datacenter_ms),
            ("service_us.chat_server", &self.service_us.chat_server),
            ("service_us.router", &self.service_us.router),
            ("service_us.redis", &self.service_us.redis),
            ("service_us.cassandra_write", &self.service_us.cassandra_write),
            ("service_us.kafka", &self.service_us.kafka),
            ("workload.read_delay_ms", &self.workload.read_delay_ms),
            ("workload.app_closed_ms", &self.workload.app_closed_ms),
        ];
        let closes = self.workload.app_closes_per_hour;
        if !(0.0..=3_600.0).contains(&closes) {
            return Err(("workload.app_closes_per_hour".into(), format!("{closes} is not between 0 and 3,600")));
        }
        for (field, d) in dists {
            d.check().map_err(|m| (field.to_string(), m))?;
        }
        let u = &self.users;
        let shares = [
            ("users.devices_per_user", u.devices_per_user.web),
            ("users.hide_last_seen_share", u.hide_last_seen_share),
            ("users.read_receipts_off_share", u.read_receipts_off_share),
            ("users.chat_open_share", u.chat_open_share),
        ];
        for (field, share) in shares {
            if !(0.0..=1.0).contains(&share) {
                return Err((field.into(), format!("{share} is not a share between 0 and 1")));
            }
        }
        if u.devices_per_user.phone != 1.0 {
            return Err(("users.devices_per_user".into(), "every user has exactly one phone (phone = 1.0)".into()));
        }
        if u.presence_ttl_ms <= u.heartbeat_interval_ms {
            return Err((
                "users.presence_ttl_ms".into(),
                format!("must exceed the heartbeat interval ({} ms), or online users expire", u.heartbeat_interval_ms),
            ));
        }
        for fault in &self.faults {
            self.check_fault(fault).map_err(|m| ("faults".to_string(), m))?;
        }
        Ok(())
    }

    fn check_fault(&self, fault: &Fault) -> Result<(), String> {
        let end = self.warmup_s + self.duration_s;
        match *fault {
            Fault::CutNetwork { at_s, for_s, users } => {
                if users == 0 || users > self.users.concurrent {
                    return Err(format!("cut_network: users must be between 1 and users.concurrent, not {users}"));
                }
                if at_s < self.users.connect_ramp_s || at_s + for_s > end {
                    return Err(format!(
                        "cut_network: [{at_s}, {}] s must lie between the connect ramp and the end of sends ({end} s)",
                        at_s + for_s
                    ));
                }
            }
            Fault::LoseDeliveredAcks { share, .. } => {
                if !(0.0..=1.0).contains(&share) {
                    return Err(format!("lose_delivered_acks: share {share} is not between 0 and 1"));
                }
            }
        }
        Ok(())
    }

    /// Total simulated time: warm-up, measured load, then the drain.
    pub fn total_s(&self) -> u64 {
        self.warmup_s + self.duration_s + self.drain_s
    }

    /// A generous estimate of the memory a run needs, to refuse one the machine cannot hold.
    pub fn estimated_memory_bytes(&self) -> u64 {
        // Per user: devices (24 each), connection entries (~16), session and presence keys
        // (~40 together), displayed-message state and checker logs, with hash-table slack.
        const BYTES_PER_USER: u64 = 200;
        // Per stored replica row (40) and per message in the checkers' logs (~60), with
        // vector growth slack.
        const BYTES_PER_ROW: u64 = 120;
        // Per process: the network wheel's empty slots and the process's state.
        const BYTES_PER_PROCESS: u64 = 1 << 20;
        // Per client shard: three latency histograms.
        const BYTES_PER_CLIENT_SHARD: u64 = 3 << 20;
        let f = &self.fleet;
        let rows = self.workload.messages_per_s
            * (self.warmup_s + self.duration_s)
            * u64::from(f.cassandra_replication_factor);
        let processes = u64::from(
            f.chat_servers
                + f.client_shards
                + f.redis_session_shards
                + f.redis_presence_shards
                + f.cassandra_nodes
                + f.kafka_brokers
                + f.routers,
        );
        self.users.concurrent * BYTES_PER_USER
            + rows * BYTES_PER_ROW
            + processes * BYTES_PER_PROCESS
            + u64::from(f.client_shards) * BYTES_PER_CLIENT_SHARD
    }
}

/// 1-based line number of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The dotted field path of the key defined on `line` (1-based): the enclosing `[table]`
/// and the key before `=`.
fn field_at_line(text: &str, line: usize) -> String {
    let mut table = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.split(']').next()) {
            table = h.trim_matches(['[', ' ']).to_string();
        }
        if i + 1 == line {
            let key = t.split('=').next().unwrap_or("").trim();
            if key.starts_with('[') || key.is_empty() {
                return table;
            }
            return if table.is_empty() { key.to_string() } else { format!("{table}.{key}") };
        }
    }
    String::new()
}

/// The line on which a dotted field is set, if it is set in the file at all.
fn locate_field(text: &str, field: &str) -> Option<usize> {
    let (table, key) = field.rsplit_once('.').unwrap_or(("", field));
    let mut current = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.split(']').next()) {
            current = h.trim_matches(['[', ' ']).to_string();
            continue;
        }
        let k = t.split('=').next().unwrap_or("").trim();
        if current == table && k == key && t.contains('=') {
            return Some(i + 1);
        }
    }
    None
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

    #[test]
    fn lognormal_mean_matches_its_fit() {
        let d = DistConfig::Lognormal { p50: 400.0, p99: 3_000.0 };
        assert!((d.mean() - 582.0).abs() < 2.0, "{}", d.mean());
    }
}
