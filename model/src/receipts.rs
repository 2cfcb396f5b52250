//! Delivery receipts: the per-(message, recipient device) state machine
//! sent -> delivered -> read, monotone and idempotent, and the sender's view of it.

/// The state of one message at one recipient device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReceiptState {
    /// ✓: stored durably and acknowledged to the sender.
    #[default]
    Sent,
    /// ✓✓ grey: the recipient's device has it.
    Delivered,
    /// ✓✓ blue: the recipient opened the conversation.
    Read,
}

/// An event that can move a receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptEvent {
    /// The recipient's device acknowledged receipt.
    DeliveredAck,
    /// The recipient opened the chat.
    ReadAck,
}

/// What applying an event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The state moved forward to the given state.
    Advanced(ReceiptState),
    /// The event was a duplicate or late: nothing changed (idempotence, monotonicity).
    Unchanged,
}

impl ReceiptState {
    /// Apply an event. States only move forward; read implies delivered, so a read ACK
    /// that overtakes its delivered ACK moves straight to `Read`.
    pub fn apply(&mut self, event: ReceiptEvent) -> Transition {
        let target = match event {
            ReceiptEvent::DeliveredAck => ReceiptState::Delivered,
            ReceiptEvent::ReadAck => ReceiptState::Read,
        };
        if target > *self {
            *self = target;
            Transition::Advanced(target)
        } else {
            Transition::Unchanged
        }
    }
}

/// What the sender's device shows for one of its messages. The ✓ (server ACK) and the
/// ✓✓ (delivered receipt) travel different paths and can arrive in either order; the view
/// never goes back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderView {
    /// No tick yet: the send is in flight.
    acked: bool,
    receipt: Option<ReceiptState>,
}

impl SenderView {
    /// The ticks shown: `None` while in flight, else the highest state known.
    pub fn shown(&self) -> Option<ReceiptState> {
        match (self.acked, self.receipt) {
            (_, Some(r)) => Some(r),
            (true, None) => Some(ReceiptState::Sent),
            (false, None) => None,
        }
    }

    /// Whether the server's ✓ has arrived.
    pub fn is_acked(&self) -> bool {
        self.acked
    }

    /// The server's ✓ arrived. Returns whether the shown state changed.
    pub fn on_server_ack(&mut self) -> bool {
        let before = self.shown();
        self.acked = true;
        before != self.shown()
    }

    /// A receipt from the recipient arrived. Returns whether the shown state changed.
    pub fn on_receipt(&mut self, event: ReceiptEvent) -> bool {
        if crate::plant::planted(crate::plant::Plant::ReceiptNotMonotone) {
            // Planted: the latest receipt to arrive wins, even an older state.
            let before = self.shown();
            let mut state = ReceiptState::Sent;
            state.apply(event);
            self.receipt = Some(state);
            return before != self.shown();
        }
        let mut state = self.receipt.unwrap_or(ReceiptState::Sent);
        let moved = matches!(state.apply(event), Transition::Advanced(_));
        if moved || self.receipt.is_none() {
            let before = self.shown();
            self.receipt = Some(state);
            return before != self.shown();
        }
        false
    }

    /// Whether the sender has both the ✓ and a receipt of at least `state`: nothing later
    /// for this message up to `state` can change the view.
    pub fn settled_at(&self, state: ReceiptState) -> bool {
        self.acked && self.receipt.is_some_and(|r| r >= state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_to_delivered_to_read() {
        let mut s = ReceiptState::Sent;
        assert_eq!(s.apply(ReceiptEvent::DeliveredAck), Transition::Advanced(ReceiptState::Delivered));
        assert_eq!(s.apply(ReceiptEvent::ReadAck), Transition::Advanced(ReceiptState::Read));
    }

    #[test]
    fn duplicate_delivered_is_harmless() {
        let mut s = ReceiptState::Sent;
        s.apply(ReceiptEvent::DeliveredAck);
        assert_eq!(s.apply(ReceiptEvent::DeliveredAck), Transition::Unchanged);
        assert_eq!(s, ReceiptState::Delivered);
    }

    #[test]
    fn late_delivered_after_read_does_not_go_back() {
        let mut s = ReceiptState::Sent;
        assert_eq!(s.apply(ReceiptEvent::ReadAck), Transition::Advanced(ReceiptState::Read));
        assert_eq!(s.apply(ReceiptEvent::DeliveredAck), Transition::Unchanged);
        assert_eq!(s, ReceiptState::Read);
    }

    #[test]
    fn sender_view_in_order() {
        let mut v = SenderView::default();
        assert_eq!(v.shown(), None);
        assert!(v.on_server_ack());
        assert_eq!(v.shown(), Some(ReceiptState::Sent));
        assert!(v.on_receipt(ReceiptEvent::DeliveredAck));
        assert_eq!(v.shown(), Some(ReceiptState::Delivered));
        assert!(v.settled_at(ReceiptState::Delivered));
    }

    #[test]
    fn sender_view_receipt_before_server_ack_never_goes_back() {
        let mut v = SenderView::default();
        assert!(v.on_receipt(ReceiptEvent::DeliveredAck));
        assert_eq!(v.shown(), Some(ReceiptState::Delivered));
        assert!(!v.settled_at(ReceiptState::Delivered));
        assert!(!v.on_server_ack(), "a late ✓ must not change ✓✓ back to ✓");
        assert_eq!(v.shown(), Some(ReceiptState::Delivered));
        assert!(v.settled_at(ReceiptState::Delivered));
    }

    #[test]
    fn sender_view_duplicate_receipt_is_unchanged() {
        let mut v = SenderView::default();
        v.on_server_ack();
        v.on_receipt(ReceiptEvent::DeliveredAck);
        assert!(!v.on_receipt(ReceiptEvent::DeliveredAck));
        assert!(!v.on_server_ack());
    }
}

/// A receipt travelling back to the sender: which message, which state, which of the
/// recipient's devices, and when that device acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub msg: crate::ChatMessage,
    pub state: ReceiptState,
    pub by: crate::DeviceId,
    pub at: crate::Time,
}

impl Receipt {
    /// The event this receipt applies to the sender's view.
    pub fn event(&self) -> ReceiptEvent {
        match self.state {
            ReceiptState::Read => ReceiptEvent::ReadAck,
            _ => ReceiptEvent::DeliveredAck,
        }
    }
}
