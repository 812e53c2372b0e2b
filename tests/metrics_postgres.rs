//! The router's metrics (feature `metrics`) through the Prometheus exporter, on a real
//! PostgreSQL primary and streaming replica: the exported text is read back and checked
//! against what the test did and against the servers.
#![cfg(all(feature = "metrics", feature = "postgres"))]

mod support;

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, ConsistencyToken, RouteReason, Settings};
use metrics_exporter_prometheus::PrometheusBuilder;
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "app";

mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            name -> Text,
        }
    }
}
use schema::users;

/// The value of the sample `name{labels}` in the exported text (labels in the exporter's
/// order: as registered).
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn statements_lag_failures_and_pools_are_exported() {
    // the exporter first: the cluster registers its handles when it is built
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let pg = PgCluster::start(1);
    pg.create_database(DB);
    pg.execute(
        Node::Primary,
        DB,
        "CREATE TABLE users (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL)",
    );
    pg.wait_all_caught_up();
    let cluster: Cluster<PgConnection> = Cluster::new(
        Settings::from_toml_str(&format!(
            "[pinning]\nseconds = 0\n\
             [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"\n\
             [databases.default]\nurl = \"{}\"\npool_size = 3\n\
             [databases.default_replica]\nurl = \"{}\"\nprimary = \"default\"\n\
             [routing]\nreplica_retry = \"60s\"\n",
            pg.primary_url(DB),
            pg.replica_url(0, DB),
        ))
        .unwrap(),
    )
    .unwrap();
    pg.reset_all_statement_stats();
    let mut routes = Vec::new();
    for i in 0..5 {
        cluster.with_token(&ConsistencyToken::default(), || {
            let mut conn = cluster.get("default").unwrap();
            diesel::insert_into(users::table)
                .values(users::name.eq(format!("u{i}")))
                .execute(&mut conn)
                .unwrap();
            routes.push(conn.last_route().unwrap().reason);
        });
    }
    pg.wait_all_caught_up();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..7 {
        let mut conn = cluster.get("default").unwrap();
        let _: i64 = users::table.count().get_result(&mut conn).unwrap();
        routes.push(conn.last_route().unwrap().reason);
    }
    assert_eq!(
        routes.iter().filter(|r| **r == RouteReason::Write).count(),
        5
    );
    assert_eq!(
        routes
            .iter()
            .filter(|r| **r == RouteReason::Replica)
            .count(),
        7
    );
    let text = handle.render();
    let statements = "diesel_sharding_statements_total";
    assert_eq!(
        sample(
            &text,
            statements,
            "database=\"default\",server=\"default\",reason=\"write\""
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            statements,
            "database=\"default\",server=\"default_replica\",reason=\"replica\""
        ),
        Some(7.0),
        "{text}"
    );
    // the servers agree
    assert_eq!(
        pg.statement_calls(Node::Replica(0), "SELECT COUNT(*) FROM \"users\""),
        7
    );
    // (sequential checkouts: the pool opened what one at a time needs, up to its size 3)
    assert!(
        sample(
            &text,
            "diesel_sharding_pool_connections",
            "database=\"default\""
        )
        .is_some_and(|n| (1.0..=3.0).contains(&n)),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "diesel_sharding_replica_up",
            "database=\"default\",replica=\"default_replica\""
        ),
        Some(1.0)
    );
    // lag: replay paused, the primary writes on; the monitor's gauges follow
    pg.pause_replay(0);
    pg.execute(
        Node::Primary,
        DB,
        "INSERT INTO users (name) SELECT 'x' || g FROM generate_series(1, 5000) g",
    );
    let lag_bytes = "diesel_sharding_replica_lag_bytes";
    let labels = "database=\"default\",replica=\"default_replica\"";
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut bytes = 0.0;
    while bytes < 100_000.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        bytes = sample(&handle.render(), lag_bytes, labels).unwrap_or(0.0);
    }
    assert!(bytes >= 100_000.0, "lag bytes {bytes}");
    let text = handle.render();
    assert!(
        sample(&text, "diesel_sharding_replica_lag_seconds", labels).is_some(),
        "{text}"
    );
    pg.resume_replay(0);
    // a replica that dies: a failure, and it is down
    pg.kill_replica(0);
    let mut conn = cluster.get("default").unwrap();
    let _: i64 = users::table.count().get_result(&mut conn).unwrap();
    assert_ne!(conn.last_route().unwrap().reason, RouteReason::Replica);
    drop(conn);
    let text = handle.render();
    assert_eq!(
        sample(&text, "diesel_sharding_replica_up", labels),
        Some(0.0),
        "{text}"
    );
    // the read fell back to the primary (the monitor may have found the replica gone first:
    // then no connection of the router failed on it)
    assert_eq!(
        sample(
            &text,
            "diesel_sharding_statements_total",
            "database=\"default\",server=\"default\",reason=\"fallback\""
        ),
        Some(1.0),
        "{text}"
    );
    assert!(sample(
        &text,
        "diesel_sharding_replica_failures_total",
        "database=\"default\""
    )
    .is_some());
    // a token after writes whose positions are pending: position queries are counted
    pg.start_replica(0);
    cluster.with_token(&ConsistencyToken::default(), || {
        let mut conn = cluster.get("default").unwrap();
        diesel::insert_into(users::table)
            .values(users::name.eq("t"))
            .execute(&mut conn)
            .unwrap();
        drop(conn);
        let _ = cluster.token();
    });
    let text = handle.render();
    assert!(
        text.contains("diesel_sharding_position_queries_total{database=\"default\"}"),
        "{text}"
    );
}
