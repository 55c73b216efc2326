//! Three hubs as one cluster, on a real Redis and a real Mosquitto: modules split between the
//! hubs by the broker's shared subscription, one owner per module, one event stream. One hub
//! is killed (SIGKILL) mid-stream: connected dashboards on the others lose no event and see
//! no false offline, and a dashboard of the dead hub resumes on another.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::Duration,
};

use firmware_sim::{ModuleCredentials, SimConfig};
use mc_e2e::{
    DEADLINE, Dashboard, TestHub, login,
    mosquitto::{Mosquitto, free_port},
    redis::Redis,
    start_hub,
};
use mc_hub::store::Database;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::process::HubProcess;

const HUB_PASSWORD: &str = "hub-secret";
const MODULES: usize = 9;

/// The hubs' shared database: one SQLite file, or one PostgreSQL database
/// (`MC_TEST_DATABASE=postgres`, as a deployment of several hubs would use).
struct Shared {
    data_dir: std::path::PathBuf,
    database: Database,
}

impl Shared {
    async fn new(dir: &Path) -> Self {
        let data_dir = dir.join("data");
        let database = mc_e2e::test_database(&data_dir).await;
        Self { data_dir, database }
    }

    /// `--data-dir` and, on PostgreSQL, `--database` for the hub binary.
    fn args(&self) -> Vec<String> {
        let mut args = vec!["--data-dir".into(), self.data_dir.display().to_string()];
        if let Database::Postgres(url) = &self.database {
            args.extend(["--database".into(), url.clone()]);
        }
        args
    }

    /// Mosquitto on `port` with the files `hub export mosquitto-acl` writes from the registry.
    async fn mosquitto(&self, dir: &Path, port: u16) -> Mosquitto {
        let files = dir.join("mosquitto");
        self.export(&files);
        Mosquitto::start(&files, &files.join("passwd"), &files.join("acl"), port).await
    }

    /// `hub export mosquitto-acl` (the real CLI) into `out`.
    fn export(&self, out: &Path) {
        std::fs::create_dir_all(out).expect("mosquitto dir");
        let export = std::process::Command::new(crate::process::hub_binary())
            .args(["export", "mosquitto-acl", "--out"])
            .arg(out)
            .args(self.args())
            .env("HUB_BROKER_PASSWORD", HUB_PASSWORD)
            .output()
            .expect("hub export runs");
        assert!(export.status.success(), "{export:?}");
    }
}

async fn in_process_hub(name: &str, shared: &Shared, broker: u16, redis: &Redis) -> TestHub {
    let (name, data_dir, database, redis) = (
        name.to_owned(),
        shared.data_dir.clone(),
        shared.database.clone(),
        redis.url(),
    );
    start_hub(move |c| {
        c.data_dir = data_dir;
        c.database = Some(database);
        c.broker.url = Some(format!("mqtt://mc-hub@127.0.0.1:{broker}"));
        c.broker.password = Some(HUB_PASSWORD.into());
        c.broker.client_id = Some(name.clone());
        c.cluster.redis = Some(redis);
        c.cluster.instance = Some(name);
        c.liveness.heartbeat_timeout = Some(Duration::from_secs(3));
    })
    .await
}

async fn admin_dashboard(url: &str) -> Dashboard {
    let cookie = login(url, "admin@x.io", "password")
        .await
        .expect("admin logs in");
    Dashboard::connect(url, Some(&cookie), "modules")
        .await
        .expect("dashboard connects")
}

/// What one dashboard saw, per module, with the rules every dashboard must keep: one online
/// event per module, readings revisions each exactly one above the previous.
#[derive(Default)]
struct Seen {
    online: HashSet<String>,
    offline: Vec<Value>,
    revs: HashMap<String, u64>,
    updates: HashMap<String, usize>,
    last_offset: u64,
}

impl Seen {
    fn take(&mut self, hub: &str, event: &str, data: &Value, offset: Option<u64>) {
        if let Some(offset) = offset {
            assert!(
                offset > self.last_offset,
                "{hub}: offset {offset} after {}",
                self.last_offset
            );
            self.last_offset = offset;
        }
        let module = data["moduleId"].as_str().unwrap_or_default().to_owned();
        match event {
            "rt_module_online" => {
                assert!(
                    self.online.insert(module.clone()),
                    "{hub}: {module} reported online twice"
                );
            }
            "rt_module_offline" => self.offline.push(data.clone()),
            "rt_telemetry_updated" => {
                let rev = data["rev"].as_u64().expect("rev");
                let from = data["fromRev"].as_u64().unwrap_or(rev);
                if let Some(previous) = self.revs.get(&module) {
                    assert_eq!(
                        from,
                        previous + 1,
                        "{hub}: {module} rev {rev} (from {from}) after {previous}: an event lost or repeated"
                    );
                }
                self.revs.insert(module.clone(), rev);
                *self.updates.entry(module).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// Reads `dash` until `done(seen)` holds, checking the rules on every event.
async fn watch(hub: &str, dash: &mut Dashboard, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    while !done(seen) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{hub}: condition not reached; online {:?}, updates {:?}",
            seen.online,
            seen.updates
        );
        let r = dash.next_received().await;
        seen.take(hub, &r.event, &r.data, r.offset);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_share_the_modules_and_survive_one_being_killed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = Shared::new(dir.path()).await;
    let redis = Redis::start(dir.path()).await;
    let broker_port = free_port();

    // Hub A creates the accounts (one database for all: SQLite here, PostgreSQL in production).
    let a = in_process_hub("hub-a", &shared, broker_port, &redis).await;
    a.add_user("admin@x.io", true).await;
    let mut credentials = Vec::new();
    for i in 0..MODULES {
        let id = format!("MC-{}-CLU", 5001 + i);
        let password = a.add_module(&id, None).await;
        credentials.push(ModuleCredentials {
            id: id.parse().expect("id"),
            password,
        });
    }
    let mosquitto = shared.mosquitto(dir.path(), broker_port).await;

    // Hub B in this process, hub C as its own process (to be killed with SIGKILL).
    let b = in_process_hub("hub-b", &shared, broker_port, &redis).await;
    let password_file = dir.path().join("hub-password");
    std::fs::write(&password_file, HUB_PASSWORD).expect("password file");
    let config = dir.path().join("hub-c.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nurl = \"mqtt://mc-hub@127.0.0.1:{broker_port}\"\npassword-file = \"{}\"\nclient-id = \"hub-c\"\n\n[cluster]\nredis = \"{}\"\ninstance = \"hub-c\"\n",
            password_file.display(),
            redis.url()
        ),
    )
    .expect("hub-c config");
    let mut c = HubProcess::new(dir.path()).await;
    c.data_dir = shared.data_dir.clone();
    c.postgres = match &shared.database {
        Database::Postgres(_) => Some(shared.database.clone()),
        Database::Sqlite(_) => None,
    };
    c.serve_args = vec!["--config".into(), config.display().to_string()];
    c.start().await;
    let url_c = format!("http://{}", c.http);
    for url in [&a.url, &b.url, &url_c] {
        mc_e2e::wait_ready(url).await;
    }

    let mut dashes = [
        ("hub-a", admin_dashboard(&a.url).await, Seen::default()),
        ("hub-b", admin_dashboard(&b.url).await, Seen::default()),
        ("hub-c", admin_dashboard(&url_c).await, Seen::default()),
    ];
    // Every dashboard is on one stream: same epoch everywhere.
    let epochs: HashSet<String> = dashes
        .iter()
        .map(|(_, d, _)| d.session()["epoch"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(epochs.len(), 1, "one epoch for the cluster: {epochs:?}");

    let stop = CancellationToken::new();
    let sim = firmware_sim::start(
        SimConfig {
            broker: mosquitto.addr.to_string(),
            heartbeat: Duration::from_millis(500),
            telemetry: Duration::from_millis(200),
            // A module whose connection is dropped stays away.
            drop_pause: Duration::from_secs(600),
            ..SimConfig::default()
        },
        credentials.clone(),
        stop.clone(),
    );
    for (hub, dash, seen) in &mut dashes {
        watch(hub, dash, seen, |s| {
            s.online.len() == MODULES
                && s.updates.len() == MODULES
                && s.updates.values().all(|n| *n >= 3)
        })
        .await;
    }
    // The broker split the messages: both in-process hubs took some.
    for (name, hub) in [("hub-a", &a), ("hub-b", &b)] {
        assert!(
            hub.hub.metrics.mqtt_messages_ingested.get() > 0,
            "{name} received no module message: the shared subscription did not split"
        );
    }

    // Kill hub C mid-stream. Its modules move to A and B within the membership TTL. One of
    // them dies with it: its will goes to a hub that forwards it to C, in vain; its new owner
    // must still find out (it adopted the module with a deadline).
    let owned_by_c: Vec<usize> = (0..MODULES)
        .filter(|i| {
            mc_hub::cluster::membership::owner_among(
                ["hub-a", "hub-b", "hub-c"],
                credentials[*i].id.as_str(),
            ) == Some("hub-c")
        })
        .collect();
    assert!(
        !owned_by_c.is_empty(),
        "hub C owns no module: pick other ids"
    );
    let victim = credentials[owned_by_c[0]].id.to_string();
    let [dash_a, dash_b, dash_c] = &mut dashes;
    let c_last_offset = dash_c.2.last_offset;
    c.kill().await;
    sim.modules()[owned_by_c[0]].inject(firmware_sim::Fault::DropConnection);
    let before: HashMap<String, usize> = dash_a.2.updates.clone();
    for (hub, dash, seen) in [dash_a, dash_b] {
        // Long past the TTL (3 s) and a heartbeat timeout (3 s): every other module keeps
        // reporting, with no revision lost or repeated and no one else reported offline.
        let target = before.clone();
        let victim_for_watch = victim.clone();
        watch(hub, dash, seen, move |s| {
            s.offline.iter().any(|o| o["moduleId"] == *victim_for_watch)
                && target.iter().all(|(m, n)| {
                    *m == victim_for_watch || s.updates.get(m).copied().unwrap_or(0) >= n + 30
                })
        })
        .await;
        let others: Vec<&Value> = seen
            .offline
            .iter()
            .filter(|o| o["moduleId"] != *victim)
            .collect();
        assert!(
            others.is_empty(),
            "{hub}: false offline after a hub died: {others:?}"
        );
        assert_eq!(seen.offline.len(), 1, "{hub}: {:?}", seen.offline);
    }

    // A dashboard of the dead hub resumes on hub A from its last offset.
    let cookie = login(&a.url, "admin@x.io", "password")
        .await
        .expect("admin logs in");
    let epoch = dash_c.1.session()["epoch"].clone();
    let back = Dashboard::connect_auth(
        &a.url,
        Some(&cookie),
        json!({"page": "modules", "resume": {"epoch": epoch, "offset": c_last_offset}}),
    )
    .await
    .expect("resumes");
    assert_eq!(back.session()["resumed"], true, "{}", back.session());

    stop.cancel();
    let _ = tokio::time::timeout(DEADLINE, sim.stopped()).await;
}

/// Two hubs; every user-facing behaviour that crosses them: registry events once, per-user
/// targeting, commands for a module the other hub owns, logout and rights changes reaching
/// sockets on the other hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_happens_on_one_hub_reaches_the_clients_of_the_other_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = Shared::new(dir.path()).await;
    let redis = Redis::start(dir.path()).await;
    let broker_port = free_port();
    let a = in_process_hub("hub-a", &shared, broker_port, &redis).await;
    let admin_id = a.add_user("admin@x.io", true).await;
    let alice_id = a.add_user("alice@x.io", false).await;
    let bob_id = a.add_user("bob@x.io", false).await;
    let pw_1 = a.add_module("MC-6001-CLU", Some("alice@x.io")).await;
    let pw_2 = a.add_module("MC-6002-CLU", Some("bob@x.io")).await;
    let mosquitto = shared.mosquitto(dir.path(), broker_port).await;
    let b = in_process_hub("hub-b", &shared, broker_port, &redis).await;
    mc_e2e::wait_ready(&a.url).await;
    mc_e2e::wait_ready(&b.url).await;
    let _ = admin_id;

    let admin_cookie = a.login("admin@x.io").await;
    let mut admin = Dashboard::connect(&a.url, Some(&admin_cookie), "modules")
        .await
        .expect("admin on A");
    // Alice logs in on A, her dashboard runs on B (the session is in the shared database).
    let alice_cookie = a.login("alice@x.io").await;
    let mut alice = Dashboard::connect(&b.url, Some(&alice_cookie), "modules")
        .await
        .expect("alice on B");
    let bob_cookie = b.login("bob@x.io").await;
    let mut bob = Dashboard::connect(&b.url, Some(&bob_cookie), "modules")
        .await
        .expect("bob on B");

    let mut m1 = mc_e2e::MqttModule::connect(mosquitto.addr, "MC-6001-CLU", &pw_1)
        .await
        .expect("module 1");
    m1.client
        .subscribe("mc/MC-6001-CLU/cmd", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let m2 = mc_e2e::MqttModule::connect(mosquitto.addr, "MC-6002-CLU", &pw_2)
        .await
        .expect("module 2");
    m1.hello(1000).await;
    m2.hello(1000).await;
    m2.telemetry(1, json!({"t": 1.0})).await;
    m1.telemetry(1, json!({"t": 2.0})).await;
    // Alice sees her module's events, never Bob's.
    let seen = alice
        .until("rt_telemetry_updated", mc_e2e::about("MC-6001-CLU"))
        .await;
    assert!(
        !seen.iter().any(|(_, v)| v["moduleId"] == "MC-6002-CLU"),
        "alice saw bob's module: {seen:?}"
    );
    bob.expect("rt_telemetry_updated", mc_e2e::about("MC-6002-CLU"))
        .await;

    // A module registered through hub B: one rt_module_added on each dashboard that may see
    // it, whichever hub it is on (each hub applies the change; one publishes the event).
    let applied = |hub: &TestHub| hub.hub.metrics.registry_changes_applied.get();
    let (a_before, b_before) = (applied(&a), applied(&b));
    let (status, body) = b
        .call(
            &admin_cookie,
            "POST",
            "/api/modules",
            Some(json!({"id": "MC-6003-CLU", "name": "third", "ownerId": alice_id})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let added = alice
        .until("rt_module_added", |v| v["moduleId"] == "MC-6003-CLU")
        .await;
    assert_eq!(
        added.iter().filter(|(e, _)| e == "rt_module_added").count(),
        1
    );
    // Both hubs have applied the change (published their copy or found it taken)...
    mc_e2e::eventually("both hubs applied the new module", || {
        applied(&a) > a_before && applied(&b) > b_before
    })
    .await;
    // ...and each then emits a login event through its own relay, behind any copy of its own:
    // once both logins arrived, a second rt_module_added would have too.
    let _ = a.login("admin@x.io").await;
    let _ = b.login("admin@x.io").await;
    let mut logins = 0;
    let mut added_copies = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while logins < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two logins never reached the admin"
        );
        let (event, data) = admin.next().await;
        match event.as_str() {
            // Not the logins of earlier (alice's and bob's).
            "rt_user_logged_in" if data["email"] == "admin@x.io" => logins += 1,
            "rt_module_added" if data["moduleId"] == "MC-6003-CLU" => added_copies += 1,
            _ => {}
        }
    }
    assert_eq!(
        added_copies, 1,
        "rt_module_added reached the admin {added_copies} times"
    );

    // Commands through either hub reach the module, whichever hub owns it.
    for hub in [&a, &b] {
        let (status, body) = hub
            .call(
                &alice_cookie,
                "POST",
                "/api/modules/MC-6001-CLU/commands",
                Some(json!({"action": "reboot"})),
            )
            .await;
        assert_eq!(status, 202, "{}: {body}", hub.url);
        assert_ne!(body["queued"], true, "{body}");
        let (topic, payload) = m1.next_publish().await;
        assert_eq!(topic, "mc/MC-6001-CLU/cmd");
        assert!(String::from_utf8_lossy(&payload).contains(&body["id"].to_string()));
    }

    // Alice logs out through hub A: her dashboard on hub B is disconnected.
    let (status, _) = a
        .call(&alice_cookie, "POST", "/api/auth/logout", None)
        .await;
    assert!(status < 300, "logout: {status}");
    alice.expect("close", |_| true).await;
    // Bob is disabled through hub A: his dashboard on hub B is disconnected.
    let (status, body) = a
        .call(
            &admin_cookie,
            "PATCH",
            &format!("/api/users/{bob_id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    bob.expect("close", |_| true).await;
}

/// Redis restarts empty (no persistence): the stream starts over under a new epoch, every
/// dashboard is disconnected and comes back to a snapshot, and events flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_the_stream_makes_every_dashboard_resynchronise() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = Shared::new(dir.path()).await;
    let mut redis = Redis::start(dir.path()).await;
    let broker_port = free_port();
    let a = in_process_hub("hub-a", &shared, broker_port, &redis).await;
    a.add_user("admin@x.io", true).await;
    let pw = a.add_module("MC-7001-CLU", None).await;
    let mosquitto = shared.mosquitto(dir.path(), broker_port).await;
    let b = in_process_hub("hub-b", &shared, broker_port, &redis).await;
    mc_e2e::wait_ready(&a.url).await;
    mc_e2e::wait_ready(&b.url).await;
    let module = mc_e2e::MqttModule::connect(mosquitto.addr, "MC-7001-CLU", &pw)
        .await
        .expect("module");
    module.hello(1000).await;
    let mut dashes = [admin_dashboard(&a.url).await, admin_dashboard(&b.url).await];
    module.telemetry(1, json!({"t": 1.0})).await;
    let mut last = Vec::new();
    for dash in &mut dashes {
        let r = dash
            .expect_received("rt_telemetry_updated", mc_e2e::about("MC-7001-CLU"))
            .await;
        last.push((dash.session()["epoch"].clone(), r.offset.expect("offset")));
    }

    redis.restart().await;
    for dash in &mut dashes {
        dash.expect("close", |_| true).await;
    }
    for (url, (epoch, offset)) in [&a.url, &b.url].into_iter().zip(last) {
        let cookie = login(url, "admin@x.io", "password")
            .await
            .expect("admin logs in");
        let mut back = Dashboard::connect_auth(
            url,
            Some(&cookie),
            json!({"page": "modules", "resume": {"epoch": epoch, "offset": offset}}),
        )
        .await
        .expect("reconnects");
        assert_eq!(back.session()["resumed"], false, "{}", back.session());
        assert_ne!(back.session()["epoch"], epoch);
        let mut seq = 2;
        // Readings keep coming (a few sent, in case the first went while hubs rejoined).
        let got = tokio::time::timeout(DEADLINE, async {
            loop {
                module.telemetry(seq, json!({"t": f64::from(seq)})).await;
                seq += 1;
                if let Ok((event, data)) =
                    tokio::time::timeout(Duration::from_millis(500), back.next()).await
                    && event == "rt_telemetry_updated"
                    && data["moduleId"] == "MC-7001-CLU"
                {
                    return;
                }
            }
        })
        .await;
        assert!(got.is_ok(), "{url}: no telemetry after Redis restarted");
    }
}
