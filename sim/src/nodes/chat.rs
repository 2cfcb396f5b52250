//! Serve loop of a chat server.

use crate::check::LogMs;
use crate::dist::Sampler;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg, NodeIdx, HEARTBEATS_PIPELINED_MAX};
use crate::node::{Ctx, OrderKey, Process, Shared};
use crate::topology::{NodeKind, Topology};
use std::sync::Arc;
use std::time::Duration;
use wasim_model::{
    ChatServer, ChatServerConfig, ChatServerInput as In, ChatServerOutput as Out, DeviceId, PresenceInput, ServerId,
    Time,
};

pub(crate) struct ChatNode {
    server: ChatServer,
    topo: Arc<Topology>,
    fifo: Fifo,
    service: Sampler,
    outs: Vec<Out>,
    /// Heartbeat refreshes waiting for this tick's pipelined round trip, per presence
    /// shard, with the time the last of them was handled.
    heartbeats: Vec<(Vec<DeviceId>, Time)>,
    /// What this server learns of other chat servers going down and coming back.
    peers: crate::faults::PeerNotices,
    shared: Arc<Shared>,
    me: NodeIdx,
    /// The next whole simulated second whose connection count is to be recorded.
    next_second: u64,
}

/// Send the pending heartbeat refreshes for one presence shard in one pipelined message,
/// leaving when the last of them was handled.
fn flush_heartbeats(pending: &mut (Vec<DeviceId>, Time), shard: NodeIdx, ctx: &mut Ctx) {
    let (devices_pending, last) = pending;
    let mut devices = [DeviceId::default(); HEARTBEATS_PIPELINED_MAX];
    devices[..devices_pending.len()].copy_from_slice(devices_pending);
    ctx.send(shard, *last, Msg::PresenceHeartbeats { count: devices_pending.len() as u8, devices });
    devices_pending.clear();
}

impl ChatNode {
    pub fn new(shared: &Arc<Shared>, i: u32) -> ChatNode {
        let s = &shared.scenario;
        let mut config = ChatServerConfig::new(ServerId(i as u16));
        config.connections_max = s.fleet.connections_per_server_max;
        // Devices spread over the fleet, with a quarter more for imbalance.
        let devices = s.users.concurrent as f64 * (1.0 + s.users.devices_per_user.web);
        config.connections_expected =
            (devices / f64::from(s.fleet.chat_servers) * 1.25).min(f64::from(u32::MAX)) as u32;
        config.replication_factor = s.fleet.cassandra_replication_factor as u8;
        config.connection_timeout = Duration::from_millis(s.users.presence_ttl_ms);
        config.session_reregister = s.fleet.session_reregister;
        // The routers and fan-outs keep forwards for replay only in a run where a chat
        // server crashes: only then do they need to hear of the acknowledgements.
        config.acks_to_forwarders = !s.forwards_kept().is_zero();
        let me = shared.topo.node(NodeKind::ChatServer, i);
        config.incarnation = shared.faults.restarts_by(me, Time(shared.clock.now() * shared.tick_us)) as u32;
        let (fifo, service) = super::queue(
            shared,
            crate::topology::NodeKind::ChatServer,
            s.workers.chat_server,
            &s.service_us.chat_server,
        );
        ChatNode {
            server: ChatServer::new(config),
            topo: shared.topo.clone(),
            fifo,
            service,
            outs: Vec::new(),
            heartbeats: vec![(Vec::new(), Time::ZERO); shared.topo.count(NodeKind::Presence) as usize],
            peers: crate::faults::PeerNotices::default(),
            shared: shared.clone(),
            me: shared.topo.node(NodeKind::ChatServer, i),
            next_second: (shared.clock.now() * shared.tick_us).div_ceil(1_000_000),
        }
    }

    fn emit(&mut self, t: Time, ctx: &mut Ctx) {
        let ChatNode { server, topo, outs, heartbeats, shared, .. } = self;
        let topo = &**topo;
        let read_quorum = usize::from(server.read_quorum());
        for out in outs.drain(..) {
            match out {
                Out::ToDevice { device, frame } => {
                    trace_frame(ctx, t, device, &frame);
                    ctx.counters.chat_frames += 1;
                    ctx.counters.chat_frame_bytes += u64::from(frame.wire_bytes());
                    if let wasim_model::ServerFrame::Push { msg } = frame {
                        if msg.conversation.group_id().is_some() {
                            ctx.counters.group_pushes += 1;
                        }
                    }
                    if let wasim_model::ServerFrame::SentAck { msg } = frame {
                        if crate::check::quorum_sampled(&msg, &ctx.logs) {
                            // Stamped no earlier than the tick it is sent in: a late arrival
                            // (see `Ctx::tick_start`) may answer with an earlier stamp than
                            // the replica writes this server had already heard of.
                            ctx.logs.acks_sent.push((msg.id, t.max(ctx.tick_start)));
                        }
                    }
                    // One WebSocket: every frame keeps its order (a receipt overtaking the
                    // acceptance would reach a device that does not know it is connected).
                    let shard = topo.client_shard(device.user);
                    ctx.send_ordered(shard, t, Msg::ToDevice { device, frame }, OrderKey::Socket(device));
                }
                Out::SessionSet { req, device, server, epoch, ttl, cursor } => {
                    ctx.trace_device(t, "session_set_and_fetch_inbox", device);
                    let msg = Msg::SessionSet { req, device, server, epoch, ttl, cursor };
                    ctx.send_ordered(topo.redis(device.user), t, msg, OrderKey::Session(device.user))
                }
                Out::SessionRefresh { device, server, epoch, ttl } => {
                    let msg = Msg::SessionRefresh { device, server, epoch, ttl };
                    ctx.send_ordered(topo.redis(device.user), t, msg, OrderKey::Session(device.user))
                }
                Out::ForgetStoredReceipts { user, upto } => {
                    let msg = Msg::ForgetReceipts { user, upto };
                    ctx.send_ordered(topo.redis(user), t, msg, OrderKey::Session(user))
                }
                Out::SessionClear { device, server, epoch } => {
                    ctx.trace_device(t, "connection_closed", device);
                    let msg = Msg::SessionClear { device, server, epoch };
                    ctx.send_ordered(topo.redis(device.user), t, msg, OrderKey::Session(device.user))
                }
                Out::Presence(PresenceInput::Heartbeat { device }) => {
                    let i = topo.presence_shard(device.user);
                    let pending = &mut heartbeats[i as usize];
                    pending.0.push(device);
                    pending.1 = t;
                    if pending.0.len() == HEARTBEATS_PIPELINED_MAX {
                        flush_heartbeats(pending, topo.node(NodeKind::Presence, i), ctx);
                    }
                }
                Out::Presence(input) => {
                    let user = input.user();
                    ctx.send_ordered(topo.presence(user), t, Msg::Presence(input), OrderKey::Presence(user))
                }
                Out::Read { req, id, conversation } => {
                    for replica in topo.replicas(conversation).take(read_quorum) {
                        ctx.send(replica, t, Msg::Read { req, id, conversation });
                    }
                }
                Out::ReadAll { req, id, conversation } => {
                    for replica in topo.replicas(conversation) {
                        ctx.send(replica, t, Msg::Read { req, id, conversation });
                    }
                }
                Out::Persist { req, msg } => {
                    ctx.trace_msg(t, "persist", &msg, None);
                    for replica in topo.replicas(msg.conversation) {
                        ctx.send(replica, t, Msg::Write { req, msg });
                    }
                }
                Out::Publish { req, msg } => {
                    ctx.trace_msg(t, "publish", &msg, None);
                    let broker = shared.broker(topo.partition(msg.conversation), t);
                    ctx.send_ordered(broker, t, Msg::Produce { req, msg }, OrderKey::Conversation(msg.conversation))
                }
                Out::Reroute { msg, exclude, slot } => {
                    ctx.trace_msg(t, "reroute", &msg, None);
                    // Decided now: a session written after this is routed as it stands.
                    super::send_reroute(ctx, topo, t, msg, wasim_model::Exclusion::new(exclude, t), slot);
                }
                Out::RouteReceipt { req, receipt, exclude } => {
                    let sender = receipt.msg.from;
                    let exclude = exclude.map(|server| wasim_model::Exclusion::new(server, t));
                    let msg = Msg::RouteReceipt { req, receipt, exclude };
                    ctx.send_ordered(topo.redis(sender), t, msg, OrderKey::Session(sender))
                }
                Out::RelayReceipt { server, receipt } => ctx.send(topo.chat(server), t, Msg::ReceiptRelay { receipt }),
                Out::Subscribe { watcher, server, target } => {
                    let msg = Msg::PresenceSubscribe { watcher, server, target };
                    ctx.send_ordered(topo.presence(target), t, msg, OrderKey::Presence(target))
                }
                Out::Forward { server, slot, msg } => {
                    let key = OrderKey::Conversation(msg.conversation);
                    ctx.send_ordered(topo.chat(server), t, Msg::Forward { msg, slot }, key)
                }
                Out::Takeover { server, req, device, to, epoch } => {
                    ctx.trace_device(t, "takeover", device);
                    ctx.send(topo.chat(server), t, Msg::Takeover { req, device, to, epoch })
                }
                Out::Handover { server, req, slot, msg } => {
                    ctx.trace_msg(t, "handover", &msg, None);
                    ctx.send(topo.chat(server), t, Msg::Handover { req, slot, msg })
                }
                Out::TakeoverDone { server, req, parts } => {
                    ctx.send(topo.chat(server), t, Msg::TakeoverDone { req, parts })
                }
                Out::ReadHistory { conversation, before, limit } => {
                    let replica = topo.replicas(conversation).next().expect("a replica");
                    ctx.send(replica, t, Msg::ReadHistory { conversation, before, limit });
                }
                Out::Acked { id, conversation, device } => {
                    let partition = topo.partition(conversation);
                    let device = wasim_model::DeviceKey::of(device);
                    ctx.send(shared.consumer(partition, t), t, Msg::Acked { partition, id, device });
                }
                Out::WriteStatus { id, conversation, state } => {
                    for replica in topo.replicas(conversation) {
                        ctx.send(replica, t, Msg::StatusWrite { id, conversation, state });
                    }
                }
                Out::WriteGroupReceipt { receipt } => {
                    let group = receipt.msg.conversation.group_id().expect("a group message's receipt");
                    let position = shared.groups.position(group, receipt.by.user).expect("a receipt from a member");
                    let position = u16::try_from(position).expect("positions fit a group of at most 1,024");
                    for replica in topo.receipt_replicas(receipt.msg.id) {
                        ctx.send(replica, t, Msg::ReceiptRow { receipt, position });
                    }
                }
            }
        }
    }
}

/// A frame a device put on its WebSocket to this server: counted with its bytes, and
/// handed to the media check (invariant 9).
#[inline]
fn carried(ctx: &mut Ctx, t: Time, device: DeviceId, frame: &wasim_model::DeviceFrame, server: wasim_model::ServerId) {
    let bytes = frame.wire_bytes();
    ctx.counters.chat_frames += 1;
    ctx.counters.chat_frame_bytes += u64::from(bytes);
    if crate::check::frame_carried(&mut ctx.logs, t, device, server, frame, bytes) {
        ctx.counters.chat_frames_with_media_bytes += 1;
    }
}

/// Trace what a server sends a device, for the traced user's messages.
fn trace_frame(ctx: &mut Ctx, t: Time, device: DeviceId, frame: &wasim_model::ServerFrame) {
    use wasim_model::ServerFrame as S;
    match frame {
        S::ConnectAccepted { .. } => ctx.trace_device(t, "connect_accepted", device),
        S::SentAck { msg } => ctx.trace_msg(t, "sent_ack", msg, Some(device)),
        S::Push { msg } => ctx.trace_msg(t, "push", msg, Some(device)),
        S::Receipt { receipt, .. } => ctx.trace_msg(t, "receipt", &receipt.msg, Some(device)),
        S::GoAway { .. } => ctx.trace_device(t, "go_away", device),
        S::ConnectRefused { .. } | S::FetchDone { .. } | S::PresenceUpdate { .. } => {}
    }
}

impl Process for ChatNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        use wasim_model::{DeviceFrame as F, ReceiptState};
        // A receipt is issued (the server sends one for every delivered or read ACK): for
        // receipt liveness, on the messages the quorum check samples.
        // (A group member's ACK writes a row of the receipts table: the sender hears only of
        // the aggregate, which invariant 4 checks.)
        let issued = match env.msg {
            Msg::Device { frame: F::DeliveredAck { msg, .. }, .. } => Some((msg, ReceiptState::Delivered)),
            Msg::Device { frame: F::ReadAck { msg, .. }, .. } => Some((msg, ReceiptState::Read)),
            _ => None,
        }
        .filter(|(msg, _)| msg.conversation.group_id().is_none());
        if let Some((msg, state)) = issued {
            if crate::check::views_sampled(msg.client_id().key()) && ctx.logs.checks(msg.conversation) {
                let at = crate::check::LogMs::of(env.at);
                ctx.logs.receipts_issued.push((msg.client_id().key(), msg.id, msg.from, at, state));
            }
        }
        if let Msg::GroupForward { msg, count, devices } = env.msg {
            // One message for several devices connected here: each is a push of the
            // member's copy, served in turn; the frames leave when the batch is served.
            let mut done = env.at;
            for key in &devices[..usize::from(count)] {
                let device = key.device();
                done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
                let input = In::Forward { msg: wasim_model::ChatMessage { to: device.user, ..msg }, slot: device.slot };
                self.server.handle(self.shared.faults.clock(self.me, done), input, &mut self.outs);
            }
            self.emit(done, ctx);
            return;
        }
        let input = match env.msg {
            Msg::Device { device, frame } => {
                carried(ctx, env.at, device, &frame, self.server.id());
                In::Frame { device, frame }
            }
            Msg::GroupAggregate { receipt } => In::GroupAggregate { receipt },
            Msg::HistoryPage { rows } => {
                // The page would go on to the app, which renders it: not modelled past the
                // server (the device has the messages it shows; the read's cost is the point).
                ctx.counters.history_pages += 1;
                ctx.counters.history_rows += u64::from(rows);
                return;
            }
            Msg::WriteAck { req } => In::WriteAck { req, replica: env.from.0 },
            Msg::ReadReply { req, held } => In::ReadReply { req, held, replica: env.from.0 },
            Msg::InboxEntry { req, pos, msg } => In::InboxEntry { req, pos, msg },
            Msg::StoredReceipt { req, receipt, stored } => In::StoredReceipt { req, receipt, stored },
            Msg::InboxEnd { req, end, parts, previous } => In::InboxEnd { req, end, parts, previous },
            Msg::Takeover { req, device, to, epoch } => In::Takeover { req, device, to, epoch },
            Msg::Handover { req, slot, msg } => In::Handover { req, slot, msg },
            Msg::TakeoverDone { req, parts } => In::TakeoverDone { req, parts },
            Msg::ReceiptRouted { req, server } => In::ReceiptRouted { req, server },
            Msg::PresenceNotify { watcher, update } => In::PresenceNotify { watcher, update },
            Msg::ProduceAck { req } => In::ProduceAck { req },
            Msg::Forward { msg, slot } => In::Forward { msg, slot },
            Msg::ReceiptRelay { receipt } => In::ReceiptRelay { receipt },
            Msg::Rerouted { msg, route, slot } => In::Rerouted { msg, route, slot },
            Msg::SessionRefreshed { device, epoch, changed } => In::SessionRefreshed { device, epoch, changed },
            other => unreachable!("chat server got {other:?}"),
        };
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        // The server reads its own clock (skewed by a fault); what it sends leaves on time.
        self.server.handle(self.shared.faults.clock(self.me, done), input, &mut self.outs);
        self.emit(done, ctx);
    }

    /// The connection an arrival will look up: the device's own, or for a receipt, the
    /// sender's phone it goes to.
    #[inline]
    fn prefetch(&self, env: &Envelope) {
        use wasim_model::DeviceFrame as F;
        let device = match env.msg {
            // A member's ACK of a group message writes its receipts row, at its position.
            Msg::Device { device, frame: F::DeliveredAck { msg, .. } | F::ReadAck { msg, .. } } => {
                // The device's holding (the push it acknowledges) is touched either way.
                self.server.prefetch(device);
                match msg.conversation.group_id() {
                    Some(group) => {
                        self.shared.groups.prefetch_position(group, device.user);
                        return;
                    }
                    None => DeviceId::phone(msg.from),
                }
            }
            Msg::GroupForward { count, devices, .. } => {
                for key in &devices[..usize::from(count)] {
                    self.server.prefetch(key.device());
                }
                return;
            }
            Msg::Device { device, .. } => device,
            Msg::Forward { msg, slot } => DeviceId { user: msg.to, slot },
            Msg::ReceiptRelay { receipt } => DeviceId::phone(receipt.msg.from),
            Msg::PresenceNotify { watcher, .. } => watcher,
            _ => return,
        };
        self.server.prefetch(device);
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        // The connections held as each simulated second starts, for the connections plot.
        let seconds = self.shared.scenario.total_s() + 1;
        while now.as_us() >= self.next_second * 1_000_000 && self.next_second < seconds {
            let server = u64::from(self.server.id().0);
            let slot = &self.shared.chat_connections[(server * seconds + self.next_second) as usize];
            slot.store(self.server.connection_count(), std::sync::atomic::Ordering::Relaxed);
            self.next_second += 1;
        }
        let (servers, failovers) = self.peers.notices(&self.shared.faults, now);
        let clock = self.shared.faults.clock(self.me, now);
        for (server, down) in servers {
            if server != self.server.id() {
                let input = if down { In::ServerDown { server } } else { In::ServerUp { server } };
                self.server.handle(clock, input, &mut self.outs);
            }
        }
        let shards = self.topo.count(NodeKind::Redis);
        for shard in failovers {
            self.server.handle(clock, In::SessionShardFailover { shard, shards }, &mut self.outs);
        }
        self.server.handle_timeout(clock, &mut self.outs);
        self.emit(now, ctx);
        for (i, pending) in self.heartbeats.iter_mut().enumerate() {
            if !pending.0.is_empty() {
                flush_heartbeats(pending, self.topo.node(NodeKind::Presence, i as u32), ctx);
            }
        }
    }

    fn queue(&self) -> Option<&Fifo> {
        Some(&self.fifo)
    }

    fn finish(&mut self, report: &mut NodeReport) {
        self.fifo.report_into(report);
        report.gauge_end = u64::from(self.server.connection_count());
        report.counters.repushes += self.server.repushes();
        let (writes, reads) = self.server.retried();
        report.counters.writes_retried += writes;
        report.counters.reads_retried += reads;
        let (takeovers, given_up) = self.server.takeovers();
        report.counters.takeovers += takeovers;
        report.counters.connections_given_up += given_up;
        let (refreshes, go_aways) = self.server.reregistered();
        report.counters.sessions_reregistered += refreshes;
        report.counters.devices_sent_away += go_aways;
        // Catch-ups held up at the end by a read whose row had no quorum of replicas up, with
        // when a quorum was back (the end: not yet).
        let end = Time(self.shared.clock.now() * self.shared.tick_us);
        let quorum = usize::from(self.server.read_quorum());
        for (device, conversation) in self.server.reads_waiting() {
            let replicas: Vec<NodeIdx> = self.shared.topo.replicas(conversation).collect();
            if let Some(back) = self.shared.faults.quorum_back(&replicas, quorum, end) {
                report.logs.catch_ups_blocked.push((wasim_model::DeviceKey::of(device), LogMs::of(back)));
            }
        }
    }
}
