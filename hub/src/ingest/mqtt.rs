//! MQTT ingest: the hub's local link into the embedded broker, subscribed to every module
//! topic. Decodes payloads (native or JSON) and forwards typed events to the tracker.

use mc_protocol::{
    Encoding, Heartbeat, Hello, ModuleTopic, ProtocolError, STATUS_OFFLINE, Telemetry, TopicKind,
    codec,
};
use rumqttd::{Notification, local::LinkRx};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    ModuleEvent,
    rate::{Admission, ModuleRateLimiter},
};
use crate::metrics::Metrics;

/// Consumes `link_rx` until shutdown or until the broker goes away.
pub async fn run(
    mut link_rx: LinkRx,
    events: mpsc::Sender<ModuleEvent>,
    metrics: Metrics,
    limiter: ModuleRateLimiter,
    shutdown: CancellationToken,
) {
    /// Marks ingest down however `run` ends (`start` marked it up before spawning it).
    struct Up<'a>(&'a Metrics);
    impl Drop for Up<'_> {
        fn drop(&mut self) {
            self.0
                .mqtt_ingest_up
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let up_metrics = metrics.clone();
    let _up = Up(&up_metrics);
    loop {
        let notification = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = link_rx.next() => n,
        };
        match notification {
            Ok(Some(Notification::Forward(forward))) => {
                let publish = forward.publish;
                let Some(event) = decode(&publish.topic, &publish.payload, &metrics, &limiter)
                else {
                    continue;
                };
                metrics.messages_ingested.inc();
                metrics.mqtt_messages_ingested.inc();
                if events.send(event).await.is_err() {
                    return;
                }
            }
            // The router stops forwarding when our buffer filled; we drained it, ask for more.
            Ok(Some(Notification::Unschedule)) => {
                if let Err(e) = link_rx.wake().await {
                    tracing::error!(error = %e, "broker link lost");
                    return;
                }
            }
            // Acks, or a wake-up with nothing to read: keep consuming.
            Ok(Some(_)) | Ok(None) => {}
            Err(e) => {
                if !shutdown.is_cancelled() {
                    tracing::error!(error = %e, "broker link lost");
                }
                return;
            }
        }
    }
}

/// Turns one publish into an event, or counts and logs why not (bad topic, over the module's
/// rate limit, bad payload).
pub fn decode(
    topic: &[u8],
    payload: &[u8],
    metrics: &Metrics,
    limiter: &ModuleRateLimiter,
) -> Option<ModuleEvent> {
    let topic = match std::str::from_utf8(topic)
        .map_err(|_| ProtocolError::InvalidTopic)
        .and_then(ModuleTopic::parse)
    {
        Ok(t) => t,
        Err(e) => {
            metrics.reject(e.reason());
            tracing::warn!(topic = %String::from_utf8_lossy(topic).escape_debug(), "rejected publish: {e}");
            return None;
        }
    };
    let module = topic.module;
    // A hello always passes: a module that flooded must still introduce itself when it
    // reconnects (its firmware, interval and encoding). Everything else counts, its status
    // included: a module may publish there itself, and the gateway reports a lost connection
    // anyway, will or not.
    if topic.kind != TopicKind::Hello
        && let Admission::Limited { first } = limiter.admit(&module, tokio::time::Instant::now())
    {
        metrics.reject("rate_limited");
        if first {
            tracing::warn!(module = %module, "module over its rate limit: dropping its messages (counted as rate_limited)");
        }
        return None;
    }
    // per message, only when debugging (a span per message costs on the hot path)
    let _span =
        tracing::debug_span!("message", module = %module, kind = topic.kind.as_str()).entered();
    let result = match topic.kind {
        TopicKind::Hello => codec::decode::<Hello>(payload)
            .map(|m| ModuleEvent::Hello(module.clone(), m, Encoding::detect(payload))),
        TopicKind::Heartbeat => {
            codec::decode::<Heartbeat>(payload).map(|m| ModuleEvent::Heartbeat(module.clone(), m))
        }
        TopicKind::Telemetry => codec::decode::<Telemetry>(payload)
            .map(|m| ModuleEvent::Telemetry(module.clone(), Box::new(m))),
        TopicKind::Status if payload == STATUS_OFFLINE => Ok(ModuleEvent::Will(module.clone())),
        // `online` status and our own commands echoed back carry nothing for the tracker.
        TopicKind::Status | TopicKind::Cmd => return None,
    };
    match result {
        Ok(event) => Some(event),
        Err(e) => {
            metrics.reject(e.reason());
            tracing::warn!(module = %module, kind = topic.kind.as_str(), len = payload.len(), "rejected payload: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_payloads_are_counted_by_reason() {
        let m = Metrics::default();
        let none = ModuleRateLimiter::default();
        assert!(
            decode(
                b"mc/MC-1001/telemetry",
                br#"{"seq":1,"readings":{"t":1e39}}"#,
                &m,
                &none
            )
            .is_none()
        );
        assert!(decode(b"mc/MC-1001/telemetry", b"\x01\xff", &m, &none).is_none());
        assert!(decode(b"mc/MC-1001/telemetry", b"{garbage", &m, &none).is_none());
        assert!(decode(b"mc/../telemetry", b"{}", &m, &none).is_none());
        assert_eq!(m.rejected("non_finite"), 1);
        assert_eq!(m.rejected("malformed"), 2);
        assert_eq!(m.rejected("invalid_topic"), 1);
        assert!(matches!(
            decode(
                b"mc/MC-1001/telemetry",
                br#"{"seq":1,"readings":{"t":1}}"#,
                &m,
                &none
            ),
            Some(ModuleEvent::Telemetry(..))
        ));
        assert!(matches!(
            decode(b"mc/MC-1001/status", b"offline", &m, &none),
            Some(ModuleEvent::Will(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flooding_module_is_limited_before_decoding_but_its_hello_passes() {
        let m = Metrics::default();
        let limiter = ModuleRateLimiter::new(Some(super::super::rate::RateLimit {
            per_second: 1.0,
            burst: 3.0,
        }));
        let telemetry = br#"{"seq":1,"readings":{"t":1}}"#;
        let passed = (0..10)
            .filter(|_| decode(b"mc/MC-1001/telemetry", telemetry, &m, &limiter).is_some())
            .count();
        assert_eq!(passed, 3);
        assert_eq!(m.rejected("rate_limited"), 7);
        // Garbage over the limit is dropped as rate-limited, not decoded.
        assert!(decode(b"mc/MC-1001/telemetry", b"{garbage", &m, &limiter).is_none());
        assert_eq!(m.rejected("malformed"), 0);
        // Its status counts too (a flood of `offline` would fill the tracker's queue)...
        assert!(decode(b"mc/MC-1001/status", b"offline", &m, &limiter).is_none());
        assert_eq!(m.rejected("rate_limited"), 9);
        // ...but a hello passes.
        assert!(matches!(
            decode(
                b"mc/MC-1001/hello",
                br#"{"fw":"1.0.0","heartbeatMs":5000}"#,
                &m,
                &limiter
            ),
            Some(ModuleEvent::Hello(..))
        ));
        // Other modules are not affected.
        assert!(decode(b"mc/MC-1002/telemetry", telemetry, &m, &limiter).is_some());
    }
}
