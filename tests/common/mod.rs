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
    std::process::Command::new(env!("CARGO_BIN_EXE_wasim")).args(args).output().expect("the wasim binary runs")
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
