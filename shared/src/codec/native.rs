//! Native encoding: [`NATIVE_VERSION`] byte + postcard. Works without `std` and without an
//! allocator ([`encode`] writes into a caller's buffer).

use super::{MAX_NATIVE_LEN, NATIVE_VERSION};
use crate::{ProtocolError, message::Message};

/// Encodes `msg` into `buf`, returning the used prefix.
pub fn encode<'a, M: Message>(msg: &M, buf: &'a mut [u8]) -> Result<&'a mut [u8], ProtocolError> {
    msg.validate()?;
    let (first, rest) = buf.split_first_mut().ok_or(ProtocolError::BufferTooSmall)?;
    *first = NATIVE_VERSION;
    let body_len = postcard::to_slice(msg, rest)
        .map_err(|_| ProtocolError::BufferTooSmall)?
        .len();
    let len = 1 + body_len;
    if len > MAX_NATIVE_LEN {
        return Err(ProtocolError::TooLarge {
            len,
            max: MAX_NATIVE_LEN,
        });
    }
    Ok(&mut buf[..len])
}

/// Encodes `msg` into a new vector.
#[cfg(feature = "std")]
pub fn to_vec<M: Message>(msg: &M) -> Result<Vec<u8>, ProtocolError> {
    let mut buf = [0u8; MAX_NATIVE_LEN];
    Ok(encode(msg, &mut buf)?.to_vec())
}

/// Decodes a native payload: checks length and version, decodes, rejects trailing bytes,
/// validates.
pub fn decode<M: Message>(payload: &[u8]) -> Result<M, ProtocolError> {
    if payload.len() > MAX_NATIVE_LEN {
        return Err(ProtocolError::TooLarge {
            len: payload.len(),
            max: MAX_NATIVE_LEN,
        });
    }
    let (version, body) = payload.split_first().ok_or(ProtocolError::Empty)?;
    if *version != NATIVE_VERSION {
        return Err(ProtocolError::UnsupportedVersion(*version));
    }
    let (msg, rest): (M, _) =
        postcard::take_from_bytes(body).map_err(|_| ProtocolError::Malformed)?;
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed);
    }
    msg.validate()?;
    Ok(msg)
}
