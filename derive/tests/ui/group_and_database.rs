use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users", key = user_id, database = "default")]
struct Post {
    user_id: i64,
}

fn main() {}
