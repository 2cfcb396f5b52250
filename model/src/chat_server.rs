//! The chat server: owns WebSocket connections and runs the send path, offline catch-up,
//! receipts and presence relaying.
//!
//! Send: mint a Snowflake id, persist with a quorum write, publish to Kafka once the
//! quorum answers, and ✓ to the sender once Kafka has it. (The card sends ✓ before the
//! publish; a server that crashes between the two would leave a ✓ for a message nothing
//! routes, so the ✓ here waits for both.) Forward from the router: push to the device and keep
//! it until the device ACKs; a device that is gone, or a connection that closes with
//! pushes unacknowledged, hands its messages back to the session store's route-or-inbox
//! operation, so nothing acknowledged is dropped. Connect: set the session, then fetch the
//! inbox since the device's cursor, read the rows with a quorum read and push them in id
//! order. Receipts (delivered, read) go to the sender's server (the session store finds it,
//! and relays them there, when the sender moved), or are stored for a sender who is
//! offline and handed over when the sender reconnects (kept until the phone heard them).

use crate::held::Held;
use crate::table::U32Map;
use crate::{
    ChatMessage, Consistency, ConversationId, DeviceFrame, DeviceId, DeviceKey, DeviceSlot, InboxPos, MessageId,
    PresenceInput, PresenceUpdate, Receipt, ReceiptState, Recipient, Route, ServerFrame, ServerId, ServersDown,
    Snowflake, Time, UserId, DEVICES_PER_USER_MAX,
};
use rustc_hash::FxHashMap;
use slotmap::{DefaultKey, SlotMap};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::time::Duration;

/// Settings of one chat server. Defaults follow the design card.
#[derive(Clone, Debug)]
pub struct ChatServerConfig {
    pub id: ServerId,
    /// Connections this server accepts before refusing (default 100,000).
    pub connections_max: u32,
    /// Connections the connection table is made for at start (a hint, not a limit: it
    /// grows past it). Default `connections_max`; a fleet whose servers will hold far fewer
    /// says so, since the table's slots are scattered over by hashing and all get touched.
    pub connections_expected: u32,
    /// Replicas of each message row (default 3).
    pub replication_factor: u8,
    /// Acknowledgements awaited before ✓, and replies awaited by a read (default quorum).
    pub consistency: Consistency,
    /// TTL of `session:{user}` set on connect (default 86,400 s).
    pub session_ttl: Duration,
    /// How long to wait for Kafka's produce ACK before publishing again (default 1 s).
    pub publish_timeout: Duration,
    /// A connection silent this long is closed (default 45 s, the presence TTL).
    pub connection_timeout: Duration,
    /// A push unacknowledged this long is pushed again on the device's next heartbeat, so
    /// a delivered ACK lost in transit is sent again (default 2 s, many round trips).
    pub ack_wait: Duration,
    /// A write not acknowledged by a quorum within this is sent again to every replica
    /// (default 2 s, Cassandra's `write_request_timeout`).
    pub write_timeout: Duration,
    /// A read not answered by a quorum within this goes to every replica (default 100 ms,
    /// a speculative retry), and again at the write timeout while it is unanswered.
    pub read_retry_after: Duration,
    /// How long a connect's catch-up waits for the device's previous server to hand over
    /// what it had pushed unacknowledged, before finishing without it (default 5 s: the
    /// previous server answers within a round trip unless it is down).
    pub takeover_timeout: Duration,
    /// After a session shard's failover, re-register the sessions of this server's
    /// connections on that shard, and ask a device whose session the new primary had lost
    /// to reconnect (default false: the card's design does nothing).
    pub session_reregister: bool,
    /// Tell the routers and fan-outs when a device acknowledges a push (`Acked`), so that
    /// they keep what they forwarded for replay only until then (default false: they keep
    /// nothing, as in a run where no chat server crashes).
    pub acks_to_forwarders: bool,
    /// How many times this server was restarted before this start (its request ids tell
    /// answers to its predecessors' requests apart: see `ReqIds`).
    pub incarnation: u32,
}

impl ChatServerConfig {
    /// The card's settings for server `id`.
    pub fn new(id: ServerId) -> ChatServerConfig {
        ChatServerConfig {
            id,
            connections_max: 100_000,
            connections_expected: 100_000,
            replication_factor: 3,
            consistency: Consistency::Quorum,
            session_ttl: Duration::from_secs(86_400),
            publish_timeout: Duration::from_secs(1),
            connection_timeout: Duration::from_secs(45),
            ack_wait: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            read_retry_after: Duration::from_millis(100),
            takeover_timeout: Duration::from_secs(5),
            session_reregister: false,
            acks_to_forwarders: false,
            incarnation: 0,
        }
    }
}

/// Everything that can happen to a chat server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChatServerInput {
    /// A frame from a device's WebSocket.
    Frame { device: DeviceId, frame: DeviceFrame },
    /// Cassandra replica `replica` acknowledged a write.
    WriteAck { req: u64, replica: u16 },
    /// Kafka acknowledged a publish.
    ProduceAck { req: u64 },
    /// One entry of an inbox fetch, at position `pos` (entries arrive in inbox order): the
    /// message it names (a group message's copy naming this member), whose row is read.
    /// (The store's pointer names the message; the simulation carries its bytes with it,
    /// so that Cassandra need only know which replicas hold the row.)
    InboxEntry { req: u64, pos: InboxPos, msg: ChatMessage },
    /// A receipt stored for this (then offline) sender, handed over with the fetch under
    /// the store's number `stored` (the store keeps it until told it was heard).
    StoredReceipt { req: u64, receipt: Receipt, stored: u32 },
    /// The end of an inbox fetch: the inbox holds entries up to (not including) `end`;
    /// `parts` entries and stored receipts were sent before it (they may arrive after it).
    /// `previous` is the other server the session pointed the device at until this
    /// connect: it may still hold the device's old connection, with pushes unacknowledged.
    InboxEnd { req: u64, end: InboxPos, parts: u32, previous: Option<ServerId> },
    /// Replica `replica`'s answer to a read: whether it holds the row.
    ReadReply { req: u64, held: bool, replica: u16 },
    /// A message for `slot` of its recipient, connected here (from the router or another
    /// chat server).
    Forward { msg: ChatMessage, slot: DeviceSlot },
    /// The session store routed again a message this server could not deliver to device
    /// `slot` (`Reroute`); only that slot's part of the route is this server's to act on
    /// (the other devices had it routed to them already).
    Rerouted { msg: ChatMessage, route: Route, slot: DeviceSlot },
    /// The session store routed a receipt: to the sender's server, or stored it (`None`).
    ReceiptRouted { req: u64, server: Option<ServerId> },
    /// Another server relays a receipt for a sender connected here.
    ReceiptRelay { receipt: Receipt },
    /// The presence store notifies a watcher connected here.
    PresenceNotify { watcher: DeviceId, update: PresenceUpdate },
    /// `device` connected to server `to` (fetch `req` there) with connection `epoch` (its
    /// low 8 bits): close the connection held here, if it is older, and hand over what it
    /// had pushed unacknowledged.
    Takeover { req: u64, device: DeviceId, to: ServerId, epoch: u8 },
    /// A push the device's previous server had not seen acknowledged, for fetch `req`.
    Handover { req: u64, slot: DeviceSlot, msg: ChatMessage },
    /// The previous server handed over everything for fetch `req`: `parts` `Handover`s
    /// were sent before this (they may arrive after it).
    TakeoverDone { req: u64, parts: u32 },
    /// Another chat server is down (its connections reset, or its health checks failed):
    /// a catch-up waiting for its handover waits no more, and no new one waits for it.
    ServerDown { server: ServerId },
    /// That server is back (restarted, empty).
    ServerUp { server: ServerId },
    /// Session shard `shard` (users `u % shards == shard`) failed over to its replica,
    /// which may lack the latest session writes.
    SessionShardFailover { shard: u32, shards: u32 },
    /// The answer to a `SessionRefresh`: whether the store did not already route the
    /// device here (its session was lost, or named another server).
    SessionRefreshed { device: DeviceId, epoch: u8, changed: bool },
    /// A replica of the group receipts table says a member's row completed the aggregate
    /// there (every member but the sender delivered, or read): `receipt` is the
    /// aggregate's, for the sender.
    GroupAggregate { receipt: Receipt },
}

/// The effects a chat server asks its environment to perform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChatServerOutput {
    /// A frame on a device's WebSocket.
    ToDevice { device: DeviceId, frame: ServerFrame },
    /// In one atomic script: `SET session:{user}` for this device -> this server, then
    /// `ZRANGEBYSCORE inbox:{user} (cursor +inf` and the receipts stored for the user,
    /// answered with `InboxEntry`s, `StoredReceipt`s and `InboxEnd`. Setting the session
    /// first means every message routed later is forwarded here, and every one routed
    /// earlier is in the inbox this reads. `epoch` (the low bits of the connection's) fences
    /// the write: the store ignores it if a newer connection of the device wrote first.
    SessionSet { req: u64, device: DeviceId, server: ServerId, epoch: u8, ttl: Duration, cursor: InboxPos },
    /// Mark this device offline if its session still holds this connection.
    SessionClear { device: DeviceId, server: ServerId, epoch: u8 },
    /// Write the session of a live connection again (after a failover), answered with
    /// `SessionRefreshed`.
    SessionRefresh { device: DeviceId, server: ServerId, epoch: u8, ttl: Duration },
    /// A presence command for the user's presence shard.
    Presence(PresenceInput),
    /// Read a message row from a quorum of its replicas.
    Read { req: u64, id: MessageId, conversation: ConversationId },
    /// Read it from every replica: a quorum did not answer in time (one may be down).
    ReadAll { req: u64, id: MessageId, conversation: ConversationId },
    /// Write the message row to every replica of its partition (again, if a quorum did not
    /// acknowledge it in time: the write is an upsert).
    Persist { req: u64, msg: ChatMessage },
    /// Publish to the `messages` topic, keyed by conversation.
    Publish { req: u64, msg: ChatMessage },
    /// Route-or-inbox in the session store, treating `exclude` as gone.
    Reroute { msg: ChatMessage, exclude: ServerId, slot: DeviceSlot },
    /// Find the sender's server for a receipt, or store the receipt for later.
    RouteReceipt { req: u64, receipt: Receipt, exclude: Option<ServerId> },
    /// The phone of `user` heard the receipts stored for it up to the store's number
    /// `upto`: the store may forget them.
    ForgetStoredReceipts { user: UserId, upto: u32 },
    /// Relay a receipt to the server holding the sender.
    RelayReceipt { server: ServerId, receipt: Receipt },
    /// Subscribe this server's watcher to `target`'s presence channel.
    Subscribe { watcher: DeviceId, server: ServerId, target: UserId },
    /// Forward a message to the server holding `slot` of its recipient.
    Forward { server: ServerId, slot: DeviceSlot, msg: ChatMessage },
    /// Ask the device's previous server to give the device up (`Takeover` there).
    Takeover { server: ServerId, req: u64, device: DeviceId, to: ServerId, epoch: u8 },
    /// Hand a push over to the server the device moved to.
    Handover { server: ServerId, req: u64, slot: DeviceSlot, msg: ChatMessage },
    /// Everything for a takeover was handed over.
    TakeoverDone { server: ServerId, req: u64, parts: u32 },
    /// `SELECT ... FROM messages WHERE conversation = ? AND id < ? ORDER BY id DESC LIMIT ?`
    /// from one replica: a page of a chat's history.
    ReadHistory { conversation: ConversationId, before: MessageId, limit: u32 },
    /// `UPDATE messages SET status` of a 1:1 message's row on every replica of its
    /// partition (the card's data model), unacknowledged.
    WriteStatus { id: MessageId, conversation: ConversationId, state: ReceiptState },
    /// Tell the consumer of the message's partition (a router, or for a group message a
    /// fan-out) that `device` acknowledged a push of it: what was forwarded for it need
    /// not be kept for replay any more.
    Acked { id: MessageId, conversation: ConversationId, device: DeviceId },
    /// Write the row (message, member) -> delivered | read of the group receipts table to
    /// every replica of the message's partition, unacknowledged (a replica down misses it;
    /// the others have it); a replica whose rows this write completes answers
    /// `GroupAggregate`.
    WriteGroupReceipt { receipt: Receipt },
}

#[derive(Debug)]
struct PendingWrite {
    msg: ChatMessage,
    device: DeviceId,
    /// The low bits of the epoch of the connection the send came on: the ✓ goes back on
    /// that connection only (a newer one of the device re-sends what it has no ✓ for).
    epoch: u8,
    /// The replicas that acknowledged it (a write sent again is acknowledged again).
    acked_by: SmallVec<[u16; 3]>,
    /// A quorum holds it; it waits to be published after the earlier messages of its
    /// conversation.
    durable: bool,
    /// Its publish, once made (the ✓ waits for Kafka's acknowledgement of it).
    publish: Option<DefaultKey>,
}

#[derive(Debug)]
struct PendingPublish {
    msg: ChatMessage,
    /// The sender's device, which gets the ✓ once Kafka has the message, on the
    /// connection the send came on.
    device: DeviceId,
    epoch: u8,
    /// The write it publishes (first in its conversation's queue until acknowledged).
    write: DefaultKey,
}

#[derive(Debug)]
struct FetchJob {
    device: DeviceId,
    /// The connection it catches up: a fetch that outlives its connection must not push
    /// to a newer one of the same device (that one has a catch-up of its own).
    epoch: u32,
    /// Rows read so far, by position in the inbox order.
    rows: Vec<Option<ChatMessage>>,
    reads_pending: usize,
    /// Stored receipts that came while the connection was not open, with their numbers.
    receipts: Vec<(Receipt, u32)>,
    /// Once the fetch ended: the inbox position it read up to, and how many entries and
    /// stored receipts the store sent.
    ended: Option<(InboxPos, u32)>,
    /// The first entry left out at `FETCH_ENTRIES_MAX`, if any.
    truncated_at: Option<InboxPos>,
    /// Entries and stored receipts received so far.
    parts_received: u32,
    /// Whether the fetch waits for the device's previous server to hand over.
    awaits_handover: bool,
    /// That previous server.
    handover_from: ServerId,
    /// Pushes handed over so far, and how many the previous server sent (known at its done).
    handover_received: u32,
    handover_sent: Option<u32>,
}

/// A takeover this server answers: the device moved to `to`; `parts` pushes were handed
/// over so far. It is done once nothing for the device can still come back here.
#[derive(Debug)]
struct GivenUp {
    req: u64,
    to: ServerId,
    parts: u32,
}

#[derive(Debug)]
struct PendingRead {
    job: DefaultKey,
    index: usize,
    /// The replicas that answered.
    replied: SmallVec<[u16; 3]>,
    /// The message whose row is read (the fetching member's copy of a group message).
    msg: ChatMessage,
}

/// A connection packed into 4 bytes, so a 100K-connection table stays small enough to
/// hit cache: when the device was last heard, in 10 ms units (24 bits: 46 hours, beyond
/// any run), and the low 8 bits of its epoch (a close 256 connects stale cannot happen).
#[derive(Clone, Copy, Debug)]
struct Connection(u32);

impl Connection {
    fn new(heard: Time, epoch: u32) -> Connection {
        Connection((((heard.as_ms() / 10) as u32) << 8) | (epoch & 0xFF))
    }

    fn heard(self) -> Time {
        Time::from_ms(u64::from(self.0 >> 8) * 10)
    }

    fn is_epoch(self, epoch: u32) -> bool {
        self.0 & 0xFF == epoch & 0xFF
    }

    fn epoch_bits(self) -> u8 {
        (self.0 & 0xFF) as u8
    }

    fn heard_at(&mut self, now: Time) {
        *self = Connection::new(now, self.0);
    }
}

/// The connection table is made for the expected connections (capped by
/// `connections_max` and by this) at once, rather than grown: growing it by doubling
/// through a connect ramp leaves freed tables behind in the allocator (a measured 16 MB
/// more peak memory at 10 servers of 100K). Beyond this it grows.
const CONNECTIONS_RESERVED_MAX: u32 = 1 << 20;

/// The most pushes one connection may have unacknowledged. A device that stops ACKing is
/// closed by the heartbeat timeout well before this matters; the limit bounds memory.
pub const UNACKED_PER_CONNECTION_MAX: usize = 4_096;
/// Messages of a chat's history page (the card's query: the last 50).
pub const HISTORY_PAGE: u32 = 50;
/// The most inbox entries one fetch pushes; the rest come with the next fetch.
pub const FETCH_ENTRIES_MAX: usize = 10_000;

/// One chat server's state.
#[derive(Debug)]
pub struct ChatServer {
    config: ChatServerConfig,
    /// The ids of this incarnation's requests.
    req_ids: crate::ReqIds,
    quorum: u8,
    snowflake: Snowflake,
    /// Connected devices, by `DeviceKey`: looked up on nearly every event, so a compact
    /// table of one line per lookup, which the serve loop can prefetch.
    connections: U32Map,
    /// Buckets of connections to check for silence, by whole second.
    silence_checks: VecDeque<Vec<DeviceKey>>,
    silence_checks_from_s: u64,
    /// Pushes not yet acknowledged by the device, per connection.
    /// Pushes with when they were (last) pushed. Usually one is in flight per connection:
    /// kept inline, without a heap buffer.
    unacked: Held<(ChatMessage, Time)>,
    /// Receipts pushed to a sender's phone that it has not said it heard (its heartbeats
    /// name the last it heard), in the order pushed. When the connection ends they go back
    /// to the session store, which stores them for the sender's next fetch (or relays them
    /// to its new server): a receipt pushed into a connection that died is not lost.
    /// Each with the sequence number it was pushed under.
    unheard_receipts: Held<(u32, Receipt)>,
    /// Per phone that was handed stored receipts: the sequence number the last was pushed
    /// under, and the store's number of the newest. Once the phone heard it, the store is
    /// told to forget them; until then the store keeps them, so a server that dies with
    /// them unheard (or a fetch answer that finds it dead) loses none.
    stored_unheard: FxHashMap<DeviceKey, (u32, u32)>,
    /// The last receipt sequence number given (one sequence for the server: a device
    /// reports numbers of its current connection only, so they only grow).
    receipt_seq: u32,
    writes: SlotMap<DefaultKey, PendingWrite>,
    /// Writes not yet published, per conversation, in the order their ids were minted: a
    /// conversation is published in id order even when a later write reaches its quorum
    /// first, one publish in flight at a time (as an idempotent producer keeps a
    /// partition's order through retries), so the topic and every tier after it carry it
    /// in order.
    unpublished: FxHashMap<ConversationId, SmallVec<[DefaultKey; 2]>>,
    publishes: SlotMap<DefaultKey, PendingPublish>,
    /// Publish deadlines in the order they were set (a deadline is always now + timeout).
    publish_deadlines: VecDeque<(Time, DefaultKey)>,
    receipts: SlotMap<DefaultKey, Receipt>,
    fetches: SlotMap<DefaultKey, FetchJob>,
    reads: SlotMap<DefaultKey, PendingRead>,
    /// Pushes repeated because their acknowledgement was overdue.
    repushes: u64,
    /// Reroutes sent and not yet answered, per recipient: a message on its way back
    /// through the session store may still be forwarded to where the user went.
    rerouting: FxHashMap<UserId, u32>,
    /// Devices taken over by another server, until everything for them has gone there.
    given_up: FxHashMap<DeviceKey, GivenUp>,
    /// Fetches waiting on a previous server's handover, by device.
    awaiting_handover: FxHashMap<DeviceKey, DefaultKey>,
    /// Handover deadlines in the order they were set (always now + timeout).
    takeover_deadlines: VecDeque<(Time, DefaultKey)>,
    /// Pushes handed over to another server, in the order they were, kept as long as that
    /// server may hold them unacknowledged (its connection timeout and a margin, as the
    /// routers keep their forwards): should it crash meanwhile, they are routed again
    /// without it. Without this they would die with it, the routers having forwarded them
    /// here.
    handed: VecDeque<Handed>,
    /// Write and read deadlines in the order they were set (each queue holds deadlines of
    /// one length, so it stays in time order).
    write_deadlines: VecDeque<(Time, DefaultKey)>,
    read_deadlines: VecDeque<(Time, DefaultKey)>,
    read_again_deadlines: VecDeque<(Time, DefaultKey)>,
    /// Writes and reads sent again for want of a quorum in time.
    writes_retried: u64,
    reads_retried: u64,
    /// Other chat servers known to be down.
    down: ServersDown,
    /// Takeovers this server asked for, and connections it gave up to another server.
    takeovers: u64,
    given_up_count: u64,
    /// Sessions re-registered after failovers, and devices asked to reconnect for it.
    refreshes: u64,
    go_aways: u64,
}

/// A push handed over to another server: when, to which, for which device slot, what.
#[derive(Clone, Copy, Debug)]
struct Handed {
    at: Time,
    to: ServerId,
    slot: DeviceSlot,
    msg: ChatMessage,
}

/// How much longer than its connection timeout a server keeps what it handed over (the
/// margin the routers keep their forwards by).
const HANDED_MARGIN: Duration = Duration::from_secs(5);

impl ChatServer {
    /// A freshly started server with no connections.
    pub fn new(config: ChatServerConfig) -> ChatServer {
        ChatServer {
            quorum: config.consistency.acks_required(config.replication_factor),
            snowflake: Snowflake::new(config.id.0),
            connections: U32Map::with_capacity(
                config.connections_expected.min(config.connections_max).min(CONNECTIONS_RESERVED_MAX) as usize,
            ),
            req_ids: crate::ReqIds::new(config.incarnation),
            config,
            silence_checks: VecDeque::new(),
            silence_checks_from_s: 0,
            unacked: Held::default(),
            unheard_receipts: Held::default(),
            stored_unheard: FxHashMap::default(),
            receipt_seq: 0,
            writes: SlotMap::new(),
            unpublished: FxHashMap::default(),
            publishes: SlotMap::new(),
            publish_deadlines: VecDeque::new(),
            receipts: SlotMap::new(),
            fetches: SlotMap::new(),
            reads: SlotMap::new(),
            repushes: 0,
            rerouting: FxHashMap::default(),
            given_up: FxHashMap::default(),
            awaiting_handover: FxHashMap::default(),
            takeover_deadlines: VecDeque::new(),
            handed: VecDeque::new(),
            write_deadlines: VecDeque::new(),
            read_deadlines: VecDeque::new(),
            read_again_deadlines: VecDeque::new(),
            writes_retried: 0,
            reads_retried: 0,
            takeovers: 0,
            refreshes: 0,
            go_aways: 0,
            given_up_count: 0,
            down: ServersDown::default(),
        }
    }

    /// This server's id.
    pub fn id(&self) -> ServerId {
        self.config.id
    }

    /// Pushes repeated because their acknowledgement was overdue (a lost delivered ACK).
    pub fn repushes(&self) -> u64 {
        self.repushes
    }

    /// Takeovers asked of a device's previous server, and connections given up to another
    /// server (a device that moved without this server noticing it leave).
    pub fn takeovers(&self) -> (u64, u64) {
        (self.takeovers, self.given_up_count)
    }

    /// Sessions re-registered after session-shard failovers, and devices asked to
    /// reconnect because the new primary had lost theirs.
    pub fn reregistered(&self) -> (u64, u64) {
        (self.refreshes, self.go_aways)
    }

    /// Replies a read waits for.
    /// The catch-up reads waiting for replies: the device each is for, and the row's
    /// conversation (which places it on its replicas).
    pub fn reads_waiting(&self) -> impl Iterator<Item = (DeviceId, ConversationId)> + '_ {
        self.reads.values().filter_map(|r| self.fetches.get(r.job).map(|job| (job.device, r.msg.conversation)))
    }

    pub fn read_quorum(&self) -> u8 {
        self.quorum
    }

    /// Devices connected now.
    pub fn connection_count(&self) -> u32 {
        self.connections.len() as u32
    }

    /// A hint that an input about `device` comes soon: its connection's slot is loaded
    /// meanwhile (see `prefetch`).
    #[inline]
    pub fn prefetch(&self, device: DeviceId) {
        let key = DeviceKey::of(device);
        self.connections.prefetch(key.0);
        self.unacked.prefetch(key);
        self.unheard_receipts.prefetch(key);
    }

    /// Whether `device` is connected here.
    pub fn is_connected(&self, device: DeviceId) -> bool {
        self.connections.contains_key(DeviceKey::of(device).0)
    }

    /// Whether `device`'s connection here is still the one of `epoch`.
    fn is_open(&self, device: DeviceId, epoch: u32) -> bool {
        self.connections.get(DeviceKey::of(device).0).is_some_and(|c| Connection(c).is_epoch(epoch))
    }

    /// Operations waiting on another tier or a device.
    pub fn pending(&self) -> usize {
        self.writes.len()
            + self.publishes.len()
            + self.receipts.len()
            + self.fetches.len()
            + self.given_up.len()
            + self.unacked.len()
    }

    /// Handle one input at `now`, appending effects to `out`.
    pub fn handle(&mut self, now: Time, input: ChatServerInput, out: &mut Vec<ChatServerOutput>) {
        use ChatServerInput as In;
        use ChatServerOutput as Out;
        match input {
            In::Frame { device, frame } => self.on_frame(now, device, frame, out),
            In::WriteAck { req, replica } => self.on_write_ack(now, req, replica, out),
            In::ProduceAck { req } => {
                // A late or duplicate ACK finds nothing: the entry was already removed.
                if let Some(p) = self.publishes.remove(self.req_ids.key(req)) {
                    if self.is_open(p.device, u32::from(p.epoch)) {
                        out.push(Out::ToDevice { device: p.device, frame: ServerFrame::SentAck { msg: p.msg } });
                    }
                    self.writes.remove(p.write);
                    let conversation = p.msg.conversation;
                    if let Some(queue) = self.unpublished.get_mut(&conversation) {
                        queue.retain(|k| *k != p.write);
                        if queue.is_empty() {
                            self.unpublished.remove(&conversation);
                        }
                    }
                    self.publish_next(now, conversation, out);
                }
            }
            In::InboxEntry { req, pos, msg } => self.on_inbox_entry(now, req, pos, msg, out),
            In::StoredReceipt { req, receipt, stored } => {
                let key = self.req_ids.key(req);
                let Some(job) = self.fetches.get_mut(key) else { return };
                job.parts_received += 1;
                // Pushed at once to the connection that fetched it, held until heard like
                // any receipt: were it kept for the end of the catch-up, which may wait long
                // on quorum reads, a crash meanwhile would take it (the store gave it up).
                // (Planted: kept for the end, where it goes only with inbox entries.)
                let (device, epoch) = (job.device, job.epoch);
                if self.is_open(device, epoch) && !crate::plant::planted(crate::plant::Plant::StoredReceiptsDropped) {
                    self.push_stored_receipt(device, receipt, stored, out);
                } else {
                    self.fetches[key].receipts.push((receipt, stored));
                }
                self.try_finish_fetch(now, key, out);
            }
            In::InboxEnd { req, end, parts, previous } => {
                let key = self.req_ids.key(req);
                let previous = previous.filter(|&p| !self.down.contains(p));
                let Some(job) = self.fetches.get_mut(key) else { return };
                job.ended = Some((end, parts));
                let (device, epoch) = (job.device, job.epoch);
                match previous {
                    Some(from) if self.is_open(device, epoch) => {
                        // The device moved here while `from` still held it: `from` gives it up
                        // and hands over what it pushed unacknowledged, and the catch-up waits
                        // for that, so the device shows those before anything newer.
                        let job = self.fetches.get_mut(key).expect("looked up above");
                        job.awaits_handover = true;
                        job.handover_from = from;
                        self.takeovers += 1;
                        self.awaiting_handover.insert(DeviceKey::of(device), key);
                        self.takeover_deadlines.push_back((now + self.config.takeover_timeout, key));
                        out.push(Out::Takeover { server: from, req, device, to: self.config.id, epoch: epoch as u8 });
                    }
                    Some(from) => {
                        // The connection here closed before its session write came back, but
                        // the device had left `from` holding one (lost silently): `from` still
                        // gives that up, and what it pushed unacknowledged comes here, where the
                        // device is gone, and so back to its inbox, rather than waiting for
                        // `from` to time the dead connection out. Nothing here waits for it,
                        // and a connection at `from` newer than this one (the device went back
                        // there while this write was held up) stays (`on_takeover`).
                        out.push(Out::Takeover { server: from, req, device, to: self.config.id, epoch: epoch as u8 });
                    }
                    None => {}
                }
                self.try_finish_fetch(now, key, out);
            }
            In::ReadReply { req, held, replica } => self.on_read_reply(now, req, held, replica, out),
            // The aggregate goes to the sender like any receipt (another replica may say so
            // too, of another member's write: the sender's view takes a receipt once).
            In::GroupAggregate { receipt } => self.send_receipt(receipt, out),
            In::Forward { msg, slot } => {
                let device = DeviceId { user: msg.to, slot };
                self.push(device, msg, now, out);
            }
            In::Rerouted { msg, route, slot } => {
                if let Some(server) = route.forward[usize::from(slot.0)] {
                    let device = DeviceId { user: msg.to, slot };
                    if server == self.config.id {
                        self.push(device, msg, now, out);
                    } else if self.down.contains(server) {
                        // The session still names a server that is down: route again
                        // without it (the inbox, or the device's server once it reconnects).
                        *self.rerouting.entry(msg.to).or_default() += 1;
                        out.push(Out::Reroute { msg, exclude: server, slot });
                    } else if !self.hand_over(now, device, Some(server), msg, out) {
                        // (Handed over if the device's new server is still catching it up:
                        // it goes with the takeover, so it is shown before anything newer.)
                        out.push(Out::Forward { server, slot, msg });
                    }
                }
                if let Some(n) = self.rerouting.get_mut(&msg.to) {
                    *n -= 1;
                    if *n == 0 {
                        self.rerouting.remove(&msg.to);
                        for slot in 0..DEVICES_PER_USER_MAX as u8 {
                            self.try_finish_takeover(
                                DeviceKey::of(DeviceId { user: msg.to, slot: DeviceSlot(slot) }),
                                out,
                            );
                        }
                    }
                }
            }
            In::ReceiptRouted { req, server } => {
                let Some(receipt) = self.receipts.remove(self.req_ids.key(req)) else { return };
                // The store relayed it to the sender's server (this one or another), or
                // stored it for the offline sender; unless the sender's session still names
                // a server that is down: then it is routed again without that server.
                if let Some(s) = server.filter(|&s| self.down.contains(s)) {
                    self.route_receipt(receipt, Some(s), out);
                }
            }
            In::ReceiptRelay { receipt } => self.deliver_receipt(receipt, out),
            In::PresenceNotify { watcher, update } => {
                if self.is_connected(watcher) {
                    out.push(Out::ToDevice { device: watcher, frame: ServerFrame::PresenceUpdate { update } });
                }
            }
            In::Takeover { req, device, to, epoch } => self.on_takeover(now, req, device, to, epoch, out),
            In::Handover { req, slot, msg } => {
                // Pushed like any message: held by the catching-up device, or passed along
                // if the device moved on again while this server waited.
                self.push(DeviceId { user: msg.to, slot }, msg, now, out);
                if let Some(job) = self.fetches.get_mut(self.req_ids.key(req)) {
                    job.handover_received += 1;
                    self.try_finish_fetch(now, self.req_ids.key(req), out);
                }
            }
            In::ServerDown { server } => {
                self.down.insert(server);
                // What was handed over to it and may have died with it goes back to the
                // session store's route-or-inbox without it, in the order it was handed.
                for h in crate::take_matching(&mut self.handed, |h| h.to == server) {
                    *self.rerouting.entry(h.msg.to).or_default() += 1;
                    out.push(Out::Reroute { msg: h.msg, exclude: server, slot: h.slot });
                }
                let waiting: Vec<DefaultKey> = self
                    .fetches
                    .iter()
                    .filter(|(_, j)| j.awaits_handover && j.handover_from == server)
                    .map(|(k, _)| k)
                    .collect();
                for key in waiting {
                    self.fetches[key].awaits_handover = false;
                    self.try_finish_fetch(now, key, out);
                }
            }
            In::ServerUp { server } => self.down.remove(server),
            In::SessionShardFailover { shard, shards } => {
                if !self.config.session_reregister || shards == 0 {
                    return;
                }
                let (server, ttl) = (self.config.id, self.config.session_ttl);
                for (key, connection) in self.connections.iter() {
                    let device = DeviceKey(key).device();
                    if device.user.0 % shards == shard {
                        let epoch = Connection(connection).epoch_bits();
                        self.refreshes += 1;
                        out.push(Out::SessionRefresh { device, server, epoch, ttl });
                    }
                }
            }
            In::SessionRefreshed { device, epoch, changed } => {
                let current = self.connections.get(DeviceKey::of(device).0).map(|c| Connection(c).epoch_bits());
                if changed && current == Some(epoch) {
                    // Messages may have gone to its inbox meanwhile, which a connected
                    // device does not read: it reconnects, and its catch-up fetches them.
                    self.go_aways += 1;
                    self.close(device, out);
                    out.push(Out::ToDevice { device, frame: ServerFrame::GoAway { server: self.config.id, epoch } });
                }
            }
            In::TakeoverDone { req, parts } => {
                if let Some(job) = self.fetches.get_mut(self.req_ids.key(req)) {
                    job.handover_sent = Some(parts);
                    self.try_finish_fetch(now, self.req_ids.key(req), out);
                }
            }
        }
    }

    /// Another server took `device` over: close its connection here without telling the
    /// session or presence stores (both already point at the new server), and hand over
    /// what it had pushed unacknowledged. Answered once nothing for it can come back here.
    fn on_takeover(
        &mut self,
        now: Time,
        req: u64,
        device: DeviceId,
        to: ServerId,
        epoch: u8,
        out: &mut Vec<ChatServerOutput>,
    ) {
        let key = DeviceKey::of(device);
        let mut parts = 0;
        // A connection here newer than the one asking stays: the device came back here
        // after connecting there (the request was held up); nothing is handed over.
        let newer_here =
            self.connections.get(key.0).is_some_and(|c| crate::epoch_is_older(epoch, Connection(c).epoch_bits()));
        if newer_here {
            out.push(ChatServerOutput::TakeoverDone { server: to, req, parts: 0 });
            return;
        }
        if self.connections.remove(key.0).is_some() {
            self.given_up_count += 1;
            self.reroute_receipts(key, out);
            if crate::plant::planted(crate::plant::Plant::ForgetUnackedOnEarlyReconnect) {
                self.unacked.take(key);
            }
            for (msg, _) in self.unacked.take(key) {
                parts += 1;
                self.send_handover(now, to, req, device.slot, msg, out);
            }
        }
        if let Some(earlier) = self.given_up.insert(key, GivenUp { req, to, parts }) {
            // The device moved again before the first move finished: that one is abandoned
            // by its server (the device left it too); it ends with what it has.
            out.push(ChatServerOutput::TakeoverDone { server: earlier.to, req: earlier.req, parts: earlier.parts });
        }
        self.try_finish_takeover(key, out);
    }

    /// Answer a takeover once no reroute for the user is on its way back here and no
    /// catch-up here still waits for a handover of its own.
    fn try_finish_takeover(&mut self, key: DeviceKey, out: &mut Vec<ChatServerOutput>) {
        if self.rerouting.contains_key(&key.device().user) || self.awaiting_handover.contains_key(&key) {
            return;
        }
        if let Some(g) = self.given_up.remove(&key) {
            out.push(ChatServerOutput::TakeoverDone { server: g.to, req: g.req, parts: g.parts });
        }
    }

    fn on_frame(&mut self, now: Time, device: DeviceId, frame: DeviceFrame, out: &mut Vec<ChatServerOutput>) {
        use ChatServerOutput as Out;
        let key = DeviceKey::of(device);
        match frame {
            DeviceFrame::Connect { epoch, cursor, hide_last_seen } => {
                self.on_connect(now, device, epoch, cursor, hide_last_seen, out)
            }
            DeviceFrame::Disconnect { epoch, receipts_heard } => {
                // The close of an older socket, overtaken by the device's new connect,
                // must not close the new one.
                let current = self.connections.get(key.0).is_some_and(|c| Connection(c).is_epoch(epoch));
                if current {
                    self.forget_heard_receipts(key, receipts_heard, out);
                }
                if current && self.close(device, out) {
                    out.push(Out::Presence(PresenceInput::Offline { device }));
                }
            }
            DeviceFrame::Heartbeat { receipts_heard } => {
                if let Some(c) = self.connections.get_mut(key.0) {
                    let mut conn = Connection(*c);
                    conn.heard_at(now);
                    *c = conn.0;
                    out.push(Out::Presence(PresenceInput::Heartbeat { device }));
                    self.push_again_overdue(key, device, now, out);
                    self.forget_heard_receipts(key, receipts_heard, out);
                }
            }
            DeviceFrame::ReceiptsHeard { upto } => {
                if self.is_connected(device) {
                    self.forget_heard_receipts(key, upto, out);
                }
            }
            DeviceFrame::Send { to, client_seq, sent_at } => {
                let Some(epoch) = self.connections.get(key.0).map(|c| Connection(c).epoch_bits()) else {
                    return; // a frame from a connection this server closed: the client retries
                };
                // A group message is stored and published once, for every member: its
                // copies for the members name each one.
                let (conversation, to) = match to {
                    Recipient::User(u) => (ConversationId::direct(device.user, u), u),
                    Recipient::Group(g) => (ConversationId::group(g), UserId::GROUP),
                };
                let msg = ChatMessage {
                    id: self.snowflake.next(now),
                    conversation,
                    from: device.user,
                    to,
                    client_seq,
                    sent_at,
                };
                let write =
                    PendingWrite { msg, device, epoch, acked_by: SmallVec::new(), durable: false, publish: None };
                let key = self.writes.insert(write);
                self.write_deadlines.push_back((now + self.config.write_timeout, key));
                self.unpublished.entry(msg.conversation).or_default().push(key);
                out.push(Out::Persist { req: self.req_ids.req(key), msg });
            }
            DeviceFrame::DeliveredAck { msg, at } => {
                let dropped = self.unacked.retain(key, |(m, _)| m.id != msg.id);
                if self.config.acks_to_forwarders && dropped > 0 {
                    out.push(Out::Acked { id: msg.id, conversation: msg.conversation, device });
                }
                self.member_receipt(Receipt { msg, state: ReceiptState::Delivered, by: device, at }, out);
            }
            DeviceFrame::ReadAck { msg, at } => {
                self.member_receipt(Receipt { msg, state: ReceiptState::Read, by: device, at }, out);
            }
            DeviceFrame::Subscribe { target } => {
                if self.is_connected(device) {
                    out.push(Out::Subscribe { watcher: device, server: self.config.id, target });
                    // Opening the chat shows its latest messages: the first page of a
                    // keyset pagination over the conversation's partition.
                    let conversation = ConversationId::direct(device.user, target);
                    out.push(Out::ReadHistory { conversation, before: MessageId(u64::MAX), limit: HISTORY_PAGE });
                }
            }
            // Media bytes are not the chat server's to carry (the card: "Chat Server never
            // touches media bytes"): it keeps nothing of them. Only a planted device sends
            // them; the simulator's frame count names each (invariant 9).
            DeviceFrame::MediaBytes { .. } => {}
        }
    }

    /// Writes and reads sent again for want of a quorum in time.
    pub fn retried(&self) -> (u64, u64) {
        (self.writes_retried, self.reads_retried)
    }

    /// Timers: write again what a quorum has not acknowledged, read from every replica
    /// what a quorum has not answered, re-publish what Kafka has not acknowledged, close
    /// silent connections. Call once per tick.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<ChatServerOutput>) {
        let keep = self.config.connection_timeout + HANDED_MARGIN;
        while self.handed.front().is_some_and(|h| h.at + keep <= now) {
            self.handed.pop_front();
        }
        while let Some(&(deadline, key)) = self.write_deadlines.front() {
            if deadline > now {
                break;
            }
            self.write_deadlines.pop_front();
            if let Some(w) = self.writes.get(key).filter(|w| !w.durable) {
                let msg = w.msg;
                self.writes_retried += 1;
                self.write_deadlines.push_back((now + self.config.write_timeout, key));
                out.push(ChatServerOutput::Persist { req: self.req_ids.req(key), msg });
            }
        }
        for again in [false, true] {
            let queue = if again { &mut self.read_again_deadlines } else { &mut self.read_deadlines };
            let mut due = Vec::new();
            while let Some(&(deadline, key)) = queue.front() {
                if deadline > now {
                    break;
                }
                queue.pop_front();
                due.push(key);
            }
            for key in due {
                if let Some(r) = self.reads.get(key) {
                    let (id, conversation) = (r.msg.id, r.msg.conversation);
                    self.reads_retried += 1;
                    self.read_again_deadlines.push_back((now + self.config.write_timeout, key));
                    out.push(ChatServerOutput::ReadAll { req: self.req_ids.req(key), id, conversation });
                }
            }
        }
        while let Some(&(deadline, key)) = self.publish_deadlines.front() {
            if deadline > now {
                break;
            }
            self.publish_deadlines.pop_front();
            if let Some(p) = self.publishes.get(key) {
                let msg = p.msg;
                self.publish_deadlines.push_back((now + self.config.publish_timeout, key));
                out.push(ChatServerOutput::Publish { req: self.req_ids.req(key), msg });
            }
        }
        while let Some(&(deadline, key)) = self.takeover_deadlines.front() {
            if deadline > now {
                break;
            }
            self.takeover_deadlines.pop_front();
            if let Some(job) = self.fetches.get_mut(key) {
                if std::mem::take(&mut job.awaits_handover) {
                    // The previous server did not answer (it is down): catch up without it.
                    self.try_finish_fetch(now, key, out);
                }
            }
        }
        let now_s = now.as_ms() / 1_000;
        while self.silence_checks_from_s <= now_s {
            let Some(bucket) = self.silence_checks.pop_front() else {
                self.silence_checks_from_s = now_s + 1;
                break;
            };
            self.silence_checks_from_s += 1;
            for key in bucket {
                let Some(c) = self.connections.get(key.0).map(Connection) else { continue };
                let silent_since = c.heard();
                if silent_since + self.config.connection_timeout <= now {
                    // No DEL of presence: the key expires on its own (silent loss). The
                    // socket is closed: a device that is alive after all (its beats were
                    // late, or this server's clock jumped) learns it and connects again.
                    let device = key.device();
                    self.close(device, out);
                    let frame = ServerFrame::GoAway { server: self.config.id, epoch: c.epoch_bits() };
                    out.push(ChatServerOutput::ToDevice { device, frame });
                } else {
                    self.check_silence_at(key, silent_since + self.config.connection_timeout);
                }
            }
        }
    }

    fn check_silence_at(&mut self, key: DeviceKey, at: Time) {
        let s = at.as_ms().div_ceil(1_000).max(self.silence_checks_from_s);
        let i = (s - self.silence_checks_from_s) as usize;
        if self.silence_checks.len() <= i {
            self.silence_checks.resize_with(i + 1, Vec::new);
        }
        crate::push_compactly(&mut self.silence_checks[i], key);
    }

    fn on_connect(
        &mut self,
        now: Time,
        device: DeviceId,
        epoch: u32,
        cursor: InboxPos,
        hidden: bool,
        out: &mut Vec<ChatServerOutput>,
    ) {
        use ChatServerOutput as Out;
        let key = DeviceKey::of(device);
        if self.connections.contains_key(key.0) {
            // The device reconnects before this server noticed the old connection die:
            // what was pushed on the old one may be lost, so it goes back through the
            // inbox before the new session is set (and so before the fetch reads it).
            if crate::plant::planted(crate::plant::Plant::ForgetUnackedOnEarlyReconnect) {
                self.unacked.take(key);
            }
            self.reroute_unacked(key, out);
            self.reroute_receipts(key, out);
        } else if self.connection_count() >= self.config.connections_max {
            out.push(Out::ToDevice { device, frame: ServerFrame::ConnectRefused { server: self.config.id, epoch } });
            return;
        } else {
            self.check_silence_at(key, now + self.config.connection_timeout);
        }
        self.connections.insert(key.0, Connection::new(now, epoch).0);
        let job = FetchJob {
            device,
            epoch,
            rows: Vec::new(),
            reads_pending: 0,
            receipts: Vec::new(),
            ended: None,
            truncated_at: None,
            parts_received: 0,
            awaits_handover: false,
            handover_from: ServerId(0),
            handover_received: 0,
            handover_sent: None,
        };
        let req = self.req_ids.req(self.fetches.insert(job));
        out.push(Out::ToDevice { device, frame: ServerFrame::ConnectAccepted { server: self.config.id, epoch } });
        let (server, ttl) = (self.config.id, self.config.session_ttl);
        out.push(Out::SessionSet { req, device, server, epoch: epoch as u8, ttl, cursor });
        out.push(Out::Presence(PresenceInput::Online { device, hide_last_seen: hidden }));
    }

    /// Close a connection; returns whether it was open. What it had pushed unacknowledged
    /// goes back through the session store before the session is cleared: a connect
    /// elsewhere that finds the session still pointing here asks this server for a
    /// takeover, which waits for those reroutes; one that finds it cleared fetches them
    /// from the inbox.
    fn close(&mut self, device: DeviceId, out: &mut Vec<ChatServerOutput>) -> bool {
        let key = DeviceKey::of(device);
        let Some(connection) = self.connections.remove(key.0) else {
            return false;
        };
        if crate::plant::planted(crate::plant::Plant::ForgetUnackedOnClose) {
            self.unacked.take(key);
        }
        self.reroute_unacked(key, out);
        self.reroute_receipts(key, out);
        let epoch = Connection(connection).epoch_bits();
        out.push(ChatServerOutput::SessionClear { device, server: self.config.id, epoch });
        true
    }

    /// The device is alive (it beat): push again what it has not acknowledged for a
    /// while: its ACK, or the push, was lost; it will show a message once and ACK again.
    fn push_again_overdue(&mut self, key: DeviceKey, device: DeviceId, now: Time, out: &mut Vec<ChatServerOutput>) {
        let (ack_wait, repushes) = (self.config.ack_wait, &mut self.repushes);
        self.unacked.for_each_mut(key, |(msg, pushed_at)| {
            if *pushed_at + ack_wait <= now {
                *pushed_at = now;
                *repushes += 1;
                out.push(ChatServerOutput::ToDevice { device, frame: ServerFrame::Push { msg: *msg } });
            }
        });
    }

    /// The device heard receipt number `heard` and, the socket keeping their order, every
    /// one pushed before it: forget them.
    fn forget_heard_receipts(&mut self, key: DeviceKey, heard: u32, out: &mut Vec<ChatServerOutput>) {
        // Held in the order pushed, so in sequence order: those heard are a prefix.
        self.unheard_receipts.retain(key, |&(seq, _)| seq > heard);
        if let Some(&(seq, upto)) = self.stored_unheard.get(&key) {
            if seq <= heard {
                self.stored_unheard.remove(&key);
                out.push(ChatServerOutput::ForgetStoredReceipts { user: key.device().user, upto });
            }
        }
    }

    /// The connection ended: the receipts it may not have heard go back to the session
    /// store, with this server excluded (stored for the sender, or relayed to its new
    /// server).
    fn reroute_receipts(&mut self, key: DeviceKey, out: &mut Vec<ChatServerOutput>) {
        // Stored ones not heard stay stored as well: the phone may get them twice, and
        // its view takes each once.
        self.stored_unheard.remove(&key);
        for (_, receipt) in self.unheard_receipts.take(key) {
            self.route_receipt(receipt, Some(self.config.id), out);
        }
    }

    fn reroute_unacked(&mut self, key: DeviceKey, out: &mut Vec<ChatServerOutput>) {
        let slot = key.device().slot;
        for (msg, _) in self.unacked.take(key) {
            self.reroute(msg, slot, out);
        }
    }

    /// Hand `msg` for device `slot` back to the session store's route-or-inbox, treating
    /// this server as gone.
    fn reroute(&mut self, msg: ChatMessage, slot: DeviceSlot, out: &mut Vec<ChatServerOutput>) {
        *self.rerouting.entry(msg.to).or_default() += 1;
        out.push(ChatServerOutput::Reroute { msg, exclude: self.config.id, slot });
    }

    /// If `device` was given up to another server (`to`, when given) whose catch-up waits
    /// for the handover, hand `msg` over as part of it; returns whether it did.
    fn hand_over(
        &mut self,
        now: Time,
        device: DeviceId,
        to: Option<ServerId>,
        msg: ChatMessage,
        out: &mut Vec<ChatServerOutput>,
    ) -> bool {
        let Some(g) = self.given_up.get_mut(&DeviceKey::of(device)).filter(|g| to.is_none_or(|to| g.to == to)) else {
            return false;
        };
        g.parts += 1;
        let (to, req) = (g.to, g.req);
        self.send_handover(now, to, req, device.slot, msg, out);
        true
    }

    /// Hand `msg` for device `slot` over to server `to` (takeover `req`), keeping a copy
    /// (see `handed`).
    fn send_handover(
        &mut self,
        now: Time,
        to: ServerId,
        req: u64,
        slot: DeviceSlot,
        msg: ChatMessage,
        out: &mut Vec<ChatServerOutput>,
    ) {
        self.handed.push_back(Handed { at: now, to, slot, msg });
        out.push(ChatServerOutput::Handover { server: to, req, slot, msg });
    }

    fn push(&mut self, device: DeviceId, msg: ChatMessage, now: Time, out: &mut Vec<ChatServerOutput>) {
        if !self.is_connected(device) {
            if self.hand_over(now, device, None, msg, out) {
                // Routed here before the device moved: its new server is catching it up.
                return;
            }
            // Routed to a stale server: the device moved or left. Route again without
            // this server, which leaves an inbox pointer if the device is offline.
            self.reroute(msg, device.slot, out);
            return;
        }
        let key = DeviceKey::of(device);
        if self.unacked.count(key) < UNACKED_PER_CONNECTION_MAX {
            self.unacked.push(key, (msg, now));
        }
        out.push(ChatServerOutput::ToDevice { device, frame: ServerFrame::Push { msg } });
        if self.config.acks_to_forwarders && crate::plant::planted(crate::plant::Plant::AckedOnPush) {
            // Planted: the forwarders forget the forward before the device has it.
            out.push(ChatServerOutput::Acked { id: msg.id, conversation: msg.conversation, device });
        }
    }

    fn on_write_ack(&mut self, now: Time, req: u64, replica: u16, out: &mut Vec<ChatServerOutput>) {
        let key = self.req_ids.key(req);
        let Some(w) = self.writes.get_mut(key) else {
            return; // a replica answering after the quorum did: nothing left to do
        };
        if !w.acked_by.contains(&replica) {
            w.acked_by.push(replica);
        }
        // (Planted: durable after one replica's acknowledgement.)
        let needed =
            if crate::plant::planted(crate::plant::Plant::AckBeforeQuorum) { 1 } else { usize::from(self.quorum) };
        if w.durable || w.acked_by.len() < needed {
            return;
        }
        w.durable = true;
        let conversation = w.msg.conversation;
        self.publish_next(now, conversation, out);
    }

    /// Publish the first write of `conversation`'s queue, if it is durable and not yet
    /// published: one publish in flight per conversation, so retries keep the order.
    fn publish_next(&mut self, now: Time, conversation: ConversationId, out: &mut Vec<ChatServerOutput>) {
        let Some(&head) = self.unpublished.get(&conversation).and_then(|q| q.first()) else { return };
        let w = &self.writes[head];
        if !w.durable || w.publish.is_some() {
            return;
        }
        let (msg, device, epoch) = (w.msg, w.device, w.epoch);
        let key = self.publishes.insert(PendingPublish { msg, device, epoch, write: head });
        self.writes[head].publish = Some(key);
        self.publish_deadlines.push_back((now + self.config.publish_timeout, key));
        out.push(ChatServerOutput::Publish { req: self.req_ids.req(key), msg });
    }

    fn on_inbox_entry(
        &mut self,
        now: Time,
        req: u64,
        pos: InboxPos,
        msg: ChatMessage,
        out: &mut Vec<ChatServerOutput>,
    ) {
        let job_key = self.req_ids.key(req);
        let Some(job) = self.fetches.get_mut(job_key) else { return };
        job.parts_received += 1;
        if job.rows.len() >= FETCH_ENTRIES_MAX {
            // The rest comes with the next fetch: this one ends before the first left out.
            job.truncated_at = Some(job.truncated_at.map_or(pos, |t| t.min(pos)));
            self.try_finish_fetch(now, job_key, out);
            return;
        }
        let index = job.rows.len();
        job.rows.push(None);
        job.reads_pending += 1;
        let read = self.reads.insert(PendingRead { job: job_key, index, replied: SmallVec::new(), msg });
        self.read_deadlines.push_back((now + self.config.read_retry_after, read));
        out.push(ChatServerOutput::Read { req: self.req_ids.req(read), id: msg.id, conversation: msg.conversation });
    }

    fn on_read_reply(&mut self, now: Time, req: u64, held: bool, replica: u16, out: &mut Vec<ChatServerOutput>) {
        let key = self.req_ids.key(req);
        let Some(read) = self.reads.get_mut(key) else { return };
        if !read.replied.contains(&replica) {
            read.replied.push(replica);
        }
        // (Planted: a read waits for one answer more than the quorum it asked.)
        let needed = usize::from(self.quorum)
            + usize::from(crate::plant::planted(crate::plant::Plant::ReadWaitsForMoreReplicas));
        let (job_key, index, msg, done) = (read.job, read.index, read.msg, read.replied.len() >= needed);
        if done {
            self.reads.remove(key);
        }
        let Some(job) = self.fetches.get_mut(job_key) else { return };
        if held {
            job.rows[index] = Some(msg);
        }
        if done {
            job.reads_pending -= 1;
            self.try_finish_fetch(now, job_key, out);
        }
    }

    /// Push a finished fetch in inbox order, tell the device where the fetch ended, then
    /// hand over the stored receipts that came while its connection was not open here.
    fn try_finish_fetch(&mut self, now: Time, key: DefaultKey, out: &mut Vec<ChatServerOutput>) {
        let job = &self.fetches[key];
        let Some((end, parts_sent)) = job.ended else { return };
        if job.reads_pending > 0 || job.parts_received != parts_sent {
            return;
        }
        if job.awaits_handover && Some(job.handover_received) != job.handover_sent {
            return;
        }
        let job = self.fetches.remove(key).expect("checked above");
        let upto = job.truncated_at.unwrap_or(end).min(end);
        let device_key = DeviceKey::of(job.device);
        if self.awaiting_handover.get(&device_key) == Some(&key) {
            self.awaiting_handover.remove(&device_key);
            self.try_finish_takeover(device_key, out);
        }
        let same_connection = self.is_open(job.device, job.epoch);
        if !same_connection {
            // Gone again (or connected again since, with a fetch of its own): the inbox
            // still holds every entry for the next fetch. The receipts taken from the store
            // go to the device's newer connection here, if it has one (its own fetch may
            // have read the store before they could go back to it), else back to the store.
            // (The store keeps them too, until a phone hears them.)
            for (receipt, stored) in job.receipts {
                if self.is_connected(job.device) {
                    self.push_stored_receipt(job.device, receipt, stored, out);
                } else {
                    self.route_receipt(receipt, Some(self.config.id), out);
                }
            }
            return;
        }
        let mut rows = job.rows;
        if crate::plant::planted(crate::plant::Plant::CatchUpUnsorted) {
            rows.reverse();
        }
        // (Planted: the stored receipts are handed over only with inbox entries.)
        let drop_receipts = rows.is_empty() && crate::plant::planted(crate::plant::Plant::StoredReceiptsDropped);
        for msg in rows.into_iter().flatten() {
            self.push(job.device, msg, now, out);
        }
        out.push(ChatServerOutput::ToDevice { device: job.device, frame: ServerFrame::FetchDone { upto } });
        if !drop_receipts {
            for (receipt, stored) in job.receipts {
                self.push_stored_receipt(job.device, receipt, stored, out);
            }
        }
    }

    /// Push a receipt the store handed over under its number `stored`; the store is told
    /// to forget it once the phone heard it.
    fn push_stored_receipt(
        &mut self,
        device: DeviceId,
        receipt: Receipt,
        stored: u32,
        out: &mut Vec<ChatServerOutput>,
    ) {
        let seq = self.push_receipt(device, receipt, out);
        let newest = self.stored_unheard.get(&DeviceKey::of(device)).map_or(stored, |&(_, n)| n.max(stored));
        self.stored_unheard.insert(DeviceKey::of(device), (seq, newest));
    }

    /// Push `receipt` to `device`, connected here, and hold it until the device says it
    /// heard it. A device that hears none for long has the oldest handed back to the
    /// session store at the limit (it may get them twice; its view takes each once).
    fn push_receipt(&mut self, device: DeviceId, receipt: Receipt, out: &mut Vec<ChatServerOutput>) -> u32 {
        self.receipt_seq += 1;
        let seq = self.receipt_seq;
        let key = DeviceKey::of(device);
        if self.unheard_receipts.push(key, (seq, receipt)) > UNACKED_PER_CONNECTION_MAX {
            let (_, oldest) = self.unheard_receipts.pop_front(key).expect("held just now");
            self.route_receipt(oldest, Some(self.config.id), out);
        }
        out.push(ChatServerOutput::ToDevice { device, frame: ServerFrame::Receipt { receipt, seq } });
        seq
    }

    /// A recipient's device acknowledged a message: a 1:1 receipt updates the row's status
    /// and goes to the sender; a
    /// group member's is a row of the group receipts table, and the sender hears only of
    /// the aggregate (every member delivered, every member read) once a write completes it.
    fn member_receipt(&mut self, receipt: Receipt, out: &mut Vec<ChatServerOutput>) {
        if receipt.msg.conversation.group_id().is_none() {
            let (id, conversation) = (receipt.msg.id, receipt.msg.conversation);
            out.push(ChatServerOutput::WriteStatus { id, conversation, state: receipt.state });
            return self.send_receipt(receipt, out);
        }
        out.push(ChatServerOutput::WriteGroupReceipt { receipt });
    }

    /// Send a receipt to the server that minted the message (its Snowflake worker): the
    /// sender's server when it sent, and most likely still. That server shows it, or
    /// routes it on if the sender has left. If that server is known to be down, the
    /// session store routes it (or stores it) instead.
    fn send_receipt(&mut self, receipt: Receipt, out: &mut Vec<ChatServerOutput>) {
        let origin = ServerId(receipt.msg.id.worker());
        if origin == self.config.id {
            self.deliver_receipt(receipt, out);
        } else if self.down.contains(origin) {
            self.route_receipt(receipt, Some(origin), out);
        } else {
            out.push(ChatServerOutput::RelayReceipt { server: origin, receipt });
        }
    }

    fn route_receipt(&mut self, receipt: Receipt, exclude: Option<ServerId>, out: &mut Vec<ChatServerOutput>) {
        let req = self.req_ids.req(self.receipts.insert(receipt));
        out.push(ChatServerOutput::RouteReceipt { req, receipt, exclude });
    }

    /// A receipt for a sender this server should hold: show it, or route it again (it is
    /// stored if the sender is offline) when the sender is no longer here.
    fn deliver_receipt(&mut self, receipt: Receipt, out: &mut Vec<ChatServerOutput>) {
        let device = DeviceId::phone(receipt.msg.from);
        if self.is_connected(device) {
            self.push_receipt(device, receipt, out);
        } else {
            self.route_receipt(receipt, Some(self.config.id), out);
        }
    }
}

#[cfg(test)]
mod tests;
