//! The MQTT transport: one task per module drives a [`ModuleCore`] with rumqttc.
//!
//! Each connection attempt gets a fresh `AsyncClient` + `EventLoop` ("session"), and the event
//! loop is polled in its own task that forwards what matters (ConnAck, incoming publishes, the
//! end of the connection) over a channel. A fresh pair per connection means nothing queued while
//! offline leaks into the next connection ahead of its hello (the firmware drops, rather than
//! replays, what it could not send), and killing the poller task is how
//! [`Fault::DropConnection`] closes the socket without an MQTT DISCONNECT.
//!
//! The module task owns everything else and reacts to: shutdown, injected faults, session
//! events, the reconnect timer, and the core's own timer.

use std::{sync::Arc, time::Duration};

use mc_firmware::{Backoff, ModuleCore, Outgoing, Output, Sensors};
use mc_protocol::{
    Command, ModuleId, ModuleTopic, STATUS_OFFLINE, TopicKind,
    codec::{self, Encoding},
    message::Message,
};
use rand::Rng;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions, Packet,
    Publish, QoS,
};
use tokio::{
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, sleep_until, timeout},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    ModuleCredentials, Validated,
    faults::{self, Fault},
    sensors::SimSensors,
    stats::Counters,
};

/// Requests the client may queue before `publish` waits for the event loop.
const REQUEST_CAPACITY: usize = 256;
/// Longest wait for the event loop to take one request; beyond it the message is dropped (the
/// link is stuck and will be declared dead by keep-alive anyway).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a clean DISCONNECT to be written before the socket is just dropped. Past
/// it the broker fires the last will, so it is generous: on a loaded machine (a CI runner
/// compiling beside the tests) 1–2 s were seen to pass. Longer than
/// [`DISCONNECT_FLUSH_TIMEOUT`], which it waits for.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The topics of one module, formatted once.
struct Topics {
    hello: String,
    heartbeat: String,
    telemetry: String,
    status: String,
    cmd: String,
}

impl Topics {
    fn new(id: &ModuleId) -> Self {
        let topic = |kind| ModuleTopic::new(id.clone(), kind).to_string();
        Self {
            hello: topic(TopicKind::Hello),
            heartbeat: topic(TopicKind::Heartbeat),
            telemetry: topic(TopicKind::Telemetry),
            status: topic(TopicKind::Status),
            cmd: topic(TopicKind::Cmd),
        }
    }
}

/// What the poller task reports about its connection.
#[derive(Debug)]
enum SessionEvent {
    /// The broker accepted the connection.
    ConnAck,
    /// A message on a subscribed topic.
    Publish(Publish),
    /// The connection ended: failed to connect, dropped, or closed after our DISCONNECT (`None`).
    Ended(Option<ConnectionError>),
}

/// One connection attempt and, if it succeeds, the connection.
struct Session {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    /// Owns the event loop (and so the socket): aborting it drops the TCP connection.
    poller: JoinHandle<()>,
    /// ConnAck received.
    connected: bool,
}

/// Where the module's link is.
enum Link {
    /// Connecting or connected.
    Session(Session),
    /// Offline; connect again at this instant, or only on [`Fault::Reconnect`] if `None`.
    Offline { retry_at: Option<Instant> },
}

/// The task of one simulated module.
pub(crate) struct ModuleTask {
    settings: Arc<Validated>,
    credentials: ModuleCredentials,
    topics: Topics,
    core: ModuleCore<SimSensors>,
    faults: mpsc::UnboundedReceiver<Fault>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    /// The core's clock starts here ("power on").
    epoch: Instant,
    backoff: Backoff,
    /// Connection attempts failed in a row (reset by a ConnAck); only the first is a warning.
    failed_attempts: u32,
    /// The last telemetry payload, for [`Fault::RepeatTelemetry`].
    last_telemetry: Option<Vec<u8>>,
}

impl ModuleTask {
    pub(crate) fn new(
        settings: Arc<Validated>,
        credentials: ModuleCredentials,
        index: u32,
        faults: mpsc::UnboundedReceiver<Fault>,
        counters: Arc<Counters>,
        shutdown: CancellationToken,
    ) -> Self {
        let core = ModuleCore::new(
            settings.core.clone(),
            SimSensors::new(settings.config.seed, index),
            Duration::ZERO,
        );
        Self {
            topics: Topics::new(&credentials.id),
            settings,
            credentials,
            core,
            faults,
            counters,
            shutdown,
            epoch: Instant::now(),
            backoff: Backoff::default(),
            failed_attempts: 0,
            last_telemetry: None,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn id(&self) -> &ModuleId {
        &self.credentials.id
    }

    pub(crate) async fn run(mut self) {
        let mut link = Link::Offline {
            retry_at: Some(Instant::now()),
        };
        let shutdown = self.shutdown.clone();
        loop {
            let core_deadline = self.core.poll_timeout().map(|d| self.epoch + d);
            let retry_at = match &link {
                Link::Offline { retry_at } => *retry_at,
                Link::Session(_) => None,
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(fault) = self.faults.recv() => self.on_fault(fault, &mut link).await,
                event = next_event(&mut link) => self.on_session_event(event, &mut link).await,
                () = sleep_until_opt(retry_at) => link = Link::Session(self.open_session()),
                () = sleep_until_opt(core_deadline) => {
                    self.core.tick(self.now());
                    self.flush(&mut link).await;
                }
            }
        }
        if let Link::Session(session) = link {
            self.close_cleanly(session).await;
        }
        self.core.disconnected();
        debug!(module = %self.id(), "stopped");
    }

    fn open_session(&self) -> Session {
        let id = self.id().as_str();
        let settings = &self.settings;
        let mut options = MqttOptions::new(id, settings.host.clone(), settings.port);
        options
            .set_credentials(id, self.credentials.password.clone())
            .set_keep_alive(settings.config.keep_alive)
            .set_clean_session(true)
            .set_last_will(LastWill::new(
                self.topics.status.clone(),
                STATUS_OFFLINE,
                QoS::AtLeastOnce,
                false,
            ));
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let (tx, events) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll(eventloop, tx));
        debug!(module = %id, broker = %format!("{}:{}", settings.host, settings.port), "connecting");
        Session {
            client,
            events,
            poller,
            connected: false,
        }
    }

    async fn on_session_event(&mut self, event: Option<SessionEvent>, link: &mut Link) {
        let Link::Session(session) = link else {
            return;
        };
        let was_connected = session.connected;
        match event {
            Some(SessionEvent::ConnAck) => {
                session.connected = true;
                self.backoff.reset();
                self.failed_attempts = 0;
                Counters::bump(&self.counters.connects);
                self.counters.set_connected(true);
                info!(module = %self.id(), "connected");
                // Subscribe before the hello, so a command sent in reaction to the hello
                // reaches us.
                let subscribe = session
                    .client
                    .subscribe(self.topics.cmd.clone(), QoS::AtLeastOnce);
                match timeout(PUBLISH_TIMEOUT, subscribe).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(module = %self.id(), "cannot subscribe to commands: {e}"),
                    Err(_) => warn!(module = %self.id(), "subscribe timed out"),
                }
                self.core.connected(self.now());
                self.flush(link).await;
            }
            Some(SessionEvent::Publish(publish)) => self.on_command(&publish, link).await,
            Some(SessionEvent::Ended(error)) => self.session_ended(was_connected, error, link),
            // The poller vanished without a word (it panicked): same as a lost connection.
            None => self.session_ended(was_connected, None, link),
        }
    }

    fn session_ended(
        &mut self,
        was_connected: bool,
        error: Option<ConnectionError>,
        link: &mut Link,
    ) {
        let delay = self.backoff.next_delay(rand::rng().random());
        match &error {
            Some(e) if was_connected => {
                warn!(module = %self.id(), error = %e, "connection lost; retry in {delay:?}");
            }
            // Say it once per outage (wrong password, broker down), not on every retry.
            Some(e) if self.failed_attempts == 0 => {
                warn!(module = %self.id(), error = %e, "cannot connect; retrying with backoff");
            }
            Some(e) => {
                debug!(module = %self.id(), error = %e, "connect failed; retry in {delay:?}")
            }
            None => debug!(module = %self.id(), "connection closed; retry in {delay:?}"),
        }
        if !was_connected {
            self.failed_attempts = self.failed_attempts.saturating_add(1);
        }
        self.went_offline();
        *link = Link::Offline {
            retry_at: Some(Instant::now() + delay),
        };
    }

    async fn on_command(&mut self, publish: &Publish, link: &mut Link) {
        if publish.topic != self.topics.cmd {
            debug!(module = %self.id(), topic = %publish.topic, "ignoring message on foreign topic");
            return;
        }
        Counters::bump(&self.counters.commands);
        let command = match codec::decode::<Command>(&publish.payload) {
            Ok(command) => command,
            Err(e) => {
                Counters::bump(&self.counters.rejected_commands);
                warn!(module = %self.id(), reason = e.reason(), "invalid command payload: {e}");
                return;
            }
        };
        info!(module = %self.id(), id = command.id, action = ?command.action, "command");
        if let Err(e) = self.core.command(self.now(), &command) {
            Counters::bump(&self.counters.rejected_commands);
            warn!(module = %self.id(), id = command.id, "command refused: {e}");
            return;
        }
        self.flush(link).await;
    }

    async fn on_fault(&mut self, fault: Fault, link: &mut Link) {
        info!(module = %self.id(), ?fault, "fault injected");
        match fault {
            Fault::StopHeartbeats => self.core.stop_heartbeats(),
            Fault::ResumeHeartbeats => {
                self.core.resume_heartbeats();
                self.flush(link).await;
            }
            Fault::Burst(n) => {
                self.core.burst(n);
                self.flush(link).await;
            }
            Fault::DropConnection => {
                if let Link::Session(session) =
                    std::mem::replace(link, Link::Offline { retry_at: None })
                {
                    // Dropping the event loop drops the socket: no DISCONNECT is sent, so the
                    // broker publishes the last will.
                    session.poller.abort();
                    let _ = session.poller.await;
                    self.went_offline();
                    *link = Link::Offline {
                        retry_at: Some(Instant::now() + self.settings.config.drop_pause),
                    };
                }
            }
            Fault::Disconnect => {
                if let Link::Session(session) =
                    std::mem::replace(link, Link::Offline { retry_at: None })
                {
                    self.close_cleanly(session).await;
                    self.went_offline();
                }
            }
            Fault::Reconnect => match link {
                Link::Offline { retry_at } => *retry_at = Some(Instant::now()),
                Link::Session(_) => debug!(module = %self.id(), "already connected or connecting"),
            },
            Fault::SendGarbage => {
                let payload = faults::garbage(&mut rand::rng());
                let topic = self.topics.telemetry.clone();
                if self
                    .publish_raw(link, topic, self.settings.config.periodic_qos, payload)
                    .await
                {
                    Counters::bump(&self.counters.garbage);
                }
            }
            Fault::RepeatTelemetry => match self.last_telemetry.clone() {
                Some(payload) => {
                    let topic = self.topics.telemetry.clone();
                    if self
                        .publish_raw(link, topic, self.settings.config.periodic_qos, payload)
                        .await
                    {
                        Counters::bump(&self.counters.telemetry);
                    }
                }
                None => debug!(module = %self.id(), "no telemetry sent yet: nothing to repeat"),
            },
            Fault::CorruptBytes
            | Fault::TruncateFrame
            | Fault::LineNoise(_)
            | Fault::Stall(_)
            | Fault::BaudMismatch(_)
            | Fault::Unplug
            | Fault::Replug => {
                debug!(module = %self.id(), ?fault, "serial-line fault: ignored over MQTT");
            }
        }
    }

    fn went_offline(&mut self) {
        self.counters.set_connected(false);
        self.core.disconnected();
    }

    /// Executes everything the core has to say.
    async fn flush(&mut self, link: &mut Link) {
        while let Some(output) = self.core.poll_output(self.now()) {
            match output {
                Output::Publish(message) => self.publish(link, message).await,
                Output::Reboot => {
                    info!(module = %self.id(), "rebooting");
                    if let Link::Session(session) =
                        std::mem::replace(link, Link::Offline { retry_at: None })
                    {
                        self.close_cleanly(session).await;
                    }
                    self.went_offline();
                    *link = Link::Offline {
                        retry_at: Some(Instant::now()),
                    };
                }
            }
        }
    }

    async fn publish(&mut self, link: &Link, message: Outgoing) {
        let config = &self.settings.config;
        let (topic, qos, payload) = match &message {
            Outgoing::Hello(m) => (
                &self.topics.hello,
                QoS::AtLeastOnce,
                encode(m, config.encoding),
            ),
            Outgoing::Heartbeat(m) => (
                &self.topics.heartbeat,
                config.periodic_qos,
                encode(m, config.encoding),
            ),
            // The core reports by reading index; MQTT carries names.
            Outgoing::Telemetry(report) => (
                &self.topics.telemetry,
                config.periodic_qos,
                encode(
                    &report.to_telemetry(self.core.sensors().names()),
                    config.encoding,
                ),
            ),
        };
        let payload = match payload {
            Ok(payload) => payload,
            Err(e) => {
                warn!(module = %self.id(), ?message, "cannot encode: {e}");
                return;
            }
        };
        if !self
            .publish_raw(link, topic.clone(), qos, payload.clone())
            .await
        {
            return;
        }
        match message {
            Outgoing::Hello(_) => Counters::bump(&self.counters.hellos),
            Outgoing::Heartbeat(_) => Counters::bump(&self.counters.heartbeats),
            Outgoing::Telemetry(_) => {
                Counters::bump(&self.counters.telemetry);
                self.last_telemetry = Some(payload);
            }
        }
    }

    /// Hands a payload to the MQTT client; false if offline or the client is stuck.
    async fn publish_raw(&self, link: &Link, topic: String, qos: QoS, payload: Vec<u8>) -> bool {
        let Link::Session(session) = link else {
            debug!(module = %self.id(), %topic, "offline: not sent");
            return false;
        };
        if !session.connected {
            return false;
        }
        match timeout(
            PUBLISH_TIMEOUT,
            session.client.publish(topic.clone(), qos, false, payload),
        )
        .await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                debug!(module = %self.id(), %topic, "not sent: {e}");
                false
            }
            Err(_) => {
                warn!(module = %self.id(), %topic, "not sent: client stuck");
                false
            }
        }
    }

    /// Sends DISCONNECT (so the broker discards the last will) and waits for the event loop to
    /// write it; drops the socket if that takes too long.
    async fn close_cleanly(&self, mut session: Session) {
        if session.connected {
            // A clean DISCONNECT discards the will, so say `offline` first: the embedded
            // broker's gateway sees the DISCONNECT anyway, but a hub behind an external
            // broker learns of it only from this (else only by its timeout).
            let said = timeout(
                DISCONNECT_TIMEOUT,
                session.client.publish(
                    self.topics.status.clone(),
                    QoS::AtLeastOnce,
                    false,
                    STATUS_OFFLINE,
                ),
            )
            .await;
            if !matches!(said, Ok(Ok(()))) {
                debug!(module = %self.id(), "could not say offline before disconnecting");
            }
            let sent = timeout(DISCONNECT_TIMEOUT, session.client.disconnect()).await;
            if matches!(sent, Ok(Ok(())))
                && timeout(DISCONNECT_TIMEOUT, &mut session.poller)
                    .await
                    .is_ok()
            {
                debug!(module = %self.id(), "disconnected cleanly");
                return;
            }
            warn!(module = %self.id(), "clean disconnect timed out; dropping the connection");
        }
        session.poller.abort();
        let _ = session.poller.await;
    }
}

fn encode<M: Message>(
    message: &M,
    encoding: Encoding,
) -> Result<Vec<u8>, mc_protocol::ProtocolError> {
    codec::encode(message, encoding)
}

/// Polls one connection's event loop until the connection ends, forwarding what the module
/// task needs. Returning drops the event loop and with it the socket.
/// How long the poller keeps a cleanly disconnecting socket for the broker to close it (it
/// returns as soon as the broker does).
const DISCONNECT_FLUSH_TIMEOUT: Duration = Duration::from_secs(4);

async fn poll(mut eventloop: EventLoop, events: mpsc::UnboundedSender<SessionEvent>) {
    let mut network = NetworkOptions::new();
    // Small messages: don't let Nagle hold them back waiting for ACKs.
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => SessionEvent::ConnAck,
            Ok(Event::Incoming(Packet::Publish(publish))) => SessionEvent::Publish(publish),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                // The event can come before the DISCONNECT is flushed: keep the socket until
                // the broker closes it (bounded), or the broker would see a lost connection and
                // fire the last will.
                let drained = async { while eventloop.poll().await.is_ok() {} };
                let _ = tokio::time::timeout(DISCONNECT_FLUSH_TIMEOUT, drained).await;
                let _ = events.send(SessionEvent::Ended(None));
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                let _ = events.send(SessionEvent::Ended(Some(e)));
                return;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// The next event of the current session; never resolves while offline.
async fn next_event(link: &mut Link) -> Option<SessionEvent> {
    match link {
        Link::Session(session) => session.events.recv().await,
        Link::Offline { .. } => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
