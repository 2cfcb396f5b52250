//! A client-population shard: the phones of users `u` with `u % shards == shard`, and the
//! workload they generate. Phones live outside the chat servers, so a crashed server
//! drops connections but not phones.

use crate::metrics::{record_us, Latencies, NodeReport};
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, Process, Shared};
use crate::topology::{NodeKind, Topology};
use rand::Rng;
use rand_distr::Exp1;
use std::sync::Arc;
use wasim_model::{ClientDevice, DeviceEvent, DeviceId, ReceiptEvent, SentMessages, ServerId, Time, UserId};

pub(crate) struct ClientShard {
    shard: u32,
    shards: u32,
    topo: Arc<Topology>,
    /// One device per local user: local index `i` is user `i * shards + shard`.
    devices: Vec<ClientDevice>,
    sent: SentMessages,
    latencies: Latencies,
    /// Initial connects: local user `i` connects at `ramp_us * i / len`.
    next_connect: usize,
    ramp_us: u64,
    /// The Poisson send process of the whole shard.
    next_send_at: Time,
    mean_gap_us: f64,
    contacts: u32,
    measure: (Time, Time),
}

impl ClientShard {
    pub fn new(shared: &Shared, shard: u32) -> ClientShard {
        let s = &shared.scenario;
        let shards = s.fleet.client_shards;
        let users = s.users.concurrent;
        let local = (users - u64::from(shard)).div_ceil(u64::from(shards)) as usize;
        // This shard's share of the offered load, when all of its users are online.
        let rate_per_us = s.workload.messages_per_s as f64 * local as f64 / users as f64 / 1e6;
        ClientShard {
            shard,
            shards,
            topo: shared.topo.clone(),
            devices: vec![ClientDevice::default(); local],
            sent: SentMessages::default(),
            latencies: Latencies::default(),
            next_connect: 0,
            ramp_us: s.users.connect_ramp_s * 1_000_000,
            next_send_at: Time::ZERO,
            mean_gap_us: 1.0 / rate_per_us,
            contacts: s.users.contacts_per_user,
            measure: (shared.measure_from(), shared.measure_until()),
        }
    }

    fn user(&self, i: usize) -> UserId {
        UserId(i as u32 * self.shards + self.shard)
    }

    fn local(&self, u: UserId) -> usize {
        debug_assert_eq!(u.0 % self.shards, self.shard);
        (u.0 / self.shards) as usize
    }

    fn measured(&self, sent_at: Time) -> bool {
        sent_at >= self.measure.0 && sent_at < self.measure.1
    }

    /// The `j`th contact of `u`: a fixed pseudo-random other user, so the social graph
    /// costs no memory.
    fn contact(&self, u: UserId, j: u32) -> UserId {
        let n = self.topo.users;
        let h = UserId(u.0 ^ j.rotate_left(24)).hash64() ^ u64::from(j);
        UserId(((u64::from(u.0) + 1 + h % (n - 1)) % n) as u32)
    }

    fn connect_time(&self, i: usize) -> Time {
        Time(self.ramp_us * i as u64 / self.devices.len() as u64)
    }

    fn connect(&mut self, i: usize, server: ServerId, t: Time, ctx: &mut Ctx) {
        let device = DeviceId::phone(self.user(i));
        ctx.send(self.topo.chat(server), t, Msg::Connect { device });
    }

    fn on_push(&mut self, env: &Envelope, device: DeviceId, msg: wasim_model::ChatMessage, ctx: &mut Ctx) {
        let i = self.local(device.user);
        if let DeviceEvent::AckDelivered { server } = self.devices[i].on_push() {
            if self.measured(msg.sent_at) {
                record_us(&mut self.latencies.delivery, env.at.as_us() - msg.sent_at.as_us());
                ctx.counters.deliveries_measured += 1;
            }
            ctx.second(env.at).deliveries += 1;
            ctx.send(self.topo.chat(server), env.at, Msg::DeliveredAck { device, msg, acked_at: env.at });
        }
    }
}

impl Process for ClientShard {
    fn on_message(&mut self, env: Envelope, ctx: &mut Ctx) {
        match env.msg {
            Msg::ConnectAccepted { device, server } => {
                let i = self.local(device.user);
                self.devices[i].on_connected(server);
                ctx.counters.connects += 1;
            }
            Msg::ConnectRefused { device } => {
                // Try the next server round the ring; give up after a full circle.
                ctx.counters.connects_refused += 1;
                let (_, refused_by) = self.topo.locate(env.from);
                let next = ServerId(((refused_by + 1) % self.topo.count(NodeKind::ChatServer)) as u16);
                if next == self.topo.home_server(device.user) {
                    ctx.counters.connects_failed += 1;
                } else {
                    let i = self.local(device.user);
                    self.connect(i, next, env.at, ctx);
                }
            }
            Msg::SentAck { device, msg } => {
                debug_assert_eq!(device.user, msg.from, "✓ goes to the sender");
                if self.measured(msg.sent_at) {
                    record_us(&mut self.latencies.sent_ack, env.at.as_us() - msg.sent_at.as_us());
                    ctx.counters.sent_acks_measured += 1;
                }
                ctx.second(env.at).sent_acks += 1;
                self.sent.on_server_ack(msg.client_id());
            }
            Msg::Push { device, msg } => self.on_push(&env, device, msg, ctx),
            Msg::Receipt { device, msg, acked_at } => {
                debug_assert_eq!(device.user, msg.from, "✓✓ goes to the sender");
                if self.measured(msg.sent_at) {
                    record_us(&mut self.latencies.receipt, env.at.as_us() - acked_at.as_us());
                    ctx.counters.receipts_measured += 1;
                }
                ctx.second(env.at).receipts += 1;
                self.sent.on_receipt(msg.client_id(), ReceiptEvent::DeliveredAck);
            }
            other => unreachable!("client shard got {other:?}"),
        }
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        while self.next_connect < self.devices.len() && self.connect_time(self.next_connect) <= now {
            let i = self.next_connect;
            let t = self.connect_time(i);
            self.connect(i, self.topo.home_server(self.user(i)), t, ctx);
            self.next_connect += 1;
        }
        while self.next_send_at <= now && self.next_send_at < self.measure.1 {
            let t = self.next_send_at;
            self.next_send_at =
                t + std::time::Duration::from_nanos((self.mean_gap_us * 1e3 * ctx.rng.sample::<f64, _>(Exp1)) as u64);
            // Poisson sends from online users: a draw that lands on a user not yet
            // connected is not a send.
            let i = ctx.rng.random_range(0..self.devices.len());
            let from = self.user(i);
            let to = self.contact(from, ctx.rng.random_range(0..self.contacts));
            let Some(send) = self.devices[i].send(to, t) else { continue };
            ctx.counters.sends += 1;
            if self.measured(t) {
                ctx.counters.sends_measured += 1;
            }
            ctx.second(t).sends += 1;
            let msg = Msg::Send { device: DeviceId::phone(from), to, client_seq: send.client_seq, sent_at: t };
            ctx.send(self.topo.chat(send.server), t, msg);
        }
    }

    fn finish(&mut self, report: &mut NodeReport) {
        report.latencies = Some(std::mem::take(&mut self.latencies));
        report.gauge_end = self.sent.in_flight() as u64;
    }
}
