//! Serve loop of a fan-out instance: the consumer group of the `group-messages` topic. The
//! logic (pages, batched routes, one forward per server per batch, commits) is the model's
//! `Fanout`; this loop feeds it records and replies and puts its effects on the network.

use crate::dist::Sampler;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{unpack_route, Envelope, Msg, NodeIdx};
use crate::node::{Ctx, OrderKey, Process, Shared};
use crate::topology::{NodeKind, Topology};
use std::sync::Arc;
use wasim_model::{
    ConversationId, Fanout, FanoutConfig, FanoutInput as In, FanoutOutput as Out, GroupId, Route, Time, UserId,
    ROUTE_BATCH_MAX,
};

pub(crate) struct FanoutNode {
    shared: Arc<Shared>,
    topo: Arc<Topology>,
    fanout: Fanout,
    fifo: Fifo,
    service: Sampler,
    outs: Vec<Out>,
    routes: Vec<Route>,
    peers: crate::faults::PeerNotices,
    me: NodeIdx,
}

impl FanoutNode {
    pub fn new(shared: &Arc<Shared>, me: NodeIdx) -> FanoutNode {
        let s = &shared.scenario;
        let topo = shared.topo.clone();
        let (fifo, service) = super::queue(shared, NodeKind::Fanout, s.workers.fanout, &s.service_us.fanout);
        // Forwards are kept to route again only if a chat server crashes (as the routers').
        let retain = s.forwards_kept();
        let mut fanout = Fanout::new(FanoutConfig { partitions: topo.group_partitions, retain });
        let mut outs = Vec::new();
        // Each instance takes its partitions of the group topic from their committed offsets.
        for local in 0..topo.group_partitions {
            let partition = topo.partitions + local;
            if topo.fanout_of(partition) == me {
                let offset = shared.kafka_logs[partition as usize].lock().expect("log lock").committed();
                fanout.handle(Time::ZERO, In::Assigned { partition: local, offset }, |_| 0, &mut outs);
            }
        }
        FanoutNode {
            shared: shared.clone(),
            topo,
            fanout,
            fifo,
            service,
            outs,
            routes: Vec::new(),
            peers: crate::faults::PeerNotices::default(),
            me,
        }
    }

    fn emit(&mut self, t: Time, ctx: &mut Ctx) {
        let topo = &*self.topo;
        for out in self.outs.drain(..) {
            match out {
                Out::ReadPage { req, group, page, attempt } => {
                    let group = GroupId(group);
                    // One replica of the group's partition answers a page (LOCAL_ONE); a
                    // read asked again goes to the next.
                    let replicas: Vec<_> = topo.replicas(ConversationId::group(group)).collect();
                    let replica = replicas[usize::from(attempt) % replicas.len()];
                    ctx.counters.membership_pages += 1;
                    ctx.send(replica, t, Msg::ReadMembers { req, group, page });
                }
                Out::Route { req, shard, msg, members, count } => {
                    ctx.counters.group_route_requests += 1;
                    let redis = topo.node(NodeKind::Redis, shard);
                    ctx.send_ordered(
                        redis,
                        t,
                        Msg::RouteGroup { req, msg, count, members },
                        OrderKey::Conversation(msg.conversation),
                    );
                }
                Out::Forward { server, msg, devices, count } => {
                    ctx.counters.group_forwards += 1;
                    let key = OrderKey::Conversation(msg.conversation);
                    ctx.send_ordered(topo.chat(server), t, Msg::GroupForward { msg, count, devices }, key)
                }
                Out::Commit { partition, offset } => {
                    let partition = topo.partitions + partition;
                    ctx.send(self.shared.broker(partition, t), t, Msg::Commit { partition, offset })
                }
                Out::Reroute { msg, exclude, slot } => {
                    super::send_reroute(ctx, topo, t, msg, wasim_model::Exclusion::new(exclude, t), slot)
                }
            }
        }
    }
}

impl Process for FanoutNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        if let Msg::Acked { id, device, .. } = env.msg {
            // A delete from the instance's memory: no service time of its own.
            self.fanout.handle(env.at, In::Acked { id, device }, |_| 0, &mut self.outs);
            return;
        }
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        let groups = &self.shared.groups;
        let shards = self.topo.count(NodeKind::Redis);
        let shard_of = move |u: UserId| u.0 % shards;
        match env.msg {
            Msg::Record { partition, offset, msg } => {
                let group = msg.conversation.group_id().expect("a group message on the group topic");
                let members = groups.size(group);
                let partition = partition - self.topo.partitions;
                let input = In::Record { partition, offset, msg, group: group.0, members };
                self.fanout.handle(done, input, shard_of, &mut self.outs);
            }
            Msg::MembersRead { req, group, page } => {
                let members = groups.page(group, page);
                self.fanout.handle(done, In::Page { req, members }, shard_of, &mut self.outs);
            }
            Msg::GroupRouted { req, count, servers } => {
                debug_assert!(usize::from(count) <= ROUTE_BATCH_MAX);
                self.routes.clear();
                self.routes.extend(servers[..usize::from(count)].iter().map(|&s| unpack_route(s)));
                let routes = std::mem::take(&mut self.routes);
                self.fanout.handle(done, In::Routed { req, routes: &routes }, shard_of, &mut self.outs);
                self.routes = routes;
            }
            Msg::Rerouted { msg, route, slot } => {
                self.fanout.handle(done, In::Rerouted { msg, route, slot }, shard_of, &mut self.outs);
            }
            ref other => unreachable!("fan-out got {other:?}"),
        }
        self.emit(done, ctx);
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        for (server, down) in self.peers.notices(&self.shared.faults, now).0 {
            let input = if down { In::ServerDown { server } } else { In::ServerUp { server } };
            self.fanout.handle(now, input, |_| 0, &mut self.outs);
        }
        self.fanout.on_tick(now, &mut self.outs);
        self.emit(now, ctx);
    }

    fn queue(&self) -> Option<&Fifo> {
        Some(&self.fifo)
    }

    fn finish(&mut self, report: &mut NodeReport) {
        let me = self.me.0;
        report.logs.messages_awaiting.extend(self.fanout.waiting().map(|(id, req)| (id, me, req)));
        self.fifo.report_into(report);
        report.gauge_end = self.fanout.in_flight() as u64;
        report.counters.replayed += self.fanout.replayed();
        report.counters.retries_dropped += self.fanout.repeats();
    }
}
