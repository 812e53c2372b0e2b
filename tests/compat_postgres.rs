//! Diesel's own PostgreSQL API through the routed pooled connection, called as Diesel's docs
//! show it, against a real primary and streaming replica. Each test checks the result and,
//! in the servers' `pg_stat_statements`, the server that ran it.
#![cfg(feature = "postgres")]

mod support;

use std::io::Read;
use std::time::Duration;

use diesel::connection::LoadConnection;
use diesel::pg::{CopyFormat, Pg, PgConnection, PgMetadataLookup};
use diesel::prelude::*;
use diesel_sharding::{Cluster, PooledConnection, RouteReason, RoutedPgConnection, Settings};
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "app";
const PRIMARY: Node = Node::Primary;
const REPLICA: Node = Node::Replica(0);

mod schema {
    diesel::table! {
        items (id) {
            id -> Int4,
            name -> Text,
            qty -> Int4,
        }
    }
}
use schema::items;

#[derive(Insertable)]
#[diesel(table_name = items)]
#[diesel(treat_none_as_default_value = false)]
struct NewItem {
    name: String,
    qty: i32,
}

#[derive(Queryable, Selectable, Debug, PartialEq)]
#[diesel(table_name = items)]
struct Item {
    id: i32,
    name: String,
    qty: i32,
}

/// The count query as pg_stat_statements stores it.
const COUNT: &str = "SELECT COUNT(*) FROM \"items\"";

struct Setup {
    pg: PgCluster,
    cluster: Cluster<PgConnection>,
}

fn setup(settings: &str) -> Setup {
    let pg = PgCluster::start(1);
    pg.create_database(DB);
    pg.execute(
        PRIMARY,
        DB,
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, qty int NOT NULL);\
         INSERT INTO items (name, qty) VALUES ('seed', 1);\
         CREATE TYPE mood AS ENUM ('happy', 'sad');",
    );
    pg.wait_all_caught_up();
    let cluster = Cluster::new(
        Settings::from_toml_str(&format!(
            "{settings}\n[databases.default]\nurl = \"{}\"\n[databases.r0]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(0, DB)
        ))
        .unwrap(),
    )
    .unwrap();
    pg.reset_all_statement_stats();
    Setup { pg, cluster }
}

impl Setup {
    fn conn(&self) -> PooledConnection<PgConnection> {
        self.cluster.get("default").unwrap()
    }

    fn calls(&self, node: Node, pattern: &str) -> i64 {
        self.pg.statement_calls(node, pattern)
    }
}

fn count(conn: &mut impl LoadConnection<Backend = Pg>) -> i64 {
    items::table.count().get_result(conn).unwrap()
}

fn new_items(names: &[&str]) -> Vec<NewItem> {
    names
        .iter()
        .map(|n| NewItem {
            name: n.to_string(),
            qty: 2,
        })
        .collect()
}

// -- COPY ------------------------------------------------------------------------------------

#[test]
fn copy_from_insertable_runs_on_the_primary_and_the_writer_reads_it_back() {
    let s = setup("");
    s.pg.pause_replay(0);
    let mut conn = s.conn();
    let n = diesel::copy_from(items::table)
        .from_insertable(&new_items(&["a", "b", "c"]))
        .execute(&mut *conn)
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(s.calls(PRIMARY, "COPY%"), 1);
    assert_eq!(s.calls(REPLICA, "COPY%"), 0);
    // a write: read-your-writes keeps the next read off the paused replica
    assert_eq!(count(&mut conn), 4);
    assert_eq!(conn.last_route().unwrap().reason, RouteReason::Behind);
    assert_eq!(s.calls(REPLICA, COUNT), 0);
}

#[test]
fn copy_from_raw_csv_data_runs_on_the_primary() {
    let s = setup("");
    let mut conn = s.conn();
    let n = diesel::copy_from(items::table)
        .from_raw_data((items::name, items::qty), |copy| {
            writeln!(copy, "raw one,5").unwrap();
            writeln!(copy, "raw two,6").unwrap();
            diesel::QueryResult::Ok(())
        })
        .with_format(CopyFormat::Csv)
        .execute(&mut *conn)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        s.pg.query_i64(
            PRIMARY,
            DB,
            "SELECT sum(qty) FROM items WHERE name LIKE 'raw%'"
        ),
        11
    );
    assert_eq!(s.calls(REPLICA, "COPY%"), 0);
}

#[test]
fn copy_from_inside_a_transaction_is_part_of_it() {
    let s = setup("");
    let mut conn = s.conn();
    let rolled_back = conn.transaction(|c| {
        diesel::copy_from(items::table)
            .from_insertable(&new_items(&["never"]))
            .execute(&mut **c)?;
        assert_eq!(count(c), 2, "the transaction sees its own copy");
        Err::<(), _>(diesel::result::Error::RollbackTransaction)
    });
    assert!(rolled_back.is_err());
    assert_eq!(
        s.pg.query_i64(PRIMARY, DB, "SELECT count(*) FROM items"),
        1,
        "rolled back with the transaction"
    );
}

#[test]
fn copy_to_a_struct_runs_on_a_replica_through_replica_and_raw_on_the_primary() {
    let s = setup("[pinning]\nseconds = 0");
    let mut conn = s.conn();
    let rows: Vec<Item> = diesel::copy_to(items::table)
        .load::<Item, _>(conn.replica().unwrap())
        .unwrap()
        .collect::<QueryResult<_>>()
        .unwrap();
    assert_eq!(
        rows,
        [Item {
            id: 1,
            name: "seed".into(),
            qty: 1
        }]
    );
    assert_eq!(s.calls(REPLICA, "COPY%"), 1);
    assert_eq!(s.calls(PRIMARY, "COPY%"), 0);

    let mut csv = String::new();
    diesel::copy_to(items::table)
        .with_format(CopyFormat::Csv)
        .load_raw(conn.primary().unwrap())
        .unwrap()
        .read_to_string(&mut csv)
        .unwrap();
    assert_eq!(csv, "1,seed,1\n");
    assert_eq!(s.calls(PRIMARY, "COPY%"), 1);
}

// -- build_transaction -------------------------------------------------------------------------

#[test]
fn a_read_only_built_transaction_runs_on_a_replica_with_its_savepoints() {
    let s = setup("[pinning]\nseconds = 0");
    let mut conn = s.conn();
    let (a, b) = conn
        .build_transaction()
        .read_only()
        .repeatable_read()
        .run(|c| {
            let a = count(c);
            let b = c.transaction(|c| QueryResult::Ok(count(c)))?;
            QueryResult::Ok((a, b))
        })
        .unwrap();
    assert_eq!((a, b), (1, 1));
    assert_eq!(s.calls(REPLICA, COUNT), 2);
    assert_eq!(s.calls(PRIMARY, COUNT), 0);
    assert_eq!(
        s.calls(
            REPLICA,
            "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
        ),
        1
    );
    // and afterwards the connection is as before: a plain read, a write, a transaction
    assert_eq!(count(&mut conn), 1);
    assert_eq!(conn.last_route().unwrap().reason, RouteReason::Replica);
    diesel::insert_into(items::table)
        .values(&new_items(&["after"])[0])
        .execute(&mut conn)
        .unwrap();
    conn.transaction(|c| {
        assert_eq!(count(c), 2);
        QueryResult::Ok(())
    })
    .unwrap();
}

#[test]
fn a_write_in_a_read_only_built_transaction_fails_loudly() {
    let s = setup("[pinning]\nseconds = 0");
    let mut conn = s.conn();
    let err = conn
        .build_transaction()
        .read_only()
        .run(|c| {
            diesel::insert_into(items::table)
                .values(&new_items(&["nope"])[0])
                .execute(c)
        })
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    assert_eq!(s.pg.query_i64(PRIMARY, DB, "SELECT count(*) FROM items"), 1);
    // the connection is usable afterwards
    assert_eq!(count(&mut conn), 1);
}

#[test]
fn a_read_only_built_transaction_after_a_write_runs_on_the_primary_and_sees_it() {
    let s = setup("");
    s.pg.pause_replay(0);
    let mut conn = s.conn();
    diesel::insert_into(items::table)
        .values(&new_items(&["mine"])[0])
        .execute(&mut conn)
        .unwrap();
    let n = conn
        .build_transaction()
        .read_only()
        .run(|c| QueryResult::Ok(count(c)))
        .unwrap();
    assert_eq!(n, 2, "read your writes");
    assert_eq!(s.calls(REPLICA, COUNT), 0);
    assert_eq!(s.calls(PRIMARY, COUNT), 1);
}

#[test]
fn serializable_and_read_write_built_transactions_run_on_the_primary() {
    let s = setup("[pinning]\nseconds = 0");
    let mut conn = s.conn();
    // a hot standby refuses serializable transactions: the primary runs them
    let n = conn
        .build_transaction()
        .serializable()
        .read_only()
        .deferrable()
        .run(|c| QueryResult::Ok(count(c)))
        .unwrap();
    assert_eq!(n, 1);
    conn.build_transaction()
        .read_committed()
        .read_write()
        .run(|c| {
            diesel::insert_into(items::table)
                .values(&new_items(&["rw"])[0])
                .execute(c)?;
            assert_eq!(count(c), 2);
            QueryResult::Ok(())
        })
        .unwrap();
    assert_eq!(s.calls(REPLICA, COUNT), 0);
    assert_eq!(s.calls(PRIMARY, COUNT), 2);
    assert_eq!(s.pg.query_i64(PRIMARY, DB, "SELECT count(*) FROM items"), 2);
}

// -- custom types --------------------------------------------------------------------------------

#[test]
fn custom_type_lookup_works_through_the_routed_connection() {
    let s = setup("[pinning]\nseconds = 0");
    let mut conn = s.conn();
    let found = PgMetadataLookup::lookup_type(&mut *conn, "mood", None);
    let expected =
        s.pg.query_i64(PRIMARY, DB, "SELECT 'mood'::regtype::oid::bigint");
    assert_eq!(i64::from(found.oid().unwrap()), expected);
    // looked up once, then cached
    let again = PgMetadataLookup::lookup_type(&mut *conn, "mood", None);
    assert_eq!(again.oid().unwrap(), found.oid().unwrap());
    assert_eq!(
        s.calls(PRIMARY, "%pg_type%"),
        0,
        "a catalog read: the replica"
    );
    assert!(s.calls(REPLICA, "%pg_type%") >= 1);
}

// -- application code that names the connection type ----------------------------------------------

/// The signature an application moves to: the routed connection by name ...
fn count_by_name(conn: &mut RoutedPgConnection) -> i64 {
    count(conn)
}

/// ... or generic over Diesel's traits, which plain and routed connections both satisfy.
fn count_generic<C>(conn: &mut C) -> i64
where
    C: Connection<Backend = Pg> + LoadConnection,
{
    count(conn)
}

#[test]
fn application_functions_take_the_routed_connection_by_alias_or_generically() {
    let s = setup("[pinning]\nseconds = 0");
    let mut conn = s.conn();
    assert_eq!(
        count_by_name(&mut conn),
        1,
        "&mut pooled coerces to the alias"
    );
    assert_eq!(count_generic(&mut conn), 1);
    assert_eq!(count_generic(&mut *conn), 1);
    let mut plain = PgConnection::establish(&s.pg.primary_url(DB)).unwrap();
    assert_eq!(count_generic(&mut plain), 1);
    assert_eq!(s.calls(REPLICA, COUNT), 3);
    std::thread::sleep(Duration::from_millis(1));
}
