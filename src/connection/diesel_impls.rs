//! Diesel's connection traits for [`RoutedConnection`].
//!
//! Transactions use the primary's own `AnsiTransactionManager` state (the prototype's "T3"
//! design): `BEGIN` goes through `batch_execute` to the primary, and the depth counter and the
//! backend's fix-ups all live in the primary connection, exactly as without the router.

use std::sync::Arc;

use diesel::connection::{
    AnsiTransactionManager, CacheSize, Connection, ConnectionSealed, Instrumentation,
    LoadConnection, TransactionManager,
};
use diesel::expression::QueryMetadata;
use diesel::migration::MigrationConnection;
use diesel::query_builder::{Query, QueryFragment, QueryId};
use diesel::query_dsl::UpdateAndFetchResults;
use diesel::r2d2::R2D2Connection;
use diesel::result::{ConnectionResult, QueryResult};

use super::physical::Physical;
use super::{
    connection_error, mode_in_scope, open_primary, primary_ran, record_write, record_write_at,
    record_write_pending, replica_broke, replica_read, run_primary, RoutedConnection,
};
use crate::backend::{ReplicaLoad, RoutedBackend, RoutedLoad};
use crate::consistency::scope;
use crate::primary::PrimaryState;
use crate::routing::{Classified, RouteReason};

impl<C: RoutedBackend> ConnectionSealed for RoutedConnection<C> {}

impl<C: RoutedBackend> Connection for RoutedConnection<C> {
    type Backend = C::Backend;
    type TransactionManager = AnsiTransactionManager;

    /// A routed connection to one primary without replicas. Use a
    /// [`Cluster`](crate::Cluster) for replicas.
    fn establish(database_url: &str) -> ConnectionResult<Self> {
        let db = PrimaryState::standalone(database_url, C::HAS_POSITIONS, C::MYSQL_DIALECT);
        let mut conn = RoutedConnection::new(Arc::new(db));
        open_primary(&mut conn.primary, &conn.db, &conn.instrumentation, None)?;
        Ok(conn)
    }

    /// Always the primary. What the statement does (a write, `BEGIN`, `SET`, ...) is read
    /// from the statement, so `sql_query("BEGIN").execute(..)` opens a transaction like
    /// `batch_execute("BEGIN")` does.
    fn execute_returning_count<T>(&mut self, source: &T) -> QueryResult<usize>
    where
        T: QueryFragment<Self::Backend> + QueryId,
    {
        let classified =
            self.kinds
                .classify::<C, T>(&self.db.classifier, source, self.wants_tables());
        self.run_on_primary(&classified, |p| p.execute_returning_count(source))
    }

    fn transaction_state(&mut self) -> &mut AnsiTransactionManager {
        self.transaction_manager()
    }

    fn instrumentation(&mut self) -> &mut dyn Instrumentation {
        &mut self.instrumentation
    }

    fn set_instrumentation(&mut self, instrumentation: impl Instrumentation) {
        self.instrumentation.set(instrumentation);
        let shared = self.instrumentation.clone();
        for conn in self
            .primary
            .iter_mut()
            .chain(self.replicas.iter_mut().flatten())
        {
            shared.install(&mut conn.conn);
        }
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        self.cache_size = Some(size);
        for conn in self
            .primary
            .iter_mut()
            .chain(self.replicas.iter_mut().flatten())
        {
            conn.set_prepared_statement_cache_size(size);
        }
    }
}

impl<C, B> LoadConnection<B> for RoutedConnection<C>
where
    C: RoutedLoad<B>,
{
    type Cursor<'conn, 'query> = <C as LoadConnection<B>>::Cursor<'conn, 'query>;
    type Row<'conn, 'query> = <C as LoadConnection<B>>::Row<'conn, 'query>;

    fn load<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> QueryResult<Self::Cursor<'conn, 'query>>
    where
        T: Query + QueryFragment<Self::Backend> + QueryId + 'query,
        Self::Backend: QueryMetadata<T::SqlType>,
    {
        // classify
        self.drop_dead_replica();
        let classified =
            self.kinds
                .classify::<C, T>(&self.db.classifier, &source, self.wants_tables());
        if let (Some(i), true) = (self.state.tx_replica, self.state.tx_open()) {
            return self.load_in_replica_transaction(i, &classified, source);
        }
        let capture = self.captures_position(&classified);
        // decide
        let reads = self.db.read_tables(classified.tables.as_deref());
        let (reason, source) = match self.route_read(classified.kind, reads) {
            Err(reason) => (reason, source),
            // run on the replica (fields only: the cursor borrows it), or fall back
            Ok(i) => match load_on_replica::<C, B, T>(self.replicas[i].as_mut(), source) {
                ReplicaLoad::Done(result) => {
                    replica_read(&self.db, &mut self.last, i, result.is_ok());
                    return result;
                }
                ReplicaLoad::Retry(error, source) => {
                    self.dead_replica = Some(i);
                    replica_broke(&self.db, i, &error);
                    (RouteReason::Fallback, source)
                }
            },
        };
        // run on the primary (fields only: the cursor borrows it)
        let mut position = None;
        let result = run_primary(
            &mut self.primary,
            &self.db,
            &self.instrumentation,
            self.cache_size,
            |primary| {
                if !capture {
                    return primary.load(source);
                }
                let (result, at) = C::load_write(primary, source);
                position = at;
                result
            },
        );
        // record
        let result = primary_ran(
            &self.db,
            &mut self.state,
            &mut self.dead_primary,
            &mut self.last,
            reason,
            result,
        );
        record_effects::<C>(
            &mut self.state,
            &self.db,
            &classified,
            result.is_ok(),
            position,
            <C as crate::backend::private::Load<B>>::DONE_ON_RETURN,
        );
        result
    }
}

/// The run step on replica `replica` (`None`: its connection vanished): cut, and retried on
/// the primary, if the replica stops answering.
fn load_on_replica<'conn, 'query, C, B, T>(
    replica: Option<&'conn mut Physical<C>>,
    source: T,
) -> ReplicaLoad<<C as LoadConnection<B>>::Cursor<'conn, 'query>, T>
where
    C: RoutedLoad<B>,
    T: Query + QueryFragment<C::Backend> + QueryId + 'query,
    C::Backend: QueryMetadata<T::SqlType>,
{
    let Some(Physical { conn, watch, .. }) = replica else {
        return ReplicaLoad::Done(Err(connection_error(
            diesel::result::ConnectionError::BadConnection("replica connection vanished".into()),
        )));
    };
    let _call = watch.call(None);
    C::load_on_replica(conn, source)
}

impl<C: RoutedBackend> RoutedConnection<C> {
    /// A plain write outside a transaction commits as it runs: in `strong`, and where the
    /// cursor lets the connection go, its position is read right after it.
    fn captures_position(&mut self, classified: &Classified) -> bool {
        classified.is_plain()
            && classified.writes()
            && self.db.has_positions
            && matches!(mode_in_scope(&self.db), crate::Consistency::Strong)
            && !self.in_transaction()
    }
}

/// What a statement that ran on the primary did to the session: transactions, session
/// state, and a committed write (its position when the run read it, else left to learn:
/// from now when the statement ran to its end on return, else from a position read later,
/// since a row-by-row cursor may still hold the write). Takes fields, not the connection:
/// the cursor borrows the primary.
pub(super) fn record_effects<C: RoutedBackend>(
    state: &mut super::state::SessionState,
    db: &PrimaryState,
    classified: &Classified,
    ok: bool,
    position: Option<crate::consistency::Position>,
    done_on_return: bool,
) {
    // a plain read changes no state: nothing to record
    if classified.is_plain() && !classified.writes() {
        return;
    }
    let outcome = state.apply(
        classified.statements(),
        classified.written_tables(),
        ok,
        C::FAILED_COMMIT_ENDS_TRANSACTION,
    );
    let Some(tables) = outcome.committed else {
        return;
    };
    record_write(db);
    if db.has_positions {
        match position {
            Some(pos) => record_write_at(db, &pos, &tables),
            // learned when something compares against it
            None => {
                let at = if done_on_return {
                    db.replicas.clock_ms()
                } else {
                    scope::NOT_YET
                };
                record_write_pending(db, &tables, at);
            }
        }
    }
}

impl<C: RoutedBackend> RoutedConnection<C> {
    /// A statement inside a read-only transaction that runs on replica `i`.
    fn load_in_replica_transaction<'conn, 'query, T, B>(
        &'conn mut self,
        i: usize,
        classified: &Classified,
        source: T,
    ) -> QueryResult<<C as LoadConnection<B>>::Cursor<'conn, 'query>>
    where
        C: RoutedLoad<B>,
        T: Query + QueryFragment<C::Backend> + QueryId + 'query,
        C::Backend: QueryMetadata<T::SqlType>,
    {
        self.record(RouteReason::Transaction, Some(i));
        // a statement that ends the transaction ends it here too
        self.state.apply(
            classified.statements(),
            &[],
            true,
            C::FAILED_COMMIT_ENDS_TRANSACTION,
        );
        let Some(replica) = self.replicas.get_mut(i).and_then(Option::as_mut) else {
            self.state.unknown = true;
            return Err(connection_error(
                diesel::result::ConnectionError::BadConnection(
                    "the replica of this read-only transaction is gone".into(),
                ),
            ));
        };
        let Physical { conn, watch, .. } = replica;
        let _call = watch.call(None);
        let result = <C as LoadConnection<B>>::load(conn, source);
        if let Err(e) = &result {
            if crate::backend::is_connection_error(e) {
                self.state.unknown = true;
            }
        }
        result
    }
}

impl<C: RoutedBackend> R2D2Connection for RoutedConnection<C> {
    /// Pings the primary if it is open. Replica connections are not pinned: a read on a dead
    /// one is sent to the primary anyway, and pinging a frozen server would hang the checkout.
    /// Replica connections to replicas that are down are closed here.
    fn ping(&mut self) -> QueryResult<()> {
        let primary_position = self.db.primary_position();
        let primary_position = primary_position.as_ref();
        for i in 0..self.replicas.len() {
            if self.replicas[i].is_some()
                && self.db.replicas.usability(i, primary_position)
                    == crate::routing::Usability::Down
            {
                self.replicas[i] = None;
                if self.current_replica == Some(i) {
                    self.current_replica = None;
                }
            }
        }
        match self.primary.as_mut() {
            Some(p) => p.ping(),
            None => Ok(()),
        }
    }

    fn is_broken(&mut self) -> bool {
        for i in 0..self.replicas.len() {
            if self.replicas[i].as_mut().is_some_and(|c| c.is_broken()) {
                self.replicas[i] = None;
                if self.current_replica == Some(i) {
                    self.current_replica = None;
                }
            }
        }
        // An open transaction of Diesel's manager is judged by the primary (a test transaction
        // is fine, any other is broken); one begun by hand is always broken.
        self.state.unknown
            || self.in_hand_written_transaction()
            || self.primary.as_mut().is_some_and(|p| p.is_broken())
    }
}

impl<C> MigrationConnection for RoutedConnection<C>
where
    C: RoutedBackend + MigrationConnection,
{
    /// Creates the migrations table on the primary, and keeps the rest of the checkout on the
    /// primary: the harness reads that table right after, and a replica may not have it yet.
    fn setup(&mut self) -> QueryResult<usize> {
        self.stick_to_primary();
        self.run_on_primary(&Classified::write(), |p| p.setup())
    }
}

impl<C, Changes, Output> UpdateAndFetchResults<Changes, Output> for RoutedConnection<C>
where
    C: RoutedBackend + UpdateAndFetchResults<Changes, Output>,
{
    /// `save_changes`: the update and the read back both run on the primary.
    fn update_and_fetch(&mut self, changeset: Changes) -> QueryResult<Output> {
        self.run_on_primary(&Classified::write(), |p| p.update_and_fetch(changeset))
    }
}

/// The transaction manager runs on the routed connection itself (its state is the
/// primary's), so `conn.transaction(..)` works as on a plain connection.
#[allow(dead_code)]
fn _assert_transaction_manager<C: RoutedBackend>()
where
    AnsiTransactionManager: TransactionManager<RoutedConnection<C>>,
{
}
