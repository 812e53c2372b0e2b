//! The suite's PostgreSQL clusters: the `diesel-sharding-testing` crate's harness.
#[allow(unused_imports)]
pub(crate) use diesel_sharding_testing::postgres::*;
