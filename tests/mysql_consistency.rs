//! The consistency promises on MariaDB (feature `mysql`), as on PostgreSQL: strong, jobs
//! with a token, `replica_wait` (a wait on the server, `MASTER_GTID_WAIT`), lag limits, a
//! killed replica, a replica restored from an older copy, session state and hand-written
//! transactions. Where a statement ran is read from the servers' own statistics
//! (`userstat`'s TABLE_STATISTICS and USER_STATISTICS, and status counters).
#![cfg(feature = "mysql")]

mod support;

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel::sql_types::{BigInt, Nullable};
use diesel_sharding::{
    Cluster, Consistency, ConsistencyToken, DataConsistency, PooledConnection, RouteReason,
    Settings,
};
use support::mariadb_cluster::{MariaCluster, Node};
use support::mysql_users::*;

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

fn names<C>(conn: &mut C) -> Vec<String>
where
    C: diesel::connection::LoadConnection<Backend = diesel::mysql::Mysql>,
{
    users::table
        .select(users::name)
        .order(users::id)
        .load(conn)
        .unwrap()
}

#[test]
fn a_read_waits_on_the_replica_server_up_to_replica_wait_and_not_at_all_without_it() {
    let m = start("");
    // the replica applies each transaction about 2 s after its commit (set before the
    // cluster watches it, with generous timeouts: this test is about waiting, and a loaded
    // machine must not make the replica look hung or stopped meanwhile)
    m.set_delay(0, 2);
    let waiting = cluster_on(&m, WAITING);
    let waits_before = status(&m, Node::Replica(0), "MASTER_GTID_WAIT_COUNT");
    let primary_before = rows_read(&m, Node::Primary);
    let replica_before = rows_read(&m, Node::Replica(0));
    let mut conn = waiting.get("default").unwrap();
    diesel::insert_into(users::table)
        .values(users::name.eq("ada"))
        .execute(&mut conn)
        .unwrap();
    let started = Instant::now();
    let seen = users::table
        .filter(users::name.eq("ada"))
        .count()
        .get_result::<i64>(&mut conn)
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        (seen, conn.last_route().unwrap().reason),
        (1, RouteReason::Replica),
        "waited for the replica, then read its own row there"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        took > Duration::from_millis(200),
        "the replica applies ~2 s late, yet the read did not wait: {took:?}"
    );
    drop(conn);
    assert_eq!(
        rows_read(&m, Node::Primary),
        primary_before,
        "no primary read"
    );
    assert!(rows_read(&m, Node::Replica(0)) > replica_before);
    let waits = status(&m, Node::Replica(0), "MASTER_GTID_WAIT_COUNT") - waits_before;
    assert!(
        (1..=3).contains(&waits),
        "one wait on the server, not a poll: {waits} MASTER_GTID_WAIT calls"
    );

    // without replica_wait a read behind the replica goes to the primary at once
    let eager = cluster_on(&m, "[consistency]\nmode = \"read_your_writes\"");
    add_user(&eager, "bob");
    let waits_before = status(&m, Node::Replica(0), "MASTER_GTID_WAIT_COUNT");
    let started = Instant::now();
    let mut conn = eager.get("default").unwrap();
    diesel::insert_into(users::table)
        .values(users::name.eq("cy"))
        .execute(&mut conn)
        .unwrap();
    let seen: i64 = users::table
        .filter(users::name.eq("cy"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(
        (seen, conn.last_route().unwrap().reason),
        (1, RouteReason::Behind)
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        status(&m, Node::Replica(0), "MASTER_GTID_WAIT_COUNT"),
        waits_before
    );
}

#[test]
fn strong_sees_a_row_committed_by_another_client_at_once() {
    let (m, cluster) = setup();
    m.set_delay(0, 2);
    // another client, not this process
    m.try_sql_as(
        Node::Primary,
        "app",
        "INSERT INTO users (name) VALUES ('other')",
    )
    .unwrap();
    let c = cluster.clone();
    let strong = || c.with_consistency(Consistency::Strong, || count(&c, "other"));
    assert_eq!(strong(), (1, RouteReason::Behind));
    // causal promises only this process's writes
    let causal = cluster.with_consistency(Consistency::Causal, || count(&cluster, "other"));
    assert_eq!(causal, (0, RouteReason::Replica));
    m.wait_all_caught_up();
    assert_eq!(
        poll(strong, |got| got.1 == RouteReason::Replica),
        (1, RouteReason::Replica)
    );
}

#[test]
fn a_job_handed_the_token_as_a_string_sees_the_row_or_is_delayed_until_a_replica_has_it() {
    let (m, cluster) = setup();
    m.pause(0);
    add_user(&cluster, "ada");
    let token = cluster.token().to_string();
    assert!(token.starts_with("v2.default-m"), "{token}");
    let job = |consistency: DataConsistency| {
        let c = cluster.clone();
        let payload = token.clone();
        std::thread::spawn(move || {
            let token: ConsistencyToken = payload.parse().unwrap();
            c.run_job(&token, consistency, || count(&c, "ada"))
        })
        .join()
        .unwrap()
    };
    let replica_before = rows_read(&m, Node::Replica(0));
    let sticky = job(DataConsistency::Sticky).unwrap();
    assert_eq!(sticky.0, 1);
    assert_ne!(sticky.1, RouteReason::Replica);
    let delayed = job(DataConsistency::Delayed(Duration::from_millis(200))).unwrap_err();
    assert_eq!(delayed.database, "default");
    assert!(
        delayed.to_string().contains("retry the job later"),
        "{delayed}"
    );
    assert_eq!(
        rows_read(&m, Node::Replica(0)),
        replica_before,
        "the stale replica served no job"
    );
    m.resume(0);
    m.wait_all_caught_up();
    let later = job(DataConsistency::Delayed(Duration::from_secs(10))).unwrap();
    assert_eq!(later, (1, RouteReason::Replica));
}

#[test]
fn a_replica_behind_max_lag_in_time_takes_no_reads() {
    let m = start("INSERT INTO users (name) VALUES ('ada');");
    let cluster = cluster_on(
        &m,
        "[consistency]\nmode = \"eventual\"\nmax_lag = \"1s\"\nmonitor_interval = \"50ms\"",
    );
    assert_eq!(until_on_replica(&cluster, "ada"), (1, RouteReason::Replica));
    // applied 3 s late, with writes coming: Seconds_Behind_Master climbs past 1 s
    m.set_delay(0, 3);
    let writer = {
        let c = cluster.clone();
        std::thread::spawn(move || {
            for i in 0..30 {
                add_user(&c, &format!("w{i}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let lagging = poll(
        || count(&cluster, "ada"),
        |got| got.1 == RouteReason::Lagging,
    );
    writer.join().unwrap();
    assert_eq!(lagging, (1, RouteReason::Lagging));
    m.set_delay(0, 0);
    m.wait_all_caught_up();
    assert_eq!(
        until_on_replica(&cluster, "ada"),
        (1, RouteReason::Replica),
        "used again once within the limit"
    );
}

#[test]
fn a_killed_replica_fails_no_read_and_is_used_again_after_it_restarts() {
    let mut m = start("INSERT INTO users (name) VALUES ('ada');");
    let cluster = cluster_on(
        &m,
        "[routing]\nreplica_retry = \"100ms\"\n[consistency]\nmode = \"eventual\"\nmonitor_interval = \"50ms\"",
    );
    assert_eq!(until_on_replica(&cluster, "ada"), (1, RouteReason::Replica));
    m.kill(Node::Replica(0));
    for _ in 0..20 {
        let (n, reason) = count(&cluster, "ada");
        assert_eq!(n, 1);
        assert_ne!(reason, RouteReason::Replica, "a read on a dead server");
    }
    m.restart(Node::Replica(0), &[]);
    let replica_before = rows_read(&m, Node::Replica(0));
    assert_eq!(until_on_replica(&cluster, "ada"), (1, RouteReason::Replica));
    assert!(rows_read(&m, Node::Replica(0)) > replica_before);
}

#[test]
fn a_replica_restored_from_an_older_copy_is_learned_anew_and_serves_no_stale_read() {
    let mut m = start("INSERT INTO users (name) VALUES ('old');");
    let cluster = cluster_on(
        &m,
        "[routing]\nreplica_retry = \"50ms\"\n[consistency]\nmode = \"causal\"\nmonitor_interval = \"50ms\"",
    );
    // a copy of the replica as it is now
    m.kill(Node::Replica(0));
    m.copy_data(Node::Replica(0), "backup");
    m.restart(Node::Replica(0), &[]);
    // a write it applies: the router learns it has it
    add_user(&cluster, "new");
    m.wait_all_caught_up();
    assert_eq!(until_on_replica(&cluster, "new"), (1, RouteReason::Replica));
    // rebuilt from the copy, with replication not started: it no longer has the write
    m.kill(Node::Replica(0));
    m.restore_data(Node::Replica(0), "backup");
    m.restart(Node::Replica(0), &["--skip-slave-start"]);
    assert_eq!(
        m.try_sql(
            Node::Replica(0),
            "SELECT COUNT(*) FROM test.users WHERE name = 'new'"
        )
        .unwrap(),
        "0"
    );
    let replica_before = rows_read(&m, Node::Replica(0));
    for _ in 0..30 {
        let c = cluster.clone();
        let (n, reason) = std::thread::spawn(move || count(&c, "new")).join().unwrap();
        assert_eq!(
            (n, reason),
            (1, reason),
            "a stale read from the restored replica"
        );
        assert_ne!(reason, RouteReason::Replica);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        rows_read(&m, Node::Replica(0)),
        replica_before,
        "the restored replica served no read of the table"
    );
    // once it replicates again and has the write, it serves reads again
    m.sql(Node::Replica(0), "START SLAVE");
    m.wait_all_caught_up();
    assert_eq!(until_on_replica(&cluster, "new"), (1, RouteReason::Replica));
}

/// One way of keeping state in a MySQL session, and what the next statement of the same
/// session sees of it (which only the primary session can answer).
struct SessionCase {
    name: &'static str,
    set: &'static str,
    probe: &'static str,
    expect_in_session: Option<i64>,
}

#[test]
fn session_state_follows_the_session_to_the_primary_and_is_gone_at_the_next_checkout() {
    let (m, cluster) = setup();
    m.wait_all_caught_up();
    let cases = [
        SessionCase {
            name: "a user variable",
            set: "SET @x = 41",
            probe: "SELECT @x + 1 AS v",
            expect_in_session: Some(42),
        },
        SessionCase {
            name: "an assignment in a select",
            set: "SELECT @y := 7",
            probe: "SELECT @y AS v",
            expect_in_session: Some(7),
        },
        SessionCase {
            name: "a temporary table",
            set: "CREATE TEMPORARY TABLE scratch (v BIGINT); INSERT INTO scratch VALUES (5)",
            probe: "SELECT v FROM scratch",
            expect_in_session: Some(5),
        },
        SessionCase {
            name: "a session variable",
            set: "SET SESSION sql_select_limit = 3",
            probe: "SELECT @@session.sql_select_limit AS v",
            expect_in_session: Some(3),
        },
        SessionCase {
            name: "a named lock",
            set: "DO GET_LOCK('held', 0)",
            probe: "SELECT IS_USED_LOCK('held') = CONNECTION_ID() AS v",
            expect_in_session: Some(1),
        },
    ];
    for case in &cases {
        let mut conn = cluster.get("default").unwrap();
        conn.batch_execute(case.set).unwrap();
        let got = probe(&mut conn, case.probe);
        assert_eq!(
            got,
            Ok(case.expect_in_session),
            "{}: in the session",
            case.name
        );
        assert_ne!(
            conn.last_route().unwrap().reason,
            RouteReason::Replica,
            "{}",
            case.name
        );
        drop(conn);
        // the next checkout is a fresh session: nothing of it is left
        let mut conn = cluster.get("default").unwrap();
        let next = probe(&mut conn, case.probe);
        assert_ne!(
            next,
            Ok(case.expect_in_session),
            "{}: the next checkout still sees it",
            case.name
        );
    }
    // the named lock was released with the session
    assert_eq!(m.sql(Node::Primary, "SELECT IS_FREE_LOCK('held')"), "1");
    assert_eq!(rows_changed(&m, Node::Replica(0)), 0);
}

/// `sql` as a one-row, one-column query (`Err`: it failed, such as a table that is gone).
fn probe(conn: &mut PooledConnection<MysqlConnection>, sql: &str) -> Result<Option<i64>, String> {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = Nullable<BigInt>)]
        v: Option<i64>,
    }
    diesel::sql_query(sql)
        .get_result::<V>(conn)
        .map(|r| r.v)
        .map_err(|e| e.to_string())
}

#[test]
fn a_transaction_begun_by_hand_in_any_spelling_reads_its_own_rows_and_its_commit_is_seen() {
    let (m, cluster) = setup();
    m.set_delay(0, 2);
    let spellings = [
        "BEGIN",
        "begin work",
        "START TRANSACTION",
        "/* a comment */ START TRANSACTION",
        "# a comment\nSTART TRANSACTION",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
        "START TRANSACTION READ WRITE",
        "/*!40101 START TRANSACTION */",
    ];
    for (i, begin) in spellings.iter().enumerate() {
        let name = format!("t{i}");
        let mut conn = cluster.get("default").unwrap();
        conn.batch_execute(begin).unwrap();
        diesel::sql_query(format!("INSERT INTO users (name) VALUES ('{name}')"))
            .execute(&mut conn)
            .unwrap();
        let own: i64 = users::table
            .filter(users::name.eq(&name))
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(own, 1, "{begin:?}: its own row");
        assert_eq!(
            conn.last_route().unwrap().reason,
            RouteReason::Transaction,
            "{begin:?}"
        );
        conn.batch_execute("COMMIT").unwrap();
        // committed: the next read sees it, in every mode (the replica is 2 s behind)
        for mode in [
            Consistency::Pin,
            Consistency::ReadYourWrites,
            Consistency::Causal,
            Consistency::Strong,
        ] {
            let n: i64 = cluster.with_consistency(mode, || {
                users::table
                    .filter(users::name.eq(&name))
                    .count()
                    .get_result(&mut conn)
                    .unwrap()
            });
            assert_eq!(n, 1, "{begin:?} then COMMIT, then a read in {mode:?}");
        }
    }
    assert_eq!(rows_changed(&m, Node::Replica(0)), 0);
}

#[test]
fn read_only_transactions_see_the_threads_writes_and_otherwise_use_the_replica() {
    let m = start("INSERT INTO users (name) VALUES ('seed');");
    let cluster = cluster_on(&m, "[consistency]\nmonitor_interval = \"50ms\"");
    // nothing holds it back: a read-only transaction reads the replica
    let mut conn = cluster.get("default").unwrap();
    let replica_before = rows_read(&m, Node::Replica(0));
    let seen = conn
        .read_only_transaction(|c| QueryResult::Ok(names(c)))
        .unwrap();
    assert_eq!(seen, ["seed"]);
    assert!(
        rows_read(&m, Node::Replica(0)) > replica_before,
        "on the replica: {:?}",
        conn.last_route()
    );
    drop(conn);

    m.set_delay(0, 2);
    for mode in [
        Consistency::Pin,
        Consistency::ReadYourWrites,
        Consistency::Causal,
        Consistency::Strong,
    ] {
        let name = format!("{mode:?}");
        let mut conn = cluster.get("default").unwrap();
        let replica_before = rows_read(&m, Node::Replica(0));
        cluster.with_consistency(mode, || {
            diesel::insert_into(users::table)
                .values(users::name.eq(&name))
                .execute(&mut conn)
                .unwrap();
            let seen = conn
                .read_only_transaction(|c| QueryResult::Ok(names(c)))
                .unwrap();
            assert!(seen.contains(&name), "read_only_transaction, {mode:?}");
            let seen = names(conn.replica().unwrap());
            assert!(seen.contains(&name), "replica(), {mode:?}");
        });
        assert_eq!(
            rows_read(&m, Node::Replica(0)),
            replica_before,
            "{mode:?}: the stale replica served none of it"
        );
    }
}

#[test]
fn a_token_taken_right_after_a_write_through_the_escape_hatch_carries_it() {
    let (m, cluster) = setup();
    m.pause(0);
    let mut conn = cluster.get("default").unwrap();
    conn.primary()
        .unwrap()
        .batch_execute("INSERT INTO users (name) VALUES ('hatch')")
        .unwrap();
    let token = cluster.token().to_string();
    drop(conn);
    let c = cluster.clone();
    let seen = std::thread::spawn(move || {
        let token: ConsistencyToken = token.parse().unwrap();
        c.with_token(&token, || count(&c, "hatch"))
    })
    .join()
    .unwrap();
    assert_eq!(seen.0, 1, "the token carried the write");
    m.resume(0);
}

/// The position queries (`SELECT @@gtid_binlog_pos`, not the monitor's probes) the primary
/// received after: a write transaction of three inserts, an autocommit insert, a read-only
/// transaction, a rolled-back write transaction; counted in the primary's general log.
fn position_queries_of_writes(mode: &str) -> Vec<i64> {
    let m = start("");
    m.log_statements(Node::Primary);
    let cluster = cluster_on(&m, &format!("[consistency]\nmode = \"{mode}\""));
    let calls = || m.logged(Node::Primary, "app", "SELECT @@gtid_binlog_pos");
    let mut conn = cluster.get("default").unwrap();
    let mut seen = Vec::new();
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        for name in ["a", "b", "c"] {
            diesel::insert_into(users::table)
                .values(users::name.eq(name))
                .execute(c)?;
        }
        Ok(())
    })
    .unwrap();
    seen.push(calls());
    diesel::insert_into(users::table)
        .values(users::name.eq("d"))
        .execute(&mut conn)
        .unwrap();
    seen.push(calls());
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        users::table.count().get_result::<i64>(c).map(drop)
    })
    .unwrap();
    seen.push(calls());
    let rolled_back = conn.transaction::<(), _, _>(|c| {
        diesel::insert_into(users::table)
            .values(users::name.eq("e"))
            .execute(c)?;
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(rolled_back.is_err());
    seen.push(calls());
    assert!(
        m.logged(Node::Primary, "app", "INSERT") >= 5,
        "the log sees the writes"
    );
    // each position query is one round trip: prepared once per connection, then executed
    assert!(
        m.logged_commands(
            Node::Primary,
            "app",
            &["Prepare"],
            "SELECT @@gtid_binlog_pos"
        ) <= 1,
        "prepared again for each position query"
    );
    seen
}

#[test]
fn read_your_writes_and_causal_learn_write_positions_without_a_query_per_write() {
    // the monitor's next probe of the primary covers them (`@@global.gtid_binlog_pos`)
    assert_eq!(position_queries_of_writes("read_your_writes"), [0, 0, 0, 0]);
    assert_eq!(position_queries_of_writes("causal"), [0, 0, 0, 0]);
}

#[test]
fn strong_reads_one_position_per_committed_write_transaction() {
    // one per commit, one per autocommit write, none for a read-only transaction or a rollback
    assert_eq!(position_queries_of_writes("strong"), [1, 2, 2, 2]);
}

/// What a call may take beyond its bound on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);

#[test]
fn a_read_only_workload_never_waits_on_a_frozen_primary() {
    let m = start("INSERT INTO users (name) VALUES ('ada');");
    let cluster = cluster_on(
        &m,
        "[pinning]\nseconds = 0\n[consistency]\nmode = \"eventual\"\nmonitor_interval = \"100ms\"",
    );
    assert_eq!(until_on_replica(&cluster, "ada"), (1, RouteReason::Replica));
    m.freeze(Node::Primary);
    for _ in 0..20 {
        let started = Instant::now();
        let got = count(&cluster, "ada");
        let took = started.elapsed();
        assert_eq!(got, (1, RouteReason::Replica));
        assert!(took < MARGIN, "{took:?}");
    }
    m.thaw(Node::Primary);
}

#[test]
fn primary_timeout_cuts_a_call_on_a_frozen_primary_and_says_the_outcome_is_unknown() {
    let m = start("");
    let cluster = cluster_on(&m, "[routing]\nprimary_timeout = \"500ms\"");
    let mut conn = cluster.get("default").unwrap();
    diesel::insert_into(users::table)
        .values(users::name.eq("before"))
        .execute(&mut conn)
        .unwrap();
    m.freeze(Node::Primary);
    let started = Instant::now();
    let err = diesel::insert_into(users::table)
        .values(users::name.eq("during"))
        .execute(&mut conn)
        .expect_err("the primary is frozen");
    let took = started.elapsed();
    m.thaw(Node::Primary);
    assert!(took < Duration::from_millis(500) + MARGIN, "took {took:?}");
    assert!(err.to_string().contains("outcome"), "{err}");
    // the connection is reopened, and works
    let n: i64 = users::table.count().get_result(&mut conn).unwrap();
    assert!(n >= 1);
}

/// A primary and two replicas, `r0` up to date and `r1` applying an hour late, under `mode`;
/// the monitor probes rarely, so the router learns positions from its own reads.
fn two_speeds(mode: &str) -> (MariaCluster, diesel_sharding::Cluster<MysqlConnection>) {
    let m = MariaCluster::start(2);
    m.try_sql_as(
        Node::Primary,
        "app",
        // a row every replica has: a read on the stale one counts in its statistics
        "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL); \
         INSERT INTO users (name) VALUES ('seed');",
    )
    .unwrap();
    m.wait_all_caught_up();
    m.set_delay(1, 3600);
    let cluster = two_speed_cluster(&m, mode);
    (m, cluster)
}

/// A cluster on the two-speed servers `m`.
fn two_speed_cluster(m: &MariaCluster, mode: &str) -> diesel_sharding::Cluster<MysqlConnection> {
    let settings = diesel_sharding::Settings::from_toml_str(&format!(
        "[pinning]\nseconds = 0\n[consistency]\nmode = \"{mode}\"\nmonitor_interval = \"10s\"\n\
         max_lag = \"2h\"\n\
         [databases.default]\nurl = \"{}\"\npool_size = 4\n\
         [databases.r0]\nurl = \"{}\"\nprimary = \"default\"\n\
         [databases.r1]\nurl = \"{}\"\nprimary = \"default\"\n",
        m.url(Node::Primary),
        m.url(Node::Replica(0)),
        m.url(Node::Replica(1)),
    ))
    .unwrap();
    diesel_sharding::Cluster::new(settings).unwrap()
}

/// Another client writes `name`, `r0` applies it; this thread reads until a read lands on
/// `r0` and sees it (the pool's new connections spread their first reads over the replicas).
fn read_fresh_row_on_r0(
    m: &MariaCluster,
    cluster: &diesel_sharding::Cluster<MysqlConnection>,
    name: &str,
) {
    m.try_sql_as(
        Node::Primary,
        "app",
        &format!("INSERT INTO users (name) VALUES ('{name}')"),
    )
    .unwrap();
    m.wait_applied(0, &m.primary_position());
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = cluster.get("default").unwrap();
        let seen = names(&mut conn);
        if conn.last_route().unwrap().server == "r0" {
            assert!(seen.contains(&name.to_owned()));
            return;
        }
        held.push(conn);
    }
    panic!("no read landed on r0");
}

#[test]
fn a_later_read_on_another_connection_or_a_job_never_goes_back_in_time() {
    for mode in ["read_your_writes", "eventual", "pin"] {
        let (m, cluster) = two_speeds(mode);
        read_fresh_row_on_r0(&m, &cluster, "x");
        let token = cluster.token().to_string();
        let stale_before = rows_read(&m, Node::Replica(1));
        for k in 0..10 {
            let mut conn = cluster.get("default").unwrap();
            assert!(
                names(&mut conn).contains(&"x".to_owned()),
                "{mode}, read {k}"
            );
        }
        // a job handed the token of that read, on another thread
        let c = cluster.clone();
        let seen = std::thread::spawn(move || {
            let token: ConsistencyToken = token.parse().unwrap();
            (0..10).all(|_| {
                c.with_token(&token, || {
                    names(&mut c.get("default").unwrap()).contains(&"x".to_owned())
                })
            })
        })
        .join()
        .unwrap();
        assert!(seen, "{mode}: the job went back in time");
        assert_eq!(
            rows_read(&m, Node::Replica(1)),
            stale_before,
            "{mode}: the stale replica served a read"
        );
        // the stale replica is in service: connections of a process with no history, held
        // at once, spread their first reads over both replicas, and some miss the row
        let fresh = two_speed_cluster(&m, mode);
        // (each read on a thread of its own: a thread's later reads never go back in time)
        let mut held = Vec::new();
        let mut missed = 0;
        for _ in 0..4 {
            let mut conn = fresh.get("default").unwrap();
            let (conn, seen) = std::thread::spawn(move || {
                let seen = names(&mut conn).contains(&"x".to_owned());
                (conn, seen)
            })
            .join()
            .unwrap();
            missed += usize::from(!seen);
            held.push(conn);
        }
        assert!(
            missed > 0,
            "{mode}: r1 never served a read: the test proves nothing"
        );
    }
}

#[test]
fn a_replica_made_a_primary_takes_no_reads_and_its_positions_are_not_trusted() {
    let m = start("INSERT INTO users (name) VALUES ('seed');");
    let cluster = cluster_on(
        &m,
        "[pinning]\nseconds = 0\n\
         [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"",
    );
    let eventual = |name: &str| {
        cluster.with_token(&ConsistencyToken::default(), || {
            cluster.with_consistency(Consistency::Eventual, || count(&cluster, name))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while eventual("seed") != (1, RouteReason::Replica) {
        assert!(Instant::now() < deadline, "no replica read");
        std::thread::sleep(Duration::from_millis(20));
    }
    // promoted, as a failover does: replication stopped and forgotten, writable, and a
    // history of its own
    m.sql(
        Node::Replica(0),
        "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0;",
    );
    m.try_sql_as(
        Node::Replica(0),
        "app",
        "INSERT INTO users (name) SELECT 'diverged' FROM seq_1_to_1000",
    )
    .unwrap();
    // the monitor finds it out within a few probes
    let deadline = Instant::now() + Duration::from_secs(5);
    while eventual("seed").1 == RouteReason::Replica {
        assert!(
            Instant::now() < deadline,
            "the promoted replica still takes reads"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = rows_read(&m, Node::Replica(0));
    for i in 0..10 {
        let (seen, reason) = eventual("diverged");
        assert_eq!(seen, 0, "read the promoted server's history ({reason:?})");
        let name = format!("after{i}");
        let seen = cluster.with_token(&ConsistencyToken::default(), || {
            add_user(&cluster, &name);
            count(&cluster, &name).0
        });
        assert_eq!(seen, 1, "the writer's read missed its row");
    }
    assert_eq!(
        rows_read(&m, Node::Replica(0)),
        before,
        "the promoted server ran a routed read"
    );
}

#[test]
fn after_a_failover_pooled_connections_reconnect_and_no_read_sees_the_old_primarys_history() {
    let mut m = MariaCluster::start(2);
    m.try_sql_as(
        Node::Primary,
        "app",
        "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL); \
         INSERT INTO users (name) VALUES ('seed');",
    )
    .unwrap();
    m.wait_all_caught_up();
    // replica 0 becomes the new primary; the router reads replica 1
    let cluster = Cluster::<MysqlConnection>::new(
        Settings::from_toml_str(&format!(
            "[pinning]\nseconds = 0\n\
             [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"\n\
             [databases.default]\nurl = \"{}\"\npool_size = 2\n\
             [databases.r1]\nurl = \"{}\"\nprimary = \"default\"\n",
            m.url(Node::Primary),
            m.url(Node::Replica(1)),
        ))
        .unwrap(),
    )
    .unwrap();
    let eventual = |name: &str| {
        cluster.with_token(&ConsistencyToken::default(), || {
            cluster.with_consistency(Consistency::Eventual, || count(&cluster, name))
        })
    };
    let until = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until("a replica read", &|| {
        eventual("seed") == (1, RouteReason::Replica)
    });
    // every pooled connection has the primary open when it fails over
    let held: Vec<_> = (0..2)
        .map(|i| {
            let mut conn = cluster.get("default").unwrap();
            diesel::insert_into(users::table)
                .values(users::name.eq(format!("before{i}")))
                .execute(&mut conn)
                .unwrap();
            conn
        })
        .collect();
    drop(held);

    // replica 0 stops replicating; a write only replica 1 gets (the failover loses it)
    m.sql(Node::Replica(0), "STOP SLAVE");
    m.try_sql_as(
        Node::Primary,
        "app",
        "INSERT INTO users (name) SELECT 'lost' FROM seq_1_to_1000",
    )
    .unwrap();
    let position = m.primary_position();
    m.wait_applied(1, &position);
    until("replica 1 to show the write", &|| {
        eventual("lost") == (1000, RouteReason::Replica)
    });

    // the primary dies; replica 0 is promoted at its address; replica 1, ahead of it,
    // cannot follow it
    m.fail_over(0);
    let before = rows_read(&m, Node::Replica(1));
    for i in 0..10 {
        let name = format!("after{i}");
        let seen = cluster.with_token(&ConsistencyToken::default(), || {
            add_user(&cluster, &name);
            count(&cluster, &name)
        });
        assert_eq!(
            seen.0, 1,
            "write {i}: the writer's read missed its row ({:?})",
            seen.1
        );
        let (lost, reason) = eventual("lost");
        assert_eq!(
            lost, 0,
            "read {i} saw the old primary's lost rows ({reason:?})"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(
        rows_read(&m, Node::Replica(1)),
        before,
        "the replica left with the old history ran a routed read"
    );
}
