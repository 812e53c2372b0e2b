//! The suite's MariaDB clusters: the `diesel-sharding-testing` crate's harness.
#[allow(unused_imports)]
pub(crate) use diesel_sharding_testing::mariadb::*;
