//! The routed async connection (features `async` and `postgres`) on a real PostgreSQL
//! primary and streaming replica: the same rules as the sync router, checked on the servers
//! (`pg_stat_statements`), on a multi-threaded runtime with tasks moving between threads.
#![cfg(feature = "async")]

mod support;

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_sharding::{task, AsyncRoutedConnection, Cluster, Consistency, RouteReason, Settings};
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "app";
const COUNT_NAMED: &str = "SELECT COUNT(*) FROM \"users\" WHERE (\"users\".\"name\" = $1)";
const INSERT: &str = "INSERT INTO \"users\" (\"name\") VALUES ($1)";

mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            name -> Text,
        }
    }
}
use schema::users;

struct Setup {
    pg: PgCluster,
    cluster: Cluster<PgConnection>,
}

/// A primary and one replica whose replay is paused when `paused` (stale for certain).
fn setup(settings: &str, paused: bool) -> Setup {
    let pg = PgCluster::start(1);
    pg.create_database(DB);
    // (fully qualified: diesel_async::RunQueryDsl has an `execute` for every type)
    PgCluster::execute(
        &pg,
        Node::Primary,
        DB,
        "CREATE TABLE users (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO users (name) VALUES ('seed');",
    );
    pg.wait_all_caught_up();
    if paused {
        pg.pause_replay(0);
    }
    let cluster = Cluster::new(
        Settings::from_toml_str(&format!(
            "{settings}\n[databases.default]\nurl = \"{}\"\n\
             [databases.replica]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(0, DB),
        ))
        .unwrap(),
    )
    .unwrap();
    pg.reset_all_statement_stats();
    Setup { pg, cluster }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

async fn count(conn: &mut AsyncRoutedConnection, name: &str) -> (i64, RouteReason) {
    let n = users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(conn)
        .await
        .unwrap();
    (n, conn.last_route().unwrap().reason)
}

async fn add(conn: &mut AsyncRoutedConnection, name: &str) -> RouteReason {
    diesel::insert_into(users::table)
        .values(users::name.eq(name))
        .execute(conn)
        .await
        .unwrap();
    conn.last_route().unwrap().reason
}

#[test]
fn writes_go_to_the_primary_and_the_writer_reads_its_row_there_across_awaits() {
    let s = setup(
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
        true,
    );
    let rt = runtime();
    let cluster = s.cluster.clone();
    let (writer, readers) = rt.block_on(async move {
        let c = cluster.clone();
        let writer = tokio::spawn(task::scope(async move {
            let mut conn = c.get_async("default").await.unwrap();
            let wrote = add(&mut conn, "ada").await;
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            let read = count(&mut conn, "ada").await;
            // a fresh connection of the same task sees it too
            let mut other = c.get_async("default").await.unwrap();
            let again = count(&mut other, "ada").await;
            (wrote, read, again)
        }));
        let writer = writer.await.unwrap();
        let mut readers = Vec::new();
        for _ in 0..8 {
            let c = cluster.clone();
            readers.push(tokio::spawn(task::scope(async move {
                let mut conn = c.get_async("default").await.unwrap();
                count(&mut conn, "ada").await
            })));
        }
        let mut out = Vec::new();
        for r in readers {
            out.push(r.await.unwrap());
        }
        (writer, out)
    });
    assert_eq!(writer.0, RouteReason::Write);
    assert_eq!(
        writer.1,
        (1, RouteReason::Behind),
        "the writer read a stale replica"
    );
    assert_eq!(writer.2, (1, RouteReason::Behind));
    for r in &readers {
        assert_eq!(
            *r,
            (0, RouteReason::Replica),
            "another task inherited the write"
        );
    }
    assert_eq!(s.pg.statement_calls(Node::Primary, INSERT), 1);
    assert_eq!(s.pg.statement_calls(Node::Replica(0), INSERT), 0);
    assert_eq!(s.pg.statement_calls(Node::Primary, COUNT_NAMED), 2);
    assert_eq!(s.pg.statement_calls(Node::Replica(0), COUNT_NAMED), 8);
    s.pg.resume_replay(0);
}

#[test]
fn a_read_returns_to_the_replica_once_it_has_replayed_the_write() {
    let s = setup(
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
        false,
    );
    let rt = runtime();
    let cluster = s.cluster.clone();
    let got = rt.block_on(task::scope(async move {
        let mut conn = cluster.get_async("default").await.unwrap();
        add(&mut conn, "bob").await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = count(&mut conn, "bob").await;
            if got.1 == RouteReason::Replica || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }));
    assert_eq!(got, (1, RouteReason::Replica));
    assert!(s.pg.statement_calls(Node::Replica(0), COUNT_NAMED) >= 1);
}

#[test]
fn transactions_in_any_form_run_on_the_primary_and_their_commit_is_seen() {
    let s = setup(
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
        true,
    );
    let rt = runtime();
    let cluster = s.cluster.clone();
    let (inside, by_hand, after, causal) = rt.block_on(task::scope(async move {
        let mut conn = cluster.get_async("default").await.unwrap();
        let inside = conn
            .transaction::<_, diesel::result::Error, _>(async |c| {
                diesel::insert_into(users::table)
                    .values(users::name.eq("tx"))
                    .execute(c)
                    .await?;
                tokio::task::yield_now().await;
                let n: i64 = users::table
                    .filter(users::name.eq("tx"))
                    .count()
                    .get_result(c)
                    .await?;
                Ok((n, c.last_route().unwrap().reason))
            })
            .await
            .unwrap();
        conn.batch_execute("/* by hand */ BEGIN").await.unwrap();
        add(&mut conn, "hand").await;
        let by_hand = count(&mut conn, "hand").await;
        conn.batch_execute("COMMIT").await.unwrap();
        let after = count(&mut conn, "hand").await;
        // another task in causal mode: every write of the process that committed before
        let c = cluster.clone();
        let causal = tokio::spawn(task::scope(c.clone().with_consistency_async(
            Consistency::Causal,
            async move {
                let mut conn = c.get_async("default").await.unwrap();
                count(&mut conn, "hand").await
            },
        )))
        .await
        .unwrap();
        (inside, by_hand, after, causal)
    }));
    assert_eq!(inside, (1, RouteReason::Transaction));
    assert_eq!(by_hand, (1, RouteReason::Transaction));
    assert_eq!(after, (1, RouteReason::Behind));
    assert_eq!(causal, (1, RouteReason::Behind));
    assert_eq!(s.pg.statement_calls(Node::Replica(0), COUNT_NAMED), 0);
    s.pg.resume_replay(0);
}

#[test]
fn a_frozen_replica_costs_a_read_at_most_replica_timeout_and_it_comes_from_the_primary() {
    let s = setup(
        "[routing]\nreplica_timeout = \"300ms\"\n[consistency]\nmode = \"eventual\"\nmonitor_interval = \"50ms\"",
        false,
    );
    let rt = runtime();
    let cluster = s.cluster.clone();
    let pg = &s.pg;
    let (warm, frozen, took) = rt.block_on(task::scope(async move {
        let mut conn = cluster.get_async("default").await.unwrap();
        let warm = count(&mut conn, "seed").await;
        pg.freeze_replica(0);
        let started = Instant::now();
        let frozen = count(&mut conn, "seed").await;
        (warm, frozen, started.elapsed())
    }));
    s.pg.thaw_replica(0);
    assert_eq!(warm, (1, RouteReason::Replica));
    assert_eq!(frozen.0, 1, "the read failed or came back empty");
    assert_ne!(frozen.1, RouteReason::Replica);
    assert!(
        took < Duration::from_millis(300 + 1500),
        "a read on a frozen replica took {took:?}"
    );
}

#[test]
fn strong_reads_the_primarys_position_and_sees_another_clients_commit() {
    let s = setup(
        "[consistency]\nmode = \"strong\"\nmonitor_interval = \"50ms\"",
        true,
    );
    PgCluster::execute(
        &s.pg,
        Node::Primary,
        DB,
        "INSERT INTO users (name) VALUES ('other')",
    );
    let rt = runtime();
    let cluster = s.cluster.clone();
    let got = rt.block_on(task::scope(async move {
        let mut conn = cluster.get_async("default").await.unwrap();
        count(&mut conn, "other").await
    }));
    assert_eq!(got, (1, RouteReason::Behind));
    s.pg.resume_replay(0);
}

#[test]
fn a_routed_async_connection_cannot_be_established_from_a_url() {
    let rt = runtime();
    let err = rt
        .block_on(AsyncRoutedConnection::establish("postgres://localhost/x"))
        .unwrap_err();
    assert!(err.to_string().contains("Cluster::get_async"), "{err}");
}
