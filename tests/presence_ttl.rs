//! Silent loss takes the TTL path: a user whose network is cut is shown offline only when
//! `presence:{user}` expires, between TTL - heartbeat and TTL after the loss; the report
//! says a 1 s SLO cannot cover it.

mod common;
use common::{simulate, small_with};
use wasim_reports::Summary;

#[test]
fn a_cut_user_expires_after_the_ttl_and_watchers_are_told() {
    let text = small_with(
        "chat_open_share = 1.0\nheartbeat_interval_ms = 2_000\npresence_ttl_ms = 3_000",
        "app_closes_per_hour = 0",
        "\n[[faults]]\nkind = \"cut_network\"\nat_s = 3\nfor_s = 4\nusers = 200\n",
    );
    let o = simulate(&text);
    assert!(o.checks.ok(), "{:?}", o.checks);
    let d = &o.latencies.presence_detection;
    assert!(d.len() > 20, "{} detections", d.len());
    // The last heartbeat was 0-2 s before the cut and the key lives 3 s after it; the
    // watcher is told a presence hop and a client link later (the link's tail: 0.6 s).
    assert!(d.min() >= 1_000_000, "detected {} µs after the loss: before TTL - heartbeat", d.min());
    assert!(d.max() <= 3_600_000, "detected {} µs after the loss: after the TTL", d.max());
    let summary = Summary::new(&o, "test.toml");
    assert!(summary.presence_detection_note.contains("cannot cover it"), "{}", summary.presence_detection_note);
}
