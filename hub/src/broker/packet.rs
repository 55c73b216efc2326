//! Just enough MQTT framing for the gateway: split the client's byte stream into packets, read
//! CONNECT (with its will), the topic of PUBLISH, the filters of SUBSCRIBE, DISCONNECT, and
//! write CONNACK refusals. Works for MQTT 3.1.1 (level 4) and 5 (level 5); other packets are
//! passed through untouched.

/// MQTT control packet types the gateway looks at.
pub mod kind {
    /// CONNECT.
    pub const CONNECT: u8 = 1;
    /// CONNACK.
    pub const CONNACK: u8 = 2;
    /// PUBLISH.
    pub const PUBLISH: u8 = 3;
    /// SUBSCRIBE.
    pub const SUBSCRIBE: u8 = 8;
    /// DISCONNECT.
    pub const DISCONNECT: u8 = 14;
}

/// Protocol levels.
pub const LEVEL_V311: u8 = 4;
/// MQTT 5.
pub const LEVEL_V5: u8 = 5;

/// Framing and parsing errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Remaining length is not a valid variable byte integer.
    #[error("malformed remaining length")]
    BadLength,
    /// The packet is larger than allowed.
    #[error("packet of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A field runs past the end of the packet or is not valid.
    #[error("malformed {0} packet")]
    Malformed(&'static str),
}

/// The fixed header of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Packet type (high nibble of the first byte).
    pub kind: u8,
    /// Flags (low nibble).
    pub flags: u8,
    /// Bytes of fixed header.
    pub header_len: usize,
    /// Total bytes of the packet.
    pub len: usize,
}

/// Reads the fixed header at the start of `buf`: `Ok(None)` when more bytes are needed.
pub fn frame(buf: &[u8], max_len: usize) -> Result<Option<Frame>, PacketError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let header_len = 2 + i;
            let len = header_len + remaining;
            if len > max_len {
                return Err(PacketError::TooLarge(len));
            }
            return Ok(Some(Frame {
                kind: first >> 4,
                flags: first & 0x0F,
                header_len,
                len,
            }));
        }
    }
    Err(PacketError::BadLength)
}

/// What the gateway needs from a CONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// 4 (3.1.1) or 5; 3 is MQTT 3.1.
    pub level: u8,
    /// Client identifier.
    pub client_id: String,
    /// The last will, if set: the broker publishes it on the client's behalf, so it is subject
    /// to the same ACL as the client's own publishes.
    pub will: Option<Will>,
    /// Username, if the flag is set.
    pub username: Option<String>,
    /// Password, if the flag is set.
    pub password: Option<Vec<u8>>,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// Where the keep-alive's two bytes are, from the start of the CONNECT body.
    pub keep_alive_at: usize,
}

/// The part of a last will the ACL looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Where the broker will publish it.
    pub topic: String,
    /// Whether it would be retained.
    pub retain: bool,
}

struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PacketError> {
        if self.buf.len() < n {
            return Err(PacketError::Malformed(self.what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, PacketError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PacketError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn binary(&mut self) -> Result<&'a [u8], PacketError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn string(&mut self) -> Result<&'a str, PacketError> {
        std::str::from_utf8(self.binary()?).map_err(|_| PacketError::Malformed(self.what))
    }
    fn varint(&mut self) -> Result<usize, PacketError> {
        let mut value = 0usize;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= usize::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PacketError::Malformed(self.what))
    }
    fn skip_properties(&mut self) -> Result<(), PacketError> {
        let n = self.varint()?;
        self.take(n).map(|_| ())
    }
}

/// Parses the body (after the fixed header) of a CONNECT packet.
pub fn parse_connect(body: &[u8]) -> Result<Connect, PacketError> {
    let mut r = Reader {
        buf: body,
        what: "CONNECT",
    };
    let name = r.string()?;
    let level = r.u8()?;
    // Any level is parsed so that unsupported ones get a proper CONNACK refusal.
    if !matches!(name, "MQTT" | "MQIsdp") {
        return Err(PacketError::Malformed("CONNECT"));
    }
    let flags = r.u8()?;
    let keep_alive_at = body.len() - r.buf.len();
    let keep_alive = r.u16()?;
    if level == LEVEL_V5 {
        r.skip_properties()?;
    }
    let client_id = r.string()?.to_owned();
    let will = if flags & 0x04 != 0 {
        if level == LEVEL_V5 {
            r.skip_properties()?;
        }
        let topic = r.string()?.to_owned();
        r.binary()?; // will payload
        Some(Will {
            topic,
            retain: flags & 0x20 != 0,
        })
    } else {
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(r.string()?.to_owned())
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(r.binary()?.to_vec())
    } else {
        None
    };
    Ok(Connect {
        level,
        client_id,
        will,
        username,
        password,
        keep_alive,
        keep_alive_at,
    })
}

/// The topic of a PUBLISH packet's body.
pub fn publish_topic(body: &[u8]) -> Result<&str, PacketError> {
    Reader {
        buf: body,
        what: "PUBLISH",
    }
    .string()
}

/// The topic filters of a SUBSCRIBE packet's body.
pub fn subscribe_filters(level: u8, body: &[u8]) -> Result<Vec<&str>, PacketError> {
    let mut r = Reader {
        buf: body,
        what: "SUBSCRIBE",
    };
    r.u16()?; // packet identifier
    if level == LEVEL_V5 {
        r.skip_properties()?;
    }
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
        filters.push(r.string()?);
        r.u8()?; // subscription options
    }
    if filters.is_empty() {
        return Err(PacketError::Malformed("SUBSCRIBE"));
    }
    Ok(filters)
}

/// Whether a DISCONNECT body asks the broker to publish the will anyway (MQTT 5 reason 0x04).
pub fn disconnect_with_will(level: u8, body: &[u8]) -> bool {
    level == LEVEL_V5 && body.first() == Some(&0x04)
}

/// Why the gateway refuses a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// MQTT 3.1 or unknown level.
    UnsupportedVersion,
    /// Client id is not a valid module id.
    BadClientId,
    /// Unknown module, wrong username or wrong password.
    BadCredentials,
    /// Authenticated, but asks for something it may not have (a last will on a foreign or
    /// retained topic).
    NotAuthorized,
    /// Authenticated, but the module is disabled.
    Disabled,
}

/// The CONNACK that tells a client why it was refused, in its protocol version.
pub fn connack_refusal(level: u8, refusal: Refusal) -> Vec<u8> {
    if level == LEVEL_V5 {
        let reason = match refusal {
            Refusal::UnsupportedVersion => 0x84,
            Refusal::BadClientId => 0x85,
            Refusal::BadCredentials => 0x86,
            Refusal::NotAuthorized | Refusal::Disabled => 0x87,
        };
        vec![0x20, 0x03, 0x00, reason, 0x00]
    } else {
        let code = match refusal {
            Refusal::UnsupportedVersion => 0x01,
            Refusal::BadClientId => 0x02,
            Refusal::BadCredentials => 0x04,
            Refusal::NotAuthorized | Refusal::Disabled => 0x05,
        };
        vec![0x20, 0x02, 0x00, code]
    }
}

/// Whether a CONNACK body accepts the connection (return/reason code 0).
pub fn connack_accepted(body: &[u8]) -> bool {
    body.get(1) == Some(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // CONNECT v3.1.1, client "MC-1", user "MC-1", password "pw", keep-alive 10, will set.
    const CONNECT_V4: &[u8] = &[
        0x10,
        36,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0b1100_0110,
        0,
        10,
        0,
        4,
        b'M',
        b'C',
        b'-',
        b'1',
        0,
        3,
        b'w',
        b'/',
        b't',
        0,
        3,
        b'o',
        b'f',
        b'f',
        0,
        4,
        b'M',
        b'C',
        b'-',
        b'1',
        0,
        2,
        b'p',
        b'w',
    ];

    #[test]
    fn parses_v4_connect_with_will_and_credentials() {
        let f = frame(CONNECT_V4, 1024).unwrap().unwrap();
        assert_eq!(
            (f.kind, f.header_len, f.len),
            (kind::CONNECT, 2, CONNECT_V4.len())
        );
        let c = parse_connect(&CONNECT_V4[f.header_len..f.len]).unwrap();
        assert_eq!(c.level, 4);
        assert_eq!(c.client_id, "MC-1");
        assert_eq!(c.username.as_deref(), Some("MC-1"));
        assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
        assert_eq!(c.keep_alive, 10);
        let at = f.header_len + c.keep_alive_at;
        assert_eq!(&CONNECT_V4[at..at + 2], &10u16.to_be_bytes());
        assert_eq!(
            c.will,
            Some(Will {
                topic: "w/t".into(),
                retain: false
            })
        );
    }

    #[test]
    fn parses_v5_connect_with_properties() {
        // Properties: session expiry (0x11, 4 bytes); no will; user + password.
        let body: &[u8] = &[
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            5,
            0b1100_0010,
            0,
            30,
            5,
            0x11,
            0,
            0,
            0,
            10,
            0,
            3,
            b'A',
            b'B',
            b'C',
            0,
            3,
            b'A',
            b'B',
            b'C',
            0,
            1,
            b'x',
        ];
        let c = parse_connect(body).unwrap();
        assert_eq!(
            (c.level, c.client_id.as_str(), c.keep_alive),
            (5, "ABC", 30)
        );
        assert_eq!(c.password.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn framing_waits_for_bytes_and_caps_size() {
        assert_eq!(frame(&[], 10), Ok(None));
        assert_eq!(frame(&[0x30], 10), Ok(None));
        assert_eq!(frame(&[0x30, 0x80], 10), Ok(None));
        assert_eq!(
            frame(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], 10),
            Err(PacketError::BadLength)
        );
        assert_eq!(frame(&[0x30, 100], 10), Err(PacketError::TooLarge(102)));
        assert!(parse_connect(&CONNECT_V4[2..10]).is_err(), "truncated");
        assert!(parse_connect(&[0, 4, b'H', b'T', b'T', b'P', 4]).is_err());
    }

    #[test]
    fn reads_subscribe_filters_in_both_versions() {
        let v4: &[u8] = &[0, 1, 0, 3, b'a', b'/', b'b', 1, 0, 1, b'#', 0];
        assert_eq!(subscribe_filters(4, v4), Ok(vec!["a/b", "#"]));
        let v5: &[u8] = &[0, 1, 0, 0, 3, b'a', b'/', b'b', 1];
        assert_eq!(subscribe_filters(5, v5), Ok(vec!["a/b"]));
        assert!(subscribe_filters(4, &[0, 1]).is_err());
        assert!(subscribe_filters(4, &[0, 1, 0, 9, b'a']).is_err());
    }

    #[test]
    fn refusals_speak_the_client_version() {
        assert_eq!(connack_refusal(4, Refusal::BadCredentials), [0x20, 2, 0, 4]);
        assert_eq!(
            connack_refusal(5, Refusal::BadCredentials),
            [0x20, 3, 0, 0x86, 0]
        );
        assert!(connack_accepted(&[0, 0]));
        assert!(!connack_accepted(&[0, 5]));
    }
}
