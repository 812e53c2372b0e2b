//! The in-process store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{StickStore, StoreError};

/// A [`StickStore`] in this process's memory: for one server, and for tests. Share it between
/// clusters by cloning (clones share the entries).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    keys: std::sync::Arc<Mutex<HashMap<String, Key>>>,
}

#[derive(Debug)]
struct Key {
    tokens: Vec<String>,
    expires: Instant,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, Key>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl StickStore for MemoryStore {
    fn add(&self, key: &str, token: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut keys = self.keys();
        keys.retain(|_, k| k.expires > now);
        let expires = now
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let entry = keys.entry(key.to_owned()).or_insert_with(|| Key {
            tokens: Vec::new(),
            expires,
        });
        entry.expires = expires;
        if !entry.tokens.iter().any(|t| t == token) {
            entry.tokens.push(token.to_owned());
        }
        Ok(())
    }

    fn tokens(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        Ok(self
            .keys()
            .get(key)
            .filter(|k| k.expires > now)
            .map(|k| k.tokens.clone())
            .unwrap_or_default())
    }

    fn forget(&self, key: &str, tokens: &[String]) -> Result<(), StoreError> {
        let mut keys = self.keys();
        if let Some(k) = keys.get_mut(key) {
            k.tokens.retain(|t| !tokens.contains(t));
            if k.tokens.is_empty() {
                keys.remove(key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_add_up_expire_and_are_forgotten() {
        let store = MemoryStore::new();
        let other = store.clone();
        store.add("u1", "a", Duration::from_secs(60)).unwrap();
        other.add("u1", "b", Duration::from_secs(60)).unwrap();
        store.add("u1", "a", Duration::from_secs(60)).unwrap();
        assert_eq!(store.tokens("u1").unwrap(), ["a", "b"]);
        store.forget("u1", &["a".to_owned()]).unwrap();
        assert_eq!(other.tokens("u1").unwrap(), ["b"]);
        store.add("u2", "c", Duration::from_millis(20)).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert!(store.tokens("u2").unwrap().is_empty(), "expired");
        assert!(store.tokens("nobody").unwrap().is_empty());
    }
}
