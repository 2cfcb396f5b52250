//! Named limits on a scenario, each with the reason it exists.
//!
//! Every count, share, rate and duration a scenario sets has an upper limit, and a lower
//! limit where zero or tiny values are meaningless or break something. The limits admit the
//! card's full scale (100M concurrent users, 1,000 chat servers, 1.16M msg/s, ~548
//! Cassandra nodes, 30 Kafka brokers, 600+ partitions, heartbeats every 30 s, a 45 s TTL)
//! with a margin. Values are checked one by one first, so that the relationships checked
//! after them, and every product the engine forms from them, cannot overflow.

use crate::dist::SAMPLE_US_MAX;
use crate::metrics::LATENCY_US_MAX;
use crate::scenario::{DistConfig, Fault, Scenario};

/// Snowflake ids have 10 worker bits: at most 1,024 chat servers can mint ids.
pub const CHAT_SERVERS_MAX: u32 = 1_024;
/// User ids are `u32`; 1 billion leaves room above the card's 100M concurrent users.
pub const USERS_MAX: u64 = 1_000_000_000;
/// 1:1 messaging needs a sender and a recipient.
pub const USERS_MIN: u64 = 2;
/// Node indices on wasim's network are `u16`.
pub const NODES_MAX: u64 = u16::MAX as u64;
/// Processes of all kinds together: about twice the card's ~1,800 (1,000 chat servers, 548
/// Cassandra nodes, brokers, routers, shards). Each process keeps a last-arrival time per
/// other process (8 bytes, so 4,096 processes cost 128 MiB) and a network wheel.
pub const PROCESSES_MAX: u64 = 4_096;
/// A tick above 100 ms would hide the latencies the SLOs are about.
pub const TICK_US_MAX: u64 = 100_000;
/// Smaller ticks make a run cost millions of process wake-ups per simulated second, and
/// the report's bound on tick error is stated against a 10 µs tick.
pub const TICK_US_MIN: u64 = 10;
/// Runs longer than a simulated day are not what this tool is for.
pub const TOTAL_S_MAX: u64 = 86_400;
/// Nothing can be measured in an empty window (and throughput divides by it).
pub const DURATION_S_MIN: u64 = 1;
/// Messages in flight at the last send need time to reach their devices; without a drain
/// the no-loss checker would count them as lost.
pub const DRAIN_S_MIN: u64 = 1;
/// The network's wheel holds this many ticks ahead; later arrivals wait in an overflow heap.
pub const WHEEL_TICKS: u64 = 4_096;

/// 100 times the card's 100,000 connections per server: more is not one process.
pub const CONNECTIONS_PER_SERVER_MAX: u32 = 10_000_000;
/// Client-population shards are processes with their own histograms (about 3 MiB each);
/// 1,024 hold 100M users at about 100K each.
pub const CLIENT_SHARDS_MAX: u32 = 1_024;
/// Redis shards of one store (session or presence): the card's session store fits one
/// node and presence 10+; Redis Cluster itself is meant for up to about 1,000 nodes.
pub const REDIS_SHARDS_MAX: u32 = 1_024;
/// About 4 times the card's ~548 Cassandra nodes.
pub const CASSANDRA_NODES_MAX: u32 = 2_048;
/// Real clusters write 3 (at most 5) replicas; 12 leaves room to experiment while a quorum
/// write stays a small fan-out, and a row's holders fit 12 bits of its `u64` beside its
/// status and its id (the card's full load: 150M rows, 8 bytes each).
pub const REPLICATION_FACTOR_MAX: u32 = 12;
/// About 34 times the card's 30 brokers.
pub const KAFKA_BROKERS_MAX: u32 = 1_024;
/// About 170 times the card's 600 partitions; every broker and router keeps a slot per
/// partition of the topic.
pub const KAFKA_PARTITIONS_MAX: u32 = 100_000;
/// Routers of the consumer group; at most one per partition is useful anyway.
pub const ROUTERS_MAX: u32 = 1_024;
/// Brokers and routers each keep a slot per partition (about 64 bytes): (brokers +
/// routers) x partitions is at most 10M slots, about 640 MiB. The card needs 378,000.
pub const PARTITION_SLOTS_MAX: u64 = 10_000_000;

/// WhatsApp's group size limit, the card's example group.
pub use wasim_model::GROUP_MEMBERS_MAX;
/// Groups with traffic: a thousand times the card's 1,000 active groups; each group's
/// members are kept (4 bytes each), so 1M groups of 1,024 take 4 GiB.
pub const GROUPS_ACTIVE_MAX: u32 = 1_000_000;
/// Members of all groups together (4 bytes each, plus what fan-out and receipts keep per
/// member): 256M members are 1 GiB of membership.
pub const GROUP_MEMBERSHIPS_MAX: u64 = 256_000_000;
/// Messages per group per second: a group chat is people typing (the card's is 1).
pub const MESSAGES_PER_GROUP_PER_S_MAX: f64 = 100.0;
/// Fan-out instances: as many as routers at most.
pub const FANOUTS_MAX: u32 = ROUTERS_MAX;

/// No one messages more than 10,000 distinct people; above that the workload is a
/// broadcast, which 1:1 messaging does not model.
pub const CONTACTS_PER_USER_MAX: u32 = 10_000;
/// A heartbeat more often than once a second is not a heartbeat (the card's is 30 s).
pub const HEARTBEAT_INTERVAL_MS_MIN: u64 = 1_000;
/// Mobile keep-alives are at most minutes apart: NAT bindings expire beyond that.
pub const HEARTBEAT_INTERVAL_MS_MAX: u64 = 600_000;
/// Reconnect backoff windows: ten minutes is an outage, not a backoff.
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 600_000;
/// A user shown online an hour after going silent is not presence (the card's TTL is 45 s);
/// the presence store also keeps an expiry slot per 100 ms of TTL.
pub const PRESENCE_TTL_MS_MAX: u64 = 3_600_000;
/// 86 times the card's 1.16M msg/s.
pub const MESSAGES_PER_S_MAX: u64 = 100_000_000;
/// A person types at most a few messages a second; a higher offered load per online user
/// (the card's is 0.012 msg/s) is a load generator, not a population.
pub const SENDS_PER_USER_PER_S_MAX: u64 = 10;
/// A Snowflake worker (a chat server) mints at most 4,096 ids a millisecond and borrows
/// from the next one beyond; a quarter of that on average, 1,000 times the card's 1,160 a
/// server, keeps its ids on its clock, and a day's ids within what a stored row holds.
pub const MESSAGES_PER_SERVER_PER_S_MAX: u64 = 1_000_000;
/// Once a second per phone, all hour long, is already far beyond any user (default 6).
pub const APP_CLOSES_PER_HOUR_MAX: f64 = 3_600.0;
/// Every sample is capped at `SAMPLE_US_MAX` (60 s): a distribution whose mean, median,
/// p99 or bound lies beyond it describes draws the run cannot make.
pub const DIST_US_MAX: u64 = SAMPLE_US_MAX;
/// A one-way hop slower than 10 s is an outage (a fault), not a latency; such hops also
/// miss the network wheel (4,096 ticks ahead) and take its slow path.
pub const NETWORK_MS_MAX: u64 = 10_000;
/// A log-normal whose p99 is more than 1,000 times its median has a mean that explodes
/// (it grows as exp(sigma^2 / 2)); no measured latency looks like that.
pub const LOGNORMAL_SPREAD_MAX: f64 = 1_000.0;
/// 32 times Cassandra's default `concurrent_writes`: a queue with more workers is scanned
/// for the earliest free one on every busy request.
pub const WORKERS_MAX: u32 = 1_024;
/// The latency histograms stop at an hour (`LATENCY_US_MAX`); an SLO beyond that cannot
/// be judged. An SLO of 0 ms can never hold.
pub const SLO_MS_MAX: u64 = LATENCY_US_MAX / 1_000;
/// Timeouts and health-check intervals, in ms: ten minutes.
pub const TIMEOUT_MS_MAX: u64 = 600_000;
/// Consistent-hash ring points per server.
pub const VIRTUAL_NODES_MAX: u64 = 1_000;

/// Each device event scans the fault windows, so their number stays small.
pub const FAULTS_MAX: usize = 64;
/// The report folder is `wasim-out/<name>`: a short name of safe characters.
pub const NAME_LEN_MAX: usize = 64;
/// A scenario is a page of TOML; reading stops here, so `wasim scenario /dev/zero` cannot
/// fill the memory.
pub const SCENARIO_FILE_BYTES_MAX: u64 = 1 << 20;
/// The description is printed before every run: one or two sentences, not a document.
pub const DESCRIPTION_LEN_MAX: usize = 2_000;

const _: () = assert!(WHEEL_TICKS.is_power_of_two(), "wheel slots are indexed with a mask");
const _: () = assert!(TOTAL_S_MAX * 2 * 1_000_000 < 1 << 40, "arrival times fit the 40 bits of an order key");
const _: () = assert!(CHAT_SERVERS_MAX <= 1 << 10, "chat servers must fit Snowflake's worker bits");
const _: () = assert!(PROCESSES_MAX <= NODES_MAX, "every process needs a network index");
const _: () = assert!(USERS_MAX <= u32::MAX as u64, "user ids are u32");
const _: () = assert!(REPLICATION_FACTOR_MAX <= u8::MAX as u32, "the chat server counts replicas in a u8");
const _: () = assert!(
    MESSAGES_PER_S_MAX.checked_mul(TOTAL_S_MAX * REPLICATION_FACTOR_MAX as u64 * 120).is_some(),
    "the memory estimate's rows cannot overflow"
);
const _: () =
    assert!(USERS_MAX.checked_mul(SENDS_PER_USER_PER_S_MAX).is_some(), "the per-user rate check cannot overflow");
const _: () = assert!(HEARTBEAT_INTERVAL_MS_MAX < PRESENCE_TTL_MS_MAX, "a TTL above every heartbeat exists");
const _: () = assert!(NETWORK_MS_MAX * 1_000 <= DIST_US_MAX, "network latencies are samples too");
const _: () = assert!(SLO_MS_MAX * 1_000 == LATENCY_US_MAX, "SLOs are judged within the histograms");

/// A field that failed a check, and why. A relationship between fields names the others
/// too: the error is placed on the first of them that the file sets, since that is where
/// the mistake was made (a default has no line).
#[derive(Debug)]
pub(crate) struct Failure {
    pub field: String,
    pub related: Vec<&'static str>,
    pub message: String,
}

impl Failure {
    fn related(mut self, fields: &[&'static str]) -> Failure {
        self.related.extend_from_slice(fields);
        self
    }
}

use self::thousands as n;

/// `v` with thousands separators, for messages and reports.
pub fn thousands(v: impl Into<u128>) -> String {
    let digits = v.into().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fail<T>(field: &str, message: String) -> Result<T, Failure> {
    Err(Failure { field: field.to_string(), related: Vec::new(), message })
}

/// A failure of a relationship between `field` and `related`.
fn fail_related<T>(field: &str, related: &[&'static str], message: String) -> Result<T, Failure> {
    fail(field, message).map_err(|f: Failure| f.related(related))
}

/// Check that an integer lies in `[min, max]`; `why` says what the limits protect.
fn in_range(field: &str, value: u64, min: u64, max: u64, why: &str) -> Result<(), Failure> {
    if value < min && min == 1 {
        return fail(field, "must be greater than zero".into());
    }
    if value < min {
        return fail(field, format!("{} is too small: at least {} ({why})", n(value), n(min)));
    }
    if value > max {
        return fail(field, format!("{} is too large: at most {} ({why})", n(value), n(max)));
    }
    Ok(())
}

/// Check that a float is a share between 0 and 1 (rejects NaN and infinities).
fn share(field: &str, value: f64) -> Result<(), Failure> {
    if !(0.0..=1.0).contains(&value) {
        return fail(field, format!("{value} is not a share between 0 and 1"));
    }
    Ok(())
}

/// Check the scenario against the limits. Returns the field and the reason.
pub(crate) fn check(s: &Scenario) -> Result<(), Failure> {
    check_text(s)?;
    check_times(s)?;
    check_fleet(s)?;
    check_fleet_relations(s)?;
    check_users(s)?;
    check_workload(s)?;
    check_groups(s)?;
    check_media(s)?;
    check_distributions(s)?;
    check_workers_and_slos(s)?;
    check_faults(s)
}

/// The name becomes a folder under `wasim-out/`: it must not be able to leave it.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() {
        return Err("must not be empty (it names the report folder)".into());
    }
    if name.chars().count() > NAME_LEN_MAX {
        return Err(format!("is {} characters long; at most {NAME_LEN_MAX} (it names the report folder)", name.len()));
    }
    if let Some(c) = name.chars().find(|&c| !safe(c)) {
        return Err(format!(
            "{name:?} contains {c:?}: use only letters, digits, '.', '_' and '-' (the name becomes the folder wasim-out/<name>)"
        ));
    }
    if name.starts_with('.') || name.contains("..") {
        return Err(format!(
            "{name:?} must not start with '.' or contain \"..\" (the name becomes the folder wasim-out/<name>)"
        ));
    }
    Ok(())
}

fn check_text(s: &Scenario) -> Result<(), Failure> {
    check_name(&s.name).or_else(|m| fail("name", m))?;
    let len = s.description.chars().count();
    if len > DESCRIPTION_LEN_MAX {
        return fail(
            "description",
            format!(
                "is {} characters long; at most {} (one or two sentences)",
                n(len as u64),
                n(DESCRIPTION_LEN_MAX as u64)
            ),
        );
    }
    Ok(())
}

fn check_times(s: &Scenario) -> Result<(), Failure> {
    const DAY: &str = "runs longer than a simulated day are not what wasim is for";
    in_range(
        "duration_s",
        s.duration_s,
        DURATION_S_MIN,
        TOTAL_S_MAX,
        "a measured window of at least a second, at most a day",
    )?;
    in_range("warmup_s", s.warmup_s, 0, TOTAL_S_MAX, DAY)?;
    if s.drain_s < DRAIN_S_MIN {
        return fail(
            "drain_s",
            format!(
                "{} s is too short: at least {DRAIN_S_MIN} s (messages in flight at the last send need time to reach their devices, or the no-loss check counts them as lost)",
                s.drain_s
            ),
        );
    }
    in_range("drain_s", s.drain_s, DRAIN_S_MIN, TOTAL_S_MAX, DAY)?;
    // Each term is at most a day, so the sum cannot overflow.
    if s.total_s() > TOTAL_S_MAX {
        return fail_related(
            "duration_s",
            &["warmup_s", "drain_s"],
            format!("warmup_s + duration_s + drain_s = {} s; at most {} s ({DAY})", n(s.total_s()), n(TOTAL_S_MAX)),
        );
    }
    in_range(
        "tick_us",
        s.tick_us,
        TICK_US_MIN,
        TICK_US_MAX,
        "a smaller tick costs millions of wake-ups per simulated second; a larger one hides the latencies the SLOs judge",
    )
}

/// The fleet's process counts, each a tier of processes.
const TIER_FIELDS: [&str; 7] = [
    "fleet.chat_servers",
    "fleet.client_shards",
    "fleet.redis_session_shards",
    "fleet.redis_presence_shards",
    "fleet.cassandra_nodes",
    "fleet.kafka_brokers",
    "fleet.routers",
];

fn check_fleet(s: &Scenario) -> Result<(), Failure> {
    let f = &s.fleet;
    let tiers: [(&'static str, u32, u32, &str); 10] = [
        ("fleet.chat_servers", f.chat_servers, CHAT_SERVERS_MAX, "Snowflake ids have 10 worker bits"),
        (
            "fleet.connections_per_server_max",
            f.connections_per_server_max,
            CONNECTIONS_PER_SERVER_MAX,
            "100 times the card's 100,000 per server",
        ),
        ("fleet.client_shards", f.client_shards, CLIENT_SHARDS_MAX, "each shard is a process with its own histograms"),
        ("fleet.redis_session_shards", f.redis_session_shards, REDIS_SHARDS_MAX, "Redis Cluster's scale"),
        ("fleet.redis_presence_shards", f.redis_presence_shards, REDIS_SHARDS_MAX, "Redis Cluster's scale"),
        ("fleet.cassandra_nodes", f.cassandra_nodes, CASSANDRA_NODES_MAX, "about 4 times the card's ~548 nodes"),
        (
            "fleet.cassandra_replication_factor",
            f.cassandra_replication_factor,
            REPLICATION_FACTOR_MAX,
            "real clusters write 3 to 5 replicas",
        ),
        ("fleet.kafka_brokers", f.kafka_brokers, KAFKA_BROKERS_MAX, "about 34 times the card's 30 brokers"),
        (
            "fleet.kafka_partitions",
            f.kafka_partitions,
            KAFKA_PARTITIONS_MAX,
            "every broker and router keeps a slot per partition",
        ),
        ("fleet.routers", f.routers, ROUTERS_MAX, "at most one router per partition is useful"),
    ];
    for (field, value, max, why) in tiers {
        in_range(field, value.into(), 1, max.into(), why)?;
    }
    let processes = s.processes();
    if processes > PROCESSES_MAX {
        return fail_related(
            "fleet",
            &TIER_FIELDS,
            format!(
                "{} processes in all; at most {} (each keeps a table entry per other process)",
                n(processes),
                n(PROCESSES_MAX)
            ),
        );
    }
    Ok(())
}

fn check_fleet_relations(s: &Scenario) -> Result<(), Failure> {
    let f = &s.fleet;
    if f.cassandra_replication_factor > f.cassandra_nodes {
        return fail_related(
            "fleet.cassandra_replication_factor",
            &["fleet.cassandra_nodes"],
            format!(
                "{} replicas need at least as many nodes (fleet.cassandra_nodes = {})",
                f.cassandra_replication_factor, f.cassandra_nodes
            ),
        );
    }
    if f.routers > f.kafka_partitions {
        return fail_related(
            "fleet.routers",
            &["fleet.kafka_partitions"],
            format!("more routers than partitions ({}) leaves routers idle", f.kafka_partitions),
        );
    }
    // Both factors are limited above, so neither product can overflow.
    let slots = (u64::from(f.kafka_brokers) + u64::from(f.routers)) * u64::from(f.kafka_partitions);
    if slots > PARTITION_SLOTS_MAX {
        return fail_related(
            "fleet.kafka_partitions",
            &["fleet.kafka_brokers", "fleet.routers"],
            format!(
                "(kafka_brokers + routers) x kafka_partitions = {} partition slots; at most {} (each broker and router keeps one per partition)",
                n(slots),
                n(PARTITION_SLOTS_MAX)
            ),
        );
    }
    Ok(())
}

fn check_users(s: &Scenario) -> Result<(), Failure> {
    let u = &s.users;
    let f = &s.fleet;
    in_range("users.concurrent", u.concurrent, USERS_MIN, USERS_MAX, "1:1 messaging needs two users; ids are u32")?;
    if u64::from(f.chat_servers) * u64::from(f.connections_per_server_max) < u.concurrent {
        return fail_related(
            "fleet.connections_per_server_max",
            &["users.concurrent", "fleet.chat_servers"],
            format!(
                "{} servers x {} connections cannot hold {} users",
                f.chat_servers,
                n(f.connections_per_server_max),
                n(u.concurrent)
            ),
        );
    }
    if u64::from(f.client_shards) > u.concurrent {
        let why = format!("more shards than users ({})", n(u.concurrent));
        return fail_related("fleet.client_shards", &["users.concurrent"], why);
    }
    let contacts_max = u64::from(CONTACTS_PER_USER_MAX).min(u.concurrent - 1);
    in_range(
        "users.contacts_per_user",
        u.contacts_per_user.into(),
        1,
        contacts_max,
        "each user messages someone, and at most every other user (and 10,000 people)",
    )
    .map_err(|f| f.related(&["users.concurrent"]))?;
    if u.connect_ramp_s > s.warmup_s {
        let why = format!("must end within the warm-up ({} s)", s.warmup_s);
        return fail_related("users.connect_ramp_s", &["warmup_s"], why);
    }
    in_range(
        "users.heartbeat_interval_ms",
        u.heartbeat_interval_ms,
        HEARTBEAT_INTERVAL_MS_MIN,
        HEARTBEAT_INTERVAL_MS_MAX,
        "a heartbeat more often than once a second is not a heartbeat; NAT bindings expire after minutes",
    )?;
    in_range(
        "users.presence_ttl_ms",
        u.presence_ttl_ms,
        u.heartbeat_interval_ms + 1,
        PRESENCE_TTL_MS_MAX,
        "the TTL must exceed the heartbeat interval, or online users expire; a user shown online an hour after going silent is not presence",
    )
    .map_err(|f| f.related(&["users.heartbeat_interval_ms"]))?;
    if u.devices_per_user.phone != 1.0 {
        return fail("users.devices_per_user.phone", "every user has exactly one phone (phone = 1.0)".into());
    }
    in_range(
        "users.reconnect_backoff_ms_base",
        u.reconnect_backoff_ms_base,
        1,
        RECONNECT_BACKOFF_MS_MAX,
        "a first retry window of zero would have every device retry at once; minutes are the cap's business",
    )?;
    in_range(
        "users.reconnect_backoff_ms_max",
        u.reconnect_backoff_ms_max,
        u.reconnect_backoff_ms_base,
        RECONNECT_BACKOFF_MS_MAX,
        "the window doubles from the base up to this cap; a device waiting more than ten minutes to reconnect is an outage",
    )
    .map_err(|f| f.related(&["users.reconnect_backoff_ms_base"]))?;
    let why = "a timeout of zero fails every connection; one beyond ten minutes never fires in a run";
    in_range("users.connect_timeout_ms", u.connect_timeout_ms, 1, TIMEOUT_MS_MAX, why)?;
    in_range("users.ping_timeout_ms", u.ping_timeout_ms, 1, TIMEOUT_MS_MAX, why)?;
    in_range("fleet.kafka_election_ms", s.fleet.kafka_election_ms, 1, TIMEOUT_MS_MAX, why)?;
    in_range("fleet.kafka_session_timeout_ms", s.fleet.kafka_session_timeout_ms, 1, TIMEOUT_MS_MAX, why)?;
    let b = &s.balancer;
    in_range("balancer.health_check_ms", b.health_check_ms, 1, TIMEOUT_MS_MAX, why)?;
    in_range(
        "balancer.virtual_nodes",
        b.virtual_nodes.into(),
        1,
        VIRTUAL_NODES_MAX,
        "a ring needs a point per server; a thousand per server is already even",
    )?;
    share("users.devices_per_user.web", u.devices_per_user.web)?;
    share("users.hide_last_seen_share", u.hide_last_seen_share)?;
    share("users.read_receipts_off_share", u.read_receipts_off_share)?;
    share("users.chat_open_share", u.chat_open_share)
}

fn check_workload(s: &Scenario) -> Result<(), Failure> {
    let w = &s.workload;
    in_range("workload.messages_per_s", w.messages_per_s, 1, MESSAGES_PER_S_MAX, "86 times the card's 1.16M msg/s")?;
    // users.concurrent <= USERS_MAX, so the product fits (see the const assert).
    let per_user_max = s.users.concurrent * SENDS_PER_USER_PER_S_MAX;
    if w.messages_per_s > per_user_max {
        return fail_related(
            "workload.messages_per_s",
            &["users.concurrent"],
            format!(
                "{} msg/s from {} users is more than {SENDS_PER_USER_PER_S_MAX} msg/s per user (a person types a few messages a second at most)",
                n(w.messages_per_s),
                n(s.users.concurrent)
            ),
        );
    }
    // Every 1:1 and group message is minted by the sender's server.
    let minted = w.messages_per_s as f64 + f64::from(s.groups.active) * s.groups.messages_per_group_per_s;
    let servers = u64::from(s.fleet.chat_servers.max(1));
    if minted > (MESSAGES_PER_SERVER_PER_S_MAX * servers) as f64 {
        return fail_related(
            "workload.messages_per_s",
            &["fleet.chat_servers", "groups.active", "groups.messages_per_group_per_s"],
            format!(
                "{} msg/s over {} chat servers is more than {} msg/s a server (a Snowflake worker mints 4,096 ids a millisecond; beyond a quarter of that its ids run ahead of its clock)",
                n(minted.round() as u64),
                n(servers),
                n(MESSAGES_PER_SERVER_PER_S_MAX)
            ),
        );
    }
    let closes = w.app_closes_per_hour;
    if !(0.0..=APP_CLOSES_PER_HOUR_MAX).contains(&closes) {
        return fail(
            "workload.app_closes_per_hour",
            format!("{closes} is not between 0 and {APP_CLOSES_PER_HOUR_MAX} (once a second per phone)"),
        );
    }
    Ok(())
}

fn check_groups(s: &Scenario) -> Result<(), Failure> {
    let g = &s.groups;
    let u = &s.users;
    if u.registered != 0 {
        in_range(
            "users.registered",
            u.registered,
            u.concurrent,
            USERS_MAX,
            "at least the concurrent users; ids are u32",
        )
        .map_err(|f| f.related(&["users.concurrent"]))?;
    }
    check_distribution(&u.offline_for_s, 1e6, TOTAL_S_MAX * 1_000_000).or_else(|m| fail("users.offline_for_s", m))?;
    if g.active == 0 {
        return Ok(());
    }
    in_range("groups.active", g.active.into(), 1, GROUPS_ACTIVE_MAX.into(), "a thousand times the card's 1,000")?;
    let (least, most) = match g.members {
        DistConfig::Constant { value } => (value, value),
        DistConfig::Uniform { min, max } => (min, max),
        _ => return fail("groups.members", "must be `constant` or `uniform` (a whole number of members)".into()),
    };
    if !(least.is_finite() && most.is_finite() && least >= 2.0 && least <= most) {
        return fail(
            "groups.members",
            format!("{least} to {most}: a group has at least 2 members (a sender and one more)"),
        );
    }
    if most > f64::from(GROUP_MEMBERS_MAX) {
        return fail(
            "groups.members",
            format!("up to {most} members: at most {GROUP_MEMBERS_MAX} (WhatsApp's group size limit)"),
        );
    }
    if most > s.registered_users() as f64 {
        return fail_related(
            "groups.members",
            &["users.registered", "users.concurrent"],
            format!("up to {most} members, but only {} users have an account", n(s.registered_users())),
        );
    }
    let memberships = u64::from(g.active) * most as u64;
    if memberships > GROUP_MEMBERSHIPS_MAX {
        return fail_related(
            "groups.active",
            &["groups.members"],
            format!("up to {} members in all; at most {} (each is kept)", n(memberships), n(GROUP_MEMBERSHIPS_MAX)),
        );
    }
    let rate = g.messages_per_group_per_s;
    if !(rate > 0.0 && rate <= MESSAGES_PER_GROUP_PER_S_MAX) {
        return fail(
            "groups.messages_per_group_per_s",
            format!("{rate} is not above 0 and at most {MESSAGES_PER_GROUP_PER_S_MAX} (people typing)"),
        );
    }
    in_range("fleet.fanouts", s.fleet.fanouts.into(), 1, FANOUTS_MAX.into(), "as many as routers at most")?;
    in_range(
        "fleet.group_partitions",
        s.fleet.group_partitions.into(),
        1,
        KAFKA_PARTITIONS_MAX.into(),
        "every broker and fan-out keeps a slot per partition",
    )?;
    if s.fleet.fanouts > s.fleet.group_partitions {
        return fail_related(
            "fleet.fanouts",
            &["fleet.group_partitions"],
            format!("more fan-out instances than partitions ({}) leaves some idle", s.fleet.group_partitions),
        );
    }
    Ok(())
}

fn check_distributions(s: &Scenario) -> Result<(), Failure> {
    // (field, distribution, microseconds per unit, largest parameter in µs)
    let dists: [(&str, &DistConfig, f64, u64); 11] = [
        ("network.client_server_ms", &s.network.client_server_ms, 1e3, NETWORK_MS_MAX * 1_000),
        ("network.in_datacenter_ms", &s.network.in_datacenter_ms, 1e3, NETWORK_MS_MAX * 1_000),
        ("service_us.chat_server", &s.service_us.chat_server, 1.0, DIST_US_MAX),
        ("service_us.router", &s.service_us.router, 1.0, DIST_US_MAX),
        ("service_us.redis", &s.service_us.redis, 1.0, DIST_US_MAX),
        ("service_us.cassandra_write", &s.service_us.cassandra_write, 1.0, DIST_US_MAX),
        ("service_us.kafka", &s.service_us.kafka, 1.0, DIST_US_MAX),
        ("service_us.fanout", &s.service_us.fanout, 1.0, DIST_US_MAX),
        ("service_us.membership_page", &s.service_us.membership_page, 1.0, DIST_US_MAX),
        ("workload.read_delay_ms", &s.workload.read_delay_ms, 1e3, DIST_US_MAX),
        ("workload.app_closed_ms", &s.workload.app_closed_ms, 1e3, DIST_US_MAX),
    ];
    for (field, d, unit_us, max_us) in dists {
        check_distribution(d, unit_us, max_us).or_else(|m| fail(field, m))?;
    }
    Ok(())
}

/// The `[media]` section (checked only when media runs, but for its share).
fn check_media(s: &Scenario) -> Result<(), Failure> {
    let m = &s.media;
    share("media.share", m.share)?;
    if !m.on() {
        return Ok(());
    }
    let shares = m.kinds.shares();
    for (kind, w) in wasim_model::MediaKind::ALL.iter().zip(shares) {
        if !(w.is_finite() && w >= 0.0) {
            return fail(&format!("media.kinds.{}", kind.name()), format!("{w} must be a finite share, at least 0"));
        }
    }
    let sum = shares.iter().sum::<f64>();
    if !(sum > 0.0 && sum.is_finite()) {
        return fail(
            "media.kinds",
            format!("the kinds' shares sum to {sum}: at least one kind must be sent, and the sum must be finite"),
        );
    }
    let kb = crate::scenario::MEDIA_KB_MAX;
    for (field, d) in [
        ("media.image_kb", &m.image_kb),
        ("media.video_kb", &m.video_kb),
        ("media.audio_kb", &m.audio_kb),
        ("media.document_kb", &m.document_kb),
    ] {
        check_distribution(d, 1.0, kb).map_err(|e| e.replace(" µs", " kB")).or_else(|e| fail(field, e))?;
    }
    for (field, d) in [("media.uplink_mbps", &m.uplink_mbps), ("media.downlink_mbps", &m.downlink_mbps)] {
        check_distribution(d, 1.0, MEDIA_MBPS_MAX)
            .map_err(|e| e.replace(" µs", " Mbit/s"))
            .or_else(|e| fail(field, e))?;
        if d.mean() <= 0.0 {
            return fail(field, "a link of 0 Mbit/s moves nothing: its mean must be above 0".into());
        }
    }
    for (field, d) in [
        ("media.presign_us", &m.presign_us),
        ("media.object_store_us", &m.object_store_us),
        ("media.cdn_us", &m.cdn_us),
    ] {
        check_distribution(d, 1.0, DIST_US_MAX).or_else(|e| fail(field, e))?;
    }
    let positive = |field: &str, v: f64, max: f64, what: &str| -> Result<(), Failure> {
        if !(v.is_finite() && v > 0.0 && v <= max) {
            return fail(field, format!("{v} must be above 0 and at most {max} ({what})"));
        }
        Ok(())
    };
    positive("media.encrypt_mb_per_s", m.encrypt_mb_per_s, 100_000.0, "a device's AES speed")?;
    positive("media.ingest_gbps", m.ingest_gbps, 1e6, "a petabit a second")?;
    positive("media.cdn_cache_gb", m.cdn_cache_gb, 1e9, "an exabyte an edge")?;
    in_range("media.api_servers", m.api_servers.into(), 1, MEDIA_PROCESSES_MAX, "each is a process")?;
    in_range("media.api_workers", m.api_workers.into(), 1, WORKERS_MAX.into(), "workers of one process")?;
    in_range("media.object_store_nodes", m.object_store_nodes.into(), 1, MEDIA_PROCESSES_MAX, "each is a process")?;
    in_range("media.cdn_edges", m.cdn_edges.into(), 1, MEDIA_PROCESSES_MAX, "each is a process")?;
    in_range("media.attempts_max", m.attempts_max.into(), 1, 100, "a user gives up long before")?;
    in_range("media.retry_backoff_ms_base", m.retry_backoff_ms_base, 1, 3_600_000, "at most an hour")?;
    in_range(
        "media.retry_backoff_ms_max",
        m.retry_backoff_ms_max,
        m.retry_backoff_ms_base,
        3_600_000,
        "at least the base, at most an hour",
    )
    .map_err(|f| f.related(&["media.retry_backoff_ms_base"]))?;
    // A device must be able to hear an answer: a round trip at the client link's p99.
    let round_trip_ms = (2.0 * s.network.client_server_ms.p99()).ceil() as u64;
    in_range(
        "media.timeout_ms",
        m.timeout_ms,
        round_trip_ms.max(1),
        3_600_000,
        "at least a round trip at the client link's p99, or every request times out; at most an hour",
    )
    .map_err(|f| f.related(&["network.client_server_ms"]))
}

/// The fastest client link, in Mbit/s.
const MEDIA_MBPS_MAX: u64 = 100_000;
/// The most processes of a media tier.
const MEDIA_PROCESSES_MAX: u64 = 1_000;

/// A distribution's parameters are finite, non-negative, ordered, and within `max_us`.
fn check_distribution(d: &DistConfig, unit_us: f64, max_us: u64) -> Result<(), String> {
    let max = max_us as f64 / unit_us;
    let unit = match unit_us {
        1.0 => "µs",
        1e3 => "ms",
        _ => "s",
    };
    let within = |name: &str, v: f64| -> Result<(), String> {
        if !v.is_finite() || v < 0.0 {
            return Err(format!("{name} = {v} must be a finite number, at least 0"));
        }
        if v > max {
            return Err(format!("{name} = {v} is too large: at most {max} {unit}"));
        }
        Ok(())
    };
    match *d {
        DistConfig::Constant { value } => within("value", value),
        DistConfig::Uniform { min, max: upper } => {
            within("min", min)?;
            within("max", upper)?;
            if upper < min {
                return Err(format!("max = {upper} is below min = {min}"));
            }
            Ok(())
        }
        DistConfig::Exponential { mean } => {
            within("mean", mean)?;
            if mean == 0.0 {
                return Err("mean must be greater than 0 (use a constant 0 for no delay)".into());
            }
            Ok(())
        }
        DistConfig::Lognormal { p50, p99 } => {
            within("p50", p50)?;
            within("p99", p99)?;
            if p50 == 0.0 || p99 <= p50 {
                return Err(format!("needs 0 < p50 < p99 (p50 = {p50}, p99 = {p99})"));
            }
            if p99 / p50 > LOGNORMAL_SPREAD_MAX {
                return Err(format!(
                    "p99 is {:.0} times p50; at most {LOGNORMAL_SPREAD_MAX} (beyond it the mean explodes)",
                    p99 / p50
                ));
            }
            Ok(())
        }
    }
}

fn check_workers_and_slos(s: &Scenario) -> Result<(), Failure> {
    let w = &s.workers;
    let workers = [
        ("workers.chat_server", w.chat_server),
        ("workers.router", w.router),
        ("workers.redis", w.redis),
        ("workers.cassandra", w.cassandra),
        ("workers.kafka", w.kafka),
        ("workers.fanout", w.fanout),
    ];
    for (field, value) in workers {
        in_range(field, value.into(), 1, WORKERS_MAX.into(), "a queue needs a worker; 32 times Cassandra's default")?;
    }
    let why = "the latency histograms stop at an hour, and a 0 ms objective never holds";
    in_range("slo.delivery_ms_p99", s.slo.delivery_ms_p99, 1, SLO_MS_MAX, why)?;
    in_range("slo.presence_ms_p99", s.slo.presence_ms_p99, 1, SLO_MS_MAX, why)?;
    in_range("slo.sent_ack_timeout_ms", s.slo.sent_ack_timeout_ms, 1, SLO_MS_MAX, why)?;
    share("slo.availability", s.slo.availability)?;
    if let Some(one_in) = s.checks.conversations_one_in {
        in_range("checks.conversations_one_in", one_in.into(), 1, 1 << 16, "one conversation in up to 65,536")?;
        if !one_in.is_power_of_two() {
            return fail("checks.conversations_one_in", format!("must be a power of two (1, 2, 4, ...), not {one_in}"));
        }
    }
    Ok(())
}

fn check_faults(s: &Scenario) -> Result<(), Failure> {
    if s.faults.len() > FAULTS_MAX {
        return fail(
            &format!("faults[{FAULTS_MAX}]"),
            format!("{} faults; at most {FAULTS_MAX} (each device event scans the fault windows)", s.faults.len()),
        );
    }
    for (i, fault) in s.faults.iter().enumerate() {
        // Two faults of one state of one process must not overlap: it is down or it is not
        // (a crash, a Redis failover), and its clock reads one time (skews that overlapped
        // added up, and two late ones took a clock before the run began, where it stuck).
        if let Some((state, target)) = exclusive_state(fault) {
            let (at_s, for_s) = fault.window_s();
            let overlap = s.faults[..i].iter().any(|f| {
                let (a, d) = f.window_s();
                exclusive_state(f) == Some((state, target))
                    && at_s < a.saturating_add(d)
                    && a < at_s.saturating_add(for_s)
            });
            if overlap {
                let what = match state {
                    ExclusiveState::Down => format!("{target} is already down then"),
                    ExclusiveState::Clock => format!("{target}'s clock is already skewed then"),
                };
                return fail(
                    &format!("faults[{i}].at_s"),
                    format!("{}: {what} (an earlier fault of it overlaps this one)", fault.kind()),
                );
            }
        }
        check_fault(s, fault).map_err(|f| {
            let field = if f.field.is_empty() { format!("faults[{i}]") } else { format!("faults[{i}].{}", f.field) };
            Failure { field, related: Vec::new(), message: format!("{}: {}", fault.kind(), f.message) }
        })?;
    }
    Ok(())
}

/// A state of a process that one fault at a time may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExclusiveState {
    /// Down: a crash, or a Redis shard failing over.
    Down,
    /// Its clock, skewed.
    Clock,
}

/// The state of which process `fault` holds for its window, if one at a time may.
fn exclusive_state(fault: &Fault) -> Option<(ExclusiveState, &str)> {
    match *fault {
        Fault::Crash { ref target, .. } | Fault::RedisDown { ref target, .. } => Some((ExclusiveState::Down, target)),
        Fault::ClockSkew { ref target, .. } => Some((ExclusiveState::Clock, target)),
        _ => None,
    }
}

/// Check one fault; the failure names a key of the fault (or none).
fn check_fault(s: &Scenario, fault: &Fault) -> Result<(), Failure> {
    let (at_s, for_s) = fault.window_s();
    let ramp_s = s.users.connect_ramp_s;
    let sends_end_s = s.warmup_s + s.duration_s;
    if at_s < ramp_s || at_s >= sends_end_s {
        return fail(
            "at_s",
            format!("starts at {at_s} s; must start after the connect ramp ({ramp_s} s) and before the end of sends ({sends_end_s} s)"),
        );
    }
    // at_s < sends_end_s <= TOTAL_S_MAX, so the sum is checked before it is formed. A
    // crash may last past the end of the run: the process never comes back.
    let crash = matches!(fault, Fault::Crash { .. });
    if crash && (for_s == 0 || for_s > TOTAL_S_MAX) {
        return fail(
            "for_s",
            format!("lasts {for_s} s; a crash's downtime is at least 1 s and at most {TOTAL_S_MAX} s"),
        );
    }
    if !crash && (for_s == 0 || for_s > sends_end_s - at_s) {
        return fail(
            "for_s",
            format!(
                "lasts {for_s} s from {at_s} s; must last at least 1 s and end by the end of sends ({sends_end_s} s)"
            ),
        );
    }
    match *fault {
        Fault::CutNetwork { users, .. } => {
            in_range("users", users, 1, s.users.concurrent, "between 1 and users.concurrent")
        }
        Fault::LoseDeliveredAcks { share: p, .. } => share("share", p),
        Fault::Clog { ref between, ref and, .. } => {
            process_set(s, between).map_err(at("between"))?;
            process_set(s, and).map(|_| ()).map_err(at("and"))
        }
        Fault::ClockSkew { ref target, skew_ms, .. } => {
            skew_target(s, target).map_err(at("target"))?;
            if skew_ms == 0 || skew_ms.unsigned_abs() > SKEW_MS_MAX {
                return fail(
                    "skew_ms",
                    format!("{skew_ms} ms; must be nonzero and at most {SKEW_MS_MAX} ms either way (beyond, NTP has stepped it back)"),
                );
            }
            let (at_s, _) = fault.window_s();
            if skew_ms < 0 && skew_ms.unsigned_abs() > at_s * 1_000 {
                return fail(
                    "skew_ms",
                    format!("{skew_ms} ms from {at_s} s: the clock would read a time before the run began"),
                );
            }
            Ok(())
        }
        Fault::PacketLoss { ref link, share: p, .. } => {
            link_class(link)?;
            if !(p > 0.0 && p <= PACKET_LOSS_MAX) {
                return fail(
                    "share",
                    format!("{p}; must be above 0 and at most {PACKET_LOSS_MAX} (beyond, TCP gives the connection up)"),
                );
            }
            Ok(())
        }
        Fault::Latency { ref link, add_ms, .. } => {
            link_class(link)?;
            if !(add_ms > 0.0 && add_ms <= NETWORK_MS_MAX as f64) {
                return fail(
                    "add_ms",
                    format!("{add_ms} ms; must be above 0 and at most {NETWORK_MS_MAX} ms (slower is an outage)"),
                );
            }
            Ok(())
        }
        Fault::Crash { ref target, .. } => crash_target(s, target).map(|_| ()).map_err(at("target")),
        Fault::ObjectStoreSlow { factor, .. } => {
            media_on(s)?;
            if !(factor.is_finite() && factor > 1.0 && factor <= 1_000.0) {
                return fail("factor", format!("{factor}; must be above 1 and at most 1,000 (slower is down)"));
            }
            Ok(())
        }
        Fault::ObjectStoreDown { .. } => media_on(s),
        Fault::CdnEdgeLoss { ref target, .. } => {
            media_on(s)?;
            cdn_target(s, target).map(|_| ()).map_err(at("target"))
        }
        Fault::RedisDown { ref target, replication_lag_ms, .. } => {
            redis_target(s, target).map_err(at("target"))?;
            in_range(
                "replication_lag_ms",
                replication_lag_ms,
                0,
                REPLICATION_LAG_MS_MAX,
                "a replica further behind has lost its link: a full resync, not a lag",
            )
        }
    }
}

/// The process a `clock_skew` fault's `target` names: a chat server (its Snowflake ids and
/// timers carry the skew) or a presence shard (its TTL deadlines and last-seen stamps).
pub fn skew_target(s: &Scenario, target: &str) -> Result<(crate::topology::NodeKind, u32), String> {
    if target.starts_with("redis_presence-") {
        return redis_target(s, target);
    }
    match crash_target(s, target) {
        Ok(found @ (crate::topology::NodeKind::ChatServer, _)) => Ok(found),
        Ok(_) => Err(format!(
            "`{target}`: a skewed clock is modelled on chat servers (\"chat_server-N\": Snowflake ids, timers) and presence shards (\"redis_presence-N\": TTLs, last-seen)"
        )),
        Err(message) => Err(message),
    }
}

/// A media fault needs media to run.
fn media_on(s: &Scenario) -> Result<(), Failure> {
    if !s.media.on() {
        return fail("", "needs media: set media.share above 0".into());
    }
    Ok(())
}

/// The CDN edge a `cdn_edge_loss` fault's `target` names (`cdn-N`).
pub fn cdn_target(s: &Scenario, target: &str) -> Result<u32, String> {
    let edges = s.media.cdn_edges;
    match target.strip_prefix("cdn-").and_then(|i| i.parse::<u32>().ok()) {
        Some(i) if i < edges => Ok(i),
        _ => Err(format!("`{target}`: no such edge; the edges are cdn-0 to cdn-{}", edges.saturating_sub(1))),
    }
}

/// A failure of a fault's key `field`, saying `message`.
fn at(field: &'static str) -> impl FnOnce(String) -> Failure {
    move |message| Failure { field: field.into(), related: Vec::new(), message }
}

/// A network fault's `link` names a link class.
fn link_class(link: &str) -> Result<(), Failure> {
    if link == "client_server" || link == "in_datacenter" {
        return Ok(());
    }
    fail("link", format!("`{link}` is not a link class: \"client_server\" or \"in_datacenter\""))
}

/// The most a `clock_skew` fault may put a clock off, in ms.
pub const SKEW_MS_MAX: u64 = 60_000;

/// The most packets a `packet_loss` fault may lose on a link: past a few in ten, TCP's
/// retransmissions run into its give-up timeouts, which are not modelled.
pub const PACKET_LOSS_MAX: f64 = 0.3;

/// The most a Redis replica may trail its primary in a `redis_down` fault.
pub const REPLICATION_LAG_MS_MAX: u64 = 60_000;

/// The Redis shard a `redis_down` fault's `target` names (`redis_session-2`,
/// `redis_presence-0`), or why it names none.
pub fn redis_target(s: &Scenario, target: &str) -> Result<(crate::topology::NodeKind, u32), String> {
    use crate::topology::NodeKind;
    let (kind, index) = target.rsplit_once('-').unwrap_or((target, ""));
    let (kind, count, field) = match kind {
        "redis_session" => (NodeKind::Redis, s.fleet.redis_session_shards, "fleet.redis_session_shards"),
        "redis_presence" => (NodeKind::Presence, s.fleet.redis_presence_shards, "fleet.redis_presence_shards"),
        _ => {
            return Err(format!(
                "`{target}` is not a Redis shard; redis_down takes \"redis_session-N\" or \"redis_presence-N\""
            ))
        }
    };
    numbered(kind, index, count, field)
}

/// Process `index` of `kind`, if it is below `count` (the scenario's `field`).
fn numbered(
    kind: crate::topology::NodeKind,
    index: &str,
    count: u32,
    field: &str,
) -> Result<(crate::topology::NodeKind, u32), String> {
    match index.parse::<u32>() {
        Ok(i) if i < count => Ok((kind, i)),
        _ => Err(format!("`{index}` is not one of them: they are numbered 0 to {} ({field})", count - 1)),
    }
}

/// A set of processes a network fault names: every process of a kind (`router`) or one
/// (`chat_server-3`).
#[derive(Clone, Copy, Debug)]
pub struct ProcessSet {
    kind: crate::topology::NodeKind,
    one: Option<u32>,
}

impl ProcessSet {
    /// The set as a range of network indices (first, count).
    pub fn range(self, topo: &crate::topology::Topology) -> (u16, u16) {
        match self.one {
            Some(i) => (topo.node(self.kind, i).0, 1),
            None => topo.range(self.kind),
        }
    }
}

/// The set of processes `name` names, or why it names none.
pub fn process_set(s: &Scenario, name: &str) -> Result<ProcessSet, String> {
    use crate::topology::NodeKind;
    let (kind_name, index) = match name.rsplit_once('-') {
        Some((k, i)) => (k, Some(i)),
        None => (name, None),
    };
    let Some(kind) = NodeKind::ALL.into_iter().find(|k| k.name() == kind_name) else {
        let names: Vec<&str> = NodeKind::ALL.iter().map(|k| k.name()).collect();
        return Err(format!(
            "`{name}` names no processes: a kind ({}) or one process, like \"chat_server-3\"",
            names.join(", ")
        ));
    };
    let count = crate::topology::Topology::new(s).count(kind);
    if count == 0 {
        return Err(format!("`{name}`: the scenario has no {kind_name} processes"));
    }
    match index {
        None => Ok(ProcessSet { kind, one: None }),
        Some(i) => match i.parse::<u32>() {
            Ok(i) if i < count => Ok(ProcessSet { kind, one: Some(i) }),
            _ => Err(format!("`{name}`: {kind_name} processes are numbered 0 to {}", count - 1)),
        },
    }
}

/// The process a crash's `target` names (`chat_server-47`, `cassandra-2`), or why it
/// names none.
pub fn crash_target(s: &Scenario, target: &str) -> Result<(crate::topology::NodeKind, u32), String> {
    use crate::topology::NodeKind;
    let Some((kind, index)) = target.rsplit_once('-') else {
        return Err(format!("`{target}` is not a process name like \"chat_server-47\" or \"cassandra-2\""));
    };
    let (kind, count, field) = match kind {
        "chat_server" => (NodeKind::ChatServer, s.fleet.chat_servers, "fleet.chat_servers"),
        "cassandra" => (NodeKind::Cassandra, s.fleet.cassandra_nodes, "fleet.cassandra_nodes"),
        "kafka" => (NodeKind::Kafka, s.fleet.kafka_brokers, "fleet.kafka_brokers"),
        "router" => (NodeKind::Router, s.fleet.routers, "fleet.routers"),
        "redis_session" | "redis_presence" => {
            return Err(format!(
                "a Redis shard fails over to its replica rather than restarting: kind = \"redis_down\", target = \"{target}\", failover_s = ..."
            ))
        }
        "client_shard" => {
            return Err(
                "a client shard holds the users' devices, not a server: cut their network instead (kind = \"cut_network\")"
                    .to_string(),
            )
        }
        _ => {
            return Err(format!(
                "`{kind}` is not a process kind; a crash takes \"chat_server-N\", \"cassandra-N\", \"kafka-N\" or \"router-N\""
            ))
        }
    };
    numbered(kind, index, count, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(n(0u64), "0");
        assert_eq!(n(999u64), "999");
        assert_eq!(n(1_000u64), "1,000");
        assert_eq!(n(100_000_000u64), "100,000,000");
        assert_eq!(n(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn names_stay_inside_the_output_folder() {
        for ok in ["baseline", "bob-offline-60s", "a.b_c", "x"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", "a\\b", "..", ".hidden", "a..b", "tab\there", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
