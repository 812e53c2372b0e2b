//! SQLite integration tests. The replica is a separate file, a copy of the primary taken at a
//! known moment, so what a read returns shows which file served it: the evidence comes from
//! the data, not from the crate's counters.
#![cfg(feature = "sqlite")]

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use diesel_sharding::{pin, Cluster, Error, RouteReason, Settings};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

mod schema {
    diesel::table! {
        users (id) {
            id -> Integer,
            name -> Text,
            email -> Text,
        }
    }
}
use schema::users;

#[derive(Queryable, Selectable, Identifiable, AsChangeset, Debug, Clone, PartialEq)]
#[diesel(table_name = users)]
struct User {
    id: i32,
    name: String,
    email: String,
}

/// A primary file and a replica file that is a copy of it.
struct Files {
    _dir: tempfile::TempDir,
    primary: std::path::PathBuf,
    replica: std::path::PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("primary.sqlite");
        let replica = dir.path().join("replica.sqlite");
        let mut conn = SqliteConnection::establish(primary.to_str().unwrap()).unwrap();
        conn.batch_execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \
             name TEXT NOT NULL, email TEXT NOT NULL UNIQUE);
             INSERT INTO users (name, email) VALUES ('old', 'old@example.com');",
        )
        .unwrap();
        drop(conn);
        let files = Files {
            _dir: dir,
            primary,
            replica,
        };
        files.replicate();
        files
    }

    /// Runs SQL on the primary file directly, not through the router: only the primary has it.
    fn write_behind_the_router(&self, sql: &str) {
        SqliteConnection::establish(self.primary.to_str().unwrap())
            .unwrap()
            .batch_execute(sql)
            .unwrap();
    }

    /// "Replication catches up": the replica becomes a copy of the primary.
    fn replicate(&self) {
        std::fs::copy(&self.primary, &self.replica).unwrap();
    }

    fn settings(&self, extra: &str) -> Settings {
        Settings::from_toml_str(&format!(
            "{extra}\n[databases.default]\nurl = \"{}\"\n[databases.default_replica]\nurl = \"{}\"\nprimary = \"default\"\n",
            self.primary.display(),
            self.replica.display()
        ))
        .unwrap()
    }

    fn cluster(&self) -> Cluster<SqliteConnection> {
        Cluster::new(self.settings("")).unwrap()
    }

    /// A cluster whose pool holds one connection, without pin windows.
    fn one_connection_cluster(&self) -> Cluster<SqliteConnection> {
        let settings = self.settings("[pinning]\nseconds = 0").database(
            "default",
            diesel_sharding::DatabaseSettings::primary(self.primary.to_str().unwrap()).pool_size(1),
        );
        Cluster::new(settings).unwrap()
    }
}

fn add_user(conn: &mut diesel_sharding::PooledConnection<SqliteConnection>, name: &str) {
    diesel::insert_into(users::table)
        .values((
            users::name.eq(name),
            users::email.eq(format!("{name}@example.com")),
        ))
        .execute(conn)
        .unwrap();
}

fn count(conn: &mut diesel_sharding::PooledConnection<SqliteConnection>, name: &str) -> i64 {
    users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(conn)
        .unwrap()
}

fn reason(conn: &diesel_sharding::PooledConnection<SqliteConnection>) -> RouteReason {
    conn.last_route().expect("a routed statement").reason
}

#[test]
fn a_plain_read_is_served_by_the_replica() {
    let f = Files::new();
    let cluster = f.cluster();
    let mut conn = cluster.get("default").unwrap();
    // Written behind the router's back: only the primary has it.
    f.write_behind_the_router("INSERT INTO users (name, email) VALUES ('new', 'new@example.com')");
    assert_eq!(count(&mut conn, "new"), 0, "the replica file answered");
    assert_eq!(reason(&conn), RouteReason::Replica);
    assert_eq!(count(&mut conn, "old"), 1);
}

#[test]
fn a_write_then_a_read_on_the_same_thread_sees_the_row() {
    let f = Files::new();
    let cluster = f.cluster();
    let mut conn = cluster.get("default").unwrap();
    add_user(&mut conn, "ada");
    assert_eq!(reason(&conn), RouteReason::Write);
    assert_eq!(count(&mut conn, "ada"), 1, "read your own write");
    assert_eq!(reason(&conn), RouteReason::RecentWrite);
    pin::unpin_this_thread();
}

#[test]
fn another_thread_reads_the_replica_the_documented_limit_of_pin_mode() {
    let f = Files::new();
    let cluster = f.cluster();
    let mut conn = cluster.get("default").unwrap();
    add_user(&mut conn, "ada");
    let c2 = cluster.clone();
    let seen = std::thread::spawn(move || {
        let mut conn = c2.get("default").unwrap();
        let n = count(&mut conn, "ada");
        (n, reason(&conn))
    })
    .join()
    .unwrap();
    assert_eq!(
        seen,
        (0, RouteReason::Replica),
        "stale: pin mode pins only the writer"
    );
    pin::unpin_this_thread();
}

#[test]
fn after_the_pin_window_the_writer_reads_the_replica_again() {
    let f = Files::new();
    let cluster = Cluster::<SqliteConnection>::new(f.settings("[pinning]\nseconds = 1")).unwrap();
    let mut conn = cluster.get("default").unwrap();
    add_user(&mut conn, "ada");
    assert_eq!(count(&mut conn, "ada"), 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(count(&mut conn, "ada"), 0, "the replica has not caught up");
    assert_eq!(reason(&conn), RouteReason::Replica);
    f.replicate();
    assert_eq!(count(&mut conn, "ada"), 1, "and sees the row once it has");
}

#[test]
fn pinning_seconds_zero_never_pins() {
    let f = Files::new();
    let cluster = Cluster::<SqliteConnection>::new(f.settings("[pinning]\nseconds = 0")).unwrap();
    let mut conn = cluster.get("default").unwrap();
    add_user(&mut conn, "ada");
    assert_eq!(count(&mut conn, "ada"), 0);
    assert_eq!(reason(&conn), RouteReason::Replica);
}

#[test]
fn use_primary_and_pin_this_thread_read_from_the_primary() {
    let f = Files::new();
    let cluster = Cluster::<SqliteConnection>::new(f.settings("[pinning]\nseconds = 0")).unwrap();
    let mut conn = cluster.get("default").unwrap();
    add_user(&mut conn, "ada");
    assert_eq!(pin::use_primary(|| count(&mut conn, "ada")), 1);
    assert_eq!(reason(&conn), RouteReason::Pinned);
    assert_eq!(count(&mut conn, "ada"), 0, "the scope ended");
    pin::pin_this_thread();
    assert_eq!(count(&mut conn, "ada"), 1);
    pin::unpin_this_thread();
    assert_eq!(count(&mut conn, "ada"), 0);
}

#[test]
fn a_job_does_not_inherit_the_pin_of_the_previous_job() {
    let f = Files::new();
    let cluster = f.cluster();
    let mut conn = cluster.get("default").unwrap();
    pin::run_job(|| add_user(&mut conn, "ada"));
    let n = pin::run_job(|| count(&mut conn, "ada"));
    assert_eq!((n, reason(&conn)), (0, RouteReason::Replica));
}

#[test]
fn reads_inside_a_transaction_see_uncommitted_rows_on_the_primary() {
    let f = Files::new();
    let cluster = Cluster::<SqliteConnection>::new(f.settings("[pinning]\nseconds = 0")).unwrap();
    let mut conn = cluster.get("default").unwrap();
    let n = conn
        .transaction::<_, diesel::result::Error, _>(|c| {
            add_user(c, "ada");
            let n = count(c, "ada");
            assert_eq!(reason(c), RouteReason::Transaction);
            // a failing savepoint does not end the outer transaction
            let nested = c.transaction::<(), diesel::result::Error, _>(|c| {
                diesel::insert_into(users::table)
                    .values((users::name.eq("ada"), users::email.eq("ada@example.com")))
                    .execute(c)?; // unique violation
                Ok(())
            });
            assert!(nested.is_err());
            Ok(n)
        })
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        count(&mut conn, "ada"),
        0,
        "after commit, reads go back to the replica"
    );
    assert_eq!(
        pin::use_primary(|| count(&mut conn, "ada")),
        1,
        "the transaction committed"
    );
}

#[test]
fn insert_returning_and_save_changes_run_on_the_primary() {
    let f = Files::new();
    let cluster = f.cluster();
    let mut conn = cluster.get("default").unwrap();
    let mut user: User = diesel::insert_into(users::table)
        .values((users::name.eq("ada"), users::email.eq("ada@example.com")))
        .returning(User::as_returning())
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(reason(&conn), RouteReason::Write);
    assert_eq!(user.name, "ada");
    user.email = "ada@lovelace.org".into();
    let saved: User = user.save_changes(&mut conn).unwrap();
    assert_eq!(saved, user);
    pin::unpin_this_thread();
}

#[test]
fn last_insert_rowid_runs_on_the_primary() {
    diesel::define_sql_function!(fn last_insert_rowid() -> diesel::sql_types::BigInt);
    let f = Files::new();
    let cluster = Cluster::<SqliteConnection>::new(f.settings("[pinning]\nseconds = 0")).unwrap();
    let mut conn = cluster.get("default").unwrap();
    add_user(&mut conn, "ada");
    let id: i64 = diesel::select(last_insert_rowid())
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(reason(&conn), RouteReason::WriteFunction);
    assert_eq!(id, 2, "the primary's session answered");
}

#[test]
fn configured_write_functions_run_on_the_primary() {
    let f = Files::new();
    let cluster = Cluster::<SqliteConnection>::new(
        f.settings("[pinning]\nseconds = 0\n[routing]\nwrite_functions = [\"ABS\"]"),
    )
    .unwrap();
    let mut conn = cluster.get("default").unwrap();
    let _: Vec<i32> = diesel::sql_query("SELECT abs(-1) AS v")
        .load::<AbsRow>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|r| r.v)
        .collect();
    assert_eq!(reason(&conn), RouteReason::WriteFunction);
    let _ = diesel::sql_query("SELECT length('x') AS v")
        .load::<AbsRow>(&mut conn)
        .unwrap();
    assert_eq!(reason(&conn), RouteReason::Replica);
}

#[derive(QueryableByName)]
struct AbsRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    v: i32,
}

#[test]
fn raw_sql_is_routed_by_what_it_does() {
    let f = Files::new();
    let cluster = Cluster::<SqliteConnection>::new(f.settings("[pinning]\nseconds = 0")).unwrap();
    let mut conn = cluster.get("default").unwrap();
    let _ = diesel::sql_query("SELECT id AS v FROM users")
        .load::<AbsRow>(&mut conn)
        .unwrap();
    assert_eq!(reason(&conn), RouteReason::Replica);
    let rows =
        diesel::sql_query("INSERT INTO users (name, email) VALUES ('x', 'x@e') RETURNING id AS v")
            .load::<AbsRow>(&mut conn)
            .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "a write through load ran on the writable primary"
    );
    assert_eq!(reason(&conn), RouteReason::Write);
    diesel::sql_query("UPDATE users SET name = 'y' WHERE name = 'x'")
        .execute(&mut conn)
        .unwrap();
    assert_eq!(reason(&conn), RouteReason::Write);
}

#[test]
fn migrations_run_entirely_on_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let primary = dir.path().join("p.sqlite");
    let replica = dir.path().join("r.sqlite");
    // the replica file exists but never gets the migrations table
    SqliteConnection::establish(replica.to_str().unwrap()).unwrap();
    let settings = Settings::from_toml_str(&format!(
        "[pinning]\nseconds = 0\n[databases.default]\nurl = \"{}\"\n[databases.r]\nurl = \"{}\"\nprimary = \"default\"",
        primary.display(),
        replica.display()
    ))
    .unwrap();
    let cluster = Cluster::<SqliteConnection>::new(settings).unwrap();
    let mut conn = cluster.get("default").unwrap();
    let applied = conn.run_pending_migrations(MIGRATIONS).unwrap();
    assert_eq!(applied.len(), 1);
    assert!(
        !conn.has_pending_migration(MIGRATIONS).unwrap(),
        "read on the primary"
    );
    assert_eq!(conn.applied_migrations().unwrap().len(), 1);
    drop(conn);
    // a new checkout reads from the replica again: the replica has no tables at all
    let mut conn = cluster.get("default").unwrap();
    let err = users::table
        .count()
        .get_result::<i64>(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains("no such table"), "{err}");
    assert_eq!(reason(&conn), RouteReason::Replica);
}

#[test]
fn a_replica_handle_is_read_only_so_a_misrouted_write_fails_loudly() {
    let f = Files::new();
    let cluster = f.cluster();
    let mut conn = cluster.get("default").unwrap();
    let replica = conn.replica().unwrap();
    let err = replica
        .batch_execute("INSERT INTO users (name, email) VALUES ('z', 'z@e')")
        .unwrap_err();
    assert!(
        err.to_string().contains("readonly")
            || err.to_string().contains("read-only")
            || err.to_string().contains("query_only"),
        "{err}"
    );
}

#[test]
fn read_only_transaction_runs_on_the_replica() {
    let f = Files::new();
    let cluster = f.cluster();
    let mut conn = cluster.get("default").unwrap();
    f.write_behind_the_router("INSERT INTO users (name, email) VALUES ('new', 'new@example.com')");
    let n: i64 = conn
        .read_only_transaction(|c| users::table.count().get_result(c))
        .unwrap();
    assert_eq!(n, 1, "the replica copy has only the old row");
}

#[test]
fn an_unreachable_replica_sends_reads_to_the_primary_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let primary = dir.path().join("p.sqlite");
    let mut c = SqliteConnection::establish(primary.to_str().unwrap()).unwrap();
    c.batch_execute(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL)",
    )
    .unwrap();
    let settings = Settings::from_toml_str(&format!(
        "[routing]\nreplica_retry = \"200ms\"\n[databases.default]\nurl = \"{}\"\n[databases.r]\nurl = \"{}/missing/r.sqlite\"\nprimary = \"default\"",
        primary.display(),
        dir.path().display()
    ))
    .unwrap();
    let cluster = Cluster::<SqliteConnection>::new(settings).unwrap();
    let mut conn = cluster.get("default").unwrap();
    for _ in 0..3 {
        assert_eq!(
            users::table.count().get_result::<i64>(&mut conn).unwrap(),
            0
        );
        assert_eq!(reason(&conn), RouteReason::Fallback);
    }
    let stats = cluster.stats();
    let s = stats.database("default").unwrap();
    assert_eq!(s.reason(RouteReason::Fallback), 3);
    assert_eq!(
        s.replica_failures, 1,
        "skipped during the backoff, not retried each time"
    );
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(
        users::table.count().get_result::<i64>(&mut conn).unwrap(),
        0
    );
    assert_eq!(
        cluster
            .stats()
            .database("default")
            .unwrap()
            .replica_failures,
        2,
        "retried after it"
    );
}

#[test]
fn primary_only_never_opens_a_replica() {
    let f = Files::new();
    let mut settings = f.settings("");
    settings = settings.database(
        "default",
        diesel_sharding::DatabaseSettings::primary(f.primary.to_str().unwrap())
            .read_strategy(diesel_sharding::ReadStrategy::PrimaryOnly),
    );
    let cluster = Cluster::<SqliteConnection>::new(settings).unwrap();
    let mut conn = cluster.get("default").unwrap();
    f.write_behind_the_router("INSERT INTO users (name, email) VALUES ('new', 'new@example.com')");
    assert_eq!(count(&mut conn, "new"), 1);
    assert_eq!(reason(&conn), RouteReason::PrimaryOnly);
    assert_eq!(cluster.stats().database("default").unwrap().replica, 0);
}

#[test]
fn pools_exist_only_for_primaries_and_errors_name_the_database() {
    let f = Files::new();
    let cluster = f.cluster();
    match cluster.pool("default_replica") {
        Err(Error::NotAPrimary { name, primary }) => {
            assert_eq!(
                (name.as_str(), primary.as_str()),
                ("default_replica", "default")
            )
        }
        other => panic!("{other:?}"),
    }
    let e = cluster.pool("nope").unwrap_err();
    assert!(e.to_string().contains("`nope`"), "{e}");
    assert_eq!(cluster.primaries().collect::<Vec<_>>(), vec!["default"]);
}

#[test]
fn a_cluster_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + std::fmt::Debug>(_: &T) {}
    let f = Files::new();
    let cluster = Arc::new(f.cluster());
    assert_send_sync(&cluster);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = cluster.clone();
            std::thread::spawn(move || {
                let mut conn = c.get("default").unwrap();
                count(&mut conn, "old")
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 1);
    }
    assert_eq!(cluster.stats().database("default").unwrap().replica, 4);
}

#[derive(Default, Clone)]
struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

impl Instrumentation for Recorder {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            self.0.lock().unwrap().push(query.to_string());
        }
    }
}

#[test]
fn instrumentation_sees_statements_of_the_primary_and_the_replica() {
    let f = Files::new();
    let cluster = f.cluster();
    let mut conn = cluster.get("default").unwrap();
    let recorder = Recorder::default();
    conn.set_instrumentation(recorder.clone());
    count(&mut conn, "old");
    add_user(&mut conn, "ada");
    let seen = recorder.0.lock().unwrap().clone();
    assert!(seen.iter().any(|q| q.contains("SELECT")), "{seen:?}");
    assert!(seen.iter().any(|q| q.contains("INSERT")), "{seen:?}");
    pin::unpin_this_thread();
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn every_routed_statement_emits_a_tracing_event_with_database_server_and_reason() {
    let f = Files::new();
    let cluster = f.cluster();
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut conn = cluster.get("default").unwrap();
        count(&mut conn, "old");
        add_user(&mut conn, "ada");
        count(&mut conn, "ada");
    });
    pin::unpin_this_thread();
    let log = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let routed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("routed statement"))
        .collect();
    assert_eq!(routed.len(), 3, "{log}");
    assert!(
        routed[0].contains("database=default")
            && routed[0].contains("server=\"default_replica\"")
            && routed[0].contains("role=\"replica\"")
            && routed[0].contains("reason=\"replica\""),
        "{}",
        routed[0]
    );
    assert!(
        routed[1].contains("role=\"primary\"") && routed[1].contains("reason=\"write\""),
        "{}",
        routed[1]
    );
    assert!(
        routed[2].contains("reason=\"recent_write\""),
        "{}",
        routed[2]
    );
}

#[cfg(feature = "postgres")]
#[test]
fn passwords_appear_in_no_debug_output_error_or_log() {
    let settings = Settings::from_toml_str(
        "[databases.default]\nurl = \"postgres://app:hunter2@127.0.0.1:1/app\"\n\
         [databases.r]\nurl = \"postgres://app:hunter3@127.0.0.1:1/app\"\nprimary = \"default\"",
    )
    .unwrap();
    assert!(!format!("{settings:?}").contains("hunter"));
    let cluster = Cluster::<diesel::pg::PgConnection>::new(settings).unwrap();
    let debug = format!("{cluster:?}");
    assert!(
        !debug.contains("hunter") && debug.contains("app:***@"),
        "{debug}"
    );

    // a replica that refuses connections: the warning and the error name no password
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let err = tracing::subscriber::with_default(subscriber, || {
        let mut conn = cluster.get("default").unwrap();
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
            .get_result::<i32>(&mut conn)
            .unwrap_err()
    });
    let log = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    // the replica is skipped (the monitor may already have found it down) and the statement
    // reported; `tests/secrets.rs` checks every event of every thread
    assert!(log.contains("routed statement"), "{log}");
    assert!(!log.contains("hunter"), "{log}");
    assert!(
        !err.to_string().contains("hunter") && !format!("{err:?}").contains("hunter"),
        "{err}"
    );

    let e = Cluster::<diesel::pg::PgConnection>::new(
        Settings::from_toml_str("[databases.default]\nurl = \"mysql://app:hunter4@h/db\"").unwrap(),
    )
    .unwrap_err();
    assert!(
        !e.to_string().contains("hunter4") && !format!("{e:?}").contains("hunter4"),
        "{e}"
    );
}

#[test]
fn a_test_transaction_keeps_reads_on_the_primary_and_survives_check_in() {
    let f = Files::new();
    let cluster = f.one_connection_cluster();
    {
        let mut conn = cluster.get("default").unwrap();
        conn.begin_test_transaction().unwrap();
        add_user(&mut conn, "ada");
        assert_eq!(count(&mut conn, "ada"), 1);
        assert_eq!(reason(&conn), RouteReason::Transaction);
    }
    // the one pooled connection comes back with its test transaction still open
    let mut conn = cluster.get("default").unwrap();
    assert_eq!(count(&mut conn, "ada"), 1);
    assert_eq!(reason(&conn), RouteReason::Transaction);
}

#[test]
fn a_hand_written_begin_keeps_reads_on_the_primary_and_is_not_returned_to_the_pool() {
    let f = Files::new();
    let cluster = f.one_connection_cluster();
    {
        let mut conn = cluster.get("default").unwrap();
        conn.batch_execute("BEGIN").unwrap();
        add_user(&mut conn, "ada");
        assert_eq!(count(&mut conn, "ada"), 1, "the open transaction's own row");
        assert_eq!(reason(&conn), RouteReason::Transaction);
    }
    // discarded at check-in (its transaction rolled back): the row is gone
    let mut conn = cluster.get("default").unwrap();
    assert_eq!(pin::use_primary(|| count(&mut conn, "ada")), 0);
}

diesel::define_sql_function! {
    /// Upper-cases its argument; registered on the primary through the escape hatch.
    fn shout(x: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

#[derive(QueryableByName)]
struct Counted {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[test]
fn a_function_registered_through_the_primary_keeps_the_checkout_on_the_primary() {
    let files = Files::new();
    let cluster = files.one_connection_cluster();
    let mut conn = cluster.get("default").unwrap();
    shout_utils::register_impl(conn.primary().unwrap(), |x: String| x.to_uppercase()).unwrap();
    let shouted: Vec<String> = users::table
        .select(shout(users::name))
        .load(&mut conn)
        .unwrap();
    assert_eq!(shouted, ["OLD"]);
    assert_eq!(reason(&conn), RouteReason::Session);
    drop(conn);
    // the next checkout starts clean: reads go to the replica again
    let mut conn = cluster.get("default").unwrap();
    assert_eq!(count(&mut conn, "old"), 1);
    assert_eq!(reason(&conn), RouteReason::Replica);
}

#[test]
fn a_temporary_table_keeps_the_checkout_on_the_primary_and_is_gone_at_the_next_one() {
    let files = Files::new();
    let cluster = files.one_connection_cluster();
    let mut conn = cluster.get("default").unwrap();
    conn.batch_execute("CREATE TEMP TABLE scratch (x INTEGER); INSERT INTO scratch VALUES (1);")
        .unwrap();
    let n = diesel::sql_query("SELECT count(*) AS n FROM scratch")
        .get_result::<Counted>(&mut conn)
        .unwrap()
        .n;
    assert_eq!(n, 1);
    assert_eq!(reason(&conn), RouteReason::Session);
    drop(conn);
    let mut conn = cluster.get("default").unwrap();
    conn.stick_to_primary();
    assert!(
        diesel::sql_query("SELECT count(*) AS n FROM scratch")
            .get_result::<Counted>(&mut conn)
            .is_err(),
        "the session was closed at check-in"
    );
    assert_eq!(
        count(&mut conn, "old"),
        1,
        "the primary's data is all there"
    );
}

#[test]
fn a_transaction_begun_by_hand_after_a_comment_reads_its_own_rows() {
    let files = Files::new();
    let cluster = files.cluster();
    let mut conn = cluster.get("default").unwrap();
    conn.batch_execute("/* app */ BEGIN").unwrap();
    add_user(&mut conn, "ada");
    assert_eq!(count(&mut conn, "ada"), 1, "its own uncommitted row");
    assert_eq!(reason(&conn), RouteReason::Transaction);
    diesel::sql_query("COMMIT").execute(&mut conn).unwrap();
    assert_eq!(count(&mut conn, "ada"), 1);
    assert_eq!(reason(&conn), RouteReason::RecentWrite);
}

#[test]
fn connection_timeout_bounds_a_checkout_from_a_full_pool() {
    let files = Files::new();
    let settings = files.settings("").database(
        "default",
        diesel_sharding::DatabaseSettings::primary(files.primary.to_str().unwrap())
            .pool_size(1)
            .connection_timeout(Duration::from_millis(1200)),
    );
    let cluster = Cluster::<SqliteConnection>::new(settings).unwrap();
    let held = cluster.get("default").unwrap();
    let started = std::time::Instant::now();
    let e = cluster.get("default").unwrap_err();
    assert!(matches!(e, Error::Pool { .. }), "{e}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(held);
    assert!(cluster.get("default").is_ok());
}

#[test]
fn a_hook_may_configure_each_pool_beyond_the_settings() {
    let files = Files::new();
    let named = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = named.clone();
    let cluster =
        Cluster::<SqliteConnection>::with_pools(files.settings(""), move |name, builder| {
            seen.lock().unwrap().push(name.to_owned());
            builder.max_size(3)
        })
        .unwrap();
    assert_eq!(*named.lock().unwrap(), ["default"]);
    assert_eq!(cluster.pool("default").unwrap().max_size(), 3);
}
