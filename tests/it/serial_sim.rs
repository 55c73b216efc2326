//! firmware-sim over a serial line against the real hub: the real firmware link driver on one
//! end of a pseudo-terminal, the hub's serial transport on the other (through a symlink, as
//! `/dev/serial/by-id/...`), nothing mocked in between.

use std::time::Duration;

use firmware_sim::{
    Fault, ModuleCredentials, SerialLink, SerialSimConfig, SimConfig, start_serial,
};
use mc_e2e::{Dashboard, about, eventually, start_hub};
use mc_hub::config::SerialPortSpec;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The `telemetry` field of the first `n` `rt_telemetry_updated` events of modules `a` and `b`
/// (read from one stream, so neither module's events are skipped while waiting for the other).
async fn telemetry_events(dash: &mut Dashboard, a: &str, b: &str, n: usize) -> [Vec<Value>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    while out[0].len() < n || out[1].len() < n {
        let event = dash
            .expect("rt_telemetry_updated", |d| {
                d["moduleId"] == a || d["moduleId"] == b
            })
            .await;
        let which = usize::from(event["moduleId"] == b);
        out[which].push(event["telemetry"].clone());
    }
    out.map(|mut events| {
        events.truncate(n);
        events
    })
}

/// The same firmware with the same seed, once over MQTT and once over a serial line, gives the
/// dashboard exactly the same sequence of telemetry changes: the two transports meet in one
/// diff path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_firmware_gives_the_same_events_over_serial_and_mqtt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("tty-sim");
    let spec: SerialPortSpec = link.display().to_string().parse().expect("port spec");
    let t = start_hub(|c| c.serial = vec![spec]).await;
    t.add_user("admin@x.io", true).await;
    let password = t.add_module("MC-5001-MQT", None).await;
    t.add_module("MC-5002-SER", None).await;
    let mut dash = t.dashboard("admin@x.io").await;

    let stop = CancellationToken::new();
    let config = SimConfig {
        broker: t.hub.mqtt_addr.to_string(),
        telemetry: Duration::from_millis(200),
        seed: 7,
        ..SimConfig::default()
    };
    let mqtt = firmware_sim::start(
        config.clone(),
        vec![ModuleCredentials {
            id: "MC-5001-MQT".parse().expect("id"),
            password,
        }],
        stop.clone(),
    );
    let serial = start_serial(
        SerialSimConfig::with_firmware_of(SerialLink::pty(&link), &config),
        "MC-5002-SER".parse().expect("id"),
        stop.clone(),
    )
    .expect("serial simulator starts");

    let [over_mqtt, over_serial] =
        telemetry_events(&mut dash, "MC-5001-MQT", "MC-5002-SER", 8).await;
    assert_eq!(over_serial, over_mqtt);
    assert!(
        over_mqtt[0].as_object().is_some_and(|r| r.len() == 5),
        "the first report is full: {}",
        over_mqtt[0]
    );
    stop.cancel();
    mqtt.stopped().await;
    serial.stopped().await;
}

/// Line faults never take a module down or corrupt what the hub believes; unplugging the line
/// marks it offline at once, and plugging it back brings it online without a hub restart;
/// commands reach it over the line and come back acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_serial_module_survives_line_faults_and_unplug() {
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("tty-sim");
    let spec: SerialPortSpec = link.display().to_string().parse().expect("port spec");
    let t = start_hub(|c| c.serial = vec![spec]).await;
    t.add_user("admin@x.io", true).await;
    t.add_module("MC-5003-SER", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let cookie = t.login("admin@x.io").await;

    let stop = CancellationToken::new();
    let mut config = SerialSimConfig::new(SerialLink::pty(&link));
    config.telemetry = Duration::from_millis(200);
    // Liveness timeout 3 × 2 s: longer than the few frames the faults below destroy.
    config.heartbeat = Duration::from_secs(2);
    let sim = start_serial(config, "MC-5003-SER".parse().expect("id"), stop.clone())
        .expect("serial simulator starts");
    dash.expect("rt_module_online", about("MC-5003-SER")).await;
    dash.expect("rt_telemetry_updated", about("MC-5003-SER"))
        .await;

    // Every kind of line damage, one after the other.
    let rejected_before: u64 = t.hub.metrics.rejections().values().sum();
    for fault in [
        Fault::CorruptBytes,
        Fault::TruncateFrame,
        Fault::LineNoise(40),
        Fault::BaudMismatch(2),
        Fault::SendGarbage,
    ] {
        sim.inject(fault);
    }
    eventually("the damaged frames are counted", || {
        t.hub.metrics.rejections().values().sum::<u64>() >= rejected_before + 4
    })
    .await;
    // Telemetry keeps flowing after the damage, and the module never went offline.
    let seen = dash
        .until("rt_telemetry_updated", about("MC-5003-SER"))
        .await;
    assert!(
        !seen
            .iter()
            .any(|(e, d)| e == "rt_module_offline" && d["moduleId"] == "MC-5003-SER"),
        "line damage took the module offline: {seen:?}"
    );
    assert!(!seen.is_empty());
    let live = t
        .hub
        .tracker
        .module(&"MC-5003-SER".parse().expect("id"))
        .await
        .expect("tracked");
    assert!(live.online);

    // A command over the line, acknowledged by the firmware.
    let (status, body) = t
        .call(
            &cookie,
            "POST",
            "/api/modules/MC-5003-SER/commands",
            Some(json!({"action": "resendState"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "done");

    // Unplugged: offline at once (not after the liveness timeout).
    sim.inject(Fault::Unplug);
    let offline = dash.expect("rt_module_offline", about("MC-5003-SER")).await;
    assert_eq!(offline["reason"], "connection_lost");
    // Plugged back in: the hub reopens the port by itself.
    sim.inject(Fault::Replug);
    dash.expect("rt_module_online", about("MC-5003-SER")).await;
    dash.expect("rt_telemetry_updated", about("MC-5003-SER"))
        .await;
    stop.cancel();
    sim.stopped().await;
}
