//! Durability: the real `hub` binary is killed with SIGKILL in the middle of sustained writes
//! (module CRUD and user changes over the HTTP API, telemetry from MQTT modules), restarted on
//! the same data directory, and must have every write it acknowledged, a sound database, and
//! its modules' last known state (stale, offline) without a false offline storm. Also: a
//! read-only data directory and a full disk give clear errors, and the realtime path keeps
//! serving on a full disk.
//!
//! The disk tests mount a tmpfs (the tests run as root; `chmod` does not stop root from
//! writing): without the right to mount they fail with a message saying so, never skip.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use mc_e2e::{DEADLINE, Dashboard, MqttModule, about, eventually_within, login, request as call};
use mc_hub::store::Database;
use rumqttc::QoS;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::process::{HUB_START_DEADLINE, HubProcess};

const ADMIN: &str = "admin@durable.test";
const PASSWORD: &str = "durable-test-pw";

/// What a key (a module id, a user email) must look like after the restart: the state after
/// its acknowledged writes, or after the one write in flight when the hub died (unknown
/// outcome).
#[derive(Debug, Default, Clone)]
struct Expected {
    acked: Option<String>,
    in_flight: Option<Option<String>>,
}

impl Expected {
    fn allows(&self, actual: &Option<String>) -> bool {
        *actual == self.acked || self.in_flight.as_ref() == Some(actual)
    }
}

/// Every write a writer had acknowledged, by key; `None` = absent (deleted, never created).
type Ledger = Arc<Mutex<BTreeMap<String, Expected>>>;

/// Every key of `ledger` is in `listed` (a JSON array of objects, by `key`) as acknowledged:
/// `field` is the acknowledged value (absent when deleted), or the in-flight one.
fn assert_ledger_kept(listed: &Value, key: &str, field: &str, ledger: &Ledger) {
    let listed: BTreeMap<String, Option<String>> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|item| {
            let k = item[key].as_str().expect("key").to_owned();
            (k, item[field].as_str().map(str::to_owned))
        })
        .collect();
    let ledger = ledger.lock().expect("ledger").clone();
    for (k, expected) in &ledger {
        let actual = listed.get(k).cloned().flatten();
        assert!(
            expected.allows(&actual),
            "{key} {k}: found {actual:?}, acknowledged {expected:?}"
        );
    }
}

/// Applies one write: `after` is the key's state if it takes effect. Returns the answer, or
/// `None` (the write recorded as in flight) when the hub did not answer.
async fn write(
    ledger: &Ledger,
    key: &str,
    after: Option<String>,
    request: impl Future<Output = Result<(u16, Value), String>>,
) -> Option<Value> {
    ledger
        .lock()
        .expect("ledger")
        .entry(key.to_owned())
        .or_default()
        .in_flight = Some(after.clone());
    let (status, body) = request.await.ok()?;
    assert!(
        (200..300).contains(&status),
        "write {key} -> {after:?} refused: {status} {body}"
    );
    let mut ledger = ledger.lock().expect("ledger");
    let entry = ledger.entry(key.to_owned()).or_default();
    entry.acked = after;
    entry.in_flight = None;
    Some(body)
}

/// Creates, renames and deletes modules over the API until the hub dies.
async fn module_writer(url: String, cookie: String, ledger: Ledger) {
    for i in 0u32.. {
        let id = format!("MC-{:04}-DUR", 3000 + i);
        let name = format!("Module {i}");
        let create = json!({"id": id, "name": name});
        let create = call(&url, &cookie, "POST", "/api/modules", Some(create));
        if write(&ledger, &id, Some(name.clone()), create)
            .await
            .is_none()
        {
            return;
        }
        let renamed = format!("{name} renamed");
        let path = format!("/api/modules/{id}");
        let rename = call(
            &url,
            &cookie,
            "PATCH",
            &path,
            Some(json!({"name": renamed})),
        );
        if write(&ledger, &id, Some(renamed), rename).await.is_none() {
            return;
        }
        if i % 3 == 0 {
            let delete = call(&url, &cookie, "DELETE", &path, None);
            if write(&ledger, &id, None, delete).await.is_none() {
                return;
            }
        }
    }
}

/// Creates users and renames them over the API until the hub dies.
async fn user_writer(url: String, cookie: String, ledger: Ledger) {
    for i in 0u32.. {
        let email = format!("user{i}@durable.test");
        let name = format!("User {i}");
        let create = json!({"email": email, "name": name, "password": PASSWORD});
        let create = call(&url, &cookie, "POST", "/api/users", Some(create));
        let Some(user) = write(&ledger, &email, Some(name.clone()), create).await else {
            return;
        };
        let id = user["id"].as_i64().expect("user id");
        let renamed = format!("{name} renamed");
        let path = format!("/api/users/{id}");
        let rename = call(
            &url,
            &cookie,
            "PATCH",
            &path,
            Some(json!({"name": renamed})),
        );
        if write(&ledger, &email, Some(renamed), rename)
            .await
            .is_none()
        {
            return;
        }
    }
}

/// Sends changing telemetry as `module` until `stop` (the hub is gone).
async fn telemetry_writer(module: MqttModule, stop: CancellationToken) {
    for seq in 1u32.. {
        let payload = json!({"seq": seq, "readings": {"temperature": f64::from(seq) / 4.0}});
        let publish = module.client.publish(
            format!("mc/{}/telemetry", module.id),
            QoS::AtLeastOnce,
            false,
            payload.to_string(),
        );
        tokio::select! {
            _ = stop.cancelled() => return,
            sent = publish => if sent.is_err() { return },
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// The module's MQTT password: the last line of `hub module add`.
fn password_of(output: &str) -> String {
    output
        .lines()
        .last()
        .expect("hub module add prints the password")
        .trim()
        .to_owned()
}

/// Waits until the module state snapshot of `id` on disk has revision `rev` (read next to the
/// running hub, as `hub db check` does).
async fn snapshot_on_disk(database: &Database, id: &str, rev: u64) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let states = mc_hub::store::StateStore::connect(database)
            .await
            .expect("state store opens");
        let found = states
            .load()
            .await
            .expect("states load")
            .into_iter()
            .find(|s| s.snapshot.module_id.as_str() == id);
        if let Some(state) = found
            && state.snapshot.rev == rev
        {
            return json!(state.snapshot.readings);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the state of {id} at rev {rev} was not saved within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn module_in<'a>(modules: &'a Value, id: &str) -> &'a Value {
    modules["modules"]
        .as_array()
        .expect("modules array")
        .iter()
        .find(|m| m["moduleId"] == id)
        .unwrap_or_else(|| panic!("{id} missing from {modules}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = HubProcess::new(dir.path()).await;
    let admin = ["user", "add", "--email", ADMIN, "--name", "Admin"];
    hub.manage(&[&admin[..], &["--password", PASSWORD, "--admin"]].concat())
        .await;
    let quiet = "MC-2001-DUR";
    let busy = "MC-2002-DUR";
    let quiet_pw = password_of(
        &hub.manage(&["module", "add", quiet, "--name", "Quiet"])
            .await,
    );
    let busy_pw = password_of(&hub.manage(&["module", "add", busy, "--name", "Busy"]).await);
    hub.start().await;
    let url = hub.url();
    let cookie = login(&url, ADMIN, PASSWORD).await.expect("admin logs in");

    // The quiet module reports a few values, then stays silent: its last state must be on
    // disk (the flush is batched, so wait for it), and come back exactly after the kill.
    let quiet_module = MqttModule::connect(hub.mqtt, quiet, &quiet_pw)
        .await
        .expect("quiet module connects");
    quiet_module.hello(60_000).await;
    for seq in 1..=5u32 {
        let readings = json!({"temperature": 20.0 + f64::from(seq), "humidity": 40.5});
        quiet_module.telemetry(seq, readings).await;
    }
    let quiet_readings = snapshot_on_disk(&hub.database(), quiet, 5).await;
    let quiet_readings: BTreeMap<String, f64> =
        serde_json::from_value::<Vec<(String, f64)>>(quiet_readings)
            .expect("pairs")
            .into_iter()
            .collect();
    assert_eq!(
        quiet_readings,
        BTreeMap::from([("humidity".into(), 40.5), ("temperature".into(), 25.0)])
    );

    // Sustained writes from every side, then SIGKILL while they run.
    let modules: Ledger = Arc::default();
    let users: Ledger = Arc::default();
    let busy_module = MqttModule::connect(hub.mqtt, busy, &busy_pw)
        .await
        .expect("busy module connects");
    busy_module.hello(60_000).await;
    let stop_telemetry = CancellationToken::new();
    let writers = [
        tokio::spawn(module_writer(url.clone(), cookie.clone(), modules.clone())),
        tokio::spawn(user_writer(url.clone(), cookie.clone(), users.clone())),
        tokio::spawn(telemetry_writer(busy_module, stop_telemetry.clone())),
    ];
    let acked = |ledger: &Ledger| {
        ledger
            .lock()
            .expect("ledger")
            .values()
            .filter(|e| e.acked.is_some())
            .count()
    };
    // ~10 s on an idle machine (some 80 API writes); the phase is about having written, not
    // about speed: a generous deadline, so that a loaded machine does not fail it.
    eventually_within(
        "30 modules and 5 users written",
        Duration::from_secs(120),
        || acked(&modules) >= 30 && acked(&users) >= 5,
    )
    .await;
    // and at least one flush of the busy module's state
    snapshot_on_disk_any(&hub.database(), busy).await;
    hub.kill().await;
    stop_telemetry.cancel();
    for writer in writers {
        tokio::time::timeout(DEADLINE, writer)
            .await
            .expect("writers stop once the hub is gone")
            .expect("writer task");
    }
    drop(quiet_module);

    // The database is sound as the killed hub left it (WAL not yet replayed)...
    let check = hub.cli(&["db", "check"]).await;
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && stdout.trim() == "ok",
        "hub db check: {:?} {stdout} {}",
        check.status,
        String::from_utf8_lossy(&check.stderr)
    );

    // ...and the restarted hub has every acknowledged write.
    hub.start().await;
    let cookie = login(&url, ADMIN, PASSWORD)
        .await
        .expect("admin logs in again");
    let mut dashboard = Dashboard::connect(&url, Some(&cookie), "modules")
        .await
        .expect("dashboard connects after the restart");
    let (status, snapshot) = call(&url, &cookie, "GET", "/api/modules", None)
        .await
        .expect("snapshot");
    assert_eq!(status, 200, "{snapshot}");
    assert_ledger_kept(&snapshot["modules"], "moduleId", "name", &modules);
    let (status, body) = call(&url, &cookie, "GET", "/api/users", None)
        .await
        .expect("users");
    assert_eq!(status, 200, "{body}");
    assert_ledger_kept(&body["users"], "email", "name", &users);

    // The modules' last known state, stale and offline, with their last-seen time.
    let q = module_in(&snapshot, quiet);
    assert_eq!(q["online"], false, "{q}");
    assert_eq!(q["stale"], true, "{q}");
    assert_eq!(q["rev"], 5, "{q}");
    assert_eq!(
        q["readings"],
        json!({"temperature": 25.0, "humidity": 40.5})
    );
    assert_eq!(q["fw"], "1.0.0", "{q}");
    assert!(q["lastSeen"].is_string(), "{q}");
    let b = module_in(&snapshot, busy);
    assert_eq!((&b["online"], &b["stale"]), (&json!(false), &json!(true)));
    assert!(b["rev"].as_u64().is_some_and(|r| r > 0), "{b}");
    assert!(b["readings"]["temperature"].is_number(), "{b}");

    // No offline storm: the quiet module comes back; until its online event the dashboard
    // heard no offline event at all (and the hub emitted none).
    let quiet_module = MqttModule::connect(hub.mqtt, quiet, &quiet_pw)
        .await
        .expect("quiet module reconnects");
    quiet_module.hello(60_000).await;
    let seen = dashboard.until("rt_module_online", about(quiet)).await;
    let offline: Vec<_> = seen
        .iter()
        .filter(|(event, _)| event == "rt_module_offline")
        .collect();
    assert!(
        offline.is_empty(),
        "offline events after restart: {offline:?}"
    );
    let (_, metrics) = metrics_text(&url).await;
    assert!(
        !metrics.contains(r#"mc_events_emitted_total{event="rt_module_offline"}"#),
        "the restarted hub emitted offline events:\n{metrics}"
    );
    // Its readings go on from the restored revision.
    quiet_module
        .telemetry(1, json!({"temperature": 26.0, "humidity": 40.5}))
        .await;
    let update = dashboard.expect("rt_telemetry_updated", about(quiet)).await;
    assert_eq!(update["rev"], 6, "{update}");
    assert_eq!(update["telemetry"], json!({"temperature": 26.0}));
    dashboard.close().await;
    quiet_module.disconnect().await;
    hub.kill().await;
}

/// Waits until some state of `id` is on disk.
async fn snapshot_on_disk_any(database: &Database, id: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let states = mc_hub::store::StateStore::connect(database)
            .await
            .expect("state store opens");
        let loaded = states.load().await.expect("states load");
        if loaded.iter().any(|s| s.snapshot.module_id.as_str() == id) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no state of {id} saved within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /metrics`: status and text.
async fn metrics_text(url: &str) -> (u16, String) {
    let response = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics answer");
    let status = response.status().as_u16();
    (status, response.text().await.expect("metrics text"))
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `4m`) at `path` (created). Fails the test loudly when
    /// the process may not mount (these tests need root or CAP_SYS_ADMIN): never a silent skip.
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("the mount command runs");
        assert!(
            output.status.success(),
            "cannot mount a tmpfs at {} (this test needs root or CAP_SYS_ADMIN to simulate a \
             full or read-only disk): {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Self {
            path: path.to_owned(),
        }
    }

    /// Remounts it read-only.
    fn read_only(&self) {
        let output = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .output()
            .expect("the mount command runs");
        assert!(
            output.status.success(),
            "cannot remount {} read-only: {}",
            self.path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Fills it up with `filler`: every write after this one finds no space.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler file");
        for chunk in [1 << 20, 4096, 512, 1] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        let _ = file.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test]
async fn a_read_only_data_directory_stops_the_hub_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = HubProcess::new(dir.path()).await;
    let mount = Tmpfs::mount(&hub.data_dir, "8m");
    let admin = ["user", "add", "--email", ADMIN, "--name", "Admin"];
    hub.manage(&[&admin[..], &["--password", PASSWORD, "--admin"]].concat())
        .await;
    mount.read_only();

    // A hub that does start would serve until killed: bounded, and killed on timeout.
    let serve = hub.cli(&["serve", "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"]);
    let Ok(output) = tokio::time::timeout(HUB_START_DEADLINE, serve).await else {
        panic!(
            "the hub started on a read-only data directory: `hub serve` still ran after \
             {HUB_START_DEADLINE:?} instead of stopping with an error"
        );
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the hub started: {stderr}");
    let message = stderr.lines().last().unwrap_or_default();
    assert!(
        message.starts_with("error: data directory")
            && message.contains(&hub.data_dir.display().to_string())
            && message.contains("Read-only file system"),
        "unclear message: {stderr}"
    );
    // So do the management commands.
    let output = hub.cli(&["user", "list"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("is not writable") && stderr.contains("Read-only file system"),
        "unclear message: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_and_the_realtime_path_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = HubProcess::new(dir.path()).await;
    let mount = Tmpfs::mount(&hub.data_dir, "4m");
    let admin = ["user", "add", "--email", ADMIN, "--name", "Admin"];
    hub.manage(&[&admin[..], &["--password", PASSWORD, "--admin"]].concat())
        .await;
    let id = "MC-4001-DUR";
    let password = password_of(&hub.manage(&["module", "add", id, "--name", "Full"]).await);
    hub.start().await;
    let url = hub.url();
    let cookie = login(&url, ADMIN, PASSWORD).await.expect("admin logs in");
    let mut dashboard = Dashboard::connect(&url, Some(&cookie), "modules")
        .await
        .expect("dashboard connects");
    let module = MqttModule::connect(hub.mqtt, id, &password)
        .await
        .expect("module connects");
    module.hello(60_000).await;
    dashboard.expect("rt_module_online", about(id)).await;

    let filler = mount.fill();

    // API writes answer a clear 507 (the first write that needs new space; a few may still
    // fit in pages SQLite already holds).
    let mut refused = None;
    for i in 0..200 {
        let body = json!({"id": format!("MC-{:04}-FUL", 5000 + i), "name": "x".repeat(100)});
        let (status, body) = call(&url, &cookie, "POST", "/api/modules", Some(body))
            .await
            .expect("the hub answers");
        if status != 201 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("a write on a full disk was refused");
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");

    // The realtime path keeps serving: telemetry reaches the dashboard, reads work.
    for seq in 1..=3u32 {
        module
            .telemetry(seq, json!({"temperature": f64::from(seq)}))
            .await;
        let update = dashboard.expect("rt_telemetry_updated", about(id)).await;
        assert_eq!(update["rev"], seq, "{update}");
    }
    let (status, _) = call(&url, &cookie, "GET", "/api/modules", None)
        .await
        .expect("snapshot");
    assert_eq!(status, 200);
    // The state snapshots that could not be saved are counted.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, text) = metrics_text(&url).await;
        if text.contains(r#"mc_store_errors_total{kind="disk_full"}"#) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no mc_store_errors_total{{kind=\"disk_full\"}}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        module.telemetry(100, json!({"temperature": 100.0})).await;
    }

    // Space again: writes work again, nothing to restart.
    std::fs::remove_file(filler).expect("filler removed");
    let body = json!({"id": "MC-6000-FUL", "name": "After"});
    let (status, body) = call(&url, &cookie, "POST", "/api/modules", Some(body))
        .await
        .expect("the hub answers");
    assert_eq!(status, 201, "{body}");
    dashboard.close().await;
    module.disconnect().await;
    hub.kill().await;
    let check = hub.cli(&["db", "check"]).await;
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}
