//! Hub → module commands over the REST API, through the broker, to real MQTT clients and to
//! the simulator's firmware logic.

use firmware_sim::{ModuleCredentials, SimConfig};
use mc_e2e::{TestHub, about, start_hub};
use mc_protocol::{Command, CommandAction, codec};
use serde_json::{Value, json};

async fn post_command(t: &TestHub, cookie: &str, module: &str, body: Value) -> (u16, Value) {
    t.call(
        cookie,
        "POST",
        &format!("/api/modules/{module}/commands"),
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_admins_send_commands_in_the_modules_encoding() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    t.add_user("alice@x.io", false).await;
    t.add_user("bob@x.io", false).await;
    let pw = t.add_module("MC-1001-STN", Some("alice@x.io")).await;
    let alice = t.login("alice@x.io").await;
    let bob = t.login("bob@x.io").await;
    let admin = t.login("admin@x.io").await;
    let reboot = json!({"action": "reboot"});

    // Offline: refused with 409, not silently dropped.
    assert_eq!(
        post_command(&t, &alice, "MC-1001-STN", reboot.clone())
            .await
            .0,
        409
    );

    let mut dash = t.dashboard("admin@x.io").await;
    let mut m = t.module("MC-1001-STN", &pw).await;
    m.client
        .subscribe("mc/MC-1001-STN/cmd", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    m.hello(5000).await; // JSON hello: commands come back as JSON
    dash.expect("rt_module_online", about("MC-1001-STN")).await;

    let (status, sent) = post_command(
        &t,
        &alice,
        "MC-1001-STN",
        json!({"action": {"setHeartbeatInterval": {"ms": 1000}}}),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let (topic, payload) = m.next_publish().await;
    assert_eq!(topic, "mc/MC-1001-STN/cmd");
    let received: Value = serde_json::from_slice(&payload).expect("JSON command");
    assert_eq!(
        received,
        json!({"id": sent["id"], "action": {"setHeartbeatInterval": {"ms": 1000}}})
    );

    // Admins may too; others get 404 (no hint that the module exists), bad input 400.
    assert_eq!(
        post_command(&t, &admin, "MC-1001-STN", reboot.clone())
            .await
            .0,
        202
    );
    let (_, payload) = m.next_publish().await;
    let reboot_cmd: Command = codec::decode(&payload).expect("valid command");
    assert_eq!(reboot_cmd.action, CommandAction::Reboot);
    assert_eq!(
        post_command(&t, &bob, "MC-1001-STN", reboot.clone())
            .await
            .0,
        404
    );
    assert_eq!(
        post_command(&t, &alice, "MC-9999-XXX", reboot.clone())
            .await
            .0,
        404
    );
    assert_eq!(
        post_command(&t, &alice, "not a module", reboot.clone())
            .await
            .0,
        404
    );
    assert_eq!(
        post_command(&t, &alice, "MC-1001-STN", json!({"action": "selfDestruct"}))
            .await
            .0,
        400
    );
    let (status, _) = post_command(
        &t,
        &alice,
        "MC-1001-STN",
        json!({"action": {"setHeartbeatInterval": {"ms": 1}}}),
    )
    .await;
    assert_eq!(status, 400, "out-of-range interval");
    let unauthenticated = reqwest::Client::new()
        .post(format!("{}/api/modules/MC-1001-STN/commands", t.url))
        .json(&reboot)
        .send()
        .await
        .expect("request");
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_firmware_obeys_native_commands() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let password = t.add_module("MC-5001-SIM", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let sim = firmware_sim::start(
        SimConfig {
            broker: t.hub.mqtt_addr.to_string(),
            ..SimConfig::default()
        },
        vec![ModuleCredentials {
            id: "MC-5001-SIM".parse().expect("id"),
            password,
        }],
        stop.clone(),
    );
    let online = dash.expect("rt_module_online", about("MC-5001-SIM")).await;
    assert_eq!(online["heartbeatMs"], 5000);
    let admin = t.login("admin@x.io").await;
    let (status, _) = post_command(
        &t,
        &admin,
        "MC-5001-SIM",
        json!({"action": {"setHeartbeatInterval": {"ms": 750}}}),
    )
    .await;
    assert_eq!(status, 202);
    let module = sim.module("MC-5001-SIM").expect("simulated module");
    mc_e2e::eventually("command reaches the firmware", || {
        module.stats().commands > 0
    })
    .await;
    assert_eq!(module.stats().rejected_commands, 0);
    // The firmware announces its new interval with a new hello; the hub now expects
    // heartbeats every 750 ms (timeout 2.25 s) — visible in the snapshot's live state.
    mc_e2e::eventually("new hello after the command", || module.stats().hellos >= 2).await;
    stop.cancel();
    sim.stopped().await;
}
