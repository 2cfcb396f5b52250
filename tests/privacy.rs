//! Privacy: a user can turn read receipts off, and a user hiding last-seen never reveals it.

mod common;
use common::{simulate, small_with};

fn run(users: &str) -> wasim_sim::Outcome {
    simulate(&small_with(users, "read_delay_ms = { dist = \"constant\", value = 500 }\napp_closes_per_hour = 600", ""))
}

#[test]
fn read_receipts_turned_off_are_never_sent() {
    let on = run("read_receipts_off_share = 0.0").counters;
    assert!(on.read_receipts > 1_000, "{}", on.read_receipts);
    let off = run("read_receipts_off_share = 1.0");
    assert!(off.counters.deliveries_measured > 1_000);
    assert_eq!((off.counters.reads_sent, off.counters.read_receipts), (0, 0));
    assert!(off.checks.ok(), "{:?}", off.checks);
}

#[test]
fn hidden_last_seen_is_never_shown() {
    let shown = run("chat_open_share = 1.0\nhide_last_seen_share = 0.0").counters;
    assert!(shown.last_seen_shown > 50, "{}", shown.last_seen_shown);
    let hidden = run("chat_open_share = 1.0\nhide_last_seen_share = 1.0");
    assert!(hidden.counters.presence_updates > 100, "watchers were told of changes");
    assert_eq!(hidden.counters.last_seen_shown, 0);
    assert!(hidden.checks.ok(), "{:?}", hidden.checks);
}
