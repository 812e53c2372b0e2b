//! Sharding on PostgreSQL: shards are databases on a test cluster with a streaming replica.
//! Where statements ran is checked in `pg_stat_statements`.
#![cfg(feature = "postgres")]

mod support;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_sharding::{pin, Cluster, Settings, ShardedModel};
use support::pg_cluster::{Node, PgCluster};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

#[derive(ShardedModel, Debug)]
#[sharding(group = "users", key = user_id)]
struct Post {
    user_id: i64,
}

fn setup(shards: usize, group: &str) -> (PgCluster, Cluster<PgConnection>) {
    let pg = PgCluster::start(1);
    pg.create_database("directory");
    let mut toml = format!(
        "[pinning]\nseconds = 0\n[shard_groups.users]\n{group}\n\
         [databases.directory]\nurl = \"{}\"\n",
        pg.primary_url("directory")
    );
    for id in 0..shards {
        let db = format!("users_{id}");
        pg.create_database(&db);
        toml += &format!(
            "[databases.{db}]\nurl = \"{}\"\nshard_group = \"users\"\nshard_id = {id}\n\
             [databases.{db}_replica]\nurl = \"{}\"\nprimary = \"{db}\"\n",
            pg.primary_url(&db),
            pg.replica_url(0, &db)
        );
    }
    let cluster = Cluster::new(Settings::from_toml_str(&toml).unwrap()).unwrap();
    (pg, cluster)
}

#[test]
fn migrations_run_on_every_shard_primary_and_not_on_other_databases() {
    let (pg, cluster) = setup(3, "bucketing = \"jump\"");
    pg.reset_all_statement_stats();
    let report = cluster
        .run_pending_migrations_on_group("users", MIGRATIONS)
        .unwrap();
    assert_eq!(report.databases.len(), 3);
    assert!(
        report.databases.iter().all(|(_, v)| v.len() == 2),
        "{report:?}"
    );
    pg.wait_all_caught_up();
    for id in 0..3 {
        let n = pg.query_i64(
            Node::Primary,
            &format!("users_{id}"),
            "SELECT count(*) FROM pg_tables WHERE tablename = 'posts'",
        );
        assert_eq!(n, 1);
    }
    let n = pg.query_i64(
        Node::Primary,
        "directory",
        "SELECT count(*) FROM pg_tables WHERE tablename = 'posts'",
    );
    assert_eq!(n, 0, "not outside the group");
    assert_eq!(
        pg.statement_calls(Node::Replica(0), "%__diesel_schema_migrations%"),
        0,
        "never on the replica"
    );
    assert!(pg.statement_calls(Node::Primary, "%__diesel_schema_migrations%") >= 3);
}

#[test]
fn next_sharded_id_runs_on_each_shard_with_the_same_layout_as_the_generator() {
    let (_pg, cluster) = setup(3, "bucketing = \"mod\"\nepoch = \"2020-01-01T00:00:00Z\"");
    cluster.install_id_function("users").unwrap();
    cluster.install_id_function("users").unwrap(); // idempotent
    for shard in cluster.shards("users").unwrap() {
        let mut conn = cluster.get_shard(&shard).unwrap();
        let id: i64 = diesel::select(diesel::dsl::sql::<BigInt>("next_sharded_id()"))
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(cluster.shard_of_id("users", id).unwrap(), shard, "id {id}");
        let local = cluster.next_id(&shard).unwrap();
        assert!(
            ((local >> 23) - (id >> 23)).abs() < 5_000,
            "same epoch and clock: {local} vs {id}"
        );
    }
}

#[test]
fn stored_picks_live_on_the_storage_database_and_rows_are_read_through_the_shard_replica() {
    let (pg, cluster) = setup(2, "bucketing = \"round_robin\"\nstorage = \"directory\"");
    let shards: Vec<i32> = (0..4i64)
        .map(|k| cluster.shard_for::<Post>(&k).unwrap().shard_id)
        .collect();
    let mut sorted = shards.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 0, 1, 1]);
    let stored = pg.query_i64(
        Node::Primary,
        "directory",
        "SELECT count(*) FROM diesel_sharding_shard_storage",
    );
    assert_eq!(stored, 4);
    // the same picks from a fresh cluster value
    let again: Vec<i32> = (0..4i64)
        .map(|k| cluster.shard_for::<Post>(&k).unwrap().shard_id)
        .collect();
    assert_eq!(shards, again);

    let results = cluster
        .on_all_shards("users", |conn| {
            conn.batch_execute("CREATE TABLE IF NOT EXISTS probe_sharded (x int); INSERT INTO probe_sharded VALUES (1)")
        })
        .unwrap();
    assert!(results.iter().all(|r| r.result.is_ok()));
    pg.wait_all_caught_up();
    pg.reset_all_statement_stats();
    pin::unpin_this_thread();
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
        2
    );
    assert_eq!(
        pg.statement_calls(Node::Replica(0), "%probe_sharded%"),
        2,
        "both read on the replica"
    );
    assert_eq!(pg.statement_calls(Node::Primary, "%FROM probe_sharded%"), 0);
}

#[test]
fn the_ticket_sequence_hands_out_increasing_ids() {
    let (_pg, cluster) = setup(1, "bucketing = \"mod\"");
    let a = cluster.ticket_id("directory").unwrap();
    let b = cluster.ticket_id("directory").unwrap();
    assert!(b > a);
}

/// The sharding API's async connections (feature `async`): a row's shard, every shard at
/// once, a deadline per shard.
#[cfg(feature = "async")]
#[test]
fn async_work_on_every_shard_and_on_a_rows_shard_runs_there() {
    let (pg, cluster) = setup(3, "bucketing = \"mod\"");
    for id in 0..3 {
        pg.execute(
            Node::Primary,
            &format!("users_{id}"),
            &format!("CREATE TABLE marks (shard INT NOT NULL); INSERT INTO marks VALUES ({id});"),
        );
    }
    pg.wait_all_caught_up();
    pg.reset_all_statement_stats();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (each, of_row, timed) = rt.block_on(diesel_sharding::task::scope(async {
        let mark = "SELECT shard::bigint AS v FROM marks";
        let each = cluster
            .on_all_shards_async("users", async |conn| {
                diesel_async::RunQueryDsl::get_result::<i64>(diesel::dsl::sql::<BigInt>(mark), conn)
                    .await
            })
            .await
            .unwrap();
        // user 4 lives on shard 4 mod 3 = 1
        let mut conn = cluster.get_async_for(&Post { user_id: 4 }).await.unwrap();
        let of_row: i64 =
            diesel_async::RunQueryDsl::get_result(diesel::dsl::sql::<BigInt>(mark), &mut conn)
                .await
                .unwrap();
        // shard 2 sleeps past the deadline; the others answer at once
        let timed = cluster
            .on_all_shards_async_within(
                "users",
                std::time::Duration::from_millis(300),
                async |conn| {
                    diesel_async::RunQueryDsl::get_result::<i64>(
                        diesel::dsl::sql::<BigInt>(
                            "SELECT shard::bigint AS v FROM marks, \
                             LATERAL (SELECT pg_sleep(CASE WHEN shard = 2 THEN 2 ELSE 0 END)) s",
                        ),
                        conn,
                    )
                    .await
                },
            )
            .await
            .unwrap();
        (each, of_row, timed)
    }));
    let got: Vec<i64> = each.into_iter().map(|r| r.result.unwrap()).collect();
    assert_eq!(
        got,
        vec![0, 1, 2],
        "each shard answered from its own database"
    );
    assert_eq!(of_row, 1);
    let timed: Vec<String> = timed
        .into_iter()
        .map(|r| match r.result {
            Ok(v) => v.to_string(),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(timed[..2], ["0".to_owned(), "1".to_owned()]);
    assert!(timed[2].contains("users_2"), "{timed:?}");
    // the reads ran on the shards' replica, not their primaries
    assert_eq!(
        pg.statement_calls(Node::Primary, "SELECT shard::bigint%"),
        0
    );
    assert!(pg.statement_calls(Node::Replica(0), "SELECT shard::bigint AS v FROM marks") >= 4);
}
