//! Serve loop of a presence Redis shard.

use crate::dist::Sampler;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, OrderKey, Process, Shared};
use crate::topology::Topology;
use std::sync::Arc;
use std::time::Duration;
use wasim_model::{PresenceInput, PresenceNotify, PresenceStore, Time};

pub(crate) struct PresenceNode {
    store: PresenceStore,
    topo: Arc<Topology>,
    fifo: Fifo,
    service: Sampler,
    notes: Vec<PresenceNotify>,
    now: Time,
    shared: Arc<Shared>,
    me: crate::msg::NodeIdx,
}

impl PresenceNode {
    pub fn new(shared: &Arc<Shared>, me: crate::msg::NodeIdx) -> PresenceNode {
        let s = &shared.scenario;
        let (fifo, service) =
            super::queue(shared, crate::topology::NodeKind::Presence, s.workers.redis, &s.service_us.redis);
        PresenceNode {
            store: PresenceStore::with_stride(
                Duration::from_millis(s.users.presence_ttl_ms),
                s.fleet.redis_presence_shards,
                s.registered_users().div_ceil(u64::from(s.fleet.redis_presence_shards)) as usize,
            ),
            topo: shared.topo.clone(),
            fifo,
            service,
            notes: Vec::new(),
            now: Time::ZERO,
            shared: shared.clone(),
            me,
        }
    }

    fn publish(&mut self, t: Time, ctx: &mut Ctx) {
        for n in self.notes.drain(..) {
            let msg = Msg::PresenceNotify { watcher: n.watcher, update: n.update };
            ctx.send_ordered(self.topo.chat(n.server), t, msg, OrderKey::Presence(n.update.target));
        }
    }
}

impl Process for PresenceNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        if let Msg::PresenceHeartbeats { count, devices } = env.msg {
            // A pipeline: one round trip, but each command is served in turn. Its users'
            // records are loaded together first, so that their misses overlap.
            let devices = &devices[..usize::from(count)];
            for device in devices {
                self.store.prefetch(device.user);
            }
            for &device in devices {
                let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
                let clock = self.shared.faults.clock(self.me, done);
                self.store.handle(clock, PresenceInput::Heartbeat { device }, &mut self.notes);
                self.publish(done, ctx);
            }
            return;
        }
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        let input = match env.msg {
            Msg::Presence(input) => input,
            Msg::PresenceSubscribe { watcher, server, target } => PresenceInput::Subscribe { watcher, server, target },
            other => unreachable!("presence got {other:?}"),
        };
        // The shard reads its own clock (skewed by a fault): TTL deadlines and last-seen
        // stamps carry it. What it sends leaves on time.
        self.store.handle(self.shared.faults.clock(self.me, done), input, &mut self.notes);
        self.publish(done, ctx);
    }

    /// The record of the user a command is about (a pipeline's first).
    #[inline]
    fn prefetch(&self, env: &Envelope) {
        let user = match env.msg {
            Msg::Presence(input) => input.user(),
            Msg::PresenceSubscribe { target, .. } => target,
            Msg::PresenceHeartbeats { devices, .. } => devices[0].user,
            _ => return,
        };
        self.store.prefetch(user);
    }

    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        let clock = self.shared.faults.clock(self.me, now);
        self.store.handle_timeout(clock, &mut self.notes);
        self.publish(now, ctx);
        self.now = self.now.max(clock);
    }

    fn queue(&self) -> Option<&Fifo> {
        Some(&self.fifo)
    }

    fn finish(&mut self, report: &mut NodeReport) {
        report.logs.key_lifetimes = self.store.key_lifetimes(self.now);
        report.logs.key_expiries = self.store.take_key_expiries();
        self.fifo.report_into(report);
        report.gauge_end = self.store.len() as u64;
    }
}
