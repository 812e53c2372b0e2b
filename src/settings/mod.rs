//! Settings: the databases, their primaries and replicas, pinning and routing options.
//!
//! Loaded from TOML ([`Settings::from_toml_str`], [`Settings::from_file`]) or built in code.
//! Parsing only checks the TOML syntax and value types; everything else (unknown keys, a
//! replica without a primary, a URL of the wrong backend, ...) is checked once, when the
//! [`Cluster`](crate::Cluster) is built, and every mistake is a [`SettingsError`] naming the
//! database and the key.
//!
//! ```toml
//! [pinning]
//! seconds = 15                      # reads stay on the primary this long after this thread writes
//!
//! [routing]
//! write_functions = ["touch_user"]  # more functions whose calls must run on the primary
//! replica_retry = "5s"              # how long an unreachable replica is skipped
//! connect_timeout = "2s"            # connect timeout of replica connections (PostgreSQL, MySQL)
//!
//! [consistency]
//! mode = "read_your_writes"         # pin | read_your_writes | causal | strong | eventual
//! max_lag = "30s"                   # a replica behind by more than this in time ...
//! max_lag_bytes = 16777216          # ... and more than this in WAL bytes takes no reads
//! replica_wait = "0ms"              # how long a read may wait for a replica to catch up
//! monitor_interval = "1s"           # how often each replica's position and lag are checked
//! granularity = "database"          # database | table: what a write holds back
//!
//! [databases.default]               # a primary
//! url = "postgres://app@127.0.0.1:5432/app"
//! url_env = "DATABASE_URL"          # optional: taken from this variable when it is set
//! pool_size = 10                    # optional
//! read_strategy = "round_robin"     # optional: primary_only | round_robin | random | weighted
//!
//! [databases.default_replica]       # a replica of "default"
//! url = "postgres://app@127.0.0.1:5433/app"
//! primary = "default"
//! weight = 1                        # optional, used by read_strategy = "weighted"
//! ```

mod groups;
pub(crate) mod names;
mod url;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::SettingsError;

pub(crate) use self::groups::GroupSpec;
#[cfg(feature = "redis")]
pub(crate) use self::url::secrets as url_secrets;
#[cfg(feature = "postgres")]
pub(crate) use self::url::with_libpq_option;
pub(crate) use self::url::{scheme, scrub_text, SecretUrl};
pub(crate) use self::validate::{
    PoolSpec, PrimarySpec, ReplicaSpec, Topology, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REPLICA_TIMEOUT,
};

/// The default pool size of a primary.
pub const DEFAULT_POOL_SIZE: u32 = 10;
/// The default pin window after a write, in seconds (django-multidb-router's default).
pub const DEFAULT_PINNING_SECONDS: u64 = 15;
/// The default time an unreachable replica is skipped before it is tried again.
pub const DEFAULT_REPLICA_RETRY: Duration = Duration::from_secs(5);

/// The whole configuration of a [`Cluster`](crate::Cluster).
///
/// `Debug` prints every URL with its password replaced by `***`.
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pinning: PinningSettings,
    routing: RoutingSettings,
    consistency: ConsistencySettings,
    databases: BTreeMap<String, DatabaseSettings>,
    shard_groups: BTreeMap<String, ShardGroupSettings>,
    /// Keys the format does not know, found while parsing; reported at build time.
    #[serde(skip)]
    unknown_keys: Vec<String>,
}

/// `[pinning]`: the time-window pin after a write.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
struct PinningSettings {
    seconds: u64,
}

impl Default for PinningSettings {
    fn default() -> Self {
        PinningSettings {
            seconds: DEFAULT_PINNING_SECONDS,
        }
    }
}

/// Where reads that call a function the router does not know go (`[routing]
/// unknown_functions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnknownFunctions {
    /// To a replica, like any read (the default).
    #[default]
    Replica,
    /// To the primary, unless the function is a built-in read function or named in
    /// `read_functions`.
    Primary,
}

impl UnknownFunctions {
    /// The name in the settings.
    pub fn as_str(self) -> &'static str {
        names::name::<Self>(self as usize)
    }
}

/// `[routing]`: classification and failover options.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RoutingSettings {
    write_functions: Vec<String>,
    unknown_functions: Option<Choice<UnknownFunctions>>,
    read_functions: Vec<String>,
    replica_timeout: Option<DurationValue>,
    primary_timeout: Option<DurationValue>,
    replica_retry: Option<DurationValue>,
    connect_timeout: Option<DurationValue>,
}

/// A secret from the settings: deserialises from a string, never prints.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
struct SecretString(String);

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A duration setting: as written in the TOML text (checked at build, so that every mistake
/// of a file is reported at once), or as set in code (no text round trip).
#[derive(Clone, Debug, PartialEq, Eq)]
enum DurationValue {
    /// `"500ms"`, `"5s"`, `"off"` where a key allows it.
    Written(String),
    /// From a builder setter; `None` is `"off"`.
    Set(Option<Duration>),
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(DurationValue::Written)
    }
}

/// One of the names of a fieldless enum: as written in the TOML text (checked at build, so
/// that every mistake of a file is reported at once), or as set in code.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Choice<T> {
    /// `"round_robin"`, ...
    Written(String),
    /// From a builder setter.
    Set(T),
}

impl<'de, T> Deserialize<'de> for Choice<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Choice::Written)
    }
}

impl<T: serde::de::DeserializeOwned + Copy> Choice<T> {
    /// The value; else the name as written (quoted) and what the settings accept.
    fn get(&self, what: &str) -> Result<T, (String, String)> {
        match self {
            Choice::Set(v) => Ok(*v),
            Choice::Written(s) => names::parse(s, what).map_err(|_| {
                (
                    format!("{s:?}"),
                    format!(
                        "unknown {what} (expected one of: {})",
                        names::variants::<T>().join(", ")
                    ),
                )
            }),
        }
    }
}

/// `[consistency]`: what reads must see, and when a replica lags too far.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct ConsistencySettings {
    mode: Option<Choice<crate::Consistency>>,
    token_secret: Option<SecretString>,
    token_secret_env: Option<String>,
    /// Secrets that signed tokens before `token_secret` did: still accepted, never used to
    /// sign (a secret's rotation).
    token_previous_secrets: Option<Vec<SecretString>>,
    max_lag: Option<DurationValue>,
    max_lag_bytes: Option<u64>,
    replica_wait: Option<DurationValue>,
    monitor_interval: Option<DurationValue>,
    granularity: Option<Choice<crate::consistency::Granularity>>,
}

/// One `[databases.<name>]` entry: a primary, or a replica of one.
///
/// `Debug` prints the URL with its password replaced by `***`.
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    url: Option<String>,
    url_env: Option<String>,
    primary: Option<String>,
    pool_size: Option<i64>,
    min_idle: Option<i64>,
    connection_timeout: Option<DurationValue>,
    idle_timeout: Option<DurationValue>,
    max_lifetime: Option<DurationValue>,
    read_strategy: Option<Choice<ReadStrategy>>,
    weight: Option<i64>,
    shard_group: Option<String>,
    shard_id: Option<i64>,
}

/// One `[shard_groups.<name>]` entry: options of a group of shards.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ShardGroupSettings {
    bucketing: Option<Choice<crate::sharding::Bucketing>>,
    read_strategy: Option<Choice<ReadStrategy>>,
    epoch: Option<String>,
    storage: Option<String>,
}

impl ShardGroupSettings {
    /// A group with the default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how a new key picks its shard. Defaults to [`Bucketing::RoundRobin`].
    ///
    /// [`Bucketing::RoundRobin`]: crate::sharding::Bucketing::RoundRobin
    #[must_use]
    pub fn bucketing(mut self, bucketing: crate::sharding::Bucketing) -> Self {
        self.bucketing = Some(Choice::Set(bucketing));
        self
    }

    /// Sets the read strategy of the group's primaries that set none. Defaults to
    /// `round_robin`.
    #[must_use]
    pub fn read_strategy(mut self, strategy: ReadStrategy) -> Self {
        self.read_strategy = Some(Choice::Set(strategy));
        self
    }

    /// Sets the epoch of the group's global ids (RFC 3339). Defaults to
    /// `2016-01-01T00:00:00Z`.
    #[must_use]
    pub fn epoch(mut self, rfc3339: impl Into<String>) -> Self {
        self.epoch = Some(rfc3339.into());
        self
    }

    /// Sets the unsharded database that stores the shard picked for each key when the
    /// bucketing is not a pure function of the key. Defaults to none (such strategies then
    /// need models that store their own shard).
    #[must_use]
    pub fn storage(mut self, database: impl Into<String>) -> Self {
        self.storage = Some(database.into());
        self
    }
}

/// How a primary spreads its reads over its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReadStrategy {
    /// Every read goes to the primary; replicas are never used.
    PrimaryOnly,
    /// Replicas in turn, starting at a random one (django-multidb-router's behaviour).
    #[default]
    RoundRobin,
    /// A replica picked at random for each checkout.
    Random,
    /// A replica picked at random, in proportion to its `weight`.
    Weighted,
}

impl ReadStrategy {
    /// The name used in the settings (`round_robin`, ...).
    pub fn as_str(self) -> &'static str {
        names::name::<Self>(self as usize)
    }

    /// Every strategy name the settings accept.
    pub fn names() -> &'static [&'static str] {
        names::variants::<Self>()
    }
}

impl fmt::Display for ReadStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReadStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        names::parse(s, "read strategy")
    }
}

/// The keys allowed at each level, for "unknown key" hints.
const TOP_KEYS: &str = "pinning, routing, consistency, databases, shard_groups";
const GROUP_KEYS: &str = "bucketing, read_strategy, epoch, storage";
const PINNING_KEYS: &str = "seconds";
const ROUTING_KEYS: &str = "write_functions, unknown_functions, read_functions, replica_retry, \
     connect_timeout, replica_timeout, primary_timeout";
const CONSISTENCY_KEYS: &str = "mode, max_lag, max_lag_bytes, replica_wait, monitor_interval, \
     granularity, token_secret, token_secret_env, token_previous_secrets";
const DATABASE_KEYS: &str =
    "url, url_env, primary, pool_size, min_idle, connection_timeout, idle_timeout, max_lifetime, \
     read_strategy, weight, shard_group, shard_id";

impl Settings {
    /// Empty settings, to be filled in code with [`Settings::database`].
    pub fn new() -> Self {
        Settings::default()
    }

    /// Parses settings from TOML text.
    ///
    /// Fails only on TOML syntax and value types (the error names the key); the rest is checked
    /// when the cluster is built.
    pub fn from_toml_str(text: &str) -> Result<Self, SettingsError> {
        let mut unknown = Vec::new();
        let deserializer = toml::Deserializer::new(text);
        let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let ignored = serde_ignored::Deserializer::new(deserializer, &mut on_unknown);
        let mut settings: Settings = serde_path_to_error::deserialize(ignored).map_err(|e| {
            let key = e.path().to_string();
            let key = (key != "." && !key.is_empty()).then(|| scrub_text(&key));
            let inner = e.into_inner();
            let (line, column) = match inner.span() {
                Some(span) => {
                    let before = &text.as_bytes()[..span.start.min(text.len())];
                    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
                    (Some(line), Some(column))
                }
                None => (None, None),
            };
            SettingsError::Parse {
                key,
                line,
                column,
                message: scrub_text(inner.message().trim()),
            }
        })?;
        settings.unknown_keys = unknown;
        Ok(settings)
    }

    /// Reads and parses a TOML settings file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SettingsError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Io {
            path: path.to_owned(),
            source,
        })?;
        Settings::from_toml_str(&text)
    }

    /// Adds (or replaces) the shard group `name`'s options.
    #[must_use]
    pub fn shard_group(mut self, name: impl Into<String>, group: ShardGroupSettings) -> Self {
        self.shard_groups.insert(name.into(), group);
        self
    }

    /// Adds (or replaces) the database `name`.
    #[must_use]
    pub fn database(mut self, name: impl Into<String>, database: DatabaseSettings) -> Self {
        self.databases.insert(name.into(), database);
        self
    }

    /// Sets how long reads stay on the primary after this thread writes to it.
    /// Defaults to 15 seconds.
    #[must_use]
    pub fn pinning_seconds(mut self, seconds: u64) -> Self {
        self.pinning.seconds = seconds;
        self
    }

    /// Adds function names whose calls send a read to the primary (on top of the built-in
    /// list: `nextval`, advisory locks, `last_insert_rowid`, ...). Defaults to none.
    #[must_use]
    pub fn write_functions<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.routing
            .write_functions
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Where reads that call a function the router does not know go: `Replica` (a function
    /// that writes fails loudly there; one that only takes a lock succeeds silently) or
    /// `Primary` (every function but the built-in read functions and `read_functions`).
    /// Defaults to `Replica`.
    #[must_use]
    pub fn unknown_functions(mut self, to: UnknownFunctions) -> Self {
        self.routing.unknown_functions = Some(Choice::Set(to));
        self
    }

    /// Adds user functions known to only read, for `unknown_functions = "primary"`.
    /// Defaults to none.
    #[must_use]
    pub fn read_functions<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.routing
            .read_functions
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Sets how long a replica may leave its monitor's probe unanswered before it counts as
    /// hung: its calls in progress are cut and retried on the primary. Defaults to 1 second.
    #[must_use]
    pub fn replica_timeout(mut self, timeout: Duration) -> Self {
        self.routing.replica_timeout = Some(DurationValue::Set(Some(timeout)));
        self
    }

    /// Sets a deadline for every call on a primary, after which it is cut and fails with an
    /// error saying that the outcome of a write is unknown. Defaults to none.
    #[must_use]
    pub fn primary_timeout(mut self, timeout: Duration) -> Self {
        self.routing.primary_timeout = Some(DurationValue::Set(Some(timeout)));
        self
    }

    /// Sets how long an unreachable replica is skipped before it is tried again.
    /// Defaults to 5 seconds.
    #[must_use]
    pub fn replica_retry(mut self, after: Duration) -> Self {
        self.routing.replica_retry = Some(DurationValue::Set(Some(after)));
        self
    }

    /// Signs consistency tokens with `secret` (at least 16 bytes), and refuses unsigned or
    /// badly signed ones. Defaults to no signing.
    #[must_use]
    pub fn token_secret(mut self, secret: impl Into<String>) -> Self {
        self.consistency.token_secret = Some(SecretString(secret.into()));
        self
    }

    /// Also accepts tokens signed with `secret` (at least 16 bytes), a `token_secret` being
    /// retired: the new secret signs every token from now on, and tokens signed with the old
    /// one stay valid until their cookies, stuck keys and jobs are gone, when it is removed
    /// from the settings. Needs a `token_secret`. Defaults to none.
    #[must_use]
    pub fn token_previous_secret(mut self, secret: impl Into<String>) -> Self {
        self.consistency
            .token_previous_secrets
            .get_or_insert_with(Vec::new)
            .push(SecretString(secret.into()));
        self
    }

    /// Sets the consistency mode. Defaults to `read_your_writes` on PostgreSQL and `pin` on
    /// SQLite.
    #[must_use]
    pub fn consistency(mut self, mode: crate::Consistency) -> Self {
        self.consistency.mode = Some(Choice::Set(mode));
        self
    }

    /// Sets how long a read may wait for a replica to catch up before it goes to the primary.
    /// Defaults to 0.
    #[must_use]
    pub fn replica_wait(mut self, wait: Duration) -> Self {
        self.consistency.replica_wait = Some(DurationValue::Set(Some(wait)));
        self
    }

    /// Sets what a write holds back: every read of its database, or only reads of the tables
    /// it wrote. Defaults to the whole database.
    #[must_use]
    pub fn granularity(mut self, granularity: crate::consistency::Granularity) -> Self {
        self.consistency.granularity = Some(Choice::Set(granularity));
        self
    }

    /// Sets how often the monitor checks each replica's position and lag. Defaults to 1 s.
    #[must_use]
    pub fn monitor_interval(mut self, interval: Duration) -> Self {
        self.consistency.monitor_interval = Some(DurationValue::Set(Some(interval)));
        self
    }

    /// Sets the replication lag in time past which a replica takes no reads (when it is also
    /// past `max_lag_bytes`). Defaults to 30 seconds.
    #[must_use]
    pub fn max_lag(mut self, lag: Duration) -> Self {
        self.consistency.max_lag = Some(DurationValue::Set(Some(lag)));
        self
    }

    /// Sets the replication lag in WAL bytes past which a replica takes no reads (when it is
    /// also past `max_lag`). Defaults to 16 MiB.
    #[must_use]
    pub fn max_lag_bytes(mut self, bytes: u64) -> Self {
        self.consistency.max_lag_bytes = Some(bytes);
        self
    }

    /// Sets the connect timeout of every connection. Defaults to 2 seconds.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.routing.connect_timeout = Some(DurationValue::Set(Some(timeout)));
        self
    }

    /// Takes the token secret from this environment variable. Defaults to none.
    #[must_use]
    pub fn token_secret_env(mut self, var: impl Into<String>) -> Self {
        self.consistency.token_secret_env = Some(var.into());
        self
    }

    /// The names of all declared databases, in name order.
    pub fn database_names(&self) -> impl Iterator<Item = &str> {
        self.databases.keys().map(String::as_str)
    }

    /// The pin window in seconds.
    pub fn pinning_window(&self) -> Duration {
        Duration::from_secs(self.pinning.seconds)
    }
}

impl DatabaseSettings {
    /// A primary at `url`.
    pub fn primary(url: impl Into<String>) -> Self {
        DatabaseSettings {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    /// A replica at `url` of the primary named `primary`.
    pub fn replica(url: impl Into<String>, primary: impl Into<String>) -> Self {
        DatabaseSettings {
            url: Some(url.into()),
            primary: Some(primary.into()),
            ..Default::default()
        }
    }

    /// Takes the URL from this environment variable when it is set. Defaults to none.
    #[must_use]
    pub fn url_env(mut self, var: impl Into<String>) -> Self {
        self.url_env = Some(var.into());
        self
    }

    /// Sets the size of a primary's connection pool. Defaults to 10.
    #[must_use]
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = Some(i64::from(size));
        self
    }

    /// Keeps at least this many idle connections in a primary's pool. Defaults to 0.
    #[must_use]
    pub fn min_idle(mut self, n: u32) -> Self {
        self.min_idle = Some(i64::from(n));
        self
    }

    /// Sets how long `pool.get()` waits for a free connection. Defaults to 30 seconds.
    #[must_use]
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = Some(DurationValue::Set(Some(timeout)));
        self
    }

    /// Closes connections idle for longer (`None`: never). Defaults to 10 minutes.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = Some(DurationValue::Set(timeout));
        self
    }

    /// Closes connections older than this (`None`: never). Defaults to 30 minutes.
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = Some(DurationValue::Set(lifetime));
        self
    }

    /// Sets how a primary spreads reads over its replicas. Defaults to round-robin.
    #[must_use]
    pub fn read_strategy(mut self, strategy: ReadStrategy) -> Self {
        self.read_strategy = Some(Choice::Set(strategy));
        self
    }

    /// Sets a replica's weight for the weighted strategy. Defaults to 1.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(i64::from(weight));
        self
    }

    /// Makes this primary shard `shard_id` of the group `group`.
    #[must_use]
    pub fn shard(mut self, group: impl Into<String>, shard_id: i32) -> Self {
        self.shard_group = Some(group.into());
        self.shard_id = Some(i64::from(shard_id));
        self
    }

    /// Is this entry a replica (it names a primary)?
    pub fn is_replica(&self) -> bool {
        self.primary.is_some()
    }
}

/// Writes `raw` (a `Debug` rendering of settings) with every password in it hidden: the
/// secrets of the URLs it holds, and anything that looks like a password.
fn write_scrubbed<'a>(
    f: &mut fmt::Formatter<'_>,
    raw: String,
    urls: impl Iterator<Item = &'a str>,
) -> fmt::Result {
    let mut out = raw;
    for url in urls {
        for secret in url::secrets(url) {
            out = out.replace(&secret, "***");
        }
    }
    f.write_str(&scrub_text(&out))
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Raw<'a>(&'a Settings);
        impl fmt::Debug for Raw<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("Settings")
                    .field("pinning_seconds", &self.0.pinning.seconds)
                    .field("routing", &self.0.routing)
                    .field("consistency", &self.0.consistency)
                    .field("databases", &self.0.databases)
                    .field("shard_groups", &self.0.shard_groups)
                    .finish_non_exhaustive()
            }
        }
        let raw = if f.alternate() {
            format!("{:#?}", Raw(self))
        } else {
            format!("{:?}", Raw(self))
        };
        write_scrubbed(
            f,
            raw,
            self.databases.values().filter_map(|d| d.url.as_deref()),
        )
    }
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = format!(
            "DatabaseSettings {{ url: {:?}, url_env: {:?}, primary: {:?}, pool_size: {:?}, \
             read_strategy: {:?}, weight: {:?}, shard_group: {:?}, shard_id: {:?} }}",
            self.url,
            self.url_env,
            self.primary,
            self.pool_size,
            self.read_strategy,
            self.weight,
            self.shard_group,
            self.shard_id
        );
        write_scrubbed(f, raw, self.url.as_deref().into_iter())
    }
}

/// The keys allowed next to an unknown key path, for the error's hint.
fn keys_hint(path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path.split('.').collect();
    match parts.as_slice() {
        [_] => Some(TOP_KEYS),
        ["pinning", _] => Some(PINNING_KEYS),
        ["routing", _] => Some(ROUTING_KEYS),
        ["consistency", _] => Some(CONSISTENCY_KEYS),
        ["databases", _, _] => Some(DATABASE_KEYS),
        ["shard_groups", _, _] => Some(GROUP_KEYS),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
