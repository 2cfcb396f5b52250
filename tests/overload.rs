//! Past capacity: the run warns before it starts (naming the tier and the nodes that would
//! bring it to 70%), reports utilisation no higher than 100% with the backlog beside it,
//! and judges as lost only what no queue still holds: work queued at the end is in flight.

mod common;

/// `SMALL` with one Cassandra worker per node at four times the load: each node is offered
/// 3,000 writes/s of about 0.6 ms each (180%): the backlog outlasts the drain.
fn overloaded() -> String {
    common::small_with("", "", "\n[workers]\ncassandra = 1\n").replace("messages_per_s = 500", "messages_per_s = 3_000")
}

#[test]
fn an_overloaded_tier_is_warned_of_and_reported_with_its_backlog_not_as_loss() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::scenario_file(dir.path(), "overloaded.toml", &overloaded());
    let out_dir = dir.path().join("out");
    let out = common::wasim(&["scenario", file.to_str().unwrap(), "--json", "--out", out_dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: cassandra is predicted at"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(warning.contains("nodes would bring it to 70%"), "{warning}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    let cassandra = summary["tiers"].as_array().unwrap().iter().find(|t| t["tier"] == "cassandra").unwrap();
    let util = cassandra["utilisation_max"].as_f64().unwrap();
    assert!(util > 0.95 && util <= 1.0, "busy all the time, never more than all the time: {util}");
    assert!(cassandra["utilisation_predicted"].as_f64().unwrap() > 1.0);
    let backlog = &cassandra["backlog_window_end"];
    assert!(backlog["queued"].as_u64().unwrap() > 100 && backlog["wait_us"].as_u64().unwrap() > 100_000, "{backlog}");
    // Nothing is lost: what the queues still hold at the end is in flight.
    let inv = &summary["invariants"];
    assert_eq!(inv["violations"].as_array().unwrap().len(), 0, "{inv}");
    // Acknowledged messages still on their way at the end (on the wire, or waiting in a queue
    // behind the backlog) are owed but in flight, never counted as lost.
    let owed = &inv["in_flight"];
    let in_flight = owed["owed_acked_recently"].as_u64().unwrap() + owed["owed_in_transit"].as_u64().unwrap();
    assert!(in_flight > 0, "work was still on its way at the end: {inv}");
    // Every other tier keeps up: only the overloaded one warns.
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("warning:") && l.contains("of capacity")).count(),
        1,
        "{stderr}"
    );
}
