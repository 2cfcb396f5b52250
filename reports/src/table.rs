//! Text rendering for a terminal: the derived settings before a run, the summary after.

use crate::summary::{LatencySummary, Summary};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use wasim_sim::{predicted_load, Scenario, TARGET_UTILISATION};

/// Wall-clock figures of a run. Kept apart from the summary, which must be identical
/// for the same scenario and seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    pub simulated_s: f64,
    pub wall_s: f64,
    /// Wall seconds before the first simulated tick was done: building every process's
    /// state (the users' devices, sessions, presence keys, connection tables), within
    /// `wall_s`.
    #[serde(default)]
    pub startup_s: Option<f64>,
    pub simulated_per_wall_s: f64,
    pub events: u64,
    pub events_per_wall_s: f64,
    /// Peak resident memory of the process, when the platform tells.
    pub peak_rss_bytes: Option<u64>,
    pub bytes_per_user: Option<f64>,
    /// Resident memory at the end of the warm-up (the users connected, their state built),
    /// per user.
    pub bytes_per_user_at_warmup_end: Option<f64>,
    /// Peak memory added after the warm-up, per message sent in the measured window.
    pub bytes_per_message: Option<f64>,
}

/// The seed and the settings derived from the scenario, printed before the run starts.
pub fn render_settings(s: &Scenario, seed: u64, file: &str) -> String {
    let f = &s.fleet;
    let mut o = String::new();
    let _ = writeln!(o, "wasim {} · scenario {} ({file})", env!("CARGO_PKG_VERSION"), s.name);
    if !s.description.is_empty() {
        let _ = writeln!(o, "  {}", s.description);
    }
    let _ = writeln!(
        o,
        "seed {seed} · tick {} µs · warm-up {} s + measured {} s + drain {} s = {} s simulated",
        s.tick_us,
        s.warmup_s,
        s.duration_s,
        s.drain_s,
        s.total_s()
    );
    let _ = writeln!(
        o,
        "users {} ({} per chat server, ramp {} s) · offered load {} msg/s (Poisson, {} contacts each) · estimated memory {:.0} MiB",
        s.users.concurrent,
        s.users.concurrent / u64::from(f.chat_servers),
        s.users.connect_ramp_s,
        s.workload.messages_per_s,
        s.users.contacts_per_user,
        s.estimated_memory_bytes() as f64 / (1u64 << 20) as f64
    );
    let _ = writeln!(
        o,
        "fleet: {} chat servers · {} client shards · {} Redis session shards · {} Cassandra nodes (RF {}, quorum {}) · {} Kafka brokers / {} partitions · {} routers",
        f.chat_servers,
        f.client_shards,
        f.redis_session_shards,
        f.cassandra_nodes,
        f.cassandra_replication_factor,
        f.cassandra_replication_factor / 2 + 1,
        f.kafka_brokers,
        f.kafka_partitions,
        f.routers
    );
    let _ = writeln!(
        o,
        "predicted load per process (the visit table: each operation kind's rate from the workload; utilisation = ops x mean service / workers):"
    );
    let load = predicted_load(s);
    for t in &load {
        let _ = writeln!(
            o,
            "  {:<14} {:>12.0} ops/s per process · utilisation {:>6.1}%",
            t.tier,
            t.ops_per_s_per_node,
            t.utilisation * 100.0
        );
    }
    for t in load.iter().filter(|t| t.utilisation >= 1.0) {
        let _ = writeln!(
            o,
            "warning: {} is predicted at {:.0}% of capacity: its queues will grow for the whole run (latencies and memory with them); {} nodes would bring it to {:.0}%",
            t.tier,
            t.utilisation * 100.0,
            t.nodes_for_target,
            TARGET_UTILISATION * 100.0
        );
    }
    o
}

fn fmt_ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn latency_row(o: &mut String, label: &str, l: &LatencySummary) {
    let mark = |p: &str, v: f64| if l.thin.contains(&p) { format!("{}*", fmt_ms(v)) } else { fmt_ms(v) };
    let _ = writeln!(
        o,
        "  {label:<18} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10}",
        fmt_ms(l.p50_ms),
        fmt_ms(l.p90_ms),
        mark("p99", l.p99_ms),
        mark("p99.9", l.p999_ms),
        fmt_ms(l.max_ms),
        l.count
    );
}

/// The summary table: SLO verdicts first, then latencies, throughput and tiers.
/// The group section: load, the card's task 2.2 milestones, fan-out batching, storage.
/// Bytes a second as Gbit/s.
fn gbps(bytes_per_s: f64) -> f64 {
    bytes_per_s * 8.0 / 1e9
}

fn render_media(o: &mut String, m: &crate::summary::MediaSummary) {
    use wasim_sim::estimate::si_bytes;
    let _ = writeln!(
        o,
        "Media: {:.0}% of sends · {} tapped · {} sent once uploaded · {} failed visibly · {} uploading at the end · {} PUTs ({} refused, retried) · {} downloads ({} failed)",
        m.share * 100.0,
        m.tapped,
        m.sent,
        m.failed_visibly,
        m.uploading_at_end,
        m.put_attempts,
        m.puts_refused,
        m.downloads,
        m.downloads_failed
    );
    let _ = writeln!(
        o,
        "  object store ingest {:.2} Gbit/s mean, {:.2} peak ({:.1}% of its {:.0} Gbit/s) · storage {}/day · CDN egress {:.2} Gbit/s mean, {:.2} peak · hit ratio {:.1}% · {} origin fetches",
        gbps(m.ingest_bytes_per_s_mean),
        gbps(m.ingest_bytes_per_s_peak),
        m.ingest_utilisation * 100.0,
        gbps(m.ingest_capacity_bytes_per_s),
        si_bytes(m.storage_bytes_per_day),
        gbps(m.cdn_egress_bytes_per_s_mean),
        gbps(m.cdn_egress_bytes_per_s_peak),
        m.cdn_hit_ratio * 100.0,
        m.origin_fetches
    );
    let _ = writeln!(
        o,
        "  chat servers carried frames only: {} frames of {:.0} bytes on average ({}/s) · {} with media bytes",
        m.chat_frames,
        m.chat_frame_bytes_mean,
        si_bytes(m.chat_bytes_per_s),
        m.chat_frames_with_media_bytes
    );
}

fn render_groups(o: &mut String, g: &crate::summary::GroupSummary) {
    let st = &g.stats;
    let _ = writeln!(
        o,
        "Groups: {} groups of {:.0} members on average (at most {}; {:.2} groups per user, at most {}) · offered {:.0} msg/s · sent {:.0} · {:.0} pushes/s to members · {:.0} receipt-table rows/s",
        st.groups,
        st.members_mean,
        st.members_max,
        st.groups_per_user_mean,
        st.groups_per_user_max,
        g.offered_msg_per_s,
        g.sent_msg_per_s,
        g.pushes_per_s,
        g.receipt_rows_per_s
    );
    let _ = writeln!(
        o,
        "  {} messages in the window to {} recipients: ✓✓ shown for {} ({:.1}%), blue for {} ({:.1}%); {} recipients never had theirs by the end",
        st.messages,
        st.recipients,
        st.double_ticks,
        100.0 * st.double_ticks as f64 / st.messages.max(1) as f64,
        st.blue,
        100.0 * st.blue as f64 / st.messages.max(1) as f64,
        st.recipients_never_delivered
    );
    let _ = writeln!(o, "  from send (ms)            reached      p50      p99      max");
    for (what, m) in [("delivered", &st.delivered), ("read", &st.read)] {
        for (point, sp) in [("first member", &m.first), ("half of them", &m.majority), ("every member", &m.all)] {
            let _ = writeln!(
                o,
                "  {what:<9} {point:<14} {:>9} {:>8.1} {:>8.1} {:>8.1}",
                sp.reached, sp.p50_ms, sp.p99_ms, sp.max_ms
            );
        }
    }
    let _ = writeln!(
        o,
        "  fan-out per message: {:.1} route requests, {:.1} forwards (batched; unbatched: one each per recipient) · storage of the window's messages: {} store once + pointers, {} a copy per member · receipts table {}",
        g.route_requests_per_message,
        g.forwards_per_message,
        bytes(g.storage_store_once_bytes),
        bytes(g.storage_copy_per_member_bytes),
        bytes(g.receipt_table_bytes)
    );
}

/// Bytes, in the largest binary unit that keeps a number of at least 1.
fn bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn render_summary(s: &Summary) -> String {
    let mut o = String::new();
    let header =
        format!("  {:<18} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10}", "", "p50", "p90", "p99", "p99.9", "max", "samples");
    let _ = writeln!(o, "\nSLOs (ms){}", &header[9..]);
    for slo in &s.slos {
        let l = s.latencies.iter().find(|l| l.name == slo.metric).expect("SLO metric is summarised");
        latency_row(&mut o, slo.name, l);
        let _ = writeln!(
            o,
            "    objective {} -> {}{}",
            slo.objective,
            slo.verdict,
            if slo.note.is_empty() { String::new() } else { format!(" ({})", slo.note) }
        );
    }
    let a = &s.availability;
    let _ = writeln!(
        o,
        "  availability: {:.4}% of {} sends acknowledged within {} ms{}\n    objective >= {:.4}% -> {}",
        a.measured * 100.0,
        a.sends,
        a.ack_timeout_ms,
        if s.fault_windows.is_empty() {
            String::new()
        } else {
            format!(
                " (before the faults {:.4}%, during {:.4}% of {}, after {:.4}%)",
                a.before.2 * 100.0,
                a.during.2 * 100.0,
                a.during.0,
                a.after.2 * 100.0
            )
        },
        a.objective * 100.0,
        a.verdict
    );
    let _ = writeln!(o, "\nOther latencies (ms){}", &header[20..]);
    for l in s.latencies.iter().filter(|l| !s.slos.iter().any(|v| v.metric == l.name)) {
        latency_row(&mut o, l.name, l);
    }
    if s.latencies.iter().any(|l| !l.thin.is_empty()) {
        let _ = writeln!(o, "  * too few samples for this percentile to be meaningful");
    }
    let _ = writeln!(o, "  note: {}", s.presence_detection_note);
    let _ = writeln!(o, "  tick: {}", s.tick_bound);
    let t = &s.throughput;
    let _ = writeln!(
        o,
        "\nThroughput (measured window): offered {} msg/s · sent {:.0} · ✓ {:.0} · shown on devices {:.0} msg/s",
        t.offered_msg_per_s, t.sent_msg_per_s, t.acked_msg_per_s, t.delivered_msg_per_s
    );
    if let Some(g) = &s.groups {
        render_groups(&mut o, g);
    }
    let c = &s.counters;
    let _ = writeln!(
        o,
        "Lifecycle: {} inbox pointers · {} fetched on reconnect · {} duplicates dropped · {} shown in place above newer ones · {} reconnects · {} ACKs lost, {} re-sent · {} read receipts · {} receipts stored for offline senders · {} heartbeats · {} presence notifications",
        c.inbox_adds, c.fetched, c.duplicates_dropped, c.shown_inserted, c.reconnects, c.acks_lost, c.acks_resent, c.read_receipts, c.receipts_stored, c.heartbeats, c.presence_updates
    );
    if let Some(m) = &s.media {
        render_media(&mut o, m);
    }
    let reached: Vec<String> = s.sometimes.iter().map(|x| format!("{} {}", x.name, x.count)).collect();
    let _ = writeln!(o, "Paths reached: {}", reached.join(" · "));
    let inv = &s.invariants;
    let names: Vec<String> = inv.checked.iter().map(|(n, name)| format!("{n} {name}")).collect();
    let f = &inv.in_flight;
    if f.owed_to_devices_catching_up + f.owed_acked_recently + f.owed_in_transit > 0 {
        let _ = writeln!(
            o,
            "\nIn flight at the end (not lost): {} messages owed to devices still catching up, {} still on the network or about to leave a process, {} acknowledged within the last {:.1} s (the in-flight bound: the slowest legitimate path plus the queues' backlog)",
            f.owed_to_devices_catching_up,
            f.owed_in_transit,
            f.owed_acked_recently,
            f.bound_ms as f64 / 1e3
        );
    }
    if inv.conversations_checked_one_in > 1 {
        let _ = writeln!(o, "\n{}", crate::markdown::sampled_note(inv.conversations_checked_one_in));
    }
    if inv.ok() {
        let _ = writeln!(o, "\nInvariants: all hold ({})", names.join(", "));
    } else {
        let _ = writeln!(o, "\nInvariants VIOLATED (checked: {})", names.join(", "));
        for (n, count) in &inv.counts {
            let _ = writeln!(o, "  invariant {n}: {count} violation(s)");
        }
        for v in &inv.violations {
            let _ = writeln!(
                o,
                "  invariant {} ({}): {} at t={:.6} s: {} (seed {}; replay: {})",
                v.invariant,
                v.name,
                v.subject,
                v.at_us as f64 / 1e6,
                v.detail,
                s.seed,
                s.replay
            );
        }
    }
    let _ = writeln!(
        o,
        "\nTiers (measured window; predicted = the visit table before the run)\n  {:<14} {:>6} {:>8} {:>12} {:>12} {:>12} {:>8} {:>9}  {:<24} end-of-run gauge",
        "tier", "nodes", "workers", "ops/s", "predicted", "ops/s/node", "util", "util max", "backlog at window end"
    );
    for tier in &s.tiers {
        let b = &tier.backlog_window_end;
        let backlog = if b.queued == 0 {
            "none".to_string()
        } else {
            format!("{} queued, {:.1} s wait", b.queued, b.wait_us as f64 / 1e6)
        };
        let _ = writeln!(
            o,
            "  {:<14} {:>6} {:>8} {:>12.0} {:>12.0} {:>12.0} {:>7.1}% {:>8.1}%  {:<24} {} {}",
            tier.tier,
            tier.nodes,
            tier.workers_per_node,
            tier.ops_per_s,
            tier.ops_per_s_predicted,
            tier.ops_per_s_per_node,
            tier.utilisation_mean * 100.0,
            tier.utilisation_max * 100.0,
            backlog,
            tier.gauge_end,
            tier.gauge
        );
    }
    for c in &s.crashes {
        render_crash(&mut o, c, &header);
    }
    for r in &s.redis_outages {
        render_redis_outage(&mut o, r, &header);
    }
    if !s.placement_comparison.is_empty() {
        let _ = writeln!(
            o,
            "\nPlacement on the same crash (the card's task 1.1; same seed)\n  {:<18} {:>22} {:>14} {:>9} {:>8} {:>22} {:>10} {:>14} {:>12}",
            "placement", "reconnect p50/p99/max", "reconnects/s", "refused", "failed", "connections min/max", "max/mean", "delivery p99", "available"
        );
        for r in &s.placement_comparison {
            let _ = writeln!(
                o,
                "  {:<18} {:>22} {:>14} {:>9} {:>8} {:>22} {:>10.2} {:>11.0} ms {:>11.4}%",
                r.placement,
                format!("{:.0}/{:.0}/{:.0} ms", r.reconnect_p50_ms, r.reconnect_p99_ms, r.reconnect_max_ms),
                r.reconnects_per_s_peak,
                r.connects_refused,
                r.connects_failed,
                format!("{}/{}", r.connections_min_end, r.connections_max_end),
                r.imbalance_end,
                r.delivery_during_p99_ms,
                r.availability_during * 100.0
            );
        }
    }
    let _ = writeln!(o, "\nVerdict: {} · replay: {}", s.verdict, s.replay);
    o
}

/// The card's task 1.2: what a chat server crash did and how the fleet recovered.
fn render_crash(o: &mut String, c: &crate::summary::CrashReport, header: &str) {
    let how = if c.chat_server { format!("detected by {}; ", c.detect) } else { String::new() };
    let placement = if c.chat_server { format!("; placement {}", c.placement) } else { String::new() };
    let _ =
        writeln!(o, "\nCrash of {} at {} s ({how}restarted at {} s{placement})", c.target, c.at_s, c.restarted_at_s);
    if c.chat_server {
        let _ = writeln!(
            o,
            "  {} connections lost · reconnects peak at {}/s · {} connects refused by full servers, {} met the dead server · {} messages routed again by the routers",
            c.connections_lost, c.reconnects_per_s_peak, c.connects_refused, c.connects_failed, c.replayed
        );
    } else {
        let _ = writeln!(
            o,
            "  whole run: {} writes sent again for want of a quorum · {} reads sent to every replica · {} rows repaired from peers on rejoining · {} sends retried for want of a ✓ · {} records dropped by routers as repeats · {} messages shown in place above newer ones that overtook them · {} records pushed again from the routers' commits · {} partitions moved between routers",
            c.writes_retried, c.reads_retried, c.rows_repaired, c.sends_retried, c.repeats_dropped, c.shown_inserted, c.records_pushed_again, c.partitions_moved
        );
    }
    for step in &c.timeline {
        let _ = writeln!(o, "  +{:>9.1} ms  {}", step.at_ms, step.what);
    }
    let _ = writeln!(o, "  (ms){}", &header[6..]);
    if c.chat_server {
        latency_row(o, "time to reconnect", &c.time_to_reconnect);
    }
    latency_row(o, "delivery before", &c.delivery_before);
    latency_row(o, "delivery during", &c.delivery_during);
    latency_row(o, "delivery after", &c.delivery_after);
    let live: Vec<u64> = c.connections_end.iter().flatten().copied().collect();
    let dead = c.connections_end.iter().filter(|x| x.is_none()).count();
    if c.chat_server {
        let _ = writeln!(
            o,
            "  presence flaps: watchers told a user went offline (key expired) {} times from the crash to a TTL after the restart, {} times in as long before",
            c.shown_offline_during, c.shown_offline_before
        );
        let _ = writeln!(
            o,
            "  connections per server at the end: min {} · max {} · fullest / mean {:.2}{}",
            live.iter().min().unwrap_or(&0),
            live.iter().max().unwrap_or(&0),
            c.imbalance_end,
            if dead > 0 { format!(" · {dead} server(s) dead at the end") } else { String::new() },
        );
    }
    let _ = writeln!(
        o,
        "  {} messages sent during the faults delivered past the SLO (latest {:.0} ms) · lost {}",
        c.delayed_past_slo, c.delayed_max_ms, c.lost
    );
}

/// The capstone's "Redis down": what a primary's death did and what the failover cost.
fn render_redis_outage(o: &mut String, r: &crate::summary::RedisOutageReport, header: &str) {
    let _ = writeln!(
        o,
        "\nRedis primary of {} down at {} s (replica promoted at {} s, {} ms behind{})",
        r.target,
        r.at_s,
        r.promoted_at_s,
        r.replication_lag_ms,
        match (r.session, r.reregister) {
            (true, true) => "; chat servers re-register their sessions after a failover",
            (true, false) => "; nothing re-registers sessions after a failover, as in the card",
            (false, _) => "",
        }
    );
    if r.session {
        let _ = writeln!(
            o,
            "  whole run: {} session writes lost in failovers · {} sessions written again · {} devices asked to reconnect",
            r.sessions_lost, r.sessions_reregistered, r.devices_sent_away
        );
    }
    for step in &r.timeline {
        let _ = writeln!(o, "  +{:>9.1} ms  {}", step.at_ms, step.what);
    }
    let _ = writeln!(o, "  (ms){}", &header[6..]);
    latency_row(o, "delivery before", &r.delivery_before);
    latency_row(o, "delivery during", &r.delivery_during);
    latency_row(o, "delivery after", &r.delivery_after);
    if !r.session {
        let _ = writeln!(
            o,
            "  presence flaps: watchers told a user went offline (key expired) {} times from the crash to a TTL after the promotion, {} times in as long before",
            r.shown_offline_during, r.shown_offline_before
        );
    }
    let _ = writeln!(
        o,
        "  {} messages sent during the faults delivered past the SLO (latest {:.0} ms) · never delivered to a connected device {} · devices routed elsewhere at the end {}",
        r.delayed_past_slo, r.delayed_max_ms, r.lost, r.misrouted
    );
}

/// The run's speed.
pub fn render_timing(t: &Timing) -> String {
    let mut o = format!(
        "Run: {:.0} simulated s in {:.2} wall s{} = {} simulated s per wall s · {} events = {:.2}M events per wall s",
        t.simulated_s,
        t.wall_s,
        t.startup_s.map_or_else(String::new, |s| format!(" ({s:.2} s of them building the state)")),
        // Slower than real time to three decimals (the card's full load runs at a few
        // hundredths), faster to one.
        if t.simulated_per_wall_s < 1.0 {
            format!("{:.3}", t.simulated_per_wall_s)
        } else {
            format!("{:.1}", t.simulated_per_wall_s)
        },
        t.events,
        t.events_per_wall_s / 1e6
    );
    if let (Some(rss), Some(per_user)) = (t.peak_rss_bytes, t.bytes_per_user) {
        let _ = write!(
            o,
            " · peak memory {:.1} MiB ({per_user:.0} bytes per simulated user",
            rss as f64 / (1 << 20) as f64
        );
        if let Some(per_message) = t.bytes_per_message {
            let _ = write!(o, ", {per_message:.0} bytes per message sent after the warm-up");
        }
        o.push(')');
    }
    o.push('\n');
    o
}
