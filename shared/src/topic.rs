//! The MQTT topic table. Every module topic is `mc/<module id>/<kind>`:
//!
//! | topic | direction | payload |
//! |---|---|---|
//! | `mc/<id>/hello` | module → hub | [`crate::Hello`] |
//! | `mc/<id>/heartbeat` | module → hub | [`crate::Heartbeat`] |
//! | `mc/<id>/telemetry` | module → hub | [`crate::Telemetry`] |
//! | `mc/<id>/status` | broker (last will) / module | `offline` / `online` |
//! | `mc/<id>/cmd` | hub → module | [`crate::Command`] |

use core::fmt;

use crate::{ModuleId, ProtocolError};

/// First level of every module topic.
pub const TOPIC_ROOT: &str = "mc";
/// Subscription filter that matches every module → hub topic.
pub const FILTER_ALL_MODULES: &str = "mc/+/+";
/// Longest module topic: `mc/` + id + `/` + longest kind.
pub const MAX_TOPIC_LEN: usize = 3 + crate::module_id::MODULE_ID_MAX_LEN + 1 + 9;

/// The last level of a module topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `hello`: birth certificate.
    Hello,
    /// `heartbeat`: liveness.
    Heartbeat,
    /// `telemetry`: readings.
    Telemetry,
    /// `status`: `offline` last will (or `online`).
    Status,
    /// `cmd`: commands from the hub.
    Cmd,
}

impl TopicKind {
    /// The topic level as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Heartbeat => "heartbeat",
            Self::Telemetry => "telemetry",
            Self::Status => "status",
            Self::Cmd => "cmd",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hello" => Self::Hello,
            "heartbeat" => Self::Heartbeat,
            "telemetry" => Self::Telemetry,
            "status" => Self::Status,
            "cmd" => Self::Cmd,
            _ => return None,
        })
    }
}

/// A parsed module topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleTopic {
    /// Whose topic.
    pub module: ModuleId,
    /// Which one.
    pub kind: TopicKind,
}

impl ModuleTopic {
    /// The topic `kind` of `module`.
    pub fn new(module: ModuleId, kind: TopicKind) -> Self {
        Self { module, kind }
    }

    /// Parses `mc/<id>/<kind>`; anything else (extra levels, wildcards, bad id) is an error.
    pub fn parse(topic: &str) -> Result<Self, ProtocolError> {
        let mut parts = topic.split('/');
        let (Some(TOPIC_ROOT), Some(id), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProtocolError::InvalidTopic);
        };
        let module = ModuleId::new(id).map_err(|_| ProtocolError::InvalidTopic)?;
        let kind = TopicKind::parse(kind).ok_or(ProtocolError::InvalidTopic)?;
        Ok(Self { module, kind })
    }

    /// The topic as a fixed-capacity string (no allocation).
    pub fn to_heapless(&self) -> heapless::String<MAX_TOPIC_LEN> {
        let mut s = heapless::String::new();
        // Cannot fail: MAX_TOPIC_LEN is the longest possible topic.
        let _ = fmt::write(&mut s, format_args!("{self}"));
        s
    }
}

impl fmt::Display for ModuleTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOPIC_ROOT}/{}/{}", self.module, self.kind.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = ModuleId::new("MC-1001-STN").unwrap();
        for kind in [
            TopicKind::Hello,
            TopicKind::Heartbeat,
            TopicKind::Telemetry,
            TopicKind::Status,
            TopicKind::Cmd,
        ] {
            let t = ModuleTopic::new(id.clone(), kind);
            let s = t.to_heapless();
            assert_eq!(ModuleTopic::parse(&s), Ok(t));
        }
        let longest = ModuleTopic::new(
            ModuleId::new(&"x".repeat(32)).unwrap(),
            TopicKind::Telemetry,
        );
        assert_eq!(longest.to_heapless().len(), MAX_TOPIC_LEN);
    }

    #[test]
    fn rejects_foreign_topics() {
        for bad in [
            "",
            "mc",
            "mc/M1/telemetry",
            "mc/MC-1001/telemetry/x",
            "xx/MC-1001/telemetry",
            "mc/+/telemetry",
            "mc/#",
            "mc/MC-1001/unknown",
            "/mc/MC-1001/hello",
        ] {
            assert_eq!(
                ModuleTopic::parse(bad),
                Err(ProtocolError::InvalidTopic),
                "{bad}"
            );
        }
    }
}
