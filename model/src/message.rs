//! The message as it travels: what the chat server stores, publishes and pushes.

use crate::{ClientMsgId, ConversationId, GroupId, MessageId, Time, UserId};

/// One chat message: 1:1, or a group's (`to` is then `UserId::GROUP` as stored and
/// published, and names the member in each member's copy). The body is not modelled (end-to-end encrypted bytes the server
/// never reads); what routing needs is here. `sent_at` is the sender's client timestamp,
/// which real messages carry too and which the simulator uses to measure latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// Minted by the sender's chat server when it accepts the send.
    pub id: MessageId,
    pub conversation: ConversationId,
    pub from: UserId,
    pub to: UserId,
    /// The sender's retry-safe id for this send.
    pub client_seq: u32,
    /// When the sender's device sent it.
    pub sent_at: Time,
}

impl ChatMessage {
    /// The sender's client id of this message.
    pub fn client_id(&self) -> ClientMsgId {
        ClientMsgId { sender: self.from, seq: self.client_seq }
    }
}

/// A message packed into 28 bytes where a `ChatMessage` takes 40, for what is kept in
/// bulk (the inbox pointers' messages, the reads waiting for their time). The conversation
/// is not stored: a 1:1 message's is its two users', and a group message keeps its group
/// in place of the recipient (a member's copy names the member, which the holder gives
/// back on unpacking). Packed to 4 bytes, so that the two 64-bit fields leave no padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct PackedMessage {
    id: MessageId,
    sent_at: Time,
    from: UserId,
    /// The recipient, or `GROUP_MARK | group` for a group message.
    to: u32,
    client_seq: u32,
}

const _: () = assert!(std::mem::size_of::<PackedMessage>() == 28);

/// The mark of a group message in `PackedMessage::to`: user ids and group numbers stay
/// below 2^30 (and `UserId::GROUP` is never a 1:1 message's recipient).
const GROUP_MARK: u32 = 1 << 31;

impl PackedMessage {
    /// Pack `msg`; a group message's recipient is left out (see `message`).
    #[inline]
    pub fn of(msg: &ChatMessage) -> PackedMessage {
        let to = match msg.conversation.group_id() {
            Some(group) => GROUP_MARK | group.0,
            None => {
                debug_assert_eq!(
                    msg.conversation,
                    ConversationId::direct(msg.from, msg.to),
                    "a 1:1 message's partition"
                );
                msg.to.0
            }
        };
        PackedMessage { id: msg.id, sent_at: msg.sent_at, from: msg.from, to, client_seq: msg.client_seq }
    }

    /// The message's id.
    #[inline]
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The message's conversation.
    #[inline]
    pub fn conversation(&self) -> ConversationId {
        let (from, to) = (self.from, self.to);
        if to & GROUP_MARK != 0 {
            ConversationId::group(GroupId(to & !GROUP_MARK))
        } else {
            ConversationId::direct(from, UserId(to))
        }
    }

    /// The message back, a group message's naming `member` as its recipient.
    #[inline]
    pub fn message(&self, member: UserId) -> ChatMessage {
        let to = if self.to & GROUP_MARK != 0 { member } else { UserId(self.to) };
        ChatMessage {
            id: self.id,
            conversation: self.conversation(),
            from: self.from,
            to,
            client_seq: self.client_seq,
            sent_at: self.sent_at,
        }
    }
}

/// Whom a device sends a message to: one user, or a group (every member but the sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    User(UserId),
    Group(GroupId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_message_gives_back_the_message() {
        let direct = ChatMessage {
            id: MessageId(7),
            conversation: ConversationId::direct(UserId(1), UserId(2)),
            from: UserId(1),
            to: UserId(2),
            client_seq: u32::MAX,
            sent_at: Time(123_456_789_012),
        };
        assert_eq!(PackedMessage::of(&direct).message(UserId::GROUP), direct);
        let high = ChatMessage {
            conversation: ConversationId::direct(UserId((1 << 30) - 1), UserId((1 << 30) - 2)),
            from: UserId((1 << 30) - 1),
            to: UserId((1 << 30) - 2),
            ..direct
        };
        assert_eq!(PackedMessage::of(&high).message(UserId::GROUP), high);
        let group = ChatMessage {
            conversation: ConversationId::group(GroupId(crate::GROUPS_MAX - 1)),
            to: UserId::GROUP,
            ..direct
        };
        let packed = PackedMessage::of(&group);
        assert_eq!(packed.message(UserId::GROUP), group, "the row stored once for all members");
        assert_eq!(packed.conversation(), group.conversation);
        let copy = ChatMessage { to: UserId(5), ..group };
        assert_eq!(PackedMessage::of(&copy).message(UserId(5)), copy, "a member's copy");
    }
}
