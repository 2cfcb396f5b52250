//! The tick loop every simulated process runs, and the context its handlers use.

use crate::check::Logs;
use crate::dist::Sampler;
use crate::metrics::{Counters, NodeReport, SecondCounters, TraceEvent};
use crate::msg::{Envelope, Msg, NodeIdx};
use crate::net::Network;
use crate::population::Population;
use crate::scenario::Scenario;
use crate::topology::{Link, Topology};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use wasim_model::{ChatMessage, DeviceId, Time, UserId};

/// The logical clock every process follows. The supervisor advances it one tick at a
/// time and wakes the processes; madsim only advances its own clock once every process
/// has finished the tick, so all of tick `k` happens before any of tick `k + 1`.
///
/// (madsim's `sleep_until` rounds every sleep up to at least 1 ms from "now", and "now"
/// creeps forward a little at every poll, so per-process sleeps would drift apart.)
#[derive(Default)]
pub(crate) struct TickClock {
    tick: AtomicU64,
    waiting: Mutex<Vec<Waker>>,
}

impl TickClock {
    /// The current tick.
    pub fn now(&self) -> u64 {
        self.tick.load(Ordering::Acquire)
    }

    /// Move to the next tick and wake every waiting process.
    pub fn advance(&self) -> u64 {
        let t = self.tick.fetch_add(1, Ordering::AcqRel) + 1;
        for w in self.waiting.lock().expect("clock lock").drain(..) {
            w.wake();
        }
        t
    }

    /// Wait for a tick later than `after`; returns it.
    pub fn after(&self, after: u64) -> NextTick<'_> {
        NextTick { clock: self, after }
    }
}

/// Future of [`TickClock::after`].
pub(crate) struct NextTick<'a> {
    clock: &'a TickClock,
    after: u64,
}

impl Future for NextTick<'_> {
    type Output = u64;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let t = self.clock.now();
        if t > self.after {
            return Poll::Ready(t);
        }
        self.clock.waiting.lock().expect("clock lock").push(cx.waker().clone());
        Poll::Pending
    }
}

/// What all processes share: the network, the layout and the run's settings.
pub(crate) struct Shared {
    pub net: Mutex<Network>,
    pub topo: Arc<Topology>,
    pub scenario: Scenario,
    pub seed: u64,
    pub clock: TickClock,
    pub tick_us: u64,
    pub end_tick: u64,
    pub reports: Mutex<Vec<Option<NodeReport>>>,
    pub population: Population,
    /// The user whose messages go to trace.csv, if any.
    pub traced: Option<UserId>,
    /// Simulated ms reached, for a progress display outside the simulation.
    pub progress_ms: Arc<AtomicU64>,
}

impl Shared {
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
    fn on_tick(&mut self, now: Time, ctx: &mut Ctx);
    /// Fill in the process-specific parts of the final report.
    fn finish(&mut self, report: &mut NodeReport);
}

/// What a handler may use: the process's RNG stream, its outbox and its counters.
pub(crate) struct Ctx {
    pub me: NodeIdx,
    pub topo: Arc<Topology>,
    pub rng: ChaCha8Rng,
    pub counters: Counters,
    per_second: Vec<SecondCounters>,
    pub logs: Logs,
    pub trace: Vec<TraceEvent>,
    traced: Option<UserId>,
    out: Vec<(NodeIdx, Envelope)>,
    seq: u32,
    latency: [Sampler; 2],
    /// Last arrival time per destination: links between servers are TCP connections, so
    /// what is sent on one arrives in the order it was sent.
    link_last: Vec<Time>,
}

impl Ctx {
    fn new(shared: &Shared, me: NodeIdx) -> Ctx {
        // One ChaCha stream per process, derived from the run seed and the process index,
        // so the scheduler's order cannot change which numbers a process draws.
        let mut rng = ChaCha8Rng::seed_from_u64(shared.seed);
        rng.set_stream(u64::from(me.0) + 1);
        let n = &shared.scenario.network;
        Ctx {
            me,
            topo: shared.topo.clone(),
            rng,
            counters: Counters::default(),
            per_second: vec![SecondCounters::default(); shared.scenario.total_s() as usize + 1],
            logs: Logs::default(),
            trace: Vec::new(),
            traced: shared.traced,
            out: Vec::new(),
            seq: 0,
            latency: [Sampler::new(&n.client_server_ms, 1_000.0), Sampler::new(&n.in_datacenter_ms, 1_000.0)],
            link_last: vec![Time::ZERO; shared.topo.node_count()],
        }
    }

    /// Send `msg` to `to`, leaving at `depart`; the link's latency is drawn here. Between
    /// servers the link keeps order; to and from devices, see `send_ordered`.
    #[inline]
    pub fn send(&mut self, to: NodeIdx, depart: Time, msg: Msg) {
        let link = self.topo.link(self.me, to);
        let mut at = Time(depart.as_us() + self.latency[link as usize].sample_us(&mut self.rng));
        if link == Link::InDatacenter {
            let last = &mut self.link_last[usize::from(to.0)];
            at = at.max(*last);
            *last = at;
        }
        self.push(to, at, msg);
    }

    /// Send on one device's WebSocket, whose last arrival is `last`: in order, like TCP.
    #[inline]
    pub fn send_ordered(&mut self, to: NodeIdx, depart: Time, msg: Msg, last: &mut Time) {
        let link = self.topo.link(self.me, to);
        let at = Time(depart.as_us() + self.latency[link as usize].sample_us(&mut self.rng)).max(*last);
        *last = at;
        self.push(to, at, msg);
    }

    #[inline]
    fn push(&mut self, to: NodeIdx, at: Time, msg: Msg) {
        self.seq = self.seq.wrapping_add(1);
        self.out.push((to, Envelope { at, from: self.me, seq: self.seq, msg }));
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

/// Run a process's tick loop until the end of the run, then file its report.
pub(crate) async fn run_process<P: Process>(shared: Arc<Shared>, me: NodeIdx, mut process: P) {
    let mut ctx = Ctx::new(&shared, me);
    let mut batch: Vec<Envelope> = Vec::new();
    let mut order: Vec<u128> = Vec::new();
    let mut tick = shared.clock.now();
    loop {
        tick = shared.clock.after(tick).await;
        shared.net.lock().expect("network lock").take(me, tick, &mut batch);
        // Sort small (key, index) pairs rather than the envelopes themselves.
        order.clear();
        order.extend(batch.iter().enumerate().map(|(i, e)| e.order_key(i)));
        if !order.is_sorted() {
            order.sort_unstable();
        }
        ctx.counters.events += batch.len() as u64;
        for &key in &order {
            process.on_message(&batch[(key & ((1 << 40) - 1)) as usize], &mut ctx);
        }
        batch.clear();
        process.on_tick(Time(tick * shared.tick_us), &mut ctx);
        if !ctx.out.is_empty() {
            shared.net.lock().expect("network lock").deliver(tick, &mut ctx.out);
        }
        if tick >= shared.end_tick {
            break;
        }
    }
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
    };
    process.finish(&mut report);
    shared.reports.lock().expect("reports lock")[usize::from(me.0)] = Some(report);
}
