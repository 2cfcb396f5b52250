//! The same scenario and seed give byte-identical outputs; different seeds differ.

mod common;
use common::{parse, scenario_file, wasim, SMALL};
use std::path::Path;

fn run_to(dir: &Path, scenario: &Path, seed: &str, out: &str) -> std::path::PathBuf {
    let out_dir = dir.join(out);
    let args = ["scenario", scenario.to_str().unwrap(), "--seed", seed, "--out", out_dir.to_str().unwrap()];
    let o = wasim(&[&args[..], &["--trace-user", "7"]].concat());
    assert!(o.status.code() == Some(0), "run failed: {}", common::stderr(&o));
    out_dir
}

#[test]
fn same_seed_gives_byte_identical_report_files() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path(), "small.toml", SMALL);
    let a = run_to(dir.path(), &scenario, "11", "a");
    let b = run_to(dir.path(), &scenario, "11", "b");
    let (x, y) = (report_files(&a), report_files(&b));
    let names: Vec<&str> = x.iter().map(|(n, _)| n.as_str()).collect();
    for file in ["summary.json", "timeseries.csv", "delivery.hgrm", "trace.csv", "report.md", "architecture.svg"] {
        assert!(names.contains(&file), "{file} is missing: {names:?}");
    }
    assert_eq!(names, y.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>());
    for ((file, x), (_, y)) in x.iter().zip(&y) {
        assert!(!x.is_empty(), "{file} is empty");
        assert!(x == y, "{file} differs between two runs with the same seed");
    }
}

#[test]
fn different_seeds_give_different_results() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path(), "small.toml", SMALL);
    let a = run_to(dir.path(), &scenario, "1", "a");
    let b = run_to(dir.path(), &scenario, "2", "b");
    let x: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("summary.json")).unwrap()).unwrap();
    let y: serde_json::Value = serde_json::from_slice(&std::fs::read(b.join("summary.json")).unwrap()).unwrap();
    assert_eq!(x["seed"], 1);
    assert_eq!(y["seed"], 2);
    assert_ne!(x["latencies"], y["latencies"], "two seeds produced the same latencies");
    assert_ne!(x["counters"]["sends"], y["counters"]["sends"]);
}

#[test]
fn madsim_determinism_check_passes() {
    // madsim runs the simulation twice and checks that every random draw of its own
    // scheduler happens in the same order both times.
    madsim::runtime::Runtime::check_determinism(3, madsim::Config::default(), || async {
        let outcome = wasim_sim::simulate(parse(SMALL), 3, None).await;
        assert!(outcome.counters.sends > 0);
    });
}

/// The files of a report folder, but for timing.json (wall-clock figures), by name.
fn report_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "timing.json")
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn the_thread_count_does_not_change_a_byte() {
    // Processes run side by side within a tick; what crosses between the threads' parts of
    // the network waits for the tick's end. Faults that touch that: a crash and restart (a
    // killed process's mail is dropped, a restarted one is built before its tick), a router
    // crash (the Kafka and router part), network cuts and lost ACKs. And a chat server
    // crash with no user asked for, where the crash picks the user whose story trace.csv
    // tells.
    let dir = tempfile::tempdir().unwrap();
    let crash = common::small_with(
        "",
        "",
        "\n[[faults]]\nkind = \"crash\"\ntarget = \"chat_server-1\"\nat_s = 3\nfor_s = 2\ndetect = \"reset\"\n",
    );
    let crash_file = scenario_file(dir.path(), "crash.toml", &crash);
    let shipped = common::repo_root().join("scenarios/fuzz-faults.toml");
    let groups = common::repo_root().join("scenarios/small/group-500-receipts.toml");
    for (name, scenario) in [("fuzz-faults", shipped), ("crash", crash_file), ("groups", groups)] {
        // (16: more threads than groups of processes to place, which left a part empty.)
        let runs: Vec<Vec<(String, Vec<u8>)>> = ["1", "2", "3", "16"]
            .iter()
            .map(|threads| {
                let out = dir.path().join(format!("{name}-{threads}"));
                let o = wasim(&[
                    "scenario",
                    scenario.to_str().unwrap(),
                    "--threads",
                    threads,
                    "--out",
                    out.to_str().unwrap(),
                ]);
                assert!(matches!(o.status.code(), Some(0 | 1)), "{name}: {}", common::stderr(&o));
                report_files(&out)
            })
            .collect();
        if name != "groups" {
            assert!(
                runs[0].iter().any(|(f, bytes)| f == "trace.csv" && bytes.len() > 100),
                "{name}: a story was traced"
            );
        }
        for (threads, run) in [(2, &runs[1]), (3, &runs[2]), (16, &runs[3])] {
            assert_eq!(run.len(), runs[0].len(), "{name}: the same files with {threads} threads");
            for ((file, a), (_, b)) in runs[0].iter().zip(run) {
                assert!(a == b, "{name}: {file} differs between 1 and {threads} threads");
            }
        }
    }
}

#[test]
fn huge_pages_do_not_change_a_byte() {
    // `wasim` starts itself again with glibc's allocator asking for huge pages unless
    // GLIBC_TUNABLES is set (src/huge.rs): only the speed may differ.
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(dir.path(), "small.toml", SMALL);
    let run = |tunables: Option<&str>, out: &str| {
        let out_dir = dir.path().join(out);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wasim"));
        cmd.args(["scenario", scenario.to_str().unwrap(), "--seed", "5", "--out", out_dir.to_str().unwrap()])
            .env("WASIM_THREADS", "1");
        match tunables {
            Some(t) => cmd.env("GLIBC_TUNABLES", t),
            None => cmd.env_remove("GLIBC_TUNABLES"),
        };
        let o = cmd.output().expect("the wasim binary runs");
        assert!(o.status.code() == Some(0), "run failed: {}", common::stderr(&o));
        report_files(&out_dir)
    };
    let huge = run(None, "huge");
    let default_pages = run(Some("glibc.malloc.hugetlb=0"), "default");
    assert!(!huge.is_empty());
    assert_eq!(huge, default_pages, "the allocator's pages changed the outputs");
}
