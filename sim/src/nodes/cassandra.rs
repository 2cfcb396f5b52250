//! Serve loop of a Cassandra node. Its rows are on disk: they outlive the process (in
//! `Shared::disks`). A node that comes back after a crash has missed the writes made
//! while it was down: it repairs them from its peers as it rejoins.

use crate::dist::Sampler;
use crate::infra::{CassandraNode, Fifo};
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
    let topo = &shared.topo;
    let mut missed = Vec::new();
    for (_, disk) in shared.disks.iter().enumerate().filter(|&(i, _)| i != index as usize) {
        let peer = disk.lock().expect("disk lock");
        missed.extend(peer.rows_since_ms(since).filter(|r| topo.replicas(r.conversation).any(|n| n == me)));
    }
    let mut disk = shared.disks[index as usize].lock().expect("disk lock");
    for row in &missed {
        disk.write(row);
    }
    missed.len() as u64
}

/// How far before its crash a rejoining node repairs from: writes on their way to it when
/// it died were lost with it.
const REPAIR_MARGIN_MS: u64 = 5_000;

/// A node's disk, made for the rows it is expected to hold: no doubling (and a 3x peak)
/// as they grow.
pub(crate) fn disk(s: &crate::scenario::Scenario) -> CassandraNode {
    let group_messages_per_s = f64::from(s.groups.active) * s.groups.messages_per_group_per_s;
    let rows = (s.workload.messages_per_s + group_messages_per_s as u64)
        * (s.warmup_s + s.duration_s)
        * u64::from(s.fleet.cassandra_replication_factor)
        / u64::from(s.fleet.cassandra_nodes);
    CassandraNode::with_capacity(rows as usize * 21 / 20)
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
                let rows =
                    self.shared.disks[self.index].lock().expect("disk lock").history(conversation, before, limit);
                ctx.send(env.from, done, Msg::HistoryPage { rows });
            }
            Msg::StatusWrite { id, conversation, state } => {
                let mut disk = self.shared.disks[self.index].lock().expect("disk lock");
                let applied = disk.set_status(conversation, id, state);
                drop(disk);
                ctx.counters.status_writes += 1;
                ctx.counters.status_writes_before_row += u64::from(!applied);
            }
            Msg::Write { req, msg } => {
                let mut disk = self.shared.disks[self.index].lock().expect("disk lock");
                disk.write(&msg);
                if crate::check::quorum_sampled(msg.id) {
                    disk.log_sampled_write(msg.id, done);
                }
                drop(disk);
                ctx.counters.rows_written += 1;
                ctx.send(env.from, done, Msg::WriteAck { req });
            }
            Msg::Read { req, id, conversation } => {
                let row = self.shared.disks[self.index].lock().expect("disk lock").read(conversation, id);
                ctx.send(env.from, done, Msg::ReadReply { req, row });
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
        report.gauge_end = self.shared.disks[self.index].lock().expect("disk lock").row_count() as u64;
        report.counters.rows_repaired += self.repaired;
    }
}
