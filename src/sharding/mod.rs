//! Sharding: models spread over the shards of a group.

mod bucketing;
pub mod ids;
mod model;

// used by the cluster's shard groups (next commit)
#[allow(unused_imports)]
pub(crate) use self::bucketing::Bucketer;
pub use self::bucketing::{jump_hash, mod_bucket, Bucketing};
pub use self::model::{fnv1a64, ShardBy, ShardKey, ShardedModel, Sharding, StoredShard};

/// The uuid crate, whose `Uuid` [`ids::new_uuid`] returns: a well-kept crate for UUIDs, so
/// callers name the same type without depending on a matching version themselves.
pub use uuid;
