//! The quickstart: a primary and a read-only replica handle on SQLite, no server needed.
//!
//! Run it with `cargo run --example quickstart`. Every step prints which database served it.

use std::error::Error;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use diesel_sharding::{pin, Cluster, PooledConnection, Settings};

#[path = "schema/sqlite.rs"]
mod schema;
use schema::users;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = users)]
#[allow(dead_code)]
struct User {
    id: i32,
    name: String,
    email: String,
    created_at: chrono::NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUser<'a> {
    name: &'a str,
    email: &'a str,
}

fn served(step: &str, conn: &PooledConnection<SqliteConnection>) {
    match conn.last_route() {
        Some(route) => println!("{step:<48} -> {:<16} ({})", route.server, route.reason),
        None => println!("{step:<48} -> (nothing routed)"),
    }
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    // A primary and a replica: here the same SQLite file, the replica opened read-only.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.sqlite");
    let settings = Settings::from_toml_str(&format!(
        r#"
        [pinning]
        seconds = 1              # reads stay on the primary 1 s after this thread writes

        [databases.default]
        url = "{path}"

        [databases.default_replica]
        url = "{path}"
        primary = "default"
        "#,
        path = path.display()
    ))?;
    let cluster = Cluster::<SqliteConnection>::new(settings)?;
    let pool = cluster.pool("default")?;
    println!("{cluster:?}\n");

    {
        let mut conn = pool.get()?;
        conn.batch_execute("PRAGMA journal_mode = WAL")?;
        conn.run_pending_migrations(MIGRATIONS)?;
        served("run the migrations", &conn);
    }

    let mut conn = pool.get()?;
    for (name, email) in [("Ada", "ada@example.com"), ("Grace", "grace@example.com")] {
        diesel::insert_into(users::table)
            .values(NewUser { name, email })
            .execute(&mut conn)?;
        served(&format!("insert {name}"), &conn);
    }

    let n: i64 = users::table.count().get_result(&mut conn)?;
    served(&format!("count users right after the write ({n})"), &conn);

    std::thread::sleep(Duration::from_millis(1100));
    let all: Vec<User> = users::table
        .select(User::as_select())
        .order(users::id)
        .load(&mut conn)?;
    served(
        &format!("list users after the pin window ({})", all.len()),
        &conn,
    );

    let ada: User = pin::use_primary(|| {
        users::table
            .filter(users::name.eq("Ada"))
            .select(User::as_select())
            .first(&mut conn)
    })?;
    served(&format!("read {} inside use_primary", ada.name), &conn);

    let names: Vec<String> = conn.transaction(|c| users::table.select(users::name).load(c))?;
    served(
        &format!("read {} names inside a transaction", names.len()),
        &conn,
    );

    let linus: User = diesel::insert_into(users::table)
        .values(NewUser {
            name: "Linus",
            email: "linus@example.com",
        })
        .returning(User::as_returning())
        .get_result(&mut conn)?;
    served(&format!("INSERT ... RETURNING (id {})", linus.id), &conn);

    let ids: Vec<i32> = pin::run_job(|| {
        std::thread::sleep(Duration::from_millis(1100));
        users::table.select(users::id).load(&mut conn)
    })?;
    served(
        &format!("a job reads {} ids with a clean pin state", ids.len()),
        &conn,
    );

    let stats = cluster.stats();
    let s = stats.database("default").ok_or("no stats")?;
    println!(
        "\nstatements on the primary: {}, on replicas: {}",
        s.primary, s.replica
    );
    for (reason, n) in &s.by_reason {
        println!("  {reason:<14} {n}");
    }
    Ok(())
}
