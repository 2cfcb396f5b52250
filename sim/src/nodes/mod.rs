//! The serve loops: each decodes network messages, calls its model, and puts the model's
//! effects on the network. No system logic lives here.

mod api;
pub(crate) mod cassandra;
mod cdn;
mod chat;
mod client;
mod fanout;
mod kafka;
mod object_store;
pub(crate) use object_store::STORE_WORKERS;
mod presence;
mod probe;
mod redis;
pub(crate) mod router;

use crate::msg::NodeIdx;
use crate::node::{run_process, Shared};
use crate::topology::NodeKind;
use std::sync::Arc;

/// Route-or-inbox again in the recipient's session shard, treating `exclude` as gone while
/// it holds (a chat server's and a router's way of handing a message back), in order with
/// the user's other session commands.
fn send_reroute(
    ctx: &mut crate::node::Ctx,
    topo: &crate::topology::Topology,
    t: wasim_model::Time,
    msg: wasim_model::ChatMessage,
    exclude: wasim_model::Exclusion,
    slot: wasim_model::DeviceSlot,
) {
    let reroute = crate::msg::Msg::Reroute { msg, exclude, slot };
    ctx.send_ordered(topo.redis(msg.to), t, reroute, crate::node::OrderKey::Session(msg.to));
}

/// Start process `me`: build its state from the scenario and hand it to the supervisor,
/// which runs its ticks.
pub(crate) async fn start(shared: Arc<Shared>, me: NodeIdx) {
    let (kind, i) = shared.topo.locate(me);
    let s = shared.clone();
    match kind {
        NodeKind::ChatServer => run_process(s, me, |_| chat::ChatNode::new(&shared, i)).await,
        NodeKind::ClientShard => match shared.probe {
            Some(plan) => run_process(s, me, |ctx| probe::ProbeNode::new(&shared, plan, ctx)).await,
            None => run_process(s, me, |ctx| client::ClientShard::new(&shared, i, ctx)).await,
        },
        NodeKind::Redis => run_process(s, me, |_| redis::RedisNode::new(&shared, i)).await,
        NodeKind::Presence => run_process(s, me, |_| presence::PresenceNode::new(&shared, me)).await,
        NodeKind::Cassandra => run_process(s, me, |_| cassandra::CassandraProcess::new(&shared, i)).await,
        NodeKind::Kafka => run_process(s, me, |_| kafka::KafkaNode::new(&shared, me)).await,
        NodeKind::Router => run_process(s, me, |_| router::RouterNode::new(&shared, me)).await,
        NodeKind::Fanout => run_process(s, me, |_| fanout::FanoutNode::new(&shared, me)).await,
        NodeKind::Api => run_process(s, me, |_| api::ApiNode::new(&shared)).await,
        NodeKind::ObjectStore => run_process(s, me, |_| object_store::ObjectStoreNode::new(&shared)).await,
        NodeKind::Cdn => run_process(s, me, |_| cdn::CdnNode::new(&shared, i)).await,
    }
}

/// A queue of `workers` with the scenario's service time, accounting the measuring window.
/// The queue of the tier a calibration probes records its sojourns, unless the probe times
/// the replies itself.
pub(crate) fn queue(
    shared: &Shared,
    kind: NodeKind,
    workers: u32,
    service: &crate::scenario::DistConfig,
) -> (crate::infra::Fifo, crate::dist::Sampler) {
    let mut fifo = crate::infra::Fifo::new(workers, (shared.measure_from(), shared.measure_until()));
    if shared.probe.is_some_and(|p| p.tier == kind && !p.seen_by_requester) {
        fifo.record_sojourns();
    }
    (fifo, crate::dist::Sampler::new(service, 1.0))
}
