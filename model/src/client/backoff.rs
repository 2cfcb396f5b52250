//! Reconnect backoff: exponential with full jitter (the AWS Architecture Blog's "full
//! jitter"): the n-th retry waits a uniform draw in `[0, min(cap, base * 2^n))`, so a crowd
//! of devices that lost their server together spreads its reconnects instead of storming
//! the next one in waves.

use rand::Rng;
use std::time::Duration;

/// The backoff settings of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The window of the first retry (default 1 s).
    pub base: Duration,
    /// The largest window (default 30 s).
    pub cap: Duration,
}

/// Failed attempts beyond this no longer widen the window (2^16 x base exceeds any cap).
const DOUBLINGS_MAX: u32 = 16;

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The window after `failures` consecutive failed attempts.
    pub fn window(&self, failures: u32) -> Duration {
        let doublings = failures.min(DOUBLINGS_MAX);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// The wait before the next attempt after `failures` consecutive failed attempts.
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let window_us = self.window(failures).as_micros() as u64;
        Duration::from_micros(if window_us == 0 { 0 } else { rng.random_range(0..window_us) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn the_window_doubles_up_to_the_cap() {
        let b = Backoff { base: Duration::from_millis(500), cap: Duration::from_secs(5) };
        let windows: Vec<u64> = (0..6).map(|n| b.window(n).as_millis() as u64).collect();
        assert_eq!(windows, vec![500, 1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(b.window(u32::MAX), Duration::from_secs(5), "no overflow after many failures");
    }

    #[test]
    fn delays_are_spread_over_the_whole_window() {
        let b = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(30) };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..10_000).map(|_| b.delay(2, &mut rng)).collect();
        assert!(delays.iter().all(|&d| d < Duration::from_secs(4)));
        let below_1s = delays.iter().filter(|&&d| d < Duration::from_secs(1)).count();
        assert!((2_200..2_800).contains(&below_1s), "a quarter of a 4 s window: {below_1s}");
    }
}
