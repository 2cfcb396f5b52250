//! What each process measures, and how the reports of all processes combine.

use crate::topology::NodeKind;
use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency recorded, in µs: an hour. Longer values are clamped to it.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// A latency histogram in µs with 3 significant digits, as the report requires.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// Record a latency in µs, clamped into the histogram's range.
#[inline]
pub fn record_us(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, LATENCY_US_MAX));
}

/// The latencies measured at the devices, for messages sent in the measuring window.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Send -> ✓ at the sender.
    pub sent_ack: Histogram<u64>,
    /// Send -> the recipient's device has it (recipients online at send time).
    pub delivery: Histogram<u64>,
    /// The recipient's delivered ACK -> ✓✓ at the sender.
    pub receipt: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies { sent_ack: latency_histogram(), delivery: latency_histogram(), receipt: latency_histogram() }
    }
}

impl Latencies {
    /// Merge another set into this one.
    pub fn add(&mut self, o: &Latencies) {
        self.sent_ack.add(&o.sent_ack).expect("same bounds");
        self.delivery.add(&o.delivery).expect("same bounds");
        self.receipt.add(&o.receipt).expect("same bounds");
    }
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
        /// ✓✓ received for messages sent in the window.
        receipts_measured,
        /// Devices whose connection was accepted.
        connects,
        /// Connection attempts refused by a full server.
        connects_refused,
        /// Devices that found every server full.
        connects_failed,
        /// Inbox pointers written (recipient offline or moved).
        inbox_adds,
        /// Replica writes applied by Cassandra nodes.
        rows_written,
        /// Records appended to Kafka.
        records_appended,
        /// Session-store lookups served.
        session_gets,
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
    /// Workers of the process's queue (0 for client shards, which have none).
    pub workers: u32,
    /// Service time spent in the window, µs.
    pub busy_us: u64,
    /// Requests served in the window.
    pub served: u64,
    /// A gauge at the end: connections, keys, rows, lag or in-flight messages.
    pub gauge_end: u64,
}
