//! Sharding: models spread over the shards of a group.

mod model;

pub use self::model::{fnv1a64, ShardBy, ShardKey, ShardedModel, Sharding, StoredShard};
