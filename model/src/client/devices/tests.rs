//! One transition per test, driven with explicit times.

use super::*;
use crate::{ConversationId, MessageId};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;
use DeviceInput as In;
use DeviceOutput as Out;

const PHONE: usize = 0;
const SERVER: ServerId = ServerId(3);
const SETTINGS: UserSettings = UserSettings { hide_last_seen: false, read_receipts: true };

struct Rig {
    devices: Devices,
    rng: ChaCha8Rng,
    out: Vec<DeviceOutput>,
}

impl Rig {
    /// Two users on one process, phone and web each.
    fn new() -> Rig {
        let layout = Layout::new(0, 1, 2, 2);
        let backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(8) };
        let config = DeviceConfig { backoff, servers: 8, balancer: crate::BalancerConfig::default() };
        Rig { devices: Devices::new(layout, config), rng: ChaCha8Rng::seed_from_u64(1), out: Vec::new() }
    }

    fn input(&mut self, ms: u64, index: usize, input: DeviceInput) -> Vec<DeviceOutput> {
        self.out.clear();
        self.devices.handle(Time::from_ms(ms), index, input, &mut self.rng, &mut self.out);
        self.out.clone()
    }

    fn frame(&mut self, ms: u64, index: usize, frame: ServerFrame) -> Vec<DeviceOutput> {
        self.frame_from(ms, index, SERVER, frame)
    }

    fn frame_from(&mut self, ms: u64, index: usize, from: ServerId, frame: ServerFrame) -> Vec<DeviceOutput> {
        self.out.clear();
        self.devices.on_frame(Time::from_ms(ms), index, from, &frame, &mut self.rng, &mut self.out);
        self.out.clone()
    }

    /// Open the app and have the connection accepted at `ms`.
    fn connect(&mut self, ms: u64, index: usize) {
        {
            self.devices.steer(SERVER, Time::ZERO);
            self.input(ms, index, In::AppOpen { settings: SETTINGS })
        };
        let epoch = self.epoch(index);
        self.frame(ms, index, ServerFrame::ConnectAccepted { server: SERVER, epoch });
    }

    fn epoch(&self, index: usize) -> u32 {
        self.devices.devices[index].epoch
    }
}

fn msg(id: u64, conversation: u64) -> ChatMessage {
    ChatMessage {
        id: MessageId(id),
        conversation: ConversationId(conversation),
        from: UserId(1),
        to: UserId(0),
        client_seq: 0,
        sent_at: Time::ZERO,
    }
}

fn phone() -> DeviceId {
    DeviceId::phone(UserId(0))
}

fn acks(out: &[DeviceOutput]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Out::Frame { frame: DeviceFrame::DeliveredAck { msg, .. }, .. } => Some(msg.id.0),
            _ => None,
        })
        .collect()
}

fn shown(out: &[DeviceOutput]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Out::Shown { msg, .. } => Some(msg.id.0),
            _ => None,
        })
        .collect()
}

#[test]
fn opening_the_app_connects_with_the_cursor_and_a_new_epoch() {
    let mut r = Rig::new();
    let out = {
        r.devices.steer(SERVER, Time::ZERO);
        r.input(0, PHONE, In::AppOpen { settings: SETTINGS })
    };
    let connect = DeviceFrame::Connect { epoch: 1, cursor: InboxPos(0), hide_last_seen: false };
    assert_eq!(out, vec![Out::Frame { device: phone(), server: SERVER, frame: connect }]);
    assert_eq!(r.devices.state(PHONE), DeviceState::Connecting);
    let out = r.frame(5, PHONE, ServerFrame::ConnectAccepted { server: SERVER, epoch: 1 });
    assert_eq!(out, vec![Out::Connected { device: phone(), server: SERVER }]);
    assert_eq!(r.devices.state(PHONE), DeviceState::CatchingUp);
    assert_eq!(r.devices.since(PHONE), Time::from_ms(5));
}

#[test]
fn arrivals_during_a_catch_up_are_held_unacknowledged_then_shown_in_id_order() {
    let mut r = Rig::new();
    r.connect(0, PHONE);
    let out = r.frame(1, PHONE, ServerFrame::Push { msg: msg(9, 1) });
    assert!(out.is_empty(), "held, not acknowledged: {out:?}");
    r.frame(2, PHONE, ServerFrame::Push { msg: msg(4, 1) });
    let out = r.frame(3, PHONE, ServerFrame::FetchDone { upto: InboxPos(7) });
    assert_eq!(shown(&out), vec![4, 9]);
    assert_eq!(acks(&out), vec![4, 9], "acknowledged once shown");
    assert_eq!(out.last(), Some(&Out::CaughtUp { device: phone(), since: Time::ZERO }));
    assert_eq!((r.devices.state(PHONE), r.devices.cursor(PHONE)), (DeviceState::Live, InboxPos(7)));
}

#[test]
fn closing_the_app_during_a_catch_up_drops_what_it_held_unacknowledged() {
    let mut r = Rig::new();
    r.connect(0, PHONE);
    r.frame(1, PHONE, ServerFrame::Push { msg: msg(9, 1) });
    let out = r.input(2, PHONE, In::AppClose);
    assert_eq!(
        out,
        vec![
            Out::Frame {
                device: phone(),
                server: SERVER,
                frame: DeviceFrame::Disconnect { epoch: 1, receipts_heard: 0 }
            },
            Out::CatchUpInterrupted { device: phone(), held: 1 },
        ]
    );
    assert!(acks(&out).is_empty(), "the server keeps it and hands it back to the inbox");
    assert_eq!((r.devices.state(PHONE), r.devices.cursor(PHONE)), (DeviceState::Closed, InboxPos(0)));
    let late = ServerFrame::FetchDone { upto: InboxPos(5) };
    assert_eq!(
        r.frame(3, PHONE, late),
        vec![Out::Unheard { device: phone(), frame: late }],
        "a late fetch end is ignored"
    );
    assert_eq!(r.devices.cursor(PHONE), InboxPos(0));
}

#[test]
fn frames_of_an_earlier_connection_to_another_server_do_not_end_this_catch_up() {
    let mut r = Rig::new();
    r.connect(0, PHONE); // on SERVER
    r.input(1, PHONE, In::AppClose);
    // Reopened on another server, catching up there.
    {
        r.devices.steer(ServerId(5), Time::ZERO);
        r.input(2, PHONE, In::AppOpen { settings: SETTINGS })
    };
    let epoch = r.epoch(PHONE);
    r.frame_from(3, PHONE, ServerId(5), ServerFrame::ConnectAccepted { server: ServerId(5), epoch });
    // The old server's catch-up end and a push, slow on their way, arrive now.
    let stale = ServerFrame::FetchDone { upto: InboxPos(9) };
    assert_eq!(r.frame(4, PHONE, stale), vec![Out::Unheard { device: phone(), frame: stale }]);
    let stale_push = ServerFrame::Push { msg: msg(20, 1) };
    assert_eq!(r.frame(4, PHONE, stale_push), vec![Out::Unheard { device: phone(), frame: stale_push }]);
    assert_eq!(r.devices.state(PHONE), DeviceState::CatchingUp, "this connection's catch-up goes on");
    // This server's catch-up: an older message of the conversation, then its end.
    r.frame_from(5, PHONE, ServerId(5), ServerFrame::Push { msg: msg(8, 1) });
    let out = r.frame_from(6, PHONE, ServerId(5), ServerFrame::FetchDone { upto: InboxPos(3) });
    assert_eq!(shown(&out), vec![8], "shown, not taken for a repeat of a newer one");
    assert_eq!((r.devices.state(PHONE), r.devices.cursor(PHONE)), (DeviceState::Live, InboxPos(3)));
}

#[test]
fn a_live_device_shows_and_acknowledges_each_arrival_and_acknowledges_repeats_again() {
    let mut r = Rig::new();
    r.connect(0, PHONE);
    r.frame(1, PHONE, ServerFrame::FetchDone { upto: InboxPos(0) });
    let out = r.frame(2, PHONE, ServerFrame::Push { msg: msg(5, 1) });
    assert_eq!((shown(&out), acks(&out)), (vec![5], vec![5]));
    let out = r.frame(3, PHONE, ServerFrame::Push { msg: msg(5, 1) });
    assert_eq!(out[0], Out::Duplicate { device: phone(), msg: msg(5, 1) });
    assert_eq!(acks(&out), vec![5], "the first ACK may have been lost");
}

#[test]
fn a_repeat_of_a_shown_message_during_a_catch_up_is_acknowledged_at_once() {
    let mut r = Rig::new();
    r.connect(0, PHONE);
    r.frame(1, PHONE, ServerFrame::FetchDone { upto: InboxPos(0) });
    r.frame(2, PHONE, ServerFrame::Push { msg: msg(5, 1) });
    r.input(3, PHONE, In::AppClose);
    r.connect(4, PHONE);
    let out = r.frame(5, PHONE, ServerFrame::Push { msg: msg(5, 1) });
    assert_eq!(acks(&out), vec![5], "shown before the close: it survived it");
}

#[test]
fn a_refused_device_backs_off_with_jitter_and_tries_again_with_a_new_epoch() {
    let mut r = Rig::new();
    {
        r.devices.steer(SERVER, Time::ZERO);
        r.input(0, PHONE, In::AppOpen { settings: SETTINGS })
    };
    let out = r.frame(10, PHONE, ServerFrame::ConnectRefused { server: SERVER, epoch: 1 });
    let Out::RetryAt { at, .. } = out[1] else { panic!("{out:?}") };
    assert!(at >= Time::from_ms(10) && at < Time::from_ms(2_010), "first retry within 2 x base: {at}");
    assert_eq!((r.devices.state(PHONE), r.devices.failures(PHONE)), (DeviceState::Waiting, 1));
    let out = {
        r.devices.steer(ServerId(4), Time::ZERO);
        r.input(at.as_ms(), PHONE, In::RetryDue { settings: SETTINGS })
    };
    let connect = DeviceFrame::Connect { epoch: 2, cursor: InboxPos(0), hide_last_seen: false };
    assert_eq!(out, vec![Out::Frame { device: phone(), server: ServerId(4), frame: connect }]);
    r.frame(at.as_ms() + 1, PHONE, ServerFrame::ConnectAccepted { server: ServerId(4), epoch: 2 });
    assert_eq!((r.devices.server(PHONE), r.devices.failures(PHONE)), (Some(ServerId(4)), 0));
}

#[test]
fn the_backoff_window_grows_with_each_refusal_up_to_the_cap() {
    let mut r = Rig::new();
    {
        r.devices.steer(SERVER, Time::ZERO);
        r.input(0, PHONE, In::AppOpen { settings: SETTINGS })
    };
    let mut latest = 0;
    for _ in 0..50 {
        let epoch = r.epoch(PHONE);
        let out = r.frame(0, PHONE, ServerFrame::ConnectRefused { server: SERVER, epoch });
        let Out::RetryAt { at, .. } = out[1] else { panic!("{out:?}") };
        assert!(at < Time::from_secs(8), "capped at 8 s: {at}");
        latest = latest.max(at.as_ms());
        {
            r.devices.steer(SERVER, Time::ZERO);
            r.input(0, PHONE, In::RetryDue { settings: SETTINGS })
        };
    }
    assert!(latest > 4_000, "later retries use the wide windows: {latest} ms");
}

#[test]
fn a_late_answer_to_an_old_attempt_is_ignored() {
    let mut r = Rig::new();
    {
        r.devices.steer(SERVER, Time::ZERO);
        r.input(0, PHONE, In::AppOpen { settings: SETTINGS })
    };
    r.input(1, PHONE, In::NetworkLost);
    r.input(2, PHONE, In::NetworkBack);
    {
        r.devices.steer(SERVER, Time::ZERO);
        r.input(3, PHONE, In::RetryDue { settings: SETTINGS })
    };
    assert_eq!(r.epoch(PHONE), 2);
    assert!(r.frame(4, PHONE, ServerFrame::ConnectAccepted { server: SERVER, epoch: 1 }).is_empty());
    assert_eq!(r.devices.state(PHONE), DeviceState::Connecting);
}

#[test]
fn without_a_network_the_device_sends_nothing_and_reconnects_soon_after_it_returns() {
    let mut r = Rig::new();
    r.connect(0, PHONE);
    r.frame(1, PHONE, ServerFrame::FetchDone { upto: InboxPos(0) });
    let out = r.input(2, PHONE, In::NetworkLost);
    assert!(out.is_empty(), "the server is not told: {out:?}");
    assert_eq!(r.devices.heartbeat(PHONE), None);
    assert!({
        r.devices.steer(SERVER, Time::ZERO);
        r.input(3, PHONE, In::RetryDue { settings: SETTINGS })
    }
    .is_empty());
    let push = ServerFrame::Push { msg: msg(5, 1) };
    assert_eq!(
        r.frame(4, PHONE, push),
        vec![Out::Unheard { device: phone(), frame: push }],
        "not shown, not acknowledged"
    );
    let out = r.input(10_000, PHONE, In::NetworkBack);
    let Out::RetryAt { at, .. } = out[0] else { panic!("{out:?}") };
    assert!(at < Time::from_ms(11_000), "within the base window: {at}");
}

#[test]
fn sends_heartbeats_and_reads_need_a_connection_and_reads_respect_the_setting() {
    let mut r = Rig::new();
    assert_eq!(r.devices.send(Time::ZERO, PHONE, Recipient::User(UserId(1))), None);
    assert_eq!(r.devices.heartbeat(PHONE), None);
    r.connect(0, PHONE);
    let seq = |s: Option<(ServerId, DeviceFrame)>| match s {
        Some((SERVER, DeviceFrame::Send { client_seq, .. })) => client_seq,
        other => panic!("{other:?}"),
    };
    assert_eq!(seq(r.devices.send(Time::ZERO, PHONE, Recipient::User(UserId(1)))), 0);
    assert_eq!(seq(r.devices.send(Time::ZERO, PHONE, Recipient::User(UserId(1)))), 1);
    assert_eq!(r.devices.sends_in_flight(), 2);
    let beat = DeviceFrame::Heartbeat { receipts_heard: 0 };
    assert_eq!(r.devices.heartbeat(PHONE), Some((SERVER, beat)), "no receipt heard yet");
    assert!(r.devices.read(Time::ZERO, PHONE, msg(5, 1), SETTINGS).is_some());
    let off = UserSettings { read_receipts: false, ..SETTINGS };
    assert_eq!(r.devices.read(Time::ZERO, PHONE, msg(5, 1), off), None);
    assert_eq!(r.devices.subscribe(PHONE, UserId(1)), Some((SERVER, DeviceFrame::Subscribe { target: UserId(1) })));
}

#[test]
fn the_ticks_of_a_sent_message_move_forward_only() {
    let mut r = Rig::new();
    r.connect(0, PHONE);
    r.devices.send(Time::ZERO, PHONE, Recipient::User(UserId(1)));
    let mine = ChatMessage { from: UserId(0), to: UserId(1), client_seq: 0, ..msg(3, 1) };
    let out = r.frame(1, PHONE, ServerFrame::SentAck { msg: mine });
    assert_eq!(
        out,
        vec![Out::SentAckSeen {
            device: phone(),
            msg: mine,
            first: true,
            abandoned: false,
            ticks: Some(ReceiptState::Sent)
        }]
    );
    let receipt = Receipt { msg: mine, state: ReceiptState::Delivered, by: DeviceId::phone(UserId(1)), at: Time::ZERO };
    let out = r.frame(2, PHONE, ServerFrame::Receipt { receipt, seq: 1 });
    let moved = Some((Some(ReceiptState::Sent), Some(ReceiptState::Delivered)));
    // Heard: the device says so at once, so the server stops holding it.
    let heard = |upto| Out::Frame { device: phone(), server: SERVER, frame: DeviceFrame::ReceiptsHeard { upto } };
    assert_eq!(out, vec![heard(1), Out::ReceiptSeen { device: phone(), receipt, ticks: moved }]);
    let out = r.frame(3, PHONE, ServerFrame::Receipt { receipt, seq: 2 });
    assert_eq!(
        out,
        vec![heard(2), Out::ReceiptSeen { device: phone(), receipt, ticks: None }],
        "a repeat changes nothing"
    );
}

#[test]
fn a_send_without_its_tick_goes_again_on_the_next_connection_only() {
    let mut r = Rig::new();
    r.connect(0, PHONE);
    let (_, send) = r.devices.send(Time::from_ms(1), PHONE, Recipient::User(UserId(1))).expect("connected");
    let out = r.frame(2, PHONE, ServerFrame::FetchDone { upto: InboxPos(0) });
    assert!(!out.iter().any(|o| matches!(o, Out::Frame { frame: DeviceFrame::Send { .. }, .. })), "same connection");
    let out = r.input(3, PHONE, In::AppClose);
    assert!(out.contains(&Out::Abandoned { device: phone(), sent_at: Time::from_ms(1) }), "{out:?}");
    {
        r.devices.steer(SERVER, Time::ZERO);
        r.input(4, PHONE, In::AppOpen { settings: SETTINGS })
    };
    let epoch = r.epoch(PHONE);
    // Sent again as soon as the connection is accepted, ahead of anything new on it.
    let out = r.frame(4, PHONE, ServerFrame::ConnectAccepted { server: SERVER, epoch });
    assert!(out.contains(&Out::Frame { device: phone(), server: SERVER, frame: send }), "sent again: {out:?}");
    assert!(out.contains(&Out::SentAgain { device: phone(), count: 1 }));
    let DeviceFrame::Send { client_seq, .. } = send else { panic!() };
    let acked = ChatMessage { client_seq, from: UserId(0), to: UserId(1), ..msg(9, 1) };
    let out = r.frame(6, PHONE, ServerFrame::SentAck { msg: acked });
    assert!(matches!(out[..], [Out::SentAckSeen { first: true, abandoned: true, .. }]), "{out:?}");
    assert_eq!(r.devices.sends_unacked(), 0, "the ✓ settles it");
}

#[test]
fn a_reset_connection_backs_off_and_the_balancer_avoids_its_server() {
    let mut r = Rig::new();
    r.connect(0, PHONE);
    r.frame(1, PHONE, ServerFrame::FetchDone { upto: InboxPos(0) });
    let epoch = r.epoch(PHONE);
    assert!(r.input(10, PHONE, In::ConnectionLost { server: SERVER, epoch: epoch - 1 }).is_empty(), "an older one");
    let out = r.input(10, PHONE, In::ConnectionLost { server: SERVER, epoch });
    assert_eq!(out[0], Out::Lost { device: phone(), server: SERVER, connected: true });
    let Out::RetryAt { at, .. } = out[1] else { panic!("{out:?}") };
    assert!(at < Time::from_ms(1_010), "a fresh start: the first window: {at}");
    assert!(!r.devices.balancer().in_service(SERVER, Time::from_ms(11)));
    assert_eq!(r.devices.state(PHONE), DeviceState::Waiting);
    assert!(r.input(20, PHONE, In::ConnectionLost { server: SERVER, epoch }).is_empty(), "once only");
    // A connect that meets a dead server fails and widens the window.
    let out = r.input(at.as_ms(), PHONE, In::RetryDue { settings: SETTINGS });
    let Out::Frame { server, frame: DeviceFrame::Connect { epoch, .. }, .. } = out[0] else { panic!("{out:?}") };
    let out = r.input(at.as_ms() + 50, PHONE, In::ConnectFailed { server, epoch });
    assert_eq!(out[0], Out::Lost { device: phone(), server, connected: false });
    assert_eq!(r.devices.failures(PHONE), 1);
}

#[test]
fn a_go_away_reconnects_afresh_without_taking_the_server_out_of_service() {
    let mut r = Rig::new();
    r.connect(0, PHONE);
    r.frame(1, PHONE, ServerFrame::FetchDone { upto: InboxPos(0) });
    let epoch = r.epoch(PHONE);
    let stale = ServerFrame::GoAway { server: SERVER, epoch: (epoch - 1) as u8 };
    assert!(r.frame(10, PHONE, stale).is_empty(), "for an older connection");
    let out = r.frame(10, PHONE, ServerFrame::GoAway { server: SERVER, epoch: epoch as u8 });
    assert_eq!(out[0], Out::GoneAway { device: phone(), server: SERVER });
    let Out::RetryAt { at, .. } = out[1] else { panic!("{out:?}") };
    assert!(at < Time::from_ms(1_010), "a fresh start: the first window: {at}");
    assert!(r.devices.balancer().in_service(SERVER, Time::from_ms(11)), "the server is fine");
    assert_eq!(r.devices.state(PHONE), DeviceState::Waiting);
    let out = r.input(at.as_ms(), PHONE, In::RetryDue { settings: SETTINGS });
    assert!(matches!(out[0], Out::Frame { frame: DeviceFrame::Connect { .. }, .. }), "{out:?}");
    assert_eq!(r.epoch(PHONE), epoch + 1);
}

#[test]
fn a_device_packs_its_network_flag_and_failures_in_one_byte_and_its_server_in_two() {
    let mut d = ClientDevice::default();
    assert_eq!((d.server(), d.network_down(), d.failures()), (None, false, 0));
    d.set_failures(200);
    d.set_network_down(true);
    assert_eq!((d.network_down(), d.failures()), (true, 127), "failures counted up to 127");
    d.set_failures(3);
    assert_eq!((d.network_down(), d.failures()), (true, 3));
    d.set_network_down(false);
    assert_eq!((d.network_down(), d.failures()), (false, 3));
    d.set_server(Some(ServerId(1_023)));
    assert_eq!(d.server(), Some(ServerId(1_023)));
    assert_eq!(d.take_server(), Some(ServerId(1_023)));
    assert_eq!(d.server(), None);
}

#[test]
fn a_media_send_uploaded_while_the_app_is_closed_goes_on_the_next_connection() {
    let mut r = Rig::new();
    r.connect(0, PHONE);
    // The tap numbers the send (tagged with its kind); the app closes during the upload.
    let seq = crate::MediaKind::Video.tag_seq(r.devices.next_seq(PHONE));
    r.input(1, PHONE, In::AppClose);
    let to = Recipient::User(UserId(1));
    assert_eq!(r.devices.queue_send_numbered(Time::from_ms(2), PHONE, to, seq), Some(true), "the user's own wait");
    assert_eq!(r.devices.queue_send(Time::from_ms(2), PHONE, to), None, "a draw on a closed app writes nothing");
    {
        r.devices.steer(SERVER, Time::ZERO);
        r.input(3, PHONE, In::AppOpen { settings: SETTINGS })
    };
    let epoch = r.epoch(PHONE);
    let out = r.frame(4, PHONE, ServerFrame::ConnectAccepted { server: SERVER, epoch });
    let sent: Vec<u32> = out
        .iter()
        .filter_map(|o| match o {
            Out::Frame { frame: DeviceFrame::Send { client_seq, .. }, .. } => Some(*client_seq),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![seq], "the message with its media reference: {out:?}");
    assert_eq!(crate::MediaKind::of_seq(seq), Some(crate::MediaKind::Video));
    // The next send is numbered after it.
    let (_, next) = r.devices.send(Time::from_ms(5), PHONE, to).expect("connected");
    assert!(matches!(next, DeviceFrame::Send { client_seq: 1, .. }), "{next:?}");
}
