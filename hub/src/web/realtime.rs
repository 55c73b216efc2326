//! `GET /api/realtime/config`: what dashboards need before they connect (no login): how to
//! reconnect. The stream contract itself is in `docs/REALTIME.md`.

use axum::{Json, extract::State};

use super::AppState;
use crate::realtime::ClientDefaults;

/// `GET /api/realtime/config`: `{maxReconnectAttempts, reconnectDelay, maxReconnectDelay}`.
pub async fn config(State(state): State<AppState>) -> Json<ClientDefaults> {
    Json(state.events.client_defaults())
}
