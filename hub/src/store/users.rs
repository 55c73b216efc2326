//! Users: argon2 password hashes, admin flag.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use serde::Serialize;

use super::{Store, StoreError, unix_now, with_pool};

/// A user as the rest of the hub sees it (never with the hash).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Database id.
    pub id: i64,
    /// Login, unique, case-insensitive.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Sees every module and the admin page.
    pub is_admin: bool,
    /// A disabled user cannot log in.
    #[serde(skip)]
    pub disabled: bool,
}

/// What is needed to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Plain password, hashed before storage.
    pub password: String,
    /// Admin flag.
    pub is_admin: bool,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New display name.
    pub name: Option<String>,
    /// New login.
    pub email: Option<String>,
    /// New admin flag.
    pub is_admin: Option<bool>,
    /// New disabled flag.
    pub disabled: Option<bool>,
    /// New password (hashed before storage).
    pub password: Option<String>,
}

fn hash_password(password: &str) -> Result<String, StoreError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| StoreError::Hash)
}

impl Store {
    /// Creates a user; the email must be new.
    pub async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let hash = tokio::task::spawn_blocking({
            let password = new.password.clone();
            move || hash_password(&password)
        })
        .await
        .map_err(|_| StoreError::Hash)??;
        let result = with_pool!(&self.pool, p => {
            sqlx::query_as::<_, User>(
                "INSERT INTO users (email, name, password_hash, is_admin, created_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id, email, name, is_admin, disabled",
            )
            .bind(&new.email)
            .bind(&new.name)
            .bind(&hash)
            .bind(new.is_admin)
            .bind(unix_now())
            .fetch_one(p)
            .await
        });
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("user {}", new.email)))
            }
            other => Ok(other?),
        }
    }

    /// The user with this email and password, if both match and the user is enabled.
    pub async fn verify_login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        let row: Option<(i64, String)> = with_pool!(&self.pool, p => {
            sqlx::query_as("SELECT id, password_hash FROM users WHERE email = $1 AND NOT disabled")
                .bind(email)
                .fetch_optional(p)
                .await
        })?;
        let Some((id, hash)) = row else {
            // Spend the same time as a real check so that timing does not reveal which emails exist.
            let _ = tokio::task::spawn_blocking(|| hash_password("timing-equaliser")).await;
            return Ok(None);
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .map_err(|_| StoreError::Hash)?;
        if !ok {
            return Ok(None);
        }
        self.user(id).await
    }

    /// Replaces a user's password.
    pub async fn set_password(&self, user_id: i64, password: &str) -> Result<(), StoreError> {
        let password = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|_| StoreError::Hash)??;
        with_pool!(&self.pool, p => {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(hash)
                .bind(user_id)
                .execute(p)
                .await
                .map(drop)
        })?;
        Ok(())
    }

    /// Every user, by id.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        Ok(with_pool!(&self.pool, p => {
            sqlx::query_as::<_, User>(
                "SELECT id, email, name, is_admin, disabled FROM users ORDER BY id",
            )
            .fetch_all(p)
            .await
        })?)
    }

    /// Applies `patch` in one transaction; disabling a user also ends their sessions. `None`
    /// if the user does not exist.
    pub async fn update_user(&self, id: i64, patch: UserPatch) -> Result<Option<User>, StoreError> {
        let hash = match patch.password {
            Some(password) => Some(
                tokio::task::spawn_blocking(move || hash_password(&password))
                    .await
                    .map_err(|_| StoreError::Hash)??,
            ),
            None => None,
        };
        let email = patch.email.clone();
        let result = with_pool!(&self.pool, p => async {
            let mut tx = p.begin().await?;
            let user = sqlx::query_as::<_, User>(
                "UPDATE users SET
                    name = COALESCE($1, name),
                    email = COALESCE($2, email),
                    is_admin = COALESCE($3, is_admin),
                    disabled = COALESCE($4, disabled),
                    password_hash = COALESCE($5, password_hash)
                 WHERE id = $6 RETURNING id, email, name, is_admin, disabled",
            )
            .bind(patch.name)
            .bind(patch.email)
            .bind(patch.is_admin)
            .bind(patch.disabled)
            .bind(hash)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if user.as_ref().is_some_and(|u| u.disabled) {
                sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(user)
        }
        .await);
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("user {}", email.unwrap_or_default()),
            )),
            other => Ok(other?),
        }
    }

    /// Deletes a user (their sessions go with them; their modules lose their owner). True if
    /// the user existed.
    pub async fn delete_user(&self, id: i64) -> Result<bool, StoreError> {
        let deleted = with_pool!(&self.pool, p => {
            sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(id)
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(deleted > 0)
    }

    /// The user with this id.
    pub async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        Ok(with_pool!(&self.pool, p => {
            sqlx::query_as::<_, User>(
                "SELECT id, email, name, is_admin, disabled FROM users WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await
        })?)
    }

    /// The user with this email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        Ok(with_pool!(&self.pool, p => {
            sqlx::query_as::<_, User>(
                "SELECT id, email, name, is_admin, disabled FROM users WHERE email = $1",
            )
            .bind(email)
            .fetch_optional(p)
            .await
        })?)
    }
}
