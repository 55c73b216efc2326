//! The official JavaScript client against the real hub: socket.io-client in Node. (The pages in
//! headless Chromium: `browser.rs`.) Prerequisites are installed by `scripts/test`; when they are
//! missing these tests fail with a message saying so (never skip).

use std::{path::PathBuf, process::Stdio};

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
