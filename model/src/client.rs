//! The client device: sends with a retry-safe client id, acknowledges what it receives,
//! and keeps the ticks of its own messages.

use crate::{ClientMsgId, ReceiptEvent, SenderView, ServerId, Time, UserId};
use rustc_hash::FxHashMap;

/// One device's connection state and send counter: 8 bytes, so that a population shard
/// can hold millions of them in a flat vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientDevice {
    server: Option<ServerId>,
    next_seq: u32,
}

/// A send the device puts on its WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutgoingSend {
    pub server: ServerId,
    pub client_seq: u32,
    pub to: UserId,
    pub sent_at: Time,
}

/// What a device does when something arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// Show the message and acknowledge it (✓✓ for the sender) over this connection.
    AckDelivered { server: ServerId },
    /// A push arrived while the device believes it is disconnected: drop it; the message
    /// is fetched again after the next connect.
    Ignore,
}

impl ClientDevice {
    /// The chat server this device is connected to, if any.
    pub fn server(&self) -> Option<ServerId> {
        self.server
    }

    /// The server accepted the connection.
    pub fn on_connected(&mut self, server: ServerId) {
        self.server = Some(server);
    }

    /// The connection dropped.
    pub fn on_disconnected(&mut self) {
        self.server = None;
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
        match self.server {
            Some(server) => DeviceEvent::AckDelivered { server },
            None => DeviceEvent::Ignore,
        }
    }
}

/// The ticks of messages in flight from a set of devices, keyed by client id. An entry
/// lives from the send until both the ✓ and the ✓✓ have arrived, in either order.
#[derive(Debug, Default)]
pub struct SentMessages {
    views: FxHashMap<u64, SenderView>,
}

impl SentMessages {
    /// The server's ✓ for `id` arrived. Returns whether the shown ticks changed.
    pub fn on_server_ack(&mut self, id: ClientMsgId) -> bool {
        let view = self.views.entry(id.key()).or_default();
        let changed = view.on_server_ack();
        self.forget_if_settled(id);
        changed
    }

    /// A receipt for `id` arrived. Returns whether the shown ticks changed.
    pub fn on_receipt(&mut self, id: ClientMsgId, event: ReceiptEvent) -> bool {
        let view = self.views.entry(id.key()).or_default();
        let changed = view.on_receipt(event);
        self.forget_if_settled(id);
        changed
    }

    /// Messages still waiting for a tick.
    pub fn in_flight(&self) -> usize {
        self.views.len()
    }

    fn forget_if_settled(&mut self, id: ClientMsgId) {
        // Delivered is as far as a 1:1 receipt goes until read receipts exist; once both
        // ticks are in, nothing can move this view again.
        if self.views[&id.key()].settled_at(crate::ReceiptState::Delivered) {
            self.views.remove(&id.key());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disconnected_device_cannot_send() {
        let mut d = ClientDevice::default();
        assert_eq!(d.send(UserId(2), Time::ZERO), None);
        assert_eq!(d.on_push(), DeviceEvent::Ignore);
    }

    #[test]
    fn sends_take_increasing_client_sequence_numbers() {
        let mut d = ClientDevice::default();
        d.on_connected(ServerId(4));
        let a = d.send(UserId(2), Time::from_ms(1)).unwrap();
        let b = d.send(UserId(3), Time::from_ms(2)).unwrap();
        assert_eq!((a.server, a.client_seq, b.client_seq), (ServerId(4), 0, 1));
        assert_eq!(d.on_push(), DeviceEvent::AckDelivered { server: ServerId(4) });
        d.on_disconnected();
        assert_eq!(d.server(), None);
    }

    #[test]
    fn sent_messages_forget_once_both_ticks_arrive_in_any_order() {
        let mut s = SentMessages::default();
        let a = ClientMsgId { sender: UserId(1), seq: 0 };
        let b = ClientMsgId { sender: UserId(1), seq: 1 };
        assert!(s.on_server_ack(a));
        assert!(s.on_receipt(b, ReceiptEvent::DeliveredAck));
        assert_eq!(s.in_flight(), 2);
        assert!(s.on_receipt(a, ReceiptEvent::DeliveredAck));
        assert!(!s.on_server_ack(b), "a late ✓ after ✓✓ changes nothing");
        assert_eq!(s.in_flight(), 0);
    }
}
