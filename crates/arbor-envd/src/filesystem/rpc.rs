//! `POST /filesystem.Filesystem/{method}`: decoding each call and doing the
//! file-system work as the request's user.

use super::{
    entry::{entry_info, list_dir},
    watch::{watch_stream, WatchSpec},
};
use crate::{
    connect::{self, Call},
    creds,
    error::{Error, Result},
    state::Envd,
    users::{self, User},
};
use arbor_proto::filesystem::{
    watch_dir_response, CreateWatcherRequest, CreateWatcherResponse, GetWatcherEventsRequest, GetWatcherEventsResponse,
    ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse, MoveRequest, MoveResponse, RemoveRequest,
    RemoveResponse, RemoveWatcherRequest, RemoveWatcherResponse, StatRequest, StatResponse, WatchDirRequest,
    WatchDirResponse,
};
use axum::{
    extract::{Path, State},
    response::Response,
};
use http::HeaderMap;
use std::{fs, io, path::PathBuf, sync::Arc};

/// `POST /filesystem.Filesystem/{method}`.
pub async fn serve(
    State(envd): State<Arc<Envd>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    call: Call,
) -> Response {
    let envd: &Envd = &envd;
    // Resolved lazily: GetWatcherEvents and RemoveWatcher carry no user and
    // must work even if the default user were missing.
    let user = || envd.request_user(&headers);
    match method.as_str() {
        "Stat" => connect::unary(call, |req: StatRequest| stat(envd, user(), req)).await,
        "MakeDir" => connect::unary(call, |req: MakeDirRequest| make_dir(envd, user(), req)).await,
        "Move" => connect::unary(call, |req: MoveRequest| rename(envd, user(), req)).await,
        "ListDir" => connect::unary(call, |req: ListDirRequest| list(envd, user(), req)).await,
        "Remove" => connect::unary(call, |req: RemoveRequest| remove(user(), req)).await,
        "WatchDir" => {
            let user = user();
            let users = envd.users.clone();
            connect::server_stream(call, keepalive, |req: WatchDirRequest, _ctx| async move {
                watch_stream(WatchSpec::new(user?, &req.path, req.recursive, req.include_entry), users).await
            })
            .await
        }
        "CreateWatcher" => {
            connect::unary(call, |req: CreateWatcherRequest| async move {
                let spec = WatchSpec::new(user()?, &req.path, req.recursive, req.include_entry);
                Ok(CreateWatcherResponse { watcher_id: envd.watchers.create(spec).await? })
            })
            .await
        }
        "GetWatcherEvents" => {
            connect::unary(call, |req: GetWatcherEventsRequest| async move {
                Ok(GetWatcherEventsResponse { events: envd.watchers.drain(&req.watcher_id, &envd.users).await? })
            })
            .await
        }
        "RemoveWatcher" => {
            connect::unary(call, |req: RemoveWatcherRequest| async move {
                envd.watchers.remove(&req.watcher_id)?;
                Ok(RemoveWatcherResponse {})
            })
            .await
        }
        other => connect::no_such_method("filesystem.Filesystem", other),
    }
}

fn keepalive() -> WatchDirResponse {
    WatchDirResponse { event: Some(watch_dir_response::Event::Keepalive(watch_dir_response::KeepAlive {})) }
}

/// The user named by the `Authorization` header, else the default user.
async fn stat(envd: &Envd, user: Result<User>, req: StatRequest) -> Result<StatResponse> {
    let user = user?;
    let path = users::resolve_path(&user, &req.path);
    let users = envd.users.clone();
    let entry = creds::run_as(&user, move || entry_info(&path, &users.names())).await?;
    Ok(StatResponse { entry: Some(entry) })
}

async fn list(envd: &Envd, user: Result<User>, req: ListDirRequest) -> Result<ListDirResponse> {
    let user = user?;
    let path = users::resolve_path(&user, &req.path);
    let users = envd.users.clone();
    let entries = creds::run_as(&user, move || list_dir(&path, req.depth, &users.names())).await?;
    Ok(ListDirResponse { entries })
}

/// `mkdir -p`, except that an existing path is an error: `already_exists`
/// for a directory (the SDKs turn it into `False`), `invalid_argument` for
/// anything else.
async fn make_dir(envd: &Envd, user: Result<User>, req: MakeDirRequest) -> Result<MakeDirResponse> {
    let user = user?;
    let path = users::resolve_path(&user, &req.path);
    let users = envd.users.clone();
    let entry = creds::run_as(&user, move || {
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                return Err(Error::AlreadyExists(format!("directory already exists: {}", path.display())))
            }
            Ok(_) => {
                return Err(Error::InvalidArgument(format!(
                    "path already exists but is not a directory: {}",
                    path.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        }
        fs::create_dir_all(&path).map_err(|e| Error::io(format!("creating directory {}", path.display()), e))?;
        entry_info(&path, &users.names())
    })
    .await?;
    Ok(MakeDirResponse { entry: Some(entry) })
}

/// Renames `source` to `destination`, creating the destination's parent
/// directories first. Like `rename(2)` it replaces an existing file or empty
/// directory, and does not move across file systems.
async fn rename(envd: &Envd, user: Result<User>, req: MoveRequest) -> Result<MoveResponse> {
    let user = user?;
    let source = users::resolve_path(&user, &req.source);
    let destination = users::resolve_path(&user, &req.destination);
    let users = envd.users.clone();
    let entry = creds::run_as(&user, move || {
        // Checked first so a missing source leaves no new directories behind.
        fs::symlink_metadata(&source).map_err(|e| Error::io(format!("source {}", source.display()), e))?;
        if let Some(parent) = destination.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating directory {}", parent.display()), e))?;
        }
        fs::rename(&source, &destination).map_err(|e| move_error(&source, &destination, e))?;
        entry_info(&destination, &users.names())
    })
    .await?;
    Ok(MoveResponse { entry: Some(entry) })
}

fn move_error(source: &std::path::Path, destination: &std::path::Path, e: io::Error) -> Error {
    let what = format!("moving {} to {}", source.display(), destination.display());
    if e.kind() == io::ErrorKind::CrossesDevices {
        return Error::FailedPrecondition(format!("{what}: source and destination are on different file systems"));
    }
    Error::io(what, e)
}

/// Removes a file, a symlink (not its target) or a whole directory tree.
async fn remove(user: Result<User>, req: RemoveRequest) -> Result<RemoveResponse> {
    let user = user?;
    let path: PathBuf = users::resolve_path(&user, &req.path);
    creds::run_as(&user, move || {
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        let result = if meta.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        result.map_err(|e| Error::io(format!("removing {}", path.display()), e))
    })
    .await?;
    Ok(RemoveResponse {})
}
