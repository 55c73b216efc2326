//! Login sessions: a random token in an HttpOnly cookie, its SHA-256 in the database, so a
//! leaked database does not leak live sessions.

use rand::RngCore;

use super::{Store, StoreError, User, modules::hash_token, unix_now, with_pool};

/// The secret a browser holds; only shown to the client once, in the cookie.
#[derive(Debug, Clone)]
pub struct SessionToken(String);

impl SessionToken {
    /// The token as sent in the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Store {
    /// Starts a session for `user_id`; always a new token (no fixation).
    pub async fn create_session(&self, user_id: i64) -> Result<SessionToken, StoreError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        let now = unix_now();
        // Expired sessions are refused anyway; logins are a good moment to forget them.
        let expired = now - self.session_ttl.as_secs() as i64;
        with_pool!(&self.pool, p => {
            sqlx::query("DELETE FROM sessions WHERE created_at <= $1")
                .bind(expired)
                .execute(p)
                .await?;
            sqlx::query(
                "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at)
                 VALUES ($1, $2, $3, $3)",
            )
            .bind(hash_token(&token))
            .bind(user_id)
            .bind(now)
            .execute(p)
            .await
            .map(drop)
        })?;
        Ok(SessionToken(token))
    }

    /// The enabled user behind a live session token: not older than the absolute TTL, used
    /// within the idle TTL. Using it keeps it alive (at most one write a minute per session).
    pub async fn session_user(&self, token: &str) -> Result<Option<User>, StoreError> {
        let now = unix_now();
        let hash = hash_token(token);
        let user = with_pool!(&self.pool, p => {
            sqlx::query_as::<_, User>(
                "SELECT u.id, u.email, u.name, u.is_admin, u.disabled
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = $1 AND s.created_at > $2 AND s.last_seen_at > $3
                   AND NOT u.disabled",
            )
            .bind(&hash)
            .bind(now - self.session_ttl.as_secs() as i64)
            .bind(now - self.session_idle.as_secs() as i64)
            .fetch_optional(p)
            .await
        })?;
        if user.is_some() {
            // Best effort: on a full or read-only disk the session still works (reads and the
            // realtime stream keep serving); it only ages as if unused.
            if let Err(e) = with_pool!(&self.pool, p => {
                sqlx::query(
                    "UPDATE sessions SET last_seen_at = $1
                     WHERE token_hash = $2 AND last_seen_at < $3",
                )
                .bind(now)
                .bind(&hash)
                .bind(now - 60)
                .execute(p)
                .await
                .map(drop)
            }) {
                let e = StoreError::from(e);
                tracing::warn!(error = %e, kind = e.kind().as_str(), "session use not recorded");
            }
        }
        Ok(user)
    }

    /// Ends a session.
    pub async fn delete_session(&self, token: &str) -> Result<(), StoreError> {
        with_pool!(&self.pool, p => {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(hash_token(token))
                .execute(p)
                .await
                .map(drop)
        })?;
        Ok(())
    }
}
