//! Users spread over three SQLite shards, posts kept on their user's shard, reads through the
//! replicas, and a count over all shards. No server needed:
//!
//! ```sh
//! cargo run --example sharded_users
//! ```

use std::error::Error;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_sharding::{pin, Cluster, Settings, ShardedModel};

mod schema {
    diesel::table! {
        users (id) {
            id -> BigInt,
            name -> Text,
            shard -> Nullable<Integer>,
        }
    }

    diesel::table! {
        posts (id) {
            id -> BigInt,
            user_id -> BigInt,
            body -> Text,
        }
    }
}
use schema::{posts, users};

/// A user stores the shard it was put on.
#[derive(Queryable, Insertable, ShardedModel, Debug)]
#[diesel(table_name = users)]
#[sharding(group = "users", stores_shard = shard)]
struct User {
    id: i64,
    name: String,
    shard: Option<i32>,
}

/// A post lives on its user's shard.
#[derive(Queryable, Insertable, ShardedModel, Debug)]
#[diesel(table_name = posts)]
#[sharding(group = "users", key = user_id)]
struct Post {
    id: i64,
    user_id: i64,
    body: String,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY NOT NULL, name TEXT NOT NULL, shard INTEGER);
    CREATE TABLE IF NOT EXISTS posts (id BIGINT PRIMARY KEY NOT NULL, user_id BIGINT NOT NULL, body TEXT NOT NULL);
";

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let file = |name: &str| dir.path().join(name).display().to_string();
    // three shards, each with a read-only replica handle on its file; a directory database
    let mut toml = format!(
        "[pinning]\nseconds = 0\n\
         [shard_groups.users]\nbucketing = \"round_robin\"\nstorage = \"directory\"\n\
         [databases.directory]\nurl = \"{}\"\n",
        file("directory.sqlite")
    );
    for id in 0..3 {
        toml += &format!(
            "[databases.users_{id}]\nurl = \"{f}\"\nshard_group = \"users\"\nshard_id = {id}\n\
             [databases.users_{id}_replica]\nurl = \"{f}\"\nprimary = \"users_{id}\"\n",
            f = file(&format!("users_{id}.sqlite"))
        );
    }
    let cluster = Cluster::<SqliteConnection>::new(Settings::from_toml_str(&toml)?)?;
    cluster.check::<User>()?;
    cluster.check::<Post>()?;

    // the schema on every shard, and only there
    let created = cluster.on_all_shards("users", |conn| conn.batch_execute(SCHEMA))?;
    for r in &created {
        r.result.as_ref().map_err(|e| e.to_string())?;
    }

    // users: a shard picked round-robin, a global id that encodes it
    for name in ["ada", "grace", "linus", "barbara", "ken", "dennis"] {
        let mut user = User {
            id: 0,
            name: name.into(),
            shard: None,
        };
        let shard = cluster.assign_shard(&mut user)?;
        user.id = cluster.next_id(&shard)?;
        // posts are keyed by user id: remember the user's shard for that key
        cluster.remember_shard("users", &user.id, &shard)?;
        let mut conn = cluster.get_for(&user)?;
        diesel::insert_into(users::table)
            .values(&user)
            .execute(&mut conn)?;
        println!("{name:<8} id {:>20} -> {shard}", user.id);

        // two posts, routed by user id alone
        for n in 0..2 {
            let shard = cluster.shard_for::<Post>(&user.id)?;
            let post = Post {
                id: cluster.next_id(&shard)?,
                user_id: user.id,
                body: format!("post {n} of {name}"),
            };
            let mut conn = cluster.get_for(&post)?;
            diesel::insert_into(posts::table)
                .values(&post)
                .execute(&mut conn)?;
        }
        assert_eq!(
            cluster.shard_of_id("users", user.id)?,
            cluster.shard_for::<Post>(&user.id)?
        );
    }
    pin::unpin_this_thread();

    // reads go through the replicas; counts over all shards, in shard-id order
    let counts = cluster.on_all_shards("users", |conn| {
        let n: i64 = posts::table.count().get_result(conn)?;
        Ok((n, conn.last_route().map(|r| r.server)))
    })?;
    let mut total = 0;
    for r in counts {
        let (n, server) = r.result?;
        total += n;
        println!(
            "{}: {n} posts (read from {})",
            r.shard,
            server.unwrap_or_default()
        );
    }
    println!("{total} posts over all shards");
    assert_eq!(total, 12);
    Ok(())
}
