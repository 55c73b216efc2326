//! Bad payloads are rejected and counted; other modules keep flowing.

use mc_e2e::{about, eventually, start_hub};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_non_finite_payloads_are_counted_without_disturbing_others() {
    let t = start_hub(|c| c.max_packet = 8 * 1024).await;
    t.add_user("admin@x.io", true).await;
    let pw_bad = t.add_module("MC-BAD-1", None).await;
    let pw_good = t.add_module("MC-GOOD-1", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let good = t.module("MC-GOOD-1", &pw_good).await;
    good.hello(5000).await;
    let bad = t.module("MC-BAD-1", &pw_bad).await;
    bad.hello(5000).await;
    dash.expect("rt_module_online", about("MC-BAD-1")).await;

    let mut huge_json = String::from(r#"{"seq":1,"readings":{"t":1},"pad":""#);
    huge_json.push_str(&"x".repeat(5000));
    huge_json.push_str("\"}");
    let mut nan = vec![mc_protocol::codec::NATIVE_VERSION, 1, 1, 1, b't'];
    nan.extend_from_slice(&f32::NAN.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("telemetry", b"{not json".to_vec()),
        ("telemetry", br#"{"seq":1,"readings":{"t":1e39}}"#.to_vec()),
        ("telemetry", nan),
        ("telemetry", br#"{"seq":"one","readings":{}}"#.to_vec()),
        ("telemetry", huge_json.into_bytes()),
        ("heartbeat", vec![0xFF, 0x00, 0x13]),
        ("hello", br#"{"fw":"1.0","heartbeatMs":1}"#.to_vec()),
        ("telemetry", b"".to_vec()),
    ];
    for (i, (kind, payload)) in cases.into_iter().enumerate() {
        bad.publish(kind, payload).await;
        // Other modules are not disturbed: each bad message is followed by a good change.
        good.telemetry(i as u32 + 1, json!({"t": i as f32})).await;
        dash.expect("rt_telemetry_updated", |d| {
            d["moduleId"] == "MC-GOOD-1" && d["rev"] == i + 1
        })
        .await;
    }
    // Each connection has its own path through the broker: the bad module's messages may be
    // counted after the good module's events arrived, so wait for the counters.
    let m = &t.hub.metrics;
    let expected = [
        ("malformed", 2),
        ("non_finite", 2),
        ("too_large", 1),
        ("unsupported_version", 1),
        ("invalid_heartbeat_interval", 1),
        ("empty", 1),
    ];
    eventually(&format!("rejections {expected:?}"), || {
        expected.iter().all(|(reason, n)| m.rejected(reason) == *n)
    })
    .await;
    // The bad module never produced a telemetry event.
    good.telemetry(100, json!({"t": 100.0})).await;
    let seen = dash
        .until("rt_telemetry_updated", |d| {
            d["moduleId"] == "MC-GOOD-1" && d["rev"] == 9
        })
        .await;
    assert!(
        !seen
            .iter()
            .any(|(e, d)| e == "rt_telemetry_updated" && d["moduleId"] == "MC-BAD-1")
    );
}
