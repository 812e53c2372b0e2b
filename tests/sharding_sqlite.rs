//! Sharding on SQLite: shards are files. Ports of django-sharding-library's router, bucketing,
//! storage and id scenarios, plus work over all shards and migrations on every primary.
#![cfg(feature = "sqlite")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_sharding::sharding::{Shard, ShardBy, Sharding};
use diesel_sharding::{Cluster, Error, Settings, ShardedModel};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

#[derive(ShardedModel, Debug)]
#[sharding(group = "users", key = user_id)]
struct Post {
    user_id: i64,
}

#[derive(ShardedModel, Debug)]
#[sharding(group = "users", stores_shard = shard)]
struct User {
    shard: Option<i32>,
}

#[derive(ShardedModel, Debug)]
#[sharding(database = "default")]
struct Country {
    code: String,
}

#[derive(ShardedModel, Debug)]
#[sharding(group = "orders", key = id)]
struct Order {
    id: i64,
}

#[derive(ShardedModel, Debug)]
#[sharding(database = "default_replica")]
struct OnAReplica {
    id: i64,
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `default` (+ a replica), and `shards` shards of group `users`, each with a replica handle.
    fn cluster(&self, shards: i32, group_options: &str) -> Cluster<SqliteConnection> {
        let mut toml = format!(
            "[pinning]\nseconds = 0\n[shard_groups.users]\n{group_options}\n\
             [databases.default]\nurl = \"{d}\"\n\
             [databases.default_replica]\nurl = \"{d}\"\nprimary = \"default\"\n",
            d = self.path("default.sqlite")
        );
        for id in 0..shards {
            toml += &format!(
                "[databases.users_{id}]\nurl = \"{f}\"\nshard_group = \"users\"\nshard_id = {id}\n\
                 [databases.users_{id}_replica]\nurl = \"{f}\"\nprimary = \"users_{id}\"\n",
                f = self.path(&format!("users_{id}.sqlite"))
            );
        }
        Cluster::new(Settings::from_toml_str(&toml).unwrap()).unwrap()
    }
}

fn ids(shards: &[Shard]) -> Vec<i32> {
    shards.iter().map(|s| s.shard_id).collect()
}

#[test]
fn the_derive_describes_each_model_shape() {
    assert_eq!(
        Post::SHARDING,
        Sharding::Group {
            group: "users",
            by: ShardBy::Key { field: "user_id" }
        }
    );
    assert!(matches!(
        User::SHARDING,
        Sharding::Group {
            by: ShardBy::StoredShard { field: "shard" },
            ..
        }
    ));
    assert_eq!(
        Country::SHARDING,
        Sharding::Database {
            database: "default"
        }
    );
    assert_eq!(Post { user_id: 7 }.shard_key(), Some(&7));
    let _ = Country { code: "NZ".into() }.code;
    let _ = OnAReplica { id: 1 }.id;
}

#[test]
fn mod_bucketing_is_a_pure_stable_function_of_the_key() {
    let f = Files::new();
    let cluster = f.cluster(3, "bucketing = \"mod\"");
    for key in [0i64, 1, 2, 3, 10, 11, 1_000_001] {
        let shard = cluster.shard_for::<Post>(&key).unwrap();
        assert_eq!(shard.shard_id as i64, key % 3, "key {key}");
        assert_eq!(shard.database, format!("users_{}", key % 3));
        assert_eq!(cluster.shard_for::<Post>(&key).unwrap(), shard);
    }
}

#[test]
fn jump_bucketing_moves_few_keys_when_a_shard_is_added() {
    let f = Files::new();
    let four = f.cluster(4, "bucketing = \"jump\"");
    let five = f.cluster(5, "bucketing = \"jump\"");
    let moved = (0..2000i64)
        .filter(|k| four.shard_for::<Post>(k).unwrap() != five.shard_for::<Post>(k).unwrap())
        .count();
    assert!((250..550).contains(&moved), "about a fifth move: {moved}");
    for k in 0..2000i64 {
        let (a, b) = (
            four.shard_for::<Post>(&k).unwrap(),
            five.shard_for::<Post>(&k).unwrap(),
        );
        assert!(
            a == b || b.shard_id == 4,
            "a key only moves to the new shard"
        );
    }
}

#[test]
fn round_robin_picks_are_stored_and_the_first_pick_wins() {
    let f = Files::new();
    let cluster = f.cluster(3, "bucketing = \"round_robin\"\nstorage = \"default\"");
    let first: Vec<Shard> = (0..6i64)
        .map(|k| cluster.shard_for::<Post>(&k).unwrap())
        .collect();
    let mut spread = ids(&first);
    spread.sort();
    assert_eq!(
        spread,
        vec![0, 0, 1, 1, 2, 2],
        "round-robin spreads new keys"
    );
    let again: Vec<Shard> = (0..6i64)
        .map(|k| cluster.shard_for::<Post>(&k).unwrap())
        .collect();
    assert_eq!(first, again, "stored picks never change");
    // another process (another cluster value) sees the same picks
    let other = f.cluster(3, "bucketing = \"round_robin\"\nstorage = \"default\"");
    let seen: Vec<Shard> = (0..6i64)
        .map(|k| other.shard_for::<Post>(&k).unwrap())
        .collect();
    assert_eq!(first, seen);
    // the storage table lives on the storage database only
    let mut d = SqliteConnection::establish(&f.path("default.sqlite")).unwrap();
    d.batch_execute("SELECT count(*) FROM diesel_sharding_shard_storage")
        .unwrap();
    let mut s = SqliteConnection::establish(&f.path("users_0.sqlite")).unwrap();
    assert!(s
        .batch_execute("SELECT count(*) FROM diesel_sharding_shard_storage")
        .is_err());
}

#[test]
fn a_non_pure_bucketing_without_storage_is_a_clear_error() {
    let f = Files::new();
    let cluster = f.cluster(2, "bucketing = \"random\"");
    let e = cluster.shard_for::<Post>(&1).unwrap_err();
    assert!(matches!(e, Error::NoShardStorage { .. }), "{e}");
    assert!(e.to_string().contains("storage"), "{e}");
}

#[test]
fn a_model_that_stores_its_shard_keeps_its_first_pick() {
    let f = Files::new();
    let cluster = f.cluster(3, "bucketing = \"round_robin\"");
    let mut user = User { shard: None };
    assert!(matches!(
        cluster.shard_of(&user),
        Err(Error::ShardNotAssigned { .. })
    ));
    let shard = cluster.assign_shard(&mut user).unwrap();
    assert_eq!(user.shard, Some(shard.shard_id));
    assert_eq!(
        cluster.assign_shard(&mut user).unwrap(),
        shard,
        "never changed"
    );
    assert_eq!(cluster.shard_of(&user).unwrap(), shard);
    let picks: Vec<i32> = (0..6)
        .map(|_| {
            cluster
                .assign_shard(&mut User { shard: None })
                .unwrap()
                .shard_id
        })
        .collect();
    let mut sorted = picks.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 0, 1, 1, 2, 2], "{picks:?}");
}

#[test]
fn models_on_a_named_database_and_unknown_places_are_reported() {
    let f = Files::new();
    let cluster = f.cluster(2, "bucketing = \"mod\"");
    assert_eq!(cluster.database_for::<Country>().unwrap(), "default");
    assert!(cluster.pool_for(&Country { code: "NZ".into() }).is_ok());
    let e = cluster.check::<Order>().unwrap_err();
    assert!(
        e.to_string().contains("orders") && e.to_string().contains("Order"),
        "{e}"
    );
    let e = cluster.shard_for::<Order>(&1).unwrap_err();
    assert!(matches!(e, Error::UnknownShardGroup { .. }), "{e}");
    let e = cluster.check::<OnAReplica>().unwrap_err();
    assert!(e.to_string().contains("default_replica"), "{e}");
    let e = cluster.database_for::<Post>().unwrap_err();
    assert!(e.to_string().contains("Post"), "{e}");
    let e = cluster.shard_for::<Country>(&()).unwrap_err();
    assert!(e.to_string().contains("Country"), "{e}");
}

#[test]
fn global_ids_encode_their_shard_so_rows_route_by_id_alone() {
    let f = Files::new();
    let cluster = f.cluster(3, "bucketing = \"mod\"");
    for shard in cluster.shards("users").unwrap() {
        let a = cluster.next_id(&shard).unwrap();
        let b = cluster.next_id(&shard).unwrap();
        assert!(b > a, "monotonic");
        assert_eq!(cluster.shard_of_id("users", a).unwrap(), shard);
    }
    assert!(matches!(
        cluster.shard("users", 7),
        Err(Error::UnknownShard { .. })
    ));
}

#[test]
fn on_all_shards_returns_one_entry_per_shard_in_id_order_keeping_each_error() {
    let f = Files::new();
    let cluster = f.cluster(5, "bucketing = \"mod\"");
    // only shards 1 and 3 get the table
    for id in [1, 3] {
        SqliteConnection::establish(&f.path(&format!("users_{id}.sqlite")))
            .unwrap()
            .batch_execute("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);")
            .unwrap();
    }
    let results = cluster
        .on_all_shards("users", |conn| {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT count(*) FROM t)",
            ))
            .get_result::<i64>(conn)
        })
        .unwrap();
    assert_eq!(
        results.iter().map(|r| r.shard.shard_id).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    for r in &results {
        match r.shard.shard_id {
            1 | 3 => assert_eq!(r.result.as_ref().unwrap(), &2),
            _ => {
                let e = r.result.as_ref().unwrap_err();
                assert!(e.to_string().contains(&r.shard.database), "{e}");
            }
        }
    }
}

#[test]
fn on_all_shards_bounds_its_threads_and_keeps_panics() {
    let f = Files::new();
    let cluster = f.cluster(6, "bucketing = \"mod\"");
    let running = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let results = cluster
        .on_all_shards_with("users", 2, |conn| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            running.fetch_sub(1, Ordering::SeqCst);
            if conn.database() == "users_4" {
                panic!("shard 4 blew up");
            }
            Ok(conn.database().to_owned())
        })
        .unwrap();
    assert!(most.load(Ordering::SeqCst) <= 2, "at most 2 at once");
    assert!(most.load(Ordering::SeqCst) >= 2, "and in parallel");
    assert!(matches!(
        results[4].result,
        Err(Error::ShardPanicked { .. })
    ));
    assert_eq!(results[5].result.as_ref().unwrap(), "users_5");
    assert!(matches!(
        cluster.on_all_shards("nope", |_| Ok(())),
        Err(Error::UnknownShardGroup { .. })
    ));
}

#[test]
fn migrations_run_on_every_shard_of_the_group_and_nowhere_else() {
    let f = Files::new();
    let cluster = f.cluster(3, "bucketing = \"mod\"");
    let report = cluster
        .run_pending_migrations_on_group("users", MIGRATIONS)
        .unwrap();
    assert_eq!(
        report
            .databases
            .iter()
            .map(|(d, v)| (d.as_str(), v.len()))
            .collect::<Vec<_>>(),
        vec![("users_0", 1), ("users_1", 1), ("users_2", 1)]
    );
    for id in 0..3 {
        SqliteConnection::establish(&f.path(&format!("users_{id}.sqlite")))
            .unwrap()
            .batch_execute("SELECT count(*) FROM users")
            .unwrap();
    }
    let mut d = SqliteConnection::establish(&f.path("default.sqlite")).unwrap();
    assert!(
        d.batch_execute("SELECT count(*) FROM users").is_err(),
        "not outside the group"
    );
    let again = cluster
        .run_pending_migrations_on_group("users", MIGRATIONS)
        .unwrap();
    assert!(
        again.databases.iter().all(|(_, v)| v.is_empty()),
        "each once"
    );
    let all = cluster
        .run_pending_migrations_on_primaries(MIGRATIONS)
        .unwrap();
    assert_eq!(
        all.databases.len(),
        4,
        "every primary once, no replica: {all:?}"
    );
    assert_eq!(
        all.databases[0],
        ("default".to_owned(), vec!["20261126000001".to_owned()])
    );
}

#[test]
fn the_first_migration_failure_names_its_database() {
    let f = Files::new();
    let cluster = f.cluster(3, "bucketing = \"mod\"");
    SqliteConnection::establish(&f.path("users_1.sqlite"))
        .unwrap()
        .batch_execute("CREATE TABLE users (x INTEGER)")
        .unwrap();
    let e = cluster
        .run_pending_migrations_on_group("users", MIGRATIONS)
        .unwrap_err();
    assert!(
        matches!(&e, Error::Migration { database, .. } if database == "users_1"),
        "{e}"
    );
    assert!(e.to_string().contains("users_1"), "{e}");
    let source = std::error::Error::source(&e).expect("the harness's error is kept");
    assert!(source.to_string().contains("users"), "{source}");
}

#[test]
fn remembering_a_shard_of_another_group_stores_nothing() {
    let f = Files::new();
    let toml = format!(
        "[shard_groups.users]\nbucketing = \"round_robin\"\nstorage = \"default\"\n\
         [shard_groups.orders]\nbucketing = \"mod\"\n\
         [databases.default]\nurl = \"{}\"\n\
         [databases.users_0]\nurl = \"{}\"\nshard_group = \"users\"\nshard_id = 0\n\
         [databases.users_1]\nurl = \"{}\"\nshard_group = \"users\"\nshard_id = 1\n\
         [databases.orders_0]\nurl = \"{}\"\nshard_group = \"orders\"\nshard_id = 0\n\
         [databases.orders_1]\nurl = \"{}\"\nshard_group = \"orders\"\nshard_id = 1\n",
        f.path("default.sqlite"),
        f.path("users_0.sqlite"),
        f.path("users_1.sqlite"),
        f.path("orders_0.sqlite"),
        f.path("orders_1.sqlite"),
    );
    let cluster =
        Cluster::<SqliteConnection>::new(Settings::from_toml_str(&toml).unwrap()).unwrap();
    let foreign = cluster.shard("orders", 1).unwrap();
    let e = cluster
        .remember_shard("users", &42i64, &foreign)
        .unwrap_err();
    assert!(matches!(e, Error::ShardOfAnotherGroup { .. }), "{e}");
    let mut missing = cluster.shard("users", 1).unwrap();
    missing.shard_id = 7;
    let e = cluster
        .remember_shard("users", &42i64, &missing)
        .unwrap_err();
    assert!(matches!(e, Error::UnknownShard { shard_id: 7, .. }), "{e}");
    // neither was stored: the key still gets a pick of its own, and keeps it
    let picked = cluster.shard_for::<Post>(&42i64).unwrap();
    assert_eq!(picked.group, "users");
    assert_eq!(cluster.shard_for::<Post>(&42i64).unwrap(), picked);
}

#[test]
fn only_ids_of_the_group_map_to_a_shard() {
    let f = Files::new();
    let cluster = f.cluster(3, "bucketing = \"mod\"");
    let shard = cluster.shard("users", 2).unwrap();
    let id = cluster.next_id(&shard).unwrap();
    assert_eq!(cluster.shard_of_id("users", id).unwrap(), shard);
    assert!(matches!(
        cluster.shard_of_id("users", -5),
        Err(Error::Id { .. })
    ));
    // a time far beyond now, with a real shard id
    let future = (1i64 << 62) | (2 << 10);
    assert!(matches!(
        cluster.shard_of_id("users", future),
        Err(Error::Id { .. })
    ));
    // random numbers: only those that could be ids of the group (a shard id it has, a time
    // not in the future) map to a shard; before the checks, 37 in 100,000 did
    let mut accepted = 0;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if cluster.shard_of_id("users", x as i64).is_ok() {
            accepted += 1;
        }
    }
    assert!(accepted <= 12, "{accepted} random numbers taken for ids");
}

#[test]
fn reads_on_a_shard_go_through_its_replica() {
    let f = Files::new();
    let cluster = f.cluster(2, "bucketing = \"mod\"");
    let shard = cluster.shard_for::<Post>(&1).unwrap();
    let mut conn = cluster.get_shard(&shard).unwrap();
    conn.batch_execute("CREATE TABLE t (x INTEGER)").unwrap(); // creates the shard's file
    let _: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(conn.last_route().unwrap().server, "users_1_replica");
}

#[test]
fn the_ticket_table_hands_out_increasing_unique_ids() {
    let f = Files::new();
    let cluster = f.cluster(2, "bucketing = \"mod\"");
    let ids: Vec<i64> = (0..20)
        .map(|_| cluster.ticket_id("default").unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "{ids:?}");
    let other = f.cluster(2, "bucketing = \"mod\"");
    assert!(
        other.ticket_id("default").unwrap() > ids[19],
        "shared by every process"
    );
}
