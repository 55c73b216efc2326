//! Backpressure (`docs/REALTIME.md`, "Slow clients"): a dashboard that stops reading gets its
//! events coalesced (the latest value per module), never slows the others, and is
//! disconnected past a limit, after which it resumes. The slow dashboard is a raw WebSocket
//! Socket.IO client with a tiny receive buffer that simply stops reading its socket.

use std::{collections::BTreeMap, time::Duration};

use futures_util::{SinkExt, StreamExt};
use mc_e2e::{DEADLINE, MqttModule, TestHub, about, eventually, start_hub};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest},
};

const MODULE: &str = "MC-7001-BP";
const READINGS: usize = 24;

/// A Socket.IO v5 client over a raw WebSocket whose socket buffer is as small as the kernel
/// allows: when the test stops reading it, the hub's side fills within a few hundred events.
struct RawDashboard {
    ws: WebSocketStream<TcpStream>,
    /// Stream offsets received, in order.
    offsets: Vec<u64>,
}

impl RawDashboard {
    async fn connect(t: &TestHub, cookie: &str, auth: Value) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("small receive buffer");
        let stream = socket.connect(t.hub.http_addr).await.expect("connect");
        let mut request = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket",
            t.hub.http_addr
        )
        .into_client_request()
        .expect("request");
        request
            .headers_mut()
            .insert("cookie", cookie.parse().expect("cookie header"));
        let (ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("WebSocket handshake");
        let mut d = Self {
            ws,
            offsets: Vec::new(),
        };
        let open = d.next_text().await.expect("engine.io open");
        assert!(open.starts_with('0'), "{open}");
        d.ws.send(Message::text(format!("40{auth}")))
            .await
            .expect("namespace connect");
        loop {
            match d.next_event().await {
                Some((event, _, _)) if event == "rt_session" => return d,
                Some(_) => {}
                None => panic!("closed before rt_session"),
            }
        }
    }

    /// The next text frame (answering pings), `None` when the connection closed.
    async fn next_text(&mut self) -> Option<String> {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a frame within the deadline");
            match frame {
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                    let _ = self.ws.send(Message::text("3")).await;
                }
                Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next event `(name, payload, offset)`; `None` when the hub disconnected this
    /// client (Socket.IO disconnect packet or closed connection).
    async fn next_event(&mut self) -> Option<(String, Value, Option<u64>)> {
        loop {
            let text = self.next_text().await?;
            if text.starts_with("41") {
                return None;
            }
            let Some(body) = text.strip_prefix("42") else {
                continue;
            };
            let mut args: Vec<Value> = serde_json::from_str(body).expect("event JSON");
            let offset = args.get(2).and_then(Value::as_u64);
            if let Some(o) = offset {
                if let Some(last) = self.offsets.last() {
                    assert!(o > *last, "offsets increase: {o} after {last}");
                }
                self.offsets.push(o);
            }
            let payload = args.get_mut(1).map(Value::take).unwrap_or(Value::Null);
            let name = args
                .first()
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            return Some((name, payload, offset));
        }
    }
}

fn readings(seq: u32) -> Value {
    let map: serde_json::Map<String, Value> = (0..READINGS)
        .map(|i| {
            (
                format!("reading_{i:02}"),
                json!(f64::from(seq) + i as f64 / 100.0),
            )
        })
        .collect();
    Value::Object(map)
}

/// What a client's view of the module is after applying `telemetry` events in order, checking
/// that revisions only move forward and that every jump is covered by `fromRev`.
#[derive(Default)]
struct View {
    rev: Option<u64>,
    readings: BTreeMap<String, f64>,
    events: usize,
    merged: usize,
}

impl View {
    fn apply(&mut self, payload: &Value) {
        let rev = payload["rev"].as_u64().expect("rev");
        let from = payload["fromRev"].as_u64().unwrap_or(rev);
        if let Some(known) = self.rev {
            assert!(rev > known, "rev {rev} after {known}");
            assert!(from <= known + 1, "revs {}..{from} missing", known + 1);
        }
        if from < rev {
            self.merged += 1;
        }
        self.rev = Some(rev);
        self.events += 1;
        for (k, v) in payload["telemetry"].as_object().expect("telemetry") {
            self.readings.insert(k.clone(), v.as_f64().expect("number"));
        }
    }
}

async fn hub_with_slow_dashboard(
    tweak: impl FnOnce(&mut mc_hub::config::Config),
) -> (TestHub, MqttModule, RawDashboard, String) {
    let t = start_hub(|c| {
        // The test floods one module on purpose.
        c.ingest.module_rate = 0.0;
        c.realtime.replay_max_missed = 50_000;
        c.realtime.replay_max_missed_bytes = 32 * 1024 * 1024;
        tweak(c);
    })
    .await;
    t.add_user("alice@x.io", false).await;
    let pw = t.add_module(MODULE, Some("alice@x.io")).await;
    let cookie = t.login("alice@x.io").await;
    let slow = RawDashboard::connect(&t, &cookie, json!({"page": "modules"})).await;
    let module = t.module(MODULE, &pw).await;
    (t, module, slow, cookie)
}

/// Publishes telemetry until the hub reports a client behind, then `extra` more; returns the
/// last sequence number sent.
async fn flood_until_behind(t: &TestHub, module: &MqttModule, extra: u32) -> u32 {
    let mut seq = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while t.hub.realtime.slow_clients().await.0 == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no client fell behind after {seq} messages"
        );
        for _ in 0..100 {
            seq += 1;
            module.telemetry(seq, readings(seq)).await;
        }
        // let the hub catch up with the publishes before looking again
        eventually("the hub took the publishes", || {
            t.hub.metrics.mqtt_messages_ingested.get() >= u64::from(seq)
        })
        .await;
    }
    for _ in 0..extra {
        seq += 1;
        module.telemetry(seq, readings(seq)).await;
    }
    seq
}

#[tokio::test]
async fn a_dashboard_that_stops_reading_gets_the_latest_values_and_slows_no_one() {
    let (t, module, mut slow, _) = hub_with_slow_dashboard(|_| {}).await;
    let mut healthy = t.dashboard("alice@x.io").await;

    let last = flood_until_behind(&t, &module, 400).await;
    let last_readings = readings(last);

    // The healthy dashboard gets every update, in order, while the other one is stuck.
    let mut view = View::default();
    loop {
        let p = healthy.expect("rt_telemetry_updated", about(MODULE)).await;
        view.apply(&p);
        assert_eq!(
            view.merged, 0,
            "a client that keeps up gets no merged update"
        );
        if p["rev"].as_u64() == Some(u64::from(last)) {
            break;
        }
    }
    assert_eq!(view.events, last as usize, "one event per message");

    // The stuck one's backlog holds about one entry for the module, however long the flood.
    let (behind, entries, bytes) = t.hub.realtime.slow_clients().await;
    assert_eq!(behind, 1);
    assert!(entries <= 2, "{entries} entries held");
    assert!(bytes < 64 * 1024, "{bytes} bytes held");
    assert!(t.hub.metrics.dashboard_events_coalesced.get() > 0);

    // It reads again: it ends with the latest values, revisions contiguous or covered.
    let mut view = View::default();
    while view.rev != Some(u64::from(last)) {
        match slow.next_event().await {
            Some((e, p, _)) if e == "rt_telemetry_updated" => view.apply(&p),
            Some(_) => {}
            None => panic!("the slow dashboard was disconnected"),
        }
    }
    assert!(view.merged >= 1, "the held updates came merged");
    assert!(
        view.events < last as usize,
        "{} events for {last} messages: coalesced",
        view.events
    );
    let want: BTreeMap<String, f64> = last_readings
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().expect("number")))
        .collect();
    for (k, v) in &want {
        let got = view.readings.get(k).copied().expect("reading present");
        assert!((got - v).abs() < 1e-3, "{k}: {got} != {v}");
    }
    let stuck = t.hub.realtime.clone();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while stuck.slow_clients().await.0 != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client still behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Live again: the next update arrives as it is, not merged.
    module
        .telemetry(last + 1, json!({"reading_00": -1.0}))
        .await;
    loop {
        match slow.next_event().await {
            Some((e, p, _)) if e == "rt_telemetry_updated" => {
                assert_eq!(p["rev"].as_u64(), Some(u64::from(last) + 1));
                assert!(p.get("fromRev").is_none(), "{p}");
                break;
            }
            Some(_) => {}
            None => panic!("disconnected"),
        }
    }
    let text = reqwest::get(format!("{}/metrics", t.url))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    for series in [
        "mc_dashboard_slow_clients 0",
        "mc_dashboard_backlog_entries 0",
        "mc_dashboard_events_coalesced_total ",
        "mc_dashboard_slow_disconnects_total 0",
    ] {
        assert!(text.contains(series), "{series} in\n{text}");
    }
}

#[tokio::test]
async fn a_dashboard_behind_for_too_long_is_disconnected_its_backlog_freed_and_it_resumes() {
    let (t, module, mut slow, cookie) = hub_with_slow_dashboard(|c| {
        c.realtime.slow_client_timeout = Duration::from_millis(500);
    })
    .await;
    let epoch = t.hub.realtime.epoch().await;
    let last = flood_until_behind(&t, &module, 50).await;

    // Past the limit the backlog is dropped at once (the hub's memory does not wait for the
    // disconnection to go through).
    eventually("the slow client is cut off", || {
        t.hub.metrics.dashboard_slow_cutoffs.get() == 1
    })
    .await;
    assert_eq!(t.hub.realtime.slow_clients().await, (0, 0, 0));
    assert!(t.hub.metrics.dashboard_backlog_dropped.get() >= 1);

    // Reading again, it finds what was already in its buffers, then the disconnection.
    while slow.next_event().await.is_some() {}
    let resume_at = *slow.offsets.last().expect("some events arrived");
    assert!(slow.offsets.len() < last as usize);

    // Reconnecting from its last offset, it gets exactly what it missed.
    let again = t
        .dashboard_with(
            &cookie,
            json!({"page": "modules", "resume": {"epoch": epoch, "offset": resume_at}}),
        )
        .await;
    assert_eq!(again.session()["resumed"], true, "{}", again.session());
    let mut view = View::default();
    for missed in again.session()["missed"].as_array().expect("missed") {
        if missed[0] == "rt_telemetry_updated" {
            view.apply(&missed[1]);
        }
    }
    assert_eq!(view.rev, Some(u64::from(last)));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while t.hub.realtime.delivery_clients().await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cut-off socket left the delivery list"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
