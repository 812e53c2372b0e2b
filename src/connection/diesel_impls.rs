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

use super::{connection_error, open_primary, RoutedConnection};
use crate::backend::{ReplicaLoad, RoutedBackend, RoutedLoad};
use crate::consistency::{scope, Consistency};
use crate::database::Database;
use crate::pin::PinStatus;
use crate::routing::{decide, kind_writes, Decision, Facts, RouteReason};

impl<C: RoutedBackend> ConnectionSealed for RoutedConnection<C> {}

impl<C: RoutedBackend> Connection for RoutedConnection<C> {
    type Backend = C::Backend;
    type TransactionManager = AnsiTransactionManager;

    /// A routed connection to one primary without replicas. Use a
    /// [`Cluster`](crate::Cluster) for replicas.
    fn establish(database_url: &str) -> ConnectionResult<Self> {
        let db = Database::standalone(database_url, C::HAS_POSITIONS);
        let mut conn = RoutedConnection::new(Arc::new(db));
        open_primary(&mut conn.primary, &conn.db, &conn.instrumentation, None)?;
        Ok(conn)
    }

    /// Always the primary.
    fn execute_returning_count<T>(&mut self, source: &T) -> QueryResult<usize>
    where
        T: QueryFragment<Self::Backend> + QueryId,
    {
        let written = if self.wants_tables() {
            let classified = self
                .kinds
                .classify::<C, T>(&self.db.classifier, source, true);
            Self::written_tables(&classified)
        } else {
            Vec::new()
        };
        self.write_on_primary(written, |p| p.execute_returning_count(source))
    }

    fn transaction_state(&mut self) -> &mut AnsiTransactionManager {
        match self.primary {
            Some(ref mut p) => p.transaction_state(),
            None => {
                // No primary connection means no transaction.
                self.placeholder_tm = AnsiTransactionManager::default();
                &mut self.placeholder_tm
            }
        }
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
            shared.install(conn);
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
        self.drop_dead_replica();
        self.settle_pending();
        let in_transaction = self.in_transaction();
        let classified =
            self.kinds
                .classify::<C, T>(&self.db.classifier, &source, self.wants_tables());
        let kind = classified.kind;
        let reads = self.db.read_tables(classified.tables.as_deref());
        let mode = self.db.mode();
        let pin = match crate::pin::status(self.db.id) {
            // the time window is mode `pin`; the other modes go by positions
            PinStatus::RecentWrite if mode != Consistency::Pin => PinStatus::Free,
            status => status,
        };
        let pin = if pin == PinStatus::Free && mode.uses_positions() && scope::pending(self.db.id) {
            // a committed write whose position is not known yet
            PinStatus::RecentWrite
        } else {
            pin
        };
        let decision = decide(Facts {
            in_transaction,
            session_on_primary: self.session_on_primary,
            kind,
            has_replicas: self.db.replicas.reads_from_replicas(),
            pin,
        });
        let (reason, source) = match decision {
            Decision::Primary(reason) => (reason, source),
            Decision::Replica => match self.choose_for_read(mode, reads) {
                Err(reason) => (reason, source),
                Ok(i) => {
                    self.db.routed(RouteReason::Replica, Some(i));
                    self.last = Some((RouteReason::Replica, Some(i)));
                    // later reads must not see older data, and a token taken now carries it
                    scope::observed(self.db.id, self.db.replicas.replay(i));
                    // Borrow only the `replicas` field: the fallback below uses others.
                    let Some(replica) = self.replicas[i].as_mut() else {
                        return Err(connection_error(
                            diesel::result::ConnectionError::BadConnection(
                                "replica connection vanished".into(),
                            ),
                        ));
                    };
                    match C::load_on_replica(replica, source) {
                        ReplicaLoad::Done(result) => return result,
                        ReplicaLoad::Retry(error, source) => {
                            self.dead_replica = Some(i);
                            self.db.replicas.mark_down(i);
                            self.db.counters.replica_failed();
                            tracing::warn!(
                                target: "diesel_sharding::route",
                                database = %self.db.name,
                                error = %error,
                                "replica connection broke: reading from the primary"
                            );
                            (RouteReason::Fallback, source)
                        }
                    }
                }
            },
        };
        let commits_a_write = kind_writes(kind) && !in_transaction;
        let primary = open_primary(
            &mut self.primary,
            &self.db,
            &self.instrumentation,
            self.cache_size,
        )
        .map_err(connection_error)?;
        // Bookkeeping below goes through fields only: the cursor borrows the primary.
        let written = Self::written_tables(&classified);
        let result = if commits_a_write && self.db.has_positions && mode.uses_positions() {
            let (result, position) = C::load_write(primary, source);
            if result.is_ok() {
                match position {
                    Some(pos) => self.db.wrote_at(pos, &written),
                    None => {
                        scope::write_pending(self.db.id);
                        self.position_pending = true;
                    }
                }
            }
            result
        } else {
            primary.load(source)
        };
        self.db.routed(reason, None);
        self.last = Some((reason, None));
        if kind_writes(kind) && result.is_ok() {
            if in_transaction {
                self.transaction_wrote = true;
                if written.is_empty() {
                    self.transaction_tables_unknown = true;
                } else {
                    self.transaction_tables.extend_from_slice(&written);
                }
            } else {
                // Autocommit: the statement has committed.
                self.db.wrote();
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
        let primary_position = self
            .db
            .primary_position
            .load(std::sync::atomic::Ordering::Relaxed);
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
        self.in_hand_written_transaction() || self.primary.as_mut().is_some_and(|p| p.is_broken())
    }
}

impl<C> MigrationConnection for RoutedConnection<C>
where
    C: RoutedBackend + MigrationConnection,
{
    /// Creates the migrations table on the primary, and keeps the rest of the checkout on the
    /// primary: the harness reads that table right after, and a replica may not have it yet.
    fn setup(&mut self) -> QueryResult<usize> {
        self.session_on_primary = true;
        self.write_on_primary(Vec::new(), |p| p.setup())
    }
}

impl<C, Changes, Output> UpdateAndFetchResults<Changes, Output> for RoutedConnection<C>
where
    C: RoutedBackend + UpdateAndFetchResults<Changes, Output>,
{
    /// `save_changes`: the update and the read back both run on the primary.
    fn update_and_fetch(&mut self, changeset: Changes) -> QueryResult<Output> {
        self.write_on_primary(Vec::new(), |p| p.update_and_fetch(changeset))
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
