//! Serve loop of a Redis session-store shard.

use crate::dist::Sampler;
use crate::infra::{Fifo, RedisShard};
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, Process, Shared};
use wasim_model::Time;

pub(crate) struct RedisNode {
    shard: RedisShard,
    fifo: Fifo,
    service: Sampler,
}

impl RedisNode {
    pub fn new(shared: &Shared) -> RedisNode {
        let s = &shared.scenario;
        let (fifo, service) = super::queue(shared, s.workers.redis, &s.service_us.redis);
        RedisNode { shard: RedisShard::default(), fifo, service }
    }
}

impl Process for RedisNode {
    fn on_message(&mut self, env: Envelope, ctx: &mut Ctx) {
        let done = self.fifo.serve(env.at, self.service.sample(&mut ctx.rng));
        match env.msg {
            Msg::SessionSet { device, server, ttl } => self.shard.session_set(device, server, done, ttl),
            Msg::SessionClear { device, server } => self.shard.session_clear(device, server),
            Msg::SessionGet { req, user } => {
                ctx.counters.session_gets += 1;
                let entry = self.shard.session_get(user, done);
                ctx.send(env.from, done, Msg::SessionValue { req, entry });
            }
            Msg::InboxAdd { user, id } => {
                ctx.counters.inbox_adds += 1;
                self.shard.inbox_add(user, id);
            }
            other => unreachable!("redis got {other:?}"),
        }
    }

    fn on_tick(&mut self, _now: Time, _ctx: &mut Ctx) {}

    fn finish(&mut self, report: &mut NodeReport) {
        report.workers = self.fifo.workers();
        report.busy_us = self.fifo.busy_us();
        report.served = self.fifo.served();
        report.gauge_end = self.shard.session_count() as u64;
    }
}
