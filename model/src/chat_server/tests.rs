use super::*;
use crate::{GroupId, PresenceCause, PresenceStatus};
use DeviceFrame as F;
use ServerFrame as S;

type Out = ChatServerOutput;
type In = ChatServerInput;

fn server(id: u16) -> ChatServer {
    ChatServer::new(ChatServerConfig::new(ServerId(id)))
}

fn alice() -> DeviceId {
    DeviceId::phone(UserId(1))
}

fn bob() -> DeviceId {
    DeviceId::phone(UserId(2))
}

fn run(s: &mut ChatServer, now: Time, input: In) -> Vec<Out> {
    let mut out = Vec::new();
    s.handle(now, input, &mut out);
    out
}

/// A frame from `device`.
fn from(device: DeviceId, frame: DeviceFrame) -> In {
    In::Frame { device, frame }
}

/// A frame to `device`.
fn to(device: DeviceId, frame: ServerFrame) -> Out {
    Out::ToDevice { device, frame }
}

/// `out` without the status updates of message rows (a 1:1 ACK makes one).
fn without_status(out: Vec<Out>) -> Vec<Out> {
    out.into_iter().filter(|o| !matches!(o, Out::WriteStatus { .. })).collect()
}

fn connect(s: &mut ChatServer, d: DeviceId) -> Vec<Out> {
    run(s, Time::ZERO, from(d, F::Connect { epoch: 1, cursor: InboxPos(0), hide_last_seen: false }))
}

fn message(id: u64) -> ChatMessage {
    ChatMessage {
        id: MessageId(id),
        conversation: ConversationId::direct(UserId(1), UserId(2)),
        from: UserId(1),
        to: UserId(2),
        client_seq: 0,
        sent_at: Time::ZERO,
    }
}

/// Send from Alice and return the Persist request.
fn send(s: &mut ChatServer, now: Time) -> (u64, ChatMessage) {
    let out = run(s, now, from(alice(), F::Send { to: Recipient::User(UserId(2)), client_seq: 7, sent_at: now }));
    match out.as_slice() {
        [Out::Persist { req, msg }] => (*req, *msg),
        other => panic!("expected one Persist, got {other:?}"),
    }
}

#[test]
fn connect_accepts_sets_the_session_and_announces_presence() {
    let mut s = server(3);
    let out = connect(&mut s, alice());
    assert_eq!(out[0], to(alice(), S::ConnectAccepted { server: ServerId(3), epoch: 1 }));
    assert!(matches!(out[1], Out::SessionSet { server: ServerId(3), .. }));
    assert_eq!(out[2], Out::Presence(PresenceInput::Online { device: alice(), hide_last_seen: false }));
    assert!(s.is_connected(alice()));
    assert_eq!(s.connection_count(), 1);
}

#[test]
fn connect_sets_the_session_and_fetches_since_the_cursor_in_one_operation() {
    let mut s = server(0);
    let connect = from(bob(), F::Connect { epoch: 1, cursor: InboxPos(40), hide_last_seen: false });
    let out = run(&mut s, Time::ZERO, connect);
    let fetch =
        out.iter().any(|o| matches!(o, Out::SessionSet { device, cursor: InboxPos(40), .. } if *device == bob()));
    assert!(fetch, "{out:?}");
    assert_eq!(s.pending(), 1, "the fetch is pending");
}

#[test]
fn a_full_server_refuses() {
    let mut config = ChatServerConfig::new(ServerId(0));
    config.connections_max = 1;
    let mut s = ChatServer::new(config);
    connect(&mut s, alice());
    assert_eq!(connect(&mut s, bob()), vec![to(bob(), S::ConnectRefused { server: ServerId(0), epoch: 1 })]);
}

#[test]
fn clean_disconnect_clears_the_session_and_tells_presence() {
    let mut s = server(0);
    connect(&mut s, alice());
    let out = run(&mut s, Time::ZERO, from(alice(), F::Disconnect { epoch: 1, receipts_heard: 0 }));
    assert_eq!(out[0], Out::SessionClear { device: alice(), server: ServerId(0), epoch: 1 });
    assert_eq!(out[1], Out::Presence(PresenceInput::Offline { device: alice() }));
    assert!(
        run(&mut s, Time::ZERO, from(alice(), F::Disconnect { epoch: 1, receipts_heard: 0 })).is_empty(),
        "a second one is a no-op"
    );
}

#[test]
fn a_late_close_of_an_old_socket_leaves_the_new_connection_open() {
    let mut s = server(0);
    connect(&mut s, alice());
    run(&mut s, Time::ZERO, from(alice(), F::Connect { epoch: 2, cursor: InboxPos(0), hide_last_seen: false }));
    assert!(run(&mut s, Time::ZERO, from(alice(), F::Disconnect { epoch: 1, receipts_heard: 0 })).is_empty());
    assert!(s.is_connected(alice()));
}

#[test]
fn session_writes_carry_the_connection_epoch_that_fences_them() {
    let mut s = server(0);
    let out =
        run(&mut s, Time::ZERO, from(alice(), F::Connect { epoch: 258, cursor: InboxPos(0), hide_last_seen: false }));
    assert!(out.iter().any(|o| matches!(o, Out::SessionSet { epoch: 2, .. })), "the low 8 bits of 258: {out:?}");
    let out = run(&mut s, Time::ZERO, from(alice(), F::Disconnect { epoch: 258, receipts_heard: 0 }));
    assert_eq!(out[0], Out::SessionClear { device: alice(), server: ServerId(0), epoch: 2 });
}

#[test]
fn heartbeats_refresh_presence_and_silence_closes_without_presence_offline() {
    let mut s = server(0);
    connect(&mut s, alice());
    let out = run(&mut s, Time::from_secs(30), from(alice(), F::Heartbeat { receipts_heard: 0 }));
    assert_eq!(out, vec![Out::Presence(PresenceInput::Heartbeat { device: alice() })]);
    let mut out = Vec::new();
    s.handle_timeout(Time::from_secs(74), &mut out);
    assert!(s.is_connected(alice()), "heard at 30 s: timeout at 75 s");
    s.handle_timeout(Time::from_secs(75), &mut out);
    assert!(!s.is_connected(alice()));
    assert_eq!(
        out,
        vec![
            Out::SessionClear { device: alice(), server: ServerId(0), epoch: 1 },
            to(alice(), ServerFrame::GoAway { server: ServerId(0), epoch: 1 })
        ],
        "no presence DEL; the socket closes"
    );
}

#[test]
fn send_persists_with_a_snowflake_id_of_this_server() {
    let mut s = server(47);
    connect(&mut s, alice());
    let (_, msg) = send(&mut s, Time::from_ms(5));
    assert_eq!((msg.id.worker(), msg.id.timestamp_ms()), (47, 5));
    assert_eq!(msg.conversation, ConversationId::direct(UserId(1), UserId(2)));
    assert_eq!((msg.from, msg.to, msg.client_seq), (UserId(1), UserId(2), 7));
}

#[test]
fn a_send_on_a_closed_connection_is_ignored() {
    let mut s = server(0);
    let out = run(
        &mut s,
        Time::ZERO,
        from(alice(), F::Send { to: Recipient::User(UserId(2)), client_seq: 0, sent_at: Time::ZERO }),
    );
    assert!(out.is_empty());
}

#[test]
fn the_publish_waits_for_a_quorum_and_the_ack_for_the_publish() {
    let mut s = server(0);
    connect(&mut s, alice());
    let (req, msg) = send(&mut s, Time::ZERO);
    assert!(run(&mut s, Time::ZERO, In::WriteAck { req, replica: 1 }).is_empty(), "one of three is not a quorum");
    let out = run(&mut s, Time::ZERO, In::WriteAck { req, replica: 2 });
    let [Out::Publish { req: preq, msg: m }] = out[..] else { panic!("{out:?}") };
    assert_eq!(m, msg, "durable: published, not yet acknowledged to the sender");
    assert!(run(&mut s, Time::ZERO, In::WriteAck { req, replica: 3 }).is_empty(), "the third ACK changes nothing");
    let out = run(&mut s, Time::ZERO, In::ProduceAck { req: preq });
    assert_eq!(out, vec![to(alice(), S::SentAck { msg })], "Kafka has it: ✓");
    assert!(run(&mut s, Time::ZERO, In::ProduceAck { req: preq }).is_empty(), "a repeated ACK changes nothing");
}

#[test]
fn unacknowledged_publish_is_retried_until_acked() {
    let mut s = server(0);
    connect(&mut s, alice());
    let (req, _) = send(&mut s, Time::ZERO);
    run(&mut s, Time::ZERO, In::WriteAck { req, replica: 4 });
    let out = run(&mut s, Time::ZERO, In::WriteAck { req, replica: 5 });
    let Out::Publish { req: preq, .. } = out[0] else { panic!() };
    let mut out = Vec::new();
    s.handle_timeout(Time::from_ms(999), &mut out);
    assert!(out.is_empty());
    s.handle_timeout(Time::from_secs(1), &mut out);
    assert!(matches!(out[0], Out::Publish { req, .. } if req == preq));
    run(&mut s, Time::from_secs(1), In::ProduceAck { req: preq });
    out.clear();
    s.handle_timeout(Time::from_secs(5), &mut out);
    assert!(!out.iter().any(|o| matches!(o, Out::Publish { .. })));
}

#[test]
fn forward_pushes_and_keeps_the_message_until_the_device_acks() {
    let mut s = server(3);
    connect(&mut s, bob());
    let fetching = s.pending();
    let out = run(&mut s, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    assert_eq!(out, vec![to(bob(), S::Push { msg: message(9) })]);
    assert_eq!(s.pending(), fetching + 1, "the push waits for its ACK");
    let out = run(&mut s, Time::ZERO, from(bob(), F::DeliveredAck { msg: message(9), at: Time::from_ms(3) }));
    assert_eq!(s.pending(), fetching);
    let status =
        Out::WriteStatus { id: message(9).id, conversation: message(9).conversation, state: ReceiptState::Delivered };
    assert_eq!(out[0], status, "the row's status is updated");
    let Out::RelayReceipt { server, receipt } = out[1] else { panic!("{out:?}") };
    assert_eq!(server, ServerId(message(9).id.worker()), "to the server that minted the id");
    assert_eq!((receipt.state, receipt.by, receipt.at), (ReceiptState::Delivered, bob(), Time::from_ms(3)));
}

#[test]
fn a_pushs_acknowledgement_goes_to_the_forwarders_when_they_keep_forwards() {
    let acked = Out::Acked { id: message(9).id, conversation: message(9).conversation, device: bob() };
    for tell in [false, true] {
        let mut s =
            ChatServer::new(ChatServerConfig { acks_to_forwarders: tell, ..ChatServerConfig::new(ServerId(3)) });
        connect(&mut s, bob());
        run(&mut s, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
        let ack = from(bob(), F::DeliveredAck { msg: message(9), at: Time::from_ms(3) });
        let out = run(&mut s, Time::ZERO, ack);
        assert_eq!(out.contains(&acked), tell, "{out:?}");
        // The same ACK again (nothing held for it now) tells nothing more.
        let out = run(&mut s, Time::ZERO, ack);
        assert!(!out.contains(&acked), "{out:?}");
    }
}

#[test]
fn a_receipt_for_a_message_minted_here_goes_straight_to_the_sender() {
    let mut s = server(0);
    connect(&mut s, alice());
    connect(&mut s, bob());
    let out = without_status(run(&mut s, Time::ZERO, from(bob(), F::ReadAck { msg: message(9), at: Time::ZERO })));
    assert!(matches!(out[..], [Out::ToDevice { device, frame: S::Receipt { .. } }] if device == alice()), "{out:?}");
}

#[test]
fn receipts_are_held_until_the_sender_hears_them_and_handed_back_when_its_connection_ends() {
    let mut s = server(0);
    connect(&mut s, alice());
    connect(&mut s, bob());
    let receipt = |out: &[Out]| match without_status(out.to_vec()).as_slice() {
        [Out::ToDevice { frame: S::Receipt { receipt, seq }, .. }] => (*receipt, *seq),
        other => panic!("{other:?}"),
    };
    let (_, first) =
        receipt(&run(&mut s, Time::ZERO, from(bob(), F::DeliveredAck { msg: message(9), at: Time::ZERO })));
    // The same receipt again (a second delivered ACK): numbered apart.
    let (_, second) =
        receipt(&run(&mut s, Time::ZERO, from(bob(), F::DeliveredAck { msg: message(9), at: Time::ZERO })));
    let (third, _) =
        receipt(&run(&mut s, Time::ZERO, from(bob(), F::DeliveredAck { msg: message(10), at: Time::ZERO })));
    assert_eq!((first, second), (1, 2));
    // Alice heard up to the second (she says so as each comes, and again on her heartbeat):
    // the third is still held, and hearing the second again changes nothing.
    run(&mut s, Time::from_secs(1), from(alice(), F::ReceiptsHeard { upto: first }));
    run(&mut s, Time::from_secs(1), from(alice(), F::ReceiptsHeard { upto: second }));
    run(&mut s, Time::from_secs(1), from(alice(), F::Heartbeat { receipts_heard: second }));
    let out = run(&mut s, Time::from_secs(2), from(alice(), F::Disconnect { epoch: 1, receipts_heard: 0 }));
    let routed: Vec<Receipt> = out
        .iter()
        .filter_map(|o| if let Out::RouteReceipt { receipt, .. } = o { Some(*receipt) } else { None })
        .collect();
    assert_eq!(routed, vec![third], "only the one not heard goes back to the store: {out:?}");
    let clear = out.iter().position(|o| matches!(o, Out::SessionClear { .. })).unwrap();
    let route = out.iter().position(|o| matches!(o, Out::RouteReceipt { .. })).unwrap();
    assert!(route < clear, "handed back while the session still points here (so it is stored): {out:?}");
}

#[test]
fn a_push_still_unacknowledged_is_pushed_again_on_the_next_heartbeat() {
    let mut s = server(3);
    connect(&mut s, bob());
    run(&mut s, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    let again = |out: &[Out]| out.iter().filter(|o| matches!(o, Out::ToDevice { frame: S::Push { .. }, .. })).count();
    assert_eq!(
        again(&run(&mut s, Time::from_secs(1), from(bob(), F::Heartbeat { receipts_heard: 0 }))),
        0,
        "its ACK may be in flight"
    );
    assert_eq!(
        again(&run(&mut s, Time::from_secs(2), from(bob(), F::Heartbeat { receipts_heard: 0 }))),
        1,
        "the ACK was lost"
    );
    assert_eq!(
        again(&run(&mut s, Time::from_secs(3), from(bob(), F::Heartbeat { receipts_heard: 0 }))),
        0,
        "pushed again at 2 s"
    );
    run(&mut s, Time::from_secs(3), from(bob(), F::DeliveredAck { msg: message(9), at: Time::from_secs(3) }));
    assert_eq!(
        again(&run(&mut s, Time::from_secs(9), from(bob(), F::Heartbeat { receipts_heard: 0 }))),
        0,
        "acknowledged"
    );
}

#[test]
fn a_connection_lost_with_unacked_pushes_hands_them_back() {
    let mut s = server(5);
    connect(&mut s, bob());
    run(&mut s, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    let out = run(&mut s, Time::ZERO, from(bob(), F::Disconnect { epoch: 1, receipts_heard: 0 }));
    assert!(out.contains(&Out::Reroute { msg: message(9), exclude: ServerId(5), slot: DeviceSlot(0) }), "{out:?}");
}

#[test]
fn a_reconnect_reroutes_unacked_pushes_before_setting_the_session() {
    let mut s = server(5);
    connect(&mut s, bob());
    run(&mut s, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    let out = connect(&mut s, bob());
    let reroute = out.iter().position(|o| matches!(o, Out::Reroute { .. })).expect("rerouted");
    let set = out.iter().position(|o| matches!(o, Out::SessionSet { .. })).expect("session set");
    assert!(reroute < set, "{out:?}");
}

#[test]
fn forward_to_a_stale_server_is_rerouted_without_it() {
    let mut s = server(4);
    let out = run(&mut s, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    assert_eq!(out, vec![Out::Reroute { msg: message(9), exclude: ServerId(4), slot: DeviceSlot(0) }]);
}

/// A receipt arriving at its origin server (0) while the sender is not there is routed
/// through the session store; return the outputs once the store answers `server`.
fn routed_receipt(s: &mut ChatServer, server: Option<ServerId>) -> Vec<Out> {
    let receipt = Receipt { msg: message(9), state: ReceiptState::Read, by: bob(), at: Time::from_ms(7) };
    let out = run(s, Time::ZERO, In::ReceiptRelay { receipt });
    let Out::RouteReceipt { req, receipt, exclude } = out[0] else { panic!("{out:?}") };
    assert_eq!((receipt.state, exclude), (ReceiptState::Read, Some(ServerId(0))));
    run(s, Time::ZERO, In::ReceiptRouted { req, server })
}

#[test]
fn receipts_for_a_sender_who_left_are_relayed_by_the_store_or_stay_stored() {
    let mut s = server(0);
    // The store relays it to the new server itself (the asking server may be gone by the
    // time a failover lets the store answer).
    assert!(routed_receipt(&mut s, Some(ServerId(8))).is_empty());
    assert!(routed_receipt(&mut s, None).is_empty(), "stored for the offline sender");
    // A server this one knows is down: routed again without it.
    run(&mut s, Time::ZERO, In::ServerDown { server: ServerId(8) });
    let out = routed_receipt(&mut s, Some(ServerId(8)));
    assert!(matches!(out[..], [Out::RouteReceipt { exclude: Some(ServerId(8)), .. }]), "{out:?}");
}

#[test]
fn a_relayed_receipt_for_a_sender_who_left_is_routed_again() {
    let mut s = server(2);
    let receipt = Receipt { msg: message(9), state: ReceiptState::Delivered, by: bob(), at: Time::ZERO };
    let out = run(&mut s, Time::ZERO, In::ReceiptRelay { receipt });
    assert!(matches!(out[..], [Out::RouteReceipt { exclude: Some(ServerId(2)), .. }]), "{out:?}");
    connect(&mut s, alice());
    let out = run(&mut s, Time::ZERO, In::ReceiptRelay { receipt });
    assert_eq!(out, vec![to(alice(), S::Receipt { receipt, seq: 1 })]);
}

#[test]
fn a_fetch_pushes_stored_receipts_at_once_and_its_entries_in_inbox_order() {
    let mut s = server(0);
    let out = connect(&mut s, bob());
    let Some(&Out::SessionSet { req, .. }) = out.iter().find(|o| matches!(o, Out::SessionSet { .. })) else { panic!() };
    let mut reads = Vec::new();
    for (pos, id) in [(0, 3), (1, 5)] {
        let out = run(&mut s, Time::ZERO, In::InboxEntry { req, pos: InboxPos(pos), msg: message(id) });
        let Out::Read { req: r, id: MessageId(i), .. } = out[0] else { panic!("{out:?}") };
        assert_eq!(i, id);
        reads.push(r);
    }
    // A stored receipt goes to the device as it comes, held until heard: the catch-up
    // may wait long on its reads, and a crash meanwhile would take it with the server.
    let stored = Receipt { msg: message(1), state: ReceiptState::Read, by: alice(), at: Time::ZERO };
    let out = run(&mut s, Time::ZERO, In::StoredReceipt { req, receipt: stored, stored: 7 });
    assert_eq!(out, vec![to(bob(), S::Receipt { receipt: stored, seq: 1 })]);
    assert!(
        run(&mut s, Time::ZERO, In::InboxEnd { req, end: InboxPos(2), parts: 3, previous: None }).is_empty(),
        "reads still pending"
    );
    // Replies arrive out of order; one replica of the first read lacks the row.
    run(&mut s, Time::ZERO, In::ReadReply { req: reads[1], held: true, replica: 12 });
    run(&mut s, Time::ZERO, In::ReadReply { req: reads[0], held: false, replica: 13 });
    assert!(run(&mut s, Time::ZERO, In::ReadReply { req: reads[1], held: true, replica: 14 }).is_empty());
    let out = run(&mut s, Time::ZERO, In::ReadReply { req: reads[0], held: true, replica: 15 });
    assert_eq!(
        out,
        vec![
            to(bob(), S::Push { msg: message(3) }),
            to(bob(), S::Push { msg: message(5) }),
            to(bob(), S::FetchDone { upto: InboxPos(2) }),
        ]
    );
}

#[test]
fn subscriptions_and_presence_updates_go_through_the_watchers_server() {
    let mut s = server(6);
    assert!(run(&mut s, Time::ZERO, from(bob(), F::Subscribe { target: UserId(1) })).is_empty(), "not connected");
    connect(&mut s, bob());
    let out = run(&mut s, Time::ZERO, from(bob(), F::Subscribe { target: UserId(1) }));
    // Opening the chat also reads its history's first page (the last 50 messages).
    let history = Out::ReadHistory {
        conversation: ConversationId::direct(UserId(2), UserId(1)),
        before: MessageId(u64::MAX),
        limit: HISTORY_PAGE,
    };
    assert_eq!(out, vec![Out::Subscribe { watcher: bob(), server: ServerId(6), target: UserId(1) }, history]);
    let update = PresenceUpdate {
        target: UserId(1),
        status: PresenceStatus::Online,
        cause: PresenceCause::Connected,
        changed_at: Time::ZERO,
    };
    let out = run(&mut s, Time::ZERO, In::PresenceNotify { watcher: bob(), update });
    assert_eq!(out, vec![to(bob(), S::PresenceUpdate { update })]);
}

#[test]
fn stale_replies_are_ignored() {
    let mut s = server(0);
    for input in [
        In::WriteAck { req: 12345, replica: 6 },
        In::ReceiptRouted { req: 12345, server: None },
        In::ReadReply { req: 12345, held: false, replica: 16 },
        In::InboxEnd { req: 12345, end: InboxPos(0), parts: 0, previous: None },
    ] {
        assert!(run(&mut s, Time::ZERO, input).is_empty(), "{input:?}");
    }
}

#[test]
fn a_rerouted_message_is_pushed_here_or_forwarded_to_the_devices_server() {
    let mut s = server(4);
    connect(&mut s, bob());
    let web = DeviceId { user: UserId(2), slot: DeviceSlot(1) };
    let route = Route { forward: [Some(ServerId(4)), Some(ServerId(9))], inbox: false };
    let out = run(&mut s, Time::ZERO, In::Rerouted { msg: message(9), route, slot: bob().slot });
    assert_eq!(out, vec![to(bob(), S::Push { msg: message(9) })], "only the slot it was rerouted for");
    let out = run(&mut s, Time::ZERO, In::Rerouted { msg: message(9), route, slot: web.slot });
    assert_eq!(out, vec![Out::Forward { server: ServerId(9), slot: web.slot, msg: message(9) }]);
    // Server 9 is down: not forwarded into the void, routed again without it.
    run(&mut s, Time::ZERO, In::ServerDown { server: ServerId(9) });
    let out = run(&mut s, Time::ZERO, In::Rerouted { msg: message(9), route, slot: web.slot });
    assert_eq!(out, vec![Out::Reroute { msg: message(9), exclude: ServerId(9), slot: web.slot }]);
}

/// Bob connects to server 0, the store hands a receipt to his fetch, and he closes before
/// the fetch ends: its request, the receipt, and what the close did.
fn fetch_with_a_stored_receipt_and_then_a_close(s: &mut ChatServer) -> (u64, Receipt, Vec<Out>) {
    let req = connect_req(s, bob());
    let stored = Receipt { msg: message(1), state: ReceiptState::Read, by: alice(), at: Time::ZERO };
    run(s, Time::ZERO, In::StoredReceipt { req, receipt: stored, stored: 7 });
    let closed = run(s, Time::ZERO, from(bob(), F::Disconnect { epoch: 1, receipts_heard: 0 }));
    (req, stored, closed)
}

#[test]
fn the_store_forgets_stored_receipts_only_once_the_phone_heard_them() {
    // The store keeps what it handed over: a server that dies before the phone heard a
    // stored receipt (or a fetch answer that finds it dead) must not lose it.
    let mut s = server(0);
    let req = connect_req(&mut s, bob());
    let stored = Receipt { msg: message(1), state: ReceiptState::Read, by: alice(), at: Time::ZERO };
    run(&mut s, Time::ZERO, In::StoredReceipt { req, receipt: stored, stored: 7 });
    let later = Receipt { msg: message(2), ..stored };
    run(&mut s, Time::ZERO, In::StoredReceipt { req, receipt: later, stored: 9 });
    let forgets = |out: &[Out]| out.iter().filter(|o| matches!(o, Out::ForgetStoredReceipts { .. })).count();
    // Hearing the first (sequence 1) is not hearing the second.
    assert_eq!(forgets(&run(&mut s, Time::ZERO, from(bob(), F::ReceiptsHeard { upto: 1 }))), 0);
    let out = run(&mut s, Time::ZERO, from(bob(), F::ReceiptsHeard { upto: 2 }));
    assert!(out.contains(&Out::ForgetStoredReceipts { user: bob().user, upto: 9 }), "{out:?}");
    // Told once.
    let out = run(&mut s, Time::ZERO, from(bob(), F::Heartbeat { receipts_heard: 2 }));
    assert_eq!(forgets(&out), 0, "{out:?}");
}

#[test]
fn a_stored_receipt_not_heard_when_the_connection_ends_stays_stored() {
    let mut s = server(0);
    let (_, _, closed) = fetch_with_a_stored_receipt_and_then_a_close(&mut s);
    assert_eq!(closed.iter().filter(|o| matches!(o, Out::ForgetStoredReceipts { .. })).count(), 0, "{closed:?}");
}

#[test]
fn a_fetch_whose_device_left_hands_its_stored_receipts_back() {
    let mut s = server(0);
    let (req, stored, closed) = fetch_with_a_stored_receipt_and_then_a_close(&mut s);
    // Pushed at once and not heard: the close hands it back, as any receipt not heard.
    let back: Vec<&Out> = closed.iter().filter(|o| matches!(o, Out::RouteReceipt { .. })).collect();
    assert!(matches!(back[..], [Out::RouteReceipt { receipt, .. }] if *receipt == stored), "{closed:?}");
    let out = run(&mut s, Time::ZERO, In::InboxEnd { req, end: InboxPos(0), parts: 1, previous: None });
    assert!(out.is_empty(), "handed back once: {out:?}");
}

#[test]
fn a_stale_fetch_gives_its_stored_receipts_to_the_devices_newer_connection_here() {
    // The device closed and connected here again while its first fetch was held up (a
    // session shard's failover): the second fetch read the store after the first had
    // taken the receipts, so they go to the new connection, not back to the store.
    let mut s = server(0);
    let req = connect_req(&mut s, bob());
    run(&mut s, Time::ZERO, from(bob(), F::Disconnect { epoch: 1, receipts_heard: 0 }));
    let stored = Receipt { msg: message(1), state: ReceiptState::Read, by: alice(), at: Time::ZERO };
    // The first fetch's receipt comes after its connection closed: kept for its end.
    assert!(run(&mut s, Time::ZERO, In::StoredReceipt { req, receipt: stored, stored: 7 }).is_empty());
    run(&mut s, Time::ZERO, from(bob(), F::Connect { epoch: 2, cursor: InboxPos(0), hide_last_seen: false }));
    let out = run(&mut s, Time::ZERO, In::InboxEnd { req, end: InboxPos(0), parts: 1, previous: None });
    assert_eq!(out, vec![to(bob(), S::Receipt { receipt: stored, seq: 1 })]);
}

#[test]
fn a_fetch_capped_at_its_limit_ends_before_the_first_entry_left_out() {
    let mut s = server(0);
    let out = connect(&mut s, bob());
    let Some(&Out::SessionSet { req, .. }) = out.iter().find(|o| matches!(o, Out::SessionSet { .. })) else { panic!() };
    let mut reads = Vec::new();
    for pos in 0..FETCH_ENTRIES_MAX as u32 + 5 {
        let msg = ChatMessage { id: MessageId(u64::from(pos) + 1), ..message(1) };
        let entry = In::InboxEntry { req, pos: InboxPos(100 + pos), msg };
        if let [Out::Read { req: r, .. }] = run(&mut s, Time::ZERO, entry)[..] {
            reads.push(r);
        }
    }
    assert_eq!(reads.len(), FETCH_ENTRIES_MAX);
    let parts = FETCH_ENTRIES_MAX as u32 + 5;
    run(&mut s, Time::ZERO, In::InboxEnd { req, end: InboxPos(100 + parts), parts, previous: None });
    let mut last = Vec::new();
    for r in reads {
        run(&mut s, Time::ZERO, In::ReadReply { req: r, held: true, replica: 17 });
        last = run(&mut s, Time::ZERO, In::ReadReply { req: r, held: true, replica: 18 });
    }
    let upto = InboxPos(100 + FETCH_ENTRIES_MAX as u32);
    assert!(last.contains(&to(bob(), S::FetchDone { upto })), "the next fetch starts at the first left out");
}

#[test]
fn a_conversation_is_published_in_id_order_whichever_write_finishes_first() {
    let mut s = server(0);
    connect(&mut s, alice());
    let (first, m1) = send(&mut s, Time::ZERO);
    let (second, m2) = send(&mut s, Time::ZERO);
    assert!(m1.id < m2.id);
    run(&mut s, Time::ZERO, In::WriteAck { req: second, replica: 7 });
    let out = run(&mut s, Time::ZERO, In::WriteAck { req: second, replica: 8 });
    assert!(out.is_empty(), "durable, but the publish (and so the ✓) waits for the first");
    run(&mut s, Time::ZERO, In::WriteAck { req: first, replica: 9 });
    let out = run(&mut s, Time::ZERO, In::WriteAck { req: first, replica: 10 });
    let [Out::Publish { req: p1, msg }] = out[..] else { panic!("{out:?}") };
    assert_eq!(msg, m1, "the first, alone: one publish in flight per conversation");
    assert!(
        run(&mut s, Time::ZERO, In::WriteAck { req: second, replica: 11 }).is_empty(),
        "a late replica changes nothing"
    );
    // Kafka has the first: its ✓, then the second's publish.
    let out = run(&mut s, Time::ZERO, In::ProduceAck { req: p1 });
    assert_eq!(out[0], to(alice(), S::SentAck { msg: m1 }));
    assert!(matches!(out[1], Out::Publish { msg, .. } if msg == m2), "{out:?}");
    assert_eq!(out.len(), 2);
}

#[test]
fn a_fetch_end_that_overtakes_its_entries_waits_for_them() {
    let mut s = server(0);
    let out = connect(&mut s, bob());
    let Some(&Out::SessionSet { req, .. }) = out.iter().find(|o| matches!(o, Out::SessionSet { .. })) else { panic!() };
    assert!(
        run(&mut s, Time::ZERO, In::InboxEnd { req, end: InboxPos(1), parts: 1, previous: None }).is_empty(),
        "one entry to come"
    );
    let out = run(&mut s, Time::ZERO, In::InboxEntry { req, pos: InboxPos(0), msg: message(3) });
    let Out::Read { req: r, .. } = out[0] else { panic!("{out:?}") };
    run(&mut s, Time::ZERO, In::ReadReply { req: r, held: true, replica: 19 });
    let out = run(&mut s, Time::ZERO, In::ReadReply { req: r, held: true, replica: 20 });
    assert_eq!(out, vec![to(bob(), S::Push { msg: message(3) }), to(bob(), S::FetchDone { upto: InboxPos(1) })]);
}

/// Connect `device` to `s` and return the fetch request of its catch-up.
fn connect_req(s: &mut ChatServer, device: DeviceId) -> u64 {
    let out = connect(s, device);
    let Some(&Out::SessionSet { req, .. }) = out.iter().find(|o| matches!(o, Out::SessionSet { .. })) else { panic!() };
    req
}

fn frames_to(out: &[Out], device: DeviceId) -> Vec<ServerFrame> {
    out.iter()
        .filter_map(|o| match o {
            Out::ToDevice { device: d, frame } if *d == device => Some(*frame),
            _ => None,
        })
        .collect()
}

#[test]
fn a_close_hands_its_pushes_back_before_clearing_the_session() {
    let mut s = server(5);
    connect(&mut s, bob());
    run(&mut s, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    let out = run(&mut s, Time::ZERO, from(bob(), F::Disconnect { epoch: 1, receipts_heard: 0 }));
    let reroute = out.iter().position(|o| matches!(o, Out::Reroute { .. })).expect("rerouted");
    let clear = out.iter().position(|o| matches!(o, Out::SessionClear { .. })).expect("cleared");
    assert!(reroute < clear, "a connect elsewhere that still finds the session here waits for the reroute: {out:?}");
}

#[test]
fn a_device_that_moved_is_given_up_and_its_pushes_handed_over_before_its_catch_up_ends() {
    let (mut old, mut new) = (server(5), server(6));
    connect(&mut old, bob());
    run(&mut old, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    // Bob's network came back; he connects to server 6, and the session still pointed at 5.
    let req = connect_req(&mut new, bob());
    let out = run(&mut new, Time::ZERO, In::InboxEnd { req, end: InboxPos(0), parts: 0, previous: Some(ServerId(5)) });
    assert_eq!(out, vec![Out::Takeover { server: ServerId(5), req, device: bob(), to: ServerId(6), epoch: 1 }]);
    let out = run(&mut old, Time::ZERO, In::Takeover { req, device: bob(), to: ServerId(6), epoch: 1 });
    assert_eq!(
        out,
        vec![
            Out::Handover { server: ServerId(6), req, slot: DeviceSlot(0), msg: message(9) },
            Out::TakeoverDone { server: ServerId(6), req, parts: 1 },
        ],
        "no session clear, no offline: both stores point at the new server"
    );
    assert!(!old.is_connected(bob()));
    assert_eq!(old.takeovers(), (0, 1));
    // The done overtakes the handover: the catch-up waits for it.
    assert!(run(&mut new, Time::ZERO, In::TakeoverDone { req, parts: 1 }).is_empty());
    let out = run(&mut new, Time::ZERO, In::Handover { req, slot: DeviceSlot(0), msg: message(9) });
    assert_eq!(frames_to(&out, bob()), vec![S::Push { msg: message(9) }, S::FetchDone { upto: InboxPos(0) }]);
    assert_eq!(new.takeovers(), (1, 0));
    assert_eq!(new.pending(), 1, "the handed-over push waits for its ACK here now");
}

#[test]
fn what_was_handed_over_is_routed_again_if_the_new_server_dies_before_the_window_ends() {
    let mut old = server(5);
    connect(&mut old, bob());
    run(&mut old, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    let out = run(&mut old, Time::from_secs(1), In::Takeover { req: 3, device: bob(), to: ServerId(6), epoch: 1 });
    assert!(out.contains(&Out::Handover { server: ServerId(6), req: 3, slot: DeviceSlot(0), msg: message(9) }));
    // Server 6 crashes while it holds the push (catching bob up, or waiting for his ACK):
    // the routers forwarded it to 5, so only 5 can route it again.
    let out = run(&mut old, Time::from_secs(2), In::ServerDown { server: ServerId(6) });
    assert_eq!(out, vec![Out::Reroute { msg: message(9), exclude: ServerId(6), slot: DeviceSlot(0) }]);
    assert!(run(&mut old, Time::from_secs(3), In::ServerDown { server: ServerId(6) }).is_empty(), "once");

    // Past the new server's connection timeout and the margin, the copy is gone: that
    // server would have handed the push back itself by then.
    let mut old = server(5);
    connect(&mut old, bob());
    run(&mut old, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    run(&mut old, Time::from_secs(1), In::Takeover { req: 3, device: bob(), to: ServerId(6), epoch: 1 });
    let keep = ChatServerConfig::new(ServerId(5)).connection_timeout + HANDED_MARGIN;
    run(&mut old, Time::from_secs(1) + keep, In::ServerUp { server: ServerId(7) });
    old.handle_timeout(Time::from_secs(1) + keep, &mut Vec::new());
    assert!(run(&mut old, Time::from_secs(60), In::ServerDown { server: ServerId(6) }).is_empty());
}

#[test]
fn a_takeover_waits_for_the_reroutes_still_on_their_way_back() {
    let (mut old, mut new) = (server(5), server(6));
    let first = connect_req(&mut old, bob());
    run(&mut old, Time::ZERO, In::InboxEnd { req: first, end: InboxPos(0), parts: 0, previous: None });
    run(&mut old, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    // Server 5 closed the silent connection just before the takeover came: its push is on
    // its way back through the session store, which will route it to server 6.
    let out = run(&mut old, Time::from_secs(46), from(bob(), F::Disconnect { epoch: 1, receipts_heard: 0 }));
    assert!(out.contains(&Out::Reroute { msg: message(9), exclude: ServerId(5), slot: DeviceSlot(0) }));
    let req = connect_req(&mut new, bob());
    run(&mut new, Time::ZERO, In::InboxEnd { req, end: InboxPos(0), parts: 0, previous: Some(ServerId(5)) });
    let t = Time::from_secs(46);
    assert!(
        run(&mut old, t, In::Takeover { req, device: bob(), to: ServerId(6), epoch: 1 }).is_empty(),
        "a reroute is out"
    );
    // A message routed to 5 before bob moved arrives now: it goes with the takeover.
    let late = ChatMessage { id: MessageId(10), ..message(9) };
    let out = run(&mut old, t, In::Forward { msg: late, slot: DeviceSlot(0) });
    assert_eq!(out, vec![Out::Handover { server: ServerId(6), req, slot: DeviceSlot(0), msg: late }]);
    let route = Route { forward: [Some(ServerId(6)), None], inbox: false };
    let out = run(&mut old, t, In::Rerouted { msg: message(9), route, slot: DeviceSlot(0) });
    assert_eq!(
        out,
        vec![
            Out::Handover { server: ServerId(6), req, slot: DeviceSlot(0), msg: message(9) },
            Out::TakeoverDone { server: ServerId(6), req, parts: 2 },
        ]
    );
    run(&mut new, t, In::Handover { req, slot: DeviceSlot(0), msg: late });
    run(&mut new, t, In::Handover { req, slot: DeviceSlot(0), msg: message(9) });
    let out = run(&mut new, t, In::TakeoverDone { req, parts: 2 });
    assert_eq!(frames_to(&out, bob()), vec![S::FetchDone { upto: InboxPos(0) }]);
    assert_eq!(old.pending(), 0, "nothing for bob is left at his old server");
}

#[test]
fn a_catch_up_stops_waiting_for_a_previous_server_that_does_not_answer() {
    let mut new = server(6);
    let req = connect_req(&mut new, bob());
    run(&mut new, Time::ZERO, In::InboxEnd { req, end: InboxPos(3), parts: 0, previous: Some(ServerId(5)) });
    let mut out = Vec::new();
    new.handle_timeout(Time::from_ms(4_999), &mut out);
    assert!(frames_to(&out, bob()).is_empty(), "still waiting");
    new.handle_timeout(Time::from_secs(5), &mut out);
    assert_eq!(frames_to(&out, bob()), vec![S::FetchDone { upto: InboxPos(3) }]);
}

#[test]
fn a_device_that_moves_twice_gets_what_the_first_server_held_through_the_second() {
    let (mut a, mut b, mut c) = (server(1), server(2), server(3));
    connect(&mut a, bob());
    run(&mut a, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    let req_b = connect_req(&mut b, bob());
    run(&mut b, Time::ZERO, In::InboxEnd { req: req_b, end: InboxPos(0), parts: 0, previous: Some(ServerId(1)) });
    // Bob moves on to c before a answered b.
    let req_c = connect_req(&mut c, bob());
    run(&mut c, Time::ZERO, In::InboxEnd { req: req_c, end: InboxPos(0), parts: 0, previous: Some(ServerId(2)) });
    assert!(run(&mut b, Time::ZERO, In::Takeover { req: req_c, device: bob(), to: ServerId(3), epoch: 1 }).is_empty());
    let out = run(&mut a, Time::ZERO, In::Takeover { req: req_b, device: bob(), to: ServerId(2), epoch: 1 });
    let mut to_c = Vec::new();
    for o in out {
        let input = match o {
            Out::Handover { req, slot, msg, .. } => In::Handover { req, slot, msg },
            Out::TakeoverDone { req, parts, .. } => In::TakeoverDone { req, parts },
            other => panic!("{other:?}"),
        };
        to_c.extend(run(&mut b, Time::ZERO, input));
    }
    assert_eq!(
        to_c,
        vec![
            Out::Handover { server: ServerId(3), req: req_c, slot: DeviceSlot(0), msg: message(9) },
            Out::TakeoverDone { server: ServerId(3), req: req_c, parts: 1 },
        ]
    );
}

#[test]
fn after_a_session_failover_live_sessions_are_written_again_and_a_lost_one_is_sent_away() {
    let mut config = ChatServerConfig::new(ServerId(0));
    config.session_reregister = true;
    let mut s = ChatServer::new(config);
    connect(&mut s, alice());
    connect(&mut s, bob());
    // Users 1 and 2 over 2 shards: only Bob's session lives on shard 0.
    let out = run(&mut s, Time::from_secs(5), In::SessionShardFailover { shard: 0, shards: 2 });
    let ttl = ChatServerConfig::new(ServerId(0)).session_ttl;
    assert_eq!(out, vec![Out::SessionRefresh { device: bob(), server: ServerId(0), epoch: 1, ttl }]);
    // The store had it right: nothing more.
    let refreshed = |changed, epoch| In::SessionRefreshed { device: bob(), epoch, changed };
    assert!(run(&mut s, Time::from_secs(5), refreshed(false, 1)).is_empty());
    // An answer for an older connection is ignored.
    assert!(run(&mut s, Time::from_secs(5), refreshed(true, 0)).is_empty());
    assert!(s.is_connected(bob()));
    // The replica had lost it: the connection closes and the device is asked to come back.
    let out = run(&mut s, Time::from_secs(5), refreshed(true, 1));
    assert_eq!(
        out,
        vec![
            Out::SessionClear { device: bob(), server: ServerId(0), epoch: 1 },
            to(bob(), ServerFrame::GoAway { server: ServerId(0), epoch: 1 })
        ]
    );
    assert!(!s.is_connected(bob()));
    assert_eq!(s.reregistered(), (1, 1));
}

#[test]
fn without_reregistration_a_failover_changes_nothing() {
    let mut s = server(0);
    connect(&mut s, bob());
    assert!(run(&mut s, Time::from_secs(5), In::SessionShardFailover { shard: 0, shards: 2 }).is_empty());
}

#[test]
fn a_late_session_answer_takes_over_only_an_older_connection() {
    // Bob connected to 6 and closed; he is now back on 5 with a newer connection. The
    // answer to 6's session write, held up by a failover, still names 5 as the previous
    // server: 6 asks 5 (its own connection gone, it waits for nothing), and 5 keeps the
    // connection newer than the one that asked.
    let (mut five, mut six) = (server(5), server(6));
    let req = connect_req(&mut six, bob());
    run(&mut six, Time::ZERO, from(bob(), F::Disconnect { epoch: 1, receipts_heard: 0 }));
    run(&mut five, Time::ZERO, from(bob(), F::Connect { epoch: 2, cursor: InboxPos(0), hide_last_seen: false }));
    let out = run(
        &mut six,
        Time::from_secs(1),
        In::InboxEnd { req, end: InboxPos(0), parts: 0, previous: Some(ServerId(5)) },
    );
    let asked: Vec<&Out> = out.iter().filter(|o| matches!(o, Out::Takeover { .. })).collect();
    assert_eq!(asked, vec![&Out::Takeover { server: ServerId(5), req, device: bob(), to: ServerId(6), epoch: 1 }]);
    let out = run(&mut five, Time::from_secs(1), In::Takeover { req, device: bob(), to: ServerId(6), epoch: 1 });
    assert_eq!(out, vec![Out::TakeoverDone { server: ServerId(6), req, parts: 0 }]);
    assert!(five.is_connected(bob()), "the newer connection stays");
}

#[test]
fn a_connection_lost_silently_is_given_up_even_when_the_next_one_closed_at_once() {
    // Bob's connection to 5 died silently (his network went) with a push on it; he
    // connected to 6 and closed before 6's session write came back. 6 still asks 5 for
    // him: 5 gives the dead connection up and hands the push over; 6, where Bob is gone,
    // routes it again (to his inbox) instead of it waiting for 5's timeout.
    let (mut five, mut six) = (server(5), server(6));
    connect(&mut five, bob());
    run(&mut five, Time::ZERO, In::Forward { msg: message(9), slot: DeviceSlot(0) });
    let out = run(
        &mut six,
        Time::from_secs(1),
        from(bob(), F::Connect { epoch: 2, cursor: InboxPos(0), hide_last_seen: false }),
    );
    let Some(&Out::SessionSet { req, .. }) = out.iter().find(|o| matches!(o, Out::SessionSet { .. })) else { panic!() };
    run(&mut six, Time::from_secs(1), from(bob(), F::Disconnect { epoch: 2, receipts_heard: 0 }));
    let out = run(
        &mut six,
        Time::from_secs(1),
        In::InboxEnd { req, end: InboxPos(0), parts: 0, previous: Some(ServerId(5)) },
    );
    assert!(
        out.contains(&Out::Takeover { server: ServerId(5), req, device: bob(), to: ServerId(6), epoch: 2 }),
        "{out:?}"
    );
    let out = run(&mut five, Time::from_secs(1), In::Takeover { req, device: bob(), to: ServerId(6), epoch: 2 });
    assert!(out.contains(&Out::Handover { server: ServerId(6), req, slot: DeviceSlot(0), msg: message(9) }), "{out:?}");
    assert!(!five.is_connected(bob()), "the dead connection is given up");
    let out = run(&mut six, Time::from_secs(1), In::Handover { req, slot: DeviceSlot(0), msg: message(9) });
    assert!(out.iter().any(|o| matches!(o, Out::Reroute { msg, .. } if *msg == message(9))), "{out:?}");
}

/// A group message from Alice to group 7, as stored, minted by server `worker`.
fn group_message(id_ms: u64, worker: u16) -> ChatMessage {
    ChatMessage {
        id: Snowflake::new(worker).next(Time::from_ms(id_ms)),
        conversation: ConversationId::group(GroupId(7)),
        from: UserId(1),
        to: UserId::GROUP,
        client_seq: 3,
        sent_at: Time::ZERO,
    }
}

#[test]
fn a_group_send_is_stored_once_for_the_group() {
    let mut s = server(0);
    connect(&mut s, alice());
    let out = run(
        &mut s,
        Time::ZERO,
        from(alice(), F::Send { to: Recipient::Group(GroupId(7)), client_seq: 1, sent_at: Time::ZERO }),
    );
    match out.as_slice() {
        [Out::Persist { msg, .. }] => {
            assert_eq!(msg.conversation, ConversationId::group(GroupId(7)));
            assert_eq!(msg.to, UserId::GROUP, "one row for every member");
        }
        other => panic!("expected one Persist, got {other:?}"),
    }
}

#[test]
fn a_members_ack_writes_a_receipt_row_and_the_aggregate_reaches_the_sender() {
    let mut s = server(0);
    connect(&mut s, bob());
    let copy = ChatMessage { to: UserId(2), ..group_message(5, 0) };
    let out = run(&mut s, Time::ZERO, from(bob(), F::DeliveredAck { msg: copy, at: Time::ZERO }));
    match out.as_slice() {
        [Out::WriteGroupReceipt { receipt }] => {
            assert_eq!((receipt.state, receipt.by, receipt.msg.to), (ReceiptState::Delivered, bob(), UserId(2)));
        }
        other => panic!("a row of the receipts table, not a receipt to the sender: {other:?}"),
    }
    // A replica says a write completed the aggregate: it goes to the sender (Alice, not
    // here: through the session store).
    let aggregate = Receipt { msg: group_message(5, 0), state: ReceiptState::Delivered, by: bob(), at: Time::ZERO };
    let out = run(&mut s, Time::ZERO, In::GroupAggregate { receipt: aggregate });
    assert!(matches!(out.as_slice(), [Out::RouteReceipt { receipt, .. }] if *receipt == aggregate), "{out:?}");
}

#[test]
fn a_one_to_one_ack_still_goes_straight_to_the_sender() {
    let mut s = server(0);
    connect(&mut s, bob());
    let out = run(&mut s, Time::ZERO, from(bob(), F::DeliveredAck { msg: message(9), at: Time::ZERO }));
    assert!(out.iter().all(|o| !matches!(o, Out::WriteGroupReceipt { .. })), "{out:?}");
    assert!(!out.is_empty());
}
