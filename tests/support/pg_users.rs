//! The `users` table on a PostgreSQL cluster, and helpers that read it through a cluster,
//! for the PostgreSQL test binaries.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, RouteReason};

use super::pg_cluster::{Node, PgCluster};

/// The statement of [`count`], as `pg_stat_statements` shows it.
pub(crate) const COUNT: &str = "SELECT COUNT(*) FROM \"users\" WHERE (\"users\".\"name\" = $1)";

pub(crate) mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            name -> Text,
        }
    }
}
pub(crate) use schema::users;

/// Creates database `db` with the table `users` holding one row, `seed`, and waits until
/// every replica has it.
pub(crate) fn create_users(pg: &PgCluster, db: &str) {
    pg.create_database(db);
    pg.execute(
        Node::Primary,
        db,
        "CREATE TABLE users (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO users (name) VALUES ('seed');",
    );
    pg.wait_all_caught_up();
}

/// How many users are called `name`, read through `cluster`'s `default`, and why the read
/// went where it went.
pub(crate) fn count(cluster: &Cluster<PgConnection>, name: &str) -> (i64, RouteReason) {
    let mut conn = cluster.get("default").unwrap();
    let n = users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(&mut conn)
        .unwrap();
    (n, conn.last_route().unwrap().reason)
}

/// Waits up to 10 s for `ok`, then fails naming `what`.
pub(crate) fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
