use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users", stores_shard = shard)]
struct User {
    id: i64,
    shard: String,
}

fn main() {}
