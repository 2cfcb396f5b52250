//! The 1:1 send path end to end: every message sent in the window is acknowledged,
//! delivered and receipted, at latencies the SLO accepts.

mod common;
use common::{send_path_only, simulate};
use wasim_sim::NodeKind;

#[test]
fn every_message_is_acked_delivered_and_receipted() {
    let outcome = simulate(&send_path_only());
    let c = &outcome.counters;
    assert_eq!(c.connects, 2_000, "every user connected");
    assert_eq!(c.connects_refused, 0);
    // 500 msg/s for 6 s: a Poisson count near 3,000.
    assert!((2_700..3_300).contains(&c.sends_measured), "{}", c.sends_measured);
    assert_eq!(c.sent_acks_measured, c.sends_measured, "every send got its ✓");
    assert_eq!(c.deliveries_measured, c.sends_measured, "every send reached the recipient");
    assert_eq!(c.receipts_measured, c.sends_measured, "every send got its ✓✓");
    assert_eq!(outcome.latencies.delivery.len(), c.deliveries_measured);
    assert!(outcome.checks.ok(), "{:?}", outcome.checks);
}

#[test]
fn latencies_are_ordered_as_the_path_implies() {
    let outcome = simulate(&send_path_only());
    let l = &outcome.latencies;
    let p50 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.5);
    // Both the ✓ and the delivery cross the client link twice; delivery adds the Kafka,
    // router and session-lookup hops, so its median is later.
    assert!(p50(&l.delivery) > p50(&l.sent_ack), "{} vs {}", p50(&l.delivery), p50(&l.sent_ack));
    // Two client hops at a 30 ms median each: the delivery median is tens of ms.
    assert!((30_000..150_000).contains(&p50(&l.delivery)), "{}", p50(&l.delivery));
    assert!(l.delivery.value_at_quantile(0.99) < 500_000, "delivery p99 within the SLO");
}

#[test]
fn every_tier_did_work_in_proportion() {
    let outcome = simulate(&send_path_only());
    let tier = |k: NodeKind| outcome.tiers.iter().find(|t| t.kind == k).unwrap();
    let sends = outcome.counters.sends_measured as f64;
    // Each message: RF (3) replica writes, one Kafka append, one route-or-inbox; receipts
    // go straight to the sender's server without a lookup, and each delivered or read ACK
    // writes the row's status on the RF replicas.
    let ratio = |k: NodeKind, per_msg: f64| tier(k).served as f64 / (sends * per_msg);
    let c = &outcome.counters;
    let acks_per_msg = (c.deliveries_measured + c.read_receipts) as f64 / sends;
    let cassandra = 3.0 + 3.0 * acks_per_msg;
    assert!((0.9..1.1).contains(&ratio(NodeKind::Cassandra, cassandra)), "{}", ratio(NodeKind::Cassandra, cassandra));
    assert!((0.9..1.2).contains(&ratio(NodeKind::Kafka, 1.0)), "{}", ratio(NodeKind::Kafka, 1.0));
    assert!((0.9..1.1).contains(&ratio(NodeKind::Redis, 1.0)), "{}", ratio(NodeKind::Redis, 1.0));
    assert_eq!(tier(NodeKind::ChatServer).gauge_end, 2_000, "connections held at the end");
    assert_eq!(tier(NodeKind::Kafka).gauge_end, 0, "routers committed everything");
    assert!(tier(NodeKind::Cassandra).utilisation > 0.0);
}
