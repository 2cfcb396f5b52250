//! Which messages a set of devices has shown, for showing each once and in its place.

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

/// How many of a conversation's newest ids shown a device remembers exactly.
pub const SHOWN_EXACT: usize = 4;

/// What showing a message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Showing {
    /// Newer than everything the device showed in its conversation: added at the end.
    Appended,
    /// Older than a message the device showed already, and not shown itself: put in its
    /// place above the newer ones (a message held up on its way, say to a server the device
    /// had left, overtaken by a newer one that went straight to the new server).
    Inserted,
    /// Shown already: not shown again.
    Repeat,
}

/// What a set of devices has shown: per (device, conversation), the `SHOWN_EXACT` newest
/// ids shown, newest first (zero where fewer were shown). A conversation's view is kept in
/// id order, as a messaging app lists a chat by its messages' time: a message older than
/// the newest shown is put in its place if it was not shown, which the newest ids tell
/// exactly down to the oldest of them; one older still is taken for a repeat (delivery is
/// at-least-once, so repeats of old messages are common, and a message overtaken by
/// `SHOWN_EXACT` newer ones of its conversation on its way is not).
#[derive(Debug, Default)]
pub struct Displayed {
    newest: Table<Shown, [MessageId; SHOWN_EXACT]>,
}

impl Displayed {
    /// Show `msg` on `device` unless it was shown already.
    pub fn show(&mut self, device: DeviceId, msg: &ChatMessage) -> Showing {
        let newest = self.newest.get_or_insert_default(Shown(DeviceKey::of(device), msg.conversation));
        if crate::plant::planted(crate::plant::Plant::DedupWrongKey) {
            // Planted: a repeat is recognised only if it is the last message shown.
            if msg.id == newest[0] {
                return Showing::Repeat;
            }
            let appended = msg.id > newest[0];
            newest.copy_within(0..SHOWN_EXACT - 1, 1);
            newest[0] = msg.id;
            return if appended { Showing::Appended } else { Showing::Inserted };
        }
        // Newest first: the place of `msg` among the ids remembered.
        let place = newest.iter().position(|&id| id <= msg.id);
        match place {
            None => Showing::Repeat,
            Some(i) if newest[i] == msg.id => Showing::Repeat,
            Some(i) => {
                newest.copy_within(i..SHOWN_EXACT - 1, i + 1);
                newest[i] = msg.id;
                if i == 0 {
                    Showing::Appended
                } else {
                    Showing::Inserted
                }
            }
        }
    }

    /// Whether `device` has shown `msg`: exactly if it is no older than the oldest id
    /// remembered for its conversation, else taken to have been.
    pub fn has_shown(&self, device: DeviceId, msg: &ChatMessage) -> bool {
        self.newest.get(Shown(DeviceKey::of(device), msg.conversation)).is_some_and(|newest| {
            match newest.iter().position(|&id| id <= msg.id) {
                None => true,
                Some(i) => newest[i] == msg.id,
            }
        })
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
        assert_eq!(shown.show(phone, &msg(5, 1)), Showing::Appended);
        assert_eq!(shown.show(phone, &msg(5, 1)), Showing::Repeat, "a redelivery is not shown twice");
        assert_eq!(shown.show(web, &msg(5, 1)), Showing::Appended, "each device shows it once");
        assert_eq!(shown.show(phone, &msg(3, 2)), Showing::Appended, "conversations are independent");
        assert_eq!(shown.show(phone, &msg(7, 1)), Showing::Appended);
        assert_eq!(shown.len(), 3);
    }

    #[test]
    fn an_overtaken_message_is_put_in_its_place_once() {
        let mut shown = Displayed::default();
        let phone = DeviceId::phone(UserId(2));
        for id in [10, 20, 30] {
            assert_eq!(shown.show(phone, &msg(id, 1)), Showing::Appended);
        }
        assert!(!shown.has_shown(phone, &msg(25, 1)));
        assert_eq!(shown.show(phone, &msg(25, 1)), Showing::Inserted, "overtaken by 30");
        assert!(shown.has_shown(phone, &msg(25, 1)));
        assert_eq!(shown.show(phone, &msg(25, 1)), Showing::Repeat);
        assert_eq!(shown.show(phone, &msg(20, 1)), Showing::Repeat);
        assert_eq!(shown.show(phone, &msg(15, 1)), Showing::Inserted, "between 10 and 20: never shown");
        // Remembered now: 30 25 20 15. Older than all of them: taken for a repeat.
        assert_eq!(shown.show(phone, &msg(12, 1)), Showing::Repeat);
        assert!(shown.has_shown(phone, &msg(10, 1)));
        assert_eq!(shown.show(phone, &msg(40, 1)), Showing::Appended);
        assert_eq!(shown.show(phone, &msg(15, 1)), Showing::Repeat, "fell out of the exact ids: taken for a repeat");
        assert_eq!(shown.show(phone, &msg(35, 1)), Showing::Inserted);
    }
}
