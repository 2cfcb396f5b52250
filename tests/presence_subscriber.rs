//! Subscriber-based presence: a watcher with the chat open is told of a change within the
//! 1 s SLO; nobody else is.

mod common;
use common::{simulate, small_with};

fn run(chat_open_share: &str) -> wasim_sim::Outcome {
    // Every phone closes the app about once a minute and comes back after ~2 s.
    let workload = "app_closes_per_hour = 60\napp_closed_ms = { dist = \"exponential\", mean = 2_000 }";
    simulate(&small_with(&format!("chat_open_share = {chat_open_share}"), workload, ""))
}

#[test]
fn watchers_are_notified_within_the_slo() {
    let o = run("1.0");
    let p = &o.latencies.presence;
    assert!(p.len() > 100, "{} status changes reached watchers", p.len());
    assert!(p.value_at_quantile(0.99) < 1_000_000, "p99 {} µs", p.value_at_quantile(0.99));
    assert!(o.checks.ok(), "{:?}", o.checks);
}

#[test]
fn nobody_without_the_chat_open_is_notified() {
    let o = run("0.0");
    assert!(o.counters.reconnects > 100, "status changes happened: {}", o.counters.reconnects);
    assert_eq!(o.counters.presence_updates, 0);
}
