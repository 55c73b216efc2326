//! MQTT ingest: decodes what modules publish (native or JSON payloads) into typed events for
//! the tracker, for the gateway's connections and for the external broker's client alike.

use mc_protocol::{
    Encoding, Heartbeat, Hello, ModuleTopic, ProtocolError, STATUS_OFFLINE, Telemetry, TopicKind,
    codec,
};

use super::{
    ModuleEvent,
    rate::{Admission, ModuleRateLimiter},
};
use crate::metrics::Metrics;

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
