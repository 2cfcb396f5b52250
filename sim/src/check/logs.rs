//! What processes record for the checkers.

use wasim_model::{ConversationId, DeviceKey, MessageId, PresenceUpdate, ReceiptState, Time, UserId};

/// A time in a log: whole milliseconds (49 days fit), so that logs of millions of entries
/// stay compact; the checkers need no finer resolution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogMs(pub u32);

impl LogMs {
    /// The log time of `t`.
    pub fn of(t: Time) -> LogMs {
        LogMs(t.as_ms_u32())
    }

    /// Back to a `Time`.
    pub fn time(self) -> Time {
        Time::from_ms(u64::from(self.0))
    }
}

impl From<LogMs> for Time {
    fn from(t: LogMs) -> Time {
        t.time()
    }
}

impl std::fmt::Display for LogMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.time().fmt(f)
    }
}

/// A message shown on a device: 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Display {
    pub device: DeviceKey,
    pub at: LogMs,
    pub conversation: ConversationId,
    pub id: MessageId,
    /// The client message it is (`ClientMsgId::key`): a retried send can come under another id.
    pub client: u64,
}

/// A device with a connection when the run ends: 16 bytes (one per device of the run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectedAtEnd {
    pub device: DeviceKey,
    /// When its catch-up began, if it is still catching up.
    pub catching_up_since: Option<LogMs>,
    /// The server it is connected to.
    pub server: wasim_model::ServerId,
}

/// A presence notification a watcher received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceView {
    pub watcher: DeviceKey,
    pub update: PresenceUpdate,
    pub received_at: Time,
}

/// Everything recorded for the checkers, merged over processes.
#[derive(Clone, Debug, Default)]
pub struct Logs {
    /// Messages acknowledged (✓) to their senders: id, recipient, when.
    pub acked: Vec<(MessageId, UserId, LogMs)>,
    /// Displays in the order each device showed them.
    pub displays: Vec<Display>,
    /// (device, id) of every display, sorted (filled by `sort`).
    pub displays_by_device: Vec<(DeviceKey, MessageId)>,
    /// Every change of a sender's view: client-id key, new state, when.
    pub sender_views: Vec<(u64, ReceiptState, LogMs)>,
    /// Read receipts the senders received: message, reading device, when.
    pub reads: Vec<(MessageId, DeviceKey, LogMs)>,
    pub presence_views: Vec<PresenceView>,
    /// Devices with a connection at the end, sorted.
    pub connected: Vec<ConnectedAtEnd>,
    /// When each device first connected: (device, time), sorted.
    pub registered: Vec<(DeviceKey, Time)>,
    /// Ids of every replica row, sorted (one entry per replica).
    pub stored: Vec<MessageId>,
    /// Presence key lifetimes of watched users: (user, set, expired).
    pub key_lifetimes: Vec<(UserId, Time, Time)>,
    /// Messages still on the network or waiting to leave a process at the end, sorted.
    pub in_transit: Vec<MessageId>,
    /// The session store's devices online at the end, with their servers, sorted.
    pub sessions: Vec<(DeviceKey, wasim_model::ServerId)>,
    /// Retried sends the routers dropped as repeats: (the retry's id, the id its client
    /// message was routed under), sorted. The ✓ of a retry names the retry's id.
    pub aliases: Vec<(MessageId, MessageId)>,
}

impl Logs {
    /// Append another process's logs.
    pub fn append(&mut self, o: &mut Logs) {
        self.acked.append(&mut o.acked);
        self.displays.append(&mut o.displays);
        self.sender_views.append(&mut o.sender_views);
        self.reads.append(&mut o.reads);
        self.presence_views.append(&mut o.presence_views);
        self.connected.append(&mut o.connected);
        self.registered.append(&mut o.registered);
        self.stored.append(&mut o.stored);
        self.key_lifetimes.append(&mut o.key_lifetimes);
        self.in_transit.append(&mut o.in_transit);
        self.aliases.append(&mut o.aliases);
        self.sessions.append(&mut o.sessions);
    }

    /// Sort what the checkers search (`displays` are taken out of the logs meanwhile).
    /// Displays keep each device's own order (a device lives in one process, which logs
    /// in time order).
    pub fn sort(&mut self, displays: &[Display]) {
        self.displays_by_device = displays.iter().map(|d| (d.device, d.id)).collect();
        self.displays_by_device.sort_unstable();
        // These arrive as one sorted run per process: the stable sort merges runs.
        self.connected.sort_unstable_by_key(|c| c.device);
        self.registered.sort();
        self.stored.sort();
        self.key_lifetimes.sort_unstable_by_key(|&(u, s, _)| (u, s));
        self.in_transit.sort_unstable();
        self.in_transit.dedup();
        self.aliases.sort_unstable();
    }
}
