//! Fault windows are in the report: summary.json lists each fault with its target and its
//! window, and timeseries.csv marks the seconds each was active, for plots to shade.

mod common;
use common::{scenario_file, small_with, wasim};

#[test]
fn each_fault_window_is_in_the_summary_and_in_the_timeseries() {
    let text = small_with("", "", "")
        + "\n[[faults]]\nkind = \"cut_network\"\nat_s = 3\nfor_s = 2\nusers = 50\n"
        + "\n[[faults]]\nkind = \"lose_delivered_acks\"\nat_s = 4\nfor_s = 3\nshare = 0.25\n";
    let dir = tempfile::tempdir().unwrap();
    let file = scenario_file(dir.path(), "faults.toml", &text);
    let out = dir.path().join("out");
    let run = wasim(&["scenario", file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(run.status.code().is_some_and(|c| c < 2), "{}", String::from_utf8_lossy(&run.stderr));

    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let windows = summary["fault_windows"].as_array().unwrap();
    let w = |i: usize, key: &str| windows[i][key].clone();
    assert_eq!(windows.len(), 2);
    assert_eq!((w(0, "kind"), w(0, "from_s"), w(0, "until_s")), ("cut_network".into(), 3.into(), 5.into()));
    assert_eq!(w(0, "target"), "50 users' networks");
    assert_eq!((w(1, "kind"), w(1, "from_s"), w(1, "until_s")), ("lose_delivered_acks".into(), 4.into(), 7.into()));
    assert_eq!(w(1, "target"), "25.0% of delivered ACKs");

    let csv = std::fs::read_to_string(out.join("timeseries.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with(",faults_active"));
    let active: Vec<(u64, String)> = lines
        .map(|l| {
            let (second, rest) = l.split_once(',').unwrap();
            (second.parse().unwrap(), rest.rsplit(',').next().unwrap().to_string())
        })
        .collect();
    let at = |s: u64| active.iter().find(|(t, _)| *t == s).map(|(_, a)| a.as_str()).unwrap();
    assert_eq!(at(2), "");
    assert_eq!(at(3), "0:cut_network");
    assert_eq!(at(4), "0:cut_network;1:lose_delivered_acks");
    assert_eq!(at(6), "1:lose_delivered_acks");
    assert_eq!(at(7), "");
}
