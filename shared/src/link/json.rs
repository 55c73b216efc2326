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
    FrameError,
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
pub fn decode_uplink_line(line: &[u8]) -> Result<JsonUplink, FrameError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(FrameError::TooLong { len: line.len() });
    }
    let msg: JsonUplink = serde_json::from_slice(line).map_err(|e| {
        if e.is_data() {
            // Valid JSON of the wrong shape: an unknown message or field, or a bad value.
            FrameError::Malformed
        } else {
            // Not JSON at all (noise, a cut line): the JSON-lines equivalent of a bad CRC.
            FrameError::Crc
        }
    })?;
    match &msg {
        JsonUplink::Hello(h) => {
            if !HEARTBEAT_MS_RANGE.contains(&h.heartbeat_ms) {
                Err(ProtocolError::InvalidHeartbeatInterval)
            } else if !TELEMETRY_MS_RANGE.contains(&h.telemetry_ms) {
                Err(ProtocolError::InvalidTelemetryInterval)
            } else {
                Ok(())
            }
        }
        JsonUplink::Telemetry(t) => t.validate(),
        JsonUplink::Heartbeat(_) | JsonUplink::Ack(_) | JsonUplink::Error(_) => Ok(()),
    }
    .map_err(FrameError::Invalid)?;
    Ok(msg)
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
            Err(FrameError::Malformed)
        );
        assert!(matches!(
            decode_uplink_line(br#"{"telemetry":{"seq":1,"readings":{"1bad":2}}}"#),
            Err(FrameError::Invalid(_))
        ));
        assert!(matches!(
            decode_uplink_line(br#"{"hello":{"protocol":1,"module":"MC-1","fw":"1","heartbeatMs":1,"telemetryMs":2000}}"#),
            Err(FrameError::Invalid(_))
        ));
        assert!(decode_uplink_line(b"{\"heartbeat\":{\"seq\":1,\"uptimeMs\":2}}\r").is_ok());
        let long = [b' '; MAX_LINE_LEN + 1];
        assert!(matches!(
            decode_uplink_line(&long),
            Err(FrameError::TooLong { .. })
        ));
    }
}
