//! `wasim estimate`: the card's table from the card's inputs and from a scenario's.

mod common;
use common::{scenario_file, stderr, stdout, wasim, SMALL};

#[test]
fn the_cards_table_recomputes_every_row_and_flags_its_slips() {
    let out = wasim(&["estimate", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let row = |name: &str| json["rows"].as_array().unwrap().iter().find(|r| r["component"] == name).unwrap().clone();
    assert_eq!(row("Chat servers")["value"].as_f64(), Some(1_000.0));
    assert_eq!(row("Cassandra nodes")["value"].as_f64(), Some(548.0));
    assert!(row("Kafka throughput")["flag"].as_str().unwrap().contains("without the ×3 replicas"));
    assert_eq!(row("Session store (Redis)")["flag"], serde_json::Value::Null);
    assert_eq!(json["transports"].as_array().unwrap().len(), 3);
    for format in ["table", "md", "csv"] {
        let out = wasim(&["estimate", "--format", format]);
        assert!(out.status.success() && stdout(&out).contains("Presence writes"), "{format}");
    }
}

#[test]
fn a_scenario_moves_the_rows_and_a_bad_one_is_refused() {
    let dir = tempfile_dir();
    let file = scenario_file(&dir, "small.toml", &SMALL.replace("concurrent = 2_000", "concurrent = 250_000"));
    let out = wasim(&["estimate", file.to_str().unwrap(), "--format", "csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let chat = text.lines().find(|l| l.starts_with("Chat servers")).expect("a chat server row");
    assert!(chat.contains(",3,"), "ceil(250K / 100K) = 3: {chat}");
    let bad = scenario_file(&dir, "bad.toml", "name = \"bad\"\n[users]\nconcurrent = \"many\"\n");
    let out = wasim(&["estimate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("concurrent"), "{}", stderr(&out));
    assert_eq!(wasim(&["estimate", "--format", "xml"]).status.code(), Some(2));
}

#[test]
fn a_runs_measured_load_goes_beside_the_predicted_one() {
    let dir = tempfile_dir().join("run");
    let file = scenario_file(&tempfile_dir(), "run.toml", SMALL);
    let out = wasim(&["scenario", file.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", stderr(&out));
    let out = wasim(&["estimate", file.to_str().unwrap(), "--run", dir.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let tiers = json["tiers"].as_array().expect("tiers with a scenario");
    let redis = tiers.iter().find(|t| t["tier"] == "redis_session").expect("a session tier");
    let (predicted, measured) =
        (redis["ops_per_s_per_node"].as_f64().unwrap(), redis["measured_ops_per_s_per_node"].as_f64().unwrap());
    assert!((measured / predicted - 1.0).abs() < 0.25, "predicted {predicted}, measured {measured}");
    assert!(redis["sojourn_ms_p99"].as_f64().unwrap() > redis["sojourn_ms_mean"].as_f64().unwrap());
    let nowhere = wasim(&["estimate", file.to_str().unwrap(), "--run", "/nonexistent/run"]);
    assert_eq!(nowhere.status.code(), Some(2));
    assert!(stderr(&nowhere).contains("summary.json"), "{}", stderr(&nowhere));
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wasim-estimate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
