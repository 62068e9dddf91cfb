//! Multi-row sandbox queries: filtered pages, due sandboxes, quota usage.

use sqlx::Row;

use crate::sandbox::{decode_record, COLUMNS};
use crate::team::TeamScope;
use crate::{from_i64, Error, Result, SandboxRecord, State, Store, TOUCH_GRANULARITY_MS};

/// Page size when [`ListQuery::limit`] is 0.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page [`Store::list_sandboxes`] returns.
pub const MAX_LIMIT: u32 = 10_000;

/// Filters and position of one [`Store::list_sandboxes`] call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// States to include; empty means every state but `killed`.
    pub states: Vec<State>,
    /// Metadata pairs that must all be present (AND), compared exactly.
    pub metadata: Vec<(String, String)>,
    /// Page size; 0 means [`DEFAULT_LIMIT`], larger than [`MAX_LIMIT`] is capped.
    pub limit: u32,
    /// Cursor from the previous [`Page::next_token`].
    pub next_token: Option<String>,
}

/// One page of a listing: sandboxes newest first (`started_at` descending,
/// then id), or snapshots oldest first (see [`Store::list_snapshots`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T = SandboxRecord> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Opaque cursor for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// Resources held by running sandboxes (`GET /sandboxes/quota` usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Running sandboxes.
    pub running: u64,
    /// Sum of their vCPUs.
    pub vcpu: u64,
    /// Sum of their memory in MiB.
    pub memory_mb: u64,
    /// Paused sandboxes (they hold disk, not CPU or memory).
    pub paused: u64,
}

/// Version tag of the cursor encoding, so a future change can reject old
/// tokens cleanly.
const CURSOR_TAG: &str = "c1";

/// Encodes the position after `r`: hex of `c1:<started_at>:<id>`.
fn encode_cursor(r: &SandboxRecord) -> String {
    encode_position(r.started_at, &r.id)
}

/// Encodes a sort key `(time, id)` as hex of `c1:<time>:<id>`. Hex keeps
/// the token URL- and header-safe without escaping. Shared by every listing
/// that pages by a time and an id.
pub(crate) fn encode_position(time: i64, id: &str) -> String {
    let raw = format!("{CURSOR_TAG}:{time}:{id}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a token made by [`encode_position`]; [`Error::InvalidArgument`]
/// for anything else.
pub(crate) fn decode_cursor(token: &str) -> Result<(i64, String)> {
    let bad = || Error::InvalidArgument(format!("invalid nextToken {token:?}"));
    let bytes = token
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(hex_digit(*hi)? << 4 | hex_digit(*lo)?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let raw = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = raw.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(CURSOR_TAG), Some(t), Some(id)) => Ok((t.parse().map_err(|_| bad())?, id.into())),
        _ => Err(bad()),
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The page size for a requested `limit` (0 means the default; capped).
pub(crate) fn page_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

impl Store {
    /// One page of sandboxes matching `q`. The order (`started_at` desc,
    /// `id` asc) is total, and the cursor is the last row's sort key, so
    /// pages neither repeat nor skip rows when sandboxes are added or
    /// removed between calls. [`Error::InvalidArgument`] for a bad token.
    /// Every team's sandboxes; [`TeamScope::list_sandboxes`] lists one team's.
    pub async fn list_sandboxes(&self, q: &ListQuery) -> Result<Page> {
        self.sandboxes_of(None, q).await
    }

    async fn sandboxes_of(&self, team: Option<&str>, q: &ListQuery) -> Result<Page> {
        let cursor = q.next_token.as_deref().map(decode_cursor).transpose()?;
        let limit = page_limit(q.limit);
        let states: Vec<State> =
            if q.states.is_empty() { vec![State::Running, State::Paused] } else { q.states.clone() };

        // Placeholders are numbered in the order values are bound below.
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        let in_list: Vec<String> = states.iter().map(|_| next()).collect();
        let mut sql = format!("SELECT {COLUMNS} FROM sandboxes s WHERE s.state IN ({})", in_list.join(", "));
        if team.is_some() {
            sql.push_str(&format!(" AND s.team_id = {}", next()));
        }
        for _ in &q.metadata {
            let (k, v) = (next(), next());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM sandbox_metadata m WHERE m.sandbox_id = s.id \
                 AND m.key = {k} AND m.value = {v})"
            ));
        }
        if cursor.is_some() {
            let (t1, t2, id) = (next(), next(), next());
            sql.push_str(&format!(" AND (s.started_at < {t1} OR (s.started_at = {t2} AND s.id > {id}))"));
        }
        sql.push_str(&format!(" ORDER BY s.started_at DESC, s.id ASC LIMIT {}", next()));

        let mut query = sqlx::query(&sql);
        for s in &states {
            query = query.bind(s.as_str());
        }
        if let Some(team) = team {
            query = query.bind(team);
        }
        for (k, v) in &q.metadata {
            query = query.bind(k.as_str()).bind(v.as_str());
        }
        if let Some((t, id)) = &cursor {
            query = query.bind(*t).bind(*t).bind(id.as_str());
        }
        // One extra row tells whether another page exists.
        query = query.bind(i64::from(limit) + 1);

        let rows = query.fetch_all(&self.pool).await?;
        let mut items = rows.iter().map(decode_record).collect::<Result<Vec<_>>>()?;
        let next_token = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(encode_cursor)
        } else {
            None
        };
        Ok(Page { items, next_token })
    }

    /// Sandboxes that need the lifecycle manager at `now`: not killed and
    /// past their deadline (`end_at <= now`), or running and idle for longer
    /// than their idle timeout. Soonest deadline first.
    ///
    /// Because [`Store::touch`] may lag by up to [`TOUCH_GRANULARITY_MS`],
    /// the idle test adds that margin: an idle sandbox is never reported
    /// early, at most that much late.
    ///
    /// A paused sandbox is due when its `end_at` passes, so the caller sets
    /// `end_at` to the paused-retention deadline (or `i64::MAX`) on pause.
    pub async fn due(&self, now: i64) -> Result<Vec<SandboxRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE state <> 'killed' AND (end_at <= $1 \
             OR (state = 'running' AND idle_timeout_s IS NOT NULL \
             AND last_activity_at + idle_timeout_s * 1000 + {TOUCH_GRANULARITY_MS} <= $2)) \
             ORDER BY end_at, id"
        );
        let rows = sqlx::query(&sql).bind(now).bind(now).fetch_all(&self.pool).await?;
        rows.iter().map(decode_record).collect()
    }

    /// Every sandbox in `state`, oldest first (for reconciling with nodes).
    pub async fn by_state(&self, state: State) -> Result<Vec<SandboxRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE state = $1 ORDER BY started_at, id");
        let rows = sqlx::query(&sql).bind(state.as_str()).fetch_all(&self.pool).await?;
        rows.iter().map(decode_record).collect()
    }

    /// Counts and resource sums of every team's sandboxes.
    pub async fn usage(&self) -> Result<Usage> {
        self.usage_of(None).await
    }

    async fn usage_of(&self, team: Option<&str>) -> Result<Usage> {
        // PostgreSQL sums BIGINT as NUMERIC, which `Any` cannot decode.
        let sql = format!(
            "SELECT \
               CAST(COALESCE(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0) AS BIGINT), \
               CAST(COALESCE(SUM(CASE WHEN state = 'running' THEN cpu_count ELSE 0 END), 0) AS BIGINT), \
               CAST(COALESCE(SUM(CASE WHEN state = 'running' THEN memory_mb ELSE 0 END), 0) AS BIGINT), \
               CAST(COALESCE(SUM(CASE WHEN state = 'paused' THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM sandboxes WHERE state <> 'killed'{}",
            crate::team::team_filter(team, "team_id", 1)
        );
        let mut query = sqlx::query(&sql);
        if let Some(team) = team {
            query = query.bind(team);
        }
        let row = query.fetch_one(&self.pool).await?;
        Ok(Usage {
            running: from_i64("running count", row.try_get(0)?)?,
            vcpu: from_i64("vcpu sum", row.try_get(1)?)?,
            memory_mb: from_i64("memory sum", row.try_get(2)?)?,
            paused: from_i64("paused count", row.try_get(3)?)?,
        })
    }

    /// Deletes killed sandboxes whose deadline is before `before`; returns
    /// how many went. Their metrics stay until [`Store::prune_metrics`].
    pub async fn delete_killed(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sandboxes WHERE state = 'killed' AND end_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

impl TeamScope<'_> {
    /// One page of the team's sandboxes matching `q`, as
    /// [`Store::list_sandboxes`] pages every team's.
    pub async fn list_sandboxes(&self, q: &ListQuery) -> Result<Page> {
        self.store.sandboxes_of(Some(self.team_id), q).await
    }

    /// Counts and resource sums of the team's sandboxes (the quota
    /// endpoint's usage).
    pub async fn usage(&self) -> Result<Usage> {
        self.store.usage_of(Some(self.team_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let mut r = crate::sandbox::tests_support::record("a:b c");
        r.started_at = -5;
        let token = encode_cursor(&r);
        assert_eq!(decode_cursor(&token).unwrap(), (-5, "a:b c".to_string()));
        for bad in ["", "zz", "abc", "6331", "63313a783a79", "é1"] {
            assert!(matches!(decode_cursor(bad), Err(Error::InvalidArgument(_))), "{bad}");
        }
    }
}
