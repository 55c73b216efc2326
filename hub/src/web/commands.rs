//! `POST /api/modules/{id}/commands`: send a command to a module the caller may manage, or
//! queue it while the module is offline.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use mc_protocol::{CommandAction, Encoding, ModuleId, link::CommandResult};
use serde::{Deserialize, Serialize};

use super::{AppState, auth::CurrentUser, error::ApiError};
use crate::commands::{
    CommandError, Delivery,
    queue::{Forget, QueueError},
};

/// Body: `{"action": {"setHeartbeatInterval": {"ms": 1000}}}` or `{"action": "reboot"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    action: CommandAction,
}

/// Answer: the command as sent and, when the module acknowledged it (serial), its result; or,
/// for a module that is offline, that it was queued and until when it waits.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandSent {
    id: u32,
    module_id: String,
    action: CommandAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<CommandOutcome>,
    /// Waits in the hub's queue until the module is back.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    queued: bool,
    /// When a queued command is dropped if the module is not back (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
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
/// module acknowledged it, 504 when it did not. A module that is offline (or whose link is
/// closing) gets it later: 202 with `queued: true` and `expiresAt` (see
/// [`crate::commands::queue`]); so does an online module that still has queued commands, which
/// a new one must not overtake. 404 for a module the caller may not see (or that does not
/// exist), 409 when it is disabled (or queueing is off and it is offline), 400 for an invalid
/// command, 503 when too many commands are waiting for it.
pub async fn send(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    body: Result<Json<CommandRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let id = ModuleId::new(&id).map_err(|_| ApiError::NotFound)?;
    let record = state.store.module(&id).await?.ok_or(ApiError::NotFound)?;
    if !crate::authz::can_manage_module(&user, &record) {
        return Err(ApiError::NotFound);
    }
    let Json(request) = body.map_err(ApiError::from)?;
    // In a cluster, the module's owner decides (it knows whether the module is ready and
    // keeps its queue): its answer is this answer.
    if let Some(remote) = &state.remote_commands
        && let Some(owner) = remote.owner_elsewhere(&id)
    {
        return match remote.ask(&owner, &id, request.action).await {
            Ok(reply) => {
                let status =
                    StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Ok((status, Json(reply.body)).into_response())
            }
            Err(e) => {
                tracing::warn!(module = %id, %owner, error = %e, "remote command failed");
                Err(ApiError::Unavailable)
            }
        };
    }
    let (status, sent) = execute(&state, &id, request.action).await?;
    Ok((status, Json(sent)).into_response())
}

/// Cluster mode: a command another hub took for a module this hub owns; the answer goes back
/// to that hub as it would have gone to its client.
pub async fn execute_for_peer(
    state: AppState,
    id: ModuleId,
    action: CommandAction,
) -> crate::cluster::commands::Reply {
    use crate::cluster::commands::Reply;
    match execute(&state, &id, action).await {
        Ok((status, sent)) => Reply::new(
            status.as_u16(),
            serde_json::to_value(sent).unwrap_or_default(),
        ),
        Err(e) => {
            let response = e.into_response();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
                .await
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            Reply::new(status, body)
        }
    }
}

/// Sends or queues a command for `id` on this hub (its tracker, its queue).
async fn execute(
    state: &AppState,
    id: &ModuleId,
    action: CommandAction,
) -> Result<(StatusCode, CommandSent), ApiError> {
    let id = id.clone();
    let record = state.store.module(&id).await?.ok_or(ApiError::NotFound)?;
    let request = CommandRequest { action };
    if record.disabled {
        // It may not connect: a queued command would run whenever it is enabled again.
        return Err(ApiError::Conflict("module is disabled".into()));
    }
    let command = state.commands.command(request.action).map_err(refusal)?;
    let queue = state.commands.queue();
    // Ready, not merely online as clients see it (damped): a module whose new connection has
    // not said hello yet may not have subscribed, and a command published now would be lost.
    let live = state.tracker.module(&id).await.filter(|l| l.ready);
    if let Some(live) = live
        && !queue.is_pending(&id)
    {
        let encoding = live.encoding.unwrap_or(Encoding::Native);
        match state
            .commands
            .deliver(&id, command.clone(), encoding, live.transport)
            .await
        {
            Ok(delivery) => {
                let (status, result) = match delivery {
                    Delivery::Published => (StatusCode::ACCEPTED, None),
                    Delivery::Acknowledged(result) => (StatusCode::OK, Some(result.into())),
                };
                let sent = CommandSent {
                    id: command.id,
                    module_id: id.to_string(),
                    action: command.action,
                    result,
                    queued: false,
                    expires_at: None,
                };
                return Ok((status, sent));
            }
            // Its link is closing: queued like for an offline module.
            Err(CommandError::Offline) => {}
            Err(e) => return Err(refusal(e)),
        }
    }
    let expires = queue.push(&id, command.clone()).map_err(|e| match e {
        QueueError::Off => ApiError::Conflict("module is offline".into()),
        QueueError::Full => ApiError::Unavailable,
    })?;
    // Disabled (or removed) since the check above: the registry watcher may have dropped the
    // module's queue before this command joined it, and it must not wait for a re-enable. (A
    // change after this read reaches the watcher after the push, which drops it then.) A store
    // error here leaves the command queued: it was checked once already.
    match state.store.module(&id).await {
        Ok(Some(record)) if !record.disabled => {}
        Ok(record) => {
            let why = if record.is_some() {
                Forget::Disabled
            } else {
                Forget::Removed
            };
            queue.forget(&id, why);
            return Err(match why {
                Forget::Disabled => ApiError::Conflict("module is disabled".into()),
                Forget::Removed | Forget::HandedOver => ApiError::NotFound,
            });
        }
        Err(e) => tracing::warn!(module = %id, error = %e, "could not check the module again"),
    }
    // It may have come back while this request was on its way: its hello then found nothing
    // queued. The tracker (which handles that hello too) offers the command now if the module
    // is ready, so that it goes now rather than at the module's next message.
    state.tracker.offer_queued(&id).await;
    let sent = CommandSent {
        id: command.id,
        module_id: id.to_string(),
        action: command.action,
        result: None,
        queued: true,
        expires_at: Some(crate::realtime::events::timestamp(expires)),
    };
    Ok((StatusCode::ACCEPTED, sent))
}

/// The HTTP answer to a command that could not be sent.
fn refusal(e: CommandError) -> ApiError {
    match e {
        CommandError::Offline => ApiError::Conflict("module is offline".into()),
        CommandError::Invalid(e) => ApiError::BadRequest(e.to_string()),
        CommandError::Link(e) => ApiError::Internal(e),
        CommandError::NotAcknowledged(_) => {
            ApiError::Timeout("the module did not acknowledge the command".into())
        }
        CommandError::Busy => ApiError::Unavailable,
    }
}
