//! Replication positions against real lag: a primary and two streaming replicas, one delayed
//! with `recovery_min_apply_delay`, one paused with `pg_wal_replay_pause()`. Where every read
//! ran is checked in each server's `pg_stat_statements`; what it returned is checked against
//! what it had to see (zero stale reads).
#![cfg(feature = "postgres")]

mod support;

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use diesel_sharding::{
    Cluster, Consistency, ConsistencyToken, DataConsistency, RouteReason, Settings,
};
use support::pg_cluster::{Node, PgCluster};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const DB: &str = "app";
const DELAYED: usize = 0;
const PAUSED: usize = 1;

mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            name -> Text,
            email -> Text,
        }
    }
}
use schema::users;

/// The count query as pg_stat_statements stores it.
const COUNT_NAMED: &str = "SELECT COUNT(*) FROM \"users\" WHERE (\"users\".\"name\" = $1)";

struct Setup {
    pg: PgCluster,
    cluster: Cluster<PgConnection>,
}

/// A cluster with `replicas` replicas and the app's schema, replicated.
fn start_app(replicas: usize) -> PgCluster {
    let pg = PgCluster::start(replicas);
    pg.create_database(DB);
    PgConnection::establish(&pg.primary_url(DB))
        .unwrap()
        .run_pending_migrations(MIGRATIONS)
        .unwrap();
    pg.wait_all_caught_up();
    pg
}

fn setup(consistency: &str) -> Setup {
    let pg = start_app(2);
    let settings = Settings::from_toml_str(&format!(
        "[routing]\nreplica_retry = \"200ms\"\n\
         [consistency]\nmonitor_interval = \"50ms\"\n{consistency}\n\
         [databases.default]\nurl = \"{}\"\n\
         [databases.delayed]\nurl = \"{}\"\nprimary = \"default\"\n\
         [databases.paused]\nurl = \"{}\"\nprimary = \"default\"\n",
        pg.primary_url(DB),
        pg.replica_url(DELAYED, DB),
        pg.replica_url(PAUSED, DB),
    ))
    .unwrap();
    let cluster = Cluster::new(settings).unwrap();
    // the monitor probes a database's servers from the process's first checkout of it
    drop(cluster.get("default").unwrap());
    pg.reset_all_statement_stats();
    Setup { pg, cluster }
}

impl Setup {
    fn calls(&self, node: Node) -> i64 {
        self.pg.statement_calls(node, COUNT_NAMED)
    }

    /// (primary, delayed, paused) calls of the count query.
    fn where_ran(&self) -> (i64, i64, i64) {
        (
            self.calls(Node::Primary),
            self.calls(Node::Replica(DELAYED)),
            self.calls(Node::Replica(PAUSED)),
        )
    }

    fn lag(&self, delay: Duration) {
        self.pg.set_apply_delay(DELAYED, delay);
        self.pg.pause_replay(PAUSED);
    }
}

fn add_user(cluster: &Cluster<PgConnection>, name: &str) {
    let mut conn = cluster.get("default").unwrap();
    diesel::insert_into(users::table)
        .values((
            users::name.eq(name),
            users::email.eq(format!("{name}@example.com")),
        ))
        .execute(&mut conn)
        .unwrap();
}

fn count(cluster: &Cluster<PgConnection>, name: &str) -> (i64, RouteReason) {
    let mut conn = cluster.get("default").unwrap();
    let n = users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(&mut conn)
        .unwrap();
    (n, conn.last_route().unwrap().reason)
}

#[test]
fn the_writer_sees_its_row_at_once_and_reads_a_replica_as_soon_as_it_has_replayed_the_write() {
    let s = setup("mode = \"read_your_writes\"");
    s.lag(Duration::from_millis(400));
    let written = Instant::now();
    add_user(&s.cluster, "ada");
    assert_eq!(
        count(&s.cluster, "ada"),
        (1, RouteReason::Behind),
        "not stale"
    );
    assert_eq!(s.where_ran(), (1, 0, 0), "ran on the primary");
    s.pg.wait_caught_up(DELAYED);
    assert_eq!(count(&s.cluster, "ada"), (1, RouteReason::Replica));
    assert_eq!(
        s.where_ran(),
        (1, 1, 0),
        "ran on the delayed replica once it replayed the write"
    );
    assert!(
        written.elapsed() < Duration::from_secs(15),
        "no 15 s time window involved"
    );
}

#[test]
fn another_thread_reads_a_stale_replica_in_read_your_writes_but_sees_the_row_in_causal() {
    let s = setup("mode = \"read_your_writes\"");
    s.lag(Duration::from_secs(3600));
    add_user(&s.cluster, "ada");
    let cluster = s.cluster.clone();
    let other = std::thread::spawn(move || count(&cluster, "ada"))
        .join()
        .unwrap();
    assert_eq!(
        other,
        (0, RouteReason::Replica),
        "read_your_writes covers only the writer"
    );
    assert_eq!(s.where_ran().0, 0);

    let cluster = s.cluster.clone();
    let causal = std::thread::spawn(move || {
        cluster.with_consistency(Consistency::Causal, || count(&cluster, "ada"))
    })
    .join()
    .unwrap();
    assert_eq!(
        causal,
        (1, RouteReason::Behind),
        "causal: any thread's write is seen"
    );
    assert_eq!(
        s.where_ran().0,
        1,
        "on the primary, the replicas being behind"
    );
}

#[test]
fn causal_reads_go_to_a_replica_once_it_has_replayed_every_write_of_the_process() {
    let s = setup("mode = \"causal\"");
    s.lag(Duration::from_millis(300));
    add_user(&s.cluster, "ada");
    s.pg.wait_caught_up(DELAYED);
    let cluster = s.cluster.clone();
    let seen = std::thread::spawn(move || count(&cluster, "ada"))
        .join()
        .unwrap();
    assert_eq!(seen, (1, RouteReason::Replica));
    assert_eq!(s.where_ran(), (0, 1, 0));
}

#[test]
fn a_job_on_another_thread_handed_the_token_as_a_string_sees_the_row() {
    let s = setup("mode = \"read_your_writes\"");
    s.lag(Duration::from_secs(3600));
    add_user(&s.cluster, "ada");
    let token = s.cluster.token().to_string();
    assert!(token.starts_with("default-"), "{token}");

    let cluster = s.cluster.clone();
    let payload = token.clone();
    let seen = std::thread::spawn(move || {
        let token: ConsistencyToken = payload.parse().unwrap();
        cluster
            .run_job(&token, DataConsistency::Sticky, || count(&cluster, "ada"))
            .unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(seen, (1, RouteReason::Behind));

    // delayed: not run while no replica has the write; run on a replica once one has
    let cluster = s.cluster.clone();
    let payload = token.clone();
    let early = std::thread::spawn(move || {
        let token: ConsistencyToken = payload.parse().unwrap();
        cluster.run_job(
            &token,
            DataConsistency::Delayed(Duration::from_millis(200)),
            || count(&cluster, "ada"),
        )
    })
    .join()
    .unwrap();
    let delayed = early.unwrap_err();
    assert_eq!(delayed.database, "default");
    assert!(
        delayed.to_string().contains("retry the job later"),
        "{delayed}"
    );

    s.pg.set_apply_delay(DELAYED, Duration::ZERO);
    let cluster = s.cluster.clone();
    let later = std::thread::spawn(move || {
        let token: ConsistencyToken = token.parse().unwrap();
        cluster.run_job(
            &token,
            DataConsistency::Delayed(Duration::from_secs(10)),
            || count(&cluster, "ada"),
        )
    })
    .join()
    .unwrap();
    assert_eq!(later.unwrap(), (1, RouteReason::Replica));
    assert_eq!(
        s.calls(Node::Replica(PAUSED)),
        0,
        "the paused replica never served it"
    );
}

#[test]
fn a_job_that_only_read_passes_on_what_it_read() {
    let s = setup("mode = \"read_your_writes\"");
    // another client writes; the replica that replays it is read; the token carries that
    s.pg.pause_replay(PAUSED);
    s.pg.execute(
        Node::Primary,
        DB,
        "INSERT INTO users (name, email) VALUES ('bob', 'bob@example.com')",
    );
    s.pg.wait_caught_up(DELAYED);
    let (seen, token) = std::thread::spawn({
        let cluster = s.cluster.clone();
        // strong only steers this read to the replica that has bob; the thread writes nothing
        move || {
            let seen = cluster.with_consistency(Consistency::Strong, || count(&cluster, "bob"));
            (seen, cluster.token())
        }
    })
    .join()
    .unwrap();
    assert_eq!(seen, (1, RouteReason::Replica));
    assert!(
        token.position("default").is_some(),
        "a reader's token: {token}"
    );
    // a job with that token never reads the paused replica, which is older
    let cluster = s.cluster.clone();
    for _ in 0..6 {
        let (n, _) = cluster
            .run_job(&token, DataConsistency::Sticky, || count(&cluster, "bob"))
            .unwrap();
        assert_eq!(n, 1);
    }
    assert_eq!(s.calls(Node::Replica(PAUSED)), 0);
}

#[test]
fn strong_sees_a_row_committed_by_another_client_at_once() {
    let s = setup("mode = \"read_your_writes\"");
    s.lag(Duration::from_secs(3600));
    s.pg.execute(
        Node::Primary,
        DB,
        "INSERT INTO users (name, email) VALUES ('eve', 'eve@example.com')",
    );
    assert_eq!(
        count(&s.cluster, "eve"),
        (0, RouteReason::Replica),
        "read_your_writes: stale"
    );
    s.pg.reset_all_statement_stats();
    let strong = s
        .cluster
        .with_consistency(Consistency::Strong, || count(&s.cluster, "eve"));
    assert_eq!(strong, (1, RouteReason::Behind));
    s.pg.set_apply_delay(DELAYED, Duration::ZERO);
    s.pg.wait_caught_up(DELAYED);
    let strong = s
        .cluster
        .with_consistency(Consistency::Strong, || count(&s.cluster, "eve"));
    assert_eq!(
        strong,
        (1, RouteReason::Replica),
        "and from a replica once one has it"
    );
    assert_eq!(s.calls(Node::Replica(PAUSED)), 0);
}

#[test]
fn a_read_waits_up_to_replica_wait_for_a_replica_to_catch_up() {
    let s = setup("mode = \"read_your_writes\"\nreplica_wait = \"3s\"");
    s.lag(Duration::from_millis(300));
    add_user(&s.cluster, "ada");
    let started = Instant::now();
    assert_eq!(count(&s.cluster, "ada"), (1, RouteReason::Replica));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.where_ran(), (0, 1, 0), "waited for the delayed replica");
}

#[test]
fn a_replica_past_both_lag_limits_takes_no_reads_in_any_mode() {
    let s = setup("mode = \"eventual\"\nmax_lag = \"200ms\"\nmax_lag_bytes = 1000");
    s.pg.pause_replay(PAUSED);
    for i in 0..50 {
        s.pg.execute(
            Node::Primary,
            DB,
            &format!("INSERT INTO users (name, email) VALUES ('u{i}', 'u{i}@example.com')"),
        );
    }
    std::thread::sleep(Duration::from_millis(600)); // the monitor sees the lag
    s.pg.reset_all_statement_stats();
    let cluster = s.cluster.clone();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let c = cluster.clone();
            std::thread::spawn(move || count(&c, "u1"))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().0, 1);
    }
    let (_, delayed, paused) = s.where_ran();
    assert_eq!(paused, 0, "the lagging replica took no reads");
    assert_eq!(delayed, 8);

    // both lagging: the primary, with the reason
    s.pg.pause_replay(DELAYED);
    s.pg.execute(
        Node::Primary,
        DB,
        "INSERT INTO users (name, email) VALUES ('x', 'x@e')",
    );
    for i in 0..50 {
        s.pg.execute(
            Node::Primary,
            DB,
            &format!("UPDATE users SET email = 'v{i}' WHERE name = 'x'"),
        );
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(count(&s.cluster, "x"), (1, RouteReason::Lagging));
}

#[test]
fn a_killed_and_a_frozen_replica_do_not_fail_reads_and_are_used_again_after_they_recover() {
    let s = setup("mode = \"eventual\"");
    for _ in 0..4 {
        count(&s.cluster, "x");
    }
    s.pg.kill_replica(DELAYED);
    s.pg.freeze_replica(PAUSED);
    // the monitor stops hearing from the frozen one: 2 x 50 ms + 2 s connect timeout + 0.5 s
    std::thread::sleep(Duration::from_millis(2800));
    for _ in 0..5 {
        let started = Instant::now();
        let (n, reason) = count(&s.cluster, "x");
        assert_eq!(n, 0);
        assert!(matches!(reason, RouteReason::Fallback), "{reason:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded: {:?}",
            started.elapsed()
        );
    }
    s.pg.thaw_replica(PAUSED);
    s.pg.start_replica(DELAYED);
    s.pg.wait_all_caught_up();
    std::thread::sleep(Duration::from_millis(400)); // the monitor hears from both again
    s.pg.reset_all_statement_stats();
    for _ in 0..10 {
        assert_eq!(count(&s.cluster, "x"), (0, RouteReason::Replica));
    }
    let (primary, delayed, paused) = s.where_ran();
    assert_eq!(primary, 0);
    assert_eq!(delayed + paused, 10);
}

#[test]
fn a_token_naming_an_unknown_database_is_ignored() {
    let s = setup("mode = \"read_your_writes\"");
    let token: ConsistencyToken = "nope-ffff.default-0".parse().unwrap();
    let seen = s.cluster.with_token(&token, || count(&s.cluster, "x"));
    assert_eq!(seen, (0, RouteReason::Replica));
}

#[test]
fn a_request_scope_does_not_inherit_another_users_write_on_the_same_thread() {
    let s = setup("mode = \"read_your_writes\"");
    s.lag(Duration::from_secs(3600));
    // request of user A writes
    let token_a = s.cluster.with_token(&ConsistencyToken::new(), || {
        add_user(&s.cluster, "ada");
        s.cluster.token()
    });
    // request of user B on the same worker thread: replicas are fine for B
    let b = s
        .cluster
        .with_token(&ConsistencyToken::new(), || count(&s.cluster, "zed"));
    assert_eq!(b, (0, RouteReason::Replica));
    // A's next request, with A's token: sees A's write
    let a = s.cluster.with_token(&token_a, || count(&s.cluster, "ada"));
    assert_eq!(a, (1, RouteReason::Behind));
}

/// Statements that read the primary's position after a write (the monitor's probe of the
/// primary is a statement of its own, with one more column).
const POSITION_QUERY: &str = "%pg_current_wal_insert_lsn%current_setting($3), $4";

/// The same writes, and how many position queries each step may add, per mode.
fn position_queries_of_writes(mode: &str) -> Vec<i64> {
    let s = setup(&format!("mode = \"{mode}\""));
    let mut conn = s.cluster.get("default").unwrap();
    let calls = || s.pg.statement_calls(Node::Primary, POSITION_QUERY);
    let mut seen = Vec::new();
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        for name in ["a", "b", "c"] {
            diesel::insert_into(users::table)
                .values((users::name.eq(name), users::email.eq(format!("{name}@e"))))
                .execute(c)?;
        }
        Ok(())
    })
    .unwrap();
    seen.push(calls());
    diesel::insert_into(users::table)
        .values((users::name.eq("d"), users::email.eq("d@e")))
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
            .values((users::name.eq("e"), users::email.eq("e@e")))
            .execute(c)?;
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(rolled_back.is_err());
    seen.push(calls());
    seen
}

#[test]
fn read_your_writes_learns_write_positions_without_a_query_per_write() {
    // the monitor's next probe of the primary covers them (a different statement)
    assert_eq!(position_queries_of_writes("read_your_writes"), [0, 0, 0, 0]);
}

#[test]
fn causal_learns_write_positions_without_a_query_per_write() {
    // like read_your_writes: a primary position read after the writes returned covers them
    // (the monitor's probe, or a read's shared refresh), for every thread of the process
    assert_eq!(position_queries_of_writes("causal"), [0, 0, 0, 0]);
}

#[test]
fn strong_reads_one_position_per_committed_write_transaction() {
    // one per commit, one per autocommit write, none for a read-only transaction or a rollback
    assert_eq!(position_queries_of_writes("strong"), [1, 2, 2, 2]);
}

#[test]
fn pin_mode_reads_no_positions() {
    let s = setup("mode = \"pin\"");
    add_user(&s.cluster, "ada");
    assert_eq!(s.pg.statement_calls(Node::Primary, POSITION_QUERY), 0);
}

mod posts_schema {
    diesel::table! {
        posts (id) {
            id -> Int8,
            user_id -> Int8,
            body -> Text,
        }
    }
}
use posts_schema::posts;

fn count_posts(cluster: &Cluster<PgConnection>) -> (i64, RouteReason) {
    let mut conn = cluster.get("default").unwrap();
    let n = posts::table.count().get_result(&mut conn).unwrap();
    (n, conn.last_route().unwrap().reason)
}

#[test]
fn with_table_granularity_a_write_holds_back_only_reads_of_the_tables_it_wrote() {
    let s = setup("mode = \"read_your_writes\"\ngranularity = \"table\"");
    s.pg.execute(
        Node::Primary,
        DB,
        "INSERT INTO users (id, name, email) VALUES (1000, 'old', 'old@e')",
    );
    s.pg.wait_all_caught_up();
    s.lag(Duration::from_secs(3600));
    add_user(&s.cluster, "ada");
    assert_eq!(
        count(&s.cluster, "ada"),
        (1, RouteReason::Behind),
        "the written table: primary"
    );
    assert_eq!(
        count_posts(&s.cluster),
        (0, RouteReason::Replica),
        "another table: a replica"
    );

    // a transaction that writes posts holds back reads of posts, not of unrelated reads
    let mut conn = s.cluster.get("default").unwrap();
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        diesel::insert_into(posts::table)
            .values((posts::user_id.eq(1000), posts::body.eq("hello")))
            .execute(c)
    })
    .unwrap();
    drop(conn);
    assert_eq!(count_posts(&s.cluster), (1, RouteReason::Behind));
    // a statement whose tables are not known counts for the whole database
    let mut conn = s.cluster.get("default").unwrap();
    diesel::sql_query("SELECT 1 AS one")
        .execute(&mut conn)
        .unwrap(); // a read: harmless
    conn.batch_execute("CREATE TABLE scratch (id int)").unwrap();
    drop(conn);
    let (_, reason) = count(&s.cluster, "zed");
    assert_eq!(
        reason,
        RouteReason::Behind,
        "DDL: tables unknown, the whole database waits"
    );
}

#[test]
fn with_database_granularity_a_write_holds_back_every_read_of_the_database() {
    let s = setup("mode = \"read_your_writes\"");
    s.lag(Duration::from_secs(3600));
    add_user(&s.cluster, "ada");
    assert_eq!(count_posts(&s.cluster), (0, RouteReason::Behind));
}

#[test]
fn with_table_granularity_a_token_names_the_tables_written_and_holds_back_only_those() {
    let s = setup("mode = \"read_your_writes\"\ngranularity = \"table\"");
    s.lag(Duration::from_secs(3600));
    let token = s.cluster.with_token(&ConsistencyToken::new(), || {
        add_user(&s.cluster, "ada");
        s.cluster.token()
    });
    assert!(token.to_string().starts_with("default~users-"), "{token}");
    let token: ConsistencyToken = token.to_string().parse().unwrap();
    let cluster = s.cluster.clone();
    let (users, posts) = std::thread::spawn(move || {
        cluster.with_token(&token, || (count(&cluster, "ada"), count_posts(&cluster)))
    })
    .join()
    .unwrap();
    assert_eq!(
        users,
        (1, RouteReason::Behind),
        "the written table waits for a replica"
    );
    assert_eq!(posts, (0, RouteReason::Replica), "the other table does not");
}

/// The monitor's probe of a replica and the router's own check of it (the same statement).
const REPLAY_QUERY: &str = "%pg_last_wal_replay_lsn%";

/// Reads that a lagging replica cannot serve go to the primary without a round trip each to
/// find out: checks of the replicas' and the primary's positions are shared by the process
/// and rate-limited, counted on the servers.
fn reads_behind_pay_no_round_trip_each(mode: &str) {
    let s = setup(&format!("mode = \"{mode}\""));
    s.lag(Duration::from_secs(3600));
    add_user(&s.cluster, "ada");
    s.pg.reset_all_statement_stats();
    let started = Instant::now();
    const READS: i64 = 300;
    let mut conn = s.cluster.get("default").unwrap();
    for _ in 0..READS {
        let n: i64 = users::table
            .filter(users::name.eq("ada"))
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(n, 1, "never stale");
        assert_eq!(conn.last_route().unwrap().reason, RouteReason::Behind);
    }
    let elapsed_ms = started.elapsed().as_millis() as i64;
    assert_eq!(
        s.where_ran(),
        (READS, 0, 0),
        "every read ran on the primary"
    );
    let replays = s.pg.statement_calls(Node::Replica(DELAYED), REPLAY_QUERY)
        + s.pg.statement_calls(Node::Replica(PAUSED), REPLAY_QUERY);
    let positions = s.pg.statement_calls(Node::Primary, POSITION_QUERY);
    // per server: a burst of 4, then one per 20 ms; the monitor probes every 50 ms (+25 %);
    // and each replica connection opened learns its server's position once (up to two per
    // replica: the pooled connection's and the monitor's)
    let shared = 4 + elapsed_ms / 20 + 1;
    let monitor = elapsed_ms * 125 / 100 / 50 + 1;
    assert!(
        replays <= 2 * (shared + monitor + 2),
        "{replays} replay-position queries for {READS} reads in {elapsed_ms} ms"
    );
    assert!(
        positions <= shared,
        "{positions} primary position queries for {READS} reads in {elapsed_ms} ms"
    );
    assert!(
        replays + positions < READS / 3,
        "{replays} + {positions} queries for {READS} reads: not one per read"
    );
}

#[test]
fn read_your_writes_reads_behind_pay_no_round_trip_each() {
    reads_behind_pay_no_round_trip_each("read_your_writes");
}

#[test]
fn causal_reads_behind_pay_no_round_trip_each() {
    reads_behind_pay_no_round_trip_each("causal");
}

#[test]
fn tokens_taken_while_the_caller_holds_every_pooled_connection_reuse_one_connection() {
    let pg = start_app(1);
    let settings = Settings::from_toml_str(&format!(
        "[consistency]\nmode = \"eventual\"\nmonitor_interval = \"1h\"\n\
         [databases.default]\nurl = \"{}\"\npool_size = 1\n\
         [databases.r]\nurl = \"{}\"\nprimary = \"default\"\n",
        pg.primary_url(DB),
        pg.replica_url(0, DB),
    ))
    .unwrap();
    let cluster = Cluster::<PgConnection>::new(settings).unwrap();
    let sessions = |node: Node| {
        pg.query_i64(
            node,
            "postgres",
            &format!("SELECT sessions FROM pg_stat_database WHERE datname = '{DB}'"),
        )
    };
    let before = (sessions(Node::Primary), sessions(Node::Replica(0)));
    // a request handler: holds its (only) pooled connection, reads, takes its token
    let mut conn = cluster.get("default").unwrap();
    for _ in 0..20 {
        let n: i64 = users::table.count().get_result(&mut conn).unwrap();
        assert_eq!(conn.last_route().unwrap().reason, RouteReason::Replica);
        let token = cluster.token();
        assert!(
            !token.is_empty(),
            "a token carries what the replica read had seen: {n}"
        );
    }
    drop(conn);
    drop(cluster);
    // sessions are counted as they end: the cluster's are gone now
    std::thread::sleep(Duration::from_millis(200));
    let after = (sessions(Node::Primary), sessions(Node::Replica(0)));
    let opened = (after.0 - before.0, after.1 - before.1);
    assert!(
        opened.0 <= 3 && opened.1 <= 3,
        "sessions opened on (primary, replica) for 20 tokens: {opened:?}"
    );
}
