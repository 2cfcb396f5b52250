//! Serve loop of an object-store node: PUTs from devices (uploads, pre-signed), GETs from
//! CDN edges (origin fetches). The store's behaviour is `wasim_model::ObjectStore`; the
//! fault layer says when it is slow or down.

use crate::check::LogMs;
use crate::dist::Sampler;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, Process, Shared};
use std::sync::Arc;
use wasim_model::{ObjectStore, PutOutcome, Time};

/// The key the API tier signs upload URLs with and the store checks them by: one per run.
pub(crate) fn signing_secret(shared: &Shared) -> u64 {
    shared.scenario.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x6D65_6469_6121
}

/// A request's overhead (time to first byte) is served by this many workers a node: S3
/// takes thousands of requests a second per prefix, so requests do not queue behind each
/// other here; the bytes queue on the ingest bandwidth.
pub(crate) const STORE_WORKERS: u32 = 1_024;

pub(crate) struct ObjectStoreNode {
    store: ObjectStore,
    fifo: Fifo,
    first_byte: Sampler,
    shared: Arc<Shared>,
}

impl ObjectStoreNode {
    pub fn new(shared: &Arc<Shared>) -> ObjectStoreNode {
        let m = &shared.scenario.media;
        let (fifo, first_byte) =
            super::queue(shared, crate::topology::NodeKind::ObjectStore, STORE_WORKERS, &m.object_store_us);
        let ingest_bytes_per_s = (m.ingest_gbps * 1e9 / 8.0 / f64::from(m.object_store_nodes)) as u64;
        let mut store = ObjectStore::new(signing_secret(shared), ingest_bytes_per_s);
        // The fault layer's slow windows: the store's ingest degrades then.
        for (from, until, factor) in shared.faults.store_slow_windows() {
            store.slow_between(from, until, factor);
        }
        ObjectStoreNode { store, fifo, first_byte, shared: shared.clone() }
    }
}

impl ObjectStoreNode {
    /// Book `bytes` taken in by the ingest over `(from, until)` to the seconds it spans, in
    /// proportion (a large upload on a slow store spans many); `new`: the first copy of its
    /// object, also booked as storage. What the ingest takes after the run is not booked.
    fn book_ingest(&self, (from, until): (Time, Time), bytes: u32, new: bool, ctx: &mut Ctx) {
        let end_us = self.shared.scenario.total_s() * 1_000_000;
        let (from_us, until_us) = (from.as_us(), until.as_us().max(from.as_us() + 1));
        let span = (until_us - from_us) as f64;
        let mut second = from_us / 1_000_000;
        while second * 1_000_000 < until_us.min(end_us) {
            let (a, b) = ((second * 1_000_000).max(from_us), ((second + 1) * 1_000_000).min(until_us));
            let share = (f64::from(bytes) * (b - a) as f64 / span).round() as u64;
            let s = ctx.second(Time(second * 1_000_000));
            s.media_ingest_bytes += share;
            if new {
                s.media_stored_bytes += share;
            }
            second += 1;
        }
    }
}

impl Process for ObjectStoreNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        let done = self.fifo.serve(env.at, self.first_byte.sample_us(&mut ctx.rng));
        let down = self.shared.faults.store_down(env.at);
        match env.msg {
            Msg::Put { key, token, bytes, signature, tapped_at, started, sent_by } => {
                let outcome = if down {
                    None
                } else {
                    // The last byte takes the first's trip, after the uplink sent it.
                    let last_byte = sent_by + env.at.since(started);
                    Some(self.store.put(done, key, bytes, signature, tapped_at, last_byte))
                };
                let (at, stored) = match outcome {
                    Some(PutOutcome::Stored { at, ingest, new }) => {
                        ctx.counters.media_bytes_ingested += u64::from(bytes);
                        self.book_ingest(ingest, bytes, new, ctx);
                        if new {
                            ctx.counters.media_uploads_stored += 1;
                        }
                        ctx.logs.media_stored.push((key.0, LogMs::of(at)));
                        (at, true)
                    }
                    Some(PutOutcome::Forbidden) | None => {
                        ctx.counters.media_uploads_refused += 1;
                        (done, false)
                    }
                };
                ctx.send(env.from, at, Msg::PutDone { key, token, stored });
            }
            Msg::OriginGet { key } => {
                let object = if down { None } else { self.store.get(done, key) };
                ctx.counters.cdn_origin_fetches += 1;
                ctx.send(env.from, done, Msg::OriginReply { key, object });
            }
            ref other => unreachable!("the object store got {other:?}"),
        }
    }

    fn on_tick(&mut self, _now: Time, _ctx: &mut Ctx) {}

    fn queue(&self) -> Option<&Fifo> {
        Some(&self.fifo)
    }

    fn finish(&mut self, report: &mut NodeReport) {
        self.fifo.report_into(report);
        report.gauge_end = self.store.len() as u64;
        report.counters.media_bytes_stored += self.store.bytes_stored();
    }
}
