//! A client-population shard: the devices of users `u` with `u % shards == shard`, and
//! the workload they generate. The devices' behaviour is `wasim_model::Devices`; this
//! process draws the workload (connects, sends, reads, app closes), applies the faults
//! that hit devices (network cuts, lost ACKs), carries frames, and measures. Devices live
//! outside the chat servers, so a crashed server drops connections but not phones.

use crate::check::{ConnectedAtEnd, Display, LogMs, PresenceView};
use crate::dist::Sampler;
use crate::metrics::{record_us, Latencies, NodeReport, SecondLatencies};
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, Process, Shared, Stream};
use crate::population::Population;
use crate::scenario::Fault;
use crate::topology::Topology;
use crate::workload::{HeartbeatPhases, ReadWheel};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::Exp1;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;
use wasim_model::{
    Backoff, DeviceConfig, DeviceFrame, DeviceId, DeviceInput, DeviceKey, DeviceOutput, DeviceState, Devices, GroupId,
    Layout, PresenceCause, PresenceStatus, PresenceUpdate, Receipt, ReceiptState, Recipient, ServerFrame, ServerId,
    Time, UserId, UserSettings, DEVICES_PER_USER_MAX,
};

/// The workload's random streams, one per purpose (see `Stream`).
struct WorkloadRng {
    sends: ChaCha8Rng,
    closes: ChaCha8Rng,
    reads: ChaCha8Rng,
    faults: ChaCha8Rng,
    group_sends: ChaCha8Rng,
}

/// What a device's timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The user opens the app again.
    Open,
    /// A reconnect attempt the device asked for.
    Retry,
    /// The device's network comes back (a cut ends).
    NetworkBack,
    /// The device notices its connection (epoch) to a crashed server is gone.
    Lost(ServerId, u32),
    /// The device learns its connect attempt (epoch) met a dead server.
    ConnectFailed(ServerId, u32),
}

/// Seconds of per-second latency histograms a client shard keeps before handing them on.
const PER_SECOND_KEPT_S: u64 = 10;

/// A change of the sender's view of `msg` to `state`, in a conversation the checkers
/// follow: checked as it comes (for as long as the sender's `devices` follow the message),
/// and kept for the checks after the run if they need it (a group message's for the
/// aggregate, a sampled one's for receipt liveness). The views of the others are not
/// held: the card's full load, following one conversation in 64, held every unread
/// message's view (about 7 bytes a message: 0.7 GB at the card).
fn log_view(ctx: &mut Ctx, devices: &Devices, msg: &wasim_model::ChatMessage, state: ReceiptState, t: Time) {
    if !ctx.logs.checks(msg.conversation) {
        return;
    }
    let key = msg.client_id().key();
    let keep = msg.conversation.group_id().is_some() || crate::check::views_sampled(key);
    ctx.logs.sender_view(key, state, LogMs::of(t), keep, devices.sent_holds(msg.client_id()));
}

/// The one of three (before the faults, during a fault window, after) for `phase` (see
/// `ClientShard::phase`).
fn of_phase<T>(phase: usize, [before, during, after]: [T; 3]) -> T {
    match phase {
        0 => before,
        1 => during,
        _ => after,
    }
}

/// Draws of a group's sender before a group send is given up (every member drawn had the
/// app closed).
const GROUP_SENDER_DRAWS: usize = 16;

/// Reads or sends of one shard in one tick at the card's load per shard, with a wide
/// margin (a Poisson mean of about 3).
const DUE_PER_TICK_TYPICAL: usize = 256;

mod media;

pub(crate) struct ClientShard {
    /// Media sends and downloads, when the scenario has media.
    media: Option<Box<media::MediaSide>>,
    topo: Arc<Topology>,
    pop: Population,
    devices: Devices,
    outs: Vec<DeviceOutput>,
    /// Devices that connected at least once (web clients are known to the session store,
    /// and owed messages, only from then on): one bit per device index. A million devices
    /// take 125 KB and a connect touches one word, where a hash set costs a cache miss and
    /// grows by rehashing through the connect ramp.
    registered: Vec<u64>,
    /// When devices became live again after the measuring window began (reconnects):
    /// messages sent before that did not find them online.
    live_since: FxHashMap<DeviceKey, Time>,
    /// Since when each connected device of a user with a web client has been connected
    /// (for invariant 7: a user with a device connected is not shown offline because
    /// another closed); empty without web clients.
    up_since: FxHashMap<DeviceKey, (Time, wasim_model::ServerId)>,
    reads: ReadWheel,
    read_delay: Sampler,
    latencies: Latencies,
    /// Latencies by the second their event began (the whole run), for plots over time.
    latencies_per_second: SecondLatencies,
    /// Initial connects: local user `i` connects at `ramp_us * i / local_online`.
    next_connect: usize,
    /// Local users online from the start (`0..local_online`); the others come online later.
    local_online: usize,
    ramp_us: u64,
    /// Device timers: (time, device index, what for).
    timers: BinaryHeap<Reverse<(Time, u32, Timer)>>,
    /// The Poisson process of app closes over the shard's phones.
    next_close_at: Time,
    mean_close_gap_us: f64,
    app_closed: Sampler,
    /// Network cuts of this shard's users: (from, until, local user), and progress.
    cuts: Vec<(Time, Time, usize)>,
    cuts_started: usize,
    /// Client-link latencies drawn for faults (a reset crossing the link).
    client_link: Sampler,
    /// Devices displaced by a crash, with when it happened, until they connect again.
    displaced: FxHashMap<u32, Time>,
    /// Fault windows (from, until), for delivery latency before, during and after faults.
    fault_windows: Vec<(Time, Time)>,
    /// A ✓ later than this counts against availability.
    ack_timeout: Duration,
    /// A message minted more than this after it was written waited in its sender's app:
    /// longer than a reconnect's first backoff window and two client links' tails (a send
    /// written while its app connects, which waits less, is judged with the others).
    sender_wait_ms: u64,
    /// The Poisson send process of the whole shard.
    next_send_at: Time,
    mean_gap_us: f64,
    contacts: u32,
    heartbeats: HeartbeatPhases,
    /// The beats of the current tick (a buffer kept between ticks).
    beats: Vec<(usize, Time)>,
    /// The reads and the sends of the current tick, drawn before any is made so that the
    /// device records they touch are loaded together (buffers kept between ticks).
    reads_due: Vec<(Time, DeviceKey, wasim_model::ChatMessage)>,
    sends_due: Vec<(Time, usize, Recipient)>,
    /// The group sends of this shard's members: (cumulative weight, group, local user),
    /// each member of a group of `n` weighing `1 / n` (a group's sends come from a member
    /// drawn uniformly), and the Poisson process over them.
    group_senders: Vec<(f64, GroupId, u32)>,
    next_group_send_at: Time,
    mean_group_gap_us: f64,
    /// The end of the previous tick: heartbeats are due in (previous, now].
    previous_tick: Time,
    /// The workload's draws, a stream per process it drives.
    rng: WorkloadRng,
    measure: (Time, Time),
    /// The run's shared state: the fault layer's plan (crashes, lost ACKs), the trace.
    shared: std::sync::Arc<Shared>,
}

impl ClientShard {
    pub fn new(shared: &std::sync::Arc<Shared>, shard: u32, ctx: &Ctx) -> ClientShard {
        let s = &shared.scenario;
        let shards = s.fleet.client_shards;
        let users = s.users.concurrent;
        let local = (s.registered_users() - u64::from(shard)).div_ceil(u64::from(shards)) as usize;
        // The users online from the start (the first `concurrent` ids): they connect on the
        // ramp and send the 1:1 load. The others are registered but offline until their
        // `offline_for_s` passes.
        let local_online = (users.saturating_sub(u64::from(shard))).div_ceil(u64::from(shards)) as usize;
        // This shard's share of the offered load, when all of its users are online.
        let rate_per_us = s.workload.messages_per_s as f64 * local_online as f64 / users as f64 / 1e6;
        let pop = shared.population.clone();
        let slots = if s.users.devices_per_user.web > 0.0 { DEVICES_PER_USER_MAX } else { 1 };
        let layout = Layout::new(shard, shards, local, slots);
        let mut cuts: Vec<(Time, Time, usize)> =
            (0..local).filter_map(|i| pop.cut(layout.user(i)).map(|(from, until)| (from, until, i))).collect();
        cuts.sort_unstable();
        let fault_windows = s
            .faults
            .iter()
            .map(|f: &Fault| {
                let (at_s, for_s) = f.window_s();
                (Time::from_secs(at_s), Time::from_secs(at_s + for_s))
            })
            .collect();
        // Registered users who start offline open the app when their time offline is up.
        let mut timers = BinaryHeap::new();
        if local > local_online {
            let mut rng = ctx.stream(Stream::Offline);
            for i in local_online..local {
                let at = Time((crate::dist::draw_uncapped(&s.users.offline_for_s, &mut rng) * 1e6) as u64);
                timers.push(Reverse((at, (i * slots) as u32, Timer::Open)));
                if pop.has_web(layout.user(i)) {
                    timers.push(Reverse((at, (i * slots + 1) as u32, Timer::Open)));
                }
            }
        }
        // The members of groups held here, each weighing 1 / its group's size: the shard's
        // group sends are Poisson at the groups' rate times the total weight.
        let me = shared.topo.node(crate::topology::NodeKind::ClientShard, shard);
        let mut group_senders = Vec::new();
        let mut group_weight = 0.0;
        for (g, members) in shared.groups.iter() {
            let weight = 1.0 / members.len() as f64;
            for &m in members.iter().filter(|&&m| shared.topo.client_shard(m) == me) {
                group_weight += weight;
                group_senders.push((group_weight, g, (layout.index(DeviceId::phone(m)) / slots) as u32));
            }
        }
        let backoff = Backoff {
            base: Duration::from_millis(s.users.reconnect_backoff_ms_base),
            cap: Duration::from_millis(s.users.reconnect_backoff_ms_max),
        };
        ClientShard {
            media: media::MediaSide::new(s, ctx),
            topo: shared.topo.clone(),
            pop,
            devices: Devices::new(
                layout,
                DeviceConfig {
                    backoff,
                    servers: s.fleet.chat_servers,
                    balancer: wasim_model::BalancerConfig {
                        placement: s.balancer.placement.model(),
                        health_check: Duration::from_millis(s.balancer.health_check_ms),
                        virtual_nodes: s.balancer.virtual_nodes,
                    },
                },
            )
            .expecting_shown(s.shown_pairs_expected(layout.users)),
            outs: Vec::new(),
            registered: vec![0; (layout.users * layout.slots).div_ceil(64)],
            live_since: FxHashMap::default(),
            up_since: FxHashMap::default(),
            reads: ReadWheel::default(),
            read_delay: Sampler::new(&s.workload.read_delay_ms, 1_000.0),
            latencies: Latencies::default(),
            latencies_per_second: SecondLatencies::default(),
            next_connect: 0,
            local_online,
            ramp_us: s.users.connect_ramp_s * 1_000_000,
            timers,
            next_close_at: Time(s.users.connect_ramp_s * 1_000_000),
            mean_close_gap_us: 3_600e6 / (s.workload.app_closes_per_hour * local as f64),
            app_closed: Sampler::new(&s.workload.app_closed_ms, 1_000.0),
            cuts,
            cuts_started: 0,
            client_link: Sampler::new(&s.network.client_server_ms, 1_000.0),
            displaced: FxHashMap::default(),
            fault_windows,
            ack_timeout: Duration::from_millis(s.slo.sent_ack_timeout_ms),
            sender_wait_ms: s.users.reconnect_backoff_ms_base + (2.0 * s.network.client_server_ms.p99()) as u64,
            next_send_at: Time::ZERO,
            mean_gap_us: 1.0 / rate_per_us,
            contacts: s.users.contacts_per_user,
            heartbeats: HeartbeatPhases::new(
                local,
                slots,
                s.users.heartbeat_interval_ms * 1_000,
                &mut ctx.stream(Stream::Setup),
            ),
            beats: Vec::new(),
            // Made at their usual size once, at start: a buffer that grows later moves to
            // the top of the heap, and holds memory there that the allocator could return.
            reads_due: Vec::with_capacity(DUE_PER_TICK_TYPICAL),
            sends_due: Vec::with_capacity(DUE_PER_TICK_TYPICAL),
            mean_group_gap_us: if group_weight > 0.0 {
                1e6 / (s.groups.messages_per_group_per_s * group_weight)
            } else {
                f64::INFINITY
            },
            group_senders,
            next_group_send_at: Time::ZERO,
            previous_tick: Time::ZERO,
            rng: WorkloadRng {
                sends: ctx.stream(Stream::Sends),
                closes: ctx.stream(Stream::Closes),
                reads: ctx.stream(Stream::Reads),
                faults: ctx.stream(Stream::Faults),
                group_sends: ctx.stream(Stream::GroupSends),
            },
            measure: (shared.measure_from(), shared.measure_until()),
            shared: shared.clone(),
        }
    }

    fn layout(&self) -> Layout {
        *self.devices.layout()
    }

    /// Which part of the run `sent` falls in: 0 before the first fault (or in a run without
    /// faults), 1 during a fault window, 2 after.
    fn phase(&self, sent: Time) -> usize {
        if self.fault_windows.iter().any(|&(from, until)| sent >= from && sent < until) {
            1
        } else if self.fault_windows.iter().all(|&(from, _)| sent < from) {
            0
        } else {
            2
        }
    }

    fn measured(&self, sent_at: Time) -> bool {
        sent_at >= self.measure.0 && sent_at < self.measure.1
    }

    /// Whether the device's network is cut at `t`.
    fn cut(&self, d: DeviceId, t: Time) -> bool {
        !self.cuts.is_empty() && self.pop.cut(d.user).is_some_and(|(from, until)| t >= from && t < until)
    }

    fn settings(&self, u: UserId) -> UserSettings {
        UserSettings { hide_last_seen: self.pop.hides_last_seen(u), read_receipts: !self.pop.read_receipts_off(u) }
    }

    /// Feed one input to the device at `index` at `t` and carry out what it asks.
    fn input(&mut self, t: Time, index: usize, input: DeviceInput, ctx: &mut Ctx) {
        self.devices.handle(t, index, input, &mut ctx.rng, &mut self.outs);
        self.apply(t, ctx);
        self.track_connection(t, index, ctx);
    }

    /// Log the connected spells of the devices of users with a web client (a user with one
    /// device has nothing to check): when one starts, and when it ends.
    fn track_connection(&mut self, t: Time, index: usize, ctx: &mut Ctx) {
        if self.layout().slots < 2 {
            return;
        }
        let device = self.layout().device(index);
        if !self.pop.has_web(device.user) || !ctx.logs.checks_user(device.user) {
            return;
        }
        let key = DeviceKey::of(device);
        match (self.devices.is_connected(index), self.up_since.get(&key).copied()) {
            (true, None) => {
                let server = self.devices.server(index).expect("a connected device has a server");
                self.up_since.insert(key, (t, server));
            }
            (false, Some((since, server))) => {
                self.up_since.remove(&key);
                ctx.logs.connected_spells.push((key, LogMs::of(since), LogMs::of(t), server));
            }
            _ => {}
        }
    }

    /// Carry out the devices' outputs produced at `t`.
    fn apply(&mut self, t: Time, ctx: &mut Ctx) {
        // Carrying out an output feeds nothing back to the devices, so one pass empties
        // the buffer; it is kept for its capacity.
        let mut outs = std::mem::take(&mut self.outs);
        for out in &outs {
            self.apply_one(t, out, ctx);
        }
        outs.clear();
        self.outs = outs;
    }

    fn apply_one(&mut self, t: Time, out: &DeviceOutput, ctx: &mut Ctx) {
        match *out {
            DeviceOutput::Frame { device, server, ref frame } => self.transmit(t, device, server, frame, ctx),
            DeviceOutput::RetryAt { device, at } => {
                self.timers.push(Reverse((at, self.layout().index(device) as u32, Timer::Retry)));
            }
            DeviceOutput::Connected { device, .. } => self.on_connected(device, t, ctx),
            DeviceOutput::Refused { device, .. } => {
                ctx.trace_device(t, "connect_refused", device);
                ctx.counters.connects_refused += 1;
                ctx.second(t).connects_refused += 1;
            }
            DeviceOutput::Lost { device, connected, .. } => {
                if connected {
                    ctx.trace_device(t, "connection_lost", device);
                    ctx.counters.connections_lost += 1;
                } else {
                    ctx.trace_device(t, "connect_failed", device);
                    ctx.counters.connects_failed += 1;
                    ctx.second(t).connects_failed += 1;
                }
            }
            DeviceOutput::GoneAway { device, .. } => ctx.trace_device(t, "asked_to_reconnect", device),
            DeviceOutput::Shown { device, msg, fetched, inserted } => {
                self.on_shown(device, msg, t, fetched, inserted, ctx)
            }
            DeviceOutput::Duplicate { .. } => {
                // Shown already: a push repeated because the first ACK was lost, or a fetch
                // of something pushed before. It is acknowledged again.
                ctx.counters.duplicates_dropped += 1;
                ctx.counters.acks_resent += 1;
            }
            DeviceOutput::CaughtUp { device, since } => {
                ctx.trace_device(t, "fetch_done", device);
                if t >= self.measure.0 {
                    self.live_since.insert(DeviceKey::of(device), t);
                    if t < self.measure.1 {
                        record_us(&mut self.latencies.catch_up, t.as_us() - since.as_us());
                    }
                }
            }
            DeviceOutput::SentAgain { device, count } => {
                ctx.trace_device(t, "sent_again", device);
                ctx.counters.sends_retried += count as u64;
            }
            DeviceOutput::CatchUpInterrupted { held, .. } => {
                ctx.counters.catch_ups_interrupted += 1;
                ctx.counters.held_dropped += held as u64;
            }
            DeviceOutput::Abandoned { sent_at, .. } => {
                if self.measured(sent_at) {
                    let c = &mut ctx.counters;
                    let abandoned =
                        [&mut c.abandoned_before_faults, &mut c.abandoned_during_faults, &mut c.abandoned_after_faults];
                    *of_phase(self.phase(sent_at), abandoned) += 1;
                }
            }
            DeviceOutput::SentAckSeen { device, msg, first, abandoned, ticks } => {
                let in_time = t.since(msg.sent_at) <= self.ack_timeout;
                if first && !abandoned && in_time && self.measured(msg.sent_at) {
                    let c = &mut ctx.counters;
                    let acked = [
                        &mut c.acked_in_time_before_faults,
                        &mut c.acked_in_time_during_faults,
                        &mut c.acked_in_time_after_faults,
                    ];
                    *of_phase(self.phase(msg.sent_at), acked) += 1;
                }
                if self.measured(msg.sent_at) {
                    record_us(&mut self.latencies.sent_ack, t.as_us() - msg.sent_at.as_us());
                    ctx.counters.sent_acks_measured += 1;
                }
                ctx.trace_msg(t, "sent_ack_seen", &msg, Some(device));
                ctx.second(t).sent_acks += 1;
                match msg.conversation.group_id() {
                    _ if !ctx.logs.checks(msg.conversation) => {}
                    // Owed to every member but the sender: the checkers expand it.
                    Some(group) => ctx.logs.acked_groups.push(crate::check::AckedGroup {
                        key: msg.client_id().key(),
                        id: msg.id,
                        group,
                        sender: msg.from,
                        sent: LogMs::of(msg.sent_at),
                        acked: LogMs::of(t),
                    }),
                    None => ctx.logs.acked.push((msg.id, msg.to, LogMs::of(t))),
                }
                if let Some(state) = ticks {
                    log_view(ctx, &self.devices, &msg, state, t);
                }
            }
            DeviceOutput::ReceiptSeen { receipt, ticks, .. } => self.on_receipt(receipt, ticks, t, ctx),
            DeviceOutput::PresenceSeen { device, update } => self.on_presence(device, update, t, ctx),
            DeviceOutput::Unheard { frame, .. } => {
                if let ServerFrame::Receipt { .. } = frame {
                    // On its way when the connection ended: not heard, so the server
                    // hands it back to the session store for the next fetch.
                    ctx.counters.receipts_unheard += 1;
                }
            }
        }
    }

    /// Put a device's frame on the network, unless a fault loses it.
    fn transmit(&mut self, t: Time, device: DeviceId, server: ServerId, frame: &DeviceFrame, ctx: &mut Ctx) {
        match *frame {
            DeviceFrame::DeliveredAck { msg, .. } => {
                if self.shared.faults.ack_lost(t, &mut self.rng.faults) {
                    ctx.counters.acks_lost += 1;
                    ctx.trace_msg(t, "delivered_ack_lost", &msg, Some(device));
                    return;
                }
                ctx.trace_msg(t, "delivered_ack", &msg, Some(device));
            }
            DeviceFrame::Connect { epoch, .. } => {
                ctx.trace_device(t, "connect", device);
                let (link, rng) = (&self.client_link, &mut self.rng.faults);
                let rtt = || link.sample(rng) + link.sample(rng);
                if let Some(at) = self.shared.faults.connect_fails(self.topo.chat(server), t, rtt) {
                    let index = self.layout().index(device) as u32;
                    self.timers.push(Reverse((at, index, Timer::ConnectFailed(server, epoch))));
                }
            }
            DeviceFrame::Disconnect { .. } => ctx.trace_device(t, "app_closed", device),
            DeviceFrame::Heartbeat { .. } => ctx.counters.heartbeats += 1,
            DeviceFrame::ReadAck { msg, .. } => {
                ctx.counters.reads_sent += 1;
                if msg.conversation.group_id().is_some() && ctx.logs.checks(msg.conversation) {
                    ctx.logs.member_reads.push((msg.client_id().key(), device.user, LogMs::of(t)));
                }
                ctx.trace_msg(t, "read", &msg, Some(device));
            }
            DeviceFrame::Send { to, .. } => {
                if ctx.traces(device.user) || matches!(to, Recipient::User(u) if ctx.traces(u)) {
                    ctx.trace_device(t, "send", device);
                }
            }
            DeviceFrame::Subscribe { .. } | DeviceFrame::ReceiptsHeard { .. } | DeviceFrame::MediaBytes { .. } => {}
        }
        let to = self.topo.chat(server);
        if let DeviceFrame::Send { .. } | DeviceFrame::MediaBytes { .. } = frame {
            // A device's sends keep their order on its socket: a conversation's messages
            // (and the retries ahead of new ones) reach the server as they were written.
            ctx.send_ordered(to, t, Msg::Device { device, frame: *frame }, crate::node::OrderKey::Socket(device));
        } else {
            ctx.send(to, t, Msg::Device { device, frame: *frame });
        }
    }

    fn on_connected(&mut self, device: DeviceId, t: Time, ctx: &mut Ctx) {
        let key = DeviceKey::of(device);
        let index = self.layout().index(device);
        let (word, bit) = (&mut self.registered[index / 64], 1u64 << (index % 64));
        if *word & bit == 0 {
            *word |= bit;
            // The checker asks only when a web client linked (a phone is owed everything).
            if device.slot.0 > 0 {
                ctx.logs.registered.push((key, t));
            }
        } else {
            ctx.counters.reconnects += 1;
        }
        ctx.counters.connects += 1;
        ctx.second(t).connects += 1;
        if let Some(crashed_at) = self.displaced.remove(&(index as u32)) {
            record_us(&mut self.latencies.reconnect, t.as_us() - crashed_at.as_us());
        }
        if device.slot.0 == 0 && self.pop.watches(device.user) {
            let target = self.pop.contact(device.user, 0);
            if let Some((server, frame)) = self.devices.subscribe(index, target) {
                self.transmit(t, device, server, &frame, ctx);
            }
        }
    }

    /// A message shown on a device: log it, measure it, and schedule its reading.
    fn on_shown(
        &mut self,
        device: DeviceId,
        msg: wasim_model::ChatMessage,
        t: Time,
        fetched: bool,
        inserted: bool,
        ctx: &mut Ctx,
    ) {
        let key = DeviceKey::of(device);
        if ctx.logs.checks(msg.conversation) {
            let client = msg.client_id().key();
            ctx.logs.displays.push(Display::new(key, LogMs::of(t), msg.conversation, msg.id, client, inserted));
        }
        if inserted {
            ctx.counters.shown_inserted += 1;
        }
        ctx.trace_msg(t, if fetched { "displayed_after_fetch" } else { "displayed" }, &msg, Some(device));
        ctx.second(t).deliveries += 1;
        if fetched {
            ctx.counters.fetched += 1;
        }
        let online_at_send = self.live_since.get(&key).is_none_or(|&since| since <= msg.sent_at);
        // A message minted long after it was written waited in its sender's app (written
        // without a connection, or sent again after one closed): its delivery is reported
        // apart, not judged against the delivery SLO, which is the system's.
        let waited_in_app = msg.id.timestamp_ms().saturating_sub(msg.sent_at.as_ms()) > self.sender_wait_ms;
        if self.measured(msg.sent_at) && online_at_send && !fetched && waited_in_app {
            record_us(&mut self.latencies.delivery_after_sender_wait, t.as_us() - msg.sent_at.as_us());
        }
        let one_to_one = msg.conversation.group_id().is_none();
        if online_at_send && !fetched && !waited_in_app {
            let series = if one_to_one {
                &mut self.latencies_per_second.delivery
            } else {
                &mut self.latencies_per_second.group_delivery
            };
            SecondLatencies::record(series, msg.sent_at, t.as_us() - msg.sent_at.as_us());
        }
        if self.measured(msg.sent_at) && online_at_send && !fetched && !waited_in_app && !one_to_one {
            record_us(&mut self.latencies.group_delivery, t.as_us() - msg.sent_at.as_us());
            ctx.counters.group_deliveries_measured += 1;
        }
        if self.measured(msg.sent_at) && online_at_send && !fetched && !waited_in_app && one_to_one {
            let latency_us = t.as_us() - msg.sent_at.as_us();
            record_us(&mut self.latencies.delivery, latency_us);
            ctx.counters.deliveries_measured += 1;
            if !self.fault_windows.is_empty() {
                let i = self.phase(msg.sent_at);
                let l = &mut self.latencies;
                let phase = [&mut l.delivery_before, &mut l.delivery_during, &mut l.delivery_after];
                record_us(of_phase(i, phase), latency_us);
            }
        }
        if device.slot.0 == 0 {
            let at = t + self.read_delay.sample(&mut self.rng.reads);
            self.reads.schedule(t, at, key, msg);
        }
        self.media_shown(t, device, &msg, online_at_send && !fetched && !waited_in_app, ctx);
    }

    fn on_receipt(
        &mut self,
        receipt: Receipt,
        ticks: Option<(Option<ReceiptState>, Option<ReceiptState>)>,
        t: Time,
        ctx: &mut Ctx,
    ) {
        let msg = receipt.msg;
        if let Some((before, after)) = ticks {
            let shown = after.unwrap_or(ReceiptState::Read);
            log_view(ctx, &self.devices, &msg, shown, t);
            if before < Some(ReceiptState::Delivered) && self.measured(msg.sent_at) {
                ctx.counters.double_ticks_measured += 1;
            }
        }
        let read = receipt.state == ReceiptState::Read;
        ctx.trace_msg(t, if read { "read_receipt_seen" } else { "receipt_seen" }, &msg, None);
        let since_ack = t.as_us().saturating_sub(receipt.at.as_us());
        if read {
            ctx.counters.read_receipts += 1;
            if ctx.logs.checks(msg.conversation) {
                ctx.logs.reads.push((msg.id, DeviceKey::of(receipt.by), LogMs::of(t)));
            }
            if self.measured(msg.sent_at) {
                record_us(&mut self.latencies.read_receipt, since_ack);
            }
        } else {
            if self.measured(msg.sent_at) {
                record_us(&mut self.latencies.receipt, since_ack);
                ctx.counters.receipts_measured += 1;
            }
            ctx.second(t).receipts += 1;
        }
    }

    fn on_presence(&mut self, device: DeviceId, update: PresenceUpdate, t: Time, ctx: &mut Ctx) {
        ctx.counters.presence_updates += 1;
        if matches!(update.status, PresenceStatus::Offline { last_seen: Some(_) }) {
            ctx.counters.last_seen_shown += 1;
        }
        if ctx.logs.checks_user(update.target) {
            let watcher = DeviceKey::of(device);
            ctx.logs.presence_views.push(PresenceView { watcher, update, received_at: t });
        }
        let measured = update.changed_at >= self.measure.0 && update.changed_at < self.measure.1;
        match update.cause {
            PresenceCause::Connected | PresenceCause::Disconnected => {
                // Stamped on the presence shard's clock, which a fault may put ahead.
                let us = t.as_us().saturating_sub(update.changed_at.as_us());
                SecondLatencies::record(&mut self.latencies_per_second.presence, update.changed_at, us);
                if measured {
                    record_us(&mut self.latencies.presence, us);
                }
            }
            PresenceCause::Expired => {
                ctx.second(t).shown_offline_by_expiry += 1;
                if let Some((lost_at, _)) = self.pop.cut(update.target) {
                    record_us(&mut self.latencies.presence_detection, t.as_us().saturating_sub(lost_at.as_us()));
                }
            }
            _ => {}
        }
    }

    /// Chat servers crashing by `now`: each device attached to one notices when the fault
    /// layer says (a reset crossing its link, or pings unanswered).
    fn tick_crashes(&mut self, now: Time) {
        if self.shared.faults.crashes().is_empty() {
            return;
        }
        let crashes: Vec<crate::faults::Crash> =
            self.shared.faults.server_crashes_in(self.previous_tick, now).copied().collect();
        for crash in crashes {
            let server = crash.server.expect("a chat server crash");
            for index in 0..self.devices.len() {
                if self.devices.attempt_server(index) != Some(server) {
                    continue;
                }
                let hop = self.client_link.sample(&mut self.rng.faults);
                let at = self.shared.faults.device_detects(&crash, hop, &mut self.rng.faults);
                let epoch = self.devices.epoch(index);
                self.timers.push(Reverse((at, index as u32, Timer::Lost(server, epoch))));
                self.displaced.insert(index as u32, crash.down);
                // The crash report tells one displaced device's story: the first one.
                let user = self.devices.layout().device(index).user;
                if self.shared.trace_a_crash {
                    self.shared.offer_trace(now.as_us() / self.shared.tick_us, user);
                }
            }
        }
    }

    /// The initial connects of the ramp.
    fn tick_connects(&mut self, now: Time, ctx: &mut Ctx) {
        let layout = self.layout();
        while self.next_connect < self.local_online {
            let i = self.next_connect;
            let t = Time(self.ramp_us * i as u64 / self.local_online as u64);
            if t > now {
                break;
            }
            let user = layout.user(i);
            let settings = self.settings(user);
            self.input(t, i * layout.slots, DeviceInput::AppOpen { settings }, ctx);
            if self.pop.has_web(user) {
                self.input(t, i * layout.slots + 1, DeviceInput::AppOpen { settings }, ctx);
            }
            self.next_connect += 1;
        }
    }

    /// Device timers due by `now`.
    fn tick_timers(&mut self, now: Time, ctx: &mut Ctx) {
        while let Some(&Reverse((t, index, timer))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let index = index as usize;
            let settings = self.settings(self.layout().device(index).user);
            let input = match timer {
                Timer::Open => DeviceInput::AppOpen { settings },
                Timer::Retry => DeviceInput::RetryDue { settings },
                Timer::NetworkBack => DeviceInput::NetworkBack,
                Timer::Lost(server, epoch) => DeviceInput::ConnectionLost { server, epoch },
                Timer::ConnectFailed(server, epoch) => DeviceInput::ConnectFailed { server, epoch },
            };
            self.input(t, index, input, ctx);
        }
    }

    /// Network cuts starting by `now`: the devices lose their network (the servers are not
    /// told) until the cut ends.
    fn tick_cuts(&mut self, now: Time, ctx: &mut Ctx) {
        let layout = self.layout();
        while let Some(&(from, until, i)) = self.cuts.get(self.cuts_started) {
            if from > now {
                break;
            }
            self.cuts_started += 1;
            for index in i * layout.slots..(i + 1) * layout.slots {
                ctx.trace_device(from, "network_cut", layout.device(index));
                self.input(from, index, DeviceInput::NetworkLost, ctx);
                self.timers.push(Reverse((until, index as u32, Timer::NetworkBack)));
            }
        }
    }

    /// Users close the app (a clean disconnect of the phone) and open it again later.
    fn tick_app_closes(&mut self, now: Time, ctx: &mut Ctx) {
        while self.next_close_at <= now && self.next_close_at < self.measure.1 && self.mean_close_gap_us.is_finite() {
            let t = self.next_close_at;
            let gap_ns = self.mean_close_gap_us * 1e3 * self.rng.closes.sample::<f64, _>(Exp1);
            self.next_close_at = t + Duration::from_nanos(gap_ns as u64);
            let index = self.rng.closes.random_range(0..self.layout().users) * self.layout().slots;
            if !self.devices.is_connected(index) {
                continue; // the Poisson process runs over phones that are online
            }
            self.input(t, index, DeviceInput::AppClose, ctx);
            let back = t + self.app_closed.sample(&mut self.rng.closes);
            self.timers.push(Reverse((back, index as u32, Timer::Open)));
        }
    }

    /// Heartbeats due in this tick, each at its device's own phase.
    fn tick_heartbeats(&mut self, now: Time, ctx: &mut Ctx) {
        let mut beats = std::mem::take(&mut self.beats);
        self.heartbeats.due(self.previous_tick, now, |index, at| beats.push((index, at)));
        for &(index, at) in &beats {
            if let Some((server, frame)) = self.devices.heartbeat(index) {
                let device = self.layout().device(index);
                self.transmit(at, device, server, &frame, ctx);
            }
        }
        beats.clear();
        self.beats = beats;
    }

    fn tick_reads(&mut self, now: Time, ctx: &mut Ctx) {
        let mut due = std::mem::take(&mut self.reads_due);
        self.reads.due(now, |t, key, msg| due.push((t, key, msg)));
        for &(_, key, _) in &due {
            self.devices.prefetch_device(self.devices.layout().index(key.device()));
        }
        for &(t, key, msg) in &due {
            let device = key.device();
            if self.cut(device, t) {
                continue;
            }
            let index = self.layout().index(device);
            let settings = self.settings(device.user);
            if let Some((server, frame)) = self.devices.read(t, index, msg, settings) {
                self.transmit(t, device, server, &frame, ctx);
            }
        }
        due.clear();
        self.reads_due = due;
    }

    /// The entries of `group_senders` of the group of entry `k` (they are contiguous).
    fn group_range(&self, k: usize) -> std::ops::Range<usize> {
        let k = k.min(self.group_senders.len() - 1);
        let group = self.group_senders[k].1;
        let from = self.group_senders[..k].iter().rposition(|e| e.1 != group).map_or(0, |p| p + 1);
        let until = k + self.group_senders[k..].iter().take_while(|e| e.1 == group).count();
        from..until
    }

    /// Group sends due by `now`: from a member drawn with its weight, from its phone.
    fn draw_group_sends(&mut self, now: Time, due: &mut Vec<(Time, usize, Recipient)>) {
        let Some(&(total, _, _)) = self.group_senders.last() else { return };
        let from = due.len();
        while self.next_group_send_at <= now && self.next_group_send_at < self.measure.1 {
            let t = self.next_group_send_at;
            let gap_ns = self.mean_group_gap_us * 1e3 * self.rng.group_sends.sample::<f64, _>(Exp1);
            self.next_group_send_at = t + Duration::from_nanos(gap_ns as u64);
            let x = self.rng.group_sends.random_range(0.0..total);
            let k = self.group_senders.partition_point(|&(cumulative, _, _)| cumulative <= x);
            let (_, group, mut i) = self.group_senders[k.min(self.group_senders.len() - 1)];
            // The group's sends come from its members whose app is open: a draw that
            // lands on a closed app draws again among the group's members held here (a
            // few times: a group with none open here sends nothing from here).
            let members = self.group_range(k);
            for _ in 0..GROUP_SENDER_DRAWS {
                if self.devices.state(i as usize * self.layout().slots) != DeviceState::Closed {
                    break;
                }
                i = self.group_senders[self.rng.group_sends.random_range(members.clone())].2;
            }
            let index = i as usize * self.layout().slots;
            self.devices.prefetch_device(index);
            due.push((t, index, Recipient::Group(group)));
        }
        if due.len() > from {
            due.sort_by_key(|&(t, index, _)| (t, index));
        }
    }

    /// The user of the phone at `index` sends a message to `to` at `t` (`seq`: under the
    /// client sequence number it took before, a media send's once uploaded).
    fn send_message(&mut self, t: Time, index: usize, to: Recipient, seq: Option<u32>, ctx: &mut Ctx) {
        // Poisson sends from phones with the app open: a draw that lands on a closed
        // app is not a send; one that lands on an app without a connection waits in
        // it for the next (and counts against availability, unless the phone's own
        // network is what is missing).
        let sending = match seq {
            None => self.devices.send(t, index, to),
            Some(seq) => self.devices.send_numbered(t, index, to, seq),
        };
        let sent = match sending {
            Some((server, frame)) => Some((server, frame)),
            None => {
                let queued = match seq {
                    None => self.devices.queue_send(t, index, to),
                    Some(seq) => self.devices.queue_send_numbered(t, index, to, seq),
                };
                let Some(offline) = queued else { return };
                ctx.counters.sends_queued += 1;
                if offline && self.measured(t) {
                    let c = &mut ctx.counters;
                    let abandoned =
                        [&mut c.abandoned_before_faults, &mut c.abandoned_during_faults, &mut c.abandoned_after_faults];
                    *of_phase(self.phase(t), abandoned) += 1;
                }
                None
            }
        };
        ctx.counters.sends += 1;
        if let Recipient::Group(_) = to {
            ctx.counters.group_sends += 1;
            ctx.counters.group_sends_measured += u64::from(self.measured(t));
        }
        if self.measured(t) {
            let c = &mut ctx.counters;
            c.sends_measured += 1;
            let sends = [&mut c.sends_before_faults, &mut c.sends_during_faults, &mut c.sends_after_faults];
            *of_phase(self.phase(t), sends) += 1;
        }
        ctx.second(t).sends += 1;
        if let Some((server, frame)) = sent {
            self.transmit(t, self.layout().device(index), server, &frame, ctx);
        }
    }

    fn tick_sends(&mut self, now: Time, ctx: &mut Ctx) {
        // The draws come first (they do not depend on the devices), then the sends.
        let mut due = std::mem::take(&mut self.sends_due);
        while self.next_send_at <= now && self.next_send_at < self.measure.1 {
            let t = self.next_send_at;
            let gap_ns = self.mean_gap_us * 1e3 * self.rng.sends.sample::<f64, _>(Exp1);
            self.next_send_at = t + Duration::from_nanos(gap_ns as u64);
            let i = self.rng.sends.random_range(0..self.local_online);
            let from = self.layout().user(i);
            let j = self.rng.sends.random_range(0..self.contacts);
            let index = i * self.layout().slots;
            self.devices.prefetch_device(index);
            due.push((t, index, Recipient::User(self.pop.contact(from, j))));
        }
        self.draw_group_sends(now, &mut due);
        for &(t, index, to) in &due {
            if self.media.as_mut().is_some_and(|m| m.draws_media()) {
                self.tap_media(t, index, to, ctx);
            } else {
                self.send_message(t, index, to, None, ctx);
            }
        }
        due.clear();
        self.sends_due = due;
    }
}

impl Process for ClientShard {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        let Msg::ToDevice { device, ref frame } = env.msg else {
            self.media_reply(env.at, &env.msg, ctx);
            return;
        };
        if self.cut(device, env.at) {
            return; // lost on the way: the server keeps what it pushed unacknowledged
        }
        let index = self.devices.layout().index(device);
        let from = self.topo.chat_server_of(env.from).expect("frames to devices come from chat servers");
        self.devices.on_frame(env.at, index, from, frame, &mut ctx.rng, &mut self.outs);
        self.apply(env.at, ctx);
        self.track_connection(env.at, index, ctx);
    }

    #[inline]
    fn prefetch(&self, env: &Envelope) {
        if let Msg::ToDevice { device, frame } = &env.msg {
            self.devices.prefetch(self.devices.layout().index(*device), frame);
        }
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        self.tick_crashes(now);
        self.tick_cuts(now, ctx);
        self.tick_timers(now, ctx);
        self.tick_app_closes(now, ctx);
        self.tick_connects(now, ctx);
        self.tick_heartbeats(now, ctx);
        self.tick_reads(now, ctx);
        self.tick_sends(now, ctx);
        self.tick_media(now, ctx);
        // At each second's start, hand the histograms of the seconds long past to the run
        // (their events have all ended, but for a rare late one): a large run's shards
        // would otherwise keep one per metric and second each.
        let second = now.as_us() / 1_000_000;
        if second != self.previous_tick.as_us() / 1_000_000 && second > PER_SECOND_KEPT_S {
            let before = (second - PER_SECOND_KEPT_S) as usize;
            self.latencies_per_second.move_before(before, &mut self.shared.past_seconds.lock().expect("seconds lock"));
        }
        self.previous_tick = now;
    }

    fn finish(&mut self, report: &mut NodeReport) {
        report.latencies = Some(std::mem::take(&mut self.latencies));
        report.latencies_per_second = Some(std::mem::take(&mut self.latencies_per_second));
        report.receipt_transitions = Some(self.devices.receipt_transitions());
        report.gauge_end = self.devices.sends_in_flight() as u64;
        report.counters.media_uploads_pending_end = self.media.as_ref().map_or(0, |m| m.uploads_in_flight() as u64);
        // Spells still going at the end.
        let mut open: Vec<(DeviceKey, LogMs, LogMs, wasim_model::ServerId)> =
            self.up_since.iter().map(|(&k, &(since, server))| (k, LogMs::of(since), LogMs(u32::MAX), server)).collect();
        open.sort_unstable_by_key(|s| s.0);
        report.logs.connected_spells.append(&mut open);
        let connected = &mut report.logs.connected;
        connected.reserve_exact(self.devices.connected_count());
        for index in 0..self.devices.len() {
            let state = self.devices.state(index);
            if state.is_connected() {
                let device = self.layout().device(index);
                let catching_up_since =
                    (state == DeviceState::CatchingUp).then(|| LogMs::of(self.devices.since(index)));
                let server = self.devices.server(index).expect("a connected device has a server");
                connected.push(ConnectedAtEnd { device: DeviceKey::of(device), catching_up_since, server });
            }
        }
    }
}
