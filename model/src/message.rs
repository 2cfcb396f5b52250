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

/// Whom a device sends a message to: one user, or a group (every member but the sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    User(UserId),
    Group(GroupId),
}
