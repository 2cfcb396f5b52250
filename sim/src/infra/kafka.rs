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

#[derive(Debug, Default)]
struct PartitionLog {
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
}

/// The partitions one broker leads.
#[derive(Debug, Default)]
pub struct Broker {
    /// Indexed by partition number; `None` for partitions led elsewhere.
    partitions: Vec<Option<PartitionLog>>,
}

impl Broker {
    /// A broker leading `led` of a topic with `partition_count` partitions.
    pub fn new(partition_count: u32, led: impl IntoIterator<Item = u32>) -> Broker {
        let mut partitions: Vec<Option<PartitionLog>> = (0..partition_count).map(|_| None).collect();
        for p in led {
            partitions[p as usize] = Some(PartitionLog::default());
        }
        Broker { partitions }
    }

    fn log(&mut self, partition: u32) -> &mut PartitionLog {
        self.partitions[partition as usize].as_mut().expect("partition led by this broker")
    }

    /// Append a record; returns its offset.
    pub fn append(&mut self, partition: u32, msg: ChatMessage) -> u64 {
        let log = self.log(partition);
        log.records.push_back(msg);
        log.end() - 1
    }

    /// Records to push to the consumer now, within the in-flight limit; advances the cursor.
    pub fn take_pushes(&mut self, partition: u32, out: &mut Vec<(u64, ChatMessage)>) {
        let log = self.log(partition);
        let limit = log.committed + ROUTER_IN_FLIGHT_MAX;
        while log.cursor < log.end().min(limit) {
            out.push((log.cursor, log.records[(log.cursor - log.base) as usize]));
            log.cursor += 1;
        }
    }

    /// The consumer committed `offset`: everything below is done and can be trimmed
    /// (retention here is "until consumed", which bounds memory).
    pub fn commit(&mut self, partition: u32, offset: u64) {
        let log = self.log(partition);
        let offset = offset.min(log.end());
        if offset <= log.committed {
            return;
        }
        log.committed = offset;
        while log.base < offset {
            log.records.pop_front();
            log.base += 1;
        }
    }

    /// Records appended but not yet committed, over all led partitions (consumer lag).
    pub fn lag(&self) -> u64 {
        self.partitions.iter().flatten().map(|l| l.end() - l.committed).sum()
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
        let mut b = Broker::new(2, [1]);
        assert_eq!(b.append(1, m(10)), 0);
        assert_eq!(b.append(1, m(11)), 1);
        let mut out = Vec::new();
        b.take_pushes(1, &mut out);
        assert_eq!(out.iter().map(|(o, r)| (*o, r.id.0)).collect::<Vec<_>>(), vec![(0, 10), (1, 11)]);
        out.clear();
        b.take_pushes(1, &mut out);
        assert!(out.is_empty(), "each record is pushed once");
        assert_eq!(b.lag(), 2);
        b.commit(1, 1);
        assert_eq!(b.lag(), 1);
        b.commit(1, 0);
        assert_eq!(b.lag(), 1, "commits never go back");
    }

    #[test]
    #[should_panic(expected = "led by this broker")]
    fn appending_to_a_partition_led_elsewhere_is_a_bug() {
        Broker::new(2, [0]).append(1, m(0));
    }
}
