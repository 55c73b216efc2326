//! JSON lines: the serial link for quick prototypes (`Serial.println` from an Arduino sketch),
//! one JSON object per `\n`-terminated line, at most [`MAX_LINE_LEN`] bytes.
//!
//! The same conversation as the binary link (hello → accept, heartbeats, telemetry, commands
//! and acks, errors), with readings by name instead of by index and no CRC: a damaged line is
//! only caught when it no longer parses. It costs about 4× the bytes of a binary frame, so a
//! 115200-baud line carries about 4× fewer telemetry messages (see BENCHMARKS.md): fine for a
//! prototype, not for production. `hardware/PROTOCOL.md` §7 lists the shapes.

use serde::{Deserialize, Serialize};

use super::{
    FrameError, LINK_VERSION,
    message::{Accept, Ack, LinkError, RefuseReason},
};
use crate::{
    Command, FirmwareVersion, Heartbeat, ModuleId, ProtocolError, Telemetry,
    message::{HEARTBEAT_MS_RANGE, Message, TELEMETRY_MS_RANGE},
};

/// Longest line either side sends or accepts, newline excluded.
pub const MAX_LINE_LEN: usize = super::MAX_FRAME_LEN;

/// Module → hub, one per line: `{"heartbeat":{"seq":7,"uptimeMs":1234}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum JsonUplink {
    /// `{"hello":{"protocol":1,"module":"MC-1001-STN","fw":"1.0.0","heartbeatMs":5000,"telemetryMs":2000}}`
    Hello(JsonHello),
    /// `{"heartbeat":{"seq":7,"uptimeMs":1234}}`
    Heartbeat(Heartbeat),
    /// `{"telemetry":{"seq":42,"readings":{"temperature":21.5,"battery":3.71}}}`
    Telemetry(Box<Telemetry>),
    /// `{"ack":{"command":3,"result":"done"}}`
    Ack(Ack),
    /// `{"error":"crcMismatch"}`
    Error(LinkError),
}

/// Hub → module, one per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum JsonDownlink {
    /// `{"accept":{"protocol":1,"heartbeatMs":5000,"telemetryMs":2000}}`
    Accept(Accept),
    /// `{"command":{"id":3,"action":{"setHeartbeatInterval":{"ms":1000}}}}`
    Command(Command),
    /// `{"error":"malformed"}`
    Error(LinkError),
    /// `{"refuse":"unknownModule"}`
    Refuse(RefuseReason),
}

/// The hello of a JSON-lines module: no reading list (telemetry names its readings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonHello {
    /// The link protocol version ([`super::LINK_VERSION`]).
    pub protocol: u8,
    /// Who it is; must be registered in the hub.
    pub module: ModuleId,
    /// Firmware version.
    pub fw: FirmwareVersion,
    /// Interval between heartbeats.
    pub heartbeat_ms: u32,
    /// Interval between telemetry samples.
    pub telemetry_ms: u32,
}

/// Decodes one line (without its `\n`; a trailing `\r` is accepted) and checks its rules.
///
/// Errors mean what they mean on the binary link: not JSON at all (noise, a cut line) is
/// [`FrameError::Crc`]; an unknown message key is [`FrameError::UnknownMessage`] (tag 255: JSON
/// has no tags); a hello in another protocol version is [`FrameError::VersionMismatch`] and a
/// hello that breaks a rule [`FrameError::InvalidHello`]; anything else of the wrong shape is
/// [`FrameError::Malformed`], a rule broken elsewhere [`FrameError::Invalid`].
pub fn decode_uplink_line(line: &[u8]) -> Result<JsonUplink, FrameError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(FrameError::TooLong { len: line.len() });
    }
    let msg: JsonUplink = match serde_json::from_slice(line) {
        Ok(msg) => msg,
        // The slow path, for bad lines only: find out what the line meant to be.
        Err(_) => return Err(classify(line)),
    };
    match &msg {
        JsonUplink::Hello(h) => {
            if h.protocol != LINK_VERSION {
                return Err(FrameError::VersionMismatch {
                    protocol: h.protocol,
                });
            }
            if !HEARTBEAT_MS_RANGE.contains(&h.heartbeat_ms) {
                return Err(FrameError::InvalidHello(
                    ProtocolError::InvalidHeartbeatInterval,
                ));
            }
            if !TELEMETRY_MS_RANGE.contains(&h.telemetry_ms) {
                return Err(FrameError::InvalidHello(
                    ProtocolError::InvalidTelemetryInterval,
                ));
            }
        }
        JsonUplink::Telemetry(t) => t.validate().map_err(FrameError::Invalid)?,
        JsonUplink::Heartbeat(_) | JsonUplink::Ack(_) | JsonUplink::Error(_) => {}
    }
    Ok(msg)
}

/// Why a line that did not decode did not: see [`decode_uplink_line`].
fn classify(line: &[u8]) -> FrameError {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
        return FrameError::Crc;
    };
    let Some((key, body)) = value
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
    else {
        return FrameError::Malformed;
    };
    match key.as_str() {
        "hello" => match body.get("protocol").and_then(serde_json::Value::as_u64) {
            Some(p) if p != u64::from(LINK_VERSION) => FrameError::VersionMismatch {
                protocol: u8::try_from(p).unwrap_or(u8::MAX),
            },
            _ => FrameError::InvalidHello(ProtocolError::Malformed),
        },
        "heartbeat" | "telemetry" | "ack" | "error" => FrameError::Malformed,
        _ => FrameError::UnknownMessage { tag: u8::MAX },
    }
}

/// Encodes a hub → module line, `\n` included.
pub fn downlink_line(msg: &JsonDownlink) -> Vec<u8> {
    // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
    let mut line =
        serde_json::to_vec(msg).unwrap_or_else(|_| b"{\"error\":\"malformed\"}".to_vec());
    line.push(b'\n');
    line
}

/// Encodes a module → hub line, `\n` included (for the simulator and tests).
pub fn uplink_line(msg: &JsonUplink) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Decodes a hub → module line (for the simulator and tests).
pub fn decode_downlink_line(line: &[u8]) -> Result<JsonDownlink, FrameError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(FrameError::TooLong { len: line.len() });
    }
    let msg: JsonDownlink = serde_json::from_slice(line).map_err(|_| FrameError::Malformed)?;
    if let JsonDownlink::Command(c) = &msg {
        c.validate().map_err(FrameError::Invalid)?;
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Readings, link::CommandResult};

    #[test]
    fn shapes_are_readable() {
        let mut readings = Readings::new();
        readings.push("temperature", 21.5).unwrap();
        let up = JsonUplink::Telemetry(Box::new(Telemetry { seq: 42, readings }));
        assert_eq!(
            uplink_line(&up),
            b"{\"telemetry\":{\"seq\":42,\"readings\":{\"temperature\":21.5}}}\n"
        );
        let hello = br#"{"hello":{"protocol":1,"module":"MC-1001-STN","fw":"1.0.0","heartbeatMs":5000,"telemetryMs":2000}}"#;
        assert!(matches!(
            decode_uplink_line(hello),
            Ok(JsonUplink::Hello(_))
        ));
        let ack = br#"{"ack":{"command":3,"result":"done"}}"#;
        assert_eq!(
            decode_uplink_line(ack).unwrap(),
            JsonUplink::Ack(Ack {
                command: 3,
                result: CommandResult::Done
            })
        );
        assert_eq!(
            downlink_line(&JsonDownlink::Refuse(RefuseReason::UnknownModule)),
            b"{\"refuse\":\"unknownModule\"}\n"
        );
        assert_eq!(
            downlink_line(&JsonDownlink::Accept(Accept {
                protocol: 1,
                heartbeat_ms: 5000,
                telemetry_ms: 2000
            })),
            b"{\"accept\":{\"protocol\":1,\"heartbeatMs\":5000,\"telemetryMs\":2000}}\n"
        );
    }

    #[test]
    fn bad_lines_are_classified() {
        assert_eq!(decode_uplink_line(b"\x13\x37garbage"), Err(FrameError::Crc));
        assert_eq!(
            decode_uplink_line(b"{\"hello\":{\"prot"),
            Err(FrameError::Crc)
        );
        assert_eq!(
            decode_uplink_line(br#"{"reboot":{}}"#),
            Err(FrameError::UnknownMessage { tag: u8::MAX })
        );
        assert_eq!(
            decode_uplink_line(br#"{"heartbeat":{"seq":"x"}}"#),
            Err(FrameError::Malformed)
        );
        assert_eq!(
            decode_uplink_line(br#"{"hello":{"protocol":2,"module":"MC-1","newField":true}}"#),
            Err(FrameError::VersionMismatch { protocol: 2 })
        );
        assert_eq!(
            decode_uplink_line(br#"{"hello":{"protocol":1,"module":"MC-1","fw":"1","heartbeatMs":5000,"telemetryMs":2000,"x":1}}"#),
            Err(FrameError::InvalidHello(ProtocolError::Malformed))
        );
        assert!(matches!(
            decode_uplink_line(br#"{"telemetry":{"seq":1,"readings":{"a":1,"a":2}}}"#),
            Err(FrameError::Invalid(_))
        ));
        assert!(matches!(
            decode_uplink_line(br#"{"telemetry":{"seq":1,"readings":{"1bad":2}}}"#),
            Err(FrameError::Invalid(_))
        ));
        assert!(matches!(
            decode_uplink_line(br#"{"hello":{"protocol":1,"module":"MC-1","fw":"1","heartbeatMs":1,"telemetryMs":2000}}"#),
            Err(FrameError::InvalidHello(_))
        ));
        assert!(decode_uplink_line(b"{\"heartbeat\":{\"seq\":1,\"uptimeMs\":2}}\r").is_ok());
        let long = [b' '; MAX_LINE_LEN + 1];
        assert!(matches!(
            decode_uplink_line(&long),
            Err(FrameError::TooLong { .. })
        ));
    }
}
