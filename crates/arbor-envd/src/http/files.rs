//! `/files`: downloading (`GET`) and uploading (`POST`) files as an OS user.
//!
//! Both check the access token themselves, because a signed URL may stand in
//! for it (see [`super::signature`]). All file-system work runs through
//! [`crate::creds::run_as`], so the kernel applies the user's permissions and
//! new files and directories belong to the user.

mod download;
mod encoding;
mod upload;

pub use download::download;
pub use upload::upload;

use super::signature::{self, Operation, Signed};
use crate::{
    error::{Error, Result},
    state::Envd,
    users::User,
};
use axum::extract::Query;
use http::{HeaderMap, Uri};
use serde::Deserialize;

/// The query parameters of `/files`, as the SDKs send them.
#[derive(Debug, Default, Deserialize)]
struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<String>,
}

/// A parsed and authorized `/files` request.
#[derive(Debug)]
struct FilesRequest {
    /// The `path` query value, if given and not empty.
    path: Option<String>,
    /// The user the request acts as.
    user: User,
}

impl FilesRequest {
    /// Parses the query, checks the token or signature for `op` and resolves
    /// the user.
    fn authorize(envd: &Envd, uri: &Uri, headers: &HeaderMap, op: Operation) -> Result<Self> {
        let Query(q) = Query::<FilesQuery>::try_from_uri(uri)
            .map_err(|e| Error::InvalidArgument(format!("invalid /files query: {}", e.body_text())))?;
        let expiration = q
            .signature_expiration
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<i64>().map_err(|_| {
                    Error::InvalidArgument(format!("signature_expiration must be Unix seconds, got '{s}'"))
                })
            })
            .transpose()?;
        let signed = Signed {
            path: q.path.as_deref().unwrap_or_default(),
            username: q.username.as_deref().unwrap_or_default(),
            signature: q.signature.as_deref(),
            expiration,
        };
        signature::authorize(envd.auth.token().as_deref(), headers, &signed, op, signature::unix_now())?;
        let user = envd.user(q.username.as_deref())?;
        Ok(Self { path: q.path.filter(|p| !p.is_empty()), user })
    }
}
