//! Serve loop of a router (Kafka consumer).

use crate::dist::Sampler;
use crate::faults::PeerNotices;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg, NodeIdx};
use crate::node::{Ctx, OrderKey, Process, Shared};
use crate::topology::Topology;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use wasim_model::{Memories, RoutedMemory, Router, RouterInput as In, RouterOutput as Out, Time};

/// The partitions' memories (`Shared::routed`): the one a handler works on is locked
/// when it asks for it and held until it asks for another or is done (the model borrows
/// one memory at a time).
struct Locked<'a> {
    all: &'a [Mutex<RoutedMemory>],
    held: Option<(u32, MutexGuard<'a, RoutedMemory>)>,
}

impl<'a> Locked<'a> {
    fn new(all: &'a [Mutex<RoutedMemory>]) -> Locked<'a> {
        Locked { all, held: None }
    }
}

impl Memories for Locked<'_> {
    fn memory(&mut self, partition: u32) -> &mut RoutedMemory {
        if self.held.as_ref().is_none_or(|(p, _)| *p != partition) {
            self.held = None;
            self.held = Some((partition, self.all[partition as usize].lock().expect("memory lock")));
        }
        &mut self.held.as_mut().expect("locked above").1
    }
}

/// How often a router commits its progress (Kafka's auto-commit default is 5 s; routers
/// commit explicitly and often, so a restart replays little).
pub(crate) const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) struct RouterNode {
    router: Router,
    topo: Arc<Topology>,
    fifo: Fifo,
    service: Sampler,
    outs: Vec<Out>,
    /// What this router learns of chat servers going down and coming back.
    peers: PeerNotices,
    shared: Arc<Shared>,
    me: NodeIdx,
    /// Whether the partitions' memories were taken over (a restarted router asks again
    /// for the replays its predecessor left unanswered).
    resumed: bool,
}

impl RouterNode {
    pub fn new(shared: &Arc<Shared>, me: NodeIdx) -> RouterNode {
        let s = &shared.scenario;
        let topo = shared.topo.clone();
        // The group's assignment now: at the start, each partition's own router; a router
        // restarted after a crash rejoins the group and takes its partitions back, each
        // from its committed offset.
        let now = Time(shared.clock.now() * shared.tick_us);
        let offsets: Vec<(u32, u64)> = (0..topo.partitions)
            .filter(|&p| shared.consumer(p, now) == me)
            .map(|p| (p, shared.kafka_logs[p as usize].lock().expect("log lock").committed()))
            .collect();
        let (fifo, service) =
            super::queue(shared, crate::topology::NodeKind::Router, s.workers.router, &s.service_us.router);
        RouterNode {
            router: Router::new(topo.partitions, &offsets, COMMIT_INTERVAL)
                .with_incarnation(shared.faults.restarts_by(me, now) as u32)
                .with_retain(s.forwards_kept())
                .with_dedup_window(if s.remembers_all_routed() { None } else { Some(s.dedup_window()) }),
            topo,
            fifo,
            service,
            outs: Vec::new(),
            peers: PeerNotices::default(),
            shared: shared.clone(),
            me,
            resumed: false,
        }
    }

    /// Follow the consumer group's rebalances (see `FaultPlan::consumer`).
    fn rebalance(&mut self, now: Time) {
        for partition in 0..self.topo.partitions {
            let owns = self.shared.consumer(partition, now) == self.me;
            if owns == self.router.owns(partition) {
                continue;
            }
            let input = if owns {
                let offset = self.shared.kafka_logs[partition as usize].lock().expect("log lock").committed();
                In::Assigned { partition, offset }
            } else {
                In::Revoked { partition }
            };
            self.router.handle(now, input, &mut Locked::new(&self.shared.routed), &mut self.outs);
        }
    }

    fn emit(&mut self, t: Time, ctx: &mut Ctx) {
        let topo = &*self.topo;
        for out in self.outs.drain(..) {
            match out {
                Out::RouteMessage { req, msg } => {
                    let key = OrderKey::Conversation(msg.conversation);
                    ctx.send_ordered(topo.redis(msg.to), t, Msg::RouteMessage { req, msg }, key)
                }
                Out::Forward { server, slot, msg } => {
                    ctx.trace_msg(t, "forward", &msg, None);
                    let key = OrderKey::Conversation(msg.conversation);
                    ctx.send_ordered(topo.chat(server), t, Msg::Forward { msg, slot }, key)
                }
                Out::Commit { partition, offset } => {
                    ctx.send(self.shared.broker(partition, t), t, Msg::Commit { partition, offset })
                }
                Out::Reroute { msg, exclude, slot } => {
                    ctx.trace_msg(t, "replay", &msg, None);
                    super::send_reroute(ctx, topo, t, msg, exclude, slot);
                }
            }
        }
    }
}

impl Process for RouterNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        if let Msg::Acked { partition, id, device } = env.msg {
            // A delete from the partition's state store: no service time of its own.
            let input = In::Acked { partition, id, slot: device.device().slot };
            self.router.handle(env.at, input, &mut Locked::new(&self.shared.routed), &mut self.outs);
            return;
        }
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        if let Msg::Record { partition, offset, msg } = env.msg {
            let mut memory = self.shared.routed[partition as usize].lock().expect("memory lock");
            self.router.on_record(done, partition, offset, msg, &mut memory, &mut self.outs);
            drop(memory);
            self.emit(done, ctx);
            return;
        }
        let input = match env.msg {
            Msg::Routed { req, route } => In::Routed { req, route },
            Msg::Rerouted { msg, route, slot } => {
                In::Rerouted { msg, route, slot, partition: self.topo.partition(msg.conversation) }
            }
            other => unreachable!("router got {other:?}"),
        };
        self.router.handle(done, input, &mut Locked::new(&self.shared.routed), &mut self.outs);
        self.emit(done, ctx);
    }

    #[inline]
    fn prefetch(&self, env: &Envelope) {
        if let Msg::Record { partition, msg, .. } = &env.msg {
            self.shared.routed[*partition as usize].lock().expect("memory lock").prefetch(msg);
        }
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        let shared = self.shared.clone();
        let mut memories = Locked::new(&shared.routed);
        if !self.resumed {
            self.resumed = true;
            self.router.resume(&mut memories, &mut self.outs);
        }
        drop(memories);
        if self.shared.faults.moves_consumers() {
            self.rebalance(now);
        }
        let mut memories = Locked::new(&shared.routed);
        for (server, down) in self.peers.notices(&self.shared.faults, now).0 {
            let input = if down { In::ServerDown { server } } else { In::ServerUp { server } };
            self.router.handle(now, input, &mut memories, &mut self.outs);
        }
        self.router.handle_timeout(now, &mut memories, &mut self.outs);
        drop(memories);
        self.emit(now, ctx);
        // The checker's record of repeats, kept outside the process: it outlives a crash.
        let aliases = self.router.take_aliases();
        if !aliases.is_empty() {
            self.shared.aliases.lock().expect("aliases lock").extend(aliases);
        }
    }

    fn queue(&self) -> Option<&Fifo> {
        Some(&self.fifo)
    }

    fn finish(&mut self, report: &mut NodeReport) {
        let me = self.me.0;
        report.logs.messages_awaiting.extend(self.router.waiting().map(|(id, req)| (id, me, req)));
        self.fifo.report_into(report);
        report.gauge_end = self.router.in_flight() as u64;
        report.counters.replayed += self.router.replayed();
        report.counters.retries_dropped += self.router.repeats();
    }
}
