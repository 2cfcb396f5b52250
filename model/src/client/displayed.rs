//! Which messages a set of devices has shown, for showing each once.

use crate::{ChatMessage, ConversationId, DeviceId, DeviceKey, MessageId, Table, TableKey};

/// A device and a conversation, as one key of `Displayed`'s table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shown(DeviceKey, ConversationId);

impl TableKey for Shown {
    // Device keys stay below 2^31.
    const EMPTY: Shown = Shown(DeviceKey(u32::MAX), ConversationId(u64::MAX));

    #[inline]
    fn hash(self) -> u64 {
        (self.1 .0 ^ u64::from(self.0 .0).rotate_left(40)).hash()
    }
}

/// What a set of devices has shown: per (device, conversation), the newest id shown.
/// Delivery is at-least-once and arrives in id order per conversation, so a message at or
/// below that id was shown already: showing it again would duplicate it.
#[derive(Debug, Default)]
pub struct Displayed {
    newest: Table<Shown, MessageId>,
}

impl Displayed {
    /// Show `msg` on `device` unless it was shown already; returns whether it was shown.
    pub fn show(&mut self, device: DeviceId, msg: &ChatMessage) -> bool {
        let newest = self.newest.get_or_insert_default(Shown(DeviceKey::of(device), msg.conversation));
        if crate::plant::planted(crate::plant::Plant::DedupWrongKey) {
            // Planted: a repeat is recognised only if it is the last message shown.
            let repeat = msg.id == *newest;
            *newest = msg.id;
            return !repeat;
        }
        if msg.id <= *newest {
            return false;
        }
        *newest = msg.id;
        true
    }

    /// Whether `device` has shown `msg` (or a newer message of its conversation) already.
    pub fn has_shown(&self, device: DeviceId, msg: &ChatMessage) -> bool {
        self.newest.get(Shown(DeviceKey::of(device), msg.conversation)).is_some_and(|&newest| msg.id <= newest)
    }

    /// A hint that `device` gets a message of `conversation` soon: its entry is loaded
    /// meanwhile.
    #[inline]
    pub fn prefetch(&self, device: DeviceId, conversation: ConversationId) {
        self.newest.prefetch(Shown(DeviceKey::of(device), conversation));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Time, UserId};

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
}
