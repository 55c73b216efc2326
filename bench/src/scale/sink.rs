//! What a consumer (a dashboard, or the plain MQTT subscriber) received: events counted by kind,
//! and, on a measuring consumer, latency (HdrHistogram) and loss from sequence gaps.
//!
//! # Timestamps in the payload
//! Every telemetry message carries its `seq` and its send time as readings (`seq`, `sentAt`);
//! readings are `f32`, exact up to 2^24, so `sentAt` is the send time in units of 10 µs modulo
//! 2^24 (a 167 s wheel). The receiver resolves the wrap with its own clock: latency is
//! `(now - sentAt) mod 2^24` units, unambiguous for anything under 167 s. The hub sends only the
//! readings that changed and the Node reference sends all of them; `seq` and `sentAt` change with
//! every message, so both carry them.
//!
//! # Loss
//! Per module, the sink knows the first `seq` of the current step (`expected`); a received `seq`
//! above `expected` means the ones in between were lost, and at the end of the step, those after
//! the last received up to the last sent are lost too. (The hub coalesces updates for a dashboard
//! that fell behind: merged updates count as lost here, they were not delivered one by one.)

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Deserialize;

use mc_bench::dashboard::TextSink;

/// Units of `sentAt`: 10 µs.
pub const UNIT_US: u64 = 10;
/// `sentAt` wraps at 2^24 units (exact in an `f32`).
const WHEEL: u64 = 1 << 24;

/// The bench's clock, shared by the generator and every sink.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Microseconds since the clock started.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// The `sentAt` reading for now.
    pub fn sent_at(&self) -> u32 {
        ((self.now_us() / UNIT_US) % WHEEL) as u32
    }

    /// Microseconds between `sent_at` and now.
    pub fn latency_us(&self, sent_at: u32) -> u64 {
        let now = self.now_us() / UNIT_US;
        ((now + WHEEL - u64::from(sent_at) % WHEEL) % WHEEL) * UNIT_US
    }
}

/// Id of simulated module `i`.
pub fn module_id(i: usize) -> String {
    format!("BENCH-{i:05}")
}

/// Index of a simulated module from its id.
pub fn module_index(id: &str) -> Option<usize> {
    id.strip_prefix("BENCH-")?.parse().ok()
}

/// Per module, within the current step.
#[derive(Debug, Default, Clone, Copy)]
struct Track {
    /// The next `seq` this consumer should see.
    expected: u32,
    /// Updates received in this step.
    received: u64,
    /// Updates skipped (a gap before a received one).
    lost: u64,
}

struct Measure {
    tracks: Vec<Track>,
    latency: Histogram<u64>,
    /// Messages sent before this (clock µs) are not sampled: the step's warm-up.
    warmup_until_us: u64,
    /// Updates from before the step (late) or repeated.
    stale: u64,
}

/// What one step delivered to one measuring consumer.
#[derive(Debug, Clone)]
pub struct StepDelivery {
    /// Updates received in the step.
    pub received: u64,
    /// Updates lost (gaps and the tail).
    pub lost: u64,
    /// Latency in µs of the updates sent after the warm-up.
    pub latency: Histogram<u64>,
}

/// Counts and measures what one consumer received.
pub struct Sink {
    clock: Clock,
    /// `rt_telemetry_updated` events (or telemetry publishes) received.
    pub telemetry: AtomicU64,
    /// `rt_module_online` events received.
    pub online: AtomicU64,
    /// `rt_module_offline` events (or last wills) received.
    pub offline: AtomicU64,
    /// Clock µs of the latest offline event.
    pub last_offline_us: AtomicU64,
    /// Present on a measuring consumer: parses telemetry for latency and gaps.
    measure: Option<Mutex<Measure>>,
}

const TELEMETRY: &[u8] = b"42[\"rt_telemetry_updated\"";
const ONLINE: &[u8] = b"42[\"rt_module_online\"";
const OFFLINE: &[u8] = b"42[\"rt_module_offline\"";

/// `[event, payload, offset]` of a telemetry event; only what the sink needs is decoded.
#[derive(Deserialize)]
struct TelemetryEvent<'a>(
    serde::de::IgnoredAny,
    #[serde(borrow)] TelemetryPayload<'a>,
    serde::de::IgnoredAny,
);

#[derive(Deserialize)]
struct TelemetryPayload<'a> {
    #[serde(rename = "moduleId")]
    module_id: &'a str,
    telemetry: Stamp,
}

/// The readings that identify and date a message.
#[derive(Deserialize)]
pub struct Stamp {
    seq: Option<f64>,
    #[serde(rename = "sentAt")]
    sent_at: Option<f64>,
}

/// A telemetry message as modules publish it (the plain subscriber reads these).
#[derive(Deserialize)]
pub struct Published {
    readings: Stamp,
}

impl Sink {
    /// A consumer that counts only, or also measures `modules` modules.
    pub fn new(clock: Clock, measure_modules: Option<usize>) -> Result<Self> {
        let measure = match measure_modules {
            Some(n) => Some(Mutex::new(Measure {
                tracks: vec![Track::default(); n],
                latency: Histogram::new_with_bounds(1, 60_000_000, 3)
                    .context("latency histogram")?,
                warmup_until_us: u64::MAX,
                stale: 0,
            })),
            None => None,
        };
        Ok(Self {
            clock,
            telemetry: AtomicU64::new(0),
            online: AtomicU64::new(0),
            offline: AtomicU64::new(0),
            last_offline_us: AtomicU64::new(0),
            measure,
        })
    }

    /// Whether this sink measures latency and gaps.
    pub fn measures(&self) -> bool {
        self.measure.is_some()
    }

    /// Starts a step: `first_seq[m]` is the first `seq` module `m` sends in it; messages sent
    /// before `warmup_until_us` are not sampled.
    pub fn begin_step(&self, first_seq: &[u32], warmup_until_us: u64) {
        let Some(m) = &self.measure else { return };
        let Ok(mut m) = m.lock() else { return };
        for (t, first) in m.tracks.iter_mut().zip(first_seq) {
            *t = Track {
                expected: *first,
                ..Track::default()
            };
        }
        m.latency.reset();
        m.warmup_until_us = warmup_until_us;
        m.stale = 0;
    }

    /// Ends a step: `last_seq[m]` is the last `seq` module `m` sent in it.
    pub fn end_step(&self, last_seq: &[u32]) -> Option<StepDelivery> {
        let m = self.measure.as_ref()?;
        let mut m = m.lock().ok()?;
        let mut out = StepDelivery {
            received: 0,
            lost: 0,
            latency: m.latency.clone(),
        };
        for (t, last) in m.tracks.iter_mut().zip(last_seq) {
            // The tail: sent in the step, never received (expected..=last).
            let tail = u64::from(last.wrapping_add(1).saturating_sub(t.expected));
            out.received += t.received;
            out.lost += t.lost + tail;
            t.expected = t.expected.max(last.wrapping_add(1));
        }
        // Nothing more is sampled until the next step.
        m.warmup_until_us = u64::MAX;
        Some(out)
    }

    /// One telemetry update of `module` with its stamp.
    fn on_update(&self, module: Option<usize>, stamp: &Stamp) {
        let Some(measure) = &self.measure else { return };
        let (Some(module), Some(seq), Some(sent_at)) = (module, stamp.seq, stamp.sent_at) else {
            return;
        };
        let (seq, sent_at) = (seq as u32, sent_at as u32);
        let latency = self.clock.latency_us(sent_at);
        let sent_us = self.clock.now_us().saturating_sub(latency);
        let Ok(mut m) = measure.lock() else { return };
        let warmup = m.warmup_until_us;
        let Some(t) = m.tracks.get_mut(module) else {
            return;
        };
        if seq < t.expected {
            m.stale += 1;
            return;
        }
        t.lost += u64::from(seq - t.expected);
        t.expected = seq + 1;
        t.received += 1;
        if sent_us >= warmup {
            m.latency.saturating_record(latency.max(1));
        }
    }

    /// A telemetry publish as the plain subscriber receives it.
    pub fn on_publish(&self, module: Option<usize>, payload: &[u8]) {
        self.telemetry.fetch_add(1, Ordering::Relaxed);
        if self.measure.is_none() {
            return;
        }
        if let Ok(p) = serde_json::from_slice::<Published>(payload) {
            self.on_update(module, &p.readings);
        }
    }

    /// A module went offline (event or last will).
    pub fn on_offline(&self) {
        self.last_offline_us
            .store(self.clock.now_us(), Ordering::Relaxed);
        self.offline.fetch_add(1, Ordering::Relaxed);
    }

    /// Events of a kind received so far.
    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl TextSink for Sink {
    fn on_text(&self, text: &[u8]) {
        if text.starts_with(TELEMETRY) {
            self.telemetry.fetch_add(1, Ordering::Relaxed);
            if self.measure.is_some()
                && let Some(json) = text.get(2..)
                && let Ok(e) = serde_json::from_slice::<TelemetryEvent<'_>>(json)
            {
                self.on_update(module_index(e.1.module_id), &e.1.telemetry);
            }
        } else if text.starts_with(OFFLINE) {
            self.on_offline();
        } else if text.starts_with(ONLINE) {
            self.online.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_tail_count_as_lost() -> Result<()> {
        let sink = Sink::new(Clock::new(), Some(1))?;
        sink.begin_step(&[10], 0);
        for seq in [10, 11, 14] {
            let text = format!(
                "42[\"rt_telemetry_updated\",{{\"moduleId\":\"BENCH-00000\",\"telemetry\":{{\"seq\":{seq},\"sentAt\":0}},\"rev\":1,\"ts\":\"x\"}},5]"
            );
            sink.on_text(text.as_bytes());
        }
        let d = sink.end_step(&[15]).context("measuring sink")?;
        assert_eq!(d.received, 3);
        assert_eq!(d.lost, 2 + 1); // 12, 13 in a gap; 15 never came
        assert_eq!(Sink::count(&sink.telemetry), 3);
        Ok(())
    }

    #[test]
    fn latency_resolves_the_wheel() {
        let clock = Clock::new();
        let now = clock.sent_at();
        assert!(clock.latency_us(now) < 1_000_000);
        let earlier = ((u64::from(now) + WHEEL - 100) % WHEEL) as u32;
        assert!(clock.latency_us(earlier) >= 1000);
    }
}
