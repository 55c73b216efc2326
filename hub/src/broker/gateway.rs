//! The embedded MQTT server's front door and sessions (see the [module docs](super)):
//! authenticates each module, answers its CONNECT, runs its [`Session`] (topic ACL,
//! acknowledgements, keep-alive), hands its publishes to ingest, writes the hub's commands to
//! it, and tells the tracker when its connection starts and ends (and whether it ended
//! cleanly, else its will follows).

use std::{net::SocketAddr, sync::Arc, task::Poll, time::Duration};

use bytes::{Buf, BytesMut};
use mc_protocol::{ModuleId, ModuleTopic, TopicKind};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    packet::{self, Refusal, kind},
    session::{End, Session},
};
use crate::{
    connections::{CommandSlot, Link, LiveConnections, MqttRoute, Transport},
    ingest::{self, ModuleEvent, rate::ModuleRateLimiter},
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
/// Bytes read at a time. The read buffer exists only while bytes are in it: an idle connection
/// holds no buffer (memory per connection is the point of terminating MQTT here).
const READ_CHUNK: usize = 4096;
/// When a connection without keep-alive next looks at its (unused) keep-alive timer.
const FAR: Duration = Duration::from_secs(24 * 3600);
/// A module that does not take what the hub writes (acknowledgements, commands) within this
/// is cut off: its socket buffer has been full all that time.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every gateway connection needs.
pub struct Gateway {
    /// Registry, for credentials.
    pub store: Store,
    /// Where lifecycle events and publishes go.
    pub events: mpsc::Sender<ModuleEvent>,
    /// Counters.
    pub metrics: Metrics,
    /// Per-module rate limit, checked before decoding.
    pub limiter: ModuleRateLimiter,
    /// Largest packet a module may send (payload cap plus headers).
    pub max_packet: usize,
    /// Open connections (closable by the registry: token rotation, removal; reachable by
    /// commands) and the hub-wide session numbers, which let the tracker recognise stale
    /// disconnects and wills.
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
        limiter: ModuleRateLimiter,
        max_packet: usize,
        live: LiveConnections,
    ) -> Self {
        Self {
            store,
            events,
            metrics,
            limiter,
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
        // Logs from a connection say where they came from, as serial ports' do. One span for
        // every connection: a span each would cost memory per idle connection.
        let span = tracing::info_span!("ingest", transport = "mqtt");
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
                    let incoming = Box::new(Incoming {
                        stream,
                        peer,
                        slot,
                        shutdown: shutdown.clone(),
                    });
                    tasks.spawn(tracing::Instrument::instrument(
                        self.clone().serve(incoming),
                        span.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Serves one connection, from its CONNECT to its end; at shutdown it just stops (no will,
    /// no disconnect reported: the hub is going, not the module).
    ///
    /// A task keeps the size of its largest state for as long as it lives, and a module
    /// connection may live for months: what happens once per connection (the handshake and its
    /// registry queries, the reports to the tracker) is boxed, so that an idle connection holds
    /// little more than its read loop. For the same reason the task takes one boxed argument
    /// (an `async fn` keeps its arguments beside what it moved them into) and has no select
    /// of its own around it: shutdown reaches the read loop through the connection's token, a
    /// child of the hub's.
    async fn serve(self: Arc<Self>, incoming: Box<Incoming>) {
        // Matched straight from the await: a named `Option` moved into `connection` would keep
        // its own slot in the task beside it (256 bytes per connection for good).
        let mut connection = match Box::pin(async {
            let shutdown = incoming.shutdown.clone();
            tokio::select! {
                _ = shutdown.cancelled() => None,
                connection = self.accept(incoming) => connection,
            }
        })
        .await
        {
            Some(connection) => connection,
            None => return,
        };
        let clean = connection.run().await;
        if connection.stopping.is_cancelled() {
            return;
        }
        Box::pin(self.close(connection, clean)).await;
    }

    /// The handshake, then the registration.
    async fn accept(&self, incoming: Box<Incoming>) -> Option<Connection<'_>> {
        let Incoming {
            mut stream,
            peer,
            slot,
            shutdown,
        } = *incoming;
        let accepted = self.handshake(&mut stream, peer, slot).await?;
        self.open(stream, peer, accepted, shutdown).await
    }

    /// Reads the CONNECT, checks the module's credentials and what it asks for; answers a
    /// refusal itself.
    async fn handshake(
        &self,
        client: &mut TcpStream,
        peer: SocketAddr,
        handshake: tokio::sync::OwnedSemaphorePermit,
    ) -> Option<Accepted> {
        let mut buf = BytesMut::with_capacity(1024);
        let connect = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            read_frame(client, &mut buf, MAX_CONNECT_LEN),
        )
        .await
        {
            Ok(Ok(Some(frame))) if frame.kind == kind::CONNECT => frame,
            Ok(Ok(_)) => {
                self.metrics.reject("mqtt_protocol");
                return None;
            }
            Ok(Err(e)) => {
                self.metrics.reject("mqtt_protocol");
                tracing::debug!(%peer, error = %e, "bad first packet");
                return None;
            }
            Err(_) => {
                self.metrics.reject("mqtt_connect_timeout");
                return None;
            }
        };
        let info = match packet::parse_connect(&buf[connect.header_len..connect.len]) {
            Ok(info) => info,
            Err(e) => {
                self.metrics.reject("mqtt_protocol");
                tracing::warn!(%peer, error = %e, "malformed CONNECT");
                return None;
            }
        };
        match info.level {
            packet::LEVEL_V311 | packet::LEVEL_V5 => {}
            _ => {
                self.refuse(
                    client,
                    info.level,
                    Refusal::UnsupportedVersion,
                    peer,
                    &info.client_id,
                )
                .await;
                return None;
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
                self.refuse(client, info.level, refusal, peer, &info.client_id)
                    .await;
                return None;
            }
        };
        drop(handshake);
        // Identity first, then what it asks for.
        if let Some(will) = &info.will
            && !will_allowed(&info.client_id, will)
        {
            self.refuse(
                client,
                info.level,
                Refusal::NotAuthorized,
                peer,
                &info.client_id,
            )
            .await;
            return None;
        }
        buf.advance(connect.len);
        Some(Accepted {
            level: info.level,
            keep_alive: info.keep_alive,
            will: info.will,
            record,
            buf,
        })
    }

    /// Registers an accepted module's session (the tracker first, then the live connections)
    /// and queues its CONNACK; `None` if the hub is stopping.
    async fn open(
        &self,
        client: TcpStream,
        peer: SocketAddr,
        accepted: Accepted,
        stopping: CancellationToken,
    ) -> Option<Connection<'_>> {
        let Accepted {
            level,
            keep_alive,
            will,
            record,
            buf,
        } = accepted;
        let module = record.id.clone();
        let session = self.live.next_session();
        let connected = ModuleEvent::Connected {
            record,
            session,
            transport: Transport::Mqtt,
        };
        self.events.send(connected).await.ok()?;
        // Registered after the tracker heard of the session: a takeover closes the older
        // connection here, whose end the tracker then recognises as stale.
        let commands = Arc::new(CommandSlot::default());
        let closed_by_hub = self.live.insert_under(
            &stopping,
            &module,
            session,
            Link::Mqtt(Some(MqttRoute {
                commands: commands.clone(),
            })),
        );
        self.metrics.mqtt_connections.inc();
        tracing::debug!(%module, session, %peer, level, "module connected");
        let mut out = BytesMut::new();
        packet::put_connack_accepted(&mut out, level, self.max_packet);
        Some(Connection {
            gateway: self,
            client,
            session: Session::new(module, level),
            number: session,
            keep_alive: keep_alive_grace(keep_alive),
            will: will.map(Box::new),
            commands,
            closed_by_hub,
            stopping,
            buf,
            out,
        })
    }

    /// Forgets a connection that ended and reports its end to the tracker, then its will unless
    /// it ended cleanly.
    async fn close(&self, mut connection: Connection<'_>, clean: bool) {
        let module = connection.session.module().clone();
        let session = connection.number;
        connection.commands.close();
        self.live.remove(&module, session);
        let _ = connection.client.shutdown().await;
        tracing::debug!(%module, session, clean, "module disconnected");
        let will = connection.will.take();
        drop(connection);
        let ended = ModuleEvent::Disconnected {
            module,
            session,
            clean,
        };
        if self.events.send(ended).await.is_err() || clean {
            return;
        }
        // After its end, as a broker would publish it: the tracker recognises a will that
        // comes after a newer connection as stale.
        if let Some(will) = will
            && let Offer::Wait(event) = self.offer(will.topic.as_bytes(), &will.payload)
        {
            let _ = self.events.send(event).await;
        }
    }

    /// Decodes one publish (or will) and hands it to the tracker without waiting, when its
    /// channel has room (nearly always). Not an `async fn`: the rare wait is the caller's,
    /// boxed, so that a connection's future does not carry an event's size all its life.
    fn offer(&self, topic: &[u8], payload: &[u8]) -> Offer {
        let Some(event) = ingest::mqtt::decode(topic, payload, &self.metrics, &self.limiter) else {
            return Offer::Taken;
        };
        self.metrics.messages_ingested.inc();
        self.metrics.mqtt_messages_ingested.inc();
        match self.events.try_send(event) {
            Ok(()) => Offer::Taken,
            Err(mpsc::error::TrySendError::Full(event)) => Offer::Wait(event),
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
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

/// A module's last will may only be its own, non-retained `status` topic: the broker publishes
/// it on the module's behalf, so it must not reach other modules' topics.
fn will_allowed(client_id: &str, will: &packet::Will) -> bool {
    !will.retain
        && ModuleTopic::parse(&will.topic)
            .is_ok_and(|t| t.kind == TopicKind::Status && t.module.as_str() == client_id)
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

/// Reads what the socket holds, up to [`READ_CHUNK`] more bytes into `buf`.
///
/// A read that does not fill the space offered emptied the socket's receive queue, so the
/// socket's readiness is cleared with it (as tokio's own `AsyncRead` does on epoll): the next
/// wait goes straight to epoll instead of costing a `recv` that would only say `EAGAIN`: one
/// syscall per message saved when, as usual, each wake-up brings one publish. The readiness
/// cleared is the one observed before the read (`try_io`), so bytes that arrive during it
/// raise a new one and are not missed.
fn read_some(client: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    buf.reserve(READ_CHUNK);
    let offered = buf.capacity() - buf.len();
    let mut read = 0;
    let drained = client.try_io(tokio::io::Interest::READABLE, || {
        read = client.try_read_buf(buf)?;
        if read > 0 && read < offered {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match drained {
        Ok(()) => Ok(read),
        Err(_) if read > 0 => Ok(read),
        Err(e) => Err(e),
    }
}

/// A connection just accepted: the connection task's one argument, boxed (see `serve`).
struct Incoming {
    stream: TcpStream,
    peer: SocketAddr,
    /// Its slot among the connections authenticating, given back once it has.
    slot: tokio::sync::OwnedSemaphorePermit,
    shutdown: CancellationToken,
}

/// A module through the handshake.
struct Accepted {
    level: u8,
    keep_alive: u16,
    will: Option<packet::Will>,
    record: ModuleRecord,
    /// What it sent after its CONNECT.
    buf: BytesMut,
}

/// How long a module may stay silent: one and a half times its keep-alive (MQTT's rule);
/// `None` for a keep-alive of 0 (none: its liveness is the hub's heartbeat timeout anyway).
fn keep_alive_grace(keep_alive: u16) -> Option<Duration> {
    (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500))
}

/// What became of a publish handed to the tracker.
enum Offer {
    /// Taken, or rejected (counted by the decoder).
    Taken,
    /// The tracker's channel is full: wait to send it (backpressure: the connection is not
    /// read meanwhile).
    Wait(ModuleEvent),
    /// The tracker is gone: the hub is stopping.
    Gone,
}

/// One authenticated connection, from its CONNACK to its end. Owned by the connection's task
/// and served by `&mut` reference: a future owning it by value would keep a second copy.
struct Connection<'a> {
    gateway: &'a Gateway,
    client: TcpStream,
    session: Session,
    /// Its hub-wide session number.
    number: u64,
    keep_alive: Option<Duration>,
    /// Published on its behalf if it ends without a clean DISCONNECT.
    will: Option<Box<packet::Will>>,
    /// Commands for the module ([`crate::commands`] finds this queue in the live connections).
    commands: Arc<CommandSlot>,
    /// Cancelled to close the connection: registry change, a newer connection of the module,
    /// or shutdown (a child of `stopping`).
    closed_by_hub: CancellationToken,
    /// The hub's shutdown.
    stopping: CancellationToken,
    /// Bytes read and not yet handled (empty, and unallocated, while idle).
    buf: BytesMut,
    /// Answers not yet written (the CONNACK at first).
    out: BytesMut,
}

impl Connection<'_> {
    /// Writes `out` whole and clears it; false if the connection failed or the module did not
    /// read it in time. The socket nearly always takes it at once; the wait is boxed (see
    /// `serve`).
    async fn flush(&mut self) -> bool {
        let ok = self.write_out().await;
        self.out.clear();
        if self.out.capacity() > READ_CHUNK {
            self.out = BytesMut::new();
        }
        ok
    }

    async fn write_out(&mut self) -> bool {
        let out = &self.out[..];
        let written = match self.client.try_write(out) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => return false,
        };
        if written == out.len() {
            return true;
        }
        let rest = &out[written..];
        let closed = &self.closed_by_hub;
        let waited = Box::pin(async {
            tokio::select! {
                _ = closed.cancelled() => Ok(Err(std::io::ErrorKind::ConnectionAborted.into())),
                r = tokio::time::timeout(WRITE_TIMEOUT, self.client.write_all(rest)) => r,
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                self.gateway.metrics.reject("mqtt_write_timeout");
                tracing::warn!(module = %self.session.module(), "module does not read what the hub writes: closing connection");
                false
            }
        }
    }
}

/// What woke the connection up.
enum Wake {
    Readable(std::io::Result<()>),
    Commands,
    KeepAlive,
    Closed,
}

impl Connection<'_> {
    /// Serves the connection until it ends; true for a clean DISCONNECT.
    async fn run(&mut self) -> bool {
        let gateway = self.gateway;
        let mut heard = Instant::now();
        let keep_alive = tokio::time::sleep(self.keep_alive.unwrap_or(FAR));
        tokio::pin!(keep_alive);
        loop {
            // Every complete packet, then one write for all the answers.
            let mut consumed = 0;
            let ended = loop {
                let frame = match packet::frame(&self.buf[consumed..], gateway.max_packet) {
                    Ok(Some(f)) if consumed + f.len <= self.buf.len() => f,
                    Ok(_) => break None,
                    Err(packet::PacketError::TooLarge(len)) => {
                        tracing::warn!(module = %self.session.module(), len, max = gateway.max_packet, "packet too large: closing connection");
                        break Some(End::Violation("too_large"));
                    }
                    Err(e) => {
                        tracing::warn!(module = %self.session.module(), error = %e, "bad packet: closing connection");
                        break Some(End::Violation("mqtt_protocol"));
                    }
                };
                let body = &self.buf[consumed + frame.header_len..consumed + frame.len];
                consumed += frame.len;
                match self.session.handle(frame, body, &mut self.out) {
                    Ok(Some(publish)) => {
                        // The event moves into the boxed send: a match held across the await
                        // would keep the whole `Offer` (192 bytes) in every connection's task.
                        let event = match gateway.offer(publish.topic, publish.payload) {
                            Offer::Taken => continue,
                            Offer::Wait(event) => event,
                            Offer::Gone => return false,
                        };
                        if Box::pin(gateway.events.send(event)).await.is_err() {
                            return false; // the hub is stopping
                        }
                    }
                    Ok(None) => {}
                    Err(end) => break Some(end),
                }
            };
            self.buf.advance(consumed);
            if let Some(End::Violation(reason)) = ended {
                gateway.metrics.reject(reason);
                let module = self.session.module();
                if reason == "acl_denied" {
                    tracing::warn!(%module, "publish or subscription outside the module's topics: closing connection");
                } else {
                    tracing::warn!(%module, reason, "protocol violation: closing connection");
                }
            }
            // What came before an ending was legitimate: it is answered.
            if !self.out.is_empty() && !self.flush().await {
                return false;
            }
            if let Some(end) = ended {
                return end == End::Clean;
            }
            if self.buf.is_empty() {
                self.buf = BytesMut::new();
            }

            // Commands before reads: a module whose socket always has bytes waiting must not
            // starve them (they are rare, so asking first costs nothing). The socket and the
            // command slot are polled, not awaited: their futures (`readable()` alone is
            // 152 bytes) would sit in the task of every idle connection.
            let closed = self.closed_by_hub.cancelled();
            tokio::pin!(closed);
            let wake = std::future::poll_fn(|cx| {
                if closed.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Wake::Closed)
                } else if self.commands.poll_ready(cx).is_ready() {
                    Poll::Ready(Wake::Commands)
                } else if let Poll::Ready(r) = self.client.poll_read_ready(cx) {
                    Poll::Ready(Wake::Readable(r))
                } else if keep_alive.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Wake::KeepAlive)
                } else {
                    Poll::Pending
                }
            })
            .await;
            match wake {
                Wake::Closed if self.stopping.is_cancelled() => return false,
                Wake::Closed => {
                    tracing::info!(module = %self.session.module(), "connection closed by the hub (registry change or a newer connection)");
                    return false;
                }
                Wake::Readable(Err(_)) => return false,
                Wake::Readable(Ok(())) => match read_some(&self.client, &mut self.buf) {
                    Ok(0) => return false,
                    Ok(_) => heard = Instant::now(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return false,
                },
                Wake::Commands => {
                    for payload in self.commands.take() {
                        if !self.session.command(&payload, &mut self.out) {
                            tracing::debug!(module = %self.session.module(), "command dropped: the module is not subscribed to its command topic");
                        }
                    }
                }
                Wake::KeepAlive => {
                    let Some(grace) = self.keep_alive else {
                        keep_alive.as_mut().reset(Instant::now() + FAR);
                        continue;
                    };
                    if heard.elapsed() >= grace {
                        gateway.metrics.reject("mqtt_keep_alive");
                        tracing::info!(module = %self.session.module(), "no packet within 1.5 × its keep-alive: closing connection");
                        return false;
                    }
                    keep_alive.as_mut().reset(heard + grace);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_will_may_only_be_the_modules_own_status() {
        let will = |topic: &str, retain| packet::Will {
            topic: topic.into(),
            payload: b"offline".to_vec(),
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
}
