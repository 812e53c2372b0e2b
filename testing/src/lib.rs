//! Real replicated database clusters for tests (a dev-dependency): the harness
//! `diesel-sharding`'s own suite runs on, for applications that want to test their code
//! against lagging replicas.
//!
//! * [`postgres::PgCluster`]: a PostgreSQL primary and N streaming replicas;
//! * [`mariadb::MariaCluster`]: a MariaDB primary and N GTID replicas.
//!
//! Each starts its servers on free loopback ports in a temporary directory and stops them
//! when dropped (also when the test panics). Lag is injected per replica (pause replay, an
//! apply delay, kill, freeze with SIGSTOP), and each server keeps evidence of the statements
//! it ran (`pg_stat_statements`, MariaDB's general log and user statistics), so a test checks
//! where a statement ran on the servers themselves. A missing server binary makes `start`
//! panic with a message naming the package: tests fail, they never skip.
//!
//! ```no_run
//! use diesel_sharding_testing::postgres::{Node, PgCluster};
//!
//! // a primary and one replica that applies every change 200 ms late
//! let pg = PgCluster::start(1);
//! pg.create_database("app");
//! pg.execute(Node::Primary, "app", "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body TEXT)");
//! pg.wait_all_caught_up();
//! pg.set_apply_delay(0, std::time::Duration::from_millis(200));
//! let (primary_url, replica_url) = (pg.primary_url("app"), pg.replica_url(0, "app"));
//! // ... build the application's cluster on these URLs, run the code under test ...
//! pg.reset_all_statement_stats();
//! // ... then check where its statements ran:
//! let on_replica = pg.statement_calls(Node::Replica(0), "SELECT %FROM \"notes\"%");
//! # let _ = (primary_url, replica_url, on_replica);
//! ```

pub mod mariadb;
pub mod postgres;
