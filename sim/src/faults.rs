//! The fault layer: the one place in `sim/` that decides what a fault does to the
//! simulated world. It turns a scenario's `[[faults]]` into a plan that the rest of the
//! simulator consults:
//!
//! - process crashes: when the supervisor kills and restarts a process through madsim's
//!   node handles (`kills_and_restarts`), which messages the network drops because their
//!   receiver is dead or died while they were on their way (`drops`), and when the peers
//!   learn of it (`peer_notices` for routers; `device_detects` for the devices connected
//!   to it, `connect_fails` for a connect sent to it while it is down);
//! - delivered ACKs lost in transit (`ack_lost`);
//! - network cuts: which users lose their network and when (`Population::cut`, a pure
//!   function of the scenario that this layer's callers use).
//!
//! Everything here is a pure function of the scenario, the time and a random stream of
//! the caller's, so that a run stays deterministic whatever order processes run in.

use crate::msg::NodeIdx;
use crate::scenario::{Detect, Fault, Scenario};
use crate::topology::{NodeKind, Topology};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use wasim_model::{ServerId, Time};

/// One process crash: killed at the end of tick `down_tick`, restarted before tick
/// `up_tick + 1` (so it handles nothing in between).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crash {
    pub node: NodeIdx,
    /// The chat server, when the process is one.
    pub server: Option<ServerId>,
    pub down: Time,
    pub up: Time,
    pub detect: Detect,
    down_tick: u64,
    up_tick: u64,
}

/// A Redis primary's death and its replica's promotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisOutage {
    pub node: NodeIdx,
    /// A session shard (else a presence shard), and its index.
    pub session: bool,
    pub shard: u32,
    pub down: Time,
    pub promoted: Time,
    /// How far the replica trailed: the session writes of the primary's last `lag` are
    /// lost.
    pub lag: Duration,
}

/// A fault of the network: the hops it touches, when, and what it does to them.
#[derive(Clone, Debug, PartialEq)]
pub struct NetFault {
    pub from: Time,
    pub until: Time,
    pub what: NetEffect,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NetEffect {
    /// Hops between a process of `a` and one of `b` (either way) are held while the link
    /// is clogged and leave when it clears, in the order they were sent (TCP buffers and
    /// retransmits: nothing is lost, all is late).
    Clog { a: (u16, u16), b: (u16, u16) },
    /// Hops of a link class take this much longer.
    Latency { client: bool, add_us: u64 },
    /// Packets of a link class are lost with probability `share`: TCP retransmits a lost
    /// segment after its retransmission timeout, doubling it each time (the hop is late,
    /// and what follows it on its connection waits behind it).
    Loss { client: bool, share: f64 },
}

/// TCP's minimum retransmission timeout (Linux's `TCP_RTO_MIN`), and the most
/// retransmissions of one segment counted (then the timeout is 200 ms × 2^6 = 12.8 s).
const RTO_MIN_US: u64 = 200_000;
const RETRANSMISSIONS_MAX: u32 = 6;
/// The most a hop's retransmissions add on a lossy link: every one of them, the timeout
/// doubling (12.6 s).
pub(crate) const RETRANSMISSION_BACKOFF_MAX_US: u64 = RTO_MIN_US * ((1 << RETRANSMISSIONS_MAX) - 1);
const _: () = assert!(
    2 * RTO_MIN_US * ((1 << RETRANSMISSIONS_MAX) - 1) < wasim_model::SESSION_SETTLE_AFTER_PROMOTION.as_micros() as u64,
    "a session refresh delayed by the whole backoff, twice, still arrives while the shard settles"
);

impl NetFault {
    /// The delay of a hop from `me` to `to` leaving at `depart`, drawn `drawn` µs (`rng`
    /// draws packet losses, inside a loss window only); and the delay without the clogs'
    /// holds: the hop's own latency with the latency spikes and the retransmissions of
    /// lost packets (how slow a link may be, where a clog is a link held shut).
    pub fn delays(
        faults: &[NetFault],
        me: NodeIdx,
        to: NodeIdx,
        client: bool,
        depart: Time,
        drawn: u64,
        rng: &mut impl Rng,
    ) -> (u64, u64) {
        let within = |n: NodeIdx, (first, count): (u16, u16)| n.0.wrapping_sub(first) < count;
        let (mut delay, mut unclogged) = (drawn, drawn);
        for f in faults.iter().filter(|f| depart >= f.from && depart < f.until) {
            match f.what {
                NetEffect::Clog { a, b } => {
                    if (within(me, a) && within(to, b)) || (within(me, b) && within(to, a)) {
                        delay = delay.max(f.until.as_us() - depart.as_us() + drawn);
                    }
                }
                NetEffect::Latency { client: c, add_us } => {
                    if c == client {
                        delay += add_us;
                        unclogged += add_us;
                    }
                }
                NetEffect::Loss { client: c, share } => {
                    let mut rto = RTO_MIN_US;
                    for _ in 0..RETRANSMISSIONS_MAX {
                        if c != client || rng.random::<f64>() >= share {
                            break;
                        }
                        delay += rto;
                        unclogged += rto;
                        rto *= 2;
                    }
                }
            }
        }
        (delay, unclogged)
    }
}

/// What a router or chat server has learnt of chat servers going down and coming back:
/// the notices due since its previous tick. A process started (or restarted) learns at its
/// first tick everything before it: which servers are down now (a restarted router must
/// not forward to a dead one).
#[derive(Default)]
pub(crate) struct PeerNotices {
    previous: Time,
}

impl PeerNotices {
    /// Notices due in (previous call, now]: (server, down), and the session shards whose
    /// replica was promoted.
    pub fn notices(&mut self, plan: &FaultPlan, now: Time) -> (Vec<(ServerId, bool)>, Vec<u32>) {
        let from = std::mem::replace(&mut self.previous, now);
        if plan.crashes.is_empty() && plan.redis.is_empty() {
            return (Vec::new(), Vec::new());
        }
        (plan.peer_notices(from, now).collect(), plan.session_failovers(from, now).collect())
    }
}

/// What the supervisor does to a process before a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEvent {
    Kill(NodeIdx),
    Restart(NodeIdx),
}

/// A fault schedule, ready to apply.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    crashes: Vec<Crash>,
    /// Windows in which delivered ACKs are lost, with the loss probability.
    ack_loss: Vec<(Time, Time, f64)>,
    tick_us: u64,
    /// How long a peer takes to learn of a crash detected by a timeout.
    timeout_detection: Duration,
    /// A device's heartbeat interval and ping timeout, and its connect timeout.
    heartbeat: Duration,
    ping_timeout: Duration,
    connect_timeout: Duration,
    /// One hop inside the datacenter at most: how long a reset takes to reach a server.
    reset_in_datacenter: Duration,
    /// Kafka: the brokers, and how long a dead leader's partitions wait for a new one.
    kafka_brokers: u32,
    kafka_election: Duration,
    /// Whether any broker crashes (else every partition stays with its preferred broker).
    kafka_crashes: bool,
    /// The first broker's process.
    kafka_first: u16,
    /// Routers, the first one's process, whether any crashes (else each partition stays
    /// with its router), and how long the group coordinator waits for a silent one.
    routers: u32,
    router_first: u16,
    router_crashes: bool,
    kafka_session_timeout: Duration,
    net: Arc<Vec<NetFault>>,
    redis: Vec<RedisOutage>,
    /// Clock skews: (process, from, until, skew in µs, ahead if positive).
    skews: Vec<(NodeIdx, Time, Time, i64)>,
    /// Windows in which what reaches a process is lost (a presence shard without its
    /// primary): (process, from, until).
    lost_to: Vec<(NodeIdx, Time, Time)>,
    /// The media faults: (from, until, what).
    media: Vec<(Time, Time, MediaFault)>,
}

/// What a media fault does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MediaFault {
    /// The object store's ingest is this many times slower.
    StoreSlow(f64),
    /// The object store answers 503.
    StoreDown,
    /// This CDN edge is lost.
    EdgeLost(u32),
}

impl FaultPlan {
    /// The plan of a validated scenario.
    pub fn new(s: &Scenario, topo: &Topology) -> FaultPlan {
        let tick_us = s.tick_us;
        let mut plan = FaultPlan {
            tick_us,
            timeout_detection: Duration::from_millis(s.users.ping_timeout_ms),
            heartbeat: Duration::from_millis(s.users.heartbeat_interval_ms),
            ping_timeout: Duration::from_millis(s.users.ping_timeout_ms),
            connect_timeout: Duration::from_millis(s.users.connect_timeout_ms),
            reset_in_datacenter: Duration::from_micros((s.network.in_datacenter_ms.p99() * 1e3) as u64),
            kafka_brokers: s.fleet.kafka_brokers,
            kafka_election: Duration::from_millis(s.fleet.kafka_election_ms),
            routers: s.fleet.routers,
            kafka_session_timeout: Duration::from_millis(s.fleet.kafka_session_timeout_ms),
            ..FaultPlan::default()
        };
        let mut plan_net = Vec::new();
        for f in &s.faults {
            match *f {
                Fault::LoseDeliveredAcks { at_s, for_s, share } => {
                    plan.ack_loss.push((Time::from_secs(at_s), Time::from_secs(at_s + for_s), share))
                }
                Fault::Crash { at_s, for_s, ref target, detect } => {
                    let (kind, i) = crate::limits::crash_target(s, target).expect("a validated crash names a process");
                    let (down, up) = (Time::from_secs(at_s), Time::from_secs(at_s + for_s));
                    plan.crashes.push(Crash {
                        node: topo.node(kind, i),
                        server: (kind == NodeKind::ChatServer).then_some(ServerId(i as u16)),
                        down,
                        up,
                        detect,
                        down_tick: down.as_us() / tick_us,
                        up_tick: up.as_us() / tick_us,
                    });
                }
                Fault::CutNetwork { .. } => {}
                Fault::ObjectStoreSlow { at_s, for_s, factor } => plan.media.push((
                    Time::from_secs(at_s),
                    Time::from_secs(at_s + for_s),
                    MediaFault::StoreSlow(factor),
                )),
                Fault::ObjectStoreDown { at_s, for_s } => {
                    plan.media.push((Time::from_secs(at_s), Time::from_secs(at_s + for_s), MediaFault::StoreDown))
                }
                Fault::CdnEdgeLoss { at_s, for_s, ref target } => {
                    let edge = crate::limits::cdn_target(s, target).expect("a validated fault names an edge");
                    plan.media.push((Time::from_secs(at_s), Time::from_secs(at_s + for_s), MediaFault::EdgeLost(edge)));
                }
                Fault::Clog { at_s, for_s, ref between, ref and } => {
                    let range = |name: &str| crate::limits::process_set(s, name).expect("validated").range(topo);
                    plan_net.push(NetFault {
                        from: Time::from_secs(at_s),
                        until: Time::from_secs(at_s + for_s),
                        what: NetEffect::Clog { a: range(between), b: range(and) },
                    });
                }
                Fault::Latency { at_s, for_s, ref link, add_ms } => plan_net.push(NetFault {
                    from: Time::from_secs(at_s),
                    until: Time::from_secs(at_s + for_s),
                    what: NetEffect::Latency { client: link == "client_server", add_us: (add_ms * 1e3) as u64 },
                }),
                Fault::ClockSkew { at_s, for_s, ref target, skew_ms } => {
                    let (kind, i) = crate::limits::skew_target(s, target).expect("a validated skew names a process");
                    let (from, until) = (Time::from_secs(at_s), Time::from_secs(at_s + for_s));
                    plan.skews.push((topo.node(kind, i), from, until, skew_ms * 1_000));
                }
                Fault::PacketLoss { at_s, for_s, ref link, share } => plan_net.push(NetFault {
                    from: Time::from_secs(at_s),
                    until: Time::from_secs(at_s + for_s),
                    what: NetEffect::Loss { client: link == "client_server", share },
                }),
                Fault::RedisDown { at_s, failover_s, ref target, replication_lag_ms } => {
                    let (kind, shard) =
                        crate::limits::redis_target(s, target).expect("a validated fault names a shard");
                    let node = topo.node(kind, shard);
                    let (down, promoted) = (Time::from_secs(at_s), Time::from_secs(at_s + failover_s));
                    let session = kind == NodeKind::Redis;
                    if session {
                        // Its clients retry until the new primary answers: their commands
                        // (and what it was answering) arrive once it is promoted.
                        let everyone = (0, u16::MAX);
                        let what = NetEffect::Clog { a: everyone, b: (node.0, 1) };
                        plan_net.push(NetFault { from: down, until: promoted, what });
                    } else {
                        plan.lost_to.push((node, down, promoted));
                    }
                    let lag = Duration::from_millis(replication_lag_ms);
                    plan.redis.push(RedisOutage { node, session, shard, down, promoted, lag });
                }
            }
        }
        plan.crashes.sort_by_key(|c| (c.down, c.node));
        plan.kafka_crashes = plan.crashes.iter().any(|c| topo.locate(c.node).0 == NodeKind::Kafka);
        plan.kafka_first = topo.range(NodeKind::Kafka).0;
        plan.router_crashes = plan.crashes.iter().any(|c| topo.locate(c.node).0 == NodeKind::Router);
        plan.router_first = topo.range(NodeKind::Router).0;
        plan.net = Arc::new(plan_net);
        plan
    }

    /// The media faults active at `t`.
    fn media_at(&self, t: Time) -> impl Iterator<Item = MediaFault> + '_ {
        self.media.iter().filter(move |&&(from, until, _)| from <= t && t < until).map(|&(_, _, f)| f)
    }

    /// The windows in which the object store's ingest is slower, by their factors: (from,
    /// until, factor), in time order, overlapping windows' factors multiplied where they
    /// overlap.
    pub fn store_slow_windows(&self) -> Vec<(Time, Time, f64)> {
        let mut edges: Vec<Time> = Vec::new();
        for &(from, until, f) in &self.media {
            if let MediaFault::StoreSlow(_) = f {
                edges.extend([from, until]);
            }
        }
        edges.sort_unstable();
        edges.dedup();
        edges
            .windows(2)
            .filter_map(|w| {
                let factor: f64 = self
                    .media
                    .iter()
                    .filter(|&&(from, until, _)| from <= w[0] && w[1] <= until)
                    .map(|&(_, _, f)| if let MediaFault::StoreSlow(x) = f { x } else { 1.0 })
                    .product();
                (factor > 1.0).then_some((w[0], w[1], factor))
            })
            .collect()
    }

    /// Whether the object store answers 503 at `t`.
    pub fn store_down(&self, t: Time) -> bool {
        self.media_at(t).any(|f| f == MediaFault::StoreDown)
    }

    /// Whether CDN edge `edge` is lost at `t`.
    pub fn edge_lost(&self, edge: u32, t: Time) -> bool {
        self.media_at(t).any(|f| f == MediaFault::EdgeLost(edge))
    }

    /// The network faults, for the latency draws.
    pub fn net_faults(&self) -> Arc<Vec<NetFault>> {
        self.net.clone()
    }

    /// Whether partition leadership ever moves (a broker crashes).
    pub fn moves_kafka_leaders(&self) -> bool {
        self.kafka_crashes
    }

    /// The broker leading `partition` at `t`: its preferred broker (`partition % brokers`)
    /// while that is up, and while the controller has not yet noticed it down (its
    /// partitions are unavailable meanwhile); after the election, the next broker up.
    pub fn kafka_leader(&self, partition: u32, t: Time) -> u32 {
        let preferred = partition % self.kafka_brokers.max(1);
        if !self.kafka_crashes {
            return preferred;
        }
        self.taken_over(self.kafka_first, self.kafka_brokers, preferred, t, self.kafka_election)
    }

    /// Which of a group of `count` processes (from `first`) stands in for member `own` at
    /// `t`: `own` while it is up, and while its peers wait `wait` before giving up on it
    /// (what it served is unavailable meanwhile); then the next member up; `own` again once
    /// it is back.
    fn taken_over(&self, first: u16, count: u32, own: u32, t: Time, wait: Duration) -> u32 {
        let node = |m: u32| NodeIdx(first + m as u16);
        let Some(crash) = self.crash_covering(node(own), t) else {
            return own;
        };
        if t < crash.down + wait {
            return own;
        }
        (1..count).map(|k| (own + k) % count).find(|&m| !self.is_down(node(m), t)).unwrap_or(own)
    }

    /// Whether a partition ever changes consumer (a router crashes).
    pub fn moves_consumers(&self) -> bool {
        self.router_crashes
    }

    /// The router consuming `partition` at `t`, by index: its own (`partition % routers`)
    /// while it is up, and while the group coordinator has not yet given up on it (its
    /// partitions stall meanwhile); after the session timeout, the next router up; back to
    /// its own as soon as it restarts and rejoins the group.
    pub fn consumer(&self, partition: u32, t: Time) -> u32 {
        let own = partition % self.routers.max(1);
        if !self.router_crashes {
            return own;
        }
        self.taken_over(self.router_first, self.routers, own, t, self.kafka_session_timeout)
    }

    /// How many times `node` was restarted by `t`: a consumer restarted rejoins its group
    /// and resumes from its commit, like a new one.
    pub fn restarts_by(&self, node: NodeIdx, t: Time) -> usize {
        // Restarted before tick `up_tick + 1`: what is sent to it from then on (by a
        // process handling a time of that tick) reaches it.
        let tick = t.as_us().div_ceil(self.tick_us);
        self.crashes.iter().filter(|c| c.node == node && tick > c.up_tick).count()
    }

    /// The crashes, in time order.
    pub fn crashes(&self) -> &[Crash] {
        &self.crashes
    }

    /// What the supervisor does before tick `tick` runs: kill a process whose crash
    /// came in the previous tick, restart one whose downtime is over.
    pub fn process_events(&self, tick: u64) -> impl Iterator<Item = ProcessEvent> + '_ {
        let kills = self.crashes.iter().filter(move |c| c.down_tick + 1 == tick).map(|c| ProcessEvent::Kill(c.node));
        let restarts =
            self.crashes.iter().filter(move |c| c.up_tick + 1 == tick).map(|c| ProcessEvent::Restart(c.node));
        kills.chain(restarts)
    }

    /// Whether the network may drop messages at all (a process crashes or a presence shard
    /// loses its primary): a sender without such faults skips `drops`.
    #[inline]
    pub fn may_drop(&self) -> bool {
        !(self.crashes.is_empty() && self.lost_to.is_empty())
    }

    /// Whether the network drops a message to `to` sent in tick `sender_tick` and due at
    /// `arrive`: its receiver is dead when it arrives, or died while it was on its way (the
    /// connection it travelled on is gone), or was dead when it was sent (the sender was
    /// told so: reset, or left to time out; a connect then must not reach the process that
    /// restarts meanwhile).
    /// A message to a presence shard without its primary is lost too.
    #[inline]
    pub fn drops(&self, to: NodeIdx, sender_tick: u64, arrive: Time) -> bool {
        if !self.may_drop() {
            return false;
        }
        let a = arrive.as_us().div_ceil(self.tick_us).max(sender_tick + 1);
        self.crashes.iter().any(|c| c.node == to && a > c.down_tick && sender_tick <= c.up_tick)
            || self.lost_to.iter().any(|&(n, from, until)| n == to && arrive >= from && arrive < until)
    }

    /// What the clock of `node` reads at `t` (its skew, if a fault skews it then).
    #[inline]
    pub fn clock(&self, node: NodeIdx, t: Time) -> Time {
        if self.skews.is_empty() {
            return t;
        }
        let skew: i64 =
            self.skews.iter().filter(|&&(n, from, until, _)| n == node && t >= from && t < until).map(|s| s.3).sum();
        Time(t.as_us().saturating_add_signed(skew))
    }

    /// The Redis outages, in scenario order.
    pub fn redis_outages(&self) -> &[RedisOutage] {
        &self.redis
    }

    /// Session shards whose replica was promoted, as the chat servers learn of it (one
    /// datacenter hop later: the cluster's topology change) in `(from, to]`.
    pub fn session_failovers(&self, from: Time, to: Time) -> impl Iterator<Item = u32> + '_ {
        self.redis
            .iter()
            .filter(move |o| {
                let learnt = o.promoted + self.reset_in_datacenter;
                o.session && learnt > from && learnt <= to
            })
            .map(|o| o.shard)
    }

    /// The crash of `node` whose downtime covers `t`, if any.
    fn crash_covering(&self, node: NodeIdx, t: Time) -> Option<&Crash> {
        let tick = t.as_us() / self.tick_us;
        self.crashes.iter().find(|c| c.node == node && tick > c.down_tick && tick <= c.up_tick)
    }

    /// Whether the process `node` is down at `t`.
    pub fn is_down(&self, node: NodeIdx, t: Time) -> bool {
        self.crash_covering(node, t).is_some()
    }

    /// When `quorum` of `nodes` were up again after the last time up to `until` that fewer
    /// were (`until` itself if fewer are up then); `None` if they never were short.
    pub fn quorum_back(&self, nodes: &[NodeIdx], quorum: usize, until: Time) -> Option<Time> {
        let short = |t: Time| nodes.iter().filter(|&&n| !self.is_down(n, t)).count() < quorum;
        if short(until) {
            return Some(until);
        }
        // The count rises only as a crash of one of them ends, in the tick after its last.
        self.crashes
            .iter()
            .filter(|c| nodes.contains(&c.node))
            .map(|c| (Time(c.up_tick * self.tick_us), Time((c.up_tick + 1) * self.tick_us)))
            .filter(|&(last_down, back)| back <= until && short(last_down))
            .map(|(_, back)| back)
            .max()
    }

    /// Chat servers going down or coming back, as routers and servers learn of it, in
    /// `(from, to]`: (server, down).
    pub fn peer_notices(&self, from: Time, to: Time) -> impl Iterator<Item = (ServerId, bool)> + '_ {
        self.crashes.iter().filter(|c| c.server.is_some()).flat_map(move |c| {
            let server = c.server.expect("filtered");
            let delay = match c.detect {
                Detect::Reset => self.reset_in_datacenter,
                Detect::Timeout => self.timeout_detection,
            };
            // A process restarted before its peers noticed resets their old connections
            // when they next use them: they learn then.
            let noticed = (c.down + delay).min(c.up);
            let down = (noticed > from && noticed <= to).then_some((server, true));
            // A restarted server is back when it is up: it accepts connections again.
            let up = (c.up > from && c.up <= to).then_some((server, false));
            down.into_iter().chain(up)
        })
    }

    /// The chat server crashes that happen in `(from, to]`.
    pub fn server_crashes_in(&self, from: Time, to: Time) -> impl Iterator<Item = &Crash> + '_ {
        self.crashes.iter().filter(move |c| c.server.is_some() && c.down > from && c.down <= to)
    }

    /// When a device connected to `crash`'s server notices the connection is gone: after
    /// the reset crosses its link (`hop` is a one-way latency drawn for it), or, with the
    /// host gone, when a heartbeat goes unanswered for the ping timeout (its heartbeats
    /// come at a phase of its own, drawn from `rng`); a heartbeat after the restart is
    /// answered by a reset from the new process.
    pub fn device_detects(&self, crash: &Crash, hop: Duration, rng: &mut impl Rng) -> Time {
        match crash.detect {
            Detect::Reset => crash.down + hop,
            Detect::Timeout => {
                let beat_us = self.heartbeat.as_micros() as u64;
                let first_beat = crash.down + Duration::from_micros(rng.random_range(0..beat_us.max(1)));
                let gave_up = first_beat + self.ping_timeout;
                if gave_up <= crash.up {
                    return gave_up;
                }
                // The first beat after the restart meets a process that knows no such
                // connection: reset.
                let after_us = crash.up.as_us().saturating_sub(first_beat.as_us()).div_ceil(beat_us.max(1)) * beat_us;
                gave_up.min(first_beat + Duration::from_micros(after_us) + 2 * hop)
            }
        }
    }

    /// If a connect sent to `server`'s process `node` at `t` meets a dead process, when the
    /// device learns it failed: a round trip for the reset of a live host, the connect
    /// timeout for a lost one.
    ///
    /// `round_trip` is drawn only for a connect that fails (draws from a caller's stream are
    /// then the same whatever else the plan holds).
    pub fn connect_fails(&self, node: NodeIdx, t: Time, round_trip: impl FnOnce() -> Duration) -> Option<Time> {
        if self.crashes.is_empty() {
            return None;
        }
        // The frame leaves with the tick that handles `t` (its end): from the crash's tick
        // on, the network drops it (see `drops`).
        let sent = t.as_us().div_ceil(self.tick_us);
        let c = self.crashes.iter().find(|c| c.node == node && sent >= c.down_tick && sent <= c.up_tick)?;
        Some(match c.detect {
            Detect::Reset => t + round_trip(),
            Detect::Timeout => t + self.connect_timeout,
        })
    }

    /// Whether a delivered ACK sent at `t` is lost in transit (draws from `rng` only inside
    /// a loss window).
    pub fn ack_lost(&self, t: Time, rng: &mut impl Rng) -> bool {
        let loss = self.ack_loss.iter().find(|&&(from, until, _)| t >= from && t < until).map(|w| w.2);
        loss.is_some_and(|p| rng.random::<f64>() < p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &str) -> (FaultPlan, Topology) {
        let text = format!(
            "warmup_s = 5\nduration_s = 30\n[fleet]\nchat_servers = 4\n[[faults]]\nkind = \"crash\"\nat_s = 10\nfor_s = 5\ntarget = \"chat_server-2\"\n{extra}"
        );
        let s = Scenario::parse(&text, std::path::Path::new("t.toml"), "t").unwrap();
        let topo = Topology::new(&s);
        (FaultPlan::new(&s, &topo), topo)
    }

    #[test]
    fn a_quorum_is_back_when_enough_crashes_have_ended() {
        // Chat servers 1 (12 to 20 s) and 2 (10 to 15 s) of 1, 2, 3: two of three up again
        // at 15 s; short again from 16 s if 3 goes down then too.
        let crash = |n: u32, at: u32, lasts: u32| {
            format!("[[faults]]\nkind = \"crash\"\nat_s = {at}\nfor_s = {lasts}\ntarget = \"chat_server-{n}\"\n")
        };
        let (p, topo) = plan(&crash(1, 12, 8));
        let nodes: Vec<NodeIdx> = (1..4).map(|i| topo.node(NodeKind::ChatServer, i)).collect();
        let s = Time::from_secs;
        assert_eq!(p.quorum_back(&nodes, 2, s(9)), None, "never short before the crashes");
        assert_eq!(p.quorum_back(&nodes, 2, s(13)), Some(s(13)), "short now");
        let back = p.quorum_back(&nodes, 2, s(30)).expect("short from 12 to 15 s");
        assert!(back > s(15) - Duration::from_millis(2) && back <= s(15) + Duration::from_millis(2), "{back:?}");
        let (p, topo) = plan(&(crash(1, 12, 8) + &crash(3, 16, 2)));
        let nodes: Vec<NodeIdx> = (1..4).map(|i| topo.node(NodeKind::ChatServer, i)).collect();
        let back = p.quorum_back(&nodes, 2, s(30)).expect("short again from 16 to 18 s");
        assert!(back > s(18) - Duration::from_millis(2) && back <= s(18) + Duration::from_millis(2), "{back:?}");
    }

    #[test]
    fn a_crashed_process_gets_nothing_while_down_nor_what_was_on_its_way() {
        let (p, topo) = plan("");
        let dead = topo.node(NodeKind::ChatServer, 2);
        let other = topo.node(NodeKind::ChatServer, 1);
        let ms = |m: u64| Time::from_ms(m);
        assert!(!p.drops(dead, 9_000, ms(9_500)), "before the crash");
        assert!(p.drops(dead, 9_900, ms(10_001)), "sent before, arriving after the crash");
        assert!(p.drops(dead, 12_000, ms(12_001)), "while down");
        assert!(p.drops(dead, 9_990, ms(15_500)), "sent before the crash, arriving after the restart");
        assert!(p.drops(dead, 14_990, ms(15_100)), "sent while it was down, arriving after the restart");
        assert!(!p.drops(dead, 15_001, ms(15_002)), "sent and arriving after the restart");
        assert!(!p.drops(other, 12_000, ms(12_001)), "another process");
        let events: Vec<ProcessEvent> = (0..20_000).flat_map(|t| p.process_events(t)).collect();
        assert_eq!(events, vec![ProcessEvent::Kill(dead), ProcessEvent::Restart(dead)]);
        assert_eq!(p.process_events(10_001).collect::<Vec<_>>(), vec![ProcessEvent::Kill(dead)]);
        assert_eq!(p.process_events(15_001).collect::<Vec<_>>(), vec![ProcessEvent::Restart(dead)]);
    }

    #[test]
    fn peers_learn_at_once_of_a_reset_and_after_the_timeout_of_a_lost_host() {
        let (p, _) = plan("");
        let notices: Vec<(ServerId, bool)> = p.peer_notices(Time::from_secs(10), Time::from_ms(10_002)).collect();
        assert_eq!(notices, vec![(ServerId(2), true)]);
        let (p, _) = plan("detect = \"timeout\"");
        assert_eq!(p.peer_notices(Time::from_secs(10), Time::from_secs(11)).count(), 0);
        let notices: Vec<(ServerId, bool)> = p.peer_notices(Time::from_secs(11), Time::from_secs(20)).collect();
        assert_eq!(
            notices,
            vec![(ServerId(2), true), (ServerId(2), false)],
            "restarted at 15 s, before the 10 s timeout"
        );
    }

    #[test]
    fn a_connect_to_a_dead_process_fails_after_a_round_trip_or_the_timeout() {
        let (p, topo) = plan("");
        let dead = topo.node(NodeKind::ChatServer, 2);
        let rtt = Duration::from_millis(60);
        assert_eq!(p.connect_fails(dead, Time::from_secs(9), || rtt), None);
        assert_eq!(p.connect_fails(dead, Time::from_secs(12), || rtt), Some(Time::from_ms(12_060)));
        let (p, _) = plan("detect = \"timeout\"");
        assert_eq!(p.connect_fails(dead, Time::from_secs(12), || rtt), Some(Time::from_secs(22)));
    }

    #[test]
    fn each_crash_of_a_process_is_judged_by_its_own_window() {
        let two =
            "[fleet]\nkafka_brokers = 2\n[[faults]]\nkind = \"crash\"\nat_s = 10\nfor_s = 5\ntarget = \"kafka-0\"\n\
                   [[faults]]\nkind = \"crash\"\nat_s = 30\nfor_s = 10\ntarget = \"kafka-0\"\n";
        let s =
            Scenario::parse(&format!("warmup_s = 5\nduration_s = 40\n{two}"), std::path::Path::new("t"), "t").unwrap();
        let p = FaultPlan::new(&s, &Topology::new(&s));
        assert_eq!(p.kafka_leader(0, Time::from_secs(31)), 0, "the second crash's election has not run yet");
        assert_eq!(p.kafka_leader(0, Time::from_secs(37)), 1, "elected 6 s after the second crash");
        assert_eq!(p.kafka_leader(0, Time::from_secs(20)), 0, "back between the crashes");
    }

    #[test]
    fn a_connect_sent_in_the_crash_tick_fails() {
        let (p, topo) = plan("");
        let dead = topo.node(NodeKind::ChatServer, 2);
        let rtt = Duration::from_millis(60);
        // Handled in the crash's tick (its frames leave with that tick): dropped, so failed.
        assert_eq!(p.connect_fails(dead, Time(9_999_500), || rtt), Some(Time(10_059_500)));
        assert_eq!(p.connect_fails(dead, Time(9_998_500), || rtt), None, "a tick earlier: it was alive");
    }

    #[test]
    fn a_session_shard_holds_its_traffic_and_a_presence_shard_loses_it() {
        let text = "warmup_s = 5\nduration_s = 30\n[fleet]\nredis_session_shards = 2\nredis_presence_shards = 2\n\
                    [[faults]]\nkind = \"redis_down\"\nat_s = 10\nfailover_s = 4\ntarget = \"redis_session-1\"\n\
                    [[faults]]\nkind = \"redis_down\"\nat_s = 20\nfailover_s = 3\ntarget = \"redis_presence-0\"\n";
        let s = Scenario::parse(text, std::path::Path::new("t"), "t").unwrap();
        let topo = Topology::new(&s);
        let p = FaultPlan::new(&s, &topo);
        let (session, other) = (topo.node(NodeKind::Redis, 1), topo.node(NodeKind::Redis, 0));
        let presence = topo.node(NodeKind::Presence, 0);
        let router = topo.node(NodeKind::Router, 0);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut held =
            |to: NodeIdx, at: Time| NetFault::delays(&p.net_faults(), router, to, false, at, 100, &mut rng).0;
        assert_eq!(held(session, Time::from_secs(11)), 3_000_100, "held until the promotion");
        assert_eq!(held(session, Time::from_secs(14)), 100, "after it");
        assert_eq!(held(other, Time::from_secs(11)), 100, "the other shard");
        assert!(!p.drops(session, 11_000, Time::from_secs(11)), "held, not lost");
        assert!(p.drops(presence, 21_000, Time::from_secs(21)), "a presence shard loses what it gets");
        assert!(!p.drops(presence, 23_000, Time::from_secs(23)), "promoted");
        assert!(!p.is_down(presence, Time::from_secs(21)), "no process is killed");
        let learnt: Vec<u32> = p.session_failovers(Time::from_secs(13), Time::from_secs(15)).collect();
        assert_eq!(learnt, vec![1], "chat servers learn of the promotion a hop after it");
    }

    #[test]
    fn a_dead_routers_partitions_move_after_the_session_timeout_and_come_back() {
        let text = "warmup_s = 5\nduration_s = 30\n[fleet]\nrouters = 3\nkafka_partitions = 6\nkafka_session_timeout_ms = 4000\n\
                    [[faults]]\nkind = \"crash\"\nat_s = 10\nfor_s = 8\ntarget = \"router-1\"\n";
        let s = Scenario::parse(text, std::path::Path::new("t"), "t").unwrap();
        let topo = Topology::new(&s);
        let p = FaultPlan::new(&s, &topo);
        assert!(p.moves_consumers());
        let at = |ms: u64| (0..6).map(|q| p.consumer(q, Time::from_ms(ms))).collect::<Vec<_>>();
        assert_eq!(at(9_000), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(at(13_000), vec![0, 1, 2, 0, 1, 2], "the coordinator has not given up yet");
        assert_eq!(at(14_001), vec![0, 2, 2, 0, 2, 2], "to the next router up");
        assert_eq!(at(18_001), vec![0, 1, 2, 0, 1, 2], "restarted and rejoined");
        let router = topo.node(NodeKind::Router, 1);
        assert_eq!(p.restarts_by(router, Time::from_secs(18)), 0);
        assert_eq!(p.restarts_by(router, Time::from_ms(18_001)), 1);
    }

    #[test]
    fn a_skewed_clock_reads_off_only_in_its_window() {
        let text = "warmup_s = 5\nduration_s = 30\n[fleet]\nchat_servers = 3\n\
                    [[faults]]\nkind = \"clock_skew\"\nat_s = 10\nfor_s = 5\ntarget = \"chat_server-1\"\nskew_ms = -250\n";
        let s = Scenario::parse(text, std::path::Path::new("t"), "t").unwrap();
        let topo = Topology::new(&s);
        let p = FaultPlan::new(&s, &topo);
        let (skewed, other) = (topo.node(NodeKind::ChatServer, 1), topo.node(NodeKind::ChatServer, 2));
        assert_eq!(p.clock(skewed, Time::from_secs(9)), Time::from_secs(9));
        assert_eq!(p.clock(skewed, Time::from_secs(12)), Time::from_ms(11_750));
        assert_eq!(p.clock(other, Time::from_secs(12)), Time::from_secs(12));
        assert_eq!(p.clock(skewed, Time::from_secs(15)), Time::from_secs(15), "back");
    }
}
