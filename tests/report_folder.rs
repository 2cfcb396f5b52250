//! The report folder is written whole or not at all, and a bad `--out` fails before the run.

mod common;
use common::{scenario_file, stderr, stdout, wasim, SMALL};
use std::path::Path;

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_new_report_leaves_no_file_of_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(dir.path(), "small.toml", SMALL);
    let out = dir.path().join("report");
    let run = |extra: &[&str]| {
        let o = wasim(&[&["scenario", path.to_str().unwrap(), "--out", out.to_str().unwrap()], extra].concat());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    };
    run(&["--trace-user", "0"]);
    assert!(out.join("trace.csv").exists(), "the traced run writes trace.csv");
    run(&[]);
    assert!(!out.join("trace.csv").exists(), "a stale trace.csv survived: {:?}", files_in(&out));
    assert!(out.join("summary.json").exists());
    assert_eq!(files_in(dir.path()), ["report", "small.toml"], "no staging folder is left beside the report");
}

#[test]
fn an_unwritable_out_exits_2_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(dir.path(), "small.toml", SMALL);
    // A folder cannot be made under a file, whoever runs the test (root ignores modes).
    let blocker = scenario_file(dir.path(), "a-file", "");
    let out = blocker.join("report");
    let o = wasim(&["scenario", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("cannot write the report") && err.contains("a-file"), "{err}");
    assert!(stdout(&o).is_empty(), "nothing is simulated or printed first: {}", stdout(&o));
}

#[test]
fn a_folder_holding_other_files_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(dir.path(), "small.toml", SMALL);
    let o = wasim(&["scenario", path.to_str().unwrap(), "--out", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("small.toml") && stderr(&o).contains("refusing"), "{}", stderr(&o));
    assert!(path.exists(), "the user's file is still there");
}

#[test]
fn the_report_folder_holds_plots_of_the_runs_own_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(dir.path(), "small.toml", SMALL);
    let out = dir.path().join("report");
    let o = wasim(&["scenario", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for slo in summary["slos"].as_array().unwrap() {
        let metric = slo["metric"].as_str().unwrap();
        let svg = std::fs::read_to_string(out.join(format!("latency_{metric}.svg"))).expect("a CDF per SLO metric");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{metric}: an SVG document");
        assert!(svg.contains("small, seed 5"), "{metric}: the title names the scenario and seed");
        let samples = slo["samples"].as_u64().unwrap();
        assert!(
            svg.contains(&format!("({samples} samples)")),
            "{metric}: the legend holds the run's {samples} samples"
        );
        let objective = slo["objective_ms"].as_f64().unwrap();
        assert!(svg.contains(&format!("p99 &lt; {objective} ms")), "{metric}: the SLO line");
    }
    let throughput = std::fs::read_to_string(out.join("throughput.svg")).expect("a throughput plot");
    for label in ["sends", "delivered", "simulated time (s)", "per simulated second"] {
        assert!(throughput.contains(label), "throughput.svg lacks {label}");
    }
    let latencies = summary["latencies"].as_array().unwrap();
    let detection = latencies.iter().find(|l| l["name"] == "presence_detection").expect("a detection entry");
    let detected = detection["count"].as_u64().unwrap();
    if detected > 0 {
        let svg = std::fs::read_to_string(out.join("presence_detection.svg")).expect("a presence detection plot");
        assert!(svg.contains(&format!("{detected} samples")), "the plot holds the run's {detected} detections");
    }
    let report = std::fs::read_to_string(out.join("report.md")).expect("a report.md");
    assert!(report.starts_with("# small (seed 5): PASS"), "the verdict first: {}", &report[..80.min(report.len())]);
    for part in ["![throughput.svg](throughput.svg)", "## Tiers and sizing", "## Invariants", "All hold", "## Replay"] {
        assert!(report.contains(part), "report.md lacks {part}");
    }
    assert!(report.contains(summary["replay"].as_str().unwrap()), "the replay command");
    let connections = std::fs::read_to_string(out.join("connections.svg")).expect("a connections plot");
    for server in ["chat_server-0", "chat_server-1", "chat_server-2"] {
        assert!(connections.contains(server), "connections.svg lacks {server}: three servers, a line each");
    }
}
