//! `--serial`: how many telemetry frames per second a serial line carries through the hub, for
//! the binary link (postcard + CRC + COBS, `hardware/PROTOCOL.md` §1–6) and for JSON lines (§7),
//! and what each frame costs the hub's core.
//!
//! # Setup
//! One hub on the hub runtime, serving `--lines` binary ports and `--lines` `:json` ports. Each
//! port is a pty pair: the hub opens the slave through a symlink in a temp dir (as it would
//! `/dev/serial/by-id/...`), the bench plays the module on the master, on the load runtime.
//! Each module is registered (`store.create_module`, owned by the bench user), says hello, waits
//! for the hub's accept, then sends a heartbeat every second for the whole bench and, while its
//! framing is being measured, telemetry with 8 readings (binary: by index, mask `0xFF`; JSON:
//! by name). One dashboard (the bench's raw WebSocket client) receives `rt_telemetry_updated`.
//!
//! # Pacing
//! A pty has no baud rate: it moves bytes as fast as both ends go. So each line's task models
//! the line: 8N1 is 10 bits per byte, `--baud 115200` = 11,520 bytes/s. The task ticks every
//! millisecond and writes every whole frame whose turn has come: a frame starts when the line
//! would have finished transmitting the previous one (`line_free`), and occupies it for
//! `bytes / (baud / 10)` seconds. Heartbeats take their turn on the line like any frame. Open
//! loop: the schedule follows the clock only, never the hub's replies; if a write to the pty
//! stalls, the frames that fell due meanwhile go out together when it returns, stamped with
//! their scheduled times. `--unpaced` drops the model and writes frames as fast as the pty takes
//! them (closed loop through the pty buffer: a throughput figure, its latencies are queueing).
//!
//! # Latency
//! The `solar` reading carries the message's `seq` (exact in an `f32` below 2^24), so the
//! dashboard looks the send time up in the [`SendLog`] by (module, `solar`). The send time is
//! the frame's scheduled start on the modelled line; a pty delivers the whole frame at once, so
//! a real line adds the frame's own transmission time (bytes ÷ 11,520 s at 115200 baud).
//!
//! # Windows
//! The framings are measured one at a time (both ports stay open, the idle framing sends only
//! heartbeats), so that the hub's CPU over a window belongs to one framing: first a window with
//! heartbeats only (the hub's idle cost), then binary, JSON, binary, JSON... `--repeat` times.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use mc_hub::{
    RunningHub,
    config::{BAUD_RANGE, Framing, SerialPortSpec},
    metrics::SerialPortMetrics,
};
use mc_protocol::{
    FirmwareVersion, Heartbeat, ModuleId, ReadingName, Readings, Telemetry,
    link::{
        self, ADDRESS_POINT_TO_POINT, Accumulated, DELIMITER, Downlink, FrameAccumulator,
        LINK_VERSION, LinkHello, LinkTelemetry, Uplink,
        json::{self, JsonDownlink, JsonHello, JsonUplink},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf},
    sync::mpsc,
    task::JoinSet,
    time::Instant,
};
use tokio_serial::{SerialPort, SerialStream};
use tokio_util::sync::CancellationToken;

use crate::{
    Bench,
    dashboard::{self, Dashboard, EventSink},
    load::{self, Latencies, SendLog},
    sys,
};

/// The readings of every module, in index order (the binary hello announces them once).
const READINGS: [&str; 8] = [
    "temperature",
    "humidity",
    "battery",
    "rssi",
    "pressure",
    "wind",
    "rain",
    "solar",
];
/// The reading that carries `seq`, the send log's key (the last one: index 7).
const KEY_READING: &str = "solar";
/// Heartbeat interval announced in the hello and kept by every line.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Telemetry interval announced in the hello (the protocol's minimum; the hub does not hold a
/// module to it, and the line rate is what paces the bench).
const TELEMETRY_MS: u32 = 100;
/// Bits on the line per byte with 8N1: start bit, 8 data bits, stop bit.
const BITS_PER_BYTE: f64 = 10.0;
/// Bytes written per batch by an unpaced line.
const FLOOD_CHUNK: usize = 2048;

/// What a line's task did, and whether it sends telemetry now; shared with the orchestrator.
#[derive(Default)]
struct LineState {
    /// Telemetry goes out while set; heartbeats always do.
    sending: AtomicBool,
    /// Telemetry frames written to the pty.
    telemetry_frames: AtomicU64,
    /// Their bytes, delimiters included: what the line carried.
    telemetry_bytes: AtomicU64,
    /// Heartbeat frames written.
    heartbeats: AtomicU64,
    /// Frames from the hub after its accept (error reports, refusals): 0 in a clean run.
    /// (Before it, the hub may refuse once: it asks for a hello whenever it opens a port.)
    replies: AtomicU64,
    /// The last of those, for the report.
    last_reply: Mutex<Option<String>>,
}

/// One modelled serial line: a module on the master side of a pty pair.
struct Line {
    framing: Framing,
    /// The module's index in the send log; its id is [`load::module_id`] of it.
    module: usize,
    /// The symlink the hub opens.
    link: PathBuf,
    state: Arc<LineState>,
}

/// How lines put frames on the pty.
#[derive(Debug, Clone, Copy)]
enum Pacing {
    /// Whole frames at the byte rate of a line of this many bytes per second.
    Line { bytes_per_sec: f64 },
    /// As fast as the pty takes them.
    Unpaced,
}

/// The numbers of one measurement window.
#[derive(Debug, Clone, Copy)]
struct SerialRun {
    framing: Framing,
    /// Mean telemetry frame size on the line, delimiter included.
    bytes_per_frame: f64,
    /// Telemetry frames written per second, per line.
    offered: f64,
    /// Telemetry frames the hub decoded per second, per line (port `frames_in` minus the
    /// heartbeats written in the window).
    ingested: f64,
    /// `rt_telemetry_updated` emits per second, per line (hub counter).
    emitted: f64,
    /// Events received by the dashboard per second, per line, during the window.
    delivered: f64,
    /// Telemetry frames written minus events at the dashboard after the drain.
    lost: i64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Hub-side CPU (hub-rt + sqlx + rumqttd router) per frame ingested, µs.
    hub_us: f64,
    /// The hub runtime's threads (`hub-rt`) per frame ingested, µs.
    rt_us: f64,
    /// `rt_us` minus the idle window's hub-rt CPU for the same time, per frame, µs.
    marginal_us: f64,
    /// Hub-side CPU over the window, % of one core.
    hub_pct: f64,
    /// Port frames that failed to decode, and frames the hub sent back.
    frame_errors: u64,
    replies: u64,
    /// Emits that failed for the dashboard's socket (its buffer was full).
    emit_errors: u64,
}

/// Hub-side CPU of the idle window (heartbeats only), ns per second.
#[derive(Debug, Clone, Copy, Default)]
struct Idle {
    hub_ns_per_s: f64,
    rt_ns_per_s: f64,
}

/// Runs `--serial` and prints its tables.
pub async fn serial(bench: &Bench) -> Result<()> {
    let a = &bench.args;
    let n = a.lines;
    ensure!((1..=64).contains(&n), "--lines must be between 1 and 64");
    ensure!(a.baud >= 300, "--baud must be at least 300");
    let pacing = if a.unpaced {
        Pacing::Unpaced
    } else {
        Pacing::Line {
            bytes_per_sec: f64::from(a.baud) / BITS_PER_BYTE,
        }
    };

    // The lines: binary modules 0..n, JSON modules n..2n.
    let links = tempfile::tempdir().context("temp dir for the port symlinks")?;
    let mut lines = Vec::with_capacity(2 * n);
    let mut masters = Vec::with_capacity(2 * n);
    let mut slaves = Vec::with_capacity(2 * n);
    for (f, framing) in [Framing::Binary, Framing::JsonLines]
        .into_iter()
        .enumerate()
    {
        for i in 0..n {
            let name = match framing {
                Framing::Binary => format!("ttyBIN{i}"),
                Framing::JsonLines => format!("ttyJSON{i}"),
            };
            let link = links.path().join(name);
            let (master, slave) = plug(&link)?;
            masters.push(master);
            // Held open so the master never reads EIO while the hub has the slave closed.
            slaves.push(slave);
            lines.push(Line {
                framing,
                module: f * n + i,
                link,
                state: Arc::default(),
            });
        }
    }
    let hub_baud = a.baud.clamp(*BAUD_RANGE.start(), *BAUD_RANGE.end());
    let specs: Vec<SerialPortSpec> = lines
        .iter()
        .map(|l| SerialPortSpec {
            path: l.link.clone(),
            baud: hub_baud,
            framing: l.framing,
        })
        .collect();
    let h = crate::start_hub_with(bench, 2 * n, true, move |c| {
        c.serial = specs;
        // No admin is connected; the stats task would only add wake-ups to the idle cost.
        c.realtime.enable_stats = false;
    })
    .await?;
    let hub = &h.hub;
    let ports: Vec<Arc<SerialPortMetrics>> = lines
        .iter()
        .map(|l| hub.metrics.serial_port(&l.link.to_string_lossy()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ports.iter().all(|p| p.is_open()) {
        ensure!(Instant::now() < deadline, "the hub did not open every port");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let log = Arc::new(SendLog::new(2 * n));
    let latencies = Arc::new(Latencies::new());
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let cookie = dashboard::login(hub.http_addr, crate::EMAIL, crate::PASSWORD).await?;
    let dash = Dashboard::connect(hub.http_addr, &cookie, "modules")
        .await
        .context("dashboard")?;
    let sink = Arc::new(
        EventSink::new(Some((log.clone(), latencies.clone()))).with_key_reading(KEY_READING),
    );
    tasks.spawn(dash.run(sink.clone(), stop.clone()));

    let mut drivers = JoinSet::new();
    for (line, master) in lines.iter().zip(masters) {
        let (reader, mut writer) = tokio::io::split(master);
        let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
        tasks.spawn(read_replies(
            reader,
            line.framing,
            line.state.clone(),
            accepted_tx,
        ));
        handshake(&mut writer, line, &mut accepted)
            .await
            .with_context(|| format!("handshake on {}", line.link.display()))?;
        drivers.spawn(drive(
            writer,
            line.framing,
            line.module,
            line.state.clone(),
            pacing,
            log.clone(),
            stop.clone(),
        ));
    }
    bench.pin_new_threads();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let pacing_text = match pacing {
        Pacing::Line { bytes_per_sec } => {
            format!("paced at {} baud 8N1 ({bytes_per_sec:.0} bytes/s)", a.baud)
        }
        Pacing::Unpaced => "unpaced (as fast as the pty takes)".to_owned(),
    };
    println!(
        "serial: {n} binary + {n} JSON-lines port(s), {pacing_text}, {} s windows, 1 dashboard",
        a.seconds
    );

    let idle = idle_window(a.seconds, &lines).await?;
    println!(
        "idle (heartbeats only, {} lines): hub-side {:.0} µs CPU/s, hub-rt {:.0} µs CPU/s",
        2 * n,
        idle.hub_ns_per_s / 1000.0,
        idle.rt_ns_per_s / 1000.0
    );
    let mut rows = Vec::new();
    for run in 0..a.repeat.max(1) {
        for framing in [Framing::Binary, Framing::JsonLines] {
            let r = window(
                a.seconds, framing, &lines, &ports, hub, &sink, &log, &latencies, idle,
            )
            .await?;
            println!("run {} {}: {r:?}", run + 1, label(framing));
            rows.push(r);
            if let Some(error) = drivers.try_join_next() {
                error.context("a line task panicked")??;
                bail!("a line task stopped");
            }
        }
    }
    for line in &lines {
        if let Ok(Some(reply)) = line.state.last_reply.lock().map(|r| r.clone()) {
            println!("{}: last reply from the hub: {reply}", line.link.display());
        }
    }
    print_tables(a, pacing, &rows);

    stop.cancel();
    while let Some(r) = drivers.join_next().await {
        r.context("a line task panicked")??;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    h.stop().await;
    drop(slaves);
    Ok(())
}

fn label(framing: Framing) -> &'static str {
    match framing {
        Framing::Binary => "binary",
        Framing::JsonLines => "JSON lines",
    }
}

/// A new pty pair with `link` pointing at its slave: (master, slave).
fn plug(link: &Path) -> Result<(SerialStream, SerialStream)> {
    let (master, slave) = SerialStream::pair().context("pty pair")?;
    let slave_path = slave.name().context("the pty slave has no name")?;
    std::os::unix::fs::symlink(&slave_path, link)
        .with_context(|| format!("symlink {} -> {slave_path}", link.display()))?;
    Ok((master, slave))
}

/// Reads the hub's frames on a line: its accept goes to `accepted`; anything else after the
/// first accept is counted.
async fn read_replies(
    mut reader: ReadHalf<SerialStream>,
    framing: Framing,
    state: Arc<LineState>,
    accepted: mpsc::UnboundedSender<()>,
) {
    let mut frames = FrameAccumulator::with_delimiter(match framing {
        Framing::Binary => DELIMITER,
        Framing::JsonLines => b'\n',
    });
    let mut buf = [0u8; 1024];
    let mut accepted_once = false;
    while let Ok(n @ 1..) = reader.read(&mut buf).await {
        for &byte in &buf[..n] {
            let Some(Accumulated::Frame(frame)) = frames.push(byte) else {
                continue;
            };
            let reply = match framing {
                Framing::Binary => match link::decode_downlink(frame) {
                    Ok((_, Downlink::Accept(_))) => None,
                    other => Some(format!("{other:?}")),
                },
                Framing::JsonLines => match json::decode_downlink_line(frame) {
                    Ok(JsonDownlink::Accept(_)) => None,
                    other => Some(format!("{other:?}")),
                },
            };
            match reply {
                None => {
                    accepted_once = true;
                    let _ = accepted.send(());
                }
                Some(_) if !accepted_once => {}
                Some(reply) => {
                    state.replies.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut last) = state.last_reply.lock() {
                        *last = Some(reply);
                    }
                }
            }
        }
    }
}

/// Says hello (again every second) until the hub accepts, for 10 s at most.
async fn handshake(
    writer: &mut WriteHalf<SerialStream>,
    line: &Line,
    accepted: &mut mpsc::UnboundedReceiver<()>,
) -> Result<()> {
    let hello = hello_frame(line.framing, &load::module_id(line.module))?;
    for _ in 0..10 {
        writer.write_all(&hello).await.context("write hello")?;
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(1), accepted.recv()).await {
            return Ok(());
        }
    }
    bail!("no accept from the hub in 10 s")
}

fn hello_frame(framing: Framing, id: &str) -> Result<Vec<u8>> {
    let module = ModuleId::new(id)?;
    let fw = FirmwareVersion::new("bench-1")?;
    let heartbeat_ms = HEARTBEAT.as_millis() as u32;
    Ok(match framing {
        Framing::Binary => {
            let mut hello = LinkHello {
                protocol: LINK_VERSION,
                module,
                fw,
                heartbeat_ms,
                telemetry_ms: TELEMETRY_MS,
                readings: Default::default(),
            };
            for name in READINGS {
                hello
                    .readings
                    .push(ReadingName::new(name)?)
                    .map_err(|_| anyhow!("too many readings"))?;
            }
            link::uplink_to_vec(ADDRESS_POINT_TO_POINT, &Uplink::Hello(hello))?
        }
        Framing::JsonLines => json::uplink_line(&JsonUplink::Hello(JsonHello {
            protocol: LINK_VERSION,
            module,
            fw,
            heartbeat_ms,
            telemetry_ms: TELEMETRY_MS,
        })),
    })
}

fn heartbeat_frame(framing: Framing, seq: u32, uptime: Duration) -> Result<Vec<u8>> {
    let heartbeat = Heartbeat {
        seq,
        uptime_ms: uptime.as_millis() as u64,
    };
    Ok(match framing {
        Framing::Binary => {
            link::uplink_to_vec(ADDRESS_POINT_TO_POINT, &Uplink::Heartbeat(heartbeat))?
        }
        Framing::JsonLines => json::uplink_line(&JsonUplink::Heartbeat(heartbeat)),
    })
}

/// The 8 readings of message `seq`: `temperature` and `solar` (= `seq`) change every time.
fn values(seq: u32) -> [f32; 8] {
    [
        20.0 + (seq % 100) as f32 * 0.1,
        45.5,
        3.71,
        -67.0,
        1013.2,
        3.4,
        0.2,
        seq as f32,
    ]
}

fn telemetry_frame(framing: Framing, seq: u32) -> Result<Vec<u8>> {
    ensure!(seq < 1 << 24, "seq {seq} is no longer exact in an f32");
    Ok(match framing {
        Framing::Binary => {
            let mut telemetry = LinkTelemetry {
                seq,
                mask: 0xFF,
                values: Default::default(),
            };
            for v in values(seq) {
                telemetry
                    .values
                    .push(v)
                    .map_err(|_| anyhow!("too many readings"))?;
            }
            link::uplink_to_vec(ADDRESS_POINT_TO_POINT, &Uplink::Telemetry(telemetry))?
        }
        Framing::JsonLines => {
            let mut readings = Readings::new();
            for (name, v) in READINGS.into_iter().zip(values(seq)) {
                readings.push(name, v)?;
            }
            json::uplink_line(&JsonUplink::Telemetry(Box::new(Telemetry {
                seq,
                readings,
            })))
        }
    })
}

/// Plays one module on its line until `stop`: heartbeats every second, telemetry while
/// `state.sending`, paced by `pacing` (see the module docs).
async fn drive(
    mut writer: WriteHalf<SerialStream>,
    framing: Framing,
    module: usize,
    state: Arc<LineState>,
    pacing: Pacing,
    log: Arc<SendLog>,
    stop: CancellationToken,
) -> Result<()> {
    let started = Instant::now();
    let mut line_free = started;
    let mut next_heartbeat = started;
    let mut heartbeat_seq = 0u32;
    let mut seq = 0u32;
    let mut out = Vec::with_capacity(FLOOD_CHUNK + 1024);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // One telemetry frame, logged as sent at `at_us`, appended to `out`; returns its length.
    let mut telemetry = |out: &mut Vec<u8>, at_us: u64| -> Result<usize> {
        seq += 1;
        let frame = telemetry_frame(framing, seq)?;
        log.record(module, seq, at_us);
        state.telemetry_frames.fetch_add(1, Ordering::Relaxed);
        state
            .telemetry_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        out.extend_from_slice(&frame);
        Ok(frame.len())
    };
    loop {
        let sending = state.sending.load(Ordering::Relaxed);
        let flood = sending && matches!(pacing, Pacing::Unpaced);
        if flood {
            if stop.is_cancelled() {
                return Ok(());
            }
        } else {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
        }
        let now = Instant::now();
        let now_us = log.now_us();
        out.clear();
        let mut heartbeat_due = |at: Instant, out: &mut Vec<u8>| -> Result<Option<usize>> {
            if next_heartbeat > at {
                return Ok(None);
            }
            next_heartbeat = (next_heartbeat + HEARTBEAT).max(at);
            heartbeat_seq += 1;
            let frame = heartbeat_frame(framing, heartbeat_seq, at - started)?;
            state.heartbeats.fetch_add(1, Ordering::Relaxed);
            out.extend_from_slice(&frame);
            Ok(Some(frame.len()))
        };
        match pacing {
            Pacing::Unpaced => {
                heartbeat_due(now, &mut out)?;
                while flood && out.len() < FLOOD_CHUNK {
                    telemetry(&mut out, now_us)?;
                }
            }
            Pacing::Line { bytes_per_sec } => {
                // Every frame whose turn on the modelled line has come, at its turn.
                while line_free <= now {
                    let at = line_free;
                    let len = match heartbeat_due(at, &mut out)? {
                        Some(len) => len,
                        None if sending => {
                            let at_us = now_us.saturating_sub((now - at).as_micros() as u64);
                            telemetry(&mut out, at_us)?
                        }
                        None => {
                            // Nothing to send: the line idles, and idle time is not credit.
                            line_free = now;
                            break;
                        }
                    };
                    line_free = at + Duration::from_secs_f64(len as f64 / bytes_per_sec);
                }
            }
        }
        if !out.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = writer.write_all(&out) => r.context("write to the pty")?,
            }
        }
        if flood {
            tokio::task::yield_now().await;
        }
    }
}

/// Sums of the counters a window compares.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    telemetry_frames: u64,
    telemetry_bytes: u64,
    heartbeats: u64,
    replies: u64,
    frames_in: u64,
    frame_errors: u64,
    emitted: u64,
    emit_errors: u64,
    delivered: u64,
}

impl Sample {
    fn take(
        lines: &[&Line],
        ports: &[&Arc<SerialPortMetrics>],
        hub: &RunningHub,
        sink: &EventSink,
    ) -> Self {
        let sum = |f: &dyn Fn(&LineState) -> &AtomicU64| -> u64 {
            lines
                .iter()
                .map(|l| f(&l.state).load(Ordering::Relaxed))
                .sum()
        };
        Self {
            telemetry_frames: sum(&|s| &s.telemetry_frames),
            telemetry_bytes: sum(&|s| &s.telemetry_bytes),
            heartbeats: sum(&|s| &s.heartbeats),
            replies: sum(&|s| &s.replies),
            frames_in: ports.iter().map(|p| p.frames_in.get()).sum(),
            frame_errors: ports.iter().map(|p| p.frame_errors.get()).sum(),
            emitted: hub.metrics.events_emitted.get(),
            emit_errors: hub.metrics.emit_errors.get(),
            delivered: sink.count(),
        }
    }
}

/// Hub-side and hub-rt CPU (ns) between two samples.
fn hub_cpu(
    before: &std::collections::HashMap<u32, (&'static str, u64)>,
    after: &std::collections::HashMap<u32, (&'static str, u64)>,
) -> (u64, u64) {
    let names = sys::thread_names();
    let delta = |prefix: &str| sys::cpu_ns_delta(before, after, &names, prefix);
    let rt = delta("hub-rt");
    (rt + delta("sqlx") + delta("router-"), rt)
}

/// `seconds` of heartbeats only: what the hub costs with its ports open and nothing to do.
async fn idle_window(seconds: u64, lines: &[Line]) -> Result<Idle> {
    ensure!(
        lines
            .iter()
            .all(|l| !l.state.sending.load(Ordering::Relaxed)),
        "a line is sending"
    );
    let cpu0 = sys::cpu_ns();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu1 = sys::cpu_ns();
    let secs = t0.elapsed().as_secs_f64();
    let (hub, rt) = hub_cpu(&cpu0, &cpu1);
    Ok(Idle {
        hub_ns_per_s: hub as f64 / secs,
        rt_ns_per_s: rt as f64 / secs,
    })
}

/// One window of `seconds` with the lines of `framing` sending telemetry.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
async fn window(
    seconds: u64,
    framing: Framing,
    lines: &[Line],
    ports: &[Arc<SerialPortMetrics>],
    hub: &RunningHub,
    sink: &Arc<EventSink>,
    log: &SendLog,
    latencies: &Latencies,
    idle: Idle,
) -> Result<SerialRun> {
    let (active, active_ports): (Vec<&Line>, Vec<&Arc<SerialPortMetrics>>) = lines
        .iter()
        .zip(ports)
        .filter(|(l, _)| l.framing == framing)
        .unzip();
    let n = active.len() as f64;
    latencies.restart(log.now_us() + 1_000_000);
    let s0 = Sample::take(&active, &active_ports, hub, sink);
    let cpu0 = sys::cpu_ns();
    let t0 = Instant::now();
    for l in &active {
        l.state.sending.store(true, Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for l in &active {
        l.state.sending.store(false, Ordering::Relaxed);
    }
    let cpu1 = sys::cpu_ns();
    let secs = t0.elapsed().as_secs_f64();
    let s1 = Sample::take(&active, &active_ports, hub, sink);
    crate::drain(std::slice::from_ref(sink)).await;
    // After the drain, so that a frame a line was building as the window closed counts on
    // both sides.
    let s2 = Sample::take(&active, &active_ports, hub, sink);
    ensure!(
        s2.telemetry_frames == s0.telemetry_frames || s2.delivered > s0.delivered,
        "the dashboard received no event in the {} window: its connection is gone",
        label(framing)
    );
    // Let the lines go idle before the next window starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let frames = s1.telemetry_frames - s0.telemetry_frames;
    let ingested = (s1.frames_in - s0.frames_in).saturating_sub(s1.heartbeats - s0.heartbeats);
    let (hub_ns, rt_ns) = hub_cpu(&cpu0, &cpu1);
    let per_frame = |ns: f64| ns / 1000.0 / ingested.max(1) as f64;
    let sorted = latencies.sorted();
    Ok(SerialRun {
        framing,
        bytes_per_frame: (s1.telemetry_bytes - s0.telemetry_bytes) as f64 / frames.max(1) as f64,
        offered: frames as f64 / secs / n,
        ingested: ingested as f64 / secs / n,
        emitted: (s1.emitted - s0.emitted) as f64 / secs / n,
        delivered: (s1.delivered - s0.delivered) as f64 / secs / n,
        lost: (s2.telemetry_frames - s0.telemetry_frames) as i64
            - (s2.delivered - s0.delivered) as i64,
        p50_ms: load::percentile_ms(&sorted, 50.0),
        p99_ms: load::percentile_ms(&sorted, 99.0),
        max_ms: load::percentile_ms(&sorted, 100.0),
        hub_us: per_frame(hub_ns as f64),
        rt_us: per_frame(rt_ns as f64),
        marginal_us: per_frame(rt_ns as f64 - idle.rt_ns_per_s * secs),
        hub_pct: hub_ns as f64 / secs / 1e7,
        frame_errors: s1.frame_errors - s0.frame_errors,
        replies: s1.replies - s0.replies,
        emit_errors: s2.emit_errors - s0.emit_errors,
    })
}

/// The median of `f` over `rows`.
fn median(rows: &[&SerialRun], f: impl Fn(&SerialRun) -> f64) -> f64 {
    let mut v: Vec<f64> = rows.iter().map(|r| f(r)).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_tables(a: &crate::Args, pacing: Pacing, rows: &[SerialRun]) {
    let line = match pacing {
        Pacing::Line { .. } => format!("{} baud", a.baud),
        Pacing::Unpaced => "unpaced".to_owned(),
    };
    println!(
        "\n### Serial line rate: {} line(s) per framing, {line}, {} s windows\n",
        a.lines, a.seconds
    );
    println!(
        "| run | framing | bytes/frame | offered frames/s/line | ingested frames/s/line | emitted /s/line | at dashboard /s/line | lost | p50 ms | p99 ms | max ms | hub-side µs/frame | hub-rt µs/frame | hub-rt µs/frame minus idle | hub-side CPU % | frame errors | hub replies | emit errors |"
    );
    println!(
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} |",
            i / 2 + 1,
            label(r.framing),
            r.bytes_per_frame,
            r.offered,
            r.ingested,
            r.emitted,
            r.delivered,
            r.lost,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.hub_us,
            r.rt_us,
            r.marginal_us,
            r.hub_pct,
            r.frame_errors,
            r.replies,
            r.emit_errors,
        );
    }
    let by = |framing: Framing| -> Vec<&SerialRun> {
        rows.iter().filter(|r| r.framing == framing).collect()
    };
    let (binary, json) = (by(Framing::Binary), by(Framing::JsonLines));
    println!("\n### Serial line rate: medians of {} runs\n", binary.len());
    println!("| metric | binary | JSON lines | binary / JSON |");
    println!("|---|---:|---:|---:|");
    type Column = fn(&SerialRun) -> f64;
    let metrics: [(&str, Column); 11] = [
        ("bytes per telemetry frame on the line", |r| {
            r.bytes_per_frame
        }),
        ("offered frames/s per line", |r| r.offered),
        ("ingested frames/s per line (hub)", |r| r.ingested),
        ("emitted events/s per line (hub)", |r| r.emitted),
        ("events/s per line at the dashboard", |r| r.delivered),
        ("latency p50 ms", |r| r.p50_ms),
        ("latency p99 ms", |r| r.p99_ms),
        ("hub-side CPU µs/frame", |r| r.hub_us),
        ("hub-rt CPU µs/frame", |r| r.rt_us),
        ("hub-rt CPU µs/frame minus idle", |r| r.marginal_us),
        ("hub-side CPU %", |r| r.hub_pct),
    ];
    for (name, f) in metrics {
        let (b, j) = (median(&binary, f), median(&json, f));
        println!("| {name} | {b:.2} | {j:.2} | {:.2} |", b / j);
    }
}
