//! For operators: `GET /metrics` (Prometheus scrape, OpenMetrics text), `GET /healthz` (the
//! process answers HTTP) and `GET /readyz` (it can do its job: the database and the tracker
//! answer in time, MQTT ingest runs).
//!
//! The hot paths only bump atomics ([`crate::metrics`]). A scrape reads those, asks for what
//! lives elsewhere (the tracker's online count, the database's totals, the replay buffer, the
//! process's memory) into a [`Scrape`], and lets `prometheus-client` write the text format
//! (types, help, `_total` suffixes). It writes label values as given, so [`escape`] does that
//! (serial port paths come from the configuration). Nothing is registered up front, so there
//! is no second copy of any counter to keep in step.

use std::{collections::BTreeMap, fmt, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use serde_json::json;

use super::AppState;

/// How long a readiness check or a scrape waits for the database or the tracker.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The media type of the OpenMetrics text format (Prometheus asks for it and reads it).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /healthz`: 200 while the process serves HTTP (liveness: restart it if this fails).
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 `{"status": "ready", "checks": {...}}` when the database and the tracker
/// answer within [`CHECK_TIMEOUT`] and MQTT ingest is consuming the broker link; 503 with the
/// failing checks otherwise (readiness: send no traffic here until it passes).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(CHECK_TIMEOUT, state.store.counts()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("error: {e}")),
        Err(_) => Err("timed out".to_owned()),
    };
    let tracker = match tokio::time::timeout(CHECK_TIMEOUT, state.tracker.counters()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("stopped".to_owned()),
        Err(_) => Err("timed out".to_owned()),
    };
    let mqtt = if state
        .metrics
        .mqtt_ingest_up
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        Ok(())
    } else {
        Err("broker link lost".to_owned())
    };
    let ready = database.is_ok() && tracker.is_ok() && mqtt.is_ok();
    let show = |r: &Result<(), String>| r.as_ref().err().map_or("ok", |e| e.as_str()).to_owned();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {
            "database": show(&database),
            "tracker": show(&tracker),
            "mqttIngest": show(&mqtt),
        },
    });
    if !ready {
        tracing::warn!(%body, "not ready");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: every counter and gauge of the hub, see [`Scrape`].
pub async fn metrics(State(state): State<AppState>) -> Response {
    let scrape = Scrape::gather(&state).await;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &registry) {
        tracing::error!(error = %e, "metrics do not encode");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
}

/// One scrape's values. Names are `mc_...` (the hub) and the usual `process_...`.
#[derive(Debug)]
struct Scrape {
    ingested_by_transport: [(&'static str, u64); 2],
    emitted_by_event: BTreeMap<&'static str, u64>,
    emit_errors: u64,
    cluster_guard_rejections: u64,
    cluster_publish_errors: u64,
    registry_changes_applied: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
    store_errors: BTreeMap<&'static str, u64>,
    telemetry_unchanged: u64,
    mqtt_connections: u64,
    mqtt_auth_failures: u64,
    clients_by_page: BTreeMap<&'static str, usize>,
    clients_users: usize,
    reconnections: u64,
    reconnect_reports: u64,
    reconnect_seconds: f64,
    connection_errors: u64,
    client_connect_errors: u64,
    resumes: u64,
    tracker_queue: (usize, usize),
    replay: (usize, usize),
    /// Dashboards behind now, the entries and bytes held for them.
    slow_clients: (usize, usize, usize),
    /// Tasks alive on the hub's runtime (a leak shows as growth under steady load).
    alive_tasks: usize,
    /// Events held for dashboards behind, merged ones, cut-off dashboards, entries dropped.
    backpressure: [u64; 4],
    /// Commands queued, delivered from the queue, expired, failed, dropped; and waiting now.
    commands: (u64, u64, u64, u64, u64, usize),
    /// `None` when the tracker did not answer in time (the gauge is left out, not zero).
    modules_online: Option<usize>,
    /// Users and registered modules; `None` when the database did not answer in time.
    totals: Option<(u64, u64)>,
    serial: Vec<(String, SerialPort)>,
    process: crate::process::ProcessStats,
}

#[derive(Debug, Default)]
struct SerialPort {
    open: bool,
    bytes_in: u64,
    frames_in: u64,
    frames_out: u64,
    frame_errors: u64,
    reopens: u64,
}

impl Scrape {
    async fn gather(state: &AppState) -> Self {
        let m = &state.metrics;
        let (clients_by_page, users) = state.events.clients_by_page();
        let modules_online = tokio::time::timeout(CHECK_TIMEOUT, state.tracker.counters())
            .await
            .ok()
            .flatten()
            .map(|c| c.online_modules);
        let totals = match tokio::time::timeout(CHECK_TIMEOUT, state.store.counts()).await {
            Ok(Ok((users, modules))) => Some((users, modules)),
            _ => None,
        };
        Self {
            ingested_by_transport: [
                ("mqtt", m.mqtt_messages_ingested.get()),
                ("serial", m.serial_messages_ingested.get()),
            ],
            emitted_by_event: m.emitted_by_event(),
            emit_errors: m.emit_errors.get(),
            cluster_guard_rejections: m.cluster_guard_rejections.get(),
            cluster_publish_errors: m.cluster_publish_errors.get(),
            registry_changes_applied: m.registry_changes_applied.get(),
            rejected_by_reason: m.rejections(),
            store_errors: m.store_errors(),
            telemetry_unchanged: m.telemetry_unchanged.get(),
            mqtt_connections: m.mqtt_connections.get(),
            mqtt_auth_failures: m.mqtt_auth_failures.get(),
            clients_by_page,
            clients_users: users,
            reconnections: m.reconnections.get(),
            reconnect_reports: m.reconnect_samples.get(),
            reconnect_seconds: m.reconnect_ms_total.get() as f64 / 1000.0,
            connection_errors: m.connection_errors.get(),
            client_connect_errors: m.client_connect_errors.get(),
            resumes: m.resumes.get(),
            tracker_queue: state.tracker.queue_depth(),
            replay: state.events.replay_depth().await,
            slow_clients: state.events.slow_clients().await,
            alive_tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            backpressure: [
                m.dashboard_events_deferred.get(),
                m.dashboard_events_coalesced.get(),
                m.dashboard_slow_cutoffs.get(),
                m.dashboard_backlog_dropped.get(),
            ],
            commands: (
                m.commands_queued.get(),
                m.commands_delivered_from_queue.get(),
                m.commands_expired.get(),
                m.commands_failed.get(),
                m.commands_dropped.get(),
                state.commands.queue().depth(),
            ),
            modules_online,
            totals,
            serial: m
                .serial_ports()
                .into_iter()
                .map(|(path, p)| {
                    let port = SerialPort {
                        open: p.is_open(),
                        bytes_in: p.bytes_in.get(),
                        frames_in: p.frames_in.get(),
                        frames_out: p.frames_out.get(),
                        frame_errors: p.frame_errors.get(),
                        reopens: p.reopens.get(),
                    };
                    (path, port)
                })
                .collect(),
            process: crate::process::ProcessStats::read(),
        }
    }
}

/// Writes one unlabelled counter (the encoder adds `_total`).
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes one unlabelled gauge.
fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes a metric with one label, a sample per `(label value, metric)`.
fn family<'a, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, M)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, kind)?;
    for (value, metric) in samples {
        metric.encode(family.encode_family(&[(label, escape(value))])?)?;
    }
    Ok(())
}

/// A counter with one label, a sample per `(label value, count)`.
fn counters_by<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let samples = values.into_iter().map(|(v, n)| (v, ConstCounter::new(n)));
    family(enc, (name, help, MetricType::Counter), label, samples)
}

/// A gauge with one label, a sample per `(label value, value)`.
fn gauges_by<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) -> fmt::Result {
    let samples = values.into_iter().map(|(v, n)| (v, ConstGauge::new(n)));
    family(enc, (name, help, MetricType::Gauge), label, samples)
}

/// A label value as the text format wants it: backslash, double quote and newline escaped (a
/// stray quote would make Prometheus reject the whole scrape).
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

fn int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let e = &mut enc;
        // modules -> hub
        counters_by(
            e,
            "mc_messages_ingested",
            "Module messages decoded and handed to the tracker, by transport.",
            "transport",
            self.ingested_by_transport,
        )?;
        counters_by(
            e,
            "mc_rejected",
            "Inputs refused (malformed, unknown module, ACL, rate...), by reason.",
            "reason",
            self.rejected_by_reason.iter().map(|(r, n)| (*r, *n)),
        )?;
        counters_by(
            e,
            "mc_store_errors",
            "Module state snapshots not saved (disk_full, read_only, io...), by kind.",
            "kind",
            self.store_errors.iter().map(|(k, n)| (*k, *n)),
        )?;
        counter(
            e,
            "mc_telemetry_unchanged",
            "Telemetry messages that changed nothing (no event).",
            self.telemetry_unchanged,
        )?;
        counter(
            e,
            "mc_mqtt_connections",
            "MQTT connections accepted.",
            self.mqtt_connections,
        )?;
        counter(
            e,
            "mc_mqtt_auth_failures",
            "MQTT connections refused (credentials, client id).",
            self.mqtt_auth_failures,
        )?;
        if let Some(online) = self.modules_online {
            gauge(
                e,
                "mc_modules_online",
                "Modules dashboards see online.",
                int(online),
            )?;
        }
        if let Some((users, modules)) = self.totals {
            let int64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            gauge(
                e,
                "mc_modules_registered",
                "Modules in the registry.",
                int64(modules),
            )?;
            gauge(e, "mc_users", "User accounts.", int64(users))?;
        }
        gauge(
            e,
            "mc_tracker_queue_depth",
            "Module events waiting for the tracker.",
            int(self.tracker_queue.0),
        )?;
        gauge(
            e,
            "mc_tracker_queue_capacity",
            "Module events the tracker's queue holds.",
            int(self.tracker_queue.1),
        )?;
        // hub -> modules: commands for offline modules
        let (queued, delivered, expired, failed, dropped, depth) = self.commands;
        counter(
            e,
            "mc_commands_queued",
            "Commands for offline modules queued in the hub.",
            queued,
        )?;
        counter(
            e,
            "mc_commands_delivered_from_queue",
            "Queued commands sent once their module was back.",
            delivered,
        )?;
        counter(
            e,
            "mc_commands_expired",
            "Queued commands dropped: their module was not back within the queue TTL.",
            expired,
        )?;
        counter(
            e,
            "mc_commands_failed",
            "Queued commands sent that the module never acknowledged (or that were invalid).",
            failed,
        )?;
        counter(
            e,
            "mc_commands_dropped",
            "Queued commands dropped: their module was disabled or removed.",
            dropped,
        )?;
        gauge(
            e,
            "mc_command_queue_depth",
            "Commands waiting for their module now.",
            int(depth),
        )?;
        // hub -> dashboards
        counters_by(
            e,
            "mc_events_emitted",
            "Realtime events emitted (one per emit, whatever the audience), by event.",
            "event",
            self.emitted_by_event.iter().map(|(ev, n)| (*ev, *n)),
        )?;
        counter(
            e,
            "mc_emit_errors",
            "Event payloads that did not serialize (not sent; a bug).",
            self.emit_errors,
        )?;
        counter(
            e,
            "mc_cluster_guard_rejections",
            "Cluster mode: module events refused because another hub had published them.",
            self.cluster_guard_rejections,
        )?;
        counter(
            e,
            "mc_cluster_publish_errors",
            "Cluster mode: events Redis refused (the publishing script failed), dropped.",
            self.cluster_publish_errors,
        )?;
        counter(
            e,
            "mc_registry_changes_applied",
            "Registry changes (API, CLI, another hub) this hub has applied.",
            self.registry_changes_applied,
        )?;
        gauges_by(
            e,
            "mc_dashboard_clients",
            "Connected dashboard sockets, by page.",
            "page",
            self.clients_by_page.iter().map(|(p, n)| (*p, int(*n))),
        )?;
        gauge(
            e,
            "mc_dashboard_users",
            "Users with at least one connected dashboard.",
            int(self.clients_users),
        )?;
        counter(
            e,
            "mc_dashboard_reconnections",
            "Dashboard connections that were reconnections.",
            self.reconnections,
        )?;
        counter(
            e,
            "mc_dashboard_reconnect_reports",
            "Reconnections that reported how long they were disconnected.",
            self.reconnect_reports,
        )?;
        let seconds = ConstCounter::new(self.reconnect_seconds);
        seconds.encode(e.encode_descriptor("mc_dashboard_reconnect_seconds", "Sum of the reported disconnection times (divide by mc_dashboard_reconnect_reports for the average).", None, seconds.metric_type())?)?;
        let avg = if self.reconnect_reports == 0 {
            0.0
        } else {
            self.reconnect_seconds / self.reconnect_reports as f64
        };
        let avg = ConstGauge::new(avg);
        avg.encode(e.encode_descriptor(
            "mc_dashboard_reconnect_avg_seconds",
            "Average reported disconnection time since start.",
            None,
            avg.metric_type(),
        )?)?;
        counter(
            e,
            "mc_dashboard_resumes",
            "Reconnections served from the replay buffer (no snapshot).",
            self.resumes,
        )?;
        counter(
            e,
            "mc_dashboard_connection_errors",
            "Dashboard handshakes refused by the hub.",
            self.connection_errors,
        )?;
        counter(
            e,
            "mc_dashboard_client_connect_errors",
            "Failed attempts dashboards reported once they got through.",
            self.client_connect_errors,
        )?;
        gauge(
            e,
            "mc_replay_buffer_entries",
            "Entries (events and access barriers) held for dashboards that reconnect; old ones leave as new events arrive.",
            int(self.replay.0),
        )?;
        gauge(
            e,
            "mc_replay_buffer_bytes",
            "Bytes of event payload held for replay.",
            int(self.replay.1),
        )?;
        // backpressure (realtime::delivery)
        let (slow, entries, bytes) = self.slow_clients;
        for (name, help, value) in [
            (
                "mc_dashboard_slow_clients",
                "Dashboards behind now: their socket buffer is full and their events wait, coalesced.",
                slow,
            ),
            (
                "mc_dashboard_backlog_entries",
                "Coalesced events held for dashboards that are behind.",
                entries,
            ),
            (
                "mc_dashboard_backlog_bytes",
                "Payload bytes held for dashboards that are behind.",
                bytes,
            ),
        ] {
            gauge(e, name, help, int(value))?;
        }
        let [deferred, coalesced, cutoffs, dropped] = self.backpressure;
        for (name, help, value) in [
            (
                "mc_dashboard_events_deferred",
                "Events held for a dashboard that was behind instead of sent at once.",
                deferred,
            ),
            (
                "mc_dashboard_events_coalesced",
                "Held events merged into (or superseding) an older one of the same module or subject.",
                coalesced,
            ),
            (
                "mc_dashboard_slow_disconnects",
                "Dashboards disconnected for falling too far behind (they resynchronise on reconnect).",
                cutoffs,
            ),
            (
                "mc_dashboard_backlog_dropped",
                "Held events dropped with a cut-off dashboard's backlog (its resync recovers them).",
                dropped,
            ),
        ] {
            counter(e, name, help, value)?;
        }
        // serial ports
        if !self.serial.is_empty() {
            let ports = || self.serial.iter().map(|(path, p)| (path.as_str(), p));
            gauges_by(
                e,
                "mc_serial_port_open",
                "1 while the serial port is open.",
                "port",
                ports().map(|(n, p)| (n, i64::from(p.open))),
            )?;
            counters_by(
                e,
                "mc_serial_bytes_received",
                "Bytes read from the serial port.",
                "port",
                ports().map(|(n, p)| (n, p.bytes_in)),
            )?;
            counters_by(
                e,
                "mc_serial_frames_received",
                "Frames received that decoded.",
                "port",
                ports().map(|(n, p)| (n, p.frames_in)),
            )?;
            counters_by(
                e,
                "mc_serial_frames_sent",
                "Frames sent.",
                "port",
                ports().map(|(n, p)| (n, p.frames_out)),
            )?;
            counters_by(
                e,
                "mc_serial_frame_errors",
                "Frames received that did not decode.",
                "port",
                ports().map(|(n, p)| (n, p.frame_errors)),
            )?;
            counters_by(
                e,
                "mc_serial_reopens",
                "Times the port was opened again after a failure.",
                "port",
                ports().map(|(n, p)| (n, p.reopens)),
            )?;
        }
        gauge(
            e,
            "mc_tokio_alive_tasks",
            "Tasks alive on the hub's async runtime.",
            int(self.alive_tasks),
        )?;
        // the process (standard names; absent where /proc is not)
        let p = &self.process;
        if let Some(rss) = p.resident_bytes {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                int(rss),
            )?;
        }
        if let Some(virt) = p.virtual_bytes {
            gauge(
                e,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                int(virt),
            )?;
        }
        if let Some(fds) = p.open_fds {
            gauge(e, "process_open_fds", "Open file descriptors.", int(fds))?;
        }
        if let Some(cpu) = p.cpu_seconds {
            let cpu = ConstCounter::new(cpu);
            cpu.encode(e.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
        }
        if let Some(threads) = p.threads {
            gauge(e, "process_threads", "OS threads.", int(threads))?;
        }
        let info = ConstGauge::new(1);
        info.encode(
            e.encode_descriptor(
                "mc_build_info",
                "Always 1; the hub's version as a label.",
                None,
                info.metric_type(),
            )?
            .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("/dev/ttyUSB0"), "/dev/ttyUSB0");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
