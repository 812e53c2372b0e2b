//! A per-connection cache of statement kinds, keyed by Diesel's static query id.
//!
//! A query type with a static query id always renders the same SQL shape, so its kind is
//! computed once per connection and then found in about ten nanoseconds. Queries without one
//! (`eq_any`, boxed queries, multi-row inserts, `sql_query`) are classified every time.

use std::any::TypeId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use std::sync::Arc;

use super::{tables, Classifier, StatementKind, TableUse};
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
    pub(crate) kind: StatementKind,
    /// The tables read and written, when asked for and certain.
    pub(crate) tables: Option<Arc<TableUse>>,
}

impl Classified {
    /// Classifies SQL text, with its tables if `want_tables`.
    pub(crate) fn of(classifier: &Classifier, sql: &str, want_tables: bool) -> Classified {
        Classified {
            kind: classifier.classify(sql),
            tables: if want_tables {
                tables(sql).map(Arc::new)
            } else {
                None
            },
        }
    }
}

/// Statement kinds by query type.
#[derive(Debug, Default)]
pub(crate) struct KindCache {
    map: HashMap<TypeId, Classified, BuildHasherDefault<TypeIdHasher>>,
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
            if let Some(found) = self.get(id) {
                return found.clone();
            }
        }
        let found = match C::render_sql(query) {
            Ok(sql) => Classified::of(classifier, &sql, want_tables),
            Err(_) => Classified {
                kind: StatementKind::Unknown,
                tables: None,
            },
        };
        if let Some(id) = id {
            self.insert(id, found.clone());
        }
        found
    }

    /// Just the kind (no tables).
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
        let read = Classified {
            kind: StatementKind::Read,
            tables: None,
        };
        let write = Classified {
            kind: StatementKind::Write,
            tables: None,
        };
        assert_eq!(cache.get(TypeId::of::<u8>()), None);
        cache.insert(TypeId::of::<u8>(), read.clone());
        cache.insert(TypeId::of::<u16>(), write.clone());
        assert_eq!(cache.get(TypeId::of::<u8>()), Some(&read));
        assert_eq!(cache.get(TypeId::of::<u16>()), Some(&write));
        assert_eq!(cache.len(), 2);
    }
}
