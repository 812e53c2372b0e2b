//! A job that reads what its enqueuer wrote, on fang's PostgreSQL-backed queue: the job's
//! payload carries the enqueuer's consistency token ([`JobPayload`]), and the worker runs it
//! with [`Cluster::run_payload`] under a [`DataConsistency`] policy (shared by the example
//! and `tests/jobs_postgres.rs`).
//!
//! * `Sticky`: the job runs at once, on a replica that has the token, else on the primary.
//! * `Delayed`: the job waits up to half a second for a replica; if none has the token it
//!   fails with [`JobDelayed`](diesel_sharding::JobDelayed), and fang retries it a second
//!   later (the job's `backoff`), until a replica has caught up: the primary is spared.

use std::sync::OnceLock;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel_sharding::{Cluster, DataConsistency, JobPayload};
use fang::{
    typetag, FangError, Queue, Queueable, RetentionMode, Runnable, SleepParams, WorkerPool,
};

/// The cluster the workers read through (a job is deserialised by fang, not built by us).
pub(crate) static CLUSTER: OnceLock<Cluster<PgConnection>> = OnceLock::new();

/// The app's tables, and fang's (its migration for 0.10, with `gen_random_uuid()`).
pub(crate) const SCHEMA: &str = "
    CREATE TABLE users (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL);
    CREATE TABLE job_log (id BIGSERIAL PRIMARY KEY, job TEXT NOT NULL, found BIGINT NOT NULL,
        server TEXT NOT NULL);
    CREATE TYPE fang_task_state AS ENUM ('new', 'in_progress', 'failed', 'finished', 'retried');
    CREATE TABLE fang_tasks (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        metadata jsonb NOT NULL,
        error_message TEXT,
        state fang_task_state DEFAULT 'new' NOT NULL,
        task_type VARCHAR DEFAULT 'common' NOT NULL,
        uniq_hash CHAR(64),
        retries INTEGER DEFAULT 0 NOT NULL,
        scheduled_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
        created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW());
";

mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            name -> Text,
        }
    }
    diesel::table! {
        job_log (id) {
            id -> Int8,
            job -> Text,
            found -> Int8,
            server -> Text,
        }
    }
}
use schema::{job_log, users};

/// How a job waits for a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Policy {
    Sticky,
    Delayed,
}

/// The job's own data.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Welcome {
    pub(crate) user: String,
    pub(crate) policy: Policy,
}

/// The fang task: the data with the enqueuer's token.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct WelcomeJob {
    pub(crate) payload: JobPayload<Welcome>,
}

#[typetag::serde]
impl Runnable for WelcomeJob {
    fn run(&self, _queue: &dyn Queueable) -> Result<(), FangError> {
        let fail = |description: String| FangError { description };
        let cluster = CLUSTER.get().ok_or_else(|| fail("no cluster".into()))?;
        let policy = match self.payload.job.policy {
            Policy::Sticky => DataConsistency::Sticky,
            Policy::Delayed => DataConsistency::Delayed(Duration::from_millis(500)),
        };
        // the job's reads: the user its enqueuer wrote
        let read = cluster.run_payload(&self.payload, policy, |job| {
            let mut conn = cluster.get("default")?;
            let found: i64 = users::table
                .filter(users::name.eq(&job.user))
                .count()
                .get_result(&mut conn)
                .map_err(|source| diesel_sharding::Error::Query {
                    database: "default".into(),
                    source,
                })?;
            let server = conn.last_route().map(|r| r.server).unwrap_or_default();
            Ok::<_, diesel_sharding::Error>((found, server))
        });
        let (found, server) = match read {
            // no replica has the user yet: fang retries the job after `backoff`
            Err(delayed) => return Err(fail(delayed.to_string())),
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Ok(Ok(outcome)) => outcome,
        };
        let mut conn = cluster.get("default").map_err(|e| fail(e.to_string()))?;
        diesel::insert_into(job_log::table)
            .values((
                job_log::job.eq(&self.payload.job.user),
                job_log::found.eq(found),
                job_log::server.eq(&server),
            ))
            .execute(&mut conn)
            .map_err(|e| fail(e.to_string()))?;
        Ok(())
    }

    fn max_retries(&self) -> i32 {
        20
    }

    fn backoff(&self, _attempt: u32) -> u32 {
        1
    }
}

/// fang's queue on the primary (fang's own plain pool), and two workers polling it.
pub(crate) fn start_workers(primary_url: &str) -> Queue {
    let pool = Pool::builder()
        .max_size(4)
        .build(ConnectionManager::<PgConnection>::new(primary_url))
        .expect("fang's pool");
    let queue = Queue::builder().connection_pool(pool).build();
    let mut workers = WorkerPool::<Queue>::builder()
        .queue(queue.clone())
        .number_of_workers(2u32)
        .retention_mode(RetentionMode::KeepAll)
        .sleep_params(SleepParams {
            sleep_period: Duration::from_millis(50),
            max_sleep_period: Duration::from_millis(200),
            min_sleep_period: Duration::from_millis(50),
            sleep_step: Duration::from_millis(50),
        })
        .build();
    workers.start().expect("fang's workers");
    queue
}

/// A request that signs up `user` and enqueues their welcome job, with the request's token.
pub(crate) fn sign_up(cluster: &Cluster<PgConnection>, queue: &Queue, user: &str, policy: Policy) {
    cluster.with_token(&Default::default(), || {
        let mut conn = cluster.get("default").expect("a connection");
        diesel::insert_into(users::table)
            .values(users::name.eq(user))
            .execute(&mut conn)
            .expect("the user's row");
        drop(conn);
        let job = WelcomeJob {
            payload: cluster.job_payload(Welcome {
                user: user.to_owned(),
                policy,
            }),
        };
        queue.insert_task(&job).expect("the job is enqueued");
    });
}

/// What the jobs logged: (user, found, server), in the order they ran.
pub(crate) fn log(cluster: &Cluster<PgConnection>) -> Vec<(String, i64, String)> {
    let mut conn = cluster.get("default").expect("a connection");
    diesel_sharding::pin::use_primary(|| {
        job_log::table
            .order(job_log::id)
            .select((job_log::job, job_log::found, job_log::server))
            .load(&mut conn)
            .expect("the job log")
    })
}
