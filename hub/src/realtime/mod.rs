//! The realtime layer: Socket.IO on axum. Sockets authenticate with the login session cookie,
//! join their rooms, and [`EventsManager`] targets events at everyone, admins, a page or a user.

pub mod events;
pub mod rooms;

use serde::{Deserialize, Serialize};
use socketioxide::{
    SocketIo,
    extract::{SocketRef, TryData},
    handler::ConnectHandler,
};

use crate::{metrics::Metrics, store::Store, web::auth::session_token_from_headers};
use rooms::Page;

/// Emits events to targeted audiences. Cheap to clone; any task may hold one.
#[derive(Clone)]
pub struct EventsManager {
    io: SocketIo,
    metrics: Metrics,
}

impl EventsManager {
    /// Wraps a Socket.IO handle.
    pub fn new(io: SocketIo, metrics: Metrics) -> Self {
        Self { io, metrics }
    }

    /// To every connected client.
    pub async fn broadcast<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        self.record(event, self.io.emit(event, data).await);
    }

    /// To admins only.
    pub async fn emit_to_admins<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        self.record(event, self.io.to(rooms::ADMINS).emit(event, data).await);
    }

    /// To the clients of one page.
    pub async fn emit_to_page<T: Serialize + ?Sized>(&self, page: Page, event: &str, data: &T) {
        self.record(event, self.io.to(page.room()).emit(event, data).await);
    }

    /// To every tab of one user.
    pub async fn emit_to_user<T: Serialize + ?Sized>(&self, user_id: i64, event: &str, data: &T) {
        self.record(
            event,
            self.io.to(rooms::user(user_id)).emit(event, data).await,
        );
    }

    /// To admins and every tab of one user (each socket once).
    pub async fn emit_to_admins_and_user<T: Serialize + ?Sized>(
        &self,
        user_id: i64,
        event: &str,
        data: &T,
    ) {
        self.emit_to_module_audience(Some(user_id), event, data)
            .await;
    }

    /// To whoever may see a module ([`crate::authz::module_audience`]), each socket once.
    pub async fn emit_to_module_audience<T: Serialize + ?Sized>(
        &self,
        owner: Option<i64>,
        event: &str,
        data: &T,
    ) {
        let result = self
            .io
            .to(crate::authz::module_audience(owner))
            .emit(event, data)
            .await;
        self.record(event, result);
    }

    fn record(&self, event: &str, result: Result<(), socketioxide::BroadcastError>) {
        self.metrics.events_emitted.inc();
        if let Err(e) = result {
            // A client whose buffer is full misses this event; it resyncs from the revision gap.
            self.metrics.emit_errors.inc();
            tracing::debug!(event, error = %e, "emit failed for some clients");
        }
    }

    /// Disconnects every socket opened with the session whose token hashes to `token_hash`.
    pub async fn disconnect_session(&self, token_hash: &str) {
        if let Err(e) = self.io.to(rooms::session(token_hash)).disconnect().await {
            tracing::debug!(error = %e, "could not disconnect some sockets of a session");
        }
    }

    /// Disconnects every socket of a user (all sessions).
    pub async fn disconnect_user(&self, user_id: i64) {
        if let Err(e) = self.io.to(rooms::user(user_id)).disconnect().await {
            tracing::debug!(error = %e, "could not disconnect some sockets of a user");
        }
    }

    /// Number of connected sockets on this hub.
    pub fn connected_clients(&self) -> usize {
        self.io.sockets().len()
    }

    /// Connected sockets and the number of distinct users behind them.
    pub fn connected_clients_and_users(&self) -> (usize, usize) {
        let sockets = self.io.sockets();
        let users: std::collections::HashSet<i64> = sockets
            .iter()
            .filter_map(|s| s.extensions.get::<SocketUser>().map(|u| u.user_id))
            .collect();
        (sockets.len(), users.len())
    }
}

/// What a client sends in its handshake: `io({auth: {page: "modules"}})`.
#[derive(Debug, Deserialize)]
struct HandshakeAuth {
    page: Option<String>,
}

/// Refusal reasons sent to the client as `connect_error` messages.
#[derive(Debug, thiserror::Error)]
enum ConnectRefusal {
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden page")]
    ForbiddenPage,
    #[error("unavailable")]
    Unavailable,
}

/// The authenticated user of a socket, kept in its extensions.
#[derive(Debug, Clone)]
pub struct SocketUser {
    /// User id.
    pub user_id: i64,
    /// Admin flag.
    pub is_admin: bool,
    /// Page named at handshake.
    pub page: Page,
    /// SHA-256 of the session token it connected with.
    pub session_hash: String,
}

/// Registers the namespace and its handlers: every Socket.IO handler of the hub is here.
pub fn register_handlers(io: &SocketIo, store: Store) {
    io.ns(
        "/",
        (async |socket: SocketRef| {
            let Some(user) = socket.extensions.get::<SocketUser>() else {
                return;
            };
            socket.join(rooms::user(user.user_id));
            if user.is_admin {
                socket.join(rooms::ADMINS);
            }
            socket.join(user.page.room());
            socket.join(rooms::session(&user.session_hash));
            tracing::info!(socket = %socket.id, user_id = user.user_id, page = user.page.as_str(), "client registered");
            let info = events::SessionInfo {
                user_id: user.user_id,
                is_admin: user.is_admin,
                page: user.page.as_str().to_owned(),
            };
            if let Err(e) = socket.emit(events::RT_SESSION, &info) {
                tracing::debug!(error = %e, "could not greet client");
            }
            socket.on_disconnect(async |socket: SocketRef| {
                tracing::info!(socket = %socket.id, "client unregistered");
            });
        })
        .with(async move |socket: SocketRef, TryData(auth): TryData<HandshakeAuth>| {
            authenticate(&store, &socket, auth.ok()).await
        }),
    );
}

async fn authenticate(
    store: &Store,
    socket: &SocketRef,
    auth: Option<HandshakeAuth>,
) -> Result<(), ConnectRefusal> {
    let token = session_token_from_headers(&socket.req_parts().headers)
        .ok_or(ConnectRefusal::Unauthorized)?;
    let user = store
        .session_user(&token)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "session lookup failed");
            ConnectRefusal::Unavailable
        })?
        .ok_or(ConnectRefusal::Unauthorized)?;
    let page = match auth.and_then(|a| a.page) {
        None => Page::Modules,
        Some(name) => Page::parse(&name).ok_or(ConnectRefusal::ForbiddenPage)?,
    };
    if !crate::authz::can_open_page(&user, page) {
        return Err(ConnectRefusal::ForbiddenPage);
    }
    socket.extensions.insert(SocketUser {
        user_id: user.id,
        is_admin: user.is_admin,
        page,
        session_hash: crate::store::hash_token(&token),
    });
    Ok(())
}
