//! Module messages the broker handed to a hub that does not own the module go to the owner's
//! inbox (a Redis pub/sub channel), as they came: the owner decodes, rate-limits and tracks
//! them as if it had received them itself. Pub/sub delivers at most once: a message forwarded
//! while the owner is unreachable is lost, like a QoS 0 message (the next heartbeat, or the
//! timeout, settles the module's state).

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// Messages waiting to be forwarded at most; past it, the ingest loop waits (backpressure).
const QUEUE: usize = 16 * 1024;
/// Messages sent in one pipeline at most.
const BATCH: usize = 512;

/// A message as it travels: `topic length (u16 BE) | topic | payload`.
pub fn encode(topic: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(topic.len()).ok()?;
    let mut out = Vec::with_capacity(2 + topic.len() + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(payload);
    Some(out)
}

/// The topic and payload of a forwarded message.
pub fn decode(bytes: &[u8]) -> Option<(Bytes, Bytes)> {
    let (len, rest) = bytes.split_at_checked(2)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (topic, payload) = rest.split_at_checked(len)?;
    Some((
        Bytes::copy_from_slice(topic),
        Bytes::copy_from_slice(payload),
    ))
}

/// Sends messages to other hubs' inboxes; cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<(String, Vec<u8>)>,
}

impl Forwarder {
    /// Starts the sending task.
    pub fn start(
        cluster: &Cluster,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: &CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tasks.spawn(send_loop(cluster.clone(), rx, shutdown.clone()));
        Self { tx }
    }

    /// Queues a message for `owner`'s inbox.
    pub async fn forward(&self, channel: String, topic: &[u8], payload: &[u8]) {
        let Some(message) = encode(topic, payload) else {
            return;
        };
        let _ = self.tx.send((channel, message)).await;
    }
}

async fn send_loop(
    cluster: Cluster,
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut conn = cluster.conn();
    let mut failing = false;
    loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => n,
        };
        if n == 0 {
            return;
        }
        let mut pipe = redis::pipe();
        for (channel, message) in &batch {
            pipe.publish(channel, message).ignore();
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, lost = batch.len(), "cannot forward module messages to their owners");
                }
                failing = true;
            }
        }
        batch.clear();
    }
}

/// Receives this hub's inbox until shutdown, handing messages to `sink` (the ingest loop).
/// Resubscribes after a lost connection.
pub async fn receive(
    cluster: Cluster,
    sink: mpsc::Sender<(Bytes, Bytes)>,
    shutdown: CancellationToken,
) {
    let channel = cluster.keys.inbox(&cluster.instance);
    loop {
        let Some(mut pubsub) = cluster
            .subscribe(&[&channel], "this hub's inbox", &shutdown)
            .await
        else {
            return;
        };
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = messages.next() => m,
            };
            let Some(message) = message else {
                tracing::warn!("inbox subscription lost; resubscribing");
                break;
            };
            match decode(message.get_payload_bytes()) {
                Some(m) => {
                    if sink.send(m).await.is_err() {
                        return;
                    }
                }
                None => tracing::warn!("malformed forwarded message; dropped"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_messages_round_trip_and_garbage_is_refused() {
        let m = encode(b"mc/MC-1/telemetry", b"{\"seq\":1}").expect("encodes");
        let (topic, payload) = decode(&m).expect("decodes");
        assert_eq!(&topic[..], b"mc/MC-1/telemetry");
        assert_eq!(&payload[..], b"{\"seq\":1}");
        assert!(decode(b"").is_none());
        assert!(decode(&[0, 9, b'x']).is_none());
        assert!(encode(&vec![b'a'; 70_000], b"").is_none());
    }
}
