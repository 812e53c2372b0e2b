//! The routed connection: one Diesel connection made of a primary and its replicas.
//!
//! A [`RoutedConnection`] implements Diesel's connection traits, so Diesel code runs on it
//! unchanged. It opens its physical connections lazily (a checkout that only reads never
//! opens the primary) and sends each statement where the [routing rules](crate::routing) say.

#[cfg(all(feature = "async", any(feature = "postgres", feature = "mysql")))]
pub(crate) mod asynchronous;
mod diesel_impls;
mod instrumentation;
#[cfg(feature = "postgres")]
mod pg;
mod physical;
mod reads;
#[cfg(feature = "sqlite")]
mod sqlite;
mod state;
pub(crate) mod watchdog;
mod writes;

use std::sync::Arc;

use diesel::connection::{AnsiTransactionManager, CacheSize, SimpleConnection, TransactionManager};
use diesel::result::{ConnectionError, ConnectionResult, QueryResult};

use self::instrumentation::SharedInstrumentation;
use self::physical::Physical;
use self::state::SessionState;
use self::watchdog::Watched;
use crate::backend::RoutedBackend;
use crate::consistency::{scope, Consistency, Position};
use crate::primary::PrimaryState;
use crate::routing::{Classified, KindCache, RouteReason, StatementKind, TableId};
use crate::settings::SecretUrl;

/// Where the last statement of a connection ran; see [`RoutedConnection::last_route`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// The database that ran it: the primary's or a replica's name from the settings.
    pub server: String,
    /// Why.
    pub reason: RouteReason,
}

/// A Diesel connection that routes reads to replicas and everything else to the primary.
///
/// Get one from a pool ([`Cluster::pool`](crate::Cluster::pool)); `&mut` of the pooled
/// connection is what Diesel's query methods take.
pub struct RoutedConnection<C: RoutedBackend> {
    db: Arc<PrimaryState>,
    primary: Option<Physical<C>>,
    replicas: Vec<Option<Physical<C>>>,
    /// The replica this connection reads from while it stays healthy.
    current_replica: Option<usize>,
    /// A replica whose connection broke during the last load; dropped at the next call.
    dead_replica: Option<usize>,
    /// The primary connection broke (its server went away): reopened at the next call.
    dead_primary: bool,
    /// Checked in since the last call: the first call of the next checkout looks whether
    /// the server closed the idle primary connection.
    look_at_idle_primary: bool,
    /// The last checkout left state in the primary's session: reset before the next call.
    reset_primary: bool,
    /// ... and in these replicas' sessions.
    reset_replicas: Vec<usize>,
    /// Stands in for the primary's transaction state while the primary is closed.
    placeholder_tm: AnsiTransactionManager,
    /// Transactions and session state: the one record every entry point updates.
    state: SessionState,
    kinds: KindCache,
    instrumentation: SharedInstrumentation,
    cache_size: Option<CacheSize>,
    last: Option<(RouteReason, Option<usize>)>,
    /// Custom type OIDs (PostgreSQL), the same on the primary and its physical replicas.
    #[cfg(feature = "postgres")]
    pg_metadata: diesel::pg::PgMetadataCache,
}

/// The consistency mode in force for this thread's scope on `db`.
fn mode_in_scope(db: &PrimaryState) -> Consistency {
    db.mode(scope::mode())
}

/// This thread committed a write on `db`: its pin window starts (mode `pin`).
fn record_write(db: &PrimaryState) {
    if let Some(until) = db.pin_until() {
        crate::pin::record_write(db.id, until);
    }
}

/// This thread committed a write on `db` at `position`, to `tables` (empty: unknown): the
/// database's bookkeeping, then the thread's scope.
fn record_write_at(db: &PrimaryState, position: &Position, tables: &[TableId]) {
    let tables = db.wrote_at(position, tables);
    scope::wrote(db.id, tables, position);
}

/// A write committed on `db` whose position is left to learn: `at` is when it returned (the
/// replica set's clock), or [`scope::NOT_YET`] for a write that may still happen (the escape
/// hatch, a row-by-row cursor), which only a position read later covers.
fn record_write_pending(db: &PrimaryState, tables: &[TableId], at: u64) {
    let tables = if db.wants_tables() { tables } else { &[] };
    scope::write_pending(db.id, tables, at);
    if at != scope::NOT_YET {
        db.wrote_lazily(at, tables);
    }
}

/// Why a statement that must run on the primary runs there (the rules of
/// [`decide`](crate::routing), without the replica branch), for the sync and async
/// connections.
fn primary_reason(kind: StatementKind, in_transaction: bool, state: &SessionState) -> RouteReason {
    if in_transaction {
        return RouteReason::Transaction;
    }
    if state.sticky.any() {
        return RouteReason::Session;
    }
    match kind {
        StatementKind::Locking => RouteReason::Locking,
        StatementKind::WriteFunction => RouteReason::WriteFunction,
        StatementKind::Unknown => RouteReason::Unclassified,
        // writes, and reads sent through `execute`: they run where writes run
        _ => RouteReason::Write,
    }
}

/// Counts a statement routed for `reason` on `db` and remembers it (the connection's `last`)
/// for `last_route`. Takes fields, not the connection: a cursor may borrow a server.
fn note_route(
    db: &PrimaryState,
    last: &mut Option<(RouteReason, Option<usize>)>,
    reason: RouteReason,
    replica: Option<usize>,
) {
    db.routed(reason, replica);
    *last = Some((reason, replica));
}

/// A read ran on replica `i` of `db` (`ok`: it succeeded): counted once, where it ran, and
/// what the scope saw is remembered for monotonic reads. Takes fields, not the connection,
/// because a cursor may still borrow the replica.
fn replica_read(
    db: &PrimaryState,
    last: &mut Option<(RouteReason, Option<usize>)>,
    i: usize,
    ok: bool,
) {
    note_route(db, last, RouteReason::Replica, Some(i));
    if !ok {
        db.counters.failed();
    } else if db.has_positions {
        let replayed = db.replicas.replay(i);
        scope::observed(db.id, i, db.replicas.clock_ms(), replayed.as_ref());
    }
}

/// Replica `i` of `db` failed (its connection was lost, or could not be opened): skipped
/// for `replica_retry`, and counted.
fn replica_lost(db: &PrimaryState, i: usize) {
    db.replicas.mark_down(i);
    db.counters.replica_failed();
    db.replicas.meter_up(i, false);
}

/// A connection to replica `i` opened: it takes reads again.
fn replica_back(db: &PrimaryState, i: usize) {
    db.replicas.mark_up(i);
    db.replicas.set_hung(i, false);
    db.replicas.meter_up(i, true);
}

/// Replica `i` of `db` could not be opened: [`replica_lost`], and reported.
fn replica_unreachable(db: &PrimaryState, i: usize, error: &dyn std::fmt::Display) {
    replica_lost(db, i);
    let replica = db.replicas.get(i);
    let name = replica.as_ref().map_or("?", |r| r.name.as_str());
    tracing::warn!(
        target: "diesel_sharding::route",
        database = %db.name,
        replica = name,
        error = %error,
        "replica unreachable: reading from the primary, retrying it after the backoff"
    );
}

/// Replica `i` of `db` broke mid-call: skipped for `replica_retry`, counted and reported.
fn replica_broke(db: &PrimaryState, i: usize, error: &diesel::result::Error) {
    replica_lost(db, i);
    tracing::warn!(
        target: "diesel_sharding::route",
        database = %db.name,
        error = %error,
        "replica connection broke: reading from the primary"
    );
}

impl<C: RoutedBackend> RoutedConnection<C> {
    pub(crate) fn new(db: Arc<PrimaryState>) -> Self {
        // the process uses this database: its servers are monitored from now on
        db.activate_monitor();
        let replicas = (0..db.replicas.len()).map(|_| None).collect();
        RoutedConnection {
            db,
            primary: None,
            replicas,
            current_replica: None,
            dead_replica: None,
            dead_primary: false,
            look_at_idle_primary: false,
            reset_primary: false,
            reset_replicas: Vec::new(),
            placeholder_tm: AnsiTransactionManager::default(),
            state: SessionState::default(),
            kinds: KindCache::default(),
            instrumentation: SharedInstrumentation::default(),
            cache_size: None,
            last: None,
            #[cfg(feature = "postgres")]
            pg_metadata: diesel::pg::PgMetadataCache::new(),
        }
    }

    /// The name of this connection's primary in the settings.
    pub fn database(&self) -> &str {
        &self.db.name
    }

    /// Where the last routed statement ran, and why.
    pub fn last_route(&self) -> Option<Route> {
        self.last.map(|(reason, replica)| Route {
            server: match replica.and_then(|i| self.db.replicas.get(i)) {
                Some(r) => r.name.clone(),
                None => self.db.name.clone(),
            },
            reason,
        })
    }

    /// The physical primary connection, opened if needed: for what does not go through
    /// Diesel's connection traits (`COPY`, `LISTEN`, SQLite function registration, ...).
    ///
    /// The router cannot see what is sent here, so it assumes the worst: it counts as a write
    /// (the pin window opens, and the primary's position is learned before the next read or
    /// [`token`](crate::Cluster::token) that needs it), the rest of this checkout reads from
    /// the primary (session state may have changed), and the session is reset when the
    /// connection goes back to the pool.
    pub fn primary(&mut self) -> QueryResult<&mut C> {
        self.drop_dead_replica();
        record_write(&self.db);
        if self.in_transaction() {
            self.state.note_transaction_write(&[]);
        } else if self.db.has_positions {
            self.write_not_yet_done(&[]);
        }
        self.state.primary_handed_out();
        self.open_primary()
    }

    /// The physical connection a read would use now: a replica that has replayed what this
    /// thread (or scope) must see, chosen exactly as for a routed read, or the primary when
    /// no replica qualifies (pinned, in a transaction, behind, unreachable, ...). Use it only
    /// to read; its session is reset when the connection goes back to the pool.
    pub fn replica(&mut self) -> QueryResult<&mut C> {
        self.drop_dead_replica();
        match self.route_read(StatementKind::Read, None) {
            Ok(i) => {
                self.on_replica(i);
                self.state.replica_handed_out(i);
                match self.replicas[i].as_mut() {
                    Some(c) => Ok(&mut c.conn),
                    None => Err(connection_error(ConnectionError::BadConnection(
                        "replica connection vanished".into(),
                    ))),
                }
            }
            Err(reason) => {
                self.record(reason, None);
                self.state.primary_handed_out();
                self.open_primary()
            }
        }
    }

    /// Runs `f` in a read-only transaction on the connection a read would use now (see
    /// [`replica`](Self::replica)). Use it for several reads that must see one snapshot.
    /// Inside an open transaction, `f` runs in that transaction on the primary.
    ///
    /// The closure gets the physical connection; a write inside fails (the replica is opened
    /// read-only, and the transaction is read-only).
    pub fn read_only_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut C) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        if self.in_transaction() {
            self.record(RouteReason::Transaction, None);
            return f(self.open_primary()?);
        }
        let conn = self.replica()?;
        AnsiTransactionManager::begin_transaction_sql(conn, C::BEGIN_READ_ONLY)?;
        match f(conn) {
            Ok(value) => {
                <AnsiTransactionManager as TransactionManager<C>>::commit_transaction(conn)?;
                Ok(value)
            }
            Err(e) => {
                <AnsiTransactionManager as TransactionManager<C>>::rollback_transaction(conn)?;
                Err(e)
            }
        }
    }

    /// Has some usable replica replayed `position` (checked on the replicas themselves when
    /// the monitor's view is not enough)?
    pub(crate) fn has_replica_at(&mut self, position: &Position) -> bool {
        self.db.replicas.reads_from_replicas() && self.find_replica(position).is_ok()
    }

    /// Sends every statement to the primary until the connection goes back to the pool.
    pub fn stick_to_primary(&mut self) {
        self.state.sticky.explicit = true;
    }

    /// The primary's write position now (for a token whose writes' positions are not known
    /// yet): at or past every commit that has returned.
    pub(crate) fn current_write_position(&mut self) -> Option<Position> {
        self.db.counters.meters.position_query();
        self.primary_call(C::write_position).ok().flatten()
    }

    /// Runs `f` on the physical primary for the crate's own bookkeeping (stored shard
    /// picks): no pin, no position, no session state, bounded by `primary_timeout`.
    pub(crate) fn with_physical_primary<R>(
        &mut self,
        f: impl FnOnce(&mut C) -> QueryResult<R>,
    ) -> QueryResult<R> {
        self.drop_dead_replica();
        self.primary_call(f)
    }

    /// One call on the physical primary, opened if needed, bounded by `primary_timeout`.
    pub(super) fn primary_call<R>(
        &mut self,
        f: impl FnOnce(&mut C) -> QueryResult<R>,
    ) -> QueryResult<R> {
        let timeout = self.db.primary_timeout;
        let p = open_primary(
            &mut self.primary,
            &self.db,
            &self.instrumentation,
            self.cache_size,
        )
        .map_err(connection_error)?;
        let result = {
            let _call = p.watch.call(timeout);
            f(&mut p.conn)
        };
        primary_outcome(result, &p.watch, timeout)
    }

    /// On checkout: forget the last route.
    pub(crate) fn checked_out(&mut self) {
        self.last = None;
    }

    /// On check-in: resets what this checkout left in the sessions (settings, temporary
    /// tables, roles, whatever went through the escape hatches), or closes the connections
    /// that cannot be reset. Returns `false` when the connection must not go back to the
    /// pool (a hand-written transaction is open, or its state is not known).
    pub(crate) fn check_in(&mut self) -> bool {
        self.last = None;
        if self.state.unknown || self.in_hand_written_transaction() {
            return false;
        }
        if self.in_transaction() {
            // a test transaction of Diesel's manager: it stays as it is
            return true;
        }
        if self.state.holds_for_others() {
            // locks must not outlive the checkout: closing the session releases them at once
            // (a reset would have to wait for the server)
            return false;
        }
        // no I/O at check-in (r2d2 asks that `has_broken` not block): the sessions are reset
        // before the next checkout's first call
        self.reset_primary |= self.state.primary_needs_reset();
        for i in std::mem::take(&mut self.state.replicas_handed_out) {
            if !self.reset_replicas.contains(&i) {
                self.reset_replicas.push(i);
            }
        }
        self.state = SessionState::default();
        self.look_at_idle_primary = true;
        true
    }

    /// Resets what the last checkout left in the sessions, before this one's first call.
    fn reset_sessions(&mut self) {
        let bound = Some(self.db.connect_timeout);
        if std::mem::take(&mut self.reset_primary) {
            let reset = match self.primary.as_mut() {
                Some(p) => {
                    let _call = p.watch.call(bound);
                    C::reset_session(&mut p.conn, false).is_ok()
                }
                None => true,
            };
            if !reset {
                if self.db.is_in_memory() {
                    tracing::warn!(
                        target: "diesel_sharding::route",
                        database = %self.db.name,
                        "cannot reset the session of an in-memory primary: it keeps its session state"
                    );
                } else {
                    self.primary = None;
                }
            }
        }
        for i in std::mem::take(&mut self.reset_replicas) {
            if let Some(slot) = self.replicas.get_mut(i) {
                let failed = slot.as_mut().is_some_and(|c| {
                    let _call = c.watch.call(bound);
                    C::reset_session(&mut c.conn, true).is_err()
                });
                if failed {
                    *slot = None;
                    if self.current_replica == Some(i) {
                        self.current_replica = None;
                    }
                }
            }
        }
    }

    /// Is a transaction open on the primary (through Diesel's transaction manager or a
    /// hand-written `BEGIN`)?
    pub(crate) fn in_transaction(&mut self) -> bool {
        self.state.tx_open() || self.in_managed_transaction()
    }

    /// Is Diesel's transaction manager (the primary's, or the replica's that runs a
    /// read-only transaction) inside a transaction, or broken?
    fn in_managed_transaction(&mut self) -> bool {
        if self.primary.is_none() && self.state.tx_replica.is_none() {
            return false;
        }
        let depth =
            <AnsiTransactionManager as TransactionManager<Self>>::transaction_manager_status_mut(
                self,
            )
            .transaction_depth();
        !matches!(depth, Ok(None))
    }

    /// A `BEGIN` sent by hand, that Diesel's transaction manager does not know about: the
    /// connection must not go back to the pool like that.
    pub(crate) fn in_hand_written_transaction(&mut self) -> bool {
        self.state.tx_open() && !self.in_managed_transaction()
    }

    /// The one route decision for a statement that may read ([`reads::route_read`]).
    pub(super) fn route_read(
        &mut self,
        kind: StatementKind,
        reads: Option<&[TableId]>,
    ) -> Result<usize, RouteReason> {
        reads::ready(reads::route_read(self, kind, reads))
    }

    /// Why a statement that must run on the primary runs there ([`primary_reason`]).
    fn primary_reason(&self, kind: StatementKind, in_transaction: bool) -> RouteReason {
        primary_reason(kind, in_transaction, &self.state)
    }

    /// Counts a statement routed for `reason` and remembers it for `last_route`.
    fn record(&mut self, reason: RouteReason, replica: Option<usize>) {
        note_route(&self.db, &mut self.last, reason, replica);
    }

    /// A read goes to replica `i`: count it, and remember what the scope has now seen.
    fn on_replica(&mut self, i: usize) {
        replica_read(&self.db, &mut self.last, i, true);
    }

    /// Runs text that must go to the primary (`execute`, `batch_execute`, migrations, ...),
    /// then records what its statements did: transactions, session state, committed writes.
    fn run_on_primary<R>(
        &mut self,
        classified: &Classified,
        f: impl FnOnce(&mut C) -> QueryResult<R>,
    ) -> QueryResult<R> {
        self.drop_dead_replica();
        let in_transaction = self.in_transaction();
        let reason = self.primary_reason(classified.kind, in_transaction);
        let (result, replica) = match self.state.tx_replica {
            // inside a read-only transaction that runs on a replica: there, like its BEGIN
            Some(i) if self.state.tx_open() => {
                let Some(conn) = self.replicas.get_mut(i).and_then(Option::as_mut) else {
                    self.state.unknown = true;
                    return Err(connection_error(ConnectionError::BadConnection(
                        "the replica of this read-only transaction is gone".into(),
                    )));
                };
                let result = {
                    let _call = conn.watch.call(None);
                    f(&mut conn.conn)
                };
                if result
                    .as_ref()
                    .err()
                    .is_some_and(crate::backend::is_connection_error)
                {
                    self.state.unknown = true;
                }
                (result, Some(i))
            }
            _ => {
                let result = run_primary(
                    &mut self.primary,
                    &self.db,
                    &self.instrumentation,
                    self.cache_size,
                    f,
                );
                let result = primary_ran(
                    &self.db,
                    &mut self.state,
                    &mut self.dead_primary,
                    &mut self.last,
                    reason,
                    result,
                );
                (result, None)
            }
        };
        if let Some(i) = replica {
            self.record(reason, Some(i));
            if result.is_err() {
                self.db.counters.failed();
            }
        }
        if result.is_ok() && classified.is_plain() {
            // the common case, one plain statement: what it wrote, without the bookkeeping
            if classified.writes() {
                if in_transaction {
                    self.state
                        .note_transaction_write(classified.written_tables());
                } else {
                    self.committed_write(classified.written_tables());
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
            self.committed_write(&tables);
        }
        result
    }

    /// Runs `f` in a transaction opened with `begin` (Diesel's `transaction_sql`), through
    /// the routed connection: `BEGIN` and everything inside go where the rules say.
    #[cfg(feature = "sqlite")]
    pub(super) fn transaction_sql<T, E, F>(&mut self, f: F, begin: &str) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        AnsiTransactionManager::begin_transaction_sql(&mut *self, begin)?;
        match f(&mut *self) {
            Ok(value) => {
                <AnsiTransactionManager as TransactionManager<Self>>::commit_transaction(self)?;
                Ok(value)
            }
            Err(e) => {
                <AnsiTransactionManager as TransactionManager<Self>>::rollback_transaction(self)?;
                Err(e)
            }
        }
    }

    /// Runs a write the router cannot see as SQL (`COPY FROM`) on the primary, with the
    /// bookkeeping of a write; inside a read-only transaction on a replica, there (where it
    /// fails as a write must).
    #[cfg(feature = "postgres")]
    pub(super) fn write_through<R, E>(
        &mut self,
        f: impl FnOnce(&mut C) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<diesel::result::Error>,
    {
        self.drop_dead_replica();
        let in_transaction = self.in_transaction();
        if let (Some(i), true) = (self.state.tx_replica, self.state.tx_open()) {
            self.record(RouteReason::Transaction, Some(i));
            return match self.replicas.get_mut(i).and_then(Option::as_mut) {
                Some(conn) => {
                    let _call = conn.watch.call(None);
                    f(&mut conn.conn)
                }
                None => Err(connection_error(ConnectionError::BadConnection(
                    "the replica of this read-only transaction is gone".into(),
                ))
                .into()),
            };
        }
        let reason = self.primary_reason(StatementKind::Write, in_transaction);
        let timeout = self.db.primary_timeout;
        self.open_primary()?;
        let result = match self.primary.as_mut() {
            Some(p) => {
                let _call = p.watch.call(timeout);
                f(&mut p.conn)
            }
            None => Err(connection_error(ConnectionError::BadConnection(
                "primary connection vanished".into(),
            ))
            .into()),
        };
        self.record(reason, None);
        if result.is_ok() {
            if in_transaction {
                self.state.note_transaction_write(&[]);
            } else {
                self.committed_write(&[]);
            }
        }
        result
    }

    /// A `BEGIN .. READ ONLY` goes where a read would go: on a replica, the whole
    /// transaction runs there. `None`: it runs on the primary.
    fn begin_on_replica(
        &mut self,
        classified: &Classified,
        query: &str,
    ) -> Option<QueryResult<()>> {
        self.drop_dead_replica();
        let i = self.route_read(StatementKind::Read, None).ok()?;
        let conn = self.replicas.get_mut(i)?.as_mut()?;
        let begun = {
            let _call = conn.watch.call(None);
            conn.conn.batch_execute(query)
        };
        match begun {
            Ok(()) => {
                self.on_replica(i);
                self.last = Some((RouteReason::Transaction, Some(i)));
                self.state.apply(
                    classified.statements(),
                    &[],
                    true,
                    C::FAILED_COMMIT_ENDS_TRANSACTION,
                );
                self.state.tx_replica = Some(i);
                Some(Ok(()))
            }
            Err(e) if crate::backend::is_connection_error(&e) => {
                self.replicas[i] = None;
                if self.current_replica == Some(i) {
                    self.current_replica = None;
                }
                replica_lost(&self.db, i);
                None
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// The transaction manager state for the open transaction: the replica's while a
    /// read-only transaction runs there (until its manager has closed it), else the
    /// primary's.
    pub(super) fn transaction_manager(&mut self) -> &mut AnsiTransactionManager {
        if let Some(i) = self.state.tx_replica {
            let open = self.state.tx_open();
            if let Some(r) = self.replicas.get_mut(i).and_then(Option::as_mut) {
                let depth =
                    <AnsiTransactionManager as TransactionManager<C>>::transaction_manager_status_mut(
                        &mut r.conn,
                    )
                    .transaction_depth();
                if open || !matches!(depth, Ok(None)) {
                    return r.conn.transaction_state();
                }
            }
            self.state.tx_replica = None;
        }
        match self.primary {
            Some(ref mut p) => p.transaction_state(),
            None => {
                // No primary connection means no transaction.
                self.placeholder_tm = AnsiTransactionManager::default();
                &mut self.placeholder_tm
            }
        }
    }

    /// Do positions per table matter here (PostgreSQL, `granularity = "table"`, a position
    /// mode)? Only then are the tables of writes worth working out.
    pub(super) fn wants_tables(&self) -> bool {
        self.db.wants_tables()
    }

    /// The physical primary, opened if needed.
    fn open_primary(&mut self) -> QueryResult<&mut C> {
        open_primary(
            &mut self.primary,
            &self.db,
            &self.instrumentation,
            self.cache_size,
        )
        .map(|p| &mut p.conn)
        .map_err(connection_error)
    }

    /// Before every call: reopen what broke, reset what the last checkout left behind.
    #[inline]
    fn drop_dead_replica(&mut self) {
        if std::mem::take(&mut self.dead_primary) {
            self.primary = None;
        }
        if std::mem::take(&mut self.look_at_idle_primary) {
            // closed by the server while in the pool (a restart, a failover): reopened, to
            // whatever the address reaches now, instead of failing this checkout's first
            // statement. Nothing of the session is lost: no transaction is open, and what
            // the last checkout set is reset anyway.
            let closed = self.primary.as_ref().is_some_and(|p| p.watch.peer_closed());
            if closed && !self.in_transaction() {
                tracing::debug!(
                    target: "diesel_sharding::route",
                    database = %self.db.name,
                    "the primary closed this idle connection: reopened"
                );
                self.primary = None;
                self.reset_primary = false;
            }
        }
        if self.reset_primary || !self.reset_replicas.is_empty() {
            self.reset_sessions();
        }
        if let Some(i) = self.dead_replica.take() {
            if let Some(slot) = self.replicas.get_mut(i) {
                *slot = None;
            }
            if self.current_replica == Some(i) {
                self.current_replica = None;
            }
        }
    }
}

fn connection_error(e: ConnectionError) -> diesel::result::Error {
    diesel::result::Error::DatabaseError(
        diesel::result::DatabaseErrorKind::UnableToSendCommand,
        Box::new(e.to_string()),
    )
}

/// Opens the primary if needed. A free function over fields, so that a cursor borrowed from a
/// replica and this borrow of the primary can coexist in `load`.
fn open_primary<'a, C: RoutedBackend>(
    slot: &'a mut Option<Physical<C>>,
    db: &PrimaryState,
    instrumentation: &SharedInstrumentation,
    cache_size: Option<CacheSize>,
) -> ConnectionResult<&'a mut Physical<C>> {
    if slot.is_none() {
        let mut conn = C::connect(db.open_url.expose(), db.connect_timeout)
            .map_err(|e| scrub_connection_error(e, &db.open_url))?;
        instrumentation.install(&mut conn);
        if let Some(size) = cache_size {
            conn.set_prepared_statement_cache_size(size);
        }
        let watch = watch_of(&mut conn, None);
        learn_primary_timeline(&mut conn, &watch, db)?;
        *slot = Some(Physical {
            conn,
            watch,
            generation: 0,
            identity: 0,
        });
    }
    match slot.as_mut() {
        Some(c) => Ok(c),
        None => Err(ConnectionError::BadConnection(
            "primary connection vanished".into(),
        )),
    }
}

/// On a new connection to the primary of a database with replicas, before anything else
/// runs on it: which timeline the primary writes, so that after a failover no position of
/// the old history is trusted for what this connection writes (see
/// [`PrimaryState::saw_primary_timeline`]). Bounded by `primary_timeout`; a primary that
/// does not answer is an error, a failed query only leaves the timeline to the monitor.
fn learn_primary_timeline<C: RoutedBackend>(
    conn: &mut C,
    watch: &Watched,
    db: &PrimaryState,
) -> ConnectionResult<()> {
    if !db.has_positions || db.replicas.len() == 0 {
        return Ok(());
    }
    let timeline = {
        let _call = watch.call(db.primary_timeout);
        C::primary_timeline(conn)
    };
    match timeline {
        Ok(Some(t)) => db.saw_primary_timeline(t),
        Ok(None) => {}
        Err(_) if watch.was_cut() => {
            return Err(ConnectionError::BadConnection(
                "the primary did not answer within routing.primary_timeout".into(),
            ))
        }
        Err(_) => {}
    }
    Ok(())
}

/// The run step on the primary, for every entry point: opens it if needed (a failure to
/// open is the statement's error), runs `f` under `primary_timeout`, and turns a call the
/// watchdog cut into an error that says so. A free function over fields: what `f` returns
/// may borrow the primary (a cursor) while the caller records.
fn run_primary<'a, C: RoutedBackend, X>(
    slot: &'a mut Option<Physical<C>>,
    db: &PrimaryState,
    instrumentation: &SharedInstrumentation,
    cache_size: Option<CacheSize>,
    f: impl FnOnce(&'a mut C) -> QueryResult<X>,
) -> QueryResult<X> {
    let primary = open_primary(slot, db, instrumentation, cache_size).map_err(connection_error)?;
    let Physical { conn, watch, .. } = primary;
    let timeout = db.primary_timeout;
    let result = {
        let _call = watch.call(timeout);
        f(conn)
    };
    primary_outcome(result, watch, timeout)
}

/// The record step after a statement ran (or failed to run) on the primary, for every entry
/// point: counted where it ran, a failure counted, a broken connection reopened at the next
/// call (a transaction open on it is gone, so its state is no longer known), and a read held
/// on the primary only because a write's position is unknown says so. Takes fields, not the
/// connection: the result may borrow the primary.
fn primary_ran<X>(
    db: &PrimaryState,
    state: &mut SessionState,
    dead_primary: &mut bool,
    last: &mut Option<(RouteReason, Option<usize>)>,
    reason: RouteReason,
    result: QueryResult<X>,
) -> QueryResult<X> {
    note_route(db, last, reason, None);
    let Err(e) = result else { return result };
    db.counters.failed();
    if !crate::backend::is_connection_error(&e) {
        return Err(e);
    }
    *dead_primary = true;
    if state.tx_open() {
        state.unknown = true;
    }
    if reason == RouteReason::Behind && scope::pending(db.id) {
        return Err(crate::error::position_unknown(&db.name, e));
    }
    Err(e)
}

/// The watch of a freshly opened connection: its socket, found through its ports.
pub(crate) fn watch_of<C: RoutedBackend>(
    conn: &mut C,
    hung: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
) -> Watched {
    let fd = C::socket_ports(conn).and_then(|(local, remote)| watchdog::find_socket(local, remote));
    Watched::new(fd, hung)
}

/// A primary call's result; when the watchdog cut it at `primary_timeout`, an error that
/// says so (and that the outcome of a write is unknown).
pub(super) fn primary_outcome<R, E: From<diesel::result::Error>>(
    result: Result<R, E>,
    watch: &Watched,
    timeout: Option<std::time::Duration>,
) -> Result<R, E> {
    match result {
        Err(_) if watch.was_cut() => Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UnableToSendCommand,
            Box::new(format!(
                "the primary did not answer within {}: the call was cut, and the outcome of a \
                 write it made is unknown",
                timeout
                    .map(|t| format!(
                        "routing.primary_timeout ({})",
                        humantime::format_duration(t)
                    ))
                    .unwrap_or_else(|| "its deadline".into())
            )),
        )
        .into()),
        other => other,
    }
}

fn open_replica<C: RoutedBackend>(
    db: &PrimaryState,
    index: usize,
    instrumentation: &SharedInstrumentation,
    cache_size: Option<CacheSize>,
) -> ConnectionResult<Physical<C>> {
    let replica = db
        .replicas
        .get(index)
        .ok_or_else(|| ConnectionError::BadConnection("no such replica".into()))?;
    let generation = db.replicas.generation(index);
    let mut conn = C::connect(replica.url.expose(), db.connect_timeout)
        .map_err(|e| scrub_connection_error(e, &replica.url))?;
    let watch = watch_of(&mut conn, Some(db.replicas.hung_flag(index)));
    {
        let _call = watch.call(Some(db.replica_timeout));
        C::prepare_replica(&mut conn).map_err(ConnectionError::CouldntSetupConfiguration)?;
    }
    instrumentation.install(&mut conn);
    if let Some(size) = cache_size {
        conn.set_prepared_statement_cache_size(size);
    }
    Ok(Physical {
        conn,
        watch,
        generation,
        identity: 0,
    })
}

/// A driver's connection error with every secret of `url` (and anything that looks like a
/// password) scrubbed from its message: libpq quotes parts of a malformed URL back, a
/// password among them.
pub(crate) fn scrub_connection_error(e: ConnectionError, url: &SecretUrl) -> ConnectionError {
    match e {
        ConnectionError::BadConnection(msg) => ConnectionError::BadConnection(url.scrub(&msg)),
        ConnectionError::InvalidConnectionUrl(msg) => {
            ConnectionError::InvalidConnectionUrl(url.scrub(&msg))
        }
        ConnectionError::CouldntSetupConfiguration(e) => {
            ConnectionError::BadConnection(url.scrub(&e.to_string()))
        }
        ConnectionError::InvalidCString(e) => ConnectionError::InvalidCString(e),
        other => ConnectionError::BadConnection(url.scrub(&other.to_string())),
    }
}

impl<C: RoutedBackend> std::fmt::Debug for RoutedConnection<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedConnection")
            .field("database", &self.db.name)
            .field("primary_open", &self.primary.is_some())
            .field(
                "replicas_open",
                &self.replicas.iter().filter(|r| r.is_some()).count(),
            )
            .field("stuck_to_primary", &self.state.sticky.any())
            .finish_non_exhaustive()
    }
}

impl<C: RoutedBackend> SimpleConnection for RoutedConnection<C> {
    /// Always the primary. Every statement of the text is followed: transaction control,
    /// session state, writes (a failed batch of several statements is assumed to have done
    /// the worst it could).
    fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        let classified = Classified::of(&self.db.classifier, query, self.wants_tables());
        if classified.begins_read_only() && !self.in_transaction() {
            if let Some(done) = self.begin_on_replica(&classified, query) {
                return done;
            }
        }
        self.run_on_primary(&classified, |p| p.batch_execute(query))
    }
}
