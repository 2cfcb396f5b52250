//! A process's outbox: what its handlers send, held until the tick its departure falls in.
//!
//! A handler computes each reply's exact departure (a queue's `max(arrival, free worker) +
//! service`), which need not follow the order in which the handlers ran: with several
//! workers a short request that started later finishes first, and a queue that is backed
//! up sends its replies seconds after the request was noticed. The latency is drawn when a
//! message is sent, so its arrival is exact; the outbox holds a message whose departure
//! falls in a later tick until that tick, so that nothing reaches the network before it
//! left. A reply leaves when its own service ends, never behind a request that started
//! earlier.
//!
//! Each send takes its own latency, except where the system relies on order, which is
//! per key, not per link: a device's WebSocket is one TCP connection written by one thread,
//! a conversation is carried in id order (a Kafka partition is appended and consumed in
//! order), and a user's session and presence commands are applied in the order they were
//! made. A send on an ordered key leaves no earlier than the previous send on that key (in
//! the order the process made them, which is the order its logic decided: a conversation
//! published in id order stays so) and arrives no earlier than it. Sends of different keys
//! never wait for each other, as requests multiplexed over a connection pool do not.

use crate::msg::{Envelope, Msg, NodeIdx};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use wasim_model::Time;

/// A message on its way out: its departure decides the tick it is released in.
#[derive(Clone, Copy, Debug)]
struct Staged {
    depart: Time,
    to: NodeIdx,
    env: Envelope,
}

/// Ticks ahead a deferred send waits in the wheel (a power of two); later ones wait in an
/// overflow by tick, moved into the wheel every half turn. Small, since every process has
/// one: sends leave later than their tick only when a queue is backed up.
const DEFER_WHEEL_TICKS: u64 = 256;

/// Emptied wheel buffers an outbox keeps for reuse: deferred sends mostly leave a tick or
/// two after they were made, so few slots hold sends at a time.
const SPARE_BUFFERS_MAX: usize = 4;

/// The latest send on an ordered key: its departure and its arrival.
#[derive(Clone, Copy, Debug, Default)]
struct KeyLast {
    depart: Time,
    arrival: Time,
}

/// Draws the latency of a send to `to`.
pub(crate) trait Latency {
    /// The delay of a hop to `to` leaving at `depart`, in µs.
    fn sample_us(&mut self, to: NodeIdx, depart: Time) -> u64;
}

/// Ordered keys kept before a pruning is considered. Small: every ordered send probes the
/// table at a random key, so it must stay small enough to stay in cache (it shrinks when
/// pruned, too).
const ORDERED_PRUNE_LEN_MIN: usize = 64;

/// Ticks a key is kept after its last send arrived. A process can handle work whose time
/// is some ticks behind its clock (a chain of hops shorter than a tick runs ahead of it, up
/// to a tick per hop), and a send of that work departs at that earlier time: the key must
/// still be known then, or the send could overtake the one before it on the key. The
/// longest chain (send, quorum write, publish, route, push, ACK, relay, receipt) is about
/// a dozen hops; runs measured lag at most 11 ticks (0.1 ms hops at a 1 ms tick).
const ORDERED_KEEP_TICKS: u64 = 32;

/// What a process has sent but not yet put on the network.
pub(crate) struct Outbox {
    from: NodeIdx,
    seq: u32,
    /// Sends of the current tick.
    staged: Vec<Staged>,
    /// The latest departure among `staged`.
    staged_depart_max: Time,
    tick_us: u64,
    /// Sends departing after the tick they were made in (a queue is backed up), by the
    /// tick they leave in: `wheel[tick % DEFER_WHEEL_TICKS]`, and further ahead `far`.
    wheel: Vec<Vec<Staged>>,
    far: BTreeMap<u64, Vec<Staged>>,
    /// Emptied buffers of the wheel, for the next slot that fills: a slot's buffer is
    /// handed on when its tick comes, so the buffers held follow the sends deferred at a
    /// time, where each slot keeping its own held the largest burst it ever saw (a chat
    /// server at the card's load, about 1 MB: 1 GB over the card's fleet).
    spare: Vec<Vec<Staged>>,
    deferred: usize,
    /// Ordered keys with a send not yet arrived (or recently arrived: pruned in bulk).
    ordered: FxHashMap<u64, KeyLast>,
    /// `ordered`'s size after its last pruning: it is pruned again when it has doubled.
    ordered_pruned_len: usize,
    /// The horizon of the last pruning: every key forgotten had departed and arrived by
    /// then, so a send on a key not in `ordered` leaves and arrives no earlier than this.
    ordered_floor: Time,
}

impl Outbox {
    /// An empty outbox of process `from`, on a network ticking every `tick_us`.
    pub fn new(from: NodeIdx, tick_us: u64) -> Outbox {
        Outbox {
            from,
            seq: 0,
            staged: Vec::new(),
            staged_depart_max: Time::ZERO,
            tick_us,
            wheel: (0..DEFER_WHEEL_TICKS).map(|_| Vec::new()).collect(),
            far: BTreeMap::new(),
            spare: Vec::new(),
            deferred: 0,
            ordered: FxHashMap::default(),
            ordered_pruned_len: 0,
            ordered_floor: Time::ZERO,
        }
    }

    /// Send `msg` to `to`, leaving at `depart` with a latency of its own.
    #[inline(always)]
    pub fn send(&mut self, to: NodeIdx, depart: Time, msg: Msg, latency: &mut impl Latency) {
        let at = Time(depart.as_us() + latency.sample_us(to, depart));
        self.stage(to, depart, at, msg);
    }

    /// Send `msg` to `to`, leaving at `depart`, in order on `key`: not before, and
    /// arriving not before, the previous send on `key`.
    #[inline(always)]
    pub fn send_ordered(&mut self, to: NodeIdx, depart: Time, msg: Msg, key: u64, latency: &mut impl Latency) {
        // A key not in the table may have been pruned: its last send had left and arrived
        // by the floor. Work more than `ORDERED_KEEP_TICKS` behind the clock (never
        // measured) is held to the floor rather than overtaking that send.
        let floor = self.ordered_floor;
        let last = self.ordered.entry(key).or_insert(KeyLast { depart: floor, arrival: floor });
        last.depart = depart.max(last.depart);
        let drawn = latency.sample_us(to, last.depart);
        last.arrival = Time(last.depart.as_us() + drawn).max(last.arrival);
        let (depart, at) = (last.depart, last.arrival);
        self.stage(to, depart, at, msg);
    }

    #[inline(always)]
    fn stage(&mut self, to: NodeIdx, depart: Time, at: Time, msg: Msg) {
        self.seq = self.seq.wrapping_add(1);
        self.staged_depart_max = self.staged_depart_max.max(depart);
        self.staged.push(Staged { depart, to, env: Envelope { at, from: self.from, seq: self.seq, msg } });
    }

    /// The messages of sends not yet on the network.
    pub fn message_ids<T: Copy + 'static>(&self, of: fn(&Msg) -> Option<T>) -> impl Iterator<Item = T> + '_ {
        self.staged
            .iter()
            .chain(self.wheel.iter().flatten())
            .chain(self.far.values().flatten())
            .filter_map(move |s| of(&s.env.msg))
    }

    /// The awaited requests and replies this process has yet to send, each as (the asking
    /// process, the request's id): see `Msg::awaited_request`.
    pub fn awaited_requests(&self) -> impl Iterator<Item = (NodeIdx, u64)> + '_ {
        let from = self.from;
        self.staged
            .iter()
            .chain(self.wheel.iter().flatten())
            .chain(self.far.values().flatten())
            .filter_map(move |s| s.env.msg.awaited_request().map(|(reply, req)| (if reply { s.to } else { from }, req)))
    }

    /// Sends waiting for a later tick, and the last departure among them.
    pub fn backlog(&self) -> (usize, Time) {
        let last = self.wheel.iter().chain(self.far.values()).flatten().map(|s| s.depart).max().unwrap_or(Time::ZERO);
        (self.deferred, last)
    }

    /// Hand every send departing by `now` (the end of the current tick) to `deliver`; keep
    /// the rest for the ticks they leave in.
    pub fn flush(&mut self, now: Time, mut deliver: impl FnMut(NodeIdx, &Envelope)) {
        let tick = now.as_us() / self.tick_us;
        if self.staged_depart_max > now {
            let mut i = 0;
            while i < self.staged.len() {
                if self.staged[i].depart > now {
                    let s = self.staged.swap_remove(i);
                    self.defer(tick, s);
                } else {
                    i += 1;
                }
            }
        }
        self.staged_depart_max = Time::ZERO;
        for s in &self.staged {
            deliver(s.to, &s.env);
        }
        self.staged.clear();
        if self.deferred > 0 {
            let slot = (tick % DEFER_WHEEL_TICKS) as usize;
            self.deferred -= self.wheel[slot].len();
            if self.wheel[slot].capacity() > 0 {
                let mut sends = std::mem::take(&mut self.wheel[slot]);
                for s in sends.drain(..) {
                    deliver(s.to, &s.env);
                }
                if self.spare.len() < SPARE_BUFFERS_MAX {
                    self.spare.push(sends);
                }
            }
            if tick.is_multiple_of(DEFER_WHEEL_TICKS / 2) && !self.far.is_empty() {
                self.migrate(tick);
            }
        }
        self.prune(now);
    }

    /// Hold a send until the tick its departure falls in.
    fn defer(&mut self, tick: u64, s: Staged) {
        let due = s.depart.as_us().div_ceil(self.tick_us);
        self.deferred += 1;
        if due - tick < DEFER_WHEEL_TICKS {
            self.slot_for(due).push(s);
        } else {
            self.far.entry(due).or_default().push(s);
        }
    }

    /// The wheel's slot for the sends due at `tick`, given a spare buffer if it has none.
    fn slot_for(&mut self, tick: u64) -> &mut Vec<Staged> {
        let slot = &mut self.wheel[(tick % DEFER_WHEEL_TICKS) as usize];
        if slot.capacity() == 0 {
            if let Some(buffer) = self.spare.pop() {
                *slot = buffer;
            }
        }
        slot
    }

    /// Move far sends that came within the wheel's reach into it.
    fn migrate(&mut self, tick: u64) {
        while let Some(entry) = self.far.first_entry() {
            let due = *entry.key();
            if due - tick >= DEFER_WHEEL_TICKS {
                break;
            }
            let mut sends = entry.remove();
            self.slot_for(due).append(&mut sends);
        }
    }

    /// Forget keys whose sends have all left and arrived long enough ago that no send still
    /// to be made can depart before them.
    fn prune(&mut self, now: Time) {
        if self.ordered.len() < ORDERED_PRUNE_LEN_MIN.max(2 * self.ordered_pruned_len) {
            return;
        }
        let horizon = Time(now.as_us().saturating_sub(ORDERED_KEEP_TICKS * self.tick_us));
        self.ordered.retain(|_, last| last.depart > horizon || last.arrival > horizon);
        self.ordered_floor = horizon;
        self.ordered.shrink_to(2 * self.ordered.len());
        self.ordered_pruned_len = self.ordered.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasim_model::{DeviceFrame, DeviceId, UserId};

    /// A fixed latency per destination index, in µs.
    struct Fixed;
    impl Latency for Fixed {
        fn sample_us(&mut self, to: NodeIdx, _depart: Time) -> u64 {
            100 * u64::from(to.0)
        }
    }

    /// Latencies falling by 100 µs a draw from 500 µs.
    struct Falling(u64);
    impl Latency for Falling {
        fn sample_us(&mut self, _: NodeIdx, _: Time) -> u64 {
            self.0 -= 100;
            self.0
        }
    }

    fn msg() -> Msg {
        Msg::Device { device: DeviceId::phone(UserId(1)), frame: DeviceFrame::Heartbeat { receipts_heard: 0 } }
    }

    fn flush(o: &mut Outbox, now_us: u64) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        o.flush(Time(now_us), |to, e| out.push((to.0, e.at.as_us())));
        out.sort_unstable();
        out
    }

    #[test]
    fn a_reply_that_finishes_first_arrives_first() {
        let mut o = Outbox::new(NodeIdx(0), 1_000);
        // Started first but served longer, then a short one: both to node 1.
        o.send(NodeIdx(1), Time(900), msg(), &mut Fixed);
        o.send(NodeIdx(1), Time(300), msg(), &mut Fixed);
        assert_eq!(flush(&mut o, 1_000), vec![(1, 400), (1, 1_000)]);
    }

    #[test]
    fn a_send_departing_in_a_later_tick_waits_for_it_and_does_not_block_earlier_ones() {
        let mut o = Outbox::new(NodeIdx(0), 1_000);
        o.send(NodeIdx(1), Time(5_000), msg(), &mut Fixed);
        assert!(flush(&mut o, 1_000).is_empty(), "held until its departure's tick");
        assert_eq!(o.backlog(), (1, Time(5_000)));
        o.send(NodeIdx(1), Time(1_500), msg(), &mut Fixed);
        assert_eq!(flush(&mut o, 2_000), vec![(1, 1_600)], "the later request's reply is not held behind it");
        assert_eq!(flush(&mut o, 5_000), vec![(1, 5_100)]);
        assert_eq!(o.backlog().0, 0);
    }

    #[test]
    fn a_send_far_ahead_waits_for_its_tick() {
        let mut o = Outbox::new(NodeIdx(0), 1_000);
        let far = (DEFER_WHEEL_TICKS * 3 + 7) * 1_000 + 500;
        o.send(NodeIdx(1), Time(far), msg(), &mut Fixed);
        let mut delivered = Vec::new();
        for tick in 1..=DEFER_WHEEL_TICKS * 4 {
            o.flush(Time(tick * 1_000), |to, e| delivered.push((tick, to.0, e.at.as_us())));
        }
        assert_eq!(delivered, vec![(DEFER_WHEEL_TICKS * 3 + 8, 1, far + 100)], "released in its departure's tick");
        assert_eq!(o.backlog().0, 0);
    }

    #[test]
    fn sends_on_one_key_keep_their_order_and_other_keys_do_not_wait() {
        let mut o = Outbox::new(NodeIdx(0), 1_000);
        o.send_ordered(NodeIdx(1), Time(900), msg(), 7, &mut Fixed);
        o.send_ordered(NodeIdx(1), Time(300), msg(), 7, &mut Fixed); // the same key: after it
        o.send_ordered(NodeIdx(1), Time(300), msg(), 8, &mut Fixed); // another key
        o.send(NodeIdx(1), Time(200), msg(), &mut Fixed);
        assert_eq!(flush(&mut o, 1_000), vec![(1, 300), (1, 400), (1, 1_000), (1, 1_000)]);
    }

    /// An outbox (1 ms tick) whose key 7 has a send arriving at 5.4 ms, among enough other
    /// keys to make pruning worth it.
    fn key_7_among_enough_keys_to_prune() -> Outbox {
        let mut o = Outbox::new(NodeIdx(0), 1_000);
        o.send_ordered(NodeIdx(1), Time(400), msg(), 7, &mut Fixed5000);
        for k in 100..100 + 2 * ORDERED_PRUNE_LEN_MIN as u64 {
            o.send_ordered(NodeIdx(1), Time(500), msg(), k, &mut Fixed);
        }
        o
    }

    #[test]
    fn a_key_outlives_its_last_arrival_for_a_send_of_work_noticed_late() {
        let mut o = key_7_among_enough_keys_to_prune();
        // Ten ticks on, a process handles work of 1 ms (a chain of short hops ran ahead of
        // the tick): its send on key 7 still arrives after the earlier one.
        flush(&mut o, 10_000);
        o.send_ordered(NodeIdx(1), Time(1_000), msg(), 7, &mut Fixed);
        assert_eq!(flush(&mut o, 11_000), vec![(1, 5_400)]);
    }

    #[test]
    fn a_send_on_a_pruned_key_is_held_to_the_pruning_horizon() {
        let mut o = key_7_among_enough_keys_to_prune();
        let now = (ORDERED_KEEP_TICKS + 10) * 1_000;
        flush(&mut o, now);
        // Work far behind the clock (never measured): the key was forgotten, and its send
        // is held to the horizon, after the forgotten one, instead of overtaking it.
        o.send_ordered(NodeIdx(1), Time(1_000), msg(), 7, &mut Fixed);
        let horizon = now - ORDERED_KEEP_TICKS * 1_000;
        assert_eq!(flush(&mut o, now + 1_000), vec![(1, horizon + 100)]);
        assert!(horizon + 100 > 5_400);
    }

    /// 5 ms to anyone.
    struct Fixed5000;
    impl Latency for Fixed5000 {
        fn sample_us(&mut self, _: NodeIdx, _: Time) -> u64 {
            5_000
        }
    }

    #[test]
    fn an_ordered_key_keeps_arrival_order() {
        let mut o = Outbox::new(NodeIdx(0), 1_000);
        let mut latency = Falling(500);
        o.send_ordered(NodeIdx(1), Time(0), msg(), 7, &mut latency); // drawn 400
        o.send_ordered(NodeIdx(1), Time(10), msg(), 7, &mut latency); // drawn 310: waits for 400
        o.send_ordered(NodeIdx(1), Time(20), msg(), 9, &mut latency); // another key: 220
        assert_eq!(flush(&mut o, 1_000), vec![(1, 220), (1, 400), (1, 400)]);
    }
}
