//! Deterministic CPU cost of the router: run N statements through a plain `SqliteConnection`
//! or a routed pooled connection, to be counted with callgrind (instructions, not seconds, so
//! the numbers do not move with the machine's load).
//!
//! ```sh
//! cargo bench --bench instructions --no-run        # prints the binary's path
//! for n in 3000 6000; do for side in plain routed; do for op in select insert; do
//!   BENCH_N=$n BENCH_SIDE=$side BENCH_OP=$op valgrind --tool=callgrind \
//!     --callgrind-out-file=/dev/null target/release/deps/instructions-* 2>&1 | grep refs
//! done; done; done
//! ```
//! Instructions per statement = (refs at 6000 - refs at 3000) / 3000, which cancels the setup.
//! `cargo bench` itself runs it once with a small N as a smoke test.

#![allow(missing_docs)]

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

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

macro_rules! run {
    ($conn:expr, $op:expr, $n:expr) => {
        for i in 0..$n {
            if $op == "select" {
                let _: String = items::table
                    .find((i % 1000 + 1) as i64)
                    .select(items::name)
                    .first($conn)
                    .unwrap();
            } else {
                diesel::insert_into(items::table)
                    .values((items::name.eq(format!("n{i}")), items::qty.eq(1)))
                    .execute($conn)
                    .unwrap();
            }
        }
    };
}

fn main() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let n: usize = env("BENCH_N", "100").parse().expect("BENCH_N is a number");
    let side = env("BENCH_SIDE", "routed");
    let op = env("BENCH_OP", "select");
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("b.sqlite").to_str().unwrap().to_owned();
    SqliteConnection::establish(&url)
        .unwrap()
        .batch_execute(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE items (id INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, qty INTEGER NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
             INSERT INTO items SELECT i, 'item' || i, i FROM n;",
        )
        .unwrap();
    if side == "routed" {
        let settings = diesel_sharding::Settings::from_toml_str(&format!(
            "[databases.default]\nurl = \"{url}\"\n[databases.r]\nurl = \"{url}\"\nprimary = \"default\"\n"
        ))
        .unwrap();
        let cluster = diesel_sharding::Cluster::<SqliteConnection>::new(settings).unwrap();
        let mut conn = cluster.get("default").unwrap();
        if op == "insert" {
            // a pragma is session state: it keeps the checkout on the primary, where the
            // inserts go anyway (and where the selects must not be measured)
            conn.batch_execute("PRAGMA synchronous = OFF").unwrap();
        }
        diesel_sharding::pin::unpin_this_thread();
        run!(&mut conn, op, n);
    } else {
        let mut conn = SqliteConnection::establish(&url).unwrap();
        if op == "insert" {
            conn.batch_execute("PRAGMA synchronous = OFF").unwrap();
        }
        run!(&mut conn, op, n);
    }
}
