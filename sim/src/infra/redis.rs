//! One session-store Redis shard: `session:{user}`, the inbox sorted sets `inbox:{user}`,
//! and receipts stored for senders who were offline, for the users that hash to it.
//! Its compound operations (route-or-inbox, route-or-store a receipt) are the Lua scripts
//! a real deployment would run: atomic on the shard, which closes the race between a
//! device reconnecting and a message being routed to its inbox.

use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::time::Duration;
use wasim_model::{
    ChatMessage, ConversationId, DeviceId, InboxPos, MessageId, Receipt, Route, ServerId, SessionStore, SessionWrite,
    Time, UserId,
};

/// The most pointers one inbox holds. A phone offline for weeks must not grow a shard
/// without bound; past this the oldest pointers are dropped and counted.
pub const INBOX_LEN_MAX: usize = 100_000;
/// The most receipts stored for one offline sender; past this the oldest are dropped.
pub const STORED_RECEIPTS_MAX: usize = 10_000;

/// `inbox:{user}`: a sorted set scored by the order of addition (its members name the
/// message and its conversation, so rows can be read back). Entries are numbered from 0
/// for the life of the inbox; the oldest are trimmed at `INBOX_LEN_MAX`.
#[derive(Debug, Default)]
struct Inbox {
    /// The position of `entries[0]`.
    base: u32,
    entries: VecDeque<(MessageId, ConversationId)>,
}

impl Inbox {
    fn end(&self) -> InboxPos {
        InboxPos(self.base + self.entries.len() as u32)
    }
}

/// The data of one shard.
#[derive(Debug, Default)]
pub struct RedisShard {
    sessions: SessionStore,
    inboxes: FxHashMap<UserId, Inbox>,
    receipts: FxHashMap<UserId, Vec<Receipt>>,
    dropped: u64,
}

impl RedisShard {
    /// A shard for the users `u % stride == shard`, sized for about `users` keys.
    pub fn with_stride(stride: u32, users: usize) -> RedisShard {
        RedisShard { sessions: SessionStore::with_stride(stride, users), ..RedisShard::default() }
    }

    /// A hint that a command for `user`'s keys comes soon: the session entry is loaded
    /// meanwhile.
    #[inline]
    pub fn prefetch(&self, user: UserId) {
        self.sessions.prefetch(user);
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
    pub fn route(&mut self, msg: &ChatMessage, exclude: Option<ServerId>, now: Time) -> Route {
        let route = self.sessions.route(msg.to, exclude, now);
        if route.inbox {
            self.inbox_add(msg.to, msg.id, msg.conversation);
        }
        route
    }

    /// `ZADD inbox:{user} <next position> conversation:id`. A message added again (handed
    /// back by a server after an earlier fetch read it) takes a new position, so a device
    /// that fetched past its old one fetches it again; the device shows it once.
    pub fn inbox_add(&mut self, user: UserId, id: MessageId, conversation: ConversationId) {
        let inbox = self.inboxes.entry(user).or_default();
        inbox.entries.push_back((id, conversation));
        if inbox.entries.len() > INBOX_LEN_MAX {
            inbox.entries.pop_front();
            inbox.base += 1;
            self.dropped += 1;
        }
    }

    /// `ZRANGEBYSCORE inbox:{user} [cursor +inf WITHSCORES`: the entries from `cursor` on,
    /// in the order they were added, with their positions; and the position after the last.
    pub fn inbox_since(
        &self,
        user: UserId,
        cursor: InboxPos,
    ) -> (impl Iterator<Item = (InboxPos, MessageId, ConversationId)> + '_, InboxPos) {
        let Some(inbox) = self.inboxes.get(&user) else {
            return (None.into_iter().flatten(), InboxPos(0));
        };
        let first = cursor.0.max(inbox.base);
        let skip = ((first - inbox.base) as usize).min(inbox.entries.len());
        let entries =
            inbox.entries.range(skip..).enumerate().map(move |(i, &(id, c))| (InboxPos(first + i as u32), id, c));
        (Some(entries).into_iter().flatten(), inbox.end())
    }

    /// Route a receipt to the server of the sender's phone, or store it for the sender's
    /// next fetch when the phone is offline (or only on `exclude`).
    pub fn route_receipt(&mut self, receipt: Receipt, exclude: Option<ServerId>, now: Time) -> Option<ServerId> {
        let sender = receipt.msg.from;
        let server = self.sessions.get(sender, now).and_then(|e| e.server_of(wasim_model::DeviceSlot(0)));
        match server {
            Some(s) if Some(s) != exclude => Some(s),
            _ => {
                let stored = self.receipts.entry(sender).or_default();
                stored.push(receipt);
                if stored.len() > STORED_RECEIPTS_MAX {
                    stored.remove(0);
                    self.dropped += 1;
                }
                None
            }
        }
    }

    /// Hand over (and forget) the receipts stored for `user`.
    pub fn take_receipts(&mut self, user: UserId) -> Vec<Receipt> {
        self.receipts.remove(&user).unwrap_or_default()
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
    use wasim_model::{DeviceSlot, ReceiptState};

    fn msg(id: u64) -> ChatMessage {
        ChatMessage {
            id: MessageId(id),
            conversation: ConversationId(7),
            from: UserId(1),
            to: UserId(2),
            client_seq: 0,
            sent_at: Time::ZERO,
        }
    }

    fn ids(r: &RedisShard, user: UserId, cursor: u32) -> (Vec<u64>, InboxPos) {
        let (entries, end) = r.inbox_since(user, InboxPos(cursor));
        (entries.map(|e| e.1 .0).collect(), end)
    }

    #[test]
    fn an_inbox_is_read_from_a_position_in_the_order_of_addition() {
        let mut r = RedisShard::default();
        let u = UserId(4);
        for id in [5, 3, 9] {
            r.inbox_add(u, MessageId(id), ConversationId(1));
        }
        assert_eq!(ids(&r, u, 0), (vec![5, 3, 9], InboxPos(3)));
        assert_eq!(ids(&r, u, 2), (vec![9], InboxPos(3)));
        assert_eq!(ids(&r, u, 7), (vec![], InboxPos(3)), "a cursor past the end reads nothing");
        assert_eq!(ids(&r, UserId(5), 0), (vec![], InboxPos(0)));
    }

    #[test]
    fn a_message_added_again_is_read_again_past_an_old_cursor() {
        let mut r = RedisShard::default();
        let u = UserId(4);
        r.inbox_add(u, MessageId(3), ConversationId(1));
        r.inbox_add(u, MessageId(9), ConversationId(1));
        // A device fetched both (cursor 2); a server hands 3 back (its push was lost).
        r.inbox_add(u, MessageId(3), ConversationId(1));
        assert_eq!(ids(&r, u, 2), (vec![3], InboxPos(3)));
    }

    #[test]
    fn a_full_inbox_trims_its_oldest_and_keeps_positions() {
        let mut r = RedisShard::default();
        let u = UserId(1);
        for id in 0..INBOX_LEN_MAX as u64 + 2 {
            r.inbox_add(u, MessageId(id), ConversationId(1));
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
        let route = r.route(&msg(3), Some(ServerId(3)), Time::ZERO);
        assert!(route.inbox, "the excluded server counts as offline");
        assert_eq!(ids(&r, UserId(2), 0).0, vec![1, 3]);
    }

    #[test]
    fn receipts_for_an_offline_sender_are_stored_until_taken() {
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
        assert_eq!(r.take_receipts(UserId(1)), vec![receipt]);
        assert!(r.take_receipts(UserId(1)).is_empty());
    }
}
