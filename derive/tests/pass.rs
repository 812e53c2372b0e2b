//! `#[derive(ShardedModel)]` on the three model shapes, on generic models and next to diesel's
//! own derives, used from outside the runtime crate as applications use it.

use diesel_sharding::sharding::{ShardBy, Sharding};
use diesel_sharding::ShardedModel;

/// Sharded over `users` by the shard key `user_id`.
#[derive(ShardedModel)]
#[sharding(group = "users", key = user_id)]
struct Post {
    id: i64,
    user_id: i64,
    body: String,
}

/// On the unsharded `default` database.
#[derive(ShardedModel)]
#[sharding(database = "default")]
struct Country {
    code: String,
}

/// Sharded over `users`, storing its own shard.
#[derive(ShardedModel)]
#[sharding(group = "users", stores_shard = shard)]
struct User {
    id: i64,
    shard: Option<i32>,
}

/// The settings split over several attributes, in any order.
#[derive(ShardedModel)]
#[sharding(key = name)]
#[sharding(group = "accounts")]
struct Account {
    name: String,
}

/// A borrowed shard key.
#[derive(ShardedModel)]
#[sharding(group = "users", key = user_id)]
struct Ref<'a> {
    user_id: &'a str,
}

/// A generic shard key: the bound is the model's to state.
#[derive(ShardedModel)]
#[sharding(group = "users", key = user_id)]
struct Keyed<K>
where
    K: diesel_sharding::ShardKey,
{
    user_id: K,
}

/// A generic model storing its shard in a non-optional field.
#[derive(ShardedModel)]
#[sharding(group = "tenants", stores_shard = r#type)]
struct Tenant<T> {
    data: T,
    r#type: i64,
}

fn assert_key_type<M: ShardedModel<Key = K>, K: ?Sized>() {}

#[test]
fn key_models_shard_by_their_key_field() {
    assert_eq!(
        Post::SHARDING,
        Sharding::Group {
            group: "users",
            by: ShardBy::Key { field: "user_id" },
        }
    );
    assert_key_type::<Post, i64>();
    let mut post = Post {
        id: 1,
        user_id: 42,
        body: "hello".into(),
    };
    assert_eq!(post.shard_key(), Some(&42));
    assert_eq!(post.stored_shard(), None);
    post.set_stored_shard(3);
    assert_eq!(post.stored_shard(), None);
    assert_eq!(
        (post.id, post.user_id, post.body.as_str()),
        (1, 42, "hello")
    );
}

#[test]
fn database_models_have_neither_key_nor_stored_shard() {
    assert_eq!(
        Country::SHARDING,
        Sharding::Database {
            database: "default"
        }
    );
    assert_key_type::<Country, ()>();
    let mut country = Country { code: "fr".into() };
    assert_eq!(country.shard_key(), None);
    assert_eq!(country.stored_shard(), None);
    country.set_stored_shard(3);
    assert_eq!(country.stored_shard(), None);
    assert_eq!(country.code, "fr");
}

#[test]
fn stores_shard_models_read_and_write_their_shard_field() {
    assert_eq!(
        User::SHARDING,
        Sharding::Group {
            group: "users",
            by: ShardBy::StoredShard { field: "shard" },
        }
    );
    assert_key_type::<User, ()>();
    let mut user = User { id: 7, shard: None };
    assert_eq!(user.shard_key(), None);
    assert_eq!(user.stored_shard(), None);
    user.set_stored_shard(3);
    assert_eq!(user.stored_shard(), Some(3));
    assert_eq!((user.id, user.shard), (7, Some(3)));
}

#[test]
fn settings_accumulate_across_attributes() {
    assert_eq!(
        Account::SHARDING,
        Sharding::Group {
            group: "accounts",
            by: ShardBy::Key { field: "name" },
        }
    );
    assert_key_type::<Account, String>();
    let account = Account { name: "ada".into() };
    assert_eq!(account.shard_key().map(String::as_str), Some("ada"));
}

#[test]
fn generic_and_borrowing_models_keep_their_parameters() {
    let name = String::from("user-42");
    let borrowed = Ref { user_id: &name };
    assert_eq!(borrowed.shard_key(), Some(&"user-42"));
    assert_key_type::<Ref<'_>, &str>();

    let keyed = Keyed { user_id: 42u32 };
    assert_eq!(keyed.shard_key(), Some(&42u32));
    assert_key_type::<Keyed<u32>, u32>();

    let mut tenant = Tenant {
        data: "x",
        r#type: 0,
    };
    assert_eq!(
        Tenant::<&str>::SHARDING,
        Sharding::Group {
            group: "tenants",
            by: ShardBy::StoredShard { field: "type" },
        }
    );
    tenant.set_stored_shard(5);
    assert_eq!(tenant.stored_shard(), Some(5));
    assert_eq!((tenant.data, tenant.r#type), ("x", 5));
}

mod with_diesel {
    //! The derive next to diesel's: both read their own attributes and ignore the other's.

    use diesel::prelude::*;
    use diesel_sharding::sharding::{ShardBy, Sharding};
    use diesel_sharding::ShardedModel;

    diesel::table! {
        posts (id) {
            id -> BigInt,
            user_id -> BigInt,
            body -> Text,
        }
    }

    /// A diesel model that is also sharded.
    #[derive(Debug, PartialEq, Queryable, Selectable, Insertable, ShardedModel)]
    #[diesel(table_name = posts, check_for_backend(diesel::sqlite::Sqlite))]
    #[sharding(group = "users", key = user_id)]
    struct Post {
        id: i64,
        user_id: i64,
        body: String,
    }

    #[test]
    fn diesel_models_derive_sharded_model_too() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        diesel::sql_query(
            "CREATE TABLE posts (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, body TEXT NOT NULL)",
        )
        .execute(&mut conn)
        .unwrap();
        let post = Post {
            id: 1,
            user_id: 42,
            body: "hello".into(),
        };
        diesel::insert_into(posts::table)
            .values(&post)
            .execute(&mut conn)
            .unwrap();
        let loaded: Post = posts::table
            .select(Post::as_select())
            .first(&mut conn)
            .unwrap();
        assert_eq!(loaded, post);
        assert_eq!(loaded.shard_key(), Some(&42));
        assert_eq!(
            Post::SHARDING,
            Sharding::Group {
                group: "users",
                by: ShardBy::Key { field: "user_id" },
            }
        );
    }
}
