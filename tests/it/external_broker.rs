//! The hub behind a real Mosquitto (`[broker] url`): modules connect to Mosquitto with the
//! credentials `hub export mosquitto-acl` generated from the registry, the hub consumes their
//! topics through a shared subscription, and liveness comes from what they publish.

use std::{path::Path, time::Duration};

use firmware_sim::{Fault, ModuleCredentials, SimConfig};
use mc_e2e::{
    DEADLINE, MqttModule, TestHub, about, eventually,
    mosquitto::{Link, Mosquitto, free_port},
    start_hub,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const HUB_PASSWORD: &str = "hub-secret";

/// A hub whose broker is reached through `link` (which relays to Mosquitto's port).
async fn hub_behind(link: &Link, tweak: impl FnOnce(&mut mc_hub::Config)) -> TestHub {
    let url = format!("mqtt://mc-hub@{}", link.addr);
    start_hub(move |c| {
        c.broker.url = Some(url);
        c.broker.password = Some(HUB_PASSWORD.into());
        c.broker.client_id = Some(format!("mc-hub-test-{}", rand_suffix()));
        tweak(c);
    })
    .await
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs `hub export mosquitto-acl` (the real CLI) against the hub's database into `out`.
fn export(t: &TestHub, out: &Path) -> serde_json::Value {
    export_from(&t.data_dir(), &t.database, out)
}

fn export_from(
    data_dir: &Path,
    database: &mc_hub::store::Database,
    out: &Path,
) -> serde_json::Value {
    let database_args: Vec<String> = match database {
        mc_hub::store::Database::Postgres(url) => vec!["--database".into(), url.clone()],
        mc_hub::store::Database::Sqlite(_) => Vec::new(),
    };
    let output = std::process::Command::new(crate::process::hub_binary())
        .args(["export", "mosquitto-acl", "--json", "--out"])
        .arg(out)
        .arg("--data-dir")
        .arg(data_dir)
        .args(database_args)
        .env("HUB_BROKER_PASSWORD", HUB_PASSWORD)
        .output()
        .expect("hub export runs");
    assert!(
        output.status.success(),
        "hub export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("export prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_behind_mosquitto_reach_dashboards_and_the_exported_acl_holds() {
    let files = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let link = Link::start(([127, 0, 0, 1], port).into()).await;
    // The hub starts before its broker and keeps trying.
    let t = hub_behind(&link, |_| {}).await;
    t.add_user("admin@x.io", true).await;
    t.add_user("alice@x.io", false).await;
    t.add_user("bob@x.io", false).await;
    let pw_a = t.add_module("MC-1001-STN", Some("alice@x.io")).await;
    let pw_b = t.add_module("MC-1002-STN", Some("bob@x.io")).await;
    let exported = export(&t, files.path());
    assert_eq!(exported["modules"], 2, "{exported}");
    let passwd = files.path().join("passwd");
    let acl = files.path().join("acl");
    let mosquitto = Mosquitto::start(files.path(), &passwd, &acl, port).await;
    mc_e2e::wait_ready(&t.url).await;

    let mut admin = t.dashboard("admin@x.io").await;
    let mut alice = t.dashboard("alice@x.io").await;
    let a = MqttModule::connect(mosquitto.addr, "MC-1001-STN", &pw_a)
        .await
        .expect("A connects to mosquitto with its exported credentials");
    a.hello(1000).await;
    alice.expect("rt_module_online", about("MC-1001-STN")).await;
    a.telemetry(1, json!({"temperature": 20.5})).await;
    let update = alice
        .expect("rt_telemetry_updated", about("MC-1001-STN"))
        .await;
    assert_eq!(update["telemetry"]["temperature"], 20.5);

    // Wrong credentials and unknown modules are refused by Mosquitto itself.
    assert!(
        MqttModule::connect(mosquitto.addr, "MC-1002-STN", "wrong")
            .await
            .is_err()
    );
    assert!(
        MqttModule::connect(mosquitto.addr, "MC-9999-STN", &pw_a)
            .await
            .is_err()
    );

    // A cannot publish as B: Mosquitto drops it. A's own next message is the barrier.
    a.client
        .publish(
            "mc/MC-1002-STN/telemetry",
            rumqttc::QoS::AtLeastOnce,
            false,
            json!({"seq": 1, "readings": {"temperature": 99.0}}).to_string(),
        )
        .await
        .expect("queued");
    a.client
        .publish(
            "mc/MC-1002-STN/hello",
            rumqttc::QoS::AtLeastOnce,
            false,
            r#"{"fw":"6.6.6","heartbeatMs":1000}"#,
        )
        .await
        .expect("queued");
    a.telemetry(2, json!({"temperature": 21.0})).await;
    let seen = admin
        .until("rt_telemetry_updated", |v| {
            v["moduleId"] == "MC-1001-STN" && v["telemetry"]["temperature"] == 21.0
        })
        .await;
    assert!(
        !seen.iter().any(|(_, v)| v["moduleId"] == "MC-1002-STN"),
        "a forged publish reached the hub: {seen:?}"
    );

    // Commands go out through Mosquitto; A cannot read B's.
    let mut b = MqttModule::connect(mosquitto.addr, "MC-1002-STN", &pw_b)
        .await
        .expect("B connects");
    b.client
        .subscribe("mc/MC-1002-STN/cmd", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut a = a;
    a.client
        .subscribe("mc/+/cmd", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    b.hello(1000).await;
    admin.expect("rt_module_online", about("MC-1002-STN")).await;
    let cookie = t.login("admin@x.io").await;
    // The hub answers once its command is on its way; B's subscription has had time to settle
    // because B's hello (sent after it) reached the dashboard.
    let (status, body) = t
        .call(
            &cookie,
            "POST",
            "/api/modules/MC-1002-STN/commands",
            Some(json!({"action": "reboot"})),
        )
        .await;
    // 202: published, no acknowledgement in MQTT.
    assert_eq!(status, 202, "{body}");
    assert_ne!(body["queued"], true, "{body}");
    let (topic, payload) = b.next_publish().await;
    assert_eq!(topic, "mc/MC-1002-STN/cmd");
    assert!(String::from_utf8_lossy(&payload).contains("reboot"));
    let (status, _) = t
        .call(
            &cookie,
            "POST",
            "/api/modules/MC-1001-STN/commands",
            Some(json!({"action": "reboot"})),
        )
        .await;
    assert_eq!(status, 202);
    let (topic, _) = a.next_publish().await;
    assert_eq!(
        topic, "mc/MC-1001-STN/cmd",
        "A's first command is its own, never B's"
    );

    // A lost connection: Mosquitto publishes the will, the hub marks it offline.
    b.drop_connection();
    let offline = admin
        .expect("rt_module_offline", about("MC-1002-STN"))
        .await;
    assert_eq!(offline["reason"], "will");

    // Token rotation: after a new export and a reload, the old token no longer works, and a
    // connection made with it is closed by Mosquitto.
    let b_old = MqttModule::connect(mosquitto.addr, "MC-1002-STN", &pw_b)
        .await
        .expect("B connects again with its current token");
    let (status, body) = t
        .call(&cookie, "POST", "/api/modules/MC-1002-STN/token", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let new_token = body["password"]
        .as_str()
        .or_else(|| body["token"].as_str())
        .expect("new token in the answer")
        .to_owned();
    export(&t, files.path());
    mosquitto.reload().await;
    eventually("the connection with the rotated token is closed", || {
        b_old.is_closed()
    })
    .await;
    assert!(
        MqttModule::connect(mosquitto.addr, "MC-1002-STN", &pw_b)
            .await
            .is_err(),
        "the old token still works after rotation, export and reload"
    );
    let b = MqttModule::connect(mosquitto.addr, "MC-1002-STN", &new_token)
        .await
        .expect("the new token works");
    b.hello(1000).await;
    admin.expect("rt_module_online", about("MC-1002-STN")).await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_broker_link_or_a_hub_restart_is_no_offline_storm() {
    let files = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let link = Link::start(([127, 0, 0, 1], port).into()).await;
    let client_id = format!("mc-hub-restart-{}", rand_suffix());
    let id_for_hub = client_id.clone();
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().join("data");
    let dir_for_hub = data_dir.clone();
    // Timeouts well below the outage below: without the hold they would all fire.
    let t = hub_behind(&link, move |c| {
        c.data_dir = dir_for_hub;
        c.broker.client_id = Some(id_for_hub);
        c.liveness.heartbeat_timeout = Some(Duration::from_millis(1500));
    })
    .await;
    t.add_user("admin@x.io", true).await;
    let mut credentials = Vec::new();
    for i in 0..5 {
        let id = format!("MC-{}-EXT", 4001 + i);
        let password = t.add_module(&id, None).await;
        credentials.push(ModuleCredentials {
            id: id.parse().expect("id"),
            password,
        });
    }
    export(&t, files.path());
    let mosquitto = Mosquitto::start(
        files.path(),
        &files.path().join("passwd"),
        &files.path().join("acl"),
        port,
    )
    .await;
    mc_e2e::wait_ready(&t.url).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let stop = CancellationToken::new();
    let sim = firmware_sim::start(
        SimConfig {
            broker: mosquitto.addr.to_string(),
            heartbeat: Duration::from_millis(300),
            telemetry: Duration::from_millis(300),
            ..SimConfig::default()
        },
        credentials.clone(),
        stop.clone(),
    );
    let mut online = std::collections::HashSet::new();
    while online.len() < credentials.len() {
        let data = dash.expect("rt_module_online", |_| true).await;
        online.insert(data["moduleId"].as_str().unwrap_or_default().to_owned());
    }

    // Cut the hub off its broker for 3 timeouts; modules stay connected to Mosquitto.
    link.cut();
    eventually("the hub notices the cut", || {
        !t.hub
            .metrics
            .mqtt_ingest_up
            .load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    link.restore();
    mc_e2e::wait_ready(&t.url).await;
    // Telemetry flows again, and nobody went offline in between.
    let victim = credentials[0].id.as_str();
    let seen = dash.until("rt_telemetry_updated", about(victim)).await;
    let seen_more = dash.until("rt_telemetry_updated", about(victim)).await;
    let offline: Vec<_> = seen
        .iter()
        .chain(&seen_more)
        .filter(|(e, _)| e == "rt_module_offline")
        .collect();
    assert!(
        offline.is_empty(),
        "offline storm after a link cut: {offline:?}"
    );

    // A clean disconnect: the module says `offline` first, the hub hears it at once.
    sim.modules()[1].inject(Fault::Disconnect);
    let offline = dash
        .expect("rt_module_offline", about(credentials[1].id.as_str()))
        .await;
    assert_eq!(offline["reason"], "will");

    // The hub restarts (same data, same client id) while modules stay connected: they are
    // restored stale and come back online from their heartbeats; nobody is reported offline.
    dash.close().await;
    t.shutdown.cancel();
    let http = t.hub.http_addr;
    let database = t.database.clone();
    eventually("the first hub has stopped serving", || {
        std::net::TcpStream::connect(http).is_err()
    })
    .await;
    drop(t);
    let url = format!("mqtt://mc-hub@{}", link.addr);
    let t2 = start_hub(move |c| {
        c.data_dir = data_dir;
        c.database = Some(database);
        c.broker.url = Some(url);
        c.broker.password = Some(HUB_PASSWORD.into());
        c.broker.client_id = Some(client_id);
        c.liveness.heartbeat_timeout = Some(Duration::from_millis(1500));
    })
    .await;
    mc_e2e::wait_ready(&t2.url).await;
    let admin = t2.login("admin@x.io").await;
    let mut dash = t2.dashboard("admin@x.io").await;
    let connected: Vec<&str> = credentials
        .iter()
        .map(|c| c.id.as_str())
        .filter(|id| *id != credentials[1].id.as_str())
        .collect();
    // Every connected module reports through the new hub (it may have come online before this
    // dashboard connected), and none is reported offline meanwhile.
    let mut reporting = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while reporting.len() < connected.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "modules not reporting through the restarted hub: {reporting:?}"
        );
        let (event, data) = dash.next().await;
        let id = data["moduleId"].as_str().unwrap_or_default().to_owned();
        assert_ne!(
            event, "rt_module_offline",
            "a restarted hub reported {id} offline"
        );
        if event == "rt_telemetry_updated" && connected.contains(&id.as_str()) {
            reporting.insert(id);
        }
    }
    let (status, body) = t2.call(&admin, "GET", "/api/modules", None).await;
    assert_eq!(status, 200, "{body}");
    for id in &connected {
        let module = body["modules"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["moduleId"] == **id))
            .unwrap_or_else(|| panic!("{id} missing from {body}"));
        assert_eq!(module["online"], true, "{module}");
    }
    stop.cancel();
    let _ = tokio::time::timeout(DEADLINE, sim.stopped()).await;
    t2.shutdown.cancel();
}
