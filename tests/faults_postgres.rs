//! Faults and hostile input against a real primary and streaming replica: forged and signed
//! tokens, a primary that dies after a commit, clusters that come and go. Where statements
//! ran is checked in the servers' `pg_stat_statements`.
#![cfg(feature = "postgres")]

mod support;

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, ConsistencyToken, DataConsistency, RouteReason, Settings};
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "app";
const PRIMARY: Node = Node::Primary;
const REPLICA: Node = Node::Replica(0);

mod schema {
    diesel::table! {
        items (id) {
            id -> Int4,
            name -> Text,
        }
    }
}
use schema::items;

const READ: &str = "SELECT \"items\".\"name\" FROM \"items\"%";

struct Setup {
    pg: PgCluster,
    cluster: Cluster<PgConnection>,
}

fn setup(settings: &str) -> Setup {
    let pg = PgCluster::start(1);
    pg.create_database(DB);
    pg.execute(
        PRIMARY,
        DB,
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\
         INSERT INTO items (name) VALUES ('seed');",
    );
    pg.wait_all_caught_up();
    let cluster = cluster(&pg, settings);
    pg.reset_all_statement_stats();
    Setup { pg, cluster }
}

fn cluster(pg: &PgCluster, settings: &str) -> Cluster<PgConnection> {
    Cluster::new(
        Settings::from_toml_str(&format!(
            "{settings}\n[databases.default]\nurl = \"{}\"\n[databases.r0]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(0, DB)
        ))
        .unwrap(),
    )
    .unwrap()
}

fn names(cluster: &Cluster<PgConnection>) -> (Vec<String>, RouteReason) {
    let mut conn = cluster.get("default").unwrap();
    let names = items::table
        .select(items::name)
        .order(items::id)
        .load(&mut conn)
        .unwrap();
    (names, conn.last_route().unwrap().reason)
}

fn insert(cluster: &Cluster<PgConnection>, name: &str) {
    let mut conn = cluster.get("default").unwrap();
    diesel::insert_into(items::table)
        .values(items::name.eq(name))
        .execute(&mut conn)
        .unwrap();
}

// -- tokens are untrusted input ---------------------------------------------------------------------

#[test]
fn a_forged_position_costs_one_check_not_a_primary_read_or_a_wait_each_time() {
    let s = setup("[pinning]\nseconds = 0\n[consistency]\nreplica_wait = \"200ms\"\nmonitor_interval = \"50ms\"");
    let forged: ConsistencyToken = "default-ffffffffffffffff".parse().unwrap();
    let started = Instant::now();
    let reasons: Vec<RouteReason> = s
        .cluster
        .with_token(&forged, || (0..20).map(|_| names(&s.cluster).1).collect());
    let took = started.elapsed();
    assert!(
        reasons
            .iter()
            .filter(|r| **r == RouteReason::Replica)
            .count()
            >= 19,
        "{reasons:?}"
    );
    assert!(s.pg.statement_calls(REPLICA, READ) >= 19);
    // a bound, not a benchmark: 20 waits of 200 ms would take 4 s
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn signed_tokens_carry_writes_and_forged_ones_are_ignored() {
    let s = setup(
        "[pinning]\nseconds = 0\n[consistency]\nmonitor_interval = \"50ms\"\n\
         token_secret = \"a secret of at least sixteen bytes\"",
    );
    s.pg.pause_replay(0);
    insert(&s.cluster, "mine");
    let token = s.cluster.token().to_string();
    assert!(token.contains('!'), "signed: {token}");
    let cluster = s.cluster.clone();
    let seen = std::thread::spawn(move || {
        let token = cluster.parse_token(&token).unwrap();
        cluster
            .run_job(&token, DataConsistency::Sticky, || names(&cluster))
            .unwrap()
    })
    .join()
    .unwrap();
    assert!(seen.0.contains(&"mine".to_string()), "{seen:?}");
    assert_eq!(s.pg.statement_calls(REPLICA, READ), 0);

    // an unsigned token naming the same write is not trusted: no guarantee from it
    let unsigned = s.cluster.token().to_string();
    let unsigned = unsigned.split(".!").next().unwrap().to_owned();
    assert!(s.cluster.parse_token(&unsigned).is_err());
    let cluster = s.cluster.clone();
    let reason = std::thread::spawn(move || {
        let token: ConsistencyToken = unsigned.parse().unwrap();
        cluster.with_token(&token, || names(&cluster).1)
    })
    .join()
    .unwrap();
    assert_eq!(
        reason,
        RouteReason::Replica,
        "the forged requirement was ignored"
    );
}

// -- stats count each statement once -------------------------------------------------------------

#[test]
fn a_read_retried_on_the_primary_counts_once_and_failures_count() {
    let s = setup("[pinning]\nseconds = 0\n[routing]\nreplica_retry = \"10s\"");
    let mut conn = s.cluster.get("default").unwrap();
    items::table.count().get_result::<i64>(&mut conn).unwrap();
    let before = s.cluster.stats().database("default").unwrap().clone();
    assert_eq!(before.replica, 1);
    s.pg.kill_replica(0);
    items::table.count().get_result::<i64>(&mut conn).unwrap();
    assert_eq!(conn.last_route().unwrap().reason, RouteReason::Fallback);
    let after = s.cluster.stats().database("default").unwrap().clone();
    assert_eq!(
        after.replica, 1,
        "the broken replica read is not counted as a replica read"
    );
    assert_eq!(after.reason(RouteReason::Fallback), 1);
    assert_eq!(
        after.primary + after.replica,
        before.primary + before.replica + 1
    );
    assert!(diesel::sql_query("SELECT * FROM no_such_table")
        .execute(&mut conn)
        .is_err());
    assert_eq!(s.cluster.stats().database("default").unwrap().failed, 1);
}

// -- the primary dies after a commit ----------------------------------------------------------------

#[test]
fn a_write_whose_position_died_with_the_primary_fails_its_scopes_reads_clearly_until_it_returns() {
    use diesel::pg::PgRowByRowLoadingMode;
    use diesel_sharding::PositionUnknown;
    // a monitor that does not probe again during the test: only the primary can tell the
    // write's position
    let s = setup(
        "[pinning]\nseconds = 0\n[routing]\nconnect_timeout = \"1s\"\n[consistency]\nmonitor_interval = \"10s\"",
    );
    let mut conn = s.cluster.get("default").unwrap();
    // row by row: the cursor holds the connection, so the position is read later
    let ids: Vec<i32> = diesel::insert_into(items::table)
        .values(items::name.eq("late"))
        .returning(items::id)
        .load_iter::<i32, PgRowByRowLoadingMode>(&mut conn)
        .unwrap()
        .collect::<QueryResult<_>>()
        .unwrap();
    assert_eq!(ids.len(), 1);
    s.pg.kill_node(PRIMARY);
    let started = Instant::now();
    let err = items::table
        .select(items::name)
        .load::<String>(&mut conn)
        .expect_err("the position is unknown and the primary is gone");
    assert!(started.elapsed() < Duration::from_secs(3), "no hang");
    let cause = match &err {
        diesel::result::Error::QueryBuilderError(e) => e.downcast_ref::<PositionUnknown>(),
        _ => None,
    };
    assert!(cause.is_some(), "a clear error, not {err}");
    assert!(err.to_string().contains("position is unknown"), "{err}");
    // another thread, without that write, reads on from the replica
    let cluster = s.cluster.clone();
    let other = std::thread::spawn(move || names(&cluster)).join().unwrap();
    assert_eq!(other.1, RouteReason::Replica);
    // the primary comes back: the position is learned and the row is read
    s.pg.start_node(PRIMARY);
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        match items::table.select(items::name).load::<String>(&mut conn) {
            Ok(seen) => break seen,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the primary is back, yet: {e}"),
        }
    };
    assert!(seen.contains(&"late".to_string()), "{seen:?}");
}
