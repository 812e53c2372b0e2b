//! One test per settings rule: every mistake is an error naming the database and the key.

use super::*;

const BACKEND: &str = "PostgreSQL";

fn pg_url(url: &str) -> Result<(), &'static str> {
    match scheme(url).as_deref() {
        Some("postgres" | "postgresql") => Ok(()),
        _ => Err("expected postgres://user@host:port/database"),
    }
}

fn check(toml: &str) -> Result<validate::Topology, SettingsError> {
    Settings::from_toml_str(toml)?.validate(BACKEND, pg_url)
}

fn error(toml: &str) -> String {
    match check(toml) {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

const GOOD: &str = r#"
[pinning]
seconds = 15

[databases.default]
url = "postgres://app@127.0.0.1:5432/app"
pool_size = 10
read_strategy = "round_robin"

[databases.default_replica]
url = "postgres://app@127.0.0.1:5433/app"
primary = "default"
weight = 1
"#;

#[test]
fn the_documented_format_parses_and_validates() {
    let t = check(GOOD).unwrap();
    assert_eq!(t.pin_window, Duration::from_secs(15));
    assert_eq!(t.primaries.len(), 1);
    let p = &t.primaries[0];
    assert_eq!(p.name, "default");
    assert_eq!(p.pool_size, 10);
    assert_eq!(p.read_strategy, ReadStrategy::RoundRobin);
    assert_eq!(p.replicas.len(), 1);
    assert_eq!(p.replicas[0].name, "default_replica");
    assert_eq!(p.replicas[0].weight, 1);
}

#[test]
fn defaults_apply_when_keys_are_left_out() {
    let t = check("[databases.default]\nurl = \"postgres://h/db\"").unwrap();
    assert_eq!(t.pin_window, Duration::from_secs(DEFAULT_PINNING_SECONDS));
    assert_eq!(t.replica_retry, DEFAULT_REPLICA_RETRY);
    assert_eq!(t.primaries[0].pool_size, DEFAULT_POOL_SIZE);
    assert_eq!(t.primaries[0].read_strategy, ReadStrategy::RoundRobin);
}

#[test]
fn an_unknown_database_key_names_the_database_and_the_key() {
    let e = error("[databases.default]\nurl = \"postgres://h/db\"\npoolsize = 3");
    assert!(e.contains("databases.default.poolsize"), "{e}");
    assert!(e.contains("pool_size"), "lists the valid keys: {e}");
}

#[test]
fn an_unknown_top_level_or_pinning_key_is_an_error() {
    let e = error("[databases.default]\nurl = \"postgres://h/db\"\n[pining]\nseconds = 1");
    assert!(e.contains("`pining`"), "{e}");
    let e = error("[databases.default]\nurl = \"postgres://h/db\"\n[pinning]\nsecs = 1");
    assert!(e.contains("pinning.secs"), "{e}");
}

#[test]
fn a_replica_of_a_missing_primary_is_an_error() {
    let e = error("[databases.r]\nurl = \"postgres://h/db\"\nprimary = \"nope\"");
    assert!(
        e.contains("`r`") && e.contains("primary") && e.contains("nope"),
        "{e}"
    );
}

#[test]
fn a_replica_of_a_replica_is_an_error() {
    let e = error(
        "[databases.p]\nurl = \"postgres://h/p\"\n\
         [databases.r1]\nurl = \"postgres://h/r1\"\nprimary = \"p\"\n\
         [databases.r2]\nurl = \"postgres://h/r2\"\nprimary = \"r1\"",
    );
    assert!(
        e.contains("`r2`") && e.contains("r1") && e.contains("itself a replica"),
        "{e}"
    );
}

#[test]
fn a_database_without_url_is_an_error() {
    let e = error("[databases.default]\npool_size = 2");
    assert!(e.contains("`default`") && e.contains("`url`"), "{e}");
}

#[test]
fn url_env_names_its_variable_when_unset_and_no_url() {
    let e = error("[databases.default]\nurl_env = \"DIESEL_SHARDING_TEST_SURELY_UNSET\"");
    assert!(e.contains("DIESEL_SHARDING_TEST_SURELY_UNSET"), "{e}");
}

#[test]
fn url_env_overrides_the_url_when_set() {
    std::env::set_var("DIESEL_SHARDING_TEST_URL_ENV", "postgres://from-env/db");
    let t = check(
        "[databases.default]\nurl = \"postgres://from-file/db\"\nurl_env = \"DIESEL_SHARDING_TEST_URL_ENV\"",
    )
    .unwrap();
    assert_eq!(t.primaries[0].url.expose(), "postgres://from-env/db");
    let t = check(
        "[databases.default]\nurl = \"postgres://from-file/db\"\nurl_env = \"DIESEL_SHARDING_TEST_URL_ENV_UNSET\"",
    )
    .unwrap();
    assert_eq!(t.primaries[0].url.expose(), "postgres://from-file/db");
}

#[test]
fn a_url_of_another_backend_is_an_error_without_its_password() {
    let e = error("[databases.default]\nurl = \"mysql://app:hunter2@h/db\"");
    assert!(
        e.contains("`default`") && e.contains("url") && e.contains("PostgreSQL"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn a_pool_size_of_zero_is_an_error() {
    let e = error("[databases.default]\nurl = \"postgres://h/db\"\npool_size = 0");
    assert!(e.contains("`default`") && e.contains("pool_size"), "{e}");
}

#[test]
fn an_unknown_read_strategy_is_an_error_listing_the_strategies() {
    let e = error("[databases.default]\nurl = \"postgres://h/db\"\nread_strategy = \"fastest\"");
    assert!(
        e.contains("`default`") && e.contains("read_strategy") && e.contains("fastest"),
        "{e}"
    );
    assert!(e.contains("round_robin") && e.contains("weighted"), "{e}");
}

#[test]
fn a_weight_of_zero_is_an_error() {
    let e = error(
        "[databases.p]\nurl = \"postgres://h/p\"\n[databases.r]\nurl = \"postgres://h/r\"\nprimary = \"p\"\nweight = 0",
    );
    assert!(e.contains("`r`") && e.contains("weight"), "{e}");
}

#[test]
fn primary_only_keys_on_a_replica_are_errors() {
    let base = "[databases.p]\nurl = \"postgres://h/p\"\n[databases.r]\nurl = \"postgres://h/r\"\nprimary = \"p\"\n";
    let e = error(&format!("{base}pool_size = 3"));
    assert!(e.contains("`r`") && e.contains("pool_size"), "{e}");
    let e = error(&format!("{base}read_strategy = \"random\""));
    assert!(e.contains("`r`") && e.contains("read_strategy"), "{e}");
}

#[test]
fn a_weight_on_a_primary_is_an_error() {
    let e = error("[databases.p]\nurl = \"postgres://h/p\"\nweight = 2");
    assert!(e.contains("`p`") && e.contains("weight"), "{e}");
}

#[test]
fn no_databases_is_an_error() {
    assert!(error("[pinning]\nseconds = 3").contains("no databases"));
}

#[test]
fn a_wrongly_typed_value_fails_parsing_and_names_the_key() {
    let e = Settings::from_toml_str(
        "[databases.default]\nurl = \"postgres://h/db\"\npool_size = \"ten\"",
    )
    .unwrap_err();
    assert!(e.to_string().contains("databases.default.pool_size"), "{e}");
    let e = Settings::from_toml_str("[pinning]\nseconds = -1").unwrap_err();
    assert!(e.to_string().contains("pinning.seconds"), "{e}");
}

#[test]
fn invalid_toml_is_a_parse_error() {
    let e = Settings::from_toml_str("[databases.default\nurl = ").unwrap_err();
    assert!(matches!(e, SettingsError::Parse { .. }), "{e:?}");
}

#[test]
fn a_bad_replica_retry_duration_is_an_error() {
    let e = error(
        "[routing]\nreplica_retry = \"soon\"\n[databases.default]\nurl = \"postgres://h/db\"",
    );
    assert!(e.contains("routing.replica_retry"), "{e}");
    let t = check(
        "[routing]\nreplica_retry = \"250ms\"\n[databases.default]\nurl = \"postgres://h/db\"",
    )
    .unwrap();
    assert_eq!(t.replica_retry, Duration::from_millis(250));
}

#[test]
fn a_missing_settings_file_names_the_file() {
    let e = Settings::from_file("/nonexistent/diesel-sharding.toml").unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent/diesel-sharding.toml"),
        "{e}"
    );
}

#[test]
fn debug_never_shows_passwords() {
    let s = Settings::from_toml_str(
        "[databases.default]\nurl = \"postgres://app:hunter2@h/db\"\n[databases.r]\nurl = \"postgres://app:hunter3@h2/db?password=x9\"\nprimary = \"default\"",
    )
    .unwrap();
    let d = format!("{s:?}");
    assert!(
        !d.contains("hunter2") && !d.contains("hunter3") && !d.contains("x9"),
        "{d}"
    );
    let t = s.validate(BACKEND, pg_url).unwrap();
    let d = format!("{t:?}");
    assert!(!d.contains("hunter2") && !d.contains("hunter3"), "{d}");
}

#[test]
fn settings_built_in_code_validate_like_toml() {
    let s = Settings::new()
        .pinning_seconds(3)
        .write_functions(["touch_user"])
        .database(
            "default",
            DatabaseSettings::primary("postgres://h/db").pool_size(4),
        )
        .database(
            "r",
            DatabaseSettings::replica("postgres://h2/db", "default").weight(2),
        );
    let t = s.validate(BACKEND, pg_url).unwrap();
    assert_eq!(t.pin_window, Duration::from_secs(3));
    assert_eq!(t.write_functions, vec!["touch_user".to_owned()]);
    assert_eq!(t.primaries[0].pool_size, 4);
    assert_eq!(t.primaries[0].replicas[0].weight, 2);
}

const SHARDS: &str = r#"
[databases.default]
url = "postgres://app@h/app"

[databases.users_0]
url = "postgres://app@h/users_0"
shard_group = "users"
shard_id = 0

[databases.users_1]
url = "postgres://app@h/users_1"
shard_group = "users"
shard_id = 1

[databases.users_1_replica]
url = "postgres://app@h2/users_1"
primary = "users_1"

[shard_groups.users]
bucketing = "jump"
read_strategy = "primary_only"
epoch = "2016-01-01T00:00:00Z"
storage = "default"
"#;

#[test]
fn shard_groups_parse_with_their_options() {
    let t = check(SHARDS).unwrap();
    assert_eq!(t.groups.len(), 1);
    let g = &t.groups[0];
    assert_eq!(g.name, "users");
    assert_eq!(g.bucketing, crate::sharding::Bucketing::Jump);
    assert_eq!(g.storage.as_deref(), Some("default"));
    assert_eq!(
        g.shards,
        vec![(0, "users_0".to_owned()), (1, "users_1".to_owned())]
    );
    assert_eq!(
        g.epoch
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        1_451_606_400
    );
    let strategy = |n: &str| {
        t.primaries
            .iter()
            .find(|p| p.name == n)
            .unwrap()
            .read_strategy
    };
    assert_eq!(
        strategy("users_1"),
        ReadStrategy::PrimaryOnly,
        "the group's default"
    );
    assert_eq!(
        strategy("default"),
        ReadStrategy::RoundRobin,
        "not in the group"
    );
}

#[test]
fn a_group_declared_only_by_its_shards_gets_the_defaults() {
    let t = check("[databases.s0]\nurl = \"postgres://h/s0\"\nshard_group = \"g\"\nshard_id = 0")
        .unwrap();
    assert_eq!(
        t.groups[0].bucketing,
        crate::sharding::Bucketing::RoundRobin
    );
}

#[test]
fn a_duplicate_shard_id_names_both_databases() {
    let e = error(&SHARDS.replace("shard_id = 1", "shard_id = 0"));
    assert!(
        e.contains("`users_1`") && e.contains("`users_0`") && e.contains("shard_id"),
        "{e}"
    );
}

#[test]
fn a_shard_id_above_8191_is_an_error() {
    let e = error(&SHARDS.replace("shard_id = 1", "shard_id = 8192"));
    assert!(
        e.contains("`users_1`") && e.contains("shard_id") && e.contains("8191"),
        "{e}"
    );
    let e = error(&SHARDS.replace("shard_id = 1", "shard_id = -1"));
    assert!(e.contains("shard_id"), "{e}");
}

#[test]
fn a_replica_with_shard_keys_is_an_error() {
    let e = error(&SHARDS.replace(
        "primary = \"users_1\"",
        "primary = \"users_1\"\nshard_group = \"users\"",
    ));
    assert!(
        e.contains("`users_1_replica`") && e.contains("shard_group"),
        "{e}"
    );
}

#[test]
fn a_shard_group_without_a_shard_id_and_the_reverse_are_errors() {
    let e = error(&SHARDS.replace("shard_id = 1\n", ""));
    assert!(e.contains("`users_1`") && e.contains("shard_id"), "{e}");
    let e = error("[databases.a]\nurl = \"postgres://h/a\"\nshard_id = 3");
    assert!(e.contains("`a`") && e.contains("shard_group"), "{e}");
}

#[test]
fn a_group_with_no_shards_is_an_error() {
    let e = error(&format!(
        "{SHARDS}\n[shard_groups.orders]\nbucketing = \"mod\""
    ));
    assert!(e.contains("orders") && e.contains("no shards"), "{e}");
}

#[test]
fn an_unknown_bucketing_lists_the_strategies() {
    let e = error(&SHARDS.replace("bucketing = \"jump\"", "bucketing = \"consistent\""));
    assert!(
        e.contains("`users`") && e.contains("bucketing") && e.contains("saved_mod"),
        "{e}"
    );
}

#[test]
fn bad_group_epoch_storage_and_keys_are_errors() {
    let e = error(&SHARDS.replace("2016-01-01T00:00:00Z", "yesterday"));
    assert!(e.contains("`users`") && e.contains("epoch"), "{e}");
    let e = error(&SHARDS.replace("storage = \"default\"", "storage = \"users_0\""));
    assert!(e.contains("storage") && e.contains("shard"), "{e}");
    let e = error(&SHARDS.replace("storage = \"default\"", "storage = \"nope\""));
    assert!(e.contains("storage") && e.contains("nope"), "{e}");
    let e = error(&SHARDS.replace("bucketing = \"jump\"", "bucketting = \"jump\""));
    assert!(
        e.contains("shard_groups.users.bucketting") && e.contains("epoch"),
        "{e}"
    );
}

#[test]
fn unknown_functions_is_replica_or_primary_and_names_the_key_otherwise() {
    let base = "[databases.default]\nurl = \"postgres://h/db\"\n";
    let t = Settings::from_toml_str(base)
        .unwrap()
        .validate(BACKEND, pg_url)
        .unwrap();
    assert_eq!(t.unknown_functions, crate::UnknownFunctions::Replica);
    let t = Settings::from_toml_str(&format!(
        "[routing]\nunknown_functions = \"primary\"\nread_functions = [\"score\"]\n{base}"
    ))
    .unwrap()
    .validate(BACKEND, pg_url)
    .unwrap();
    assert_eq!(t.unknown_functions, crate::UnknownFunctions::Primary);
    assert_eq!(t.read_functions, ["score"]);
    let e = Settings::from_toml_str(&format!(
        "[routing]\nunknown_functions = \"sometimes\"\n{base}"
    ))
    .unwrap()
    .validate(BACKEND, pg_url)
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("routing.unknown_functions") && msg.contains("sometimes"),
        "{msg}"
    );
    let t = Settings::new()
        .unknown_functions(crate::UnknownFunctions::Primary)
        .read_functions(["score"])
        .database("default", DatabaseSettings::primary("postgres://h/db"))
        .validate(BACKEND, pg_url)
        .unwrap();
    assert_eq!(t.unknown_functions, crate::UnknownFunctions::Primary);
}

#[test]
fn every_number_and_duration_has_a_range_and_the_error_names_the_key() {
    let base = "[databases.default]\nurl = \"postgres://h/db\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[consistency]\nmonitor_interval = \"18446744073709551615s\"\n",
            "consistency.monitor_interval",
        ),
        (
            "[routing]\nconnect_timeout = \"18446744073709551615s\"\n",
            "routing.connect_timeout",
        ),
        (
            "[routing]\nreplica_retry = \"100000h\"\n",
            "routing.replica_retry",
        ),
        (
            "[pinning]\nseconds = 9223372036854775807\n",
            "pinning.seconds",
        ),
        (
            "[consistency]\nreplica_wait = \"18446744073709551615s\"\n",
            "consistency.replica_wait",
        ),
        (
            "[consistency]\nmax_lag = \"1000000h\"\n",
            "consistency.max_lag",
        ),
        (
            "[consistency]\nmonitor_interval = \"1ms\"\n",
            "consistency.monitor_interval",
        ),
    ];
    for (extra, key) in cases {
        let e = Settings::from_toml_str(&format!("{extra}{base}"))
            .unwrap()
            .validate(BACKEND, pg_url)
            .unwrap_err();
        assert!(e.to_string().contains(key), "{extra}: {e}");
    }
    for (line, key) in [
        ("pool_size = 100000000", "pool_size"),
        ("pool_size = 0", "pool_size"),
    ] {
        let e = Settings::from_toml_str(&format!("{base}{line}\n"))
            .unwrap()
            .validate(BACKEND, pg_url)
            .unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
    }
    let e = Settings::from_toml_str(&format!(
        "{base}[databases.r]\nurl = \"postgres://r/db\"\nprimary = \"default\"\nweight = 9999999999\n"
    ))
    .unwrap()
    .validate(BACKEND, pg_url)
    .unwrap_err();
    assert!(e.to_string().contains("weight"), "{e}");
}

#[test]
fn names_are_short_printable_words() {
    for name in ["\\u0000", "", "a b", "x\\ny", "postgres://u:p@h", "ü"] {
        let text = format!("[databases.\"{name}\"]\nurl = \"postgres://h/db\"\n");
        let e = Settings::from_toml_str(&text)
            .unwrap()
            .validate(BACKEND, pg_url)
            .unwrap_err();
        assert!(
            matches!(e, SettingsError::InvalidName { .. }),
            "{name:?}: {e}"
        );
        assert!(!e.to_string().contains('\0'));
    }
    let long = "a".repeat(65);
    let text = format!("[databases.{long}]\nurl = \"postgres://h/db\"\n");
    assert!(Settings::from_toml_str(&text)
        .unwrap()
        .validate(BACKEND, pg_url)
        .is_err());
    let ok = "[databases.\"users-0_a.b\"]\nurl = \"postgres://h/db\"\n";
    assert!(Settings::from_toml_str(ok)
        .unwrap()
        .validate(BACKEND, pg_url)
        .is_ok());
}

#[test]
fn an_epoch_in_the_future_or_too_long_ago_names_the_key() {
    for epoch in [
        "1970-01-01T00:00:00Z",
        "2999-01-01T00:00:00Z",
        "1985-06-01T00:00:00Z",
    ] {
        let text = format!(
            "[shard_groups.g]\nepoch = \"{epoch}\"\n[databases.s0]\nurl = \"postgres://h/s0\"\nshard_group = \"g\"\nshard_id = 0\n"
        );
        let e = Settings::from_toml_str(&text)
            .unwrap()
            .validate(BACKEND, pg_url)
            .unwrap_err();
        assert!(e.to_string().contains("epoch"), "{epoch}: {e}");
    }
}

#[test]
fn parse_errors_name_the_line_and_column() {
    let e = Settings::from_toml_str(
        "[databases.default]\nurl = \"postgres://h/db\"\npool_size = \"ten\"\n",
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("line 3"), "{msg}");
    let e = Settings::from_toml_str("[databases.default\nurl = 1").unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[test]
fn pool_options_validate_with_their_ranges() {
    let t = Settings::from_toml_str(
        "[databases.default]\nurl = \"postgres://h/db\"\npool_size = 4\nmin_idle = 2\n\
         connection_timeout = \"5s\"\nidle_timeout = \"off\"\nmax_lifetime = \"1h\"\n",
    )
    .unwrap()
    .validate(BACKEND, pg_url)
    .unwrap();
    let p = t.primaries[0].pool;
    assert_eq!(p.min_idle, 2);
    assert_eq!(p.connection_timeout, Duration::from_secs(5));
    assert_eq!(p.idle_timeout, None);
    assert_eq!(p.max_lifetime, Some(Duration::from_secs(3600)));
    for (line, key) in [
        ("pool_size = 2\nmin_idle = 3", "min_idle"),
        ("connection_timeout = \"off\"", "connection_timeout"),
        ("idle_timeout = \"1ms\"", "idle_timeout"),
        ("max_lifetime = \"soon\"", "max_lifetime"),
    ] {
        let e = Settings::from_toml_str(&format!(
            "[databases.default]\nurl = \"postgres://h/db\"\n{line}\n"
        ))
        .unwrap()
        .validate(BACKEND, pg_url)
        .unwrap_err();
        assert!(e.to_string().contains(key), "{line}: {e}");
    }
    let e = Settings::from_toml_str(
        "[databases.default]\nurl = \"postgres://h/db\"\n\
         [databases.r]\nurl = \"postgres://r/db\"\nprimary = \"default\"\nidle_timeout = \"1m\"\n",
    )
    .unwrap()
    .validate(BACKEND, pg_url)
    .unwrap_err();
    assert!(
        matches!(
            e,
            SettingsError::MisplacedKey {
                key: "idle_timeout",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn every_key_has_a_builder_setter_that_validates_like_toml() {
    let t = Settings::new()
        .pinning_seconds(5)
        .replica_retry(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(3))
        .replica_timeout(Duration::from_millis(500))
        .primary_timeout(Duration::from_secs(9))
        .max_lag(Duration::from_secs(7))
        .max_lag_bytes(1024)
        .replica_wait(Duration::from_millis(20))
        .monitor_interval(Duration::from_millis(200))
        .granularity(crate::Granularity::Table)
        .consistency(crate::Consistency::Causal)
        .token_secret("sixteen bytes at least")
        .database("default", DatabaseSettings::primary("postgres://h/db"))
        .validate(BACKEND, pg_url)
        .unwrap();
    assert_eq!(t.pin_window, Duration::from_secs(5));
    assert_eq!(t.connect_timeout, Duration::from_secs(3));
    assert_eq!(t.replica_timeout, Duration::from_millis(500));
    assert_eq!(t.primary_timeout, Some(Duration::from_secs(9)));
    assert_eq!(t.consistency.max_lag, Duration::from_secs(7));
    assert_eq!(t.consistency.max_lag_bytes, 1024);
    assert_eq!(t.consistency.replica_wait, Duration::from_millis(20));
    assert_eq!(t.consistency.monitor_interval, Duration::from_millis(200));
    assert_eq!(t.consistency.granularity, crate::Granularity::Table);
    assert_eq!(t.consistency.mode, Some(crate::Consistency::Causal));
    assert!(t.consistency.token_secret.is_some());
}

#[test]
fn every_mistake_of_a_file_is_reported_at_once() {
    let err = check(
        r#"
[routing]
replica_retry = "soon"
colour = "blue"

[consistency]
mode = "sometimes"

[databases.default]
url = "postgres://h/db"
pool_size = 0
poolsize = 3

[databases.orphan]
url = "postgres://h2/db"
primary = "nowhere"
"#,
    )
    .unwrap_err();
    let mistakes: Vec<String> = err.mistakes().iter().map(|e| e.to_string()).collect();
    assert_eq!(mistakes.len(), 6, "{mistakes:#?}");
    for (what, needle) in [
        ("unknown key", "`routing.colour`"),
        ("unknown key", "`databases.default.poolsize`"),
        ("bad duration", "`routing.replica_retry`"),
        ("bad mode", "`consistency.mode`"),
        ("bad pool size", "`pool_size` = 0"),
        (
            "unknown primary",
            "`primary = \"nowhere\"` names no database",
        ),
    ] {
        assert!(
            mistakes.iter().any(|m| m.contains(needle)),
            "{what}: no mistake mentions {needle}: {mistakes:#?}"
        );
    }
    let text = err.to_string();
    assert!(text.starts_with("6 mistakes in the settings:"), "{text}");
    assert_eq!(text.lines().count(), 7, "one line per mistake: {text}");
}

#[test]
fn one_mistake_is_reported_as_itself() {
    let err = check("[databases.default]\nurl = \"postgres://h/db\"\npool_size = 0\n").unwrap_err();
    assert!(
        matches!(
            err,
            SettingsError::InvalidValue {
                key: "pool_size",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.mistakes().len(), 1);
}

#[test]
fn several_mistakes_never_print_a_password() {
    let err = check(
        "[databases.default]\nurl = \"mysql://app:hunter2secret@h/db\"\npool_size = 0\n\
         [databases.other]\nurl = \"postgres://app:hunter2secret@h/db\"\nweight = 0\n",
    )
    .unwrap_err();
    assert!(err.mistakes().len() >= 2, "{err}");
    for text in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
        assert!(!text.contains("hunter2secret"), "{text}");
    }
}

#[test]
fn builder_durations_are_held_typed_not_round_tripped_through_text() {
    let exact = Duration::from_micros(250_750);
    let t = Settings::new()
        .database("default", DatabaseSettings::primary("postgres://h/db"))
        .replica_timeout(exact)
        .max_lag(Duration::from_nanos(1_500))
        .validate(BACKEND, pg_url)
        .unwrap();
    assert_eq!(t.replica_timeout, exact, "not cut to whole milliseconds");
    assert_eq!(t.consistency.max_lag, Duration::from_nanos(1_500));
    // a value out of range from code is the same error as from a file, naming the key
    let err = Settings::new()
        .database("default", DatabaseSettings::primary("postgres://h/db"))
        .monitor_interval(Duration::from_millis(1))
        .validate(BACKEND, pg_url)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            SettingsError::InvalidValue { key: "consistency.monitor_interval", value, .. }
                if value == "\"1ms\""
        ),
        "{err:?}"
    );
}

#[test]
fn shard_group_mistakes_join_the_database_mistakes() {
    let err = check(
        r#"
[databases.a]
url = "postgres://a/db"
pool_size = 0
shard_group = "users"
shard_id = 0

[databases.b]
url = "postgres://b/db"
shard_group = "users"
shard_id = 0

[shard_groups.users]
bucketing = "modulo"
epoch = "2999-01-01T00:00:00Z"
storage = "nowhere"
"#,
    )
    .unwrap_err();
    let mistakes: Vec<String> = err.mistakes().iter().map(|e| e.to_string()).collect();
    for needle in [
        "`pool_size` = 0",
        "already the shard id of `a`",
        "`bucketing` = \"modulo\"",
        "`epoch` = \"2999-01-01T00:00:00Z\": is in the future",
        "`storage` = \"nowhere\": names no database",
    ] {
        assert!(
            mistakes.iter().any(|m| m.contains(needle)),
            "no mistake mentions {needle}: {mistakes:#?}"
        );
    }
    assert_eq!(mistakes.len(), 5, "{mistakes:#?}");
}
