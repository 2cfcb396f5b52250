//! A process's outbox: what its handlers send, released onto the network in departure order.
//!
//! A handler computes each reply's exact departure (a queue's `max(arrival, free worker) +
//! service`), which need not follow the order in which the handlers ran: with several
//! workers a short request that started later finishes first, and a queue that is backed
//! up sends its replies seconds after the request was noticed. Links between servers are
//! TCP connections and a device's WebSocket is one too: what *leaves* first arrives first.
//! So the outbox holds every send until the tick its departure falls in, then releases the
//! tick's sends sorted by departure. The link's order is then applied in departure order,
//! never in the order the handlers happened to run: a reply leaves when its own service
//! ends, not behind a request that started earlier.
//!
//! Some work is done in order per key, whatever the number of workers: a device's
//! WebSocket is written by one thread, a Kafka partition is appended and consumed in
//! offset order, and a conversation's messages must reach the device in id order. A send
//! made "in order" on a key leaves no earlier than the previous send on that key, so a
//! short request cannot overtake a long one of the same key.

use crate::msg::{Envelope, Msg, NodeIdx};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use wasim_model::Time;

/// How a send keeps order with the others on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    /// No order with other sends (a device's frames to a server each take their own path).
    Unordered,
    /// The TCP connection from this process to the destination.
    Link,
    /// One device's WebSocket, named by its packed device key.
    Socket(u32),
}

/// Slots of the in-order table (a power of two): far more than the keys of one process
/// with a send in flight at once. Two keys sharing a slot are ordered together, which
/// delays one a little but never reorders either; a slot whose key has nothing in flight
/// is taken over.
const IN_ORDER_SLOTS: usize = 1 << 13;

/// Slots of the socket-order table (a power of two): far more than the sockets of one
/// process with something in flight at once. Two sockets sharing a slot are ordered
/// together, which delays one a little but never reorders either; a slot whose socket has
/// nothing in flight is taken over, so collisions are rare.
const SOCKET_SLOTS: usize = 1 << 13;

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
    /// Last arrival per destination on this process's links.
    link_last: Vec<Time>,
    /// Last arrival per device socket (direct-mapped; allocated on first use).
    sockets: Vec<(u32, Time)>,
    /// Last departure per in-order key (direct-mapped; allocated on first use).
    in_order: Vec<(u64, Time)>,
}

/// Draws the latency of a send on the way out (in departure order).
pub(crate) trait Latency {
    fn sample_us(&mut self, to: NodeIdx) -> u64;
}

impl Outbox {
    /// An empty outbox for a process on a network of `nodes` processes.
    pub fn new(nodes: usize) -> Outbox {
        Outbox {
            seq: 0,
            staged: Vec::new(),
            staged_depart_max: Time::ZERO,
            deferred: BinaryHeap::new(),
            due: Vec::new(),
            link_last: vec![Time::ZERO; nodes],
            sockets: Vec::new(),
            in_order: Vec::new(),
        }
    }

    /// Hold `msg` for `to`, leaving at `depart` but not before the previous send made in
    /// order on `key`.
    #[inline]
    pub fn send_in_order(&mut self, to: NodeIdx, depart: Time, channel: Channel, msg: Msg, key: u64) {
        if self.in_order.is_empty() {
            self.in_order = vec![(u64::MAX, Time::ZERO); IN_ORDER_SLOTS];
        }
        let h = wasim_model::UserId(key as u32).hash64() ^ key.rotate_left(32);
        let slot = &mut self.in_order[(h >> 51) as usize % IN_ORDER_SLOTS];
        if slot.0 != key && slot.1 <= depart {
            *slot = (key, Time::ZERO); // the slot's previous key has nothing queued
        }
        slot.0 = key;
        slot.1 = depart.max(slot.1);
        let depart = slot.1;
        self.send(to, depart, channel, msg);
    }

    /// Hold `msg` for `to`, leaving at `depart`.
    #[inline]
    pub fn send(&mut self, to: NodeIdx, depart: Time, channel: Channel, msg: Msg) {
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
    /// its channel's order, and append the envelope for the network to `out`. `from` is
    /// this process.
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
        let mut batch = std::mem::take(&mut self.staged);
        for s in batch.drain(..) {
            let drawn = Time(s.depart.as_us() + latency.sample_us(s.to));
            let at = match s.channel {
                Channel::Unordered => drawn,
                Channel::Link => {
                    let last = &mut self.link_last[usize::from(s.to.0)];
                    *last = drawn.max(*last);
                    *last
                }
                Channel::Socket(key) => self.socket_arrival(key, s.depart, drawn),
            };
            out.push((s.to, Envelope { at, from, seq: s.seq, msg: s.msg }));
        }
        self.staged = batch;
    }

    fn socket_arrival(&mut self, key: u32, depart: Time, drawn: Time) -> Time {
        if self.sockets.is_empty() {
            self.sockets = vec![(u32::MAX, Time::ZERO); SOCKET_SLOTS];
        }
        let slot = &mut self.sockets[(key.wrapping_mul(0x9E37_79B1) >> 19) as usize % SOCKET_SLOTS];
        if slot.0 != key && slot.1 <= depart {
            *slot = (key, Time::ZERO); // the slot's previous socket has nothing in flight
        }
        slot.0 = key;
        slot.1 = drawn.max(slot.1);
        slot.1
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
        let mut o = Outbox::new(4);
        // Started first but served longer, then a short one: both on the link to node 1.
        o.send(NodeIdx(1), Time(900), Channel::Link, msg());
        o.send(NodeIdx(1), Time(300), Channel::Link, msg());
        assert_eq!(flush(&mut o, 1_000), vec![(1, 400), (1, 1_000)], "released in departure order");
    }

    #[test]
    fn a_send_departing_in_a_later_tick_waits_for_it_and_does_not_block_earlier_ones() {
        let mut o = Outbox::new(4);
        o.send(NodeIdx(1), Time(5_000), Channel::Link, msg());
        assert!(flush(&mut o, 1_000).is_empty(), "held until its departure's tick");
        assert_eq!(o.backlog(), (1, Time(5_000)));
        o.send(NodeIdx(1), Time(1_500), Channel::Link, msg());
        assert_eq!(flush(&mut o, 2_000), vec![(1, 1_600)], "the later request's reply is not held behind it");
        assert_eq!(flush(&mut o, 5_000), vec![(1, 5_100)]);
        assert_eq!(o.backlog().0, 0);
    }

    #[test]
    fn sends_in_order_on_a_key_never_overtake_each_other() {
        let mut o = Outbox::new(4);
        o.send_in_order(NodeIdx(1), Time(900), Channel::Link, msg(), 7);
        o.send_in_order(NodeIdx(1), Time(300), Channel::Link, msg(), 7); // same key: waits
        o.send_in_order(NodeIdx(2), Time(300), Channel::Link, msg(), 8); // another key
        assert_eq!(flush(&mut o, 1_000), vec![(2, 500), (1, 1_000), (1, 1_000)]);
    }

    #[test]
    fn a_link_keeps_order_and_unordered_sends_do_not() {
        let mut o = Outbox::new(4);
        o.send(NodeIdx(3), Time(100), Channel::Link, msg()); // arrives at 400
        o.send(NodeIdx(3), Time(100), Channel::Unordered, msg()); // 400 too, independent
        o.send(NodeIdx(1), Time(200), Channel::Link, msg()); // another link: 300
        assert_eq!(flush(&mut o, 1_000), vec![(3, 400), (3, 400), (1, 300)]);
    }

    #[test]
    fn a_socket_keeps_its_own_order() {
        struct Falling(u64);
        impl Latency for Falling {
            fn sample_us(&mut self, _: NodeIdx) -> u64 {
                self.0 -= 100;
                self.0
            }
        }
        let mut o = Outbox::new(2);
        o.send(NodeIdx(1), Time(0), Channel::Socket(7), msg()); // drawn 400
        o.send(NodeIdx(1), Time(10), Channel::Socket(7), msg()); // drawn 310: waits for 400
        o.send(NodeIdx(1), Time(20), Channel::Socket(9), msg()); // another socket: 220
        let mut out = Vec::new();
        o.flush(Time(1_000), NodeIdx(0), &mut Falling(500), &mut out);
        let at: Vec<u64> = out.iter().map(|(_, e)| e.at.as_us()).collect();
        assert_eq!(at, vec![400, 400, 220]);
    }
}
