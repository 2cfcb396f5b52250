//! Media: the card's upload protocol (pre-signed URL, direct upload, reference in the
//! message, CDN download), as the four state machines that run it.
//!
//! - `MediaClient`, on the device: encrypt, ask the API tier for a pre-signed upload URL,
//!   PUT the bytes straight to the object store, and only then send the message, which
//!   carries the reference and a thumbnail through the chat servers; a recipient device
//!   that shows such a message downloads it from a CDN edge. Failed steps are retried with
//!   backoff; a send whose upload keeps failing fails visibly, and never goes without it.
//! - `sign`: the API tier's signature, which the store checks (an unsigned PUT is refused).
//! - `ObjectStore`: objects by key, their ingest bandwidth a shared resource.
//! - `CdnEdge`: an edge cache that coalesces misses into one origin fetch.
//!
//! A media message's reference is its client id: the object is named after the sender
//! and the client sequence number of its message, and the sequence number carries the
//! media kind in its top bits (`MediaKind::tag_seq`). So every store, queue and log that
//! carries a message carries its reference, at no byte more.

use crate::client::Backoff;
use crate::{ClientMsgId, DeviceKey, Recipient, Time};
use rand::Rng;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::time::Duration;

/// The bytes of a WebSocket frame's header and fields (the card: "~200 byte WS frames").
pub const FRAME_HEADER_BYTES: u32 = 200;

/// The largest frame a chat server carries by design: a header and the largest thumbnail.
/// A frame above it carries media bytes (invariant 9).
pub const FRAME_BYTES_MAX: u32 = 16 * 1024;

/// The bits of a client sequence number below the media kind: a device numbers its sends
/// below 2^29.
pub const CLIENT_SEQ_BITS: u32 = 29;

/// What a message's media is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MediaKind {
    Image = 0,
    Video = 1,
    Audio = 2,
    Document = 3,
}

impl MediaKind {
    pub const ALL: [MediaKind; 4] = [MediaKind::Image, MediaKind::Video, MediaKind::Audio, MediaKind::Document];

    /// The kind's name in scenarios and reports.
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
        }
    }

    /// The inline thumbnail a message of this kind carries through the chat servers: a
    /// small JPEG for an image or a video's first frame, a page preview for a document, a
    /// waveform for audio.
    pub fn thumbnail_bytes(self) -> u32 {
        match self {
            MediaKind::Image | MediaKind::Video => 6 * 1024,
            MediaKind::Document => 3 * 1024,
            MediaKind::Audio => 64,
        }
    }

    /// The client sequence number `seq` of a message carrying media of this kind.
    pub fn tag_seq(self, seq: u32) -> u32 {
        assert!(seq < 1 << CLIENT_SEQ_BITS, "client sequence {seq} beyond the media tag");
        seq | ((self as u32 + 1) << CLIENT_SEQ_BITS)
    }

    /// The media kind a client sequence number carries, if any (devices number their sends
    /// below 2^29 and tag them with `tag_seq`; the top bits of any other number name no kind).
    #[inline]
    pub fn of_seq(seq: u32) -> Option<MediaKind> {
        match seq >> CLIENT_SEQ_BITS {
            1 => Some(MediaKind::Image),
            2 => Some(MediaKind::Video),
            3 => Some(MediaKind::Audio),
            4 => Some(MediaKind::Document),
            _ => None,
        }
    }
}

const _: () = assert!((MediaKind::Document as u32 + 1) < 1 << (32 - CLIENT_SEQ_BITS));

/// The name of a media object: the client id of the message that references it
/// (`ClientMsgId::key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MediaKey(pub u64);

impl MediaKey {
    pub fn of(id: ClientMsgId) -> MediaKey {
        MediaKey(id.key())
    }

    /// The message's client id.
    pub fn client_id(self) -> ClientMsgId {
        ClientMsgId { sender: crate::UserId((self.0 >> 32) as u32), seq: self.0 as u32 }
    }

    pub fn kind(self) -> MediaKind {
        MediaKind::of_seq(self.0 as u32).expect("a media key names a media message")
    }
}

impl std::fmt::Display for MediaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.client_id();
        write!(f, "media/{}/{}", id.sender.0, id.seq & ((1 << CLIENT_SEQ_BITS) - 1))
    }
}

/// The API tier's signature of an upload URL for `key`, which the object store checks
/// (both hold `secret`): a keyed hash, as an S3 pre-signed URL's HMAC.
pub fn sign(secret: u64, key: MediaKey) -> u32 {
    let mut z = secret ^ key.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 32) as u32
}

/// Time to move `bytes` at `bytes_per_s`.
pub fn transfer_time(bytes: u64, bytes_per_s: u64) -> Duration {
    Duration::from_nanos((u128::from(bytes) * 1_000_000_000 / u128::from(bytes_per_s.max(1))) as u64)
}

/// A client's media settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaClientConfig {
    /// Between failed attempts (exponential, full jitter).
    pub backoff: Backoff,
    /// Upload attempts (presign and PUT) before the send fails visibly; download attempts
    /// before the message shows "tap to retry".
    pub attempts_max: u32,
    /// How fast the device encrypts (AES-256-CBC with HMAC, before upload).
    pub encrypt_bytes_per_s: u64,
    /// How long the device waits for an answer beyond the transfer's own time.
    pub timeout: Duration,
}

/// An upload's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Encrypting,
    Presigning,
    Uploading,
    /// Waiting out the backoff after a failed attempt.
    Backoff,
}

/// A media send from tap to message.
#[derive(Clone, Copy, Debug)]
struct Upload {
    /// The sending device's index in its process.
    index: u32,
    to: Recipient,
    bytes: u32,
    uplink_bytes_per_s: u32,
    tapped_at: Time,
    /// Failed attempts so far.
    failures: u32,
    step: Step,
    /// Names the current step's timer and requests, so a late answer or timer of an
    /// earlier one is told apart.
    token: u32,
}

/// A download a device makes of a message it shows.
#[derive(Clone, Copy, Debug)]
struct Download {
    downlink_bytes_per_s: u32,
    failures: u32,
    /// A request is out (else: waiting out the backoff).
    asking: bool,
    token: u32,
    /// When the device showed the message.
    shown_at: Time,
    live: bool,
}

/// What drives a device's media: the user, the network's answers, its own timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaInput {
    /// The user sends media of `bytes` to `to` from the device at `index`, under the client
    /// sequence number `seq` (tagged with the kind) the device gave it.
    Tap { index: u32, user: crate::UserId, to: Recipient, seq: u32, bytes: u32, uplink_bytes_per_s: u32 },
    /// A timer asked for is due.
    Due { key: MediaKey, device: Option<DeviceKey>, token: u32 },
    /// The API tier's pre-signed URL.
    Presigned { key: MediaKey, token: u32, signature: u32 },
    /// The object store has the object (200 OK to the PUT).
    Uploaded { key: MediaKey, token: u32 },
    /// The API tier or the store answered an error (503, 403).
    UploadRefused { key: MediaKey, token: u32 },
    /// A device shows a message that references `key`: it downloads it. `live`: shown as
    /// it came, to a device online when it was sent (carried to `Viewable`, for latency).
    Shown { device: DeviceKey, key: MediaKey, downlink_bytes_per_s: u32, live: bool },
    /// The CDN edge's answer: the object's first byte (`None`: an error).
    Served { device: DeviceKey, key: MediaKey, token: u32, object: Option<ObjectMeta> },
}

/// What a device's media asks of its environment, or reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaOutput {
    /// Call back with `Due` at `at`.
    WakeAt { key: MediaKey, device: Option<DeviceKey>, token: u32, at: Time },
    /// Ask the API tier for an upload URL.
    Presign { key: MediaKey, token: u32 },
    /// PUT the encrypted bytes to the object store; the device's uplink has sent them all
    /// at `sent_by`.
    Put { key: MediaKey, token: u32, bytes: u32, signature: u32, tapped_at: Time, sent_by: Time },
    /// The upload is complete: send the message (client sequence `seq`) from the device at
    /// `index`.
    Send { index: u32, to: Recipient, seq: u32, tapped_at: Time },
    /// The upload failed `attempts_max` times: the send fails visibly (the user sees "not
    /// sent, tap to retry"); no message references it.
    SendFailed { index: u32, key: MediaKey, tapped_at: Time },
    /// The planted chat-server relay: the device puts the media bytes on its WebSocket.
    Inline { index: u32, key: MediaKey, bytes: u32 },
    /// GET the object from the device's CDN edge.
    Get { device: DeviceKey, key: MediaKey, token: u32 },
    /// The media is viewable on `device` at `at` (its last byte arrived); the user tapped
    /// send at `tapped_at`, the device showed the message at `shown_at`.
    Viewable { device: DeviceKey, key: MediaKey, at: Time, tapped_at: Time, shown_at: Time, bytes: u32, live: bool },
    /// The download failed `attempts_max` times: the message shows "tap to retry".
    DownloadFailed { device: DeviceKey, key: MediaKey },
}

/// The media of one process's devices: uploads and downloads in flight.
#[derive(Debug)]
pub struct MediaClient {
    config: MediaClientConfig,
    uploads: FxHashMap<MediaKey, Upload>,
    downloads: FxHashMap<(DeviceKey, MediaKey), Download>,
    next_token: u32,
}

impl MediaClient {
    pub fn new(config: MediaClientConfig) -> MediaClient {
        MediaClient { config, uploads: FxHashMap::default(), downloads: FxHashMap::default(), next_token: 0 }
    }

    /// Uploads in flight (tapped, message not sent yet).
    pub fn uploads_in_flight(&self) -> usize {
        self.uploads.len()
    }

    fn token(&mut self) -> u32 {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token
    }

    pub fn handle(&mut self, now: Time, input: MediaInput, rng: &mut impl Rng, out: &mut Vec<MediaOutput>) {
        match input {
            MediaInput::Tap { index, user, to, seq, bytes, uplink_bytes_per_s } => {
                let key = MediaKey::of(ClientMsgId { sender: user, seq });
                if crate::plant::planted(crate::plant::Plant::ChatServerRelaysMedia) {
                    out.push(MediaOutput::Inline { index, key, bytes });
                    out.push(MediaOutput::Send { index, to, seq, tapped_at: now });
                    return;
                }
                let token = self.token();
                let upload = Upload {
                    index,
                    to,
                    bytes,
                    uplink_bytes_per_s,
                    tapped_at: now,
                    failures: 0,
                    step: Step::Encrypting,
                    token,
                };
                self.uploads.insert(key, upload);
                let at = now + transfer_time(u64::from(bytes), self.config.encrypt_bytes_per_s);
                out.push(MediaOutput::WakeAt { key, device: None, token, at });
            }
            MediaInput::Due { key, device: None, token } => {
                let Some(u) = self.uploads.get(&key).copied() else { return };
                if u.token != token {
                    return;
                }
                match u.step {
                    // Encrypted, or the backoff is over: ask for a (fresh) URL.
                    Step::Encrypting | Step::Backoff => self.presign(now, key, out),
                    // No answer in time: the attempt failed.
                    Step::Presigning | Step::Uploading => self.upload_failed(now, key, rng, out),
                }
            }
            MediaInput::Presigned { key, token, signature } => {
                let Some(u) = self.uploads.get_mut(&key) else { return };
                if u.token != token || u.step != Step::Presigning {
                    return;
                }
                let sent_by = now + transfer_time(u64::from(u.bytes), u64::from(u.uplink_bytes_per_s));
                u.step = Step::Uploading;
                let (bytes, tapped_at) = (u.bytes, u.tapped_at);
                let token = self.token();
                self.uploads.get_mut(&key).expect("just seen").token = token;
                out.push(MediaOutput::Put { key, token, bytes, signature, tapped_at, sent_by });
                let at = sent_by + self.config.timeout;
                out.push(MediaOutput::WakeAt { key, device: None, token, at });
            }
            MediaInput::Uploaded { key, .. } => {
                // Any attempt's success will do (a late answer to one that timed out too):
                // the object is stored, so the message may reference it.
                let Some(u) = self.uploads.remove(&key) else { return };
                let seq = key.client_id().seq;
                out.push(MediaOutput::Send { index: u.index, to: u.to, seq, tapped_at: u.tapped_at });
            }
            MediaInput::UploadRefused { key, token } => {
                let Some(u) = self.uploads.get(&key) else { return };
                if u.token == token && matches!(u.step, Step::Presigning | Step::Uploading) {
                    self.upload_failed(now, key, rng, out);
                }
            }
            MediaInput::Shown { device, key, downlink_bytes_per_s, live } => {
                if self.downloads.contains_key(&(device, key)) {
                    return; // shown again (another copy): one download
                }
                let token = self.token();
                let d = Download { downlink_bytes_per_s, failures: 0, asking: true, token, shown_at: now, live };
                self.downloads.insert((device, key), d);
                self.get(now, device, key, token, out);
            }
            MediaInput::Due { key, device: Some(device), token } => {
                let Some(d) = self.downloads.get(&(device, key)).copied() else { return };
                if d.token != token {
                    return;
                }
                if d.asking {
                    self.download_failed(now, device, key, rng, out); // timed out
                } else {
                    let token = self.token();
                    let d = self.downloads.get_mut(&(device, key)).expect("just seen");
                    d.asking = true;
                    d.token = token;
                    self.get(now, device, key, token, out);
                }
            }
            MediaInput::Served { device, key, token, object } => {
                let Some(d) = self.downloads.get(&(device, key)).copied() else { return };
                if d.token != token || !d.asking {
                    return;
                }
                match object {
                    Some(o) => {
                        self.downloads.remove(&(device, key));
                        let at = now + transfer_time(u64::from(o.bytes), u64::from(d.downlink_bytes_per_s));
                        let (tapped_at, shown_at, bytes, live) = (o.tapped_at, d.shown_at, o.bytes, d.live);
                        out.push(MediaOutput::Viewable { device, key, at, tapped_at, shown_at, bytes, live });
                    }
                    None => self.download_failed(now, device, key, rng, out),
                }
            }
        }
    }

    fn presign(&mut self, now: Time, key: MediaKey, out: &mut Vec<MediaOutput>) {
        let token = self.token();
        let u = self.uploads.get_mut(&key).expect("an upload in flight");
        u.step = Step::Presigning;
        u.token = token;
        out.push(MediaOutput::Presign { key, token });
        out.push(MediaOutput::WakeAt { key, device: None, token, at: now + self.config.timeout });
    }

    fn upload_failed(&mut self, now: Time, key: MediaKey, rng: &mut impl Rng, out: &mut Vec<MediaOutput>) {
        let token = self.token();
        let u = self.uploads.get_mut(&key).expect("an upload in flight");
        u.failures += 1;
        if u.failures >= self.config.attempts_max {
            let (index, tapped_at) = (u.index, u.tapped_at);
            self.uploads.remove(&key);
            out.push(MediaOutput::SendFailed { index, key, tapped_at });
            return;
        }
        u.step = Step::Backoff;
        u.token = token;
        let at = now + self.config.backoff.delay(u.failures, rng);
        out.push(MediaOutput::WakeAt { key, device: None, token, at });
    }

    fn get(&mut self, now: Time, device: DeviceKey, key: MediaKey, token: u32, out: &mut Vec<MediaOutput>) {
        out.push(MediaOutput::Get { device, key, token });
        out.push(MediaOutput::WakeAt { key, device: Some(device), token, at: now + self.config.timeout });
    }

    fn download_failed(
        &mut self,
        now: Time,
        device: DeviceKey,
        key: MediaKey,
        rng: &mut impl Rng,
        out: &mut Vec<MediaOutput>,
    ) {
        let token = self.token();
        let d = self.downloads.get_mut(&(device, key)).expect("a download in flight");
        d.failures += 1;
        if d.failures >= self.config.attempts_max {
            self.downloads.remove(&(device, key));
            out.push(MediaOutput::DownloadFailed { device, key });
            return;
        }
        d.asking = false;
        d.token = token;
        let at = now + self.config.backoff.delay(d.failures, rng);
        out.push(MediaOutput::WakeAt { key, device: Some(device), token, at });
    }
}

/// What the store keeps of an object (its bytes are not modelled, their count is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub bytes: u32,
    /// When the user tapped send (the client's `x-amz-meta` header): send-to-viewable
    /// latency is measured from it.
    pub tapped_at: Time,
    /// When the last byte was stored: the object exists from then.
    pub stored_at: Time,
}

/// A PUT's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored at `at` (200 OK leaves then); the ingest took its bytes from `ingest.0` to
    /// `ingest.1`; `new`: the first copy of the object (a retried PUT of one the store has,
    /// or is taking, sends its bytes again but stores nothing more).
    Stored { at: Time, ingest: (Time, Time), new: bool },
    /// The signature does not match the key (403).
    Forbidden,
}

/// One object-store node: the objects whose keys hash to it, and its share of the store's
/// ingest bandwidth, which uploads share first come first served.
#[derive(Debug)]
pub struct ObjectStore {
    secret: u64,
    ingest_bytes_per_s: u64,
    ingest_busy_until: Time,
    /// Windows in which the ingest runs slower, by a factor: (from, until, factor), in
    /// time order and not overlapping.
    slow: Vec<(Time, Time, f64)>,
    objects: FxHashMap<MediaKey, ObjectMeta>,
    bytes_stored: u64,
}

impl ObjectStore {
    pub fn new(secret: u64, ingest_bytes_per_s: u64) -> ObjectStore {
        ObjectStore {
            secret,
            ingest_bytes_per_s,
            ingest_busy_until: Time::ZERO,
            slow: Vec::new(),
            objects: FxHashMap::default(),
            bytes_stored: 0,
        }
    }

    /// The ingest runs `factor` times slower from `from` until `until` (a degraded store:
    /// the bytes it takes in that window take longer, those before and after do not).
    /// Windows must come in time order and not overlap.
    pub fn slow_between(&mut self, from: Time, until: Time, factor: f64) {
        assert!(self.slow.last().is_none_or(|&(_, end, _)| end <= from), "slow windows in order, apart");
        self.slow.push((from, until, factor.max(1.0)));
    }

    /// When the ingest, free from `start`, has taken `bytes`: at its bandwidth, divided by
    /// a slow window's factor for the part of the transfer inside it.
    fn ingest_end(&self, start: Time, bytes: u64) -> Time {
        let rate = self.ingest_bytes_per_s.max(1) as f64;
        let (mut t, mut left) = (start, bytes as f64);
        for &(from, until, factor) in self.slow.iter().filter(|w| w.1 > start) {
            // At the full rate until the window, then slower within it.
            for (end, r) in [(from, rate), (until, rate / factor)] {
                if end <= t {
                    continue;
                }
                let can = r * end.since(t).as_secs_f64();
                if left <= can {
                    return t + Duration::from_secs_f64(left / r);
                }
                left -= can;
                t = end;
            }
        }
        t + Duration::from_secs_f64(left / rate)
    }

    /// A PUT of `bytes` served at `now`, its last byte arriving at `sent_by`: the bytes
    /// pass the store's ingest after those before them (`ingest_end`); the object is
    /// stored when both its last byte has arrived and the ingest has taken it.
    pub fn put(
        &mut self,
        now: Time,
        key: MediaKey,
        bytes: u32,
        signature: u32,
        tapped_at: Time,
        sent_by: Time,
    ) -> PutOutcome {
        if signature != sign(self.secret, key) {
            return PutOutcome::Forbidden;
        }
        // The bytes come through the ingest (again, for a retry: the client sends them again).
        let start = now.max(self.ingest_busy_until);
        self.ingest_busy_until = self.ingest_end(start, u64::from(bytes));
        let stored_at = self.ingest_busy_until.max(sent_by);
        let ingest = (start, self.ingest_busy_until);
        match self.objects.get_mut(&key) {
            // A retried PUT of what is stored, or being stored: the first copy stands.
            Some(o) => {
                o.stored_at = o.stored_at.min(stored_at);
                PutOutcome::Stored { at: stored_at, ingest, new: false }
            }
            None => {
                self.objects.insert(key, ObjectMeta { bytes, tapped_at, stored_at });
                self.bytes_stored += u64::from(bytes);
                PutOutcome::Stored { at: stored_at, ingest, new: true }
            }
        }
    }

    /// A GET at `now`: the object, if stored by then.
    pub fn get(&self, now: Time, key: MediaKey) -> Option<ObjectMeta> {
        self.objects.get(&key).filter(|o| o.stored_at <= now).copied()
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Bytes of the objects held.
    pub fn bytes_stored(&self) -> u64 {
        self.bytes_stored
    }
}

/// What an edge does with a GET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeGet {
    /// In its cache: served from the edge.
    Hit(ObjectMeta),
    /// Not cached: fetch it from the origin (the object store).
    FetchOrigin,
    /// A fetch of it is under way: the request waits for it.
    Joined,
}

/// One CDN edge: its cache of objects (at most `capacity_bytes`, the oldest evicted
/// first) and the requests waiting for an origin fetch. An object's hit ratio comes from its
/// popularity: the first request at an edge misses, the others (a group's members, a user's
/// other device) are served without a fetch of their own.
#[derive(Debug)]
pub struct CdnEdge {
    cached: FxHashMap<MediaKey, ObjectMeta>,
    /// Cached keys, oldest first, for eviction.
    order: std::collections::VecDeque<MediaKey>,
    cached_bytes: u64,
    capacity_bytes: u64,
    waiting: FxHashMap<MediaKey, SmallVec<[(DeviceKey, u32); 2]>>,
    /// Lost (a fault): nothing is cached, every request goes to the origin.
    lost: bool,
}

impl CdnEdge {
    /// An empty edge that caches at most `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> CdnEdge {
        CdnEdge {
            cached: FxHashMap::default(),
            order: std::collections::VecDeque::new(),
            cached_bytes: 0,
            capacity_bytes,
            waiting: FxHashMap::default(),
            lost: false,
        }
    }

    /// A GET from `device` (request `token`).
    pub fn get(&mut self, key: MediaKey, device: DeviceKey, token: u32) -> EdgeGet {
        if let Some(&o) = self.cached.get(&key) {
            return EdgeGet::Hit(o);
        }
        match self.waiting.get_mut(&key) {
            Some(w) => {
                w.push((device, token));
                EdgeGet::Joined
            }
            None => {
                self.waiting.insert(key, smallvec::smallvec![(device, token)]);
                EdgeGet::FetchOrigin
            }
        }
    }

    /// The origin's answer for `key` (`None`: an error): the requests that waited for it,
    /// in the order they came. The object is cached unless the edge is lost.
    pub fn origin_answered(&mut self, key: MediaKey, object: Option<ObjectMeta>) -> SmallVec<[(DeviceKey, u32); 2]> {
        if let (Some(o), false) = (object, self.lost) {
            if u64::from(o.bytes) <= self.capacity_bytes && self.cached.insert(key, o).is_none() {
                self.order.push_back(key);
                self.cached_bytes += u64::from(o.bytes);
                while self.cached_bytes > self.capacity_bytes {
                    let oldest = self.order.pop_front().expect("cached bytes are of cached keys");
                    let gone = self.cached.remove(&oldest).expect("the order holds cached keys");
                    self.cached_bytes -= u64::from(gone.bytes);
                }
            }
        }
        self.waiting.remove(&key).unwrap_or_default()
    }

    /// The edge is lost (its cache with it) or back (cold). Requests waiting on an origin
    /// fetch still get their answer.
    pub fn set_lost(&mut self, lost: bool) {
        if lost {
            self.cached = FxHashMap::default();
            self.order = std::collections::VecDeque::new();
            self.cached_bytes = 0;
        }
        self.lost = lost;
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Objects cached.
    pub fn cached(&self) -> usize {
        self.cached.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserId;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn config() -> MediaClientConfig {
        MediaClientConfig {
            backoff: Backoff { base: Duration::from_millis(500), cap: Duration::from_secs(8) },
            attempts_max: 3,
            encrypt_bytes_per_s: 100_000_000,
            timeout: Duration::from_secs(10),
        }
    }

    fn tap(seq: u32) -> MediaInput {
        MediaInput::Tap {
            index: 4,
            user: UserId(7),
            to: Recipient::User(UserId(8)),
            seq: MediaKind::Image.tag_seq(seq),
            bytes: 1_000_000,
            uplink_bytes_per_s: 1_000_000,
        }
    }

    #[test]
    fn the_kind_rides_on_the_client_sequence() {
        for kind in MediaKind::ALL {
            let seq = kind.tag_seq(12_345);
            assert_eq!(MediaKind::of_seq(seq), Some(kind));
            assert_eq!(seq & ((1 << CLIENT_SEQ_BITS) - 1), 12_345);
        }
        assert_eq!(MediaKind::of_seq(12_345), None);
        let key = MediaKey::of(ClientMsgId { sender: UserId(3), seq: MediaKind::Video.tag_seq(9) });
        assert_eq!(key.kind(), MediaKind::Video);
        assert_eq!(key.to_string(), "media/3/9");
    }

    #[test]
    fn the_message_goes_only_after_the_upload() {
        let mut c = MediaClient::new(config());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut out = Vec::new();
        c.handle(Time::ZERO, tap(1), &mut rng, &mut out);
        let [MediaOutput::WakeAt { key, token, at, .. }] = out[..] else { panic!("{out:?}") };
        assert_eq!(at, Time::from_ms(10), "1 MB at 100 MB/s to encrypt");
        out.clear();
        c.handle(at, MediaInput::Due { key, device: None, token }, &mut rng, &mut out);
        let MediaOutput::Presign { token, .. } = out[0] else { panic!("{out:?}") };
        out.clear();
        c.handle(Time::from_ms(20), MediaInput::Presigned { key, token, signature: 5 }, &mut rng, &mut out);
        let MediaOutput::Put { sent_by, token, .. } = out[0] else { panic!("{out:?}") };
        assert_eq!(sent_by, Time::from_ms(1_020), "1 MB at 1 MB/s");
        assert!(out.iter().all(|o| !matches!(o, MediaOutput::Send { .. })), "no message before the upload");
        out.clear();
        c.handle(Time::from_ms(1_100), MediaInput::Uploaded { key, token }, &mut rng, &mut out);
        assert!(matches!(out[..], [MediaOutput::Send { index: 4, .. }]), "{out:?}");
        assert_eq!(c.uploads_in_flight(), 0);
    }

    #[test]
    fn a_refused_upload_is_retried_then_fails_visibly() {
        let mut c = MediaClient::new(config());
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut out = Vec::new();
        c.handle(Time::ZERO, tap(1), &mut rng, &mut out);
        let mut now = Time::ZERO;
        let mut presigns = 0;
        for _ in 0..20 {
            let o = out.pop().expect("something to do");
            out.clear();
            match o {
                MediaOutput::WakeAt { key, token, at, device } => {
                    now = at;
                    c.handle(at, MediaInput::Due { key, device, token }, &mut rng, &mut out);
                }
                MediaOutput::Presign { key, token } => {
                    presigns += 1;
                    c.handle(now, MediaInput::UploadRefused { key, token }, &mut rng, &mut out);
                }
                MediaOutput::SendFailed { .. } => break,
                other => panic!("{other:?}"),
            }
            // The wake for the timeout comes after the request: answer the request first.
            if let Some(i) = out.iter().position(|o| matches!(o, MediaOutput::Presign { .. })) {
                let p = out.remove(i);
                out.push(p);
            }
        }
        assert_eq!(presigns, 3, "three attempts");
        assert_eq!(c.uploads_in_flight(), 0);
    }

    #[test]
    fn a_late_answer_to_an_old_attempt_is_not_taken_for_the_new_one() {
        let mut c = MediaClient::new(config());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut out = Vec::new();
        c.handle(Time::ZERO, tap(1), &mut rng, &mut out);
        let MediaOutput::WakeAt { key, token, at, .. } = out[0] else { panic!() };
        out.clear();
        c.handle(at, MediaInput::Due { key, device: None, token }, &mut rng, &mut out);
        let MediaOutput::Presign { token: first, .. } = out[0] else { panic!() };
        out.clear();
        // Timed out: backoff, then a second presign.
        c.handle(at + Duration::from_secs(10), MediaInput::Due { key, device: None, token: first }, &mut rng, &mut out);
        let MediaOutput::WakeAt { token, at, .. } = out[0] else { panic!("{out:?}") };
        out.clear();
        c.handle(at, MediaInput::Due { key, device: None, token }, &mut rng, &mut out);
        let MediaOutput::Presign { token: second, .. } = out[0] else { panic!("{out:?}") };
        out.clear();
        c.handle(at, MediaInput::Presigned { key, token: first, signature: 1 }, &mut rng, &mut out);
        assert!(out.is_empty(), "the first attempt's URL comes too late: {out:?}");
        c.handle(at, MediaInput::Presigned { key, token: second, signature: 1 }, &mut rng, &mut out);
        assert!(matches!(out[0], MediaOutput::Put { .. }));
    }

    #[test]
    fn the_store_refuses_an_unsigned_put_and_shares_its_ingest() {
        let mut s = ObjectStore::new(42, 1_000_000);
        let key = |n| MediaKey::of(ClientMsgId { sender: UserId(1), seq: MediaKind::Image.tag_seq(n) });
        assert_eq!(s.put(Time::ZERO, key(1), 10, 0, Time::ZERO, Time::ZERO), PutOutcome::Forbidden);
        let t = Time::ZERO;
        // Two 1 MB uploads at once through 1 MB/s: the second waits for the first.
        let stored = |o: PutOutcome| match o {
            PutOutcome::Stored { at, .. } => at,
            PutOutcome::Forbidden => panic!("forbidden"),
        };
        assert_eq!(
            s.put(t, key(1), 1_000_000, sign(42, key(1)), t, t),
            PutOutcome::Stored { at: Time::from_secs(1), ingest: (t, Time::from_secs(1)), new: true }
        );
        assert_eq!(stored(s.put(t, key(2), 1_000_000, sign(42, key(2)), t, t)), Time::from_secs(2));
        assert_eq!(s.get(Time::from_ms(1_500), key(2)), None, "not stored yet");
        assert!(s.get(Time::from_secs(2), key(2)).is_some());
        // A slow uplink bounds it too.
        let late = Time::from_secs(10);
        assert_eq!(stored(s.put(Time::from_secs(3), key(3), 1_000_000, sign(42, key(3)), t, late)), late);
        // Slowed 4x from 20.5 s to 21 s: 0.5 MB at the full rate, 0.125 MB in the slow half
        // second, the last 0.375 MB at the full rate again.
        s.slow_between(Time::from_ms(20_500), Time::from_secs(21), 4.0);
        let at = stored(s.put(Time::from_secs(20), key(4), 1_000_000, sign(42, key(4)), t, t));
        assert_eq!(at, Time::from_ms(21_375));
        // Inside a window that ends before the bytes do, and after every window.
        assert_eq!(stored(s.put(Time::from_secs(25), key(5), 1_000_000, sign(42, key(5)), t, t)), Time::from_secs(26));
        // A retry of a stored object sends its bytes through the ingest again, stores nothing.
        let again = s.put(Time::from_secs(30), key(4), 1_000_000, sign(42, key(4)), t, t);
        assert!(matches!(again, PutOutcome::Stored { new: false, .. }), "{again:?}");
        assert_eq!((s.len(), s.bytes_stored()), (5, 5_000_000));
    }

    #[test]
    fn an_edge_coalesces_misses_and_loses_its_cache() {
        let mut e = CdnEdge::new(1_000);
        let key = MediaKey::of(ClientMsgId { sender: UserId(1), seq: MediaKind::Image.tag_seq(1) });
        let o = ObjectMeta { bytes: 5, tapped_at: Time::ZERO, stored_at: Time::ZERO };
        assert_eq!(e.get(key, DeviceKey(1), 1), EdgeGet::FetchOrigin);
        assert_eq!(e.get(key, DeviceKey(2), 2), EdgeGet::Joined);
        assert_eq!(e.origin_answered(key, Some(o)).to_vec(), vec![(DeviceKey(1), 1), (DeviceKey(2), 2)]);
        assert_eq!(e.get(key, DeviceKey(3), 3), EdgeGet::Hit(o));
        e.set_lost(true);
        assert_eq!(e.get(key, DeviceKey(3), 4), EdgeGet::FetchOrigin, "a lost edge goes to the origin");
        e.origin_answered(key, Some(o));
        assert_eq!(e.cached(), 0, "a lost edge caches nothing");
        e.set_lost(false);
        assert_eq!(e.get(key, DeviceKey(3), 5), EdgeGet::FetchOrigin, "back, cold");
        // Full, it evicts the oldest first.
        let other = |n| MediaKey::of(ClientMsgId { sender: UserId(2), seq: MediaKind::Image.tag_seq(n) });
        let big = ObjectMeta { bytes: 400, ..o };
        for n in 0..3 {
            e.get(other(n), DeviceKey(1), 1);
            e.origin_answered(other(n), Some(big));
        }
        assert_eq!(e.cached(), 2, "1,000 bytes hold two of 400");
        assert_eq!(e.get(other(0), DeviceKey(1), 1), EdgeGet::FetchOrigin, "the oldest went");
        assert_eq!(e.get(other(2), DeviceKey(1), 1), EdgeGet::Hit(big));
    }
}
