//! What `#[derive(ShardedModel)]` puts on a model: where it lives.

use std::borrow::Cow;

/// Where a model's rows live; the derive fills it from `#[sharding(...)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sharding {
    /// Spread over the shards of a group.
    Group {
        /// The shard group (`#[sharding(group = "users")]`).
        group: &'static str,
        /// How a row's shard is found.
        by: ShardBy,
    },
    /// On one named, unsharded database (`#[sharding(database = "default")]`).
    Database {
        /// The database's name in the settings.
        database: &'static str,
    },
}

/// How a sharded model's shard is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardBy {
    /// From a field, the shard key (`key = user_id`), through the group's bucketing.
    Key {
        /// The field's name.
        field: &'static str,
    },
    /// The model stores its own shard in a field (`stores_shard = shard`), chosen once by the
    /// group's bucketing and never changed.
    StoredShard {
        /// The field's name.
        field: &'static str,
    },
}

/// A model with shard metadata. Derive it: `#[derive(ShardedModel)]` with
/// `#[sharding(group = "..", key = field)]`, `#[sharding(group = "..", stores_shard = field)]`
/// or `#[sharding(database = "..")]`.
pub trait ShardedModel {
    /// Where the model's rows live.
    const SHARDING: Sharding;

    /// The type of the shard key (`()` for models without one).
    type Key: ShardKey + ?Sized;

    /// This row's shard key (`None` for models without one).
    fn shard_key(&self) -> Option<&Self::Key>;

    /// The shard this row stored (`stores_shard` models; `None` otherwise or when unset).
    fn stored_shard(&self) -> Option<i32>;

    /// Stores the shard chosen for this row (`stores_shard` models; does nothing otherwise).
    fn set_stored_shard(&mut self, shard: i32);
}

/// A type that can be a shard key: it hashes to the same 64 bits on every platform, in every
/// process and every version of this crate (django-sharding-library's `hash()` did not, its
/// issue #66).
///
/// Integers hash to their value (as two's complement `u64`), so `mod` bucketing of integer
/// keys is plain `key mod shards`; text hashes with 64-bit FNV-1a over its UTF-8 bytes.
pub trait ShardKey {
    /// The key's stable hash.
    fn stable_hash(&self) -> u64;

    /// The key as text, for the shard storage table.
    fn storage_key(&self) -> Cow<'_, str>;
}

/// 64-bit FNV-1a: offset basis 0xcbf29ce484222325, prime 0x100000001b3.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

macro_rules! integer_keys {
    ($($t:ty),*) => {$(
        impl ShardKey for $t {
            fn stable_hash(&self) -> u64 {
                *self as i64 as u64
            }
            fn storage_key(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}
integer_keys!(i16, i32, i64, u16, u32, u64);

impl ShardKey for str {
    fn stable_hash(&self) -> u64 {
        fnv1a64(self.as_bytes())
    }
    fn storage_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl ShardKey for String {
    fn stable_hash(&self) -> u64 {
        self.as_str().stable_hash()
    }
    fn storage_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl<T: ShardKey + ?Sized> ShardKey for &T {
    fn stable_hash(&self) -> u64 {
        (**self).stable_hash()
    }
    fn storage_key(&self) -> Cow<'_, str> {
        (**self).storage_key()
    }
}

/// `()`: the key of models without one. It never reaches bucketing.
impl ShardKey for () {
    fn stable_hash(&self) -> u64 {
        0
    }
    fn storage_key(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
}

/// A field type that can store a shard id (`stores_shard = field`).
pub trait StoredShard {
    /// The stored shard id, if set.
    fn get(&self) -> Option<i32>;
    /// Stores a shard id.
    fn set(&mut self, shard: i32);
}

impl StoredShard for i32 {
    fn get(&self) -> Option<i32> {
        Some(*self)
    }
    fn set(&mut self, shard: i32) {
        *self = shard;
    }
}

impl StoredShard for Option<i32> {
    fn get(&self) -> Option<i32> {
        *self
    }
    fn set(&mut self, shard: i32) {
        *self = Some(shard);
    }
}

impl StoredShard for i64 {
    fn get(&self) -> Option<i32> {
        i32::try_from(*self).ok()
    }
    fn set(&mut self, shard: i32) {
        *self = i64::from(shard);
    }
}

impl StoredShard for Option<i64> {
    fn get(&self) -> Option<i32> {
        self.and_then(|s| i32::try_from(s).ok())
    }
    fn set(&mut self, shard: i32) {
        *self = Some(i64::from(shard));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_fixed_values() {
        // documented values: changing them moves every `mod`-bucketed key
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!("user-42".stable_hash(), fnv1a64(b"user-42"));
        assert_eq!(42i64.stable_hash(), 42);
        assert_eq!(42i32.stable_hash(), 42);
        assert_eq!((-1i64).stable_hash(), u64::MAX);
        assert_eq!(String::from("x").stable_hash(), "x".stable_hash());
    }

    #[test]
    fn stored_shard_fields_get_and_set() {
        let mut s: Option<i32> = None;
        assert_eq!(StoredShard::get(&s), None);
        StoredShard::set(&mut s, 3);
        assert_eq!(StoredShard::get(&s), Some(3));
        let mut t: i64 = 0;
        StoredShard::set(&mut t, 7);
        assert_eq!(StoredShard::get(&t), Some(7));
    }
}
