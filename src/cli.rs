//! Subcommands and their plumbing: reading files, the progress bar, the real clock.

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasim_reports::{render_settings, render_summary, render_timing, ReportDir, Summary, Timing, Verdict};
use wasim_sim::{RunOptions, Scenario};

/// Deterministic simulation and capacity planning for a WhatsApp-scale messaging backend.
#[derive(Parser, Debug)]
#[command(name = "wasim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario file and report SLO verdicts, percentiles and per-tier load.
    ///
    /// Exit status: 0 when every SLO holds, 1 when one fails, 2 on bad input.
    Scenario {
        /// The scenario TOML file.
        file: PathBuf,
        /// Run seed (default: the scenario's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// Report folder (default: wasim-out/<scenario name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the summary as JSON on stdout instead of the table.
        #[arg(long)]
        json: bool,
        /// Write trace.csv with every event of this user's messages (default: the first
        /// user a network cut hits, if the scenario has one; else, from the first chat server
        /// crash on, one of its devices).
        #[arg(long, value_name = "USER")]
        trace_user: Option<u32>,
        /// Run the scenario's chat server crash again with each other placement policy of
        /// the load balancer (same seed) and compare how the fleet recovers (the card's
        /// task 1.1).
        #[arg(long)]
        compare_placements: bool,
        /// Run with the faults and workload `wasim fuzz` drew for this seed (its replay).
        #[arg(long, value_name = "SEED")]
        faults_of_seed: Option<u64>,
        /// With --faults-of-seed: the fuzz sweep's --faults (random, none or scenario).
        #[arg(long, value_name = "MODE", default_value = "random", value_parser = crate::fuzz::parse_faults_mode, requires = "faults_of_seed")]
        fuzz_faults: wasim_sim::fuzz::FaultsMode,
        /// With --faults-of-seed: the fuzz sweep's --liveness.
        #[arg(long, requires = "faults_of_seed")]
        liveness: bool,
        /// Run with this planted bug (builds with the `planted-bugs` feature only).
        #[arg(long, value_name = "NAME")]
        plant: Option<String>,
        /// Threads that run a tick's processes side by side (default: the machine's
        /// cores; 1 for runs that share the cores). The outputs are byte-identical whatever
        /// the count.
        #[arg(long, env = "WASIM_THREADS", value_parser = clap::value_parser!(u32).range(1..=64))]
        threads: Option<u32>,
        /// The utilisation each tier is sized to for the card's full load (report.md and
        /// summary.json's `sizing`): above 0, at most 1.
        #[arg(long, value_name = "RHO", default_value_t = wasim_sim::TARGET_UTILISATION, value_parser = parse_utilisation)]
        target_utilisation: f64,
        #[command(flatten)]
        multi: crate::multi::MultiArgs,
    },
    /// Fuzz a scenario: run many seeds, each with a random fault schedule and a random
    /// perturbation of the workload drawn from the seed (README, "Fuzzing"), each in a
    /// process of its own; print every failing seed's broken invariants and the command
    /// that replays it.
    ///
    /// Exit status: 0 when every seed passes, 1 when one fails, 2 on bad input.
    Fuzz {
        /// The scenario TOML file (scenarios/fuzz-small.toml is made for this).
        file: PathBuf,
        /// Seeds: `A..B` (B excluded) or `A..=B`.
        #[arg(long, default_value = "1..=100", value_parser = crate::fuzz::parse_seeds)]
        seeds: crate::fuzz::SeedRange,
        /// Seeds run at once, each in a process (default: the machine's cores).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
        jobs: Option<u32>,
        /// Run only every N-th seed of the range from its I-th (0-based), as `I/N`: a batch
        /// system's N machines each take one shard.
        #[arg(long, value_name = "I/N", value_parser = crate::fuzz::parse_shard)]
        shard: Option<(u64, u64)>,
        /// `random`: the scenario's faults and a random schedule per seed; `none`: no
        /// faults; `scenario`: the scenario's own faults only.
        #[arg(long, default_value = "random", value_parser = crate::fuzz::parse_faults_mode)]
        faults: wasim_sim::fuzz::FaultsMode,
        /// Print one JSON line per seed on stdout (in seed order); the summary goes to stderr.
        #[arg(long)]
        json: bool,
        /// Liveness mode: each run goes on for a minute after its last fault heals, so that
        /// whatever is still pending then has stalled (and fails invariants 1 and 8).
        #[arg(long)]
        liveness: bool,
        /// Instead of sweeping, shrink this failing seed: drop, shorten and move its faults,
        /// lower its users and load, shorten the run, while the same invariant still fails;
        /// write the smallest failing scenario as a TOML file.
        #[arg(long, value_name = "SEED", conflicts_with_all = ["shard", "json", "seeds"])]
        shrink: Option<u64>,
        /// Where --shrink writes the scenario (default: wasim-out/<name>-shrunk-<seed>.toml).
        #[arg(long, value_name = "FILE", requires = "shrink")]
        out: Option<PathBuf>,
        /// Run every seed with this planted bug, to see the checkers catch it (`list` lists
        /// them; builds with `--features planted-bugs` only).
        #[arg(long, value_name = "NAME")]
        plant: Option<String>,
        /// A seed still running after this many wall seconds is killed and fails.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        seed_limit_s: u64,
    },
    /// One seed of a fuzz sweep, run in this process; prints its result as a JSON line.
    #[command(hide = true)]
    FuzzSeed {
        file: PathBuf,
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value = "random", value_parser = crate::fuzz::parse_faults_mode)]
        faults: wasim_sim::fuzz::FaultsMode,
        #[arg(long)]
        liveness: bool,
        #[arg(long)]
        plant: Option<String>,
    },
    /// Measure speed and memory: run each scenario (release build) and print simulated
    /// seconds per wall second, events per wall second, peak memory, bytes per user and per
    /// message, and the memory estimate beside the peak. A scenario too large for the
    /// machine is not run: its row says so, with its estimate.
    Bench {
        /// The scenarios to measure (default: the 1% cell and the card's full load).
        #[arg(default_values = ["scenarios/cell-1pct.toml", "scenarios/peak.toml"])]
        files: Vec<PathBuf>,
        /// Runs to make of each; the median run is reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        runs: u32,
        /// Threads that run a tick's processes side by side (default: the machine's cores).
        #[arg(long, env = "WASIM_THREADS", value_parser = clap::value_parser!(u32).range(1..=64))]
        threads: Option<u32>,
        /// (Internal: a child measuring one of several scenarios ends with its table row.)
        #[arg(long, hide = true)]
        table_row: bool,
    },
    /// The card's "Scale & Estimation" table: each row's value on the card beside the value
    /// recomputed from its inputs (the card's, or a scenario's), the formula, and a flag
    /// where they disagree or the card contradicts itself; then polling against WebSockets
    /// for the same users and messages.
    ///
    /// Exit status: 0, or 2 on bad input.
    Estimate {
        /// A scenario whose users, load, heartbeat, fleet and groups replace the card's.
        file: Option<PathBuf>,
        /// table, md, csv or json.
        #[arg(long, default_value = "table", value_parser = parse_estimate_format)]
        format: wasim_reports::EstimateFormat,
        /// A report folder of a run of the scenario: its measured load per tier goes beside
        /// the predictions.
        #[arg(long, value_name = "DIR", requires = "file")]
        run: Option<PathBuf>,
    },
    /// Check the engine's queues against queueing theory: single-tier runs (Redis,
    /// Cassandra, Kafka, router, chat server; 1 and 4 workers; ρ = 0.5, 0.8, 0.9) beside
    /// the M/M/c closed form of their mean, p50 and p99 sojourn.
    ///
    /// Exit status: 0 when every row is within tolerance, 1 when one is not, 2 on bad usage.
    Calibrate {
        /// The short version CI runs: ρ = 0.5 and 0.8, 200,000 requests per row, 10%.
        #[arg(long)]
        quick: bool,
        /// Requests measured per row (default 2,000,000; 200,000 with --quick).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1_000..=100_000_000))]
        customers: Option<u64>,
        /// Largest relative error allowed, in percent (default 5; 10 with --quick).
        #[arg(long, value_parser = parse_percent)]
        tolerance: Option<f64>,
        /// Every link's one-way latency in ms (default 1, the tick: see the README on
        /// links shorter than the tick).
        #[arg(long, value_parser = parse_link_ms)]
        link_ms: Option<f64>,
        /// Seed of the first row (row i uses seed + i).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rows run at once (default: the machine's cores).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: Option<u32>,
        /// Print the rows as JSON on stdout instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_estimate_format(s: &str) -> Result<wasim_reports::EstimateFormat, String> {
    use wasim_reports::EstimateFormat as F;
    match s {
        "table" => Ok(F::Table),
        "md" | "markdown" => Ok(F::Markdown),
        "csv" => Ok(F::Csv),
        "json" => Ok(F::Json),
        _ => Err("one of table, md, csv, json".into()),
    }
}

fn parse_link_ms(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    // Whole microseconds, at most a second.
    if v.is_finite() && (0.001..=1_000.0).contains(&v) {
        Ok(v)
    } else {
        Err("a latency from 0.001 to 1000 ms".into())
    }
}

fn parse_utilisation(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err("a utilisation above 0 and at most 1 (0.7 is 70%)".into())
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if v.is_finite() && v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err("a percentage above 0 and at most 100".into())
    }
}

/// Exit status for bad input or usage, as clap uses for usage errors.
const EXIT_BAD_INPUT: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Scenario {
            file,
            seed,
            out,
            json,
            trace_user,
            compare_placements,
            faults_of_seed,
            fuzz_faults,
            liveness,
            plant,
            threads,
            target_utilisation,
            multi,
        } => {
            let plant = match crate::fuzz::plant(plant.as_deref()) {
                Ok(p) => p,
                Err(e) => return bad_input(e),
            };
            let asked =
                crate::multi::Asked { file: &file, seed, out: out.clone(), json, plant, threads, target_utilisation };
            if let Some(code) = crate::multi::dispatch(&multi, asked) {
                return code;
            }
            let faults_of_seed = faults_of_seed.map(|s| (s, fuzz_faults, liveness));
            let replaying = Replaying { faults_of_seed, plant, load_scale: multi.load_scale };
            let options = RunOptions { seed, trace_user, threads: jobs_or_cores(threads), progress_ms: None };
            scenario(&file, out, json, options, compare_placements, replaying, target_utilisation)
        }
        Command::Fuzz { file, seeds, jobs, shard, faults, json, liveness, shrink, out, plant, seed_limit_s } => {
            if plant.as_deref() == Some("list") {
                return crate::fuzz::list_plants();
            }
            let plant = match crate::fuzz::plant(plant.as_deref()) {
                Ok(p) => p,
                Err(e) => return bad_input(e),
            };
            // The scenario is read here once, so that a bad file is one clear error.
            let base = match load(&file) {
                Ok(s) => s,
                Err(e) => return bad_input(e),
            };
            match shrink {
                Some(seed) => crate::fuzz::shrink(&base, &file, seed, faults, liveness, out, plant),
                None => {
                    let seed_limit = Duration::from_secs(seed_limit_s);
                    crate::fuzz::Sweep { file: &file, seeds, jobs, shard, faults, json, liveness, plant, seed_limit }
                        .run()
                }
            }
        }
        Command::FuzzSeed { file, seed, faults, liveness, plant } => {
            match crate::fuzz::plant(plant.as_deref()).and_then(|_| load(&file)) {
                Ok(base) => crate::fuzz::run_seed(&base, seed, faults, liveness),
                Err(e) => bad_input(e),
            }
        }
        Command::Bench { files, runs, threads, table_row } => bench(&files, runs, jobs_or_cores(threads), table_row),
        Command::Estimate { file, format, run } => estimate(file.as_deref(), format, run.as_deref()),
        Command::Calibrate { quick, customers, tolerance, link_ms, seed, jobs, json } => {
            calibrate(quick, customers, tolerance, link_ms, seed, jobs, json)
        }
    }
}

fn calibrate(
    quick: bool,
    customers: Option<u64>,
    tolerance: Option<f64>,
    link_ms: Option<f64>,
    seed: u64,
    jobs: Option<u32>,
    json: bool,
) -> ExitCode {
    use wasim_sim::calibrate::{plan, run_row, RowResult};
    let rhos: &[f64] = if quick { &[0.5, 0.8] } else { &[0.5, 0.8, 0.9] };
    let customers = customers.unwrap_or(if quick { 200_000 } else { 2_000_000 });
    let tolerance = tolerance.unwrap_or(if quick { 10.0 } else { 5.0 }) / 100.0;
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; calibrate with `cargo run --release -- calibrate`");
    }
    let rows = plan(rhos, customers, link_ms.unwrap_or(wasim_sim::calibrate::LINK_MS));
    let jobs = jobs_or_cores(jobs);
    eprintln!("calibrate: {} rows of {customers} requests, {jobs} at a time", rows.len());
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<RowResult>>> = std::sync::Mutex::new(vec![None; rows.len()]);
    let done = AtomicU64::new(0);
    // Each row is its own simulation (its own madsim runtime) on a thread of its own.
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(rows.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(row) = rows.get(i) else { break };
                let t = Instant::now();
                let r = run_row(row, seed.wrapping_add(i as u64));
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                eprintln!(
                    "  [{n}/{}] {} c={} ρ={}: largest error {:.2}% ({:.1} s wall)",
                    rows.len(),
                    row.tier.name(),
                    row.workers,
                    row.rho,
                    r.worst_error() * 100.0,
                    t.elapsed().as_secs_f64()
                );
                results.lock().expect("results lock")[i] = Some(r);
            });
        }
    });
    let results: Vec<RowResult> =
        results.into_inner().expect("results lock").into_iter().map(|r| r.expect("every row ran")).collect();
    eprintln!("calibrate: {:.1} s wall", started.elapsed().as_secs_f64());
    if json {
        println!("{}", serde_json::to_string_pretty(&results).expect("rows serialise"));
    } else {
        print!("{}", wasim_reports::render_calibration(&results, tolerance));
    }
    if wasim_reports::calibration_passes(&results, tolerance) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `wasim estimate`: the card's table, from the card's inputs or a scenario's.
fn estimate(file: Option<&Path>, format: wasim_reports::EstimateFormat, run: Option<&Path>) -> ExitCode {
    use wasim_sim::estimate::{estimate, transports, EstimateInputs};
    let scenario = match file.map(Scenario::load).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let (inputs, from, against_card) = match (&scenario, file) {
        (Some(s), Some(f)) => (s.estimate_inputs(), format!("{} (the card's where it has none)", f.display()), false),
        _ => (EstimateInputs::card(), "the card".to_string(), true),
    };
    let measured = match run.map(measured_tiers).transpose() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let mut report = wasim_reports::EstimateReport::new(&from, &estimate(&inputs, against_card), &transports(&inputs));
    if let Some(s) = &scenario {
        report.tiers = wasim_sim::predicted_load(s)
            .iter()
            .map(|load| {
                let m =
                    measured.as_ref().and_then(|m| m.iter().find(|(t, _, _)| t == load.tier)).map(|&(_, o, u)| (o, u));
                wasim_reports::TierAnalytic::new(load, m)
            })
            .collect();
        report.run = run.map(|d| d.display().to_string());
    }
    print!("{}", wasim_reports::render_estimate(&report, format));
    ExitCode::SUCCESS
}

/// A run folder's measured load per tier: (tier, operations a second per node, mean
/// utilisation), from its summary.json.
fn measured_tiers(dir: &Path) -> Result<Vec<(String, f64, f64)>, String> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a run's summary: {e}", path.display()))?;
    let tiers = json["tiers"].as_array().ok_or_else(|| format!("{}: no `tiers` in it", path.display()))?;
    tiers
        .iter()
        .map(|t| {
            let field =
                |name: &str| t[name].as_f64().ok_or_else(|| format!("{}: a tier without `{name}`", path.display()));
            let tier = t["tier"].as_str().ok_or_else(|| format!("{}: a tier without `tier`", path.display()))?;
            Ok((tier.to_string(), field("ops_per_s_per_node")?, field("utilisation_mean")?))
        })
        .collect()
}

/// Load a scenario and check it fits the machine; the error is ready to print.
pub(crate) fn load(file: &Path) -> Result<Scenario, String> {
    let scenario = Scenario::load(file).map_err(|e| e.to_string())?;
    check_memory(&scenario).map_err(|message| format!("{}: {message}", file.display()))?;
    Ok(scenario)
}

/// Run the simulation with a progress bar, timing it on the real clock.
fn timed_run(scenario: &Scenario, options: &RunOptions) -> (wasim_sim::Outcome, Timing) {
    fit_allocator(scenario);
    let progress = Arc::new(AtomicU64::new(0));
    let bar = spawn_progress(progress.clone(), scenario.total_s() * 1_000, scenario.warmup_s * 1_000);
    let started = Instant::now();
    let outcome = wasim_sim::run(scenario, &RunOptions { progress_ms: Some(progress), ..options.clone() });
    let wall_s = started.elapsed().as_secs_f64();
    let (rss_at_warmup_end, startup) = bar.finish();
    let peak_rss_bytes = peak_rss_bytes();
    let simulated_s = outcome.simulated_s() as f64;
    let events = outcome.counters.events;
    let timing = Timing {
        simulated_s,
        wall_s,
        startup_s: startup.map(|d| d.as_secs_f64()),
        simulated_per_wall_s: simulated_s / wall_s,
        events,
        events_per_wall_s: events as f64 / wall_s,
        peak_rss_bytes,
        bytes_per_user: peak_rss_bytes.map(|b| b as f64 / scenario.users.concurrent as f64),
        bytes_per_user_at_warmup_end: rss_at_warmup_end.map(|b| b as f64 / scenario.users.concurrent as f64),
        // What the measured window added to the peak, per message sent in it: the state
        // that grows with messages (rows, logs, in-flight work), apart from the users'.
        bytes_per_message: match (peak_rss_bytes, rss_at_warmup_end) {
            (Some(peak), Some(warm)) if outcome.counters.sends_measured > 0 => {
                Some(peak.saturating_sub(warm) as f64 / outcome.counters.sends_measured as f64)
            }
            _ => None,
        },
    };
    (outcome, timing)
}

fn bench(files: &[PathBuf], runs: u32, threads: usize, table_row: bool) -> ExitCode {
    // Every file is read first: a bad one stops the benchmark before anything runs.
    let mut scenarios = Vec::new();
    for file in files {
        match Scenario::load(file) {
            Ok(s) => scenarios.push((file, s)),
            Err(e) => return bad_input(e),
        }
    }
    if cfg!(debug_assertions) && !table_row {
        eprintln!("warning: this is a debug build; benchmark with `cargo run --release -- bench`");
    }
    let mut rows = Vec::new();
    for (file, scenario) in scenarios {
        // Several scenarios: each is measured in a process of its own, so that none
        // reports the heap another left behind (an allocator keeps freed memory resident).
        let row = if files.len() > 1 {
            match bench_in_child(file, runs, threads) {
                Ok(row) => row,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            }
        } else {
            bench_here(file, &scenario, runs, threads)
        };
        rows.push(row);
    }
    if table_row {
        let row = rows.pop().expect("one scenario");
        println!("{TABLE_ROW}{}", serde_json::to_string(&row).expect("a row serialises"));
    } else {
        print!("{}", render_bench_rows(&rows));
    }
    ExitCode::SUCCESS
}

/// What starts the line a child measuring one scenario ends with: its row, as JSON.
const TABLE_ROW: &str = "table-row ";

/// Measure one scenario in this process.
fn bench_here(file: &Path, scenario: &Scenario, runs: u32, threads: usize) -> BenchRow {
    println!(
        "bench {} ({}): {runs} run(s), seed {}, {threads} thread(s)",
        scenario.name,
        file.display(),
        scenario.seed
    );
    let estimate = estimate_here(scenario, mem_available_bytes());
    if let Err(refusal) = check_memory(scenario) {
        println!("  not run: {refusal}");
        return BenchRow { name: scenario.name.clone(), timing: None, estimate: estimate.bytes };
    }
    let options = RunOptions { seed: Some(scenario.seed), threads, ..RunOptions::default() };
    let mut timings: Vec<Timing> = (1..=runs)
        .map(|i| {
            reset_peak_rss();
            let (_, t) = timed_run(scenario, &options);
            println!("  run {i}: {}", render_timing(&t).trim_end());
            t
        })
        .collect();
    timings.sort_by(|a, b| a.simulated_per_wall_s.total_cmp(&b.simulated_per_wall_s));
    let median = timings.swap_remove(timings.len() / 2);
    print!("  median: {}", render_timing(&median));
    BenchRow { name: scenario.name.clone(), timing: Some(median), estimate: estimate.bytes }
}

/// Measure one scenario in a child process of this executable, passing its lines through.
fn bench_in_child(file: &Path, runs: u32, threads: usize) -> Result<BenchRow, String> {
    use std::io::BufRead as _;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .arg("bench")
        .arg(file)
        .args(["--runs", &runs.to_string(), "--threads", &threads.to_string(), "--table-row"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start a child: {e}"))?;
    let mut row = None;
    for line in std::io::BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.map_err(|e| format!("reading the child's output: {e}"))?;
        match line.strip_prefix(TABLE_ROW) {
            Some(json) => row = Some(serde_json::from_str(json).map_err(|e| format!("the child's row: {e}"))?),
            None => println!("{line}"),
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for the child: {e}"))?;
    match row {
        Some(row) if status.success() => Ok(row),
        _ => Err(format!("the measuring process failed ({status})")),
    }
}

/// One scenario's line of the benchmark's closing table: its median run (none if the
/// machine could not hold it) and the memory the estimate gave it.
#[derive(serde::Serialize, serde::Deserialize)]
struct BenchRow {
    name: String,
    timing: Option<Timing>,
    estimate: u64,
}

fn render_bench_rows(rows: &[BenchRow]) -> String {
    use std::fmt::Write as _;
    let mib = |b: f64| b / f64::from(1u32 << 20);
    let mut o = String::from(
        "\nscenario             start-up s   sim s/wall s   events/wall s   peak MiB   estimate MiB (÷ peak)   bytes/user (at warm-up end)   bytes/message\n",
    );
    for r in rows {
        let _ = write!(o, "{:<20} ", r.name);
        let Some(t) = &r.timing else {
            let _ = writeln!(o, "not run: estimated {:.0} MiB, more than this machine has", mib(r.estimate as f64));
            continue;
        };
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "-".to_string(), f);
        let peak = t.peak_rss_bytes.map(|b| b as f64);
        let _ = writeln!(
            o,
            "{:>10}   {:>12.3}   {:>12.2}M   {:>8}   {:>12} ({:>5})   {:>10} ({:>10})   {:>13}",
            opt(t.startup_s, &|s| format!("{s:.2}")),
            t.simulated_per_wall_s,
            t.events_per_wall_s / 1e6,
            opt(peak, &|p| format!("{:.0}", mib(p))),
            format!("{:.0}", mib(r.estimate as f64)),
            opt(peak, &|p| format!("{:.2}", r.estimate as f64 / p)),
            opt(t.bytes_per_user, &|b| format!("{b:.0}")),
            opt(t.bytes_per_user_at_warmup_end, &|b| format!("{b:.0}")),
            opt(t.bytes_per_message, &|b| format!("{b:.0}")),
        );
    }
    o
}

/// `jobs`, or the core count by default.
pub(crate) fn jobs_or_cores(jobs: Option<u32>) -> usize {
    jobs.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |j| j as usize)
}

pub(crate) fn bad_input(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// How a `wasim scenario` run replays a fuzzed seed: the seed whose faults it takes, with
/// the sweep's fault mode and liveness, if any, and the planted bug, if any; and the factor
/// on its load (`--load-scale`), if any.
struct Replaying {
    faults_of_seed: Option<(u64, wasim_sim::fuzz::FaultsMode, bool)>,
    plant: Option<wasim_sim::plant::Plant>,
    load_scale: Option<f64>,
}

fn scenario(
    file: &Path,
    out: Option<PathBuf>,
    json: bool,
    options: RunOptions,
    compare_placements: bool,
    replaying: Replaying,
    target_utilisation: f64,
) -> ExitCode {
    let Replaying { faults_of_seed: fuzzed, plant, load_scale } = replaying;
    let mut scenario = match load(file) {
        Ok(s) => s,
        Err(e) => return bad_input(e),
    };
    if let Some(x) = load_scale {
        scenario = match crate::multi::scaled(&scenario, x) {
            Ok(s) => s,
            Err(e) => return bad_input(e),
        };
    }
    if let Some((fault_seed, mode, liveness)) = fuzzed {
        scenario = crate::fuzz::fuzzed(&scenario, fault_seed, mode, liveness);
    }
    if compare_placements && !scenario.crashes_a_chat_server() {
        return bad_input(format!(
            "--compare-placements: {} crashes no chat server (add a [[faults]] kind = \"crash\", target = \"chat_server-N\")",
            file.display()
        ));
    }
    if options.trace_user.is_some_and(|u| u64::from(u) >= scenario.users.concurrent) {
        return bad_input(format!("--trace-user: the scenario has users 0 to {}", scenario.users.concurrent - 1));
    }
    // The scenario's name is validated to stay inside wasim-out/. The folder is checked
    // before the run, so that a bad --out costs nothing.
    let dir = out.unwrap_or_else(|| Path::new("wasim-out").join(&scenario.name));
    let report = match ReportDir::prepare(&dir) {
        Ok(r) => r,
        Err(e) => return bad_input(format!("cannot write the report to {}: {e}", dir.display())),
    };
    let seed = options.seed.unwrap_or(scenario.seed);
    let options = RunOptions { seed: Some(seed), ..options };
    let file_label = file.display().to_string();
    let settings = render_settings(&scenario, seed, &file_label);
    if json {
        eprint!("{settings}");
    } else {
        print!("{settings}");
    }

    let (outcome, timing) = timed_run(&scenario, &options);
    let mut summary = Summary::with_target(&outcome, &file_label, target_utilisation);
    if let Some((fault_seed, mode, liveness)) = fuzzed {
        summary.replay += &crate::fuzz::replay_flags(fault_seed, mode, liveness);
    }
    summary.replay += &crate::fuzz::plant_flag(plant);
    summary.replay += &load_scale.map_or(String::new(), |x| format!(" --load-scale {x}"));
    if compare_placements {
        let mut rows = vec![wasim_reports::PlacementRow::of(&summary)];
        for placement in wasim_sim::PlacementPolicy::ALL.into_iter().filter(|&p| p != scenario.balancer.placement) {
            let mut other = scenario.clone();
            other.balancer.placement = placement;
            eprintln!("compare placements: the same crash with {}", placement.name());
            let (o, _) = timed_run(&other, &RunOptions { trace_user: None, ..options.clone() });
            rows.push(wasim_reports::PlacementRow::of(&Summary::new(&o, &file_label)));
        }
        summary.placement_comparison = rows;
    }
    if let Err(e) = report.write(&outcome, &summary, &timing) {
        eprintln!("error: cannot write the report to {}: {e}", dir.display());
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&summary).expect("summary serialises"));
        eprint!("{}", render_timing(&timing));
    } else {
        print!("{}", render_summary(&summary));
        print!("{}", render_timing(&timing));
        println!("Report: {}", dir.display());
    }
    match summary.verdict {
        Verdict::Fail => ExitCode::from(1),
        Verdict::Pass | Verdict::NoData => ExitCode::SUCCESS,
    }
}

/// Refuse a scenario whose estimated memory exceeds what the machine has available.
pub(crate) fn check_memory(s: &Scenario) -> Result<(), String> {
    let Some(available) = mem_available_bytes() else { return Ok(()) };
    let needed = estimate_here(s, Some(available));
    if needed.bytes > available {
        let mapped = if needed.mapped { " (mapping its large buffers)" } else { "" };
        return Err(format!(
            "too large for this machine: estimated {:.1} GiB of memory{mapped}, {:.1} GiB available (reduce users.concurrent, workload.messages_per_s or duration_s)",
            needed.bytes as f64 / (1u64 << 30) as f64,
            available as f64 / (1u64 << 30) as f64
        ));
    }
    Ok(())
}

/// The memory estimate of a run here, and whether it maps its large buffers.
struct EstimateHere {
    bytes: u64,
    mapped: bool,
}

/// The memory estimate of a run of `s` on a machine with `available` bytes free: a run
/// whose estimate is over a quarter of them maps its large buffers (see `fit_allocator`),
/// and peaks at `MAPPED_PEAK_SHARE` of it.
fn estimate_here(s: &Scenario, available: Option<u64>) -> EstimateHere {
    let bytes = s.estimated_memory_bytes();
    if available.is_some_and(|available| bytes > available / 4) {
        EstimateHere { bytes: (bytes as f64 * wasim_sim::MAPPED_PEAK_SHARE) as u64, mapped: true }
    } else {
        EstimateHere { bytes, mapped: false }
    }
}

fn read_kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1_024)
}

/// Set glibc's mmap threshold for a run (fixed either way, so that a run behaves the same
/// whatever ran before it in the process). glibc moves it up to the size of any mapped
/// block freed (up to 32 MiB): after the first large buffer of a run is freed, the next
/// ones (tables as they grow, wheel buckets, logs) come from the heap, where one freed
/// between live allocations stays with the process. A run whose estimate is over a
/// quarter of the memory available maps every buffer over 128 KiB, which goes back to the
/// system when freed (the full load at 1%: a 5 to 7% lower peak, up to 10% fewer events a
/// wall second: the pages are faulted in again); others take everything under 32 MiB from the
/// heap (cell-1pct: as fast as glibc's own setting, 5% more memory).
fn fit_allocator(scenario: &Scenario) {
    let bound = estimate_here(scenario, mem_available_bytes()).mapped;
    let threshold = if bound { 128 << 10 } else { 32 << 20 };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator, which takes its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = threshold;
}

pub(crate) fn mem_available_bytes() -> Option<u64> {
    read_kib("/proc/meminfo", "MemAvailable:")
}

fn peak_rss_bytes() -> Option<u64> {
    read_kib("/proc/self/status", "VmHWM:")
}

fn rss_bytes() -> Option<u64> {
    read_kib("/proc/self/status", "VmRSS:")
}

/// Reset the process's peak-memory mark (Linux: `5` to clear_refs), so each benchmark run
/// reports its own peak. The allocator first hands back what the last run freed, which it
/// would otherwise keep resident (a small scenario measured after a large one would report
/// the large one's heap). Where that is not possible, later runs report the process's peak.
fn reset_peak_rss() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free heap pages to the system; no memory in use
    // moves.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A progress bar on another thread, which reads the real clock; the simulation thread
/// only publishes the simulated milliseconds it reached.
/// It also notes the resident memory when the simulation passes `warmup_ms` (the end of the
/// warm-up: users connected, sends about to be measured), and the start-up: the wall time
/// until the first simulated millisecond is done (the processes' state built), which the
/// bar shows as it goes.
fn spawn_progress(progress: Arc<AtomicU64>, total_ms: u64, warmup_ms: u64) -> ProgressGuard {
    let bar = ProgressBar::new(total_ms);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg}simulated {pos}/{len} ms [{bar:30}] {percent}% · {elapsed} wall · eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message("building the users' state (devices, sessions, presence, connections) · ");
    let done = Arc::new(AtomicBool::new(false));
    let (b, d) = (bar.clone(), done.clone());
    let started = Instant::now();
    let thread = std::thread::spawn(move || {
        let (mut at_warmup_end, mut startup) = (None, None);
        while !d.load(Ordering::Relaxed) {
            let ms = progress.load(Ordering::Relaxed);
            b.set_position(ms);
            if startup.is_none() && ms > 0 {
                startup = Some(started.elapsed());
                b.set_message("");
            }
            if at_warmup_end.is_none() && ms >= warmup_ms {
                at_warmup_end = rss_bytes();
            }
            // Often until the warm-up ends, so the memory then is read close to it.
            std::thread::sleep(Duration::from_millis(if at_warmup_end.is_none() { 5 } else { 100 }));
        }
        (at_warmup_end, startup)
    });
    ProgressGuard { bar, done, thread: Some(thread) }
}

struct ProgressGuard {
    bar: ProgressBar,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Option<u64>, Option<Duration>)>>,
}

impl ProgressGuard {
    /// Stop the display; the resident memory at the end of the warm-up and the start-up,
    /// if they were read.
    fn finish(mut self) -> (Option<u64>, Option<Duration>) {
        self.done.store(true, Ordering::Relaxed);
        let read = self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default();
        self.bar.finish_and_clear();
        read
    }
}
