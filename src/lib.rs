//! Read/write splitting, consistency and sharding for [Diesel](https://diesel.rs).
//!
//! Applications outgrow one database server: reads should go to replicas, writes to the
//! primary, and replication lag must never show a user stale data. `diesel-sharding` puts a
//! routed connection behind an r2d2 pool. Diesel code runs on it unchanged; each statement goes
//! where it must:
//!
//! * writes (`execute`, `INSERT`/`UPDATE`/`DELETE` also with `RETURNING`, DDL), everything
//!   inside a transaction, locking reads and reads calling write functions: the **primary**;
//! * every other read: a **replica**, chosen by the read strategy among healthy replicas;
//! * reads on a thread that wrote within `pinning.seconds`, or is [pinned](pin): the primary.
//!
//! On PostgreSQL the router also tracks WAL positions: a read goes to a replica only once it
//! has replayed what the reader must see ([`consistency`]: read-your-writes by default,
//! causal, strong; [`ConsistencyToken`]s carry that across requests and jobs: in cookies or
//! headers with the `web` layer (feature `tower`), under a key in a shared store with
//! [`stick`], in job payloads with [`JobPayload`]). Models spread over shard groups with
//! `#[derive(ShardedModel)]` ([`sharding`]).
//!
//! The topology may change under a running process: a replica that is promoted takes no
//! reads, a primary that fails over is reconnected to (and, on PostgreSQL, positions of
//! the old timeline no longer let a replica serve a read), and [`Cluster::reload`] applies
//! new replicas, weights, lag limits and pool sizes. Counters go to the [`metrics`] facade.
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use diesel::prelude::*;
//! use diesel::sqlite::SqliteConnection;
//! use diesel_sharding::{Cluster, RouteReason, Settings};
//!
//! # let dir = tempfile::tempdir()?;
//! # let app = dir.path().join("app.sqlite");
//! # let app = app.display();
//! let settings = Settings::from_toml_str(&format!(r#"
//!     [pinning]
//!     seconds = 0
//!
//!     [databases.default]
//!     url = "{app}"
//!
//!     [databases.default_replica]
//!     url = "{app}"
//!     primary = "default"
//! "#))?;
//! let cluster = Cluster::<SqliteConnection>::new(settings)?;
//! let mut conn = cluster.pool("default")?.get()?;
//! diesel::sql_query("CREATE TABLE t (id INTEGER PRIMARY KEY)").execute(&mut conn)?;
//! assert_eq!(conn.last_route().unwrap().reason, RouteReason::Write);
//! diesel::sql_query("SELECT id FROM t").execute(&mut conn)?; // `execute` always writes
//! let ids: Vec<i32> = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
//!     .load(&mut conn)?;
//! assert_eq!(ids, [1]);
//! assert_eq!(conn.last_route().unwrap().reason, RouteReason::Replica);
//! # Ok(()) }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate self as diesel_sharding;

#[cfg(not(any(feature = "postgres", feature = "sqlite", feature = "mysql")))]
compile_error!(
    "diesel-sharding routes no backend: enable the `postgres` or the `sqlite` feature \
     (`default-features = false` turned both off)"
);

mod backend;
mod cluster;
mod connection;
pub mod consistency;
mod error;
pub mod job;
mod manager;
pub mod metrics;
pub mod pin;
mod primary;
mod routing;
mod settings;
pub mod sharding;
mod stats;
pub mod stick;
#[cfg(feature = "async")]
pub mod task;
#[cfg(feature = "tower")]
pub mod web;

#[cfg(feature = "async")]
pub use crate::backend::AsyncRoutedBackend;
pub use crate::backend::{RoutedBackend, RoutedLoad};
pub use crate::cluster::{Cluster, Pool, PooledConnection, Server};
#[cfg(all(feature = "async", any(feature = "postgres", feature = "mysql")))]
pub use crate::connection::asynchronous::AsyncRoutedConnection;
pub use crate::connection::{Route, RoutedConnection};

/// The routed PostgreSQL connection, for signatures that named `PgConnection`: a function
/// taking `&mut RoutedPgConnection` accepts `&mut pooled` (see the README's "Moving an
/// application").
#[cfg(feature = "postgres")]
pub type RoutedPgConnection = RoutedConnection<diesel::pg::PgConnection>;

/// The routed SQLite connection, for signatures that named `SqliteConnection`.
#[cfg(feature = "sqlite")]
pub type RoutedSqliteConnection = RoutedConnection<diesel::sqlite::SqliteConnection>;

/// The routed MySQL/MariaDB connection (feature `mysql`).
#[cfg(feature = "mysql")]
pub type RoutedMysqlConnection = RoutedConnection<diesel::mysql::MysqlConnection>;

/// The routed async PostgreSQL connection (features `async` and `postgres`): used as
/// diesel-async's `AsyncPgConnection`.
#[cfg(all(feature = "async", feature = "postgres"))]
pub type AsyncRoutedPgConnection = AsyncRoutedConnection<diesel::pg::PgConnection>;

/// The routed async MySQL/MariaDB connection (features `async` and `mysql`): used as
/// diesel-async's `AsyncMysqlConnection`.
#[cfg(all(feature = "async", feature = "mysql"))]
pub type AsyncRoutedMysqlConnection = AsyncRoutedConnection<diesel::mysql::MysqlConnection>;
pub use crate::consistency::{
    Consistency, ConsistencyToken, Granularity, GtidSet, Position, PositionError, TokenError,
};
pub use crate::error::{Error, PositionUnknown, Result, SettingsError};
pub use crate::job::{DataConsistency, JobDelayed, JobPayload};
pub use crate::manager::RoutedConnectionManager;
pub use crate::routing::RouteReason;
pub use crate::settings::{
    DatabaseSettings, ReadStrategy, Settings, ShardGroupSettings, UnknownFunctions,
    DEFAULT_PINNING_SECONDS, DEFAULT_POOL_SIZE, DEFAULT_REPLICA_RETRY,
};
pub use crate::sharding::{ShardKey, ShardedModel};
pub use crate::stats::{DatabaseStats, Stats};

/// Internals the crate's own benchmarks measure (feature `bench-internals`): not part of the
/// API, no stability promise.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod __bench {
    use crate::backend::RoutedBackend;
    use crate::routing::{Classifier, KindCache};

    /// The routed connection's classification path: cache, render, lex.
    #[derive(Debug, Default)]
    pub struct CachedClassifier {
        cache: KindCache,
        classifier: Classifier,
    }

    impl CachedClassifier {
        /// Classifies `query` as the routed connection does.
        pub fn kind_of<C, T>(&mut self, query: &T) -> impl std::fmt::Debug
        where
            C: RoutedBackend,
            T: diesel::query_builder::QueryFragment<C::Backend> + diesel::query_builder::QueryId,
        {
            self.cache.kind_of::<C, T>(&self.classifier, query)
        }

        /// Classifies SQL text: the lexer alone, no cache.
        pub fn classify(&self, sql: &str) -> impl std::fmt::Debug {
            self.classifier.classify(sql)
        }
    }
}

/// The r2d2 crate, whose `Pool` and `PooledConnection` the cluster hands out.
pub use r2d2;

/// What most users import: `use diesel_sharding::prelude::*;`.
pub mod prelude {
    pub use crate::pin::{pin_this_thread, this_thread_is_pinned, unpin_this_thread, use_primary};
    pub use crate::{
        Cluster, Consistency, ConsistencyToken, DatabaseSettings, ReadStrategy, RouteReason,
        Settings, ShardedModel,
    };
}
