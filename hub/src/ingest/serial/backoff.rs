//! How long to wait before opening a port again: 250 ms doubling up to 5 s, jittered, so that
//! a missing device costs almost nothing and a replugged one is back within seconds, and so
//! that several ports that vanished together (a USB hub unplugged) do not retry in lockstep.

use std::time::Duration;

/// The first delay.
pub const FIRST: Duration = Duration::from_millis(250);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(5);

/// Reopen delays for one port.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The nominal delay of the next attempt (before jitter).
    nominal: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { nominal: FIRST }
    }
}

impl Backoff {
    /// Starts over from [`FIRST`] (the port has been working).
    pub fn reset(&mut self) {
        self.nominal = FIRST;
    }

    /// The next delay: between half and all of the nominal delay, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    /// [`next_delay`](Self::next_delay) with the random draw `unit` in `0.0..1.0` given.
    fn next_delay_with(&mut self, unit: f64) -> Duration {
        let nominal = self.nominal;
        self.nominal = (nominal * 2).min(MAX);
        nominal.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_jittered_within_half() {
        let mut b = Backoff::default();
        let nominal: Vec<_> = (0..8).map(|_| b.next_delay_with(1.0)).collect();
        let ms: Vec<_> = nominal.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay_with(0.0), FIRST / 2);
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(250) && d <= MAX, "{d:?}");
        }
    }
}
