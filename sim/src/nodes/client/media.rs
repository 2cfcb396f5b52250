//! A client shard's media plumbing: which sends carry media (drawn from the shard's media
//! stream), the network for the devices' `MediaClient` (the API tier, the object store,
//! the CDN edges), its timers, and what it measures. What a device does is the model's.

use super::ClientShard;
use crate::dist::draw_uncapped;
use crate::metrics::record_us;
use crate::msg::Msg;
use crate::node::{Ctx, Stream};
use crate::scenario::{DistConfig, MEDIA_KB_MAX};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;
use wasim_model::{
    Backoff, DeviceId, DeviceKey, MediaClient, MediaClientConfig, MediaInput, MediaKey, MediaKind, MediaOutput,
    Recipient, Time,
};

/// The slowest link a draw gives, in bytes per second (100 kbit/s: a device on a worse one
/// is offline for media).
const LINK_BYTES_PER_S_MIN: f64 = 12_500.0;

/// No device in a wake: an upload's.
const NO_DEVICE: u32 = u32::MAX;

pub(in crate::nodes) struct MediaSide {
    client: MediaClient,
    /// The workload's draws (which sends carry media, kinds, sizes, links).
    rng: ChaCha8Rng,
    /// The model's draws (backoff jitter).
    retries: ChaCha8Rng,
    share: f64,
    /// The kinds' shares, cumulative and normalised, in `MediaKind::ALL` order.
    kinds: [f64; 4],
    sizes_kb: [DistConfig; 4],
    uplink_mbps: DistConfig,
    downlink_mbps: DistConfig,
    /// Timers the devices' media asked for: (time, key, device or `NO_DEVICE`, token).
    wakes: BinaryHeap<Reverse<(Time, u64, u32, u32)>>,
    outs: Vec<MediaOutput>,
}

impl MediaSide {
    pub fn new(s: &crate::scenario::Scenario, ctx: &Ctx) -> Option<Box<MediaSide>> {
        let m = &s.media;
        if !m.on() {
            return None;
        }
        let shares = m.kinds.shares();
        let total: f64 = shares.iter().sum();
        let mut kinds = [0.0; 4];
        let mut sum = 0.0;
        for (k, w) in kinds.iter_mut().zip(shares) {
            sum += w / total;
            *k = sum;
        }
        // The last kind with a share closes the interval (no rounding leaves a gap after it).
        if let Some(last) = shares.iter().rposition(|&w| w > 0.0) {
            kinds[last..].fill(1.0);
        }
        let config = MediaClientConfig {
            backoff: Backoff {
                base: Duration::from_millis(m.retry_backoff_ms_base),
                cap: Duration::from_millis(m.retry_backoff_ms_max),
            },
            attempts_max: m.attempts_max,
            encrypt_bytes_per_s: (m.encrypt_mb_per_s * 1e6) as u64,
            timeout: Duration::from_millis(m.timeout_ms),
        };
        Some(Box::new(MediaSide {
            client: MediaClient::new(config),
            rng: ctx.stream(Stream::Media),
            retries: ctx.stream(Stream::MediaRetries),
            share: m.share,
            kinds,
            sizes_kb: MediaKind::ALL.map(|k| *m.size_kb(k)),
            uplink_mbps: m.uplink_mbps,
            downlink_mbps: m.downlink_mbps,
            wakes: BinaryHeap::new(),
            outs: Vec::new(),
        }))
    }

    /// Whether the next send carries media.
    pub fn draws_media(&mut self) -> bool {
        self.rng.random::<f64>() < self.share
    }

    fn draw_kind(&mut self) -> MediaKind {
        let x: f64 = self.rng.random();
        let i = self.kinds.iter().position(|&c| x < c).expect("the last share closes the interval at 1");
        MediaKind::ALL[i]
    }

    /// A link's speed in bytes per second.
    fn draw_link(&mut self, mbps: DistConfig) -> u32 {
        (draw_uncapped(&mbps, &mut self.rng) * 1e6 / 8.0).clamp(LINK_BYTES_PER_S_MIN, f64::from(u32::MAX)) as u32
    }

    /// Uploads still in flight (tapped, not sent nor failed).
    pub fn uploads_in_flight(&self) -> usize {
        self.client.uploads_in_flight()
    }
}

impl ClientShard {
    /// The user of the phone at `index` taps send on media for `to` at `t`: the upload
    /// begins, and the message goes once it is stored.
    pub(super) fn tap_media(&mut self, t: Time, index: usize, to: Recipient, ctx: &mut Ctx) {
        if !self.devices.app_open(index) {
            return; // a draw on a closed app is not a send
        }
        let m = self.media.as_mut().expect("media runs");
        let kind = m.draw_kind();
        let kb = draw_uncapped(&m.sizes_kb[kind as usize], &mut m.rng).clamp(1.0, MEDIA_KB_MAX as f64);
        let bytes = (kb * 1e3) as u32;
        let uplink = m.draw_link(m.uplink_mbps);
        let seq = kind.tag_seq(self.devices.next_seq(index));
        let user = self.layout().device(index).user;
        ctx.counters.media_taps += 1;
        let tap = MediaInput::Tap { index: index as u32, user, to, seq, bytes, uplink_bytes_per_s: uplink };
        self.media_input(t, tap, ctx);
    }

    /// A device shows a message: if it references media, the device downloads it (`live`:
    /// shown as it came to a device online at the send, for send-to-viewable latency).
    pub(super) fn media_shown(
        &mut self,
        t: Time,
        device: DeviceId,
        msg: &wasim_model::ChatMessage,
        live: bool,
        ctx: &mut Ctx,
    ) {
        let Some(m) = self.media.as_mut() else { return };
        if MediaKind::of_seq(msg.client_seq).is_none() {
            return;
        }
        let downlink = m.draw_link(m.downlink_mbps);
        let input = MediaInput::Shown {
            device: DeviceKey::of(device),
            key: MediaKey::of(msg.client_id()),
            downlink_bytes_per_s: downlink,
            live,
        };
        self.media_input(t, input, ctx);
    }

    /// An answer from the API tier, the object store or a CDN edge.
    pub(super) fn media_reply(&mut self, at: Time, msg: &Msg, ctx: &mut Ctx) {
        let (input, device) = match *msg {
            Msg::Presigned { key, token, signature } => {
                (MediaInput::Presigned { key, token, signature }, DeviceId::phone(key.client_id().sender))
            }
            Msg::PutDone { key, token, stored } => (
                if stored { MediaInput::Uploaded { key, token } } else { MediaInput::UploadRefused { key, token } },
                DeviceId::phone(key.client_id().sender),
            ),
            Msg::CdnServed { key, device, token, object } => {
                (MediaInput::Served { device, key, token, object }, device.device())
            }
            ref other => unreachable!("client shard got {other:?}"),
        };
        if self.cut(device, at) {
            return; // lost on the way: the device times out and tries again
        }
        self.media_input(at, input, ctx);
    }

    /// The media timers due by `now`.
    pub(super) fn tick_media(&mut self, now: Time, ctx: &mut Ctx) {
        loop {
            let Some(m) = self.media.as_mut() else { return };
            let Some(&Reverse((at, key, device, token))) = m.wakes.peek() else { return };
            if at > now {
                return;
            }
            m.wakes.pop();
            let device = (device != NO_DEVICE).then_some(DeviceKey(device));
            self.media_input(at, MediaInput::Due { key: MediaKey(key), device, token }, ctx);
        }
    }

    fn media_input(&mut self, t: Time, input: MediaInput, ctx: &mut Ctx) {
        let m = self.media.as_mut().expect("media runs");
        let mut outs = std::mem::take(&mut m.outs);
        m.client.handle(t, input, &mut m.retries, &mut outs);
        for out in outs.drain(..) {
            self.apply_media(t, out, ctx);
        }
        self.media.as_mut().expect("media runs").outs = outs;
    }

    fn apply_media(&mut self, t: Time, out: MediaOutput, ctx: &mut Ctx) {
        match out {
            MediaOutput::WakeAt { key, device, token, at } => {
                let m = self.media.as_mut().expect("media runs");
                m.wakes.push(Reverse((at, key.0, device.map_or(NO_DEVICE, |d| d.0), token)));
            }
            MediaOutput::Presign { key, token } => {
                if !self.cut(DeviceId::phone(key.client_id().sender), t) {
                    ctx.send(self.topo.api(key), t, Msg::Presign { key, token });
                }
            }
            MediaOutput::Put { key, token, bytes, signature, tapped_at, sent_by } => {
                ctx.counters.media_put_attempts += 1;
                if !self.cut(DeviceId::phone(key.client_id().sender), t) {
                    let put = Msg::Put { key, token, bytes, signature, tapped_at, started: t, sent_by };
                    ctx.send(self.topo.object_store(key), t, put);
                }
            }
            MediaOutput::Send { index, to, seq, tapped_at } => {
                ctx.counters.media_sends += 1;
                if self.measured(tapped_at) {
                    record_us(&mut self.latencies.media_upload, t.as_us() - tapped_at.as_us());
                }
                self.send_message(t, index as usize, to, Some(seq), ctx);
            }
            MediaOutput::SendFailed { .. } => ctx.counters.media_sends_failed += 1,
            MediaOutput::Inline { index, key, bytes } => {
                if let Some((server, frame)) = self.devices.media_bytes(index as usize, key, bytes) {
                    self.transmit(t, self.layout().device(index as usize), server, &frame, ctx);
                }
            }
            MediaOutput::Get { device, key, token } => {
                if !self.cut(device.device(), t) {
                    ctx.send(self.topo.cdn_edge(device.device().user), t, Msg::CdnGet { key, device, token });
                }
            }
            MediaOutput::Viewable { at, tapped_at, bytes, live, .. } => {
                ctx.counters.media_downloads += 1;
                ctx.counters.media_bytes_downloaded += u64::from(bytes);
                if live && self.measured(tapped_at) {
                    record_us(&mut self.latencies.media_send_to_viewable, at.as_us() - tapped_at.as_us());
                }
            }
            MediaOutput::DownloadFailed { .. } => ctx.counters.media_downloads_failed += 1,
        }
    }
}
