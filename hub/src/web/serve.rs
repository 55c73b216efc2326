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

use axum::{Router, body::Body, extract::Request, http::HeaderValue};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::{Service, ServiceExt};

use crate::metrics::Metrics;

/// Gives a request a head of its own, not slices of hyper's read buffer.
///
/// hyper parses the URI and header values as slices of the connection's 8 KiB read buffer.
/// socketioxide keeps each connection's request head (its `req_parts`, extensions included:
/// axum's `OriginalUri` is a clone of the URI) for the connection's life, so keeping the slices
/// would keep the whole buffer long after the upgrade handed the socket over: 8 KB of heap per
/// dashboard, for a head of a few hundred bytes. This runs before the router, so the clones it
/// makes share the copies (and `ws_deflate` calls it on its inner requests). Header names are
/// owned already.
pub(crate) fn own_head<B>(request: &mut Request<B>) {
    if let Ok(uri) = request.uri().to_string().parse() {
        *request.uri_mut() = uri;
    }
    let shared = std::mem::take(request.headers_mut());
    let owned = request.headers_mut();
    owned.reserve(shared.len());
    for (name, value) in &shared {
        // Bytes that were a valid value are one still; the fallback keeps the shared value.
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
}

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
        let service = TowerToHyperService::new(service.map_request(|req: Request<Incoming>| {
            let mut req = req.map(Body::new);
            if super::is_socket_io(req.uri().path()) {
                own_head(&mut req);
            }
            req
        }));
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

#[cfg(test)]
mod tests {
    use axum::http::{Uri, header::COOKIE};
    use bytes::Bytes;

    use super::*;

    /// A request as hyper builds it: the URI and the values are slices of one read buffer.
    fn parsed(buffer: &Bytes, uri_len: usize, cookie_len: usize) -> Request<()> {
        let mut request = Request::new(());
        *request.uri_mut() = Uri::from_maybe_shared(buffer.slice(..uri_len)).unwrap();
        let cookie = buffer.slice(uri_len..uri_len + cookie_len);
        let cookie = HeaderValue::from_maybe_shared(cookie).unwrap();
        request.headers_mut().insert(COOKIE, cookie);
        request
    }

    #[test]
    fn an_owned_head_no_longer_shares_the_read_buffer() {
        let (path, cookie) = ("/socket.io/?EIO=4&transport=websocket", "mc_session=abc");
        let mut raw = vec![b'x'; 8192];
        raw[..path.len()].copy_from_slice(path.as_bytes());
        raw[path.len()..path.len() + cookie.len()].copy_from_slice(cookie.as_bytes());
        let buffer = Bytes::from(raw);
        let in_buffer = |p: *const u8| buffer.as_ptr_range().contains(&p);
        let original = parsed(&buffer, path.len(), cookie.len());
        assert!(
            in_buffer(original.uri().path().as_ptr()),
            "the setup shares"
        );

        let mut request = parsed(&buffer, path.len(), cookie.len());
        own_head(&mut request);
        assert_eq!(request.uri(), original.uri());
        assert_eq!(request.headers(), original.headers());
        assert!(!in_buffer(request.uri().path().as_ptr()));
        assert!(!in_buffer(request.uri().query().unwrap().as_ptr()));
        assert!(!in_buffer(request.headers()[COOKIE].as_bytes().as_ptr()));
    }
}
