//! How long to wait before opening a port again: 250 ms doubling up to 5 s, jittered, so that
//! a missing device costs almost nothing and a replugged one is back within seconds, and so
//! that several ports that vanished together (a USB hub unplugged) do not retry in lockstep.
//!
//! The schedule itself is the one modules use to reconnect ([`mc_firmware::Backoff`], sans I/O):
//! one implementation of "exponential with equal jitter" for the whole system; this file only
//! sets the hub's bounds and draws the randomness.

use std::time::Duration;

/// The first delay.
pub const FIRST: Duration = Duration::from_millis(250);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(5);

/// Reopen delays for one port.
#[derive(Debug, Clone)]
pub struct Backoff(mc_firmware::Backoff);

impl Default for Backoff {
    fn default() -> Self {
        Self(mc_firmware::Backoff::new(FIRST, MAX))
    }
}

impl Backoff {
    /// Starts over from [`FIRST`] (the port has been working).
    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// The next delay: between half and all of the nominal delay, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        self.0.next_delay(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_jittered_within_half() {
        let mut b = Backoff::default();
        let ms: Vec<_> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        let nominal = [250, 500, 1000, 2000, 4000, 5000, 5000, 5000];
        for (got, nominal) in ms.iter().zip(nominal) {
            assert!(*got >= nominal / 2 && *got <= nominal, "{ms:?}");
        }
        b.reset();
        assert!(b.next_delay() <= FIRST);
    }
}
