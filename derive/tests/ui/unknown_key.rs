use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users", key = user_id, shard_by = user_id)]
struct Post {
    user_id: i64,
}

fn main() {}
