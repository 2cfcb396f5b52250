//! Proof that the checkers can fail: each planted bug (cargo feature `planted-bugs`),
//! swept by `wasim fuzz` over 20 seeds of a small shipped scenario, is named by its
//! invariant on a seed the real logic passes.

#![cfg(feature = "planted-bugs")]

mod common;
use common::{stderr, wasim};
use std::collections::BTreeMap;
use wasim_sim::plant::Plant;

const SCENARIO: &str = "scenarios/fuzz-faults.toml";
const SEEDS: &str = "1..=20";

/// The scenario a plant is swept on, and the sweep's faults: the fault walk of
/// `SCENARIO`, or for a group plant a small group scenario (without faults).
fn swept_on(plant: Plant) -> (&'static str, &'static str) {
    match plant {
        Plant::GroupCountsDevices => ("scenarios/small/group-500-receipts.toml", "none"),
        // With the fault walk: the checker must tell a record waiting on a reply delayed
        // by a lossy link (in flight) from one waiting on a reply that is gone.
        Plant::FanoutLosesRouteReply => ("scenarios/small/group-1024.toml", "random"),
        // Media sends, with their scenario's store outage and edge loss.
        Plant::ChatServerRelaysMedia => ("scenarios/media-heavy.toml", "scenario"),
        _ => (SCENARIO, "scenario"),
    }
}

/// Each seed's broken invariants in a sweep of `scenario` with `faults` (with `plant`, if
/// any).
fn sweep(scenario: &str, faults: &str, plant: Option<Plant>) -> BTreeMap<u64, Vec<u64>> {
    let mut args = vec!["fuzz", scenario, "--seeds", SEEDS, "--faults", faults, "--json"];
    if let Some(p) = plant {
        args.extend(["--plant", p.name()]);
    }
    let out = wasim(&args);
    let code = out.status.code();
    assert!(code == Some(0) || code == Some(1), "{args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let mut broken: Vec<u64> =
                r["violations"].as_array().unwrap().iter().map(|v| v["invariant"].as_u64().unwrap()).collect();
            broken.dedup();
            (r["seed"].as_u64().unwrap(), broken)
        })
        .collect()
}

fn caught(plant: Plant) {
    let (scenario, faults) = swept_on(plant);
    let real = sweep(scenario, faults, None);
    assert!(real.values().all(Vec::is_empty), "the real logic passes every seed: {real:?}");
    let planted = sweep(scenario, faults, Some(plant));
    let want = u64::from(plant.invariant());
    let first = planted.iter().find(|(_, broken)| broken.contains(&want)).map(|(&s, _)| s);
    assert!(first.is_some(), "{}: invariant {want} never named in {SEEDS}: {planted:?}", plant.name());
}

macro_rules! plant_tests {
    ($($name:ident: $plant:expr,)*) => {
        $(
            #[test]
            fn $name() {
                caught($plant);
            }
        )*

        #[test]
        fn every_plant_has_a_test() {
            let tested = [$($plant),*];
            for p in Plant::ALL {
                assert!(tested.contains(&p), "{} has no test", p.name());
            }
        }
    };
}

plant_tests! {
    dedup_wrong_key: Plant::DedupWrongKey,
    catch_up_unsorted: Plant::CatchUpUnsorted,
    cursor_skips_one: Plant::CursorSkipsOne,
    receipt_not_monotone: Plant::ReceiptNotMonotone,
    last_seen_leak: Plant::LastSeenLeak,
    drop_stale_session: Plant::DropStaleSession,
    stale_session_kept: Plant::StaleSessionKept,
    forget_unacked_on_close: Plant::ForgetUnackedOnClose,
    forget_unacked_on_early_reconnect: Plant::ForgetUnackedOnEarlyReconnect,
    commit_before_route: Plant::CommitBeforeRoute,
    read_waits_for_more_replicas: Plant::ReadWaitsForMoreReplicas,
    presence_ttl_too_long: Plant::PresenceTtlTooLong,
    close_marks_user_offline: Plant::CloseMarksUserOffline,
    ack_before_quorum: Plant::AckBeforeQuorum,
    stored_receipts_dropped: Plant::StoredReceiptsDropped,
    group_counts_devices: Plant::GroupCountsDevices,
    fanout_loses_route_reply: Plant::FanoutLosesRouteReply,
    acked_on_push: Plant::AckedOnPush,
    chat_server_relays_media: Plant::ChatServerRelaysMedia,
}

/// A run that follows a sample of its conversations (as the card's full load does) still
/// names the plants its per-message logs catch: each conversation it follows, it follows
/// whole.
#[test]
fn a_sample_of_conversations_still_catches_what_the_logs_catch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(common::repo_root().join(SCENARIO)).expect("the fault walk");
    let sampled =
        common::scenario_file(dir.path(), "sampled", &format!("{text}\n[checks]\nconversations_one_in = 2\n"));
    let sampled = sampled.to_str().expect("a UTF-8 path");
    let real = sweep(sampled, "scenario", None);
    assert!(real.values().all(Vec::is_empty), "the real logic passes every seed: {real:?}");
    let plants = [
        Plant::DedupWrongKey,
        Plant::CatchUpUnsorted,
        Plant::CursorSkipsOne,
        Plant::ReceiptNotMonotone,
        Plant::CloseMarksUserOffline,
        Plant::PresenceTtlTooLong,
    ];
    for plant in plants {
        let planted = sweep(sampled, "scenario", Some(plant));
        let want = u64::from(plant.invariant());
        assert!(
            planted.values().any(|b| b.contains(&want)),
            "{}: invariant {want} never named: {planted:?}",
            plant.name()
        );
    }
}

#[test]
fn the_plants_are_listed_and_a_wrong_name_is_refused() {
    let out = wasim(&["fuzz", SCENARIO, "--plant", "list"]);
    assert_eq!(out.status.code(), Some(0));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    for p in Plant::ALL {
        assert!(listed.contains(p.name()), "{listed}");
    }
    let out = wasim(&["fuzz", SCENARIO, "--plant", "no-such-bug"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--plant list"), "{}", stderr(&out));
}

#[test]
fn a_planted_failure_replays_with_its_plant() {
    let out = wasim(&["fuzz", SCENARIO, "--seeds", "1..=1", "--faults", "scenario", "--plant", "last-seen-leak"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let replay = said.lines().find_map(|l| l.trim().strip_prefix("replay: ")).expect("a replay line").to_string();
    assert!(replay.ends_with("--plant last-seen-leak"), "{replay}");
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = replay.split_whitespace().skip(1).collect();
    let again = wasim(&[&args[..], &["--out", dir.path().to_str().unwrap()]].concat());
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("invariant 7"), "the replay fails the same way");
}
