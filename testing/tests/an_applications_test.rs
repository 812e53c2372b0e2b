//! How an application tests its own code against a lagging replica with this crate: the
//! code under test (`save_name`, `profile_page`) is ordinary Diesel on a routed pool; the test
//! starts a primary and a replica that applies every change late, and checks both what the
//! user sees and, on the servers, where each statement ran.
//!
//! A test that needs replicas cannot run inside a rolled-back test transaction (the replica
//! never sees uncommitted rows, and a transaction pins every read to the primary): give each
//! test a database of its own (`create_database`), or a cluster of its own, instead.

use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{Cluster, ConsistencyToken, Settings};
use diesel_sharding_testing::postgres::{Node, PgCluster};

mod schema {
    diesel::table! {
        profiles (id) {
            id -> Int8,
            name -> Text,
        }
    }
}
use schema::profiles;

// ---- the application's code ------------------------------------------------------------

fn save_name(cluster: &Cluster<PgConnection>, id: i64, name: &str) -> QueryResult<()> {
    let mut conn = cluster.get("default").expect("a connection");
    diesel::update(profiles::table.find(id))
        .set(profiles::name.eq(name))
        .execute(&mut conn)
        .map(drop)
}

fn profile_page(cluster: &Cluster<PgConnection>, id: i64) -> QueryResult<String> {
    let mut conn = cluster.get("default").expect("a connection");
    profiles::table
        .find(id)
        .select(profiles::name)
        .first(&mut conn)
}

// ---- its test ------------------------------------------------------------------------------

#[test]
fn the_profile_page_shows_the_name_just_saved_though_the_replica_lags() {
    let pg = PgCluster::start(1);
    pg.create_database("app");
    pg.execute(
        Node::Primary,
        "app",
        "CREATE TABLE profiles (id BIGINT PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO profiles VALUES (1, 'old name');",
    );
    pg.wait_all_caught_up();
    // every change reaches the replica a second late
    pg.set_apply_delay(0, Duration::from_secs(1));
    let cluster: Cluster<PgConnection> = Cluster::new(
        Settings::from_toml_str(&format!(
            "[databases.default]\nurl = \"{}\"\n\
             [databases.default_replica]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url("app"),
            pg.replica_url(0, "app"),
        ))
        .unwrap(),
    )
    .unwrap();
    pg.reset_all_statement_stats();

    // one request: save, then show
    let shown = cluster.with_token(&ConsistencyToken::default(), || {
        save_name(&cluster, 1, "Ada").unwrap();
        profile_page(&cluster, 1).unwrap()
    });
    assert_eq!(shown, "Ada");
    // the replica really lags (what a plain replica read would have shown)...
    assert_eq!(
        pg.query_i64(
            Node::Replica(0),
            "app",
            "SELECT count(*) FROM profiles WHERE name = 'old name'"
        ),
        1
    );
    // ...and the page was read on the primary, not on the replica
    let page = "SELECT \"profiles\".\"name\" FROM \"profiles\"%";
    assert_eq!(pg.statement_calls(Node::Primary, page), 1);
    assert_eq!(pg.statement_calls(Node::Replica(0), page), 0);
}
