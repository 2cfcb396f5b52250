//! Serve loop of a chat server.

use crate::dist::Sampler;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg, HEARTBEATS_PIPELINED_MAX};
use crate::node::{Ctx, Process, Shared};
use crate::topology::Topology;
use std::sync::Arc;
use std::time::Duration;
use wasim_model::{
    device_key, ChatServer, ChatServerConfig, ChatServerInput as In, ChatServerOutput as Out, DeviceId, ServerId, Time,
};

pub(crate) struct ChatNode {
    server: ChatServer,
    topo: Arc<Topology>,
    fifo: Fifo,
    service: Sampler,
    outs: Vec<Out>,
    /// Last arrival per device WebSocket, so pushes arrive in the order they were sent:
    /// a direct-mapped table by socket. Two sockets sharing a slot are ordered together,
    /// which delays one a little but never reorders either; only sockets with something
    /// in flight matter, so collisions are rare.
    socket_last: Vec<(u32, Time)>,
    /// Heartbeat refreshes waiting for this tick's pipelined round trip, per presence shard.
    heartbeats: Vec<Vec<DeviceId>>,
}

/// Send the pending heartbeat refreshes for one presence shard in one pipelined message.
fn flush_heartbeats(pending: &mut Vec<DeviceId>, shard: crate::msg::NodeIdx, t: Time, ctx: &mut Ctx) {
    let mut devices = [DeviceId::default(); HEARTBEATS_PIPELINED_MAX];
    devices[..pending.len()].copy_from_slice(pending);
    ctx.send(shard, t, Msg::PresenceHeartbeats { count: pending.len() as u8, devices });
    pending.clear();
}

/// Sends to devices through the socket-order table.
struct Sockets<'a> {
    table: &'a mut [(u32, Time)],
    topo: &'a Topology,
}

impl Sockets<'_> {
    /// Send on a device's WebSocket. The connect acceptance, the pushes and the end of the
    /// catch-up must arrive in order (a push before the acceptance would be ignored, a
    /// fetch end before its pushes would show them late); the rest may overtake.
    fn send(&mut self, device: DeviceId, t: Time, msg: Msg, ctx: &mut Ctx) {
        let shard = self.topo.client_shard(device.user);
        if matches!(msg, Msg::ConnectAccepted { .. } | Msg::Push { .. } | Msg::FetchDone { .. }) {
            let key = device_key(device);
            let slot = &mut self.table[(key.wrapping_mul(0x9E37_79B1) >> 19) as usize % SOCKET_SLOTS];
            if slot.0 != key && slot.1 <= t {
                *slot = (key, Time::ZERO); // the slot's previous socket has nothing in flight
            }
            slot.0 = key;
            ctx.send_ordered(shard, t, msg, &mut slot.1);
        } else {
            ctx.send(shard, t, msg);
        }
    }
}

/// Slots of the socket-order table (a power of two): far more than the sockets of one
/// server with a push in flight at once.
const SOCKET_SLOTS: usize = 1 << 13;

impl ChatNode {
    pub fn new(shared: &Shared, i: u32) -> ChatNode {
        let s = &shared.scenario;
        let mut config = ChatServerConfig::new(ServerId(i as u16));
        config.connections_max = s.fleet.connections_per_server_max;
        config.replication_factor = s.fleet.cassandra_replication_factor as u8;
        config.connection_timeout = Duration::from_millis(s.users.presence_ttl_ms);
        let (fifo, service) = super::queue(shared, s.workers.chat_server, &s.service_us.chat_server);
        ChatNode {
            server: ChatServer::new(config),
            topo: shared.topo.clone(),
            fifo,
            service,
            outs: Vec::new(),
            socket_last: vec![(u32::MAX, Time::ZERO); SOCKET_SLOTS],
            heartbeats: vec![Vec::new(); shared.topo.count(crate::topology::NodeKind::Presence) as usize],
        }
    }

    fn emit(&mut self, t: Time, ctx: &mut Ctx) {
        // Disjoint borrows: the topology is read while the socket table is written.
        let ChatNode { server, topo, outs, socket_last, heartbeats, .. } = self;
        let topo = &**topo;
        let me = server.id();
        let read_quorum = usize::from(server.read_quorum());
        let mut sockets = Sockets { table: socket_last, topo };
        for out in outs.drain(..) {
            match out {
                Out::ConnectAccepted { device } => {
                    ctx.trace_device(t, "connect_accepted", device);
                    sockets.send(device, t, Msg::ConnectAccepted { device, server: me }, ctx);
                }
                Out::ConnectRefused { device } => sockets.send(device, t, Msg::ConnectRefused { device }, ctx),
                Out::SessionSet { req, device, server, ttl, cursor } => {
                    ctx.trace_device(t, "session_set_and_fetch_inbox", device);
                    ctx.send(topo.redis(device.user), t, Msg::SessionSet { req, device, server, ttl, cursor })
                }
                Out::SessionClear { device, server } => {
                    ctx.trace_device(t, "connection_closed", device);
                    ctx.send(topo.redis(device.user), t, Msg::SessionClear { device, server })
                }
                Out::Presence(wasim_model::PresenceInput::Heartbeat { device }) => {
                    let i = topo.presence_shard(device.user);
                    let shard = topo.node(crate::topology::NodeKind::Presence, i);
                    let pending = &mut heartbeats[i as usize];
                    pending.push(device);
                    if pending.len() == HEARTBEATS_PIPELINED_MAX {
                        flush_heartbeats(pending, shard, t, ctx);
                    }
                }
                Out::Presence(input) => ctx.send(topo.presence(input.user()), t, Msg::Presence(input)),
                Out::Read { req, id, conversation } => {
                    for replica in topo.replicas(conversation).take(read_quorum) {
                        ctx.send(replica, t, Msg::Read { req, id, conversation });
                    }
                }
                Out::Persist { req, msg } => {
                    ctx.trace_msg(t, "persist", &msg, None);
                    for replica in topo.replicas(msg.conversation) {
                        ctx.send(replica, t, Msg::Write { req, msg });
                    }
                }
                Out::SentAck { device, msg } => {
                    ctx.trace_msg(t, "sent_ack", &msg, Some(device));
                    sockets.send(device, t, Msg::SentAck { device, msg }, ctx);
                }
                Out::Publish { req, msg } => {
                    ctx.trace_msg(t, "publish", &msg, None);
                    ctx.send(topo.broker(topo.partition(msg.conversation)), t, Msg::Produce { req, msg })
                }
                Out::Push { device, msg } => {
                    ctx.trace_msg(t, "push", &msg, Some(device));
                    sockets.send(device, t, Msg::Push { device, msg }, ctx);
                }
                Out::FetchDone { device } => sockets.send(device, t, Msg::FetchDone { device }, ctx),
                Out::Reroute { msg, exclude } => {
                    ctx.trace_msg(t, "reroute", &msg, None);
                    ctx.send(topo.redis(msg.to), t, Msg::Reroute { msg, exclude })
                }
                Out::RouteReceipt { req, receipt, exclude } => {
                    ctx.send(topo.redis(receipt.msg.from), t, Msg::RouteReceipt { req, receipt, exclude })
                }
                Out::RelayReceipt { server, receipt } => ctx.send(topo.chat(server), t, Msg::ReceiptRelay { receipt }),
                Out::Receipt { device, receipt } => {
                    ctx.trace_msg(t, "receipt", &receipt.msg, Some(device));
                    sockets.send(device, t, Msg::Receipt { device, receipt }, ctx);
                }
                Out::Subscribe { watcher, server, target } => {
                    ctx.send(topo.presence(target), t, Msg::PresenceSubscribe { watcher, server, target })
                }
                Out::PresenceUpdate { device, update } => {
                    sockets.send(device, t, Msg::PresenceUpdate { device, update }, ctx)
                }
            }
        }
    }

    fn forward_rerouted(&mut self, msg: wasim_model::ChatMessage, route: wasim_model::Route, t: Time, ctx: &mut Ctx) {
        for (slot, server) in route.forwards() {
            if server == self.server.id() {
                self.server.handle(t, In::Forward { msg, slot }, &mut self.outs);
            } else {
                ctx.send(self.topo.chat(server), t, Msg::Forward { msg, slot });
            }
        }
    }
}

impl Process for ChatNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        let input = match env.msg {
            Msg::Connect { device, epoch, cursor, hide_last_seen } => {
                In::Connect { device, epoch, cursor, hide_last_seen }
            }
            Msg::Disconnect { device, epoch } => In::Disconnect { device, epoch },
            Msg::Heartbeat { device } => In::Heartbeat { device },
            Msg::Send { device, to, client_seq, sent_at } => In::ClientSend { device, to, client_seq, sent_at },
            Msg::DeliveredAck { device, msg, at } => In::DeliveredAck { device, msg, at },
            Msg::ReadAck { device, msg, at } => In::ReadAck { device, msg, at },
            Msg::Subscribe { device, target } => In::Subscribe { device, target },
            Msg::WriteAck { req } => In::WriteAck { req },
            Msg::ReadReply { req, row } => In::ReadReply { req, row },
            Msg::InboxEntry { req, id, conversation } => In::InboxEntry { req, id, conversation },
            Msg::StoredReceipt { req, receipt } => In::StoredReceipt { req, receipt },
            Msg::InboxEnd { req } => In::InboxEnd { req },
            Msg::ReceiptRouted { req, server } => In::ReceiptRouted { req, server },
            Msg::PresenceNotify { watcher, update } => In::PresenceNotify { watcher, update },
            Msg::ProduceAck { req } => In::ProduceAck { req },
            Msg::Forward { msg, slot } => In::Forward { msg, slot },
            Msg::ReceiptRelay { receipt } => In::ReceiptRelay { receipt },
            Msg::Rerouted { msg, route } => {
                let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
                self.forward_rerouted(msg, route, done, ctx);
                self.emit(done, ctx);
                return;
            }
            other => unreachable!("chat server got {other:?}"),
        };
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        self.server.handle(done, input, &mut self.outs);
        self.emit(done, ctx);
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        self.server.handle_timeout(now, &mut self.outs);
        self.emit(now, ctx);
        for (i, pending) in self.heartbeats.iter_mut().enumerate() {
            if !pending.is_empty() {
                let shard = self.topo.node(crate::topology::NodeKind::Presence, i as u32);
                flush_heartbeats(pending, shard, now, ctx);
            }
        }
    }

    fn finish(&mut self, report: &mut NodeReport) {
        report.workers = self.fifo.workers();
        report.busy_us = self.fifo.busy_us();
        report.served = self.fifo.served();
        report.gauge_end = u64::from(self.server.connection_count());
    }
}
