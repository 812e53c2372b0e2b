//! The crate's error types.

use std::path::PathBuf;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when building or using a [`Cluster`](crate::Cluster).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The settings are invalid; the inner error names the database and the key.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A database name that the settings do not declare.
    #[error("unknown database `{name}`")]
    UnknownDatabase {
        /// The name that was asked for.
        name: String,
    },
    /// A replica's name where a primary is needed (pools exist only for primaries).
    #[error("database `{name}` is a replica of `{primary}`, not a primary: ask for `{primary}`")]
    NotAPrimary {
        /// The replica's name.
        name: String,
        /// The primary it replicates.
        primary: String,
    },
    /// The connection pool could not hand out a connection.
    #[error("connection pool of database `{database}`")]
    Pool {
        /// The primary whose pool failed.
        database: String,
        /// What r2d2 reported.
        #[source]
        source: r2d2::Error,
    },
}

/// A mistake in the [`Settings`](crate::Settings); every variant names the offending key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The settings file could not be read.
    #[error("cannot read settings file `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, or a value has the wrong type.
    #[error("{}{message}", key_prefix(.key))]
    Parse {
        /// The key path where parsing failed (`databases.default.pool_size`), if known.
        key: Option<String>,
        /// What the parser reported.
        message: String,
    },
    /// A key that the settings format does not know.
    #[error("unknown settings key `{key}`{}", hint_suffix(.hint))]
    UnknownKey {
        /// The full key path, for example `databases.default.poolsize`.
        key: String,
        /// The keys that are allowed at that place.
        hint: Option<&'static str>,
    },
    /// No database is declared at all.
    #[error("no databases: declare at least one under [databases.<name>]")]
    NoDatabases,
    /// A database without a URL, and its `url_env` variable (if any) is not set.
    #[error("database `{database}` has no `url`{}", env_suffix(.url_env))]
    MissingUrl {
        /// The database.
        database: String,
        /// The environment variable that was consulted, if any.
        url_env: Option<String>,
    },
    /// The environment variable named by `url_env` is set but not valid Unicode.
    #[error(
        "database `{database}`: environment variable `{var}` (from `url_env`) is not valid unicode"
    )]
    UrlEnvNotUnicode {
        /// The database.
        database: String,
        /// The variable.
        var: String,
    },
    /// The URL does not fit the cluster's backend.
    #[error("database `{database}`: `url` {url} does not fit the {backend} backend ({expected})")]
    UrlScheme {
        /// The database.
        database: String,
        /// The URL with any password removed.
        url: String,
        /// The backend the cluster was built for.
        backend: &'static str,
        /// What a URL for that backend looks like.
        expected: &'static str,
    },
    /// A replica's `primary` names no database.
    #[error("database `{database}`: `primary = \"{primary}\"` names no database")]
    UnknownPrimary {
        /// The replica.
        database: String,
        /// The missing primary.
        primary: String,
    },
    /// A replica's `primary` is itself a replica (no cascading in the settings).
    #[error(
        "database `{database}`: `primary = \"{primary}\"` is itself a replica (of `{its_primary}`)"
    )]
    PrimaryIsReplica {
        /// The replica.
        database: String,
        /// The named primary, which is a replica.
        primary: String,
        /// What that one replicates.
        its_primary: String,
    },
    /// A key that only makes sense on the other kind of database.
    #[error("database `{database}`: `{key}` {reason}")]
    MisplacedKey {
        /// The database.
        database: String,
        /// The key.
        key: &'static str,
        /// Why it does not belong here.
        reason: &'static str,
    },
    /// A value of a `[shard_groups.<group>]` entry outside its allowed range or set.
    #[error("shard group `{group}`: `{key}` = {value}: {reason}")]
    GroupValue {
        /// The group.
        group: String,
        /// The key (`bucketing`, `epoch`, ...).
        key: &'static str,
        /// The offending value as written.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// A value outside its allowed range or set.
    #[error("{}`{key}` = {value}: {reason}", database_prefix(.database))]
    InvalidValue {
        /// The database, when the key belongs to one.
        database: Option<String>,
        /// The key (`pool_size`, `weight`, `read_strategy`, `pinning.seconds`, ...).
        key: &'static str,
        /// The offending value as written.
        value: String,
        /// What is allowed.
        reason: String,
    },
}

fn hint_suffix(hint: &Option<&'static str>) -> String {
    hint.map(|h| format!(" (expected one of: {h})"))
        .unwrap_or_default()
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!("settings key `{k}`: "))
        .unwrap_or_else(|| "settings: ".to_owned())
}

fn env_suffix(var: &Option<String>) -> String {
    var.as_ref()
        .map(|v| format!(" and environment variable `{v}` (from `url_env`) is not set"))
        .unwrap_or_default()
}

fn database_prefix(database: &Option<String>) -> String {
    database
        .as_ref()
        .map(|d| format!("database `{d}`: "))
        .unwrap_or_default()
}
