//! Support code shared by the integration tests.

pub(crate) mod mariadb_cluster;
pub(crate) mod pg_cluster;
