use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users")]
struct Post {
    user_id: i64,
}

fn main() {}
