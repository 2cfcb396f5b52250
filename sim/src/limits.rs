//! Named limits on a scenario, each with the reason it exists.

use crate::scenario::Scenario;

/// Snowflake ids have 10 worker bits: at most 1,024 chat servers can mint ids.
pub const CHAT_SERVERS_MAX: u32 = 1_024;
/// User ids are `u32`; 1 billion leaves room above the card's 100M concurrent users.
pub const USERS_MAX: u64 = 1_000_000_000;
/// Node indices on wasim's network are `u16`.
pub const NODES_MAX: u64 = u16::MAX as u64;
/// A tick above 100 ms would hide the latencies the SLOs are about.
pub const TICK_US_MAX: u64 = 100_000;
/// Runs longer than a simulated day are not what this tool is for.
pub const TOTAL_S_MAX: u64 = 86_400;
/// The network's wheel holds this many ticks ahead; later arrivals wait in an overflow heap.
pub const WHEEL_TICKS: u64 = 4_096;

const _: () = assert!(WHEEL_TICKS.is_power_of_two(), "wheel slots are indexed with a mask");
const _: () = assert!(TOTAL_S_MAX * 2 * 1_000_000 < 1 << 40, "arrival times fit the 40 bits of an order key");
const _: () = assert!(CHAT_SERVERS_MAX <= 1 << 10, "chat servers must fit Snowflake's worker bits");

/// Check the scenario against the limits. Returns the field and the reason.
pub(crate) fn check(s: &Scenario) -> Result<(), (String, String)> {
    let err = |field: &str, msg: String| Err((field.to_string(), msg));
    let f = &s.fleet;
    if f.chat_servers > CHAT_SERVERS_MAX {
        return err("fleet.chat_servers", format!("at most {CHAT_SERVERS_MAX} (Snowflake worker bits)"));
    }
    if s.users.concurrent > USERS_MAX {
        return err("users.concurrent", format!("at most {USERS_MAX}"));
    }
    if s.tick_us > TICK_US_MAX {
        return err("tick_us", format!("at most {TICK_US_MAX} µs"));
    }
    if s.total_s() > TOTAL_S_MAX {
        return err("duration_s", format!("warm-up + duration + drain must be at most {TOTAL_S_MAX} s"));
    }
    if f.cassandra_replication_factor > f.cassandra_nodes {
        return err(
            "fleet.cassandra_replication_factor",
            format!(
                "{} replicas need at least as many nodes (fleet.cassandra_nodes = {})",
                f.cassandra_replication_factor, f.cassandra_nodes
            ),
        );
    }
    if f.cassandra_replication_factor > 15 {
        return err("fleet.cassandra_replication_factor", "at most 15".into());
    }
    if u64::from(f.chat_servers) * u64::from(f.connections_per_server_max) < s.users.concurrent {
        return err(
            "fleet.connections_per_server_max",
            format!(
                "{} servers x {} connections cannot hold {} users",
                f.chat_servers, f.connections_per_server_max, s.users.concurrent
            ),
        );
    }
    if f.routers > f.kafka_partitions {
        return err(
            "fleet.routers",
            format!("more routers than partitions ({}) leaves routers idle", f.kafka_partitions),
        );
    }
    if u64::from(f.client_shards) > s.users.concurrent {
        return err("fleet.client_shards", "more shards than users".into());
    }
    if s.users.connect_ramp_s > s.warmup_s {
        return err("users.connect_ramp_s", format!("must end within the warm-up ({} s)", s.warmup_s));
    }
    if s.users.concurrent < 2 {
        return err("users.concurrent", "1:1 messaging needs at least 2 users".into());
    }
    let nodes = u64::from(f.chat_servers)
        + u64::from(f.client_shards)
        + u64::from(f.redis_session_shards)
        + u64::from(f.redis_presence_shards)
        + u64::from(f.cassandra_nodes)
        + u64::from(f.kafka_brokers)
        + u64::from(f.routers);
    if nodes > NODES_MAX {
        return err("fleet", format!("{nodes} processes exceed the network's {NODES_MAX}"));
    }
    Ok(())
}
