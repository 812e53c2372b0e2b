//! Worker jobs under a consistency token, after GitLab's `data_consistency`.
//!
//! The code that enqueues a job stores [`Cluster::token`] in the payload; the worker runs the
//! job with [`Cluster::run_job`] and a policy:
//!
//! * [`DataConsistency::Always`]: every read on the primary;
//! * [`DataConsistency::Sticky`]: reads on a replica that has caught up with the token, else on
//!   the primary;
//! * [`DataConsistency::Delayed`]: wait up to a bound for a replica to catch up; if none has,
//!   return [`JobDelayed`] so the job system can retry the job later, when a replica will
//!   serve it.
//!
//! Every job starts with a clean pin and consistency state and leaves nothing behind, so
//! nothing leaks into the next job on the same worker thread.

use std::time::{Duration, Instant};

use crate::backend::RoutedBackend;
use crate::cluster::Cluster;
use crate::consistency::{scope, Consistency, ConsistencyToken, Position};

/// How a job's reads relate to its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataConsistency {
    /// Every read on the primary.
    Always,
    /// Reads on a replica that has replayed the token, else on the primary.
    Sticky,
    /// Wait up to this long for a replica to replay the token; if none has, the job is not run
    /// and [`JobDelayed`] says so (retry it later).
    Delayed(Duration),
}

/// A `Delayed` job whose token no replica has replayed yet: retry it later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no replica of `{database}` has replayed position {position} yet (waited {waited:?}): retry the job later")]
#[non_exhaustive]
pub struct JobDelayed {
    /// The database whose replicas are behind.
    pub database: String,
    /// The position they have not reached.
    pub position: Position,
    /// How long the job waited.
    pub waited: Duration,
}

impl<C: RoutedBackend> Cluster<C> {
    /// Runs `job` under `token` with the `policy`, in a clean pin and consistency state that
    /// is cleared afterwards (also on panic). See the [module docs](crate::job).
    ///
    /// ```no_run
    /// # use diesel_sharding::{Cluster, DataConsistency};
    /// # fn work(cluster: &Cluster<diesel::pg::PgConnection>, payload_token: &str) {
    /// // the enqueuer stored `cluster.token().to_string()` in the job's payload
    /// let token = cluster.parse_token(payload_token).unwrap_or_default();
    /// match cluster.run_job(&token, DataConsistency::Delayed(std::time::Duration::from_secs(1)), || {
    ///     // ... reads here see what the enqueuer had written ...
    /// }) {
    ///     Ok(()) => {}
    ///     Err(delayed) => { /* no replica has caught up: retry the job later */ let _ = delayed; }
    /// }
    /// # }
    /// ```
    pub fn run_job<R>(
        &self,
        token: &ConsistencyToken,
        policy: DataConsistency,
        job: impl FnOnce() -> R,
    ) -> Result<R, JobDelayed> {
        if let DataConsistency::Delayed(bound) = policy {
            self.wait_for_replicas(token, bound)?;
        }
        let positions = self.positions_of(token);
        // one job scope: clean pin and mode, the token's positions, nothing left behind
        let _scope = scope::enter(positions, scope::ScopeKind::Job);
        Ok(match policy {
            DataConsistency::Always => crate::pin::use_primary(job),
            _ => {
                // a job honours its token even where reads are eventual or pinned by time
                let _mode = match self.configured_mode() {
                    Consistency::Causal | Consistency::Strong => None,
                    _ => Some(scope::set_mode(Consistency::ReadYourWrites)),
                };
                job()
            }
        })
    }

    /// Waits until, for every database of the token, some replica has replayed its position.
    fn wait_for_replicas(
        &self,
        token: &ConsistencyToken,
        bound: Duration,
    ) -> Result<(), JobDelayed> {
        let start = Instant::now();
        for (name, position) in token.positions() {
            let Ok(mut conn) = self.get(name) else {
                continue;
            }; // unknown: warned and ignored
            loop {
                if conn.has_replica_at(&position) {
                    break;
                }
                if start.elapsed() >= bound {
                    return Err(JobDelayed {
                        database: name.to_owned(),
                        position,
                        waited: start.elapsed(),
                    });
                }
                std::thread::sleep(
                    Duration::from_millis(5).min(bound.saturating_sub(start.elapsed())),
                );
            }
        }
        Ok(())
    }
}
