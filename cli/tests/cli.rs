//! The command line end to end: the binary run against a real PostgreSQL primary and
//! streaming replica with two shard databases, its output and exit codes checked, and what
//! `migrate` did checked on the servers.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use diesel_sharding_testing::postgres::{Node, PgCluster};

/// The cluster: `default` (+ replica), shards `users_0`, `users_1` (+ replicas), and the
/// settings file that declares them.
struct Setup {
    pg: PgCluster,
    _dir: tempfile::TempDir,
    settings: std::path::PathBuf,
}

fn setup() -> Setup {
    let pg = PgCluster::start(1);
    let mut toml = String::from(
        "[shard_groups.users]\nbucketing = \"mod\"\nepoch = \"2024-01-01T00:00:00Z\"\n",
    );
    for (db, shard) in [("app", None), ("users_0", Some(0)), ("users_1", Some(1))] {
        pg.create_database(db);
        let name = if db == "app" { "default" } else { db };
        toml += &format!("[databases.{name}]\nurl = \"{}\"\n", pg.primary_url(db));
        if let Some(id) = shard {
            toml += &format!("shard_group = \"users\"\nshard_id = {id}\n");
        }
        toml += &format!(
            "[databases.{name}_replica]\nurl = \"{}\"\nprimary = \"{name}\"\n",
            pg.replica_url(0, db)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("sharding.toml");
    std::fs::write(&settings, toml).unwrap();
    Setup {
        pg,
        _dir: dir,
        settings,
    }
}

fn run(settings: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_diesel-sharding"))
        .arg("--settings")
        .arg(settings)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn migrations(name: &str) -> String {
    format!("{}/tests/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `bad_migrations` on the `users` group: exit 1, naming the first shard and the
/// broken migration. Returns the output and its stderr.
fn migrate_stops_at_the_broken_migration(settings: &Path) -> (Output, String) {
    let bad = migrations("bad_migrations");
    let out = run(settings, &["migrate", "--group", "users", "--dir", &bad]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("failed on `users_0`"), "{err}");
    assert!(err.contains("2024-02-02-000000_broken"), "{err}");
    (out, err)
}

#[test]
fn check_reports_each_server_and_fails_when_one_is_down_or_misdeclared() {
    let s = setup();
    let out = run(&s.settings, &["check"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert_eq!(text.lines().count(), 6, "{text}");
    for line in text.lines() {
        assert!(line.contains("PostgreSQL 15"), "{line}");
        if line.contains("_replica ") {
            assert!(
                line.contains(" replica ") && line.contains("read-only"),
                "{line}"
            );
            assert!(line.contains("receiver streaming"), "{line}");
        } else {
            assert!(
                line.contains(" primary ") && line.contains("read-write"),
                "{line}"
            );
            assert!(line.contains("1 replica(s) attached"), "{line}");
        }
    }
    // a replica declared as a primary: found out
    let swapped = std::fs::read_to_string(&s.settings).unwrap().replace(
        &s.pg.primary_url("users_1"),
        &s.pg.replica_url(0, "users_1"),
    );
    let bad = s.settings.with_file_name("swapped.toml");
    std::fs::write(&bad, swapped).unwrap();
    let out = run(&bad, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("PROBLEM: declared a primary, but it replays another server"),
        "{}",
        stdout(&out)
    );
    // a replica down
    s.pg.kill_replica(0);
    let out = run(&s.settings, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert_eq!(text.matches("DOWN").count(), 3, "{text}");
    assert!(!text.contains("password"), "{text}");
    s.pg.start_replica(0);
}

#[test]
fn status_shows_lag_in_time_and_bytes_and_paused_replay() {
    let s = setup();
    let out = run(&s.settings, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["up"], true, "{r}");
        assert_eq!(r["paused"], false, "{r}");
        assert!(r["lag_bytes"].as_i64().is_some(), "{r}");
    }
    // replay paused and a write the replica has not replayed: lag in bytes and paused
    s.pg.pause_replay(0);
    s.pg.execute(
        Node::Primary,
        "app",
        "CREATE TABLE filler AS SELECT g AS x FROM generate_series(1, 10000) g",
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = run(&s.settings, &["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let app = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["replica"] == "default_replica")
        .unwrap()
        .clone();
    assert_eq!(app["paused"], true, "{app}");
    assert!(app["lag_bytes"].as_i64().unwrap() > 100_000, "{app}");
    assert!(app["lag_ms"].as_i64().unwrap() >= 0, "{app}");
    // the table form, refreshed
    let out = run(&s.settings, &["status", "--watch", "0.2", "--count", "2"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("default_replica").count(), 2, "{text}");
    assert!(text.contains("yes"), "paused shows: {text}");
    s.pg.resume_replay(0);
    s.pg.kill_replica(0);
    let out = run(&s.settings, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out).matches("DOWN").count(), 3, "{}", stdout(&out));
    s.pg.start_replica(0);
}

#[test]
fn migrate_runs_on_every_primary_of_a_group_never_on_replicas_and_stops_at_a_failure() {
    let s = setup();
    let dir = migrations("migrations");
    // dry run: lists, runs nothing
    let out = run(
        &s.settings,
        &["migrate", "--group", "users", "--dir", &dir, "--dry-run"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("2 pending").count(), 2, "{text}");
    assert!(text.contains("2024-01-01-000000_create_notes"), "{text}");
    let tables = |db: &str| {
        s.pg.query_i64(
            Node::Primary,
            db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'notes'",
        )
    };
    assert_eq!(tables("users_0"), 0, "the dry run ran nothing");
    s.pg.reset_all_statement_stats();
    let out = run(&s.settings, &["migrate", "--group", "users", "--dir", &dir]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("4 migration(s) on 2 database(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        (tables("users_0"), tables("users_1"), tables("app")),
        (1, 1, 0)
    );
    assert_eq!(
        s.pg.statement_calls(Node::Replica(0), "%__diesel_schema_migrations%"),
        0,
        "never on a replica"
    );
    // again: nothing pending
    let out = run(&s.settings, &["migrate", "--group", "users", "--dir", &dir]);
    assert!(
        stdout(&out).contains("0 migration(s) on 2 database(s)"),
        "{}",
        stdout(&out)
    );
    // --all includes `default`
    let out = run(&s.settings, &["migrate", "--all", "--dir", &dir]);
    assert!(out.status.success());
    assert_eq!(tables("app"), 1);
    // a failing migration: exit 1, the database named, the next databases untouched
    migrate_stops_at_the_broken_migration(&s.settings);
    let fine_on_1 = s.pg.query_i64(
        Node::Primary,
        "users_1",
        "SELECT count(*) FROM pg_tables WHERE tablename = 'fine'",
    );
    assert_eq!(fine_on_1, 0, "stopped at the first failure");
    // neither --group nor --all: a usage error
    let out = run(&s.settings, &["migrate", "--dir", &dir]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn shard_and_id_decode_answer_as_the_library_does() {
    let s = setup();
    let out = run(&s.settings, &["shard", "--group", "users", "42"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // `mod` bucketing of an i64 key over two shards
    let text = stdout(&out);
    assert!(text.starts_with("int 42 -> shard "), "{text}");
    let out2 = run(
        &s.settings,
        &["shard", "--group", "users", "--key-type", "str", "42"],
    );
    assert!(
        stdout(&out2).starts_with("str 42 -> shard "),
        "{}",
        stdout(&out2)
    );
    let out = run(&s.settings, &["shard", "--group", "nosuch", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
    // an id made on shard 1 at a known time
    let made_ms: i64 = 1_000_000; // 1000 s after the group's epoch
    let id = (made_ms << 23) | (1 << 10) | 7;
    let out = run(
        &s.settings,
        &["id", "decode", "--group", "users", &id.to_string()],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("made     2024-01-01T00:16:40.000Z"), "{text}");
    assert!(text.contains("shard    1 on users_1"), "{text}");
    assert!(text.contains("sequence 7"), "{text}");
    let out = run(&s.settings, &["id", "decode", "--group", "users", "-5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("negative"), "{}", stderr(&out));
    // a settings file that does not parse: exit 1, the file named
    let bad = s.settings.with_file_name("bad.toml");
    std::fs::write(&bad, "[databases.default]\nurl = 5\n").unwrap();
    let out = run(&bad, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bad.toml") || stderr(&out).contains("url"),
        "{}",
        stderr(&out)
    );
}

#[cfg(feature = "mysql")]
#[test]
fn check_and_status_on_mariadb_report_roles_lag_and_a_replica_made_writable() {
    use diesel_sharding_testing::mariadb::{MariaCluster, Node as MariaNode};
    let m = MariaCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("sharding.toml");
    std::fs::write(
        &settings,
        format!(
            "[databases.default]\nurl = \"{}\"\n\
             [databases.default_replica]\nurl = \"{}\"\nprimary = \"default\"\n",
            m.url(MariaNode::Primary),
            m.url(MariaNode::Replica(0)),
        ),
    )
    .unwrap();
    let out = run(&settings, &["check"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("default ")
            && lines[0].contains("MariaDB 10.")
            && lines[0].contains("read-write")
            && lines[0].contains("primary,"),
        "{text}"
    );
    assert!(
        lines[1].contains(" replica ")
            && lines[1].contains("read-only")
            && lines[1].contains("replica, IO Yes, SQL Yes"),
        "{text}"
    );
    assert!(!text.contains("app:app"), "a password was printed: {text}");

    let out = run(&settings, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = stdout(&out);
    assert!(
        json.contains("\"replica\":\"default_replica\"")
            && json.contains("\"up\":true")
            && json.contains("\"paused\":false"),
        "{json}"
    );
    // the applier stopped: replay paused
    m.pause(0);
    let out = run(&settings, &["status"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.trim_end().ends_with("yes")),
        "{text}"
    );
    // a replica made writable with its replication gone: a problem `check` names
    m.sql(
        MariaNode::Replica(0),
        "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0;",
    );
    let out = run(&settings, &["check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("default_replica")
            && text
                .contains("PROBLEM: declared a replica, but it takes writes and replays nothing"),
        "{text}"
    );
}

#[cfg(feature = "mysql")]
#[test]
fn migrate_on_mariadb_runs_on_every_shard_primary_never_on_the_replica_and_stops_at_a_failure() {
    use diesel_sharding_testing::mariadb::{MariaCluster, Node as MariaNode};
    let m = MariaCluster::start(1);
    let mut toml = String::from(
        "[shard_groups.users]\nbucketing = \"mod\"\nepoch = \"2024-01-01T00:00:00Z\"\n\
         [databases.default]\n",
    );
    toml += &format!("url = \"{}\"\n", m.url(MariaNode::Primary));
    for (db, id) in [("users_0", 0), ("users_1", 1)] {
        m.create_database(db);
        toml += &format!(
            "[databases.{db}]\nurl = \"{}\"\nshard_group = \"users\"\nshard_id = {id}\n\
             [databases.{db}_replica]\nurl = \"{}\"\nprimary = \"{db}\"\n",
            m.url_of(MariaNode::Primary, db),
            m.url_of(MariaNode::Replica(0), db),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("sharding.toml");
    std::fs::write(&settings, toml).unwrap();
    let tables = |node, db: &str| {
        m.sql(
            node,
            &format!(
                "SELECT COUNT(*) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 'notes'"
            ),
        )
    };
    m.log_statements(MariaNode::Replica(0));
    let dir_ok = migrations("mysql_migrations");

    let out = run(
        &settings,
        &["migrate", "--group", "users", "--dir", &dir_ok, "--dry-run"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("2 pending").count(),
        2,
        "{}",
        stdout(&out)
    );
    assert_eq!(
        tables(MariaNode::Primary, "users_0"),
        "0",
        "the dry run ran nothing"
    );

    let out = run(
        &settings,
        &["migrate", "--group", "users", "--dir", &dir_ok],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("4 migration(s) on 2 database(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        (
            tables(MariaNode::Primary, "users_0"),
            tables(MariaNode::Primary, "users_1"),
            tables(MariaNode::Primary, "test"),
        ),
        ("1".into(), "1".into(), "0".into())
    );
    // the replica has the tables by replication, and the tool sent it no statement
    m.wait_all_caught_up();
    assert_eq!(tables(MariaNode::Replica(0), "users_1"), "1");
    // the log sees the tool's statements there (`check` reads the replica's state); of
    // them, none writes
    assert!(run(&settings, &["check"]).status.success());
    assert!(m.logged(MariaNode::Replica(0), "app", "SELECT") > 0);
    for write in ["CREATE", "ALTER", "INSERT", "DELETE", "DROP"] {
        assert_eq!(
            m.logged(MariaNode::Replica(0), "app", write),
            0,
            "{write} on a replica"
        );
    }

    // a failing migration: exit 1, the database named, the next one untouched
    let (out, err) = migrate_stops_at_the_broken_migration(&settings);
    let fine_on_1 = m.sql(
        MariaNode::Primary,
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = 'users_1' AND TABLE_NAME = 'fine'",
    );
    assert_eq!(fine_on_1, "0", "stopped at the first failure");
    assert!(!err.contains("app:app") && !stdout(&out).contains("app:app"));
}
