//! A shard group at runtime: its shards in id order, its bucketing, its id generators.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

use super::ids::IdGenerator;
use super::{Bucketer, Bucketing};
use crate::settings::GroupSpec;

/// Where a sharded row lives: a shard of a group, and the primary that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Shard {
    /// The shard group.
    pub group: String,
    /// The shard's id in its group.
    pub shard_id: i32,
    /// The name of the primary that holds the shard.
    pub database: String,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shard {} of `{}` (database `{}`)",
            self.shard_id, self.group, self.database
        )
    }
}

/// One shard group.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) bucketing: Bucketing,
    bucketer: Bucketer,
    pub(crate) epoch: SystemTime,
    pub(crate) storage: Option<String>,
    /// `(shard id, database)`, in shard-id order.
    pub(crate) shards: Vec<(i32, String)>,
    /// One in-process id generator per shard, made on first use.
    generators: Vec<OnceLock<IdGenerator>>,
    /// The shard storage table is known to exist.
    storage_ready: AtomicBool,
}

impl Group {
    pub(crate) fn new(spec: &GroupSpec) -> Self {
        // validated names; an unknown one cannot get here
        let bucketing = spec.bucketing;
        Group {
            name: spec.name.clone(),
            bucketing,
            bucketer: Bucketer::new(bucketing),
            epoch: spec.epoch,
            storage: spec.storage.clone(),
            shards: spec.shards.clone(),
            generators: spec.shards.iter().map(|_| OnceLock::new()).collect(),
            storage_ready: AtomicBool::new(false),
        }
    }

    pub(crate) fn storage_ready(&self) -> bool {
        self.storage_ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_storage_ready(&self) {
        self.storage_ready.store(true, Ordering::Relaxed);
    }

    /// The shard at `index` (shard-id order).
    pub(crate) fn shard_at(&self, index: usize) -> Option<Shard> {
        self.shards.get(index).map(|(id, db)| Shard {
            group: self.name.clone(),
            shard_id: *id,
            database: db.clone(),
        })
    }

    /// The index of shard `shard_id`.
    pub(crate) fn index_of(&self, shard_id: i32) -> Option<usize> {
        self.shards
            .binary_search_by_key(&shard_id, |(id, _)| *id)
            .ok()
    }

    /// The shard with id `shard_id`.
    pub(crate) fn by_id(&self, shard_id: i32) -> Option<Shard> {
        self.index_of(shard_id).and_then(|i| self.shard_at(i))
    }

    /// A pick by the bucketing: `key_hash` for strategies that need it.
    pub(crate) fn pick(&self, key_hash: Option<u64>) -> Option<Shard> {
        self.bucketer
            .pick(key_hash, self.shards.len())
            .and_then(|i| self.shard_at(i))
    }

    /// The in-process id generator of the shard at `index`.
    pub(crate) fn generator(
        &self,
        index: usize,
    ) -> Result<&IdGenerator, crate::sharding::ids::IdError> {
        let (shard_id, cell) = match (self.shards.get(index), self.generators.get(index)) {
            (Some((shard_id, _)), Some(cell)) => (*shard_id, cell),
            _ => return Err(crate::sharding::ids::IdError::ShardIdOutOfRange { shard_id: -1 }),
        };
        if let Some(g) = cell.get() {
            return Ok(g);
        }
        let g = IdGenerator::new(shard_id, self.epoch)?;
        Ok(cell.get_or_init(|| g))
    }
}
