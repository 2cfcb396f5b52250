//! One Cassandra node: the `messages` rows of the token ranges it replicates.

use wasim_model::{ChatMessage, ConversationId, MessageId, UserId};

/// A stored row of `messages` (conversation_id, message_id DESC): the fields routing and
/// durability checks need; the encrypted body is not modelled. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredRow {
    pub conversation: ConversationId,
    pub id: MessageId,
    pub sender: UserId,
}

/// The replicas of a conversation's partition: the node owning its token and the next
/// `rf - 1` nodes on the ring (SimpleStrategy).
pub fn replicas(conversation: ConversationId, nodes: u32, rf: u32) -> impl Iterator<Item = u32> {
    let first = (conversation.hash64() % u64::from(nodes)) as u32;
    (0..rf).map(move |i| (first + i) % nodes)
}

/// The rows one node holds. Data survives a node restart (it is on disk in the real
/// system), so callers keep this outside the node's volatile state.
#[derive(Debug, Default)]
pub struct CassandraNode {
    rows: Vec<StoredRow>,
}

impl CassandraNode {
    /// Apply a write (an upsert: a retried write adds no second row in a real table; here
    /// rows are appended and deduplicated when counted).
    pub fn write(&mut self, msg: &ChatMessage) {
        self.rows.push(StoredRow { conversation: msg.conversation, id: msg.id, sender: msg.from });
    }

    /// Rows written.
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
