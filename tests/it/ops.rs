//! What operators scrape and probe: `GET /metrics` (OpenMetrics text), `/healthz`, `/readyz`.

use std::time::Duration;

use mc_e2e::{DEADLINE, TestHub, about, metric_sample as sample, start_hub};
use serde_json::json;

async fn scrape(t: &TestHub) -> (String, String) {
    let res = reqwest::get(format!("{}/metrics", t.url))
        .await
        .expect("GET /metrics");
    assert_eq!(res.status(), 200);
    let kind = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (kind, res.text().await.expect("metrics body"))
}

/// Scrapes until every `(series, at least)` holds; returns the last text.
async fn scrape_until(t: &TestHub, want: &[(&str, f64)]) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, text) = scrape(t).await;
        let short: Vec<_> = want
            .iter()
            .filter(|(s, min)| sample(&text, s).is_none_or(|v| v < *min))
            .collect();
        if short.is_empty() {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {short:?} in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_ingest_events_clients_rejects_and_the_process() {
    let t = start_hub(|_| {}).await;
    t.add_user("alice@x.io", false).await;
    let pw = t.add_module("MC-A-1", Some("alice@x.io")).await;
    t.add_module("MC-A-2", Some("alice@x.io")).await;
    let mut alice = t.dashboard("alice@x.io").await;

    let (kind, text) = scrape(&t).await;
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert_eq!(sample(&text, "mc_modules_registered"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "mc_users"), Some(1.0));
    assert_eq!(
        sample(&text, "mc_dashboard_clients{page=\"modules\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mc_dashboard_clients{page=\"admin\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "mc_modules_online"), Some(0.0));
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|b| b > 1e6));
    assert!(sample(&text, "process_open_fds").is_some_and(|n| n >= 3.0));
    assert_eq!(sample(&text, "mc_build_info{version=\"0.1.0\"}"), Some(1.0));

    let a = t.module("MC-A-1", &pw).await;
    a.hello(5000).await;
    a.telemetry(1, json!({"t": 1.0})).await;
    alice.expect("rt_telemetry_updated", about("MC-A-1")).await;
    a.publish("telemetry", b"{not json".to_vec()).await;
    let text = scrape_until(
        &t,
        &[
            ("mc_messages_ingested_total{transport=\"mqtt\"}", 2.0),
            (
                "mc_events_emitted_total{event=\"rt_telemetry_updated\"}",
                1.0,
            ),
            ("mc_events_emitted_total{event=\"rt_module_online\"}", 1.0),
            ("mc_rejected_total{reason=\"malformed\"}", 1.0),
            ("mc_modules_online", 1.0),
            ("mc_mqtt_connections_total", 1.0),
        ],
    )
    .await;
    assert_eq!(
        sample(&text, "mc_messages_ingested_total{transport=\"serial\"}"),
        Some(0.0)
    );
    assert!(sample(&text, "mc_replay_buffer_entries").is_some_and(|n| n >= 2.0));
    assert_eq!(
        sample(&text, "mc_tracker_queue_capacity").map(|c| c > 0.0),
        Some(true)
    );
    // every sample line parses as `series value`
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit_once(' ').map(|(_, v)| v);
        assert!(
            value.is_some_and(|v| v.parse::<f64>().is_ok()),
            "bad sample line {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_probes_answer() {
    let t = start_hub(|_| {}).await;
    let http = reqwest::Client::new();
    let get = |path: &'static str| http.get(format!("{}{path}", t.url)).send();
    let health = get("/healthz").await.expect("healthz");
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    let ready = get("/readyz").await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"database": "ok", "tracker": "ok", "mqttIngest": "ok"}})
    );

    // the MQTT ingest task ended (its broker link was lost): not ready, and the check says why
    t.hub
        .metrics
        .mqtt_ingest_up
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let ready = get("/readyz").await.expect("readyz");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["mqttIngest"], "broker link lost");
    assert_eq!(body["checks"]["database"], "ok");
}
