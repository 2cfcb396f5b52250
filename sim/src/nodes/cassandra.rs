//! Serve loop of a Cassandra node. Its rows are on disk: they outlive the process (in
//! `Shared::ranges`, with the replicas of each row that hold it). A node that comes back
//! after a crash has missed the writes made while it was down: it repairs them from its
//! peers as it rejoins.

use crate::dist::Sampler;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, Process, Shared};
use wasim_model::Time;

pub(crate) struct CassandraProcess {
    shared: std::sync::Arc<Shared>,
    index: usize,
    fifo: Fifo,
    service: Sampler,
    /// Reading a page of a group's membership.
    page_service: Sampler,
    /// The draws of the writes that make no reply (see `Stream::SilentWrites`).
    silent_rng: rand_chacha::ChaCha8Rng,
    repaired: u64,
}

impl CassandraProcess {
    pub fn new(shared: &std::sync::Arc<Shared>, index: u32) -> CassandraProcess {
        let s = &shared.scenario;
        let (fifo, service) = super::queue(
            shared,
            crate::topology::NodeKind::Cassandra,
            s.workers.cassandra,
            &s.service_us.cassandra_write,
        );
        let repaired = shared.repaired[index as usize].load(std::sync::atomic::Ordering::Relaxed);
        let page_service = Sampler::new(&s.service_us.membership_page, 1.0);
        let me = shared.topo.node(crate::topology::NodeKind::Cassandra, index);
        let silent_rng = crate::node::stream_rng(shared.seed, me, crate::node::Stream::SilentWrites);
        CassandraProcess {
            shared: shared.clone(),
            index: index as usize,
            fifo,
            service,
            page_service,
            silent_rng,
            repaired,
        }
    }
}

/// A node rejoining after a crash repairs from its peers the rows of its ranges written
/// since a little before it went down (what was on its way to it then was lost too), as
/// `nodetool repair` would. Done by the supervisor between ticks, when every peer has
/// applied exactly the writes of the ticks before: what is copied does not depend on the
/// order processes run in. Returns the rows copied.
pub(crate) fn repair(shared: &Shared, index: u32) -> u64 {
    let me = shared.topo.node(crate::topology::NodeKind::Cassandra, index);
    let now = Time(shared.clock.now() * shared.tick_us);
    let Some(crash) = shared.faults.crashes().iter().rfind(|c| c.node == me && c.down <= now) else { return 0 };
    let since = crash.down.as_ms().saturating_sub(REPAIR_MARGIN_MS);
    replicated_ranges(shared, index).map(|(mut range, replica)| range.repair(since, replica)).sum()
}

/// The ranges node `index` replicates, each with which of its replicas the node is: it is
/// replica `i` of the range owned by the node `i` places before it on the ring.
fn replicated_ranges(
    shared: &Shared,
    index: u32,
) -> impl Iterator<Item = (std::sync::MutexGuard<'_, crate::infra::RangeRows>, u32)> {
    let (nodes, rf) = (shared.scenario.fleet.cassandra_nodes, shared.scenario.fleet.cassandra_replication_factor);
    (0..rf.min(nodes)).map(move |i| {
        let first = (index + nodes - i) % nodes;
        (shared.ranges[first as usize].lock().expect("range lock"), i)
    })
}

/// How far before its crash a rejoining node repairs from: writes on their way to it when
/// it died were lost with it.
const REPAIR_MARGIN_MS: u64 = 5_000;

/// A primary range's rows, made for the rows it is expected to hold: no doubling (and a
/// 3x peak) as they grow.
pub(crate) fn range(s: &crate::scenario::Scenario) -> crate::infra::RangeRows {
    let group_messages_per_s = f64::from(s.groups.active) * s.groups.messages_per_group_per_s;
    let rows = (s.workload.messages_per_s + group_messages_per_s as u64) * (s.warmup_s + s.duration_s)
        / u64::from(s.fleet.cassandra_nodes);
    crate::infra::RangeRows::with_capacity(
        rows as usize * 21 / 20,
        s.checked_one_in(),
        crate::population::Population::new(s),
    )
}

impl CassandraProcess {
    /// The range holding `conversation`'s rows, and which of its replicas this node is.
    fn range_of(
        &self,
        conversation: wasim_model::ConversationId,
    ) -> (std::sync::MutexGuard<'_, crate::infra::RangeRows>, u32) {
        let nodes = self.shared.scenario.fleet.cassandra_nodes;
        let first = crate::infra::first_replica(conversation, nodes);
        let replica = (self.index as u32 + nodes - first) % nodes;
        debug_assert!(replica < self.shared.scenario.fleet.cassandra_replication_factor, "a replica of the range");
        (self.shared.ranges[first as usize].lock().expect("range lock"), replica)
    }
}

impl Process for CassandraProcess {
    fn prefetch(&self, env: &Envelope) {
        if let Msg::ReceiptRow { receipt, position } = env.msg {
            // The disk is this process's alone while it runs: the lock is never contended.
            if let Ok(disk) = self.shared.disks[self.index].try_lock() {
                disk.prefetch_group_receipt(receipt.msg.id, u32::from(position));
            }
        }
    }

    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        let service = match env.msg {
            Msg::ReadMembers { .. } => self.page_service.sample_us(&mut ctx.rng),
            Msg::StatusWrite { .. } | Msg::ReceiptRow { .. } => self.service.sample_us(&mut self.silent_rng),
            _ => self.service.sample_us(&mut ctx.rng),
        };
        let done = self.fifo.serve(env.at, service);
        match env.msg {
            Msg::ReadMembers { req, group, page } => {
                ctx.send(env.from, done, Msg::MembersRead { req, group, page });
            }
            Msg::ReceiptRow { receipt, position } => {
                let (groups, msg) = (&self.shared.groups, receipt.msg);
                let group = msg.conversation.group_id().expect("a group message's receipt");
                // The row set is made by the message's first row written here.
                let table = || (groups.size(group), groups.position(group, msg.from));
                let mut disk = self.shared.disks[self.index].lock().expect("disk lock");
                let completed = disk.write_group_receipt(msg.id, table, u32::from(position), receipt.state);
                drop(disk);
                ctx.counters.receipt_rows_written += 1;
                // The writer waits for no acknowledgement of a receipt row (a replica down
                // misses it; the others have it, and each can complete the aggregate); a
                // replica answers only the write that completed the aggregate there, with
                // the aggregate's receipt for the sender (the message as the sender sent it).
                if let Some(state) = completed {
                    ctx.counters.group_aggregates_completed += 1;
                    let msg = wasim_model::ChatMessage { to: wasim_model::UserId::GROUP, ..msg };
                    let aggregate = wasim_model::Receipt { msg, state, ..receipt };
                    ctx.send(env.from, done, Msg::GroupAggregate { receipt: aggregate });
                }
            }
            Msg::ReadHistory { conversation, before, limit } => {
                let rows = self.range_of(conversation).0.history(conversation, before, limit);
                ctx.send(env.from, done, Msg::HistoryPage { rows });
            }
            Msg::StatusWrite { id, conversation, state } => {
                let (mut range, replica) = self.range_of(conversation);
                let applied = range.set_status(id, state, replica);
                drop(range);
                ctx.counters.status_writes += 1;
                ctx.counters.status_writes_before_row += u64::from(!applied);
            }
            Msg::Write { req, msg } => {
                let (mut range, replica) = self.range_of(msg.conversation);
                range.write(&msg, replica);
                drop(range);
                if crate::check::quorum_sampled(&msg, &ctx.logs) {
                    self.shared.disks[self.index].lock().expect("disk lock").log_sampled_write(msg.id, done);
                }
                ctx.counters.rows_written += 1;
                ctx.send(env.from, done, Msg::WriteAck { req });
            }
            Msg::Read { req, id, conversation } => {
                let (mut range, replica) = self.range_of(conversation);
                let held = range.read(id, replica);
                drop(range);
                ctx.send(env.from, done, Msg::ReadReply { req, held });
            }
            other => unreachable!("cassandra got {other:?}"),
        }
    }

    fn on_tick(&mut self, _now: Time, _ctx: &mut Ctx) {}

    fn queue(&self) -> Option<&Fifo> {
        Some(&self.fifo)
    }

    fn finish(&mut self, report: &mut NodeReport) {
        // The rows themselves are read off the disks at the end (a node dead then keeps them).
        self.fifo.report_into(report);
        report.gauge_end = replicated_ranges(&self.shared, self.index as u32)
            .map(|(range, replica)| range.held_by(replica) as u64)
            .sum();
        report.counters.rows_repaired += self.repaired;
    }
}
