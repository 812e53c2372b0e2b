//! From a model or a key to its shard and a routed connection; work on every shard;
//! migrations on every primary; global ids.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use diesel::migration::MigrationSource;
use diesel_migrations::MigrationHarness;

use super::group::{Group, Shard};
use super::{ids, ShardBy, ShardKey, ShardedModel, Sharding};
use crate::backend::RoutedBackend;
use crate::cluster::{Cluster, Pool, PooledConnection};
use crate::error::{Error, Result};

/// What a closure run on every shard returned, for one shard.
#[derive(Debug)]
#[non_exhaustive]
pub struct ShardResult<T> {
    /// The shard.
    pub shard: Shard,
    /// The closure's result, or why it could not run there.
    pub result: Result<T>,
}

/// A global id taken apart ([`Cluster::decode_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodedId {
    /// The shard the id was made on.
    pub shard: Shard,
    /// When it was made (to the millisecond, by the group's clock).
    pub made: std::time::SystemTime,
    /// Its number within that millisecond on that shard.
    pub sequence: u32,
}

/// What migrations did, per database, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// `(database, versions applied)`.
    pub databases: Vec<(String, Vec<String>)>,
}

/// How many shards `on_all_shards` works on at once, at most.
pub const DEFAULT_SHARD_PARALLELISM: usize = 8;

impl<C: RoutedBackend> Cluster<C> {
    /// The shard group `name`.
    pub(crate) fn group(&self, name: &str, model: Option<&'static str>) -> Result<&Group> {
        self.groups()
            .get(name)
            .ok_or_else(|| Error::UnknownShardGroup {
                group: name.to_owned(),
                model,
            })
    }

    /// The shards of group `name`, in shard-id order.
    pub fn shards(&self, group: &str) -> Result<Vec<Shard>> {
        let g = self.group(group, None)?;
        Ok((0..g.shards.len()).filter_map(|i| g.shard_at(i)).collect())
    }

    /// Checks a model against the settings: its group exists, or its database is a primary.
    pub fn check<M: ShardedModel>(&self) -> Result<()> {
        match M::SHARDING {
            Sharding::Group { group, .. } => self.group(group, Some(model_name::<M>())).map(drop),
            Sharding::Database { database } => self.model_database::<M>(database).map(drop),
        }
    }

    /// The database of a `#[sharding(database = "..")]` model.
    pub fn database_for<M: ShardedModel>(&self) -> Result<String> {
        match M::SHARDING {
            Sharding::Database { database } => self.model_database::<M>(database),
            _ => Err(Error::WrongModelKind {
                model: model_name::<M>(),
                problem: "is sharded, not placed on one database: use `shard_for` or `shard_of`",
            }),
        }
    }

    fn model_database<M: ShardedModel>(&self, database: &'static str) -> Result<String> {
        match self.pool(database) {
            Ok(_) => Ok(database.to_owned()),
            Err(_) => Err(Error::UnknownModelDatabase {
                model: model_name::<M>(),
                database: database.to_owned(),
            }),
        }
    }

    /// The shard of a key of a model sharded by a key (`#[sharding(group = "..", key = ..)]`).
    ///
    /// With `mod` or `jump` bucketing this is a pure function of the key. With `round_robin`,
    /// `random` or `saved_mod` the first pick is stored in the group's `storage` database and
    /// every later call returns it.
    ///
    /// ```no_run
    /// use diesel_sharding::ShardedModel;
    ///
    /// #[derive(ShardedModel)]
    /// #[sharding(group = "users", key = user_id)]
    /// struct Post {
    ///     user_id: i64,
    /// }
    ///
    /// # #[cfg(feature = "postgres")]
    /// # fn f(cluster: &diesel_sharding::Cluster<diesel::pg::PgConnection>) -> diesel_sharding::Result<()> {
    /// let shard = cluster.shard_for::<Post>(&42)?;      // which shard holds user 42's posts
    /// let mut conn = cluster.get_shard(&shard)?;         // a routed connection to it
    /// # Ok(()) }
    /// ```
    pub fn shard_for<M: ShardedModel>(&self, key: &M::Key) -> Result<Shard> {
        let (group_name, by) = match M::SHARDING {
            Sharding::Group { group, by } => (group, by),
            _ => {
                return Err(Error::WrongModelKind {
                    model: model_name::<M>(),
                    problem: "lives on one database, not in a shard group: use `database_for`",
                })
            }
        };
        if !matches!(by, ShardBy::Key { .. }) {
            return Err(Error::WrongModelKind {
                model: model_name::<M>(),
                problem: "stores its own shard: use `shard_of(&row)` or `assign_shard(&mut row)`",
            });
        }
        let group = self.group(group_name, Some(model_name::<M>()))?;
        self.shard_of_key(group, key)
    }

    /// The shard of `key` in shard group `group`, without a model type (tools, the command
    /// line): the same answer as [`shard_for`](Self::shard_for) gives a model of the group
    /// whose key has `key`'s type.
    pub fn shard_for_key<K: ShardKey + ?Sized>(&self, group: &str, key: &K) -> Result<Shard> {
        let group = self.group(group, None)?;
        self.shard_of_key(group, key)
    }

    /// What a global id of `group` holds: the shard it was made on, when, and its sequence
    /// number within that millisecond. Refused as [`shard_of_id`](Self::shard_of_id) refuses.
    pub fn decode_id(&self, group: &str, id: i64) -> Result<DecodedId> {
        let shard = self.shard_of_id(group, id)?;
        let g = self.group(group, None)?;
        let millis = ids::millis_of_id(id);
        Ok(DecodedId {
            shard,
            made: g.epoch + std::time::Duration::from_millis(millis),
            sequence: ids::sequence_of_id(id),
        })
    }

    /// The shard of `key` in `group`.
    fn shard_of_key<K: ShardKey + ?Sized>(&self, group: &Group, key: &K) -> Result<Shard> {
        if group.bucketing.is_pure() {
            return group
                .pick(Some(key.stable_hash()))
                .ok_or_else(|| Error::BucketingNeedsKey {
                    group: group.name.clone(),
                    bucketing: group.bucketing.as_str(),
                });
        }
        let storage_key = key.storage_key();
        let shard_id = self.with_storage(group, |primary| {
            match primary.stored(&group.name, &storage_key)? {
                Some(id) => Ok(Ok(id)),
                None => match group.pick(Some(key.stable_hash())) {
                    Some(pick) => primary
                        .store_first(&group.name, &storage_key, pick.shard_id)
                        .map(Ok),
                    None => Ok(Err(Error::BucketingNeedsKey {
                        group: group.name.clone(),
                        bucketing: group.bucketing.as_str(),
                    })),
                },
            }
        })??;
        group.by_id(shard_id).ok_or_else(|| Error::UnknownShard {
            group: group.name.clone(),
            shard_id,
        })
    }

    /// Runs `f` on the primary of `group`'s shard storage database, creating the table first.
    fn with_storage<R>(
        &self,
        group: &Group,
        f: impl FnOnce(&mut C) -> diesel::QueryResult<R>,
    ) -> Result<R> {
        let storage = group
            .storage
            .as_deref()
            .ok_or_else(|| Error::NoShardStorage {
                group: group.name.clone(),
                bucketing: group.bucketing.as_str(),
            })?;
        let mut conn = self.get(storage)?;
        let query = |e| Error::Query {
            database: storage.to_owned(),
            source: e,
        };
        // the picks live on the storage primary; reading or storing one is bookkeeping of
        // this crate, not a write of the caller's: it pins nothing
        let ready = group.storage_ready();
        let result = conn
            .with_physical_primary(|primary| {
                if !ready {
                    primary.ensure_storage()?;
                }
                f(primary)
            })
            .map_err(query)?;
        group.set_storage_ready();
        Ok(result)
    }

    /// Stores `shard` as the shard of `key` in `group`'s shard storage, unless the key has one
    /// already (the first pick wins); returns the key's shard. Use it to keep rows keyed by
    /// another row's id (posts by `user_id`) on that row's shard.
    pub fn remember_shard<K: ShardKey + ?Sized>(
        &self,
        group: &str,
        key: &K,
        shard: &Shard,
    ) -> Result<Shard> {
        let g = self.group(group, None)?;
        // check first, store after: a stored pick of the wrong shard would stick
        if shard.group != g.name {
            return Err(Error::ShardOfAnotherGroup {
                group: g.name.clone(),
                shard_group: shard.group.clone(),
                shard_id: shard.shard_id,
            });
        }
        if g.by_id(shard.shard_id).is_none() {
            return Err(Error::UnknownShard {
                group: g.name.clone(),
                shard_id: shard.shard_id,
            });
        }
        let shard_id = self.with_storage(g, |primary| {
            primary.store_first(&g.name, &key.storage_key(), shard.shard_id)
        })?;
        g.by_id(shard_id).ok_or_else(|| Error::UnknownShard {
            group: g.name.clone(),
            shard_id,
        })
    }

    /// The shard of a row: by its key, or the shard it stored.
    pub fn shard_of<M: ShardedModel>(&self, row: &M) -> Result<Shard> {
        match M::SHARDING {
            Sharding::Group {
                group,
                by: ShardBy::StoredShard { .. },
            } => {
                let g = self.group(group, Some(model_name::<M>()))?;
                let shard_id = row.stored_shard().ok_or(Error::ShardNotAssigned {
                    model: model_name::<M>(),
                })?;
                g.by_id(shard_id).ok_or_else(|| Error::UnknownShard {
                    group: group.to_owned(),
                    shard_id,
                })
            }
            Sharding::Group { .. } => match row.shard_key() {
                Some(key) => self.shard_for::<M>(key),
                None => Err(Error::WrongModelKind {
                    model: model_name::<M>(),
                    problem: "has no shard key",
                }),
            },
            _ => Err(Error::WrongModelKind {
                model: model_name::<M>(),
                problem: "lives on one database, not in a shard group: use `database_for`",
            }),
        }
    }

    /// Gives a `stores_shard` row its shard, picked by the group's bucketing, unless it has one
    /// already (the first pick wins and is never changed). Returns the row's shard.
    pub fn assign_shard<M: ShardedModel>(&self, row: &mut M) -> Result<Shard> {
        let Sharding::Group {
            group,
            by: ShardBy::StoredShard { .. },
        } = M::SHARDING
        else {
            return Err(Error::WrongModelKind {
                model: model_name::<M>(),
                problem: "does not store its shard (`stores_shard = field`)",
            });
        };
        if row.stored_shard().is_some() {
            return self.shard_of(row);
        }
        let g = self.group(group, Some(model_name::<M>()))?;
        let shard = g.pick(None).ok_or_else(|| Error::BucketingNeedsKey {
            group: group.to_owned(),
            bucketing: g.bucketing.as_str(),
        })?;
        row.set_stored_shard(shard.shard_id);
        Ok(shard)
    }

    /// The pool of the database a row lives on.
    pub fn pool_for<M: ShardedModel>(&self, row: &M) -> Result<Pool<C>> {
        self.pool(&self.database_of(row)?)
    }

    /// A routed connection to the database a row lives on.
    pub fn get_for<M: ShardedModel>(&self, row: &M) -> Result<PooledConnection<C>> {
        self.get(&self.database_of(row)?)
    }

    /// A routed connection to a shard.
    pub fn get_shard(&self, shard: &Shard) -> Result<PooledConnection<C>> {
        self.get(&shard.database)
    }

    pub(crate) fn database_of<M: ShardedModel>(&self, row: &M) -> Result<String> {
        match M::SHARDING {
            Sharding::Database { .. } => self.database_for::<M>(),
            _ => self.shard_of(row).map(|s| s.database),
        }
    }

    /// Shard number `shard_id` of `group` (a shard's own number; [`shard_of_id`] takes a
    /// row's global id and finds the shard it was made on).
    ///
    /// [`shard_of_id`]: Cluster::shard_of_id
    pub fn shard(&self, group: &str, shard_id: i32) -> Result<Shard> {
        self.group(group, None)?
            .by_id(shard_id)
            .ok_or_else(|| Error::UnknownShard {
                group: group.to_owned(),
                shard_id,
            })
    }

    /// The shard a global id of `group` was made on: rows can be routed by id alone.
    ///
    /// An id that cannot be one of the group's is refused: negative, or made (by its time
    /// bits) more than a minute in the future of the group's clock.
    pub fn shard_of_id(&self, group: &str, id: i64) -> Result<Shard> {
        let g = self.group(group, None)?;
        let invalid = |reason| Error::Id {
            group: group.to_owned(),
            source: ids::IdError::NotAnId { id, reason },
        };
        if id < 0 {
            return Err(invalid("negative"));
        }
        let made = g
            .epoch
            .checked_add(std::time::Duration::from_millis(ids::millis_of_id(id)));
        let limit = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        if made.is_none_or(|t| t > limit) {
            return Err(invalid("its time is in the future"));
        }
        self.shard(group, ids::shard_of_id(id))
    }

    /// A new global id for a row on `shard`, from the in-process generator of that shard
    /// (41 bits of milliseconds since the group's epoch, 13 bits of shard id, 10 bits of
    /// sequence).
    pub fn next_id(&self, shard: &Shard) -> Result<i64> {
        let g = self.group(&shard.group, None)?;
        let unknown = || Error::UnknownShard {
            group: shard.group.clone(),
            shard_id: shard.shard_id,
        };
        let index = g.index_of(shard.shard_id).ok_or_else(unknown)?;
        match g.generator(index) {
            Ok(generator) => Ok(generator.next_id()),
            Err(source) => Err(Error::Id {
                group: shard.group.clone(),
                source,
            }),
        }
    }

    /// A new id from the ticket table on the primary of `database` (Flickr's ticket servers:
    /// a sequence on PostgreSQL, a one-row table on SQLite): unique and increasing on that
    /// database, whatever shard the row goes to.
    pub fn ticket_id(&self, database: &str) -> Result<i64> {
        let mut conn = self.get(database)?;
        let query = |source| Error::Query {
            database: database.to_owned(),
            source,
        };
        conn.primary().map_err(query)?.next_ticket().map_err(query)
    }

    /// Runs `work` on every shard of `group`, on at most [`DEFAULT_SHARD_PARALLELISM`]
    /// threads, and returns one entry per shard in shard-id order; each shard's error (or
    /// panic) is kept in its entry.
    pub fn on_all_shards<T, F>(&self, group: &str, work: F) -> Result<Vec<ShardResult<T>>>
    where
        T: Send,
        F: Fn(&mut PooledConnection<C>) -> diesel::QueryResult<T> + Sync,
    {
        self.on_all_shards_with(group, DEFAULT_SHARD_PARALLELISM, work)
    }

    /// [`on_all_shards`](Self::on_all_shards) with at most `parallelism` threads (at least 1).
    pub fn on_all_shards_with<T, F>(
        &self,
        group: &str,
        parallelism: usize,
        work: F,
    ) -> Result<Vec<ShardResult<T>>>
    where
        T: Send,
        F: Fn(&mut PooledConnection<C>) -> diesel::QueryResult<T> + Sync,
    {
        self.on_all_shards_bounded(group, parallelism, None, work)
    }

    /// [`on_all_shards`](Self::on_all_shards) where each shard's work has `deadline`: a call
    /// on a server still running when it passes is cut (its socket shut), and that shard's
    /// entry is [`Error::ShardTimedOut`]. The other shards are not held up. Calls over Unix
    /// sockets cannot be cut.
    pub fn on_all_shards_within<T, F>(
        &self,
        group: &str,
        deadline: std::time::Duration,
        work: F,
    ) -> Result<Vec<ShardResult<T>>>
    where
        T: Send,
        F: Fn(&mut PooledConnection<C>) -> diesel::QueryResult<T> + Sync,
    {
        self.on_all_shards_bounded(group, DEFAULT_SHARD_PARALLELISM, Some(deadline), work)
    }

    fn on_all_shards_bounded<T, F>(
        &self,
        group: &str,
        parallelism: usize,
        deadline: Option<std::time::Duration>,
        work: F,
    ) -> Result<Vec<ShardResult<T>>>
    where
        T: Send,
        F: Fn(&mut PooledConnection<C>) -> diesel::QueryResult<T> + Sync,
    {
        let shards = self.shards(group)?;
        let results: Vec<Mutex<Option<Result<T>>>> =
            shards.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let threads = parallelism.max(1).min(shards.len());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(shard) = shards.get(i) else { break };
                    let run = || {
                        let mut conn = self.get(&shard.database)?;
                        work(&mut conn).map_err(|source| Error::Query {
                            database: shard.database.clone(),
                            source,
                        })
                    };
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match deadline {
                        None => run(),
                        Some(bound) => {
                            let started = std::time::Instant::now();
                            let until = started.checked_add(bound).unwrap_or(started);
                            let result =
                                crate::connection::watchdog::with_thread_deadline(until, run);
                            match result {
                                Err(_) if started.elapsed() >= bound => Err(Error::ShardTimedOut {
                                    database: shard.database.clone(),
                                    after: bound,
                                }),
                                other => other,
                            }
                        }
                    }))
                    .unwrap_or_else(|_| {
                        Err(Error::ShardPanicked {
                            database: shard.database.clone(),
                        })
                    });
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(outcome);
                    }
                });
            }
        });
        Ok(shards
            .into_iter()
            .zip(results)
            .map(|(shard, slot)| {
                let result = slot.into_inner().ok().flatten().unwrap_or_else(|| {
                    Err(Error::ShardPanicked {
                        database: shard.database.clone(),
                    })
                });
                ShardResult { shard, result }
            })
            .collect())
    }

    /// Runs the pending migrations of `source` on every shard (primary) of `group`, one after
    /// another in shard-id order, never on replicas and never on databases outside the group.
    /// The first failure stops the run and names its database.
    pub fn run_pending_migrations_on_group<S>(
        &self,
        group: &str,
        source: S,
    ) -> Result<MigrationReport>
    where
        S: MigrationSource<C::Backend>,
        PooledConnection<C>: MigrationHarness<C::Backend>,
    {
        let databases = self
            .shards(group)?
            .into_iter()
            .map(|s| s.database)
            .collect::<Vec<_>>();
        self.migrate(databases, source)
    }

    /// Runs the pending migrations of `source` on every primary of the cluster (shards and
    /// unsharded databases), each once, never on replicas.
    pub fn run_pending_migrations_on_primaries<S>(&self, source: S) -> Result<MigrationReport>
    where
        S: MigrationSource<C::Backend>,
        PooledConnection<C>: MigrationHarness<C::Backend>,
    {
        let databases = self.primaries().map(str::to_owned).collect::<Vec<_>>();
        self.migrate(databases, source)
    }

    fn migrate<S>(&self, databases: Vec<String>, source: S) -> Result<MigrationReport>
    where
        S: MigrationSource<C::Backend>,
        PooledConnection<C>: MigrationHarness<C::Backend>,
    {
        let mut report = MigrationReport::default();
        for database in databases {
            if report.databases.iter().any(|(d, _)| *d == database) {
                continue;
            }
            let mut conn = self.get(&database)?;
            let applied = conn
                .run_pending_migrations(Borrowed(&source))
                .map_err(|source| Error::Migration {
                    database: database.clone(),
                    source,
                })?;
            let versions = applied.iter().map(|v| v.to_string()).collect();
            report.databases.push((database, versions));
        }
        Ok(report)
    }
}

#[cfg(feature = "postgres")]
impl Cluster<diesel::pg::PgConnection> {
    /// Installs `next_sharded_id()` (and its sequence) on every shard of `group`: ids made by
    /// PostgreSQL itself, with the same layout as [`next_id`](Self::next_id).
    pub fn install_id_function(&self, group: &str) -> Result<()> {
        use diesel::connection::SimpleConnection;
        let g = self.group(group, None)?;
        let epoch_ms = g
            .epoch
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        for (shard_id, database) in &g.shards {
            let sql = ids::postgres_install_sql(*shard_id, epoch_ms).map_err(|_| {
                Error::UnknownShard {
                    group: group.to_owned(),
                    shard_id: *shard_id,
                }
            })?;
            let mut conn = self.get(database)?;
            conn.batch_execute(&sql).map_err(|source| Error::Query {
                database: database.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// A borrowed migration source: diesel's harness takes sources by value, and
/// `EmbeddedMigrations` is not `Clone`.
struct Borrowed<'a, S>(&'a S);

impl<DB: diesel::backend::Backend, S: MigrationSource<DB>> MigrationSource<DB> for Borrowed<'_, S> {
    fn migrations(
        &self,
    ) -> diesel::migration::Result<Vec<Box<dyn diesel::migration::Migration<DB>>>> {
        self.0.migrations()
    }
}

/// The model's type name, for errors.
fn model_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}
