//! Topology that changes under the router (PostgreSQL): a replica that is promoted stops
//! taking reads, and nothing it reports is trusted, even though it now answers with positions
//! of its own that look far ahead. Checked on the servers (`pg_stat_statements`).
#![cfg(feature = "postgres")]

mod support;

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, ConsistencyToken, RouteReason, Settings};
use support::pg_cluster::{Node, PgCluster};
use support::pg_users::*;

const DB: &str = "app";

#[test]
fn a_promoted_replica_takes_no_reads_and_its_positions_are_not_trusted() {
    let pg = PgCluster::start(1);
    create_users(&pg, DB);
    let cluster: Cluster<PgConnection> = Cluster::new(
        Settings::from_toml_str(&format!(
            "[pinning]\nseconds = 0\n\
             [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"\n\
             [databases.default]\nurl = \"{}\"\n\
             [databases.default_replica]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(0, DB),
        ))
        .unwrap(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(&cluster, "seed") != (1, RouteReason::Replica) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(&cluster, "seed"), (1, RouteReason::Replica));

    // the replica is promoted, and takes writes of its own: another history
    pg.promote_replica(0);
    pg.execute(
        Node::Replica(0),
        DB,
        "INSERT INTO users (name) SELECT 'diverged' FROM generate_series(1, 1000)",
    );
    // the monitor finds it out within a few probes
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(&cluster, "seed").1 == RouteReason::Replica && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.reset_all_statement_stats();
    // from then on nothing reads it: not plain reads, not reads that need a write of the
    // primary (its own positions, on its new timeline, look far ahead of the primary's)
    for i in 0..10 {
        let (seen, reason) = count(&cluster, "diverged");
        assert_eq!(seen, 0, "read the promoted server's history");
        assert_ne!(reason, RouteReason::Replica);
        let name = format!("after{i}");
        let reasons = cluster.with_token(&ConsistencyToken::default(), || {
            let mut conn = cluster.get("default").unwrap();
            diesel::insert_into(users::table)
                .values(users::name.eq(&name))
                .execute(&mut conn)
                .unwrap();
            count(&cluster, &name)
        });
        assert_eq!(reasons.0, 1, "the writer's read missed its row");
    }
    assert_eq!(
        pg.statement_calls(Node::Replica(0), COUNT),
        0,
        "the promoted server ran a routed read"
    );
}
