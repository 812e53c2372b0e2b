//! Consistency: which replica may serve a read, so that replication lag never shows a reader
//! data older than it must see.
//!
//! PostgreSQL replicas replay the primary's write-ahead log; a position (LSN) says how far.
//! A [`Position`] is that LSN, or on MySQL and MariaDB a GTID set; positions are partially
//! ordered ([`Position::covers`]), and tokens carry either ([`ConsistencyToken`]'s versions).
//! A committed write's position is learned when something compares against it: from the
//! monitor's next probe of the primary, or from a read's shared refresh (one connection at a
//! time reads the primary's position for everyone, at a bounded rate), in `read_your_writes`
//! and `causal` (reads that need it go to the primary until then, without a query); right
//! after the commit in `strong`; and from the primary when a token is taken. Replica positions
//! come from the monitor and the same kind of shared refresh: a read the cached positions
//! cannot serve never pays a round trip of its own to learn that it still cannot (unless it
//! chose to wait, `replica_wait`). A read goes to a replica only when that replica has
//! replayed past what the reader must see:
//!
//! | mode | a read goes to a replica only if it has replayed |
//! |---|---|
//! | `pin` | (no positions) this thread has not written within `pinning.seconds` |
//! | `read_your_writes` (default on PostgreSQL) | every position this thread (or the token it runs under) wrote or read |
//! | `causal` | ... and every position any thread of this process wrote to that database |
//! | `strong` | ... and the primary's position read when the statement starts |
//! | `eventual` | nothing: any healthy replica within the lag limits |
//!
//! In every mode a replica that is down, or behind by more than `max_lag` (time) and more than
//! `max_lag_bytes` (WAL), takes no reads. When no replica qualifies, a read may wait up to
//! `replica_wait` for one to catch up, then goes to the primary: a position no replica has
//! reached costs a primary read, never a stale one.
//!
//! SQLite has no positions: every mode but `eventual` behaves as `pin` there.

mod monitor;
mod position;
pub(crate) mod scope;
mod token;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub(crate) use self::monitor::Monitor;
pub(crate) use self::position::PositionCell;
pub use self::position::{GtidSet, Position, PositionError};
pub use self::token::{ConsistencyToken, TokenError};
use crate::settings::names;

/// What a read must see; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Consistency {
    /// The time-window pin: the writing thread reads from the primary for `pinning.seconds`.
    Pin,
    /// Reads see everything this thread (or its token) wrote or read before.
    ReadYourWrites,
    /// Reads also see everything any thread of this process wrote.
    Causal,
    /// Reads see everything committed on the primary before the statement started.
    Strong,
    /// Reads go to any healthy replica within the lag limits.
    Eventual,
}

impl Consistency {
    /// The mode's name in the settings.
    pub fn as_str(self) -> &'static str {
        names::name::<Self>(self as usize)
    }

    /// Every name the settings accept.
    pub fn names() -> &'static [&'static str] {
        names::variants::<Self>()
    }

    /// Does the mode route by replication positions?
    pub(crate) fn uses_positions(self) -> bool {
        matches!(
            self,
            Consistency::ReadYourWrites | Consistency::Causal | Consistency::Strong
        )
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Consistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        names::parse(s, "consistency mode")
    }
}

/// How finely write positions are tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Granularity {
    /// A write holds back every read of its database until a replica has replayed it. Safe
    /// whatever the schema does (views, triggers, functions that read other tables).
    #[default]
    Database,
    /// A write holds back only reads of the tables it wrote (named in the SQL; statements
    /// whose tables are unclear count for the whole database). Keeps more reads on the
    /// replicas, but a read that reaches a written table only through a view, a trigger's
    /// side effect or a function is not held back: use it only where the schema has none.
    Table,
}

impl Granularity {
    /// The name in the settings.
    pub fn as_str(self) -> &'static str {
        names::name::<Self>(self as usize)
    }
}

/// The secret tokens are signed with; `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct TokenSecret(pub(crate) std::sync::Arc<[u8]>);

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(***)")
    }
}

/// Validated `[consistency]` settings.
#[derive(Debug, Clone)]
pub(crate) struct ConsistencySpec {
    /// `None`: the backend's default (`read_your_writes` with positions, else `pin`).
    pub(crate) mode: Option<Consistency>,
    pub(crate) max_lag: Duration,
    pub(crate) max_lag_bytes: u64,
    pub(crate) replica_wait: Duration,
    pub(crate) monitor_interval: Duration,
    pub(crate) granularity: Granularity,
    /// Tokens are signed with this, and must carry a valid signature (`token_secret`).
    pub(crate) token_secret: Option<TokenSecret>,
    /// Secrets being retired: their signatures are still accepted.
    pub(crate) previous_secrets: Vec<TokenSecret>,
}

/// Defaults of the `[consistency]` keys.
pub(crate) const DEFAULT_MAX_LAG: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_MAX_LAG_BYTES: u64 = 16 * 1024 * 1024;
pub(crate) const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(1);

impl Default for ConsistencySpec {
    fn default() -> Self {
        ConsistencySpec {
            mode: None,
            max_lag: DEFAULT_MAX_LAG,
            max_lag_bytes: DEFAULT_MAX_LAG_BYTES,
            replica_wait: Duration::ZERO,
            monitor_interval: DEFAULT_MONITOR_INTERVAL,
            granularity: Granularity::Database,
            token_secret: None,
            previous_secrets: Vec::new(),
        }
    }
}
