//! MySQL and MariaDB through diesel-async's `AsyncMysqlConnection`: the same statements as
//! the sync connection's (`crate::backend::mysql`).

use diesel::mysql::{Mysql, MysqlConnection, MysqlQueryBuilder};
use diesel::query_builder::bind_collector::RawBytesBindCollector;
use diesel::query_builder::{
    CollectedQuery, MoveableBindCollector, QueryBuilder, QueryFragment, QueryId,
};
use diesel::result::QueryResult;
use diesel_async::{AsyncConnectionCore, AsyncMysqlConnection, RunQueryDsl};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};

use crate::backend::mysql::{
    gtid_of, gtid_wait_query, identity_of, unknown_variable, BinlogPos, Executed, ExecutedAndStart,
    SlavePos, SlavePosAndStart,
};
use crate::backend::private::AsyncBackend;
use crate::consistency::Position;

/// A statement as SQL and owned binds.
type Collected =
    CollectedQuery<<RawBytesBindCollector<Mysql> as MoveableBindCollector<Mysql>>::BindData>;

impl AsyncBackend for MysqlConnection {
    type Async = AsyncMysqlConnection;
    type Row = <AsyncMysqlConnection as AsyncConnectionCore>::Row<'static, 'static>;
    type Collected = Collected;
    const READ_ONLY_SESSION: &'static str = "SET SESSION TRANSACTION READ ONLY";

    fn collect<T: QueryFragment<Mysql> + QueryId + ?Sized>(
        query: &T,
        _types: &crate::backend::private::TypeCache,
    ) -> QueryResult<Collected> {
        let mut binds = RawBytesBindCollector::<Mysql>::new();
        query.collect_binds(&mut binds, &mut (), &Mysql)?;
        let mut sql = MysqlQueryBuilder::default();
        query.to_sql(&mut sql, &Mysql)?;
        let safe = query.is_safe_to_cache_prepared(&Mysql)?;
        Ok(CollectedQuery::new(sql.finish(), safe, binds.moveable()))
    }

    fn load_rows<'c, Q>(
        conn: &'c mut AsyncMysqlConnection,
        query: Q,
    ) -> BoxFuture<'c, QueryResult<BoxStream<'static, QueryResult<Self::Row>>>>
    where
        Q: QueryFragment<Mysql> + QueryId + diesel::query_builder::Query + Send + 'static,
    {
        // diesel-async's MySQL stream reads its rows from the connection: read them all
        // here (as the sync MySQL connection does), so that the call's time bound covers
        // the whole result and the rows borrow nothing
        Box::pin(async move {
            let stream = AsyncConnectionCore::load(conn, query).await?;
            let rows: Vec<QueryResult<Self::Row>> = stream.collect().await;
            Ok(futures_util::stream::iter(rows).boxed())
        })
    }

    fn replay_async(
        conn: &mut AsyncMysqlConnection,
        identity: bool,
    ) -> BoxFuture<'_, QueryResult<Option<(Position, u64)>>> {
        Box::pin(async move {
            if identity {
                // MariaDB: `@@gtid_slave_pos`; MySQL 8 has none, its applied set is
                // `@@gtid_executed`
                let row: (Option<String>, i64, i64) = match SlavePosAndStart.get_result(conn).await
                {
                    Err(e) if unknown_variable(&e) => ExecutedAndStart.get_result(conn).await?,
                    other => other?,
                };
                let (applied, started, server_id) = row;
                Ok(gtid_of(applied).map(|p| (p, identity_of(started, server_id))))
            } else {
                let applied: Option<String> = match SlavePos.get_result(conn).await {
                    Err(e) if unknown_variable(&e) => Executed.get_result(conn).await?,
                    other => other?,
                };
                Ok(gtid_of(applied).map(|p| (p, 0)))
            }
        })
    }

    fn primary_position_async(
        conn: &mut AsyncMysqlConnection,
        _flush: bool,
    ) -> BoxFuture<'_, QueryResult<Option<Position>>> {
        // everything binlogged (MariaDB) or executed (MySQL 8): past every commit that has
        // returned, of any session (the write and the flushed position are the same)
        Box::pin(async move {
            let text: Option<String> = match BinlogPos.get_result(conn).await {
                Ok(text) => text,
                Err(_) => Executed.get_result(conn).await?,
            };
            Ok(gtid_of(text))
        })
    }

    fn wait_for_replay_async<'c>(
        conn: &'c mut AsyncMysqlConnection,
        position: &Position,
        timeout: std::time::Duration,
    ) -> BoxFuture<'c, QueryResult<Option<bool>>> {
        let query = gtid_wait_query(position, timeout);
        Box::pin(async move {
            let Some(query) = query else {
                return Ok(None);
            };
            let outcome: Option<i64> = query.get_result(conn).await?;
            Ok(Some(outcome == Some(0)))
        })
    }
}
