//! Clock skew on a chat server, end to end. Its Snowflake ids carry its clock, and devices
//! list a conversation in id order: a skew smaller than the time between a sender's messages
//! changes nothing; a large one makes a sender's messages through a server that is behind
//! look older than those it sent through the skewed one, and the recipients' devices put
//! them in their place above those (the order of a chat then follows the servers' clocks,
//! not the sending: ids from different servers are only comparable if their clocks agree).
//! Nothing is lost. A server whose clock jumps closes the connections it wrongly thinks
//! silent, and their devices connect again.

mod common;

fn scenario(skew_ms: i64) -> wasim_sim::Scenario {
    common::parse(&format!(
        "name = \"skew\"\nduration_s = 20\nwarmup_s = 5\ndrain_s = 10\n\
         [fleet]\nchat_servers = 8\nconnections_per_server_max = 3_000\nclient_shards = 2\nrouters = 2\n\
         [users]\nconcurrent = 16_000\ncontacts_per_user = 2\ndevices_per_user = {{ phone = 1.0, web = 0.5 }}\n\
         [workload]\nmessages_per_s = 2_000\napp_closes_per_hour = 1_200\n\
         [[faults]]\nkind = \"clock_skew\"\ntarget = \"chat_server-3\"\nat_s = 8\nfor_s = 12\nskew_ms = {skew_ms}\n"
    ))
}

#[test]
fn a_small_skew_is_harmless() {
    for skew in [5, -5] {
        for (seed, o) in common::sweep(&scenario(skew), 1..4) {
            assert!(
                o.checks.ok(),
                "skew {skew} seed {seed}: {:?}",
                &o.checks.violations[..o.checks.violations.len().min(3)]
            );
        }
    }
}

#[test]
fn a_large_skew_makes_later_messages_look_older_and_devices_put_them_in_place() {
    // Only a sender who moves between servers across the skew in one conversation makes
    // it (a handful a run, some runs none): counted over the seeds.
    let mut inserted = 0;
    for (seed, o) in common::sweep(&scenario(30_000), 1..7) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        inserted += o.counters.shown_inserted;
    }
    assert!(inserted >= 3, "{inserted} messages put in place above newer-looking ones over 6 seeds");
}

#[test]
fn a_presence_shard_ahead_shows_users_offline_early_and_one_behind_breaks_nothing() {
    // The shard's clock jumps 40 s ahead: keys refreshed more than 5 s before (their TTL is 45 s)
    // expire at once, and their users are shown offline although they are not.
    let ahead = |skew: i64| {
        let mut s = scenario(5);
        s.faults =
            vec![wasim_sim::Fault::ClockSkew { at_s: 8, for_s: 12, target: "redis_presence-0".into(), skew_ms: skew }];
        s
    };
    for (seed, o) in common::sweep(&ahead(40_000), 1..3) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
        let flaps: u64 = o.per_second.iter().map(|p| p.shown_offline_by_expiry).sum();
        assert!(flaps > 0, "seed {seed}: keys expired early");
    }
    for (seed, o) in common::sweep(&ahead(-5_000), 1..3) {
        assert!(o.checks.ok(), "seed {seed}: {:?}", &o.checks.violations[..o.checks.violations.len().min(3)]);
    }
}

#[test]
fn a_skew_names_a_chat_server() {
    let refused = |fault: &str, says: &str| {
        let text =
            format!("[fleet]\nchat_servers = 2\n[[faults]]\nkind = \"clock_skew\"\nat_s = 3\nfor_s = 2\n{fault}");
        let e = wasim_sim::Scenario::parse(&text, std::path::Path::new("s.toml"), "s").unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    };
    refused("target = \"cassandra-0\"\nskew_ms = 5\n", "modelled on chat servers");
    refused("target = \"chat_server-1\"\nskew_ms = -3001\n", "before the run began");
    refused("target = \"chat_server-1\"\nskew_ms = 0\n", "nonzero");
    refused("target = \"chat_server-1\"\nskew_ms = 60001\n", "at most 60000");
    refused("target = \"chat_server-1\"\n", "needs `target`");
    // One clock, one skew at a time: two that overlap (they would add up) are refused,
    // one after the other or on another process are not.
    let skew = |target: &str, at_s: u64| {
        format!("[[faults]]\nkind = \"clock_skew\"\ntarget = \"{target}\"\nat_s = {at_s}\nfor_s = 2\nskew_ms = -2000\n")
    };
    let parse = |faults: String| {
        wasim_sim::Scenario::parse(&format!("[fleet]\nchat_servers = 2\n{faults}"), std::path::Path::new("s.toml"), "s")
    };
    let e = parse(skew("chat_server-1", 3) + &skew("chat_server-1", 4)).unwrap_err();
    assert!(e.to_string().contains("already skewed then"), "{e}");
    parse(skew("chat_server-1", 3) + &skew("chat_server-1", 5)).expect("one after the other");
    parse(skew("chat_server-1", 3) + &skew("chat_server-0", 4)).expect("two clocks");
}
