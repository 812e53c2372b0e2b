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
    /// A shard group that the settings do not declare.
    #[error("unknown shard group `{group}`{}", model_suffix(.model))]
    UnknownShardGroup {
        /// The group asked for.
        group: String,
        /// The model that names it, if a model did.
        model: Option<&'static str>,
    },
    /// A model placed on a database the settings do not declare (or on a replica).
    #[error(
        "model `{model}` lives on database `{database}`, which is not a primary of the settings"
    )]
    UnknownModelDatabase {
        /// The model.
        model: &'static str,
        /// The database it names.
        database: String,
    },
    /// The operation needs a model of another kind (sharded by a key, storing its shard, or on
    /// one database).
    #[error("model `{model}` {problem}")]
    WrongModelKind {
        /// The model.
        model: &'static str,
        /// What does not fit.
        problem: &'static str,
    },
    /// A `stores_shard` model whose shard is not set yet.
    #[error("model `{model}` has no shard yet: call `cluster.assign_shard(&mut row)` first")]
    ShardNotAssigned {
        /// The model.
        model: &'static str,
    },
    /// A shard id that the group does not have.
    #[error("shard group `{group}` has no shard {shard_id}")]
    UnknownShard {
        /// The group.
        group: String,
        /// The id.
        shard_id: i32,
    },
    /// A bucketing that needs a key was asked to pick without one.
    #[error("shard group `{group}` buckets with `{bucketing}`, which needs a shard key")]
    BucketingNeedsKey {
        /// The group.
        group: String,
        /// The bucketing.
        bucketing: &'static str,
    },
    /// A bucketing whose picks must be stored, in a group without `storage`.
    #[error("shard group `{group}` buckets with `{bucketing}`, whose picks must be stored: set `storage = \"<database>\"` in [shard_groups.{group}], or store the shard on the model (`stores_shard`)")]
    NoShardStorage {
        /// The group.
        group: String,
        /// The bucketing.
        bucketing: &'static str,
    },
    /// [`Cluster::stick`](crate::Cluster::stick) could not record the scope's token: the
    /// store is down. The write is done and this scope reads it; work elsewhere under `key`
    /// will not know of it.
    #[error("cannot stick key `{key}`: {source}")]
    StickStore {
        /// The key.
        key: String,
        /// What the store said.
        source: crate::stick::StoreError,
    },
    /// Keyed sticking without a store: call
    /// [`Cluster::set_stick_store`](crate::Cluster::set_stick_store) first.
    #[error("no stick store: call Cluster::set_stick_store before stick or with_key")]
    NoStickStore,
    /// [`Cluster::set_stick_store`](crate::Cluster::set_stick_store) was called twice.
    #[error("the cluster has a stick store already")]
    StickStoreSet,
    /// An async pool was built outside a tokio runtime (its reaper needs one).
    #[error("{what} needs a tokio runtime: build it inside one (`#[tokio::main]`, `Runtime::block_on`, `Runtime::enter`)")]
    NoRuntime {
        /// What was built.
        what: &'static str,
    },
    /// A query failed on one database.
    #[error("database `{database}`")]
    Query {
        /// Where.
        database: String,
        /// What Diesel reported.
        #[source]
        source: diesel::result::Error,
    },
    /// Migrations failed on one database (the first failure stops the run).
    #[error("migrations on database `{database}`")]
    Migration {
        /// Where.
        database: String,
        /// What the migration harness reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Ids cannot be made or read for a shard group (its epoch, or an id that is not one of
    /// the group's).
    #[error("shard group `{group}`")]
    Id {
        /// The group.
        group: String,
        /// Why.
        #[source]
        source: crate::sharding::ids::IdError,
    },
    /// A shard of one group given where a shard of another is needed.
    #[error("shard {shard_id} of group `{shard_group}` given for group `{group}`")]
    ShardOfAnotherGroup {
        /// The group the call is about.
        group: String,
        /// The group of the shard given.
        shard_group: String,
        /// Its id.
        shard_id: i32,
    },
    /// The work on a shard ran past the deadline of `on_all_shards_within` (its call was
    /// cut).
    #[error("the work on database `{database}` did not finish within {after:?}")]
    ShardTimedOut {
        /// Where.
        database: String,
        /// The deadline.
        after: std::time::Duration,
    },
    /// The closure run on a shard panicked.
    #[error("the work on database `{database}` panicked")]
    ShardPanicked {
        /// Where.
        database: String,
    },
    /// A server could not be connected to ([`Cluster::connect_to`](crate::Cluster::connect_to));
    /// the message is the driver's, without secrets.
    #[error("cannot connect to `{database}`: {message}")]
    Connect {
        /// The server's name in the settings.
        database: String,
        /// Why.
        message: String,
    },
    /// [`Cluster::reload`](crate::Cluster::reload) was given settings that change what
    /// cannot change while the process runs; nothing was changed.
    #[error("cannot reload: {what} cannot change while the process runs (restart it for that); nothing was changed")]
    Reload {
        /// The setting, or the database, that differs.
        what: String,
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
    #[error("{}{}{message}", key_prefix(.key), line_prefix(.line, .column))]
    Parse {
        /// The key path where parsing failed (`databases.default.pool_size`), if known.
        key: Option<String>,
        /// The line of the text (1-based), when the parser knows where.
        line: Option<usize>,
        /// The column of that line (1-based).
        column: Option<usize>,
        /// What the parser reported (values that may hold a password are hidden).
        message: String,
    },
    /// A database or shard group name that is empty, too long or not made of letters,
    /// digits, `_`, `-` and `.`.
    #[error("{kind} name `{name}`: use 1 to 64 letters, digits, `_`, `-` or `.`")]
    InvalidName {
        /// `database` or `shard group`.
        kind: &'static str,
        /// The name, escaped.
        name: String,
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
    /// Several mistakes in one settings text, each one of the other variants, in the order
    /// the checks found them ([`SettingsError::mistakes`] lists them either way).
    #[error("{} mistakes in the settings:{}", .errors.len(), several(.errors))]
    Several {
        /// The mistakes.
        errors: Vec<SettingsError>,
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

fn model_suffix(model: &Option<&'static str>) -> String {
    model
        .map(|m| format!(" (named by model `{m}`)"))
        .unwrap_or_default()
}

fn hint_suffix(hint: &Option<&'static str>) -> String {
    hint.map(|h| format!(" (expected one of: {h})"))
        .unwrap_or_default()
}

fn several(errors: &[SettingsError]) -> String {
    errors.iter().map(|e| format!("\n  - {e}")).collect()
}

impl SettingsError {
    /// Every mistake this error reports: the inner ones of [`Several`](Self::Several), else
    /// this one.
    pub fn mistakes(&self) -> &[SettingsError] {
        match self {
            SettingsError::Several { errors } => errors,
            one => std::slice::from_ref(one),
        }
    }

    /// The same error with every value that came from the settings scrubbed of anything
    /// that looks like a password (a URL written under the wrong key is echoed back).
    pub(crate) fn scrubbed(self) -> Self {
        use crate::settings::scrub_text as s;
        let o = |v: Option<String>| v.map(|v| s(&v));
        match self {
            SettingsError::Several { errors } => SettingsError::Several {
                errors: errors.into_iter().map(SettingsError::scrubbed).collect(),
            },
            SettingsError::Parse {
                key,
                line,
                column,
                message,
            } => SettingsError::Parse {
                key: o(key),
                line,
                column,
                message: s(&message),
            },
            SettingsError::InvalidName { kind, name } => SettingsError::InvalidName {
                kind,
                name: s(&name),
            },
            SettingsError::UnknownKey { key, hint } => {
                SettingsError::UnknownKey { key: s(&key), hint }
            }
            SettingsError::MissingUrl { database, url_env } => SettingsError::MissingUrl {
                database: s(&database),
                url_env: o(url_env),
            },
            SettingsError::UrlEnvNotUnicode { database, var } => SettingsError::UrlEnvNotUnicode {
                database: s(&database),
                var: s(&var),
            },
            SettingsError::UrlScheme {
                database,
                url,
                backend,
                expected,
            } => SettingsError::UrlScheme {
                database: s(&database),
                url: s(&url),
                backend,
                expected,
            },
            SettingsError::UnknownPrimary { database, primary } => SettingsError::UnknownPrimary {
                database: s(&database),
                primary: s(&primary),
            },
            SettingsError::PrimaryIsReplica {
                database,
                primary,
                its_primary,
            } => SettingsError::PrimaryIsReplica {
                database: s(&database),
                primary: s(&primary),
                its_primary: s(&its_primary),
            },
            SettingsError::MisplacedKey {
                database,
                key,
                reason,
            } => SettingsError::MisplacedKey {
                database: s(&database),
                key,
                reason,
            },
            SettingsError::GroupValue {
                group,
                key,
                value,
                reason,
            } => SettingsError::GroupValue {
                group: s(&group),
                key,
                value: s(&value),
                reason: s(&reason),
            },
            SettingsError::InvalidValue {
                database,
                key,
                value,
                reason,
            } => SettingsError::InvalidValue {
                database: o(database),
                key,
                value: s(&value),
                reason: s(&reason),
            },
            other => other,
        }
    }
}

fn line_prefix(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    }
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

/// A read that must run on the primary because a write's replication position is unknown
/// (the primary went away between the commit and the position query), while the primary does
/// not answer. Returned inside `diesel::result::Error::QueryBuilderError`; downcast to check.
#[derive(Debug, thiserror::Error)]
#[error(
    "a write to `{database}` committed just before its primary stopped answering, and its \
     replication position is unknown: no replica can be shown to have it, so this scope reads \
     `{database}` from the primary until it answers again (or the scope ends)"
)]
#[non_exhaustive]
pub struct PositionUnknown {
    /// The database.
    pub database: String,
    /// Why the primary cannot be reached.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The Diesel error for [`PositionUnknown`].
pub(crate) fn position_unknown(
    database: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(Box::new(PositionUnknown {
        database: database.to_owned(),
        source: Box::new(source),
    }))
}
