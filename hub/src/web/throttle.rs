//! Login brute-force throttling: after a few failures, each further attempt for the same
//! account (or from the same address) must wait, doubling per failure up to a cap. A success
//! clears the account's count. Refusals are answered with 429 and `Retry-After`, before any
//! password is checked, so a throttled attacker learns nothing and costs no argon2 time.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Failures allowed per account before delays start.
const FREE_PER_ACCOUNT: u32 = 5;
/// Failures allowed per client address before delays start (several users may share one).
const FREE_PER_ADDRESS: u32 = 20;
/// First delay; doubles per further failure.
const BASE_DELAY: Duration = Duration::from_secs(1);
/// Longest delay.
const MAX_DELAY: Duration = Duration::from_secs(300);
/// Entries kept at most; older ones are forgotten first when full.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// What is throttled: an account (by email) or a client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    /// Lowercased email.
    Account(String),
    /// Client IP address.
    Address(std::net::IpAddr),
}

impl ThrottleKey {
    fn free_attempts(&self) -> u32 {
        match self {
            Self::Account(_) => FREE_PER_ACCOUNT,
            Self::Address(_) => FREE_PER_ADDRESS,
        }
    }
}

/// Failure counts per key.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<ThrottleKey, Failures>>,
}

fn delay_after(failures: u32, free: u32) -> Duration {
    match failures.checked_sub(free) {
        None => Duration::ZERO,
        Some(extra) => BASE_DELAY
            .checked_mul(1u32 << extra.min(16))
            .unwrap_or(MAX_DELAY)
            .min(MAX_DELAY),
    }
}

impl LoginThrottle {
    /// `Err(wait)` when any key must still wait before another attempt.
    pub fn check(&self, keys: &[ThrottleKey], now: Instant) -> Result<(), Duration> {
        let Ok(map) = self.failures.lock() else {
            return Ok(());
        };
        let wait = keys
            .iter()
            .filter_map(|k| {
                let f = map.get(k)?;
                let ready = f.last + delay_after(f.count, k.free_attempts());
                ready.checked_duration_since(now)
            })
            .max();
        match wait {
            Some(w) if !w.is_zero() => Err(w),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt for every key.
    pub fn failed(&self, keys: &[ThrottleKey], now: Instant) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, f| now.duration_since(f.last) < MAX_DELAY);
        }
        for key in keys {
            let f = map.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
    }

    /// A successful login clears the account (not the address: others may be guessing there).
    pub fn succeeded(&self, account: &ThrottleKey) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_free_attempts_and_double() {
        let t = LoginThrottle::default();
        let account = ThrottleKey::Account("ada@x.io".into());
        let keys = [account.clone()];
        let start = Instant::now();
        for _ in 0..FREE_PER_ACCOUNT {
            assert_eq!(t.check(&keys, start), Ok(()));
            t.failed(&keys, start);
        }
        assert_eq!(t.check(&keys, start), Err(BASE_DELAY));
        let later = start + BASE_DELAY;
        assert_eq!(t.check(&keys, later), Ok(()));
        t.failed(&keys, later);
        assert_eq!(t.check(&keys, later), Err(BASE_DELAY * 2));
        t.succeeded(&account);
        assert_eq!(t.check(&keys, later), Ok(()));
    }

    #[test]
    fn delays_are_capped_and_keys_independent() {
        assert_eq!(delay_after(1000, 5), MAX_DELAY);
        assert_eq!(delay_after(3, 5), Duration::ZERO);
        let t = LoginThrottle::default();
        let now = Instant::now();
        let a = [ThrottleKey::Account("a@x.io".into())];
        for _ in 0..10 {
            t.failed(&a, now);
        }
        assert!(t.check(&a, now).is_err());
        assert_eq!(
            t.check(&[ThrottleKey::Account("b@x.io".into())], now),
            Ok(())
        );
    }
}
