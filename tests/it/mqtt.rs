//! MQTT corners the embedded broker gets wrong on its own, worked around in the gateway.

use mc_e2e::{DEADLINE, start_hub};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
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

/// MQTT allows keep-alive 0 (no keep-alive); rumqttd alone closes such a connection without a
/// CONNACK. Through the hub the module is accepted (3.1.1 and 5), and its messages count.
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
