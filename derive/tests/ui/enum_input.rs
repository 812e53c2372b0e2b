use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(database = "default")]
enum Country {
    France,
}

fn main() {}
