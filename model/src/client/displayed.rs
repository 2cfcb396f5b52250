//! Which messages a set of devices has shown, for showing each once and in its place.

use crate::{ChatMessage, ConversationId, DeviceId, DeviceKey, MessageId, Table};

/// A device and one of its conversations as one key of `Displayed`'s tables: the device
/// key in the top half, and in the bottom half the other user of a 1:1 conversation (the
/// one that is not the device's user) or, marked by the top bit, the group's conversation
/// number. Conversations pack user ids below 2^30, so the halves never meet; the key is
/// never `u64::MAX` (device keys stay below 2^31).
#[inline]
fn shown_key(device: DeviceId, conversation: ConversationId) -> u64 {
    let (high, low) = ((conversation.0 >> 32) as u32, conversation.0 as u32);
    let other = if conversation.group_id().is_some() {
        (1 << 31) | high
    } else {
        debug_assert!(high == device.user.0 || low == device.user.0, "a device shows its own conversations");
        high ^ low ^ device.user.0
    };
    (u64::from(DeviceKey::of(device).0) << 32) | u64::from(other)
}

/// How many of a conversation's newest ids shown a device remembers exactly.
pub const SHOWN_EXACT: usize = 4;
/// As many for a group conversation: many senders, so a message held up on its way (a
/// broker's failover, a move between servers) is overtaken by more of its conversation's.
pub const SHOWN_EXACT_GROUP: usize = 32;

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
/// ids shown (`SHOWN_EXACT_GROUP` in a group), newest first (zero where fewer were shown).
/// A conversation's view is kept in id order, as a messaging app lists a chat by its
/// messages' time: a message older than the newest shown is put in its place if it was not
/// shown, which the newest ids tell exactly down to the oldest of them; one older still is
/// taken for a repeat (delivery is at-least-once, so repeats of old messages are common,
/// and a message overtaken by that many newer ones of its conversation on its way is not).
///
/// Most of a large run's (device, 1:1 conversation) pairs show one message: the newest id
/// of each is kept in a table of 16-byte slots, and the ids after it only for the pairs
/// that showed more than one (a slot of 48 bytes for every pair took three times as much).
#[derive(Debug, Default)]
pub struct Displayed {
    newest: Table<u64, MessageId>,
    /// The next newest ids of the pairs that showed more than one, newest first.
    older: Table<u64, [MessageId; SHOWN_EXACT - 1]>,
    group_newest: Table<u64, [MessageId; SHOWN_EXACT_GROUP]>,
}

/// Show `id` among the newest ids remembered (see `Displayed`).
fn show_among<const N: usize>(newest: &mut [MessageId; N], id: MessageId) -> Showing {
    if crate::plant::planted(crate::plant::Plant::DedupWrongKey) {
        // Planted: a repeat is recognised only if it is the last message shown.
        if id == newest[0] {
            return Showing::Repeat;
        }
        let appended = id > newest[0];
        newest.copy_within(0..N - 1, 1);
        newest[0] = id;
        return if appended { Showing::Appended } else { Showing::Inserted };
    }
    // Newest first: the place of `id` among the ids remembered.
    match newest.iter().position(|&shown| shown <= id) {
        None => Showing::Repeat,
        Some(i) if newest[i] == id => Showing::Repeat,
        Some(i) => {
            newest.copy_within(i..N - 1, i + 1);
            newest[i] = id;
            if i == 0 {
                Showing::Appended
            } else {
                Showing::Inserted
            }
        }
    }
}

/// Whether `id` was shown, by the newest ids remembered: exactly if it is no older than the
/// oldest of them, else taken to have been.
fn shown_among(newest: &[MessageId], id: MessageId) -> bool {
    match newest.iter().position(|&shown| shown <= id) {
        None => true,
        Some(i) => newest[i] == id,
    }
}

impl Displayed {
    /// A record made for about `pairs` (device, 1:1 conversation) pairs: their newest ids'
    /// table holds them without growing.
    pub fn with_capacity(pairs: usize) -> Displayed {
        Displayed { newest: Table::with_capacity(pairs), ..Displayed::default() }
    }

    /// Show `msg` on `device` unless it was shown already.
    pub fn show(&mut self, device: DeviceId, msg: &ChatMessage) -> Showing {
        let key = shown_key(device, msg.conversation);
        if msg.conversation.group_id().is_some() {
            return show_among(self.group_newest.get_or_insert_default(key), msg.id);
        }
        let newest = self.newest.get_or_insert_default(key);
        if *newest == MessageId(0) {
            // The pair's first: nothing older to keep.
            *newest = msg.id;
            return Showing::Appended;
        }
        let mut ids = [*newest; SHOWN_EXACT];
        ids[1..].copy_from_slice(&self.older.get(key).copied().unwrap_or_default());
        let showing = show_among(&mut ids, msg.id);
        if showing != Showing::Repeat {
            *self.newest.get_mut(key).expect("inserted above") = ids[0];
            self.older.insert(key, ids[1..].try_into().expect("SHOWN_EXACT - 1 ids"));
        }
        showing
    }

    /// Whether `device` has shown `msg`: exactly if it is no older than the oldest id
    /// remembered for its conversation, else taken to have been.
    pub fn has_shown(&self, device: DeviceId, msg: &ChatMessage) -> bool {
        let key = shown_key(device, msg.conversation);
        if msg.conversation.group_id().is_some() {
            return self.group_newest.get(key).is_some_and(|newest| shown_among(newest, msg.id));
        }
        let Some(&newest) = self.newest.get(key) else { return false };
        let mut ids = [newest; SHOWN_EXACT];
        ids[1..].copy_from_slice(&self.older.get(key).copied().unwrap_or_default());
        shown_among(&ids, msg.id)
    }

    /// A hint that `device` gets a message of `conversation` soon: its entry is loaded
    /// meanwhile.
    #[inline]
    pub fn prefetch(&self, device: DeviceId, conversation: ConversationId) {
        let key = shown_key(device, conversation);
        if conversation.group_id().is_some() {
            self.group_newest.prefetch(key);
        } else {
            self.newest.prefetch(key);
        }
    }

    /// Conversations tracked.
    pub fn len(&self) -> usize {
        self.newest.len() + self.group_newest.len()
    }

    /// Whether nothing was shown yet.
    pub fn is_empty(&self) -> bool {
        self.newest.is_empty() && self.group_newest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Time, UserId};

    /// Message `id` to user 2 in its conversation with user `other`.
    fn msg(id: u64, other: u32) -> ChatMessage {
        ChatMessage {
            id: MessageId(id),
            conversation: ConversationId::direct(UserId(other), UserId(2)),
            from: UserId(other),
            to: UserId(2),
            client_seq: 0,
            sent_at: Time::ZERO,
        }
    }

    #[test]
    fn keys_tell_devices_conversations_and_groups_apart() {
        let (phone, web) = (DeviceId::phone(UserId(2)), DeviceId { user: UserId(2), slot: crate::DeviceSlot(1) });
        let direct = |a: u32| ConversationId::direct(UserId(a), UserId(2));
        let mut keys = vec![
            shown_key(phone, direct(1)),
            shown_key(phone, direct(3)),
            shown_key(phone, direct((1 << 30) - 1)),
            shown_key(web, direct(1)),
            shown_key(phone, ConversationId::group(crate::GroupId(1))),
            shown_key(phone, ConversationId::group(crate::GroupId(2))),
            shown_key(web, ConversationId::group(crate::GroupId(1))),
        ];
        assert_eq!(shown_key(phone, direct(1)), shown_key(phone, ConversationId::direct(UserId(2), UserId(1))));
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "distinct");
        assert!(keys.iter().all(|&k| k != u64::MAX));
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
