//! The simulated modules: MQTT connections that say hello, then either publish telemetry on the
//! open-loop schedule ([`LoadFleet`]) or just stay connected ([`IdleFleet`]).
//!
//! Every module connects with client id = username = module id, its token as password and the
//! last will `mc/<id>/status` = `offline` (the module contract, README), and sends a hello
//! announcing a 10-minute heartbeat, so no target times it out during a run (3 × the interval).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    task::JoinSet,
};

use crate::{
    mqtt,
    sink::{Clock, module_id},
};

/// The hello every module sends after connecting.
const HELLO: &[u8] = br#"{"fw":"1.0.0","heartbeatMs":600000}"#;
/// Connections opened at once while a fleet connects.
const CONNECT_CONCURRENCY: usize = 64;
/// Packets queued per module before the generator counts a drop (the connection cannot keep up).
const QUEUE: usize = 4096;

/// MQTT credentials of one module.
#[derive(Debug, Clone)]
pub struct ModuleCred {
    /// Module id: client id and username.
    pub id: String,
    /// Its token (password).
    pub token: String,
}

/// Credentials for modules `0..n`, with tokens drawn by the caller.
pub fn creds(n: usize, token: impl Fn(usize) -> String) -> Vec<ModuleCred> {
    (0..n)
        .map(|i| ModuleCred {
            id: module_id(i),
            token: token(i),
        })
        .collect()
}

/// Connects one module and sends its hello.
async fn connect_one(addr: SocketAddr, c: &ModuleCred) -> Result<TcpStream> {
    let will_topic = format!("mc/{}/status", c.id);
    let mut stream = mqtt::connect(
        addr,
        &mqtt::Connect {
            client_id: &c.id,
            credentials: Some((&c.id, &c.token)),
            will: Some((&will_topic, b"offline")),
        },
        Duration::from_secs(30),
    )
    .await?;
    let hello = mqtt::publish_packet(&format!("mc/{}/hello", c.id), HELLO);
    stream.write_all(&hello).await?;
    Ok(stream)
}

/// Connects every module, [`CONNECT_CONCURRENCY`] at a time, in index order.
async fn connect_all(addr: SocketAddr, creds: &[ModuleCred]) -> Result<Vec<TcpStream>> {
    let results: Vec<Result<TcpStream>> = stream::iter(creds)
        .map(|c| connect_one(addr, c))
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Modules that only hold their connection. Dropping the fleet closes every socket at once,
/// without DISCONNECT: to the broker, every connection is lost and every will fires.
pub struct IdleFleet {
    streams: Vec<TcpStream>,
}

impl IdleFleet {
    /// Connects `creds` to `addr`.
    pub async fn connect(addr: SocketAddr, creds: &[ModuleCred]) -> Result<Self> {
        Ok(Self {
            streams: connect_all(addr, creds).await?,
        })
    }

    /// Closes every connection (no DISCONNECT) in one loop of `close(2)`.
    pub fn drop_all(self) {
        drop(self.streams);
    }
}

/// What the generator did in one step.
#[derive(Debug, Default, Clone, Copy)]
pub struct SendStats {
    /// Messages handed to a connection.
    pub sent: u64,
    /// Messages not sent because the connection's queue was full.
    pub dropped: u64,
    /// How long sending took.
    pub elapsed: Duration,
}

/// Modules that publish telemetry: one writer and one reader task per connection.
pub struct LoadFleet {
    topics: Vec<String>,
    queues: Vec<mpsc::Sender<Vec<u8>>>,
    /// The last `seq` each module sent (they start at 1).
    seqs: Vec<u32>,
    /// Write errors seen by the writer tasks (a connection the target closed).
    pub write_errors: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl LoadFleet {
    /// Connects `creds` to `addr` and starts their tasks.
    pub async fn connect(addr: SocketAddr, creds: &[ModuleCred]) -> Result<Self> {
        let streams = connect_all(addr, creds).await?;
        let mut tasks = JoinSet::new();
        let write_errors = Arc::new(AtomicU64::new(0));
        let mut queues = Vec::with_capacity(streams.len());
        for stream in streams {
            let (mut read, mut write) = stream.into_split();
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
            let errors = write_errors.clone();
            tasks.spawn(async move {
                let mut batch = Vec::with_capacity(8192);
                while let Some(first) = rx.recv().await {
                    batch.clear();
                    batch.extend_from_slice(&first);
                    while batch.len() < 64 * 1024 {
                        match rx.try_recv() {
                            Ok(more) => batch.extend_from_slice(&more),
                            Err(_) => break,
                        }
                    }
                    if write.write_all(&batch).await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            });
            // Nothing is expected from the broker at QoS 0; read so its writes never block.
            tasks.spawn(async move {
                let mut buf = vec![0u8; 4096];
                while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
            });
            queues.push(tx);
        }
        Ok(Self {
            topics: creds
                .iter()
                .map(|c| format!("mc/{}/telemetry", c.id))
                .collect(),
            seqs: vec![0; queues.len()],
            queues,
            write_errors,
            tasks,
        })
    }

    /// The `seq` each module sends next.
    pub fn next_seqs(&self) -> Vec<u32> {
        self.seqs.iter().map(|s| s + 1).collect()
    }

    /// The last `seq` each module sent.
    pub fn last_seqs(&self) -> Vec<u32> {
        self.seqs.clone()
    }

    /// Open loop: `rate` messages per second in total, round-robin over the modules, for
    /// `duration`. Sends follow the clock (every millisecond, as many as are due), never replies.
    pub async fn open_loop(
        &mut self,
        clock: &Clock,
        rate: f64,
        duration: Duration,
    ) -> Result<SendStats> {
        let n = self.queues.len();
        if n == 0 {
            bail!("no modules");
        }
        let total = (rate * duration.as_secs_f64()) as u64;
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
                self.seqs[m] += 1;
                let packet = telemetry(&self.topics[m], self.seqs[m], clock.sent_at());
                match self.queues[m].try_send(packet) {
                    Ok(()) => stats.sent += 1,
                    Err(_) => stats.dropped += 1,
                }
                done += 1;
            }
        }
        stats.elapsed = start.elapsed();
        Ok(stats)
    }

    /// Closes every connection.
    pub async fn close(mut self) {
        self.queues.clear();
        self.tasks.shutdown().await;
    }
}

/// A telemetry PUBLISH: 8 readings; `seq` and `sentAt` change with every message.
pub fn telemetry(topic: &str, seq: u32, sent_at: u32) -> Vec<u8> {
    let payload = format!(
        "{{\"seq\":{seq},\"readings\":{{\"seq\":{seq},\"sentAt\":{sent_at},\"temperature\":21.5,\
         \"humidity\":45.5,\"battery\":3.71,\"rssi\":-67,\"co2\":412,\"lux\":880}}}}"
    );
    mqtt::publish_packet(topic, payload.as_bytes())
}

/// The hard open-file limit of this process (targets inherit it).
pub fn fd_hard_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(4)?
        .parse()
        .ok()
}

/// Checks that `n` modules fit in this process's open-file limit (with room for the rest).
pub fn check_fd_limit(n: usize) -> Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").context("read /proc/self/limits")?;
    let soft: Option<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    let need = n as u64 + 1024;
    match soft {
        Some(soft) if soft < need => bail!(
            "{n} modules need about {need} open files here (and ~3 per module in the hub), but \
             the limit is {soft}: raise it first (`ulimit -n 200000` as root; bench/scale/run \
             does this)"
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_is_the_hubs_json_telemetry() -> Result<()> {
        let p = telemetry("mc/BENCH-00001/telemetry", 7, 123);
        let (topic, payload) = mqtt::parse_publish(p[0], &p[3..]).context("publish")?;
        assert_eq!(topic, "mc/BENCH-00001/telemetry");
        let t: mc_protocol::Telemetry = mc_protocol::codec::json::decode(payload)?;
        assert_eq!(t.seq, 7);
        Ok(())
    }
}
