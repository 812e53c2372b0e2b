//! A primary that fails over, seen by the routed async connection (features `async`, `bb8`):
//! pooled connections to the old primary are reopened to what its address reaches now
//! without failing a statement, and no position of the old timeline lets a replica that
//! stayed on it take a read. Checked on the servers (`pg_stat_statements`).
#![cfg(all(feature = "async", feature = "bb8"))]

mod support;

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use diesel_sharding::{
    AsyncRoutedPgConnection, Cluster, Consistency, ConsistencyToken, RouteReason, Settings,
};
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "app";
const COUNT: &str = "SELECT COUNT(*) FROM \"users\" WHERE (\"users\".\"name\" = $1)";
const LOST: i64 = 20_000;

mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            name -> Text,
        }
    }
}
use schema::users;

async fn count(conn: &mut AsyncRoutedPgConnection, name: &str) -> (i64, RouteReason) {
    let n = users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(conn)
        .await
        .unwrap();
    (n, conn.last_route().unwrap().reason)
}

#[test]
fn after_a_failover_pooled_async_connections_reconnect_and_never_read_the_old_timeline() {
    let mut pg = PgCluster::start(2);
    pg.create_database(DB);
    PgCluster::execute(
        &pg,
        Node::Primary,
        DB,
        "CREATE TABLE users (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO users (name) VALUES ('seed');",
    );
    pg.wait_all_caught_up();
    let cluster: Cluster<PgConnection> = Cluster::new(
        Settings::from_toml_str(&format!(
            "[pinning]\nseconds = 0\n\
             [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"\n\
             [databases.default]\nurl = \"{}\"\npool_size = 4\n\
             [databases.r1]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(1, DB),
        ))
        .unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on({
        let cluster = cluster.clone();
        async move { cluster.bb8_pool("default").unwrap() }
    });
    let eventual = |name: &'static str| {
        let (cluster, pool) = (cluster.clone(), pool.clone());
        rt.block_on(cluster.clone().with_token_async(
            &ConsistencyToken::default(),
            cluster.with_consistency_async(Consistency::Eventual, async move {
                let mut conn = pool.get().await.unwrap();
                count(&mut conn, name).await
            }),
        ))
    };
    // every pooled connection opens the primary: the pool is full of them at the failover
    rt.block_on({
        let pool = pool.clone();
        async move {
            let mut held = Vec::new();
            for i in 0..4 {
                let mut conn = pool.get().await.unwrap();
                diesel::insert_into(users::table)
                    .values(users::name.eq(format!("before{i}")))
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                held.push(conn);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while eventual("seed") != (1, RouteReason::Replica) {
        assert!(Instant::now() < deadline, "no replica read");
        std::thread::sleep(Duration::from_millis(20));
    }

    // replica 0 stops; a write only replica 1 gets; the primary crashes; replica 0 is
    // promoted at its address
    pg.kill_replica(0);
    PgCluster::execute(
        &pg,
        Node::Primary,
        DB,
        &format!("INSERT INTO users (name) SELECT 'lost' FROM generate_series(1, {LOST})"),
    );
    pg.wait_caught_up(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while eventual("lost") != (LOST, RouteReason::Replica) {
        assert!(
            Instant::now() < deadline,
            "replica 1 never showed the write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.kill_node(Node::Primary);
    pg.start_replica_accepting_connections(0);
    pg.fail_over(0);
    pg.reset_statement_stats(Node::Replica(1));

    for i in 0..12 {
        // each statement on a pooled connection: none fails, and the writer sees its row
        let (seen, reason) = rt.block_on({
            let (cluster, pool) = (cluster.clone(), pool.clone());
            cluster
                .clone()
                .with_token_async(&ConsistencyToken::default(), async move {
                    let mut conn = pool.get().await.unwrap();
                    let name = format!("after{i}");
                    diesel::insert_into(users::table)
                        .values(users::name.eq(&name))
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                    count(&mut conn, &name).await
                })
        });
        assert_eq!(
            seen, 1,
            "write {i}: the writer's read missed its row ({reason:?})"
        );
        let (lost, reason) = eventual("lost");
        assert_eq!(lost, 0, "read {i} saw the old timeline's rows ({reason:?})");
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(
        pg.statement_calls(Node::Replica(1), COUNT),
        0,
        "the replica on the old timeline ran a routed read"
    );
}
