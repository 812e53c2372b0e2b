//! A web app whose visitors always see their own writes, with a replica that lags: axum,
//! diesel-async and sync Diesel behind [`diesel_sharding::web::ConsistencyLayer`].
//!
//! ```sh
//! cargo run --example axum_app --features tower,bb8             # serves until Ctrl-C
//! cargo run --example axum_app --features tower,bb8 -- --demo   # drives itself and exits
//! ```
//!
//! It starts a PostgreSQL primary and a streaming replica of its own in a temporary
//! directory (the PostgreSQL server binaries must be installed; with `DATABASE_URL` set it
//! uses that database as the primary and as its own "replica" instead), makes the replica
//! apply every change a second late, and serves the notes app (`app.rs`) on `ADDR` (default
//! `127.0.0.1:3000`):
//!
//! ```sh
//! curl -i -d body=hello http://127.0.0.1:3000/notes        # 303 to /notes/hello, and a cookie
//! curl -b 'consistency=...' http://127.0.0.1:3000/notes/hello   # 1 note, read on the primary
//! curl http://127.0.0.1:3000/notes/hello                     # no cookie: the lagging replica
//! ```
//!
//! With `--demo` it posts a note as a browser would (following the redirect with the cookie
//! it got), prints each page and which server served it, and exits.

mod app;

use std::error::Error;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel_sharding::{Cluster, Settings};

use diesel_sharding_testing::postgres as pg_cluster;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let demo = std::env::args().any(|a| a == "--demo");
    let own = match std::env::var("DATABASE_URL") {
        Ok(_) => None,
        Err(_) => {
            println!("no DATABASE_URL: starting a PostgreSQL primary and streaming replica");
            let pg = pg_cluster::PgCluster::start(1);
            pg.create_database("notes");
            pg.execute(pg_cluster::Node::Primary, "notes", app::SCHEMA);
            pg.wait_all_caught_up();
            // the replica applies every change a second late
            pg.set_apply_delay(0, Duration::from_secs(1));
            Some(pg)
        }
    };
    let (primary, replica) = match (&own, std::env::var("DATABASE_URL")) {
        (Some(pg), _) => (pg.primary_url("notes"), pg.replica_url(0, "notes")),
        (None, Ok(url)) => (url.clone(), url),
        (None, Err(_)) => unreachable!("a cluster was started"),
    };
    let cluster: Cluster<PgConnection> = Cluster::new(Settings::from_toml_str(&format!(
        "[pinning]\nseconds = 0\n\
         [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"100ms\"\n\
         [databases.default]\nurl = \"{primary}\"\n\
         [databases.default_replica]\nurl = \"{replica}\"\nprimary = \"default\"\n"
    ))?)?;
    if own.is_none() {
        let mut conn = cluster.get("default")?;
        diesel::RunQueryDsl::execute(diesel::sql_query(app::SCHEMA), &mut *conn)?;
    }
    let router = app::router(cluster)?;
    let addr = match (demo, std::env::var("ADDR")) {
        (true, _) => "127.0.0.1:0".to_owned(),
        (false, Ok(addr)) => addr,
        (false, Err(_)) => "127.0.0.1:3000".to_owned(),
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    if !demo {
        println!("serving the notes app on http://{addr} (Ctrl-C stops it)");
        server.await??;
        return Ok(());
    }
    let body = format!("hello{}", std::process::id());
    let base = format!("http://{addr}");
    let report = tokio::task::spawn_blocking(move || browse(&base, &body)).await?;
    server.abort();
    report.map_err(|e| e as Box<dyn Error>)
}

/// A visitor posts the form and follows the redirect with the cookie it was given; another
/// visitor reads the same page without it; the first reads it again once the replica
/// has the note.
fn browse(base: &str, body: &str) -> Result<(), Box<dyn Error + Send + Sync>> {
    // (redirects followed by hand, to show them and to send the cookie)
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let posted = agent
        .post(&format!("{base}/notes"))
        .send_form(&[("body", body)])?;
    let cookie = posted
        .header("set-cookie")
        .ok_or("no cookie after the post")?;
    let location = posted
        .header("location")
        .ok_or("no redirect after the post")?;
    println!(
        "POST /notes               -> {} {}",
        posted.status(),
        posted.status_text()
    );
    println!("  Set-Cookie: {cookie}");
    let pair = cookie.split(';').next().unwrap_or_default();
    let page = |cookie: Option<&str>| -> Result<String, Box<dyn Error + Send + Sync>> {
        let request = agent.get(&format!("{base}{location}"));
        let request = match cookie {
            Some(cookie) => request.set("Cookie", cookie),
            None => request,
        };
        Ok(request.call()?.into_string()?.trim().to_owned())
    };
    println!("GET {location:<21} -> {}", page(Some(pair))?);
    println!("  without the cookie      -> {}", page(None)?);
    // a moment later the replica has the note: the same visitor's page comes from there
    std::thread::sleep(Duration::from_millis(2500));
    println!("2.5 s later, same page    -> {}", page(Some(pair))?);
    Ok(())
}
