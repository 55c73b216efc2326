//! Hub → module commands over the REST API, through the broker, to real MQTT clients and to
//! the simulator's firmware logic; commands for offline modules wait in the hub's queue.

use std::time::Duration;

use firmware_sim::{ModuleCredentials, SerialLink, SerialSimConfig, SimConfig, start_serial};
use mc_e2e::{DEADLINE, MqttModule, TestHub, about, eventually, start_hub};
use mc_hub::config::SerialPortSpec;
use mc_protocol::{Command, CommandAction, codec};
use rumqttc::QoS;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

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

    // (Offline: queued, see below.)
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

/// The hub's `/metrics` text.
async fn scrape(t: &TestHub) -> String {
    reqwest::get(format!("{}/metrics", t.url))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the unlabelled sample `name` in a scrape.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The four command-queue figures of `/metrics`: queued, delivered from the queue, expired
/// (counters), and waiting now (gauge).
async fn queue_metrics(t: &TestHub) -> [Option<f64>; 4] {
    let text = scrape(t).await;
    [
        "mc_commands_queued_total",
        "mc_commands_delivered_from_queue_total",
        "mc_commands_expired_total",
        "mc_command_queue_depth",
    ]
    .map(|name| metric(&text, name))
}

/// Waits until `/metrics` shows `depth` commands waiting.
async fn queue_depth_becomes(t: &TestHub, depth: f64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = queue_metrics(t).await[3];
        if now == Some(depth) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue depth still {now:?}, expected {depth}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects `id` as an MQTT module that subscribes to its commands, then says hello (JSON).
async fn connect_and_hello(t: &TestHub, id: &str, password: &str) -> MqttModule {
    let m = t.module(id, password).await;
    m.client
        .subscribe(format!("mc/{id}/cmd"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    m.hello(5000).await;
    m
}

/// The next command the module receives, decoded from JSON.
async fn next_json_command(m: &mut MqttModule) -> Value {
    let (topic, payload) = m.next_publish().await;
    assert_eq!(topic, format!("mc/{}/cmd", m.id));
    serde_json::from_slice(&payload).expect("JSON command")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_an_offline_module_waits_and_reaches_it_when_it_connects() {
    let t = start_hub(|_| {}).await;
    t.add_user("alice@x.io", false).await;
    let pw = t.add_module("MC-2001-STN", Some("alice@x.io")).await;
    let alice = t.login("alice@x.io").await;

    // Never connected yet: accepted into the queue, in order.
    let interval = json!({"setHeartbeatInterval": {"ms": 1000}});
    let (status, first) =
        post_command(&t, &alice, "MC-2001-STN", json!({ "action": interval })).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(
        (&first["moduleId"], &first["action"], &first["queued"]),
        (&json!("MC-2001-STN"), &interval, &json!(true))
    );
    assert!(
        first["expiresAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "RFC 3339 deadline: {first}"
    );
    let (status, second) =
        post_command(&t, &alice, "MC-2001-STN", json!({"action": "reboot"})).await;
    assert_eq!(status, 202, "{second}");
    assert_eq!(second["queued"], true);
    assert_ne!(first["id"], second["id"]);
    assert_eq!(
        queue_metrics(&t).await,
        [Some(2.0), Some(0.0), Some(0.0), Some(2.0)]
    );
    // Invalid commands are refused at once, not queued.
    let (status, _) = post_command(
        &t,
        &alice,
        "MC-2001-STN",
        json!({"action": {"setHeartbeatInterval": {"ms": 1}}}),
    )
    .await;
    assert_eq!(status, 400);

    // The module connects, subscribes and says hello (JSON): the real MQTT client gets both
    // commands, in order, in its encoding, with the ids the API answered.
    let mut m = connect_and_hello(&t, "MC-2001-STN", &pw).await;
    for sent in [&first, &second] {
        assert_eq!(
            next_json_command(&mut m).await,
            json!({"id": sent["id"], "action": sent["action"]})
        );
    }
    eventually("both counted as delivered", || {
        t.hub.metrics.commands_delivered_from_queue.get() == 2
    })
    .await;
    assert_eq!(
        queue_metrics(&t).await,
        [Some(2.0), Some(2.0), Some(0.0), Some(0.0)]
    );

    // Nothing left waiting: a command for the online module goes at once, not queued.
    let (status, direct) =
        post_command(&t, &alice, "MC-2001-STN", json!({"action": "resendState"})).await;
    assert_eq!(status, 202, "{direct}");
    assert!(
        direct.get("queued").is_none() && direct.get("expiresAt").is_none(),
        "{direct}"
    );
    assert_eq!(next_json_command(&mut m).await["id"], direct["id"]);
    assert_eq!(queue_metrics(&t).await[0], Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_command_that_expires_is_dropped_and_counted_never_delivered() {
    let t = start_hub(|c| c.commands.queue_ttl = Duration::from_secs(1)).await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-2002-STN", None).await;
    let admin = t.login("admin@x.io").await;
    let mut dash = t.dashboard("admin@x.io").await;

    let (status, stale) =
        post_command(&t, &admin, "MC-2002-STN", json!({"action": "reboot"})).await;
    assert_eq!((status, &stale["queued"]), (202, &json!(true)), "{stale}");
    eventually("the command expires", || {
        t.hub.metrics.commands_expired.get() == 1
    })
    .await;
    assert_eq!(
        queue_metrics(&t).await,
        [Some(1.0), Some(0.0), Some(1.0), Some(0.0)]
    );

    // The module comes back after the deadline: the first command it receives is a new one.
    let mut m = connect_and_hello(&t, "MC-2002-STN", &pw).await;
    dash.expect("rt_module_online", about("MC-2002-STN")).await;
    let (status, fresh) =
        post_command(&t, &admin, "MC-2002-STN", json!({"action": "resendState"})).await;
    assert_eq!(status, 202, "{fresh}");
    let received = next_json_command(&mut m).await;
    assert_eq!(
        received["id"], fresh["id"],
        "the expired {stale} came first"
    );
    assert_eq!(t.hub.metrics.commands_delivered_from_queue.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_per_module_and_a_disabled_module_gets_nothing() {
    let t = start_hub(|c| c.commands.max_queued = 2).await;
    t.add_user("admin@x.io", true).await;
    t.add_module("MC-2003-STN", None).await;
    let pw = t.add_module("MC-2004-STN", None).await;
    let admin = t.login("admin@x.io").await;
    let reboot = json!({"action": "reboot"});

    for _ in 0..2 {
        assert_eq!(
            post_command(&t, &admin, "MC-2003-STN", reboot.clone())
                .await
                .0,
            202
        );
    }
    let (status, body) = post_command(&t, &admin, "MC-2003-STN", reboot.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    // The bound is per module.
    assert_eq!(
        post_command(&t, &admin, "MC-2004-STN", reboot.clone())
            .await
            .0,
        202
    );
    assert_eq!(
        queue_metrics(&t).await,
        [Some(3.0), Some(0.0), Some(0.0), Some(3.0)]
    );

    // A disabled module may not connect: its queued command is dropped (and counted), and
    // nothing more is queued for it.
    let disable = |disabled: bool| {
        t.call(
            &admin,
            "PATCH",
            "/api/modules/MC-2004-STN",
            Some(json!({ "disabled": disabled })),
        )
    };
    assert_eq!(disable(true).await.0, 200);
    queue_depth_becomes(&t, 2.0).await;
    assert_eq!(
        metric(&scrape(&t).await, "mc_commands_dropped_total"),
        Some(1.0)
    );
    let (status, body) = post_command(&t, &admin, "MC-2004-STN", reboot).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(queue_metrics(&t).await[0], Some(3.0));

    // Enabled again, it connects: the command queued before it was disabled does not come
    // back; the first command it receives is a new one.
    assert_eq!(disable(false).await.0, 200);
    let mut dash = t.dashboard("admin@x.io").await;
    let mut m = connect_and_hello(&t, "MC-2004-STN", &pw).await;
    dash.expect("rt_module_online", about("MC-2004-STN")).await;
    let (status, fresh) =
        post_command(&t, &admin, "MC-2004-STN", json!({"action": "resendState"})).await;
    assert_eq!(status, 202, "{fresh}");
    assert!(fresh.get("queued").is_none(), "{fresh}");
    assert_eq!(next_json_command(&mut m).await["id"], fresh["id"]);
    assert_eq!(t.hub.metrics.commands_delivered_from_queue.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_modules_queue_is_dropped() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    t.add_module("MC-2005-STN", None).await;
    let admin = t.login("admin@x.io").await;
    for action in ["reboot", "resendState"] {
        let (status, body) =
            post_command(&t, &admin, "MC-2005-STN", json!({ "action": action })).await;
        assert_eq!((status, &body["queued"]), (202, &json!(true)), "{body}");
    }
    let (status, _) = t
        .call(&admin, "DELETE", "/api/modules/MC-2005-STN", None)
        .await;
    assert_eq!(status, 204);
    queue_depth_becomes(&t, 0.0).await;

    // Registered again under the same id, it connects: the old commands do not come back.
    let mut dash = t.dashboard("admin@x.io").await;
    let pw = t.add_module("MC-2005-STN", None).await;
    let mut m = connect_and_hello(&t, "MC-2005-STN", &pw).await;
    dash.expect("rt_module_online", about("MC-2005-STN")).await;
    let (status, fresh) = post_command(
        &t,
        &admin,
        "MC-2005-STN",
        json!({"action": {"setTelemetryInterval": {"ms": 2000}}}),
    )
    .await;
    assert_eq!(status, 202, "{fresh}");
    assert!(fresh.get("queued").is_none(), "{fresh}");
    assert_eq!(next_json_command(&mut m).await["id"], fresh["id"]);
    assert_eq!(
        queue_metrics(&t).await,
        [Some(2.0), Some(0.0), Some(0.0), Some(0.0)]
    );
}

/// Over a serial line, a queued command goes down the line once the module is online, and the
/// firmware acknowledges it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_queued_for_a_serial_module_is_acknowledged_once_its_line_is_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("tty-sim");
    let spec: SerialPortSpec = link.display().to_string().parse().expect("port spec");
    // The port does not exist yet: the hub retries opening it, the module is offline.
    let t = start_hub(|c| c.serial = vec![spec]).await;
    t.add_user("admin@x.io", true).await;
    t.add_module("MC-5004-SER", None).await;
    let admin = t.login("admin@x.io").await;
    let (status, body) =
        post_command(&t, &admin, "MC-5004-SER", json!({"action": "resendState"})).await;
    assert_eq!((status, &body["queued"]), (202, &json!(true)), "{body}");

    let stop = CancellationToken::new();
    let sim = start_serial(
        SerialSimConfig::new(SerialLink::pty(&link)),
        "MC-5004-SER".parse().expect("id"),
        stop.clone(),
    )
    .expect("serial simulator starts");
    eventually("the queued command is acknowledged", || {
        t.hub.metrics.commands_delivered_from_queue.get() == 1
    })
    .await;
    eventually("the firmware executed it", || sim.stats().commands == 1).await;
    assert_eq!(queue_metrics(&t).await[3], Some(0.0));
    stop.cancel();
    sim.stopped().await;
}
