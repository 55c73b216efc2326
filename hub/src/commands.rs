//! Hub → module commands: numbered, encoded the way the module speaks (the encoding of its
//! hello), and published on its `mc/<id>/cmd` topic through the hub's broker link.
//!
//! Delivery is at most once for now: a module that is offline does not get the command (the
//! API refuses it with 409), and nothing is retried.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU32, Ordering},
};

use mc_protocol::{
    Command, CommandAction, Encoding, ModuleId, ModuleTopic, ProtocolError, TopicKind, codec,
};
use rumqttd::local::LinkTx;

/// Why a command could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command breaks a protocol rule (e.g. an interval out of range).
    #[error("invalid command: {0}")]
    Invalid(#[from] ProtocolError),
    /// The broker link refused it (full, or the broker is gone).
    #[error("broker link unavailable: {0}")]
    Link(String),
}

/// Sends commands to modules; cheap to clone.
#[derive(Clone)]
pub struct CommandPublisher {
    /// `LinkTx::try_publish` needs `&mut`; it never blocks, so a plain mutex is enough.
    link: Arc<Mutex<LinkTx>>,
    next_id: Arc<AtomicU32>,
}

impl CommandPublisher {
    /// Publishes through `link`.
    pub fn new(link: LinkTx) -> Self {
        Self {
            link: Arc::new(Mutex::new(link)),
            next_id: Arc::new(AtomicU32::new(1)),
        }
    }

    /// Sends `action` to `module` in `encoding`; returns the command id.
    pub fn send(
        &self,
        module: &ModuleId,
        action: CommandAction,
        encoding: Encoding,
    ) -> Result<Command, CommandError> {
        let command = Command {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            action,
        };
        let payload = codec::encode(&command, encoding)?;
        let topic = ModuleTopic::new(module.clone(), TopicKind::Cmd).to_string();
        let mut link = self
            .link
            .lock()
            .map_err(|_| CommandError::Link("poisoned".into()))?;
        link.try_publish(topic, payload)
            .map_err(|e| CommandError::Link(e.to_string()))?;
        tracing::info!(%module, id = command.id, action = ?command.action, "command sent");
        Ok(command)
    }
}
