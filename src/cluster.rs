//! The cluster: every database of the settings, one pool per primary.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use crate::backend::RoutedBackend;
use crate::consistency::{scope, Consistency, ConsistencyToken, Monitor, TokenError};
use crate::error::{Error, Result};
use crate::manager::RoutedConnectionManager;
use crate::primary::{Options, PrimaryState};
use crate::routing::Classifier;
use crate::settings::{PrimarySpec, Settings, Topology};
use crate::sharding::Group;
use crate::stats::Stats;

/// The r2d2 pool of one primary; `pool.get()` hands out routed connections.
pub type Pool<C> = r2d2::Pool<RoutedConnectionManager<C>>;

/// A routed connection checked out of a [`Pool`]; pass `&mut` of it to Diesel.
pub type PooledConnection<C> = r2d2::PooledConnection<RoutedConnectionManager<C>>;

/// Every database of the settings: one pool per primary, each routing reads to its replicas.
///
/// Cheap to clone (the state is shared) and `Send + Sync`: threads share one.
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use diesel::prelude::*;
/// use diesel::pg::PgConnection;
/// use diesel_sharding::{Cluster, Settings};
///
/// let settings = Settings::from_file("databases.toml")?;
/// let cluster = Cluster::<PgConnection>::new(settings)?;
/// let mut conn = cluster.pool("default")?.get()?;
/// let n: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("1")).get_result(&mut conn)?;
/// # Ok(()) }
/// # #[cfg(not(feature = "postgres"))]
/// # fn main() {}
/// ```
pub struct Cluster<C: RoutedBackend> {
    inner: Arc<Inner<C>>,
}

struct Inner<C: RoutedBackend> {
    /// Each primary's shared state and pool (a reload that changes the pool's size or
    /// options puts a new pool here).
    primaries: BTreeMap<String, (Arc<PrimaryState>, RwLock<Pool<C>>)>,
    /// Replica name -> its primary's name.
    replicas: RwLock<BTreeMap<String, String>>,
    /// What [`Cluster::reload`] compares with and builds from; one reload at a time.
    reloading: Mutex<Reloading<C>>,
    /// Shard groups by name.
    groups: BTreeMap<String, Group>,
    /// Stops the replica monitor when the cluster goes away.
    monitor: Monitor,
    /// Tokens are signed with it and must carry its signature.
    token_secret: Option<crate::consistency::TokenSecret>,
    /// Retired secrets whose signatures are still accepted.
    previous_secrets: Vec<crate::consistency::TokenSecret>,
    /// Per primary, connections of the cluster's own for [`Cluster::token`] when the caller
    /// holds every pooled one (as a request handler that takes its token at the end does):
    /// as many as the pool's size, each opened when first needed, not per token.
    learners: BTreeMap<String, Vec<Learner<C>>>,
    /// The keyed-sticking store, once set.
    sticking: std::sync::OnceLock<crate::stick::Sticking>,
}

/// The settings in force and what builds a pool, for [`Cluster::reload`].
struct Reloading<C: RoutedBackend> {
    topology: Topology,
    configure: Arc<Configure<C>>,
    workers: Arc<scheduled_thread_pool::ScheduledThreadPool>,
}

/// The hook of [`Cluster::with_pools`].
type Configure<C> = dyn Fn(&str, r2d2::Builder<RoutedConnectionManager<C>>) -> r2d2::Builder<RoutedConnectionManager<C>>
    + Send
    + Sync;

/// Reads a lock, also one a panicking thread held (what it guards is replaced whole).
fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection [`Cluster::token`] may use, while no other thread does.
type Learner<C> = std::sync::Mutex<Option<crate::connection::RoutedConnection<C>>>;

/// A server of the cluster as the settings declare it ([`Cluster::servers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Server {
    /// Its name in the settings.
    pub name: String,
    /// The primary it belongs to (its own name for a primary).
    pub primary: String,
    /// Is it a replica?
    pub replica: bool,
}

impl<C: RoutedBackend> Clone for Cluster<C> {
    fn clone(&self) -> Self {
        Cluster {
            inner: self.inner.clone(),
        }
    }
}

impl<C: RoutedBackend> Cluster<C> {
    /// Validates the settings and builds one pool per primary. Opens no connection: servers
    /// need not be up yet.
    pub fn new(settings: Settings) -> Result<Self> {
        Self::with_pools(settings, |_, builder| builder)
    }

    /// [`new`](Self::new), with a hook that may change each primary's r2d2 pool builder
    /// (named by the primary) beyond the settings: an error or event handler, a connection
    /// customizer (its statements go through the routed connection like any other), ...
    /// The cluster keeps the hook: a [`reload`](Self::reload) that changes a pool's size
    /// builds that pool with it again.
    ///
    /// ```no_run
    /// # use diesel_sharding::{Cluster, Settings};
    /// # #[cfg(feature = "postgres")]
    /// # fn f(settings: Settings) -> diesel_sharding::Result<()> {
    /// let cluster = Cluster::<diesel::pg::PgConnection>::with_pools(settings, |_name, builder| {
    ///     builder.error_handler(Box::new(diesel_sharding::r2d2::LoggingErrorHandler))
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn with_pools(
        settings: Settings,
        configure: impl Fn(
                &str,
                r2d2::Builder<RoutedConnectionManager<C>>,
            ) -> r2d2::Builder<RoutedConnectionManager<C>>
            + Send
            + Sync
            + 'static,
    ) -> Result<Self> {
        let configure: Arc<Configure<C>> = Arc::new(configure);
        let topology = settings.validate(C::NAME, C::check_url)?;
        let options = Options {
            classifier: Classifier::with_write_functions(&topology.write_functions)
                .unknown_functions_to_primary(
                    topology.unknown_functions == crate::UnknownFunctions::Primary,
                )
                .with_read_functions(&topology.read_functions)
                .mysql_dialect(C::MYSQL_DIALECT),
            pin_window: topology.pin_window,
            replica_retry: topology.replica_retry,
            connect_timeout: topology.connect_timeout,
            replica_timeout: topology.replica_timeout,
            primary_timeout: topology.primary_timeout,
            consistency: topology.consistency.clone(),
            has_positions: C::HAS_POSITIONS,
            replica_url: C::replica_url,
            connect_url: C::with_connect_timeout,
        };
        let mut primaries = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        let monitor = Monitor::new();
        // One helper thread pool for every pool of the cluster: r2d2 starts three threads per
        // pool otherwise, which is thousands of threads for a few hundred shards.
        let workers = Arc::new(
            scheduled_thread_pool::ScheduledThreadPool::builder()
                .num_threads(3)
                .thread_name_pattern("diesel-sharding-r2d2-{}")
                // r2d2's reaper is a repeating job: without this, the workers would wait
                // for its next run after the pools are gone
                .on_drop_behavior(
                    scheduled_thread_pool::OnPoolDropBehavior::DiscardPendingScheduled,
                )
                .build(),
        );
        for spec in &topology.primaries {
            let db = Arc::new(PrimaryState::new(spec, &options));
            if C::HAS_POSITIONS && !spec.replicas.is_empty() {
                // probed from when the process first uses the database
                monitor.watch::<C>(&db, topology.consistency.monitor_interval);
            }
            let pool = build_pool(spec, &db, &workers, &*configure);
            for r in &spec.replicas {
                replicas.insert(r.name.clone(), spec.name.clone());
            }
            primaries.insert(spec.name.clone(), (db, RwLock::new(pool)));
        }
        let learners = topology
            .primaries
            .iter()
            .map(|spec| {
                let slots = (0..spec.pool_size).map(|_| Default::default()).collect();
                (spec.name.clone(), slots)
            })
            .collect();
        Ok(Cluster {
            inner: Arc::new(Inner {
                learners,
                sticking: std::sync::OnceLock::new(),
                primaries,
                replicas: RwLock::new(replicas),
                groups: topology
                    .groups
                    .iter()
                    .map(|g| (g.name.clone(), Group::new(g)))
                    .collect(),
                monitor,
                token_secret: topology.consistency.token_secret.clone(),
                previous_secrets: topology.consistency.previous_secrets.clone(),
                reloading: Mutex::new(Reloading {
                    topology,
                    configure,
                    workers,
                }),
            }),
        })
    }

    /// The pool of the primary `name` (a cheap handle to the shared pool).
    ///
    /// An unknown name, or a replica's name, is an error that names it.
    pub fn pool(&self, name: &str) -> Result<Pool<C>> {
        self.database(name).map(|(_, pool)| read_lock(pool).clone())
    }

    /// A routed connection from the pool of the primary `name`.
    pub fn get(&self, name: &str) -> Result<PooledConnection<C>> {
        let (db, pool) = self.database(name)?;
        let pool = read_lock(pool).clone();
        let conn = pool.get().map_err(|source| Error::Pool {
            database: name.to_owned(),
            source,
        })?;
        #[cfg(feature = "metrics")]
        {
            let state = pool.state();
            db.counters
                .meters
                .pool(state.connections, state.idle_connections);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = db;
        Ok(conn)
    }

    /// The shard groups by name.
    pub(crate) fn groups(&self) -> &BTreeMap<String, Group> {
        &self.inner.groups
    }

    /// The names of the primaries, in name order.
    pub fn primaries(&self) -> impl Iterator<Item = &str> {
        self.inner.primaries.keys().map(String::as_str)
    }

    /// Where statements ran so far, per primary.
    pub fn stats(&self) -> Stats {
        Stats {
            databases: self
                .inner
                .primaries
                .iter()
                .map(|(name, (db, _))| (name.clone(), db.stats()))
                .collect(),
        }
    }

    /// What the current thread (or the `with_token` scope it is in) must see: the positions it
    /// wrote, and the positions of the replicas it read from, per database. Store it where the
    /// next unit of work will find it (a job payload, a cookie, a header), and run that work
    /// under [`with_token`](Self::with_token): it never sees older data than this thread saw.
    ///
    /// Empty on backends without replication positions (SQLite).
    ///
    /// A token never leaves out what the scope has seen: the positions of committed writes
    /// not read at commit (modes `pin` and `eventual`, the escape hatch `primary()`, a
    /// row-by-row `INSERT .. RETURNING`) and what a replica it read from had really replayed
    /// are learned here first (a query each, only for those).
    pub fn token(&self) -> ConsistencyToken {
        self.learn_what_the_scope_saw();
        let mut token = ConsistencyToken::new();
        for (db_id, table, position) in scope::snapshot() {
            let Some((name, _)) = self
                .inner
                .primaries
                .iter()
                .find(|(_, (db, _))| db.id == db_id)
            else {
                continue;
            };
            match crate::routing::table_name(table) {
                Some(table) => token.require_table(name.clone(), table, position),
                None => token.require(name.clone(), position),
            }
        }
        self.sign(&mut token);
        token
    }

    /// Signs `token` with the cluster's secret, if it has one: for tokens it issues, and
    /// for tokens it built from ones it verified (a merge drops their signatures).
    pub(crate) fn sign(&self, token: &mut ConsistencyToken) {
        if let Some(secret) = &self.inner.token_secret {
            token.sign(&secret.0);
        }
    }

    /// Parses a token that came back from a cookie, a header or a job payload, and checks
    /// its signature when the cluster has a `token_secret`. The error says what is wrong.
    pub fn parse_token(&self, text: &str) -> std::result::Result<ConsistencyToken, TokenError> {
        let token: ConsistencyToken = text.parse()?;
        self.check_token(&token)?;
        Ok(token)
    }

    /// Checks a token's signature when the cluster has a `token_secret` (else accepts it):
    /// signed with it, or with one of the `token_previous_secrets` being retired.
    pub fn check_token(&self, token: &ConsistencyToken) -> std::result::Result<(), TokenError> {
        let Some(secret) = &self.inner.token_secret else {
            return Ok(());
        };
        let current = token.verify(&secret.0);
        if current.is_err()
            && self
                .inner
                .previous_secrets
                .iter()
                .any(|old| token.verify(&old.0).is_ok())
        {
            return Ok(());
        }
        current
    }

    /// Learns the positions a token must carry that the scope does not know exactly yet.
    fn learn_what_the_scope_saw(&self) {
        let pending = scope::pending_databases();
        let reads = scope::unresolved_reads();
        if pending.is_empty() && reads.is_empty() {
            return;
        }
        for (name, (db, pool)) in &self.inner.primaries {
            // the monitor's last probe of the primary may cover the pending writes already
            let wrote = pending.contains(&db.id)
                && match db.last_primary_probe() {
                    Some((started, position)) => scope::resolve_pending(db.id, &position, started),
                    None => true,
                };
            let read = reads.iter().find(|(id, _)| *id == db.id).map(|(_, r)| *r);
            if !wrote && read.is_none() {
                continue;
            }
            // the monitor may know enough already
            let read =
                read.filter(
                    |seen| match db.replicas.replay_since(seen.replica, seen.at_ms) {
                        Some(pos) => {
                            scope::resolved_read(db.id, Some(&pos));
                            false
                        }
                        None => true,
                    },
                );
            if !wrote && read.is_none() {
                continue;
            }
            // a pooled connection if one is idle (never wait for one: the caller may hold
            // them all), else the cluster's learning connection if no other thread is using
            // it (never wait for that either: a hung server would hold everyone), else a
            // connection of its own
            let pool = read_lock(pool).clone();
            if let Some(mut conn) = pool.try_get() {
                self.learn_on(name, db, &mut conn, wrote, read);
                continue;
            }
            let learner = self
                .inner
                .learners
                .get(name)
                .and_then(|slots| slots.iter().find_map(|m| m.try_lock().ok()));
            match learner {
                Some(mut slot) => {
                    let conn = slot.get_or_insert_with(|| {
                        crate::connection::RoutedConnection::new(db.clone())
                    });
                    self.learn_on(name, db, conn, wrote, read);
                }
                None => {
                    let mut own = crate::connection::RoutedConnection::<C>::new(db.clone());
                    self.learn_on(name, db, &mut own, wrote, read);
                }
            }
        }
    }

    fn learn_on(
        &self,
        name: &str,
        db: &PrimaryState,
        conn: &mut crate::connection::RoutedConnection<C>,
        wrote: bool,
        read: Option<scope::LastRead>,
    ) {
        if wrote {
            match conn.current_write_position() {
                // read after every pending write returned: covers them, table by table
                Some(pos) => {
                    scope::resolve_pending(db.id, &pos, u64::MAX);
                    db.saw_primary_at(&pos);
                }
                None => tracing::warn!(
                    target: "diesel_sharding::consistency",
                    database = name,
                    "cannot read the primary's position for a token: its reads go to the primary"
                ),
            }
        }
        if let Some(seen) = read {
            let pos = conn.resolve_read(seen);
            if pos.is_none() {
                tracing::warn!(
                    target: "diesel_sharding::consistency",
                    database = name,
                    "cannot learn what a replica read had seen: the token carries the monitor's lower bound"
                );
            }
            scope::resolved_read(db.id, pos.as_ref());
        }
    }

    /// Runs `f` in a scope whose reads see at least `token`, plus whatever the scope itself
    /// writes. The thread's history from before does not count inside (a worker thread that
    /// served another user's write does not send this request to the primary); the scope's
    /// writes count for the thread afterwards.
    ///
    /// A token naming a database this cluster does not have is ignored for that database,
    /// with a warning.
    ///
    /// ```no_run
    /// # use diesel_sharding::{Cluster, ConsistencyToken};
    /// # #[cfg(feature = "postgres")]
    /// # fn handle(cluster: &Cluster<diesel::pg::PgConnection>, cookie: &str) -> String {
    /// // a web request: the user's last token comes back in a cookie
    /// let token = cluster.parse_token(cookie).unwrap_or_default();
    /// cluster.with_token(&token, || {
    ///     // ... reads here see at least what the user's earlier requests wrote ...
    ///     cluster.token().to_string() // the next cookie
    /// })
    /// # }
    /// ```
    pub fn with_token<R>(&self, token: &ConsistencyToken, f: impl FnOnce() -> R) -> R {
        let _scope = scope::enter(self.positions_of(token), scope::ScopeKind::Request);
        f()
    }

    /// Runs `f` with reads in `mode` instead of the configured one. Scopes nest and restore.
    pub fn with_consistency<R>(&self, mode: Consistency, f: impl FnOnce() -> R) -> R {
        let _mode = scope::set_mode(mode);
        f()
    }

    /// [`with_token`](Self::with_token) for a future (feature `async`): the scope follows the
    /// future across its `.await`s and threads and reaches no other task (see
    /// [`crate::task`]); its writes join the enclosing scope when it completes.
    ///
    /// ```
    /// # #[cfg(feature = "sqlite")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use diesel_sharding::{Cluster, ConsistencyToken, Settings};
    /// use diesel::sqlite::SqliteConnection;
    ///
    /// let cluster: Cluster<SqliteConnection> =
    ///     Cluster::new(Settings::from_toml_str("[databases.default]\nurl = \":memory:\"")?)?;
    /// let token: ConsistencyToken = "".parse()?; // from the request's cookie
    /// let next = cluster
    ///     .with_token_async(&token, async {
    ///         // ... the request's reads and writes, with `.await`s ...
    ///         cluster.token() // for the response's cookie
    ///     })
    ///     .await;
    /// # let _ = next;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "sqlite"))]
    /// # fn main() {}
    /// ```
    #[cfg(feature = "async")]
    pub fn with_token_async<F: std::future::Future>(
        &self,
        token: &ConsistencyToken,
        future: F,
    ) -> crate::task::Scoped<F> {
        crate::task::Scoped::new(future, scope::Layer::request(self.positions_of(token)))
    }

    /// [`with_consistency`](Self::with_consistency) for a future (feature `async`).
    #[cfg(feature = "async")]
    pub fn with_consistency_async<F: std::future::Future>(
        &self,
        mode: Consistency,
        future: F,
    ) -> crate::task::Scoped<F> {
        crate::task::Scoped::new(future, scope::Layer::Mode(mode))
    }

    /// The mode set in the settings (or the backend's default), ignoring scopes.
    pub(crate) fn configured_mode(&self) -> Consistency {
        self.inner
            .primaries
            .values()
            .next()
            .map(|(db, _)| {
                db.consistency.mode.unwrap_or(if db.has_positions {
                    Consistency::ReadYourWrites
                } else {
                    Consistency::Pin
                })
            })
            .unwrap_or(Consistency::Pin)
    }

    /// The token's entries by database and table id; unknown databases are warned about and
    /// skipped. A table the process has never seen counts for its whole database (its name
    /// is not kept: tokens are untrusted input). With a `token_secret`, a token whose
    /// signature does not check out is ignored with a warning: its reads get no guarantee
    /// from it (they still see what the scope itself writes).
    pub(crate) fn positions_of(&self, token: &ConsistencyToken) -> Vec<scope::Entry> {
        if let Err(e) = self.check_token(token) {
            tracing::warn!(
                target: "diesel_sharding::consistency",
                error = %e,
                "consistency token refused: ignored"
            );
            return Vec::new();
        }
        token
            .entries()
            .filter_map(
                |(name, table, position)| match self.inner.primaries.get(name) {
                    Some(_) if !C::fits(position) => {
                        tracing::warn!(
                            target: "diesel_sharding::consistency",
                            database = name,
                            position = %position,
                            "consistency token holds a position of another kind than this backend's: ignored"
                        );
                        None
                    }
                    Some((db, _)) => Some((
                        db.id,
                        table.and_then(crate::routing::lookup).unwrap_or(0),
                        position.clone(),
                    )),
                    None => {
                        tracing::warn!(
                            target: "diesel_sharding::consistency",
                            database = name,
                            "consistency token names a database this cluster does not have: ignored"
                        );
                        None
                    }
                },
            )
            .collect()
    }

    /// Every server of the cluster as the settings declare it: each primary, then its
    /// replicas, primaries in name order.
    pub fn servers(&self) -> Vec<Server> {
        let mut out = Vec::new();
        for (name, (state, _)) in &self.inner.primaries {
            out.push(Server {
                name: name.clone(),
                primary: name.clone(),
                replica: false,
            });
            for replica in state.replicas.all().iter().filter(|r| !r.is_retired()) {
                out.push(Server {
                    name: replica.name.clone(),
                    primary: name.clone(),
                    replica: true,
                });
            }
        }
        out
    }

    /// A plain Diesel connection to server `name` (a primary or a replica), outside the
    /// router and its pools: for tools that must reach one server in particular (the
    /// command line's `check` and `status`). Opening it gives up after `connect_timeout`; a
    /// replica's session is read-only. Errors name the server, never a password.
    pub fn connect_to(&self, name: &str) -> Result<C> {
        let (url, timeout, replica) = if let Some((state, _)) = self.inner.primaries.get(name) {
            (state.open_url.clone(), state.connect_timeout, false)
        } else {
            let primary = read_lock(&self.inner.replicas)
                .get(name)
                .cloned()
                .ok_or_else(|| Error::UnknownDatabase {
                    name: name.to_owned(),
                })?;
            let (state, _) = self.database(&primary)?;
            let replica = state
                .replicas
                .all()
                .iter()
                .find(|r| r.name == name && !r.is_retired())
                .cloned()
                .ok_or_else(|| Error::UnknownDatabase {
                    name: name.to_owned(),
                })?;
            (replica.url.clone(), state.connect_timeout, true)
        };
        let failed = |message: String| Error::Connect {
            database: name.to_owned(),
            message,
        };
        let mut conn = C::connect(url.expose(), timeout)
            .map_err(|e| failed(crate::connection::scrub_connection_error(e, &url).to_string()))?;
        if replica {
            C::prepare_replica(&mut conn).map_err(|e| failed(url.scrub(&e.to_string())))?;
        }
        Ok(conn)
    }

    /// Every primary's shared state.
    pub(crate) fn primary_states(&self) -> impl Iterator<Item = &Arc<PrimaryState>> {
        self.inner.primaries.values().map(|(state, _)| state)
    }

    /// Where the keyed-sticking store is kept.
    pub(crate) fn sticking_cell(&self) -> &std::sync::OnceLock<crate::stick::Sticking> {
        &self.inner.sticking
    }

    /// The shared state of primary `name`.
    #[cfg_attr(
        not(all(feature = "async", any(feature = "postgres", feature = "mysql"))),
        allow(dead_code)
    )]
    pub(crate) fn primary_state(&self, name: &str) -> Result<Arc<PrimaryState>> {
        Ok(self.database(name)?.0.clone())
    }

    fn database(&self, name: &str) -> Result<&(Arc<PrimaryState>, RwLock<Pool<C>>)> {
        if let Some(entry) = self.inner.primaries.get(name) {
            return Ok(entry);
        }
        match read_lock(&self.inner.replicas).get(name) {
            Some(primary) => Err(Error::NotAPrimary {
                name: name.to_owned(),
                primary: primary.clone(),
            }),
            None => Err(Error::UnknownDatabase {
                name: name.to_owned(),
            }),
        }
    }
}

/// The r2d2 pool of primary `spec`, from the settings and then the hook.
fn build_pool<C: RoutedBackend>(
    spec: &PrimarySpec,
    db: &Arc<PrimaryState>,
    workers: &Arc<scheduled_thread_pool::ScheduledThreadPool>,
    configure: &Configure<C>,
) -> Pool<C> {
    let builder = r2d2::Pool::builder()
        .max_size(spec.pool_size)
        .min_idle(Some(spec.pool.min_idle))
        .connection_timeout(spec.pool.connection_timeout)
        .idle_timeout(spec.pool.idle_timeout)
        .max_lifetime(spec.pool.max_lifetime)
        // no ping at checkout: a hung primary would hold every checkout, also of
        // work that only reads; a broken connection shows on use and is reopened
        .test_on_check_out(false)
        .thread_pool(workers.clone());
    configure(&spec.name, builder).build_unchecked(RoutedConnectionManager::new(db.clone()))
}

/// What differs between `old` and `new` that a reload cannot change, if anything: the
/// primaries and their URLs, the shard groups, and every setting but the replicas, their
/// weights, the read strategies, the lag limits and the pools.
fn not_reloadable(old: &Topology, new: &Topology) -> Option<String> {
    let names = |t: &Topology| {
        t.primaries
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    };
    if names(old) != names(new) {
        return Some(format!(
            "the set of primaries (now {:?}, asked {:?})",
            names(old),
            names(new)
        ));
    }
    for (a, b) in old.primaries.iter().zip(&new.primaries) {
        if a.url.expose() != b.url.expose() {
            return Some(format!("the URL of primary `{}`", a.name));
        }
    }
    if format!("{:?}", old.groups) != format!("{:?}", new.groups) {
        return Some("`[shard_groups]` (a shard's database, a group's bucketing)".into());
    }
    let (c, d) = (&old.consistency, &new.consistency);
    let secrets = |t: &Topology| {
        let c = &t.consistency;
        let mut all: Vec<&[u8]> = c.token_secret.iter().map(|s| &*s.0).collect();
        all.extend(c.previous_secrets.iter().map(|s| &*s.0));
        all.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>()
    };
    let checks: [(&str, bool); 13] = [
        ("`pinning.seconds`", old.pin_window == new.pin_window),
        (
            "`routing.write_functions`",
            old.write_functions == new.write_functions,
        ),
        (
            "`routing.read_functions`",
            old.read_functions == new.read_functions,
        ),
        (
            "`routing.unknown_functions`",
            old.unknown_functions == new.unknown_functions,
        ),
        (
            "`routing.replica_retry`",
            old.replica_retry == new.replica_retry,
        ),
        (
            "`routing.connect_timeout`",
            old.connect_timeout == new.connect_timeout,
        ),
        (
            "`routing.replica_timeout`",
            old.replica_timeout == new.replica_timeout,
        ),
        (
            "`routing.primary_timeout`",
            old.primary_timeout == new.primary_timeout,
        ),
        ("`consistency.mode`", c.mode == d.mode),
        (
            "`consistency.replica_wait`",
            c.replica_wait == d.replica_wait,
        ),
        (
            "`consistency.monitor_interval`",
            c.monitor_interval == d.monitor_interval,
        ),
        ("`consistency.granularity`", c.granularity == d.granularity),
        (
            "`consistency.token_secret` (or its previous secrets)",
            secrets(old) == secrets(new),
        ),
    ];
    checks
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(what, _)| what.to_owned())
}

impl<C: RoutedBackend> Cluster<C> {
    /// Applies new settings without a restart: each primary's replicas (added, removed, a
    /// changed URL), their weights, the read strategies, the lag limits
    /// (`consistency.max_lag`, `max_lag_bytes`) and the pools' sizes and options.
    ///
    /// The settings are validated as [`new`](Self::new) validates them, and compared with
    /// the ones in force: an invalid file, or one that changes what cannot change while the
    /// process runs (a primary's name or URL, the shard groups, the other `[routing]`,
    /// `[pinning]` and `[consistency]` keys) is an error, and nothing changes.
    ///
    /// A replica kept (same name and URL) keeps what the router knows of it (positions,
    /// health, counters). A removed replica takes no read once `reload` returns; a
    /// connection on it finishes the statement it runs. Every replica's statement count in
    /// [`stats`](Self::stats) stays under its name. A changed pool size or pool option
    /// builds a new pool for the primary, with the [`with_pools`](Self::with_pools) hook:
    /// [`pool`](Self::pool) and [`get`](Self::get) hand it out from then on, and a `Pool`
    /// taken before keeps its size (its connections route with the new replicas and
    /// limits all the same). Positions recorded by any thread or token stay valid.
    ///
    /// ```no_run
    /// # use diesel_sharding::{Cluster, Settings};
    /// # #[cfg(feature = "postgres")]
    /// # fn f(cluster: &Cluster<diesel::pg::PgConnection>) -> diesel_sharding::Result<()> {
    /// // on SIGHUP, say
    /// cluster.reload(Settings::from_file("databases.toml")?)?;
    /// # Ok(()) }
    /// ```
    pub fn reload(&self, settings: Settings) -> Result<()> {
        let topology = settings.validate(C::NAME, C::check_url)?;
        let mut reloading = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(what) = not_reloadable(&reloading.topology, &topology) {
            return Err(Error::Reload { what });
        }
        let connect_timeout = topology.connect_timeout;
        let open_url = |url: &str| C::with_connect_timeout(&C::replica_url(url), connect_timeout);
        let limits = crate::primary::limits(&topology.consistency, connect_timeout);
        let interval = topology.consistency.monitor_interval;
        let mut names = BTreeMap::new();
        for spec in &topology.primaries {
            let Some((db, pool)) = self.inner.primaries.get(&spec.name) else {
                continue; // (the same primaries: checked above)
            };
            let had_replicas = db.replicas.len() > 0;
            let added = db.replicas.reconcile(&spec.replicas, &open_url);
            db.replicas.set_policy(spec.read_strategy, limits);
            if C::HAS_POSITIONS && !added.is_empty() {
                if !had_replicas {
                    self.inner.monitor.watch::<C>(db, interval);
                    if db.in_use() {
                        db.activate_monitor();
                    }
                } else if db.in_use() {
                    self.inner.monitor.watch_replicas::<C>(db, &added, interval);
                }
            }
            if db.pool_settings() != (spec.pool_size, spec.pool) {
                db.set_pool_settings(spec.pool_size, spec.pool);
                let new_pool = build_pool(spec, db, &reloading.workers, &*reloading.configure);
                *pool
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = new_pool;
            }
            for r in &spec.replicas {
                names.insert(r.name.clone(), spec.name.clone());
            }
            tracing::info!(
                target: "diesel_sharding::settings",
                database = %spec.name,
                replicas = spec.replicas.len(),
                added = added.len(),
                pool_size = spec.pool_size,
                "settings reloaded"
            );
        }
        *self
            .inner
            .replicas
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = names;
        reloading.topology = topology;
        Ok(())
    }
}

impl<C: RoutedBackend> fmt::Debug for Cluster<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Primary<'a>(&'a PrimaryState, u32);
        impl fmt::Debug for Primary<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("Primary")
                    .field("url", &self.0.url)
                    .field("pool_size", &self.1)
                    .field(
                        "replicas",
                        &self
                            .0
                            .replicas
                            .all()
                            .iter()
                            .filter(|r| !r.is_retired())
                            .map(|r| (r.name.clone(), r.url.clone()))
                            .collect::<BTreeMap<_, _>>(),
                    )
                    .finish()
            }
        }
        f.debug_struct("Cluster")
            .field("backend", &C::NAME)
            .field(
                "primaries",
                &self
                    .inner
                    .primaries
                    .iter()
                    .map(|(n, (db, pool))| (n.as_str(), Primary(db, read_lock(pool).max_size())))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use diesel::sqlite::SqliteConnection;

    #[test]
    fn tokens_naming_unknown_tables_teach_the_process_no_names() {
        let cluster = Cluster::<SqliteConnection>::new(
            Settings::from_toml_str("[databases.default]\nurl = \":memory:\"\n").unwrap(),
        )
        .unwrap();
        let before = crate::routing::interned_count();
        for i in 0..2000 {
            let token: ConsistencyToken =
                format!("default~unknown_table_{i}_{}-10", "x".repeat(100))
                    .parse()
                    .unwrap();
            let positions = cluster.positions_of(&token);
            assert_eq!(positions.len(), 1);
            assert_eq!(
                positions[0].1, 0,
                "an unknown table counts for the whole database"
            );
        }
        assert!(
            crate::routing::interned_count() <= before + 5,
            "no names were learned"
        );
    }

    #[test]
    fn with_a_secret_tokens_are_signed_and_unsigned_ones_are_refused() {
        let cluster = Cluster::<SqliteConnection>::new(
            Settings::from_toml_str(
                "[consistency]\ntoken_secret = \"a secret of more than 16 bytes\"\n\
                 [databases.default]\nurl = \":memory:\"\n",
            )
            .unwrap(),
        )
        .unwrap();
        let token = cluster.token();
        assert!(token.is_signed());
        cluster.parse_token(&token.to_string()).unwrap();
        assert!(cluster.parse_token("default-10").is_err(), "unsigned");
        let forged: ConsistencyToken = "default-10".parse().unwrap();
        assert!(cluster.positions_of(&forged).is_empty(), "ignored");
        assert!(!format!("{cluster:?}").contains("a secret"));
    }

    #[test]
    fn a_retired_secret_still_verifies_and_never_signs() {
        let with = |toml: &str| {
            Cluster::<SqliteConnection>::new(
                Settings::from_toml_str(&format!(
                    "{toml}\n[databases.default]\nurl = \":memory:\"\n"
                ))
                .unwrap(),
            )
        };
        let old = with("[consistency]\ntoken_secret = \"the old secret, 16+ bytes\"").unwrap();
        let new = with(
            "[consistency]\ntoken_secret = \"the new secret, 16+ bytes\"\n\
             token_previous_secrets = [\"the old secret, 16+ bytes\"]",
        )
        .unwrap();
        let other = with("[consistency]\ntoken_secret = \"another secret, 16+ bytes\"").unwrap();
        let mut token: ConsistencyToken = "default-10".parse().unwrap();
        token.sign(b"the old secret, 16+ bytes");
        let text = token.to_string();
        old.parse_token(&text).unwrap();
        new.parse_token(&text)
            .expect("the retired secret still verifies");
        assert!(other.parse_token(&text).is_err(), "a secret it never had");
        // what the new cluster signs, the old one does not accept
        let mut fresh: ConsistencyToken = "default-10".parse().unwrap();
        fresh.sign(b"the new secret, 16+ bytes");
        assert!(new.token().is_signed());
        new.parse_token(&fresh.to_string()).unwrap();
        assert!(old.parse_token(&fresh.to_string()).is_err());
        // previous secrets are checked like the secret, and need one
        let e = with("[consistency]\ntoken_previous_secrets = [\"the old secret, 16+ bytes\"]")
            .unwrap_err();
        assert!(
            e.to_string().contains("consistency.token_previous_secrets"),
            "{e}"
        );
        let e = with(
            "[consistency]\ntoken_secret = \"the new secret, 16+ bytes\"\n\
             token_previous_secrets = [\"short\"]",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("consistency.token_previous_secrets"),
            "{e}"
        );
        assert!(!e.to_string().contains("short"), "{e}");
        assert!(!format!("{new:?}").contains("old secret"));
    }

    #[test]
    fn a_short_or_missing_secret_names_the_key() {
        let e = Cluster::<SqliteConnection>::new(
            Settings::from_toml_str(
                "[consistency]\ntoken_secret = \"short\"\n[databases.default]\nurl = \":memory:\"\n",
            )
            .unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("consistency.token_secret"), "{e}");
        assert!(!e.to_string().contains("short"), "{e}");
        let e = Cluster::<SqliteConnection>::new(
            Settings::from_toml_str(
                "[consistency]\ntoken_secret_env = \"DIESEL_SHARDING_TEST_UNSET_SECRET\"\n\
                 [databases.default]\nurl = \":memory:\"\n",
            )
            .unwrap(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("consistency.token_secret_env"),
            "{e}"
        );
    }
}
