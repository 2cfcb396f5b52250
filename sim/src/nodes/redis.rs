//! Serve loop of a session-store Redis shard.

use crate::dist::Sampler;
use crate::infra::{Fifo, RedisShard};
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, OrderKey, Process, Shared};
use wasim_model::{SessionWrite, Time};

pub(crate) struct RedisNode {
    shard: RedisShard,
    /// This shard's index among the session shards.
    index: u32,
    end: Time,
    fifo: Fifo,
    service: Sampler,
    /// This shard's primary deaths still to come, with their promotions, in time order.
    crashes: Vec<(Time, Time)>,
    /// Web clients whose session this shard has written (for the checkers: a web client is
    /// owed what is routed once the store knows it).
    linked: rustc_hash::FxHashSet<u32>,
    topo: std::sync::Arc<crate::topology::Topology>,
}

impl RedisNode {
    pub fn new(shared: &Shared, index: u32) -> RedisNode {
        let s = &shared.scenario;
        let (fifo, service) =
            super::queue(shared, crate::topology::NodeKind::Redis, s.workers.redis, &s.service_us.redis);
        let users = s.registered_users().div_ceil(u64::from(s.fleet.redis_session_shards));
        let me = shared.topo.node(crate::topology::NodeKind::Redis, index);
        let mine: Vec<_> = shared.faults.redis_outages().iter().filter(|o| o.node == me).copied().collect();
        let mut shard = RedisShard::with_stride(s.fleet.redis_session_shards, users as usize);
        if let Some(lag) = mine.iter().map(|o| o.lag).max() {
            shard.track_replication(lag);
        }
        if s.fleet.session_reregister {
            shard.settle_after_promotion(wasim_model::SESSION_SETTLE_AFTER_PROMOTION);
        }
        let mut crashes: Vec<(Time, Time)> = mine.iter().map(|o| (o.down, o.promoted)).collect();
        crashes.sort();
        RedisNode {
            shard,
            index,
            end: Time::from_secs(s.total_s()),
            fifo,
            service,
            crashes,
            linked: Default::default(),
            topo: shared.topo.clone(),
        }
    }
}

impl Process for RedisNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        match env.msg {
            Msg::SessionSet { req, device, server, epoch, ttl, cursor } => {
                let write = self.shard.session_set(device, server, epoch, done, ttl);
                if write == SessionWrite::Stale {
                    ctx.counters.sessions_stale += 1;
                    ctx.trace_device(done, "session_write_stale", device);
                } else if device.slot.0 > 0 && self.linked.insert(wasim_model::DeviceKey::of(device).0) {
                    ctx.logs.registered.push((wasim_model::DeviceKey::of(device), done));
                }
                let previous = write.previous();
                // The answer is many messages, each with its own latency: the end names
                // how many came before it, so the server waits for them all.
                let mut parts = 0;
                let (entries, end) = self.shard.inbox_since(device.user, cursor);
                for (pos, msg) in entries {
                    ctx.send(env.from, done, Msg::InboxEntry { req, pos, msg });
                    parts += 1;
                }
                // Stored receipts belong to the sender's phone, which sent the messages.
                if device.slot.0 == 0 {
                    for &(stored, receipt) in self.shard.stored_receipts(device.user) {
                        ctx.send(env.from, done, Msg::StoredReceipt { req, receipt, stored });
                        parts += 1;
                    }
                }
                ctx.send(env.from, done, Msg::InboxEnd { req, end, parts, previous });
            }
            Msg::SessionClear { device, server, epoch } => self.shard.session_clear(device, server, epoch, done),
            Msg::ForgetReceipts { user, upto } => self.shard.forget_receipts(user, upto),
            Msg::SessionRefresh { device, server, epoch, ttl } => {
                let before = self.shard.session_server(device, done);
                let write = self.shard.session_set(device, server, epoch, done, ttl);
                let changed = write != SessionWrite::Stale && before != Some(server);
                let msg = Msg::SessionRefreshed { device, epoch, changed };
                ctx.send_ordered(env.from, done, msg, OrderKey::Session(device.user));
            }
            Msg::RouteMessage { req, msg } => {
                ctx.counters.routes += 1;
                let route = self.shard.route(&msg, None, done);
                if route.inbox {
                    ctx.counters.inbox_adds += 1;
                    ctx.trace_msg(done, "inbox_add", &msg, None);
                }
                ctx.send_ordered(env.from, done, Msg::Routed { req, route }, OrderKey::Conversation(msg.conversation));
            }
            Msg::Reroute { msg, exclude, slot } => {
                ctx.counters.routes += 1;
                let route = self.shard.route(&msg, Some(exclude), done);
                if route.inbox {
                    ctx.counters.inbox_adds += 1;
                    ctx.trace_msg(done, "inbox_add", &msg, None);
                }
                ctx.send_ordered(
                    env.from,
                    done,
                    Msg::Rerouted { msg, route, slot },
                    OrderKey::Conversation(msg.conversation),
                );
            }
            Msg::RouteGroup { req, msg, count, members } => {
                // A pipeline of route-or-inbox commands, one per member's copy.
                let mut servers = [[crate::msg::NO_SERVER; 2]; wasim_model::ROUTE_BATCH_MAX];
                let mut done = done;
                for (k, &member) in members[..usize::from(count)].iter().enumerate() {
                    if k > 0 {
                        done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
                    }
                    ctx.counters.routes += 1;
                    let copy = wasim_model::ChatMessage { to: member, ..msg };
                    let route = self.shard.route(&copy, None, done);
                    if route.inbox {
                        ctx.counters.inbox_adds += 1;
                        ctx.counters.group_inbox_adds += 1;
                        ctx.trace_msg(done, "inbox_add", &copy, None);
                    }
                    servers[k] = crate::msg::pack_route(&route);
                }
                let reply = Msg::GroupRouted { req, count, servers };
                ctx.send_ordered(env.from, done, reply, OrderKey::Conversation(msg.conversation));
            }
            Msg::RouteReceipt { req, receipt, exclude } => {
                let server = self.shard.route_receipt(receipt, exclude, done);
                match server {
                    None => {
                        ctx.counters.receipts_stored += 1;
                        ctx.trace_msg(done, "receipt_stored", &receipt.msg, Some(receipt.by));
                    }
                    // Published to the server's channel: the store relays it itself, so the
                    // receipt does not depend on the asking server outliving the command (a
                    // failover may hold it for seconds).
                    Some(server) => ctx.send(self.topo.chat(server), done, Msg::ReceiptRelay { receipt }),
                }
                ctx.send(env.from, done, Msg::ReceiptRouted { req, server });
            }
            other => unreachable!("redis got {other:?}"),
        }
    }

    /// The session key a command will read or write.
    #[inline]
    fn prefetch(&self, env: &Envelope) {
        let user = match env.msg {
            Msg::SessionSet { device, .. } | Msg::SessionClear { device, .. } | Msg::SessionRefresh { device, .. } => {
                device.user
            }
            Msg::RouteMessage { msg, .. } | Msg::Reroute { msg, .. } => msg.to,
            Msg::RouteReceipt { receipt, .. } => receipt.msg.from,
            Msg::ForgetReceipts { user, .. } => user,
            Msg::RouteGroup { count, members, .. } => {
                for &m in &members[..usize::from(count)] {
                    self.shard.prefetch(m);
                }
                return;
            }
            _ => return,
        };
        self.shard.prefetch(user);
    }

    /// The primary died: its replica, promoted, lacks the session writes of the
    /// replication lag before the crash. (Nothing reaches the shard from the crash until
    /// the promotion: its clients' commands wait for the new primary.)
    fn on_tick(&mut self, now: Time, ctx: &mut Ctx) {
        while let Some(&(crash, promoted)) = self.crashes.first().filter(|&&(c, _)| now >= c) {
            self.crashes.remove(0);
            ctx.counters.sessions_lost_in_failover += self.shard.promote_replica(crash, promoted);
        }
    }

    fn queue(&self) -> Option<&Fifo> {
        Some(&self.fifo)
    }

    fn finish(&mut self, report: &mut NodeReport) {
        self.fifo.report_into(report);
        report.gauge_end = self.shard.session_count() as u64;
        // For invariant 6: where the store sends each device's messages at the end.
        let sessions = &mut report.logs.sessions;
        self.shard.for_each_online(self.index, self.end, |user, slot, server| {
            sessions.push((wasim_model::DeviceKey::of(wasim_model::DeviceId { user, slot }), server))
        });
        report.counters.redis_dropped += self.shard.dropped();
    }
}
