//! Serve loop of a chat server.

use crate::dist::Sampler;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, Process, Shared};
use crate::topology::Topology;
use std::sync::Arc;
use wasim_model::{ChatServer, ChatServerConfig, ChatServerInput as In, ChatServerOutput as Out, ServerId, Time};

pub(crate) struct ChatNode {
    server: ChatServer,
    topo: Arc<Topology>,
    fifo: Fifo,
    service: Sampler,
    outs: Vec<Out>,
}

impl ChatNode {
    pub fn new(shared: &Shared, i: u32) -> ChatNode {
        let s = &shared.scenario;
        let mut config = ChatServerConfig::new(ServerId(i as u16));
        config.connections_max = s.fleet.connections_per_server_max;
        config.replication_factor = s.fleet.cassandra_replication_factor as u8;
        let (fifo, service) = super::queue(shared, s.workers.chat_server, &s.service_us.chat_server);
        ChatNode { server: ChatServer::new(config), topo: shared.topo.clone(), fifo, service, outs: Vec::new() }
    }

    fn emit(&mut self, t: Time, ctx: &mut Ctx) {
        let topo = &*self.topo;
        for out in self.outs.drain(..) {
            match out {
                Out::ConnectAccepted { device } => {
                    let server = self.server.id();
                    ctx.send(topo.client_shard(device.user), t, Msg::ConnectAccepted { device, server });
                }
                Out::ConnectRefused { device } => {
                    ctx.send(topo.client_shard(device.user), t, Msg::ConnectRefused { device })
                }
                Out::SessionSet { device, server, ttl } => {
                    ctx.send(topo.redis(device.user), t, Msg::SessionSet { device, server, ttl })
                }
                Out::SessionClear { device, server } => {
                    ctx.send(topo.redis(device.user), t, Msg::SessionClear { device, server })
                }
                Out::Persist { req, msg } => {
                    for replica in topo.replicas(msg.conversation) {
                        ctx.send(replica, t, Msg::Write { req, msg });
                    }
                }
                Out::SentAck { device, msg } => {
                    ctx.send(topo.client_shard(device.user), t, Msg::SentAck { device, msg })
                }
                Out::Publish { req, msg } => {
                    ctx.send(topo.broker(topo.partition(msg.conversation)), t, Msg::Produce { req, msg })
                }
                Out::Push { device, msg } => ctx.send(topo.client_shard(device.user), t, Msg::Push { device, msg }),
                Out::InboxAdd { user, id } => ctx.send(topo.redis(user), t, Msg::InboxAdd { user, id }),
                Out::SessionGet { req, user } => ctx.send(topo.redis(user), t, Msg::SessionGet { req, user }),
                Out::RelayReceipt { server, msg, acked_at } => {
                    ctx.send(topo.chat(server), t, Msg::ReceiptRelay { msg, acked_at })
                }
                Out::Receipt { device, msg, acked_at } => {
                    ctx.send(topo.client_shard(device.user), t, Msg::Receipt { device, msg, acked_at })
                }
            }
        }
    }
}

impl Process for ChatNode {
    fn on_message(&mut self, env: Envelope, ctx: &mut Ctx) {
        let input = match env.msg {
            Msg::Connect { device } => In::Connect { device },
            Msg::Send { device, to, client_seq, sent_at } => In::ClientSend { device, to, client_seq, sent_at },
            Msg::WriteAck { req } => In::WriteAck { req },
            Msg::ProduceAck { req } => In::ProduceAck { req },
            Msg::Forward { msg } => In::Forward { msg },
            Msg::DeliveredAck { device, msg, acked_at } => In::DeliveredAck { device, msg, acked_at },
            Msg::SessionValue { req, entry } => In::SessionReply { req, entry },
            Msg::ReceiptRelay { msg, acked_at } => In::ReceiptRelay { msg, acked_at },
            other => unreachable!("chat server got {other:?}"),
        };
        let done = self.fifo.serve(env.at, self.service.sample(&mut ctx.rng));
        self.server.handle(done, input, &mut self.outs);
        self.emit(done, ctx);
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        self.server.handle_timeout(now, &mut self.outs);
        self.emit(now, ctx);
    }

    fn finish(&mut self, report: &mut NodeReport) {
        report.workers = self.fifo.workers();
        report.busy_us = self.fifo.busy_us();
        report.served = self.fifo.served();
        report.gauge_end = u64::from(self.server.connection_count());
    }
}
