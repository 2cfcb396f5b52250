//! Sizing from a run: for each tier, the nodes the card's full load needs at a target
//! utilisation, from what the run measured (the work an operation cost, the connections,
//! keys, rows and records per user or message) and the card's load (its users and
//! messages, the visit table's operations for them). Each figure carries its formula with
//! the numbers put in.

use crate::run::Outcome;
use crate::scenario::Scenario;
use crate::topology::NodeKind;
use crate::visits::predicted_load;
use serde::Serialize;
use wasim_model::estimate::{si, si_bytes, EstimateInputs, DAY_S};

/// What a node holds, beyond the card's numbers (which name no Redis memory or broker
/// network): stated in every formula that uses them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct NodeCapacity {
    /// Memory of a Redis node for keys, bytes.
    pub redis_memory_bytes: f64,
    /// A Kafka broker's network, bytes/s (10 Gbit/s).
    pub kafka_network_bytes_per_s: f64,
    /// A CDN edge's egress, bytes/s (100 Gbit/s).
    pub cdn_edge_bytes_per_s: f64,
}

impl Default for NodeCapacity {
    fn default() -> Self {
        NodeCapacity { redis_memory_bytes: 64e9, kafka_network_bytes_per_s: 1.25e9, cdn_edge_bytes_per_s: 12.5e9 }
    }
}

/// The nodes each tier needs for the card's full load.
#[derive(Clone, Debug, Serialize)]
pub struct Sizing {
    pub target_utilisation: f64,
    /// The load sized for: the card's concurrent users, 1:1 messages a second, and group
    /// messages a second (active groups x their rate).
    pub card_users: f64,
    pub card_messages_per_s: f64,
    pub card_group_messages_per_s: f64,
    pub capacity: NodeCapacity,
    pub rows: Vec<SizingRow>,
    /// What the figures leave out, or assume.
    pub notes: Vec<String>,
}

/// One tier sized by one resource.
#[derive(Clone, Debug, Serialize)]
pub struct SizingRow {
    pub tier: &'static str,
    /// cpu, connections, memory, storage or network.
    pub by: &'static str,
    /// Nodes in this run, and their measured mean utilisation (CPU rows).
    pub nodes_run: u32,
    pub utilisation_run: Option<f64>,
    /// The card's demand on the resource, in `unit`, and what one node gives of it at the
    /// target.
    pub demand: f64,
    pub unit: &'static str,
    pub per_node: f64,
    /// Nodes needed: in one place, and spread over three zones of which any two carry the
    /// full load (each zone holds half of it).
    pub nodes: u64,
    pub nodes_three_zones: u64,
    pub formula: String,
}

/// Nodes over three zones when any two must carry the full load: half the load in each.
pub fn three_zones(nodes: u64) -> u64 {
    3 * nodes.div_ceil(2)
}

/// `ceil(demand / per_node)`, at least one node.
fn nodes_for(demand: f64, per_node: f64) -> u64 {
    if per_node <= 0.0 || !demand.is_finite() {
        return 0;
    }
    ((demand / per_node) - 1e-9).ceil().max(1.0) as u64
}

/// The run's scenario at the card's load: its users, messages and groups, no faults, and a
/// fleet with room for every device (what the visit table predicts the operations from).
fn at_card_load(s: &Scenario, card: &EstimateInputs) -> Scenario {
    let mut c = s.clone();
    c.faults.clear();
    let online_share = s.users.concurrent as f64 / s.registered_users() as f64;
    c.users.concurrent = card.concurrent as u64;
    c.users.registered = (card.concurrent / online_share) as u64;
    c.workload.messages_per_s = (card.messages_per_day / DAY_S).round() as u64;
    let devices = card.concurrent * (1.0 + s.users.devices_per_user.web);
    c.fleet.chat_servers = (devices / f64::from(s.fleet.connections_per_server_max)).ceil() as u32;
    c.groups.active = card.groups_active.round() as u32;
    c.groups.members = crate::scenario::DistConfig::Constant { value: card.group_members };
    c.groups.messages_per_group_per_s = card.group_messages_per_s;
    c
}

/// Size every tier for the card's load at utilisation `target`, from `o`.
pub fn sizing(o: &Outcome, target: f64, capacity: NodeCapacity) -> Sizing {
    let s = &o.scenario;
    let card = EstimateInputs::card();
    let card_msgs = card.messages_per_day / DAY_S;
    let card_group_msgs = card.groups_active * card.group_messages_per_s;
    let window_s = s.duration_s as f64;
    // A group message's receipts grow with the members it reaches: the card's 1,024
    // against the run's mean.
    let run_members = if s.groups.active > 0 { s.groups.members.mean() } else { 0.0 };
    let members_scale = if run_members > 0.0 { card.group_members / run_members } else { 0.0 };
    let predicted = predicted_load(&at_card_load(s, &card));
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let row = |tier: NodeKind, by, util: Option<f64>, demand: f64, unit, per_node: f64, formula: String| {
        let nodes = nodes_for(demand, per_node);
        let nodes_run = o.tiers.iter().find(|t| t.kind == tier).map_or(0, |t| t.nodes);
        SizingRow {
            tier: tier.name(),
            by,
            nodes_run,
            utilisation_run: util,
            demand,
            unit,
            per_node,
            nodes,
            nodes_three_zones: three_zones(nodes),
            formula: format!("{formula} = {nodes}"),
        }
    };
    for t in &o.tiers {
        let ops_run = t.served as f64 / window_s;
        let busy = t.utilisation * f64::from(t.nodes * t.workers_per_node);
        if ops_run <= 0.0 || t.workers_per_node == 0 {
            continue;
        }
        // The card's operations, 1:1 and group, from the visit table; an operation costs
        // what the run's did on average.
        let card_ops = predicted.iter().find(|p| p.tier == t.kind.name()).map_or(0.0, |p| p.ops_per_s);
        let cost_us = busy / ops_run * 1e6;
        let per_node = f64::from(t.workers_per_node) * target * 1e6 / cost_us;
        rows.push(row(
            t.kind,
            "cpu",
            Some(t.utilisation),
            card_ops,
            "ops/s",
            per_node,
            format!(
                "ceil({} ops/s (card, visit table: 1:1 and groups) × {:.1} µs an op (measured) ÷ ({} worker{} × {target}))",
                si(card_ops),
                cost_us,
                t.workers_per_node,
                if t.workers_per_node == 1 { "" } else { "s" }
            ),
        ));
        match t.kind {
            NodeKind::ChatServer => {
                let per_user = t.gauge_end as f64 / s.users.concurrent as f64;
                let cap = f64::from(s.fleet.connections_per_server_max);
                rows.push(row(
                    t.kind,
                    "connections",
                    None,
                    card.concurrent * per_user,
                    "connections",
                    cap,
                    format!(
                        "ceil({} users × {per_user:.3} connections a user (measured at the end) ÷ {} a server (the cap))",
                        si(card.concurrent),
                        si(cap)
                    ),
                ));
            }
            NodeKind::Redis | NodeKind::Presence => {
                let per_user = t.gauge_end as f64 / s.users.concurrent as f64;
                let bytes = card.concurrent * per_user * card.session_bytes;
                rows.push(row(
                    t.kind,
                    "memory",
                    None,
                    bytes,
                    "bytes",
                    capacity.redis_memory_bytes * target,
                    format!(
                        "ceil({} users × {per_user:.3} keys a user (measured at the end) × {} a key (card) ÷ ({} a node × {target}))",
                        si(card.concurrent),
                        si_bytes(card.session_bytes),
                        si_bytes(capacity.redis_memory_bytes)
                    ),
                ));
            }
            NodeKind::Cassandra => {
                // Message rows on all replicas per message sent, and the group receipts
                // table per group message, as the run stored them.
                let sends = o.counters.sends.max(1) as f64;
                let replicas = t.gauge_end as f64 / sends;
                let receipts_per_group_msg =
                    o.receipt_table_bytes as f64 / o.counters.group_sends.max(1) as f64 * members_scale;
                let per_day = DAY_S
                    * ((card_msgs + card_group_msgs) * replicas * card.message_bytes
                        + card_group_msgs * receipts_per_group_msg);
                let retained = per_day * 365.0 * card.years;
                rows.push(row(
                    t.kind,
                    "storage",
                    None,
                    retained,
                    "bytes",
                    card.node_bytes * target,
                    format!(
                        "{} a day = 86,400 s × (({} + {}) msg/s × {replicas:.2} rows a message (measured) × {} + {} group msg/s × {} of receipts a group message (measured, × {members_scale:.3} for {} members)); ceil({} a day × 365 × {} years ÷ ({} a node × {target}))",
                        si_bytes(per_day),
                        si(card_msgs),
                        si(card_group_msgs),
                        si_bytes(card.message_bytes),
                        si(card_group_msgs),
                        si_bytes(receipts_per_group_msg),
                        card.group_members,
                        si_bytes(per_day),
                        card.years,
                        si_bytes(card.node_bytes)
                    ),
                ));
            }
            NodeKind::Kafka => {
                let per_msg = o.counters.records_appended as f64 / o.counters.sends.max(1) as f64;
                let bytes = (card_msgs + card_group_msgs) * per_msg * card.kafka_record_bytes * card.kafka_replication;
                rows.push(row(
                    t.kind,
                    "network",
                    None,
                    bytes,
                    "bytes/s",
                    capacity.kafka_network_bytes_per_s * target,
                    format!(
                        "ceil(({} + {}) msg/s × {per_msg:.2} records a message (measured) × {} × {} replicas ÷ ({}/s a broker × {target}))",
                        si(card_msgs),
                        si(card_group_msgs),
                        si_bytes(card.kafka_record_bytes),
                        card.kafka_replication,
                        si_bytes(capacity.kafka_network_bytes_per_s)
                    ),
                ));
            }
            NodeKind::ObjectStore => {
                // The card's media uploads: its messages at the run's media share, each as
                // large as the run's were on average; ingest bandwidth per node as the run's.
                let c = &o.counters;
                let mean = c.media_bytes_ingested as f64 / c.media_uploads_stored.max(1) as f64;
                let ingest = (card_msgs + card_group_msgs) * s.media.share * mean;
                let per_node = s.media.ingest_gbps * 1e9 / 8.0 / f64::from(s.media.object_store_nodes);
                rows.push(row(
                    t.kind,
                    "network",
                    None,
                    ingest,
                    "bytes/s",
                    per_node * target,
                    format!(
                        "ceil(({} + {}) msg/s × {} media (the run's share) × {} an upload (measured) ÷ ({}/s of ingest a node × {target}))",
                        si(card_msgs),
                        si(card_group_msgs),
                        s.media.share,
                        si_bytes(mean),
                        si_bytes(per_node)
                    ),
                ));
                // Stored once an object (a retried PUT's bytes pass the ingest again only).
                let stored_mean = c.media_bytes_stored as f64 / c.media_uploads_stored.max(1) as f64;
                let stored = (card_msgs + card_group_msgs) * s.media.share * stored_mean;
                let retained = stored * DAY_S * 365.0 * card.years;
                rows.push(row(
                    t.kind,
                    "storage",
                    None,
                    retained,
                    "bytes",
                    card.node_bytes * target,
                    format!(
                        "{}/day = {}/s stored (an object's bytes once, measured {} an object) × 86,400 s; ceil({}/day × 365 × {} years ÷ ({} a node × {target}))",
                        si_bytes(stored * DAY_S),
                        si_bytes(stored),
                        si_bytes(stored_mean),
                        si_bytes(stored * DAY_S),
                        card.years,
                        si_bytes(card.node_bytes)
                    ),
                ));
            }
            NodeKind::Cdn => {
                let c = &o.counters;
                let per_media = c.media_bytes_downloaded as f64 / c.media_sends.max(1) as f64;
                let egress = (card_msgs + card_group_msgs) * s.media.share * per_media;
                rows.push(row(
                    t.kind,
                    "network",
                    None,
                    egress,
                    "bytes/s",
                    capacity.cdn_edge_bytes_per_s * target,
                    format!(
                        "ceil(({} + {}) msg/s × {} media × {} downloaded a media message (measured: its recipients' devices) ÷ ({}/s an edge × {target}))",
                        si(card_msgs),
                        si(card_group_msgs),
                        s.media.share,
                        si_bytes(per_media),
                        si_bytes(capacity.cdn_edge_bytes_per_s)
                    ),
                ));
            }
            _ => {}
        }
    }
    if s.media.on() {
        notes.push(format!(
            "media rows: the card names no media volume; they take this run's media share ({}) of the card's messages, with the sizes and downloads this run measured; the object store's ingest a node is the scenario's, a CDN edge's egress {}/s (assumed)",
            s.media.share,
            si_bytes(capacity.cdn_edge_bytes_per_s)
        ));
    }
    notes.push(format!(
        "CPU rows: the card's operations a second from the visit table for {} users, {} msg/s and {} groups of {} members at {} msg/s each, on this scenario's behaviour (heartbeat, app closes, devices), times what an operation cost in this run on average (busy time ÷ operations){}",
        si(card.concurrent),
        si(card_msgs),
        si(card.groups_active),
        card.group_members,
        card.group_messages_per_s,
        if s.groups.active > 0 { "" } else { "; this run carried no group messages, so their operations are costed at the 1:1 operations' average" }
    ));
    notes.push(
        "three zones: any two must carry the full load, so each zone holds half of it: 3 × ceil(nodes ÷ 2)".into(),
    );
    Sizing {
        target_utilisation: target,
        card_users: card.concurrent,
        card_messages_per_s: card_msgs,
        card_group_messages_per_s: card_group_msgs,
        capacity,
        rows,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_zones_hold_half_the_load_each() {
        assert_eq!(three_zones(1), 3);
        assert_eq!(three_zones(10), 15);
        assert_eq!(three_zones(11), 18);
        assert_eq!(three_zones(1_000), 1_500);
    }

    #[test]
    fn nodes_round_up_and_never_fall_below_one() {
        assert_eq!(nodes_for(1_000.0, 100.0), 10);
        assert_eq!(nodes_for(1_001.0, 100.0), 11);
        assert_eq!(nodes_for(1.0, 100.0), 1);
        assert_eq!(nodes_for(1.0, 0.0), 0);
    }
}
