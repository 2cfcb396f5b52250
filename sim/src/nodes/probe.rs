//! The calibration probe: stands where the client shard stands and sends one tier a
//! Poisson stream of one kind of request, timing each reply it gets back.
//!
//! A request's sojourn at the tier is its round trip less the two constant links it
//! crossed. Requests are spread over distinct conversations, so no ordered key holds a
//! reply back: what is measured is the queue, and the order replies leave in.

use crate::calibrate::ProbePlan;
use crate::metrics::{latency_histogram, record_us, NodeReport};
use crate::msg::{Envelope, Msg, NodeIdx};
use crate::node::{Ctx, Process, Shared, Stream};
use crate::topology::NodeKind;
use hdrhistogram::Histogram;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use wasim_model::{ChatMessage, ConversationId, DeviceFrame, DeviceId, InboxPos, MessageId, ServerFrame, Time, UserId};

pub(crate) struct ProbeNode {
    plan: ProbePlan,
    target: NodeIdx,
    rng: ChaCha8Rng,
    /// The next arrival, in µs (kept fractional, so the rate is exact).
    next_us: f64,
    /// When each request was sent, by request number.
    sent_us: Vec<u64>,
    window: (Time, Time),
    sojourns: Histogram<u64>,
}

impl ProbeNode {
    pub fn new(shared: &Shared, plan: ProbePlan, ctx: &mut Ctx) -> ProbeNode {
        let window = (shared.measure_from(), shared.measure_until());
        let expected = plan.per_s * window.1.as_us() as f64 / 1e6;
        ProbeNode {
            target: shared.topo.node(plan.tier, 0),
            rng: ctx.stream(Stream::Sends),
            next_us: 0.0,
            sent_us: Vec::with_capacity(expected as usize + expected as usize / 50 + 16),
            window,
            sojourns: latency_histogram(),
            plan,
        }
    }

    /// Request `n`'s message: between two users of the pool, so conversations rarely meet.
    fn message(&mut self, n: u64, t: Time) -> ChatMessage {
        let pool = self.plan.pool;
        let (from, to) = (UserId(self.rng.random_range(0..pool)), UserId(self.rng.random_range(0..pool)));
        ChatMessage {
            id: MessageId(n + 1),
            conversation: ConversationId::direct(from, to),
            from,
            to,
            // Each request a client message of its own (routers drop repeats of one).
            client_seq: n as u32,
            sent_at: t,
        }
    }

    fn send(&mut self, n: u64, t: Time, ctx: &mut Ctx) {
        let msg = self.message(n, t);
        let request = match self.plan.tier {
            NodeKind::Redis => Msg::RouteMessage { req: n, msg },
            NodeKind::Cassandra => Msg::Read { req: n, id: msg.id, conversation: msg.conversation },
            NodeKind::Kafka => Msg::Produce { req: n, msg },
            // As the broker of partition 0, pushing its records in offset order.
            NodeKind::Router => Msg::Record { partition: 0, offset: n, msg },
            // A device of the pool connects (each device always to the one server).
            NodeKind::ChatServer => Msg::Device {
                device: DeviceId::phone(msg.from),
                frame: DeviceFrame::Connect { epoch: n as u32, cursor: InboxPos(0), hide_last_seen: false },
            },
            other => unreachable!("no calibration of {other:?}"),
        };
        ctx.send(self.target, t, request);
    }

    fn reply(&mut self, n: u64, at: Time) {
        let Some(&sent) = self.sent_us.get(n as usize) else { return };
        if sent >= self.window.0.as_us() && sent < self.window.1.as_us() {
            record_us(&mut self.sojourns, at.as_us().saturating_sub(sent + self.plan.links_us));
        }
    }
}

impl Process for ProbeNode {
    fn on_message(&mut self, env: &Envelope, _ctx: &mut Ctx) {
        match env.msg {
            Msg::Routed { req, .. } | Msg::ReadReply { req, .. } | Msg::ProduceAck { req } => self.reply(req, env.at),
            Msg::ToDevice { frame: ServerFrame::ConnectAccepted { epoch, .. }, .. } => {
                self.reply(u64::from(epoch), env.at)
            }
            _ => {} // the rest of a connect (its catch-up), or nothing the probe asked for
        }
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        let gap_us = 1e6 / self.plan.per_s;
        while self.next_us <= now.as_us() as f64 && self.next_us < self.window.1.as_us() as f64 {
            let t = Time(self.next_us.round() as u64);
            let n = self.sent_us.len() as u64;
            self.sent_us.push(t.as_us());
            self.send(n, t, ctx);
            // Exponential gaps, drawn exactly: the arrivals are a Poisson process.
            self.next_us += -gap_us * (1.0 - self.rng.random::<f64>()).ln();
        }
    }

    fn finish(&mut self, report: &mut NodeReport) {
        if self.plan.seen_by_requester {
            report.sojourns = Some(std::mem::replace(&mut self.sojourns, latency_histogram()));
        }
    }
}
