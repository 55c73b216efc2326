//! Report-by-exception: which readings a telemetry message carries.
//!
//! Radio time and battery are what a field module runs out of, so it sends only readings that
//! moved by more than their deadband ([`crate::Sensors::deadband`]) since the value it last
//! *reported* for them. Comparing with the last reported value, not the last sample, means a
//! slow drift is still reported once it adds up to more than the deadband. The hub merges
//! partial messages into the state it keeps (it diffs either way), and full reports bring it
//! back in step:
//!
//! - the first telemetry message after every connection (the hub may have restarted, or missed
//!   messages while the module was away);
//! - after a `ResendState` command;
//! - every `full_report_every`-th telemetry period ([`crate::CoreConfig::full_report_every`]),
//!   counting periods whose message was skipped, so a partial report lost on the way (QoS 0) is
//!   repaired within that many periods even if nothing changes afterwards;
//! - each message of a burst (a load-test fault: it must produce `n` messages).
//!
//! A periodic message with nothing to report is not sent and does not consume a sequence
//! number (the hub reads a gap in sequence numbers as lost messages). Non-finite samples are
//! never reported.

use mc_protocol::{ReadingName, Readings, Telemetry, message::MAX_READINGS};

// `TelemetryReport::mask` has one bit per reading.
const _: () = assert!(MAX_READINGS <= 32);

/// One telemetry message, by reading index: what [`crate::ModuleCore`] produces.
///
/// Index-based rather than named so that building it costs no string handling, and so that a
/// serial link can send it as is (mask + values); [`TelemetryReport::to_telemetry`] makes the
/// named protocol message for MQTT.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryReport {
    /// The message's sequence number: +1 per message sent, from 0 at boot.
    pub seq: u32,
    /// Bit i set = reading i present.
    pub mask: u32,
    /// Values of the present readings, in index order (one per bit set in `mask`).
    pub values: heapless::Vec<f32, MAX_READINGS>,
}

impl TelemetryReport {
    /// The present readings as `(index, value)`, in index order.
    pub fn readings(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        (0..MAX_READINGS)
            .filter(|&i| self.mask & (1 << i) != 0)
            .zip(self.values.iter().copied())
    }

    /// Number of readings present.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when no reading is present (the core never emits such a report).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The protocol message, with reading i named `names[i]` (pass [`crate::Sensors::names`]).
    /// Readings without a name, or that the protocol refuses (a duplicate name), are left out
    /// rather than failing the whole message.
    pub fn to_telemetry(&self, names: &[ReadingName]) -> Telemetry {
        let mut readings = Readings::new();
        for (index, value) in self.readings() {
            if let Some(name) = names.get(index) {
                // Cannot fail for a report made by the core with distinct names: values are
                // finite and at most MAX_READINGS. Ignoring keeps this path free of panics.
                let _ = readings.push(name.as_str(), value);
            }
        }
        Telemetry {
            seq: self.seq,
            readings,
        }
    }
}

/// The memory behind report-by-exception: what was last reported and when the next full report
/// is due. Owned by [`crate::ModuleCore`]; reset by a reboot.
#[derive(Debug, Clone)]
pub(crate) struct ExceptionFilter {
    /// Value last reported for each reading index; `None` until first reported (so it is
    /// reported as soon as it is finite).
    last_reported: [Option<f32>; MAX_READINGS],
    /// The next report carries all readings (set on connection and by `ResendState`).
    full_next: bool,
    /// Telemetry periods since the last full report, sent or skipped.
    since_full: u32,
}

impl ExceptionFilter {
    pub(crate) const fn new() -> Self {
        Self {
            last_reported: [None; MAX_READINGS],
            full_next: false,
            since_full: 0,
        }
    }

    /// The next report carries all readings.
    pub(crate) fn request_full(&mut self) {
        self.full_next = true;
    }

    /// Decides what one telemetry period reports, given its sample (`values[i]` = reading i)
    /// and each reading's deadband. `None`: nothing to report, send nothing. `full_every` is
    /// [`crate::CoreConfig::full_report_every`]; `force_full` makes this report full whatever the
    /// schedule.
    pub(crate) fn report(
        &mut self,
        seq: u32,
        values: &[f32],
        deadband: impl Fn(usize) -> f32,
        full_every: u32,
        force_full: bool,
    ) -> Option<TelemetryReport> {
        let full = force_full
            || self.full_next
            || (full_every != 0 && self.since_full.saturating_add(1) >= full_every);
        if full {
            self.full_next = false;
            self.since_full = 0;
        } else {
            self.since_full = self.since_full.saturating_add(1);
        }
        let mut report = TelemetryReport {
            seq,
            mask: 0,
            values: heapless::Vec::new(),
        };
        for (index, (&value, last)) in values.iter().zip(&mut self.last_reported).enumerate() {
            if !value.is_finite() {
                continue;
            }
            let moved = match *last {
                None => true,
                // `>`: a change of exactly the deadband is not reported, and with the default
                // deadband of 0.0 any change is. A NaN deadband reports only in full reports.
                Some(previous) => (value - previous).abs() > deadband(index),
            };
            if full || moved {
                // Cannot overflow: `values` is at most MAX_READINGS long (zip with
                // `last_reported`).
                let _ = report.values.push(value);
                report.mask |= 1 << index;
                *last = Some(value);
            }
        }
        (!report.is_empty()).then_some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> std::vec::Vec<ReadingName> {
        list.iter().map(|n| ReadingName::new(n).unwrap()).collect()
    }

    #[test]
    fn to_telemetry_names_present_readings_by_index() {
        let report = TelemetryReport {
            seq: 9,
            mask: 0b101,
            values: heapless::Vec::from_slice(&[21.5, 1013.2]).unwrap(),
        };
        assert_eq!(
            report.readings().collect::<std::vec::Vec<_>>(),
            [(0, 21.5), (2, 1013.2)]
        );
        let telemetry = report.to_telemetry(&names(&["temperature", "humidity", "pressure"]));
        assert_eq!(telemetry.seq, 9);
        assert_eq!(telemetry.readings.len(), 2);
        assert_eq!(telemetry.readings.get("temperature"), Some(21.5));
        assert_eq!(telemetry.readings.get("pressure"), Some(1013.2));
        assert_eq!(telemetry.readings.get("humidity"), None);
    }

    #[test]
    fn to_telemetry_leaves_out_unnamed_and_duplicate_readings() {
        let report = TelemetryReport {
            seq: 0,
            mask: 0b111,
            values: heapless::Vec::from_slice(&[1.0, 2.0, 3.0]).unwrap(),
        };
        let telemetry = report.to_telemetry(&names(&["a", "a"]));
        assert_eq!(telemetry.readings.len(), 1);
        assert_eq!(telemetry.readings.get("a"), Some(1.0));
        assert_eq!(telemetry.readings.validate(), Ok(()));
    }
}
