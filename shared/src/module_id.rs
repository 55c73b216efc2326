//! [`ModuleId`]: who a module is. It appears in MQTT topics, client ids and URLs, so its charset
//! excludes everything that means something there (`/`, `+`, `#`, whitespace, `%`, `?`).

use core::{fmt, ops::Deref, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ProtocolError;

/// Shortest allowed module id.
pub const MODULE_ID_MIN_LEN: usize = 3;
/// Longest allowed module id (bytes = characters: the charset is ASCII).
pub const MODULE_ID_MAX_LEN: usize = 32;

/// A validated module id such as `MC-1001-STN`.
///
/// Rule: 3 to 32 ASCII characters from `A-Z a-z 0-9 - _`, the first one a letter or digit.
/// Ids are case-sensitive. Stored inline (no allocation), so firmware can hold one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(heapless::String<MODULE_ID_MAX_LEN>);

impl ModuleId {
    /// Validates `s` and makes it a module id.
    pub fn new(s: &str) -> Result<Self, ProtocolError> {
        if !is_valid(s) {
            return Err(ProtocolError::InvalidModuleId);
        }
        let mut inner = heapless::String::new();
        inner
            .push_str(s)
            .map_err(|_| ProtocolError::InvalidModuleId)?;
        Ok(Self(inner))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// True when `s` follows the module id rule (see [`ModuleId`]).
pub fn is_valid(s: &str) -> bool {
    let bytes = s.as_bytes();
    (MODULE_ID_MIN_LEN..=MODULE_ID_MAX_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

impl Deref for ModuleId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ModuleId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl FromStr for ModuleId {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for ModuleId {
    type Error = ProtocolError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleId({})", self.as_str())
    }
}

impl Serialize for ModuleId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ModuleId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <&str>::deserialize(d)?;
        ModuleId::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_typical_ids() {
        for ok in ["MC-1001-STN", "abc", "A_1", "x".repeat(32).as_str()] {
            assert!(ModuleId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_topic_and_url_metacharacters() {
        let long = "x".repeat(33);
        for bad in [
            "", "ab", "-MC1", "_MC1", "MC/1001", "MC+1", "MC#1", "MC 1", "MC%1", "MÇ-1", &long,
        ] {
            assert_eq!(
                ModuleId::new(bad),
                Err(ProtocolError::InvalidModuleId),
                "{bad:?}"
            );
        }
    }
}
