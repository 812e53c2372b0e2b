use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users", key = user)]
struct Post {
    id: i64,
    user_id: i64,
    body: String,
}

fn main() {}
