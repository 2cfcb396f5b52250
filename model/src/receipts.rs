//! Delivery receipts: the per-(message, recipient device) state machine
//! sent -> delivered -> read, monotone and idempotent, and the sender's view of it.

/// The state of one message at one recipient device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReceiptState {
    /// ✓: stored durably and acknowledged to the sender.
    #[default]
    Sent,
    /// ✓✓ grey: the recipient's device has it.
    Delivered,
    /// ✓✓ blue: the recipient opened the conversation.
    Read,
}

/// An event that can move a receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptEvent {
    /// The recipient's device acknowledged receipt.
    DeliveredAck,
    /// The recipient opened the chat.
    ReadAck,
}

/// What applying an event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The state moved forward to the given state.
    Advanced(ReceiptState),
    /// The event was a duplicate or late: nothing changed (idempotence, monotonicity).
    Unchanged,
}

/// The receipt state machine as a table: each row is a (state, event) that moves the
/// state, and where to. A (state, event) not in the table leaves the state as it is (a
/// duplicate or late event: idempotence, monotonicity). Read implies delivered, so a read
/// ACK that overtakes its delivered ACK moves straight to `Read`.
pub const RECEIPT_TRANSITIONS: [(ReceiptState, ReceiptEvent, ReceiptState); 3] = [
    (ReceiptState::Sent, ReceiptEvent::DeliveredAck, ReceiptState::Delivered),
    (ReceiptState::Sent, ReceiptEvent::ReadAck, ReceiptState::Read),
    (ReceiptState::Delivered, ReceiptEvent::ReadAck, ReceiptState::Read),
];

impl ReceiptState {
    /// The row of `RECEIPT_TRANSITIONS` that `event` fires in this state, if any.
    pub fn step(self, event: ReceiptEvent) -> Option<usize> {
        RECEIPT_TRANSITIONS.iter().position(|&(from, on, _)| from == self && on == event)
    }

    /// Apply an event, by the table.
    pub fn apply(&mut self, event: ReceiptEvent) -> Transition {
        match self.step(event) {
            Some(row) => {
                *self = RECEIPT_TRANSITIONS[row].2;
                Transition::Advanced(*self)
            }
            None => Transition::Unchanged,
        }
    }

    /// Its name in reports and diagrams.
    pub fn name(self) -> &'static str {
        match self {
            ReceiptState::Sent => "sent ✓",
            ReceiptState::Delivered => "delivered ✓✓",
            ReceiptState::Read => "read ✓✓ (blue)",
        }
    }
}

impl ReceiptEvent {
    /// Its name in reports and diagrams.
    pub fn name(self) -> &'static str {
        match self {
            ReceiptEvent::DeliveredAck => "delivered receipt",
            ReceiptEvent::ReadAck => "read receipt",
        }
    }
}

/// What moves the ticks the sender's device shows: the server's ✓, or a receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderEvent {
    ServerAck,
    Receipt(ReceiptEvent),
}

impl SenderEvent {
    /// Its name in reports and diagrams.
    pub fn name(self) -> &'static str {
        match self {
            SenderEvent::ServerAck => "server ACK",
            SenderEvent::Receipt(e) => e.name(),
        }
    }
}

/// The ticks the sender's device shows as a state machine: `None` is in flight (no tick
/// yet). The server's ✓ moves in flight to sent; a receipt moves by `RECEIPT_TRANSITIONS`
/// from what is shown (in flight counts as sent: the ✓ and the ✓✓ travel different paths
/// and a receipt may come first); any other (state, event) changes nothing. Built from
/// `RECEIPT_TRANSITIONS`, and what `SenderView` follows.
pub const SENDER_TRANSITIONS: [(Option<ReceiptState>, SenderEvent, Option<ReceiptState>); 6] = {
    let r = RECEIPT_TRANSITIONS;
    [
        (None, SenderEvent::ServerAck, Some(ReceiptState::Sent)),
        (None, SenderEvent::Receipt(r[0].1), Some(r[0].2)),
        (None, SenderEvent::Receipt(r[1].1), Some(r[1].2)),
        (Some(r[0].0), SenderEvent::Receipt(r[0].1), Some(r[0].2)),
        (Some(r[1].0), SenderEvent::Receipt(r[1].1), Some(r[1].2)),
        (Some(r[2].0), SenderEvent::Receipt(r[2].1), Some(r[2].2)),
    ]
};

/// Times each row of `SENDER_TRANSITIONS` fired.
pub type SenderTransitionCounts = [u64; SENDER_TRANSITIONS.len()];

/// The row of `SENDER_TRANSITIONS` that moved the shown ticks from `before` to `after` on
/// `event` (`None`: nothing moved).
pub fn sender_transition(
    before: Option<ReceiptState>,
    event: SenderEvent,
    after: Option<ReceiptState>,
) -> Option<usize> {
    SENDER_TRANSITIONS.iter().position(|&(from, on, to)| from == before && on == event && to == after)
}

/// What the sender's device shows for one of its messages. The ✓ (server ACK) and the
/// ✓✓ (delivered receipt) travel different paths and can arrive in either order; the view
/// never goes back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderView {
    /// No tick yet: the send is in flight.
    acked: bool,
    receipt: Option<ReceiptState>,
}

impl SenderView {
    /// The ticks shown: `None` while in flight, else the highest state known.
    pub fn shown(&self) -> Option<ReceiptState> {
        match (self.acked, self.receipt) {
            (_, Some(r)) => Some(r),
            (true, None) => Some(ReceiptState::Sent),
            (false, None) => None,
        }
    }

    /// Whether the server's ✓ has arrived.
    pub fn is_acked(&self) -> bool {
        self.acked
    }

    /// The server's ✓ arrived. Returns whether the shown state changed.
    pub fn on_server_ack(&mut self) -> bool {
        let before = self.shown();
        self.acked = true;
        before != self.shown()
    }

    /// A receipt from the recipient arrived. Returns whether the shown state changed.
    pub fn on_receipt(&mut self, event: ReceiptEvent) -> bool {
        if crate::plant::planted(crate::plant::Plant::ReceiptNotMonotone) {
            // Planted: the latest receipt to arrive wins, even an older state.
            let before = self.shown();
            let mut state = ReceiptState::Sent;
            state.apply(event);
            self.receipt = Some(state);
            return before != self.shown();
        }
        let mut state = self.receipt.unwrap_or(ReceiptState::Sent);
        let moved = matches!(state.apply(event), Transition::Advanced(_));
        if moved || self.receipt.is_none() {
            let before = self.shown();
            self.receipt = Some(state);
            return before != self.shown();
        }
        false
    }

    /// Whether the sender has both the ✓ and a receipt of at least `state`: nothing later
    /// for this message up to `state` can change the view.
    pub fn settled_at(&self, state: ReceiptState) -> bool {
        self.acked && self.receipt.is_some_and(|r| r >= state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_view_moves_exactly_by_the_table() {
        // Every reachable view (✓ or not, receipt or not) and every event: a change is a
        // row of the table, and a row of the table is a change.
        let events = [
            SenderEvent::ServerAck,
            SenderEvent::Receipt(ReceiptEvent::DeliveredAck),
            SenderEvent::Receipt(ReceiptEvent::ReadAck),
        ];
        let mut views = vec![SenderView::default()];
        let mut fired = [false; SENDER_TRANSITIONS.len()];
        while let Some(view) = views.pop() {
            for event in events {
                let mut v = view;
                let before = v.shown();
                let changed = match event {
                    SenderEvent::ServerAck => v.on_server_ack(),
                    SenderEvent::Receipt(e) => v.on_receipt(e),
                };
                let row = SENDER_TRANSITIONS.iter().position(|&(from, on, _)| from == before && on == event);
                assert_eq!(changed, row.is_some(), "{view:?} on {event:?}");
                if let Some(row) = row {
                    assert_eq!(v.shown(), SENDER_TRANSITIONS[row].2);
                    assert_eq!(sender_transition(before, event, v.shown()), Some(row));
                    fired[row] = true;
                }
                if v != view {
                    views.push(v);
                }
            }
        }
        assert!(fired.iter().all(|&f| f), "every row is reachable: {fired:?}");
    }

    #[test]
    fn the_receipt_table_is_what_apply_follows() {
        for (from, event, to) in RECEIPT_TRANSITIONS {
            let mut s = from;
            assert_eq!(s.apply(event), Transition::Advanced(to));
        }
        let mut read = ReceiptState::Read;
        assert_eq!(read.apply(ReceiptEvent::DeliveredAck), Transition::Unchanged);
    }

    #[test]
    fn sent_to_delivered_to_read() {
        let mut s = ReceiptState::Sent;
        assert_eq!(s.apply(ReceiptEvent::DeliveredAck), Transition::Advanced(ReceiptState::Delivered));
        assert_eq!(s.apply(ReceiptEvent::ReadAck), Transition::Advanced(ReceiptState::Read));
    }

    #[test]
    fn duplicate_delivered_is_harmless() {
        let mut s = ReceiptState::Sent;
        s.apply(ReceiptEvent::DeliveredAck);
        assert_eq!(s.apply(ReceiptEvent::DeliveredAck), Transition::Unchanged);
        assert_eq!(s, ReceiptState::Delivered);
    }

    #[test]
    fn late_delivered_after_read_does_not_go_back() {
        let mut s = ReceiptState::Sent;
        assert_eq!(s.apply(ReceiptEvent::ReadAck), Transition::Advanced(ReceiptState::Read));
        assert_eq!(s.apply(ReceiptEvent::DeliveredAck), Transition::Unchanged);
        assert_eq!(s, ReceiptState::Read);
    }

    #[test]
    fn sender_view_in_order() {
        let mut v = SenderView::default();
        assert_eq!(v.shown(), None);
        assert!(v.on_server_ack());
        assert_eq!(v.shown(), Some(ReceiptState::Sent));
        assert!(v.on_receipt(ReceiptEvent::DeliveredAck));
        assert_eq!(v.shown(), Some(ReceiptState::Delivered));
        assert!(v.settled_at(ReceiptState::Delivered));
    }

    #[test]
    fn sender_view_receipt_before_server_ack_never_goes_back() {
        let mut v = SenderView::default();
        assert!(v.on_receipt(ReceiptEvent::DeliveredAck));
        assert_eq!(v.shown(), Some(ReceiptState::Delivered));
        assert!(!v.settled_at(ReceiptState::Delivered));
        assert!(!v.on_server_ack(), "a late ✓ must not change ✓✓ back to ✓");
        assert_eq!(v.shown(), Some(ReceiptState::Delivered));
        assert!(v.settled_at(ReceiptState::Delivered));
    }

    #[test]
    fn sender_view_duplicate_receipt_is_unchanged() {
        let mut v = SenderView::default();
        v.on_server_ack();
        v.on_receipt(ReceiptEvent::DeliveredAck);
        assert!(!v.on_receipt(ReceiptEvent::DeliveredAck));
        assert!(!v.on_server_ack());
    }
}

/// A receipt travelling back to the sender: which message, which state, which of the
/// recipient's devices, and when that device acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub msg: crate::ChatMessage,
    pub state: ReceiptState,
    pub by: crate::DeviceId,
    pub at: crate::Time,
}

impl Receipt {
    /// The event this receipt applies to the sender's view.
    pub fn event(&self) -> ReceiptEvent {
        match self.state {
            ReceiptState::Read => ReceiptEvent::ReadAck,
            _ => ReceiptEvent::DeliveredAck,
        }
    }
}

/// The largest group: WhatsApp's group size limit, and the design card's example of a
/// fan-out whose receipts must be stored compactly (one message, 1,023 recipients).
pub const GROUP_MEMBERS_MAX: u32 = 1_024;

// The table stores positions, counts and the member count in `u16`.
const _: () = assert!(GROUP_MEMBERS_MAX <= u16::MAX as u32);

/// The receipt rows of one group message on one replica: the design card's option B, a
/// table (message, recipient) -> delivered | read, written by the recipient's chat server
/// when one of the member's devices acknowledges.
///
/// A member is identified by its position in the group's member list (`0..members`). A
/// member counts as delivered when any of its devices has the message, so several devices,
/// repeated ACKs and re-deliveries all write the same row: writes are idempotent, and a
/// row only moves forward (read implies delivered). The sender's own position is not a
/// recipient: its writes are ignored and it is not waited for.
///
/// Stored compactly because a replica holds these for many messages, in one run of 64-bit
/// words (so that a replica can keep all its messages' tables in one arena, see
/// `GroupReceipts::init`): a header word (the member count, the sender's position and the
/// two counts, which are option A's counters derived from the rows), then for each 64
/// members a delivered word and a read word side by side, so that writing a row touches
/// the header and one 16-byte pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupReceipts<S = Box<[u64]>> {
    words: S,
}

/// In the header, a sender outside the group.
const NO_SENDER: u64 = u16::MAX as u64;

impl GroupReceipts {
    /// No rows yet for a group of `members` members. `sender_position` is the sender's
    /// position in the member list, or `None` when the sender is not a member (a group it
    /// has left): then every member is a recipient.
    pub fn new(members: u32, sender_position: Option<u32>) -> GroupReceipts {
        let mut words = vec![0; Self::words_for(members)].into_boxed_slice();
        Self::init(&mut words, members, sender_position);
        GroupReceipts { words }
    }

    /// The words the table of a group of `members` takes.
    pub fn words_for(members: u32) -> usize {
        1 + 2 * members.div_ceil(u64::BITS) as usize
    }

    /// Set up an empty table in `words` (`words_for(members)` of them; see `new`).
    pub fn init(words: &mut [u64], members: u32, sender_position: Option<u32>) {
        assert!(members <= GROUP_MEMBERS_MAX, "group of {members} members exceeds {GROUP_MEMBERS_MAX}");
        if let Some(sender) = sender_position {
            assert!(sender < members, "sender position {sender} outside a group of {members}");
        }
        assert_eq!(words.len(), GroupReceipts::words_for(members), "a table's words");
        words.fill(0);
        words[0] = u64::from(members) | sender_position.map_or(NO_SENDER, u64::from) << 16;
    }

    /// The words of the table whose header word is `header`.
    pub fn words_of(header: u64) -> usize {
        Self::words_for((header & 0xffff) as u32)
    }

    /// Where in a table's words the row at `position` lies (its delivered word; the read
    /// word follows it).
    pub fn row_word(position: u32) -> usize {
        Self::word(position, 0)
    }
}

impl<S> GroupReceipts<S> {
    /// The table `init` set up in `words`.
    pub fn from_words(words: S) -> GroupReceipts<S> {
        GroupReceipts { words }
    }
}

impl<S: AsRef<[u64]>> GroupReceipts<S> {
    fn header(&self) -> u64 {
        self.words.as_ref()[0]
    }

    fn members(&self) -> u32 {
        (self.header() & 0xffff) as u32
    }

    fn sender_position(&self) -> Option<u32> {
        let p = self.header() >> 16 & 0xffff;
        (p != NO_SENDER).then_some(p as u32)
    }

    /// Option A's counters, derived from the rows: (delivered, read) recipients.
    pub fn counters(&self) -> (u32, u32) {
        let h = self.header();
        ((h >> 32 & 0xffff) as u32, (h >> 48) as u32)
    }

    /// The aggregate the sender sees: `Read` when every recipient has read, `Delivered`
    /// when every recipient has it, else `Sent`. With no recipients (a group of only the
    /// sender) there is nothing to wait for: `Read` from the start.
    pub fn aggregate(&self) -> ReceiptState {
        let recipients = self.recipients();
        let (delivered, read) = self.counters();
        if read == recipients {
            ReceiptState::Read
        } else if delivered == recipients {
            ReceiptState::Delivered
        } else {
            ReceiptState::Sent
        }
    }

    /// Recipients: the members but the sender.
    pub fn recipients(&self) -> u32 {
        self.members() - u32::from(self.sender_position().is_some())
    }

    /// Whether the member at `position` counts as delivered (never the sender).
    pub fn delivered(&self, position: u32) -> bool {
        self.bit(position, 0)
    }

    /// Whether the member at `position` has read (never the sender).
    pub fn read(&self, position: u32) -> bool {
        self.bit(position, 1)
    }

    /// Bytes this holds, for memory reports: the header and 2 bits per member rounded up
    /// to 64-bit words.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.words.as_ref())
    }

    /// A hint that the row at `position` is written soon: its words are loaded meanwhile.
    #[inline]
    pub fn prefetch(&self, position: u32) {
        if let Some(pair) = self.words.as_ref().get(Self::word(position, 0)) {
            crate::prefetch(pair);
        }
    }

    fn assert_position(&self, position: u32) {
        assert!(position < self.members(), "position {position} outside a group of {}", self.members());
    }

    /// The word of `position`'s delivered (`which` 0) or read (1) bit.
    #[inline]
    fn word(position: u32, which: usize) -> usize {
        1 + 2 * (position / u64::BITS) as usize + which
    }

    fn bit(&self, position: u32, which: usize) -> bool {
        self.assert_position(position);
        self.words.as_ref()[Self::word(position, which)] & (1 << (position % u64::BITS)) != 0
    }
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> GroupReceipts<S> {
    /// Write the row of the member at `position` with `Delivered` or `Read` (read sets
    /// delivered too). Returns what the sender's aggregate became by this write, if it
    /// changed: `Delivered` when this write made every recipient delivered, `Read` when it
    /// made every recipient read (a read overtaking the last delivered completes both at
    /// once, reported as `Read`). Repeats and the sender's own position return `None`.
    pub fn write(&mut self, position: u32, state: ReceiptState) -> Option<ReceiptState> {
        self.assert_position(position);
        assert!(state != ReceiptState::Sent, "a receipt row is written only by a delivered or read ACK");
        if self.sender_position() == Some(position) {
            return None;
        }
        let before = self.aggregate();
        let counts_acks = crate::plant::planted(crate::plant::Plant::GroupCountsDevices);
        let recipients = u64::from(self.recipients());
        let mask = 1 << (position % u64::BITS);
        let words = self.words.as_mut();
        let (d, r) = (Self::word(position, 0), Self::word(position, 1));
        let mut header = words[0];
        if words[d] & mask == 0 || counts_acks {
            words[d] |= mask;
            let delivered = (header >> 32 & 0xffff) + 1;
            header = header & !(0xffff << 32) | delivered.min(recipients) << 32;
        }
        if state == ReceiptState::Read && words[r] & mask == 0 {
            words[r] |= mask;
            header += 1 << 48;
        }
        words[0] = header;
        let after = self.aggregate();
        (after != before).then_some(after)
    }
}

/// Option A: counters kept on the message row and bumped by the same writes, what a design
/// without the table would keep. To stay idempotent each bump must still know the row's
/// previous state (a repeated ACK or a member's second device must not count twice), which
/// is why the table is the source of truth; these exist to check that its derived counters
/// agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCounters {
    /// Recipients that have the message.
    pub delivered: u32,
    /// Recipients that have read it.
    pub read: u32,
}

impl GroupCounters {
    /// Count one write that moved a recipient's row from `before` to `after` (equal when
    /// the write changed nothing).
    pub fn apply(&mut self, before: ReceiptState, after: ReceiptState) {
        assert!(before <= after, "a receipt row never goes back: {before:?} -> {after:?}");
        if before < ReceiptState::Delivered && after >= ReceiptState::Delivered {
            self.delivered += 1;
        }
        if before < ReceiptState::Read && after >= ReceiptState::Read {
            self.read += 1;
        }
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;

    /// The row of `position` as a state, read back from the two bitsets.
    fn row(g: &GroupReceipts, position: u32) -> ReceiptState {
        match (g.delivered(position), g.read(position)) {
            (_, true) => ReceiptState::Read,
            (true, false) => ReceiptState::Delivered,
            (false, false) => ReceiptState::Sent,
        }
    }

    #[test]
    fn delivered_shown_only_when_the_last_recipient_is_delivered() {
        let mut g = GroupReceipts::new(500, Some(0));
        assert_eq!(g.recipients(), 499);
        for p in 1..499 {
            assert_eq!(g.write(p, ReceiptState::Delivered), None, "member {p} is not the last");
            assert_eq!(g.aggregate(), ReceiptState::Sent);
        }
        assert_eq!(g.counters(), (498, 0));
        assert_eq!(g.write(499, ReceiptState::Delivered), Some(ReceiptState::Delivered));
        assert_eq!(g.aggregate(), ReceiptState::Delivered);
        assert_eq!(g.counters(), (499, 0));
    }

    #[test]
    fn read_shown_only_when_every_recipient_has_read() {
        let mut g = GroupReceipts::new(64, Some(63));
        for p in 0..63 {
            g.write(p, ReceiptState::Delivered);
        }
        assert_eq!(g.aggregate(), ReceiptState::Delivered);
        for p in 1..63 {
            assert_eq!(g.write(p, ReceiptState::Read), None);
            assert_eq!(g.aggregate(), ReceiptState::Delivered);
        }
        assert_eq!(g.write(0, ReceiptState::Read), Some(ReceiptState::Read));
        assert_eq!(g.aggregate(), ReceiptState::Read);
        assert_eq!(g.counters(), (63, 63));
    }

    #[test]
    fn second_device_or_repeated_ack_changes_nothing() {
        let mut g = GroupReceipts::new(3, Some(0));
        assert_eq!(g.write(1, ReceiptState::Delivered), None);
        let after_first = g.clone();
        // The member's second device, then a re-delivery's ACK: the same row.
        assert_eq!(g.write(1, ReceiptState::Delivered), None);
        assert_eq!(g.write(1, ReceiptState::Delivered), None);
        assert_eq!(g, after_first);
        assert_eq!(g.write(1, ReceiptState::Read), None);
        let after_read = g.clone();
        assert_eq!(g.write(1, ReceiptState::Read), None);
        assert_eq!(g.write(1, ReceiptState::Delivered), None, "a late delivered must not undo read");
        assert_eq!(g, after_read);
        assert_eq!(g.counters(), (1, 1));
    }

    #[test]
    fn sender_position_is_ignored_and_not_needed_for_completion() {
        let mut g = GroupReceipts::new(3, Some(1));
        assert_eq!(g.write(1, ReceiptState::Read), None);
        assert!(!g.delivered(1) && !g.read(1));
        assert_eq!(g.counters(), (0, 0));
        assert_eq!(g.write(0, ReceiptState::Read), None);
        assert_eq!(g.write(2, ReceiptState::Read), Some(ReceiptState::Read));
        assert_eq!(g.counters(), (2, 2));
    }

    #[test]
    fn sender_outside_the_group_waits_for_every_member() {
        let mut g = GroupReceipts::new(2, None);
        assert_eq!(g.recipients(), 2);
        assert_eq!(g.write(0, ReceiptState::Delivered), None);
        assert_eq!(g.write(1, ReceiptState::Delivered), Some(ReceiptState::Delivered));
    }

    #[test]
    fn read_overtaking_delivered_counts_as_both() {
        let mut g = GroupReceipts::new(3, Some(0));
        assert_eq!(g.write(1, ReceiptState::Read), None);
        assert!(g.delivered(1) && g.read(1));
        assert_eq!(g.counters(), (1, 1));
        // The last recipient's read completes delivered and read at once: reported as read.
        assert_eq!(g.write(2, ReceiptState::Read), Some(ReceiptState::Read));
        assert_eq!(g.write(2, ReceiptState::Delivered), None, "the overtaken delivered arrives late");
        assert_eq!(g.counters(), (2, 2));
    }

    #[test]
    fn group_of_only_the_sender_has_nothing_to_wait_for() {
        let mut g = GroupReceipts::new(1, Some(0));
        assert_eq!(g.recipients(), 0);
        assert_eq!(g.aggregate(), ReceiptState::Read);
        assert_eq!(g.write(0, ReceiptState::Read), None);
        assert_eq!(g.counters(), (0, 0));
    }

    #[test]
    #[should_panic(expected = "outside a group")]
    fn position_beyond_members_is_a_caller_bug() {
        GroupReceipts::new(3, Some(0)).write(3, ReceiptState::Delivered);
    }

    #[test]
    fn largest_group_holds_about_two_bits_per_member() {
        let g = GroupReceipts::new(GROUP_MEMBERS_MAX, Some(0));
        let rows = 2 * GROUP_MEMBERS_MAX as usize / 8;
        assert!(g.bytes() >= rows && g.bytes() <= rows + 64, "{} bytes", g.bytes());
    }

    /// xorshift64: a seeded, dependency-free generator, enough to shuffle writes.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u32) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % u64::from(n)) as u32
        }
    }

    /// Random writes (repeats, overtaking reads, the sender's position) until every
    /// recipient has read, checking after each write that the derived counters, the rows
    /// and option A's incremental counters agree.
    fn run_group(rng: &mut XorShift, members: u32, sender: Option<u32>) -> Vec<ReceiptState> {
        let mut g = GroupReceipts::new(members, sender);
        let mut option_a = GroupCounters::default();
        let mut reported = Vec::new();
        while g.counters().1 < g.recipients() {
            let position = rng.below(members);
            let state = if rng.below(3) == 0 { ReceiptState::Read } else { ReceiptState::Delivered };
            let before = row(&g, position);
            reported.extend(g.write(position, state));
            option_a.apply(before, row(&g, position));
            let rows = (0..members).map(|p| row(&g, p));
            let delivered = rows.clone().filter(|&r| r >= ReceiptState::Delivered).count() as u32;
            let read = rows.filter(|&r| r == ReceiptState::Read).count() as u32;
            assert_eq!(g.counters(), (delivered, read));
            assert_eq!(g.counters(), (option_a.delivered, option_a.read));
        }
        reported
    }

    #[test]
    fn random_writes_keep_counters_consistent_and_report_completion_once() {
        let seed: u64 = 0x5eed_f9c0;
        let mut rng = XorShift(seed);
        // How often each completion shape occurred: the run must reach both.
        let (mut in_two_steps, mut at_once) = (0, 0);
        for case in 0..40 {
            // Small groups too: completing both at once needs every other recipient read
            // before the last one is delivered, which a large group almost never sees.
            let members_max = match case % 8 {
                0 => GROUP_MEMBERS_MAX,
                1 | 3 | 5 => 4,
                _ => 80,
            };
            let members = 1 + rng.below(members_max);
            let sender = if rng.below(4) == 0 { None } else { Some(rng.below(members)) };
            let reported = run_group(&mut rng, members, sender);
            let context = format!("seed={seed:#x} case={case} members={members} sender={sender:?}");
            if members - u32::from(sender.is_some()) == 0 {
                assert!(reported.is_empty(), "{context}: nothing to wait for, nothing to report");
                continue;
            }
            // Read is reported exactly once, last; Delivered at most once, before it (a
            // single write may complete both, reported as Read alone).
            assert_eq!(reported.last(), Some(&ReceiptState::Read), "{context}: {reported:?}");
            match reported.as_slice() {
                [ReceiptState::Delivered, ReceiptState::Read] => in_two_steps += 1,
                [ReceiptState::Read] => at_once += 1,
                _ => panic!("{context}: completion reported as {reported:?}"),
            }
        }
        assert!(in_two_steps > 0 && at_once > 0, "seed={seed:#x}: {in_two_steps} two-step, {at_once} at once");
    }
}
