//! The HTTP accept loop. `axum::serve` has two gaps for a hub on an open network: it gives
//! hyper no timer, so hyper's header read timeout never fires and a client that opens
//! connections and sends nothing (or a request head a byte a minute) holds them forever; and it
//! accepts without bound, until the process runs out of file descriptors. Here a connection must
//! deliver each request head within `header_timeout` (closed otherwise), and at most
//! `max_connections` are served at once: one more is closed at once and counted
//! (`mc_rejected_total{reason="http_connection_limit"}`), so a flood costs no memory and the
//! descriptors it takes come back. Every accepted socket gets TCP_NODELAY (small WebSocket
//! frames must not wait for delayed ACKs, see DEPENDENCIES.md) and the peer address
//! (`ConnectInfo`) that the throttles and logs use.
//!
//! A connection upgraded to a WebSocket leaves this loop's count (hyper hands the socket over);
//! the realtime layer bounds those: a socket that does not authenticate is refused, and one that
//! never connects a namespace is closed by Socket.IO's connect timeout.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::{Service, ServiceExt};

use crate::metrics::Metrics;

/// Bounds on HTTP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections served at once (WebSockets excluded once upgraded).
    pub max_connections: usize,
    /// Longest wait for a request head, the first one included.
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown`; connections in flight finish their request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    metrics: Metrics,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.reject("http_connection_limit");
            tracing::debug!(%peer, max = limits.max_connections, "HTTP connection over the limit: closed");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = match make_service.call(peer).await {
            Ok(s) => s,
            Err(never) => match never {},
        };
        let service = TowerToHyperService::new(
            service.map_request(|req: Request<Incoming>| req.map(Body::new)),
        );
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = http
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::trace!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
}
