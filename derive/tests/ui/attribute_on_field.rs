use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users", key = user_id)]
struct Post {
    #[sharding(key)]
    user_id: i64,
}

fn main() {}
