//! `compression-bench`: bytes on the wire with and without compression (BENCHMARKS.md,
//! "Compression").
//!
//! - **Realtime**: a hub with `--modules` modules owned by one user, whose telemetry (the
//!   simulator's sensor walks, one message per module per second, 5 readings) is fed straight
//!   into the tracker for `--seconds`. Two dashboards of that user watch the same stream at
//!   the same time, one offering permessage-deflate as browsers do, one offering nothing; each
//!   counts every byte its TCP socket reads and writes (HTTP upgrade included). `--runs` times.
//! - **HTTP**: every page, script and style sheet under `static/`, and `GET /api/modules` with
//!   `--api-modules` modules that have telemetry, fetched with `Accept-Encoding` identity, gzip
//!   and br; the whole response as read from the socket (headers included). `--runs` times.
//!
//! Prints markdown tables of medians. Needs nothing but the workspace.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};

#[path = "../sys.rs"]
#[allow(dead_code)] // the pipeline bench uses the rest of it
mod sys;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use firmware_sim::sensors::{SimSensors, names};
use futures_util::SinkExt;
use mc_hub::{
    Config, Listeners, RunningHub,
    connections::Transport,
    ingest::ModuleEvent,
    store::{NewModule, NewUser},
};
use mc_protocol::{ModuleId, Readings, Telemetry};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;
use yawc::{Frame, OpCode, Options, Role, WebSocket};

const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "bench-password";
/// What Chrome and Firefox send.
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

#[derive(Parser, Debug)]
#[command(name = "compression-bench")]
struct Args {
    /// Modules streaming telemetry in the realtime session.
    #[arg(long, default_value_t = 100)]
    modules: usize,
    /// Length of the realtime session.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Modules in `GET /api/modules`.
    #[arg(long, default_value_t = 500)]
    api_modules: usize,
    /// Repetitions (medians are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Idle sockets opened to measure memory per socket, plain and deflate (0: skip).
    #[arg(long, default_value_t = 200)]
    memory_sockets: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.runs > 0 && args.modules > 0,
        "--runs and --modules must be > 0"
    );
    let mut realtime = Vec::new();
    for run in 0..args.runs {
        let r = realtime_session(&args).await?;
        eprintln!(
            "run {run}: {} events; down plain {} B, deflate {} B",
            r.events, r.plain.down, r.deflate.down
        );
        realtime.push(r);
    }
    print_realtime(&args, &realtime);

    if args.memory_sockets > 0 {
        let plain = memory_per_socket(args.memory_sockets, None).await?;
        let deflate = memory_per_socket(args.memory_sockets, Some(BROWSER_OFFER)).await?;
        println!(
            "\n### Memory: {} idle dashboards on a fresh hub, RSS of the whole process\n",
            args.memory_sockets
        );
        println!("| dashboards | KiB per socket |");
        println!("|---|---:|");
        println!("| plain WebSocket | {plain:.0} |");
        println!("| permessage-deflate | {deflate:.0} |");
    }

    let mut http = Vec::new();
    for run in 0..args.runs {
        http.push(http_sizes(&args).await?);
        eprintln!("http run {run} done");
    }
    print_http(&args, &http);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The hub

struct Hub {
    hub: RunningHub,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A hub with the bench user and `modules` modules owned by it, each connected and with one
/// telemetry message already in (so `/api/modules` shows readings).
async fn start_hub(modules: usize) -> Result<Hub> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let config = Config {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let shutdown = CancellationToken::new();
    let listeners = Listeners::bind(&config).await.context("bind")?;
    let hub = mc_hub::start(config, listeners, shutdown.clone())
        .await
        .context("start the hub")?;
    hub.store
        .create_user(NewUser {
            email: EMAIL.into(),
            name: "Bench".into(),
            password: PASSWORD.into(),
            is_admin: false,
        })
        .await
        .context("create the bench user")?;
    let events = hub.tracker.events();
    for i in 0..modules {
        let (record, _) = hub
            .store
            .create_module(NewModule {
                id: ModuleId::new(&module_id(i))?,
                name: format!("Weather station {i}"),
                kind: "weather".into(),
                owner_email: Some(EMAIL.into()),
                heartbeat_timeout: None,
            })
            .await
            .context("create a module")?;
        events
            .send(ModuleEvent::Connected {
                record,
                session: i as u64 + 1,
                transport: Transport::Mqtt,
            })
            .await
            .context("tracker gone")?;
    }
    hub.tracker.counters().await.context("tracker gone")?;
    Ok(Hub {
        hub,
        shutdown,
        _dir: dir,
    })
}

fn module_id(i: usize) -> String {
    format!("MC-{:04}-WX", 1000 + i)
}

/// The simulator's sensors of module `i`, as the hub receives them.
struct Station {
    id: ModuleId,
    sensors: SimSensors,
    seq: u32,
}

impl Station {
    fn new(i: usize) -> Result<Self> {
        Ok(Self {
            id: ModuleId::new(&module_id(i))?,
            sensors: SimSensors::new(0x5EED, i as u32),
            seq: 0,
        })
    }

    fn next(&mut self) -> Result<ModuleEvent> {
        self.seq += 1;
        let mut readings = Readings::new();
        for (name, value) in names::ALL.iter().zip(self.sensors.next_sample().values()) {
            readings.push(name, value)?;
        }
        Ok(ModuleEvent::Telemetry(
            self.id.clone(),
            Box::new(Telemetry {
                seq: self.seq,
                readings,
            }),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Counting bytes

/// Bytes through one socket.
#[derive(Default)]
struct Counter {
    down: AtomicU64,
    up: AtomicU64,
}

/// A TCP stream that counts what it reads (down) and writes (up).
struct Counted {
    tcp: TcpStream,
    counter: Arc<Counter>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.tcp).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.counter.down.fetch_add(n, Ordering::Relaxed);
        result
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            this.counter.up.fetch_add(*n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One HTTP/1.1 request on a fresh connection; the whole response as read (and its size).
async fn http_request(addr: SocketAddr, request: String) -> Result<Vec<u8>> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .context("HTTP request timed out")?
}

/// The session cookie of the bench user.
async fn login(addr: SocketAddr) -> Result<String> {
    let body = serde_json::json!({ "email": EMAIL, "password": PASSWORD }).to_string();
    let response = http_request(
        addr,
        format!(
            "POST /api/auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await?;
    let text = String::from_utf8_lossy(&response);
    ensure!(
        text.starts_with("HTTP/1.1 200"),
        "login refused: {}",
        text.lines().next().unwrap_or_default()
    );
    text.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .find_map(|l| {
            let pair = l.split_once(':')?.1.trim().split(';').next()?;
            pair.starts_with("mc_session=").then(|| pair.to_owned())
        })
        .context("no session cookie")
}

/// `GET path` with `Accept-Encoding: encoding`; bytes read, and whether the hub used it.
async fn get_size(addr: SocketAddr, path: &str, cookie: &str, encoding: &str) -> Result<u64> {
    let response = http_request(
        addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\
             Accept-Encoding: {encoding}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    ensure!(head.starts_with("http/1.1 200"), "GET {path}: {head}");
    let used = head.contains(&format!("content-encoding: {encoding}"));
    ensure!(
        encoding == "identity" || used,
        "GET {path} with {encoding}: not compressed"
    );
    Ok(response.len() as u64)
}

/// Pages, scripts and style sheets the dashboard is made of.
fn static_assets() -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "node_modules") {
                    walk(root, &path, out)?;
                }
            } else if path
                .extension()
                .is_some_and(|e| e == "html" || e == "js" || e == "css")
            {
                let rel = path
                    .strip_prefix(root)?
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(format!("/{rel}"));
            }
        }
        Ok(())
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../static");
    let mut out = Vec::new();
    walk(&root, &root, &mut out)?;
    out.sort();
    Ok(out)
}

/// Sizes for one run: (static total per encoding, api per encoding), encodings in
/// [`ENCODINGS`] order.
struct HttpSizes {
    assets: usize,
    statics: [u64; 3],
    api: [u64; 3],
}

const ENCODINGS: [&str; 3] = ["identity", "gzip", "br"];

async fn http_sizes(args: &Args) -> Result<HttpSizes> {
    let hub = start_hub(args.api_modules).await?;
    let addr = hub.hub.http_addr;
    let events = hub.hub.tracker.events();
    for i in 0..args.api_modules {
        events
            .send(Station::new(i)?.next()?)
            .await
            .context("tracker gone")?;
    }
    hub.hub.tracker.counters().await.context("tracker gone")?;
    let cookie = login(addr).await?;
    let assets = static_assets()?;
    let mut sizes = HttpSizes {
        assets: assets.len(),
        statics: [0; 3],
        api: [0; 3],
    };
    for (e, encoding) in ENCODINGS.iter().enumerate() {
        for path in &assets {
            sizes.statics[e] += get_size(addr, path, &cookie, encoding).await?;
        }
        sizes.api[e] = get_size(addr, "/api/modules", &cookie, encoding).await?;
    }
    Ok(sizes)
}

// ---------------------------------------------------------------------------------------------
// Realtime

/// A dashboard: Engine.IO v4 / Socket.IO v5 by hand over a yawc WebSocket on a counted socket.
struct Dashboard {
    ws: WebSocket<Counted>,
    counter: Arc<Counter>,
    negotiated: Option<String>,
}

impl Dashboard {
    async fn connect(addr: SocketAddr, cookie: &str, offer: Option<&str>) -> Result<Self> {
        let counter = Arc::new(Counter::default());
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut io = Counted {
            tcp,
            counter: counter.clone(),
        };
        let mut request = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {cookie}\r\n"
        );
        if let Some(offer) = offer {
            request.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
        }
        request.push_str("\r\n");
        io.write_all(request.as_bytes()).await?;
        // Byte by byte: the first frame follows the head at once and must stay in the socket.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(io.read_u8().await.context("upgrade response")?);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        ensure!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        let negotiated = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        // The client inflates but never deflates (its messages are pongs), so memory per
        // socket is mostly the hub's.
        let options = if negotiated.is_some() {
            Options::default()
                .with_low_latency_compression()
                .with_compression_threshold(usize::MAX)
        } else {
            Options::default()
        };
        let ws = WebSocket::from_stream_with_extensions(
            io,
            Role::Client,
            negotiated.as_deref(),
            options,
        )?;
        let mut dashboard = Self {
            ws,
            counter,
            negotiated,
        };
        let open = dashboard.next_text().await?;
        ensure!(
            open.starts_with('0'),
            "expected the Engine.IO open packet: {open}"
        );
        dashboard
            .ws
            .send(Frame::text(r#"40{"page":"modules"}"#))
            .await?;
        while !dashboard
            .next_text()
            .await?
            .starts_with(r#"42["rt_session""#)
        {}
        Ok(dashboard)
    }

    /// The next text message (Engine.IO pings answered on the way).
    async fn next_text(&mut self) -> Result<String> {
        loop {
            let frame = self.ws.next_frame().await?;
            match frame.opcode() {
                OpCode::Text if frame.as_str() == "2" => self.ws.send(Frame::text("3")).await?,
                OpCode::Text => return Ok(frame.as_str().to_owned()),
                OpCode::Close => bail!("closed by the hub"),
                _ => {}
            }
        }
    }

    /// Counts telemetry events until `stop`; returns when each (module, rev) arrived, and
    /// what deflate would make of the messages received (see [`DeflateModel`]).
    async fn count(
        mut self,
        stop: CancellationToken,
        seen: Arc<AtomicU64>,
    ) -> Result<(Self, Vec<Arrival>, DeflateModel)> {
        let mut arrivals = Vec::new();
        let mut model = DeflateModel::new();
        loop {
            tokio::select! {
                text = self.next_text() => {
                    let text = text?;
                    model.add(text.as_bytes())?;
                    if text.starts_with(r#"42["rt_telemetry_updated""#) {
                        let at = Instant::now();
                        let event: serde_json::Value = serde_json::from_str(&text[2..])?;
                        let module = event[1]["moduleId"].as_str().unwrap_or_default().to_owned();
                        let rev = event[1]["rev"].as_u64().unwrap_or_default();
                        arrivals.push(((module, rev), at));
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                }
                () = stop.cancelled() => return Ok((self, arrivals, model)),
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Bytes {
    down: u64,
    up: u64,
}

/// Message payloads as they are, deflated with context takeover (one stream, sync flush per
/// message: what the hub does) and without (each message alone: what a pooled compressor
/// would give), at the hub's level (1). RFC 7692 drops each message's `00 00 ff ff` tail.
struct DeflateModel {
    raw: u64,
    takeover: u64,
    alone: u64,
    stream: flate2::Compress,
}

impl DeflateModel {
    fn new() -> Self {
        Self {
            raw: 0,
            takeover: 0,
            alone: 0,
            stream: flate2::Compress::new(flate2::Compression::fast(), false),
        }
    }

    fn add(&mut self, message: &[u8]) -> Result<()> {
        self.raw += message.len() as u64;
        self.takeover += deflate(&mut self.stream, message)?;
        let mut alone = flate2::Compress::new(flate2::Compression::fast(), false);
        self.alone += deflate(&mut alone, message)?;
        Ok(())
    }
}

/// Compressed size of `message` on `stream` with a sync flush, minus the 4-byte tail.
fn deflate(stream: &mut flate2::Compress, message: &[u8]) -> Result<u64> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let before = stream.total_out();
    stream.compress_vec(message, &mut out, flate2::FlushCompress::Sync)?;
    ensure!(
        out.len() < out.capacity(),
        "deflate output buffer too small"
    );
    Ok((stream.total_out() - before).saturating_sub(4))
}

/// When a dashboard received the event of (module, rev).
type Arrival = ((String, u64), Instant);

struct RealtimeRun {
    events: u64,
    /// Per event: arrival at the deflate dashboard minus arrival at the plain one, µs.
    extra_delay_us: Vec<i64>,
    /// Payload bytes received by the plain dashboard: as is, deflated with and without context
    /// takeover ([`DeflateModel`]).
    model: [u64; 3],
    plain: Bytes,
    deflate: Bytes,
    negotiated: String,
}

async fn realtime_session(args: &Args) -> Result<RealtimeRun> {
    let hub = start_hub(args.modules).await?;
    let addr = hub.hub.http_addr;
    let cookie = login(addr).await?;
    let deflate = Dashboard::connect(addr, &cookie, Some(BROWSER_OFFER)).await?;
    let plain = Dashboard::connect(addr, &cookie, None).await?;
    let negotiated = deflate
        .negotiated
        .clone()
        .context("permessage-deflate was not negotiated")?;
    ensure!(plain.negotiated.is_none(), "negotiated without an offer");

    let stop = CancellationToken::new();
    let seen_deflate = Arc::new(AtomicU64::new(0));
    let seen_plain = Arc::new(AtomicU64::new(0));
    let deflate = tokio::spawn(deflate.count(stop.clone(), seen_deflate.clone()));
    let plain = tokio::spawn(plain.count(stop.clone(), seen_plain.clone()));

    // One message per module per second, spread evenly over the second.
    let mut stations = (0..args.modules)
        .map(Station::new)
        .collect::<Result<Vec<_>>>()?;
    let events = hub.hub.tracker.events();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / u32::try_from(args.modules)?);
    for _ in 0..args.seconds {
        for station in &mut stations {
            tick.tick().await;
            events.send(station.next()?).await.context("tracker gone")?;
        }
    }
    hub.hub.tracker.counters().await.context("tracker gone")?;
    // Both dashboards get every event; wait until they have (then a little quiet).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (a, b) = (
            seen_deflate.load(Ordering::Relaxed),
            seen_plain.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let settled = a == b
            && a > 0
            && seen_deflate.load(Ordering::Relaxed) == a
            && seen_plain.load(Ordering::Relaxed) == b;
        if settled {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "dashboards disagree: {a} vs {b} events"
        );
    }
    stop.cancel();
    let (deflate, deflate_arrivals, _) = deflate.await.context("deflate dashboard panicked")??;
    let (plain, plain_arrivals, model) = plain.await.context("plain dashboard panicked")??;
    let plain_at: HashMap<_, _> = plain_arrivals.into_iter().collect();
    let extra_delay_us = deflate_arrivals
        .into_iter()
        .filter_map(|(key, at)| {
            let plain = *plain_at.get(&key)?;
            let us = if at >= plain {
                at.duration_since(plain).as_micros() as i64
            } else {
                -(plain.duration_since(at).as_micros() as i64)
            };
            Some(us)
        })
        .collect();
    let read = |d: &Dashboard| Bytes {
        down: d.counter.down.load(Ordering::Relaxed),
        up: d.counter.up.load(Ordering::Relaxed),
    };
    Ok(RealtimeRun {
        events: seen_plain.load(Ordering::Relaxed),
        extra_delay_us,
        model: [model.raw, model.takeover, model.alone],
        plain: read(&plain),
        deflate: read(&deflate),
        negotiated,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn print_realtime(args: &Args, runs: &[RealtimeRun]) {
    let events = median(runs.iter().map(|r| r.events).collect());
    let plain_down = median(runs.iter().map(|r| r.plain.down).collect());
    let deflate_down = median(runs.iter().map(|r| r.deflate.down).collect());
    let plain_up = median(runs.iter().map(|r| r.plain.up).collect());
    let deflate_up = median(runs.iter().map(|r| r.deflate.up).collect());
    println!(
        "\n### Realtime: {} modules × 1 msg/s × {} s, one dashboard each way, median of {} runs\n",
        args.modules,
        args.seconds,
        runs.len()
    );
    println!("Negotiated: `{}`\n", runs[0].negotiated);
    println!("| dashboard | events | bytes down | bytes/event | bytes up | down vs plain |");
    println!("|---|---:|---:|---:|---:|---:|");
    let per = |b: u64| b as f64 / events.max(1) as f64;
    println!(
        "| plain WebSocket | {events} | {plain_down} | {:.1} | {plain_up} | 1.00 |",
        per(plain_down)
    );
    println!(
        "| permessage-deflate | {events} | {deflate_down} | {:.1} | {deflate_up} | {:.2} |",
        per(deflate_down),
        deflate_down as f64 / plain_down.max(1) as f64
    );
    let model: Vec<u64> = (0..3)
        .map(|i| median(runs.iter().map(|r| r.model[i]).collect()))
        .collect();
    println!(
        "\nMessage payloads only (no framing), deflate level 1: as sent {} B; with context \
         takeover {} B ({:.2}); each message alone {} B ({:.2})",
        model[0],
        model[1],
        model[1] as f64 / model[0].max(1) as f64,
        model[2],
        model[2] as f64 / model[0].max(1) as f64
    );
    let mut delays: Vec<i64> = runs.iter().flat_map(|r| r.extra_delay_us.clone()).collect();
    delays.sort_unstable();
    if !delays.is_empty() {
        let at = |p: f64| delays[((delays.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "\nArrival at the deflate dashboard minus arrival at the plain one, same event \
             ({} events): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            delays.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        );
    }
}

/// RSS growth per dashboard socket (hub side and this process's client side together).
async fn memory_per_socket(sockets: usize, offer: Option<&str>) -> Result<f64> {
    let hub = start_hub(0).await?;
    let addr = hub.hub.http_addr;
    let cookie = login(addr).await?;
    let settle = async || {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sys::rss_kib()
    };
    let before = settle().await.context("no VmRSS")?;
    let mut open = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        open.push(Dashboard::connect(addr, &cookie, offer).await?);
    }
    ensure!(
        hub.hub.realtime.connected_clients() == sockets,
        "not every socket connected"
    );
    let after = settle().await.context("no VmRSS")?;
    drop(open);
    Ok(after.saturating_sub(before) as f64 / sockets as f64)
}

fn print_http(args: &Args, runs: &[HttpSizes]) {
    println!(
        "\n### HTTP: whole responses (headers included), median of {} runs\n",
        runs.len()
    );
    println!("| response | identity | gzip | br | gzip/identity | br/identity |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |name: String, pick: &dyn Fn(&HttpSizes) -> [u64; 3]| {
        let m: Vec<u64> = (0..3)
            .map(|e| median(runs.iter().map(|r| pick(r)[e]).collect()))
            .collect();
        println!(
            "| {name} | {} | {} | {} | {:.2} | {:.2} |",
            m[0],
            m[1],
            m[2],
            m[1] as f64 / m[0].max(1) as f64,
            m[2] as f64 / m[0].max(1) as f64
        );
    };
    row(
        format!("static: {} pages, scripts, styles", runs[0].assets),
        &|r| r.statics,
    );
    row(
        format!("`GET /api/modules`, {} modules", args.api_modules),
        &|r| r.api,
    );
}
