use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(database = "default")]
struct Settings;

fn main() {}
