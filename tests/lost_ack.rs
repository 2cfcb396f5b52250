//! A delivered ACK lost in transit is sent again on the next heartbeat (the server pushes
//! what is still unacknowledged again; the device shows it once and acknowledges it
//! again), so every sender still gets its ✓✓.

mod common;
use common::{simulate, small_with};

#[test]
fn lost_delivered_acks_are_resent_and_every_sender_gets_its_receipt() {
    let text = small_with(
        "devices_per_user = { phone = 1.0, web = 0.0 }\nheartbeat_interval_ms = 1_000\npresence_ttl_ms = 3_000",
        "app_closes_per_hour = 0",
        "\n[[faults]]\nkind = \"lose_delivered_acks\"\nat_s = 3\nfor_s = 3\nshare = 0.5\n",
    );
    let o = simulate(&text);
    let c = &o.counters;
    assert!(c.acks_lost > 300, "about half of 1,500 ACKs lost, got {}", c.acks_lost);
    assert!(c.acks_resent >= c.acks_lost, "{} resent for {} lost", c.acks_resent, c.acks_lost);
    assert_eq!(c.double_ticks_measured, c.sends_measured, "every message got its ✓✓ in the end");
    assert!(o.checks.ok(), "{:?}", o.checks);
    assert_eq!(c.duplicates_dropped, c.acks_resent, "each repeat shown once, acknowledged again");
}

#[test]
fn without_loss_nothing_is_resent() {
    let text = small_with("devices_per_user = { phone = 1.0, web = 0.0 }", "app_closes_per_hour = 0", "");
    let c = simulate(&text).counters;
    assert_eq!((c.acks_lost, c.acks_resent), (0, 0));
}
