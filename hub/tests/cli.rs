//! The `hub` binary's management commands work against the data directory of a running hub.

use std::{net::SocketAddr, process::Command, time::Duration};

use mc_hub::{Config, Listeners};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet};
use tokio_util::sync::CancellationToken;

fn hub_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(args)
        .output()
        .expect("hub binary runs")
}

/// Runs the binary with `input` on stdin.
fn hub_cli_stdin(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hub binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("hub binary finishes")
}

/// Runs a command that must succeed; returns its stdout.
/// The MQTT token `hub module add` printed (its last line), checking it succeeded.
fn module_token(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let token = stdout.lines().last().expect("token line").trim().to_owned();
    assert_eq!(token.len(), 48, "{stdout}");
    token
}

fn ok(args: &[&str]) -> String {
    let out = hub_cli(args);
    assert!(
        out.status.success(),
        "hub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs a command with `--json` that must succeed; returns the one JSON document it printed.
fn ok_json(args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = ok(&args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("hub {args:?}: {e}: {stdout}"))
}

/// Runs a command that must fail with a one-line message on stderr containing `message`.
fn fails(args: &[&str], message: &str) {
    let out = hub_cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "hub {args:?}: {stderr}");
    assert!(
        stderr.contains(message) && !stderr.contains("panicked"),
        "hub {args:?}: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_added_with_the_cli_while_the_hub_runs_can_connect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let config = Config {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data.clone(),
        ..Config::default()
    };
    let listeners = Listeners::bind(&config).await.expect("bind");
    let shutdown = CancellationToken::new();
    let hub = mc_hub::start(config, listeners, shutdown.clone())
        .await
        .expect("hub starts");
    let data = data.to_str().expect("utf-8 path");

    let user = hub_cli(&[
        "user",
        "add",
        "--email",
        "ada@x.io",
        "--name",
        "Ada",
        "--password",
        "pw",
        "--data-dir",
        data,
    ]);
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
    let module = hub_cli(&[
        "module",
        "add",
        "MC-1001-STN",
        "--name",
        "Roof",
        "--owner",
        "ada@x.io",
        "--heartbeat-timeout",
        "1s",
        "--data-dir",
        data,
    ]);
    let token = module_token(&module);

    let bad = hub_cli(&["module", "add", "bad/id", "--name", "x", "--data-dir", data]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("module id"));
    let dup = hub_cli(&[
        "module",
        "add",
        "MC-1001-STN",
        "--name",
        "x",
        "--data-dir",
        data,
    ]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    let mut options = MqttOptions::new("MC-1001-STN", "127.0.0.1", hub.mqtt_addr.port());
    options.set_credentials("MC-1001-STN", token);
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Some(ack.code),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .expect("CONNACK within deadline");
    assert_eq!(code, Some(ConnectReturnCode::Success));
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });

    // The module announces a 60 s interval (3 min timeout by default), but its registry entry
    // says 1 s: the module's own setting wins.
    client
        .publish(
            "mc/MC-1001-STN/hello",
            rumqttc::QoS::AtLeastOnce,
            false,
            r#"{"fw":"1","heartbeatMs":60000}"#,
        )
        .await
        .expect("publish");
    let id: mc_protocol::ModuleId = "MC-1001-STN".parse().expect("id");
    let online_at = wait_for(&hub, &id, true).await;
    let offline_at = wait_for(&hub, &id, false).await;
    let silence = offline_at - online_at;
    assert!(
        silence < Duration::from_secs(10),
        "went offline after {silence:?}"
    );
    shutdown.cancel();
}

/// Waits until the tracker shows `id` online (or offline); returns when.
async fn wait_for(
    hub: &mc_hub::RunningHub,
    id: &mc_protocol::ModuleId,
    online: bool,
) -> tokio::time::Instant {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if hub
            .tracker
            .module(id)
            .await
            .is_some_and(|m| m.online == online)
        {
            return tokio::time::Instant::now();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "module never became online={online}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn startup_errors_name_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let in_use = hub_cli(&[
        "--http",
        &format!("127.0.0.1:{port}"),
        "--mqtt",
        "127.0.0.1:0",
        "--data-dir",
        data,
    ]);
    assert!(!in_use.status.success());
    let stderr = String::from_utf8_lossy(&in_use.stderr);
    assert!(
        stderr.contains(&format!("cannot listen for HTTP on 127.0.0.1:{port}")),
        "{stderr}"
    );

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let bad_dir = hub_cli(&[
        "--http",
        "127.0.0.1:0",
        "--mqtt",
        "127.0.0.1:0",
        "--data-dir",
        file.to_str().expect("path"),
    ]);
    assert!(!bad_dir.status.success());
    let stderr = String::from_utf8_lossy(&bad_dir.stderr);
    assert!(
        stderr.contains("data directory") && stderr.contains("not usable"),
        "{stderr}"
    );

    let config = dir.path().join("hub.toml");
    std::fs::write(&config, "htp = \"127.0.0.1:1\"\n").expect("write");
    let typo = hub_cli(&["--config", config.to_str().expect("path")]);
    assert!(!typo.status.success());
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(
        stderr.contains("invalid config file") && stderr.contains("htp"),
        "{stderr}"
    );
    drop(taken);
}

/// SIGTERM stops the hub cleanly: exit status 0, well before the deadline.
#[test]
fn sigterm_shuts_down_gracefully() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args([
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hub starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut first_line = String::new();
    BufReader::new(stdout)
        .read_line(&mut first_line)
        .expect("read stdout");
    assert!(first_line.contains("mc-hub listening"), "{first_line}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("hub did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// Every user and module command, in the order an operator would use them, checked through
/// the store the hub itself reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_module_commands_full_cycle() {
    use mc_hub::store::Store;
    let dir = tempfile::tempdir().expect("temp dir");
    let data_path = dir.path().join("data");
    let data = data_path.to_str().expect("utf-8 path");
    let d = ["--data-dir", data];

    // Reading commands do not create a database on a mistyped path.
    fails(&["user", "list", "--data-dir", data], "no hub database");
    assert!(!data_path.exists());

    let added = ok_json(&[
        "user",
        "add",
        "--email",
        "ada@x.io",
        "--name",
        "Ada",
        "--password",
        "pw1",
        d[0],
        d[1],
    ]);
    assert_eq!(added["ok"], true);
    assert_eq!(added["user"]["email"], "ada@x.io");
    let stdin_user = hub_cli_stdin(
        &[
            "user",
            "add",
            "--email",
            "bob@x.io",
            "--name",
            "Bob",
            "--admin",
            "--password-stdin",
            d[0],
            d[1],
        ],
        "from stdin\n",
    );
    assert!(
        stdin_user.status.success(),
        "{}",
        String::from_utf8_lossy(&stdin_user.stderr)
    );
    fails(
        &[
            "user",
            "add",
            "--email",
            "ADA@x.io",
            "--name",
            "A",
            "--password",
            "x",
            d[0],
            d[1],
        ],
        "already exists",
    );

    let users = ok_json(&["user", "list", d[0], d[1]]);
    let users = users.as_array().expect("array");
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["email"], "ada@x.io");
    assert_eq!(users[0]["name"], "Ada");
    assert_eq!(users[0]["isAdmin"], false);
    assert_eq!(users[0]["disabled"], false);
    assert_eq!(users[1]["isAdmin"], true);
    assert!(users[0]["id"].is_i64());
    let text = ok(&["user", "list", d[0], d[1]]);
    assert!(
        text.contains("ada@x.io") && text.contains("bob@x.io"),
        "{text}"
    );

    let store = Store::open(&data_path, Duration::from_secs(3600))
        .await
        .expect("store opens");
    assert!(
        store
            .verify_login("bob@x.io", "from stdin")
            .await
            .expect("query")
            .is_some()
    );

    // Emails are case-insensitive.
    ok(&[
        "user",
        "set-password",
        "--email",
        "Ada@X.io",
        "--password",
        "pw2",
        d[0],
        d[1],
    ]);
    assert!(
        store
            .verify_login("ada@x.io", "pw1")
            .await
            .expect("query")
            .is_none()
    );
    assert!(
        store
            .verify_login("ada@x.io", "pw2")
            .await
            .expect("query")
            .is_some()
    );
    let changed = hub_cli_stdin(
        &[
            "user",
            "set-password",
            "--email",
            "ada@x.io",
            "--password-stdin",
            "--json",
            d[0],
            d[1],
        ],
        "pw3\n",
    );
    assert!(changed.status.success());
    let changed: serde_json::Value = serde_json::from_slice(&changed.stdout).expect("json");
    assert_eq!(changed["ok"], true);
    assert!(
        store
            .verify_login("ada@x.io", "pw3")
            .await
            .expect("query")
            .is_some()
    );
    let empty = hub_cli_stdin(
        &[
            "user",
            "set-password",
            "--email",
            "ada@x.io",
            "--password-stdin",
            d[0],
            d[1],
        ],
        "\n",
    );
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("must not be empty"));

    // A session of the user ends when they are disabled.
    let ada = store
        .user_by_email("ada@x.io")
        .await
        .expect("query")
        .expect("ada");
    let session = store.create_session(ada.id).await.expect("session");
    let disabled = ok_json(&["user", "disable", "--email", "ada@x.io", d[0], d[1]]);
    assert_eq!(disabled["ok"], true);
    assert_eq!(disabled["user"]["disabled"], true);
    assert!(
        store
            .verify_login("ada@x.io", "pw3")
            .await
            .expect("query")
            .is_none()
    );
    assert!(
        store
            .session_user(session.as_str())
            .await
            .expect("query")
            .is_none()
    );
    let users = ok_json(&["user", "list", d[0], d[1]]);
    assert_eq!(users[0]["disabled"], true);

    // Modules.
    let module = ok_json(&[
        "module",
        "add",
        "MC-2001-STN",
        "--name",
        "Roof",
        "--type",
        "weather",
        "--owner",
        "ada@x.io",
        d[0],
        d[1],
    ]);
    assert_eq!(module["moduleId"], "MC-2001-STN");
    assert_eq!(module["name"], "Roof");
    assert_eq!(module["type"], "weather");
    assert_eq!(module["ownerId"], ada.id);
    let first = module["password"].as_str().expect("password").to_owned();
    let text = ok(&[
        "module",
        "add",
        "MC-2002-STN",
        "--name",
        "Yard",
        "--heartbeat-timeout",
        "30s",
        d[0],
        d[1],
    ]);
    let yard_token = text.lines().last().expect("token line").trim();
    assert_eq!(yard_token.len(), 48, "{text}");
    fails(
        &[
            "module",
            "add",
            "MC-2003-STN",
            "--name",
            "x",
            "--owner",
            "nobody@x.io",
            d[0],
            d[1],
        ],
        "no user with email nobody@x.io",
    );
    fails(
        &[
            "module",
            "add",
            "MC-2003-STN",
            "--name",
            "x",
            "--heartbeat-timeout",
            "1ms",
            d[0],
            d[1],
        ],
        "must be between",
    );

    let modules = ok_json(&["module", "list", d[0], d[1]]);
    let modules = modules.as_array().expect("array");
    assert_eq!(modules.len(), 2);
    assert_eq!(modules[0]["moduleId"], "MC-2001-STN");
    assert_eq!(modules[0]["heartbeatTimeoutMs"], serde_json::Value::Null);
    assert_eq!(modules[1]["moduleId"], "MC-2002-STN");
    assert_eq!(modules[1]["heartbeatTimeoutMs"], 30_000);
    let text = ok(&["module", "list", d[0], d[1]]);
    assert!(
        text.contains("MC-2001-STN") && text.contains("ada@x.io"),
        "{text}"
    );

    let id: mc_protocol::ModuleId = "MC-2001-STN".parse().expect("id");
    let rotated = ok_json(&["module", "rotate-token", "MC-2001-STN", d[0], d[1]]);
    assert_eq!(rotated["moduleId"], "MC-2001-STN");
    let second = rotated["password"].as_str().expect("password").to_owned();
    let record = store.module(&id).await.expect("query").expect("module");
    assert!(!record.token_matches(&first));
    assert!(record.token_matches(&second));
    let text = ok(&["module", "rotate-token", "MC-2001-STN", d[0], d[1]]);
    let third = text.lines().last().expect("token line").trim();
    let record = store.module(&id).await.expect("query").expect("module");
    assert!(!record.token_matches(&second));
    assert!(record.token_matches(third));

    // Deleting the owner leaves the module to admins.
    let deleted = ok_json(&["user", "delete", "--email", "ada@x.io", d[0], d[1]]);
    assert_eq!(deleted["ok"], true);
    assert!(
        store
            .user_by_email("ada@x.io")
            .await
            .expect("query")
            .is_none()
    );
    let record = store.module(&id).await.expect("query").expect("module");
    assert_eq!(record.owner_id, None);

    let removed = ok_json(&["module", "remove", "MC-2001-STN", d[0], d[1]]);
    assert_eq!(
        removed,
        serde_json::json!({"ok": true, "moduleId": "MC-2001-STN"})
    );
    assert!(store.module(&id).await.expect("query").is_none());
    assert!(ok(&["module", "remove", "MC-2002-STN", d[0], d[1]]).contains("MC-2002-STN"));

    // Unknown users and modules: a message and exit status 1, never a panic.
    for command in ["set-password", "disable", "delete"] {
        let mut args = vec!["user", command, "--email", "ada@x.io", d[0], d[1]];
        if command == "set-password" {
            args.extend(["--password", "x"]);
        }
        fails(&args, "no user with email ada@x.io");
    }
    fails(
        &["module", "remove", "MC-2001-STN", d[0], d[1]],
        "no module MC-2001-STN",
    );
    fails(
        &["module", "rotate-token", "MC-2001-STN", d[0], d[1]],
        "no module MC-2001-STN",
    );
    fails(
        &["module", "rotate-token", "bad/id", d[0], d[1]],
        "module id",
    );
    assert!(store.module(&id).await.expect("query").is_none());
}

/// `--log-format json`: one JSON object per line on stderr, and a rejected MQTT payload's line
/// carries the ingest span (`transport: mqtt`), so logs can be filtered by path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_ingest_span() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let module = hub_cli(&[
        "module",
        "add",
        "MC-1001-STN",
        "--name",
        "Roof",
        "--data-dir",
        data,
    ]);
    let token = module_token(&module);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args([
            "serve",
            "--data-dir",
            data,
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("hub starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut next_json = async || -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a log line within 20 s")
            .expect("read stderr")
            .expect("the hub is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let mqtt_addr: SocketAddr = loop {
        let line = next_json().await;
        if line["fields"]["message"] == "hub started" {
            let addr = line["fields"]["mqtt_addr"]
                .as_str()
                .expect("mqtt_addr field");
            break addr.parse().expect("an address");
        }
    };

    let mut options = MqttOptions::new("MC-1001-STN", mqtt_addr.ip().to_string(), mqtt_addr.port());
    options.set_credentials("MC-1001-STN", token);
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
        .publish(
            "mc/MC-1001-STN/telemetry",
            rumqttc::QoS::AtLeastOnce,
            false,
            "{garbage",
        )
        .await
        .expect("publish");

    let rejected = loop {
        let line = next_json().await;
        let message = line["fields"]["message"].as_str().unwrap_or_default();
        if message.starts_with("rejected payload") {
            break line;
        }
    };
    let spans = rejected["spans"].as_array().expect("spans");
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "ingest" && s["transport"] == "mqtt"),
        "{rejected}"
    );
    assert_eq!(rejected["level"], "WARN");
    assert_eq!(rejected["fields"]["module"], "MC-1001-STN");
    child.kill().await.expect("kill hub");
}
