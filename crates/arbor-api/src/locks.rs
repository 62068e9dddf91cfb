//! One operation at a time per sandbox: a pause, a resume, a snapshot, a
//! clone or a kill of the same sandbox wait for each other, so that (for
//! one) a burst of requests to a paused sandbox with auto-resume resumes it
//! once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Per-sandbox operation locks.
#[derive(Debug, Default)]
pub struct Locks {
    map: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

impl Locks {
    /// Waits until no other operation holds sandbox `id`; holds it until the
    /// guard drops.
    pub async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Entries nobody holds or waits for are dropped as we go, so the
            // map stays as small as the set of sandboxes being operated on.
            map.retain(|_, l| Arc::strong_count(l) > 1);
            Arc::clone(map.entry(id.to_string()).or_default())
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::Locks;
    use std::sync::Arc;

    #[tokio::test]
    async fn one_holder_per_id_and_others_are_free() {
        let locks = Arc::new(Locks::default());
        let held = locks.lock("a").await;
        let _other = locks.lock("b").await;
        let waiter = tokio::spawn({
            let locks = Arc::clone(&locks);
            async move { drop(locks.lock("a").await) }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        assert!(waiter.await.is_ok());
    }
}
