//! Routing overhead, side by side with plain Diesel in one run.
//!
//! * `classify/*`: the cost of deciding where a statement goes: a cached decision (query types
//!   with a static query id), and render + lex for queries without one.
//! * `sqlite/*`, `postgres/*`: a point select and a one-row insert on a held pooled connection,
//!   through the routed pool and through `diesel::r2d2` with a plain connection, against the
//!   same database. For PostgreSQL the bench starts its own server (as the tests do); the
//!   routed pool's replica is that same server, so the difference is the router alone.
//!
//! * `mariadb/*` (with feature `mysql`): the same against a MariaDB server the bench starts,
//!   routed `MysqlConnection` against plain `MysqlConnection` through `diesel::r2d2`.
//!
//! * `postgres_async*`, `mariadb_async*` (features `async`, `bb8`; `mysql` for MariaDB): a
//!   routed bb8 pool of async connections against diesel-async's bb8 pool of
//!   `AsyncPgConnection` (`AsyncMysqlConnection`), both without a ping at checkout,
//!   a checkout and one statement per call, each driven to completion on a current-thread
//!   runtime of its side.
//!
//! Run: `cargo bench --features bench-internals --bench routing` (add `mysql` for MariaDB,
//! `async,bb8` for diesel-async).
//! The README's table comes from this.

#![allow(missing_docs)] // criterion_group! generates undocumented public functions

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sqlite::SqliteConnection;
use diesel_sharding::__bench::CachedClassifier;
use diesel_sharding::{pin, Cluster, Settings};

use diesel_sharding_testing::postgres as pg_cluster;

#[cfg(feature = "mysql")]
use diesel_sharding_testing::mariadb as mariadb_cluster;

mod schema {
    diesel::table! {
        items (id) {
            id -> BigInt,
            name -> Text,
            qty -> Integer,
        }
    }
}
use schema::items;

const ROWS: i64 = 1000;

fn classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    let static_query = items::table
        .filter(items::id.eq(42))
        .filter(items::qty.gt(1))
        .select((items::id, items::name))
        .order(items::name)
        .limit(10);
    let mut cached = CachedClassifier::default();
    g.bench_function("cached_static_query_id_pg", |b| {
        b.iter(|| cached.kind_of::<PgConnection, _>(std::hint::black_box(&static_query)))
    });
    let dynamic_query = items::table
        .filter(items::id.eq_any(vec![1i64, 2, 3]))
        .filter(items::qty.gt(1))
        .select((items::id, items::name))
        .order(items::name)
        .limit(10)
        .offset(20);
    let mut uncached = CachedClassifier::default();
    g.bench_function("uncached_render_and_lex_pg", |b| {
        b.iter(|| uncached.kind_of::<PgConnection, _>(std::hint::black_box(&dynamic_query)))
    });
    g.bench_function("uncached_render_and_lex_sqlite", |b| {
        b.iter(|| uncached.kind_of::<SqliteConnection, _>(std::hint::black_box(&dynamic_query)))
    });
    let sql = diesel::debug_query::<diesel::pg::Pg, _>(&dynamic_query).to_string();
    let sql = sql.split(" -- binds").next().unwrap_or_default().to_owned();
    let classifier = CachedClassifier::default();
    g.bench_function("lex_only", |b| {
        b.iter(|| classifier.classify(std::hint::black_box(&sql)))
    });
    g.finish();
}

macro_rules! point_select {
    ($conn:expr, $id:expr) => {
        items::table
            .find($id)
            .select(items::name)
            .first::<String>($conn)
            .unwrap()
    };
}

macro_rules! insert_one {
    ($conn:expr, $n:expr) => {
        diesel::insert_into(items::table)
            .values((items::name.eq(format!("n{}", $n)), items::qty.eq(1)))
            .execute($conn)
            .unwrap()
    };
}

/// The point-select and insert pairs, for any backend's plain and routed connections.
macro_rules! pairs {
    ($c:expr, $group:expr, $plain:ident, $routed:ident) => {{
        let mut g = $c.benchmark_group($group);
        let (mut i, mut j) = (0i64, 0i64);
        interleaved(
            &mut g,
            "point_select",
            || {
                i = i % ROWS + 1;
                std::hint::black_box(point_select!(&mut *$plain, i));
            },
            || {
                j = j % ROWS + 1;
                std::hint::black_box(point_select!(&mut $routed, j));
            },
        );
        let mut n = 0i64;
        let n2 = std::cell::Cell::new(1_000_000_000i64);
        interleaved(
            &mut g,
            "insert_one",
            || {
                n += 1;
                insert_one!(&mut *$plain, n);
            },
            || {
                n2.set(n2.get() + 1);
                insert_one!(&mut $routed, n2.get());
            },
        );
        g.finish();
    }};
}

/// Times `a` and `b` alternately, one call each in turn, and registers two benchmarks: the
/// time of `a`'s calls and the time of `b`'s calls. Both see the same machine conditions, so
/// their ratio is stable even on a noisy machine (a 2-core VM where back-to-back runs differ
/// by 20 %).
fn interleaved(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) {
    use std::time::Instant;
    g.bench_function(BenchmarkId::new(name, "plain"), |bench| {
        bench.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                b();
                let t = Instant::now();
                a();
                spent += t.elapsed();
            }
            spent
        })
    });
    g.bench_function(BenchmarkId::new(name, "routed"), |bench| {
        bench.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                a();
                let t = Instant::now();
                b();
                spent += t.elapsed();
            }
            spent
        })
    });
}

/// An r2d2 pool of one plain connection to `url`.
fn plain_pool<C>(url: &str) -> Pool<ConnectionManager<C>>
where
    C: diesel::r2d2::R2D2Connection + 'static,
{
    Pool::builder()
        .max_size(1)
        .build(ConnectionManager::<C>::new(url))
        .unwrap()
}

/// A routed cluster in `mode` whose replica is its primary's own server (`url`): what it
/// adds to plain Diesel is the router alone.
fn routed_on_itself<C: diesel_sharding::RoutedBackend>(url: &str, mode: &str) -> Cluster<C> {
    Cluster::new(
        Settings::from_toml_str(&format!(
            "[consistency]\nmode = \"{mode}\"\n\
             [databases.default]\nurl = \"{url}\"\npool_size = 1\n\
             [databases.default_replica]\nurl = \"{url}\"\nprimary = \"default\"\n"
        ))
        .unwrap(),
    )
    .unwrap()
}

fn sqlite(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sqlite");
    let url = path.to_str().unwrap().to_owned();
    {
        let mut conn = SqliteConnection::establish(&url).unwrap();
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;
             CREATE TABLE items (id INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, qty INTEGER NOT NULL);",
        )
        .unwrap();
        conn.batch_execute(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
             INSERT INTO items SELECT i, 'item' || i, i FROM n;"
        ))
        .unwrap();
    }
    let plain = Pool::builder()
        .max_size(1)
        .build(ConnectionManager::<SqliteConnection>::new(&url))
        .unwrap();
    let cluster = Cluster::<SqliteConnection>::new(
        Settings::from_toml_str(&format!(
            "[databases.default]\nurl = \"{url}\"\npool_size = 1\n\
             [databases.default_replica]\nurl = \"{url}\"\nprimary = \"default\"\n"
        ))
        .unwrap(),
    )
    .unwrap();
    let routed = cluster.pool("default").unwrap();
    let mut plain_conn = plain.get().unwrap();
    plain_conn
        .batch_execute("PRAGMA synchronous = OFF")
        .unwrap();
    let mut routed_conn = routed.get().unwrap();
    routed_conn
        .batch_execute("PRAGMA synchronous = OFF")
        .unwrap();
    pin::unpin_this_thread();

    pairs!(c, "sqlite", plain_conn, routed_conn);
    pin::unpin_this_thread();
}

fn postgres(c: &mut Criterion) {
    let cluster = pg_cluster::PgCluster::start(0);
    cluster.create_database("bench");
    let url = cluster.primary_url("bench");
    cluster.execute(
        pg_cluster::Node::Primary,
        "bench",
        &format!(
            "CREATE TABLE items (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL);
             INSERT INTO items (name, qty) SELECT 'item' || i, i FROM generate_series(1, {ROWS}) i;"
        ),
    );
    let plain = plain_pool::<PgConnection>(&url);
    let routed_cluster = |mode: &str| routed_on_itself::<PgConnection>(&url, mode);
    // The router alone: mode "pin" reads no replication positions.
    let pinned = routed_cluster("pin");
    let mut plain_conn = plain.get().unwrap();
    let mut routed_conn = pinned.get("default").unwrap();
    pin::unpin_this_thread();
    pairs!(c, "postgres", plain_conn, routed_conn);
    drop(routed_conn);

    // read_your_writes (the default): the write's position is left to the monitor's next probe
    let ryw = routed_cluster("read_your_writes");
    let mut ryw_conn = ryw.get("default").unwrap();
    let mut g = c.benchmark_group("postgres_read_your_writes");
    let mut n = 2_000_000_000i64;
    let n2 = std::cell::Cell::new(3_000_000_000i64);
    interleaved(
        &mut g,
        "insert_one",
        || {
            n += 1;
            insert_one!(&mut *plain_conn, n);
        },
        || {
            n2.set(n2.get() + 1);
            insert_one!(&mut ryw_conn, n2.get());
        },
    );
    g.finish();
    drop(ryw_conn);
    drop(plain_conn);
    pin::unpin_this_thread();
}

#[cfg(feature = "mysql")]
fn mariadb(c: &mut Criterion) {
    use diesel::mysql::MysqlConnection;
    use mariadb_cluster::{MariaCluster, Node};
    let m = MariaCluster::start(0);
    m.try_sql_as(
        Node::Primary,
        "app",
        &format!(
            "CREATE TABLE items (id BIGINT AUTO_INCREMENT PRIMARY KEY, name TEXT NOT NULL, qty INT NOT NULL);
             SET SESSION max_recursive_iterations = {ROWS};
             INSERT INTO items (name, qty) WITH RECURSIVE n(i) AS \
             (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) SELECT CONCAT('item', i), i FROM n;"
        ),
    )
    .unwrap();
    let url = m.url(Node::Primary);
    let plain = plain_pool::<MysqlConnection>(&url);
    let routed_cluster = |mode: &str| routed_on_itself::<MysqlConnection>(&url, mode);
    // the router alone (no positions), then read_your_writes (positions learned lazily)
    let pinned = routed_cluster("pin");
    let mut plain_conn = plain.get().unwrap();
    let mut routed_conn = pinned.get("default").unwrap();
    pin::unpin_this_thread();
    pairs!(c, "mariadb", plain_conn, routed_conn);
    drop(routed_conn);

    let ryw = routed_cluster("read_your_writes");
    let mut ryw_conn = ryw.get("default").unwrap();
    pin::unpin_this_thread();
    pairs!(c, "mariadb_read_your_writes", plain_conn, ryw_conn);
    drop(ryw_conn);
    drop(plain_conn);
    pin::unpin_this_thread();
}

#[cfg(not(feature = "mysql"))]
fn mariadb(_: &mut Criterion) {}

/// diesel-async: a routed bb8 pool against diesel-async's own bb8 pool of `AsyncPgConnection`,
/// each call driven to completion on a current-thread runtime (the same for both sides).
#[cfg(all(feature = "async", feature = "bb8"))]
mod async_bench {
    // diesel-async's RunQueryDsl, not diesel's: no prelude here
    use super::{interleaved, items, pg_cluster, routed_on_itself, ROWS};
    use criterion::Criterion;
    use diesel::pg::PgConnection;
    use diesel::{ExpressionMethods, QueryDsl};
    use diesel_async::pooled_connection::{
        bb8, AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
    };
    use diesel_async::{AsyncPgConnection, RunQueryDsl};

    /// Point selects and one-row inserts, plain against routed, in each `(mode, group)`:
    /// `$plain` is diesel-async's own bb8 pool, the routed pool comes from a `Cluster<$conn>`
    /// whose replica is the same server.
    macro_rules! async_pairs {
        ($c:expr, $rt:expr, $rt2:expr, $plain:expr, $url:expr, $conn:ty, $groups:expr) => {
            for (mode, group) in $groups {
                let routed_cluster = routed_on_itself::<$conn>(&$url, mode);
                let routed = {
                    let _runtime = $rt.enter();
                    routed_cluster.bb8_pool("default").unwrap()
                };
                let mut g = $c.benchmark_group(group);
                let (mut i, mut j) = (0i64, 0i64);
                let (p, r) = ($plain.clone(), routed.clone());
                interleaved(
                    &mut g,
                    "point_select",
                    || {
                        i = i % ROWS + 1;
                        $rt.block_on(async {
                            let mut conn = p.get().await.unwrap();
                            let name: String = items::table
                                .find(i)
                                .select(items::name)
                                .first(&mut *conn)
                                .await
                                .unwrap();
                            std::hint::black_box(name);
                        })
                    },
                    || {
                        j = j % ROWS + 1;
                        $rt2.block_on(diesel_sharding::task::scope(async {
                            let mut conn = r.get().await.unwrap();
                            let name: String = items::table
                                .find(j)
                                .select(items::name)
                                .first(&mut *conn)
                                .await
                                .unwrap();
                            std::hint::black_box(name);
                        }))
                    },
                );
                let mut n = 5_000_000_000i64;
                let n2 = std::cell::Cell::new(6_000_000_000i64);
                interleaved(
                    &mut g,
                    "insert_one",
                    || {
                        n += 1;
                        $rt.block_on(async {
                            let mut conn = p.get().await.unwrap();
                            diesel::insert_into(items::table)
                                .values((items::name.eq(format!("n{n}")), items::qty.eq(1)))
                                .execute(&mut *conn)
                                .await
                                .unwrap();
                        })
                    },
                    || {
                        n2.set(n2.get() + 1);
                        $rt2.block_on(diesel_sharding::task::scope(async {
                            let mut conn = r.get().await.unwrap();
                            diesel::insert_into(items::table)
                                .values((
                                    items::name.eq(format!("n{}", n2.get())),
                                    items::qty.eq(1),
                                ))
                                .execute(&mut *conn)
                                .await
                                .unwrap();
                        }))
                    },
                );
                g.finish();
            }
        };
    }

    /// No ping at checkout, as the routed pool (diesel-async's default pings each time).
    fn fast_recycling<C: diesel_async::pooled_connection::PoolableConnection + 'static>(
    ) -> ManagerConfig<C> {
        let mut config = ManagerConfig::default();
        config.recycling_method = RecyclingMethod::Fast;
        config
    }

    pub(super) fn postgres_async(c: &mut Criterion) {
        let cluster = pg_cluster::PgCluster::start(0);
        cluster.create_database("bench");
        let url = cluster.primary_url("bench");
        // (fully qualified: diesel_async::RunQueryDsl has an `execute` for every type)
        pg_cluster::PgCluster::execute(
        &cluster,
        pg_cluster::Node::Primary,
        "bench",
        &format!(
            "CREATE TABLE items (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL);
             INSERT INTO items (name, qty) SELECT 'item' || i, i FROM generate_series(1, {ROWS}) i;"
        ),
    );
        // a runtime for each side: what one side's connection tasks leave to do is not done
        // (and timed) during the other side's call
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let (rt, rt2) = (runtime(), runtime());
        let plain: bb8::Pool<AsyncPgConnection> = rt.block_on(async {
            bb8::Pool::builder()
                .max_size(1)
                .build(
                    AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                        &url,
                        fast_recycling(),
                    ),
                )
                .await
                .unwrap()
        });
        async_pairs!(
            c,
            rt,
            rt2,
            plain,
            url,
            PgConnection,
            [
                ("pin", "postgres_async"),
                ("read_your_writes", "postgres_async_read_your_writes"),
            ]
        );
    }

    /// The same on MariaDB: diesel-async's `AsyncMysqlConnection` on both sides.
    #[cfg(feature = "mysql")]
    pub(super) fn mariadb_async(c: &mut Criterion) {
        use super::mariadb_cluster::{MariaCluster, Node};
        use diesel::mysql::MysqlConnection;
        use diesel_async::AsyncMysqlConnection;
        let m = MariaCluster::start(0);
        m.try_sql_as(
            Node::Primary,
            "app",
            &format!(
                "CREATE TABLE items (id BIGINT AUTO_INCREMENT PRIMARY KEY, name TEXT NOT NULL, qty INT NOT NULL);
                 SET SESSION max_recursive_iterations = {ROWS};
                 INSERT INTO items (name, qty) WITH RECURSIVE n(i) AS \
                 (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) SELECT CONCAT('item', i), i FROM n;"
            ),
        )
        .unwrap();
        let url = m.url(Node::Primary);
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let (rt, rt2) = (runtime(), runtime());
        let plain: bb8::Pool<AsyncMysqlConnection> = rt.block_on(async {
            bb8::Pool::builder()
                .max_size(1)
                .build(
                    AsyncDieselConnectionManager::<AsyncMysqlConnection>::new_with_config(
                        &url,
                        fast_recycling(),
                    ),
                )
                .await
                .unwrap()
        });
        async_pairs!(
            c,
            rt,
            rt2,
            plain,
            url,
            MysqlConnection,
            [
                ("pin", "mariadb_async"),
                ("read_your_writes", "mariadb_async_read_your_writes"),
            ]
        );
    }
}

#[cfg(all(feature = "async", feature = "bb8"))]
use async_bench::postgres_async;

#[cfg(not(all(feature = "async", feature = "bb8")))]
fn postgres_async(_: &mut Criterion) {}

#[cfg(all(feature = "async", feature = "bb8", feature = "mysql"))]
use async_bench::mariadb_async;

#[cfg(not(all(feature = "async", feature = "bb8", feature = "mysql")))]
fn mariadb_async(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    // (criterion's generated function carries no docs)
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = classify, sqlite, postgres, mariadb, postgres_async, mariadb_async
}
criterion_main!(benches);
