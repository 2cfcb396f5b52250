//! `wasim scenario FILE --seeds N`: the spread of each SLO's figure over the seeds, and the
//! share of seeds that pass each objective.

use super::{ms, percent, RunDigest, Spread};
use serde::Serialize;
use std::fmt::Write;
use wasim_sim::thousands;

/// One seed's run, as the caller gathered it.
#[derive(Clone, Debug)]
pub struct SeedRun {
    pub seed: u64,
    /// Its report folder.
    pub dir: String,
    /// Its summary, or why there is none (the run died or was refused).
    pub result: Result<RunDigest, String>,
}

/// One figure over the seeds.
#[derive(Clone, Debug, Serialize)]
pub struct SeedRow {
    /// What is measured: `delivery latency`, `availability`.
    pub name: String,
    /// `delivery latency p99`, `delivery p50`, `availability`.
    pub label: String,
    pub unit: &'static str,
    /// The objective it is judged against, if it is judged (`p99 < 500 ms`).
    pub objective: Option<String>,
    /// The value of each seed, in the order of `SeedsReport::seeds` (`null`: not measured).
    pub values: Vec<Option<f64>>,
    pub spread: Option<Spread>,
    /// Seeds whose verdict on this objective is not FAIL (NO DATA passes, as in a run's exit
    /// status; a seed whose run died fails).
    pub seeds_pass: Option<usize>,
}

/// One seed's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct SeedLine {
    pub seed: u64,
    /// `PASS`, `FAIL`, or `DIED` (no summary).
    pub verdict: String,
    pub dir: String,
    pub violations: u64,
    /// What failed, worst first, or why the run died.
    pub failed: Vec<String>,
    pub replay: String,
}

/// The seeds report: `seeds.json`, and the table and `seeds.md` rendered from it.
#[derive(Clone, Debug, Serialize)]
pub struct SeedsReport {
    pub scenario_name: String,
    pub file: String,
    pub seeds: Vec<u64>,
    /// How the intervals were drawn.
    pub bootstrap: Bootstrap,
    pub rows: Vec<SeedRow>,
    /// Seeds that hold every invariant (a died run does not).
    pub seeds_hold_invariants: usize,
    /// Seeds that pass every SLO, availability and every invariant.
    pub seeds_pass: usize,
    pub runs: Vec<SeedLine>,
    /// The command that makes this report again.
    pub replay: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Bootstrap {
    pub what: &'static str,
    pub resamples: usize,
    pub rng: &'static str,
    pub rng_seed: u64,
}

impl SeedsReport {
    /// The report of `runs` (any order; sorted by seed here). The bootstrap draws
    /// `resamples` resamples per figure from a generator seeded with `rng_seed`. Panics
    /// without runs or without a summary among them: the caller refuses that first.
    pub fn new(
        scenario_name: &str,
        file: &str,
        mut runs: Vec<SeedRun>,
        resamples: usize,
        rng_seed: u64,
        replay: String,
    ) -> SeedsReport {
        runs.sort_by_key(|r| r.seed);
        let digests: Vec<Option<&RunDigest>> = runs.iter().map(|r| r.result.as_ref().ok()).collect();
        let mut rows = rows(&digests);
        for row in &mut rows {
            let measured: Vec<f64> = row.values.iter().flatten().copied().collect();
            row.spread = Spread::of(&measured, resamples, rng_seed);
        }
        SeedsReport {
            scenario_name: scenario_name.to_string(),
            file: file.to_string(),
            seeds: runs.iter().map(|r| r.seed).collect(),
            bootstrap: Bootstrap {
                what: "95% percentile-bootstrap interval of the median over the seeds",
                resamples,
                rng: "ChaCha8",
                rng_seed,
            },
            rows,
            seeds_hold_invariants: digests.iter().filter(|d| d.is_some_and(|d| d.violations() == 0)).count(),
            seeds_pass: digests.iter().filter(|d| d.is_some_and(RunDigest::passes)).count(),
            runs: runs.iter().map(SeedLine::of).collect(),
            replay,
        }
    }

    /// Whether every seed passed every SLO, availability and every invariant.
    pub fn all_pass(&self) -> bool {
        self.seeds_pass == self.seeds.len()
    }

    /// The verdict lines: each objective's share of passing seeds.
    fn verdicts(&self) -> Vec<String> {
        let n = self.seeds.len();
        let mut lines: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| {
                let pass = r.seeds_pass?;
                let objective = r.objective.as_deref().unwrap_or("");
                Some(format!("{} {objective}: {pass}/{n} seeds pass ({})", r.name, percent(pass, n)))
            })
            .collect();
        let held = self.seeds_hold_invariants;
        lines.push(format!("invariants: {held}/{n} seeds hold them all ({})", percent(held, n)));
        lines.push(format!(
            "every SLO and invariant: {}/{n} seeds pass ({})",
            self.seeds_pass,
            percent(self.seeds_pass, n)
        ));
        lines
    }
}

/// The figures of each seed (`None`: its run died): each SLO's p99, delivery's p50 and
/// availability, without their spread yet. Panics without a digest: the caller has one.
fn rows(digests: &[Option<&RunDigest>]) -> Vec<SeedRow> {
    let first = digests.iter().flatten().next().expect("at least one run has a summary");
    let passing = |pass: &dyn Fn(&RunDigest) -> bool| Some(digests.iter().flatten().filter(|d| pass(d)).count());
    let mut rows = Vec::new();
    for (i, slo) in first.slos.iter().enumerate() {
        let of = |d: &RunDigest| d.slos.get(i).filter(|v| v.name == slo.name).cloned();
        rows.push(SeedRow {
            name: slo.name.clone(),
            label: format!("{} p99", slo.name),
            unit: "ms",
            objective: Some(slo.objective.clone()),
            values: digests.iter().map(|d| d.and_then(of).filter(|v| v.samples > 0).map(|v| v.measured_ms)).collect(),
            spread: None,
            seeds_pass: passing(&|d| of(d).is_some_and(|v| v.verdict != "FAIL")),
        });
        if slo.metric == "delivery" {
            let p50 = |d: &RunDigest| d.latency("delivery").filter(|l| l.count > 0).map(|l| l.p50_ms);
            rows.push(SeedRow {
                name: slo.name.clone(),
                label: format!("{} p50", slo.name),
                unit: "ms",
                objective: None,
                values: digests.iter().map(|d| d.and_then(p50)).collect(),
                spread: None,
                seeds_pass: None,
            });
        }
    }
    let availability = |d: &RunDigest| (d.availability.sends > 0).then_some(d.availability.measured * 100.0);
    rows.push(SeedRow {
        name: "availability".into(),
        label: "availability".into(),
        unit: "%",
        objective: Some(format!(">= {}% acknowledged in time", trimmed(first.availability.objective * 100.0))),
        values: digests.iter().map(|d| d.and_then(availability)).collect(),
        spread: None,
        seeds_pass: passing(&|d| d.availability.verdict != "FAIL"),
    });
    rows
}

impl SeedLine {
    fn of(r: &SeedRun) -> SeedLine {
        match &r.result {
            Ok(d) => SeedLine {
                seed: r.seed,
                verdict: d.verdict.clone(),
                dir: r.dir.clone(),
                violations: d.violations(),
                failed: d.failures(),
                replay: d.replay.clone(),
            },
            Err(e) => SeedLine {
                seed: r.seed,
                verdict: "DIED".into(),
                dir: r.dir.clone(),
                violations: 0,
                failed: vec![e.clone()],
                replay: String::new(),
            },
        }
    }
}

/// A figure in its unit: milliseconds as a run's report shows them, shares to 4 decimals.
fn value(x: f64, unit: &str) -> String {
    match unit {
        "%" => format!("{x:.4}"),
        _ => ms(x),
    }
}

/// `x` to 4 decimals without trailing zeros: 99.99, 100.
fn trimmed(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn seed_list(seeds: &[u64]) -> String {
    match (seeds.first(), seeds.last()) {
        (Some(a), Some(b)) if b - a + 1 == seeds.len() as u64 => format!("{a}..={b}"),
        _ => seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
    }
}

/// The seeds report as a table for a terminal.
pub fn render_seeds_table(r: &SeedsReport) -> String {
    let mut o = format!(
        "{} seeds ({}) of {} ({})\nmedian 95% CI: {}, {} resamples ({} seeded {})\n\n",
        r.seeds.len(),
        seed_list(&r.seeds),
        r.scenario_name,
        r.file,
        r.bootstrap.what,
        thousands(r.bootstrap.resamples as u64),
        r.bootstrap.rng,
        r.bootstrap.rng_seed
    );
    let _ = writeln!(
        o,
        "  {:<34} {:>9} {:>9} {:>9}   {:<21} {:>6}",
        "figure", "min", "median", "max", "median 95% CI", "seeds"
    );
    for row in &r.rows {
        let label = format!("{} ({})", row.label, row.unit);
        let cells = match &row.spread {
            Some(s) => format!(
                "{:>9} {:>9} {:>9}   {:<21}",
                value(s.min, row.unit),
                value(s.median, row.unit),
                value(s.max, row.unit),
                format!("[{}, {}]", value(s.median_ci95[0], row.unit), value(s.median_ci95[1], row.unit))
            ),
            None => format!("{:>9} {:>9} {:>9}   {:<21}", "-", "-", "-", "no samples"),
        };
        let n = row.spread.map_or(0, |s| s.n);
        let _ = writeln!(o, "  {label:<34} {cells} {n:>6}");
    }
    o += "\nVerdicts\n";
    for line in r.verdicts() {
        let _ = writeln!(o, "  {line}");
    }
    o += "\nPer seed\n";
    // Each column as wide as its heading, so the table lines up whatever the SLOs' names.
    let widths: Vec<usize> = r.rows.iter().map(|row| row.label.chars().count().max(9) + 2).collect();
    let heads: String = r.rows.iter().zip(&widths).map(|(row, &w)| format!("{:>w$}", row.label)).collect();
    let _ = writeln!(o, "  {:>6}  {:<7}{heads}  report", "seed", "verdict");
    for (j, line) in r.runs.iter().enumerate() {
        let cells: String = r
            .rows
            .iter()
            .zip(&widths)
            .map(|(row, &w)| format!("{:>w$}", row.values[j].map_or("-".into(), |v| value(v, row.unit))))
            .collect();
        let _ = writeln!(o, "  {:>6}  {:<7}{cells}  {}", line.seed, line.verdict, line.dir);
        for f in &line.failed {
            let _ = writeln!(o, "          {f}");
        }
    }
    o
}

/// The seeds report in Markdown, readable on GitHub as it is.
pub fn render_seeds_md(r: &SeedsReport) -> String {
    let n = r.seeds.len();
    let mut o = format!(
        "# {} over {n} seeds ({}): {}/{n} pass\n\nScenario file `{}`. The interval is the {} ({} resamples, {} seeded {}).\n\n",
        r.scenario_name,
        seed_list(&r.seeds),
        r.seeds_pass,
        r.file,
        r.bootstrap.what,
        thousands(r.bootstrap.resamples as u64),
        r.bootstrap.rng,
        r.bootstrap.rng_seed
    );
    o += "| Figure | Objective | Min | Median | Max | Median 95% CI | Seeds measured | Seeds pass |\n|---|---|---:|---:|---:|---|---:|---:|\n";
    for row in &r.rows {
        let (min, med, max, ci, m) = match &row.spread {
            Some(s) => (
                value(s.min, row.unit),
                value(s.median, row.unit),
                value(s.max, row.unit),
                format!("{} – {}", value(s.median_ci95[0], row.unit), value(s.median_ci95[1], row.unit)),
                s.n,
            ),
            None => ("–".into(), "–".into(), "–".into(), "no samples".into(), 0),
        };
        let pass = row.seeds_pass.map_or("".into(), |p| format!("{p}/{n} ({})", percent(p, n)));
        let _ = writeln!(
            o,
            "| {} ({}) | {} | {min} | {med} | {max} | {ci} | {m} | {pass} |",
            row.label,
            row.unit,
            row.objective.as_deref().unwrap_or("")
        );
    }
    o += "\n## Verdicts\n\n";
    for line in r.verdicts() {
        let _ = writeln!(o, "- {line}");
    }
    o += "\n## Per seed\n\n| Seed | Verdict |";
    for row in &r.rows {
        let _ = write!(o, " {} ({}) |", row.label, row.unit);
    }
    o += " Report | What failed |\n|---:|---|";
    o += &"---:|".repeat(r.rows.len());
    o += "---|---|\n";
    for (j, line) in r.runs.iter().enumerate() {
        let _ = write!(o, "| {} | **{}** |", line.seed, line.verdict);
        for row in &r.rows {
            let _ = write!(o, " {} |", row.values[j].map_or("–".into(), |v| value(v, row.unit)));
        }
        let _ = writeln!(o, " [{dir}]({dir}/report.md) | {} |", line.failed.join("; "), dir = line.dir);
    }
    let _ = write!(o, "\n## Replay\n\n```sh\n{}\n```\n", r.replay);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(seed: u64, delivery_p99: f64, pass: bool) -> RunDigest {
        let verdict = if pass { "PASS" } else { "FAIL" };
        let json = format!(
            r#"{{"seed": {seed}, "verdict": "{verdict}", "replay": "wasim scenario s.toml --seed {seed}",
            "slos": [{{"name": "delivery latency", "metric": "delivery", "objective": "p99 < 500 ms", "objective_ms": 500.0,
                      "measured_ms": {delivery_p99}, "samples": 1000, "verdict": "{verdict}"}},
                     {{"name": "presence propagation", "metric": "presence", "objective": "p99 < 1000 ms", "objective_ms": 1000.0,
                      "measured_ms": 0.0, "samples": 0, "verdict": "NO DATA"}}],
            "availability": {{"objective": 0.9999, "measured": 1.0, "sends": 900, "verdict": "PASS"}},
            "latencies": [{{"name": "delivery", "count": 1000, "p50_ms": {p50}, "p99_ms": {delivery_p99}}}],
            "tiers": [{{"tier": "chat_server", "nodes": 2, "utilisation_mean": 0.1, "utilisation_max": 0.2}}],
            "throughput": {{"offered_msg_per_s": 100, "sent_msg_per_s": 99.0, "delivered_msg_per_s": 98.0}},
            "invariants": {{"counts": [], "checked": [[1, "no loss"]]}}, "unknown_field": 1}}"#,
            p50 = delivery_p99 / 4.0
        );
        RunDigest::from_summary_json(&json).unwrap()
    }

    #[test]
    fn the_report_spreads_each_slo_and_counts_the_passing_seeds() {
        let runs = vec![
            SeedRun { seed: 3, dir: "out/seed-3".into(), result: Ok(digest(3, 600.0, false)) },
            SeedRun { seed: 1, dir: "out/seed-1".into(), result: Ok(digest(1, 200.0, true)) },
            SeedRun { seed: 2, dir: "out/seed-2".into(), result: Ok(digest(2, 300.0, true)) },
            SeedRun { seed: 4, dir: "out/seed-4".into(), result: Err("the run died".into()) },
        ];
        let r = SeedsReport::new("s", "s.toml", runs, 1_000, 1, "wasim scenario s.toml --seeds 4".into());
        assert_eq!(r.seeds, [1, 2, 3, 4], "sorted by seed");
        let delivery = &r.rows[0];
        assert_eq!(delivery.values, [Some(200.0), Some(300.0), Some(600.0), None]);
        let s = delivery.spread.unwrap();
        assert_eq!((s.n, s.min, s.median, s.max), (3, 200.0, 300.0, 600.0));
        assert_eq!(delivery.seeds_pass, Some(2), "the failing seed and the died one do not pass");
        assert_eq!(r.rows[1].label, "delivery latency p50");
        assert_eq!(r.rows[1].spread.unwrap().median, 75.0);
        let presence = &r.rows[2];
        assert!(presence.spread.is_none() && presence.seeds_pass == Some(3), "NO DATA passes, unmeasured");
        assert_eq!((r.seeds_pass, r.all_pass()), (2, false));
        let table = render_seeds_table(&r);
        assert!(table.contains("delivery latency p99 < 500 ms: 2/4 seeds pass (50%)"), "{table}");
        assert!(table.contains("every SLO and invariant: 2/4 seeds pass (50%)"), "{table}");
        let md = render_seeds_md(&r);
        assert!(md.contains("| 4 | **DIED** |") && md.contains("(out/seed-1/report.md)"), "{md}");
    }
}
