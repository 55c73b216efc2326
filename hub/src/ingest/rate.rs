//! Per-module rate limit on ingest: a token bucket per module (`[ingest] module-rate`,
//! `module-burst`). A module that floods — a firmware bug, a stuck loop, a replayed backlog at
//! line speed — gets its excess dropped and counted (`mc_rejected_total{reason="rate_limited"}`)
//! before any decoding, so it cannot fill the tracker's queue and delay every other module.
//! Every message kind counts (a heartbeat flood is a flood) except an MQTT hello, which a module
//! that flooded still needs to introduce itself after a reconnect; the burst absorbs a hello, a
//! heartbeat and telemetry arriving together.
//!
//! The MQTT ingest task and every serial port share one limiter (a module may move between
//! transports). Buckets of modules that went quiet are pruned, so the map holds only modules
//! that sent recently.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use mc_protocol::ModuleId;
use tokio::time::Instant;

/// How often quiet modules' buckets are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Sustained rate and burst allowed per module.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages per second, sustained.
    pub per_second: f64,
    /// Messages at once (the bucket's size).
    pub burst: f64,
}

/// What the limiter says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the module's budget.
    Allowed,
    /// Over it: drop the message. `first` is true for the first drop after the module was
    /// within budget (log then, not for every message of a flood).
    Limited {
        /// First of a run of drops.
        first: bool,
    },
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    limited: bool,
}

/// Shared by every ingest path; cheap to clone. `None` limit: everything is allowed.
#[derive(Debug, Clone, Default)]
pub struct ModuleRateLimiter {
    inner: Option<Arc<Mutex<Buckets>>>,
}

#[derive(Debug)]
struct Buckets {
    limit: RateLimit,
    by_module: HashMap<ModuleId, Bucket>,
    pruned_at: Instant,
}

impl ModuleRateLimiter {
    /// A limiter with `limit`, or none at all.
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self {
            inner: limit.map(|limit| {
                Arc::new(Mutex::new(Buckets {
                    limit,
                    by_module: HashMap::new(),
                    pruned_at: Instant::now(),
                }))
            }),
        }
    }

    /// Takes one message of `module` at `now` from its budget.
    pub fn admit(&self, module: &ModuleId, now: Instant) -> Admission {
        let Some(inner) = &self.inner else {
            return Admission::Allowed;
        };
        let Ok(mut buckets) = inner.lock() else {
            // A panic elsewhere poisoned it: let traffic through rather than drop it all.
            return Admission::Allowed;
        };
        let limit = buckets.limit;
        if now.duration_since(buckets.pruned_at) >= PRUNE_INTERVAL {
            buckets.pruned_at = now;
            // A bucket full again (quiet for burst/rate seconds) is the same as no bucket.
            let refill = Duration::try_from_secs_f64(limit.burst / limit.per_second)
                .unwrap_or(Duration::MAX);
            buckets
                .by_module
                .retain(|_, b| now.duration_since(b.at) < refill);
        }
        if !buckets.by_module.contains_key(module) {
            buckets.by_module.insert(
                module.clone(),
                Bucket {
                    tokens: limit.burst,
                    at: now,
                    limited: false,
                },
            );
        }
        let Some(bucket) = buckets.by_module.get_mut(module) else {
            return Admission::Allowed;
        };
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(limit.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.limited = false;
            Admission::Allowed
        } else {
            let first = !bucket.limited;
            bucket.limited = true;
            Admission::Limited { first }
        }
    }

    /// Modules with a bucket now (tests: quiet ones are pruned).
    pub fn tracked(&self) -> usize {
        self.inner
            .as_ref()
            .and_then(|i| i.lock().ok().map(|b| b.by_module.len()))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ModuleId {
        ModuleId::new(s).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate_per_module() {
        let limiter = ModuleRateLimiter::new(Some(RateLimit {
            per_second: 10.0,
            burst: 5.0,
        }));
        let (a, b) = (id("MC-1-A"), id("MC-2-B"));
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.admit(&a, now), Admission::Allowed);
        }
        assert_eq!(limiter.admit(&a, now), Admission::Limited { first: true });
        assert_eq!(limiter.admit(&a, now), Admission::Limited { first: false });
        // Another module has its own budget.
        assert_eq!(limiter.admit(&b, now), Admission::Allowed);
        // 100 ms later one token is back, and only one.
        let later = now + Duration::from_millis(100);
        assert_eq!(limiter.admit(&a, later), Admission::Allowed);
        assert_eq!(limiter.admit(&a, later), Admission::Limited { first: true });
        // Over 10 s at exactly 10/s everything passes.
        let mut allowed = 0;
        for i in 1..=100u64 {
            let t = later + Duration::from_millis(100 * i);
            allowed += u32::from(limiter.admit(&a, t) == Admission::Allowed);
        }
        assert_eq!(allowed, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_modules_are_pruned_and_no_limit_allows_all() {
        let limiter = ModuleRateLimiter::new(Some(RateLimit {
            per_second: 1.0,
            burst: 2.0,
        }));
        let now = Instant::now();
        for i in 0..50 {
            limiter.admit(&id(&format!("MC-{i}-X")), now);
        }
        assert_eq!(limiter.tracked(), 50);
        limiter.admit(&id("MC-999-X"), now + PRUNE_INTERVAL);
        assert_eq!(limiter.tracked(), 1, "only the module heard just now");

        let none = ModuleRateLimiter::new(None);
        for _ in 0..10_000 {
            assert_eq!(none.admit(&id("MC-1-A"), now), Admission::Allowed);
        }
    }
}
