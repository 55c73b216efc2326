//! HTTP: the JSON API, the embedded dashboard, and the Socket.IO endpoint, on one axum router.

pub mod admin;
pub mod auth;
pub mod commands;
pub mod error;
pub mod modules;
pub mod origin;
pub mod static_files;
pub mod realtime;
pub mod throttle;
pub mod users;
pub mod ws_deflate;

use std::time::Duration;

use axum::{
    Router,
    routing::{get, post},
};

use crate::{
    commands::CommandRouter, connections::LiveConnections, realtime::EventsManager, store::Store,
    tracker::TrackerHandle,
};

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
}

/// The whole HTTP application; `socketio` is the Socket.IO layer from `SocketIo::builder()`.
/// The origin check wraps everything, Socket.IO included, so it runs before any upgrade.
/// Outermost first: origin check → permessage-deflate front for Socket.IO WebSockets
/// (`ws_deflate`) → Socket.IO → gzip/brotli (HTTP routes only: Socket.IO answers before the
/// compression layer sees its requests) → routes.
pub fn app(
    state: AppState,
    socketio: socketioxide::layer::SocketIoLayer,
    deflate: ws_deflate::WsDeflateLayer,
    origins: origin::OriginPolicy,
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
        .route("/healthz", get(async || "ok"))
        .route("/", get(static_files::index))
        .route("/modules", get(static_files::index))
        .route("/login", get(static_files::login))
        .route("/admin", get(static_files::admin))
        // A fallback, not a `/{*path}` GET route: a catch-all route would also match
        // `/socket.io/` and answer its POSTs (polling transport) before Socket.IO sees them.
        .fallback(static_files::asset)
        .with_state(state)
        // Honours Accept-Encoding (br, gzip), keeps Content-Type, adds `Vary`; skips bodies
        // under 32 bytes, images and event streams (tower-http's default predicate).
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(socketio)
        .layer(deflate)
        .layer(axum::middleware::from_fn_with_state(origins, origin::check))
}
