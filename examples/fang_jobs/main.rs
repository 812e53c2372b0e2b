//! Background jobs that always find what their enqueuer wrote, on a real job queue: fang
//! (PostgreSQL-backed), with a replica that applies every change late.
//!
//! ```sh
//! cargo run --example fang_jobs
//! ```
//!
//! It starts a PostgreSQL primary and a streaming replica of its own in a temporary
//! directory (the PostgreSQL server binaries must be installed), makes the replica apply
//! every change 1.5 s late, and starts two fang workers. Four requests each sign a user up
//! and enqueue a welcome job whose payload carries the request's consistency token: two jobs
//! `Sticky` (they run at once, reading the primary while no replica has the user), two
//! `Delayed` (they wait for a replica, and are retried by fang until one has the user). Each
//! job logs whether it found its user, and where it read.

mod jobs;

use std::error::Error;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel_sharding::{Cluster, Settings};

use diesel_sharding_testing::postgres as pg_cluster;

fn main() -> Result<(), Box<dyn Error>> {
    println!("starting a PostgreSQL primary and streaming replica");
    let pg = pg_cluster::PgCluster::start(1);
    pg.create_database("jobs");
    pg.execute(pg_cluster::Node::Primary, "jobs", jobs::SCHEMA);
    pg.wait_all_caught_up();
    pg.set_apply_delay(0, Duration::from_millis(1500));
    let cluster: Cluster<PgConnection> = Cluster::new(Settings::from_toml_str(&format!(
        "[pinning]\nseconds = 0\n\
         [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"100ms\"\n\
         [databases.default]\nurl = \"{}\"\n\
         [databases.default_replica]\nurl = \"{}\"\nprimary = \"default\"\n",
        pg.primary_url("jobs"),
        pg.replica_url(0, "jobs"),
    ))?)?;
    jobs::CLUSTER
        .set(cluster.clone())
        .map_err(|_| "the cluster is set once")?;
    let queue = jobs::start_workers(&pg.primary_url("jobs"));
    for (user, policy) in [
        ("ada", jobs::Policy::Sticky),
        ("grace", jobs::Policy::Delayed),
        ("edsger", jobs::Policy::Sticky),
        ("barbara", jobs::Policy::Delayed),
    ] {
        jobs::sign_up(&cluster, &queue, user, policy);
        println!("signed up {user:<8} and enqueued a {policy:?} welcome job");
    }
    let started = Instant::now();
    let mut log = jobs::log(&cluster);
    while log.len() < 4 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        log = jobs::log(&cluster);
    }
    for (user, found, server) in &log {
        println!("job for {user:<8} found {found} user(s), reading on {server}");
    }
    if log.len() < 4 || log.iter().any(|(_, found, _)| *found != 1) {
        return Err("a job did not find its user".into());
    }
    Ok(())
}
