//! Planted bugs: deliberately broken variants of the real logic, compiled only with the
//! cargo feature `planted-bugs` and chosen at run time (`wasim fuzz --plant NAME`), to
//! prove that the checkers catch each kind of mistake. Without the feature `planted` is a
//! constant `false` and every plant compiles away.
//!
//! The plant is one per process (a fuzz sweep runs each seed in its own process), so it is
//! a process-wide setting rather than a field threaded through every state machine.

/// A deliberate mistake in the real logic, with the invariant that must catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Plant {
    /// The device recognises a repeat only if it is the last message it showed in the
    /// conversation (one id instead of the newest few), so an older message pushed again
    /// (a lost ACK, a fetch of a pushed message) is shown again.
    DedupWrongKey,
    /// A catch-up pushes the inbox rows newest first, and the device adds what it held
    /// during the catch-up at the end of its conversations in the order it came (the
    /// server's order, trusted) rather than each in its place: invariant 5 names it.
    CatchUpUnsorted,
    /// The inbox cursor moves one entry too far after a catch-up: the next catch-up skips
    /// a message.
    CursorSkipsOne,
    /// The sender's view takes every receipt as it comes, even one older than what it shows.
    ReceiptNotMonotone,
    /// Last-seen is shown for a user who hides it.
    LastSeenLeak,
    /// The router drops a message whose session points at a server that is down (stale),
    /// instead of routing it again without that server.
    DropStaleSession,
    /// The session store keeps a device's live session on its old server when the device
    /// registers on another.
    StaleSessionKept,
    /// A server forgets what it pushed unacknowledged when a connection closes.
    ForgetUnackedOnClose,
    /// A server forgets what it pushed unacknowledged when the device connects again (here
    /// or elsewhere) before the old connection timed out.
    ForgetUnackedOnEarlyReconnect,
    /// The router marks a record done (committable) when it reads it, before routing it.
    CommitBeforeRoute,
    /// A catch-up read waits for one replica's answer more than the quorum it asked.
    ReadWaitsForMoreReplicas,
    /// Presence keys are written with twice the configured TTL.
    PresenceTtlTooLong,
    /// A clean close of one device marks the whole user offline.
    CloseMarksUserOffline,
    /// The ✓ is sent after one replica's write instead of a quorum's.
    AckBeforeQuorum,
    /// Receipts stored for an offline sender are handed over with its fetch only when the
    /// fetch has inbox entries too: one with none drops them, and the sender's ✓✓ never
    /// shows (receipt liveness, invariant 3).
    StoredReceiptsDropped,
    /// The group receipts table counts acknowledgements instead of members: a member's
    /// second device, a read after the delivered ACK or a re-sent ACK counts again, so the
    /// sender's ✓✓ shows before every member has the message (invariant 4).
    GroupCountsDevices,
    /// The fan-out mislays the reply to one route batch in sixteen: the record waits for
    /// it forever, its members never get the message, and nothing it waits on is in flight
    /// (invariant 1).
    FanoutLosesRouteReply,
    /// A chat server tells the routers and fan-outs a push is acknowledged as it sends it,
    /// before the device acknowledges it: they forget the forward, and a crash loses what
    /// its devices had not received (invariant 1).
    AckedOnPush,
    /// The device puts a media message's bytes on its WebSocket, for its chat server to
    /// relay, instead of uploading them to the object store: the design the card rejects
    /// (invariant 9).
    ChatServerRelaysMedia,
}

impl Plant {
    /// Every plant, in the order `wasim fuzz --plant list` gives them.
    pub const ALL: [Plant; 19] = [
        Plant::DedupWrongKey,
        Plant::CatchUpUnsorted,
        Plant::CursorSkipsOne,
        Plant::ReceiptNotMonotone,
        Plant::LastSeenLeak,
        Plant::DropStaleSession,
        Plant::StaleSessionKept,
        Plant::ForgetUnackedOnClose,
        Plant::ForgetUnackedOnEarlyReconnect,
        Plant::CommitBeforeRoute,
        Plant::ReadWaitsForMoreReplicas,
        Plant::PresenceTtlTooLong,
        Plant::CloseMarksUserOffline,
        Plant::AckBeforeQuorum,
        Plant::StoredReceiptsDropped,
        Plant::GroupCountsDevices,
        Plant::FanoutLosesRouteReply,
        Plant::AckedOnPush,
        Plant::ChatServerRelaysMedia,
    ];

    /// The plant's name, as `--plant` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Plant::DedupWrongKey => "dedup-wrong-key",
            Plant::CatchUpUnsorted => "catch-up-unsorted",
            Plant::CursorSkipsOne => "cursor-skips-one",
            Plant::ReceiptNotMonotone => "receipt-not-monotone",
            Plant::LastSeenLeak => "last-seen-leak",
            Plant::DropStaleSession => "drop-stale-session",
            Plant::StaleSessionKept => "stale-session-kept",
            Plant::ForgetUnackedOnClose => "forget-unacked-on-close",
            Plant::ForgetUnackedOnEarlyReconnect => "forget-unacked-on-early-reconnect",
            Plant::CommitBeforeRoute => "commit-before-route",
            Plant::ReadWaitsForMoreReplicas => "read-waits-for-more-replicas",
            Plant::PresenceTtlTooLong => "presence-ttl-too-long",
            Plant::CloseMarksUserOffline => "close-marks-user-offline",
            Plant::AckBeforeQuorum => "ack-before-quorum",
            Plant::StoredReceiptsDropped => "stored-receipts-dropped",
            Plant::GroupCountsDevices => "group-counts-devices",
            Plant::FanoutLosesRouteReply => "fanout-loses-route-reply",
            Plant::AckedOnPush => "acked-on-push",
            Plant::ChatServerRelaysMedia => "chat-server-relays-media",
        }
    }

    /// The invariant (DESIGN.md's number) that must name the plant.
    pub fn invariant(self) -> u8 {
        match self {
            Plant::DedupWrongKey => 2,
            Plant::CatchUpUnsorted => 5,
            Plant::CursorSkipsOne => 1,
            Plant::ReceiptNotMonotone => 3,
            Plant::LastSeenLeak => 7,
            Plant::DropStaleSession => 1,
            Plant::StaleSessionKept => 6,
            Plant::ForgetUnackedOnClose => 1,
            Plant::ForgetUnackedOnEarlyReconnect => 1,
            Plant::CommitBeforeRoute => 1,
            Plant::ReadWaitsForMoreReplicas => 8,
            Plant::PresenceTtlTooLong => 7,
            Plant::CloseMarksUserOffline => 7,
            Plant::AckBeforeQuorum => 1,
            Plant::StoredReceiptsDropped => 3,
            Plant::GroupCountsDevices => 4,
            Plant::FanoutLosesRouteReply => 1,
            Plant::AckedOnPush => 1,
            Plant::ChatServerRelaysMedia => 9,
        }
    }

    /// What the plant breaks, in a line.
    pub fn description(self) -> &'static str {
        match self {
            Plant::DedupWrongKey => "the device takes a message for a repeat only if it is the last one it showed",
            Plant::CatchUpUnsorted => "a catch-up pushes the inbox rows newest first and the device trusts its order",
            Plant::CursorSkipsOne => "the inbox cursor moves one entry past the catch-up",
            Plant::ReceiptNotMonotone => "the sender's view takes an older receipt over a newer one",
            Plant::LastSeenLeak => "last-seen is shown for a user who hides it",
            Plant::DropStaleSession => "the router drops a message whose session points at a server that is down",
            Plant::StaleSessionKept => "the session store keeps an old live server when the device registers elsewhere",
            Plant::ForgetUnackedOnClose => "a server forgets its unacknowledged pushes when a connection closes",
            Plant::ForgetUnackedOnEarlyReconnect => {
                "a server forgets its unacknowledged pushes when the device reconnects before the timeout"
            }
            Plant::CommitBeforeRoute => "the router commits a record's offset before routing it",
            Plant::ReadWaitsForMoreReplicas => "a catch-up read waits for more replicas than it asked",
            Plant::PresenceTtlTooLong => "presence keys are written with twice the configured TTL",
            Plant::CloseMarksUserOffline => "a clean close of one device marks the whole user offline",
            Plant::AckBeforeQuorum => "the ✓ is sent after one replica's write instead of a quorum's",
            Plant::StoredReceiptsDropped => "receipts stored for an offline sender are dropped when its fetch is empty",
            Plant::GroupCountsDevices => "the group receipts table counts acknowledgements, not members",
            Plant::FanoutLosesRouteReply => {
                "the fan-out mislays one route batch's reply in sixteen and waits for it forever"
            }
            Plant::AckedOnPush => "a chat server tells the routers and fan-outs a push is acknowledged as it sends it",
            Plant::ChatServerRelaysMedia => "the media bytes go through the chat server instead of the object store",
        }
    }

    /// The plant named `name`.
    pub fn parse(name: &str) -> Option<Plant> {
        Plant::ALL.into_iter().find(|p| p.name() == name)
    }
}

#[cfg(feature = "planted-bugs")]
static ACTIVE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether this build can plant bugs.
pub const PLANTS_COMPILED: bool = cfg!(feature = "planted-bugs");

/// Plant `plant` for the rest of the process (`None`: the real logic). Returns false when
/// this build has no planted bugs.
pub fn set_plant(plant: Option<Plant>) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        ACTIVE.store(plant.map_or(0, |p| p as u8 + 1), std::sync::atomic::Ordering::Relaxed);
        true
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        plant.is_none()
    }
}

/// Whether `plant` is planted (always false without the feature).
#[inline(always)]
pub fn planted(plant: Plant) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        ACTIVE.load(std::sync::atomic::Ordering::Relaxed) == plant as u8 + 1
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = plant;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_are_distinct() {
        for p in Plant::ALL {
            assert_eq!(Plant::parse(p.name()), Some(p));
        }
        let mut names: Vec<&str> = Plant::ALL.iter().map(|p| p.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Plant::ALL.len());
        assert_eq!(Plant::parse("list"), None);
    }
}
