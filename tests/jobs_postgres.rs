//! Jobs on a real queue (fang, PostgreSQL-backed) against a real primary and a replica that
//! applies every change 1.5 s late: the job always finds the row its enqueuer wrote (its
//! payload carries the enqueuer's token), `Sticky` jobs at once, `Delayed` jobs on the replica
//! once it has the row (fang retries them until then). Checked in the jobs' own log, fang's
//! table and `pg_stat_statements`.
#![cfg(feature = "postgres")]

mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/fang_jobs/jobs.rs"]
mod jobs;

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel_sharding::{Cluster, ConsistencyToken, JobPayload, Settings};
use fang::Queueable;
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "jobs";
const READ: &str = "SELECT COUNT(*) FROM \"users\" WHERE (\"users\".\"name\" = $1)";

#[test]
fn every_job_finds_its_enqueuers_row_and_delayed_jobs_read_the_replica() {
    let pg = PgCluster::start(1);
    pg.create_database(DB);
    pg.execute(Node::Primary, DB, jobs::SCHEMA);
    pg.wait_all_caught_up();
    pg.set_apply_delay(0, Duration::from_millis(1500));
    let cluster: Cluster<PgConnection> = Cluster::new(
        Settings::from_toml_str(&format!(
            "[pinning]\nseconds = 0\n\
             [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"\n\
             [databases.default]\nurl = \"{}\"\n\
             [databases.default_replica]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(0, DB),
        ))
        .unwrap(),
    )
    .unwrap();
    jobs::CLUSTER.set(cluster.clone()).unwrap();
    pg.reset_all_statement_stats();
    let queue = jobs::start_workers(&pg.primary_url(DB));
    // the control, first in the queue: a job whose enqueuer handed it no token reads the
    // lagging replica, which does not have the user yet
    let bare = jobs::WelcomeJob {
        payload: JobPayload::new(
            ConsistencyToken::default(),
            jobs::Welcome {
                user: "tokenless".into(),
                policy: jobs::Policy::Sticky,
            },
        ),
    };
    cluster.with_token(&ConsistencyToken::default(), || {
        let mut conn = cluster.get("default").unwrap();
        diesel::RunQueryDsl::execute(
            diesel::sql_query("INSERT INTO users (name) VALUES ('tokenless')"),
            &mut conn,
        )
        .unwrap();
    });
    queue.insert_task(&bare).unwrap();
    let mut expected = Vec::new();
    for i in 0..6 {
        for (policy, name) in [(jobs::Policy::Sticky, "s"), (jobs::Policy::Delayed, "d")] {
            let user = format!("{name}{i}");
            jobs::sign_up(&cluster, &queue, &user, policy);
            expected.push((user, policy));
        }
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = jobs::log(&cluster);
    while log.len() < expected.len() + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        log = jobs::log(&cluster);
    }
    assert_eq!(log.len(), expected.len() + 1, "every job ran once: {log:?}");
    let (tokenless, found, server) = log.iter().find(|(u, ..)| u == "tokenless").unwrap();
    assert_eq!(
        (*found, server.as_str()),
        (0, "default_replica"),
        "the control job ({tokenless}) read the lagging replica"
    );
    for (user, policy) in &expected {
        let (_, found, server) = log.iter().find(|(u, ..)| u == user).unwrap();
        assert_eq!(*found, 1, "{policy:?} job for {user} did not find its user");
        if *policy == jobs::Policy::Delayed {
            assert_eq!(
                server, "default_replica",
                "{user}'s Delayed job read the primary"
            );
        }
    }
    // fang retried the Delayed jobs that no replica could serve yet
    let retried = pg.query_i64(
        Node::Primary,
        DB,
        "SELECT count(*) FROM fang_tasks WHERE retries > 0 AND metadata->'payload'->'job'->>'policy' = 'Delayed'",
    );
    assert!(retried >= 1, "no Delayed job was retried");
    // the servers agree: the Delayed jobs' reads ran on the replica; only Sticky ones (and
    // the log reads, which are not this statement) on the primary
    let on_replica = pg.statement_calls(Node::Replica(0), READ);
    let on_primary = pg.statement_calls(Node::Primary, READ);
    // (six Delayed jobs and the control)
    assert!(on_replica >= 7, "{on_replica} job reads on the replica");
    assert!(on_primary <= 6, "{on_primary} job reads on the primary");
}
