//! Reconnection delays: exponential backoff with jitter, sans I/O: the caller supplies the
//! randomness (a board's RNG peripheral, `rand` in the simulator) and does the waiting.
//!
//! Jitter matters here: when the broker restarts, fifty simulated (or real) modules lose their
//! connection at the same instant, and without jitter they would all reconnect in lockstep.

use core::time::Duration;

/// First delay after a failure.
pub const INITIAL: Duration = Duration::from_millis(250);
/// Longest delay.
pub const MAX: Duration = Duration::from_secs(30);

/// Delay generator: `INITIAL`, doubling on every failure up to `MAX`, reset after a successful
/// connection. Each delay is drawn from `[d/2, d)` ("equal jitter"), so it never collapses to
/// zero yet spreads reconnections out.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Base of the next delay (before jitter).
    next: Duration,
    /// Where `next` starts again after [`Backoff::reset`].
    initial: Duration,
    /// Cap of `next`, so a long outage still retries at a steady pace.
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL, MAX)
    }
}

impl Backoff {
    /// Delays from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            next: initial,
            initial,
            max,
        }
    }

    /// The delay before the next attempt; `jitter` is uniform in `[0, 1)`.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(self.max);
        let half = base / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// A connection succeeded: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let full: Vec<_> = (0..10).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(full[0], Duration::from_millis(250));
        assert_eq!(full[1], Duration::from_millis(500));
        assert_eq!(full[2], Duration::from_secs(1));
        assert_eq!(full[9], Duration::from_secs(30));
        assert!(full.windows(2).all(|w| w[0] <= w[1]));
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(250));
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(125));
        let mut b = Backoff::default();
        let d = b.next_delay(0.5);
        assert!(d > Duration::from_millis(125) && d < Duration::from_millis(250));
    }
}
