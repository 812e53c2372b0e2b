//! A per-connection cache of statement kinds, keyed by Diesel's static query id.
//!
//! A query type with a static query id always renders the same SQL shape, so its kind is
//! computed once per connection and then found in about ten nanoseconds. Queries without one
//! (`eq_any`, boxed queries, multi-row inserts, `sql_query`) are classified every time.

use std::any::TypeId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use std::sync::Arc;

use super::{tables, Classifier, StatementInfo, StatementKind, TableId, TableUse};
use crate::backend::RoutedBackend;

/// `TypeId`s are already hashes: take their bits instead of hashing them again.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= (n as u64) ^ ((n >> 64) as u64);
    }
}

/// What classification found out about a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classified {
    /// Where it may run (the strongest kind of its statements).
    pub(crate) kind: StatementKind,
    /// What the text does, when it is one statement ...
    info: StatementInfo,
    /// ... or every statement, when it is none or several.
    several: Option<Arc<[StatementInfo]>>,
    /// The tables read and written, when asked for and certain.
    pub(crate) tables: Option<Arc<TableUse>>,
}

impl Classified {
    /// Classifies SQL text, with its tables if `want_tables`.
    pub(crate) fn of(classifier: &Classifier, sql: &str, want_tables: bool) -> Classified {
        let mut first = None;
        let mut all: Vec<StatementInfo> = Vec::new();
        classifier.analyze(sql, |info| {
            if first.is_none() {
                first = Some(info);
            }
            all.push(info);
        });
        let kind = all
            .iter()
            .map(|s| s.kind)
            .reduce(StatementKind::stronger)
            .unwrap_or(StatementKind::Unknown);
        let (info, several) = match (first, all.len()) {
            (Some(info), 1) => (info, None),
            _ => (StatementInfo::UNKNOWN, Some(Arc::from(all))),
        };
        Classified {
            kind,
            info,
            several,
            tables: if want_tables {
                tables(sql).map(Arc::new)
            } else {
                None
            },
        }
    }

    /// What rendering failed on: the primary, and assume the worst.
    pub(crate) fn unknown() -> Classified {
        Classified {
            kind: StatementKind::Unknown,
            info: StatementInfo::UNKNOWN,
            several: None,
            tables: None,
        }
    }

    /// A write whose SQL the router does not see (`save_changes`, the migrations table).
    pub(crate) fn write() -> Classified {
        Classified {
            kind: StatementKind::Write,
            info: StatementInfo::WRITE,
            several: None,
            tables: None,
        }
    }

    /// What each statement does, in order.
    pub(crate) fn statements(&self) -> &[StatementInfo] {
        match &self.several {
            Some(all) => all,
            None => std::slice::from_ref(&self.info),
        }
    }

    /// Does the text change data (so that, outside a transaction, it commits a write)?
    pub(crate) fn writes(&self) -> bool {
        match &self.several {
            Some(all) => all.iter().any(|s| s.writes),
            None => self.info.writes,
        }
    }

    /// Is it one plain statement, with no transaction control or session change?
    pub(crate) fn is_plain(&self) -> bool {
        self.several.is_none()
            && self.info.tx.is_none()
            && self.info.session == crate::routing::SessionChange::None
    }

    /// Is it one `BEGIN .. READ ONLY` (not serializable), which a replica may run?
    pub(crate) fn begins_read_only(&self) -> bool {
        self.several.is_none() && self.info.tx == Some(crate::routing::TxControl::BeginReadOnly)
    }

    /// The tables a write writes (empty: not known, the whole database).
    pub(crate) fn written_tables(&self) -> &[TableId] {
        match (&self.tables, self.kind) {
            (Some(t), StatementKind::Write) => &t.written,
            _ => &[],
        }
    }
}

/// Statement kinds by query type.
#[derive(Debug, Default)]
pub(crate) struct KindCache {
    map: HashMap<TypeId, Classified, BuildHasherDefault<TypeIdHasher>>,
    /// The last query type looked up: a loop of one statement skips the hash.
    last: Option<(TypeId, Classified)>,
}

impl KindCache {
    pub(crate) fn get(&self, id: TypeId) -> Option<&Classified> {
        self.map.get(&id)
    }

    pub(crate) fn insert(&mut self, id: TypeId, kind: Classified) {
        // A program has a bounded number of query types; the bound only guards against misuse.
        if self.map.len() < 4096 {
            self.map.insert(id, kind);
        }
    }

    /// The kind of a query: from the cache when Diesel gives the query type a static id,
    /// else rendered and classified (and cached when it has an id).
    pub(crate) fn classify<C, T>(
        &mut self,
        classifier: &Classifier,
        query: &T,
        want_tables: bool,
    ) -> Classified
    where
        C: RoutedBackend,
        T: diesel::query_builder::QueryFragment<C::Backend> + diesel::query_builder::QueryId,
    {
        let id = T::query_id();
        if let Some(id) = id {
            if let Some((last, found)) = &self.last {
                if *last == id {
                    return found.clone();
                }
            }
            if let Some(found) = self.get(id) {
                let found = found.clone();
                self.last = Some((id, found.clone()));
                return found;
            }
        }
        let found = match C::render_sql(query) {
            Ok(sql) => Classified::of(classifier, &sql, want_tables),
            Err(_) => Classified::unknown(),
        };
        if let Some(id) = id {
            self.insert(id, found.clone());
        }
        found
    }

    /// Just the kind (no tables), for the benchmarks.
    #[cfg_attr(not(feature = "bench-internals"), allow(dead_code))]
    pub(crate) fn kind_of<C, T>(&mut self, classifier: &Classifier, query: &T) -> StatementKind
    where
        C: RoutedBackend,
        T: diesel::query_builder::QueryFragment<C::Backend> + diesel::query_builder::QueryId,
    {
        self.classify::<C, T>(classifier, query, false).kind
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_kinds_by_type() {
        let mut cache = KindCache::default();
        let read = Classified::of(&Classifier::new(), "SELECT 1", false);
        let write = Classified::of(&Classifier::new(), "DELETE FROM t", false);
        assert_eq!(read.kind, StatementKind::Read);
        assert_eq!(write.kind, StatementKind::Write);
        assert_eq!(cache.get(TypeId::of::<u8>()), None);
        cache.insert(TypeId::of::<u8>(), read.clone());
        cache.insert(TypeId::of::<u16>(), write.clone());
        assert_eq!(cache.get(TypeId::of::<u8>()), Some(&read));
        assert_eq!(cache.get(TypeId::of::<u16>()), Some(&write));
        assert_eq!(cache.len(), 2);
    }
}
