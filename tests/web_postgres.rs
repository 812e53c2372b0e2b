//! The web middleware (feature `tower`) on a real PostgreSQL primary and a replica that
//! applies every change late: the axum example's notes app, driven over loopback by a real
//! HTTP client (ureq). The page after a form post always shows the new row, read on the
//! primary; later pages read from the replica once it has the row; both checked on the
//! servers (`pg_stat_statements`).
#![cfg(all(feature = "tower", feature = "bb8", feature = "postgres"))]

mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/axum_app/app.rs"]
mod app;

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel_sharding::web::ConsistencyLayer;
use diesel_sharding::{Cluster, Settings};
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "notes";
const COUNT: &str = "SELECT COUNT(*) FROM \"notes\" WHERE (\"notes\".\"body\" = $1)";

struct Server {
    pg: PgCluster,
    base: String,
    _runtime: tokio::runtime::Runtime,
}

/// The notes app on a primary and a replica applying `delay` late, under `settings`, served
/// on a free loopback port.
fn serve(settings: &str, delay: Duration) -> Server {
    serve_with(settings, delay, None)
}

/// [`serve`], with the token in request and response headers named `header`, if any.
fn serve_with(settings: &str, delay: Duration, header: Option<&'static str>) -> Server {
    let pg = PgCluster::start(1);
    pg.create_database(DB);
    pg.execute(Node::Primary, DB, app::SCHEMA);
    pg.wait_all_caught_up();
    pg.set_apply_delay(0, delay);
    let cluster: Cluster<PgConnection> = Cluster::new(
        Settings::from_toml_str(&format!(
            "[pinning]\nseconds = 0\n\
             [consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"\n{settings}\n\
             [databases.default]\nurl = \"{}\"\npool_size = 4\n\
             [databases.default_replica]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(0, DB),
        ))
        .unwrap(),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.block_on(async {
        let router = match header {
            None => app::router(cluster).unwrap(),
            Some(name) => app::routes(&cluster)
                .unwrap()
                .layer(ConsistencyLayer::new(cluster).header(http::HeaderName::from_static(name))),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    });
    pg.reset_all_statement_stats();
    Server {
        pg,
        base: format!("http://{addr}"),
        _runtime: runtime,
    }
}

fn agent() -> ureq::Agent {
    // redirects are followed by hand, with the cookie
    ureq::AgentBuilder::new().redirects(0).build()
}

/// Posts the form at `path`: the redirect's target and the cookie set (name=value, and the
/// whole header).
fn post(
    s: &Server,
    path: &str,
    body: &str,
    cookie: Option<&str>,
) -> (String, Option<(String, String)>) {
    let request = agent().post(&format!("{}{path}", s.base));
    let request = match cookie {
        Some(c) => request.set("Cookie", c),
        None => request,
    };
    let response = request.send_form(&[("body", body)]).unwrap();
    assert_eq!(response.status(), 303, "the post redirects");
    let location = response.header("location").unwrap().to_owned();
    let cookie = response
        .header("set-cookie")
        .map(|c| (c.split(';').next().unwrap().trim().to_owned(), c.to_owned()));
    (location, cookie)
}

/// The page at `path`: the count it shows and where it was read.
fn page(s: &Server, path: &str, cookie: Option<&str>) -> (i64, String) {
    let request = agent().get(&format!("{}{path}", s.base));
    let request = match cookie {
        Some(c) => request.set("Cookie", c),
        None => request,
    };
    let text = request.call().unwrap().into_string().unwrap();
    let count = text.split_whitespace().next().unwrap().parse().unwrap();
    let server = text
        .split("read on ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    (count, server)
}

#[test]
fn the_page_after_a_post_shows_the_new_row_and_later_pages_read_the_replica() {
    let s = serve("", Duration::from_millis(800));
    for prefix in ["", "/sync"] {
        for i in 0..10 {
            let body = format!("note{i}{}", prefix.replace('/', "x"));
            let (location, cookie) = post(&s, &format!("{prefix}/notes"), &body, None);
            assert_eq!(location, format!("{prefix}/notes/{body}"));
            let (pair, header) = cookie.expect("the post set the token cookie");
            assert!(pair.starts_with("consistency="), "{header}");
            for attribute in ["Max-Age=600", "HttpOnly", "SameSite=Lax", "Path=/"] {
                assert!(header.contains(attribute), "{attribute} missing: {header}");
            }
            // the browser follows the redirect with its cookie: the row is there
            let (count, server) = page(&s, &location, Some(&pair));
            assert_eq!(count, 1, "{prefix}: the page after the post missed the row");
            assert_eq!(server, "default", "{prefix}: read on the primary");
            // a visitor without the cookie reads the lagging replica, which lacks the row:
            // the cookie is what made the difference
            if i == 0 {
                let (count, server) = page(&s, &location, None);
                assert_eq!((count, server.as_str()), (0, "default_replica"), "{prefix}");
            }
        }
    }
    // the servers agree: the 20 pages after the posts read the primary, the 2 without the
    // cookie the replica, and no write ran on the replica
    assert_eq!(s.pg.statement_calls(Node::Primary, COUNT), 20);
    assert_eq!(s.pg.statement_calls(Node::Replica(0), COUNT), 2);
    assert_eq!(
        s.pg.statement_calls(Node::Replica(0), "INSERT%"),
        0,
        "a write on the replica"
    );
    // later: the replica has the row, and the same visitor's page is read there
    let (location, cookie) = post(&s, "/notes", "later", None);
    let (pair, _) = cookie.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = page(&s, &location, Some(&pair));
    while got.1 != "default_replica" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        got = page(&s, &location, Some(&pair));
    }
    assert_eq!(got, (1, "default_replica".to_owned()));
    assert_eq!(s.pg.statement_calls(Node::Replica(0), COUNT), 3);
}

#[test]
fn a_bad_or_forged_token_is_ignored_never_a_server_error() {
    let s = serve("token_secret = \"0123456789abcdef0123\"", Duration::ZERO);
    let (location, cookie) = post(&s, "/notes", "signed", None);
    let (pair, _) = cookie.unwrap();
    assert!(pair.contains('!'), "the token is signed: {pair}");
    assert_eq!(page(&s, &location, Some(&pair)).0, 1);
    let forged = pair.replace('!', "!00");
    for bad in [
        "consistency=garbage".to_owned(),
        "consistency=%ZZ%".to_owned(),
        "consistency=".to_owned(),
        forged,
        // unsigned: refused by a cluster with a secret
        pair.split('!')
            .next()
            .unwrap()
            .trim_end_matches('.')
            .to_owned(),
        format!("{pair}; consistency=garbage"),
        "other=1; consistency=v9.x".to_owned(),
    ] {
        let request = agent()
            .get(&format!("{}{location}", s.base))
            .set("Cookie", &bad);
        let response = request.call().unwrap_or_else(|e| panic!("{bad}: {e}"));
        assert_eq!(response.status(), 200, "{bad}");
    }
}

#[test]
fn api_clients_carry_the_token_in_a_header() {
    let s = serve_with("", Duration::from_millis(800), Some("x-consistency"));
    let posted = agent()
        .post(&format!("{}/notes", s.base))
        .send_form(&[("body", "api")])
        .unwrap();
    assert!(
        posted.header("set-cookie").is_none(),
        "no cookie in header mode"
    );
    let token = posted
        .header("x-consistency")
        .expect("the token header")
        .to_owned();
    let location = posted.header("location").unwrap().to_owned();
    let read = |token: Option<&str>| {
        let request = agent().get(&format!("{}{location}", s.base));
        let request = match token {
            Some(t) => request.set("x-consistency", t),
            None => request,
        };
        request.call().unwrap().into_string().unwrap()
    };
    assert!(read(Some(&token)).starts_with("1 note(s) 'api' (read on default:"));
    assert!(read(None).starts_with("0 note(s) 'api' (read on default_replica:"));
}
