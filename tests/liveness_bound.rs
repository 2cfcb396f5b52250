//! The in-flight bound of invariants 1 and 8 allows for the slowest hop the run drew: a
//! heavy-tailed link (lognormal client latency) now and then draws a hop many times its
//! p99, which is legitimate, and a catch-up waiting on it must not be called stuck (a sweep
//! found a FetchDone drawn 14.9 s late against a 12.4 s bound).

mod common;

#[test]
fn the_bound_covers_the_slowest_hop_drawn() {
    let text =
        common::small_with("", "", "[network]\nclient_server_ms = { dist = \"lognormal\", p50 = 60, p99 = 600 }\n");
    let outcome = common::simulate(&text);
    let [client_us, dc_us] = outcome.slowest_hop_us;
    assert!(client_us > 600_000, "thousands of client hops from a heavy tail reach past its p99: {client_us} µs");
    assert!(dc_us > 0);
    let p99 = outcome.scenario.network.client_server_ms.p99();
    let dc_p99 = outcome.scenario.network.in_datacenter_ms.p99();
    let backlog_ms: u64 = outcome.tiers.iter().map(|t| t.backlog_end.wait_us).sum::<u64>() / 1_000;
    // 10 s, three client links at p99 and the slowest drawn, seven datacenter hops at p99
    // and the slowest drawn, and the backlogs.
    let expected_ms = 10_000.0
        + 3.0 * p99
        + client_us as f64 / 1e3
        + 7.0 * dc_p99
        + (dc_us as f64 / 1e3).max(dc_p99)
        + backlog_ms as f64;
    let bound_ms = outcome.checks.in_flight.bound_ms as f64;
    assert!((bound_ms - expected_ms).abs() <= 2.0, "bound {bound_ms} ms, expected {expected_ms} ms");
    assert!(outcome.checks.violations.is_empty(), "{:?}", outcome.checks.violations);
}
