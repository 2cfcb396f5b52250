//! A recipient whose network is gone gets its messages through the inbox: on reconnect
//! the device fetches everything since its cursor, in id order, and the senders get their
//! delivered receipts.

mod common;
use common::{simulate, small_with};
use wasim_sim::TraceEvent;

/// 100 of 2,000 users (user 0 first) lose their network for `for_s` seconds at t = 3 s.
fn cut(for_s: u64, users_extra: &str) -> String {
    let fault = format!("\n[[faults]]\nkind = \"cut_network\"\nat_s = 3\nfor_s = {for_s}\nusers = 100\n");
    let long = small_with(users_extra, "messages_per_s = 2_000\napp_closes_per_hour = 0", &fault);
    long.replace("duration_s = 6", "duration_s = 12").replace("messages_per_s = 500\n", "")
}

fn events<'a>(trace: &'a [TraceEvent], name: &str) -> Vec<&'a TraceEvent> {
    trace.iter().filter(|e| e.event == name).collect()
}

#[test]
fn a_short_cut_is_caught_up_from_the_unacknowledged_pushes() {
    // The servers do not notice a 4 s cut (their timeout is 45 s): what they pushed into
    // the dead sockets goes back through the inbox when the device reconnects.
    let o = simulate(&cut(4, ""));
    assert!(o.checks.ok(), "{:?}", o.checks);
    assert!(
        (100..=200).contains(&o.counters.reconnects),
        "phones and web clients of 100 users: {}",
        o.counters.reconnects
    );
    assert!(o.counters.fetched > 50, "fetched {}", o.counters.fetched);
    // Back on the same server (rerouted) or on another (taken over and handed over).
    let handed_back = events(&o.trace, "reroute").len() + events(&o.trace, "handover").len();
    assert!(handed_back > 0, "unacknowledged pushes were handed back");
}

#[test]
fn a_long_cut_queues_in_the_inbox_and_is_fetched_in_id_order() {
    // Heartbeats every second and a 3 s timeout: the servers close the silent sockets,
    // so later messages go straight to the inbox.
    let o = simulate(&cut(6, "heartbeat_interval_ms = 1_000\npresence_ttl_ms = 3_000"));
    assert!(o.checks.ok(), "{:?}", o.checks);
    let trace = &o.trace;
    let cut_at = events(trace, "network_cut")[0].at;
    let closed = events(trace, "connection_closed").into_iter().find(|e| e.at > cut_at).expect("server timed out");
    assert!(closed.at.since(cut_at).as_secs_f64() <= 3.5, "closed {:?} after the cut", closed.at.since(cut_at));
    let inboxed: Vec<_> = events(trace, "inbox_add").into_iter().filter(|e| e.at > cut_at && e.user.0 == 0).collect();
    assert!(!inboxed.is_empty(), "messages for user 0 were queued in the inbox");
    let fetched: Vec<u64> = events(trace, "displayed_after_fetch")
        .into_iter()
        .filter(|e| e.user.0 == 0 && e.at > cut_at)
        .map(|e| e.msg.unwrap().0)
        .collect();
    assert!(fetched.len() >= inboxed.len(), "{} fetched, {} queued", fetched.len(), inboxed.len());
    assert!(fetched.windows(2).all(|w| w[0] < w[1]), "shown in id order: {fetched:?}");
    for id in &fetched {
        let acked = trace.iter().any(|e| e.event == "delivered_ack" && e.msg.map(|m| m.0) == Some(*id));
        let seen = trace.iter().any(|e| e.event == "receipt_seen" && e.msg.map(|m| m.0) == Some(*id));
        assert!(acked && seen, "message {id}: delivered ACK {acked}, receipt at the sender {seen}");
    }
}
