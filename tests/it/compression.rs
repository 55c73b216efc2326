//! Compression: gzip/brotli on HTTP responses, permessage-deflate on the realtime WebSocket
//! (hub/src/web/ws_deflate.rs), and the Socket.IO traffic the HTTP compression must not touch.
//!
//! The WebSocket clients here speak Engine.IO v4 / Socket.IO v5 by hand over yawc, which can
//! offer permessage-deflate; the handshake is written out so the test sees the response headers.

use std::{io::Read, net::SocketAddr};

use mc_e2e::{DEADLINE, TestHub, about, start_hub};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use yawc::{Frame, OpCode, Options, Role, WebSocket};

/// A Socket.IO client over a raw (optionally compressed) WebSocket.
struct RawSocket {
    ws: WebSocket<TcpStream>,
    /// The `Sec-WebSocket-Extensions` the hub answered, if any.
    extensions: Option<String>,
}

/// The handshake response's status line and headers (lowercased names).
struct Handshake {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Handshake {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a WebSocket upgrade to `/socket.io/` and reads the response head byte by byte (so that
/// the first WebSocket frame, sent right after it, stays in the socket).
async fn upgrade(
    addr: SocketAddr,
    cookie: &str,
    extensions: Option<&str>,
    origin: Option<&str>,
) -> (TcpStream, Handshake) {
    upgrade_to(
        addr,
        "/socket.io/?EIO=4&transport=websocket",
        cookie,
        extensions,
        origin,
    )
    .await
}

/// [`upgrade`] to `path` (with its query).
async fn upgrade_to(
    addr: SocketAddr,
    path: &str,
    cookie: &str,
    extensions: Option<&str>,
    origin: Option<&str>,
) -> (TcpStream, Handshake) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {cookie}\r\n"
    );
    if let Some(e) = extensions {
        request.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    if let Some(o) = origin {
        request.push_str(&format!("Origin: {o}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .expect("send upgrade");
    let mut head = Vec::new();
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            let byte = tcp.read_u8().await.expect("response head");
            head.push(byte);
        }
    };
    tokio::time::timeout(DEADLINE, read_head)
        .await
        .expect("upgrade response within the deadline");
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (tcp, Handshake { status, headers })
}

/// The body of a refused upgrade: exactly `Content-Length` bytes (which the response must
/// carry), read within the deadline.
async fn refusal_body(tcp: &mut TcpStream, handshake: &Handshake) -> Vec<u8> {
    assert_eq!(handshake.header("transfer-encoding"), None);
    let length: usize = handshake
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length on the refusal");
    let mut body = vec![0; length];
    tokio::time::timeout(DEADLINE, tcp.read_exact(&mut body))
        .await
        .expect("the refusal's body within the deadline")
        .expect("the whole body");
    body
}

impl RawSocket {
    /// Connects as a `modules` dashboard; `offer` is the `Sec-WebSocket-Extensions` to send.
    async fn connect(t: &TestHub, cookie: &str, offer: Option<&str>) -> Self {
        let (tcp, handshake) = upgrade(t.hub.http_addr, cookie, offer, None).await;
        assert_eq!(handshake.status, 101, "upgrade refused");
        let extensions = handshake
            .header("sec-websocket-extensions")
            .map(str::to_owned);
        let options = if extensions.is_some() {
            Options::default().with_low_latency_compression()
        } else {
            Options::default()
        };
        let ws = WebSocket::from_stream_with_extensions(
            tcp,
            Role::Client,
            extensions.as_deref(),
            options,
        )
        .expect("client WebSocket");
        let mut socket = Self { ws, extensions };
        let open = socket.next_text().await;
        assert!(open.starts_with('0'), "Engine.IO open expected, got {open}");
        socket.send_text(r#"40{"page":"modules"}"#).await;
        socket.expect("rt_session", |_| true).await;
        socket
    }

    async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.ws
            .send(Frame::text(text.to_owned()))
            .await
            .expect("send");
    }

    /// The next text message, answering Engine.IO pings on the way.
    async fn next_text(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next_frame())
                .await
                .expect("a message within the deadline")
                .expect("socket open");
            match frame.opcode() {
                OpCode::Text if frame.as_str() == "2" => self.send_text("3").await,
                OpCode::Text => return frame.as_str().to_owned(),
                OpCode::Close => panic!("closed: {:?}", frame.close_code()),
                _ => {}
            }
        }
    }

    /// Waits for the Socket.IO event `name` whose payload satisfies `pred`.
    async fn expect(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let text = self.next_text().await;
            let Some(json) = text.strip_prefix("42") else {
                continue;
            };
            let Ok(Value::Array(mut items)) = serde_json::from_str::<Value>(json) else {
                continue;
            };
            if items.first().and_then(Value::as_str) == Some(name) && items.len() > 1 {
                let payload = items.swap_remove(1);
                if pred(&payload) {
                    return payload;
                }
            }
        }
    }

    /// Reads until the hub closes the connection; the close code it sent, if any.
    async fn closed(&mut self) -> Option<u16> {
        let wait = async {
            loop {
                match self.ws.next_frame().await {
                    Ok(f) if f.opcode() == OpCode::Close => return f.close_code().map(u16::from),
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("the hub closes the socket within the deadline")
    }
}

/// Both kinds of client get telemetry; the compressed one negotiated permessage-deflate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_and_plain_websocket_clients_both_receive_realtime_events() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let cookie = t.login("admin@x.io").await;
    let mut deflated = RawSocket::connect(
        &t,
        &cookie,
        Some("permessage-deflate; client_max_window_bits"),
    )
    .await;
    let mut plain = RawSocket::connect(&t, &cookie, None).await;
    let ext = deflated.extensions.clone().unwrap_or_default();
    assert!(ext.starts_with("permessage-deflate"), "negotiated: {ext}");
    assert_eq!(plain.extensions, None);
    // The library client (rust_socketio, no offer) as well.
    let mut library = t.dashboard("admin@x.io").await;

    let pw = t.add_module("MC-1001-STN", None).await;
    let m = t.module("MC-1001-STN", &pw).await;
    m.hello(5000).await;
    for seq in 1..=20u32 {
        m.telemetry(
            seq,
            json!({"temperature": 20.0 + f64::from(seq), "battery": 3.7}),
        )
        .await;
    }
    let last = |v: &Value| v["moduleId"] == "MC-1001-STN" && v["telemetry"]["temperature"] == 40.0;
    let a = deflated.expect("rt_telemetry_updated", last).await;
    let b = plain.expect("rt_telemetry_updated", last).await;
    assert_eq!(a, b);
    library.expect("rt_telemetry_updated", last).await;

    // A client message goes through the bridge too: an unknown event is ignored, the socket
    // stays up and keeps receiving.
    deflated.send_text(r#"42["no_such_event",{"x":1}]"#).await;
    m.telemetry(21, json!({"temperature": 1.0})).await;
    deflated
        .expect("rt_telemetry_updated", |v| {
            about("MC-1001-STN")(v) && v["telemetry"]["temperature"] == 1.0
        })
        .await;

    // A clean close from the client is a disconnect for Socket.IO.
    let before = t.hub.realtime.connected_clients();
    {
        use futures_util::SinkExt;
        deflated
            .ws
            .send(Frame::close(yawc::close::CloseCode::Normal, b""))
            .await
            .expect("send close");
    }
    assert_eq!(deflated.closed().await, Some(1000), "close echoed");
    mc_e2e::eventually("the closed socket is gone", || {
        t.hub.realtime.connected_clients() == before - 1
    })
    .await;
}

/// The deflate front keeps the rules of the direct path: no session, no socket; a foreign
/// Origin is refused before any upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_upgrades_are_authenticated_and_origin_checked() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let offer = Some("permessage-deflate");

    let (_, foreign) = upgrade(t.hub.http_addr, "", offer, Some("http://evil.example")).await;
    assert_eq!(foreign.status, 403);

    // Without a cookie the upgrade itself succeeds (Socket.IO authenticates in its CONNECT),
    // and the CONNECT is refused.
    let (tcp, handshake) = upgrade(t.hub.http_addr, "mc_session=nope", offer, None).await;
    assert_eq!(handshake.status, 101);
    let mut ws = WebSocket::from_stream_with_extensions(
        tcp,
        Role::Client,
        handshake.header("sec-websocket-extensions"),
        Options::default().with_low_latency_compression(),
    )
    .expect("client WebSocket");
    let mut refused = None;
    let wait = async {
        use futures_util::SinkExt;
        let open = ws.next_frame().await.expect("open");
        assert!(open.as_str().starts_with('0'), "{}", open.as_str());
        ws.send(Frame::text(r#"40{"page":"modules"}"#))
            .await
            .expect("send CONNECT");
        while let Ok(frame) = ws.next_frame().await {
            if frame.opcode() == OpCode::Text && frame.as_str().starts_with("44") {
                refused = Some(frame.as_str().to_owned());
                break;
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("an answer to CONNECT");
    assert!(refused.is_some(), "CONNECT without a session is refused");
    assert_eq!(t.hub.realtime.connected_clients(), 0);

    // An upgrade Engine.IO refuses over HTTP (no such Engine.IO session): the same status and
    // framing as on the direct path, and its body or none (never a cut one, which would make
    // hyper abort the response).
    let path = "/socket.io/?EIO=4&transport=websocket&sid=garbage";
    let (mut tcp, direct) = upgrade_to(t.hub.http_addr, path, "", None, None).await;
    assert_eq!(direct.status, 400);
    let direct_body = refusal_body(&mut tcp, &direct).await;
    assert!(
        String::from_utf8_lossy(&direct_body).contains("Session ID unknown"),
        "{}",
        String::from_utf8_lossy(&direct_body)
    );
    for _ in 0..5 {
        let (mut tcp, fronted) = upgrade_to(t.hub.http_addr, path, "", offer, None).await;
        assert_eq!(fronted.status, direct.status);
        assert_eq!(fronted.header("sec-websocket-extensions"), None);
        assert_eq!(
            fronted.header("content-type"),
            direct.header("content-type")
        );
        let body = refusal_body(&mut tcp, &fronted).await;
        assert!(
            body == direct_body || body.is_empty(),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// `[realtime] ws-deflate = false`: a client offering permessage-deflate gets the direct path,
/// with no extension negotiated, and still gets its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ws_deflate_off_offers_get_the_direct_path() {
    let t = start_hub(|c| c.realtime.ws_deflate = false).await;
    t.add_user("admin@x.io", true).await;
    let cookie = t.login("admin@x.io").await;
    let mut offering = RawSocket::connect(
        &t,
        &cookie,
        Some("permessage-deflate; client_max_window_bits"),
    )
    .await;
    assert_eq!(offering.extensions, None, "nothing negotiated");

    let pw = t.add_module("MC-1001-STN", None).await;
    let m = t.module("MC-1001-STN", &pw).await;
    m.hello(5000).await;
    m.telemetry(1, json!({"temperature": 21.5})).await;
    let event = offering
        .expect("rt_telemetry_updated", about("MC-1001-STN"))
        .await;
    assert_eq!(event["telemetry"]["temperature"], 21.5);
    // Messages from the client go through too (an unknown event is ignored).
    offering.send_text(r#"42["no_such_event",{"x":1}]"#).await;
    m.telemetry(2, json!({"temperature": 22.5})).await;
    offering
        .expect("rt_telemetry_updated", |v| {
            about("MC-1001-STN")(v) && v["telemetry"]["temperature"] == 22.5
        })
        .await;
}

/// A message that is small on the wire but inflates past `max_message` closes that socket with
/// 1009 before the memory is spent; other sockets carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deflate_bomb_closes_only_that_socket() {
    let t = start_hub(|c| c.realtime.max_message = 16 * 1024).await;
    t.add_user("admin@x.io", true).await;
    let cookie = t.login("admin@x.io").await;
    let offer = Some("permessage-deflate");
    let mut offender = RawSocket::connect(&t, &cookie, offer).await;
    let mut bystander = RawSocket::connect(&t, &cookie, offer).await;
    let mut plain = t.dashboard("admin@x.io").await;
    assert_eq!(t.hub.realtime.connected_clients(), 3);

    // 4 MiB of one character: a few kilobytes once deflated, 256 times the cap once inflated.
    let bomb = format!(r#"42["anything","{}"]"#, "x".repeat(4 << 20));
    {
        use futures_util::SinkExt;
        offender
            .ws
            .send(Frame::text(bomb))
            .await
            .expect("send the bomb");
    }
    assert_eq!(offender.closed().await, Some(1009), "closed for size");
    mc_e2e::eventually("the offender's socket is gone", || {
        t.hub.realtime.connected_clients() == 2
    })
    .await;

    let pw = t.add_module("MC-1001-STN", None).await;
    let m = t.module("MC-1001-STN", &pw).await;
    m.hello(5000).await;
    bystander
        .expect("rt_module_online", about("MC-1001-STN"))
        .await;
    plain.expect("rt_module_online", about("MC-1001-STN")).await;
}

/// GET `path` with `Accept-Encoding: encoding` (reqwest here does no decoding of its own).
async fn get_raw(
    url: &str,
    path: &str,
    cookie: &str,
    encoding: &str,
) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(format!("{url}{path}"))
        .header("cookie", cookie)
        .header("accept-encoding", encoding)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "{path}");
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (headers, body)
}

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("valid gzip"),
        "br" => brotli_decompressor::Decompressor::new(body, 4096)
            .read_to_end(&mut out)
            .expect("valid brotli"),
        other => panic!("unexpected encoding {other}"),
    };
    out
}

/// Static files and JSON API responses are compressed as asked, keep their Content-Type, and
/// decode to the identity bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_responses_are_compressed_per_accept_encoding() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let cookie = t.login("admin@x.io").await;
    for i in 0..50 {
        t.add_module(&format!("MC-{:04}-STN", 1000 + i), Some("admin@x.io"))
            .await;
    }
    for path in ["/style.css", "/api/modules"] {
        let (plain_headers, plain) = get_raw(&t.url, path, &cookie, "identity").await;
        assert!(plain_headers.get("content-encoding").is_none(), "{path}");
        assert!(plain.len() > 1000, "{path} is worth compressing");
        let content_type = plain_headers.get("content-type").cloned();
        assert!(content_type.is_some(), "{path}");
        for encoding in ["gzip", "br"] {
            let (headers, body) = get_raw(&t.url, path, &cookie, encoding).await;
            assert_eq!(
                headers
                    .get("content-encoding")
                    .and_then(|v| v.to_str().ok()),
                Some(encoding),
                "{path}"
            );
            assert_eq!(headers.get("content-type"), content_type.as_ref(), "{path}");
            assert!(
                headers
                    .get_all("vary")
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| v.contains("accept-encoding"))),
                "{path}: Vary"
            );
            assert!(
                body.len() < plain.len() / 2,
                "{path} {encoding}: {}",
                body.len()
            );
            if path == "/api/modules" {
                // JSON: the same document (compared parsed: live fields may reorder).
                let a: Value = serde_json::from_slice(&decode(encoding, &body)).expect("json");
                let b: Value = serde_json::from_slice(&plain).expect("json");
                assert_eq!(a, b);
            } else {
                assert_eq!(decode(encoding, &body), plain, "{path} {encoding}");
            }
        }
    }
}

/// Small answers go uncompressed (not worth it), even when the client asks for gzip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_responses_are_not_compressed() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let cookie = t.login("admin@x.io").await;
    for path in ["/api/auth/me", "/healthz"] {
        let (headers, body) = get_raw(&t.url, path, &cookie, "gzip, br").await;
        assert!(body.len() <= 512, "{path}: {} bytes", body.len());
        assert!(headers.get("content-encoding").is_none(), "{path}");
    }
}

/// An `Accept-Encoding` that bans the uncompressed form (`identity;q=0`, `*;q=0`) and accepts
/// nothing we have gets the normal status, uncompressed: never a 406 for a request that took
/// effect. Encodings it does accept are still used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_ban_never_turns_a_done_request_into_406() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let cookie = t.login("admin@x.io").await;
    let http = reqwest::Client::new();
    for (i, encoding) in [
        "identity;q=0",
        "*;q=0",
        "zstd, identity;q=0",
        "gzip;q=0, *;q=0",
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("MC-{}-STN", 2000 + i);
        let response = http
            .post(format!("{}/api/modules", t.url))
            .header("cookie", &cookie)
            .header("accept-encoding", encoding)
            .json(&json!({"id": id, "name": "Station"}))
            .send()
            .await
            .expect("request");
        assert!(
            response.status().is_success(),
            "{encoding}: {}",
            response.status()
        );
        assert!(
            response.headers().get("content-encoding").is_none(),
            "{encoding}"
        );
        let created: Value = response.json().await.expect("JSON answer");
        assert_eq!(
            created["module"]["moduleId"],
            id.as_str(),
            "{encoding}: {created}"
        );
        let (status, list) = t.call(&cookie, "GET", "/api/modules", None).await;
        assert_eq!(status, 200);
        assert!(
            list.to_string().contains(&id),
            "{encoding}: {id} was created"
        );
    }
    // Big enough to compress: the accepted encoding is still chosen.
    for i in 0..20 {
        t.add_module(&format!("MC-{:04}-STN", 3000 + i), Some("admin@x.io"))
            .await;
    }
    let (headers, body) = get_raw(&t.url, "/api/modules", &cookie, "gzip, identity;q=0").await;
    assert_eq!(
        headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let _: Value = serde_json::from_slice(&decode("gzip", &body)).expect("JSON");
    let (headers, body) = get_raw(&t.url, "/api/modules", &cookie, "*;q=0").await;
    assert!(headers.get("content-encoding").is_none());
    let _: Value = serde_json::from_slice(&body).expect("plain JSON");
}

/// Socket.IO's polling transport is not compressed (and keeps working) even when the client
/// accepts gzip; the WebSocket upgrade without an offer is untouched too (tested above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_polling_is_not_compressed() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let cookie = t.login("admin@x.io").await;
    let (headers, body) = get_raw(
        &t.url,
        "/socket.io/?EIO=4&transport=polling",
        &cookie,
        "gzip, br",
    )
    .await;
    assert!(headers.get("content-encoding").is_none());
    let text = String::from_utf8(body).expect("plain text");
    assert!(text.starts_with("0{"), "Engine.IO open packet: {text}");
    // And the library client on polling connects.
    let _dash = mc_e2e::Dashboard::connect_with(
        &t.url,
        Some(&cookie),
        "modules",
        rust_socketio::TransportType::Polling,
    )
    .await
    .expect("polling dashboard connects");
}

/// Every way a bridged connection can end (the client closes, the client vanishes, the hub
/// closes) leaves no task behind, on either side of the bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridged_connections_leave_no_tasks_behind() {
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let cookie = t.login("admin@x.io").await;
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let baseline = alive();
    let offer = Some("permessage-deflate");

    let mut closing = RawSocket::connect(&t, &cookie, offer).await;
    let vanishing = RawSocket::connect(&t, &cookie, offer).await;
    let mut misbehaving = RawSocket::connect(&t, &cookie, offer).await;
    assert_eq!(t.hub.realtime.connected_clients(), 3);
    assert!(alive() > baseline);

    {
        use futures_util::SinkExt;
        closing
            .ws
            .send(Frame::close(yawc::close::CloseCode::Away, b"bye"))
            .await
            .expect("send close");
    }
    assert_eq!(closing.closed().await, Some(1001), "close echoed");
    drop(vanishing);
    // Not an Engine.IO packet: Engine.IO ends the session, and its close frame comes through.
    misbehaving.send_text("not a packet").await;
    assert!(
        misbehaving.closed().await.is_some(),
        "the hub's close frame"
    );

    mc_e2e::eventually("all sockets gone", || {
        t.hub.realtime.connected_clients() == 0
    })
    .await;
    mc_e2e::eventually("tasks back to the baseline", || alive() <= baseline).await;
}

/// socket.io-client in Node (its `ws` transport offers permessage-deflate) starting on polling
/// and upgrading: the upgrade goes through the deflate front with the polling session's `sid`,
/// the extension is negotiated, and events arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_upgrading_from_polling_negotiates_deflate() {
    use tokio::io::AsyncBufReadExt;

    let js = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        js.join("node_modules/socket.io-client").exists(),
        "JS test dependencies missing: run `npm ci --prefix tests/js` (scripts/test does)"
    );
    let t = start_hub(|_| {}).await;
    t.add_user("admin@x.io", true).await;
    let cookie = t.login("admin@x.io").await;
    // Evaluated as a module with `tests/js` as the working directory, which resolves the import.
    let script = r#"
        import { io } from "socket.io-client";
        const [url, cookie] = process.argv.slice(1);
        const out = (o) => console.log(JSON.stringify(o));
        const socket = io(url, {
          transports: ["polling", "websocket"],
          extraHeaders: { cookie },
          auth: { page: "modules" },
          reconnection: false,
        });
        socket.io.engine.on("upgrade", (transport) =>
          out({ kind: "upgrade", name: transport.name, extensions: transport.ws?.extensions ?? null }));
        socket.onAny((event, data) => out({ kind: "event", event, data }));
        socket.on("connect_error", (e) => out({ kind: "connect_error", message: String(e) }));
        process.stdin.on("end", () => process.exit(0));
        process.stdin.resume();
    "#;
    let mut child = tokio::process::Command::new("node")
        .args(["--input-type=module", "-e", script, &t.url, &cookie])
        .current_dir(&js)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (install Node.js 20+)");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut next = async |pred: &dyn Fn(&Value) -> bool| -> Value {
        let wait = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && pred(&v)
                {
                    return v;
                }
            }
            panic!("the node client exited");
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("a line from the node client within the deadline")
    };

    let upgrade = next(&|v| v["kind"] == "upgrade" || v["kind"] == "connect_error").await;
    assert_eq!(upgrade["name"], "websocket", "{upgrade}");
    let extensions = upgrade["extensions"].as_str().unwrap_or_default();
    assert!(extensions.contains("permessage-deflate"), "{upgrade}");

    let pw = t.add_module("MC-1001-STN", None).await;
    let m = t.module("MC-1001-STN", &pw).await;
    m.hello(5000).await;
    m.telemetry(1, json!({"temperature": 21.5})).await;
    let event =
        next(&|v| v["event"] == "rt_telemetry_updated" && v["data"]["moduleId"] == "MC-1001-STN")
            .await;
    assert_eq!(event["data"]["telemetry"]["temperature"], 21.5);
}
