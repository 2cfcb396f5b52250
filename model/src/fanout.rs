//! The group fan-out service: a Kafka consumer of the group-message topic that turns one
//! stored group message into a copy for every member's devices.
//!
//! A group message is stored once (one row, conversation = the group) and published once.
//! For each record the fan-out reads the group's membership page by page (a page read is
//! one request to the store, with its own cost), skips the sender, and asks the members'
//! session shards to route them: one request per shard per batch of at most
//! [`ROUTE_BATCH_MAX`] members, each member getting the same route-or-inbox operation a
//! 1:1 message gets (the shard writes an inbox pointer for a member with a device
//! offline). Once every member is routed it forwards the message to each chat server once
//! per batch of at most [`FORWARD_BATCH_MAX`] devices held there, not once per member:
//! a 1,024-member group costs a few dozen network messages, not a thousand.
//!
//! Forwards wait for the whole record to be routed so that each server gets its devices
//! in as few batches as possible; the record's offset is then done, and commits advance
//! over done offsets in order (see [`CommitTracker`]). Delivery is at least once: after a
//! crash or a rebalance records come again from the commit, and devices drop the repeats.
//!
//! As the routers do for 1:1 messages, the fan-out keeps each device's copy it forwarded
//! until the chat server says the device acknowledged it (`Acked`), or at most for as long
//! as a chat server may hold a push unacknowledged (`retain`), and when it learns a server
//! is down it routes each copy it keeps for that server again without it (to the device's
//! new server, or its inbox); while a server is down, what is forwarded to it goes the
//! same way. A page read not answered in time (its replica is down) is asked
//! again of the next replica.

use std::collections::VecDeque;
use std::time::Duration;

use crate::{
    ChatMessage, CommitTracker, DeviceId, DeviceKey, DeviceSlot, MessageId, PackedMessage, Route, ServerId,
    ServersDown, Time, UserId, GROUP_MEMBERS_MAX,
};
use rustc_hash::{FxHashMap, FxHashSet};
use slotmap::{DefaultKey, Key, KeyData, SlotMap};

/// Members per route request: the request carries the message and the members' ids, and
/// eleven of them with the message still fit one small network envelope (about a hundred
/// bytes), like every other request between nodes.
pub const ROUTE_BATCH_MAX: usize = 11;

/// Devices per forward to one chat server, for the same reason as [`ROUTE_BATCH_MAX`]:
/// the message and eleven device keys fit one envelope.
pub const FORWARD_BATCH_MAX: usize = 11;

/// Members per membership page read: a page is one bounded read of the group's
/// membership partition, so no read of a large group is unbounded.
pub const MEMBERS_PAGE: u32 = 256;

const _: () = assert!(ROUTE_BATCH_MAX > 0 && ROUTE_BATCH_MAX <= u8::MAX as usize, "a route batch counts in a u8");
const _: () = assert!(FORWARD_BATCH_MAX > 0 && FORWARD_BATCH_MAX <= u8::MAX as usize, "a forward batch counts in a u8");
const _: () = assert!(MEMBERS_PAGE > 0 && MEMBERS_PAGE <= GROUP_MEMBERS_MAX, "a group fits in whole pages");

/// How often an instance forgets the copies kept past `retain` (an acknowledgement lost
/// on its way): each is kept for `retain`, and at most this much longer.
const HANDED_SWEEP: Duration = Duration::from_secs(1);

/// A device's copy forwarded and kept for replay: when, to which server, the group's
/// message (packed; the member is the device's user).
#[derive(Clone, Copy, Debug)]
struct Handed {
    at: Time,
    server: ServerId,
    msg: PackedMessage,
}

/// A page read not answered within this is asked again, of the next replica.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of one fan-out instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FanoutConfig {
    /// Partitions of the group-message topic (indexes `0..partitions`). No default: it must
    /// match the topic.
    pub partitions: u32,
    /// How long forwards are kept to route again should their chat server go down (zero:
    /// not kept, as when no chat server crashes).
    pub retain: Duration,
}

/// Inputs to a fan-out instance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FanoutInput<'a> {
    /// A rebalance of the consumer group gave this instance `partition`, from its
    /// committed `offset` (what another instance fanned out past it comes again: the
    /// devices show it once).
    Assigned { partition: u32, offset: u64 },
    /// A rebalance took `partition` away: its records in flight are dropped (their replies
    /// are ignored) and it is committed no more.
    Revoked { partition: u32 },
    /// A record of the group topic at `offset` of `partition`: `msg` sent to group number
    /// `group`, which has `members` members (its member count, sender included).
    Record { partition: u32, offset: u64, msg: ChatMessage, group: u32, members: u32 },
    /// The store answered page read `req`: these are the page's members, in the store's
    /// order (the caller reads them from the store's contents).
    Page { req: u64, members: &'a [UserId] },
    /// A session shard routed the members of route request `req`, in the order they were
    /// asked: one route per member (the shard wrote the inbox pointers already).
    Routed { req: u64, routes: &'a [Route] },
    /// A chat server is down (its connections reset, or its health checks failed).
    ServerDown { server: ServerId },
    /// It is back (restarted, empty).
    ServerUp { server: ServerId },
    /// The session store routed again a member's copy this instance sent back (`Reroute`)
    /// for device `slot`.
    Rerouted { msg: ChatMessage, route: Route, slot: DeviceSlot },
    /// A chat server says `device` acknowledged the push of its copy of group message `id`:
    /// the copy need not be kept for replay.
    Acked { id: MessageId, device: DeviceKey },
}

/// Effects a fan-out instance asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanoutOutput {
    /// Read page `page` (0-based, [`MEMBERS_PAGE`] members each) of group `group`'s
    /// membership from a replica (the `attempt`th: the first, then the next after a
    /// timeout); answer with [`FanoutInput::Page`].
    ReadPage { req: u64, group: u32, page: u32, attempt: u8 },
    /// Route-or-inbox for the first `count` of `members` (all held by session shard
    /// `shard`), for message `msg`; answer with [`FanoutInput::Routed`].
    Route { req: u64, shard: u32, msg: ChatMessage, members: [UserId; ROUTE_BATCH_MAX], count: u8 },
    /// Forward `msg` to chat server `server` for the first `count` of `devices`, all
    /// connected there (the server sets each copy's recipient).
    Forward { server: ServerId, msg: ChatMessage, devices: [DeviceKey; FORWARD_BATCH_MAX], count: u8 },
    /// Commit the partition's offset: every record below it is fanned out.
    Commit { partition: u32, offset: u64 },
    /// Route-or-inbox again a member's copy `msg` for device `slot`, treating `exclude` as
    /// gone (the server is down); answer with [`FanoutInput::Rerouted`].
    Reroute { msg: ChatMessage, exclude: ServerId, slot: DeviceSlot },
}

/// What a request of this instance waits for.
#[derive(Clone, Copy, Debug)]
enum Ask {
    /// Page `page` of the record's group membership, asked the `attempt`th time.
    Page { page: u32, attempt: u8 },
    /// The routes of the first `count` of these members, in this order.
    Route { members: [UserId; ROUTE_BATCH_MAX], count: u8 },
}

/// A request in flight: for which record, and what it asked.
#[derive(Clone, Copy, Debug)]
struct Request {
    record: DefaultKey,
    ask: Ask,
}

/// A record being fanned out.
#[derive(Debug)]
struct Pending {
    partition: u32,
    offset: u64,
    msg: ChatMessage,
    group: u32,
    /// Page reads not answered yet.
    pages_left: u32,
    /// Route requests not answered yet.
    routes_left: u32,
    /// Members asked to be routed so far: a member the membership lists twice is routed
    /// once, so none of its devices gets the message twice and its inbox gets one pointer.
    asked: FxHashSet<UserId>,
    /// Each connected device routed, with its server, in the order routed.
    forwards: Vec<(ServerId, DeviceKey)>,
}

/// One fan-out instance (a member of the `fanout` consumer group).
#[derive(Debug)]
pub struct Fanout {
    /// Records being fanned out.
    records: SlotMap<DefaultKey, Pending>,
    /// Page reads and route requests in flight; their keys are the `req` ids, unique for
    /// the life of the instance (a slot reused gets a new version).
    requests: SlotMap<DefaultKey, Request>,
    /// Indexed by partition number; `None` for partitions assigned elsewhere.
    trackers: Vec<Option<CommitTracker>>,
    /// One page's members to route, with their shards: kept between pages to spare an
    /// allocation per page.
    by_shard: Vec<(u32, UserId)>,
    /// Each device's copy forwarded and not yet acknowledged, kept for at most `retain`, by
    /// (message, device).
    handed: FxHashMap<(MessageId, DeviceKey), Handed>,
    /// When the copies kept past `retain` are next forgotten.
    next_sweep_at: Time,
    /// Page reads with when each is due (asked + `PAGE_TIMEOUT`), in the order asked: one
    /// not answered by then is asked again.
    page_deadlines: VecDeque<(Time, DefaultKey)>,
    retain: Duration,
    down: ServersDown,
    /// Copies routed again because their server was down.
    replayed: u64,
    /// The first id each client message was fanned out under: a retried send (its ✓ was
    /// lost, so its sender sent it again and another server minted a new id) is dropped,
    /// as the routers drop 1:1 repeats.
    fanned: rustc_hash::FxHashMap<u64, crate::MessageId>,
    repeats: u64,
}

impl Fanout {
    /// An instance owning no partition yet (they come with [`FanoutInput::Assigned`]).
    pub fn new(config: FanoutConfig) -> Fanout {
        Fanout {
            records: SlotMap::new(),
            requests: SlotMap::new(),
            trackers: vec![None; config.partitions as usize],
            by_shard: Vec::new(),
            handed: FxHashMap::default(),
            next_sweep_at: Time::ZERO,
            page_deadlines: VecDeque::new(),
            retain: config.retain,
            down: ServersDown::default(),
            replayed: 0,
            fanned: rustc_hash::FxHashMap::default(),
            repeats: 0,
        }
    }

    /// Retried sends dropped as repeats of a client message fanned out under another id.
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// Member copies routed again because their chat server was down.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Whether this instance consumes `partition` (it was assigned it and not revoked).
    pub fn owns(&self, partition: u32) -> bool {
        self.trackers.get(partition as usize).is_some_and(Option::is_some)
    }

    /// Records being fanned out.
    pub fn in_flight(&self) -> usize {
        self.records.len()
    }

    /// The requests in flight (page reads, route batches), each as (the message it fans
    /// out, its `req` id), in no particular order.
    pub fn waiting(&self) -> impl Iterator<Item = (crate::MessageId, u64)> + '_ {
        self.requests.iter().map(|(key, q)| (self.records[q.record].msg.id, key.data().as_ffi()))
    }

    /// Handle one input, appending effects to `out`. `shard_of(user)` names the session
    /// shard holding a user (the caller's placement).
    pub fn handle(
        &mut self,
        now: Time,
        input: FanoutInput<'_>,
        shard_of: impl Fn(UserId) -> u32,
        out: &mut Vec<FanoutOutput>,
    ) {
        match input {
            FanoutInput::Assigned { partition, offset } => {
                *self.tracker_slot(partition) = Some(CommitTracker::starting_at(offset));
            }
            FanoutInput::Revoked { partition } => self.revoke(partition),
            FanoutInput::Record { partition, offset, msg, group, members } => {
                self.on_record(now, partition, offset, msg, group, members, out);
            }
            FanoutInput::Page { req, members } => self.on_page(now, req, members, &shard_of, out),
            FanoutInput::Routed { req, routes } => self.on_routed(now, req, routes, out),
            FanoutInput::ServerDown { server } => {
                self.down.insert(server);
                // What was forwarded there and not acknowledged: route each copy again
                // without it, in the order forwarded (then by message and device: the
                // map's own order is its hashing's).
                let mut lost: Vec<((MessageId, DeviceKey), Handed)> = Vec::new();
                self.handed.retain(|&key, h| {
                    let here = h.server == server;
                    if here {
                        lost.push((key, *h));
                    }
                    !here
                });
                lost.sort_unstable_by_key(|&((id, device), h)| (h.at, id, device));
                for ((_, device), h) in lost {
                    self.reroute(h.msg.message(UserId::GROUP), device, server, out);
                }
            }
            FanoutInput::ServerUp { server } => self.down.remove(server),
            FanoutInput::Acked { id, device } => {
                self.handed.remove(&(id, device));
            }
            FanoutInput::Rerouted { msg, route, slot } => {
                if let Some(server) = route.forward[usize::from(slot.0)] {
                    let device = DeviceKey::of(DeviceId { user: msg.to, slot });
                    let mut devices = [DeviceKey::default(); FORWARD_BATCH_MAX];
                    devices[0] = device;
                    // The copy goes as the group's message; the server names the member.
                    let msg = ChatMessage { to: UserId::GROUP, ..msg };
                    self.forward(now, server, msg, devices, 1, out);
                }
            }
        }
    }

    /// Route `device`'s copy of `msg` again, without `exclude`.
    fn reroute(&mut self, msg: ChatMessage, device: DeviceKey, exclude: ServerId, out: &mut Vec<FanoutOutput>) {
        let d = device.device();
        self.replayed += 1;
        out.push(FanoutOutput::Reroute { msg: ChatMessage { to: d.user, ..msg }, exclude, slot: d.slot });
    }

    /// Forward `msg` to `server` for the first `count` of `devices`, or route them again if
    /// the server is known to be down; each device's copy kept until acknowledged, for at
    /// most `retain`.
    fn forward(
        &mut self,
        now: Time,
        server: ServerId,
        msg: ChatMessage,
        devices: [DeviceKey; FORWARD_BATCH_MAX],
        count: u8,
        out: &mut Vec<FanoutOutput>,
    ) {
        if self.down.contains(server) {
            for d in &devices[..usize::from(count)] {
                self.reroute(msg, *d, server, out);
            }
            return;
        }
        if !self.retain.is_zero() {
            let packed = PackedMessage::of(&msg);
            for &d in &devices[..usize::from(count)] {
                self.handed.insert((msg.id, d), Handed { at: now, server, msg: packed });
            }
        }
        out.push(FanoutOutput::Forward { server, msg, devices, count });
    }

    /// Commits due (call once per tick): one `Commit` per owned partition, ascending, whose
    /// committable offset moved since the last.
    pub fn on_tick(&mut self, now: Time, out: &mut Vec<FanoutOutput>) {
        if now >= self.next_sweep_at {
            self.next_sweep_at = now + HANDED_SWEEP;
            let retain = self.retain;
            self.handed.retain(|_, h| h.at + retain > now);
        }
        // Page reads not answered in time: asked again of the next replica.
        while self.page_deadlines.front().is_some_and(|&(due, _)| due <= now) {
            let (_, key) = self.page_deadlines.pop_front().expect("checked");
            // Answered (or its record revoked) meanwhile: nothing to do.
            let Some(&Request { record, ask: Ask::Page { page, attempt } }) = self.requests.get(key) else {
                continue;
            };
            self.requests.remove(key);
            let group = self.records[record].group;
            self.ask_page(now, record, group, page, attempt.wrapping_add(1), out);
        }
        for (p, t) in self.trackers.iter_mut().enumerate() {
            if let Some(offset) = t.as_mut().and_then(CommitTracker::poll_commit) {
                out.push(FanoutOutput::Commit { partition: p as u32, offset });
            }
        }
    }

    /// The tracker entry of `partition`. A partition outside the topic is a caller's bug.
    fn tracker_slot(&mut self, partition: u32) -> &mut Option<CommitTracker> {
        let partitions = self.trackers.len();
        let slot = self.trackers.get_mut(partition as usize);
        slot.unwrap_or_else(|| panic!("partition {partition} beyond the topic's {partitions}"))
    }

    /// Drop `partition`: its tracker, its records in flight and their requests (so their
    /// replies find nothing and are ignored).
    fn revoke(&mut self, partition: u32) {
        *self.tracker_slot(partition) = None;
        self.records.retain(|_, r| r.partition != partition);
        let records = &self.records;
        self.requests.retain(|_, q| records.contains_key(q.record));
    }

    /// Start fanning out a record: ask every membership page at once.
    #[allow(clippy::too_many_arguments)]
    fn on_record(
        &mut self,
        now: Time,
        partition: u32,
        offset: u64,
        msg: ChatMessage,
        group: u32,
        members: u32,
        out: &mut Vec<FanoutOutput>,
    ) {
        if !self.owns(partition) {
            return;
        }
        assert!(members <= GROUP_MEMBERS_MAX, "group {group} has {members} members, over {GROUP_MEMBERS_MAX}");
        let first = *self.fanned.entry(msg.client_id().key()).or_insert(msg.id);
        if first != msg.id {
            self.repeats += 1;
            self.tracker_slot(partition).as_mut().expect("an owned partition").complete(offset);
            return;
        }
        // At least one page even for a count of 0: the store's membership is what counts.
        let pages = members.div_ceil(MEMBERS_PAGE).max(1);
        let record = self.records.insert(Pending {
            partition,
            offset,
            msg,
            group,
            pages_left: pages,
            routes_left: 0,
            asked: FxHashSet::default(),
            forwards: Vec::new(),
        });
        for page in 0..pages {
            self.ask_page(now, record, group, page, 0, out);
        }
    }

    /// Read `page` of `group` for `record`, the `attempt`th time.
    fn ask_page(
        &mut self,
        now: Time,
        record: DefaultKey,
        group: u32,
        page: u32,
        attempt: u8,
        out: &mut Vec<FanoutOutput>,
    ) {
        let key = self.requests.insert(Request { record, ask: Ask::Page { page, attempt } });
        self.page_deadlines.push_back((now + PAGE_TIMEOUT, key));
        out.push(FanoutOutput::ReadPage { req: key.data().as_ffi(), group, page, attempt });
    }

    /// Take request `req` out of the requests in flight, if it is one (an unknown id is a
    /// duplicate reply, or one for a revoked record).
    fn take_request(&mut self, req: u64) -> Option<Request> {
        self.requests.remove(KeyData::from_ffi(req).into())
    }

    /// A page of the membership: route its members (but the sender, and members asked
    /// already), by shard ascending, in page order within a shard.
    fn on_page(
        &mut self,
        now: Time,
        req: u64,
        members: &[UserId],
        shard_of: &impl Fn(UserId) -> u32,
        out: &mut Vec<FanoutOutput>,
    ) {
        let Some(Request { record, ask }) = self.take_request(req) else {
            return;
        };
        assert!(matches!(ask, Ask::Page { .. }), "request {req} is a route request, answered as a page");
        assert!(members.len() <= MEMBERS_PAGE as usize, "a page of {} members", members.len());
        let r = self.records.get_mut(record).expect("a request's record is in flight");
        r.pages_left -= 1;
        self.by_shard.clear();
        for &m in members {
            if m != r.msg.from && r.asked.insert(m) {
                self.by_shard.push((shard_of(m), m));
            }
        }
        // A stable sort: members keep their page order within a shard.
        self.by_shard.sort_by_key(|&(shard, _)| shard);
        for (shard, members, count) in batches::<_, _, ROUTE_BATCH_MAX>(&self.by_shard) {
            let req = self.requests.insert(Request { record, ask: Ask::Route { members, count } }).data().as_ffi();
            r.routes_left += 1;
            out.push(FanoutOutput::Route { req, shard, msg: r.msg, members, count });
        }
        self.finish_if_done(now, record, out);
    }

    /// A shard's routes for a batch: note each connected device with its server.
    fn on_routed(&mut self, now: Time, req: u64, routes: &[Route], out: &mut Vec<FanoutOutput>) {
        let Some(Request { record, ask }) = self.take_request(req) else {
            return;
        };
        if crate::plant::planted(crate::plant::Plant::FanoutLosesRouteReply) && req.is_multiple_of(16) {
            return;
        }
        let Ask::Route { members, count } = ask else {
            panic!("request {req} is a page read, answered with routes");
        };
        assert_eq!(routes.len(), usize::from(count), "request {req}: one route per member asked");
        let r = self.records.get_mut(record).expect("a request's record is in flight");
        for (&user, route) in members.iter().zip(routes) {
            // A member with no device online has its inbox pointer already: nothing to do.
            for (slot, server) in route.forwards() {
                r.forwards.push((server, DeviceKey::of(DeviceId { user, slot })));
            }
        }
        r.routes_left -= 1;
        self.finish_if_done(now, record, out);
    }

    /// Once every page is read and every route answered: forward to each server, ascending,
    /// in batches of its devices in the order routed, and mark the offset done.
    fn finish_if_done(&mut self, now: Time, record: DefaultKey, out: &mut Vec<FanoutOutput>) {
        let r = &self.records[record];
        if r.pages_left > 0 || r.routes_left > 0 {
            return;
        }
        let mut r = self.records.remove(record).expect("checked above");
        // A stable sort: devices keep the order they were routed in within a server.
        r.forwards.sort_by_key(|&(server, _)| server);
        for (server, devices, count) in batches::<_, _, FORWARD_BATCH_MAX>(&r.forwards) {
            self.forward(now, server, r.msg, devices, count, out);
        }
        // A record in flight belongs to an owned partition: revoking drops its records.
        let tracker = self.trackers[r.partition as usize].as_mut();
        tracker.expect("a record in flight has its partition's tracker").complete(r.offset);
    }
}

/// `sorted` (its items grouped by key) in batches of at most `N` items of one key: each as
/// (key, the items and defaults after them, how many items).
fn batches<K: Copy + PartialEq, T: Copy + Default, const N: usize>(
    sorted: &[(K, T)],
) -> impl Iterator<Item = (K, [T; N], u8)> + '_ {
    sorted.chunk_by(|a, b| a.0 == b.0).flat_map(|run| run.chunks(N)).map(|batch| {
        let mut items = [T::default(); N];
        for (slot, &(_, t)) in items.iter_mut().zip(batch) {
            *slot = t;
        }
        (batch[0].0, items, batch.len() as u8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConversationId, DeviceSlot, MessageId};

    const SENDER: UserId = UserId(1_000_000);
    const GROUP: u32 = 42;
    const OFFLINE: Route = Route { forward: [None, None], inbox: true };

    fn msg() -> ChatMessage {
        ChatMessage {
            id: MessageId(7),
            conversation: ConversationId(u64::from(GROUP + 1) << 32),
            from: SENDER,
            // As stored once for the whole group: the chat server names each member.
            to: UserId(u32::MAX),
            client_seq: 1,
            sent_at: Time::ZERO,
        }
    }

    /// Session placement: even users on shard 0, odd on shard 1.
    fn two_shards(u: UserId) -> u32 {
        u.0 % 2
    }

    fn users(range: std::ops::Range<u32>) -> Vec<UserId> {
        range.map(UserId).collect()
    }

    /// A user's phone connected to `server`.
    fn online(server: u16) -> Route {
        Route { forward: [Some(ServerId(server)), None], inbox: false }
    }

    fn phone(u: u32) -> DeviceKey {
        DeviceKey::of(DeviceId::phone(UserId(u)))
    }

    /// An instance owning both partitions of a two-partition topic, from offset 0.
    fn fanout() -> Fanout {
        let mut f = Fanout::new(FanoutConfig { partitions: 2, retain: Duration::ZERO });
        run(&mut f, FanoutInput::Assigned { partition: 0, offset: 0 });
        run(&mut f, FanoutInput::Assigned { partition: 1, offset: 0 });
        f
    }

    fn run(f: &mut Fanout, input: FanoutInput<'_>) -> Vec<FanoutOutput> {
        let mut out = Vec::new();
        f.handle(Time::ZERO, input, two_shards, &mut out);
        out
    }

    /// A record of a group of `members` (sender included): its page reads, in page order.
    fn record(f: &mut Fanout, partition: u32, offset: u64, members: u32) -> Vec<u64> {
        let out = run(f, FanoutInput::Record { partition, offset, msg: msg(), group: GROUP, members });
        let reads = out.iter().enumerate().map(|(i, o)| match *o {
            FanoutOutput::ReadPage { req, group: GROUP, page, .. } if page as usize == i => req,
            _ => panic!("{out:?}"),
        });
        reads.collect()
    }

    /// Answer a page read: the route requests it gives, as (req, shard, members).
    fn page(f: &mut Fanout, req: u64, members: &[UserId]) -> Vec<(u64, u32, Vec<UserId>)> {
        let out = run(f, FanoutInput::Page { req, members });
        let routes = out.iter().map(|o| match *o {
            FanoutOutput::Route { req, shard, msg: m, members, count } if m == msg() => {
                (req, shard, members[..usize::from(count)].to_vec())
            }
            _ => panic!("{out:?}"),
        });
        routes.collect()
    }

    /// Answer route request `req` with `route` for each of its `count` members.
    fn routed(f: &mut Fanout, req: u64, count: usize, route: Route) -> Vec<FanoutOutput> {
        run(f, FanoutInput::Routed { req, routes: &vec![route; count] })
    }

    /// The forwards of `out` (which holds nothing else), as (server, devices).
    fn forwards(out: &[FanoutOutput]) -> Vec<(ServerId, Vec<DeviceKey>)> {
        let forwards = out.iter().map(|o| match *o {
            FanoutOutput::Forward { server, msg: m, devices, count } if m == msg() => {
                (server, devices[..usize::from(count)].to_vec())
            }
            _ => panic!("{out:?}"),
        });
        forwards.collect()
    }

    fn commits(f: &mut Fanout) -> Vec<FanoutOutput> {
        let mut out = Vec::new();
        f.on_tick(Time::ZERO, &mut out);
        out
    }

    /// A record of a 31-member group (the sender and users 0..30) on partition 0, its one
    /// page read: the route requests.
    fn thirty_members(f: &mut Fanout) -> Vec<(u64, u32, Vec<UserId>)> {
        let reads = record(f, 0, 0, 31);
        let mut members = vec![SENDER];
        members.extend(users(0..30));
        page(f, reads[0], &members)
    }

    #[test]
    fn one_route_request_per_shard_per_batch() {
        let routes = thirty_members(&mut fanout());
        let shape: Vec<(u32, usize)> = routes.iter().map(|(_, shard, m)| (*shard, m.len())).collect();
        assert_eq!(shape, vec![(0, 11), (0, 4), (1, 11), (1, 4)], "15 members per shard, 11 a request");
        let evens: Vec<UserId> = (0..11).map(|i| UserId(2 * i)).collect();
        assert_eq!(routes[0].2, evens, "members in page order");
        assert!(routes.iter().all(|(_, shard, m)| m.iter().all(|&u| two_shards(u) == *shard)));
    }

    #[test]
    fn the_sender_is_not_routed() {
        let mut f = fanout();
        let reads = record(&mut f, 0, 0, 3);
        let routes = page(&mut f, reads[0], &[UserId(3), SENDER, UserId(5)]);
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0].2, vec![UserId(3), UserId(5)]);
    }

    #[test]
    fn forwards_go_once_per_server_per_batch_after_every_route_answered() {
        let mut f = fanout();
        let routes = thirty_members(&mut f);
        // Even users' phones are on server 3; odd users have their phone on 1, web on 3.
        let phone_on_1_web_on_3 = Route { forward: [Some(ServerId(1)), Some(ServerId(3))], inbox: false };
        for (req, shard, m) in &routes[..3] {
            let route = if *shard == 0 { online(3) } else { phone_on_1_web_on_3 };
            assert_eq!(routed(&mut f, *req, m.len(), route), vec![], "a route is still out");
        }
        let (req, _, m) = &routes[3];
        let out = routed(&mut f, *req, m.len(), phone_on_1_web_on_3);
        let forwards = forwards(&out);
        let shape: Vec<(u16, usize)> = forwards.iter().map(|(s, d)| (s.0, d.len())).collect();
        assert_eq!(shape, vec![(1, 11), (1, 4), (3, 11), (3, 11), (3, 8)], "15 devices on 1, 30 on 3");
        assert_eq!(forwards[2].1[0], phone(0), "devices in the order routed");
        let web_of_1 = DeviceKey::of(DeviceId { user: UserId(1), slot: DeviceSlot(1) });
        assert_eq!(forwards[3].1[4], web_of_1, "after the 15 even phones");
        assert_eq!(f.in_flight(), 0);
        assert_eq!(commits(&mut f), vec![FanoutOutput::Commit { partition: 0, offset: 1 }]);
    }

    #[test]
    fn members_with_no_device_online_get_no_forward() {
        let mut f = fanout();
        for (req, _, m) in thirty_members(&mut f) {
            assert_eq!(routed(&mut f, req, m.len(), OFFLINE), vec![], "the shard wrote the inbox pointers");
        }
        assert_eq!(f.in_flight(), 0);
        assert_eq!(commits(&mut f), vec![FanoutOutput::Commit { partition: 0, offset: 1 }]);
    }

    #[test]
    fn a_600_member_group_is_read_in_3_pages_and_forwarded_once_all_are_routed() {
        let mut f = fanout();
        let reads = record(&mut f, 1, 0, 600);
        assert_eq!(reads.len(), 3);
        let mut first = vec![SENDER];
        first.extend(users(0..255));
        let pages = [first, users(255..511), users(511..599)];
        // Pages answered out of order, each one's routes at once; the middle page last.
        for i in [2, 0] {
            for (req, _, m) in page(&mut f, reads[i], &pages[i]) {
                assert_eq!(routed(&mut f, req, m.len(), online(4)), vec![], "page 1 is not read yet");
            }
        }
        let routes = page(&mut f, reads[1], &pages[1]);
        let (last, rest) = routes.split_last().unwrap();
        for (req, _, m) in rest {
            assert_eq!(routed(&mut f, *req, m.len(), online(4)), vec![], "a route is still out");
        }
        let out = routed(&mut f, last.0, last.2.len(), online(4));
        let forwards = forwards(&out);
        assert_eq!(forwards.len(), 599usize.div_ceil(FORWARD_BATCH_MAX), "one server, full batches");
        let mut devices: Vec<DeviceKey> = forwards.into_iter().flat_map(|(_, d)| d).collect();
        devices.sort();
        assert_eq!(devices, (0..599).map(phone).collect::<Vec<_>>(), "every member but the sender, once");
        assert_eq!(commits(&mut f), vec![FanoutOutput::Commit { partition: 1, offset: 1 }]);
    }

    #[test]
    fn commits_advance_in_offset_order_when_a_later_record_completes_first() {
        let mut f = fanout();
        let a = record(&mut f, 1, 0, 2);
        let b = record(&mut f, 1, 1, 2);
        let route_a = page(&mut f, a[0], &[SENDER, UserId(8)]);
        let route_b = page(&mut f, b[0], &[SENDER, UserId(8)]);
        routed(&mut f, route_b[0].0, 1, online(2));
        assert_eq!(commits(&mut f), vec![], "offset 0 is not done yet");
        routed(&mut f, route_a[0].0, 1, online(2));
        assert_eq!(commits(&mut f), vec![FanoutOutput::Commit { partition: 1, offset: 2 }]);
        assert_eq!(commits(&mut f), vec![], "an unchanged offset is not committed again");
    }

    #[test]
    fn a_revoked_partitions_late_replies_are_ignored_and_it_is_not_committed() {
        let mut f = fanout();
        let reads = record(&mut f, 0, 0, 300);
        let routes = page(&mut f, reads[0], &[SENDER, UserId(8)]);
        run(&mut f, FanoutInput::Revoked { partition: 0 });
        assert!(!f.owns(0));
        assert_eq!(f.in_flight(), 0);
        assert_eq!(routed(&mut f, routes[0].0, 1, online(2)), vec![]);
        assert_eq!(page(&mut f, reads[1], &[UserId(9)]), vec![], "the page read came back late");
        assert_eq!(record(&mut f, 0, 1, 2), Vec::<u64>::new(), "no longer consumed here");
        assert_eq!(commits(&mut f), vec![]);
    }

    #[test]
    fn a_member_listed_twice_gets_one_forward_per_device() {
        let mut f = fanout();
        let reads = record(&mut f, 0, 0, 300);
        let first = page(&mut f, reads[0], &[SENDER, UserId(5), UserId(7), UserId(5)]);
        assert_eq!(first[0].2, vec![UserId(5), UserId(7)], "once within a page");
        let second = page(&mut f, reads[1], &[UserId(5), UserId(9)]);
        assert_eq!(second[0].2, vec![UserId(9)], "and across pages");
        let phone_and_web = Route { forward: [Some(ServerId(6)), Some(ServerId(6))], inbox: false };
        routed(&mut f, first[0].0, 2, phone_and_web);
        let out = routed(&mut f, second[0].0, 1, phone_and_web);
        let web = |u| DeviceKey::of(DeviceId { user: UserId(u), slot: DeviceSlot(1) });
        let devices = vec![phone(5), web(5), phone(7), web(7), phone(9), web(9)];
        assert_eq!(forwards(&out), vec![(ServerId(6), devices)]);
    }

    #[test]
    fn a_group_of_only_the_sender_is_done_once_its_page_is_read() {
        let mut f = fanout();
        let reads = record(&mut f, 0, 0, 1);
        assert_eq!(page(&mut f, reads[0], &[SENDER]), vec![], "nobody to route");
        assert_eq!(f.in_flight(), 0);
        assert_eq!(commits(&mut f), vec![FanoutOutput::Commit { partition: 0, offset: 1 }]);
    }

    #[test]
    fn a_repeated_or_unknown_reply_is_ignored() {
        let mut f = fanout();
        let reads = record(&mut f, 0, 0, 2);
        let routes = page(&mut f, reads[0], &[SENDER, UserId(8)]);
        assert_eq!(page(&mut f, reads[0], &[SENDER, UserId(8)]), vec![], "the same page again");
        assert_eq!(forwards(&routed(&mut f, routes[0].0, 1, online(2))).len(), 1);
        assert_eq!(routed(&mut f, routes[0].0, 1, online(2)), vec![], "the same routes again");
        assert_eq!(routed(&mut f, 77, 1, online(2)), vec![], "never asked");
    }

    #[test]
    fn records_of_a_partition_not_assigned_are_ignored() {
        let mut f = Fanout::new(FanoutConfig { partitions: 2, retain: Duration::ZERO });
        run(&mut f, FanoutInput::Assigned { partition: 0, offset: 5 });
        assert!(f.owns(0) && !f.owns(1));
        assert_eq!(record(&mut f, 1, 0, 2), Vec::<u64>::new());
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn forwards_to_a_server_that_goes_down_are_routed_again_without_it() {
        let mut f = Fanout::new(FanoutConfig { partitions: 2, retain: Duration::from_secs(50) });
        run(&mut f, FanoutInput::Assigned { partition: 0, offset: 0 });
        let reads = record(&mut f, 0, 0, 3);
        let asked = page(&mut f, reads[0], &[SENDER, UserId(4), UserId(5)]);
        let mut sent = Vec::new();
        for (req, _, members) in asked {
            sent.extend(routed(&mut f, req, members.len(), online(2)));
        }
        assert_eq!(forwards(&sent), vec![(ServerId(2), vec![phone(4), phone(5)])]);
        // Server 2 goes down: each copy it was handed is routed again without it.
        let out = run(&mut f, FanoutInput::ServerDown { server: ServerId(2) });
        let again: Vec<(UserId, ServerId)> = out
            .iter()
            .map(|o| match *o {
                FanoutOutput::Reroute { msg, exclude, slot: DeviceSlot(0) } => (msg.to, exclude),
                _ => panic!("{out:?}"),
            })
            .collect();
        assert_eq!(again, vec![(UserId(4), ServerId(2)), (UserId(5), ServerId(2))]);
        // The store found user 4 on server 3: forwarded there, as the group's message.
        let copy = ChatMessage { to: UserId(4), ..msg() };
        let out = run(&mut f, FanoutInput::Rerouted { msg: copy, route: online(3), slot: DeviceSlot(0) });
        assert_eq!(forwards(&out), vec![(ServerId(3), vec![phone(4)])]);
        // While server 2 is down, what is forwarded to it is routed again at once.
        let reads = record(&mut f, 0, 1, 2);
        let asked = page(&mut f, reads[0], &[SENDER, UserId(6)]);
        let out = routed(&mut f, asked[0].0, 1, online(2));
        assert!(matches!(out[..], [FanoutOutput::Reroute { exclude: ServerId(2), .. }]), "{out:?}");
        assert_eq!(f.replayed(), 3);
    }

    #[test]
    fn a_copy_its_device_acknowledged_is_not_routed_again() {
        let mut f = Fanout::new(FanoutConfig { partitions: 2, retain: Duration::from_secs(50) });
        run(&mut f, FanoutInput::Assigned { partition: 0, offset: 0 });
        let reads = record(&mut f, 0, 0, 3);
        let asked = page(&mut f, reads[0], &[SENDER, UserId(4), UserId(5)]);
        for (req, _, members) in asked {
            routed(&mut f, req, members.len(), online(2));
        }
        // User 4's phone acknowledged its copy; user 5's did not.
        run(&mut f, FanoutInput::Acked { id: msg().id, device: phone(4) });
        let out = run(&mut f, FanoutInput::ServerDown { server: ServerId(2) });
        let again: Vec<UserId> = out
            .iter()
            .map(|o| match *o {
                FanoutOutput::Reroute { msg, .. } => msg.to,
                _ => panic!("{out:?}"),
            })
            .collect();
        assert_eq!(again, vec![UserId(5)]);
        assert_eq!(f.replayed(), 1);
    }

    #[test]
    fn an_unacknowledged_copy_is_forgotten_after_the_retention() {
        let mut f = Fanout::new(FanoutConfig { partitions: 2, retain: Duration::from_secs(50) });
        run(&mut f, FanoutInput::Assigned { partition: 0, offset: 0 });
        let reads = record(&mut f, 0, 0, 2);
        let asked = page(&mut f, reads[0], &[SENDER, UserId(4)]);
        routed(&mut f, asked[0].0, 1, online(2));
        let mut out = Vec::new();
        for s in 1..=49 {
            f.on_tick(Time::from_secs(s), &mut out);
        }
        assert_eq!(f.handed.len(), 1, "kept for the retention");
        f.on_tick(Time::from_secs(51), &mut out);
        assert!(f.handed.is_empty(), "forgotten within a sweep after it");
        assert!(run(&mut f, FanoutInput::ServerDown { server: ServerId(2) }).is_empty());
    }

    #[test]
    fn a_page_read_unanswered_in_time_is_asked_again_of_the_next_replica() {
        let mut f = fanout();
        let first = record(&mut f, 0, 0, 3)[0];
        let mut out = Vec::new();
        f.on_tick(Time::ZERO + PAGE_TIMEOUT, &mut out);
        let again = match out[..] {
            [FanoutOutput::ReadPage { req, group: GROUP, page: 0, attempt: 1 }] => req,
            _ => panic!("{out:?}"),
        };
        // The late answer to the first read is ignored; the second is taken.
        assert!(page(&mut f, first, &[SENDER, UserId(4), UserId(5)]).is_empty());
        assert_eq!(page(&mut f, again, &[SENDER, UserId(4), UserId(5)]).len(), 2);
    }

    #[test]
    fn a_retried_send_under_a_new_id_is_dropped_as_a_repeat() {
        let mut f = fanout();
        record(&mut f, 0, 0, 3);
        let retry = ChatMessage { id: MessageId(99), ..msg() };
        let out = run(&mut f, FanoutInput::Record { partition: 0, offset: 1, msg: retry, group: GROUP, members: 3 });
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(f.repeats(), 1);
        // The same record again (a replay from the commit) is fanned out again.
        assert_eq!(record(&mut f, 0, 0, 3).len(), 1);
    }
}
