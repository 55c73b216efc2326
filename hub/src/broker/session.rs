//! One module's MQTT session on the gateway, without I/O: what to answer to each packet, which
//! publishes to hand to ingest, and when the connection must end. The [gateway](super::gateway)
//! owns the socket and feeds this one packet at a time; answers are appended to its output
//! buffer and written once per batch.
//!
//! What a module may do is narrow, and checked here:
//! - publish on its own `hello`, `heartbeat`, `telemetry` and `status` topics (QoS 0, 1 or 2);
//! - subscribe to its own command topic, and nothing else (no wildcards: nobody else's data);
//! - ping, unsubscribe, disconnect.
//!
//! Anything else ends the connection with a counted reason. No session state outlives the
//! connection (every CONNACK says "no session present"): the hub keeps what matters (commands
//! for offline modules wait in its own queue, [`crate::commands::queue`]).

use bytes::BytesMut;
use mc_protocol::{ModuleId, ModuleTopic, TopicKind};

use super::packet::{self, Frame, PacketError, Publish, kind};

/// QoS 2 publishes received and not yet released, at most: the module's in-flight window. One
/// more is a protocol violation (MQTT 5's "receive maximum exceeded").
pub const MAX_AWAITING_RELEASE: usize = 64;

/// Why the connection ends, as decided by what the module sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A DISCONNECT: no will.
    Clean,
    /// An MQTT 5 DISCONNECT that asks for its will anyway (reason 0x04).
    CleanWithWill,
    /// It broke a rule; the reason is the rejection counter to bump.
    Violation(&'static str),
}

/// The server side of one module's session.
#[derive(Debug)]
pub struct Session {
    module: ModuleId,
    level: u8,
    /// `mc/<id>/cmd`: the one filter it may subscribe to, and where commands go.
    command_topic: String,
    /// The QoS it subscribed to its command topic with (at most 1); `None`: not subscribed,
    /// commands are dropped as a broker would (nobody listens).
    commands_qos: Option<u8>,
    last_pkid: u16,
    /// Identifiers of QoS 2 publishes already delivered, waiting for their PUBREL: a
    /// retransmission of one is acknowledged again but not delivered twice.
    awaiting_release: Vec<u16>,
}

impl Session {
    /// A new session for `module`, authenticated, speaking protocol `level`.
    pub fn new(module: ModuleId, level: u8) -> Self {
        let command_topic = ModuleTopic::new(module.clone(), TopicKind::Cmd).to_string();
        Self {
            module,
            level,
            command_topic,
            commands_qos: None,
            last_pkid: 0,
            awaiting_release: Vec::new(),
        }
    }

    /// Whose session.
    pub fn module(&self) -> &ModuleId {
        &self.module
    }

    /// Handles one packet (`body` is what follows its fixed header). Answers go to `out`; a
    /// publish to hand to ingest is returned.
    pub fn handle<'a>(
        &mut self,
        frame: Frame,
        body: &'a [u8],
        out: &mut BytesMut,
    ) -> Result<Option<Publish<'a>>, End> {
        let malformed = |_: PacketError| End::Violation("mqtt_protocol");
        // SUBSCRIBE, UNSUBSCRIBE and PUBREL carry fixed flags (0b0010), every other packet
        // but PUBLISH zero.
        let flags_ok = match frame.kind {
            kind::PUBLISH => true,
            kind::SUBSCRIBE | kind::UNSUBSCRIBE | kind::PUBREL => frame.flags == 0b0010,
            _ => frame.flags == 0,
        };
        if !flags_ok {
            return Err(End::Violation("mqtt_protocol"));
        }
        match frame.kind {
            kind::PUBLISH => {
                let publish =
                    packet::parse_publish(self.level, frame.flags, body).map_err(malformed)?;
                if !self.may_publish(publish.topic) {
                    return Err(End::Violation("acl_denied"));
                }
                match publish.qos {
                    0 => Ok(Some(publish)),
                    1 => {
                        packet::put_ack(out, kind::PUBACK, publish.pkid);
                        Ok(Some(publish))
                    }
                    _ => {
                        packet::put_ack(out, kind::PUBREC, publish.pkid);
                        if self.awaiting_release.contains(&publish.pkid) {
                            return Ok(None);
                        }
                        if self.awaiting_release.len() >= MAX_AWAITING_RELEASE {
                            return Err(End::Violation("mqtt_protocol"));
                        }
                        self.awaiting_release.push(publish.pkid);
                        Ok(Some(publish))
                    }
                }
            }
            kind::PUBREL => {
                let pkid = packet::packet_id(body).map_err(malformed)?;
                self.awaiting_release.retain(|&id| id != pkid);
                packet::put_ack(out, kind::PUBCOMP, pkid);
                Ok(None)
            }
            // Acknowledgements of commands: delivery is at most once, nothing to retry.
            kind::PUBACK | kind::PUBREC | kind::PUBCOMP => {
                packet::packet_id(body).map_err(malformed)?;
                Ok(None)
            }
            kind::SUBSCRIBE => {
                let subscribe = packet::parse_subscribe(self.level, body).map_err(malformed)?;
                if subscribe
                    .filters
                    .iter()
                    .any(|(filter, _)| *filter != self.command_topic)
                {
                    return Err(End::Violation("acl_denied"));
                }
                let codes: Vec<u8> = subscribe
                    .filters
                    .iter()
                    .map(|&(_, qos)| qos.min(1))
                    .collect();
                self.commands_qos = codes.last().copied();
                packet::put_suback(out, self.level, subscribe.pkid, &codes);
                Ok(None)
            }
            kind::UNSUBSCRIBE => {
                let (pkid, filters) =
                    packet::parse_unsubscribe(self.level, body).map_err(malformed)?;
                let codes: Vec<u8> = filters
                    .iter()
                    .map(|filter| {
                        if *filter == self.command_topic && self.commands_qos.take().is_some() {
                            0x00
                        } else {
                            0x11 // no subscription existed
                        }
                    })
                    .collect();
                packet::put_unsuback(out, self.level, pkid, &codes);
                Ok(None)
            }
            kind::PINGREQ => {
                packet::put_pingresp(out);
                Ok(None)
            }
            kind::DISCONNECT => Err(if packet::disconnect_with_will(self.level, body) {
                End::CleanWithWill
            } else {
                End::Clean
            }),
            // A second CONNECT, enhanced authentication, or a server's packet.
            _ => Err(End::Violation("mqtt_protocol")),
        }
    }

    /// Appends the PUBLISH of a command (its encoded payload) to `out`; false if the module is
    /// not subscribed to its command topic (the command is dropped, as a broker would).
    pub fn command(&mut self, payload: &[u8], out: &mut BytesMut) -> bool {
        let Some(qos) = self.commands_qos else {
            return false;
        };
        let pkid = if qos > 0 {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            self.last_pkid
        } else {
            0
        };
        packet::put_publish(out, self.level, &self.command_topic, qos, pkid, payload);
        true
    }

    /// A module may publish only on its own upstream topics.
    fn may_publish(&self, topic: &[u8]) -> bool {
        std::str::from_utf8(topic)
            .ok()
            .and_then(|topic| ModuleTopic::parse(topic).ok())
            .is_some_and(|t| t.module == self.module && t.kind != TopicKind::Cmd)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn session(level: u8) -> Session {
        Session::new(ModuleId::new("MC-1").unwrap(), level)
    }

    /// Feeds one encoded packet; returns the outcome with the delivered payload, and the
    /// answer bytes.
    fn feed(s: &mut Session, packet: &[u8]) -> (Result<Option<Vec<u8>>, End>, Vec<u8>) {
        let f = packet::frame(packet, 1024).unwrap().unwrap();
        let mut out = BytesMut::new();
        let result = s
            .handle(f, &packet[f.header_len..f.len], &mut out)
            .map(|p| p.map(|p| p.payload.to_vec()));
        (result, out.to_vec())
    }

    fn publish(level: u8, topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        packet::put_publish(&mut out, level, topic, qos, pkid, payload);
        out.to_vec()
    }

    fn subscribe(filter: &str, qos: u8) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_u16(5);
        body.put_u16(filter.len() as u16);
        body.put_slice(filter.as_bytes());
        body.put_u8(qos);
        let mut p = vec![0x82, body.len() as u8];
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn publishes_on_own_topics_are_delivered_and_acknowledged_by_qos() {
        let mut s = session(4);
        let (r, out) = feed(&mut s, &publish(4, "mc/MC-1/telemetry", 0, 0, b"a"));
        assert_eq!((r, out), (Ok(Some(b"a".to_vec())), vec![]));
        let (r, out) = feed(&mut s, &publish(4, "mc/MC-1/heartbeat", 1, 9, b"b"));
        assert_eq!((r, out), (Ok(Some(b"b".to_vec())), vec![0x40, 2, 0, 9]));
        // QoS 2: delivered once, even if the module sends it again before releasing it.
        let p = publish(4, "mc/MC-1/hello", 2, 3, b"c");
        let (r, out) = feed(&mut s, &p);
        assert_eq!((r, out), (Ok(Some(b"c".to_vec())), vec![0x50, 2, 0, 3]));
        let (r, out) = feed(&mut s, &p);
        assert_eq!((r, out), (Ok(None), vec![0x50, 2, 0, 3]));
        let (r, out) = feed(&mut s, &[0x62, 2, 0, 3]);
        assert_eq!((r, out), (Ok(None), vec![0x70, 2, 0, 3]));
        // Released: the same identifier is a new message now.
        assert_eq!(feed(&mut s, &p).0, Ok(Some(b"c".to_vec())));
    }

    #[test]
    fn publishing_elsewhere_ends_the_connection() {
        for topic in [
            "mc/MC-2/telemetry",
            "mc/MC-1/cmd",
            "other/topic",
            "",
            "mc/MC-1/+",
        ] {
            let mut s = session(5);
            assert_eq!(
                feed(&mut s, &publish(5, topic, 0, 0, b"x")).0,
                Err(End::Violation("acl_denied")),
                "{topic}"
            );
        }
    }

    #[test]
    fn commands_reach_a_module_only_once_it_subscribed_to_its_own_topic() {
        let mut s = session(4);
        let mut out = BytesMut::new();
        assert!(!s.command(b"{}", &mut out), "not subscribed yet");
        assert!(out.is_empty());
        assert_eq!(
            feed(&mut s, &subscribe("mc/MC-2/cmd", 1)).0,
            Err(End::Violation("acl_denied"))
        );
        assert_eq!(
            feed(&mut s, &subscribe("#", 0)).0,
            Err(End::Violation("acl_denied"))
        );
        let (r, out) = feed(&mut s, &subscribe("mc/MC-1/cmd", 2));
        assert_eq!(r, Ok(None));
        assert_eq!(out, [0x90, 3, 0, 5, 1], "granted QoS 1 at most");
        let mut out = BytesMut::new();
        assert!(s.command(b"{}", &mut out));
        let f = packet::frame(&out, 1024).unwrap().unwrap();
        let p = packet::parse_publish(4, f.flags, &out[f.header_len..]).unwrap();
        assert_eq!((p.topic, p.qos, p.pkid), (&b"mc/MC-1/cmd"[..], 1, 1));
        // Unsubscribed: commands are dropped again.
        let (r, out) = feed(
            &mut s,
            &[
                0xA2, 15, 0, 6, 0, 11, b'm', b'c', b'/', b'M', b'C', b'-', b'1', b'/', b'c', b'm',
                b'd',
            ],
        );
        assert_eq!((r, out), (Ok(None), vec![0xB0, 2, 0, 6]));
        assert!(!s.command(b"{}", &mut BytesMut::new()));
    }

    #[test]
    fn pings_disconnects_and_protocol_errors() {
        let mut s = session(5);
        assert_eq!(feed(&mut s, &[0xC0, 0]), (Ok(None), vec![0xD0, 0]));
        assert_eq!(feed(&mut s, &[0xE0, 0]).0, Err(End::Clean));
        assert_eq!(feed(&mut s, &[0xE0, 1, 0x04]).0, Err(End::CleanWithWill));
        assert_eq!(session(4).handle_bytes(&[0xE0, 1, 0x04]), Err(End::Clean));
        for bad in [
            &[0x10, 0][..],         // a second CONNECT
            &[0xF0, 0],             // AUTH
            &[0x20, 2, 0, 0],       // CONNACK
            &[0x80, 2, 0, 1],       // SUBSCRIBE with wrong flags
            &[0x36, 3, 0, 1, b't'], // PUBLISH QoS 3
            &[0x32, 3, 0, 1, b't'], // PUBLISH QoS 1 without identifier
        ] {
            assert_eq!(
                feed(&mut session(5), bad).0,
                Err(End::Violation("mqtt_protocol")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_window_of_unreleased_qos2_publishes_is_bounded() {
        let mut s = session(4);
        for id in 1..=MAX_AWAITING_RELEASE as u16 {
            assert!(
                feed(&mut s, &publish(4, "mc/MC-1/telemetry", 2, id, b"x"))
                    .0
                    .is_ok()
            );
        }
        assert_eq!(
            feed(&mut s, &publish(4, "mc/MC-1/telemetry", 2, 999, b"x")).0,
            Err(End::Violation("mqtt_protocol"))
        );
    }

    /// Whatever bytes a module sends, the session answers, delivers or ends: it never panics.
    /// Random packets, and valid ones with bytes flipped, through framing and the session.
    #[test]
    fn arbitrary_bytes_never_panic() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        let valid = [
            publish(5, "mc/MC-1/telemetry", 2, 9, br#"{"seq":1}"#),
            publish(4, "mc/MC-1/hello", 1, 1, b"{}"),
            subscribe("mc/MC-1/cmd", 1),
            vec![0xA2, 5, 0, 6, 0, 1, b'x'],
            vec![0x62, 2, 0, 9],
            vec![0xE0, 1, 0x04],
        ];
        for round in 0..50_000 {
            let mut packet = if round % 2 == 0 {
                let len = rng.random_range(0..40);
                (0..len).map(|_| rng.random()).collect::<Vec<u8>>()
            } else {
                valid[rng.random_range(0..valid.len())].clone()
            };
            if !packet.is_empty() {
                for _ in 0..rng.random_range(0..3) {
                    let at = rng.random_range(0..packet.len());
                    packet[at] = rng.random();
                }
            }
            let mut s = session(if rng.random() { 4 } else { 5 });
            let mut out = BytesMut::new();
            if let Ok(Some(f)) = packet::frame(&packet, 1024)
                && f.len <= packet.len()
            {
                let _ = s.handle(f, &packet[f.header_len..f.len], &mut out);
                let _ = s.command(b"{}", &mut out);
            }
        }
    }

    impl Session {
        fn handle_bytes(&mut self, packet: &[u8]) -> Result<(), End> {
            feed(self, packet).0.map(drop)
        }
    }
}
