//! Online/offline over real MQTT connections.

use std::time::Duration;

use mc_e2e::{about, start_hub};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_on_hello_offline_on_heartbeat_timeout() {
    let t = start_hub(|c| c.liveness.heartbeat_timeout = Some(Duration::from_millis(1500))).await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-1001-STN", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let m = t.module("MC-1001-STN", &pw).await;
    m.hello(500).await;
    let online = dash.expect("rt_module_online", about("MC-1001-STN")).await;
    assert_eq!(online["fw"], "1.0.0");
    assert_eq!(online["heartbeatMs"], 500);
    // Silence (connection kept open): the hub-wide 1.5 s timeout decides.
    let offline = dash.expect("rt_module_offline", about("MC-1001-STN")).await;
    assert_eq!(offline["reason"], "timeout");
    // Speaking again brings it back.
    m.publish("heartbeat", r#"{"seq":1,"uptimeMs":10}"#).await;
    dash.expect("rt_module_online", about("MC-1001-STN")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_when_the_connection_dies_without_disconnect() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-1001-STN", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let m = t.module("MC-1001-STN", &pw).await;
    m.hello(5000).await;
    dash.expect("rt_module_online", about("MC-1001-STN")).await;
    m.drop_connection();
    let offline = dash.expect("rt_module_offline", about("MC-1001-STN")).await;
    assert_eq!(offline["reason"], "connection_lost");
    // The last will the broker fires afterwards changes nothing and emits nothing more: prove it
    // with a barrier (another module's event) after the will has had time to pass through.
    let pw2 = t.add_module("MC-1002-STN", None).await;
    let m2 = t.module("MC-1002-STN", &pw2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    m2.hello(5000).await;
    let seen = dash.until("rt_module_online", about("MC-1002-STN")).await;
    assert!(
        !seen
            .iter()
            .any(|(e, d)| e == "rt_module_offline" && d["moduleId"] == "MC-1001-STN"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_on_clean_disconnect() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-1001-STN", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let m = t.module("MC-1001-STN", &pw).await;
    m.hello(5000).await;
    dash.expect("rt_module_online", about("MC-1001-STN")).await;
    m.disconnect().await;
    let offline = dash.expect("rt_module_offline", about("MC-1001-STN")).await;
    assert_eq!(offline["reason"], "disconnect");
}

/// The module reconnects while its old connection is still open: the broker takes the old one
/// over, whose end (and last will) then arrive after the new connection. Neither may mark the
/// module offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_will_and_disconnect_after_reconnect_do_not_mark_offline() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-1001-STN", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let old = t.module("MC-1001-STN", &pw).await;
    old.hello(5000).await;
    dash.expect("rt_module_online", about("MC-1001-STN")).await;

    let new = t.module("MC-1001-STN", &pw).await;
    new.hello(5000).await;
    // Wait until the old connection has really been closed by the takeover.
    mc_e2e::eventually("the takeover closed the old connection", || old.is_closed()).await;
    // Barrier: a telemetry change from the new connection, sent after the old one closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    new.telemetry(1, json!({"temperature": 20.5})).await;
    let seen = dash
        .until("rt_telemetry_updated", about("MC-1001-STN"))
        .await;
    assert!(
        !seen.iter().any(|(e, _)| e == "rt_module_offline"),
        "{seen:?}"
    );
    let counters = t.hub.tracker.counters().await.expect("tracker runs");
    assert!(
        counters.liveness.stale_disconnects + counters.liveness.stale_wills >= 1,
        "{counters:?}"
    );
    drop(old);
}
