//! No call hangs on a hung server longer than a bound the settings name. Servers are frozen
//! with SIGSTOP: their kernel still accepts and acknowledges TCP, so nothing but the crate's
//! watchdog can end a call to them. The bounds checked here are the documented ones (with a
//! margin for a loaded 2-core machine), not timing benchmarks.
#![cfg(feature = "postgres")]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, Error, RouteReason, Settings};
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "app";

mod schema {
    diesel::table! {
        items (id) {
            id -> Int4,
            name -> Text,
        }
    }
}
use schema::items;

const READ: &str = "SELECT \"items\".\"name\" FROM \"items\"%";

/// Scheduling on a loaded 2-core machine: what the bounds below may overshoot by.
const MARGIN: Duration = Duration::from_millis(1000);

fn cluster_on(pg: &PgCluster, settings: &str) -> Cluster<PgConnection> {
    let mut toml = format!(
        "{settings}\n[databases.default]\nurl = \"{}\"\npool_size = 12\n",
        pg.primary_url(DB)
    );
    for i in 0..pg.replicas() {
        toml += &format!(
            "[databases.r{i}]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.replica_url(i, DB)
        );
    }
    Cluster::new(Settings::from_toml_str(&toml).unwrap()).unwrap()
}

fn start(replicas: usize) -> PgCluster {
    let pg = PgCluster::start(replicas);
    pg.create_database(DB);
    pg.execute(
        Node::Primary,
        DB,
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\
         INSERT INTO items (name) VALUES ('seed');",
    );
    pg.wait_all_caught_up();
    pg
}

fn read(cluster: &Cluster<PgConnection>) -> QueryResult<(usize, RouteReason)> {
    let mut conn = cluster.get("default").unwrap();
    let rows: Vec<String> = items::table.select(items::name).load(&mut conn)?;
    Ok((rows.len(), conn.last_route().unwrap().reason))
}

#[test]
fn a_frozen_replica_costs_its_readers_a_bounded_wait_and_holds_up_no_one_else() {
    let pg = start(2);
    let replica_timeout = Duration::from_millis(300);
    let interval = Duration::from_millis(100);
    let cluster = cluster_on(
        &pg,
        "[pinning]\nseconds = 0\n[routing]\nreplica_timeout = \"300ms\"\nreplica_retry = \"200ms\"\n\
         [consistency]\nmode = \"eventual\"\nmonitor_interval = \"100ms\"",
    );
    // the documented bound: the monitor's next probe, its timeout, a watchdog tick
    let bound = replica_timeout + interval.mul_f64(1.25) + Duration::from_millis(50);

    let stop = Arc::new(AtomicBool::new(false));
    let worst_ms = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (cluster, stop, worst_ms, failures) = (
                cluster.clone(),
                stop.clone(),
                worst_ms.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                let mut conn = cluster.get("default").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let rows: QueryResult<Vec<String>> =
                        items::table.select(items::name).load(&mut conn);
                    worst_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);

                    if rows.map(|r| r.len()) != Ok(1) {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800)); // every worker reads from its replica
    worst_ms.store(0, Ordering::Relaxed);
    let healthy_before = pg.statement_calls(Node::Replica(0), READ);
    pg.freeze_replica(1);
    std::thread::sleep(Duration::from_secs(3));
    let healthy_during = pg.statement_calls(Node::Replica(0), READ) - healthy_before;
    let worst_frozen = Duration::from_millis(worst_ms.load(Ordering::Relaxed));
    pg.thaw_replica(1);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no read failed");
    assert!(
        worst_frozen <= bound + MARGIN,
        "worst read during the freeze took {worst_frozen:?}; bound {bound:?}"
    );
    assert!(
        healthy_during > 100,
        "the healthy replica kept serving: {healthy_during} reads"
    );
}

#[test]
fn a_read_only_workload_never_waits_on_a_frozen_primary() {
    let pg = start(1);
    let cluster = cluster_on(
        &pg,
        "[pinning]\nseconds = 0\n[consistency]\nmode = \"eventual\"\nmonitor_interval = \"100ms\"",
    );
    assert_eq!(read(&cluster).unwrap().1, RouteReason::Replica);
    pg.freeze_node(Node::Primary);
    for _ in 0..20 {
        let started = Instant::now();
        let (rows, reason) = read(&cluster).unwrap();
        assert_eq!((rows, reason), (1, RouteReason::Replica));
        assert!(started.elapsed() < MARGIN, "{:?}", started.elapsed());
    }
    pg.thaw_node(Node::Primary);
}

#[test]
fn primary_timeout_cuts_a_call_on_a_frozen_primary_and_says_the_outcome_is_unknown() {
    let pg = start(1);
    let cluster = cluster_on(&pg, "[routing]\nprimary_timeout = \"500ms\"");
    let mut conn = cluster.get("default").unwrap();
    diesel::insert_into(items::table)
        .values(items::name.eq("before"))
        .execute(&mut conn)
        .unwrap();
    pg.freeze_node(Node::Primary);
    let started = Instant::now();
    let err = diesel::insert_into(items::table)
        .values(items::name.eq("during"))
        .execute(&mut conn)
        .expect_err("the primary is frozen");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500) + MARGIN, "took {took:?}");
    assert!(err.to_string().contains("outcome"), "{err}");
    pg.thaw_node(Node::Primary);
    // the connection is reopened, and works
    let n: i64 = items::table.count().get_result(&mut conn).unwrap();
    assert!(n >= 2);
}

#[test]
fn on_all_shards_within_reports_a_frozen_shard_as_that_shards_error() {
    let a = PgCluster::start(0);
    let b = PgCluster::start(0);
    for pg in [&a, &b] {
        pg.create_database(DB);
    }
    let cluster: Cluster<PgConnection> = Cluster::new(
        Settings::from_toml_str(&format!(
            "[shard_groups.users]\nbucketing = \"mod\"\n\
             [databases.users_0]\nurl = \"{}\"\nshard_group = \"users\"\nshard_id = 0\n\
             [databases.users_1]\nurl = \"{}\"\nshard_group = \"users\"\nshard_id = 1\n",
            a.primary_url(DB),
            b.primary_url(DB)
        ))
        .unwrap(),
    )
    .unwrap();
    let one = |conn: &mut diesel_sharding::PooledConnection<PgConnection>| {
        diesel::sql_query("SELECT 1").execute(conn)
    };
    // warm: each shard's pool holds an open connection
    for r in cluster.on_all_shards("users", one).unwrap() {
        r.result.unwrap();
    }
    b.freeze_node(Node::Primary);
    let started = Instant::now();
    let results = cluster
        .on_all_shards_within("users", Duration::from_millis(500), one)
        .unwrap();
    let took = started.elapsed();
    b.thaw_node(Node::Primary);
    assert!(took < Duration::from_millis(500) + MARGIN, "took {took:?}");
    assert!(results[0].result.is_ok(), "{:?}", results[0].result);
    assert!(
        matches!(results[1].result, Err(Error::ShardTimedOut { .. })),
        "{:?}",
        results[1].result
    );
}
