//! The module registry: which modules exist, who owns them, their MQTT token hash.

use mc_protocol::ModuleId;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{Store, StoreError, unix_now, with_pool};
use crate::broker::mosquitto::password_hash;

/// A registered module.
#[derive(Debug, Clone)]
pub struct ModuleRecord {
    /// Its id (also its MQTT client id and username).
    pub id: ModuleId,
    /// Display name.
    pub name: String,
    /// Free-form type (`weather`, `soil`...).
    pub kind: String,
    /// Owning user; `None` means only admins see it.
    pub owner_id: Option<i64>,
    /// SHA-256 hex of the module's MQTT password.
    token_hash: String,
    /// Per-module liveness timeout, overriding the hub's.
    pub heartbeat_timeout_ms: Option<u64>,
    /// A disabled module may not connect.
    pub disabled: bool,
    /// Its token hashed for a Mosquitto password file (`broker::mosquitto`); `None` for a
    /// token created before the hub wrote these.
    mosquitto_hash: Option<String>,
}

impl ModuleRecord {
    /// A record for unit tests elsewhere in the crate.
    #[cfg(test)]
    pub(crate) fn for_tests(id: &str, owner_id: Option<i64>) -> Self {
        Self {
            id: ModuleId::new(id).expect("valid test id"),
            name: id.to_owned(),
            kind: "test".to_owned(),
            owner_id,
            token_hash: String::new(),
            heartbeat_timeout_ms: None,
            disabled: false,
            mosquitto_hash: None,
        }
    }

    /// Sets the Mosquitto hash, for unit tests elsewhere in the crate.
    #[cfg(test)]
    pub(crate) fn set_mosquitto_hash_for_tests(&mut self, hash: Option<String>) {
        self.mosquitto_hash = hash;
    }

    /// The token hashed for a Mosquitto password file, if the current token has one.
    pub fn mosquitto_hash(&self) -> Option<&str> {
        self.mosquitto_hash.as_deref()
    }

    /// Constant-time comparison of `token`'s hash with the stored one.
    pub fn token_matches(&self, token: &str) -> bool {
        let candidate = hash_token(token);
        candidate.len() == self.token_hash.len()
            && candidate
                .bytes()
                .zip(self.token_hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// What is needed to register a module.
#[derive(Debug, Clone)]
pub struct NewModule {
    /// Its id.
    pub id: ModuleId,
    /// Display name.
    pub name: String,
    /// Free-form type.
    pub kind: String,
    /// Email of the owning user.
    pub owner_email: Option<String>,
    /// Liveness timeout for this module, overriding the hub's.
    pub heartbeat_timeout: Option<std::time::Duration>,
}

/// Changes to a registered module; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ModulePatch {
    /// New display name.
    pub name: Option<String>,
    /// New type.
    pub kind: Option<String>,
    /// New owner (`Some(None)` = no owner: admins only).
    pub owner_id: Option<Option<i64>>,
    /// New per-module liveness timeout (`Some(None)` = the hub's).
    pub heartbeat_timeout: Option<Option<std::time::Duration>>,
    /// Disable (refuse connections) or enable.
    pub disabled: Option<bool>,
}

/// Module and session tokens are 192+ random bits, so a fast hash is enough (no dictionary to
/// attack), and checking one costs microseconds even when thousands of modules reconnect at once.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    name: String,
    #[sqlx(rename = "type")]
    kind: String,
    owner_id: Option<i64>,
    token_hash: String,
    heartbeat_timeout_ms: Option<i64>,
    disabled: bool,
    mosquitto_hash: Option<String>,
}

impl TryFrom<Row> for ModuleRecord {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Self, StoreError> {
        let id = ModuleId::new(&r.id)
            .map_err(|e| StoreError::Query(sqlx::Error::Decode(Box::new(e))))?;
        Ok(Self {
            id,
            name: r.name,
            kind: r.kind,
            owner_id: r.owner_id,
            token_hash: r.token_hash,
            heartbeat_timeout_ms: r.heartbeat_timeout_ms.map(|v| v.max(0) as u64),
            disabled: r.disabled,
            mosquitto_hash: r.mosquitto_hash,
        })
    }
}

/// The columns [`Row`] reads, for `concat!` (queries stay static strings).
macro_rules! columns {
    () => {
        "id, name, type, owner_id, token_hash, heartbeat_timeout_ms, disabled, mosquitto_hash"
    };
}

impl Store {
    /// Registers a module and returns it with its freshly generated MQTT password (shown once).
    pub async fn create_module(
        &self,
        new: NewModule,
    ) -> Result<(ModuleRecord, String), StoreError> {
        let owner_id = match &new.owner_email {
            Some(email) => Some(
                self.user_by_email(email)
                    .await?
                    .ok_or_else(|| StoreError::Conflict(format!("no user {email}; owner")))?
                    .id,
            ),
            None => None,
        };
        let token = new_token();
        let mosquitto_hash = password_hash(&token);
        // Registering a module also settles its pending entry, in the same transaction.
        let result = with_pool!(&self.pool, p => async {
            let mut tx = p.begin().await?;
            let row = sqlx::query_as::<_, Row>(concat!(
                "INSERT INTO modules (id, name, type, owner_id, token_hash, mosquitto_hash,
                                      heartbeat_timeout_ms, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
                columns!()
            ))
            .bind(new.id.as_str())
            .bind(&new.name)
            .bind(&new.kind)
            .bind(owner_id)
            .bind(hash_token(&token))
            .bind(&mosquitto_hash)
            .bind(new.heartbeat_timeout.map(|d| d.as_millis().min(i64::MAX as u128) as i64))
            .bind(unix_now())
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM pending_modules WHERE id = $1")
                .bind(new.id.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(row)
        }
        .await);
        let row = match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("module {}", new.id)));
            }
            other => other?,
        };
        Ok((row.try_into()?, token))
    }

    /// Gives a module a new MQTT password (returned once); the old one stops working for new
    /// connections.
    pub async fn rotate_module_token(&self, id: &ModuleId) -> Result<String, StoreError> {
        let token = new_token();
        let mosquitto_hash = password_hash(&token);
        with_pool!(&self.pool, p => {
            sqlx::query("UPDATE modules SET token_hash = $1, mosquitto_hash = $2 WHERE id = $3")
                .bind(hash_token(&token))
                .bind(&mosquitto_hash)
                .bind(id.as_str())
                .execute(p)
                .await
                .map(drop)
        })?;
        Ok(token)
    }

    /// Applies `patch` in one statement; `None` if the module does not exist.
    pub async fn update_module(
        &self,
        id: &ModuleId,
        patch: ModulePatch,
    ) -> Result<Option<ModuleRecord>, StoreError> {
        let owner_set = patch.owner_id.is_some();
        let owner = patch.owner_id.flatten();
        let timeout_set = patch.heartbeat_timeout.is_some();
        let timeout = patch
            .heartbeat_timeout
            .flatten()
            .map(|d| d.as_millis().min(i64::MAX as u128) as i64);
        let result = with_pool!(&self.pool, p => {
            sqlx::query_as::<_, Row>(concat!(
                "UPDATE modules SET
                    name = COALESCE($1, name),
                    type = COALESCE($2, type),
                    owner_id = CASE WHEN $3 THEN $4 ELSE owner_id END,
                    heartbeat_timeout_ms = CASE WHEN $5 THEN $6 ELSE heartbeat_timeout_ms END,
                    disabled = COALESCE($7, disabled)
                 WHERE id = $8 RETURNING ",
                columns!()
            ))
            .bind(&patch.name)
            .bind(&patch.kind)
            .bind(owner_set)
            .bind(owner)
            .bind(timeout_set)
            .bind(timeout)
            .bind(patch.disabled)
            .bind(id.as_str())
            .fetch_optional(p)
            .await
        });
        match result {
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(StoreError::Conflict("no such owner; the owner".into()))
            }
            other => other?.map(TryInto::try_into).transpose(),
        }
    }

    /// Removes a module; true if it existed.
    pub async fn delete_module(&self, id: &ModuleId) -> Result<bool, StoreError> {
        let deleted = with_pool!(&self.pool, p => {
            sqlx::query("DELETE FROM modules WHERE id = $1")
                .bind(id.as_str())
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(deleted > 0)
    }

    /// The module with this id.
    pub async fn module(&self, id: &ModuleId) -> Result<Option<ModuleRecord>, StoreError> {
        with_pool!(&self.pool, p => {
            sqlx::query_as::<_, Row>(concat!("SELECT ", columns!(), " FROM modules WHERE id = $1"))
                .bind(id.as_str())
                .fetch_optional(p)
                .await
        })?
        .map(TryInto::try_into)
        .transpose()
    }

    /// Every registered module.
    pub async fn modules(&self) -> Result<Vec<ModuleRecord>, StoreError> {
        with_pool!(&self.pool, p => {
            sqlx::query_as::<_, Row>(concat!("SELECT ", columns!(), " FROM modules ORDER BY id"))
                .fetch_all(p)
                .await
        })?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
    }
}
