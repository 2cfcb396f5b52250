//! Request ids that know the incarnation of the process that asked.
//!
//! A process asks a store something under a request id (a slot-map key of what waits for
//! the answer) and matches the answer by it. A process that crashes and restarts starts
//! its tables afresh, so its first requests get the same keys as its predecessor's; an
//! answer the store held across the restart (a Redis failover holds its clients'
//! commands until the new primary) would then be taken for the answer to the new
//! process's request under the same key: another message's route, another write's
//! acknowledgement. A real answer to a dead process goes nowhere (its connection is gone);
//! here each id carries the incarnation that asked, and an answer to another is ignored.

use slotmap::{DefaultKey, Key, KeyData};

/// Incarnations told apart (a restart count modulo this): an answer would have to be held
/// across this many restarts of one process to be mistaken.
const INCARNATIONS: u64 = 16;
/// The id's top bits that hold the incarnation.
const SHIFT: u32 = 60;

/// The request ids of one incarnation of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqIds {
    tag: u64,
}

impl ReqIds {
    /// The ids of the process's `incarnation`th start (0: the first).
    pub fn new(incarnation: u32) -> ReqIds {
        ReqIds { tag: (u64::from(incarnation) % INCARNATIONS) << SHIFT }
    }

    /// The id of a request waiting under `key`.
    pub fn req(self, key: DefaultKey) -> u64 {
        let raw = key.data().as_ffi();
        assert!(raw >> SHIFT == 0, "a table slot reused 2^28 times: its key runs into the incarnation bits");
        raw | self.tag
    }

    /// The key a request id of this incarnation names; the null key (which names nothing)
    /// for an id of another incarnation.
    pub fn key(self, req: u64) -> DefaultKey {
        if req & (!0 << SHIFT) != self.tag {
            return DefaultKey::null();
        }
        KeyData::from_ffi(req & !(!0 << SHIFT)).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotmap::SlotMap;

    #[test]
    fn an_answer_to_an_earlier_incarnation_finds_nothing() {
        // Two incarnations of one process ask their first request: the same slot-map key.
        let (mut before, mut after) = (SlotMap::new(), SlotMap::new());
        let (old, new) = (ReqIds::new(0), ReqIds::new(1));
        let old_req = old.req(before.insert("route of message 1"));
        let new_req = new.req(after.insert("route of message 2"));
        assert_ne!(old_req, new_req);
        assert_eq!(after.get(new.key(old_req)), None, "the predecessor's answer is ignored");
        assert_eq!(after.get(new.key(new_req)), Some(&"route of message 2"));
        assert_eq!(before.get(old.key(old_req)), Some(&"route of message 1"));
        assert_eq!(after.get(new.key(u64::MAX)), None);
    }
}
