//! A minimal MQTT 3.1.1 client: CONNECT (credentials, last will), PUBLISH at QoS 0, SUBSCRIBE,
//! and a reader of incoming packets.
//!
//! Why not rumqttc: the mass-offline scenario holds 10,000 module connections in the bench
//! process; a raw client is one socket and nothing else (no event loop, no request channel, no
//! buffers per connection), and dropping it closes the socket without a DISCONNECT, which is what
//! the scenario needs. Every target speaks MQTT 3.1.1, so one client serves all of them.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Packet types (high nibble of the fixed header).
const CONNECT: u8 = 0x10;
const CONNACK: u8 = 0x20;
const PUBLISH: u8 = 0x30;
const SUBSCRIBE: u8 = 0x82;
const SUBACK: u8 = 0x90;
/// Largest packet the reader accepts; telemetry is a few hundred bytes.
const MAX_PACKET: usize = 1 << 20;

/// What a CONNECT says.
pub struct Connect<'a> {
    /// Client identifier (for modules: the module id).
    pub client_id: &'a str,
    /// Username and password, if any.
    pub credentials: Option<(&'a str, &'a str)>,
    /// Last will: topic and payload (QoS 0, not retained).
    pub will: Option<(&'a str, &'a [u8])>,
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(header);
    put_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A CONNECT packet, clean session, keep-alive 0 (no pings: every target accepts it, and a
/// ping would be load the scenarios do not ask for).
pub fn connect_packet(c: &Connect<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(128);
    put_str(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    let mut flags = 0x02; // clean session
    if c.will.is_some() {
        flags |= 0x04; // will flag, QoS 0, not retained
    }
    if c.credentials.is_some() {
        flags |= 0xC0; // username + password
    }
    body.push(flags);
    body.extend_from_slice(&0u16.to_be_bytes());
    put_str(&mut body, c.client_id.as_bytes());
    if let Some((topic, payload)) = c.will {
        put_str(&mut body, topic.as_bytes());
        put_str(&mut body, payload);
    }
    if let Some((user, password)) = c.credentials {
        put_str(&mut body, user.as_bytes());
        put_str(&mut body, password.as_bytes());
    }
    packet(CONNECT, &body)
}

/// A QoS 0 PUBLISH.
pub fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 2);
    put_str(&mut body, topic.as_bytes());
    body.extend_from_slice(payload);
    packet(PUBLISH, &body)
}

/// A SUBSCRIBE of `filters` at QoS 0.
pub fn subscribe_packet(packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&packet_id.to_be_bytes());
    for f in filters {
        put_str(&mut body, f.as_bytes());
        body.push(0);
    }
    packet(SUBSCRIBE, &body)
}

/// Reads one packet: (fixed header byte, body).
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u8, Vec<u8>)> {
    let header = r.read_u8().await?;
    let mut len = 0usize;
    for shift in [0, 7, 14, 21] {
        let byte = r.read_u8().await?;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        ensure!(shift < 21, "malformed remaining length");
    }
    ensure!(len <= MAX_PACKET, "packet of {len} bytes");
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok((header, body))
}

/// The topic and payload of a PUBLISH body (QoS 0 or with a packet id).
pub fn parse_publish(header: u8, body: &[u8]) -> Option<(&str, &[u8])> {
    if header & 0xf0 != PUBLISH {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = std::str::from_utf8(body.get(2..2 + len)?).ok()?;
    let id = if header & 0x06 != 0 { 2 } else { 0 };
    Some((topic, body.get(2 + len + id..)?))
}

/// Opens a TCP connection (Nagle off), sends CONNECT and waits for a CONNACK that accepts it.
pub async fn connect(addr: SocketAddr, c: &Connect<'_>, timeout: Duration) -> Result<TcpStream> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.context("TCP connect")?;
        stream.set_nodelay(true)?;
        stream.write_all(&connect_packet(c)).await?;
        let (header, body) = read_packet(&mut stream)
            .await
            .context("connection closed before CONNACK (refused?)")?;
        ensure!(
            header == CONNACK,
            "expected CONNACK, got packet {header:#04x}"
        );
        match body.get(1) {
            Some(0) => Ok(stream),
            Some(code) => bail!("CONNACK refused the connection, return code {code}"),
            None => bail!("short CONNACK"),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .with_context(|| format!("no CONNACK within {timeout:?}"))?
        .with_context(|| format!("MQTT connect of {} to {addr}", c.client_id))
}

/// Sends SUBSCRIBE and waits for its SUBACK (packets before it are skipped).
pub async fn subscribe(stream: &mut TcpStream, filters: &[&str]) -> Result<()> {
    stream.write_all(&subscribe_packet(1, filters)).await?;
    let wait = async {
        loop {
            let (header, body) = read_packet(stream).await?;
            if header == SUBACK {
                ensure!(
                    body.iter().skip(2).all(|code| *code < 0x80),
                    "SUBACK refused a filter of {filters:?}"
                );
                return anyhow::Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .context("no SUBACK within 10 s")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_with_will_and_credentials() {
        let p = connect_packet(&Connect {
            client_id: "M1",
            credentials: Some(("M1", "pw")),
            will: Some(("mc/M1/status", b"offline")),
        });
        let body_len = 10 + 4 + 14 + 9 + 4 + 4;
        let mut expected = vec![
            0x10,
            body_len as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            4,
            0xC6,
            0,
            0,
        ];
        expected.extend_from_slice(&[0, 2, b'M', b'1', 0, 12]);
        expected.extend_from_slice(b"mc/M1/status");
        expected.extend_from_slice(&[0, 7]);
        expected.extend_from_slice(b"offline");
        expected.extend_from_slice(&[0, 2, b'M', b'1', 0, 2, b'p', b'w']);
        assert_eq!(p, expected);
    }

    #[test]
    fn publish_round_trips_through_the_parser() {
        let p = publish_packet("mc/A/telemetry", b"{}");
        assert_eq!(p[0], 0x30);
        assert_eq!(usize::from(p[1]), p.len() - 2);
        assert_eq!(
            parse_publish(p[0], &p[2..]),
            Some(("mc/A/telemetry", &b"{}"[..]))
        );
    }

    #[test]
    fn remaining_length_uses_continuation_bytes() {
        let mut out = Vec::new();
        put_len(&mut out, 321);
        assert_eq!(out, vec![0xC1, 0x02]);
    }
}
