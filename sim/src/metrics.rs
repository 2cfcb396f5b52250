//! What each process measures, and how the reports of all processes combine.

use crate::topology::NodeKind;
use hdrhistogram::Histogram;
use serde::Serialize;
use wasim_model::{MessageId, Time, UserId};

/// The largest latency recorded, in µs: an hour. Longer values are clamped to it.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// A latency histogram in µs with 3 significant digits, as the report requires.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// Record a latency in µs, clamped into the histogram's range.
#[inline]
pub fn record_us<T: hdrhistogram::Counter>(h: &mut Histogram<T>, us: u64) {
    h.saturating_record(us.clamp(1, LATENCY_US_MAX));
}

/// The latencies measured at the devices, for events in the measuring window.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Send -> ✓ at the sender.
    pub sent_ack: Histogram<u64>,
    /// Send -> the recipient's device has it (recipients online at send time).
    pub delivery: Histogram<u64>,
    /// The recipient's delivered ACK -> ✓✓ at the sender.
    pub receipt: Histogram<u64>,
    /// The reader's read ACK -> blue ✓✓ at the sender (sender online).
    pub read_receipt: Histogram<u64>,
    /// Connection accepted -> every missed message fetched and shown.
    pub catch_up: Histogram<u64>,
    /// A status change (connect, clean disconnect) -> each subscribed watcher's view.
    pub presence: Histogram<u64>,
    /// A silent loss (network cut) -> each subscribed watcher sees the user offline: the
    /// TTL path.
    pub presence_detection: Histogram<u64>,
    /// A chat server crash -> its devices connected again (elsewhere or to it restarted).
    pub reconnect: Histogram<u64>,
    /// Delivery latency of messages sent before the first fault, during a fault window,
    /// and after the last one healed.
    pub delivery_before: Histogram<u64>,
    pub delivery_during: Histogram<u64>,
    pub delivery_after: Histogram<u64>,
    /// Send -> shown, for messages that waited in their sender's app first (written
    /// without a connection, or sent again after one closed): not part of `delivery`.
    pub delivery_after_sender_wait: Histogram<u64>,
    /// Send -> a group member's device has it (members online at send): judged against
    /// the same delivery SLO, apart from 1:1.
    pub group_delivery: Histogram<u64>,
    /// Media: the user taps send -> the upload is stored (encrypt, presign, PUT).
    pub media_upload: Histogram<u64>,
    /// Media: the user taps send -> a recipient device can view it (upload, message,
    /// download), for recipient devices online at the send.
    pub media_send_to_viewable: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            sent_ack: latency_histogram(),
            delivery: latency_histogram(),
            receipt: latency_histogram(),
            read_receipt: latency_histogram(),
            catch_up: latency_histogram(),
            presence: latency_histogram(),
            presence_detection: latency_histogram(),
            reconnect: latency_histogram(),
            delivery_before: latency_histogram(),
            delivery_during: latency_histogram(),
            delivery_after: latency_histogram(),
            delivery_after_sender_wait: latency_histogram(),
            group_delivery: latency_histogram(),
            media_upload: latency_histogram(),
            media_send_to_viewable: latency_histogram(),
        }
    }
}

impl Latencies {
    /// Merge another set into this one.
    pub fn add(&mut self, o: &Latencies) {
        for (a, b) in self.all_mut().into_iter().zip(o.all()) {
            a.add(b).expect("same bounds");
        }
    }

    /// Every histogram with its name.
    pub fn named(&self) -> [(&'static str, &Histogram<u64>); 15] {
        [
            ("delivery", &self.delivery),
            ("sent_ack", &self.sent_ack),
            ("receipt", &self.receipt),
            ("read_receipt", &self.read_receipt),
            ("catch_up", &self.catch_up),
            ("presence", &self.presence),
            ("presence_detection", &self.presence_detection),
            ("reconnect_after_crash", &self.reconnect),
            ("delivery_before_faults", &self.delivery_before),
            ("delivery_during_faults", &self.delivery_during),
            ("delivery_after_faults", &self.delivery_after),
            ("delivery_after_sender_wait", &self.delivery_after_sender_wait),
            ("group_delivery", &self.group_delivery),
            ("media_upload", &self.media_upload),
            ("media_send_to_viewable", &self.media_send_to_viewable),
        ]
    }

    fn all(&self) -> [&Histogram<u64>; 15] {
        self.named().map(|(_, h)| h)
    }

    fn all_mut(&mut self) -> [&mut Histogram<u64>; 15] {
        [
            &mut self.delivery,
            &mut self.sent_ack,
            &mut self.receipt,
            &mut self.read_receipt,
            &mut self.catch_up,
            &mut self.presence,
            &mut self.presence_detection,
            &mut self.reconnect,
            &mut self.delivery_before,
            &mut self.delivery_during,
            &mut self.delivery_after,
            &mut self.delivery_after_sender_wait,
            &mut self.group_delivery,
            &mut self.media_upload,
            &mut self.media_send_to_viewable,
        ]
    }
}

/// A latency histogram for one simulated second: 2 significant digits (1%), enough for a
/// plot, at a sixteenth of the memory of the run's histograms.
pub type SecondHistogram = Histogram<u32>;

/// Latencies by the simulated second their event began (a send, a status change), the
/// whole run, for the percentiles over time. A second with no sample keeps no histogram.
#[derive(Clone, Debug, Default)]
pub struct SecondLatencies {
    /// Send -> shown, 1:1 (as `Latencies::delivery`, but every second, not only the window).
    pub delivery: Vec<Option<Box<SecondHistogram>>>,
    /// Send -> shown on a group member's device (as `Latencies::group_delivery`).
    pub group_delivery: Vec<Option<Box<SecondHistogram>>>,
    /// A status change -> a watcher's view (as `Latencies::presence`).
    pub presence: Vec<Option<Box<SecondHistogram>>>,
}

impl SecondLatencies {
    /// Record `us` for an event that began at `began`.
    #[inline]
    pub fn record(series: &mut Vec<Option<Box<SecondHistogram>>>, began: Time, us: u64) {
        let second = (began.as_us() / 1_000_000) as usize;
        if series.len() <= second {
            series.resize(second + 1, None);
        }
        let h = series[second].get_or_insert_with(|| {
            Box::new(Histogram::new_with_bounds(1, LATENCY_US_MAX, 2).expect("valid histogram bounds"))
        });
        record_us(h, us);
    }

    /// Every series with the SLO metric it follows.
    pub fn named(&self) -> [(&'static str, &Vec<Option<Box<SecondHistogram>>>); 3] {
        [("delivery", &self.delivery), ("group_delivery", &self.group_delivery), ("presence", &self.presence)]
    }

    /// Move the histograms of the seconds before `second` into `into` (their sums are the
    /// same whenever they are merged): a process keeps only its recent seconds, not one
    /// histogram per second of the run. A late event of a second moved starts it again.
    pub fn move_before(&mut self, second: usize, into: &mut SecondLatencies) {
        let mut past = SecondLatencies::default();
        for (a, b) in [&mut past.delivery, &mut past.group_delivery, &mut past.presence].into_iter().zip([
            &mut self.delivery,
            &mut self.group_delivery,
            &mut self.presence,
        ]) {
            let end = second.min(b.len());
            *a = b[..end].iter_mut().map(Option::take).collect();
        }
        into.add(&past);
    }

    /// Merge another set into this one.
    pub fn add(&mut self, o: &SecondLatencies) {
        for (a, b) in
            [&mut self.delivery, &mut self.group_delivery, &mut self.presence].into_iter().zip(o.named().map(|n| n.1))
        {
            if a.len() < b.len() {
                a.resize(b.len(), None);
            }
            for (x, y) in a.iter_mut().zip(b) {
                match (x.as_mut(), y) {
                    (Some(x), Some(y)) => x.add(&**y).expect("same bounds"),
                    (None, Some(y)) => *x = Some(y.clone()),
                    _ => {}
                }
            }
        }
    }
}

/// One event of the traced user's messages, for trace.csv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    pub at: Time,
    pub event: &'static str,
    pub msg: Option<MessageId>,
    pub user: UserId,
    pub slot: Option<u8>,
    pub node: crate::msg::NodeIdx,
}

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct $name { $($(#[$fm])* pub $f: u64,)* }
        impl $name {
            /// Add another set of counts into this one.
            pub fn add(&mut self, o: &$name) { $(self.$f += o.$f;)* }
        }
    };
}

counters! {
    /// Whole-run event counts, summed over processes.
    Counters {
        /// Sends put on the wire by devices (whole run).
        sends,
        /// Sends in the measuring window.
        sends_measured,
        /// ✓ received for messages sent in the window.
        sent_acks_measured,
        /// Pushes received for messages sent in the window.
        deliveries_measured,
        /// Delivered receipts received for messages sent in the window (one per recipient
        /// device; a re-sent ACK can add a duplicate).
        receipts_measured,
        /// Messages sent in the window whose sender saw ✓✓ (grey or blue).
        double_ticks_measured,
        /// Devices whose connection was accepted.
        connects,
        /// Connection attempts refused by a full server.
        connects_refused,
        /// Connection attempts that met a dead server (reset by its host, or timed out).
        connects_failed,
        /// Connections lost to a crashed server (reset, or pings unanswered).
        connections_lost,
        /// Messages a router routed again because their chat server went down.
        replayed,
        /// Sends a device made again after reconnecting, having no ✓ for them.
        sends_retried,
        /// Sends written while the app had no connection: they waited in it for the next.
        sends_queued,
        /// Writes sent again to every replica, a quorum not having acknowledged in time.
        writes_retried,
        /// Reads sent to every replica, a quorum not having answered in time.
        reads_retried,
        /// Rows a Cassandra node copied from its peers when it rejoined (the writes it
        /// missed while down: repair).
        rows_repaired,
        /// Sends in the measuring window before the first fault, during a fault window and
        /// after the last one, and those of them whose ✓ came within the ACK timeout
        /// (availability).
        sends_before_faults,
        sends_during_faults,
        sends_after_faults,
        acked_in_time_before_faults,
        acked_in_time_during_faults,
        acked_in_time_after_faults,
        /// Of those sends, the ones whose user closed the app before the ✓ came: left out
        /// of availability (the user, not the system, stopped waiting).
        abandoned_before_faults,
        abandoned_during_faults,
        abandoned_after_faults,
        /// Records a router dropped as repeats of a client message it had routed.
        retries_dropped,
        /// Session writes the store ignored: a newer connection of the device had
        /// written first (the epoch fence).
        sessions_stale,
        /// Records a partition pushed again from its last commit: to a new leader's
        /// consumer after a broker election, or to a new consumer after a rebalance.
        records_pushed_again,
        /// Partitions that changed router: given to another by a rebalance, or to the same
        /// one restarted (it rejoins the group and resumes from the commit).
        partitions_moved,
        /// Session writes a Redis failover lost (the replica had not received them).
        sessions_lost_in_failover,
        /// Sessions chat servers wrote again after a failover, and devices they asked to
        /// reconnect because the new primary had lost (or misplaced) theirs.
        sessions_reregistered,
        devices_sent_away,

        /// Route-or-inbox operations that wrote an inbox pointer.
        inbox_adds,
        /// Inbox pointers and stored receipts dropped at their per-user limits.
        redis_dropped,
        /// Messages shown from an inbox fetch after a (re)connect.
        fetched,
        /// Arrivals not shown because the device had shown them already.
        duplicates_dropped,
        /// Messages a device put in their place above newer ones of their conversation it
        /// had shown (overtaken on their way, say by a move of the device between servers).
        shown_inserted,
        /// Delivered ACKs lost in transit (fault).
        acks_lost,
        /// Pushes a server repeated because their ACK was overdue (on the device's heartbeat).
        repushes,
        /// Catch-ups that asked the device's previous server to give it up (the device
        /// moved while that server still held its old connection).
        takeovers,
        /// Connections a server gave up to the device's new server, handing over what it
        /// had pushed unacknowledged.
        connections_given_up,
        /// Delivered ACKs sent again for a repeated push (pushed again on a heartbeat, or
        /// fetched again after a reconnect).
        acks_resent,
        /// Read ACKs sent by readers.
        reads_sent,
        /// Read receipts (blue ✓✓) that reached senders.
        read_receipts,
        /// Receipts stored for an offline sender.
        receipts_stored,
        /// Receipts that reached a sender's device after its connection had ended (the app
        /// closed while they were on their way): not shown.
        receipts_unheard,
        /// Heartbeats sent by devices.
        heartbeats,
        /// Presence notifications received by watchers.
        presence_updates,
        /// Presence notifications that showed a last-seen time.
        last_seen_shown,
        /// Connections accepted for devices that had been connected before.
        reconnects,
        /// Catch-ups cut short by a close or a lost network (sometimes: the hold buffer's
        /// path where nothing held may be acknowledged).
        catch_ups_interrupted,
        /// Arrivals a device held unacknowledged and dropped when its catch-up was cut short.
        held_dropped,
        /// Replica writes applied by Cassandra nodes.
        rows_written,
        /// Records appended to Kafka.
        records_appended,
        /// Route-or-inbox operations served by session shards.
        routes,
        /// Group sends put on the wire by devices (whole run; counted in `sends` too).
        group_sends,
        /// Group sends in the measuring window.
        group_sends_measured,
        /// Group messages sent in the window shown on member devices online at send.
        group_deliveries_measured,
        /// Route-or-inbox operations of group members that wrote an inbox pointer.
        group_inbox_adds,
        /// Membership pages the fan-out read.
        membership_pages,
        /// Route requests the fan-out sent to session shards (a batch of members each).
        group_route_requests,
        /// Forwards the fan-out sent to chat servers (a batch of devices each).
        group_forwards,
        /// Pushes of group messages chat servers made to member devices.
        group_pushes,
        /// Rows written to the group receipts table (replica writes).
        receipt_rows_written,
        /// 1:1 message rows' status updates (replica writes), and those that reached a
        /// replica before the row did (not applied).
        status_writes,
        status_writes_before_row,
        /// History pages read when chats were opened, and the rows they held.
        history_pages,
        history_rows,
        /// Group aggregates completed (every member delivered, or every member read), as
        /// replicas reported them.
        group_aggregates_completed,
        /// Media sends the users tapped; their messages sent once uploaded; those whose
        /// upload failed every attempt (failed visibly: no message references them).
        media_taps,
        media_sends,
        media_sends_failed,
        /// Uploads still under way at the end.
        media_uploads_pending_end,
        /// Upload URLs signed; PUTs made; objects stored (first copies); PUTs refused (503
        /// while down, 403).
        media_presigns,
        media_put_attempts,
        media_uploads_stored,
        media_uploads_refused,
        /// Bytes the object store's ingest took in (a retried PUT's again); bytes it holds at
        /// the end.
        media_bytes_ingested,
        media_bytes_stored,
        /// Downloads completed by recipient devices, failed every attempt, and their bytes.
        media_downloads,
        media_downloads_failed,
        media_bytes_downloaded,
        /// CDN edges: requests, those served without an origin fetch of their own (cached,
        /// or waiting on a fetch under way), fetches from the origin, bytes served.
        cdn_requests,
        cdn_hits,
        cdn_origin_fetches,
        cdn_bytes_served,
        /// Frames the chat servers carried (from devices, and pushes to them) and their
        /// bytes; frames carrying media bytes (invariant 9: none).
        chat_frames,
        chat_frame_bytes,
        chat_frames_with_media_bytes,
        /// Network messages handled by processes.
        events,
    }
}

counters! {
    /// Counts per simulated second, for the time series.
    SecondCounters {
        sends,
        sent_acks,
        deliveries,
        receipts,
        connects,
        connects_refused,
        connects_failed,
        /// Watchers told a user went offline because the presence key expired (a silent
        /// loss: a cut, or a crash whose users took longer than the TTL to come back).
        shown_offline_by_expiry,
        /// Bytes the object store's ingest took in this second (retried PUTs' again), of
        /// them the first copies of objects (storage), and the bytes the CDN edges served.
        media_ingest_bytes,
        media_stored_bytes,
        cdn_egress_bytes,
    }
}

/// Work a process still had queued at a moment: replies not yet sent, and how long until
/// the last of them leaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    pub queued: u64,
    pub wait_us: u64,
}

impl Backlog {
    /// The backlog of several processes: what they hold in all, and the longest wait.
    pub fn sum(all: impl Iterator<Item = Backlog>) -> Backlog {
        all.fold(Backlog::default(), |a, b| Backlog { queued: a.queued + b.queued, wait_us: a.wait_us.max(b.wait_us) })
    }
}

/// What one process reports at the end of a run.
#[derive(Clone, Debug)]
pub struct NodeReport {
    pub kind: NodeKind,
    pub counters: Counters,
    /// Indexed by simulated second.
    pub per_second: Vec<SecondCounters>,
    /// Only client shards measure latencies.
    pub latencies: Option<Latencies>,
    /// What the checkers need from this process.
    pub logs: crate::check::Logs,
    /// Events of the traced user's messages.
    pub trace: Vec<TraceEvent>,
    /// Workers of the process's queue (0 for client shards, which have none).
    pub workers: u32,
    /// Service time spent in the window, µs.
    pub busy_us: u64,
    /// Requests served in the window.
    pub served: u64,
    /// A gauge at the end: connections, keys, rows, lag or in-flight messages.
    pub gauge_end: u64,
    /// Sojourns measured for a calibration (by the probe, or by the queue under test).
    pub sojourns: Option<Histogram<u64>>,
    /// Queued work at the end of the measuring window and at the end of the run.
    pub backlog_window_end: Backlog,
    pub backlog_end: Backlog,
    /// Operations served in the window, by kind (see `visits`).
    pub ops: crate::visits::OpCounts,
    /// Arrivals in the window by the sender's kind (`NodeKind as usize`).
    pub arrivals_from: [u64; NodeKind::ALL.len()],
    /// Only client shards: latencies by the second their event began.
    pub latencies_per_second: Option<SecondLatencies>,
    /// Only client shards: times each row of the sender's tick state machine fired, and
    /// moves no row allows.
    pub receipt_transitions: Option<(wasim_model::SenderTransitionCounts, u64)>,
}
