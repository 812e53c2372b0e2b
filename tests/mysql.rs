//! The MySQL/MariaDB backend (feature `mysql`) against a real MariaDB primary and GTID
//! replica: reads go to the replica, writes to the primary, and a reader sees its own write
//! while the replica has not applied it (GTID positions), checked in the servers' own
//! statistics (`userstat`).
#![cfg(feature = "mysql")]

mod support;

use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_sharding::{Cluster, ConsistencyToken, RouteReason, Settings};
use support::mariadb_cluster::{MariaCluster, Node};
use support::mysql_users::*;

#[test]
fn reads_go_to_the_replica_writes_to_the_primary_and_the_writer_sees_its_row() {
    let (m, cluster) = setup();
    // the replica applies each transaction 2 s after it committed: stale for certain
    m.set_delay(0, 2);
    assert_eq!(add_user(&cluster, "ada"), RouteReason::Write);

    // the replica has not applied the write: the writer reads it on the primary
    let (primary_before, replica_before) = (
        rows_read(&m, Node::Primary),
        rows_read(&m, Node::Replica(0)),
    );
    assert_eq!(
        count(&cluster, "ada"),
        (1, RouteReason::Behind),
        "not stale"
    );
    assert!(
        rows_read(&m, Node::Primary) > primary_before,
        "read on the primary"
    );
    assert_eq!(rows_read(&m, Node::Replica(0)), replica_before);

    // a token carries the write's GTID to another thread
    let token = cluster.token();
    let text = token.to_string();
    assert!(text.starts_with("v2.default-m"), "{text}");
    let cluster2 = cluster.clone();
    let other = std::thread::spawn(move || {
        let token: ConsistencyToken = text.parse().unwrap();
        cluster2.with_token(&token, || count(&cluster2, "ada"))
    })
    .join()
    .unwrap();
    assert_eq!(other, (1, RouteReason::Behind));

    // once the replica has applied it, reads go there
    m.wait_all_caught_up();
    let replica_before = rows_read(&m, Node::Replica(0));
    assert_eq!(until_on_replica(&cluster, "ada"), (1, RouteReason::Replica));
    assert!(
        rows_read(&m, Node::Replica(0)) > replica_before,
        "read on the replica"
    );

    // stopped replication has no lag to report (`Seconds_Behind_Master` is NULL): past
    // `max_lag`, so no reads until it runs again
    m.pause(0);
    assert_eq!(
        poll(
            || count(&cluster, "ada"),
            |got| got.1 == RouteReason::Lagging
        ),
        (1, RouteReason::Lagging)
    );
    m.resume(0);
    assert_eq!(until_on_replica(&cluster, "ada"), (1, RouteReason::Replica));
}

#[test]
fn a_frozen_replica_costs_its_readers_a_bounded_wait() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let m = start("INSERT INTO users (name) VALUES ('ada');");
    let cluster = cluster_on(
        &m,
        "[pinning]\nseconds = 0\n[routing]\nreplica_timeout = \"300ms\"\nreplica_retry = \"200ms\"\n\
         [consistency]\nmode = \"eventual\"\nmonitor_interval = \"100ms\"",
    );
    // the documented bound: the monitor's next probe, its timeout, a watchdog tick; and a
    // margin for a loaded machine
    let bound = Duration::from_millis(300 + 125 + 50 + 1500);
    let stop = Arc::new(AtomicBool::new(false));
    let worst_ms = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
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
                        users::table.select(users::name).load(&mut conn);
                    worst_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    match rows {
                        Ok(r) if r.len() == 1 => {}
                        other => {
                            eprintln!("failed read: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500)); // every worker reads from the replica
    let on_replica = rows_read(&m, Node::Replica(0));
    assert!(on_replica > 0, "the workers read the replica");
    worst_ms.store(0, Ordering::Relaxed);
    m.freeze(Node::Replica(0));
    std::thread::sleep(Duration::from_secs(2));
    let worst_frozen = Duration::from_millis(worst_ms.load(Ordering::Relaxed));
    m.thaw(Node::Replica(0));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no read failed");
    assert!(
        worst_frozen <= bound,
        "worst read during the freeze took {worst_frozen:?}; bound {bound:?}"
    );
}

/// One way of writing (or reading what must see the primary) on a pooled connection.
type Step = dyn Fn(&mut diesel_sharding::PooledConnection<MysqlConnection>);

#[test]
fn no_write_and_no_read_that_must_see_the_primary_reaches_the_replica_by_any_entry_point() {
    use diesel::connection::SimpleConnection;
    let (m, cluster) = setup();
    m.set_delay(0, 2);
    let mut conn = cluster.get("default").unwrap();
    let replica_read_before = rows_read(&m, Node::Replica(0));
    let writes: &[(&str, &Step)] = &[
        ("insert_into().execute", &|c| {
            diesel::insert_into(users::table)
                .values(users::name.eq("w1"))
                .execute(c)
                .unwrap();
        }),
        ("sql_query().execute", &|c| {
            diesel::sql_query("INSERT INTO users (name) VALUES ('w2')")
                .execute(c)
                .unwrap();
        }),
        ("batch_execute", &|c| {
            c.batch_execute("INSERT INTO users (name) VALUES ('w3')")
                .unwrap();
        }),
        ("batch_execute after a `--1` that is not a comment", &|c| {
            c.batch_execute("SELECT 1 --1; INSERT INTO users (name) VALUES ('w4')")
                .unwrap();
        }),
        ("an executable comment", &|c| {
            c.batch_execute("/*!50000 INSERT INTO users (name) VALUES ('w5') */")
                .unwrap();
        }),
        ("a transaction", &|c| {
            c.transaction::<_, diesel::result::Error, _>(|c| {
                diesel::insert_into(users::table)
                    .values(users::name.eq("w6"))
                    .execute(c)?;
                let n: i64 = users::table.count().get_result(c)?;
                assert!(n >= 1, "the transaction sees its own row: {n}");
                Ok(())
            })
            .unwrap();
        }),
        ("a hand-written transaction", &|c| {
            c.batch_execute("START TRANSACTION").unwrap();
            diesel::insert_into(users::table)
                .values(users::name.eq("w7"))
                .execute(c)
                .unwrap();
            let n: i64 = users::table
                .filter(users::name.eq("w7"))
                .count()
                .get_result(c)
                .unwrap();
            assert_eq!(n, 1, "inside its transaction, on the primary");
            c.batch_execute("COMMIT").unwrap();
        }),
        ("a locking read", &|c| {
            let _: Vec<String> = users::table
                .select(users::name)
                .for_update()
                .load(c)
                .unwrap();
        }),
    ];
    for (name, write) in writes {
        write(&mut conn);
        assert_ne!(
            conn.last_route().unwrap().reason,
            RouteReason::Replica,
            "{name}"
        );
    }
    drop(conn);
    assert_eq!(
        rows_changed(&m, Node::Replica(0)),
        0,
        "no write ran on the replica"
    );
    assert!(rows_changed(&m, Node::Primary) >= 7);
    assert_eq!(
        rows_read(&m, Node::Replica(0)),
        replica_read_before,
        "no read inside a transaction, locking or after a write ran on the replica"
    );

    // the escape hatch to the replica is read-only: a write through it fails loudly
    let mut conn = cluster.get("default").unwrap();
    m.wait_all_caught_up();
    let replica = poll(
        || {
            conn.replica().map(|_| ()).is_ok()
                && conn.last_route().unwrap().reason == RouteReason::Replica
        },
        |ok| *ok,
    );
    assert!(
        replica,
        "the escape hatch reaches the replica once it caught up"
    );
    let refused = diesel::sql_query("INSERT INTO users (name) VALUES ('never')")
        .execute(conn.replica().unwrap())
        .unwrap_err();
    assert!(
        refused.to_string().contains("READ ONLY") || refused.to_string().contains("read-only"),
        "{refused}"
    );
    assert_eq!(rows_changed(&m, Node::Replica(0)), 0);
}

#[test]
fn a_replica_frozen_before_anyone_connected_costs_a_read_at_most_the_connect_timeout() {
    use std::time::{Duration, Instant};
    let m = start("INSERT INTO users (name) VALUES ('ada');");
    // the server takes the TCP connection (the kernel does) and never greets
    m.freeze(Node::Replica(0));
    let cluster = cluster_on(
        &m,
        "[routing]\nconnect_timeout = \"500ms\"\n[consistency]\nmode = \"eventual\"",
    );
    let started = Instant::now();
    let got = count(&cluster, "ada");
    let took = started.elapsed();
    m.thaw(Node::Replica(0));
    assert_eq!(got, (1, RouteReason::Fallback), "read on the primary");
    assert!(
        took < Duration::from_millis(500 + 1500),
        "the first read took {took:?} (connect timeout 500 ms)"
    );
}

#[test]
fn causal_reads_of_another_thread_see_a_write_that_read_your_writes_does_not_promise() {
    use diesel_sharding::Consistency;
    let (m, cluster) = setup();
    m.set_delay(0, 2);
    add_user(&cluster, "ada");
    // another thread, read_your_writes: the write is not its own, the replica may serve it
    let c = cluster.clone();
    let ryw = std::thread::spawn(move || count(&c, "ada")).join().unwrap();
    assert_eq!(
        ryw,
        (0, RouteReason::Replica),
        "not promised, and not seen yet"
    );
    // causal: every write of the process that committed before the read
    let c = cluster.clone();
    let causal =
        std::thread::spawn(move || c.with_consistency(Consistency::Causal, || count(&c, "ada")))
            .join()
            .unwrap();
    assert_eq!(causal, (1, RouteReason::Behind));
    m.wait_all_caught_up();
    let c = cluster.clone();
    let later = std::thread::spawn(move || {
        poll(
            || c.with_consistency(Consistency::Causal, || count(&c, "ada")),
            |got| got.1 == RouteReason::Replica,
        )
    })
    .join()
    .unwrap();
    assert_eq!(
        later,
        (1, RouteReason::Replica),
        "once applied, from the replica"
    );
}

#[test]
fn with_autocommit_off_a_write_counts_from_its_commit_and_the_session_is_not_reused() {
    use diesel::connection::SimpleConnection;
    use diesel_sharding::Consistency;
    let (m, cluster) = setup();
    m.set_delay(0, 2);
    let causal_count = |name: &'static str| {
        let c = cluster.clone();
        std::thread::spawn(move || c.with_consistency(Consistency::Causal, || count(&c, name)))
            .join()
            .unwrap()
    };
    let mut conn = cluster.get("default").unwrap();
    conn.batch_execute("SET autocommit = 0").unwrap();
    diesel::insert_into(users::table)
        .values(users::name.eq("zed"))
        .execute(&mut conn)
        .unwrap();
    let own: i64 = users::table
        .filter(users::name.eq("zed"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(own, 1, "the session sees its own uncommitted row");
    assert_eq!(conn.last_route().unwrap().reason, RouteReason::Transaction);
    assert_eq!(
        causal_count("zed").0,
        0,
        "not committed: nobody else sees it"
    );
    conn.batch_execute("COMMIT").unwrap();
    assert_eq!(
        causal_count("zed"),
        (1, RouteReason::Behind),
        "committed before the read: causal sees it, on the primary while the replica waits"
    );
    // the next statement runs in the next transaction: still on the primary, still its own
    diesel::insert_into(users::table)
        .values(users::name.eq("zoe"))
        .execute(&mut conn)
        .unwrap();
    conn.batch_execute("COMMIT").unwrap();
    assert_eq!(causal_count("zoe"), (1, RouteReason::Behind));
    drop(conn);
    // a session with autocommit off is not handed to the next user: statements commit again
    add_user(&cluster, "yan");
    assert_eq!(
        causal_count("yan"),
        (1, RouteReason::Behind),
        "autocommitted"
    );
}

#[derive(diesel_sharding::ShardedModel, Debug)]
#[sharding(group = "users", key = user_id)]
#[allow(dead_code)]
struct Post {
    user_id: i64,
}

/// A cluster on `m` with `settings` first: the database `directory`, and two shards of the
/// group `users` (`users_0`, `users_1`) with their replica, all created on `m`.
fn sharded(m: &MariaCluster, settings: &str) -> Cluster<MysqlConnection> {
    m.create_database("directory");
    let mut toml = settings.to_owned();
    toml += &format!(
        "[databases.directory]\nurl = \"{}\"\n",
        m.url_of(Node::Primary, "directory")
    );
    for id in 0..2 {
        let db = format!("users_{id}");
        m.create_database(&db);
        toml += &format!(
            "[databases.{db}]\nurl = \"{}\"\nshard_group = \"users\"\nshard_id = {id}\n\
             [databases.{db}_replica]\nurl = \"{}\"\nprimary = \"{db}\"\n",
            m.url_of(Node::Primary, &db),
            m.url_of(Node::Replica(0), &db),
        );
    }
    Cluster::new(Settings::from_toml_str(&toml).unwrap()).unwrap()
}

#[test]
fn stored_shard_picks_live_on_the_storage_database_and_every_shard_is_reached() {
    use diesel::connection::SimpleConnection;
    use diesel::sql_types::BigInt;
    let m = MariaCluster::start(1);
    let cluster = sharded(
        &m,
        "[pinning]\nseconds = 0\n[shard_groups.users]\n\
         bucketing = \"round_robin\"\nstorage = \"directory\"\n",
    );
    let shards: Vec<i32> = (0..4i64)
        .map(|k| cluster.shard_for::<Post>(&k).unwrap().shard_id)
        .collect();
    let mut sorted = shards.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 0, 1, 1], "round robin over two shards");
    assert_eq!(
        m.sql(
            Node::Primary,
            "SELECT count(*) FROM directory.diesel_sharding_shard_storage"
        ),
        "4",
        "the picks are stored on the storage database"
    );
    let again: Vec<i32> = (0..4i64)
        .map(|k| cluster.shard_for::<Post>(&k).unwrap().shard_id)
        .collect();
    assert_eq!(shards, again, "a stored pick never changes");

    let created = cluster
        .on_all_shards("users", |conn| {
            conn.batch_execute(
                "CREATE TABLE IF NOT EXISTS probe_sharded (x INT); \
                 INSERT INTO probe_sharded VALUES (1)",
            )
        })
        .unwrap();
    assert!(created.iter().all(|r| r.result.is_ok()), "{created:?}");
    m.wait_all_caught_up();
    let counts = cluster
        .on_all_shards("users", |conn| {
            diesel::select(diesel::dsl::sql::<BigInt>(
                "(SELECT count(*) FROM probe_sharded)",
            ))
            .get_result::<i64>(conn)
        })
        .unwrap();
    assert_eq!(
        counts
            .iter()
            .map(|r| *r.result.as_ref().unwrap())
            .sum::<i64>(),
        2,
        "one row on each shard"
    );
}

#[test]
fn migrations_run_on_every_shard_primary_only_and_tickets_come_from_the_storage_primary() {
    use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");
    let m = MariaCluster::start(1);
    m.log_statements(Node::Replica(0));
    let cluster = sharded(&m, "[shard_groups.users]\nbucketing = \"jump\"\n");
    let report = cluster
        .run_pending_migrations_on_group("users", MIGRATIONS)
        .unwrap();
    assert_eq!(report.databases.len(), 2, "{report:?}");
    m.wait_all_caught_up();
    for db in ["users_0", "users_1"] {
        assert_eq!(
            m.sql(
                Node::Primary,
                &format!(
                    "SELECT COUNT(*) FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 'users'"
                )
            ),
            "1",
            "{db}"
        );
    }
    assert_eq!(
        m.sql(
            Node::Primary,
            "SELECT COUNT(*) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'directory' AND TABLE_NAME = 'users'"
        ),
        "0",
        "not on a database outside the group"
    );
    // a second run has nothing left to do
    let again = cluster
        .run_pending_migrations_on_group("users", MIGRATIONS)
        .unwrap();
    assert!(
        again.databases.iter().all(|(_, v)| v.is_empty()),
        "{again:?}"
    );
    // nothing of it ran on the replica: its copy came by replication
    assert_eq!(
        m.logged(Node::Replica(0), "app", "CREATE"),
        0,
        "a migration ran on the replica"
    );

    // tickets: unique and increasing, from the storage database's primary
    let tickets: Vec<i64> = (0..5)
        .map(|_| cluster.ticket_id("directory").unwrap())
        .collect();
    assert!(tickets.windows(2).all(|w| w[1] > w[0]), "{tickets:?}");
    let id = cluster
        .next_id(&cluster.shard("users", 1).unwrap())
        .unwrap();
    assert_eq!(cluster.shard_of_id("users", id).unwrap().shard_id, 1);
}
