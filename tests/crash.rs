//! Chat server crashes end to end, on scaled-down copies of the shipped crash scenarios
//! (the same fleet shape, about 2K users per server): every invariant holds on 20 seeds,
//! the displaced devices reconnect, what the dead server held unacknowledged reaches its
//! devices through the routers' replay, and the variant without headroom shows the refusals.

mod common;
use wasim_sim::{Outcome, Scenario};

/// `file` from scenarios/, scaled to `users_per_server` per chat server (load, limits and
/// the stores in proportion), with a shorter run.
fn scaled(file: &str, users_per_server: u64) -> Scenario {
    let mut s = Scenario::load(&common::repo_root().join("scenarios").join(file)).expect("shipped scenario");
    let factor = users_per_server as f64 * f64::from(s.fleet.chat_servers) / s.users.concurrent as f64;
    s.users.concurrent = users_per_server * u64::from(s.fleet.chat_servers);
    s.workload.messages_per_s = (s.workload.messages_per_s as f64 * factor).round() as u64;
    s.fleet.connections_per_server_max = (f64::from(s.fleet.connections_per_server_max) * factor).round() as u32;
    s.fleet.client_shards = 2;
    s.fleet.redis_session_shards = 1;
    s.fleet.redis_presence_shards = 1;
    s.fleet.cassandra_nodes = 3;
    s.fleet.kafka_brokers = 1;
    s.fleet.kafka_partitions = 8;
    s.fleet.routers = 2;
    s.users.connect_ramp_s = 2;
    s.warmup_s = 5;
    s.duration_s = 25;
    s.drain_s = 10;
    for f in &mut s.faults {
        if let wasim_sim::Fault::Crash { at_s, for_s, .. } = f {
            *at_s = 10;
            *for_s = 10;
        }
    }
    s
}

fn assert_recovered(o: &Outcome, what: &str) {
    assert!(o.checks.ok(), "{what}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
    assert!(o.silent.is_empty(), "{what}: the crashed server restarted and filed its report");
}

#[test]
fn a_crashed_server_loses_nothing_over_twenty_seeds() {
    let s = scaled("crash-server-47.toml", 2_000);
    let (mut lost_connections, mut replayed) = (0, 0);
    for (seed, o) in common::sweep(&s, 1..21) {
        assert_recovered(&o, &format!("seed {seed}"));
        let c = &o.counters;
        // Server 47 held about 1/48 of the devices, and they all came back.
        assert!((1_500..=2_500).contains(&c.connections_lost), "seed {seed}: {} connections lost", c.connections_lost);
        // Every displaced device reconnected: those connected, and those whose connect was
        // on its way to the server when it died.
        let back = o.latencies.reconnect.len();
        assert!(
            back >= c.connections_lost && back <= c.connections_lost + c.connects_failed,
            "seed {seed}: {back} back of {} displaced",
            c.connections_lost
        );
        assert!(o.latencies.reconnect.max() < 3_000_000, "seed {seed}: backoff of 1 s and a health check");
        // What the routers and fan-outs route again is only what no device had
        // acknowledged when the server died (a few pushes on their way at this load).
        replayed += c.replayed;
        // A reset is noticed at once: sends caught in the crash go again within seconds.
        let summary = wasim_reports::Summary::new(&o, "crash");
        let a = &summary.availability;
        assert!(a.measured >= 0.9999, "seed {seed}: availability {:.5}", a.measured);
        lost_connections += c.connections_lost;
        // The timeline tells one of its devices' story, from the trace, in order.
        let steps = &summary.crashes[0].timeline;
        let at = |what: &str| steps.iter().find(|s| s.what.contains(what)).map(|s| s.at_ms);
        let (noticed, caught_up) = (at("notices its connection is gone"), at("has caught up"));
        assert!(noticed.is_some() && caught_up.is_some(), "seed {seed}: {steps:?}");
        assert!(noticed < caught_up && caught_up < Some(3_000.0), "seed {seed}: {steps:?}");
    }
    assert!(lost_connections > 0);
    assert!(replayed > 0, "over 20 seeds the routers routed again some pushes the dead server held unacknowledged");
}

#[test]
fn without_headroom_the_displaced_devices_wait_for_the_restart() {
    let s = scaled("crash-server-47-no-headroom.toml", 2_000);
    for (seed, o) in common::sweep(&s, 1..6) {
        assert_recovered(&o, &format!("seed {seed}"));
        let c = &o.counters;
        assert!(c.connects_refused > 1_000, "seed {seed}: the full fleet refused them: {}", c.connects_refused);
        // They are back only once server 47 restarts, 10 s after the crash.
        let p50_s = o.latencies.reconnect.value_at_quantile(0.5) as f64 / 1e6;
        assert!(p50_s >= 9.5, "seed {seed}: half reconnected after {p50_s:.1} s");
    }
}

#[test]
fn a_lost_host_is_noticed_by_unanswered_pings() {
    let mut s = scaled("crash-server-47.toml", 1_000);
    for f in &mut s.faults {
        if let wasim_sim::Fault::Crash { detect, .. } = f {
            *detect = wasim_sim::Detect::Timeout;
        }
    }
    for (seed, o) in common::sweep(&s, 1..6) {
        assert_recovered(&o, &format!("seed {seed}"));
        // A heartbeat every 30 s, then a 10 s ping timeout, but the restart at 10 s
        // answers the first heartbeat after it with a reset.
        let h = &o.latencies.reconnect;
        assert!(h.len() > 500, "seed {seed}: {} reconnected", h.len());
        assert!(h.value_at_quantile(0.5) > 5_000_000, "seed {seed}: noticed late: p50 {} µs", h.value_at_quantile(0.5));
        // Meanwhile their sends go nowhere: the ✓ comes only after the reconnect.
        let a = wasim_reports::Summary::new(&o, "crash").availability;
        assert!(a.during.2 < 0.9999 && a.during.2 < a.before.2, "seed {seed}: {a:?}");
    }
}

#[test]
fn the_three_placements_all_recover() {
    use wasim_sim::PlacementPolicy as P;
    for placement in [P::LeastConnections, P::ConsistentHash, P::Random] {
        let mut s = scaled("crash-server-47.toml", 1_000);
        s.balancer.placement = placement;
        let o = wasim_sim::run(&s, &wasim_sim::RunOptions::default());
        assert_recovered(&o, placement.name());
        assert!(o.counters.connections_lost > 500, "{}", placement.name());
    }
}

#[test]
fn a_crash_run_is_deterministic() {
    let s = scaled("crash-server-47.toml", 500);
    let a = wasim_sim::run(&s, &wasim_sim::RunOptions::default());
    let b = wasim_sim::run(&s, &wasim_sim::RunOptions::default());
    assert_eq!(a.counters, b.counters);
    assert_eq!(a.chat_connections_end, b.chat_connections_end);
    assert_eq!(a.latencies.reconnect, b.latencies.reconnect);
    assert_eq!(a.trace, b.trace, "the same device's story");
    assert!(!a.trace.is_empty());
}

#[test]
fn a_server_that_never_comes_back_files_no_report_and_loses_nothing() {
    let mut s = scaled("crash-server-47.toml", 500);
    let total_s = s.total_s();
    for f in &mut s.faults {
        if let wasim_sim::Fault::Crash { at_s, for_s, .. } = f {
            *for_s = total_s - *at_s + 1;
        }
    }
    let o = wasim_sim::run(&s, &wasim_sim::RunOptions::default());
    assert!(o.checks.ok(), "{:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
    assert_eq!(o.silent, vec!["chat_server-47".to_string()]);
    assert_eq!(o.chat_connections_end[47], None);
    let summary = wasim_reports::Summary::new(&o, "crash");
    let table = wasim_reports::render_summary(&summary);
    assert!(table.contains("1 server(s) dead at the end"), "{table}");
}

#[test]
fn compare_placements_runs_the_crash_under_each_policy() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let dir = tmp.path();
    let text = toml::to_string(&scaled("crash-server-47.toml", 300)).expect("a scenario serialises");
    let file = common::scenario_file(dir, "crash.toml", &text);
    let out = common::wasim(&[
        "scenario",
        file.to_str().unwrap(),
        "--compare-placements",
        "--json",
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    let rows = summary["placement_comparison"].as_array().expect("a comparison");
    let names: Vec<&str> = rows.iter().map(|r| r["placement"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["least_connections", "consistent_hash", "random"]);
    assert!(rows.iter().all(|r| r["reconnect_p50_ms"].as_f64().unwrap() > 0.0), "{rows:?}");
    // Without a chat server crash there is nothing to compare: bad input.
    let plain = common::scenario_file(dir, "plain.toml", common::SMALL);
    let out = common::wasim(&["scenario", plain.to_str().unwrap(), "--compare-placements"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("crashes no chat server"));
}
