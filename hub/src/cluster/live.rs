//! The modules' shared live state in Redis (`<prefix>live`: module → JSON), written by each
//! module's owner in the same script as its events ([`super::relay`]). Snapshots read it (a
//! dashboard on any hub sees every module), and a hub that becomes a module's owner adopts
//! the module from it instead of starting from nothing: clients already saw it online, with
//! these readings at this revision, so nothing is emitted again.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mc_protocol::{Encoding, ModuleId};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::{
    connections::{Link, LiveConnections},
    ingest::ModuleEvent,
    tracker::LiveModule,
};

/// One module as its owner last published it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedLive {
    /// Online as clients see it.
    pub online: bool,
    /// Owning user (the audience of its events).
    pub owner: Option<i64>,
    /// Last message, milliseconds since the Unix epoch.
    pub last_seen_ms: Option<u64>,
    /// Last known readings.
    pub readings: BTreeMap<String, f32>,
    /// Revision of the readings.
    pub rev: u64,
    /// Readings are last known values of an offline module.
    pub stale: bool,
    /// Firmware version of its last hello.
    pub fw: Option<String>,
    /// Heartbeat interval of its last hello.
    pub heartbeat_ms: Option<u32>,
    /// Its own liveness timeout (registry), milliseconds.
    pub timeout_ms: Option<u64>,
    /// Whether its last hello was JSON (else native).
    pub json: Option<bool>,
}

impl SharedLive {
    /// Its last message time.
    pub fn last_seen(&self) -> Option<SystemTime> {
        self.last_seen_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// The encoding of its last hello.
    pub fn encoding(&self) -> Option<Encoding> {
        self.json.map(|json| {
            if json {
                Encoding::Json
            } else {
                Encoding::Native
            }
        })
    }

    /// As a snapshot entry (not `ready`: commands are the owner's business).
    pub fn to_live(&self) -> LiveModule {
        LiveModule {
            online: self.online,
            last_seen: self.last_seen(),
            readings: self.readings.clone(),
            rev: self.rev,
            stale: self.stale,
            fw: self.fw.clone(),
            encoding: self.encoding(),
            transport: Some(crate::connections::Transport::Mqtt),
            ready: false,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn parse(module: &str, json: &str) -> Option<(ModuleId, SharedLive)> {
    let id = ModuleId::new(module).ok()?;
    match serde_json::from_str(json) {
        Ok(live) => Some((id, live)),
        Err(e) => {
            tracing::warn!(%module, error = %e, "unreadable shared module state; ignored");
            None
        }
    }
}

/// Every module's shared state.
pub async fn all(cluster: &Cluster) -> Result<HashMap<ModuleId, SharedLive>, redis::RedisError> {
    let raw: HashMap<String, String> = cluster.conn().hgetall(cluster.keys.live()).await?;
    Ok(raw
        .iter()
        .filter_map(|(module, json)| parse(module, json))
        .collect())
}

/// One module's shared state.
pub async fn one(
    cluster: &Cluster,
    module: &ModuleId,
) -> Result<Option<SharedLive>, redis::RedisError> {
    let raw: Option<String> = cluster
        .conn()
        .hget(cluster.keys.live(), module.as_str())
        .await?;
    Ok(raw.and_then(|json| parse(module.as_str(), &json).map(|(_, live)| live)))
}

/// How many modules clients see online, cluster-wide.
pub async fn online_count(cluster: &Cluster) -> Result<usize, redis::RedisError> {
    cluster.conn().hlen(cluster.keys.online()).await
}

/// Forgets a removed module's shared state.
pub async fn forget(cluster: &Cluster, module: &ModuleId) -> Result<(), redis::RedisError> {
    let mut conn = cluster.conn();
    redis::pipe()
        .hdel(cluster.keys.live(), module.as_str())
        .hdel(cluster.keys.revs(), module.as_str())
        .hdel(cluster.keys.online(), module.as_str())
        .query_async::<()>(&mut conn)
        .await
}

/// Follows membership: whenever it changes (and at start), tells the tracker to let go of the
/// modules it no longer owns, closes their inferred sessions here, and adopts the online
/// modules it now owns (a dead hub's), so that each gets a full timeout to speak to its new
/// owner instead of staying online for ever or being reported offline by no one.
pub async fn follow_ownership(
    cluster: Cluster,
    tracker: mpsc::Sender<ModuleEvent>,
    connections: LiveConnections,
    shutdown: CancellationToken,
) {
    let mut changes = cluster.members().subscribe();
    loop {
        if tracker.send(ModuleEvent::OwnersChanged).await.is_err() {
            return;
        }
        connections
            .retain(|module, link| !matches!(link, Link::Mqtt(_)) || cluster.owns(module.as_str()));
        match adopt_online(&cluster, &tracker).await {
            Ok(n) if n > 0 => tracing::debug!(modules = n, "online modules offered for adoption"),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read shared module states to adopt modules")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

async fn adopt_online(
    cluster: &Cluster,
    tracker: &mpsc::Sender<ModuleEvent>,
) -> Result<usize, redis::RedisError> {
    let online: Vec<String> = cluster.conn().hkeys(cluster.keys.online()).await?;
    let mine: Vec<String> = online.into_iter().filter(|m| cluster.owns(m)).collect();
    if mine.is_empty() {
        return Ok(0);
    }
    let states: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(cluster.keys.live())
        .arg(&mine)
        .query_async(&mut cluster.conn())
        .await?;
    let mut adopted = 0;
    for (module, json) in mine.iter().zip(states) {
        let Some((id, live)) = json.and_then(|j| parse(module, &j)) else {
            continue;
        };
        if tracker
            .send(ModuleEvent::Adopted(id, Box::new(live)))
            .await
            .is_err()
        {
            break;
        }
        adopted += 1;
    }
    Ok(adopted)
}
