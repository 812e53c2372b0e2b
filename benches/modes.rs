//! Consistency at full speed: every mode on the same work, in one run.
//!
//! A real PostgreSQL primary and one streaming replica. Worker threads (as a job runner's)
//! each hold a pooled connection and do, outside any scope, single-row updates of rows they
//! own and point reads of any row. Two workloads:
//!
//! * **lagging**: 10 % updates, the replica applies with a 200 ms delay
//!   (`recovery_min_apply_delay`): most reads of a position mode cannot be served by it;
//! * **read-mostly**: 1 % updates, the replica keeps up.
//!
//! Statements are counted on the servers (`pg_stat_statements`): table reads on the primary
//! and on the replica, write-position queries on the primary, replay-position queries on the
//! replica (the monitor's and the router's). A read is **stale** when it returns an older
//! value than its mode promises: the thread's own last write for `pin`, `read_your_writes`
//! and `causal`, and for `causal` also every write committed (by any thread) before the read
//! started. Rounds alternate the modes, so each sees the same machine conditions.
//!
//! Run pinned to one CPU (servers and client), as the README's benchmarks are:
//! `taskset -c 1 cargo bench --bench modes`. Environment: `BENCH_SECONDS` (per mode and
//! round, default 3), `BENCH_ROUNDS` (default 2), `BENCH_THREADS` (default 4),
//! `BENCH_DELAY_MS` (default 200), `BENCH_ONLY` (`lagging` or `read-mostly`: one workload),
//! `BENCH_REPLICA_CPU` (move the replica's server to that CPU: a machine of its own, as in
//! production; the default keeps everything on the bench's CPU), `BENCH_EXTRA_MODE` (one more, such as `read_your_writes+wait:2ms`, with that
//! `replica_wait`, or `eventual+primary:0.4`: `eventual` with 40 % of the
//! reads sent to the primary, which shows what mixing servers costs on the machine itself).

#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, Settings};
use rand::Rng;

use diesel_sharding_testing::postgres as pg_cluster;
use pg_cluster::{Node, PgCluster};

mod schema {
    diesel::table! {
        kv (id) {
            id -> Int8,
            val -> Int8,
        }
    }
}
use schema::kv;

const ROWS: i64 = 10_000;
const READ_QUERY: &str = "SELECT %\"val\" FROM \"kv\" WHERE%\"id\" = $1%";
const UPDATE_QUERY: &str = "UPDATE \"kv\" SET%";
/// The write-position query (the monitor's probe has `pg_is_in_recovery()` in its place).
const POSITION_QUERY: &str = "%pg_current_wal_insert_lsn%current_setting($3), $4";
const REPLAY_QUERY: &str = "%pg_last_wal_replay_lsn%";

const MODES: &[&str] = &["eventual", "pin", "read_your_writes", "causal"];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One mode's figures in one round.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    ops_per_s: f64,
    reads_primary: i64,
    reads_replica: i64,
    updates: i64,
    positions: i64,
    replays: i64,
    ops: u64,
    stale: u64,
}

fn run(pg: &PgCluster, mode: &str, seconds: u64, threads: u64, write_share: f64) -> Figures {
    // `eventual+primary:0.4`: eventual, with that share of reads sent to the primary (what
    // mixing servers costs on this machine, without any position logic)
    // `read_your_writes+wait:2ms`: the mode with that `replica_wait`
    let (mode, wait) = match mode.split_once("+wait:") {
        Some((m, wait)) => (m, format!("replica_wait = \"{wait}\"\n")),
        None => (mode, String::new()),
    };
    let (mode, mix) = match mode.split_once("+primary:") {
        Some((m, share)) => (m, share.parse::<f64>().unwrap_or(0.0)),
        None => (mode, 0.0),
    };
    let settings = Settings::from_toml_str(&format!(
        "[consistency]\nmode = \"{mode}\"\n{wait}\
         [databases.default]\nurl = \"{}\"\npool_size = {threads}\n\
         [databases.r1]\nurl = \"{}\"\nprimary = \"default\"\n",
        pg.primary_url("bench"),
        pg.replica_url(0, "bench"),
    ))
    .unwrap();
    let cluster = Cluster::<PgConnection>::new(settings).unwrap();
    // what has been committed per row (by its owner thread), for the stale checks
    let committed: Arc<Vec<AtomicI64>> = Arc::new({
        let mut conn = pg.connect(Node::Primary, "bench");
        let mut values: Vec<AtomicI64> = (0..=ROWS).map(|_| AtomicI64::new(0)).collect();
        for (id, val) in kv::table
            .select((kv::id, kv::val))
            .load::<(i64, i64)>(&mut conn)
            .unwrap()
        {
            values[id as usize] = AtomicI64::new(val);
        }
        values
    });
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let stale = Arc::new(AtomicU64::new(0));
    let own_promised = mode != "eventual";
    let all_promised = mode == "causal";
    // warm the pool and the monitor, then count from a clean slate
    drop(cluster.get("default").unwrap());
    std::thread::sleep(Duration::from_millis(300));
    pg.reset_all_statement_stats();
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (cluster, committed, stop, ops, stale) = (
                cluster.clone(),
                committed.clone(),
                stop.clone(),
                ops.clone(),
                stale.clone(),
            );
            std::thread::spawn(move || {
                let mut rng = rand::thread_rng();
                let mut conn = cluster.get("default").unwrap();
                // the rows this thread writes: (id - 1) % threads == t
                let (n, t) = (threads as i64, t as i64);
                let own = |id: i64| (id - 1) % n == t;
                while !stop.load(Ordering::Relaxed) {
                    if rng.gen::<f64>() < write_share {
                        let id = rng.gen_range(0..ROWS / n) * n + t + 1;
                        let val = committed[id as usize].load(Ordering::Relaxed) + 1;
                        diesel::update(kv::table.find(id))
                            .set(kv::val.eq(val))
                            .execute(&mut conn)
                            .unwrap();
                        committed[id as usize].store(val, Ordering::Relaxed);
                    } else {
                        let id = rng.gen_range(1..=ROWS);
                        let promised = (own(id) && own_promised) || all_promised;
                        let expect = committed[id as usize].load(Ordering::Relaxed);
                        let read = |conn: &mut diesel_sharding::PooledConnection<PgConnection>| {
                            kv::table
                                .find(id)
                                .select(kv::val)
                                .first::<i64>(conn)
                                .unwrap()
                        };
                        let got = if rng.gen::<f64>() < mix {
                            diesel_sharding::pin::use_primary(|| read(&mut conn))
                        } else {
                            read(&mut conn)
                        };
                        if promised && got < expect {
                            stale.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = ops.load(Ordering::Relaxed);
    let figures = Figures {
        ops_per_s: ops as f64 / elapsed,
        reads_primary: pg.statement_calls(Node::Primary, READ_QUERY),
        reads_replica: pg.statement_calls(Node::Replica(0), READ_QUERY),
        updates: pg.statement_calls(Node::Primary, UPDATE_QUERY),
        positions: pg.statement_calls(Node::Primary, POSITION_QUERY),
        replays: pg.statement_calls(Node::Replica(0), REPLAY_QUERY),
        ops,
        stale: stale.load(Ordering::Relaxed),
    };
    drop(cluster);
    pg.wait_all_caught_up();
    figures
}

fn table(title: &str, results: &[(&str, Vec<Figures>)]) {
    println!("\n{title}\n");
    println!("| mode | ops/s | table reads on primary / replica | position queries on primary | replay-position queries on the replica | position queries beyond one per write, per op | stale reads |");
    println!("|---|---|---|---|---|---|---|");
    for (mode, rounds) in results {
        let lo = rounds.iter().map(|f| f.ops_per_s).fold(f64::MAX, f64::min);
        let hi = rounds.iter().map(|f| f.ops_per_s).fold(0.0, f64::max);
        let sum = |g: fn(&Figures) -> i64| rounds.iter().map(g).sum::<i64>();
        let ops: u64 = rounds.iter().map(|f| f.ops).sum();
        // the monitor's own probes (one a second) are in the replay count
        let beyond = (sum(|f| f.positions) - sum(|f| f.updates)).max(0) + sum(|f| f.replays);
        println!(
            "| {mode} | {lo:.0}-{hi:.0} | {} / {} | {} | {} | {:.3} | {} |",
            sum(|f| f.reads_primary),
            sum(|f| f.reads_replica),
            sum(|f| f.positions),
            sum(|f| f.replays),
            beyond as f64 / ops.max(1) as f64,
            rounds.iter().map(|f| f.stale).sum::<u64>(),
        );
    }
    let best_simple = results
        .iter()
        .filter(|(m, _)| *m == "pin" || *m == "eventual")
        .map(|(_, r)| r.iter().map(|f| f.ops_per_s).sum::<f64>() / r.len() as f64)
        .fold(0.0, f64::max);
    for (mode, rounds) in results {
        if *mode == "read_your_writes" || *mode == "causal" {
            let mean = rounds.iter().map(|f| f.ops_per_s).sum::<f64>() / rounds.len() as f64;
            println!(
                "\n{mode}: {:.2}x the better of pin and eventual",
                mean / best_simple
            );
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list
    }
    let seconds = env("BENCH_SECONDS", 3);
    let rounds = env("BENCH_ROUNDS", 2);
    let threads = env("BENCH_THREADS", 4);
    let delay = Duration::from_millis(env("BENCH_DELAY_MS", 200));
    let pg = PgCluster::start(1);
    pg.create_database("bench");
    pg.execute(
        Node::Primary,
        "bench",
        &format!(
            "CREATE TABLE kv (id BIGINT PRIMARY KEY, val BIGINT NOT NULL);
             INSERT INTO kv SELECT i, 0 FROM generate_series(1, {ROWS}) i;"
        ),
    );
    pg.wait_all_caught_up();
    if let Ok(cpu) = std::env::var("BENCH_REPLICA_CPU") {
        // the replica on a CPU of its own, as on a machine of its own: its postmaster and
        // every process it has (new backends inherit the affinity)
        for pid in pg.pids(Node::Replica(0)) {
            let ok = std::process::Command::new("taskset")
                .args(["-a", "-p", "-c", &cpu, &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "taskset could not move replica process {pid} to CPU {cpu}"
            );
        }
        println!("the replica runs on CPU {cpu}");
    }
    for (title, write_share, delay) in [
        (
            format!(
                "lagging: {threads} threads, 10 % updates, replica apply delay {} ms",
                delay.as_millis()
            ),
            0.10,
            delay,
        ),
        (
            format!("read-mostly: {threads} threads, 1 % updates, the replica keeps up"),
            0.01,
            Duration::ZERO,
        ),
    ] {
        if let Ok(only) = std::env::var("BENCH_ONLY") {
            if !title.starts_with(only.as_str()) {
                continue;
            }
        }
        pg.set_apply_delay(0, delay);
        let extra = std::env::var("BENCH_EXTRA_MODE").ok();
        let mut results: Vec<(&str, Vec<Figures>)> = MODES
            .iter()
            .copied()
            .chain(extra.as_deref())
            .map(|m| (m, Vec::new()))
            .collect();
        for _ in 0..rounds {
            for (mode, figures) in results.iter_mut() {
                let f = run(&pg, mode, seconds, threads, write_share);
                eprintln!("{title}: {mode}: {f:?}");
                figures.push(f);
            }
        }
        table(&title, &results);
    }
}
