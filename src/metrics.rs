//! The router's metrics through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): the application installs the exporter it wants (Prometheus, StatsD, ...)
//! **before** it builds its [`Cluster`](crate::Cluster): the handles are registered when
//! the cluster is built, so that counting a statement costs an atomic add, not a lookup.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `diesel_sharding_statements_total` | counter | `database`, `server`, `reason` | routed statements, by the server that ran them and why ([`RouteReason`] as in the stats) |
//! | `diesel_sharding_statement_errors_total` | counter | `database` | routed statements that returned an error |
//! | `diesel_sharding_replica_failures_total` | counter | `database` | replica connections lost or calls cut (the read went to the primary) |
//! | `diesel_sharding_position_queries_total` | counter | `database` | primary position reads on behalf of reads, writes and tokens |
//! | `diesel_sharding_replica_waits_total` | counter | `database` | waits on a replica's server for a position (`replica_wait`) |
//! | `diesel_sharding_replica_lag_seconds` | gauge | `database`, `replica` | the replica's lag in time at the monitor's last probe |
//! | `diesel_sharding_replica_lag_bytes` | gauge | `database`, `replica` | the primary's last known position minus the replica's replay position (PostgreSQL) |
//! | `diesel_sharding_replica_up` | gauge | `database`, `replica` | 1 while the replica takes reads, 0 while it is skipped (down) |
//! | `diesel_sharding_pool_connections` | gauge | `database` | the r2d2 pool's open connections, at the last checkout |
//! | `diesel_sharding_pool_idle_connections` | gauge | `database` | ... of which idle |
//!
//! Without the feature every call here is empty and compiles away.

use std::time::Duration;

use crate::routing::RouteReason;

/// One primary's metric handles.
#[derive(Debug, Default)]
pub(crate) struct Meters {
    #[cfg(feature = "metrics")]
    handles: Option<Box<Handles>>,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Handles {
    /// Per reason, statements the primary ran.
    on_primary: Vec<metrics::Counter>,
    errors: metrics::Counter,
    replica_failures: metrics::Counter,
    position_queries: metrics::Counter,
    replica_waits: metrics::Counter,
    pool_connections: metrics::Gauge,
    pool_idle: metrics::Gauge,
}

impl Meters {
    /// The handles of primary `database`, registered with the installed recorder (its
    /// replicas' are [`ReplicaMeters`]).
    pub(crate) fn new(database: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let db = database.to_owned();
            let by_db = |name: &'static str| metrics::counter!(name, "database" => db.clone());
            let handles = Handles {
                on_primary: RouteReason::ALL
                    .iter()
                    .map(|reason| {
                        metrics::counter!(
                            "diesel_sharding_statements_total",
                            "database" => db.clone(),
                            "server" => db.clone(),
                            "reason" => reason.as_str()
                        )
                    })
                    .collect(),
                errors: by_db("diesel_sharding_statement_errors_total"),
                replica_failures: by_db("diesel_sharding_replica_failures_total"),
                position_queries: by_db("diesel_sharding_position_queries_total"),
                replica_waits: by_db("diesel_sharding_replica_waits_total"),
                pool_connections: metrics::gauge!("diesel_sharding_pool_connections", "database" => db.clone()),
                pool_idle: metrics::gauge!("diesel_sharding_pool_idle_connections", "database" => db.clone()),
            };
            Meters {
                handles: Some(Box::new(handles)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = database;
            Meters {}
        }
    }

    /// A statement the primary ran.
    #[inline]
    pub(crate) fn statement(&self, reason: RouteReason) {
        #[cfg(feature = "metrics")]
        if let Some(c) = self
            .handles
            .as_ref()
            .and_then(|h| h.on_primary.get(reason.index()))
        {
            c.increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = reason;
    }

    #[inline]
    pub(crate) fn error(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.errors.increment(1);
        }
    }

    #[inline]
    pub(crate) fn replica_failure(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.replica_failures.increment(1);
        }
    }

    #[inline]
    pub(crate) fn position_query(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.position_queries.increment(1);
        }
    }

    #[inline]
    pub(crate) fn replica_wait(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.replica_waits.increment(1);
        }
    }

    /// The pool's state at a checkout.
    #[cfg(feature = "metrics")]
    pub(crate) fn pool(&self, connections: u32, idle: u32) {
        if let Some(h) = &self.handles {
            h.pool_connections.set(f64::from(connections));
            h.pool_idle.set(f64::from(idle));
        }
    }
}

/// One replica's metric handles.
#[derive(Debug, Default)]
pub(crate) struct ReplicaMeters {
    #[cfg(feature = "metrics")]
    handles: Option<Box<ReplicaHandles>>,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct ReplicaHandles {
    statements: metrics::Counter,
    lag_seconds: metrics::Gauge,
    lag_bytes: metrics::Gauge,
    up: metrics::Gauge,
}

impl ReplicaMeters {
    /// The handles of replica `replica` of `database`, registered with the installed
    /// recorder; it counts as up.
    pub(crate) fn new(database: &str, replica: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let (db, r) = (database.to_owned(), replica.to_owned());
            let gauge = |name: &'static str| metrics::gauge!(name, "database" => db.clone(), "replica" => r.clone());
            let handles = ReplicaHandles {
                statements: metrics::counter!(
                    "diesel_sharding_statements_total",
                    "database" => db.clone(),
                    "server" => r.clone(),
                    "reason" => RouteReason::Replica.as_str()
                ),
                lag_seconds: gauge("diesel_sharding_replica_lag_seconds"),
                lag_bytes: gauge("diesel_sharding_replica_lag_bytes"),
                up: gauge("diesel_sharding_replica_up"),
            };
            handles.up.set(1.0);
            ReplicaMeters {
                handles: Some(Box::new(handles)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (database, replica);
            ReplicaMeters {}
        }
    }

    /// A statement the replica ran.
    #[inline]
    pub(crate) fn statement(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.statements.increment(1);
        }
    }

    /// The replica's lag at a probe: in time, and in bytes where known.
    pub(crate) fn lag(&self, lag: Duration, bytes: Option<u64>) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.lag_seconds.set(lag.as_secs_f64());
            if let Some(b) = bytes {
                h.lag_bytes.set(b as f64);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (lag, bytes);
    }

    /// The replica takes reads (`true`) or is skipped.
    pub(crate) fn up(&self, up: bool) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.up.set(if up { 1.0 } else { 0.0 });
        }
        #[cfg(not(feature = "metrics"))]
        let _ = up;
    }
}
