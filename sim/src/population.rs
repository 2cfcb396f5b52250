//! Who the users are: their devices, settings and habits, and who the faults hit. Each
//! trait is a fixed pseudo-random function of the user id and the scenario, so every
//! process and checker agrees on it without storing it.

use crate::scenario::{Fault, Scenario};
use wasim_model::{ConversationId, Time, UserId};

/// Salts that make each trait an independent draw.
const SALT_WEB: u64 = 0x5745_4221;
const SALT_HIDE: u64 = 0x4849_4445;
const SALT_RECEIPTS: u64 = 0x5245_4350;
const SALT_WATCH: u64 = 0x5741_5443;

/// The population's traits.
#[derive(Clone, Debug)]
pub struct Population {
    pub users: u64,
    web_share: f64,
    hide_share: f64,
    receipts_off_share: f64,
    watch_share: f64,
    cuts: Vec<(u64, Time, Time)>,
}

fn draw(u: UserId, salt: u64) -> f64 {
    let h = u.hash64() ^ salt;
    let h = UserId((h ^ (h >> 32)) as u32).hash64();
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Population {
    /// The population of a scenario.
    pub fn new(s: &Scenario) -> Population {
        let u = &s.users;
        let cuts = s
            .faults
            .iter()
            .filter_map(|f| match *f {
                Fault::CutNetwork { at_s, for_s, users } => {
                    Some((users, Time::from_secs(at_s), Time::from_secs(at_s + for_s)))
                }
                _ => None,
            })
            .collect();
        Population {
            users: s.registered_users(),
            web_share: u.devices_per_user.web,
            hide_share: u.hide_last_seen_share,
            receipts_off_share: u.read_receipts_off_share,
            watch_share: u.chat_open_share,
            cuts,
        }
    }

    /// Whether the user has a web client besides the phone.
    pub fn has_web(&self, u: UserId) -> bool {
        draw(u, SALT_WEB) < self.web_share
    }

    /// Whether the user hides last-seen.
    pub fn hides_last_seen(&self, u: UserId) -> bool {
        draw(u, SALT_HIDE) < self.hide_share
    }

    /// Whether the user turned read receipts off.
    pub fn read_receipts_off(&self, u: UserId) -> bool {
        draw(u, SALT_RECEIPTS) < self.receipts_off_share
    }

    /// Whether the user has the chat with the first contact open (watches its presence).
    pub fn watches(&self, u: UserId) -> bool {
        draw(u, SALT_WATCH) < self.watch_share
    }

    /// The `j`th contact of `u`: a fixed pseudo-random other user, so the social graph
    /// costs no memory.
    pub fn contact(&self, u: UserId, j: u32) -> UserId {
        let n = self.users;
        let h = UserId(u.0 ^ j.rotate_left(24)).hash64() ^ u64::from(j);
        // n <= a billion: the other user is u + 1 + (h mod n - 1), wrapped below n.
        let other = u64::from(u.0) + 1 + u64::from(wasim_model::fast_range(h, (n - 1) as u32));
        UserId(if other >= n { other - n } else { other } as u32)
    }

    /// Whether a page of `conversation`'s history may be read in the run: a chat a watcher
    /// opens (with its first contact; opening it reads the first page). Cassandra counts
    /// the rows of only these partitions: the count is read for nothing else.
    pub fn opens_chat(&self, conversation: ConversationId) -> bool {
        let Some((a, b)) = conversation.direct_users().filter(|_| self.watch_share > 0.0) else { return false };
        (self.watches(a) && self.contact(a, 0) == b) || (self.watches(b) && self.contact(b, 0) == a)
    }

    /// The network cut hitting the user, if any: every `users / count`th user from user 0.
    ///
    /// The `j`th cut starts from user `j` instead, so that several cuts hit different users
    /// (a user two cuts would share belongs to the first).
    pub fn cut(&self, u: UserId) -> Option<(Time, Time)> {
        self.cuts.iter().enumerate().find_map(|(j, &(count, from, until))| {
            let stride = (self.users / count).max(1);
            let k = u64::from(u.0).checked_sub(j as u64)?;
            (k % stride == 0 && k / stride < count).then_some((from, until))
        })
    }

    /// The first user a network cut hits: the one whose messages are traced.
    pub fn first_cut_user(&self) -> Option<UserId> {
        (!self.cuts.is_empty()).then_some(UserId(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_respected_and_independent() {
        let s = Scenario::parse("", std::path::Path::new("x"), "x").unwrap();
        let p = Population::new(&s);
        let n = 100_000u32;
        let web = (0..n).filter(|&u| p.has_web(UserId(u))).count() as f64 / f64::from(n);
        let hide = (0..n).filter(|&u| p.hides_last_seen(UserId(u))).count() as f64 / f64::from(n);
        let both =
            (0..n).filter(|&u| p.has_web(UserId(u)) && p.hides_last_seen(UserId(u))).count() as f64 / f64::from(n);
        assert!((web - 0.2).abs() < 0.01, "{web}");
        assert!((hide - 0.1).abs() < 0.01, "{hide}");
        assert!((both - 0.02).abs() < 0.005, "{both}");
    }

    #[test]
    fn the_chats_watchers_open_are_the_ones_paged_and_few_others_are() {
        let text = "[users]\nconcurrent = 10000\nchat_open_share = 0.1\n";
        let s = Scenario::parse(text, std::path::Path::new("x"), "x").unwrap();
        let p = Population::new(&s);
        let (mut opened, mut others) = (0, 0);
        for u in (0..10_000).map(UserId) {
            let first = ConversationId::direct(u, p.contact(u, 0));
            if p.watches(u) {
                assert!(p.opens_chat(first), "user {u:?} opens the chat with its first contact");
                opened += 1;
            }
            others += usize::from(p.opens_chat(ConversationId::direct(u, p.contact(u, 1))));
        }
        assert!((800..1_200).contains(&opened), "{opened}");
        assert!(others < 20, "another contact's chat is paged only if it is that one's first: {others}");
        assert!(!p.opens_chat(ConversationId::group(wasim_model::GroupId(3))));
    }

    #[test]
    fn a_cut_hits_exactly_its_user_count() {
        let text = "[users]\nconcurrent = 1000\n[[faults]]\nkind = \"cut_network\"\nat_s = 3\nfor_s = 1\nusers = 10\n";
        let s = Scenario::parse(text, std::path::Path::new("x"), "x").unwrap();
        let p = Population::new(&s);
        let cut: Vec<u32> = (0..1000).filter(|&u| p.cut(UserId(u)).is_some()).collect();
        assert_eq!(cut.len(), 10);
        assert_eq!(cut[..3], [0, 100, 200]);
        assert_eq!(p.cut(UserId(0)), Some((Time::from_secs(3), Time::from_secs(4))));
    }

    #[test]
    fn two_cuts_hit_different_users() {
        let text = "[users]\nconcurrent = 1000\n[[faults]]\nkind = \"cut_network\"\nat_s = 3\nfor_s = 1\nusers = 10\n[[faults]]\nkind = \"cut_network\"\nat_s = 5\nfor_s = 2\nusers = 20\n";
        let s = Scenario::parse(text, std::path::Path::new("x"), "x").unwrap();
        let p = Population::new(&s);
        let second: Vec<u32> =
            (0..1000).filter(|&u| p.cut(UserId(u)).is_some_and(|c| c.0 == Time::from_secs(5))).collect();
        assert_eq!(second.len(), 20);
        assert_eq!(second[..2], [1, 51]);
    }
}
