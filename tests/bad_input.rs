//! Bad input gets a message naming the file, line and field, and exit code 2; never a panic.

mod common;
use common::{run_bad, scenario_file, stderr, wasim};

#[test]
fn malformed_toml_names_the_line() {
    let (code, err, path) = run_bad("name = \"x\"\nduration_s = 10\n[fleet\nchat_servers = 2\n");
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:3")), "{err}");
}

#[test]
fn unknown_key_names_line_and_field() {
    let (code, err, path) = run_bad("duration_s = 10\n\n[users]\nconcurrent = 100\nconcurent_users = 5\n");
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:5: field `users.concurent_users`")), "{err}");
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn zero_size_names_line_and_field() {
    let (code, err, path) = run_bad("[fleet]\nchat_servers = 2\ncassandra_nodes = 0\n");
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:3: field `fleet.cassandra_nodes`: must be greater than zero")), "{err}");
}

#[test]
fn negative_size_names_line_and_field() {
    let (code, err, path) = run_bad("[workload]\nmessages_per_s = -100\n");
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:2: field `workload.messages_per_s`")), "{err}");
}

#[test]
fn missing_file_is_named() {
    let out = wasim(&["scenario", "no/such/scenario.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("no/such/scenario.toml") && err.contains("cannot read"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn inconsistent_fleet_names_the_field() {
    let (code, err, _) = run_bad("[fleet]\ncassandra_nodes = 2\ncassandra_replication_factor = 3\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("field `fleet.cassandra_replication_factor`"), "{err}");
}

#[test]
fn a_scenario_too_large_for_the_machine_is_refused_with_its_estimate() {
    let (code, err, _) = run_bad(
        "[fleet]\nchat_servers = 1000\nconnections_per_server_max = 1_000_000\n[users]\nconcurrent = 1_000_000_000\n",
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("too large for this machine") && err.contains("GiB"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(wasim(&[]).status.code(), Some(2));
    assert_eq!(wasim(&["scenario"]).status.code(), Some(2));
    assert_eq!(wasim(&["scenario", "x.toml", "--seed", "minus-one"]).status.code(), Some(2));
}

#[test]
fn a_name_that_leaves_the_output_folder_is_refused() {
    let (code, err, path) = run_bad("seed = 1\nname = \"../../outside\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:2: field `name`")), "{err}");
}

#[test]
fn a_table_given_as_an_array_is_refused_with_its_line() {
    let (code, err, path) = run_bad("seed = 1\nfleet = [1, 2]\n");
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:2: field `fleet`: must be a table")), "{err}");
}

#[test]
fn a_mistake_in_a_fault_names_its_index_and_line() {
    let cut = "[[faults]]\nkind = \"cut_network\"\nat_s = 3\nfor_s = 2\nusers = 10\n";
    let (code, err, path) = run_bad(&format!("{cut}\n{cut}extra = 1\n"));
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:12: field `faults[1].extra`: unknown field")), "{err}");
}

#[test]
fn drain_s_zero_is_refused_with_the_reason() {
    let (code, err, path) = run_bad("drain_s = 0\n");
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:1: field `drain_s`")) && err.contains("in flight"), "{err}");
}

#[test]
fn a_fault_naming_a_kind_the_scenario_lacks_is_refused() {
    // No groups, so no fan-out processes: a clog of one is a mistake, not a no-op.
    let text = "[[faults]]\nkind = \"clog\"\nat_s = 3\nfor_s = 1\nbetween = \"fanout-0\"\nand = \"chat_server\"\n";
    let (code, err, path) = run_bad(text);
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{path}:5: field `faults[0].between`")), "{err}");
    assert!(err.contains("no fanout processes"), "{err}");
}

/// `wasim bench` over several scenarios: each measured in a process of its own, then a
/// table of the medians with each estimate; one too large for the machine is reported with
/// its estimate, not run, and the others still are.
#[test]
fn bench_tabulates_several_scenarios_and_reports_one_too_large_without_running_it() {
    let dir = tempfile::tempdir().unwrap();
    let small = scenario_file(dir.path(), "tiny.toml", &common::send_path_only());
    let huge = scenario_file(
        dir.path(),
        "huge.toml",
        "name = \"huge\"\n[fleet]\nchat_servers = 1000\nconnections_per_server_max = 1_000_000\n[users]\nconcurrent = 1_000_000_000\n",
    );
    let out = wasim(&["bench", small.to_str().unwrap(), huge.to_str().unwrap(), "--runs", "1", "--threads", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = common::stdout(&out);
    let table = text.split("scenario ").nth(1).unwrap_or_else(|| panic!("no closing table: {text}"));
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[1].starts_with("huge") && rows[1].contains("not run: estimated"), "{table}");
    assert!(rows[0].contains('M') && !rows[0].contains("not run"), "{table}");
    assert!(text.contains("median: Run:"), "{text}");
    assert!(text.contains("s of them building the state"), "the start-up is timed: {text}");
    assert!(!text.contains("table-row"), "the children's rows are not printed: {text}");
}
