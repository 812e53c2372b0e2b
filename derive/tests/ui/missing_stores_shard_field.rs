use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users", stores_shard = shard_id)]
struct User {
    id: i64,
    shard: Option<i32>,
}

fn main() {}
