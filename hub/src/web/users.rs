//! Users over HTTP: admins create, list, update, disable and delete users (`/api/users`); every
//! user updates their own profile and password (`PATCH /api/auth/me`). A disabled or deleted
//! user's sessions end and their live sockets are closed at once; an admin-flag change closes
//! them too, so that they reconnect with the rights they now have (effects applied by
//! [`crate::registry`], as for changes made with the CLI).

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};

use super::{AppState, auth::CurrentUser, error::ApiError, modules::check_name};
use crate::store::{NewUser, StoreError, User, UserPatch};

/// A user as admins see it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    id: i64,
    email: String,
    name: String,
    is_admin: bool,
    disabled: bool,
    /// Has at least one connected dashboard socket now: in `GET /api/users` only (the other
    /// answers and the CLI leave it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    online: Option<bool>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            name: u.name,
            is_admin: u.is_admin,
            disabled: u.disabled,
            online: None,
        }
    }
}

impl UserView {
    /// `user` as admins see it; `online` from the connected sockets.
    fn new(u: User, online: &std::collections::HashSet<i64>) -> Self {
        let online = Some(online.contains(&u.id));
        Self { online, ..u.into() }
    }
}

pub(super) fn require_admin(user: &User) -> Result<(), ApiError> {
    if crate::authz::is_admin(user) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Checks an email: 3–254 characters, one `@` with text on both sides, no spaces.
pub fn check_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    let ok = (3..=254).contains(&email.len())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if !ok {
        return Err(ApiError::BadRequest("email: not a valid address".into()));
    }
    Ok(email.to_owned())
}

fn check_password(password: &str) -> Result<String, ApiError> {
    if !(8..=1024).contains(&password.chars().count()) {
        return Err(ApiError::BadRequest(
            "password: 8 to 1024 characters".into(),
        ));
    }
    Ok(password.to_owned())
}

fn conflict_or(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(_) => ApiError::Conflict("a user with this email exists".into()),
        other => other.into(),
    }
}

/// Answer of `GET /api/users`.
#[derive(Debug, Serialize)]
pub struct UsersResponse {
    users: Vec<UserView>,
}

/// `GET /api/users` (admins).
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<UsersResponse>, ApiError> {
    require_admin(&user)?;
    let online = state.events.online_users();
    let users = state
        .store
        .users()
        .await?
        .into_iter()
        .map(|u| UserView::new(u, &online))
        .collect();
    Ok(Json(UsersResponse { users }))
}

/// Body of `POST /api/users`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    name: String,
    password: String,
    #[serde(default)]
    is_admin: bool,
}

/// `POST /api/users` (admins): 201 with the user; 409 if the email is taken.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    require_admin(&user)?;
    let Json(req) = body.map_err(ApiError::from)?;
    let new = NewUser {
        email: check_email(&req.email)?,
        name: check_name(&req.name)?,
        password: check_password(&req.password)?,
        is_admin: req.is_admin,
    };
    let created = state.store.create_user(new).await.map_err(conflict_or)?;
    tracing::info!(user_id = created.id, by = user.id, "user created");
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Body of `PATCH /api/users/{id}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUser {
    email: Option<String>,
    name: Option<String>,
    password: Option<String>,
    is_admin: Option<bool>,
    disabled: Option<bool>,
}

/// `PATCH /api/users/{id}` (admins). An admin cannot disable or demote themselves (409): the
/// hub must keep someone who can undo it.
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    body: Result<Json<UpdateUser>, JsonRejection>,
) -> Result<Json<UserView>, ApiError> {
    require_admin(&user)?;
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    let Json(req) = body.map_err(ApiError::from)?;
    if id == user.id && (req.disabled == Some(true) || req.is_admin == Some(false)) {
        return Err(ApiError::Conflict(
            "you cannot disable or demote yourself".into(),
        ));
    }
    state.store.user(id).await?.ok_or(ApiError::NotFound)?;
    let patch = UserPatch {
        name: req.name.as_deref().map(check_name).transpose()?,
        email: req.email.as_deref().map(check_email).transpose()?,
        is_admin: req.is_admin,
        disabled: req.disabled,
        password: req.password.as_deref().map(check_password).transpose()?,
    };
    let after = state
        .store
        .update_user(id, patch)
        .await
        .map_err(conflict_or)?
        .ok_or(ApiError::NotFound)?;
    state.registry.changed();
    Ok(Json(after.into()))
}

/// `DELETE /api/users/{id}` (admins): 204; their sessions end, their sockets close, their
/// modules are left without owner (admins still see them).
pub async fn remove(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&user)?;
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    if id == user.id {
        return Err(ApiError::Conflict("you cannot delete yourself".into()));
    }
    if !state.store.delete_user(id).await? {
        return Err(ApiError::NotFound);
    }
    state.registry.changed();
    tracing::info!(user_id = id, by = user.id, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `PATCH /api/auth/me`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMe {
    name: Option<String>,
    email: Option<String>,
    /// A new password needs the current one.
    password: Option<String>,
    current_password: Option<String>,
}

/// `PATCH /api/auth/me`: a user's own profile and password.
pub async fn update_me(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    body: Result<Json<UpdateMe>, JsonRejection>,
) -> Result<Json<User>, ApiError> {
    let Json(req) = body.map_err(ApiError::from)?;
    let password = match (&req.password, &req.current_password) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ApiError::BadRequest(
                "currentPassword is required to change the password".into(),
            ));
        }
        (Some(new), Some(current)) => {
            if state
                .store
                .verify_login(&user.email, current)
                .await?
                .is_none()
            {
                return Err(ApiError::Forbidden);
            }
            Some(check_password(new)?)
        }
    };
    let patch = UserPatch {
        name: req.name.as_deref().map(check_name).transpose()?,
        email: req.email.as_deref().map(check_email).transpose()?,
        password,
        ..UserPatch::default()
    };
    let after = state
        .store
        .update_user(user.id, patch)
        .await
        .map_err(conflict_or)?
        .ok_or(ApiError::Unauthorized)?;
    state.registry.changed();
    Ok(Json(after))
}
