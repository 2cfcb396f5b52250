//! Invariant checkers, apart from the code they check. Processes record what they
//! observed (logs); after the run each checker reads the merged logs and reports
//! violations. What can be judged as it happens is judged then, and not logged (the
//! sender's views going back: `Logs::sender_view`). Invariants 1, 2, 3, 5, 6, 7, 8 and 9
//! of DESIGN.md are checked here.

mod logs;

pub use logs::{AckedGroup, ConnectedAtEnd, Display, LogMs, Logs, PresenceView};

use serde::Serialize;
use std::time::Duration;
use wasim_model::{DeviceId, DeviceKey, MessageId, PresenceCause, PresenceStatus, ReceiptState, Time, UserId};

/// One invariant violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The invariant's number in DESIGN.md.
    pub invariant: u8,
    pub name: &'static str,
    /// The message or user it concerns.
    pub subject: String,
    /// Simulated time of the violation (or of the end of the run, for a missing event).
    pub at_us: u64,
    pub detail: String,
}

/// At most this many violations of one invariant are listed; the rest are counted.
pub const VIOLATIONS_LISTED_MAX: usize = 20;

/// The outcome of all checkers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// The invariants checked, by number, with their names.
    pub checked: Vec<(u8, &'static str)>,
    /// Violations found, at most `VIOLATIONS_LISTED_MAX` per invariant.
    pub violations: Vec<Violation>,
    /// Violations found in all, per invariant number.
    pub counts: Vec<(u8, u64)>,
    /// What was owed but still on its way when the run ended: not lost.
    pub in_flight: InFlight,
    /// The checkers followed one conversation in this many (1: all; a run too large for
    /// its logs to fit checks a sample, `Scenario::checked_one_in`).
    pub conversations_checked_one_in: u32,
}

/// Messages owed to devices connected at the end, not shown yet but still on their way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InFlight {
    /// Owed to devices whose catch-up was under way at the end.
    pub owed_to_devices_catching_up: u64,
    /// Acknowledged within the in-flight bound before the end.
    pub owed_acked_recently: u64,
    /// On the network, or waiting to leave a process, at the end (a slow link's tail).
    pub owed_in_transit: u64,
    /// The bound: a message acknowledged earlier must have reached a live device.
    pub bound_ms: u64,
}

impl CheckReport {
    fn add(&mut self, v: Violation) {
        let i = self.counts.iter().position(|(n, _)| *n == v.invariant);
        let count = match i {
            Some(i) => {
                self.counts[i].1 += 1;
                self.counts[i].1
            }
            None => {
                self.counts.push((v.invariant, 1));
                1
            }
        };
        if count as usize <= VIOLATIONS_LISTED_MAX {
            self.violations.push(v);
        }
    }

    /// Take in another report's violations and counts (listing at most
    /// `VIOLATIONS_LISTED_MAX` per invariant), keeping counts in invariant order.
    fn merge(&mut self, other: CheckReport) {
        for v in other.violations {
            let listed = self.violations.iter().filter(|w| w.invariant == v.invariant).count();
            if listed < VIOLATIONS_LISTED_MAX {
                self.violations.push(v);
            }
        }
        for (n, c) in other.counts {
            match self.counts.iter_mut().find(|(m, _)| *m == n) {
                Some((_, total)) => *total += c,
                None => self.counts.push((n, c)),
            }
        }
        self.counts.sort_unstable();
        self.in_flight.owed_to_devices_catching_up += other.in_flight.owed_to_devices_catching_up;
        self.in_flight.owed_acked_recently += other.in_flight.owed_acked_recently;
        self.in_flight.owed_in_transit += other.in_flight.owed_in_transit;
    }

    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The facts the checkers need beyond the logs.
pub struct CheckContext {
    pub end: Time,
    /// Replica acknowledgements that make a write durable (the quorum).
    pub quorum: u32,
    /// How long before the end a delivery may still be on its way: a base for the slowest
    /// legitimate path plus the queues' backlog at the end.
    pub in_flight_bound: Duration,
    /// Windows in which a receipt issued may die with a chat server that crashed (receipts
    /// have no replay): receipt liveness does not judge those.
    pub receipts_unprotected: Vec<(Time, Time)>,
    /// The scenario's presence TTL (not the store's own).
    pub presence_ttl: Duration,
    /// When a presence shard failed over or had its clock skewed, and until its keys were
    /// all written again after: users may look offline then by design (README).
    pub presence_faulted: Vec<(Time, Time)>,
    /// Stamps a presence shard made while its clock was skewed, and until its keys were
    /// written again after, on its own clock: they cannot be ordered against the stamps
    /// it made before and after (its clock jumped), so an online view stamped then is not
    /// judged against the key's life.
    pub presence_clock_jumps: Vec<(Time, Time)>,
    /// Whether a user hides last-seen.
    pub hides_last_seen: Box<dyn Fn(wasim_model::UserId) -> bool + Send + Sync>,
    /// The groups and their members: a group message is owed to every member but its
    /// sender.
    pub groups: crate::groups::Groups,
    /// When a user's session shard last came back from a failover before the end (zero:
    /// never down): a catch-up waits for its shard's session write and inbox read, and is
    /// judged from then.
    pub session_back: Box<dyn Fn(wasim_model::UserId) -> Time + Send + Sync>,
    /// When each chat server that crashed was down: (server, down, back up). A device on
    /// one does not know it until a heartbeat goes unanswered, but it is connected to
    /// nothing meanwhile.
    pub servers_down: Vec<(wasim_model::ServerId, Time, Time)>,
    /// By chat server (the Snowflake worker that mints ids): the most its clock ran ahead
    /// in a skew fault, in ms, so that an id's timestamp may be that much later than the
    /// real time it was minted at.
    pub mint_ahead_ms: Vec<u64>,
}

/// Run every checker over the merged logs. With `parallel`, the two independent groups of
/// checkers run on two threads (only outside the simulation, which forbids threads); the
/// report is the same either way.
pub fn check_all(logs: &mut Logs, cx: &CheckContext, parallel: bool) -> CheckReport {
    check_all_with_firsts(logs, cx, parallel).0
}

/// `check_all`, also handing back the members' first times with each group message that
/// the group checker joined (the group stats use them too).
pub fn check_all_with_firsts(logs: &mut Logs, cx: &CheckContext, parallel: bool) -> (CheckReport, GroupFirsts) {
    let mut r = CheckReport {
        checked: vec![
            (1, "no loss"),
            (2, "no duplicate display"),
            (3, "receipts monotone"),
            (4, "group aggregate"),
            (5, "order within a conversation"),
            (6, "routing"),
            (7, "presence"),
            (8, "liveness"),
            (9, "media"),
        ],
        in_flight: InFlight { bound_ms: cx.in_flight_bound.as_millis() as u64, ..InFlight::default() },
        conversations_checked_one_in: logs.conversations_one_in.max(1),
        ..CheckReport::default()
    };
    // Group B reads only what group A does not write.
    let (views, displays) = (std::mem::take(&mut logs.sender_views), std::mem::take(&mut logs.displays));
    let member_reads = std::mem::take(&mut logs.member_reads);
    let acked_groups = logs.acked_groups.clone();
    let group_b = || {
        let mut b = CheckReport::default();
        no_duplicate_by_client(&displays, &mut b);
        let firsts = group_firsts(&member_reads, &displays);
        group_aggregate(&acked_groups, &views, &firsts, cx, &mut b);
        (b, firsts)
    };
    let group_a = |logs: &mut Logs| {
        let mut a = CheckReport::default();
        logs.sort(&displays);
        no_loss(logs, &displays, cx, &mut a);
        acked_on_a_quorum(logs, cx, &mut a);
        routing(logs, &mut a);
        liveness(logs, cx, &mut a);
        no_duplicate_display(logs, &mut a);
        reads_follow_displays(logs, &mut a);
        receipt_liveness(logs, &views, cx, &mut a);
        presence(logs, cx, &mut a);
        media(logs, &mut a);
        order(&displays, &mut a);
        a
    };
    let (a, (b, firsts)) = if parallel {
        std::thread::scope(|s| {
            let b = s.spawn(group_b);
            let a = group_a(logs);
            (a, b.join().expect("checker thread"))
        })
    } else {
        (group_a(logs), group_b())
    };
    r.merge(a);
    r.merge(b);
    // Found as the run went (the sender's views going back).
    for v in &logs.early {
        r.add(v.clone());
    }
    logs.sender_views = views;
    logs.displays = displays;
    logs.member_reads = member_reads;
    (r, firsts)
}

/// Whether the checkers follow `conversation` in a run that checks one conversation in
/// `one_in` (a power of two; `Scenario::checked_one_in`): by a hash of the conversation,
/// so that every process agrees without a word and each conversation followed is followed
/// whole (its messages, displays, reads, receipts and rows). Every one when `one_in` is 1.
#[inline]
pub fn checks_conversation(conversation: wasim_model::ConversationId, one_in: u32) -> bool {
    hashed_one_in(conversation.0, 0xD6E8_FEB8_6659_FD93, one_in)
}

/// Whether the presence checker follows what watchers see of `user` in a run that checks
/// one conversation in `one_in` (it follows one user in as many, by a hash of the user).
#[inline]
pub fn checks_user(user: UserId, one_in: u32) -> bool {
    hashed_one_in(u64::from(user.0), 0x9FB2_1C65_1E98_DF25, one_in)
}

/// Whether the receipt liveness check follows client message `key` (`ClientMsgId::key`):
/// one in 16, by a hash of the key (a retried send keeps its key), so that the sender's
/// views it needs after the run stay a sixteenth of all.
#[inline]
pub fn views_sampled(key: u64) -> bool {
    one_in_16(key)
}

/// Whether the ✓ check follows message `msg`: one message in 16 of the conversations the
/// checkers follow (`logs.checks`), by a hash of its id (so the logs stay small on a large
/// run, and every process agrees without a word). The replicas log a followed message's
/// writes (3 a message) and the servers its ✓s: the card's full load, following one
/// conversation in 64, logged 450 MB of writes when every conversation's were sampled.
#[inline]
pub fn quorum_sampled(msg: &wasim_model::ChatMessage, logs: &Logs) -> bool {
    one_in_16(msg.id.0) && logs.checks(msg.conversation)
}

/// One value in 16, by a multiplicative hash.
#[inline]
fn one_in_16(x: u64) -> bool {
    hashed_one_in(x, 0x9E37_79B9_7F4A_7C15, 16)
}

/// One value of `x` in `one_in` (a power of two; every one for 0 or 1): those whose hash,
/// `x` times the odd `multiplier`, starts with as many zero bits.
#[inline]
fn hashed_one_in(x: u64, multiplier: u64, one_in: u32) -> bool {
    one_in <= 1 || x.wrapping_mul(multiplier) >> (64 - one_in.trailing_zeros()) == 0
}

/// 1 (at the moment of the promise). A ✓ means a quorum of replicas holds the row *then*:
/// for the sampled messages, each ✓ a chat server sent must come after the quorum's
/// writes were applied (distinct replicas; repairs later do not count).
fn acked_on_a_quorum(logs: &Logs, cx: &CheckContext, r: &mut CheckReport) {
    for &(id, at) in &logs.acks_sent {
        let first = logs.replica_writes.partition_point(|w| w.0 < id);
        let mut replicas: Vec<u32> =
            logs.replica_writes[first..].iter().take_while(|w| w.0 == id).filter(|w| w.2 <= at).map(|w| w.1).collect();
        replicas.dedup();
        if (replicas.len() as u32) < cx.quorum {
            let detail = format!(
                "✓ sent at {at} when {} of the {} replica writes a quorum needs were applied",
                replicas.len(),
                cx.quorum
            );
            r.add(violation(1, "no loss", format!("message {id}"), at, detail));
        }
    }
}

/// 9. Media: a message references only an upload the object store completed before a chat
///    server took the message (a failed or abandoned upload is retried or its send fails
///    visibly; it never goes without its object). The other half, that a chat server
///    carries no media bytes, is judged frame by frame as they come (`nodes::chat`).
fn media(logs: &Logs, r: &mut CheckReport) {
    for &(key, at) in &logs.media_refs {
        // Sorted by key, then time: the first store of each key comes first.
        let i = logs.media_stored.partition_point(|&(k, _)| k < key);
        let stored = logs.media_stored.get(i).filter(|&&(k, _)| k == key).map(|&(_, t)| t);
        let detail = match stored {
            Some(t) if t <= at => continue,
            Some(t) => format!("a chat server took the message at {at}, before its upload completed at {t}"),
            None => format!("a chat server took the message at {at}; its upload never completed"),
        };
        r.add(violation(9, "media", wasim_model::MediaKey(key).to_string(), at, detail));
    }
}

/// 9, as it happens: chat server `server` took `frame` (`bytes` on the wire) from `device`
/// at `t`. A frame that carries media bytes (of any size), or is larger than a header and
/// a thumbnail (`FRAME_BYTES_MAX`), breaks the invariant: returns whether it did. A media
/// message's reference is logged for `media` to look its upload up.
pub(crate) fn frame_carried(
    logs: &mut Logs,
    t: Time,
    device: wasim_model::DeviceId,
    server: wasim_model::ServerId,
    frame: &wasim_model::DeviceFrame,
    bytes: u32,
) -> bool {
    let media = frame.media_bytes();
    let broken = media > 0 || bytes > wasim_model::FRAME_BYTES_MAX;
    if broken {
        let detail = format!(
            "chat server {} took a frame of {bytes} bytes from the device, {media} of them media (by design a frame carries a reference and a thumbnail, at most {} bytes; media bytes go to the object store)",
            server.0,
            wasim_model::FRAME_BYTES_MAX
        );
        let subject = DeviceKey::of(device).to_string();
        logs.early.push(violation(9, "media", subject, LogMs::of(t), detail));
    }
    if let wasim_model::DeviceFrame::Send { client_seq, .. } = *frame {
        if wasim_model::MediaKind::of_seq(client_seq).is_some() {
            let key = wasim_model::ClientMsgId { sender: device.user, seq: client_seq }.key();
            logs.media_refs.push((key, LogMs::of(t)));
        }
    }
    broken
}

/// Whether `t` falls in one of `windows` (each inclusive).
fn within(windows: &[(Time, Time)], t: Time) -> bool {
    windows.iter().any(|&(from, until)| from <= t && t <= until)
}

pub(crate) fn violation(
    invariant: u8,
    name: &'static str,
    subject: String,
    at: impl Into<Time>,
    detail: String,
) -> Violation {
    Violation { invariant, name, subject, at_us: at.into().as_us(), detail }
}

/// 1. Every message acknowledged to its sender is durably stored and shown on every
///    recipient device connected at the end of the run, whatever its state. A web client is
///    owed the messages minted after it was linked: it had seen its first connection
///    accepted and the session store had written its session (before that the store does
///    not know it exists, and routes its messages nowhere). What is not shown yet but still on its way is
///    in flight, not lost: owed to a device whose catch-up is under way (invariant 8 judges
///    a catch-up that lasts too long), or acknowledged within the in-flight bound before the
///    end (it may still wait in a queue, on the network or for a retry).
fn no_loss(logs: &Logs, displays: &[Display], cx: &CheckContext, r: &mut CheckReport) {
    // Merge joins over sorted logs: a binary search per message would cost a cache miss
    // per step on logs of millions of entries.
    let mut acked = logs.acked.clone();
    // A retried send acknowledged under its retry's id was delivered under the first
    // attempt's (the router dropped the repeat): judge the message by that one.
    if !logs.aliases.is_empty() {
        for a in &mut acked {
            if let Ok(i) = logs.aliases.binary_search_by_key(&a.0, |&(retry, _)| retry) {
                a.0 = logs.aliases[i].1;
            }
        }
    }
    acked.sort(); // nearly sorted already: ids grow with time in each process's log
                  // A message acknowledged twice (its retry's ✓ and the first attempt's) is judged once,
                  // from its first acknowledgement.
                  // A group message once (it is stored once), under the group recipient.
    acked.extend(logs.acked_groups.iter().map(|a| (a.id, wasim_model::UserId::GROUP, a.acked)));
    acked.sort();
    acked.dedup_by_key(|a| a.0);
    let mut stored = logs.stored.iter().peekable();
    for &(id, _, acked_at) in &acked {
        while stored.next_if(|&&s| s < id).is_some() {}
        let mut replicas = 0u32;
        while stored.next_if(|&&s| s == id).is_some() {
            replicas += 1;
        }
        if replicas < cx.quorum {
            let detail = format!("acknowledged at {acked_at} but stored on {replicas} replicas (quorum {})", cx.quorum);
            r.add(violation(1, "no loss", format!("message {id}"), acked_at, detail));
        }
    }
    // What each device connected at the end is owed, user by user (in device order, as
    // `connected` and the displays are sorted): its 1:1 messages, and its groups' messages
    // from others. Group messages are looked up through each user's groups rather than
    // expanded to every member (offline members included) and sorted.
    acked.retain(|a| a.1 != wasim_model::UserId::GROUP);
    acked.sort_unstable_by_key(|&(id, to, _)| (to, id));
    let mut groups_acked = logs.acked_groups.clone();
    groups_acked.sort_unstable_by_key(|a| (a.id, a.acked));
    groups_acked.dedup_by_key(|a| a.id);
    groups_acked.sort_unstable_by_key(|a| (a.group, a.id));
    let group_run = |g: wasim_model::GroupId| {
        let from = groups_acked.partition_point(|a| a.group < g);
        &groups_acked[from..from + groups_acked[from..].partition_point(|a| a.group == g)]
    };
    let groups_of = cx.groups.of_users();
    let recent_from = cx.end - cx.in_flight_bound;
    let mut one_to_one = acked.iter().peekable();
    let mut connected = logs.connected.iter().peekable();
    let mut linked = logs.registered.iter().peekable();
    let mut shown = logs.displays_by_device.iter().peekable();
    // A user's messages: (id, acknowledged at, the group message's client key).
    let mut mine: Vec<(MessageId, LogMs, Option<u64>)> = Vec::new();
    // Owed and not shown under its id, in (device, id) order: (device, id, acknowledged
    // at, catching up, client key).
    let mut unshown: Vec<(DeviceKey, MessageId, LogMs, bool, Option<u64>)> = Vec::new();
    while let Some(first) = connected.peek() {
        let to = first.device.device().user;
        mine.clear();
        while one_to_one.next_if(|a| a.1 < to).is_some() {}
        while let Some(a) = one_to_one.next_if(|a| a.1 == to) {
            mine.push((a.0, a.2, None));
        }
        let groups = groups_of.of(to);
        for &g in groups {
            mine.extend(group_run(g).iter().filter(|a| a.sender != to).map(|a| (a.id, a.acked, Some(a.key))));
        }
        if !groups.is_empty() {
            mine.sort_unstable_by_key(|m| m.0);
        }
        while let Some(c) = connected.next_if(|c| c.device.device().user == to) {
            // Its server closed the connection and the "go away" is still on its way (a
            // frame retransmitted for seconds): what came since waits in its inbox for the
            // reconnect the go-away asks for.
            if logs.closing_in_transit.binary_search(&c.device).is_ok() {
                continue;
            }
            let web = c.device.device().slot.0 > 0;
            while linked.next_if(|&&(d, _)| d < c.device).is_some() {}
            // The later of its own first connect and the session store's first write of it.
            let mut linked_at = None;
            while let Some(&(_, at)) = linked.next_if(|&&(d, _)| d == c.device) {
                linked_at = linked_at.max(Some(at));
            }
            for &(id, acked_at, key) in &mine {
                // Minted before the web client had seen its connection accepted: it may
                // have been routed before the session store knew the client existed. The
                // id's timestamp is the minting server's clock, which may have run ahead
                // (a skew fault): the earliest it may have been minted is that much before;
                // the ✓, which follows the minting, bounds it too.
                let ahead = cx.mint_ahead_ms.get(usize::from(id.worker())).copied().unwrap_or(0);
                let minted_ms = id.timestamp_ms().saturating_sub(ahead).min(u64::from(acked_at.0));
                if web && linked_at.is_some_and(|at| minted_ms <= at.as_ms()) {
                    continue;
                }
                while shown.next_if(|&&s| s < (c.device, id)).is_some() {}
                if shown.peek() != Some(&&(c.device, id)) {
                    unshown.push((c.device, id, acked_at, c.catching_up_since.is_some(), key));
                }
            }
        }
    }
    // A member that had a group message under another id (a retry of the send) has it:
    // looked up for the few not shown under their id.
    let mut had_client: rustc_hash::FxHashSet<(DeviceKey, u64)> =
        unshown.iter().filter_map(|u| u.4.map(|key| (u.0, key))).collect();
    if !had_client.is_empty() {
        let shown_keys: rustc_hash::FxHashSet<(DeviceKey, u64)> = displays
            .iter()
            .filter(|d| d.conversation.group_id().is_some())
            .map(|d| (d.device, d.client()))
            .filter(|k| had_client.contains(k))
            .collect();
        had_client = shown_keys;
    }
    for (device, id, acked_at, catching_up, key) in unshown {
        if key.is_some_and(|key| had_client.contains(&(device, key))) {
            continue;
        }
        if catching_up {
            r.in_flight.owed_to_devices_catching_up += 1;
        } else if logs.in_transit.binary_search(&id).is_ok() {
            r.in_flight.owed_in_transit += 1;
        } else if acked_at.time() >= recent_from {
            r.in_flight.owed_acked_recently += 1;
        } else {
            let detail =
                format!("acknowledged at {acked_at}; the {device} is connected and live at the end without it");
            r.add(violation(1, "no loss", format!("message {id}"), cx.end, detail));
        }
    }
}

/// 4. Group aggregate: a group message's sender sees ✓✓ only once every member but the
///    sender has it on a device (each member counts as delivered when any of its devices
///    showed it), and blue only once every such member has read it. Judged at the first
///    time the sender's view reached each state.
fn group_aggregate(
    acked_groups: &[AckedGroup],
    views: &[(u64, ReceiptState, LogMs)],
    firsts: &GroupFirsts,
    cx: &CheckContext,
    r: &mut CheckReport,
) {
    use rustc_hash::FxHashMap;
    use wasim_model::GroupId;
    if acked_groups.is_empty() {
        return;
    }
    // Each group message by its sender's client key: (id, group, sender). Members are
    // judged by the client message they had (a retried send comes under another id, which
    // a device that had the first takes for a repeat).
    let mut messages: FxHashMap<u64, (MessageId, GroupId, UserId)> = FxHashMap::default();
    for a in acked_groups {
        messages.entry(a.key).or_insert((a.id, a.group, a.sender));
    }
    // The first time each sender's view showed ✓✓ and blue.
    let mut first: FxHashMap<u64, [Option<LogMs>; 2]> = FxHashMap::default();
    for &(key, state, at) in views {
        if !messages.contains_key(&key) || state < ReceiptState::Delivered {
            continue;
        }
        let seen = first.entry(key).or_default();
        for (i, reached) in [true, state == ReceiptState::Read].into_iter().enumerate() {
            if reached && seen[i].is_none_or(|t| at < t) {
                seen[i] = Some(at);
            }
        }
    }
    // When each member first had each group message, and first read it.
    let (had, read) = firsts;
    let mut keys: Vec<&u64> = first.keys().collect();
    keys.sort_unstable();
    for key in keys {
        let (id, group, sender) = messages[key];
        for (i, (what, by)) in [("✓✓", &had), ("blue ✓✓", &read)].into_iter().enumerate() {
            let Some(shown_at) = first[key][i] else { continue };
            // The message's (member, first time) run, in member order: merged with the
            // member list, also in member order.
            let from = by.partition_point(|e| e.0 < *key);
            let run = &by[from..from + by[from..].partition_point(|e| e.0 == *key)];
            let mut run = run.iter().peekable();
            let missing = cx.groups.members(group).iter().filter(|&&m| m != sender).find(|&&m| {
                while run.next_if(|e| e.1 < m).is_some() {}
                run.peek().is_none_or(|e| e.1 != m || e.2 > shown_at)
            });
            if let Some(m) = missing {
                let not_yet = if i == 0 { "had not had it" } else { "had not read it" };
                let detail = format!(
                    "the sender saw {what} at {shown_at} but member {} of group {} ({} members) {not_yet} by then",
                    m.0,
                    group.0,
                    cx.groups.size(group)
                );
                r.add(violation(4, "group aggregate", format!("message {id}"), shown_at, detail));
            }
        }
    }
}

/// (client key, member, when) of each member's first time with each group message, sorted
/// and one per (client key, member).
pub(crate) type MemberFirsts = Vec<(u64, UserId, LogMs)>;

/// When each member first had each group message, and when it first read it.
pub type GroupFirsts = (MemberFirsts, MemberFirsts);

/// The first time each member had each group message (on any device) and first read it,
/// by the sender's client message. Sorted runs, not hash maps: group-1024 logs millions of
/// member displays.
fn group_firsts(member_reads: &[(u64, UserId, LogMs)], displays: &[Display]) -> GroupFirsts {
    let first_by_key = |mut v: MemberFirsts| {
        v.sort_unstable();
        v.dedup_by_key(|e| (e.0, e.1));
        v
    };
    let had = displays
        .iter()
        .filter(|d| d.conversation.group_id().is_some())
        .map(|d| (d.client(), d.device.device().user, d.at))
        .collect();
    (first_by_key(had), first_by_key(member_reads.to_vec()))
}

/// 6. Routing: a device live at the end (its catch-up done, so its connect's session write
///    was applied) is where the session store routes its messages. (Unless its server has
///    closed the connection and the "go away" is still on its way: a socket whose frames
///    wait behind a retransmission does not know it is closed.)
fn routing(logs: &Logs, r: &mut CheckReport) {
    // Device keys are dense (user × 2 + slot): a table by key, where sorting a million
    // sessions would cost more than the check. Server ids stay below u16::MAX.
    let size = logs.sessions.iter().map(|s| s.0 .0 as usize + 1).max().unwrap_or(0);
    let mut server_of = vec![u16::MAX; size];
    for &(device, server) in &logs.sessions {
        server_of[device.0 as usize] = server.0;
    }
    let closing = |c: &&ConnectedAtEnd| logs.closing_in_transit.binary_search(&c.device).is_ok();
    for c in logs.connected.iter().filter(|c| c.catching_up_since.is_none()).filter(|c| !closing(c)) {
        let stored = server_of.get(c.device.0 as usize).filter(|&&s| s != u16::MAX).map(|&s| wasim_model::ServerId(s));
        if stored != Some(c.server) {
            let points = stored.map_or("nowhere".to_string(), |s| format!("to server {}", s.0));
            let detail = format!("live on server {} at the end; the session store points {points}", c.server.0);
            r.add(violation(6, "routing", format!("the {}", c.device), Time::ZERO, detail));
        }
    }
}

/// 8. Liveness: a device connected at the end has finished its catch-up unless it began
///    within the in-flight bound before the end (which covers the queues' backlog then);
///    one that waits on a read of a row no quorum of replicas was up for is judged from
///    when a quorum was back, and any from when its session shard was back from a
///    failover. One whose server has finished it, the news still on its way, is done.
fn liveness(logs: &Logs, cx: &CheckContext, r: &mut CheckReport) {
    for c in &logs.connected {
        let Some(mut since) = c.catching_up_since.map(Time::from) else { continue };
        if logs.caught_up_in_transit.binary_search(&c.device).is_ok() {
            continue;
        }
        let blocked = logs.catch_ups_blocked.binary_search_by_key(&c.device, |b| b.0);
        if let Ok(i) = blocked {
            since = since.max(Time::from(logs.catch_ups_blocked[i].1));
        }
        since = since.max((cx.session_back)(c.device.device().user));
        if cx.end.since(since) > cx.in_flight_bound {
            let detail = format!(
                "connected at {since} and still catching up at the end, {:.1} s later (bound {:.1} s)",
                cx.end.since(since).as_secs_f64(),
                cx.in_flight_bound.as_secs_f64()
            );
            r.add(violation(8, "liveness", format!("the {}", c.device), cx.end, detail));
        }
    }
}

/// 2. Each (message, device) is shown once.
fn no_duplicate_display(logs: &Logs, r: &mut CheckReport) {
    for w in logs.displays_by_device.windows(2) {
        if w[0] == w[1] {
            let (device, id) = w[0];
            let detail = format!("shown twice on the {device}");
            r.add(violation(2, "no duplicate display", format!("message {id}"), Time::ZERO, detail));
        }
    }
}

/// 2, by client message: a send retried under a new id is the same message to its reader.
/// (With the displays only: it runs beside the checkers that sort the other logs.)
fn no_duplicate_by_client(displays: &[Display], r: &mut CheckReport) {
    let mut by_client: Vec<(DeviceKey, u64, MessageId)> =
        displays.iter().map(|d| (d.device, d.client(), d.id)).collect();
    by_client.sort_unstable();
    for w in by_client.windows(2) {
        let ((d0, c0, id0), (device, client, id)) = (w[0], w[1]);
        if (d0, c0) == (device, client) && id0 != id {
            let detail = format!("shown on the {device} as {id0} and again as {id} (one client message)");
            let subject = format!("client message {}:{}", client >> 32, client & 0xffff_ffff);
            r.add(violation(2, "no duplicate display", subject, Time::ZERO, detail));
        }
    }
}

/// 3c. Receipt liveness: a ✓✓ (grey or blue) owed to a sender whose phone is connected
///    and live at the end has reached it. For the sampled messages, every receipt issued
///    before the in-flight bound (and outside the windows a crashed chat server may have
///    taken it with it) must have brought the sender's view to its state, unless it is
///    still on its way.
fn receipt_liveness(logs: &Logs, views: &[(u64, ReceiptState, LogMs)], cx: &CheckContext, r: &mut CheckReport) {
    if logs.receipts_issued.is_empty() {
        return;
    }
    // The furthest each client message's view went.
    let mut seen: Vec<(u64, ReceiptState)> = views.iter().map(|v| (v.0, v.1)).collect();
    seen.sort_unstable();
    let furthest = |key: u64| {
        let end = seen.partition_point(|s| s.0 <= key);
        seen[..end].last().filter(|s| s.0 == key).map(|s| s.1)
    };
    let recent_from = cx.end - cx.in_flight_bound;
    for &(key, id, sender, at, state) in &logs.receipts_issued {
        let t = at.time();
        if t >= recent_from || within(&cx.receipts_unprotected, t) {
            continue;
        }
        let phone = DeviceKey::of(wasim_model::DeviceId::phone(sender));
        let live = logs
            .connected
            .binary_search_by_key(&phone, |c| c.device)
            .is_ok_and(|i| logs.connected[i].catching_up_since.is_none());
        let reached = furthest(key).is_some_and(|s| s >= state);
        if !live || reached || logs.receipts_in_transit.binary_search(&id).is_ok() {
            continue;
        }
        let (what, ticks) = if state == ReceiptState::Read { ("read", "blue ✓✓") } else { ("delivered", "✓✓") };
        let detail = format!(
            "{what} at {at}; the sender, user {}, has its phone connected and live at the end without its {ticks}",
            sender.0
        );
        r.add(violation(3, "receipts monotone", format!("message {id}"), cx.end, detail));
    }
}

/// 3b. Read implies delivered: a read receipt names a device that had shown the message.
fn reads_follow_displays(logs: &Logs, r: &mut CheckReport) {
    for &(id, by, at) in &logs.reads {
        if logs.displays_by_device.binary_search(&(by, id)).is_err() {
            let detail = format!("read receipt from the {by}, which never showed it");
            r.add(violation(3, "receipts monotone", format!("message {id}"), at, detail));
        }
    }
}

/// 5. Within a conversation, a device shows messages in id order: each is added at the end
///    (newer than all it showed there before) or put in its place above newer ones, and
///    says which; a message added at the end below one shown before breaks the order, and
///    one said to be put in place that is newest was not.
fn order(displays: &[Display], r: &mut CheckReport) {
    // Grouped by (device, conversation), in display order (time, then log position).
    let mut shown: Vec<(DeviceKey, u64, LogMs, u32, MessageId)> =
        displays.iter().enumerate().map(|(i, d)| (d.device, d.conversation.0, d.at, i as u32, d.id)).collect();
    shown.sort_unstable();
    let mut newest = MessageId(0);
    for (k, &(device, conv, at, i, id)) in shown.iter().enumerate() {
        if k == 0 || (shown[k - 1].0, shown[k - 1].1) != (device, conv) {
            newest = MessageId(0);
        }
        let inserted = displays[i as usize].inserted();
        // (A repeat of the newest is invariant 2's to name.)
        if !inserted && id < newest {
            let detail = format!("the {device} added {id} at the end after {newest}");
            r.add(violation(5, "order", format!("message {id}"), at, detail));
        } else if inserted && id >= newest {
            let detail =
                format!("the {device} put {id} in place above newer ones, but the newest it showed was {newest}");
            r.add(violation(5, "order", format!("message {id}"), at, detail));
        }
        newest = newest.max(id);
    }
}

/// 7. A user is shown online only while the presence key lives; a last-seen shown is at
///    most a minute old when shown; a user hiding last-seen never reveals it.
fn presence(logs: &Logs, cx: &CheckContext, r: &mut CheckReport) {
    const LAST_SEEN_STALENESS_MAX_US: u64 = 60_000_000;
    // A key lives at most the configured TTL after its last write (1 ms: stamps are in ms).
    for &(user, last, expired) in &logs.key_expiries {
        if expired.since(last) > cx.presence_ttl + Duration::from_millis(1) {
            let detail = format!(
                "its presence key lived until {expired}, {:.3} s after its last write at {last}; the TTL is {:.3} s",
                expired.since(last).as_secs_f64(),
                cx.presence_ttl.as_secs_f64()
            );
            r.add(violation(7, "presence", format!("user {}", user.0), expired, detail));
        }
    }
    for v in &logs.presence_views {
        let u = v.update;
        let subject = format!("user {}", u.target.0);
        match u.status {
            PresenceStatus::Online if within(&cx.presence_clock_jumps, u.changed_at) => {}
            PresenceStatus::Online => {
                let first = logs.key_lifetimes.partition_point(|&(user, _, _)| user < u.target);
                let lives = logs.key_lifetimes[first..]
                    .iter()
                    .take_while(|&&(user, _, _)| user == u.target)
                    .any(|&(_, set, expired)| set <= u.changed_at && u.changed_at <= expired);
                if !lives {
                    let detail = format!(
                        "shown online to watcher {} with no live presence key at {}",
                        v.watcher.device().user.0,
                        u.changed_at
                    );
                    r.add(violation(7, "presence", subject, v.received_at, detail));
                }
            }
            PresenceStatus::Offline { last_seen: Some(seen) } => {
                if (cx.hides_last_seen)(u.target) {
                    let detail = format!("last-seen {seen} revealed although the user hides it");
                    r.add(violation(7, "presence", subject, v.received_at, detail));
                } else if u.cause != PresenceCause::Subscribed
                    && u.changed_at.as_us().saturating_sub(seen.as_us()) > LAST_SEEN_STALENESS_MAX_US
                {
                    let detail = format!("last-seen {seen} shown at {}: more than a minute old", u.changed_at);
                    r.add(violation(7, "presence", subject, v.received_at, detail));
                }
            }
            PresenceStatus::Offline { last_seen: None } => {}
        }
        // A clean close of one device does not show a user offline while another of its
        // devices is connected: here, connected all through the in-flight bound before the
        // watcher heard it (long before the notification could have been made), to a
        // server that was up all that time.
        let heard = v.received_at;
        let faulted = within(&cx.presence_faulted, heard);
        if matches!(u.status, PresenceStatus::Offline { .. }) && u.cause == PresenceCause::Disconnected && !faulted {
            let from = heard - cx.in_flight_bound;
            let phone = DeviceKey::of(DeviceId::phone(u.target));
            let first = logs.connected_spells.partition_point(|s| s.0 < phone);
            let connected = logs.connected_spells[first..]
                .iter()
                .take_while(|s| s.0 .0 <= phone.0 + 1)
                .filter(|s| {
                    !cx.servers_down.iter().any(|&(server, down, up)| server == s.3 && down <= heard && up >= from)
                })
                .find(|s| Time::from(s.1) <= from && (s.2 .0 == u32::MAX || Time::from(s.2) >= heard));
            if let Some(&(device, since, _, _)) = connected {
                let detail = format!(
                    "shown offline (a device closed) to watcher {} at {heard} while its {} was connected since {since}",
                    v.watcher.device().user.0,
                    device
                );
                r.add(violation(7, "presence", format!("user {}", u.target.0), v.received_at, detail));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasim_model::{ConversationId, PresenceUpdate, UserId};

    const PHONE_2: DeviceKey = DeviceKey(4);
    const WEB_2: DeviceKey = DeviceKey(5);

    fn connected(device: DeviceKey) -> ConnectedAtEnd {
        ConnectedAtEnd { device, catching_up_since: None, server: wasim_model::ServerId(1) }
    }

    fn cx() -> CheckContext {
        CheckContext {
            end: Time::from_secs(100),
            quorum: 2,
            in_flight_bound: Duration::from_secs(10),
            receipts_unprotected: vec![(Time::from_secs(60), Time::from_secs(70))],
            presence_ttl: Duration::from_secs(45),
            presence_faulted: Vec::new(),
            presence_clock_jumps: Vec::new(),
            hides_last_seen: Box::new(|u| u.0 == 9),
            groups: Default::default(),
            mint_ahead_ms: Vec::new(),
            servers_down: Vec::new(),
            session_back: Box::new(|_| Time::ZERO),
        }
    }

    fn display(device: DeviceKey, conversation: u64, id: u64, at_ms: u64) -> Display {
        let (conversation, id) = (ConversationId(conversation), MessageId(id));
        Display::new(device, LogMs(at_ms as u32), conversation, id, id.0, false)
    }

    /// Message 7 to user 2 (phone = device 4), acknowledged, stored twice, shown once.
    fn healthy() -> Logs {
        Logs {
            acked: vec![(MessageId(7), UserId(2), LogMs(5))],
            displays: vec![display(PHONE_2, 1, 7, 6)],
            connected: vec![connected(PHONE_2)],
            sessions: vec![(PHONE_2, wasim_model::ServerId(1))],
            stored: vec![MessageId(7), MessageId(7)],
            ..Logs::default()
        }
    }

    /// The invariants violated, checked on one thread and on two (which must agree).
    fn invariants(logs: &mut Logs) -> Vec<u8> {
        let serial = check_all(logs, &cx(), false);
        let parallel = check_all(logs, &cx(), true);
        assert_eq!(serial.violations, parallel.violations);
        assert_eq!(serial.counts, parallel.counts);
        serial.violations.iter().map(|v| v.invariant).collect()
    }

    /// Group 0 of users 1, 2 and 3; user 1 sent message 40 (client key 400), acknowledged
    /// at 5 s; users 2 (phone and web) and 3 (phone) are connected at the end, user 3 has
    /// it, user 2 has it on its phone only.
    fn group_logs() -> (Logs, CheckContext) {
        let conversation = ConversationId::group(wasim_model::GroupId(0)).0;
        let member = |device: DeviceKey, id: u64| {
            Display::new(device, LogMs(6_000), ConversationId(conversation), MessageId(id), 400, false)
        };
        let phone_3 = DeviceKey(6);
        let logs = Logs {
            acked_groups: vec![AckedGroup {
                key: 400,
                id: MessageId(40),
                group: wasim_model::GroupId(0),
                sender: UserId(1),
                sent: LogMs(4_900),
                acked: LogMs(5_000),
            }],
            displays: vec![member(PHONE_2, 40), member(phone_3, 40)],
            connected: vec![connected(PHONE_2), connected(WEB_2), connected(phone_3)],
            sessions: vec![
                (PHONE_2, wasim_model::ServerId(1)),
                (WEB_2, wasim_model::ServerId(1)),
                (phone_3, wasim_model::ServerId(1)),
            ],
            stored: vec![MessageId(40), MessageId(40)],
            ..Logs::default()
        };
        let cx = CheckContext { groups: crate::groups::Groups::of_lists(&[&[1, 2, 3]]), ..cx() };
        (logs, cx)
    }

    #[test]
    fn a_group_message_is_owed_to_every_connected_device_of_every_member_but_the_sender() {
        let (mut logs, cx) = group_logs();
        let report = check_all(&mut logs, &cx, true);
        let lost: Vec<&str> =
            report.violations.iter().filter(|v| v.invariant == 1).map(|v| v.detail.as_str()).collect();
        assert_eq!(lost.len(), 1, "{report:?}");
        assert!(lost[0].contains(&WEB_2.to_string()), "names the web client without it: {}", lost[0]);
        // Shown there under a retry's id (the same client message): it has it.
        logs.displays.push(Display::new(
            WEB_2,
            LogMs(7_000),
            ConversationId::group(wasim_model::GroupId(0)),
            MessageId(41),
            400,
            false,
        ));
        let report = check_all(&mut logs, &cx, false);
        assert!(report.violations.iter().all(|v| v.invariant != 1), "{report:?}");
        // The sender's own devices are owed nothing; a non-member's nothing either.
        let (mut logs, cx) = group_logs();
        logs.displays.push(Display::new(
            WEB_2,
            LogMs(7_000),
            ConversationId::group(wasim_model::GroupId(0)),
            MessageId(40),
            400,
            false,
        ));
        logs.connected.insert(0, connected(DeviceKey(2)));
        logs.connected.push(connected(DeviceKey(8)));
        let report = check_all(&mut logs, &cx, true);
        assert!(report.violations.iter().all(|v| v.invariant != 1), "{report:?}");
    }

    #[test]
    fn a_healthy_log_passes() {
        assert!(invariants(&mut healthy()).is_empty());
    }

    #[test]
    fn loss_is_caught_when_not_shown_or_not_durable() {
        let mut logs = healthy();
        logs.displays.clear();
        assert_eq!(invariants(&mut logs), vec![1]);
        let mut logs = healthy();
        logs.stored.pop();
        assert_eq!(invariants(&mut logs), vec![1], "one replica is below the quorum");
    }

    #[test]
    fn a_message_still_on_the_network_at_the_end_is_in_flight_however_old() {
        // Acknowledged 20 s before the end, its push still crossing a slow link.
        let mut logs = healthy();
        logs.acked = vec![(MessageId(7), UserId(2), LogMs(80_000))];
        logs.displays.clear();
        logs.in_transit = vec![MessageId(7)];
        let report = check_all(&mut logs, &cx(), false);
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.in_flight.owed_in_transit, 1);
        logs.in_transit = vec![MessageId(8)];
        assert_eq!(invariants(&mut logs), vec![1], "another message on the way excuses nothing");
    }

    #[test]
    fn a_message_on_its_way_at_the_end_is_in_flight_not_lost() {
        // Acknowledged 5 s before the end (within the 10 s bound), not shown yet.
        let mut logs = healthy();
        logs.acked = vec![(MessageId(7), UserId(2), LogMs(95_000))];
        logs.displays.clear();
        let report = check_all(&mut logs, &cx(), false);
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.in_flight.owed_acked_recently, 1);
        // Acknowledged 20 s before the end: a live device must have it by then.
        logs.acked = vec![(MessageId(7), UserId(2), LogMs(80_000))];
        assert_eq!(invariants(&mut logs), vec![1]);
    }

    #[test]
    fn a_device_catching_up_is_owed_everything_once_its_catch_up_is_overdue() {
        let mut logs = healthy();
        logs.displays.clear();
        logs.connected = vec![ConnectedAtEnd {
            device: PHONE_2,
            catching_up_since: Some(LogMs::of(Time::from_secs(95))),
            server: wasim_model::ServerId(1),
        }];
        let report = check_all(&mut logs, &cx(), false);
        assert!(report.ok(), "a catch-up under way: {report:?}");
        assert_eq!(report.in_flight.owed_to_devices_catching_up, 1);
        logs.connected = vec![ConnectedAtEnd {
            device: PHONE_2,
            catching_up_since: Some(LogMs::of(Time::from_secs(50))),
            server: wasim_model::ServerId(1),
        }];
        assert_eq!(invariants(&mut logs), vec![8], "stuck in its catch-up for 50 s");
        logs.displays = vec![display(PHONE_2, 1, 7, 6)];
        assert_eq!(invariants(&mut logs), vec![8], "stuck even when it owes nothing");
        // Held up by a read of a row with no quorum of replicas up: by design, until a
        // quorum is back.
        logs.catch_ups_blocked = vec![(PHONE_2, LogMs::of(Time::from_secs(100)))];
        assert!(invariants(&mut logs).is_empty(), "a quorum read no quorum can answer waits");
        logs.catch_ups_blocked = vec![(PHONE_2, LogMs::of(Time::from_secs(95)))];
        assert!(invariants(&mut logs).is_empty(), "a quorum back 5 s before the end");
        logs.catch_ups_blocked = vec![(PHONE_2, LogMs::of(Time::from_secs(80)))];
        assert_eq!(invariants(&mut logs), vec![8], "a quorum back 20 s before the end");
        // Its session shard back from a failover 5 s before the end: judged from then.
        let back = CheckContext { session_back: Box::new(|u| Time::from_secs(if u.0 == 2 { 95 } else { 0 })), ..cx() };
        assert!(check_all(&mut logs, &back, false).ok());
        // Its server finished it; the device is not told yet.
        logs.caught_up_in_transit = vec![PHONE_2];
        assert!(invariants(&mut logs).is_empty(), "a catch-up done, its news on the way");
    }

    #[test]
    fn a_web_client_is_owed_only_messages_minted_after_it_linked() {
        // A message minted at 5 ms (Snowflake timestamp), shown on the phone only.
        let minted_at_5ms = MessageId(5 << 22);
        let with_web = |linked_ms: u64| {
            let mut logs = healthy();
            logs.acked = vec![(minted_at_5ms, UserId(2), LogMs(6))];
            logs.displays = vec![display(PHONE_2, 1, minted_at_5ms.0, 7)];
            logs.stored = vec![minted_at_5ms; 2];
            logs.connected.push(connected(WEB_2));
            logs.sessions.push((WEB_2, wasim_model::ServerId(1)));
            logs.registered = vec![(WEB_2, Time::from_ms(linked_ms))];
            logs
        };
        assert_eq!(invariants(&mut with_web(1)), vec![1], "linked at 1 ms: the web client is owed it");
        assert!(invariants(&mut with_web(6)).is_empty(), "linked at 6 ms: minted before, not owed");
    }

    #[test]
    fn a_web_client_is_not_owed_a_message_minted_earlier_by_a_server_whose_clock_ran_ahead() {
        // Minted by a server 400 ms ahead: its id says 410 ms; its ✓ came at 20 ms.
        let skewed = MessageId(410 << 22);
        let with_web = |acked_ms: u32| {
            let mut logs = healthy();
            logs.acked = vec![(skewed, UserId(2), LogMs(acked_ms))];
            logs.displays = vec![display(PHONE_2, 1, skewed.0, 30)];
            logs.stored = vec![skewed; 2];
            logs.connected.push(connected(WEB_2));
            logs.sessions.push((WEB_2, wasim_model::ServerId(1)));
            logs.registered = vec![(WEB_2, Time::from_ms(50))];
            logs
        };
        assert!(invariants(&mut with_web(20)).is_empty(), "acknowledged at 20 ms, before the link at 50 ms");
        assert_eq!(invariants(&mut with_web(60)), vec![1], "acknowledged at 60 ms: it may have been routed after");
        // Its server's clock ran up to 400 ms ahead: minted as early as 10 ms, maybe
        // routed before the link however late its ✓ came.
        let ahead = CheckContext { mint_ahead_ms: vec![400], ..cx() };
        assert!(check_all(&mut with_web(60), &ahead, false).ok());
        let less = CheckContext { mint_ahead_ms: vec![300], ..cx() };
        assert!(!check_all(&mut with_web(60), &less, false).ok(), "minted at 110 ms at the earliest");
    }

    #[test]
    fn a_live_device_the_session_store_routes_elsewhere_is_caught() {
        let mut logs = healthy();
        logs.sessions = vec![(PHONE_2, wasim_model::ServerId(4))];
        assert_eq!(invariants(&mut logs), vec![6], "stale: points at server 4");
        logs.sessions.clear();
        assert_eq!(invariants(&mut logs), vec![6], "points nowhere");
        logs.closing_in_transit = vec![PHONE_2];
        assert!(invariants(&mut logs).is_empty(), "its server closed it; the device is not told yet");
        logs.displays.clear();
        assert!(invariants(&mut logs).is_empty(), "nor owed what went to its inbox since");
        logs.displays = healthy().displays;
        logs.closing_in_transit.clear();
        logs.connected[0].catching_up_since = Some(LogMs::of(Time::from_secs(99)));
        logs.displays.clear();
        assert!(invariants(&mut logs).is_empty(), "a device still catching up is not judged");
    }

    #[test]
    fn a_client_message_shown_under_two_ids_is_caught() {
        let mut logs = healthy();
        logs.displays.push(Display::new(PHONE_2, LogMs(8), ConversationId(1), MessageId(9), 7, false));
        assert_eq!(invariants(&mut logs), vec![2], "message 7 again as 9");
    }

    #[test]
    fn duplicates_and_reordering_are_caught() {
        let mut logs = healthy();
        logs.displays.push(display(PHONE_2, 1, 7, 8));
        assert_eq!(invariants(&mut logs), vec![2]);
        let mut logs = healthy();
        logs.displays.insert(0, display(PHONE_2, 1, 9, 5));
        assert_eq!(invariants(&mut logs), vec![5], "9 shown before 7, and 7 added at the end after it");
        // Put in its place above 9, as a device does with a message that was overtaken.
        let mut logs = healthy();
        logs.displays[0] = Display::new(PHONE_2, LogMs(6), ConversationId(1), MessageId(7), 7, true);
        logs.displays.insert(0, display(PHONE_2, 1, 9, 5));
        assert!(invariants(&mut logs).is_empty(), "7 put in place above 9");
        // Said to be put in place, but it was the newest.
        let mut logs = healthy();
        logs.displays[0] = Display::new(PHONE_2, LogMs(6), ConversationId(1), MessageId(7), 7, true);
        assert_eq!(invariants(&mut logs), vec![5], "7 was the first shown: nothing to put it above");
    }

    #[test]
    fn a_receipt_owed_to_a_live_sender_that_never_arrived_is_caught() {
        // User 1 (phone = device 2) sent message 7 (client key 1); user 2 read it at 50 s.
        let phone_1 = DeviceKey(2);
        let with = |views: Vec<(u64, ReceiptState, LogMs)>, issued_s: u64| {
            let mut logs = healthy();
            logs.connected.insert(0, connected(phone_1));
            logs.sessions.insert(0, (phone_1, wasim_model::ServerId(1)));
            logs.receipts_issued =
                vec![(1, MessageId(7), UserId(1), LogMs::of(Time::from_secs(issued_s)), ReceiptState::Read)];
            logs.sender_views = views;
            logs
        };
        let read = (1, ReceiptState::Read, LogMs(51_000));
        let delivered = (1, ReceiptState::Delivered, LogMs(51_000));
        assert_eq!(invariants(&mut with(vec![], 50)), vec![3], "never reached the sender");
        assert_eq!(invariants(&mut with(vec![delivered], 50)), vec![3], "grey, not blue");
        assert!(invariants(&mut with(vec![delivered, read], 50)).is_empty());
        assert!(invariants(&mut with(vec![], 95)).is_empty(), "within the in-flight bound of the end");
        assert!(invariants(&mut with(vec![], 65)).is_empty(), "in a window a crashed server may have taken it");
        let mut on_its_way = with(vec![], 50);
        on_its_way.receipts_in_transit = vec![MessageId(7)];
        assert!(invariants(&mut on_its_way).is_empty());
        let mut away = with(vec![], 50);
        away.connected.remove(0);
        assert!(invariants(&mut away).is_empty(), "the sender's phone is not connected at the end");
    }

    #[test]
    fn a_view_going_back_or_a_read_without_display_is_caught() {
        let mut logs = healthy();
        logs.sender_view(1, ReceiptState::Delivered, LogMs(1), false, true);
        logs.sender_view(1, ReceiptState::Read, LogMs(2), false, true);
        assert!(invariants(&mut logs).is_empty(), "forward");
        logs.sender_view(1, ReceiptState::Delivered, LogMs(3), false, true);
        assert_eq!(invariants(&mut logs), vec![3], "back from read");
        // Settled at read and forgotten by its sender: the check forgets it too, so what
        // it holds lasts as long as the devices' own.
        let mut logs = healthy();
        logs.sender_view(1, ReceiptState::Read, LogMs(1), false, false);
        assert!(logs.views_followed_len() == 0 && logs.sender_views.is_empty(), "neither followed nor kept");
        logs.sender_view(2, ReceiptState::Delivered, LogMs(1), true, true);
        assert_eq!(logs.sender_views, vec![(2, ReceiptState::Delivered, LogMs(1))], "kept when asked");
        let mut logs = healthy();
        logs.reads = vec![(MessageId(7), WEB_2, LogMs(9))];
        assert_eq!(invariants(&mut logs), vec![3], "device 5 never showed message 7");
    }

    fn view(target: u32, status: PresenceStatus, cause: PresenceCause, changed_s: u64) -> crate::check::PresenceView {
        let update = PresenceUpdate { target: UserId(target), status, cause, changed_at: Time::from_secs(changed_s) };
        crate::check::PresenceView { watcher: PHONE_2, update, received_at: Time::from_secs(changed_s) }
    }

    #[test]
    fn a_tick_sent_before_a_quorum_of_replica_writes_is_caught() {
        let mut logs = healthy();
        let id = MessageId(5);
        logs.acks_sent = vec![(id, Time::from_secs(10))];
        logs.replica_writes = vec![(id, 0, Time::from_secs(9)), (id, 1, Time::from_secs(10))];
        assert!(invariants(&mut logs).is_empty(), "two replicas (the quorum of three) by the tick");
        logs.replica_writes = vec![(id, 0, Time::from_secs(9)), (id, 1, Time::from_secs(11))];
        assert_eq!(invariants(&mut logs), vec![1], "the second write came after the tick");
        logs.replica_writes = vec![(id, 0, Time::from_secs(8)), (id, 0, Time::from_secs(9))];
        assert_eq!(invariants(&mut logs), vec![1], "one replica written twice is one replica");
        assert!(one_in_16(0));
        let sampled = (0..16_000u64).filter(|&i| one_in_16(i << 12)).count();
        assert!((800..1_200).contains(&sampled), "about one in 16: {sampled}");
    }

    #[test]
    fn a_close_that_shows_a_user_offline_while_another_device_is_connected_is_caught() {
        let mut logs = healthy();
        let offline = PresenceStatus::Offline { last_seen: None };
        logs.presence_views = vec![view(3, offline, PresenceCause::Disconnected, 30)];
        let web_3 = DeviceKey(7);
        let on_1 = wasim_model::ServerId(1);
        logs.connected_spells = vec![(web_3, LogMs(1_000), LogMs(u32::MAX), on_1)];
        assert_eq!(invariants(&mut logs), vec![7], "the web client was connected all along");
        let mut down = cx();
        down.servers_down = vec![(on_1, Time::from_secs(24), Time::from_secs(40))];
        assert!(check_all(&mut logs, &down, false).ok(), "its server had crashed: connected to nothing");
        down.servers_down = vec![(on_1, Time::from_secs(31), Time::from_secs(40))];
        assert!(!check_all(&mut logs, &down, false).ok(), "its server crashed only after");
        logs.connected_spells = vec![(web_3, LogMs(1_000), LogMs(29_000), on_1)];
        assert!(invariants(&mut logs).is_empty(), "it had closed before the watcher heard it");
        logs.connected_spells = vec![(web_3, LogMs(25_000), LogMs(u32::MAX), on_1)];
        assert!(invariants(&mut logs).is_empty(), "connected within the bound: the news may be older");
        logs.connected_spells = vec![(DeviceKey(9), LogMs(1_000), LogMs(u32::MAX), on_1)];
        assert!(invariants(&mut logs).is_empty(), "another user's device");
        logs.connected_spells = vec![(web_3, LogMs(1_000), LogMs(u32::MAX), on_1)];
        logs.presence_views = vec![view(3, offline, PresenceCause::Expired, 30)];
        assert!(invariants(&mut logs).is_empty(), "an expiry is judged by the key's life, not by connections");
    }

    #[test]
    fn presence_violations_are_caught() {
        let online = view(3, PresenceStatus::Online, PresenceCause::Connected, 5);
        let mut logs = healthy();
        logs.presence_views = vec![online];
        logs.key_lifetimes = vec![(UserId(3), Time::from_secs(1), Time::from_secs(4))];
        assert_eq!(invariants(&mut logs), vec![7], "online shown after the key expired");
        logs.key_lifetimes = vec![(UserId(3), Time::from_secs(1), Time::from_secs(6))];
        assert!(invariants(&mut logs).is_empty());
        // Stamped while the shard's clock jumped: not judged (its stamps do not order).
        logs.key_lifetimes = vec![(UserId(3), Time::from_secs(1), Time::from_secs(4))];
        let jumped = CheckContext { presence_clock_jumps: vec![(Time::from_secs(4), Time::from_secs(9))], ..cx() };
        assert!(check_all(&mut logs, &jumped, false).violations.is_empty());
        let elsewhere = CheckContext { presence_clock_jumps: vec![(Time::from_secs(6), Time::from_secs(9))], ..cx() };
        assert_eq!(check_all(&mut logs, &elsewhere, false).violations.len(), 1);
        logs.key_lifetimes = vec![(UserId(3), Time::from_secs(1), Time::from_secs(6))];

        logs.key_expiries = vec![(UserId(3), Time::from_secs(10), Time::from_secs(55))];
        assert!(invariants(&mut logs).is_empty(), "a key lives the TTL (45 s) after its last write");
        logs.key_expiries = vec![(UserId(3), Time::from_secs(10), Time::from_ms(55_002))];
        assert_eq!(invariants(&mut logs), vec![7], "a key outlived the scenario's TTL");
        logs.key_expiries.clear();

        let stale = PresenceStatus::Offline { last_seen: Some(Time::from_secs(1)) };
        logs.presence_views = vec![view(3, stale, PresenceCause::Expired, 70)];
        assert_eq!(invariants(&mut logs), vec![7], "last-seen more than a minute old");
        let revealed = PresenceStatus::Offline { last_seen: Some(Time::from_secs(5)) };
        logs.presence_views = vec![view(9, revealed, PresenceCause::Disconnected, 5)];
        assert_eq!(invariants(&mut logs), vec![7], "user 9 hides last-seen");
    }
}
