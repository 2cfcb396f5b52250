//! The report's time series, diagrams and sizing hold the run's own numbers: percentiles
//! over time bracket the run's percentile, utilisation over time averages to the
//! window's, the architecture's flows match the operations served, the receipt machine's
//! counts fit the sends, and each sizing row follows its formula.

mod common;
use common::{scenario_file, stderr, wasim, SMALL};
use std::path::Path;

struct Run {
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    summary: serde_json::Value,
}

fn run(text: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(dir.path(), "small.toml", text);
    run_file(dir, &path, extra)
}

fn run_file(dir: tempfile::TempDir, path: &Path, extra: &[&str]) -> Run {
    let out = dir.path().join("report");
    let mut args = vec!["scenario", path.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(extra);
    let o = wasim(&args);
    // A planted bug may fail an invariant (exit 1); the report is written either way.
    let codes: &[i32] = if extra.contains(&"--plant") { &[0, 1] } else { &[0] };
    assert!(o.status.code().is_some_and(|c| codes.contains(&c)), "{}", stderr(&o));
    let summary = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    Run { _dir: dir, out, summary }
}

fn svg(out: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{name}: an SVG document");
    assert!(text.contains("small, seed 5"), "{name}: the title names the scenario and seed");
    text
}

/// timeseries.csv as a header and rows of cells.
fn timeseries(out: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(out.join("timeseries.csv")).unwrap();
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r.records().map(|row| row.unwrap().iter().map(String::from).collect()).collect();
    (header, rows)
}

fn column(header: &[String], rows: &[Vec<String>], name: &str, seconds: std::ops::Range<usize>) -> Vec<f64> {
    let k = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}: {header:?}"));
    rows[seconds].iter().filter(|r| !r[k].is_empty()).map(|r| r[k].parse().unwrap()).collect()
}

#[test]
fn series_over_time_hold_the_runs_numbers() {
    let r = run(SMALL, &[]);
    let s = &r.summary;
    let (header, rows) = timeseries(&r.out);
    let window =
        s["measured_window_s"][0].as_u64().unwrap() as usize..s["measured_window_s"][1].as_u64().unwrap() as usize;

    // The run's p99 is a quantile of the mixture of its seconds: between the least and the
    // most of the seconds' p99 (1% for the coarser per-second histograms).
    let latency = s["latencies"].as_array().unwrap();
    for metric in ["delivery", "presence"] {
        let p99 = latency.iter().find(|l| l["name"] == metric).unwrap()["p99_ms"].as_f64().unwrap();
        let per_second = column(&header, &rows, &format!("{metric}_p99_ms"), window.clone());
        assert!(!per_second.is_empty(), "{metric}: p99 over time");
        let (lo, hi) = per_second.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(lo * 0.99 <= p99 && p99 <= hi * 1.01, "{metric}: the run's p99 {p99} outside its seconds' {lo}..{hi}");
        let p50 = column(&header, &rows, &format!("{metric}_p50_ms"), window.clone());
        assert!(p50.iter().zip(&per_second).all(|(a, b)| a <= b), "{metric}: p50 above p99 in a second");
        let plot = svg(&r.out, &format!("latency_over_time_{metric}.svg"));
        assert!(plot.contains("p50") && plot.contains("p99") && plot.contains("SLO: p99 &lt;"));
    }

    // Work booked each second over the window averages to the window's utilisation (work
    // booked at arrival against work done in the window: the edges differ a little).
    let tiers = s["tiers"].as_array().unwrap();
    let utilisation = svg(&r.out, "utilisation.svg");
    for t in tiers.iter().filter(|t| t["nodes"].as_u64().unwrap() > 0) {
        let name = t["tier"].as_str().unwrap();
        let series = column(&header, &rows, &format!("utilisation_{name}"), window.clone());
        let mean = series.iter().sum::<f64>() / series.len() as f64;
        let measured = t["utilisation_mean"].as_f64().unwrap();
        assert!((mean - measured).abs() <= 0.1 * measured + 0.002, "{name}: mean over time {mean}, window {measured}");
        assert!(utilisation.contains(name), "utilisation.svg lacks {name}");
    }

    let lag = column(&header, &rows, "kafka_lag_messages", window.clone());
    assert!(lag.iter().any(|&l| l > 0.0), "records wait for their commit under load: {lag:?}");
    assert!(svg(&r.out, "kafka_lag.svg").contains("messages topic"));
}

#[test]
fn the_diagrams_are_drawn_from_the_run() {
    let r = run(SMALL, &[]);
    let s = &r.summary;
    let window_s = s["scenario"]["duration_s"].as_f64().unwrap();
    let flows = s["flows"].as_array().unwrap();
    let flow = |from: &str, to: &str| {
        flows.iter().find(|f| f["from"] == from && f["to"] == to).map_or(0.0, |f| f["messages_per_s"].as_f64().unwrap())
    };
    // Every frame a device sends is an operation its chat server serves.
    let ops = s["ops"].as_array().unwrap();
    let device_ops: f64 = ops
        .iter()
        .filter(|o| {
            ["connect", "disconnect", "heartbeat", "send", "delivered_ack", "read_ack", "subscribe", "receipts_heard"]
                .contains(&o["op"].as_str().unwrap())
        })
        .map(|o| o["measured_per_s"].as_f64().unwrap())
        .sum();
    let frames = flow("client_shard", "chat_server");
    assert!((frames - device_ops).abs() <= 0.01 * device_ops, "frames {frames}/s against device ops {device_ops}/s");
    // Each route-or-inbox the session store serves comes from a chat server or a router.
    let routes: f64 =
        ops.iter().filter(|o| o["tier"] == "redis_session").map(|o| o["measured_per_s"].as_f64().unwrap()).sum();
    let into_sessions = flow("chat_server", "redis_session") + flow("router", "redis_session");
    assert!((into_sessions - routes).abs() <= 0.01 * routes + 1.0 / window_s, "{into_sessions} against {routes}");

    let report = std::fs::read_to_string(r.out.join("report.md")).unwrap();
    for part in ["```mermaid\nflowchart LR", "stateDiagram-v2", "client_shard -->|", "in_flight --> sent: server ACK ×"]
    {
        assert!(report.contains(part), "report.md lacks {part}");
    }
    let architecture = svg(&r.out, "architecture.svg");
    for tier in
        ["clients", "chat servers", "Cassandra", "Kafka", "routers", "session store (Redis)", "presence (Redis)"]
    {
        assert!(architecture.contains(tier), "architecture.svg lacks {tier}");
    }
    let frames_label = if frames >= 1e3 { format!("{:.1}K/s", frames / 1e3) } else { format!("{frames:.0}/s") };
    assert!(architecture.contains(&frames_label), "architecture.svg lacks the clients' {frames_label}");

    // The machine: from the model's table, counts that fit the run.
    let m = &s["receipt_state_machine"];
    assert_eq!(m["off_table"], 0, "the real model never moves the ticks off its table");
    let transitions = m["transitions"].as_array().unwrap();
    assert_eq!(transitions.len(), 6);
    let fired = |from: &str, to: &str| {
        let starts = |t: &serde_json::Value, k: &str, with: &str| t[k].as_str().unwrap().starts_with(with);
        transitions.iter().find(|t| starts(t, "from", from) && starts(t, "to", to)).unwrap()["fired"].as_u64().unwrap()
    };
    let sends = s["counters"]["sends"].as_u64().unwrap();
    let acked = fired("in flight", "sent");
    assert!(acked > 0 && acked <= sends, "{acked} ✓ of {sends} sends");
    assert!(fired("sent", "delivered") <= acked, "a ✓✓ from ✓ needs the ✓ first");
    let receipts = svg(&r.out, "receipts.svg");
    assert!(
        receipts.contains(&format!("server ACK × {}", wasim_sim::thousands(acked))),
        "receipts.svg holds the ✓ count"
    );
}

#[test]
fn each_sizing_row_follows_its_formula() {
    let r = run(SMALL, &["--target-utilisation", "0.6"]);
    let z = &r.summary["sizing"];
    assert_eq!(z["target_utilisation"], 0.6);
    let rows = z["rows"].as_array().unwrap();
    let by: Vec<(String, String)> =
        rows.iter().map(|r| (r["tier"].as_str().unwrap().into(), r["by"].as_str().unwrap().into())).collect();
    for (tier, resource) in [
        ("chat_server", "cpu"),
        ("chat_server", "connections"),
        ("redis_session", "cpu"),
        ("redis_session", "memory"),
        ("cassandra", "cpu"),
        ("cassandra", "storage"),
        ("kafka", "network"),
        ("router", "cpu"),
    ] {
        assert!(by.contains(&(tier.into(), resource.into())), "no {tier} by {resource}: {by:?}");
    }
    let tiers = r.summary["tiers"].as_array().unwrap();
    for row in rows {
        let (demand, per_node) = (row["demand"].as_f64().unwrap(), row["per_node"].as_f64().unwrap());
        let nodes = row["nodes"].as_u64().unwrap();
        assert_eq!(nodes, ((demand / per_node) - 1e-9).ceil().max(1.0) as u64, "{row}");
        assert_eq!(row["nodes_three_zones"].as_u64().unwrap(), 3 * nodes.div_ceil(2), "{row}");
        assert!(row["formula"].as_str().unwrap().ends_with(&format!("= {nodes}")), "{row}");
        if row["by"] == "cpu" {
            // A node gives workers x target of busy time; an operation costs what the run's
            // busy time per operation was.
            let t = tiers.iter().find(|t| t["tier"] == row["tier"]).unwrap();
            let (util, ops) = (t["utilisation_mean"].as_f64().unwrap(), t["ops_per_s"].as_f64().unwrap());
            let workers = t["workers_per_node"].as_f64().unwrap();
            let cost_s = util * t["nodes"].as_f64().unwrap() * workers / ops;
            let expected = workers * 0.6 / cost_s;
            // summary.json rounds the utilisation to 3 decimals.
            let tolerance = 0.0005 / util + 0.01;
            assert!(
                (per_node - expected).abs() <= tolerance * expected,
                "{}: {per_node} a node, {expected} by hand",
                row["tier"]
            );
        }
    }
    // The connections row by hand: the card's 100M users at the run's connections a user,
    // 100,000 a server.
    let chat = tiers.iter().find(|t| t["tier"] == "chat_server").unwrap();
    let per_user = chat["gauge_end"].as_f64().unwrap() / 2_000.0;
    let row = rows.iter().find(|r| r["tier"] == "chat_server" && r["by"] == "connections").unwrap();
    assert_eq!(row["nodes"].as_u64().unwrap(), (100e6 * per_user / 100e3).ceil() as u64);
    let report = std::fs::read_to_string(r.out.join("report.md")).unwrap();
    assert!(report.contains("### Sizing for the card's full load") && report.contains("at 60% utilisation"));
}

#[test]
fn a_target_utilisation_outside_zero_to_one_is_refused() {
    for bad in ["0", "1.5", "-0.2", "x"] {
        let o = wasim(&["scenario", "scenarios/baseline.toml", "--target-utilisation", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
}

#[cfg(feature = "planted-bugs")]
#[test]
fn ticks_that_go_back_are_counted_off_the_table() {
    // The planted bug lets the latest receipt win: a late delivered receipt (re-sent after
    // a lost ACK) moves blue ✓✓ back to grey, a move the table does not have.
    let scenario = Path::new("scenarios/fuzz-faults.toml");
    let r = run_file(tempfile::tempdir().unwrap(), scenario, &["--plant", "receipt-not-monotone"]);
    let off = r.summary["receipt_state_machine"]["off_table"].as_u64().unwrap();
    assert!(off > 0, "the backward moves are counted");
    let report = std::fs::read_to_string(r.out.join("report.md")).unwrap();
    assert!(report.contains("moves of the ticks are not in the table"));
}
