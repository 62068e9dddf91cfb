//! `GET /v2/sandboxes` (filters and pages, exactly as the SDKs encode them)
//! and the older `GET /sandboxes`.

use super::detail_json;
use crate::{
    app::App,
    auth::Tenant,
    error::{ApiError, ApiResult},
    model::SandboxDetail,
};
use arbor_store::{ListQuery, State};
use axum::{
    extract::{RawQuery, State as AxState},
    http::{HeaderMap, HeaderValue},
    Json,
};
use std::sync::Arc;

/// The most items one page may hold.
pub const MAX_LIMIT: u32 = 1000;
/// Items per page when the caller names no limit.
pub const DEFAULT_LIMIT: u32 = 100;

/// The filters of a list request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// States wanted (all when empty).
    pub states: Vec<State>,
    /// Metadata pairs that must all match.
    pub metadata: Vec<(String, String)>,
    /// Page size.
    pub limit: Option<u32>,
    /// Cursor of the next page.
    pub next_token: Option<String>,
}

/// Parses the query string. `metadata` is double-encoded by the SDKs: its
/// value is itself a form query of percent-encoded keys and values.
pub fn parse_query(raw: Option<&str>) -> ApiResult<Filters> {
    let mut f = Filters::default();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "state" => {
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    f.states.push(match s {
                        "running" => State::Running,
                        "paused" => State::Paused,
                        other => {
                            return Err(ApiError::bad_request(format!("state '{other}' is not one of running, paused")))
                        }
                    });
                }
            }
            "metadata" => {
                for (k, v) in form_urlencoded::parse(value.as_bytes()) {
                    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
                    f.metadata.push((decode(&k), decode(&v)));
                }
            }
            "limit" => {
                let limit: u32 =
                    value.parse().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be 1..={MAX_LIMIT}, got '{value}'"))
                    })?;
                f.limit = Some(limit);
            }
            "nextToken" => f.next_token = Some(value.into_owned()).filter(|t| !t.is_empty()),
            _ => {}
        }
    }
    Ok(f)
}

async fn page(app: &App, tenant: &Tenant, f: Filters) -> ApiResult<(Vec<SandboxDetail>, Option<String>)> {
    let states = if f.states.is_empty() { vec![State::Running, State::Paused] } else { f.states };
    let query =
        ListQuery { states, metadata: f.metadata, limit: f.limit.unwrap_or(DEFAULT_LIMIT), next_token: f.next_token };
    let page = tenant.scope(&app.store).list_sandboxes(&query).await.map_err(|e| match e {
        arbor_store::Error::InvalidArgument(msg) => ApiError::bad_request(msg),
        other => other.into(),
    })?;
    Ok((page.items.iter().map(|r| detail_json(app, r, false)).collect(), page.next_token))
}

/// `GET /v2/sandboxes?state=..&metadata=..&limit=..&nextToken=..`.
#[utoipa::path(get, path = "/v2/sandboxes",
    params(("state" = Option<String>, Query, description = "comma-separated states"),
           ("metadata" = Option<String>, Query, description = "form-encoded key=value pairs, each percent-encoded"),
           ("limit" = Option<u32>, Query), ("nextToken" = Option<String>, Query)),
    responses((status = 200, body = [SandboxDetail], headers(("X-Next-Token" = String))),
              (status = 400, body = crate::model::ErrorBody)))]
pub async fn list_v2(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    RawQuery(raw): RawQuery,
) -> ApiResult<(HeaderMap, Json<Vec<SandboxDetail>>)> {
    let (items, next) = page(&app, &tenant, parse_query(raw.as_deref())?).await?;
    let mut headers = HeaderMap::new();
    if let Some(token) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert("x-next-token", token);
    }
    Ok((headers, Json(items)))
}

/// `GET /sandboxes`: every running sandbox (optionally filtered by metadata).
#[utoipa::path(get, path = "/sandboxes",
    responses((status = 200, body = [SandboxDetail]), (status = 400, body = crate::model::ErrorBody)))]
pub async fn list_v1(
    AxState(app): AxState<Arc<App>>,
    tenant: Tenant,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<SandboxDetail>>> {
    let mut filters = parse_query(raw.as_deref())?;
    filters.states = vec![State::Running];
    filters.limit = Some(MAX_LIMIT);
    let mut all = Vec::new();
    loop {
        let (items, next) = page(&app, &tenant, filters.clone()).await?;
        all.extend(items);
        filters.next_token = next;
        if filters.next_token.is_none() {
            return Ok(Json(all));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_double_encoded_metadata_decodes() {
        // The raw query both SDKs send for {"a b": "c&d=e", "x": "y"} (protocol notes §3.4).
        let f =
            parse_query(Some("metadata=a%252520b%3Dc%252526d%25253De%26x%3Dy&state=running%2Cpaused&limit=1")).unwrap();
        assert_eq!(f.metadata, vec![("a b".into(), "c&d=e".into()), ("x".into(), "y".into())]);
        assert_eq!(f.states, vec![State::Running, State::Paused]);
        assert_eq!(f.limit, Some(1));
        assert!(parse_query(Some("state=dead")).is_err());
        assert!(parse_query(Some("limit=1001")).is_err());
        assert!(parse_query(Some("limit=0")).is_err());
        assert_eq!(parse_query(None).unwrap(), Filters::default());
    }
}
