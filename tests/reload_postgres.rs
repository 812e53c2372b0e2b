//! `Cluster::reload` (PostgreSQL): replicas added and removed, pool sizes changed, without a
//! restart, with every position recorded before still honoured; settings that change what
//! cannot change at run time are refused whole. Reads are counted on the servers
//! (`pg_stat_statements`).
#![cfg(feature = "postgres")]

mod support;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, Consistency, ConsistencyToken, Error, RouteReason, Settings};
use support::pg_cluster::{Node, PgCluster};
use support::pg_users::*;

const DB: &str = "app";
const REPLAY_PROBE: &str = "%pg_last_wal_replay_lsn%";

/// A read in mode `eventual`, in a scope of its own (as a new request): nothing it must see.
fn eventual_count(cluster: &Cluster<PgConnection>, name: &str) -> (i64, RouteReason) {
    cluster.with_token(&ConsistencyToken::default(), || {
        cluster.with_consistency(Consistency::Eventual, || count(cluster, name))
    })
}

/// Settings with the given replicas (`(name, replica index)`), pool size and mode.
fn settings(pg: &PgCluster, replicas: &[(&str, usize)], pool_size: u32, mode: &str) -> Settings {
    let mut toml = format!(
        "[pinning]\nseconds = 0\n\
         [consistency]\nmode = \"{mode}\"\nmonitor_interval = \"50ms\"\n\
         [databases.default]\nurl = \"{}\"\npool_size = {pool_size}\n",
        pg.primary_url(DB),
    );
    for (name, i) in replicas {
        toml.push_str(&format!(
            "[databases.{name}]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.replica_url(*i, DB)
        ));
    }
    Settings::from_toml_str(&toml).unwrap()
}

fn server_names(cluster: &Cluster<PgConnection>) -> Vec<String> {
    cluster.servers().into_iter().map(|s| s.name).collect()
}

#[test]
fn a_reload_moves_reads_to_new_replicas_resizes_the_pool_and_keeps_every_position() {
    let pg = PgCluster::start(2);
    create_users(&pg, DB);
    let cluster: Cluster<PgConnection> =
        Cluster::new(settings(&pg, &[("r0", 0)], 4, "read_your_writes")).unwrap();
    eventually("a read on replica 0", || {
        eventual_count(&cluster, "seed") == (1, RouteReason::Replica)
    });
    let old_pool = cluster.pool("default").unwrap();
    assert_eq!(old_pool.max_size(), 4);

    // a write that replica 1 does not get yet, remembered in a token
    pg.pause_replay(1);
    let token = cluster.with_token(&ConsistencyToken::default(), || {
        let mut conn = cluster.get("default").unwrap();
        diesel::insert_into(users::table)
            .values(users::name.eq("written"))
            .execute(&mut conn)
            .unwrap();
        cluster.token()
    });

    // replica 0 out, replica 1 in, a bigger pool
    cluster
        .reload(settings(&pg, &[("r1", 1)], 6, "read_your_writes"))
        .unwrap();
    assert_eq!(server_names(&cluster), ["default", "r1"]);
    assert_eq!(cluster.pool("default").unwrap().max_size(), 6);
    pg.reset_all_statement_stats();

    // plain reads: none on the removed replica, and the new one takes them
    let mut on_replica = 0;
    for _ in 0..20 {
        let (n, reason) = eventual_count(&cluster, "seed");
        assert_eq!(n, 1);
        on_replica += i64::from(reason == RouteReason::Replica);
    }
    assert_eq!(
        pg.statement_calls(Node::Replica(0), COUNT),
        0,
        "the removed replica ran a routed read"
    );
    assert!(on_replica > 0, "no read went to the added replica");
    assert_eq!(pg.statement_calls(Node::Replica(1), COUNT), on_replica);
    // the monitor probes the added replica
    eventually("the monitor to probe replica 1", || {
        pg.statement_calls(Node::Replica(1), REPLAY_PROBE) > 0
    });

    // the token from before the reload still holds: the new replica has not replayed it
    for _ in 0..10 {
        let (n, reason) = cluster.with_token(&token, || count(&cluster, "written"));
        assert_eq!(n, 1, "a read under the token missed its write ({reason:?})");
    }
    pg.resume_replay(1);
    eventually(
        "the token's read to go to replica 1 once it replayed",
        || cluster.with_token(&token, || count(&cluster, "written")) == (1, RouteReason::Replica),
    );

    // a pool handle from before keeps its size and still routes with the new replicas
    let mut conn = old_pool.get().unwrap();
    let n: i64 = cluster.with_consistency(Consistency::Eventual, || {
        users::table.count().get_result(&mut conn).unwrap()
    });
    assert_eq!(n, 2);
    assert_eq!(old_pool.max_size(), 4);
    drop(conn);

    // stats keep the removed replica's count under its name
    let stats = cluster.stats();
    let db = &stats.databases["default"];
    assert!(db.replicas["r0"] > 0 && db.replicas["r1"] > 0, "{db:?}");
    assert_eq!(
        pg.statement_calls(Node::Replica(0), COUNT),
        0,
        "the removed replica ran a routed read"
    );
}

#[test]
fn a_reload_that_changes_what_cannot_change_is_refused_whole() {
    let pg = PgCluster::start(2);
    pg.create_database(DB);
    let cluster: Cluster<PgConnection> =
        Cluster::new(settings(&pg, &[("r0", 0)], 4, "read_your_writes")).unwrap();
    let refused = |settings: Settings, expected: &str| {
        let err = cluster.reload(settings).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        // nothing changed
        assert_eq!(server_names(&cluster), ["default", "r0"]);
        assert_eq!(cluster.pool("default").unwrap().max_size(), 4);
    };
    // with a new replica and pool size too: none of it applies
    refused(
        settings(&pg, &[("r0", 0), ("r1", 1)], 8, "causal"),
        "`consistency.mode` cannot change while the process runs",
    );
    let moved = Settings::from_toml_str(&format!(
        "[databases.default]\nurl = \"{}\"\n[databases.r1]\nurl = \"{}\"\nprimary = \"default\"\n",
        pg.replica_url(0, DB),
        pg.replica_url(1, DB),
    ))
    .unwrap();
    refused(moved, "the URL of primary `default`");
    let other = Settings::from_toml_str(&format!(
        "[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"\n\
         [pinning]\nseconds = 0\n\
         [databases.default]\nurl = \"{0}\"\n[databases.other]\nurl = \"{0}\"\n",
        pg.primary_url(DB),
    ))
    .unwrap();
    refused(other, "the set of primaries");
    // invalid settings: the same error `Cluster::new` gives
    let invalid = Settings::from_toml_str(&format!(
        "[databases.default]\nurl = \"{}\"\n[databases.r0]\nurl = \"{}\"\nprimary = \"nowhere\"\n",
        pg.primary_url(DB),
        pg.replica_url(0, DB),
    ))
    .unwrap();
    let err = cluster.reload(invalid).unwrap_err();
    assert!(matches!(err, Error::Settings(_)), "{err:?}");
    assert_eq!(server_names(&cluster), ["default", "r0"]);
    // and a good one still applies afterwards
    cluster
        .reload(settings(
            &pg,
            &[("r0", 0), ("r1", 1)],
            5,
            "read_your_writes",
        ))
        .unwrap();
    assert_eq!(server_names(&cluster), ["default", "r0", "r1"]);
    assert_eq!(cluster.pool("default").unwrap().max_size(), 5);
}
