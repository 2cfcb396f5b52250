//! `wasim scenario FILE --seeds N`: each seed's run in a report folder of its own, and the
//! spread over them in seeds.json and seeds.md, the same bytes every time.

mod common;
use common::{scenario_file, stderr, stdout, wasim, SMALL};
use serde_json::Value;
use std::path::Path;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn three_seeds_give_the_spread_of_their_own_values_the_same_bytes_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario_file(dir.path(), "small.toml", SMALL);
    let out = dir.path().join("out");
    let run = || {
        let args = ["--seeds", "3", "--seed", "11", "--target-utilisation", "0.5", "--out", out.to_str().unwrap()];
        wasim(&[&["scenario", file.to_str().unwrap()][..], &args].concat())
    };
    let o = run();
    let report = read_json(&out.join("seeds.json"));
    assert_eq!(report["seeds"], serde_json::json!([11, 12, 13]), "{}", stderr(&o));
    // Each seed's own report, as a single run writes it.
    let summaries: Vec<Value> =
        [11, 12, 13].iter().map(|s| read_json(&out.join(format!("seed-{s}/summary.json")))).collect();
    for (s, seed) in summaries.iter().zip([11, 12, 13]) {
        assert_eq!(s["seed"], seed);
        assert_eq!(s["sizing"]["target_utilisation"], 0.5, "each run sizes to the target asked for");
    }
    let rows = report["rows"].as_array().unwrap();
    let delivery = rows.iter().find(|r| r["label"] == "delivery latency p99").expect("a delivery row");
    for (k, s) in summaries.iter().enumerate() {
        assert_eq!(delivery["values"][k], s["slos"][0]["measured_ms"], "the row holds each seed's own p99");
    }
    for row in rows {
        let values: Vec<f64> = row["values"].as_array().unwrap().iter().filter_map(Value::as_f64).collect();
        let Some(spread) = row["spread"].as_object() else { continue };
        let (min, median, max) =
            (spread["min"].as_f64().unwrap(), spread["median"].as_f64().unwrap(), spread["max"].as_f64().unwrap());
        let (lo, hi) = (spread["median_ci95"][0].as_f64().unwrap(), spread["median_ci95"][1].as_f64().unwrap());
        assert!(min <= lo && lo <= median && median <= hi && hi <= max, "{row}");
        assert_eq!(min, values.iter().copied().fold(f64::INFINITY, f64::min), "{row}");
        assert_eq!(max, values.iter().copied().fold(f64::NEG_INFINITY, f64::max), "{row}");
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(median, sorted[1], "the middle of three: {row}");
    }
    // The pass share is the count of seeds whose own verdict on that SLO is not FAIL.
    let passing = summaries.iter().filter(|s| s["slos"][0]["verdict"] != "FAIL").count() as u64;
    assert_eq!(delivery["seeds_pass"].as_u64(), Some(passing));
    let all = summaries.iter().filter(|s| s["verdict"] == "PASS").count() as u64;
    assert_eq!(report["seeds_pass"].as_u64(), Some(all));
    assert_eq!(o.status.code(), Some(if all == 3 { 0 } else { 1 }), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(&format!("every SLO and invariant: {all}/3 seeds pass")), "{text}");
    // Seed-progress lines on stderr, one per seed.
    assert_eq!(stderr(&o).lines().filter(|l| l.trim_start().starts_with("seed 1")).count(), 3, "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("seeds.md")).unwrap();
    assert!(md.starts_with("# small over 3 seeds (11..=13)") && md.contains("[seed-12](seed-12/report.md)"), "{md}");

    let json_before = std::fs::read(out.join("seeds.json")).unwrap();
    let again = run();
    assert_eq!(again.status.code(), o.status.code());
    assert_eq!(std::fs::read(out.join("seeds.json")).unwrap(), json_before, "seeds.json is byte-identical");
    assert_eq!(std::fs::read_to_string(out.join("seeds.md")).unwrap(), md, "seeds.md is byte-identical");
    assert_eq!(stdout(&again), text, "so is the table");
}

#[test]
fn too_few_seeds_and_options_that_make_no_sense_with_them_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario_file(dir.path(), "small.toml", SMALL);
    let file = file.to_str().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    for args in [
        vec!["--seeds", "0"],
        vec!["--seeds", "1"],
        vec!["--seeds", "many"],
        vec!["--seeds", "1000000"],
        vec!["--seeds", "3", "--compare-placements"],
        vec!["--seeds", "3", "--faults-of-seed", "4"],
        vec!["--seeds", "3", "--trace-user", "0"],
        vec!["--seeds", "3", "--find-max-load"],
        vec!["--jobs", "2"],
    ] {
        let o = wasim(&[&["scenario", file, "--out", out], args.as_slice()].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!Path::new(out).join("seeds.json").exists(), "{args:?} ran nothing");
    }
    // An output folder holding someone else's files is refused before any run.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let o = wasim(&["scenario", file, "--seeds", "2", "--out", theirs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("notes.txt"), "{}", stderr(&o));
    assert!(!theirs.join("seed-5").exists());
}
