//! The summary: every figure a run produced, with SLO verdicts, as one serialisable value.

use hdrhistogram::Histogram;
use serde::Serialize;
use wasim_sim::{
    predicted_load_from, predicted_rates, Backlog, CheckReport, Counters, OpKind, Outcome, Scenario, TierLoad,
    TierStats,
};

/// PASS or FAIL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
    /// The run produced no samples for this objective, and none were required.
    #[serde(rename = "NO DATA")]
    NoData,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NoData => "NO DATA",
        })
    }
}

/// Percentiles of one latency metric, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    pub name: &'static str,
    pub definition: &'static str,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Percentiles that rest on too few samples to mean much (p99 needs 100, p99.9 1,000).
    pub thin: Vec<&'static str>,
}

impl LatencySummary {
    fn new(name: &'static str, definition: &'static str, h: &Histogram<u64>) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1_000.0;
        let count = h.len();
        let q = |p: f64| if count == 0 { 0.0 } else { ms(h.value_at_quantile(p)) };
        let mut thin = Vec::new();
        if count < 100 {
            thin.push("p99");
        }
        if count < 1_000 {
            thin.push("p99.9");
        }
        LatencySummary {
            name,
            definition,
            count,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: if count == 0 { 0.0 } else { ms(h.max()) },
            thin,
        }
    }
}

/// One SLO and its verdict.
#[derive(Clone, Debug, Serialize)]
pub struct SloVerdict {
    pub name: &'static str,
    pub metric: &'static str,
    pub objective: String,
    pub objective_ms: f64,
    pub measured_ms: f64,
    pub samples: u64,
    pub verdict: Verdict,
    pub note: String,
}

/// The share of sends whose ✓ came within the ACK timeout, over the measuring window and
/// before, during and after the faults. Sends whose user closed the app before their ✓
/// came are left out: the user stopped waiting, the system did not fail.
#[derive(Clone, Debug, Serialize)]
pub struct Availability {
    pub objective: f64,
    pub ack_timeout_ms: u64,
    pub sends: u64,
    pub acked_in_time: u64,
    pub abandoned: u64,
    pub measured: f64,
    /// (sends, acked in time, share) before the first fault, during a fault window and
    /// after the last (a run without faults has only "before").
    pub before: (u64, u64, f64),
    pub during: (u64, u64, f64),
    pub after: (u64, u64, f64),
    pub verdict: Verdict,
}

impl Availability {
    fn new(s: &Scenario, c: &Counters) -> Availability {
        let part = |sends: u64, abandoned: u64, acked: u64| {
            let n = sends.saturating_sub(abandoned);
            (n, acked, if n == 0 { 1.0 } else { acked as f64 / n as f64 })
        };
        let before = part(c.sends_before_faults, c.abandoned_before_faults, c.acked_in_time_before_faults);
        let during = part(c.sends_during_faults, c.abandoned_during_faults, c.acked_in_time_during_faults);
        let after = part(c.sends_after_faults, c.abandoned_after_faults, c.acked_in_time_after_faults);
        let (sends, acked) = (before.0 + during.0 + after.0, before.1 + during.1 + after.1);
        let measured = if sends == 0 { 0.0 } else { acked as f64 / sends as f64 };
        let verdict = match sends {
            0 => Verdict::NoData,
            _ if measured >= s.slo.availability => Verdict::Pass,
            _ => Verdict::Fail,
        };
        Availability {
            objective: s.slo.availability,
            ack_timeout_ms: s.slo.sent_ack_timeout_ms,
            sends,
            acked_in_time: acked,
            abandoned: c.abandoned_before_faults + c.abandoned_during_faults + c.abandoned_after_faults,
            measured,
            before,
            during,
            after,
            verdict,
        }
    }
}

/// Load the run achieved, per second of the measuring window.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub offered_msg_per_s: u64,
    pub sent_msg_per_s: f64,
    pub acked_msg_per_s: f64,
    pub delivered_msg_per_s: f64,
}

/// One tier's load in the measuring window.
#[derive(Clone, Debug, Serialize)]
pub struct TierSummary {
    pub tier: &'static str,
    pub nodes: u32,
    pub workers_per_node: u32,
    pub ops_per_s: f64,
    pub ops_per_s_per_node: f64,
    pub utilisation_mean: f64,
    pub utilisation_max: f64,
    /// What the visit table predicted before the run, and how far the measurement is off.
    pub ops_per_s_predicted: f64,
    pub utilisation_predicted: f64,
    pub prediction_error: f64,
    /// Work still queued when the window ended and when the run ended: replies not yet
    /// sent and the wait for the last of them (utilisation cannot show a backlog).
    pub backlog_window_end: Backlog,
    pub backlog_end: Backlog,
    pub gauge_end: u64,
    pub gauge: &'static str,
}

impl TierSummary {
    fn new(t: &TierStats, window_s: f64, predicted: Option<&TierLoad>) -> TierSummary {
        let ops = t.served as f64 / window_s;
        let gauge = t.kind.gauge();
        let (ops_predicted, util_predicted) = predicted.map_or((0.0, 0.0), |p| (p.ops_per_s, p.utilisation));
        TierSummary {
            tier: t.kind.name(),
            nodes: t.nodes,
            workers_per_node: t.workers_per_node,
            ops_per_s: round3(ops),
            ops_per_s_per_node: round3(ops / f64::from(t.nodes.max(1))),
            utilisation_mean: round3(t.utilisation),
            utilisation_max: round3(t.utilisation_max),
            ops_per_s_predicted: round3(ops_predicted),
            utilisation_predicted: round3(util_predicted),
            prediction_error: if ops_predicted > 0.0 { round3(ops / ops_predicted - 1.0) } else { 0.0 },
            backlog_window_end: t.backlog_window_end,
            backlog_end: t.backlog_end,
            gauge_end: t.gauge_end,
            gauge,
        }
    }
}

/// What the tick does to the times a run reports (README, "Exactness").
fn tick_bound(s: &Scenario, predicted: &[TierLoad]) -> String {
    let tick_ms = s.tick_us as f64 / 1e3;
    let shortest_ms = s.network.client_server_ms.min().min(s.network.in_datacenter_ms.min());
    if shortest_ms >= tick_ms {
        return format!(
            "every link takes at least the {} µs tick, so every arrival is served in time order: queueing is exact (wasim calibrate)",
            s.tick_us
        );
    }
    let busiest = predicted.iter().map(|t| t.utilisation).fold(0.0, f64::max);
    format!(
        "links can be shorter than the {} µs tick: at light load (tested with every tier below 20% busy) percentiles p50 to p99 lie within max(2%, 50 µs), and p99.9 within 15%, of the same run at a 10 µs tick; the busiest tier here is predicted {:.0}% busy{}",
        s.tick_us,
        busiest * 100.0,
        if busiest > 0.2 {
            ": a busy tier serves work that comes back within a tick approximately (README, \"Exactness\")"
        } else {
            ""
        }
    )
}

/// A state a run may or may not reach ("sometimes" properties): a run meant to exercise a
/// path shows here that it did.
#[derive(Clone, Debug, Serialize)]
pub struct Sometimes {
    pub name: &'static str,
    pub what: &'static str,
    pub count: u64,
    pub reached: bool,
}

fn sometimes(c: &Counters) -> Vec<Sometimes> {
    let all: [(&'static str, &'static str, u64); 9] = [
        ("catch_up_interrupted", "a catch-up cut short by a close or a lost network", c.catch_ups_interrupted),
        ("repush_after_lost_ack", "a push repeated because its delivered ACK was overdue", c.repushes),
        (
            "duplicate_suppressed",
            "an arrival a device had shown already, acknowledged and not shown again",
            c.duplicates_dropped,
        ),
        ("connect_refused", "a full server refused a connect (the device backed off)", c.connects_refused),
        ("fetched_on_reconnect", "a message waited in an inbox and was fetched on a connect", c.fetched),
        ("receipt_stored", "a receipt waited for its offline sender", c.receipts_stored),
        ("reconnect", "a device connected again", c.reconnects),
        (
            "takeover",
            "a device moved servers while its old one still held it; the old one handed over",
            c.connections_given_up,
        ),
        ("receipt_unheard", "a receipt reached a device whose connection had just ended", c.receipts_unheard),
    ];
    all.into_iter().map(|(name, what, count)| Sometimes { name, what, count, reached: count > 0 }).collect()
}

/// One operation kind's load: what the visit table predicted and what the run served.
#[derive(Clone, Debug, Serialize)]
pub struct OpLoad {
    pub op: &'static str,
    pub tier: &'static str,
    pub predicted_per_s: f64,
    pub measured_per_s: f64,
}

fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

/// Everything a run produced, deterministic for a scenario and seed (no wall-clock
/// figures: those go to `timing.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub wasim_version: &'static str,
    pub scenario_name: String,
    pub scenario_hash: String,
    pub seed: u64,
    pub replay: String,
    pub tick_us: u64,
    /// How far the tick can move what the run reports (measured by tests/tick_exactness.rs).
    pub tick_bound: String,
    pub simulated_s: u64,
    pub measured_window_s: [u64; 2],
    pub processes: usize,
    pub verdict: Verdict,
    pub slos: Vec<SloVerdict>,
    /// The card's 99.99%: sends acknowledged within the ACK timeout.
    pub availability: Availability,
    pub latencies: Vec<LatencySummary>,
    pub throughput: Throughput,
    pub counters: Counters,
    /// The states of the lifecycle this run reached.
    pub sometimes: Vec<Sometimes>,
    /// Invariants checked and the violations found.
    pub invariants: CheckReport,
    /// Why silent loss is reported but not judged against the presence SLO.
    pub presence_detection_note: String,
    pub tiers: Vec<TierSummary>,
    /// The visit table, kind by kind.
    pub ops: Vec<OpLoad>,
    /// When each fault of the scenario was active, for reports to shade.
    pub fault_windows: Vec<FaultWindow>,
    /// What each chat server crash did (the card's task 1.2).
    pub crashes: Vec<CrashReport>,
    /// What each Redis primary's death did (the capstone's "Redis down").
    pub redis_outages: Vec<RedisOutageReport>,
    /// With `--compare-placements`: the first crash under each placement policy, this
    /// run's first (the card's task 1.1).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement_comparison: Vec<PlacementRow>,
    /// What the group traffic did (absent without groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupSummary>,
    /// What the media pipeline did (absent without media).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaSummary>,
    /// The nodes each tier needs for the card's full load, with the formulas.
    pub sizing: wasim_sim::Sizing,
    /// Network messages a second between tiers in the window (the architecture diagram).
    pub flows: Vec<Flow>,
    /// The sender's tick state machine from the model's table, with the times each
    /// transition fired (the receipt diagram).
    pub receipt_state_machine: ReceiptMachine,
    pub scenario: Scenario,
}

/// The group messaging figures: the card's task 2.2 (when ✓✓ and blue show for a large
/// group), the fan-out's load and the storage of store-once against a copy per member.
#[derive(Clone, Debug, Serialize)]
pub struct GroupSummary {
    #[serde(flatten)]
    pub stats: wasim_sim::GroupStats,
    /// Group sends per second offered (groups x messages per group per second) and made.
    pub offered_msg_per_s: f64,
    pub sent_msg_per_s: f64,
    /// Pushes of group messages to member devices per second (measured window, whole fleet).
    pub pushes_per_s: f64,
    /// Network messages of the fan-out per group message: route requests (a batch of
    /// members per session shard) and forwards (a batch of devices per chat server),
    /// against one of each per recipient without batching.
    pub route_requests_per_message: f64,
    pub forwards_per_message: f64,
    /// Rows written to the group receipts table per second (replica writes).
    pub receipt_rows_per_s: f64,
    /// Storage of the window's group messages: one row each plus an 8-byte inbox pointer
    /// per offline member (store once, route many), against a row per member.
    pub storage_store_once_bytes: u64,
    pub storage_copy_per_member_bytes: u64,
    /// The group receipts table on all replicas at the end (2 bits per member per message
    /// and a header).
    pub receipt_table_bytes: u64,
}

/// Bytes of a message row in the card's storage estimate.
pub const MESSAGE_ROW_BYTES: u64 = 100;
/// Bytes of an inbox pointer (a message id).
pub const INBOX_POINTER_BYTES: u64 = 8;

/// The media pipeline's figures: uploads, downloads, the CDN, the bandwidths, and what went
/// through the chat servers (frames only).
#[derive(Clone, Debug, Serialize)]
pub struct MediaSummary {
    /// Share of sends carrying media (the scenario's).
    pub share: f64,
    /// Media sends tapped, their messages sent once uploaded, sends failed visibly (every
    /// attempt failed: no message references them), uploads still under way at the end.
    pub tapped: u64,
    pub sent: u64,
    pub failed_visibly: u64,
    pub uploading_at_end: u64,
    /// PUTs made, and refused (503 while down, 403).
    pub put_attempts: u64,
    pub puts_refused: u64,
    /// Downloads completed, and failed every attempt.
    pub downloads: u64,
    pub downloads_failed: u64,
    /// CDN requests, the share served without an origin fetch of their own (from the
    /// edge's cache, or by a fetch of the object under way), origin fetches.
    pub cdn_requests: u64,
    pub cdn_hit_ratio: f64,
    pub origin_fetches: u64,
    /// Object-store ingest and CDN egress in the measured window, bytes/s: mean and the
    /// busiest second.
    pub ingest_bytes_per_s_mean: f64,
    pub ingest_bytes_per_s_peak: f64,
    /// The store's ingest bandwidth (bytes/s) and the window's mean share of it.
    pub ingest_capacity_bytes_per_s: f64,
    pub ingest_utilisation: f64,
    pub cdn_egress_bytes_per_s_mean: f64,
    pub cdn_egress_bytes_per_s_peak: f64,
    /// Media bytes a day at the window's storage rate (first copies of objects, bytes/s ×
    /// 86,400 s; a retried PUT's bytes pass the ingest again but are not stored twice), and
    /// held at the end.
    pub storage_bytes_per_day: f64,
    pub stored_bytes_end: u64,
    /// What the chat servers carried over the run: frames, their mean size, bytes a
    /// second, and frames carrying media bytes (invariant 9: none).
    pub chat_frames: u64,
    pub chat_frame_bytes_mean: f64,
    pub chat_bytes_per_s: f64,
    pub chat_frames_with_media_bytes: u64,
}

impl MediaSummary {
    fn new(o: &Outcome) -> Option<MediaSummary> {
        let s = &o.scenario;
        if !s.media.on() {
            return None;
        }
        let c = &o.counters;
        let window = &o.per_second[(s.warmup_s as usize).min(o.per_second.len())
            ..((s.warmup_s + s.duration_s) as usize).min(o.per_second.len())];
        let mean_peak = |f: fn(&wasim_sim::SecondCounters) -> u64| {
            let n = window.len().max(1) as f64;
            let mean = window.iter().map(|x| f(x) as f64).sum::<f64>() / n;
            let peak = window.iter().map(|x| f(x) as f64).fold(0.0, f64::max);
            (round3(mean), round3(peak))
        };
        let (ingest_mean, ingest_peak) = mean_peak(|x| x.media_ingest_bytes);
        let (egress_mean, egress_peak) = mean_peak(|x| x.cdn_egress_bytes);
        let (stored_mean, _) = mean_peak(|x| x.media_stored_bytes);
        let capacity = s.media.ingest_gbps * 1e9 / 8.0;
        Some(MediaSummary {
            share: s.media.share,
            tapped: c.media_taps,
            sent: c.media_sends,
            failed_visibly: c.media_sends_failed,
            uploading_at_end: c.media_uploads_pending_end,
            put_attempts: c.media_put_attempts,
            puts_refused: c.media_uploads_refused,
            downloads: c.media_downloads,
            downloads_failed: c.media_downloads_failed,
            cdn_requests: c.cdn_requests,
            cdn_hit_ratio: round3(c.cdn_hits as f64 / c.cdn_requests.max(1) as f64),
            origin_fetches: c.cdn_origin_fetches,
            ingest_bytes_per_s_mean: ingest_mean,
            ingest_bytes_per_s_peak: ingest_peak,
            ingest_capacity_bytes_per_s: capacity,
            ingest_utilisation: round3(ingest_mean / capacity),
            cdn_egress_bytes_per_s_mean: egress_mean,
            cdn_egress_bytes_per_s_peak: egress_peak,
            storage_bytes_per_day: round3(stored_mean * 86_400.0),
            stored_bytes_end: c.media_bytes_stored,
            chat_frames: c.chat_frames,
            chat_frame_bytes_mean: round3(c.chat_frame_bytes as f64 / c.chat_frames.max(1) as f64),
            chat_bytes_per_s: round3(c.chat_frame_bytes as f64 / o.simulated_s().max(1) as f64),
            chat_frames_with_media_bytes: c.chat_frames_with_media_bytes,
        })
    }
}

impl GroupSummary {
    fn new(o: &Outcome, window_s: f64) -> Option<GroupSummary> {
        let stats = o.groups.clone()?;
        let s = &o.scenario;
        let c = &o.counters;
        let per_message = |n: u64| if c.group_sends == 0 { 0.0 } else { round3(n as f64 / c.group_sends as f64) };
        let messages = stats.messages;
        Some(GroupSummary {
            offered_msg_per_s: round3(f64::from(s.groups.active) * s.groups.messages_per_group_per_s),
            sent_msg_per_s: round3(c.group_sends_measured as f64 / window_s),
            pushes_per_s: round3(c.group_pushes as f64 / o.simulated_s() as f64),
            route_requests_per_message: per_message(c.group_route_requests),
            forwards_per_message: per_message(c.group_forwards),
            receipt_rows_per_s: round3(c.receipt_rows_written as f64 / o.simulated_s() as f64),
            storage_store_once_bytes: messages * MESSAGE_ROW_BYTES
                + (c.group_inbox_adds as f64 * messages as f64 / c.group_sends.max(1) as f64) as u64
                    * INBOX_POINTER_BYTES,
            storage_copy_per_member_bytes: stats.recipients * MESSAGE_ROW_BYTES,
            receipt_table_bytes: o.receipt_table_bytes,
            stats,
        })
    }
}

/// What a chat server crash did, and how the fleet recovered.
#[derive(Clone, Debug, Serialize)]
pub struct CrashReport {
    pub target: String,
    pub at_s: u64,
    pub restarted_at_s: u64,
    pub detect: &'static str,
    pub placement: &'static str,
    /// Connections its devices lost (reset, or pings unanswered).
    pub connections_lost: u64,
    /// Crash -> the device connected again, for the devices it held.
    pub time_to_reconnect: LatencySummary,
    /// The most connects accepted in one simulated second after the crash, fleet-wide.
    pub reconnects_per_s_peak: u64,
    /// Connects refused by full servers, and connects that met the dead server, after it.
    pub connects_refused: u64,
    pub connects_failed: u64,
    /// Connections per chat server at the end (`null`: dead at the end), and the spread:
    /// the fullest server over the mean of the live ones.
    pub connections_end: Vec<Option<u64>>,
    pub imbalance_end: f64,
    /// Delivery latency of messages sent before the first fault, during a fault window,
    /// and after the last one.
    pub delivery_before: LatencySummary,
    pub delivery_during: LatencySummary,
    pub delivery_after: LatencySummary,
    /// Messages sent during a fault window delivered later than the delivery SLO, and the
    /// latest of them (ms).
    pub delayed_past_slo: u64,
    pub delayed_max_ms: f64,
    /// Messages the routers routed again because the server went down (most reach devices
    /// that had them already, and are dropped as repeats).
    pub replayed: u64,
    /// Presence flaps: watchers told a user went offline (the presence key expired) from
    /// the crash until a TTL after the restart, against as many seconds before the crash.
    pub shown_offline_during: u64,
    pub shown_offline_before: u64,
    /// Acknowledged messages never delivered to a device connected at the end (invariant 1).
    pub lost: u64,
    /// Whether the process is a chat server (else a Cassandra node: the connection figures
    /// do not apply, the storage ones do).
    pub chat_server: bool,
    /// What happened, step by step, in milliseconds after the crash: the configured
    /// detection and the measured reconnects.
    pub timeline: Vec<TimelineStep>,
    /// Writes sent again for want of a quorum, reads sent to every replica, and rows the
    /// node repaired from its peers when it rejoined (the whole run).
    pub writes_retried: u64,
    pub reads_retried: u64,
    pub rows_repaired: u64,
    /// Sends devices made again for want of a ✓, the records routers dropped as repeats
    /// (pushed again by a new leader, or retried), and the messages devices put in their
    /// place above newer ones that overtook them (the whole run).
    pub sends_retried: u64,
    pub repeats_dropped: u64,
    pub shown_inserted: u64,
    /// Records pushed again from the routers' commit (after a leader election or a
    /// consumer-group rebalance), and partitions that changed router (whole run).
    pub records_pushed_again: u64,
    pub partitions_moved: u64,
}

/// What a Redis primary's death did, and what the failover cost.
#[derive(Clone, Debug, Serialize)]
pub struct RedisOutageReport {
    pub target: String,
    /// A session shard (else a presence shard).
    pub session: bool,
    pub at_s: u64,
    pub promoted_at_s: u64,
    pub replication_lag_ms: u64,
    /// Whether chat servers re-register their sessions after a failover
    /// (`fleet.session_reregister`).
    pub reregister: bool,
    /// Session writes the promoted replica lacked; sessions the chat servers wrote again;
    /// devices they asked to reconnect because the replica had lost theirs (whole run).
    pub sessions_lost: u64,
    pub sessions_reregistered: u64,
    pub devices_sent_away: u64,
    pub delivery_before: LatencySummary,
    pub delivery_during: LatencySummary,
    pub delivery_after: LatencySummary,
    pub delayed_past_slo: u64,
    pub delayed_max_ms: f64,
    /// Watchers told a user went offline (the presence key expired) from the crash to a
    /// TTL after the promotion, and in as long before.
    pub shown_offline_during: u64,
    pub shown_offline_before: u64,
    /// Acknowledged messages a device connected at the end never got (invariant 1), and
    /// devices live at the end that the session store routes elsewhere (invariant 6).
    pub lost: u64,
    pub misrouted: u64,
    pub timeline: Vec<TimelineStep>,
}

/// How the fleet recovered from a crash under one placement policy.
#[derive(Clone, Debug, Serialize)]
pub struct PlacementRow {
    pub placement: &'static str,
    pub reconnect_p50_ms: f64,
    pub reconnect_p99_ms: f64,
    pub reconnect_max_ms: f64,
    pub reconnects_per_s_peak: u64,
    pub connects_refused: u64,
    pub connects_failed: u64,
    /// Connections per live server at the end: fewest, most, and the fullest over the mean.
    pub connections_min_end: u64,
    pub connections_max_end: u64,
    pub imbalance_end: f64,
    pub delivery_during_p99_ms: f64,
    pub availability_during: f64,
}

impl PlacementRow {
    /// The row of a run's first chat server crash (a run without one gives an empty row).
    pub fn of(s: &Summary) -> PlacementRow {
        let crash = s.crashes.iter().find(|c| c.chat_server);
        let live: Vec<u64> = crash.map(|c| c.connections_end.iter().flatten().copied().collect()).unwrap_or_default();
        PlacementRow {
            placement: s.scenario.balancer.placement.name(),
            reconnect_p50_ms: crash.map_or(0.0, |c| c.time_to_reconnect.p50_ms),
            reconnect_p99_ms: crash.map_or(0.0, |c| c.time_to_reconnect.p99_ms),
            reconnect_max_ms: crash.map_or(0.0, |c| c.time_to_reconnect.max_ms),
            reconnects_per_s_peak: crash.map_or(0, |c| c.reconnects_per_s_peak),
            connects_refused: crash.map_or(0, |c| c.connects_refused),
            connects_failed: crash.map_or(0, |c| c.connects_failed),
            connections_min_end: live.iter().copied().min().unwrap_or(0),
            connections_max_end: live.iter().copied().max().unwrap_or(0),
            imbalance_end: crash.map_or(0.0, |c| c.imbalance_end),
            delivery_during_p99_ms: crash.map_or(0.0, |c| c.delivery_during.p99_ms),
            availability_during: s.availability.during.2,
        }
    }
}

/// One step of a crash's timeline.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineStep {
    /// Milliseconds after the crash.
    pub at_ms: f64,
    pub what: String,
}

/// A chat server crash step by step (the card's task 1.2): when its peers and its devices
/// notice (from the scenario's detection settings) and when its devices are back (measured).
fn timeline(
    s: &Scenario,
    target: &str,
    detect: wasim_sim::Detect,
    for_s: u64,
    reconnect: &Histogram<u64>,
    lost: u64,
    replayed: u64,
) -> Vec<TimelineStep> {
    let step = |at_ms: f64, what: String| TimelineStep { at_ms: round3(at_ms), what };
    let for_ms = for_s as f64 * 1e3;
    if target.starts_with("router-") {
        let timeout_ms = s.fleet.kafka_session_timeout_ms as f64;
        let mut steps = vec![step(0.0, format!("{target} dies: its routes in progress and the forwards it kept for replay are gone; the records of its partitions stall"))];
        if timeout_ms < for_ms {
            steps.push(step(timeout_ms, "the group coordinator gives up on it (fleet.kafka_session_timeout_ms) and gives its partitions to the other routers, which resume from its last commit: what it had routed since is routed again, and the devices show it once".into()));
        }
        steps.push(step(
            for_ms,
            format!("{target} restarts, rejoins the group and takes its partitions back from the last commit"),
        ));
        return steps;
    }
    if target.starts_with("kafka-") {
        let election_ms = s.fleet.kafka_election_ms as f64;
        let mut steps = vec![step(0.0, format!("{target} dies: the partitions it leads take no appends; producers retry and the ✓ of their messages waits"))];
        if election_ms < for_ms {
            steps.push(step(election_ms, "the controller elects new leaders (fleet.kafka_election_ms); they push again from the routers' commits".into()));
        }
        steps.push(step(for_ms, format!("{target} restarts and takes its partitions back")));
        return steps;
    }
    if !target.starts_with("chat_server-") {
        return Vec::new();
    }
    let mut steps = vec![step(
        0.0,
        format!(
            "{target} dies: its memory (connections, pushes awaiting ACKs, writes and publishes in progress) is gone"
        ),
    )];
    match detect {
        wasim_sim::Detect::Reset => {
            let hop = s.network.in_datacenter_ms.p99();
            steps.push(step(hop, format!("its host resets every connection: routers and chat servers notice within one datacenter hop; routers and fan-outs route again the {replayed} copies they had forwarded to it that no device had acknowledged (each kept at most {:.0} s)", s.forward_retain().as_secs_f64())));
            steps.push(step(s.network.client_server_ms.p99(), format!("its {lost} devices notice within one client link (p99 {:.0} ms) and wait out a backoff of up to {} ms", s.network.client_server_ms.p99(), s.users.reconnect_backoff_ms_base)));
        }
        wasim_sim::Detect::Timeout => {
            steps.push(step(s.users.ping_timeout_ms as f64, format!("its host is gone: routers and chat servers notice after the {} ms timeout; routers and fan-outs route again the {replayed} copies they had forwarded to it that no device had acknowledged", s.users.ping_timeout_ms)));
            steps.push(step(
                (s.users.heartbeat_interval_ms + s.users.ping_timeout_ms) as f64,
                format!("its {lost} devices notice within a heartbeat interval and the ping timeout"),
            ));
        }
    }
    if !reconnect.is_empty() {
        let q = |p: f64| reconnect.value_at_quantile(p) as f64 / 1e3;
        steps.push(step(
            reconnect.min() as f64 / 1e3,
            "the first device is connected again, catching up from its inbox".into(),
        ));
        steps.push(step(q(0.5), "half its devices are connected again".into()));
        steps.push(step(q(0.99), "99% are".into()));
        steps.push(step(reconnect.max() as f64 / 1e3, format!("all {} are", reconnect.len())));
    }
    steps.push(step(for_s as f64 * 1e3, format!("{target} restarts empty and takes new connections")));
    steps.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    steps
}

/// How long after a crash the traced device's story is told.
const TRACED_STORY_MS: u64 = 15_000;
/// The most steps of it told.
const TRACED_STEPS_MAX: usize = 12;

/// The story of the device the run traced from a chat server crash on (the first device of
/// the crashed server that a client shard saw go): what it did and what was done for it in
/// the seconds after the crash, from the run's trace.
fn traced_steps(o: &Outcome, at_s: u64) -> Vec<TimelineStep> {
    let down_us = at_s * 1_000_000;
    let mut steps = Vec::new();
    let mut messages = 0;
    let story = o.trace.iter().filter(|e| e.at.as_us() >= down_us && e.at.as_us() - down_us <= TRACED_STORY_MS * 1_000);
    // The traced user: the one whose device noticed first (the trace holds its messages to
    // others too; their devices are not the story).
    let Some(user) = story.clone().find(|e| e.event == "connection_lost").map(|e| e.user) else {
        return steps;
    };
    for e in story.filter(|e| e.user == user) {
        let device = match e.slot {
            Some(0) => format!("the phone of user {}", e.user.0),
            Some(_) => format!("the web client of user {}", e.user.0),
            None => format!("user {}", e.user.0),
        };
        let node = &o.node_names[usize::from(e.node.0)];
        let what = match (e.event, e.msg) {
            ("connection_lost", _) => format!("{device} notices its connection is gone"),
            ("connect", _) => format!("{device} connects again, through the load balancer"),
            ("connect_accepted", _) => format!("{node} accepts {device}"),
            ("connect_refused", _) => format!("a full server refuses {device}; it backs off"),
            ("connect_failed", _) => format!("{device}'s connect meets a dead server; it backs off"),
            ("session_set_and_fetch_inbox", _) => {
                format!("{node} points {device}'s session at itself and reads its inbox from its cursor")
            }
            ("fetch_done", _) => format!("{device} has caught up: it is live again"),
            ("sent_again", _) => format!("{device} sends again what it had no ✓ for"),
            ("replay", Some(m)) => format!("{node} routes message {} again, its server being down", m.0),
            ("inbox_add", Some(m)) => format!("message {} goes to the inbox of user {}", m.0, e.user.0),
            ("displayed_after_fetch", Some(m)) if messages < 3 => {
                messages += 1;
                format!("{device} shows message {} from its inbox", m.0)
            }
            ("displayed", Some(m)) if messages < 3 => {
                messages += 1;
                format!("{device} shows message {}, pushed live", m.0)
            }
            _ => continue,
        };
        steps.push(TimelineStep { at_ms: round3((e.at.as_us() - down_us) as f64 / 1e3), what });
        if steps.len() == TRACED_STEPS_MAX {
            break;
        }
    }
    steps
}

/// Presence expiries watchers were told of in the seconds `[from, until)`.
fn expiries(o: &Outcome, from: u64, until: u64) -> u64 {
    let (from, until) = (from as usize, (until as usize).min(o.per_second.len()));
    o.per_second.get(from..until).map_or(0, |s| s.iter().map(|p| p.shown_offline_by_expiry).sum())
}

/// Messages sent during a fault window delivered later than the delivery SLO, and the
/// latest of them (ms).
fn delayed_past_slo(o: &Outcome) -> (u64, f64) {
    let during = &o.latencies.delivery_during;
    if during.is_empty() {
        return (0, 0.0);
    }
    let slo_us = o.scenario.slo.delivery_ms_p99 * 1_000;
    (during.count_between(slo_us + 1, during.max().max(slo_us + 1)), during.max() as f64 / 1e3)
}

/// Violations of invariant `n` in the run.
fn violations_of(o: &Outcome, n: u8) -> u64 {
    o.checks.counts.iter().find(|&&(i, _)| i == n).map_or(0, |&(_, c)| c)
}

fn crash_reports(o: &Outcome) -> Vec<CrashReport> {
    let s = &o.scenario;
    let l = &o.latencies;
    let live: Vec<u64> = o.chat_connections_end.iter().flatten().copied().collect();
    let mean = live.iter().sum::<u64>() as f64 / live.len().max(1) as f64;
    let imbalance = if mean > 0.0 { round3(*live.iter().max().unwrap_or(&0) as f64 / mean) } else { 0.0 };
    let during = &l.delivery_during;
    let (delayed, delayed_max_ms) = delayed_past_slo(o);
    let lost = violations_of(o, 1);
    s.faults
        .iter()
        .filter_map(|f| match *f {
            wasim_sim::Fault::Crash { at_s, for_s, ref target, detect } => Some(CrashReport {
                target: target.clone(),
                at_s,
                restarted_at_s: at_s + for_s,
                detect: match detect {
                    wasim_sim::Detect::Reset => "reset",
                    wasim_sim::Detect::Timeout => "timeout",
                },
                placement: s.balancer.placement.name(),
                connections_lost: o.counters.connections_lost,
                time_to_reconnect: LatencySummary::new(
                    "time_to_reconnect",
                    "crash -> its devices connected again",
                    &l.reconnect,
                ),
                reconnects_per_s_peak: o.per_second.iter().skip(at_s as usize).map(|p| p.connects).max().unwrap_or(0),
                connects_refused: o.per_second.iter().skip(at_s as usize).map(|p| p.connects_refused).sum(),
                connects_failed: o.per_second.iter().skip(at_s as usize).map(|p| p.connects_failed).sum(),
                connections_end: o.chat_connections_end.clone(),
                imbalance_end: imbalance,
                delivery_before: LatencySummary::new(
                    "delivery_before",
                    "sent before the first fault",
                    &l.delivery_before,
                ),
                delivery_during: LatencySummary::new("delivery_during", "sent during a fault window", during),
                delivery_after: LatencySummary::new("delivery_after", "sent after the last fault", &l.delivery_after),
                delayed_past_slo: delayed,
                delayed_max_ms,
                replayed: o.counters.replayed,
                shown_offline_during: expiries(o, at_s, at_s + for_s + s.users.presence_ttl_ms.div_ceil(1_000)),
                shown_offline_before: expiries(
                    o,
                    at_s.saturating_sub(for_s + s.users.presence_ttl_ms.div_ceil(1_000)),
                    at_s,
                ),
                lost,
                chat_server: target.starts_with("chat_server-"),
                timeline: {
                    let mut steps = timeline(
                        s,
                        target,
                        detect,
                        for_s,
                        &l.reconnect,
                        o.counters.connections_lost,
                        o.counters.replayed,
                    );
                    if target.starts_with("chat_server-") {
                        steps.extend(traced_steps(o, at_s));
                        steps.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
                    }
                    steps
                },
                writes_retried: o.counters.writes_retried,
                reads_retried: o.counters.reads_retried,
                rows_repaired: o.counters.rows_repaired,
                sends_retried: o.counters.sends_retried,
                repeats_dropped: o.counters.retries_dropped,
                shown_inserted: o.counters.shown_inserted,
                records_pushed_again: o.counters.records_pushed_again,
                partitions_moved: o.counters.partitions_moved,
            }),
            _ => None,
        })
        .collect()
}

fn redis_outage_reports(o: &Outcome) -> Vec<RedisOutageReport> {
    let s = &o.scenario;
    let l = &o.latencies;
    let c = &o.counters;
    let during = &l.delivery_during;
    let (delayed, delayed_max_ms) = delayed_past_slo(o);
    let ttl_s = s.users.presence_ttl_ms.div_ceil(1_000);
    let hop_ms = s.network.in_datacenter_ms.p99();
    s.faults
        .iter()
        .filter_map(|f| match *f {
            wasim_sim::Fault::RedisDown { at_s, failover_s, ref target, replication_lag_ms } => {
                let session = target.starts_with("redis_session-");
                let step = |at_ms: f64, what: String| TimelineStep { at_ms: round3(at_ms), what };
                let mut timeline = vec![step(
                    0.0,
                    format!("the primary of {target} dies; its replica trails it by {replication_lag_ms} ms"),
                )];
                let promoted_ms = failover_s as f64 * 1e3;
                if session {
                    timeline.push(step(0.0, "routes, reroutes, session writes and inbox fetches of its users wait: their clients retry until a new primary answers".into()));
                    timeline.push(step(promoted_ms, format!("the replica is promoted without the session writes of the last {replication_lag_ms} ms ({} lost in all); the waiting commands run", c.sessions_lost_in_failover)));
                    if s.fleet.session_reregister {
                        timeline.push(step(promoted_ms + hop_ms, format!("chat servers learn of it and write their live sessions again ({} in all); {} devices whose session the replica had lost are asked to reconnect and fetch their inboxes", c.sessions_reregistered, c.devices_sent_away)));
                    } else {
                        timeline.push(step(promoted_ms + hop_ms, "nothing repairs the lost sessions (the card's design): routers find no session, or an old server, and put those devices' messages in inboxes that a connected device reads only when it next reconnects".into()));
                    }
                } else {
                    timeline.push(step(0.0, "heartbeats, presence reads and subscriptions sent to it are lost: watchers see no presence from it, and keys whose TTL runs out meanwhile expire (users shown offline)".into()));
                    timeline.push(step(promoted_ms, "the replica is promoted and answers again; the next heartbeat of each device refreshes its key".into()));
                }
                Some(RedisOutageReport {
                    target: target.clone(),
                    session,
                    at_s,
                    promoted_at_s: at_s + failover_s,
                    replication_lag_ms,
                    reregister: s.fleet.session_reregister,
                    sessions_lost: c.sessions_lost_in_failover,
                    sessions_reregistered: c.sessions_reregistered,
                    devices_sent_away: c.devices_sent_away,
                    delivery_before: LatencySummary::new("delivery_before", "sent before the first fault", &l.delivery_before),
                    delivery_during: LatencySummary::new("delivery_during", "sent during a fault window", during),
                    delivery_after: LatencySummary::new("delivery_after", "sent after the last fault", &l.delivery_after),
                    delayed_past_slo: delayed,
                    delayed_max_ms,
                    shown_offline_during: expiries(o, at_s, at_s + failover_s + ttl_s),
                    shown_offline_before: expiries(o, at_s.saturating_sub(failover_s + ttl_s), at_s),
                    lost: violations_of(o, 1),
                    misrouted: violations_of(o, 6),
                    timeline,
                })
            }
            _ => None,
        })
        .collect()
}

/// One fault's window: the scenario's `[[faults]]` entry `index`, active from `from_s`
/// until `until_s` (simulated seconds).
#[derive(Clone, Debug, Serialize)]
pub struct FaultWindow {
    pub index: usize,
    pub kind: &'static str,
    pub target: String,
    pub from_s: u64,
    pub until_s: u64,
}

/// The fault windows of a scenario, in its order.
pub fn fault_windows(s: &Scenario) -> Vec<FaultWindow> {
    s.faults
        .iter()
        .enumerate()
        .map(|(index, f)| {
            let (at_s, for_s) = f.window_s();
            FaultWindow { index, kind: f.kind(), target: f.target(), from_s: at_s, until_s: at_s + for_s }
        })
        .collect()
}

/// Judge one p99 objective; `when_empty` is the verdict without samples.
fn slo(name: &'static str, l: &LatencySummary, objective_ms_p99: u64, when_empty: Verdict) -> SloVerdict {
    let objective_ms = objective_ms_p99 as f64;
    let (verdict, note) = if l.count == 0 {
        (when_empty, "no samples were measured".to_string())
    } else if l.p99_ms < objective_ms {
        (Verdict::Pass, String::new())
    } else {
        (Verdict::Fail, format!("p99 {:.1} ms >= {objective_ms} ms", l.p99_ms))
    };
    SloVerdict {
        name,
        metric: l.name,
        objective: format!("p99 < {objective_ms_p99} ms"),
        objective_ms,
        measured_ms: l.p99_ms,
        samples: l.count,
        verdict,
        note,
    }
}

/// FNV-1a over the scenario as wasim understood it (defaults filled in): two files that
/// mean the same run hash the same.
fn scenario_hash(s: &Scenario) -> String {
    let text = toml::to_string(s).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Messages a second from one tier to another.
#[derive(Clone, Debug, Serialize)]
pub struct Flow {
    pub from: &'static str,
    pub to: &'static str,
    pub messages_per_s: f64,
}

/// One transition of the sender's ticks: from a state (`None`: in flight, no tick) on an
/// event to another, and the times it fired in the run (every second, every device).
#[derive(Clone, Debug, Serialize)]
pub struct TransitionCount {
    pub from: &'static str,
    pub event: &'static str,
    pub to: &'static str,
    pub fired: u64,
}

/// The sender's tick state machine as it ran.
#[derive(Clone, Debug, Serialize)]
pub struct ReceiptMachine {
    pub transitions: Vec<TransitionCount>,
    /// Moves of the ticks that no transition of the table allows (0 unless the model has a
    /// bug).
    pub off_table: u64,
}

/// The name of a state of the sender's ticks.
pub fn tick_name(state: Option<wasim_sim::ReceiptState>) -> &'static str {
    state.map_or("in flight", wasim_sim::ReceiptState::name)
}

impl ReceiptMachine {
    fn new(o: &Outcome) -> ReceiptMachine {
        let (fired, off_table) = o.receipt_transitions;
        let transitions = wasim_sim::SENDER_TRANSITIONS
            .iter()
            .zip(fired)
            .map(|(&(from, event, to), fired)| TransitionCount {
                from: tick_name(from),
                event: event.name(),
                to: tick_name(to),
                fired,
            })
            .collect();
        ReceiptMachine { transitions, off_table }
    }
}

impl Summary {
    /// Summarise an outcome. `file` is the scenario path, for the replay command.
    pub fn new(o: &Outcome, file: &str) -> Summary {
        Summary::with_target(o, file, wasim_sim::TARGET_UTILISATION)
    }

    /// Summarise an outcome, sizing the tiers to `target` utilisation.
    pub fn with_target(o: &Outcome, file: &str, target: f64) -> Summary {
        let s = &o.scenario;
        let window_s = s.duration_s as f64;
        let rates = predicted_rates(s);
        let predicted = predicted_load_from(s, &rates);
        let l = &o.latencies;
        let mut latencies = vec![
            LatencySummary::new("delivery", "send -> recipient device has it (devices online at send)", &l.delivery),
            LatencySummary::new(
                "presence",
                "status change (connect, clean disconnect) -> subscribed watcher told",
                &l.presence,
            ),
            LatencySummary::new("sent_ack", "send -> ✓ at the sender", &l.sent_ack),
            LatencySummary::new("receipt", "recipient's delivered ACK -> ✓✓ at the sender", &l.receipt),
            LatencySummary::new("read_receipt", "reader's read ACK -> blue ✓✓ at the sender", &l.read_receipt),
            LatencySummary::new("catch_up", "reconnect accepted -> every missed message shown", &l.catch_up),
            LatencySummary::new(
                "presence_detection",
                "silent loss (network cut) -> subscribed watcher told, via the TTL",
                &l.presence_detection,
            ),
            LatencySummary::new(
                "group_delivery",
                "send -> a group member's device has it (members online at send)",
                &l.group_delivery,
            ),
            LatencySummary::new(
                "delivery_after_sender_wait",
                "send -> recipient device has it, for messages that waited in the sender's app (no connection, or sent again after one closed)",
                &l.delivery_after_sender_wait,
            ),
        ];
        if s.media.on() {
            latencies.push(LatencySummary::new(
                "media_upload",
                "media: the user taps send -> the object store has the upload (encrypt, presign, PUT)",
                &l.media_upload,
            ));
            latencies.push(LatencySummary::new(
                "media_send_to_viewable",
                "media: the user taps send -> a recipient device can view it (upload, message, CDN download; devices online at send)",
                &l.media_send_to_viewable,
            ));
        }
        // A run without deliveries shows nothing holds; a run in which no watched user
        // changed status simply did not exercise presence.
        let mut slos = vec![
            slo("delivery latency", &latencies[0], s.slo.delivery_ms_p99, Verdict::Fail),
            slo("presence propagation", &latencies[1], s.slo.presence_ms_p99, Verdict::NoData),
        ];
        if s.groups.active > 0 {
            // Each member's delivery against the same objective, apart from 1:1.
            slos.push(slo("group delivery latency", &latencies[7], s.slo.delivery_ms_p99, Verdict::Fail));
        }
        let c = &o.counters;
        let availability = Availability::new(s, c);
        let slos_hold = slos.iter().all(|v| v.verdict != Verdict::Fail) && availability.verdict != Verdict::Fail;
        let overall = if slos_hold && o.checks.ok() { Verdict::Pass } else { Verdict::Fail };
        let ttl_s = s.users.presence_ttl_ms as f64 / 1e3;
        let detection = &latencies[6];
        let presence_detection_note = format!(
            "Silent loss (crash, network cut) is noticed only when presence:{{user}} expires: up to the {ttl_s:.0} s TTL after the last heartbeat ({:.0} s interval). A {} ms SLO cannot cover it; measured p99 {:.1} s over {} samples, reported and not judged.",
            s.users.heartbeat_interval_ms as f64 / 1e3,
            s.slo.presence_ms_p99,
            detection.p99_ms / 1e3,
            detection.count
        );
        Summary {
            wasim_version: env!("CARGO_PKG_VERSION"),
            scenario_name: s.name.clone(),
            scenario_hash: scenario_hash(s),
            seed: o.seed,
            replay: format!("wasim scenario {file} --seed {}", o.seed),
            tick_us: s.tick_us,
            tick_bound: tick_bound(s, &predicted),
            simulated_s: o.simulated_s(),
            measured_window_s: [s.warmup_s, s.warmup_s + s.duration_s],
            processes: o.node_count,
            verdict: overall,
            slos,
            availability,
            throughput: Throughput {
                offered_msg_per_s: s.workload.messages_per_s
                    + (f64::from(s.groups.active) * s.groups.messages_per_group_per_s).round() as u64,
                sent_msg_per_s: round3(c.sends_measured as f64 / window_s),
                acked_msg_per_s: round3(c.sent_acks_measured as f64 / window_s),
                delivered_msg_per_s: round3(c.deliveries_measured as f64 / window_s),
            },
            latencies,
            counters: *c,
            sometimes: sometimes(c),
            invariants: o.checks.clone(),
            presence_detection_note,
            tiers: o
                .tiers
                .iter()
                .map(|t| TierSummary::new(t, window_s, predicted.iter().find(|p| p.tier == t.kind.name())))
                .collect(),
            ops: OpKind::ALL
                .iter()
                .map(|&k| OpLoad {
                    op: k.name(),
                    tier: k.tier().name(),
                    predicted_per_s: round3(rates[k as usize]),
                    measured_per_s: round3(o.ops[k as usize] as f64 / window_s),
                })
                .collect(),
            fault_windows: fault_windows(s),
            crashes: crash_reports(o),
            redis_outages: redis_outage_reports(o),
            placement_comparison: Vec::new(),
            groups: GroupSummary::new(o, window_s),
            media: MediaSummary::new(o),
            sizing: wasim_sim::sizing(o, target, wasim_sim::NodeCapacity::default()),
            flows: o
                .flows
                .iter()
                .map(|&(from, to, n)| Flow {
                    from: from.name(),
                    to: to.name(),
                    messages_per_s: round3(n as f64 / window_s),
                })
                .collect(),
            receipt_state_machine: ReceiptMachine::new(o),
            scenario: s.clone(),
        }
    }
}
