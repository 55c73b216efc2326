//! `pipeline-bench`: an open-loop benchmark of the whole hub pipeline, MQTT publish → gateway →
//! broker → ingest → tracker diff → Socket.IO event at dashboards.
//!
//! # Layout
//! - `main.rs`: flags, the two runtimes, scenarios and the markdown tables.
//! - [`load`]: simulated modules (rumqttc), the open-loop schedule, the send log for latency.
//! - [`dashboard`]: login and a minimal raw-WebSocket Socket.IO client that counts events.
//! - [`routing`]: `--routing`, cost per event vs connected sockets that are not recipients.
//! - [`serial`]: `--serial`, frames per second a serial line carries through the hub, binary
//!   link vs JSON lines, on ptys paced to the line's byte rate, and the hub's CPU per frame.
//! - [`peer`]: the reference: a bare rumqttd broker and a plain rumqttc subscriber.
//! - [`sys`]: RSS, per-thread CPU time, pinning hub threads to CPU 0 and the rest to CPU 1.
//!
//! One process, two tokio runtimes: the hub's (`hub-rt`, 1 worker by default, plus rumqttd's
//! router thread) and the load's (`load-rt`: modules, dashboards, the generator). With two CPUs
//! or more the hub side is pinned to CPU 0 and everything else to CPU 1 (`taskset -p` per
//! thread), so the load generator does not steal the hub's core.

mod peer;
mod routing;
mod serial;
mod sys;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use mc_hub::{
    Config, Listeners, RunningHub,
    connections::Transport,
    ingest::ModuleEvent,
    store::{NewModule, NewUser},
};
use mc_protocol::{ModuleId, Readings, Telemetry};
use tokio::{runtime::Handle, task::JoinSet};
use tokio_util::sync::CancellationToken;

use mc_bench::{dashboard, load};

use dashboard::{Dashboard, EventSink};
use load::{Credentials, Latencies, SendLog};

const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "bench-password";

/// Open-loop benchmark of the hub pipeline. Prints markdown tables; writes nothing.
#[derive(Parser, Debug)]
#[command(name = "pipeline-bench")]
struct Args {
    /// Offered load, messages per second in total.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Simulated modules (one MQTT connection each).
    #[arg(long, default_value_t = 100)]
    modules: usize,
    /// Dashboard clients (Socket.IO); the first one measures latency, all count events.
    #[arg(long, default_value_t = 10)]
    dashboards: usize,
    /// Seconds of load per run (the first second is warm-up, excluded from latency).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Run each scenario this many times; tables show per-run rows and the median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Run the rates of `--rates` instead of `--rate`.
    #[arg(long)]
    sweep: bool,
    /// Rates for `--sweep`.
    #[arg(long, value_delimiter = ',', default_value = "5000,10000,20000,50000")]
    rates: Vec<f64>,
    /// Max-throughput ingest: `--connections` clients publish as fast as they can.
    #[arg(long)]
    ingest_max: bool,
    /// Connections for `--ingest-max`.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Memory per module: feed this many synthetic modules to the tracker (0: skip).
    #[arg(long, default_value_t = 0)]
    memory: usize,
    /// Also run each load scenario against a bare rumqttd broker + rumqttc subscriber.
    #[arg(long)]
    peer: bool,
    /// Skip the hub runs (only with --peer).
    #[arg(long)]
    peer_only: bool,
    /// Hub runtime worker threads.
    #[arg(long, default_value_t = 1)]
    hub_workers: usize,
    /// The hub's realtime batch window (`0ms` = emit every event at once).
    #[arg(long, value_parser = humantime::parse_duration)]
    batch_window: Option<std::time::Duration>,
    /// Load runtime worker threads.
    #[arg(long, default_value_t = 1)]
    load_workers: usize,
    /// Routing cost vs non-recipient sockets (issue 3): A = one user's tabs only, B = plus
    /// every other user's tabs; alternated `--repeat` times at `--rate`.
    #[arg(long)]
    routing: bool,
    /// Users for `--routing` (non-admin; the first one owns the publishing modules).
    #[arg(long, default_value_t = 100)]
    routing_users: usize,
    /// Dashboard sockets per user for `--routing`.
    #[arg(long, default_value_t = 10)]
    routing_tabs: usize,
    /// Registered modules for `--routing`, owned round-robin; only the first user's connect.
    #[arg(long, default_value_t = 10_000)]
    routing_modules: usize,
    /// Serial line rate: binary link vs JSON lines through the hub's serial ports (ptys), open
    /// loop at the byte rate of `--baud` 8N1; windows of `--seconds`, `--repeat` times each.
    #[arg(long)]
    serial: bool,
    /// Ports per framing for `--serial` (`--lines 2`: 2 binary + 2 JSON-lines ports).
    #[arg(long, default_value_t = 1)]
    lines: usize,
    /// Line speed modelled by `--serial` (bytes/s = baud / 10); also the ports' configured baud.
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// `--serial` without pacing: frames as fast as the pty takes them (closed loop).
    #[arg(long)]
    unpaced: bool,
    /// Do not pin threads to CPUs.
    #[arg(long)]
    no_pin: bool,
}

/// One run's numbers; every column of the tables.
#[derive(Debug, Clone, Default)]
struct RunResult {
    target: &'static str,
    offered: f64,
    sent: u64,
    client_dropped: u64,
    ingest_rate: f64,
    events_min: u64,
    events_max: u64,
    loss_pct: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    cpu_hub: f64,
    cpu_router: f64,
    cpu_load: f64,
    rss_before_mib: f64,
    rss_after_mib: f64,
    emit_errors: u64,
}

/// Everything a scenario needs: where to run hub-side work, and the pinner.
struct Bench {
    hub_rt: Handle,
    pinner: Mutex<sys::Pinner>,
    args: Args,
}

impl Bench {
    fn pin_new_threads(&self) {
        if let Ok(mut p) = self.pinner.lock() {
            p.pin_new();
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.modules == 0 || args.modules > 50_000 {
        bail!("--modules must be between 1 and 50000");
    }
    if args.seconds < 2 {
        bail!("--seconds must be at least 2 (the first second is warm-up)");
    }
    let hub_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.hub_workers.max(1))
        .thread_name("hub-rt")
        .enable_all()
        .build()
        .context("hub runtime")?;
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.load_workers.max(1))
        .thread_name("load-rt")
        .enable_all()
        .build()
        .context("load runtime")?;
    let pinner = sys::Pinner::new(!args.no_pin);
    let bench = Arc::new(Bench {
        hub_rt: hub_rt.handle().clone(),
        pinner: Mutex::new(pinner),
        args,
    });
    bench.pin_new_threads();
    let orchestrate = load_rt.spawn(run_all(bench));
    load_rt
        .block_on(orchestrate)
        .context("bench task panicked")?
}

async fn run_all(bench: Arc<Bench>) -> Result<()> {
    let a = &bench.args;
    let pinned = bench.pinner.lock().map(|p| p.enabled()).unwrap_or(false);
    println!(
        "pipeline-bench: {} hub worker(s), {} load worker(s), pinning {}",
        a.hub_workers,
        a.load_workers,
        if pinned {
            "hub→CPU0, load→CPU1"
        } else {
            "off"
        }
    );
    if a.routing {
        return routing::routing(&bench).await;
    }
    if a.serial {
        return serial::serial(&bench).await;
    }
    if a.memory > 0 {
        memory(&bench, a.memory).await?;
    }
    if a.ingest_max {
        let mut rows = Vec::new();
        for _ in 0..a.repeat.max(1) {
            if !a.peer_only {
                rows.push(ingest_max(&bench, false).await?);
            }
            if a.peer || a.peer_only {
                rows.push(ingest_max(&bench, true).await?);
            }
        }
        print_ingest_table(&rows);
    }
    if a.memory > 0 && !a.sweep && !a.ingest_max {
        return Ok(());
    }
    if a.ingest_max && !a.sweep {
        return Ok(());
    }
    let rates = if a.sweep {
        a.rates.clone()
    } else {
        vec![a.rate]
    };
    let mut rows = Vec::new();
    for &rate in &rates {
        for _ in 0..a.repeat.max(1) {
            if !a.peer_only {
                let r = pipeline(&bench, rate, false).await?;
                print_rows(
                    &format!("run: hub at {rate} msg/s"),
                    std::slice::from_ref(&r),
                );
                rows.push(r);
            }
            if a.peer || a.peer_only {
                let r = pipeline(&bench, rate, true).await?;
                print_rows(
                    &format!("run: peer at {rate} msg/s"),
                    std::slice::from_ref(&r),
                );
                rows.push(r);
            }
        }
    }
    print_rows(
        &format!(
            "all runs: {} modules, {} dashboards, {} s",
            a.modules, a.dashboards, a.seconds
        ),
        &rows,
    );
    if a.repeat > 1 {
        let mut medians = Vec::new();
        for &rate in &rates {
            for target in ["hub", "peer"] {
                let runs: Vec<RunResult> = rows
                    .iter()
                    .filter(|r| r.offered == rate && r.target == target)
                    .cloned()
                    .collect();
                if !runs.is_empty() {
                    medians.push(median(&runs));
                }
            }
        }
        print_rows(&format!("medians of {} runs", a.repeat), &medians);
    }
    Ok(())
}

/// A started hub with a bench user and `modules` modules owned by it.
struct HubUnderTest {
    hub: RunningHub,
    shutdown: CancellationToken,
    creds: Vec<Credentials>,
    _dir: tempfile::TempDir,
}

impl HubUnderTest {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.hub.stopped()).await;
    }
}

/// The hub's configuration for a bench: loopback ephemeral ports, `data_dir`, the chosen
/// batch window.
pub(crate) fn hub_config(data_dir: &std::path::Path, args: &Args) -> Config {
    let mut config = Config {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    // The bench drives each module far above a field module's rate on purpose.
    config.ingest.module_rate = 0.0;
    if let Some(window) = args.batch_window {
        config.realtime.batch_window = window;
    }
    config
}

/// Starts a hub on the hub runtime (127.0.0.1:0, temp data dir) and registers `modules`
/// modules (owned by the bench user when `owned`).
async fn start_hub(bench: &Bench, modules: usize, owned: bool) -> Result<HubUnderTest> {
    start_hub_with(bench, modules, owned, |_| {}).await
}

/// [`start_hub`] with the configuration adjusted by `tweak` (serial ports, stats...).
async fn start_hub_with(
    bench: &Bench,
    modules: usize,
    owned: bool,
    tweak: impl FnOnce(&mut Config),
) -> Result<HubUnderTest> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut config = hub_config(dir.path(), &bench.args);
    tweak(&mut config);
    let started = bench
        .hub_rt
        .spawn(async move {
            let shutdown = CancellationToken::new();
            let listeners = Listeners::bind(&config).await?;
            let hub = mc_hub::start(config, listeners, shutdown.clone()).await?;
            hub.store
                .create_user(NewUser {
                    email: EMAIL.into(),
                    name: "Bench".into(),
                    password: PASSWORD.into(),
                    is_admin: false,
                })
                .await?;
            let mut creds = Vec::with_capacity(modules);
            for i in 0..modules {
                let (_, token) = hub
                    .store
                    .create_module(NewModule {
                        id: ModuleId::new(&load::module_id(i))?,
                        name: format!("bench {i}"),
                        kind: "bench".into(),
                        owner_email: owned.then(|| EMAIL.to_owned()),
                        heartbeat_timeout: None,
                    })
                    .await?;
                creds.push(Credentials {
                    id: load::module_id(i),
                    token: Some(token),
                });
            }
            anyhow::Ok((hub, shutdown, creds))
        })
        .await
        .context("hub start panicked")??;
    bench.pin_new_threads();
    let (hub, shutdown, creds) = started;
    Ok(HubUnderTest {
        hub,
        shutdown,
        creds,
        _dir: dir,
    })
}

/// Connects `count` dashboards; the first one records latency.
async fn connect_dashboards(
    http: SocketAddr,
    count: usize,
    log: &Arc<SendLog>,
    latencies: &Arc<Latencies>,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Vec<Arc<EventSink>>> {
    let cookie = dashboard::login(http, EMAIL, PASSWORD).await?;
    let mut sinks = Vec::with_capacity(count);
    for i in 0..count {
        let d = Dashboard::connect(http, &cookie, "modules")
            .await
            .with_context(|| format!("dashboard {i}"))?;
        let sink = Arc::new(EventSink::new(
            (i == 0).then(|| (log.clone(), latencies.clone())),
        ));
        tasks.spawn(d.run(sink.clone(), stop.clone()));
        sinks.push(sink);
    }
    Ok(sinks)
}

/// Waits until the counts stop moving (500 ms without change) or 5 s pass.
async fn drain(sinks: &[Arc<EventSink>]) {
    let total = || sinks.iter().map(|s| s.count()).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = total();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = total();
        if now == last {
            return;
        }
        last = now;
    }
}

fn cpu_pct(
    before: &std::collections::HashMap<&'static str, u64>,
    after: &std::collections::HashMap<&'static str, u64>,
    group: &str,
    secs: f64,
) -> f64 {
    let b = before.get(group).copied().unwrap_or(0);
    let a = after.get(group).copied().unwrap_or(0);
    a.saturating_sub(b) as f64 / sys::TICKS_PER_SEC / secs * 100.0
}

fn mib(kib: Option<u64>) -> f64 {
    kib.map_or(f64::NAN, |k| k as f64 / 1024.0)
}

/// One open-loop run at `rate` against the hub (or the bare broker when `peer`).
async fn pipeline(bench: &Bench, rate: f64, peer: bool) -> Result<RunResult> {
    let a = &bench.args;
    let log = Arc::new(SendLog::new(a.modules));
    let latencies = Arc::new(Latencies::new());
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut hub_tasks = JoinSet::new();

    let (hub, mqtt_addr, creds, sinks) = if peer {
        let addr = {
            let _guard = bench.hub_rt.enter();
            peer::start_broker(&mut hub_tasks)?
        };
        bench.pin_new_threads();
        let sink = peer::subscribe(addr, log.clone(), latencies.clone(), &mut tasks).await?;
        let creds = (0..a.modules)
            .map(|i| Credentials {
                id: load::module_id(i),
                token: None,
            })
            .collect();
        (None, addr, creds, vec![sink])
    } else {
        let mut h = start_hub(bench, a.modules, true).await?;
        let sinks = connect_dashboards(
            h.hub.http_addr,
            a.dashboards,
            &log,
            &latencies,
            &stop,
            &mut tasks,
        )
        .await?;
        let creds = std::mem::take(&mut h.creds);
        let addr = h.hub.mqtt_addr;
        (Some(h), addr, creds, sinks)
    };
    let clients = Arc::new(load::connect_modules(mqtt_addr, creds, 4096, &mut tasks).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let ingested = || {
        hub.as_ref()
            .map_or(0, |h| h.hub.metrics.messages_ingested.get())
    };
    let rss_before = sys::rss_kib();
    let ingested_before = ingested();
    let cpu_before = sys::cpu_ticks();
    latencies
        .warmup_until_us
        .store(log.now_us() + 1_000_000, Ordering::Relaxed);
    let duration = Duration::from_secs(a.seconds);
    let stats = tokio::spawn(load::open_loop(
        clients.clone(),
        rate,
        duration,
        log.clone(),
    ))
    .await
    .context("generator panicked")??;
    let secs = stats.elapsed.as_secs_f64();
    let cpu_after = sys::cpu_ticks();
    let ingested_in_window = ingested() - ingested_before;
    let first_count = sinks.iter().map(|s| s.count()).min().unwrap_or(0);
    drain(&sinks).await;
    let rss_after = sys::rss_kib();

    let counts: Vec<u64> = sinks.iter().map(|s| s.count()).collect();
    let events_min = counts.iter().copied().min().unwrap_or(0);
    let offered_total = stats.sent + stats.dropped;
    let sorted = latencies.sorted();
    let result = RunResult {
        target: if peer { "peer" } else { "hub" },
        offered: rate,
        sent: stats.sent,
        client_dropped: stats.dropped,
        ingest_rate: if peer {
            first_count as f64 / secs
        } else {
            ingested_in_window as f64 / secs
        },
        events_min,
        events_max: counts.iter().copied().max().unwrap_or(0),
        loss_pct: if offered_total == 0 {
            f64::NAN
        } else {
            offered_total.saturating_sub(events_min) as f64 / offered_total as f64 * 100.0
        },
        p50_ms: load::percentile_ms(&sorted, 50.0),
        p99_ms: load::percentile_ms(&sorted, 99.0),
        max_ms: load::percentile_ms(&sorted, 100.0),
        cpu_hub: cpu_pct(&cpu_before, &cpu_after, "hub", secs),
        cpu_router: cpu_pct(&cpu_before, &cpu_after, "router", secs),
        cpu_load: cpu_pct(&cpu_before, &cpu_after, "load", secs)
            + cpu_pct(&cpu_before, &cpu_after, "other", secs),
        rss_before_mib: mib(rss_before),
        rss_after_mib: mib(rss_after),
        emit_errors: hub.as_ref().map_or(0, |h| h.hub.metrics.emit_errors.get()),
    };

    stop.cancel();
    for c in clients.iter() {
        let _ = c.try_disconnect();
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    if let Some(h) = hub {
        h.stop().await;
    }
    // The bare broker's router thread has no shutdown API; its listener task stops here.
    {
        let _guard = bench.hub_rt.enter();
        hub_tasks.abort_all();
    }
    Ok(result)
}

/// Max-throughput ingest: `--connections` modules publish as fast as their clients accept for
/// `--seconds`; reports messages ingested (hub) or delivered (peer) per second.
async fn ingest_max(bench: &Bench, peer: bool) -> Result<(&'static str, f64, f64, f64, f64)> {
    let a = &bench.args;
    let n = a.connections.max(1);
    let log = Arc::new(SendLog::new(n));
    let latencies = Arc::new(Latencies::new());
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut hub_tasks = JoinSet::new();
    let (hub, addr, creds, sinks) = if peer {
        let addr = {
            let _guard = bench.hub_rt.enter();
            peer::start_broker(&mut hub_tasks)?
        };
        bench.pin_new_threads();
        let sink = peer::subscribe(addr, log.clone(), latencies.clone(), &mut tasks).await?;
        let creds = (0..n)
            .map(|i| Credentials {
                id: load::module_id(i),
                token: None,
            })
            .collect();
        (None, addr, creds, vec![sink])
    } else {
        let mut h = start_hub(bench, n, true).await?;
        let sinks = connect_dashboards(
            h.hub.http_addr,
            a.dashboards,
            &log,
            &latencies,
            &stop,
            &mut tasks,
        )
        .await?;
        let creds = std::mem::take(&mut h.creds);
        let addr = h.hub.mqtt_addr;
        (Some(h), addr, creds, sinks)
    };
    let clients = load::connect_modules(addr, creds, 1024, &mut tasks).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ingested = || {
        hub.as_ref()
            .map_or(0, |h| h.hub.metrics.messages_ingested.get())
    };
    let emitted = || {
        hub.as_ref()
            .map_or(0, |h| h.hub.metrics.events_emitted.get())
    };
    let delivered = || sinks.iter().map(|s| s.count()).min().unwrap_or(0);
    let (i0, e0, d0) = (ingested(), emitted(), delivered());
    let start = Instant::now();
    let mut floods = JoinSet::new();
    for (i, c) in clients.iter().enumerate() {
        floods.spawn(load::flood(c.clone(), i, stop.clone()));
    }
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let secs = start.elapsed().as_secs_f64();
    let (i1, e1, d1) = (ingested(), emitted(), delivered());
    stop.cancel();
    let mut sent = 0;
    while let Some(r) = floods.join_next().await {
        sent += r.context("flood panicked")??;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    if let Some(h) = hub {
        h.stop().await;
    }
    {
        let _guard = bench.hub_rt.enter();
        hub_tasks.abort_all();
    }
    let target = if peer { "peer" } else { "hub" };
    let ingest_rate = if peer {
        (d1 - d0) as f64 / secs
    } else {
        (i1 - i0) as f64 / secs
    };
    Ok((
        target,
        sent as f64 / secs,
        ingest_rate,
        (e1 - e0) as f64 / secs,
        (d1 - d0) as f64 / secs,
    ))
}

/// Memory per module: feed `count` synthetic modules (Connected + 8-reading Telemetry) straight
/// into the tracker of an idle hub and compare RSS before and after.
async fn memory(bench: &Bench, count: usize) -> Result<()> {
    let h = start_hub(bench, 0, false).await?;
    let store = h.hub.store.clone();
    let records = bench
        .hub_rt
        .spawn(async move {
            let mut records = Vec::with_capacity(count);
            for i in 0..count {
                let (record, _) = store
                    .create_module(NewModule {
                        id: ModuleId::new(&format!("MEM-{i:06}"))?,
                        name: format!("mem {i}"),
                        kind: "bench".into(),
                        owner_email: None,
                        heartbeat_timeout: None,
                    })
                    .await?;
                records.push(record);
            }
            anyhow::Ok(records)
        })
        .await
        .context("module creation panicked")??;
    let mut ids = Vec::with_capacity(count);
    let mut readings = Readings::new();
    for (name, value) in [
        ("seq", 1.0),
        ("temperature", 21.5),
        ("humidity", 45.5),
        ("pressure", 1013.2),
        ("battery", 3.71),
        ("rssi", -67.0),
        ("co2", 412.0),
        ("lux", 880.0),
    ] {
        readings.push(name, value)?;
    }
    let events = h.hub.tracker.events();
    let settle = async || {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sys::rss_kib()
    };
    let before = settle().await;
    for (i, record) in records.into_iter().enumerate() {
        ids.push(record.id.clone());
        events
            .send(ModuleEvent::Connected {
                record,
                session: i as u64 + 1,
                transport: Transport::Mqtt,
            })
            .await
            .context("tracker gone")?;
        events
            .send(ModuleEvent::Telemetry(
                ids[i].clone(),
                Box::new(Telemetry {
                    seq: 1,
                    readings: readings.clone(),
                }),
            ))
            .await
            .context("tracker gone")?;
        // Keep the channel short so its buffer does not inflate the measurement.
        if i % 256 == 255 {
            h.hub.tracker.counters().await.context("tracker gone")?;
        }
    }
    h.hub.tracker.counters().await.context("tracker gone")?;
    let after = settle().await;
    // Checked after measuring: the snapshot itself allocates.
    let cached = h
        .hub
        .tracker
        .snapshot()
        .await
        .context("tracker gone")?
        .values()
        .filter(|m| m.readings.len() == 8)
        .count();
    drop(ids);
    let (Some(b), Some(a)) = (before, after) else {
        bail!("cannot read VmRSS");
    };
    let per_module = (a.saturating_sub(b) * 1024) as f64 / count as f64;
    println!("\n### Memory per module ({count} modules, 8 readings each)\n");
    println!(
        "| modules | RSS before MiB | RSS after MiB | delta MiB | bytes/module | modules cached with 8 readings |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {count} | {:.1} | {:.1} | {:.1} | {per_module:.0} | {} |",
        b as f64 / 1024.0,
        a as f64 / 1024.0,
        (a.saturating_sub(b)) as f64 / 1024.0,
        cached,
    );
    h.stop().await;
    Ok(())
}

/// The median of every numeric column.
fn median(runs: &[RunResult]) -> RunResult {
    let med = |f: &dyn Fn(&RunResult) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    RunResult {
        target: runs[0].target,
        offered: runs[0].offered,
        sent: med(&|r| r.sent as f64) as u64,
        client_dropped: med(&|r| r.client_dropped as f64) as u64,
        ingest_rate: med(&|r| r.ingest_rate),
        events_min: med(&|r| r.events_min as f64) as u64,
        events_max: med(&|r| r.events_max as f64) as u64,
        loss_pct: med(&|r| r.loss_pct),
        p50_ms: med(&|r| r.p50_ms),
        p99_ms: med(&|r| r.p99_ms),
        max_ms: med(&|r| r.max_ms),
        cpu_hub: med(&|r| r.cpu_hub),
        cpu_router: med(&|r| r.cpu_router),
        cpu_load: med(&|r| r.cpu_load),
        rss_before_mib: med(&|r| r.rss_before_mib),
        rss_after_mib: med(&|r| r.rss_after_mib),
        emit_errors: med(&|r| r.emit_errors as f64) as u64,
    }
}

fn print_rows(title: &str, rows: &[RunResult]) {
    println!("\n### {title}\n");
    println!(
        "| target | offered msg/s | sent | client-dropped | ingested msg/s | events/dashboard min..max | loss % | p50 ms | p99 ms | max ms | CPU hub-rt % | CPU router % | CPU load % | RSS MiB before→after | emit errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {} | {} | {:.0} | {}..{} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0}→{:.0} | {} |",
            r.target,
            r.offered,
            r.sent,
            r.client_dropped,
            r.ingest_rate,
            r.events_min,
            r.events_max,
            r.loss_pct,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.cpu_hub,
            r.cpu_router,
            r.cpu_load,
            r.rss_before_mib,
            r.rss_after_mib,
            r.emit_errors,
        );
    }
}

fn print_ingest_table(rows: &[(&'static str, f64, f64, f64, f64)]) {
    println!("\n### Max-throughput ingest\n");
    println!(
        "| target | published msg/s | ingested msg/s | emits/s | events/s at slowest dashboard (peer: subscriber) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (t, sent, ingested, emitted, delivered) in rows {
        println!("| {t} | {sent:.0} | {ingested:.0} | {emitted:.0} | {delivered:.0} |");
    }
}
