use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users", key = id, stores_shard = shard)]
struct User {
    id: i64,
    shard: Option<i32>,
}

fn main() {}
