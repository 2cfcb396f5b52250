//! A read receipt for a sender who is offline is stored, and shown when the sender
//! reconnects.

mod common;
use common::{simulate, small_with};

#[test]
fn read_receipts_for_offline_senders_are_stored_and_shown_on_reconnect() {
    // Phones close the app about every 20 s and reopen it ~3 s later; everybody reads a
    // message 1 s after it arrives, so senders are often away when the blue ticks come.
    let text = small_with(
        "devices_per_user = { phone = 1.0, web = 0.0 }\nread_receipts_off_share = 0.0",
        "read_delay_ms = { dist = \"constant\", value = 1_000 }\napp_closes_per_hour = 180\napp_closed_ms = { dist = \"constant\", value = 3_000 }",
        "",
    )
    .replace("drain_s = 2", "drain_s = 6");
    let o = simulate(&text);
    let c = &o.counters;
    assert!(c.receipts_stored > 20, "stored {}", c.receipts_stored);
    // Receipts carry no acknowledgement of their own: the few on their way to a sender's
    // phone in the instant its app closes are not shown (counted as unheard).
    let unheard_read = c.reads_sent - c.read_receipts;
    assert!(unheard_read <= c.receipts_unheard, "{unheard_read} read receipts missing, {} unheard", c.receipts_unheard);
    assert!(c.receipts_unheard * 100 < c.reads_sent, "{} unheard of {}", c.receipts_unheard, c.reads_sent);
    assert!(o.checks.ok(), "{:?}", o.checks);
    // A stored receipt waits for the reconnect: seconds, not milliseconds.
    assert!(o.latencies.read_receipt.max() > 1_000_000, "max {} µs", o.latencies.read_receipt.max());
}
