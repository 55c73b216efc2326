//! Who is in the cluster, and which hub owns which module.
//!
//! Each hub holds `<prefix>member:<name>` (its random token, with a TTL) and an entry in the
//! sorted set `<prefix>members` (score: expiry, Redis's clock), refreshed every [`REFRESH`] by
//! one script. A hub that stops refreshing is gone after [`TTL`]; any hub's next refresh drops
//! it from the set. Every hub reads the set at each refresh: views converge within one
//! [`REFRESH`].
//!
//! Ownership is rendezvous hashing: a module belongs to the member with the highest
//! `hash(member, module)`. A member leaving moves only its own modules; one joining takes
//! about 1/N of everyone's.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError};

/// How often a hub refreshes its membership and reads the others'.
pub const REFRESH: Duration = Duration::from_millis(500);
/// A hub not heard for this long is gone (its modules move).
pub const TTL: Duration = Duration::from_millis(3000);

/// The live members as this hub last read them (sorted), and a signal when they change.
#[derive(Clone)]
pub struct Members {
    list: Arc<RwLock<Vec<Arc<str>>>>,
    changed: watch::Sender<u64>,
}

impl Default for Members {
    fn default() -> Self {
        Self {
            list: Arc::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Members {
    /// The owner of `module`: the member with the highest rendezvous score; none before the
    /// first read.
    pub fn owner(&self, module: &str) -> Option<Arc<str>> {
        let list = self.list.read().ok()?;
        owner_among(list.iter().map(|m| &**m), module).map(Arc::from)
    }

    /// The members now.
    pub fn list(&self) -> Vec<Arc<str>> {
        self.list.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Changes whenever the list does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn set(&self, members: Vec<Arc<str>>) -> bool {
        let Ok(mut list) = self.list.write() else {
            return false;
        };
        if *list == members {
            return false;
        }
        *list = members;
        drop(list);
        self.changed.send_modify(|n| *n += 1);
        true
    }
}

/// The owner of `module` among `members` (rendezvous hashing): what every hub computes.
pub fn owner_among<'a>(
    members: impl IntoIterator<Item = &'a str>,
    module: &str,
) -> Option<&'a str> {
    members
        .into_iter()
        .max_by_key(|member| score(member, module))
}

/// FNV-1a over `member`, a separator and `module`: stable across builds and machines (every hub
/// must compute the same owner), and spread enough for placement.
fn score(member: &str, module: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in member.bytes().chain([0xff]).chain(module.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // One more mixing round: FNV's low bits of similar inputs are close.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// Refresh: renews this hub's name (if it still holds it) and membership, drops expired
/// members, returns the members, or nil when the name was lost.
const REFRESH_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ttl) == false then
    return false
  end
else
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// Leaving: gives up the name and the membership at once (a clean stop).
const LEAVE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"#;

fn name_key(cluster: &Cluster) -> String {
    format!("{}member:{}", cluster.keys.prefix, cluster.instance)
}

/// This hub's token for its name.
fn token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| format!("{:032x}", rand::random::<u128>()))
}

async fn refresh(cluster: &Cluster) -> Result<Option<Vec<Arc<str>>>, redis::RedisError> {
    let members: Option<Vec<String>> = redis::Script::new(REFRESH_SCRIPT)
        .key(cluster.keys.members())
        .key(name_key(cluster))
        .arg(&*cluster.instance)
        .arg(token())
        .arg(TTL.as_millis() as u64)
        .invoke_async(&mut cluster.conn())
        .await?;
    // Sorted by name: the set is ordered by expiry, which changes at every refresh.
    Ok(members.map(|mut m| {
        m.sort();
        m.into_iter().map(Arc::from).collect()
    }))
}

/// Takes this hub's name, waiting out a previous holder that stopped refreshing (a restart of
/// this same hub); a name refreshed all along belongs to a live hub.
pub(super) async fn claim_name(cluster: &Cluster) -> Result<(), ClusterError> {
    let deadline = tokio::time::Instant::now() + TTL + REFRESH * 2;
    loop {
        if let Some(members) = refresh(cluster).await? {
            cluster.members.set(members);
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::NameInUse(cluster.instance.to_string()));
        }
        tokio::time::sleep(REFRESH / 2).await;
    }
}

/// Refreshes until shutdown, then leaves.
pub async fn run(cluster: Cluster, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match refresh(&cluster).await {
            Ok(Some(members)) => {
                failing = false;
                if cluster.members.set(members) {
                    tracing::info!(members = ?cluster.members.list(), "cluster members changed");
                }
            }
            Ok(None) => tracing::error!(
                instance = %cluster.instance,
                "another hub took this hub's name (this one was silent too long?); retrying"
            ),
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "cannot refresh cluster membership; retrying");
                }
                failing = true;
            }
        }
    }
    let left: Result<i64, _> = redis::Script::new(LEAVE_SCRIPT)
        .key(cluster.keys.members())
        .key(name_key(&cluster))
        .arg(&*cluster.instance)
        .arg(token())
        .invoke_async(&mut cluster.conn())
        .await;
    if let Err(e) = left {
        tracing::warn!(error = %e, "could not leave the cluster cleanly (the others will notice within the TTL)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_modules_of_a_member_that_leaves() {
        let all = Members::default();
        all.set(vec!["hub-a".into(), "hub-b".into(), "hub-c".into()]);
        let without_b = Members::default();
        without_b.set(vec!["hub-a".into(), "hub-c".into()]);
        let mut counts = std::collections::HashMap::<Arc<str>, usize>::new();
        for i in 0..3000 {
            let module = format!("MC-{i}-STN");
            let before = all.owner(&module).expect("an owner");
            let after = without_b.owner(&module).expect("an owner");
            if &*before != "hub-b" {
                assert_eq!(before, after, "{module} moved though its owner stayed");
            }
            *counts.entry(before).or_default() += 1;
        }
        // Spread: each of 3 members owns roughly a third.
        for (member, n) in counts {
            assert!((800..=1200).contains(&n), "{member} owns {n} of 3000");
        }
        assert_eq!(Members::default().owner("MC-1"), None);
    }
}
