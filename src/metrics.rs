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
    /// Per replica, the statements it ran.
    on_replica: Vec<metrics::Counter>,
    errors: metrics::Counter,
    replica_failures: metrics::Counter,
    position_queries: metrics::Counter,
    replica_waits: metrics::Counter,
    lag_seconds: Vec<metrics::Gauge>,
    lag_bytes: Vec<metrics::Gauge>,
    up: Vec<metrics::Gauge>,
    pool_connections: metrics::Gauge,
    pool_idle: metrics::Gauge,
}

impl Meters {
    /// The handles of primary `database` and its `replicas`, registered with the installed
    /// recorder.
    pub(crate) fn new(database: &str, replicas: &[String]) -> Self {
        #[cfg(feature = "metrics")]
        {
            let db = database.to_owned();
            let by_db = |name: &'static str| metrics::counter!(name, "database" => db.clone());
            let per_replica = |name: &'static str| -> Vec<metrics::Gauge> {
                replicas
                    .iter()
                    .map(
                        |r| metrics::gauge!(name, "database" => db.clone(), "replica" => r.clone()),
                    )
                    .collect()
            };
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
                on_replica: replicas
                    .iter()
                    .map(|r| {
                        metrics::counter!(
                            "diesel_sharding_statements_total",
                            "database" => db.clone(),
                            "server" => r.clone(),
                            "reason" => RouteReason::Replica.as_str()
                        )
                    })
                    .collect(),
                errors: by_db("diesel_sharding_statement_errors_total"),
                replica_failures: by_db("diesel_sharding_replica_failures_total"),
                position_queries: by_db("diesel_sharding_position_queries_total"),
                replica_waits: by_db("diesel_sharding_replica_waits_total"),
                lag_seconds: per_replica("diesel_sharding_replica_lag_seconds"),
                lag_bytes: per_replica("diesel_sharding_replica_lag_bytes"),
                up: per_replica("diesel_sharding_replica_up"),
                pool_connections: metrics::gauge!("diesel_sharding_pool_connections", "database" => db.clone()),
                pool_idle: metrics::gauge!("diesel_sharding_pool_idle_connections", "database" => db.clone()),
            };
            for up in &handles.up {
                up.set(1.0);
            }
            Meters {
                handles: Some(Box::new(handles)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (database, replicas);
            Meters {}
        }
    }

    #[inline]
    pub(crate) fn statement(&self, reason: RouteReason, replica: Option<usize>) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            let counter = match replica {
                Some(i) => h.on_replica.get(i),
                None => h.on_primary.get(reason.index()),
            };
            if let Some(c) = counter {
                c.increment(1);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (reason, replica);
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

    /// Replica `i`'s lag at a probe: in time, and in bytes where known.
    pub(crate) fn lag(&self, i: usize, lag: Duration, bytes: Option<u64>) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            if let Some(g) = h.lag_seconds.get(i) {
                g.set(lag.as_secs_f64());
            }
            if let (Some(g), Some(b)) = (h.lag_bytes.get(i), bytes) {
                g.set(b as f64);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (i, lag, bytes);
    }

    /// Replica `i` takes reads (`true`) or is skipped.
    pub(crate) fn up(&self, i: usize, up: bool) {
        #[cfg(feature = "metrics")]
        if let Some(g) = self.handles.as_ref().and_then(|h| h.up.get(i)) {
            g.set(if up { 1.0 } else { 0.0 });
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (i, up);
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
