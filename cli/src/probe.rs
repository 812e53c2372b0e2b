//! What the command line asks each server, per backend: its version, whether it is read-only,
//! and how far a replica is behind.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};

/// One server as it describes itself.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Described {
    /// `PostgreSQL 15.19`, `SQLite 3.40.1`.
    pub(crate) version: String,
    /// Does the server refuse writes (a replica in recovery, a read-only SQLite file)?
    pub(crate) read_only: bool,
    /// A replica that replays (`in recovery`), or a primary.
    pub(crate) in_recovery: bool,
    /// Replication, in a few words: replicas attached to a primary, a replica's receiver.
    pub(crate) replication: String,
}

/// A replica's distance from its primary.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Lag {
    /// Time since the last replayed transaction, while it has not replayed all it received
    /// (0 when caught up); `None` where the server cannot tell.
    pub(crate) lag_ms: Option<i64>,
    /// Bytes of WAL the primary has written that it has not replayed.
    pub(crate) lag_bytes: Option<i64>,
    /// Is replay paused?
    pub(crate) paused: bool,
}

/// The servers' side of `check` and `status`, per Diesel connection type.
pub(crate) trait Probe: diesel_sharding::RoutedBackend {
    const BACKEND: &'static str;

    fn describe(conn: &mut Self) -> QueryResult<Described>;

    /// The primary's write position in bytes (for lag in bytes).
    fn written_bytes(conn: &mut Self) -> QueryResult<Option<i64>>;

    fn lag(conn: &mut Self, primary_position: Option<i64>) -> QueryResult<Lag>;
}

#[derive(QueryableByName)]
struct PgDescribed {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Bool)]
    in_recovery: bool,
    #[diesel(sql_type = Bool)]
    read_only: bool,
    #[diesel(sql_type = BigInt)]
    attached: i64,
    #[diesel(sql_type = Nullable<Text>)]
    receiver: Option<String>,
}

#[derive(QueryableByName)]
struct PgLag {
    #[diesel(sql_type = Nullable<BigInt>)]
    replay: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    lag_ms: Option<i64>,
    #[diesel(sql_type = Bool)]
    paused: bool,
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = Nullable<BigInt>)]
    position: Option<i64>,
}

impl Probe for diesel::pg::PgConnection {
    const BACKEND: &'static str = "PostgreSQL";

    fn describe(conn: &mut Self) -> QueryResult<Described> {
        let d: PgDescribed = diesel::sql_query(
            "SELECT current_setting('server_version') AS version, \
                    pg_is_in_recovery() AS in_recovery, \
                    (pg_is_in_recovery() OR current_setting('default_transaction_read_only') = 'on') \
                        AS read_only, \
                    (SELECT count(*) FROM pg_stat_replication) AS attached, \
                    (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver",
        )
        .get_result(conn)?;
        let replication = if d.in_recovery {
            match d.receiver {
                Some(status) => format!("replica, receiver {status}"),
                None => "replica, no WAL receiver".to_owned(),
            }
        } else {
            format!("primary, {} replica(s) attached", d.attached)
        };
        Ok(Described {
            // `15.20 (Debian 15.20-0+deb12u1)`: the number
            version: format!(
                "{} {}",
                Self::BACKEND,
                d.version.split_whitespace().next().unwrap_or_default()
            ),
            read_only: d.read_only,
            in_recovery: d.in_recovery,
            replication,
        })
    }

    fn written_bytes(conn: &mut Self) -> QueryResult<Option<i64>> {
        let p: Position =
            diesel::sql_query("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS position")
                .get_result(conn)?;
        Ok(p.position)
    }

    fn lag(conn: &mut Self, primary_position: Option<i64>) -> QueryResult<Lag> {
        let l: PgLag = diesel::sql_query(
            "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS replay, \
                    CASE WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 \
                         ELSE (extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint \
                    END AS lag_ms, \
                    pg_is_wal_replay_paused() AS paused",
        )
        .get_result(conn)?;
        Ok(Lag {
            lag_ms: l.lag_ms.map(|ms| ms.max(0)),
            lag_bytes: match (primary_position, l.replay) {
                (Some(primary), Some(replay)) => Some((primary - replay).max(0)),
                _ => None,
            },
            paused: l.paused,
        })
    }
}

#[derive(QueryableByName)]
struct SqliteVersion {
    #[diesel(sql_type = Text)]
    version: String,
}

impl Probe for diesel::sqlite::SqliteConnection {
    const BACKEND: &'static str = "SQLite";

    fn describe(conn: &mut Self) -> QueryResult<Described> {
        let v: SqliteVersion =
            diesel::sql_query("SELECT sqlite_version() AS version").get_result(conn)?;
        // a replica's connection reads only (`PRAGMA query_only`, as the router opens it),
        // or its file is opened read-only: rewriting the schema's user version in a
        // transaction rolled back (nothing written) tells
        let read_only = {
            use diesel::connection::SimpleConnection;
            let query_only: QueryOnly = diesel::sql_query("PRAGMA query_only").get_result(conn)?;
            if query_only.query_only != 0 {
                true
            } else {
                match conn.batch_execute("BEGIN IMMEDIATE") {
                    // another connection holds the write lock: writable, only busy
                    Err(e) if busy(&e) => false,
                    Err(_) => true,
                    Ok(()) => {
                        let version: UserVersion =
                            diesel::sql_query("PRAGMA user_version").get_result(conn)?;
                        let refused = conn
                            .batch_execute(&format!(
                                "PRAGMA user_version = {}",
                                version.user_version
                            ))
                            .is_err();
                        conn.batch_execute("ROLLBACK")?;
                        refused
                    }
                }
            }
        };
        Ok(Described {
            version: format!("{} {}", Self::BACKEND, v.version),
            read_only,
            in_recovery: false,
            replication: "a file (replicas read the same file)".to_owned(),
        })
    }

    fn written_bytes(_conn: &mut Self) -> QueryResult<Option<i64>> {
        Ok(None)
    }

    fn lag(_conn: &mut Self, _primary_position: Option<i64>) -> QueryResult<Lag> {
        Ok(Lag {
            lag_ms: Some(0),
            lag_bytes: None,
            paused: false,
        })
    }
}

/// `PRAGMA query_only`.
#[derive(QueryableByName)]
struct QueryOnly {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    query_only: i32,
}

/// `PRAGMA user_version`.
#[derive(QueryableByName)]
struct UserVersion {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    user_version: i32,
}

/// Is this SQLite's "another connection holds the lock" (`SQLITE_BUSY`)?
fn busy(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(_, info)
        if info.message().contains("database is locked"))
}

/// `SHOW SLAVE STATUS`, as far as the command line reads it.
#[cfg(feature = "mysql")]
#[derive(QueryableByName)]
struct SlaveStatus {
    #[diesel(sql_type = Nullable<Text>, column_name = Slave_IO_Running)]
    io_running: Option<String>,
    #[diesel(sql_type = Nullable<Text>, column_name = Slave_SQL_Running)]
    sql_running: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>, column_name = Seconds_Behind_Master)]
    seconds_behind: Option<i64>,
}

#[cfg(feature = "mysql")]
#[derive(QueryableByName)]
struct SlaveHost {
    #[diesel(sql_type = BigInt, column_name = Server_id)]
    _server_id: i64,
}

#[cfg(feature = "mysql")]
#[derive(QueryableByName)]
struct MysqlDescribed {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = BigInt)]
    read_only: i64,
    #[diesel(sql_type = BigInt)]
    attached: i64,
}

#[cfg(feature = "mysql")]
fn slave_status(conn: &mut diesel::mysql::MysqlConnection) -> QueryResult<Option<SlaveStatus>> {
    Ok(diesel::sql_query("SHOW SLAVE STATUS")
        .load::<SlaveStatus>(conn)?
        .into_iter()
        .next())
}

#[cfg(feature = "mysql")]
impl Probe for diesel::mysql::MysqlConnection {
    const BACKEND: &'static str = "MySQL";

    fn describe(conn: &mut Self) -> QueryResult<Described> {
        // the processlist through the text protocol: as a prepared statement (how Diesel
        // sends queries) an information_schema subquery crashed MariaDB 10.11 now and then
        {
            use diesel::connection::SimpleConnection;
            conn.batch_execute(
                "SET @diesel_sharding_attached = (SELECT COUNT(*) FROM \
                 information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%')",
            )?;
        }
        let d: MysqlDescribed = diesel::sql_query(
            "SELECT VERSION() AS version, \
                    CAST(@@global.read_only AS SIGNED) AS read_only, \
                    CAST(@diesel_sharding_attached AS SIGNED) AS attached",
        )
        .get_result(conn)?;
        // replicas registered with the primary (`SHOW SLAVE HOSTS` needs REPLICATION MASTER
        // ADMIN on MariaDB, REPLICATION SLAVE on MySQL): else the dump threads this user sees
        let attached = diesel::sql_query("SHOW SLAVE HOSTS")
            .load::<SlaveHost>(conn)
            .map_or(d.attached, |hosts| hosts.len() as i64);
        let status = slave_status(conn)?;
        // `10.11.6-MariaDB-0+deb12u1-log`, `8.0.36`: the product and the number
        let number = d.version.split(['-', ' ']).next().unwrap_or_default();
        let product = if d.version.contains("MariaDB") {
            "MariaDB"
        } else {
            Self::BACKEND
        };
        let replicating = status.as_ref().is_some_and(|s| {
            [&s.io_running, &s.sql_running]
                .iter()
                .any(|r| r.as_deref().is_some_and(|r| r != "No"))
        });
        let replication = match &status {
            Some(s) => format!(
                "replica, IO {}, SQL {}",
                s.io_running.as_deref().unwrap_or("?"),
                s.sql_running.as_deref().unwrap_or("?")
            ),
            None if attached > 0 => format!("primary, {attached} replica(s) attached"),
            None => "primary, no replica visible to this user".to_owned(),
        };
        Ok(Described {
            version: format!("{product} {number}"),
            read_only: d.read_only != 0,
            in_recovery: replicating,
            replication,
        })
    }

    fn written_bytes(_conn: &mut Self) -> QueryResult<Option<i64>> {
        // GTIDs count transactions, not bytes
        Ok(None)
    }

    fn lag(conn: &mut Self, _primary_position: Option<i64>) -> QueryResult<Lag> {
        let status = slave_status(conn)?;
        Ok(Lag {
            lag_ms: status
                .as_ref()
                .and_then(|s| s.seconds_behind)
                .map(|s| s.max(0) * 1000),
            lag_bytes: None,
            // the applier stopped while the receiver runs: replay paused
            paused: status
                .as_ref()
                .is_some_and(|s| s.sql_running.as_deref() == Some("No")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    /// A SQLite file another connection is writing to is writable, only busy; a file
    /// opened read-only is read-only.
    #[test]
    fn sqlite_read_only_is_told_from_a_locked_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let url = path.to_str().unwrap().to_owned();
        let mut writer = diesel::sqlite::SqliteConnection::establish(&url).unwrap();
        writer
            .batch_execute(
                "CREATE TABLE t (id INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);",
            )
            .unwrap();
        let mut other = diesel::sqlite::SqliteConnection::establish(&url).unwrap();
        let d = diesel::sqlite::SqliteConnection::describe(&mut other).unwrap();
        assert!(!d.read_only, "a locked file was reported read-only");
        writer.batch_execute("COMMIT").unwrap();
        let mut ro =
            diesel::sqlite::SqliteConnection::establish(&format!("file:{url}?mode=ro")).unwrap();
        let d = diesel::sqlite::SqliteConnection::describe(&mut ro).unwrap();
        assert!(d.read_only, "a read-only file was reported writable");
        let mut query_only = diesel::sqlite::SqliteConnection::establish(&url).unwrap();
        query_only.batch_execute("PRAGMA query_only = ON").unwrap();
        let d = diesel::sqlite::SqliteConnection::describe(&mut query_only).unwrap();
        assert!(d.read_only, "a query-only connection was reported writable");
        let mut plain = diesel::sqlite::SqliteConnection::establish(&url).unwrap();
        assert!(
            !diesel::sqlite::SqliteConnection::describe(&mut plain)
                .unwrap()
                .read_only
        );
    }
}
