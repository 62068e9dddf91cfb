//! `POST /files`: writes uploaded files, streaming them to disk.
//!
//! Two request forms: `multipart/form-data` with one or more parts named
//! `file` whose filename is the destination, or an `application/octet-stream`
//! body written to `path`. Either may arrive with `Content-Encoding: gzip`.

use super::FilesRequest;
use crate::{
    creds,
    error::{Error, Result},
    http::{error_response, signature::Operation},
    state::Envd,
    users::{resolve_path, User},
};
use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Multipart, Request, State},
    response::{IntoResponse, Response},
    Json,
};
use futures::{stream::BoxStream, Stream, StreamExt, TryStreamExt};
use http::{header, HeaderMap};
use serde::Serialize;
use std::{
    fs::File,
    io,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio_util::io::{ReaderStream, StreamReader};

/// Bytes gathered before each write to disk: few, large writes keep the
/// blocking-pool hops per upload low.
const WRITE_BUF: usize = 1024 * 1024;

/// Decompressed bytes produced per chunk of a gzip body.
const INFLATE_CHUNK: usize = 256 * 1024;

/// One written file, as the SDKs parse it. Python builds
/// `WriteInfo(**item)`, so these must be exactly the keys sent.
#[derive(Debug, Serialize)]
struct WriteInfo {
    /// Base name.
    name: String,
    /// Always `"file"`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Absolute path.
    path: String,
}

/// `POST /files[?path=P][&username=U][&signature=S&signature_expiration=E]`.
pub async fn upload(State(envd): State<Arc<Envd>>, request: Request) -> Response {
    match receive(&envd, request).await {
        Ok(written) => Json(written).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn receive(envd: &Envd, request: Request) -> Result<Vec<WriteInfo>> {
    let (parts, body) = request.into_parts();
    let req = FilesRequest::authorize(envd, &parts.uri, &parts.headers, Operation::Write)?;
    let body = decoded_body(&parts.headers, body)?;
    match media_type(&parts.headers).as_str() {
        "application/octet-stream" => {
            let path = req.path.as_deref().ok_or_else(|| {
                Error::InvalidArgument("the 'path' query parameter is required for an octet-stream upload".into())
            })?;
            let target = resolve_path(&req.user, path);
            let data = body.map_err(|e| Error::InvalidArgument(format!("reading the request body: {e}")));
            Ok(vec![write_file(&req.user, target, data).await?])
        }
        m if m.starts_with("multipart/") => {
            let form = Multipart::from_request(Request::from_parts(parts, Body::from_stream(body)), &())
                .await
                .map_err(|e| Error::InvalidArgument(e.body_text()))?;
            write_parts(&req, form).await
        }
        other => Err(Error::InvalidArgument(format!(
            "unsupported Content-Type '{other}': expected multipart/form-data or application/octet-stream"
        ))),
    }
}

/// Writes every `file` part of a form.
async fn write_parts(req: &FilesRequest, mut form: Multipart) -> Result<Vec<WriteInfo>> {
    let mut written: Vec<WriteInfo> = Vec::new();
    let mut targets: Vec<PathBuf> = Vec::new();
    let form_error = |e: axum::extract::multipart::MultipartError| {
        Error::InvalidArgument(format!("reading the multipart body: {}", e.body_text()))
    };
    while let Some(field) = form.next_field().await.map_err(form_error)? {
        if field.name() != Some("file") {
            continue;
        }
        let destination = match (&req.path, field.file_name()) {
            (Some(path), _) if targets.is_empty() => path.clone(),
            (Some(_), _) => {
                return Err(Error::InvalidArgument(format!(
                    "the 'path' query parameter names a single destination, but the form has more than one \
                     file part (already written: {}); give each part its destination as filename instead",
                    list(&targets)
                )))
            }
            (None, Some(name)) if !name.is_empty() => name.to_string(),
            (None, _) => {
                return Err(Error::InvalidArgument(
                    "a 'file' part has no filename; the filename is the destination path".into(),
                ))
            }
        };
        let target = resolve_path(&req.user, &destination);
        if targets.contains(&target) {
            return Err(Error::InvalidArgument(format!(
                "'{}' appears twice in one upload; only the first was written (written: {})",
                target.display(),
                list(&targets)
            )));
        }
        targets.push(target.clone());
        written.push(write_file(&req.user, target, field.map_err(form_error)).await?);
    }
    if written.is_empty() {
        return Err(Error::InvalidArgument("the form has no part named 'file'".into()));
    }
    Ok(written)
}

fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The request body as a byte stream, gunzipped if `Content-Encoding` says so.
fn decoded_body(headers: &HeaderMap, body: Body) -> Result<BoxStream<'static, io::Result<Bytes>>> {
    let raw = body.into_data_stream().map_err(io::Error::other);
    let encoding = match headers.get(header::CONTENT_ENCODING) {
        None => return Ok(raw.boxed()),
        Some(v) => v
            .to_str()
            .map_err(|_| Error::InvalidArgument("Content-Encoding is not valid text".into()))?
            .trim()
            .to_ascii_lowercase(),
    };
    match encoding.as_str() {
        "" | "identity" => Ok(raw.boxed()),
        "gzip" | "x-gzip" => {
            let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(StreamReader::new(raw));
            decoder.multiple_members(true);
            Ok(ReaderStream::with_capacity(decoder, INFLATE_CHUNK).boxed())
        }
        other => Err(Error::InvalidArgument(format!("unsupported Content-Encoding '{other}': only gzip is accepted"))),
    }
}

/// The media type of `Content-Type`, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Streams `data` into `target` (created or truncated as `user`, parents
/// included). A failed write removes the partial file.
async fn write_file<S>(user: &User, target: PathBuf, mut data: S) -> Result<WriteInfo>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    let path = target.clone();
    let (file, regular) = creds::run_as(user, move || create_for_write(&path)).await?;
    // Only a regular file is removed on failure: an upload to a device
    // (say /dev/null) must never unlink it.
    let partial = Partial { user: regular.then(|| user.clone()), path: target.clone() };
    let mut out = BufWriter::with_capacity(WRITE_BUF, tokio::fs::File::from_std(file));
    let what = || format!("writing '{}'", target.display());
    let copied: Result<()> = async {
        while let Some(chunk) = data.next().await {
            out.write_all(&chunk?).await.map_err(|e| Error::io(what(), e))?;
        }
        // Flushing also waits for the file's in-flight write and reports
        // its error (e.g. ENOSPC).
        out.flush().await.map_err(|e| Error::io(what(), e))
    }
    .await;
    match copied {
        Ok(()) => partial.keep(),
        Err(e) => {
            drop(out);
            partial.discard().await;
            return Err(e);
        }
    }
    Ok(WriteInfo {
        name: target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        kind: "file",
        path: target.to_string_lossy().into_owned(),
    })
}

/// Creates `path`'s missing parent directories and opens `path` for writing,
/// truncating it; runs with the uploading user's credentials. Also says
/// whether it is a regular file.
fn create_for_write(path: &Path) -> Result<(File, bool)> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => Error::InvalidArgument(format!(
                "cannot create directory '{}': a component of it is not a directory",
                parent.display()
            )),
            _ => Error::io(format!("creating directory '{}'", parent.display()), e),
        })?;
    }
    let file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o666).open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::EISDIR) {
                Error::InvalidArgument(format!("path '{}' is a directory", path.display()))
            } else {
                Error::io(format!("opening '{}' for writing", path.display()), e)
            }
        })?;
    let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    Ok((file, regular))
}

/// A file being written. Dropped without [`Partial::keep`] (the request was
/// cancelled mid-upload), it is removed in the background.
struct Partial {
    user: Option<User>,
    path: PathBuf,
}

impl Partial {
    fn keep(mut self) {
        self.user = None;
    }

    /// Removes the file now, as the user.
    async fn discard(mut self) {
        if let Some(user) = self.user.take() {
            remove(user, self.path.clone()).await;
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let Some(user) = self.user.take() else { return };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(remove(user, std::mem::take(&mut self.path)));
        }
    }
}

async fn remove(user: User, path: PathBuf) {
    let p = path.clone();
    let removed = creds::run_as(&user, move || {
        std::fs::remove_file(&p).map_err(|e| Error::io(format!("removing '{}'", p.display()), e))
    })
    .await;
    if let Err(e) = removed {
        tracing::warn!("leaving a partial upload behind: {e}");
    }
}
