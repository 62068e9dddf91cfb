//! A build's log: kept in memory for the status polls of the SDKs and the
//! CLI, and appended to a JSON-lines file so that it outlives the server.

use serde::{Deserialize, Serialize};
use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

/// Severity, as the SDKs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Details.
    Debug,
    /// Progress and command output.
    Info,
    /// Something to look at.
    Warn,
    /// A failure.
    Error,
}

/// One log entry (`logEntries[]` of the build status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// RFC 3339.
    pub timestamp: String,
    /// Severity.
    pub level: Level,
    /// The text, one line.
    pub message: String,
    /// The step it belongs to (`"3"`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// The log of one build; cheap to clone, shared by the builder and readers.
#[derive(Debug, Clone)]
pub struct BuildLog {
    entries: Arc<Mutex<Vec<Entry>>>,
    file: Option<PathBuf>,
}

impl BuildLog {
    /// A log appended to `file` (created if missing; entries already in it are loaded).
    pub fn open(file: &Path) -> BuildLog {
        let entries = std::fs::read_to_string(file)
            .map(|text| text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
            .unwrap_or_default();
        BuildLog { entries: Arc::new(Mutex::new(entries)), file: Some(file.to_path_buf()) }
    }

    /// A log kept in memory only.
    pub fn memory() -> BuildLog {
        BuildLog { entries: Arc::default(), file: None }
    }

    /// Appends one entry per line of `message`.
    pub fn add(&self, level: Level, step: Option<usize>, message: &str) {
        let timestamp = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for line in message.lines() {
            let line = line.trim_end_matches('\r');
            let entry = Entry {
                timestamp: timestamp.clone(),
                level,
                message: line.to_string(),
                step: step.map(|s| s.to_string()),
            };
            if let Ok(json) = serde_json::to_string(&entry) {
                out.push_str(&json);
                out.push('\n');
            }
            entries.push(entry);
        }
        if let Some(file) = &self.file {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .and_then(|mut f| f.write_all(out.as_bytes()));
            if let Err(e) = written {
                tracing::warn!(file = %file.display(), "writing the build log: {e}");
            }
        }
    }

    /// Shorthand for an info entry.
    pub fn info(&self, step: Option<usize>, message: &str) {
        self.add(Level::Info, step, message);
    }

    /// Entries from index `offset` on.
    pub fn since(&self, offset: usize) -> Vec<Entry> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(offset..).map(<[Entry]>::to_vec).unwrap_or_default()
    }

    /// The last `n` entries (a failure's context).
    pub fn tail(&self, n: usize) -> Vec<Entry> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries[entries.len().saturating_sub(n)..].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_entries_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        let log = BuildLog::open(&path);
        log.info(Some(2), "one\ntwo\r\n");
        log.add(Level::Error, None, "bad");
        assert_eq!(log.since(1).len(), 2);
        assert_eq!(log.since(9), vec![]);
        assert_eq!(log.tail(1)[0].message, "bad");
        let again = BuildLog::open(&path);
        let all = again.since(0);
        assert_eq!(all.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["one", "two", "bad"]);
        assert_eq!(all[0].step.as_deref(), Some("2"));
        assert!(BuildLog::memory().since(0).is_empty());
    }
}
