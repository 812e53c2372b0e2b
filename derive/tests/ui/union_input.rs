use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(database = "default")]
union Code {
    number: u32,
    bytes: [u8; 4],
}

fn main() {}
