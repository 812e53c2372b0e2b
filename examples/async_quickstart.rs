//! The async quickstart: diesel-async through a bb8 pool of routed connections, under tokio.
//!
//! ```sh
//! cargo run --example async_quickstart --features async,bb8
//! ```
//!
//! With `DATABASE_URL` set, it uses that PostgreSQL database as the primary and as its own
//! "replica" (the routing shows, the replication does not). Without it, it starts a
//! PostgreSQL primary and a streaming replica of its own in a temporary directory (as the
//! test suite does; the PostgreSQL server binaries must be installed) and holds the replica
//! back, so the reader's own write visibly comes from the primary. Every step prints which
//! server served it and why.

use std::error::Error;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use diesel_sharding::{task, AsyncRoutedPgConnection, Cluster, Settings};

use diesel_sharding_testing::postgres as pg_cluster;

mod schema {
    diesel::table! {
        notes (id) {
            id -> Int8,
            body -> Text,
        }
    }
}
use schema::notes;

fn served(step: &str, conn: &AsyncRoutedPgConnection) {
    match conn.last_route() {
        Some(route) => println!("{step:<44} -> {:<10} ({})", route.server, route.reason),
        None => println!("{step:<44} -> (nothing routed)"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // the servers: DATABASE_URL, or a primary and a replica of our own
    let own = match std::env::var("DATABASE_URL") {
        Ok(_) => None,
        Err(_) => {
            println!("no DATABASE_URL: starting a PostgreSQL primary and streaming replica");
            let pg = pg_cluster::PgCluster::start(1);
            pg.create_database("quickstart");
            Some(pg)
        }
    };
    let (primary, replica) = match (&own, std::env::var("DATABASE_URL")) {
        (Some(pg), _) => (
            pg.primary_url("quickstart"),
            pg.replica_url(0, "quickstart"),
        ),
        (None, Ok(url)) => (url.clone(), url),
        (None, Err(_)) => unreachable!("a cluster was started"),
    };
    let settings = Settings::from_toml_str(&format!(
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"100ms\"\n\
         [databases.default]\nurl = \"{primary}\"\npool_size = 4\n\
         [databases.default_replica]\nurl = \"{replica}\"\nprimary = \"default\"\n"
    ))?;
    let cluster: Cluster<PgConnection> = Cluster::new(settings)?;
    let pool = cluster.bb8_pool("default")?;

    {
        let mut conn = pool.get().await?;
        diesel::sql_query(
            "CREATE TABLE IF NOT EXISTS notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        served("create the table", &conn);
    }
    if let Some(pg) = &own {
        pg.wait_all_caught_up();
        // hold the replica back: what is written from now on is not there yet
        pg.pause_replay(0);
    }

    // one request: a task of its own (a middleware would wrap each request like this)
    let request = {
        let pool = pool.clone();
        task::scope(async move {
            let mut conn = pool.get().await?;
            diesel::insert_into(notes::table)
                .values(notes::body.eq("hello from a task"))
                .execute(&mut *conn)
                .await?;
            served("insert a note", &conn);
            drop(conn);
            // the task may move to another worker thread here; its scope goes with it
            tokio::task::yield_now().await;
            let mut conn = pool.get().await?;
            let mine: i64 = notes::table.count().get_result(&mut *conn).await?;
            served(&format!("read it back ({mine} notes)"), &conn);
            Ok::<_, Box<dyn Error + Send + Sync>>(())
        })
    };
    tokio::spawn(request)
        .await?
        .map_err(|e| e as Box<dyn Error>)?;

    // another request, that wrote nothing: the replica serves it
    let other = {
        let pool = pool.clone();
        task::scope(async move {
            let mut conn = pool.get().await?;
            let n: i64 = notes::table.count().get_result(&mut *conn).await?;
            served(&format!("another request counts ({n} notes)"), &conn);
            Ok::<_, Box<dyn Error + Send + Sync>>(())
        })
    };
    tokio::spawn(other)
        .await?
        .map_err(|e| e as Box<dyn Error>)?;

    if let Some(pg) = &own {
        pg.resume_replay(0);
    }
    Ok(())
}
