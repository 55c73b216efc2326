//! Admin-only views: global stats, and unregistered modules that tried to connect (pending),
//! which an admin can claim into the registry or dismiss.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use mc_protocol::ModuleId;
use serde::Serialize;

use super::{
    AppState,
    auth::CurrentUser,
    error::ApiError,
    modules::{CreateModule, WithPassword},
    users::require_admin,
};
use crate::{stats::GlobalStats, store::PendingModule};

/// `GET /api/admin/stats` (admins): the global stats now.
pub async fn stats(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<GlobalStats>, ApiError> {
    require_admin(&user)?;
    Ok(Json(state.stats.collect().await?))
}

/// Answer of `GET /api/admin/pending`.
#[derive(Debug, Serialize)]
pub struct PendingResponse {
    modules: Vec<PendingModule>,
}

/// `GET /api/admin/pending` (admins): unregistered modules that tried to connect.
pub async fn pending(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<PendingResponse>, ApiError> {
    require_admin(&user)?;
    Ok(Json(PendingResponse {
        modules: state.store.pending_modules().await?,
    }))
}

/// `POST /api/admin/pending/{id}/claim` (admins): registers a pending module (body as
/// `POST /api/modules`, without `id`), 201 with its password.
pub async fn claim(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<WithPassword>), ApiError> {
    require_admin(&current.0)?;
    let module = ModuleId::new(&id).map_err(|_| ApiError::NotFound)?;
    let pending = state.store.pending_modules().await?;
    if !pending.iter().any(|p| p.id == module.as_str()) {
        return Err(ApiError::NotFound);
    }
    let Json(mut body) = body.map_err(ApiError::from)?;
    let Some(fields) = body.as_object_mut() else {
        return Err(ApiError::BadRequest("expected a JSON object".into()));
    };
    fields.insert("id".into(), module.as_str().into());
    let request: CreateModule =
        serde_json::from_value(body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    super::modules::create(State(state), current, Ok(Json(request))).await
}

/// `DELETE /api/admin/pending/{id}` (admins): forgets a pending module.
pub async fn dismiss(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&user)?;
    let module = ModuleId::new(&id).map_err(|_| ApiError::NotFound)?;
    if state.store.delete_pending(&module).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
