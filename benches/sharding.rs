//! Sharding building blocks, without a database.
//!
//! * `ids/next_id_one_thread`: one generator on one thread, back to back. The layout allows
//!   1024 ids per millisecond and shard, and the generator waits for the clock rather than
//!   run ahead of it, so this measures that ceiling (about 977 ns/id) once the cost of an id
//!   is below it. Goal: at least 1 million ids per second.
//! * `ids/next_id_unthrottled`: the same calls spread over 256 generators (shard ids), so no
//!   generator reaches its ceiling: the cost of one id (clock read and compare-and-swap).
//! * `bucketing/jump/{1,64,4096}`, `bucketing/mod/{1,64,4096}`: the shard of one key for
//!   1, 64 and 4096 shards. `mod` is one division whatever the count; `jump` takes
//!   O(ln shards) steps.
//!
//! * `resolution/{mod,jump}/{1,64,4096}`: `cluster.shard_for::<Post>(&user_id)` on a cluster
//!   of 1, 64 and 4096 shards (SQLite files, never opened): the group lookup, the bucketing
//!   and the `Shard` value. It should not grow with the number of shards beyond `jump`'s
//!   O(ln shards).
//!
//! Run: `cargo bench --bench sharding`.

#![allow(missing_docs)] // criterion_group! generates undocumented public functions

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use diesel::sqlite::SqliteConnection;
use diesel_sharding::sharding::ids::IdGenerator;
use diesel_sharding::sharding::{jump_hash, mod_bucket};
use diesel_sharding::{Cluster, Settings, ShardedModel};

/// 2016-01-01T00:00:00Z.
fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_451_606_400_000)
}

#[derive(ShardedModel)]
#[sharding(group = "users", key = user_id)]
struct Post {
    user_id: i64,
}

/// A cluster of `shards` SQLite shards with `bucketing`; no file is opened.
fn cluster(shards: u32, bucketing: &str) -> Cluster<SqliteConnection> {
    let mut toml = format!("[shard_groups.users]\nbucketing = \"{bucketing}\"\n");
    for id in 0..shards {
        toml += &format!(
            "[databases.users_{id}]\nurl = \"/nonexistent/users_{id}.sqlite\"\nshard_group = \"users\"\nshard_id = {id}\n"
        );
    }
    Cluster::new(Settings::from_toml_str(&toml).unwrap()).unwrap()
}

fn resolution(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolution");
    for bucketing in ["mod", "jump"] {
        for shards in [1u32, 64, 4096] {
            let cluster = cluster(shards, bucketing);
            let mut key = 0i64;
            group.bench_with_input(BenchmarkId::new(bucketing, shards), &shards, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9E37_79B9);
                    cluster.shard_for::<Post>(black_box(&key)).unwrap()
                })
            });
        }
    }
    group.finish();
}

fn ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("ids");
    let generator = IdGenerator::new(1, epoch()).unwrap();
    group.bench_function("next_id_one_thread", |b| b.iter(|| generator.next_id()));

    let generators: Vec<IdGenerator> = (0..256)
        .map(|shard| IdGenerator::new(shard, epoch()).unwrap())
        .collect();
    let mut i = 0usize;
    group.bench_function("next_id_unthrottled", |b| {
        b.iter(|| {
            i = (i + 1) & 255;
            generators[i].next_id()
        })
    });
    group.finish();
}

fn bucketing(c: &mut Criterion) {
    let mut group = c.benchmark_group("bucketing");
    for shards in [1u32, 64, 4096] {
        // a new key each time: a Weyl sequence over the 64-bit keys
        let mut key = 0u64;
        group.bench_with_input(BenchmarkId::new("jump", shards), &shards, |b, &n| {
            b.iter(|| {
                key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                jump_hash(black_box(key), black_box(n))
            })
        });
        let mut key = 0u64;
        group.bench_with_input(BenchmarkId::new("mod", shards), &shards, |b, &n| {
            b.iter(|| {
                key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                mod_bucket(black_box(key), black_box(n))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = ids, bucketing, resolution
}
criterion_main!(benches);
