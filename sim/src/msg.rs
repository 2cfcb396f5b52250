//! What travels on wasim's network between simulated processes.

use std::time::Duration;
use wasim_model::{ChatMessage, DeviceId, MessageId, ServerId, SessionEntry, Time, UserId};

/// Index of a simulated process on wasim's network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIdx(pub u16);

/// One network message: a payload with its exact arrival time.
#[derive(Clone, Copy, Debug)]
pub struct Envelope {
    /// Exact arrival time; the receiver handles it at the first tick at or after this.
    pub at: Time,
    pub from: NodeIdx,
    /// Per-sender sequence, so that equal arrival times order the same in every run.
    pub seq: u32,
    pub msg: Msg,
}

impl Envelope {
    /// The order in which a node handles one tick's arrivals: by exact time, then sender,
    /// then the sender's sequence; packed into one integer for a cheap sort.
    #[inline]
    pub fn order_key(&self) -> u128 {
        (u128::from(self.at.as_us()) << 48) | (u128::from(self.from.0) << 32) | u128::from(self.seq)
    }
}

/// The payloads, grouped by who sends them.
#[derive(Clone, Copy, Debug)]
pub enum Msg {
    // device -> chat server
    Connect { device: DeviceId },
    Send { device: DeviceId, to: UserId, client_seq: u32, sent_at: Time },
    DeliveredAck { device: DeviceId, msg: ChatMessage, acked_at: Time },
    // chat server -> device
    ConnectAccepted { device: DeviceId, server: ServerId },
    ConnectRefused { device: DeviceId },
    SentAck { device: DeviceId, msg: ChatMessage },
    Push { device: DeviceId, msg: ChatMessage },
    Receipt { device: DeviceId, msg: ChatMessage, acked_at: Time },
    // chat server <-> Cassandra
    Write { req: u64, msg: ChatMessage },
    WriteAck { req: u64 },
    // anyone <-> Redis
    SessionSet { device: DeviceId, server: ServerId, ttl: Duration },
    SessionClear { device: DeviceId, server: ServerId },
    SessionGet { req: u64, user: UserId },
    SessionValue { req: u64, entry: Option<SessionEntry> },
    InboxAdd { user: UserId, id: MessageId },
    // chat server <-> Kafka
    Produce { req: u64, msg: ChatMessage },
    ProduceAck { req: u64 },
    // Kafka <-> router
    Record { partition: u32, offset: u64, msg: ChatMessage },
    Commit { partition: u32, offset: u64 },
    // router / chat server -> chat server
    Forward { msg: ChatMessage },
    ReceiptRelay { msg: ChatMessage, acked_at: Time },
}

/// Keeps the hot path's copies small; a larger payload costs every hop.
const _: () = assert!(std::mem::size_of::<Envelope>() <= 96, "keep envelopes small");
