//! `report.md`: the run for a reader, readable on GitHub as it is: the verdicts first, then
//! what a fault did, the plots, the latencies, the tiers with their sizing, the invariants
//! checked and the replay command.

use crate::summary::{LatencySummary, Summary};
use wasim_sim::TARGET_UTILISATION;

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn latency_row(o: &mut String, l: &LatencySummary) {
    o.push_str(&format!(
        "| {} | {} | {} | {} | {} | {} | {} |\n",
        l.name,
        l.count,
        ms(l.p50_ms),
        ms(l.p90_ms),
        ms(l.p99_ms),
        ms(l.max_ms),
        l.definition
    ));
}

/// A fault's timeline as a table.
fn timeline(o: &mut String, steps: &[crate::summary::TimelineStep]) {
    if steps.is_empty() {
        return;
    }
    *o += "| After the fault (ms) | What happened |\n|---:|---|\n";
    for step in steps {
        *o += &format!("| {} | {} |\n", ms(step.at_ms), step.what);
    }
    *o += "\n";
}

/// The report of `s`; `plots` are the SVG files written beside it.
pub fn render_report_md(s: &Summary, plots: &[String]) -> String {
    let mut o = format!("# {} (seed {}): {}\n\n", s.scenario_name, s.seed, s.verdict);
    o += "| Objective | Measured | Samples | Verdict |\n|---|---:|---:|---|\n";
    for v in &s.slos {
        o += &format!(
            "| {}: {} | p99 {} ms | {} | **{}** |\n",
            v.metric,
            v.objective,
            ms(v.measured_ms),
            v.samples,
            v.verdict
        );
    }
    let a = &s.availability;
    o += &format!(
        "| availability ≥ {:.2}% (✓ within {} ms) | {:.4}% | {} sends | **{}** |\n\n",
        a.objective * 100.0,
        a.ack_timeout_ms,
        a.measured * 100.0,
        a.sends,
        a.verdict
    );
    if !s.fault_windows.is_empty() {
        o += "## Faults\n\n| # | Kind | Target | From (s) | Until (s) |\n|---:|---|---|---:|---:|\n";
        for f in &s.fault_windows {
            o += &format!("| {} | {} | {} | {} | {} |\n", f.index, f.kind, f.target, f.from_s, f.until_s);
        }
        o += "\n";
    }
    for c in &s.crashes {
        o += &format!(
            "## {} crashed at {} s (restarted at {} s, detected by {})\n\n",
            c.target, c.at_s, c.restarted_at_s, c.detect
        );
        o += &format!(
            "{} connections lost; their devices were connected again after p50 {} ms, p99 {} ms, max {} ms \
             (placement: {}), at most {} reconnects in one second; {} connects refused, {} failed. \
             Delivery p99 before the fault {} ms, during {} ms, after {} ms.\n\n",
            c.connections_lost,
            ms(c.time_to_reconnect.p50_ms),
            ms(c.time_to_reconnect.p99_ms),
            ms(c.time_to_reconnect.max_ms),
            c.placement,
            c.reconnects_per_s_peak,
            c.connects_refused,
            c.connects_failed,
            ms(c.delivery_before.p99_ms),
            ms(c.delivery_during.p99_ms),
            ms(c.delivery_after.p99_ms),
        );
        o += &format!(
            "Delivered later than the SLO because of it: {} (the latest {} ms); lost: {}; replayed by routers: {}; \
             watchers shown a user offline during it: {} (as long before: {}).\n\n",
            c.delayed_past_slo,
            ms(c.delayed_max_ms),
            c.lost,
            c.replayed,
            c.shown_offline_during,
            c.shown_offline_before
        );
        timeline(&mut o, &c.timeline);
    }
    for r in &s.redis_outages {
        o += &format!(
            "## {} failed over at {} s (replica promoted at {} s, replication lag {} ms)\n\n",
            r.target, r.at_s, r.promoted_at_s, r.replication_lag_ms
        );
        if r.session {
            o += &format!(
                "Session writes the replica lacked: {}; re-registered by chat servers: {} (re-registration {}); \
                 devices asked to reconnect: {}. Delivery p99 before {} ms, during {} ms, after {} ms; {} delivered \
                 later than the SLO (the latest {} ms); lost: {}; misrouted at the end: {}.\n\n",
                r.sessions_lost,
                r.sessions_reregistered,
                if r.reregister { "on" } else { "off" },
                r.devices_sent_away,
                ms(r.delivery_before.p99_ms),
                ms(r.delivery_during.p99_ms),
                ms(r.delivery_after.p99_ms),
                r.delayed_past_slo,
                ms(r.delayed_max_ms),
                r.lost,
                r.misrouted
            );
        } else {
            o += &format!(
                "Watchers shown a user offline by an expired key from the failure to a TTL after the promotion: {} \
                 (in as long before it: {}).\n\n",
                r.shown_offline_during, r.shown_offline_before
            );
        }
        timeline(&mut o, &r.timeline);
    }
    if !plots.is_empty() {
        o += "## Plots\n\n";
        for p in plots {
            o += &format!("![{p}]({p})\n\n");
        }
    }
    o += "## Latencies (ms)\n\n| Metric | Samples | p50 | p90 | p99 | max | Definition |\n|---|---:|---:|---:|---:|---:|---|\n";
    for l in &s.latencies {
        latency_row(&mut o, l);
    }
    o += &format!(
        "\n## Tiers and sizing\n\nMeasured in the window {}–{} s. Nodes for {:.0}% = ceil(nodes × measured utilisation / {:.2}): \
         the fleet this load needs at the target utilisation.\n\n",
        s.measured_window_s[0],
        s.measured_window_s[1],
        TARGET_UTILISATION * 100.0,
        TARGET_UTILISATION
    );
    o += "| Tier | Nodes | Ops/s | Ops/s a node | Utilisation | Predicted | Nodes for 70% |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for t in s.tiers.iter().filter(|t| t.nodes > 0) {
        let needed = (f64::from(t.nodes) * t.utilisation_mean / TARGET_UTILISATION).ceil().max(1.0);
        o += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.1}% | {:.1}% | {} |\n",
            t.tier,
            t.nodes,
            t.ops_per_s,
            t.ops_per_s_per_node,
            t.utilisation_mean * 100.0,
            t.utilisation_predicted * 100.0,
            needed
        );
    }
    let connected: u64 = s.tiers.iter().filter(|t| t.tier == "chat_server").map(|t| t.gauge_end).sum();
    let per_server = u64::from(s.scenario.fleet.connections_per_server_max);
    o += &format!(
        "\nChat servers by connections: ceil({connected} connections at the end / {per_server} a server) = {} (by CPU, the table's).\n",
        connected.div_ceil(per_server.max(1))
    );
    o += &sizing(s);
    if let Some(m) = &s.media {
        o += &media_section(m);
    }
    o += "\n## Architecture as run\n\nEvery tier of the simulated fleet and the network messages a second each flow \
          carried in the measuring window ([architecture.svg](architecture.svg)).\n\n```mermaid\n";
    o += &crate::diagram::architecture_mermaid(s);
    o += "```\n\n## Receipt state machine as run\n\nThe ticks a sender sees, from the model's transition table, each \
          transition with the times it fired ([receipts.svg](receipts.svg)).\n\n```mermaid\n";
    o += &crate::diagram::receipts_mermaid(s);
    o += "```\n";
    if s.receipt_state_machine.off_table > 0 {
        o += &format!(
            "\n**{} moves of the ticks are not in the table** (the ticks went back: a bug).\n",
            s.receipt_state_machine.off_table
        );
    }
    let inv = &s.invariants;
    o += "\n## Invariants\n\n";
    let checked: Vec<String> = inv.checked.iter().map(|(n, name)| format!("{n} {name}")).collect();
    if inv.violations.is_empty() {
        o += &format!("All hold: {}.\n", checked.join(", "));
    } else {
        o += &format!("Checked: {}. Violated:\n\n", checked.join(", "));
        for v in &inv.violations {
            o += &format!("- invariant {} ({}), {}: {}\n", v.invariant, v.name, v.subject, v.detail);
        }
    }
    if inv.conversations_checked_one_in > 1 {
        o += &format!("\n{}\n", sampled_note(inv.conversations_checked_one_in));
    }
    o += &format!("\n## Replay\n\n```sh\n{}\n```\n", s.replay);
    o
}

/// What a run that checks a sample of its conversations says about it.
/// The media pipeline's figures.
fn media_section(m: &crate::summary::MediaSummary) -> String {
    use wasim_sim::estimate::si_bytes;
    let gbps = |b: f64| b * 8.0 / 1e9;
    format!(
        "\n## Media\n\n{:.0}% of sends carry media: uploaded to the object store by pre-signed URL, referenced in the message, downloaded from a CDN edge.\n\n\
| Figure | Value |\n|---|---:|\n\
| media sends tapped | {} |\n| sent once uploaded | {} |\n| failed visibly (every attempt failed) | {} |\n| uploading at the end | {} |\n\
| PUTs made / refused | {} / {} |\n| downloads / failed | {} / {} |\n\
| CDN requests / hit ratio / origin fetches | {} / {:.1}% / {} |\n\
| object-store ingest, mean / peak second | {:.2} / {:.2} Gbit/s ({:.1}% of {:.0} Gbit/s) |\n\
| CDN egress, mean / peak second | {:.2} / {:.2} Gbit/s |\n\
| media storage a day (objects stored a second × 86,400 s) | {} |\n| media held at the end | {} |\n\
| chat-server frames / mean size / with media bytes | {} / {:.0} B / {} |\n",
        m.share * 100.0,
        m.tapped,
        m.sent,
        m.failed_visibly,
        m.uploading_at_end,
        m.put_attempts,
        m.puts_refused,
        m.downloads,
        m.downloads_failed,
        m.cdn_requests,
        m.cdn_hit_ratio * 100.0,
        m.origin_fetches,
        gbps(m.ingest_bytes_per_s_mean),
        gbps(m.ingest_bytes_per_s_peak),
        m.ingest_utilisation * 100.0,
        gbps(m.ingest_capacity_bytes_per_s),
        gbps(m.cdn_egress_bytes_per_s_mean),
        gbps(m.cdn_egress_bytes_per_s_peak),
        si_bytes(m.storage_bytes_per_day),
        si_bytes(m.stored_bytes_end as f64),
        m.chat_frames,
        m.chat_frame_bytes_mean,
        m.chat_frames_with_media_bytes
    )
}

pub(crate) fn sampled_note(one_in: u32) -> String {
    format!(
        "The checkers followed one conversation in {one_in} (`checks.conversations_one_in`, or chosen so that a large run's logs fit the machine; by a hash of the conversation, each followed whole: its messages, displays, reads, receipts and rows). Presence is checked for one user in as many; routing and liveness for every device."
    )
}

/// The sizing for the card's full load, with every formula.
fn sizing(s: &Summary) -> String {
    let z = &s.sizing;
    let mut o = format!(
        "\n### Sizing for the card's full load ({} users, {} msg/s, {} group msg/s) at {:.0}% utilisation\n\n",
        wasim_sim::estimate::si(z.card_users),
        wasim_sim::estimate::si(z.card_messages_per_s),
        wasim_sim::estimate::si(z.card_group_messages_per_s),
        z.target_utilisation * 100.0
    );
    o += "| Tier | By | Nodes in this run | Nodes needed | Over 3 zones | Formula |\n|---|---|---:|---:|---:|---|\n";
    for r in &z.rows {
        o += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.tier,
            r.by,
            r.nodes_run,
            wasim_sim::thousands(r.nodes),
            wasim_sim::thousands(r.nodes_three_zones),
            r.formula
        );
    }
    o += "\n";
    for n in &z.notes {
        o += &format!("- {n}\n");
    }
    o
}
