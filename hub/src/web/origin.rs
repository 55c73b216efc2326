//! Origin check: browsers attach the page's origin to WebSocket handshakes and to cross-site
//! POSTs, and nothing else stops a foreign page from riding the user's cookie (cross-site
//! WebSocket hijacking, CSRF). Socket.IO requests (every transport, before any upgrade) and
//! state-changing API requests with an `Origin` that is neither this hub nor an allowed origin
//! get 403. Requests without `Origin` (non-browser clients) pass: the cookie is what they need.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::error::ApiError;
use crate::metrics::Metrics;

/// Which origins may talk to the hub besides its own.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Extra allowed origins, e.g. `https://dashboard.example.com` (`scheme://host[:port]`).
    pub allowed: Arc<Vec<String>>,
    /// Counts refusals (`foreign_origin`).
    pub metrics: Metrics,
}

impl OriginPolicy {
    /// Whether a request with these headers may proceed.
    fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
            return true;
        }
        // Same origin: the Origin's authority is the Host the browser sent the request to.
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
    }
}

fn is_guarded(method: &Method, path: &str) -> bool {
    super::is_socket_io(path) || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware.
pub async fn check(State(policy): State<OriginPolicy>, request: Request, next: Next) -> Response {
    if is_guarded(request.method(), request.uri().path()) && !policy.allows(request.headers()) {
        policy.metrics.reject("foreign_origin");
        tracing::warn!(
            origin = ?request.headers().get(header::ORIGIN),
            path = request.uri().path(),
            "request from a foreign origin refused"
        );
        return ApiError::Forbidden.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn same_origin_allowed_and_listed_foreign_denied() {
        let policy = OriginPolicy {
            allowed: Arc::new(vec!["https://dash.example.com".into()]),
            metrics: Metrics::default(),
        };
        assert!(policy.allows(&headers(None, "hub:8080")));
        assert!(policy.allows(&headers(Some("http://hub:8080"), "hub:8080")));
        assert!(policy.allows(&headers(Some("https://dash.example.com"), "hub:8080")));
        assert!(!policy.allows(&headers(Some("http://evil.example"), "hub:8080")));
        assert!(!policy.allows(&headers(Some("http://hub:8081"), "hub:8080")));
        assert!(!policy.allows(&headers(Some("null"), "hub:8080")));
        assert!(is_guarded(&Method::GET, "/socket.io/"));
        assert!(is_guarded(&Method::POST, "/api/auth/login"));
        assert!(!is_guarded(&Method::GET, "/api/modules"));
    }
}
