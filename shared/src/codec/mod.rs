//! The two encodings of every message.
//!
//! - **Native** ([`native`]): one protocol-version byte ([`NATIVE_VERSION`]) followed by the
//!   postcard encoding of the message. The version byte is never `{` (0x7B), so the two
//!   encodings cannot be confused, and a later protocol version can be told apart.
//! - **JSON** ([`json`], `std` only): the serde shape of the message, camelCase field names.
//!
//! On MQTT a payload whose first byte is `{` is JSON, anything else is native
//! ([`Encoding::detect`]). Both decoders check the length first and validate the message after
//! decoding, so a decoded message always follows the rules of [`crate::message`].

#[cfg(feature = "std")]
use crate::{ProtocolError, message::Message};

#[cfg(feature = "std")]
pub mod json;
pub mod native;

/// The protocol version byte that starts every native payload.
pub const NATIVE_VERSION: u8 = 1;
/// Longest native payload accepted (version byte included).
pub const MAX_NATIVE_LEN: usize = 1024;
/// Longest JSON payload accepted.
pub const MAX_JSON_LEN: usize = 4096;

/// Which encoding a payload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Version byte + postcard.
    Native,
    /// UTF-8 JSON object.
    Json,
}

impl Encoding {
    /// `{` first means JSON; anything else is native.
    pub fn detect(payload: &[u8]) -> Self {
        if payload.first() == Some(&b'{') {
            Self::Json
        } else {
            Self::Native
        }
    }
}

/// Decodes `payload` in whichever encoding it uses.
#[cfg(feature = "std")]
pub fn decode<M: Message>(payload: &[u8]) -> Result<M, ProtocolError> {
    match Encoding::detect(payload) {
        Encoding::Native => native::decode(payload),
        Encoding::Json => json::decode(payload),
    }
}

/// Encodes `msg` in `encoding`.
#[cfg(feature = "std")]
pub fn encode<M: Message>(msg: &M, encoding: Encoding) -> Result<Vec<u8>, ProtocolError> {
    match encoding {
        Encoding::Native => native::to_vec(msg),
        Encoding::Json => json::to_vec(msg),
    }
}
