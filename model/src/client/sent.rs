//! The ticks (✓, ✓✓ grey, ✓✓ blue) of messages a set of devices sent.

use crate::receipts::{sender_transition, SenderEvent, SenderTransitionCounts};
use crate::{ClientMsgId, ReceiptEvent, ReceiptState, SenderView, SplitU64, Table};

/// The ticks of messages in flight from a set of devices, keyed by client id. An entry
/// lives from the send until the ✓ and the read receipt have arrived, in any order; a
/// message that is not here was never sent by these devices or is settled (read), so a
/// late receipt for it changes nothing.
#[derive(Debug, Default)]
pub struct SentMessages {
    /// By client id: 12-byte slots (a `u64` key would pad them to 16).
    views: Table<SplitU64, SenderView>,
    /// Times each row of `SENDER_TRANSITIONS` moved a view here.
    fired: SenderTransitionCounts,
    /// Moves of a view that no row of the table allows (a bug: the ticks went back).
    off_table: u64,
}

const _: () = assert!(std::mem::size_of::<(SplitU64, SenderView)>() == 12);

/// The table key of a client id.
#[inline]
fn key(id: ClientMsgId) -> SplitU64 {
    SplitU64::from(id.key())
}

impl SentMessages {
    /// The device sent `id`: its ticks start empty.
    pub fn on_send(&mut self, id: ClientMsgId) {
        self.views.insert(key(id), SenderView::default());
    }

    /// The server's ✓ for `id` arrived. Returns whether it is the first ✓ for it, and
    /// whether the shown ticks changed.
    pub fn on_server_ack(&mut self, id: ClientMsgId) -> (bool, bool) {
        let Some(view) = self.views.get_mut(key(id)) else { return (false, false) };
        let first = !view.is_acked();
        let before = view.shown();
        let changed = view.on_server_ack();
        if changed {
            let after = view.shown();
            self.count(before, SenderEvent::ServerAck, after);
        }
        self.forget_if_settled(id);
        (first, changed)
    }

    /// A receipt for `id` arrived. Returns the ticks shown before and after, when they
    /// changed (`None` after: settled at read and forgotten).
    pub fn on_receipt(
        &mut self,
        id: ClientMsgId,
        event: ReceiptEvent,
    ) -> Option<(Option<ReceiptState>, Option<ReceiptState>)> {
        let view = self.views.get_mut(key(id))?;
        let before = view.shown();
        if !view.on_receipt(event) {
            return None;
        }
        let after = view.shown();
        self.count(before, SenderEvent::Receipt(event), after);
        self.forget_if_settled(id);
        Some((before, after))
    }

    /// What the sender's device shows for `id` now (`None`: in flight or settled and
    /// forgotten).
    pub fn shown(&self, id: ClientMsgId) -> Option<ReceiptState> {
        self.views.get(key(id)).and_then(SenderView::shown)
    }

    /// Whether `id`'s ticks are still followed (sent here, not settled at read).
    pub fn holds(&self, id: ClientMsgId) -> bool {
        self.views.get(key(id)).is_some()
    }

    /// A hint that news of `id` arrives soon: its entry is loaded meanwhile.
    #[inline]
    pub fn prefetch(&self, id: ClientMsgId) {
        self.views.prefetch(key(id));
    }

    /// Messages still waiting for a tick.
    pub fn in_flight(&self) -> usize {
        self.views.len()
    }

    /// Times each row of `SENDER_TRANSITIONS` fired, and moves no row allows.
    pub fn transitions_fired(&self) -> (SenderTransitionCounts, u64) {
        (self.fired, self.off_table)
    }

    fn count(&mut self, before: Option<ReceiptState>, event: SenderEvent, after: Option<ReceiptState>) {
        match sender_transition(before, event, after) {
            Some(row) => self.fired[row] += 1,
            None => self.off_table += 1,
        }
    }

    fn forget_if_settled(&mut self, id: ClientMsgId) {
        // Read is the last state; once the ✓ and the read receipt are in, nothing can
        // move this view again.
        if self.views.get(key(id)).is_some_and(|v| v.settled_at(ReceiptState::Read)) {
            self.views.remove(key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserId;

    #[test]
    fn each_move_of_the_ticks_counts_its_row_of_the_table() {
        let mut s = SentMessages::default();
        let (a, b) = (ClientMsgId { sender: UserId(1), seq: 1 }, ClientMsgId { sender: UserId(1), seq: 2 });
        s.on_send(a);
        s.on_send(b);
        s.on_server_ack(a);
        s.on_receipt(a, ReceiptEvent::DeliveredAck);
        s.on_receipt(a, ReceiptEvent::DeliveredAck);
        s.on_receipt(a, ReceiptEvent::ReadAck);
        s.on_receipt(b, ReceiptEvent::ReadAck);
        s.on_server_ack(b);
        let (fired, off) = s.transitions_fired();
        // ✓ from in flight; delivered from sent; read from delivered; read before the ✓.
        assert_eq!(fired, [1, 0, 1, 1, 0, 1]);
        assert_eq!(off, 0);
    }

    #[test]
    fn sent_messages_forget_once_read_and_acked_in_any_order() {
        let mut s = SentMessages::default();
        let a = ClientMsgId { sender: UserId(1), seq: 0 };
        assert_eq!(s.on_server_ack(a), (false, false), "not sent by these devices");
        s.on_send(a);
        assert_eq!(s.on_receipt(a, ReceiptEvent::DeliveredAck), Some((None, Some(ReceiptState::Delivered))));
        assert_eq!(s.shown(a), Some(ReceiptState::Delivered));
        assert_eq!(s.on_server_ack(a), (true, false), "the first ✓, after ✓✓, changes no ticks");
        let read = Some((Some(ReceiptState::Delivered), Some(ReceiptState::Read)));
        assert_eq!(s.on_receipt(a, ReceiptEvent::ReadAck), read);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.on_receipt(a, ReceiptEvent::DeliveredAck), None, "a late receipt after settling changes nothing");
        assert_eq!(s.shown(a), None);
    }
}
