//! The step cache: the layers a build had after a step, by the step's key.
//! A key chains the parent's key with the step itself (and the hash of the
//! files it copies), so a change to step n misses from n on and hits
//! before it.

use crate::error::{Error, Result};
use arbor_layers::LayerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The cache under `<data>/build-cache`.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// The layers after the step, bottom first.
    layers: Vec<LayerId>,
}

/// The key of a step after `parent`: sha256 over both.
pub fn chain(parent: &str, step: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(b"arbor-build-v1\0");
    h.update(parent.as_bytes());
    h.update(b"\0");
    h.update(step.to_string().as_bytes());
    hex::encode(h.finalize())
}

impl Cache {
    /// The cache in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Cache> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        Ok(Cache { dir: dir.to_path_buf() })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The layers cached for `key`, if all of them are still in `store`.
    pub fn get(&self, key: &str, store: &arbor_layers::LayerStore) -> Option<Vec<LayerId>> {
        let text = std::fs::read_to_string(self.path(key)).ok()?;
        let entry: Entry = serde_json::from_str(&text).ok()?;
        entry.layers.iter().all(|l| store.contains(l)).then_some(entry.layers)
    }

    /// Records `layers` for `key` (atomically: a reader never sees half).
    pub fn put(&self, key: &str, layers: &[LayerId]) -> Result<()> {
        let json = serde_json::to_vec(&Entry { layers: layers.to_vec() }).map_err(|e| Error::Invalid(e.to_string()))?;
        let tmp = self.dir.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, json).map_err(Error::io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, self.path(key)).map_err(Error::io("recording a cache entry"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_chain() {
        let a = chain("root", &serde_json::json!({"type": "RUN", "args": ["x"]}));
        assert_eq!(a, chain("root", &serde_json::json!({"type": "RUN", "args": ["x"]})));
        assert_ne!(a, chain("root", &serde_json::json!({"type": "RUN", "args": ["y"]})));
        assert_ne!(a, chain("other", &serde_json::json!({"type": "RUN", "args": ["x"]})));
        assert_eq!(a.len(), 64);
    }
}
