//! The messages of the protocol and their limits.
//!
//! Module → hub: [`Hello`] (birth certificate), [`Heartbeat`], [`Telemetry`].
//! Hub → module: [`Command`].
//!
//! Every type stores its strings and lists inline (`heapless`), so firmware needs no allocator,
//! and every type has one serde shape that both encodings use: field names matter only to JSON
//! (camelCase), postcard encodes fields in declaration order. **Changing field order or types
//! changes the wire format**: the golden tests in `tests/wire_format.rs` pin it.

use core::{fmt, ops::RangeInclusive};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, Visitor},
    ser::SerializeMap,
};

use crate::ProtocolError;

/// Most readings one telemetry message may carry.
pub const MAX_READINGS: usize = 32;
/// Longest reading name.
pub const READING_NAME_MAX_LEN: usize = 24;
/// Longest firmware version string.
pub const FIRMWARE_VERSION_MAX_LEN: usize = 16;
/// Heartbeat intervals a module may announce: 100 ms to 24 h.
pub const HEARTBEAT_MS_RANGE: RangeInclusive<u32> = 100..=86_400_000;
/// Telemetry intervals the hub may ask for: 100 ms to 24 h.
pub const TELEMETRY_MS_RANGE: RangeInclusive<u32> = 100..=86_400_000;

/// Something that travels on a module topic; [`Message::validate`] holds the rules that serde's
/// shape cannot express (finite numbers, unique names, ranges).
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// The topic kind this message travels on.
    const KIND: crate::TopicKind;
    /// Checks the semantic rules. Decoders call it, so a decoded message is always valid.
    fn validate(&self) -> Result<(), ProtocolError> {
        Ok(())
    }
}

/// Name of a reading, such as `temperature`: 1–24 chars from `a-z A-Z 0-9 _ . -`, starting with
/// a letter. Readings are JSON object keys and dashboard labels, so the set is kept plain.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadingName(heapless::String<READING_NAME_MAX_LEN>);

impl ReadingName {
    /// Validates `s` as a reading name.
    pub fn new(s: &str) -> Result<Self, ProtocolError> {
        let b = s.as_bytes();
        let valid = !b.is_empty()
            && b.len() <= READING_NAME_MAX_LEN
            && b[0].is_ascii_alphabetic()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !valid {
            return Err(ProtocolError::InvalidReadingName);
        }
        let mut inner = heapless::String::new();
        inner
            .push_str(s)
            .map_err(|_| ProtocolError::InvalidReadingName)?;
        Ok(Self(inner))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for ReadingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ReadingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ReadingName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReadingName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <&str>::deserialize(d)?;
        ReadingName::new(s).map_err(serde::de::Error::custom)
    }
}

/// One named numeric reading. `f32`: what sensors deliver and what an MCU's FPU handles (7
/// significant digits).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// What is measured.
    pub name: ReadingName,
    /// The value; must be finite.
    pub value: f32,
}

/// The readings of one telemetry message, in the order the module sent them.
///
/// Encoded as a map (`{"temperature":21.5}` in JSON, length-prefixed pairs in postcard).
/// Decoding never fails on a rule violation (bad name, NaN, duplicate, too many): it records the
/// first one, and [`Telemetry::validate`] reports it as a typed error.
#[derive(Clone, Default)]
pub struct Readings {
    items: heapless::Vec<Reading, MAX_READINGS>,
    violation: Option<ProtocolError>,
}

impl Readings {
    /// No readings.
    pub const fn new() -> Self {
        Self {
            items: heapless::Vec::new(),
            violation: None,
        }
    }

    /// Adds a reading, refusing invalid names, non-finite values, duplicates and overflow.
    pub fn push(&mut self, name: &str, value: f32) -> Result<(), ProtocolError> {
        let name = ReadingName::new(name)?;
        if !value.is_finite() {
            return Err(ProtocolError::NonFiniteReading);
        }
        if self.get(name.as_str()).is_some() {
            return Err(ProtocolError::DuplicateReading);
        }
        self.items
            .push(Reading { name, value })
            .map_err(|_| ProtocolError::TooManyReadings)
    }

    /// The value of reading `name`, if present.
    pub fn get(&self, name: &str) -> Option<f32> {
        self.items
            .iter()
            .find(|r| r.name.as_str() == name)
            .map(|r| r.value)
    }

    /// The readings in message order.
    pub fn iter(&self) -> core::slice::Iter<'_, Reading> {
        self.items.iter()
    }

    /// Number of readings.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there are no readings.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The first rule violation seen while decoding, if any.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        match &self.violation {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn record(&mut self, e: ProtocolError) {
        if self.violation.is_none() {
            self.violation = Some(e);
        }
    }
}

impl PartialEq for Readings {
    fn eq(&self, other: &Self) -> bool {
        self.items == other.items
    }
}

impl fmt::Debug for Readings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.items.iter().map(|r| (r.name.as_str(), r.value)))
            .finish()
    }
}

impl<'a> IntoIterator for &'a Readings {
    type Item = &'a Reading;
    type IntoIter = core::slice::Iter<'a, Reading>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl Serialize for Readings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.items.len()))?;
        for r in &self.items {
            map.serialize_entry(r.name.as_str(), &r.value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Readings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ReadingsVisitor;
        impl<'de> Visitor<'de> for ReadingsVisitor {
            type Value = Readings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of reading names to numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Readings, A::Error> {
                let mut readings = Readings::new();
                while let Some(name) = map.next_key::<&'de str>()? {
                    let value: f32 = map.next_value()?;
                    if let Err(e) = readings.push(name, value) {
                        readings.record(e);
                    }
                }
                Ok(readings)
            }
        }
        d.deserialize_map(ReadingsVisitor)
    }
}

/// A firmware version string such as `1.4.2` (1–16 characters, free form).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FirmwareVersion(heapless::String<FIRMWARE_VERSION_MAX_LEN>);

impl FirmwareVersion {
    /// Checks the length and makes a version.
    pub fn new(s: &str) -> Result<Self, ProtocolError> {
        if s.is_empty() || s.chars().any(char::is_control) {
            return Err(ProtocolError::InvalidFirmwareVersion);
        }
        let mut inner = heapless::String::new();
        inner
            .push_str(s)
            .map_err(|_| ProtocolError::InvalidFirmwareVersion)?;
        Ok(Self(inner))
    }

    /// The version as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FirmwareVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FirmwareVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <&str>::deserialize(d)?;
        FirmwareVersion::new(s).map_err(serde::de::Error::custom)
    }
}

/// Birth certificate, sent once per connection before anything else: who I am running and how
/// often I will say I am alive. JSON: `{"fw":"1.0.0","heartbeatMs":5000}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hello {
    /// Firmware version.
    pub fw: FirmwareVersion,
    /// Interval between heartbeats; the hub derives the module's liveness timeout from it.
    pub heartbeat_ms: u32,
}

impl Message for Hello {
    const KIND: crate::TopicKind = crate::TopicKind::Hello;
    fn validate(&self) -> Result<(), ProtocolError> {
        if HEARTBEAT_MS_RANGE.contains(&self.heartbeat_ms) {
            Ok(())
        } else {
            Err(ProtocolError::InvalidHeartbeatInterval)
        }
    }
}

/// "Still alive". JSON: `{"seq":7,"uptimeMs":1234}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Heartbeat {
    /// Increments by one per heartbeat; wraps at `u32::MAX`.
    pub seq: u32,
    /// Time since the module booted; a decrease means it rebooted.
    pub uptime_ms: u64,
}

impl Message for Heartbeat {
    const KIND: crate::TopicKind = crate::TopicKind::Heartbeat;
}

/// Sensor readings. JSON: `{"seq":42,"readings":{"temperature":21.5,"battery":3.71}}`.
///
/// A module may send all its readings every time or only those that changed: the hub diffs
/// against what it already has either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    /// Increments by one per telemetry message (independent of heartbeats); the hub uses it to
    /// drop duplicates and out-of-order messages. Restarts from any value after a new hello.
    pub seq: u32,
    /// Named readings.
    pub readings: Readings,
}

impl Message for Telemetry {
    const KIND: crate::TopicKind = crate::TopicKind::Telemetry;
    fn validate(&self) -> Result<(), ProtocolError> {
        self.readings.validate()
    }
}

/// A hub → module command. JSON: `{"id":3,"action":{"setHeartbeatInterval":{"ms":1000}}}` or
/// `{"id":4,"action":"reboot"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Command {
    /// Chosen by the hub; the module echoes it in its acknowledgement.
    pub id: u32,
    /// What to do.
    pub action: CommandAction,
}

/// What a [`Command`] asks for. Externally tagged, which both encodings support; new variants
/// go at the end (postcard encodes the variant index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CommandAction {
    /// Change the heartbeat interval (the module sends a new hello announcing it).
    SetHeartbeatInterval {
        /// New interval in milliseconds.
        ms: u32,
    },
    /// Change how often telemetry is sampled and reported.
    SetTelemetryInterval {
        /// New interval in milliseconds.
        ms: u32,
    },
    /// Send all readings again, even unchanged ones.
    ResendState,
    /// Restart the module.
    Reboot,
}

impl Message for Command {
    const KIND: crate::TopicKind = crate::TopicKind::Cmd;
    fn validate(&self) -> Result<(), ProtocolError> {
        match self.action {
            CommandAction::SetHeartbeatInterval { ms } if !HEARTBEAT_MS_RANGE.contains(&ms) => {
                Err(ProtocolError::InvalidHeartbeatInterval)
            }
            CommandAction::SetTelemetryInterval { ms } if !TELEMETRY_MS_RANGE.contains(&ms) => {
                Err(ProtocolError::InvalidTelemetryInterval)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_refuse_bad_input() {
        let mut r = Readings::new();
        assert_eq!(r.push("temperature", 21.5), Ok(()));
        assert_eq!(
            r.push("temperature", 1.0),
            Err(ProtocolError::DuplicateReading)
        );
        assert_eq!(
            r.push("hum", f32::NAN),
            Err(ProtocolError::NonFiniteReading)
        );
        assert_eq!(
            r.push("hum", f32::INFINITY),
            Err(ProtocolError::NonFiniteReading)
        );
        assert_eq!(r.push("1abc", 1.0), Err(ProtocolError::InvalidReadingName));
        assert_eq!(r.push("a/b", 1.0), Err(ProtocolError::InvalidReadingName));
        assert_eq!(r.len(), 1);
        assert_eq!(r.get("temperature"), Some(21.5));
    }

    #[test]
    fn readings_overflow_is_refused() {
        let mut r = Readings::new();
        let mut name = heapless::String::<8>::new();
        for i in 0..MAX_READINGS {
            name.clear();
            core::fmt::write(&mut name, format_args!("r{i}")).unwrap();
            r.push(&name, i as f32).unwrap();
        }
        assert_eq!(r.push("extra", 1.0), Err(ProtocolError::TooManyReadings));
    }

    #[test]
    fn hello_heartbeat_range() {
        let fw = FirmwareVersion::new("1.0.0").unwrap();
        let ok = Hello {
            fw: fw.clone(),
            heartbeat_ms: 5000,
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = Hello {
            fw,
            heartbeat_ms: 5,
        };
        assert_eq!(bad.validate(), Err(ProtocolError::InvalidHeartbeatInterval));
    }
}
