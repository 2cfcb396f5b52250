//! Invariant checkers, apart from the code they check. Processes record what they
//! observed (logs); after the run each checker reads the merged logs and reports
//! violations. Invariants 1, 2, 3, 5 and 7 of DESIGN.md are checked here.

mod logs;

pub use logs::{Display, LogMs, Logs, PresenceView};

use serde::Serialize;
use wasim_model::{MessageId, PresenceCause, PresenceStatus, ReceiptState, Time};

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
    /// Whether a user hides last-seen.
    pub hides_last_seen: Box<dyn Fn(wasim_model::UserId) -> bool + Send + Sync>,
}

/// Run every checker over the merged logs. With `parallel`, the two independent groups of
/// checkers run on two threads (only outside the simulation, which forbids threads); the
/// report is the same either way.
pub fn check_all(logs: &mut Logs, cx: &CheckContext, parallel: bool) -> CheckReport {
    let mut r = CheckReport {
        checked: vec![
            (1, "no loss"),
            (2, "no duplicate display"),
            (3, "receipts monotone"),
            (5, "order within a conversation"),
            (7, "presence"),
        ],
        ..CheckReport::default()
    };
    // Group B reads only what group A does not write.
    let (views, displays) = (std::mem::take(&mut logs.sender_views), std::mem::take(&mut logs.displays));
    let group_b = || {
        let mut b = CheckReport::default();
        views_monotone(&views, &mut b);
        order(&displays, &mut b);
        b
    };
    let group_a = |logs: &mut Logs| {
        let mut a = CheckReport::default();
        logs.sort(&displays);
        no_loss(logs, cx, &mut a);
        no_duplicate_display(logs, &mut a);
        reads_follow_displays(logs, &mut a);
        presence(logs, cx, &mut a);
        a
    };
    let (a, b) = if parallel {
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
    logs.sender_views = views;
    logs.displays = displays;
    r
}

fn violation(invariant: u8, name: &'static str, subject: String, at: impl Into<Time>, detail: String) -> Violation {
    Violation { invariant, name, subject, at_us: at.into().as_us(), detail }
}

/// 1. Every message acknowledged to its sender is durably stored and shown on every
///    recipient device that is online at the end of the run. A web client is owed the
///    messages acknowledged after it first connected (linked): before that the session
///    store does not know it exists.
fn no_loss(logs: &Logs, cx: &CheckContext, r: &mut CheckReport) {
    // Merge joins over sorted logs: a binary search per message would cost a cache miss
    // per step on logs of millions of entries.
    let mut acked = logs.acked.clone();
    acked.sort(); // nearly sorted already: ids grow with time in each process's log
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
    // What each device online at the end is owed: (device, message, acknowledged at).
    acked.sort_unstable_by_key(|&(id, to, _)| (to, id));
    let mut owed: Vec<(u32, MessageId, LogMs)> = Vec::with_capacity(acked.len());
    let mut live = logs.live_devices.iter().peekable();
    let mut linked = logs.registered.iter().peekable();
    let mut i = 0;
    while i < acked.len() {
        let to = acked[i].1;
        let end = i + acked[i..].iter().take_while(|a| a.1 == to).count();
        while live.next_if(|&&(u, _)| u < to).is_some() {}
        while let Some(&(_, slot)) = live.next_if(|&&(u, _)| u == to) {
            let device = (to.0 << 1) | u32::from(slot);
            while linked.next_if(|&&(d, _)| d < device).is_some() {}
            let linked_at = linked.peek().filter(|&&&(d, _)| d == device).map(|&&(_, at)| at);
            for &(id, _, acked_at) in &acked[i..end] {
                // Minted (the id's timestamp) before the web client had seen its
                // connection accepted: it may have been routed before the session store
                // knew the client existed.
                if slot > 0 && linked_at.is_some_and(|at| id.timestamp_ms() <= at.as_ms()) {
                    continue;
                }
                owed.push((device, id, acked_at));
            }
        }
        i = end;
    }
    // Built in (recipient, slot, id) order, which is (device, id) order.
    debug_assert!(owed.is_sorted());
    let mut shown = logs.displays_by_device.iter().peekable();
    for (device, id, acked_at) in owed {
        while shown.next_if(|&&s| s < (device, id)).is_some() {}
        if shown.peek() != Some(&&(device, id)) {
            let detail = format!(
                "acknowledged at {acked_at}; device {} of user {} is online at the end without it",
                device & 1,
                device >> 1
            );
            r.add(violation(1, "no loss", format!("message {id}"), cx.end, detail));
        }
    }
}

/// 2. Each (message, device) is shown once.
fn no_duplicate_display(logs: &Logs, r: &mut CheckReport) {
    for w in logs.displays_by_device.windows(2) {
        if w[0] == w[1] {
            let (device, id) = w[0];
            let detail = format!("shown twice on device {} of user {}", device & 1, device >> 1);
            r.add(violation(2, "no duplicate display", format!("message {id}"), Time::ZERO, detail));
        }
    }
}

/// 3a. The sender's view of a message never goes back.
fn views_monotone(sender_views: &[(u64, ReceiptState, LogMs)], r: &mut CheckReport) {
    // Each message's view changes in time order (logged so by its sender's process):
    // grouped by message, every change must go forward.
    let mut views: Vec<(u64, LogMs, u32, ReceiptState)> =
        sender_views.iter().enumerate().map(|(i, &(key, state, at))| (key, at, i as u32, state)).collect();
    views.sort_unstable();
    for w in views.windows(2) {
        let ((k0, _, _, before), (key, at, _, state)) = (w[0], w[1]);
        if k0 == key && before > state {
            let detail = format!("sender's view went from {before:?} to {state:?}");
            let subject = format!("client message {}:{}", key >> 32, key & 0xffff_ffff);
            r.add(violation(3, "receipts monotone", subject, at, detail));
        }
    }
}

/// 3b. Read implies delivered: a read receipt names a device that had shown the message.
fn reads_follow_displays(logs: &Logs, r: &mut CheckReport) {
    for &(id, by, at) in &logs.reads {
        if logs.displays_by_device.binary_search(&(by, id)).is_err() {
            let detail = format!("read receipt from device {} of user {} that never showed it", by & 1, by >> 1);
            r.add(violation(3, "receipts monotone", format!("message {id}"), at, detail));
        }
    }
}

/// 5. Within a conversation, a device shows messages in id order.
fn order(displays: &[Display], r: &mut CheckReport) {
    // Grouped by (device, conversation), in display order (time, then log position).
    let mut shown: Vec<(u32, u64, LogMs, u32, MessageId)> =
        displays.iter().enumerate().map(|(i, d)| (d.device, d.conversation.0, d.at, i as u32, d.id)).collect();
    shown.sort_unstable();
    for w in shown.windows(2) {
        let ((dev0, conv0, _, _, before), (device, conv, at, _, id)) = (w[0], w[1]);
        if (dev0, conv0) == (device, conv) && before > id {
            let detail = format!("device {} of user {} showed {id} after {before}", device & 1, device >> 1);
            r.add(violation(5, "order", format!("message {id}"), at, detail));
        }
    }
}

/// 7. A user is shown online only while the presence key lives; a last-seen shown is at
///    most a minute old when shown; a user hiding last-seen never reveals it.
fn presence(logs: &Logs, cx: &CheckContext, r: &mut CheckReport) {
    const LAST_SEEN_STALENESS_MAX_US: u64 = 60_000_000;
    for v in &logs.presence_views {
        let u = v.update;
        let subject = format!("user {}", u.target.0);
        match u.status {
            PresenceStatus::Online => {
                let first = logs.key_lifetimes.partition_point(|&(user, _, _)| user < u.target);
                let lives = logs.key_lifetimes[first..]
                    .iter()
                    .take_while(|&&(user, _, _)| user == u.target)
                    .any(|&(_, set, expired)| set <= u.changed_at && u.changed_at <= expired);
                if !lives {
                    let detail = format!(
                        "shown online to watcher {} with no live presence key at {}",
                        v.watcher >> 1,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasim_model::{ConversationId, PresenceUpdate, UserId};

    fn cx() -> CheckContext {
        CheckContext { end: Time::from_secs(10), quorum: 2, hides_last_seen: Box::new(|u| u.0 == 9) }
    }

    fn display(device: u32, conversation: u64, id: u64, at_ms: u64) -> Display {
        Display { device, at: LogMs(at_ms as u32), conversation: ConversationId(conversation), id: MessageId(id) }
    }

    /// Message 7 to user 2 (phone = device 4), acknowledged, stored twice, shown once.
    fn healthy() -> Logs {
        Logs {
            acked: vec![(MessageId(7), UserId(2), LogMs(5))],
            displays: vec![display(4, 1, 7, 6)],
            live_devices: vec![(UserId(2), 0)],
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
    fn a_web_client_is_owed_only_messages_minted_after_it_linked() {
        // A message minted at 5 ms (Snowflake timestamp), shown on the phone only.
        let minted_at_5ms = MessageId(5 << 22);
        let with_web = |linked_ms: u64| {
            let mut logs = healthy();
            logs.acked = vec![(minted_at_5ms, UserId(2), LogMs(6))];
            logs.displays = vec![display(4, 1, minted_at_5ms.0, 7)];
            logs.stored = vec![minted_at_5ms; 2];
            logs.live_devices.push((UserId(2), 1));
            logs.registered = vec![(5, Time::from_ms(linked_ms))];
            logs
        };
        assert_eq!(invariants(&mut with_web(1)), vec![1], "linked at 1 ms: the web client is owed it");
        assert!(invariants(&mut with_web(6)).is_empty(), "linked at 6 ms: minted before, not owed");
    }

    #[test]
    fn duplicates_and_reordering_are_caught() {
        let mut logs = healthy();
        logs.displays.push(display(4, 1, 7, 8));
        assert_eq!(invariants(&mut logs), vec![2]);
        let mut logs = healthy();
        logs.displays.insert(0, display(4, 1, 9, 5));
        assert_eq!(invariants(&mut logs), vec![5], "9 shown before 7 in one conversation");
    }

    #[test]
    fn a_view_going_back_or_a_read_without_display_is_caught() {
        let mut logs = healthy();
        logs.sender_views = vec![(1, ReceiptState::Read, LogMs(1)), (1, ReceiptState::Delivered, LogMs(2))];
        assert_eq!(invariants(&mut logs), vec![3]);
        let mut logs = healthy();
        logs.reads = vec![(MessageId(7), 5, LogMs(9))];
        assert_eq!(invariants(&mut logs), vec![3], "device 5 never showed message 7");
    }

    fn view(target: u32, status: PresenceStatus, cause: PresenceCause, changed_s: u64) -> crate::check::PresenceView {
        let update = PresenceUpdate { target: UserId(target), status, cause, changed_at: Time::from_secs(changed_s) };
        crate::check::PresenceView { watcher: 4, update, received_at: Time::from_secs(changed_s) }
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

        let stale = PresenceStatus::Offline { last_seen: Some(Time::from_secs(1)) };
        logs.presence_views = vec![view(3, stale, PresenceCause::Expired, 70)];
        assert_eq!(invariants(&mut logs), vec![7], "last-seen more than a minute old");
        let revealed = PresenceStatus::Offline { last_seen: Some(Time::from_secs(5)) };
        logs.presence_views = vec![view(9, revealed, PresenceCause::Disconnected, 5)];
        assert_eq!(invariants(&mut logs), vec![7], "user 9 hides last-seen");
    }
}
