//! The router's metrics in Prometheus's text format: the exporter installed first, a few
//! routed statements on SQLite (no server needed), then what a scrape would read.
//!
//! ```sh
//! cargo run --example prometheus_metrics --features metrics
//! ```
//!
//! A service serves `handle.render()` on its `/metrics` route (or lets the exporter's own
//! HTTP listener do it: `metrics-exporter-prometheus` with its `http-listener` feature).

use std::error::Error;

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_sharding::{Cluster, Settings};
use metrics_exporter_prometheus::PrometheusBuilder;

fn main() -> Result<(), Box<dyn Error>> {
    // first the exporter: the cluster registers its metrics when it is built
    let handle = PrometheusBuilder::new().install_recorder()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.sqlite");
    let cluster: Cluster<SqliteConnection> = Cluster::new(Settings::from_toml_str(&format!(
        "[pinning]\nseconds = 0\n\
         [databases.default]\nurl = \"{0}\"\n\
         [databases.default_replica]\nurl = \"{0}\"\nprimary = \"default\"\n",
        path.display()
    ))?)?;
    let mut conn = cluster.get("default")?;
    diesel::sql_query("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        .execute(&mut conn)?;
    for body in ["a", "b", "c"] {
        diesel::sql_query("INSERT INTO notes (body) VALUES (?)")
            .bind::<diesel::sql_types::Text, _>(body)
            .execute(&mut conn)?;
    }
    for _ in 0..5 {
        let _: Vec<i32> = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
            "(SELECT count(*) FROM notes)",
        ))
        .load(&mut conn)?;
    }
    drop(conn);
    // what a scrape reads (the non-zero samples)
    for line in handle.render().lines() {
        if line.starts_with('#') || line.ends_with(" 0") || line.is_empty() {
            continue;
        }
        println!("{line}");
    }
    Ok(())
}
