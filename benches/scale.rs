//! A cluster of 4,096 shards, each a PostgreSQL primary with one replica: what building it
//! costs, how many threads it runs, and how often they wake up while idle. The servers are
//! closed loopback ports: `Cluster::new` must contact none, and the monitor only those of the
//! shards the process uses.
//!
//! Run: `cargo bench --bench scale`. The README's figures come from this.

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel_sharding::{Cluster, Settings};

const SHARDS: usize = 4096;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Voluntary context switches of every thread of the process: how often they slept and woke.
fn wakeups() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

fn idle_wakeups_per_second() -> f64 {
    let before = wakeups();
    std::thread::sleep(Duration::from_secs(2));
    // the sampling thread itself woke once
    (wakeups().saturating_sub(before + 1)) as f64 / 2.0
}

fn main() {
    let mut toml = String::from("[shard_groups.users]\nbucketing = \"mod\"\n");
    for id in 0..SHARDS {
        toml += &format!(
            "[databases.users_{id}]\nurl = \"postgres://app@127.0.0.1:1/s{id}\"\nshard_group = \"users\"\nshard_id = {id}\n\
             [databases.users_{id}_r]\nurl = \"postgres://app@127.0.0.1:1/s{id}\"\nprimary = \"users_{id}\"\n"
        );
    }
    let base_threads = threads();
    let started = Instant::now();
    let settings = Settings::from_toml_str(&toml).unwrap();
    let parsed = started.elapsed();
    let cluster = Cluster::<PgConnection>::new(settings).unwrap();
    let built = started.elapsed();
    let after_new = threads() - base_threads;
    let idle_new = idle_wakeups_per_second();

    // the process uses three shards (their servers refuse: the probes fail fast)
    for id in [0, 1, 2] {
        drop(cluster.get(&format!("users_{id}")).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    let after_use = threads() - base_threads;
    let idle_use = idle_wakeups_per_second();

    let dropping = Instant::now();
    drop(cluster);
    let dropped = dropping.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after_drop = threads().saturating_sub(base_threads);

    println!("{SHARDS} shards with one replica each (8,192 servers):");
    println!("  parse settings            {parsed:?}");
    println!("  Cluster::new (incl parse) {built:?}, servers contacted: none");
    println!("  threads after new         {after_new}");
    println!("  idle wake-ups after new   {idle_new:.1}/s");
    println!("  threads after using 3     {after_use}");
    println!("  idle wake-ups, 3 in use   {idle_use:.1}/s (6 servers probed every 1 s, failing)");
    println!("  drop                      {dropped:?}, threads left {after_drop}");
}
