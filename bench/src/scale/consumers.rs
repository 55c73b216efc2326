//! The receiving side of a target: Socket.IO dashboards (the bench's raw WebSocket client from
//! `mc_bench::dashboard`), or, for plain Mosquitto, one MQTT subscriber. Each has a [`Sink`].

use std::sync::Arc;

use anyhow::{Context, Result};
use futures_util::{StreamExt, stream};
use mc_bench::dashboard::Dashboard;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    mqtt,
    sink::{Clock, Sink, module_index},
    targets::{Consumer, Target},
};

/// Dashboards connecting at once.
const CONNECT_CONCURRENCY: usize = 32;

/// Connected consumers and their sinks.
pub struct Consumers {
    /// One sink per consumer, in connection order.
    pub sinks: Vec<Arc<Sink>>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Consumers {
    /// Connects `count` consumers to `target` (a subscriber target always gets one); those
    /// whose index is in `measure` parse telemetry of `modules` modules for latency and gaps.
    pub async fn connect(
        target: &Target,
        clock: Clock,
        count: usize,
        measure: &[usize],
        modules: usize,
    ) -> Result<Self> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut sinks = Vec::new();
        match &target.consumer {
            Consumer::Dashboards { http, cookie } => {
                let dashboards: Vec<Result<Dashboard>> = stream::iter(0..count)
                    .map(|_| Dashboard::connect(*http, cookie, "modules"))
                    .buffered(CONNECT_CONCURRENCY)
                    .collect()
                    .await;
                for (i, d) in dashboards.into_iter().enumerate() {
                    let d = d.with_context(|| format!("dashboard {i} of {count}"))?;
                    let sink = Arc::new(Sink::new(clock, measure.contains(&i).then_some(modules))?);
                    tasks.spawn(d.run(sink.clone(), stop.child_token()));
                    sinks.push(sink);
                }
            }
            Consumer::Subscriber {
                addr,
                user,
                password,
            } => {
                let mut stream = mqtt::connect(
                    *addr,
                    &mqtt::Connect {
                        client_id: user,
                        credentials: Some((user, password)),
                        will: None,
                    },
                    std::time::Duration::from_secs(10),
                )
                .await
                .context("subscriber")?;
                mqtt::subscribe(&mut stream, &["mc/+/telemetry", "mc/+/status"]).await?;
                let sink = Arc::new(Sink::new(clock, Some(modules))?);
                let s = sink.clone();
                let stop = stop.child_token();
                tasks.spawn(async move {
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
                        let (Some("mc"), Some(id), Some(kind)) =
                            (parts.next(), parts.next(), parts.next())
                        else {
                            continue;
                        };
                        match kind {
                            "telemetry" => s.on_publish(module_index(id), payload),
                            "status" => s.on_offline(),
                            _ => {}
                        }
                    }
                });
                sinks.push(sink);
            }
        }
        Ok(Self { sinks, stop, tasks })
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
