//! Network faults end to end: a clogged link holds what crosses it until it clears (late,
//! in order, nothing lost), a latency spike slows a link class, packet loss makes TCP
//! retransmit (late by its timeouts, nothing lost); bad links are refused.

mod common;

fn scenario(extra: &str) -> String {
    common::small_with("", "", &format!("{extra}\n")).replace("duration_s = 6", "duration_s = 14")
}

const CLOG: &str = "[[faults]]\nkind = \"clog\"\nbetween = \"router\"\nand = \"chat_server-1\"\nat_s = 4\nfor_s = 3\n";
const SPIKE: &str = "[[faults]]\nkind = \"latency\"\nlink = \"client_server\"\nadd_ms = 400\nat_s = 9\nfor_s = 2\n";

#[test]
fn a_clogged_link_delays_and_a_latency_spike_slows_but_nothing_is_lost() {
    let s = common::parse(&scenario(&format!("{CLOG}{SPIKE}")));
    for (seed, o) in common::sweep(&s, 1..11) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        let during = &o.latencies.delivery_during;
        assert!(during.max() >= 2_000_000, "seed {seed}: forwards held up to 3 s: max {} µs", during.max());
        let after = &o.latencies.delivery_after;
        assert!(after.value_at_quantile(0.99) < 500_000, "seed {seed}: over once the faults clear");
        let (p90_during, p90_after) = (during.value_at_quantile(0.9), after.value_at_quantile(0.9));
        assert!(p90_during > p90_after + 300_000, "seed {seed}: the spike adds 400 ms: {p90_during} vs {p90_after} µs");
    }
}

const LOSS: &str = "[[faults]]\nkind = \"packet_loss\"\nlink = \"client_server\"\nshare = 0.1\nat_s = 4\nfor_s = 6\n";

#[test]
fn packet_loss_delays_by_retransmission_timeouts_and_loses_nothing() {
    let s = common::parse(&scenario(LOSS));
    for (seed, o) in common::sweep(&s, 1..11) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        // A message crosses two client links: about one in five loses a packet, and waits
        // out at least one 200 ms timeout; one in a hundred loses two.
        let during = &o.latencies.delivery_during;
        let (p50, p95, p99) =
            (during.value_at_quantile(0.5), during.value_at_quantile(0.95), during.value_at_quantile(0.99));
        let after = &o.latencies.delivery_after;
        assert!(p95 > after.value_at_quantile(0.95) + 150_000, "seed {seed}: p95 {p95} µs");
        assert!(p50 < after.value_at_quantile(0.5) + 50_000, "seed {seed}: most packets get through: {p50} µs");
        assert!(p99 >= 400_000, "seed {seed}: p99 {p99} µs");
        assert!(after.value_at_quantile(0.99) < 500_000, "seed {seed}: over once the loss ends");
    }
}

#[test]
fn network_faults_name_real_links() {
    let refused = |fault: &str, says: &str| {
        let e = wasim_sim::Scenario::parse(&scenario(fault), std::path::Path::new("n.toml"), "n").unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    };
    refused(&CLOG.replace("\"router\"", "\"routers\""), "names no processes");
    refused(&CLOG.replace("chat_server-1", "chat_server-7"), "numbered 0 to 2");
    refused(&SPIKE.replace("client_server", "wifi"), "not a link class");
    refused(&SPIKE.replace("add_ms = 400", "add_ms = 0"), "above 0");
    refused(&CLOG.replace("between = \"router\"\n", ""), "needs `between` and `and`");
    refused(&format!("{CLOG}link = \"in_datacenter\"\n"), "nothing else");
    refused(&LOSS.replace("share = 0.1", "share = 0.5"), "at most 0.3");
    refused(&LOSS.replace("client_server", "lan"), "not a link class");
    refused(&LOSS.replace("share = 0.1\n", ""), "needs `link`");
}
