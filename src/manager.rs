//! The r2d2 connection manager that hands out routed connections.

use std::marker::PhantomData;
use std::sync::Arc;

use diesel::r2d2::R2D2Connection;

use crate::backend::RoutedBackend;
use crate::connection::RoutedConnection;
use crate::primary::PrimaryState;

/// An r2d2 [`ManageConnection`](r2d2::ManageConnection) for one primary and its replicas.
///
/// Met this type in "expected `&mut PgConnection`, found `&mut PooledConnection<
/// RoutedConnectionManager<PgConnection>>`"? A function that takes the concrete connection
/// would bypass routing: make it take `&mut` [`RoutedPgConnection`](crate::RoutedPgConnection)
/// (which `&mut pooled` coerces to) or be generic over Diesel's connection traits; Diesel
/// traits implemented only for the routed connection itself (`COPY FROM`, custom type lookup)
/// take `&mut *pooled`. See the README's "Moving an application".
///
/// `connect` opens nothing: physical connections open on first use, so building a pool does
/// not need every server to be up, and a checkout that only reads never opens the primary.
pub struct RoutedConnectionManager<C> {
    db: Arc<PrimaryState>,
    _connection: PhantomData<fn() -> C>,
}

impl<C> RoutedConnectionManager<C> {
    pub(crate) fn new(db: Arc<PrimaryState>) -> Self {
        RoutedConnectionManager {
            db,
            _connection: PhantomData,
        }
    }
}

impl<C> std::fmt::Debug for RoutedConnectionManager<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedConnectionManager")
            .field("database", &self.db.name)
            .field("replicas", &self.db.replicas.len())
            .finish_non_exhaustive()
    }
}

impl<C: RoutedBackend> r2d2::ManageConnection for RoutedConnectionManager<C> {
    type Connection = RoutedConnection<C>;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Self::Connection, Self::Error> {
        Ok(RoutedConnection::new(self.db.clone()))
    }

    /// On checkout: forget the previous checkout's session state, ping what is open.
    fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        conn.checked_out();
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    /// On check-in (r2d2 has no other check-in hook): reset the session state the checkout
    /// left behind; a connection with a broken primary, an unfinished hand-written
    /// transaction or a state the router cannot know is discarded.
    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        std::thread::panicking() || !conn.check_in() || conn.is_broken()
    }
}
