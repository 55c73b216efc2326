//! The official JavaScript clients against the real hub: socket.io-client in Node, and the
//! dashboard page in headless Chromium. Prerequisites are installed by `scripts/test`; when they
//! are missing these tests fail with a message saying so (never skip).

use std::{path::PathBuf, process::Stdio, time::Duration};

use mc_e2e::{DEADLINE, start_hub};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

fn require_node_modules() {
    let dir = js_dir().join("node_modules");
    assert!(
        dir.join("socket.io-client").exists() && dir.join("playwright-core").exists(),
        "JS test dependencies missing in {}: run `npm ci --prefix tests/js` (scripts/test does)",
        dir.display()
    );
}

/// Runs `rt_client.mjs` and returns its JSON lines as they come.
async fn rt_client(
    args: &[&str],
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
) {
    require_node_modules();
    let mut child = Command::new("node")
        .arg(js_dir().join("rt_client.mjs"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (install Node.js 20+)");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    (child, rx)
}

async fn next_matching(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    tokio::time::timeout(DEADLINE, async {
        while let Some(v) = rx.recv().await {
            if pred(&v) {
                return v;
            }
        }
        panic!("rt_client exited early");
    })
    .await
    .expect("rt_client line within deadline")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_socket_io_client_receives_events_and_is_refused_without_cookie() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let pw = t.add_module("MC-JS-1", None).await;

    let (_refused_child, mut refused) = rt_client(&["--url", &t.url, "--no-login"]).await;
    let refusal = next_matching(&mut refused, |v| {
        v["kind"] == "connect_error" || v["kind"] == "connect"
    })
    .await;
    assert_eq!(refusal["kind"], "connect_error");
    assert_eq!(refusal["message"], "unauthorized");

    let (_child, mut events) = rt_client(&[
        "--url",
        &t.url,
        "--email",
        "admin@x.io",
        "--password",
        "password",
    ])
    .await;
    next_matching(&mut events, |v| {
        v["kind"] == "event" && v["event"] == "rt_session"
    })
    .await;
    let m = t.module("MC-JS-1", &pw).await;
    m.hello(5000).await;
    m.telemetry(1, json!({"temperature": 19.5})).await;
    let online = next_matching(&mut events, |v| v["event"] == "rt_module_online").await;
    assert_eq!(online["data"]["moduleId"], "MC-JS-1");
    let update = next_matching(&mut events, |v| v["event"] == "rt_telemetry_updated").await;
    assert_eq!(update["data"]["telemetry"], json!({"temperature": 19.5}));
    // The stream offset is the second argument (docs/REALTIME.md).
    let (online_at, update_at) = (online["offset"].as_u64(), update["offset"].as_u64());
    assert!(
        online_at.is_some() && online_at < update_at,
        "{online} {update}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_page_in_headless_chromium_shows_live_modules() {
    require_node_modules();
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium missing at {chromium}: `apt-get install chromium` (scripts/test does)"
    );
    let t = start_hub(|c| {
        c.demo.enabled = true;
        c.demo.modules = 4;
    })
    .await;
    let demo = t.hub.demo.clone().expect("demo info");
    let screenshot = t.dir.path().join("dashboard.png");
    let run = Command::new("node")
        .arg(js_dir().join("browser_smoke.mjs"))
        .args([
            "--url",
            &t.url,
            "--email",
            mc_hub::demo::ADMIN_EMAIL,
            "--password",
            &demo.admin_password,
        ])
        .args(["--module", demo.modules[0].as_str(), "--screenshot"])
        .arg(&screenshot)
        .env("CHROMIUM_PATH", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("browser test finishes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser smoke failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(r#""kind":"ok""#), "{stdout}");
    assert!(screenshot.exists());
}
