//! The Cassandra tier's data: the `messages` rows, kept once per token range with which of
//! the range's replicas hold each row (`RangeRows`), and each node's own group receipts
//! table (`CassandraNode`).

use wasim_model::{ChatMessage, ConversationId, GroupReceipts, MessageId, ReceiptState, Table, Time, UserId};

/// The replicas of a conversation's partition: the node owning its token and the next
/// `rf - 1` nodes on the ring (SimpleStrategy).
pub fn replicas(conversation: ConversationId, nodes: u32, rf: u32) -> impl Iterator<Item = u32> {
    ring_from(first_replica(conversation, nodes), nodes, rf)
}

/// The replicas of a group message's partition of the group receipts table, keyed by the
/// message (the card's `message_receipts`, `PRIMARY KEY (message_id, recipient_id)`): its
/// members' rows are spread over the ring message by message, not held by the group's own
/// replicas (a thousand members' ACKs a second on the three nodes of each group).
pub fn receipt_replicas(id: MessageId, nodes: u32, rf: u32) -> impl Iterator<Item = u32> {
    ring_from(wasim_model::fast_range(id.hash64(), nodes), nodes, rf)
}

/// `first` and the next `rf - 1` nodes on a ring of `nodes`.
fn ring_from(first: u32, nodes: u32, rf: u32) -> impl Iterator<Item = u32> {
    (0..rf).map(move |i| if first + i >= nodes { first + i - nodes } else { first + i })
}

/// A group message's row is stored once, for all members (it names `UserId::GROUP`).
fn check_row(msg: &ChatMessage) {
    if msg.conversation.group_id().is_some() {
        assert_eq!(msg.to, UserId::GROUP, "a group message's row is stored once, for all members");
    }
}

/// Rows per entry of a range's sparse index (see `RangeRows::marks`).
const ROWS_PER_MARK: usize = 8;

/// The first replica of `conversation`'s partition: the node owning its token, whose
/// primary range holds it.
pub fn first_replica(conversation: ConversationId, nodes: u32) -> u32 {
    wasim_model::fast_range(conversation.hash64(), nodes)
}

/// The rows of the partitions one node owns the token of (its primary range), each kept
/// once with which of the range's `rf` replicas (that node and the next ones on the ring)
/// hold it: the replicas of a row hold the same bytes, and a node's disk is the rows of
/// the ranges it replicates that it holds. Kept sorted by message id: rows arrive nearly
/// in id order (ids embed the send time), so an insert lands near the end and shifts few
/// rows; a lookup by id (unique: a Snowflake) goes by a sparse index.
///
/// A row is kept as its id, which replicas hold it and its status, in one `u64` (see
/// [`Row`]): 8 bytes, where its bytes took 31 (41 a replica before that). What a read
/// returns is whether the replica holds the row; the message it names travels with the
/// inbox pointer that asks for it (the only reads of rows by id are a catch-up's, of the
/// entries of an inbox), so the simulation keeps a message's bytes once, with the few
/// pointers, not with every row.
#[derive(Debug, Default)]
pub struct RangeRows {
    /// The rows, by id (a row's id leads its bits: see [`Row`]).
    rows: Vec<Row>,
    /// Rows per conversation (partition), for history pages. A count, not the rows: the
    /// first page of a chat's history (before the newest) holds the last `limit` of them,
    /// and nothing reads the rows of a page. Kept only for the partitions a run may page
    /// (`paged`: the chats watchers open), where one per message took about 9 bytes.
    partition_rows: PartitionCounts,
    /// The population, whose watchers' opened chats are the partitions paged (`None`:
    /// every partition is counted).
    paged: Option<crate::population::Population>,
    /// The id of every `ROWS_PER_MARK`th row: a sparse index small enough to stay in cache,
    /// which finds a row's block without a miss per bisection step over the rows. Valid
    /// for the rows it covers; an insert before its end cuts it back, and a lookup extends
    /// it.
    marks: Vec<MessageId>,
    one_in: u32,
}

/// A row: its id in the top 49 bits, and below them
/// - bits 0-11: bit `i` says replica `i` of the range holds the row;
/// - bits 12-13: the `status` column (the card's data model), the furthest state a replica
///   holding the row applied (nothing reads it back but the tests: the sender's ticks
///   travel as receipts);
/// - bit 14: the checkers follow its conversation (one in `one_in`): they compare the rows
///   held with the ✓s given (the partition key is not kept).
///
/// Rows in id order are in the order of their `u64`s. An id fits 49 bits: its milliseconds
/// (from the start of the run: a day and a minute's skew fit 27 bits) above 22 bits of
/// worker and sequence; the id and a `u16` cell beside it took 10 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Row(u64);

const HOLDER_BITS: u32 = 12;
const HOLDERS: u64 = (1 << HOLDER_BITS) - 1;
const STATUS_SHIFT: u32 = HOLDER_BITS;
const FOLLOWED: u64 = 1 << 14;
const ID_SHIFT: u32 = 15;
/// Ids below this fit a row.
const ROW_ID_END: u64 = 1 << (64 - ID_SHIFT);
const _: () = assert!(crate::limits::REPLICATION_FACTOR_MAX <= HOLDER_BITS, "a row's holders fit its cell");
const _: () = assert!(
    ((crate::limits::TOTAL_S_MAX * 1_000 + crate::limits::SKEW_MS_MAX + 1) << 22) < ROW_ID_END,
    "a run's ids fit a row"
);

impl Row {
    fn new(id: MessageId, holder: u64, followed: bool) -> Row {
        assert!(
            id.0 < ROW_ID_END,
            "message id {id} is beyond the {ROW_ID_END} a row holds: its server minted more than 4,096 ids a millisecond for hours"
        );
        Row((id.0 << ID_SHIFT) | holder | if followed { FOLLOWED } else { 0 })
    }

    fn id(self) -> MessageId {
        MessageId(self.0 >> ID_SHIFT)
    }

    fn holders(self) -> u64 {
        self.0 & HOLDERS
    }

    fn followed(self) -> bool {
        self.0 & FOLLOWED != 0
    }

    fn status(self) -> ReceiptState {
        match (self.0 >> STATUS_SHIFT) & 3 {
            0 => ReceiptState::Sent,
            1 => ReceiptState::Delivered,
            _ => ReceiptState::Read,
        }
    }

    fn advance(&mut self, state: ReceiptState) {
        let state = self.status().max(state) as u64;
        self.0 = (self.0 & !(3 << STATUS_SHIFT)) | (state << STATUS_SHIFT);
    }
}

impl RangeRows {
    /// A range expecting about `rows` rows, whose checkers follow one conversation in
    /// `one_in`, counting the rows of the partitions `paged` pages.
    pub fn with_capacity(rows: usize, one_in: u32, paged: crate::population::Population) -> RangeRows {
        RangeRows { paged: Some(paged), rows: Vec::with_capacity(rows), one_in, ..RangeRows::default() }
    }

    fn follows(&self, conversation: ConversationId) -> bool {
        crate::check::checks_conversation(conversation, self.one_in.max(1))
    }

    /// Whether a page of `conversation` may be read (its rows are counted).
    fn counts(&self, conversation: ConversationId) -> bool {
        self.paged.as_ref().is_none_or(|p| p.opens_chat(conversation))
    }

    fn count_row(&mut self, conversation: ConversationId) {
        if self.counts(conversation) {
            self.partition_rows.add(conversation);
        }
    }

    /// Replica `replica` of the range applies a write: an upsert, so a retried write (the
    /// same bytes: an id is minted once) leaves one row.
    pub fn write(&mut self, msg: &ChatMessage, replica: u32) {
        let bit = 1u64 << replica;
        check_row(msg);
        if self.rows.last().is_none_or(|r| r.id() < msg.id) {
            // The common case: the newest id so far.
            self.rows.push(Row::new(msg.id, bit, self.follows(msg.conversation)));
            self.count_row(msg.conversation);
            return;
        }
        // Nearly in order: search back from the end before falling back to bisection.
        let tail = self.rows.len().saturating_sub(64);
        let at = if self.rows[tail].id() < msg.id {
            tail + self.rows[tail..].partition_point(|r| r.id() < msg.id)
        } else {
            self.rows.partition_point(|r| r.id() < msg.id)
        };
        if self.rows.get(at).is_some_and(|r| r.id() == msg.id) {
            self.rows[at].0 |= bit;
        } else {
            self.rows.insert(at, Row::new(msg.id, bit, self.follows(msg.conversation)));
            self.marks.truncate(at / ROWS_PER_MARK);
            self.count_row(msg.conversation);
        }
    }

    /// The rows of a history page: `conversation`'s before `before`, at most `limit`. Only
    /// the first page (before the newest, `MessageId(u64::MAX)`) is read. (Counted over the
    /// range's replicas: one that missed a write still answers for its partition's size.)
    pub fn history(&self, conversation: ConversationId, before: MessageId, limit: u32) -> u32 {
        assert_eq!(before, MessageId(u64::MAX), "only a chat's first page is read");
        assert!(self.counts(conversation), "a page of a partition whose rows are not counted: see `paged`");
        assert!(limit <= u32::from(u8::MAX), "a history page holds at most {} rows", u8::MAX);
        u32::from(self.partition_rows.get(conversation)).min(limit)
    }

    /// `UPDATE messages SET status = ... WHERE conversation = ... AND id = ...` at replica
    /// `replica`: the status only moves forward (a late delivered receipt does not undo a
    /// read). Returns whether the replica holds the row (a status may reach a replica
    /// before the row does: it is not applied then, and the row's own write comes with
    /// status sent).
    pub fn set_status(&mut self, id: MessageId, state: ReceiptState, replica: u32) -> bool {
        let at = self.position(id);
        if self.holds_at(at, id, replica) {
            self.rows[at].advance(state);
            true
        } else {
            false
        }
    }

    fn holds_at(&self, at: usize, id: MessageId, replica: u32) -> bool {
        self.rows.get(at).is_some_and(|r| r.id() == id && r.holders() & (1 << replica) != 0)
    }

    /// Where the row of `id` is, or would go: its block by the sparse index, then within
    /// the block (a range's rows are far larger than the cache: bisecting them costs a miss
    /// per step, and a read receipt's row is tens of thousands of rows back).
    fn position(&mut self, id: MessageId) -> usize {
        // Rows moved by an insert were cut off (`write`); rows added since are marked now.
        let marked = self.marks.len() * ROWS_PER_MARK;
        if marked < self.rows.len() {
            self.marks.extend(self.rows[marked..].iter().step_by(ROWS_PER_MARK).map(|r| r.id()));
        }
        // The last block whose first id is below `id` holds its place, or its place is
        // the start of the next.
        let block = self.marks.partition_point(|&m| m < id).saturating_sub(1);
        let from = block * ROWS_PER_MARK;
        let until = (from + ROWS_PER_MARK).min(self.rows.len());
        from + self.rows[from..until].partition_point(|r| r.id() < id)
    }

    /// The status of a row at `replica`, if it holds it.
    #[cfg(test)]
    pub fn status(&mut self, id: MessageId, replica: u32) -> Option<ReceiptState> {
        let at = self.position(id);
        self.holds_at(at, id, replica).then(|| self.rows[at].status())
    }

    /// Read the row of `id` at `replica`: whether it holds it (the message travels with
    /// the pointer that asks: see `RangeRows`).
    pub fn read(&mut self, id: MessageId, replica: u32) -> bool {
        let at = self.position(id);
        self.holds_at(at, id, replica)
    }

    /// Repair replica `replica` from its peers (`nodetool repair`): the rows minted at or
    /// after `ms` (ids lead with their time) that another replica holds and it does not
    /// are copied to it. Returns the rows copied.
    pub fn repair(&mut self, ms: u64, replica: u32) -> u64 {
        let from = self.rows.partition_point(|r| r.id().timestamp_ms() < ms);
        let bit = 1u64 << replica;
        let mut copied = 0;
        for row in &mut self.rows[from..] {
            if row.holders() & bit == 0 && row.holders() != 0 {
                row.0 |= bit;
                copied += 1;
            }
        }
        copied
    }

    /// Rows replica `replica` holds.
    pub fn held_by(&self, replica: u32) -> usize {
        self.rows.iter().filter(|r| r.holders() & (1 << replica) != 0).count()
    }

    /// The ids of the rows held of the conversations the checkers follow, ascending, each
    /// once per replica holding it.
    pub fn followed_ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.rows
            .iter()
            .filter(|r| r.followed())
            .flat_map(|r| std::iter::repeat_n(r.id(), r.holders().count_ones() as usize))
    }
}

/// Rows per partition, counted up to 255 (a history page holds fewer): an open-addressing
/// table of the conversations' ids with a byte each beside them, 9 bytes a slot where a
/// hash map of `(ConversationId, u32)` took 17. Most partitions of a large run hold one
/// row, so this is an entry per message.
#[derive(Debug, Default)]
struct PartitionCounts {
    keys: Vec<u64>,
    counts: Vec<u8>,
    len: usize,
}

impl PartitionCounts {
    /// No conversation id is `u64::MAX` (both halves stay below 2^30).
    const EMPTY: u64 = u64::MAX;

    /// Where `conversation` is, or would go.
    fn slot(&self, conversation: ConversationId) -> usize {
        let mask = self.keys.len() - 1;
        let mut i = conversation.hash64() as usize & mask;
        while self.keys[i] != conversation.0 && self.keys[i] != Self::EMPTY {
            i = (i + 1) & mask;
        }
        i
    }

    /// One more row of `conversation`.
    fn add(&mut self, conversation: ConversationId) {
        // Grow past 7/8 full (and from empty).
        if (self.len + 1) * 8 > self.keys.len() * 7 {
            self.grow();
        }
        let i = self.slot(conversation);
        if self.keys[i] == Self::EMPTY {
            self.keys[i] = conversation.0;
            self.len += 1;
        }
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    /// Rows of `conversation`, up to 255.
    fn get(&self, conversation: ConversationId) -> u8 {
        if self.keys.is_empty() {
            return 0;
        }
        let i = self.slot(conversation);
        if self.keys[i] == conversation.0 {
            self.counts[i]
        } else {
            0
        }
    }

    fn grow(&mut self) {
        let slots = (self.keys.len() * 2).max(16);
        let keys = std::mem::replace(&mut self.keys, vec![Self::EMPTY; slots]);
        let counts = std::mem::replace(&mut self.counts, vec![0; slots]);
        for (key, count) in keys.into_iter().zip(counts).filter(|&(k, _)| k != Self::EMPTY) {
            let i = self.slot(ConversationId(key));
            self.keys[i] = key;
            self.counts[i] = count;
        }
    }
}

/// One Cassandra node's own data: the group receipts rows of the group messages it
/// replicates, and when it applied the writes the ✓ check samples. (Its `messages` rows
/// are its ranges' `RangeRows`.)
#[derive(Debug, Default)]
pub struct CassandraNode {
    /// When writes of the messages the ✓ check samples were applied here (on disk, so
    /// they outlive the process).
    sampled_writes: Vec<(MessageId, Time)>,
    /// The group receipts table's rows of the group messages this node replicates: per
    /// message, a delivered and a read bit per member (option B), the counters derived.
    /// Each message's table is a run of words in one arena, from `group_index[id] - 1`
    /// (an index small enough to stay in cache: it gives where a row is without a miss,
    /// so the row's line can be loaded ahead; a read receipt lands on a message seconds
    /// old, far out of cache).
    group_index: Table<u64, u32>,
    group_words: Vec<u64>,
}

impl CassandraNode {
    /// Write the group receipts row of the member at `position` for message `id`: what
    /// the aggregate became by this write, if it changed (see `GroupReceipts::write`). The
    /// message's first row here sets up its table from `table`: the group's size and the
    /// sender's position in it.
    pub fn write_group_receipt(
        &mut self,
        id: MessageId,
        table: impl FnOnce() -> (u32, Option<u32>),
        position: u32,
        state: ReceiptState,
    ) -> Option<ReceiptState> {
        let index = self.group_index.get_or_insert_default(id.0);
        if *index == 0 {
            let (members, sender_position) = table();
            // The header at an odd word, so that each (delivered, read) pair after it is
            // 16-byte aligned and never straddles a cache line.
            if self.group_words.len().is_multiple_of(2) {
                self.group_words.push(0);
            }
            let start = self.group_words.len();
            self.group_words.resize(start + GroupReceipts::words_for(members), 0);
            GroupReceipts::init(&mut self.group_words[start..], members, sender_position);
            *index = u32::try_from(start + 1).expect("a node's group receipts fit 4 billion words");
        }
        let start = *index as usize - 1;
        let len = GroupReceipts::words_of(self.group_words[start]);
        GroupReceipts::from_words(&mut self.group_words[start..start + len]).write(position, state)
    }

    /// A hint that the receipts row of message `id` at `position` is written soon. The
    /// index is small enough to stay in cache (a few thousand messages a node); the rows
    /// are not.
    #[inline]
    pub fn prefetch_group_receipt(&self, id: MessageId, position: u32) {
        match self.group_index.get(id.0) {
            Some(&index) if index > 0 => {
                let start = index as usize - 1;
                wasim_model::prefetch(&self.group_words[start]);
                if let Some(pair) = self.group_words.get(start + GroupReceipts::row_word(position)) {
                    wasim_model::prefetch(pair);
                }
            }
            _ => self.group_index.prefetch(id.0),
        }
    }

    /// Bytes the group receipts table takes on this node.
    pub fn group_receipts_bytes(&self) -> u64 {
        (self.group_words.len() * std::mem::size_of::<u64>()) as u64
    }

    /// Note that a write of `id`, one the ✓ check samples, was applied at `at`.
    pub fn log_sampled_write(&mut self, id: MessageId, at: Time) {
        self.sampled_writes.push((id, at));
    }

    /// The sampled writes applied here, with when.
    pub fn sampled_writes(&self) -> &[(MessageId, Time)] {
        &self.sampled_writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasim_model::GroupId;

    #[test]
    fn group_receipt_tables_of_many_messages_in_one_node_agree_with_standalone_tables() {
        let mut node = CassandraNode::default();
        // Three messages of groups of different sizes, their rows written interleaved.
        let shapes = [(MessageId(10), 1_024, Some(5)), (MessageId(11), 3, None), (MessageId(12), 65, Some(64))];
        let mut alone: Vec<GroupReceipts> = shapes.iter().map(|&(_, m, s)| GroupReceipts::new(m, s)).collect();
        let mut x = 0x5eedu64;
        for step in 0..6_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x % 3) as usize;
            let (id, members, sender) = shapes[k];
            let position = ((x >> 8) % u64::from(members)) as u32;
            let state = if (x >> 40).is_multiple_of(3) { ReceiptState::Read } else { ReceiptState::Delivered };
            node.prefetch_group_receipt(id, position);
            let stored = node.write_group_receipt(id, || (members, sender), position, state);
            assert_eq!(stored, alone[k].write(position, state), "step {step}: message {}", id.0);
        }
        let bytes: usize = alone.iter().map(|g| g.bytes()).sum();
        assert!(node.group_receipts_bytes() as usize >= bytes && node.group_receipts_bytes() as usize <= bytes + 3 * 8);
    }
    use wasim_model::{Time, UserId};

    fn msg(id: u64) -> ChatMessage {
        ChatMessage {
            id: MessageId(id),
            conversation: ConversationId::direct(UserId(1), UserId(2)),
            from: UserId(1),
            to: UserId(2),
            client_seq: 0,
            sent_at: Time::ZERO,
        }
    }

    #[test]
    fn partition_counts_count_each_conversation_up_to_255() {
        let mut counts = PartitionCounts::default();
        let c = |u: u32| ConversationId::direct(UserId(u), UserId(u + 1));
        assert_eq!(counts.get(c(1)), 0, "empty");
        for u in 0..10_000 {
            for _ in 0..=(u % 3) {
                counts.add(c(u));
            }
        }
        counts.add(ConversationId::group(GroupId(7)));
        assert!((0..10_000).all(|u| u32::from(counts.get(c(u))) == u % 3 + 1));
        assert_eq!(counts.get(ConversationId::group(GroupId(7))), 1);
        assert_eq!(counts.get(c(20_000)), 0);
        for _ in 0..300 {
            counts.add(c(0));
        }
        assert_eq!(counts.get(c(0)), 255, "saturates");
        assert_eq!(counts.len, 10_001);
    }

    #[test]
    fn replicas_are_distinct_consecutive_nodes() {
        let c = ConversationId::direct(UserId(1), UserId(2));
        let r: Vec<u32> = replicas(c, 5, 3).collect();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1], (r[0] + 1) % 5);
        assert_eq!(r[2], (r[0] + 2) % 5);
    }

    #[test]
    fn conversations_spread_over_the_ring() {
        let mut hits = [0u32; 4];
        for u in 0..4_000 {
            let c = ConversationId::direct(UserId(u), UserId(u + 1));
            hits[replicas(c, 4, 1).next().unwrap() as usize] += 1;
        }
        assert!(hits.iter().all(|&h| h > 800), "{hits:?}");
    }

    #[test]
    fn one_groups_receipts_spread_over_the_ring_message_by_message() {
        // A group's messages, minted by one server a millisecond apart: their receipts
        // partitions (keyed by message) land on every node, evenly, where the group's own
        // partition is one node's.
        let mut hits = [0u32; 16];
        let mut ids = wasim_model::Snowflake::new(3);
        for ms in 0..16_000u64 {
            let id = ids.next(Time::from_ms(ms));
            let r: Vec<u32> = receipt_replicas(id, 16, 3).collect();
            assert_eq!(r, [r[0], (r[0] + 1) % 16, (r[0] + 2) % 16], "consecutive replicas");
            hits[r[0] as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (800..1_200).contains(&h)), "{hits:?}");
    }

    #[test]
    fn writes_out_of_order_are_read_back_and_upserted() {
        let mut n = RangeRows::default();
        for id in [5, 3, 9, 5] {
            n.write(&msg(id), 0);
        }
        assert_eq!(n.held_by(0), 3);
        assert_eq!(n.followed_ids().map(|i| i.0).collect::<Vec<_>>(), vec![3, 5, 9]);
        assert!(n.read(MessageId(9), 0));
        assert!(!n.read(MessageId(4), 0));
        assert!(!n.read(MessageId(9), 1), "another replica's");
    }

    #[test]
    fn each_replica_holds_what_it_applied_and_a_repair_copies_what_it_missed() {
        let mut range = RangeRows::default();
        let c = msg(1).conversation;
        for id in 1..=4 {
            range.write(&msg(id), 0);
        }
        range.write(&msg(2), 2);
        range.write(&msg(4), 2);
        assert_eq!((range.held_by(0), range.held_by(1), range.held_by(2)), (4, 0, 2));
        assert!(!range.read(MessageId(3), 2), "replica 2 missed 3");
        assert!(range.read(MessageId(4), 2));
        assert!(!range.set_status(MessageId(3), ReceiptState::Read, 2), "not held there: not applied");
        assert_eq!(range.followed_ids().map(|i| i.0).collect::<Vec<_>>(), vec![1, 2, 2, 3, 4, 4], "an id per replica");
        assert_eq!(range.history(c, MessageId(u64::MAX), 10), 4, "the partition's rows, once each");
        // Replica 1 was down for all of it: it copies every row held elsewhere.
        assert_eq!(range.repair(0, 1), 4);
        assert_eq!(range.repair(0, 1), 0, "nothing left to copy");
        assert!(range.read(MessageId(3), 1));
        // A repair goes back only as far as asked: ids lead with their mint time.
        let mut late = RangeRows::default();
        let minted_at = |ms: u64| ChatMessage { id: MessageId(ms << 22), ..msg(0) };
        late.write(&minted_at(1_000), 0);
        late.write(&minted_at(9_000), 0);
        assert_eq!(late.repair(5_000, 2), 1);
        assert_eq!((late.held_by(2), late.held_by(0)), (1, 2));
    }

    #[test]
    fn a_rows_status_only_moves_forward_and_waits_for_its_row() {
        let mut node = RangeRows::default();
        assert!(!node.set_status(MessageId(5), ReceiptState::Delivered, 0), "no row yet: not applied");
        node.write(&msg(7), 0);
        node.write(&msg(5), 0); // lands before 7: its status moves with it
        assert_eq!(node.status(MessageId(5), 0), Some(ReceiptState::Sent));
        assert!(node.set_status(MessageId(5), ReceiptState::Read, 0));
        assert!(node.set_status(MessageId(5), ReceiptState::Delivered, 0), "a late delivered receipt");
        assert_eq!(node.status(MessageId(5), 0), Some(ReceiptState::Read), "does not undo the read");
        assert_eq!(node.status(MessageId(7), 0), Some(ReceiptState::Sent));
        assert_eq!(node.status(MessageId(6), 0), None, "no such row");
    }

    #[test]
    fn a_row_keeps_its_id_holders_status_and_following_apart() {
        let last = crate::limits::REPLICATION_FACTOR_MAX - 1;
        let (mut followed, mut not) = (RangeRows::default(), RangeRows { one_in: 1 << 20, ..RangeRows::default() });
        // The largest id a row holds, then a smaller one: inserted before it.
        let (a, b) =
            (msg(ROW_ID_END - 1), ChatMessage { conversation: ConversationId::direct(UserId(7), UserId(9)), ..msg(2) });
        for range in [&mut followed, &mut not] {
            for replica in [0, last] {
                range.write(&a, replica);
                range.write(&b, replica);
            }
            for state in [ReceiptState::Delivered, ReceiptState::Read, ReceiptState::Sent] {
                assert!(range.set_status(a.id, state, last));
            }
            assert_eq!(range.status(a.id, 0), Some(ReceiptState::Read));
            assert_eq!(range.status(b.id, last), Some(ReceiptState::Sent));
            assert_eq!((range.held_by(0), range.held_by(last), range.held_by(1)), (2, 2, 0));
            assert_eq!(range.repair(0, 1), 2);
            assert_eq!(range.rows.iter().map(|r| r.id()).collect::<Vec<_>>(), [b.id, a.id]);
        }
        assert_eq!(followed.followed_ids().count(), 6, "two rows, three replicas each");
        let expected: usize = [a, b].iter().filter(|m| not.follows(m.conversation)).count() * 3;
        assert_eq!(not.followed_ids().count(), expected, "the rows not followed are not listed");
    }

    #[test]
    fn a_row_is_found_wherever_it_is_whatever_the_spacing_of_ids() {
        let mut node = RangeRows::default();
        // Ids bunched and spread (a burst, then a quiet spell), some missing.
        let ids: Vec<u64> = (0..5_000u64).map(|i| if i < 2_500 { i * 3 } else { 10_000 + i * i }).collect();
        for &id in &ids {
            node.write(&msg(id), 0);
        }
        for probe in [0, 1, 3, 299, 7_497, 7_498, 10_000 + 2_500 * 2_500, 10_000 + 4_999 * 4_999, u64::MAX - 1] {
            let want = node.rows.partition_point(|r| r.id().0 < probe);
            assert_eq!(node.position(MessageId(probe)), want, "id {probe}");
        }
        for &id in ids.iter().step_by(97) {
            let at = node.position(MessageId(id));
            assert_eq!(node.rows[at].id().0, id);
        }
        // Rows inserted before the end, after lookups marked them: still found.
        for id in [1, 4, 7_000, 10_000 + 3_000 * 3_000 + 1] {
            node.write(&msg(id), 0);
            let at = node.position(MessageId(id));
            assert_eq!(node.rows[at].id().0, id);
        }
        for &id in ids.iter().step_by(89) {
            let at = node.position(MessageId(id));
            assert_eq!(node.rows[at].id().0, id, "after inserts");
        }
    }
}
