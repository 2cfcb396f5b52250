//! `wasim fuzz`: many seeds of a scenario, each in a child process of its own (a seed that
//! panics takes only itself down), with the results gathered in seed order.

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wasim_sim::fuzz::FaultsMode;
use wasim_sim::plant::Plant;
use wasim_sim::{RunOptions, Scenario, Violation};

/// Seeds `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedRange {
    pub first: u64,
    pub last: u64,
}

/// The most seeds one sweep takes (a sweep larger than this is split with `--shard`).
const SEEDS_MAX: u64 = 10_000_000;

/// `A..B` (B excluded) or `A..=B`.
pub fn parse_seeds(s: &str) -> Result<SeedRange, String> {
    let usage = || format!("`{s}`: seeds are a range `A..B` (B excluded) or `A..=B`, like 1..=200");
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(usage());
    };
    let first: u64 = a.trim().parse().map_err(|_| usage())?;
    let end: u64 = b.trim().parse().map_err(|_| usage())?;
    let last = if inclusive { Some(end) } else { end.checked_sub(1) };
    match last {
        Some(last) if last >= first && last - first < SEEDS_MAX => Ok(SeedRange { first, last }),
        Some(last) if last >= first => Err(format!("`{s}`: at most {SEEDS_MAX} seeds in one sweep (use --shard)")),
        _ => Err(format!("`{s}`: the range holds no seed")),
    }
}

/// `I/N`: the I-th of N shards (0-based, as a Kubernetes indexed Job numbers its pods).
pub fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let usage = || format!("`{s}`: a shard is `I/N` with 0 <= I < N, like 3/8");
    let (i, n) = s.split_once('/').ok_or_else(usage)?;
    let (i, n): (u64, u64) = (i.trim().parse().map_err(|_| usage())?, n.trim().parse().map_err(|_| usage())?);
    if n == 0 || i >= n {
        return Err(usage());
    }
    Ok((i, n))
}

pub fn parse_faults_mode(s: &str) -> Result<FaultsMode, String> {
    FaultsMode::parse(s).ok_or_else(|| format!("`{s}`: faults are `random`, `none` or `scenario`"))
}

/// What one seed gave: one JSON line of `wasim fuzz --json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    pub pass: bool,
    /// The violations found (at most 20 per invariant), or why the run died (invariant 0:
    /// a panic, or killed past the seed's wall-time limit).
    pub violations: Vec<SeedViolation>,
    /// The faults the seed ran with, in words.
    pub faults: Vec<String>,
    pub simulated_s: u64,
    pub events: u64,
    /// A session shard failed over in a scenario whose servers do not register their
    /// sessions again after one (`fleet.session_reregister = false`, the card's design): the
    /// sessions written in its replication lag are lost, and invariants 1 and 6 say so.
    #[serde(default)]
    pub sessions_lost_by_design: bool,
    /// The command that replays the seed exactly.
    #[serde(default)]
    pub replay: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedViolation {
    pub invariant: u8,
    pub name: String,
    pub subject: String,
    pub at_us: u64,
    pub detail: String,
}

impl From<&Violation> for SeedViolation {
    fn from(v: &Violation) -> Self {
        SeedViolation {
            invariant: v.invariant,
            name: v.name.to_string(),
            subject: v.subject.clone(),
            at_us: v.at_us,
            detail: v.detail.clone(),
        }
    }
}

/// The scenario one fuzzed seed runs: `base` with the seed's faults and workload, and the
/// liveness extension if asked.
pub fn fuzzed(base: &Scenario, seed: u64, mode: FaultsMode, liveness: bool) -> Scenario {
    let mut s = wasim_sim::fuzz::derive(base, seed, mode);
    if liveness {
        wasim_sim::fuzz::with_liveness(&mut s);
    }
    s
}

/// Run one seed in this process and print its result as one JSON line (the child's side).
pub fn run_seed(base: &Scenario, seed: u64, mode: FaultsMode, liveness: bool) -> ExitCode {
    let scenario = fuzzed(base, seed, mode, liveness);
    let outcome = wasim_sim::run(&scenario, &RunOptions { seed: Some(seed), ..RunOptions::default() });
    let violations: Vec<SeedViolation> = outcome.checks.violations.iter().map(SeedViolation::from).collect();
    let result = SeedResult {
        seed,
        pass: violations.is_empty(),
        violations,
        faults: scenario.faults.iter().map(describe).collect(),
        sessions_lost_by_design: loses_sessions_by_design(&scenario),
        simulated_s: outcome.simulated_s(),
        events: outcome.counters.events,
        replay: String::new(),
    };
    println!("{}", serde_json::to_string(&result).expect("a result serialises"));
    ExitCode::SUCCESS
}

/// Whether a session shard fails over in `s` while its servers do not register their
/// sessions again after one (the card's design, whose flaw the invariants name).
fn loses_sessions_by_design(s: &Scenario) -> bool {
    !s.fleet.session_reregister
        && s.faults
            .iter()
            .any(|f| matches!(f, wasim_sim::Fault::RedisDown { target, .. } if target.starts_with("redis_session-")))
}

/// A fault in a few words: kind, target, window.
fn describe(f: &wasim_sim::Fault) -> String {
    let (at_s, lasts_s) = f.window_s();
    format!("{} {} from {at_s} s for {lasts_s} s", f.kind(), f.target())
}

/// Plant the bug named `name` in this process (`None`: none), or say why not.
pub fn plant(name: Option<&str>) -> Result<Option<Plant>, String> {
    let Some(name) = name else { return Ok(None) };
    let Some(p) = Plant::parse(name) else {
        return Err(format!("--plant: no planted bug is called `{name}` (`wasim fuzz --plant list` lists them)"));
    };
    if !wasim_sim::plant::set_plant(Some(p)) {
        return Err(
            "--plant: this build has no planted bugs; build with `cargo build --release --features planted-bugs`"
                .into(),
        );
    }
    Ok(Some(p))
}

/// `wasim fuzz --plant list`.
pub fn list_plants() -> ExitCode {
    if !wasim_sim::plant::PLANTS_COMPILED {
        println!("(this build has no planted bugs; build with `cargo build --release --features planted-bugs`)");
    }
    for p in Plant::ALL {
        println!("{:<24} invariant {}  {}", p.name(), p.invariant(), p.description());
    }
    ExitCode::SUCCESS
}

/// Runs a shrink makes at most.
const SHRINK_RUNS_MAX: usize = 400;

/// `wasim fuzz FILE --shrink SEED`: shrink a failing seed and write the smallest scenario
/// that still breaks the same invariant.
pub fn shrink(
    base: &Scenario,
    file: &Path,
    seed: u64,
    mode: FaultsMode,
    liveness: bool,
    out: Option<std::path::PathBuf>,
    plant: Option<Plant>,
) -> ExitCode {
    let plant_flag = plant_flag(plant);
    let start = fuzzed(base, seed, mode, liveness);
    let options = RunOptions { seed: Some(seed), ..RunOptions::default() };
    let outcome = wasim_sim::run(&start, &options);
    let Some(broken) = outcome.checks.violations.iter().min_by_key(|v| v.invariant) else {
        return crate::cli::bad_input(format!(
            "seed {seed} of {} passes every invariant: nothing to shrink",
            file.display()
        ));
    };
    let (invariant, name) = (broken.invariant, broken.name);
    let path = out.unwrap_or_else(|| Path::new("wasim-out").join(format!("{}-shrunk-{seed}.toml", base.name)));
    println!("shrinking seed {seed} of {}: invariant {invariant} ({name}) fails", file.display());
    println!("  start: {}", wasim_sim::fuzz::Size::of(&start));
    let mut n = 0;
    let started = Instant::now();
    let (smallest, run_seed) =
        wasim_sim::fuzz::shrink(&start, seed, invariant, SHRINK_RUNS_MAX, |what, failed_with, size| {
            n += 1;
            let verdict = match failed_with {
                Some(s) => format!("still fails (run seed {s}), kept"),
                None => "passes, undone".to_string(),
            };
            println!("  [{n}] {what}: {verdict} · {size}");
        });
    let mut written = smallest.clone();
    written.name = format!("{}-shrunk-{seed}", base.name);
    written.seed = run_seed;
    let size = wasim_sim::fuzz::Size::of(&smallest);
    let header = format!(
        "# Shrunk by `wasim fuzz {}{plant_flag} --shrink {seed}` from seed {seed}'s faults and workload:\n\
         # reproduces invariant {invariant} ({name}) with run seed {run_seed} (the file's seed).\n\
         # Replay: wasim scenario {}{plant_flag}\n\
         # Size: {size} (from {}).\n\n",
        file.display(),
        path.display(),
        wasim_sim::fuzz::Size::of(&start)
    );
    let text = header + &toml::to_string(&written).expect("a scenario serialises");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return crate::cli::bad_input(format!("cannot write {}: {e}", path.display()));
        }
    }
    if let Err(e) = std::fs::write(&path, text) {
        return crate::cli::bad_input(format!("cannot write {}: {e}", path.display()));
    }
    // The file as written, read back and run, must fail the same way.
    let confirmed = Scenario::load(&path).map(|s| wasim_sim::fuzz::breaks(&s, None, invariant));
    println!(
        "smallest: {size} after {n} steps ({:.1} s wall){}",
        started.elapsed().as_secs_f64(),
        match confirmed {
            Ok(true) => "; the written file fails the same way",
            Ok(false) => "; WARNING: the written file does not fail again",
            Err(_) => "; WARNING: the written file does not read back",
        }
    );
    println!("written: {}\nreplay: wasim scenario {}{plant_flag}", path.display(), path.display());
    ExitCode::from(1)
}

/// What `wasim scenario` needs besides the seed to run a fuzzed seed again.
pub fn replay_flags(fault_seed: u64, mode: FaultsMode, liveness: bool) -> String {
    let mut flags = format!(" --faults-of-seed {fault_seed}");
    if mode != FaultsMode::Random {
        flags += &format!(" --fuzz-faults {}", mode.name());
    }
    if liveness {
        flags += " --liveness";
    }
    flags
}

/// ` --plant NAME`, or nothing.
pub fn plant_flag(plant: Option<Plant>) -> String {
    plant.map_or(String::new(), |p| format!(" --plant {}", p.name()))
}

/// The options a sweep runs with.
pub struct Sweep<'a> {
    pub file: &'a Path,
    pub seeds: SeedRange,
    pub jobs: Option<u32>,
    pub shard: Option<(u64, u64)>,
    pub faults: FaultsMode,
    pub json: bool,
    pub liveness: bool,
    pub plant: Option<Plant>,
    /// A seed still running after this is killed and fails.
    pub seed_limit: Duration,
}

impl Sweep<'_> {
    /// The seeds this shard runs.
    fn seeds(&self) -> Vec<u64> {
        let (i, n) = self.shard.unwrap_or((0, 1));
        (self.seeds.first..=self.seeds.last).filter(|s| (s - self.seeds.first) % n == i).collect()
    }

    /// The command that replays `seed` exactly.
    fn replay(&self, seed: u64) -> String {
        format!(
            "wasim scenario {} --seed {seed}{}{}",
            self.file.display(),
            replay_flags(seed, self.faults, self.liveness),
            plant_flag(self.plant)
        )
    }

    /// The child process's command for `seed`.
    fn child(&self, exe: &Path, seed: u64) -> Command {
        let mut c = Command::new(exe);
        c.arg("fuzz-seed").arg(self.file).arg("--seed").arg(seed.to_string());
        c.arg("--faults").arg(self.faults.name());
        if self.liveness {
            c.arg("--liveness");
        }
        if let Some(p) = self.plant {
            c.arg("--plant").arg(p.name());
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// Run `seed` in a child process; a child that dies without a result failed with the
    /// panic it printed.
    fn run_one(&self, exe: &Path, seed: u64) -> SeedResult {
        let output = crate::children::run_with_limit(self.child(exe, seed), self.seed_limit, "--seed-limit-s");
        let parsed = output.as_ref().ok().and_then(|o| {
            let line = String::from_utf8_lossy(&o.stdout);
            serde_json::from_str::<SeedResult>(line.lines().last()?).ok().filter(|_| o.status.success())
        });
        let mut result = parsed.unwrap_or_else(|| {
            let detail = match &output {
                Ok(o) => crate::children::why_died(o),
                Err(e) => format!("could not start the run: {e}"),
            };
            SeedResult {
                seed,
                pass: false,
                violations: vec![SeedViolation {
                    invariant: 0,
                    name: "run died".into(),
                    subject: "the run".into(),
                    at_us: 0,
                    detail,
                }],
                faults: Vec::new(),
                sessions_lost_by_design: false,
                simulated_s: 0,
                events: 0,
                replay: String::new(),
            }
        });
        result.replay = self.replay(seed);
        result
    }

    /// Run the sweep; exit 0 when every seed passes, 1 when one fails.
    pub fn run(&self) -> ExitCode {
        let seeds = self.seeds();
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => return crate::cli::bad_input(format!("cannot find the wasim executable to run seeds with: {e}")),
        };
        let jobs = crate::cli::jobs_or_cores(self.jobs);
        let shard = self.shard.map_or(String::new(), |(i, n)| format!(", shard {i}/{n}"));
        let plant = self.plant.map_or(String::new(), |p| format!(", planted bug {}", p.name()));
        eprintln!(
            "fuzz {}: {} seeds ({}..={}{shard}), faults {}{}{plant}, {jobs} at a time",
            self.file.display(),
            seeds.len(),
            self.seeds.first,
            self.seeds.last,
            self.faults.name(),
            if self.liveness { ", liveness" } else { "" }
        );
        let started = Instant::now();
        let progress = Progress::new(seeds.len() as u64);
        let (mut failed, mut by_design) = (0u64, 0u64);
        let mut printed = 0usize;
        let mut pending: Vec<Option<SeedResult>> = vec![None; seeds.len()];
        crate::children::pool(
            seeds.len(),
            jobs,
            |i| self.run_one(&exe, seeds[i]),
            |i, result| {
                if !result.pass {
                    failed += 1;
                    by_design += u64::from(result.sessions_lost_by_design);
                }
                pending[i] = Some(result);
                // Results are printed in seed order, whatever order the children finish in;
                // each is dropped once printed.
                while let Some(r) = pending.get_mut(printed).and_then(Option::take) {
                    let mut out = std::io::stdout().lock();
                    if self.json {
                        let _ = writeln!(out, "{}", serde_json::to_string(&r).expect("a result serialises"));
                    } else if !r.pass {
                        progress.suspend(|| {
                            let _ = write!(out, "{}", render_failure(&r));
                        });
                    }
                    printed += 1;
                }
                progress.update(printed as u64, failed, started.elapsed());
            },
        );
        progress.finish();
        let wall_s = started.elapsed().as_secs_f64();
        let design = if by_design > 0 {
            format!(
                " ({by_design} of them with a session shard failing over without re-registration: the card's design)"
            )
        } else {
            String::new()
        };
        let line = format!(
            "fuzz: {} seeds, {failed} failed{design}, {:.0} seeds per minute ({wall_s:.1} s wall)",
            seeds.len(),
            seeds.len() as f64 / wall_s.max(1e-9) * 60.0
        );
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// A failing seed for people: each invariant broken, its first subject and time, the replay.
fn render_failure(r: &SeedResult) -> String {
    let mut s = format!("seed {} FAILED\n", r.seed);
    let mut named = std::collections::BTreeSet::new();
    for v in &r.violations {
        if named.insert(v.invariant) {
            s += &format!(
                "  invariant {} ({}): {} at {:.3} s: {}\n",
                v.invariant,
                v.name,
                v.subject,
                v.at_us as f64 / 1e6,
                v.detail
            );
        }
    }
    if !r.faults.is_empty() {
        s += &format!("  faults: {}\n", r.faults.join("; "));
    }
    if r.sessions_lost_by_design {
        s += "  note: a session shard failed over and fleet.session_reregister is off (the card's design): \
              the sessions written in its replication lag are lost, which invariants 1 and 6 name \
              (README, Redis down); with it on, the servers register their sessions again\n";
    }
    s += &format!("  replay: {}\n", r.replay);
    s
}

/// A progress bar on a terminal; elsewhere (CI logs) a line every ten seconds.
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    last_line: Mutex<Instant>,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} seeds {pos}/{len} [{bar:30}] {msg} · {elapsed} wall · eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Progress { bar, total, last_line: Mutex::new(Instant::now()) }
    }

    fn update(&self, done: u64, failed: u64, elapsed: Duration) {
        let per_minute = done as f64 / elapsed.as_secs_f64().max(1e-9) * 60.0;
        let msg = format!("{failed} failed · {per_minute:.0} seeds/min");
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(msg);
            }
            None => {
                let mut last = self.last_line.lock().expect("progress lock");
                if last.elapsed() >= Duration::from_secs(10) || done == self.total {
                    eprintln!("  seeds {done}/{} · {msg}", self.total);
                    *last = Instant::now();
                }
            }
        }
    }

    fn suspend(&self, f: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_and_shards_parse_and_refuse_nonsense() {
        assert_eq!(parse_seeds("1..=200"), Ok(SeedRange { first: 1, last: 200 }));
        assert_eq!(parse_seeds("5..7"), Ok(SeedRange { first: 5, last: 6 }));
        for bad in ["7..7", "9..=3", "1-200", "a..b", "..5", "0..=99999999999"] {
            assert!(parse_seeds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_shard("3/8"), Ok((3, 8)));
        for bad in ["8/8", "1/0", "3", "-1/4"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_split_the_seeds_without_overlap_or_gap() {
        let sweep = |shard| Sweep {
            file: Path::new("s.toml"),
            seeds: SeedRange { first: 10, last: 30 },
            jobs: None,
            shard,
            faults: FaultsMode::Random,
            json: false,
            liveness: false,
            plant: None,
            seed_limit: Duration::from_secs(1),
        };
        let mut all: Vec<u64> = (0..4).flat_map(|i| sweep(Some((i, 4))).seeds()).collect();
        all.sort_unstable();
        assert_eq!(all, (10..=30).collect::<Vec<_>>());
        assert_eq!(sweep(Some((1, 4))).seeds(), vec![11, 15, 19, 23, 27]);
        assert_eq!(sweep(None).seeds().len(), 21);
    }
}
