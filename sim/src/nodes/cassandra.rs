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
        let (fifo, service) = super::queue(shared, s.workers.cassandra, &s.service_us.cassandra_write);
        CassandraProcess { node: CassandraNode::default(), fifo, service }
    }
}

impl Process for CassandraProcess {
    fn on_message(&mut self, env: Envelope, ctx: &mut Ctx) {
        let Msg::Write { req, msg } = env.msg else { unreachable!("cassandra got {:?}", env.msg) };
        let done = self.fifo.serve(env.at, self.service.sample(&mut ctx.rng));
        self.node.write(&msg);
        ctx.counters.rows_written += 1;
        ctx.send(env.from, done, Msg::WriteAck { req });
    }

    fn on_tick(&mut self, _now: Time, _ctx: &mut Ctx) {}

    fn finish(&mut self, report: &mut NodeReport) {
        report.workers = self.fifo.workers();
        report.busy_us = self.fifo.busy_us();
        report.served = self.fifo.served();
        report.gauge_end = self.node.row_count() as u64;
    }
}
