//! Telemetry diffing as dashboards see it.

use mc_e2e::{about, start_hub};
use mc_protocol::{Readings, Telemetry, codec::native};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_changed_readings_are_emitted_and_identical_telemetry_emits_nothing() {
    // With a batch window, so that the batched path (back-to-back messages) is exercised too.
    let t = start_hub(|c| c.realtime.batch_window = std::time::Duration::from_millis(2)).await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-1001-STN", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let m = t.module("MC-1001-STN", &pw).await;
    m.hello(5000).await;

    m.telemetry(1, json!({"temperature": 21.5, "battery": 3.71}))
        .await;
    let first = dash
        .expect("rt_telemetry_updated", about("MC-1001-STN"))
        .await;
    assert_eq!(
        first["telemetry"],
        json!({"temperature": 21.5, "battery": 3.71})
    );
    assert_eq!(first["rev"], 1);

    // Identical values (new seq): no event. Then a change to one reading: only that one.
    m.telemetry(2, json!({"temperature": 21.5, "battery": 3.71}))
        .await;
    m.telemetry(3, json!({"temperature": 21.5, "battery": 3.69}))
        .await;
    let seen = dash
        .until("rt_telemetry_updated", about("MC-1001-STN"))
        .await;
    let updates: Vec<_> = seen
        .iter()
        .filter(|(e, _)| e == "rt_telemetry_updated")
        .collect();
    assert_eq!(updates.len(), 1, "{seen:?}");
    assert_eq!(updates[0].1["telemetry"], json!({"battery": 3.69}));
    assert_eq!(updates[0].1["rev"], 2);
    assert!(t.hub.metrics.telemetry_unchanged.get() >= 1);

    // A duplicate sequence number is dropped and counted, even with different values.
    m.telemetry(3, json!({"temperature": 99.0})).await;
    m.telemetry(4, json!({"temperature": 22.0})).await;
    let seen = dash
        .until("rt_telemetry_updated", about("MC-1001-STN"))
        .await;
    let last = &seen.last().expect("barrier").1;
    assert_eq!(last["telemetry"], json!({"temperature": 22.0}));
    assert_eq!(last["rev"], 3);
    assert!(
        !seen
            .iter()
            .any(|(_, d)| d["telemetry"]["temperature"] == 99.0)
    );
    assert_eq!(t.hub.metrics.rejected("duplicate_seq"), 1);

    // The snapshot has the merged state.
    let cookie = t.login("admin@x.io").await;
    let (status, snapshot) = t.call(&cookie, "GET", "/api/modules", None).await;
    assert_eq!(status, 200);
    let module = &snapshot["modules"][0];
    assert_eq!(module["moduleId"], "MC-1001-STN");
    assert_eq!(module["online"], true);
    assert_eq!(module["rev"], 3);
    assert_eq!(
        module["readings"],
        json!({"temperature": 22.0, "battery": 3.69})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_payloads_and_mqtt_v5_clients_work() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-2001-STN", None).await;
    let mut dash = t.dashboard("admin@x.io").await;

    let addr = t.hub.mqtt_addr;
    let mut options =
        rumqttc::v5::MqttOptions::new("MC-2001-STN", addr.ip().to_string(), addr.port());
    options.set_credentials("MC-2001-STN", pw.as_str());
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 16);
    let connected = tokio::time::timeout(mc_e2e::DEADLINE, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(
                    ack,
                ))) => {
                    return ack.code == rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(connected, Ok(true), "MQTT 5 client accepted");
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });

    let mut readings = Readings::new();
    readings.push("humidity", 41.5).expect("valid reading");
    let payload = native::to_vec(&Telemetry { seq: 7, readings }).expect("encodes");
    client
        .publish(
            "mc/MC-2001-STN/telemetry",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            payload,
        )
        .await
        .expect("publish");
    let online = dash.expect("rt_module_online", about("MC-2001-STN")).await;
    assert!(online["fw"].is_null(), "no hello was sent");
    let update = dash
        .expect("rt_telemetry_updated", about("MC-2001-STN"))
        .await;
    assert_eq!(update["telemetry"], json!({"humidity": 41.5}));
}
