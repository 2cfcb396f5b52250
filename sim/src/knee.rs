//! The knee of a scenario (`wasim scenario FILE --find-max-load`): its offered load scaled by
//! a factor, and the search for the highest load at which every SLO still holds.
//!
//! The search is a pure function of the answers so far ([`next_step`]): the caller runs the
//! load it asks for and says whether the run passed. Loads are whole 1:1 sends per second, so
//! that no load is tried twice and each run's folder can be named by its load.

use crate::Scenario;
use serde::Serialize;

/// The scenario with its offered load multiplied by `factor`: the 1:1 sends per second and,
/// with groups, each group's messages per second, scaled together; users, fleet, timers and
/// faults unchanged. Err: the scaled scenario breaks one of the scenario limits (the field and
/// why, like a file's error without the line).
pub fn scale_load(s: &Scenario, factor: f64) -> Result<Scenario, String> {
    assert!(factor.is_finite() && factor > 0.0, "a load factor is a positive number: {factor}");
    let mut scaled = s.clone();
    // Saturating: a factor that overflows the load is refused by the limits below.
    scaled.workload.messages_per_s = (s.workload.messages_per_s as f64 * factor).round().max(1.0) as u64;
    scaled.groups.messages_per_group_per_s = s.groups.messages_per_group_per_s * factor;
    crate::limits::check(&scaled).map_err(|f| format!("field `{}`: {}", f.field, f.message))?;
    Ok(scaled)
}

/// The bounds of a knee search over 1:1 loads (msg/s).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KneeLimits {
    /// The load tried first: the scenario's own.
    pub start: u64,
    /// The highest load the search may try (at least `start`): it doubles up to it.
    pub ceiling: u64,
    /// The lowest load the search may try (at least 1, at most `start`): it halves down to it.
    pub floor: u64,
    /// The search stops once the lowest failing load is within this share above the highest
    /// passing one (or one msg/s above it).
    pub tolerance: f64,
    /// Runs the search makes at most.
    pub runs_max: usize,
}

/// What the search does next, or how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum KneeStep {
    /// Run this load next.
    Try { load: u64 },
    /// The knee lies in `[pass, fail)`, a bracket within the tolerance.
    Found { pass: u64, fail: u64 },
    /// Every load up to the ceiling passed: the knee is above it.
    PassedAtCeiling { pass: u64 },
    /// Every load down to the floor failed: the knee is below it.
    FailedAtFloor { fail: u64 },
    /// The runs ran out before the bracket closed: the knee lies between the highest load
    /// that passed and the lowest that failed, where there are such loads.
    OutOfRuns { pass: Option<u64>, fail: Option<u64> },
}

/// The next step of a search that has run `tried` (load, passed) in any order.
///
/// From the scenario's load it doubles while runs pass, or halves while they fail, until it
/// has a passing and a failing load; then it bisects between the highest passing load below
/// the lowest failing one and that failing one. A passing load above a failing one (a
/// non-monotone answer) is disregarded: the bracket keeps the lowest failure.
pub fn next_step(tried: &[(u64, bool)], limits: &KneeLimits) -> KneeStep {
    let l = limits;
    assert!(1 <= l.floor && l.floor <= l.start && l.start <= l.ceiling, "floor <= start <= ceiling: {l:?}");
    assert!(l.tolerance > 0.0 && l.runs_max >= 1, "{l:?}");
    if tried.is_empty() {
        return KneeStep::Try { load: l.start };
    }
    let fail = tried.iter().filter(|t| !t.1).map(|t| t.0).min();
    let pass = tried.iter().filter(|t| t.1 && fail.is_none_or(|f| t.0 < f)).map(|t| t.0).max();
    let next = match (pass, fail) {
        (Some(p), None) if p >= l.ceiling => return KneeStep::PassedAtCeiling { pass: p },
        (None, Some(f)) if f <= l.floor => return KneeStep::FailedAtFloor { fail: f },
        (Some(p), Some(f)) if f - p <= 1 || (f - p) as f64 <= l.tolerance * p as f64 => {
            return KneeStep::Found { pass: p, fail: f }
        }
        (Some(p), None) => p.saturating_mul(2).min(l.ceiling),
        (None, Some(f)) => (f / 2).max(l.floor),
        // Strictly between: f - p >= 2 here.
        (Some(p), Some(f)) => p + (f - p) / 2,
        (None, None) => unreachable!("a run either passed or failed"),
    };
    if tried.len() >= l.runs_max {
        return KneeStep::OutOfRuns { pass, fail };
    }
    assert!(tried.iter().all(|t| t.0 != next), "a load is never tried twice: {next} in {tried:?}");
    KneeStep::Try { load: next }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: KneeLimits = KneeLimits { start: 500, ceiling: 32_000, floor: 8, tolerance: 0.05, runs_max: 12 };

    /// Run the search against `passes` until it ends; the loads it tried, in order, and the end.
    fn search(limits: &KneeLimits, passes: impl Fn(u64) -> bool) -> (Vec<u64>, KneeStep) {
        let mut tried = Vec::new();
        loop {
            match next_step(&tried, limits) {
                KneeStep::Try { load } => tried.push((load, passes(load))),
                end => return (tried.iter().map(|t| t.0).collect(), end),
            }
            assert!(tried.len() <= limits.runs_max, "never more runs than allowed");
        }
    }

    #[test]
    fn a_monotone_answer_converges_to_its_threshold_within_the_tolerance() {
        for threshold in [8, 9, 100, 499, 500, 501, 777, 1_234, 4_000, 16_001, 31_999] {
            let (loads, end) = search(&LIMITS, |load| load <= threshold);
            let KneeStep::Found { pass, fail } = end else { panic!("threshold {threshold}: {end:?} after {loads:?}") };
            assert!(pass <= threshold && threshold < fail, "threshold {threshold} in [{pass}, {fail})");
            assert!((fail - pass) as f64 <= 0.05 * pass as f64 || fail - pass <= 1, "{pass}..{fail}");
            assert_eq!(loads[0], 500, "starts from the scenario's load");
        }
    }

    #[test]
    fn a_hand_worked_search() {
        // 500 passes, 1,000 fails; then 750 fails, 625 passes, 687 passes, 718 fails:
        // 718 - 687 = 31 <= 5% of 687 (34.35).
        let (loads, end) = search(&LIMITS, |load| load <= 705);
        assert_eq!(loads, [500, 1_000, 750, 625, 687, 718]);
        assert_eq!(end, KneeStep::Found { pass: 687, fail: 718 });
    }

    #[test]
    fn all_passing_stops_at_the_ceiling_and_says_so() {
        let (loads, end) = search(&LIMITS, |_| true);
        assert_eq!(loads, [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000]);
        assert_eq!(end, KneeStep::PassedAtCeiling { pass: 32_000 });
        // A ceiling that is not a power of two times the start is tried itself.
        let (loads, end) = search(&KneeLimits { ceiling: 3_000, ..LIMITS }, |_| true);
        assert_eq!(loads, [500, 1_000, 2_000, 3_000]);
        assert_eq!(end, KneeStep::PassedAtCeiling { pass: 3_000 });
    }

    #[test]
    fn all_failing_stops_at_the_floor_and_says_so() {
        let (loads, end) = search(&LIMITS, |_| false);
        assert_eq!(loads, [500, 250, 125, 62, 31, 15, 8]);
        assert_eq!(end, KneeStep::FailedAtFloor { fail: 8 });
    }

    #[test]
    fn running_out_of_runs_gives_the_bracket_so_far() {
        let limits = KneeLimits { runs_max: 3, ..LIMITS };
        let (loads, end) = search(&limits, |load| load <= 900);
        assert_eq!(loads, [500, 1_000, 750]);
        assert_eq!(end, KneeStep::OutOfRuns { pass: Some(750), fail: Some(1_000) });
        let (_, end) = search(&limits, |_| true);
        assert_eq!(end, KneeStep::OutOfRuns { pass: Some(2_000), fail: None });
    }

    #[test]
    fn a_pass_above_a_failure_is_disregarded() {
        // 1,000 fails but 2,000 passed before (a noisy answer): the bracket is 500..1,000.
        let tried = [(500, true), (2_000, true), (1_000, false)];
        assert_eq!(next_step(&tried, &LIMITS), KneeStep::Try { load: 750 });
    }

    #[test]
    fn loads_one_apart_are_a_bracket() {
        let limits = KneeLimits { start: 2, ceiling: 64, floor: 1, tolerance: 0.01, runs_max: 12 };
        let (_, end) = search(&limits, |load| load <= 2);
        assert_eq!(end, KneeStep::Found { pass: 2, fail: 3 });
    }

    #[test]
    fn scaling_keeps_users_and_fleet_and_scales_both_loads() {
        let text = "[users]\nconcurrent = 1_000\n[workload]\nmessages_per_s = 300\n[groups]\nactive = 10\nmessages_per_group_per_s = 0.5\n";
        let s = Scenario::parse(text, std::path::Path::new("t.toml"), "t").unwrap();
        let x = scale_load(&s, 2.5).unwrap();
        assert_eq!((x.workload.messages_per_s, x.groups.messages_per_group_per_s), (750, 1.25));
        assert_eq!((x.users.concurrent, x.fleet.chat_servers), (s.users.concurrent, s.fleet.chat_servers));
        // 10 msg/s a user at most: 1,000 users cannot send 30,000 msg/s.
        let e = scale_load(&s, 100.0).unwrap_err();
        assert!(e.contains("workload.messages_per_s") && e.contains("per user"), "{e}");
    }
}
