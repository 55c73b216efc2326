//! Users: argon2 password hashes, admin flag.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use serde::Serialize;

use super::{Store, StoreError, unix_now};

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
        let result = sqlx::query_as::<_, User>(
            "INSERT INTO users (email, name, password_hash, is_admin, created_at)
             VALUES (?, ?, ?, ?, ?) RETURNING id, email, name, is_admin, disabled",
        )
        .bind(&new.email)
        .bind(&new.name)
        .bind(&hash)
        .bind(new.is_admin)
        .bind(unix_now())
        .fetch_one(&self.pool)
        .await;
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
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT id, password_hash FROM users WHERE email = ? AND disabled = 0")
                .bind(email)
                .fetch_optional(&self.pool)
                .await?;
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
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every user, by id.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        Ok(sqlx::query_as::<_, User>(
            "SELECT id, email, name, is_admin, disabled FROM users ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
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
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query_as::<_, User>(
            "UPDATE users SET
                name = COALESCE(?, name),
                email = COALESCE(?, email),
                is_admin = COALESCE(?, is_admin),
                disabled = COALESCE(?, disabled),
                password_hash = COALESCE(?, password_hash)
             WHERE id = ? RETURNING id, email, name, is_admin, disabled",
        )
        .bind(patch.name)
        .bind(&patch.email)
        .bind(patch.is_admin)
        .bind(patch.disabled)
        .bind(hash)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await;
        let user = match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "user {}",
                    patch.email.unwrap_or_default()
                )));
            }
            other => other?,
        };
        if user.as_ref().is_some_and(|u| u.disabled) {
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    /// Deletes a user (their sessions go with them; their modules lose their owner). True if
    /// the user existed.
    pub async fn delete_user(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The user with this id.
    pub async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        Ok(sqlx::query_as::<_, User>(
            "SELECT id, email, name, is_admin, disabled FROM users WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The user with this email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        Ok(sqlx::query_as::<_, User>(
            "SELECT id, email, name, is_admin, disabled FROM users WHERE email = ?",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?)
    }
}
