//! Serve loop of a Cassandra node.

use crate::dist::Sampler;
use crate::infra::{CassandraNode, Fifo};
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, Process, Shared};
use wasim_model::Time;

pub(crate) struct CassandraProcess {
    node: CassandraNode,
    fifo: Fifo,
    service: Sampler,
}

impl CassandraProcess {
    pub fn new(shared: &Shared) -> CassandraProcess {
        let s = &shared.scenario;
        let (fifo, service) = super::queue(
            shared,
            crate::topology::NodeKind::Cassandra,
            s.workers.cassandra,
            &s.service_us.cassandra_write,
        );
        // Reserve the expected rows up front: no doubling (and a 3x peak) as they grow.
        let rows =
            s.workload.messages_per_s * (s.warmup_s + s.duration_s) * u64::from(s.fleet.cassandra_replication_factor)
                / u64::from(s.fleet.cassandra_nodes);
        CassandraProcess { node: CassandraNode::with_capacity(rows as usize * 21 / 20), fifo, service }
    }
}

impl Process for CassandraProcess {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        match env.msg {
            Msg::Write { req, msg } => {
                self.node.write(&msg);
                ctx.counters.rows_written += 1;
                ctx.send(env.from, done, Msg::WriteAck { req });
            }
            Msg::Read { req, id, conversation } => {
                let row = self.node.read(conversation, id);
                ctx.send(env.from, done, Msg::ReadReply { req, row });
            }
            other => unreachable!("cassandra got {other:?}"),
        }
    }

    fn on_tick(&mut self, _now: Time, _ctx: &mut Ctx) {}

    fn finish(&mut self, report: &mut NodeReport) {
        report.logs.stored = self.node.ids().collect();
        self.fifo.report_into(report);
        report.gauge_end = self.node.row_count() as u64;
    }
}
