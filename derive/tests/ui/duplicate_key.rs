use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users", key = user_id, group = "accounts")]
struct Post {
    user_id: i64,
}

fn main() {}
