//! Global stats for admins: counted on demand (`GET /api/admin/stats`) and pushed as
//! `rt_global_stats_updated` at most once per interval, and only when something changed.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    realtime::{EventsManager, events},
    store::{Store, StoreError},
    tracker::TrackerHandle,
};

/// The numbers admins see.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GlobalStats {
    /// Registered users.
    pub total_users: u64,
    /// Users with at least one connected dashboard.
    pub active_users: usize,
    /// Registered modules.
    pub total_modules: u64,
    /// Modules online (as dashboards see them).
    pub online_modules: usize,
    /// Connected dashboard sockets.
    pub connected_clients: usize,
    /// MQTT messages ingested per second over the last interval.
    pub messages_per_second: f64,
    /// Socket.IO events emitted per second over the last interval.
    pub events_per_second: f64,
    /// Inputs rejected so far (all reasons).
    pub rejected_total: u64,
    /// Dashboard reconnections so far.
    pub reconnections: u64,
    /// Average time reconnecting dashboards reported they were disconnected, in milliseconds
    /// (0: none yet; each report clamped to 10 minutes).
    pub avg_reconnect_ms: u64,
    /// Dashboard handshakes the hub refused so far.
    pub connection_errors: u64,
    /// Failed connection attempts dashboards reported so far when they got through (each
    /// report clamped to 100); counted apart from the hub's refusals, which they may include.
    pub client_connect_errors: u64,
}

/// Computes stats; keeps the previous counter readings to derive rates.
pub struct StatsCollector {
    store: Store,
    tracker: TrackerHandle,
    events: EventsManager,
    metrics: Metrics,
    /// The previous counter readings, to derive rates (locked only between awaits).
    last: std::sync::Mutex<Option<(Instant, u64, u64)>>,
}

impl StatsCollector {
    /// A collector over these sources.
    pub fn new(
        store: Store,
        tracker: TrackerHandle,
        events: EventsManager,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            tracker,
            events,
            metrics,
            last: std::sync::Mutex::new(None),
        }
    }

    /// Current stats; rates are over the time since the previous call (0 on the first).
    pub async fn collect(&self) -> Result<GlobalStats, StoreError> {
        let (total_users, total_modules) = self.store.counts().await?;
        let online_modules = self
            .tracker
            .counters()
            .await
            .map_or(0, |c| c.online_modules);
        let (connected_clients, active_users) = self.events.connected_clients_and_users();
        let now = Instant::now();
        let messages = self.metrics.messages_ingested.get();
        let emitted = self.metrics.events_emitted.get();
        let previous = self
            .last
            .lock()
            .map(|mut last| last.replace((now, messages, emitted)))
            .unwrap_or(None);
        let (messages_per_second, events_per_second) = match previous {
            Some((at, m, e)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                let rate = |now: u64, then: u64| ((now.saturating_sub(then)) as f64 / secs).round();
                (rate(messages, m), rate(emitted, e))
            }
            None => (0.0, 0.0),
        };
        Ok(GlobalStats {
            total_users,
            active_users,
            total_modules,
            online_modules,
            connected_clients,
            messages_per_second,
            events_per_second,
            rejected_total: self.metrics.rejections().values().sum(),
            reconnections: self.metrics.reconnections.get(),
            avg_reconnect_ms: self.metrics.avg_reconnect_ms(),
            connection_errors: self.metrics.connection_errors.get(),
            client_connect_errors: self.metrics.client_connect_errors.get(),
        })
    }
}

/// Pushes stats to admins every `interval` when they changed, until shutdown.
pub async fn run(collector: StatsCollector, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<GlobalStats> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let stats = match collector.collect().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "stats not available");
                continue;
            }
        };
        if previous.as_ref() == Some(&stats) {
            continue;
        }
        let payload = events::GlobalStatsUpdated {
            stats: stats.clone(),
        };
        // In a cluster every hub collects, the first to publish in each interval is heard
        // (its figures are cluster-wide for modules, its own for connected clients).
        let slot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() / interval.as_millis().max(1));
        collector
            .events
            .once(format!("stats:{slot}"))
            .emit_to_admins(events::RT_GLOBAL_STATS_UPDATED, &payload)
            .await;
        previous = Some(stats);
    }
}
