//! Event names and payload shapes: the contract with dashboards. Emitters and tests use these,
//! never string literals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::liveness::OfflineReason;

/// Sent to a socket right after it connected: who it is, which page.
pub const RT_SESSION: &str = "rt_session";
/// A module came online.
pub const RT_MODULE_ONLINE: &str = "rt_module_online";
/// A module went offline.
pub const RT_MODULE_OFFLINE: &str = "rt_module_offline";
/// Some readings of a module changed.
pub const RT_TELEMETRY_UPDATED: &str = "rt_telemetry_updated";

/// A module was registered (to its owner and admins).
pub const RT_MODULE_ADDED: &str = "rt_module_added";
/// A module was removed, or its owner lost it (to them and admins).
pub const RT_MODULE_REMOVED: &str = "rt_module_removed";
/// A module was renamed, retyped or reassigned (to its owner and admins).
pub const RT_MODULE_UPDATED: &str = "rt_module_updated";

/// Every event name a hub may emit: a hub reading the cluster's shared stream
/// (`cluster::relay`) accepts these and skips others (a newer hub's).
pub const ALL: [&str; 11] = [
    RT_SESSION,
    RT_MODULE_ONLINE,
    RT_MODULE_OFFLINE,
    RT_TELEMETRY_UPDATED,
    RT_MODULE_ADDED,
    RT_MODULE_REMOVED,
    RT_MODULE_UPDATED,
    RT_GLOBAL_STATS_UPDATED,
    RT_USER_LOGGED_IN,
    RT_USER_LOGGED_OUT,
    RT_USER_PROFILE_UPDATED,
];

/// Payload of [`RT_MODULE_ADDED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleAdded {
    /// Which module.
    pub module_id: String,
    /// Display name.
    pub name: String,
    /// Module type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Owner (none: admins only).
    pub user_id: Option<i64>,
}

/// Payload of [`RT_MODULE_REMOVED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleRemoved {
    /// Which module.
    pub module_id: String,
    /// Its owner (or former owner).
    pub user_id: Option<i64>,
}

/// Payload of [`RT_MODULE_UPDATED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleUpdated {
    /// Which module.
    pub module_id: String,
    /// Display name.
    pub name: String,
    /// Module type.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Global stats changed (to admins, at most once per stats interval).
pub const RT_GLOBAL_STATS_UPDATED: &str = "rt_global_stats_updated";

/// Payload of [`RT_GLOBAL_STATS_UPDATED`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalStatsUpdated {
    /// The numbers.
    pub stats: crate::stats::GlobalStats,
}

/// A user logged in (to admins).
pub const RT_USER_LOGGED_IN: &str = "rt_user_logged_in";
/// A user logged out (to admins).
pub const RT_USER_LOGGED_OUT: &str = "rt_user_logged_out";

/// A user's name or email changed (to admins and that user's own tabs).
pub const RT_USER_PROFILE_UPDATED: &str = "rt_user_profile_updated";

/// Payload of [`RT_USER_PROFILE_UPDATED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserProfileUpdated {
    /// User id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Login.
    pub email: String,
}

/// Payload of [`RT_USER_LOGGED_IN`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserLoggedIn {
    /// User id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Login.
    pub email: String,
    /// Admin flag.
    pub is_admin: bool,
}

/// Payload of [`RT_USER_LOGGED_OUT`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserLoggedOut {
    /// User id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// When (RFC 3339).
    pub logout_time: String,
}

/// Payload of [`RT_SESSION`] (`docs/REALTIME.md`): who the socket is, where the stream stands,
/// and what it missed when it resumed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The authenticated user.
    pub user_id: i64,
    /// Whether the user is an admin.
    pub is_admin: bool,
    /// The page the client named in its handshake.
    pub page: String,
    /// This hub process's epoch: a client resumes only within one epoch.
    pub epoch: String,
    /// The stream head when the socket joined its rooms: every later event arrives live.
    pub offset: u64,
    /// Whether `missed` holds exactly the events the client missed (else it fetches a snapshot).
    pub resumed: bool,
    /// The events the client missed, oldest first (empty unless `resumed`).
    pub missed: Vec<MissedEvent>,
}

/// One replayed event in [`SessionInfo::missed`]: `[event, payload, offset]` on the wire. The
/// payload is shared with the replay buffer, not copied.
#[derive(Debug, Clone)]
pub struct MissedEvent(
    /// The event name.
    pub &'static str,
    /// Its payload, as it was sent live.
    pub std::sync::Arc<serde_json::value::RawValue>,
    /// Its stream offset.
    pub u64,
);

impl Serialize for MissedEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(3)?;
        tuple.serialize_element(self.0)?;
        tuple.serialize_element(&*self.1)?;
        tuple.serialize_element(&self.2)?;
        tuple.end()
    }
}

/// Payload of [`RT_MODULE_ONLINE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleOnline {
    /// Which module.
    pub module_id: String,
    /// When its last message arrived (RFC 3339).
    pub last_seen: String,
    /// Firmware version from its hello, if it sent one.
    pub fw: Option<String>,
    /// Heartbeat interval from its hello, if it sent one.
    pub heartbeat_ms: Option<u32>,
}

/// Payload of [`RT_MODULE_OFFLINE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleOffline {
    /// Which module.
    pub module_id: String,
    /// When the hub decided it is offline (RFC 3339).
    pub disconnected_at: String,
    /// Why.
    pub reason: OfflineReason,
}

/// Payload of [`RT_TELEMETRY_UPDATED`]: only the readings that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryUpdated {
    /// Which module.
    pub module_id: String,
    /// Changed readings and their new values.
    pub telemetry: BTreeMap<String, f32>,
    /// The module's revision after the change; a gap means the client missed one.
    pub rev: u64,
    /// Present when several updates were merged for a client that fell behind
    /// (`realtime::delivery`): the oldest revision merged, so `fromRev..=rev` are all covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_rev: Option<u64>,
    /// When the hub received it (RFC 3339).
    pub ts: String,
}

/// [`TelemetryUpdated`] as the tracker emits it, borrowing what it has: the same JSON (a test
/// pins it) without building an owned map and a string per reading for every message.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryUpdatedRef<'a> {
    /// Which module.
    pub module_id: &'a str,
    /// Changed readings and their new values, in the map's order.
    pub telemetry: SortedReadings<'a>,
    /// The module's revision after the change.
    pub rev: u64,
    /// When the hub received it.
    pub ts: Timestamp,
}

/// Readings serialized as the JSON object a `BTreeMap<String, f32>` makes: keys in byte order,
/// the last value of a repeated name.
#[derive(Debug)]
pub struct SortedReadings<'a>(&'a [(mc_protocol::ReadingName, f32)]);

impl<'a> SortedReadings<'a> {
    /// Sorts `readings` by name (stable: of a repeated name the last stays last).
    pub fn new(readings: &'a mut [(mc_protocol::ReadingName, f32)]) -> Self {
        readings.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        Self(readings)
    }
}

impl Serialize for SortedReadings<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (i, (name, value)) in self.0.iter().enumerate() {
            // A map keeps the last value of a name: skip those a later entry replaces.
            if self.0.get(i + 1).is_some_and(|(next, _)| next == name) {
                continue;
            }
            map.serialize_entry(name.as_str(), value)?;
        }
        map.end()
    }
}

/// A time serialized as [`timestamp`] formats it, written straight into the payload.
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(pub std::time::SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// Formats a time as RFC 3339 with milliseconds, the format of every timestamp in payloads.
pub fn timestamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use mc_protocol::ReadingName;

    use super::*;

    /// The borrowed payload the tracker emits is byte for byte the owned one.
    #[test]
    fn telemetry_ref_serializes_as_the_owned_payload() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_280_000_123);
        let name = |s: &str| ReadingName::new(s).unwrap();
        let changed = [
            ("temperature", 21.5),
            ("b.x", -0.0),
            ("humidity", 1e-7),
            ("Zed", 3.0e38),
            ("a_1", 7.25),
        ];
        let mut readings: Vec<_> = changed.iter().map(|(n, v)| (name(n), *v)).collect();
        let owned = TelemetryUpdated {
            module_id: "MC-1001".into(),
            telemetry: changed.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            rev: 42,
            from_rev: None,
            ts: timestamp(at),
        };
        let borrowed = TelemetryUpdatedRef {
            module_id: "MC-1001",
            telemetry: SortedReadings::new(&mut readings),
            rev: 42,
            ts: Timestamp(at),
        };
        let json = serde_json::to_string(&borrowed).unwrap();
        assert_eq!(json, serde_json::to_string(&owned).unwrap());
        assert_eq!(
            serde_json::from_str::<TelemetryUpdated>(&json).unwrap(),
            owned
        );

        // A repeated name (never sent: readings are unique) keeps its last value, as a map.
        let mut repeated = vec![(name("t"), 1.0), (name("a"), 2.0), (name("t"), 3.0)];
        let json = serde_json::to_string(&SortedReadings::new(&mut repeated)).unwrap();
        let map: BTreeMap<String, f32> = [("t".into(), 1.0), ("a".into(), 2.0), ("t".into(), 3.0)]
            .into_iter()
            .collect();
        assert_eq!(json, serde_json::to_string(&map).unwrap());
        assert_eq!(
            serde_json::to_string(&SortedReadings::new(&mut [])).unwrap(),
            "{}"
        );
    }
}
