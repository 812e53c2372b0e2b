use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "users", key = user_id)]
struct Post(i64, String);

fn main() {}
