//! Mutated scenario files never make the binary panic, abort or hang: each mutant is refused
//! (exit 2, with a message naming the file, and the line where the mistake has one) or runs
//! to a verdict (exit 0, or 1 for an SLO or invariant failure).
//!
//! A deterministic mutation fuzz of the shipped small scenarios (media-heavy among them): `MUTANTS` mutants from a
//! fixed seed on every run of the suite. For a longer hunt, set `WASIM_FUZZ_MUTANTS` and
//! `WASIM_FUZZ_SEED`; a failure prints the mutant, so it can be replayed by hand.

mod common;

use common::{wasim_within, Finished, SMALL};
use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The mutants of one run of the suite: enough to meet every kind of mutation on every
/// scenario many times, within about half a minute on two cores.
const MUTANTS: usize = 300;
const SEED: u64 = 0x5EED_F022;
/// A mutant of a small scenario runs in well under 5 s; one still running at 20 s hangs.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// The machine has two cores: two mutants at once, each run on one thread (`--threads 1`:
/// two runs of two threads each would share two cores, and wait on each other's ticks).
const THREADS: usize = 2;
/// A string far longer than any field allows.
const HUGE_STRING_BYTES: usize = 100_000;

/// SplitMix64: a tiny deterministic generator, so the mutants are the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Values that break naive code: zero, one, negatives, the edges of 32- and 64-bit
/// integers (2^63 and u64::MAX do not fit TOML's i64 at all), huge, tiny and non-finite
/// floats, and values of the wrong type.
fn hostile_values() -> Vec<String> {
    let mut values: Vec<String> = [
        "0",
        "1",
        "-1",
        "2147483648",
        "4294967296",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "1e308",
        "-1e308",
        "1e-300",
        "nan",
        "inf",
        "-inf",
        "0.5",
        "\"text\"",
        "true",
        "[1, 2]",
        "{}",
        "{ dist = \"exponential\", mean = 1e308 }",
    ]
    .map(String::from)
    .to_vec();
    values.push(format!("\"{}\"", "x".repeat(HUGE_STRING_BYTES)));
    values
}

/// Keys to insert: real ones (which may now be duplicated or land in the wrong table)
/// and one that exists nowhere.
const KEYS: [&str; 16] = [
    "seed",
    "duration_s",
    "drain_s",
    "tick_us",
    "name",
    "chat_servers",
    "concurrent",
    "contacts_per_user",
    "messages_per_s",
    "presence_ttl_ms",
    "users",
    "fleet",
    "faults",
    "at_s",
    "mean",
    "no_such_key",
];

/// The byte ranges of every value in `text`: after the `=` of each `key = value` line and,
/// in an inline table, each of its values too.
fn value_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end();
        let trimmed = body.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with(['[', '#']) {
            if let Some(eq) = body.find('=') {
                let lead = body[eq + 1..].len() - body[eq + 1..].trim_start().len();
                let value = start + eq + 1 + lead..start + body.len();
                if text[value.clone()].starts_with('{') {
                    spans.extend(inline_values(text, value.clone()));
                }
                spans.push(value);
            }
        }
        start += line.len();
    }
    spans
}

/// The values inside an inline table `{ a = 1, b = "x" }` at `span`.
fn inline_values(text: &str, span: Range<usize>) -> Vec<Range<usize>> {
    let inner = span.start + 1..span.end.saturating_sub(1).max(span.start + 1);
    let mut out = Vec::new();
    let mut at = inner.start;
    for part in text[inner.clone()].split(',') {
        if let Some(eq) = part.find('=') {
            let value = part[eq + 1..].trim();
            if !value.is_empty() {
                let offset = at + eq + 1 + (part[eq + 1..].len() - part[eq + 1..].trim_start().len());
                out.push(offset..offset + value.len());
            }
        }
        at += part.len() + 1;
    }
    out
}

/// Scale a numeric value by 10 or by 1/10, if it is one.
fn scaled(value: &str, up: bool) -> Option<String> {
    let plain = value.replace('_', "");
    if let Ok(i) = plain.parse::<i64>() {
        return Some(if up { i.saturating_mul(10) } else { i / 10 }.to_string());
    }
    let f: f64 = plain.parse().ok()?;
    Some(format!("{:?}", if up { f * 10.0 } else { f / 10.0 }))
}

/// The byte range of each line of `text`, newline included.
fn line_ranges(text: &str) -> Vec<Range<usize>> {
    let mut start = 0;
    text.split_inclusive('\n')
        .map(|line| {
            start += line.len();
            start - line.len()..start
        })
        .collect()
}

/// One mutation of `text`, with a description of it. A kind that does not apply (no value
/// to replace, no header to swap) gives way to another; inserting a key always applies.
fn mutate_once(text: &str, rng: &mut Rng, hostile: &[String]) -> (String, String) {
    let lines = line_ranges(text);
    let values = value_spans(text);
    let numbers: Vec<Range<usize>> =
        values.iter().filter(|s| scaled(&text[(*s).clone()], true).is_some()).cloned().collect();
    let headers: Vec<Range<usize>> = lines.iter().filter(|l| text[(*l).clone()].starts_with('[')).cloned().collect();
    let short = |s: &str| if s.len() > 40 { format!("{}… ({} bytes)", &s[..40], s.len()) } else { s.to_string() };
    let splice = |span: &Range<usize>, with: &str| format!("{}{with}{}", &text[..span.start], &text[span.end..]);
    for _ in 0..8 {
        match rng.below(7) {
            0 if !values.is_empty() => {
                let span = rng.pick(&values);
                let value = rng.pick(hostile);
                return (
                    splice(span, value),
                    format!("replace `{}` with `{}`", short(&text[span.clone()]), short(value)),
                );
            }
            1 if !lines.is_empty() => {
                let line = rng.pick(&lines);
                return (splice(line, ""), format!("delete line `{}`", short(text[line.clone()].trim_end())));
            }
            2 if !lines.is_empty() => {
                let line = rng.pick(&lines);
                let twice = format!("{}{}", &text[line.clone()], &text[line.clone()]);
                return (splice(line, &twice), format!("duplicate line `{}`", short(text[line.clone()].trim_end())));
            }
            3 if !headers.is_empty() => {
                let line = rng.pick(&headers);
                let header = text[line.clone()].trim_end();
                let swapped = match header.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")) {
                    Some(name) => format!("[{name}]"),
                    None => format!("[{header}]"),
                };
                return (splice(line, &format!("{swapped}\n")), format!("`{header}` -> `{swapped}`"));
            }
            4 if !text.is_empty() => {
                let mut at = rng.below(text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                return (text[..at].to_string(), format!("truncate at byte {at}"));
            }
            6 if !numbers.is_empty() => {
                let span = rng.pick(&numbers);
                let value = scaled(&text[span.clone()], rng.below(2) == 0).expect("numeric");
                return (splice(span, &value), format!("scale `{}` to `{value}`", &text[span.clone()]));
            }
            5 => break,
            _ => {}
        }
    }
    let at = lines.get(rng.below(lines.len() + 1)).map_or(text.len(), |l| l.start);
    let key = rng.pick(&KEYS);
    let value = if rng.below(2) == 0 { rng.pick(hostile).clone() } else { "3".to_string() };
    let what = format!("insert `{key} = {}` at byte {at}", short(&value));
    (format!("{}{key} = {value}\n{}", &text[..at], &text[at..]), what)
}

/// A mutant: which scenario it came from, what was done to it, and its text.
struct Mutant {
    source: &'static str,
    mutations: Vec<String>,
    text: String,
}

fn mutants(seed: u64, count: usize) -> Vec<Mutant> {
    let root = common::repo_root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect("shipped scenario");
    let sources: [(&'static str, String); 4] = [
        ("baseline", read("scenarios/baseline.toml")),
        ("bob-offline-60s", read("scenarios/bob-offline-60s.toml")),
        ("small", SMALL.to_string()),
        ("media-heavy", read("scenarios/media-heavy.toml")),
    ];
    let hostile = hostile_values();
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let (source, text) = rng.pick(&sources);
            let mut text = text.clone();
            let mut mutations = Vec::new();
            // Mostly one mutation; sometimes two, which reach checks behind the first.
            for _ in 0..1 + usize::from(rng.below(3) == 0) {
                let (next, what) = mutate_once(&text, &mut rng, &hostile);
                text = next;
                mutations.push(what);
            }
            Mutant { source, mutations, text }
        })
        .collect()
}

/// How a mutant ended, when it ended acceptably.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    RefusedWithLine,
    RefusedWithoutLine,
    RanClean,
    RanSloFailure,
    RanInvariantFailure,
}

/// Run one mutant through the binary and judge how it ended.
fn judge(dir: &std::path::Path, index: usize, mutant: &Mutant) -> Result<(Outcome, Option<String>), String> {
    let path = dir.join(format!("m{index}-{}.toml", mutant.source));
    std::fs::write(&path, &mutant.text).expect("write mutant");
    let out = dir.join(format!("out-{index}"));
    let started = Instant::now();
    let args = ["scenario", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "1"];
    let finished = wasim_within(&args, RUN_LIMIT);
    let _ = std::fs::remove_dir_all(&out);
    let Finished::Exited(o) = finished else {
        return Err(format!("still running after {} s: killed", RUN_LIMIT.as_secs()));
    };
    let (stdout, stderr) = (common::stdout(&o), common::stderr(&o));
    let tail = |s: &str| s.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    if stderr.contains("panicked") {
        return Err(format!("panicked:\n{}", tail(&stderr)));
    }
    let file = path.display().to_string();
    match o.status.code() {
        None => Err(format!("ended by a signal ({:?}):\n{}", o.status, tail(&stderr))),
        Some(2) if !stderr.contains(&file) => Err(format!("refused without naming the file:\n{}", tail(&stderr))),
        Some(2) => {
            let with_line = stderr.split(&format!("{file}:")).skip(1).any(|rest| {
                let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                digits > 0 && rest[digits..].starts_with(':')
            });
            let message = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or("").to_string();
            // Every mistake in a file has a line, or is reported on its table's or fault's
            // line; only the machine's memory is a judgement of the whole scenario.
            match (with_line, message.contains("too large for this machine")) {
                (true, _) => Ok((Outcome::RefusedWithLine, None)),
                (false, true) => Ok((Outcome::RefusedWithoutLine, Some(message))),
                (false, false) => Err(format!("refused without a line:\n{}", tail(&stderr))),
            }
        }
        Some(0) => Ok((Outcome::RanClean, Some(format!("{:.1} s", started.elapsed().as_secs_f64())))),
        Some(1) if stdout.contains("Invariants VIOLATED") => {
            let violations: Vec<&str> = stdout.lines().filter(|l| l.contains(" at t=")).take(2).collect();
            Ok((Outcome::RanInvariantFailure, Some(violations.join("\n"))))
        }
        Some(1) => Ok((Outcome::RanSloFailure, None)),
        Some(code) => Err(format!("exit code {code}:\n{}", tail(&stderr))),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn mutated_scenarios_are_refused_or_run_never_crash_or_hang() {
    let seed = env_or("WASIM_FUZZ_SEED", SEED);
    let mutants = mutants(seed, env_or("WASIM_FUZZ_MUTANTS", MUTANTS));
    let dir = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(mutant) = mutants.get(i) else { break };
                let result = judge(dir.path(), i, mutant);
                results.lock().unwrap().push((i, result));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut counts = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    for (i, result) in &results {
        match result {
            Ok((outcome, _)) => *counts.entry(*outcome).or_insert(0) += 1,
            Err(why) => failures.push(format!(
                "mutant {i} of {} ({}): {why}\n--- mutant ---\n{}\n---",
                mutants[*i].source,
                mutants[*i].mutations.join("; "),
                mutants[*i].text
            )),
        }
    }
    if std::env::var_os("WASIM_FUZZ_VERBOSE").is_some() {
        for (i, result) in &results {
            if let Ok((outcome, Some(note))) = result {
                println!("mutant {i} {outcome:?} [{}]: {note}", mutants[*i].mutations.join("; "));
            }
        }
    }
    let count = |o: Outcome| counts.get(&o).copied().unwrap_or(0);
    // Written past the test harness's capture, so that CI logs show it on success too.
    let _ = writeln!(
        std::io::stderr(),
        "input_fuzz: seed {seed:#x}: {} mutants in {:.1} s wall: {} refused with a line, {} refused without a line, {} ran clean, {} ran with an SLO failure, {} ran with an invariant violation, {} failed",
        results.len(),
        started.elapsed().as_secs_f64(),
        count(Outcome::RefusedWithLine),
        count(Outcome::RefusedWithoutLine),
        count(Outcome::RanClean),
        count(Outcome::RanSloFailure),
        count(Outcome::RanInvariantFailure),
        failures.len()
    );
    assert!(failures.is_empty(), "{} mutants failed:\n{}", failures.len(), failures.join("\n\n"));
}
