//! `wasim scenario FILE --find-max-load`: the highest offered load at which every SLO holds
//! (the knee), the tier that saturates first, and the latency of every load tried.

use super::{ms, RunDigest};
use serde::Serialize;
use std::fmt::Write;
use wasim_sim::knee::{KneeLimits, KneeStep};
use wasim_sim::thousands;

/// One run of the search, as the caller gathered it.
#[derive(Clone, Debug)]
pub struct KneeRun {
    /// The 1:1 sends per second it ran with, and the factor on the scenario's.
    pub load_msg_per_s: u64,
    pub factor: f64,
    /// Everything offered: 1:1 and group sends per second.
    pub offered_msg_per_s: u64,
    pub dir: String,
    /// Its summary, or why there is none (a run that died counts as failing).
    pub result: Result<RunDigest, String>,
}

/// One SLO's figure at one load.
#[derive(Clone, Debug, Serialize)]
pub struct KneeSlo {
    pub name: String,
    pub objective_ms: f64,
    /// `null` without samples.
    pub p99_ms: Option<f64>,
    pub verdict: String,
}

/// One load tried, for the curve.
#[derive(Clone, Debug, Serialize)]
pub struct KneeLine {
    /// The order the search tried it in (1 = first).
    pub run: usize,
    pub load_msg_per_s: u64,
    pub factor: f64,
    pub offered_msg_per_s: u64,
    pub pass: bool,
    pub slos: Vec<KneeSlo>,
    pub availability: Option<f64>,
    pub busiest_tier: Option<BusyTier>,
    /// What failed, worst first, or why the run died.
    pub failed: Vec<String>,
    pub dir: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct BusyTier {
    pub tier: String,
    pub utilisation_max: f64,
    pub utilisation_mean: f64,
}

/// The knee: the highest load that passed.
#[derive(Clone, Debug, Serialize)]
pub struct Knee {
    pub load_msg_per_s: u64,
    pub offered_msg_per_s: u64,
    /// Its multiple of the scenario's offered load.
    pub of_scenario: f64,
    /// Its multiple of the card's load for the scenario's users (1.16M msg/s per 100M).
    pub of_card_load: f64,
    /// The lowest offered load that failed, if one did: the knee lies below it.
    pub failed_at_offered_msg_per_s: Option<u64>,
}

/// What gave way first: the lowest load that failed.
#[derive(Clone, Debug, Serialize)]
pub struct FirstFailure {
    pub offered_msg_per_s: u64,
    pub failed: Vec<String>,
    pub busiest_tier: Option<BusyTier>,
}

/// The knee report: `knee.json`, and the table, `knee.md` and `knee.svg` drawn from it.
#[derive(Clone, Debug, Serialize)]
pub struct KneeReport {
    pub scenario_name: String,
    pub file: String,
    pub seed: u64,
    pub scenario_msg_per_s: u64,
    pub scenario_offered_msg_per_s: u64,
    pub limits: KneeLimits,
    /// Why the ceiling is where it is.
    pub ceiling_note: String,
    /// The card's 1.16M msg/s for 100M users online, for this scenario's users.
    pub card_load_msg_per_s: f64,
    pub end: KneeStep,
    /// How the search ended, in a sentence.
    pub conclusion: String,
    /// The highest load that passed below the lowest that failed: the knee when `end` is
    /// `found`, a lower bound of it otherwise.
    pub knee: Option<Knee>,
    pub first_failure: Option<FirstFailure>,
    /// Every load tried, lowest first.
    pub runs: Vec<KneeLine>,
    pub replay: String,
}

/// What the search ran with, besides its runs.
pub struct KneeSearch<'a> {
    pub scenario_name: &'a str,
    pub file: &'a str,
    pub seed: u64,
    pub users: u64,
    pub scenario_msg_per_s: u64,
    pub scenario_offered_msg_per_s: u64,
    pub limits: KneeLimits,
    pub ceiling_note: String,
    pub replay: String,
}

impl BusyTier {
    fn of(d: &RunDigest) -> Option<BusyTier> {
        d.busiest_tier().map(|t| BusyTier {
            tier: t.tier.clone(),
            utilisation_max: t.utilisation_max,
            utilisation_mean: t.utilisation_mean,
        })
    }
}

impl KneeLine {
    fn of(run: usize, r: &KneeRun) -> KneeLine {
        let d = r.result.as_ref().ok();
        KneeLine {
            run,
            load_msg_per_s: r.load_msg_per_s,
            factor: r.factor,
            offered_msg_per_s: r.offered_msg_per_s,
            pass: d.is_some_and(RunDigest::passes),
            slos: d.map_or(Vec::new(), |d| {
                d.slos
                    .iter()
                    .map(|v| KneeSlo {
                        name: v.name.clone(),
                        objective_ms: v.objective_ms,
                        p99_ms: (v.samples > 0).then_some(v.measured_ms),
                        verdict: v.verdict.clone(),
                    })
                    .collect()
            }),
            availability: d.filter(|d| d.availability.sends > 0).map(|d| d.availability.measured),
            busiest_tier: d.and_then(BusyTier::of),
            failed: match &r.result {
                Ok(d) => d.failures(),
                Err(e) => vec![e.clone()],
            },
            dir: r.dir.clone(),
        }
    }
}

impl KneeReport {
    /// The report of a search that tried `runs` (in the order tried) and ended with `end`.
    pub fn new(search: KneeSearch<'_>, runs: &[KneeRun], end: KneeStep) -> KneeReport {
        let mut lines: Vec<KneeLine> = runs.iter().enumerate().map(|(i, r)| KneeLine::of(i + 1, r)).collect();
        lines.sort_by_key(|l| l.load_msg_per_s);
        let (pass, fail) = match end {
            KneeStep::Found { pass, fail } => (Some(pass), Some(fail)),
            KneeStep::PassedAtCeiling { pass } => (Some(pass), None),
            KneeStep::FailedAtFloor { fail } => (None, Some(fail)),
            KneeStep::OutOfRuns { pass, fail } => (pass, fail),
            KneeStep::Try { .. } => panic!("the search has not ended"),
        };
        let line = |load: u64| lines.iter().find(|l| l.load_msg_per_s == load).expect("a load the search tried");
        let card = wasim_sim::estimate::EstimateInputs::card();
        let card_load_msg_per_s =
            card.messages_per_day / wasim_sim::estimate::DAY_S / card.concurrent * search.users as f64;
        let failed_line = fail.map(line);
        let knee = pass.map(line).map(|p| Knee {
            load_msg_per_s: p.load_msg_per_s,
            offered_msg_per_s: p.offered_msg_per_s,
            of_scenario: round3(p.offered_msg_per_s as f64 / search.scenario_offered_msg_per_s.max(1) as f64),
            of_card_load: round3(p.offered_msg_per_s as f64 / card_load_msg_per_s),
            failed_at_offered_msg_per_s: failed_line.map(|f| f.offered_msg_per_s),
        });
        let first_failure = failed_line.map(|f| FirstFailure {
            offered_msg_per_s: f.offered_msg_per_s,
            failed: f.failed.clone(),
            busiest_tier: f.busiest_tier.clone(),
        });
        let conclusion = conclusion(&end, &lines, &search.limits);
        KneeReport {
            scenario_name: search.scenario_name.to_string(),
            file: search.file.to_string(),
            seed: search.seed,
            scenario_msg_per_s: search.scenario_msg_per_s,
            scenario_offered_msg_per_s: search.scenario_offered_msg_per_s,
            limits: search.limits,
            ceiling_note: search.ceiling_note,
            card_load_msg_per_s: round3(card_load_msg_per_s),
            end,
            conclusion,
            knee,
            first_failure,
            runs: lines,
            replay: search.replay,
        }
    }

    /// What `knee` is: the knee when the search bracketed it, else only the highest load
    /// that passed (the knee lies above it).
    fn knee_label(&self) -> &'static str {
        if self.found() {
            "knee"
        } else {
            "highest load that passed (the knee is above it)"
        }
    }

    /// Whether the search found a knee: a bracket of a passing and a failing load.
    pub fn found(&self) -> bool {
        matches!(self.end, KneeStep::Found { .. })
    }
}

fn conclusion(end: &KneeStep, lines: &[KneeLine], limits: &KneeLimits) -> String {
    let offered = |load: u64| {
        lines.iter().find(|l| l.load_msg_per_s == load).map_or(String::from("?"), |l| thousands(l.offered_msg_per_s))
    };
    let tol = pct(limits.tolerance);
    match *end {
        KneeStep::Found { pass, fail } => format!(
            "knee found: every SLO holds at {} msg/s offered and one fails at {} msg/s (within {tol}%)",
            offered(pass),
            offered(fail)
        ),
        KneeStep::PassedAtCeiling { pass } => format!(
            "no knee below the ceiling: every SLO still holds at {} msg/s offered, the highest load the search may try",
            offered(pass)
        ),
        KneeStep::FailedAtFloor { fail } => format!(
            "no knee above the floor: an SLO fails even at {} msg/s offered, the lowest load the search may try",
            offered(fail)
        ),
        KneeStep::OutOfRuns { pass, fail } => format!(
            "out of runs ({}) before the bracket closed to {tol}%: the knee lies between {} and {} msg/s offered",
            limits.runs_max,
            pass.map_or("nothing".into(), offered),
            fail.map_or("beyond".into(), offered)
        ),
        KneeStep::Try { .. } => unreachable!("the search has ended"),
    }
}

/// A share as a percentage without float noise: 0.05 -> `5`, 0.025 -> `2.5`.
fn pct(share: f64) -> String {
    let s = format!("{:.3}", share * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The SLO names of the runs, in the summary's order.
fn slo_names(r: &KneeReport) -> Vec<String> {
    r.runs.iter().find(|l| !l.slos.is_empty()).map_or(Vec::new(), |l| l.slos.iter().map(|v| v.name.clone()).collect())
}

fn p99_cell(l: &KneeLine, name: &str) -> String {
    l.slos.iter().find(|v| v.name == name).and_then(|v| v.p99_ms).map_or("-".into(), ms)
}

fn busy_cell(l: &KneeLine) -> String {
    l.busiest_tier.as_ref().map_or("-".into(), |t| {
        format!("{} {} max / {} mean", t.tier, percent(t.utilisation_max), percent(t.utilisation_mean))
    })
}

/// The headline lines: the knee and what failed first.
fn headline(r: &KneeReport) -> Vec<String> {
    let mut lines = vec![r.conclusion.clone()];
    if let Some(k) = &r.knee {
        lines.push(format!(
            "{}: {} msg/s offered = x{:.2} the scenario's {} msg/s = x{:.2} the card's load for its users ({} msg/s: 1.16M msg/s per 100M online)",
            r.knee_label(),
            thousands(k.offered_msg_per_s),
            k.of_scenario,
            thousands(r.scenario_offered_msg_per_s),
            k.of_card_load,
            thousands(r.card_load_msg_per_s.round() as u64)
        ));
    }
    if let Some(f) = &r.first_failure {
        lines.push(format!(
            "first to fail, at {} msg/s offered: {}; busiest tier {}",
            thousands(f.offered_msg_per_s),
            f.failed.first().map_or("?", String::as_str),
            f.busiest_tier.as_ref().map_or("-".into(), |t| format!(
                "{} ({} at its busiest node, {} on average)",
                t.tier,
                percent(t.utilisation_max),
                percent(t.utilisation_mean)
            ))
        ));
    }
    lines
}

/// The knee report as a table for a terminal.
pub fn render_knee_table(r: &KneeReport) -> String {
    let mut o = format!(
        "knee of {} ({}), seed {}: from the scenario's {} msg/s, x2 up to x{} or /2 down to x{}, then bisected to {}%; {}\n\n",
        r.scenario_name,
        r.file,
        r.seed,
        thousands(r.scenario_offered_msg_per_s),
        fmt_factor(r.limits.ceiling as f64 / r.limits.start as f64),
        fmt_factor(r.limits.floor as f64 / r.limits.start as f64),
        pct(r.limits.tolerance),
        r.ceiling_note
    );
    let names = slo_names(r);
    let _ = write!(o, "  {:>3} {:>12} {:>8}", "run", "offered/s", "x");
    for n in &names {
        let _ = write!(o, " {:>14}", format!("{} p99", short(n)));
    }
    let _ = writeln!(o, " {:>10}  {:<7} busiest tier", "available", "verdict");
    for l in &r.runs {
        let _ = write!(o, "  {:>3} {:>12} {:>8}", l.run, thousands(l.offered_msg_per_s), fmt_factor(l.factor));
        for n in &names {
            let _ = write!(o, " {:>14}", p99_cell(l, n));
        }
        let avail = l.availability.map_or("-".into(), |a| format!("{:.3}%", a * 100.0));
        let verdict = if l.pass { "PASS" } else { "FAIL" };
        let _ = writeln!(o, " {avail:>10}  {verdict:<7} {}", busy_cell(l));
    }
    o += "\n";
    for line in headline(r) {
        let _ = writeln!(o, "{line}");
    }
    o
}

/// An SLO's name for a narrow column: `delivery latency` -> `delivery`.
fn short(name: &str) -> &str {
    name.strip_suffix(" latency").or_else(|| name.strip_suffix(" propagation")).unwrap_or(name)
}

fn fmt_factor(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}").trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The knee report in Markdown, readable on GitHub as it is.
pub fn render_knee_md(r: &KneeReport, plot: &str) -> String {
    let mut o = format!("# Knee of {} (seed {})\n\n", r.scenario_name, r.seed);
    for line in headline(r) {
        let _ = writeln!(o, "- {line}");
    }
    let _ = write!(
        o,
        "\nScenario file `{}`. The search started from the scenario's {} msg/s offered and scaled the 1:1 sends (and \
         each group's messages) together, users and fleet unchanged: doubling while every SLO held, halving while one \
         failed (x{} to x{}: {}), then bisecting until the bracket was within {}% or {} runs were made.\n\n![{plot}]({plot})\n\n",
        r.file,
        thousands(r.scenario_offered_msg_per_s),
        fmt_factor(r.limits.floor as f64 / r.limits.start as f64),
        fmt_factor(r.limits.ceiling as f64 / r.limits.start as f64),
        r.ceiling_note,
        pct(r.limits.tolerance),
        r.limits.runs_max
    );
    let names = slo_names(r);
    o += "| Run | Offered msg/s | x scenario |";
    for n in &names {
        let _ = write!(o, " {n} p99 (ms) |");
    }
    o += " Availability | Verdict | Busiest tier | What failed | Report |\n|---:|---:|---:|";
    o += &"---:|".repeat(names.len());
    o += "---:|---|---|---|---|\n";
    for l in &r.runs {
        let _ = write!(o, "| {} | {} | {} |", l.run, thousands(l.offered_msg_per_s), fmt_factor(l.factor));
        for n in &names {
            let _ = write!(o, " {} |", p99_cell(l, n));
        }
        let avail = l.availability.map_or("–".into(), |a| format!("{:.4}%", a * 100.0));
        let _ = writeln!(
            o,
            " {avail} | **{}** | {} | {} | [{dir}]({dir}/report.md) |",
            if l.pass { "PASS" } else { "FAIL" },
            busy_cell(l),
            l.failed.join("; "),
            dir = l.dir
        );
    }
    let _ = write!(o, "\n## Replay\n\n```sh\n{}\n```\n", r.replay);
    o
}

/// `knee.svg`: the p99 of each SLO metric against the offered load, the objectives as
/// horizontal lines and the knee as a vertical one.
pub fn render_knee_svg(r: &KneeReport) -> String {
    let names = slo_names(r);
    let series: Vec<crate::plot::KneeSeries> = names
        .iter()
        .map(|n| crate::plot::KneeSeries {
            name: format!("{n} p99"),
            points: r
                .runs
                .iter()
                .filter_map(|l| {
                    let v = l.slos.iter().find(|v| &v.name == n)?;
                    Some((l.offered_msg_per_s as f64, v.p99_ms?, v.verdict != "FAIL"))
                })
                .collect(),
        })
        .collect();
    // One line per objective, in the colour of its first SLO: SLOs that share one (delivery
    // and group delivery) share the line.
    let mut objectives: Vec<(f64, Vec<&str>, usize)> = Vec::new();
    for (k, n) in names.iter().enumerate() {
        let Some(objective_ms) = r.runs.iter().flat_map(|l| &l.slos).find(|v| &v.name == n).map(|v| v.objective_ms)
        else {
            continue;
        };
        match objectives.iter_mut().find(|o| o.0 == objective_ms) {
            Some(o) => o.1.push(short(n)),
            None => objectives.push((objective_ms, vec![short(n)], k)),
        }
    }
    let objectives: Vec<crate::plot::KneeObjective> = objectives
        .into_iter()
        .map(|(objective_ms, names, k)| crate::plot::KneeObjective {
            label: format!("SLO {}: p99 < {} ms", names.join(", "), ms(objective_ms)),
            ms: objective_ms,
            colour_of: k,
        })
        .collect();
    let knee = r.knee.as_ref().map(|k| {
        (
            k.offered_msg_per_s as f64,
            format!("{}: {} msg/s (x{:.2})", r.knee_label(), thousands(k.offered_msg_per_s), k.of_scenario),
        )
    });
    let title = format!("{}, seed {}: p99 latency against offered load", r.scenario_name, r.seed);
    crate::plot::knee_svg(&title, &series, &objectives, knee)
}
