//! A soak under load with faults, about half a minute: six threads write (one statement in
//! ten) and read their own rows back at once, against a primary and two streaming replicas,
//! while the replicas are killed, restarted behind what they had replayed, frozen and paused.
//! The primary answers throughout, so: no stale read, no lost write, no failed read, and the
//! worst read during a replica freeze within the documented bound.
#![cfg(feature = "postgres")]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, Settings};
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "app";
const THREADS: i32 = 6;

mod schema {
    diesel::table! {
        rows (id) {
            id -> Int4,
            owner -> Int4,
        }
    }
}
use schema::rows;

#[derive(Default)]
struct Tally {
    writes: AtomicU64,
    reads: AtomicU64,
    stale: AtomicU64,
    failed_reads: AtomicU64,
    failed_writes: AtomicU64,
    /// Worst read latency while `freezing` was set, in ms.
    worst_frozen_ms: AtomicU64,
    freezing: AtomicBool,
}

#[test]
fn under_load_with_faults_no_read_is_stale_or_lost_or_failed_or_hung() {
    let pg = PgCluster::start(2);
    pg.create_database(DB);
    pg.execute(
        Node::Primary,
        DB,
        "CREATE TABLE rows (id serial PRIMARY KEY, owner int NOT NULL)",
    );
    pg.wait_all_caught_up();
    let replica_timeout = Duration::from_millis(300);
    let interval = Duration::from_millis(100);
    let cluster: Cluster<PgConnection> = Cluster::new(
        Settings::from_toml_str(&format!(
            "[routing]\nreplica_timeout = \"300ms\"\nreplica_retry = \"200ms\"\nconnect_timeout = \"2s\"\n\
             [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"100ms\"\n\
             [databases.default]\nurl = \"{}\"\npool_size = 12\n\
             [databases.r0]\nurl = \"{}\"\nprimary = \"default\"\n\
             [databases.r1]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(0, DB),
            pg.replica_url(1, DB)
        ))
        .unwrap(),
    )
    .unwrap();
    let bound = replica_timeout + interval.mul_f64(1.25) + Duration::from_millis(50);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..THREADS)
        .map(|owner| {
            let (cluster, stop, tally) = (cluster.clone(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut mine: i64 = 0;
                let mut step = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    step += 1;
                    let mut conn = cluster.get("default").unwrap();
                    if step % 10 == 0 {
                        match diesel::insert_into(rows::table)
                            .values(rows::owner.eq(owner))
                            .execute(&mut conn)
                        {
                            Ok(_) => {
                                mine += 1;
                                tally.writes.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                tally.failed_writes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let started = Instant::now();
                    let seen: QueryResult<i64> = rows::table
                        .filter(rows::owner.eq(owner))
                        .count()
                        .get_result(&mut conn);
                    let took = started.elapsed();
                    tally.reads.fetch_add(1, Ordering::Relaxed);
                    match seen {
                        Ok(n) if n < mine => {
                            tally.stale.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            tally.failed_reads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if tally.freezing.load(Ordering::Relaxed) {
                        tally
                            .worst_frozen_ms
                            .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                mine
            })
        })
        .collect();

    let pause = |d: u64| std::thread::sleep(Duration::from_millis(d));
    pause(2000);
    // a replica crashes and comes back
    pg.kill_replica(1);
    pause(2000);
    pg.start_replica(1);
    pause(2000);
    // a replica freezes
    tally.freezing.store(true, Ordering::Relaxed);
    pg.freeze_replica(0);
    pause(3000);
    pg.thaw_replica(0);
    tally.freezing.store(false, Ordering::Relaxed);
    pause(2000);
    // a replica stops replaying, then catches up
    pg.pause_replay(1);
    pause(2500);
    pg.resume_replay(1);
    pause(2000);
    // a replica restarts behind what it had replayed: every commit younger than an hour held
    pg.set_apply_delay(0, Duration::from_secs(3600));
    pg.kill_replica(0);
    pg.start_replica_accepting_connections(0);
    pause(3000);
    pg.set_apply_delay(0, Duration::ZERO);
    pause(3000);

    stop.store(true, Ordering::Relaxed);
    let written: i64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let on_primary = pg.query_i64(Node::Primary, DB, "SELECT count(*) FROM rows");
    let reads = tally.reads.load(Ordering::Relaxed);
    let worst = Duration::from_millis(tally.worst_frozen_ms.load(Ordering::Relaxed));
    eprintln!(
        "soak: {reads} reads, {written} writes, worst read during the freeze {worst:?} (bound {bound:?})"
    );
    assert!(reads > 1000, "the load ran: {reads} reads");
    assert_eq!(tally.stale.load(Ordering::Relaxed), 0, "stale reads");
    assert_eq!(
        tally.failed_reads.load(Ordering::Relaxed),
        0,
        "failed reads"
    );
    assert_eq!(
        tally.failed_writes.load(Ordering::Relaxed),
        0,
        "failed writes"
    );
    assert_eq!(on_primary, written, "lost writes");
    assert!(
        worst <= bound + Duration::from_millis(1000),
        "worst read during the freeze {worst:?}, bound {bound:?}"
    );
}
