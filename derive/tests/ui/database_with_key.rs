use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(database = "default", key = code)]
struct Country {
    code: String,
}

fn main() {}
