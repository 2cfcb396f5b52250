//! Shared harness for the end-to-end tests: run the built binary, write scenario files.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::path::{Path, PathBuf};
use std::process::Output;

/// A small scenario that runs in well under a second in release mode, with every
/// default of the 1:1 lifecycle (web clients, app closes, read receipts, presence).
pub const SMALL: &str = r#"
name = "small"
seed = 5
duration_s = 6
warmup_s = 2
drain_s = 2

[fleet]
chat_servers = 3
client_shards = 2
cassandra_nodes = 3
kafka_partitions = 4
routers = 2

[users]
concurrent = 2_000
connect_ramp_s = 1

[workload]
messages_per_s = 500
"#;

/// `SMALL` with lines added to its `[users]` and `[workload]` tables, and tables after.
pub fn small_with(users: &str, workload: &str, tail: &str) -> String {
    SMALL
        .replace("connect_ramp_s = 1\n", &format!("connect_ramp_s = 1\n{users}\n"))
        .replace("messages_per_s = 500\n", &format!("messages_per_s = 500\n{workload}\n"))
        + tail
}

/// `SMALL` reduced to the send path: phones only, nobody closes the app or watches.
pub fn send_path_only() -> String {
    small_with("devices_per_user = { phone = 1.0, web = 0.0 }\nchat_open_share = 0.0", "app_closes_per_hour = 0", "")
}

/// Run a scenario text through the library with its own seed.
pub fn simulate(text: &str) -> wasim_sim::Outcome {
    wasim_sim::run(&parse(text), &wasim_sim::RunOptions::default())
}

/// Run `wasim` with arguments.
pub fn wasim(args: &[&str]) -> Output {
    // Tests run side by side: each run on one thread (a test asking for more says so).
    std::process::Command::new(env!("CARGO_BIN_EXE_wasim"))
        .args(args)
        .env("WASIM_THREADS", "1")
        .output()
        .expect("the wasim binary runs")
}

/// Run a scenario file with `text` that must be refused: (exit code, stderr, the path it
/// names). A panic fails the test.
pub fn run_bad(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(dir.path(), "bad.toml", text);
    let out = wasim(&["scenario", path.to_str().unwrap(), "--out", dir.path().join("out").to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "bad input must not panic: {err}");
    (out.status.code(), err, path.display().to_string())
}

/// Write `text` to `name` inside `dir` and return its path.
pub fn scenario_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write scenario");
    path
}

/// The process's standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The process's standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The repository's root, for the shipped scenarios.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Parse a scenario from text (for tests that drive the library directly).
pub fn parse(text: &str) -> wasim_sim::Scenario {
    wasim_sim::Scenario::parse(text, Path::new("test.toml"), "test").expect("valid test scenario")
}

/// How a run of the binary under a wall-clock limit ended.
pub enum Finished {
    /// It exited (or was ended by a signal) within the limit.
    Exited(Output),
    /// It was still running at the limit and was killed.
    TimedOut,
}

/// Run `wasim` with arguments, killing it if it runs longer than `limit`. Its output is read
/// while it runs, so a long message cannot fill a pipe and stall it.
pub fn wasim_within(args: &[&str], limit: std::time::Duration) -> Finished {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasim"))
        .args(args)
        .env("WASIM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the wasim binary starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for wasim") {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let (stdout, stderr) = (out.join().expect("stdout reader"), err.join().expect("stderr reader"));
    match status {
        Some(status) => Finished::Exited(Output { status, stdout, stderr }),
        None => Finished::TimedOut,
    }
}

/// Run `scenario` once per seed on two threads (the machine's cores); outcomes in seed order.
pub fn sweep(scenario: &wasim_sim::Scenario, seeds: std::ops::Range<u64>) -> Vec<(u64, wasim_sim::Outcome)> {
    let seeds: Vec<u64> = seeds.collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                let o = wasim_sim::run(scenario, &wasim_sim::RunOptions { seed: Some(seed), ..Default::default() });
                results.lock().unwrap().push((seed, o));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    results
}

/// A shipped scenario (`scenarios/FILE`) with `users` users, its load scaled with them and
/// a 2 s connect ramp: the fault scenarios' copies for CI.
pub fn shipped_scaled(file: &str, users: u64) -> wasim_sim::Scenario {
    let mut s = wasim_sim::Scenario::load(&repo_root().join("scenarios").join(file)).expect("a shipped scenario");
    let factor = users as f64 / s.users.concurrent as f64;
    s.users.concurrent = users;
    s.workload.messages_per_s = (s.workload.messages_per_s as f64 * factor).round() as u64;
    s.users.connect_ramp_s = 2;
    s
}
