//! A Cassandra node down, end to end, on a scaled-down copy of
//! scenarios/cassandra-node-down.toml: quorum writes and reads go on with one replica of
//! three down; with two down the writes of their partitions are retried until one is back
//! (the ✓ waits, nothing acknowledged is lost); the node that rejoins repairs what it
//! missed; a node still down at the end keeps its rows on disk.

mod common;
use wasim_sim::Scenario;

fn scaled(users: u64) -> Scenario {
    common::shipped_scaled("cassandra-node-down.toml", users)
}

#[test]
fn quorums_hold_through_one_replica_down_and_writes_wait_out_two() {
    let s = scaled(20_000);
    for (seed, o) in common::sweep(&s, 1..21) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        let c = &o.counters;
        assert!(c.writes_retried > 0, "seed {seed}: partitions on nodes 2 and 3 lost their quorum");
        assert!(c.rows_repaired > 0, "seed {seed}: node 2 repaired what it missed");
        let a = wasim_reports::Summary::new(&o, "c").availability;
        assert!(a.during.2 < a.before.2, "seed {seed}: the ✓ waited: {a:?}");
        assert_eq!(a.after.2, 1.0, "seed {seed}: and recovered: {a:?}");
    }
}

#[test]
fn a_node_down_at_the_end_keeps_its_rows() {
    let mut s = scaled(10_000);
    s.faults.truncate(1);
    let total_s = s.total_s();
    if let wasim_sim::Fault::Crash { for_s, at_s, .. } = &mut s.faults[0] {
        *for_s = total_s - *at_s + 1; // never back
    }
    let o = wasim_sim::run(&s, &wasim_sim::RunOptions::default());
    assert!(o.checks.ok(), "{:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
    assert_eq!(o.silent, vec!["cassandra-2".to_string()], "dead at the end: no report");
}
