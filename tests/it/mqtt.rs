//! MQTT corners of the hub's own MQTT server, on raw connections: keep-alive 0, keep-alive
//! enforcement, QoS 2 exactly once.

use std::time::Duration;

use mc_e2e::{DEADLINE, TestHub, start_hub};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// An MQTT CONNECT (`level` 4: 3.1.1, 5: 5.0) with credentials, a clean session and
/// keep-alive `keep_alive`.
pub(crate) fn connect_packet(level: u8, id: &str, password: &str, keep_alive: u16) -> Vec<u8> {
    connect_packet_raw(level, id.as_bytes(), password.as_bytes(), keep_alive)
}

/// [`connect_packet`] with any bytes as client id (= username) and password.
pub(crate) fn connect_packet_raw(
    level: u8,
    id: &[u8],
    password: &[u8],
    keep_alive: u16,
) -> Vec<u8> {
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend((bytes.len() as u16).to_be_bytes());
        out.extend(bytes);
    };
    let mut body = Vec::new();
    field(&mut body, b"MQTT");
    body.push(level);
    body.push(0x80 | 0x40 | 0x02); // username, password, clean session
    body.extend(keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    field(&mut body, id);
    field(&mut body, id);
    field(&mut body, password);
    let mut packet = vec![0x10, u8::try_from(body.len()).expect("short CONNECT")];
    packet.extend(body);
    packet
}

/// MQTT allows keep-alive 0 (no keep-alive; rumqttd, which the hub embedded once, closed such a
/// connection without a CONNACK). The module is accepted (3.1.1 and 5), and its messages count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_without_keep_alive_is_accepted() {
    let t = start_hub(|_| {}).await;
    for (level, id) in [(4, "MC-1001-STN"), (5, "MC-1002-STN")] {
        let password = t.add_module(id, None).await;
        let mut tcp = TcpStream::connect(t.hub.mqtt_addr).await.expect("connect");
        tcp.write_all(&connect_packet(level, id, &password, 0))
            .await
            .expect("send CONNECT");
        let mut head = [0u8; 2];
        tokio::time::timeout(DEADLINE, tcp.read_exact(&mut head))
            .await
            .expect("a CONNACK in time")
            .expect("a CONNACK, not a closed connection");
        assert_eq!(head[0], 0x20, "CONNACK");
        let mut rest = vec![0u8; usize::from(head[1])];
        tcp.read_exact(&mut rest).await.expect("CONNACK body");
        assert_eq!(
            rest[1], 0,
            "level {level}: accepted (return / reason code 0)"
        );

        // a QoS 0 hello: the module comes online
        let topic = format!("mc/{id}/hello");
        let payload = br#"{"fw":"1.0.0","heartbeatMs":5000}"#;
        let props = usize::from(level == 5);
        let len = 2 + topic.len() + props + payload.len();
        let mut publish = vec![0x30, u8::try_from(len).expect("short PUBLISH")];
        publish.extend((topic.len() as u16).to_be_bytes());
        publish.extend(topic.as_bytes());
        if level == 5 {
            publish.push(0); // no properties
        }
        publish.extend(payload);
        tcp.write_all(&publish).await.expect("send PUBLISH");
        let module: mc_protocol::ModuleId = id.parse().expect("id");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !t
            .hub
            .tracker
            .module(&module)
            .await
            .is_some_and(|m| m.online)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "level {level}: the module never came online"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A PUBLISH (`level` 4 or 5) at `qos`, with `pkid` for QoS 1 and 2, and `flags` or'ed into
/// the first byte (0x08: DUP).
fn publish_packet(
    level: u8,
    topic: &str,
    qos: u8,
    pkid: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend(topic.as_bytes());
    if qos > 0 {
        body.extend(pkid.to_be_bytes());
    }
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend(payload);
    let mut packet = vec![
        0x30 | (qos << 1) | flags,
        u8::try_from(body.len()).expect("short"),
    ];
    packet.extend(body);
    packet
}

/// Connects a registered module on a raw socket and reads its CONNACK, which must accept it.
async fn raw_module(t: &TestHub, level: u8, id: &str, keep_alive: u16) -> TcpStream {
    let password = t.add_module(id, None).await;
    let mut tcp = TcpStream::connect(t.hub.mqtt_addr).await.expect("connect");
    tcp.write_all(&connect_packet(level, id, &password, keep_alive))
        .await
        .expect("send CONNECT");
    let (first, body) = read_packet(&mut tcp).await.expect("a CONNACK");
    assert_eq!((first, body[1]), (0x20, 0), "{id}: CONNACK accepting it");
    tcp
}

/// The next packet from the hub (first byte, body); `None` once the hub closed the connection.
async fn read_packet(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    tokio::time::timeout(DEADLINE, async {
        let mut first = [0u8; 1];
        if tcp.read_exact(&mut first).await.is_err() {
            return None;
        }
        let mut len = 0usize;
        for shift in [0, 7, 14, 21] {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.ok()?;
            len |= usize::from(byte[0] & 0x7F) << shift;
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        tcp.read_exact(&mut body).await.ok()?;
        Some((first[0], body))
    })
    .await
    .expect("a packet or the end of the connection in time")
}

/// MQTT's keep-alive rule, enforced by the hub: a module silent for 1.5 × its keep-alive is
/// cut off (and counted); one that pings stays, each ping answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_module_is_cut_off_after_its_keep_alive_and_a_pinging_one_stays() {
    let t = start_hub(|_| {}).await;
    let mut pinging = raw_module(&t, 4, "MC-1001-STN", 1).await;
    let mut silent = raw_module(&t, 5, "MC-1002-STN", 1).await;
    let connected = Instant::now();
    // Three keep-alives of pings, answered one by one.
    while connected.elapsed() < Duration::from_secs(3) {
        pinging.write_all(&[0xC0, 0]).await.expect("PINGREQ");
        assert_eq!(
            read_packet(&mut pinging).await,
            Some((0xD0, vec![])),
            "PINGRESP"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The silent one was closed by now, and not before 1.5 s.
    assert_eq!(read_packet(&mut silent).await, None, "closed by the hub");
    assert_eq!(
        t.hub.metrics.rejected("mqtt_keep_alive"),
        1,
        "only the silent module was cut off"
    );
    assert!(connected.elapsed() >= Duration::from_millis(1500));
}

/// QoS 1 is acknowledged; QoS 2 is received, released and completed, and a retransmission
/// before the release is acknowledged again but delivered once (3.1.1 and 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_2_publishes_are_delivered_exactly_once() {
    let t = start_hub(|_| {}).await;
    for (level, id) in [(4, "MC-1001-STN"), (5, "MC-1002-STN")] {
        let mut tcp = raw_module(&t, level, id, 30).await;
        let before = t.hub.metrics.mqtt_messages_ingested.get();
        let hello = br#"{"fw":"1.0.0","heartbeatMs":5000}"#;
        tcp.write_all(&publish_packet(
            level,
            &format!("mc/{id}/hello"),
            1,
            1,
            0,
            hello,
        ))
        .await
        .expect("hello");
        assert_eq!(
            read_packet(&mut tcp).await,
            Some((0x40, vec![0, 1])),
            "PUBACK"
        );
        let telemetry = br#"{"seq":1,"readings":{"t":20.5}}"#;
        let topic = format!("mc/{id}/telemetry");
        tcp.write_all(&publish_packet(level, &topic, 2, 2, 0, telemetry))
            .await
            .expect("telemetry");
        assert_eq!(
            read_packet(&mut tcp).await,
            Some((0x50, vec![0, 2])),
            "PUBREC"
        );
        tcp.write_all(&publish_packet(level, &topic, 2, 2, 0x08, telemetry))
            .await
            .expect("retransmission");
        assert_eq!(
            read_packet(&mut tcp).await,
            Some((0x50, vec![0, 2])),
            "PUBREC again"
        );
        tcp.write_all(&[0x62, 2, 0, 2]).await.expect("PUBREL");
        assert_eq!(
            read_packet(&mut tcp).await,
            Some((0x70, vec![0, 2])),
            "PUBCOMP"
        );
        // Every answer comes after what it answers was handed to the tracker.
        assert_eq!(
            t.hub.metrics.mqtt_messages_ingested.get() - before,
            2,
            "level {level}: the hello and one telemetry"
        );
    }
}
