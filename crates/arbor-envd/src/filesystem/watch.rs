//! Directory watchers (scaffold; replaced by the full implementation).

/// Polling watchers created by `CreateWatcher`.
#[derive(Debug, Default)]
pub struct Watchers {}
