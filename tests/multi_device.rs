//! Multi-device: with a phone and a web client, a message reaches both devices, each
//! shows it once, and each sends its own delivered receipt.

mod common;
use common::{simulate, small_with};

#[test]
fn every_message_reaches_phone_and_web_with_a_receipt_from_each() {
    let o = simulate(&small_with(
        "devices_per_user = { phone = 1.0, web = 1.0 }\nchat_open_share = 0.0",
        "app_closes_per_hour = 0",
        "",
    ));
    let c = &o.counters;
    assert_eq!(c.connects, 4_000, "2,000 phones and 2,000 web clients");
    assert_eq!(c.deliveries_measured, 2 * c.sends_measured, "each message shown on both devices");
    assert_eq!(c.receipts_measured, 2 * c.sends_measured, "a delivered receipt per device");
    assert_eq!(c.duplicates_dropped, 0);
    assert!(o.checks.ok(), "{:?}", o.checks);
}
