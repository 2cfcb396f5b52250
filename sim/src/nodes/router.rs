//! Serve loop of a router (Kafka consumer).

use crate::dist::Sampler;
use crate::faults::PeerNotices;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg, NodeIdx};
use crate::node::{Ctx, OrderKey, Process, Shared};
use crate::topology::Topology;
use std::sync::Arc;
use std::time::Duration;
use wasim_model::{Router, RouterInput as In, RouterOutput as Out, Time};

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
}

impl RouterNode {
    pub fn new(shared: &Arc<Shared>, me: NodeIdx) -> RouterNode {
        let s = &shared.scenario;
        let topo = shared.topo.clone();
        let owned: Vec<(u32, u64)> =
            topo.partitions_where(|p| topo.router(p), me).into_iter().map(|p| (p, 0)).collect();
        let (fifo, service) =
            super::queue(shared, crate::topology::NodeKind::Router, s.workers.router, &s.service_us.router);
        RouterNode {
            router: Router::new(topo.partitions, &owned, COMMIT_INTERVAL)
                .with_retain(s.forward_retain())
                .with_dedup_window(s.dedup_window()),
            topo,
            fifo,
            service,
            outs: Vec::new(),
            peers: PeerNotices::new(shared),
            shared: shared.clone(),
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
                    ctx.send_ordered(
                        topo.redis(msg.to),
                        t,
                        Msg::Reroute { msg, exclude, slot },
                        OrderKey::Session(msg.to),
                    )
                }
            }
        }
    }
}

impl Process for RouterNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        let input = match env.msg {
            Msg::Record { partition, offset, msg } => In::Record { partition, offset, msg },
            Msg::Routed { req, route } => In::Routed { req, route },
            Msg::Rerouted { msg, route, slot } => In::Rerouted { msg, route, slot },
            other => unreachable!("router got {other:?}"),
        };
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        self.router.handle(done, input, &mut self.outs);
        self.emit(done, ctx);
    }

    #[inline]
    fn prefetch(&self, env: &Envelope) {
        if let Msg::Record { msg, .. } = &env.msg {
            self.router.prefetch(msg);
        }
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        for (server, down) in self.peers.notices(&self.shared.faults, now).0 {
            let input = if down { In::ServerDown { server } } else { In::ServerUp { server } };
            self.router.handle(now, input, &mut self.outs);
        }
        self.router.handle_timeout(now, &mut self.outs);
        self.emit(now, ctx);
    }

    fn finish(&mut self, report: &mut NodeReport) {
        self.fifo.report_into(report);
        report.gauge_end = self.router.in_flight() as u64;
        report.counters.replayed += self.router.replayed();
        report.counters.retries_dropped += self.router.repeats();
        report.counters.late_dropped += self.router.late();
        report.logs.aliases = self.router.take_aliases();
    }
}
