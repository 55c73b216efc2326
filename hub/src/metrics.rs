//! Counters shared by every task: cheap atomics, read by tests, logs and (later) `/metrics`.

use std::{
    collections::BTreeMap,
    ops::Deref,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The hub's counters.
#[derive(Debug, Default)]
pub struct MetricsInner {
    /// MQTT messages decoded and handed to the tracker.
    pub messages_ingested: Counter,
    /// Socket.IO events emitted (one per emit call, whatever the audience size).
    pub events_emitted: Counter,
    /// Emits that failed for at least one socket (full buffer).
    pub emit_errors: Counter,
    /// MQTT connections accepted by the gateway (authenticated).
    pub mqtt_connections: Counter,
    /// MQTT connections refused (bad credentials, unknown module, bad client id).
    pub mqtt_auth_failures: Counter,
    /// Telemetry messages that changed nothing.
    pub telemetry_unchanged: Counter,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl MetricsInner {
    /// Counts a rejected input by reason (`malformed`, `non_finite`, `acl_denied`...).
    pub fn reject(&self, reason: &'static str) {
        if let Ok(mut map) = self.rejected.lock() {
            *map.entry(reason).or_default() += 1;
        }
    }

    /// Rejections so far for `reason`.
    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected
            .lock()
            .map(|m| m.get(reason).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// All rejection counters.
    pub fn rejections(&self) -> BTreeMap<&'static str, u64> {
        self.rejected.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Handle to the hub's counters; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Arc<MetricsInner>);

impl Deref for Metrics {
    type Target = MetricsInner;
    fn deref(&self) -> &MetricsInner {
        &self.0
    }
}
