//! `wasim estimate`: the card's estimation table beside the recomputed values, as a text
//! table, Markdown, CSV or JSON.

use serde::Serialize;
use wasim_sim::estimate::{downtime_s_per_year, si, si_bytes, EstimateRow, TransportRow};

/// The output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EstimateFormat {
    Table,
    Markdown,
    Csv,
    Json,
}

/// What `wasim estimate` prints: where the inputs came from, the rows and the transports.
#[derive(Debug, Serialize)]
pub struct EstimateReport {
    /// "the card" or the scenario file.
    pub inputs_from: String,
    pub rows: Vec<EstimateRowOut>,
    pub transports: Vec<TransportOut>,
    /// The card's non-functional targets, with what they imply.
    pub targets: Vec<(String, String)>,
    /// With a scenario: each tier's analytic prediction (the visit table's load on an
    /// M/M/c queue per node), and with `--run` what a run of it measured.
    pub tiers: Vec<TierAnalytic>,
    /// The run folder the measured columns come from.
    pub run: Option<String>,
}

/// One tier: the load the visit table predicts, what queueing theory says of it, and what
/// a run measured.
#[derive(Debug, Serialize)]
pub struct TierAnalytic {
    pub tier: String,
    pub nodes: u32,
    pub workers_per_node: u32,
    pub service_us_mean: f64,
    /// λ per node, predicted.
    pub ops_per_s_per_node: f64,
    /// ρ = λ·E[S] / c.
    pub utilisation: f64,
    /// Erlang C (the share of requests that wait), Little's L (requests in a node), the
    /// mean and p99 time in a node (ms); `None` when the node is saturated (ρ >= 1).
    pub wait_probability: Option<f64>,
    pub in_node_mean: Option<f64>,
    pub sojourn_ms_mean: Option<f64>,
    pub sojourn_ms_p99: Option<f64>,
    /// From the run's summary.json: operations a second per node and mean utilisation.
    pub measured_ops_per_s_per_node: Option<f64>,
    pub measured_utilisation: Option<f64>,
}

impl TierAnalytic {
    /// `load`'s prediction on an M/M/c queue per node, with what a run measured (`(ops/s per
    /// node, utilisation)`, if given).
    pub fn new(load: &wasim_sim::TierLoad, measured: Option<(f64, f64)>) -> TierAnalytic {
        let queue = wasim_sim::estimate_queue(load);
        TierAnalytic {
            tier: load.tier.to_string(),
            nodes: load.nodes,
            workers_per_node: load.workers_per_node,
            service_us_mean: load.service_us_mean,
            ops_per_s_per_node: load.ops_per_s_per_node,
            utilisation: load.utilisation,
            wait_probability: queue.map(|q| q.erlang_c()),
            in_node_mean: queue.map(|q| q.in_system_mean()),
            sojourn_ms_mean: queue.map(|q| q.sojourn_s_mean() * 1e3),
            sojourn_ms_p99: queue.map(|q| q.sojourn_s_quantile(0.99) * 1e3),
            measured_ops_per_s_per_node: measured.map(|m| m.0),
            measured_utilisation: measured.map(|m| m.1),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EstimateRowOut {
    pub component: String,
    pub card: Option<String>,
    pub card_value: Option<f64>,
    pub value: f64,
    pub unit: String,
    pub formula: String,
    pub flag: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TransportOut {
    pub transport: String,
    pub requests_per_s: f64,
    pub empty_share: f64,
    pub worst_latency_s: f64,
    pub worst_wait: String,
    pub formula: String,
}

impl EstimateReport {
    pub fn new(inputs_from: &str, rows: &[EstimateRow], transports: &[TransportRow]) -> EstimateReport {
        let downtime_min = downtime_s_per_year(0.9999) / 60.0;
        EstimateReport {
            inputs_from: inputs_from.to_string(),
            rows: rows
                .iter()
                .map(|r| EstimateRowOut {
                    component: r.component.to_string(),
                    card: r.card_text.map(str::to_string),
                    card_value: r.card,
                    value: r.value,
                    unit: r.unit.to_string(),
                    formula: r.formula.clone(),
                    flag: r.flag.clone(),
                })
                .collect(),
            transports: transports
                .iter()
                .map(|t| TransportOut {
                    transport: t.transport.to_string(),
                    requests_per_s: t.requests_per_s,
                    empty_share: t.empty_share,
                    worst_latency_s: t.worst_latency_s,
                    worst_wait: t.worst_wait.clone(),
                    formula: t.formula.clone(),
                })
                .collect(),
            targets: vec![
                ("Delivery latency p99 < 500 ms".into(), "`wasim scenario`'s delivery SLO".into()),
                ("Presence propagation p99 < 1 s".into(), "`wasim scenario`'s presence SLO".into()),
                ("Availability 99.99%".into(), format!("{downtime_min:.1} minutes of downtime a year")),
                ("Durability: zero message loss".into(), "invariant 1 (no loss), checked after every run".into()),
            ],
            tiers: Vec::new(),
            run: None,
        }
    }
}

/// A value in its unit, readable: bytes in B/KB/.../PB, counts in full, others in
/// engineering form.
fn show(value: f64, unit: &str) -> String {
    match unit {
        "bytes" => si_bytes(value),
        "bytes/day" => format!("{}/day", si_bytes(value)),
        "bytes/s" => format!("{}/s", si_bytes(value)),
        "servers" | "nodes" => format!("{} {unit}", wasim_sim::thousands(value as u64)),
        other => format!("{} {other}", si(value)),
    }
}

/// Render `r` in `format`.
pub fn render_estimate(r: &EstimateReport, format: EstimateFormat) -> String {
    match format {
        EstimateFormat::Table => table(r),
        EstimateFormat::Markdown => markdown(r),
        EstimateFormat::Csv => csv_rows(r),
        EstimateFormat::Json => serde_json::to_string_pretty(r).expect("the estimate serializes") + "\n",
    }
}

fn table(r: &EstimateReport) -> String {
    let mut o = format!("Scale & estimation (inputs: {})\n\n", r.inputs_from);
    o += &format!("  {:<28} {:>14} {:>16}  formula\n", "component", "card", "recomputed");
    for row in &r.rows {
        let card = row.card.as_deref().unwrap_or("-");
        let mark = if row.flag.is_some() { " !" } else { "" };
        o += &format!(
            "  {:<28} {:>14} {:>16}  {}{mark}\n",
            row.component,
            card,
            show(row.value, &row.unit),
            row.formula
        );
    }
    let flagged: Vec<&EstimateRowOut> = r.rows.iter().filter(|row| row.flag.is_some()).collect();
    if !flagged.is_empty() {
        o += "\n  ! where the card disagrees with its own inputs:\n";
        for row in flagged {
            o += &format!("    {}: {}\n", row.component, row.flag.as_deref().unwrap_or_default());
        }
    }
    o += "\nPolling or WebSockets (the card's comparison), for the same users and messages\n\n";
    o += &format!("  {:<14} {:>14} {:>8} {:>14}  formula\n", "transport", "requests/s", "empty", "worst wait");
    for t in &r.transports {
        o += &format!(
            "  {:<14} {:>14} {:>7.1}% {:>14}  {}\n",
            t.transport,
            si(t.requests_per_s),
            t.empty_share * 100.0,
            t.worst_wait,
            t.formula
        );
    }
    o += "\nTargets\n\n";
    for (target, meaning) in &r.targets {
        o += &format!("  {target}: {meaning}\n");
    }
    if !r.tiers.is_empty() {
        o += "\nTiers: the visit table's load per node on an M/M/c queue (exponential service)";
        match &r.run {
            Some(run) => o += &format!(", beside what {run} measured\n\n"),
            None => o += " (`--run DIR` adds what a run measured)\n\n",
        }
        o += &format!(
            "  {:<15} {:>5} {:>7} {:>10} {:>12} {:>7} {:>8} {:>7} {:>10} {:>10} {:>12} {:>9}\n",
            "tier",
            "nodes",
            "workers",
            "service",
            "ops/s/node",
            "util",
            "P(wait)",
            "L",
            "mean",
            "p99",
            "measured/node",
            "util"
        );
        for t in &r.tiers {
            let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("saturated".to_string(), f);
            let measured = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_string(), f);
            o += &format!(
                "  {:<15} {:>5} {:>7} {:>8.0}µs {:>12} {:>6.1}% {:>8} {:>7} {:>10} {:>10} {:>12} {:>9}\n",
                t.tier,
                t.nodes,
                t.workers_per_node,
                t.service_us_mean,
                si(t.ops_per_s_per_node),
                t.utilisation * 100.0,
                opt(t.wait_probability, &|p| format!("{:.3}", p)),
                opt(t.in_node_mean, &|l| format!("{l:.2}")),
                opt(t.sojourn_ms_mean, &|ms| format!("{ms:.3} ms")),
                opt(t.sojourn_ms_p99, &|ms| format!("{ms:.3} ms")),
                measured(t.measured_ops_per_s_per_node, &si),
                measured(t.measured_utilisation, &|u| format!("{:.1}%", u * 100.0)),
            );
        }
        o += "\n  util = λ·E[S] / workers; P(wait) = Erlang C; L = λ·W (Little); p99 from the M/M/c sojourn distribution.\n";
    }
    o
}

fn markdown(r: &EstimateReport) -> String {
    let mut o = format!("## Scale & estimation\n\nInputs: {}.\n\n", r.inputs_from);
    o += "| Component | Card | Recomputed | Formula | Flag |\n|---|---:|---:|---|---|\n";
    for row in &r.rows {
        o += &format!(
            "| {} | {} | {} | {} | {} |\n",
            row.component,
            row.card.as_deref().unwrap_or("—"),
            show(row.value, &row.unit),
            row.formula,
            row.flag.as_deref().unwrap_or("")
        );
    }
    o += "\n### Polling or WebSockets\n\n| Transport | Requests/s | Empty | Worst wait | Formula |\n|---|---:|---:|---|---|\n";
    for t in &r.transports {
        o += &format!(
            "| {} | {} | {:.1}% | {} | {} |\n",
            t.transport,
            si(t.requests_per_s),
            t.empty_share * 100.0,
            t.worst_wait,
            t.formula
        );
    }
    o += "\n### Targets\n\n";
    for (target, meaning) in &r.targets {
        o += &format!("- {target}: {meaning}\n");
    }
    if !r.tiers.is_empty() {
        o += "\n### Tiers (visit table on M/M/c per node)\n\n| Tier | Nodes | Workers | Ops/s a node | Util | P(wait) | Mean | p99 | Measured ops/s a node | Measured util |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for t in &r.tiers {
            let opt = |v: Option<f64>| v.map_or("saturated".to_string(), |v| format!("{v:.3}"));
            o += &format!(
                "| {} | {} | {} | {} | {:.1}% | {} | {} ms | {} ms | {} | {} |\n",
                t.tier,
                t.nodes,
                t.workers_per_node,
                si(t.ops_per_s_per_node),
                t.utilisation * 100.0,
                opt(t.wait_probability),
                opt(t.sojourn_ms_mean),
                opt(t.sojourn_ms_p99),
                t.measured_ops_per_s_per_node.map_or("—".into(), si),
                t.measured_utilisation.map_or("—".into(), |u| format!("{:.1}%", u * 100.0)),
            );
        }
    }
    o
}

fn csv_rows(r: &EstimateReport) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["component", "card", "card_value", "recomputed", "unit", "formula", "flag"]).expect("in memory");
    for row in &r.rows {
        w.write_record([
            row.component.clone(),
            row.card.clone().unwrap_or_default(),
            row.card_value.map(|v| v.to_string()).unwrap_or_default(),
            row.value.to_string(),
            row.unit.clone(),
            row.formula.clone(),
            row.flag.clone().unwrap_or_default(),
        ])
        .expect("in memory");
    }
    String::from_utf8(w.into_inner().expect("in memory")).expect("UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasim_sim::estimate::{estimate, transports, EstimateInputs};

    fn card() -> EstimateReport {
        let i = EstimateInputs::card();
        EstimateReport::new("the card", &estimate(&i, true), &transports(&i))
    }

    #[test]
    fn every_format_holds_every_row_with_its_recomputed_value() {
        let r = card();
        for format in [EstimateFormat::Table, EstimateFormat::Markdown, EstimateFormat::Csv] {
            let text = render_estimate(&r, format);
            for row in &r.rows {
                assert!(text.contains(&row.component), "{format:?} lacks {}", row.component);
            }
            assert!(text.contains("1.157M"), "{format:?}: the throughput recomputed");
        }
        let json: serde_json::Value = serde_json::from_str(&render_estimate(&r, EstimateFormat::Json)).unwrap();
        assert_eq!(json["rows"].as_array().unwrap().len(), r.rows.len());
        assert_eq!(json["rows"][0]["value"].as_f64(), Some(1_000.0));
        let csv = render_estimate(&r, EstimateFormat::Csv);
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        assert_eq!(reader.records().count(), r.rows.len());
    }

    #[test]
    fn a_tier_on_one_worker_at_half_load_is_the_m_m_1_worked_by_hand() {
        // 500 requests a second of 1 ms on one worker: ρ = 0.5, W = 1 / (μ - λ) = 2 ms,
        // L = λ·W = 1, P(wait) = ρ, p99 = ln(100) / (μ - λ) = 9.21 ms (an M/M/1 sojourn
        // is exponential at μ - λ).
        let load = wasim_sim::TierLoad {
            tier: "router",
            nodes: 1,
            workers_per_node: 1,
            ops_per_s: 500.0,
            ops_per_s_per_node: 500.0,
            service_us_mean: 1_000.0,
            utilisation: 0.5,
            nodes_for_target: 1,
        };
        let t = TierAnalytic::new(&load, Some((498.0, 0.49)));
        assert!((t.wait_probability.unwrap() - 0.5).abs() < 1e-12);
        assert!((t.in_node_mean.unwrap() - 1.0).abs() < 1e-9);
        assert!((t.sojourn_ms_mean.unwrap() - 2.0).abs() < 1e-9);
        assert!((t.sojourn_ms_p99.unwrap() - 100f64.ln() / 500.0 * 1e3).abs() < 1e-6);
        assert_eq!(t.measured_utilisation, Some(0.49));
        let saturated = TierAnalytic::new(&wasim_sim::TierLoad { ops_per_s_per_node: 1_000.0, ..load }, None);
        assert_eq!(saturated.sojourn_ms_p99, None, "ρ = 1 has no steady state");
    }

    #[test]
    fn the_table_marks_and_explains_the_flagged_rows() {
        let text = render_estimate(&card(), EstimateFormat::Table);
        assert!(text.contains("where the card disagrees"));
        assert!(text.contains("Kafka throughput: "), "{text}");
        assert!(text.contains("52.6 minutes of downtime a year"));
    }
}
