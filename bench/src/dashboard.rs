//! Dashboards: login over HTTP, then a minimal Socket.IO v5 client over a raw WebSocket.
//!
//! Why not rust_socketio: it parses every event into a `serde_json::Value` and dispatches it
//! through boxed callbacks; 100 such clients at 5,000 msg/s (500,000 events/s) would saturate the
//! load core long before the hub, and we would be measuring the client. This client reads
//! WebSocket frames, answers Engine.IO pings, and *counts* events by prefix; only the designated
//! latency dashboard parses the JSON payload (with the hub's own `TelemetryUpdated` type).
//!
//! Engine.IO v4 over WebSocket: server sends `0{...}` (open); we send `40{"page":"modules"}`
//! (Socket.IO CONNECT with auth); server answers `40{...}` or `44{...}` (refused); events arrive
//! as `42["name",payload]`; a ping `2` is answered with a pong `3`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use mc_hub::realtime::events::{
    RT_GLOBAL_STATS_UPDATED, RT_SESSION, RT_TELEMETRY_UPDATED, TelemetryUpdated,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};
use tokio_util::sync::CancellationToken;

use crate::load::{Latencies, SendLog, module_index};

/// Logs in and returns the `mc_session=<token>` cookie pair.
pub async fn login(http: SocketAddr, email: &str, password: &str) -> Result<String> {
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    let request = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(http).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("login timed out")??;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("login refused: {status}");
    }
    text.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .find_map(|l| {
            let value = l.split_once(':')?.1.trim();
            let pair = value.split(';').next()?;
            pair.starts_with("mc_session=").then(|| pair.to_owned())
        })
        .context("login response has no mc_session cookie")
}

/// Receives every Socket.IO text message a [`Dashboard`] reads (pings excepted).
pub trait TextSink: Send + Sync + 'static {
    /// One Engine.IO text message, e.g. `42["rt_telemetry_updated",{...},7]`.
    fn on_text(&self, text: &[u8]);
}

/// Counts what one dashboard received; the latency dashboard also samples latencies.
pub struct EventSink {
    /// `rt_telemetry_updated` events received.
    pub telemetry_events: AtomicU64,
    /// Other events, apart from `rt_session` and `rt_global_stats_updated` (which every socket
    /// may get whatever it watches): a socket that is no recipient must see 0 here.
    pub other_events: AtomicU64,
    /// `42["rt_telemetry_updated"`: how such an event starts on the wire.
    prefix: Vec<u8>,
    /// `42["rt_session"` and `42["rt_global_stats_updated"`: not counted in `other_events`.
    ignored: [Vec<u8>; 2],
    latency: Option<(Arc<SendLog>, Arc<Latencies>)>,
    /// The reading whose value is the message's send-log key (`seq`; the serial bench, whose
    /// modules send no reading named `seq`, uses another one).
    key_reading: &'static str,
}

impl EventSink {
    /// A counting-only sink, or one that also records latency.
    pub fn new(latency: Option<(Arc<SendLog>, Arc<Latencies>)>) -> Self {
        Self {
            telemetry_events: AtomicU64::new(0),
            other_events: AtomicU64::new(0),
            prefix: format!("42[\"{RT_TELEMETRY_UPDATED}\"").into_bytes(),
            ignored: [
                format!("42[\"{RT_SESSION}\"").into_bytes(),
                format!("42[\"{RT_GLOBAL_STATS_UPDATED}\"").into_bytes(),
            ],
            latency,
            key_reading: "seq",
        }
    }

    /// Looks the send time up by the value of reading `name` instead of `seq`.
    pub fn with_key_reading(mut self, name: &'static str) -> Self {
        self.key_reading = name;
        self
    }

    /// Counts one event received by other means (the reference subscriber).
    pub fn count_one(&self) {
        self.telemetry_events.fetch_add(1, Ordering::Relaxed);
    }

    /// Events received so far.
    pub fn count(&self) -> u64 {
        self.telemetry_events.load(Ordering::Relaxed)
    }
}

impl TextSink for EventSink {
    fn on_text(&self, text: &[u8]) {
        if !text.starts_with(&self.prefix) {
            if text.starts_with(b"42") && !self.ignored.iter().any(|p| text.starts_with(p)) {
                self.other_events.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        self.telemetry_events.fetch_add(1, Ordering::Relaxed);
        let Some((log, latencies)) = &self.latency else {
            return;
        };
        let now = log.now_us();
        // `[event, payload, offset]`
        let Ok((_, event, _)) =
            serde_json::from_slice::<(String, TelemetryUpdated, u64)>(&text[2..])
        else {
            return;
        };
        let (Some(module), Some(seq)) = (
            module_index(&event.module_id),
            event.telemetry.get(self.key_reading).copied(),
        ) else {
            return;
        };
        if let Some(sent) = log.sent_at(module, seq as u32) {
            latencies.record(sent, now);
        }
    }
}

/// A connected Socket.IO client.
pub struct Dashboard {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Largest frame accepted; hub events are a few hundred bytes.
const MAX_FRAME: u64 = 1 << 20;

impl Dashboard {
    /// Opens the WebSocket with `cookie` and completes the Socket.IO CONNECT for `page`.
    pub async fn connect(http: SocketAddr, cookie: &str, page: &str) -> Result<Self> {
        let stream = TcpStream::connect(http).await.context("connect")?;
        stream.set_nodelay(true)?;
        let (read, mut writer) = stream.into_split();
        let mut reader = BufReader::with_capacity(64 * 1024, read);
        let request = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {http}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {cookie}\r\n\r\n"
        );
        writer.write_all(request.as_bytes()).await?;
        let mut status = String::new();
        reader.read_line(&mut status).await?;
        if !status.contains(" 101 ") {
            bail!("WebSocket upgrade refused: {}", status.trim());
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                bail!("connection closed during upgrade");
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut dashboard = Self { reader, writer };
        let open = dashboard.next_text().await?;
        if !open.starts_with(b"0") {
            bail!(
                "expected Engine.IO open, got {}",
                String::from_utf8_lossy(&open)
            );
        }
        let connect = format!("40{}", serde_json::json!({ "page": page }));
        dashboard.write_frame(OP_TEXT, connect.as_bytes()).await?;
        loop {
            let text = dashboard.next_text().await?;
            // The server's first Engine.IO ping can come before the CONNECT answer; a ping left
            // unanswered closes the socket `pingTimeout` (20 s) later.
            if text.as_slice() == b"2" {
                dashboard.write_frame(OP_TEXT, b"3").await?;
                continue;
            }
            if text.starts_with(b"40") {
                return Ok(dashboard);
            }
            if text.starts_with(b"44") {
                bail!(
                    "Socket.IO connect refused: {}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
    }

    /// Reads events into `sink` until `stop` or the connection ends.
    pub async fn run<S: TextSink>(mut self, sink: Arc<S>, stop: CancellationToken) {
        loop {
            let text = tokio::select! {
                _ = stop.cancelled() => return,
                t = self.next_text() => t,
            };
            match text {
                Ok(text) if text.as_slice() == b"2" => {
                    if self.write_frame(OP_TEXT, b"3").await.is_err() {
                        return;
                    }
                }
                Ok(text) => sink.on_text(&text),
                Err(_) => return,
            }
        }
    }

    /// The next text message (control frames handled on the way).
    async fn next_text(&mut self) -> Result<Vec<u8>> {
        let mut message = Vec::new();
        loop {
            let (fin, opcode, payload) = self.read_frame().await?;
            match opcode {
                OP_PING => self.write_frame(OP_PONG, &payload).await?,
                OP_PONG => {}
                OP_CLOSE => bail!("server closed the WebSocket"),
                _ => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return Ok(message);
                    }
                }
            }
        }
    }

    async fn read_frame(&mut self) -> Result<(bool, u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.reader.read_exact(&mut head).await?;
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => u64::from(self.reader.read_u16().await?),
            127 => self.reader.read_u64().await?,
            n => u64::from(n),
        };
        if len > MAX_FRAME {
            bail!("frame of {len} bytes");
        }
        let mut mask = [0u8; 4];
        if masked {
            self.reader.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        self.reader.read_exact(&mut payload).await?;
        if masked {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b ^= mask[i % 4]);
        }
        Ok((fin, opcode, payload))
    }

    /// Writes one masked frame (clients must mask).
    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        const MASK: [u8; 4] = [0x5a, 0xc3, 0x0f, 0x96];
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.writer.write_all(&frame).await?;
        Ok(())
    }
}
