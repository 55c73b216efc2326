//! The link sessions of one serial port, by address: what the hub does with each frame a
//! module sends, and what it answers (`hardware/PROTOCOL.md`, §4).
//!
//! - A `Hello` is checked against the registry and, when accepted, opens a session: a
//!   hub-wide session number, an entry in
//!   [`LiveConnections`](crate::connections::LiveConnections) (whose token the registry
//!   cancels on disable or removal), the hello's reading names (telemetry refers to them by
//!   index), and an `Accept`.
//! - The tracker hears of the session (`Connected`, `Hello`: online) only with the module's
//!   first heartbeat, telemetry or ack, which proves that the `Accept` got through: with a
//!   line that works one way only (a broken TX wire, a baud rate wrong in one direction) the
//!   module keeps saying hello and stays offline instead of flapping.
//! - A new hello at the same address is a new session, like an MQTT reconnect. From the same
//!   module it takes over the old session's commands (the module keeps running them: it
//!   de-duplicates by id), a `Reboot` in flight counts as done, and if the old session was
//!   confirmed the new one is too: the tracker sees a takeover, not an offline flap (a
//!   module announcing a new heartbeat interval, or back from a reboot).
//! - Heartbeats and telemetry of a session become the same [`ModuleEvent`]s as over MQTT (the
//!   same diff path); from an address without a session they get `Refuse(HandshakeRequired)`,
//!   at most once per second per address: that is how a module learns that the hub restarted
//!   or the port was reopened.
//! - A command is sent, and sent again with the same id every [`ACK_TIMEOUT`] until the
//!   module's `Ack`, at most [`COMMAND_ATTEMPTS`] times; one command at a time per module,
//!   because the firmware de-duplicates by the id of its last command only.
//! - A bad frame is counted by reason and answered with `Error` (or `Refuse(InvalidHello)`
//!   for a hello that breaks a rule) to the port's last good address, at most
//!   [`MAX_ERROR_REPLIES_PER_SECOND`] per port. It never affects the next frame.
//! - A session ends when its port is lost, when the registry closes it, when a new hello
//!   replaces it, or when the module stays silent past [`session_expiry`]: always as an
//!   unclean disconnect, so the tracker marks the module offline at once (no last will follows
//!   on a serial line).
//! - Each time the port opens, address 0 is told `Refuse(HandshakeRequired)` at once: a module
//!   with a long heartbeat interval says hello now rather than at its next frame.
//!
//! This type does no I/O: replies collect in an outbox that the port task writes.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Display,
    sync::Arc,
    time::Duration,
};

use futures_util::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use mc_protocol::{
    Command, CommandAction, Encoding, FirmwareVersion, Heartbeat, Hello, ModuleId, ProtocolError,
    ReadingName, Telemetry,
    link::{
        ADDRESS_MAX, ADDRESS_POINT_TO_POINT, Accept, Ack, CommandResult, Downlink, FrameError,
        LINK_VERSION, LinkError, LinkHello, LinkTelemetry, RefuseReason, Uplink,
        json::{JsonHello, JsonUplink},
    },
};
use tokio::{
    sync::oneshot,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use super::{PortRequest, SerialContext};
use crate::{
    connections::{Link, Presence, SerialRoute, Transport},
    ingest::{ModuleEvent, rate::Admission},
    liveness,
    metrics::SerialPortMetrics,
    store::ModuleRecord,
};

/// How long the hub waits for a command's ack before sending it again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// How many times a command is sent before the hub gives up.
pub const COMMAND_ATTEMPTS: u32 = 3;
/// Commands waiting for one module (the one in flight included); more are refused as busy.
pub const MAX_QUEUED_COMMANDS: usize = 4;
/// Most `Error` replies per second on one port (line noise must not become a flood back).
pub const MAX_ERROR_REPLIES_PER_SECOND: u32 = 10;
/// Most refusals of a hello per second on one port (each may cost a registry write).
pub const MAX_REFUSALS_PER_SECOND: u32 = 10;
/// `Refuse(HandshakeRequired)` to one address at most this often.
pub const HANDSHAKE_REFUSAL_INTERVAL: Duration = Duration::from_secs(1);
/// A session silent for [`session_expiry`] (which includes this) ends; the tracker has
/// marked the module offline by then.
pub const SESSION_EXPIRY_GRACE: Duration = Duration::from_secs(2);
/// Bad input on a port is logged at `warn` at most this often (always at `debug`).
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Why a command got no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandFailure {
    /// Sent [`COMMAND_ATTEMPTS`] times, never acknowledged.
    #[error("no acknowledgement after {0} attempts")]
    NoAck(u32),
    /// The module's session ended (port lost, new hello, registry change) before its ack.
    #[error("the module's link session ended before it acknowledged")]
    SessionEnded,
    /// Too many commands are already waiting for this module.
    #[error("too many commands waiting for this module")]
    Busy,
}

/// A decoded frame, whichever the port's framing: binary frames ([`Uplink`]) or JSON lines
/// ([`JsonUplink`]), which differ only in how a hello announces readings and telemetry names
/// them.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// The handshake.
    Hello(InboundHello),
    /// Still alive.
    Heartbeat(Heartbeat),
    /// Readings by index into the hello's names (binary frames).
    TelemetryByIndex(LinkTelemetry),
    /// Named readings (JSON lines).
    Telemetry(Box<Telemetry>),
    /// A command's outcome.
    Ack(Ack),
    /// The module could not use a frame from the hub.
    Error(LinkError),
}

/// A hello, whichever the framing.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundHello {
    /// The link protocol version the module speaks.
    pub protocol: u8,
    /// Who it is.
    pub module: ModuleId,
    /// Firmware version.
    pub fw: FirmwareVersion,
    /// Heartbeat interval.
    pub heartbeat_ms: u32,
    /// Telemetry interval.
    pub telemetry_ms: u32,
    /// The reading names telemetry refers to by index; `None` when telemetry names its
    /// readings (JSON lines).
    pub readings: Option<Vec<ReadingName>>,
}

impl From<Uplink> for Inbound {
    fn from(message: Uplink) -> Self {
        match message {
            Uplink::Hello(LinkHello {
                protocol,
                module,
                fw,
                heartbeat_ms,
                telemetry_ms,
                readings,
            }) => Self::Hello(InboundHello {
                protocol,
                module,
                fw,
                heartbeat_ms,
                telemetry_ms,
                readings: Some(readings.into_iter().collect()),
            }),
            Uplink::Heartbeat(h) => Self::Heartbeat(h),
            Uplink::Telemetry(t) => Self::TelemetryByIndex(t),
            Uplink::Ack(a) => Self::Ack(a),
            Uplink::Error(e) => Self::Error(e),
        }
    }
}

impl From<JsonUplink> for Inbound {
    fn from(message: JsonUplink) -> Self {
        match message {
            JsonUplink::Hello(JsonHello {
                protocol,
                module,
                fw,
                heartbeat_ms,
                telemetry_ms,
            }) => Self::Hello(InboundHello {
                protocol,
                module,
                fw,
                heartbeat_ms,
                telemetry_ms,
                readings: None,
            }),
            JsonUplink::Heartbeat(h) => Self::Heartbeat(h),
            JsonUplink::Telemetry(t) => Self::Telemetry(t),
            JsonUplink::Ack(a) => Self::Ack(a),
            JsonUplink::Error(e) => Self::Error(e),
        }
    }
}

/// How long a session may stay silent before it ends: the module's liveness timeout, but
/// never less than [`liveness::INTERVAL_MULTIPLIER`] of its heartbeat intervals (PROTOCOL.md
/// §4.2: a hub-wide `--heartbeat-timeout` of 15 s must not end, every minute, the session of
/// a module that heartbeats every 60 s), plus [`SESSION_EXPIRY_GRACE`].
pub fn session_expiry(
    own_timeout: Option<Duration>,
    hub_timeout: Option<Duration>,
    heartbeat: Duration,
) -> Duration {
    liveness::timeout(own_timeout, hub_timeout, Some(heartbeat))
        .max(heartbeat * liveness::INTERVAL_MULTIPLIER)
        + SESSION_EXPIRY_GRACE
}

/// An accepted module at one address.
struct Session {
    module: ModuleId,
    /// Its firmware version (from the hello), for the hello the tracker is told on an acked
    /// heartbeat interval change.
    fw: FirmwareVersion,
    /// Its hub-wide session number.
    number: u64,
    /// The hello's reading names: telemetry names readings by index into them (`None` on a
    /// JSON-lines port, where telemetry names them itself).
    schema: Option<Vec<ReadingName>>,
    /// Cancelled by the registry (disabled, removed) or by another link taking over.
    token: CancellationToken,
    /// When the last frame from this address arrived.
    last_heard: Instant,
    /// The same, with the module's heartbeat interval, shared with its route: a hello on
    /// another port may take over a session that went quiet.
    presence: Presence,
    /// The module's own liveness timeout from the registry, if set (for [`session_expiry`]
    /// when the heartbeat interval changes).
    own_timeout: Option<Duration>,
    /// Silence longer than this ends the session ([`session_expiry`]).
    expires_after: Duration,
    /// What the tracker is told once the module shows that it got the `Accept` (its first
    /// heartbeat, telemetry or ack); `None` once told (the session is confirmed).
    unconfirmed: Option<Announcement>,
    /// The command in flight first, then those waiting for it.
    commands: VecDeque<PendingCommand>,
}

/// A session's `Connected` and `Hello` for the tracker, held back until the link is known
/// to work both ways.
struct Announcement {
    record: ModuleRecord,
    hello: Hello,
}

struct PendingCommand {
    command: Command,
    reply: oneshot::Sender<Result<CommandResult, CommandFailure>>,
    /// Times sent so far.
    attempts: u32,
    /// When to send again (or give up); `None` while waiting behind another command.
    resend_at: Option<Instant>,
}

/// At most `max` events per second.
#[derive(Debug)]
struct RateLimit {
    max: u32,
    window_start: Option<Instant>,
    used: u32,
}

impl RateLimit {
    fn per_second(max: u32) -> Self {
        Self {
            max,
            window_start: None,
            used: 0,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            self.window_start = Some(now);
            self.used = 0;
        }
        let allowed = self.used < self.max;
        self.used += u32::from(allowed);
        allowed
    }
}

/// Says when a `warn` is due; counts what was only logged at `debug` in between.
#[derive(Debug, Default)]
struct WarnThrottle {
    last: Option<Instant>,
    quiet: u64,
}

impl WarnThrottle {
    /// `Some(n)` when this one should be a warning (`n` went to debug since the last one).
    fn warn_now(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_INTERVAL)
        {
            self.quiet += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.quiet))
    }
}

/// The link sessions of one port and what to send back; see the module docs.
pub struct LinkSessions {
    /// The port's path as configured (logs, pending modules, routes).
    port: Arc<str>,
    ctx: SerialContext,
    counters: Arc<SerialPortMetrics>,
    /// The port task's request queue, handed out in routes (commands come back through it).
    requests: tokio::sync::mpsc::Sender<PortRequest>,
    sessions: HashMap<u8, Session>,
    /// When each address was last told to say hello.
    handshake_refused_at: HashMap<u8, Instant>,
    error_replies: RateLimit,
    refusals: RateLimit,
    /// Where error replies go: the address of the last frame that decoded (0 at first).
    last_good_address: u8,
    /// Frames to send, in order.
    outbox: Vec<(u8, Downlink)>,
    /// One future per session, ready with (address, session) when its token is cancelled.
    closes: FuturesUnordered<BoxFuture<'static, (u8, u64)>>,
    bad_input_warnings: WarnThrottle,
    peer_error_warnings: WarnThrottle,
}

impl LinkSessions {
    /// No sessions yet on `port`.
    pub fn new(
        port: Arc<str>,
        ctx: SerialContext,
        counters: Arc<SerialPortMetrics>,
        requests: tokio::sync::mpsc::Sender<PortRequest>,
    ) -> Self {
        Self {
            port,
            ctx,
            counters,
            requests,
            sessions: HashMap::new(),
            handshake_refused_at: HashMap::new(),
            error_replies: RateLimit::per_second(MAX_ERROR_REPLIES_PER_SECOND),
            refusals: RateLimit::per_second(MAX_REFUSALS_PER_SECOND),
            last_good_address: 0,
            outbox: Vec::new(),
            closes: FuturesUnordered::new(),
            bad_input_warnings: WarnThrottle::default(),
            peer_error_warnings: WarnThrottle::default(),
        }
    }

    /// The frames to send now, in order (the outbox is emptied).
    pub fn take_outbox(&mut self) -> Vec<(u8, Downlink)> {
        std::mem::take(&mut self.outbox)
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The port's counters.
    pub fn counters(&self) -> &Arc<SerialPortMetrics> {
        &self.counters
    }

    /// The port was (re)opened: no module on it has a session, and the one at address 0 is
    /// told so at once, so that a module with a long heartbeat interval says hello now
    /// rather than at its next frame (the firmware answers with an immediate hello).
    pub fn port_opened(&mut self) {
        self.outbox.push((
            ADDRESS_POINT_TO_POINT,
            Downlink::Refuse(RefuseReason::HandshakeRequired),
        ));
    }

    /// Handles one frame as the accumulator cut it: decoded, or why not.
    pub async fn on_frame(&mut self, frame: Result<(u8, Inbound), FrameError>) {
        let now = Instant::now();
        let (address, message) = match frame {
            Ok(decoded) => decoded,
            Err(error) => {
                self.counters.frame_errors.inc();
                let reply = reply_to_bad_frame(&error);
                self.bad_input(error.reason(), reply, &error, now);
                return;
            }
        };
        self.counters.frames_in.inc();
        if address > ADDRESS_MAX {
            // Broadcast and reserved addresses are the hub's, never a sender's.
            let reply = Downlink::Error(LinkError::Malformed);
            self.bad_input(
                "link_address",
                reply,
                &format_args!("address {address}"),
                now,
            );
            return;
        }
        self.last_good_address = address;
        match message {
            Inbound::Hello(hello) => self.hello(address, hello, now).await,
            Inbound::Heartbeat(heartbeat) => match self.heard(address, now).await {
                Some(module) => {
                    self.forward(ModuleEvent::Heartbeat(module, heartbeat))
                        .await
                }
                None => self.handshake_required(address, now),
            },
            Inbound::TelemetryByIndex(telemetry) => {
                let Some(module) = self.heard(address, now).await else {
                    return self.handshake_required(address, now);
                };
                let named = match self.sessions.get(&address).and_then(|s| s.schema.as_ref()) {
                    Some(schema) => telemetry.to_telemetry(schema),
                    None => Err(ProtocolError::Malformed),
                };
                match named {
                    Ok(t) => {
                        self.forward(ModuleEvent::Telemetry(module, Box::new(t)))
                            .await;
                    }
                    Err(e) => {
                        let reply = Downlink::Error(LinkError::Malformed);
                        self.bad_input(e.reason(), reply, &e, now);
                    }
                }
            }
            Inbound::Telemetry(telemetry) => match self.heard(address, now).await {
                Some(module) => {
                    self.forward(ModuleEvent::Telemetry(module, telemetry))
                        .await
                }
                None => self.handshake_required(address, now),
            },
            Inbound::Ack(ack) => match self.heard(address, now).await {
                Some(module) => {
                    if let Some(hello) = self.ack(address, ack, now) {
                        self.forward(ModuleEvent::Hello(module, hello, Encoding::Native))
                            .await;
                    }
                }
                None => self.handshake_required(address, now),
            },
            Inbound::Error(code) => {
                self.counters.peer_error(code);
                let code = code.reason();
                match self.peer_error_warnings.warn_now(now) {
                    Some(quiet) => {
                        tracing::warn!(port = %self.port, address, code, earlier_reports = quiet, "module reports a bad frame from the hub")
                    }
                    None => {
                        tracing::debug!(port = %self.port, address, code, "module reports a bad frame from the hub")
                    }
                }
            }
        }
    }

    /// Handles a request from elsewhere in the hub.
    pub fn on_request(&mut self, request: PortRequest) {
        let now = Instant::now();
        match request {
            PortRequest::Command {
                address,
                session,
                command,
                reply,
            } => {
                let Some(s) = self
                    .sessions
                    .get_mut(&address)
                    .filter(|s| s.number == session)
                else {
                    let _ = reply.send(Err(CommandFailure::SessionEnded));
                    return;
                };
                if s.commands.len() >= MAX_QUEUED_COMMANDS {
                    let _ = reply.send(Err(CommandFailure::Busy));
                    return;
                }
                s.commands.push_back(PendingCommand {
                    command,
                    reply,
                    attempts: 0,
                    resend_at: None,
                });
                if s.commands.len() == 1 {
                    self.transmit_command(address, now);
                }
            }
        }
    }

    /// Ready with (address, session) when the registry closes a session; pending while none
    /// is open.
    pub async fn next_close(&mut self) -> (u8, u64) {
        match self.closes.next().await {
            Some(closed) => closed,
            None => std::future::pending().await,
        }
    }

    /// The registry (or another link taking over) closed session `number` at `address`: it
    /// ends, and the module is told why.
    pub async fn on_closed(&mut self, address: u8, number: u64) {
        if self
            .sessions
            .get(&address)
            .is_none_or(|s| s.number != number)
        {
            return; // ended already (its token is cancelled when a session ends)
        }
        let Some(session) = self.sessions.remove(&address) else {
            return;
        };
        let reason = match self.ctx.store.module(&session.module).await {
            Ok(None) => RefuseReason::UnknownModule,
            Ok(Some(record)) if record.disabled => RefuseReason::Disabled,
            // Still registered and enabled: another link took the module over.
            Ok(Some(_)) => RefuseReason::Duplicate,
            // Unknown why: it says hello again and is judged then.
            Err(_) => RefuseReason::HandshakeRequired,
        };
        tracing::info!(port = %self.port, address, module = %session.module, session = number, ?reason, "serial link session closed by the hub");
        self.finish(address, session, Some(reason)).await;
    }

    /// When [`on_timer`](Self::on_timer) has something to do next.
    pub fn next_timer(&self) -> Option<Instant> {
        self.sessions
            .values()
            .flat_map(|s| {
                let resend = s.commands.front().and_then(|c| c.resend_at);
                [Some(s.last_heard + s.expires_after), resend]
            })
            .flatten()
            .min()
    }

    /// Sleeps until [`next_timer`](Self::next_timer) (forever if there is nothing to time).
    pub async fn timer(at: Option<Instant>) {
        match at {
            Some(at) => sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Sends unacknowledged commands again (or gives up on them), ends silent sessions.
    pub async fn on_timer(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for (&address, s) in &self.sessions {
            if now >= s.last_heard + s.expires_after {
                expired.push(address);
            } else if s
                .commands
                .front()
                .and_then(|c| c.resend_at)
                .is_some_and(|at| at <= now)
            {
                due.push(address);
            }
        }
        for address in due {
            let Some(s) = self.sessions.get_mut(&address) else {
                continue;
            };
            let Some(head) = s.commands.front() else {
                continue;
            };
            if head.attempts < COMMAND_ATTEMPTS {
                tracing::debug!(port = %self.port, module = %s.module, id = head.command.id, attempt = head.attempts + 1, "no ack yet: sending the command again");
                self.transmit_command(address, now);
                continue;
            }
            if let Some(given_up) = s.commands.pop_front() {
                tracing::warn!(port = %self.port, module = %s.module, id = given_up.command.id, attempts = given_up.attempts, "command not acknowledged");
                let _ = given_up
                    .reply
                    .send(Err(CommandFailure::NoAck(given_up.attempts)));
            }
            if !s.commands.is_empty() {
                self.transmit_command(address, now);
            }
        }
        for address in expired {
            if let Some(session) = self.sessions.remove(&address) {
                tracing::info!(port = %self.port, address, module = %session.module, silent_for = ?session.expires_after, "serial module silent: link session ended");
                self.finish(address, session, None).await;
            }
        }
    }

    /// The port is gone: every session ends (the modules go offline now) and the module must
    /// say hello again once the port is back.
    pub async fn port_lost(&mut self) {
        let sessions: Vec<_> = self.sessions.drain().collect();
        for (address, session) in sessions {
            tracing::info!(port = %self.port, address, module = %session.module, "serial port lost: link session ended");
            self.finish(address, session, None).await;
        }
        self.handshake_refused_at.clear();
        // Nothing can be written to a lost port.
        self.outbox.clear();
    }

    async fn hello(&mut self, address: u8, hello: InboundHello, now: Instant) {
        // The decoders report another version as `FrameError::VersionMismatch` already; this
        // guards the hellos that reach the hub some other way.
        if hello.protocol != LINK_VERSION {
            self.end_session(address).await;
            let reply = Downlink::Error(LinkError::VersionMismatch {
                supported: LINK_VERSION,
            });
            let detail = format_args!("module speaks link protocol {}", hello.protocol);
            self.bad_input("version_mismatch", reply, &detail, now);
            return;
        }
        let id = hello.module.clone();
        let record = match self.ctx.store.module(&id).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                self.end_session(address).await;
                if self.refuse(address, RefuseReason::UnknownModule, &id, now) {
                    let pending_address = format!("serial:{}", self.port);
                    if let Err(e) = self.ctx.store.record_pending(&id, &pending_address).await {
                        tracing::warn!(error = %e, "could not record a pending module");
                    }
                }
                return;
            }
            Err(e) => {
                // The module says hello again; nothing is decided now.
                tracing::error!(error = %e, module = %id, "registry lookup failed");
                return;
            }
        };
        if record.disabled {
            self.end_session(address).await;
            self.refuse(address, RefuseReason::Disabled, &id, now);
            return;
        }
        let number = self.ctx.connections.next_session();
        let heartbeat = Duration::from_millis(u64::from(hello.heartbeat_ms));
        let presence = Presence::new(now, heartbeat);
        let route = Link::Serial(SerialRoute {
            port: self.port.clone(),
            address,
            requests: self.requests.clone(),
            presence: presence.clone(),
        });
        let token = match self.ctx.connections.claim(&id, number, route) {
            Ok(token) => token,
            Err(carried_by) => {
                self.end_session(address).await;
                tracing::warn!(port = %self.port, address, module = %id, ?carried_by, "module already connected over another link");
                self.refuse(address, RefuseReason::Duplicate, &id, now);
                return;
            }
        };
        let own_timeout = record.heartbeat_timeout_ms.map(Duration::from_millis);
        let expires_after = session_expiry(own_timeout, self.ctx.heartbeat_timeout, heartbeat);
        // The same module starting over at the same address (a hello announcing a new
        // interval, a reboot): what it was doing carries over.
        let mut replaced = self.sessions.remove(&address);
        let mut commands = VecDeque::new();
        let mut rebooted = None;
        let mut confirmed = false;
        if let Some(old) = replaced.as_mut().filter(|old| old.module == id) {
            confirmed = old.unconfirmed.is_none();
            commands = std::mem::take(&mut old.commands);
            let reboot_in_flight = commands.front().is_some_and(|c| {
                c.resend_at.is_some() && matches!(c.command.action, CommandAction::Reboot)
            });
            if reboot_in_flight {
                rebooted = commands.pop_front();
            }
        }
        let fw = hello.fw.clone();
        let announcement = Announcement {
            record,
            hello: Hello {
                fw: hello.fw,
                heartbeat_ms: hello.heartbeat_ms,
            },
        };
        let watched = token.clone();
        self.closes.push(
            async move {
                watched.cancelled_owned().await;
                (address, number)
            }
            .boxed(),
        );
        self.sessions.insert(
            address,
            Session {
                module: id.clone(),
                fw,
                number,
                schema: hello.readings,
                token,
                last_heard: now,
                presence,
                own_timeout,
                expires_after,
                unconfirmed: Some(announcement),
                commands,
            },
        );
        self.handshake_refused_at.remove(&address);
        self.outbox.push((
            address,
            Downlink::Accept(Accept {
                protocol: LINK_VERSION,
                heartbeat_ms: hello.heartbeat_ms,
                telemetry_ms: hello.telemetry_ms,
            }),
        ));
        tracing::info!(port = %self.port, address, module = %id, session = number, "serial module accepted");
        if confirmed {
            // Re-announced on a link known to work: no need to wait (and no offline flap).
            self.confirm(address).await;
        }
        if let Some(done) = rebooted {
            // It rebooted (its ack may have been lost on the way): that was the command.
            tracing::info!(port = %self.port, module = %id, id = done.command.id, "reboot acknowledged by the module's new hello");
            let _ = done.reply.send(Ok(CommandResult::Done));
            self.transmit_command(address, now);
        }
        // After the new session: for the tracker the old one's end is stale (no offline flap).
        if let Some(old) = replaced {
            self.finish(address, old, None).await;
        }
    }

    /// Resolves the command in flight; returns the hello the tracker must hear when the
    /// command changed the heartbeat interval.
    fn ack(&mut self, address: u8, ack: Ack, now: Instant) -> Option<Hello> {
        let s = self.sessions.get_mut(&address)?;
        if s.commands
            .front()
            .is_none_or(|c| c.command.id != ack.command)
        {
            // A late ack of a command given up on, or of a repeat already answered.
            tracing::debug!(port = %self.port, module = %s.module, id = ack.command, "ack for no command in flight");
            return None;
        }
        let mut announce = None;
        if let Some(done) = s.commands.pop_front() {
            tracing::info!(port = %self.port, module = %s.module, id = ack.command, result = ?ack.result, "command acknowledged");
            if let (CommandAction::SetHeartbeatInterval { ms }, CommandResult::Done) =
                (&done.command.action, ack.result)
            {
                // The module heartbeats at the new interval from now on; its hello announcing
                // it may be lost, so the session does not wait for it.
                let heartbeat = Duration::from_millis(u64::from(*ms));
                s.expires_after =
                    session_expiry(s.own_timeout, self.ctx.heartbeat_timeout, heartbeat);
                s.presence.set_heartbeat(heartbeat);
                // The tracker's liveness timeout too: as if the announcing hello had arrived.
                announce = Some(Hello {
                    fw: s.fw.clone(),
                    heartbeat_ms: *ms,
                });
            }
            let _ = done.reply.send(Ok(ack.result));
        }
        if !s.commands.is_empty() {
            self.transmit_command(address, now);
        }
        announce
    }

    /// Sends the command at the head of `address`'s queue (again).
    fn transmit_command(&mut self, address: u8, now: Instant) {
        let Some(head) = self
            .sessions
            .get_mut(&address)
            .and_then(|s| s.commands.front_mut())
        else {
            return;
        };
        head.attempts += 1;
        head.resend_at = Some(now + ACK_TIMEOUT);
        self.outbox
            .push((address, Downlink::Command(head.command.clone())));
    }

    /// The module at `address` sent a heartbeat, telemetry or an ack: its id, if it has a
    /// session, which that confirms.
    async fn heard(&mut self, address: u8, now: Instant) -> Option<ModuleId> {
        let session = self.sessions.get_mut(&address)?;
        session.last_heard = now;
        session.presence.heard(now);
        let module = session.module.clone();
        self.confirm(address).await;
        Some(module)
    }

    /// The session at `address` works both ways: the tracker hears of it now (once).
    async fn confirm(&mut self, address: u8) {
        let Some(session) = self.sessions.get_mut(&address) else {
            return;
        };
        let Some(Announcement { record, hello }) = session.unconfirmed.take() else {
            return;
        };
        let (module, number) = (session.module.clone(), session.number);
        tracing::debug!(port = %self.port, address, %module, session = number, "serial link works both ways");
        let _ = self
            .ctx
            .events
            .send(ModuleEvent::Connected {
                record,
                session: number,
                transport: Transport::Serial,
            })
            .await;
        self.forward(ModuleEvent::Hello(module, hello, Encoding::Native))
            .await;
    }

    async fn forward(&mut self, event: ModuleEvent) {
        if let ModuleEvent::Heartbeat(module, _) | ModuleEvent::Telemetry(module, _) = &event
            && let Admission::Limited { first } = self.ctx.limiter.admit(module, Instant::now())
        {
            self.ctx.metrics.reject("rate_limited");
            if first {
                tracing::warn!(port = %self.port, module = %module, "module over its rate limit: dropping its messages (counted as rate_limited)");
            }
            return;
        }
        self.ctx.metrics.messages_ingested.inc();
        self.ctx.metrics.serial_messages_ingested.inc();
        // Fails only when the tracker is gone, i.e. the hub is stopping.
        let _ = self.ctx.events.send(event).await;
    }

    /// Traffic without a session: counted, and the module is told to say hello (at most once
    /// per [`HANDSHAKE_REFUSAL_INTERVAL`] per address).
    fn handshake_required(&mut self, address: u8, now: Instant) {
        self.ctx.metrics.reject("handshake_required");
        let due = self
            .handshake_refused_at
            .get(&address)
            .is_none_or(|at| now.duration_since(*at) >= HANDSHAKE_REFUSAL_INTERVAL);
        if due {
            self.handshake_refused_at.insert(address, now);
            tracing::debug!(port = %self.port, address, "traffic without a handshake");
            self.outbox
                .push((address, Downlink::Refuse(RefuseReason::HandshakeRequired)));
        }
    }

    /// Refuses a hello (counted, rate-limited per port); true if the refusal is sent.
    fn refuse(
        &mut self,
        address: u8,
        reason: RefuseReason,
        module: &ModuleId,
        now: Instant,
    ) -> bool {
        self.ctx.metrics.reject(match reason {
            RefuseReason::UnknownModule => "unknown_module",
            RefuseReason::Disabled => "module_disabled",
            RefuseReason::HandshakeRequired => "handshake_required",
            RefuseReason::InvalidHello => "invalid_hello",
            RefuseReason::Duplicate => "duplicate_link",
        });
        if !self.refusals.allow(now) {
            return false;
        }
        tracing::info!(port = %self.port, address, %module, ?reason, "serial module refused");
        self.outbox.push((address, Downlink::Refuse(reason)));
        true
    }

    /// Bad input: counted by `reason`, logged without flooding, answered with `reply` to the
    /// last good address unless the port's error replies are used up.
    fn bad_input(
        &mut self,
        reason: &'static str,
        reply: Downlink,
        detail: &dyn Display,
        now: Instant,
    ) {
        self.ctx.metrics.reject(reason);
        match self.bad_input_warnings.warn_now(now) {
            Some(quiet) => {
                tracing::warn!(port = %self.port, reason, %detail, earlier_reports = quiet, "bad frame on serial port (more within 10 s at debug level)")
            }
            None => tracing::debug!(port = %self.port, reason, %detail, "bad frame on serial port"),
        }
        if self.error_replies.allow(now) {
            self.outbox.push((self.last_good_address, reply));
        } else {
            self.counters.error_replies_suppressed.inc();
        }
    }

    /// Ends the session at `address`, if any (the module there started over).
    async fn end_session(&mut self, address: u8) {
        if let Some(session) = self.sessions.remove(&address) {
            self.finish(address, session, None).await;
        }
    }

    /// The end of a session already taken out of the map: deregistered, its commands failed,
    /// the module told why (if `refusal`), the tracker told (an unclean end: offline now) if
    /// it ever heard of the session.
    async fn finish(&mut self, address: u8, session: Session, refusal: Option<RefuseReason>) {
        self.ctx.connections.remove(&session.module, session.number);
        session.token.cancel();
        for pending in session.commands {
            let _ = pending.reply.send(Err(CommandFailure::SessionEnded));
        }
        if let Some(reason) = refusal {
            self.outbox.push((address, Downlink::Refuse(reason)));
        }
        if session.unconfirmed.is_some() {
            return;
        }
        let _ = self
            .ctx
            .events
            .send(ModuleEvent::Disconnected {
                module: session.module,
                session: session.number,
                clean: false,
            })
            .await;
    }
}

/// What a bad frame is answered with (PROTOCOL.md §4.1, §4.5): a hello the module must change
/// is refused (`InvalidHello`: it does not decode, or breaks a rule), a hello in another
/// version learns which one the hub speaks, and anything else gets its link error, which
/// never ends a session: a bad telemetry line (a NaN, a duplicate reading name) is not a
/// reason for a working module to start over.
fn reply_to_bad_frame(error: &FrameError) -> Downlink {
    match error {
        FrameError::InvalidHello(_) => Downlink::Refuse(RefuseReason::InvalidHello),
        FrameError::VersionMismatch { .. } => Downlink::Error(LinkError::VersionMismatch {
            supported: LINK_VERSION,
        }),
        other => Downlink::Error(other.link_error()),
    }
}

#[cfg(test)]
mod tests {
    use mc_protocol::{
        CommandAction, FirmwareVersion, Heartbeat,
        link::{LinkHello, LinkTelemetry},
    };
    use tokio::sync::mpsc;

    use super::*;
    use crate::{
        connections::{LiveConnections, Transport},
        metrics::Metrics,
        store::{ModulePatch, NewModule, Store},
    };

    /// One port's sessions over a real (temporary) registry.
    struct Harness {
        link: LinkSessions,
        events: mpsc::Receiver<ModuleEvent>,
        _requests: mpsc::Receiver<PortRequest>,
        store: Store,
        metrics: Metrics,
        connections: LiveConnections,
        _dir: tempfile::TempDir,
    }

    async fn harness(modules: &[&str]) -> Harness {
        harness_with(modules, None).await
    }

    /// With the hub's `--heartbeat-timeout`.
    async fn harness_with(modules: &[&str], heartbeat_timeout: Option<Duration>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(3600))
            .await
            .unwrap();
        for id in modules {
            store
                .create_module(NewModule {
                    id: ModuleId::new(id).unwrap(),
                    name: id.to_string(),
                    kind: "test".into(),
                    owner_email: None,
                    heartbeat_timeout: None,
                })
                .await
                .unwrap();
        }
        let metrics = Metrics::default();
        let connections = LiveConnections::default();
        let (events_tx, events) = mpsc::channel(64);
        let ctx = SerialContext {
            store: store.clone(),
            events: events_tx,
            metrics: metrics.clone(),
            connections: connections.clone(),
            heartbeat_timeout,
            limiter: Default::default(),
        };
        Harness {
            link: on_port("/dev/ttyA", &ctx).0,
            _requests: on_port("/dev/unused", &ctx).1,
            events,
            store,
            metrics,
            connections,
            _dir: dir,
        }
    }

    fn on_port(port: &str, ctx: &SerialContext) -> (LinkSessions, mpsc::Receiver<PortRequest>) {
        let (tx, rx) = mpsc::channel(8);
        let counters = ctx.metrics.serial_port(port);
        (
            LinkSessions::new(port.into(), ctx.clone(), counters, tx),
            rx,
        )
    }

    fn hello(id: &str) -> Uplink {
        let mut readings = heapless::Vec::new();
        for name in ["temperature", "battery"] {
            readings.push(ReadingName::new(name).unwrap()).unwrap();
        }
        Uplink::Hello(LinkHello {
            protocol: LINK_VERSION,
            module: ModuleId::new(id).unwrap(),
            fw: FirmwareVersion::new("1.2.3").unwrap(),
            heartbeat_ms: 60_000,
            telemetry_ms: 1_000,
            readings,
        })
    }

    fn telemetry(seq: u32, mask: u32, values: &[f32]) -> Uplink {
        Uplink::Telemetry(LinkTelemetry {
            seq,
            mask,
            values: heapless::Vec::from_slice(values).unwrap(),
        })
    }

    fn heartbeat() -> Uplink {
        Uplink::Heartbeat(Heartbeat {
            seq: 1,
            uptime_ms: 10,
        })
    }

    fn accept() -> Downlink {
        Downlink::Accept(Accept {
            protocol: LINK_VERSION,
            heartbeat_ms: 60_000,
            telemetry_ms: 1_000,
        })
    }

    fn drain(events: &mut mpsc::Receiver<ModuleEvent>) -> Vec<ModuleEvent> {
        std::iter::from_fn(|| events.try_recv().ok()).collect()
    }

    fn hello_every(id: &str, heartbeat_ms: u32) -> Uplink {
        let Uplink::Hello(mut hello) = hello(id) else {
            unreachable!()
        };
        hello.heartbeat_ms = heartbeat_ms;
        Uplink::Hello(hello)
    }

    fn ack(id: u32, result: CommandResult) -> Uplink {
        Uplink::Ack(Ack {
            command: id,
            result,
        })
    }

    /// A command request for the session at `address`, as the command router sends it.
    fn request(
        h: &Harness,
        address: u8,
        id: u32,
        action: CommandAction,
    ) -> (
        PortRequest,
        oneshot::Receiver<Result<CommandResult, CommandFailure>>,
    ) {
        let module = ModuleId::new("MC-1").unwrap();
        let (session, _) = h.connections.link(&module).unwrap();
        let (reply, outcome) = oneshot::channel();
        let request = PortRequest::Command {
            address,
            session,
            command: Command { id, action },
            reply,
        };
        (request, outcome)
    }

    /// Handles a hello (which looks the module up in the registry) while the test's clock is
    /// paused: the registry's connection pool has timeouts of its own, which a paused clock
    /// would fire at once, so the clock runs for that moment. The instants before and after.
    async fn hello_while_paused(
        link: &mut LinkSessions,
        address: u8,
        hello: Uplink,
    ) -> (Instant, Instant) {
        tokio::time::resume();
        let before = Instant::now();
        link.on_frame(Ok((address, hello.into()))).await;
        let after = Instant::now();
        tokio::time::pause();
        (before, after)
    }

    /// Hello and first heartbeat of `MC-1` at `address`: an accepted, confirmed session.
    async fn online(h: &mut Harness, address: u8) {
        h.link.on_frame(Ok((address, hello("MC-1").into()))).await;
        h.link.on_frame(Ok((address, heartbeat().into()))).await;
        assert_eq!(h.link.take_outbox(), [(address, accept())]);
        assert_eq!(drain(&mut h.events).len(), 3, "Connected, Hello, Heartbeat");
    }

    #[tokio::test]
    async fn an_accepted_hello_opens_a_session_whose_telemetry_is_named_by_the_hello() {
        let mut h = harness(&["MC-1"]).await;
        h.link.on_frame(Ok((0, hello("MC-1").into()))).await;
        assert_eq!(h.link.take_outbox(), [(0, accept())]);
        assert!(drain(&mut h.events).is_empty(), "online once it heartbeats");
        h.link.on_frame(Ok((0, heartbeat().into()))).await;
        let events = drain(&mut h.events);
        assert!(
            matches!(&events[..], [
                ModuleEvent::Connected { record, transport: Transport::Serial, .. },
                ModuleEvent::Hello(id, hello, Encoding::Native),
                ModuleEvent::Heartbeat(..),
            ] if record.id.as_str() == "MC-1" && id.as_str() == "MC-1" && hello.heartbeat_ms == 60_000),
            "{events:?}"
        );
        let id = ModuleId::new("MC-1").unwrap();
        assert_eq!(h.connections.transport(&id), Some(Transport::Serial));

        h.link
            .on_frame(Ok((0, telemetry(1, 0b10, &[3.7]).into())))
            .await;
        let events = drain(&mut h.events);
        let [ModuleEvent::Telemetry(_, t)] = &events[..] else {
            panic!("{events:?}");
        };
        assert_eq!(t.readings.get("battery"), Some(3.7));
        assert_eq!(t.readings.len(), 1);

        // An index beyond the hello's names: an error reply, nothing for the tracker.
        h.link
            .on_frame(Ok((0, telemetry(2, 0b100, &[1.0]).into())))
            .await;
        assert_eq!(
            h.link.take_outbox(),
            [(0, Downlink::Error(LinkError::Malformed))]
        );
        assert!(drain(&mut h.events).is_empty());
        assert_eq!(h.metrics.rejected("malformed"), 1);
    }

    #[tokio::test]
    async fn a_json_lines_hello_has_no_schema_and_its_telemetry_names_readings() {
        let mut h = harness(&["MC-1"]).await;
        let hello = JsonUplink::Hello(JsonHello {
            protocol: LINK_VERSION,
            module: ModuleId::new("MC-1").unwrap(),
            fw: FirmwareVersion::new("0.1").unwrap(),
            heartbeat_ms: 60_000,
            telemetry_ms: 1_000,
        });
        h.link.on_frame(Ok((0, hello.into()))).await;
        assert_eq!(h.link.take_outbox(), [(0, accept())]);
        let mut readings = mc_protocol::Readings::new();
        readings.push("soil", 0.25).unwrap();
        let named = JsonUplink::Telemetry(Box::new(Telemetry { seq: 1, readings }));
        h.link.on_frame(Ok((0, named.into()))).await;
        let events = drain(&mut h.events);
        assert!(
            matches!(&events[..], [.., ModuleEvent::Telemetry(_, t)] if t.readings.get("soil") == Some(0.25)),
            "{events:?}"
        );
        // Telemetry by index means nothing without a reading list.
        h.link
            .on_frame(Ok((0, telemetry(2, 1, &[1.0]).into())))
            .await;
        assert_eq!(
            h.link.take_outbox(),
            [(0, Downlink::Error(LinkError::Malformed))]
        );
    }

    #[tokio::test]
    async fn unknown_disabled_and_wrong_version_hellos_are_refused() {
        let mut h = harness(&["MC-OFF"]).await;
        h.link.on_frame(Ok((0, hello("MC-NEW").into()))).await;
        assert_eq!(
            h.link.take_outbox(),
            [(0, Downlink::Refuse(RefuseReason::UnknownModule))]
        );
        let pending = h.store.pending_modules().await.unwrap();
        assert_eq!(pending[0].id, "MC-NEW");
        assert_eq!(pending[0].last_address, "serial:/dev/ttyA");

        let off = ModuleId::new("MC-OFF").unwrap();
        let patch = ModulePatch {
            disabled: Some(true),
            ..ModulePatch::default()
        };
        h.store.update_module(&off, patch).await.unwrap();
        h.link.on_frame(Ok((0, hello("MC-OFF").into()))).await;
        assert_eq!(
            h.link.take_outbox(),
            [(0, Downlink::Refuse(RefuseReason::Disabled))]
        );

        let Uplink::Hello(mut v2) = hello("MC-OFF") else {
            unreachable!()
        };
        v2.protocol = 2;
        h.link.on_frame(Ok((0, Uplink::Hello(v2).into()))).await;
        assert_eq!(
            h.link.take_outbox(),
            [(
                0,
                Downlink::Error(LinkError::VersionMismatch {
                    supported: LINK_VERSION
                })
            )]
        );
        assert!(
            drain(&mut h.events).is_empty(),
            "nothing reached the tracker"
        );
        assert_eq!(h.metrics.rejected("unknown_module"), 1);
        assert_eq!(h.metrics.rejected("module_disabled"), 1);
        assert_eq!(h.metrics.rejected("version_mismatch"), 1);
    }

    #[tokio::test]
    async fn traffic_without_a_handshake_is_refused_at_most_once_per_second() {
        let mut h = harness(&["MC-1"]).await;
        for _ in 0..3 {
            h.link.on_frame(Ok((7, heartbeat().into()))).await;
        }
        h.link
            .on_frame(Ok((0, telemetry(1, 1, &[1.0]).into())))
            .await;
        assert_eq!(
            h.link.take_outbox(),
            [
                (7, Downlink::Refuse(RefuseReason::HandshakeRequired)),
                (0, Downlink::Refuse(RefuseReason::HandshakeRequired)),
            ]
        );
        assert_eq!(h.metrics.rejected("handshake_required"), 4);
        assert!(drain(&mut h.events).is_empty());
    }

    #[tokio::test]
    async fn a_module_live_on_another_port_is_a_duplicate_a_new_hello_a_takeover() {
        let mut h = harness(&["MC-1"]).await;
        h.link.on_frame(Ok((0, hello("MC-1").into()))).await;
        h.link.on_frame(Ok((0, heartbeat().into()))).await;
        h.link.take_outbox();
        let ctx = h.link.ctx.clone();
        let (mut other, _rx) = on_port("/dev/ttyB", &ctx);
        other.on_frame(Ok((0, hello("MC-1").into()))).await;
        assert_eq!(
            other.take_outbox(),
            [(0, Downlink::Refuse(RefuseReason::Duplicate))]
        );
        let first = drain(&mut h.events);
        let ModuleEvent::Connected { session: old, .. } = first[0] else {
            panic!("{first:?}");
        };

        // Same port and address, a confirmed session: a new session at once, and the old
        // one's end comes after it (stale): no offline flap.
        h.link.on_frame(Ok((0, hello("MC-1").into()))).await;
        assert_eq!(h.link.take_outbox(), [(0, accept())]);
        let events = drain(&mut h.events);
        assert!(
            matches!(&events[..], [
                ModuleEvent::Connected { session: new, .. },
                ModuleEvent::Hello(..),
                ModuleEvent::Disconnected { session: ended, clean: false, .. },
            ] if *new > old && *ended == old),
            "{events:?}"
        );
        assert_eq!(h.link.session_count(), 1);
    }

    #[tokio::test]
    async fn the_registry_closes_a_session_and_the_module_is_told_why() {
        let mut h = harness(&["MC-1"]).await;
        online(&mut h, 0).await;
        let id = ModuleId::new("MC-1").unwrap();
        assert!(
            !h.connections.close_token_authenticated(&id),
            "rotation keeps it"
        );
        let patch = ModulePatch {
            disabled: Some(true),
            ..ModulePatch::default()
        };
        h.store.update_module(&id, patch).await.unwrap();
        assert!(h.connections.close(&id));
        let (address, session) = h.link.next_close().await;
        h.link.on_closed(address, session).await;
        assert_eq!(
            h.link.take_outbox(),
            [(0, Downlink::Refuse(RefuseReason::Disabled))]
        );
        assert!(matches!(
            &drain(&mut h.events)[..],
            [ModuleEvent::Disconnected { clean: false, .. }]
        ));
        h.link.on_frame(Ok((0, heartbeat().into()))).await;
        assert_eq!(
            h.link.take_outbox(),
            [(0, Downlink::Refuse(RefuseReason::HandshakeRequired))]
        );
    }

    #[tokio::test]
    async fn commands_are_sent_again_with_the_same_id_until_acknowledged() {
        let mut h = harness(&["MC-1"]).await;
        h.link.on_frame(Ok((3, hello("MC-1").into()))).await;
        h.link.take_outbox();
        let id = ModuleId::new("MC-1").unwrap();
        let (session, _) = h.connections.link(&id).unwrap();
        tokio::time::pause();
        let command = |id| Command {
            id,
            action: CommandAction::ResendState,
        };
        let request = |id| {
            let (reply, outcome) = oneshot::channel();
            let request = PortRequest::Command {
                address: 3,
                session,
                command: command(id),
                reply,
            };
            (request, outcome)
        };

        // Acknowledged at the second attempt.
        let (first, first_outcome) = request(41);
        let (second, mut second_outcome) = request(42);
        h.link.on_request(first);
        h.link.on_request(second);
        assert_eq!(
            h.link.take_outbox(),
            [(3, Downlink::Command(command(41)))],
            "one command in flight at a time"
        );
        tokio::time::advance(ACK_TIMEOUT).await;
        h.link.on_timer().await;
        assert_eq!(h.link.take_outbox(), [(3, Downlink::Command(command(41)))]);
        let ack = |id| {
            Uplink::Ack(Ack {
                command: id,
                result: CommandResult::Done,
            })
        };
        h.link.on_frame(Ok((3, ack(41).into()))).await;
        assert_eq!(first_outcome.await.unwrap(), Ok(CommandResult::Done));
        assert_eq!(h.link.take_outbox(), [(3, Downlink::Command(command(42)))]);

        // Never acknowledged: three attempts, then given up.
        for _ in 0..2 {
            tokio::time::advance(ACK_TIMEOUT).await;
            h.link.on_timer().await;
            assert_eq!(h.link.take_outbox(), [(3, Downlink::Command(command(42)))]);
        }
        assert!(second_outcome.try_recv().is_err(), "still waiting");
        tokio::time::advance(ACK_TIMEOUT).await;
        h.link.on_timer().await;
        assert!(h.link.take_outbox().is_empty());
        assert_eq!(second_outcome.await.unwrap(), Err(CommandFailure::NoAck(3)));
        // A late ack is ignored.
        h.link.on_frame(Ok((3, ack(42).into()))).await;
        assert!(h.link.take_outbox().is_empty());
    }

    #[tokio::test]
    async fn bad_frames_are_counted_and_answered_at_most_ten_times_a_second() {
        let mut h = harness(&["MC-1"]).await;
        h.link.on_frame(Ok((5, heartbeat().into()))).await; // last good address: 5
        h.link.take_outbox();
        for _ in 0..25 {
            h.link.on_frame(Err(FrameError::Crc)).await;
        }
        let replies = h.link.take_outbox();
        assert_eq!(replies.len(), MAX_ERROR_REPLIES_PER_SECOND as usize);
        assert!(
            replies
                .iter()
                .all(|r| *r == (5, Downlink::Error(LinkError::CrcMismatch)))
        );
        let counters = h.metrics.serial_port("/dev/ttyA");
        assert_eq!(counters.frame_errors.get(), 25);
        assert_eq!(counters.error_replies_suppressed.get(), 15);
        assert_eq!(h.metrics.rejected("crc_mismatch"), 25);
    }

    #[tokio::test]
    async fn a_lost_port_ends_every_session_unclean() {
        let mut h = harness(&["MC-1"]).await;
        online(&mut h, 0).await;
        h.link.port_lost().await;
        assert!(matches!(
            &drain(&mut h.events)[..],
            [ModuleEvent::Disconnected { clean: false, .. }]
        ));
        assert!(h.link.take_outbox().is_empty());
        assert!(
            h.connections
                .link(&ModuleId::new("MC-1").unwrap())
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_tracker_hears_of_a_session_only_once_the_link_works_both_ways() {
        let mut h = harness(&["MC-1"]).await;
        let id = ModuleId::new("MC-1").unwrap();
        // The hub's transmit line is broken: the module never gets the Accept and keeps
        // saying hello. Nothing reaches the tracker, so nothing flaps.
        for _ in 0..3 {
            h.link.on_frame(Ok((0, hello("MC-1").into()))).await;
            assert_eq!(h.link.take_outbox(), [(0, accept())]);
        }
        assert!(drain(&mut h.events).is_empty());
        assert_eq!(h.link.session_count(), 1);
        // Its session still ends like any other, without a word to the tracker.
        h.link.port_lost().await;
        assert!(drain(&mut h.events).is_empty());
        assert!(h.connections.link(&id).is_none());

        // Line repaired: the heartbeat that follows the Accept brings it online, with the
        // session and the hello of the accepted handshake.
        h.link.on_frame(Ok((0, hello("MC-1").into()))).await;
        let (session, _) = h.connections.link(&id).unwrap();
        h.link.on_frame(Ok((0, heartbeat().into()))).await;
        let events = drain(&mut h.events);
        assert!(
            matches!(&events[..], [
                ModuleEvent::Connected { session: s, transport: Transport::Serial, .. },
                ModuleEvent::Hello(..),
                ModuleEvent::Heartbeat(..),
            ] if *s == session),
            "{events:?}"
        );
        h.link.on_frame(Ok((0, heartbeat().into()))).await;
        assert!(matches!(
            &drain(&mut h.events)[..],
            [ModuleEvent::Heartbeat(..)]
        ));

        // Telemetry (or an ack) confirms as well.
        h.link.port_lost().await;
        drain(&mut h.events);
        h.link.on_frame(Ok((0, hello("MC-1").into()))).await;
        h.link
            .on_frame(Ok((0, telemetry(1, 0b01, &[20.0]).into())))
            .await;
        assert!(matches!(
            &drain(&mut h.events)[..],
            [
                ModuleEvent::Connected { .. },
                ModuleEvent::Hello(..),
                ModuleEvent::Telemetry(..)
            ]
        ));
    }

    #[tokio::test]
    async fn a_re_hello_of_the_same_module_keeps_its_commands() {
        let mut h = harness(&["MC-1"]).await;
        online(&mut h, 0).await;
        let interval = CommandAction::SetHeartbeatInterval { ms: 1_000 };
        let (first, first_outcome) = request(&h, 0, 100, interval.clone());
        let (second, second_outcome) = request(&h, 0, 101, CommandAction::ResendState);
        h.link.on_request(first);
        h.link.on_request(second);
        let command = |id, action| Downlink::Command(Command { id, action });
        assert_eq!(h.link.take_outbox(), [(0, command(100, interval))]);

        // The module acknowledges the new interval and announces it with a hello, in one
        // read: 101 goes down the line, then the Accept of the new session.
        h.link
            .on_frame(Ok((0, ack(100, CommandResult::Done).into())))
            .await;
        h.link
            .on_frame(Ok((0, hello_every("MC-1", 1_000).into())))
            .await;
        assert_eq!(first_outcome.await.unwrap(), Ok(CommandResult::Done));
        let outbox = h.link.take_outbox();
        assert!(
            matches!(
                &outbox[..],
                [
                    (0, Downlink::Command(Command { id: 101, .. })),
                    (
                        0,
                        Downlink::Accept(Accept {
                            heartbeat_ms: 1_000,
                            ..
                        })
                    ),
                ]
            ),
            "{outbox:?}"
        );
        // It runs 101 and acknowledges it: the caller gets the module's result.
        h.link
            .on_frame(Ok((0, ack(101, CommandResult::Done).into())))
            .await;
        assert_eq!(second_outcome.await.unwrap(), Ok(CommandResult::Done));

        // The command in flight keeps its attempts and its resend time.
        tokio::time::pause();
        let (third, third_outcome) = request(&h, 0, 102, CommandAction::ResendState);
        let sent_at = Instant::now();
        h.link.on_request(third);
        h.link.take_outbox();
        tokio::time::advance(ACK_TIMEOUT / 2).await;
        hello_while_paused(&mut h.link, 0, hello("MC-1")).await;
        assert_eq!(h.link.take_outbox(), [(0, accept())], "not sent again yet");
        assert_eq!(
            h.link.next_timer(),
            Some(sent_at + ACK_TIMEOUT),
            "resent on its own schedule"
        );
        for _ in 0..2 {
            tokio::time::advance(ACK_TIMEOUT).await;
            h.link.on_timer().await;
            assert!(matches!(
                &h.link.take_outbox()[..],
                [(0, Downlink::Command(Command { id: 102, .. }))]
            ));
        }
        tokio::time::advance(ACK_TIMEOUT).await;
        h.link.on_timer().await;
        assert_eq!(
            third_outcome.await.unwrap(),
            Err(CommandFailure::NoAck(COMMAND_ATTEMPTS))
        );
        tokio::time::resume();

        // Another module at that address is another story: its predecessor's commands end.
        h.store
            .create_module(NewModule {
                id: ModuleId::new("MC-2").unwrap(),
                name: "two".into(),
                kind: "test".into(),
                owner_email: None,
                heartbeat_timeout: None,
            })
            .await
            .unwrap();
        let (fourth, fourth_outcome) = request(&h, 0, 103, CommandAction::ResendState);
        h.link.on_request(fourth);
        h.link.on_frame(Ok((0, hello("MC-2").into()))).await;
        assert_eq!(
            fourth_outcome.await.unwrap(),
            Err(CommandFailure::SessionEnded)
        );
    }

    #[tokio::test]
    async fn a_hello_while_a_reboot_is_in_flight_is_its_acknowledgement() {
        let mut h = harness(&["MC-1"]).await;
        online(&mut h, 0).await;
        let (reboot, reboot_outcome) = request(&h, 0, 7, CommandAction::Reboot);
        let (next, next_outcome) = request(&h, 0, 8, CommandAction::ResendState);
        h.link.on_request(reboot);
        h.link.on_request(next);
        h.link.take_outbox();
        // The ack was lost on the line; the module rebooted and says hello.
        h.link.on_frame(Ok((0, hello("MC-1").into()))).await;
        assert_eq!(reboot_outcome.await.unwrap(), Ok(CommandResult::Done));
        assert_eq!(
            h.link.take_outbox(),
            [
                (0, accept()),
                (
                    0,
                    Downlink::Command(Command {
                        id: 8,
                        action: CommandAction::ResendState
                    })
                ),
            ],
            "the next command follows the Accept"
        );
        h.link
            .on_frame(Ok((0, ack(8, CommandResult::Done).into())))
            .await;
        assert_eq!(next_outcome.await.unwrap(), Ok(CommandResult::Done));
    }

    #[tokio::test]
    async fn a_session_lasts_at_least_three_heartbeat_intervals() {
        // The hub's liveness timeout is 15 s; the module heartbeats every 60 s.
        let mut h = harness_with(&["MC-1"], Some(Duration::from_secs(15))).await;
        tokio::time::pause();
        let (before, after) = hello_while_paused(&mut h.link, 0, hello("MC-1")).await;
        h.link.take_outbox();
        let expiry = Duration::from_secs(3 * 60) + SESSION_EXPIRY_GRACE;
        let expires_at = h.link.next_timer().unwrap();
        assert!(
            (before + expiry..=after + expiry).contains(&expires_at),
            "{:?} after the hello",
            expires_at - before
        );
        tokio::time::advance(Duration::from_secs(59)).await;
        h.link.on_frame(Ok((0, heartbeat().into()))).await;
        tokio::time::advance(Duration::from_secs(61)).await;
        h.link.on_timer().await;
        h.link.on_frame(Ok((0, heartbeat().into()))).await;
        assert!(h.link.take_outbox().is_empty(), "still in session");
        assert_eq!(h.link.session_count(), 1);

        // A shorter interval leaves the hub's timeout in charge...
        let (before, after) = hello_while_paused(&mut h.link, 0, hello_every("MC-1", 1_000)).await;
        h.link.take_outbox();
        let expiry = Duration::from_secs(15) + SESSION_EXPIRY_GRACE;
        let expires_at = h.link.next_timer().unwrap();
        assert!((before + expiry..=after + expiry).contains(&expires_at));

        // ...and a longer one counts from its ack, without waiting for the module's hello.
        let longer = CommandAction::SetHeartbeatInterval { ms: 120_000 };
        let (request, _outcome) = request(&h, 0, 5, longer);
        h.link.on_request(request);
        h.link.take_outbox();
        h.link
            .on_frame(Ok((0, ack(5, CommandResult::Done).into())))
            .await;
        let expiry = Duration::from_secs(3 * 120) + SESSION_EXPIRY_GRACE;
        assert_eq!(h.link.next_timer(), Some(Instant::now() + expiry));
        // The tracker hears the new interval too (its liveness timeout), as from a hello.
        assert!(
            drain(&mut h.events).iter().any(|e| matches!(
                e,
                ModuleEvent::Hello(_, hello, _) if hello.heartbeat_ms == 120_000
            )),
            "the tracker is told the new interval"
        );
        tokio::time::advance(expiry - Duration::from_millis(1)).await;
        h.link.on_timer().await;
        assert_eq!(h.link.session_count(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        h.link.on_timer().await;
        assert_eq!(h.link.session_count(), 0, "silent past its expiry");
        assert!(matches!(
            &drain(&mut h.events)[..],
            [.., ModuleEvent::Disconnected { clean: false, .. }]
        ));
    }

    #[tokio::test]
    async fn a_module_quiet_on_its_old_port_is_accepted_on_a_new_one() {
        let mut h = harness(&["MC-1"]).await;
        online(&mut h, 0).await;
        tokio::time::pause();
        let ctx = h.link.ctx.clone();
        let (mut other, _rx) = on_port("/dev/ttyB", &ctx);
        // Moved to another port while the old adapter stays plugged in: the old session was
        // heard within its heartbeat interval (60 s), so it is still a duplicate...
        tokio::time::advance(Duration::from_secs(55)).await;
        hello_while_paused(&mut other, 0, hello("MC-1")).await;
        assert_eq!(
            other.take_outbox(),
            [(0, Downlink::Refuse(RefuseReason::Duplicate))]
        );
        // ...and no longer once it has been quiet for longer (its session would last 3 min).
        tokio::time::advance(Duration::from_secs(10)).await;
        hello_while_paused(&mut other, 0, hello("MC-1")).await;
        tokio::time::resume();
        assert_eq!(other.take_outbox(), [(0, accept())]);
        let id = ModuleId::new("MC-1").unwrap();
        let Some((_, Link::Serial(route))) = h.connections.link(&id) else {
            panic!("routed to the new port");
        };
        assert_eq!(&*route.port, "/dev/ttyB");
        // The old port's session is closed by the takeover.
        let (address, session) = h.link.next_close().await;
        h.link.on_closed(address, session).await;
        assert_eq!(
            h.link.take_outbox(),
            [(0, Downlink::Refuse(RefuseReason::Duplicate))]
        );
        assert!(matches!(
            &drain(&mut h.events)[..],
            [ModuleEvent::Disconnected { clean: false, .. }]
        ));
        assert_eq!(h.link.session_count(), 0);
    }

    #[tokio::test]
    async fn an_opened_port_tells_address_zero_to_say_hello() {
        let mut h = harness(&["MC-1"]).await;
        h.link.port_opened();
        assert_eq!(
            h.link.take_outbox(),
            [(0, Downlink::Refuse(RefuseReason::HandshakeRequired))]
        );
        // Not counted against the module's first frame: that one is answered too.
        h.link.on_frame(Ok((0, heartbeat().into()))).await;
        assert_eq!(
            h.link.take_outbox(),
            [(0, Downlink::Refuse(RefuseReason::HandshakeRequired))]
        );
    }

    #[test]
    fn rate_limit_allows_max_per_second() {
        let t0 = Instant::now();
        let mut limit = RateLimit::per_second(10);
        let allowed = (0..25).filter(|_| limit.allow(t0)).count();
        assert_eq!(allowed, 10);
        assert!(!limit.allow(t0 + Duration::from_millis(999)));
        assert!(limit.allow(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn warnings_are_throttled_and_count_what_they_skipped() {
        let t0 = Instant::now();
        let mut w = WarnThrottle::default();
        assert_eq!(w.warn_now(t0), Some(0));
        assert_eq!(w.warn_now(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.warn_now(t0 + Duration::from_secs(2)), None);
        assert_eq!(w.warn_now(t0 + WARN_INTERVAL), Some(2));
    }

    #[test]
    fn bad_hellos_are_refused_other_bad_frames_get_their_link_error() {
        for broken_rule in [
            ProtocolError::DuplicateReading,
            ProtocolError::InvalidHeartbeatInterval,
            ProtocolError::Malformed,
        ] {
            assert_eq!(
                reply_to_bad_frame(&FrameError::InvalidHello(broken_rule)),
                Downlink::Refuse(RefuseReason::InvalidHello)
            );
        }
        assert_eq!(
            reply_to_bad_frame(&FrameError::VersionMismatch { protocol: 2 }),
            Downlink::Error(LinkError::VersionMismatch {
                supported: LINK_VERSION
            })
        );
        // Rules broken outside a hello (JSON telemetry naming a reading twice, a NaN).
        for broken_rule in [
            ProtocolError::DuplicateReading,
            ProtocolError::NonFiniteReading,
            ProtocolError::InvalidHeartbeatInterval,
        ] {
            assert_eq!(
                reply_to_bad_frame(&FrameError::Invalid(broken_rule)),
                Downlink::Error(LinkError::Malformed)
            );
        }
        assert_eq!(
            reply_to_bad_frame(&FrameError::TooLong { len: 2000 }),
            Downlink::Error(LinkError::FrameTooLong)
        );
        assert_eq!(
            reply_to_bad_frame(&FrameError::Cobs),
            Downlink::Error(LinkError::CrcMismatch)
        );
    }

    #[tokio::test]
    async fn a_bad_json_telemetry_line_is_an_error_not_the_end_of_the_session() {
        let mut h = harness(&["MC-1"]).await;
        let line = |text: &[u8]| {
            mc_protocol::link::json::decode_uplink_line(text).map(|m| (0, Inbound::from(m)))
        };
        h.link
            .on_frame(line(
                br#"{"hello":{"protocol":1,"module":"MC-1","fw":"1","heartbeatMs":60000,"telemetryMs":1000}}"#,
            ))
            .await;
        h.link
            .on_frame(line(br#"{"heartbeat":{"seq":1,"uptimeMs":5}}"#))
            .await;
        h.link.take_outbox();
        drain(&mut h.events);
        // A reading named twice: a bad line, answered as such.
        h.link
            .on_frame(line(br#"{"telemetry":{"seq":1,"readings":{"a":1,"a":2}}}"#))
            .await;
        assert_eq!(
            h.link.take_outbox(),
            [(0, Downlink::Error(LinkError::Malformed))]
        );
        assert_eq!(h.link.session_count(), 1);
        // The next line is used as usual.
        h.link
            .on_frame(line(br#"{"telemetry":{"seq":2,"readings":{"a":1}}}"#))
            .await;
        assert!(h.link.take_outbox().is_empty());
        assert!(matches!(
            &drain(&mut h.events)[..],
            [ModuleEvent::Telemetry(..)]
        ));
        // A hello of another version, or one that breaks a rule.
        h.link
            .on_frame(line(br#"{"hello":{"protocol":2,"module":"MC-1"}}"#))
            .await;
        h.link
            .on_frame(line(
                br#"{"hello":{"protocol":1,"module":"MC-1","fw":"1","heartbeatMs":1,"telemetryMs":1000}}"#,
            ))
            .await;
        assert_eq!(
            h.link.take_outbox(),
            [
                (
                    0,
                    Downlink::Error(LinkError::VersionMismatch {
                        supported: LINK_VERSION
                    })
                ),
                (0, Downlink::Refuse(RefuseReason::InvalidHello)),
            ]
        );
    }
}
