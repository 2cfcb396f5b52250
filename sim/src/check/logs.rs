//! What processes record for the checkers.

use wasim_model::{ConversationId, DeviceKey, MessageId, PresenceUpdate, ReceiptState, Table, Time, UserId};

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
    /// The client message it is (`ClientMsgId::key`, whose top bits are free: sender ids
    /// stay below 2^30), and in the top bit whether the device inserted it above newer
    /// messages of its conversation rather than adding it at the end.
    client_and_inserted: u64,
}

const INSERTED: u64 = 1 << 63;

impl Display {
    /// `client`: the message's `ClientMsgId::key`; `inserted`: put in place above newer ones.
    pub fn new(
        device: DeviceKey,
        at: LogMs,
        conversation: ConversationId,
        id: MessageId,
        client: u64,
        inserted: bool,
    ) -> Display {
        debug_assert_eq!(client & INSERTED, 0, "client keys leave the top bit free");
        Display { device, at, conversation, id, client_and_inserted: client | if inserted { INSERTED } else { 0 } }
    }

    /// The client message shown (`ClientMsgId::key`): a retried send can come under another id.
    pub fn client(&self) -> u64 {
        self.client_and_inserted & !INSERTED
    }

    /// Whether the device put it in its place above newer messages of its conversation.
    pub fn inserted(&self) -> bool {
        self.client_and_inserted & INSERTED != 0
    }
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

/// A group message acknowledged (✓) to its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckedGroup {
    /// The sender's client-message key.
    pub key: u64,
    pub id: MessageId,
    pub group: wasim_model::GroupId,
    pub sender: UserId,
    /// When the sender sent it, and when its ✓ came.
    pub sent: LogMs,
    pub acked: LogMs,
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
    /// Group messages acknowledged (✓) to their senders.
    pub acked_groups: Vec<AckedGroup>,
    /// Displays in the order each device showed them.
    pub displays: Vec<Display>,
    /// (device, id) of every display, sorted (filled by `sort`).
    pub displays_by_device: Vec<(DeviceKey, MessageId)>,
    /// Changes of a sender's view the checks after the run need (a group message's, for
    /// the aggregate; a sampled one's, for receipt liveness): client-id key, new state,
    /// when. Every change is checked as it comes (`sender_view`).
    pub sender_views: Vec<(u64, ReceiptState, LogMs)>,
    /// The last view of each message its sender still follows, for the check as the run
    /// goes (this process's own: not merged).
    pub(crate) views_followed: Table<u64, Option<ReceiptState>>,
    /// Violations found as the run went.
    pub early: Vec<super::Violation>,
    /// The checkers follow one conversation in this many (0 or 1: all): what concerns the
    /// others is not logged (`Logs::checks`).
    pub conversations_one_in: u32,
    /// Read receipts the senders received: message, reading device, when.
    pub reads: Vec<(MessageId, DeviceKey, LogMs)>,
    /// Group messages members read (their read ACK left the device): the client message
    /// (`ClientMsgId::key`: a retried send comes under another id), member, when.
    pub member_reads: Vec<(u64, UserId, LogMs)>,
    pub presence_views: Vec<PresenceView>,
    /// Devices with a connection at the end, sorted.
    pub connected: Vec<ConnectedAtEnd>,
    /// When each web client first connected, and when a session shard first wrote its
    /// session: (device, time), sorted (a phone is owed every message, linked or not).
    pub registered: Vec<(DeviceKey, Time)>,
    /// Ids of every replica row, sorted (one entry per replica).
    pub stored: Vec<MessageId>,
    /// Presence key lifetimes of watched users: (user, set, expired).
    pub key_lifetimes: Vec<(UserId, Time, Time)>,
    /// ✓s the chat servers sent, for the messages the quorum check samples: (id, when).
    pub acks_sent: Vec<(MessageId, Time)>,
    /// Receipts issued (a recipient device's delivered or read ACK reached a server), for
    /// the client messages receipt liveness samples (`check::views_sampled`): (sender's
    /// client-message key, id, sender, when, which).
    pub receipts_issued: Vec<(u64, MessageId, UserId, LogMs, ReceiptState)>,
    /// Messages whose receipts are still on the network or waiting to leave a process at
    /// the end, sorted.
    pub receipts_in_transit: Vec<MessageId>,
    /// Replica writes of those messages: (id, replica node, when applied), sorted.
    pub replica_writes: Vec<(MessageId, u32, Time)>,
    /// Connected spells of the devices of users with a web client: (device, from, until;
    /// `LogMs(u32::MAX)` if still connected at the end; its server), sorted by device then
    /// start.
    pub connected_spells: Vec<(DeviceKey, LogMs, LogMs, wasim_model::ServerId)>,
    /// Expiries of watched users' keys: (user, last write, expiry), on the shard's clock.
    pub key_expiries: Vec<(UserId, Time, Time)>,
    /// Messages still on the network or waiting to leave a process at the end, sorted.
    pub in_transit: Vec<MessageId>,
    /// Messages a router or a fan-out still held at the end, each with a request it
    /// waited on for it: (message, asking process, request id).
    pub messages_awaiting: Vec<(MessageId, u16, u64)>,
    /// Awaited requests and replies (`Msg::awaited_request`) waiting to leave a process at
    /// the end: (asking process, request id).
    pub requests_in_transit: Vec<(u16, u64)>,
    /// Devices whose server closed their connection and whose "go away" is still on its
    /// way at the end (they do not know yet), sorted.
    pub closing_in_transit: Vec<DeviceKey>,
    /// Devices whose server finished their catch-up and whose "fetch done" is still on its
    /// way at the end, sorted.
    pub caught_up_in_transit: Vec<DeviceKey>,
    /// Devices whose catch-up waits at the end on a read of a row that had no quorum of
    /// replicas up (a Cassandra outage holds it up by design: reads are quorum reads), with
    /// when a quorum was back (the end: not yet), sorted.
    pub catch_ups_blocked: Vec<(DeviceKey, LogMs)>,
    /// The session store's devices online at the end, with their servers, sorted.
    pub sessions: Vec<(DeviceKey, wasim_model::ServerId)>,
    /// Retried sends the routers dropped as repeats: (the retry's id, the id its client
    /// message was routed under), sorted. The ✓ of a retry names the retry's id.
    pub aliases: Vec<(MessageId, MessageId)>,
    /// Media objects stored: (key, when the last byte was stored), sorted.
    pub media_stored: Vec<(u64, LogMs)>,
    /// Media messages chat servers accepted: (key, when), sorted.
    pub media_refs: Vec<(u64, LogMs)>,
}

impl Logs {
    /// Logs that follow one conversation in `one_in` (see `check::checks_conversation`).
    pub fn following(one_in: u32) -> Logs {
        Logs { conversations_one_in: one_in, ..Logs::default() }
    }

    /// Whether the presence checker follows what watchers see of `user` (see
    /// `check::checks_user`).
    #[inline]
    pub fn checks_user(&self, user: UserId) -> bool {
        super::checks_user(user, self.conversations_one_in)
    }

    /// Whether the checkers follow `conversation`: what concerns it is logged.
    #[inline]
    pub fn checks(&self, conversation: ConversationId) -> bool {
        super::checks_conversation(conversation, self.conversations_one_in)
    }

    /// The sender's view of client message `key` changed to `state` at `at`. Checked at
    /// once against its last change (3a: it never goes back), and kept for the checks
    /// after the run when `keep`. `followed`: whether the sender still follows the
    /// message's ticks after this change (once settled at read it forgets it, and so does
    /// the check: nothing can change the view again), so that what the check holds lives
    /// as long as what the devices hold, not for the run.
    pub fn sender_view(&mut self, key: u64, state: ReceiptState, at: LogMs, keep: bool, followed: bool) {
        if let Some(&Some(before)) = self.views_followed.get(key) {
            if before > state {
                let detail = format!("sender's view went from {before:?} to {state:?}");
                let subject = format!("client message {}:{}", key >> 32, key & 0xffff_ffff);
                self.early.push(super::violation(3, "receipts monotone", subject, at, detail));
            }
        }
        if followed {
            self.views_followed.insert(key, Some(state));
        } else {
            self.views_followed.remove(key);
        }
        if keep {
            self.sender_views.push((key, state, at));
        }
    }

    /// Messages whose views the check as the run goes follows.
    pub fn views_followed_len(&self) -> usize {
        self.views_followed.len()
    }

    /// The processes' logs merged into one, in the order given. Each merged log is
    /// allocated once at its final size and each part is freed as soon as it is copied, so
    /// the merge holds little more than one copy of the logs (appending part by part
    /// would copy the merged logs at every growth and keep every part's buffer until
    /// the end).
    pub fn gather(mut parts: Vec<Logs>) -> Logs {
        fn merged<T: Copy>(parts: &mut [Logs], field: impl Fn(&mut Logs) -> &mut Vec<T>) -> Vec<T> {
            let mut out = Vec::with_capacity(parts.iter_mut().map(|p| field(p).len()).sum());
            for part in parts.iter_mut() {
                out.extend_from_slice(&std::mem::take(field(part)));
            }
            out
        }
        fn merged_owned<T>(parts: &mut [Logs], field: impl Fn(&mut Logs) -> &mut Vec<T>) -> Vec<T> {
            parts.iter_mut().flat_map(|p| std::mem::take(field(p))).collect()
        }
        let parts = &mut parts[..];
        Logs {
            acked: merged(parts, |l| &mut l.acked),
            acked_groups: merged(parts, |l| &mut l.acked_groups),
            displays: merged(parts, |l| &mut l.displays),
            displays_by_device: Vec::new(),
            sender_views: merged(parts, |l| &mut l.sender_views),
            views_followed: Table::default(),
            conversations_one_in: parts.iter().map(|p| p.conversations_one_in).max().unwrap_or(1),
            early: merged_owned(parts, |l| &mut l.early),
            reads: merged(parts, |l| &mut l.reads),
            member_reads: merged(parts, |l| &mut l.member_reads),
            presence_views: merged(parts, |l| &mut l.presence_views),
            connected: merged(parts, |l| &mut l.connected),
            registered: merged(parts, |l| &mut l.registered),
            stored: merged(parts, |l| &mut l.stored),
            key_lifetimes: merged(parts, |l| &mut l.key_lifetimes),
            key_expiries: merged(parts, |l| &mut l.key_expiries),
            connected_spells: merged(parts, |l| &mut l.connected_spells),
            acks_sent: merged(parts, |l| &mut l.acks_sent),
            receipts_issued: merged(parts, |l| &mut l.receipts_issued),
            receipts_in_transit: merged(parts, |l| &mut l.receipts_in_transit),
            closing_in_transit: merged(parts, |l| &mut l.closing_in_transit),
            caught_up_in_transit: merged(parts, |l| &mut l.caught_up_in_transit),
            catch_ups_blocked: merged(parts, |l| &mut l.catch_ups_blocked),
            replica_writes: merged(parts, |l| &mut l.replica_writes),
            in_transit: merged(parts, |l| &mut l.in_transit),
            messages_awaiting: merged(parts, |l| &mut l.messages_awaiting),
            requests_in_transit: merged(parts, |l| &mut l.requests_in_transit),
            sessions: merged(parts, |l| &mut l.sessions),
            aliases: merged(parts, |l| &mut l.aliases),
            media_stored: merged(parts, |l| &mut l.media_stored),
            media_refs: merged(parts, |l| &mut l.media_refs),
        }
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
        self.connected_spells.sort_unstable_by_key(|&(d, from, _, _)| (d, from));
        self.replica_writes.sort_unstable();
        self.in_transit.sort_unstable();
        self.in_transit.dedup();
        self.receipts_in_transit.sort_unstable();
        self.receipts_in_transit.dedup();
        self.closing_in_transit.sort_unstable();
        self.closing_in_transit.dedup();
        self.caught_up_in_transit.sort_unstable();
        self.caught_up_in_transit.dedup();
        self.catch_ups_blocked.sort_unstable();
        self.catch_ups_blocked.dedup();
        self.aliases.sort_unstable();
        self.media_stored.sort_unstable();
        self.media_refs.sort_unstable();
    }
}
