//! PostgreSQL through diesel-async's `AsyncPgConnection`: the same statements as the sync
//! connection's (`crate::backend::pg`).

use diesel::pg::{Pg, PgConnection, PgQueryBuilder};
use diesel::query_builder::bind_collector::RawBytesBindCollector;
use diesel::query_builder::{
    CollectedQuery, MoveableBindCollector, QueryBuilder, QueryFragment, QueryId,
};
use diesel::result::QueryResult;
use diesel_async::{AsyncConnectionCore, AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::backend::pg as sql;
use crate::backend::private::AsyncBackend;
use crate::consistency::Position;

/// A statement as SQL and owned binds.
type Collected = CollectedQuery<<RawBytesBindCollector<Pg> as MoveableBindCollector<Pg>>::BindData>;

impl AsyncBackend for PgConnection {
    type Async = AsyncPgConnection;
    type Row = <AsyncPgConnection as AsyncConnectionCore>::Row<'static, 'static>;
    type Collected = Collected;
    const READ_ONLY_SESSION: &'static str = "SET default_transaction_read_only = on";

    fn collect<T: QueryFragment<Pg> + QueryId + ?Sized>(query: &T) -> QueryResult<Collected> {
        let mut binds = RawBytesBindCollector::<Pg>::new();
        query.collect_binds(&mut binds, &mut NoTypeLookup, &Pg)?;
        let mut sql = PgQueryBuilder::default();
        query.to_sql(&mut sql, &Pg)?;
        let safe = query.is_safe_to_cache_prepared(&Pg)?;
        Ok(CollectedQuery::new(sql.finish(), safe, binds.moveable()))
    }

    fn load_rows<'c, Q>(
        conn: &'c mut AsyncPgConnection,
        query: Q,
    ) -> BoxFuture<'c, QueryResult<BoxStream<'static, QueryResult<Self::Row>>>>
    where
        Q: QueryFragment<Pg> + QueryId + diesel::query_builder::Query + Send + 'static,
    {
        // the rows of diesel-async's PostgreSQL stream borrow nothing
        Box::pin(AsyncConnectionCore::load(conn, query))
    }

    fn replay_async(
        conn: &mut AsyncPgConnection,
        _identity: bool,
    ) -> BoxFuture<'_, QueryResult<Option<(Position, u64)>>> {
        // one statement tells both
        Box::pin(async move {
            let row = sql::replica_probe_query()
                .get_result::<(Option<i64>, Option<i64>, i64)>(conn)
                .await?;
            Ok(sql::replica_probe(row).map(|p| (p.replay, p.identity)))
        })
    }

    fn primary_position_async(
        conn: &mut AsyncPgConnection,
        flush: bool,
    ) -> BoxFuture<'_, QueryResult<Option<Position>>> {
        Box::pin(async move {
            if flush {
                let value: Option<i64> = sql::lsn_query(sql::FLUSH_LSN).get_result(conn).await?;
                Ok(value.map(|v| Position::Lsn(v.max(0) as u64)))
            } else {
                let row = sql::insert_position_query("false").get_result(conn).await?;
                Ok(sql::insert_position_of(row))
            }
        })
    }
    // PostgreSQL 15 has no wait for a replay position: the core polls
}

/// Type lookups for binds of custom types (enums) need the server: not yet supported by the
/// async connection, which fails such a statement with an error that says so.
struct NoTypeLookup;

impl diesel::pg::PgMetadataLookup for NoTypeLookup {
    fn lookup_type(&mut self, type_name: &str, schema: Option<&str>) -> diesel::pg::PgTypeMetadata {
        // the type is named in the error diesel-async reports when it prepares the statement
        let key = diesel::pg::PgMetadataCacheKey::new(
            schema.map(|s| std::borrow::Cow::Owned(s.to_owned())),
            std::borrow::Cow::Owned(type_name.to_owned()),
        );
        diesel::pg::PgTypeMetadata::from_result(Err(diesel::pg::FailedToLookupTypeError::new(key)))
    }
}
