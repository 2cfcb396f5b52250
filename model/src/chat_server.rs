//! The chat server: owns WebSocket connections and runs the send path.
//!
//! On a send it mints a Snowflake id, persists the message with a quorum write, ACKs ✓ to
//! the sender once the quorum answers, then publishes to Kafka for routing. On a forward
//! from the router it pushes to the recipient's device, or leaves an inbox pointer when
//! the device is no longer here. It relays delivered receipts back to the sender's server.

use crate::{
    ChatMessage, Consistency, ConversationId, DeviceId, MessageId, ServerId, SessionEntry, Snowflake, Time, UserId,
    DEVICES_PER_USER_MAX,
};
use rustc_hash::FxHashSet;
use slotmap::{DefaultKey, Key, KeyData, SlotMap};
use std::collections::VecDeque;
use std::time::Duration;

/// Settings of one chat server. Defaults follow the design card.
#[derive(Clone, Debug)]
pub struct ChatServerConfig {
    pub id: ServerId,
    /// Connections this server accepts before refusing (default 100,000).
    pub connections_max: u32,
    /// Replicas of each message row (default 3).
    pub replication_factor: u8,
    /// Acknowledgements awaited before ✓ (default quorum).
    pub write_consistency: Consistency,
    /// TTL of `session:{user}` set on connect (default 86,400 s).
    pub session_ttl: Duration,
    /// How long to wait for Kafka's produce ACK before publishing again (default 1 s).
    pub publish_timeout: Duration,
}

impl ChatServerConfig {
    /// The card's settings for server `id`.
    pub fn new(id: ServerId) -> ChatServerConfig {
        ChatServerConfig {
            id,
            connections_max: 100_000,
            replication_factor: 3,
            write_consistency: Consistency::Quorum,
            session_ttl: Duration::from_secs(86_400),
            publish_timeout: Duration::from_secs(1),
        }
    }
}

/// Everything that can happen to a chat server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChatServerInput {
    /// A device opens a WebSocket.
    Connect { device: DeviceId },
    /// A device's WebSocket closed.
    Disconnect { device: DeviceId },
    /// A connected device sends a message.
    ClientSend { device: DeviceId, to: UserId, client_seq: u32, sent_at: Time },
    /// A Cassandra replica acknowledged a write.
    WriteAck { req: u64 },
    /// Kafka acknowledged a publish.
    ProduceAck { req: u64 },
    /// The router forwards a message for a device connected here.
    Forward { msg: ChatMessage },
    /// A device connected here acknowledged receipt of a message.
    DeliveredAck { device: DeviceId, msg: ChatMessage, acked_at: Time },
    /// The session store answered a lookup.
    SessionReply { req: u64, entry: Option<SessionEntry> },
    /// Another server relays a delivered receipt for a sender connected here.
    ReceiptRelay { msg: ChatMessage, acked_at: Time },
}

/// The effects a chat server asks its environment to perform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChatServerOutput {
    /// Tell the device its connection is accepted.
    ConnectAccepted { device: DeviceId },
    /// Tell the device to try another server: this one is full.
    ConnectRefused { device: DeviceId },
    /// `SET session:{user}` for this device -> this server, with the session TTL.
    SessionSet { device: DeviceId, server: ServerId, ttl: Duration },
    /// Clear this device's session field if it still points here.
    SessionClear { device: DeviceId, server: ServerId },
    /// Write the message row to every replica of its partition.
    Persist { req: u64, msg: ChatMessage },
    /// ✓ to the sender's device.
    SentAck { device: DeviceId, msg: ChatMessage },
    /// Publish to the `messages` topic, keyed by conversation.
    Publish { req: u64, msg: ChatMessage },
    /// Push the message to a device connected here.
    Push { device: DeviceId, msg: ChatMessage },
    /// `ZADD inbox:{user} id id`: the recipient is not here any more.
    InboxAdd { user: UserId, id: MessageId },
    /// `GET session:{user}`.
    SessionGet { req: u64, user: UserId },
    /// Relay a delivered receipt to the server holding the sender.
    RelayReceipt { server: ServerId, msg: ChatMessage, acked_at: Time },
    /// ✓✓ to the sender's device.
    Receipt { device: DeviceId, msg: ChatMessage, acked_at: Time },
}

#[derive(Debug)]
struct PendingWrite {
    msg: ChatMessage,
    device: DeviceId,
    acks: u8,
}

#[derive(Debug)]
struct PendingPublish {
    msg: ChatMessage,
    deadline: Time,
}

#[derive(Debug)]
struct PendingReceipt {
    msg: ChatMessage,
    acked_at: Time,
}

/// One chat server's state.
#[derive(Debug)]
pub struct ChatServer {
    config: ChatServerConfig,
    acks_required: u8,
    snowflake: Snowflake,
    /// Connected devices, each packed into one `u32` (see `conn_key`): a set of 4-byte
    /// keys keeps a 100K-connection table at about 600 KB, so lookups mostly hit cache.
    connections: FxHashSet<u32>,
    writes: SlotMap<DefaultKey, PendingWrite>,
    publishes: SlotMap<DefaultKey, PendingPublish>,
    /// Publish deadlines in the order they were set (a deadline is always now + timeout).
    publish_deadlines: VecDeque<(Time, DefaultKey)>,
    receipts: SlotMap<DefaultKey, PendingReceipt>,
}

const _: () = assert!(DEVICES_PER_USER_MAX <= 2, "a device slot takes one bit of the connection key");

/// A device packed as `user * 2 + slot`; user ids stay below 2^31 (a billion users at most).
fn conn_key(device: DeviceId) -> u32 {
    debug_assert!(device.user.0 < 1 << 31 && usize::from(device.slot.0) < DEVICES_PER_USER_MAX);
    (device.user.0 << 1) | u32::from(device.slot.0)
}

fn key_to_req(k: DefaultKey) -> u64 {
    k.data().as_ffi()
}

fn req_to_key(req: u64) -> DefaultKey {
    KeyData::from_ffi(req).into()
}

impl ChatServer {
    /// A freshly started server with no connections.
    pub fn new(config: ChatServerConfig) -> ChatServer {
        ChatServer {
            acks_required: config.write_consistency.acks_required(config.replication_factor),
            snowflake: Snowflake::new(config.id.0),
            config,
            connections: FxHashSet::default(),
            writes: SlotMap::new(),
            publishes: SlotMap::new(),
            publish_deadlines: VecDeque::new(),
            receipts: SlotMap::new(),
        }
    }

    /// This server's id.
    pub fn id(&self) -> ServerId {
        self.config.id
    }

    /// Devices connected now.
    pub fn connection_count(&self) -> u32 {
        self.connections.len() as u32
    }

    /// Whether `device` is connected here.
    pub fn is_connected(&self, device: DeviceId) -> bool {
        self.connections.contains(&conn_key(device))
    }

    /// Operations waiting on another tier: quorum writes, publishes, receipt lookups.
    pub fn pending(&self) -> usize {
        self.writes.len() + self.publishes.len() + self.receipts.len()
    }

    /// Handle one input at `now`, appending effects to `out`.
    pub fn handle(&mut self, now: Time, input: ChatServerInput, out: &mut Vec<ChatServerOutput>) {
        match input {
            ChatServerInput::Connect { device } => self.on_connect(device, out),
            ChatServerInput::Disconnect { device } => self.on_disconnect(device, out),
            ChatServerInput::ClientSend { device, to, client_seq, sent_at } => {
                let msg = ChatMessage {
                    id: self.snowflake.next(now),
                    conversation: ConversationId::direct(device.user, to),
                    from: device.user,
                    to,
                    client_seq,
                    sent_at,
                };
                let req = key_to_req(self.writes.insert(PendingWrite { msg, device, acks: 0 }));
                out.push(ChatServerOutput::Persist { req, msg });
            }
            ChatServerInput::WriteAck { req } => self.on_write_ack(now, req, out),
            ChatServerInput::ProduceAck { req } => {
                // A late or duplicate ACK finds nothing: the entry was already removed.
                self.publishes.remove(req_to_key(req));
            }
            ChatServerInput::Forward { msg } => {
                let device = crate::DeviceId::phone(msg.to);
                if self.is_connected(device) {
                    out.push(ChatServerOutput::Push { device, msg });
                } else {
                    // Routed to a stale server (the device moved or left): keep the
                    // message reachable through the inbox instead of dropping it.
                    out.push(ChatServerOutput::InboxAdd { user: msg.to, id: msg.id });
                }
            }
            ChatServerInput::DeliveredAck { msg, acked_at, .. } => {
                let req = key_to_req(self.receipts.insert(PendingReceipt { msg, acked_at }));
                out.push(ChatServerOutput::SessionGet { req, user: msg.from });
            }
            ChatServerInput::SessionReply { req, entry } => self.on_session_reply(req, entry, out),
            ChatServerInput::ReceiptRelay { msg, acked_at } => {
                let device = DeviceId::phone(msg.from);
                if self.is_connected(device) {
                    out.push(ChatServerOutput::Receipt { device, msg, acked_at });
                }
                // A sender who left meanwhile sees the receipt on reconnect (stored
                // receipts arrive with the offline lifecycle).
            }
        }
    }

    /// Re-publish what Kafka has not acknowledged in time. Call once per tick.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<ChatServerOutput>) {
        while let Some(&(deadline, key)) = self.publish_deadlines.front() {
            if deadline > now {
                break;
            }
            self.publish_deadlines.pop_front();
            if let Some(p) = self.publishes.get_mut(key) {
                p.deadline = now + self.config.publish_timeout;
                self.publish_deadlines.push_back((p.deadline, key));
                out.push(ChatServerOutput::Publish { req: key_to_req(key), msg: p.msg });
            }
        }
    }

    fn on_connect(&mut self, device: DeviceId, out: &mut Vec<ChatServerOutput>) {
        if self.is_connected(device) {
            out.push(ChatServerOutput::ConnectAccepted { device });
            return;
        }
        if self.connection_count() >= self.config.connections_max {
            out.push(ChatServerOutput::ConnectRefused { device });
            return;
        }
        self.connections.insert(conn_key(device));
        out.push(ChatServerOutput::ConnectAccepted { device });
        out.push(ChatServerOutput::SessionSet { device, server: self.config.id, ttl: self.config.session_ttl });
    }

    fn on_disconnect(&mut self, device: DeviceId, out: &mut Vec<ChatServerOutput>) {
        if !self.connections.remove(&conn_key(device)) {
            return;
        }
        out.push(ChatServerOutput::SessionClear { device, server: self.config.id });
    }

    fn on_write_ack(&mut self, now: Time, req: u64, out: &mut Vec<ChatServerOutput>) {
        let key = req_to_key(req);
        let Some(w) = self.writes.get_mut(key) else {
            return; // a replica answering after the quorum did: nothing left to do
        };
        w.acks += 1;
        if w.acks < self.acks_required {
            return;
        }
        let w = self.writes.remove(key).expect("entry checked above");
        if self.is_connected(w.device) {
            out.push(ChatServerOutput::SentAck { device: w.device, msg: w.msg });
        }
        let deadline = now + self.config.publish_timeout;
        let key = self.publishes.insert(PendingPublish { msg: w.msg, deadline });
        self.publish_deadlines.push_back((deadline, key));
        out.push(ChatServerOutput::Publish { req: key_to_req(key), msg: w.msg });
    }

    fn on_session_reply(&mut self, req: u64, entry: Option<SessionEntry>, out: &mut Vec<ChatServerOutput>) {
        let Some(r) = self.receipts.remove(req_to_key(req)) else {
            return;
        };
        let sender_server = entry.and_then(|e| e.servers[0]);
        match sender_server {
            Some(server) if server == self.config.id => {
                self.handle_local_receipt(r, out);
            }
            Some(server) => out.push(ChatServerOutput::RelayReceipt { server, msg: r.msg, acked_at: r.acked_at }),
            // The sender is offline: the receipt waits for the offline lifecycle.
            None => {}
        }
    }

    fn handle_local_receipt(&mut self, r: PendingReceipt, out: &mut Vec<ChatServerOutput>) {
        let device = DeviceId::phone(r.msg.from);
        if self.is_connected(device) {
            out.push(ChatServerOutput::Receipt { device, msg: r.msg, acked_at: r.acked_at });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceSlot;

    fn server(id: u16) -> ChatServer {
        ChatServer::new(ChatServerConfig::new(ServerId(id)))
    }

    fn alice() -> DeviceId {
        DeviceId::phone(UserId(1))
    }

    fn bob() -> DeviceId {
        DeviceId::phone(UserId(2))
    }

    fn connect(s: &mut ChatServer, d: DeviceId) -> Vec<ChatServerOutput> {
        let mut out = Vec::new();
        s.handle(Time::ZERO, ChatServerInput::Connect { device: d }, &mut out);
        out
    }

    /// Send from Alice and return the Persist request.
    fn send(s: &mut ChatServer, now: Time) -> (u64, ChatMessage) {
        let mut out = Vec::new();
        let input = ChatServerInput::ClientSend { device: alice(), to: UserId(2), client_seq: 7, sent_at: now };
        s.handle(now, input, &mut out);
        match out.as_slice() {
            [ChatServerOutput::Persist { req, msg }] => (*req, *msg),
            other => panic!("expected one Persist, got {other:?}"),
        }
    }

    #[test]
    fn connect_accepts_and_sets_the_session() {
        let mut s = server(3);
        let out = connect(&mut s, alice());
        assert_eq!(out[0], ChatServerOutput::ConnectAccepted { device: alice() });
        assert!(matches!(out[1], ChatServerOutput::SessionSet { server: ServerId(3), .. }));
        assert!(s.is_connected(alice()));
        assert_eq!(s.connection_count(), 1);
        assert_eq!(connect(&mut s, alice()).len(), 1, "a repeated connect only re-accepts");
        assert_eq!(s.connection_count(), 1);
    }

    #[test]
    fn a_full_server_refuses() {
        let mut config = ChatServerConfig::new(ServerId(0));
        config.connections_max = 1;
        let mut s = ChatServer::new(config);
        connect(&mut s, alice());
        assert_eq!(connect(&mut s, bob()), vec![ChatServerOutput::ConnectRefused { device: bob() }]);
    }

    #[test]
    fn disconnect_clears_only_this_device() {
        let mut s = server(0);
        connect(&mut s, alice());
        let web = DeviceId { user: UserId(1), slot: DeviceSlot(1) };
        connect(&mut s, web);
        let mut out = Vec::new();
        s.handle(Time::ZERO, ChatServerInput::Disconnect { device: alice() }, &mut out);
        assert_eq!(out, vec![ChatServerOutput::SessionClear { device: alice(), server: ServerId(0) }]);
        assert!(!s.is_connected(alice()));
        assert!(s.is_connected(web));
        out.clear();
        s.handle(Time::ZERO, ChatServerInput::Disconnect { device: alice() }, &mut out);
        assert!(out.is_empty(), "a second disconnect is a no-op");
        assert_eq!(s.connection_count(), 1);
    }

    #[test]
    fn send_persists_with_a_snowflake_id_of_this_server() {
        let mut s = server(47);
        connect(&mut s, alice());
        let (_, msg) = send(&mut s, Time::from_ms(5));
        assert_eq!(msg.id.worker(), 47);
        assert_eq!(msg.id.timestamp_ms(), 5);
        assert_eq!(msg.conversation, ConversationId::direct(UserId(1), UserId(2)));
        assert_eq!((msg.from, msg.to, msg.client_seq), (UserId(1), UserId(2), 7));
    }

    #[test]
    fn ack_and_publish_wait_for_a_quorum_of_replicas() {
        let mut s = server(0);
        connect(&mut s, alice());
        let (req, msg) = send(&mut s, Time::ZERO);
        let mut out = Vec::new();
        s.handle(Time::ZERO, ChatServerInput::WriteAck { req }, &mut out);
        assert!(out.is_empty(), "one of three replicas is not a quorum");
        s.handle(Time::ZERO, ChatServerInput::WriteAck { req }, &mut out);
        assert_eq!(out[0], ChatServerOutput::SentAck { device: alice(), msg });
        assert!(matches!(out[1], ChatServerOutput::Publish { msg: m, .. } if m == msg));
        out.clear();
        s.handle(Time::ZERO, ChatServerInput::WriteAck { req }, &mut out);
        assert!(out.is_empty(), "the third replica's ACK changes nothing");
    }

    #[test]
    fn unacknowledged_publish_is_retried_until_acked() {
        let mut s = server(0);
        connect(&mut s, alice());
        let (req, _) = send(&mut s, Time::ZERO);
        let mut out = Vec::new();
        s.handle(Time::ZERO, ChatServerInput::WriteAck { req }, &mut out);
        s.handle(Time::ZERO, ChatServerInput::WriteAck { req }, &mut out);
        let ChatServerOutput::Publish { req: preq, .. } = out[1] else { panic!() };
        out.clear();
        s.handle_timeout(Time::from_ms(999), &mut out);
        assert!(out.is_empty());
        s.handle_timeout(Time::from_secs(1), &mut out);
        assert!(matches!(out[0], ChatServerOutput::Publish { req, .. } if req == preq));
        s.handle(Time::from_secs(1), ChatServerInput::ProduceAck { req: preq }, &mut out);
        out.clear();
        s.handle_timeout(Time::from_secs(5), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.pending(), 0);
    }

    fn a_message() -> ChatMessage {
        ChatMessage {
            id: MessageId(99),
            conversation: ConversationId::direct(UserId(1), UserId(2)),
            from: UserId(1),
            to: UserId(2),
            client_seq: 0,
            sent_at: Time::ZERO,
        }
    }

    #[test]
    fn forward_pushes_to_a_connected_device() {
        let mut s = server(0);
        connect(&mut s, bob());
        let mut out = Vec::new();
        s.handle(Time::ZERO, ChatServerInput::Forward { msg: a_message() }, &mut out);
        assert_eq!(out, vec![ChatServerOutput::Push { device: bob(), msg: a_message() }]);
    }

    #[test]
    fn forward_to_a_stale_server_leaves_an_inbox_pointer() {
        let mut s = server(0);
        let mut out = Vec::new();
        s.handle(Time::ZERO, ChatServerInput::Forward { msg: a_message() }, &mut out);
        assert!(matches!(out[0], ChatServerOutput::InboxAdd { user: UserId(2), id: MessageId(99), .. }));
    }

    #[test]
    fn delivered_ack_looks_up_the_sender_and_relays_the_receipt() {
        let mut s = server(0);
        connect(&mut s, bob());
        let mut out = Vec::new();
        let ack = ChatServerInput::DeliveredAck { device: bob(), msg: a_message(), acked_at: Time::from_ms(3) };
        s.handle(Time::from_ms(3), ack, &mut out);
        let ChatServerOutput::SessionGet { req, user } = out[0] else { panic!("{out:?}") };
        assert_eq!(user, UserId(1));
        out.clear();
        let mut entry = SessionEntry::default();
        entry.servers[0] = Some(ServerId(8));
        s.handle(Time::from_ms(4), ChatServerInput::SessionReply { req, entry: Some(entry) }, &mut out);
        assert_eq!(
            out,
            vec![ChatServerOutput::RelayReceipt { server: ServerId(8), msg: a_message(), acked_at: Time::from_ms(3) }]
        );
    }

    #[test]
    fn receipt_for_a_sender_on_the_same_server_goes_straight_to_the_device() {
        let mut s = server(0);
        connect(&mut s, alice());
        connect(&mut s, bob());
        let mut out = Vec::new();
        let ack = ChatServerInput::DeliveredAck { device: bob(), msg: a_message(), acked_at: Time::ZERO };
        s.handle(Time::ZERO, ack, &mut out);
        let ChatServerOutput::SessionGet { req, .. } = out[0] else { panic!() };
        out.clear();
        let mut entry = SessionEntry::default();
        entry.servers[0] = Some(ServerId(0));
        s.handle(Time::ZERO, ChatServerInput::SessionReply { req, entry: Some(entry) }, &mut out);
        assert!(matches!(out[0], ChatServerOutput::Receipt { device, .. } if device == alice()));
    }

    #[test]
    fn relayed_receipt_reaches_a_connected_sender_only() {
        let mut s = server(0);
        let mut out = Vec::new();
        let relay = ChatServerInput::ReceiptRelay { msg: a_message(), acked_at: Time::ZERO };
        s.handle(Time::ZERO, relay, &mut out);
        assert!(out.is_empty());
        connect(&mut s, alice());
        s.handle(Time::ZERO, relay, &mut out);
        assert!(matches!(out[0], ChatServerOutput::Receipt { device, .. } if device == alice()));
    }

    #[test]
    fn stale_session_reply_is_ignored() {
        let mut s = server(0);
        let mut out = Vec::new();
        s.handle(Time::ZERO, ChatServerInput::SessionReply { req: 12345, entry: None }, &mut out);
        s.handle(Time::ZERO, ChatServerInput::WriteAck { req: 12345 }, &mut out);
        assert!(out.is_empty());
    }
}
