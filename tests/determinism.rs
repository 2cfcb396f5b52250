//! The same scenario and seed give byte-identical outputs; different seeds differ.

mod common;
use common::{parse, scenario_file, wasim, SMALL};
use std::path::Path;

fn run_to(dir: &Path, scenario: &Path, seed: &str, out: &str) -> std::path::PathBuf {
    let out_dir = dir.join(out);
    let args = ["scenario", scenario.to_str().unwrap(), "--seed", seed, "--out", out_dir.to_str().unwrap()];
    let o = wasim(&[&args[..], &["--trace-user", "7"]].concat());
    assert!(o.status.code() == Some(0), "run failed: {}", common::stderr(&o));
    out_dir
}

#[test]
fn same_seed_gives_byte_identical_report_files() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path(), "small.toml", SMALL);
    let a = run_to(dir.path(), &scenario, "11", "a");
    let b = run_to(dir.path(), &scenario, "11", "b");
    for file in ["summary.json", "timeseries.csv", "delivery.hgrm", "sent_ack.hgrm", "receipt.hgrm", "trace.csv"] {
        let (x, y) = (std::fs::read(a.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap());
        assert!(!x.is_empty(), "{file} is empty");
        assert!(x == y, "{file} differs between two runs with the same seed");
    }
}

#[test]
fn different_seeds_give_different_results() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path(), "small.toml", SMALL);
    let a = run_to(dir.path(), &scenario, "1", "a");
    let b = run_to(dir.path(), &scenario, "2", "b");
    let x: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("summary.json")).unwrap()).unwrap();
    let y: serde_json::Value = serde_json::from_slice(&std::fs::read(b.join("summary.json")).unwrap()).unwrap();
    assert_eq!(x["seed"], 1);
    assert_eq!(y["seed"], 2);
    assert_ne!(x["latencies"], y["latencies"], "two seeds produced the same latencies");
    assert_ne!(x["counters"]["sends"], y["counters"]["sends"]);
}

#[test]
fn madsim_determinism_check_passes() {
    // madsim runs the simulation twice and checks that every random draw of its own
    // scheduler happens in the same order both times.
    madsim::runtime::Runtime::check_determinism(3, madsim::Config::default(), || async {
        let outcome = wasim_sim::simulate(parse(SMALL), 3, None).await;
        assert!(outcome.counters.sends > 0);
    });
}
