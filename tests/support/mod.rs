//! Support code shared by the integration tests.

pub(crate) mod mariadb_cluster;
#[cfg(feature = "mysql")]
pub(crate) mod mysql_users;
pub(crate) mod pg_cluster;
#[cfg(feature = "postgres")]
pub(crate) mod pg_users;
pub(crate) mod redis_server;
