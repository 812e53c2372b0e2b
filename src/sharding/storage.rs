//! Shard storage: the shard picked for each key, for bucketings that are not a pure function
//! of the key (`round_robin`, `random`, `saved_mod`). django-sharding-library's
//! `ShardStorageModel`, as one table on an unsharded database. The first pick wins and is never
//! changed: concurrent first picks race on the primary key, and the loser reads the winner's.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel::sql_types::{Integer, Text};

/// The storage table.
pub(crate) const TABLE: &str = "diesel_sharding_shard_storage";

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Integer)]
    shard_id: i32,
}

/// Shard storage on one physical connection (implemented for the supported backends; the
/// statements run on the storage database's primary). A supertrait of the sealed
/// [`RoutedBackend`](crate::RoutedBackend), nameable only inside the crate.
#[allow(unreachable_pub)]
pub trait ShardStorage {
    /// Creates the table if it does not exist.
    fn ensure_storage(&mut self) -> QueryResult<()>;
    /// The stored shard of `key` in `group`, if any.
    fn stored(&mut self, group: &str, key: &str) -> QueryResult<Option<i32>>;
    /// Stores `shard_id` for `key` unless a pick is stored already; returns the stored pick.
    fn store_first(&mut self, group: &str, key: &str, shard_id: i32) -> QueryResult<i32>;
    /// The next id of the ticket table (Flickr's ticket servers): unique on this database.
    fn next_ticket(&mut self) -> QueryResult<i64>;
}

/// The ticket table (a sequence on PostgreSQL).
pub(crate) const TICKETS: &str = "diesel_sharding_tickets";

#[derive(QueryableByName)]
struct Ticket {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// Shard storage for a backend: its bind placeholders, the type of the key columns, how an
/// insert skips a row already stored (`INSERT .. ON CONFLICT DO NOTHING`, MySQL's `INSERT
/// IGNORE`), and its ticket function.
macro_rules! shard_storage {
    (
        $conn:ty,
        binds: ($p1:literal, $p2:literal, $p3:literal),
        key_type: $key:literal,
        insert: $insert:literal,
        skip_stored: $skip:literal,
        ticket: $ticket:ident
    ) => {
        impl ShardStorage for $conn {
            fn ensure_storage(&mut self) -> QueryResult<()> {
                self.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {TABLE} (\
                     shard_group {key} NOT NULL, shard_key {key} NOT NULL, \
                     shard_id INTEGER NOT NULL, PRIMARY KEY (shard_group, shard_key))",
                    key = $key
                ))
            }

            fn stored(&mut self, group: &str, key: &str) -> QueryResult<Option<i32>> {
                let rows: Vec<Row> = diesel::sql_query(format!(
                    "SELECT shard_id FROM {TABLE} WHERE shard_group = {} AND shard_key = {}",
                    $p1, $p2
                ))
                .bind::<Text, _>(group)
                .bind::<Text, _>(key)
                .load(self)?;
                Ok(rows.first().map(|r| r.shard_id))
            }

            fn store_first(&mut self, group: &str, key: &str, shard_id: i32) -> QueryResult<i32> {
                diesel::sql_query(format!(
                    "{} {TABLE} (shard_group, shard_key, shard_id) VALUES ({}, {}, {}){}",
                    $insert, $p1, $p2, $p3, $skip
                ))
                .bind::<Text, _>(group)
                .bind::<Text, _>(key)
                .bind::<Integer, _>(shard_id)
                .execute(self)?;
                self.stored(group, key)?
                    .ok_or(diesel::result::Error::NotFound)
            }

            fn next_ticket(&mut self) -> QueryResult<i64> {
                $ticket(self)
            }
        }
    };
}

#[cfg(feature = "postgres")]
shard_storage!(
    diesel::pg::PgConnection,
    binds: ("$1", "$2", "$3"),
    key_type: "TEXT",
    insert: "INSERT INTO",
    skip_stored: " ON CONFLICT (shard_group, shard_key) DO NOTHING",
    ticket: next_ticket_pg
);
#[cfg(feature = "sqlite")]
shard_storage!(
    diesel::sqlite::SqliteConnection,
    binds: ("?", "?", "?"),
    key_type: "TEXT",
    insert: "INSERT INTO",
    skip_stored: " ON CONFLICT (shard_group, shard_key) DO NOTHING",
    ticket: next_ticket_sqlite
);
// MySQL indexes no TEXT without a length: VARCHAR keys
#[cfg(feature = "mysql")]
shard_storage!(
    diesel::mysql::MysqlConnection,
    binds: ("?", "?", "?"),
    key_type: "VARCHAR(255)",
    insert: "INSERT IGNORE INTO",
    skip_stored: "",
    ticket: next_ticket_mysql
);

#[cfg(feature = "postgres")]
fn next_ticket_pg(conn: &mut diesel::pg::PgConnection) -> QueryResult<i64> {
    conn.batch_execute(&format!("CREATE SEQUENCE IF NOT EXISTS {TICKETS}"))?;
    let t: Ticket =
        diesel::sql_query(format!("SELECT nextval('{TICKETS}') AS id")).get_result(conn)?;
    Ok(t.id)
}

#[cfg(feature = "sqlite")]
fn next_ticket_sqlite(conn: &mut diesel::sqlite::SqliteConnection) -> QueryResult<i64> {
    // REPLACE keeps one row; AUTOINCREMENT never hands out an id twice
    conn.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {TICKETS} (id INTEGER PRIMARY KEY AUTOINCREMENT, stub TEXT NOT NULL UNIQUE)"
    ))?;
    conn.immediate_transaction(|c| {
        c.batch_execute(&format!("REPLACE INTO {TICKETS} (stub) VALUES ('a')"))?;
        let t: Ticket = diesel::sql_query("SELECT last_insert_rowid() AS id").get_result(c)?;
        Ok(t.id)
    })
}

#[cfg(feature = "mysql")]
fn next_ticket_mysql(conn: &mut diesel::mysql::MysqlConnection) -> QueryResult<i64> {
    // Flickr's ticket server: REPLACE keeps one row, AUTO_INCREMENT never repeats, and
    // LAST_INSERT_ID() is this session's
    conn.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {TICKETS} (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT \
         PRIMARY KEY, stub CHAR(1) NOT NULL UNIQUE)"
    ))?;
    conn.batch_execute(&format!("REPLACE INTO {TICKETS} (stub) VALUES ('a')"))?;
    let t: Ticket =
        diesel::sql_query("SELECT CAST(LAST_INSERT_ID() AS SIGNED) AS id").get_result(conn)?;
    Ok(t.id)
}
