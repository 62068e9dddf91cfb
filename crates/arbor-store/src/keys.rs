//! API keys: random secrets of which only a SHA-256 hash is stored.
//!
//! A secret is 32 random bytes, so a plain (unsalted, fast) hash is enough:
//! nobody can brute-force 256 bits, and a fast hash lets [`Store::verify_key`]
//! look the key up by its hash on every request.
//!
//! Every key belongs to a team ([`KeyInfo::team_id`]) and is either a member
//! key or an admin key, which may also manage teams and keys.

use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::team::TeamScope;
use crate::{from_i64, now_ms, Error, Result, Store};

/// Prefix of generated secrets, so that leaked keys are recognisable.
const SECRET_PREFIX: &str = "arbor_";
/// Longest display prefix; generated keys show `arbor_` and 8 hex digits.
const DISPLAY_PREFIX_MAX: usize = 14;
/// Shortest secret [`Store::import_key`] accepts.
pub const MIN_IMPORTED_SECRET_LEN: usize = 16;
/// `last_used_at` is rewritten at most this often per key, so that
/// verifying a key is a read, not a write, on the hot path.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

/// What a key may do besides acting for its team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRole {
    /// Its team's sandboxes, templates and snapshots.
    Member,
    /// That, and managing teams and keys (the API's admin routes).
    Admin,
}

impl KeyRole {
    fn stored(self) -> i64 {
        i64::from(self == KeyRole::Admin)
    }
}

/// An API key as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Stable id (`k_` and 16 hex digits).
    pub id: String,
    /// Operator-given name.
    pub name: String,
    /// The team it acts for.
    pub team_id: String,
    /// Member or admin.
    pub role: KeyRole,
    /// First characters of the secret, for telling keys apart.
    pub prefix: String,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// Last successful verification, to a minute.
    pub last_used_at: Option<i64>,
}

/// A freshly created key: the only time its secret is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// What the store keeps.
    pub info: KeyInfo,
    /// The secret to hand to the user (`arbor_` and 64 hex digits).
    pub secret: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| Error::Random(e.to_string()))?;
    Ok(hex(&buf))
}

fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn display_prefix(secret: &str) -> String {
    // Never show more than a quarter of a (possibly short, imported) secret.
    let n = DISPLAY_PREFIX_MAX.min(secret.chars().count() / 4);
    secret.chars().take(n).collect()
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed value matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const KEY_COLUMNS: &str = "id, name, team_id, admin, secret_hash, prefix, created_at, revoked_at, last_used_at";

fn decode_key(row: &AnyRow) -> Result<KeyInfo> {
    Ok(KeyInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        team_id: row.try_get("team_id")?,
        role: if row.try_get::<i64, _>("admin")? != 0 { KeyRole::Admin } else { KeyRole::Member },
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

impl Store {
    /// Creates a key of team `team_id` with a new random secret. The caller
    /// checks that the team exists ([`Store::get_team`]).
    pub async fn create_key(&self, team_id: &str, name: &str, role: KeyRole) -> Result<NewKey> {
        let secret = format!("{SECRET_PREFIX}{}", random_hex(32)?);
        let info = self.insert_key(team_id, name, &secret, role).await?;
        Ok(NewKey { info, secret })
    }

    /// Stores an operator-given secret (e.g. from the configuration).
    /// Idempotent: if the secret is already stored, returns that key as it
    /// is (still revoked if it was revoked — reimporting does not undo a
    /// revocation — and with its own team and role). [`Error::InvalidArgument`]
    /// if the secret is shorter than [`MIN_IMPORTED_SECRET_LEN`] or contains
    /// whitespace or control characters.
    pub async fn import_key(&self, team_id: &str, name: &str, secret: &str, role: KeyRole) -> Result<KeyInfo> {
        if secret.len() < MIN_IMPORTED_SECRET_LEN {
            return Err(Error::InvalidArgument(format!(
                "an API key must have at least {MIN_IMPORTED_SECRET_LEN} characters"
            )));
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::InvalidArgument("an API key must not contain whitespace or control characters".into()));
        }
        if let Some(existing) = self.key_by_hash(&hash_secret(secret)).await? {
            return Ok(existing);
        }
        match self.insert_key(team_id, name, secret, role).await {
            // Lost a race with another import of the same secret.
            Err(Error::Conflict(_)) => self
                .key_by_hash(&hash_secret(secret))
                .await?
                .ok_or_else(|| Error::Conflict("API key id collision".into())),
            other => other,
        }
    }

    async fn insert_key(&self, team_id: &str, name: &str, secret: &str, role: KeyRole) -> Result<KeyInfo> {
        let info = KeyInfo {
            id: format!("k_{}", random_hex(8)?),
            name: name.to_string(),
            team_id: team_id.to_string(),
            role,
            prefix: display_prefix(secret),
            created_at: now_ms(),
            revoked_at: None,
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, secret_hash, prefix, created_at, team_id, admin) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(info.id.as_str())
        .bind(info.name.as_str())
        .bind(hash_secret(secret))
        .bind(info.prefix.as_str())
        .bind(info.created_at)
        .bind(info.team_id.as_str())
        .bind(role.stored())
        .execute(&self.pool)
        .await?;
        Ok(info)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyInfo>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1");
        let row = sqlx::query(&sql).bind(hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(decode_key).transpose()
    }

    /// The key whose secret this is, unless unknown or revoked. Records the
    /// use (at most once a minute per key).
    pub async fn verify_key(&self, secret: &str) -> Result<Option<KeyInfo>> {
        let hash = hash_secret(secret);
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL");
        let Some(row) = sqlx::query(&sql).bind(&hash).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        // The index lookup already matched; comparing again in constant time
        // keeps the check independent of how the database compares text.
        let stored: String = row.try_get("secret_hash")?;
        if !constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
            return Ok(None);
        }
        let mut info = decode_key(&row)?;
        let now = now_ms();
        if info.last_used_at.is_none_or(|t| now - t >= LAST_USED_GRANULARITY_MS) {
            let query =
                sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1").bind(info.id.as_str()).bind(now);
            self.execute_relaxed(query).await?;
            info.last_used_at = Some(now);
        }
        Ok(Some(info))
    }

    /// Every key of every team, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        self.keys_of(None).await
    }

    async fn keys_of(&self, team: Option<&str>) -> Result<Vec<KeyInfo>> {
        let filter = if team.is_some() { " WHERE team_id = $1" } else { "" };
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys{filter} ORDER BY created_at, id");
        let mut query = sqlx::query(&sql);
        if let Some(team) = team {
            query = query.bind(team);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(decode_key).collect()
    }

    /// Revokes the key with this id or, failing that, this display prefix.
    /// Returns whether a live key was revoked (`false` if none matched or it
    /// was already revoked). [`Error::Conflict`] if the prefix names several
    /// live keys.
    pub async fn revoke_key(&self, id_or_prefix: &str) -> Result<bool> {
        let now = now_ms();
        let by_id = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id_or_prefix)
            .bind(now)
            .execute(&self.pool)
            .await?;
        if by_id.rows_affected() > 0 {
            return Ok(true);
        }
        let ids: Vec<String> = sqlx::query("SELECT id FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL")
            .bind(id_or_prefix)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<std::result::Result<_, _>>()?;
        match ids.as_slice() {
            [] => Ok(false),
            [id] => {
                let done = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id.as_str())
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }
            _ => Err(Error::Conflict(format!("prefix {id_or_prefix:?} matches {} keys; use the key id", ids.len()))),
        }
    }

    /// Live (not revoked) keys.
    pub async fn key_count(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL").fetch_one(&self.pool).await?;
        from_i64("key count", row.try_get(0)?)
    }
}

impl TeamScope<'_> {
    /// The team's keys, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        self.store.keys_of(Some(self.team_id)).await
    }

    /// Revokes the team's key with this id (not a prefix: an admin names
    /// keys exactly). Returns whether a live key of the team was revoked.
    pub async fn revoke_key(&self, id: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND team_id = $3 AND revoked_at IS NULL")
                .bind(id)
                .bind(now_ms())
                .bind(self.team_id)
                .execute(&self.store.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_never_shows_more_than_a_quarter() {
        assert_eq!(display_prefix(&format!("arbor_{}", "a".repeat(64))), "arbor_aaaaaaaa");
        assert_eq!(display_prefix("0123456789abcdef"), "0123");
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
