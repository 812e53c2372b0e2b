use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = users, key = user_id)]
struct Post {
    user_id: i64,
}

#[derive(ShardedModel)]
#[sharding(database = 7)]
struct Country {
    code: String,
}

fn main() {}
