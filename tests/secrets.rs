//! No password in any output: for every spelling of a PostgreSQL URL that libpq accepts (and
//! some it rejects), the password never appears in `Debug` of the settings, the cluster, its
//! pools and stats, in any error, or in any tracing event down to TRACE. The servers named
//! are closed loopback ports, so every connection attempt fails and its error is checked too.
#![cfg(feature = "postgres")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use diesel::connection::Connection;
use diesel::pg::PgConnection;
use diesel::RunQueryDsl;
use diesel_sharding::{Cluster, DatabaseSettings, RoutedConnection, Settings};

/// The secret in every form; `SECRET_PARTS` must not appear either.
const SECRET: &str = "Hunter2Zq";

/// URL forms, each holding the secret. Ports 1 and 2 are closed on loopback.
fn forms() -> Vec<String> {
    let s = SECRET;
    vec![
        format!("postgres://u:{s}@127.0.0.1:1/db"),
        format!("postgresql://u:{s}@127.0.0.1:1/db"),
        format!("postgres://u:{s}?x@127.0.0.1:1/db"),
        format!("postgres://u:{s}#x@127.0.0.1:1/db"),
        format!("postgres://u:{s}/x@127.0.0.1:1/db"),
        format!("postgres://u:Hunter%32Zq@127.0.0.1:1/db"),
        format!("postgres://127.0.0.1:1/db?user=u&password={s}"),
        format!("postgres://127.0.0.1:1/db?password={s}&sslmode=disable"),
        format!("postgres://127.0.0.1:1/db?pass%77ord={s}"),
        format!("postgres://u:{s}@127.0.0.1:1/db?connect_timeout=1"),
        format!("host=127.0.0.1 port=1 dbname=db user=u password={s}"),
        format!("host=127.0.0.1 port=1 password = {s} dbname=db"),
        format!("host=127.0.0.1 port=1\tpassword={s} dbname=db"),
        format!("host=127.0.0.1 port=1\npassword={s} dbname=db"),
        format!("host=127.0.0.1 port=1 password='{s} with space' dbname=db"),
        format!("host=127.0.0.1 port=1 password='x\\'{s}' dbname=db"),
        format!("PASSWORD={s} host=127.0.0.1 port=1 dbname=db"),
        format!("postgres://u:{s}@[::1]:1/db"),
        format!("postgres://u:{s}@127.0.0.1:1,127.0.0.1:2/db"),
        format!("postgres://u:{s}:with:colons@127.0.0.1:1/db"),
        format!("postgres://u:{s}@@127.0.0.1:1/db"),
        format!("postgres://u%40x:{s}@127.0.0.1:1/db"),
        format!("postgres://u:{s} x@127.0.0.1:1/db"),
    ]
}

/// Collects everything the tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_hidden(what: &str, form: &str, text: &str) {
    for needle in [SECRET, "Hunter2", "Hunter%32"] {
        assert!(
            !text.contains(needle),
            "{what} shows the password of `{}`:\n{text}",
            form.escape_debug()
        );
    }
}

/// The async connection's errors and `Debug` (feature `async`).
#[cfg(feature = "async")]
macro_rules! async_paths {
    ($rt:expr, $cluster:expr, $url:expr) => {
        $rt.block_on(async {
            let mut conn = $cluster.get_async("default").await.unwrap();
            let err = diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), &mut conn)
                .await
                .expect_err("nothing listens there");
            assert_hidden("an async query error", $url, &format!("{err} {err:?}"));
            let Err(err) = conn.primary().await.map(drop) else {
                panic!("nothing listens there")
            };
            assert_hidden("an async connect error", $url, &format!("{err} {err:?}"));
            let Err(err) = conn.replica().await.map(drop) else {
                panic!("nothing listens there")
            };
            assert_hidden("an async replica error", $url, &format!("{err} {err:?}"));
            assert_hidden("Debug of the async connection", $url, &format!("{conn:?}"));
        })
    };
}

/// A bb8 pool's `Debug` and its connection's error (features `async`, `bb8`).
#[cfg(feature = "bb8")]
macro_rules! bb8_paths {
    ($rt:expr, $cluster:expr, $url:expr) => {
        $rt.block_on(async {
            // (no ping at checkout: the checkout succeeds, the first statement fails)
            let pool = $cluster.bb8_pool("default").unwrap();
            assert_hidden("Debug of the bb8 pool", $url, &format!("{pool:?}"));
            let mut conn = pool.get().await.unwrap();
            let err = diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), &mut *conn)
                .await
                .expect_err("nothing listens there");
            assert_hidden("a bb8 connection's error", $url, &format!("{err} {err:?}"));
        })
    };
}

#[test]
fn no_output_path_shows_a_password_in_any_url_form() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let forms = forms();
    assert!(forms.len() >= 20);
    #[cfg(feature = "async")]
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for url in &forms {
        let settings = Settings::new()
            .database("default", DatabaseSettings::primary(url.clone()))
            .database(
                "default_replica",
                DatabaseSettings::replica(url.clone(), "default"),
            );
        assert_hidden("Debug of Settings", url, &format!("{settings:?}"));
        assert_hidden("{:#?} of Settings", url, &format!("{settings:#?}"));
        let cluster = match Cluster::<PgConnection>::new(settings) {
            Ok(c) => c,
            Err(e) => {
                assert_hidden("a settings error", url, &format!("{e} {e:?}"));
                continue;
            }
        };
        assert_hidden(
            "Debug of Cluster",
            url,
            &format!("{cluster:?} {cluster:#?}"),
        );
        let pool = cluster.pool("default").unwrap();
        assert_hidden("Debug of the pool", url, &format!("{pool:?}"));
        let mut conn = cluster.get("default").unwrap();
        let read = diesel::sql_query("SELECT 1").execute(&mut conn);
        let err = read.expect_err("nothing listens there");
        assert_hidden("a query error", url, &format!("{err} {err:?}"));
        let read = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
            .load::<i32>(&mut conn);
        let err = read.expect_err("nothing listens there");
        assert_hidden("a read error", url, &format!("{err} {err:?}"));
        assert_hidden("Debug of the connection", url, &format!("{:?}", *conn));
        assert_hidden("Debug of stats", url, &format!("{:?}", cluster.stats()));
        match RoutedConnection::<PgConnection>::establish(url) {
            Ok(_) => panic!("nothing listens there"),
            Err(e) => assert_hidden("a standalone connect error", url, &format!("{e} {e:?}")),
        }
        #[cfg(feature = "async")]
        async_paths!(rt, cluster, url);
        #[cfg(feature = "bb8")]
        bb8_paths!(rt, cluster, url);
    }
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("routed statement") && log.contains("replica"),
        "events were captured:\n{log}"
    );
    assert_hidden("a tracing event", "(all forms)", &log);
}

/// MySQL/MariaDB URLs (feature `mysql`): the same outputs, sync and async.
#[cfg(feature = "mysql")]
#[test]
fn no_output_path_shows_a_password_of_a_mysql_url() {
    use diesel::mysql::MysqlConnection;
    let s = SECRET;
    let forms = [
        format!("mysql://u:{s}@127.0.0.1:1/db"),
        "mysql://u:Hunter%32Zq@127.0.0.1:1/db".to_owned(),
        format!("mysql://u:{s}@127.0.0.1:1/db?ssl_mode=DISABLED"),
        format!("mysql://u:{s}:with:colons@127.0.0.1:1/db"),
        format!("mysql://u%40x:{s}@127.0.0.1:1/db"),
    ];
    #[cfg(feature = "async")]
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut built = 0;
    for url in &forms {
        let settings = Settings::new()
            .database("default", DatabaseSettings::primary(url.clone()))
            .database(
                "default_replica",
                DatabaseSettings::replica(url.clone(), "default"),
            );
        assert_hidden("Debug of Settings", url, &format!("{settings:?}"));
        built += 1;
        let cluster = match Cluster::<MysqlConnection>::new(settings) {
            Ok(c) => c,
            Err(e) => {
                assert_hidden("a settings error", url, &format!("{e} {e:?}"));
                built -= 1;
                continue;
            }
        };
        assert_hidden("Debug of Cluster", url, &format!("{cluster:?}"));
        let mut conn = cluster.get("default").unwrap();
        let err = diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .expect_err("nothing listens there");
        assert_hidden("a query error", url, &format!("{err} {err:?}"));
        match RoutedConnection::<MysqlConnection>::establish(url) {
            Ok(_) => panic!("nothing listens there"),
            Err(e) => assert_hidden("a standalone connect error", url, &format!("{e} {e:?}")),
        }
        #[cfg(feature = "async")]
        async_paths!(rt, cluster, url);
        #[cfg(feature = "bb8")]
        bb8_paths!(rt, cluster, url);
    }
    assert_eq!(
        built,
        forms.len(),
        "every form made a cluster, whose paths were checked"
    );
}

#[test]
fn a_url_under_the_wrong_key_is_not_echoed() {
    let url = format!("postgres://u:{SECRET}@127.0.0.1:1/db");
    let good = "[databases.default]\nurl = \"postgres://h/db\"\n";
    let cases = [
        format!("{good}[databases.r]\nurl = \"postgres://h2/db\"\nprimary = \"{url}\"\n"),
        format!("{good}[databases.other]\nurl = \"postgres://h3/db\"\nread_strategy = \"{url}\"\n"),
        format!("[databases.default]\nurl_env = \"{url}\"\n"),
        format!("{good}[databases.default.extra]\nx = 1\n[shard_groups.g]\nstorage = \"{url}\"\n"),
        format!("{good}[shard_groups.g]\nstorage = \"{url}\"\n[databases.s]\nurl = \"postgres://h/s\"\nshard_group = \"g\"\nshard_id = 0\n"),
        format!("[databases.default]\nurl = \"postgres://h/db\"\npool_size = \"{url}\"\n"),
        format!("[databases.default]\nurl = \"{url}\"\nweight = \"{url}\"\n"),
        format!("[consistency]\nmode = \"{url}\"\n{good}"),
        format!("[routing]\nreplica_retry = \"{url}\"\n{good}"),
        format!("[databases.\"{url}\"]\nurl = \"postgres://h/db\"\n"),
        format!("[databases.default]\nurl = \"mysql://u:{SECRET}@h/db\"\n"),
    ];
    for text in cases {
        let err = match Settings::from_toml_str(&text) {
            Err(e) => e.to_string() + &format!("{e:?}"),
            Ok(settings) => {
                assert_hidden("Debug of Settings", &text, &format!("{settings:?}"));
                match Cluster::<PgConnection>::new(settings) {
                    Err(e) => e.to_string() + &format!("{e:?}"),
                    Ok(_) => panic!("these settings are wrong: {text}"),
                }
            }
        };
        assert_hidden("a settings error", &text, &err);
    }
}
