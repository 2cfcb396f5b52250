//! The tick loop of every simulated process (`Runner`, run by the supervisor), and the
//! context its handlers use.

use crate::check::Logs;
use crate::dist::Sampler;
use crate::metrics::{Backlog, Counters, NodeReport, SecondCounters, TraceEvent};
use crate::msg::{Envelope, Msg, NodeIdx};
use crate::net::{NetPart, Network};
use crate::outbox::{Latency, Outbox};
use crate::population::Population;
use crate::scenario::Scenario;
use crate::topology::{Link, NodeKind, Topology};
use crate::visits::{OpCounts, OpKind, OP_KINDS};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wasim_model::{ChatMessage, ConversationId, DeviceId, DeviceKey, Time, UserId};

/// The logical clock every process follows. The supervisor advances it one tick at a
/// time and runs every live process's tick; madsim's clock follows it (one madsim sleep per
/// tick), so all of tick `k` happens before any of tick `k + 1`.
#[derive(Default)]
pub(crate) struct TickClock {
    tick: AtomicU64,
}

impl TickClock {
    /// The current tick.
    pub fn now(&self) -> u64 {
        self.tick.load(Ordering::Acquire)
    }

    /// Move to the next tick; returns it.
    pub fn advance(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// What all processes share: the network, the layout and the run's settings.
pub(crate) struct Shared {
    pub net: Network,
    /// The fault schedule (the fault layer).
    pub faults: crate::faults::FaultPlan,
    /// The Cassandra nodes' disks, which outlive a crashed process: the `messages` rows
    /// by primary token range (`ranges[n]`: the partitions node `n` owns the token of),
    /// each row with the replicas holding it, and each node's own data.
    pub ranges: Vec<Mutex<crate::infra::RangeRows>>,
    pub disks: Vec<Mutex<crate::infra::CassandraNode>>,
    /// The client shards' latency histograms of seconds long past, merged as the run goes
    /// (see `ClientShard::on_tick`).
    pub past_seconds: Mutex<crate::metrics::SecondLatencies>,
    /// The `messages` topic's partition logs, replicated: they outlive a broker.
    pub kafka_logs: Vec<Mutex<crate::infra::PartitionLog>>,
    /// What the routers remember of each partition's routed records: a changelog-backed
    /// state store that outlives a router and moves with its partition.
    pub routed: Vec<Mutex<wasim_model::RoutedMemory>>,
    /// For the checker: repeats the routers dropped, with the id their client message
    /// was routed under (kept outside the routers: it outlives a crash).
    pub aliases: Mutex<Vec<(wasim_model::MessageId, wasim_model::MessageId)>>,
    /// Rows each Cassandra node repaired when it rejoined (for its report).
    pub repaired: Vec<AtomicU64>,
    pub topo: Arc<Topology>,
    pub scenario: Scenario,
    pub seed: u64,
    pub clock: TickClock,
    pub tick_us: u64,
    pub reports: Mutex<Vec<Option<NodeReport>>>,
    /// Each live process, built by its madsim node's task and run by the supervisor tick
    /// by tick (`None`: not started yet, or killed).
    pub procs: Vec<Mutex<Option<Box<dyn Runner>>>>,
    pub population: Population,
    /// The groups with traffic and their members.
    pub groups: crate::groups::Groups,
    /// The slowest hop any process made (its latency with spikes and retransmissions, not
    /// a clog's hold), client-server then in-datacenter: the checkers allow for it (kept
    /// here, it outlives a crashed sender).
    pub slowest_hop_us: [AtomicU64; 2],
    /// Connections each chat server held at the start of each simulated second:
    /// `chat_connections[server * seconds + second]`, seconds = the run's plus one (kept
    /// here, so a crashed server's series survives it; a dead server's seconds stay 0).
    pub chat_connections: Vec<std::sync::atomic::AtomicU32>,
    /// Service time booked by each process's queue in each simulated second (the work that
    /// arrived): `work_us[node * seconds + second]`, seconds as for `chat_connections`
    /// (kept here, so a crashed process's seconds survive it).
    pub work_us: Vec<AtomicU64>,
    /// Each process's kind, by network index (what a flow between tiers is counted by).
    pub kinds: Vec<crate::topology::NodeKind>,
    /// The user whose messages go to trace.csv, with the tick it was picked in, packed as
    /// `tick << 32 | user` (`u64::MAX`: none yet). Without one asked for or cut by a
    /// fault, a device displaced by the first chat server crash is picked, so that the crash
    /// report can tell its story: the lowest user offered in the first tick any client
    /// shard saw the crash (the shards run side by side: the least, not the first to come).
    pub traced: AtomicU64,
    /// Whether the traced user is to be picked at the first chat server crash.
    pub trace_a_crash: bool,
    /// Simulated ms reached, for a progress display outside the simulation.
    pub progress_ms: Arc<AtomicU64>,
    /// A calibration run: a probe replaces the client shard.
    pub probe: Option<crate::calibrate::ProbePlan>,
}

impl Shared {
    /// The broker leading `partition` at `t` (see `FaultPlan::kafka_leader`).
    pub fn kafka_leader(&self, partition: u32, t: wasim_model::Time) -> u32 {
        self.faults.kafka_leader(partition, t)
    }

    /// The process of the broker leading `partition` at `t`.
    /// The user whose messages are traced in `tick`, if one was chosen before it.
    pub fn traced_user(&self, tick: u64) -> Option<UserId> {
        let packed = self.traced.load(Ordering::Relaxed);
        (packed != u64::MAX && packed >> 32 < tick).then_some(UserId(packed as u32))
    }

    /// Offer `user`, displaced in `tick`, for tracing from the next tick on: the earliest
    /// tick's lowest user is kept, whichever shard offers first.
    pub fn offer_trace(&self, tick: u64, user: UserId) {
        self.traced.fetch_min((tick << 32) | u64::from(user.0), Ordering::Relaxed);
    }

    pub fn broker(&self, partition: u32, t: wasim_model::Time) -> crate::msg::NodeIdx {
        self.topo.node(crate::topology::NodeKind::Kafka, self.kafka_leader(partition, t))
    }

    /// The router consuming `partition` at `t` (the consumer group's assignment).
    /// A partition of the group-messages topic goes to its fan-out instance (fan-outs do
    /// not crash: no fault targets them).
    pub fn consumer(&self, partition: u32, t: wasim_model::Time) -> crate::msg::NodeIdx {
        if partition >= self.topo.partitions {
            return self.topo.fanout_of(partition);
        }
        self.topo.node(crate::topology::NodeKind::Router, self.faults.consumer(partition, t))
    }

    /// The start of the measuring window (end of warm-up).
    pub fn measure_from(&self) -> Time {
        Time::from_secs(self.scenario.warmup_s)
    }

    /// The end of the measuring window, which is also when devices stop sending.
    pub fn measure_until(&self) -> Time {
        Time::from_secs(self.scenario.warmup_s + self.scenario.duration_s)
    }
}

/// A process's handlers. The loop calls `on_message` for each arrival of a tick in exact
/// time order, then `on_tick` once.
pub(crate) trait Process {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx);
    /// A hint: `env` is handled a few arrivals from now. A process whose state is a large
    /// table loads the record `env` will touch, so that the miss overlaps the work in
    /// between. It must change nothing.
    #[inline]
    fn prefetch(&self, _env: &Envelope) {}
    fn on_tick(&mut self, now: Time, ctx: &mut Ctx);
    /// The process's queue, if it serves requests (for the work it books each second).
    fn queue(&self) -> Option<&crate::infra::Fifo> {
        None
    }
    /// Fill in the process-specific parts of the final report.
    fn finish(&mut self, report: &mut NodeReport);
}

/// What a handler may use: the process's RNG stream, its outbox and its counters.
pub(crate) struct Ctx {
    pub me: NodeIdx,
    seed: u64,
    pub rng: ChaCha8Rng,
    pub counters: Counters,
    per_second: Vec<SecondCounters>,
    pub logs: Logs,
    pub trace: Vec<TraceEvent>,
    pub traced: Option<UserId>,
    /// When the tick being handled began. An arrival from a hop shorter than the tick
    /// reaches its process a tick after it was sent, stamped with its own (earlier) time,
    /// so what a process sends in answer can carry a stamp before this: causally, nothing
    /// it handles in this tick happened before it.
    pub tick_start: Time,
    outbox: Outbox,
    net: NetDraw,
}

/// The latency draws of a process's sends: a stream of its own, apart from the handlers'
/// draws, so that the network's numbers do not shift when a handler draws once more.
struct NetDraw {
    rng: ChaCha8Rng,
    /// Client-server latency, then in-datacenter.
    latency: [Sampler; 2],
    /// Every hop of this process is a client hop (it is a client shard).
    client: bool,
    /// The first index and count of client shards: a hop to one is a client hop.
    clients: (u16, u16),
    /// This process, and the network faults of the run (clogged links, latency spikes),
    /// if any.
    me: NodeIdx,
    faults: Option<Arc<Vec<crate::faults::NetFault>>>,
    /// The slowest hop so far, client-server then in-datacenter: its latency with spikes
    /// and retransmissions (not a clog's hold).
    slowest_us: [u64; 2],
}

impl Latency for NetDraw {
    #[inline(always)]
    fn sample_us(&mut self, to: NodeIdx, depart: Time) -> u64 {
        let client = self.client || to.0.wrapping_sub(self.clients.0) < self.clients.1;
        let class = usize::from(!client);
        let drawn = self.latency[class].sample_us(&mut self.rng);
        let (delay, slow) = match &self.faults {
            None => (drawn, drawn),
            Some(faults) => crate::faults::NetFault::delays(faults, self.me, to, client, depart, drawn, &mut self.rng),
        };
        self.slowest_us[class] = self.slowest_us[class].max(slow);
        delay
    }
}

/// What a run of sends keeps its order on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OrderKey {
    /// A conversation's messages, through every tier they cross: id order on the devices.
    Conversation(ConversationId),
    /// A device's WebSocket: one connection, written by one thread.
    Socket(DeviceId),
    /// A user's session and inbox commands (`session:{user}`, `inbox:{user}`): a reconnect
    /// hands back unacknowledged pushes before it sets the session and reads the inbox.
    Session(UserId),
    /// A user's presence commands and the notifications about the user.
    Presence(UserId),
}

impl OrderKey {
    /// The key as one integer: the kind in the top two bits. Conversation ids pack two
    /// user ids below 2^30 (`USERS_MAX` is a billion), so their top two bits are free.
    fn packed(self) -> u64 {
        const _: () = assert!(crate::limits::USERS_MAX < 1 << 30, "conversation keys leave the top bits free");
        match self {
            OrderKey::Conversation(c) => c.0,
            OrderKey::Socket(d) => (1 << 62) | u64::from(DeviceKey::of(d).0),
            OrderKey::Session(u) => (2 << 62) | u64::from(u.0),
            OrderKey::Presence(u) => (3 << 62) | u64::from(u.0),
        }
    }
}

/// What a process draws random numbers for: each purpose has a ChaCha stream of its own,
/// so that a draw more for one purpose (a process handling its events in a different
/// order, a longer catch-up) does not shift the numbers of another: the workload a run
/// draws is the same whatever the tick.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stream {
    /// Handlers: service times and the model's choices (backoff jitter).
    Handlers = 0,
    /// Network latencies.
    Network = 1,
    /// The send process: when, from whom, to whom.
    Sends = 2,
    /// App closes: when, whose, for how long.
    Closes = 3,
    /// How long users take to read what they were shown.
    Reads = 4,
    /// Faults drawn per event (a lost ACK).
    Faults = 5,
    /// Set-up of a process's state (heartbeat phases).
    Setup = 6,
    /// When registered users who start offline come online.
    Offline = 7,
    /// Group sends: when, which group, from which member.
    GroupSends = 8,
    /// Service times of the writes that make no reply (message rows' status, group
    /// receipt rows): their draws leave the replies' service times as they were.
    SilentWrites = 9,
    /// Media: which sends carry media, their kinds, sizes and links.
    Media = 10,
    /// The media model's choices (backoff jitter): apart from the workload's, so that a
    /// fault (retries) does not change which sends carry media.
    MediaRetries = 11,
}

/// Streams reserved per process (more than `Stream` uses, so purposes can be added without
/// changing every other stream).
const STREAMS_PER_PROCESS: u64 = 16;

/// The ChaCha stream of `purpose` in process `me`, derived from the run seed and the
/// process index, so the scheduler's order cannot change which numbers a process draws.
pub(crate) fn stream_rng(seed: u64, me: NodeIdx, purpose: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::from(me.0) * STREAMS_PER_PROCESS + purpose as u64 + 1);
    rng
}

impl Ctx {
    /// A stream of this process's for `purpose`.
    pub fn stream(&self, purpose: Stream) -> ChaCha8Rng {
        stream_rng(self.seed, self.me, purpose)
    }

    fn new(shared: &Shared, me: NodeIdx) -> Ctx {
        let stream = |k: Stream| stream_rng(shared.seed, me, k);
        let n = &shared.scenario.network;
        Ctx {
            me,
            seed: shared.seed,
            rng: stream(Stream::Handlers),
            counters: Counters::default(),
            per_second: vec![SecondCounters::default(); shared.scenario.total_s() as usize + 1],
            logs: Logs::following(shared.scenario.checked_one_in()),
            trace: Vec::new(),
            traced: shared.traced_user(shared.clock.now() + 1),
            tick_start: Time::ZERO,
            outbox: Outbox::new(me, shared.tick_us),
            net: NetDraw {
                rng: stream(Stream::Network),
                latency: [Sampler::new(&n.client_server_ms, 1_000.0), Sampler::new(&n.in_datacenter_ms, 1_000.0)],
                client: shared.topo.link(me, me) == Link::ClientServer,
                clients: shared.topo.range(NodeKind::ClientShard),
                me,
                faults: Some(shared.faults.net_faults()).filter(|f| !f.is_empty()),
                slowest_us: [0; 2],
            },
        }
    }

    /// Send `msg` to `to`, leaving at `depart`, with a latency of its own.
    #[inline]
    pub fn send(&mut self, to: NodeIdx, depart: Time, msg: Msg) {
        self.outbox.send(to, depart, msg, &mut self.net);
    }

    /// Send `msg` to `to`, leaving at `depart`, in order with this process's other sends
    /// on `key`: it leaves and arrives no earlier than the previous one.
    #[inline]
    pub fn send_ordered(&mut self, to: NodeIdx, depart: Time, msg: Msg, key: OrderKey) {
        self.outbox.send_ordered(to, depart, msg, key.packed(), &mut self.net);
    }

    /// What the process has yet to send at `now`: replies of requests still queued or in
    /// service, and how long until the last of them leaves.
    fn backlog(&self, now: Time) -> Backlog {
        let (queued, last) = self.outbox.backlog();
        Backlog { queued: queued as u64, wait_us: last.as_us().saturating_sub(now.as_us()) }
    }

    /// Whether `user`'s messages are traced.
    #[inline]
    pub fn traces(&self, user: UserId) -> bool {
        self.traced == Some(user)
    }

    /// Trace an event of a message if it is from or to the traced user.
    #[inline]
    pub fn trace_msg(&mut self, at: Time, event: &'static str, msg: &ChatMessage, device: Option<DeviceId>) {
        if self.traced.is_some() && (self.traces(msg.from) || self.traces(msg.to)) {
            let user = device.map_or(msg.to, |d| d.user);
            self.trace.push(TraceEvent {
                at,
                event,
                msg: Some(msg.id),
                user,
                slot: device.map(|d| d.slot.0),
                node: self.me,
            });
        }
    }

    /// Trace an event of the traced user's device.
    #[inline]
    pub fn trace_device(&mut self, at: Time, event: &'static str, device: DeviceId) {
        if self.traces(device.user) {
            self.trace.push(TraceEvent {
                at,
                event,
                msg: None,
                user: device.user,
                slot: Some(device.slot.0),
                node: self.me,
            });
        }
    }

    /// The counters of the simulated second containing `t`.
    #[inline]
    pub fn second(&mut self, t: Time) -> &mut SecondCounters {
        let i = ((t.as_us() / 1_000_000) as usize).min(self.per_second.len() - 1);
        &mut self.per_second[i]
    }
}

/// How many arrivals ahead the tick loop announces with `Process::prefetch`, in groups of
/// this many (so between 8 and 16 ahead): enough for a memory access to complete while
/// the arrivals in between are handled.
const PREFETCH_AHEAD: usize = 8;

/// Scratch space for `arrival_order`.
#[derive(Default)]
struct OrderKeys {
    narrow: Vec<u64>,
    wide: Vec<u128>,
}

/// Bits of a narrow order key: the arrival's time (µs after a base), its sender, its index.
const NARROW_INDEX_BITS: u32 = 16;
const NARROW_SENDER_BITS: u32 = 12;
const NARROW_TIME_BITS: u32 = 64 - NARROW_SENDER_BITS - NARROW_INDEX_BITS;

/// The order in which a process handles one tick's arrivals (`Envelope::order_key`: by
/// exact time, then sender, then the sender's sequence), as indices into `batch`, whose
/// arrivals are due by `until`.
///
/// Sorting small integers rather than the envelopes: one 64-bit key of (time after a base,
/// sender, index) when they fit (a batch of at most 65,536 arrivals, none more than a
/// minute (2^36 µs) before the tick ends, 4,096 processes), with the few arrivals at the
/// same time from the same sender put in their sequence order afterwards; else the 128-bit
/// key. Both give the same order.
fn arrival_order(batch: &[Envelope], until: Time, keys: &mut OrderKeys, order: &mut Vec<u32>) {
    const _: () = assert!(crate::limits::PROCESSES_MAX <= 1 << NARROW_SENDER_BITS);
    order.clear();
    let base = until.as_us().saturating_sub((1 << NARROW_TIME_BITS) - 1);
    let narrow = &mut keys.narrow;
    narrow.clear();
    let mut fits = batch.len() <= 1 << NARROW_INDEX_BITS;
    if fits {
        narrow.extend(batch.iter().enumerate().map(|(i, e)| {
            let time = e.at.as_us().wrapping_sub(base);
            fits &= time < 1 << NARROW_TIME_BITS;
            (time << (NARROW_SENDER_BITS + NARROW_INDEX_BITS)) | (u64::from(e.from.0) << NARROW_INDEX_BITS) | i as u64
        }));
    }
    let index_mask = (1 << NARROW_INDEX_BITS) - 1;
    if fits {
        if !narrow.is_sorted() {
            narrow.sort_unstable();
        }
        // Arrivals at the same time from the same sender: in the sender's sequence order.
        let mut k = 0;
        while k < narrow.len() {
            let same = narrow[k + 1..]
                .iter()
                .take_while(|&&key| key >> NARROW_INDEX_BITS == narrow[k] >> NARROW_INDEX_BITS)
                .count();
            if same > 0 {
                narrow[k..=k + same].sort_unstable_by_key(|&key| (batch[(key & index_mask) as usize].seq, key));
            }
            k += same + 1;
        }
        order.extend(narrow.iter().map(|&key| (key & index_mask) as u32));
    } else {
        let wide = &mut keys.wide;
        wide.clear();
        wide.extend(batch.iter().enumerate().map(|(i, e)| e.order_key(i)));
        if !wide.is_sorted() {
            wide.sort_unstable();
        }
        order.extend(wide.iter().map(|&key| (key & ((1 << 40) - 1)) as u32));
    }
}

/// A built process with its context and the loop's state between ticks: what the
/// supervisor runs each tick (see `Shared::procs`).
pub(crate) trait Runner: Send {
    /// Take the arrivals of `tick` from the process's part of the network.
    fn take(&mut self, net: &mut NetPart, tick: u64);
    /// Handle the tick's arrivals in order, then the tick; what leaves waits in the
    /// outbox until `deliver`.
    fn run_tick(&mut self, shared: &Shared, tick: u64);
    /// Put what leaves in `tick` on the network.
    fn deliver(&mut self, shared: &Shared, net: &mut NetPart, tick: u64);
    /// File the process's report at the end of the run.
    fn file(self: Box<Self>, shared: &Shared, tick: u64);
    /// The trace events so far (of a process being killed: they outlive it in trace.csv).
    fn take_trace(&mut self) -> Vec<TraceEvent>;
}

struct ProcessRunner<P: Process> {
    ctx: Ctx,
    process: P,
    me: NodeIdx,
    window_end_tick: u64,
    window: (Time, Time),
    ops: OpCounts,
    backlog_window_end: Backlog,
    batch: Vec<Envelope>,
    keys: OrderKeys,
    order: Vec<u32>,
    published_slowest: [u64; 2],
    /// The queue's booked work already published to `Shared::work_us`, and the second
    /// booking now.
    published_work_us: u64,
    work_second: u64,
    /// Arrivals in the measuring window by the sender's kind.
    arrivals_from: [u64; NodeKind::ALL.len()],
}

/// Build a process (with its context, for the draws its state needs) and hand it to the
/// supervisor, which runs its ticks until the end of the run (or until the process is
/// killed) and then has it file its report.
pub(crate) async fn run_process<P: Process + Send + 'static>(
    shared: Arc<Shared>,
    me: NodeIdx,
    build: impl FnOnce(&mut Ctx) -> P,
) {
    let mut ctx = Ctx::new(&shared, me);
    let process = build(&mut ctx);
    let runner = ProcessRunner {
        ctx,
        process,
        me,
        window_end_tick: shared.measure_until().as_us() / shared.tick_us,
        window: (shared.measure_from(), shared.measure_until()),
        ops: [0; OP_KINDS],
        backlog_window_end: Backlog::default(),
        batch: Vec::new(),
        keys: OrderKeys::default(),
        order: Vec::new(),
        published_slowest: [0; 2],
        published_work_us: 0,
        work_second: shared.clock.now() * shared.tick_us / 1_000_000,
        arrivals_from: [0; NodeKind::ALL.len()],
    };
    *shared.procs[usize::from(me.0)].lock().expect("process lock") = Some(Box::new(runner));
}

impl<P: Process + Send> Runner for ProcessRunner<P> {
    fn take(&mut self, net: &mut NetPart, tick: u64) {
        net.take(self.me, tick, &mut self.batch);
    }

    fn run_tick(&mut self, shared: &Shared, tick: u64) {
        let ctx = &mut self.ctx;
        let process = &mut self.process;
        if shared.trace_a_crash && ctx.traced.is_none() {
            ctx.traced = shared.traced_user(tick);
        }
        ctx.tick_start = Time(tick.saturating_sub(1) * shared.tick_us);
        let batch = &self.batch;
        arrival_order(batch, Time(tick * shared.tick_us), &mut self.keys, &mut self.order);
        ctx.counters.events += batch.len() as u64;
        let at = |i: u32| &batch[i as usize];
        for &i in self.order.iter().take(PREFETCH_AHEAD) {
            process.prefetch(at(i));
        }
        for (k, &i) in self.order.iter().enumerate() {
            if k % PREFETCH_AHEAD == 0 {
                for &ahead in self.order.iter().skip(k + PREFETCH_AHEAD).take(PREFETCH_AHEAD) {
                    process.prefetch(at(ahead));
                }
            }
            let env = at(i);
            if env.at >= self.window.0 && env.at < self.window.1 {
                if let Some((kind, n)) = OpKind::of(&env.msg) {
                    self.ops[kind as usize] += n;
                }
                self.arrivals_from[shared.kinds[usize::from(env.from.0)] as usize] += 1;
            }
            process.on_message(env, ctx);
        }
        self.batch.clear();
        let now = Time(tick * shared.tick_us);
        process.on_tick(now, ctx);
    }

    fn deliver(&mut self, shared: &Shared, net: &mut NetPart, tick: u64) {
        let ctx = &mut self.ctx;
        let now = Time(tick * shared.tick_us);
        let may_drop = shared.faults.may_drop();
        ctx.outbox.flush(now, |to, env| {
            if !(may_drop && shared.faults.drops(to, tick, env.at)) {
                net.deliver_one(tick, to, env)
            }
        });
        for (class, published) in self.published_slowest.iter_mut().enumerate() {
            let slowest = ctx.net.slowest_us[class];
            if slowest > *published {
                shared.slowest_hop_us[class].fetch_max(slowest, Ordering::Relaxed);
                *published = slowest;
            }
        }
        if tick == self.window_end_tick {
            self.backlog_window_end = ctx.backlog(now);
        }
        // At the first tick past a second's end: the work the queue booked in it (a tick
        // that straddles the end counts to the second it began in).
        if now.as_us() >= (self.work_second + 1) * 1_000_000 {
            if let Some(queue) = self.process.queue() {
                let seconds = shared.scenario.total_s() + 1;
                let booked = queue.booked_us();
                let slot = u64::from(self.me.0) * seconds + self.work_second.min(seconds - 1);
                shared.work_us[slot as usize].fetch_add(booked - self.published_work_us, Ordering::Relaxed);
                self.published_work_us = booked;
            }
            self.work_second = now.as_us() / 1_000_000;
        }
    }

    fn take_trace(&mut self) -> Vec<TraceEvent> {
        std::mem::take(&mut self.ctx.trace)
    }

    fn file(self: Box<Self>, shared: &Shared, tick: u64) {
        let ProcessRunner { mut ctx, mut process, me, ops, backlog_window_end, arrivals_from, .. } = *self;
        let backlog_end = ctx.backlog(Time(tick * shared.tick_us));
        ctx.logs.in_transit.extend(ctx.outbox.message_ids(Msg::message_id));
        ctx.logs.receipts_in_transit.extend(ctx.outbox.message_ids(Msg::receipt_message_id));
        ctx.logs.closing_in_transit.extend(ctx.outbox.message_ids(Msg::closed_device));
        ctx.logs.caught_up_in_transit.extend(ctx.outbox.message_ids(Msg::caught_up_device));
        let requests = ctx.outbox.awaited_requests().map(|(node, req)| (node.0, req));
        ctx.logs.requests_in_transit.extend(requests);
        let (kind, _) = shared.topo.locate(me);
        let mut report = NodeReport {
            kind,
            counters: ctx.counters,
            per_second: std::mem::take(&mut ctx.per_second),
            latencies: None,
            logs: std::mem::take(&mut ctx.logs),
            trace: std::mem::take(&mut ctx.trace),
            workers: 0,
            busy_us: 0,
            served: 0,
            gauge_end: 0,
            backlog_window_end,
            backlog_end,
            ops,
            arrivals_from,
            sojourns: None,
            latencies_per_second: None,
            receipt_transitions: None,
        };
        process.finish(&mut report);
        shared.reports.lock().expect("reports lock")[usize::from(me.0)] = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Msg;
    use rand::Rng;
    use wasim_model::{DeviceFrame, DeviceId};

    fn env(at_us: u64, from: u16, seq: u32) -> Envelope {
        let msg =
            Msg::Device { device: DeviceId::phone(UserId(1)), frame: DeviceFrame::Heartbeat { receipts_heard: 0 } };
        Envelope { at: Time(at_us), from: NodeIdx(from), seq, msg }
    }

    /// The order of the 128-bit key, which `arrival_order` must reproduce.
    fn by_wide_key(batch: &[Envelope]) -> Vec<u32> {
        let mut keys: Vec<u128> = batch.iter().enumerate().map(|(i, e)| e.order_key(i)).collect();
        keys.sort_unstable();
        keys.iter().map(|&k| (k & ((1 << 40) - 1)) as u32).collect()
    }

    #[test]
    fn arrivals_are_ordered_by_time_sender_and_sequence_whichever_key_is_used() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut keys, mut order) = (OrderKeys::default(), Vec::new());
        let until = Time::from_secs(100);
        for round in 0..300 {
            // Few distinct times and senders, so that ties are common; some rounds hold an
            // arrival too old for the narrow key, and one a batch too large for it.
            let n = if round == 0 { 70_000 } else { rng.random_range(0..200) };
            let batch: Vec<Envelope> = (0..n)
                .map(|_| {
                    let at = if round % 10 == 9 && rng.random_bool(0.1) {
                        rng.random_range(0..1_000)
                    } else {
                        until.as_us() - rng.random_range(0..4) * 250
                    };
                    env(at, rng.random_range(0..5), rng.random())
                })
                .collect();
            arrival_order(&batch, until, &mut keys, &mut order);
            assert_eq!(order, by_wide_key(&batch), "round {round}");
        }
    }
}
