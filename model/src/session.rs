//! The session store's semantics (`session:{user}` -> chat server per device, with a TTL)
//! and the routing decision that follows from it.

use crate::{DeviceSlot, ServerId, Time, UserId};
use std::collections::VecDeque;
use std::time::Duration;
use strength_reduce::StrengthReducedU32;

/// The most devices one user can have (phone + web). Bounds the session value so that it
/// stays a fixed-size record.
pub const DEVICES_PER_USER_MAX: usize = 2;

/// How long a session shard that re-registers sessions after a failover routes a device it
/// does not know as one it may have lost (see [`SessionStore::settle_after_promotion`]):
/// chat servers learn of the promotion a datacenter hop after it and write their
/// connections' sessions again at once, but a write on a lossy link can take TCP's whole
/// retransmission backoff (six retransmissions from a 200 ms timeout: 12.6 s) to arrive,
/// twice that if another waited before it on the connection, and what was routed
/// meanwhile must wait in the inbox for the device it skipped. The
/// cost: for this long, a message to a user with a device slot the store does not know
/// (a user with no web client) leaves an inbox pointer too, which its devices skip.
pub const SESSION_SETTLE_AFTER_PROMOTION: Duration = Duration::from_secs(30);

/// What the session store knows of one device slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSession {
    /// The user has no such device.
    #[default]
    None,
    /// The device exists but is not connected: messages for it wait in the inbox.
    Offline,
    /// Connected to this chat server.
    Online(ServerId),
}

/// The value of `session:{user}`: the state of each of the user's devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionEntry {
    pub devices: [DeviceSession; DEVICES_PER_USER_MAX],
    /// The key's expiry on the store's clock (`EX 86400` on every connect).
    pub expires_at: Time,
    /// When a device field was last written (set or cleared), to the ms.
    pub written_at: Time,
}

/// A server to route around: "its connection to the device is gone", decided at
/// `decided_at` (a router or a chat server found the server down, or the device no longer
/// on it). It is about the session as it was then: a session written since (the device
/// connected again, maybe to the same server restarted) is routed as it stands, else a
/// device back on that server would get an inbox pointer it has already fetched past.
/// (8 bytes: it travels in messages; the times compare to the ms, as the store keeps them.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exclusion {
    pub server: ServerId,
    decided_ms: u32,
}

impl Exclusion {
    /// `server` excluded as of `decided_at`.
    pub fn new(server: ServerId, decided_at: Time) -> Exclusion {
        Exclusion { server, decided_ms: decided_at.as_ms_u32() }
    }

    /// Whether the exclusion holds for `server` in `entry`: the same server, and the
    /// session not written since the exclusion was decided (within its ms).
    pub fn holds(&self, entry: &SessionEntry, server: ServerId) -> bool {
        self.server == server && entry.written_at.as_ms() <= u64::from(self.decided_ms)
    }
}

impl SessionEntry {
    /// The server holding a device, if it is connected.
    pub fn server_of(&self, slot: DeviceSlot) -> Option<ServerId> {
        match self.devices[usize::from(slot.0)] {
            DeviceSession::Online(s) => Some(s),
            _ => None,
        }
    }
}

/// Where a message for one user goes: to each connected device's server, and to the
/// user's inbox when any of the user's devices is offline (it fetches on reconnect).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub forward: [Option<ServerId>; DEVICES_PER_USER_MAX],
    pub inbox: bool,
}

impl Route {
    /// Route for a user given the session (if any). Devices on `exclude` count as offline
    /// (while the exclusion holds: see [`Exclusion`]): a server that lost a device must not
    /// be routed back to itself. Every user has a
    /// phone, so a user without a session gets an inbox pointer.
    pub fn for_session(entry: Option<&SessionEntry>, exclude: Option<Exclusion>) -> Route {
        let mut route = Route::default();
        let Some(e) = entry else {
            route.inbox = true;
            return route;
        };
        for (i, d) in e.devices.iter().enumerate() {
            match *d {
                DeviceSession::Online(s) if !exclude.is_some_and(|x| x.holds(e, s)) => route.forward[i] = Some(s),
                DeviceSession::Online(_) | DeviceSession::Offline => route.inbox = true,
                DeviceSession::None if i == 0 => route.inbox = true,
                DeviceSession::None => {}
            }
        }
        route
    }

    /// The servers to forward to, with the device slot on each.
    pub fn forwards(&self) -> impl Iterator<Item = (DeviceSlot, ServerId)> + '_ {
        self.forward.iter().enumerate().filter_map(|(i, s)| s.map(|s| (DeviceSlot(i as u8), s)))
    }
}

/// What a session write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionWrite {
    /// The field now names the server; `previous` is the other server it named until
    /// now, if any.
    Set { previous: Option<ServerId> },
    /// A newer connection of the device had written the field: nothing changed.
    Stale,
}

impl SessionWrite {
    /// The server the device was connected to until this write, if another one.
    pub fn previous(self) -> Option<ServerId> {
        match self {
            SessionWrite::Set { previous } => previous,
            SessionWrite::Stale => None,
        }
    }
}

/// A write the replica may not have: when, which entry, and the entry before it.
#[derive(Clone, Copy, Debug)]
struct Unreplicated {
    at: Time,
    index: usize,
    before: Packed,
}

/// The session writes of the last `lag`, newest last: Redis replicates asynchronously, so
/// a replica promoted when its primary dies lacks them.
#[derive(Debug)]
struct ReplicationLag {
    lag: Duration,
    writes: VecDeque<Unreplicated>,
}

/// A stored session value packed into 14 bytes (indexed by user, no key), so a shard holding
/// millions of users stays small and cache-friendly: aligned to 2 bytes, not to its `u32`s'
/// 4, which would pad it to 16 (200 MB over the card's 100M users). Expiry is kept in whole
/// milliseconds, Redis's own TTL resolution.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(2))]
struct Packed {
    devices: [u16; DEVICES_PER_USER_MAX],
    /// The low bits of the connection epoch that last wrote each device's field: the
    /// fence that keeps a late write of an older connection from overwriting a newer one.
    epochs: [u8; DEVICES_PER_USER_MAX],
    expires_ms: u32,
    /// When a device field was last written, in ms.
    written_ms: u32,
}

/// Device field codes; server ids stay below 1,024 (Snowflake worker bits).
const NO_DEVICE: u16 = u16::MAX;
const OFFLINE: u16 = u16::MAX - 1;

const _: () = assert!(std::mem::size_of::<Packed>() == 14);

impl Packed {
    fn unpack(self) -> SessionEntry {
        SessionEntry {
            devices: self.devices.map(|d| match d {
                NO_DEVICE => DeviceSession::None,
                OFFLINE => DeviceSession::Offline,
                s => DeviceSession::Online(ServerId(s)),
            }),
            expires_at: Time::from_ms(u64::from(self.expires_ms)),
            written_at: Time::from_ms(u64::from(self.written_ms)),
        }
    }

    fn empty() -> Packed {
        Packed {
            devices: [NO_DEVICE; DEVICES_PER_USER_MAX],
            epochs: [0; DEVICES_PER_USER_MAX],
            expires_ms: 0,
            written_ms: 0,
        }
    }
}

/// Session keys with Redis semantics: `SET session:{user} … EX ttl`, `GET`, with expiry
/// judged lazily against the caller's clock (as Redis does on access). A device that
/// disconnects stays known as offline, so its messages go to the inbox.
///
/// A shard holds the users `u` with `u % stride == shard`; their keys live in one dense
/// array indexed by `u / stride` (user ids are dense), which costs one memory access per
/// command where a hash table costs two.
#[derive(Debug)]
pub struct SessionStore {
    entries: Vec<Packed>,
    /// The writes a replica may not have yet, when the store tracks them.
    unreplicated: Option<ReplicationLag>,
    /// How long after a promotion routing takes a device the store does not know for one
    /// it may have lost (`None`: it never does, the card's design).
    settle: Option<Duration>,
    /// Until when it does so now.
    unsure_until: Time,
    /// The shard count, as a divisor by multiplication: every command divides by it.
    stride: StrengthReducedU32,
    keys: usize,
}

impl Default for SessionStore {
    fn default() -> Self {
        SessionStore::with_stride(1, 0)
    }
}

impl SessionStore {
    /// An empty store for users `u % stride == shard`, sized for about `users` keys.
    pub fn with_stride(stride: u32, users: usize) -> SessionStore {
        assert!(stride > 0, "a stride of zero shards");
        SessionStore {
            entries: Vec::with_capacity(users),
            unreplicated: None,
            settle: None,
            unsure_until: Time::ZERO,
            stride: StrengthReducedU32::new(stride),
            keys: 0,
        }
    }

    /// Keep the writes of the last `lag`, which an asynchronously replicating replica may
    /// not have yet, so that [`SessionStore::promote_replica`] can take them back.
    pub fn track_replication(&mut self, lag: Duration) {
        self.unreplicated = Some(ReplicationLag { lag, writes: VecDeque::new() });
    }

    /// After a promotion, for `settle`, route as if a device the store does not know might
    /// exist: a promoted replica may have lost the session writes that linked a user's
    /// other device, and until its chat server has registered it again (it does so on
    /// learning of the promotion), that device's messages get an inbox pointer, which it
    /// fetches when it reconnects. Without this, they went nowhere.
    pub fn settle_after_promotion(&mut self, settle: Duration) {
        self.settle = Some(settle);
    }

    /// Route-or-inbox for `user` at `now` (see [`Route::for_session`]), with a device the
    /// store does not know taken for one it may have lost while settling after a promotion.
    /// A message routed again (`exclude`: a replay, or one a server found its device gone
    /// from) also gets an inbox pointer: the server it now goes to may die before the
    /// device acknowledges it, and a chat server's replay is kept by no router to be sent
    /// again. The device fetches it on its next connect and shows it once.
    pub fn route(&self, user: UserId, exclude: Option<Exclusion>, now: Time) -> Route {
        let entry = self.get(user, now);
        let mut route = Route::for_session(entry.as_ref(), exclude);
        let maybe_lost = now < self.unsure_until && entry.is_some_and(|e| e.devices.contains(&DeviceSession::None));
        if maybe_lost || exclude.is_some() {
            route.inbox = true;
        }
        route
    }

    /// The primary died at `crash`; its replica takes over at `promoted` without the
    /// writes it had not received (those of the `lag` before the crash, and any after).
    /// Returns how many.
    pub fn promote_replica(&mut self, crash: Time, promoted: Time) -> u64 {
        if let Some(settle) = self.settle {
            self.unsure_until = self.unsure_until.max(promoted + settle);
        }
        let Some(log) = self.unreplicated.as_mut() else { return 0 };
        let since = Time(crash.as_us().saturating_sub(log.lag.as_micros() as u64));
        let mut lost = 0;
        // Newest first: each write's `before` is what the one before it left.
        while let Some(w) = log.writes.back().filter(|w| w.at > since) {
            let w = *w;
            log.writes.pop_back();
            self.entries[w.index] = w.before;
            lost += 1;
        }
        log.writes.clear();
        lost
    }

    /// Log that the entry at `index` is about to change at `now`.
    #[inline]
    fn log_write(&mut self, index: usize, now: Time) {
        if let Some(log) = self.unreplicated.as_mut() {
            let horizon = now.as_us().saturating_sub(log.lag.as_micros() as u64);
            while log.writes.front().is_some_and(|w| w.at.as_us() < horizon) {
                log.writes.pop_front();
            }
            let before = self.entries[index];
            log.writes.push_back(Unreplicated { at: now, index, before });
        }
    }

    /// The index of `user`'s key.
    #[inline]
    fn index(&self, user: UserId) -> usize {
        (user.0 / self.stride) as usize
    }

    /// A hint that a command for `user` comes soon: its key's entry is loaded meanwhile.
    #[inline]
    pub fn prefetch(&self, user: UserId) {
        if let Some(e) = self.entries.get(self.index(user)) {
            crate::prefetch(e);
        }
    }

    fn slot(&mut self, user: UserId) -> &mut Packed {
        let i = self.index(user);
        if i >= self.entries.len() {
            self.entries.resize(i + 1, Packed::empty());
        }
        &mut self.entries[i]
    }

    /// Record that `slot` of `user` is connected to `server` by its connection `epoch`
    /// (the low 8 bits of the device's connect count), refreshing the key's TTL. Returns
    /// what the write did: the other server the device was connected to until now, if any
    /// (that server may not know the device left: its old connection died silently).
    ///
    /// Writes are fenced by epoch: a connection older than the one that last wrote the
    /// field (its write delayed behind a clog, a slow link or a queue while the device
    /// moved on) changes nothing. Epochs compare as serial numbers, so a device would
    /// have to connect 128 times while one write is in flight to fool the fence.
    pub fn set(
        &mut self,
        user: UserId,
        slot: DeviceSlot,
        server: ServerId,
        epoch: u8,
        now: Time,
        ttl: Duration,
    ) -> SessionWrite {
        assert!(server.0 < OFFLINE, "server id {} is reserved", server.0);
        let index = self.index(user);
        let entry = *self.slot(user);
        let i = usize::from(slot.0);
        let expired = u64::from(entry.expires_ms) <= now.as_ms();
        if !expired && entry.devices[i] != NO_DEVICE && crate::epoch_is_older(epoch, entry.epochs[i]) {
            return SessionWrite::Stale;
        }
        self.log_write(index, now);
        let entry = &mut self.entries[index];
        let new_key = entry.expires_ms == 0;
        if expired {
            *entry = Packed::empty();
        }
        let field = &mut entry.devices[i];
        let previous = (*field < OFFLINE && *field != server.0).then_some(ServerId(*field));
        // (Planted: a live session on another server is kept.)
        if previous.is_none() || !crate::plant::planted(crate::plant::Plant::StaleSessionKept) {
            *field = server.0;
        }
        entry.epochs[i] = epoch;
        entry.written_ms = now.as_ms_u32();
        // Expiry in ms saturates after 49 days, far beyond any run plus a day's TTL; at
        // least 1, since 0 marks an absent key.
        entry.expires_ms = (now + ttl).as_ms_u32().max(1);
        if new_key {
            self.keys += 1;
        }
        SessionWrite::Set { previous }
    }

    /// Mark `slot` of `user` offline, but only if it still holds the connection `epoch`
    /// on `server`: a late disconnect of an old connection must not erase a newer one,
    /// on another server or on the same one.
    pub fn clear(&mut self, user: UserId, slot: DeviceSlot, server: ServerId, epoch: u8, now: Time) {
        let index = self.index(user);
        let i = usize::from(slot.0);
        if self.entries.get(index).is_some_and(|e| e.devices[i] == server.0 && e.epochs[i] == epoch) {
            self.log_write(index, now);
            self.entries[index].devices[i] = OFFLINE;
            self.entries[index].written_ms = now.as_ms_u32();
        }
    }

    /// The live session of `user` at `now`, if any.
    pub fn get(&self, user: UserId, now: Time) -> Option<SessionEntry> {
        self.entries.get(self.index(user)).filter(|e| u64::from(e.expires_ms) > now.as_ms()).map(|e| e.unpack())
    }

    /// The devices online at `now` with their servers, for the users of shard `shard` (the
    /// store holds users `u % stride == shard`).
    pub fn for_each_online(&self, shard: u32, now: Time, mut f: impl FnMut(UserId, DeviceSlot, ServerId)) {
        let stride = self.stride.get();
        for (i, e) in self.entries.iter().enumerate() {
            if u64::from(e.expires_ms) <= now.as_ms() {
                continue;
            }
            // Online fields hold a server id, below both markers (as `unpack` reads them).
            for (slot, &d) in e.devices.iter().enumerate() {
                if d < OFFLINE {
                    f(UserId(i as u32 * stride + shard), DeviceSlot(slot as u8), ServerId(d));
                }
            }
        }
    }

    /// How many keys were ever set (expired ones included).
    pub fn len(&self) -> usize {
        self.keys
    }

    /// Whether no key was ever set.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    const PHONE: DeviceSlot = DeviceSlot(0);
    const WEB: DeviceSlot = DeviceSlot(1);

    #[test]
    fn set_then_get_routes_to_the_server() {
        let mut s = SessionStore::default();
        s.set(UserId(1), PHONE, ServerId(3), 1, Time::ZERO, DAY);
        let e = s.get(UserId(1), Time::from_secs(10));
        let r = Route::for_session(e.as_ref(), None);
        assert_eq!(r.forward, [Some(ServerId(3)), None]);
        assert!(!r.inbox, "no other device of the user needs the inbox");
    }

    #[test]
    fn unknown_user_goes_to_the_inbox() {
        let s = SessionStore::default();
        let r = Route::for_session(s.get(UserId(9), Time::ZERO).as_ref(), None);
        assert_eq!(r, Route { forward: [None, None], inbox: true });
    }

    #[test]
    fn key_expires_after_its_ttl() {
        let mut s = SessionStore::default();
        s.set(UserId(1), PHONE, ServerId(3), 1, Time::ZERO, Duration::from_secs(5));
        assert!(s.get(UserId(1), Time::from_ms(4_999)).is_some());
        assert!(s.get(UserId(1), Time::from_secs(5)).is_none());
    }

    #[test]
    fn reconnect_elsewhere_moves_the_route_and_a_stale_clear_is_ignored() {
        let mut s = SessionStore::default();
        let set =
            |s: &mut SessionStore, server, epoch| s.set(UserId(1), PHONE, ServerId(server), epoch, Time::ZERO, DAY);
        assert_eq!(set(&mut s, 3, 1), SessionWrite::Set { previous: None });
        assert_eq!(set(&mut s, 3, 2), SessionWrite::Set { previous: None }, "the same server is no move");
        assert_eq!(set(&mut s, 4, 3), SessionWrite::Set { previous: Some(ServerId(3)) });
        s.clear(UserId(1), PHONE, ServerId(3), 2, Time::ZERO);
        let e = s.get(UserId(1), Time::from_secs(2)).unwrap();
        assert_eq!(e.server_of(PHONE), Some(ServerId(4)));
        s.clear(UserId(1), PHONE, ServerId(4), 3, Time::ZERO);
        let e = s.get(UserId(1), Time::from_secs(2)).unwrap();
        assert_eq!(e.devices[0], DeviceSession::Offline);
        assert_eq!(Route::for_session(Some(&e), None), Route { forward: [None, None], inbox: true });
    }

    #[test]
    fn a_late_write_of_an_older_connection_changes_nothing() {
        let mut s = SessionStore::default();
        let t = Time::ZERO;
        // Connection 7 on server 4 wrote its session late (held behind a clog) after
        // the device's connection 8 on server 2 had written its own.
        s.set(UserId(1), PHONE, ServerId(2), 8, t, DAY);
        assert_eq!(s.set(UserId(1), PHONE, ServerId(4), 7, t, DAY), SessionWrite::Stale);
        s.clear(UserId(1), PHONE, ServerId(4), 7, Time::ZERO);
        assert_eq!(s.get(UserId(1), t).unwrap().server_of(PHONE), Some(ServerId(2)));
        // A late disconnect of an older connection on the same server is ignored too.
        s.clear(UserId(1), PHONE, ServerId(2), 6, Time::ZERO);
        assert_eq!(s.get(UserId(1), t).unwrap().server_of(PHONE), Some(ServerId(2)));
        // Once cleared, an older connection cannot bring the field back either.
        s.clear(UserId(1), PHONE, ServerId(2), 8, Time::ZERO);
        assert_eq!(s.set(UserId(1), PHONE, ServerId(4), 7, t, DAY), SessionWrite::Stale);
        assert_eq!(s.get(UserId(1), t).unwrap().devices[0], DeviceSession::Offline);
        // Epochs wrap: 1 comes after 255.
        s.set(UserId(2), PHONE, ServerId(5), 255, t, DAY);
        assert_eq!(s.set(UserId(2), PHONE, ServerId(6), 1, t, DAY), SessionWrite::Set { previous: Some(ServerId(5)) });
        assert_eq!(s.set(UserId(2), PHONE, ServerId(5), 255, t, DAY), SessionWrite::Stale);
    }

    #[test]
    fn a_promoted_replica_lacks_the_writes_of_the_lag_before_the_crash() {
        let mut s = SessionStore::default();
        s.track_replication(Duration::from_millis(100));
        let ms = Time::from_ms;
        s.set(UserId(1), PHONE, ServerId(3), 1, ms(1_000), DAY);
        s.set(UserId(2), PHONE, ServerId(4), 1, ms(1_950), DAY);
        s.set(UserId(1), PHONE, ServerId(5), 2, ms(1_960), DAY);
        s.clear(UserId(1), PHONE, ServerId(5), 2, ms(1_970));
        s.set(UserId(3), WEB, ServerId(6), 1, ms(1_980), DAY);
        // Crash at 2 s with a 100 ms lag: every write after 1.9 s is lost, newest first.
        assert_eq!(s.promote_replica(ms(2_000), ms(2_000)), 4);
        assert_eq!(s.get(UserId(1), ms(2_000)).unwrap().server_of(PHONE), Some(ServerId(3)), "back to the first");
        assert_eq!(s.get(UserId(2), ms(2_000)), None, "never replicated");
        assert_eq!(s.get(UserId(3), ms(2_000)), None);
        // The fence is rolled back too: connection 2 can write again.
        assert_eq!(
            s.set(UserId(1), PHONE, ServerId(5), 2, ms(2_100), DAY),
            SessionWrite::Set { previous: Some(ServerId(3)) }
        );
        assert_eq!(s.promote_replica(ms(5_000), ms(5_000)), 0, "a second crash long after loses nothing");
    }

    #[test]
    fn while_settling_after_a_promotion_a_device_the_store_does_not_know_gets_the_inbox() {
        let ms = Time::from_ms;
        let mut s = SessionStore::default();
        s.track_replication(Duration::from_millis(100));
        s.settle_after_promotion(Duration::from_secs(5));
        s.set(UserId(1), PHONE, ServerId(3), 1, ms(1_000), DAY);
        // The web client links just before the crash: the promoted replica lacks it.
        s.set(UserId(1), WEB, ServerId(4), 1, ms(1_950), DAY);
        assert_eq!(s.promote_replica(ms(2_000), ms(3_000)), 1);
        let settling = s.route(UserId(1), None, ms(7_999));
        assert_eq!(settling, Route { forward: [Some(ServerId(3)), None], inbox: true }, "the web client may exist");
        let settled = s.route(UserId(1), None, ms(8_000));
        assert_eq!(settled, Route { forward: [Some(ServerId(3)), None], inbox: false });
        // Its server registers it again: both devices are known, no inbox.
        s.set(UserId(1), WEB, ServerId(4), 1, ms(3_500), DAY);
        assert_eq!(
            s.route(UserId(1), None, ms(4_000)),
            Route { forward: [Some(ServerId(3)), Some(ServerId(4))], inbox: false }
        );
        // The card's design does not settle.
        let mut card = SessionStore::default();
        card.set(UserId(1), PHONE, ServerId(3), 1, ms(1_000), DAY);
        card.promote_replica(ms(2_000), ms(3_000));
        assert!(!card.route(UserId(1), None, ms(4_000)).inbox);
    }

    #[test]
    fn a_message_reaches_every_device_and_the_inbox_covers_the_offline_one() {
        let mut s = SessionStore::default();
        s.set(UserId(1), PHONE, ServerId(3), 1, Time::ZERO, DAY);
        s.set(UserId(1), WEB, ServerId(5), 1, Time::ZERO, DAY);
        let both = Route::for_session(s.get(UserId(1), Time::ZERO).as_ref(), None);
        assert_eq!(both, Route { forward: [Some(ServerId(3)), Some(ServerId(5))], inbox: false });
        s.clear(UserId(1), WEB, ServerId(5), 1, Time::ZERO);
        let phone_only = Route::for_session(s.get(UserId(1), Time::ZERO).as_ref(), None);
        assert_eq!(phone_only, Route { forward: [Some(ServerId(3)), None], inbox: true });
    }

    #[test]
    fn an_excluded_server_is_treated_as_offline() {
        let mut s = SessionStore::default();
        s.set(UserId(1), PHONE, ServerId(3), 1, Time::ZERO, DAY);
        let exclude = Some(Exclusion::new(ServerId(3), Time::from_secs(1)));
        let r = Route::for_session(s.get(UserId(1), Time::from_secs(2)).as_ref(), exclude);
        assert_eq!(r, Route { forward: [None, None], inbox: true });
    }

    #[test]
    fn an_exclusion_does_not_outlive_the_session_it_was_about() {
        // Server 3 was found down at 1 s; the phone connected again to it, restarted, at
        // 5 s: a replay excluding 3, decided at 1 s and applied at 6 s, goes to 3 (the
        // phone has fetched its inbox already and would not read a new pointer).
        let mut s = SessionStore::default();
        s.set(UserId(1), PHONE, ServerId(3), 1, Time::ZERO, DAY);
        s.set(UserId(1), PHONE, ServerId(3), 2, Time::from_secs(5), DAY);
        let exclude = Some(Exclusion::new(ServerId(3), Time::from_secs(1)));
        let r = Route::for_session(s.get(UserId(1), Time::from_secs(6)).as_ref(), exclude);
        assert_eq!(r, Route { forward: [Some(ServerId(3)), None], inbox: false });
        // Decided after that write, it holds.
        let exclude = Some(Exclusion::new(ServerId(3), Time::from_secs(5)));
        let r = Route::for_session(s.get(UserId(1), Time::from_secs(6)).as_ref(), exclude);
        assert_eq!(r, Route { forward: [None, None], inbox: true });
    }

    #[test]
    fn a_message_routed_again_also_leaves_an_inbox_pointer() {
        // The phone moved from server 3 to server 4: a message server 3 found it gone from
        // goes to 4, and to the inbox too, should 4 die before the phone acknowledges it.
        let mut s = SessionStore::default();
        s.set(UserId(1), PHONE, ServerId(4), 1, Time::from_secs(1), DAY);
        let exclude = Some(Exclusion::new(ServerId(3), Time::from_secs(2)));
        assert_eq!(
            s.route(UserId(1), exclude, Time::from_secs(2)),
            Route { forward: [Some(ServerId(4)), None], inbox: true }
        );
        assert_eq!(
            s.route(UserId(1), None, Time::from_secs(2)),
            Route { forward: [Some(ServerId(4)), None], inbox: false }
        );
    }

    #[test]
    fn a_set_after_expiry_starts_a_fresh_entry() {
        let mut s = SessionStore::default();
        s.set(UserId(1), WEB, ServerId(2), 1, Time::ZERO, Duration::from_secs(1));
        s.set(UserId(1), PHONE, ServerId(5), 1, Time::from_secs(2), DAY);
        let e = s.get(UserId(1), Time::from_secs(2)).unwrap();
        assert_eq!(e.devices, [DeviceSession::Online(ServerId(5)), DeviceSession::None]);
    }
}
