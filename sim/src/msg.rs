//! What travels on wasim's network between simulated processes.

use std::time::Duration;
use wasim_model::{
    ChatMessage, ConversationId, DeviceFrame, DeviceId, DeviceKey, GroupId, InboxPos, MediaKey, MessageId, ObjectMeta,
    PresenceInput, PresenceUpdate, Receipt, Route, ServerFrame, ServerId, Time, UserId, FORWARD_BATCH_MAX,
    ROUTE_BATCH_MAX,
};

/// The most heartbeat refreshes one pipelined presence message carries: a chat server
/// flushes its pipeline each tick or when it is full.
pub const HEARTBEATS_PIPELINED_MAX: usize = 8;

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
    /// then the sender's sequence; packed with the arrival's position `index` into one
    /// integer (time 40 bits, sender 16, sequence 32, index 40) for a cheap sort.
    #[inline]
    pub fn order_key(&self, index: usize) -> u128 {
        assert!(self.at.as_us() < 1 << 40 && (index as u64) < 1 << 40, "a time or batch beyond the sort key");
        (u128::from(self.at.as_us()) << 88)
            | (u128::from(self.from.0) << 72)
            | (u128::from(self.seq) << 40)
            | index as u128
    }
}

/// The payloads, grouped by who sends them.
#[derive(Clone, Copy, Debug)]
pub enum Msg {
    /// device -> chat server: a frame on the device's WebSocket.
    Device {
        device: DeviceId,
        frame: DeviceFrame,
    },
    /// chat server -> device.
    ToDevice {
        device: DeviceId,
        frame: ServerFrame,
    },
    // chat server <-> Cassandra
    Write {
        req: u64,
        msg: ChatMessage,
    },
    WriteAck {
        req: u64,
    },
    Read {
        req: u64,
        id: MessageId,
        conversation: ConversationId,
    },
    /// Whether the replica holds the row.
    ReadReply {
        req: u64,
        held: bool,
    },
    // chat server / router <-> session Redis
    /// Set the session, then read the inbox since `cursor` (one script).
    SessionSet {
        req: u64,
        device: DeviceId,
        server: ServerId,
        epoch: u8,
        ttl: Duration,
        cursor: InboxPos,
    },
    SessionClear {
        device: DeviceId,
        server: ServerId,
        epoch: u8,
    },
    /// Write a live connection's session again (after a failover).
    SessionRefresh {
        device: DeviceId,
        server: ServerId,
        epoch: u8,
        ttl: Duration,
    },
    SessionRefreshed {
        device: DeviceId,
        epoch: u8,
        changed: bool,
    },
    /// The router's route-or-inbox.
    RouteMessage {
        req: u64,
        msg: ChatMessage,
    },
    Routed {
        req: u64,
        route: Route,
    },
    /// A chat server's route-or-inbox for a message it could not deliver.
    Reroute {
        msg: ChatMessage,
        exclude: wasim_model::Exclusion,
        slot: wasim_model::DeviceSlot,
    },
    Rerouted {
        msg: ChatMessage,
        route: Route,
        slot: wasim_model::DeviceSlot,
    },
    InboxEntry {
        req: u64,
        pos: InboxPos,
        msg: ChatMessage,
    },
    StoredReceipt {
        req: u64,
        receipt: Receipt,
        stored: u32,
    },
    /// Forget the receipts stored for `user` up to number `upto`: its phone heard them.
    ForgetReceipts {
        user: UserId,
        upto: u32,
    },
    InboxEnd {
        req: u64,
        end: InboxPos,
        parts: u32,
        previous: Option<ServerId>,
    },
    RouteReceipt {
        req: u64,
        receipt: Receipt,
        exclude: Option<wasim_model::Exclusion>,
    },
    ReceiptRouted {
        req: u64,
        server: Option<ServerId>,
    },
    // chat server <-> presence Redis
    Presence(PresenceInput),
    /// Up to `HEARTBEATS_PIPELINED_MAX` heartbeats' `EXPIRE presence:{user}` commands
    /// sent in one pipelined round trip, as a chat server talks to Redis.
    PresenceHeartbeats {
        count: u8,
        devices: [DeviceId; HEARTBEATS_PIPELINED_MAX],
    },
    PresenceSubscribe {
        watcher: DeviceId,
        server: ServerId,
        target: UserId,
    },
    PresenceNotify {
        watcher: DeviceId,
        update: PresenceUpdate,
    },
    // chat server <-> Kafka
    Produce {
        req: u64,
        msg: ChatMessage,
    },
    ProduceAck {
        req: u64,
    },
    // Kafka <-> router
    Record {
        partition: u32,
        offset: u64,
        msg: ChatMessage,
    },
    Commit {
        partition: u32,
        offset: u64,
    },
    // chat server -> router or fan-out: `device` acknowledged a push of message `id` of
    // `partition` (what was forwarded for it need not be kept for replay any more).
    Acked {
        partition: u32,
        id: MessageId,
        device: wasim_model::DeviceKey,
    },
    // router / chat server -> chat server
    Forward {
        msg: ChatMessage,
        slot: wasim_model::DeviceSlot,
    },
    ReceiptRelay {
        receipt: Receipt,
    },
    // chat server <-> chat server, when a device moved without its old server noticing
    Takeover {
        req: u64,
        device: DeviceId,
        to: ServerId,
        epoch: u8,
    },
    Handover {
        req: u64,
        slot: wasim_model::DeviceSlot,
        msg: ChatMessage,
    },
    TakeoverDone {
        req: u64,
        parts: u32,
    },
    // fan-out <-> Cassandra: a page of a group's membership. The reply stands for the
    // page's rows: the fan-out reads the members from the store's contents (membership
    // does not change during a run), the network carries the request's cost and latency.
    ReadMembers {
        req: u64,
        group: GroupId,
        page: u32,
    },
    MembersRead {
        req: u64,
        group: GroupId,
        page: u32,
    },
    // fan-out <-> session Redis: route-or-inbox for up to `ROUTE_BATCH_MAX` members.
    RouteGroup {
        req: u64,
        msg: ChatMessage,
        count: u8,
        members: [UserId; ROUTE_BATCH_MAX],
    },
    /// Each member's servers, phone then web client (`NO_SERVER`: not there).
    GroupRouted {
        req: u64,
        count: u8,
        servers: [[u16; 2]; ROUTE_BATCH_MAX],
    },
    // fan-out -> chat server: one message for up to `FORWARD_BATCH_MAX` of its devices.
    GroupForward {
        msg: ChatMessage,
        count: u8,
        devices: [DeviceKey; FORWARD_BATCH_MAX],
    },
    // chat server <-> Cassandra: the group receipts table's row (message, member), from
    // the member's receipt; a replica whose rows it completes answers with the aggregate's
    // receipt, for the sender. `position` is the member's place in the group's member list
    // (the row's index in a replica's table), looked up once by the writer rather than by
    // every replica.
    ReceiptRow {
        receipt: Receipt,
        position: u16,
    },
    GroupAggregate {
        receipt: Receipt,
    },
    /// chat server <-> Cassandra: a page of a chat's history (keyset pagination: the rows
    /// of `conversation` before `before`, newest first, at most `limit`), answered with how
    /// many rows the page holds.
    ReadHistory {
        conversation: ConversationId,
        before: MessageId,
        limit: u32,
    },
    HistoryPage {
        rows: u32,
    },
    /// chat server -> Cassandra: a 1:1 message row's status.
    StatusWrite {
        id: MessageId,
        conversation: ConversationId,
        state: wasim_model::ReceiptState,
    },
    // Media: device <-> API tier, object store and CDN edge; edge <-> origin.
    /// Sign an upload URL for `key`.
    Presign {
        key: MediaKey,
        token: u32,
    },
    /// The URL's signature.
    Presigned {
        key: MediaKey,
        token: u32,
        signature: u32,
    },
    /// A PUT of `bytes`: its first byte left the device at `started`, its last leaves at
    /// `sent_by` (the device's uplink).
    Put {
        key: MediaKey,
        token: u32,
        bytes: u32,
        signature: u32,
        tapped_at: Time,
        started: Time,
        sent_by: Time,
    },
    /// The PUT's answer: 200 (`stored`) or an error (503, 403).
    PutDone {
        key: MediaKey,
        token: u32,
        stored: bool,
    },
    /// A device's GET of `key` at its edge.
    CdnGet {
        key: MediaKey,
        device: DeviceKey,
        token: u32,
    },
    /// The edge's answer: the object's first byte (`None`: an error).
    CdnServed {
        key: MediaKey,
        device: DeviceKey,
        token: u32,
        object: Option<ObjectMeta>,
    },
    /// An edge's miss, fetched from the origin.
    OriginGet {
        key: MediaKey,
    },
    /// The origin's answer (`None`: not found or down).
    OriginReply {
        key: MediaKey,
        object: Option<ObjectMeta>,
    },
}

/// In `Msg::GroupRouted`, a device slot with no server.
pub const NO_SERVER: u16 = u16::MAX;

/// A member's servers as `Msg::GroupRouted` carries them.
pub fn pack_route(route: &Route) -> [u16; 2] {
    route.forward.map(|s| s.map_or(NO_SERVER, |s| s.0))
}

/// The route `pack_route` packed (the inbox flag is the session shard's business).
pub fn unpack_route(servers: [u16; 2]) -> Route {
    Route { forward: servers.map(|s| (s != NO_SERVER).then_some(ServerId(s))), inbox: false }
}

impl Msg {
    /// The message this carries, if any (for what is in flight at the end).
    pub fn message_id(&self) -> Option<MessageId> {
        use wasim_model::ServerFrame as S;
        match self {
            Msg::Write { msg, .. }
            | Msg::RouteMessage { msg, .. }
            | Msg::Reroute { msg, .. }
            | Msg::Rerouted { msg, .. }
            | Msg::Produce { msg, .. }
            | Msg::Record { msg, .. }
            | Msg::Forward { msg, .. }
            | Msg::RouteGroup { msg, .. }
            | Msg::GroupForward { msg, .. }
            | Msg::Handover { msg, .. } => Some(msg.id),
            Msg::Read { id, .. } => Some(*id),
            Msg::InboxEntry { msg, .. } => Some(msg.id),
            Msg::ToDevice { frame: S::Push { msg } | S::SentAck { msg }, .. } => Some(msg.id),
            _ => None,
        }
    }

    /// A request a router or a fan-out waits on with a message in hand (a route, a
    /// membership page, a batch of member routes) or its reply: whether it is the reply,
    /// and the request's id (unique within the asking process).
    pub fn awaited_request(&self) -> Option<(bool, u64)> {
        match *self {
            Msg::RouteMessage { req, .. } | Msg::ReadMembers { req, .. } | Msg::RouteGroup { req, .. } => {
                Some((false, req))
            }
            Msg::Routed { req, .. } | Msg::MembersRead { req, .. } | Msg::GroupRouted { req, .. } => Some((true, req)),
            _ => None,
        }
    }

    /// The device a server's "go away" (its connection closed) is on its way to.
    pub fn closed_device(&self) -> Option<wasim_model::DeviceKey> {
        match self {
            Msg::ToDevice { device, frame: wasim_model::ServerFrame::GoAway { .. } } => {
                Some(wasim_model::DeviceKey::of(*device))
            }
            _ => None,
        }
    }

    /// The device told its catch-up is done, if this tells one.
    pub fn caught_up_device(&self) -> Option<wasim_model::DeviceKey> {
        match self {
            Msg::ToDevice { device, frame: wasim_model::ServerFrame::FetchDone { .. } } => {
                Some(wasim_model::DeviceKey::of(*device))
            }
            _ => None,
        }
    }

    /// The message whose receipt (or the delivered ACK that makes one) this carries.
    pub fn receipt_message_id(&self) -> Option<MessageId> {
        use wasim_model::{DeviceFrame as F, ServerFrame as S};
        match self {
            Msg::ToDevice { frame: S::Receipt { receipt, .. }, .. }
            | Msg::StoredReceipt { receipt, .. }
            | Msg::RouteReceipt { receipt, .. }
            | Msg::ReceiptRelay { receipt } => Some(receipt.msg.id),
            Msg::ReceiptRow { receipt, .. } | Msg::GroupAggregate { receipt } => Some(receipt.msg.id),
            Msg::Device { frame: F::DeliveredAck { msg, .. } | F::ReadAck { msg, .. }, .. } => Some(msg.id),
            _ => None,
        }
    }
}

/// Keeps the hot path's copies small; a larger payload costs every hop.
const _: () = assert!(std::mem::size_of::<Envelope>() <= 112, "keep envelopes small");
