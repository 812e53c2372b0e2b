//! Sharding: models spread over the shards of a group.
//!
//! A shard group is a set of primaries (`shard_group` and `shard_id` in the settings), each
//! with its own replicas. `#[derive(ShardedModel)]` tells where a model lives; the cluster
//! turns a key or a row into its [`Shard`] and a routed connection, makes global ids, runs
//! migrations on every shard and work over all shards.

mod bucketing;
mod group;
pub mod ids;
mod model;
mod runtime;
pub(crate) mod storage;
#[cfg(all(feature = "async", any(feature = "postgres", feature = "mysql")))]
mod tasks;

pub(crate) use self::bucketing::Bucketer;
pub use self::bucketing::{jump_hash, mod_bucket, Bucketing};
pub(crate) use self::group::Group;
pub use self::group::Shard;
pub use self::model::{fnv1a64, ShardBy, ShardKey, ShardedModel, Sharding, StoredShard};
pub use self::runtime::{DecodedId, MigrationReport, ShardResult, DEFAULT_SHARD_PARALLELISM};

/// The uuid crate, whose `Uuid` [`ids::new_uuid`] returns: a well-kept crate for UUIDs, so
/// callers name the same type without depending on a matching version themselves.
pub use uuid;

/// `#[derive(ShardedModel)]`, next to the trait of the same name (derives live in the macro
/// namespace, so `use diesel_sharding::ShardedModel;` brings both).
pub use diesel_sharding_derive::ShardedModel;
