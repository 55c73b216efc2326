//! The load side: simulated modules publishing telemetry over MQTT, and the send log that turns
//! a received event back into a publish→event latency.
//!
//! Every message carries 8 readings; `seq` and `temperature` change with every message, so every
//! message produces exactly one `rt_telemetry_updated` event whose diff contains `seq`. The event
//! names the module and carries `seq`; [`SendLog`] maps (module, seq) to the send time.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use mc_protocol::{Readings, Telemetry, codec::native};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use tokio::{sync::oneshot, task::JoinSet};

/// Id of simulated module `i`.
pub fn module_id(i: usize) -> String {
    format!("BENCH-{i:05}")
}

/// Index of a simulated module from its id.
pub fn module_index(id: &str) -> Option<usize> {
    id.strip_prefix("BENCH-")?.parse().ok()
}

/// Telemetry topic of module `i`.
pub fn telemetry_topic(i: usize) -> String {
    format!("mc/{}/telemetry", module_id(i))
}

/// The 8 readings of a message; `seq` (exact in an f32 up to 2^24) identifies it.
pub fn telemetry_payload(seq: u32) -> Result<Vec<u8>> {
    let mut r = Readings::new();
    r.push("seq", seq as f32)?;
    r.push("temperature", 20.0 + (seq % 100) as f32 * 0.1)?;
    r.push("humidity", 45.5)?;
    r.push("pressure", 1013.2)?;
    r.push("battery", 3.71)?;
    r.push("rssi", -67.0)?;
    r.push("co2", 412.0)?;
    r.push("lux", 880.0)?;
    Ok(native::to_vec(&Telemetry { seq, readings: r })?)
}

/// Slots per module in the send log: with up to 500 msg/s per module it covers 16 s of delay.
const RING: usize = 8192;
const MICROS_BITS: u32 = 40;
const MICROS_MASK: u64 = (1 << MICROS_BITS) - 1;

/// Send times by (module, seq), lock-free: one atomic per slot holds `seq << 40 | micros`.
pub struct SendLog {
    epoch: Instant,
    slots: Vec<AtomicU64>,
}

impl SendLog {
    /// A log for `modules` modules.
    pub fn new(modules: usize) -> Self {
        Self {
            epoch: Instant::now(),
            slots: (0..modules * RING).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Microseconds since the log was created.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Records that `module` sent `seq` at `at_us`.
    pub fn record(&self, module: usize, seq: u32, at_us: u64) {
        if let Some(slot) = self.slots.get(module * RING + seq as usize % RING) {
            slot.store(
                (u64::from(seq) << MICROS_BITS) | (at_us & MICROS_MASK),
                Ordering::Relaxed,
            );
        }
    }

    /// When `module` sent `seq`, if the slot still holds it.
    pub fn sent_at(&self, module: usize, seq: u32) -> Option<u64> {
        let v = self
            .slots
            .get(module * RING + seq as usize % RING)?
            .load(Ordering::Relaxed);
        (v >> MICROS_BITS == u64::from(seq)).then_some(v & MICROS_MASK)
    }
}

/// Latency samples in microseconds, for messages sent after the warm-up.
pub struct Latencies {
    /// Messages sent before this time (send-log micros) are not sampled.
    pub warmup_until_us: AtomicU64,
    samples: Mutex<Vec<u32>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// Samples nothing until [`Latencies::warmup_until_us`] is set.
    pub fn new() -> Self {
        Self {
            warmup_until_us: AtomicU64::new(u64::MAX),
            samples: Mutex::new(Vec::new()),
        }
    }

    /// Records one message sent at `sent_us` and seen at `now_us`.
    pub fn record(&self, sent_us: u64, now_us: u64) {
        if sent_us < self.warmup_until_us.load(Ordering::Relaxed) {
            return;
        }
        let us = now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32;
        if let Ok(mut s) = self.samples.lock() {
            s.push(us);
        }
    }

    /// Drops the samples so far and samples nothing sent before `warmup_until_us`: one
    /// [`Latencies`] for several windows in turn.
    pub fn restart(&self, warmup_until_us: u64) {
        if let Ok(mut s) = self.samples.lock() {
            s.clear();
        }
        self.warmup_until_us
            .store(warmup_until_us, Ordering::Relaxed);
    }

    /// The samples, sorted.
    pub fn sorted(&self) -> Vec<u32> {
        let mut v = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        v.sort_unstable();
        v
    }
}

/// Percentile `p` (0..=100) of sorted samples, in milliseconds.
pub fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

/// MQTT credentials of one simulated module.
pub struct Credentials {
    /// Client id and username.
    pub id: String,
    /// Password; `None` for the bare broker.
    pub token: Option<String>,
}

/// Connects one MQTT client per credential (client id = username = module id), polls each
/// event loop in a task of `tasks`, and returns once every client has its CONNACK.
pub async fn connect_modules(
    addr: SocketAddr,
    creds: Vec<Credentials>,
    queue: usize,
    tasks: &mut JoinSet<()>,
) -> Result<Vec<AsyncClient>> {
    let mut clients = Vec::with_capacity(creds.len());
    let mut ready = Vec::with_capacity(creds.len());
    for c in creds {
        let (client, rx) = mqtt_client(addr, &c.id, c.token.as_deref(), queue, tasks);
        clients.push(client);
        ready.push(rx);
    }
    for rx in ready {
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .context("an MQTT client got no CONNACK within 30 s")?
            .context("an MQTT event loop stopped before CONNACK")?;
    }
    Ok(clients)
}

/// One rumqttc client (Nagle off, 64 KiB packets) whose event loop runs in `tasks`; the
/// receiver resolves at the first CONNACK. Connection errors are retried every 50 ms.
pub fn mqtt_client(
    addr: SocketAddr,
    id: &str,
    token: Option<&str>,
    queue: usize,
    tasks: &mut JoinSet<()>,
) -> (AsyncClient, oneshot::Receiver<()>) {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    if let Some(token) = token {
        opts.set_credentials(id, token);
    }
    opts.set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(64 * 1024, 64 * 1024)
        .set_request_channel_capacity(queue);
    let (client, mut eventloop) = AsyncClient::new(opts, queue);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let (ready_tx, ready_rx) = oneshot::channel();
    tasks.spawn(async move {
        let mut ready_tx = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (client, ready_rx)
}

/// What the open-loop generator did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SendStats {
    /// Messages handed to a client.
    pub sent: u64,
    /// Messages not sent because the client's queue was full (the connection could not keep up).
    pub dropped: u64,
    /// How long sending took.
    pub elapsed: Duration,
}

/// Open loop: `rate` messages per second in total, round-robin over `clients`, for `duration`.
/// Sends are scheduled by the clock (every millisecond, as many as are due), never by replies.
pub async fn open_loop(
    clients: Arc<Vec<AsyncClient>>,
    rate: f64,
    duration: Duration,
    log: Arc<SendLog>,
) -> Result<SendStats> {
    open_loop_from(clients, rate, duration, log, 0).await
}

/// [`open_loop`] whose sequence numbers start after `seq_base`, so that several runs over the
/// same MQTT connections keep each module's `seq` increasing (the hub drops older ones).
pub async fn open_loop_from(
    clients: Arc<Vec<AsyncClient>>,
    rate: f64,
    duration: Duration,
    log: Arc<SendLog>,
    seq_base: u32,
) -> Result<SendStats> {
    let n = clients.len();
    if n == 0 {
        bail!("no clients");
    }
    let topics: Vec<String> = (0..n).map(telemetry_topic).collect();
    let total = (rate * duration.as_secs_f64()) as u64;
    let mut seqs = vec![seq_base; n];
    let mut stats = SendStats::default();
    let mut done = 0u64;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while done < total {
        tick.tick().await;
        let due = ((rate * start.elapsed().as_secs_f64()) as u64).min(total);
        while done < due {
            let m = (done % n as u64) as usize;
            seqs[m] += 1;
            let seq = seqs[m];
            let payload = telemetry_payload(seq)?;
            log.record(m, seq, log.now_us());
            match clients[m].try_publish(topics[m].clone(), QoS::AtMostOnce, false, payload) {
                Ok(()) => stats.sent += 1,
                Err(_) => stats.dropped += 1,
            }
            done += 1;
        }
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Closed loop as fast as the client accepts: publishes from module `index` until `stop`;
/// returns how many messages were handed to the client.
pub async fn flood(
    client: AsyncClient,
    index: usize,
    stop: tokio_util::sync::CancellationToken,
) -> Result<u64> {
    let topic = telemetry_topic(index);
    let mut seq = 0u32;
    while !stop.is_cancelled() {
        seq = seq.wrapping_add(1);
        let payload = telemetry_payload(seq & 0x00ff_ffff)?;
        tokio::select! {
            _ = stop.cancelled() => break,
            r = client.publish(topic.clone(), QoS::AtMostOnce, false, payload) => {
                r.context("publish")?;
            }
        }
    }
    Ok(u64::from(seq))
}
