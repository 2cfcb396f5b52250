//! One session-store Redis shard: `session:{user}`, the inbox sorted sets `inbox:{user}`,
//! and receipts stored for senders who were offline, for the users that hash to it.
//! Its compound operations (route-or-inbox, route-or-store a receipt) are the Lua scripts
//! a real deployment would run: atomic on the shard, which closes the race between a
//! device reconnecting and a message being routed to its inbox.

use rustc_hash::FxHashMap;
use std::time::Duration;
use wasim_model::{
    ChatMessage, DeviceId, InboxPos, PackedMessage, Receipt, Route, ServerId, SessionStore, SessionWrite, Table, Time,
    UserId,
};

/// The most pointers one inbox holds. A phone offline for weeks must not grow a shard
/// without bound; past this the oldest pointers are dropped and counted.
pub const INBOX_LEN_MAX: usize = 100_000;
/// The most receipts stored for one offline sender; past this the oldest are dropped.
pub const STORED_RECEIPTS_MAX: usize = 10_000;

/// The shard's `inbox:{user}` sorted sets, scored by the order of addition (their members
/// name the message and its conversation, so rows can be read back). A user's entries are
/// numbered from 0 for the life of the inbox; past `INBOX_LEN_MAX` the oldest no longer
/// count.
///
/// Laid out for the write path, where a group message adds a pointer to each of hundreds
/// of offline members' inboxes at once: the entries of all inboxes go to one log, each
/// linked to the same user's entry before it, and each user with an inbox has a head (its
/// newest entry and its count) in a compact table by user. An add touches the head and
/// the log's tail; a hash map of growing queues cost a miss at the table, one at the
/// queue, and a copy each time a queue grew. A fetch (a device reconnecting) walks its
/// chain back. Few users have an inbox even at the card's full load (one in seven: the
/// others were online for every message), so the heads take 12-byte slots for those only,
/// where a dense vector took 8 bytes for every user of the shard.
///
/// A group message's pointers go to a log of their own, 8 bytes each, naming the message
/// kept once for the members a pipeline adds it for (`group_messages`), where a copy with
/// each pointer took 32: the members offline when a group speaks (on a connect ramp, most
/// of them) took most of the inboxes' memory.
#[derive(Debug, Default)]
struct Inboxes {
    /// The heads of the users with an inbox.
    heads: Table<u32, InboxHead>,
    log: Vec<InboxEntry>,
    group_log: Vec<GroupEntry>,
    group_messages: Vec<PackedMessage>,
}

/// A user's inbox: its newest entry (a `Link`) and how many were ever added.
#[derive(Clone, Copy, Debug, Default)]
struct InboxHead {
    newest: u32,
    count: u32,
}

/// A link to an entry: its index in `Inboxes::log` plus one, or with `GROUP_LINK` set in
/// `Inboxes::group_log`; 0: none.
const GROUP_LINK: u32 = 1 << 31;

/// A pointer: `conversation:id` in Redis. The simulation keeps the message it names with
/// it (packed), so that the fetch can carry it and Cassandra need keep only which replicas
/// hold each row, not its bytes: the inbox holds the few messages some device has yet to
/// fetch, where the rows were every message.
#[derive(Clone, Copy, Debug)]
struct InboxEntry {
    msg: PackedMessage,
    /// The same user's entry before this one (a link).
    previous: u32,
}

const _: () = assert!(std::mem::size_of::<InboxEntry>() == 32);

/// A pointer to a group message: the message (its index in `Inboxes::group_messages`) and
/// the same user's entry before this one (a link).
#[derive(Clone, Copy, Debug)]
struct GroupEntry {
    message: u32,
    previous: u32,
}

impl InboxHead {
    /// The position of the oldest entry still counted.
    fn base(&self) -> u32 {
        self.count.saturating_sub(INBOX_LEN_MAX as u32)
    }
}

impl Inboxes {
    fn head(&self, user: UserId) -> InboxHead {
        self.heads.get(user.0).copied().unwrap_or_default()
    }

    fn prefetch(&self, user: UserId) {
        self.heads.prefetch(user.0);
    }

    /// Add an entry; returns whether an old one stopped counting (the inbox was full).
    fn add(&mut self, user: UserId, msg: &ChatMessage) -> bool {
        let head = self.heads.get_or_insert_default(user.0);
        let packed = PackedMessage::of(msg);
        if msg.conversation.group_id().is_some() {
            // The members' copies pack alike (a group message's recipient is left out).
            if self.group_messages.last() != Some(&packed) {
                self.group_messages.push(packed);
            }
            assert!(self.group_log.len() < GROUP_LINK as usize - 1, "a session shard holds 2 billion group pointers");
            let message = (self.group_messages.len() - 1) as u32;
            wasim_model::push_compactly(&mut self.group_log, GroupEntry { message, previous: head.newest });
            head.newest = GROUP_LINK | self.group_log.len() as u32;
        } else {
            assert!(self.log.len() < GROUP_LINK as usize - 1, "a session shard holds 2 billion inbox pointers");
            wasim_model::push_compactly(&mut self.log, InboxEntry { msg: packed, previous: head.newest });
            head.newest = self.log.len() as u32;
        }
        head.count += 1;
        head.count > INBOX_LEN_MAX as u32
    }

    /// The entries of `user` from position `cursor` on (no earlier than the oldest still
    /// counted), oldest first; and the position after the last.
    fn since(&self, user: UserId, cursor: InboxPos) -> (Vec<(InboxPos, ChatMessage)>, InboxPos) {
        let head = self.head(user);
        let first = cursor.0.max(head.base());
        let mut entries = Vec::with_capacity(head.count.saturating_sub(first) as usize);
        let (mut at, mut pos) = (head.newest, head.count);
        while pos > first {
            pos -= 1;
            let msg = if at & GROUP_LINK != 0 {
                let e = self.group_log[(at & !GROUP_LINK) as usize - 1];
                at = e.previous;
                self.group_messages[e.message as usize]
            } else {
                let e = self.log[at as usize - 1];
                at = e.previous;
                e.msg
            };
            entries.push((InboxPos(pos), msg.message(user)));
        }
        entries.reverse();
        (entries, InboxPos(head.count))
    }
}

/// The data of one shard.
#[derive(Debug)]
pub struct RedisShard {
    sessions: SessionStore,
    inboxes: Inboxes,
    /// Receipts stored for offline senders, each under a number of the shard's (`stored`),
    /// in the order stored.
    receipts: FxHashMap<UserId, Vec<(u32, Receipt)>>,
    /// The last number given to a stored receipt.
    stored: u32,
    dropped: u64,
}

impl Default for RedisShard {
    fn default() -> Self {
        RedisShard::with_stride(1, 0)
    }
}

impl RedisShard {
    /// A shard for the users `u % stride == shard`, sized for about `users` keys.
    pub fn with_stride(stride: u32, users: usize) -> RedisShard {
        RedisShard {
            sessions: SessionStore::with_stride(stride, users),
            inboxes: Inboxes::default(),
            receipts: FxHashMap::default(),
            stored: 0,
            dropped: 0,
        }
    }

    /// A hint that a command for `user`'s keys comes soon: the session entry is loaded
    /// meanwhile.
    #[inline]
    pub fn prefetch(&self, user: UserId) {
        self.sessions.prefetch(user);
        self.inboxes.prefetch(user);
    }

    /// `SET session:{user}` for one device's connection `epoch` with a TTL, fenced by the
    /// epoch (see [`SessionStore::set`]).
    pub fn session_set(
        &mut self,
        device: DeviceId,
        server: ServerId,
        epoch: u8,
        now: Time,
        ttl: Duration,
    ) -> SessionWrite {
        self.sessions.set(device.user, device.slot, server, epoch, now, ttl)
    }

    /// Mark a device offline if its field still holds connection `epoch` on `server`.
    pub fn session_clear(&mut self, device: DeviceId, server: ServerId, epoch: u8, now: Time) {
        self.sessions.clear(device.user, device.slot, server, epoch, now);
    }

    /// The server the session routes `device` to at `now`, if any.
    pub fn session_server(&self, device: DeviceId, now: Time) -> Option<ServerId> {
        self.sessions.get(device.user, now).and_then(|e| e.server_of(device.slot))
    }

    /// Keep the session writes of the last `lag` (see [`SessionStore::track_replication`]).
    pub fn track_replication(&mut self, lag: std::time::Duration) {
        self.sessions.track_replication(lag);
    }

    /// The primary died at `crash`: the replica takes over without the session writes it
    /// had not received; how many. Inbox pointers and stored receipts are written with
    /// `WAIT 1` (the replica has them before the command answers), so they survive.
    pub fn promote_replica(&mut self, crash: Time, promoted: Time) -> u64 {
        self.sessions.promote_replica(crash, promoted)
    }

    /// Route unknown devices to the inbox for `settle` after a promotion (see
    /// [`SessionStore::settle_after_promotion`]).
    pub fn settle_after_promotion(&mut self, settle: Duration) {
        self.sessions.settle_after_promotion(settle);
    }

    /// Route-or-inbox for `msg`'s recipient: the servers of its connected devices (other
    /// than `exclude`), with an inbox pointer written when any device needs one.
    pub fn route(&mut self, msg: &ChatMessage, exclude: Option<wasim_model::Exclusion>, now: Time) -> Route {
        let route = self.sessions.route(msg.to, exclude, now);
        if route.inbox {
            self.inbox_add(msg.to, msg);
        }
        route
    }

    /// `ZADD inbox:{user} <next position> conversation:id`. A message added again (handed
    /// back by a server after an earlier fetch read it) takes a new position, so a device
    /// that fetched past its old one fetches it again; the device shows it once.
    pub fn inbox_add(&mut self, user: UserId, msg: &ChatMessage) {
        if self.inboxes.add(user, msg) {
            self.dropped += 1;
        }
    }

    /// `ZRANGEBYSCORE inbox:{user} [cursor +inf WITHSCORES`: the entries from `cursor` on,
    /// in the order they were added, with their positions; and the position after the last.
    pub fn inbox_since(&self, user: UserId, cursor: InboxPos) -> (Vec<(InboxPos, ChatMessage)>, InboxPos) {
        self.inboxes.since(user, cursor)
    }

    /// Route a receipt to the server of the sender's phone, or store it for the sender's
    /// next fetch when the phone is offline (or only on `exclude`, while it holds).
    pub fn route_receipt(
        &mut self,
        receipt: Receipt,
        exclude: Option<wasim_model::Exclusion>,
        now: Time,
    ) -> Option<ServerId> {
        let sender = receipt.msg.from;
        let entry = self.sessions.get(sender, now);
        let server = entry.and_then(|e| e.server_of(wasim_model::DeviceSlot(0)));
        match (server, entry) {
            (Some(s), Some(e)) if !exclude.is_some_and(|x| x.holds(&e, s)) => Some(s),
            _ => {
                self.stored = self.stored.wrapping_add(1).max(1);
                let stored = self.receipts.entry(sender).or_default();
                stored.push((self.stored, receipt));
                if stored.len() > STORED_RECEIPTS_MAX {
                    stored.remove(0);
                    self.dropped += 1;
                }
                None
            }
        }
    }

    /// The receipts stored for `user`, each with its number, oldest first. They stay
    /// stored until the server they went to says the phone heard them
    /// (`forget_receipts`): a server that dies with them unheard loses nothing.
    pub fn stored_receipts(&self, user: UserId) -> &[(u32, Receipt)] {
        self.receipts.get(&user).map_or(&[], Vec::as_slice)
    }

    /// Forget the receipts stored for `user` up to number `upto` (handed over and heard).
    pub fn forget_receipts(&mut self, user: UserId, upto: u32) {
        if let Some(stored) = self.receipts.get_mut(&user) {
            stored.retain(|&(n, _)| n > upto);
            if stored.is_empty() {
                self.receipts.remove(&user);
            }
        }
    }

    /// Call `f` for each device online at `now` with its server (see
    /// `SessionStore::for_each_online`).
    pub fn for_each_online(&self, shard: u32, now: Time, f: impl FnMut(UserId, wasim_model::DeviceSlot, ServerId)) {
        self.sessions.for_each_online(shard, now, f)
    }

    /// Session keys set so far.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Inbox pointers and stored receipts dropped at their limits.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasim_model::{ConversationId, DeviceSlot, MessageId, ReceiptState};

    fn msg(id: u64) -> ChatMessage {
        ChatMessage {
            id: MessageId(id),
            conversation: ConversationId::direct(UserId(1), UserId(2)),
            from: UserId(1),
            to: UserId(2),
            client_seq: 0,
            sent_at: Time::ZERO,
        }
    }

    fn ids(r: &RedisShard, user: UserId, cursor: u32) -> (Vec<u64>, InboxPos) {
        let (entries, end) = r.inbox_since(user, InboxPos(cursor));
        (entries.iter().map(|e| e.1.id.0).collect(), end)
    }

    /// A message to `user` with id `id`.
    fn to(user: UserId, id: u64) -> ChatMessage {
        ChatMessage { to: user, conversation: ConversationId::direct(UserId(1), user), ..msg(id) }
    }

    #[test]
    fn an_inbox_gives_back_the_message_a_pointer_names_a_group_messages_as_the_members_copy() {
        let mut r = RedisShard::default();
        let one = to(UserId(4), 5);
        let group = ChatMessage {
            conversation: ConversationId::group(wasim_model::GroupId(3)),
            to: UserId::GROUP,
            client_seq: 8,
            sent_at: Time::from_ms(70),
            ..msg(6)
        };
        r.inbox_add(UserId(4), &one);
        r.inbox_add(UserId(4), &ChatMessage { to: UserId(4), ..group });
        r.inbox_add(UserId(9), &ChatMessage { to: UserId(9), ..group });
        let entries = |u| r.inbox_since(u, InboxPos(0)).0.into_iter().map(|e| e.1).collect::<Vec<_>>();
        assert_eq!(entries(UserId(4)), vec![one, ChatMessage { to: UserId(4), ..group }]);
        assert_eq!(entries(UserId(9)), vec![ChatMessage { to: UserId(9), ..group }]);
    }

    #[test]
    fn inboxes_mixing_group_and_direct_pointers_read_back_as_queues_of_their_messages() {
        // Against a queue per user: random adds of 1:1 messages and of group messages to
        // runs of members (a pipeline's batch, sometimes the same message again later),
        // read from random cursors.
        let mut r = RedisShard::with_stride(3, 10);
        let mut model: Vec<Vec<ChatMessage>> = vec![Vec::new(); 30];
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut next = |n: u64| rng.random_range(0..n);
        let users: Vec<u32> = (0..30).filter(|u| u % 3 == 1).collect();
        let mut last_group = None;
        for id in 1..3_000u64 {
            if next(3) == 0 {
                let u = users[next(users.len() as u64) as usize];
                let m = to(UserId(u), id);
                r.inbox_add(UserId(u), &m);
                model[u as usize].push(m);
            } else {
                let group = match last_group {
                    Some(g) if next(4) == 0 => g,
                    _ => ChatMessage {
                        conversation: ConversationId::group(wasim_model::GroupId(next(5) as u32)),
                        to: UserId::GROUP,
                        client_seq: next(100) as u32,
                        sent_at: Time::from_ms(id),
                        ..msg(id)
                    },
                };
                last_group = Some(group);
                for _ in 0..=next(4) {
                    let u = users[next(users.len() as u64) as usize];
                    let copy = ChatMessage { to: UserId(u), ..group };
                    r.inbox_add(UserId(u), &copy);
                    model[u as usize].push(copy);
                }
            }
        }
        for &u in &users {
            let want = &model[u as usize];
            for cursor in [0, 1, want.len() as u32 / 2, want.len() as u32, want.len() as u32 + 3] {
                let (got, end) = r.inbox_since(UserId(u), InboxPos(cursor));
                assert_eq!(end, InboxPos(want.len() as u32));
                let expected: Vec<_> =
                    want.iter().enumerate().skip(cursor as usize).map(|(i, m)| (InboxPos(i as u32), *m)).collect();
                assert_eq!(got, expected, "user {u} from {cursor}");
            }
        }
        assert!(r.inboxes.group_messages.len() < r.inboxes.group_log.len(), "members' copies share a message");
    }

    #[test]
    fn an_inbox_is_read_from_a_position_in_the_order_of_addition() {
        let mut r = RedisShard::default();
        let u = UserId(4);
        for id in [5, 3, 9] {
            r.inbox_add(u, &to(u, id));
        }
        assert_eq!(ids(&r, u, 0), (vec![5, 3, 9], InboxPos(3)));
        assert_eq!(ids(&r, u, 2), (vec![9], InboxPos(3)));
        assert_eq!(ids(&r, u, 7), (vec![], InboxPos(3)), "a cursor past the end reads nothing");
        assert_eq!(ids(&r, UserId(5), 0), (vec![], InboxPos(0)));
    }

    #[test]
    fn interleaved_inboxes_of_one_shard_keep_their_own_entries_and_positions() {
        // Shard 1 of 4: users 1, 5, 9, ... Their adds interleave in the shard's log.
        let mut r = RedisShard::with_stride(4, 0);
        let users = [UserId(1), UserId(5), UserId(4_001)];
        for round in 0..50u64 {
            for (k, &u) in users.iter().enumerate() {
                if round % (k as u64 + 1) == 0 {
                    r.inbox_add(u, &to(u, 1_000 * k as u64 + round));
                }
            }
        }
        for (k, &u) in users.iter().enumerate() {
            let all: Vec<u64> =
                (0..50).filter(|round| round % (k as u64 + 1) == 0).map(|round| 1_000 * k as u64 + round).collect();
            assert_eq!(ids(&r, u, 0), (all.clone(), InboxPos(all.len() as u32)), "user {}", u.0);
            assert_eq!(ids(&r, u, 3), (all[3..].to_vec(), InboxPos(all.len() as u32)), "user {} from 3", u.0);
        }
        assert_eq!(ids(&r, UserId(9), 0), (vec![], InboxPos(0)), "a user with no inbox");
    }

    #[test]
    fn a_message_added_again_is_read_again_past_an_old_cursor() {
        let mut r = RedisShard::default();
        let u = UserId(4);
        r.inbox_add(u, &to(u, 3));
        r.inbox_add(u, &to(u, 9));
        // A device fetched both (cursor 2); a server hands 3 back (its push was lost).
        r.inbox_add(u, &to(u, 3));
        assert_eq!(ids(&r, u, 2), (vec![3], InboxPos(3)));
    }

    #[test]
    fn a_full_inbox_trims_its_oldest_and_keeps_positions() {
        let mut r = RedisShard::default();
        let u = UserId(1);
        for id in 0..INBOX_LEN_MAX as u64 + 2 {
            r.inbox_add(u, &to(u, id));
        }
        assert_eq!(r.dropped(), 2);
        let (first, end) = ids(&r, u, 0);
        assert_eq!((first[0], first.len(), end), (2, INBOX_LEN_MAX, InboxPos(INBOX_LEN_MAX as u32 + 2)));
    }

    #[test]
    fn route_writes_the_inbox_only_for_an_offline_recipient() {
        let mut r = RedisShard::default();
        let route = r.route(&msg(1), None, Time::ZERO);
        assert!(route.inbox);
        r.session_set(DeviceId::phone(UserId(2)), ServerId(3), 1, Time::ZERO, Duration::from_secs(60));
        let route = r.route(&msg(2), None, Time::ZERO);
        assert_eq!(route.forward[0], Some(ServerId(3)));
        assert!(!route.inbox);
        let route = r.route(&msg(3), Some(wasim_model::Exclusion::new(ServerId(3), Time::ZERO)), Time::ZERO);
        assert!(route.inbox, "the excluded server counts as offline");
        assert_eq!(ids(&r, UserId(2), 0).0, vec![1, 3]);
    }

    #[test]
    fn receipts_for_an_offline_sender_are_stored_until_heard() {
        let mut r = RedisShard::default();
        let receipt =
            Receipt { msg: msg(1), state: ReceiptState::Read, by: DeviceId::phone(UserId(2)), at: Time::ZERO };
        assert_eq!(r.route_receipt(receipt, None, Time::ZERO), None);
        r.session_set(
            DeviceId { user: UserId(1), slot: DeviceSlot(0) },
            ServerId(8),
            1,
            Time::ZERO,
            Duration::from_secs(9),
        );
        assert_eq!(r.route_receipt(receipt, None, Time::ZERO), Some(ServerId(8)));
        assert_eq!(r.stored_receipts(UserId(1)), &[(1, receipt)]);
        // Handing them over forgets nothing: the server they go to may die first.
        assert_eq!(r.stored_receipts(UserId(1)), &[(1, receipt)]);
        // One stored after the hand-over outlives the forget of those handed over.
        let later = Receipt { state: ReceiptState::Delivered, ..receipt };
        r.session_clear(DeviceId::phone(UserId(1)), ServerId(8), 1, Time::ZERO);
        assert_eq!(r.route_receipt(later, None, Time::ZERO), None);
        r.forget_receipts(UserId(1), 1);
        assert_eq!(r.stored_receipts(UserId(1)), &[(2, later)]);
        r.forget_receipts(UserId(1), 2);
        assert!(r.stored_receipts(UserId(1)).is_empty());
    }
}
