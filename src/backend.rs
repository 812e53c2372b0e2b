//! What the router needs from each Diesel backend: URL checks, read-only replica handles,
//! SQL rendering for classification, and a retryable replica load.
//!
//! Implemented for `PgConnection` (feature `postgres`) and `SqliteConnection` (feature
//! `sqlite`). The traits are sealed: the router's correctness depends on each backend's details.

use diesel::backend::Backend;
use diesel::connection::{AnsiTransactionManager, Connection, DefaultLoadingMode, LoadConnection};
use diesel::expression::QueryMetadata;

use crate::consistency::Position;
use diesel::query_builder::{Query, QueryFragment, QueryId};
use diesel::r2d2::R2D2Connection;
use diesel::result::QueryResult;

/// What each backend implements for the router: sealed (the router's correctness depends on
/// each backend's details), nameable only inside the crate.
#[allow(unreachable_pub)]
pub(crate) mod private {
    use super::*;

    /// The router's side of a backend.
    pub trait Backend:
        Connection<TransactionManager = AnsiTransactionManager>
        + R2D2Connection
        + crate::sharding::storage::ShardStorage
        + 'static
    {
        /// Does a `COMMIT` that fails end the transaction? (PostgreSQL rolls it back; SQLite
        /// keeps it open.)
        const FAILED_COMMIT_ENDS_TRANSACTION: bool;

        /// Returns a session to the state of a new one, as far as the backend can without
        /// invalidating Diesel's prepared statements; an error means: close it instead.
        /// `replica`: the connection must stay read-only.
        fn reset_session(conn: &mut Self, replica: bool) -> QueryResult<()>;

        /// The statement that opens a read-only transaction.
        const BEGIN_READ_ONLY: &'static str;

        /// Does `url` fit this backend? The error says what a fitting URL looks like.
        fn check_url(url: &str) -> Result<(), &'static str>;

        /// The URL to open a replica with, read-only where the backend needs it in the URL.
        fn replica_url(url: &str) -> String;

        /// Makes a freshly opened replica connection read-only, so a misrouted write fails loudly.
        fn prepare_replica(conn: &mut Self) -> QueryResult<()>;

        /// Renders a query's SQL, for classification.
        fn render_sql<T: QueryFragment<Self::Backend> + ?Sized>(query: &T) -> QueryResult<String>;

        /// Does the backend report replication positions?
        const HAS_POSITIONS: bool;

        /// Does the server read SQL as MySQL does (`#` comments, backslash escapes,
        /// executable comments)?
        const MYSQL_DIALECT: bool = false;

        /// Is `position` of the kind this backend's servers report (an LSN on PostgreSQL)?
        /// Without positions, anything fits: it is not used.
        fn fits(position: &Position) -> bool {
            let _ = position;
            !Self::HAS_POSITIONS
        }

        /// The URL with a connect timeout, where the backend takes one.
        fn with_connect_timeout(url: &str, timeout: std::time::Duration) -> String;

        /// Opens a connection to `url` (already [`with_connect_timeout`]), returning within
        /// about `timeout` also when the server accepts the TCP connection and then never
        /// answers (a frozen server).
        ///
        /// [`with_connect_timeout`]: Backend::with_connect_timeout
        fn connect(url: &str, timeout: std::time::Duration) -> diesel::ConnectionResult<Self> {
            let _ = timeout; // the URL carries it
            Self::establish(url)
        }

        /// On the primary, after a commit: a position at or past that commit.
        fn write_position(conn: &mut Self) -> QueryResult<Option<Position>>;

        /// For the monitor, on the primary: the write position (as [`write_position`]), by a
        /// statement of its own, so that the servers' statistics tell the two apart.
        ///
        /// [`write_position`]: Backend::write_position
        fn probe_primary(conn: &mut Self) -> QueryResult<Option<Position>>;

        /// On the primary: everything committed and acknowledged so far is at or before this.
        fn flush_position(conn: &mut Self) -> QueryResult<Option<Position>>;

        /// The connection's local and remote TCP ports (`None`: not TCP), to find its socket.
        fn socket_ports(conn: &mut Self) -> Option<(u16, u16)>;

        /// On a replica: replay position and time lag, for the monitor.
        fn probe_replica(conn: &mut Self) -> QueryResult<Option<ReplicaProbe>>;

        /// On the primary: the history it writes (PostgreSQL's timeline; `None` where the
        /// backend has none). Another value than before means a failover, a restore or a
        /// rebuild: positions seen before belong to another history.
        fn primary_timeline(conn: &mut Self) -> QueryResult<Option<u32>> {
            let _ = conn;
            Ok(None)
        }

        /// On a replica: the history it replays (the timeline it streams, else the one of
        /// its last restart point; `None` where the backend has none).
        fn replica_timeline(conn: &mut Self) -> QueryResult<Option<u32>> {
            let _ = conn;
            Ok(None)
        }

        /// On a replica: its replay position alone, for checks on a connection whose server
        /// incarnation is known (see [`probe_replica`](Backend::probe_replica)).
        fn replay_position(conn: &mut Self) -> QueryResult<Option<Position>> {
            // a promoted server's positions are of another history: none learned from it
            Ok(Self::probe_replica(conn)?
                .filter(|p| !p.promoted)
                .map(|p| p.replay))
        }

        /// On a replica: waits on the server until it has applied `position`, at most
        /// `timeout`. `Some(true)`: applied; `Some(false)`: not within `timeout`; `None`: the
        /// server offers no such wait (the router polls the replay position instead).
        fn wait_for_replay(
            conn: &mut Self,
            position: &Position,
            timeout: std::time::Duration,
        ) -> QueryResult<Option<bool>> {
            let _ = (conn, position, timeout);
            Ok(None)
        }
    }

    /// The custom types (PostgreSQL enums) an async connection has resolved, by schema and
    /// name: their OID and array OID, for a database (its primary and physical replicas).
    #[cfg(feature = "async")]
    #[derive(Debug, Default)]
    pub struct TypeCache(
        #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
        pub(crate)  std::sync::Mutex<std::sync::Arc<TypeOids>>,
    );

    /// A custom type's schema (`None`: the search path) and name.
    #[cfg(feature = "async")]
    pub type TypeName = (Option<String>, String);

    /// Custom types' OIDs and array OIDs.
    #[cfg(feature = "async")]
    pub type TypeOids = std::collections::HashMap<TypeName, (u32, u32)>;

    /// The router's side of a backend's diesel-async connection (feature `async`): what the
    /// async connection sends that differs between servers. The route decisions are the sync
    /// connection's ([`crate::connection`]'s read core).
    #[cfg(feature = "async")]
    pub trait AsyncBackend: Backend {
        /// diesel-async's connection to this backend's servers.
        type Async: diesel_async::AsyncConnection<
                Backend = Self::Backend,
                TransactionManager = diesel_async::AnsiTransactionManager,
            > + 'static;

        /// The statement that makes a replica's session read-only, so that a misrouted
        /// write fails loudly.
        const READ_ONLY_SESSION: &'static str;

        /// A row of a load, owned (it borrows neither the connection nor the statement).
        type Row: for<'a> diesel::row::Row<'a, Self::Backend> + Send + 'static;

        /// A statement rendered into SQL and owned binds.
        type Collected: QueryFragment<Self::Backend> + Send + Sync + 'static;

        /// Renders `query` into SQL and owned binds, before the first `.await`, with the
        /// custom types resolved so far; others are left to [`resolve_types`].
        ///
        /// [`resolve_types`]: AsyncBackend::resolve_types
        fn collect<T: QueryFragment<Self::Backend> + QueryId + ?Sized>(
            query: &T,
            types: &TypeCache,
        ) -> QueryResult<Self::Collected>;

        /// Does `collected` bind custom types not resolved yet?
        fn needs_types(collected: &Self::Collected) -> bool {
            let _ = collected;
            false
        }

        /// Resolves `collected`'s custom types on `conn` (remembered in `types`).
        fn resolve_types<'c>(
            conn: &'c mut Self::Async,
            collected: &'c mut Self::Collected,
            types: &'c TypeCache,
        ) -> futures_util::future::BoxFuture<'c, QueryResult<()>> {
            let _ = (conn, collected, types);
            Box::pin(std::future::ready(Ok(())))
        }

        /// Loads `query` on `conn`: its rows, as a stream that borrows nothing.
        #[allow(clippy::type_complexity)]
        fn load_rows<'c, Q>(
            conn: &'c mut Self::Async,
            query: Q,
        ) -> futures_util::future::BoxFuture<
            'c,
            QueryResult<futures_util::stream::BoxStream<'static, QueryResult<Self::Row>>>,
        >
        where
            Q: QueryFragment<Self::Backend>
                + QueryId
                + diesel::query_builder::Query
                + Send
                + 'static;

        /// On a replica: its replay position and, with `identity`, the server incarnation
        /// that answers (else 0), as [`Backend::probe_replica`] and
        /// [`Backend::replay_position`].
        fn replay_async(
            conn: &mut Self::Async,
            identity: bool,
        ) -> futures_util::future::BoxFuture<'_, QueryResult<Option<(Position, u64)>>>;

        /// On the primary: [`Backend::write_position`], or with `flush`
        /// [`Backend::flush_position`].
        fn primary_position_async(
            conn: &mut Self::Async,
            flush: bool,
        ) -> futures_util::future::BoxFuture<'_, QueryResult<Option<Position>>>;

        /// Has the server closed this idle connection (a restart, a failover)? Known
        /// without a round trip where the driver tracks it (PostgreSQL, with a pool
        /// feature); `false` where it cannot tell.
        fn closed(conn: &mut Self::Async) -> bool {
            let _ = conn;
            false
        }

        /// On the primary: [`Backend::primary_timeline`].
        fn primary_timeline_async(
            conn: &mut Self::Async,
        ) -> futures_util::future::BoxFuture<'_, QueryResult<Option<u32>>> {
            let _ = conn;
            Box::pin(std::future::ready(Ok(None)))
        }

        /// On a replica: [`Backend::wait_for_replay`].
        fn wait_for_replay_async<'c>(
            conn: &'c mut Self::Async,
            position: &Position,
            timeout: std::time::Duration,
        ) -> futures_util::future::BoxFuture<'c, QueryResult<Option<bool>>> {
            let _ = (conn, position, timeout);
            Box::pin(std::future::ready(Ok(None)))
        }
    }

    /// A loading mode (`B`) the router can send to a replica.
    pub trait Load<B>: Backend + LoadConnection<B> {
        /// Has a statement run to its end when `load` returns (the whole result fetched)? Not
        /// for a row-by-row cursor, which runs as it is read.
        const DONE_ON_RETURN: bool = true;

        /// Runs `source` on the replica connection `conn`.
        fn load_on_replica<'conn, 'query, T>(
            conn: &'conn mut Self,
            source: T,
        ) -> ReplicaLoad<<Self as LoadConnection<B>>::Cursor<'conn, 'query>, T>
        where
            T: Query + QueryFragment<Self::Backend> + QueryId + 'query,
            Self::Backend: QueryMetadata<T::SqlType>;

        /// Runs a committing write (`INSERT ... RETURNING` outside a transaction) on the primary
        /// `conn` and, where the cursor lets the connection go, reads the write's position.
        #[allow(clippy::type_complexity)]
        fn load_write<'conn, 'query, T>(
            conn: &'conn mut Self,
            source: T,
        ) -> (
            QueryResult<<Self as LoadConnection<B>>::Cursor<'conn, 'query>>,
            Option<Position>,
        )
        where
            T: Query + QueryFragment<Self::Backend> + QueryId + 'query,
            Self::Backend: QueryMetadata<T::SqlType>,
        {
            (<Self as LoadConnection<B>>::load(conn, source), None)
        }
    }
}

/// A Diesel connection type the router can route: `PgConnection` or `SqliteConnection`.
pub trait RoutedBackend: private::Backend {
    /// The backend's name in messages (`PostgreSQL`, `SQLite`).
    const NAME: &'static str;
}

/// A connection type whose servers the async router reaches through diesel-async
/// (feature `async`): `PgConnection` (with `postgres`) or `MysqlConnection` (with `mysql`).
/// [`Cluster::get_async`](crate::Cluster::get_async) of a `Cluster<C>` gives an
/// [`AsyncRoutedConnection<C>`](crate::AsyncRoutedConnection).
#[cfg(feature = "async")]
pub trait AsyncRoutedBackend: RoutedBackend + private::AsyncBackend {}

#[cfg(feature = "async")]
impl<C: RoutedBackend + private::AsyncBackend> AsyncRoutedBackend for C {}

/// What the monitor learns from one replica.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct ReplicaProbe {
    /// The replay position.
    pub replay: Position,
    /// How far behind in time (0 when it has replayed all it received).
    pub lag: std::time::Duration,
    /// Which incarnation of the server answered (its start time; 0: not known). Another
    /// value means a restart or another server behind the address: positions start over.
    pub identity: u64,
    /// The server is not replaying (promoted, or a primary behind a replica's address): its
    /// positions belong to another history, and it takes no replica reads.
    pub promoted: bool,
}

/// The outcome of a load tried on a replica.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub enum ReplicaLoad<Cursor, T> {
    /// The replica ran the query (successfully or with a query error).
    Done(QueryResult<Cursor>),
    /// The replica's connection broke before it answered; the query can run elsewhere.
    Retry(diesel::result::Error, T),
}

/// A loading mode (`B`) the router can send to a replica, with a retry on the primary when the
/// replica's connection turns out to be dead.
pub trait RoutedLoad<B = DefaultLoadingMode>: RoutedBackend + private::Load<B> {}

impl<C, B> RoutedLoad<B> for C where C: RoutedBackend + private::Load<B> {}

/// Is this error a broken connection (the server went away), as opposed to a query error?
pub(crate) fn is_connection_error(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        // Diesel's MySQL backend reports a lost server (client errors 2006, 2013, 2002) with
        // no kind: known by the client library's messages
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let message = info.message();
            message.starts_with("Lost connection to")
                || message.contains("server has gone away")
                || message.contains("Server has gone away")
                || message.starts_with("Can't connect to")
                // diesel-async's MySQL driver (mysql_async): a socket error, or a connection
                // it has seen close
                || message.starts_with("Input/output error")
                || message.contains("Connection to the server is closed")
        }
        _ => false,
    }
}

fn render_with<DB, T>(query: &T, mut qb: DB::QueryBuilder, backend: &DB) -> QueryResult<String>
where
    DB: Backend,
    T: QueryFragment<DB> + ?Sized,
{
    use diesel::query_builder::QueryBuilder;
    query.to_sql(&mut qb, backend)?;
    Ok(qb.finish())
}

#[cfg(feature = "postgres")]
pub(crate) mod pg {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::pg::{Pg, PgConnection, PgQueryBuilder, PgRowByRowLoadingMode};
    use diesel::RunQueryDsl;

    impl RoutedBackend for PgConnection {
        const NAME: &'static str = "PostgreSQL";
    }

    impl private::Backend for PgConnection {
        const BEGIN_READ_ONLY: &'static str = "BEGIN READ ONLY";
        const FAILED_COMMIT_ENDS_TRANSACTION: bool = true;

        fn reset_session(conn: &mut Self, replica: bool) -> QueryResult<()> {
            // DISCARD ALL without its DEALLOCATE ALL, which would drop the prepared
            // statements Diesel caches for this connection; then the settings Diesel makes
            // when it connects
            conn.batch_execute(
                "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
                 SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES; \
                 SET TIME ZONE 'UTC'; SET CLIENT_ENCODING TO 'UTF8';",
            )?;
            if replica {
                Self::prepare_replica(conn)?;
            }
            Ok(())
        }

        fn check_url(url: &str) -> Result<(), &'static str> {
            const EXPECTED: &str = "expected postgres://user@host:port/database";
            match crate::settings::scheme(url).as_deref() {
                Some("postgres" | "postgresql") => Ok(()),
                // libpq also takes `host=... dbname=...` strings
                None if url.contains('=') && !url.contains("://") => Ok(()),
                _ => Err(EXPECTED),
            }
        }

        fn replica_url(url: &str) -> String {
            url.to_owned()
        }

        fn prepare_replica(conn: &mut Self) -> QueryResult<()> {
            conn.batch_execute("SET default_transaction_read_only = on")
        }

        fn render_sql<T: QueryFragment<Pg> + ?Sized>(query: &T) -> QueryResult<String> {
            render_with(query, PgQueryBuilder::default(), &Pg)
        }

        const HAS_POSITIONS: bool = true;

        fn fits(position: &Position) -> bool {
            matches!(position, Position::Lsn(_))
        }

        fn with_connect_timeout(url: &str, timeout: std::time::Duration) -> String {
            // libpq takes whole seconds and treats less than 2 as 2
            let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
            crate::settings::with_libpq_option(url, "connect_timeout", &secs.to_string())
        }

        fn write_position(conn: &mut Self) -> QueryResult<Option<Position>> {
            // The insert position is past every record written so far, our commit included,
            // also with synchronous_commit = off (where the flush position may trail it).
            insert_position(conn, "false")
        }

        fn probe_primary(conn: &mut Self) -> QueryResult<Option<Position>> {
            insert_position(conn, "pg_is_in_recovery()")
        }

        fn socket_ports(conn: &mut Self) -> Option<(u16, u16)> {
            use diesel::sql_types::{Integer, Nullable};
            let (local, remote): (Option<i32>, Option<i32>) = diesel::select((
                diesel::dsl::sql::<Nullable<Integer>>("inet_client_port()"),
                diesel::dsl::sql::<Nullable<Integer>>("inet_server_port()"),
            ))
            .get_result(conn)
            .ok()?;
            Some((u16::try_from(local?).ok()?, u16::try_from(remote?).ok()?))
        }

        fn flush_position(conn: &mut Self) -> QueryResult<Option<Position>> {
            // A commit acknowledged to its client (synchronous_commit = on) is flushed.
            lsn(conn, FLUSH_LSN)
        }

        fn probe_replica(conn: &mut Self) -> QueryResult<Option<ReplicaProbe>> {
            Ok(replica_probe(replica_probe_query().get_result(conn)?))
        }

        fn primary_timeline(conn: &mut Self) -> QueryResult<Option<u32>> {
            Ok(timeline_of(primary_timeline_query().get_result(conn)?))
        }

        fn replica_timeline(conn: &mut Self) -> QueryResult<Option<u32>> {
            Ok(timeline_of(replica_timeline_query().get_result(conn)?))
        }
    }

    /// The primary's timeline: the first 8 hex digits of the name of the WAL file it writes
    /// (`pg_walfile_name` names it with the timeline being written, right after a promotion
    /// too, where `pg_control_checkpoint()` shows the old one until the next checkpoint).
    pub(crate) fn primary_timeline_query() -> impl diesel::query_builder::Query<
        SqlType = diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
    > + QueryFragment<Pg>
           + QueryId
           + RunQueryDsl<PgConnection>
           + Send
           + 'static {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
            "CASE WHEN pg_is_in_recovery() THEN NULL \
             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_flush_lsn()), 1, 8))::bit(32)::int::bigint END",
        ))
    }

    /// A replica's timeline: the one its WAL receiver streams, else (not streaming, or the
    /// receiver's details hidden from the role) the one of its last restart point.
    pub(crate) fn replica_timeline_query() -> impl diesel::query_builder::Query<
        SqlType = diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
    > + QueryFragment<Pg>
           + QueryId
           + RunQueryDsl<PgConnection>
           + Send
           + 'static {
        diesel::select(diesel::dsl::sql::<
            diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
        >(
            "CASE WHEN pg_is_in_recovery() THEN coalesce(\
               (SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming'), \
               (SELECT timeline_id FROM pg_control_checkpoint()))::bigint END",
        ))
    }

    /// A timeline as the queries above give it.
    pub(crate) fn timeline_of(value: Option<i64>) -> Option<u32> {
        let tli = u32::try_from(value?).ok()?;
        (tli != 0).then_some(tli)
    }

    /// What a replica has replayed (in bytes), its lag in milliseconds (0 when it has
    /// replayed all it received) and when its server started (microseconds): the one probe
    /// the sync and async connections send.
    pub(crate) fn replica_probe_query() -> impl diesel::query_builder::Query<
        SqlType = (
            diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
            diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
            diesel::sql_types::BigInt,
            diesel::sql_types::Bool,
        ),
    > + QueryFragment<Pg>
           + QueryId
           + RunQueryDsl<PgConnection>
           + Send
           + 'static {
        use diesel::sql_types::{BigInt, Nullable};
        diesel::select((
            diesel::dsl::sql::<Nullable<BigInt>>(
                "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                 ELSE pg_current_wal_insert_lsn() END - '0/0'::pg_lsn)::bigint",
            ),
            diesel::dsl::sql::<Nullable<BigInt>>(
                "CASE WHEN NOT pg_is_in_recovery() \
                   OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 \
                 ELSE (extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint END",
            ),
            diesel::dsl::sql::<BigInt>(
                "(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint",
            ),
            diesel::dsl::sql::<diesel::sql_types::Bool>("pg_is_in_recovery()"),
        ))
    }

    /// [`replica_probe_query`]'s row as a probe.
    pub(crate) fn replica_probe(
        (replay, lag_ms, started, in_recovery): (Option<i64>, Option<i64>, i64, bool),
    ) -> Option<ReplicaProbe> {
        replay.map(|r| ReplicaProbe {
            replay: Position::Lsn(r.max(0) as u64),
            lag: std::time::Duration::from_millis(lag_ms.unwrap_or(0).max(0) as u64),
            identity: started.max(1) as u64,
            promoted: !in_recovery,
        })
    }

    /// The primary's insert position, as the end of the last record (see [`wal_record_end`]).
    /// `tag` is a fourth column that tells the statements apart in the server's statistics
    /// (`false` after a write, `pg_is_in_recovery()` for the monitor).
    fn insert_position(
        conn: &mut PgConnection,
        tag: &'static str,
    ) -> QueryResult<Option<Position>> {
        Ok(insert_position_of(
            insert_position_query(tag).get_result(conn)?,
        ))
    }

    /// The statement of [`insert_position`], for the sync and async connections.
    pub(crate) fn insert_position_query(
        tag: &'static str,
    ) -> impl diesel::query_builder::Query<
        SqlType = (
            diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
            diesel::sql_types::Text,
            diesel::sql_types::Text,
            diesel::sql_types::Bool,
        ),
    > + QueryFragment<Pg>
           + QueryId
           + RunQueryDsl<PgConnection>
           + Send
           + 'static {
        use diesel::sql_types::{BigInt, Bool, Nullable, Text};
        diesel::select((
            diesel::dsl::sql::<Nullable<BigInt>>(
                "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint",
            ),
            diesel::dsl::sql::<Text>("current_setting('wal_block_size')"),
            diesel::dsl::sql::<Text>("current_setting('wal_segment_size')"),
            diesel::dsl::sql::<Bool>(tag),
        ))
    }

    /// [`insert_position_query`]'s row as a position.
    pub(crate) fn insert_position_of(
        (insert, block, segment, _tag): (Option<i64>, String, String, bool),
    ) -> Option<Position> {
        insert.map(|p| {
            Position::Lsn(wal_record_end(
                p.max(0) as u64,
                parse_size(&block),
                parse_size(&segment),
            ))
        })
    }

    /// The insert position names where the next record goes: right after a page header
    /// when the last record ended on a page boundary. A replica that replayed that record
    /// reports the boundary, so the header is taken off (or the replica would look behind
    /// until the next record is written).
    pub(super) fn wal_record_end(insert: u64, block: Option<u64>, segment: Option<u64>) -> u64 {
        const SHORT_HEADER: u64 = 24;
        const LONG_HEADER: u64 = 40;
        match (block, segment) {
            (Some(block), Some(segment)) if block > 0 && segment > 0 => {
                if insert % segment == LONG_HEADER {
                    insert - LONG_HEADER
                } else if insert % block == SHORT_HEADER && insert % segment != SHORT_HEADER {
                    insert - SHORT_HEADER
                } else {
                    insert
                }
            }
            _ => insert,
        }
    }

    /// `8192`, `16MB`, `1GB` (how PostgreSQL shows sizes) in bytes.
    pub(super) fn parse_size(text: &str) -> Option<u64> {
        let t = text.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = t[..digits].parse().ok()?;
        let unit = match t[digits..].trim() {
            "" | "B" => 1,
            "kB" => 1 << 10,
            "MB" => 1 << 20,
            "GB" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(unit)
    }

    fn lsn(conn: &mut PgConnection, expr: &str) -> QueryResult<Option<Position>> {
        let value: Option<i64> = lsn_query(expr).get_result(conn)?;
        Ok(value.map(|v| Position::Lsn(v.max(0) as u64)))
    }

    /// `expr` (an LSN) in bytes, for the sync and async connections.
    pub(crate) fn lsn_query(
        expr: &str,
    ) -> impl diesel::query_builder::Query<
        SqlType = diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
    > + QueryFragment<Pg>
           + QueryId
           + RunQueryDsl<PgConnection>
           + Send
           + 'static {
        use diesel::sql_types::{BigInt, Nullable};
        diesel::select(diesel::dsl::sql::<Nullable<BigInt>>(&format!(
            "(({expr}) - '0/0'::pg_lsn)::bigint"
        )))
    }

    /// The expression of the flushed position (a replica's replayed one).
    pub(crate) const FLUSH_LSN: &str = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END";

    impl private::Load<DefaultLoadingMode> for PgConnection {
        fn load_on_replica<'conn, 'query, T>(
            conn: &'conn mut Self,
            source: T,
        ) -> ReplicaLoad<<Self as LoadConnection>::Cursor<'conn, 'query>, T>
        where
            T: Query + QueryFragment<Pg> + QueryId + 'query,
            Pg: QueryMetadata<T::SqlType>,
        {
            // PostgreSQL's default cursor holds the whole result and borrows nothing, so the
            // query can be lent to the replica and, if the replica's connection is dead, still
            // be sent to the primary.
            match <PgConnection as LoadConnection>::load(conn, &source) {
                Err(e) if is_connection_error(&e) => ReplicaLoad::Retry(e, source),
                result => ReplicaLoad::Done(result),
            }
        }

        fn load_write<'conn, 'query, T>(
            conn: &'conn mut Self,
            source: T,
        ) -> (
            QueryResult<<Self as LoadConnection>::Cursor<'conn, 'query>>,
            Option<Position>,
        )
        where
            T: Query + QueryFragment<Pg> + QueryId + 'query,
            Pg: QueryMetadata<T::SqlType>,
        {
            // The default cursor holds the whole result, so the connection is free for the
            // position query right after the (autocommitted) write.
            let result = <PgConnection as LoadConnection>::load(conn, source);
            let position = match result {
                Ok(_) => <Self as private::Backend>::write_position(conn)
                    .ok()
                    .flatten(),
                Err(_) => None,
            };
            (result, position)
        }
    }

    impl private::Load<PgRowByRowLoadingMode> for PgConnection {
        const DONE_ON_RETURN: bool = false;

        fn load_on_replica<'conn, 'query, T>(
            conn: &'conn mut Self,
            source: T,
        ) -> ReplicaLoad<<Self as LoadConnection<PgRowByRowLoadingMode>>::Cursor<'conn, 'query>, T>
        where
            T: Query + QueryFragment<Pg> + QueryId + 'query,
            Pg: QueryMetadata<T::SqlType>,
        {
            ReplicaLoad::Done(
                <PgConnection as LoadConnection<PgRowByRowLoadingMode>>::load(conn, source),
            )
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::sqlite::{Sqlite, SqliteConnection, SqliteQueryBuilder};

    impl RoutedBackend for SqliteConnection {
        const NAME: &'static str = "SQLite";
    }

    impl private::Backend for SqliteConnection {
        const BEGIN_READ_ONLY: &'static str = "BEGIN";
        const FAILED_COMMIT_ENDS_TRANSACTION: bool = false;

        fn reset_session(_conn: &mut Self, _replica: bool) -> QueryResult<()> {
            // Functions, collations and pragmas cannot be taken back: open a new connection.
            Err(diesel::result::Error::QueryBuilderError(
                "an SQLite session cannot be reset".into(),
            ))
        }

        fn check_url(url: &str) -> Result<(), &'static str> {
            match crate::settings::scheme(url).as_deref() {
                None | Some("sqlite") | Some("file") => Ok(()),
                Some(_) => Err("expected a file path, `:memory:`, a `file:` URI or sqlite://path"),
            }
        }

        fn replica_url(url: &str) -> String {
            let uri = if let Some(rest) = url.strip_prefix("sqlite://") {
                format!("file:{rest}")
            } else if url.starts_with("file:") {
                url.to_owned()
            } else {
                format!("file:{url}")
            };
            let (base, query) = match uri.split_once('?') {
                Some((b, q)) => (b.to_owned(), q.to_owned()),
                None => (uri.clone(), String::new()),
            };
            let mut params: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("mode="))
                .collect();
            params.push("mode=ro");
            format!("{base}?{}", params.join("&"))
        }

        fn prepare_replica(conn: &mut Self) -> QueryResult<()> {
            conn.batch_execute("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")
        }

        fn render_sql<T: QueryFragment<Sqlite> + ?Sized>(query: &T) -> QueryResult<String> {
            render_with(query, SqliteQueryBuilder::default(), &Sqlite)
        }

        const HAS_POSITIONS: bool = false;

        fn with_connect_timeout(url: &str, _timeout: std::time::Duration) -> String {
            url.to_owned()
        }

        fn write_position(_conn: &mut Self) -> QueryResult<Option<Position>> {
            Ok(None)
        }

        fn flush_position(_conn: &mut Self) -> QueryResult<Option<Position>> {
            Ok(None)
        }

        fn socket_ports(_conn: &mut Self) -> Option<(u16, u16)> {
            None
        }

        fn probe_primary(_conn: &mut Self) -> QueryResult<Option<Position>> {
            Ok(None)
        }

        fn probe_replica(_conn: &mut Self) -> QueryResult<Option<ReplicaProbe>> {
            Ok(None)
        }
    }

    impl private::Load<DefaultLoadingMode> for SqliteConnection {
        fn load_on_replica<'conn, 'query, T>(
            conn: &'conn mut Self,
            source: T,
        ) -> ReplicaLoad<<Self as LoadConnection>::Cursor<'conn, 'query>, T>
        where
            T: Query + QueryFragment<Sqlite> + QueryId + 'query,
            Sqlite: QueryMetadata<T::SqlType>,
        {
            ReplicaLoad::Done(<SqliteConnection as LoadConnection>::load(conn, source))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::backend::private::Backend;

        #[test]
        fn sqlite_replica_urls_are_read_only_uris() {
            assert_eq!(
                SqliteConnection::replica_url("/tmp/a.db"),
                "file:/tmp/a.db?mode=ro"
            );
            assert_eq!(
                SqliteConnection::replica_url("file:/tmp/a.db?cache=shared&mode=rwc"),
                "file:/tmp/a.db?cache=shared&mode=ro"
            );
            assert_eq!(
                SqliteConnection::replica_url("sqlite:///tmp/a.db"),
                "file:/tmp/a.db?mode=ro"
            );
        }

        #[test]
        fn sqlite_urls_of_other_backends_are_refused() {
            assert!(SqliteConnection::check_url("/tmp/a.db").is_ok());
            assert!(SqliteConnection::check_url(":memory:").is_ok());
            assert!(SqliteConnection::check_url("postgres://x/y").is_err());
        }
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use crate::backend::private::Backend;
    use diesel::pg::PgConnection;

    #[test]
    fn an_insert_position_after_a_page_header_is_the_record_end_before_it() {
        use super::pg::{parse_size, wal_record_end};
        let (b, s) = (Some(8192), Some(16 << 20));
        assert_eq!(wal_record_end(8192 * 5 + 24, b, s), 8192 * 5);
        assert_eq!(wal_record_end((16 << 20) * 3 + 40, b, s), (16 << 20) * 3);
        assert_eq!(wal_record_end(8192 * 5 + 100, b, s), 8192 * 5 + 100);
        assert_eq!(wal_record_end(8192 * 5 + 24, None, s), 8192 * 5 + 24);
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("8192"), Some(8192));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn postgres_urls_of_other_backends_are_refused() {
        assert!(PgConnection::check_url("postgres://a@h/db").is_ok());
        assert!(PgConnection::check_url("postgresql://a@h/db").is_ok());
        assert!(PgConnection::check_url("host=h dbname=db").is_ok());
        assert!(PgConnection::check_url("mysql://a@h/db").is_err());
        assert!(PgConnection::check_url("/tmp/a.db").is_err());
    }
}

#[cfg(feature = "mysql")]
pub(crate) mod mysql {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::mysql::{Mysql, MysqlConnection, MysqlQueryBuilder};
    use diesel::sql_types::{BigInt, Nullable, Text};
    use diesel::RunQueryDsl;

    impl RoutedBackend for MysqlConnection {
        const NAME: &'static str = "MySQL";
    }

    impl private::Backend for MysqlConnection {
        const BEGIN_READ_ONLY: &'static str = "START TRANSACTION READ ONLY";
        // InnoDB rolls a transaction back when its COMMIT fails
        const FAILED_COMMIT_ENDS_TRANSACTION: bool = true;
        const MYSQL_DIALECT: bool = true;

        fn reset_session(_conn: &mut Self, _replica: bool) -> QueryResult<()> {
            // SQL cannot clear user variables, temporary tables and locks all at once
            // (`mysql_reset_connection` is not reachable through Diesel): close it instead
            Err(diesel::result::Error::QueryBuilderError(
                "a MySQL session with state is closed, not reset".into(),
            ))
        }

        fn check_url(url: &str) -> Result<(), &'static str> {
            match crate::settings::scheme(url).as_deref() {
                Some("mysql") => Ok(()),
                _ => Err("expected mysql://user:password@host:port/database"),
            }
        }

        fn replica_url(url: &str) -> String {
            url.to_owned()
        }

        fn prepare_replica(conn: &mut Self) -> QueryResult<()> {
            conn.batch_execute("SET SESSION TRANSACTION READ ONLY")
        }

        fn render_sql<T: QueryFragment<Mysql> + ?Sized>(query: &T) -> QueryResult<String> {
            render_with(query, MysqlQueryBuilder::default(), &Mysql)
        }

        const HAS_POSITIONS: bool = true;

        fn fits(position: &Position) -> bool {
            matches!(position, Position::Gtid(_))
        }

        fn with_connect_timeout(url: &str, _timeout: std::time::Duration) -> String {
            // Diesel's MySQL URL takes no connect timeout: see `connect`
            url.to_owned()
        }

        fn connect(url: &str, timeout: std::time::Duration) -> diesel::ConnectionResult<Self> {
            // The client library waits for a server's greeting without end, and Diesel sets
            // no timeout on it: connect on a thread of its own and stop waiting after
            // `timeout`. A thread whose server never answers is left to end when the server
            // (or the kernel) closes the socket; the replica is skipped meanwhile.
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let url_owned = url.to_owned();
            let spawned = std::thread::Builder::new()
                .name("diesel-sharding-connect".into())
                .spawn(move || {
                    let _ = tx.send(MysqlConnection::establish(&url_owned));
                });
            if let Err(e) = spawned {
                return Err(diesel::ConnectionError::BadConnection(format!(
                    "cannot start a connect thread: {e}"
                )));
            }
            match rx.recv_timeout(timeout) {
                Ok(result) => result,
                Err(_) => Err(diesel::ConnectionError::BadConnection(format!(
                    "the server did not answer within the connect timeout ({})",
                    humantime::format_duration(timeout)
                ))),
            }
        }

        fn write_position(conn: &mut Self) -> QueryResult<Option<Position>> {
            // everything binlogged (MariaDB), or executed (MySQL 8): past every commit that
            // has returned, of any session. (`@@last_gtid` is this session's own last
            // transaction only: it would not cover the other sessions' writes that a shared
            // refresh or a token must cover.)
            Self::flush_position(conn)
        }

        fn probe_primary(conn: &mut Self) -> QueryResult<Option<Position>> {
            // the same, spelled apart so that the servers' logs tell the monitor's probes
            // from the positions reads and writes ask for
            gtid(conn, GlobalBinlogPos).or_else(|_| gtid(conn, GlobalExecuted))
        }

        fn flush_position(conn: &mut Self) -> QueryResult<Option<Position>> {
            gtid(conn, BinlogPos).or_else(|_| gtid(conn, Executed))
        }

        fn socket_ports(conn: &mut Self) -> Option<(u16, u16)> {
            // the client's address as the server sees it (`127.0.0.1:54321`), and its port.
            // The processlist is read through the text protocol into a session variable:
            // as a prepared statement (how Diesel sends every query) this subquery now and
            // then crashed MariaDB 10.11.19 (signal 11 in `ha_maria::drop_table`, freeing
            // the statement's temporary table), five times in this suite's stress runs
            {
                use diesel::connection::SimpleConnection;
                conn.batch_execute(
                    "SET @diesel_sharding_client = (SELECT HOST FROM \
                     information_schema.PROCESSLIST WHERE ID = CONNECTION_ID())",
                )
                .ok()?;
            }
            let (host, port): (Option<String>, i64) = diesel::select((
                diesel::dsl::sql::<Nullable<Text>>("@diesel_sharding_client"),
                diesel::dsl::sql::<BigInt>("@@port"),
            ))
            .get_result(conn)
            .ok()?;
            let local = host?.rsplit_once(':')?.1.parse().ok()?;
            Some((local, u16::try_from(port).ok()?))
        }

        fn probe_replica(conn: &mut Self) -> QueryResult<Option<ReplicaProbe>> {
            // what it has applied, and which server incarnation answers: its start second
            // and server id (a restart or another server behind the address starts
            // positions over; a restart within the same second is caught by its position
            // going back, see `ReplicaSet::learn`)
            // MariaDB: `@@gtid_slave_pos`; MySQL 8 has none (an error), its applied set is
            // `@@gtid_executed`
            let (applied, started, server_id) = match applied_and_start(conn, SlavePosAndStart) {
                Err(e) if unknown_variable(&e) => applied_and_start(conn, ExecutedAndStart)?,
                other => other?,
            };
            let Some(replay) = applied.and_then(|text| text.parse::<Position>().ok()) else {
                return Ok(None);
            };
            let (lag, replicating) = replication_state(conn)?;
            // not replicating and writable: a primary behind a replica's address (promoted
            // by a failover, or by mistake), with a history of its own. Stopped replication
            // on a read-only server is maintenance: `max_lag` keeps reads off it.
            let promoted = !replicating && ReadOnly.get_result::<i64>(conn)? == 0;
            Ok(Some(ReplicaProbe {
                replay,
                lag,
                identity: identity_of(started, server_id),
                promoted,
            }))
        }

        fn replay_position(conn: &mut Self) -> QueryResult<Option<Position>> {
            // one cheap statement: the incarnation (a status table scan, ~4x the cost) is
            // read once per connection by `probe_replica`
            match gtid(conn, SlavePos) {
                Err(e) if unknown_variable(&e) => gtid(conn, Executed),
                other => other,
            }
        }

        fn wait_for_replay(
            conn: &mut Self,
            position: &Position,
            timeout: std::time::Duration,
        ) -> QueryResult<Option<bool>> {
            wait_for_gtid(conn, position, timeout)
        }
    }

    /// A server incarnation from its start second and server id (never 0: not known).
    pub(crate) fn identity_of(started: i64, server_id: i64) -> u64 {
        ((server_id as u64) << 32 | (started as u64 & 0xFFFF_FFFF)).max(1)
    }

    /// A GTID system variable's text as a position (`None`: empty, or not a GTID set).
    pub(crate) fn gtid_of(text: Option<String>) -> Option<Position> {
        text.filter(|t| !t.trim().is_empty())
            .and_then(|t| t.parse::<Position>().ok())
    }

    /// Is this the error of a server without `@@gtid_slave_pos` (MySQL 8)?
    pub(crate) fn unknown_variable(e: &diesel::result::Error) -> bool {
        matches!(e, diesel::result::Error::DatabaseError(_, info)
            if info.message().contains("Unknown system variable"))
    }

    /// Waits for a GTID set on a replica: `MASTER_GTID_WAIT` (MariaDB sets) or
    /// `WAIT_FOR_EXECUTED_GTID_SET` (MySQL sets); both return 0 once the set is applied.
    fn wait_for_gtid(
        conn: &mut MysqlConnection,
        position: &Position,
        timeout: std::time::Duration,
    ) -> QueryResult<Option<bool>> {
        let Some(query) = gtid_wait_query(position, timeout) else {
            return Ok(None);
        };
        let outcome: Option<i64> = query.get_result(conn)?;
        Ok(Some(outcome == Some(0)))
    }

    /// The statement of [`wait_for_gtid`] (`None`: not a GTID set), for the sync and async
    /// connections: 0 once applied.
    pub(crate) fn gtid_wait_query(
        position: &Position,
        timeout: std::time::Duration,
    ) -> Option<
        impl diesel::query_builder::Query<SqlType = Nullable<BigInt>>
            + QueryFragment<Mysql>
            + QueryId
            + RunQueryDsl<MysqlConnection>
            + Send
            + 'static,
    > {
        let Position::Gtid(set) = position else {
            return None;
        };
        let function = if set.is_mariadb() {
            "MASTER_GTID_WAIT("
        } else {
            "WAIT_FOR_EXECUTED_GTID_SET("
        };
        Some(diesel::select(
            diesel::dsl::sql::<Nullable<BigInt>>(function)
                .bind::<Text, _>(set.to_string())
                .sql(", ")
                .bind::<diesel::sql_types::Double, _>(timeout.as_secs_f64())
                .sql(")"),
        ))
    }

    /// `SHOW SLAVE STATUS`, as far as the router reads it.
    #[derive(diesel::QueryableByName)]
    struct SlaveStatus {
        /// How far the applier is behind the events it received, by their timestamps
        /// (`NULL` while replication is stopped).
        #[diesel(sql_type = Nullable<BigInt>, column_name = Seconds_Behind_Master)]
        seconds_behind_master: Option<i64>,
        /// `Yes` while the applier runs.
        #[diesel(sql_type = Nullable<Text>, column_name = Slave_SQL_Running)]
        sql_running: Option<String>,
        /// `Yes` while the receiver runs (`Connecting` while it retries).
        #[diesel(sql_type = Nullable<Text>, column_name = Slave_IO_Running)]
        io_running: Option<String>,
    }

    /// The lag of a replica whose replication is stopped: not known, so past any limit.
    const STOPPED: std::time::Duration = std::time::Duration::from_secs(u32::MAX as u64);

    /// The replica's lag in time: `Seconds_Behind_Master` (whole seconds; 0 when it has
    /// applied all it received). Stopped replication (`NULL`) is past any limit: `max_lag`
    /// keeps reads off it.
    ///
    /// It needs the `SLAVE MONITOR` privilege (MariaDB; `REPLICATION CLIENT` on MySQL).
    /// Without it the lag is not known: reported as 0, with one warning, so that `max_lag`
    /// does not apply (positions still decide what a replica may serve).
    ///
    /// With the lag, whether the server replicates at all: configured as a replica with its
    /// applier or receiver running (`false`: not a replica, or both stopped).
    fn replication_state(conn: &mut MysqlConnection) -> QueryResult<(std::time::Duration, bool)> {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let rows: Vec<SlaveStatus> = match ShowSlaveStatus.load(conn) {
            Ok(rows) => rows,
            Err(diesel::result::Error::DatabaseError(_, info))
                if info.message().starts_with("Access denied") =>
            {
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        target: "diesel_sharding::monitor",
                        "cannot read a MySQL replica's lag (SHOW SLAVE STATUS needs the SLAVE \
                         MONITOR or REPLICATION CLIENT privilege): max_lag does not apply"
                    );
                }
                return Ok((std::time::Duration::ZERO, true));
            }
            Err(e) => return Err(e),
        };
        let running = |state: &Option<String>| state.as_deref().is_some_and(|s| s != "No");
        Ok(match rows.first() {
            Some(status) => (
                match status.seconds_behind_master {
                    Some(s) => std::time::Duration::from_secs(s.max(0).unsigned_abs()),
                    None => STOPPED,
                },
                running(&status.sql_running) || running(&status.io_running),
            ),
            // not a replica: nothing to lag behind
            None => (std::time::Duration::ZERO, false),
        })
    }

    /// Constant statements of the router with a static query id: Diesel's statement cache
    /// keeps them prepared, so each call is one round trip (an execute) instead of three
    /// (prepare, execute, close), as a `sql()` literal would cost.
    macro_rules! constant_query {
        ($($(#[$doc:meta])* $name:ident: $ty:ty = $sql:expr;)*) => {$(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
            pub(crate) struct $name;

            impl diesel::query_builder::Query for $name {
                type SqlType = $ty;
            }

            impl QueryFragment<Mysql> for $name {
                fn walk_ast<'b>(
                    &'b self,
                    mut out: diesel::query_builder::AstPass<'_, 'b, Mysql>,
                ) -> QueryResult<()> {
                    out.push_sql($sql);
                    Ok(())
                }
            }

            impl RunQueryDsl<MysqlConnection> for $name {}
        )*};
    }

    /// `UNIX_TIMESTAMP() - UPTIME`: when the server started, in Unix seconds.
    macro_rules! started_at {
        () => {
            "CAST(UNIX_TIMESTAMP() - (SELECT VARIABLE_VALUE FROM \
             information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME') AS SIGNED), \
             CAST(@@server_id AS SIGNED)"
        };
    }

    constant_query! {
        /// MariaDB: every transaction binlogged.
        BinlogPos: Nullable<Text> = "SELECT @@gtid_binlog_pos";
        /// MySQL 8: every transaction executed.
        Executed: Nullable<Text> = "SELECT @@gtid_executed";
        /// MariaDB replica: what it applied.
        SlavePos: Nullable<Text> = "SELECT @@gtid_slave_pos";
        /// Does the server refuse writes of ordinary users (`1`)?
        ReadOnly: BigInt = "SELECT CAST(@@global.read_only AS SIGNED)";
        /// The monitor's probe of a primary (the same, spelled apart for the servers' logs).
        GlobalBinlogPos: Nullable<Text> = "SELECT @@global.gtid_binlog_pos";
        /// ... on MySQL 8.
        GlobalExecuted: Nullable<Text> = "SELECT @@global.gtid_executed";
        /// MariaDB replica: what it applied, when it started and its server id.
        SlavePosAndStart: (Nullable<Text>, BigInt, BigInt) =
            concat!("SELECT @@gtid_slave_pos, ", started_at!());
        /// MySQL 8 replica: the same.
        ExecutedAndStart: (Nullable<Text>, BigInt, BigInt) =
            concat!("SELECT @@gtid_executed, ", started_at!());
        /// The replica's replication status, read by column name.
        ShowSlaveStatus: diesel::sql_types::Untyped = "SHOW SLAVE STATUS";
    }

    /// A replica's applied GTIDs, when the server started (Unix seconds) and its server id.
    fn applied_and_start<Q>(
        conn: &mut MysqlConnection,
        query: Q,
    ) -> QueryResult<(Option<String>, i64, i64)>
    where
        Q: diesel::query_dsl::LoadQuery<'static, MysqlConnection, (Option<String>, i64, i64)>,
    {
        query.get_result(conn)
    }

    /// A GTID system variable as a position (`None`: empty, or not a GTID set).
    fn gtid<Q>(conn: &mut MysqlConnection, query: Q) -> QueryResult<Option<Position>>
    where
        Q: diesel::query_dsl::LoadQuery<'static, MysqlConnection, Option<String>>,
    {
        Ok(gtid_of(query.get_result(conn)?))
    }

    impl private::Load<DefaultLoadingMode> for MysqlConnection {
        fn load_on_replica<'conn, 'query, T>(
            conn: &'conn mut Self,
            source: T,
        ) -> ReplicaLoad<<Self as LoadConnection>::Cursor<'conn, 'query>, T>
        where
            T: Query + QueryFragment<Mysql> + QueryId + 'query,
            Mysql: QueryMetadata<T::SqlType>,
        {
            // the cursor borrows the connection, not the query: lend it, and keep it for
            // the primary if the replica's connection is dead
            match <MysqlConnection as LoadConnection>::load(conn, &source) {
                Err(e) if is_connection_error(&e) => ReplicaLoad::Retry(e, source),
                result => ReplicaLoad::Done(result),
            }
        }
    }
}
