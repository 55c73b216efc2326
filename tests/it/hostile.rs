//! The hostile input catalogue (`docs/SECURITY.md`): what an attacker or a broken device throws
//! at each entry point. Every case gets a clear error or a counted rejection; the hub never
//! panics or stalls, and a bystander module's events keep reaching a dashboard **during** the
//! attack (`Victim::flows`). Cases already covered elsewhere are listed in SECURITY.md with
//! their tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mc_e2e::{DEADLINE, Dashboard, MqttModule, TestHub, eventually, start_hub};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::mqtt::connect_packet_raw;

const VICTIM: &str = "MC-9000-VIC";

/// A well-behaved module and an admin's dashboard watching it.
struct Victim {
    dash: Dashboard,
    module: MqttModule,
    rev: u64,
}

impl Victim {
    async fn new(t: &TestHub) -> Self {
        t.add_user("admin@x.io", true).await;
        let pw = t.add_module(VICTIM, None).await;
        let dash = t.dashboard("admin@x.io").await;
        let module = t.module(VICTIM, &pw).await;
        Self {
            dash,
            module,
            rev: 0,
        }
    }

    /// One more change of the victim reaches the dashboard (within the deadline): the hub
    /// still ingests, diffs and delivers for others.
    async fn flows(&mut self) {
        self.rev += 1;
        let rev = self.rev;
        self.module
            .telemetry(rev as u32, json!({"t": rev as f64}))
            .await;
        self.dash
            .expect("rt_telemetry_updated", |d| {
                d["moduleId"] == VICTIM && d["rev"] == rev
            })
            .await;
    }
}

/// Waits for the hub's rejection counters to reach `expected` (at least).
async fn rejected_at_least(t: &TestHub, expected: &[(&str, u64)]) {
    let m = t.hub.metrics.clone();
    let what = format!("rejections {expected:?}, have {:?}", m.rejections());
    eventually(&what, || {
        expected.iter().all(|(reason, n)| m.rejected(reason) >= *n)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_payloads_of_every_bad_shape_are_counted_and_others_flow() {
    let t = start_hub(|_| {}).await;
    let mut victim = Victim::new(&t).await;
    let pw = t.add_module("MC-9001-BAD", None).await;
    let bad = t.module("MC-9001-BAD", &pw).await;

    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("r{i}"), json!(i))).collect();
    let deep = format!(
        r#"{{"seq":1,"readings":{{"t":1}},"x":{}{}}}"#,
        "[".repeat(1500),
        "]".repeat(1500)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // wrong types
        ("telemetry", br#"{"seq":1,"readings":[1,2]}"#.to_vec()),
        ("telemetry", br#"{"seq":1,"readings":{"t":"hot"}}"#.to_vec()),
        ("telemetry", br#"{"seq":-1,"readings":{"t":1}}"#.to_vec()),
        (
            "telemetry",
            br#"{"seq":4294967296,"readings":{"t":1}}"#.to_vec(),
        ),
        ("telemetry", br#"{"seq":1.5,"readings":{"t":1}}"#.to_vec()),
        ("telemetry", b"null".to_vec()), // not JSON's first byte: read as native, version 'n'
        ("heartbeat", br#"{"seq":"x"}"#.to_vec()),
        ("hello", br#"{"fw":7,"heartbeatMs":"soon"}"#.to_vec()),
        // too many readings, a reading twice, names that are not names
        (
            "telemetry",
            json!({"seq": 1, "readings": many}).to_string().into_bytes(),
        ),
        (
            "telemetry",
            br#"{"seq":1,"readings":{"t":1,"t":2}}"#.to_vec(),
        ),
        ("telemetry", br#"{"seq":1,"readings":{"a/b":1}}"#.to_vec()),
        ("telemetry", br#"{"seq":1,"readings":{"+":1}}"#.to_vec()),
        // deep and unknown JSON
        ("telemetry", deep.into_bytes()),
        (
            "telemetry",
            br#"{"seq":1,"readings":{"t":1},"$where":{"a":1}}"#.to_vec(),
        ),
        // not UTF-8
        (
            "telemetry",
            b"{\"seq\":1,\"readings\":{\"\xff\xfe\":1}}".to_vec(),
        ),
        ("telemetry", vec![0xC0, 0xAF, 0xFF, 0x00]),
    ];
    for (kind, payload) in cases {
        bad.publish(kind, payload).await;
        victim.flows().await;
    }
    rejected_at_least(
        &t,
        &[
            ("malformed", 10),
            ("too_many_readings", 1),
            ("duplicate_reading", 1),
            ("invalid_reading_name", 2),
            ("unsupported_version", 2),
        ],
    )
    .await;

    // Replayed and old sequence numbers change nothing.
    bad.telemetry(10, json!({"x": 1.0})).await;
    bad.telemetry(10, json!({"x": 2.0})).await;
    bad.telemetry(9, json!({"x": 3.0})).await;
    victim.flows().await;
    rejected_at_least(&t, &[("duplicate_seq", 1), ("out_of_order_seq", 1)]).await;
    let module: mc_protocol::ModuleId = "MC-9001-BAD".parse().expect("id");
    let state = t.hub.tracker.module(&module).await.expect("known");
    assert_eq!(
        state.readings.get("x").copied(),
        Some(1.0),
        "the replays were dropped"
    );
    assert!(!t.hub.metrics.rejections().contains_key("panic"));
}

/// Reads what the hub answers a raw CONNECT: `Some(code)` for a CONNACK, `None` when it just
/// closed the connection.
async fn connack(tcp: &mut TcpStream) -> Option<u8> {
    let mut head = [0u8; 2];
    let read = tokio::time::timeout(DEADLINE, tcp.read_exact(&mut head))
        .await
        .expect("an answer or a close in time");
    read.ok()?;
    assert_eq!(head[0], 0x20, "CONNACK");
    let mut rest = vec![0u8; usize::from(head[1])];
    tcp.read_exact(&mut rest).await.ok()?;
    rest.get(1).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_injection_and_non_utf8_ids_are_refused() {
    let t = start_hub(|_| {}).await;
    let mut victim = Victim::new(&t).await;
    let pw = t.add_module("MC-9002-BAD", None).await;

    // Client ids with wildcards, separators or invalid UTF-8 never authenticate.
    for id in [
        &b"MC-+-1"[..],
        b"MC-#",
        b"mc/MC-9002-BAD/telemetry",
        b"MC-9002-BAD/../x",
        b"\xff\xfe\xfd",
        b"",
    ] {
        let mut tcp = TcpStream::connect(t.hub.mqtt_addr).await.expect("connect");
        tcp.write_all(&connect_packet_raw(4, id, pw.as_bytes(), 30))
            .await
            .expect("CONNECT");
        let code = connack(&mut tcp).await;
        assert!(
            code.is_none_or(|c| c != 0),
            "id {:?} accepted",
            String::from_utf8_lossy(id)
        );
        victim.flows().await;
    }

    // An authenticated module publishing outside its own topics is disconnected (raw
    // packets: client libraries refuse to publish on wildcards themselves).
    for topic in [
        "mc/+/telemetry",
        "mc/#",
        "mc/MC-9002-BAD/telemetry/#",
        "mc/MC-9000-VIC/telemetry",
        "mc/MC-9002-BAD/../MC-9000-VIC/telemetry",
    ] {
        let mut tcp = TcpStream::connect(t.hub.mqtt_addr).await.expect("connect");
        tcp.write_all(&connect_packet_raw(4, b"MC-9002-BAD", pw.as_bytes(), 30))
            .await
            .expect("CONNECT");
        assert_eq!(connack(&mut tcp).await, Some(0), "accepted");
        let payload = br#"{"seq":1,"readings":{"t":99}}"#;
        let mut publish = vec![
            0x30,
            u8::try_from(2 + topic.len() + payload.len()).expect("short"),
        ];
        publish.extend((topic.len() as u16).to_be_bytes());
        publish.extend(topic.as_bytes());
        publish.extend(payload);
        tcp.write_all(&publish).await.expect("PUBLISH");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(DEADLINE, tcp.read(&mut byte))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{topic}: connection closed");
        victim.flows().await;
    }
    rejected_at_least(&t, &[("acl_denied", 5)]).await;
    // The victim's readings were never touched by the attacker.
    let module: mc_protocol::ModuleId = VICTIM.parse().expect("id");
    let state = t.hub.tracker.module(&module).await.expect("victim known");
    assert_eq!(state.readings.get("t").copied(), Some(victim.rev as f32));
}

/// A raw Socket.IO v5 WebSocket, authenticated with `cookie` when given.
pub(crate) async fn raw_socket(
    t: &TestHub,
    cookie: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut request = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        t.hub.http_addr
    )
    .into_client_request()
    .expect("request");
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", cookie.parse().expect("cookie"));
    }
    let tcp = TcpStream::connect(t.hub.http_addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("WebSocket handshake");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_garbage_and_oversized_frames_close_only_that_socket() {
    let t = start_hub(|c| c.realtime.max_message = 16 * 1024).await;
    let mut victim = Victim::new(&t).await;
    let cookie = t.login("admin@x.io").await;
    let huge = format!("42[\"x\",\"{}\"]", "a".repeat(64 * 1024));
    // (frame, whether it is sent after a proper namespace connect, whether the hub closes the
    // socket). Every protocol error closes it; a second connect packet on a connected
    // namespace is ignored, whatever it holds.
    let garbage: Vec<(Message, bool, bool)> = vec![
        (Message::text("garbage"), true, true),
        (Message::text("4"), false, true),
        (Message::text("42["), true, true),
        (Message::text("42[\"rt_x\""), false, true),
        (Message::text("40{not json"), true, false),
        (Message::text("4{}"), false, true),
        (Message::text("9999999999999999999"), true, true),
        (Message::binary(vec![0xFF; 1024]), false, true),
        (Message::text(huge), true, true),
    ];
    for (message, connected, closes) in garbage {
        let shown = format!("{:.40}", message.to_string());
        let mut ws = raw_socket(&t, Some(&cookie)).await;
        if connected {
            ws.send(Message::text("40{\"page\":\"modules\"}"))
                .await
                .expect("connect packet");
            // Connected for sure (its session arrived) before the garbage goes.
            let greeted = tokio::time::timeout(DEADLINE, async {
                while let Some(Ok(m)) = ws.next().await {
                    if m.to_text()
                        .is_ok_and(|t| t.starts_with("42[\"rt_session\""))
                    {
                        return true;
                    }
                }
                false
            })
            .await;
            assert_eq!(greeted, Ok(true), "{shown}: rt_session");
        }
        let _ = ws.send(message).await;
        victim.flows().await;
        // Pings are answered, so only the garbage can close the socket (not the heartbeat).
        // Expected closed: the close must come, whatever events arrive before it (the hub may
        // still send while it reads a big frame). Expected open: it keeps getting the
        // bystander's changes, the second one made long after the garbage was read.
        if closes {
            let closed = tokio::time::timeout(DEADLINE, async {
                loop {
                    match ws.next().await {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                        Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                            let _ = ws.send(Message::text("3")).await;
                        }
                        Some(Ok(_)) => {}
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "{shown}: the hub closes the socket");
        } else {
            for round in 0..2 {
                if round > 0 {
                    victim.flows().await;
                }
                let rev = victim.rev;
                let got = tokio::time::timeout(DEADLINE, async {
                    loop {
                        match ws.next().await {
                            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return false,
                            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                                let _ = ws.send(Message::text("3")).await;
                            }
                            Some(Ok(Message::Text(t)))
                                if t.starts_with("42[\"rt_telemetry_updated\"")
                                    && t.contains(&format!("\"rev\":{rev},")) =>
                            {
                                return true;
                            }
                            Some(Ok(_)) => {}
                        }
                    }
                })
                .await;
                assert_eq!(got, Ok(true), "{shown}: still open, rev {rev} delivered");
            }
        }
    }
    // A client flooding events the hub has no handler for.
    let mut ws = raw_socket(&t, Some(&cookie)).await;
    ws.send(Message::text("40{\"page\":\"modules\"}"))
        .await
        .expect("connect packet");
    for i in 0..2000 {
        if ws
            .send(Message::text(format!("42[\"spam\",{i}]")))
            .await
            .is_err()
        {
            break;
        }
    }
    victim.flows().await;
    // Unknown engine.io sessions on polling are refused cleanly.
    let http = reqwest::Client::new();
    let res = http
        .post(format!(
            "{}/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA",
            t.url
        ))
        .body("garbage")
        .send()
        .await
        .expect("post");
    assert!(res.status().is_client_error(), "{}", res.status());
    victim.flows().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_of_every_bad_shape_get_clear_errors() {
    let t = start_hub(|_| {}).await;
    let mut victim = Victim::new(&t).await;
    let cookie = t.login("admin@x.io").await;
    // No connection reuse: the hub answers 413 before reading the whole body, then closes.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let json = "application/json";
    let cases: Vec<(&str, &str, Vec<u8>, &str, u16)> = vec![
        ("POST", "/api/modules", deep.into_bytes(), json, 400),
        (
            "POST",
            "/api/modules",
            vec![0xFF, 0xFE, b'{', b'}'],
            json,
            400,
        ),
        ("POST", "/api/modules", Vec::new(), json, 400),
        (
            "POST",
            "/api/modules",
            vec![b' '; 3 * 1024 * 1024],
            json,
            413,
        ),
        (
            "POST",
            "/api/auth/login",
            b"email=a&password=b".to_vec(),
            "application/x-www-form-urlencoded",
            400,
        ),
        (
            "PATCH",
            "/api/auth/me",
            br#"{"name":12}"#.to_vec(),
            json,
            400,
        ),
        (
            "POST",
            "/api/modules/%00/commands",
            br#"{"action":"reboot"}"#.to_vec(),
            json,
            404,
        ),
        (
            "POST",
            "/api/modules/MC-NOPE-1/commands",
            br#"{"action":{"reboot":{"x":1}}}"#.to_vec(),
            json,
            404,
        ),
    ];
    for (method, path, body, content_type, expected) in cases {
        let res = http
            .request(method.parse().expect("method"), format!("{}{path}", t.url))
            .header("cookie", &cookie)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status().as_u16(), expected, "{method} {path}");
        let answer: Value = res.json().await.expect("a JSON error");
        assert!(
            answer["error"]["message"].is_string(),
            "{method} {path}: {answer}"
        );
        victim.flows().await;
    }
    // Headers too big for the server.
    let res = http
        .get(format!("{}/api/modules", t.url))
        .header("cookie", &cookie)
        .header("x-big", "a".repeat(512 * 1024))
        .send()
        .await;
    assert_eq!(res.map(|r| r.status().as_u16()).ok(), Some(431));
    victim.flows().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_connections_without_login_cost_nothing_lasting() {
    let t = start_hub(|c| {
        c.http_max_connections = 100;
        c.http_header_timeout = Duration::from_secs(1);
        c.http_request_timeout = Duration::from_secs(1);
    })
    .await;
    let mut victim = Victim::new(&t).await;

    // 150 silent HTTP connections: those over the cap are closed at once, the others when
    // they fail to send a request head in time.
    let mut silent = Vec::new();
    for _ in 0..150 {
        silent.push(TcpStream::connect(t.hub.http_addr).await.expect("connect"));
    }
    victim.flows().await;
    rejected_at_least(&t, &[("http_connection_limit", 1)]).await;
    for mut tcp in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(DEADLINE, tcp.read(&mut byte))
            .await
            .expect("closed by the hub in time");
        assert!(matches!(read, Ok(0) | Err(_)), "the hub closed it");
    }
    // Served again once they are gone.
    let res = reqwest::get(format!("{}/healthz", t.url))
        .await
        .expect("healthz");
    assert_eq!(res.status(), 200);

    // A slow request head (one byte at a time, forever) is cut too.
    let mut slow = TcpStream::connect(t.hub.http_addr).await.expect("connect");
    let started = tokio::time::Instant::now();
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .cycle()
    {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if started.elapsed() > DEADLINE {
            break;
        }
    }
    assert!(closed, "a request head dribbled forever must be cut");
    victim.flows().await;

    // So is a body dribbled forever: 408, and the connection is freed.
    let mut slow = TcpStream::connect(t.hub.http_addr).await.expect("connect");
    slow.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100000\r\n\r\n{",
    )
    .await
    .expect("head");
    let mut answer = Vec::new();
    let started = tokio::time::Instant::now();
    loop {
        let mut buf = [0u8; 512];
        tokio::select! {
            read = slow.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if slow.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
        assert!(started.elapsed() < DEADLINE, "a dribbled body must be cut");
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    victim.flows().await;

    // 200 WebSocket handshakes without a session: refused, the victim flows meanwhile.
    let mut refused = 0;
    for _ in 0..200 {
        let mut ws = raw_socket(&t, None).await;
        let _ = ws.send(Message::text("40{\"page\":\"modules\"}")).await;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(DEADLINE, ws.next()).await {
            if m.to_text().is_ok_and(|s| s.starts_with("44")) {
                refused += 1;
                break;
            }
        }
    }
    assert_eq!(refused, 200, "each got a connect_error");
    victim.flows().await;

    // Silent MQTT connections: past the cap of connections authenticating, closed at once.
    let cap = mc_hub::broker::gateway::MAX_PENDING_HANDSHAKES;
    let mut mqtt = Vec::new();
    for _ in 0..cap + 20 {
        mqtt.push(TcpStream::connect(t.hub.mqtt_addr).await.expect("connect"));
    }
    rejected_at_least(&t, &[("mqtt_handshake_limit", 20)]).await;
    victim.flows().await;
    drop(mqtt);
    // A module can connect again once they are gone.
    let pw = t.add_module("MC-9003-NEW", None).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match MqttModule::connect(t.hub.mqtt_addr, "MC-9003-NEW", &pw).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never connected: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    victim.flows().await;
}
