//! Counters shared by every task: cheap atomics, read by tests, logs and `GET /metrics`
//! (`web/ops.rs`).

use std::{
    collections::BTreeMap,
    ops::Deref,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use mc_protocol::link::LinkError;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The hub's counters.
#[derive(Debug, Default)]
pub struct MetricsInner {
    /// Module messages (hello, heartbeat, telemetry, will) decoded and handed to the tracker,
    /// over MQTT or serial.
    pub messages_ingested: Counter,
    /// Of [`MetricsInner::messages_ingested`], those that came over MQTT.
    pub mqtt_messages_ingested: Counter,
    /// Of [`MetricsInner::messages_ingested`], those that came over a serial link.
    pub serial_messages_ingested: Counter,
    /// Socket.IO events emitted (one per emit call, whatever the audience size).
    pub events_emitted: Counter,
    /// Event payloads that did not serialize (a bug: the event was not sent).
    pub emit_errors: Counter,
    /// Registry changes (the change log) this hub has applied: its events published, its local
    /// effects done (`registry::RegistryWatcher`).
    pub registry_changes_applied: Counter,
    /// Cluster mode: module events another hub had already published (two hubs briefly
    /// believed they owned the module), refused by the relay's guard (`cluster::relay`).
    pub cluster_guard_rejections: Counter,
    /// Cluster mode: events Redis refused to take (the publishing script failed): dropped.
    pub cluster_publish_errors: Counter,
    /// Events held for a dashboard that was behind (its socket buffer full) instead of sent
    /// at once (`realtime::delivery`).
    pub dashboard_events_deferred: Counter,
    /// Of those, the ones merged into (or replacing) an older held event of the same subject.
    pub dashboard_events_coalesced: Counter,
    /// Dashboards disconnected for falling too far behind (they resynchronise).
    pub dashboard_slow_cutoffs: Counter,
    /// Held events dropped with those dashboards' backlogs (recovered by their resync).
    pub dashboard_backlog_dropped: Counter,
    /// MQTT connections accepted by the gateway (authenticated).
    pub mqtt_connections: Counter,
    /// MQTT connections refused (bad credentials, unknown module, bad client id).
    pub mqtt_auth_failures: Counter,
    /// Telemetry messages that changed nothing.
    pub telemetry_unchanged: Counter,
    /// Dashboard connections that were reconnections (the client presented `resume` or
    /// `reconnectMs` in its handshake).
    pub reconnections: Counter,
    /// Reconnections that reported how long the client was disconnected (`reconnectMs`).
    pub reconnect_samples: Counter,
    /// Sum of the reported disconnection times, in milliseconds (each clamped to 10 minutes).
    pub reconnect_ms_total: Counter,
    /// Dashboard handshakes the hub refused (no or unknown session, forbidden page...).
    pub connection_errors: Counter,
    /// Failed attempts dashboards reported when they got through (`connectErrors`, each report
    /// clamped to 100). Their own view: attempts that never reached the hub are in it, and
    /// refusals the hub counted in [`MetricsInner::connection_errors`] may be too.
    pub client_connect_errors: Counter,
    /// Resuming clients that got their missed events replayed (`resumed: true`).
    pub resumes: Counter,
    /// Commands for offline modules accepted into the hub's queue (`commands::queue`).
    pub commands_queued: Counter,
    /// Queued commands sent once their module was back (published, or acknowledged by a serial
    /// module).
    pub commands_delivered_from_queue: Counter,
    /// Queued commands dropped because their module was not back within `[commands]
    /// queue-ttl`.
    pub commands_expired: Counter,
    /// Queued commands sent and lost: taken from the queue, but the module never acknowledged
    /// them (a serial module, every attempt timed out) or they were refused as invalid. Not
    /// retried (the module may have run them).
    pub commands_failed: Counter,
    /// Queued commands dropped because their module was disabled or removed: it must not run
    /// them whenever it is enabled (or registered) again.
    pub commands_dropped: Counter,
    /// The MQTT ingest task is consuming the broker link (`/readyz`): it stops when the link
    /// is lost, and then no module data arrives over MQTT.
    pub mqtt_ingest_up: AtomicBool,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Failed database writes the hub did not answer to a client (module state snapshots), by
    /// [`StoreErrorKind`](crate::store::StoreErrorKind) label: `mc_store_errors_total{kind}`.
    store_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Emits by event name (a handful of names; counted under the stream lock, uncontended).
    emitted: Mutex<BTreeMap<&'static str, u64>>,
    /// Per serial port, by configured path.
    serial_ports: Mutex<BTreeMap<String, Arc<SerialPortMetrics>>>,
}

impl MetricsInner {
    /// Counts a rejected input by reason (`malformed`, `non_finite`, `acl_denied`...).
    pub fn reject(&self, reason: &'static str) {
        if let Ok(mut map) = self.rejected.lock() {
            *map.entry(reason).or_default() += 1;
        }
    }

    /// Counts a failed background write by kind (`disk_full`, `read_only`, `io`...).
    pub fn store_error(&self, kind: &'static str) {
        if let Ok(mut map) = self.store_errors.lock() {
            *map.entry(kind).or_default() += 1;
        }
    }

    /// Failed background writes so far, by kind.
    pub fn store_errors(&self) -> BTreeMap<&'static str, u64> {
        self.store_errors
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Counts one emit of `event` (also in [`MetricsInner::events_emitted`]).
    pub fn emitted(&self, event: &'static str) {
        self.events_emitted.inc();
        if let Ok(mut map) = self.emitted.lock() {
            *map.entry(event).or_default() += 1;
        }
    }

    /// Emits so far, by event name.
    pub fn emitted_by_event(&self) -> BTreeMap<&'static str, u64> {
        self.emitted.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Rejections so far for `reason`.
    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected
            .lock()
            .map(|m| m.get(reason).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Average reported disconnection time of reconnecting dashboards, in milliseconds (0
    /// before any report).
    pub fn avg_reconnect_ms(&self) -> u64 {
        self.reconnect_ms_total
            .get()
            .checked_div(self.reconnect_samples.get())
            .unwrap_or(0)
    }

    /// All rejection counters.
    pub fn rejections(&self) -> BTreeMap<&'static str, u64> {
        self.rejected.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The counters of serial port `path` (created on first use; the port task keeps them).
    pub fn serial_port(&self, path: &str) -> Arc<SerialPortMetrics> {
        match self.serial_ports.lock() {
            Ok(mut ports) => ports.entry(path.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Every serial port's counters, by path.
    pub fn serial_ports(&self) -> BTreeMap<String, Arc<SerialPortMetrics>> {
        self.serial_ports
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }
}

/// The counters of one serial port. Bad frames are also counted hub-wide by reason
/// ([`MetricsInner::reject`]: `crc_mismatch`, `frame_too_long`, `handshake_required`...), like
/// bad MQTT input.
#[derive(Debug, Default)]
pub struct SerialPortMetrics {
    /// The port is open now.
    pub open: AtomicBool,
    /// Bytes read from the port.
    pub bytes_in: Counter,
    /// Frames received that decoded.
    pub frames_in: Counter,
    /// Frames sent.
    pub frames_out: Counter,
    /// Frames received that did not decode (any [`FrameError`](mc_protocol::link::FrameError)).
    pub frame_errors: Counter,
    /// Times the port was opened again after it failed or disappeared.
    pub reopens: Counter,
    /// Attempts to open the port that failed.
    pub open_failures: Counter,
    /// Unfinished frames dropped when the port closed mid-frame.
    pub partial_frames_dropped: Counter,
    /// Error replies not sent because of the per-port rate limit.
    pub error_replies_suppressed: Counter,
    /// Frames not sent because the port did not take them in time.
    pub write_timeouts: Counter,
    /// `Error` reports received from modules, by [`LinkError`] tag.
    peer_errors: [Counter; LinkError::CODES],
}

impl SerialPortMetrics {
    /// Counts an `Error` report from a module.
    pub fn peer_error(&self, error: LinkError) {
        self.peer_errors[error.code()].inc();
    }

    /// `Error` reports received so far with `error`'s code.
    pub fn peer_errors(&self, error: LinkError) -> u64 {
        self.peer_errors[error.code()].get()
    }

    /// Whether the port is open now.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
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
