//! Diesel's own SQLite API through the routed pooled connection, called as Diesel's docs
//! show it. The replica is a stale copy of the primary file, so what a read returns shows
//! which file served it.
#![cfg(feature = "sqlite")]

use diesel::connection::{LoadConnection, SimpleConnection};
use diesel::prelude::*;
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel_sharding::{Cluster, PooledConnection, RouteReason, RoutedSqliteConnection, Settings};

mod schema {
    diesel::table! {
        users (id) {
            id -> Integer,
            name -> Text,
        }
    }
}
use schema::users;

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUser<'a> {
    name: &'a str,
}

struct Files {
    _dir: tempfile::TempDir,
    cluster: Cluster<SqliteConnection>,
}

/// A primary with one user, `seed`, and a replica file copied from it; the pin window off.
fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let primary = dir.path().join("primary.sqlite");
    let replica = dir.path().join("replica.sqlite");
    SqliteConnection::establish(primary.to_str().unwrap())
        .unwrap()
        .batch_execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, name TEXT NOT NULL);\
             INSERT INTO users (name) VALUES ('seed');",
        )
        .unwrap();
    std::fs::copy(&primary, &replica).unwrap();
    let cluster = Cluster::new(
        Settings::from_toml_str(&format!(
            "[pinning]\nseconds = 0\n[databases.default]\nurl = \"{}\"\n[databases.r]\nurl = \"{}\"\nprimary = \"default\"\n",
            primary.display(),
            replica.display()
        ))
        .unwrap(),
    )
    .unwrap();
    Files { _dir: dir, cluster }
}

fn names(conn: &mut impl LoadConnection<Backend = Sqlite>) -> Vec<String> {
    users::table
        .select(users::name)
        .order(users::id)
        .load(conn)
        .unwrap()
}

fn reason(conn: &PooledConnection<SqliteConnection>) -> RouteReason {
    conn.last_route().unwrap().reason
}

#[test]
fn a_batch_insert_runs_unchanged_on_the_primary() {
    let f = files();
    let mut conn = f.cluster.get("default").unwrap();
    let n = diesel::insert_into(users::table)
        .values(&vec![NewUser { name: "a" }, NewUser { name: "b" }])
        .execute(&mut conn)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        reason(&conn),
        RouteReason::Transaction,
        "Diesel wraps the rows in one"
    );
    conn.stick_to_primary();
    assert_eq!(names(&mut conn), ["seed", "a", "b"]);
}

#[test]
fn a_batch_insert_with_returning_goes_through_the_primary() {
    let f = files();
    let mut conn = f.cluster.get("default").unwrap();
    let ids: Vec<i32> = diesel::insert_into(users::table)
        .values(&vec![NewUser { name: "a" }, NewUser { name: "b" }])
        .returning(users::id)
        .get_results(conn.primary().unwrap())
        .unwrap();
    assert_eq!(ids, [2, 3]);
    // the escape hatch keeps the checkout on the primary, which has the rows
    assert_eq!(names(&mut conn), ["seed", "a", "b"]);
    assert_eq!(reason(&conn), RouteReason::Session);
    drop(conn);
    let mut conn = f.cluster.get("default").unwrap();
    assert_eq!(
        names(&mut conn),
        ["seed"],
        "the next checkout reads the stale replica again"
    );
    assert_eq!(reason(&conn), RouteReason::Replica);
}

#[test]
fn immediate_and_exclusive_transactions_run_on_the_primary() {
    let f = files();
    let mut conn = f.cluster.get("default").unwrap();
    conn.immediate_transaction(|c| {
        diesel::insert_into(users::table)
            .values(NewUser { name: "imm" })
            .execute(c)?;
        assert_eq!(names(c), ["seed", "imm"], "inside: the primary");
        QueryResult::Ok(())
    })
    .unwrap();
    conn.exclusive_transaction(|c| {
        diesel::insert_into(users::table)
            .values(NewUser { name: "exc" })
            .execute(c)?;
        QueryResult::Ok(())
    })
    .unwrap();
    let failed: QueryResult<()> = conn.immediate_transaction(|c| {
        diesel::insert_into(users::table)
            .values(NewUser { name: "gone" })
            .execute(c)?;
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(failed.is_err());
    conn.stick_to_primary();
    assert_eq!(names(&mut conn), ["seed", "imm", "exc"]);
}

/// What an application's helper looks like after the move: by alias ...
fn count_by_name(conn: &mut RoutedSqliteConnection) -> i64 {
    users::table.count().get_result(conn).unwrap()
}

/// ... or generic over Diesel's traits.
fn count_generic<C>(conn: &mut C) -> i64
where
    C: Connection<Backend = Sqlite> + LoadConnection,
{
    users::table.count().get_result(conn).unwrap()
}

#[test]
fn application_functions_take_the_routed_connection_by_alias_or_generically() {
    let f = files();
    let mut conn = f.cluster.get("default").unwrap();
    diesel::insert_into(users::table)
        .values(NewUser { name: "new" })
        .execute(conn.primary().unwrap())
        .unwrap();
    drop(conn);
    let mut conn = f.cluster.get("default").unwrap();
    // the replica is a stale copy: one user there, two on the primary
    assert_eq!(count_by_name(&mut conn), 1);
    assert_eq!(count_generic(&mut conn), 1);
    assert_eq!(count_generic(&mut *conn), 1);
    assert_eq!(count_generic(conn.primary().unwrap()), 2);
}
