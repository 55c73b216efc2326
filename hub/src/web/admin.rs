//! Admin-only views: `GET /api/admin/stats`.

use axum::{Json, extract::State};

use super::{AppState, auth::CurrentUser, error::ApiError, users::require_admin};
use crate::stats::GlobalStats;

/// `GET /api/admin/stats` (admins): the global stats now.
pub async fn stats(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<GlobalStats>, ApiError> {
    require_admin(&user)?;
    Ok(Json(state.stats.collect().await?))
}
