use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
struct Post {
    user_id: i64,
}

#[derive(ShardedModel)]
#[sharding(key = user_id)]
struct Comment {
    user_id: i64,
}

fn main() {}
