use diesel_sharding::ShardedModel;

// every mistake here is reported by one compile
#[derive(ShardedModel)]
#[sharding(group = users, key = usr_id, shard_by = user_id)]
#[sharding(key = user_id, database = "default")]
struct Post {
    #[sharding(key)]
    user_id: i64,
}

fn main() {}
