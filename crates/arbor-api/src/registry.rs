//! Sandboxes running on this server, in memory: what the envd proxy needs
//! on every request (address by id or token) without a database round trip,
//! and the activity it records.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, RwLock},
};

/// A running sandbox as the proxy sees it.
#[derive(Debug, Clone)]
pub struct Live {
    /// envd's address.
    pub addr: SocketAddr,
    /// envd's access token.
    pub token: String,
    /// Which incarnation of the sandbox's envd this is (see `App::register`).
    pub generation: u64,
    /// The token its public URLs require (`None`: public traffic allowed).
    pub traffic_token: Option<String>,
}

/// The running sandboxes and when each last saw a request.
#[derive(Debug, Default)]
pub struct Registry {
    by_id: RwLock<HashMap<String, Live>>,
    by_token: RwLock<HashMap<String, String>>,
    activity: Mutex<HashMap<String, i64>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// Adds (or replaces) a running sandbox.
    pub fn insert(&self, id: &str, live: Live) {
        let token = live.token.clone();
        if let Some(old) = write(&self.by_id).insert(id.to_string(), live) {
            // Only a replaced token goes: re-registering a sandbox with the
            // same token must keep it routable.
            if old.token != token {
                write(&self.by_token).remove(&old.token);
            }
        }
        write(&self.by_token).insert(token, id.to_string());
    }

    /// Forgets a sandbox (killed or paused).
    pub fn remove(&self, id: &str) {
        if let Some(old) = write(&self.by_id).remove(id) {
            write(&self.by_token).remove(&old.token);
        }
    }

    /// A running sandbox by id.
    pub fn get(&self, id: &str) -> Option<Live> {
        read(&self.by_id).get(id).cloned()
    }

    /// The id of the running sandbox with envd token `token`.
    pub fn id_by_token(&self, token: &str) -> Option<String> {
        read(&self.by_token).get(token).cloned()
    }

    /// Ids of all running sandboxes.
    pub fn ids(&self) -> Vec<String> {
        read(&self.by_id).keys().cloned().collect()
    }

    /// Records a request to `id` at `now_ms`.
    pub fn touch(&self, id: &str, now_ms: i64) {
        let mut activity = self.activity.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        activity.insert(id.to_string(), now_ms);
    }

    /// The last request to `id` not yet written to the store, if any.
    pub fn pending_activity(&self, id: &str) -> Option<i64> {
        self.activity.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).copied()
    }

    /// The activity recorded since the last call, to be written to the store.
    pub fn take_activity(&self) -> HashMap<String, i64> {
        std::mem::take(&mut *self.activity.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::{Live, Registry};

    #[test]
    fn reinserting_keeps_the_token_route_and_a_new_token_replaces_the_old() {
        let r = Registry::default();
        let live = |token: &str| Live {
            addr: "10.0.0.2:49983".parse().unwrap_or_else(|_| unreachable!()),
            token: token.into(),
            generation: 0,
            traffic_token: None,
        };
        r.insert("a", live("t1"));
        r.insert("a", live("t1"));
        assert_eq!(r.id_by_token("t1").as_deref(), Some("a"));
        r.insert("a", live("t2"));
        assert_eq!(r.id_by_token("t1"), None);
        assert_eq!(r.id_by_token("t2").as_deref(), Some("a"));
        r.remove("a");
        assert_eq!(r.id_by_token("t2"), None);
        assert!(r.get("a").is_none());
    }
}
