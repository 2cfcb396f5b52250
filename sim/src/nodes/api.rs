//! Serve loop of an API server: it signs media upload URLs (`wasim_model::sign`). It never
//! sees a media byte.

use crate::dist::Sampler;
use crate::infra::Fifo;
use crate::metrics::NodeReport;
use crate::msg::{Envelope, Msg};
use crate::node::{Ctx, Process, Shared};
use wasim_model::Time;

pub(crate) struct ApiNode {
    fifo: Fifo,
    service: Sampler,
    secret: u64,
    signed: u64,
}

impl ApiNode {
    pub fn new(shared: &Shared) -> ApiNode {
        let m = &shared.scenario.media;
        let (fifo, service) = super::queue(shared, crate::topology::NodeKind::Api, m.api_workers, &m.presign_us);
        ApiNode { fifo, service, secret: super::object_store::signing_secret(shared), signed: 0 }
    }
}

impl Process for ApiNode {
    fn on_message(&mut self, env: &Envelope, ctx: &mut Ctx) {
        let Msg::Presign { key, token } = env.msg else { unreachable!("the API tier got {:?}", env.msg) };
        let done = self.fifo.serve(env.at, self.service.sample_us(&mut ctx.rng));
        let signature = wasim_model::sign(self.secret, key);
        ctx.send(env.from, done, Msg::Presigned { key, token, signature });
        ctx.counters.media_presigns += 1;
        self.signed += 1;
    }

    fn on_tick(&mut self, _now: Time, _ctx: &mut Ctx) {}

    fn queue(&self) -> Option<&Fifo> {
        Some(&self.fifo)
    }

    fn finish(&mut self, report: &mut NodeReport) {
        self.fifo.report_into(report);
        report.gauge_end = self.signed;
    }
}
