//! The routed async connection (features `async` and `postgres`) on a real PostgreSQL
//! primary and streaming replica: the same rules as the sync router, checked on the servers
//! (`pg_stat_statements`), on a multi-threaded runtime with tasks moving between threads.
#![cfg(feature = "async")]

mod support;

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_sharding::{task, AsyncRoutedPgConnection, Cluster, Consistency, RouteReason, Settings};
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
    setup_pool(settings, 10, paused)
}

/// [`setup`] with a pool of `pool_size`.
fn setup_pool(settings: &str, pool_size: u32, paused: bool) -> Setup {
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
            "{settings}\n[databases.default]\nurl = \"{}\"\npool_size = {pool_size}\n\
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

async fn count(conn: &mut AsyncRoutedPgConnection, name: &str) -> (i64, RouteReason) {
    let n = users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(conn)
        .await
        .unwrap();
    (n, conn.last_route().unwrap().reason)
}

async fn add(conn: &mut AsyncRoutedPgConnection, name: &str) -> RouteReason {
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
        .block_on(AsyncRoutedPgConnection::establish("postgres://localhost/x"))
        .unwrap_err();
    assert!(err.to_string().contains("Cluster::get_async"), "{err}");
}

/// A one-row read of an integer on the primary (inside a transaction: the route rules keep
/// it there).
async fn on_primary_i64(conn: &mut AsyncRoutedPgConnection, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        v: i64,
    }
    let sql = sql.to_owned();
    conn.transaction::<_, diesel::result::Error, _>(async move |c| {
        let row: V = diesel::sql_query(&sql).get_result(c).await?;
        Ok(row.v)
    })
    .await
    .unwrap()
}

#[cfg(feature = "bb8")]
#[test]
fn thousands_of_tasks_over_a_small_bb8_pool_under_lag_never_read_stale() {
    let s = setup_pool(
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
        4,
        false,
    );
    // every write is applied 200 ms late: a read of a row just written is stale there
    s.pg.set_apply_delay(0, Duration::from_millis(200));
    let rt = runtime();
    let cluster = s.cluster.clone();
    let (stale, own_on_primary, later_on_replica) = rt.block_on(async move {
        let pool = cluster.bb8_pool("default").unwrap();
        let mut handles = Vec::new();
        for i in 0..2000 {
            let pool = pool.clone();
            handles.push(tokio::spawn(task::scope(async move {
                let mut conn = pool.get().await.unwrap();
                let name = format!("t{i}");
                add(&mut conn, &name).await;
                drop(conn);
                tokio::task::yield_now().await;
                let mut conn = pool.get().await.unwrap();
                let own = count(&mut conn, &name).await;
                drop(conn);
                // once the replica has applied the write (200 ms late), the same read goes
                // there (whatever the speed of the machine: the first read may be later
                // than the delay already, the second one surely is)
                tokio::time::sleep(Duration::from_millis(600)).await;
                let mut conn = pool.get().await.unwrap();
                let later = count(&mut conn, &name).await;
                (own, later)
            })));
        }
        let (mut stale, mut own_primary, mut later_replica) = (0, 0, 0);
        for h in handles {
            let ((n, reason), (later, later_reason)) = h.await.unwrap();
            stale += usize::from(n != 1) + usize::from(later != 1);
            own_primary += usize::from(reason != RouteReason::Replica);
            later_replica += usize::from(later_reason == RouteReason::Replica);
        }
        (stale, own_primary, later_replica)
    });
    assert_eq!(stale, 0, "stale reads");
    assert!(own_on_primary > 0);
    assert!(
        later_on_replica > 0,
        "no later read went back to the replica"
    );
    // the servers agree: every insert on the primary, none on the replica
    assert_eq!(s.pg.statement_calls(Node::Primary, INSERT), 2000);
    assert_eq!(s.pg.statement_calls(Node::Replica(0), INSERT), 0);
    s.pg.set_apply_delay(0, Duration::ZERO);
}

#[cfg(feature = "bb8")]
#[test]
fn a_cancelled_call_and_session_state_never_go_back_to_the_pool() {
    let s = setup_pool("[consistency]\nmode = \"read_your_writes\"", 1, false);
    let rt = runtime();
    let cluster = s.cluster.clone();
    let (first, after_cancel, set, after_set, search_path) = rt.block_on(task::scope(async move {
        let pool = cluster.bb8_pool("default").unwrap();
        let mut conn = pool.get().await.unwrap();
        let first = on_primary_i64(&mut conn, "SELECT pg_backend_pid()::bigint AS v").await;
        // a call cut short by the caller: the connection is mid-call
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            diesel::sql_query("SELECT pg_sleep(2)").execute(&mut *conn),
        )
        .await;
        assert!(cut.is_err(), "the call was not cancelled");
        drop(conn);
        let started = Instant::now();
        let mut conn = pool.get().await.unwrap();
        let after_cancel = on_primary_i64(&mut conn, "SELECT pg_backend_pid()::bigint AS v").await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited for the cancelled call"
        );
        // session state: the connection is closed, not handed to the next user
        conn.batch_execute("SET search_path TO pg_catalog")
            .await
            .unwrap();
        let set = on_primary_i64(&mut conn, "SELECT pg_backend_pid()::bigint AS v").await;
        drop(conn);
        let mut conn = pool.get().await.unwrap();
        let after_set = on_primary_i64(&mut conn, "SELECT pg_backend_pid()::bigint AS v").await;
        let search_path = on_primary_i64(
            &mut conn,
            "SELECT (current_setting('search_path') = 'pg_catalog')::int::bigint AS v",
        )
        .await;
        (first, after_cancel, set, after_set, search_path)
    }));
    assert_ne!(
        first, after_cancel,
        "the cancelled connection went back to the pool"
    );
    assert_ne!(set, after_set, "a session with state went back to the pool");
    assert_eq!(
        search_path, 0,
        "the next checkout saw the previous one's search_path"
    );
}

#[cfg(feature = "deadpool")]
#[test]
fn a_deadpool_pool_routes_like_the_others() {
    let s = setup(
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
        true,
    );
    let rt = runtime();
    let cluster = s.cluster.clone();
    let (wrote, own, other) = rt.block_on(async move {
        let pool = cluster.deadpool_pool("default").unwrap();
        let p = pool.clone();
        let (wrote, own) = tokio::spawn(task::scope(async move {
            let mut conn = p.get().await.unwrap();
            let wrote = add(&mut conn, "dp").await;
            drop(conn);
            let mut conn = p.get().await.unwrap();
            (wrote, count(&mut conn, "dp").await)
        }))
        .await
        .unwrap();
        let other = tokio::spawn(task::scope(async move {
            let mut conn = pool.get().await.unwrap();
            count(&mut conn, "dp").await
        }))
        .await
        .unwrap();
        (wrote, own, other)
    });
    assert_eq!(wrote, RouteReason::Write);
    assert_eq!(own, (1, RouteReason::Behind));
    assert_eq!(other, (0, RouteReason::Replica));
    s.pg.resume_replay(0);
}

#[cfg(feature = "bb8")]
#[test]
fn a_bb8_pool_built_outside_a_runtime_is_an_error_not_a_panic() {
    let s = setup("", false);
    let err = s.cluster.bb8_pool("default").unwrap_err();
    assert!(err.to_string().contains("needs a tokio runtime"), "{err}");
    let unknown = {
        let rt = runtime();
        let _in = rt.enter();
        s.cluster.bb8_pool("nope").unwrap_err()
    };
    assert!(
        unknown.to_string().contains("unknown database `nope`"),
        "{unknown}"
    );
}

#[cfg(feature = "bb8")]
#[test]
fn the_escape_hatches_reach_the_right_server_and_their_connection_is_not_reused() {
    let s = setup_pool(
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
        1,
        true,
    );
    let rt = runtime();
    let cluster = s.cluster.clone();
    let (replica_seen, after_write, primary_pid, next_pid) = rt.block_on(task::scope(async move {
        let pool = cluster.bb8_pool("default").unwrap();
        let mut conn = pool.get().await.unwrap();
        // nothing written yet: the replica, read-only
        let replica = conn.replica().await.unwrap();
        let refused = diesel::sql_query("INSERT INTO users (name) VALUES ('never')")
            .execute(replica)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("read-only"), "{refused}");
        let replica_seen = conn.last_route().unwrap().reason;
        // a write through the primary's handle: the scope's reads stay on the primary
        let primary = conn.primary().await.unwrap();
        diesel::sql_query("INSERT INTO users (name) VALUES ('hatch')")
            .execute(primary)
            .await
            .unwrap();
        let after_write = count(&mut conn, "hatch").await;
        let primary_pid = on_primary_i64(&mut conn, "SELECT pg_backend_pid()::bigint AS v").await;
        drop(conn);
        let mut conn = pool.get().await.unwrap();
        let next_pid = on_primary_i64(&mut conn, "SELECT pg_backend_pid()::bigint AS v").await;
        (replica_seen, after_write, primary_pid, next_pid)
    }));
    assert_eq!(replica_seen, RouteReason::Replica);
    assert_eq!(after_write, (1, RouteReason::Session));
    assert_ne!(
        primary_pid, next_pid,
        "a handed-out connection went back to the pool"
    );
    assert_eq!(s.pg.statement_calls(Node::Replica(0), INSERT), 0);
    s.pg.resume_replay(0);
}

mod feelings_schema {
    #[allow(unreachable_pub)]
    pub mod sql_types {
        #[derive(Debug, diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
        #[diesel(postgres_type(name = "mood"))]
        pub struct Mood;

        /// A type the database does not have.
        #[derive(Debug, diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
        #[diesel(postgres_type(name = "no_such_type"))]
        pub struct Missing;
    }

    diesel::table! {
        use diesel::sql_types::*;
        use super::sql_types::Mood;

        feelings (id) {
            id -> Int8,
            name -> Text,
            mood -> Mood,
        }
    }
}
use feelings_schema::feelings;

#[derive(diesel_derive_enum::DbEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[ExistingTypePath = "crate::feelings_schema::sql_types::Mood"]
enum Mood {
    Happy,
    Sad,
    Curious,
}

#[derive(diesel_derive_enum::DbEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[ExistingTypePath = "crate::feelings_schema::sql_types::Missing"]
enum Ghost {
    Boo,
}

#[test]
fn binds_of_custom_types_are_resolved_once_and_run_on_the_replica() {
    let s = setup(
        "[pinning]\nseconds = 0\n[consistency]\nmode = \"eventual\"\nmonitor_interval = \"50ms\"",
        false,
    );
    PgCluster::execute(
        &s.pg,
        Node::Primary,
        DB,
        "CREATE TYPE mood AS ENUM ('happy', 'sad', 'curious');
         CREATE TABLE feelings (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, mood mood NOT NULL);",
    );
    s.pg.wait_all_caught_up();
    s.pg.reset_all_statement_stats();
    let rt = runtime();
    let cluster = s.cluster.clone();
    let written: (i64, String, Mood) = rt.block_on(task::scope(async move {
        let mut conn = cluster.get_async("default").await.unwrap();
        diesel::insert_into(feelings::table)
            .values((feelings::name.eq("grace"), feelings::mood.eq(Mood::Curious)))
            .returning((feelings::id, feelings::name, feelings::mood))
            .get_result(&mut conn)
            .await
            .unwrap()
    }));
    s.pg.wait_all_caught_up();
    let cluster = s.cluster.clone();
    let (one, any, none, routes, ghost) = rt.block_on(task::scope(async move {
        let mut conn = cluster.get_async("default").await.unwrap();
        let one: (i64, String, Mood) = feelings::table
            .filter(feelings::mood.eq(Mood::Curious))
            .select((feelings::id, feelings::name, feelings::mood))
            .first(&mut conn)
            .await
            .unwrap();
        let first_route = conn.last_route().unwrap().reason;
        // an array of the enum: its element type's OID is inside the bind's bytes
        let any: i64 = feelings::table
            .filter(feelings::mood.eq_any(vec![Mood::Sad, Mood::Curious]))
            .count()
            .get_result(&mut conn)
            .await
            .unwrap();
        let second_route = conn.last_route().unwrap().reason;
        // on another connection of the same cluster: resolved already
        let mut other = cluster.get_async("default").await.unwrap();
        let none: i64 = feelings::table
            .filter(feelings::mood.eq(Mood::Happy))
            .count()
            .get_result(&mut other)
            .await
            .unwrap();
        let ghost = diesel::sql_query("SELECT 1::bigint AS v WHERE $1::text IS NOT NULL")
            .bind::<feelings_schema::sql_types::Missing, _>(Ghost::Boo)
            .execute(&mut other)
            .await
            .expect_err("a bind of a type the database does not have");
        (one, any, none, [first_route, second_route], ghost)
    }));
    assert_eq!(one, written);
    assert_eq!((any, none), (1, 0));
    assert_eq!(routes, [RouteReason::Replica, RouteReason::Replica]);
    assert!(
        ghost.to_string().contains("no_such_type"),
        "the error does not name the type: {ghost}"
    );
    // the servers agree: the enum reads ran on the replica, and the type was looked up once
    assert_eq!(
        s.pg.statement_calls(Node::Replica(0), "SELECT %\"feelings\".\"mood\" = $1%"),
        2
    );
    assert_eq!(
        s.pg.statement_calls(Node::Replica(0), "SELECT %\"feelings\".\"mood\" = ANY($1)%"),
        1
    );
    let lookups = s.pg.statement_calls(Node::Primary, "%FROM pg_type%")
        + s.pg.statement_calls(Node::Replica(0), "%FROM pg_type%");
    // `mood` once (and `no_such_type`, not found, each time it is bound)
    assert_eq!(lookups, 2, "custom types looked up {lookups} times");
}

#[test]
fn writes_locking_reads_write_functions_ctes_and_session_state_run_on_the_primary() {
    let s = setup(
        "[pinning]\nseconds = 0\n[consistency]\nmode = \"eventual\"\nmonitor_interval = \"50ms\"",
        false,
    );
    PgCluster::execute(&s.pg, Node::Primary, DB, "CREATE SEQUENCE tickets;");
    s.pg.wait_all_caught_up();
    s.pg.reset_all_statement_stats();
    let rt = runtime();
    let cluster = s.cluster.clone();
    let reasons = rt.block_on(task::scope(async move {
        use diesel::sql_types::BigInt;
        let mut reasons = Vec::new();
        // each on a fresh connection: none inherits another's session
        let mut conn = cluster.get_async("default").await.unwrap();
        let id: i64 = diesel::insert_into(users::table)
            .values(users::name.eq("ada"))
            .returning(users::id)
            .get_result(&mut conn)
            .await
            .unwrap();
        assert!(id > 0);
        reasons.push(("INSERT ... RETURNING", conn.last_route().unwrap().reason));
        let mut conn = cluster.get_async("default").await.unwrap();
        let locked: Vec<i64> = users::table
            .select(users::id)
            .filter(users::name.eq("seed"))
            .for_update()
            .load(&mut conn)
            .await
            .unwrap();
        assert_eq!(locked.len(), 1);
        reasons.push(("FOR UPDATE", conn.last_route().unwrap().reason));
        let mut conn = cluster.get_async("default").await.unwrap();
        let ticket: i64 = diesel::select(diesel::dsl::sql::<BigInt>(
            "/* a comment first */ nextval('tickets')",
        ))
        .get_result(&mut conn)
        .await
        .unwrap();
        assert_eq!(ticket, 1);
        reasons.push(("nextval", conn.last_route().unwrap().reason));
        let mut conn = cluster.get_async("default").await.unwrap();
        let moved: Vec<i64> = diesel::dsl::sql::<BigInt>(
            "-- a data-modifying CTE\nWITH moved AS (INSERT INTO users (name) VALUES ('cte') \
             RETURNING id) SELECT id FROM moved",
        )
        .load(&mut conn)
        .await
        .unwrap();
        assert_eq!(moved.len(), 1);
        reasons.push(("a data-modifying CTE", conn.last_route().unwrap().reason));
        // session state: the session's later reads follow it to the primary
        let mut conn = cluster.get_async("default").await.unwrap();
        conn.batch_execute(
            "CREATE TEMPORARY TABLE scratch (x int); INSERT INTO scratch VALUES (1)",
        )
        .await
        .unwrap();
        let scratch: Vec<i32> =
            diesel::dsl::sql::<diesel::sql_types::Integer>("SELECT x FROM scratch")
                .load(&mut conn)
                .await
                .unwrap();
        assert_eq!(scratch, vec![1]);
        reasons.push((
            "a temporary table's read",
            conn.last_route().unwrap().reason,
        ));
        let mut conn = cluster.get_async("default").await.unwrap();
        let _: Vec<bool> =
            diesel::dsl::sql::<diesel::sql_types::Bool>("SELECT pg_try_advisory_lock(7)")
                .load(&mut conn)
                .await
                .unwrap();
        reasons.push(("an advisory lock", conn.last_route().unwrap().reason));
        let n = count(&mut conn, "seed").await;
        reasons.push(("a read after the lock", n.1));
        reasons
    }));
    assert_eq!(
        reasons,
        vec![
            ("INSERT ... RETURNING", RouteReason::Write),
            ("FOR UPDATE", RouteReason::Locking),
            ("nextval", RouteReason::WriteFunction),
            ("a data-modifying CTE", RouteReason::Write),
            ("a temporary table's read", RouteReason::Session),
            ("an advisory lock", RouteReason::WriteFunction),
            // a lock does not change what reads see (as for the sync connection)
            ("a read after the lock", RouteReason::Replica),
        ]
    );
    for (what, pattern) in [
        ("INSERT ... RETURNING", "INSERT INTO \"users\"%RETURNING%"),
        ("FOR UPDATE", "%FOR UPDATE%"),
        ("nextval", "%nextval%"),
        ("the CTE", "%WITH moved%"),
        ("the temporary table", "%scratch%"),
        ("the advisory lock", "%advisory%"),
    ] {
        assert!(
            s.pg.statement_calls(Node::Primary, pattern) >= 1,
            "{what} ran on the primary"
        );
        assert_eq!(
            s.pg.statement_calls(Node::Replica(0), pattern),
            0,
            "{what} ran on the replica"
        );
    }
}

#[test]
fn a_reload_that_removes_the_replica_takes_it_from_a_bb8_pool_built_before() {
    let s = setup(
        "[consistency]\nmode = \"eventual\"\nmonitor_interval = \"50ms\"",
        false,
    );
    let rt = runtime();
    let cluster = s.cluster.clone();
    let pool = rt.block_on(async move { cluster.bb8_pool("default").unwrap() });
    let read = |pool: &diesel_async::pooled_connection::bb8::Pool<AsyncRoutedPgConnection>| {
        let pool = pool.clone();
        rt.block_on(async move {
            let mut conn = pool.get().await.unwrap();
            count(&mut conn, "seed").await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while read(&pool) != (1, RouteReason::Replica) {
        assert!(Instant::now() < deadline, "no replica read");
        std::thread::sleep(Duration::from_millis(20));
    }
    // the same settings without the replica
    s.cluster
        .reload(
            Settings::from_toml_str(&format!(
                "[consistency]\nmode = \"eventual\"\nmonitor_interval = \"50ms\"\n\
                 [databases.default]\nurl = \"{}\"\npool_size = 10\n",
                s.pg.primary_url(DB),
            ))
            .unwrap(),
        )
        .unwrap();
    s.pg.reset_all_statement_stats();
    for _ in 0..10 {
        let (n, reason) = read(&pool);
        assert_eq!(n, 1);
        assert_ne!(reason, RouteReason::Replica);
    }
    assert_eq!(
        s.pg.statement_calls(Node::Replica(0), COUNT_NAMED),
        0,
        "the removed replica ran a routed read"
    );
    assert_eq!(s.pg.statement_calls(Node::Primary, COUNT_NAMED), 10);
}
