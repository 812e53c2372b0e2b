//! The routed async connection (feature `async`): diesel-async's connections
//! (`AsyncPgConnection` with `postgres`, `AsyncMysqlConnection` with `mysql`) to the primary
//! and to each replica, behind one `AsyncConnection`.
//!
//! It runs the sync connection's decision core ([`super::reads`]: the route decision and the
//! replica choice, over [`ReadIo`]) with real futures, and records with the same functions
//! (`primary_ran`, `record_effects`, the session state), so the rules are the sync router's.
//! A statement is rendered into an owned query (SQL and its binds, diesel's `CollectedQuery`)
//! before the first `.await`: diesel-async's futures may not outlive the connection they
//! borrow, and the decision may need I/O. The original query's static id is kept, so
//! diesel-async's statement cache applies as it would without the router.
//!
//! Bounded calls come from tokio's timer: a replica read past `replica_timeout` is retried on
//! the primary (its connection is dropped: a cancelled call leaves it mid-protocol); a primary
//! call past `primary_timeout` fails with an error that says its outcome is unknown.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod pg;
mod pool;
mod query;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{CacheSize, Instrumentation, InstrumentationEvent};
use diesel::query_builder::{AsQuery, Query, QueryFragment, QueryId};
use diesel::result::{ConnectionError, ConnectionResult, QueryResult};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncConnectionCore, SimpleAsyncConnection,
    TransactionManager,
};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use self::query::{Keyed, Rendered, Unkeyed};

use super::diesel_impls::record_effects;
use super::reads::{self, ReadIo, ServerWait};
use super::state::SessionState;
use super::{
    mode_in_scope, primary_ran, record_write, record_write_at, record_write_pending, replica_broke,
    replica_read,
};
use crate::backend::private::AsyncBackend;
use crate::backend::{is_connection_error, AsyncRoutedBackend};
use crate::consistency::{Consistency, Position};
use crate::primary::PrimaryState;
use crate::routing::{Classified, KindCache, RouteReason, StatementKind, TableId};

/// The rows of a load, as a stream that borrows nothing.
type Rows<C> = BoxStream<'static, QueryResult<<C as AsyncBackend>::Row>>;

/// diesel-async's connection for backend `C`.
type Physical<C> = <C as AsyncBackend>::Async;

/// A replica's async connection, with the replica's generation when it opened and the
/// server incarnation it talks to (0: not asked yet).
struct Replica<C: AsyncRoutedBackend> {
    conn: Physical<C>,
    generation: u64,
    identity: u64,
}

/// The routed async connection: reads to replicas that have what the reader must see,
/// everything else to the primary. Get one with
/// [`Cluster::get_async`](crate::Cluster::get_async) or from a pool
/// ([`Cluster::bb8_pool`](crate::Cluster::bb8_pool),
/// [`Cluster::deadpool_pool`](crate::Cluster::deadpool_pool)); use it with
/// `diesel_async::RunQueryDsl` as the diesel-async connection of its backend
/// (`AsyncPgConnection` for a `Cluster<PgConnection>`, `AsyncMysqlConnection` for a
/// `Cluster<MysqlConnection>`), inside the async scopes of [`crate::task`].
pub struct AsyncRoutedConnection<C: AsyncRoutedBackend> {
    db: Arc<PrimaryState>,
    primary: Option<Physical<C>>,
    replicas: Vec<Option<Replica<C>>>,
    current_replica: Option<usize>,
    /// The primary connection broke: reopened at the next call.
    dead_primary: bool,
    state: SessionState,
    kinds: KindCache,
    last: Option<(RouteReason, Option<usize>)>,
    tm: AnsiTransactionManager,
    /// A call is under way: when its future is dropped before it ends (cancelled), this
    /// stays set and the connection is broken for its pool, which drops it.
    busy: bool,
    instrumentation: Box<dyn Instrumentation>,
    cache_size: Option<CacheSize>,
}

impl<C: AsyncRoutedBackend> std::fmt::Debug for AsyncRoutedConnection<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncRoutedConnection")
            .field("database", &self.db.name)
            .field("primary_open", &self.primary.is_some())
            .field("current_replica", &self.current_replica)
            .finish_non_exhaustive()
    }
}

/// Instrumentation that records nothing (the default when none is set).
struct Silent;

impl Instrumentation for Silent {
    fn on_connection_event(&mut self, _event: InstrumentationEvent<'_>) {}
}

impl<C: AsyncRoutedBackend> AsyncRoutedConnection<C> {
    pub(crate) fn new(db: Arc<PrimaryState>) -> Self {
        db.activate_monitor();
        let replicas = (0..db.replicas.len()).map(|_| None).collect();
        AsyncRoutedConnection {
            db,
            primary: None,
            replicas,
            current_replica: None,
            dead_primary: false,
            state: SessionState::default(),
            kinds: KindCache::default(),
            last: None,
            tm: AnsiTransactionManager::default(),
            busy: false,
            instrumentation: diesel::connection::get_default_instrumentation()
                .unwrap_or_else(|| Box::new(Silent)),
            cache_size: None,
        }
    }

    /// The name of this connection's primary in the settings.
    pub fn database(&self) -> &str {
        &self.db.name
    }

    /// Where the last statement ran, and why.
    pub fn last_route(&self) -> Option<crate::Route> {
        let (reason, replica) = self.last?;
        Some(crate::Route {
            server: match replica.and_then(|i| self.db.replicas.get(i)) {
                Some(r) => r.name.clone(),
                None => self.db.name.clone(),
            },
            reason,
        })
    }

    /// The physical primary connection, opened if needed: for what does not go through
    /// diesel-async's connection traits. As with the sync connection's
    /// [`primary`](crate::RoutedConnection::primary), the router assumes the worst: it
    /// counts as a write (its position is learned when needed), the rest of this checkout
    /// reads from the primary, and the connection does not go back to its pool.
    pub async fn primary(&mut self) -> QueryResult<&mut Physical<C>> {
        record_write(&self.db);
        if ReadIo::in_transaction(self) {
            self.state.note_transaction_write(&[]);
        } else if self.db.has_positions {
            record_write_pending(&self.db, &[], crate::consistency::scope::NOT_YET);
        }
        self.state.primary_handed_out();
        self.open_primary().await
    }

    /// The physical connection a read would use now: a replica that has replayed what this
    /// task's scope must see, chosen exactly as for a routed read, or the primary when none
    /// qualifies. Use it only to read (a replica's session is read-only), for example for a
    /// read-only transaction with diesel-async's `build_transaction().read_only()`; the
    /// connection does not go back to its pool.
    pub async fn replica(&mut self) -> QueryResult<&mut Physical<C>> {
        match reads::route_read(self, StatementKind::Read, None).await {
            Ok(i) => {
                replica_read(&self.db, &mut self.last, i, true);
                self.state.replica_handed_out(i);
                match self.replicas.get_mut(i).and_then(Option::as_mut) {
                    Some(r) => Ok(&mut r.conn),
                    None => Err(connection_error(
                        &self.db.url,
                        ConnectionError::BadConnection("replica connection vanished".into()),
                    )),
                }
            }
            Err(reason) => {
                super::note_route(&self.db, &mut self.last, reason, None);
                self.state.primary_handed_out();
                self.open_primary().await
            }
        }
    }

    /// The primary, opened if needed (bounded by `connect_timeout`).
    async fn open_primary(&mut self) -> QueryResult<&mut Physical<C>> {
        if std::mem::take(&mut self.dead_primary) {
            self.primary = None;
        }
        if self.primary.as_mut().is_some_and(|p| C::closed(p)) && !self.in_transaction() {
            // closed by the server while idle (a restart, a failover): reopened, to
            // whatever the address reaches now, instead of failing this statement; no
            // transaction was open on it
            self.primary = None;
        }
        if self.primary.is_none() {
            let url = self.db.url.expose().to_owned();
            let conn = connect::<C>(&url, self.db.connect_timeout)
                .await
                .map_err(|e| connection_error(&self.db.url, e))?;
            let mut conn = self.configured(conn);
            if self.db.has_positions && self.db.replicas.len() > 0 {
                // as the sync connection's `learn_primary_timeline`
                let timeline = C::primary_timeline_async(&mut conn);
                let timeline = match self.db.primary_timeout {
                    None => timeline.await,
                    Some(t) => tokio::time::timeout(t, timeline).await.map_err(|_| {
                        diesel::result::Error::DatabaseError(
                            diesel::result::DatabaseErrorKind::UnableToSendCommand,
                            Box::new(
                                "the primary did not answer within routing.primary_timeout"
                                    .to_owned(),
                            ),
                        )
                    })?,
                };
                if let Ok(Some(t)) = timeline {
                    self.db.saw_primary_timeline(t);
                }
            }
            self.primary = Some(conn);
        }
        match self.primary.as_mut() {
            Some(conn) => Ok(conn),
            None => Err(diesel::result::Error::BrokenTransactionManager),
        }
    }

    fn configured(&self, mut conn: Physical<C>) -> Physical<C> {
        if let Some(size) = self.cache_size {
            conn.set_prepared_statement_cache_size(size);
        }
        conn
    }

    /// `f` on the primary, bounded by `primary_timeout`: past it the call is cut (the
    /// connection is dropped) and the error says the outcome of a write is unknown.
    async fn on_primary<R>(
        &mut self,
        f: impl for<'c> FnOnce(&'c mut Physical<C>) -> BoxFuture<'c, QueryResult<R>>,
    ) -> QueryResult<R> {
        let timeout = self.db.primary_timeout;
        let conn = self.open_primary().await?;
        match timeout {
            None => f(conn).await,
            Some(t) => match tokio::time::timeout(t, f(conn)).await {
                Ok(result) => result,
                Err(_) => {
                    self.primary = None;
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UnableToSendCommand,
                        Box::new(format!(
                            "the primary did not answer within routing.primary_timeout ({}): \
                             the call was cut, and the outcome of a write it made is unknown",
                            humantime::format_duration(t)
                        )),
                    ))
                }
            },
        }
    }

    /// A committed write of this connection's scope to `tables`: its pin window, and its
    /// position, read now in `strong` and else left to learn (as the sync connection does).
    async fn committed_write(&mut self, tables: &[TableId]) {
        record_write(&self.db);
        if !self.db.has_positions {
            return;
        }
        if mode_in_scope(&self.db) == Consistency::Strong {
            if let Ok(Some(pos)) = self.primary_position(false).await {
                record_write_at(&self.db, &pos, tables);
                return;
            }
        }
        record_write_pending(&self.db, tables, self.db.replicas.clock_ms());
    }

    /// Runs what must go to the primary and records what its statements did.
    async fn run_on_primary<R: Send>(
        &mut self,
        classified: &Classified,
        f: impl for<'c> FnOnce(&'c mut Physical<C>) -> BoxFuture<'c, QueryResult<R>> + Send,
    ) -> QueryResult<R> {
        self.busy = true;
        let in_transaction = ReadIo::in_transaction(self);
        let reason = super::primary_reason(classified.kind, in_transaction, &self.state);
        let result = self.on_primary(f).await;
        let result = self
            .run_recorded(classified, in_transaction, reason, result)
            .await;
        self.busy = false;
        result
    }

    /// What a statement run on the primary did: transactions, session state, writes.
    async fn run_recorded<R>(
        &mut self,
        classified: &Classified,
        in_transaction: bool,
        reason: RouteReason,
        result: QueryResult<R>,
    ) -> QueryResult<R> {
        let result = primary_ran(
            &self.db,
            &mut self.state,
            &mut self.dead_primary,
            &mut self.last,
            reason,
            result,
        );
        if result.is_ok() && classified.is_plain() {
            if classified.writes() {
                if in_transaction {
                    self.state
                        .note_transaction_write(classified.written_tables());
                } else {
                    self.committed_write(classified.written_tables()).await;
                }
            }
            return result;
        }
        let outcome = self.state.apply(
            classified.statements(),
            classified.written_tables(),
            result.is_ok(),
            C::FAILED_COMMIT_ENDS_TRANSACTION,
        );
        if let Some(tables) = outcome.committed {
            self.committed_write(&tables).await;
        }
        result
    }

    /// A read: on the replica the core chooses, else (or when that replica breaks or does
    /// not answer in time) on the primary.
    async fn load_owned<Q>(&mut self, classified: Classified, mut query: Q) -> QueryResult<Rows<C>>
    where
        Q: QueryFragment<C::Backend>
            + QueryId
            + Query
            + Rendered<C::Collected>
            + Clone
            + Send
            + 'static,
    {
        let reads = self
            .db
            .read_tables(classified.tables.as_deref())
            .map(<[TableId]>::to_vec);
        let reason = match reads::route_read(self, classified.kind, reads.as_deref()).await {
            Err(reason) => reason,
            Ok(i) => {
                let timeout = self.db.replica_timeout;
                let Some(replica) = self.replicas.get_mut(i).and_then(Option::as_mut) else {
                    return Err(diesel::result::Error::BrokenTransactionManager);
                };
                let db = self.db.clone();
                let loaded = tokio::time::timeout(timeout, async {
                    with_types::<C, _>(&mut replica.conn, &mut query, &db).await?;
                    C::load_rows(&mut replica.conn, query.clone()).await
                })
                .await;
                match loaded {
                    Ok(Ok(rows)) => {
                        replica_read(&self.db, &mut self.last, i, true);
                        return Ok(rows);
                    }
                    Ok(Err(e)) if is_connection_error(&e) => {
                        self.drop_replica(i);
                        replica_broke(&self.db, i, &e);
                        RouteReason::Fallback
                    }
                    Ok(Err(e)) => {
                        replica_read(&self.db, &mut self.last, i, false);
                        return Err(e);
                    }
                    Err(_) => {
                        // no answer in time: hung for every connection to it
                        self.drop_replica(i);
                        self.db.replicas.set_hung(i, true);
                        self.db.counters.replica_failed();
                        RouteReason::Fallback
                    }
                }
            }
        };
        let db = self.db.clone();
        let result = self
            .on_primary(move |conn| {
                Box::pin(async move {
                    with_types::<C, _>(conn, &mut query, &db).await?;
                    C::load_rows(conn, query).await
                })
            })
            .await;
        let result = primary_ran(
            &self.db,
            &mut self.state,
            &mut self.dead_primary,
            &mut self.last,
            reason,
            result,
        );
        // rows come as the stream is read: a write's position is learned when needed
        record_effects::<C>(
            &mut self.state,
            &self.db,
            &classified,
            result.is_ok(),
            None,
            false,
        );
        result
    }

    /// A statement that is not a read: on the primary.
    async fn execute_owned<Q>(&mut self, classified: Classified, mut query: Q) -> QueryResult<usize>
    where
        Q: QueryFragment<C::Backend> + QueryId + Rendered<C::Collected> + Send + 'static,
    {
        let db = self.db.clone();
        self.run_on_primary(&classified, move |conn| {
            Box::pin(async move {
                with_types::<C, _>(conn, &mut query, &db).await?;
                conn.execute_returning_count(query).await
            })
        })
        .await
    }

    /// What a statement is (classified, as the sync connection does) and its owned form.
    #[allow(clippy::type_complexity)]
    fn prepare<T: QueryFragment<C::Backend> + QueryId>(
        &mut self,
        query: &T,
    ) -> QueryResult<(Classified, Arc<C::Collected>)> {
        let classified =
            self.kinds
                .classify::<C, _>(&self.db.classifier, query, self.db.wants_tables());
        Ok((classified, Arc::new(C::collect(query, &self.db.types)?)))
    }

    fn drop_replica(&mut self, i: usize) {
        if let Some(slot) = self.replicas.get_mut(i) {
            *slot = None;
        }
        if self.current_replica == Some(i) {
            self.current_replica = None;
        }
    }
}

/// Finishes `query`'s rendering on `conn` before it is first sent: the custom types it binds
/// that were not known when it was rendered.
async fn with_types<C: AsyncRoutedBackend, Q: Rendered<C::Collected>>(
    conn: &mut Physical<C>,
    query: &mut Q,
    db: &PrimaryState,
) -> QueryResult<()> {
    if !C::needs_types(query.rendered()) {
        return Ok(());
    }
    match query.rendered_mut() {
        Some(rendered) => C::resolve_types(conn, rendered, &db.types).await,
        None => Err(diesel::result::Error::QueryBuilderError(
            "a statement's custom types were not resolved before it was sent".into(),
        )),
    }
}

/// Opens diesel-async's connection, giving up after `timeout`.
async fn connect<C: AsyncRoutedBackend>(
    url: &str,
    timeout: Duration,
) -> ConnectionResult<Physical<C>> {
    match tokio::time::timeout(timeout, Physical::<C>::establish(url)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectionError::BadConnection(format!(
            "the server did not answer within the connect timeout ({})",
            humantime::format_duration(timeout)
        ))),
    }
}

/// A connection error as a query error, with the URL's secrets scrubbed.
fn connection_error(url: &crate::settings::SecretUrl, e: ConnectionError) -> diesel::result::Error {
    super::connection_error(super::scrub_connection_error(e, url))
}

impl<C: AsyncRoutedBackend> ReadIo for AsyncRoutedConnection<C> {
    fn db(&self) -> &Arc<PrimaryState> {
        &self.db
    }

    fn current_replica(&mut self) -> &mut Option<usize> {
        &mut self.current_replica
    }

    fn replica_slots(&self) -> usize {
        self.replicas.len()
    }

    fn in_transaction(&mut self) -> bool {
        self.state.tx_open()
            || <AnsiTransactionManager as TransactionManager<Self>>::transaction_manager_status_mut(
                self,
            )
            .transaction_depth()
            .map_or(true, |depth| depth.is_some())
    }

    fn session_on_primary(&self) -> bool {
        self.state.sticky.any()
    }

    async fn open_replica(&mut self, i: usize) -> bool {
        let generation = self.db.replicas.generation(i);
        if i >= self.replicas.len() {
            // a replica a reload added after this connection opened
            self.replicas.resize_with(i + 1, || None);
        }
        match self.replicas.get(i) {
            Some(Some(r)) if r.generation == generation => return true,
            Some(_) => self.replicas[i] = None,
            None => return false,
        }
        let Some(spec) = self.db.replicas.get(i) else {
            return false;
        };
        let url = spec.url.clone();
        let opened = match connect::<C>(url.expose(), self.db.connect_timeout).await {
            Ok(mut conn) => {
                // a misrouted write fails loudly
                match conn.batch_execute(C::READ_ONLY_SESSION).await {
                    Ok(()) => Ok(conn),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(super::scrub_connection_error(e, &url).to_string()),
        };
        match opened {
            Ok(conn) => {
                super::replica_back(&self.db, i);
                let conn = self.configured(conn);
                self.replicas[i] = Some(Replica {
                    conn,
                    generation,
                    identity: 0,
                });
                if self.db.has_positions {
                    // learns the position, and whether another server answers now
                    self.replay_of(i).await;
                }
                true
            }
            Err(error) => {
                super::replica_unreachable(&self.db, i, &error);
                false
            }
        }
    }

    async fn replay_of(&mut self, i: usize) -> Option<Position> {
        let timeout = self.db.replica_timeout;
        let asked_ms = self.db.replicas.clock_ms();
        let replica = self.replicas.get_mut(i)?.as_mut()?;
        // the connection's first check: which server incarnation it talks to, too
        let first = replica.identity == 0;
        let probed = tokio::time::timeout(timeout, C::replay_async(&mut replica.conn, first)).await;
        match probed {
            Ok(Ok(Some((replay, identity)))) => {
                if first {
                    replica.identity = identity;
                }
                let identity = replica.identity;
                self.db.replicas.saw_replay(i, asked_ms, &replay, identity);
                Some(replay)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                if is_connection_error(&e) {
                    self.drop_replica(i);
                    super::replica_lost(&self.db, i);
                }
                None
            }
            Err(_) => {
                self.drop_replica(i);
                self.db.replicas.set_hung(i, true);
                None
            }
        }
    }

    async fn wait_on(&mut self, i: usize, need: &Position, left: Duration) -> ServerWait {
        let Some(replica) = self.replicas.get_mut(i).and_then(Option::as_mut) else {
            return ServerWait::Unsupported;
        };
        // the server answers by `left`; past that and `replica_timeout`, it is hung
        let bound = left.saturating_add(self.db.replica_timeout);
        let waited = tokio::time::timeout(
            bound,
            C::wait_for_replay_async(&mut replica.conn, need, left),
        )
        .await;
        match waited {
            Ok(Ok(None)) => ServerWait::Unsupported,
            Ok(Ok(Some(true))) => ServerWait::Reached,
            Ok(Ok(Some(false))) => ServerWait::NotReached,
            Ok(Err(e)) => {
                if is_connection_error(&e) {
                    self.drop_replica(i);
                    super::replica_lost(&self.db, i);
                }
                ServerWait::NotReached
            }
            Err(_) => {
                self.drop_replica(i);
                self.db.replicas.set_hung(i, true);
                ServerWait::NotReached
            }
        }
    }

    async fn primary_position(&mut self, flush: bool) -> QueryResult<Option<Position>> {
        self.db.counters.meters.position_query();
        self.on_primary(move |conn| C::primary_position_async(conn, flush))
            .await
    }

    async fn pause(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

impl<C: AsyncRoutedBackend> SimpleAsyncConnection for AsyncRoutedConnection<C> {
    /// Always the primary; every statement of the text is followed (transaction control,
    /// session state, writes).
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        let classified = Classified::of(&self.db.classifier, query, self.db.wants_tables());
        let sql = query.to_owned();
        self.run_on_primary(&classified, move |conn| {
            Box::pin(async move { conn.batch_execute(&sql).await })
        })
        .await
    }
}

impl<C: AsyncRoutedBackend> AsyncConnectionCore for AsyncRoutedConnection<C> {
    type ExecuteFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<usize>>;
    type LoadFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<Self::Stream<'conn, 'query>>>;
    type Stream<'conn, 'query> = Rows<C>;
    type Row<'conn, 'query> = C::Row;
    type Backend = C::Backend;

    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        let query = source.as_query();
        let (classified, collected) = match self.prepare(&query) {
            Ok(prepared) => prepared,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        if <T::Query as QueryId>::HAS_STATIC_QUERY_ID {
            let keyed = Keyed::<<T::Query as QueryId>::QueryId, _> {
                query: collected,
                _id: PhantomData,
            };
            Box::pin(self.load_owned(classified, keyed))
        } else {
            Box::pin(self.load_owned(classified, Unkeyed { query: collected }))
        }
    }

    fn execute_returning_count<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        let (classified, collected) = match self.prepare(&source) {
            Ok(prepared) => prepared,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        if T::HAS_STATIC_QUERY_ID {
            let keyed = Keyed::<T::QueryId, _> {
                query: collected,
                _id: PhantomData,
            };
            Box::pin(self.execute_owned(classified, keyed))
        } else {
            Box::pin(self.execute_owned(classified, Unkeyed { query: collected }))
        }
    }
}

impl<C: AsyncRoutedBackend> AsyncConnection for AsyncRoutedConnection<C> {
    type TransactionManager = AnsiTransactionManager;

    /// Not supported: a routed connection comes from
    /// [`Cluster::get_async`](crate::Cluster::get_async), which knows the replicas.
    async fn establish(_database_url: &str) -> ConnectionResult<Self> {
        Err(ConnectionError::BadConnection(
            "an AsyncRoutedConnection comes from Cluster::get_async, not from a URL".into(),
        ))
    }

    fn transaction_state(&mut self) -> &mut AnsiTransactionManager {
        &mut self.tm
    }

    fn instrumentation(&mut self) -> &mut dyn Instrumentation {
        &mut *self.instrumentation
    }

    fn set_instrumentation(&mut self, instrumentation: impl Instrumentation) {
        self.instrumentation = Box::new(instrumentation);
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        self.cache_size = Some(size);
        for conn in self
            .primary
            .iter_mut()
            .chain(self.replicas.iter_mut().flatten().map(|r| &mut r.conn))
        {
            conn.set_prepared_statement_cache_size(size);
        }
    }
}

#[cfg(any(feature = "bb8", feature = "deadpool"))]
impl<C: AsyncRoutedBackend> diesel_async::pooled_connection::PoolableConnection
    for AsyncRoutedConnection<C>
{
    /// Broken for its pool (dropped, not handed out again) when a call on it was cancelled
    /// halfway, a transaction is still open, its session holds state (settings, temporary
    /// tables, locks: closing it is the reset), a physical connection was handed out
    /// (`primary()`, `replica()`), or its state cannot be known.
    fn is_broken(&mut self) -> bool {
        self.busy
            || ReadIo::in_transaction(self)
            || self.state.primary_needs_reset()
            || self.state.replica_handed_out_any()
            || self.state.sticky.any()
            || self.state.unknown
    }
}
