//! The routed async connection on MariaDB (features `async` and `mysql`): diesel-async's
//! `AsyncMysqlConnection` to a real primary and replica, the same rules as the sync router
//! and as the async PostgreSQL connection, checked on the servers (`userstat`'s
//! TABLE_STATISTICS and USER_STATISTICS, status counters), on a multi-threaded runtime.
#![cfg(all(feature = "async", feature = "mysql"))]

mod support;

use std::time::{Duration, Instant};

use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_sharding::{task, AsyncRoutedMysqlConnection, Cluster, RouteReason, Settings};
use support::mariadb_cluster::{MariaCluster, Node};
use support::mysql_users::{cluster_on, rows_changed, rows_read, start, users, WAITING};

/// Slack for a loaded 2-core machine on a bound the router promises.
const MARGIN: Duration = Duration::from_millis(1500);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// A server status counter (`SHOW GLOBAL STATUS`).
fn status(m: &MariaCluster, node: Node, name: &str) -> i64 {
    m.sql(
        node,
        &format!(
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = '{name}'"
        ),
    )
    .parse()
    .unwrap()
}

async fn count(conn: &mut AsyncRoutedMysqlConnection, name: &str) -> (i64, RouteReason) {
    let n = users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(conn)
        .await
        .unwrap();
    (n, conn.last_route().unwrap().reason)
}

async fn add(conn: &mut AsyncRoutedMysqlConnection, name: &str) -> RouteReason {
    diesel::insert_into(users::table)
        .values(users::name.eq(name))
        .execute(conn)
        .await
        .unwrap();
    conn.last_route().unwrap().reason
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    v: i64,
}

/// `sql` (one BIGINT column `v`) on the primary's physical connection.
async fn on_primary_i64(conn: &mut AsyncRoutedMysqlConnection, sql: &str) -> i64 {
    let primary = conn.primary().await.unwrap();
    let row: Value = diesel::sql_query(sql).get_result(primary).await.unwrap();
    row.v
}

#[test]
fn writes_go_to_the_primary_and_the_writer_reads_its_row_there_across_awaits() {
    let m = start("INSERT INTO users (name) VALUES ('seed');");
    let cluster = cluster_on(
        &m,
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
    );
    // stale for certain: the replica applies 5 s late (stopped, it would be past max_lag
    // and take no reads at all)
    m.set_delay(0, 5);
    let changed_primary = rows_changed(&m, Node::Primary);
    let changed_replica = rows_changed(&m, Node::Replica(0));
    let rt = runtime();
    let (writer, other) = rt.block_on(async {
        let writer = tokio::spawn(task::scope({
            let cluster = cluster.clone();
            async move {
                let mut conn = cluster.get_async("default").await.unwrap();
                let wrote = add(&mut conn, "ada").await;
                // hop threads between the write and the read
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                (wrote, count(&mut conn, "ada").await)
            }
        }))
        .await
        .unwrap();
        // another task, its own scope: it has not written, the replica serves it
        let other = tokio::spawn(task::scope({
            let cluster = cluster.clone();
            async move {
                let mut conn = cluster.get_async("default").await.unwrap();
                count(&mut conn, "seed").await
            }
        }))
        .await
        .unwrap();
        (writer, other)
    });
    assert_eq!(writer.0, RouteReason::Write);
    assert_eq!(writer.1 .0, 1, "the writer did not see its own row");
    assert_ne!(writer.1 .1, RouteReason::Replica);
    assert_eq!(other, (1, RouteReason::Replica));
    // the servers agree: the row was written on the primary, nothing by us on the replica
    assert_eq!(rows_changed(&m, Node::Primary) - changed_primary, 1);
    assert_eq!(rows_changed(&m, Node::Replica(0)), changed_replica);
    m.set_delay(0, 0);
}

#[test]
fn a_read_returns_to_the_replica_once_it_has_replayed_the_write() {
    let m = start("");
    let cluster = cluster_on(
        &m,
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
    );
    m.set_delay(0, 1);
    let rt = runtime();
    let (first, later) = rt.block_on(task::scope(async {
        let mut conn = cluster.get_async("default").await.unwrap();
        add(&mut conn, "ada").await;
        let first = count(&mut conn, "ada").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut later = count(&mut conn, "ada").await;
        while later.1 != RouteReason::Replica && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            later = count(&mut conn, "ada").await;
        }
        (first, later)
    }));
    m.set_delay(0, 0);
    assert_eq!(first, (1, RouteReason::Behind));
    assert_eq!(
        later,
        (1, RouteReason::Replica),
        "never back on the replica"
    );
}

#[test]
fn a_read_waits_on_the_replica_server_with_replica_wait() {
    let m = start("");
    // the replica applies each transaction about 2 s after its commit (set before the
    // cluster watches it, with generous timeouts: this test is about waiting, and a loaded
    // machine must not make the replica look hung or stopped meanwhile)
    m.set_delay(0, 2);
    let cluster = cluster_on(&m, WAITING);
    let waits_before = status(&m, Node::Replica(0), "MASTER_GTID_WAIT_COUNT");
    let primary_before = rows_read(&m, Node::Primary);
    let rt = runtime();
    let (seen, took) = rt.block_on(task::scope(async {
        let mut conn = cluster.get_async("default").await.unwrap();
        add(&mut conn, "ada").await;
        let started = Instant::now();
        let seen = count(&mut conn, "ada").await;
        (seen, started.elapsed())
    }));
    m.set_delay(0, 0);
    assert_eq!(
        seen,
        (1, RouteReason::Replica),
        "waited for the replica, then read its own row there"
    );
    assert!(
        took > Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        rows_read(&m, Node::Primary),
        primary_before,
        "a primary read"
    );
    let waits = status(&m, Node::Replica(0), "MASTER_GTID_WAIT_COUNT") - waits_before;
    assert!(
        (1..=3).contains(&waits),
        "one wait on the server, not a poll: {waits} MASTER_GTID_WAIT calls"
    );
}

#[test]
fn transactions_in_any_form_run_on_the_primary_and_their_commit_is_seen() {
    let m = start("");
    let cluster = cluster_on(
        &m,
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
    );
    m.set_delay(0, 5);
    let read_on_replica = rows_read(&m, Node::Replica(0));
    let rt = runtime();
    let (inside, by_hand, after) = rt.block_on(task::scope(async {
        let mut conn = cluster.get_async("default").await.unwrap();
        // diesel-async's managed transaction
        let inside = conn
            .transaction::<_, diesel::result::Error, _>(async |c| {
                diesel::insert_into(users::table)
                    .values(users::name.eq("ada"))
                    .execute(c)
                    .await?;
                tokio::task::yield_now().await;
                let n: i64 = users::table
                    .filter(users::name.eq("ada"))
                    .count()
                    .get_result(c)
                    .await?;
                Ok((n, c.last_route().unwrap().reason))
            })
            .await
            .unwrap();
        // a transaction begun by hand, in a spelling with a comment first
        conn.batch_execute("/* app */ START TRANSACTION")
            .await
            .unwrap();
        add(&mut conn, "bob").await;
        let by_hand = count(&mut conn, "bob").await;
        conn.batch_execute("COMMIT").await.unwrap();
        let after = (count(&mut conn, "ada").await, count(&mut conn, "bob").await);
        (inside, by_hand, after)
    }));
    m.set_delay(0, 0);
    assert_eq!(inside, (1, RouteReason::Transaction));
    assert_eq!(by_hand, (1, RouteReason::Transaction));
    assert_eq!(after.0 .0, 1, "the committed row was not seen");
    assert_eq!(after.1 .0, 1, "the committed row was not seen");
    assert_ne!(after.0 .1, RouteReason::Replica);
    assert_eq!(
        rows_read(&m, Node::Replica(0)),
        read_on_replica,
        "a read of the stale replica"
    );
}

#[test]
fn a_frozen_replica_costs_a_read_at_most_replica_timeout_and_it_comes_from_the_primary() {
    let m = start("INSERT INTO users (name) VALUES ('seed');");
    let cluster = cluster_on(
        &m,
        "[pinning]\nseconds = 0\n[consistency]\nmode = \"eventual\"\nmonitor_interval = \"100ms\"\n\
         [routing]\nreplica_timeout = \"300ms\"",
    );
    let rt = runtime();
    let (mut conn, on_replica) = rt.block_on(task::scope(async {
        let mut conn = cluster.get_async("default").await.unwrap();
        let got = count(&mut conn, "seed").await;
        (conn, got)
    }));
    assert_eq!(on_replica, (1, RouteReason::Replica));
    m.freeze(Node::Replica(0));
    // the open connection's read is cut at replica_timeout and retried on the primary; a
    // new connection then skips the replica, known to hang (opening one to a frozen
    // server would cost connect_timeout, as for the sync router)
    let (got, took, fresh, fresh_took) = rt.block_on(task::scope(async {
        let started = Instant::now();
        let got = count(&mut conn, "seed").await;
        let took = started.elapsed();
        let mut other = cluster.get_async("default").await.unwrap();
        let started = Instant::now();
        let fresh = count(&mut other, "seed").await;
        (got, took, fresh, started.elapsed())
    }));
    m.thaw(Node::Replica(0));
    assert_eq!(got.0, 1);
    assert_ne!(got.1, RouteReason::Replica);
    assert!(took < Duration::from_millis(300) + MARGIN, "took {took:?}");
    assert_eq!(fresh.0, 1);
    assert_ne!(fresh.1, RouteReason::Replica);
    assert!(
        fresh_took < MARGIN,
        "a new connection waited on the frozen replica: {fresh_took:?}"
    );
}

#[cfg(feature = "bb8")]
#[test]
fn a_thousand_tasks_over_a_small_bb8_pool_under_lag_never_read_stale() {
    let m = start("INSERT INTO users (name) VALUES ('seed');");
    let cluster = Cluster::<MysqlConnection>::new(
        Settings::from_toml_str(&format!(
            "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"\n\
             [databases.default]\nurl = \"{}\"\npool_size = 4\n\
             [databases.replica]\nurl = \"{}\"\nprimary = \"default\"\n",
            m.url(Node::Primary),
            m.url(Node::Replica(0)),
        ))
        .unwrap(),
    )
    .unwrap();
    // every write is applied 1 s late: a read of a row just written is stale there
    m.set_delay(0, 1);
    let changed_replica = rows_changed(&m, Node::Replica(0));
    let rt = runtime();
    let (stale, own_on_primary, later_on_replica) = rt.block_on(async {
        let pool = cluster.bb8_pool("default").unwrap();
        let mut handles = Vec::new();
        for i in 0..1000 {
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
                // once the replica has applied the write (1 s late, in whole seconds), the
                // same read goes there
                tokio::time::sleep(Duration::from_millis(2500)).await;
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
    m.set_delay(0, 0);
    assert_eq!(stale, 0, "stale reads");
    assert!(own_on_primary > 0);
    assert!(
        later_on_replica > 0,
        "no later read went back to the replica"
    );
    // the servers agree: no row was written by us on the replica
    assert_eq!(rows_changed(&m, Node::Replica(0)), changed_replica);
    assert_eq!(
        m.sql(Node::Primary, "SELECT COUNT(*) FROM test.users"),
        "1001"
    );
}

#[cfg(feature = "bb8")]
#[test]
fn a_cancelled_call_and_session_state_never_go_back_to_the_pool() {
    let m = start("");
    let cluster = cluster_on(&m, "[consistency]\nmode = \"read_your_writes\"");
    let rt = runtime();
    let (first, after_cancel, set, after_set, variable) = rt.block_on(task::scope(async {
        let pool = cluster.bb8_pool("default").unwrap();
        let id = "SELECT CAST(CONNECTION_ID() AS SIGNED) AS v";
        let mut conn = pool.get().await.unwrap();
        let first = on_primary_i64(&mut conn, id).await;
        drop(conn);
        let mut conn = pool.get().await.unwrap();
        // a call cut short by the caller: the connection is mid-call
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            diesel::sql_query("DO SLEEP(2)").execute(&mut *conn),
        )
        .await;
        assert!(cut.is_err(), "the call was not cancelled");
        drop(conn);
        let started = Instant::now();
        let mut conn = pool.get().await.unwrap();
        let after_cancel = {
            let n: i64 = users::table.count().get_result(&mut *conn).await.unwrap();
            assert_eq!(n, 0);
            on_primary_i64(&mut conn, id).await
        };
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited for the cancelled call"
        );
        drop(conn);
        // session state: the connection is closed, not handed to the next user
        let mut conn = pool.get().await.unwrap();
        conn.batch_execute("SET @tenant = 42").await.unwrap();
        let set = on_primary_i64(&mut conn, id).await;
        drop(conn);
        let mut conn = pool.get().await.unwrap();
        let after_set = on_primary_i64(&mut conn, id).await;
        let variable = on_primary_i64(
            &mut conn,
            "SELECT CAST(COALESCE(@tenant, 0) AS SIGNED) AS v",
        )
        .await;
        (first, after_cancel, set, after_set, variable)
    }));
    assert_ne!(
        first, after_cancel,
        "the cancelled connection went back to the pool"
    );
    assert_ne!(set, after_set, "a session with state went back to the pool");
    assert_eq!(
        variable, 0,
        "the next checkout saw the previous one's variable"
    );
}

#[cfg(feature = "deadpool")]
#[test]
fn a_deadpool_pool_routes_like_the_others() {
    let m = start("INSERT INTO users (name) VALUES ('seed');");
    let cluster = cluster_on(
        &m,
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
    );
    m.set_delay(0, 5);
    let rt = runtime();
    let (wrote, own, old) = rt.block_on(task::scope(async {
        let pool = cluster.deadpool_pool("default").unwrap();
        let mut conn = pool.get().await.unwrap();
        let wrote = add(&mut conn, "ada").await;
        drop(conn);
        let mut conn = pool.get().await.unwrap();
        (
            wrote,
            count(&mut conn, "ada").await,
            count(&mut conn, "seed").await,
        )
    }));
    m.set_delay(0, 0);
    assert_eq!(wrote, RouteReason::Write);
    assert_eq!(own.0, 1);
    assert_ne!(own.1, RouteReason::Replica);
    assert_eq!(old.0, 1);
}

#[test]
fn the_escape_hatches_reach_the_right_server_and_a_misrouted_write_fails() {
    let m = start("INSERT INTO users (name) VALUES ('seed');");
    let cluster = cluster_on(
        &m,
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
    );
    let rt = runtime();
    let (replica_server, primary_server, write_on_replica) = rt.block_on(task::scope(async {
        let server = "SELECT CAST(@@port AS SIGNED) AS v";
        let mut conn = cluster.get_async("default").await.unwrap();
        let replica = conn.replica().await.unwrap();
        let row: Value = diesel::sql_query(server).get_result(replica).await.unwrap();
        let write = diesel::sql_query("INSERT INTO users (name) VALUES ('sneaky')")
            .execute(conn.replica().await.unwrap())
            .await;
        let primary_server = on_primary_i64(&mut conn, server).await;
        (row.v, primary_server, write)
    }));
    assert_eq!(replica_server, i64::from(m.port(Node::Replica(0))));
    assert_eq!(primary_server, i64::from(m.port(Node::Primary)));
    let err = write_on_replica.expect_err("a write on the replica's session succeeded");
    assert!(
        err.to_string().contains("READ ONLY") || err.to_string().contains("read-only"),
        "{err}"
    );
    assert_eq!(
        m.sql(
            Node::Replica(0),
            "SELECT COUNT(*) FROM test.users WHERE name = 'sneaky'"
        ),
        "0"
    );
}

#[test]
fn a_routed_async_connection_cannot_be_established_from_a_url() {
    let rt = runtime();
    let err = rt
        .block_on(AsyncRoutedMysqlConnection::establish(
            "mysql://app@127.0.0.1/x",
        ))
        .expect_err("established from a URL");
    assert!(err.to_string().contains("Cluster::get_async"), "{err}");
}

#[test]
fn a_routed_statement_is_one_command_on_the_server_and_prepared_once() {
    let m = start("INSERT INTO users (name) VALUES ('seed');");
    m.log_statements(Node::Primary);
    m.log_statements(Node::Replica(0));
    for mode in ["pin", "read_your_writes"] {
        let cluster = cluster_on(&m, &format!("[consistency]\nmode = \"{mode}\""));
        m.clear_statement_log(Node::Primary);
        m.clear_statement_log(Node::Replica(0));
        let rt = runtime();
        rt.block_on(task::scope(async {
            let mut conn = cluster.get_async("default").await.unwrap();
            for i in 0..20 {
                add(&mut conn, &format!("{mode}{i}")).await;
            }
        }));
        rt.block_on(task::scope(async {
            let mut conn = cluster.get_async("default").await.unwrap();
            for _ in 0..20 {
                count(&mut conn, "seed").await;
            }
        }));
        let inserts = m.logged(Node::Primary, "app", "INSERT");
        let prepared = m.logged_commands(Node::Primary, "app", &["Prepare"], "INSERT");
        let selects = m.logged(Node::Replica(0), "app", "SELECT COUNT(*)");
        let prepared_selects =
            m.logged_commands(Node::Replica(0), "app", &["Prepare"], "SELECT COUNT(*)");
        assert_eq!((inserts, prepared), (20, 1), "{mode}: inserts, prepares");
        assert_eq!(
            (selects, prepared_selects),
            (20, 1),
            "{mode}: reads on the replica, prepares"
        );
        // nothing else per statement: each connection's setup (diesel-async's and
        // mysql_async's `SET`s and variables, the monitor's socket and status checks and
        // probes) and a position check or two, never one per statement
        let per_connection = [
            "SET ",
            "SELECT @@max_allowed_packet",
            "SELECT @diesel_sharding_client",
            "SHOW SLAVE STATUS",
            "SELECT @@global.",
        ];
        for (node, served) in [(Node::Primary, inserts), (Node::Replica(0), selects)] {
            let others = m.logged(node, "app", "")
                - served
                - per_connection
                    .iter()
                    .map(|p| m.logged(node, "app", p))
                    .sum::<i64>();
            assert!(
                others <= 3,
                "{mode}: {others} other statements on {node:?} for 20 statements"
            );
        }
    }
}
