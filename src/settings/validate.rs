//! Cross-field validation: from [`Settings`] to the checked topology a cluster is built from.

use std::time::Duration;

use super::{
    keys_hint, Choice, DatabaseSettings, DurationValue, ReadStrategy, SecretUrl, Settings,
    DEFAULT_POOL_SIZE, DEFAULT_REPLICA_RETRY,
};
use crate::consistency::ConsistencySpec;
use crate::error::SettingsError;

/// The default connect timeout of replica connections.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default time a replica may leave its probe unanswered before it counts as hung.
pub(crate) const DEFAULT_REPLICA_TIMEOUT: Duration = Duration::from_secs(1);

/// The ranges of the settings' numbers and durations: every value outside is an error that
/// names the key. They keep the arithmetic on them far from overflow.
pub(crate) mod limits {
    use std::time::Duration;

    /// `routing.replica_retry`.
    pub(crate) const REPLICA_RETRY: (Duration, Duration) =
        (Duration::ZERO, Duration::from_secs(3600));
    /// `routing.replica_timeout`.
    pub(crate) const REPLICA_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(3600));
    /// `routing.primary_timeout`.
    pub(crate) const PRIMARY_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(24 * 3600));
    /// `routing.connect_timeout` (libpq counts whole seconds).
    pub(crate) const CONNECT_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(600));
    /// `consistency.monitor_interval`.
    pub(crate) const MONITOR_INTERVAL: (Duration, Duration) =
        (Duration::from_millis(10), Duration::from_secs(3600));
    /// `consistency.max_lag`.
    pub(crate) const MAX_LAG: (Duration, Duration) =
        (Duration::ZERO, Duration::from_secs(30 * 24 * 3600));
    /// `consistency.replica_wait`.
    pub(crate) const REPLICA_WAIT: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(60));
    /// `pinning.seconds`.
    pub(crate) const PINNING_SECONDS: u64 = 24 * 3600;
    /// `pool_size`.
    pub(crate) const POOL_SIZE: i64 = 10_000;
    /// `weight`.
    pub(crate) const WEIGHT: i64 = 1_000_000;
    /// Length of a database or shard group name.
    pub(crate) const NAME_LEN: usize = 64;
}

/// A duration as written (quoted, scrubbed) or as set in code, for errors.
fn shown(value: &DurationValue) -> String {
    match value {
        DurationValue::Written(text) => format!("{:?}", super::scrub_text(text)),
        DurationValue::Set(Some(d)) => format!("{:?}", humantime::format_duration(*d).to_string()),
        DurationValue::Set(None) => "\"off\"".to_owned(),
    }
}

fn duration(
    key: &'static str,
    value: &Option<DurationValue>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Result<Duration, SettingsError> {
    let error = |value: &DurationValue, reason: String| SettingsError::InvalidValue {
        database: None,
        key,
        value: shown(value),
        reason,
    };
    let Some(value) = value else {
        return Ok(default);
    };
    let parsed = match value {
        DurationValue::Written(text) => humantime::parse_duration(text.trim())
            .map_err(|e| format!("not a duration like \"5s\" or \"500ms\" ({e})")),
        DurationValue::Set(Some(d)) => Ok(*d),
        DurationValue::Set(None) => Err("cannot be off".to_owned()),
    };
    let d = parsed.map_err(|reason| error(value, reason))?;
    if d < min || d > max {
        return Err(error(
            value,
            format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(d)
}

/// Database and shard group names: 1 to 64 letters, digits, `_`, `-` or `.`. They appear in
/// errors, logs, metrics and tokens.
pub(crate) fn check_name(kind: &'static str, name: &str) -> Result<(), SettingsError> {
    let ok = !name.is_empty()
        && name.len() <= limits::NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SettingsError::InvalidName {
            kind,
            name: super::scrub_text(&name.escape_debug().to_string()),
        })
    }
}

/// Validated settings: every primary with its replicas.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    /// Primaries in name order.
    pub(crate) primaries: Vec<PrimarySpec>,
    /// How long reads stay on the primary after a write on the same thread.
    pub(crate) pin_window: Duration,
    /// Extra function names that force the primary.
    pub(crate) write_functions: Vec<String>,
    /// Where calls of unknown functions go.
    pub(crate) unknown_functions: super::UnknownFunctions,
    /// User functions known to only read.
    pub(crate) read_functions: Vec<String>,
    /// How long an unreachable replica is skipped.
    pub(crate) replica_retry: Duration,
    /// Connect timeout of replica (and monitor) connections.
    pub(crate) connect_timeout: Duration,
    /// How long a replica's probe may go unanswered before it counts as hung.
    pub(crate) replica_timeout: Duration,
    /// The deadline of calls on a primary, if any.
    pub(crate) primary_timeout: Option<Duration>,
    /// `[consistency]`.
    pub(crate) consistency: ConsistencySpec,
    /// Shard groups, in name order.
    pub(crate) groups: Vec<super::GroupSpec>,
}

/// A validated primary.
#[derive(Debug, Clone)]
pub(crate) struct PrimarySpec {
    pub(crate) name: String,
    pub(crate) url: SecretUrl,
    pub(crate) pool_size: u32,
    /// r2d2's pool options.
    pub(crate) pool: PoolSpec,
    pub(crate) read_strategy: ReadStrategy,
    /// Replicas in name order.
    pub(crate) replicas: Vec<ReplicaSpec>,
}

/// A primary's r2d2 pool options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PoolSpec {
    pub(crate) min_idle: u32,
    pub(crate) connection_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
}

impl Default for PoolSpec {
    fn default() -> Self {
        // r2d2's own defaults
        PoolSpec {
            min_idle: 0,
            connection_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
        }
    }
}

/// A duration of a database's key that may also be `"off"`.
fn optional_duration(
    database: &str,
    key: &'static str,
    value: &Option<DurationValue>,
    default: Option<Duration>,
) -> Result<Option<Duration>, SettingsError> {
    let parsed = match value {
        None => return Ok(default),
        Some(DurationValue::Written(t)) if t.trim() == "off" => return Ok(None),
        Some(DurationValue::Written(t)) => humantime::parse_duration(t.trim()).ok(),
        Some(DurationValue::Set(d)) => match d {
            None => return Ok(None),
            Some(d) => Some(*d),
        },
    };
    match parsed {
        Some(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(30 * 24 * 3600) => {
            Ok(Some(d))
        }
        _ => Err(invalid(
            database,
            key,
            value.as_ref().map(shown).unwrap_or_default(),
            "must be a duration from 1s to 30 days, or \"off\"",
        )),
    }
}

/// A validated replica.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaSpec {
    pub(crate) name: String,
    pub(crate) url: SecretUrl,
    pub(crate) weight: u32,
}

impl Settings {
    /// Checks everything and resolves URLs from the environment. `check_url` tells whether a
    /// URL fits the backend (and what a fitting one looks like when it does not).
    pub(crate) fn validate(
        &self,
        backend: &'static str,
        check_url: fn(&str) -> Result<(), &'static str>,
    ) -> Result<Topology, SettingsError> {
        self.validate_unscrubbed(backend, check_url)
            .map_err(SettingsError::scrubbed)
    }

    fn validate_unscrubbed(
        &self,
        backend: &'static str,
        check_url: fn(&str) -> Result<(), &'static str>,
    ) -> Result<Topology, SettingsError> {
        // every mistake of the file at once: each check records its error and validation
        // goes on with the default in its place
        let mut p = Problems::default();
        for key in &self.unknown_keys {
            p.push(SettingsError::UnknownKey {
                key: key.clone(),
                hint: keys_hint(key),
            });
        }
        if self.databases.is_empty() {
            p.push(SettingsError::NoDatabases);
        }
        for name in self.databases.keys() {
            p.check(check_name("database", name));
        }
        for name in self.shard_groups.keys() {
            p.check(check_name("shard group", name));
        }
        if self.pinning.seconds > limits::PINNING_SECONDS {
            p.push(SettingsError::InvalidValue {
                database: None,
                key: "pinning.seconds",
                value: self.pinning.seconds.to_string(),
                reason: format!("must be at most {} (a day)", limits::PINNING_SECONDS),
            });
        }
        let replica_retry = p.or(
            duration(
                "routing.replica_retry",
                &self.routing.replica_retry,
                DEFAULT_REPLICA_RETRY,
                limits::REPLICA_RETRY,
            ),
            DEFAULT_REPLICA_RETRY,
        );
        let connect_timeout = p.or(
            duration(
                "routing.connect_timeout",
                &self.routing.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
                limits::CONNECT_TIMEOUT,
            ),
            DEFAULT_CONNECT_TIMEOUT,
        );
        let replica_timeout = p.or(
            duration(
                "routing.replica_timeout",
                &self.routing.replica_timeout,
                DEFAULT_REPLICA_TIMEOUT,
                limits::REPLICA_TIMEOUT,
            ),
            DEFAULT_REPLICA_TIMEOUT,
        );
        let primary_timeout = match &self.routing.primary_timeout {
            None => None,
            Some(_) => p.check(duration(
                "routing.primary_timeout",
                &self.routing.primary_timeout,
                Duration::ZERO,
                limits::PRIMARY_TIMEOUT,
            )),
        };
        let consistency = self.consistency_spec(&mut p);
        let unknown_functions = p
            .check(top_choice(
                "routing.unknown_functions",
                &self.routing.unknown_functions,
                "value",
            ))
            .flatten()
            .unwrap_or_default();

        let mut primaries = Vec::new();
        for (name, db) in &self.databases {
            if db.primary.is_some() {
                continue;
            }
            if db.weight.is_some() {
                p.push(misplaced(name, "weight", "only applies to replicas (it weighs a replica in `read_strategy = \"weighted\"`)"));
            }
            let pool_size = match db.pool_size {
                None => DEFAULT_POOL_SIZE,
                Some(n) if (1..=limits::POOL_SIZE).contains(&n) => n as u32,
                Some(n) => {
                    p.push(invalid(
                        name,
                        "pool_size",
                        n.to_string(),
                        format!("must be between 1 and {}", limits::POOL_SIZE),
                    ));
                    DEFAULT_POOL_SIZE
                }
            };
            let read_strategy = match &db.read_strategy {
                None => ReadStrategy::default(),
                Some(s) => p.or(
                    s.get("read strategy")
                        .map_err(|(value, reason)| invalid(name, "read_strategy", value, reason)),
                    ReadStrategy::default(),
                ),
            };
            let defaults = PoolSpec::default();
            let min_idle = match db.min_idle {
                None => 0,
                Some(n) if (0..=i64::from(pool_size)).contains(&n) => n as u32,
                Some(n) => {
                    p.push(invalid(
                        name,
                        "min_idle",
                        n.to_string(),
                        format!("must be between 0 and pool_size ({pool_size})"),
                    ));
                    0
                }
            };
            let connection_timeout = p
                .or(
                    optional_duration(
                        name,
                        "connection_timeout",
                        &db.connection_timeout,
                        Some(defaults.connection_timeout),
                    ),
                    Some(defaults.connection_timeout),
                )
                .unwrap_or_else(|| {
                    p.push(invalid(
                        name,
                        "connection_timeout",
                        "\"off\"".into(),
                        "cannot be off",
                    ));
                    defaults.connection_timeout
                });
            let pool = PoolSpec {
                min_idle,
                connection_timeout,
                idle_timeout: p.or(
                    optional_duration(
                        name,
                        "idle_timeout",
                        &db.idle_timeout,
                        defaults.idle_timeout,
                    ),
                    defaults.idle_timeout,
                ),
                max_lifetime: p.or(
                    optional_duration(
                        name,
                        "max_lifetime",
                        &db.max_lifetime,
                        defaults.max_lifetime,
                    ),
                    defaults.max_lifetime,
                ),
            };
            if let Some(url) = p.check(resolve_url(name, db, backend, check_url)) {
                primaries.push(PrimarySpec {
                    name: name.clone(),
                    url,
                    pool_size,
                    pool,
                    read_strategy,
                    replicas: Vec::new(),
                });
            }
        }

        for (name, db) in &self.databases {
            let Some(primary) = &db.primary else { continue };
            match self.databases.get(primary) {
                None => p.push(SettingsError::UnknownPrimary {
                    database: name.clone(),
                    primary: primary.clone(),
                }),
                Some(other) if other.primary.is_some() => p.push(SettingsError::PrimaryIsReplica {
                    database: name.clone(),
                    primary: primary.clone(),
                    its_primary: other.primary.clone().unwrap_or_default(),
                }),
                Some(_) => {}
            }
            for (key, set) in [
                ("pool_size", db.pool_size.is_some()),
                ("min_idle", db.min_idle.is_some()),
                ("connection_timeout", db.connection_timeout.is_some()),
                ("idle_timeout", db.idle_timeout.is_some()),
                ("max_lifetime", db.max_lifetime.is_some()),
            ] {
                if set {
                    p.push(misplaced(name, key, "only applies to primaries (a replica's connections live in its primary's pool)"));
                }
            }
            if db.read_strategy.is_some() {
                p.push(misplaced(
                    name,
                    "read_strategy",
                    "only applies to primaries (set it on the primary the replica belongs to)",
                ));
            }
            let weight = match db.weight {
                None => 1,
                Some(n) if (1..=limits::WEIGHT).contains(&n) => n as u32,
                Some(n) => {
                    p.push(invalid(
                        name,
                        "weight",
                        n.to_string(),
                        format!("must be between 1 and {}", limits::WEIGHT),
                    ));
                    1
                }
            };
            let url = p.check(resolve_url(name, db, backend, check_url));
            if let (Some(url), Some(p)) = (url, primaries.iter_mut().find(|p| &p.name == primary)) {
                p.replicas.push(ReplicaSpec {
                    name: name.clone(),
                    url,
                    weight,
                });
            }
        }
        let groups = self.validate_groups(&mut primaries, &mut p);
        p.finish()?;

        Ok(Topology {
            primaries,
            pin_window: self.pinning_window(),
            write_functions: self.routing.write_functions.clone(),
            unknown_functions,
            read_functions: self.routing.read_functions.clone(),
            replica_retry,
            connect_timeout,
            replica_timeout,
            primary_timeout,
            consistency,
            groups,
        })
    }
}

/// The mistakes found so far in one validation.
#[derive(Default)]
pub(crate) struct Problems(Vec<SettingsError>);

impl Problems {
    pub(crate) fn push(&mut self, e: SettingsError) {
        self.0.push(e);
    }

    /// The value, or `None` with the error recorded.
    pub(crate) fn check<T>(&mut self, r: Result<T, SettingsError>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    /// The value, or `default` with the error recorded.
    pub(crate) fn or<T>(&mut self, r: Result<T, SettingsError>, default: T) -> T {
        self.check(r).unwrap_or(default)
    }

    /// One mistake as itself, several as [`SettingsError::Several`].
    fn finish(self) -> Result<(), SettingsError> {
        let mut errors = self.0;
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(SettingsError::Several { errors }),
        }
    }
}

impl Settings {
    fn consistency_spec(&self, p: &mut Problems) -> ConsistencySpec {
        let c = &self.consistency;
        let mode = p
            .check(top_choice("consistency.mode", &c.mode, "consistency mode"))
            .flatten();
        let monitor_interval = p.or(
            duration(
                "consistency.monitor_interval",
                &c.monitor_interval,
                crate::consistency::DEFAULT_MONITOR_INTERVAL,
                limits::MONITOR_INTERVAL,
            ),
            crate::consistency::DEFAULT_MONITOR_INTERVAL,
        );
        let secret = match (&c.token_secret_env, &c.token_secret) {
            (Some(var), fallback) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(v),
                _ => match fallback {
                    Some(s) => Some(s.0.clone()),
                    None => {
                        p.push(SettingsError::InvalidValue {
                            database: None,
                            key: "consistency.token_secret_env",
                            value: format!("{var:?}"),
                            reason: "the variable is not set, and there is no token_secret".into(),
                        });
                        None
                    }
                },
            },
            (None, secret) => secret.as_ref().map(|s| s.0.clone()),
        };
        let token_secret = match secret {
            None => None,
            Some(s) if s.len() < 16 => {
                p.push(SettingsError::InvalidValue {
                    database: None,
                    key: "consistency.token_secret",
                    value: "\"***\"".into(),
                    reason: "must be at least 16 bytes".into(),
                });
                None
            }
            Some(s) => Some(crate::consistency::TokenSecret(s.into_bytes().into())),
        };
        let mut previous_secrets = Vec::new();
        for s in c.token_previous_secrets.iter().flatten() {
            if token_secret.is_none() {
                p.push(SettingsError::InvalidValue {
                    database: None,
                    key: "consistency.token_previous_secrets",
                    value: "[\"***\"]".into(),
                    reason: "previous secrets only verify tokens: set token_secret too".into(),
                });
                break;
            }
            if s.0.len() < 16 {
                p.push(SettingsError::InvalidValue {
                    database: None,
                    key: "consistency.token_previous_secrets",
                    value: "\"***\"".into(),
                    reason: "each must be at least 16 bytes".into(),
                });
                continue;
            }
            previous_secrets.push(crate::consistency::TokenSecret(
                s.0.clone().into_bytes().into(),
            ));
        }
        ConsistencySpec {
            token_secret,
            previous_secrets,
            mode,
            max_lag: p.or(
                duration(
                    "consistency.max_lag",
                    &c.max_lag,
                    crate::consistency::DEFAULT_MAX_LAG,
                    limits::MAX_LAG,
                ),
                crate::consistency::DEFAULT_MAX_LAG,
            ),
            max_lag_bytes: c
                .max_lag_bytes
                .unwrap_or(crate::consistency::DEFAULT_MAX_LAG_BYTES),
            replica_wait: p.or(
                duration(
                    "consistency.replica_wait",
                    &c.replica_wait,
                    Duration::ZERO,
                    limits::REPLICA_WAIT,
                ),
                Duration::ZERO,
            ),
            monitor_interval,
            granularity: p
                .check(top_choice(
                    "consistency.granularity",
                    &c.granularity,
                    "granularity",
                ))
                .flatten()
                .unwrap_or_default(),
        }
    }
}

/// A name setting outside any database, when set: its value, else an error naming the key.
fn top_choice<T: serde::de::DeserializeOwned + Copy>(
    key: &'static str,
    choice: &Option<Choice<T>>,
    what: &str,
) -> Result<Option<T>, SettingsError> {
    match choice {
        None => Ok(None),
        Some(c) => c
            .get(what)
            .map(Some)
            .map_err(|(value, reason)| SettingsError::InvalidValue {
                database: None,
                key,
                value,
                reason,
            }),
    }
}

fn resolve_url(
    name: &str,
    db: &DatabaseSettings,
    backend: &'static str,
    check_url: fn(&str) -> Result<(), &'static str>,
) -> Result<SecretUrl, SettingsError> {
    let from_env = match &db.url_env {
        None => None,
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            Ok(_) | Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(SettingsError::UrlEnvNotUnicode {
                    database: name.to_owned(),
                    var: var.clone(),
                })
            }
        },
    };
    let url = from_env
        .or_else(|| db.url.clone().filter(|u| !u.trim().is_empty()))
        .ok_or_else(|| SettingsError::MissingUrl {
            database: name.to_owned(),
            url_env: db.url_env.clone(),
        })?;
    check_url(&url).map_err(|expected| SettingsError::UrlScheme {
        database: name.to_owned(),
        url: SecretUrl::new(url.clone()).to_string(),
        backend,
        expected,
    })?;
    Ok(SecretUrl::new(url))
}

fn misplaced(database: &str, key: &'static str, reason: &'static str) -> SettingsError {
    SettingsError::MisplacedKey {
        database: database.to_owned(),
        key,
        reason,
    }
}

fn invalid(
    database: &str,
    key: &'static str,
    value: String,
    reason: impl Into<String>,
) -> SettingsError {
    SettingsError::InvalidValue {
        database: Some(database.to_owned()),
        key,
        value,
        reason: reason.into(),
    }
}
