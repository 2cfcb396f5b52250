//! The visit table: every kind of operation a tier serves, what it is, and how often the
//! scenario's workload makes it happen. The run counts what each process serves by the same
//! kinds, so the prediction printed before a run and the load measured after it are sums
//! over one list, and a disagreement points at the kind that causes it.

use crate::msg::Msg;
use crate::scenario::{DistConfig, Fault, Scenario, Z_99};
use crate::topology::NodeKind;
use serde::Serialize;
use wasim_model::{ChatServerConfig, Consistency, DeviceFrame, ServerId};

macro_rules! ops {
    ($($(#[$m:meta])* $op:ident => $tier:ident, $name:literal;)*) => {
        /// An operation a tier serves (one request through its queue).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
        pub enum OpKind { $($(#[$m])* $op,)* }

        impl OpKind {
            /// Every kind, in table order.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$op,)*];

            /// The tier that serves it.
            pub fn tier(self) -> NodeKind {
                match self { $(OpKind::$op => NodeKind::$tier,)* }
            }

            /// Its name in reports.
            pub fn name(self) -> &'static str {
                match self { $(OpKind::$op => $name,)* }
            }
        }
    };
}

ops! {
    /// A device opens a connection.
    Connect => ChatServer, "connect";
    /// A device closes its connection (the app closes).
    Disconnect => ChatServer, "disconnect";
    /// A device's keep-alive.
    Heartbeat => ChatServer, "heartbeat";
    /// A device sends a message.
    Send => ChatServer, "send";
    /// A device acknowledges a message (✓✓ grey).
    DeliveredAck => ChatServer, "delivered_ack";
    /// A device reports a read (✓✓ blue).
    ReadAck => ChatServer, "read_ack";
    /// A watcher opens a chat.
    Subscribe => ChatServer, "subscribe";
    /// A device says it heard a receipt (the server stops holding it).
    ReceiptsHeard => ChatServer, "receipts_heard";
    /// A Cassandra replica acknowledges a write.
    WriteAck => ChatServer, "write_ack";
    /// A Cassandra replica answers a read (catch-up).
    ReadReply => ChatServer, "read_reply";
    /// One part of an inbox fetch (an entry, a stored receipt, its end).
    FetchPart => ChatServer, "fetch_part";
    /// The session store placed a receipt.
    ReceiptRouted => ChatServer, "receipt_routed";
    /// A presence notification for a watcher.
    PresenceNotify => ChatServer, "presence_notify";
    /// Kafka acknowledges a publish.
    ProduceAck => ChatServer, "produce_ack";
    /// A message forwarded by a router (or another server) for a device here.
    Forward => ChatServer, "forward";
    /// A receipt relayed to the server of its sender.
    ReceiptRelay => ChatServer, "receipt_relay";
    /// The session store's answer to a reroute.
    Rerouted => ChatServer, "rerouted";
    /// The session store's answer to a refresh.
    SessionRefreshed => ChatServer, "session_refreshed";
    /// A device that moved asks its previous server to give it up.
    Takeover => ChatServer, "takeover";
    /// A push handed over to the device's new server, or the end of a handover.
    Handover => ChatServer, "handover";
    /// Set a session and read the inbox (a connect).
    SessionSet => Redis, "session_set";
    /// Mark a device offline (a close).
    SessionClear => Redis, "session_clear";
    /// Write a live connection's session again after a failover.
    SessionRefresh => Redis, "session_refresh";
    /// Route-or-inbox for a new message.
    RouteMessage => Redis, "route_message";
    /// Route-or-inbox for a message a server handed back.
    Reroute => Redis, "reroute";
    /// Route a receipt, or store it for an offline sender.
    RouteReceipt => Redis, "route_receipt";
    /// Forget stored receipts the phone heard (after a fetch handed them over).
    ForgetReceipts => Redis, "forget_receipts";
    /// `SETEX` on a connect, last-seen on a close.
    PresenceCommand => Presence, "presence_command";
    /// `EXPIRE` on a heartbeat (each command of a pipeline).
    PresenceRefresh => Presence, "presence_refresh";
    /// A watcher subscribes to a user's presence.
    PresenceSubscribe => Presence, "presence_subscribe";
    /// A replica write of a message row.
    Write => Cassandra, "write";
    /// A replica read of a message row (catch-up).
    Read => Cassandra, "read";
    /// A replica write of a 1:1 message row's status (a delivered or read ACK).
    StatusWrite => Cassandra, "status_write";
    /// A page of a chat's history read from one replica (opening the chat).
    ReadHistory => Cassandra, "read_history";
    /// An append to the `messages` topic.
    Produce => Kafka, "produce";
    /// A router commits its offsets.
    Commit => Kafka, "commit";
    /// A record delivered to a router.
    Record => Router, "record";
    /// The session store's answer to a route.
    Routed => Router, "routed";
    /// A group message pushed to one device here (a fan-out's forward of a batch of up to
    /// `FORWARD_BATCH_MAX` devices is served a push at a time).
    GroupPush => ChatServer, "group_push";
    /// A Cassandra replica completed a group message's receipts (✓✓ for its sender).
    GroupAggregate => ChatServer, "group_aggregate";
    /// Route-or-inbox for one member's copy of a group message (a pipeline of a route
    /// batch counts one per member).
    RouteMember => Redis, "route_member";
    /// A replica write of a group receipts table row (a member's delivered or read ACK).
    ReceiptRow => Cassandra, "receipt_row";
    /// A page of a group's membership read from one replica (`MEMBERS_PAGE` members).
    MembersPage => Cassandra, "members_page";
    /// A record of the group-message topic delivered to a fan-out.
    GroupRecord => Fanout, "group_record";
    /// A replica's answer to a membership page read.
    MembersRead => Fanout, "members_read";
    /// The session store's answer to a route batch.
    GroupRouted => Fanout, "group_routed";
    MediaBytes => ChatServer, "media_bytes";
    Presign => Api, "presign";
    Put => ObjectStore, "put";
    OriginGet => ObjectStore, "origin_get";
    CdnGet => Cdn, "cdn_get";
    OriginReply => Cdn, "origin_reply";
}

/// The number of kinds.
pub const OP_KINDS: usize = OpKind::ALL.len();

impl OpKind {
    /// The operation a message is for the process that serves it, and how many it counts
    /// (a pipeline of heartbeat refreshes is that many commands). `None` for messages to
    /// client processes, which serve nothing.
    pub(crate) fn of(msg: &Msg) -> Option<(OpKind, u64)> {
        use OpKind as K;
        let kind = match msg {
            Msg::Device { frame, .. } => match frame {
                DeviceFrame::Connect { .. } => K::Connect,
                DeviceFrame::Disconnect { .. } => K::Disconnect,
                DeviceFrame::Heartbeat { .. } => K::Heartbeat,
                DeviceFrame::Send { .. } => K::Send,
                DeviceFrame::DeliveredAck { .. } => K::DeliveredAck,
                DeviceFrame::ReadAck { .. } => K::ReadAck,
                DeviceFrame::Subscribe { .. } => K::Subscribe,
                DeviceFrame::ReceiptsHeard { .. } => K::ReceiptsHeard,
                DeviceFrame::MediaBytes { .. } => K::MediaBytes,
            },
            Msg::Presign { .. } => K::Presign,
            Msg::Put { .. } => K::Put,
            Msg::OriginGet { .. } => K::OriginGet,
            Msg::CdnGet { .. } => K::CdnGet,
            Msg::OriginReply { .. } => K::OriginReply,
            // Answers to devices.
            Msg::Presigned { .. } | Msg::PutDone { .. } | Msg::CdnServed { .. } => return None,
            Msg::ToDevice { .. } => return None,
            // A delete from a router's or fan-out's memory, served without a service time.
            Msg::Acked { .. } => return None,
            Msg::ReadMembers { .. } => K::MembersPage,
            Msg::MembersRead { .. } => K::MembersRead,
            Msg::RouteGroup { count, .. } => return Some((K::RouteMember, u64::from(*count))),
            Msg::GroupRouted { .. } => K::GroupRouted,
            Msg::GroupForward { count, .. } => return Some((K::GroupPush, u64::from(*count))),
            Msg::ReceiptRow { .. } => K::ReceiptRow,
            Msg::GroupAggregate { .. } => K::GroupAggregate,
            Msg::StatusWrite { .. } => K::StatusWrite,
            Msg::ReadHistory { .. } => K::ReadHistory,
            Msg::HistoryPage { .. } => return None,
            Msg::Write { .. } => K::Write,
            Msg::WriteAck { .. } => K::WriteAck,
            Msg::Read { .. } => K::Read,
            Msg::ReadReply { .. } => K::ReadReply,
            Msg::SessionSet { .. } => K::SessionSet,
            Msg::SessionClear { .. } => K::SessionClear,
            Msg::SessionRefresh { .. } => K::SessionRefresh,
            Msg::SessionRefreshed { .. } => K::SessionRefreshed,
            Msg::RouteMessage { .. } => K::RouteMessage,
            Msg::Routed { .. } => K::Routed,
            Msg::Reroute { .. } => K::Reroute,
            Msg::Rerouted { .. } => K::Rerouted,
            Msg::InboxEntry { .. } | Msg::StoredReceipt { .. } | Msg::InboxEnd { .. } => K::FetchPart,
            Msg::RouteReceipt { .. } => K::RouteReceipt,
            Msg::ForgetReceipts { .. } => K::ForgetReceipts,
            Msg::ReceiptRouted { .. } => K::ReceiptRouted,
            Msg::Presence(_) => K::PresenceCommand,
            Msg::PresenceHeartbeats { count, .. } => return Some((K::PresenceRefresh, u64::from(*count))),
            Msg::PresenceSubscribe { .. } => K::PresenceSubscribe,
            Msg::PresenceNotify { .. } => K::PresenceNotify,
            Msg::Produce { .. } => K::Produce,
            Msg::ProduceAck { .. } => K::ProduceAck,
            // The group topic's records go to the fan-outs, the messages topic's to the routers.
            Msg::Record { msg, .. } if msg.conversation.group_id().is_some() => K::GroupRecord,
            Msg::Record { .. } => K::Record,
            Msg::Commit { .. } => K::Commit,
            Msg::Forward { .. } => K::Forward,
            Msg::ReceiptRelay { .. } => K::ReceiptRelay,
            Msg::Takeover { .. } => K::Takeover,
            Msg::Handover { .. } | Msg::TakeoverDone { .. } => K::Handover,
        };
        Some((kind, 1))
    }
}

/// Operations counted by kind.
pub type OpCounts = [u64; OP_KINDS];

/// The workload's rates at a moment, per second (whole system).
#[derive(Clone, Copy, Debug)]
struct Rates([f64; OP_KINDS]);

impl Default for Rates {
    fn default() -> Self {
        Rates([0.0; OP_KINDS])
    }
}

impl Rates {
    fn add(&mut self, kind: OpKind, per_s: f64) {
        self.0[kind as usize] += per_s;
    }
}

/// The standard normal distribution function (Abramowitz and Stegun 7.1.26, error below
/// 1.5e-7), for log-normal delays.
fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    0.5 * (1.0 + if z < 0.0 { -erf } else { erf })
}

/// `P(delay <= x)` for a delay distribution in the unit its field states.
fn cdf(d: &DistConfig, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    match *d {
        DistConfig::Constant { value } => f64::from(u8::from(x >= value)),
        DistConfig::Uniform { min, max } => ((x - min) / (max - min).max(f64::MIN_POSITIVE)).clamp(0.0, 1.0),
        DistConfig::Exponential { mean } => 1.0 - (-x / mean).exp(),
        DistConfig::Lognormal { p50, p99 } => normal_cdf((x / p50).ln() / ((p99 / p50).ln() / Z_99)),
    }
}

/// Steps of the numeric average over the measuring window.
const STEPS: usize = 2_000;

/// How often routers commit each partition: once per the router's commit interval.
pub(crate) const COMMITS_PER_PARTITION_PER_S: f64 = 1.0 / crate::nodes::router::COMMIT_INTERVAL.as_secs_f64();

/// The predicted rate of every operation kind, per second, averaged over the measuring
/// window: the workload's rates as they ramp up (connects over the ramp, app closes from
/// its end, reads lagging the messages they read), times the visits each causes.
pub fn predicted_rates(s: &Scenario) -> [f64; OP_KINDS] {
    let (from, until) = (s.warmup_s as f64, (s.warmup_s + s.duration_s) as f64);
    let step = (until - from) / STEPS as f64;
    // A group message's route requests do not change with time: counted once.
    let route_batches = group_route_batches(s);
    let mut sum = Rates::default();
    for i in 0..STEPS {
        let r = rates_at(s, from + (i as f64 + 0.5) * step, route_batches);
        for (acc, v) in sum.0.iter_mut().zip(r.0) {
            *acc += v / STEPS as f64;
        }
    }
    sum.0
}

/// Who is connected at a moment, as shares of the users.
struct Online {
    /// Connected by the ramp and not cut off.
    reachable: f64,
    /// Of those, phones with the app closed.
    closed: f64,
    /// The share of the devices that want a connection that the fleet has room for (a
    /// short fleet refuses the rest, who retry).
    admitted: f64,
    /// Connected by the ramp (cut off or not).
    ramp: f64,
    /// Of the time a closing phone is away, the share its app is closed (the rest is the
    /// reopen's connect on its way, with the app open).
    app_closed_share: f64,
}

impl Online {
    /// Connected phones, as a share of the users.
    fn phone(&self) -> f64 {
        self.reachable * (1.0 - self.closed) * self.admitted
    }

    /// Phones with the app open, connected or not, as a share of the users: their users
    /// write messages, which wait in the app for a connection if there is none.
    fn open(&self) -> f64 {
        self.ramp * (1.0 - self.closed * self.app_closed_share)
    }

    /// Connected web clients, as a share of the users.
    fn web(&self, web_per_user: f64) -> f64 {
        self.reachable * web_per_user * self.admitted
    }
}

/// Who is connected at `t`.
fn online_at(s: &Scenario, t: f64) -> Online {
    let u = &s.users;
    let ramp = if u.connect_ramp_s == 0 { 1.0 } else { (t / u.connect_ramp_s as f64).clamp(0.0, 1.0) };
    // Closed apps: phones close at rate c once the ramp is over and are back after a mean
    // T (closed, then the connect's round trip over the client link before it may send):
    // the closed share rises to cT / (1 + cT) at rate c + 1/T (exact for exponential
    // closes and durations, the shipped shape).
    let c = s.workload.app_closes_per_hour / 3_600.0;
    let big_t = away_s(s);
    let since = (t - u.connect_ramp_s as f64).max(0.0);
    let closed = if c > 0.0 { c * big_t / (1.0 + c * big_t) * (1.0 - (-(c + 1.0 / big_t) * since).exp()) } else { 0.0 };
    let cut: f64 = s
        .faults
        .iter()
        .filter_map(|f| match *f {
            // Back when the network returns, after half the first reconnect window.
            Fault::CutNetwork { at_s, for_s, users } => {
                let back = (at_s + for_s) as f64 + u.reconnect_backoff_ms_base as f64 / 2_000.0;
                (t >= at_s as f64 && t < back).then_some(users as f64 / u.concurrent as f64)
            }
            _ => None,
        })
        .sum();
    let reachable = ramp * (1.0 - cut.min(1.0));
    let wanting = u.concurrent as f64 * reachable * (1.0 - closed + u.devices_per_user.web);
    let room = f64::from(s.fleet.chat_servers) * f64::from(s.fleet.connections_per_server_max);
    let admitted = if wanting > room { room / wanting } else { 1.0 };
    let app_closed_share = (s.workload.app_closed_ms.mean() / 1_000.0 / big_t).min(1.0);
    Online { reachable, closed, admitted, ramp, app_closed_share }
}

/// How long a closing phone is away, seen from its server, in seconds: the app's closed
/// time and a client round trip. Pushes in flight when the close is sent are lost (and
/// rerouted to the inbox when the close arrives), and the reopen's connect takes a client
/// latency to arrive before pushes reach the phone again.
fn away_s(s: &Scenario) -> f64 {
    s.workload.app_closed_ms.mean() / 1_000.0 + client_round_trip_s(s)
}

fn client_round_trip_s(s: &Scenario) -> f64 {
    2.0 * s.network.client_server_ms.mean() / 1_000.0
}

/// Phone reopens per user per second at `t`: the away share over the time away.
fn reopens_per_user(s: &Scenario, online: &Online) -> f64 {
    online.reachable * online.closed / away_s(s)
}

/// Inbox entries fetched per second at `t`: phones reopening, each with the messages that
/// came while it was away (its user's share of the sends for as long as it was away;
/// for exponential closed times with mean T, those reopening by `t` were closed about
/// T (1 - e^{-(t - ramp) / T}) on average, and away a client round trip longer). Sends
/// come from connected phones only.
fn inboxed_fetched(s: &Scenario, t: f64) -> f64 {
    inboxed_fetched_of(s, t, s.workload.messages_per_s as f64 * present_share(s))
}

/// The share of the registered users that come online in the run: recipients (contacts and
/// group members) are drawn from all of them, and a message to one never online waits in
/// the inbox past the run's end.
fn present_share(s: &Scenario) -> f64 {
    s.users.concurrent as f64 / s.registered_users() as f64
}

/// `inboxed_fetched` for copies arriving at `copies_per_s` over all users.
fn inboxed_fetched_of(s: &Scenario, t: f64, copies_per_s: f64) -> f64 {
    let online = online_at(s, t);
    let big_t = s.workload.app_closed_ms.mean() / 1_000.0;
    let since = (t - s.users.connect_ramp_s as f64).max(0.0);
    let away_for = big_t * (1.0 - (-since / big_t).exp()) + client_round_trip_s(s);
    reopens_per_user(s, &online) * copies_per_s * online.phone() * away_for
}

/// The route requests a group message of the scenario's mean size takes: each membership
/// page's members split by session shard, in batches of at most `ROUTE_BATCH_MAX`.
fn group_route_batches(s: &Scenario) -> f64 {
    use wasim_model::{MEMBERS_PAGE, ROUTE_BATCH_MAX};
    if s.groups.active == 0 {
        return 0.0;
    }
    let members = s.groups.members.mean().round().max(1.0) as u32;
    let (shards, cap) = (s.fleet.redis_session_shards, ROUTE_BATCH_MAX as u32);
    (0..members.div_ceil(MEMBERS_PAGE))
        .map(|p| batches((members - p * MEMBERS_PAGE).min(MEMBERS_PAGE), shards, cap))
        .sum()
}

/// Steps of the convolution in `shown_then_read`.
const READ_STEPS: usize = 64;

/// The reads at `t` of group copies sent at a steady rate from time 0, as a share of that
/// rate: the shown rate (`2u / R` of it at u < R, all of it after the ramp R) convolved with
/// the read delay (see `add_group_rates`).
fn shown_then_read(s: &Scenario, t: f64) -> f64 {
    let ramp = s.users.connect_ramp_s as f64;
    let shown = |u: f64| if u < ramp { 2.0 * u / ramp } else { 1.0 };
    let step = t / READ_STEPS as f64;
    // Read by t, of the copies shown at each step's bounds.
    let read_by: Vec<f64> =
        (0..=READ_STEPS).map(|k| cdf(&s.workload.read_delay_ms, (t - k as f64 * step) * 1e3)).collect();
    (0..READ_STEPS).map(|k| shown((k as f64 + 0.5) * step) * (read_by[k] - read_by[k + 1])).sum()
}

/// Batches sent when `n` items land at random, evenly, on `bins` bins and each bin's are
/// sent in batches of at most `cap`: `bins` x E[ceil(X / cap)] with X ~ Binomial(n, 1 /
/// bins) (summed over X's distribution, in logarithms: 2^-1024 is below a float).
fn batches(n: u32, bins: u32, cap: u32) -> f64 {
    if n == 0 || bins == 0 {
        return 0.0;
    }
    if bins == 1 {
        return f64::from(n.div_ceil(cap));
    }
    let p = 1.0 / f64::from(bins);
    let (ln_p, ln_q) = (p.ln(), (-p).ln_1p());
    let mut ln_choose = 0.0;
    let mut expected = 0.0;
    for k in 0..=n {
        if k > 0 {
            ln_choose += f64::from(n - k + 1).ln() - f64::from(k).ln();
        }
        let pmf = (ln_choose + f64::from(k) * ln_p + f64::from(n - k) * ln_q).exp();
        expected += pmf * f64::from(k.div_ceil(cap));
    }
    f64::from(bins) * expected
}

/// The chance at `t` that a push to a connected phone goes back to the inbox because a
/// fault loses its delivered ACKs (each with chance q): the phone closes before a re-push
/// is acknowledged. The server pushes again at the first heartbeat at least `ack_wait`
/// after the push, then every heartbeat H while the ACKs keep being lost; closes come at
/// rate c. The close beats the first re-push with chance P1 = 1 - e^{-c ack_wait}
/// (1 - e^{-cH}) / (cH), each later one with chance 1 - e^{-cH}, so the chance is
/// q [P1 + (1 - P1) q (1 - e^{-cH}) / (1 - q e^{-cH})].
fn ack_loss_to_inbox(s: &Scenario, t: f64) -> f64 {
    let c = s.workload.app_closes_per_hour / 3_600.0;
    if c <= 0.0 {
        return 0.0;
    }
    let h = s.users.heartbeat_interval_ms as f64 / 1e3;
    let ack_wait = ChatServerConfig::new(ServerId(0)).ack_wait.as_secs_f64();
    let q: f64 = s
        .faults
        .iter()
        .filter_map(|f| match *f {
            Fault::LoseDeliveredAcks { share, .. } if f.active_at(t) => Some(share),
            _ => None,
        })
        .sum::<f64>()
        .min(1.0);
    let stays = (-c * h).exp();
    let first = 1.0 - (-c * ack_wait).exp() * (1.0 - stays) / (c * h);
    let later = if q * stays < 1.0 { q * (1.0 - stays) / (1.0 - q * stays) } else { 1.0 };
    // Below 1 so that the chain of fetches below stays finite.
    (q * (first + (1.0 - first) * later)).min(0.95)
}

/// App closes per second at `t`: each connected phone at rate c from the end of the ramp.
fn closes_at(s: &Scenario, t: f64, online: &Online) -> f64 {
    let c = if t >= s.users.connect_ramp_s as f64 { s.workload.app_closes_per_hour / 3_600.0 } else { 0.0 };
    s.users.concurrent as f64 * online.phone() * c
}

/// The rates of every kind at `t`; a group message takes `route_batches` route requests.
fn rates_at(s: &Scenario, t: f64, route_batches: f64) -> Rates {
    use OpKind as K;
    let (users, w) = (s.users.concurrent as f64, s.users.devices_per_user.web);
    let online = online_at(s, t);
    let (phone, web) = (online.phone(), online.web(w));
    let servers = f64::from(s.fleet.chat_servers);
    let relayed = 1.0 - 1.0 / servers; // the recipient's server is not the sender's
    let rf = f64::from(s.fleet.cassandra_replication_factor);
    let quorum = f64::from(Consistency::Quorum.acks_required(s.fleet.cassandra_replication_factor as u8));
    let mut r = Rates::default();
    // Sends come from phones with the app open; those without a connection send theirs
    // when they have one again.
    let sends = s.workload.messages_per_s as f64 * online.open();
    for kind in [K::Send, K::ProduceAck, K::Produce, K::Record, K::RouteMessage, K::Routed] {
        r.add(kind, sends);
    }
    r.add(K::WriteAck, sends * rf);
    r.add(K::Write, sends * rf);
    // Each message reaches every device of its recipient: now if connected, else at its
    // next connect from the inbox; each device acknowledges it once.
    let present = present_share(s);
    r.add(K::Forward, sends * (phone + web) * present);
    let delivered = sends * (1.0 + w) * present;
    r.add(K::DeliveredAck, delivered);
    r.add(K::ReceiptRelay, delivered * relayed);
    // The recipient reads on the phone after the read delay, if the app is open then.
    let read_share = 1.0 - s.users.read_receipts_off_share;
    let shown_from = s.users.connect_ramp_s as f64 / 2.0;
    let reads = sends * read_share * phone * present * cdf(&s.workload.read_delay_ms, (t - shown_from) * 1e3);
    r.add(K::ReadAck, reads);
    r.add(K::ReceiptRelay, reads * relayed);
    // Each ACK becomes a receipt pushed to the sender's phone (now, or at its next fetch),
    // which says it heard it.
    r.add(K::ReceiptsHeard, delivered + reads);
    // Each ACK updates the message row's status on every replica.
    r.add(K::StatusWrite, (delivered + reads) * rf);
    // A receipt reaches the server that minted the message; if the sender's phone is not
    // connected there it goes through the session store (stored if the phone is away). A read receipt comes a read delay D
    // after the send. The sender's phone, connected at the send, then goes away at rate c
    // and back at rate 1/T: it is away with chance pi (1 - e^{-kx}) after x, with
    // pi = cT / (1 + cT) and k = c + 1/T; closes start at the ramp's end, so x =
    // min(D, a) with a the time since. Over an exponential D of mean m:
    // E[e^{-k min(D, a)}] = (1/m) / (k + 1/m) (1 - e^{-(k + 1/m) a}) + e^{-(k + 1/m) a}.
    // A delivered receipt comes at once (the sender is there) or when its recipient
    // fetches, after about an away time.
    let c_close = s.workload.app_closes_per_hour / 3_600.0;
    let big_t = away_s(s);
    let (pi, k) = (c_close * big_t / (1.0 + c_close * big_t), c_close + 1.0 / big_t);
    let m = (s.workload.read_delay_ms.mean() / 1e3).max(1e-9);
    let a = (t - s.users.connect_ramp_s as f64).max(0.0);
    let decay = (-(k + 1.0 / m) * a).exp();
    let still_there = (1.0 / m) / (k + 1.0 / m) * (1.0 - decay) + decay;
    let read_away = pi * (1.0 - still_there);
    // A phone that closed and came back since the send is on another server unless the
    // balancer sends it back to the same one (consistent hashing does; least connections
    // and random pick afresh): its receipts go through the session store too. It closed
    // at least once with chance 1 - E[e^{-c min(D, a)}], the same integral with k = c.
    let moved = if s.balancer.placement == crate::scenario::PlacementPolicy::ConsistentHash {
        0.0
    } else {
        let decay_c = (-(c_close + 1.0 / m) * a).exp();
        let none_closed = (1.0 / m) / (c_close + 1.0 / m) * (1.0 - decay_c) + decay_c;
        ((1.0 - none_closed) - read_away).max(0.0) * relayed
    };
    let away = reads * (read_away + moved) + inboxed_fetched(s, t) * online.closed;
    r.add(K::RouteReceipt, away);
    r.add(K::ReceiptRouted, away);
    // The store finds a phone that moved on its new server: relayed there.
    r.add(K::ReceiptRelay, reads * moved);
    // Heartbeats: every connected device once per interval.
    let beats = users * (phone + web) / (s.users.heartbeat_interval_ms as f64 / 1e3);
    r.add(K::Heartbeat, beats);
    r.add(K::PresenceRefresh, beats);
    // App closes and reopens: a close from each connected phone at rate c (from the end of
    // the ramp until sends stop), a reopen for each closed one after its closed time.
    let closes = closes_at(s, t, &online);
    let reopens = users * reopens_per_user(s, &online);
    for kind in [K::Disconnect, K::SessionClear] {
        r.add(kind, closes);
    }
    for kind in [K::Connect, K::SessionSet] {
        r.add(kind, reopens);
    }
    // A connect fetches its inbox: the end, the receipts stored for it, and an entry (read
    // from a quorum) for each message that waited. A push whose delivered ACK a fault lost
    // goes back to the inbox (with chance p) when the phone closes, and so does a fetched
    // entry pushed in the catch-up: each entry is fetched 1 / (1 - p) times. Pushes in
    // flight when a phone closes are rerouted too (already counted in the time away).
    let inboxed = inboxed_fetched(s, t);
    let p = ack_loss_to_inbox(s, t);
    let fetched = (inboxed + sends * phone * p) / (1.0 - p);
    let lost_acked = fetched - inboxed;
    let lost_in_flight = closes_at(s, t, &online) * sends / users * client_round_trip_s(s);
    // A phone that closes with sends whose ✓ has not come yet sends them again once it is
    // live on its next connection: the server takes each as a new send (persisted and
    // published again), and the router drops the repeat.
    let retried = lost_in_flight;
    for kind in [K::Send, K::ProduceAck, K::Produce, K::Record] {
        r.add(kind, retried);
    }
    r.add(K::WriteAck, retried * rf);
    r.add(K::Write, retried * rf);
    // Receipts pushed to a phone that closes before it heard them (in flight, a client
    // round trip's worth) go back through the session store, stored for its next fetch.
    let receipts_per_user = (delivered + reads) / users.max(1.0);
    let unheard = closes * receipts_per_user * client_round_trip_s(s);
    r.add(K::RouteReceipt, unheard);
    r.add(K::ReceiptRouted, unheard);
    r.add(K::FetchPart, reopens + fetched + away + unheard);
    // A fetch that hands stored receipts over tells the store to forget them once the
    // phone heard them: one command a fetch, so no more than the receipts nor the fetches.
    r.add(K::ForgetReceipts, (away + unheard).min(reopens));
    r.add(K::ReadReply, fetched * quorum);
    r.add(K::Read, fetched * quorum);
    // A cut device's server keeps pushing into the dead socket until it reconnects or the
    // silence timeout closes it: then every push it holds goes back through the session
    // store (spread here over the window).
    let rerouted: f64 = s
        .faults
        .iter()
        .filter_map(|f| match *f {
            Fault::CutNetwork { for_s, users, .. } => {
                let noticed_s = (for_s as f64).min(s.users.presence_ttl_ms as f64 / 1e3);
                let share = users as f64 / s.users.concurrent as f64;
                Some(s.workload.messages_per_s as f64 * share * (1.0 + w) * noticed_s / s.duration_s as f64)
            }
            _ => None,
        })
        .sum();
    // The same for the receipts it holds for such a phone: back through the session store
    // when the connection is closed (stored for the phone's next fetch); and each cut
    // phone reconnects once.
    let (receipts_held, cut_reconnects) = s.faults.iter().fold((0.0, 0.0), |(held, reconnects), f| match *f {
        Fault::CutNetwork { for_s, users: cut, .. } => {
            let noticed_s = (for_s as f64).min(s.users.presence_ttl_ms as f64 / 1e3);
            let duration_s = s.duration_s as f64;
            (held + cut as f64 * receipts_per_user * noticed_s / duration_s, reconnects + cut as f64 / duration_s)
        }
        _ => (held, reconnects),
    });
    r.add(K::RouteReceipt, receipts_held);
    r.add(K::ReceiptRouted, receipts_held);
    r.add(K::FetchPart, receipts_held);
    // A phone that had receipts stored forgets them after its reconnect's fetch.
    r.add(K::ForgetReceipts, receipts_held.min(cut_reconnects));
    r.add(K::Reroute, rerouted + lost_acked + lost_in_flight);
    r.add(K::Rerouted, rerouted + lost_acked + lost_in_flight);
    // Presence: a command per connect and per close; watchers (phones with the chat open)
    // subscribe on connect and stay subscribed, so every change of the user they watch is
    // sent to their server, connected or not. A user with a web client stays online when
    // the phone closes.
    let watchers = s.users.chat_open_share * online.reachable;
    r.add(K::PresenceCommand, reopens + closes);
    r.add(K::Subscribe, reopens * s.users.chat_open_share);
    r.add(K::PresenceSubscribe, reopens * s.users.chat_open_share);
    // Opening the chat reads its last page of history.
    r.add(K::ReadHistory, reopens * s.users.chat_open_share);
    r.add(K::PresenceNotify, (reopens + closes) * (1.0 - w) * watchers + reopens * s.users.chat_open_share);
    r.add(K::Commit, f64::from(s.fleet.kafka_partitions) * COMMITS_PER_PARTITION_PER_S);
    if s.groups.active > 0 {
        add_group_rates(s, t, &online, route_batches, &mut r);
    }
    if s.media.on() {
        add_media_rates(s, sends, &mut r);
    }
    r
}

/// The media operations: a share of the sends (1:1 `one_to_one` and the group sends in
/// `r`) carries media; each is signed and PUT once (a healthy store), and each device that
/// is delivered one downloads it from its user's edge. An edge misses an object's first
/// request (its origin fetch) and hits the rest: a 1:1 message's devices share one edge, a
/// group message's members spread over the edges (the expected edges reached of `E` by
/// `n` members is E (1 - (1 - 1/E)^n)).
fn add_media_rates(s: &Scenario, one_to_one: f64, r: &mut Rates) {
    use OpKind as K;
    let m = s.media.share;
    let taps = r.0[K::Send as usize] * m;
    r.add(K::Presign, taps);
    r.add(K::Put, taps);
    r.add(K::CdnGet, r.0[K::DeliveredAck as usize] * m);
    let group_sends = (r.0[K::Send as usize] - one_to_one).max(0.0);
    let edges = f64::from(s.media.cdn_edges);
    let members = if s.groups.active > 0 { s.groups.members.mean() - 1.0 } else { 0.0 };
    let reached = members * present_share(s);
    let group_edges = edges * (1.0 - (1.0 - 1.0 / edges).powf(reached));
    let misses = m * (one_to_one * present_share(s) + group_sends * group_edges);
    r.add(K::OriginGet, misses);
    r.add(K::OriginReply, misses);
}

/// The group messages' rates at `t` (`Online` at `t`). A group message is sent, stored
/// once and published once, to the group topic. Its fan-out reads the membership a page of
/// `MEMBERS_PAGE` at a time from one replica, asks each member's session shard to route
/// it (a request per shard per batch of `ROUTE_BATCH_MAX` of a page's members, each member
/// one route-or-inbox), then pushes it to each member's connected devices (batched per
/// chat server, each push served there). Each member's devices acknowledge it, and the
/// phone reads it, as a 1:1 recipient's do (a member offline fetches it from the inbox at
/// its next connect); each ACK is a row of the group receipts table on every replica, and
/// a replica holding every member's delivered row answers with the ✓✓ for the sender.
/// Groups are taken at their mean size; the sender's own copy is skipped.
///
/// Group messages are sent at their rate from the start, not as users connect: a member
/// connecting at c in the ramp R is shown the copies sent before at once, so copies are
/// shown at 2u/R of the rate at u < R (all shown by R), and the reads that lag them spill
/// past the ramp: the read rate at t is the shown rate convolved with the read delay.
/// The ✓✓ of a group completes at once only if every member's phone was there at the send;
/// the rest wait for members away (with a thousand members, one nearly always is, and the
/// slowest of them is back minutes later): only the first are counted.
fn add_group_rates(s: &Scenario, t: f64, online: &Online, route_batches: f64, r: &mut Rates) {
    use wasim_model::MEMBERS_PAGE;
    use OpKind as K;
    let w = s.users.devices_per_user.web;
    let (phone, web) = (online.phone(), online.web(w));
    let rf = f64::from(s.fleet.cassandra_replication_factor);
    let quorum = f64::from(Consistency::Quorum.acks_required(s.fleet.cassandra_replication_factor as u8));
    let members = s.groups.members.mean().round().max(1.0) as u32;
    let recipients = f64::from(members - 1);
    let sends = f64::from(s.groups.active) * s.groups.messages_per_group_per_s;
    // Members are drawn from the registered users; those never online get none of it.
    let reached = recipients * present_share(s);
    for kind in [K::Send, K::ProduceAck, K::Produce, K::GroupRecord] {
        r.add(kind, sends);
    }
    r.add(K::Write, sends * rf);
    r.add(K::WriteAck, sends * rf);
    let pages = members.div_ceil(MEMBERS_PAGE);
    r.add(K::MembersPage, sends * f64::from(pages));
    r.add(K::MembersRead, sends * f64::from(pages));
    r.add(K::RouteMember, sends * recipients);
    r.add(K::GroupRouted, sends * route_batches);
    r.add(K::GroupPush, sends * reached * (phone + web));
    let delivered = sends * reached * (1.0 + w);
    let read_share = 1.0 - s.users.read_receipts_off_share;
    let reads = sends * reached * read_share * phone * shown_then_read(s, t);
    r.add(K::DeliveredAck, delivered);
    r.add(K::ReadAck, reads);
    r.add(K::ReceiptRow, (delivered + reads) * rf);
    let there = present_share(s) * (online.phone() / online.ramp.max(f64::MIN_POSITIVE)).min(1.0);
    let all_there = there.powf(recipients);
    r.add(K::GroupAggregate, sends * rf * all_there);
    // A fan-out commits a partition at the first tick after records completed on it: once
    // a tick at most, so with completions at rate q a partition commits in a share
    // 1 - e^(-q x tick) of the ticks.
    let (partitions, tick_s) = (f64::from(s.group_partitions()), s.tick_us as f64 / 1e6);
    let commits = partitions / tick_s * (1.0 - (-sends / partitions * tick_s).exp());
    r.add(K::Commit, commits);
    let fetched = inboxed_fetched_of(s, t, sends * reached);
    r.add(K::FetchPart, fetched);
    r.add(K::Read, fetched * quorum);
    r.add(K::ReadReply, fetched * quorum);
}

/// The utilisation a tier is sized to when a prediction suggests a node count.
pub const TARGET_UTILISATION: f64 = 0.7;

/// A tier's predicted load.
#[derive(Clone, Debug, Serialize)]
pub struct TierLoad {
    pub tier: &'static str,
    pub nodes: u32,
    pub workers_per_node: u32,
    /// Operations per second, the whole tier.
    pub ops_per_s: f64,
    pub ops_per_s_per_node: f64,
    /// Mean service time of one operation, µs.
    pub service_us_mean: f64,
    /// Busy share of the tier's workers: ops x mean service / (nodes x workers).
    pub utilisation: f64,
    /// Nodes that would bring the tier to `TARGET_UTILISATION`.
    pub nodes_for_target: u32,
}

/// A node of `load`'s tier as an M/M/c queue (its predicted arrivals, mean service time and
/// workers); `None` when it is saturated or idle.
pub fn estimate_queue(load: &TierLoad) -> Option<wasim_model::Mmc> {
    if load.ops_per_s_per_node <= 0.0 {
        return None;
    }
    wasim_model::Mmc::new(load.ops_per_s_per_node, load.service_us_mean / 1e6, load.workers_per_node).ok()
}

/// Every serving tier's predicted load, from the visit table.
pub fn predicted_load(s: &Scenario) -> Vec<TierLoad> {
    predicted_load_from(s, &predicted_rates(s))
}

/// Every serving tier's predicted load, from rates `predicted_rates` gave.
pub fn predicted_load_from(s: &Scenario, rates: &[f64; OP_KINDS]) -> Vec<TierLoad> {
    let (f, w, st) = (&s.fleet, &s.workers, &s.service_us);
    let tiers = [
        (NodeKind::ChatServer, f.chat_servers, w.chat_server, st.chat_server.mean()),
        (NodeKind::Redis, f.redis_session_shards, w.redis, st.redis.mean()),
        (NodeKind::Presence, f.redis_presence_shards, w.redis, st.redis.mean()),
        (NodeKind::Cassandra, f.cassandra_nodes, w.cassandra, st.cassandra_write.mean()),
        (NodeKind::Kafka, f.kafka_brokers, w.kafka, st.kafka.mean()),
        (NodeKind::Router, f.routers, w.router, st.router.mean()),
        (NodeKind::Fanout, s.fanout_processes(), w.fanout, st.fanout.mean()),
        (NodeKind::Api, s.media_processes(NodeKind::Api), s.media.api_workers, s.media.presign_us.mean()),
        (
            NodeKind::ObjectStore,
            s.media_processes(NodeKind::ObjectStore),
            crate::nodes::STORE_WORKERS,
            s.media.object_store_us.mean(),
        ),
        (NodeKind::Cdn, s.media_processes(NodeKind::Cdn), crate::scenario::CDN_WORKERS, s.media.cdn_us.mean()),
    ];
    tiers
        .into_iter()
        // A run without groups has no fan-out.
        .filter(|&(_, nodes, _, _)| nodes > 0)
        .map(|(kind, nodes, workers, service_us_mean)| {
            let ops_per_s: f64 = OpKind::ALL.iter().filter(|k| k.tier() == kind).map(|&k| rates[k as usize]).sum();
            // Busy workers' worth of work, in nodes: what the tier's node count is sized by.
            let busy = wasim_model::utilisation(ops_per_s, service_us_mean / 1e6, workers);
            TierLoad {
                tier: kind.name(),
                nodes,
                workers_per_node: workers,
                ops_per_s,
                ops_per_s_per_node: ops_per_s / f64::from(nodes),
                service_us_mean,
                utilisation: busy / f64::from(nodes),
                nodes_for_target: (busy / TARGET_UTILISATION).ceil().max(1.0) as u32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_belongs_to_a_serving_tier_and_has_a_distinct_name() {
        let mut names: Vec<&str> = OpKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OP_KINDS);
        assert!(OpKind::ALL.iter().all(|k| k.tier() != NodeKind::ClientShard));
    }

    #[test]
    fn the_normal_cdf_matches_known_values() {
        for (z, p) in [(0.0, 0.5), (1.959_964, 0.975), (-Z_99, 0.01)] {
            assert!((normal_cdf(z) - p).abs() < 1e-6, "{z}: {}", normal_cdf(z));
        }
    }

    /// Phones only, nobody closes the app or watches, reads off (ends in `[fleet]`, for
    /// more fleet lines and sections).
    const QUIET: &str = "duration_s = 10\nwarmup_s = 2\n[users]\nconcurrent = 1000\nconnect_ramp_s = 1\ndevices_per_user = { phone = 1.0, web = 0.0 }\nread_receipts_off_share = 1.0\nchat_open_share = 0.0\n[workload]\nmessages_per_s = 100\napp_closes_per_hour = 0\n[fleet]\nchat_servers = 4\n";

    #[test]
    fn batches_follow_the_binomial_spread() {
        assert_eq!(batches(0, 4, 11), 0.0);
        assert_eq!(batches(23, 1, 11), 3.0, "one bin: ceil(23 / 11)");
        // Two items on two bins: both on one (1/2) or one each (1/2).
        assert!((batches(2, 2, 1) - 2.0).abs() < 1e-12, "a batch per item");
        assert!((batches(2, 2, 2) - 1.5).abs() < 1e-12, "one batch, or one in each bin");
        // A thousand items on a thousand bins: about e^-1 of the bins empty, the rest hold
        // few enough for one batch each.
        let b = batches(1_000, 1_000, 11);
        assert!((b - 1_000.0 * (1.0 - (-1.0f64).exp())).abs() < 1.0, "{b}");
    }

    #[test]
    fn a_quiet_group_scenario_predicts_its_fan_out_exactly() {
        // Everyone online from the start, nobody closes the app, reads off: each group
        // message reaches its 255 other members once.
        let text = format!("{QUIET}redis_session_shards = 1\n[groups]\nactive = 2\nmembers = {{ dist = \"constant\", value = 256 }}\nmessages_per_group_per_s = 1.0\n");
        let s = Scenario::parse(&text, std::path::Path::new("x"), "x").unwrap();
        let r = predicted_rates(&s);
        let at = |k: OpKind| r[k as usize];
        assert!((at(OpKind::RouteMember) - 510.0).abs() < 1e-9);
        assert!((at(OpKind::MembersPage) - 2.0).abs() < 1e-9, "one page a message");
        assert!((at(OpKind::GroupRouted) - 2.0 * 24.0).abs() < 1e-9, "ceil(256 / 11) batches on one shard");
        assert!((at(OpKind::GroupPush) - 510.0).abs() < 1e-9);
        assert!((at(OpKind::ReceiptRow) - 3.0 * 510.0).abs() < 1e-9, "a delivered row on each of 3 replicas");
        assert!((at(OpKind::Send) - 102.0).abs() < 1e-9, "1:1 and group sends");
    }

    #[test]
    fn a_quiet_scenario_predicts_the_send_path_exactly() {
        // Phones only, nobody closes the app or watches, reads off: every message visits
        // each tier a fixed number of times.
        let s = Scenario::parse(QUIET, std::path::Path::new("x"), "x").unwrap();
        let r = predicted_rates(&s);
        let at = |k: OpKind| r[k as usize];
        assert!((at(OpKind::Send) - 100.0).abs() < 1e-9);
        assert!((at(OpKind::Write) - 300.0).abs() < 1e-9, "RF 3");
        assert!((at(OpKind::ReceiptRelay) - 75.0).abs() < 1e-9, "3 of 4 receipts cross servers");
        assert!((at(OpKind::Heartbeat) - 1000.0 / 30.0).abs() < 1e-9);
        assert_eq!(at(OpKind::Connect), 0.0, "nobody reconnects");
    }
}
