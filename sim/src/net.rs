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
    /// This process's drained slot buffers, reused while still warm in cache. Slots hold
    /// no buffer while empty, so memory follows the messages in flight, not the wheel's
    /// size; and a buffer a burst grew (a group message's fan-out) is cut back to about
    /// twice the arrivals of the tick that returns it, so a process's buffers follow its
    /// own load (buffers shared among processes took the capacity of the busiest burst).
    pool: Vec<Vec<Envelope>>,
}

/// How often (in ticks) a process's far arrivals are looked through: every half turn of the
/// wheel, so that one added just after a look is still moved in before it is due.
const FAR_MIGRATION_TICKS: u64 = WHEEL_TICKS / 2;

/// Buffers larger than this are freed rather than pooled, so that one burst (a reconnect
/// storm) does not leave every slot holding a huge buffer.
const POOLED_CAPACITY_MAX: usize = 4_096;

/// Pooled buffers are not cut back below this.
const POOLED_CAPACITY_MIN: usize = 16;

/// wasim's network, split into parts: each part holds the inboxes of the processes one
/// thread runs, and is locked by that thread for a whole tick. A message between parts
/// waits in a mailbox until the tick ends and is put in its inbox at the start of the next
/// (every hop takes at least one tick, so it is never late).
#[derive(Debug)]
pub struct Network {
    parts: Vec<std::sync::Mutex<NetPart>>,
    /// `mail[(tick % 2) * parts² + from * parts + to]`: messages sent in `tick` from part
    /// `from`'s processes to part `to`'s. Two sets, by the parity of the tick: a part that
    /// is done with tick `k` posts in one while the others may still read the other, the
    /// mail of tick `k - 1`.
    mail: Vec<std::sync::Mutex<Vec<(NodeIdx, Envelope)>>>,
    /// Each process's part and its index there.
    owner: std::sync::Arc<[(u16, u32)]>,
}

/// The inboxes of one part's processes.
#[derive(Debug)]
pub struct NetPart {
    me: u16,
    inboxes: Vec<Inbox>,
    owner: std::sync::Arc<[(u16, u32)]>,
    /// What this tick's processes sent to each other part.
    outgoing: Vec<Vec<(NodeIdx, Envelope)>>,
    tick_us: u64,
}

impl Network {
    /// A network of `part_of.len()` processes with the given tick, process `i` in part
    /// `part_of[i]`.
    pub fn new(part_of: &[u16], tick_us: u64) -> Network {
        let parts = part_of.iter().map(|&p| usize::from(p) + 1).max().unwrap_or(1);
        let mut counts = vec![0u32; parts];
        let owner: std::sync::Arc<[(u16, u32)]> = part_of
            .iter()
            .map(|&p| {
                let local = counts[usize::from(p)];
                counts[usize::from(p)] += 1;
                (p, local)
            })
            .collect();
        let inbox =
            || Inbox { slots: (0..WHEEL_TICKS).map(|_| Vec::new()).collect(), far: BTreeMap::new(), pool: Vec::new() };
        Network {
            parts: (0..parts)
                .map(|p| {
                    std::sync::Mutex::new(NetPart {
                        me: p as u16,
                        inboxes: (0..counts[p]).map(|_| inbox()).collect(),
                        owner: owner.clone(),
                        outgoing: vec![Vec::new(); parts],
                        tick_us,
                    })
                })
                .collect(),
            mail: (0..2 * parts * parts).map(|_| std::sync::Mutex::default()).collect(),
            owner,
        }
    }

    /// Part `p`, for the thread running its processes this tick.
    pub fn part(&self, p: usize) -> std::sync::MutexGuard<'_, NetPart> {
        self.parts[p].lock().expect("network lock")
    }

    /// The mailbox of `tick` from part `from` to part `to`.
    fn mailbox(&self, tick: u64, from: usize, to: usize) -> &std::sync::Mutex<Vec<(NodeIdx, Envelope)>> {
        let parts = self.parts.len();
        &self.mail[(tick % 2) as usize * parts * parts + from * parts + to]
    }

    /// At the start of `tick`, put into `part`'s inboxes what the other parts sent it in
    /// the previous tick.
    pub fn receive_mail(&self, part: &mut NetPart, tick: u64) {
        let me = usize::from(part.me);
        for from in (0..self.parts.len()).filter(|&f| f != me) {
            let mut mail = self.mailbox(tick - 1, from, me).lock().expect("mail lock");
            for (to, env) in mail.iter() {
                part.deliver_one(tick - 1, *to, env);
            }
            mail.clear();
        }
    }

    /// At the end of `tick`, post what `part`'s processes sent to other parts.
    pub fn post_mail(&self, part: &mut NetPart, tick: u64) {
        let me = usize::from(part.me);
        for (to, outgoing) in part.outgoing.iter_mut().enumerate().filter(|(_, o)| !o.is_empty()) {
            self.mailbox(tick, me, to).lock().expect("mail lock").append(outgoing);
        }
    }

    /// Drop everything on its way to `node` (its process was killed: the connections
    /// these travelled on are gone). Between ticks.
    pub fn clear(&self, node: NodeIdx) {
        let (p, local) = self.owner[usize::from(node.0)];
        let mut part = self.part(usize::from(p));
        let inbox = &mut part.inboxes[local as usize];
        for slot in &mut inbox.slots {
            slot.clear();
        }
        inbox.far.clear();
        for mail in &self.mail {
            mail.lock().expect("mail lock").retain(|(to, _)| *to != node);
        }
    }

    /// The awaited requests and replies still on the network (between ticks), each as
    /// (the asking process, the request's id): see `Msg::awaited_request`.
    pub fn awaited_requests(&self) -> Vec<(NodeIdx, u64)> {
        let mut reqs = Vec::new();
        let mut of = |to: NodeIdx, env: &Envelope| {
            if let Some((reply, req)) = env.msg.awaited_request() {
                reqs.push((if reply { to } else { env.from }, req));
            }
        };
        for (node, &(p, local)) in self.owner.iter().enumerate() {
            let part = self.parts[usize::from(p)].lock().expect("network lock");
            let inbox = &part.inboxes[local as usize];
            for env in inbox.slots.iter().chain(inbox.far.values()).flatten() {
                of(NodeIdx(node as u16), env);
            }
        }
        for mail in &self.mail {
            for (to, env) in mail.lock().expect("mail lock").iter() {
                of(*to, env);
            }
        }
        reqs
    }

    /// The messages still on the network (between ticks).
    pub fn message_ids<T: Copy + 'static>(&self, of: fn(&Msg) -> Option<T>) -> Vec<T> {
        let mut ids = Vec::new();
        for part in &self.parts {
            let part = part.lock().expect("network lock");
            let queued = part.inboxes.iter().flat_map(|i| i.slots.iter().chain(i.far.values())).flatten();
            ids.extend(queued.filter_map(|e| of(&e.msg)));
        }
        for mail in &self.mail {
            ids.extend(mail.lock().expect("mail lock").iter().filter_map(|(_, e)| of(&e.msg)));
        }
        ids
    }
}

impl NetPart {
    /// Hand `node`, of this part, the arrivals of `tick` in `out`, which must be empty; its
    /// old buffer goes back to the pool.
    pub fn take(&mut self, node: NodeIdx, tick: u64, out: &mut Vec<Envelope>) {
        let (p, local) = self.owner[usize::from(node.0)];
        debug_assert_eq!(p, self.me, "a process takes from its own part");
        let inbox = &mut self.inboxes[local as usize];
        assert!(out.is_empty(), "the buffer of the last tick was handled");
        let mut old = std::mem::replace(out, std::mem::take(&mut inbox.slots[(tick % WHEEL_TICKS) as usize]));
        if old.capacity() > 0 && old.capacity() <= POOLED_CAPACITY_MAX {
            let fits = (out.len() * 2).max(POOLED_CAPACITY_MIN);
            if old.capacity() > 2 * fits {
                old.shrink_to(fits);
            }
            inbox.pool.push(old);
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

    /// Queue one message sent during `sender_tick`: in its inbox if the receiver is of
    /// this part, else in the mail to the receiver's part.
    #[inline]
    pub fn deliver_one(&mut self, sender_tick: u64, to: NodeIdx, env: &Envelope) {
        let (p, local) = self.owner[usize::from(to.0)];
        if p != self.me {
            self.outgoing[usize::from(p)].push((to, *env));
            return;
        }
        // Most hops inside the datacenter land in the next tick: skip the division.
        let next = sender_tick + 1;
        let at = env.at.as_us();
        let tick = if at <= next * self.tick_us { next } else { at.div_ceil(self.tick_us) };
        let inbox = &mut self.inboxes[local as usize];
        if tick - sender_tick < WHEEL_TICKS {
            let slot = &mut inbox.slots[(tick % WHEEL_TICKS) as usize];
            if slot.capacity() == 0 {
                if let Some(buffer) = inbox.pool.pop() {
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

    fn arrivals(net: &mut NetPart, tick: u64) -> Vec<u64> {
        let mut out = Vec::new();
        net.take(NodeIdx(1), tick, &mut out);
        out.iter().map(|e| e.at.as_us()).collect()
    }

    #[test]
    fn a_message_arrives_at_the_tick_covering_its_time_but_never_in_its_own_tick() {
        let network = Network::new(&[0, 0], 1_000);
        let mut net = network.part(0);
        net.deliver_one(5, NodeIdx(1), &env(7_300));
        net.deliver_one(5, NodeIdx(1), &env(5_200));
        assert_eq!(arrivals(&mut net, 6), vec![5_200], "a sub-tick hop waits for the next tick");
        assert_eq!(arrivals(&mut net, 7), Vec::<u64>::new());
        assert_eq!(arrivals(&mut net, 8), vec![7_300], "exact time kept, delivered at ceil");
    }

    #[test]
    fn a_buffer_a_burst_grew_is_cut_back_to_the_load_of_the_tick_that_returns_it() {
        let network = Network::new(&[0, 0], 1_000);
        let mut net = network.part(0);
        for _ in 0..3_000 {
            net.deliver_one(0, NodeIdx(1), &env(1_000));
        }
        net.deliver_one(0, NodeIdx(1), &env(2_000));
        let mut out = Vec::new();
        net.take(NodeIdx(1), 1, &mut out);
        assert_eq!(out.len(), 3_000, "the burst");
        out.clear();
        net.take(NodeIdx(1), 2, &mut out);
        assert_eq!(out.len(), 1);
        let pooled: Vec<usize> = net.inboxes[1].pool.iter().map(Vec::capacity).collect();
        assert!(pooled.iter().all(|&c| c <= 2 * POOLED_CAPACITY_MIN), "cut back: {pooled:?}");
    }

    #[test]
    fn far_future_messages_wait_in_the_overflow() {
        let network = Network::new(&[0, 0], 1_000);
        let mut net = network.part(0);
        let at = (WHEEL_TICKS + 10) * 1_000;
        net.deliver_one(0, NodeIdx(1), &env(at));
        let mut seen = Vec::new();
        for tick in 1..=2 * WHEEL_TICKS {
            seen.extend(arrivals(&mut net, tick).into_iter().map(|a| (tick, a)));
        }
        assert_eq!(seen, vec![(WHEEL_TICKS + 10, at)], "at its tick, not when the wheel slot comes round early");
    }

    /// Run one tick of a two-part network where node 0 (part 0) sends to node 1 (part 1):
    /// `sends` leave node 0 in `tick`; returns what node 1 takes in `tick`.
    fn tick_of_two_parts(network: &Network, tick: u64, sends: &[u64]) -> Vec<u64> {
        {
            let mut sender = network.part(0);
            network.receive_mail(&mut sender, tick);
            for &at in sends {
                sender.deliver_one(tick, NodeIdx(1), &env(at));
            }
            network.post_mail(&mut sender, tick);
        }
        let mut receiver = network.part(1);
        network.receive_mail(&mut receiver, tick);
        let mut out = Vec::new();
        receiver.take(NodeIdx(1), tick, &mut out);
        network.post_mail(&mut receiver, tick);
        out.iter().map(|e| e.at.as_us()).collect()
    }

    #[test]
    fn a_message_to_another_part_arrives_at_the_same_tick_as_within_a_part() {
        let network = Network::new(&[0, 1], 1_000);
        // Node 0's part runs first: what it posts in tick 5 is not taken in tick 5 even
        // though the receiver's part runs after it (4,950 µs is within tick 5: a hop shorter
        // than the tick still waits for the next).
        assert_eq!(tick_of_two_parts(&network, 5, &[4_950, 5_200, 7_300]), Vec::<u64>::new());
        assert_eq!(tick_of_two_parts(&network, 6, &[]), vec![4_950, 5_200]);
        assert_eq!(tick_of_two_parts(&network, 7, &[]), Vec::<u64>::new());
        assert_eq!(tick_of_two_parts(&network, 8, &[]), vec![7_300]);
        assert!(network.message_ids(|m| Some(m.closed_device().is_none())).is_empty(), "all taken");
    }

    #[test]
    fn awaited_requests_and_replies_are_found_in_inboxes_and_mail_under_the_asking_process() {
        let network = Network::new(&[0, 1, 1], 1_000);
        let route = |from: u16, msg: Msg| Envelope { at: Time(5_500), from: NodeIdx(from), seq: 0, msg };
        let reply = Msg::Routed { req: 7, route: wasim_model::Route { forward: [None, None], inbox: true } };
        let request = Msg::ReadMembers { req: 9, group: wasim_model::GroupId(0), page: 0 };
        {
            // Node 0 (part 0) asks node 1 (part 1): in the mail until the tick ends.
            let mut part = network.part(0);
            part.deliver_one(5, NodeIdx(1), &route(0, request));
            network.post_mail(&mut part, 5);
        }
        // Node 1 answers node 2's request (the same part: straight to its inbox).
        network.part(1).deliver_one(5, NodeIdx(2), &route(1, reply));
        let mut found = network.awaited_requests();
        found.sort_unstable();
        assert_eq!(
            found,
            vec![(NodeIdx(0), 9), (NodeIdx(2), 7)],
            "the asker: the sender of a request, the receiver of a reply"
        );
    }

    #[test]
    fn a_killed_process_loses_its_mail_too() {
        let network = Network::new(&[0, 1], 1_000);
        tick_of_two_parts(&network, 5, &[5_500, 9_000]);
        assert_eq!(network.message_ids(|m| Some(m.closed_device().is_none())).len(), 2, "in the mail");
        network.clear(NodeIdx(1));
        assert!(network.message_ids(|m| Some(m.closed_device().is_none())).is_empty());
        for tick in 6..=10 {
            assert_eq!(tick_of_two_parts(&network, tick, &[]), Vec::<u64>::new(), "tick {tick}");
        }
    }
}
