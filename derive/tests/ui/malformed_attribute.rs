use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding]
struct Post {
    user_id: i64,
}

#[derive(ShardedModel)]
#[sharding(group, key = id)]
struct User {
    id: i64,
}

#[derive(ShardedModel)]
#[sharding(group = "users", key)]
struct Comment {
    user_id: i64,
}

fn main() {}
