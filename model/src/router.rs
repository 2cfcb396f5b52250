//! The router: a Kafka consumer that asks the session store to route each message (one
//! atomic route-or-inbox operation: the servers of the recipient's connected devices, and
//! an inbox pointer if any device is offline) and forwards it to those chat servers.
//! Offsets are committed only once a record's routing is done (at-least-once).
//!
//! A chat server that crashes loses what it had not yet pushed, and what it pushed that no
//! device acknowledged. The router keeps what it forwarded until the server says the
//! device acknowledged the push (`Acked`), or at most for as long as a server may hold a
//! push unacknowledged (its connection timeout and a margin: an acknowledgement lost on
//! its way is not waited for beyond it). When it learns a server is down (its
//! connections to it reset, or its health checks stop) it routes what it keeps for that
//! server again without it: to the device's new server if the device already
//! reconnected, else to the inbox, which the device fetches when it does. While the
//! server is down, what is routed to it goes the same way. Devices show each message
//! once, so a message delivered before the crash and replayed is dropped as a repeat.
//!
//! A device sends again what it has no ✓ for once it is connected again; the server that
//! takes the retry mints a new id, so the topic may carry one client message twice (the
//! first attempt's ✓ was lost with its connection, or its server died after publishing).
//! Every attempt of a client message is keyed by the same conversation, so it reaches the
//! same partition and router, in order: the router routes the first and drops the rest
//! (by the client's id, remembered for ten minutes by default). It also drops a record
//! older than the newest it routed for the same sender and conversation: that one came
//! through another server whose write was held up, its ✓ was due on a connection the
//! sender has left, and the sender sends it again under a newer id.

use crate::{ChatMessage, DeviceSlot, Exclusion, MessageId, PackedMessage, Route, ServerId, ServersDown, Table, Time};
use slotmap::{DefaultKey, SlotMap};
use std::collections::VecDeque;
use std::time::Duration;

/// Inputs to a router (besides records, see [`Router::on_record`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RouterInput {
    /// The session store routed a message (and wrote the inbox pointer if needed).
    Routed { req: u64, route: Route },
    /// A chat server is down (its connections reset, or its health checks failed).
    ServerDown { server: ServerId },
    /// A chat server is back (restarted, empty).
    ServerUp { server: ServerId },
    /// The session store routed again a message of `partition` this router (or one that
    /// had the partition before) sent back (`Reroute`) for device `slot`.
    Rerouted { msg: ChatMessage, route: Route, slot: DeviceSlot, partition: u32 },
    /// A rebalance of the consumer group gave this router `partition`, to consume from its
    /// committed `offset` (what another router routed past it comes again: the devices
    /// show it once).
    Assigned { partition: u32, offset: u64 },
    /// A rebalance took `partition` away: this router commits it no more.
    Revoked { partition: u32 },
    /// A chat server says device `slot` of its recipient acknowledged the push of message
    /// `id` of `partition`: the forward need not be kept for replay.
    Acked { partition: u32, id: MessageId, slot: DeviceSlot },
}

/// Effects a router asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RouterOutput {
    /// Route-or-inbox for the message's recipient in the session store.
    RouteMessage { req: u64, msg: ChatMessage },
    /// Forward the message to the chat server holding one of the recipient's devices.
    Forward { server: ServerId, slot: DeviceSlot, msg: ChatMessage },
    /// Commit the partition's offset: every record below it is routed.
    Commit { partition: u32, offset: u64 },
    /// Route-or-inbox again, treating `exclude` as gone (the server is down, and the
    /// device's session on it dates from before it went down).
    Reroute { msg: ChatMessage, exclude: Exclusion, slot: DeviceSlot },
}

/// What the routers remember of the records of one partition they routed: each client
/// message's first id, to drop its repeats, for the dedup window; the forwards kept for
/// replay; and the replays the session store has not answered yet. It lives in a state
/// store backed by a changelog topic (as Kafka Streams keeps one), so it outlives a router
/// that crashes and moves with the partition when the consumer group rebalances: a router
/// given the partition drops the repeats of what another routed, replays what another
/// forwarded to a server that goes down, and asks again for the replays whose answers
/// went to a router that died.
#[derive(Debug, Default)]
pub struct RoutedMemory {
    /// Client ids routed within the window, with the id they were routed under: a compact
    /// open-addressing table, an entry per message routed.
    routed_clients: Table<u64, MessageId>,
    /// The client key of each record routed, in order, for forgetting past the window;
    /// `routed_runs` says when they were routed: (ms, how many keys in a row), 8 bytes a
    /// record where (ms, key) pairs took 16.
    routed_order: VecDeque<u64>,
    routed_runs: VecDeque<(u32, u32)>,
    /// Forwards of this partition's records not yet acknowledged, kept for replay, by
    /// (message, device slot) (`kept_key`). Made for the forwards on their way at once.
    kept: Table<u64, Kept>,
    /// Replays asked of the session store and not answered yet.
    rerouting: Vec<Rerouting>,
}

/// A replay asked of the session store: route `msg` again for `slot` without `exclude`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rerouting {
    msg: ChatMessage,
    exclude: Exclusion,
    slot: DeviceSlot,
}

/// The partitions' memories a router works on (see [`RoutedMemory`]): each partition's,
/// by number.
pub trait Memories {
    fn memory(&mut self, partition: u32) -> &mut RoutedMemory;
}

impl Memories for [RoutedMemory] {
    fn memory(&mut self, partition: u32) -> &mut RoutedMemory {
        &mut self[partition as usize]
    }
}

impl Memories for RoutedMemory {
    /// A router of one partition.
    fn memory(&mut self, _partition: u32) -> &mut RoutedMemory {
        self
    }
}

/// What the memory says of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    New,
    /// The same record again (pushed again from the commit after a rebalance or a new
    /// leader): its routing may have died with another router, so it is routed again.
    Again,
    /// Another attempt of a client message routed under this id.
    Repeat(MessageId),
}

impl RoutedMemory {
    /// A memory made for `messages` messages remembered at once and `forwards` forwards
    /// kept: the table of client ids and the queue of forwards hold them without growing.
    pub fn with_capacity(messages: usize, forwards: usize) -> RoutedMemory {
        RoutedMemory {
            routed_clients: Table::with_capacity(messages),
            kept: Table::with_capacity(forwards),
            ..RoutedMemory::default()
        }
    }

    /// A hint that a record of `msg` comes soon: the table slots it will look up are
    /// loaded meanwhile.
    #[inline]
    pub fn prefetch(&self, msg: &ChatMessage) {
        self.routed_clients.prefetch(msg.client_id().key());
    }

    /// Judge `msg` at `now`, remembering it if it is new: for `window` (forgetting what is
    /// older first), or for good (`None`: nothing is forgotten, so no order is kept).
    fn judge(&mut self, now: Time, msg: &ChatMessage, window: Option<Duration>) -> Seen {
        if let Some(window) = window {
            self.forget(now, window);
        }
        // Mostly new records: the table is probed once, by inserting, and the rare repeat
        // puts back what it replaced (a lookup that misses costs as much as an insert).
        let client = msg.client_id().key();
        if let Some(first) = self.routed_clients.insert(client, msg.id) {
            self.routed_clients.insert(client, first);
            return if first == msg.id { Seen::Again } else { Seen::Repeat(first) };
        }
        if window.is_some() {
            self.routed_order.push_back(client);
            let ms = now.as_ms_u32();
            match self.routed_runs.back_mut() {
                Some((at_ms, count)) if *at_ms == ms => *count += 1,
                _ => self.routed_runs.push_back((ms, 1)),
            }
        }
        Seen::New
    }

    /// Forget what was routed before `now - window`.
    fn forget(&mut self, now: Time, window: Duration) {
        let remember_from = now.as_ms().saturating_sub(window.as_millis() as u64);
        while let Some(&(at_ms, count)) = self.routed_runs.front() {
            if u64::from(at_ms) >= remember_from {
                break;
            }
            self.routed_runs.pop_front();
            for client in self.routed_order.drain(..count as usize) {
                self.routed_clients.remove(client);
            }
        }
    }

    /// Messages remembered.
    pub fn len(&self) -> usize {
        self.routed_clients.len()
    }

    /// Forwards kept for replay.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    /// The messages of the replays asked of the session store and not answered (held for
    /// a router of the partition).
    pub fn rerouting(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.rerouting.iter().map(|r| r.msg.id)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.routed_clients.is_empty()
    }
}

/// The key of a forward in `RoutedMemory::kept`: its message and device slot. Ids stay
/// below 2^63 (a Snowflake's top bit is clear), so the key is never the table's empty
/// marker.
#[inline]
fn kept_key(id: MessageId, slot: DeviceSlot) -> u64 {
    debug_assert!(id.0 < 1 << 63, "a Snowflake id's top bit is clear");
    (id.0 << 1) | u64::from(slot.0 & 1)
}

/// A forward kept for replay: when, to which server and device slot, what (packed: a
/// router routes 1:1 messages, whose conversation is their two users). 36 bytes, where the
/// message unpacked made it 48.
#[derive(Clone, Copy, Debug, Default)]
struct Kept {
    at_ms: u32,
    server: ServerId,
    slot: DeviceSlot,
    msg: PackedMessage,
}

const _: () = assert!(std::mem::size_of::<Kept>() == 36);

impl Kept {
    fn new(at: Time, server: ServerId, slot: DeviceSlot, msg: &ChatMessage) -> Kept {
        debug_assert!(
            msg.conversation.group_id().is_none(),
            "routers route 1:1 messages (a group's go to the fanouts)"
        );
        Kept { at_ms: at.as_ms_u32(), server, slot, msg: PackedMessage::of(msg) }
    }

    /// The message forwarded.
    fn message(&self) -> ChatMessage {
        // A 1:1 message names its recipient itself.
        self.msg.message(crate::UserId::GROUP)
    }
}

/// Take the forwards `lost` names out of `kept`, in the order they were made (then by
/// message and slot: the table's own order is its hashing's).
fn take_kept(kept: &mut Table<u64, Kept>, lost: impl Fn(&Kept) -> bool) -> Vec<Kept> {
    let mut taken = Vec::new();
    if kept.is_empty() {
        return taken;
    }
    kept.retain(|_, k| {
        let lost = lost(k);
        if lost {
            taken.push(*k);
        }
        !lost
    });
    taken.sort_unstable_by_key(|k| (k.at_ms, k.msg.id(), k.slot));
    taken
}

/// How often a router forgets the forwards kept past the retention (an acknowledgement
/// lost on its way): each is kept for the retention, and at most this much longer.
const KEPT_SWEEP: Duration = Duration::from_secs(1);

/// Tracks which offsets of one partition are done and how far the commit may advance.
/// Records are routed concurrently, so they finish out of order; the committed offset is
/// the first offset not yet done.
#[derive(Clone, Debug, Default)]
pub struct CommitTracker {
    /// Every offset below this is done.
    committable: u64,
    /// Done flags of offsets from `committable` on.
    window: VecDeque<bool>,
    /// The last offset reported by `poll_commit`.
    reported: u64,
}

/// The most records a partition may have in flight at a router. The broker stops pushing
/// beyond this, so the window is bounded.
pub const ROUTER_IN_FLIGHT_PER_PARTITION_MAX: u64 = 65_536;

impl CommitTracker {
    /// A tracker resuming at the committed offset `from`.
    pub fn starting_at(from: u64) -> CommitTracker {
        CommitTracker { committable: from, window: VecDeque::new(), reported: from }
    }

    /// Mark `offset` done. Offsets below the commit point are redeliveries: ignored.
    pub fn complete(&mut self, offset: u64) {
        if offset < self.committable {
            return;
        }
        let i = (offset - self.committable) as usize;
        assert!((i as u64) < ROUTER_IN_FLIGHT_PER_PARTITION_MAX, "commit window overflow");
        if self.window.len() <= i {
            self.window.resize(i + 1, false);
        }
        self.window[i] = true;
        while self.window.front() == Some(&true) {
            self.window.pop_front();
            self.committable += 1;
        }
    }

    /// The offset to commit, if it moved since the last call.
    pub fn poll_commit(&mut self) -> Option<u64> {
        (self.committable > self.reported).then(|| {
            self.reported = self.committable;
            self.committable
        })
    }
}

#[derive(Debug)]
struct PendingRoute {
    partition: u32,
    offset: u64,
    msg: ChatMessage,
}

/// One router instance (a member of the `routers` consumer group).
#[derive(Debug)]
pub struct Router {
    lookups: SlotMap<DefaultKey, PendingRoute>,
    /// The ids of this incarnation's route requests.
    req_ids: crate::ReqIds,
    /// Indexed by partition number; `None` for partitions assigned elsewhere.
    trackers: Vec<Option<CommitTracker>>,
    commit_interval: Duration,
    next_commit_at: Time,
    /// When the forwards kept past the retention are next forgotten.
    next_sweep_at: Time,
    /// How long forwards are kept for replay (in the partitions' memories).
    retain: Duration,
    /// How long routed messages are remembered, to drop repeats.
    dedup_window: Option<Duration>,
    /// Chat servers known to be down.
    down: ServersDown,
    /// When each chat server was last learnt to go down (ms; an entry a server): a
    /// partition taken over later replays what was forwarded to a server before it went
    /// down, even if it is back by then (it came back empty).
    went_down: Vec<(ServerId, u32)>,
    /// Messages routed again because their server went down.
    replayed: u64,
    /// Records dropped as repeats of a client message routed already.
    repeats: u64,
    /// Repeats dropped, with the id their client message was routed under: the ✓ of a
    /// retry names the retry's id, its recipients show the first one.
    aliases: Vec<(MessageId, MessageId)>,
}

impl Router {
    /// A router owning `partitions` (of `partition_count`), resuming each at its committed
    /// offset, committing every `commit_interval`.
    pub fn new(partition_count: u32, partitions: &[(u32, u64)], commit_interval: Duration) -> Router {
        let mut trackers = vec![None; partition_count as usize];
        for &(p, committed) in partitions {
            trackers[p as usize] = Some(CommitTracker::starting_at(committed));
        }
        Router {
            lookups: SlotMap::new(),
            req_ids: crate::ReqIds::default(),
            trackers,
            commit_interval,
            next_commit_at: Time::ZERO,
            next_sweep_at: Time::ZERO,
            retain: Duration::from_secs(60),
            dedup_window: Some(Duration::from_secs(600)),
            went_down: Vec::new(),
            down: ServersDown::default(),
            replayed: 0,
            repeats: 0,
            aliases: Vec::new(),
        }
    }

    /// Repeats dropped: (the repeat's id, the id its client message was routed under).
    pub fn take_aliases(&mut self) -> Vec<(MessageId, MessageId)> {
        std::mem::take(&mut self.aliases)
    }

    /// Records dropped as repeats of a client message routed already (a retried send).
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// A router restarted `incarnation` times before this start: answers to its
    /// predecessors' route requests are ignored (see `ReqIds`).
    pub fn with_incarnation(mut self, incarnation: u32) -> Router {
        self.req_ids = crate::ReqIds::new(incarnation);
        self
    }

    /// Keep forwards until acknowledged, for at most `retain` (default 60 s; zero: keep
    /// none): at least as long as a chat server holds a push unacknowledged before it
    /// hands it back itself.
    pub fn with_retain(mut self, retain: Duration) -> Router {
        self.retain = retain;
        self
    }

    /// Remember what was routed for `window` (default 10 minutes), to drop repeats: as long as a device may be away with a send it has no ✓ for.
    /// `None`: remember everything (a run that ends before the window passes forgets
    /// nothing anyway, and need not keep the order to forget it in).
    pub fn with_dedup_window(mut self, window: Option<Duration>) -> Router {
        self.dedup_window = window;
        self
    }

    /// Messages routed again because their server went down.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Forward `msg` (of `memory`'s partition) to `server` for `slot`, or, if the server
    /// is down, route it again without it.
    fn forward(
        &mut self,
        now: Time,
        memory: &mut RoutedMemory,
        (server, slot): (ServerId, DeviceSlot),
        msg: ChatMessage,
        out: &mut Vec<RouterOutput>,
    ) {
        if self.down.contains(server) {
            if crate::plant::planted(crate::plant::Plant::DropStaleSession) {
                return;
            }
            let exclude = Exclusion::new(server, self.went_down_at(server).unwrap_or(now));
            Self::reroute(memory, Rerouting { msg, exclude, slot }, out);
            return;
        }
        if !self.retain.is_zero() {
            memory.kept.insert(kept_key(msg.id, slot), Kept::new(now, server, slot, &msg));
        }
        out.push(RouterOutput::Forward { server, slot, msg });
    }

    /// Ask the session store to route again, and hold the question in the partition's
    /// memory until it is answered.
    fn reroute(memory: &mut RoutedMemory, r: Rerouting, out: &mut Vec<RouterOutput>) {
        memory.rerouting.push(r);
        out.push(RouterOutput::Reroute { msg: r.msg, exclude: r.exclude, slot: r.slot });
    }

    /// When `server` was last learnt to go down, if it was.
    fn went_down_at(&self, server: ServerId) -> Option<Time> {
        self.went_down.iter().find(|w| w.0 == server).map(|w| Time::from_ms(u64::from(w.1)))
    }

    /// The partitions this router consumes.
    fn owned(&self) -> Vec<u32> {
        (0..self.trackers.len() as u32).filter(|&p| self.owns(p)).collect()
    }

    /// Take over `partition`'s memory: ask again for the replays it holds (their answers
    /// may have gone to a router that died; an answer that comes twice is used once), and
    /// replay what it kept for servers that went down after the forward (down now, or
    /// down and back since: they came back empty).
    fn take_over(&mut self, memory: &mut RoutedMemory, out: &mut Vec<RouterOutput>) {
        for r in &memory.rerouting {
            out.push(RouterOutput::Reroute { msg: r.msg, exclude: r.exclude, slot: r.slot });
        }
        let went_down = &self.went_down;
        let lost = |k: &Kept| went_down.iter().any(|&(s, at_ms)| s == k.server && at_ms >= k.at_ms);
        for k in take_kept(&mut memory.kept, lost) {
            self.replayed += 1;
            // About the sessions from before it went down: a device back on it since (it
            // restarted) is routed to it.
            let down_at = self.went_down_at(k.server).expect("it went down");
            let exclude = Exclusion::new(k.server, down_at);
            Self::reroute(memory, Rerouting { msg: k.message(), exclude, slot: k.slot }, out);
        }
    }

    /// Take over the memories of the partitions this router was started with (a router
    /// restarted after a crash: see `take_over`).
    pub fn resume(&mut self, memories: &mut (impl Memories + ?Sized), out: &mut Vec<RouterOutput>) {
        for p in self.owned() {
            self.take_over(memories.memory(p), out);
        }
    }

    /// Whether this router consumes `partition` (it was assigned it and not revoked).
    pub fn owns(&self, partition: u32) -> bool {
        self.trackers.get(partition as usize).is_some_and(Option::is_some)
    }

    /// Routes waiting on the session store.
    pub fn in_flight(&self) -> usize {
        self.lookups.len()
    }

    /// The routes waiting on the session store, each as (its message, its `req` id), in
    /// no particular order.
    pub fn waiting(&self) -> impl Iterator<Item = (crate::MessageId, u64)> + '_ {
        self.lookups.iter().map(|(key, p)| (p.msg.id, self.req_ids.req(key)))
    }

    /// A record of `partition` at `offset`, delivered by the broker, judged against the
    /// partition's `memory` (see [`RoutedMemory`]).
    ///
    /// The same record delivered again (pushed again from the commit) is routed again: the
    /// router that routed it may have died before it was done, and the devices show each
    /// message once.
    /// Another attempt of a client message routed already is done with. A record older
    /// than one routed before in its conversation (the two came through different chat
    /// servers, this one's write held up, or their clocks disagree) is routed like any
    /// other: the recipient's devices put it in its place.
    pub fn on_record(
        &mut self,
        now: Time,
        partition: u32,
        offset: u64,
        msg: ChatMessage,
        memory: &mut RoutedMemory,
        out: &mut Vec<RouterOutput>,
    ) {
        match memory.judge(now, &msg, self.dedup_window) {
            Seen::New | Seen::Again => {
                if crate::plant::planted(crate::plant::Plant::CommitBeforeRoute) {
                    if let Some(Some(t)) = self.trackers.get_mut(partition as usize) {
                        t.complete(offset);
                    }
                }
                let req = self.req_ids.req(self.lookups.insert(PendingRoute { partition, offset, msg }));
                out.push(RouterOutput::RouteMessage { req, msg });
                return;
            }
            Seen::Repeat(first) => {
                self.repeats += 1;
                self.aliases.push((msg.id, first));
            }
        }
        if let Some(Some(t)) = self.trackers.get_mut(partition as usize) {
            t.complete(offset);
        }
    }

    /// Handle one input, appending effects to `out`; `memories` holds the partitions'
    /// memories.
    pub fn handle(
        &mut self,
        now: Time,
        input: RouterInput,
        memories: &mut (impl Memories + ?Sized),
        out: &mut Vec<RouterOutput>,
    ) {
        match input {
            RouterInput::Routed { req, route } => {
                let Some(r) = self.lookups.remove(self.req_ids.key(req)) else {
                    return;
                };
                let memory = memories.memory(r.partition);
                for (slot, server) in route.forwards() {
                    self.forward(now, memory, (server, slot), r.msg, out);
                }
                if let Some(Some(t)) = self.trackers.get_mut(r.partition as usize) {
                    t.complete(r.offset);
                }
            }
            RouterInput::ServerDown { server } => {
                if !self.down.insert(server) {
                    return;
                }
                self.went_down.retain(|&(s, _)| s != server);
                self.went_down.push((server, now.as_ms_u32()));
                // Everything forwarded to it that it may not have delivered, in order.
                for p in self.owned() {
                    let memory = memories.memory(p);
                    for k in take_kept(&mut memory.kept, |k| k.server == server) {
                        self.replayed += 1;
                        let exclude = Exclusion::new(server, now);
                        Self::reroute(memory, Rerouting { msg: k.message(), exclude, slot: k.slot }, out);
                    }
                }
            }
            RouterInput::ServerUp { server } => self.down.remove(server),
            RouterInput::Acked { partition, id, slot } => {
                if self.owns(partition) {
                    memories.memory(partition).kept.remove(kept_key(id, slot));
                }
            }
            RouterInput::Assigned { partition, offset } => {
                if let Some(t) = self.trackers.get_mut(partition as usize) {
                    *t = Some(CommitTracker::starting_at(offset));
                    self.take_over(memories.memory(partition), out);
                }
            }
            RouterInput::Revoked { partition } => {
                if let Some(t) = self.trackers.get_mut(partition as usize) {
                    *t = None;
                }
            }
            RouterInput::Rerouted { msg, route, slot, partition } => {
                // The question leaves the partition's memory; an answer to a question
                // asked twice (by a router that died and by the one that took over) is
                // used once.
                let memory = memories.memory(partition);
                let Some(i) = memory.rerouting.iter().position(|r| r.msg.id == msg.id && r.slot == slot) else {
                    return;
                };
                memory.rerouting.swap_remove(i);
                // Only this slot's part of the route: the other devices had the message
                // routed to them already. A device still on a server that is down is
                // routed again without that server (its session moves only when it
                // reconnects, so this ends); one without a server got an inbox pointer.
                if let Some(server) = route.forward[usize::from(slot.0)] {
                    self.forward(now, memory, (server, slot), msg, out);
                }
            }
        }
    }

    /// Forget forwards past the retention every `KEPT_SWEEP`, and commit progress every
    /// commit interval. Call once per tick.
    pub fn handle_timeout(&mut self, now: Time, memories: &mut (impl Memories + ?Sized), out: &mut Vec<RouterOutput>) {
        if now >= self.next_sweep_at {
            self.next_sweep_at = now + KEPT_SWEEP;
            let keep_from = now.as_ms().saturating_sub(self.retain.as_millis() as u64);
            for p in (0..self.trackers.len() as u32).filter(|&p| self.owns(p)) {
                let kept = &mut memories.memory(p).kept;
                if !kept.is_empty() {
                    kept.retain(|_, k| u64::from(k.at_ms) >= keep_from);
                }
            }
        }
        if now < self.next_commit_at {
            return;
        }
        self.next_commit_at = now + self.commit_interval;
        for (p, t) in self.trackers.iter_mut().enumerate() {
            if let Some(offset) = t.as_mut().and_then(CommitTracker::poll_commit) {
                out.push(RouterOutput::Commit { partition: p as u32, offset });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConversationId, MessageId, UserId};

    fn msg(to: u32) -> ChatMessage {
        ChatMessage {
            id: MessageId(u64::from(to)),
            conversation: ConversationId::direct(UserId(0), UserId(to)),
            from: UserId(0),
            to: UserId(to),
            client_seq: to,
            sent_at: Time::ZERO,
        }
    }

    const INBOX_ONLY: Route = Route { forward: [None, None], inbox: true };

    /// Server `server` excluded as of `ms`.
    fn x(server: u16, ms: u64) -> Exclusion {
        Exclusion::new(ServerId(server), Time::from_ms(ms))
    }

    fn lookup(r: &mut Router, m: &mut RoutedMemory, partition: u32, offset: u64, to: u32) -> u64 {
        let mut out = Vec::new();
        r.on_record(Time::ZERO, partition, offset, msg(to), m, &mut out);
        match out[..] {
            [RouterOutput::RouteMessage { req, msg: m }] if m == msg(to) => req,
            _ => panic!("{out:?}"),
        }
    }

    /// A router that routed message 5 to the phone on server 9 and the web client on 2,
    /// its partition's memory, and what it put out.
    fn routed_to_9_and_2() -> (Router, RoutedMemory, Vec<RouterOutput>) {
        let mut r = Router::new(1, &[(0, 0)], Duration::from_millis(100));
        let mut m = RoutedMemory::default();
        let req = lookup(&mut r, &mut m, 0, 0, 5);
        let mut out = Vec::new();
        let route = Route { forward: [Some(ServerId(9)), Some(ServerId(2))], inbox: false };
        r.handle(Time::ZERO, RouterInput::Routed { req, route }, &mut m, &mut out);
        (r, m, out)
    }

    #[test]
    fn every_connected_device_gets_a_forward() {
        let (r, _, out) = routed_to_9_and_2();
        assert_eq!(
            out,
            vec![
                RouterOutput::Forward { server: ServerId(9), slot: DeviceSlot(0), msg: msg(5) },
                RouterOutput::Forward { server: ServerId(2), slot: DeviceSlot(1), msg: msg(5) },
            ]
        );
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn an_offline_recipient_needs_no_forward() {
        let mut r = Router::new(1, &[(0, 0)], Duration::from_millis(100));
        let mut m = RoutedMemory::default();
        let req = lookup(&mut r, &mut m, 0, 0, 5);
        let mut out = Vec::new();
        r.handle(Time::ZERO, RouterInput::Routed { req, route: INBOX_ONLY }, &mut m, &mut out);
        assert!(out.is_empty(), "the session store already wrote the inbox pointer");
    }

    #[test]
    fn an_answer_to_the_previous_incarnations_request_is_not_taken_for_this_ones() {
        // The router crashed with a route request held by a failing-over session shard;
        // restarted, it asks again for another message under the same table slot.
        let mut before = Router::new(1, &[(0, 0)], Duration::from_millis(100));
        let mut after = Router::new(1, &[(0, 0)], Duration::from_millis(100)).with_incarnation(1);
        let mut m = RoutedMemory::default();
        let old = lookup(&mut before, &mut m, 0, 0, 5);
        let mut m = RoutedMemory::default();
        let new = lookup(&mut after, &mut m, 0, 1, 6);
        assert_ne!(old, new);
        let mut out = Vec::new();
        after.handle(Time::ZERO, RouterInput::Routed { req: old, route: INBOX_ONLY }, &mut m, &mut out);
        assert!(out.is_empty() && after.in_flight() == 1, "the old answer settles nothing: {out:?}");
    }

    #[test]
    fn commit_advances_only_over_contiguous_done_offsets() {
        let mut r = Router::new(2, &[(1, 10)], Duration::from_millis(100));
        let mut m = RoutedMemory::default();
        let a = lookup(&mut r, &mut m, 1, 10, 1);
        let b = lookup(&mut r, &mut m, 1, 11, 2);
        let mut out = Vec::new();
        r.handle(Time::ZERO, RouterInput::Routed { req: b, route: INBOX_ONLY }, &mut m, &mut out);
        out.clear();
        r.handle_timeout(Time::ZERO, &mut m, &mut out);
        assert!(out.is_empty(), "offset 10 is not done yet, nothing to commit");
        r.handle(Time::ZERO, RouterInput::Routed { req: a, route: INBOX_ONLY }, &mut m, &mut out);
        out.clear();
        r.handle_timeout(Time::from_ms(50), &mut m, &mut out);
        assert!(out.is_empty(), "commits wait for the commit interval");
        r.handle_timeout(Time::from_ms(100), &mut m, &mut out);
        assert_eq!(out, vec![RouterOutput::Commit { partition: 1, offset: 12 }]);
        out.clear();
        r.handle_timeout(Time::from_ms(200), &mut m, &mut out);
        assert!(out.is_empty(), "an unchanged offset is not committed again");
    }

    #[test]
    fn redelivered_records_below_the_commit_point_are_harmless() {
        let mut t = CommitTracker::starting_at(5);
        t.complete(3);
        assert_eq!(t.poll_commit(), None);
        t.complete(5);
        assert_eq!(t.poll_commit(), Some(6));
    }

    #[test]
    fn stale_reply_is_ignored() {
        let mut r = Router::new(1, &[(0, 0)], Duration::from_millis(100));
        let (mut m, mut out) = (RoutedMemory::default(), Vec::new());
        r.handle(Time::ZERO, RouterInput::Routed { req: 77, route: INBOX_ONLY }, &mut m, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_retried_send_is_routed_once() {
        let mut r = Router::new(1, &[(0, 0)], Duration::from_millis(100));
        let mut m = RoutedMemory::default();
        lookup(&mut r, &mut m, 0, 0, 5);
        let retry = ChatMessage { id: MessageId(99), ..msg(5) };
        let mut out = Vec::new();
        r.on_record(Time::ZERO, 0, 1, retry, &mut m, &mut out);
        assert!(out.is_empty(), "the same client message under a new id: {out:?}");
        assert_eq!(r.repeats(), 1);
        assert_eq!(r.take_aliases(), vec![(MessageId(99), msg(5).id)]);
        // Past the window (ten minutes) it would be routed again.
        r.handle_timeout(Time::from_secs(601), &mut m, &mut out);
        out.clear();
        r.on_record(Time::from_secs(601), 0, 2, retry, &mut m, &mut out);
        assert!(matches!(out[..], [RouterOutput::RouteMessage { .. }]));
    }

    #[test]
    fn without_a_window_every_routed_message_is_remembered() {
        let mut r = Router::new(1, &[(0, 0)], Duration::from_millis(100)).with_dedup_window(None);
        let mut m = RoutedMemory::default();
        lookup(&mut r, &mut m, 0, 0, 5);
        let retry = ChatMessage { id: MessageId(99), ..msg(5) };
        let mut out = Vec::new();
        r.on_record(Time::from_secs(3_600), 0, 1, retry, &mut m, &mut out);
        assert!(out.is_empty(), "an hour on, still a repeat: {out:?}");
        assert_eq!((r.repeats(), m.len()), (1, 1));
    }

    #[test]
    fn a_router_keeping_no_forwards_keeps_none() {
        let mut r = Router::new(1, &[(0, 0)], Duration::from_millis(100)).with_retain(Duration::ZERO);
        let mut m = RoutedMemory::default();
        let req = lookup(&mut r, &mut m, 0, 0, 5);
        let mut out = Vec::new();
        let route = Route { forward: [Some(ServerId(9)), None], inbox: false };
        r.handle(Time::ZERO, RouterInput::Routed { req, route }, &mut m, &mut out);
        assert_eq!(out.len(), 1, "forwarded: {out:?}");
        assert_eq!(m.kept(), 0);
    }

    #[test]
    fn what_went_to_a_server_that_goes_down_is_routed_again_without_it() {
        let (mut r, mut m, mut out) = routed_to_9_and_2();
        out.clear();
        r.handle(Time::from_ms(5), RouterInput::ServerDown { server: ServerId(9) }, &mut m, &mut out);
        assert_eq!(out, vec![RouterOutput::Reroute { msg: msg(5), exclude: x(9, 5), slot: DeviceSlot(0) }]);
        assert_eq!(r.replayed(), 1);
        // The store says the phone is still on 9 (it has not reconnected) and the web on 2:
        // the web already had it (only the phone's slot is decided here) and the phone's
        // copy went to the inbox. Routed again without 9, nothing more is forwarded.
        out.clear();
        let route = Route { forward: [None, Some(ServerId(2))], inbox: true };
        r.handle(
            Time::from_ms(6),
            RouterInput::Rerouted { msg: msg(5), route, slot: DeviceSlot(0), partition: 0 },
            &mut m,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        // While 9 is down, what is routed to it goes back to the store at once.
        let req = lookup(&mut r, &mut m, 0, 1, 6);
        out.clear();
        let route = Route { forward: [Some(ServerId(9)), None], inbox: false };
        r.handle(Time::from_ms(7), RouterInput::Routed { req, route }, &mut m, &mut out);
        assert_eq!(out, vec![RouterOutput::Reroute { msg: msg(6), exclude: x(9, 5), slot: DeviceSlot(0) }]);
        // The phone reconnected to 4 meanwhile: forwarded there.
        out.clear();
        let route = Route { forward: [Some(ServerId(4)), None], inbox: false };
        r.handle(
            Time::from_ms(8),
            RouterInput::Rerouted { msg: msg(6), route, slot: DeviceSlot(0), partition: 0 },
            &mut m,
            &mut out,
        );
        assert_eq!(out, vec![RouterOutput::Forward { server: ServerId(4), slot: DeviceSlot(0), msg: msg(6) }]);
        r.handle(Time::from_ms(9), RouterInput::ServerUp { server: ServerId(9) }, &mut m, &mut out);
        assert_eq!(m.kept(), 2, "the forwards to 2 and 4");
    }

    #[test]
    fn an_older_record_of_a_sender_in_a_conversation_is_routed() {
        let mut r = Router::new(1, &[(0, 0)], Duration::from_millis(100));
        let mut m = RoutedMemory::default();
        let newer = ChatMessage { id: MessageId(50), client_seq: 8, ..msg(5) };
        let older = ChatMessage { id: MessageId(40), client_seq: 7, ..msg(5) };
        let mut out = Vec::new();
        r.on_record(Time::ZERO, 0, 0, newer, &mut m, &mut out);
        out.clear();
        r.on_record(Time::ZERO, 0, 1, older, &mut m, &mut out);
        assert!(matches!(out[..], [RouterOutput::RouteMessage { msg, .. }] if msg == older), "{out:?}");
        assert_eq!(r.repeats(), 0);
    }

    #[test]
    fn the_memory_of_a_partition_moves_with_it_to_another_router() {
        let mut m = RoutedMemory::default();
        let mut first = Router::new(1, &[(0, 0)], Duration::from_millis(100));
        lookup(&mut first, &mut m, 0, 0, 5);
        // The first router dies before the session store answers; a rebalance gives the
        // partition to another, from the commit (0): the record comes again, and is routed
        // again (the first routing died); the sender's retry is a repeat.
        let mut second = Router::new(1, &[], Duration::from_millis(100));
        second.handle(Time::from_secs(10), RouterInput::Assigned { partition: 0, offset: 0 }, &mut m, &mut Vec::new());
        let req = lookup(&mut second, &mut m, 0, 0, 5);
        let mut out = Vec::new();
        let retry = ChatMessage { id: MessageId(99), ..msg(5) };
        second.on_record(Time::from_secs(10), 0, 1, retry, &mut m, &mut out);
        assert!(out.is_empty(), "the first routed it: {out:?}");
        assert_eq!(second.take_aliases(), vec![(MessageId(99), MessageId(5))]);
        second.handle(Time::from_secs(10), RouterInput::Routed { req, route: INBOX_ONLY }, &mut m, &mut out);
        second.handle_timeout(Time::from_secs(10), &mut m, &mut out);
        assert_eq!(out, vec![RouterOutput::Commit { partition: 0, offset: 2 }]);
        // Taken away again, it commits it no more.
        second.handle(Time::from_secs(11), RouterInput::Revoked { partition: 0 }, &mut m, &mut Vec::new());
        let mut out = Vec::new();
        second.on_record(Time::from_secs(11), 0, 2, msg(6), &mut m, &mut out);
        second.handle_timeout(Time::from_secs(12), &mut m, &mut out);
        assert!(!out.iter().any(|o| matches!(o, RouterOutput::Commit { .. })), "{out:?}");
    }

    #[test]
    fn a_replay_whose_answer_died_with_its_router_is_asked_again_by_the_next() {
        // Router 1 forwarded message 5 to the phone on 9; 9 went down, router 1 asked the
        // session store to route it again, and died before the answer came.
        let (mut first, mut m, _) = routed_to_9_and_2();
        let mut out = Vec::new();
        first.handle(Time::from_ms(5), RouterInput::ServerDown { server: ServerId(9) }, &mut m, &mut out);
        assert_eq!(m.rerouting().collect::<Vec<_>>(), vec![msg(5).id]);
        drop(first);
        // The partition's next router asks again when it takes the partition over.
        let mut second = Router::new(1, &[], Duration::from_millis(100));
        out.clear();
        second.handle(Time::from_secs(3), RouterInput::Assigned { partition: 0, offset: 1 }, &mut m, &mut out);
        let again = RouterOutput::Reroute { msg: msg(5), exclude: x(9, 5), slot: DeviceSlot(0) };
        assert_eq!(out, vec![again]);
        // Both answers come (the first was held up, not lost): the phone, now on 4, gets
        // one forward.
        let route = Route { forward: [Some(ServerId(4)), None], inbox: false };
        let answer = RouterInput::Rerouted { msg: msg(5), route, slot: DeviceSlot(0), partition: 0 };
        out.clear();
        second.handle(Time::from_secs(3), answer, &mut m, &mut out);
        second.handle(Time::from_secs(3), answer, &mut m, &mut out);
        assert_eq!(out, vec![RouterOutput::Forward { server: ServerId(4), slot: DeviceSlot(0), msg: msg(5) }]);
        assert_eq!(m.rerouting().count(), 0);
    }

    #[test]
    fn a_forward_its_device_acknowledged_is_not_replayed() {
        // Message 5 went to the phone on 9 and the web client on 2; the phone acknowledged.
        let (mut r, mut m, _) = routed_to_9_and_2();
        assert_eq!(m.kept(), 2);
        let mut out = Vec::new();
        let acked = RouterInput::Acked { partition: 0, id: msg(5).id, slot: DeviceSlot(0) };
        r.handle(Time::from_ms(80), acked, &mut m, &mut out);
        assert_eq!(m.kept(), 1);
        r.handle(Time::from_ms(90), RouterInput::ServerDown { server: ServerId(9) }, &mut m, &mut out);
        assert!(out.is_empty(), "the phone had it: {out:?}");
        // The web client's forward, unacknowledged, is replayed when its server goes down.
        r.handle(Time::from_ms(95), RouterInput::ServerDown { server: ServerId(2) }, &mut m, &mut out);
        assert_eq!(out, vec![RouterOutput::Reroute { msg: msg(5), exclude: x(2, 95), slot: DeviceSlot(1) }]);
        assert_eq!((r.replayed(), m.kept()), (1, 0));
    }

    #[test]
    fn an_acknowledgement_for_a_partition_not_owned_changes_nothing() {
        let (mut r, mut m, _) = routed_to_9_and_2();
        let mut out = Vec::new();
        r.handle(Time::from_ms(1), RouterInput::Revoked { partition: 0 }, &mut m, &mut out);
        let acked = RouterInput::Acked { partition: 0, id: msg(5).id, slot: DeviceSlot(0) };
        r.handle(Time::from_ms(80), acked, &mut m, &mut out);
        assert_eq!(m.kept(), 2, "the partition's router now deals with it");
    }

    #[test]
    fn an_unacknowledged_forward_is_kept_for_the_retention_and_no_more_than_a_sweep_longer() {
        let mut r = Router::new(1, &[(0, 0)], Duration::from_millis(100)).with_retain(Duration::from_secs(50));
        let mut m = RoutedMemory::default();
        let req = lookup(&mut r, &mut m, 0, 0, 5);
        let mut out = Vec::new();
        let route = Route { forward: [Some(ServerId(9)), None], inbox: false };
        r.handle(Time::from_secs(1), RouterInput::Routed { req, route }, &mut m, &mut out);
        for s in 2..=51 {
            r.handle_timeout(Time::from_secs(s), &mut m, &mut out);
        }
        assert_eq!(m.kept(), 1, "kept for the retention");
        r.handle_timeout(Time::from_secs(52), &mut m, &mut out);
        assert_eq!(m.kept(), 0, "forgotten within a sweep after it");
    }

    #[test]
    fn replays_come_in_the_order_forwarded() {
        let mut r = Router::new(1, &[(0, 0)], Duration::from_millis(100));
        let mut m = RoutedMemory::default();
        let mut out = Vec::new();
        // Messages to users 7, 3 and 5 forwarded to server 9 at 30, 20 and 10 ms.
        for (offset, (to, ms)) in [(7, 30), (3, 20), (5, 10)].into_iter().enumerate() {
            let req = lookup(&mut r, &mut m, 0, offset as u64, to);
            let route = Route { forward: [Some(ServerId(9)), None], inbox: false };
            r.handle(Time::from_ms(ms), RouterInput::Routed { req, route }, &mut m, &mut out);
        }
        out.clear();
        r.handle(Time::from_ms(40), RouterInput::ServerDown { server: ServerId(9) }, &mut m, &mut out);
        let order: Vec<UserId> = out
            .iter()
            .map(|o| match o {
                RouterOutput::Reroute { msg, .. } => msg.to,
                _ => panic!("{out:?}"),
            })
            .collect();
        assert_eq!(order, vec![UserId(5), UserId(3), UserId(7)]);
    }

    #[test]
    fn what_a_dead_router_forwarded_is_replayed_by_the_next_when_its_server_goes_down() {
        let (first, mut m, _) = routed_to_9_and_2();
        drop(first);
        let mut second = Router::new(1, &[(0, 1)], Duration::from_millis(100));
        let mut out = Vec::new();
        second.resume(&mut m, &mut out);
        assert!(out.is_empty(), "nothing to replay while 9 is up: {out:?}");
        second.handle(Time::from_ms(5), RouterInput::ServerDown { server: ServerId(9) }, &mut m, &mut out);
        assert_eq!(out, vec![RouterOutput::Reroute { msg: msg(5), exclude: x(9, 5), slot: DeviceSlot(0) }]);
        assert_eq!(second.replayed(), 1);
    }

    #[test]
    fn a_forward_to_a_server_that_crashed_and_came_back_is_replayed_by_the_next_router() {
        // The partition's router died with a forward to 9 kept; 9 crashed and restarted
        // (empty) while the partition had no router; the router given it replays it.
        let (first, mut m, _) = routed_to_9_and_2();
        drop(first);
        let mut second = Router::new(1, &[], Duration::from_millis(100));
        let mut out = Vec::new();
        second.handle(Time::from_secs(1), RouterInput::ServerDown { server: ServerId(9) }, &mut m, &mut out);
        second.handle(Time::from_secs(2), RouterInput::ServerUp { server: ServerId(9) }, &mut m, &mut out);
        assert!(out.is_empty(), "not its partition yet: {out:?}");
        second.handle(Time::from_secs(3), RouterInput::Assigned { partition: 0, offset: 1 }, &mut m, &mut out);
        assert_eq!(out, vec![RouterOutput::Reroute { msg: msg(5), exclude: x(9, 1_000), slot: DeviceSlot(0) }]);
        // The forward to 2, which stayed up, is kept.
        assert_eq!(m.kept(), 1);
    }
}
