//! A client-population shard: the devices of users `u` with `u % shards == shard`, and
//! the workload they generate. Devices live outside the chat servers, so a crashed
//! server drops connections but not phones.

use crate::check::{Display, LogMs, PresenceView};
use crate::dist::Sampler;
use crate::metrics::{record_us, Latencies, NodeReport};
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, Process, Shared};
use crate::population::Population;
use crate::scenario::Fault;
use crate::topology::{NodeKind, Topology};
use rand::Rng;
use rand_distr::Exp1;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;
use wasim_model::{
    device_key, ChatMessage, ClientDevice, DeviceEvent, DeviceId, DeviceSlot, DeviceState, Displayed, PresenceCause,
    Receipt, ReceiptState, SentMessages, ServerId, Time, UserId, DEVICES_PER_USER_MAX,
};

/// Read-delay buckets: a read is scheduled to within this.
const READ_BUCKET_US: u64 = 100_000;
/// Reads further ahead than this are made at this horizon (the delay distribution's far
/// tail; the sampler caps samples at 60 s anyway).
const READ_HORIZON_US: u64 = 65_000_000;
/// A device whose network comes back reconnects after a jitter of up to this, so that
/// many devices cut together do not reconnect in the same millisecond.
const RECONNECT_JITTER_US: u64 = 2_000_000;

pub(crate) struct ClientShard {
    shard: u32,
    shards: u32,
    topo: Arc<Topology>,
    pop: Population,
    /// Local user `i` (user `i * shards + shard`) has devices `i * slots + slot`.
    devices: Vec<ClientDevice>,
    /// Device slots per user: 1 when nobody has a web client, else 2 (phone, web).
    slots: usize,
    sent: SentMessages,
    displayed: Displayed,
    /// Arrivals held while a device catches up, with when it started catching up.
    held: FxHashMap<u32, (Time, Vec<ChatMessage>)>,
    /// When devices became live again after the measuring window began (reconnects):
    /// messages sent before that did not find them online.
    live_since: FxHashMap<u32, Time>,
    /// Devices that connected at least once (web clients are known to the session store,
    /// and owed messages, only from then on).
    registered: rustc_hash::FxHashSet<u32>,
    reads: Vec<Vec<(u32, ChatMessage)>>,
    next_read_bucket: u64,
    read_delay: Sampler,
    latencies: Latencies,
    /// Initial connects: local user `i` connects at `ramp_us * i / users`.
    next_connect: usize,
    ramp_us: u64,
    /// Reconnects after a network cut or a closed app: (time, device index).
    reconnects: BinaryHeap<Reverse<(Time, usize)>>,
    /// The Poisson process of app closes over the shard's phones.
    next_close_at: Time,
    mean_close_gap_us: f64,
    app_closed: Sampler,
    /// Network cuts of this shard's users: (local user, from, until), and progress.
    cuts: Vec<(usize, Time, Time)>,
    cuts_started: usize,
    /// Windows in which delivered ACKs are lost, with the loss probability.
    ack_loss: Vec<(Time, Time, f64)>,
    /// The Poisson send process of the whole shard.
    next_send_at: Time,
    mean_gap_us: f64,
    contacts: u32,
    heartbeat_ticks: u64,
    tick_us: u64,
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
        let pop = shared.population.clone();
        let slots = if s.users.devices_per_user.web > 0.0 { DEVICES_PER_USER_MAX } else { 1 };
        let user = |i: usize| UserId(i as u32 * shards + shard);
        let mut cuts: Vec<(usize, Time, Time)> =
            (0..local).filter_map(|i| pop.cut(user(i)).map(|(from, until)| (i, from, until))).collect();
        cuts.sort_by_key(|&(i, from, _)| (from, i));
        let ack_loss = s
            .faults
            .iter()
            .filter_map(|f| match *f {
                Fault::LoseDeliveredAcks { at_s, for_s, share } => {
                    Some((Time::from_secs(at_s), Time::from_secs(at_s + for_s), share))
                }
                _ => None,
            })
            .collect();
        ClientShard {
            shard,
            shards,
            topo: shared.topo.clone(),
            pop,
            devices: vec![ClientDevice::default(); local * slots],
            slots,
            sent: SentMessages::default(),
            displayed: Displayed::default(),
            held: FxHashMap::default(),
            live_since: FxHashMap::default(),
            registered: Default::default(),
            reads: vec![Vec::new(); (READ_HORIZON_US / READ_BUCKET_US) as usize + 2],
            next_read_bucket: 0,
            read_delay: Sampler::new(&s.workload.read_delay_ms, 1_000.0),
            latencies: Latencies::default(),
            next_connect: 0,
            ramp_us: s.users.connect_ramp_s * 1_000_000,
            reconnects: BinaryHeap::new(),
            next_close_at: Time(s.users.connect_ramp_s * 1_000_000),
            mean_close_gap_us: 3_600e6 / (s.workload.app_closes_per_hour * local as f64),
            app_closed: Sampler::new(&s.workload.app_closed_ms, 1_000.0),
            cuts,
            cuts_started: 0,
            ack_loss,
            next_send_at: Time::ZERO,
            mean_gap_us: 1.0 / rate_per_us,
            contacts: s.users.contacts_per_user,
            heartbeat_ticks: (s.users.heartbeat_interval_ms * 1_000 / s.tick_us).max(1),
            tick_us: s.tick_us,
            measure: (shared.measure_from(), shared.measure_until()),
        }
    }

    fn users(&self) -> usize {
        self.devices.len() / self.slots
    }

    fn user(&self, i: usize) -> UserId {
        UserId(i as u32 * self.shards + self.shard)
    }

    fn index(&self, d: DeviceId) -> usize {
        debug_assert_eq!(d.user.0 % self.shards, self.shard);
        (d.user.0 / self.shards) as usize * self.slots + usize::from(d.slot.0)
    }

    fn device_at(&self, index: usize) -> DeviceId {
        DeviceId { user: self.user(index / self.slots), slot: DeviceSlot((index % self.slots) as u8) }
    }

    fn measured(&self, sent_at: Time) -> bool {
        sent_at >= self.measure.0 && sent_at < self.measure.1
    }

    /// Whether the device's network is cut at `t`.
    fn cut(&self, d: DeviceId, t: Time) -> bool {
        !self.cuts.is_empty() && self.pop.cut(d.user).is_some_and(|(from, until)| t >= from && t < until)
    }

    /// The `j`th contact of `u`: a fixed pseudo-random other user, so the social graph
    /// costs no memory.
    fn contact(&self, u: UserId, j: u32) -> UserId {
        let n = self.topo.users;
        let h = UserId(u.0 ^ j.rotate_left(24)).hash64() ^ u64::from(j);
        // n <= a billion: the other user is u + 1 + (h mod n - 1), wrapped below n.
        let other = u64::from(u.0) + 1 + u64::from(wasim_model::fast_range(h, (n - 1) as u32));
        UserId(if other >= n { other - n } else { other } as u32)
    }

    fn connect(&mut self, index: usize, server: ServerId, t: Time, ctx: &mut Ctx) {
        let device = self.device_at(index);
        let (cursor, epoch) = self.devices[index].connect();
        let hide_last_seen = self.pop.hides_last_seen(device.user);
        ctx.trace_device(t, "connect", device);
        ctx.send(self.topo.chat(server), t, Msg::Connect { device, epoch, cursor, hide_last_seen });
    }

    /// Send a delivered ACK for a message the device got at `now`, unless the network
    /// loses it (fault): the server then pushes the message again on the next heartbeat,
    /// and the device acknowledges it again.
    fn ack_delivered(&mut self, device: DeviceId, server: ServerId, msg: ChatMessage, now: Time, ctx: &mut Ctx) {
        let loss = self.ack_loss.iter().find(|&&(from, until, _)| now >= from && now < until).map(|w| w.2);
        if loss.is_some_and(|p| ctx.rng.random::<f64>() < p) {
            ctx.counters.acks_lost += 1;
            ctx.trace_msg(now, "delivered_ack_lost", &msg, Some(device));
        } else {
            ctx.trace_msg(now, "delivered_ack", &msg, Some(device));
            ctx.send(self.topo.chat(server), now, Msg::DeliveredAck { device, msg, at: now });
        }
    }

    /// Show a message on a device (once), schedule its reading, and measure it.
    fn show(&mut self, device: DeviceId, msg: ChatMessage, t: Time, fetched: bool, ctx: &mut Ctx) {
        if !self.displayed.show(device, &msg) {
            // Shown already: a push repeated because the first ACK was lost, or a fetch
            // of something pushed before. It was acknowledged again on arrival.
            ctx.counters.duplicates_dropped += 1;
            ctx.counters.acks_resent += 1;
            return;
        }
        let index = self.index(device);
        self.devices[index].on_shown(msg.id);
        let key = device_key(device);
        ctx.logs.displays.push(Display { device: key, at: LogMs::of(t), conversation: msg.conversation, id: msg.id });
        ctx.trace_msg(t, if fetched { "displayed_after_fetch" } else { "displayed" }, &msg, Some(device));
        ctx.second(t).deliveries += 1;
        if fetched {
            ctx.counters.fetched += 1;
        }
        let online_at_send = self.live_since.get(&key).is_none_or(|&since| since <= msg.sent_at);
        if self.measured(msg.sent_at) && online_at_send && !fetched {
            record_us(&mut self.latencies.delivery, t.as_us() - msg.sent_at.as_us());
            ctx.counters.deliveries_measured += 1;
        }
        if device.slot.0 == 0 {
            let read_at = (t + self.read_delay.sample(&mut ctx.rng)).as_us().min(t.as_us() + READ_HORIZON_US);
            let bucket = read_at.div_ceil(READ_BUCKET_US).max(self.next_read_bucket);
            let len = self.reads.len() as u64;
            self.reads[(bucket % len) as usize].push((key, msg));
        }
    }

    fn on_push(&mut self, env: &Envelope, device: DeviceId, msg: ChatMessage, ctx: &mut Ctx) {
        if self.cut(device, env.at) {
            return; // lost on the way: the server keeps it unacknowledged
        }
        match self.devices[self.index(device)].on_push() {
            DeviceEvent::Show { server } => {
                self.ack_delivered(device, server, msg, env.at, ctx);
                self.show(device, msg, env.at, false, ctx);
            }
            DeviceEvent::Hold { server } => {
                self.ack_delivered(device, server, msg, env.at, ctx);
                if let Some((_, held)) = self.held.get_mut(&device_key(device)) {
                    held.push(msg);
                }
            }
            DeviceEvent::Ignore => {}
        }
    }

    fn on_connected(&mut self, device: DeviceId, server: ServerId, t: Time, ctx: &mut Ctx) {
        let index = self.index(device);
        if self.cut(device, t) || self.devices[index].state() != DeviceState::Connecting {
            return; // the reply was lost with the network, or is stale
        }
        self.devices[index].on_connected(server);
        self.held.insert(device_key(device), (t, Vec::new()));
        if self.registered.insert(device_key(device)) {
            ctx.logs.registered.push((device_key(device), t));
        }
        ctx.counters.connects += 1;
        if device.slot.0 == 0 && self.pop.watches(device.user) {
            let target = self.contact(device.user, 0);
            ctx.send(self.topo.chat(server), t, Msg::Subscribe { device, target });
        }
    }

    fn on_fetch_done(&mut self, device: DeviceId, t: Time, ctx: &mut Ctx) {
        let index = self.index(device);
        self.devices[index].on_fetch_done();
        let Some((since, mut held)) = self.held.remove(&device_key(device)) else { return };
        ctx.trace_device(t, "fetch_done", device);
        // Fetched messages came first on the socket, live ones after: show all in id order.
        held.sort_unstable_by_key(|m| m.id);
        for msg in held {
            self.show(device, msg, t, true, ctx);
        }
        if t >= self.measure.0 {
            self.live_since.insert(device_key(device), t);
            if t < self.measure.1 {
                record_us(&mut self.latencies.catch_up, t.as_us() - since.as_us());
            }
        }
    }

    fn on_receipt(&mut self, receipt: Receipt, t: Time, ctx: &mut Ctx) {
        let msg = receipt.msg;
        let id = msg.client_id();
        if let Some((before, after)) = self.sent.on_receipt(id, receipt.event()) {
            let shown = after.unwrap_or(ReceiptState::Read);
            ctx.logs.sender_views.push((id.key(), shown, LogMs::of(t)));
            if before < Some(ReceiptState::Delivered) && self.measured(msg.sent_at) {
                ctx.counters.double_ticks_measured += 1;
            }
        }
        ctx.trace_msg(
            t,
            if receipt.state == ReceiptState::Read { "read_receipt_seen" } else { "receipt_seen" },
            &msg,
            None,
        );
        match receipt.state {
            ReceiptState::Read => {
                ctx.counters.read_receipts += 1;
                ctx.logs.reads.push((msg.id, device_key(receipt.by), LogMs::of(t)));
                if self.measured(msg.sent_at) {
                    record_us(&mut self.latencies.read_receipt, t.as_us().saturating_sub(receipt.at.as_us()));
                }
            }
            _ => {
                if self.measured(msg.sent_at) {
                    record_us(&mut self.latencies.receipt, t.as_us().saturating_sub(receipt.at.as_us()));
                    ctx.counters.receipts_measured += 1;
                }
                ctx.second(t).receipts += 1;
            }
        }
    }

    fn on_presence(&mut self, device: DeviceId, update: wasim_model::PresenceUpdate, t: Time, ctx: &mut Ctx) {
        ctx.counters.presence_updates += 1;
        if matches!(update.status, wasim_model::PresenceStatus::Offline { last_seen: Some(_) }) {
            ctx.counters.last_seen_shown += 1;
        }
        ctx.logs.presence_views.push(PresenceView { watcher: device_key(device), update, received_at: t });
        let measured = update.changed_at >= self.measure.0 && update.changed_at < self.measure.1;
        match update.cause {
            PresenceCause::Connected | PresenceCause::Disconnected if measured => {
                record_us(&mut self.latencies.presence, t.as_us() - update.changed_at.as_us());
            }
            PresenceCause::Expired => {
                if let Some((lost_at, _)) = self.pop.cut(update.target) {
                    record_us(&mut self.latencies.presence_detection, t.as_us().saturating_sub(lost_at.as_us()));
                }
            }
            _ => {}
        }
    }

    fn tick_connects(&mut self, now: Time, ctx: &mut Ctx) {
        let users = self.users();
        while self.next_connect < users {
            let i = self.next_connect;
            let t = Time(self.ramp_us * i as u64 / users as u64);
            if t > now {
                break;
            }
            let user = self.user(i);
            let home = self.topo.home_server(user);
            self.connect(i * self.slots, home, t, ctx);
            if self.pop.has_web(user) {
                self.connect(i * self.slots + 1, home, t, ctx);
            }
            self.next_connect += 1;
        }
        while let Some(&Reverse((t, index))) = self.reconnects.peek() {
            if t > now {
                break;
            }
            self.reconnects.pop();
            ctx.counters.reconnects += 1;
            let home = self.topo.home_server(self.device_at(index).user);
            self.connect(index, home, t, ctx);
        }
    }

    fn tick_cuts(&mut self, now: Time, ctx: &mut Ctx) {
        while let Some(&(i, from, until)) = self.cuts.get(self.cuts_started) {
            if from > now {
                break;
            }
            self.cuts_started += 1;
            let user = self.user(i);
            for slot in 0..self.slots {
                let index = i * self.slots + slot;
                if slot == 1 && !self.pop.has_web(user) {
                    continue;
                }
                let device = self.device_at(index);
                ctx.trace_device(from, "network_cut", device);
                self.devices[index].on_disconnected();
                self.held.remove(&device_key(device));
                let jitter = Duration::from_micros(ctx.rng.random_range(0..RECONNECT_JITTER_US));
                self.reconnects.push(Reverse((until + jitter, index)));
            }
        }
    }

    /// Users close the app (a clean disconnect of the phone) and open it again later.
    fn tick_app_closes(&mut self, now: Time, ctx: &mut Ctx) {
        while self.next_close_at <= now && self.next_close_at < self.measure.1 && self.mean_close_gap_us.is_finite() {
            let t = self.next_close_at;
            let gap_ns = self.mean_close_gap_us * 1e3 * ctx.rng.sample::<f64, _>(Exp1);
            self.next_close_at = t + Duration::from_nanos(gap_ns as u64);
            let index = ctx.rng.random_range(0..self.users()) * self.slots;
            let device = self.device_at(index);
            let Some(server) = self.devices[index].server() else { continue };
            if self.cut(device, t) {
                continue;
            }
            ctx.trace_device(t, "app_closed", device);
            let epoch = self.devices[index].epoch();
            ctx.send(self.topo.chat(server), t, Msg::Disconnect { device, epoch });
            self.devices[index].on_disconnected();
            self.held.remove(&device_key(device));
            let back = t + self.app_closed.sample(&mut ctx.rng);
            self.reconnects.push(Reverse((back, index)));
        }
    }

    fn tick_heartbeats(&mut self, tick: u64, now: Time, ctx: &mut Ctx) {
        // Bulk work per tick: device `d` beats in the ticks where tick % P == d % P.
        let period = self.heartbeat_ticks as usize;
        let mut index = (tick % self.heartbeat_ticks) as usize;
        while index < self.devices.len() {
            if let Some(server) = self.devices[index].server() {
                let device = self.device_at(index);
                if !self.cut(device, now) {
                    ctx.counters.heartbeats += 1;
                    ctx.send(self.topo.chat(server), now, Msg::Heartbeat { device });
                }
            }
            index += period;
        }
    }

    fn tick_reads(&mut self, now: Time, ctx: &mut Ctx) {
        let due = now.as_us() / READ_BUCKET_US;
        let len = self.reads.len() as u64;
        while self.next_read_bucket <= due {
            let bucket = std::mem::take(&mut self.reads[(self.next_read_bucket % len) as usize]);
            for (key, msg) in bucket {
                let device = DeviceId { user: UserId(key >> 1), slot: DeviceSlot((key & 1) as u8) };
                let Some(server) = self.devices[self.index(device)].server() else { continue };
                if self.cut(device, now) || self.pop.read_receipts_off(device.user) {
                    continue;
                }
                ctx.counters.reads_sent += 1;
                ctx.trace_msg(now, "read", &msg, Some(device));
                ctx.send(self.topo.chat(server), now, Msg::ReadAck { device, msg, at: now });
            }
            self.next_read_bucket += 1;
        }
    }

    fn tick_sends(&mut self, now: Time, ctx: &mut Ctx) {
        while self.next_send_at <= now && self.next_send_at < self.measure.1 {
            let t = self.next_send_at;
            let gap_ns = self.mean_gap_us * 1e3 * ctx.rng.sample::<f64, _>(Exp1);
            self.next_send_at = t + Duration::from_nanos(gap_ns as u64);
            // Poisson sends from online phones: a draw that lands on a phone without a
            // connection is not a send.
            let i = ctx.rng.random_range(0..self.users());
            let from = self.user(i);
            let to = self.contact(from, ctx.rng.random_range(0..self.contacts));
            let phone = DeviceId::phone(from);
            if self.cut(phone, t) {
                continue;
            }
            let Some(send) = self.devices[i * self.slots].send(to, t) else { continue };
            self.sent.on_send(wasim_model::ClientMsgId { sender: from, seq: send.client_seq });
            ctx.counters.sends += 1;
            if self.measured(t) {
                ctx.counters.sends_measured += 1;
            }
            ctx.second(t).sends += 1;
            if ctx.traces(from) || ctx.traces(to) {
                ctx.trace_device(t, "send", phone);
            }
            let msg = Msg::Send { device: phone, to, client_seq: send.client_seq, sent_at: t };
            ctx.send(self.topo.chat(send.server), t, msg);
        }
    }
}

impl Process for ClientShard {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        let t = env.at;
        match env.msg {
            Msg::ConnectAccepted { device, server } => self.on_connected(device, server, t, ctx),
            Msg::ConnectRefused { device } => {
                // Try the next server round the ring; give up after a full circle.
                ctx.counters.connects_refused += 1;
                let (_, refused_by) = self.topo.locate(env.from);
                let next = ServerId(((refused_by + 1) % self.topo.count(NodeKind::ChatServer)) as u16);
                if next == self.topo.home_server(device.user) {
                    ctx.counters.connects_failed += 1;
                } else {
                    let index = self.index(device);
                    self.connect(index, next, t, ctx);
                }
            }
            Msg::SentAck { device, msg } => {
                debug_assert_eq!(device.user, msg.from, "✓ goes to the sender");
                if self.cut(device, t) {
                    return;
                }
                if self.measured(msg.sent_at) {
                    record_us(&mut self.latencies.sent_ack, t.as_us() - msg.sent_at.as_us());
                    ctx.counters.sent_acks_measured += 1;
                }
                ctx.second(t).sent_acks += 1;
                ctx.logs.acked.push((msg.id, msg.to, LogMs::of(t)));
                let id = msg.client_id();
                if self.sent.on_server_ack(id) {
                    ctx.logs.sender_views.push((id.key(), ReceiptState::Sent, LogMs::of(t)));
                }
            }
            Msg::Push { device, msg } => self.on_push(env, device, msg, ctx),
            Msg::FetchDone { device } => {
                if !self.cut(device, t) {
                    self.on_fetch_done(device, t, ctx);
                }
            }
            Msg::Receipt { device, receipt } => {
                debug_assert_eq!(device.user, receipt.msg.from, "receipts go to the sender");
                if !self.cut(device, t) {
                    self.on_receipt(receipt, t, ctx);
                }
            }
            Msg::PresenceUpdate { device, update } => {
                if !self.cut(device, t) {
                    self.on_presence(device, update, t, ctx);
                }
            }
            other => unreachable!("client shard got {other:?}"),
        }
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        let tick = now.as_us() / self.tick_us;
        self.tick_cuts(now, ctx);
        self.tick_app_closes(now, ctx);
        self.tick_connects(now, ctx);
        self.tick_heartbeats(tick, now, ctx);
        self.tick_reads(now, ctx);
        self.tick_sends(now, ctx);
    }

    fn finish(&mut self, report: &mut NodeReport) {
        report.latencies = Some(std::mem::take(&mut self.latencies));
        report.gauge_end = self.sent.in_flight() as u64;
        for (index, d) in self.devices.iter().enumerate() {
            if d.state() == DeviceState::Live {
                let device = self.device_at(index);
                report.logs.live_devices.push((device.user, device.slot.0));
            }
        }
    }
}
