//! The shared state of one primary: its URL, replicas, classifier and counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::routing::{Classifier, ReplicaSet, RouteReason};
use crate::settings::{PrimarySpec, SecretUrl};
use crate::stats::{Counters, DatabaseStats};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One primary with its replicas, shared by every connection of its pool.
#[derive(Debug)]
pub(crate) struct Database {
    /// Unique in the process: keys the thread-local write windows.
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) url: SecretUrl,
    pub(crate) replicas: ReplicaSet,
    pub(crate) classifier: Classifier,
    pub(crate) pin_window: Duration,
    pub(crate) counters: Counters,
}

impl Database {
    pub(crate) fn new(
        spec: &PrimarySpec,
        classifier: Classifier,
        pin_window: Duration,
        replica_retry: Duration,
        replica_url: fn(&str) -> String,
    ) -> Self {
        Database {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: spec.name.clone(),
            url: spec.url.clone(),
            replicas: ReplicaSet::new(
                &spec.replicas,
                spec.read_strategy,
                replica_retry,
                replica_url,
            ),
            classifier,
            pin_window,
            counters: Counters::new(spec.replicas.len()),
        }
    }

    /// A primary without replicas, for `RoutedConnection::establish`.
    pub(crate) fn standalone(url: &str) -> Self {
        let spec = PrimarySpec {
            name: "default".to_owned(),
            url: SecretUrl::new(url),
            pool_size: 1,
            read_strategy: crate::settings::ReadStrategy::PrimaryOnly,
            replicas: Vec::new(),
        };
        Database::new(
            &spec,
            Classifier::new(),
            Duration::from_secs(crate::settings::DEFAULT_PINNING_SECONDS),
            crate::settings::DEFAULT_REPLICA_RETRY,
            |u| u.to_owned(),
        )
    }

    /// Counts a routed statement and reports it to `tracing`.
    pub(crate) fn routed(&self, reason: RouteReason, replica: Option<usize>) {
        self.counters.count(reason, replica);
        let server = match replica.and_then(|i| self.replicas.get(i)) {
            Some(r) => r.name.as_str(),
            None => self.name.as_str(),
        };
        tracing::debug!(
            target: "diesel_sharding::route",
            database = %self.name,
            server,
            role = if replica.is_some() { "replica" } else { "primary" },
            reason = reason.as_str(),
            "routed statement"
        );
    }

    /// This thread committed a write here: pin its reads for the pin window.
    pub(crate) fn wrote(&self) {
        if !self.pin_window.is_zero() {
            crate::pin::record_write(self.id, Instant::now() + self.pin_window);
        }
    }

    pub(crate) fn stats(&self) -> DatabaseStats {
        self.counters
            .snapshot(self.replicas.iter().map(|r| r.name.as_str()))
    }
}
