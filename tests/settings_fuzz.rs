//! Settings are input: a seeded property test mutates a valid settings file a few thousand
//! times and feeds each result through `Settings::from_toml_str` and `Cluster::new` (SQLite
//! files in a temporary directory, no server). Nothing may panic or abort; every error must
//! name a key or a line; a cluster that builds must survive a write and a read.
#![cfg(feature = "sqlite")]

use std::panic::AssertUnwindSafe;

use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;
use diesel::RunQueryDsl;
use diesel_sharding::{Cluster, Settings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CASES: usize = 3000;

fn base(dir: &std::path::Path) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    format!(
        r#"[pinning]
seconds = 15

[routing]
write_functions = ["touch_user"]
unknown_functions = "replica"
replica_retry = "5s"
connect_timeout = "2s"

[consistency]
mode = "pin"
max_lag = "30s"
max_lag_bytes = 16777216
replica_wait = "0ms"
monitor_interval = "1s"
granularity = "database"

[databases.default]
url = "{}"
pool_size = 2
read_strategy = "round_robin"

[databases.default_replica]
url = "{}"
primary = "default"
weight = 1

[shard_groups.users]
bucketing = "mod"
epoch = "2020-01-01T00:00:00Z"
storage = "default"

[databases.users_0]
url = "{}"
shard_group = "users"
shard_id = 0
pool_size = 1

[databases.users_1]
url = "{}"
shard_group = "users"
shard_id = 1
pool_size = 1
"#,
        p("default.sqlite"),
        p("default.sqlite"),
        p("users_0.sqlite"),
        p("users_1.sqlite"),
    )
}

const WEIRD_VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "100000000",
    "8192",
    "1e308",
    "nan",
    "true",
    "\"\"",
    "\"\\u0000\"",
    "\"18446744073709551615s\"",
    "\"0s\"",
    "\"1ms\"",
    "\"-5s\"",
    "\"1970-01-01T00:00:00Z\"",
    "\"2999-01-01T00:00:00Z\"",
    "\"postgres://u:pw@h/db\"",
    "\"default\"",
    "\"users\"",
    "\"default_replica\"",
    "\"weighted\"",
    "\"primary_only\"",
    "\"table\"",
    "\"strong\"",
    "[]",
    "{}",
    "[1, 2]",
];

fn mutate(text: &str, rng: &mut StdRng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..rng.gen_range(1..=3) {
        if lines.is_empty() {
            break;
        }
        let i = rng.gen_range(0..lines.len());
        match rng.gen_range(0..8) {
            // a value replaced by a weird one
            0..=2 => {
                if let Some((key, _)) = lines[i].split_once(" = ") {
                    let value = WEIRD_VALUES[rng.gen_range(0..WEIRD_VALUES.len())];
                    lines[i] = format!("{key} = {value}");
                }
            }
            3 => {
                lines.remove(i);
            }
            4 => {
                let line = lines[i].clone();
                let j = rng.gen_range(0..lines.len());
                lines.insert(j, line);
            }
            5 => {
                let j = rng.gen_range(0..lines.len());
                lines.swap(i, j);
            }
            6 => {
                // a byte flipped
                let mut bytes = lines[i].clone().into_bytes();
                if !bytes.is_empty() {
                    let k = rng.gen_range(0..bytes.len());
                    bytes[k] = rng.gen_range(0x20..0x7f);
                }
                lines[i] = String::from_utf8_lossy(&bytes).into_owned();
            }
            _ => {
                // a table header renamed
                if lines[i].starts_with('[') {
                    let names = ["\"\\u0000\"", "\"a b\"", "x", "users_0", "default", "\"é\""];
                    let name = names[rng.gen_range(0..names.len())];
                    lines[i] = format!("[databases.{name}]");
                }
            }
        }
    }
    lines.join("\n")
}

fn names_a_key_or_a_line(msg: &str) -> bool {
    msg.contains('`') || msg.contains("line ") || msg.starts_with("no databases")
}

#[test]
fn mutated_settings_never_panic_and_every_error_names_a_key_or_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    for name in ["default.sqlite", "users_0.sqlite", "users_1.sqlite"] {
        let mut c = <SqliteConnection as diesel::Connection>::establish(
            dir.path().join(name).to_str().unwrap(),
        )
        .unwrap();
        c.batch_execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            .unwrap();
    }
    let seed = 0x5eed_0009;
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut built, mut refused) = (0, 0);
    for case in 0..CASES {
        let text = mutate(&base, &mut rng);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let settings = Settings::from_toml_str(&text).map_err(|e| e.to_string())?;
            let _ = format!("{settings:?}");
            let cluster = Cluster::<SqliteConnection>::new(settings).map_err(|e| e.to_string())?;
            let _ = format!("{cluster:?}");
            if let Ok(mut conn) = cluster.get("default") {
                let _ = diesel::sql_query("INSERT INTO t VALUES (1)").execute(&mut conn);
                let _ = diesel::sql_query("SELECT x FROM t").execute(&mut conn);
            }
            Ok(())
        }));
        match outcome {
            Err(_) => panic!("case {case} (seed {seed:#x}) panicked on:\n{text}"),
            Ok(Ok(())) => built += 1,
            Ok(Err(msg)) => {
                refused += 1;
                assert!(
                    names_a_key_or_a_line(&msg),
                    "case {case} (seed {seed:#x}): error names neither a key nor a line: {msg}\n{text}"
                );
            }
        }
    }
    assert!(
        built > 100 && refused > 100,
        "built {built}, refused {refused}"
    );
}
