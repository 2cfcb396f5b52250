//! Identifiers: newtypes, never bare integers, and the Snowflake message id.

use crate::Time;
use std::fmt;

/// A user account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(pub u32);

/// Which of a user's devices (0 = phone, 1 = web, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceSlot(pub u8);

/// One device of one user: the unit that holds a connection and receives messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId {
    pub user: UserId,
    pub slot: DeviceSlot,
}

impl DeviceId {
    /// The user's phone, the device every user has.
    pub const fn phone(user: UserId) -> DeviceId {
        DeviceId { user, slot: DeviceSlot(0) }
    }
}

/// A device packed into one integer, `user * 2 + slot`, for compact keys and logs. User
/// ids stay below 2^31 (a billion users at most) and a user has at most two devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceKey(pub u32);

const _: () = assert!(crate::DEVICES_PER_USER_MAX <= 2, "a device slot takes one bit of a device key");

impl DeviceKey {
    /// The key of a device.
    #[inline]
    pub fn of(d: DeviceId) -> DeviceKey {
        assert!(d.user.0 < 1 << 31, "user {} does not fit a device key", d.user.0);
        DeviceKey((d.user.0 << 1) | u32::from(d.slot.0 & 1))
    }

    /// The device a key names.
    #[inline]
    pub fn device(self) -> DeviceId {
        DeviceId { user: UserId(self.0 >> 1), slot: DeviceSlot((self.0 & 1) as u8) }
    }
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.device();
        write!(f, "{} of user {}", if d.slot.0 == 0 { "phone" } else { "web client" }, d.user.0)
    }
}

/// A position in a user's inbox: entries are numbered in the order they were added, from
/// 0, for the life of the inbox. A device fetches "since" the position it reached, so an
/// entry added late (a message handed back by a server whose push was never acknowledged)
/// is fetched even when the device has shown newer messages meanwhile: a cursor by
/// message id would skip it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboxPos(pub u32);

/// A chat server (one stateful WebSocket terminator).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId(pub u16);

/// A conversation: the Cassandra partition key of the messages table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversationId(pub u64);

impl ConversationId {
    /// The 1:1 conversation between two users; the same whichever of them sends.
    pub fn direct(a: UserId, b: UserId) -> ConversationId {
        let (lo, hi) = if a <= b { (a.0, b.0) } else { (b.0, a.0) };
        ConversationId((u64::from(lo) << 32) | u64::from(hi))
    }

    /// A well-mixed 64-bit hash of the id, for partitioning (Kafka, Cassandra tokens).
    pub fn hash64(self) -> u64 {
        mix64(self.0)
    }

    /// A group's conversation: `(group + 1) << 32`. A direct conversation packs its
    /// lower user id above the higher one, so its low half is never 0 unless both are user 0
    /// (no one messages themselves): the two kinds never meet. Group numbers stay below
    /// `GROUPS_MAX`, so the top two bits stay free as for direct conversations.
    pub fn group(g: GroupId) -> ConversationId {
        assert!(g.0 < GROUPS_MAX, "group {} beyond the id space", g.0);
        ConversationId((u64::from(g.0) + 1) << 32)
    }

    /// The two users of a 1:1 conversation (the lower id first); `None` for a group's.
    pub fn direct_users(self) -> Option<(UserId, UserId)> {
        self.group_id().is_none().then_some((UserId((self.0 >> 32) as u32), UserId(self.0 as u32)))
    }

    /// The group this conversation is, if it is a group's.
    pub fn group_id(self) -> Option<GroupId> {
        (self.0 as u32 == 0 && self.0 >> 32 != 0).then(|| GroupId((self.0 >> 32) as u32 - 1))
    }
}

/// A group chat (up to `GROUP_MEMBERS_MAX` members).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

/// Group numbers: below 2^29, so a group's conversation id keeps its top bits free.
pub const GROUPS_MAX: u32 = 1 << 29;

impl UserId {
    /// The recipient of a group message as stored once for all members (each member's copy
    /// names the member).
    pub const GROUP: UserId = UserId(u32::MAX);
}

impl UserId {
    /// A well-mixed 64-bit hash of the id, for sharding (Redis cluster slots).
    pub fn hash64(self) -> u64 {
        mix64(u64::from(self.0))
    }
}

/// Map a well-mixed 64-bit hash onto `0..n` by a multiply and a shift (Lemire's fast range
/// reduction): as uniform as `hash % n` for a good hash, without a division.
#[inline]
pub fn fast_range(hash: u64, n: u32) -> u32 {
    (((hash >> 32) * u64::from(n)) >> 32) as u32
}

/// SplitMix64's finaliser: a cheap, well-distributed and stable hash of an integer key.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A client-chosen id for a send, so a retried send is recognised (retry-safe sends).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientMsgId {
    pub sender: UserId,
    pub seq: u32,
}

impl ClientMsgId {
    /// The id packed into one integer, for compact keys.
    pub fn key(self) -> u64 {
        (u64::from(self.sender.0) << 32) | u64::from(self.seq)
    }
}

/// A Snowflake message id: 41 bits of milliseconds, 10 bits of worker, 12 bits of sequence.
///
/// Ids from one worker are strictly increasing; ids from different workers order by time
/// first, so sorting by id sorts by send time to within a millisecond.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u64);

const WORKER_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;
/// The most workers a Snowflake id can name (1,024: the card's 1,000 chat servers fit).
pub const WORKERS_MAX: u16 = 1 << WORKER_BITS;
const SEQUENCE_MAX: u16 = (1 << SEQUENCE_BITS) - 1;

impl MessageId {
    /// The millisecond timestamp embedded in the id.
    pub fn timestamp_ms(self) -> u64 {
        self.0 >> (WORKER_BITS + SEQUENCE_BITS)
    }

    /// The worker (chat server) that minted the id.
    pub fn worker(self) -> u16 {
        ((self.0 >> SEQUENCE_BITS) & u64::from(WORKERS_MAX - 1)) as u16
    }

    /// A well-mixed 64-bit hash of the id, for partitioning by message (the group receipts
    /// table's Cassandra token).
    pub fn hash64(self) -> u64 {
        mix64(self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Snowflake generator for one worker. Time is an input: `next` takes `now`.
#[derive(Clone, Debug)]
pub struct Snowflake {
    worker: u16,
    last_ms: u64,
    sequence: u16,
}

impl Snowflake {
    /// A generator for `worker` (must be below 1,024).
    pub fn new(worker: u16) -> Snowflake {
        assert!(worker < WORKERS_MAX, "snowflake worker {worker} out of range");
        Snowflake { worker, last_ms: 0, sequence: 0 }
    }

    /// The next id at `now`. When 4,096 ids were minted in one millisecond, or when `now`
    /// goes backwards, the generator borrows from the next millisecond instead of waiting,
    /// so ids stay strictly increasing.
    pub fn next(&mut self, now: Time) -> MessageId {
        let now_ms = now.as_ms();
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.sequence = 0;
        } else if self.sequence == SEQUENCE_MAX {
            self.last_ms += 1;
            self.sequence = 0;
        } else {
            self.sequence += 1;
        }
        MessageId(
            (self.last_ms << (WORKER_BITS + SEQUENCE_BITS))
                | (u64::from(self.worker) << SEQUENCE_BITS)
                | u64::from(self.sequence),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_direct_conversations_never_meet() {
        for g in [0, 1, 7, GROUPS_MAX - 1] {
            let c = ConversationId::group(GroupId(g));
            assert_eq!(c.group_id(), Some(GroupId(g)));
            assert_eq!(c.0 >> 62, 0, "top bits free");
        }
        for (a, b) in [(0, 1), (1, 0), (5, 9), (1 << 29, 3), (999_999_999, 999_999_998)] {
            assert_eq!(ConversationId::direct(UserId(a), UserId(b)).group_id(), None, "{a} and {b}");
        }
    }

    #[test]
    fn snowflake_embeds_time_and_worker() {
        let mut g = Snowflake::new(47);
        let id = g.next(Time::from_ms(1_234));
        assert_eq!(id.timestamp_ms(), 1_234);
        assert_eq!(id.worker(), 47);
    }

    #[test]
    fn snowflake_is_strictly_increasing_within_and_across_milliseconds() {
        let mut g = Snowflake::new(3);
        let mut last = MessageId(0);
        for i in 0..10_000u64 {
            let id = g.next(Time::from_ms(5 + i / 5_000));
            assert!(id > last, "{id:?} after {last:?}");
            last = id;
        }
    }

    #[test]
    fn snowflake_survives_a_clock_going_backwards() {
        let mut g = Snowflake::new(1);
        let a = g.next(Time::from_ms(100));
        let b = g.next(Time::from_ms(90));
        assert!(b > a);
    }

    #[test]
    fn ids_from_different_workers_order_by_time() {
        let a = Snowflake::new(900).next(Time::from_ms(10));
        let b = Snowflake::new(1).next(Time::from_ms(11));
        assert!(a < b);
    }

    #[test]
    fn fast_range_stays_below_n_and_spreads_evenly() {
        let mut hits = [0u32; 7];
        for i in 0..70_000u64 {
            let r = fast_range(mix64(i), 7);
            hits[r as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (9_500..10_500).contains(&h)), "{hits:?}");
        assert_eq!(fast_range(u64::MAX, 1), 0);
    }

    #[test]
    fn a_device_key_round_trips() {
        for d in [DeviceId::phone(UserId(0)), DeviceId { user: UserId(12_345), slot: DeviceSlot(1) }] {
            assert_eq!(DeviceKey::of(d).device(), d);
        }
        assert_eq!(DeviceKey::of(DeviceId { user: UserId(3), slot: DeviceSlot(1) }), DeviceKey(7));
        assert_eq!(DeviceKey(7).to_string(), "web client of user 3");
    }

    #[test]
    fn direct_conversation_is_symmetric() {
        let (a, b) = (UserId(7), UserId(9));
        assert_eq!(ConversationId::direct(a, b), ConversationId::direct(b, a));
        assert_ne!(ConversationId::direct(a, b), ConversationId::direct(a, UserId(8)));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn snowflake_rejects_a_worker_beyond_ten_bits() {
        let _ = Snowflake::new(1_024);
    }
}

/// The chat servers known to be down, by id: what routers and chat servers learn when a
/// server's connections reset or its health checks fail, until it is back.
#[derive(Clone, Debug, Default)]
pub struct ServersDown(Vec<bool>);

impl ServersDown {
    /// Whether `server` is down.
    pub fn contains(&self, server: ServerId) -> bool {
        self.0.get(usize::from(server.0)).copied().unwrap_or(false)
    }

    /// `server` went down; returns whether it was up until now.
    pub fn insert(&mut self, server: ServerId) -> bool {
        let i = usize::from(server.0);
        if self.0.len() <= i {
            self.0.resize(i + 1, false);
        }
        !std::mem::replace(&mut self.0[i], true)
    }

    /// `server` is back.
    pub fn remove(&mut self, server: ServerId) {
        if let Some(d) = self.0.get_mut(usize::from(server.0)) {
            *d = false;
        }
    }
}
