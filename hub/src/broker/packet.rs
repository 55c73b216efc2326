//! The MQTT wire format the gateway speaks with modules, MQTT 3.1.1 (level 4) and 5 (level 5):
//! framing of the byte stream, parsers for what a module sends (CONNECT with its will, PUBLISH,
//! PUBREL, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT) and writers for what the server answers (CONNACK,
//! acknowledgements, PINGRESP, and the PUBLISH of a command). Parsers borrow from the packet:
//! nothing is copied on the way to the payload decoder.

use bytes::{BufMut, BytesMut};

/// MQTT control packet types.
pub mod kind {
    /// CONNECT.
    pub const CONNECT: u8 = 1;
    /// CONNACK.
    pub const CONNACK: u8 = 2;
    /// PUBLISH.
    pub const PUBLISH: u8 = 3;
    /// PUBACK.
    pub const PUBACK: u8 = 4;
    /// PUBREC.
    pub const PUBREC: u8 = 5;
    /// PUBREL.
    pub const PUBREL: u8 = 6;
    /// PUBCOMP.
    pub const PUBCOMP: u8 = 7;
    /// SUBSCRIBE.
    pub const SUBSCRIBE: u8 = 8;
    /// SUBACK.
    pub const SUBACK: u8 = 9;
    /// UNSUBSCRIBE.
    pub const UNSUBSCRIBE: u8 = 10;
    /// UNSUBACK.
    pub const UNSUBACK: u8 = 11;
    /// PINGREQ.
    pub const PINGREQ: u8 = 12;
    /// PINGRESP.
    pub const PINGRESP: u8 = 13;
    /// DISCONNECT.
    pub const DISCONNECT: u8 = 14;
    /// AUTH (MQTT 5 enhanced authentication; not offered).
    pub const AUTH: u8 = 15;
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
    /// Keep-alive in seconds (0: none).
    pub keep_alive: u16,
}

/// A last will: published on the client's behalf when its connection ends without a clean
/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Where it is published.
    pub topic: String,
    /// What.
    pub payload: Vec<u8>,
    /// Whether it asks to be retained.
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
        let payload = r.binary()?.to_vec();
        Some(Will {
            topic,
            payload,
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
    })
}

/// A PUBLISH from a client, borrowed from its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Topic name (raw bytes: the ACL decides whether they are a valid topic).
    pub topic: &'a [u8],
    /// 0, 1 or 2.
    pub qos: u8,
    /// Packet identifier (QoS 1 and 2 only).
    pub pkid: u16,
    /// Application message.
    pub payload: &'a [u8],
}

/// Parses a PUBLISH packet from its fixed-header `flags` and its body. MQTT 5 properties are
/// skipped: a topic alias, which the server never allows (it sends no Topic Alias Maximum),
/// shows up as an empty topic.
pub fn parse_publish(level: u8, flags: u8, body: &[u8]) -> Result<Publish<'_>, PacketError> {
    let mut r = Reader {
        buf: body,
        what: "PUBLISH",
    };
    let qos = (flags >> 1) & 0x03;
    if qos == 3 {
        return Err(PacketError::Malformed("PUBLISH"));
    }
    let topic = r.binary()?;
    let pkid = if qos > 0 {
        match r.u16()? {
            0 => return Err(PacketError::Malformed("PUBLISH")),
            id => id,
        }
    } else {
        0
    };
    if level == LEVEL_V5 {
        r.skip_properties()?;
    }
    Ok(Publish {
        topic,
        qos,
        pkid,
        payload: r.buf,
    })
}

/// The packet identifier at the start of a body (PUBACK, PUBREC, PUBREL, PUBCOMP; MQTT 5
/// reason codes and properties after it are ignored).
pub fn packet_id(body: &[u8]) -> Result<u16, PacketError> {
    Reader {
        buf: body,
        what: "acknowledgement",
    }
    .u16()
}

/// A SUBSCRIBE: its packet identifier and its filters with the QoS each asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// Packet identifier.
    pub pkid: u16,
    /// Filters and their requested maximum QoS.
    pub filters: Vec<(&'a str, u8)>,
}

/// Parses a SUBSCRIBE packet's body.
pub fn parse_subscribe(level: u8, body: &[u8]) -> Result<Subscribe<'_>, PacketError> {
    let mut r = Reader {
        buf: body,
        what: "SUBSCRIBE",
    };
    let pkid = r.u16()?;
    if level == LEVEL_V5 {
        r.skip_properties()?;
    }
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
        let filter = r.string()?;
        let options = r.u8()?;
        let qos = options & 0x03;
        if qos == 3 {
            return Err(PacketError::Malformed("SUBSCRIBE"));
        }
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(PacketError::Malformed("SUBSCRIBE"));
    }
    Ok(Subscribe { pkid, filters })
}

/// Parses an UNSUBSCRIBE packet's body: its packet identifier and its filters.
pub fn parse_unsubscribe(level: u8, body: &[u8]) -> Result<(u16, Vec<&str>), PacketError> {
    let mut r = Reader {
        buf: body,
        what: "UNSUBSCRIBE",
    };
    let pkid = r.u16()?;
    if level == LEVEL_V5 {
        r.skip_properties()?;
    }
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(PacketError::Malformed("UNSUBSCRIBE"));
    }
    Ok((pkid, filters))
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

/// Appends a variable byte integer (MQTT's remaining length and property lengths).
fn put_varint(out: &mut BytesMut, mut value: usize) {
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        if value == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// Appends the CONNACK that accepts a connection (no session kept: session present 0). In
/// MQTT 5 it also tells the client what this server does not offer, so that a well-behaved
/// client never tries: packets over `max_packet`, wildcard, shared and identified
/// subscriptions (a module subscribes to its own command topic only).
pub fn put_connack_accepted(out: &mut BytesMut, level: u8, max_packet: usize) {
    out.put_u8(kind::CONNACK << 4);
    if level == LEVEL_V5 {
        const PROPERTIES: usize = 5 + 2 + 2 + 2;
        out.put_u8(2 + 1 + PROPERTIES as u8);
        out.put_slice(&[0, 0]);
        out.put_u8(PROPERTIES as u8);
        out.put_u8(0x27); // Maximum Packet Size
        out.put_u32(u32::try_from(max_packet).unwrap_or(u32::MAX));
        out.put_slice(&[0x28, 0]); // Wildcard Subscription Available: no
        out.put_slice(&[0x29, 0]); // Subscription Identifiers Available: no
        out.put_slice(&[0x2A, 0]); // Shared Subscription Available: no
    } else {
        out.put_slice(&[2, 0, 0]);
    }
}

/// Appends a PUBACK, PUBREC or PUBCOMP (success: MQTT 5 allows leaving the reason out).
pub fn put_ack(out: &mut BytesMut, packet_kind: u8, pkid: u16) {
    out.put_u8(packet_kind << 4);
    out.put_u8(2);
    out.put_u16(pkid);
}

/// Appends a SUBACK with one return/reason code per filter.
pub fn put_suback(out: &mut BytesMut, level: u8, pkid: u16, codes: &[u8]) {
    let v5 = usize::from(level == LEVEL_V5);
    out.put_u8(kind::SUBACK << 4);
    put_varint(out, 2 + v5 + codes.len());
    out.put_u16(pkid);
    if v5 == 1 {
        out.put_u8(0); // no properties
    }
    out.put_slice(codes);
}

/// Appends an UNSUBACK; MQTT 5 carries one reason code per filter.
pub fn put_unsuback(out: &mut BytesMut, level: u8, pkid: u16, codes: &[u8]) {
    out.put_u8(kind::UNSUBACK << 4);
    if level == LEVEL_V5 {
        put_varint(out, 3 + codes.len());
        out.put_u16(pkid);
        out.put_u8(0);
        out.put_slice(codes);
    } else {
        out.put_u8(2);
        out.put_u16(pkid);
    }
}

/// Appends a PINGRESP.
pub fn put_pingresp(out: &mut BytesMut) {
    out.put_slice(&[kind::PINGRESP << 4, 0]);
}

/// Appends a PUBLISH to a client (a command); `pkid` only for QoS 1.
pub fn put_publish(out: &mut BytesMut, level: u8, topic: &str, qos: u8, pkid: u16, payload: &[u8]) {
    let v5 = usize::from(level == LEVEL_V5);
    let id = if qos > 0 { 2 } else { 0 };
    out.put_u8((kind::PUBLISH << 4) | (qos << 1));
    put_varint(out, 2 + topic.len() + id + v5 + payload.len());
    out.put_u16(topic.len() as u16);
    out.put_slice(topic.as_bytes());
    if qos > 0 {
        out.put_u16(pkid);
    }
    if v5 == 1 {
        out.put_u8(0); // no properties
    }
    out.put_slice(payload);
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
        assert_eq!(
            c.will,
            Some(Will {
                topic: "w/t".into(),
                payload: b"off".to_vec(),
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
        assert_eq!(
            parse_subscribe(4, v4),
            Ok(Subscribe {
                pkid: 1,
                filters: vec![("a/b", 1), ("#", 0)]
            })
        );
        let v5: &[u8] = &[0, 1, 0, 0, 3, b'a', b'/', b'b', 0x2D];
        assert_eq!(
            parse_subscribe(5, v5),
            Ok(Subscribe {
                pkid: 1,
                filters: vec![("a/b", 1)]
            })
        );
        assert!(parse_subscribe(4, &[0, 1]).is_err());
        assert!(parse_subscribe(4, &[0, 1, 0, 9, b'a']).is_err());
        assert!(parse_subscribe(4, &[0, 1, 0, 1, b'a', 3]).is_err(), "QoS 3");
        assert_eq!(
            parse_unsubscribe(5, &[0, 9, 0, 0, 1, b'a']),
            Ok((9, vec!["a"]))
        );
        assert!(parse_unsubscribe(4, &[0, 9]).is_err());
    }

    #[test]
    fn refusals_speak_the_client_version() {
        assert_eq!(connack_refusal(4, Refusal::BadCredentials), [0x20, 2, 0, 4]);
        assert_eq!(
            connack_refusal(5, Refusal::BadCredentials),
            [0x20, 3, 0, 0x86, 0]
        );
        let mut out = BytesMut::new();
        put_connack_accepted(&mut out, 4, 8192);
        assert_eq!(&out[..], [0x20, 2, 0, 0]);
        out.clear();
        put_connack_accepted(&mut out, 5, 8192);
        let f = frame(&out, 64).unwrap().unwrap();
        assert_eq!((f.kind, f.len), (kind::CONNACK, out.len()));
        assert_eq!(&out[2..5], [0, 0, 11], "accepted, 11 bytes of properties");
        assert_eq!(&out[5..10], [0x27, 0, 0, 0x20, 0], "maximum packet size");
    }

    #[test]
    fn publishes_parse_in_both_versions_and_commands_round_trip() {
        for level in [4, 5] {
            for qos in [0, 1] {
                let mut out = BytesMut::new();
                put_publish(&mut out, level, "mc/MC-1/cmd", qos, 7, b"{}");
                let f = frame(&out, 1024).unwrap().unwrap();
                assert_eq!((f.kind, f.len), (kind::PUBLISH, out.len()));
                let p = parse_publish(level, f.flags, &out[f.header_len..]).unwrap();
                assert_eq!(p.topic, b"mc/MC-1/cmd");
                assert_eq!(p.payload, b"{}");
                assert_eq!((p.qos, p.pkid), (qos, if qos > 0 { 7 } else { 0 }));
            }
        }
        // A long payload takes a two-byte remaining length.
        let mut out = BytesMut::new();
        put_publish(&mut out, 4, "t", 0, 0, &[b'x'; 300]);
        let f = frame(&out, 1024).unwrap().unwrap();
        assert_eq!((f.header_len, f.len), (3, out.len()));
        // QoS 3, and a QoS 1 publish without its identifier, are malformed.
        assert!(parse_publish(4, 0b0110, &[0, 1, b't']).is_err());
        assert!(parse_publish(4, 0b0010, &[0, 1, b't', 0, 0]).is_err());
        assert!(parse_publish(4, 0b0010, &[0, 1, b't']).is_err());
        // MQTT 5 properties are skipped (a content type here).
        let body = [0, 1, b't', 4, 0x03, 0, 1, b'j', b'x'];
        assert_eq!(parse_publish(5, 0, &body).unwrap().payload, b"x");
        assert_eq!(packet_id(&[1, 2, 0x10]), Ok(0x0102));
        assert!(packet_id(&[1]).is_err());
    }

    #[test]
    fn acknowledgements_have_the_expected_bytes() {
        let mut out = BytesMut::new();
        put_ack(&mut out, kind::PUBACK, 0x0102);
        put_pingresp(&mut out);
        put_suback(&mut out, 4, 3, &[1]);
        put_suback(&mut out, 5, 3, &[1, 0x87]);
        put_unsuback(&mut out, 4, 4, &[0]);
        put_unsuback(&mut out, 5, 4, &[0]);
        assert_eq!(
            &out[..],
            [
                0x40, 2, 1, 2, // PUBACK
                0xD0, 0, // PINGRESP
                0x90, 3, 0, 3, 1, // SUBACK v4
                0x90, 5, 0, 3, 0, 1, 0x87, // SUBACK v5
                0xB0, 2, 0, 4, // UNSUBACK v4
                0xB0, 4, 0, 4, 0, 0, // UNSUBACK v5
            ]
        );
    }
}
