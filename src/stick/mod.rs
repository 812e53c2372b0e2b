//! Keyed sticking: what a scope wrote, recorded under a key (a user id, an API token, a
//! tenant) in a store that other processes share, so that work under that key elsewhere
//! (another web process, an API client without cookies, a job) reads no older data.
//!
//! [`Cluster::stick`] adds the current scope's token (what it wrote and read) to the key's
//! entries; [`Cluster::with_key`] (and `with_key_async`, feature `async`) runs a closure under all
//! of the key's entries merged, as [`Cluster::with_token`] does. An entry is removed once
//! every replica of each of its databases has replayed it (it costs nothing any more), and at
//! the latest when its key has seen no [`stick`](Cluster::stick) for the store's TTL.
//!
//! The store is shared: [`MemoryStore`] within one process (tests, a single server),
//! `RedisStore` across processes (feature `redis`). Entries are
//! added, never overwritten, so two processes sticking the same key at once lose nothing.
//!
//! **When the store is down** (an error, or no answer within its timeout): `with_key` runs
//! its closure pinned to the primary ([`use_primary`](crate::pin::use_primary)), with a
//! warning (target `diesel_sharding::stick`): never a stale read, at the price of primary
//! reads until the store is back. `stick` returns [`Error::StickStore`](crate::Error): the
//! write is done and this scope still reads it, but work elsewhere under the key will not
//! know of it; retry, or fail the request, as the application prefers.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;
use std::time::Duration;

pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
pub use self::redis::{RedisStore, DEFAULT_REDIS_TIMEOUT};

use crate::backend::RoutedBackend;
use crate::consistency::ConsistencyToken;
use crate::error::{Error, Result};
use crate::Cluster;

/// How long a key's entries live after its last [`stick`](Cluster::stick), unless
/// [`Cluster::set_stick_store`] says otherwise: far past any replica lag the router tolerates
/// (entries that every replica has are removed sooner).
pub const DEFAULT_STICK_TTL: Duration = Duration::from_secs(300);

/// A store of tokens by key, shared by the processes that serve the same keys.
///
/// Implementations keep each key's entries as a set (adding never replaces another
/// process's entry) that expires `ttl` after the last add. Calls must return within a short
/// bound (a store that does not answer is an error, not a wait).
pub trait StickStore: Send + Sync + std::fmt::Debug + 'static {
    /// Adds `token` to `key`'s entries; the key expires `ttl` after this.
    fn add(&self, key: &str, token: &str, ttl: Duration) -> std::result::Result<(), StoreError>;

    /// `key`'s entries (none once it expired).
    fn tokens(&self, key: &str) -> std::result::Result<Vec<String>, StoreError>;

    /// Removes `tokens` from `key`'s entries (every replica has them).
    fn forget(&self, key: &str, tokens: &[String]) -> std::result::Result<(), StoreError>;
}

/// A store could not be reached or refused a call; the message says why (never a password).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The store and TTL a cluster sticks with.
#[derive(Debug, Clone)]
pub(crate) struct Sticking {
    pub(crate) store: Arc<dyn StickStore>,
    pub(crate) ttl: Duration,
}

impl<C: RoutedBackend> Cluster<C> {
    /// Sets the store that [`stick`](Self::stick) and [`with_key`](Self::with_key) use, with
    /// entries living `ttl` after their key's last stick (at most; see the
    /// [module](crate::stick)). Once per cluster (and its clones): a second call is
    /// [`Error::StickStoreSet`].
    pub fn set_stick_store(&self, store: impl StickStore, ttl: Duration) -> Result<()> {
        self.sticking_cell()
            .set(Sticking {
                store: Arc::new(store),
                ttl,
            })
            .map_err(|_| Error::StickStoreSet)
    }

    fn sticking(&self) -> Result<&Sticking> {
        self.sticking_cell().get().ok_or(Error::NoStickStore)
    }

    /// Records what the current scope must see (its writes, and what it read: its
    /// [`token`](Self::token)) under `key`, for [`with_key`](Self::with_key) anywhere that
    /// shares the store. Nothing is stored when the token is empty.
    ///
    /// A blocking call to the store (in async code, `stick_async`: feature `async`).
    pub fn stick(&self, key: &str) -> Result<()> {
        let sticking = self.sticking()?;
        let token = self.token();
        if token.is_empty() {
            return Ok(());
        }
        add(sticking, key, &token)
    }

    /// Runs `f` under everything stuck under `key` (as [`with_token`](Self::with_token) with
    /// the entries merged); with the store down, pinned to the primary, with a warning.
    ///
    /// A blocking call to the store (in async code, `with_key_async`: feature `async`).
    /// Without a store set, [`Error::NoStickStore`].
    pub fn with_key<R>(&self, key: &str, f: impl FnOnce() -> R) -> Result<R> {
        let sticking = self.sticking()?;
        Ok(match self.entries(sticking, key) {
            Some(token) => self.with_token(&token, f),
            None => crate::pin::use_primary(f),
        })
    }

    /// The token under `key`: its entries merged (those every replica has are removed);
    /// `None` when the store is down.
    fn entries(&self, sticking: &Sticking, key: &str) -> Option<ConsistencyToken> {
        let texts = match sticking.store.tokens(key) {
            Ok(texts) => texts,
            Err(e) => {
                store_down(key, &e);
                return None;
            }
        };
        let mut merged = ConsistencyToken::default();
        let mut passed = Vec::new();
        for text in texts {
            match self.parse_token(&text) {
                Ok(token) if self.every_replica_has(&token) => passed.push(text),
                Ok(token) => merged.merge(&token),
                Err(e) => {
                    // not one this cluster accepts (another secret, a foreign writer): it
                    // can never be used, so it goes
                    tracing::warn!(
                        target: "diesel_sharding::stick",
                        key,
                        error = %e,
                        "a stuck token the cluster refuses: removed"
                    );
                    passed.push(text);
                }
            }
        }
        // every entry merged was verified: the merge (which drops signatures) is vouched for
        self.sign(&mut merged);
        if !passed.is_empty() {
            if let Err(e) = sticking.store.forget(key, &passed) {
                // harmless: they stay until the TTL
                tracing::debug!(target: "diesel_sharding::stick", key, error = %e, "forget failed");
            }
        }
        Some(merged)
    }

    /// Has every replica of each of `token`'s databases replayed what it requires (so it
    /// costs nothing any more)?
    fn every_replica_has(&self, token: &ConsistencyToken) -> bool {
        self.positions_of(token).iter().all(|(db, _, position)| {
            self.primary_states()
                .find(|state| state.id == *db)
                .is_some_and(|state| {
                    (0..state.replicas.len()).all(|i| state.replicas.has_replayed(i, position))
                })
        })
    }
}

/// [`Cluster::stick_async`] and [`Cluster::with_key_async`] (feature `async`): the store's
/// calls on tokio's blocking threads.
#[cfg(feature = "async")]
impl<C: RoutedBackend> Cluster<C> {
    /// [`stick`](Self::stick) for async code: the store's call runs on a blocking thread.
    pub async fn stick_async(&self, key: &str) -> Result<()> {
        let sticking = self.sticking()?.clone();
        let token = self.token();
        if token.is_empty() {
            return Ok(());
        }
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || add(&sticking, &key, &token))
            .await
            .map_err(|e| Error::StickStore {
                key: String::new(),
                source: StoreError(e.to_string()),
            })?
    }

    /// [`with_key`](Self::with_key) for a future: it runs under the key's entries as in
    /// [`with_token_async`](Self::with_token_async) (or, with the store down,
    /// [`use_primary_async`](crate::pin::use_primary_async)); the store's call runs on a
    /// blocking thread.
    pub async fn with_key_async<F: std::future::Future>(
        &self,
        key: &str,
        future: F,
    ) -> Result<F::Output> {
        let sticking = self.sticking()?.clone();
        let cluster = self.clone();
        let key = key.to_owned();
        let token = tokio::task::spawn_blocking(move || cluster.entries(&sticking, &key))
            .await
            .ok()
            .flatten();
        Ok(match token {
            Some(token) => self.with_token_async(&token, future).await,
            None => crate::pin::use_primary_async(future).await,
        })
    }
}

fn add(sticking: &Sticking, key: &str, token: &ConsistencyToken) -> Result<()> {
    sticking
        .store
        .add(key, &token.to_string(), sticking.ttl)
        .map_err(|source| {
            tracing::warn!(
                target: "diesel_sharding::stick",
                key,
                error = %source,
                "cannot stick: the store is down"
            );
            Error::StickStore {
                key: key.to_owned(),
                source,
            }
        })
}

fn store_down(key: &str, e: &StoreError) {
    tracing::warn!(
        target: "diesel_sharding::stick",
        key,
        error = %e,
        "the stick store is down: reading the primary for this key"
    );
}
