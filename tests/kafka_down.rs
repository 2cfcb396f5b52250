//! A Kafka broker down, end to end, on a scaled-down copy of
//! scenarios/kafka-broker-down.toml: its partitions wait for the election, producers
//! retry, the new leaders push again from the routers' commits and the routers route it
//! again (the devices show it once); nothing acknowledged is lost, and the broker takes
//! its partitions back. Then a router crashes: the consumer group gives its partitions to
//! the others after the session timeout, and back when it restarts.

mod common;
use wasim_sim::Scenario;

fn scaled(users: u64) -> Scenario {
    common::shipped_scaled("kafka-broker-down.toml", users)
}

#[test]
fn a_broker_down_delays_its_partitions_and_loses_nothing() {
    let s = scaled(20_000);
    for (seed, o) in common::sweep(&s, 1..21) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        let c = &o.counters;
        assert!(c.records_pushed_again > 0, "seed {seed}: the new leaders pushed again what the routers had");
        assert_eq!(c.partitions_moved, 6, "seed {seed}: router 2's 3 partitions moved away and back");
        let a = wasim_reports::Summary::new(&o, "k").availability;
        assert!(a.during.2 < a.before.2, "seed {seed}: the ✓ waited for the election: {a:?}");
        assert_eq!(a.after.2, 1.0, "seed {seed}: {a:?}");
    }
}
