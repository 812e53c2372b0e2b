use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(database = "default", stores_shard = shard)]
struct Country {
    code: String,
    shard: i32,
}

fn main() {}
