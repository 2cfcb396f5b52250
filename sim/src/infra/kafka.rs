//! A Kafka broker: the partitions of the `messages` topic it leads, each an append-only
//! log with the routers' committed offset and a push cursor.
//!
//! Delivery is at-least-once: records are pushed to the partition's consumer from the
//! cursor and the consumer commits only once it has routed them; records are trimmed only
//! after their commit, so a consumer that restarts can be fed again from the commit.

use std::collections::VecDeque;
use wasim_model::ChatMessage;

/// Records a partition may have pushed but not committed. A slow router stops receiving
/// instead of buffering without bound; it matches the router's commit window.
pub const ROUTER_IN_FLIGHT_MAX: u64 = wasim_model::ROUTER_IN_FLIGHT_PER_PARTITION_MAX;

/// One partition's log: replicated to every broker (acks = all), so it outlives its
/// leader; whichever broker leads the partition appends to it and pushes from it.
#[derive(Debug, Default)]
pub struct PartitionLog {
    /// Offset of `records[0]`: everything below is committed and trimmed.
    base: u64,
    records: VecDeque<ChatMessage>,
    committed: u64,
    /// Next offset to push to the consumer.
    cursor: u64,
}

impl PartitionLog {
    fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    /// Append a record; returns its offset.
    pub fn append(&mut self, msg: ChatMessage) -> u64 {
        self.records.push_back(msg);
        self.end() - 1
    }

    /// Records to push to the consumer now, within the in-flight limit; advances the cursor.
    pub fn take_pushes(&mut self, out: &mut Vec<(u64, ChatMessage)>) {
        let limit = self.committed + ROUTER_IN_FLIGHT_MAX;
        while self.cursor < self.end().min(limit) {
            out.push((self.cursor, self.records[(self.cursor - self.base) as usize]));
            self.cursor += 1;
        }
    }

    /// A new leader does not know what the old one pushed (its pushes on the way died with
    /// it): it pushes again from the consumer's commit. The consumer drops what it had.
    /// Returns how many records it will push again.
    pub fn rewind_to_commit(&mut self) -> u64 {
        let again = self.cursor - self.committed;
        self.cursor = self.committed;
        again
    }

    /// The consumer's committed offset: where a consumer given the partition starts.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The consumer committed `offset`: everything below is done and can be trimmed
    /// (retention here is "until consumed", which bounds memory).
    pub fn commit(&mut self, offset: u64) {
        let offset = offset.min(self.end());
        if offset <= self.committed {
            return;
        }
        self.committed = offset;
        self.cursor = self.cursor.max(offset);
        while self.base < offset {
            self.records.pop_front();
            self.base += 1;
        }
    }

    /// The messages of the records not yet committed, which a consumer given the
    /// partition is fed again from the commit.
    pub fn uncommitted(&self) -> impl Iterator<Item = &ChatMessage> + '_ {
        self.records.iter()
    }

    /// Records appended but not yet committed (consumer lag).
    pub fn lag(&self) -> u64 {
        self.end() - self.committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasim_model::{ConversationId, MessageId, Time, UserId};

    fn m(i: u64) -> ChatMessage {
        ChatMessage {
            id: MessageId(i),
            conversation: ConversationId(0),
            from: UserId(0),
            to: UserId(1),
            client_seq: 0,
            sent_at: Time::ZERO,
        }
    }

    #[test]
    fn append_push_commit_trim() {
        let mut b = PartitionLog::default();
        assert_eq!(b.append(m(10)), 0);
        assert_eq!(b.append(m(11)), 1);
        let mut out = Vec::new();
        b.take_pushes(&mut out);
        assert_eq!(out.iter().map(|(o, r)| (*o, r.id.0)).collect::<Vec<_>>(), vec![(0, 10), (1, 11)]);
        out.clear();
        b.take_pushes(&mut out);
        assert!(out.is_empty(), "each record is pushed once");
        assert_eq!(b.lag(), 2);
        b.commit(1);
        assert_eq!(b.lag(), 1);
        b.commit(0);
        assert_eq!(b.lag(), 1, "commits never go back");
    }

    #[test]
    fn a_new_leader_pushes_again_from_the_commit() {
        let mut b = PartitionLog::default();
        for i in 0..3 {
            b.append(m(i));
        }
        let mut out = Vec::new();
        b.take_pushes(&mut out);
        b.commit(1);
        b.rewind_to_commit();
        out.clear();
        b.take_pushes(&mut out);
        assert_eq!(out.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![1, 2]);
    }
}
