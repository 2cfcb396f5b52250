//! What `wasim fuzz` adds to a scenario for one seed: a random fault schedule and a random
//! perturbation of the workload, both drawn from the seed alone, so that
//! `wasim scenario FILE --seed S --faults-of-seed S` replays a fuzzed seed exactly.
//!
//! The ranges (README, "Fuzzing"): the workload's churn (`app_closes_per_hour`) and read
//! delays are scaled by 0.5 to 2, the message rate by 0.7 to 1.3, and a third of the seeds
//! give a share of users (0 to 0.5) a web client too. A random schedule holds 1 to 4
//! faults of every kind of the fault layer, each starting after the connect ramp and
//! ending by the end of sends (a crash may outlast them), with targets, durations and
//! intensities drawn within the limits a scenario file has.

use crate::scenario::{Detect, DistConfig, Fault, Scenario};
use crate::topology::{NodeKind, Topology};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which faults a fuzzed seed runs with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FaultsMode {
    /// The scenario's own faults and a random schedule drawn from the seed.
    #[default]
    Random,
    /// No faults at all (the scenario's are removed).
    None,
    /// The scenario's own faults only.
    Scenario,
}

impl FaultsMode {
    /// Every mode.
    pub const ALL: [FaultsMode; 3] = [FaultsMode::Random, FaultsMode::None, FaultsMode::Scenario];

    /// The mode named `name` (`random`, `none`, `scenario`).
    pub fn parse(name: &str) -> Option<FaultsMode> {
        FaultsMode::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The mode's name, as `parse` takes it.
    pub fn name(self) -> &'static str {
        match self {
            FaultsMode::Random => "random",
            FaultsMode::None => "none",
            FaultsMode::Scenario => "scenario",
        }
    }
}

/// The most faults a random schedule draws.
pub const RANDOM_FAULTS_MAX: usize = 4;

/// Keeps the fuzzer's draws apart from the run's own, which use the same seed.
const FUZZ_STREAM: u64 = 0x6675_7a7a_6661_756c;

/// `base` as `wasim fuzz` runs it for `seed`: its workload perturbed and its faults as
/// `mode` says. Every fault drawn passes the checks a scenario file's faults pass.
pub fn derive(base: &Scenario, seed: u64, mode: FaultsMode) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ FUZZ_STREAM);
    let mut s = base.clone();
    perturb_workload(&mut s, &mut rng);
    match mode {
        FaultsMode::None => s.faults.clear(),
        FaultsMode::Scenario => {}
        FaultsMode::Random => {
            let wanted = rng.random_range(1..=RANDOM_FAULTS_MAX);
            // A draw the checks refuse (a target already down then) is drawn again, a few
            // times at most: the schedule stays a function of the seed.
            let mut attempts = 0;
            let mut added = 0;
            while added < wanted && attempts < 8 * RANDOM_FAULTS_MAX && s.faults.len() < crate::limits::FAULTS_MAX {
                attempts += 1;
                s.faults.push(random_fault(&s, &mut rng));
                if crate::limits::check(&s).is_ok() {
                    added += 1;
                } else {
                    s.faults.pop();
                }
            }
        }
    }
    s
}

/// Seconds a liveness run goes on after the last fault heals: past the longest reconnect
/// backoff, a ping timeout and a catch-up of the scaled-down timers, and past the
/// checkers' in-flight bound, so that whatever is still pending at the end has stalled.
pub const LIVENESS_AFTER_HEAL_S: u64 = 60;

/// Liveness mode (as TigerBeetle's VOPR has): the run goes on after the sends end until
/// `LIVENESS_AFTER_HEAL_S` after the last fault heals, so that every pending delivery and
/// catch-up has completed by the end; invariants 1 (no loss) and 8 (liveness) then judge
/// what has not as stalled.
pub fn with_liveness(s: &mut Scenario) {
    let sends_end_s = s.warmup_s + s.duration_s;
    let healed_s = s.faults.iter().map(|f| f.window_s()).map(|(at, lasts)| at + lasts).max().unwrap_or(0);
    let drain_s = healed_s.max(sends_end_s) - sends_end_s + LIVENESS_AFTER_HEAL_S;
    s.drain_s = s.drain_s.max(drain_s).min(crate::limits::TOTAL_S_MAX - sends_end_s);
}

/// Scale the churn, the read delays and the load, and sometimes add web clients.
fn perturb_workload(s: &mut Scenario, rng: &mut ChaCha8Rng) {
    let before = s.clone();
    let w = &mut s.workload;
    w.app_closes_per_hour *= rng.random_range(0.5..=2.0);
    w.read_delay_ms = scaled(w.read_delay_ms, rng.random_range(0.5..=2.0));
    w.messages_per_s = ((w.messages_per_s as f64) * rng.random_range(0.7..=1.3)).round().max(1.0) as u64;
    if rng.random_bool(1.0 / 3.0) {
        s.users.devices_per_user.web = rng.random_range(0.0..=0.5);
    }
    // Media, when the scenario has it (one without draws as it always did).
    if s.media.on() {
        s.media.share = (s.media.share * rng.random_range(0.5..=1.5)).min(1.0);
    }
    // A perturbation the limits refuse (a rate or a memory past them) is not made.
    if crate::limits::check(s).is_err() {
        *s = before;
    }
}

/// `d` with every value multiplied by `factor`.
fn scaled(d: DistConfig, factor: f64) -> DistConfig {
    match d {
        DistConfig::Constant { value } => DistConfig::Constant { value: value * factor },
        DistConfig::Uniform { min, max } => DistConfig::Uniform { min: min * factor, max: max * factor },
        DistConfig::Exponential { mean } => DistConfig::Exponential { mean: mean * factor },
        DistConfig::Lognormal { p50, p99 } => DistConfig::Lognormal { p50: p50 * factor, p99: p99 * factor },
    }
}

/// One fault of a random kind, starting after the connect ramp and ending by the end of
/// the sends (the limits keep the ramp within the warm-up, so there is room).
fn random_fault(s: &Scenario, rng: &mut ChaCha8Rng) -> Fault {
    let ramp_s = s.users.connect_ramp_s;
    let sends_end_s = s.warmup_s + s.duration_s;
    let at_s = rng.random_range(ramp_s..sends_end_s);
    let room_s = sends_end_s - at_s;
    let for_s = rng.random_range(1..=room_s.min(10));
    let topo = Topology::new(s);
    let one_of =
        |rng: &mut ChaCha8Rng, kind: NodeKind| format!("{}-{}", kind.name(), rng.random_range(0..topo.count(kind)));
    let link = |rng: &mut ChaCha8Rng| if rng.random_bool(0.5) { "client_server" } else { "in_datacenter" }.to_string();
    // A scenario with media draws media faults too (one kind in nine); one without draws
    // as it always did.
    let kinds = if s.media.on() { 9 } else { 8 };
    match rng.random_range(0..kinds) {
        8 => match rng.random_range(0..3) {
            0 => Fault::ObjectStoreDown { at_s, for_s },
            1 => Fault::ObjectStoreSlow { at_s, for_s, factor: f64::from(rng.random_range(2..=50_u32)) },
            _ => Fault::CdnEdgeLoss {
                at_s,
                for_s,
                target: format!("cdn-{}", rng.random_range(0..topo.count(NodeKind::Cdn))),
            },
        },
        0 => Fault::CutNetwork { at_s, for_s, users: rng.random_range(1..=(s.users.concurrent / 10).max(1)) },
        1 => Fault::LoseDeliveredAcks { at_s, for_s, share: rng.random_range(0.05..=0.5) },
        2 => {
            let target = match rng.random_range(0..4) {
                0 => one_of(rng, NodeKind::ChatServer),
                1 => one_of(rng, NodeKind::Cassandra),
                2 => one_of(rng, NodeKind::Kafka),
                _ => one_of(rng, NodeKind::Router),
            };
            let detect = if rng.random_bool(0.5) { Detect::Reset } else { Detect::Timeout };
            Fault::Crash { at_s, for_s: rng.random_range(1..=20), target, detect }
        }
        3 => {
            // Between kinds the scenario has (no fan-out without groups).
            let topo = crate::topology::Topology::new(s);
            let kinds: Vec<NodeKind> = NodeKind::ALL.into_iter().filter(|&k| topo.count(k) > 0).collect();
            let a = rng.random_range(0..kinds.len());
            let b = (a + rng.random_range(1..kinds.len())) % kinds.len();
            Fault::Clog { at_s, for_s: for_s.min(5), between: kinds[a].name().into(), and: kinds[b].name().into() }
        }
        4 => Fault::Latency { at_s, for_s, link: link(rng), add_ms: rng.random_range(5.0..=300.0_f64).round() },
        5 => {
            let target =
                if rng.random_bool(0.5) { one_of(rng, NodeKind::Redis) } else { one_of(rng, NodeKind::Presence) };
            Fault::RedisDown { at_s, failover_s: for_s, target, replication_lag_ms: rng.random_range(0..=1_000) }
        }
        6 => Fault::PacketLoss {
            at_s,
            for_s,
            link: link(rng),
            share: (rng.random_range(0.01..=0.3_f64) * 100.0).round() / 100.0,
        },
        _ => {
            let target =
                if rng.random_bool(0.75) { one_of(rng, NodeKind::ChatServer) } else { one_of(rng, NodeKind::Presence) };
            let size = rng.random_range(1..=5_000_i64);
            let skew_ms = if rng.random_bool(0.5) { size } else { -size.min(at_s as i64 * 1_000) };
            Fault::ClockSkew { at_s, for_s, target, skew_ms: if skew_ms == 0 { 1 } else { skew_ms } }
        }
    }
}

/// Whether running `s` (with `seed`, else its own) breaks `invariant`.
pub fn breaks(s: &Scenario, seed: Option<u64>, invariant: u8) -> bool {
    let o = crate::run(s, &crate::RunOptions { seed, ..Default::default() });
    o.checks.violations.iter().any(|v| v.invariant == invariant)
}

/// How big a failing scenario is, for shrinking: what a reader has to take in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size {
    pub faults: usize,
    /// Seconds of faults, summed.
    pub fault_s: u64,
    pub users: u64,
    pub messages_per_s: u64,
    /// Simulated seconds.
    pub total_s: u64,
}

impl Size {
    pub fn of(s: &Scenario) -> Size {
        Size {
            faults: s.faults.len(),
            fault_s: s.faults.iter().map(|f| f.window_s().1).sum(),
            users: s.users.concurrent,
            messages_per_s: s.workload.messages_per_s,
            total_s: s.total_s(),
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} faults ({} s of faults), {} users, {} msg/s, {} simulated s",
            self.faults, self.fault_s, self.users, self.messages_per_s, self.total_s
        )
    }
}

/// The smaller variants of `s` shrinking tries, each with what it changed, in order: drop a
/// fault, halve a fault's length, move a fault earlier, halve the users, halve the load,
/// shorten the sends. Only variants the scenario checks accept.
pub fn smaller(s: &Scenario) -> Vec<(String, Scenario)> {
    let mut out: Vec<(String, Scenario)> = Vec::new();
    let mut push = |what: String, c: Scenario| {
        if crate::limits::check(&c).is_ok() {
            out.push((what, c));
        }
    };
    for i in 0..s.faults.len() {
        let mut c = s.clone();
        let f = c.faults.remove(i);
        push(format!("remove fault {i} ({})", f.kind()), c);
    }
    for i in 0..s.faults.len() {
        let mut c = s.clone();
        let (_, lasts) = c.faults[i].window_s();
        if lasts > 1 {
            *c.faults[i].window_mut().1 = lasts / 2;
            push(format!("shorten fault {i} ({}) to {} s", c.faults[i].kind(), lasts / 2), c);
        }
    }
    let ramp_s = s.users.connect_ramp_s;
    for i in 0..s.faults.len() {
        let mut c = s.clone();
        let (at, _) = c.faults[i].window_s();
        if at > ramp_s {
            let earlier = ramp_s + (at - ramp_s) / 2;
            *c.faults[i].window_mut().0 = earlier;
            push(format!("move fault {i} ({}) to {earlier} s", c.faults[i].kind()), c);
        }
    }
    if s.users.concurrent > 20 {
        let mut c = s.clone();
        let users = s.users.concurrent / 2;
        c.users.concurrent = users;
        for f in &mut c.faults {
            if let Fault::CutNetwork { users: cut, .. } = f {
                *cut = (*cut).min(users);
            }
        }
        push(format!("halve the users to {users}"), c);
    }
    if s.workload.messages_per_s > 1 {
        let mut c = s.clone();
        c.workload.messages_per_s = s.workload.messages_per_s / 2;
        push(format!("halve the load to {} msg/s", c.workload.messages_per_s), c);
    }
    // The sends end no sooner than the last fault (a crash may outlast them).
    let needed_s = s
        .faults
        .iter()
        .map(|f| {
            let (at, lasts) = f.window_s();
            if matches!(f, Fault::Crash { .. }) {
                at + 1
            } else {
                at + lasts
            }
        })
        .max()
        .unwrap_or(0);
    let sends_end_s = s.warmup_s + s.duration_s;
    if s.duration_s > 1 && needed_s < sends_end_s {
        let mut c = s.clone();
        let end = needed_s.max(s.warmup_s + 1).max(sends_end_s - s.duration_s.div_ceil(2));
        c.duration_s = end - s.warmup_s;
        push(format!("end the sends at {end} s"), c);
    }
    out
}

/// Run seeds a shrinking step tries a smaller variant with: its run seed first, then a few
/// more, so that a failure that needs a lucky interleaving is not lost at the first change
/// that moves the random streams.
pub const SHRINK_SEEDS_PER_STEP: u64 = 3;

/// Shrink `start` while a run of it still breaks `invariant`: take the first smaller variant
/// that does (with run seed `seed`, or one of the next `SHRINK_SEEDS_PER_STEP - 1`), again
/// and again, until none does or `runs_max` runs are spent. Returns the smallest scenario
/// and the run seed it fails with. `step` hears of every variant tried (what changed, the
/// seed it failed with if it did, the size kept).
pub fn shrink(
    start: &Scenario,
    seed: u64,
    invariant: u8,
    runs_max: usize,
    mut step: impl FnMut(&str, Option<u64>, Size),
) -> (Scenario, u64) {
    let fails = |s: &Scenario, seed: u64| breaks(s, Some(seed), invariant);
    let (mut current, mut current_seed) = (start.clone(), seed);
    let mut runs = 0;
    'outer: while runs < runs_max {
        for (what, candidate) in smaller(&current) {
            let mut failed_with = None;
            for k in 0..SHRINK_SEEDS_PER_STEP {
                if runs >= runs_max {
                    break 'outer;
                }
                runs += 1;
                let s = current_seed.wrapping_add(k);
                if fails(&candidate, s) {
                    failed_with = Some(s);
                    break;
                }
            }
            step(&what, failed_with, Size::of(if failed_with.is_some() { &candidate } else { &current }));
            if let Some(s) = failed_with {
                (current, current_seed) = (candidate, s);
                continue 'outer;
            }
        }
        break;
    }
    (current, current_seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn small() -> Scenario {
        let text = "duration_s = 20\nwarmup_s = 5\n[users]\nconcurrent = 500\nconnect_ramp_s = 2\n";
        Scenario::parse(text, Path::new("small.toml"), "small").expect("valid")
    }

    #[test]
    fn a_seed_always_derives_the_same_scenario_and_seeds_differ() {
        let base = small();
        let a = derive(&base, 7, FaultsMode::Random);
        let b = derive(&base, 7, FaultsMode::Random);
        assert_eq!(a.faults, b.faults);
        assert_eq!(toml::to_string(&a).unwrap(), toml::to_string(&b).unwrap());
        let differ = (8..20).filter(|&s| derive(&base, s, FaultsMode::Random).faults != a.faults).count();
        assert_eq!(differ, 12, "every other seed draws another schedule");
    }

    #[test]
    fn every_schedule_passes_the_scenario_checks_and_every_kind_is_drawn() {
        let kinds = kinds_drawn(&small());
        assert_eq!(kinds.len(), 8, "{kinds:?}");
    }

    /// The fault kinds 400 seeds of random schedules on `base` draw, each schedule checked
    /// as the scenario checks do, and read back from its replay file unchanged.
    fn kinds_drawn(base: &Scenario) -> std::collections::BTreeSet<&'static str> {
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..400 {
            let s = derive(base, seed, FaultsMode::Random);
            assert!(!s.faults.is_empty() && s.faults.len() <= RANDOM_FAULTS_MAX, "seed {seed}: {:?}", s.faults);
            crate::limits::check(&s).unwrap_or_else(|f| panic!("seed {seed}: {}: {}", f.field, f.message));
            // Written out and read back, it is the same scenario: the replay file holds.
            let text = toml::to_string(&s).expect("serialises");
            let back = Scenario::parse(&text, Path::new("derived.toml"), "derived").expect("reads back");
            assert_eq!(back.faults, s.faults, "seed {seed}");
            kinds.extend(s.faults.iter().map(|f| f.kind()));
        }
        kinds
    }

    #[test]
    fn a_scenario_with_media_draws_media_faults_too() {
        let mut base = small();
        base.media.share = 0.3;
        let kinds = kinds_drawn(&base);
        assert_eq!(kinds.len(), 11, "{kinds:?}");
        for media in ["object_store_down", "object_store_slow", "cdn_edge_loss"] {
            assert!(kinds.contains(media), "{media} never drawn");
        }
    }

    #[test]
    fn every_smaller_variant_is_smaller_and_valid() {
        let base = small();
        for seed in 0..50 {
            let s = derive(&base, seed, FaultsMode::Random);
            for (what, c) in smaller(&s) {
                crate::limits::check(&c).unwrap_or_else(|f| panic!("seed {seed}, {what}: {}", f.message));
                let (a, b) = (Size::of(&c), Size::of(&s));
                let later_fault = c.faults.iter().zip(&s.faults).any(|(x, y)| x.window_s().0 > y.window_s().0);
                assert!(a != b || !later_fault, "seed {seed}, {what}: nothing changed");
                assert!(a.faults <= b.faults && a.fault_s <= b.fault_s && a.users <= b.users, "seed {seed}, {what}");
                assert!(a.messages_per_s <= b.messages_per_s && a.total_s <= b.total_s, "seed {seed}, {what}");
            }
        }
    }

    #[test]
    fn liveness_runs_on_past_the_last_heal() {
        let mut s = small();
        s.faults.push(Fault::Crash { at_s: 20, for_s: 30, target: "router-0".into(), detect: Detect::Reset });
        with_liveness(&mut s);
        assert_eq!(s.total_s(), 20 + 30 + LIVENESS_AFTER_HEAL_S);
        let mut quiet = small();
        with_liveness(&mut quiet);
        assert_eq!(quiet.drain_s, LIVENESS_AFTER_HEAL_S, "no fault: it runs on past the end of sends");
    }

    #[test]
    fn the_modes_keep_or_drop_the_scenarios_own_faults() {
        let mut base = small();
        base.faults.push(Fault::LoseDeliveredAcks { at_s: 6, for_s: 2, share: 0.1 });
        assert!(derive(&base, 3, FaultsMode::None).faults.is_empty());
        assert_eq!(derive(&base, 3, FaultsMode::Scenario).faults, base.faults);
        let random = derive(&base, 3, FaultsMode::Random).faults;
        assert_eq!(random[0], base.faults[0], "random faults come on top of the scenario's");
        assert!(random.len() > 1);
    }
}
