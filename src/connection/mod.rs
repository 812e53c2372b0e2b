//! The routed connection: one Diesel connection made of a primary and its replicas.
//!
//! A [`RoutedConnection`] implements Diesel's connection traits, so Diesel code runs on it
//! unchanged. It opens its physical connections lazily (a checkout that only reads never
//! opens the primary) and sends each statement where the [routing rules](crate::routing) say.

mod diesel_impls;
mod instrumentation;
mod reads;
mod writes;

use std::sync::Arc;

use diesel::connection::{AnsiTransactionManager, CacheSize, SimpleConnection, TransactionManager};
use diesel::result::{ConnectionError, ConnectionResult, QueryResult};

use self::instrumentation::SharedInstrumentation;
use crate::backend::RoutedBackend;
use crate::consistency::Position;
use crate::database::Database;
use crate::routing::{Classified, KindCache, RouteReason, StatementKind, TableId};

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
    db: Arc<Database>,
    primary: Option<C>,
    replicas: Vec<Option<C>>,
    /// The replica this connection reads from while it stays healthy.
    current_replica: Option<usize>,
    /// A replica whose connection broke during the last load; dropped at the next call.
    dead_replica: Option<usize>,
    /// Stands in for the primary's transaction state while the primary is closed.
    placeholder_tm: AnsiTransactionManager,
    /// Everything goes to the primary until the connection is returned to the pool.
    session_on_primary: bool,
    /// A `BEGIN` went through `batch_execute` and no `COMMIT`/`ROLLBACK` yet.
    transaction_by_sql: bool,
    /// The open transaction wrote: its commit pins the thread.
    transaction_wrote: bool,
    /// A committed write whose position is not known yet.
    position_pending: bool,
    /// Tables the open transaction wrote ...
    transaction_tables: Vec<TableId>,
    /// ... or it wrote where the tables are not known.
    transaction_tables_unknown: bool,
    kinds: KindCache,
    instrumentation: SharedInstrumentation,
    cache_size: Option<CacheSize>,
    last: Option<(RouteReason, Option<usize>)>,
}

impl<C: RoutedBackend> RoutedConnection<C> {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        let replicas = (0..db.replicas.len()).map(|_| None).collect();
        RoutedConnection {
            db,
            primary: None,
            replicas,
            current_replica: None,
            dead_replica: None,
            placeholder_tm: AnsiTransactionManager::default(),
            session_on_primary: false,
            transaction_by_sql: false,
            transaction_wrote: false,
            position_pending: false,
            transaction_tables: Vec::new(),
            transaction_tables_unknown: false,
            kinds: KindCache::default(),
            instrumentation: SharedInstrumentation::default(),
            cache_size: None,
            last: None,
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
    /// Statements sent here bypass routing, so this counts as a write: the thread is pinned to
    /// the primary for the pin window afterwards.
    pub fn primary(&mut self) -> QueryResult<&mut C> {
        self.db.wrote();
        if self.in_transaction() {
            self.transaction_wrote = true;
            self.note_transaction_tables(&[]);
        }
        if self.db.has_positions {
            // its position is read before the next routed statement, or at check-in
            crate::consistency::scope::write_pending(self.db.id);
            self.position_pending = true;
        }
        self.open_primary()
    }

    /// The physical connection of the replica this connection reads from, opened if needed;
    /// the primary when the database has no reachable replica.
    pub fn replica(&mut self) -> QueryResult<&mut C> {
        self.drop_dead_replica();
        match self.find_replica(0).ok() {
            Some(i) => match self.replicas[i].as_mut() {
                Some(c) => Ok(c),
                None => Err(connection_error(ConnectionError::BadConnection(
                    "replica connection vanished".into(),
                ))),
            },
            None => self.open_primary(),
        }
    }

    /// Runs `f` in a read-only transaction on a replica (on the primary when no replica can be
    /// reached). Use it for several reads that must see one snapshot.
    ///
    /// The closure gets the physical connection; a write inside fails (the replica is opened
    /// read-only, and the transaction is read-only).
    pub fn read_only_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut C) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
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
    pub(crate) fn has_replica_at(&mut self, position: Position) -> bool {
        self.db.replicas.reads_from_replicas() && self.find_replica(position).is_ok()
    }

    /// Sends every statement to the primary until the connection goes back to the pool.
    pub fn stick_to_primary(&mut self) {
        self.session_on_primary = true;
    }

    /// Forgets per-checkout state; the pool calls this on check-in and check-out.
    pub(crate) fn reset_session(&mut self) {
        self.settle_pending();
        self.session_on_primary = false;
        self.last = None;
    }

    /// Is a transaction open on the primary (through Diesel's transaction manager or a
    /// hand-written `BEGIN`)?
    pub(crate) fn in_transaction(&mut self) -> bool {
        self.transaction_by_sql || self.in_managed_transaction()
    }

    /// Is Diesel's transaction manager (the primary's) inside a transaction, or broken?
    fn in_managed_transaction(&mut self) -> bool {
        match self.primary.as_mut() {
            None => false,
            Some(p) => {
                !matches!(
                <AnsiTransactionManager as TransactionManager<C>>::transaction_manager_status_mut(p)
                    .transaction_depth(),
                Ok(None)
            )
            }
        }
    }

    /// A `BEGIN` sent by hand, that Diesel's transaction manager does not know about: the
    /// connection must not go back to the pool like that.
    pub(crate) fn in_hand_written_transaction(&mut self) -> bool {
        self.transaction_by_sql && !self.in_managed_transaction()
    }

    /// Runs a writing statement on the physical primary, then does the bookkeeping: the
    /// reason (`transaction` inside one, else `write`) and, if it succeeded, the write.
    /// `written` are the tables it writes (empty: not known).
    fn write_on_primary<R>(
        &mut self,
        written: Vec<TableId>,
        f: impl FnOnce(&mut C) -> QueryResult<R>,
    ) -> QueryResult<R> {
        self.drop_dead_replica();
        self.settle_pending();
        let primary = self.open_primary()?;
        let result = f(primary);
        let reason = if self.in_transaction() {
            RouteReason::Transaction
        } else {
            RouteReason::Write
        };
        self.on_primary(reason, result.is_ok().then_some(&written[..]));
        result
    }

    /// Do positions per table matter here (PostgreSQL, `granularity = "table"`, a position
    /// mode)? Only then are the tables of writes worth working out.
    pub(super) fn wants_tables(&self) -> bool {
        self.db.has_positions && self.db.consistency.granularity == crate::Granularity::Table
    }

    /// The tables a classified write writes (empty: not known, the whole database).
    pub(super) fn written_tables(classified: &Classified) -> Vec<TableId> {
        match (&classified.tables, classified.kind) {
            (Some(t), StatementKind::Write) => t.written.clone(),
            _ => Vec::new(),
        }
    }

    /// The physical primary, opened if needed.
    fn open_primary(&mut self) -> QueryResult<&mut C> {
        open_primary(
            &mut self.primary,
            &self.db,
            &self.instrumentation,
            self.cache_size,
        )
        .map_err(connection_error)
    }

    /// A statement ran on the primary for `reason`; if it wrote (to `written` tables, empty
    /// when not known), remember it.
    fn on_primary(&mut self, reason: RouteReason, written: Option<&[TableId]>) {
        self.db.routed(reason, None);
        self.last = Some((reason, None));
        if let Some(tables) = written {
            if self.in_transaction() {
                self.transaction_wrote = true;
                self.note_transaction_tables(tables);
            } else {
                self.committed_write(tables);
            }
        }
    }

    /// Remembers what a statement inside the open transaction wrote, for its commit.
    pub(super) fn note_transaction_tables(&mut self, tables: &[TableId]) {
        if tables.is_empty() {
            self.transaction_tables_unknown = true;
        } else {
            self.transaction_tables.extend_from_slice(tables);
        }
    }

    /// What the transaction being committed wrote (empty: not known), and forgets it.
    fn take_transaction_tables(&mut self) -> Vec<TableId> {
        let tables = std::mem::take(&mut self.transaction_tables);
        if std::mem::take(&mut self.transaction_tables_unknown) {
            Vec::new()
        } else {
            tables
        }
    }

    fn drop_dead_replica(&mut self) {
        if let Some(i) = self.dead_replica.take() {
            if let Some(slot) = self.replicas.get_mut(i) {
                *slot = None;
            }
            if self.current_replica == Some(i) {
                self.current_replica = None;
            }
        }
    }

    /// Handles the transaction bookkeeping of SQL sent through `batch_execute`.
    fn note_batch(&mut self, sql: &str) -> BatchEffect {
        match transaction_control(sql) {
            Some(TxControl::Begin) => {
                self.transaction_by_sql = true;
                BatchEffect::None
            }
            Some(TxControl::Commit) => {
                let wrote = self.transaction_wrote;
                self.transaction_by_sql = false;
                self.transaction_wrote = false;
                let tables = self.take_transaction_tables();
                if wrote {
                    BatchEffect::Committed(tables)
                } else {
                    BatchEffect::None
                }
            }
            Some(TxControl::Rollback) => {
                self.transaction_by_sql = false;
                self.transaction_wrote = false;
                self.take_transaction_tables();
                BatchEffect::None
            }
            Some(TxControl::Savepoint) => BatchEffect::None,
            None => {
                let classified = Classified::of(&self.db.classifier, sql, self.wants_tables());
                if classified.kind.is_read() {
                    BatchEffect::None
                } else {
                    BatchEffect::Write(Self::written_tables(&classified))
                }
            }
        }
    }
}

/// What SQL sent through `batch_execute` did.
#[derive(Debug, PartialEq, Eq)]
enum BatchEffect {
    /// Nothing to remember (a read, transaction control).
    None,
    /// A write to these tables (empty: not known), committed at once unless a transaction
    /// is open.
    Write(Vec<TableId>),
    /// The commit of a transaction that wrote these tables (empty: not known).
    Committed(Vec<TableId>),
}

/// Transaction-control statements, as Diesel's transaction manager sends them.
#[derive(Debug, PartialEq, Eq)]
enum TxControl {
    Begin,
    Commit,
    Rollback,
    Savepoint,
}

fn transaction_control(sql: &str) -> Option<TxControl> {
    let mut words = sql
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty());
    let first = words.next()?;
    let is = |w: &str| first.eq_ignore_ascii_case(w);
    if is("BEGIN") || is("START") {
        Some(TxControl::Begin)
    } else if is("COMMIT") || is("END") {
        Some(TxControl::Commit)
    } else if is("ROLLBACK") || is("ABORT") {
        match words.next() {
            Some(w) if w.eq_ignore_ascii_case("TO") => Some(TxControl::Savepoint),
            _ => Some(TxControl::Rollback),
        }
    } else if is("SAVEPOINT") || is("RELEASE") {
        Some(TxControl::Savepoint)
    } else {
        None
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
    slot: &'a mut Option<C>,
    db: &Database,
    instrumentation: &SharedInstrumentation,
    cache_size: Option<CacheSize>,
) -> ConnectionResult<&'a mut C> {
    if slot.is_none() {
        let mut conn = C::establish(db.url.expose()).map_err(|e| redact_connection_error(e, db))?;
        instrumentation.install(&mut conn);
        if let Some(size) = cache_size {
            conn.set_prepared_statement_cache_size(size);
        }
        *slot = Some(conn);
    }
    match slot.as_mut() {
        Some(c) => Ok(c),
        None => Err(ConnectionError::BadConnection(
            "primary connection vanished".into(),
        )),
    }
}

fn open_replica<C: RoutedBackend>(
    db: &Database,
    index: usize,
    instrumentation: &SharedInstrumentation,
    cache_size: Option<CacheSize>,
) -> ConnectionResult<C> {
    let replica = db
        .replicas
        .get(index)
        .ok_or_else(|| ConnectionError::BadConnection("no such replica".into()))?;
    let mut conn =
        C::establish(replica.url.expose()).map_err(|e| redact_connection_error(e, db))?;
    C::prepare_replica(&mut conn).map_err(ConnectionError::CouldntSetupConfiguration)?;
    instrumentation.install(&mut conn);
    if let Some(size) = cache_size {
        conn.set_prepared_statement_cache_size(size);
    }
    Ok(conn)
}

/// libpq error messages do not contain passwords, but be sure: strip the URL if it appears.
fn redact_connection_error(e: ConnectionError, db: &Database) -> ConnectionError {
    match e {
        ConnectionError::BadConnection(msg) if msg.contains(db.url.expose()) => {
            ConnectionError::BadConnection(msg.replace(db.url.expose(), &db.url.to_string()))
        }
        other => other,
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
            .field("session_on_primary", &self.session_on_primary)
            .finish_non_exhaustive()
    }
}

impl<C: RoutedBackend> SimpleConnection for RoutedConnection<C> {
    /// Always the primary.
    fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        self.drop_dead_replica();
        self.settle_pending();
        self.open_primary()?.batch_execute(query)?;
        let effect = self.note_batch(query);
        let reason = if self.in_transaction() {
            RouteReason::Transaction
        } else {
            RouteReason::Write
        };
        match effect {
            BatchEffect::Write(tables) => self.on_primary(reason, Some(&tables)),
            BatchEffect::Committed(tables) => {
                self.on_primary(reason, None);
                self.committed_write(&tables);
            }
            BatchEffect::None => self.on_primary(reason, None),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_transaction_manager_statements() {
        assert_eq!(transaction_control("BEGIN"), Some(TxControl::Begin));
        assert_eq!(
            transaction_control("begin read only"),
            Some(TxControl::Begin)
        );
        assert_eq!(
            transaction_control("START TRANSACTION"),
            Some(TxControl::Begin)
        );
        assert_eq!(
            transaction_control("BEGIN IMMEDIATE"),
            Some(TxControl::Begin)
        );
        assert_eq!(transaction_control("COMMIT"), Some(TxControl::Commit));
        assert_eq!(transaction_control("ROLLBACK"), Some(TxControl::Rollback));
        assert_eq!(
            transaction_control("ROLLBACK TO SAVEPOINT diesel_savepoint_1"),
            Some(TxControl::Savepoint)
        );
        assert_eq!(
            transaction_control("SAVEPOINT diesel_savepoint_1"),
            Some(TxControl::Savepoint)
        );
        assert_eq!(
            transaction_control("RELEASE SAVEPOINT diesel_savepoint_1"),
            Some(TxControl::Savepoint)
        );
        assert_eq!(transaction_control("INSERT INTO t VALUES (1)"), None);
        assert_eq!(transaction_control(""), None);
    }
}
