//! Teams, the tenants of a server: every API key belongs to one, and so does
//! everything a key creates. [`Store::team`] is the view of the store a
//! request acts through: its lookups see only that team's rows, with the team
//! in the SQL, so another team's id and a missing one take the same path.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::keys::random_hex;
use crate::{now_ms, Error, Result, Store};

/// The team of the server's own key and of every row from before teams
/// existed (migration 0004).
pub const DEFAULT_TEAM_ID: &str = "default";
/// Longest team name.
const MAX_NAME_LEN: usize = 64;

/// A team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRecord {
    /// Stable id (a random UUID; `default` for the default team).
    pub id: String,
    /// Unique name, given by the admin who created it.
    pub name: String,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

fn decode(row: &AnyRow) -> Result<TeamRecord> {
    Ok(TeamRecord { id: row.try_get("id")?, name: row.try_get("name")?, created_at: row.try_get("created_at")? })
}

/// A random version-4 UUID, the shape E2B's team ids have.
fn uuid() -> Result<String> {
    let hex = random_hex(16)?;
    // Version 4 and the RFC 4122 variant, so that UUID parsers accept it.
    let variant = ["8", "9", "a", "b"][usize::from(hex.as_bytes()[16] % 4)];
    Ok(format!("{}-{}-4{}-{}{}-{}", &hex[..8], &hex[8..12], &hex[13..16], variant, &hex[17..20], &hex[20..32]))
}

impl Store {
    /// Creates a team. [`Error::InvalidArgument`] for an empty or too long
    /// name (or one with control characters), [`Error::Conflict`] if the
    /// name is taken.
    pub async fn create_team(&self, name: &str) -> Result<TeamRecord> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "a team name must have 1-{MAX_NAME_LEN} characters and no control characters"
            )));
        }
        let team = TeamRecord { id: uuid()?, name: name.to_string(), created_at: now_ms() };
        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(team.id.as_str())
            .bind(team.name.as_str())
            .bind(team.created_at)
            .execute(&self.pool)
            .await?;
        Ok(team)
    }

    /// The team with this id or, failing that, this name.
    pub async fn get_team(&self, id_or_name: &str) -> Result<Option<TeamRecord>> {
        for column in ["id", "name"] {
            let sql = format!("SELECT id, name, created_at FROM teams WHERE {column} = $1");
            if let Some(row) = sqlx::query(&sql).bind(id_or_name).fetch_optional(&self.pool).await? {
                return decode(&row).map(Some);
            }
        }
        Ok(None)
    }

    /// Every team, oldest first (the default team first).
    pub async fn list_teams(&self) -> Result<Vec<TeamRecord>> {
        let rows =
            sqlx::query("SELECT id, name, created_at FROM teams ORDER BY created_at, id").fetch_all(&self.pool).await?;
        rows.iter().map(decode).collect()
    }

    /// The store as team `team_id` sees it: lookups of its own rows only.
    /// Request handlers reach the store through this; the unscoped methods
    /// of [`Store`] are for the server's own work (timers, recovery, the
    /// proxy, which authenticates by envd token).
    pub fn team<'a>(&'a self, team_id: &'a str) -> TeamScope<'a> {
        TeamScope { store: self, team_id }
    }
}

/// The store seen by one team; made by [`Store::team`]. Every lookup adds
/// `team_id = <team>` to its SQL, so a row of another team is simply not
/// found.
#[derive(Debug, Clone, Copy)]
pub struct TeamScope<'a> {
    pub(crate) store: &'a Store,
    pub(crate) team_id: &'a str,
}

impl<'a> TeamScope<'a> {
    /// The team's id.
    pub fn id(&self) -> &'a str {
        self.team_id
    }
}

/// ` AND <column> = $<n>` when `team` is set: the one way every scoped query
/// adds its team. The caller binds the team as the `n`th value.
pub(crate) fn team_filter(team: Option<&str>, column: &str, n: usize) -> String {
    match team {
        Some(_) => format!(" AND {column} = ${n}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_have_the_v4_shape() {
        let id = super::uuid().unwrap_or_default();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
        assert!(parts[2].starts_with('4') && "89ab".contains(&parts[3][..1]), "{id}");
        assert_ne!(super::uuid().unwrap_or_default(), id);
        assert_eq!(super::team_filter(None, "team_id", 2), "");
        assert_eq!(super::team_filter(Some("t"), "s.team_id", 3), " AND s.team_id = $3");
    }
}
