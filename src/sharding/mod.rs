//! Sharding: models spread over the shards of a group.

mod model;

pub use self::model::{fnv1a64, ShardBy, ShardKey, ShardedModel, Sharding, StoredShard};
/// `#[derive(ShardedModel)]`, next to the trait of the same name (derives live in the macro
/// namespace, so `use diesel_sharding::ShardedModel;` brings both).
pub use diesel_sharding_derive::ShardedModel;
