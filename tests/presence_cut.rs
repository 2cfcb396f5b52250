//! A mass network cut: 3,000 of 30,000 users lose their network at once while every user
//! watches a contact. Nobody is shown online without a live key, and watchers learn of a
//! silent loss when the key expires: between the TTL less the heartbeat interval and the
//! TTL after the cut, plus the delays of the last refresh and of the notification.

mod common;
use common::{parse, sweep};

const CUT: &str = r#"
name = "presence-cut"
duration_s = 100
warmup_s = 5
drain_s = 10

[users]
concurrent = 30_000
chat_open_share = 1.0

[workload]
messages_per_s = 1_000

[[faults]]
kind = "cut_network"
at_s = 40
for_s = 60
users = 3_000
"#;

#[test]
fn a_mass_cut_is_detected_within_the_ttl_and_nobody_else_is_shown_wrongly() {
    // Cut at 40 s, more than an interval after every device connected: the last refresh
    // before it is a heartbeat, at a phase uniform over the 30 s interval.
    for (seed, o) in sweep(&parse(CUT), 201..205) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", o.checks.violations);
        let d = &o.latencies.presence_detection;
        assert!(d.len() > 2_000, "seed {seed}: {} detections", d.len());
        let (ttl, interval) = (45_000_000, 30_000_000);
        assert!(d.min() > ttl - interval - 500_000, "seed {seed}: detected {} µs after the cut", d.min());
        assert!(d.max() < ttl + 1_000_000, "seed {seed}: detected {} µs after the cut (TTL 45 s)", d.max());
        // Uniform over (15, 45] s: the median near 30 s (a little later for users whose web
        // client refreshed the key after the phone did).
        let p50 = d.value_at_quantile(0.5);
        assert!((29_000_000..34_000_000).contains(&p50), "seed {seed}: median {p50} µs");
    }
}
