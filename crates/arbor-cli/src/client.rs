//! A small client of the Arbor REST API, speaking it the way the SDKs do:
//! `X-API-KEY` auth, JSON bodies, `{"code","message"}` error bodies and
//! `X-Next-Token` pagination.

use crate::config::Settings;
use crate::error::{root_cause, Error, Result};
use crate::query::ListQuery;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

/// Escaped in a sandbox id used as a path segment: everything but RFC 3986 unreserved characters.
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The `User-Agent` the CLI sends.
pub const USER_AGENT: &str = concat!("arbor-cli/", env!("CARGO_PKG_VERSION"));

/// A connection to one Arbor server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    /// Creates a client for `settings.api_url` authenticating with `settings.api_key`.
    pub fn new(settings: &Settings) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| Error::Http { url: settings.api_url.clone(), reason: root_cause(&e) })?;
        Ok(Self { http, base: settings.api_url.clone(), key: settings.api_key.clone() })
    }

    /// The base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `{base}{path}`, with `path` starting with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `/sandboxes/{id}{rest}` with the id escaped as a path segment.
    fn sandbox_path(id: &str, rest: &str) -> String {
        format!("/sandboxes/{}{rest}", utf8_percent_encode(id, SEGMENT))
    }

    /// A request to `url` carrying the API key.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.key {
            Some(key) => req.header("X-API-KEY", key),
            None => req,
        }
    }

    /// Sends a request; transport failures and non-2xx answers become [`Error`]s.
    pub async fn send(&self, req: RequestBuilder, url: &str) -> Result<Response> {
        let resp = req.send().await.map_err(|e| self.transport_error(&e, url))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(api_error(status, &body, self.key.is_some()))
    }

    /// Classifies a reqwest error: no connection at all means the server is
    /// not there, anything later is a failed request.
    pub fn transport_error(&self, e: &reqwest::Error, url: &str) -> Error {
        if e.is_connect() || (e.is_timeout() && !e.is_body()) {
            Error::Unreachable { url: self.base.clone(), reason: root_cause(e) }
        } else {
            Error::Http { url: url.to_string(), reason: root_cause(e) }
        }
    }

    pub(crate) async fn json(&self, resp: Response, url: &str) -> Result<Value> {
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e, url))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadResponse { url: url.to_string(), reason: e.to_string() })
    }

    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = self.url(path);
        let mut req = self.request(method, &url);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = self.send(req, &url).await?;
        self.json(resp, &url).await
    }

    pub(crate) async fn call_empty(&self, method: Method, path: &str, body: Option<&Value>) -> Result<()> {
        let url = self.url(path);
        let mut req = self.request(method, &url);
        if let Some(body) = body {
            req = req.json(body);
        }
        self.send(req, &url).await.map(drop)
    }

    /// `POST /sandboxes` with a `NewSandbox` body; returns the `Sandbox` JSON.
    pub async fn create(&self, body: &Value) -> Result<Value> {
        self.call(Method::POST, "/sandboxes", Some(body)).await
    }

    /// One page of `GET /v2/sandboxes` and the next page's token, if any.
    pub async fn list_page(&self, query: &ListQuery, next: Option<&str>) -> Result<(Vec<Value>, Option<String>)> {
        let q = query.to_query(next);
        let url = if q.is_empty() { self.url("/v2/sandboxes") } else { format!("{}?{q}", self.url("/v2/sandboxes")) };
        let resp = self.send(self.request(Method::GET, &url), &url).await?;
        let token = resp
            .headers()
            .get("x-next-token")
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        match self.json(resp, &url).await? {
            Value::Array(items) => Ok((items, token)),
            other => Err(Error::BadResponse { url, reason: format!("expected a JSON array, got {}", kind(&other)) }),
        }
    }

    /// `GET /v2/sandboxes`: one page when `query.limit` is set, else every
    /// page, following `X-Next-Token`.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Value>> {
        let (mut all, mut next) = self.list_page(query, None).await?;
        if query.limit.is_some() {
            return Ok(all);
        }
        while let Some(token) = next {
            let (items, token_after) = self.list_page(query, Some(&token)).await?;
            // A server that repeats its token would loop forever; stop instead.
            if items.is_empty() || token_after.as_deref() == Some(token.as_str()) {
                all.extend(items);
                break;
            }
            all.extend(items);
            next = token_after;
        }
        Ok(all)
    }

    /// `GET /sandboxes/{id}`: the `SandboxDetail` JSON.
    pub async fn info(&self, id: &str) -> Result<Value> {
        self.call(Method::GET, &Self::sandbox_path(id, ""), None).await
    }

    /// `DELETE /sandboxes/{id}`.
    pub async fn kill(&self, id: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &Self::sandbox_path(id, ""), None).await
    }

    /// `POST /sandboxes/{id}/timeout`: the sandbox ends `seconds` from now.
    pub async fn set_timeout(&self, id: &str, seconds: u64) -> Result<()> {
        self.call_empty(Method::POST, &Self::sandbox_path(id, "/timeout"), Some(&json!({ "timeout": seconds }))).await
    }

    /// `GET /sandboxes/{id}/metrics`, optionally bounded by unix seconds.
    pub async fn metrics(&self, id: &str, start: Option<u64>, end: Option<u64>) -> Result<Value> {
        let mut q = Vec::new();
        if let Some(s) = start {
            q.push(format!("start={s}"));
        }
        if let Some(e) = end {
            q.push(format!("end={e}"));
        }
        let mut path = Self::sandbox_path(id, "/metrics");
        if !q.is_empty() {
            path = format!("{path}?{}", q.join("&"));
        }
        self.call(Method::GET, &path, None).await
    }

    /// `POST /sandboxes/{id}/connect`: resumes a paused sandbox or extends a
    /// running one; returns the `Sandbox` JSON.
    pub async fn connect(&self, id: &str, timeout: u64) -> Result<Value> {
        self.call(Method::POST, &Self::sandbox_path(id, "/connect"), Some(&json!({ "timeout": timeout }))).await
    }
}

/// Persistence: pause, clone and snapshots.
impl Client {
    /// `POST /sandboxes/{id}/pause`.
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.call_empty(Method::POST, &Self::sandbox_path(id, "/pause"), None).await
    }

    /// `POST /sandboxes/{id}/clone`: the clone answer JSON.
    pub async fn clone_sandbox(&self, id: &str, count: u64, strict: bool, timeout: Option<u64>) -> Result<Value> {
        let mut body = json!({ "count": count, "strict": strict });
        if let Some(t) = timeout {
            body["timeout"] = json!(t);
        }
        self.call(Method::POST, &Self::sandbox_path(id, "/clone"), Some(&body)).await
    }

    /// `POST /sandboxes/{id}/snapshots`: `{snapshotID, names}`.
    pub async fn create_snapshot(&self, id: &str, name: Option<&str>) -> Result<Value> {
        let body = name.map_or_else(|| json!({}), |n| json!({ "name": n }));
        self.call(Method::POST, &Self::sandbox_path(id, "/snapshots"), Some(&body)).await
    }

    /// Every page of `GET /snapshots`, optionally of one sandbox.
    pub async fn list_snapshots(&self, sandbox: Option<&str>) -> Result<Vec<Value>> {
        let (mut all, mut next) = (Vec::new(), None::<String>);
        loop {
            let mut q = Vec::new();
            if let Some(s) = sandbox {
                q.push(format!("sandboxID={}", utf8_percent_encode(s, SEGMENT)));
            }
            if let Some(t) = &next {
                q.push(format!("nextToken={}", utf8_percent_encode(t, SEGMENT)));
            }
            let url = format!("{}?{}", self.url("/snapshots"), q.join("&"));
            let resp = self.send(self.request(Method::GET, &url), &url).await?;
            let token = resp.headers().get("x-next-token").and_then(|v| v.to_str().ok()).map(str::to_string);
            match self.json(resp, &url).await? {
                Value::Array(items) if !items.is_empty() => all.extend(items),
                Value::Array(_) => return Ok(all),
                other => {
                    let reason = format!("expected a JSON array, got {}", kind(&other));
                    return Err(Error::BadResponse { url, reason });
                }
            }
            match token.filter(|t| !t.is_empty() && Some(t) != next.as_ref()) {
                Some(t) => next = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// `DELETE /templates/{id}` of a snapshot (the endpoint that deletes templates).
    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.delete_template(id).await
    }
}

/// Builds the error for a non-2xx answer from its `{"code","message"}` body,
/// falling back to the raw body or the status text.
pub fn api_error(status: StatusCode, body: &str, have_key: bool) -> Error {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .filter(|m| !m.is_empty())
        .or_else(|| Some(body.trim().to_string()).filter(|b| !b.is_empty() && b.len() <= 300))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("request failed").to_lowercase());
    let hint = match (status, have_key) {
        (StatusCode::UNAUTHORIZED, false) => {
            "; no API key is set: use --api-key, ARBOR_API_KEY or 'arbor config set api_key KEY'".to_string()
        }
        (StatusCode::UNAUTHORIZED, true) => "; check the API key".to_string(),
        _ => String::new(),
    };
    Error::Api { status: status.as_u16(), message, hint }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_the_json_body() {
        let e = api_error(StatusCode::NOT_FOUND, r#"{"code":404,"message":"sandbox xyz not found"}"#, true);
        assert_eq!(e.to_string(), "sandbox xyz not found (404)");
        let e = api_error(StatusCode::BAD_GATEWAY, "upstream down", true);
        assert_eq!(e.to_string(), "upstream down (502)");
        let e = api_error(StatusCode::INTERNAL_SERVER_ERROR, "", true);
        assert_eq!(e.to_string(), "internal server error (500)");
        let e = api_error(StatusCode::UNAUTHORIZED, r#"{"code":401,"message":"invalid API key"}"#, false);
        assert!(e.to_string().starts_with("invalid API key (401); no API key is set"));
    }
}
