//! PostgreSQL through diesel-async's `AsyncPgConnection`: the same statements as the sync
//! connection's (`crate::backend::pg`).

use std::collections::{HashMap, HashSet};

use diesel::pg::{Pg, PgConnection, PgMetadataLookup, PgQueryBuilder, PgTypeMetadata};
use diesel::query_builder::bind_collector::RawBytesBindCollector;
use diesel::query_builder::{AstPass, QueryBuilder, QueryFragment, QueryId};
use diesel::result::QueryResult;
use diesel_async::{AsyncConnectionCore, AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::backend::pg as sql;
use crate::backend::private::AsyncBackend;
use crate::backend::private::{TypeCache, TypeOids};
use crate::consistency::Position;

/// A statement as SQL and owned binds, with the custom types still to resolve.
pub struct Collected {
    sql: String,
    safe_to_cache: bool,
    binds: RawBytesBindCollector<Pg>,
    unresolved: Option<Box<Unresolved>>,
}

impl std::fmt::Debug for Collected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the binds are data, not shown
        f.debug_struct("Collected")
            .field("sql", &self.sql)
            .field("binds", &self.binds.binds.len())
            .finish_non_exhaustive()
    }
}

/// Custom types a statement binds that were not resolved when it was rendered: the binds
/// carry stand-in OIDs, replaced once the server has named the real ones.
struct Unresolved {
    /// The stand-in OID and array OID of each type, by schema and name.
    stand_ins: TypeOids,
    /// Where a stand-in OID is inside a bind's bytes (arrays and records of custom types
    /// carry their element's OID): (bind, byte offset).
    in_bytes: Vec<(usize, usize)>,
}

impl QueryFragment<Pg> for Collected {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        if !self.safe_to_cache {
            pass.unsafe_to_cache_prepared();
        }
        pass.push_sql(&self.sql);
        pass.push_bind_collector_data::<RawBytesBindCollector<Pg>>(&self.binds)
    }
}

impl AsyncBackend for PgConnection {
    type Async = AsyncPgConnection;
    type Row = <AsyncPgConnection as AsyncConnectionCore>::Row<'static, 'static>;
    type Collected = Collected;
    const READ_ONLY_SESSION: &'static str = "SET default_transaction_read_only = on";

    fn collect<T: QueryFragment<Pg> + QueryId + ?Sized>(
        query: &T,
        types: &TypeCache,
    ) -> QueryResult<Collected> {
        let (binds, unresolved) = collect_binds(query, types)?;
        let mut sql = PgQueryBuilder::default();
        query.to_sql(&mut sql, &Pg)?;
        Ok(Collected {
            sql: sql.finish(),
            safe_to_cache: query.is_safe_to_cache_prepared(&Pg)?,
            binds,
            unresolved,
        })
    }

    fn needs_types(collected: &Collected) -> bool {
        collected.unresolved.is_some()
    }

    fn resolve_types<'c>(
        conn: &'c mut AsyncPgConnection,
        collected: &'c mut Collected,
        types: &'c TypeCache,
    ) -> BoxFuture<'c, QueryResult<()>> {
        Box::pin(resolve_types(conn, collected, types))
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
                .get_result::<(Option<i64>, Option<i64>, i64, bool)>(conn)
                .await?;
            // a promoted server's positions are of another history: none learned from it
            // (the monitor takes it out of the reads)
            Ok(sql::replica_probe(row)
                .filter(|p| !p.promoted)
                .map(|p| (p.replay, p.identity)))
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

    #[cfg(any(feature = "bb8", feature = "deadpool"))]
    fn closed(conn: &mut AsyncPgConnection) -> bool {
        // its connection task ended: the server closed the socket
        diesel_async::pooled_connection::PoolableConnection::is_broken(conn)
    }

    fn primary_timeline_async(
        conn: &mut AsyncPgConnection,
    ) -> BoxFuture<'_, QueryResult<Option<u32>>> {
        Box::pin(async move {
            let text = sql::primary_timeline_query().get_result(conn).await?;
            Ok(sql::timeline_of(text))
        })
    }
    // PostgreSQL 15 has no wait for a replay position: the core polls
}

/// A stand-in OID for a custom type not resolved yet (no real type has OID 0).
const STAND_IN: u32 = 0;

/// The binds of `query`, with the custom types resolved so far; the others get stand-in OIDs and
/// are listed to resolve before the statement runs.
///
/// A custom type's OID can also be written into a bind's bytes (an array or a record of
/// it), where it cannot be told from data: the binds are collected twice, with stand-ins 0
/// and then distinct ones, and the offsets where the two runs differ by exactly a stand-in
/// are where an OID goes (diesel-async's own connection resolves types the same way).
fn collect_binds<T: QueryFragment<Pg> + QueryId + ?Sized>(
    query: &T,
    types: &TypeCache,
) -> QueryResult<(RawBytesBindCollector<Pg>, Option<Box<Unresolved>>)> {
    let known = types
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut first = RawBytesBindCollector::<Pg>::new();
    let mut lookup = Lookup {
        known,
        missed: false,
        stand_ins: None,
        next: |_: &mut u32| (STAND_IN, STAND_IN),
        counter: 0,
    };
    query.collect_binds(&mut first, &mut lookup, &Pg)?;
    if !lookup.missed {
        return Ok((first, None));
    }
    // stand-ins above every OID of the first run, so that none is taken for another
    let highest = first
        .metadata
        .iter()
        .flat_map(|t| [t.oid().unwrap_or(0), t.array_oid().unwrap_or(0)])
        .max()
        .unwrap_or(0);
    let mut second = RawBytesBindCollector::<Pg>::new();
    let mut lookup = Lookup {
        known: lookup.known,
        missed: false,
        stand_ins: Some(HashMap::new()),
        next: |counter: &mut u32| {
            *counter += 2;
            (*counter, *counter + 1)
        },
        counter: highest,
    };
    query.collect_binds(&mut second, &mut lookup, &Pg)?;
    let stand_ins = lookup.stand_ins.unwrap_or_default();
    let given: HashSet<u32> = stand_ins.values().flat_map(|(a, b)| [*a, *b]).collect();
    let mut in_bytes = Vec::new();
    for (bind, ((bytes_0, meta_0), bytes_1)) in first
        .binds
        .iter()
        .zip(&first.metadata)
        .zip(&second.binds)
        .enumerate()
    {
        if !matches!(meta_0.oid(), Ok(STAND_IN)) {
            continue;
        }
        let (Some(bytes_0), Some(bytes_1)) = (bytes_0, bytes_1) else {
            continue;
        };
        for (offset, (l, r)) in bytes_0.windows(4).zip(bytes_1.windows(4)).enumerate() {
            let r_value = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
            if l == STAND_IN.to_be_bytes() && r != l && given.contains(&r_value) {
                in_bytes.push((bind, offset));
            }
        }
    }
    Ok((
        second,
        Some(Box::new(Unresolved {
            stand_ins,
            in_bytes,
        })),
    ))
}

/// The custom types resolved so far (a snapshot of the database's).
type Known = std::sync::Arc<TypeOids>;

/// The type lookup of a collect: known types by their OIDs, the others by stand-ins.
struct Lookup<F: FnMut(&mut u32) -> (u32, u32)> {
    known: Known,
    missed: bool,
    /// The stand-ins given, by type (the second run).
    stand_ins: Option<TypeOids>,
    next: F,
    counter: u32,
}

impl<F: FnMut(&mut u32) -> (u32, u32)> PgMetadataLookup for Lookup<F> {
    fn lookup_type(&mut self, type_name: &str, schema: Option<&str>) -> PgTypeMetadata {
        let key = (schema.map(str::to_owned), type_name.to_owned());
        if let Some(&(oid, array_oid)) = self.known.get(&key) {
            return PgTypeMetadata::new(oid, array_oid);
        }
        self.missed = true;
        let (oid, array_oid) = match &mut self.stand_ins {
            Some(given) => match given.get(&key) {
                Some(&pair) => pair,
                None => {
                    let pair = (self.next)(&mut self.counter);
                    given.insert(key, pair);
                    pair
                }
            },
            None => (self.next)(&mut self.counter),
        };
        PgTypeMetadata::new(oid, array_oid)
    }
}

/// A custom type's OIDs, as the server names them.
#[derive(diesel::QueryableByName)]
struct FoundType {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    oid: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    array_oid: i64,
}

/// Asks the server for the OIDs of `collected`'s unresolved types (once per type and
/// database: `types` remembers them) and puts them in place of the stand-ins.
async fn resolve_types(
    conn: &mut AsyncPgConnection,
    collected: &mut Collected,
    types: &TypeCache,
) -> QueryResult<()> {
    use diesel::sql_types::Text;
    let Some(unresolved) = collected.unresolved.as_ref() else {
        return Ok(());
    };
    let mut real = HashMap::new();
    for (key, &(stand_in, array_stand_in)) in &unresolved.stand_ins {
        let known = types
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .copied();
        let (oid, array_oid) = match known {
            Some(pair) => pair,
            None => {
                let (schema, name) = key;
                let found: Option<FoundType> = match schema {
                    Some(schema) => diesel::sql_query(
                        "SELECT pg_type.oid::bigint AS oid, pg_type.typarray::bigint AS array_oid                          FROM pg_type JOIN pg_namespace ON pg_type.typnamespace = pg_namespace.oid                          WHERE pg_type.typname = $1 AND pg_namespace.nspname = $2 LIMIT 1",
                    )
                    .bind::<Text, _>(name)
                    .bind::<Text, _>(schema)
                    .get_result(conn)
                    .await
                    .map(Some),
                    None => diesel::sql_query(
                        "SELECT pg_type.oid::bigint AS oid, pg_type.typarray::bigint AS array_oid                          FROM pg_type WHERE pg_type.oid = to_regtype(quote_ident($1))::oid",
                    )
                    .bind::<Text, _>(name)
                    .get_result(conn)
                    .await
                    .map(Some),
                }
                .or_else(|e| match e {
                    diesel::result::Error::NotFound => Ok(None),
                    e => Err(e),
                })?;
                let Some(found) = found else {
                    return Err(diesel::result::Error::SerializationError(
                        format!(
                            "a bind has the custom type `{}`, which the database does not have",
                            match schema {
                                Some(schema) => format!("{schema}.{name}"),
                                None => name.clone(),
                            }
                        )
                        .into(),
                    ));
                };
                let pair = (
                    u32::try_from(found.oid).unwrap_or(0),
                    u32::try_from(found.array_oid).unwrap_or(0),
                );
                std::sync::Arc::make_mut(
                    &mut types
                        .0
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                )
                .insert(key.clone(), pair);
                pair
            }
        };
        real.insert(stand_in, oid);
        real.insert(array_stand_in, array_oid);
    }
    let binds = &mut collected.binds;
    for meta in &mut binds.metadata {
        if let (Ok(oid), Ok(array_oid)) = (meta.oid(), meta.array_oid()) {
            *meta = PgTypeMetadata::new(
                real.get(&oid).copied().unwrap_or(oid),
                real.get(&array_oid).copied().unwrap_or(array_oid),
            );
        }
    }
    for &(bind, offset) in &unresolved.in_bytes {
        let slot = binds
            .binds
            .get_mut(bind)
            .and_then(Option::as_mut)
            .and_then(|bytes| bytes.get_mut(offset..offset + 4));
        let Some(slot) = slot else {
            return Err(diesel::result::Error::SerializationError(
                format!("cannot place a custom type's OID in bind {bind}").into(),
            ));
        };
        let stand_in = u32::from_be_bytes([slot[0], slot[1], slot[2], slot[3]]);
        if let Some(oid) = real.get(&stand_in) {
            slot.copy_from_slice(&oid.to_be_bytes());
        }
    }
    collected.unresolved = None;
    Ok(())
}
