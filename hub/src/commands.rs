//! Hub → module commands: numbered hub-wide and sent over the transport that carries the
//! module right now. This is the one place that decides:
//! - **serial**: the module's port task sends `Downlink::Command` to its address and waits for
//!   the `Ack`, sending the same command again (same id) up to 3 times, 1 s apart; the caller
//!   gets the module's result ([`Delivery::Acknowledged`]) or [`CommandError::NotAcknowledged`].
//! - **MQTT**: encoded the way the module speaks (the encoding of its hello) and published on
//!   its `mc/<id>/cmd` topic: written to its connection by the gateway, or through the
//!   external broker; delivery is at most once, nothing is retried ([`Delivery::Published`]).
//! - **no live link** (it just closed, and the tracker has not yet seen it go):
//!   [`CommandError::Offline`], whatever the transport. Nothing would receive it: a serial
//!   module never reads MQTT, and the embedded broker keeps no offline queue, so a publish for
//!   an MQTT module without a connection would be accepted and lost.
//!
//! A command for a module that is offline (or [`CommandError::Offline`]) waits in the hub's
//! [`queue`] for at most `[commands] queue-ttl`, and [`delivery`] sends it through this same
//! router once the module is back.

pub mod delivery;
pub mod queue;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use mc_protocol::{
    Command, CommandAction, Encoding, ModuleId, ModuleTopic, ProtocolError, TopicKind, codec,
    link::CommandResult, message::Message,
};
use tokio::sync::{mpsc::error::TrySendError, oneshot};

use crate::{
    connections::{Link, LiveConnections, MqttRoute, SerialRoute, SlotError, Transport},
    ingest::serial::{
        CommandFailure, PortRequest,
        link::{ACK_TIMEOUT, COMMAND_ATTEMPTS, MAX_QUEUED_COMMANDS},
    },
};

/// Why a command could not be sent (or got no answer).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command breaks a protocol rule (e.g. an interval out of range).
    #[error("invalid command: {0}")]
    Invalid(#[from] ProtocolError),
    /// The broker link refused it (full, or the broker is gone).
    #[error("broker link unavailable: {0}")]
    Link(String),
    /// A serial module did not acknowledge it (every attempt timed out, or its session ended
    /// first).
    #[error("the module did not acknowledge the command: {0}")]
    NotAcknowledged(CommandFailure),
    /// Too many commands are waiting for this module (or its port).
    #[error("too many commands waiting for this module")]
    Busy,
    /// No live link carries the module: it is going offline (the command can be queued).
    #[error("the module has no live link")]
    Offline,
}

/// How far a command got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Published on the module's MQTT command topic (no acknowledgement in that protocol).
    Published,
    /// A serial module carried it out (or refused it) and said so.
    Acknowledged(CommandResult),
}

/// Where MQTT commands go when the module's connection is not one the gateway serves: the
/// hub's client of an external broker (`broker::external`), at QoS 1 (the broker acknowledges
/// it, then delivers it at the QoS the module subscribed with).
pub type ExternalBroker = rumqttc::v5::AsyncClient;

/// Sends commands to modules over their transport; cheap to clone.
#[derive(Clone)]
pub struct CommandRouter {
    /// MQTT commands for modules behind an external broker go out here.
    external: Option<ExternalBroker>,
    /// Who is connected how.
    connections: LiveConnections,
    /// Command ids. Modules de-duplicate by id (a retransmission carries the same one), so a
    /// restarted hub must not start again at 1: the first new command could match the last
    /// one a module executed and be acknowledged without being run. Hence a random start.
    next_id: Arc<AtomicU32>,
    /// Commands waiting for modules that are offline.
    queue: queue::CommandQueue,
}

impl CommandRouter {
    /// Finds each module's connection in `connections` (the gateway's MQTT connections and
    /// serial sessions carry their own way in); publishes through `external` for modules behind
    /// an external broker; keeps commands for offline modules in `queue`.
    pub fn new(
        external: Option<ExternalBroker>,
        connections: LiveConnections,
        queue: queue::CommandQueue,
    ) -> Self {
        Self {
            external,
            connections,
            next_id: Arc::new(AtomicU32::new(rand::random())),
            queue,
        }
    }

    /// The queue of commands for offline modules.
    pub fn queue(&self) -> &queue::CommandQueue {
        &self.queue
    }

    /// A new command: numbered, and checked against the protocol's rules.
    pub fn command(&self, action: CommandAction) -> Result<Command, CommandError> {
        let command = Command {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            action,
        };
        command.validate()?;
        Ok(command)
    }

    /// Sends `command` to `module` (MQTT commands in `encoding`); `tracked` is the transport
    /// the tracker knows the module by (its latest connection). Returns how far it got. For a
    /// serial module this waits for its acknowledgement (a few seconds at most).
    pub async fn deliver(
        &self,
        module: &ModuleId,
        command: Command,
        encoding: Encoding,
        tracked: Option<Transport>,
    ) -> Result<Delivery, CommandError> {
        match route(self.connections.link(module), tracked) {
            Route::Serial(session, route) => {
                let result = send_serial(&route, session, command).await?;
                Ok(Delivery::Acknowledged(result))
            }
            Route::Mqtt(route) => {
                self.publish(module, route, &command, encoding)?;
                Ok(Delivery::Published)
            }
            Route::Offline => {
                tracing::debug!(%module, ?tracked, "command for a module without a live link");
                Err(CommandError::Offline)
            }
        }
    }

    fn publish(
        &self,
        module: &ModuleId,
        route: Option<MqttRoute>,
        command: &Command,
        encoding: Encoding,
    ) -> Result<(), CommandError> {
        let payload = codec::encode(command, encoding)?;
        match (route, &self.external) {
            (Some(route), _) => match route.commands.push(payload) {
                Ok(()) => {}
                Err(SlotError::Full) => return Err(CommandError::Busy),
                Err(SlotError::Closed) => return Err(CommandError::Offline),
            },
            (None, Some(client)) => {
                let topic = ModuleTopic::new(module.clone(), TopicKind::Cmd).to_string();
                client
                    .try_publish(
                        topic,
                        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .map_err(|e| CommandError::Link(e.to_string()))?
            }
            (None, None) => return Err(CommandError::Offline),
        }
        tracing::info!(%module, id = command.id, action = ?command.action, "command published");
        Ok(())
    }
}

/// Where a command goes.
#[derive(Debug)]
enum Route {
    /// To this serial session.
    Serial(u64, SerialRoute),
    /// Published on the module's MQTT command topic: written to its gateway connection, or
    /// (`None`) through the external broker.
    Mqtt(Option<MqttRoute>),
    /// Nowhere now: the module is going offline (the command can be queued).
    Offline,
}

/// The route for a module whose live link is `live` and whose transport the tracker knows as
/// `tracked`. Without a live link nothing would receive the command: a serial module never
/// reads MQTT, and the broker keeps nothing for an MQTT module that is not connected.
fn route(live: Option<(u64, Link)>, tracked: Option<Transport>) -> Route {
    match (live, tracked) {
        (Some((session, Link::Serial(route))), _) => Route::Serial(session, route),
        (Some((_, Link::Mqtt(route))), _) => Route::Mqtt(route),
        (None, _) => Route::Offline,
    }
}

/// Longest wait for a serial command's outcome: every command queued before it, then its own
/// attempts, and a margin. The port task answers well before; this only guards against a
/// port task that is gone.
const SERIAL_WAIT: Duration = Duration::from_secs(
    ACK_TIMEOUT.as_secs() * COMMAND_ATTEMPTS as u64 * MAX_QUEUED_COMMANDS as u64 + 2,
);

async fn send_serial(
    route: &SerialRoute,
    session: u64,
    command: Command,
) -> Result<CommandResult, CommandError> {
    let (reply, outcome) = oneshot::channel();
    let id = command.id;
    let request = PortRequest::Command {
        address: route.address,
        session,
        command,
        reply,
    };
    match route.requests.try_send(request) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(CommandError::Busy),
        Err(TrySendError::Closed(_)) => {
            return Err(CommandError::NotAcknowledged(CommandFailure::SessionEnded));
        }
    }
    tracing::debug!(port = %route.port, address = route.address, id, "command queued for a serial module");
    match tokio::time::timeout(SERIAL_WAIT, outcome).await {
        Ok(Ok(Ok(result))) => Ok(result),
        Ok(Ok(Err(CommandFailure::Busy))) => Err(CommandError::Busy),
        Ok(Ok(Err(failure))) => Err(CommandError::NotAcknowledged(failure)),
        Ok(Err(_)) | Err(_) => Err(CommandError::NotAcknowledged(CommandFailure::SessionEnded)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{sync::mpsc, time::Instant};

    use super::*;
    use crate::connections::Presence;

    #[test]
    fn without_a_live_link_nothing_is_published() {
        let (requests, _rx) = mpsc::channel(1);
        let serial = Link::Serial(SerialRoute {
            port: "/dev/ttyA".into(),
            address: 0,
            requests,
            presence: Presence::new(Instant::now(), Duration::from_secs(1)),
        });
        assert!(matches!(
            route(Some((7, serial)), Some(Transport::Serial)),
            Route::Serial(7, _)
        ));
        assert!(matches!(
            route(Some((8, Link::Mqtt(None))), Some(Transport::Serial)),
            Route::Mqtt(None)
        ));
        // The connection closed (or the port was lost) and the tracker has not caught up yet:
        // the broker would drop a publish for a module that is not connected.
        assert!(matches!(route(None, Some(Transport::Mqtt)), Route::Offline));
        assert!(matches!(
            route(None, Some(Transport::Serial)),
            Route::Offline
        ));
        assert!(matches!(route(None, None), Route::Offline));
    }
}
