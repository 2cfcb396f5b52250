//! Where every simulated process sits on the network, and the placement functions
//! (sharding, partitioning, replica sets) that map keys to processes.

use crate::infra::{receipt_replicas, replicas};
use crate::msg::NodeIdx;
use crate::scenario::Scenario;
use strength_reduce::StrengthReducedU32;
use wasim_model::{fast_range, ConversationId, MessageId, ServerId, UserId};

/// The kinds of simulated process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    ChatServer,
    ClientShard,
    Redis,
    Presence,
    Cassandra,
    Kafka,
    Router,
    Fanout,
    /// The API tier that signs media upload URLs.
    Api,
    ObjectStore,
    Cdn,
}

impl NodeKind {
    /// All kinds, in network order.
    pub const ALL: [NodeKind; 11] = [
        NodeKind::ChatServer,
        NodeKind::ClientShard,
        NodeKind::Redis,
        NodeKind::Presence,
        NodeKind::Cassandra,
        NodeKind::Kafka,
        NodeKind::Router,
        NodeKind::Fanout,
        NodeKind::Api,
        NodeKind::ObjectStore,
        NodeKind::Cdn,
    ];

    /// What a tier's end-of-run gauge counts, in reports.
    pub fn gauge(self) -> &'static str {
        match self {
            NodeKind::ChatServer => "connections",
            NodeKind::ClientShard => "messages awaiting ticks",
            NodeKind::Redis => "session keys",
            NodeKind::Presence => "presence keys",
            NodeKind::Cassandra => "replica rows",
            NodeKind::Kafka => "consumer lag (records)",
            NodeKind::Router => "routes in flight",
            NodeKind::Fanout => "group messages in flight",
            NodeKind::Api => "upload URLs signed",
            NodeKind::ObjectStore => "objects stored",
            NodeKind::Cdn => "objects cached",
        }
    }

    /// The tier's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::ChatServer => "chat_server",
            NodeKind::ClientShard => "client_shard",
            NodeKind::Redis => "redis_session",
            NodeKind::Presence => "redis_presence",
            NodeKind::Cassandra => "cassandra",
            NodeKind::Kafka => "kafka",
            NodeKind::Router => "router",
            NodeKind::Fanout => "fanout",
            NodeKind::Api => "media_api",
            NodeKind::ObjectStore => "object_store",
            NodeKind::Cdn => "cdn",
        }
    }
}

/// Which link class a hop uses, for its latency distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Phone <-> chat server, over the internet.
    ClientServer = 0,
    /// Between servers in one datacenter.
    InDatacenter = 1,
}

/// The layout: processes of each kind occupy one contiguous range of node indices.
#[derive(Clone, Debug)]
pub struct Topology {
    /// First index and count of each kind, in `NodeKind::ALL` order.
    ranges: [(u16, u16); NodeKind::ALL.len()],
    /// The counts that place users, as divisors by multiplication (a placement is computed
    /// for nearly every message).
    client_shards: StrengthReducedU32,
    session_shards: StrengthReducedU32,
    presence_shards: StrengthReducedU32,
    pub replication_factor: u32,
    /// Partitions of the `messages` topic (`0..partitions`).
    pub partitions: u32,
    /// Partitions of the `group-messages` topic, numbered after those
    /// (`partitions..partitions + group_partitions`).
    pub group_partitions: u32,
}

impl Topology {
    /// The layout of a validated scenario.
    pub fn new(s: &Scenario) -> Topology {
        let f = &s.fleet;
        let counts = [
            f.chat_servers,
            f.client_shards,
            f.redis_session_shards,
            f.redis_presence_shards,
            f.cassandra_nodes,
            f.kafka_brokers,
            f.routers,
            s.fanout_processes(),
            s.media_processes(NodeKind::Api),
            s.media_processes(NodeKind::ObjectStore),
            s.media_processes(NodeKind::Cdn),
        ];
        let mut ranges = [(0u16, 0u16); NodeKind::ALL.len()];
        let mut next = 0u16;
        for (r, &c) in ranges.iter_mut().zip(&counts) {
            *r = (next, c as u16);
            next += c as u16;
        }
        Topology {
            ranges,
            client_shards: StrengthReducedU32::new(f.client_shards),
            session_shards: StrengthReducedU32::new(f.redis_session_shards),
            presence_shards: StrengthReducedU32::new(f.redis_presence_shards),
            replication_factor: f.cassandra_replication_factor,
            partitions: f.kafka_partitions,
            group_partitions: s.group_partitions(),
        }
    }

    /// Number of processes.
    pub fn node_count(&self) -> usize {
        let (first, count) = self.ranges[NodeKind::Cdn as usize];
        usize::from(first + count)
    }

    /// Processes of one kind.
    pub fn count(&self, kind: NodeKind) -> u32 {
        u32::from(self.ranges[kind as usize].1)
    }

    /// The `i`th process of a kind.
    pub fn node(&self, kind: NodeKind, i: u32) -> NodeIdx {
        let (first, count) = self.ranges[kind as usize];
        assert!(i < u32::from(count), "{kind:?} {i} out of range");
        NodeIdx(first + i as u16)
    }

    /// The kind and the index within its kind of a process.
    pub fn locate(&self, n: NodeIdx) -> (NodeKind, u32) {
        for kind in NodeKind::ALL {
            let (first, count) = self.ranges[kind as usize];
            if n.0 >= first && n.0 < first + count {
                return (kind, u32::from(n.0 - first));
            }
        }
        panic!("node {n:?} is not in the topology")
    }

    /// The first index and the count of the processes of a kind.
    pub fn range(&self, kind: NodeKind) -> (u16, u16) {
        self.ranges[kind as usize]
    }

    /// The link class between two processes.
    pub fn link(&self, a: NodeIdx, b: NodeIdx) -> Link {
        let clients = self.ranges[NodeKind::ClientShard as usize];
        let is_client = |n: NodeIdx| n.0 >= clients.0 && n.0 < clients.0 + clients.1;
        if is_client(a) || is_client(b) {
            Link::ClientServer
        } else {
            Link::InDatacenter
        }
    }

    /// The chat server process of a server id.
    pub fn chat(&self, s: ServerId) -> NodeIdx {
        self.node(NodeKind::ChatServer, u32::from(s.0))
    }

    /// The server id of a chat server process, if `n` is one.
    pub fn chat_server_of(&self, n: NodeIdx) -> Option<ServerId> {
        let (first, count) = self.ranges[NodeKind::ChatServer as usize];
        (n.0 >= first && n.0 - first < count).then(|| ServerId(n.0 - first))
    }

    /// The population shard that holds a user's devices.
    pub fn client_shard(&self, u: UserId) -> NodeIdx {
        self.node(NodeKind::ClientShard, u.0 % self.client_shards)
    }

    /// The session-store shard of a user. User ids are dense and carry no meaning, so
    /// `id % shards` spreads users as evenly as a hash slot would, and lets each shard keep
    /// its keys in a dense array (`id / shards`).
    pub fn redis(&self, u: UserId) -> NodeIdx {
        self.node(NodeKind::Redis, u.0 % self.session_shards)
    }

    /// The presence shard of a user (by id, like the session store).
    pub fn presence(&self, u: UserId) -> NodeIdx {
        self.node(NodeKind::Presence, self.presence_shard(u))
    }

    /// The index of a user's presence shard among the presence shards.
    pub fn presence_shard(&self, u: UserId) -> u32 {
        u.0 % self.presence_shards
    }

    /// The replicas of a conversation's partition.
    pub fn replicas(&self, c: ConversationId) -> impl Iterator<Item = NodeIdx> + '_ {
        replicas(c, self.count(NodeKind::Cassandra), self.replication_factor).map(|i| self.node(NodeKind::Cassandra, i))
    }

    /// The Cassandra nodes replicating group message `id`'s receipts rows.
    pub fn receipt_replicas(&self, id: MessageId) -> impl Iterator<Item = NodeIdx> + '_ {
        receipt_replicas(id, self.count(NodeKind::Cassandra), self.replication_factor)
            .map(|i| self.node(NodeKind::Cassandra, i))
    }

    /// The Kafka partition of a conversation (keyed by conversation: per-chat order): of
    /// the `messages` topic, or for a group of the `group-messages` topic.
    pub fn partition(&self, c: ConversationId) -> u32 {
        // A different mix than the Cassandra token, so the two placements are independent.
        let hash = c.hash64().rotate_left(17);
        match c.group_id() {
            Some(_) => self.partitions + fast_range(hash, self.group_partitions),
            None => fast_range(hash, self.partitions),
        }
    }

    /// Partitions of both topics: the brokers keep a log of each.
    pub fn all_partitions(&self) -> u32 {
        self.partitions + self.group_partitions
    }

    /// The API server that signs the upload URL of a media object (any would do: by key,
    /// to spread them).
    pub fn api(&self, key: wasim_model::MediaKey) -> NodeIdx {
        self.node(NodeKind::Api, fast_range(key.0.wrapping_mul(0x9E37_79B9_7F4A_7C15), self.count(NodeKind::Api)))
    }

    /// The object-store node that holds a media object (by a hash of its key).
    pub fn object_store(&self, key: wasim_model::MediaKey) -> NodeIdx {
        let hash = key.0.wrapping_mul(0xD6E8_FEB8_6659_FD93).rotate_left(29);
        self.node(NodeKind::ObjectStore, fast_range(hash, self.count(NodeKind::ObjectStore)))
    }

    /// The CDN edge a user's devices download from (the one nearest them: by user).
    pub fn cdn_edge(&self, u: UserId) -> NodeIdx {
        self.node(NodeKind::Cdn, u.0 % self.count(NodeKind::Cdn))
    }

    /// The fan-out instance consuming a partition of the group-messages topic.
    pub fn fanout_of(&self, partition: u32) -> NodeIdx {
        debug_assert!(partition >= self.partitions, "partition {partition} is not of the group topic");
        self.node(NodeKind::Fanout, (partition - self.partitions) % self.count(NodeKind::Fanout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_contiguous_and_locate_inverts_node() {
        let s = Scenario::parse("", std::path::Path::new("x"), "x").unwrap();
        let t = Topology::new(&s);
        assert_eq!(t.node_count(), 2 + 1 + 1 + 1 + 3 + 1 + 1);
        for kind in NodeKind::ALL {
            for i in 0..t.count(kind) {
                assert_eq!(t.locate(t.node(kind, i)), (kind, i));
            }
        }
        let client = t.node(NodeKind::ClientShard, 0);
        assert_eq!(t.link(client, t.node(NodeKind::ChatServer, 1)), Link::ClientServer);
        assert_eq!(t.link(t.node(NodeKind::Router, 0), t.node(NodeKind::Redis, 0)), Link::InDatacenter);
    }
}
