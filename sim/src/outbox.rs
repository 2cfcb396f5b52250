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
//! made. A send on an ordered key leaves no earlier than the previous send on that key and
//! arrives no earlier than it. "Previous" is by the time of the event that caused each
//! send, not by the order the handlers ran: a process may handle an event late (a hop
//! shorter than a tick is noticed at the next tick), and its sends then come before the
//! sends of later events it handled first. Sends of different keys never wait for each
//! other, as requests multiplexed over a connection pool do not.

use crate::msg::{Envelope, Msg, NodeIdx};
use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use wasim_model::Time;

/// A message on its way out: its departure decides the tick it is released in.
#[derive(Clone, Copy, Debug)]
struct Staged {
    depart: Time,
    to: NodeIdx,
    env: Envelope,
}

impl Staged {
    fn key(&self) -> (Time, u32) {
        (self.depart, self.env.seq)
    }
}

/// Ordered by departure, then send order; reversed so that `BinaryHeap` pops the earliest.
impl Ord for Staged {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

impl PartialOrd for Staged {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Staged {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Staged {}

/// The latest send on an ordered key.
#[derive(Clone, Copy, Debug, Default)]
struct KeyLast {
    /// When the event that caused the latest send happened.
    cause: Time,
    /// That send's departure and arrival.
    depart: Time,
    arrival: Time,
}

/// Draws the latency of a send to `to`.
pub(crate) trait Latency {
    fn sample_us(&mut self, to: NodeIdx) -> u64;
}

/// Ordered keys kept before a pruning is considered: pruning a small table is not worth it.
const ORDERED_PRUNE_LEN_MIN: usize = 1_024;

/// What a process has sent but not yet put on the network.
pub(crate) struct Outbox {
    from: NodeIdx,
    seq: u32,
    /// Sends of the current tick.
    staged: Vec<Staged>,
    /// The latest departure among `staged`.
    staged_depart_max: Time,
    /// Sends departing after the tick they were made in (a queue is backed up).
    deferred: BinaryHeap<Staged>,
    /// Ordered keys with a send not yet arrived (or recently arrived: pruned in bulk).
    ordered: FxHashMap<u64, KeyLast>,
    /// `ordered`'s size after its last pruning: it is pruned again when it has doubled.
    ordered_pruned_len: usize,
}

impl Outbox {
    /// An empty outbox of process `from`.
    pub fn new(from: NodeIdx) -> Outbox {
        Outbox {
            from,
            seq: 0,
            staged: Vec::new(),
            staged_depart_max: Time::ZERO,
            deferred: BinaryHeap::new(),
            ordered: FxHashMap::default(),
            ordered_pruned_len: 0,
        }
    }

    /// Send `msg` to `to`, leaving at `depart` with a latency of its own.
    #[inline]
    pub fn send(&mut self, to: NodeIdx, depart: Time, msg: Msg, latency: &mut impl Latency) {
        let at = Time(depart.as_us() + latency.sample_us(to));
        self.stage(to, depart, at, msg);
    }

    /// Send `msg` to `to`, caused by an event at `cause`, leaving at `depart`, in order on
    /// `key`: not before, and arriving not before, the send on `key` caused by an earlier
    /// event.
    #[inline]
    pub fn send_ordered(
        &mut self,
        to: NodeIdx,
        cause: Time,
        depart: Time,
        msg: Msg,
        key: u64,
        latency: &mut impl Latency,
    ) {
        let drawn = latency.sample_us(to);
        let last = self.ordered.entry(key).or_default();
        let (depart, at) = if cause >= last.cause {
            let depart = depart.max(last.depart);
            let at = Time(depart.as_us() + drawn).max(last.arrival);
            *last = KeyLast { cause, depart, arrival: at };
            (depart, at)
        } else if depart < last.depart {
            // Caused, and leaving, before the latest send on the key: it arrives before it.
            (depart, Time(depart.as_us() + drawn).min(last.arrival))
        } else {
            (depart, Time(depart.as_us() + drawn).max(last.arrival))
        };
        self.stage(to, depart, at, msg);
    }

    #[inline]
    fn stage(&mut self, to: NodeIdx, depart: Time, at: Time, msg: Msg) {
        self.seq = self.seq.wrapping_add(1);
        self.staged_depart_max = self.staged_depart_max.max(depart);
        self.staged.push(Staged { depart, to, env: Envelope { at, from: self.from, seq: self.seq, msg } });
    }

    /// Sends waiting for a later tick, and the last departure among them.
    pub fn backlog(&self) -> (usize, Time) {
        let last = self.deferred.iter().map(|s| s.depart).max().unwrap_or(Time::ZERO);
        (self.deferred.len(), last)
    }

    /// Hand every send departing by `now` to `deliver`; keep the rest for later ticks.
    pub fn flush(&mut self, now: Time, mut deliver: impl FnMut(NodeIdx, &Envelope)) {
        if self.staged_depart_max > now {
            // Some sends leave in later ticks: they wait, in departure order.
            let mut i = 0;
            while i < self.staged.len() {
                if self.staged[i].depart > now {
                    self.deferred.push(self.staged.swap_remove(i));
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
        while self.deferred.peek().is_some_and(|s| s.depart <= now) {
            let s = self.deferred.pop().expect("peeked");
            deliver(s.to, &s.env);
        }
        self.prune(now);
    }

    /// Forget keys whose sends have all left and arrived: nothing can wait for them.
    fn prune(&mut self, now: Time) {
        if self.ordered.len() < ORDERED_PRUNE_LEN_MIN.max(2 * self.ordered_pruned_len) {
            return;
        }
        self.ordered.retain(|_, last| last.depart > now || last.arrival > now);
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
        fn sample_us(&mut self, to: NodeIdx) -> u64 {
            100 * u64::from(to.0)
        }
    }

    /// Latencies falling by 100 µs a draw from 500 µs.
    struct Falling(u64);
    impl Latency for Falling {
        fn sample_us(&mut self, _: NodeIdx) -> u64 {
            self.0 -= 100;
            self.0
        }
    }

    fn msg() -> Msg {
        Msg::Device { device: DeviceId::phone(UserId(1)), frame: DeviceFrame::Heartbeat }
    }

    fn flush(o: &mut Outbox, now_us: u64) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        o.flush(Time(now_us), |to, e| out.push((to.0, e.at.as_us())));
        out.sort_unstable();
        out
    }

    #[test]
    fn a_reply_that_finishes_first_arrives_first() {
        let mut o = Outbox::new(NodeIdx(0));
        // Started first but served longer, then a short one: both to node 1.
        o.send(NodeIdx(1), Time(900), msg(), &mut Fixed);
        o.send(NodeIdx(1), Time(300), msg(), &mut Fixed);
        assert_eq!(flush(&mut o, 1_000), vec![(1, 400), (1, 1_000)]);
    }

    #[test]
    fn a_send_departing_in_a_later_tick_waits_for_it_and_does_not_block_earlier_ones() {
        let mut o = Outbox::new(NodeIdx(0));
        o.send(NodeIdx(1), Time(5_000), msg(), &mut Fixed);
        assert!(flush(&mut o, 1_000).is_empty(), "held until its departure's tick");
        assert_eq!(o.backlog(), (1, Time(5_000)));
        o.send(NodeIdx(1), Time(1_500), msg(), &mut Fixed);
        assert_eq!(flush(&mut o, 2_000), vec![(1, 1_600)], "the later request's reply is not held behind it");
        assert_eq!(flush(&mut o, 5_000), vec![(1, 5_100)]);
        assert_eq!(o.backlog().0, 0);
    }

    #[test]
    fn sends_on_one_key_keep_their_order_and_other_keys_do_not_wait() {
        let mut o = Outbox::new(NodeIdx(0));
        o.send_ordered(NodeIdx(1), Time(0), Time(900), msg(), 7, &mut Fixed);
        o.send_ordered(NodeIdx(1), Time(1), Time(300), msg(), 7, &mut Fixed); // a later cause: after
        o.send_ordered(NodeIdx(1), Time(1), Time(300), msg(), 8, &mut Fixed); // another key
        o.send(NodeIdx(1), Time(200), msg(), &mut Fixed);
        assert_eq!(flush(&mut o, 1_000), vec![(1, 300), (1, 400), (1, 1_000), (1, 1_000)]);
    }

    #[test]
    fn a_send_caused_earlier_but_handled_later_does_not_wait_for_the_later_one() {
        let mut o = Outbox::new(NodeIdx(0));
        // An event at 500 handled first, then one at 100 noticed late: the late one's send
        // leaves at its own time and arrives first.
        o.send_ordered(NodeIdx(1), Time(500), Time(550), msg(), 7, &mut Fixed);
        o.send_ordered(NodeIdx(1), Time(100), Time(150), msg(), 7, &mut Fixed);
        assert_eq!(flush(&mut o, 1_000), vec![(1, 250), (1, 650)]);
    }

    #[test]
    fn an_ordered_key_keeps_arrival_order() {
        let mut o = Outbox::new(NodeIdx(0));
        let mut latency = Falling(500);
        o.send_ordered(NodeIdx(1), Time(0), Time(0), msg(), 7, &mut latency); // drawn 400
        o.send_ordered(NodeIdx(1), Time(10), Time(10), msg(), 7, &mut latency); // drawn 310: waits for 400
        o.send_ordered(NodeIdx(1), Time(20), Time(20), msg(), 9, &mut latency); // another key: 220
        assert_eq!(flush(&mut o, 1_000), vec![(1, 220), (1, 400), (1, 400)]);
    }
}
