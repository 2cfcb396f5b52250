//! The client device: connects with a cursor, catches up on its inbox before showing live
//! messages, shows each message once and in id order per conversation (acknowledging
//! every arrival, repeats included), and keeps the ticks of its own messages.

use crate::{
    ChatMessage, ClientMsgId, ConversationId, DeviceId, MessageId, ReceiptEvent, ReceiptState, SenderView, ServerId,
    Time, UserId,
};
use rustc_hash::FxHashMap;

/// Where a device is in its connection's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceState {
    /// No connection (not yet connected, or the network is gone).
    #[default]
    Offline,
    /// Connection requested, not yet accepted.
    Connecting,
    /// Accepted; the inbox fetch is in progress: arrivals are held until it ends, so
    /// that older fetched messages are shown before newer live ones.
    CatchingUp,
    /// Shows arrivals as they come.
    Live,
}

/// One device's connection state, cursor and send counter: 24 bytes, so that a
/// population shard can hold millions of them in a flat vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientDevice {
    server: Option<ServerId>,
    next_seq: u32,
    /// The newest message id this device has shown: the inbox is fetched from here.
    cursor: MessageId,
    state: DeviceState,
    /// Which of the device's connections this is: a close names its connection, so a late
    /// close of an old socket cannot close a newer one.
    epoch: u32,
}

/// A send the device puts on its WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutgoingSend {
    pub server: ServerId,
    pub client_seq: u32,
    pub to: UserId,
    pub sent_at: Time,
}

/// What a device does with a pushed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// Acknowledge it over this connection, and show it now.
    Show { server: ServerId },
    /// Acknowledge it, but hold it until the catch-up ends.
    Hold { server: ServerId },
    /// The device believes it has no connection: drop it (it comes again via the inbox).
    Ignore,
}

impl ClientDevice {
    /// The chat server this device is connected to, if any.
    pub fn server(&self) -> Option<ServerId> {
        self.server
    }

    /// The connection state.
    pub fn state(&self) -> DeviceState {
        self.state
    }

    /// The newest message shown.
    pub fn cursor(&self) -> MessageId {
        self.cursor
    }

    /// Start connecting a new socket; returns the cursor and the connection's epoch to
    /// send with the connect.
    pub fn connect(&mut self) -> (MessageId, u32) {
        self.state = DeviceState::Connecting;
        self.epoch = self.epoch.wrapping_add(1);
        (self.cursor, self.epoch)
    }

    /// The epoch of the current (or last) connection.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The server accepted the connection: catch up first.
    pub fn on_connected(&mut self, server: ServerId) {
        self.server = Some(server);
        self.state = DeviceState::CatchingUp;
    }

    /// The inbox fetch ended: from now on arrivals are shown at once.
    pub fn on_fetch_done(&mut self) {
        if self.state == DeviceState::CatchingUp {
            self.state = DeviceState::Live;
        }
    }

    /// The connection is gone.
    pub fn on_disconnected(&mut self) {
        self.server = None;
        self.state = DeviceState::Offline;
    }

    /// Send a message to `to` at `now`, if connected. Each send takes a fresh client
    /// sequence number, which makes a retried send recognisable.
    pub fn send(&mut self, to: UserId, now: Time) -> Option<OutgoingSend> {
        let server = self.server?;
        let client_seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        Some(OutgoingSend { server, client_seq, to, sent_at: now })
    }

    /// A message was pushed to this device.
    pub fn on_push(&self) -> DeviceEvent {
        match (self.server, self.state) {
            (Some(server), DeviceState::Live) => DeviceEvent::Show { server },
            (Some(server), _) => DeviceEvent::Hold { server },
            (None, _) => DeviceEvent::Ignore,
        }
    }

    /// A message was shown: the cursor moves forward, never back.
    pub fn on_shown(&mut self, id: MessageId) {
        self.cursor = self.cursor.max(id);
    }
}

/// What a set of devices has shown: per (device, conversation), the newest id shown.
/// Delivery is at-least-once and arrives in id order per conversation, so a message at or
/// below that id was shown already: showing it again would duplicate it.
#[derive(Debug, Default)]
pub struct Displayed {
    newest: FxHashMap<(u32, ConversationId), MessageId>,
}

/// A device packed into one integer key.
pub fn device_key(d: DeviceId) -> u32 {
    (d.user.0 << 1) | u32::from(d.slot.0)
}

impl Displayed {
    /// Show `msg` on `device` unless it was shown already; returns whether it was shown.
    pub fn show(&mut self, device: DeviceId, msg: &ChatMessage) -> bool {
        let newest = self.newest.entry((device_key(device), msg.conversation)).or_default();
        if msg.id <= *newest {
            return false;
        }
        *newest = msg.id;
        true
    }

    /// Conversations tracked.
    pub fn len(&self) -> usize {
        self.newest.len()
    }

    /// Whether nothing was shown yet.
    pub fn is_empty(&self) -> bool {
        self.newest.is_empty()
    }
}

/// The ticks of messages in flight from a set of devices, keyed by client id. An entry
/// lives from the send until the ✓ and the read receipt have arrived, in any order; a
/// message that is not here was never sent by these devices or is settled (read), so a
/// late receipt for it changes nothing.
#[derive(Debug, Default)]
pub struct SentMessages {
    views: FxHashMap<u64, SenderView>,
}

impl SentMessages {
    /// The device sent `id`: its ticks start empty.
    pub fn on_send(&mut self, id: ClientMsgId) {
        self.views.insert(id.key(), SenderView::default());
    }

    /// The server's ✓ for `id` arrived. Returns whether the shown ticks changed.
    pub fn on_server_ack(&mut self, id: ClientMsgId) -> bool {
        let Some(view) = self.views.get_mut(&id.key()) else { return false };
        let changed = view.on_server_ack();
        self.forget_if_settled(id);
        changed
    }

    /// A receipt for `id` arrived. Returns the ticks shown before and after, when they
    /// changed (`None` after: settled at read and forgotten).
    pub fn on_receipt(
        &mut self,
        id: ClientMsgId,
        event: ReceiptEvent,
    ) -> Option<(Option<ReceiptState>, Option<ReceiptState>)> {
        let view = self.views.get_mut(&id.key())?;
        let before = view.shown();
        if !view.on_receipt(event) {
            return None;
        }
        let after = view.shown();
        self.forget_if_settled(id);
        Some((before, after))
    }

    /// What the sender's device shows for `id` now (`None`: in flight or settled and
    /// forgotten).
    pub fn shown(&self, id: ClientMsgId) -> Option<ReceiptState> {
        self.views.get(&id.key()).and_then(SenderView::shown)
    }

    /// Messages still waiting for a tick.
    pub fn in_flight(&self) -> usize {
        self.views.len()
    }

    fn forget_if_settled(&mut self, id: ClientMsgId) {
        // Read is the last state; once the ✓ and the read receipt are in, nothing can
        // move this view again.
        if self.views[&id.key()].settled_at(ReceiptState::Read) {
            self.views.remove(&id.key());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64, conversation: u64) -> ChatMessage {
        ChatMessage {
            id: MessageId(id),
            conversation: ConversationId(conversation),
            from: UserId(1),
            to: UserId(2),
            client_seq: 0,
            sent_at: Time::ZERO,
        }
    }

    #[test]
    fn a_disconnected_device_cannot_send_and_ignores_pushes() {
        let mut d = ClientDevice::default();
        assert_eq!(d.send(UserId(2), Time::ZERO), None);
        assert_eq!(d.on_push(), DeviceEvent::Ignore);
    }

    #[test]
    fn a_device_holds_arrivals_while_catching_up_then_shows_them() {
        let mut d = ClientDevice::default();
        assert_eq!(d.connect(), (MessageId(0), 1));
        assert_eq!(d.state(), DeviceState::Connecting);
        d.on_connected(ServerId(4));
        assert_eq!(d.on_push(), DeviceEvent::Hold { server: ServerId(4) });
        d.on_fetch_done();
        assert_eq!(d.on_push(), DeviceEvent::Show { server: ServerId(4) });
        d.on_disconnected();
        assert_eq!((d.server(), d.state()), (None, DeviceState::Offline));
    }

    #[test]
    fn the_cursor_only_moves_forward_and_survives_a_disconnect() {
        let mut d = ClientDevice::default();
        d.on_shown(MessageId(9));
        d.on_shown(MessageId(4));
        d.on_disconnected();
        assert_eq!(d.connect(), (MessageId(9), 1));
    }

    #[test]
    fn sends_take_increasing_client_sequence_numbers() {
        let mut d = ClientDevice::default();
        d.on_connected(ServerId(4));
        let a = d.send(UserId(2), Time::from_ms(1)).unwrap();
        let b = d.send(UserId(3), Time::from_ms(2)).unwrap();
        assert_eq!((a.server, a.client_seq, b.client_seq), (ServerId(4), 0, 1));
    }

    #[test]
    fn each_message_is_shown_once_per_device() {
        let mut shown = Displayed::default();
        let (phone, web) = (DeviceId::phone(UserId(2)), DeviceId { user: UserId(2), slot: crate::DeviceSlot(1) });
        assert!(shown.show(phone, &msg(5, 1)));
        assert!(!shown.show(phone, &msg(5, 1)), "a redelivery is not shown twice");
        assert!(shown.show(web, &msg(5, 1)), "each device shows it once");
        assert!(shown.show(phone, &msg(3, 2)), "conversations are independent");
        assert!(shown.show(phone, &msg(7, 1)));
        assert_eq!(shown.len(), 3);
    }

    #[test]
    fn sent_messages_forget_once_read_and_acked_in_any_order() {
        let mut s = SentMessages::default();
        let a = ClientMsgId { sender: UserId(1), seq: 0 };
        assert!(!s.on_server_ack(a), "not sent by these devices");
        s.on_send(a);
        assert_eq!(s.on_receipt(a, ReceiptEvent::DeliveredAck), Some((None, Some(ReceiptState::Delivered))));
        assert_eq!(s.shown(a), Some(ReceiptState::Delivered));
        assert!(!s.on_server_ack(a), "a late ✓ after ✓✓ changes nothing");
        let read = Some((Some(ReceiptState::Delivered), Some(ReceiptState::Read)));
        assert_eq!(s.on_receipt(a, ReceiptEvent::ReadAck), read);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.on_receipt(a, ReceiptEvent::DeliveredAck), None, "a late receipt after settling changes nothing");
        assert_eq!(s.shown(a), None);
    }
}
