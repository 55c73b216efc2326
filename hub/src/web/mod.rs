//! HTTP: the JSON API, the embedded dashboard, and the Socket.IO endpoint, on one axum router.

pub mod admin;
pub mod auth;
pub mod commands;
pub mod error;
pub mod modules;
pub mod ops;
pub mod origin;
pub mod realtime;
pub mod serve;
pub mod static_files;
pub mod throttle;
pub mod users;
pub mod ws_deflate;

use std::time::Duration;

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, header::ACCEPT_ENCODING},
    routing::{get, post},
};
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};

use crate::{
    commands::CommandRouter, connections::LiveConnections, realtime::EventsManager, store::Store,
    tracker::TrackerHandle,
};

/// Whether `path` is Socket.IO's (socketioxide's default `/socket.io` path): the origin check,
/// the deflate front and the accept loop each treat those requests apart.
pub(crate) fn is_socket_io(path: &str) -> bool {
    path.starts_with("/socket.io")
}

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Users, sessions, registry.
    pub store: Store,
    /// Live module state.
    pub tracker: TrackerHandle,
    /// Lifetime of a login session.
    pub session_ttl: Duration,
    /// Sends commands to modules, over MQTT or serial.
    pub commands: CommandRouter,
    /// Who is connected how (the snapshot shows each live module's transport).
    pub connections: LiveConnections,
    /// Emits realtime events (logins and logouts go to admins).
    pub events: EventsManager,
    /// Wakes the registry watcher after a change (it applies the effects).
    pub registry: crate::registry::RegistryNotifier,
    /// Stats for `GET /api/admin/stats` (its own collector: rates since the previous request).
    pub stats: std::sync::Arc<crate::stats::StatsCollector>,
    /// Login brute-force throttling.
    pub throttle: std::sync::Arc<throttle::LoginThrottle>,
    /// The hub's counters (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Cluster mode: commands for modules another hub owns go to that hub.
    pub remote_commands: Option<crate::cluster::commands::RemoteCommands>,
}

/// The whole HTTP application; `socketio` is the Socket.IO layer from
/// [`crate::realtime::adapter::builder`].
/// The origin check wraps everything, Socket.IO included, so it runs before any upgrade.
/// Outermost first: origin check → permessage-deflate front for Socket.IO WebSockets
/// (`ws_deflate`) → Socket.IO → gzip/brotli (HTTP routes only: Socket.IO answers before the
/// compression layer sees its requests) → routes.
pub fn app(
    state: AppState,
    socketio: socketioxide::layer::SocketIoLayer<crate::realtime::adapter::HubAdapter>,
    deflate: ws_deflate::WsDeflateLayer,
    origins: origin::OriginPolicy,
    request_timeout: std::time::Duration,
) -> Router {
    Router::new()
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/me", get(auth::me).patch(users::update_me))
        .route("/api/users", get(users::list).post(users::create))
        .route("/api/admin/stats", get(admin::stats))
        .route("/api/admin/pending", get(admin::pending))
        .route("/api/admin/pending/{id}/claim", post(admin::claim))
        .route(
            "/api/admin/pending/{id}",
            axum::routing::delete(admin::dismiss),
        )
        .route(
            "/api/users/{id}",
            axum::routing::patch(users::update).delete(users::remove),
        )
        .route("/api/modules", get(modules::list).post(modules::create))
        .route(
            "/api/modules/{id}",
            axum::routing::patch(modules::update).delete(modules::remove),
        )
        .route("/api/modules/{id}/token", post(modules::rotate_token))
        .route("/api/modules/{id}/commands", post(commands::send))
        .route("/api/realtime/config", get(realtime::config))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/", get(static_files::index))
        .route("/modules", get(static_files::index))
        .route("/login", get(static_files::login))
        .route("/admin", get(static_files::admin))
        // A fallback, not a `/{*path}` GET route: a catch-all route would also match
        // `/socket.io/` and answer its POSTs (polling transport) before Socket.IO sees them.
        .fallback(static_files::asset)
        .with_state(state)
        // A request (its body included) that takes longer than `request_timeout` is answered
        // 408 and its connection freed: a body sent a byte at a time must not hold a connection slot (`serve`) for
        // ever. Socket.IO (long polling, upgrades) is answered before this layer.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        // Honours Accept-Encoding (br, gzip), keeps Content-Type, adds `Vary`; skips images and
        // event streams (tower-http's default predicate) and bodies of 512 bytes or less (small
        // JSON answers: the framing and the CPU cost more than they save).
        .layer(
            tower_http::compression::CompressionLayer::new()
                .compress_when(DefaultPredicate::new().and(SizeAbove::new(COMPRESS_ABOVE))),
        )
        .layer(axum::middleware::map_request(allow_identity))
        .layer(socketio)
        .layer(deflate)
        .layer(axum::middleware::from_fn_with_state(origins, origin::check))
}

/// HTTP bodies up to this size are sent uncompressed.
const COMPRESS_ABOVE: u64 = 512;

/// Lifts an `Accept-Encoding` ban on the uncompressed form (`identity;q=0`, `*;q=0`) before the
/// compression layer sees it. When nothing the client accepts is available, tower-http turns
/// the status into 406 after the handler ran: a POST would take effect while its client reads
/// a refusal. An uncompressed answer is better (and acceptable in practice); encodings the
/// client does accept are still preferred.
async fn allow_identity(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let banned = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(bans_identity);
    if !banned {
        return request;
    }
    let kept: Vec<&str> = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty() && !bans_identity(item))
        .collect();
    let rewritten = HeaderValue::from_str(&kept.join(", ")).ok();
    headers.remove(ACCEPT_ENCODING);
    if let Some(value) = rewritten.filter(|v| !v.is_empty()) {
        headers.insert(ACCEPT_ENCODING, value);
    }
    request
}

/// An `Accept-Encoding` item `identity;q=0` or `*;q=0` (any case or spacing, `q=0.000`...).
fn bans_identity(item: &str) -> bool {
    let mut parts = item.split(';');
    let coding = parts.next().unwrap_or_default().trim();
    (coding == "*" || coding.eq_ignore_ascii_case("identity"))
        && parts.any(|param| {
            param.split_once('=').is_some_and(|(name, q)| {
                name.trim().eq_ignore_ascii_case("q")
                    && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_bans_are_recognised() {
        for banned in ["identity;q=0", " *; q=0.000", "IDENTITY ;Q=0.0"] {
            assert!(bans_identity(banned), "{banned}");
        }
        for allowed in ["identity", "*", "identity;q=0.5", "gzip;q=0", "*;q=1", "br"] {
            assert!(!bans_identity(allowed), "{allowed}");
        }
    }

    #[tokio::test]
    async fn identity_bans_are_lifted_and_the_rest_kept() {
        let rewrite = async |values: &[&str]| {
            let mut request = Request::new(axum::body::Body::empty());
            for v in values {
                request
                    .headers_mut()
                    .append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            let request = allow_identity(request).await;
            let out: Vec<String> = request
                .headers()
                .get_all(ACCEPT_ENCODING)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            out
        };
        assert_eq!(rewrite(&["identity;q=0"]).await, Vec::<String>::new());
        assert_eq!(rewrite(&["*;q=0"]).await, Vec::<String>::new());
        assert_eq!(
            rewrite(&["gzip;q=0.5, identity;q=0", "br"]).await,
            ["gzip;q=0.5, br"]
        );
        // Untouched without a ban (several header lines stay as they are).
        assert_eq!(rewrite(&["gzip", "br;q=0"]).await, ["gzip", "br;q=0"]);
    }
}
