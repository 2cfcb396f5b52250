//! The groups of a run: who is a member of which, drawn from the run seed. Membership does
//! not change during a run; the fan-out reads it page by page from the store (the cost is
//! the store's, the contents are these), the receipts table numbers members by their
//! position here, and the checkers owe a group message to these members.

use crate::scenario::{DistConfig, Scenario};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasim_model::{GroupId, Time, UserId, MEMBERS_PAGE};

/// The groups with traffic, members sorted by user id within each group.
#[derive(Clone, Debug, Default)]
pub struct Groups {
    /// `members[starts[g]..starts[g + 1]]` are group `g`'s.
    starts: Vec<u32>,
    members: Vec<UserId>,
}

/// Each user's groups, in group order: `groups[starts[u]..starts[u + 1]]`.
#[derive(Clone, Debug, Default)]
pub struct GroupsOf {
    starts: Vec<u32>,
    groups: Vec<GroupId>,
}

impl GroupsOf {
    /// The groups `u` is a member of, in group order.
    pub fn of(&self, u: UserId) -> &[GroupId] {
        let i = u.0 as usize;
        match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&from), Some(&until)) => &self.groups[from as usize..until as usize],
            _ => &[],
        }
    }
}

impl Groups {
    /// The groups of `scenario` for run `seed`: each group's size drawn from
    /// `groups.members`, its members drawn uniformly from the registered users (distinct).
    pub fn new(scenario: &Scenario, seed: u64) -> Groups {
        let g = &scenario.groups;
        let users = scenario.registered_users();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6772_6f75_7073); // "groups"
        let mut starts = Vec::with_capacity(g.active as usize + 1);
        let mut members = Vec::new();
        starts.push(0);
        for _ in 0..g.active {
            let size = match g.members {
                DistConfig::Constant { value } => value as u64,
                DistConfig::Uniform { min, max } => rng.random_range(min as u64..=max as u64),
                _ => unreachable!("validated: constant or uniform"),
            };
            let size = size.min(users) as usize;
            // Draws until `size` distinct users: uniform over the sets of that size.
            let mut group: Vec<UserId> = Vec::with_capacity(size);
            while group.len() < size {
                while group.len() < size {
                    group.push(UserId(rng.random_range(0..users) as u32));
                }
                group.sort_unstable();
                group.dedup();
            }
            members.extend(group);
            starts.push(members.len() as u32);
        }
        Groups { starts, members }
    }

    /// Groups of the given members (each list sorted, distinct), for tests.
    #[cfg(test)]
    pub(crate) fn of_lists(lists: &[&[u32]]) -> Groups {
        let mut starts = vec![0];
        let mut members = Vec::new();
        for list in lists {
            assert!(list.is_sorted() && list.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
            members.extend(list.iter().map(|&u| UserId(u)));
            starts.push(members.len() as u32);
        }
        Groups { starts, members }
    }

    /// Groups with traffic.
    pub fn len(&self) -> u32 {
        self.starts.len().saturating_sub(1) as u32
    }

    /// A group's members, by user id.
    pub fn members(&self, g: GroupId) -> &[UserId] {
        let i = g.0 as usize;
        &self.members[self.starts[i] as usize..self.starts[i + 1] as usize]
    }

    /// Members of a group (its size).
    pub fn size(&self, g: GroupId) -> u32 {
        self.members(g).len() as u32
    }

    /// Page `page` of a group's membership (`MEMBERS_PAGE` members each).
    pub fn page(&self, g: GroupId, page: u32) -> &[UserId] {
        let members = self.members(g);
        let from = (page * MEMBERS_PAGE) as usize;
        &members[from.min(members.len())..(from + MEMBERS_PAGE as usize).min(members.len())]
    }

    /// A member's position in its group (the receipts table's row number), if a member.
    /// Members are drawn uniformly from the users and sorted, so a user's place is guessed
    /// from its id (interpolation) and found near the guess: a line or two of the member
    /// list, where bisecting it costs a miss a step (every receipt row looks one up).
    pub fn position(&self, g: GroupId, u: UserId) -> Option<u32> {
        let members = self.members(g);
        let guess = self.guess(members, u)?;
        let (mut lo, mut hi) = (guess, guess + 1);
        let mut step = 8;
        while lo > 0 && members[lo] > u {
            hi = lo;
            lo = lo.saturating_sub(step);
            step *= 2;
        }
        while hi < members.len() && members[hi - 1] < u {
            lo = hi - 1;
            hi = (hi + step).min(members.len());
            step *= 2;
        }
        members[lo..hi].binary_search(&u).ok().map(|p| (lo + p) as u32)
    }

    /// Each user's groups (the reverse of the member lists).
    pub fn of_users(&self) -> GroupsOf {
        let users = self.members.iter().map(|u| u.0 as usize + 1).max().unwrap_or(0);
        let mut starts = vec![0u32; users + 1];
        for m in &self.members {
            starts[m.0 as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut groups = vec![GroupId(0); self.members.len()];
        for (g, members) in self.iter() {
            for m in members {
                groups[next[m.0 as usize] as usize] = g;
                next[m.0 as usize] += 1;
            }
        }
        GroupsOf { starts, groups }
    }

    /// A hint that `position(g, u)` comes soon: the line of the member list it guesses is
    /// loaded meanwhile.
    #[inline]
    pub fn prefetch_position(&self, g: GroupId, u: UserId) {
        let members = self.members(g);
        if let Some(guess) = self.guess(members, u) {
            wasim_model::prefetch(&members[guess]);
        }
    }

    /// Where `u` would be in `members` if they were spread evenly between the first and
    /// the last (`None`: outside them).
    #[inline]
    fn guess(&self, members: &[UserId], u: UserId) -> Option<usize> {
        let (&first, &last) = (members.first()?, members.last()?);
        if u < first || u > last {
            return None;
        }
        let span = u64::from(last.0 - first.0).max(1);
        Some((u64::from(u.0 - first.0) * (members.len() as u64 - 1) / span) as usize)
    }

    /// Memberships of all groups together.
    pub fn memberships(&self) -> u64 {
        self.members.len() as u64
    }

    /// Every group with its members, in group order.
    pub fn iter(&self) -> impl Iterator<Item = (GroupId, &[UserId])> + '_ {
        (0..self.len()).map(move |g| (GroupId(g), self.members(GroupId(g))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_users_groups_are_the_groups_listing_it() {
        let groups = Groups::of_lists(&[&[1, 4, 9], &[4], &[], &[0, 9, 12]]);
        let of = groups.of_users();
        for u in 0..15 {
            let expected: Vec<GroupId> =
                groups.iter().filter(|(_, m)| m.contains(&UserId(u))).map(|(g, _)| g).collect();
            assert_eq!(of.of(UserId(u)), &expected[..], "user {u}");
        }
        assert!(Groups::default().of_users().of(UserId(3)).is_empty());
    }

    #[test]
    fn a_position_prefetch_and_lookup_agree_on_members_and_outsiders() {
        let groups = Groups::of_lists(&[&[2, 3, 50, 51, 52, 900, 1_000]]);
        for u in [0, 2, 3, 4, 50, 52, 53, 899, 900, 1_000, 1_001] {
            groups.prefetch_position(GroupId(0), UserId(u));
            let expected = groups.members(GroupId(0)).iter().position(|&m| m == UserId(u)).map(|p| p as u32);
            assert_eq!(groups.position(GroupId(0), UserId(u)), expected, "user {u}");
        }
    }

    fn scenario(text: &str) -> Scenario {
        Scenario::parse(text, std::path::Path::new("t.toml"), "t").unwrap()
    }

    #[test]
    fn members_are_distinct_sorted_and_sized_as_asked() {
        let s = scenario(
            "[users]\nconcurrent = 2000\nregistered = 3000\n[groups]\nactive = 20\nmembers = { dist = \"uniform\", min = 2, max = 1024 }\n",
        );
        let groups = Groups::new(&s, 7);
        assert_eq!(groups.len(), 20);
        for (g, members) in groups.iter() {
            assert!((2..=1024).contains(&members.len()), "group {} has {}", g.0, members.len());
            assert!(members.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
            assert!(members.iter().all(|u| u.0 < 3000), "registered users only");
            for (p, &u) in members.iter().enumerate() {
                assert_eq!(groups.position(g, u), Some(p as u32));
            }
            for u in (0..3_000).map(UserId) {
                assert_eq!(groups.position(g, u), members.binary_search(&u).ok().map(|p| p as u32), "user {}", u.0);
            }
            let paged: Vec<UserId> = (0..members.len().div_ceil(MEMBERS_PAGE as usize) as u32)
                .flat_map(|p| groups.page(g, p).iter().copied())
                .collect();
            assert_eq!(paged, members, "the pages cover the group once");
        }
        assert_ne!(Groups::new(&s, 8).members(GroupId(0)), groups.members(GroupId(0)), "drawn from the seed");
    }
}

/// When members had a group message, or read it, from its send: the first recipient
/// member, half of them (rounded up) and every one, each over the messages that got that far.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Milestones {
    pub first: Spread,
    pub majority: Spread,
    pub all: Spread,
}

/// A milestone over messages: how many reached it, and its p50, p99 and max in ms.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Spread {
    pub reached: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    fn of(mut ms: Vec<f64>) -> Spread {
        if ms.is_empty() {
            return Spread::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Spread { reached: ms.len() as u64, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: ms[ms.len() - 1] }
    }
}

/// What a run's group traffic did: the card's task 2.2 (when ✓✓ and blue show for a large
/// group) and the group figures of the report. Computed from the checkers' logs.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GroupStats {
    pub groups: u32,
    pub members_mean: f64,
    pub members_max: u32,
    /// Groups per registered user: the mean, and the most any user is in.
    pub groups_per_user_mean: f64,
    pub groups_per_user_max: u32,
    /// Group messages sent in the measuring window and acknowledged (✓) to their senders.
    pub messages: u64,
    /// Recipients of those messages (members but the sender), in all.
    pub recipients: u64,
    /// Send -> the first recipient member, half of them and all of them had it on a device.
    pub delivered: Milestones,
    /// Send -> the first, half and all of them read it.
    pub read: Milestones,
    /// Of those messages, the ones whose sender saw ✓✓ (every member had it) and blue
    /// (every member read it) by the end.
    pub double_ticks: u64,
    pub blue: u64,
    /// Recipients who never had the message by the end (offline members, mostly).
    pub recipients_never_delivered: u64,
}

impl GroupStats {
    /// The stats of a run's group messages, from its logs.
    pub fn from_logs(
        logs: &crate::check::Logs,
        firsts: &crate::check::GroupFirsts,
        groups: &Groups,
        scenario: &Scenario,
    ) -> Option<GroupStats> {
        use rustc_hash::FxHashMap;
        use wasim_model::ReceiptState;
        if groups.len() == 0 {
            return None;
        }
        let window = (Time::from_secs(scenario.warmup_s), Time::from_secs(scenario.warmup_s + scenario.duration_s));
        let mut messages: Vec<&crate::check::AckedGroup> =
            logs.acked_groups.iter().filter(|a| a.sent.time() >= window.0 && a.sent.time() < window.1).collect();
        // By client message: a retried send comes under another id (its first send's
        // time is kept).
        messages.sort_unstable_by_key(|a| (a.key, a.sent));
        messages.dedup_by_key(|a| a.key);
        // Who had and who read each client message, first time only, joined with the
        // messages below.
        let (had, read) = firsts;
        let mut views: FxHashMap<u64, ReceiptState> = FxHashMap::default();
        for &(key, state, _) in &logs.sender_views {
            let v = views.entry(key).or_insert(state);
            *v = (*v).max(state);
        }
        let mut per_user = vec![0u32; scenario.registered_users() as usize];
        for (_, members) in groups.iter() {
            for m in members {
                per_user[m.0 as usize] += 1;
            }
        }
        let mut stats = GroupStats {
            groups_per_user_mean: groups.memberships() as f64 / per_user.len().max(1) as f64,
            groups_per_user_max: per_user.iter().copied().max().unwrap_or(0),
            groups: groups.len(),
            members_mean: groups.memberships() as f64 / f64::from(groups.len()),
            members_max: groups.iter().map(|(_, m)| m.len() as u32).max().unwrap_or(0),
            messages: messages.len() as u64,
            ..GroupStats::default()
        };
        let mut milestones: [[Vec<f64>; 3]; 2] = Default::default();
        for a in &messages {
            let members = groups.members(a.group);
            let recipients = members.len() - usize::from(members.binary_search(&a.sender).is_ok());
            stats.recipients += recipients as u64;
            for (k, by) in [&had, &read].into_iter().enumerate() {
                let from = by.partition_point(|e| e.0 < a.key);
                let until = from + by[from..].partition_point(|e| e.0 == a.key);
                // (The sender's own devices are not sent its group message.)
                let mut ms: Vec<f64> = by[from..until]
                    .iter()
                    .filter(|e| e.1 != a.sender)
                    .map(|e| e.2.time().as_us().saturating_sub(a.sent.time().as_us()) as f64 / 1e3)
                    .collect();
                if k == 0 {
                    stats.recipients_never_delivered += recipients.saturating_sub(ms.len()) as u64;
                }
                if recipients == 0 {
                    continue;
                }
                ms.sort_by(f64::total_cmp);
                let majority = recipients.div_ceil(2);
                for (j, n) in [1, majority, recipients].into_iter().enumerate() {
                    if ms.len() >= n {
                        milestones[k][j].push(ms[n - 1]);
                    }
                }
            }
            match views.get(&a.key) {
                Some(ReceiptState::Read) => {
                    stats.double_ticks += 1;
                    stats.blue += 1;
                }
                Some(ReceiptState::Delivered) => stats.double_ticks += 1,
                _ => {}
            }
        }
        let [delivered, read] = milestones.map(|[first, majority, all]| Milestones {
            first: Spread::of(first),
            majority: Spread::of(majority),
            all: Spread::of(all),
        });
        stats.delivered = delivered;
        stats.read = read;
        Some(stats)
    }
}
