//! What Diesel offers on `PgConnection` beyond its connection traits, on the routed
//! connection: `build_transaction()`, `COPY FROM`, the metadata cache for custom types.

use diesel::pg::{
    CopyFromQuery, GetPgMetadataCache, PgConnection, PgMetadataCache, TransactionBuilder,
};
use diesel::prelude::ExecuteCopyFromDsl;

use super::RoutedConnection;

impl RoutedConnection<PgConnection> {
    /// Diesel's [`PgConnection::build_transaction`]: a transaction with an isolation level,
    /// `READ ONLY` or `DEFERRABLE`. Its `BEGIN` is routed like any statement: a read-only
    /// transaction that is not serializable runs on a replica when a read would (caught up
    /// with what this thread must see), everything else on the primary.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # fn f(cluster: &diesel_sharding::Cluster<diesel::pg::PgConnection>) -> QueryResult<()> {
    /// let mut conn = cluster.get("default").unwrap();
    /// conn.build_transaction()
    ///     .read_only()
    ///     .repeatable_read()
    ///     .run(|conn| {
    ///         // several reads that see one snapshot, on a replica
    ///         diesel::sql_query("SELECT 1").execute(conn)?;
    ///         QueryResult::Ok(())
    ///     })
    /// # }
    /// ```
    pub fn build_transaction(&mut self) -> TransactionBuilder<'_, Self> {
        TransactionBuilder::new(self)
    }
}

impl GetPgMetadataCache for RoutedConnection<PgConnection> {
    /// The cache of custom type OIDs. Physical replicas have the primary's OIDs, so one cache
    /// serves every server behind this connection.
    fn get_metadata_cache(&mut self) -> &mut PgMetadataCache {
        &mut self.pg_metadata
    }
}

/// `diesel::copy_from(table)...execute(&mut *conn)`: `COPY FROM` on the primary, counted as a
/// write (pin window, position). Note the `&mut *conn`: Diesel implements the trait for its
/// own pool's connection type, and coherence lets this crate implement it only for the routed
/// connection itself.
impl<T, A> ExecuteCopyFromDsl<RoutedConnection<PgConnection>> for CopyFromQuery<T, A>
where
    CopyFromQuery<T, A>: ExecuteCopyFromDsl<PgConnection>,
    <CopyFromQuery<T, A> as ExecuteCopyFromDsl<PgConnection>>::Error: From<diesel::result::Error>,
{
    type Error = <CopyFromQuery<T, A> as ExecuteCopyFromDsl<PgConnection>>::Error;

    fn execute(self, conn: &mut RoutedConnection<PgConnection>) -> Result<usize, Self::Error> {
        conn.write_through(|physical| ExecuteCopyFromDsl::<PgConnection>::execute(self, physical))
    }
}
