//! Test harness for end-to-end tests: a real hub on ephemeral loopback ports with a temporary
//! data directory, real MQTT clients for modules, real Socket.IO clients for dashboards.
//!
//! `MC_TEST_DATABASE=postgres` runs every hub these tests start on PostgreSQL instead of
//! SQLite: a fresh database per hub on one throwaway server per test process
//! ([`mc_hub::store::postgres_server`]); `scripts/test` runs the tests about the registry,
//! accounts, access and durability that way too.
//!
//! Every wait has a generous deadline ([`DEADLINE`]) so tests hold on a loaded 2-core machine;
//! "nothing happened" is proven with a barrier event, never with a sleep.

pub mod mosquitto;
pub mod redis;

use std::{net::SocketAddr, time::Duration};

use futures_util::FutureExt;
use mc_hub::{
    Config, Listeners, RunningHub,
    store::{Database, NewModule, NewUser, postgres_server::PostgresServer},
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
};
use rust_socketio::{Payload, TransportType, asynchronous::ClientBuilder};
use serde_json::Value;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// How long any expected thing may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `condition` holds, failing the test with `what` after [`DEADLINE`]. For state
/// that other connections update asynchronously (counters), where no event marks the moment.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    eventually_within(what, DEADLINE, condition).await
}

/// [`eventually`] with another deadline, for conditions that take many round trips (a phase of
/// sustained writes), where [`DEADLINE`] leaves too small a margin on a loaded machine.
pub async fn eventually_within(what: &str, within: Duration, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the hub at `url` answers `/readyz` with 200 (its database, tracker and broker
/// link are up), failing the test after [`DEADLINE`].
pub async fn wait_ready(url: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = reqwest::get(format!("{url}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string());
        if status == Ok(200) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} not ready within {DEADLINE:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running hub and what is needed to talk to it.
pub struct TestHub {
    /// The hub.
    pub hub: RunningHub,
    /// Cancels the hub.
    pub shutdown: CancellationToken,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Keeps the data directory alive.
    pub dir: tempfile::TempDir,
    /// The data directory (in `dir` unless the test chose another).
    data_dir: std::path::PathBuf,
    /// The hub's database (SQLite in `dir`, or PostgreSQL: [`test_database`]).
    pub database: Database,
}

/// The variable that chooses the database of the hubs tests start: `postgres` or `sqlite`
/// (the default).
pub const TEST_DATABASE_VAR: &str = "MC_TEST_DATABASE";

/// True when the tests run their hubs on PostgreSQL (`MC_TEST_DATABASE=postgres`). Panics on
/// any value other than `postgres`, `sqlite` or none: a typo must not quietly test SQLite.
pub fn on_postgres() -> bool {
    match std::env::var(TEST_DATABASE_VAR).as_deref() {
        Err(_) | Ok("" | "sqlite") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("{TEST_DATABASE_VAR}={other:?}: expected sqlite or postgres"),
    }
}

/// The database for a new hub whose data directory is `data_dir`: SQLite there, or a fresh
/// PostgreSQL database when [`on_postgres`] (the test fails if the server cannot start).
pub async fn test_database(data_dir: &std::path::Path) -> Database {
    if on_postgres() {
        PostgresServer::fresh_database().await
    } else {
        Database::in_data_dir(data_dir)
    }
}

/// Starts a hub; `tweak` adjusts its configuration. On PostgreSQL ([`on_postgres`]) each hub
/// gets a fresh database: a test that restarts a hub on the same data sets `c.database` to the
/// first hub's [`TestHub::database`] as well as `c.data_dir`.
pub async fn start_hub(tweak: impl FnOnce(&mut Config)) -> TestHub {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let database = if on_postgres() {
        Some(test_database(&data_dir).await)
    } else {
        None
    };
    let mut config = Config {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir,
        database,
        ..Config::default()
    };
    tweak(&mut config);
    let database = config.database();
    let data_dir = config.data_dir.clone();
    let listeners = Listeners::bind(&config).await.expect("bind");
    let shutdown = CancellationToken::new();
    let hub = mc_hub::start(config, listeners, shutdown.clone())
        .await
        .expect("hub starts");
    let url = format!("http://{}", hub.http_addr);
    TestHub {
        hub,
        shutdown,
        url,
        dir,
        database,
        data_dir,
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off")),
        )
        .with_test_writer()
        .try_init();
}

impl TestHub {
    /// Its data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data_dir.clone()
    }

    /// Creates a user with password `password`; returns its id.
    pub async fn add_user(&self, email: &str, admin: bool) -> i64 {
        self.hub
            .store
            .create_user(NewUser {
                email: email.into(),
                name: email.split('@').next().unwrap_or(email).into(),
                password: "password".into(),
                is_admin: admin,
            })
            .await
            .expect("create user")
            .id
    }

    /// Registers a module owned by `owner` (email); returns its MQTT password.
    pub async fn add_module(&self, id: &str, owner: Option<&str>) -> String {
        self.hub
            .store
            .create_module(NewModule {
                id: id.parse().expect("valid id"),
                name: format!("{id} name"),
                kind: "weather".into(),
                owner_email: owner.map(Into::into),
                heartbeat_timeout: None,
            })
            .await
            .expect("create module")
            .1
    }

    /// Logs in (password `password`) and returns the session cookie (`mc_session=...`).
    pub async fn login(&self, email: &str) -> String {
        login(&self.url, email, "password").await.expect("login")
    }

    /// An HTTP request with `cookie`; returns the status and the JSON body (`Null` if none).
    pub async fn call(
        &self,
        cookie: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        request(&self.url, cookie, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A dashboard socket for `email` on page `modules`.
    pub async fn dashboard(&self, email: &str) -> Dashboard {
        let cookie = self.login(email).await;
        Dashboard::connect(&self.url, Some(&cookie), "modules")
            .await
            .expect("dashboard connects")
    }

    /// A dashboard socket with session `cookie` and handshake `auth` (page, resume...).
    pub async fn dashboard_with(&self, cookie: &str, auth: Value) -> Dashboard {
        Dashboard::connect_auth(&self.url, Some(cookie), auth)
            .await
            .expect("dashboard connects")
    }

    /// Connects an MQTT 3.1.1 module (with last will) and waits for CONNACK.
    pub async fn module(&self, id: &str, password: &str) -> MqttModule {
        MqttModule::connect(self.hub.mqtt_addr, id, password)
            .await
            .expect("module connects")
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One HTTP request to the hub at `url` with `cookie`: the status and the JSON body (`Null` if
/// none); `Err` when no answer came within [`DEADLINE`] (e.g. the hub was killed mid-request).
pub async fn request(
    url: &str,
    cookie: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let http = reqwest::Client::new();
    let url = format!("{url}{path}");
    let request = match method {
        "POST" => http.post(url),
        "PATCH" => http.patch(url),
        "DELETE" => http.delete(url),
        "GET" => http.get(url),
        other => return Err(format!("unsupported method {other}")),
    };
    let request = match body {
        Some(b) => request.json(&b),
        None => request,
    };
    let response = request
        .header("cookie", cookie)
        .timeout(DEADLINE)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// `POST /api/auth/login`; the session cookie on success, the HTTP status otherwise.
pub async fn login(url: &str, email: &str, password: &str) -> Result<String, u16> {
    let response = reqwest::Client::new()
        .post(format!("{url}/api/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .map_err(|_| 0u16)?;
    if !response.status().is_success() {
        return Err(response.status().as_u16());
    }
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next().filter(|c| c.starts_with("mc_session=")))
        .map(str::to_owned)
        .ok_or(0)
}

/// A simulated module speaking MQTT through a real client library.
pub struct MqttModule {
    /// The client, to publish.
    pub client: AsyncClient,
    /// The module id.
    pub id: String,
    events: JoinHandle<()>,
    incoming: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl MqttModule {
    /// Connects with client id = username = `id`, last will `offline` on `mc/<id>/status`.
    pub async fn connect(addr: SocketAddr, id: &str, password: &str) -> Result<Self, String> {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_credentials(id, password);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_last_will(LastWill::new(
            format!("mc/{id}/status"),
            "offline",
            QoS::AtLeastOnce,
            false,
        ));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        wait_connack(&mut eventloop).await?;
        let (tx, incoming) = mpsc::unbounded_channel();
        let events = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    let topic = p.topic.clone();
                    let _ = tx.send((topic, p.payload.to_vec()));
                }
            }
        });
        Ok(Self {
            client,
            id: id.to_owned(),
            events,
            incoming,
        })
    }

    /// Publishes `payload` on `mc/<id>/<kind>` (QoS 1).
    pub async fn publish(&self, kind: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(
                format!("mc/{}/{kind}", self.id),
                QoS::AtLeastOnce,
                false,
                payload.into(),
            )
            .await
            .expect("publish queued");
    }

    /// The next message the broker delivered to this module (topic, payload).
    pub async fn next_publish(&mut self) -> (String, Vec<u8>) {
        match tokio::time::timeout(DEADLINE, self.incoming.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("module connection closed"),
            Err(_) => panic!("no message for the module within {DEADLINE:?}"),
        }
    }

    /// Sends a JSON hello announcing `heartbeat_ms`.
    pub async fn hello(&self, heartbeat_ms: u32) {
        self.publish(
            "hello",
            format!(r#"{{"fw":"1.0.0","heartbeatMs":{heartbeat_ms}}}"#),
        )
        .await;
    }

    /// Sends JSON telemetry.
    pub async fn telemetry(&self, seq: u32, readings: Value) {
        self.publish(
            "telemetry",
            serde_json::json!({"seq": seq, "readings": readings}).to_string(),
        )
        .await;
    }

    /// Closes the TCP connection without DISCONNECT (the broker fires the last will).
    pub fn drop_connection(self) {
        self.events.abort();
    }

    /// Sends a clean DISCONNECT and waits for the connection to close.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(DEADLINE, self.events).await;
    }

    /// Whether the connection has ended (e.g. closed by the hub).
    pub fn is_closed(&self) -> bool {
        self.events.is_finished()
    }
}

/// Polls until CONNACK; an error or a refusal code is returned as text.
pub async fn wait_connack(eventloop: &mut EventLoop) -> Result<(), String> {
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return if ack.code == ConnectReturnCode::Success {
                        Ok(())
                    } else {
                        Err(format!("{:?}", ack.code))
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// One event as a dashboard received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The event name.
    pub event: String,
    /// Its first argument (the payload).
    pub data: Value,
    /// Its second argument: the stream offset (`docs/REALTIME.md`); `None` if absent.
    pub offset: Option<u64>,
}

/// A dashboard: a real Socket.IO client (rust_socketio) that records every event.
pub struct Dashboard {
    client: rust_socketio::asynchronous::Client,
    rx: mpsc::UnboundedReceiver<Received>,
    /// Events that arrived before `rt_session` (the contract allows it), delivered first.
    early: std::collections::VecDeque<Received>,
    /// The `rt_session` payload.
    session: Value,
}

impl Dashboard {
    /// Connects with `cookie` to `page`; waits for `rt_session` (Ok) or an error (Err).
    pub async fn connect(url: &str, cookie: Option<&str>, page: &str) -> Result<Self, String> {
        Self::connect_with(url, cookie, page, TransportType::Websocket).await
    }

    /// [`Dashboard::connect`] with a chosen Engine.IO transport (polling, upgrade...).
    pub async fn connect_with(
        url: &str,
        cookie: Option<&str>,
        page: &str,
        transport: TransportType,
    ) -> Result<Self, String> {
        Self::connect_raw(url, cookie, serde_json::json!({ "page": page }), transport).await
    }

    /// Connects over WebSocket with any handshake `auth` (page, resume, reconnectMs...).
    pub async fn connect_auth(
        url: &str,
        cookie: Option<&str>,
        auth: Value,
    ) -> Result<Self, String> {
        Self::connect_raw(url, cookie, auth, TransportType::Websocket).await
    }

    /// Connects with `cookie` and handshake `auth`, waits until the hub accepted the namespace
    /// connection (its CONNECT packet), and disconnects at once, without waiting for
    /// `rt_session`: a client that goes while the hub is still registering it.
    pub async fn connect_and_leave(
        url: &str,
        cookie: Option<&str>,
        auth: Value,
    ) -> Result<(), String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let errors = tx.clone();
        let mut builder = ClientBuilder::new(url)
            .transport_type(TransportType::Websocket)
            .auth(auth)
            .reconnect(false)
            .on(rust_socketio::Event::Connect, move |_, _| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Ok(()));
                }
                .boxed()
            })
            .on("error", move |payload, _| {
                let errors = errors.clone();
                async move {
                    let _ = errors.send(Err(payload_and_offset(payload).0.to_string()));
                }
                .boxed()
            });
        if let Some(cookie) = cookie {
            builder = builder.opening_header("Cookie", cookie);
        }
        let client = builder.connect().await.map_err(|e| e.to_string())?;
        let accepted = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .map_err(|_| "timeout waiting for the connection".to_string())?
            .unwrap_or_else(|| Err("closed".into()));
        let _ = client.disconnect().await;
        accepted
    }

    async fn connect_raw(
        url: &str,
        cookie: Option<&str>,
        auth: Value,
        transport: TransportType,
    ) -> Result<Self, String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let errors = tx.clone();
        let closes = tx.clone();
        let mut builder = ClientBuilder::new(url)
            .transport_type(transport)
            .auth(auth)
            .reconnect(false)
            .on_any(move |event, payload, _| {
                let tx = tx.clone();
                async move {
                    let (data, offset) = payload_and_offset(payload);
                    let _ = tx.send(Received {
                        event: String::from(event),
                        data,
                        offset,
                    });
                }
                .boxed()
            })
            .on(rust_socketio::Event::Close, move |_, _| {
                let closes = closes.clone();
                async move {
                    let _ = closes.send(Received {
                        event: "close".into(),
                        data: Value::Null,
                        offset: None,
                    });
                }
                .boxed()
            })
            .on("error", move |payload, _| {
                let errors = errors.clone();
                async move {
                    let _ = errors.send(Received {
                        event: "error".into(),
                        data: payload_and_offset(payload).0,
                        offset: None,
                    });
                }
                .boxed()
            });
        if let Some(cookie) = cookie {
            builder = builder.opening_header("Cookie", cookie);
        }
        let client = builder.connect().await.map_err(|e| e.to_string())?;
        let mut early = std::collections::VecDeque::new();
        let session = tokio::time::timeout(DEADLINE, async {
            while let Some(received) = rx.recv().await {
                match received.event.as_str() {
                    "rt_session" => return Ok(received.data),
                    "error" => return Err(received.data.to_string()),
                    _ => early.push_back(received),
                }
            }
            Err("closed".to_string())
        })
        .await
        .map_err(|_| "timeout waiting for rt_session".to_string())??;
        Ok(Self {
            client,
            rx,
            early,
            session,
        })
    }

    /// The `rt_session` payload this connection was greeted with.
    pub fn session(&self) -> &Value {
        &self.session
    }

    async fn recv(&mut self) -> Option<Received> {
        match self.early.pop_front() {
            Some(r) => Some(r),
            None => self.rx.recv().await,
        }
    }

    /// Waits for the next `event` whose payload satisfies `pred`, skipping others.
    pub async fn expect(&mut self, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect_received(event, pred).await.data
    }

    /// [`Dashboard::expect`], with the event's offset.
    pub async fn expect_received(
        &mut self,
        event: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Received {
        let found = tokio::time::timeout(DEADLINE, async {
            while let Some(r) = self.recv().await {
                if r.event == event && pred(&r.data) {
                    return Some(r);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(r)) => r,
            Ok(None) => panic!("dashboard closed while waiting for {event}"),
            Err(_) => panic!("no {event} matching the condition within {DEADLINE:?}"),
        }
    }

    /// Every event received until (and including) the first `event` satisfying `barrier`.
    pub async fn until(
        &mut self,
        event: &str,
        barrier: impl Fn(&Value) -> bool,
    ) -> Vec<(String, Value)> {
        self.until_received(event, barrier)
            .await
            .into_iter()
            .map(|r| (r.event, r.data))
            .collect()
    }

    /// [`Dashboard::until`], with each event's offset.
    pub async fn until_received(
        &mut self,
        event: &str,
        barrier: impl Fn(&Value) -> bool,
    ) -> Vec<Received> {
        let mut seen = Vec::new();
        let done = tokio::time::timeout(DEADLINE, async {
            while let Some(r) = self.recv().await {
                let hit = r.event == event && barrier(&r.data);
                seen.push(r);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(done, Ok(true), "barrier {event} not reached; saw {seen:?}");
        seen
    }

    /// Emits `event` with `data` to the hub.
    pub async fn emit(&self, event: &str, data: Value) -> Result<(), String> {
        self.client
            .emit(event, data)
            .await
            .map_err(|e| e.to_string())
    }

    /// The next event, whatever it is.
    pub async fn next(&mut self) -> (String, Value) {
        let r = self.next_received().await;
        (r.event, r.data)
    }

    /// The next event with its offset, whatever it is.
    pub async fn next_received(&mut self) -> Received {
        match tokio::time::timeout(DEADLINE, self.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => panic!("dashboard closed"),
            Err(_) => panic!("no event within {DEADLINE:?}"),
        }
    }

    /// Disconnects.
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}

/// The first argument of an event (its payload) and its second, the offset, if any.
fn payload_and_offset(payload: Payload) -> (Value, Option<u64>) {
    match payload {
        Payload::Text(mut values) if !values.is_empty() => {
            let offset = values.get(1).and_then(Value::as_u64);
            (values.swap_remove(0), offset)
        }
        other => (first_value(other), None),
    }
}

fn first_value(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) if !values.is_empty() => values.swap_remove(0),
        #[allow(deprecated)]
        Payload::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        _ => Value::Null,
    }
}

/// The value of the sample `series` (`name` or `name{labels}`) in an OpenMetrics text
/// (`GET /metrics`).
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// True when `v` is about module `id`.
pub fn about(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["moduleId"] == id
}
