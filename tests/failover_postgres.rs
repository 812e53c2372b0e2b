//! A primary that fails over (PostgreSQL): the cluster reconnects to whatever the primary's
//! address reaches, and no position of the old timeline lets a replica that stayed on it
//! (with a history the new primary does not have) take a read, while a replica that follows
//! the new timeline takes reads again. Checked on the servers (`pg_stat_statements`).
#![cfg(feature = "postgres")]

mod support;

use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, Consistency, ConsistencyToken, RouteReason, Settings};
use support::pg_cluster::{Node, PgCluster};
use support::pg_users::*;

const DB: &str = "app";
/// Rows only the replica left on the old timeline has.
const LOST: i64 = 20_000;

#[test]
fn after_a_failover_no_read_sees_the_old_timeline_and_a_following_replica_reads_again() {
    let mut pg = PgCluster::start(3);
    create_users(&pg, DB);
    // replica 0 becomes the new primary; the router reads replicas 1 and 2
    let cluster: Cluster<PgConnection> = Cluster::new(
        Settings::from_toml_str(&format!(
            "[pinning]\nseconds = 0\n\
             [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"\n\
             [databases.default]\nurl = \"{}\"\n\
             [databases.r1]\nurl = \"{}\"\nprimary = \"default\"\n\
             [databases.r2]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(1, DB),
            pg.replica_url(2, DB),
        ))
        .unwrap(),
    )
    .unwrap();
    eventually("a replica read", || {
        count(&cluster, "seed") == (1, RouteReason::Replica)
    });

    // replicas 2 and then 0 stop; a write only replica 1 gets (the failover will lose it)
    pg.kill_replica(2);
    pg.kill_replica(0);
    pg.execute(
        Node::Primary,
        DB,
        &format!("INSERT INTO users (name) SELECT 'lost' FROM generate_series(1, {LOST})"),
    );
    pg.wait_caught_up(1);
    eventually("replica 1 to show the write", || {
        count(&cluster, "lost") == (LOST, RouteReason::Replica)
    });

    // the primary crashes; replica 0 (without the write) is promoted at its address
    pg.kill_node(Node::Primary);
    pg.start_replica_accepting_connections(0);
    pg.fail_over(0);
    // replica 2 stopped before replica 0: it follows the new timeline; replica 1 went past
    // the fork and stays on the old one
    pg.start_replica(2);
    pg.reset_statement_stats(Node::Replica(1));

    // the first write on the new primary: a history that starts below what replica 1 has
    // replayed, so that its cached position would cover it
    let mut reads_on_r2 = 0;
    for i in 0..20 {
        let name = format!("after{i}");
        let (seen, reason) = cluster.with_token(&ConsistencyToken::default(), || {
            let mut conn = cluster.get("default").unwrap();
            diesel::insert_into(users::table)
                .values(users::name.eq(&name))
                .execute(&mut conn)
                .unwrap();
            count(&cluster, &name)
        });
        assert_eq!(
            seen, 1,
            "write {i}: the writer's read missed its row ({reason:?})"
        );
        let (lost, reason) =
            cluster.with_consistency(Consistency::Eventual, || count(&cluster, "lost"));
        assert_eq!(lost, 0, "read {i} saw the old timeline's rows ({reason:?})");
        if reason == RouteReason::Replica {
            reads_on_r2 += 1;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // the replica that follows the new timeline takes reads again
    eventually("replica 2 to take reads", || {
        count(&cluster, "seed") == (1, RouteReason::Replica)
    });
    reads_on_r2 += 1;
    assert_eq!(
        pg.statement_calls(Node::Replica(1), COUNT),
        0,
        "the replica on the old timeline ran a routed read"
    );
    assert!(
        pg.statement_calls(Node::Replica(2), COUNT) >= reads_on_r2,
        "the reads routed to a replica did not run on replica 2"
    );
}
