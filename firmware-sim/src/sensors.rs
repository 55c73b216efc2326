//! Seeded, realistic sensor generators: the simulator's implementation of
//! [`mc_firmware::Sensors`] (a real board reads hardware through the same trait).
//!
//! Every module gets its own [`SimSensors`], seeded from the simulation seed and the module's
//! index, so a run is reproducible: the same seed and index always give the same sequence of
//! samples. The generator is a hand-written SplitMix64 rather than a `rand` RNG because its
//! output is stable across crate versions.
//!
//! Each sensor is a slow random walk pulled back towards a per-module centre and clamped to a
//! physical range, then quantised to the sensor's resolution, so many readings stay unchanged
//! from one sample to the next — like real sensors, and what report-by-exception and the hub's
//! diffing are for. Deadbands are the trait's default (any change is reported): the values are
//! already quantised, so the dashboards see every step.

use mc_protocol::ReadingName;

/// Reading names, as they appear on the wire and on dashboards.
pub mod names {
    /// Air temperature, °C.
    pub const TEMPERATURE: &str = "temperature";
    /// Relative humidity, %.
    pub const HUMIDITY: &str = "humidity";
    /// Battery voltage, V.
    pub const BATTERY: &str = "battery";
    /// Received signal strength, dBm.
    pub const RSSI: &str = "rssi";
    /// Barometric pressure, hPa.
    pub const PRESSURE: &str = "pressure";

    /// Every reading, in reading-index order (the order of [`super::Sample::values`]).
    pub const ALL: [&str; 5] = [TEMPERATURE, HUMIDITY, BATTERY, RSSI, PRESSURE];
}

/// Temperature range, °C.
pub const TEMPERATURE_RANGE: (f64, f64) = (15.0, 25.0);
/// Humidity range, %.
pub const HUMIDITY_RANGE: (f64, f64) = (30.0, 70.0);
/// Battery range, V: starts near the top, drains towards the bottom.
pub const BATTERY_RANGE: (f64, f64) = (3.3, 4.15);
/// RSSI range, dBm.
pub const RSSI_RANGE: (f64, f64) = (-95.0, -45.0);
/// Pressure range, hPa.
pub const PRESSURE_RANGE: (f64, f64) = (980.0, 1040.0);

/// SplitMix64: tiny, fast, good enough for simulation, and bit-for-bit stable.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform in `[-1, 1)`.
    fn signed(&mut self) -> f64 {
        self.next_f64() * 2.0 - 1.0
    }
}

/// One mean-reverting random walk.
#[derive(Debug, Clone)]
struct Walk {
    /// Current (unquantised) value.
    value: f64,
    /// Where the walk drifts back to; differs per module so stations don't all read the same.
    centre: f64,
    /// Largest random step per sample.
    step: f64,
    /// Hard physical limits.
    range: (f64, f64),
}

impl Walk {
    fn advance(&mut self, rng: &mut SplitMix64) -> f64 {
        let pull = (self.centre - self.value) * 0.05;
        self.value =
            (self.value + pull + self.step * rng.signed()).clamp(self.range.0, self.range.1);
        self.value
    }
}

/// One set of readings, already quantised to each sensor's resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// °C, 0.1 resolution.
    pub temperature: f32,
    /// %, 0.5 resolution.
    pub humidity: f32,
    /// V, 0.01 resolution.
    pub battery: f32,
    /// dBm, integer.
    pub rssi: f32,
    /// hPa, 0.1 resolution.
    pub pressure: f32,
}

impl Sample {
    /// All readings, in reading-index order ([`names::ALL`]).
    pub fn values(&self) -> [f32; 5] {
        [
            self.temperature,
            self.humidity,
            self.battery,
            self.rssi,
            self.pressure,
        ]
    }
}

/// The sensors of one simulated module.
#[derive(Debug, Clone)]
pub struct SimSensors {
    /// [`names::ALL`] as reading names, built once ([`mc_firmware::Sensors::names`] lends them).
    names: [ReadingName; 5],
    /// Drives every walk; seeded from (seed, index).
    rng: SplitMix64,
    temperature: Walk,
    humidity: Walk,
    rssi: Walk,
    pressure: Walk,
    /// Battery voltage: only goes down (no charging in this simulation).
    battery: f64,
}

impl SimSensors {
    /// The sensors of module number `index` in a simulation seeded with `seed`.
    pub fn new(seed: u64, index: u32) -> Self {
        // Mix the index through its own generator so neighbouring indices don't give
        // neighbouring streams.
        let mut rng = SplitMix64::new(seed ^ SplitMix64::new(u64::from(index)).next_u64());
        let mut walk = |range: (f64, f64), centre: (f64, f64), step: f64| {
            let centre = rng.range(centre.0, centre.1);
            Walk {
                value: centre,
                centre,
                step,
                range,
            }
        };
        let temperature = walk(TEMPERATURE_RANGE, (17.0, 23.0), 0.06);
        let humidity = walk(HUMIDITY_RANGE, (40.0, 60.0), 0.4);
        let rssi = walk(RSSI_RANGE, (-82.0, -58.0), 2.0);
        let pressure = walk(PRESSURE_RANGE, (1005.0, 1020.0), 0.08);
        let battery = rng.range(4.05, 4.15);
        Self {
            names: names::ALL.map(|name| {
                ReadingName::new(name).expect("the reading name constants are valid (tested)")
            }),
            rng,
            temperature,
            humidity,
            rssi,
            pressure,
            battery,
        }
    }

    /// Advances every sensor by one sampling period and returns the quantised readings.
    pub fn next_sample(&mut self) -> Sample {
        let rng = &mut self.rng;
        let temperature = self.temperature.advance(rng);
        let humidity = self.humidity.advance(rng);
        let rssi = self.rssi.advance(rng);
        let pressure = self.pressure.advance(rng);
        self.battery = (self.battery - rng.range(0.0001, 0.0008)).max(BATTERY_RANGE.0);
        Sample {
            temperature: quantise(temperature, 0.1),
            humidity: quantise(humidity, 0.5),
            battery: quantise(self.battery, 0.01),
            rssi: quantise(rssi, 1.0),
            pressure: quantise(pressure, 0.1),
        }
    }
}

impl mc_firmware::Sensors for SimSensors {
    fn names(&self) -> &[ReadingName] {
        &self.names
    }

    fn sample(&mut self, values: &mut [f32]) {
        for (slot, value) in values.iter_mut().zip(self.next_sample().values()) {
            *slot = value;
        }
    }
}

/// Rounds `x` to the nearest multiple of `step` (half away from zero), as the sensor's ADC would.
/// Written without `f64::round` so it also compiles in `no_std`.
fn quantise(x: f64, step: f64) -> f32 {
    let q = x / step;
    let rounded = if q >= 0.0 {
        (q + 0.5) as i64
    } else {
        (q - 0.5) as i64
    };
    (rounded as f64 * step) as f32
}

#[cfg(test)]
mod tests {
    use mc_firmware::Sensors;

    use super::*;

    fn within(v: f32, (lo, hi): (f64, f64)) -> bool {
        (lo as f32..=hi as f32).contains(&v)
    }

    fn is_multiple(v: f32, step: f64) -> bool {
        let q = f64::from(v) / step;
        (q - q.round()).abs() < 1e-3
    }

    #[test]
    fn same_seed_and_index_give_the_same_sequence() {
        let mut a = SimSensors::new(42, 3);
        let mut b = SimSensors::new(42, 3);
        for _ in 0..1000 {
            assert_eq!(a.next_sample(), b.next_sample());
        }
    }

    #[test]
    fn different_index_or_seed_differ() {
        let first = |seed, index| {
            let mut s = SimSensors::new(seed, index);
            (0..20).map(|_| s.next_sample()).collect::<Vec<_>>()
        };
        assert_ne!(first(42, 0), first(42, 1));
        assert_ne!(first(42, 0), first(43, 0));
    }

    #[test]
    fn samples_stay_in_range_and_quantised() {
        for index in 0..20 {
            let mut s = SimSensors::new(7, index);
            let mut previous_battery = f32::MAX;
            for _ in 0..5_000 {
                let x = s.next_sample();
                assert!(within(x.temperature, TEMPERATURE_RANGE), "{x:?}");
                assert!(within(x.humidity, HUMIDITY_RANGE), "{x:?}");
                assert!(within(x.battery, BATTERY_RANGE), "{x:?}");
                assert!(within(x.rssi, RSSI_RANGE), "{x:?}");
                assert!(within(x.pressure, PRESSURE_RANGE), "{x:?}");
                assert!(is_multiple(x.temperature, 0.1), "{x:?}");
                assert!(is_multiple(x.humidity, 0.5), "{x:?}");
                assert!(is_multiple(x.battery, 0.01), "{x:?}");
                assert_eq!(x.rssi, x.rssi.trunc(), "{x:?}");
                assert!(is_multiple(x.pressure, 0.1), "{x:?}");
                assert!(x.battery <= previous_battery, "battery never recharges");
                previous_battery = x.battery;
            }
        }
    }

    #[test]
    fn battery_starts_full_and_some_readings_repeat() {
        let mut s = SimSensors::new(1, 0);
        let first = s.next_sample();
        assert!(first.battery > 4.0, "{first:?}");
        let samples: Vec<_> = (0..100).map(|_| s.next_sample()).collect();
        let unchanged_temperature = samples
            .windows(2)
            .filter(|w| w[0].temperature == w[1].temperature)
            .count();
        assert!(unchanged_temperature > 10, "{unchanged_temperature}");
    }

    #[test]
    fn the_trait_reports_five_named_readings_in_a_fixed_order() {
        let mut sensors = SimSensors::new(0, 0);
        let names: Vec<&str> = sensors.names().iter().map(ReadingName::as_str).collect();
        assert_eq!(
            names,
            ["temperature", "humidity", "battery", "rssi", "pressure"]
        );
        let mut twin = sensors.clone();
        for _ in 0..10 {
            let mut values = [0.0; 5];
            Sensors::sample(&mut sensors, &mut values);
            let expected = twin.next_sample();
            assert_eq!(values, expected.values(), "same stream through the trait");
            assert_eq!(values[0], expected.temperature);
            assert_eq!(values[3], expected.rssi);
        }
        assert_eq!(sensors.deadband(0), 0.0, "any change is reported");
    }

    #[test]
    fn quantise_rounds_half_away_from_zero() {
        assert_eq!(quantise(21.34, 0.1), 21.3);
        assert_eq!(quantise(21.36, 0.1), 21.4);
        assert_eq!(quantise(-71.5, 1.0), -72.0);
        assert_eq!(quantise(-71.4, 1.0), -71.0);
        assert_eq!(quantise(45.26, 0.5), 45.5);
    }
}
