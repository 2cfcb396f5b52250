//! Serve loop of a Kafka broker. Partition logs are replicated (acks = all): they live in
//! `Shared::kafka_logs` and outlive a broker. Whichever broker leads a partition (the fault
//! layer says which: its preferred broker, or after an election another) appends to it
//! and pushes its records to the partition's router; a broker that becomes leader pushes
//! again from the router's last commit.

use crate::dist::Sampler;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg, NodeIdx};
use crate::node::{Ctx, OrderKey, Process, Shared};
use crate::topology::NodeKind;
use std::sync::Arc;
use wasim_model::{ChatMessage, Time};

pub(crate) struct KafkaNode {
    shared: Arc<Shared>,
    me: u32,
    fifo: Fifo,
    service: Sampler,
    pushes: Vec<(u64, ChatMessage)>,
    /// The partitions this broker led at the end of the previous tick.
    leads: Vec<bool>,
    /// The router each partition was pushed to at the end of the previous tick, and how
    /// many times that router had been restarted.
    consumers: Vec<(NodeIdx, usize)>,
    /// The latest time the consumers were looked up at: a request served from its exact
    /// arrival can end before the last tick did, and the group must not go back.
    consumers_at: Time,
}

impl KafkaNode {
    pub fn new(shared: &Arc<Shared>, me: NodeIdx) -> KafkaNode {
        let s = &shared.scenario;
        let (fifo, service) = super::queue(shared, NodeKind::Kafka, s.workers.kafka, &s.service_us.kafka);
        let (_, index) = shared.topo.locate(me);
        let mut node = KafkaNode {
            shared: shared.clone(),
            me: index,
            fifo,
            service,
            pushes: Vec::new(),
            leads: vec![false; shared.topo.all_partitions() as usize],
            consumers: (0..shared.topo.all_partitions()).map(|p| (shared.consumer(p, Time::ZERO), 0)).collect(),
            consumers_at: Time::ZERO,
        };
        // Without crashes leadership never moves: take it now. A broker of a run with
        // crashes takes its partitions in its first tick (a restarted one pushes them from
        // the routers' commit then).
        if !shared.faults.moves_kafka_leaders() {
            node.take_leadership(Time::ZERO, None);
        }
        node
    }

    /// Take over the partitions this broker leads at `now` that it did not lead before.
    fn take_leadership(&mut self, now: Time, mut ctx: Option<&mut Ctx>) {
        for p in 0..self.leads.len() {
            let leads = self.shared.kafka_leader(p as u32, now) == self.me;
            if leads && !self.leads[p] {
                let again = self.shared.kafka_logs[p].lock().expect("log lock").rewind_to_commit();
                if let Some(ctx) = ctx.as_deref_mut() {
                    ctx.counters.records_pushed_again += again;
                    self.push(p as u32, now, ctx);
                }
            }
            self.leads[p] = leads;
        }
    }

    /// Follow the consumer group's rebalances: a partition given to another router, or to
    /// its own router restarted (it rejoins the group), is pushed to it from the last
    /// commit (what was routed since is routed again; the devices show it once).
    fn follow_consumers(&mut self, now: Time, ctx: &mut Ctx) {
        for p in 0..self.consumers.len() {
            if self.follow_consumer(p, now, ctx) {
                // Pushed from the time the move was seen at (a request served from its
                // exact arrival may have looked later than the tick's start): a router
                // restarted then must not be sent to before it is up.
                self.push(p as u32, now.max(self.consumers_at), ctx);
            }
        }
    }

    /// Whether partition `p` changed consumer by `t` (it is rewound to the commit then, if
    /// this broker leads it). Checked before every push too: a record appended in the tick
    /// a router restarts must not reach it from the old cursor, ahead of the rewind.
    fn follow_consumer(&mut self, p: usize, t: Time, ctx: &mut Ctx) -> bool {
        let t = t.max(self.consumers_at);
        self.consumers_at = t;
        let node = self.shared.consumer(p as u32, t);
        let consumer = (node, self.shared.faults.restarts_by(node, t));
        if consumer == self.consumers[p] {
            return false;
        }
        self.consumers[p] = consumer;
        if self.leads[p] {
            let again = self.shared.kafka_logs[p].lock().expect("log lock").rewind_to_commit();
            ctx.counters.records_pushed_again += again;
            ctx.counters.partitions_moved += 1;
        }
        true
    }

    fn push(&mut self, partition: u32, t: Time, ctx: &mut Ctx) {
        if !self.leads[partition as usize] {
            return;
        }
        if self.shared.faults.moves_consumers() {
            self.follow_consumer(partition as usize, t, ctx);
        }
        self.shared.kafka_logs[partition as usize].lock().expect("log lock").take_pushes(&mut self.pushes);
        let router = self.consumers[partition as usize].0;
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
                let partition = self.shared.topo.partition(msg.conversation);
                self.shared.kafka_logs[partition as usize].lock().expect("log lock").append(msg);
                ctx.counters.records_appended += 1;
                ctx.send(env.from, done, Msg::ProduceAck { req });
                self.push(partition, done, ctx);
            }
            Msg::Commit { partition, offset } => {
                self.shared.kafka_logs[partition as usize].lock().expect("log lock").commit(offset);
                self.push(partition, done, ctx);
            }
            other => unreachable!("kafka got {other:?}"),
        }
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        if self.shared.faults.moves_kafka_leaders() {
            self.take_leadership(now, Some(ctx));
        }
        if self.shared.faults.moves_consumers() {
            self.follow_consumers(now, ctx);
        }
    }

    fn queue(&self) -> Option<&Fifo> {
        Some(&self.fifo)
    }

    fn finish(&mut self, report: &mut NodeReport) {
        self.fifo.report_into(report);
        report.gauge_end = (0..self.leads.len())
            .filter(|&p| self.leads[p])
            .map(|p| self.shared.kafka_logs[p].lock().expect("log lock").lag())
            .sum();
    }
}
