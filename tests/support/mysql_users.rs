//! The `users` table on a MariaDB cluster, and helpers that run and observe statements on it,
//! for the MySQL test binaries.
#![allow(dead_code)]

use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, RouteReason, Settings};

use super::mariadb_cluster::{MariaCluster, Node};

pub(crate) mod schema {
    diesel::table! {
        users (id) {
            id -> Integer,
            name -> Text,
        }
    }
}
pub(crate) use schema::users;

pub(crate) fn setup() -> (MariaCluster, Cluster<MysqlConnection>) {
    let m = start("");
    let cluster = cluster_on(&m, "[consistency]\nmonitor_interval = \"50ms\"\n");
    (m, cluster)
}

/// A primary and a replica with the `users` table, and `seed` run on the primary.
pub(crate) fn start(seed: &str) -> MariaCluster {
    let m = MariaCluster::start(1);
    m.try_sql_as(
        Node::Primary,
        "app",
        &format!(
            "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL); \
             {seed}"
        ),
    )
    .unwrap();
    m.wait_all_caught_up();
    m
}

/// A cluster on `m` (its primary and replica) with `settings` before the databases.
pub(crate) fn cluster_on(m: &MariaCluster, settings: &str) -> Cluster<MysqlConnection> {
    let settings = Settings::from_toml_str(&format!(
        "{settings}\n[databases.default]\nurl = \"{}\"\n\
         [databases.replica]\nurl = \"{}\"\nprimary = \"default\"\n",
        m.url(Node::Primary),
        m.url(Node::Replica(0)),
    ))
    .unwrap();
    Cluster::<MysqlConnection>::new(settings).unwrap()
}

/// Rows of `users` read on a node, from the server's table statistics (the replication
/// applier does not count there).
pub(crate) fn rows_read(m: &MariaCluster, node: Node) -> i64 {
    let text = m.sql(
        node,
        "SELECT COALESCE(SUM(ROWS_READ), 0) FROM information_schema.TABLE_STATISTICS \
         WHERE TABLE_SCHEMA = 'test' AND TABLE_NAME = 'users'",
    );
    text.parse().unwrap()
}

pub(crate) fn count(cluster: &Cluster<MysqlConnection>, name: &str) -> (i64, RouteReason) {
    let mut conn = cluster.get("default").unwrap();
    let n = users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(&mut conn)
        .unwrap();
    (n, conn.last_route().unwrap().reason)
}

/// Inserts a user through the cluster; where the insert ran.
pub(crate) fn add_user(cluster: &Cluster<MysqlConnection>, name: &str) -> RouteReason {
    let mut conn = cluster.get("default").unwrap();
    diesel::insert_into(users::table)
        .values(users::name.eq(name))
        .execute(&mut conn)
        .unwrap();
    conn.last_route().unwrap().reason
}

/// Reads `name`'s count until a read goes to the replica (at most 5 s); the last read's
/// (count, reason).
pub(crate) fn until_on_replica(
    cluster: &Cluster<MysqlConnection>,
    name: &str,
) -> (i64, RouteReason) {
    poll(|| count(cluster, name), |got| got.1 == RouteReason::Replica)
}

/// Calls `f` until `done` holds for its result (every 10 ms, at most 5 s); the last result.
pub(crate) fn poll<T>(mut f: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let got = f();
        if done(&got) || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Rows the user `app` (the code under test) inserted, updated or deleted on a node, from the
/// server's user statistics: the replication applier is not `app`.
pub(crate) fn rows_changed(m: &MariaCluster, node: Node) -> i64 {
    let text = m.sql(
        node,
        "SELECT COALESCE(SUM(ROWS_INSERTED + ROWS_UPDATED + ROWS_DELETED), 0) \
         FROM information_schema.USER_STATISTICS WHERE USER = 'app'",
    );
    text.parse().unwrap()
}

/// Settings of the tests of `replica_wait`: reads wait up to 5 s for the replica, whose
/// probes and connections get generous bounds (the tests are about waiting, not hangs).
pub(crate) const WAITING: &str = "[routing]\nreplica_timeout = \"10s\"\nconnect_timeout = \"10s\"\n\
     [consistency]\nmode = \"read_your_writes\"\nreplica_wait = \"5s\"\nmonitor_interval = \"50ms\"";
