//! A process's outbox: what its handlers send, released onto the network in departure order.
//!
//! A handler computes each reply's exact departure (a queue's `max(arrival, free worker) +
//! service`), which need not follow the order in which the handlers ran: with several
//! workers a short request that started later finishes first, and a queue that is backed
//! up sends its replies seconds after the request was noticed. So the outbox holds every
//! send until the tick its departure falls in, then releases the tick's sends in departure
//! order: a reply leaves when its own service ends, never behind a request that started
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

/// How a send keeps order with the others on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    /// No order with other sends.
    Unordered,
    /// In order with every other send on the same key (see `OrderKey`).
    Ordered(u64),
}

#[derive(Clone, Copy, Debug)]
struct Staged {
    depart: Time,
    seq: u32,
    to: NodeIdx,
    channel: Channel,
    msg: Msg,
}

impl Staged {
    fn key(&self) -> (Time, u32) {
        (self.depart, self.seq)
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
    /// When the event that caused the latest send happened, and that send's departure.
    cause: Time,
    depart: Time,
    /// The latest departure released so far, and its arrival.
    released_depart: Time,
    arrival: Time,
}

/// What a process has sent but not yet put on the network.
pub(crate) struct Outbox {
    seq: u32,
    /// Sends of the current tick, in the order the handlers made them.
    staged: Vec<Staged>,
    /// The latest departure among `staged`.
    staged_depart_max: Time,
    /// Sends departing after the tick they were made in (a queue is backed up).
    deferred: BinaryHeap<Staged>,
    due: Vec<Staged>,
    /// Ordered keys with a send not yet arrived (or recently arrived: pruned in bulk).
    ordered: FxHashMap<u64, KeyLast>,
    /// `ordered`'s size after its last pruning: it is pruned again when it has doubled.
    ordered_pruned_len: usize,
}

/// Draws the latency of a send on the way out (in departure order).
pub(crate) trait Latency {
    fn sample_us(&mut self, to: NodeIdx) -> u64;
}

/// Ordered keys kept before a pruning is considered: pruning a small table is not worth it.
const ORDERED_PRUNE_LEN_MIN: usize = 1_024;

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox {
            seq: 0,
            staged: Vec::new(),
            staged_depart_max: Time::ZERO,
            deferred: BinaryHeap::new(),
            due: Vec::new(),
            ordered: FxHashMap::default(),
            ordered_pruned_len: 0,
        }
    }

    /// Hold `msg` for `to`, leaving at `depart`.
    #[inline]
    pub fn send(&mut self, to: NodeIdx, depart: Time, msg: Msg) {
        self.stage(to, depart, Channel::Unordered, msg);
    }

    /// Hold `msg` for `to`, caused by an event at `cause`, leaving at `depart` but not
    /// before the send on `key` caused by an earlier event.
    #[inline]
    pub fn send_ordered(&mut self, to: NodeIdx, cause: Time, depart: Time, msg: Msg, key: u64) {
        let last = self.ordered.entry(key).or_default();
        let depart = if cause >= last.cause {
            last.cause = cause;
            last.depart = depart.max(last.depart);
            last.depart
        } else {
            depart // caused before the latest send on the key: it does not wait for it
        };
        self.stage(to, depart, Channel::Ordered(key), msg);
    }

    #[inline]
    fn stage(&mut self, to: NodeIdx, depart: Time, channel: Channel, msg: Msg) {
        self.seq = self.seq.wrapping_add(1);
        self.staged_depart_max = self.staged_depart_max.max(depart);
        self.staged.push(Staged { depart, seq: self.seq, to, channel, msg });
    }

    /// Sends waiting for a later tick, and the last departure among them.
    pub fn backlog(&self) -> (usize, Time) {
        let last = self.deferred.iter().map(|s| s.depart).max().unwrap_or(Time::ZERO);
        (self.deferred.len(), last)
    }

    /// Release every send departing by `now` in departure order: draw its latency, apply
    /// its key's order, and append the envelope for the network to `out`. `from` is this
    /// process.
    pub fn flush(&mut self, now: Time, from: NodeIdx, latency: &mut impl Latency, out: &mut Vec<(NodeIdx, Envelope)>) {
        let earlier = self.deferred.peek().is_some_and(|s| s.depart <= now);
        // The common case, nothing crosses a tick: the staged sends are the due ones.
        if self.staged_depart_max > now || earlier {
            for s in self.staged.drain(..) {
                if s.depart > now {
                    self.deferred.push(s);
                } else {
                    self.due.push(s);
                }
            }
            while self.deferred.peek().is_some_and(|s| s.depart <= now) {
                self.due.push(self.deferred.pop().expect("peeked"));
            }
            std::mem::swap(&mut self.staged, &mut self.due);
        }
        self.staged_depart_max = Time::ZERO;
        if !self.staged.is_sorted_by_key(Staged::key) {
            self.staged.sort_unstable_by_key(Staged::key);
        }
        for s in self.staged.drain(..) {
            let mut at = Time(s.depart.as_us() + latency.sample_us(s.to));
            if let Channel::Ordered(key) = s.channel {
                let last = self.ordered.get_mut(&key).expect("an ordered send keeps its key until it arrives");
                if s.depart >= last.released_depart {
                    at = at.max(last.arrival);
                    last.released_depart = s.depart;
                    last.arrival = at;
                } else {
                    // Left before a send already released on the key: it arrives before it.
                    at = at.min(last.arrival);
                }
            }
            out.push((s.to, Envelope { at, from, seq: s.seq, msg: s.msg }));
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

    fn msg() -> Msg {
        Msg::Device { device: DeviceId::phone(UserId(1)), frame: DeviceFrame::Heartbeat }
    }

    fn flush(o: &mut Outbox, now_us: u64) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        o.flush(Time(now_us), NodeIdx(0), &mut Fixed, &mut out);
        out.iter().map(|(to, e)| (to.0, e.at.as_us())).collect()
    }

    #[test]
    fn a_reply_that_finishes_first_leaves_first() {
        let mut o = Outbox::new();
        // Started first but served longer, then a short one: both to node 1.
        o.send(NodeIdx(1), Time(900), msg());
        o.send(NodeIdx(1), Time(300), msg());
        assert_eq!(flush(&mut o, 1_000), vec![(1, 400), (1, 1_000)], "released in departure order");
    }

    #[test]
    fn a_send_departing_in_a_later_tick_waits_for_it_and_does_not_block_earlier_ones() {
        let mut o = Outbox::new();
        o.send(NodeIdx(1), Time(5_000), msg());
        assert!(flush(&mut o, 1_000).is_empty(), "held until its departure's tick");
        assert_eq!(o.backlog(), (1, Time(5_000)));
        o.send(NodeIdx(1), Time(1_500), msg());
        assert_eq!(flush(&mut o, 2_000), vec![(1, 1_600)], "the later request's reply is not held behind it");
        assert_eq!(flush(&mut o, 5_000), vec![(1, 5_100)]);
        assert_eq!(o.backlog().0, 0);
    }

    #[test]
    fn sends_on_one_key_keep_their_order_and_other_keys_do_not_wait() {
        let mut o = Outbox::new();
        o.send_ordered(NodeIdx(1), Time(0), Time(900), msg(), 7);
        o.send_ordered(NodeIdx(1), Time(1), Time(300), msg(), 7); // same key, a later cause: leaves after
        o.send_ordered(NodeIdx(1), Time(1), Time(300), msg(), 8); // another key
        o.send(NodeIdx(1), Time(200), msg());
        assert_eq!(flush(&mut o, 1_000), vec![(1, 300), (1, 400), (1, 1_000), (1, 1_000)]);
    }

    #[test]
    fn a_send_caused_earlier_but_handled_later_does_not_wait_for_the_later_one() {
        let mut o = Outbox::new();
        // An event at 500 handled first, then one at 100 noticed late: the late one's send
        // leaves at its own time and arrives first.
        o.send_ordered(NodeIdx(1), Time(500), Time(550), msg(), 7);
        o.send_ordered(NodeIdx(1), Time(100), Time(150), msg(), 7);
        assert_eq!(flush(&mut o, 1_000), vec![(1, 250), (1, 650)]);
        // The same after the later one was already released in an earlier tick.
        o.send_ordered(NodeIdx(1), Time(1_500), Time(1_550), msg(), 7);
        assert_eq!(flush(&mut o, 2_000), vec![(1, 1_650)]);
        o.send_ordered(NodeIdx(1), Time(1_200), Time(1_250), msg(), 7);
        assert_eq!(flush(&mut o, 3_000), vec![(1, 1_350)], "departed before the released one: not after it");
    }

    #[test]
    fn an_ordered_key_also_keeps_arrival_order() {
        struct Falling(u64);
        impl Latency for Falling {
            fn sample_us(&mut self, _: NodeIdx) -> u64 {
                self.0 -= 100;
                self.0
            }
        }
        let mut o = Outbox::new();
        o.send_ordered(NodeIdx(1), Time(0), Time(0), msg(), 7); // drawn 400
        o.send_ordered(NodeIdx(1), Time(10), Time(10), msg(), 7); // drawn 310: waits for 400
        o.send_ordered(NodeIdx(1), Time(20), Time(20), msg(), 9); // another key: 220
        let mut out = Vec::new();
        o.flush(Time(1_000), NodeIdx(0), &mut Falling(500), &mut out);
        let at: Vec<u64> = out.iter().map(|(_, e)| e.at.as_us()).collect();
        assert_eq!(at, vec![400, 400, 220]);
    }
}
