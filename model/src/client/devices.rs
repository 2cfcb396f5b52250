//! The devices of one client process and their state machine.

use super::{Backoff, Balancer, BalancerConfig, Displayed, SentMessages, Showing};
use crate::{
    ChatMessage, ClientMsgId, DeviceFrame, DeviceId, DeviceKey, DeviceSlot, InboxPos, PresenceUpdate, Receipt,
    ReceiptState, Recipient, ServerFrame, ServerId, Time, UserId,
};
use rand::Rng;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use strength_reduce::StrengthReducedU32;

/// Settings shared by every device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Reconnect backoff after a refused or failed attempt, a reset connection, and after
    /// the network returns.
    pub backoff: Backoff,
    /// The chat servers behind the load balancer.
    pub servers: u32,
    /// How the load balancer places connects.
    pub balancer: BalancerConfig,
}

/// Where a device is in its connection's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceState {
    /// The app is closed (or was never opened): no connection is wanted.
    #[default]
    Closed,
    /// The app is open but has no connection: a retry is scheduled, or the network is down.
    Waiting,
    /// A connect is on its way to a server.
    Connecting,
    /// Accepted; the inbox fetch is in progress. Arrivals are held, unacknowledged, until it
    /// ends, so that older fetched messages are shown before newer live ones; a held
    /// message is not acknowledged, so if the app closes first the server still has it and
    /// hands it back to the inbox.
    CatchingUp,
    /// Shows arrivals as they come and acknowledges each.
    Live,
}

impl DeviceState {
    /// Whether the device has an accepted connection.
    pub fn is_connected(self) -> bool {
        matches!(self, DeviceState::CatchingUp | DeviceState::Live)
    }
}

/// One device's state: 24 bytes, so that a process can hold millions in a flat vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientDevice {
    /// When the device entered its state, in whole milliseconds (49 days fit).
    since_ms: u32,
    /// The server of the current connection or attempt (`NO_SERVER`: none).
    server: u16,
    state: DeviceState,
    /// Bit 7: the device knows it has no network (the phone's radio or Wi-Fi is gone).
    /// Bits 0-6: consecutive failed connect attempts, which widen the backoff window
    /// (counted up to 127: the window stops widening long before).
    down_and_failures: u8,
    /// Which of the device's connections this is: frames about a connection name it, so a
    /// late answer to an old attempt cannot be taken for the current one.
    epoch: u32,
    next_seq: u32,
    /// The inbox position the device has caught up to.
    cursor: InboxPos,
    /// The sequence number of the last receipt it heard on its connection (0 for none),
    /// which its heartbeats report.
    receipts_heard: u32,
}

const _: () = assert!(std::mem::size_of::<ClientDevice>() == 24);

/// `ClientDevice::server` of a device with no server (server ids, Snowflake workers, stay
/// below 1,024).
const NO_SERVER: u16 = u16::MAX;

impl Default for ClientDevice {
    fn default() -> Self {
        ClientDevice {
            since_ms: 0,
            server: NO_SERVER,
            state: DeviceState::default(),
            down_and_failures: 0,
            epoch: 0,
            next_seq: 0,
            cursor: InboxPos::default(),
            receipts_heard: 0,
        }
    }
}

impl ClientDevice {
    fn server(&self) -> Option<ServerId> {
        (self.server != NO_SERVER).then_some(ServerId(self.server))
    }

    fn set_server(&mut self, server: Option<ServerId>) {
        self.server = server.map_or(NO_SERVER, |s| s.0);
    }

    fn take_server(&mut self) -> Option<ServerId> {
        let server = self.server();
        self.server = NO_SERVER;
        server
    }

    fn network_down(&self) -> bool {
        self.down_and_failures & 0x80 != 0
    }

    fn set_network_down(&mut self, down: bool) {
        self.down_and_failures = (self.down_and_failures & 0x7f) | (u8::from(down) << 7);
    }

    fn failures(&self) -> u8 {
        self.down_and_failures & 0x7f
    }

    fn set_failures(&mut self, failures: u8) {
        self.down_and_failures = (self.down_and_failures & 0x80) | failures.min(0x7f);
    }

    /// Move to `state` at `now` (a state entered again keeps its start).
    fn enter(&mut self, state: DeviceState, now: Time) {
        if self.state != state {
            self.state = state;
            self.since_ms = now.as_ms_u32();
        }
    }
}

/// The user's privacy settings, which the device applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserSettings {
    pub hide_last_seen: bool,
    pub read_receipts: bool,
}

/// Which users' devices a process holds: users `u` with `u % shards == shard`, local user
/// `i` being user `i * shards + shard`, each with `slots` device slots (1 or 2).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub shard: u32,
    pub shards: u32,
    pub users: usize,
    pub slots: usize,
    /// `shards` as a divisor by multiplication: a frame's device is found by division.
    by_shards: StrengthReducedU32,
    /// `log2(slots)`.
    slot_bits: u32,
}

impl Layout {
    /// The layout of process `shard` of `shards`, holding `users` users with `slots` device
    /// slots each.
    pub fn new(shard: u32, shards: u32, users: usize, slots: usize) -> Layout {
        assert!(slots == 1 || slots == 2, "a user has one or two device slots");
        assert!(shard < shards, "shard {shard} of {shards}");
        Layout {
            shard,
            shards,
            users,
            slots,
            by_shards: StrengthReducedU32::new(shards),
            slot_bits: slots.trailing_zeros(),
        }
    }

    /// The index of a device of this process.
    #[inline]
    pub fn index(&self, d: DeviceId) -> usize {
        let (i, rem) = StrengthReducedU32::div_rem(d.user.0, self.by_shards);
        assert_eq!(rem, self.shard, "{d:?} belongs to another process");
        ((i as usize) << self.slot_bits) + usize::from(d.slot.0)
    }

    /// The device at an index.
    #[inline]
    pub fn device(&self, index: usize) -> DeviceId {
        let slot = index & ((1 << self.slot_bits) - 1);
        DeviceId { user: self.user(index >> self.slot_bits), slot: DeviceSlot(slot as u8) }
    }

    /// Local user `i`.
    #[inline]
    pub fn user(&self, i: usize) -> UserId {
        UserId(i as u32 * self.shards + self.shard)
    }
}

/// What can happen to a device besides the workload's own calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceInput {
    /// The user opens the app: the device connects through the load balancer.
    AppOpen { settings: UserSettings },
    /// The user closes the app: a clean disconnect.
    AppClose,
    /// The device lost its network; the server is not told.
    NetworkLost,
    /// The network is back.
    NetworkBack,
    /// A retry the device asked for is due.
    RetryDue { settings: UserSettings },
    /// The connection (or attempt) `epoch` to `server` is gone: its process crashed and its
    /// host reset the connection, or the device's pings to a lost host went unanswered. A
    /// later connection, to that server restarted or another, is not affected.
    ConnectionLost { server: ServerId, epoch: u32 },
    /// The connect attempt `epoch` to `server` failed: refused by the host of a dead
    /// process, or timed out against a lost host.
    ConnectFailed { server: ServerId, epoch: u32 },
}

/// What a device asks of its environment, or reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceOutput {
    /// Put a frame on the device's connection to `server`.
    Frame { device: DeviceId, server: ServerId, frame: DeviceFrame },
    /// Call back with `RetryDue` at `at`.
    RetryAt { device: DeviceId, at: Time },
    /// The connection was accepted.
    Connected { device: DeviceId, server: ServerId },
    /// A server refused the connection; the device retries later.
    Refused { device: DeviceId, server: ServerId },
    /// The connection or attempt to `server` was lost to a fault (`ConnectionLost`,
    /// `ConnectFailed`); the device retries later. `connected`: it had been accepted.
    Lost { device: DeviceId, server: ServerId, connected: bool },
    /// The server closed the connection and asked the device to connect again.
    GoneAway { device: DeviceId, server: ServerId },
    /// The device showed a message (`fetched`: at the end of a catch-up; `inserted`: put in
    /// its place above newer messages of its conversation shown before it, rather than
    /// added at the end).
    Shown { device: DeviceId, msg: ChatMessage, fetched: bool, inserted: bool },
    /// An arrival the device had shown already: acknowledged again, not shown.
    Duplicate { device: DeviceId, msg: ChatMessage },
    /// The catch-up that began at `since` is complete: the device is live.
    CaughtUp { device: DeviceId, since: Time },
    /// Live again, the device sent again `count` messages it had no ✓ for.
    SentAgain { device: DeviceId, count: usize },
    /// The connection ended during a catch-up; `held` arrivals were dropped unacknowledged.
    CatchUpInterrupted { device: DeviceId, held: usize },
    /// The ✓ arrived (`first`: the first for this client message; `abandoned`: the user
    /// had closed the app while waiting for it); `ticks` is the shown state when it changed.
    SentAckSeen { device: DeviceId, msg: ChatMessage, first: bool, abandoned: bool, ticks: Option<ReceiptState> },
    /// The user closed the app with a send sent at `sent_at` still waiting for its ✓.
    Abandoned { device: DeviceId, sent_at: Time },
    /// A receipt arrived; `ticks` is the shown state (before, after) when it changed
    /// (`None` after: settled at read and forgotten).
    ReceiptSeen { device: DeviceId, receipt: Receipt, ticks: Option<(Option<ReceiptState>, Option<ReceiptState>)> },
    /// A watched user's presence arrived.
    PresenceSeen { device: DeviceId, update: PresenceUpdate },
    /// A frame reached a device that no longer has the connection it came on (the app
    /// closed or the network went while it was on its way).
    Unheard { device: DeviceId, frame: ServerFrame },
}

/// The devices of one process.
#[derive(Debug)]
pub struct Devices {
    config: DeviceConfig,
    layout: Layout,
    balancer: Balancer,
    devices: Vec<ClientDevice>,
    /// Arrivals held by devices catching up.
    held: FxHashMap<DeviceKey, Vec<ChatMessage>>,
    /// One bit per device: it has a connection (catching up or live). Most frames need only
    /// this, and a bitmap of a million devices stays in cache where their records do not.
    connected: Vec<u64>,
    displayed: Displayed,
    sent: SentMessages,
    /// Sends without their ✓ yet, per device index: (client sequence, to, sent at, the
    /// connection's epoch). They are sent again once the device has a new connection (a ✓
    /// lost with a closed connection, or a server that died before it could send one).
    unacked_sends: FxHashMap<u32, SmallVec<[UnackedSend; 1]>>,
}

/// A send without its ✓ yet.
#[derive(Clone, Copy, Debug)]
struct UnackedSend {
    client_seq: u32,
    to: Recipient,
    sent_at: Time,
    /// The epoch of the connection it last went on.
    epoch: u32,
    /// The user closed the app before its ✓ came (it waits for the next connection).
    abandoned: bool,
}

/// The most arrivals a device holds during one catch-up; a fetch pushes at most the
/// chat server's `FETCH_ENTRIES_MAX`, and live arrivals during a catch-up are few. Beyond
/// this the device drops arrivals unacknowledged: the server hands them back.
pub const HELD_PER_DEVICE_MAX: usize = 16_384;
const _: () = assert!(HELD_PER_DEVICE_MAX > crate::chat_server::FETCH_ENTRIES_MAX);

impl Devices {
    /// The same devices, their record of what they showed made for about `pairs` (device,
    /// 1:1 conversation) pairs (before anything is shown).
    pub fn expecting_shown(mut self, pairs: usize) -> Devices {
        assert!(self.displayed.is_empty(), "sized before anything is shown");
        self.displayed = Displayed::with_capacity(pairs);
        self
    }

    /// The devices of `layout`, all closed.
    pub fn new(layout: Layout, config: DeviceConfig) -> Devices {
        Devices {
            balancer: Balancer::new(config.servers, config.balancer),
            config,
            layout,
            devices: vec![ClientDevice::default(); layout.users * layout.slots],
            connected: vec![0; (layout.users * layout.slots).div_ceil(64)],
            held: FxHashMap::default(),
            displayed: Displayed::default(),
            sent: SentMessages::default(),
            unacked_sends: FxHashMap::default(),
        }
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Device slots held.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the process holds no device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The state of the device at `index`.
    pub fn state(&self, index: usize) -> DeviceState {
        self.devices[index].state
    }

    /// The server the device at `index` is connected to, if it is.
    #[inline]
    pub fn server(&self, index: usize) -> Option<ServerId> {
        if !self.is_connected(index) {
            return None;
        }
        let d = &self.devices[index];
        assert!(d.state.is_connected(), "the connected bitmap agrees with the state");
        d.server()
    }

    /// The epoch of the device's current (or last) connection or attempt.
    pub fn epoch(&self, index: usize) -> u32 {
        self.devices[index].epoch
    }

    /// The server of the device's connection or connect attempt, if it has one.
    pub fn attempt_server(&self, index: usize) -> Option<ServerId> {
        let d = &self.devices[index];
        (d.state == DeviceState::Connecting || d.state.is_connected()).then_some(d.server()).flatten()
    }

    /// Whether the device at `index` has a connection.
    #[inline]
    pub fn is_connected(&self, index: usize) -> bool {
        self.connected[index / 64] & (1 << (index % 64)) != 0
    }

    /// Devices with a connection.
    pub fn connected_count(&self) -> usize {
        self.connected.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn set_connected(&mut self, index: usize, connected: bool) {
        let (word, bit) = (&mut self.connected[index / 64], 1u64 << (index % 64));
        if connected {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    /// A hint that the device at `index` is about to be used (a send, a read): its record
    /// is loaded meanwhile.
    #[inline]
    pub fn prefetch_device(&self, index: usize) {
        if let Some(d) = self.devices.get(index) {
            crate::prefetch(d);
        }
    }

    /// A hint that the device at `index` is about to get `frame`: its record, and the
    /// entry the frame will look up (what the device has shown of a pushed message's
    /// conversation, the ticks of its own message), are loaded meanwhile.
    #[inline]
    pub fn prefetch(&self, index: usize, frame: &ServerFrame) {
        self.prefetch_device(index);
        match frame {
            ServerFrame::Push { msg } => self.displayed.prefetch(self.layout.device(index), msg.conversation),
            ServerFrame::SentAck { msg } => self.sent.prefetch(msg.client_id()),
            ServerFrame::Receipt { receipt, .. } => self.sent.prefetch(receipt.msg.client_id()),
            _ => {}
        }
    }

    /// The load balancer these devices connect through.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Test support: steer every connect to `server` by taking the others out of service
    /// for a long time.
    #[cfg(test)]
    pub(crate) fn steer(&mut self, server: ServerId, now: Time) {
        self.balancer = Balancer::new(self.config.servers, self.config.balancer);
        for s in 0..self.config.servers as u16 {
            if s != server.0 {
                self.balancer.take_out(ServerId(s), now);
                self.balancer.take_out(ServerId(s), now + std::time::Duration::from_secs(1_000_000));
            }
        }
    }

    /// Consecutive failed connect attempts of the device at `index`.
    pub fn failures(&self, index: usize) -> u32 {
        u32::from(self.devices[index].failures())
    }

    /// The inbox position the device at `index` has caught up to.
    pub fn cursor(&self, index: usize) -> InboxPos {
        self.devices[index].cursor
    }

    /// When the device at `index` entered its current state (to the millisecond).
    pub fn since(&self, index: usize) -> Time {
        Time::from_ms(u64::from(self.devices[index].since_ms))
    }

    /// Whether the ticks of `id`, sent by one of these devices, are still followed (not
    /// settled at read and forgotten).
    pub fn sent_holds(&self, id: ClientMsgId) -> bool {
        self.sent.holds(id)
    }

    /// Messages sent by these devices still waiting for a tick.
    pub fn sends_in_flight(&self) -> usize {
        self.sent.in_flight()
    }

    /// Times each row of the sender's tick state machine (`SENDER_TRANSITIONS`) fired on
    /// these devices, and moves no row allows.
    pub fn receipt_transitions(&self) -> (crate::SenderTransitionCounts, u64) {
        self.sent.transitions_fired()
    }

    /// Sends still waiting for their ✓ (sent again on the next connection).
    pub fn sends_unacked(&self) -> usize {
        self.unacked_sends.values().map(|p| p.len()).sum()
    }

    /// Handle one input to the device at `index` at `now`.
    pub fn handle(
        &mut self,
        now: Time,
        index: usize,
        input: DeviceInput,
        rng: &mut impl Rng,
        out: &mut Vec<DeviceOutput>,
    ) {
        let device = self.layout.device(index);
        let d = self.devices[index];
        match input {
            DeviceInput::AppOpen { settings } => {
                if d.state == DeviceState::Closed {
                    self.devices[index].enter(DeviceState::Waiting, now);
                    if !d.network_down() {
                        self.attempt(now, index, settings, rng, out);
                    }
                }
            }
            DeviceInput::AppClose => {
                if let Some(pending) = self.unacked_sends.get_mut(&(index as u32)) {
                    for p in pending.iter_mut().filter(|p| !p.abandoned) {
                        p.abandoned = true;
                        out.push(DeviceOutput::Abandoned { device, sent_at: p.sent_at });
                    }
                }
                let attached = matches!(d.state, DeviceState::Connecting) || d.state.is_connected();
                if let (true, false, Some(server)) = (attached, d.network_down(), d.server()) {
                    let frame = DeviceFrame::Disconnect { epoch: d.epoch, receipts_heard: d.receipts_heard };
                    out.push(DeviceOutput::Frame { device, server, frame });
                }
                self.detach(index, out);
                self.devices[index].enter(DeviceState::Closed, now);
                self.set_connected(index, false);
            }
            DeviceInput::NetworkLost => {
                self.detach(index, out);
                self.set_connected(index, false);
                let d = &mut self.devices[index];
                d.set_network_down(true);
                if d.state != DeviceState::Closed {
                    d.enter(DeviceState::Waiting, now);
                }
            }
            DeviceInput::NetworkBack => {
                let d = &mut self.devices[index];
                d.set_network_down(false);
                if d.state == DeviceState::Waiting {
                    // The connectivity change wakes the app: a fresh start, jittered so that
                    // devices whose network returns together do not reconnect together.
                    d.set_failures(0);
                    let at = now + self.config.backoff.delay(0, rng);
                    out.push(DeviceOutput::RetryAt { device, at });
                }
            }
            DeviceInput::RetryDue { settings } => {
                if d.state == DeviceState::Waiting && !d.network_down() {
                    self.attempt(now, index, settings, rng, out);
                }
            }
            DeviceInput::ConnectionLost { server, epoch } => {
                let attached = d.state == DeviceState::Connecting || d.state.is_connected();
                if attached && d.server() == Some(server) && d.epoch == epoch {
                    // A connection that was up starts its backoff afresh (a crowd losing one
                    // server spreads over the first window); a failing attempt widens it.
                    let connected = d.state.is_connected();
                    self.fail(now, index, server, connected, rng, out);
                }
            }
            DeviceInput::ConnectFailed { server, epoch } => {
                if d.state == DeviceState::Connecting && d.epoch == epoch && d.server() == Some(server) {
                    self.fail(now, index, server, false, rng, out);
                }
            }
        }
    }

    /// The connection or attempt to `server` failed: the balancer takes the server out of
    /// service, and the device waits out its backoff.
    fn fail(
        &mut self,
        now: Time,
        index: usize,
        server: ServerId,
        connected: bool,
        rng: &mut impl Rng,
        out: &mut Vec<DeviceOutput>,
    ) {
        let device = self.layout.device(index);
        self.detach(index, out);
        self.set_connected(index, false);
        self.balancer.take_out(server, now);
        let d = &mut self.devices[index];
        d.enter(DeviceState::Waiting, now);
        d.set_failures(if connected { 0 } else { d.failures().saturating_add(1) });
        let at = now + self.config.backoff.delay(u32::from(d.failures()), rng);
        out.push(DeviceOutput::Lost { device, server, connected });
        out.push(DeviceOutput::RetryAt { device, at });
    }

    fn attempt(
        &mut self,
        now: Time,
        index: usize,
        settings: UserSettings,
        rng: &mut impl Rng,
        out: &mut Vec<DeviceOutput>,
    ) {
        let device = self.layout.device(index);
        let server = self.balancer.pick(now, device, rng);
        let d = &mut self.devices[index];
        d.epoch = d.epoch.wrapping_add(1);
        d.enter(DeviceState::Connecting, now);
        d.set_server(Some(server));
        let frame = DeviceFrame::Connect { epoch: d.epoch, cursor: d.cursor, hide_last_seen: settings.hide_last_seen };
        out.push(DeviceOutput::Frame { device, server, frame });
    }

    /// The connection (or attempt) is gone: what was held unacknowledged is dropped.
    fn detach(&mut self, index: usize, out: &mut Vec<DeviceOutput>) {
        let device = self.layout.device(index);
        if let Some(held) = self.held.remove(&DeviceKey::of(device)) {
            out.push(DeviceOutput::CatchUpInterrupted { device, held: held.len() });
        }
        let d = &mut self.devices[index];
        let attached = d.state == DeviceState::Connecting || d.state.is_connected();
        if let (true, Some(server)) = (attached, d.take_server()) {
            self.balancer.release(server);
        }
    }

    /// A frame from server `from` (the device's current server, or one it had before whose
    /// frames are still on their way) arrives at the device at `index`.
    pub fn on_frame(
        &mut self,
        now: Time,
        index: usize,
        from: ServerId,
        frame: &ServerFrame,
        rng: &mut impl Rng,
        out: &mut Vec<DeviceOutput>,
    ) {
        let device = self.layout.device(index);
        match *frame {
            ServerFrame::ConnectAccepted { server, epoch } => {
                let d = &mut self.devices[index];
                if d.state == DeviceState::Connecting && epoch == d.epoch {
                    d.enter(DeviceState::CatchingUp, now);
                    d.set_failures(0);
                    d.set_server(Some(server));
                    // Receipts are numbered per server: a new connection starts afresh.
                    d.receipts_heard = 0;
                    self.held.insert(DeviceKey::of(device), Vec::new());
                    self.set_connected(index, true);
                    out.push(DeviceOutput::Connected { device, server });
                    self.send_again(index, server, out);
                }
            }
            ServerFrame::ConnectRefused { server, epoch } => {
                let d = self.devices[index];
                if d.state == DeviceState::Connecting && epoch == d.epoch {
                    // Full: the balancer skips it until a health check finds room.
                    if let Some(placed) = d.server() {
                        self.balancer.release(placed);
                    }
                    self.balancer.take_out(server, now);
                    let d = &mut self.devices[index];
                    d.enter(DeviceState::Waiting, now);
                    d.set_server(None);
                    d.set_failures(d.failures().saturating_add(1));
                    let at = now + self.config.backoff.delay(u32::from(d.failures()), rng);
                    out.push(DeviceOutput::Refused { device, server });
                    out.push(DeviceOutput::RetryAt { device, at });
                }
            }
            _ if !self.is_connected(index) || self.devices[index].server() != Some(from) => {
                // A frame for a connection the device no longer has: gone with it. One
                // server's frames to a device keep their order, so a frame of an earlier
                // connection to the current server arrived before its acceptance; one from
                // another server can still arrive after it (a slow link), and must not be
                // taken for this connection's (an old catch-up's end would end this one).
                out.push(DeviceOutput::Unheard { device, frame: *frame });
            }
            ServerFrame::Push { msg } => self.on_push(now, index, msg, out),
            ServerFrame::FetchDone { upto } => self.on_fetch_done(now, index, upto, out),
            ServerFrame::SentAck { msg } => {
                let mut abandoned = false;
                if let Some(pending) = self.unacked_sends.get_mut(&(index as u32)) {
                    pending.retain(|p| {
                        abandoned |= p.client_seq == msg.client_seq && p.abandoned;
                        p.client_seq != msg.client_seq
                    });
                    if pending.is_empty() {
                        self.unacked_sends.remove(&(index as u32));
                    }
                }
                let (first, changed) = self.sent.on_server_ack(msg.client_id());
                out.push(DeviceOutput::SentAckSeen {
                    device,
                    msg,
                    first,
                    abandoned,
                    ticks: changed.then_some(ReceiptState::Sent),
                });
            }
            ServerFrame::Receipt { receipt, seq } => {
                self.devices[index].receipts_heard = seq;
                out.push(DeviceOutput::Frame { device, server: from, frame: DeviceFrame::ReceiptsHeard { upto: seq } });
                let ticks = self.sent.on_receipt(receipt.msg.client_id(), receipt.event());
                out.push(DeviceOutput::ReceiptSeen { device, receipt, ticks });
            }
            ServerFrame::PresenceUpdate { update } => out.push(DeviceOutput::PresenceSeen { device, update }),
            ServerFrame::GoAway { server, epoch } => {
                if self.devices[index].epoch as u8 == epoch {
                    // The server closed this connection and asks for a new one: not a
                    // failure (the server stays in service), a fresh start with jitter.
                    self.detach(index, out);
                    self.set_connected(index, false);
                    let d = &mut self.devices[index];
                    d.enter(DeviceState::Waiting, now);
                    d.set_failures(0);
                    let at = now + self.config.backoff.delay(0, rng);
                    out.push(DeviceOutput::GoneAway { device, server });
                    out.push(DeviceOutput::RetryAt { device, at });
                }
            }
        }
    }

    fn on_push(&mut self, now: Time, index: usize, msg: ChatMessage, out: &mut Vec<DeviceOutput>) {
        let device = self.layout.device(index);
        let server = self.devices[index].server().expect("a connected device has a server");
        if self.devices[index].state == DeviceState::CatchingUp {
            if self.displayed.has_shown(device, &msg) {
                // Shown before (a repeat of a push whose ACK was lost): that survives a
                // close, so it is acknowledged at once.
                out.push(DeviceOutput::Duplicate { device, msg });
                ack(device, server, msg, now, out);
            } else if let Some(held) = self.held.get_mut(&DeviceKey::of(device)) {
                if held.len() < HELD_PER_DEVICE_MAX {
                    held.push(msg);
                }
            }
            return;
        }
        self.show(device, msg, false, false, out);
        ack(device, server, msg, now, out);
    }

    fn on_fetch_done(&mut self, now: Time, index: usize, upto: InboxPos, out: &mut Vec<DeviceOutput>) {
        let device = self.layout.device(index);
        if self.devices[index].state != DeviceState::CatchingUp {
            return;
        }
        let server = self.devices[index].server().expect("a connected device has a server");
        let Some(mut held) = self.held.remove(&DeviceKey::of(device)) else { return };
        // Fetched messages came first on the socket, live ones after: show all in id order,
        // each once, and acknowledge each now that it is shown.
        // (Planted: the device trusts the server's order, which the plant reverses, and adds
        // each at the end of its conversation.)
        let trusted = crate::plant::planted(crate::plant::Plant::CatchUpUnsorted);
        if !trusted {
            held.sort_unstable_by_key(|m| m.id);
        }
        for msg in held {
            self.show(device, msg, true, trusted, out);
            ack(device, server, msg, now, out);
        }
        let since = self.since(index);
        let d = &mut self.devices[index];
        d.cursor = d.cursor.max(upto);
        if crate::plant::planted(crate::plant::Plant::CursorSkipsOne) {
            d.cursor = InboxPos(d.cursor.0 + 1);
        }
        d.enter(DeviceState::Live, now);
        out.push(DeviceOutput::CaughtUp { device, since });
    }

    /// Connected again: what was sent on an earlier connection without a ✓ goes again, in
    /// the order it was sent, before anything sent on this one (a conversation's messages
    /// then reach this server, and are published, in the order they were written).
    fn send_again(&mut self, index: usize, server: ServerId, out: &mut Vec<DeviceOutput>) {
        let device = self.layout.device(index);
        let epoch = self.devices[index].epoch;
        if let Some(pending) = self.unacked_sends.get_mut(&(index as u32)) {
            let mut count = 0;
            for p in pending.iter_mut().filter(|p| p.epoch != epoch) {
                p.epoch = epoch;
                count += 1;
                let frame = DeviceFrame::Send { to: p.to, client_seq: p.client_seq, sent_at: p.sent_at };
                out.push(DeviceOutput::Frame { device, server, frame });
            }
            if count > 0 {
                out.push(DeviceOutput::SentAgain { device, count });
            }
        }
    }

    /// Show `msg` on `device` once, in its place (or, `appending`, at the end whatever its
    /// id: the planted catch-up-unsorted's device, which trusts the order it was sent).
    fn show(
        &mut self,
        device: DeviceId,
        msg: ChatMessage,
        fetched: bool,
        appending: bool,
        out: &mut Vec<DeviceOutput>,
    ) {
        match self.displayed.show(device, &msg) {
            Showing::Appended => out.push(DeviceOutput::Shown { device, msg, fetched, inserted: false }),
            Showing::Inserted => out.push(DeviceOutput::Shown { device, msg, fetched, inserted: !appending }),
            Showing::Repeat => out.push(DeviceOutput::Duplicate { device, msg }),
        }
    }

    /// The user of the phone at `index` sends a message to `to`, if the phone is connected:
    /// the frame to put on its connection, with a fresh client sequence number (which
    /// makes a retried send recognisable).
    pub fn send(&mut self, now: Time, index: usize, to: Recipient) -> Option<(ServerId, DeviceFrame)> {
        self.server(index)?;
        let client_seq = self.next_seq(index);
        self.send_numbered(now, index, to, client_seq)
    }

    /// A fresh client sequence number of the device at `index` (below 2^29: the bits above
    /// carry a media message's kind, `MediaKind::tag_seq`). A media send takes its number
    /// when the user taps send, to name its upload, and sends with it once uploaded.
    pub fn next_seq(&mut self, index: usize) -> u32 {
        let d = &mut self.devices[index];
        let client_seq = d.next_seq;
        d.next_seq = (d.next_seq + 1) & ((1 << crate::CLIENT_SEQ_BITS) - 1);
        client_seq
    }

    /// `send` under the client sequence number `client_seq` the device gave it before.
    pub fn send_numbered(
        &mut self,
        now: Time,
        index: usize,
        to: Recipient,
        client_seq: u32,
    ) -> Option<(ServerId, DeviceFrame)> {
        let server = self.server(index)?;
        let device = self.layout.device(index);
        self.sent.on_send(ClientMsgId { sender: device.user, seq: client_seq });
        let epoch = self.devices[index].epoch;
        let pending = UnackedSend { client_seq, to, sent_at: now, epoch, abandoned: false };
        self.unacked_sends.entry(index as u32).or_default().push(pending);
        Some((server, DeviceFrame::Send { to, client_seq, sent_at: now }))
    }

    /// The user of the phone at `index` writes a message to `to` while the app is open but
    /// has no connection (between reconnect attempts, or with its network gone): it waits
    /// in the app, with a fresh client sequence number, and goes on the next connection.
    /// Returns `None` if the app is closed (no message is written), else whether the
    /// device's own network is down (the wait is then the user's, not the system's: the
    /// send is marked abandoned, and left out of availability like one the user closed the
    /// app on).
    pub fn queue_send(&mut self, now: Time, index: usize, to: Recipient) -> Option<bool> {
        let d = &self.devices[index];
        if d.state == DeviceState::Closed || d.state.is_connected() {
            return None;
        }
        let client_seq = self.next_seq(index);
        self.queue_send_numbered(now, index, to, client_seq)
    }

    /// A media send whose upload completed while the phone at `index` has no connection:
    /// the message waits in the app, under the client sequence number `client_seq` the
    /// device gave it at the tap, and goes on the next connection, even if the user closed
    /// the app meanwhile (the tap wrote it; the upload went on). Returns whether the wait is
    /// the user's own (the app closed or its network down: the send is marked abandoned,
    /// and left out of availability, like a send the user closed the app on), or `None`
    /// when the phone is connected (`send_numbered` sends it).
    pub fn queue_send_numbered(&mut self, now: Time, index: usize, to: Recipient, client_seq: u32) -> Option<bool> {
        let device = self.layout.device(index);
        let d = &self.devices[index];
        if d.state.is_connected() {
            return None;
        }
        let users_own = d.network_down() || d.state == DeviceState::Closed;
        self.sent.on_send(ClientMsgId { sender: device.user, seq: client_seq });
        // An epoch no connection has: it goes on the next one accepted.
        let pending = UnackedSend { client_seq, to, sent_at: now, epoch: u32::MAX, abandoned: users_own };
        self.unacked_sends.entry(index as u32).or_default().push(pending);
        Some(users_own)
    }

    /// The frame that puts media bytes on the connection of the device at `index` (the
    /// planted chat-server relay), if it has one.
    pub fn media_bytes(&self, index: usize, key: crate::MediaKey, bytes: u32) -> Option<(ServerId, DeviceFrame)> {
        self.server(index).map(|server| (server, DeviceFrame::MediaBytes { key, bytes }))
    }

    /// Whether the app at `index` is open (a closed app sends nothing).
    pub fn app_open(&self, index: usize) -> bool {
        self.devices[index].state != DeviceState::Closed
    }

    /// The device's heartbeat is due: it beats on its connection's server, if it has one.
    #[inline]
    pub fn heartbeat(&self, index: usize) -> Option<(ServerId, DeviceFrame)> {
        let frame = DeviceFrame::Heartbeat { receipts_heard: self.devices[index].receipts_heard };
        self.server(index).map(|server| (server, frame))
    }

    /// The user reads `msg` on the device at `index`: a read receipt goes out if the device
    /// is connected and the user has read receipts on.
    pub fn read(
        &self,
        now: Time,
        index: usize,
        msg: ChatMessage,
        settings: UserSettings,
    ) -> Option<(ServerId, DeviceFrame)> {
        let server = self.server(index)?;
        // Group read receipts go out whatever the member's 1:1 setting, as WhatsApp's do:
        // blue could never show in a large group otherwise.
        let sends = settings.read_receipts || msg.conversation.group_id().is_some();
        sends.then_some((server, DeviceFrame::ReadAck { msg, at: now }))
    }

    /// The user opens the chat with `target` on the device at `index`: it subscribes to the
    /// target's presence, if connected.
    pub fn subscribe(&self, index: usize, target: UserId) -> Option<(ServerId, DeviceFrame)> {
        Some((self.server(index)?, DeviceFrame::Subscribe { target }))
    }
}

/// Acknowledge a message the device has (or had) shown.
fn ack(device: DeviceId, server: ServerId, msg: ChatMessage, now: Time, out: &mut Vec<DeviceOutput>) {
    out.push(DeviceOutput::Frame { device, server, frame: DeviceFrame::DeliveredAck { msg, at: now } });
}

#[cfg(test)]
mod tests;
