//! `--routing`: does the hub's cost per event grow with connected sockets that are *not*
//! recipients? (Issue 3: events must be routed with rooms, not by filtering every socket.)
//!
//! One hub, `--routing-users` non-admin users and `--routing-modules` registered modules owned
//! round-robin by them (creation order `i` → user `i % users`). Only the first user's modules
//! (named `BENCH-00000..`, so the send log and topics index them from 0) connect over MQTT and
//! publish, open loop at `--rate`; every message changes `seq`, so every message is one event
//! for that user's room. Two scenarios, alternated `--repeat` times:
//! - A: the first user's `--routing-tabs` sockets only;
//! - B: the same, plus `--routing-tabs` sockets for each other user (not recipients).
//!
//! Sockets are connected afresh for each run and closed after it; the MQTT connections and the
//! hub stay, so A and B see the same hub, database and tracker state.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use mc_hub::{
    Listeners,
    store::{NewModule, NewUser},
};
use mc_protocol::ModuleId;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    Bench,
    dashboard::{self, Dashboard, EventSink},
    load::{self, Credentials, Latencies, SendLog},
    sys,
};

/// Login of routing user `u`.
fn email(u: usize) -> String {
    format!("route{u:03}@example.com")
}

/// One run's numbers.
#[derive(Debug, Clone, Copy, Default)]
struct RoutingRun {
    /// Sockets connected during the run.
    sockets: usize,
    /// Messages ingested by the hub during the load window.
    ingested: u64,
    /// Hub-side CPU (hub-rt + rumqttd router + sqlx), µs per ingested message (= per event).
    cpu_us_per_event: f64,
    /// Of which the hub runtime's workers (`hub-rt`) alone.
    cpu_rt_us_per_event: f64,
    /// `rt_telemetry_updated` at the recipient sockets, min..max.
    recipient_min: u64,
    recipient_max: u64,
    /// Events of any kind (but `rt_session` / stats) at non-recipient sockets, summed.
    foreign: u64,
    p50_ms: f64,
    p99_ms: f64,
    emit_errors: u64,
}

/// One numeric column of [`RoutingRun`], for the medians table.
type Column = fn(&RoutingRun) -> f64;

/// Runs the A/B comparison and prints its tables.
pub async fn routing(bench: &Bench) -> Result<()> {
    let a = &bench.args;
    let (users, tabs, modules) = (a.routing_users, a.routing_tabs, a.routing_modules);
    ensure!(users >= 2, "--routing-users must be at least 2");
    ensure!(
        modules >= users && modules % users == 0,
        "--routing-modules must be a multiple of --routing-users"
    );
    let per_user = modules / users;

    let dir = tempfile::tempdir().context("temp dir")?;
    let mut config = crate::hub_config(dir.path(), a);
    // No admins are connected, but the stats task would still wake up: keep it out.
    config.realtime.enable_stats = false;
    let setup_start = std::time::Instant::now();
    let (hub, shutdown, u1_creds) = bench
        .hub_rt
        .spawn(async move {
            let shutdown = CancellationToken::new();
            let listeners = Listeners::bind(&config).await?;
            let hub = mc_hub::start(config, listeners, shutdown.clone()).await?;
            for u in 0..users {
                hub.store
                    .create_user(NewUser {
                        email: email(u),
                        name: format!("Route {u}"),
                        password: crate::PASSWORD.into(),
                        is_admin: false,
                    })
                    .await?;
            }
            // Creation in round-robin order over users, 8 writers at a time.
            const WRITERS: usize = 8;
            let mut writers = JoinSet::new();
            for w in 0..WRITERS {
                let store = hub.store.clone();
                writers.spawn(async move {
                    let mut tokens = Vec::new();
                    for i in (w..modules).step_by(WRITERS) {
                        let (u, j) = (i % users, i / users);
                        let index = u * per_user + j;
                        let (_, token) = store
                            .create_module(NewModule {
                                id: ModuleId::new(&load::module_id(index))?,
                                name: format!("route {index}"),
                                kind: "bench".into(),
                                owner_email: Some(email(u)),
                                heartbeat_timeout: None,
                            })
                            .await?;
                        if u == 0 {
                            tokens.push((index, token));
                        }
                    }
                    anyhow::Ok(tokens)
                });
            }
            let mut u1 = Vec::new();
            while let Some(r) = writers.join_next().await {
                u1.extend(r.context("module writer panicked")??);
            }
            u1.sort();
            let creds: Vec<Credentials> = u1
                .into_iter()
                .map(|(index, token)| Credentials {
                    id: load::module_id(index),
                    token: Some(token),
                })
                .collect();
            anyhow::Ok((hub, shutdown, creds))
        })
        .await
        .context("hub start panicked")??;
    bench.pin_new_threads();
    println!(
        "routing: {users} users, {modules} modules ({per_user} per user) set up in {:.1} s; \
         store counts {:?}",
        setup_start.elapsed().as_secs_f64(),
        hub.store.counts().await.ok()
    );

    let mut cookies = Vec::with_capacity(users);
    for u in 0..users {
        cookies.push(dashboard::login(hub.http_addr, &email(u), crate::PASSWORD).await?);
    }
    let log = Arc::new(SendLog::new(per_user));
    let mut mqtt_tasks = JoinSet::new();
    let clients =
        Arc::new(load::connect_modules(hub.mqtt_addr, u1_creds, 4096, &mut mqtt_tasks).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut rows: Vec<(char, RoutingRun)> = Vec::new();
    let mut seq_base = 0u32;
    for run in 0..a.repeat.max(1) {
        for scenario in ['A', 'B'] {
            let others = if scenario == 'B' { users - 1 } else { 0 };
            let latencies = Arc::new(Latencies::new());
            let stop = CancellationToken::new();
            let mut tasks = JoinSet::new();
            let mut recipients = Vec::with_capacity(tabs);
            let mut bystanders = Vec::with_capacity(others * tabs);
            for (u, cookie) in cookies.iter().enumerate().take(others + 1) {
                for t in 0..tabs {
                    let d = Dashboard::connect(hub.http_addr, cookie, "modules")
                        .await
                        .with_context(|| format!("dashboard {t} of user {u}"))?;
                    let latency = (u == 0 && t == 0).then(|| (log.clone(), latencies.clone()));
                    let sink = Arc::new(EventSink::new(latency));
                    tasks.spawn(d.run(sink.clone(), stop.clone()));
                    if u == 0 {
                        recipients.push(sink);
                    } else {
                        bystanders.push(sink);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;

            let ingested0 = hub.metrics.messages_ingested.get();
            let errors0 = hub.metrics.emit_errors.get();
            let cpu0 = sys::cpu_ns();
            latencies
                .warmup_until_us
                .store(log.now_us() + 1_000_000, Ordering::Relaxed);
            let stats = load::open_loop_from(
                clients.clone(),
                a.rate,
                Duration::from_secs(a.seconds),
                log.clone(),
                seq_base,
            )
            .await?;
            // Sampled as the load ends (events are in flight for ~1 ms), not after the drain.
            let cpu1 = sys::cpu_ns();
            let ingested = hub.metrics.messages_ingested.get() - ingested0;
            crate::drain(&recipients).await;
            // Sequence numbers keep growing across runs (the hub drops older ones).
            seq_base += (a.rate * a.seconds as f64 / clients.len() as f64) as u32 + 1000;
            ensure!(
                stats.dropped == 0,
                "the generator dropped {}",
                stats.dropped
            );

            let names = sys::thread_names();
            let delta = |prefix: &str| sys::cpu_ns_delta(&cpu0, &cpu1, &names, prefix);
            let per_event = |ns: u64| ns as f64 / 1000.0 / ingested.max(1) as f64;
            let counts: Vec<u64> = recipients.iter().map(|s| s.count()).collect();
            let foreign: u64 = bystanders
                .iter()
                .map(|s| s.count() + s.other_events.load(Ordering::Relaxed))
                .sum();
            let sorted = latencies.sorted();
            let r = RoutingRun {
                sockets: recipients.len() + bystanders.len(),
                ingested,
                cpu_us_per_event: per_event(delta("hub-rt") + delta("router-") + delta("sqlx")),
                cpu_rt_us_per_event: per_event(delta("hub-rt")),
                recipient_min: counts.iter().copied().min().unwrap_or(0),
                recipient_max: counts.iter().copied().max().unwrap_or(0),
                foreign,
                p50_ms: load::percentile_ms(&sorted, 50.0),
                p99_ms: load::percentile_ms(&sorted, 99.0),
                emit_errors: hub.metrics.emit_errors.get() - errors0,
            };
            println!("run {} {scenario}: {r:?}", run + 1);
            stop.cancel();
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            // Let the hub notice the closed sockets before the next run.
            tokio::time::sleep(Duration::from_secs(2)).await;
            if foreign != 0 {
                bail!("non-recipient sockets received {foreign} events in run {scenario}");
            }
            rows.push((scenario, r));
        }
    }

    println!(
        "\n### Routing: {users} users × {tabs} tabs, {modules} modules, {} publishing at {} msg/s, {} s\n",
        clients.len(),
        a.rate,
        a.seconds
    );
    println!(
        "| run | scenario | sockets | events ingested | events per recipient socket min..max | events at non-recipients | hub-side CPU µs/event (hub-rt + router + sqlx) | hub-rt only µs/event | p50 ms | p99 ms | emit errors |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (s, r)) in rows.iter().enumerate() {
        println!(
            "| {} | {s} | {} | {} | {}..{} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            i / 2 + 1,
            r.sockets,
            r.ingested,
            r.recipient_min,
            r.recipient_max,
            r.foreign,
            r.cpu_us_per_event,
            r.cpu_rt_us_per_event,
            r.p50_ms,
            r.p99_ms,
            r.emit_errors,
        );
    }
    let med = |s: char, f: Column| {
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|(x, _)| *x == s)
            .map(|(_, r)| f(r))
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!("\n### Routing: medians of {} runs\n", a.repeat.max(1));
    println!(
        "| metric | A ({tabs} recipient sockets) | B (+ {} non-recipients) | B/A |",
        (users - 1) * tabs
    );
    println!("|---|---:|---:|---:|");
    let metrics: [(&str, Column); 4] = [
        ("hub-side CPU µs/event (hub-rt + router + sqlx)", |r| {
            r.cpu_us_per_event
        }),
        ("hub-rt only µs/event", |r| r.cpu_rt_us_per_event),
        ("p50 ms", |r| r.p50_ms),
        ("p99 ms", |r| r.p99_ms),
    ];
    for (name, f) in metrics {
        let (ma, mb) = (med('A', f), med('B', f));
        println!("| {name} | {ma:.2} | {mb:.2} | {:.2} |", mb / ma);
    }

    for c in clients.iter() {
        let _ = c.try_disconnect();
    }
    mqtt_tasks.abort_all();
    while mqtt_tasks.join_next().await.is_some() {}
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), hub.stopped()).await;
    drop(dir);
    Ok(())
}
