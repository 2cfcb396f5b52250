//! What travels on a device's WebSocket, each way. The device model produces
//! `DeviceFrame`s and consumes `ServerFrame`s; the chat server the reverse. The simulator
//! carries them as they are.

use crate::{
    ChatMessage, InboxPos, MediaKey, MediaKind, PresenceUpdate, Receipt, Recipient, ServerId, Time, UserId,
    FRAME_HEADER_BYTES,
};

/// A frame a device sends to its chat server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceFrame {
    /// Open the device's `epoch`th connection; fetch the inbox from `cursor`.
    Connect { epoch: u32, cursor: InboxPos, hide_last_seen: bool },
    /// Close the `epoch`th connection cleanly (the user closed the app). `receipts_heard`:
    /// as on a heartbeat.
    Disconnect { epoch: u32, receipts_heard: u32 },
    /// The 30 s keep-alive, which says the sequence number of the last receipt the device
    /// heard on this connection (0 for none): the server holds the receipts it pushed
    /// until the device has heard them, and forgets them up to that one.
    Heartbeat { receipts_heard: u32 },
    /// The device heard receipt number `upto` (and, the socket keeping their order, every
    /// one before it): sent as each receipt comes, so the server forgets it within a round
    /// trip, not at the next heartbeat (the heartbeat still says it, should this be lost).
    ReceiptsHeard { upto: u32 },
    /// A new message, with the device's retry-safe sequence number.
    Send { to: Recipient, client_seq: u32, sent_at: Time },
    /// The device has the message (✓✓ grey for the sender); `at` is when it showed it.
    DeliveredAck { msg: ChatMessage, at: Time },
    /// The user read the message (✓✓ blue for the sender).
    ReadAck { msg: ChatMessage, at: Time },
    /// The user opened the chat with `target`: watch its presence.
    Subscribe { target: UserId },
    /// Media bytes on the WebSocket, for the server to relay: never in the card's design,
    /// which uploads them to the object store (only the planted chat-server relay sends
    /// these; invariant 9 names every one).
    MediaBytes { key: MediaKey, bytes: u32 },
}

impl DeviceFrame {
    /// The media bytes the frame carries (none in the card's design).
    #[inline]
    pub fn media_bytes(&self) -> u32 {
        match *self {
            DeviceFrame::MediaBytes { bytes, .. } => bytes,
            _ => 0,
        }
    }

    /// The frame's size on the wire: a header and its fields, a media message's thumbnail,
    /// and any media bytes.
    #[inline]
    pub fn wire_bytes(&self) -> u32 {
        match *self {
            DeviceFrame::Send { client_seq, .. } => {
                FRAME_HEADER_BYTES + MediaKind::of_seq(client_seq).map_or(0, MediaKind::thumbnail_bytes)
            }
            DeviceFrame::MediaBytes { bytes, .. } => FRAME_HEADER_BYTES.saturating_add(bytes),
            _ => FRAME_HEADER_BYTES,
        }
    }
}

impl ServerFrame {
    /// The frame's size on the wire: a header and its fields, and a pushed media message's
    /// thumbnail.
    #[inline]
    pub fn wire_bytes(&self) -> u32 {
        match self {
            ServerFrame::Push { msg } => {
                FRAME_HEADER_BYTES + MediaKind::of_seq(msg.client_seq).map_or(0, MediaKind::thumbnail_bytes)
            }
            _ => FRAME_HEADER_BYTES,
        }
    }
}

/// A frame a chat server sends to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerFrame {
    /// The `epoch`th connection is accepted; the catch-up begins.
    ConnectAccepted { server: ServerId, epoch: u32 },
    /// The server is full.
    ConnectRefused { server: ServerId, epoch: u32 },
    /// ✓: the message is stored on a quorum.
    SentAck { msg: ChatMessage },
    /// A message for the device (live, or fetched from the inbox).
    Push { msg: ChatMessage },
    /// Every inbox entry before `upto` has been pushed: the catch-up is complete.
    FetchDone { upto: InboxPos },
    /// ✓✓ grey or blue for one of the device's messages, numbered by the server (its
    /// receipts' sequence, from 1), so the device can say up to which it heard.
    Receipt { receipt: Receipt, seq: u32 },
    /// A watched user's presence changed.
    PresenceUpdate { update: PresenceUpdate },
    /// The server closed the `epoch`th connection (the low 8 bits of it) and asks the
    /// device to connect again (WebSocket close 1012, "service restart"): the session store
    /// had lost the device's session, so its messages went to the inbox meanwhile.
    GoAway { server: ServerId, epoch: u8 },
}
