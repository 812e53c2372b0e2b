use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users")]
#[sharding(key = user_id)]
#[sharding(key = id)]
struct Post {
    id: i64,
    user_id: i64,
}

fn main() {}
