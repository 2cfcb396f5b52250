//! `wasim scenario FILE --find-max-load`: the search for the highest load at which every SLO
//! holds ends with a passing load and a failing one just above it, and draws the curve.

mod common;
use common::{scenario_file, small_with, stderr, stdout, wasim};
use serde_json::Value;

/// `SMALL` with one Cassandra worker per node: its writes saturate between 1x and 2x the
/// scenario's 500 msg/s, so the search brackets a knee in a few sub-second runs.
fn saturating() -> String {
    small_with("", "", "\n[workers]\ncassandra = 1\n")
}

#[test]
fn the_search_brackets_the_knee_and_draws_the_curve() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario_file(dir.path(), "saturating.toml", &saturating());
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let o = wasim(&["scenario", file.to_str().unwrap(), "--find-max-load", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "a knee was found: {}", stderr(&o));
    assert!(started.elapsed().as_secs() < 60, "the search ends");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("knee.json")).unwrap()).unwrap();
    assert_eq!(report["end"]["step"], "found", "{report}");
    let (pass, fail) = (report["end"]["pass"].as_u64().unwrap(), report["end"]["fail"].as_u64().unwrap());
    assert!(pass < fail && (fail - pass) as f64 <= 0.05 * pass as f64, "{pass}..{fail} within 5%");
    let runs = report["runs"].as_array().unwrap();
    assert!(runs.len() <= 12, "{} runs", runs.len());
    let run = |load: u64| runs.iter().find(|r| r["load_msg_per_s"] == load).expect("a load tried");
    assert_eq!(run(pass)["pass"], true);
    // The next load tried above the knee failed, and every run's report folder is there.
    let above = runs.iter().find(|r| r["load_msg_per_s"].as_u64().unwrap() > pass).expect("a load above the knee");
    assert_eq!(above["load_msg_per_s"].as_u64(), Some(fail));
    assert_eq!(above["pass"], false);
    for r in runs {
        let summary = out.join(r["dir"].as_str().unwrap()).join("summary.json");
        let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert_eq!(s["throughput"]["offered_msg_per_s"], r["offered_msg_per_s"], "{}", summary.display());
        assert_eq!(s["verdict"] == "PASS", r["pass"] == true);
        assert!(s["replay"].as_str().unwrap().contains("--load-scale"), "{}", s["replay"]);
    }
    assert_eq!(report["knee"]["offered_msg_per_s"].as_u64(), Some(pass), "no groups: all offered load is 1:1");
    assert_eq!(report["first_failure"]["busiest_tier"]["tier"], "cassandra", "the tier given one worker saturates");
    let svg = std::fs::read_to_string(out.join("knee.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("offered load (msg/s)") && svg.contains("knee:") && svg.contains("SLO delivery"));
    let md = std::fs::read_to_string(out.join("knee.md")).unwrap();
    assert!(md.contains("![knee.svg](knee.svg)") && md.contains("first to fail"), "{md}");
    let table = stdout(&o);
    assert!(table.contains("knee found") && table.contains("cassandra"), "{table}");
}

#[test]
fn a_load_scale_scales_a_single_run_and_its_replay_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario_file(dir.path(), "saturating.toml", &saturating());
    let out = dir.path().join("out");
    let o =
        wasim(&["scenario", file.to_str().unwrap(), "--load-scale", "0.5", "--json", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(s["throughput"]["offered_msg_per_s"], 250);
    assert!(s["replay"].as_str().unwrap().ends_with("--load-scale 0.5"), "{}", s["replay"]);
    // Past the limits of a scenario (10 msg/s a user), or nonsense: bad input.
    for bad in ["100", "0", "-1", "nan"] {
        let o = wasim(&["scenario", file.to_str().unwrap(), "--load-scale", bad, "--out", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
    let o = wasim(&["scenario", file.to_str().unwrap(), "--find-max-load", "--load-scale", "2"]);
    assert_eq!(o.status.code(), Some(2), "the search sets the load itself");
    let o = wasim(&["scenario", file.to_str().unwrap(), "--knee-tolerance", "5"]);
    assert_eq!(o.status.code(), Some(2), "a knee option without the search");
}
