//! Redis down, end to end, on scaled-down copies of scenarios/redis-down.toml (about 2K
//! users per chat server): a session shard's commands wait for its replica's promotion,
//! the replica lacks the session writes of its lag, and the chat servers' re-registration
//! repairs them; a presence shard's heartbeats are lost and keys expire. Without the
//! re-registration (the card's design, redis-down-no-reregister.toml) the checkers name
//! the messages left in the inboxes of connected devices and the devices routed elsewhere.

mod common;
use wasim_sim::{Fault, Scenario};

fn scaled(file: &str, users: u64, lag_ms: u64) -> Scenario {
    let mut s = common::shipped_scaled(file, users);
    for f in &mut s.faults {
        if let Fault::RedisDown { replication_lag_ms, target, .. } = f {
            if target.starts_with("redis_session-") {
                *replication_lag_ms = lag_ms;
            }
        }
    }
    s
}

#[test]
fn a_session_shard_fails_over_and_reregistration_repairs_what_its_replica_lacked() {
    let s = scaled("redis-down.toml", 8_000, 1_000);
    for (seed, o) in common::sweep(&s, 1..21) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        let c = &o.counters;
        assert!(c.sessions_lost_in_failover > 0, "seed {seed}: the replica trailed by 1 s");
        // About a quarter of the devices are on the failed shard, all connected.
        let devices = s.users.concurrent as f64 * 1.2;
        let share = c.sessions_reregistered as f64 / devices;
        assert!((0.15..0.35).contains(&share), "seed {seed}: {share:.3} of the devices re-registered");
        // The routes of a quarter of the users waited for the 10 s failover.
        let during = &o.latencies.delivery_during;
        assert!(during.max() > 9_000_000, "seed {seed}: delivery max {} µs", during.max());
        let summary = wasim_reports::Summary::new(&o, "r");
        let presence = summary.redis_outages.iter().find(|r| !r.session).expect("a presence outage");
        assert!(presence.shown_offline_during > 0, "seed {seed}: heartbeats lost, keys expired");
        assert_eq!(presence.shown_offline_before, 0, "seed {seed}");
    }
}

#[test]
fn without_reregistration_the_checkers_name_the_devices_the_replica_lost() {
    let with = scaled("redis-down.toml", 8_000, 2_000);
    let without = scaled("redis-down-no-reregister.toml", 8_000, 2_000);
    assert!(!without.fleet.session_reregister && with.fleet.session_reregister);
    let mut named = 0;
    // Whether a seed's failover loses a session a message then needs is the luck of its
    // timing (about a third of seeds do): 20 seeds, of which a fifth must name it.
    let runs = common::sweep(&with, 1..21).into_iter().zip(common::sweep(&without, 1..21));
    for ((seed, o), (_, without)) in runs {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        let sent_away = o.counters.devices_sent_away;
        let o = without;
        for v in &o.checks.violations {
            assert!(v.invariant == 1 || v.invariant == 6, "seed {seed}: only routing's victims: {v:?}");
        }
        if !o.checks.ok() {
            named += 1;
        }
        if sent_away == 0 {
            assert!(o.checks.ok(), "seed {seed}: nothing was lost to repair, yet {:?}", o.checks.violations);
        }
    }
    assert!(named >= 4, "the checkers named the flaw on {named} of 20 seeds");
}

#[test]
fn a_failover_without_lag_loses_no_session() {
    let mut s = scaled("redis-down.toml", 4_000, 0);
    s.faults.truncate(1);
    let o = wasim_sim::run(&s, &wasim_sim::RunOptions::default());
    assert!(o.checks.ok(), "{:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
    assert_eq!(o.counters.sessions_lost_in_failover, 0);
    assert_eq!(o.counters.devices_sent_away, 0, "every refreshed session was already right");
    assert!(o.counters.sessions_reregistered > 0);
}
