use diesel_sharding::ShardedModel;

#[derive(ShardedModel)]
#[sharding(group = "points", key = x)]
struct Point {
    x: f64,
}

// a generic key needs the bound on the struct
#[derive(ShardedModel)]
#[sharding(group = "users", key = user_id)]
struct Keyed<K> {
    user_id: K,
}

fn main() {}
