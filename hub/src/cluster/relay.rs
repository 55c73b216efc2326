//! The cluster's one event stream: hubs publish into a Redis stream, every hub reads it back and
//! delivers to its own dashboards ([`crate::realtime::EventsManager::apply_shared`]).
//!
//! - **Offsets**: the publishing script takes the next value of one counter and adds the entry
//!   with id `0-<offset>`, so offsets are cluster-wide, gapless and small enough for a
//!   JavaScript number; the epoch is one key, created once (a new one if Redis lost the stream,
//!   so that clients take a snapshot instead of resuming against offsets that mean nothing).
//! - **Guards** (module events): a liveness change is published only if it changes the shared
//!   online flag, readings only with a revision newer than the published one; the module's
//!   shared state ([`super::live`]) is written in the same script. Rejected entries are counted
//!   (`mc_cluster_guard_rejections_total`): a hub that briefly believed it owned a module.
//! - **Once-keys** (registry events): the first hub to publish wins; the others' copies are
//!   dropped (every hub applies the registry change log for its own local effects).
//! - **Batches**: the publisher sends what is queued in one script call (up to
//!   [`MAX_BATCH`]); Redis down → it retries with backoff, and the bounded queue slows the
//!   producers (the tracker) instead of dropping events.

use std::{sync::Arc, time::Duration};

use redis::{
    AsyncCommands,
    streams::{StreamReadOptions, StreamReadReply},
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::{
    metrics::Metrics,
    realtime::{EventsManager, events, replay::Audience, rooms::Page},
};

/// Entries sent in one script call at most.
pub const MAX_BATCH: usize = 256;
/// Entries waiting for the publisher at most (then producers wait).
pub const QUEUE: usize = 16 * 1024;
/// How long a blocking read waits for new entries before asking again.
const READ_BLOCK_MS: usize = 1000;

/// What an entry of the shared stream does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An event for its audience.
    Event,
    /// A user's entitlement changed (replay barrier); with `cut_off`, their sockets are also
    /// cut off and disconnected on every hub.
    Barrier {
        /// Whose.
        user_id: i64,
        /// Whether their sockets are disconnected too.
        cut_off: bool,
    },
    /// A login session ended: its sockets are disconnected on every hub.
    SessionEnded {
        /// SHA-256 of its token.
        token_hash: String,
    },
    /// Only the module's shared state changes (no stream entry).
    StateOnly,
    /// The module was removed: its shared state goes (queued behind the owner's last entries,
    /// so none of them brings it back).
    Forget,
}

/// When a module entry may be published (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// Always.
    None,
    /// Only if the module's published revision is older.
    Rev(u64),
    /// Only if the module's shared online flag differs.
    Online(bool),
    /// Always, and the revision and online flag are set as given (the shared state is being
    /// rebuilt after Redis lost it).
    Reset {
        /// The readings' revision.
        rev: u64,
        /// Online as clients see it.
        online: bool,
    },
}

/// One entry for the publisher.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// What it does.
    pub kind: Kind,
    /// Who receives it (events).
    pub audience: Audience,
    /// Event name and payload (events).
    pub event: Option<(&'static str, Arc<RawValue>)>,
    /// The module it is about, with its guard and its new shared state (JSON).
    pub module: Option<ModuleChange>,
    /// Published only by the first hub that sends this key (registry events).
    pub once: Option<String>,
}

/// The module part of an entry.
#[derive(Debug, Clone)]
pub struct ModuleChange {
    /// Module id.
    pub id: String,
    /// When to publish.
    pub guard: Guard,
    /// Its shared state after the change ([`super::live::SharedLive`] as JSON).
    pub state: Option<String>,
}

/// Publishes a batch; returns how many guarded entries were refused (an entry whose once-key
/// was taken is dropped silently: that is the normal case for all hubs but one).
const PUBLISH_SCRIPT: &str = r#"
local cap = tonumber(ARGV[1])
local refused = 0
-- The next offset: after both the counter and the stream's last entry, so that a counter
-- Redis lost (eviction, a partial restore) never makes XADD fail for ever.
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if top[1] then
  local last = tonumber(string.match(top[1][1], '^0%-(%d+)$') or '0')
  if last > seq then seq = last end
end
local i = 2
while i <= #ARGV do
  local kind, module, gtype, gval, state = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local aud, ev, payload, once = ARGV[i+5], ARGV[i+6], ARGV[i+7], ARGV[i+8]
  i = i + 9
  local ok = true
  if once ~= '' then
    ok = redis.call('SET', KEYS[6] .. once, '1', 'NX', 'PX', 600000) ~= false
  end
  if ok and kind == 'forget' then
    redis.call('HDEL', KEYS[3], module)
    redis.call('HDEL', KEYS[4], module)
    redis.call('HDEL', KEYS[5], module)
    ok = false
  elseif ok and gtype == 'rev' then
    local cur = tonumber(redis.call('HGET', KEYS[4], module) or '0') or 0
    if cur >= tonumber(gval) then ok = false; refused = refused + 1
    else redis.call('HSET', KEYS[4], module, gval) end
  elseif ok and gtype == 'on' then
    local cur = redis.call('HGET', KEYS[5], module) == '1'
    local want = gval == '1'
    if cur == want then ok = false; refused = refused + 1
    elseif want then redis.call('HSET', KEYS[5], module, '1')
    else redis.call('HDEL', KEYS[5], module) end
  elseif ok and gtype == 'reset' then
    local rev, on = string.match(gval, '^(%d+):([01])$')
    if rev then
      redis.call('HSET', KEYS[4], module, rev)
      if on == '1' then redis.call('HSET', KEYS[5], module, '1')
      else redis.call('HDEL', KEYS[5], module) end
    end
  end
  if ok then
    if state ~= '' then redis.call('HSET', KEYS[3], module, state) end
    if kind ~= 'state' then
      seq = seq + 1
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', cap, '0-' .. seq,
        'k', kind, 'a', aud, 'e', ev, 'p', payload)
    end
  end
end
redis.call('SET', KEYS[2], seq)
return refused
"#;

/// The publisher's handle: producers queue entries here.
#[derive(Clone)]
pub struct Relay {
    tx: mpsc::Sender<Outgoing>,
}

impl Relay {
    /// Queues `entry` (waits while the queue is full: backpressure on the producer).
    pub async fn publish(&self, entry: Outgoing) {
        if self.tx.send(entry).await.is_err() {
            tracing::debug!("relay stopped: entry dropped at shutdown");
        }
    }
}

/// Starts the publisher; returns its handle.
pub fn start_publisher(
    cluster: &Cluster,
    metrics: Metrics,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
) -> Relay {
    let (tx, rx) = mpsc::channel(QUEUE);
    tasks.spawn(publish_loop(cluster.clone(), rx, metrics, shutdown.clone()));
    Relay { tx }
}

async fn publish_loop(
    cluster: Cluster,
    mut rx: mpsc::Receiver<Outgoing>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let script = redis::Script::new(PUBLISH_SCRIPT);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut conn = cluster.conn();
    loop {
        let received = tokio::select! {
            // Drain what is queued, then stop.
            _ = shutdown.cancelled(), if rx.is_empty() => return,
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
        };
        if received == 0 {
            return;
        }
        let mut failures = 0u32;
        loop {
            let mut call = script.prepare_invoke();
            call.key(cluster.keys.events())
                .key(cluster.keys.seq())
                .key(cluster.keys.live())
                .key(cluster.keys.revs())
                .key(cluster.keys.online())
                .key(cluster.keys.once())
                .arg(cluster.stream_capacity);
            for entry in &batch {
                push_args(&mut call, entry);
            }
            match call.invoke_async::<u64>(&mut conn).await {
                Ok(refused) => {
                    if refused > 0 {
                        metrics.cluster_guard_rejections.add(refused);
                        tracing::debug!(
                            refused,
                            "guarded entries refused (another hub published them)"
                        );
                    }
                    break;
                }
                // The script itself failed (a bad value in Redis, a bug): a retry would fail the
                // same way, so the batch is dropped, loudly, rather than stall the hub. Redis
                // unreachable, loading, out of memory...: retried (the queue then slows the
                // producers).
                Err(e) if e.code() == Some("ERR") => {
                    metrics.cluster_publish_errors.add(batch.len() as u64);
                    tracing::error!(error = %e, entries = batch.len(), "Redis refused a batch of events; dropped");
                    break;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::error!(error = %e, entries = batch.len(), "cannot publish events to Redis; retrying");
                    }
                    failures = failures.saturating_add(1);
                    if shutdown.is_cancelled() && failures > 3 {
                        tracing::error!(
                            entries = batch.len(),
                            "shutting down with events Redis never took"
                        );
                        return;
                    }
                    let delay = Duration::from_millis(100 * u64::from(failures.min(20)));
                    tokio::time::sleep(delay).await;
                }
            }
        }
        batch.clear();
    }
}

fn push_args(call: &mut redis::ScriptInvocation<'_>, entry: &Outgoing) {
    let kind = match &entry.kind {
        Kind::Event => "ev".to_owned(),
        Kind::Barrier { user_id, cut_off } => {
            format!("{}{user_id}", if *cut_off { "cut:" } else { "bar:" })
        }
        Kind::SessionEnded { token_hash } => format!("ses:{token_hash}"),
        Kind::StateOnly => "state".to_owned(),
        Kind::Forget => "forget".to_owned(),
    };
    let (module, gtype, gval, state) = match &entry.module {
        Some(m) => {
            let (t, v) = match m.guard {
                Guard::None => ("", String::new()),
                Guard::Rev(rev) => ("rev", rev.to_string()),
                Guard::Online(on) => ("on", if on { "1" } else { "0" }.to_owned()),
                Guard::Reset { rev, online } => ("reset", format!("{rev}:{}", u8::from(online))),
            };
            (m.id.as_str(), t, v, m.state.as_deref().unwrap_or(""))
        }
        None => ("", "", String::new(), ""),
    };
    let (event, payload) = match &entry.event {
        Some((name, payload)) => (*name, payload.get()),
        None => ("", ""),
    };
    call.arg(kind)
        .arg(module)
        .arg(gtype)
        .arg(gval)
        .arg(state)
        .arg(audience_code(entry.audience))
        .arg(event)
        .arg(payload)
        .arg(entry.once.as_deref().unwrap_or(""));
}

/// An audience as stored in the stream.
pub fn audience_code(audience: Audience) -> String {
    match audience {
        Audience::Everyone => "*".into(),
        Audience::Admins => "A".into(),
        Audience::Page(page) => format!("P{}", page.as_str()),
        Audience::User(id) => format!("U{id}"),
        Audience::Module { owner: None } => "M".into(),
        Audience::Module { owner: Some(id) } => format!("M{id}"),
    }
}

/// The audience an entry names; `None` for a code this hub does not know (newer hub).
pub fn parse_audience(code: &str) -> Option<Audience> {
    let (tag, rest) = code.split_at_checked(1)?;
    Some(match tag {
        "*" if rest.is_empty() => Audience::Everyone,
        "A" if rest.is_empty() => Audience::Admins,
        "P" => Audience::Page(Page::parse(rest)?),
        "U" => Audience::User(rest.parse().ok()?),
        "M" if rest.is_empty() => Audience::Module { owner: None },
        "M" => Audience::Module {
            owner: Some(rest.parse().ok()?),
        },
        _ => return None,
    })
}

/// How often the consumer checks that the stream's epoch is still its own.
const EPOCH_CHECK: Duration = Duration::from_secs(1);

/// If the stream's epoch changed (or vanished: a new one is made), starts this hub over on it
/// and returns the new head.
async fn check_epoch(
    cluster: &Cluster,
    events: &EventsManager,
    tracker: &tokio::sync::mpsc::Sender<crate::ingest::ModuleEvent>,
) -> Result<Option<u64>, redis::RedisError> {
    let (current, seq): (Option<String>, Option<u64>) = redis::pipe()
        .get(cluster.keys.epoch())
        .get(cluster.keys.seq())
        .query_async(&mut cluster.conn())
        .await?;
    let ours = events.epoch().await;
    let behind = seq.unwrap_or(0) < events.head().await;
    if current.as_deref() == Some(ours.as_str()) && !behind {
        return Ok(None);
    }
    if behind && current.as_deref() == Some(ours.as_str()) {
        // Redis came back from an older snapshot: same epoch, offsets this hub already saw.
        // A new epoch (only if no other hub made one meanwhile).
        let fresh = format!("{:032x}", rand::random::<u128>());
        let _: i64 = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) end return 1",
        )
        .key(cluster.keys.epoch())
        .arg(&ours)
        .arg(fresh)
        .invoke_async(&mut cluster.conn())
        .await?;
    }
    let (epoch, head) = epoch_and_head(cluster).await?;
    tracing::warn!(%epoch, head, "the shared event stream started over (Redis lost it?): every dashboard resynchronises");
    events.restart_shared(epoch, head).await;
    // What Redis lost of the modules' shared state comes back from their owners.
    let _ = tracker
        .send(crate::ingest::ModuleEvent::RepublishShared)
        .await;
    Ok(Some(head))
}

/// One entry read back from the stream.
#[derive(Debug)]
pub struct Incoming {
    /// Its offset.
    pub offset: u64,
    /// What it does.
    pub kind: Kind,
    /// Its audience.
    pub audience: Audience,
    /// Its event (events).
    pub event: Option<(&'static str, Arc<RawValue>)>,
}

fn parse_entry(entry: &redis::streams::StreamId) -> Result<Incoming, String> {
    let offset = entry
        .id
        .strip_prefix("0-")
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("unexpected stream id {}", entry.id))?;
    let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
    let kind_code = field("k");
    let kind = if kind_code == "ev" {
        Kind::Event
    } else if let Some(user) = kind_code.strip_prefix("bar:") {
        Kind::Barrier {
            user_id: user
                .parse()
                .map_err(|_| format!("bad barrier {kind_code}"))?,
            cut_off: false,
        }
    } else if let Some(user) = kind_code.strip_prefix("cut:") {
        Kind::Barrier {
            user_id: user
                .parse()
                .map_err(|_| format!("bad barrier {kind_code}"))?,
            cut_off: true,
        }
    } else if let Some(hash) = kind_code.strip_prefix("ses:") {
        Kind::SessionEnded {
            token_hash: hash.to_owned(),
        }
    } else {
        return Err(format!(
            "unknown entry kind {kind_code:?} at offset {offset}"
        ));
    };
    let audience = parse_audience(&field("a"))
        .ok_or_else(|| format!("unknown audience at offset {offset}"))?;
    let event = match kind {
        Kind::Event => {
            let name = field("e");
            let name = events::ALL
                .iter()
                .find(|n| **n == name)
                .copied()
                .ok_or_else(|| format!("unknown event {name:?} at offset {offset}"))?;
            let payload = RawValue::from_string(field("p"))
                .map_err(|e| format!("bad payload at offset {offset}: {e}"))?;
            Some((name, Arc::from(payload)))
        }
        _ => None,
    };
    Ok(Incoming {
        offset,
        kind,
        audience,
        event,
    })
}

/// The stream's epoch (created by the first hub) and its current head.
pub async fn epoch_and_head(cluster: &Cluster) -> Result<(String, u64), redis::RedisError> {
    let mut conn = cluster.conn();
    let fresh = format!("{:032x}", rand::random::<u128>());
    let _: bool = redis::cmd("SET")
        .arg(cluster.keys.epoch())
        .arg(&fresh)
        .arg("NX")
        .query_async(&mut conn)
        .await
        .map(|v: Option<String>| v.is_some())?;
    let epoch: String = conn.get(cluster.keys.epoch()).await?;
    let head: Option<u64> = conn.get(cluster.keys.seq()).await?;
    Ok((epoch, head.unwrap_or(0)))
}

/// The newest entries kept in the stream (at most `count`), oldest first: a new hub's replay
/// buffer.
pub async fn backfill(cluster: &Cluster, count: usize) -> Result<Vec<Incoming>, redis::RedisError> {
    let mut conn = cluster.conn();
    let reply: redis::streams::StreamRangeReply = conn
        .xrevrange_count(cluster.keys.events(), "+", "-", count)
        .await?;
    let mut entries: Vec<Incoming> = reply
        .ids
        .iter()
        .filter_map(|e| {
            parse_entry(e)
                .map_err(|why| tracing::warn!(why, "skipped stream entry"))
                .ok()
        })
        .collect();
    entries.reverse();
    Ok(entries)
}

/// Reads the stream after `from` until shutdown and hands entries to `events`.
pub async fn consume(
    cluster: Cluster,
    events: EventsManager,
    tracker: tokio::sync::mpsc::Sender<crate::ingest::ModuleEvent>,
    mut from: u64,
    shutdown: CancellationToken,
) {
    let mut conn = None;
    let mut failures = 0u32;
    let options = StreamReadOptions::default()
        .block(READ_BLOCK_MS)
        .count(MAX_BATCH * 4);
    let keys = [cluster.keys.events()];
    let mut epoch_checked = tokio::time::Instant::now();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match cluster.client().get_multiplexed_async_connection().await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::error!(error = %e, "cannot read the event stream from Redis; retrying");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25)))) => {}
                    }
                    continue;
                }
            },
        };
        // Redis may have lost the stream (a restart without persistence, a flush): then the
        // epoch key is gone or new, and offsets start again at 1, which this hub, past them,
        // would never read. Checked once a second.
        if epoch_checked.elapsed() >= EPOCH_CHECK {
            epoch_checked = tokio::time::Instant::now();
            match check_epoch(&cluster, &events, &tracker).await {
                Ok(Some(head)) => from = head,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check the stream's epoch"),
            }
        }
        let ids = [format!("0-{from}")];
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = c.xread_options::<_, _, Option<StreamReadReply>>(&keys, &ids, &options) => r,
        };
        match read {
            Ok(reply) => {
                failures = 0;
                let raw: Vec<redis::streams::StreamId> = reply
                    .into_iter()
                    .flat_map(|r| r.keys)
                    .flat_map(|k| k.ids)
                    .collect();
                // Past every entry read, parsed or not (one this hub cannot read, from a newer
                // hub, must not be read again and again).
                if let Some(last) = raw
                    .iter()
                    .rev()
                    .find_map(|e| e.id.strip_prefix("0-")?.parse::<u64>().ok())
                {
                    from = from.max(last);
                }
                let entries: Vec<Incoming> = raw
                    .iter()
                    .filter_map(|e| match parse_entry(e) {
                        Ok(entry) => Some(entry),
                        Err(why) => {
                            tracing::warn!(why, "skipped stream entry");
                            None
                        }
                    })
                    .collect();
                if !entries.is_empty() {
                    events.apply_shared(entries).await;
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::error!(error = %e, "event stream read failed; reconnecting");
                }
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_round_trip() {
        for a in [
            Audience::Everyone,
            Audience::Admins,
            Audience::Page(Page::Modules),
            Audience::Page(Page::Admin),
            Audience::User(42),
            Audience::Module { owner: None },
            Audience::Module { owner: Some(7) },
        ] {
            assert_eq!(parse_audience(&audience_code(a)), Some(a));
        }
        for bad in ["", "X", "Pnope", "Ux", "Mx", "*x"] {
            assert_eq!(parse_audience(bad), None, "{bad}");
        }
    }
}
