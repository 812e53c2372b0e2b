//! The runtime state of one primary, shared by every connection of its pool: its URL,
//! replicas, classifier, positions and counters. It never reads or writes a thread's scope:
//! the routed connection passes the scope's facts in and records into the scope itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::consistency::{Consistency, ConsistencySpec, Granularity, Position, PositionCell};
use crate::routing::{
    CheckTurn, Classifier, Limits, ReplicaSet, RouteReason, SharedCheck, TableId, TableUse,
};
use crate::settings::{PrimarySpec, SecretUrl};
use crate::stats::{Counters, DatabaseStats};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Cluster-wide options every database gets.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) classifier: Classifier,
    pub(crate) pin_window: Duration,
    pub(crate) replica_retry: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) replica_timeout: Duration,
    pub(crate) primary_timeout: Option<Duration>,
    pub(crate) consistency: ConsistencySpec,
    /// The backend reports replication positions.
    pub(crate) has_positions: bool,
    /// Turns a replica URL into the one to open it with.
    pub(crate) replica_url: fn(&str) -> String,
    /// Adds a connect timeout to a URL.
    pub(crate) connect_url: fn(&str, Duration) -> String,
}

/// What starts a database's monitoring, at most once.
struct Activation(std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Activation")
    }
}

/// One primary with its replicas, shared by every connection of its pool.
#[derive(Debug)]
pub(crate) struct PrimaryState {
    /// Unique in the process: keys the thread-local write windows and positions.
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) url: SecretUrl,
    /// The URL the primary is opened with: `url` with the connect timeout.
    pub(crate) open_url: SecretUrl,
    pub(crate) replicas: ReplicaSet,
    pub(crate) classifier: Classifier,
    pub(crate) pin_window: Duration,
    pub(crate) connect_timeout: Duration,
    /// How long a replica may leave its probe unanswered before it counts as hung.
    pub(crate) replica_timeout: Duration,
    /// The deadline of calls on the primary, if any.
    pub(crate) primary_timeout: Option<Duration>,
    pub(crate) consistency: ConsistencySpec,
    pub(crate) has_positions: bool,
    /// The primary's position as the monitor, writes and checks last saw it.
    primary_position: PositionCell,
    /// Covers every position any thread of this process wrote (for `causal`).
    max_written: PositionCell,
    /// When the latest write of this process whose position was left to learn returned (0:
    /// none), in the replica set's clock: `causal` reads wait for a primary position read
    /// after it.
    lazy_write_ms: AtomicU64,
    /// ... of those whose tables are not known (with `granularity = "table"`).
    lazy_coarse_ms: AtomicU64,
    /// ... per table (with `granularity = "table"`).
    lazy_table_ms: RwLock<HashMap<TableId, u64>>,
    /// Starts the monitor's probes of this database's servers, once (`None` when it has none,
    /// or they started).
    monitor_activation: Activation,
    /// A connection of its pool was opened ([`activate_monitor`](Self::activate_monitor)).
    in_use: std::sync::atomic::AtomicBool,
    /// The monitor's last probe of the primary: when it started, and the position it read.
    /// That position covers every write that returned before the probe started.
    primary_probe: std::sync::Mutex<Option<(u64, Position)>>,
    /// ... of writes whose tables are not known.
    coarse_written: PositionCell,
    /// Reads of the primary's position on behalf of reads whose writes' positions are not
    /// known yet.
    primary_check: SharedCheck,
    /// ... per table (with `granularity = "table"`).
    table_written: RwLock<HashMap<TableId, Position>>,
    pub(crate) counters: Counters,
    /// The pool's size and options as last configured (a reload compares them; the async
    /// pools, which the cluster builds on demand, take them).
    pool_settings: RwLock<(u32, crate::settings::PoolSpec)>,
    /// The async connections' custom types resolved so far.
    #[cfg(all(feature = "async", any(feature = "postgres", feature = "mysql")))]
    pub(crate) types: crate::backend::private::TypeCache,
}

/// The lag limits of `[consistency]`, and when a replica's last probe is too old.
pub(crate) fn limits(c: &ConsistencySpec, connect_timeout: Duration) -> Limits {
    Limits {
        max_lag: c.max_lag,
        max_lag_bytes: c.max_lag_bytes,
        stale_after: c
            .monitor_interval
            .saturating_mul(2)
            .saturating_add(connect_timeout)
            .saturating_add(Duration::from_millis(500)),
    }
}

/// The least position covering both (the newer, `b`, where they do not combine).
pub(crate) fn join(a: Option<Position>, b: Option<Position>) -> Option<Position> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.raise(&b);
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

impl PrimaryState {
    pub(crate) fn new(spec: &PrimarySpec, o: &Options) -> Self {
        let limits = limits(&o.consistency, o.connect_timeout);
        let open_url = |url: &str| (o.connect_url)(&(o.replica_url)(url), o.connect_timeout);
        PrimaryState {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: spec.name.clone(),
            url: spec.url.clone(),
            open_url: SecretUrl::new((o.connect_url)(spec.url.expose(), o.connect_timeout)),
            replicas: ReplicaSet::new(
                &spec.name,
                &spec.replicas,
                spec.read_strategy,
                o.replica_retry,
                &open_url,
            )
            .with_limits(limits),
            classifier: o.classifier.clone(),
            pin_window: o.pin_window,
            connect_timeout: o.connect_timeout,
            replica_timeout: o.replica_timeout,
            primary_timeout: o.primary_timeout,
            consistency: o.consistency.clone(),
            has_positions: o.has_positions,
            primary_position: PositionCell::default(),
            max_written: PositionCell::default(),
            lazy_write_ms: AtomicU64::new(0),
            lazy_coarse_ms: AtomicU64::new(0),
            lazy_table_ms: RwLock::new(HashMap::new()),
            monitor_activation: Activation(std::sync::Mutex::new(None)),
            in_use: std::sync::atomic::AtomicBool::new(false),
            primary_probe: std::sync::Mutex::new(None),
            coarse_written: PositionCell::default(),
            primary_check: SharedCheck::default(),
            table_written: RwLock::new(HashMap::new()),
            counters: Counters::new(&spec.name),
            pool_settings: RwLock::new((spec.pool_size, spec.pool)),
            #[cfg(all(feature = "async", any(feature = "postgres", feature = "mysql")))]
            types: Default::default(),
        }
    }

    /// A primary without replicas, for `RoutedConnection::establish`.
    /// `mysql_dialect`: the server reads SQL as MySQL does.
    pub(crate) fn standalone(url: &str, has_positions: bool, mysql_dialect: bool) -> Self {
        let spec = PrimarySpec {
            name: "default".to_owned(),
            url: SecretUrl::new(url),
            pool_size: 1,
            pool: Default::default(),
            read_strategy: crate::settings::ReadStrategy::PrimaryOnly,
            replicas: Vec::new(),
        };
        PrimaryState::new(
            &spec,
            &Options {
                classifier: Classifier::new().mysql_dialect(mysql_dialect),
                pin_window: Duration::from_secs(crate::settings::DEFAULT_PINNING_SECONDS),
                replica_retry: crate::settings::DEFAULT_REPLICA_RETRY,
                connect_timeout: crate::settings::DEFAULT_CONNECT_TIMEOUT,
                replica_timeout: crate::settings::DEFAULT_REPLICA_TIMEOUT,
                primary_timeout: None,
                consistency: ConsistencySpec::default(),
                has_positions,
                replica_url: |u| u.to_owned(),
                connect_url: |u, _| u.to_owned(),
            },
        )
    }

    /// The pool's size and options, as last configured (a reload changes them).
    pub(crate) fn pool_settings(&self) -> (u32, crate::settings::PoolSpec) {
        match self.pool_settings.read() {
            Ok(p) => *p,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Sets the pool's size and options (a reload).
    pub(crate) fn set_pool_settings(&self, size: u32, pool: crate::settings::PoolSpec) {
        match self.pool_settings.write() {
            Ok(mut p) => *p = (size, pool),
            Err(poisoned) => *poisoned.into_inner() = (size, pool),
        }
    }

    /// The mode in force given the caller's scope override (`with_consistency`): the
    /// override, else the settings, else the backend's default. Without positions, position
    /// modes fall back to `pin`.
    pub(crate) fn mode(&self, scope_override: Option<Consistency>) -> Consistency {
        let mode = scope_override
            .or(self.consistency.mode)
            .unwrap_or(if self.has_positions {
                Consistency::ReadYourWrites
            } else {
                Consistency::Pin
            });
        if mode.uses_positions() && !self.has_positions {
            Consistency::Pin
        } else {
            mode
        }
    }

    /// Are positions tracked per table (`granularity = "table"` on a backend with positions)?
    pub(crate) fn wants_tables(&self) -> bool {
        self.has_positions && self.consistency.granularity == Granularity::Table
    }

    /// Is the primary an SQLite in-memory database, which closing would lose?
    pub(crate) fn is_in_memory(&self) -> bool {
        let url = self.url.expose();
        url.contains(":memory:") || url.contains("mode=memory")
    }

    /// Counts a routed statement and reports it to `tracing`.
    pub(crate) fn routed(&self, reason: RouteReason, replica: Option<usize>) {
        self.counters.count(reason, replica.is_some());
        let event = |server: &str, role: &str| {
            tracing::debug!(
                target: "diesel_sharding::route",
                database = %self.name,
                server,
                role,
                reason = reason.as_str(),
                "routed statement"
            );
        };
        match replica {
            Some(i) => {
                self.replicas.with(i, |r| {
                    r.count_statement();
                    event(&r.name, "replica");
                });
            }
            None => event(&self.name, "primary"),
        }
    }

    /// Until when a write committed now pins its writer's reads here (mode `pin`), if at all.
    pub(crate) fn pin_until(&self) -> Option<Instant> {
        if self.pin_window.is_zero() {
            return None;
        }
        let now = Instant::now();
        // the window is bounded by validation; saturate anyway
        Some(now.checked_add(self.pin_window).unwrap_or(now))
    }

    /// A write committed here at `position`, to `tables` (empty: unknown), for the process's
    /// bookkeeping; returns the tables the writer's scope records (none unless the
    /// granularity is `table`).
    pub(crate) fn wrote_at<'t>(&self, position: &Position, tables: &'t [TableId]) -> &'t [TableId] {
        let tables = if self.consistency.granularity == Granularity::Table {
            tables
        } else {
            &[]
        };
        self.max_written.raise(position);
        self.primary_position.raise(position);
        if tables.is_empty() {
            self.coarse_written.raise(position);
        } else if let Ok(mut map) = self.table_written.write() {
            for t in tables {
                map.entry(*t)
                    .and_modify(|p| p.raise(position))
                    .or_insert_with(|| position.clone());
            }
        }
        tables
    }

    /// What starts the monitor's probes of this database, when it is first used.
    pub(crate) fn set_monitor_activation(&self, start: Box<dyn FnOnce() + Send>) {
        if let Ok(mut slot) = self.monitor_activation.0.lock() {
            *slot = Some(start);
        }
    }

    /// Has the process used this database (opened a connection of its pool)?
    pub(crate) fn in_use(&self) -> bool {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The process uses this database: its servers are probed from now on.
    pub(crate) fn activate_monitor(&self) {
        self.in_use.store(true, Ordering::Relaxed);
        let start = self
            .monitor_activation
            .0
            .lock()
            .ok()
            .and_then(|mut s| s.take());
        if let Some(start) = start {
            start();
        }
    }

    /// A write of this process returned at `at_ms` and its position is left to learn.
    /// `tables` are the tables it wrote where positions are kept per table (empty: not known,
    /// or kept per database).
    pub(crate) fn wrote_lazily(&self, at_ms: u64, tables: &[TableId]) {
        self.lazy_write_ms.fetch_max(at_ms, Ordering::Relaxed);
        if self.consistency.granularity != Granularity::Table {
            return;
        }
        if tables.is_empty() {
            self.lazy_coarse_ms.fetch_max(at_ms, Ordering::Relaxed);
        } else if let Ok(mut map) = self.lazy_table_ms.write() {
            for t in tables {
                let at = map.entry(*t).or_insert(0);
                *at = (*at).max(at_ms);
            }
        }
    }

    /// The monitor read the primary at `position` in a probe that started at `started_ms`.
    pub(crate) fn primary_probed(&self, started_ms: u64, position: &Position) {
        self.primary_position.raise(position);
        if let Ok(mut p) = self.primary_probe.lock() {
            if p.as_ref().is_none_or(|(s, _)| *s <= started_ms) {
                *p = Some((started_ms, position.clone()));
            }
        }
    }

    /// The caller's turn to read the primary's position for reads whose writes' positions
    /// are not known yet, and when it starts: `None` while another connection does, or the
    /// rate of such reads (one per `gap_ms` on average) is reached.
    pub(crate) fn begin_primary_check(&self, gap_ms: u64) -> Option<(CheckTurn<'_>, u64)> {
        let now = self.replicas.clock_ms();
        self.primary_check
            .begin(now, gap_ms)
            .map(|turn| (turn, now))
    }

    /// The monitor's last probe of the primary: `(started_ms, position)`.
    pub(crate) fn last_primary_probe(&self) -> Option<(u64, Position)> {
        self.primary_probe.lock().ok().and_then(|p| p.clone())
    }

    /// What `causal` must add for the process's writes whose positions were left to learn:
    /// `Err(())` while one returned after the monitor's last probe of the primary started
    /// (no position covers it yet), else the probe's position (`None` when there are none).
    /// With `reads` (the tables a read touches, positions kept per table), only writes to
    /// those tables, or to tables not known, count.
    pub(crate) fn lazy_writes_bound(
        &self,
        reads: Option<&[TableId]>,
    ) -> Result<Option<Position>, ()> {
        let last = match reads {
            Some(reads) if self.consistency.granularity == Granularity::Table => {
                let map = self.lazy_table_ms.read().map_err(|_| ())?;
                reads
                    .iter()
                    .filter_map(|t| map.get(t))
                    .copied()
                    .fold(self.lazy_coarse_ms.load(Ordering::Relaxed), u64::max)
            }
            _ => self.lazy_write_ms.load(Ordering::Relaxed),
        };
        if last == 0 {
            return Ok(None);
        }
        match self.last_primary_probe() {
            Some((started, position)) if started > last => Ok(Some(position)),
            _ => Err(()),
        }
    }

    /// The furthest the primary is known to have reached (monitor, writes, checks, and what
    /// any replica has replayed, which the primary had first), if anything is known.
    pub(crate) fn known_primary_position(&self) -> Option<Position> {
        join(self.primary_position.get(), self.replicas.max_replay())
    }

    /// The primary's position as last seen (without the replicas'), for byte lags.
    pub(crate) fn primary_position(&self) -> Option<Position> {
        self.primary_position.get()
    }

    /// The primary was found writing `timeline` (on a new connection to it, and by the
    /// monitor). A change is a failover (or a restore): see
    /// [`ReplicaSet::saw_primary_timeline`]; the primary's position is learned anew too.
    /// What the process wrote keeps counting: a write the new primary has sits at or
    /// before the new timeline's start, and a position the new primary has not reached is
    /// clamped to its own when a read asks for it.
    pub(crate) fn saw_primary_timeline(&self, timeline: u32) {
        if let Some(before) = self.replicas.saw_primary_timeline(timeline) {
            self.primary_position.clear();
            tracing::error!(
                target: "diesel_sharding::monitor",
                database = %self.name,
                before,
                now = timeline,
                "the primary writes another timeline (failover, or a restored primary): \
                 replica positions are learned anew, and a replica takes reads again once \
                 it replays the new timeline"
            );
        }
    }

    /// The primary was seen at `position`.
    pub(crate) fn saw_primary_at(&self, position: &Position) {
        self.primary_position.raise(position);
    }

    /// What `causal` adds for a read of `reads` (all tables when unknown): every position any
    /// thread of this process wrote there. `Err(())` when it cannot be told.
    pub(crate) fn process_written(
        &self,
        reads: Option<&[TableId]>,
    ) -> Result<Option<Position>, ()> {
        match reads {
            Some(reads) if self.consistency.granularity == Granularity::Table => {
                let map = self.table_written.read().map_err(|_| ())?;
                let mut need = self.coarse_written.get();
                for p in reads.iter().filter_map(|t| map.get(t)) {
                    need = join(need, Some(p.clone()));
                }
                Ok(need)
            }
            _ => Ok(self.max_written.get()),
        }
    }

    /// The tables a read must be caught up on: `None` (the whole database) unless positions
    /// are kept per table and the statement's tables are known.
    pub(crate) fn read_tables<'a>(&self, tables: Option<&'a TableUse>) -> Option<&'a [TableId]> {
        match tables {
            Some(t) if self.consistency.granularity == Granularity::Table && !t.read.is_empty() => {
                Some(&t.read)
            }
            _ => None,
        }
    }

    pub(crate) fn stats(&self) -> DatabaseStats {
        self.counters.snapshot(
            self.replicas
                .all()
                .iter()
                .filter(|r| !r.is_retired() || r.statements() > 0)
                .map(|r| (r.name.clone(), r.statements())),
        )
    }
}
