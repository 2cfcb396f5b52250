//! `wasim scenario FILE --seeds N` and `wasim scenario FILE --find-max-load`: many runs of a
//! scenario, each a child process of this executable writing its own report folder under the
//! output folder; `wasim_reports::multi` sums them up. Only the plumbing lives here: which runs
//! to make (the knee search is `wasim_sim::knee`), the processes, the files.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use wasim_reports::multi::{
    render_knee_md, render_knee_svg, render_knee_table, render_seeds_md, render_seeds_table, KneeReport, KneeRun,
    KneeSearch, RunDigest, SeedRun, SeedsReport,
};
use wasim_sim::knee::{next_step, scale_load, KneeLimits, KneeStep};
use wasim_sim::plant::Plant;
use wasim_sim::{thousands, Scenario};

/// The most seeds one `--seeds` takes: a spread needs tens, a sweep is `wasim fuzz`'s job.
const SEEDS_MAX: u32 = 1_000;
/// Resamples of the bootstrap: enough that the 2.5% and 97.5% quantiles move by less than
/// the values' own resolution between generator seeds.
const BOOTSTRAP_RESAMPLES: usize = 10_000;
/// The search scales the scenario's load by at most this much either way.
const KNEE_FACTOR_MAX: u64 = 64;
/// A run still going after this much wall time is killed (and fails). No run of a scenario
/// that fits the machine takes a day.
const RUN_WALL_LIMIT: Duration = Duration::from_secs(86_400);

/// The options of `wasim scenario` that make many runs, and the load factor its runs take.
#[derive(clap::Args, Debug)]
pub struct MultiArgs {
    /// Run N seeds (the scenario's seed, or --seed, and the N-1 after it), each in a process
    /// of its own writing its report to OUT/seed-<S>/; print and write (OUT/seeds.json,
    /// OUT/seeds.md) each SLO's min, median, max and a 95% bootstrap interval of the median,
    /// and the share of seeds that pass. Exit 0 when every seed passes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=i64::from(SEEDS_MAX)),
          conflicts_with_all = ["compare_placements", "faults_of_seed", "trace_user", "find_max_load"])]
    pub seeds: Option<u32>,
    /// With --seeds: runs at once, each on one thread (default: the machine's cores, fewer if
    /// their memory would not fit).
    #[arg(long, requires = "seeds", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: Option<u32>,
    /// Find the highest offered load at which every SLO holds (the seed fixed): scale the
    /// scenario's load x2 while runs pass (up to x64) or /2 while they fail (down to /64),
    /// then bisect; each run writes OUT/load-<msg/s>/. Writes OUT/knee.json, knee.md and
    /// knee.svg. Exit 0 when a knee was found, 1 when the search ended without one.
    #[arg(long, conflicts_with_all = ["compare_placements", "faults_of_seed", "trace_user", "load_scale"])]
    pub find_max_load: bool,
    /// With --find-max-load: stop when the lowest failing load is within this many percent
    /// above the highest passing one.
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0, requires = "find_max_load", value_parser = parse_tolerance)]
    pub knee_tolerance: f64,
    /// With --find-max-load: runs to make at most (12 always reach 5% within x64).
    #[arg(long, value_name = "N", default_value_t = 12, requires = "find_max_load",
          value_parser = clap::value_parser!(u32).range(2..=64))]
    pub knee_runs_max: u32,
    /// Multiply the scenario's offered load by FACTOR: its 1:1 messages per second and, with
    /// groups, each group's messages per second (users and fleet unchanged).
    #[arg(long, value_name = "FACTOR", value_parser = parse_load_scale)]
    pub load_scale: Option<f64>,
}

fn parse_tolerance(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if v.is_finite() && (0.1..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err("a percentage from 0.1 to 100".into())
    }
}

fn parse_load_scale(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if v.is_finite() && v > 0.0 && v <= 1e6 {
        Ok(v)
    } else {
        Err("a factor above 0 and at most 1,000,000".into())
    }
}

/// `scenario` with its load scaled by `factor` (`--load-scale`), if it fits the limits and
/// the machine.
pub fn scaled(scenario: &Scenario, factor: f64) -> Result<Scenario, String> {
    let s = scale_load(scenario, factor).map_err(|e| format!("--load-scale {factor}: the scaled scenario's {e}"))?;
    crate::cli::check_memory(&s).map_err(|e| format!("--load-scale {factor}: {e}"))?;
    Ok(s)
}

/// What `wasim scenario` was asked for besides these options.
pub struct Asked<'a> {
    pub file: &'a Path,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
    pub json: bool,
    pub plant: Option<Plant>,
    pub threads: Option<u32>,
    /// The utilisation each run's sizing is made for.
    pub target_utilisation: f64,
}

/// Run `--seeds` or `--find-max-load` if asked; `None` when neither was (a single run).
pub fn dispatch(args: &MultiArgs, asked: Asked<'_>) -> Option<ExitCode> {
    if args.seeds.is_none() && !args.find_max_load {
        return None;
    }
    let mut scenario = match crate::cli::load(asked.file) {
        Ok(s) => s,
        Err(e) => return Some(crate::cli::bad_input(e)),
    };
    if let Some(x) = args.load_scale {
        scenario = match scaled(&scenario, x) {
            Ok(s) => s,
            Err(e) => return Some(crate::cli::bad_input(e)),
        };
    }
    let suffix = if args.find_max_load { "knee" } else { "seeds" };
    let out = asked.out.clone().unwrap_or_else(|| Path::new("wasim-out").join(format!("{}-{suffix}", scenario.name)));
    if let Err(e) = prepare_out(&out) {
        return Some(crate::cli::bad_input(format!("cannot write to {}: {e}", out.display())));
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Some(crate::cli::bad_input(format!("cannot find the wasim executable to run with: {e}"))),
    };
    let runs = Runs {
        exe,
        file: asked.file,
        plant: asked.plant,
        load_scale: args.load_scale,
        target_utilisation: asked.target_utilisation,
    };
    let seed = asked.seed.unwrap_or(scenario.seed);
    Some(match args.seeds {
        Some(n) => seeds(&runs, &scenario, seed, n, args.jobs, &out, asked.json),
        None => {
            let threads = crate::cli::jobs_or_cores(asked.threads);
            let search = (args.knee_tolerance, args.knee_runs_max as usize);
            knee(&runs, &scenario, seed, search, threads, &out, asked.json)
        }
    })
}

/// The output folder: made if missing; one holding anything these runs do not write there
/// is refused, so that `--out ~` cannot mix reports into a user's files.
fn prepare_out(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let ours = |name: &str| {
        let name = name.strip_prefix('.').unwrap_or(name);
        name.starts_with("seed-")
            || name.starts_with("load-")
            || matches!(name, "seeds.json" | "seeds.md" | "knee.json" | "knee.md" | "knee.svg")
    };
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let name = entry.map_err(|e| e.to_string())?.file_name().to_string_lossy().into_owned();
        if !ours(&name) {
            return Err(format!(
                "it holds `{name}`, which wasim does not write there: refusing to mix reports into it (choose another --out)"
            ));
        }
    }
    Ok(())
}

/// Write `files` (name, text) into `dir`.
fn write_files(dir: &Path, files: &[(&str, &str)]) -> Result<(), String> {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// How each run is made: this executable on the scenario file, as `wasim scenario`.
struct Runs<'a> {
    exe: PathBuf,
    file: &'a Path,
    plant: Option<Plant>,
    /// The user's --load-scale, passed on to every run (the knee search sets its own).
    load_scale: Option<f64>,
    /// The user's --target-utilisation, passed on to every run.
    target_utilisation: f64,
}

impl Runs<'_> {
    /// Run the scenario with `seed` at `load_scale` on `threads` threads, its report in
    /// `dir`; its summary, or why there is none.
    fn run(&self, seed: u64, load_scale: Option<f64>, threads: usize, dir: &Path) -> Result<RunDigest, String> {
        let mut c = Command::new(&self.exe);
        c.arg("scenario").arg(self.file).arg("--seed").arg(seed.to_string()).arg("--json");
        c.arg("--threads").arg(threads.to_string()).arg("--out").arg(dir);
        if let Some(x) = load_scale.or(self.load_scale) {
            c.arg("--load-scale").arg(x.to_string());
        }
        if let Some(p) = self.plant {
            c.arg("--plant").arg(p.name());
        }
        c.arg("--target-utilisation").arg(self.target_utilisation.to_string());
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let o = crate::children::run_with_limit(c, RUN_WALL_LIMIT, "a day of wall time")
            .map_err(|e| format!("could not start the run: {e}"))?;
        match o.status.code() {
            // 0: every SLO holds; 1: one fails. Either way the summary is on stdout.
            Some(0 | 1) => RunDigest::from_summary_json(&String::from_utf8_lossy(&o.stdout)),
            Some(2) => {
                let stderr = String::from_utf8_lossy(&o.stderr);
                Err(format!("the run was refused: {}", stderr.lines().last().unwrap_or("")))
            }
            _ => Err(crate::children::why_died(&o)),
        }
    }

    /// The command that makes this report again.
    fn replay(&self, flags: &str) -> String {
        let plant = self.plant.map_or(String::new(), |p| format!(" --plant {}", p.name()));
        format!("wasim scenario {}{flags}{plant}", self.file.display())
    }
}

/// One run's SLOs in a line, for the progress on stderr.
fn progress_line(r: &Result<RunDigest, String>) -> String {
    match r {
        Ok(d) => {
            let slos: Vec<String> =
                d.slos.iter().map(|v| format!("{} p99 {:.1} ms {}", v.name, v.measured_ms, v.verdict)).collect();
            format!("{} · {}", d.verdict, slos.join(" · "))
        }
        Err(e) => format!("DIED · {e}"),
    }
}

/// How many runs of `scenario` fit in memory at once (at least one: `load` checked that).
fn jobs_that_fit(scenario: &Scenario, jobs: usize) -> usize {
    let each = scenario.estimated_memory_bytes().max(1);
    crate::cli::mem_available_bytes().map_or(jobs, |available| jobs.min((available / each).max(1) as usize))
}

/// `--seeds N`: N seeds from `first`, `jobs` at a time.
fn seeds(
    runs: &Runs<'_>,
    scenario: &Scenario,
    first: u64,
    n: u32,
    jobs: Option<u32>,
    out: &Path,
    json: bool,
) -> ExitCode {
    let seeds: Vec<u64> = (0..u64::from(n)).map(|i| first.wrapping_add(i)).collect();
    let jobs = jobs_that_fit(scenario, crate::cli::jobs_or_cores(jobs));
    eprintln!(
        "{}: {n} seeds from {first}, {jobs} at a time, each in a process of its own on one thread; reports in {}/seed-<S>/",
        scenario.name,
        out.display()
    );
    let started = Instant::now();
    let dir = |seed: u64| out.join(format!("seed-{seed}"));
    let mut results: Vec<Option<Result<RunDigest, String>>> = vec![None; seeds.len()];
    let mut done = 0;
    crate::children::pool(
        seeds.len(),
        jobs,
        |i| {
            let t = Instant::now();
            (runs.run(seeds[i], None, 1, &dir(seeds[i])), t.elapsed())
        },
        |i, (result, wall)| {
            done += 1;
            let s = wall.as_secs_f64();
            eprintln!("  seed {}: {} ({done}/{n} done, {s:.1} s wall)", seeds[i], progress_line(&result));
            results[i] = Some(result);
        },
    );
    let runs_done: Vec<SeedRun> = seeds
        .iter()
        .zip(results)
        .map(|(&seed, r)| SeedRun { seed, dir: format!("seed-{seed}"), result: r.expect("every seed ran") })
        .collect();
    if runs_done.iter().all(|r| r.result.is_err()) {
        eprintln!(
            "error: no seed's run produced a summary; the first said: {}",
            runs_done[0].result.as_ref().err().map_or("", |e| e.as_str())
        );
        return ExitCode::from(1);
    }
    let scale = runs.load_scale.map_or(String::new(), |x| format!(" --load-scale {x}"));
    let replay = runs.replay(&format!(" --seeds {n} --seed {first}{scale}"));
    let file = runs.file.display().to_string();
    let report = SeedsReport::new(&scenario.name, &file, runs_done, BOOTSTRAP_RESAMPLES, first, replay);
    let report_json = serde_json::to_string_pretty(&report).expect("the report serialises") + "\n";
    let files = [("seeds.json", report_json.as_str()), ("seeds.md", &render_seeds_md(&report))];
    if let Err(e) = write_files(out, &files) {
        return crate::cli::bad_input(e);
    }
    if json {
        print!("{report_json}");
    } else {
        print!("{}", render_seeds_table(&report));
        println!("Reports: {} (seeds.json, seeds.md)", out.display());
    }
    eprintln!("{n} seeds in {:.1} s wall", started.elapsed().as_secs_f64());
    if report.all_pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The highest load the search may try: the scenario's x64, or less where the limits of a
/// scenario or the machine's memory refuse it; and why.
fn knee_ceiling(scenario: &Scenario) -> (u64, String) {
    let base = scenario.workload.messages_per_s;
    let fits = |load: u64| {
        let s = scale_load(scenario, load as f64 / base as f64).map_err(|e| format!("its {e}"))?;
        crate::cli::check_memory(&s)
    };
    let top = base.saturating_mul(KNEE_FACTOR_MAX);
    let Err(why) = fits(top) else {
        return (top, format!("the ceiling is x{KNEE_FACTOR_MAX}, the search's limit"));
    };
    // The largest load that fits, by bisection: the base fits (it was loaded), the top not.
    let (mut fit, mut not) = (base, top);
    while not - fit > 1 {
        let mid = fit + (not - fit) / 2;
        if fits(mid).is_ok() {
            fit = mid;
        } else {
            not = mid;
        }
    }
    let top = thousands(top);
    (
        fit,
        format!(
            "the ceiling is {} msg/s, the most this scenario may offer: at x{KNEE_FACTOR_MAX} ({top} msg/s) {why}",
            thousands(fit)
        ),
    )
}

/// Everything a scenario offers a second: 1:1 and group sends.
fn offered(s: &Scenario) -> u64 {
    s.workload.messages_per_s + (f64::from(s.groups.active) * s.groups.messages_per_group_per_s).round() as u64
}

/// Make the runs the knee search asks for, one at a time on `threads` threads; the runs in
/// the order made, and how the search ended.
fn search_knee(
    runs: &Runs<'_>,
    scenario: &Scenario,
    seed: u64,
    limits: &KneeLimits,
    threads: usize,
    out: &Path,
) -> (Vec<KneeRun>, KneeStep) {
    let base = scenario.workload.messages_per_s;
    let mut tried: Vec<(u64, bool)> = Vec::new();
    let mut made: Vec<KneeRun> = Vec::new();
    loop {
        let load = match next_step(&tried, limits) {
            KneeStep::Try { load } => load,
            end => return (made, end),
        };
        let factor = load as f64 / base as f64;
        let t = Instant::now();
        let result = runs.run(seed, Some(factor), threads, &out.join(format!("load-{load}")));
        let pass = result.as_ref().is_ok_and(RunDigest::passes);
        let scaled_offered = scale_load(scenario, factor).map_or(load, |s| offered(&s));
        eprintln!(
            "  run {}: {} msg/s offered (x{factor:.3}): {} ({:.1} s wall)",
            made.len() + 1,
            thousands(scaled_offered),
            progress_line(&result),
            t.elapsed().as_secs_f64()
        );
        tried.push((load, pass));
        let dir = format!("load-{load}");
        made.push(KneeRun { load_msg_per_s: load, factor, offered_msg_per_s: scaled_offered, dir, result });
    }
}

/// `--find-max-load`: the knee search, one run at a time on `threads` threads, to within
/// `tolerance_percent`.
fn knee(
    runs: &Runs<'_>,
    scenario: &Scenario,
    seed: u64,
    (tolerance_percent, runs_max): (f64, usize),
    threads: usize,
    out: &Path,
    json: bool,
) -> ExitCode {
    let base = scenario.workload.messages_per_s;
    let (ceiling, ceiling_note) = knee_ceiling(scenario);
    let tolerance = tolerance_percent / 100.0;
    let limits = KneeLimits { start: base, ceiling, floor: (base / KNEE_FACTOR_MAX).max(1), tolerance, runs_max };
    eprintln!(
        "{}: knee search with seed {seed} from {} msg/s (1:1), {} msg/s to {} msg/s, to {tolerance_percent}%, at most {runs_max} runs; reports in {}/load-<msg/s>/",
        scenario.name,
        thousands(base),
        thousands(limits.floor),
        thousands(limits.ceiling),
        out.display()
    );
    let started = Instant::now();
    let (made, end) = search_knee(runs, scenario, seed, &limits, threads, out);
    let file = runs.file.display().to_string();
    let search = KneeSearch {
        scenario_name: &scenario.name,
        file: &file,
        seed,
        users: scenario.users.concurrent,
        scenario_msg_per_s: base,
        scenario_offered_msg_per_s: offered(scenario),
        limits,
        ceiling_note,
        replay: runs.replay(&format!(
            " --find-max-load --seed {seed} --knee-tolerance {tolerance_percent} --knee-runs-max {runs_max}"
        )),
    };
    let report = KneeReport::new(search, &made, end);
    let report_json = serde_json::to_string_pretty(&report).expect("the report serialises") + "\n";
    let files = [
        ("knee.json", report_json.as_str()),
        ("knee.md", &render_knee_md(&report, "knee.svg")),
        ("knee.svg", &render_knee_svg(&report)),
    ];
    if let Err(e) = write_files(out, &files) {
        return crate::cli::bad_input(e);
    }
    if json {
        print!("{report_json}");
    } else {
        print!("{}", render_knee_table(&report));
        println!("Reports: {} (knee.json, knee.md, knee.svg)", out.display());
    }
    eprintln!("{} runs in {:.1} s wall", made.len(), started.elapsed().as_secs_f64());
    if report.found() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
