//! The receiving side of a target: Socket.IO dashboards (the bench's raw WebSocket client from
//! `mc_bench::dashboard`), or, for plain Mosquitto, MQTT subscribers. Each has a [`Sink`].

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result};
use futures_util::{StreamExt, stream};
use mc_bench::dashboard::Dashboard;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    mqtt,
    sink::{Clock, Sink, module_index},
    targets::Consumer,
};

/// Dashboards connecting at once.
const CONNECT_CONCURRENCY: usize = 32;

/// Connected consumers and their sinks.
pub struct Consumers {
    /// One sink per consumer, in connection order.
    pub sinks: Vec<Arc<Sink>>,
    /// Per consumer: whether its connection is still open (the target may cut off a dashboard
    /// that fell behind; the bench's client does not reconnect by itself).
    open: Vec<Arc<AtomicBool>>,
    consumer: Consumer,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

/// Runs a dashboard until it closes, then marks it closed.
fn spawn_dashboard(
    tasks: &mut JoinSet<()>,
    d: Dashboard,
    sink: Arc<Sink>,
    stop: CancellationToken,
) -> Arc<AtomicBool> {
    let open = Arc::new(AtomicBool::new(true));
    let flag = open.clone();
    tasks.spawn(async move {
        d.run(sink, stop).await;
        flag.store(false, Ordering::Relaxed);
    });
    open
}

/// Subscribes `stream` to telemetry and status and runs it until it closes, then marks it
/// closed.
async fn spawn_subscriber(
    tasks: &mut JoinSet<()>,
    mut stream: tokio::net::TcpStream,
    sink: Arc<Sink>,
    stop: CancellationToken,
) -> Result<Arc<AtomicBool>> {
    mqtt::subscribe(&mut stream, &["mc/+/telemetry", "mc/+/status"]).await?;
    let open = Arc::new(AtomicBool::new(true));
    let flag = open.clone();
    tasks.spawn(async move {
        let _closed = Closed(flag);
        let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, stream);
        loop {
            let packet = tokio::select! {
                _ = stop.cancelled() => return,
                p = mqtt::read_packet(&mut reader) => p,
            };
            let Ok((header, body)) = packet else { return };
            let Some((topic, payload)) = mqtt::parse_publish(header, &body) else {
                continue;
            };
            let mut parts = topic.split('/');
            let (Some("mc"), Some(id), Some(kind)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            match kind {
                "telemetry" => sink.on_publish(module_index(id), payload),
                "status" => sink.on_offline(),
                _ => {}
            }
        }
    });
    Ok(open)
}

impl Consumers {
    /// Connects `count` consumers of `consumer`; those whose index is in `measure` parse
    /// telemetry of `modules` modules for latency and gaps.
    pub async fn connect(
        consumer: &Consumer,
        clock: Clock,
        count: usize,
        measure: &[usize],
        modules: usize,
    ) -> Result<Self> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut sinks = Vec::new();
        let mut open = Vec::new();
        match consumer {
            Consumer::Dashboards { http, cookie } => {
                let dashboards: Vec<Result<Dashboard>> = stream::iter(0..count)
                    .map(|_| Dashboard::connect(*http, cookie, "modules"))
                    .buffered(CONNECT_CONCURRENCY)
                    .collect()
                    .await;
                for (i, d) in dashboards.into_iter().enumerate() {
                    let d = d.with_context(|| format!("dashboard {i} of {count}"))?;
                    let sink = Arc::new(Sink::new(clock, measure.contains(&i).then_some(modules))?);
                    open.push(spawn_dashboard(
                        &mut tasks,
                        d,
                        sink.clone(),
                        stop.child_token(),
                    ));
                    sinks.push(sink);
                }
            }
            Consumer::Subscriber {
                addr,
                user,
                password,
            } => {
                for i in 0..count {
                    // One user, a client id each (Mosquitto would take over a reused one).
                    let client_id = if i == 0 {
                        user.clone()
                    } else {
                        format!("{user}-{i}")
                    };
                    let stream = mqtt::connect(
                        *addr,
                        &mqtt::Connect {
                            client_id: &client_id,
                            credentials: Some((user, password)),
                            will: None,
                        },
                        std::time::Duration::from_secs(10),
                    )
                    .await
                    .with_context(|| format!("subscriber {i} of {count}"))?;
                    let sink = Arc::new(Sink::new(clock, measure.contains(&i).then_some(modules))?);
                    open.push(
                        spawn_subscriber(&mut tasks, stream, sink.clone(), stop.child_token())
                            .await?,
                    );
                    sinks.push(sink);
                }
            }
        }
        Ok(Self {
            sinks,
            open,
            consumer: consumer.clone(),
            stop,
            tasks,
        })
    }

    /// Consumers whose connection has closed.
    pub fn closed(&self) -> usize {
        self.open
            .iter()
            .filter(|o| !o.load(Ordering::Relaxed))
            .count()
    }

    /// Reconnects closed dashboards, keeping their sinks (counts go on); returns how many.
    pub async fn reconnect_closed(&mut self) -> Result<usize> {
        let Consumer::Dashboards { http, cookie } = &self.consumer else {
            return Ok(0);
        };
        let mut n = 0;
        for (i, open) in self.open.iter_mut().enumerate() {
            if open.load(Ordering::Relaxed) {
                continue;
            }
            let d = Dashboard::connect(*http, cookie, "modules")
                .await
                .with_context(|| format!("reconnect dashboard {i}"))?;
            *open = spawn_dashboard(
                &mut self.tasks,
                d,
                self.sinks[i].clone(),
                self.stop.child_token(),
            );
            n += 1;
        }
        Ok(n)
    }

    /// The sinks that measure latency and gaps.
    pub fn measuring(&self) -> impl Iterator<Item = &Arc<Sink>> {
        self.sinks.iter().filter(|s| s.measures())
    }

    /// Disconnects every consumer.
    pub async fn close(mut self) {
        self.stop.cancel();
        self.tasks.shutdown().await;
    }
}

/// Marks a consumer closed when its task ends, however it ends.
struct Closed(Arc<AtomicBool>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}
