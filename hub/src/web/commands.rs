//! `POST /api/modules/{id}/commands`: send a command to a module the caller may manage.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use mc_protocol::{CommandAction, Encoding, ModuleId};
use serde::{Deserialize, Serialize};

use super::{AppState, auth::CurrentUser, error::ApiError};
use crate::commands::CommandError;

/// Body: `{"action": {"setHeartbeatInterval": {"ms": 1000}}}` or `{"action": "reboot"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    action: CommandAction,
}

/// Answer: the command as sent.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandSent {
    id: u32,
    module_id: String,
    action: CommandAction,
}

/// Sends a command: 202 when published, 404 for a module the caller may not see (or that does
/// not exist), 409 when it is offline, 400 for an invalid command.
pub async fn send(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    body: Result<Json<CommandRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CommandSent>), ApiError> {
    let id = ModuleId::new(&id).map_err(|_| ApiError::NotFound)?;
    let record = state.store.module(&id).await?.ok_or(ApiError::NotFound)?;
    if !crate::authz::can_manage_module(&user, &record) {
        return Err(ApiError::NotFound);
    }
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let live = state.tracker.module(&id).await.filter(|l| l.online);
    let Some(live) = live else {
        return Err(ApiError::Conflict("module is offline".into()));
    };
    let encoding = live.encoding.unwrap_or(Encoding::Native);
    let command = state
        .commands
        .send(&id, request.action, encoding)
        .map_err(|e| match e {
            CommandError::Invalid(e) => ApiError::BadRequest(e.to_string()),
            CommandError::Link(e) => ApiError::Internal(e),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CommandSent {
            id: command.id,
            module_id: id.to_string(),
            action: command.action,
        }),
    ))
}
