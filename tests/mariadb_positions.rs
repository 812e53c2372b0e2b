//! GTID positions as real MariaDB servers report them: parsed into [`Position`], ordered
//! per domain, carried by tokens, against a primary and a replica that the test pauses.
//! (The MySQL/MariaDB backend itself is issue 11; this checks the position type it builds
//! on against the real strings.)

mod support;

use diesel_sharding::{ConsistencyToken, Position};
use support::mariadb_cluster::{MariaCluster, Node};

/// Runs `write` as `user` on the primary and returns the session's `@@last_gtid` after it:
/// the position a read-your-writes token carries.
fn write_as(m: &MariaCluster, user: &str, write: &str) -> Position {
    let text = m
        .try_sql_as(Node::Primary, user, &format!("{write}; SELECT @@last_gtid"))
        .unwrap();
    text.parse()
        .unwrap_or_else(|e| panic!("`{text}` from @@last_gtid: {e}"))
}

fn write(m: &MariaCluster, write: &str) -> Position {
    write_as(m, "app", write)
}

#[test]
fn gtid_positions_from_real_servers_parse_order_and_travel_in_tokens() {
    let m = MariaCluster::start(1);
    m.try_sql_as(Node::Primary, "app", "CREATE TABLE t (id INT PRIMARY KEY)")
        .unwrap();
    let first = write(&m, "INSERT INTO t VALUES (1)");
    m.wait_applied(0, &first.to_string());
    let applied = || -> Position {
        let text = m.applied(0);
        text.parse()
            .unwrap_or_else(|e| panic!("`{text}` from @@gtid_slave_pos: {e}"))
    };
    assert!(applied().covers(&first));

    // a paused replica has not applied what comes next, in either domain
    m.pause(0);
    let second = write(&m, "INSERT INTO t VALUES (2)");
    assert!(second > first, "{second} after {first}");
    // another replication domain (as a second primary of a multi-source setup would write)
    let other_domain = write_as(
        &m,
        "root",
        "SET SESSION gtid_domain_id = 7; INSERT INTO test.t VALUES (3)",
    );
    assert_eq!(
        second.partial_cmp(&other_domain),
        None,
        "{second} and {other_domain}: different domains do not compare"
    );
    let stale = applied();
    assert!(stale.covers(&first), "{stale}");
    assert!(!stale.covers(&second), "{stale} must not cover {second}");
    assert!(
        !stale.covers(&other_domain),
        "{stale} must not cover {other_domain}"
    );
    let primary: Position = m.primary_position().parse().unwrap();
    assert!(
        primary.covers(&second) && primary.covers(&other_domain),
        "{primary}"
    );

    // a token carries the join of both, and comes back the same
    let mut token = ConsistencyToken::new();
    token.require("default", second.clone());
    token.require("default", other_domain.clone());
    let text = token.to_string();
    assert!(text.starts_with("v2.default-m"), "{text}");
    let back: ConsistencyToken = text.parse().unwrap();
    let needed = back.position("default").unwrap();
    assert!(
        needed.covers(&second) && needed.covers(&other_domain),
        "{needed}"
    );
    assert!(!stale.covers(&needed));

    m.resume(0);
    m.wait_applied(0, &primary.to_string());
    assert!(applied().covers(&needed), "caught up: {}", applied());

    // the replica refuses a write of `app` (read_only), so a misrouted write fails loudly
    let refused = m
        .try_sql_as(Node::Replica(0), "app", "INSERT INTO t VALUES (4)")
        .unwrap_err();
    assert!(refused.contains("1290"), "{refused}");
}
