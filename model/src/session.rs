//! The session store's semantics (`session:{user}` -> chat server per device, with a TTL)
//! and the router's decision that follows from it.

use crate::{DeviceSlot, ServerId, Time, UserId};
use rustc_hash::FxHashMap;
use std::time::Duration;

/// The most devices one user can have connected at once (phone + web for now). Bounds the
/// session value so that it stays a fixed-size record.
pub const DEVICES_PER_USER_MAX: usize = 2;

/// The value of `session:{user}`: which chat server holds each of the user's devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionEntry {
    pub servers: [Option<ServerId>; DEVICES_PER_USER_MAX],
    /// The key's expiry on the store's clock (`EX 86400` on every connect).
    pub expires_at: Time,
}

impl SessionEntry {
    /// Whether any device of the user is connected somewhere.
    pub fn any_online(&self) -> bool {
        self.servers.iter().any(Option::is_some)
    }
}

/// The router's decision for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteDecision {
    /// Forward to the chat server that owns the recipient's device connection.
    Forward(ServerId),
    /// Nobody is connected: store an inbox pointer for the next reconnect.
    Inbox,
}

impl RouteDecision {
    /// Route a message to the recipient's primary device given its session (if any).
    pub fn for_session(entry: Option<&SessionEntry>) -> RouteDecision {
        match entry.and_then(|e| e.servers.iter().flatten().next().copied()) {
            Some(server) => RouteDecision::Forward(server),
            None => RouteDecision::Inbox,
        }
    }
}

/// A stored session value packed into 8 bytes (12 with its key), so a shard holding
/// millions of users stays small and cache-friendly. Expiry is kept in whole
/// milliseconds, Redis's own TTL resolution.
#[derive(Clone, Copy, Debug, Default)]
struct Packed {
    servers: [u16; DEVICES_PER_USER_MAX],
    expires_ms: u32,
}

/// Marks an empty device field; server ids stay below 1,024 (Snowflake worker bits).
const NO_SERVER: u16 = u16::MAX;

impl Packed {
    fn unpack(self) -> SessionEntry {
        SessionEntry {
            servers: self.servers.map(|s| (s != NO_SERVER).then_some(ServerId(s))),
            expires_at: Time::from_ms(u64::from(self.expires_ms)),
        }
    }

    fn empty() -> Packed {
        Packed { servers: [NO_SERVER; DEVICES_PER_USER_MAX], expires_ms: 0 }
    }

    fn any_online(&self) -> bool {
        self.servers.iter().any(|&s| s != NO_SERVER)
    }
}

/// Session keys with Redis semantics: `SET session:{user} … EX ttl`, `GET`, `DEL`, with
/// expiry judged lazily against the caller's clock (as Redis does on access).
#[derive(Debug, Default)]
pub struct SessionStore {
    entries: FxHashMap<UserId, Packed>,
}

impl SessionStore {
    /// An empty store.
    pub fn new() -> SessionStore {
        SessionStore::default()
    }

    /// Record that `slot` of `user` is connected to `server`, refreshing the key's TTL.
    pub fn set(&mut self, user: UserId, slot: DeviceSlot, server: ServerId, now: Time, ttl: Duration) {
        assert!(server.0 != NO_SERVER, "server id {} is reserved", server.0);
        let entry = self.entries.entry(user).or_insert_with(Packed::empty);
        if u64::from(entry.expires_ms) <= now.as_ms() {
            *entry = Packed::empty();
        }
        entry.servers[usize::from(slot.0)] = server.0;
        // Expiry in ms saturates after 49 days, far beyond any run plus a day's TTL.
        entry.expires_ms = u32::try_from((now + ttl).as_ms()).unwrap_or(u32::MAX);
    }

    /// Clear `slot` of `user`, but only if it still points at `server`: a late disconnect
    /// from an old server must not erase a newer connection elsewhere.
    pub fn clear(&mut self, user: UserId, slot: DeviceSlot, server: ServerId) {
        if let Some(entry) = self.entries.get_mut(&user) {
            let s = &mut entry.servers[usize::from(slot.0)];
            if *s == server.0 {
                *s = NO_SERVER;
            }
            if !entry.any_online() {
                self.entries.remove(&user);
            }
        }
    }

    /// The live session of `user` at `now`, if any.
    pub fn get(&self, user: UserId, now: Time) -> Option<SessionEntry> {
        self.entries.get(&user).filter(|e| u64::from(e.expires_ms) > now.as_ms()).map(|e| e.unpack())
    }

    /// How many keys are stored (expired ones included until touched).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no keys are stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn set_then_get_routes_to_the_server() {
        let mut s = SessionStore::new();
        s.set(UserId(1), DeviceSlot(0), ServerId(3), Time::ZERO, DAY);
        let e = s.get(UserId(1), Time::from_secs(10));
        assert_eq!(RouteDecision::for_session(e.as_ref()), RouteDecision::Forward(ServerId(3)));
    }

    #[test]
    fn unknown_user_goes_to_the_inbox() {
        let s = SessionStore::new();
        assert_eq!(RouteDecision::for_session(s.get(UserId(9), Time::ZERO).as_ref()), RouteDecision::Inbox);
    }

    #[test]
    fn key_expires_after_its_ttl() {
        let mut s = SessionStore::new();
        s.set(UserId(1), DeviceSlot(0), ServerId(3), Time::ZERO, Duration::from_secs(5));
        assert!(s.get(UserId(1), Time::from_ms(4_999)).is_some());
        assert!(s.get(UserId(1), Time::from_secs(5)).is_none());
    }

    #[test]
    fn reconnect_elsewhere_moves_the_route_and_a_stale_clear_is_ignored() {
        let mut s = SessionStore::new();
        s.set(UserId(1), DeviceSlot(0), ServerId(3), Time::ZERO, DAY);
        s.set(UserId(1), DeviceSlot(0), ServerId(4), Time::from_secs(1), DAY);
        s.clear(UserId(1), DeviceSlot(0), ServerId(3));
        let e = s.get(UserId(1), Time::from_secs(2));
        assert_eq!(RouteDecision::for_session(e.as_ref()), RouteDecision::Forward(ServerId(4)));
        s.clear(UserId(1), DeviceSlot(0), ServerId(4));
        assert!(s.get(UserId(1), Time::from_secs(2)).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn a_set_after_expiry_starts_a_fresh_entry() {
        let mut s = SessionStore::new();
        s.set(UserId(1), DeviceSlot(1), ServerId(2), Time::ZERO, Duration::from_secs(1));
        s.set(UserId(1), DeviceSlot(0), ServerId(5), Time::from_secs(2), DAY);
        let e = s.get(UserId(1), Time::from_secs(2)).unwrap();
        assert_eq!(e.servers, [Some(ServerId(5)), None]);
    }
}
