//! Nothing leaks when a cluster is dropped: every thread it started (r2d2's helpers, the
//! replica monitors) has ended when `drop` returns, or within about a second, so that a
//! process can build and drop clusters all day, and exit right after dropping one. Counted
//! in `/proc/self/task`; this binary holds this one test, so nothing else starts threads.
#![cfg(all(feature = "postgres", feature = "sqlite"))]

mod support;

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;
use diesel::RunQueryDsl;
use diesel_sharding::{Cluster, Settings};
use support::pg_cluster::PgCluster;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task lists this process's threads")
        .count()
}

/// Waits up to `bound` for the thread count to fall to `target`; returns the last count.
fn settle(target: usize, bound: Duration) -> usize {
    let until = Instant::now() + bound;
    loop {
        let now = threads();
        if now <= target || Instant::now() > until {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn dropped_clusters_leave_no_threads_behind() {
    // PostgreSQL first: its harness threads are up before the baseline is taken
    let pg = PgCluster::start(1);
    pg.create_database("app");
    let dir = tempfile::tempdir().unwrap();
    let baseline = threads();

    for i in 0..100 {
        let path = dir.path().join(format!("db{i}.sqlite"));
        let settings = Settings::from_toml_str(&format!(
            "[databases.default]\nurl = \"{p}\"\n[databases.r]\nurl = \"{p}\"\nprimary = \"default\"\n",
            p = path.display()
        ))
        .unwrap();
        let cluster = Cluster::<SqliteConnection>::new(settings).unwrap();
        let mut conn = cluster.get("default").unwrap();
        diesel::sql_query("CREATE TABLE t (x INTEGER)")
            .execute(&mut conn)
            .unwrap();
        drop(conn);
        drop(cluster);
    }
    let after_sqlite = settle(baseline, Duration::from_secs(1));
    assert!(
        after_sqlite <= baseline,
        "100 SQLite clusters left {} threads",
        after_sqlite - baseline
    );

    for _ in 0..20 {
        let settings = Settings::from_toml_str(&format!(
            "[consistency]\nmonitor_interval = \"20ms\"\n\
             [databases.default]\nurl = \"{}\"\n[databases.r]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url("app"),
            pg.replica_url(0, "app")
        ))
        .unwrap();
        let cluster = Cluster::<PgConnection>::new(settings).unwrap();
        let mut conn = cluster.get("default").unwrap();
        diesel::sql_query("SELECT 1").execute(&mut conn).unwrap();
        drop(conn);
        std::thread::sleep(Duration::from_millis(30)); // monitors mid-probe
        let dropping = Instant::now();
        drop(cluster);
        assert!(
            dropping.elapsed() < Duration::from_secs(3),
            "drop is bounded"
        );
        // the monitors are joined by drop itself
        let now = settle(baseline, Duration::from_millis(300));
        assert!(
            now <= baseline + 3,
            "{} threads left after a drop",
            now - baseline
        );
    }
    let after_pg = settle(baseline, Duration::from_secs(1));
    assert!(
        after_pg <= baseline,
        "20 PostgreSQL clusters left {} threads",
        after_pg - baseline
    );
}
