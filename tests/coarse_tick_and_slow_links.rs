//! Two corners the input fuzz found: a 10 ms tick (hops far shorter than it, so work is
//! noticed ticks after its time) must keep each device's socket in order; and a client link
//! with an extreme tail (p99 fifty times the median: pushes that take tens of seconds) must
//! not turn a message still on the wire at the end into a loss.

mod common;

fn baseline_with(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(common::repo_root().join("scenarios/baseline.toml")).expect("baseline");
    assert!(text.contains(from), "{from}");
    text.replace(from, to)
}

#[test]
fn a_coarse_tick_keeps_every_socket_in_order() {
    let o = common::simulate(&baseline_with("tick_us = 1_000", "tick_us = 10_000"));
    assert!(o.checks.ok(), "{:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
}

#[test]
fn a_push_still_on_a_slow_link_at_the_end_is_in_flight() {
    let o = common::simulate(&baseline_with("p50 = 30, p99 = 150", "p50 = 30, p99 = 1500"));
    assert!(o.checks.ok(), "{:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
    assert!(o.checks.in_flight.owed_in_transit > 0, "{:?}", o.checks.in_flight);
}
