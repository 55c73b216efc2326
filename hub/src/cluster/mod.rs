//! Several hubs as one (`[cluster] redis = "redis://…"`), on Redis (≥ 7) and an external MQTT
//! broker: no home-made consensus, only Redis's atomic scripts and the broker's shared
//! subscription.
//!
//! ```text
//!          external broker ── $share/mc-hub/mc/+/… ──┬──▶ hub A ──┐ forward to the module's owner
//!                                                    └──▶ hub B ◀─┘ (Redis pub/sub)
//!  owner's tracker ──guarded event + module state (Lua)──▶ Redis: stream `events`, hash `live`
//!  every hub ◀── XREAD `events` ── delivers to its own dashboards (own backpressure, replay)
//! ```
//!
//! - **Membership** ([`membership`]): each hub refreshes its entry in a sorted set every
//!   [`membership::REFRESH`]; an entry not refreshed for [`membership::TTL`] is gone.
//! - **One owner per module**: rendezvous hashing over the live members. Whatever hub the
//!   broker hands a module's message to forwards it to the owner ([`forward`]), so one tracker
//!   decides each module's liveness and diffs its readings. When a hub dies, only its modules
//!   move, and their new owners adopt them from the shared state: no offline storm, no
//!   duplicate events.
//! - **One event stream** ([`relay`]): events go through one Redis stream with cluster-wide
//!   offsets and one epoch, so a dashboard resumes on any hub. Module events are *guarded*: the
//!   script publishes a liveness change only if it changes the shared state, and readings only
//!   with a newer revision, so two hubs that briefly both believe they own a module (views
//!   converging) cannot publish the same change twice. Registry events carry a once-key: every
//!   hub applies the registry change log, the first to publish an event wins.
//! - **Shared live state** ([`live`]): online flag, readings and revision of each module, written
//!   in the same script as its events; snapshots (`GET /api/modules`) read it, new owners adopt
//!   from it.

pub mod commands;
pub mod forward;
pub mod live;
pub mod membership;
pub mod relay;

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `[cluster]`: set `redis` to run as one of several hubs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]` (Redis ≥ 7); none (the default) runs one hub on
    /// its own. `--redis`, `HUB_REDIS`.
    pub redis: Option<String>,
    /// This hub's name in the cluster: unique and stable across restarts. Default: the
    /// external broker client id (itself `mc-hub-<hostname>` unless set).
    pub instance: Option<String>,
    /// Prefix of every Redis key: one per deployment sharing a Redis. Default `mc:`.
    pub prefix: String,
    /// Entries kept in the Redis event stream (a new hub fills its replay buffer from it).
    /// Default 10,000.
    pub stream_capacity: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: None,
            instance: None,
            prefix: "mc:".into(),
            stream_capacity: 10_000,
        }
    }
}

impl ClusterConfig {
    /// Applies `HUB_REDIS`; `var` looks a variable up.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(url) = var("HUB_REDIS").filter(|v| !v.is_empty()) {
            self.redis = Some(url);
        }
    }

    /// Checks the settings; a cluster needs an external broker (modules must reach every hub).
    pub fn validate(&self, external_broker: bool) -> Result<(), ConfigError> {
        let Some(url) = &self.redis else {
            return Ok(());
        };
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(ConfigError::Invalid {
                setting: "cluster.redis",
                message: format!("{url:?}: {e}"),
            });
        }
        if !external_broker {
            return Err(ConfigError::Invalid {
                setting: "cluster.redis",
                message: "several hubs need an external MQTT broker ([broker] url): modules must reach all of them".into(),
            });
        }
        if self.prefix.is_empty() || self.prefix.len() > 64 {
            return Err(ConfigError::Invalid {
                setting: "cluster.prefix",
                message: format!("{:?}; 1 to 64 characters", self.prefix),
            });
        }
        if !(100..=10_000_000).contains(&self.stream_capacity) {
            return Err(ConfigError::Invalid {
                setting: "cluster.stream-capacity",
                message: format!("{}; between 100 and 10,000,000", self.stream_capacity),
            });
        }
        if let Some(name) = &self.instance
            && (name.is_empty()
                || name.len() > 128
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
        {
            return Err(ConfigError::Invalid {
                setting: "cluster.instance",
                message: format!("{name:?}; 1 to 128 of A-Z a-z 0-9 - _ ."),
            });
        }
        Ok(())
    }
}

/// Errors joining the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis cannot be reached or refused a command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Another live hub uses this instance name.
    #[error(
        "instance name {0:?} is in use by a live hub; give each hub its own [cluster] instance"
    )]
    NameInUse(String),
}

/// The Redis keys of one deployment.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
    /// The event stream.
    pub fn events(&self) -> String {
        self.key("events")
    }
    /// The offset counter of the stream.
    pub fn seq(&self) -> String {
        self.key("seq")
    }
    /// The stream's epoch (a new one when Redis lost the stream).
    pub fn epoch(&self) -> String {
        self.key("epoch")
    }
    /// Live members: instance → expiry (ms since the Unix epoch).
    pub fn members(&self) -> String {
        self.key("members")
    }
    /// Shared live state: module → JSON ([`live::SharedLive`]).
    pub fn live(&self) -> String {
        self.key("live")
    }
    /// Module → revision of its readings, as published.
    pub fn revs(&self) -> String {
        self.key("rev")
    }
    /// Module → `1` while clients see it online.
    pub fn online(&self) -> String {
        self.key("online")
    }
    /// Prefix of once-keys (an event published by the first hub only).
    pub fn once(&self) -> String {
        self.key("once:")
    }
    /// The pub/sub channel of messages forwarded to `instance`.
    pub fn inbox(&self, instance: &str) -> String {
        self.key(&format!("fwd:{instance}"))
    }
}

/// A hub's place in the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    /// This hub's name.
    pub instance: Arc<str>,
    /// The keys.
    pub keys: Keys,
    client: redis::Client,
    /// Commands (reconnects by itself).
    conn: redis::aio::ConnectionManager,
    members: membership::Members,
    /// Entries kept in the stream.
    pub stream_capacity: usize,
}

/// How long one Redis command may take before it counts as failed.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Connects to Redis and registers `instance` as a member (refused if a live hub already
    /// uses the name).
    pub async fn join(config: &ClusterConfig, instance: String) -> Result<Self, ClusterError> {
        let url = config.redis.clone().unwrap_or_default();
        let client = redis::Client::open(url.as_str())?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_connection_timeout(Some(REDIS_TIMEOUT));
        let conn = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            client.get_connection_manager_with_config(manager_config),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "timed out connecting", url.clone()))
        })??;
        let keys = Keys {
            prefix: config.prefix.clone(),
        };
        let cluster = Self {
            instance: instance.into(),
            keys,
            client,
            conn,
            members: membership::Members::default(),
            stream_capacity: config.stream_capacity,
        };
        membership::claim_name(&cluster).await?;
        Ok(cluster)
    }

    /// A connection for commands.
    pub fn conn(&self) -> redis::aio::ConnectionManager {
        self.conn.clone()
    }

    /// A dedicated connection (blocking reads, pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A pub/sub connection subscribed to `channels`, retried with a growing pause (200 ms
    /// per failure, at most 5 s) until it works; `None` at shutdown. `what` names the
    /// subscription in the one error logged per outage.
    pub async fn subscribe(
        &self,
        channels: &[&str],
        what: &str,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<redis::aio::PubSub> {
        let mut failures = 0u32;
        loop {
            let subscribed = async {
                let mut pubsub = self.client().get_async_pubsub().await?;
                pubsub.subscribe(channels).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let error = tokio::select! {
                _ = shutdown.cancelled() => return None,
                p = subscribed => match p {
                    Ok(pubsub) => return Some(pubsub),
                    Err(e) => e,
                },
            };
            failures += 1;
            if failures == 1 {
                tracing::error!(error = %error, "cannot subscribe to {what}; retrying");
            }
            let pause = std::time::Duration::from_millis(200 * u64::from(failures.min(25)));
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// The live members as this hub sees them.
    pub fn members(&self) -> &membership::Members {
        &self.members
    }

    /// Whether this hub owns `module` (as it sees the members now).
    pub fn owns(&self, module: &str) -> bool {
        self.members
            .owner(module)
            .is_none_or(|owner| *owner == *self.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_cluster_config_is_valid() {
        let config: crate::Config = toml::from_str(include_str!("../../../deploy/hub.toml"))
            .expect("deploy/hub.toml parses");
        assert!(config.broker.validate().is_ok());
        assert!(config.cluster.validate(config.broker.url.is_some()).is_ok());
        assert_eq!(config.cluster.instance.as_deref(), Some("mc-hub-1"));
        assert!(matches!(
            config.database,
            Some(crate::store::Database::Postgres(_))
        ));
    }

    #[test]
    fn a_cluster_needs_an_external_broker_and_sane_settings() {
        let with = |f: fn(&mut ClusterConfig)| {
            let mut c = ClusterConfig {
                redis: Some("redis://127.0.0.1:6379".into()),
                ..Default::default()
            };
            f(&mut c);
            c
        };
        assert!(with(|_| {}).validate(true).is_ok());
        assert!(with(|_| {}).validate(false).is_err(), "no external broker");
        assert!(
            with(|c| c.redis = Some("http://x".into()))
                .validate(true)
                .is_err()
        );
        assert!(
            with(|c| c.instance = Some("a b".into()))
                .validate(true)
                .is_err()
        );
        assert!(with(|c| c.stream_capacity = 1).validate(true).is_err());
        assert!(with(|c| c.prefix = String::new()).validate(true).is_err());
        assert!(ClusterConfig::default().validate(false).is_ok(), "off");
    }
}
