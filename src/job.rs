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

/// A job's payload with the token of the code that enqueued it, for job queues that store
/// a serialisable payload (serde: the token travels as its string form, signed when the
/// cluster has a `token_secret`). Make one with [`Cluster::job_payload`] where the job is
/// enqueued, and run it with [`Cluster::run_payload`] in the worker.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use diesel_sharding::{Cluster, DataConsistency, JobPayload, Settings};
/// use diesel::sqlite::SqliteConnection;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct SendWelcome {
///     user_id: i64,
/// }
///
/// let cluster: Cluster<SqliteConnection> =
///     Cluster::new(Settings::from_toml_str("[databases.default]\nurl = \":memory:\"")?)?;
/// // where the job is enqueued (after the user's row was written):
/// let payload = cluster.job_payload(SendWelcome { user_id: 42 });
/// let stored = toml::to_string(&payload)?; // or JSON, or the queue's own format
/// // in the worker:
/// let payload: JobPayload<SendWelcome> = toml::from_str(&stored)?;
/// let sent = cluster.run_payload(&payload, DataConsistency::Sticky, |job| job.user_id)?;
/// assert_eq!(sent, 42);
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "sqlite"))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct JobPayload<T> {
    /// What the job must see: [`Cluster::token`] where it was enqueued.
    pub token: ConsistencyToken,
    /// The job's own data.
    pub job: T,
}

impl<T> JobPayload<T> {
    /// `job` with `token` (usually [`Cluster::job_payload`] takes the token itself).
    pub fn new(token: ConsistencyToken, job: T) -> Self {
        JobPayload { token, job }
    }
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

/// Where a `Delayed` job's wait stands after one check.
pub(crate) enum Wait {
    /// Every database of the token has a replica at its position.
    Done,
    /// Not yet: check again after this pause.
    Again(Duration),
}

impl<C: RoutedBackend> Cluster<C> {
    /// Runs `job` under `token` with the `policy`, in a clean pin and consistency state that
    /// is cleared afterwards (also on panic). See the [module docs](crate::job).
    ///
    /// ```no_run
    /// # use diesel_sharding::{Cluster, DataConsistency};
    /// # #[cfg(feature = "postgres")]
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
                let _mode = self.job_mode().map(scope::set_mode);
                job()
            }
        })
    }

    /// `job` with this scope's [`token`](Self::token): what the job must see.
    pub fn job_payload<T>(&self, job: T) -> JobPayload<T> {
        JobPayload::new(self.token(), job)
    }

    /// Runs `f` on the payload's job under its token, as [`run_job`](Self::run_job) does. A
    /// token signed with another secret (or not signed, where the cluster has one) is
    /// ignored with a warning: the job then reads as one without a token.
    pub fn run_payload<T, R>(
        &self,
        payload: &JobPayload<T>,
        policy: DataConsistency,
        f: impl FnOnce(&T) -> R,
    ) -> Result<R, JobDelayed> {
        self.run_job(&payload.token, policy, || f(&payload.job))
    }

    /// The mode a job reads in, if not the configured one: a job honours its token even
    /// where reads are eventual or pinned by time.
    pub(crate) fn job_mode(&self) -> Option<Consistency> {
        match self.configured_mode() {
            Consistency::Causal | Consistency::Strong => None,
            _ => Some(Consistency::ReadYourWrites),
        }
    }

    /// [`run_job`](Self::run_job) for a future (feature `async`): the job's scope follows
    /// the future across its `.await`s and threads (see [`crate::task`]), and a `Delayed`
    /// job waits without blocking the runtime between its checks.
    ///
    /// ```
    /// # #[cfg(feature = "sqlite")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use diesel_sharding::{Cluster, ConsistencyToken, DataConsistency, Settings};
    /// use diesel::sqlite::SqliteConnection;
    ///
    /// let cluster: Cluster<SqliteConnection> =
    ///     Cluster::new(Settings::from_toml_str("[databases.default]\nurl = \":memory:\"")?)?;
    /// let token: ConsistencyToken = "".parse()?; // from the job's payload
    /// let n = cluster
    ///     .run_job_async(&token, DataConsistency::Sticky, async { 42 })
    ///     .await?;
    /// assert_eq!(n, 42);
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "sqlite"))]
    /// # fn main() {}
    /// ```
    #[cfg(feature = "async")]
    pub async fn run_job_async<F: std::future::Future>(
        &self,
        token: &ConsistencyToken,
        policy: DataConsistency,
        job: F,
    ) -> Result<F::Output, JobDelayed> {
        if let DataConsistency::Delayed(bound) = policy {
            let start = Instant::now();
            loop {
                match self.check_replicas(token, start, bound)? {
                    Wait::Done => break,
                    Wait::Again(pause) => tokio::time::sleep(pause).await,
                }
            }
        }
        let positions = self.positions_of(token);
        let (pin, mode) = match policy {
            DataConsistency::Always => (true, None),
            _ => (false, self.job_mode()),
        };
        Ok(crate::task::Scoped::new(job, scope::Layer::job_with(positions, pin, mode)).await)
    }

    /// Waits until, for every database of the token, some replica has replayed its position.
    fn wait_for_replicas(
        &self,
        token: &ConsistencyToken,
        bound: Duration,
    ) -> Result<(), JobDelayed> {
        let start = Instant::now();
        loop {
            match self.check_replicas(token, start, bound)? {
                Wait::Done => return Ok(()),
                Wait::Again(pause) => std::thread::sleep(pause),
            }
        }
    }

    /// One check of a `Delayed` job's wait (started at `start`, for at most `bound`).
    pub(crate) fn check_replicas(
        &self,
        token: &ConsistencyToken,
        start: Instant,
        bound: Duration,
    ) -> Result<Wait, JobDelayed> {
        for (name, position) in token.positions() {
            let Ok(mut conn) = self.get(name) else {
                continue; // unknown: warned and ignored
            };
            if conn.has_replica_at(&position) {
                continue;
            }
            if start.elapsed() >= bound {
                return Err(JobDelayed {
                    database: name.to_owned(),
                    position,
                    waited: start.elapsed(),
                });
            }
            return Ok(Wait::Again(
                Duration::from_millis(5).min(bound.saturating_sub(start.elapsed())),
            ));
        }
        Ok(Wait::Done)
    }
}
