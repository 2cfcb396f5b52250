//! Heavy churn loses nothing: phones close the app every few seconds over slow links, so
//! catch-ups are often cut short, and every seed of a sweep holds every invariant. A short
//! fleet adds refusals, so a reopening phone often lands on another server while frames of
//! its last connection are still on their way.

mod common;
use common::{parse, sweep};

/// 5,000 users whose phones close the app every 3 s on average and reopen after about 2 s,
/// over client links with a 150 ms median and a 600 ms p99.
const CHURN: &str = r#"
name = "churn"
duration_s = 15
warmup_s = 3
drain_s = 5

[fleet]
chat_servers = 3
client_shards = 2
routers = 2

[users]
concurrent = 5_000
connect_ramp_s = 2
chat_open_share = 0.3

[workload]
messages_per_s = 2_500
app_closes_per_hour = 1_200
app_closed_ms = { dist = "exponential", mean = 2_000 }
read_delay_ms = { dist = "exponential", mean = 3_000 }

[network]
client_server_ms = { dist = "lognormal", p50 = 150, p99 = 600 }
"#;

/// Seeds of the sweep: not the seeds other tests use.
const SEEDS: std::ops::Range<u64> = 101..131;

#[test]
fn thirty_seeds_of_heavy_churn_hold_every_invariant() {
    let scenario = parse(CHURN);
    let outcomes = sweep(&scenario, SEEDS);
    let mut interrupted = 0;
    for (seed, o) in &outcomes {
        assert!(o.checks.ok(), "seed {seed}: {:?}", o.checks.violations);
        assert!(o.counters.sends_measured > 20_000, "seed {seed}: {} sends", o.counters.sends_measured);
        interrupted += o.counters.catch_ups_interrupted;
    }
    assert!(interrupted > 100, "the sweep cut catch-ups short: {interrupted}");
    assert_eq!(outcomes.len(), 30);
}

/// Heavy churn on a fleet with no room to spare (4 x 500 slots for 2,000 phones and 1,000
/// web clients: reconnects are refused and land on other servers), one contact each (long
/// conversations), half the delivered ACKs lost for 15 s and 400 users cut for 8 s.
const SHORT_FLEET: &str = r#"
name = "short-fleet-churn"
duration_s = 20
warmup_s = 3
drain_s = 10

[fleet]
chat_servers = 4
connections_per_server_max = 500
client_shards = 2
routers = 2

[users]
concurrent = 2_000
devices_per_user = { phone = 1.0, web = 0.5 }
connect_ramp_s = 2
chat_open_share = 0.5
contacts_per_user = 1
reconnect_backoff_ms_base = 500
reconnect_backoff_ms_max = 10_000

[workload]
messages_per_s = 1_000
app_closes_per_hour = 1_800
app_closed_ms = { dist = "exponential", mean = 1_500 }
read_delay_ms = { dist = "exponential", mean = 2_000 }

[network]
client_server_ms = { dist = "lognormal", p50 = 120, p99 = 900 }

[[faults]]
kind = "lose_delivered_acks"
at_s = 5
for_s = 15
share = 0.5

[[faults]]
kind = "cut_network"
at_s = 6
for_s = 8
users = 400
"#;

/// Before devices took frames only from their current server, seeds 4, 10, 11, 12 and 20
/// lost messages: an old server's catch-up end, slow on its way, ended the new catch-up,
/// and the new server's older pushes were then taken for repeats.
#[test]
fn twenty_seeds_of_churn_on_a_short_fleet_hold_every_invariant() {
    let outcomes = sweep(&parse(SHORT_FLEET), 1..21);
    let mut refused = 0;
    for (seed, o) in &outcomes {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        refused += o.counters.connects_refused;
    }
    assert!(refused > 1_000, "the fleet refused reconnects: {refused}");
    assert_eq!(outcomes.len(), 20);
}
