//! Support code shared by the integration tests.

pub(crate) mod pg_cluster;
