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
    assert!(
        module.status.success(),
        "{}",
        String::from_utf8_lossy(&module.stderr)
    );
    let stdout = String::from_utf8_lossy(&module.stdout);
    let token = stdout.lines().last().expect("token line").trim().to_owned();
    assert_eq!(token.len(), 48, "{stdout}");

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
