//! `wasim fuzz` end to end: the CI sweep, seed order and shards, a failing seed's report and
//! its replay, bad input, and the batch recipes shipped for it (their syntax, and that
//! their shards cover the seeds).

mod common;
use common::{scenario_file, stderr, wasim};
use std::path::Path;
use yaml_rust2::{Yaml, YamlLoader};

const FUZZ_SMALL: &str = "scenarios/fuzz-small.toml";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(o).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
}

/// The CI sweep with random faults: the first 300 seeds of the fuzzing scenario, each with
/// 1 to 4 faults of every kind drawn from the seed and its workload perturbed. (Further
/// seeds still find failures, about 1 in 1,000: README, "Fuzzing", lists them.)
#[test]
fn three_hundred_seeds_with_random_faults_pass() {
    let out = wasim(&["fuzz", FUZZ_SMALL, "--seeds", "1..=300", "--json"]);
    let lines = json_lines(&out);
    let failed: Vec<&serde_json::Value> = lines.iter().filter(|l| l["pass"] != true).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(lines.len(), 300);
    let faults: usize = lines.iter().map(|l| l["faults"].as_array().unwrap().len()).sum();
    assert!(faults >= 300, "every seed draws at least one fault: {faults}");
    assert!(stderr(&out).contains("fuzz: 300 seeds, 0 failed"), "{}", stderr(&out));
}

/// And 200 seeds of the fixed schedule that walks every recovery path (a cut, lost ACKs, a
/// chat server, a Cassandra node and a router down), the workload perturbed per seed.
#[test]
fn two_hundred_seeds_with_faults_pass() {
    let out = wasim(&["fuzz", "scenarios/fuzz-faults.toml", "--seeds", "1..=200", "--faults", "scenario", "--json"]);
    let lines = json_lines(&out);
    let failed: Vec<&serde_json::Value> = lines.iter().filter(|l| l["pass"] != true).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines.len(), 200);
    let seeds: Vec<u64> = lines.iter().map(|l| l["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, (1..=200).collect::<Vec<_>>(), "one line per seed, in seed order");
    assert!(stderr(&out).contains("fuzz: 200 seeds, 0 failed"), "{}", stderr(&out));
}

/// Seeds of the fault walk with random faults that lost a message before the routers'
/// replays outlived them: a router crashed while the session store's answer to its replay
/// (for a phone whose chat server had died) was held up by a clog, and nobody asked again.
#[test]
fn replays_a_crashed_router_left_unanswered_are_asked_again() {
    let out = wasim(&["fuzz", "scenarios/fuzz-faults.toml", "--seeds", "6027..=6032", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stderr(&out).contains("fuzz: 6 seeds, 0 failed"), "{}", stderr(&out));
}

/// Other seeds of the fault walk with random faults that failed on the way to a fix of
/// theirs (with the routers' replays durable, before the rest):
/// 7055 (an exclusion that outlived its session), 8133 (a forward to a server that crashed
/// and came back, while its partition had no router), 6156 (a forward held on a lossy link
/// past the time the router kept it for replay), 8169 (a catch-up through a lossy link
/// judged against the latency drawn before the loss), 7222 (a catch-up held by a Cassandra
/// outage, finished as the run ended, its news on the way), 9220 (a message a chat server
/// routed again, its device gone, to a server that crashed before the device acknowledged
/// it: no router kept that replay; it now leaves an inbox pointer too), 9321 (a phone's
/// fetch held by a session shard's failover, answered with its stored receipts after its
/// chat server crashed: the store had given them up; it now keeps them until heard), 10844
/// (a receipt routed while the session shard failed over, answered after the asking chat
/// server crashed: the store now relays it to the sender's server itself), 10091 (a close
/// was the first a failing-over presence shard heard of a user who hides last-seen), 32239
/// (two overlapping skews of one presence shard's clock took it before the run began: a
/// plan may no longer skew one clock twice at once).
#[test]
fn seeds_fixed_since_stay_fixed() {
    for seed in ["6156", "7055", "7222", "8133", "8169", "9220", "9321", "10844", "10091", "32239"] {
        let range = format!("{seed}..={seed}");
        let out = wasim(&["fuzz", "scenarios/fuzz-faults.toml", "--seeds", &range, "--json"]);
        assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", stdout(&out));
    }
}

/// The fault walk, its checkers following one conversation in 4 (as a run too large for
/// its logs does): no false alarm from following a conversation's messages but not its
/// rows, reads or receipts.
#[test]
fn a_sample_of_conversations_checks_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(common::repo_root().join("scenarios/fuzz-faults.toml")).expect("the fault walk");
    let file = scenario_file(dir.path(), "sampled", &format!("{text}\n[checks]\nconversations_one_in = 4\n"));
    let out = wasim(&["fuzz", file.to_str().unwrap(), "--seeds", "1..=60", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stderr(&out).contains("fuzz: 60 seeds, 0 failed"), "{}", stderr(&out));
}

#[test]
fn a_shard_takes_every_nth_seed_and_a_seed_runs_the_same_every_time() {
    let out = wasim(&["fuzz", FUZZ_SMALL, "--seeds", "10..20", "--shard", "2/4", "--json", "--jobs", "1"]);
    let seeds: Vec<u64> = json_lines(&out).iter().map(|l| l["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, vec![12, 16]);
    // The child's result, random faults included, is a function of the seed.
    let once = wasim(&["fuzz-seed", FUZZ_SMALL, "--seed", "16"]);
    let again = wasim(&["fuzz-seed", FUZZ_SMALL, "--seed", "16"]);
    assert_eq!(stdout(&once), stdout(&again));
    let line: serde_json::Value = serde_json::from_str(stdout(&once).trim()).unwrap();
    assert!(!line["faults"].as_array().unwrap().is_empty(), "random faults were drawn: {line}");
}

/// fuzz-small as the card designs it (no re-registration of sessions after a failover) with
/// a session shard failing over 2 s behind: the sessions written in those 2 s are lost.
fn flawed() -> String {
    std::fs::read_to_string(FUZZ_SMALL).unwrap().replace("session_reregister = true", "")
        + "\n[[faults]]\nkind = \"redis_down\"\ntarget = \"redis_session-0\"\nat_s = 10\nfailover_s = 3\nreplication_lag_ms = 2_000\n"
}

/// The card's design without re-registration loses sessions in a failover: every seed fails
/// invariant 6, names it with the replay command, and the replay fails the same way.
#[test]
fn a_failing_seed_is_named_with_a_replay_that_fails_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let text = flawed();
    let file = scenario_file(dir.path(), "flawed.toml", &text);
    let file = file.to_str().unwrap();
    let out = wasim(&["fuzz", file, "--seeds", "3..=4", "--faults", "scenario"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(report.contains("seed 3 FAILED") && report.contains("invariant 6 (routing)"), "{report}");
    let replay = format!("wasim scenario {file} --seed 3 --faults-of-seed 3 --fuzz-faults scenario");
    assert!(report.contains(&format!("replay: {replay}")), "{report}");
    assert!(report.contains("fuzz: 2 seeds, 2 failed"), "{report}");
    // The cause is the card's design, and the report says so.
    assert!(report.contains("note: a session shard failed over and fleet.session_reregister is off"), "{report}");
    assert!(report.contains("(2 of them with a session shard failing over without re-registration"), "{report}");
    let args: Vec<&str> = replay.split_whitespace().skip(1).collect();
    let summary_dir = dir.path().join("replay");
    let replayed = wasim(&[&args[..], &["--json", "--out", summary_dir.to_str().unwrap()]].concat());
    assert_eq!(replayed.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&replayed)).unwrap();
    assert_eq!(summary["replay"], replay, "the report's own replay is the same command");
    let fuzzed = wasim(&["fuzz-seed", file, "--seed", "3", "--faults", "scenario"]);
    let fuzzed: serde_json::Value = serde_json::from_str(stdout(&fuzzed).trim()).unwrap();
    let first = |v: &serde_json::Value| v["subject"].as_str().unwrap().to_string();
    let violations = summary["invariants"]["violations"].as_array().expect("violations listed");
    assert_eq!(
        violations.iter().map(first).collect::<Vec<_>>(),
        fuzzed["violations"].as_array().unwrap().iter().map(first).collect::<Vec<_>>(),
        "the replay finds what the sweep found"
    );
}

#[test]
fn bad_input_exits_two() {
    for args in [
        vec!["fuzz", FUZZ_SMALL, "--seeds", "5..5"],
        vec!["fuzz", FUZZ_SMALL, "--seeds", "1-9"],
        vec!["fuzz", FUZZ_SMALL, "--shard", "4/4"],
        vec!["fuzz", FUZZ_SMALL, "--faults", "some"],
        vec!["fuzz", "no/such/file.toml"],
        vec!["scenario", FUZZ_SMALL, "--fuzz-faults", "none"],
    ] {
        let out = wasim(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?}");
    }
}

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}")).remove(0)
}

/// The `wasim fuzz ...` command in a recipe's shell line, with a few seeds and the shard
/// given, runs here (its flags are ones wasim takes).
fn runs_here(line: &str, shard: &str) {
    let start = line.find("fuzz ").expect("a wasim fuzz command");
    let command = &line[start..line.find(" ||").unwrap_or(line.len())];
    let mut args: Vec<String> = command.split_whitespace().map(|a| a.trim_matches('"').to_string()).collect();
    for i in 0..args.len() {
        if args[i] == "--seeds" {
            args[i + 1] = "1..=16".into();
        }
        if args[i] == "--shard" {
            args[i + 1] = shard.into();
        }
        if args[i].starts_with('>') {
            args.truncate(i);
            break;
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = wasim(&args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    assert_eq!(json_lines(&out).len(), 2, "16 seeds over 8 shards: {args:?}");
}

#[test]
fn the_github_matrix_covers_every_shard_once() {
    let w = yaml(".github/workflows/fuzz.yml");
    let shards: u64 = w["env"]["SHARDS"].as_i64().expect("SHARDS") as u64;
    let sweep = &w["jobs"]["sweep"];
    let matrix: Vec<u64> =
        sweep["strategy"]["matrix"]["shard"].as_vec().unwrap().iter().map(|s| s.as_i64().unwrap() as u64).collect();
    assert_eq!(matrix, (0..shards).collect::<Vec<_>>());
    let steps = sweep["steps"].as_vec().unwrap();
    let run = steps.iter().filter_map(|s| s["run"].as_str()).find(|r| r.contains("wasim fuzz")).expect("a sweep step");
    assert!(run.contains("--shard ${{ matrix.shard }}/$SHARDS") && run.contains("--json"), "{run}");
    let expanded = run.replace("\\\n", " ").replace("${{ matrix.shard }}/$SHARDS", &format!("3/{shards}"));
    runs_here(&expanded, &format!("3/{shards}"));
    assert_eq!(w["jobs"]["gather"]["needs"].as_str(), Some("sweep"));
}

#[test]
fn the_kubernetes_job_is_indexed_and_its_index_is_the_shard() {
    let job = yaml("deploy/fuzz-job.yaml");
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let n = spec["completions"].as_i64().unwrap();
    assert_eq!(spec["parallelism"].as_i64(), Some(n));
    let container = &spec["template"]["spec"]["containers"][0];
    let line = container["args"][0].as_str().unwrap();
    assert!(line.contains(&format!("--shard \"${{JOB_COMPLETION_INDEX}}/{n}\"")), "{line}");
    assert!(line.contains("--json"), "{line}");
    runs_here(line, &format!("5/{n}"));
}

/// Shrinking the flawed scenario's seed with random faults on top keeps only what the
/// failure needs, writes it as a scenario that fails the same way, and says so.
#[test]
fn shrinking_writes_a_smaller_scenario_that_still_fails() {
    let dir = tempfile::tempdir().unwrap();
    let text = flawed();
    let file = scenario_file(dir.path(), "flawed.toml", &text);
    let shrunk = dir.path().join("shrunk.toml");
    let out = wasim(&["fuzz", file.to_str().unwrap(), "--shrink", "5", "--out", shrunk.to_str().unwrap()]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}{}", stderr(&out));
    assert!(said.contains("the written file fails the same way"), "{said}");
    let start = wasim_sim::fuzz::derive(&common::parse(&text), 5, wasim_sim::fuzz::FaultsMode::Random);
    let written = wasim_sim::Scenario::load(&shrunk).expect("the shrunk scenario reads back");
    let (before, after) = (wasim_sim::fuzz::Size::of(&start), wasim_sim::fuzz::Size::of(&written));
    assert!(after.faults < before.faults, "{before} -> {after}");
    assert!(after <= before, "{before} -> {after}");
    let header = std::fs::read_to_string(&shrunk).unwrap();
    assert!(header.starts_with("# Shrunk by `wasim fuzz"), "{header}");
    assert!(header.contains("reproduces invariant"), "{header}");
    let o = wasim_sim::run(&written, &wasim_sim::RunOptions::default());
    let first = |o: &wasim_sim::Outcome| o.checks.violations.iter().map(|v| v.invariant).min();
    assert!(first(&o).is_some(), "the written scenario fails with its own seed");
    // A passing seed has nothing to shrink.
    let out = wasim(&["fuzz", FUZZ_SMALL, "--faults", "none", "--shrink", "1", "--out", shrunk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to shrink"), "{}", stderr(&out));
}

/// A seed that runs past the limit is killed and fails; the sweep goes on.
#[test]
fn a_seed_past_its_wall_time_limit_is_killed_and_fails() {
    let out = wasim(&[
        "fuzz",
        "scenarios/cell-1pct.toml",
        "--seeds",
        "1..=1",
        "--faults",
        "none",
        "--seed-limit-s",
        "1",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = &json_lines(&out)[0];
    assert_eq!(line["pass"], false);
    let detail = line["violations"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("killed after 1 s"), "{detail}");
}

/// The fuzzing scenario walks every path the summary counts (reached on each seed), and the
/// ones the issue names happen inside one short run: TTL expiry and silence timeouts (the
/// long cut), redelivery (lost ACKs), catch-ups, reconnects elsewhere (the crash).
#[test]
fn the_fuzzing_scenario_walks_every_path_on_every_seed() {
    let scenario = wasim_sim::Scenario::load(Path::new("scenarios/fuzz-faults.toml")).unwrap();
    let mut interrupted = 0;
    for (seed, o) in common::sweep(&scenario, 1..5) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        for s in wasim_reports::Summary::new(&o, "fuzz-faults").sometimes {
            // A catch-up cut short is rare (a few a run): somewhere in the sweep.
            if s.name == "catch_up_interrupted" {
                interrupted += s.count;
            } else {
                assert!(s.reached, "seed {seed} never reached {}: {}", s.name, s.what);
            }
        }
        let expired: u64 = o.per_second.iter().map(|p| p.shown_offline_by_expiry).sum();
        assert!(expired > 0, "seed {seed}: no presence key expired");
    }
    assert!(interrupted > 0, "no catch-up was cut short in four seeds");
}
