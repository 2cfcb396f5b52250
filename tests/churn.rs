//! Heavy churn loses nothing: phones close the app every few seconds over slow links, so
//! catch-ups are often cut short, and every seed of a sweep holds every invariant.

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
