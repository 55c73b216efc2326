//! Commands for a module another hub owns: the hub that took the HTTP request asks the owner
//! (which knows whether the module is ready, and keeps its queue) and answers with the owner's
//! answer. Request and reply travel over pub/sub channels (`<prefix>cmd:<hub>`,
//! `<prefix>reply:<hub>`); an owner that does not answer within [`ASK_TIMEOUT`] makes it a 503.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use mc_protocol::{CommandAction, ModuleId};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// How long a hub waits for the owner's answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// A command request for the owner.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: u64,
    reply_to: String,
    module: String,
    action: CommandAction,
}

/// The owner's HTTP answer: status and JSON body, passed on as is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    id: u64,
    /// HTTP status.
    pub status: u16,
    /// HTTP body.
    pub body: serde_json::Value,
}

impl Reply {
    /// An answer with `status` and `body`.
    pub fn new(status: u16, body: serde_json::Value) -> Self {
        Self {
            id: 0,
            status,
            body,
        }
    }
}

/// Why a remote command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Redis refused or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No hub listens on the owner's channel (it died; its modules move within the TTL).
    #[error("the module's hub is unreachable")]
    NoOwner,
    /// The owner did not answer in time.
    #[error("the module's hub did not answer")]
    Timeout,
}

/// Asks owners and answers for this hub; cheap to clone.
#[derive(Clone)]
pub struct RemoteCommands {
    cluster: Cluster,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>,
    next: Arc<AtomicU64>,
}

impl RemoteCommands {
    /// For `cluster`; [`serve`] must run for replies to arrive.
    pub fn new(cluster: Cluster) -> Self {
        Self {
            cluster,
            pending: Arc::default(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Which hub owns `module`, if not this one.
    pub fn owner_elsewhere(&self, module: &ModuleId) -> Option<Arc<str>> {
        self.cluster
            .members()
            .owner(module.as_str())
            .filter(|owner| **owner != *self.cluster.instance)
    }

    /// Sends `action` for `module` to its owner `owner` and waits for its answer.
    pub async fn ask(
        &self,
        owner: &str,
        module: &ModuleId,
        action: CommandAction,
    ) -> Result<Reply, AskError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, tx);
        }
        // However this ends (an answer, a timeout, the HTTP request dropped), the entry goes.
        struct Pending<'a>(&'a Mutex<HashMap<u64, oneshot::Sender<Reply>>>, u64);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                if let Ok(mut pending) = self.0.lock() {
                    pending.remove(&self.1);
                }
            }
        }
        let _pending = Pending(&self.pending, id);
        let request = Request {
            id,
            reply_to: self.cluster.instance.to_string(),
            module: module.to_string(),
            action,
        };
        async {
            let text = serde_json::to_string(&request).unwrap_or_default();
            let receivers: u64 = self
                .cluster
                .conn()
                .publish(channel(&self.cluster, "cmd", owner), text)
                .await?;
            if receivers == 0 {
                return Err(AskError::NoOwner);
            }
            tokio::time::timeout(ASK_TIMEOUT, rx)
                .await
                .map_err(|_| AskError::Timeout)?
                .map_err(|_| AskError::Timeout)
        }
        .await
    }

    fn settle(&self, reply: Reply) {
        let waiter = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&reply.id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        }
    }
}

fn channel(cluster: &Cluster, kind: &str, hub: &str) -> String {
    format!("{}{kind}:{hub}", cluster.keys.prefix)
}

/// Until shutdown: runs `execute` for the requests other hubs send to this one (answering on
/// their reply channel), and hands the replies to this hub's waiting requests.
pub async fn serve<F, Fut>(remote: RemoteCommands, execute: F, shutdown: CancellationToken)
where
    F: Fn(ModuleId, CommandAction) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let cluster = remote.cluster.clone();
    let requests = channel(&cluster, "cmd", &cluster.instance);
    let replies = channel(&cluster, "reply", &cluster.instance);
    loop {
        let Some(mut pubsub) = cluster
            .subscribe(&[&requests, &replies], "remote commands", &shutdown)
            .await
        else {
            return;
        };
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = messages.next() => m,
            };
            let Some(message) = message else {
                break;
            };
            let text: String = message.get_payload().unwrap_or_default();
            if message.get_channel_name() == replies {
                match serde_json::from_str::<Reply>(&text) {
                    Ok(reply) => remote.settle(reply),
                    Err(e) => tracing::warn!(error = %e, "malformed command reply"),
                }
                continue;
            }
            let request = match serde_json::from_str::<Request>(&text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "malformed remote command");
                    continue;
                }
            };
            let Ok(module) = ModuleId::new(&request.module) else {
                continue;
            };
            let execute = execute.clone();
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let mut reply = execute(module, request.action).await;
                reply.id = request.id;
                let text = serde_json::to_string(&reply).unwrap_or_default();
                let sent: Result<u64, _> = cluster
                    .conn()
                    .publish(channel(&cluster, "reply", &request.reply_to), text)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "cannot answer a remote command");
                }
            });
        }
    }
}
