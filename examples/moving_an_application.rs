//! Moving an application from `diesel::r2d2` to diesel-sharding: what changes in the code.
//!
//! Run: `cargo run --example moving_an_application` (SQLite, no server needed). The same
//! steps hold for PostgreSQL with `PgConnection` / `RoutedPgConnection`.
//!
//! Before, with Diesel's own pool, helpers took the concrete connection, and `&mut pooled`
//! coerced to it:
//!
//! ```text
//! fn names(conn: &mut SqliteConnection) -> QueryResult<Vec<String>> { .. }
//!
//! let pool = Pool::new(ConnectionManager::<SqliteConnection>::new(url))?;
//! let mut conn = pool.get()?;
//! names(&mut conn)?;
//! ```
//!
//! After, `&mut pooled` is a routed connection. Passing it to the old helper fails with
//! "expected `&mut SqliteConnection`, found `&mut PooledConnection<RoutedConnectionManager<..>>`":
//! the helper would bypass routing. Change the signature to the alias, or make it generic.

use diesel::connection::{LoadConnection, SimpleConnection};
use diesel::prelude::*;
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel_sharding::{Cluster, RoutedSqliteConnection, Settings};

mod schema {
    diesel::table! {
        users (id) {
            id -> Integer,
            name -> Text,
        }
    }
}
use schema::users;

/// After, 1: the routed connection by name. `&mut pooled` coerces to it, as it coerced to
/// `&mut SqliteConnection` before.
fn names(conn: &mut RoutedSqliteConnection) -> QueryResult<Vec<String>> {
    users::table.select(users::name).order(users::id).load(conn)
}

/// After, 2: generic over Diesel's traits, for helpers shared by routed and plain
/// connections (tests, tools, migrations).
fn count<C>(conn: &mut C) -> QueryResult<i64>
where
    C: Connection<Backend = Sqlite> + LoadConnection,
{
    users::table.count().get_result(conn)
}

/// Calls that exist only on the concrete connection type take the physical one, through the
/// escape hatch (here SQLite function registration; `COPY TO` on PostgreSQL).
fn register_functions(conn: &mut SqliteConnection) -> QueryResult<()> {
    conn.batch_execute("PRAGMA foreign_keys = ON")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = dir.path().join("app.sqlite");
    let url = url.to_str().ok_or("temporary path is not UTF-8")?;
    let settings = Settings::from_toml_str(&format!(
        "[databases.default]\nurl = \"{url}\"\n[databases.default_replica]\nurl = \"{url}\"\nprimary = \"default\"\n"
    ))?;
    let cluster = Cluster::<SqliteConnection>::new(settings)?;
    let mut conn = cluster.get("default")?;
    conn.batch_execute(
        "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, name TEXT NOT NULL);\
         INSERT INTO users (name) VALUES ('ada'), ('grace');",
    )?;

    println!("names: {:?}", names(&mut conn)?); // by alias: `&mut pooled` as before
    println!("count: {}", count(&mut conn)?); // generic: routed ...
    let mut plain = SqliteConnection::establish(url)?;
    println!("count on a plain connection: {}", count(&mut plain)?); // ... and plain
    register_functions(conn.primary()?)?; // concrete-only calls: the physical primary
    println!("last route: {:?}", conn.last_route());
    Ok(())
}
