//! Directory watching: the `WatchDir` stream and the polling watchers behind
//! `CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`.
//!
//! Both sit on `notify`'s inotify backend. Its event kinds are mapped onto
//! the protocol's five event types the way upstream envd's fsnotify does:
//! a rename is `RENAME` for the old name and `CREATE` for the new one (the
//! kernel reports the two halves separately, and a move into the watched
//! tree from outside has only the second half). Opens, closes and reads are
//! not reported.

use super::entry::entry_info;
use crate::{
    creds,
    error::{Error, Result},
    users::{self, NameCache, User, UserDb},
};
use arbor_proto::filesystem::{watch_dir_response, EventType, FilesystemEvent, WatchDirResponse};
use futures::Stream;
use notify::{
    event::{EventKind, ModifyKind, RenameMode},
    RecommendedWatcher, RecursiveMode, Watcher,
};
use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::sync::mpsc;

/// Events a polling watcher keeps between two `GetWatcherEvents` calls;
/// beyond this the oldest are dropped.
const POLL_BUFFER: usize = 10_000;

/// Events a `WatchDir` stream buffers while its client is slow; beyond this
/// new ones are dropped.
const STREAM_BUFFER: usize = 4_096;

/// Events a stream converts in one batch (one blocking task when entries are
/// attached).
const STREAM_BATCH: usize = 256;

/// The protocol event type of a notify event kind, or `None` for kinds that
/// are not reported.
pub fn event_type(kind: &EventKind) -> Option<EventType> {
    match kind {
        EventKind::Create(_) => Some(EventType::Create),
        EventKind::Remove(_) => Some(EventType::Remove),
        EventKind::Modify(ModifyKind::Metadata(_)) => Some(EventType::Chmod),
        // inotify's MOVED_TO: the name something was moved to.
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Some(EventType::Create),
        // The pairing of a From and a To seen earlier; both halves were sent.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => None,
        EventKind::Modify(ModifyKind::Name(_)) => Some(EventType::Rename),
        EventKind::Modify(_) => Some(EventType::Write),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => None,
    }
}

/// One change under a watched directory, before it is turned into a message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    path: PathBuf,
    kind: EventType,
}

fn changes(event: notify::Event) -> impl Iterator<Item = Change> {
    let kind = event_type(&event.kind);
    event.paths.into_iter().filter_map(move |path| kind.map(|kind| Change { path, kind }))
}

/// An event's name: its path relative to the watched directory (`.` for the
/// directory itself).
fn relative_name(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

/// Turns changes into messages; with `names`, attaches each entry that still
/// exists. Blocking when `names` is given (it stats).
fn to_messages(root: &Path, changes: Vec<Change>, names: Option<&NameCache>) -> Vec<FilesystemEvent> {
    changes
        .into_iter()
        .map(|c| FilesystemEvent {
            name: relative_name(root, &c.path),
            r#type: c.kind as i32,
            entry: names.and_then(|n| entry_info(&c.path, n).ok()),
        })
        .collect()
}

/// What a watch is on: the resolved directory, whose rights apply, and
/// whether events carry entries.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The user the request runs as.
    pub user: User,
    /// The directory, absolute.
    pub root: PathBuf,
    /// Watch subdirectories too.
    pub recursive: bool,
    /// Attach an `EntryInfo` to events whose entry still exists.
    pub include_entry: bool,
}

impl WatchSpec {
    /// A watch on `path` as the SDK sent it (`~` and relative paths are
    /// taken from the user's home).
    pub fn new(user: User, path: &str, recursive: bool, include_entry: bool) -> Self {
        let root = users::resolve_path(&user, path);
        Self { user, root, recursive, include_entry }
    }

    /// Converts changes, stat'ing entries as the user when asked to.
    async fn messages(&self, changes: Vec<Change>, users: &UserDb) -> Result<Vec<FilesystemEvent>> {
        if !self.include_entry {
            return Ok(to_messages(&self.root, changes, None));
        }
        let (root, users) = (self.root.clone(), users.clone());
        creds::run_as(&self.user, move || Ok(to_messages(&root, changes, Some(&users.names())))).await
    }
}

/// Starts an inotify watch on `spec.root` with the user's rights checked;
/// `handler` gets every notify event and error, on notify's own thread.
async fn start_watch<F>(spec: &WatchSpec, handler: F) -> Result<RecommendedWatcher>
where
    F: FnMut(notify::Result<notify::Event>) + Send + 'static,
{
    let (root, recursive) = (spec.root.clone(), spec.recursive);
    creds::run_as(&spec.user, move || {
        let meta = std::fs::metadata(&root).map_err(|e| Error::io(format!("watching {}", root.display()), e))?;
        if !meta.is_dir() {
            return Err(Error::InvalidArgument(format!("path {} is not a directory", root.display())));
        }
        // notify adds its watches from its own (root) thread, so the user's
        // right to read the directory is checked here, as the user.
        std::fs::read_dir(&root).map_err(|e| Error::io(format!("watching {}", root.display()), e))?;
        let config = notify::Config::default().with_follow_symlinks(false);
        let mut watcher = RecommendedWatcher::new(handler, config).map_err(|e| notify_error(&root, e))?;
        let mode = if recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        watcher.watch(&root, mode).map_err(|e| notify_error(&root, e))?;
        Ok(watcher)
    })
    .await
}

fn notify_error(root: &Path, err: notify::Error) -> Error {
    let what = format!("watching {}", root.display());
    match err.kind {
        notify::ErrorKind::Io(e) => Error::io(what, e),
        notify::ErrorKind::PathNotFound => Error::NotFound(format!("{what}: no such directory")),
        notify::ErrorKind::MaxFilesWatch => {
            Error::Internal(format!("{what}: the inotify watch limit (fs.inotify.max_user_watches) is reached"))
        }
        other => Error::Internal(format!("{what}: {other:?}")),
    }
}

/// The `WatchDir` stream: `start`, then one `filesystem` message per event.
/// The inotify watch lives inside the stream, so it is released when the
/// stream ends or the client goes away. A watcher error ends the stream with
/// `internal`, as upstream does.
pub async fn watch_stream(
    spec: WatchSpec,
    users: UserDb,
) -> Result<impl Stream<Item = Result<WatchDirResponse>> + Send + 'static> {
    let (tx, mut rx) = mpsc::channel::<notify::Result<notify::Event>>(STREAM_BUFFER);
    let root = spec.root.clone();
    let mut dropped = 0u64;
    let watcher = start_watch(&spec, move |event| {
        if tx.try_send(event).is_err() && !tx.is_closed() {
            dropped += 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dir = %root.display(), dropped, "watch client is slow; dropping events");
            }
        }
    })
    .await?;
    let message = |event| Ok(WatchDirResponse { event: Some(event) });
    Ok(async_stream::stream! {
        let _watcher = watcher;
        yield message(watch_dir_response::Event::Start(watch_dir_response::StartEvent {}));
        let mut batch = Vec::with_capacity(STREAM_BATCH);
        while rx.recv_many(&mut batch, STREAM_BATCH).await > 0 {
            let mut pending = Vec::new();
            let mut failure = None;
            for event in batch.drain(..) {
                match event {
                    Ok(event) => {
                        if event.need_rescan() {
                            tracing::warn!(dir = %spec.root.display(), "inotify queue overflowed; events were lost");
                        }
                        pending.extend(changes(event));
                    }
                    Err(e) => {
                        failure = Some(notify_error(&spec.root, e));
                        break;
                    }
                }
            }
            match spec.messages(pending, &users).await {
                Ok(events) => {
                    for event in events {
                        yield message(watch_dir_response::Event::Filesystem(event));
                    }
                }
                Err(e) => failure = Some(e),
            }
            if let Some(e) = failure {
                yield Err(e);
                break;
            }
        }
    })
}

/// Changes a polling watcher holds until they are fetched.
#[derive(Debug, Default)]
struct Queue {
    changes: VecDeque<Change>,
    dropped: u64,
    error: Option<String>,
}

#[derive(Debug)]
struct PollWatcher {
    spec: WatchSpec,
    queue: Arc<Mutex<Queue>>,
    /// Dropping it stops the inotify watch.
    _watcher: RecommendedWatcher,
}

/// Polling watchers created by `CreateWatcher`, by id.
#[derive(Debug, Default)]
pub struct Watchers {
    watchers: Mutex<HashMap<String, Arc<PollWatcher>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, so
    // the data stays usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watchers {
    /// Starts watching and returns the new watcher's id.
    pub async fn create(&self, spec: WatchSpec) -> Result<String> {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let sink = queue.clone();
        let root = spec.root.clone();
        let watcher = start_watch(&spec, move |event| {
            let mut q = lock(&sink);
            match event {
                Ok(event) => {
                    if event.need_rescan() {
                        tracing::warn!(dir = %root.display(), "inotify queue overflowed; events were lost");
                    }
                    for change in changes(event) {
                        if q.changes.len() >= POLL_BUFFER {
                            q.changes.pop_front();
                            q.dropped += 1;
                            if q.dropped.is_power_of_two() {
                                tracing::warn!(
                                    dir = %root.display(),
                                    dropped = q.dropped,
                                    "watcher events are not being fetched; dropping the oldest"
                                );
                            }
                        }
                        q.changes.push_back(change);
                    }
                }
                Err(e) => q.error = Some(notify_error(&root, e).to_string()),
            }
        })
        .await?;
        let id = new_id()?;
        let watcher = Arc::new(PollWatcher { spec, queue, _watcher: watcher });
        lock(&self.watchers).insert(id.clone(), watcher);
        Ok(id)
    }

    /// Takes the events seen since the last call. A watcher whose inotify
    /// watch failed reports the failure (`internal`), as upstream does.
    pub async fn drain(&self, id: &str, users: &UserDb) -> Result<Vec<FilesystemEvent>> {
        let watcher = self.get(id)?;
        let changes: Vec<Change> = {
            let mut q = lock(&watcher.queue);
            if let Some(e) = &q.error {
                return Err(Error::Internal(format!("watcher {id} failed: {e}")));
            }
            q.dropped = 0;
            q.changes.drain(..).collect()
        };
        watcher.spec.messages(changes, users).await
    }

    /// Stops and forgets a watcher.
    pub fn remove(&self, id: &str) -> Result<()> {
        match lock(&self.watchers).remove(id) {
            Some(_) => Ok(()),
            None => Err(not_found(id)),
        }
    }

    fn get(&self, id: &str) -> Result<Arc<PollWatcher>> {
        lock(&self.watchers).get(id).cloned().ok_or_else(|| not_found(id))
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("watcher with id '{id}' not found"))
}

/// A fresh unguessable id, so clients of different watchers never collide
/// even across envd restarts.
fn new_id() -> Result<String> {
    let mut bytes = [0u8; 12];
    // SAFETY: the pointer and length describe `bytes`, which outlives the
    // call; getrandom writes at most that many bytes.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if usize::try_from(n).ok() != Some(bytes.len()) {
        return Err(Error::io("generating a watcher id", std::io::Error::last_os_error()));
    }
    Ok(bytes.iter().fold(String::from("w"), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, DataChange, MetadataKind, RemoveKind};

    #[test]
    fn maps_notify_kinds_like_fsnotify() {
        let cases = [
            (EventKind::Create(CreateKind::File), Some(EventType::Create)),
            (EventKind::Create(CreateKind::Folder), Some(EventType::Create)),
            (EventKind::Modify(ModifyKind::Data(DataChange::Any)), Some(EventType::Write)),
            (EventKind::Modify(ModifyKind::Any), Some(EventType::Write)),
            (EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)), Some(EventType::Chmod)),
            (EventKind::Modify(ModifyKind::Name(RenameMode::From)), Some(EventType::Rename)),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), Some(EventType::Create)),
            (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), None),
            (EventKind::Remove(RemoveKind::File), Some(EventType::Remove)),
            (EventKind::Remove(RemoveKind::Folder), Some(EventType::Remove)),
            (EventKind::Access(AccessKind::Any), None),
            (EventKind::Other, None),
        ];
        for (kind, want) in cases {
            assert_eq!(event_type(&kind), want, "{kind:?}");
        }
    }

    #[test]
    fn names_are_relative_to_the_watched_dir() {
        let root = Path::new("/home/user/w");
        assert_eq!(relative_name(root, Path::new("/home/user/w/a.txt")), "a.txt");
        assert_eq!(relative_name(root, Path::new("/home/user/w/sub/b")), "sub/b");
        assert_eq!(relative_name(root, root), ".");
        let ev = notify::Event::new(EventKind::Remove(RemoveKind::File)).add_path(root.join("x"));
        let msgs = to_messages(root, changes(ev).collect(), None);
        assert_eq!(msgs, vec![FilesystemEvent { name: "x".into(), r#type: EventType::Remove as i32, entry: None }]);
    }

    #[test]
    fn ids_are_distinct() {
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        assert!(a.starts_with('w'));
    }
}
