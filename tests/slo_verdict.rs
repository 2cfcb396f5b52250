//! The exit code follows the SLO verdict: 0 when it holds, 1 when it fails.

mod common;
use common::{scenario_file, stdout, wasim, SMALL};

#[test]
fn a_slow_network_fails_the_delivery_slo_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let slow = format!("{SMALL}\n[network]\nclient_server_ms = {{ dist = \"lognormal\", p50 = 200, p99 = 900 }}\n");
    let path = scenario_file(dir.path(), "slow.toml", &slow);
    let out = wasim(&["scenario", path.to_str().unwrap(), "--out", dir.path().join("o").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAIL"));
}

#[test]
fn the_baseline_passes_and_reports_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = common::repo_root().join("scenarios/baseline.toml");
    let out = wasim(&["scenario", baseline.to_str().unwrap(), "--out", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    for expected in ["seed 1", "delivery latency", "PASS", "simulated s per wall s", "events per wall s", "Throughput"]
    {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["verdict"], "PASS");
    let p99 = summary["slos"][0]["measured_ms"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 500.0, "baseline delivery p99 {p99} ms");
    assert!(dir.path().join("timing.json").exists());
}

#[test]
fn json_flag_prints_the_summary_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(dir.path(), "small.toml", SMALL);
    let out = wasim(&[
        "scenario",
        path.to_str().unwrap(),
        "--json",
        "--seed",
        "9",
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON");
    assert_eq!(v["seed"], 9);
    assert_eq!(v["replay"], format!("wasim scenario {} --seed 9", path.display()));
}
