//! A primary's replicas: which one takes the next read, and which are skipped after a failure.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::atomic::{AtomicPtr, AtomicU8};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::consistency::{Position, PositionCell};
use crate::settings::{ReadStrategy, ReplicaSpec, SecretUrl};

/// How often, on average, a server's position is read on behalf of reads that its cached
/// value cannot serve, for the whole process (the monitor's probes aside); a few reads in a
/// row are let through at once ([`REFRESH_BURST`]), so that a quiet process always asks.
pub(crate) const REFRESH_GAP_MS: u64 = 20;
/// ... while a read waits for a replica (`replica_wait`): the user chose to wait.
pub(crate) const WAITING_REFRESH_GAP_MS: u64 = 1;
/// How many such reads may come at once, before the gap applies.
pub(crate) const REFRESH_BURST: u64 = 4;

/// One check at a time of a server's position, for every connection of the process, at a
/// bounded rate (a generic cell rate algorithm: on average one per gap, [`REFRESH_BURST`] at
/// once): the others use the cached answer.
#[derive(Debug, Default)]
pub(crate) struct SharedCheck {
    busy: AtomicBool,
    /// The theoretical time of the next check, in the replica set's clock.
    next: AtomicU64,
}

impl SharedCheck {
    /// The caller's turn to check, if no check is in flight and the rate allows one at
    /// `now_ms` with checks `gap_ms` apart. The turn ends when dropped.
    pub(crate) fn begin(&self, now_ms: u64, gap_ms: u64) -> Option<CheckTurn<'_>> {
        self.take(now_ms, gap_ms)
            .then_some(CheckTurn(Turn::Borrowed(self)))
    }

    /// Takes the turn [`begin`](Self::begin) hands out; the caller ends it.
    fn take(&self, now_ms: u64, gap_ms: u64) -> bool {
        if self.busy.load(Ordering::Relaxed) {
            return false;
        }
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let after = next.max(now_ms).saturating_add(gap_ms);
            if after - now_ms > REFRESH_BURST * gap_ms {
                return false;
            }
            match self
                .next
                .compare_exchange_weak(next, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(seen) => next = seen,
            }
        }
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
}

/// A caller's turn to check a position; the next caller's may start once it is dropped.
#[derive(Debug)]
pub(crate) struct CheckTurn<'a>(Turn<'a>);

#[derive(Debug)]
enum Turn<'a> {
    Borrowed(&'a SharedCheck),
    /// A replica's: the replica set may be replaced while the turn lasts.
    Replica(Arc<Replica>),
}

impl Drop for CheckTurn<'_> {
    fn drop(&mut self) {
        let check = match &self.0 {
            Turn::Borrowed(check) => check,
            Turn::Replica(r) => &r.check,
        };
        check.busy.store(false, Ordering::Release);
    }
}

/// One replica as the router sees it.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) name: String,
    /// The URL to open it with (read-only form).
    pub(crate) url: SecretUrl,
    weight: AtomicU32,
    /// Removed from the settings by a reload: takes no reads, and is not probed. Its slot
    /// stays, so that every replica keeps its index for as long as the process runs.
    retired: AtomicBool,
    /// Statements it ran (for [`Cluster::stats`](crate::Cluster::stats)) ...
    statements: AtomicU64,
    /// ... and its metric handles.
    meters: crate::metrics::ReplicaMeters,
    /// Skipped until this many milliseconds after the set's epoch; 0 = healthy.
    down_until_ms: AtomicU64,
    /// Replay position last seen.
    replay: PositionCell,
    /// Reads of its replay position on behalf of reads the cached one cannot serve.
    check: SharedCheck,
    /// Replication lag in time at the last probe, in milliseconds.
    lag_ms: AtomicU64,
    /// When the last probe succeeded, in milliseconds after the epoch (0: never).
    probed_ms: AtomicU64,
    /// Which server incarnation answers behind the address (start time and system id;
    /// 0: not known yet).
    identity: AtomicU64,
    /// Bumped whenever the replica goes down, hangs or is replaced: connections opened
    /// before are reopened.
    generation: AtomicU64,
    /// Its probe went unanswered past `replica_timeout`: calls in progress on it are cut.
    hung: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The server behind the address does not replay (promoted): no replica reads, no
    /// positions, until a probe finds it replaying again.
    promoted: std::sync::atomic::AtomicBool,
    /// The timeline it was last found replaying (PostgreSQL; 0: not known).
    timeline: AtomicU32,
    /// When a new incarnation was last seen (restarted, rebuilt, replaced), in milliseconds
    /// after the epoch (0: never): positions seen before it say nothing about it.
    renewed_ms: AtomicU64,
    /// When the latest answer held in `replay` arrived, in milliseconds after the epoch: an
    /// answer to a check started later that does not cover `replay` means the replica went
    /// back (rebuilt, or restored from an older copy), even if its identity looks the same.
    answered_ms: AtomicU64,
}

impl Replica {
    fn new(database: &str, spec: &ReplicaSpec, replica_url: &dyn Fn(&str) -> String) -> Self {
        Replica {
            name: spec.name.clone(),
            url: SecretUrl::new(replica_url(spec.url.expose())),
            weight: AtomicU32::new(spec.weight),
            retired: AtomicBool::new(false),
            statements: AtomicU64::new(0),
            meters: crate::metrics::ReplicaMeters::new(database, &spec.name),
            down_until_ms: AtomicU64::new(0),
            replay: PositionCell::default(),
            check: SharedCheck::default(),
            lag_ms: AtomicU64::new(0),
            promoted: AtomicBool::new(false),
            probed_ms: AtomicU64::new(0),
            identity: AtomicU64::new(0),
            hung: Default::default(),
            generation: AtomicU64::new(0),
            renewed_ms: AtomicU64::new(0),
            answered_ms: AtomicU64::new(0),
            timeline: AtomicU32::new(0),
        }
    }

    /// Its weight (strategy `weighted`).
    pub(crate) fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Was it removed from the settings?
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Statements it ran.
    pub(crate) fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Counts a statement it ran.
    pub(crate) fn count_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.meters.statement();
    }
}

/// When a replica may take reads at all, whatever the read must see.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Behind by more than this in time ...
    pub(crate) max_lag: Duration,
    /// ... and more than this in WAL bytes: no reads.
    pub(crate) max_lag_bytes: u64,
    /// A replica whose last successful probe is older than this takes no reads.
    pub(crate) stale_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_lag: Duration::MAX,
            max_lag_bytes: u64::MAX,
            stale_after: Duration::MAX,
        }
    }
}

/// Whether a replica may take reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usability {
    /// Healthy and within the lag limits.
    Usable,
    /// Skipped after a failure, or not answering its monitor.
    Down,
    /// Behind by more than both lag limits.
    Lagging,
}

/// The replica list every routed read looks at, which a reload replaces: reading it is one
/// atomic load. Replaced lists are kept until the set drops (a reload leaves a few pointers
/// behind), so that a list a reader holds is never freed under it: no reference count or
/// epoch on the read path.
#[derive(Debug)]
struct Slots {
    current: AtomicPtr<Vec<Arc<Replica>>>,
    /// Every list ever current, the current one included; only ever grows. Boxed: `current`
    /// points at a list itself, which must not move when this grows.
    #[allow(clippy::vec_box)]
    kept: Mutex<Vec<Box<Vec<Arc<Replica>>>>>,
}

impl Slots {
    fn new(list: Vec<Arc<Replica>>) -> Slots {
        let mut boxed = Box::new(list);
        let current = AtomicPtr::new(&mut *boxed);
        Slots {
            current,
            kept: Mutex::new(vec![boxed]),
        }
    }

    #[inline]
    #[allow(unsafe_code)]
    fn load(&self) -> &[Arc<Replica>] {
        // SAFETY: `current` points into a box in `kept`, stored there before the pointer was
        // published (Release/Acquire). Boxes are never removed from `kept` nor mutated, and
        // the heap allocation does not move when `kept` grows; they are freed only when
        // `self` drops, which the returned borrow of `self` outlives not.
        unsafe { &*self.current.load(Ordering::Acquire) }
    }

    fn store(&self, list: Vec<Arc<Replica>>) {
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut boxed = Box::new(list);
        let pointer: *mut Vec<Arc<Replica>> = &mut *boxed;
        kept.push(boxed);
        self.current.store(pointer, Ordering::Release);
    }
}

/// A read strategy as a number, and back.
fn strategy_code(strategy: ReadStrategy) -> u8 {
    match strategy {
        ReadStrategy::PrimaryOnly => 0,
        ReadStrategy::RoundRobin => 1,
        ReadStrategy::Random => 2,
        ReadStrategy::Weighted => 3,
    }
}

fn strategy_of(code: u8) -> ReadStrategy {
    match code {
        0 => ReadStrategy::PrimaryOnly,
        2 => ReadStrategy::Random,
        3 => ReadStrategy::Weighted,
        _ => ReadStrategy::RoundRobin,
    }
}

/// The replicas of one primary, with the read strategy and health state shared by every
/// connection of the primary's pool.
#[derive(Debug)]
pub(crate) struct ReplicaSet {
    /// Every replica the process was configured with, in the order first configured:
    /// reloads only append (a replica removed is retired, a changed URL is a new replica),
    /// so an index names one replica for as long as the process runs.
    replicas: Slots,
    /// The read strategy and the lag limits (in milliseconds and bytes), which reloads
    /// replace; a read that sees one new and one old limit during a reload is harmless.
    strategy: AtomicU8,
    max_lag_ms: AtomicU64,
    max_lag_bytes: AtomicU64,
    stale_after_ms: AtomicU64,
    database: String,
    next: AtomicUsize,
    retry_after: Duration,
    epoch: Instant,
    /// The primary's timeline as last seen (PostgreSQL; 0: not known).
    primary_timeline: AtomicU32,
    /// The primary's timeline changed while the process ran (a failover): a replica whose
    /// timeline is not known takes no reads until a probe finds it on the primary's.
    timeline_changed: AtomicBool,
}

impl ReplicaSet {
    pub(crate) fn new(
        database: &str,
        specs: &[ReplicaSpec],
        strategy: ReadStrategy,
        retry_after: Duration,
        replica_url: &dyn Fn(&str) -> String,
    ) -> Self {
        let replicas = specs
            .iter()
            .map(|s| Arc::new(Replica::new(database, s, replica_url)))
            .collect::<Vec<_>>();
        // Round-robin starts at a random replica, so that every process does not hit the
        // first one at once (django-multidb-router shuffles for the same reason).
        let start = if replicas.is_empty() {
            0
        } else {
            rand::thread_rng().gen_range(0..replicas.len())
        };
        ReplicaSet {
            replicas: Slots::new(replicas),
            strategy: AtomicU8::new(strategy_code(strategy)),
            max_lag_ms: AtomicU64::new(u64::MAX),
            max_lag_bytes: AtomicU64::new(u64::MAX),
            stale_after_ms: AtomicU64::new(u64::MAX),
            database: database.to_owned(),
            next: AtomicUsize::new(start),
            retry_after,
            epoch: Instant::now(),
            primary_timeline: AtomicU32::new(0),
            timeline_changed: AtomicBool::new(false),
        }
    }

    /// Sets the lag limits (from `[consistency]`).
    pub(crate) fn with_limits(self, limits: Limits) -> Self {
        self.set_policy(self.strategy(), limits);
        self
    }

    /// Replaces the read strategy and lag limits (a reload).
    pub(crate) fn set_policy(&self, strategy: ReadStrategy, limits: Limits) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.max_lag_ms.store(ms(limits.max_lag), Ordering::Relaxed);
        self.max_lag_bytes
            .store(limits.max_lag_bytes, Ordering::Relaxed);
        self.stale_after_ms
            .store(ms(limits.stale_after), Ordering::Relaxed);
        self.strategy
            .store(strategy_code(strategy), Ordering::Relaxed);
    }

    /// The read strategy.
    pub(crate) fn strategy(&self) -> ReadStrategy {
        strategy_of(self.strategy.load(Ordering::Relaxed))
    }

    /// Makes the replicas those of `specs` (a reload): a replica of the same name and URL
    /// keeps its slot, positions and health, with the new weight; one whose URL changed, or
    /// that is new, gets a new slot; one no longer there is retired. Returns the indices of
    /// the new slots (their servers are to be probed).
    pub(crate) fn reconcile(
        &self,
        specs: &[ReplicaSpec],
        replica_url: &dyn Fn(&str) -> String,
    ) -> Vec<usize> {
        let current = self.replicas.load();
        let mut next: Vec<Arc<Replica>> = current.to_vec();
        let mut added = Vec::new();
        for r in current.iter().filter(|r| !r.is_retired()) {
            let kept = specs
                .iter()
                .any(|s| s.name == r.name && replica_url(s.url.expose()) == r.url.expose());
            if !kept {
                r.retired.store(true, Ordering::Relaxed);
                r.generation.fetch_add(1, Ordering::Relaxed);
                r.meters.up(false);
            }
        }
        for s in specs {
            let url = replica_url(s.url.expose());
            match current
                .iter()
                .find(|r| !r.is_retired() && r.name == s.name && r.url.expose() == url)
            {
                Some(r) => r.weight.store(s.weight, Ordering::Relaxed),
                None => {
                    added.push(next.len());
                    next.push(Arc::new(Replica::new(&self.database, s, replica_url)));
                }
            }
        }
        self.replicas.store(next);
        added
    }

    /// Runs `f` on replica `index` (without taking a reference count: the hot paths).
    #[inline]
    pub(crate) fn with<R>(&self, index: usize, f: impl FnOnce(&Replica) -> R) -> Option<R> {
        self.replicas.load().get(index).map(|r| f(r))
    }

    /// A monitor probe of replica `index`, started at `asked_ms` ([`clock_ms`](Self::clock_ms)),
    /// succeeded.
    pub(crate) fn probed(
        &self,
        index: usize,
        asked_ms: u64,
        replay: &Position,
        lag: Duration,
        identity: u64,
    ) {
        if let Some(r) = self.replicas.load().get(index) {
            self.learn(r, asked_ms, replay, identity);
            r.lag_ms.store(lag.as_millis() as u64, Ordering::Relaxed);
            r.probed_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A probe found replica `index` replaying (`false`) or not (`true`: promoted). Returns
    /// whether that changed. A promoted replica takes no reads, and the connections opened to
    /// it are reopened when it replays again.
    pub(crate) fn set_promoted(&self, index: usize, promoted: bool) -> bool {
        let replicas = self.replicas.load();
        let Some(r) = replicas.get(index) else {
            return false;
        };
        let was = r.promoted.swap(promoted, Ordering::Relaxed);
        if was != promoted {
            r.generation.fetch_add(1, Ordering::Relaxed);
        }
        was != promoted
    }

    /// The primary was found writing timeline `timeline`. Returns the one it wrote before
    /// when that differs (a failover, or a primary restored or rebuilt): every replica's
    /// positions are then forgotten and a replica takes reads again only once a probe finds
    /// it on the new timeline, so that none serves a history the primary does not have.
    pub(crate) fn saw_primary_timeline(&self, timeline: u32) -> Option<u32> {
        let before = self.primary_timeline.swap(timeline, Ordering::Relaxed);
        if before == 0 || before == timeline {
            return None;
        }
        self.timeline_changed.store(true, Ordering::Relaxed);
        let now = self.now_ms();
        for r in self.replicas.load().iter() {
            r.timeline.store(0, Ordering::Relaxed);
            r.replay.clear();
            r.generation.fetch_add(1, Ordering::Relaxed);
            r.renewed_ms.store(now, Ordering::Relaxed);
        }
        Some(before)
    }

    /// A probe found replica `index` replaying `timeline` (`None`: it could not tell).
    /// Returns whether it is now found replaying another timeline than the primary's, and
    /// was not found on that one before (to report it once).
    pub(crate) fn set_timeline(&self, index: usize, timeline: Option<u32>) -> bool {
        let replicas = self.replicas.load();
        let Some(r) = replicas.get(index) else {
            return false;
        };
        let was = self.on_other_timeline(r);
        let timeline = timeline.unwrap_or(0);
        let before = r.timeline.swap(timeline, Ordering::Relaxed);
        let is = self.on_other_timeline(r);
        if is != was {
            r.generation.fetch_add(1, Ordering::Relaxed);
        }
        is && timeline != 0 && timeline != before
    }

    /// Is replica `index` known to replay another history than the primary's, or (after a
    /// failover) not known to replay the primary's?
    pub(crate) fn is_on_other_timeline(&self, index: usize) -> bool {
        self.replicas
            .load()
            .get(index)
            .is_some_and(|r| self.on_other_timeline(r))
    }

    fn on_other_timeline(&self, r: &Replica) -> bool {
        let primary = self.primary_timeline.load(Ordering::Relaxed);
        if primary == 0 {
            return false;
        }
        match r.timeline.load(Ordering::Relaxed) {
            0 => self.timeline_changed.load(Ordering::Relaxed),
            replica => replica != primary,
        }
    }

    /// Was replica `index` last found promoted?
    pub(crate) fn is_promoted(&self, index: usize) -> bool {
        self.replicas
            .load()
            .get(index)
            .is_some_and(|r| r.promoted.load(Ordering::Relaxed))
    }

    /// A position covering every replay position seen on a replica.
    pub(crate) fn max_replay(&self) -> Option<Position> {
        let mut max: Option<Position> = None;
        let replicas = self.replicas.load();
        let positions = replicas
            .iter()
            .filter(|r| !self.on_other_timeline(r))
            .filter_map(|r| r.replay.get());
        for p in positions {
            match &mut max {
                Some(m) => m.raise(&p),
                None => max = Some(p),
            }
        }
        max
    }

    /// Replica `index`'s generation (see [`Replica`]).
    pub(crate) fn generation(&self, index: usize) -> u64 {
        self.replicas
            .load()
            .get(index)
            .map_or(0, |r| r.generation.load(Ordering::Relaxed))
    }

    /// The flag the monitor raises while replica `index` does not answer its probe.
    pub(crate) fn hung_flag(&self, index: usize) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.replicas
            .load()
            .get(index)
            .map(|r| r.hung.clone())
            .unwrap_or_default()
    }

    /// Replica `index` did not answer its probe in time (`true`), or answered again.
    pub(crate) fn set_hung(&self, index: usize, hung: bool) {
        if let Some(r) = self.replicas.load().get(index) {
            let was = r.hung.swap(hung, Ordering::Relaxed);
            if hung && !was {
                self.mark_down(index);
                tracing::warn!(
                    target: "diesel_sharding::monitor",
                    replica = %r.name,
                    "replica does not answer: its calls in progress are cut and retried on the primary"
                );
            }
        }
    }

    /// The replay position last seen on replica `index`, if any.
    pub(crate) fn replay(&self, index: usize) -> Option<Position> {
        self.replicas.load().get(index).and_then(|r| r.replay.get())
    }

    /// Had replica `index` replayed `need`, when last seen?
    pub(crate) fn has_replayed(&self, index: usize, need: &Position) -> bool {
        self.replicas
            .load()
            .get(index)
            .is_some_and(|r| r.replay.covers(need))
    }

    /// The caller's turn to read replica `index`'s replay position for a read the cached one
    /// cannot serve: `None` while another connection does, or one started within `gap_ms`.
    pub(crate) fn begin_check(&self, index: usize, gap_ms: u64) -> Option<CheckTurn<'_>> {
        let r = self.replicas.load().get(index)?.clone();
        r.check
            .take(self.now_ms(), gap_ms)
            .then(|| CheckTurn(Turn::Replica(r)))
    }

    /// A live check of replica `index`, started at `asked_ms`, saw it at `replay`.
    pub(crate) fn saw_replay(&self, index: usize, asked_ms: u64, replay: &Position, identity: u64) {
        if let Some(r) = self.replicas.load().get(index) {
            self.learn(r, asked_ms, replay, identity);
        }
    }

    /// A wait on replica `index` saw it apply `replay`.
    pub(crate) fn reached(&self, index: usize, replay: &Position) {
        if let Some(r) = self.replicas.load().get(index) {
            r.answered_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
            r.replay.raise(replay);
        }
    }

    /// Positions only go up, except when another server incarnation answers (a restart
    /// from an older restart point, a rebuild, a replacement), or when a check started after
    /// the answer held arrived finds the replica behind it (rebuilt or restored from an older
    /// copy under the same identity: a MariaDB server restarted within the second it
    /// started): then what it has replayed is learned anew. Checks that overlap in time may
    /// answer out of order; only one that started after the held answer arrived counts.
    fn learn(&self, r: &Replica, asked_ms: u64, replay: &Position, identity: u64) {
        let before = r.identity.swap(identity, Ordering::Relaxed);
        let answered = r.answered_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
        let went_back =
            asked_ms > answered && r.replay.get().is_some_and(|held| !replay.covers(&held));
        if (identity != 0 && before != 0 && before != identity) || went_back {
            r.generation.fetch_add(1, Ordering::Relaxed);
            r.replay.set(replay);
            r.renewed_ms.store(self.now_ms(), Ordering::Relaxed);
            tracing::info!(
                target: "diesel_sharding::monitor",
                replica = %r.name,
                "replica restarted or replaced: its replay position is learned anew"
            );
        } else {
            r.replay.raise(replay);
        }
    }

    /// The clock positions and probes are stamped with: milliseconds after the set's epoch.
    pub(crate) fn clock_ms(&self) -> u64 {
        self.now_ms()
    }

    /// A position of replica `index` at or past what it had replayed at `at_ms`, if the
    /// monitor has probed it since (and it is the same incarnation).
    pub(crate) fn replay_since(&self, index: usize, at_ms: u64) -> Option<Position> {
        let replicas = self.replicas.load();
        let r = replicas.get(index)?;
        let probed = r.probed_ms.load(Ordering::Relaxed);
        let renewed = r.renewed_ms.load(Ordering::Relaxed);
        (probed > at_ms && renewed <= at_ms)
            .then(|| r.replay.get())
            .flatten()
    }

    /// Has another incarnation of replica `index` answered since `at_ms`?
    pub(crate) fn renewed_since(&self, index: usize, at_ms: u64) -> bool {
        self.replicas
            .load()
            .get(index)
            .is_some_and(|r| r.renewed_ms.load(Ordering::Relaxed) > at_ms)
    }

    /// May replica `index` take reads? `primary_position` is the primary's last known position
    /// (if any), for the byte lag where the backend counts one.
    pub(crate) fn usability(&self, index: usize, primary_position: Option<&Position>) -> Usability {
        let replicas = self.replicas.load();
        let Some(r) = replicas.get(index) else {
            return Usability::Down;
        };
        if !self.is_healthy(index)
            || r.is_retired()
            || r.hung.load(Ordering::Relaxed)
            || r.promoted.load(Ordering::Relaxed)
            || self.on_other_timeline(r)
        {
            // skipped after a failure, or not answering its probe (until it answers again)
            return Usability::Down;
        }
        let probed = r.probed_ms.load(Ordering::Relaxed);
        if probed == 0 {
            return Usability::Usable; // not probed yet: nothing known against it
        }
        let age = Duration::from_millis(self.now_ms().saturating_sub(probed));
        if age.as_millis() > u128::from(self.stale_after_ms.load(Ordering::Relaxed)) {
            return Usability::Down;
        }
        let lag = Duration::from_millis(r.lag_ms.load(Ordering::Relaxed));
        let bytes = primary_position.map_or(Some(0), |p| r.replay.bytes_behind(p));
        // Time OR bytes keeps it in: a quiet primary makes a caught-up replica look late in
        // time, and a burst of writes makes a current one look late in bytes.
        let max_lag = Duration::from_millis(self.max_lag_ms.load(Ordering::Relaxed));
        let max_bytes = self.max_lag_bytes.load(Ordering::Relaxed);
        if lag <= max_lag || bytes.is_some_and(|b| b <= max_bytes) {
            Usability::Usable
        } else {
            Usability::Lagging
        }
    }

    /// Does this primary read from replicas at all?
    pub(crate) fn reads_from_replicas(&self) -> bool {
        self.strategy() != ReadStrategy::PrimaryOnly
            && self.replicas.load().iter().any(|r| !r.is_retired())
    }

    /// Slots, retired replicas included: indices run below it.
    pub(crate) fn len(&self) -> usize {
        self.replicas.load().len()
    }

    /// Replica `index` (a reference count taken: for paths that are not hot).
    pub(crate) fn get(&self, index: usize) -> Option<Arc<Replica>> {
        self.replicas.load().get(index).cloned()
    }

    /// Every replica slot, retired ones included (index = position).
    pub(crate) fn all(&self) -> &[Arc<Replica>] {
        self.replicas.load()
    }

    /// Reports replica `index` as taking reads or not (the `metrics` gauge).
    pub(crate) fn meter_up(&self, index: usize, up: bool) {
        self.with(index, |r| r.meters.up(up && !r.is_retired()));
    }

    /// Reports replica `index`'s lag at a probe (the `metrics` gauges).
    pub(crate) fn meter_lag(&self, index: usize, lag: Duration, bytes: Option<u64>) {
        self.with(index, |r| r.meters.lag(lag, bytes));
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 keeps meaning "healthy"
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Is the replica not being skipped after a failure?
    pub(crate) fn is_healthy(&self, index: usize) -> bool {
        match self.replicas.load().get(index) {
            None => false,
            Some(r) if r.is_retired() => false,
            Some(r) => {
                let until = r.down_until_ms.load(Ordering::Relaxed);
                until == 0 || self.now_ms() >= until
            }
        }
    }

    /// Skips the replica for `retry_after`, after a failed connect or a dead connection.
    pub(crate) fn mark_down(&self, index: usize) {
        if let Some(r) = self.replicas.load().get(index) {
            r.generation.fetch_add(1, Ordering::Relaxed);
            let until = self.now_ms() + self.retry_after.as_millis() as u64;
            r.down_until_ms.store(until, Ordering::Relaxed);
        }
    }

    /// Marks the replica healthy again (a connection to it opened).
    pub(crate) fn mark_up(&self, index: usize) {
        if let Some(r) = self.replicas.load().get(index) {
            if r.down_until_ms.load(Ordering::Relaxed) != 0 {
                r.down_until_ms.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Picks a healthy replica by the read strategy; `None` when none is healthy.
    #[cfg(test)]
    pub(crate) fn pick(&self) -> Option<usize> {
        self.pick_among(|i| self.is_healthy(i), &mut rand::thread_rng())
    }

    /// The strategy itself, over any notion of "usable".
    pub(crate) fn pick_among(
        &self,
        usable: impl Fn(usize) -> bool,
        rng: &mut impl Rng,
    ) -> Option<usize> {
        let replicas = self.replicas.load();
        let n = replicas.len();
        if n == 0 {
            return None;
        }
        match self.strategy() {
            ReadStrategy::PrimaryOnly => None,
            ReadStrategy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| usable(i))
            }
            ReadStrategy::Random => {
                let candidates: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
                if candidates.is_empty() {
                    None
                } else {
                    Some(candidates[rng.gen_range(0..candidates.len())])
                }
            }
            ReadStrategy::Weighted => {
                let total: u64 = (0..n)
                    .filter(|&i| usable(i))
                    .map(|i| u64::from(replicas[i].weight()))
                    .sum();
                if total == 0 {
                    return None;
                }
                let mut ticket = rng.gen_range(0..total);
                for i in (0..n).filter(|&i| usable(i)) {
                    let w = u64::from(replicas[i].weight());
                    if ticket < w {
                        return Some(i);
                    }
                    ticket -= w;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn set(strategy: ReadStrategy, weights: &[u32]) -> ReplicaSet {
        let specs: Vec<ReplicaSpec> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| ReplicaSpec {
                name: format!("r{i}"),
                url: SecretUrl::new(format!("postgres://h/r{i}")),
                weight: *w,
            })
            .collect();
        ReplicaSet::new(
            "db",
            &specs,
            strategy,
            Duration::from_millis(50),
            &|u: &str| u.to_owned(),
        )
    }

    fn counts(s: &ReplicaSet, picks: usize, usable: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut c = vec![0; s.len()];
        for _ in 0..picks {
            if let Some(i) = s.pick_among(&usable, &mut rng) {
                c[i] += 1;
            }
        }
        c
    }

    fn lsn(n: u64) -> Position {
        Position::Lsn(n)
    }

    #[test]
    fn a_check_started_after_the_held_answer_that_finds_the_replica_behind_learns_it_anew() {
        let s = set(ReadStrategy::RoundRobin, &[1]);
        let asked = s.clock_ms();
        s.saw_replay(0, asked, &lsn(100), 7);
        assert!(s.has_replayed(0, &lsn(100)));
        let generation = s.generation(0);
        std::thread::sleep(Duration::from_millis(3));
        // same identity (a server restarted within the second it started), older position
        let asked = s.clock_ms();
        s.saw_replay(0, asked, &lsn(40), 7);
        assert!(
            !s.has_replayed(0, &lsn(100)),
            "kept a position the replica no longer has"
        );
        assert!(s.has_replayed(0, &lsn(40)));
        assert_eq!(
            s.generation(0),
            generation + 1,
            "connections to it are not reopened"
        );
        assert!(s.renewed_since(0, asked - 1));
    }

    #[test]
    fn overlapping_checks_that_answer_out_of_order_never_lower_the_position() {
        let s = set(ReadStrategy::RoundRobin, &[1]);
        // two checks started together; the later answer is the older position
        let asked = s.clock_ms();
        std::thread::sleep(Duration::from_millis(2));
        s.saw_replay(0, asked, &lsn(100), 7);
        s.saw_replay(0, asked, &lsn(90), 7);
        s.probed(0, asked, &lsn(80), Duration::ZERO, 7);
        assert!(s.has_replayed(0, &lsn(100)));
        assert_eq!(s.generation(0), 0);
        // a position that only goes up never renews
        std::thread::sleep(Duration::from_millis(2));
        s.saw_replay(0, s.clock_ms(), &lsn(150), 7);
        assert!(s.has_replayed(0, &lsn(150)));
        assert_eq!(s.generation(0), 0);
    }

    #[test]
    fn after_the_primary_changes_timeline_only_replicas_found_on_the_new_one_take_reads() {
        let s = set(ReadStrategy::RoundRobin, &[1, 1, 1]);
        let usable = |i| s.usability(i, None) == Usability::Usable;
        // before any failover: an unknown timeline is trusted, another one is not
        assert_eq!(s.saw_primary_timeline(1), None);
        s.set_timeline(0, Some(1));
        s.set_timeline(2, Some(7));
        assert!(usable(0) && usable(1) && !usable(2));
        s.saw_replay(0, s.clock_ms(), &lsn(500), 7);
        let generation = s.generation(0);

        // a failover: positions forgotten, connections reopened, no replica trusted
        assert_eq!(s.saw_primary_timeline(2), Some(1));
        assert_eq!(s.replay(0), None, "kept a position of the old timeline");
        assert_ne!(s.generation(0), generation);
        assert!(!usable(0) && !usable(1) && !usable(2));
        assert_eq!(s.max_replay(), None);
        // a replica left on the old timeline stays out; one on the new one comes back
        assert!(s.set_timeline(0, Some(1)), "the divergence is not reported");
        assert!(!s.set_timeline(0, Some(1)), "reported twice");
        assert!(!s.set_timeline(1, Some(2)));
        assert!(!usable(0) && usable(1));
        assert!(s.is_on_other_timeline(0) && !s.is_on_other_timeline(1));
        assert_eq!(s.saw_primary_timeline(2), None, "the same timeline again");
    }

    #[test]
    fn a_reload_keeps_known_replicas_retires_removed_ones_and_appends_new_ones() {
        let s = set(ReadStrategy::Weighted, &[1, 1]);
        s.saw_replay(0, s.clock_ms(), &lsn(500), 7);
        let spec = |name: &str, url: &str, weight: u32| ReplicaSpec {
            name: name.to_owned(),
            url: SecretUrl::new(url),
            weight,
        };
        let same = |u: &str| u.to_owned();
        // r0 kept with a new weight, r1's URL changed, r2 new
        let added = s.reconcile(
            &[
                spec("r0", "postgres://h/r0", 5),
                spec("r1", "postgres://h/moved", 1),
                spec("r2", "postgres://h/r2", 1),
            ],
            &same,
        );
        assert_eq!(added, [2, 3]);
        assert_eq!(s.len(), 4);
        assert!(
            s.has_replayed(0, &lsn(500)),
            "the kept replica forgot its position"
        );
        assert_eq!(s.get(0).unwrap().weight(), 5);
        assert!(s.get(1).unwrap().is_retired());
        assert_eq!(s.usability(1, None), Usability::Down);
        assert!(!s.is_healthy(1));
        let usable = |i| s.usability(i, None) == Usability::Usable;
        assert_eq!(
            counts(&s, 100, usable)[1],
            0,
            "a retired replica was picked"
        );
        // everything removed: no replica reads at all
        assert!(s.reconcile(&[], &same).is_empty());
        assert!(!s.reads_from_replicas());
    }

    #[test]
    fn readers_see_whole_lists_while_reloads_replace_them() {
        // slot i is named r{i} for good: reloads replace the list under two readers, who
        // must find every index they see naming the same replica, also in the lists
        // published after it; each reload waits until both readers have read its list
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let s = Arc::new(set(ReadStrategy::RoundRobin, &[1]));
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let readers: Vec<_> = (0..2)
            .map(|me| {
                let (s, stop, seen) = (s.clone(), stop.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let list = s.all();
                        for (i, r) in list.iter().enumerate() {
                            assert_eq!(r.name, format!("r{i}"));
                            assert_eq!(s.get(i).unwrap().name, r.name);
                        }
                        seen[me].fetch_max(list.len(), Ordering::Relaxed);
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for k in 1..200 {
            let spec = ReplicaSpec {
                name: format!("r{k}"),
                url: SecretUrl::new(format!("postgres://h/r{k}")),
                weight: 1,
            };
            s.reconcile(&[spec], &|u: &str| u.to_owned());
            while seen.iter().any(|n| n.load(Ordering::Relaxed) < k + 1) {
                assert!(std::time::Instant::now() < deadline, "the readers stopped");
                std::thread::yield_now();
            }
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() >= 199, "each reader read every list");
        }
        assert_eq!(s.len(), 200, "one slot per replica ever configured");
        assert_eq!(
            (0..200)
                .filter(|&i| !s.get(i).unwrap().is_retired())
                .count(),
            1
        );
    }

    #[test]
    fn round_robin_visits_replicas_in_turn() {
        let s = set(ReadStrategy::RoundRobin, &[1, 1, 1]);
        let mut rng = StdRng::seed_from_u64(1);
        let picks: Vec<usize> = (0..6)
            .map(|_| s.pick_among(|_| true, &mut rng).unwrap())
            .collect();
        for w in picks.windows(2) {
            assert_eq!(w[1], (w[0] + 1) % 3, "{picks:?}");
        }
    }

    #[test]
    fn round_robin_starts_at_a_random_replica() {
        let starts: std::collections::HashSet<usize> = (0..60)
            .map(|_| set(ReadStrategy::RoundRobin, &[1, 1, 1]).pick().unwrap())
            .collect();
        assert!(starts.len() > 1, "always started at {starts:?}");
    }

    #[test]
    fn round_robin_skips_unusable_replicas() {
        let s = set(ReadStrategy::RoundRobin, &[1, 1, 1]);
        let c = counts(&s, 30, |i| i != 1);
        assert_eq!(c[1], 0, "{c:?}");
        assert!(c[0] >= 5 && c[2] >= 5, "{c:?}");
    }

    #[test]
    fn random_spreads_over_usable_replicas() {
        let s = set(ReadStrategy::Random, &[1, 1, 1, 1]);
        let c = counts(&s, 4000, |i| i != 0);
        assert_eq!(c[0], 0);
        for &n in &c[1..] {
            assert!((1100..1570).contains(&n), "{c:?}");
        }
    }

    #[test]
    fn weighted_follows_the_weights() {
        let s = set(ReadStrategy::Weighted, &[1, 3]);
        let c = counts(&s, 4000, |_| true);
        assert!((800..1200).contains(&c[0]), "{c:?}");
        assert!((2800..3200).contains(&c[1]), "{c:?}");
    }

    #[test]
    fn primary_only_never_picks_a_replica() {
        let s = set(ReadStrategy::PrimaryOnly, &[1, 1]);
        assert!(!s.reads_from_replicas());
        assert_eq!(counts(&s, 10, |_| true), vec![0, 0]);
    }

    #[test]
    fn no_usable_replica_means_no_pick() {
        for strategy in [
            ReadStrategy::RoundRobin,
            ReadStrategy::Random,
            ReadStrategy::Weighted,
        ] {
            let s = set(strategy, &[1, 1]);
            assert_eq!(counts(&s, 5, |_| false), vec![0, 0], "{strategy}");
        }
    }

    #[test]
    fn a_replica_marked_down_is_skipped_then_retried_after_the_backoff() {
        let s = set(ReadStrategy::RoundRobin, &[1, 1]);
        s.mark_down(0);
        assert!(!s.is_healthy(0));
        assert!(s.is_healthy(1));
        for _ in 0..4 {
            assert_eq!(s.pick(), Some(1));
        }
        std::thread::sleep(Duration::from_millis(70));
        assert!(s.is_healthy(0), "tried again after the backoff");
        s.mark_down(1);
        s.mark_up(1);
        assert!(s.is_healthy(1));
    }
}
