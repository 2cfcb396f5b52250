//! Schedules the workload uses: heartbeat phases spread over the interval, and the wheel
//! of pending reads.

use rand::Rng;
use wasim_model::{fast_range, ChatMessage, ConversationId, DeviceKey, MessageId, PackedMessage, Time, UserId};

/// When each device beats in every `interval`: its own phase, uniform over the interval
/// whatever the tick. The phases are a stratified sample (one per `interval / n` slot,
/// uniform inside it), so the beats are flat over the interval. Slots go to devices in
/// order, rotated by an offset drawn from the seed, so a tick's beats touch neighbouring
/// device records (one cache line serves several). With web clients, phones take the even
/// slots and web clients the odd ones half an interval further on: each kind covers the
/// whole interval, and a user's two devices beat half an interval apart. Nothing is stored
/// per device.
#[derive(Clone, Debug)]
pub(crate) struct HeartbeatPhases {
    users: u64,
    slots: u64,
    n: u64,
    interval_us: u64,
    /// The rotation: slot `k` holds position `(k - offset) mod n`.
    offset: u64,
    salt: u64,
}

impl HeartbeatPhases {
    /// Phases for `users` users with `slots` (1 or 2) devices each, beating every
    /// `interval_us`.
    pub fn new(users: usize, slots: usize, interval_us: u64, rng: &mut impl Rng) -> HeartbeatPhases {
        let (users, slots) = (users.max(1) as u64, slots as u64);
        assert!(slots == 1 || slots == 2, "one or two device slots");
        let n = users * slots;
        assert!(interval_us > 0, "a heartbeat interval of zero");
        assert!(n < 1 << 31 && interval_us < 1 << 32, "slot arithmetic fits 64 bits");
        HeartbeatPhases { users, slots, n, interval_us, offset: rng.random_range(0..n), salt: rng.random() }
    }

    /// The phase (µs into the interval) of slot `slot`: uniform inside the slot. The
    /// products fit 64 bits: slots are below 2^31 and the interval below 2^32 µs.
    #[inline]
    fn phase_us(&self, slot: u64) -> u64 {
        let start = slot * self.interval_us / self.n;
        let end = (slot + 1) * self.interval_us / self.n;
        let width = end - start;
        let jitter = if width == 0 {
            0
        } else {
            let h = wasim_model::UserId((slot ^ self.salt) as u32).hash64() ^ self.salt.rotate_left(29);
            u64::from(fast_range(h, width.min(u64::from(u32::MAX)) as u32))
        };
        start + jitter
    }

    /// The device (index) at position `q`: phone `u` at `2u`, web client `u` at
    /// `2u + 1 + 2 * (users / 2)` (mod `n`).
    #[inline]
    fn device(&self, q: u64) -> usize {
        if self.slots == 1 || q.is_multiple_of(2) {
            return q as usize;
        }
        let back = 1 + 2 * (self.users / 2);
        let even = if q >= back { q - back } else { q + self.n - back };
        (even + 1) as usize
    }

    /// Call `beat(device, at)` for every beat in `(from, to]`, in time order.
    pub fn due(&self, from: Time, to: Time, mut beat: impl FnMut(usize, Time)) {
        let (from, to) = (from.as_us(), to.as_us());
        let mut cycle = from / self.interval_us;
        loop {
            let base = cycle * self.interval_us;
            if base > to {
                return;
            }
            // Beats at `base + phase` with `from < base + phase <= to`.
            let after = from.checked_sub(base);
            let last = (to - base).min(self.interval_us - 1);
            let first_slot = after.map_or(0, |a| a * self.n / self.interval_us);
            let mut position = (first_slot + self.n - self.offset) % self.n;
            for slot in first_slot..self.n {
                let phase = self.phase_us(slot);
                if phase > last {
                    break;
                }
                if after.is_none_or(|a| phase > a) {
                    beat(self.device(position), Time(base + phase));
                }
                position += 1;
                if position == self.n {
                    position = 0;
                }
            }
            cycle += 1;
        }
    }
}

/// Reads wait in 100 ms buckets; a bucket's reads are sorted when it comes up, and each
/// read happens at its exact time.
const READ_BUCKET_US: u64 = 100_000;
/// Reads further ahead than this are made at this horizon (beyond the samplers' 60 s cap).
const READ_HORIZON_US: u64 = 65_000_000;

/// A 1:1 read waiting for its time: its time within its bucket, the reader's device (its
/// user is the recipient) and the rest of the message, 32 bytes.
#[derive(Clone, Copy, Debug)]
struct DirectRead {
    offset: u32,
    device: DeviceKey,
    from: UserId,
    client_seq: u32,
    id: MessageId,
    sent_at: Time,
}

const _: () = assert!(std::mem::size_of::<DirectRead>() == 32);

/// A member's read of a group message waiting for its time: its time within its bucket,
/// the member's device, and the message's index in `ReadWheel::group_messages`, 12 bytes
/// where a copy of the message with each took 36 (the members of the card's groups read
/// a million copies a second).
#[derive(Clone, Copy, Debug)]
struct GroupRead {
    offset: u32,
    device: DeviceKey,
    message: u32,
}

/// The reads the users will make, by time.
#[derive(Debug)]
pub(crate) struct ReadWheel {
    buckets: Vec<Vec<DirectRead>>,
    group_buckets: Vec<Vec<GroupRead>>,
    /// The group messages with reads waiting, each with how many: a slot is reused once
    /// its reads are all made (`free`).
    group_messages: Vec<(PackedMessage, u32)>,
    free: Vec<u32>,
    /// The slots of the group messages with reads waiting, by id.
    group_slots: rustc_hash::FxHashMap<MessageId, u32>,
    /// The next bucket to open.
    next_bucket: u64,
    /// Reads of opened buckets with the readers' copies of their messages, latest first.
    near: Vec<(Time, DeviceKey, ChatMessage)>,
}

impl Default for ReadWheel {
    fn default() -> Self {
        let len = (READ_HORIZON_US / READ_BUCKET_US) as usize + 2;
        ReadWheel {
            buckets: vec![Vec::new(); len],
            group_buckets: vec![Vec::new(); len],
            group_messages: Vec::new(),
            free: Vec::new(),
            group_slots: Default::default(),
            next_bucket: 0,
            near: Vec::new(),
        }
    }
}

impl ReadWheel {
    /// Schedule a read of `msg` on `device` at `at` (clamped to the horizon after `now`).
    pub fn schedule(&mut self, now: Time, at: Time, device: DeviceKey, msg: ChatMessage) {
        let at = Time(at.as_us().min(now.as_us() + READ_HORIZON_US).max(now.as_us()));
        let bucket = at.as_us() / READ_BUCKET_US;
        if bucket < self.next_bucket {
            let i = self.near.partition_point(|&(t, _, _)| t > at);
            self.near.insert(i, (at, device, msg));
            return;
        }
        let slot = (bucket % self.buckets.len() as u64) as usize;
        let offset = (at.as_us() % READ_BUCKET_US) as u32;
        if msg.conversation.group_id().is_some() {
            let message = self.group_message(&msg);
            wasim_model::push_compactly(&mut self.group_buckets[slot], GroupRead { offset, device, message });
        } else {
            assert_eq!(device.device().user, msg.to, "a 1:1 message is read by its recipient");
            let (id, sent_at, from, client_seq) = (msg.id, msg.sent_at, msg.from, msg.client_seq);
            wasim_model::push_compactly(
                &mut self.buckets[slot],
                DirectRead { offset, device, from, client_seq, id, sent_at },
            );
        }
    }

    /// The slot of group message `msg` (a member's copy: the copies pack alike), counting
    /// one more read of it.
    fn group_message(&mut self, msg: &ChatMessage) -> u32 {
        let packed = PackedMessage::of(msg);
        let (messages, free) = (&mut self.group_messages, &mut self.free);
        let i = *self.group_slots.entry(msg.id).or_insert_with(|| match free.pop() {
            Some(i) => {
                messages[i as usize] = (packed, 0);
                i
            }
            None => {
                messages.push((packed, 0));
                (messages.len() - 1) as u32
            }
        });
        debug_assert!(self.group_messages[i as usize].0 == packed, "a group message's copies pack alike");
        self.group_messages[i as usize].1 += 1;
        i
    }

    /// Reads due by `now`, in time order.
    pub fn due(&mut self, now: Time, mut read: impl FnMut(Time, DeviceKey, ChatMessage)) {
        let len = self.buckets.len() as u64;
        while self.next_bucket * READ_BUCKET_US <= now.as_us() {
            let base = self.next_bucket * READ_BUCKET_US;
            let slot = (self.next_bucket % len) as usize;
            // Latest first; what is left of earlier buckets is earlier still, so it goes last.
            // The bucket's buffers are freed, not kept: the wheel comes round to them only
            // after a full horizon, and memory should follow the reads pending.
            let direct = std::mem::take(&mut self.buckets[slot]);
            let group = std::mem::take(&mut self.group_buckets[slot]);
            let mut near = Vec::with_capacity(direct.len() + group.len() + self.near.len());
            near.extend(direct.into_iter().map(|r| {
                let reader = r.device.device().user;
                let msg = ChatMessage {
                    id: r.id,
                    conversation: ConversationId::direct(r.from, reader),
                    from: r.from,
                    to: reader,
                    client_seq: r.client_seq,
                    sent_at: r.sent_at,
                };
                (r.offset, r.device, msg)
            }));
            for r in group {
                let (m, readers) = &mut self.group_messages[r.message as usize];
                // A member's copy names the member: the device's user.
                let msg = m.message(r.device.device().user);
                near.push((r.offset, r.device, msg));
                *readers -= 1;
                if *readers == 0 {
                    self.group_slots.remove(&msg.id);
                    self.free.push(r.message);
                }
            }
            // The same order whatever the order scheduled: by time, then device, then id.
            near.sort_unstable_by_key(|&(offset, d, m)| std::cmp::Reverse((offset, d, m.id)));
            let mut near: Vec<_> =
                near.into_iter().map(|(offset, d, m)| (Time(base + u64::from(offset)), d, m)).collect();
            near.append(&mut self.near);
            self.near = near;
            self.next_bucket += 1;
        }
        while self.near.last().is_some_and(|&(t, _, _)| t <= now) {
            let (t, d, m) = self.near.pop().expect("checked");
            read(t, d, m);
        }
    }

    /// Reads waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.near.len()
            + self.buckets.iter().map(Vec::len).sum::<usize>()
            + self.group_buckets.iter().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use wasim_model::{ConversationId, MessageId, UserId};

    fn beats(p: &HeartbeatPhases, tick_us: u64, until_us: u64) -> Vec<(usize, u64)> {
        let mut all = Vec::new();
        let mut t = 0;
        while t < until_us {
            p.due(Time(t), Time(t + tick_us), |d, at| all.push((d, at.as_us())));
            t += tick_us;
        }
        all
    }

    #[test]
    fn every_device_beats_once_per_interval_at_the_same_times_whatever_the_tick() {
        let p = HeartbeatPhases::new(500, 2, 30_000_000, &mut ChaCha8Rng::seed_from_u64(3));
        let coarse = beats(&p, 1_000, 60_000_000);
        let fine = beats(&p, 100, 60_000_000);
        assert_eq!(coarse, fine, "the tick decides nothing");
        assert_eq!(coarse.len(), 2_000, "two intervals of 1,000 devices");
        let mut first: Vec<usize> = coarse[..1_000].iter().map(|b| b.0).collect();
        first.sort_unstable();
        assert_eq!(first, (0..1_000).collect::<Vec<_>>(), "each device once per interval");
        for (d, at) in &coarse[..1_000] {
            let again = coarse[1_000..].iter().find(|b| b.0 == *d).unwrap();
            assert_eq!(again.1, at + 30_000_000, "a fixed phase");
        }
        assert!(coarse.windows(2).all(|w| w[0].1 <= w[1].1), "in time order");
    }

    #[test]
    fn phases_cover_the_whole_interval_evenly_per_kind_and_a_users_devices_are_apart() {
        for users in [15_000, 15_001] {
            let p = HeartbeatPhases::new(users, 2, 30_000_000, &mut ChaCha8Rng::seed_from_u64(9));
            let all = beats(&p, 1_000, 30_000_000);
            assert_eq!(all.len(), 2 * users);
            let mut per_second = [[0u32; 30]; 2];
            let mut at = vec![0i64; 2 * users];
            for &(d, t) in &all {
                per_second[d % 2][(t / 1_000_000) as usize] += 1;
                at[d] = t as i64;
            }
            for kind in per_second {
                assert!(kind.iter().all(|&c| c.abs_diff(users as u32 / 30) <= 1), "flat per kind: {kind:?}");
            }
            for u in 0..users {
                let apart = (at[2 * u] - at[2 * u + 1]).rem_euclid(30_000_000);
                assert!((14_990_000..=15_010_000).contains(&apart), "user {u}'s devices beat {apart} µs apart");
            }
        }
    }

    #[test]
    fn direct_and_group_reads_come_once_each_at_their_times_with_the_readers_copies() {
        // Random 1:1 reads and members' reads of group messages scheduled interleaved (a
        // group message's copies reach its members at different times), against the list
        // of what was scheduled.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut w = ReadWheel::default();
        let mut want = Vec::new();
        let mut got = Vec::new();
        let mut now = 0u64;
        let mut live_groups: Vec<ChatMessage> = Vec::new();
        for id in 1..20_000u64 {
            now += rng.random_range(0..3_000);
            let device = DeviceKey::of(wasim_model::DeviceId::phone(UserId(rng.random_range(0..500))));
            let user = device.device().user;
            let msg = if rng.random_bool(0.5) {
                let from = UserId(500 + rng.random_range(0..100));
                ChatMessage {
                    id: MessageId(id),
                    conversation: ConversationId::direct(from, user),
                    from,
                    to: user,
                    client_seq: rng.random(),
                    sent_at: Time(now.saturating_sub(rng.random_range(0..1_000_000))),
                }
            } else {
                if live_groups.is_empty() || rng.random_bool(0.05) {
                    live_groups.push(ChatMessage {
                        id: MessageId(id),
                        conversation: ConversationId::group(wasim_model::GroupId(rng.random_range(0..4))),
                        from: UserId(600),
                        to: UserId::GROUP,
                        client_seq: rng.random(),
                        sent_at: Time(now),
                    });
                    if live_groups.len() > 8 {
                        live_groups.remove(0);
                    }
                }
                let g = live_groups[rng.random_range(0..live_groups.len())];
                ChatMessage { to: user, ..g }
            };
            let at = Time(now + rng.random_range(0..5_000_000));
            w.schedule(Time(now), at, device, msg);
            want.push((at.as_us(), device, msg));
            if id % 50 == 0 {
                w.due(Time(now), |t, d, m| got.push((t.as_us(), d, m)));
            }
        }
        w.due(Time(now + 70_000_000), |t, d, m| got.push((t.as_us(), d, m)));
        assert_eq!(w.len(), 0);
        assert!(got.windows(2).all(|p| p[0].0 <= p[1].0), "in time order");
        let key = |r: &(u64, DeviceKey, ChatMessage)| (r.0, r.1, r.2.id);
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got, want, "each read once, at its time, with the reader's copy");
        assert!(w.group_messages.len() < 1_000, "slots reused: {}", w.group_messages.len());
        assert!(w.group_slots.is_empty());
    }

    #[test]
    fn reads_come_at_their_exact_times_in_order() {
        let msg = |id: u64| ChatMessage {
            id: MessageId(id),
            conversation: ConversationId(1),
            from: UserId(1),
            to: UserId(2),
            client_seq: 0,
            sent_at: Time::ZERO,
        };
        let mut w = ReadWheel::default();
        w.schedule(Time::ZERO, Time(250_500), DeviceKey(4), msg(1));
        w.schedule(Time::ZERO, Time(120_000), DeviceKey(4), msg(2));
        let mut got = Vec::new();
        w.due(Time(150_000), |t, _, m| got.push((t.as_us(), m.id.0)));
        w.schedule(Time(150_000), Time(160_000), DeviceKey(4), msg(3));
        w.due(Time(300_000), |t, _, m| got.push((t.as_us(), m.id.0)));
        assert_eq!(got, vec![(120_000, 2), (160_000, 3), (250_500, 1)]);
        assert_eq!(w.len(), 0);
    }
}
