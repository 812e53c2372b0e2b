use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users", key = "user_id")]
struct Post {
    user_id: i64,
}

#[derive(ShardedModel)]
#[sharding(group = "users", stores_shard = self.shard)]
struct User {
    shard: i32,
}

fn main() {}
