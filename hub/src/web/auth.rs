//! Login, logout, "who am I", and the [`CurrentUser`] extractor every protected route uses.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Json,
    extract::{ConnectInfo, FromRequestParts, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{AppState, error::ApiError, throttle::ThrottleKey};
use crate::{realtime::events, store::User};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "mc_session";

/// The session token from a `Cookie` header, if any.
pub fn session_token_from_headers(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The logged-in user of a request; rejects with 401 otherwise.
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = session_token_from_headers(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let user = state
            .store
            .session_user(&token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Self(user))
    }
}

/// Body of `POST /api/auth/login`.
#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    email: String,
    password: String,
}

/// Whether the browser reached the hub over HTTPS: through a TLS-terminating proxy that says
/// so (`X-Forwarded-Proto: https`). The cookie then gets `Secure`. (A client that forges the
/// header only keeps its own cookie off plain HTTP.)
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn session_cookie(value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&cookie)
        .unwrap_or_else(|_| HeaderValue::from_static("mc_session=; Max-Age=0"))
}

/// `POST /api/auth/login`: 200 with the user and a new session cookie, or 401.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(ApiError::from)?;
    if req.email.len() > 254 || req.password.len() > 1024 {
        return Err(ApiError::Unauthorized);
    }
    let account = ThrottleKey::Account(req.email.to_lowercase());
    let keys = [account.clone(), ThrottleKey::Address(peer.ip())];
    state
        .throttle
        .check(&keys, Instant::now())
        .map_err(ApiError::TooManyAttempts)?;
    let Some(user) = state.store.verify_login(&req.email, &req.password).await? else {
        state.throttle.failed(&keys, Instant::now());
        tracing::warn!(email = %req.email.escape_debug(), %peer, "login failed");
        return Err(ApiError::Unauthorized);
    };
    state.throttle.succeeded(&account);
    let token = state.store.create_session(user.id).await?;
    tracing::info!(user_id = user.id, email = %user.email, "user logged in");
    let event = events::UserLoggedIn {
        id: user.id,
        name: user.name.clone(),
        email: user.email.clone(),
        is_admin: user.is_admin,
    };
    state
        .events
        .emit_to_admins(events::RT_USER_LOGGED_IN, &event)
        .await;
    let mut response = Json(&user).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(
            token.as_str(),
            state.session_ttl.as_secs(),
            over_tls(&headers),
        ),
    );
    Ok(response)
}

/// `POST /api/auth/logout`: ends the session (if any) and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = session_token_from_headers(&headers) {
        let user = state.store.session_user(&token).await?;
        state.store.delete_session(&token).await?;
        // The session is over for its live sockets too, not just for the next request.
        state
            .events
            .disconnect_session(&crate::store::hash_token(&token))
            .await;
        if let Some(user) = user {
            tracing::info!(user_id = user.id, email = %user.email, "user logged out");
            let event = events::UserLoggedOut {
                id: user.id,
                name: user.name,
                logout_time: events::timestamp(std::time::SystemTime::now()),
            };
            state
                .events
                .emit_to_admins(events::RT_USER_LOGGED_OUT, &event)
                .await;
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, over_tls(&headers)),
    );
    Ok(response)
}

/// `GET /api/auth/me`: the logged-in user, or 401.
pub async fn me(CurrentUser(user): CurrentUser) -> Json<User> {
    Json(user)
}
