//! The module registry over HTTP: the snapshot (`GET /api/modules`) a client renders before the
//! first event, and create / update / delete / token rotation. Admins manage every module; a
//! user manages their own. A module the caller may not manage answers 404, never 403, so that
//! its existence does not leak. The effects of a change (events, closed connections) are
//! applied by [`crate::registry`], as for changes made with the CLI.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use mc_protocol::ModuleId;
use serde::{Deserialize, Deserializer, Serialize};

use super::{AppState, auth::CurrentUser, error::ApiError};
use crate::{
    authz,
    connections::Transport,
    liveness::{MAX_TIMEOUT, MIN_TIMEOUT},
    realtime::events::timestamp,
    store::{ModulePatch, ModuleRecord, NewModule, StoreError, User},
    tracker::LiveModule,
};

/// One module as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleView {
    module_id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    owner_id: Option<i64>,
    heartbeat_timeout_ms: Option<u64>,
    disabled: bool,
    online: bool,
    last_seen: Option<String>,
    stale: bool,
    readings: BTreeMap<String, f32>,
    rev: u64,
    fw: Option<String>,
    /// `mqtt` or `serial` while online.
    #[serde(skip_serializing_if = "Option::is_none")]
    transport: Option<Transport>,
}

fn view(r: ModuleRecord, l: Option<&LiveModule>, transport: Option<Transport>) -> ModuleView {
    let online = l.is_some_and(|l| l.online);
    ModuleView {
        module_id: r.id.to_string(),
        name: r.name,
        kind: r.kind,
        owner_id: r.owner_id,
        heartbeat_timeout_ms: r.heartbeat_timeout_ms,
        disabled: r.disabled,
        online: l.is_some_and(|l| l.online),
        last_seen: l.and_then(|l| l.last_seen).map(timestamp),
        stale: l.is_none_or(|l| l.stale || !l.online),
        readings: l.map(|l| l.readings.clone()).unwrap_or_default(),
        rev: l.map_or(0, |l| l.rev),
        fw: l.and_then(|l| l.fw.clone()),
        transport: transport.filter(|_| online),
    }
}

/// The snapshot body.
#[derive(Debug, Serialize)]
pub struct ModulesResponse {
    modules: Vec<ModuleView>,
}

/// Modules the caller may see (admins: all; others: their own), with live state.
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<ModulesResponse>, ApiError> {
    snapshot(&state, &user).await.map(Json)
}

/// The snapshot `user` may see: the body of `GET /api/modules`, also embedded in the modules
/// page (`static_files::index`).
pub async fn snapshot(state: &AppState, user: &User) -> Result<ModulesResponse, ApiError> {
    let records = state.store.modules().await?;
    let live = state
        .tracker
        .snapshot()
        .await
        .ok_or(ApiError::Unavailable)?;
    let modules = records
        .into_iter()
        .filter(|r| authz::can_manage_module(user, r))
        .map(|r| {
            let l = live.get(&r.id);
            let transport = state.connections.transport(&r.id);
            view(r, l, transport)
        })
        .collect();
    Ok(ModulesResponse { modules })
}

/// The module `id` if the caller may manage it; 404 otherwise (unknown or not theirs).
async fn managed(state: &AppState, user: &User, id: &str) -> Result<ModuleRecord, ApiError> {
    let id = ModuleId::new(id).map_err(|_| ApiError::NotFound)?;
    match state.store.module(&id).await? {
        Some(record) if authz::can_manage_module(user, &record) => Ok(record),
        _ => Err(ApiError::NotFound),
    }
}

/// A display name (modules and users): 1 to 100 printable characters, trimmed.
pub(super) fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "name: 1 to 100 printable characters".into(),
        ));
    }
    Ok(name.to_owned())
}

fn check_kind(kind: &str) -> Result<String, ApiError> {
    let ok = !kind.is_empty()
        && kind.len() <= 40
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !ok {
        return Err(ApiError::BadRequest(
            "type: 1 to 40 characters from A-Z a-z 0-9 - _".into(),
        ));
    }
    Ok(kind.to_owned())
}

fn check_timeout(ms: u64) -> Result<Duration, ApiError> {
    let timeout = Duration::from_millis(ms);
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
        return Err(ApiError::BadRequest(format!(
            "heartbeatTimeoutMs: {} to {}",
            MIN_TIMEOUT.as_millis(),
            MAX_TIMEOUT.as_millis()
        )));
    }
    Ok(timeout)
}

/// An owner the caller may assign: admins any existing user (or none), users only themselves.
async fn assignable_owner(
    state: &AppState,
    user: &User,
    owner_id: Option<i64>,
) -> Result<Option<User>, ApiError> {
    if !authz::can_assign_owner(user, owner_id) {
        return Err(ApiError::Forbidden);
    }
    match owner_id {
        Some(id) if id == user.id => Ok(Some(user.clone())),
        Some(id) => match state.store.user(id).await? {
            Some(owner) => Ok(Some(owner)),
            None => Err(ApiError::BadRequest(format!("ownerId: no user {id}"))),
        },
        None => Ok(None),
    }
}

/// Body of `POST /api/modules`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateModule {
    id: String,
    name: String,
    #[serde(rename = "type", default = "default_kind")]
    kind: String,
    /// Defaults to the caller.
    owner_id: Option<i64>,
    heartbeat_timeout_ms: Option<u64>,
}

fn default_kind() -> String {
    "station".into()
}

/// Answer of `POST /api/modules` and of token rotation: the MQTT password, shown only now.
#[derive(Debug, Serialize)]
pub struct WithPassword {
    module: ModuleView,
    password: String,
}

/// `POST /api/modules`: registers a module; 201 with its MQTT password (shown once).
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    body: Result<Json<CreateModule>, JsonRejection>,
) -> Result<(StatusCode, Json<WithPassword>), ApiError> {
    let Json(req) = body.map_err(ApiError::from)?;
    let id = ModuleId::new(&req.id).map_err(|e| ApiError::BadRequest(format!("id: {e}")))?;
    let name = check_name(&req.name)?;
    let kind = check_kind(&req.kind)?;
    let heartbeat_timeout = req.heartbeat_timeout_ms.map(check_timeout).transpose()?;
    let owner = assignable_owner(&state, &user, Some(req.owner_id.unwrap_or(user.id))).await?;
    let created = state
        .store
        .create_module(NewModule {
            id,
            name,
            kind,
            owner_email: owner.map(|o| o.email),
            heartbeat_timeout,
        })
        .await;
    let (record, password) = match created {
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict("a module with this id exists".into()));
        }
        other => other?,
    };
    tracing::info!(module = %record.id, by = user.id, "module registered");
    state.registry.changed();
    Ok((
        StatusCode::CREATED,
        Json(WithPassword {
            module: view(record, None, None),
            password,
        }),
    ))
}

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /api/modules/{id}`; absent fields are left as they are.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateModule {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "present")]
    owner_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    heartbeat_timeout_ms: Option<Option<u64>>,
    /// `true` refuses its connections (the live one is closed), `false` lets it in again.
    disabled: Option<bool>,
}

/// `PATCH /api/modules/{id}`: renames, retypes, reassigns (admins) or sets the timeout.
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    body: Result<Json<UpdateModule>, JsonRejection>,
) -> Result<Json<ModuleView>, ApiError> {
    let before = managed(&state, &user, &id).await?;
    let Json(req) = body.map_err(ApiError::from)?;
    let owner_id = match req.owner_id {
        // Reassigning is an admin's act, even to oneself.
        Some(owner) if owner != before.owner_id => {
            if !authz::is_admin(&user) {
                return Err(ApiError::Forbidden);
            }
            Some(assignable_owner(&state, &user, owner).await?.map(|o| o.id))
        }
        _ => None,
    };
    let patch = ModulePatch {
        name: req.name.as_deref().map(check_name).transpose()?,
        kind: req.kind.as_deref().map(check_kind).transpose()?,
        owner_id,
        heartbeat_timeout: req
            .heartbeat_timeout_ms
            .map(|t| t.map(check_timeout).transpose())
            .transpose()?,
        disabled: req.disabled,
    };
    let after = state
        .store
        .update_module(&before.id, patch)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.registry.changed();
    let live = state.tracker.module(&after.id).await;
    let transport = state.connections.transport(&after.id);
    Ok(Json(view(after, live.as_ref(), transport)))
}

/// `DELETE /api/modules/{id}`: unregisters the module and closes its connection.
pub async fn remove(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let record = managed(&state, &user, &id).await?;
    if !state.store.delete_module(&record.id).await? {
        return Err(ApiError::NotFound);
    }
    state.registry.changed();
    tracing::info!(module = %record.id, by = user.id, "module removed");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/modules/{id}/token`: a new MQTT password (shown once); the old one stops working
/// and the module's live MQTT connection is closed (a serial link has no token: it stays up).
pub async fn rotate_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<WithPassword>, ApiError> {
    let record = managed(&state, &user, &id).await?;
    let password = state.store.rotate_module_token(&record.id).await?;
    state.registry.changed();
    tracing::info!(module = %record.id, by = user.id, "module token rotated");
    let live = state.tracker.module(&record.id).await;
    let transport = state.connections.transport(&record.id);
    Ok(Json(WithPassword {
        module: view(record, live.as_ref(), transport),
        password,
    }))
}
