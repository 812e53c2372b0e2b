//! No silent wrong answer: plain Diesel code on a routed connection gets the rows it would
//! get from one server. Each test runs a real primary with streaming replicas (started by
//! the suite), tries an entry point or a spelling that once gave stale or wrong rows, and
//! checks both the answer and, in each server's `pg_stat_statements`, where it ran.
#![cfg(feature = "postgres")]

mod support;

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::{PgConnection, PgRowByRowLoadingMode};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_sharding::{Cluster, ConsistencyToken, DataConsistency, RouteReason, Settings};
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "app";
const PRIMARY: Node = Node::Primary;

mod schema {
    diesel::table! {
        items (id) {
            id -> Int4,
            name -> Text,
        }
    }
}
use schema::items;

/// The DSL read of `items` as pg_stat_statements stores it.
const ITEMS_READ: &str = "SELECT \"items\".\"name\" FROM \"items\"%";

#[derive(QueryableByName, Debug)]
struct Value {
    #[diesel(sql_type = Text)]
    v: String,
}

#[derive(QueryableByName, Debug)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

struct Setup {
    pg: PgCluster,
    cluster: Cluster<PgConnection>,
}

/// A primary with `replicas` streaming replicas (named `r0`, `r1`, ...), `schema` run on the
/// primary and replayed everywhere, and a routed cluster with `settings` and `pool_size`.
fn setup(replicas: usize, settings: &str, pool_size: u32, schema: &str) -> Setup {
    let pg = PgCluster::start(replicas);
    pg.create_database(DB);
    if !schema.is_empty() {
        pg.execute(PRIMARY, DB, schema);
    }
    pg.wait_all_caught_up();
    let mut toml = format!(
        "{settings}\n[databases.default]\nurl = \"{}\"\npool_size = {pool_size}\n",
        pg.primary_url(DB)
    );
    for i in 0..replicas {
        toml += &format!(
            "[databases.r{i}]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.replica_url(i, DB)
        );
    }
    let cluster = Cluster::new(Settings::from_toml_str(&toml).unwrap()).unwrap();
    pg.reset_all_statement_stats();
    Setup { pg, cluster }
}

const ITEMS: &str = "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\
                     INSERT INTO items (name) VALUES ('public');";

impl Setup {
    fn conn(&self) -> diesel_sharding::PooledConnection<PgConnection> {
        self.cluster.get("default").unwrap()
    }

    fn calls(&self, node: Node, pattern: &str) -> i64 {
        self.pg.statement_calls(node, pattern)
    }

    /// Calls of `pattern` on every replica.
    fn replica_calls(&self, pattern: &str) -> i64 {
        (0..self.pg.replicas())
            .map(|i| self.calls(Node::Replica(i), pattern))
            .sum()
    }
}

fn names(
    conn: &mut impl diesel::connection::LoadConnection<Backend = diesel::pg::Pg>,
) -> Vec<String> {
    items::table
        .select(items::name)
        .order(items::id)
        .load(conn)
        .unwrap()
}

fn value(conn: &mut diesel_sharding::PooledConnection<PgConnection>, sql: &str) -> String {
    diesel::sql_query(sql).get_result::<Value>(conn).unwrap().v
}

fn reason(conn: &diesel_sharding::PooledConnection<PgConnection>) -> RouteReason {
    conn.last_route().unwrap().reason
}

// -- 1. session state follows the session ---------------------------------------------------

#[test]
fn set_role_keeps_the_session_on_the_primary_and_the_next_checkout_is_itself_again() {
    let s = setup(
        1,
        "[pinning]\nseconds = 0",
        1,
        "CREATE TABLE secret (s text); INSERT INTO secret VALUES ('classified');\
         CREATE ROLE limited;",
    );
    let read_secret = "SELECT s AS v FROM secret /* secret-probe */";
    type Conn = diesel_sharding::PooledConnection<PgConnection>;
    let set_roles: [fn(&mut Conn); 3] = [
        |c| c.batch_execute("SET ROLE limited").unwrap(),
        |c| {
            diesel::sql_query("/* app */ set role limited")
                .execute(c)
                .unwrap();
        },
        |c| {
            c.batch_execute("SET SESSION AUTHORIZATION limited")
                .unwrap()
        },
    ];
    for set_role in set_roles {
        let mut conn = s.conn();
        set_role(&mut conn);
        let denied = diesel::sql_query(read_secret).get_result::<Value>(&mut conn);
        let err = denied.expect_err("the limited role must not read the secret");
        assert!(err.to_string().contains("permission denied"), "{err}");
        assert_eq!(reason(&conn), RouteReason::Session);
        drop(conn);
        // the next checkout (the same pooled connection: pool_size = 1) is the login role
        let mut conn = s.conn();
        assert_eq!(value(&mut conn, read_secret), "classified");
        assert_eq!(reason(&conn), RouteReason::Replica);
        conn.stick_to_primary();
        assert_eq!(
            value(&mut conn, "SELECT current_user::text AS v"),
            "postgres"
        );
    }
    // failed statements are not in pg_stat_statements: the server logs tell where they ran
    assert!(s.pg.log_contains(PRIMARY, "permission denied for table secret") >= 3);
    assert_eq!(
        s.pg.log_contains(Node::Replica(0), "permission denied"),
        0,
        "no denied read ran on the replica"
    );
    assert_eq!(
        s.calls(Node::Replica(0), "SELECT s AS v FROM secret%"),
        3,
        "the reads after check-in ran on the replica"
    );
}

#[test]
fn search_path_time_zone_and_set_config_follow_the_session_and_are_reset_at_check_in() {
    let s = setup(
        1,
        "[pinning]\nseconds = 0",
        1,
        &format!(
            "{ITEMS} CREATE SCHEMA app; CREATE TABLE app.items (id serial PRIMARY KEY, name text NOT NULL);\
             INSERT INTO app.items (name) VALUES ('app');"
        ),
    );
    let mut conn = s.conn();
    diesel::sql_query("SET search_path TO app, public")
        .execute(&mut conn)
        .unwrap();
    assert_eq!(names(&mut conn), ["app"]);
    assert_eq!(reason(&conn), RouteReason::Session);
    conn.batch_execute("SET TIME ZONE 'Asia/Tokyo'").unwrap();
    assert_eq!(
        value(&mut conn, "SELECT current_setting('TimeZone') AS v"),
        "Asia/Tokyo"
    );
    assert_eq!(
        value(
            &mut conn,
            "SELECT set_config('application_name', 'routed-x', false) AS v"
        ),
        "routed-x"
    );
    assert_eq!(
        value(&mut conn, "SELECT current_setting('application_name') AS v"),
        "routed-x"
    );
    assert_eq!(s.replica_calls(ITEMS_READ), 0);
    assert_eq!(s.replica_calls("SELECT current_setting%"), 0);
    drop(conn);

    let mut conn = s.conn();
    assert_eq!(names(&mut conn), ["public"]);
    assert_eq!(reason(&conn), RouteReason::Replica);
    // on the primary too: its session was reset
    conn.stick_to_primary();
    assert_eq!(names(&mut conn), ["public"]);
    assert_eq!(
        value(&mut conn, "SELECT current_setting('TimeZone') AS v"),
        "UTC"
    );
    assert_ne!(
        value(&mut conn, "SELECT current_setting('application_name') AS v"),
        "routed-x"
    );
}

#[test]
fn temporary_tables_follow_the_session_and_are_gone_at_the_next_checkout() {
    let s = setup(1, "[pinning]\nseconds = 0", 1, ITEMS);
    let mut conn = s.conn();
    conn.batch_execute(
        "CREATE TEMP TABLE items (id serial PRIMARY KEY, name text NOT NULL);\
         INSERT INTO items (name) VALUES ('temp');",
    )
    .unwrap();
    assert_eq!(
        names(&mut conn),
        ["temp"],
        "the temporary table shadows items"
    );
    diesel::sql_query("CREATE TEMPORARY TABLE scratch (x int)")
        .execute(&mut conn)
        .unwrap();
    let n = diesel::sql_query("SELECT count(*) AS n FROM scratch")
        .get_result::<Count>(&mut conn)
        .unwrap()
        .n;
    assert_eq!(n, 0);
    assert_eq!(s.replica_calls(ITEMS_READ), 0);
    drop(conn);

    let mut conn = s.conn();
    assert_eq!(names(&mut conn), ["public"]);
    conn.stick_to_primary();
    assert_eq!(names(&mut conn), ["public"], "DISCARD TEMP ran at check-in");
    assert!(diesel::sql_query("SELECT count(*) AS n FROM scratch")
        .get_result::<Count>(&mut conn)
        .is_err());
}

#[test]
fn discard_all_releases_the_session_and_set_local_never_holds_it() {
    let s = setup(1, "[pinning]\nseconds = 0", 1, ITEMS);
    let mut conn = s.conn();
    conn.transaction(|c| {
        diesel::sql_query("SET LOCAL statement_timeout = 1000").execute(c)?;
        names(c);
        QueryResult::Ok(())
    })
    .unwrap();
    assert_eq!(names(&mut conn), ["public"]);
    assert_eq!(
        reason(&conn),
        RouteReason::Replica,
        "SET LOCAL ended with its transaction"
    );

    conn.batch_execute("SET search_path TO public").unwrap();
    names(&mut conn);
    assert_eq!(reason(&conn), RouteReason::Session);
    // DISCARD ALL also drops Diesel's prepared statements on the primary, as it would on a
    // plain connection; the reads after it go to the replica again
    conn.batch_execute("DISCARD ALL").unwrap();
    assert_eq!(names(&mut conn), ["public"]);
    assert_eq!(reason(&conn), RouteReason::Replica);
}

#[test]
fn a_session_advisory_lock_is_taken_on_the_primary_and_released_at_check_in() {
    let s = setup(1, "[pinning]\nseconds = 0", 2, ITEMS);
    let mut conn = s.conn();
    diesel::sql_query("SELECT 'locked' AS v FROM pg_advisory_lock(42)")
        .get_result::<Value>(&mut conn)
        .unwrap();
    assert_eq!(reason(&conn), RouteReason::WriteFunction);
    // a lock does not change what reads see: they still go to the replica
    names(&mut conn);
    assert_eq!(reason(&conn), RouteReason::Replica);
    // it really is held on the primary
    let mut other = PgConnection::establish(&s.pg.primary_url(DB)).unwrap();
    let got: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
        "pg_try_advisory_lock(42)",
    ))
    .get_result(&mut other)
    .unwrap();
    assert!(!got, "the lock is held by the routed session");
    drop(conn);
    // released at check-in: the session is closed (no I/O at check-in), and the server
    // releases its locks as its backend exits, a few milliseconds later, as when a plain
    // PgConnection is dropped
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let got = loop {
        let got: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "pg_try_advisory_lock(42)",
        ))
        .get_result(&mut other)
        .unwrap();
        if got || std::time::Instant::now() >= deadline {
            break got;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(got, "check-in released the session's locks");
}

// -- 2. hand-written transactions ----------------------------------------------------------------

/// A cluster whose only replica never replays anything new: any read that runs there and
/// should see a new row does not.
fn stale_setup(mode: &str) -> Setup {
    let s = setup(
        1,
        &format!("[pinning]\nseconds = 15\n[consistency]\nmode = \"{mode}\"\nmonitor_interval = \"50ms\""),
        4,
        ITEMS,
    );
    s.pg.pause_replay(0);
    s
}

fn insert(conn: &mut diesel_sharding::PooledConnection<PgConnection>, name: &str) {
    diesel::insert_into(items::table)
        .values(items::name.eq(name))
        .execute(conn)
        .unwrap();
}

#[test]
fn a_transaction_begun_by_hand_in_any_spelling_reads_its_own_rows() {
    let s = stale_setup("read_your_writes");
    let begins: [fn(&mut diesel_sharding::PooledConnection<PgConnection>); 4] = [
        |c| c.batch_execute("/* app */ BEGIN").unwrap(),
        |c| {
            diesel::sql_query("BEGIN").execute(c).unwrap();
        },
        |c| {
            c.batch_execute("-- tx\nstart transaction isolation level read committed")
                .unwrap()
        },
        |c| c.batch_execute("SELECT 1; BEGIN").unwrap(),
    ];
    for (k, begin) in begins.into_iter().enumerate() {
        let mut conn = s.conn();
        begin(&mut conn);
        let name = format!("in-tx-{k}");
        insert(&mut conn, &name);
        assert!(names(&mut conn).contains(&name), "spelling {k}");
        assert_eq!(reason(&conn), RouteReason::Transaction, "spelling {k}");
        conn.batch_execute("COMMIT").unwrap();
    }
    assert_eq!(s.replica_calls(ITEMS_READ), 0);
    assert_eq!(s.calls(PRIMARY, ITEMS_READ), 4);
}

#[test]
fn a_transaction_committed_by_hand_is_seen_by_the_next_read_in_every_mode() {
    for mode in ["pin", "read_your_writes", "causal"] {
        let s = stale_setup(mode);
        // BEGIN and the insert in one batch, COMMIT in another
        let mut conn = s.conn();
        conn.batch_execute("BEGIN; INSERT INTO items (name) VALUES ('split')")
            .unwrap();
        conn.batch_execute("COMMIT").unwrap();
        assert!(names(&mut conn).contains(&"split".to_string()), "{mode}");
        drop(conn);
        // a whole transaction in one batch on conn A, read on conn B of the same thread
        let mut a = s.conn();
        let mut b = s.conn();
        a.batch_execute("BEGIN; INSERT INTO items (name) VALUES ('whole'); COMMIT;")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(names(&mut b).contains(&"whole".to_string()), "{mode}");
        assert_ne!(reason(&b), RouteReason::Replica, "{mode}");
        assert_eq!(s.replica_calls(ITEMS_READ), 0, "{mode}");
    }
}

#[test]
fn a_transaction_whose_commit_fails_does_not_keep_the_connection_on_the_primary() {
    let s = setup(
        1,
        "[pinning]\nseconds = 0",
        1,
        &format!(
            "{ITEMS} CREATE TABLE parent (id int PRIMARY KEY);\
             CREATE TABLE child (parent_id int REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
        ),
    );
    let mut conn = s.conn();
    let failed = conn.transaction(|c| {
        diesel::sql_query("INSERT INTO child VALUES (1)").execute(c)?;
        QueryResult::Ok(())
    });
    assert!(failed.is_err(), "the deferred foreign key fails the COMMIT");
    assert_eq!(names(&mut conn), ["public"]);
    assert_eq!(reason(&conn), RouteReason::Replica);
    assert_eq!(s.calls(Node::Replica(0), ITEMS_READ), 1);
}

// -- 3. every way to read honours positions and pins -------------------------------------------

#[test]
fn read_only_transactions_and_replica_connections_see_the_threads_writes_in_every_mode() {
    for mode in ["pin", "read_your_writes", "causal", "strong"] {
        let s = stale_setup(mode);
        let mut conn = s.conn();
        insert(&mut conn, "mine");
        let seen = conn
            .read_only_transaction(|c| QueryResult::Ok(names(c)))
            .unwrap();
        assert!(
            seen.contains(&"mine".to_string()),
            "read_only_transaction, {mode}"
        );
        let seen = names(conn.replica().unwrap());
        assert!(seen.contains(&"mine".to_string()), "replica(), {mode}");
        assert_eq!(s.replica_calls(ITEMS_READ), 0, "{mode}");
        assert_eq!(s.calls(PRIMARY, ITEMS_READ), 2, "{mode}");
    }
}

#[test]
fn read_only_transactions_still_use_a_replica_when_nothing_holds_them_back() {
    let s = setup(1, "[pinning]\nseconds = 0", 2, ITEMS);
    let mut conn = s.conn();
    let seen = conn
        .read_only_transaction(|c| QueryResult::Ok(names(c)))
        .unwrap();
    assert_eq!(seen, ["public"]);
    assert_eq!(s.calls(Node::Replica(0), ITEMS_READ), 1);
}

fn seen_by_a_job(s: &Setup, token: &ConsistencyToken, name: &str) -> bool {
    let cluster = s.cluster.clone();
    let token = token.to_string();
    let name = name.to_owned();
    std::thread::spawn(move || {
        let token: ConsistencyToken = token.parse().unwrap();
        let sticky = cluster
            .run_job(&token, DataConsistency::Sticky, || {
                names(&mut cluster.get("default").unwrap()).contains(&name)
            })
            .unwrap();
        let scoped = cluster.with_token(&token, || {
            names(&mut cluster.get("default").unwrap()).contains(&name)
        });
        sticky && scoped
    })
    .join()
    .unwrap()
}

#[test]
fn a_token_taken_right_after_a_write_through_the_escape_hatch_carries_it() {
    let s = stale_setup("read_your_writes");
    let mut conn = s.conn();
    conn.primary()
        .unwrap()
        .batch_execute("INSERT INTO items (name) VALUES ('hatch')")
        .unwrap();
    let token = s.cluster.token();
    drop(conn);
    assert!(seen_by_a_job(&s, &token, "hatch"), "token {token}");
    assert_eq!(s.replica_calls(ITEMS_READ), 0);
}

#[test]
fn a_token_taken_after_a_row_by_row_insert_returning_carries_it() {
    let s = stale_setup("read_your_writes");
    let mut conn = s.conn();
    let ids: Vec<i32> = diesel::insert_into(items::table)
        .values(items::name.eq("rows"))
        .returning(items::id)
        .load_iter::<i32, PgRowByRowLoadingMode>(&mut conn)
        .unwrap()
        .collect::<QueryResult<_>>()
        .unwrap();
    assert_eq!(ids.len(), 1);
    let token = s.cluster.token();
    drop(conn);
    assert!(seen_by_a_job(&s, &token, "rows"), "token {token}");
    assert_eq!(s.replica_calls(ITEMS_READ), 0);
}

// -- 4. monotonic reads ------------------------------------------------------------------------

/// Replica 0 is current, replica 1 a second behind; the monitor probes rarely, so its
/// cached positions are old.
fn two_speed_setup(mode: &str) -> Setup {
    let s = setup(
        2,
        &format!(
            "[pinning]\nseconds = 0\n[consistency]\nmode = \"{mode}\"\nmonitor_interval = \"10s\""
        ),
        4,
        ITEMS,
    );
    s.pg.set_apply_delay(1, Duration::from_secs(3600));
    s
}

/// Another client writes `name` on the primary, replica 0 replays it; then this thread reads
/// until a read lands on replica 0 and sees it.
fn read_fresh_row_from_the_current_replica(s: &Setup, name: &str) {
    s.pg.execute(
        PRIMARY,
        DB,
        &format!("INSERT INTO items (name) VALUES ('{name}')"),
    );
    s.pg.wait_caught_up(0);
    // several connections at once: the pool opens new ones, and the read strategy spreads
    // their first reads over the replicas
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = s.conn();
        let seen = names(&mut conn);
        let route = conn.last_route().unwrap();
        if route.server == "r0" {
            assert!(seen.contains(&name.to_string()));
            return;
        }
        held.push(conn);
    }
    panic!("no read landed on r0");
}

#[test]
fn a_token_taken_after_a_read_never_sends_a_job_back_in_time() {
    for mode in ["read_your_writes", "eventual"] {
        let s = two_speed_setup(mode);
        read_fresh_row_from_the_current_replica(&s, "x");
        let token = s.cluster.token();
        let before = s.calls(Node::Replica(1), ITEMS_READ);
        for _ in 0..10 {
            assert!(seen_by_a_job(&s, &token, "x"), "{mode}, token {token}");
        }
        assert_eq!(
            s.calls(Node::Replica(1), ITEMS_READ),
            before,
            "{mode}: the replica that is behind served none of the job's reads"
        );
    }
}

#[test]
fn a_later_read_on_another_connection_never_goes_back_in_time() {
    for mode in ["read_your_writes", "eventual", "pin"] {
        let s = two_speed_setup(mode);
        read_fresh_row_from_the_current_replica(&s, "x");
        let before = s.calls(Node::Replica(1), ITEMS_READ);
        for k in 0..10 {
            let mut conn = s.conn();
            assert!(
                names(&mut conn).contains(&"x".to_string()),
                "{mode}, read {k}"
            );
        }
        assert_eq!(s.calls(Node::Replica(1), ITEMS_READ), before, "{mode}");
    }
}

// -- 5. positions that go backwards --------------------------------------------------------------

#[test]
fn a_replica_that_restarts_behind_what_it_had_replayed_is_learned_anew() {
    let s = setup(
        1,
        "[pinning]\nseconds = 0\n[routing]\nreplica_retry = \"100ms\"\n[consistency]\nmonitor_interval = \"50ms\"",
        2,
        ITEMS,
    );
    // a restart point on the replica before the write, so a crash replays from there
    s.pg.execute(PRIMARY, DB, "CHECKPOINT");
    s.pg.wait_caught_up(0);
    s.pg.execute(Node::Replica(0), "postgres", "CHECKPOINT");
    let mut conn = s.conn();
    insert(&mut conn, "mine");
    s.pg.wait_caught_up(0);
    std::thread::sleep(Duration::from_millis(150)); // the monitor's probe covers the write
    assert!(names(&mut conn).contains(&"mine".to_string()));
    assert_eq!(
        reason(&conn),
        RouteReason::Replica,
        "the router saw r0 replay the write"
    );
    drop(conn);
    // it restarts and holds every commit younger than an hour: the write is gone there
    s.pg.set_apply_delay(0, Duration::from_secs(3600));
    s.pg.kill_replica(0);
    s.pg.start_replica_accepting_connections(0);
    let on_replica = s.pg.query_i64(
        Node::Replica(0),
        DB,
        "SELECT count(*) FROM items WHERE name = 'mine'",
    );
    assert_eq!(
        on_replica, 0,
        "the restarted replica has not replayed the write again"
    );
    let before = s.calls(Node::Replica(0), ITEMS_READ);
    let until = Instant::now() + Duration::from_secs(2);
    let mut reads = 0;
    while Instant::now() < until {
        let mut conn = s.conn();
        assert!(
            names(&mut conn).contains(&"mine".to_string()),
            "read {reads}"
        );
        reads += 1;
    }
    assert!(reads > 5);
    assert_eq!(s.calls(Node::Replica(0), ITEMS_READ), before);
}

// -- 6. the classifier, on the servers ----------------------------------------------------------

fn lock_is_held_elsewhere(s: &Setup, key: i64) -> bool {
    let mut other = PgConnection::establish(&s.pg.primary_url(DB)).unwrap();
    let got: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "pg_try_advisory_lock({key})"
    )))
    .get_result(&mut other)
    .unwrap();
    !got
}

#[test]
fn advisory_locks_in_any_spelling_are_taken_on_the_primary() {
    let s = setup(
        1,
        "[pinning]\nseconds = 0\n[routing]\nwrite_functions = [\"app_lock\", \"touch_item\"]",
        4,
        &format!(
            "{ITEMS} CREATE FUNCTION app_lock(k bigint) RETURNS bool LANGUAGE sql AS 'SELECT pg_try_advisory_lock(k)';\
             CREATE SEQUENCE s;\
             CREATE TABLE touched (n int); INSERT INTO touched VALUES (0);\
             CREATE FUNCTION touch_item(items) RETURNS int LANGUAGE sql AS 'UPDATE touched SET n = n + 1 RETURNING n';"
        ),
    );
    for (key, sql) in [
        (1, "SELECT /*! ' */ pg_try_advisory_lock(1)::text AS v --'"),
        (2, r#"SELECT U&"pg_try_advisory_loc\006B"(2)::text AS v"#),
        (3, "SELECT app_lock(3)::text AS v"),
    ] {
        let mut conn = s.conn();
        assert_eq!(value(&mut conn, sql), "true", "{sql}");
        assert!(
            lock_is_held_elsewhere(&s, key),
            "{sql}: the lock is on the primary"
        );
    }
    let mut conn = s.conn();
    value(&mut conn, "SELECT /*! ' */ nextval('s')::text AS v --'");
    value(&mut conn, r#"SELECT U&"nextva\006C"('s')::text AS v"#);
    value(
        &mut conn,
        "SELECT i.touch_item::text AS v FROM items i LIMIT 1",
    );
    assert_eq!(s.pg.query_i64(PRIMARY, DB, "SELECT n FROM touched"), 1);
    assert_eq!(s.replica_calls("%advisory%"), 0);
    assert_eq!(s.replica_calls("%nextva%"), 0);
}

#[test]
fn with_unknown_functions_on_the_primary_an_unnamed_locking_function_locks_the_primary() {
    let s = setup(
        1,
        "[pinning]\nseconds = 0\n[routing]\nunknown_functions = \"primary\"\nread_functions = [\"score\"]",
        2,
        &format!(
            "{ITEMS} CREATE FUNCTION app_lock(k bigint) RETURNS bool LANGUAGE sql AS 'SELECT pg_try_advisory_lock(k)';\
             CREATE FUNCTION score(n int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT n * 2';"
        ),
    );
    let mut conn = s.conn();
    assert_eq!(value(&mut conn, "SELECT app_lock(9)::text AS v"), "true");
    assert_eq!(reason(&conn), RouteReason::WriteFunction);
    assert!(lock_is_held_elsewhere(&s, 9), "the lock is on the primary");
    // named read functions and built-in ones still read from the replica (once it has
    // replayed what the unknown function may have written)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(
            value(&mut conn, "SELECT score(length(lower('x')))::text AS v"),
            "2"
        );
        if reason(&conn) == RouteReason::Replica {
            break;
        }
        assert!(Instant::now() < deadline, "the replica never took the read");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.replica_calls("SELECT app_lock%"), 0);
}

#[test]
fn explain_without_analyze_reads_from_a_replica() {
    let s = setup(1, "[pinning]\nseconds = 0", 1, ITEMS);
    let mut conn = s.conn();
    diesel::sql_query("EXPLAIN (ANALYZE FALSE) SELECT * FROM items")
        .execute(&mut conn)
        .ok();
    let plan = diesel::sql_query("EXPLAIN (ANALYZE FALSE, COSTS OFF) SELECT name AS v FROM items")
        .load::<PlanLine>(&mut conn)
        .unwrap();
    assert!(!plan.is_empty());
    assert_eq!(reason(&conn), RouteReason::Replica);
}

#[derive(QueryableByName, Debug)]
#[allow(dead_code)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[test]
fn per_table_positions_never_miss_a_table_after_a_subquery_a_function_or_an_alias_list() {
    let s = setup(
        1,
        "[pinning]\nseconds = 0\n[consistency]\ngranularity = \"table\"\nmonitor_interval = \"50ms\"",
        2,
        &format!("{ITEMS} CREATE TABLE other (a int, b int); INSERT INTO other VALUES (1, 2);"),
    );
    s.pg.pause_replay(0);
    let mut conn = s.conn();
    insert(&mut conn, "fresh");
    for sql in [
        "SELECT count(*) AS n FROM (SELECT 1) AS s, items WHERE items.name = 'fresh'",
        "SELECT count(*) AS n FROM generate_series(1, 1) AS g, items WHERE items.name = 'fresh'",
        "SELECT count(*) AS n FROM other AS o(x, y), items WHERE items.name = 'fresh'",
    ] {
        let n = diesel::sql_query(sql)
            .get_result::<Count>(&mut conn)
            .unwrap()
            .n;
        assert_eq!(n, 1, "{sql}");
    }
    assert_eq!(s.replica_calls("SELECT count(*) AS n FROM %"), 0);
}

// -- 7. tokens in modes without positions ---------------------------------------------------------

#[test]
fn tokens_carry_the_writes_in_pin_and_eventual_too() {
    for mode in ["pin", "eventual", "read_your_writes", "causal"] {
        let s = stale_setup(mode);
        let mut conn = s.conn();
        insert(&mut conn, "tok");
        drop(conn);
        let token = s.cluster.token();
        assert!(!token.is_empty(), "{mode}: the token names the write");
        assert!(seen_by_a_job(&s, &token, "tok"), "{mode}, token {token}");
        // and a Delayed job waits, then says so, instead of reading stale data
        let delayed = s.cluster.run_job(
            &token,
            DataConsistency::Delayed(Duration::from_millis(100)),
            || (),
        );
        assert!(delayed.is_err(), "{mode}: no replica has the write");
        assert_eq!(s.replica_calls(ITEMS_READ), 0, "{mode}");
    }
}
