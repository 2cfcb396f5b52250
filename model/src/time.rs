//! Simulated time as an input: microseconds since the start of a run.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in (simulated or real) time, in microseconds since the run's epoch.
///
/// The model never reads a clock: callers pass `Time` into every handler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// The run's epoch.
    pub const ZERO: Time = Time(0);
    /// Later than any time a run reaches; used as "never".
    pub const NEVER: Time = Time(u64::MAX);

    /// A time `ms` milliseconds after the epoch.
    pub const fn from_ms(ms: u64) -> Time {
        Time(ms * 1_000)
    }

    /// A time `s` seconds after the epoch.
    pub const fn from_secs(s: u64) -> Time {
        Time(s * 1_000_000)
    }

    /// Microseconds since the epoch.
    pub const fn as_us(self) -> u64 {
        self.0
    }

    /// Whole milliseconds since the epoch (truncated).
    pub const fn as_ms(self) -> u64 {
        self.0 / 1_000
    }

    /// Whole milliseconds since the epoch in 32 bits, for compact records: saturates after
    /// 49 days, far beyond any run.
    pub fn as_ms_u32(self) -> u32 {
        u32::try_from(self.as_ms()).unwrap_or(u32::MAX)
    }

    /// The span from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// A duration in whole microseconds, in 64-bit arithmetic: `Duration::as_micros` works in
/// 128 bits, which costs on a path taken several times per simulated event.
#[inline]
fn micros(d: Duration) -> u64 {
    d.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(d.subsec_micros()))
}

impl Add<Duration> for Time {
    type Output = Time;
    #[inline]
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(micros(d)))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    #[inline]
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(micros(d)))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_displays() {
        let t = Time::from_ms(1_500);
        assert_eq!(t + Duration::from_millis(500), Time::from_secs(2));
        assert_eq!(Time::ZERO - Duration::from_secs(1), Time::ZERO);
        assert_eq!(Time::from_secs(2).since(t), Duration::from_millis(500));
        assert_eq!(t.since(Time::from_secs(2)), Duration::ZERO);
        assert_eq!(t.to_string(), "1.500000s");
    }
}
