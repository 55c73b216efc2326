//! What a module measures, behind a trait: a real board reads its ADC, I²C or radio, the
//! simulator draws seeded random walks (`firmware_sim::sensors`), and [`crate::ModuleCore`] does
//! not know the difference.
//!
//! Readings are addressed by index, not by name: [`Sensors::sample`] fills a plain `f32` slice,
//! so sampling costs no string handling on a microcontroller, and the names are looked up only
//! when a report is turned into a protocol message
//! ([`crate::TelemetryReport::to_telemetry`]).

use mc_protocol::ReadingName;

/// The sensors of one module.
pub trait Sensors {
    /// The readings this module reports, in a fixed order: index i of every sample is reading i.
    /// At most [`mc_protocol::message::MAX_READINGS`] (32; the core ignores any beyond), with
    /// distinct names; must not change while running, since the core remembers the last
    /// reported value of each index.
    fn names(&self) -> &[ReadingName];

    /// Takes one sample: fills `values[i]` for every reading i; `values.len() == names().len()`.
    ///
    /// A reading that is unavailable right now (sensor not ready, bus error) may be set to NaN:
    /// the core skips non-finite values, it never reports them.
    fn sample(&mut self, values: &mut [f32]);

    /// Smallest change of reading i worth reporting (report-by-exception): a value is reported
    /// when it differs from the value last reported by *more* than this. Default 0.0: any
    /// change. Use it to keep sensor noise off the radio, e.g. 0.2 for a thermometer that
    /// jitters by ±0.1 °C.
    fn deadband(&self, _index: usize) -> f32 {
        0.0
    }
}
