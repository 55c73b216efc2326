//! The MQTT front door (see the [module docs](super)): authenticates each module, routes it to
//! the internal listener of its protocol version, enforces its topic ACL, and tells the tracker
//! when its connection starts and ends (and whether it ended cleanly).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Buf, BytesMut};
use mc_protocol::{ModuleId, ModuleTopic, TopicKind};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::packet::{self, Refusal, kind};
use crate::{
    connections::{Link, LiveConnections, Transport},
    ingest::ModuleEvent,
    metrics::Metrics,
    store::{ModuleRecord, Store},
};

/// How long a new TCP connection may take to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest CONNECT accepted (ids, credentials and a will fit easily).
const MAX_CONNECT_LEN: usize = 8 * 1024;
/// Connections that have not authenticated yet, at most: each costs a task and a descriptor
/// for up to [`CONNECT_TIMEOUT`], so a flood of silent connections must not exhaust them; one
/// more is closed at once and counted (`mqtt_handshake_limit`).
pub const MAX_PENDING_HANDSHAKES: usize = 1024;
/// The keep-alive the internal broker gets for a module that asked for none (0).
const UPSTREAM_KEEP_ALIVE_FOR_NONE: u16 = u16::MAX;

/// What every gateway connection needs.
pub struct Gateway {
    /// Registry, for credentials.
    pub store: Store,
    /// Where lifecycle events go.
    pub events: mpsc::Sender<ModuleEvent>,
    /// Counters.
    pub metrics: Metrics,
    /// Internal MQTT 3.1.1 listener.
    pub v4_addr: SocketAddr,
    /// Internal MQTT 5 listener.
    pub v5_addr: SocketAddr,
    /// Largest packet a module may send (payload cap plus headers).
    pub max_packet: usize,
    /// Open connections (closable by the registry: token rotation, removal) and the hub-wide
    /// session numbers, which let the tracker recognise stale disconnects and wills.
    pub live: LiveConnections,
    /// Slots for connections still authenticating ([`MAX_PENDING_HANDSHAKES`]).
    handshakes: Arc<tokio::sync::Semaphore>,
}

impl Gateway {
    /// A gateway with these settings, registering its connections in `live`.
    pub fn new(
        store: Store,
        events: mpsc::Sender<ModuleEvent>,
        metrics: Metrics,
        v4_addr: SocketAddr,
        v5_addr: SocketAddr,
        max_packet: usize,
        live: LiveConnections,
    ) -> Self {
        Self {
            store,
            events,
            metrics,
            v4_addr,
            v5_addr,
            max_packet,
            live,
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES)),
        }
    }

    /// Accepts connections on `listener` until shutdown.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = self.handshakes.clone().try_acquire_owned() else {
                        self.metrics.reject("mqtt_handshake_limit");
                        tracing::debug!(%peer, "too many connections authenticating: closed");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let gateway = self.clone();
                    let shutdown = shutdown.clone();
                    tasks.spawn(async move {
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = gateway.serve(stream, peer, slot) => {}
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// `handshake` is this connection's slot among those authenticating, given back once it
    /// has.
    async fn serve(
        &self,
        mut client: TcpStream,
        peer: SocketAddr,
        handshake: tokio::sync::OwnedSemaphorePermit,
    ) {
        let mut buf = BytesMut::with_capacity(1024);
        let connect = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            read_frame(&mut client, &mut buf, MAX_CONNECT_LEN),
        )
        .await
        {
            Ok(Ok(Some(frame))) if frame.kind == kind::CONNECT => frame,
            Ok(Ok(_)) => {
                self.metrics.reject("mqtt_protocol");
                return;
            }
            Ok(Err(e)) => {
                self.metrics.reject("mqtt_protocol");
                tracing::debug!(%peer, error = %e, "bad first packet");
                return;
            }
            Err(_) => {
                self.metrics.reject("mqtt_connect_timeout");
                return;
            }
        };
        let info = match packet::parse_connect(&buf[connect.header_len..connect.len]) {
            Ok(info) => info,
            Err(e) => {
                self.metrics.reject("mqtt_protocol");
                tracing::warn!(%peer, error = %e, "malformed CONNECT");
                return;
            }
        };
        let upstream_addr = match info.level {
            packet::LEVEL_V311 => self.v4_addr,
            packet::LEVEL_V5 => self.v5_addr,
            _ => {
                self.refuse(
                    &mut client,
                    info.level,
                    Refusal::UnsupportedVersion,
                    peer,
                    &info.client_id,
                )
                .await;
                return;
            }
        };
        let record = match check_credentials(
            &self.store,
            &info.client_id,
            info.username.as_deref(),
            info.password.as_deref(),
        )
        .await
        {
            Ok(record) => record,
            Err(refusal) => {
                self.note_if_unknown(&info, peer).await;
                self.refuse(&mut client, info.level, refusal, peer, &info.client_id)
                    .await;
                return;
            }
        };
        drop(handshake);
        // Identity first, then what it asks for.
        if let Some(will) = &info.will
            && !will_allowed(&info.client_id, will)
        {
            self.refuse(
                &mut client,
                info.level,
                Refusal::NotAuthorized,
                peer,
                &info.client_id,
            )
            .await;
            return;
        }

        // Register the new session *before* the broker sees the CONNECT: if this connection
        // takes over an older one, the broker closes the old one only after reading this
        // CONNECT, so the tracker always learns of the new session first and recognises the
        // old connection's end (and its last will) as stale.
        let module = record.id.clone();
        let session = self.live.next_session();
        if self
            .events
            .send(ModuleEvent::Connected {
                record,
                session,
                transport: Transport::Mqtt,
            })
            .await
            .is_err()
        {
            return;
        }
        let ended = |clean| ModuleEvent::Disconnected {
            module: module.clone(),
            session,
            clean,
        };

        if info.keep_alive == 0 {
            // MQTT allows keep-alive 0 (none); rumqttd drops such a CONNECT without a CONNACK.
            // The broker gets the longest keep-alive instead (~18 h of silence); the module
            // keeps its "none", and its liveness is the hub's heartbeat timeout either way.
            let at = connect.header_len + info.keep_alive_at;
            buf[at..at + 2].copy_from_slice(&UPSTREAM_KEEP_ALIVE_FOR_NONE.to_be_bytes());
        }
        let Some((upstream, buf)) = self
            .open_upstream(&mut client, upstream_addr, buf, connect.len)
            .await
        else {
            let aborted = ModuleEvent::ConnectAborted {
                module: module.clone(),
                session,
            };
            let _ = self.events.send(aborted).await;
            return;
        };
        self.metrics.mqtt_connections.inc();
        tracing::debug!(%module, session, %peer, level = info.level, "module connected");

        let (mut client_rd, mut client_wr) = client.into_split();
        let (mut upstream_rd, mut upstream_wr) = upstream.into_split();
        let downstream = async {
            let _ = tokio::io::copy(&mut upstream_rd, &mut client_wr).await;
        };
        let upstream_fut =
            self.forward_client(&module, info.level, &mut client_rd, &mut upstream_wr, buf);
        let closed_by_hub = self.live.insert(&module, session, Link::Mqtt);
        let clean = tokio::select! {
            clean = upstream_fut => clean,
            _ = downstream => false,
            _ = closed_by_hub.cancelled() => {
                tracing::info!(%module, session, "connection closed by the hub (registry change)");
                false
            }
        };
        self.live.remove(&module, session);
        let _ = upstream_wr.shutdown().await;
        tracing::debug!(%module, session, clean, "module disconnected");
        let _ = self.events.send(ended(clean)).await;
    }

    /// Connects to the internal listener, forwards the CONNECT and relays the broker's CONNACK.
    /// `None` when the broker is unreachable or refuses.
    async fn open_upstream(
        &self,
        client: &mut TcpStream,
        upstream_addr: SocketAddr,
        mut buf: BytesMut,
        connect_len: usize,
    ) -> Option<(TcpStream, BytesMut)> {
        let mut upstream = match TcpStream::connect(upstream_addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "internal broker unreachable");
                return None;
            }
        };
        let _ = upstream.set_nodelay(true);
        upstream.write_all(&buf[..connect_len]).await.ok()?;
        buf.advance(connect_len);
        let mut down = BytesMut::with_capacity(64);
        let connack = match read_frame(&mut upstream, &mut down, 1024).await {
            Ok(Some(f)) if f.kind == kind::CONNACK => f,
            _ => return None,
        };
        let accepted = packet::connack_accepted(&down[connack.header_len..connack.len]);
        client.write_all(&down).await.ok()?;
        accepted.then_some((upstream, buf))
    }

    /// Copies client packets to the broker, checking each PUBLISH against the module's ACL.
    /// Returns true when the client ended with a clean DISCONNECT.
    async fn forward_client(
        &self,
        module: &ModuleId,
        level: u8,
        client: &mut tokio::net::tcp::OwnedReadHalf,
        upstream: &mut tokio::net::tcp::OwnedWriteHalf,
        mut buf: BytesMut,
    ) -> bool {
        loop {
            // Forward every complete packet in the buffer with one write.
            let mut complete = 0;
            loop {
                let frame = match packet::frame(&buf[complete..], self.max_packet) {
                    Ok(Some(f)) if complete + f.len <= buf.len() => f,
                    Ok(_) => break,
                    Err(packet::PacketError::TooLarge(len)) => {
                        self.metrics.reject("too_large");
                        tracing::warn!(%module, len, max = self.max_packet, "packet too large: closing connection");
                        return false;
                    }
                    Err(e) => {
                        self.metrics.reject("mqtt_protocol");
                        tracing::warn!(%module, error = %e, "bad packet: closing connection");
                        return false;
                    }
                };
                let body = &buf[complete + frame.header_len..complete + frame.len];
                match frame.kind {
                    kind::PUBLISH => {
                        if let Err(reason) = check_publish(module, body) {
                            // What came before the violation was legitimate: deliver it.
                            let _ = upstream.write_all(&buf[..complete]).await;
                            self.metrics.reject(reason);
                            tracing::warn!(%module, topic = %packet::publish_topic(body).unwrap_or("").escape_debug(), "publish outside the module's topics: closing connection");
                            return false;
                        }
                    }
                    kind::SUBSCRIBE => {
                        if let Err(reason) = check_subscribe(module, level, body) {
                            let _ = upstream.write_all(&buf[..complete]).await;
                            self.metrics.reject(reason);
                            tracing::warn!(%module, "subscription outside the module's command topic: closing connection");
                            return false;
                        }
                    }
                    kind::DISCONNECT => {
                        let _ = upstream.write_all(&buf[..complete + frame.len]).await;
                        return !packet::disconnect_with_will(level, body);
                    }
                    _ => {}
                }
                complete += frame.len;
            }
            if complete > 0 {
                if upstream.write_all(&buf[..complete]).await.is_err() {
                    return false;
                }
                buf.advance(complete);
            }
            buf.reserve(4096);
            match client.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    }

    /// An unregistered module (valid id, username = id) is recorded as pending for admins to
    /// claim; it gets the same refusal as a wrong password, so existence does not leak.
    async fn note_if_unknown(&self, info: &packet::Connect, peer: SocketAddr) {
        let Ok(id) = ModuleId::new(&info.client_id) else {
            return;
        };
        if info.username.as_deref() != Some(info.client_id.as_str()) {
            return;
        }
        if let Ok(None) = self.store.module(&id).await {
            self.metrics.reject("unknown_module");
            if let Err(e) = self.store.record_pending(&id, &peer.ip().to_string()).await {
                tracing::warn!(error = %e, "could not record a pending module");
            }
        }
    }

    async fn refuse(
        &self,
        client: &mut TcpStream,
        level: u8,
        refusal: Refusal,
        peer: SocketAddr,
        client_id: &str,
    ) {
        self.metrics.mqtt_auth_failures.inc();
        self.metrics.reject(match refusal {
            Refusal::UnsupportedVersion => "mqtt_version",
            Refusal::BadClientId => "mqtt_client_id",
            Refusal::BadCredentials => "mqtt_credentials",
            Refusal::NotAuthorized => "acl_denied",
            Refusal::Disabled => "module_disabled",
        });
        tracing::warn!(%peer, client_id = %client_id.escape_debug(), ?refusal, "MQTT connection refused");
        let _ = client
            .write_all(&packet::connack_refusal(level, refusal))
            .await;
        let _ = client.shutdown().await;
    }
}

/// A module may publish only on its own hello/heartbeat/telemetry/status topics.
fn check_publish(module: &ModuleId, body: &[u8]) -> Result<(), &'static str> {
    let topic = packet::publish_topic(body).map_err(|_| "mqtt_protocol")?;
    match ModuleTopic::parse(topic) {
        Ok(t) if t.module == *module && t.kind != TopicKind::Cmd => Ok(()),
        _ => Err("acl_denied"),
    }
}

/// A module's last will may only be its own, non-retained `status` topic: the broker publishes
/// it on the module's behalf, so it must not reach other modules' topics.
fn will_allowed(client_id: &str, will: &packet::Will) -> bool {
    !will.retain
        && ModuleTopic::parse(&will.topic)
            .is_ok_and(|t| t.kind == TopicKind::Status && t.module.as_str() == client_id)
}

/// A module may subscribe only to its own command topic (no wildcards: nobody else's data).
fn check_subscribe(module: &ModuleId, level: u8, body: &[u8]) -> Result<(), &'static str> {
    let filters = packet::subscribe_filters(level, body).map_err(|_| "mqtt_protocol")?;
    let allowed = ModuleTopic::new(module.clone(), TopicKind::Cmd).to_heapless();
    if filters.iter().all(|f| *f == allowed.as_str()) {
        Ok(())
    } else {
        Err("acl_denied")
    }
}

/// Checks MQTT credentials against the registry: client id = username = a registered module
/// id, password = its token.
pub async fn check_credentials(
    store: &Store,
    client_id: &str,
    username: Option<&str>,
    password: Option<&[u8]>,
) -> Result<ModuleRecord, Refusal> {
    let id = ModuleId::new(client_id).map_err(|_| Refusal::BadClientId)?;
    if username != Some(client_id) {
        return Err(Refusal::BadCredentials);
    }
    let password = password
        .and_then(|p| std::str::from_utf8(p).ok())
        .ok_or(Refusal::BadCredentials)?;
    let record = match store.module(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(Refusal::BadCredentials),
        Err(e) => {
            tracing::error!(error = %e, "registry lookup failed");
            return Err(Refusal::BadCredentials);
        }
    };
    if !record.token_matches(password) {
        return Err(Refusal::BadCredentials);
    }
    if record.disabled {
        return Err(Refusal::Disabled);
    }
    Ok(record)
}

/// Reads until `buf` holds one complete packet; `Ok(None)` on EOF first.
async fn read_frame(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Option<packet::Frame>, packet::PacketError> {
    loop {
        if let Some(frame) = packet::frame(buf, max_len)?
            && buf.len() >= frame.len
        {
            return Ok(Some(frame));
        }
        buf.reserve(1024);
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_allows_only_own_upstream_topics() {
        let me = ModuleId::new("MC-1").unwrap();
        let publish = |topic: &str| {
            let mut body = (topic.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(topic.as_bytes());
            body.extend_from_slice(b"payload");
            check_publish(&me, &body)
        };
        assert_eq!(publish("mc/MC-1/telemetry"), Ok(()));
        assert_eq!(publish("mc/MC-1/status"), Ok(()));
        assert_eq!(publish("mc/MC-2/telemetry"), Err("acl_denied"));
        assert_eq!(publish("mc/MC-1/cmd"), Err("acl_denied"));
        assert_eq!(publish("other/topic"), Err("acl_denied"));
    }

    #[test]
    fn a_will_may_only_be_the_modules_own_status() {
        let will = |topic: &str, retain| packet::Will {
            topic: topic.into(),
            retain,
        };
        assert!(will_allowed("MC-1", &will("mc/MC-1/status", false)));
        assert!(
            !will_allowed("MC-1", &will("mc/MC-1/status", true)),
            "retained"
        );
        assert!(!will_allowed("MC-1", &will("mc/MC-2/status", false)));
        assert!(!will_allowed("MC-1", &will("mc/MC-2/cmd", false)));
        assert!(!will_allowed("MC-1", &will("mc/MC-1/telemetry", false)));
    }

    #[test]
    fn acl_allows_only_subscribing_to_own_commands() {
        let me = ModuleId::new("MC-1").unwrap();
        let subscribe = |filter: &str| {
            let mut body = vec![0, 7];
            body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
            body.extend_from_slice(filter.as_bytes());
            body.push(1);
            check_subscribe(&me, 4, &body)
        };
        assert_eq!(subscribe("mc/MC-1/cmd"), Ok(()));
        assert_eq!(subscribe("mc/MC-2/cmd"), Err("acl_denied"));
        assert_eq!(subscribe("mc/+/telemetry"), Err("acl_denied"));
        assert_eq!(subscribe("#"), Err("acl_denied"));
    }
}
