//! The consistency benchmark: which routing policy keeps reads fresh, and how many reads it
//! leaves on the replicas.
//!
//! A real PostgreSQL primary and two streaming replicas, both with a fixed apply delay
//! (`recovery_min_apply_delay`, 200 ms by default). Worker threads serve requests of many
//! users, as a web application's worker pool does; each request runs under that user's cookie
//! (a consistency token, or for the pin policies django-multidb-router's "wrote recently"
//! cookie) and does one of:
//!
//! * write a row for the user, then read it back (a read of a row just written);
//! * read the user's own most recent row;
//! * read the most recent row any user wrote;
//! * read an old row.
//!
//! A read is **stale** when it misses a row committed before the read started that its policy
//! promises to show: the user's own rows for `pin`, `read_your_writes`, `causal` and `strong`;
//! any user's rows for `causal` and `strong`; nothing for `eventual` (its misses are shown
//! separately). The **replica share** is counted on the servers (`pg_stat_statements`), and the
//! **best possible share** is the share of reads whose row was committed more than the apply
//! delay before the read started: no correct policy can serve the others from a replica.
//!
//! Run: `cargo bench --bench consistency` (about a minute). Environment: `BENCH_SECONDS`
//! (per policy, default 5), `BENCH_THREADS` (default 4), `BENCH_USERS` (default 5000),
//! `BENCH_DELAY_MS` (default 200), `BENCH_POLICY` (one policy by name, such as `eventual`).
//!
//! Async: `BENCH_BACKEND=postgres-async cargo bench --features async,bb8 --bench consistency`
//! (or `mariadb-async` with `--features mysql,async,bb8`): the same requests served by tokio
//! tasks over a bb8 pool of routed async connections.
//!
//! MariaDB: `BENCH_BACKEND=mariadb cargo bench --features mysql --bench consistency`: a
//! primary and two GTID replicas with `MASTER_DELAY` (whole seconds, default 1 s; the binlog
//! stamps events in whole seconds, so a transaction is applied between `delay - 1 s` and
//! `delay` after its commit: the best possible share is then a floor, not a ceiling), reads
//! counted in the servers' general logs.

#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{
    pin, Cluster, ConsistencyToken, PooledConnection, RouteReason, RoutedBackend, Settings,
};
use rand::Rng;

use diesel_sharding_testing::postgres as pg_cluster;
use pg_cluster::PgCluster;

#[cfg(feature = "mysql")]
use diesel_sharding_testing::mariadb as mariadb_cluster;

mod schema {
    diesel::table! {
        kv (id) {
            id -> Int8,
            owner -> Int8,
            val -> Int8,
        }
    }

    diesel::table! {
        catalog (id) {
            id -> Int8,
            val -> Int8,
        }
    }
}
use schema::{catalog, kv};

const OLD_ROWS: i64 = 10_000;

/// The servers under test: a primary and two replicas, with their own statement counts.
trait Servers {
    /// The primary's and the two replicas' URLs.
    fn urls(&self) -> [String; 3];
    fn wait_all_caught_up(&self);
    /// Starts the servers' read counts over.
    fn reset_counts(&self);
    /// Point reads the servers ran since the reset: (primary, replicas).
    fn reads(&self) -> (u64, u64);
}

/// The bench's statements on a backend's routed connection.
trait Rows: RoutedBackend {
    fn insert_kv(conn: &mut PooledConnection<Self>, id: i64, owner: i64, val: i64);
    fn read_kv(conn: &mut PooledConnection<Self>, id: i64) -> Option<i64>;
    fn read_catalog(conn: &mut PooledConnection<Self>, id: i64) -> Option<i64>;
}

macro_rules! rows {
    ($conn:ty) => {
        impl Rows for $conn {
            fn insert_kv(conn: &mut PooledConnection<Self>, id: i64, owner: i64, val: i64) {
                diesel::insert_into(kv::table)
                    .values((kv::id.eq(id), kv::owner.eq(owner), kv::val.eq(val)))
                    .execute(conn)
                    .unwrap();
            }

            fn read_kv(conn: &mut PooledConnection<Self>, id: i64) -> Option<i64> {
                kv::table
                    .find(id)
                    .select(kv::val)
                    .first(conn)
                    .optional()
                    .unwrap()
            }

            fn read_catalog(conn: &mut PooledConnection<Self>, id: i64) -> Option<i64> {
                catalog::table
                    .find(id)
                    .select(catalog::val)
                    .first(conn)
                    .optional()
                    .unwrap()
            }
        }
    };
}
rows!(PgConnection);
#[cfg(feature = "mysql")]
rows!(diesel::mysql::MysqlConnection);

impl Servers for PgCluster {
    fn urls(&self) -> [String; 3] {
        [
            self.primary_url("bench"),
            self.replica_url(0, "bench"),
            self.replica_url(1, "bench"),
        ]
    }

    fn wait_all_caught_up(&self) {
        PgCluster::wait_all_caught_up(self)
    }

    fn reset_counts(&self) {
        self.reset_all_statement_stats()
    }

    fn reads(&self) -> (u64, u64) {
        use pg_cluster::Node;
        const READ_QUERY: &str = "SELECT %\"val\" FROM %WHERE%\"id\" = $1)%";
        (
            self.statement_calls(Node::Primary, READ_QUERY) as u64,
            (self.statement_calls(Node::Replica(0), READ_QUERY)
                + self.statement_calls(Node::Replica(1), READ_QUERY)) as u64,
        )
    }
}

#[cfg(feature = "mysql")]
impl Servers for mariadb_cluster::MariaCluster {
    fn urls(&self) -> [String; 3] {
        use mariadb_cluster::Node;
        [
            self.url(Node::Primary),
            self.url(Node::Replica(0)),
            self.url(Node::Replica(1)),
        ]
    }

    fn wait_all_caught_up(&self) {
        mariadb_cluster::MariaCluster::wait_all_caught_up(self)
    }

    fn reset_counts(&self) {
        use mariadb_cluster::Node;
        for node in [Node::Primary, Node::Replica(0), Node::Replica(1)] {
            self.clear_statement_log(node);
        }
    }

    fn reads(&self) -> (u64, u64) {
        use mariadb_cluster::Node;
        // executions of the point reads (`SELECT `kv`.`val` ...`, `SELECT `catalog`.`val` ...`)
        let reads = |node| {
            (self.logged(node, "app", "SELECT `kv`.`val`")
                + self.logged(node, "app", "SELECT `catalog`.`val`")) as u64
        };
        (
            reads(Node::Primary),
            reads(Node::Replica(0)) + reads(Node::Replica(1)),
        )
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A policy under test: the settings and what it promises.
#[derive(Clone, Copy)]
struct Policy {
    name: &'static str,
    mode: &'static str,
    granularity: &'static str,
    pin_seconds: u64,
    /// The user's own writes are promised.
    own: bool,
    /// Every write committed before the read started is promised.
    all: bool,
}

const fn policy(
    name: &'static str,
    mode: &'static str,
    granularity: &'static str,
    pin_seconds: u64,
    own: bool,
    all: bool,
) -> Policy {
    Policy {
        name,
        mode,
        granularity,
        pin_seconds,
        own,
        all,
    }
}

const POLICIES: &[Policy] = &[
    policy("eventual", "eventual", "database", 0, false, false),
    policy("pin 15 s", "pin", "database", 15, true, false),
    policy("pin 2 s", "pin", "database", 2, true, false),
    policy(
        "read_your_writes",
        "read_your_writes",
        "database",
        15,
        true,
        false,
    ),
    policy(
        "read_your_writes, per table",
        "read_your_writes",
        "table",
        15,
        true,
        false,
    ),
    policy("causal", "causal", "database", 15, true, true),
    policy("causal, per table", "causal", "table", 15, true, true),
    policy("strong", "strong", "database", 15, true, true),
];

/// A user's cookie: their token, and when they last wrote (for the pin policies).
#[derive(Default, Clone)]
struct Cookie {
    token: ConsistencyToken,
    last_write: Option<Instant>,
}

#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    reads: AtomicU64,
    stale: AtomicU64,
    missed_unpromised: AtomicU64,
    could_be_replica: AtomicU64,
    routed_replica: AtomicU64,
}

/// Which row a read asks for.
#[derive(Clone, Copy)]
enum Target {
    Kv(i64),
    Catalog(i64),
}

/// One read; `expect` is (the row's value, when it was committed, promised by the policy?).
fn read_row<C: Rows>(
    conn: &mut PooledConnection<C>,
    counts: &Counts,
    target: Target,
    expect: Option<(i64, Instant, bool)>,
    delay: Duration,
) {
    let read_started = Instant::now();
    let got: Option<i64> = match target {
        Target::Kv(id) => C::read_kv(conn, id),
        Target::Catalog(id) => C::read_catalog(conn, id),
    };
    let on_replica = conn.last_route().map(|r| r.reason) == Some(RouteReason::Replica);
    account(counts, got, on_replica, expect, delay, read_started);
}

/// Counts one read that returned `got` (`on_replica`: the router sent it to a replica)
/// against what its policy promised (`expect`: the row's value, when it was committed,
/// promised?).
fn account(
    counts: &Counts,
    got: Option<i64>,
    on_replica: bool,
    expect: Option<(i64, Instant, bool)>,
    delay: Duration,
    read_started: Instant,
) {
    counts.reads.fetch_add(1, Ordering::Relaxed);
    if on_replica {
        counts.routed_replica.fetch_add(1, Ordering::Relaxed);
    }
    match expect {
        None => {
            counts.could_be_replica.fetch_add(1, Ordering::Relaxed);
        }
        Some((val, committed, promised)) => {
            // a correct policy must read this on the primary only if it promises the row and
            // the row is younger than the apply delay
            if !promised || read_started.saturating_duration_since(committed) > delay {
                counts.could_be_replica.fetch_add(1, Ordering::Relaxed);
            }
            if got != Some(val) {
                if promised {
                    counts.stale.fetch_add(1, Ordering::Relaxed);
                } else {
                    counts.missed_unpromised.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl Counts {
    fn reset(&self) {
        for a in [
            &self.ops,
            &self.reads,
            &self.stale,
            &self.missed_unpromised,
            &self.could_be_replica,
            &self.routed_replica,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }

    /// The table row of `policy`'s run, `elapsed` seconds measured.
    fn report(&self, policy: Policy, servers: &dyn Servers, elapsed: f64) -> Vec<String> {
        let (on_primary, on_replicas) = servers.reads();
        let reads = self.reads.load(Ordering::Relaxed);
        let pct = |n: u64| 100.0 * n as f64 / reads.max(1) as f64;
        vec![
            policy.name.to_owned(),
            self.stale.load(Ordering::Relaxed).to_string(),
            self.missed_unpromised.load(Ordering::Relaxed).to_string(),
            format!(
                "{:.1} %",
                100.0 * on_replicas as f64 / (on_primary + on_replicas).max(1) as f64
            ),
            format!("{:.1} %", pct(self.routed_replica.load(Ordering::Relaxed))),
            format!(
                "{:.1} %",
                pct(self.could_be_replica.load(Ordering::Relaxed))
            ),
            format!("{:.0}", self.ops.load(Ordering::Relaxed) as f64 / elapsed),
            reads.to_string(),
        ]
    }
}

/// The cluster's settings for `policy` on `servers`, with a pool of `pool_size`.
fn settings_for(servers: &dyn Servers, policy: Policy, pool_size: u64) -> Settings {
    Settings::from_toml_str(&format!(
        "[pinning]\nseconds = {}\n[consistency]\nmode = \"{}\"\ngranularity = \"{}\"\nmonitor_interval = \"100ms\"\n\
         [databases.default]\nurl = \"{}\"\npool_size = {pool_size}\n\
         [databases.r1]\nurl = \"{}\"\nprimary = \"default\"\n\
         [databases.r2]\nurl = \"{}\"\nprimary = \"default\"\n",
        policy.pin_seconds,
        policy.mode,
        policy.granularity,
        servers.urls()[0],
        servers.urls()[1],
        servers.urls()[2],
    ))
    .unwrap()
}

/// The ids of the rows the requests write (above the old rows).
static NEXT_ID: AtomicI64 = AtomicI64::new(OLD_ROWS + 1);

fn run<C: Rows>(
    servers: &dyn Servers,
    policy: Policy,
    seconds: u64,
    warm_up: u64,
    threads: u64,
    users: u64,
    delay: Duration,
) -> Vec<String> {
    let cluster = Cluster::<C>::new(settings_for(servers, policy, threads)).unwrap();
    let cookies: Arc<Vec<Mutex<Cookie>>> =
        Arc::new((0..users).map(|_| Mutex::new(Cookie::default())).collect());
    let latest = Arc::new(Mutex::new(None::<(i64, i64, Instant)>)); // (id, val, committed)
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now() - Duration::from_secs(3600); // when the old rows were written
    servers.wait_all_caught_up();
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (cluster, cookies, latest, counts, stop) = (
                cluster.clone(),
                cookies.clone(),
                latest.clone(),
                counts.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut rng = rand::thread_rng();
                while !stop.load(Ordering::Relaxed) {
                    let user = rng.gen_range(0..users) as usize;
                    let cookie = cookies[user].lock().unwrap().clone();
                    let pinned = policy.mode == "pin"
                        && cookie
                            .last_write
                            .is_some_and(|t| t.elapsed() < Duration::from_secs(policy.pin_seconds));
                    let roll: f64 = rng.gen();
                    let request = || {
                        let mut conn = cluster.get("default").unwrap();
                        let read =
                            |conn: &mut PooledConnection<C>,
                             target: Target,
                             expect: Option<(i64, Instant, bool)>| {
                                read_row(conn, &counts, target, expect, delay)
                            };
                        let mut wrote = false;
                        if roll < 0.15 {
                            // a write, and a read of the row just written
                            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                            let val = id * 7;
                            C::insert_kv(&mut conn, id, user as i64, val);
                            let committed = Instant::now();
                            *latest.lock().unwrap() = Some((id, val, committed));
                            read(
                                &mut conn,
                                Target::Kv(id),
                                Some((val, committed, policy.own)),
                            );
                            wrote = true;
                        } else if roll < 0.25 && latest.lock().unwrap().is_some() {
                            // the row another user wrote last
                            let (id, val, committed) = latest.lock().unwrap().unwrap();
                            read(
                                &mut conn,
                                Target::Kv(id),
                                Some((val, committed, policy.all)),
                            );
                        } else {
                            // an old row, in a table nobody writes during the run
                            let id = rand::thread_rng().gen_range(1..=OLD_ROWS);
                            read(&mut conn, Target::Catalog(id), Some((id * 7, epoch, true)));
                        }
                        (wrote, cluster.token())
                    };
                    let (wrote, token) = if pinned {
                        pin::use_primary(|| cluster.with_token(&cookie.token, request))
                    } else {
                        pin::run_job(|| cluster.with_token(&cookie.token, request))
                    };
                    let mut c = cookies[user].lock().unwrap();
                    c.token = token;
                    if wrote {
                        c.last_write = Some(Instant::now());
                    }
                    counts.ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // warm up (cookies fill, pins and tokens reach a steady state), then measure
    std::thread::sleep(Duration::from_secs(warm_up));
    servers.reset_counts();
    let measured = Instant::now();
    counts.reset();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let _ = started;
    counts.report(policy, servers, measured.elapsed().as_secs_f64())
}

/// The same requests as [`run`], served by tokio tasks (features `async` and `bb8`):
/// `BENCH_TASKS` tasks (default 32) on a runtime of `threads` worker threads, over a bb8 pool
/// of routed async connections of `threads` connections; each request runs in
/// `with_token_async` (and `use_primary_async` for a pinned user) inside a task scope.
#[cfg(all(feature = "async", feature = "bb8"))]
mod async_driver {
    // diesel-async's RunQueryDsl is called by path: its blanket methods (`load`, `execute`)
    // would shadow `AtomicBool::load` and the like
    use super::*;
    use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
    use diesel_async::pooled_connection::bb8::Pool;
    use diesel_async::pooled_connection::AsyncDieselConnectionManager;
    use diesel_sharding::{task, AsyncRoutedBackend, AsyncRoutedConnection};
    use std::future::Future;

    /// diesel-async's pool manager of routed connections.
    type Manager<C> = AsyncDieselConnectionManager<AsyncRoutedConnection<C>>;

    /// The bench's statements on a backend's routed async connection.
    pub(super) trait AsyncRows: AsyncRoutedBackend {
        fn pool(cluster: &Cluster<Self>) -> Pool<AsyncRoutedConnection<Self>>
        where
            Manager<Self>: bb8::ManageConnection<Connection = AsyncRoutedConnection<Self>>;
        fn insert_kv(
            conn: &mut AsyncRoutedConnection<Self>,
            id: i64,
            owner: i64,
            val: i64,
        ) -> impl Future<Output = ()> + Send;
        fn read(
            conn: &mut AsyncRoutedConnection<Self>,
            target: Target,
        ) -> impl Future<Output = Option<i64>> + Send;
    }

    macro_rules! async_rows {
        ($conn:ty) => {
            impl AsyncRows for $conn {
                fn pool(cluster: &Cluster<Self>) -> Pool<AsyncRoutedConnection<Self>>
                where
                    Manager<Self>: bb8::ManageConnection<Connection = AsyncRoutedConnection<Self>>,
                {
                    cluster.bb8_pool("default").unwrap()
                }

                fn insert_kv(
                    conn: &mut AsyncRoutedConnection<Self>,
                    id: i64,
                    owner: i64,
                    val: i64,
                ) -> impl Future<Output = ()> + Send {
                    async move {
                        diesel_async::RunQueryDsl::execute(
                            diesel::insert_into(kv::table).values((
                                kv::id.eq(id),
                                kv::owner.eq(owner),
                                kv::val.eq(val),
                            )),
                            conn,
                        )
                        .await
                        .unwrap();
                    }
                }

                fn read(
                    conn: &mut AsyncRoutedConnection<Self>,
                    target: Target,
                ) -> impl Future<Output = Option<i64>> + Send {
                    use diesel_async::RunQueryDsl;
                    async move {
                        match target {
                            Target::Kv(id) => {
                                RunQueryDsl::first(kv::table.find(id).select(kv::val), conn)
                                    .await
                                    .optional()
                                    .unwrap()
                            }
                            Target::Catalog(id) => RunQueryDsl::first(
                                catalog::table.find(id).select(catalog::val),
                                conn,
                            )
                            .await
                            .optional()
                            .unwrap(),
                        }
                    }
                }
            }
        };
    }
    async_rows!(PgConnection);
    #[cfg(feature = "mysql")]
    async_rows!(diesel::mysql::MysqlConnection);

    /// The row any user wrote last (the lock is not held across an await).
    fn last_written(latest: &Mutex<Option<(i64, i64, Instant)>>) -> Option<(i64, i64, Instant)> {
        *latest.lock().unwrap()
    }

    async fn read<C: AsyncRows>(
        conn: &mut AsyncRoutedConnection<C>,
        counts: &Counts,
        target: Target,
        expect: Option<(i64, Instant, bool)>,
        delay: Duration,
    ) {
        let read_started = Instant::now();
        let got = C::read(conn, target).await;
        let on_replica = conn.last_route().map(|r| r.reason) == Some(RouteReason::Replica);
        account(counts, got, on_replica, expect, delay, read_started);
    }

    pub(super) fn run_async<C: AsyncRows>(
        servers: &dyn Servers,
        policy: Policy,
        seconds: u64,
        warm_up: u64,
        threads: u64,
        users: u64,
        delay: Duration,
    ) -> Vec<String>
    where
        Manager<C>: bb8::ManageConnection<Connection = AsyncRoutedConnection<C>>,
    {
        let cluster = Cluster::<C>::new(settings_for(servers, policy, threads)).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads as usize)
            .enable_all()
            .build()
            .unwrap();
        let pool = {
            let _in = rt.enter();
            C::pool(&cluster)
        };
        let cookies: Arc<Vec<Mutex<Cookie>>> =
            Arc::new((0..users).map(|_| Mutex::new(Cookie::default())).collect());
        let latest = Arc::new(Mutex::new(None::<(i64, i64, Instant)>));
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now() - Duration::from_secs(3600);
        servers.wait_all_caught_up();
        let tasks = env("BENCH_TASKS", 32);
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (cluster, pool, cookies, latest, counts, stop) = (
                    cluster.clone(),
                    pool.clone(),
                    cookies.clone(),
                    latest.clone(),
                    counts.clone(),
                    stop.clone(),
                );
                rt.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let (user, roll, target) = {
                            let mut rng = rand::thread_rng();
                            (
                                rng.gen_range(0..users) as usize,
                                rng.gen::<f64>(),
                                rng.gen_range(1..=OLD_ROWS),
                            )
                        };
                        let cookie = cookies[user].lock().unwrap().clone();
                        let pinned = policy.mode == "pin"
                            && cookie.last_write.is_some_and(|t| {
                                t.elapsed() < Duration::from_secs(policy.pin_seconds)
                            });
                        let request = async {
                            let mut conn = pool.get().await.unwrap();
                            let mut wrote = false;
                            if roll < 0.15 {
                                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                                let val = id * 7;
                                C::insert_kv(&mut *conn, id, user as i64, val).await;
                                let committed = Instant::now();
                                *latest.lock().unwrap() = Some((id, val, committed));
                                let expect = Some((val, committed, policy.own));
                                read::<C>(&mut *conn, &counts, Target::Kv(id), expect, delay).await;
                                wrote = true;
                            } else if let (true, Some((id, val, committed))) =
                                (roll < 0.25, last_written(&latest))
                            {
                                let expect = Some((val, committed, policy.all));
                                read::<C>(&mut *conn, &counts, Target::Kv(id), expect, delay).await;
                            } else {
                                let expect = Some((target * 7, epoch, true));
                                read::<C>(
                                    &mut *conn,
                                    &counts,
                                    Target::Catalog(target),
                                    expect,
                                    delay,
                                )
                                .await;
                            }
                            drop(conn);
                            (wrote, cluster.token())
                        };
                        let scoped = cluster.with_token_async(&cookie.token, request);
                        let (wrote, token) = if pinned {
                            task::scope(diesel_sharding::pin::use_primary_async(scoped)).await
                        } else {
                            task::scope(scoped).await
                        };
                        let mut c = cookies[user].lock().unwrap();
                        c.token = token;
                        if wrote {
                            c.last_write = Some(Instant::now());
                        }
                        counts.ops.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(warm_up));
        servers.reset_counts();
        let measured = Instant::now();
        counts.reset();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        rt.block_on(async {
            for h in handles {
                h.await.unwrap();
            }
        });
        counts.report(policy, servers, measured.elapsed().as_secs_f64())
    }
}

/// `run` for one backend's connection type.
type Runner = fn(&dyn Servers, Policy, u64, u64, u64, u64, Duration) -> Vec<String>;

/// A PostgreSQL primary and two replicas applying `delay` late, with the bench's tables.
fn postgres(delay: Duration) -> PgCluster {
    use pg_cluster::Node;
    let pg = PgCluster::start(2);
    pg.create_database("bench");
    pg.execute(
        Node::Primary,
        "bench",
        &format!(
            "CREATE TABLE kv (id BIGINT PRIMARY KEY, owner BIGINT NOT NULL, val BIGINT NOT NULL);
             CREATE TABLE catalog (id BIGINT PRIMARY KEY, val BIGINT NOT NULL);
             INSERT INTO catalog SELECT i, i * 7 FROM generate_series(1, {OLD_ROWS}) i;"
        ),
    );
    pg.wait_all_caught_up();
    pg.set_apply_delay(0, delay);
    pg.set_apply_delay(1, delay);
    pg
}

/// The same on MariaDB (`delay` in whole seconds), with statement logs on.
#[cfg(feature = "mysql")]
fn mariadb(delay: Duration) -> mariadb_cluster::MariaCluster {
    use mariadb_cluster::{MariaCluster, Node};
    let m = MariaCluster::start(2);
    m.try_sql_as(
        Node::Primary,
        "app",
        &format!(
            "CREATE TABLE kv (id BIGINT PRIMARY KEY, owner BIGINT NOT NULL, val BIGINT NOT NULL);
             CREATE TABLE catalog (id BIGINT PRIMARY KEY, val BIGINT NOT NULL);
             SET SESSION max_recursive_iterations = {OLD_ROWS};
             INSERT INTO catalog WITH RECURSIVE n(i) AS \
             (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {OLD_ROWS}) SELECT i, i * 7 FROM n;"
        ),
    )
    .unwrap();
    m.wait_all_caught_up();
    for node in [Node::Primary, Node::Replica(0), Node::Replica(1)] {
        m.log_statements(node);
    }
    m.set_delay(0, delay.as_secs() as u32);
    m.set_delay(1, delay.as_secs() as u32);
    m
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list
    }
    let seconds = env("BENCH_SECONDS", 5);
    let threads = env("BENCH_THREADS", 4);
    let users = env("BENCH_USERS", 2000);
    let warm_up = env("BENCH_WARM_UP", 3);
    let backend = std::env::var("BENCH_BACKEND").unwrap_or_else(|_| "postgres".into());
    let (servers, run_policy, delay): (Box<dyn Servers>, Runner, Duration) = match backend.as_str()
    {
        "postgres" => {
            let delay = Duration::from_millis(env("BENCH_DELAY_MS", 200));
            (Box::new(postgres(delay)), run::<PgConnection>, delay)
        }
        #[cfg(all(feature = "async", feature = "bb8"))]
        "postgres-async" => {
            let delay = Duration::from_millis(env("BENCH_DELAY_MS", 200));
            (
                Box::new(postgres(delay)),
                async_driver::run_async::<PgConnection>,
                delay,
            )
        }
        #[cfg(feature = "mysql")]
        "mariadb" => {
            let delay = Duration::from_millis(env("BENCH_DELAY_MS", 1000));
            let delay = Duration::from_secs(delay.as_millis().div_ceil(1000) as u64);
            (
                Box::new(mariadb(delay)),
                run::<diesel::mysql::MysqlConnection>,
                delay,
            )
        }
        #[cfg(all(feature = "mysql", feature = "async", feature = "bb8"))]
        "mariadb-async" => {
            let delay = Duration::from_millis(env("BENCH_DELAY_MS", 1000));
            let delay = Duration::from_secs(delay.as_millis().div_ceil(1000) as u64);
            (
                Box::new(mariadb(delay)),
                async_driver::run_async::<diesel::mysql::MysqlConnection>,
                delay,
            )
        }
        other => panic!(
            "BENCH_BACKEND: {other}? postgres, postgres-async (with --features async,bb8), \
             mariadb (with --features mysql) or mariadb-async (with --features mysql,async,bb8)"
        ),
    };
    let mut rows = Vec::new();
    let only = std::env::var("BENCH_POLICY").ok();
    for policy in POLICIES {
        if only.as_deref().is_some_and(|o| o != policy.name) {
            continue;
        }
        let row = run_policy(&*servers, *policy, seconds, warm_up, threads, users, delay);
        eprintln!("{}", row.join(" | "));
        rows.push(row);
    }
    println!(
        "\n{backend}: {threads} threads, {users} users, {warm_up} s warm-up + {seconds} s measured per policy, apply delay {} ms on both replicas\n",
        delay.as_millis()
    );
    println!("| policy | stale reads (promised) | misses it does not promise to avoid | replica share (servers) | replica share (router) | best possible share for its promise | requests/s | reads |");
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}
