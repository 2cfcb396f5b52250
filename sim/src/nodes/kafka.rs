//! Serve loop of a Kafka broker.

use crate::dist::Sampler;
use crate::infra::{Broker, Fifo};
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg, NodeIdx};
use crate::node::{Ctx, OrderKey, Process, Shared};
use crate::topology::Topology;
use std::sync::Arc;
use wasim_model::{ChatMessage, Time};

pub(crate) struct KafkaNode {
    broker: Broker,
    topo: Arc<Topology>,
    fifo: Fifo,
    service: Sampler,
    pushes: Vec<(u64, ChatMessage)>,
}

impl KafkaNode {
    pub fn new(shared: &Shared, me: NodeIdx) -> KafkaNode {
        let s = &shared.scenario;
        let topo = shared.topo.clone();
        let led = topo.partitions_where(|p| topo.broker(p), me);
        let (fifo, service) =
            super::queue(shared, crate::topology::NodeKind::Kafka, s.workers.kafka, &s.service_us.kafka);
        KafkaNode { broker: Broker::new(topo.partitions, led), topo, fifo, service, pushes: Vec::new() }
    }

    fn push(&mut self, partition: u32, t: Time, ctx: &mut Ctx) {
        self.broker.take_pushes(partition, &mut self.pushes);
        let router = self.topo.router(partition);
        for (offset, msg) in self.pushes.drain(..) {
            ctx.send_ordered(
                router,
                t,
                Msg::Record { partition, offset, msg },
                OrderKey::Conversation(msg.conversation),
            );
        }
    }
}

impl Process for KafkaNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        match env.msg {
            Msg::Produce { req, msg } => {
                let partition = self.topo.partition(msg.conversation);
                self.broker.append(partition, msg);
                ctx.counters.records_appended += 1;
                ctx.send(env.from, done, Msg::ProduceAck { req });
                self.push(partition, done, ctx);
            }
            Msg::Commit { partition, offset } => {
                self.broker.commit(partition, offset);
                self.push(partition, done, ctx);
            }
            other => unreachable!("kafka got {other:?}"),
        }
    }

    fn on_tick(&mut self, _now: Time, _ctx: &mut Ctx) {}

    fn finish(&mut self, report: &mut NodeReport) {
        self.fifo.report_into(report);
        report.gauge_end = self.broker.lag();
    }
}
