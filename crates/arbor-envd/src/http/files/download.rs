//! `GET /files`: streams a file to the client.

use super::{encoding, FilesRequest};
use crate::{
    creds,
    error::{Error, Result},
    http::{error_response, signature::Operation},
    state::Envd,
    users::resolve_path,
};
use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{header, HeaderMap, HeaderValue, Uri};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::{fs::File, os::unix::fs::OpenOptionsExt, path::Path, sync::Arc};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

/// Bytes read from disk per body chunk: large enough that per-chunk overhead
/// (a blocking-pool hop and a frame) stays far below the copy cost.
const CHUNK: usize = 256 * 1024;

/// `GET /files?path=P[&username=U][&signature=S&signature_expiration=E]`.
pub async fn download(State(envd): State<Arc<Envd>>, headers: HeaderMap, uri: Uri) -> Response {
    match serve(&envd, &headers, &uri).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

async fn serve(envd: &Envd, headers: &HeaderMap, uri: &Uri) -> Result<Response> {
    let req = FilesRequest::authorize(envd, uri, headers, Operation::Read)?;
    let path = req.path.ok_or_else(|| Error::InvalidArgument("missing 'path' query parameter".into()))?;
    let resolved = resolve_path(&req.user, &path);
    let name = resolved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (file, size) = creds::run_as(&req.user, move || open_regular(&resolved)).await?;

    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Some(value) = content_disposition(&name) {
        resp_headers.insert(header::CONTENT_DISPOSITION, value);
    }
    let mut file = tokio::fs::File::from_std(file);
    if encoding::accepts_gzip(headers) {
        let mut sample = vec![0u8; encoding::SAMPLE];
        let n = read_up_to(&mut file, &mut sample).await?;
        sample.truncate(n);
        let rest = file.take(if size > 0 { size.saturating_sub(n as u64) } else { u64::MAX });
        let whole = std::io::Cursor::new(sample).chain(rest);
        if encoding::worth_compressing(whole.get_ref().0.get_ref()) {
            resp_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            let plain = tokio::io::BufReader::with_capacity(CHUNK, whole);
            let gz =
                async_compression::tokio::bufread::GzipEncoder::with_quality(plain, async_compression::Level::Fastest);
            return Ok((resp_headers, Body::from_stream(ReaderStream::with_capacity(gz, CHUNK))).into_response());
        }
        return Ok(plain_response(resp_headers, size, whole));
    }
    Ok(plain_response(resp_headers, size, file.take(if size > 0 { size } else { u64::MAX })))
}

/// Fills `buf` as far as the file allows; returns the bytes read.
async fn read_up_to(file: &mut tokio::fs::File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).await.map_err(|e| Error::io("reading the file", e))? {
            0 => break,
            got => n += got,
        }
    }
    Ok(n)
}

/// The file as-is.
fn plain_response(
    mut resp_headers: HeaderMap,
    size: u64,
    reader: impl tokio::io::AsyncRead + Send + 'static,
) -> Response {
    // Files of pseudo file systems (/proc, /sys) report size 0 yet have
    // content: those, and empty files, are sent without a length and read to
    // EOF. Otherwise the body is capped at the size announced, so a file that
    // grows meanwhile cannot overrun Content-Length; one that shrinks makes
    // the connection fail rather than deliver a silently short file.
    if size > 0 {
        resp_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    (resp_headers, Body::from_stream(ReaderStream::with_capacity(reader, CHUNK))).into_response()
}

/// Opens `path` for reading (as the calling thread's credentials allow) and
/// checks it is a regular file. Returns the file and its size.
fn open_regular(path: &Path) -> Result<(File, u64)> {
    // O_NONBLOCK keeps a FIFO from blocking the open; it has no effect on
    // reads of regular files, the only kind served.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| match e
        .kind()
    {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("path '{}' does not exist", path.display())),
        _ => Error::io(format!("opening '{}'", path.display()), e),
    })?;
    let meta = file.metadata().map_err(|e| Error::io(format!("stat '{}'", path.display()), e))?;
    if meta.is_dir() {
        return Err(Error::InvalidArgument(format!("path '{}' is a directory", path.display())));
    }
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!("path '{}' is not a regular file", path.display())));
    }
    Ok((file, meta.len()))
}

/// Characters `filename*` may carry unencoded (RFC 8187 `attr-char`).
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="…"` with an ASCII fallback, plus `filename*` when
/// the name is not plain ASCII.
fn content_disposition(name: &str) -> Option<HeaderValue> {
    if name.is_empty() {
        return Some(HeaderValue::from_static("attachment"));
    }
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let mut value = format!("attachment; filename=\"{fallback}\"");
    if fallback != name {
        value.push_str("; filename*=UTF-8''");
        value.extend(utf8_percent_encode(name, ATTR_CHAR));
    }
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition() {
        assert_eq!(content_disposition("a b.txt").unwrap(), "attachment; filename=\"a b.txt\"");
        assert_eq!(
            content_disposition("ü\"x.txt").unwrap(),
            "attachment; filename=\"__x.txt\"; filename*=UTF-8''%C3%BC%22x.txt"
        );
        assert_eq!(content_disposition("").unwrap(), "attachment");
    }
}
