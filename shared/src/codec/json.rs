//! JSON encoding (`std` only), for MQTT tools and third-party firmware.

use super::MAX_JSON_LEN;
use crate::{ProtocolError, message::Message};

/// Encodes `msg` as a JSON object.
pub fn to_vec<M: Message>(msg: &M) -> Result<Vec<u8>, ProtocolError> {
    msg.validate()?;
    let out = serde_json::to_vec(msg).map_err(|_| ProtocolError::Malformed)?;
    if out.len() > MAX_JSON_LEN {
        return Err(ProtocolError::TooLarge {
            len: out.len(),
            max: MAX_JSON_LEN,
        });
    }
    Ok(out)
}

/// Decodes a JSON payload: checks length, decodes (unknown fields are refused), validates.
pub fn decode<M: Message>(payload: &[u8]) -> Result<M, ProtocolError> {
    if payload.len() > MAX_JSON_LEN {
        return Err(ProtocolError::TooLarge {
            len: payload.len(),
            max: MAX_JSON_LEN,
        });
    }
    if payload.is_empty() {
        return Err(ProtocolError::Empty);
    }
    let msg: M = serde_json::from_slice(payload).map_err(|_| ProtocolError::Malformed)?;
    msg.validate()?;
    Ok(msg)
}
