//! The sharding API's connections for async code (feature `async`): a row's or a shard's
//! routed async connection, and work on every shard of a group as concurrent futures.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};

use super::group::Shard;
use super::runtime::ShardResult;
use super::{ShardedModel, DEFAULT_SHARD_PARALLELISM};
use crate::backend::AsyncRoutedBackend;
use crate::cluster::Cluster;
use crate::connection::asynchronous::AsyncRoutedConnection;
use crate::error::{Error, Result};

impl<C: AsyncRoutedBackend> Cluster<C> {
    /// A routed async connection to the database a row lives on (the async
    /// [`get_for`](Cluster::get_for)).
    pub async fn get_async_for<M: ShardedModel>(
        &self,
        row: &M,
    ) -> Result<AsyncRoutedConnection<C>> {
        let database = self.database_of(row)?;
        self.get_async(&database).await
    }

    /// A routed async connection to a shard (the async [`get_shard`](Cluster::get_shard)).
    pub async fn get_async_shard(&self, shard: &Shard) -> Result<AsyncRoutedConnection<C>> {
        self.get_async(&shard.database).await
    }

    /// Runs `work` on every shard of `group`, at most [`DEFAULT_SHARD_PARALLELISM`] shards at
    /// once as futures of the calling task (so in its scope: what it must see, its pin), each
    /// on a connection of its own, and returns one entry per shard in shard-id order; each
    /// shard's error (or panic) is kept in its entry. The async
    /// [`on_all_shards`](Cluster::on_all_shards).
    pub async fn on_all_shards_async<T, F>(
        &self,
        group: &str,
        work: F,
    ) -> Result<Vec<ShardResult<T>>>
    where
        F: AsyncFn(&mut AsyncRoutedConnection<C>) -> diesel::QueryResult<T>,
    {
        self.on_all_shards_async_bounded(group, None, work).await
    }

    /// [`on_all_shards_async`](Self::on_all_shards_async) where each shard's work has
    /// `deadline`: a shard still working when it passes is dropped (its connection closed:
    /// a cancelled call leaves it mid-protocol), and its entry is
    /// [`Error::ShardTimedOut`]. The other shards are not held up.
    pub async fn on_all_shards_async_within<T, F>(
        &self,
        group: &str,
        deadline: Duration,
        work: F,
    ) -> Result<Vec<ShardResult<T>>>
    where
        F: AsyncFn(&mut AsyncRoutedConnection<C>) -> diesel::QueryResult<T>,
    {
        self.on_all_shards_async_bounded(group, Some(deadline), work)
            .await
    }

    async fn on_all_shards_async_bounded<T, F>(
        &self,
        group: &str,
        deadline: Option<Duration>,
        work: F,
    ) -> Result<Vec<ShardResult<T>>>
    where
        F: AsyncFn(&mut AsyncRoutedConnection<C>) -> diesel::QueryResult<T>,
    {
        let shards = self.shards(group)?;
        let work = &work;
        let results: Vec<Result<T>> = futures_util::stream::iter(shards.iter())
            .map(|shard| async move {
                let run = async {
                    let mut conn = self.get_async(&shard.database).await?;
                    work(&mut conn).await.map_err(|source| Error::Query {
                        database: shard.database.clone(),
                        source,
                    })
                };
                let bounded = bounded(run, deadline, &shard.database);
                AssertUnwindSafe(bounded)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::ShardPanicked {
                            database: shard.database.clone(),
                        })
                    })
            })
            .buffered(DEFAULT_SHARD_PARALLELISM)
            .collect()
            .await;
        Ok(shards
            .into_iter()
            .zip(results)
            .map(|(shard, result)| ShardResult { shard, result })
            .collect())
    }
}

/// `run`, given up after `deadline` (if any) with [`Error::ShardTimedOut`].
async fn bounded<T>(
    run: impl Future<Output = Result<T>>,
    deadline: Option<Duration>,
    database: &str,
) -> Result<T> {
    match deadline {
        None => run.await,
        Some(after) => tokio::time::timeout(after, run).await.unwrap_or_else(|_| {
            Err(Error::ShardTimedOut {
                database: database.to_owned(),
                after,
            })
        }),
    }
}
