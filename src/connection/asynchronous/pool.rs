//! Routed async connections from the cluster: one at a time ([`Cluster::get_async`]) or
//! pooled by bb8 or deadpool, through diesel-async's pool manager.
//!
//! [`Cluster::get_async`]: crate::Cluster::get_async

use super::AsyncRoutedConnection;
use crate::backend::AsyncRoutedBackend;
use crate::Cluster;

/// diesel-async's pool manager of routed connections (PostgreSQL and MySQL clusters).
#[cfg(any(feature = "bb8", feature = "deadpool"))]
type Manager<C> =
    diesel_async::pooled_connection::AsyncDieselConnectionManager<AsyncRoutedConnection<C>>;

/// The pool manager of routed async connections to primary `name`: diesel-async's manager,
/// opening connections through the cluster; no ping at checkout (as the sync pools: a hung
/// primary would hold every checkout, also of work that only reads), the connection's own
/// state decides whether it goes back to the pool.
#[cfg(any(feature = "bb8", feature = "deadpool"))]
fn manager<C: AsyncRoutedBackend>(cluster: &Cluster<C>, name: &str) -> crate::Result<Manager<C>> {
    use diesel_async::pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
    };
    // fails now for an unknown name, not at the first checkout
    cluster.primary_state(name)?;
    let cluster = cluster.clone();
    let mut config = ManagerConfig::default();
    config.recycling_method =
        RecyclingMethod::CustomFunction(Box::new(|conn: &mut AsyncRoutedConnection<C>| {
            Box::pin(async move {
                conn.last = None;
                Ok(())
            })
        }));
    config.custom_setup = Box::new(move |name| {
        let cluster = cluster.clone();
        let name = name.to_owned();
        Box::pin(async move {
            cluster
                .get_async(&name)
                .await
                .map_err(|e| diesel::result::ConnectionError::BadConnection(e.to_string()))
        })
    });
    Ok(AsyncDieselConnectionManager::new_with_config(name, config))
}

impl<C: AsyncRoutedBackend> Cluster<C> {
    /// A bb8 pool of routed async connections to primary `name` (feature `bb8`), with the
    /// database's pool settings (`pool_size`, `min_idle`, `connection_timeout`,
    /// `idle_timeout`, `max_lifetime`). A connection whose call was cancelled, or that still
    /// holds a transaction or session state, is dropped instead of going back.
    #[cfg(feature = "bb8")]
    pub fn bb8_pool(
        &self,
        name: &str,
    ) -> crate::Result<diesel_async::pooled_connection::bb8::Pool<AsyncRoutedConnection<C>>>
    where
        Manager<C>: bb8::ManageConnection,
    {
        let db = self.primary_state(name)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(crate::Error::NoRuntime {
                what: "Cluster::bb8_pool",
            });
        }
        let (size, pool) = db.pool_settings();
        Ok(bb8::Pool::builder()
            .max_size(size)
            .min_idle(Some(pool.min_idle))
            .connection_timeout(pool.connection_timeout)
            .idle_timeout(pool.idle_timeout)
            .max_lifetime(pool.max_lifetime)
            .test_on_check_out(true) // the recycling check: state only, no round trip
            .build_unchecked(manager(self, name)?))
    }

    /// A deadpool pool of routed async connections to primary `name` (feature `deadpool`),
    /// with the database's `pool_size` and `connection_timeout` (deadpool's wait timeout;
    /// it has no idle or lifetime limits of its own). A connection whose call was
    /// cancelled, or that still holds a transaction or session state, is dropped instead of
    /// being recycled.
    #[cfg(feature = "deadpool")]
    pub fn deadpool_pool(
        &self,
        name: &str,
    ) -> crate::Result<diesel_async::pooled_connection::deadpool::Pool<AsyncRoutedConnection<C>>>
    where
        Manager<C>: deadpool::managed::Manager,
    {
        let db = self.primary_state(name)?;
        let (size, pool) = db.pool_settings();
        diesel_async::pooled_connection::deadpool::Pool::builder(manager(self, name)?)
            .max_size(size as usize)
            .wait_timeout(Some(pool.connection_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            // (fails only without a runtime, which is set)
            .map_err(|e| crate::Error::Query {
                database: name.to_owned(),
                source: diesel::result::Error::QueryBuilderError(e.to_string().into()),
            })
    }

    /// A routed async connection to primary `name` and its replicas (feature `async`, for
    /// `postgres` and `mysql` clusters), outside any pool: its servers are connected on
    /// first use, and closed when it drops. Use it inside a
    /// [`task::scope`](crate::task::scope) or another async scope.
    pub async fn get_async(&self, name: &str) -> crate::Result<AsyncRoutedConnection<C>> {
        let db = self.primary_state(name)?;
        Ok(AsyncRoutedConnection::new(db))
    }
}
