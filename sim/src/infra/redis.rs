//! One Redis shard: the session keys (`session:{user}`) and inbox sorted sets
//! (`inbox:{user}`) of the users that hash to it.

use rustc_hash::FxHashMap;
use std::time::Duration;
use wasim_model::{DeviceId, MessageId, ServerId, SessionEntry, SessionStore, Time, UserId};

/// The most pointers one inbox holds. A phone offline for weeks must not grow a shard
/// without bound; past this the oldest pointers are dropped and counted.
pub const INBOX_LEN_MAX: usize = 100_000;

/// The data of one shard.
#[derive(Debug, Default)]
pub struct RedisShard {
    sessions: SessionStore,
    /// `inbox:{user}`: message ids in ascending order (a sorted set scored by id).
    inboxes: FxHashMap<UserId, Vec<MessageId>>,
    inbox_dropped: u64,
}

impl RedisShard {
    /// `SET session:{user}` for one device with a TTL.
    pub fn session_set(&mut self, device: DeviceId, server: ServerId, now: Time, ttl: Duration) {
        self.sessions.set(device.user, device.slot, server, now, ttl);
    }

    /// Clear a device's field if it still points at `server`.
    pub fn session_clear(&mut self, device: DeviceId, server: ServerId) {
        self.sessions.clear(device.user, device.slot, server);
    }

    /// `GET session:{user}`.
    pub fn session_get(&self, user: UserId, now: Time) -> Option<SessionEntry> {
        self.sessions.get(user, now)
    }

    /// `ZADD inbox:{user} id id`: idempotent, keeps ids sorted.
    pub fn inbox_add(&mut self, user: UserId, id: MessageId) {
        let inbox = self.inboxes.entry(user).or_default();
        if let Err(at) = inbox.binary_search(&id) {
            inbox.insert(at, id);
            if inbox.len() > INBOX_LEN_MAX {
                inbox.remove(0);
                self.inbox_dropped += 1;
            }
        }
    }

    /// `ZRANGEBYSCORE inbox:{user} (cursor +inf`: ids after the cursor, ascending.
    #[cfg(test)]
    pub fn inbox_since(&self, user: UserId, cursor: MessageId) -> &[MessageId] {
        let Some(inbox) = self.inboxes.get(&user) else { return &[] };
        let from = inbox.partition_point(|&id| id <= cursor);
        &inbox[from..]
    }

    /// Session keys held (live or not yet touched since expiry).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_is_a_sorted_set() {
        let mut r = RedisShard::default();
        let u = UserId(4);
        for id in [5, 3, 9, 3] {
            r.inbox_add(u, MessageId(id));
        }
        assert_eq!(r.inbox_since(u, MessageId(0)), &[MessageId(3), MessageId(5), MessageId(9)]);
        assert_eq!(r.inbox_since(u, MessageId(5)), &[MessageId(9)]);
        assert!(r.inbox_since(UserId(5), MessageId(0)).is_empty());
    }

    #[test]
    fn session_roundtrip() {
        let mut r = RedisShard::default();
        let d = DeviceId::phone(UserId(1));
        r.session_set(d, ServerId(2), Time::ZERO, Duration::from_secs(10));
        assert_eq!(r.session_get(UserId(1), Time::from_secs(1)).unwrap().servers[0], Some(ServerId(2)));
        r.session_clear(d, ServerId(2));
        assert_eq!(r.session_get(UserId(1), Time::from_secs(1)), None);
        assert_eq!(r.session_count(), 0);
    }
}
