//! wasim-model: the messaging system's real logic, sans-IO.
//!
//! Every stateful component here is a plain state machine that a real server could run
//! unchanged: inputs arrive with the current time as an argument, effects leave as data
//! (`Output` values pushed into a caller-owned buffer). Nothing here reads a clock, draws
//! randomness or performs I/O; the simulator in `wasim-sim` drives these types.

mod capacity;
mod chat_server;
mod client;
mod error;
pub mod estimate;
mod fanout;
mod frames;
mod held;
mod hint;
mod ids;
mod media;
mod message;
pub mod plant;
mod presence;
mod receipts;
mod req;
mod router;
mod session;
mod table;
mod time;

pub use capacity::{little_l, utilisation, Mmc, MMC_SERVERS_MAX};
pub use chat_server::{
    ChatServer, ChatServerConfig, ChatServerInput, ChatServerOutput, FETCH_ENTRIES_MAX, UNACKED_PER_CONNECTION_MAX,
};
pub use client::{
    Backoff, Balancer, BalancerConfig, ClientDevice, DeviceConfig, DeviceInput, DeviceOutput, DeviceState, Devices,
    Displayed, Layout, Placement, SentMessages, Showing, UserSettings, SHOWN_EXACT, SHOWN_EXACT_GROUP,
};
pub use error::ModelError;
pub use fanout::{Fanout, FanoutConfig, FanoutInput, FanoutOutput, FORWARD_BATCH_MAX, MEMBERS_PAGE, ROUTE_BATCH_MAX};
pub use frames::{DeviceFrame, ServerFrame};
pub use hint::prefetch;
pub use ids::{
    fast_range, ClientMsgId, ConversationId, DeviceId, DeviceKey, DeviceSlot, GroupId, InboxPos, MessageId, ServerId,
    ServersDown, Snowflake, UserId, GROUPS_MAX,
};
pub use media::{
    sign, transfer_time, CdnEdge, EdgeGet, MediaClient, MediaClientConfig, MediaInput, MediaKey, MediaKind,
    MediaOutput, ObjectMeta, ObjectStore, PutOutcome, CLIENT_SEQ_BITS, FRAME_BYTES_MAX, FRAME_HEADER_BYTES,
};
pub use message::{ChatMessage, PackedMessage, Recipient};
pub use presence::{
    PresenceCause, PresenceInput, PresenceNotify, PresenceStatus, PresenceStore, PresenceUpdate, WATCHERS_PER_USER_MAX,
};
pub use receipts::{
    sender_transition, GroupCounters, GroupReceipts, Receipt, ReceiptEvent, ReceiptState, SenderEvent,
    SenderTransitionCounts, SenderView, Transition, GROUP_MEMBERS_MAX, RECEIPT_TRANSITIONS, SENDER_TRANSITIONS,
};
pub use req::ReqIds;
pub use router::{
    CommitTracker, Memories, RoutedMemory, Router, RouterInput, RouterOutput, ROUTER_IN_FLIGHT_PER_PARTITION_MAX,
};
pub use session::{
    DeviceSession, Exclusion, Route, SessionEntry, SessionStore, SessionWrite, DEVICES_PER_USER_MAX,
    SESSION_SETTLE_AFTER_PROMOTION,
};
pub use table::{SplitU64, Table, TableKey};
pub use time::Time;

/// Push `x` onto `bucket`, growing it by a quarter when full where a `Vec` doubles: for
/// vectors held at their fullest, which a doubling holds about 40% over what they take on
/// average: the buckets of a timing wheel, filled as their time nears and dropped when it
/// comes (a card-sized run's reads pending, TTL expiries and silence checks: 2 GiB), and
/// logs that only grow (the inboxes'). Still amortised constant time a push.
#[inline]
pub fn push_compactly<T>(bucket: &mut Vec<T>, x: T) {
    if bucket.len() == bucket.capacity() {
        bucket.reserve_exact((bucket.len() / 4).max(16));
    }
    bucket.push(x);
}

/// Take the entries of `queue` that `matches` out of it, both parts keeping their order
/// (what a chat server handed over, kept for replay, when the server it went to goes
/// down). The queue keeps its buffer rather than being copied to a new one that doubles
/// as it grows.
pub(crate) fn take_matching<T: Copy>(
    queue: &mut std::collections::VecDeque<T>,
    matches: impl Fn(&T) -> bool,
) -> std::collections::VecDeque<T> {
    let taken: std::collections::VecDeque<T> = queue.iter().filter(|x| matches(x)).copied().collect();
    if !taken.is_empty() {
        queue.retain(|x| !matches(x));
    }
    taken
}

/// Consistency level of a replicated write (Cassandra's terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// One replica's acknowledgement is enough.
    One,
    /// A majority of the replicas: `replication_factor / 2 + 1`.
    Quorum,
    /// Every replica.
    All,
}

impl Consistency {
    /// How many replica acknowledgements this level needs for the given replication factor.
    pub fn acks_required(self, replication_factor: u8) -> u8 {
        assert!(replication_factor > 0, "replication factor must be positive");
        match self {
            Consistency::One => 1,
            Consistency::Quorum => replication_factor / 2 + 1,
            Consistency::All => replication_factor,
        }
    }
}

/// Whether connection epoch `a` (its low 8 bits) is older than `b`, as serial numbers
/// (RFC 1982): the low bits wrap, and what matters is which came later within half the
/// range.
pub fn epoch_is_older(a: u8, b: u8) -> bool {
    (a.wrapping_sub(b) as i8) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_of_three_is_two() {
        assert_eq!(Consistency::Quorum.acks_required(3), 2);
        assert_eq!(Consistency::Quorum.acks_required(5), 3);
        assert_eq!(Consistency::One.acks_required(3), 1);
        assert_eq!(Consistency::All.acks_required(3), 3);
    }
}
