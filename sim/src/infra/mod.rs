//! Synchronous models of the infrastructure tiers: Redis, Cassandra, Kafka, and the FIFO
//! service queue they share. Each is a plain struct testable without a runtime; the node
//! serve loops in `nodes/` only decode a message and call it.

mod cassandra;
mod fifo;
mod kafka;
mod redis;

pub use cassandra::{first_replica, receipt_replicas, replicas, CassandraNode, RangeRows};
pub use fifo::Fifo;
pub use kafka::PartitionLog;
pub use redis::RedisShard;
