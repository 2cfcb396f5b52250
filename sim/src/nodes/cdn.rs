//! Serve loop of a CDN edge: devices' GETs, served from its cache or fetched from the
//! origin (the object store). The edge's behaviour is `wasim_model::CdnEdge`; the fault
//! layer says when it is lost.

use crate::dist::Sampler;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, Process, Shared};
use crate::topology::Topology;
use std::sync::Arc;
use wasim_model::{CdnEdge, EdgeGet, Time};

pub(crate) struct CdnNode {
    edge: CdnEdge,
    index: u32,
    fifo: Fifo,
    service: Sampler,
    topo: Arc<Topology>,
    shared: Arc<Shared>,
}

impl CdnNode {
    pub fn new(shared: &Arc<Shared>, index: u32) -> CdnNode {
        let m = &shared.scenario.media;
        let (fifo, service) =
            super::queue(shared, crate::topology::NodeKind::Cdn, crate::scenario::CDN_WORKERS, &m.cdn_us);
        let capacity = (m.cdn_cache_gb * 1e9) as u64;
        CdnNode {
            edge: CdnEdge::new(capacity),
            index,
            fifo,
            service,
            topo: shared.topo.clone(),
            shared: shared.clone(),
        }
    }

    /// Follow the fault layer: lost (cache gone) or back (cold).
    fn follow_faults(&mut self, t: Time) {
        let lost = self.shared.faults.edge_lost(self.index, t);
        if lost != self.edge.is_lost() {
            self.edge.set_lost(lost);
        }
    }
}

impl Process for CdnNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        self.follow_faults(env.at);
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        match env.msg {
            Msg::CdnGet { key, device, token } => {
                ctx.counters.cdn_requests += 1;
                match self.edge.get(key, device, token) {
                    EdgeGet::Hit(object) => {
                        ctx.counters.cdn_hits += 1;
                        ctx.counters.cdn_bytes_served += u64::from(object.bytes);
                        ctx.second(done).cdn_egress_bytes += u64::from(object.bytes);
                        ctx.send(env.from, done, Msg::CdnServed { key, device, token, object: Some(object) });
                    }
                    EdgeGet::FetchOrigin => ctx.send(self.topo.object_store(key), done, Msg::OriginGet { key }),
                    // Served by the fetch under way: no origin fetch of its own.
                    EdgeGet::Joined => ctx.counters.cdn_hits += 1,
                }
            }
            Msg::OriginReply { key, object } => {
                for (device, token) in self.edge.origin_answered(key, object) {
                    if let Some(o) = object {
                        ctx.counters.cdn_bytes_served += u64::from(o.bytes);
                        ctx.second(done).cdn_egress_bytes += u64::from(o.bytes);
                    }
                    let shard = self.topo.client_shard(device.device().user);
                    ctx.send(shard, done, Msg::CdnServed { key, device, token, object });
                }
            }
            ref other => unreachable!("a CDN edge got {other:?}"),
        }
    }

    fn on_tick(&mut self, now: Time, _ctx: &mut Ctx) {
        self.follow_faults(now);
    }

    fn queue(&self) -> Option<&Fifo> {
        Some(&self.fifo)
    }

    fn finish(&mut self, report: &mut NodeReport) {
        self.fifo.report_into(report);
        report.gauge_end = self.edge.cached() as u64;
    }
}
