//! Presence: `SETEX presence:{user} 45 online` refreshed by 30 s heartbeats, last-seen,
//! users who hide last-seen, and subscriber-based notifications: only watchers with the
//! chat open (subscribed) hear of a change. One `PresenceStore` is one Redis shard's data
//! plus the shard's keyspace-expiry handling, done in bulk per tick.

use crate::table::Table;
use crate::{DeviceId, DeviceSlot, ServerId, Time, UserId, DEVICES_PER_USER_MAX};
use rustc_hash::FxHashMap;
use std::time::Duration;
use strength_reduce::StrengthReducedU32;

/// What a watcher is told about a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceStatus {
    Online,
    /// Offline since the last-seen time, or without one when the user hides it.
    Offline {
        last_seen: Option<Time>,
    },
}

/// Why a notification was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceCause {
    /// The answer to a subscription: not a change.
    Subscribed,
    /// A device connected (status change).
    Connected,
    /// The last device disconnected cleanly (status change).
    Disconnected,
    /// The key expired: heartbeats stopped without a disconnect (silent loss).
    Expired,
}

/// One notification for one watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceUpdate {
    pub target: UserId,
    pub status: PresenceStatus,
    pub cause: PresenceCause,
    /// When the store saw the change.
    pub changed_at: Time,
}

/// Inputs to a presence shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceInput {
    /// A device connected: `SETEX presence:{user} ttl online`.
    Online { device: DeviceId, hide_last_seen: bool },
    /// A heartbeat: `EXPIRE presence:{user} ttl`, last-seen = now.
    Heartbeat { device: DeviceId },
    /// A clean disconnect: last-seen = now, subscribers told, but no `DEL`: the key lives
    /// until its TTL, as the card specifies.
    Offline { device: DeviceId },
    /// A watcher opened the chat with `target`.
    Subscribe { watcher: DeviceId, server: ServerId, target: UserId },
}

impl PresenceInput {
    /// The user whose `presence:{user}` key the command touches (its shard's key).
    pub fn user(&self) -> UserId {
        match *self {
            PresenceInput::Online { device, .. }
            | PresenceInput::Heartbeat { device }
            | PresenceInput::Offline { device } => device.user,
            PresenceInput::Subscribe { target, .. } => target,
        }
    }
}

/// A notification to deliver to a watcher through its chat server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceNotify {
    pub watcher: DeviceId,
    pub server: ServerId,
    pub update: PresenceUpdate,
}

/// A user's presence record: 9 bytes, unaligned (aligned to its `u32`s it took 12, 300 MB
/// more over the card's 100M users).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, packed)]
struct Record {
    /// When the key was last written (SETEX), on the shard's clock. A live key expires
    /// the TTL after it (`PresenceStore::expires_ms`): every write sets it for the TTL.
    written_ms: u32,
    last_seen_ms: u32,
    /// The devices connected (a bit per slot, cleared by a clean disconnect), and the
    /// flags `LIVE`, `ANNOUNCED`, `HIDDEN`, `SEEN`: 9 bytes a user, where a field each
    /// (and the expiry) took 16.
    bits: u8,
}

const _: () = assert!(std::mem::size_of::<Record>() == 9);

/// `presence:{user}` exists (it expires the TTL after its last write).
const LIVE: u8 = 1 << 4;
/// What subscribers were last told: online.
const ANNOUNCED: u8 = 1 << 5;
/// The user hides last-seen.
const HIDDEN: u8 = 1 << 6;
/// The user was ever online (the record exists).
const SEEN: u8 = 1 << 7;
/// The device bits.
const DEVICES: u8 = (1 << DEVICES_PER_USER_MAX) - 1;

const _: () = assert!(DEVICES_PER_USER_MAX <= 4, "device bits fit below the flags");

impl Record {
    #[inline]
    fn has(&self, flag: u8) -> bool {
        self.bits & flag != 0
    }

    #[inline]
    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.bits |= flag;
        } else {
            self.bits &= !flag;
        }
    }

    /// The devices connected, a bit per slot.
    #[inline]
    fn devices(&self) -> u8 {
        self.bits & DEVICES
    }

    /// When the key expires, written with a TTL of `ttl_ms` (0: there is no key).
    #[inline]
    fn expires_ms(&self, ttl_ms: u32) -> u32 {
        if self.has(LIVE) {
            self.written_ms + ttl_ms
        } else {
            0
        }
    }

    /// Whether the key lives at `now`.
    #[inline]
    fn live_at(&self, ttl_ms: u32, now: Time) -> bool {
        u64::from(self.expires_ms(ttl_ms)) > now.as_ms()
    }
}

/// Expiry checks are bucketed by this; an expiry is noticed at most this late.
const EXPIRY_BUCKET_MS: u64 = 100;

/// One presence shard.
#[derive(Debug)]
pub struct PresenceStore {
    ttl: Duration,
    /// Dense by `user / stride` (the shard holds users `u % stride == shard`): one memory
    /// access per heartbeat. A record never written reads as all zeroes: no key.
    records: Vec<Record>,
    /// The shard count, as a divisor by multiplication: every command divides by it.
    stride: StrengthReducedU32,
    known: usize,
    /// Each watched user's watchers, with their servers, in the order they subscribed:
    /// the first in a compact table (most have one: a chat opened by one contact), 12
    /// bytes a slot where a hash map's entry with the watchers inline took about 54 bytes
    /// a watcher; the others, in order, in `more_subscribers`.
    subscribers: Table<u32, Subscriber>,
    more_subscribers: FxHashMap<UserId, Vec<Subscriber>>,
    /// A ring of expiry buckets: each user with a key sits in the bucket of its expiry
    /// (or earlier: a refreshed key is moved on when its old bucket comes due).
    wheel: Vec<Vec<UserId>>,
    /// The next bucket number to process.
    next_bucket: u64,
    /// Key lifetimes of watched users, `(user, set, expired)`, for the presence checker.
    lifetimes: Vec<(UserId, Time, Time)>,
    /// Expiries of watched users' keys: (user, its last write, expiry), on its clock.
    expiries: Vec<(UserId, Time, Time)>,
    opened: FxHashMap<UserId, Time>,
}

/// The most watchers one user's channel holds; more would make one status change a
/// fan-out storm (the card's point: notify open chats, not all 300 contacts).
pub const WATCHERS_PER_USER_MAX: usize = 256;

/// A watcher of a user's presence channel and its server, packed into 8 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Subscriber {
    watcher: UserId,
    server: ServerId,
    slot: DeviceSlot,
}

impl Subscriber {
    fn new(watcher: DeviceId, server: ServerId) -> Subscriber {
        Subscriber { watcher: watcher.user, server, slot: watcher.slot }
    }

    fn watcher(self) -> DeviceId {
        DeviceId { user: self.watcher, slot: self.slot }
    }
}

impl PresenceStore {
    /// An empty shard with the key TTL (card: 45 s), holding every user.
    pub fn new(ttl: Duration) -> PresenceStore {
        PresenceStore::with_stride(ttl, 1, 0)
    }

    /// An empty shard for the users `u % stride == shard`, sized for about `users`.
    pub fn with_stride(ttl: Duration, stride: u32, users: usize) -> PresenceStore {
        assert!(stride > 0, "a stride of zero shards");
        let buckets = (ttl.as_millis() as u64).div_ceil(EXPIRY_BUCKET_MS) as usize + 2;
        PresenceStore {
            ttl,
            records: Vec::with_capacity(users),
            stride: StrengthReducedU32::new(stride),
            known: 0,
            subscribers: Table::default(),
            more_subscribers: FxHashMap::default(),
            wheel: vec![Vec::new(); buckets],
            next_bucket: 0,
            lifetimes: Vec::new(),
            expiries: Vec::new(),
            opened: FxHashMap::default(),
        }
    }

    /// `GET presence:{user}`: whether the key lives at `now`.
    pub fn is_online(&self, user: UserId, now: Time) -> bool {
        self.record(user).is_some_and(|r| r.live_at(self.key_ttl_ms(), now))
    }

    /// Handle one input at `now`.
    pub fn handle(&mut self, now: Time, input: PresenceInput, out: &mut Vec<PresenceNotify>) {
        // Redis expires a key lazily on access too: a command that finds its key past its
        // TTL sees it gone, and the expiry (with its notification) happens first, whether
        // or not the bulk expiry has reached it yet.
        self.expire_if_due(input.user(), now, out);
        match input {
            PresenceInput::Online { device, hide_last_seen } => self.online(now, device, Some(hide_last_seen), out),
            PresenceInput::Heartbeat { device } => {
                let (ttl_ms, seen) = (self.key_ttl_ms(), now.as_ms_u32());
                match self.record_mut(device.user) {
                    Some(r) if r.live_at(ttl_ms, now) => {
                        r.written_ms = seen;
                        r.last_seen_ms = seen;
                        // A beating device is connected, whether or not its connect's
                        // Online reached this shard (lost in a failover).
                        r.set(1 << device.slot.0, true);
                    }
                    // A heartbeat after expiry comes from a connection the server still
                    // holds: the key is set again, as SETEX would.
                    _ => self.online(now, device, None, out),
                }
            }
            PresenceInput::Offline { device } => {
                let Some(r) = self.record_mut(device.user) else { return };
                r.set(1 << device.slot.0, false);
                if crate::plant::planted(crate::plant::Plant::CloseMarksUserOffline) {
                    r.set(DEVICES, false);
                }
                r.last_seen_ms = now.as_ms_u32();
                if r.devices() == 0 && r.has(ANNOUNCED) {
                    r.set(ANNOUNCED, false);
                    let status = self.offline_status(device.user);
                    self.notify(device.user, status, PresenceCause::Disconnected, now, out);
                }
            }
            PresenceInput::Subscribe { watcher, server, target } => {
                self.subscribe(target, Subscriber::new(watcher, server));
                let status = match self.record(target) {
                    Some(r) if r.has(ANNOUNCED) && self.is_online(target, now) => PresenceStatus::Online,
                    _ => self.offline_status(target),
                };
                if self.is_online(target, now) {
                    // The key lives at `now`. Commands reach a store in the order it serves
                    // them, which a late request can make non-monotone: keep the earliest.
                    self.opened.entry(target).and_modify(|t| *t = (*t).min(now)).or_insert(now);
                }
                let update = PresenceUpdate { target, status, cause: PresenceCause::Subscribed, changed_at: now };
                out.push(PresenceNotify { watcher, server, update });
            }
        }
    }

    /// `SETEX presence:{user}` for a device (keeping the privacy setting when `None`), and
    /// tell subscribers if the user was not already announced online.
    fn online(&mut self, now: Time, device: DeviceId, hide_last_seen: Option<bool>, out: &mut Vec<PresenceNotify>) {
        let ttl_ms = self.key_ttl_ms();
        let expires = now.as_ms_u32() + ttl_ms;
        let (known, was_live) =
            self.record(device.user).map_or((false, false), |r| (r.has(SEEN), r.live_at(ttl_ms, now)));
        let r = self.record_or_insert(device.user);
        match hide_last_seen {
            Some(hidden) => r.set(HIDDEN, hidden),
            // A heartbeat before the connect's Online (lost in a failover, or held up): the
            // user's setting is not known yet, so last-seen stays hidden until it is.
            None if !known => r.set(HIDDEN, true),
            None => {}
        }
        r.set(1 << device.slot.0, true);
        r.set(LIVE, true);
        r.written_ms = now.as_ms_u32();
        r.last_seen_ms = now.as_ms_u32();
        let announce = !r.has(ANNOUNCED);
        r.set(ANNOUNCED, true);
        if !was_live {
            self.schedule(device.user, expires);
            if self.subscribers.get(device.user.0).is_some() {
                self.opened.insert(device.user, now);
            }
        }
        if announce {
            self.notify(device.user, PresenceStatus::Online, PresenceCause::Connected, now, out);
        }
    }

    /// Expire keys whose TTL passed, in bulk; call once per tick.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<PresenceNotify>) {
        let due = now.as_ms() / EXPIRY_BUCKET_MS;
        while self.next_bucket <= due {
            let slot = (self.next_bucket % self.wheel.len() as u64) as usize;
            let users = std::mem::take(&mut self.wheel[slot]);
            for user in users {
                let Some(r) = self.record(user).copied() else { continue };
                if !r.has(LIVE) {
                    continue;
                }
                let expires = r.expires_ms(self.key_ttl_ms());
                if u64::from(expires) > now.as_ms() {
                    self.schedule(user, expires);
                    continue;
                }
                self.expire_if_due(user, now, out);
            }
            self.next_bucket += 1;
        }
    }

    /// If `user`'s key is past its TTL at `now`, expire it: it is gone from its expiry
    /// time on, and subscribers told of an online user hear that it went offline then.
    fn expire_if_due(&mut self, user: UserId, now: Time, out: &mut Vec<PresenceNotify>) {
        let Some(r) = self.record(user).copied() else { return };
        let expires = r.expires_ms(self.key_ttl_ms());
        if !r.has(LIVE) || u64::from(expires) > now.as_ms() {
            return;
        }
        let expired_at = Time::from_ms(u64::from(expires));
        let rec = self.record_mut(user).expect("record read above");
        rec.set(LIVE | DEVICES | ANNOUNCED, false);
        if let Some(set) = self.opened.remove(&user) {
            self.lifetimes.push((user, set, expired_at));
            self.expiries.push((user, Time::from_ms(u64::from(r.written_ms)), expired_at));
        }
        if r.has(ANNOUNCED) {
            let status = self.offline_status(user);
            self.notify(user, status, PresenceCause::Expired, expired_at, out);
        }
    }

    /// Expiries of watched users' keys: (user, the key's last write, its expiry), both on
    /// the shard's clock (a skewed clock shifts both). A key written with the configured
    /// TTL expires that long after its last write.
    pub fn take_key_expiries(&mut self) -> Vec<(UserId, Time, Time)> {
        std::mem::take(&mut self.expiries)
    }

    /// The TTL a key is written with: the configured one (planted: twice it).
    fn key_ttl(&self) -> Duration {
        if crate::plant::planted(crate::plant::Plant::PresenceTtlTooLong) {
            self.ttl * 2
        } else {
            self.ttl
        }
    }

    /// The key TTL in ms (keys are stamped to the ms).
    #[inline]
    fn key_ttl_ms(&self) -> u32 {
        self.key_ttl().as_millis() as u32
    }

    /// Lifetimes of keys of watched users, closed and still open at `now`.
    pub fn key_lifetimes(&self, now: Time) -> Vec<(UserId, Time, Time)> {
        let mut all = self.lifetimes.clone();
        all.extend(self.opened.iter().map(|(&u, &set)| (u, set, now)));
        all.sort_unstable_by_key(|&(u, s, _)| (u, s));
        all
    }

    /// Users ever online on this shard.
    pub fn len(&self) -> usize {
        self.known
    }

    /// Whether no user was ever seen.
    pub fn is_empty(&self) -> bool {
        self.known == 0
    }

    /// A hint that a command for `user` comes soon: its record is loaded meanwhile.
    #[inline]
    pub fn prefetch(&self, user: UserId) {
        if let Some(r) = self.record(user) {
            crate::prefetch(r);
        }
    }

    #[inline]
    fn index(&self, user: UserId) -> usize {
        (user.0 / self.stride) as usize
    }

    fn record(&self, user: UserId) -> Option<&Record> {
        self.records.get(self.index(user))
    }

    fn record_mut(&mut self, user: UserId) -> Option<&mut Record> {
        let i = self.index(user);
        self.records.get_mut(i)
    }

    fn record_or_insert(&mut self, user: UserId) -> &mut Record {
        let i = self.index(user);
        if i >= self.records.len() {
            self.records.resize(i + 1, Record::default());
        }
        let r = &mut self.records[i];
        if !r.has(SEEN) {
            r.set(SEEN, true);
            self.known += 1;
        }
        r
    }

    fn schedule(&mut self, user: UserId, expires_ms: u32) {
        let bucket = u64::from(expires_ms).div_ceil(EXPIRY_BUCKET_MS).max(self.next_bucket);
        let slot = (bucket % self.wheel.len() as u64) as usize;
        crate::push_compactly(&mut self.wheel[slot], user);
    }

    fn offline_status(&self, user: UserId) -> PresenceStatus {
        match self.record(user) {
            // Hidden, or not known: a close whose connect's Online (with the setting) and
            // heartbeats were all lost (a failover) leaves a last-seen on a record that
            // never learnt the user's setting.
            Some(r) if (r.has(HIDDEN) || !r.has(SEEN)) && !crate::plant::planted(crate::plant::Plant::LastSeenLeak) => {
                PresenceStatus::Offline { last_seen: None }
            }
            Some(r) if r.last_seen_ms > 0 => {
                PresenceStatus::Offline { last_seen: Some(Time::from_ms(u64::from(r.last_seen_ms))) }
            }
            _ => PresenceStatus::Offline { last_seen: None },
        }
    }

    fn notify(
        &self,
        target: UserId,
        status: PresenceStatus,
        cause: PresenceCause,
        at: Time,
        out: &mut Vec<PresenceNotify>,
    ) {
        let Some(&first) = self.subscribers.get(target.0) else { return };
        let update = PresenceUpdate { target, status, cause, changed_at: at };
        let more = self.more_subscribers.get(&target).map_or(&[][..], Vec::as_slice);
        out.extend(std::iter::once(first).chain(more.iter().copied()).map(|s| PresenceNotify {
            watcher: s.watcher(),
            server: s.server,
            update,
        }));
    }

    /// Add `sub` to `target`'s channel, last (a watcher subscribed already moves there),
    /// unless the channel is full.
    fn subscribe(&mut self, target: UserId, sub: Subscriber) {
        let Some(&first) = self.subscribers.get(target.0) else {
            self.subscribers.insert(target.0, sub);
            return;
        };
        let more = self.more_subscribers.entry(target).or_default();
        if first.watcher() == sub.watcher() {
            if more.is_empty() {
                // The only watcher, again.
                self.more_subscribers.remove(&target);
                self.subscribers.insert(target.0, sub);
                return;
            }
            self.subscribers.insert(target.0, more.remove(0));
        } else {
            more.retain(|s| s.watcher() != sub.watcher());
        }
        if 1 + more.len() < WATCHERS_PER_USER_MAX {
            more.push(sub);
        }
        if more.is_empty() {
            self.more_subscribers.remove(&target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(45);

    fn alice() -> DeviceId {
        DeviceId::phone(UserId(1))
    }

    fn bob() -> DeviceId {
        DeviceId::phone(UserId(2))
    }

    fn subscribed(p: &mut PresenceStore, now: Time) -> Vec<PresenceNotify> {
        let mut out = Vec::new();
        p.handle(now, PresenceInput::Subscribe { watcher: bob(), server: ServerId(4), target: UserId(1) }, &mut out);
        out
    }

    #[test]
    fn a_command_names_the_user_whose_key_it_touches() {
        assert_eq!(PresenceInput::Heartbeat { device: alice() }.user(), UserId(1));
        let subscribe = PresenceInput::Subscribe { watcher: bob(), server: ServerId(0), target: UserId(1) };
        assert_eq!(subscribe.user(), UserId(1), "the watched user's channel");
    }

    #[test]
    fn heartbeats_keep_the_key_alive_and_it_expires_after_the_ttl() {
        let mut p = PresenceStore::new(TTL);
        let mut out = Vec::new();
        p.handle(Time::ZERO, PresenceInput::Online { device: alice(), hide_last_seen: false }, &mut out);
        p.handle(Time::from_secs(30), PresenceInput::Heartbeat { device: alice() }, &mut out);
        p.handle_timeout(Time::from_secs(60), &mut out);
        assert!(p.is_online(UserId(1), Time::from_secs(60)), "refreshed at 30 s: lives until 75 s");
        p.handle_timeout(Time::from_secs(75), &mut out);
        assert!(!p.is_online(UserId(1), Time::from_secs(75)));
    }

    #[test]
    fn only_subscribers_are_notified_of_a_change() {
        let mut p = PresenceStore::new(TTL);
        let initial = subscribed(&mut p, Time::ZERO);
        assert_eq!(initial[0].update.cause, PresenceCause::Subscribed);
        assert_eq!(initial[0].update.status, PresenceStatus::Offline { last_seen: None });
        let mut out = Vec::new();
        p.handle(Time::from_secs(1), PresenceInput::Online { device: alice(), hide_last_seen: false }, &mut out);
        assert_eq!(out.len(), 1, "one watcher, one notification");
        assert_eq!((out[0].watcher, out[0].server), (bob(), ServerId(4)));
        assert_eq!(out[0].update.status, PresenceStatus::Online);
        assert_eq!(out[0].update.cause, PresenceCause::Connected);
        out.clear();
        let carol = DeviceId::phone(UserId(3));
        p.handle(Time::from_secs(1), PresenceInput::Online { device: carol, hide_last_seen: false }, &mut out);
        assert!(out.is_empty(), "nobody watches carol");
    }

    #[test]
    fn watchers_are_told_in_the_order_they_subscribed_a_repeat_moving_last_and_the_channel_is_capped() {
        let mut p = PresenceStore::new(TTL);
        let watcher = |u: u32| DeviceId::phone(UserId(100 + u));
        let subscribe = |p: &mut PresenceStore, u: u32| {
            let input = PresenceInput::Subscribe { watcher: watcher(u), server: ServerId(u as u16), target: UserId(1) };
            p.handle(Time::ZERO, input, &mut Vec::new());
        };
        let told = |p: &mut PresenceStore, at: u64| {
            let mut out = Vec::new();
            let device = alice();
            p.handle(Time::from_secs(at), PresenceInput::Online { device, hide_last_seen: false }, &mut out);
            p.handle(Time::from_secs(at), PresenceInput::Offline { device }, &mut out);
            out.iter().take(out.len() / 2).map(|n| (n.watcher.user.0 - 100, n.server.0)).collect::<Vec<_>>()
        };
        for u in [1, 2, 3] {
            subscribe(&mut p, u);
        }
        assert_eq!(told(&mut p, 1), vec![(1, 1), (2, 2), (3, 3)]);
        subscribe(&mut p, 2);
        assert_eq!(told(&mut p, 2), vec![(1, 1), (3, 3), (2, 2)], "a repeat moves last");
        subscribe(&mut p, 1);
        assert_eq!(told(&mut p, 3), vec![(3, 3), (2, 2), (1, 1)], "the first too");
        let mut q = PresenceStore::new(TTL);
        subscribe(&mut q, 7);
        subscribe(&mut q, 7);
        assert_eq!(told(&mut q, 1), vec![(7, 7)], "a lone watcher again is still one");
        for u in 0..WATCHERS_PER_USER_MAX as u32 + 10 {
            subscribe(&mut q, u);
        }
        // 7 (subscribed first) moves to its place among the others when it subscribes
        // again; those past the cap are not added.
        let all = told(&mut q, 2);
        let expected: Vec<_> = (0..WATCHERS_PER_USER_MAX as u32).map(|u| (u, u as u16)).collect();
        assert_eq!(all, expected, "capped, in order");
    }

    #[test]
    fn clean_disconnect_notifies_with_last_seen_but_keeps_the_key() {
        let mut p = PresenceStore::new(TTL);
        subscribed(&mut p, Time::ZERO);
        let mut out = Vec::new();
        p.handle(Time::ZERO, PresenceInput::Online { device: alice(), hide_last_seen: false }, &mut out);
        out.clear();
        p.handle(Time::from_secs(5), PresenceInput::Offline { device: alice() }, &mut out);
        let expected = PresenceStatus::Offline { last_seen: Some(Time::from_secs(5)) };
        assert_eq!(out[0].update.status, expected);
        assert_eq!(out[0].update.cause, PresenceCause::Disconnected);
        assert!(p.is_online(UserId(1), Time::from_secs(40)), "no DEL: the key lives until its TTL");
        out.clear();
        p.handle_timeout(Time::from_secs(200), &mut out);
        assert!(out.is_empty(), "expiry after an announced disconnect says nothing new");
    }

    #[test]
    fn silent_loss_is_announced_when_the_key_expires() {
        let mut p = PresenceStore::new(TTL);
        subscribed(&mut p, Time::ZERO);
        let mut out = Vec::new();
        p.handle(Time::ZERO, PresenceInput::Online { device: alice(), hide_last_seen: false }, &mut out);
        p.handle(Time::from_secs(30), PresenceInput::Heartbeat { device: alice() }, &mut out);
        out.clear();
        p.handle_timeout(Time::from_secs(74), &mut out);
        assert!(out.is_empty());
        p.handle_timeout(Time::from_secs(75), &mut out);
        assert_eq!(out[0].update.cause, PresenceCause::Expired);
        assert_eq!(out[0].update.changed_at, Time::from_secs(75));
        assert_eq!(out[0].update.status, PresenceStatus::Offline { last_seen: Some(Time::from_secs(30)) });
        assert_eq!(p.key_lifetimes(Time::from_secs(80)), vec![(UserId(1), Time::ZERO, Time::from_secs(75))]);
    }

    #[test]
    fn a_key_found_expired_before_the_bulk_expiry_reached_it_expires_first() {
        let mut p = PresenceStore::new(TTL);
        subscribed(&mut p, Time::ZERO);
        let mut out = Vec::new();
        p.handle(Time::ZERO, PresenceInput::Online { device: alice(), hide_last_seen: false }, &mut out);
        out.clear();
        // The key expired at 45 s; the bulk expiry has not run; the device connects again.
        p.handle(Time::from_ms(45_050), PresenceInput::Online { device: alice(), hide_last_seen: false }, &mut out);
        let causes: Vec<PresenceCause> = out.iter().map(|n| n.update.cause).collect();
        assert_eq!(causes, vec![PresenceCause::Expired, PresenceCause::Connected], "offline at 45 s, then back");
        assert_eq!(out[0].update.changed_at, Time::from_secs(45));
        let lifetimes = p.key_lifetimes(Time::from_secs(50));
        assert_eq!(lifetimes[0], (UserId(1), Time::ZERO, Time::from_secs(45)), "the first lifetime is kept");
        assert_eq!(lifetimes[1], (UserId(1), Time::from_ms(45_050), Time::from_secs(50)));
    }

    #[test]
    fn a_heartbeat_before_the_setting_is_known_hides_last_seen() {
        let mut p = PresenceStore::new(TTL);
        subscribed(&mut p, Time::ZERO);
        let mut out = Vec::new();
        // The connect's Online (with the setting) was lost: a heartbeat sets the key.
        p.handle(Time::ZERO, PresenceInput::Heartbeat { device: alice() }, &mut out);
        p.handle(Time::from_secs(5), PresenceInput::Offline { device: alice() }, &mut out);
        assert_eq!(out.last().unwrap().update.status, PresenceStatus::Offline { last_seen: None });
        // Once the setting arrives, it holds.
        p.handle(Time::from_secs(6), PresenceInput::Online { device: alice(), hide_last_seen: false }, &mut out);
        p.handle(Time::from_secs(7), PresenceInput::Offline { device: alice() }, &mut out);
        let shown = PresenceStatus::Offline { last_seen: Some(Time::from_secs(7)) };
        assert_eq!(out.last().unwrap().update.status, shown);
    }

    #[test]
    fn a_close_before_the_setting_is_known_hides_last_seen() {
        // The connect's Online and every heartbeat were lost (the shard failing over);
        // the close is the first this shard hears of the user (fuzz-faults seed 10091).
        let mut p = PresenceStore::new(TTL);
        let mut out = Vec::new();
        // Another user's record makes room for alice's (records are a dense table).
        let carol = DeviceId::phone(UserId(9));
        p.handle(Time::ZERO, PresenceInput::Online { device: carol, hide_last_seen: false }, &mut out);
        p.handle(Time::from_secs(5), PresenceInput::Offline { device: alice() }, &mut out);
        let out = subscribed(&mut p, Time::from_secs(6));
        assert_eq!(out.last().unwrap().update.status, PresenceStatus::Offline { last_seen: None }, "{out:?}");
    }

    #[test]
    fn a_user_hiding_last_seen_never_reveals_it() {
        let mut p = PresenceStore::new(TTL);
        subscribed(&mut p, Time::ZERO);
        let mut out = Vec::new();
        p.handle(Time::ZERO, PresenceInput::Online { device: alice(), hide_last_seen: true }, &mut out);
        p.handle(Time::from_secs(5), PresenceInput::Offline { device: alice() }, &mut out);
        assert_eq!(out.last().unwrap().update.status, PresenceStatus::Offline { last_seen: None });
    }

    #[test]
    fn a_user_is_offline_only_when_every_device_is() {
        let mut p = PresenceStore::new(TTL);
        subscribed(&mut p, Time::ZERO);
        let web = DeviceId { user: UserId(1), slot: crate::DeviceSlot(1) };
        let mut out = Vec::new();
        p.handle(Time::ZERO, PresenceInput::Online { device: alice(), hide_last_seen: false }, &mut out);
        p.handle(Time::ZERO, PresenceInput::Online { device: web, hide_last_seen: false }, &mut out);
        assert_eq!(out.len(), 1, "the second device is not a change");
        p.handle(Time::from_secs(1), PresenceInput::Offline { device: web }, &mut out);
        assert_eq!(out.len(), 1, "the phone is still online");
        p.handle(Time::from_secs(2), PresenceInput::Offline { device: alice() }, &mut out);
        assert_eq!(out.len(), 2);
    }
}
