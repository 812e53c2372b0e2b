//! Keyed sticking on a real PostgreSQL primary and a replica held back, with a real Redis the
//! test starts (feature `redis`): two clusters (two processes, as far as the router knows)
//! share the store; one sticks a key after a write, the other reads under the key and sees
//! the write. Where reads ran is checked in `pg_stat_statements`; the store's entries with
//! `redis-cli`.
#![cfg(all(feature = "redis", feature = "postgres"))]

mod support;

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::stick::{MemoryStore, RedisStore};
use diesel_sharding::{Cluster, ConsistencyToken, Error, RouteReason, Settings};
use support::pg_cluster::{Node, PgCluster};
use support::redis_server::RedisServer;

const DB: &str = "app";
const COUNT: &str = "SELECT COUNT(*) FROM \"users\" WHERE (\"users\".\"name\" = $1)";
const KEY: &str = "diesel_sharding:stick:user:42";

mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            name -> Text,
        }
    }
}
use schema::users;

fn start_pg() -> PgCluster {
    let pg = PgCluster::start(1);
    pg.create_database(DB);
    pg.execute(
        Node::Primary,
        DB,
        "CREATE TABLE users (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL)",
    );
    pg.wait_all_caught_up();
    pg
}

/// A cluster on `pg` (another "process" each time).
fn cluster(pg: &PgCluster) -> Cluster<PgConnection> {
    cluster_with(pg, "")
}

/// [`cluster`] with more `[consistency]` keys.
fn cluster_with(pg: &PgCluster, consistency: &str) -> Cluster<PgConnection> {
    Cluster::new(
        Settings::from_toml_str(&format!(
            "[pinning]\nseconds = 0\n\
             [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"\n{consistency}\n\
             [databases.default]\nurl = \"{}\"\n\
             [databases.default_replica]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(0, DB),
        ))
        .unwrap(),
    )
    .unwrap()
}

fn add(cluster: &Cluster<PgConnection>, name: &str) {
    let mut conn = cluster.get("default").unwrap();
    diesel::insert_into(users::table)
        .values(users::name.eq(name))
        .execute(&mut conn)
        .unwrap();
}

fn count(cluster: &Cluster<PgConnection>, name: &str) -> (i64, RouteReason) {
    let mut conn = cluster.get("default").unwrap();
    let n = users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(&mut conn)
        .unwrap();
    (n, conn.last_route().unwrap().reason)
}

#[test]
fn a_key_stuck_by_one_process_makes_another_read_the_write_until_the_replica_has_it() {
    let pg = start_pg();
    let redis = RedisServer::start();
    let (writer, reader) = (cluster(&pg), cluster(&pg));
    for c in [&writer, &reader] {
        c.set_stick_store(
            RedisStore::open(&redis.url()).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
    }
    pg.pause_replay(0);
    // a request of the writer: a write, then the key is stuck
    writer.with_token(&ConsistencyToken::default(), || {
        add(&writer, "ada");
        writer.stick("user:42").unwrap();
    });
    assert_eq!(redis.cli(&["SCARD", KEY]), "1", "one entry in Redis");
    let ttl: i64 = redis.cli(&["TTL", KEY]).parse().unwrap();
    assert!((1..=60).contains(&ttl), "expires: {ttl}");
    pg.reset_all_statement_stats();
    // the reader without the key: the stale replica (the control)
    assert_eq!(count(&reader, "ada"), (0, RouteReason::Replica));
    // under the key: the write is seen, on the primary
    let under_key = reader
        .with_key("user:42", || count(&reader, "ada"))
        .unwrap();
    assert_eq!(under_key, (1, RouteReason::Behind));
    assert_eq!(pg.statement_calls(Node::Primary, COUNT), 1);
    assert_eq!(pg.statement_calls(Node::Replica(0), COUNT), 1);
    // another key is not held back
    let other = reader.with_key("user:7", || count(&reader, "ada")).unwrap();
    assert_eq!(other, (0, RouteReason::Replica));
    // once the replica has the write: the replica serves the key, and the entry goes
    pg.resume_replay(0);
    pg.wait_all_caught_up();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = reader
        .with_key("user:42", || count(&reader, "ada"))
        .unwrap();
    while got.1 != RouteReason::Replica && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        got = reader
            .with_key("user:42", || count(&reader, "ada"))
            .unwrap();
    }
    assert_eq!(got, (1, RouteReason::Replica));
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.cli(&["SCARD", KEY]) != "0" && Instant::now() < deadline {
        reader.with_key("user:42", || ()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        redis.cli(&["SCARD", KEY]),
        "0",
        "the entry every replica has is gone"
    );
}

#[test]
fn with_the_store_down_or_frozen_reads_under_a_key_go_to_the_primary_and_stick_says_so() {
    let pg = start_pg();
    let mut redis = RedisServer::start();
    let c = cluster(&pg);
    c.set_stick_store(
        RedisStore::open(&redis.url())
            .unwrap()
            .timeout(Duration::from_millis(300)),
        Duration::from_secs(60),
    )
    .unwrap();
    add(&c, "seed");
    pg.wait_all_caught_up();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        c.with_key("k", || count(&c, "seed")).unwrap().1,
        RouteReason::Replica
    );
    // frozen: every call is cut at the store's timeout; the read goes to the primary
    redis.freeze();
    let started = Instant::now();
    let got = c.with_key("k", || count(&c, "seed")).unwrap();
    let took = started.elapsed();
    redis.thaw();
    assert_eq!(got, (1, RouteReason::Pinned));
    assert!(took < Duration::from_millis(300 + 1500), "{took:?}");
    // dead: the same, and a stick is an error that names the key
    redis.kill();
    assert_eq!(
        c.with_key("k", || count(&c, "seed")).unwrap(),
        (1, RouteReason::Pinned)
    );
    let err = c
        .with_token(&ConsistencyToken::default(), || {
            add(&c, "more");
            c.stick("k")
        })
        .expect_err("the store is dead");
    assert!(matches!(err, Error::StickStore { .. }), "{err}");
    assert!(err.to_string().contains("`k`"), "{err}");
}

#[test]
fn entries_expire_after_the_ttl_and_the_store_is_set_once() {
    let pg = start_pg();
    let redis = RedisServer::start();
    let c = cluster(&pg);
    assert!(matches!(c.stick("k"), Err(Error::NoStickStore)));
    assert!(matches!(c.with_key("k", || ()), Err(Error::NoStickStore)));
    c.set_stick_store(
        RedisStore::open(&redis.url()).unwrap(),
        Duration::from_millis(400),
    )
    .unwrap();
    assert!(matches!(
        c.set_stick_store(MemoryStore::new(), Duration::from_secs(1)),
        Err(Error::StickStoreSet)
    ));
    pg.pause_replay(0);
    c.with_token(&ConsistencyToken::default(), || {
        add(&c, "ada");
        c.stick("user:42").unwrap();
    });
    assert_eq!(redis.cli(&["SCARD", KEY]), "1");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(redis.cli(&["EXISTS", KEY]), "0", "expired after the TTL");
    pg.resume_replay(0);
    // a bad URL is an error that shows no password
    let err = RedisStore::open("redis://:Hunter2Zq@127.0.0.1:notaport/").unwrap_err();
    assert!(!err.to_string().contains("Hunter2Zq"), "{err}");
}

#[cfg(feature = "async")]
#[test]
fn async_tasks_stick_and_read_under_a_key() {
    let pg = start_pg();
    let store = MemoryStore::new();
    let (writer, reader) = (cluster(&pg), cluster(&pg));
    writer
        .set_stick_store(store.clone(), Duration::from_secs(60))
        .unwrap();
    reader
        .set_stick_store(store, Duration::from_secs(60))
        .unwrap();
    pg.pause_replay(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (under_key, without) = rt.block_on(async {
        let w = writer.clone();
        tokio::spawn(diesel_sharding::task::scope(async move {
            diesel_sharding::task::spawn_blocking({
                let w = w.clone();
                move || add(&w, "ada")
            })
            .await;
            w.stick_async("tenant:9").await.unwrap();
        }))
        .await
        .unwrap();
        let r = reader.clone();
        let under_key = reader
            .with_key_async("tenant:9", async {
                diesel_sharding::task::spawn_blocking(move || count(&r, "ada")).await
            })
            .await
            .unwrap();
        let r = reader.clone();
        let without = diesel_sharding::task::scope(async {
            diesel_sharding::task::spawn_blocking(move || count(&r, "ada")).await
        })
        .await;
        (under_key, without)
    });
    pg.resume_replay(0);
    assert_eq!(under_key, (1, RouteReason::Behind));
    assert_eq!(without, (0, RouteReason::Replica));
}

#[test]
fn with_a_token_secret_the_stuck_entries_still_hold_reads_back() {
    let pg = start_pg();
    let store = MemoryStore::new();
    let secret = "token_secret = \"a shared secret of 16+ bytes\"";
    let (writer, reader) = (cluster_with(&pg, secret), cluster_with(&pg, secret));
    writer
        .set_stick_store(store.clone(), Duration::from_secs(60))
        .unwrap();
    reader
        .set_stick_store(store, Duration::from_secs(60))
        .unwrap();
    pg.pause_replay(0);
    writer.with_token(&ConsistencyToken::default(), || {
        add(&writer, "ada");
        add(&writer, "bob");
        writer.stick("user:42").unwrap();
    });
    // a second entry under the key: the entries are merged, and the merge must still count
    writer.with_token(&ConsistencyToken::default(), || {
        add(&writer, "cy");
        writer.stick("user:42").unwrap();
    });
    let under_key = reader.with_key("user:42", || count(&reader, "cy")).unwrap();
    pg.resume_replay(0);
    assert_eq!(under_key, (1, RouteReason::Behind));
}
