//! `GET /api/modules`: the snapshot a client renders before the first event.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use serde::Serialize;

use super::{AppState, auth::CurrentUser, error::ApiError};
use crate::realtime::events::timestamp;

/// One module as the snapshot shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleView {
    module_id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    owner_id: Option<i64>,
    online: bool,
    last_seen: Option<String>,
    stale: bool,
    readings: BTreeMap<String, f32>,
    rev: u64,
    fw: Option<String>,
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
    let records = state.store.modules().await?;
    let live = state
        .tracker
        .snapshot()
        .await
        .ok_or_else(|| ApiError::Internal("tracker stopped".into()))?;
    let modules = records
        .into_iter()
        .filter(|r| user.is_admin || r.owner_id == Some(user.id))
        .map(|r| {
            let l = live.get(&r.id);
            ModuleView {
                module_id: r.id.to_string(),
                name: r.name,
                kind: r.kind,
                owner_id: r.owner_id,
                online: l.is_some_and(|l| l.online),
                last_seen: l.and_then(|l| l.last_seen).map(timestamp),
                stale: l.is_none_or(|l| l.stale || !l.online),
                readings: l.map(|l| l.readings.clone()).unwrap_or_default(),
                rev: l.map_or(0, |l| l.rev),
                fw: l.and_then(|l| l.fw.clone()),
            }
        })
        .collect();
    Ok(Json(ModulesResponse { modules }))
}
