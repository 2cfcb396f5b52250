//! Schedules the workload uses: heartbeat phases spread over the interval, and the wheel
//! of pending reads.

use rand::Rng;
use wasim_model::{fast_range, ChatMessage, DeviceKey, Time};

/// When each of `n` devices beats in every `interval`: its own phase, uniform over the
/// interval whatever the tick. The phases are a stratified sample (one per `interval / n`
/// slot, uniform inside it), so the beats are flat over the interval; slots are assigned to
/// devices by a multiplicative permutation drawn from the seed, so neighbouring devices
/// (a user's phone and web client, the users a fault cuts) do not beat together. Nothing
/// is stored per device: the device of a slot is `slot * inverse mod n`.
#[derive(Clone, Debug)]
pub(crate) struct HeartbeatPhases {
    n: u64,
    interval_us: u64,
    /// The inverse of the permutation's multiplier modulo `n`.
    inverse: u64,
    salt: u64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The inverse of `a` modulo `n` (`a` and `n` coprime), by the extended Euclidean algorithm.
fn inverse_mod(a: u64, n: u64) -> u64 {
    let (mut t, mut new_t, mut r, mut new_r) = (0i128, 1i128, i128::from(n), i128::from(a));
    while new_r != 0 {
        let q = r / new_r;
        (t, new_t) = (new_t, t - q * new_t);
        (r, new_r) = (new_r, r - q * new_r);
    }
    assert_eq!(r, 1, "{a} has no inverse modulo {n}");
    t.rem_euclid(i128::from(n)) as u64
}

impl HeartbeatPhases {
    /// Phases for `n` devices beating every `interval_us`, drawn from `rng`.
    pub fn new(n: usize, interval_us: u64, rng: &mut impl Rng) -> HeartbeatPhases {
        let n = n.max(1) as u64;
        assert!(interval_us > 0, "a heartbeat interval of zero");
        let mut multiplier = if n > 1 { rng.random_range(1..n) } else { 0 };
        while n > 1 && gcd(multiplier, n) != 1 {
            multiplier = rng.random_range(1..n);
        }
        let inverse = if n > 1 { inverse_mod(multiplier, n) } else { 0 };
        HeartbeatPhases { n, interval_us, inverse, salt: rng.random() }
    }

    /// The phase (µs into the interval) of slot `slot`: uniform inside the slot.
    fn phase_us(&self, slot: u64) -> u64 {
        let start = u128::from(slot) * u128::from(self.interval_us) / u128::from(self.n);
        let end = u128::from(slot + 1) * u128::from(self.interval_us) / u128::from(self.n);
        let width = (end - start) as u64;
        let jitter = if width == 0 {
            0
        } else {
            let h = wasim_model::UserId((slot ^ self.salt) as u32).hash64() ^ self.salt.rotate_left(29);
            u64::from(fast_range(h, width.min(u64::from(u32::MAX)) as u32))
        };
        start as u64 + jitter
    }

    /// The device of a slot.
    fn device(&self, slot: u64) -> usize {
        (u128::from(slot) * u128::from(self.inverse) % u128::from(self.n)) as usize
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
            let first_slot =
                after.map_or(0, |a| (u128::from(a) * u128::from(self.n) / u128::from(self.interval_us)) as u64);
            for slot in first_slot..self.n {
                let phase = self.phase_us(slot);
                if phase > last {
                    break;
                }
                if after.is_none_or(|a| phase > a) {
                    beat(self.device(slot), Time(base + phase));
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

/// A read waiting for its time: the device, the message, and its time within its bucket.
type PendingRead = (u32, DeviceKey, ChatMessage);

/// The reads the users will make, by time.
#[derive(Debug)]
pub(crate) struct ReadWheel {
    buckets: Vec<Vec<PendingRead>>,
    /// The next bucket to open.
    next_bucket: u64,
    /// Reads of opened buckets, latest first.
    near: Vec<(Time, DeviceKey, ChatMessage)>,
}

impl Default for ReadWheel {
    fn default() -> Self {
        ReadWheel {
            buckets: vec![Vec::new(); (READ_HORIZON_US / READ_BUCKET_US) as usize + 2],
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
        } else {
            let len = self.buckets.len() as u64;
            self.buckets[(bucket % len) as usize].push(((at.as_us() % READ_BUCKET_US) as u32, device, msg));
        }
    }

    /// Reads due by `now`, in time order.
    pub fn due(&mut self, now: Time, mut read: impl FnMut(Time, DeviceKey, ChatMessage)) {
        let len = self.buckets.len() as u64;
        while self.next_bucket * READ_BUCKET_US <= now.as_us() {
            let base = self.next_bucket * READ_BUCKET_US;
            let bucket = std::mem::take(&mut self.buckets[(self.next_bucket % len) as usize]);
            self.near.extend(bucket.into_iter().map(|(offset, d, m)| (Time(base + u64::from(offset)), d, m)));
            self.near.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.id.cmp(&a.2.id)));
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
        self.near.len() + self.buckets.iter().map(Vec::len).sum::<usize>()
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
        let p = HeartbeatPhases::new(1_000, 30_000_000, &mut ChaCha8Rng::seed_from_u64(3));
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
    fn phases_cover_the_whole_interval_evenly_and_neighbours_are_apart() {
        let p = HeartbeatPhases::new(30_000, 30_000_000, &mut ChaCha8Rng::seed_from_u64(9));
        let all = beats(&p, 1_000, 30_000_000);
        let mut per_second = [0u32; 30];
        for &(_, at) in &all {
            per_second[(at / 1_000_000) as usize] += 1;
        }
        assert!(per_second.iter().all(|&c| c == 1_000), "flat: {per_second:?}");
        let at = |d: usize| all.iter().find(|b| b.0 == d).unwrap().1 as i64;
        let close = (0..1_000).filter(|&d| (at(2 * d) - at(2 * d + 1)).abs() < 100_000).count();
        assert!(close < 20, "a phone and its web client seldom beat together: {close}");
    }

    #[test]
    fn inverse_mod_inverts() {
        for (a, n) in [(3, 10), (7, 1_000_003), (999_999, 1_000_000)] {
            assert_eq!(a * inverse_mod(a, n) % n, 1);
        }
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
