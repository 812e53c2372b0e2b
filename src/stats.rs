//! Counters of where statements ran, per database ([`Cluster::stats`](crate::Cluster::stats)).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::routing::RouteReason;

/// Live counters of one primary and its replicas.
#[derive(Debug)]
pub(crate) struct Counters {
    by_reason: [AtomicU64; RouteReason::ALL.len()],
    replica_failures: AtomicU64,
    failed: AtomicU64,
    /// The same, and more, for the `metrics` facade (feature `metrics`).
    pub(crate) meters: crate::metrics::Meters,
}

impl Counters {
    pub(crate) fn new(database: &str) -> Self {
        Counters {
            by_reason: std::array::from_fn(|_| AtomicU64::new(0)),
            replica_failures: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            meters: crate::metrics::Meters::new(database),
        }
    }

    /// A routed statement returned an error (it is counted by its route too).
    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.meters.error();
    }

    /// Counts a routed statement by its reason (the replica that ran it counts it too).
    pub(crate) fn count(&self, reason: RouteReason, on_replica: bool) {
        self.by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
        if !on_replica {
            self.meters.statement(reason);
        }
    }

    pub(crate) fn replica_failed(&self) {
        self.replica_failures.fetch_add(1, Ordering::Relaxed);
        self.meters.replica_failure();
    }

    /// The counters, with each replica's `(name, statements)`.
    pub(crate) fn snapshot(&self, replicas: impl Iterator<Item = (String, u64)>) -> DatabaseStats {
        let by_reason: BTreeMap<RouteReason, u64> = RouteReason::ALL
            .iter()
            .map(|r| (*r, self.by_reason[r.index()].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let replica = by_reason.get(&RouteReason::Replica).copied().unwrap_or(0);
        let primary = by_reason.values().sum::<u64>() - replica;
        DatabaseStats {
            primary,
            replica,
            by_reason,
            replicas: replicas.fold(BTreeMap::new(), |mut all, (name, n)| {
                // a replica whose URL a reload changed: both slots under its name
                *all.entry(name).or_insert(0) += n;
                all
            }),
            replica_failures: self.replica_failures.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of where statements ran, for every primary of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Per primary, by name.
    pub databases: BTreeMap<String, DatabaseStats>,
}

impl Stats {
    /// The counters of one primary (and its replicas).
    pub fn database(&self, name: &str) -> Option<&DatabaseStats> {
        self.databases.get(name)
    }
}

/// Where the statements of one primary's pool ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatabaseStats {
    /// Statements that ran on the primary.
    pub primary: u64,
    /// Statements that ran on a replica.
    pub replica: u64,
    /// Statements by the reason of their route (only reasons that occurred).
    pub by_reason: BTreeMap<RouteReason, u64>,
    /// Statements per replica, by replica name.
    pub replicas: BTreeMap<String, u64>,
    /// Replica connections that failed to open or broke.
    pub replica_failures: u64,
    /// Statements that returned an error (each is also counted where it ran).
    pub failed: u64,
}

impl DatabaseStats {
    /// How many statements were routed for `reason`.
    pub fn reason(&self, reason: RouteReason) -> u64 {
        self.by_reason.get(&reason).copied().unwrap_or(0)
    }
}
