//! `#[derive(ShardedModel)]` for [diesel-sharding](https://docs.rs/diesel-sharding).
//!
//! A sharded application must know, for every model, where its rows live: spread over the
//! shards of a group, placed by a shard key or by a shard the row stores, or on one unsharded
//! database. The derive reads that from `#[sharding(...)]` on the struct and implements
//! `diesel_sharding::ShardedModel`. Use it through the runtime crate, which re-exports it next
//! to the trait: `use diesel_sharding::ShardedModel;` brings both.
//!
//! # Attributes
//!
//! All keys go in `#[sharding(...)]` on the struct; they may be split over several
//! `#[sharding]` attributes. Exactly one of three forms:
//!
//! | form | the model | `SHARDING` |
//! |---|---|---|
//! | `group = "users", key = user_id` | is spread over the shards of group `users`; a row's shard comes from its shard key, the field `user_id`, through the group's bucketing | `Sharding::Group { group: "users", by: ShardBy::Key { field: "user_id" } }` |
//! | `group = "users", stores_shard = shard` | is spread over group `users`; a row stores its own shard in the field `shard`, chosen once and never changed | `Sharding::Group { group: "users", by: ShardBy::StoredShard { field: "shard" } }` |
//! | `database = "default"` | lives on the one unsharded database `default` | `Sharding::Database { database: "default" }` |
//!
//! * `group` and `database` take a string literal, `key` and `stores_shard` a field name.
//! * The `key` field's type must implement `ShardKey` (integers, `String`, `str` references);
//!   it becomes `ShardedModel::Key`. The `stores_shard` field's type must implement
//!   `StoredShard` (`i32`, `i64`, and their `Option`s).
//! * Unknown and duplicate keys are errors, as are invalid combinations, fields that do not
//!   exist and fields of the wrong type; all of them are reported at once.
//!
//! ```
//! use diesel_sharding::sharding::{ShardBy, Sharding};
//! use diesel_sharding::ShardedModel;
//!
//! #[derive(ShardedModel)]
//! #[sharding(group = "users", key = user_id)]
//! struct Post {
//!     id: i64,
//!     user_id: i64,
//!     body: String,
//! }
//!
//! #[derive(ShardedModel)]
//! #[sharding(group = "users", stores_shard = shard)]
//! struct User {
//!     id: i64,
//!     shard: Option<i32>,
//! }
//!
//! #[derive(ShardedModel)]
//! #[sharding(database = "default")]
//! struct Country {
//!     code: String,
//! }
//!
//! let post = Post { id: 1, user_id: 42, body: "hi".into() };
//! assert_eq!(post.shard_key(), Some(&42));
//! assert_eq!(
//!     Post::SHARDING,
//!     Sharding::Group { group: "users", by: ShardBy::Key { field: "user_id" } },
//! );
//!
//! let mut user = User { id: 42, shard: None };
//! user.set_stored_shard(3);
//! assert_eq!(user.stored_shard(), Some(3));
//!
//! assert_eq!(Country::SHARDING, Sharding::Database { database: "default" });
//! # let _ = (post.id, post.body, user.id, Country { code: "fr".into() }.code);
//! ```

mod attrs;
mod sharded_model;

use proc_macro::TokenStream;

/// Implements `diesel_sharding::ShardedModel` from `#[sharding(...)]` on the struct, in one of
/// three forms:
///
/// * `#[sharding(group = "users", key = user_id)]`: sharded over the group `users` by the
///   shard key field `user_id`, whose type (`ShardKey`) becomes `ShardedModel::Key`;
/// * `#[sharding(group = "users", stores_shard = shard)]`: sharded over `users`, the row
///   storing its shard in the field `shard` (`StoredShard`: `i32`, `i64` or their `Option`s);
/// * `#[sharding(database = "default")]`: on the one unsharded database `default`.
///
/// ```
/// use diesel_sharding::sharding::{ShardBy, Sharding};
/// use diesel_sharding::ShardedModel;
///
/// #[derive(ShardedModel)]
/// #[sharding(group = "users", key = user_id)]
/// struct Post {
///     user_id: i64,
/// }
///
/// let by = ShardBy::Key { field: "user_id" };
/// assert_eq!(Post::SHARDING, Sharding::Group { group: "users", by });
/// assert_eq!(Post { user_id: 42 }.shard_key(), Some(&42));
/// ```
///
/// The [crate docs](crate) describe every rule the derive checks.
#[proc_macro_derive(ShardedModel, attributes(sharding))]
pub fn derive_sharded_model(input: TokenStream) -> TokenStream {
    derive_sharded_model_inner(input.into()).into()
}

fn derive_sharded_model_inner(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    syn::parse2(input)
        .and_then(sharded_model::derive)
        .unwrap_or_else(syn::Error::into_compile_error)
}
