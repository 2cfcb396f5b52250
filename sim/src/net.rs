//! wasim's in-memory network: per-destination buckets keyed by arrival tick.
//!
//! A message carries its exact arrival time; it is handed to the receiver at the first
//! tick at or after that time, and never in the tick it was sent (every hop takes at
//! least one tick), so the order in which nodes run within a tick cannot change results.

use crate::limits::WHEEL_TICKS;
use crate::msg::{Envelope, Msg, NodeIdx};
use std::collections::BTreeMap;

#[derive(Debug)]
struct Inbox {
    /// `slots[tick % WHEEL_TICKS]` holds arrivals of `tick`.
    slots: Vec<Vec<Envelope>>,
    /// Arrivals at least `WHEEL_TICKS` ahead, with their tick; rare (long latency tails).
    far: BTreeMap<u64, Vec<Envelope>>,
}

/// How often (in ticks) a process's far arrivals are looked through: every half turn of the
/// wheel, so that one added just after a look is still moved in before it is due.
const FAR_MIGRATION_TICKS: u64 = WHEEL_TICKS / 2;

/// Buffers larger than this are freed rather than pooled, so that one burst (a reconnect
/// storm) does not leave every slot holding a huge buffer.
const POOLED_CAPACITY_MAX: usize = 4_096;

/// The network shared by all simulated processes.
#[derive(Debug)]
pub struct Network {
    inboxes: Vec<Inbox>,
    /// Drained slot buffers, reused while still warm in cache. Slots hold no buffer while
    /// empty, so memory follows the messages in flight, not the wheel's size.
    pool: Vec<Vec<Envelope>>,
    tick_us: u64,
}

impl Network {
    /// A network for `nodes` processes with the given tick.
    pub fn new(nodes: usize, tick_us: u64) -> Network {
        let inbox = || Inbox { slots: (0..WHEEL_TICKS).map(|_| Vec::new()).collect(), far: BTreeMap::new() };
        Network { inboxes: (0..nodes).map(|_| inbox()).collect(), pool: Vec::new(), tick_us }
    }

    /// Hand `node` the arrivals of `tick` in `out`, which must be empty; its old buffer
    /// goes back to the pool.
    pub fn take(&mut self, node: NodeIdx, tick: u64, out: &mut Vec<Envelope>) {
        let inbox = &mut self.inboxes[usize::from(node.0)];
        assert!(out.is_empty(), "the buffer of the last tick was handled");
        let old = std::mem::replace(out, std::mem::take(&mut inbox.slots[(tick % WHEEL_TICKS) as usize]));
        if old.capacity() > 0 && old.capacity() <= POOLED_CAPACITY_MAX {
            self.pool.push(old);
        }
        // Arrivals far ahead move into the wheel once they come within its reach: every
        // half turn, so each waits in the overflow without costing every tick a scan (a
        // backlog of long latencies at a small tick would otherwise cost a scan per tick).
        if tick.is_multiple_of(FAR_MIGRATION_TICKS) {
            while let Some(entry) = inbox.far.first_entry() {
                let due = *entry.key();
                if due - tick >= WHEEL_TICKS {
                    break;
                }
                let mut arrivals = entry.remove();
                if due == tick {
                    out.append(&mut arrivals);
                } else {
                    inbox.slots[(due % WHEEL_TICKS) as usize].append(&mut arrivals);
                }
            }
        }
    }

    /// Drop everything on its way to `node` (its process was killed: the connections
    /// these travelled on are gone).
    pub fn clear(&mut self, node: NodeIdx) {
        let inbox = &mut self.inboxes[usize::from(node.0)];
        for slot in &mut inbox.slots {
            slot.clear();
        }
        inbox.far.clear();
    }

    /// The messages still on the network.
    pub fn message_ids<T: Copy + 'static>(&self, of: fn(&Msg) -> Option<T>) -> impl Iterator<Item = T> + '_ {
        self.inboxes.iter().flat_map(|i| i.slots.iter().chain(i.far.values())).flatten().filter_map(move |e| of(&e.msg))
    }

    /// Queue one message sent during `sender_tick`.
    #[inline]
    pub fn deliver_one(&mut self, sender_tick: u64, to: NodeIdx, env: &Envelope) {
        let to = usize::from(to.0);
        // Most hops inside the datacenter land in the next tick: skip the division.
        let next = sender_tick + 1;
        let at = env.at.as_us();
        let tick = if at <= next * self.tick_us { next } else { at.div_ceil(self.tick_us) };
        let inbox = &mut self.inboxes[to];
        if tick - sender_tick < WHEEL_TICKS {
            let slot = &mut inbox.slots[(tick % WHEEL_TICKS) as usize];
            if slot.capacity() == 0 {
                if let Some(buffer) = self.pool.pop() {
                    *slot = buffer;
                }
            }
            slot.push(*env);
        } else {
            inbox.far.entry(tick).or_default().push(*env);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Msg;
    use wasim_model::{DeviceFrame, DeviceId, Time, UserId};

    fn env(at_us: u64) -> Envelope {
        Envelope {
            at: Time(at_us),
            from: NodeIdx(0),
            seq: 0,
            msg: Msg::Device {
                device: DeviceId::phone(UserId(1)),
                frame: DeviceFrame::Heartbeat { receipts_heard: 0 },
            },
        }
    }

    fn arrivals(net: &mut Network, tick: u64) -> Vec<u64> {
        let mut out = Vec::new();
        net.take(NodeIdx(1), tick, &mut out);
        out.iter().map(|e| e.at.as_us()).collect()
    }

    #[test]
    fn a_message_arrives_at_the_tick_covering_its_time_but_never_in_its_own_tick() {
        let mut net = Network::new(2, 1_000);
        net.deliver_one(5, NodeIdx(1), &env(7_300));
        net.deliver_one(5, NodeIdx(1), &env(5_200));
        assert_eq!(arrivals(&mut net, 6), vec![5_200], "a sub-tick hop waits for the next tick");
        assert_eq!(arrivals(&mut net, 7), Vec::<u64>::new());
        assert_eq!(arrivals(&mut net, 8), vec![7_300], "exact time kept, delivered at ceil");
    }

    #[test]
    fn far_future_messages_wait_in_the_overflow() {
        let mut net = Network::new(2, 1_000);
        let at = (WHEEL_TICKS + 10) * 1_000;
        net.deliver_one(0, NodeIdx(1), &env(at));
        let mut seen = Vec::new();
        for tick in 1..=2 * WHEEL_TICKS {
            seen.extend(arrivals(&mut net, tick).into_iter().map(|a| (tick, a)));
        }
        assert_eq!(seen, vec![(WHEEL_TICKS + 10, at)], "at its tick, not when the wheel slot comes round early");
    }
}
