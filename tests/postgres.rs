//! PostgreSQL integration tests against a real primary and streaming replica that each test
//! starts itself (see `support/pg_cluster.rs`). Where a statement ran is checked on the
//! servers, in `pg_stat_statements`, not only through the crate's own counters.
#![cfg(feature = "postgres")]

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use diesel_sharding::{pin, Cluster, RouteReason, Settings};
use support::pg_cluster::{Node, PgCluster};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const DB: &str = "app";
const REPLICA: Node = Node::Replica(0);

mod schema {
    #[allow(unreachable_pub)]
    pub mod sql_types {
        #[derive(diesel::sql_types::SqlType, diesel::query_builder::QueryId, Debug)]
        #[diesel(postgres_type(name = "mood"))]
        pub struct Mood;
    }

    diesel::table! {
        use diesel::sql_types::*;
        use super::sql_types::Mood;

        users (id) {
            id -> Int8,
            name -> Text,
            email -> Text,
            mood -> Mood,
            created_at -> Timestamptz,
        }
    }
}
use schema::users;

#[derive(diesel_derive_enum::DbEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[ExistingTypePath = "crate::schema::sql_types::Mood"]
enum Mood {
    Happy,
    Sad,
    Curious,
}

#[derive(Queryable, Selectable, Identifiable, AsChangeset, Debug, Clone, PartialEq)]
#[diesel(table_name = users)]
struct User {
    id: i64,
    name: String,
    email: String,
    mood: Mood,
    created_at: DateTime<Utc>,
}

/// A primary with one streaming replica, the schema migrated, and a routed cluster on it.
struct Setup {
    pg: PgCluster,
    cluster: Cluster<PgConnection>,
}

fn setup(extra_settings: &str) -> Setup {
    let pg = PgCluster::start(1);
    pg.create_database(DB);
    {
        let mut conn = PgConnection::establish(&pg.primary_url(DB)).unwrap();
        conn.run_pending_migrations(MIGRATIONS).unwrap();
    }
    pg.wait_all_caught_up();
    let settings = Settings::from_toml_str(&format!(
        "{extra_settings}\n[databases.default]\nurl = \"{}\"\n[databases.default_replica]\nurl = \"{}\"\nprimary = \"default\"\n",
        pg.primary_url(DB),
        pg.replica_url(0, DB)
    ))
    .unwrap();
    let cluster = Cluster::new(settings).unwrap();
    pg.reset_all_statement_stats();
    Setup { pg, cluster }
}

fn add_user(conn: &mut diesel_sharding::PooledConnection<PgConnection>, name: &str) {
    diesel::insert_into(users::table)
        .values((
            users::name.eq(name),
            users::email.eq(format!("{name}@example.com")),
        ))
        .execute(conn)
        .unwrap();
}

fn count_named(conn: &mut diesel_sharding::PooledConnection<PgConnection>, name: &str) -> i64 {
    users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(conn)
        .unwrap()
}

/// The `count_named` query as pg_stat_statements stores it.
const COUNT_NAMED: &str = "SELECT COUNT(*) FROM \"users\" WHERE (\"users\".\"name\" = $1)";

impl Setup {
    fn calls(&self, node: Node, pattern: &str) -> i64 {
        self.pg.statement_calls(node, pattern)
    }
}

#[test]
fn a_write_then_a_read_on_the_same_thread_runs_on_the_primary_and_sees_the_row() {
    let s = setup("");
    s.pg.pause_replay(0);
    let mut conn = s.cluster.get("default").unwrap();
    add_user(&mut conn, "ada");
    assert_eq!(count_named(&mut conn, "ada"), 1);
    assert_eq!(s.calls(Node::Primary, COUNT_NAMED), 1, "ran on the primary");
    assert_eq!(s.calls(REPLICA, COUNT_NAMED), 0);
    assert_eq!(s.calls(REPLICA, "INSERT%"), 0);
    pin::unpin_this_thread();
    s.pg.resume_replay(0);
}

#[test]
fn another_thread_reads_the_paused_replica_and_sees_the_old_state() {
    let s = setup("");
    s.pg.pause_replay(0);
    let mut conn = s.cluster.get("default").unwrap();
    add_user(&mut conn, "ada");
    let cluster = s.cluster.clone();
    let n = std::thread::spawn(move || {
        let mut conn = cluster.get("default").unwrap();
        count_named(&mut conn, "ada")
    })
    .join()
    .unwrap();
    assert_eq!(
        n, 0,
        "stale: pin mode protects only the writing thread (documented limit)"
    );
    assert_eq!(s.calls(REPLICA, COUNT_NAMED), 1, "ran on the replica");
    assert_eq!(s.calls(Node::Primary, COUNT_NAMED), 0);
    pin::unpin_this_thread();
    s.pg.resume_replay(0);
}

#[test]
fn after_the_pin_window_the_writer_reads_from_the_replica() {
    let s = setup("[pinning]\nseconds = 1\n[consistency]\nmode = \"pin\"");
    s.pg.pause_replay(0);
    let mut conn = s.cluster.get("default").unwrap();
    add_user(&mut conn, "ada");
    assert_eq!(count_named(&mut conn, "ada"), 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        count_named(&mut conn, "ada"),
        0,
        "the paused replica answered"
    );
    assert_eq!(s.calls(Node::Primary, COUNT_NAMED), 1);
    assert_eq!(s.calls(REPLICA, COUNT_NAMED), 1);
    s.pg.resume_replay(0);
    s.pg.wait_caught_up(0);
    assert_eq!(count_named(&mut conn, "ada"), 1);
    assert_eq!(s.calls(REPLICA, COUNT_NAMED), 2);
}

#[test]
fn writes_locking_reads_write_functions_transactions_and_save_changes_run_on_the_primary() {
    let s = setup("[pinning]\nseconds = 0");
    let mut conn = s.cluster.get("default").unwrap();

    let mut user: User = diesel::insert_into(users::table)
        .values((
            users::name.eq("ada"),
            users::email.eq("ada@example.com"),
            users::mood.eq(Mood::Happy),
        ))
        .returning(User::as_returning())
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(conn.last_route().unwrap().reason, RouteReason::Write);

    let locked: Vec<i64> = users::table
        .select(users::id)
        .for_update()
        .load(&mut conn)
        .unwrap();
    assert_eq!(locked, vec![user.id]);
    assert_eq!(conn.last_route().unwrap().reason, RouteReason::Locking);

    let ticket: i64 = diesel::select(diesel::dsl::sql::<BigInt>("nextval('tickets')"))
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(ticket, 1);
    assert_eq!(
        conn.last_route().unwrap().reason,
        RouteReason::WriteFunction
    );

    let in_tx: i64 = conn
        .transaction::<_, diesel::result::Error, _>(|c| {
            diesel::update(users::table)
                .set(users::mood.eq(Mood::Sad))
                .execute(c)?;
            users::table
                .filter(users::mood.eq(Mood::Sad))
                .count()
                .get_result(c)
        })
        .unwrap();
    assert_eq!(in_tx, 1, "the transaction read its own uncommitted write");

    user.name = "Ada Lovelace".into();
    let saved: User = user.save_changes(&mut conn).unwrap();
    assert_eq!(saved.name, "Ada Lovelace");

    for (what, pattern) in [
        ("INSERT ... RETURNING", "INSERT INTO \"users\"%RETURNING%"),
        ("FOR UPDATE", "%FOR UPDATE%"),
        ("nextval", "%nextval%"),
        (
            "the transaction's read",
            "SELECT COUNT(*) FROM \"users\" WHERE (\"users\".\"mood\" = $1)",
        ),
        ("save_changes", "UPDATE \"users\" SET \"name\"%RETURNING%"),
    ] {
        assert!(
            s.calls(Node::Primary, pattern) >= 1,
            "{what} ran on the primary"
        );
        assert_eq!(
            s.calls(REPLICA, pattern),
            0,
            "{what} did not run on the replica"
        );
    }
    assert!(s.calls(Node::Primary, "BEGIN") >= 1 && s.calls(REPLICA, "BEGIN") == 0);
}

#[test]
fn migrations_through_a_routed_connection_run_on_the_primary_only() {
    let pg = PgCluster::start(1);
    pg.create_database(DB);
    let settings = Settings::from_toml_str(&format!(
        "[pinning]\nseconds = 0\n[databases.default]\nurl = \"{}\"\n[databases.r]\nurl = \"{}\"\nprimary = \"default\"\n",
        pg.primary_url(DB),
        pg.replica_url(0, DB)
    ))
    .unwrap();
    let cluster = Cluster::<PgConnection>::new(settings).unwrap();
    pg.pause_replay(0); // the replica will not have the migrations table
    pg.reset_all_statement_stats();
    let mut conn = cluster.get("default").unwrap();
    assert_eq!(conn.run_pending_migrations(MIGRATIONS).unwrap().len(), 2);
    assert!(!conn.has_pending_migration(MIGRATIONS).unwrap());
    assert!(pg.statement_calls(Node::Primary, "%__diesel_schema_migrations%") >= 3);
    assert_eq!(
        pg.statement_calls(Node::Replica(0), "%__diesel_schema_migrations%"),
        0
    );
    assert_eq!(pg.statement_calls(Node::Replica(0), "%CREATE%"), 0);
    pg.resume_replay(0);
}

#[test]
fn an_enum_and_timestamps_round_trip_and_read_back_from_the_replica() {
    // the write's position is learned from the monitor's next probe of the primary
    let s = setup("[pinning]\nseconds = 0\n[consistency]\nmonitor_interval = \"50ms\"");
    let mut conn = s.cluster.get("default").unwrap();
    let written: User = diesel::insert_into(users::table)
        .values((
            users::name.eq("grace"),
            users::email.eq("grace@example.com"),
            users::mood.eq(Mood::Curious),
        ))
        .returning(User::as_returning())
        .get_result(&mut conn)
        .unwrap();
    s.pg.wait_caught_up(0);
    std::thread::sleep(std::time::Duration::from_millis(150)); // a probe after the write
    let read: User = users::table
        .filter(users::mood.eq(Mood::Curious))
        .select(User::as_select())
        .first(&mut conn)
        .unwrap();
    assert_eq!(read, written);
    assert_eq!(conn.last_route().unwrap().reason, RouteReason::Replica);
    assert_eq!(
        s.calls(REPLICA, "SELECT \"users\".\"id\"%\"users\".\"mood\" = $1%"),
        1
    );
    assert!((Utc::now() - read.created_at).num_seconds() < 60);
}

#[test]
fn a_killed_replica_does_not_fail_reads_and_is_used_again_after_it_recovers() {
    let s = setup("[pinning]\nseconds = 0\n[routing]\nreplica_retry = \"300ms\"");
    let mut conn = s.cluster.get("default").unwrap();
    assert_eq!(count_named(&mut conn, "x"), 0);
    assert_eq!(
        s.calls(REPLICA, COUNT_NAMED),
        1,
        "the replica connection is open"
    );
    s.pg.kill_replica(0);
    // the open replica connection is dead: the same read is retried on the primary
    assert_eq!(count_named(&mut conn, "x"), 0);
    assert_eq!(conn.last_route().unwrap().reason, RouteReason::Fallback);
    // a fresh checkout cannot connect to the replica and reads from the primary
    let mut other = s.cluster.get("default").unwrap();
    assert_eq!(count_named(&mut other, "x"), 0);
    assert_eq!(other.last_route().unwrap().reason, RouteReason::Fallback);
    assert_eq!(s.calls(Node::Primary, COUNT_NAMED), 2);
    s.pg.start_replica(0);
    s.pg.wait_caught_up(0);
    let before = s.calls(REPLICA, COUNT_NAMED);
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(count_named(&mut conn, "x"), 0);
    assert_eq!(conn.last_route().unwrap().reason, RouteReason::Replica);
    assert_eq!(
        s.calls(REPLICA, COUNT_NAMED),
        before + 1,
        "the restarted replica ran it"
    );
}

#[test]
fn a_replica_connection_is_read_only() {
    let s = setup("");
    let mut conn = s.cluster.get("default").unwrap();
    let replica = conn.replica().unwrap();
    let in_recovery: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
        "pg_is_in_recovery()",
    ))
    .get_result(replica)
    .unwrap();
    assert!(in_recovery, "the escape hatch reaches the standby");
    let ro: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "current_setting('default_transaction_read_only')",
    ))
    .get_result(replica)
    .unwrap();
    assert_eq!(ro, "on");
}
