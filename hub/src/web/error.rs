//! HTTP errors: a status and `{"error": {"code", "message"}}`, where `code` is a stable
//! machine-readable word and `message` is for people. Internals go to the log, never to the
//! client.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with a message about the request.
    BadRequest(String),
    /// 413: the body is over the size limit (2 MiB).
    PayloadTooLarge(String),
    /// 401: no valid session or wrong credentials.
    Unauthorized,
    /// 403: not allowed (e.g. a foreign origin).
    Forbidden,
    /// 404: no such thing, or the caller may not know it exists.
    NotFound,
    /// 409: the request conflicts with the current state.
    Conflict(String),
    /// 429: too many failed logins; retry after this long.
    TooManyAttempts(std::time::Duration),
    /// 503: a part of the hub did not answer in time.
    Unavailable,
    /// 504: a module did not answer in time (e.g. a serial module never acknowledged a
    /// command).
    Timeout(String),
    /// 507: the disk is full, the change was not saved (logged).
    InsufficientStorage,
    /// 503: the data directory is read-only, the change was not saved (logged).
    ReadOnlyStorage,
    /// 500: logged, not explained.
    Internal(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.as_str()),
            Self::PayloadTooLarge(m) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                m.as_str(),
            ),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "forbidden"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "not found"),
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.as_str()),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable",
            ),
            Self::InsufficientStorage => (
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                "the hub's disk is full: the change was not saved",
            ),
            Self::ReadOnlyStorage => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_read_only",
                "the hub's data directory is read-only: the change was not saved",
            ),
            Self::Timeout(m) => (StatusCode::GATEWAY_TIMEOUT, "timeout", m.as_str()),
            Self::TooManyAttempts(wait) => {
                let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let body = Json(Body {
                    error: Detail {
                        code: "too_many_attempts",
                        message: "too many failed attempts: try again later",
                    },
                });
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, retry_after.to_string())],
                    body,
                )
                    .into_response();
            }
            Self::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        };
        (
            status,
            Json(Body {
                error: Detail { code, message },
            }),
        )
            .into_response()
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    /// A body over the limit is 413; anything else wrong with a JSON body (not JSON, not
    /// UTF-8, the wrong content type, the wrong shape) is 400 with axum's explanation.
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge(e.body_text())
        } else {
            Self::BadRequest(e.body_text())
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    /// A full or read-only disk is the operator's to fix, and the client may retry later: it
    /// gets its own status and code (the detail goes to the log). Anything else is a 500.
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreErrorKind;
        match e.kind() {
            StoreErrorKind::DiskFull => {
                tracing::error!(error = %e, "database write failed: disk full");
                Self::InsufficientStorage
            }
            StoreErrorKind::ReadOnly => {
                tracing::error!(error = %e, "database write failed: read-only");
                Self::ReadOnlyStorage
            }
            _ => Self::Internal(e.to_string()),
        }
    }
}
