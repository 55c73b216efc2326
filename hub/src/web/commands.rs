//! `POST /api/modules/{id}/commands`: send a command to a module the caller may manage.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use mc_protocol::{CommandAction, Encoding, ModuleId, link::CommandResult};
use serde::{Deserialize, Serialize};

use super::{AppState, auth::CurrentUser, error::ApiError};
use crate::commands::{CommandError, Delivery};

/// Body: `{"action": {"setHeartbeatInterval": {"ms": 1000}}}` or `{"action": "reboot"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    action: CommandAction,
}

/// Answer: the command as sent and, when the module acknowledged it (serial), its result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandSent {
    id: u32,
    module_id: String,
    action: CommandAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<CommandOutcome>,
}

/// What the module said it did with the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CommandOutcome {
    /// Carried out.
    Done,
    /// An argument is out of the module's range.
    InvalidArgument,
    /// The module does not implement this action.
    Unsupported,
}

impl From<CommandResult> for CommandOutcome {
    fn from(result: CommandResult) -> Self {
        match result {
            CommandResult::Done => Self::Done,
            CommandResult::InvalidArgument => Self::InvalidArgument,
            CommandResult::Unsupported => Self::Unsupported,
        }
    }
}

/// Sends a command: 202 when published over MQTT, 200 with the module's `result` when a serial
/// module acknowledged it, 504 when it did not; 404 for a module the caller may not see (or
/// that does not exist), 409 when it is offline (or its link is closing), 400 for an invalid command, 503 when too many
/// commands are waiting for it.
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
    let Json(request) = body.map_err(ApiError::from)?;
    let live = state.tracker.module(&id).await.filter(|l| l.online);
    let Some(live) = live else {
        return Err(ApiError::Conflict("module is offline".into()));
    };
    let encoding = live.encoding.unwrap_or(Encoding::Native);
    let (command, delivery) = state
        .commands
        .send(&id, request.action, encoding, live.transport)
        .await
        .map_err(|e| match e {
            CommandError::Offline => ApiError::Conflict("module is offline".into()),
            CommandError::Invalid(e) => ApiError::BadRequest(e.to_string()),
            CommandError::Link(e) => ApiError::Internal(e),
            CommandError::NotAcknowledged(_) => {
                ApiError::Timeout("the module did not acknowledge the command".into())
            }
            CommandError::Busy => ApiError::Unavailable,
        })?;
    let (status, result) = match delivery {
        Delivery::Published => (StatusCode::ACCEPTED, None),
        Delivery::Acknowledged(result) => (StatusCode::OK, Some(result.into())),
    };
    Ok((
        status,
        Json(CommandSent {
            id: command.id,
            module_id: id.to_string(),
            action: command.action,
            result,
        }),
    ))
}
