//! The dashboard pages in headless Chromium against the real hub, run as a separate process
//! (the `hub` binary, so it can be killed with SIGKILL and restarted on the same ports and data
//! directory), with firmware-sim modules sending over MQTT and a TCP proxy between the browser
//! and the hub that can cut the network.
//!
//! Each test starts a [`World`] (hub process, users, modules, proxy, and a small HTTP control
//! server) and runs one scenario script from `tests/js/browser/` with Node + playwright-core.
//! The script drives the browser and the world (kill/restart the hub, cut/heal the network,
//! disconnect modules) through the control server, and prints one JSON line: `{"kind":"ok",...}`
//! or `{"kind":"fail","error":...}`. Progress goes to stderr, shown when a test fails.
//!
//! Prerequisites (installed by `scripts/test`): Node 20+, `npm ci --prefix tests/js`, Chromium at
//! `/usr/bin/chromium` (or `CHROMIUM_PATH`). Missing ones fail the tests, never skip them.
//! `MC_HUB_BIN` may name a prebuilt `hub` binary; otherwise the tests build it with cargo (once
//! per run) so it always embeds the current pages.
//!
//! Screenshots for the docs: `MC_SCREENSHOTS_DIR=$PWD/docs/screenshots cargo test -p mc-e2e
//! --test it browser::screenshots` (without the variable the test writes them to a temp dir).

mod proxy;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use firmware_sim::{Fault, ModuleCredentials, SimConfig, SimModule};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    process::Command,
    sync::Mutex,
};
use tokio_util::sync::CancellationToken;

use self::proxy::{CutMode, Proxy};
use crate::process::HubProcess;

/// Every user's password in these tests.
const PASSWORD: &str = "browser-test-pw";
/// A whole scenario, browser start included, on a loaded 2-core machine.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(300);

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Fails loudly when Node packages or Chromium are missing; returns Chromium's path.
fn require_browser() -> String {
    let modules = js_dir().join("node_modules");
    assert!(
        modules.join("playwright-core").exists(),
        "JS test dependencies missing in {}: run `npm ci --prefix tests/js` (scripts/test does)",
        modules.display()
    );
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium missing at {chromium}: `apt-get install chromium` (scripts/test does)"
    );
    chromium
}

/// Everything a scenario runs against.
struct World {
    hub: Mutex<HubProcess>,
    proxy: Proxy,
    modules: HashMap<String, SimModule>,
    stop_modules: CancellationToken,
    /// Session cookies of the test's own API logins, per email.
    cookies: Mutex<HashMap<String, String>>,
    hub_url: String,
    dir: tempfile::TempDir,
}

/// Users (email, admin) and modules (id, owner email) of a world; `strangers` are modules the
/// hub does not know that try to connect anyway (the admin page's unclaimed modules).
struct Setup<'a> {
    users: &'a [(&'a str, bool)],
    modules: &'a [(&'a str, &'a str)],
    strangers: &'a [&'a str],
}

impl World {
    async fn start(setup: Setup<'_>) -> Arc<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut hub = HubProcess::new(dir.path()).await;
        for (email, admin) in setup.users {
            let name = email.split('@').next().unwrap_or(email);
            let mut args = vec![
                "user",
                "add",
                "--email",
                email,
                "--name",
                name,
                "--password",
                PASSWORD,
            ];
            if *admin {
                args.push("--admin");
            }
            hub.manage(&args).await;
        }
        let mut credentials = Vec::new();
        for (id, owner) in setup.modules {
            let name = format!("Station {}", &id[3..7]);
            let out = hub
                .manage(&[
                    "module", "add", id, "--name", &name, "--type", "weather", "--owner", owner,
                ])
                .await;
            let token = out.lines().last().expect("token printed").trim().to_owned();
            credentials.push(ModuleCredentials::new(
                id.parse().expect("module id"),
                token,
            ));
        }
        for id in setup.strangers {
            credentials.push(ModuleCredentials::new(
                id.parse().expect("module id"),
                "not-registered",
            ));
        }
        hub.start().await;
        let proxy = Proxy::start(hub.http).await.expect("proxy starts");
        let stop_modules = CancellationToken::new();
        let sim = firmware_sim::start(
            SimConfig {
                broker: hub.mqtt.to_string(),
                heartbeat: Duration::from_secs(1),
                telemetry: Duration::from_millis(400),
                keep_alive: Duration::from_secs(5),
                drop_pause: Duration::from_millis(500),
                ..SimConfig::default()
            },
            credentials,
            stop_modules.clone(),
        );
        let modules = sim
            .modules()
            .iter()
            .map(|m| (m.id().to_string(), m.clone()))
            .collect();
        let hub_url = hub.url();
        Arc::new(Self {
            hub: Mutex::new(hub),
            proxy,
            modules,
            stop_modules,
            cookies: Mutex::new(HashMap::new()),
            hub_url,
            dir,
        })
    }

    /// The page's URL: through the proxy.
    fn page_url(&self) -> String {
        format!("http://{}", self.proxy.addr)
    }

    /// `GET path` on the hub as `email` (the test's own session, straight to the hub).
    async fn api_get(&self, email: &str, path: &str) -> Result<(u16, Value), String> {
        for _ in 0..2 {
            let cookie = self.cookie(email, false).await?;
            let response = reqwest::Client::new()
                .get(format!("{}{path}", self.hub_url))
                .header("cookie", &cookie)
                .send()
                .await;
            let response = response.map_err(|e| format!("GET {path}: {e}"))?;
            let status = response.status().as_u16();
            if status == 401 {
                self.cookies.lock().await.remove(email);
                continue;
            }
            return Ok((status, response.json().await.unwrap_or(Value::Null)));
        }
        Ok((401, Value::Null))
    }

    /// The test's session cookie for `email`; `fresh` logs in again (a new login event).
    async fn cookie(&self, email: &str, fresh: bool) -> Result<String, String> {
        let mut cookies = self.cookies.lock().await;
        if !fresh && let Some(c) = cookies.get(email) {
            return Ok(c.clone());
        }
        let cookie = mc_e2e::login(&self.hub_url, email, PASSWORD)
            .await
            .map_err(|status| format!("API login of {email}: {status}"))?;
        cookies.insert(email.to_owned(), cookie.clone());
        Ok(cookie)
    }

    fn module(&self, id: &str) -> Result<&SimModule, String> {
        self.modules
            .get(id)
            .ok_or_else(|| format!("no module {id}"))
    }

    /// One control request (`method path`) from the scenario script.
    async fn control(&self, method: &str, path: &str) -> Result<Value, String> {
        let path = percent_decode(path);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, parts.as_slice()) {
            ("POST", ["hub", "kill"]) => {
                self.hub.lock().await.kill().await;
                Ok(json!({"killed": true}))
            }
            ("POST", ["hub", "start"]) => {
                self.hub.lock().await.start().await;
                Ok(json!({"started": true}))
            }
            ("POST", ["net", "cut", mode]) => {
                let mode = match *mode {
                    "refuse" => CutMode::Refuse,
                    "blackhole" => CutMode::Blackhole,
                    other => return Err(format!("unknown cut mode {other}")),
                };
                self.proxy.cut(mode);
                Ok(json!({"cuts": self.proxy.cuts()}))
            }
            ("POST", ["net", "heal"]) => {
                self.proxy.heal();
                Ok(json!({"healed": true}))
            }
            ("POST", ["module", id, action]) => {
                let fault = match *action {
                    "disconnect" => Fault::Disconnect,
                    "reconnect" => Fault::Reconnect,
                    "drop" => Fault::DropConnection,
                    other => return Err(format!("unknown module action {other}")),
                };
                self.module(id)?.inject(fault);
                Ok(json!({"module": id, "action": action}))
            }
            ("POST", ["modules", "disconnect"]) => {
                for m in self.modules.values() {
                    m.inject(Fault::Disconnect);
                }
                Ok(json!({"modules": self.modules.len()}))
            }
            ("POST", ["modules", "reconnect"]) => {
                for m in self.modules.values() {
                    m.inject(Fault::Reconnect);
                }
                Ok(json!({"modules": self.modules.len()}))
            }
            ("POST", ["login", email]) => {
                self.cookie(email, true).await?;
                Ok(json!({"loggedIn": email}))
            }
            ("GET", ["as", email, rest @ ..]) => {
                let (status, body) = self.api_get(email, &format!("/{}", rest.join("/"))).await?;
                Ok(json!({"status": status, "body": body}))
            }
            _ => Err(format!("unknown control request {method} {path}")),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_modules.cancel();
    }
}

/// `%XX` escapes decoded (scripts encode the emails in control paths).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A minimal HTTP/1.1 server for the scenario scripts: one request per connection, no body.
async fn control_server(world: Arc<World>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("control bind");
    let addr = listener.local_addr().expect("control addr");
    let weak = Arc::downgrade(&world);
    drop(world);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let Some(world) = weak.upgrade() else { return };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let (status, body) = match world.control(method, path).await {
                    Ok(v) => ("200 OK", v),
                    Err(e) => ("400 Bad Request", json!({"error": e})),
                };
                let body = body.to_string();
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Kills a process group (SIGKILL) when dropped: the scenario's node and the Chromium it
/// started, whatever happens to the test (timeout, panic, success with a stray browser).
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // `kill -KILL -- -PGID`: every process of the group.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `tests/js/browser/<script>.mjs` against `world` with `spec` (JSON); returns its result
/// line, failing the test (with the script's progress and the hub's log) unless it is `ok`.
async fn run_scenario(world: &Arc<World>, script: &str, spec: Value) -> Value {
    let chromium = require_browser();
    let control = control_server(Arc::clone(world)).await;
    let mut spec = spec;
    spec["url"] = json!(world.page_url());
    spec["hubUrl"] = json!(world.hub_url);
    spec["control"] = json!(format!("http://{control}"));
    spec["password"] = json!(PASSWORD);
    let mut child = Command::new("node")
        .arg(js_dir().join("browser").join(format!("{script}.mjs")))
        .arg(spec.to_string())
        .env("CHROMIUM_PATH", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that Chromium (node's child) is killed with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (install Node.js 20+)");
    let mut group = ProcessGroup(child.id());
    let mut stdout = child.stdout.take().expect("stdout piped");
    let stderr = child.stderr.take().expect("stderr piped");
    // The progress log, kept line by line so a timeout can still show it.
    let progress_log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let progress = tokio::spawn({
        let progress_log = Arc::clone(&progress_log);
        async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                progress_log.lock().expect("progress log").push(line);
            }
        }
    });
    let run = async {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out).await;
        let status = child.wait().await;
        (out, status)
    };
    let outcome = tokio::time::timeout(SCENARIO_DEADLINE, run).await;
    let progress_text = || {
        let lines = progress_log.lock().expect("progress log");
        lines[lines.len().saturating_sub(80)..].join("\n")
    };
    let Ok((out, status)) = outcome else {
        // Node and its Chromium go now, not whenever the test's runtime is dropped.
        group.kill();
        // What the dying processes still wrote, briefly.
        let _ = tokio::time::timeout(Duration::from_secs(2), progress).await;
        let log = world.hub.lock().await.log_tail();
        panic!(
            "scenario {script} did not finish within {SCENARIO_DEADLINE:?}\n--- progress ---\n{}\n--- hub log ---\n{log}",
            progress_text()
        );
    };
    // A Chromium left behind by the script (it exited) must not outlive the test either.
    group.kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), progress).await;
    let result = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    if result["kind"] != "ok" || !status.as_ref().is_ok_and(|s| s.success()) {
        let log = world.hub.lock().await.log_tail();
        panic!(
            "scenario {script} failed ({status:?}): {result}\n--- progress ---\n{}\n--- hub log ---\n{log}",
            progress_text()
        );
    }
    eprintln!("scenario {script}: {result}");
    result
}

/// The hub's modules for `email`, as `{ id: { online, readings } }`.
async fn hub_modules(world: &World, email: &str) -> Value {
    let (status, body) = world
        .api_get(email, "/api/modules")
        .await
        .expect("GET /api/modules");
    assert_eq!(status, 200, "GET /api/modules as {email}: {body}");
    let mut out = serde_json::Map::new();
    for m in body["modules"].as_array().into_iter().flatten() {
        if let Some(id) = m["moduleId"].as_str() {
            out.insert(
                id.to_owned(),
                json!({"online": m["online"], "readings": m["readings"]}),
            );
        }
    }
    Value::Object(out)
}

/// Asserts the page's model (`mc_dashboard.state().modules`, as returned by a script) shows
/// exactly `hub` (from [`hub_modules`]): same modules, online flags and readings.
fn assert_same_state(page: &Value, hub: &Value) {
    let page = page.as_object().expect("page modules object");
    let hub = hub.as_object().expect("hub modules object");
    let mut page_ids: Vec<&String> = page.keys().collect();
    let mut hub_ids: Vec<&String> = hub.keys().collect();
    page_ids.sort();
    hub_ids.sort();
    assert_eq!(page_ids, hub_ids, "the page shows the hub's modules");
    for (id, h) in hub {
        let p = &page[id];
        assert_eq!(p["online"], h["online"], "{id}: online");
        let (pr, hr) = (&p["readings"], &h["readings"]);
        let hr = hr.as_object().expect("hub readings");
        assert_eq!(
            pr.as_object().map(|o| o.len()),
            Some(hr.len()),
            "{id}: readings {pr} vs {hr:?}"
        );
        for (name, value) in hr {
            let (a, b) = (pr[name].as_f64(), value.as_f64());
            assert!(
                matches!((a, b), (Some(a), Some(b)) if (a - b).abs() <= 1e-6 * b.abs().max(1.0)),
                "{id}.{name}: page {:?} vs hub {value}",
                pr[name]
            );
        }
    }
}

const ADA: &str = "ada@x.io";
const BOB: &str = "bob@x.io";
const ADMIN: &str = "admin@x.io";
const ADA_MODULES: [&str; 3] = ["MC-1101-ADA", "MC-1102-ADA", "MC-1103-ADA"];
const BOB_MODULES: [&str; 2] = ["MC-2201-BOB", "MC-2202-BOB"];

fn two_users() -> Setup<'static> {
    Setup {
        users: &[(ADMIN, true), (ADA, false), (BOB, false)],
        modules: &[
            (ADA_MODULES[0], ADA),
            (ADA_MODULES[1], ADA),
            (ADA_MODULES[2], ADA),
            (BOB_MODULES[0], BOB),
            (BOB_MODULES[1], BOB),
        ],
        strangers: &[],
    }
}

/// (a) Login (a wrong password first), the user's modules come online, readings change live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_modules_online_and_live_readings() {
    let world = World::start(two_users()).await;
    run_scenario(
        &world,
        "login_live",
        json!({"email": ADA, "modules": ADA_MODULES}),
    )
    .await;
}

/// (b) An admin on /admin sees another user's login as a notification and in the users list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_admin_sees_user_login() {
    let world = World::start(two_users()).await;
    run_scenario(
        &world,
        "admin_login_notice",
        json!({"email": ADMIN, "other": BOB}),
    )
    .await;
}

/// (c) The hub is killed with SIGKILL and restarted mid-stream: the page reconnects by itself,
/// resynchronises with a snapshot and ends up showing exactly the hub's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_survives_hub_kill_and_restart() {
    let world = World::start(two_users()).await;
    let result = run_scenario(
        &world,
        "hub_restart",
        json!({"email": ADA, "modules": ADA_MODULES}),
    )
    .await;
    assert_same_state(&result["state"]["modules"], &hub_modules(&world, ADA).await);
}

/// (d) The network between browser and hub is cut for a few seconds while modules keep sending
/// and one goes offline: the page resumes (missed events replayed, no snapshot) and ends up
/// showing exactly the hub's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_resumes_after_network_cut() {
    let world = World::start(two_users()).await;
    let result = run_scenario(
        &world,
        "network_cut",
        json!({"email": ADA, "modules": ADA_MODULES, "goesOffline": ADA_MODULES[2]}),
    )
    .await;
    assert_same_state(&result["state"]["modules"], &hub_modules(&world, ADA).await);
}

/// (e) User A's page never shows user B's modules, while both users' modules send, across a
/// network cut with replay and a forced reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_never_shows_another_users_modules() {
    let world = World::start(two_users()).await;
    let result = run_scenario(
        &world,
        "isolation",
        json!({"email": BOB, "modules": BOB_MODULES, "foreign": ADA_MODULES}),
    )
    .await;
    assert_same_state(&result["state"]["modules"], &hub_modules(&world, BOB).await);
}

/// (f) A user adds a module (the MQTT password shown once, then cleared from the page), renames
/// it, finds it with the search and the offline filter, and removes it; the hub's
/// `GET /api/modules` agrees after each step. Then `?lang=fr` shows the page in French.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_module_add_rename_remove_search() {
    const NEW: &str = "MC-4242-STN";
    let world = World::start(two_users()).await;
    run_scenario(
        &world,
        "module_crud",
        json!({
            "email": ADA,
            "modules": ADA_MODULES,
            "newId": NEW,
            "newName": "Roof station",
            "newType": "weather",
            "renamed": "Garden station",
            "frAddModule": "Ajouter un module",
        }),
    )
    .await;
    let hub = hub_modules(&world, ADA).await;
    assert!(hub.get(NEW).is_none(), "{NEW} removed: {hub}");
}

/// More modules than one screen: the first screen of cards is built before the first frame and
/// the rest after it; a search typed meanwhile covers every module, and the full grid ends up
/// in name order with every card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_many_modules_build_after_the_first_screen() {
    let ids: Vec<String> = (0..60).map(|i| format!("MC-{}-STN", 4001 + i)).collect();
    let modules: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), ADA)).collect();
    let world = World::start(Setup {
        users: &[(ADA, false)],
        modules: &modules,
        strangers: &[],
    })
    .await;
    run_scenario(
        &world,
        "many_modules",
        json!({"email": ADA, "modules": ids, "query": "Station 4057", "matching": ["MC-4057-STN"]}),
    )
    .await;
}

/// The modules and admin pages with several live modules and some chart history, as PNGs in
/// `MC_SCREENSHOTS_DIR` (the docs keep them in `docs/screenshots/`), else in a temp dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_screenshots() {
    let mut modules = Vec::new();
    let ids: Vec<String> = (0..6).map(|i| format!("MC-{}-STN", 3101 + i)).collect();
    for (i, id) in ids.iter().enumerate() {
        modules.push((id.as_str(), if i < 4 { ADA } else { BOB }));
    }
    let world = World::start(Setup {
        users: &[(ADMIN, true), (ADA, false), (BOB, false)],
        modules: &modules,
        strangers: &["MC-9001-NEW"],
    })
    .await;
    let out_dir = std::env::var_os("MC_SCREENSHOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| world.dir.path().join("screenshots"));
    std::fs::create_dir_all(&out_dir).expect("screenshot dir");
    run_scenario(
        &world,
        "screenshots",
        json!({"email": ADMIN, "other": ADA, "modules": ids, "outDir": out_dir, "offline": ids[5]}),
    )
    .await;
    for name in ["modules.png", "admin.png"] {
        let size = std::fs::metadata(out_dir.join(name)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{name} written ({size} bytes)");
    }
}
