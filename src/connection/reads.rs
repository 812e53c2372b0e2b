//! Which replica may serve a read: healthy, within the lag limits, and caught up to what the
//! reader must see.
//!
//! The choice is written once, as `async fn`s over [`ReadIo`] (the connection's I/O: open a
//! replica, ask it how far it has replayed, wait on it, ask the primary its position). The
//! sync connection implements `ReadIo` with blocking calls, so its futures are ready at their
//! first poll ([`ready`]); an async connection implements it with real futures, and runs the
//! same choice.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{open_replica, RoutedConnection};
use crate::backend::{is_connection_error, RoutedBackend};
use crate::consistency::{scope, Consistency, Position};
use crate::primary::{join, PrimaryState};
use crate::routing::{
    decide, Decision, Facts, RouteReason, StatementKind, TableId, Usability, REFRESH_GAP_MS,
    WAITING_REFRESH_GAP_MS,
};

/// What choosing a replica asks of a connection: its I/O (sync or async) and its own state.
pub(crate) trait ReadIo: Send {
    /// The primary's shared state.
    fn db(&self) -> &Arc<PrimaryState>;
    /// The replica this connection reads from while it stays healthy.
    fn current_replica(&mut self) -> &mut Option<usize>;
    /// How many replica connection slots it has.
    fn replica_slots(&self) -> usize;
    /// Is a transaction open (hand-written, managed, or read-only on a replica)?
    fn in_transaction(&mut self) -> bool;
    /// Does the session hold state that keeps its statements on the primary?
    fn session_on_primary(&self) -> bool;
    /// Opens replica `i` if needed (and learns its position); on failure it is skipped for
    /// the backoff.
    fn open_replica(&mut self, i: usize) -> impl Future<Output = bool> + Send;
    /// Asks replica `i` how far it has replayed, and remembers the answer.
    fn replay_of(&mut self, i: usize) -> impl Future<Output = Option<Position>> + Send;
    /// Waits up to `left` on replica `i`'s server for it to apply `need`.
    fn wait_on(
        &mut self,
        i: usize,
        need: &Position,
        left: Duration,
    ) -> impl Future<Output = ServerWait> + Send;
    /// The primary's position: its write position, or with `flush` its flushed one.
    fn primary_position(
        &mut self,
        flush: bool,
    ) -> impl Future<Output = diesel::QueryResult<Option<Position>>> + Send;
    /// Pauses before polling the replicas' positions again.
    fn pause(&mut self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// How a wait on a replica's server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerWait {
    /// The backend cannot wait on the server: poll the positions instead.
    Unsupported,
    /// The replica applied the position.
    Reached,
    /// Not within the time, or the call failed (the replica is marked accordingly).
    NotReached,
}

/// Runs a future whose I/O is blocking (the sync connection's): ready at its first poll.
#[inline(always)]
pub(crate) fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        // a blocking implementation never pends; if one ever did, try again
        std::thread::yield_now();
    }
}

/// Why no replica was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoReplica {
    /// Down, unreachable, or not answering its monitor.
    Unreachable,
    /// Every reachable replica is past both lag limits.
    Lagging,
    /// Reachable replicas exist, but none has replayed the required position.
    Behind,
}

impl NoReplica {
    pub(super) fn reason(self) -> RouteReason {
        match self {
            NoReplica::Unreachable => RouteReason::Fallback,
            NoReplica::Lagging => RouteReason::Lagging,
            NoReplica::Behind => RouteReason::Behind,
        }
    }
}

/// The replicas a read has tried: a bit set, on the stack for up to 64 replicas (every routed
/// read builds one).
enum Tried {
    Small(u64),
    Large(Vec<bool>),
}

impl Tried {
    fn new(n: usize) -> Self {
        if n <= 64 {
            Tried::Small(0)
        } else {
            Tried::Large(vec![false; n])
        }
    }

    fn has(&self, i: usize) -> bool {
        match self {
            Tried::Small(bits) => i < 64 && bits & (1 << i) != 0,
            Tried::Large(v) => v.get(i).copied().unwrap_or(false),
        }
    }

    fn add(&mut self, i: usize) {
        match self {
            Tried::Small(bits) if i < 64 => *bits |= 1 << i,
            Tried::Small(_) => {}
            Tried::Large(v) => {
                if let Some(b) = v.get_mut(i) {
                    *b = true;
                }
            }
        }
    }
}

/// The one route decision for a statement that may read: `Ok(replica)`, or the reason it
/// runs on the primary. `load`, `replica()` and `read_only_transaction` all go through
/// here; `kind` is what the statement is, `reads` the tables it reads (`None`: all).
pub(crate) async fn route_read(
    io: &mut impl ReadIo,
    kind: StatementKind,
    reads: Option<&[TableId]>,
) -> Result<usize, RouteReason> {
    let in_transaction = io.in_transaction();
    // (the shared state is borrowed briefly: no reference count per read)
    let (mode, id, may_wait) = {
        let db = io.db();
        let waits = !db.consistency.replica_wait.is_zero();
        (db.mode(scope::mode()), db.id, waits)
    };
    // committed writes whose positions are not known yet: the monitor's last probe of
    // the primary covers those that returned before it started; until one does, the
    // replicas almost surely lack them, and the read goes to the primary (no query)
    let mut pending = kind.is_read()
        && !in_transaction
        && mode.uses_positions()
        && scope::pending_for(id, reads)
        && match io.db().last_primary_probe() {
            Some((started, position)) => {
                scope::resolve_pending(id, &position, started);
                scope::pending_for(id, reads)
            }
            None => true,
        };
    if pending && (scope::pending_not_yet(id) || may_wait) {
        // a write the probes cannot cover (it happened after it was marked), or a read
        // that may wait for a replica: worth learning the position now (one query)
        learn_pending_positions(io).await;
        pending = scope::pending_for(id, reads);
    } else if pending && refresh_primary_position(io).await {
        pending = scope::pending_for(id, reads);
    }
    let (has_replicas, has_positions) = {
        let db = io.db();
        (db.replicas.reads_from_replicas(), db.has_positions)
    };
    match decide(Facts {
        in_transaction,
        session_on_primary: io.session_on_primary(),
        kind,
        has_replicas,
        pin: crate::pin::status(id),
        mode,
        behind: pending,
    }) {
        Decision::Primary(reason) => Err(reason),
        Decision::Replica if !has_positions => {
            // no positions (SQLite): any usable replica; the pin decided the rest
            find_replica_for(io, None, false, REFRESH_GAP_MS)
                .await
                .map_err(NoReplica::reason)
        }
        Decision::Replica => choose_for_read(io, mode, reads).await,
    }
}

/// Reads the primary's position now: it covers every pending write of this scope, table
/// by table. If that fails, they stay pending.
pub(crate) async fn learn_pending_positions(io: &mut impl ReadIo) {
    if let Ok(Some(pos)) = io.primary_position(false).await {
        let db = io.db();
        scope::resolve_pending(db.id, &pos, u64::MAX);
        db.saw_primary_at(&pos);
    }
}

/// The replica for a read in `mode` of a database with positions, waiting up to
/// `replica_wait` for one to catch up. `reads` are the tables the read touches (`None`: the
/// whole database).
async fn choose_for_read(
    io: &mut impl ReadIo,
    mode: Consistency,
    reads: Option<&[TableId]>,
) -> Result<usize, RouteReason> {
    let mut required = required_position(io, mode, reads)
        .await
        .map_err(NoReplica::reason)?;
    if let Some(need) = required.take() {
        let known = io.db().known_primary_position();
        required = Some(if known.is_some_and(|k| k.covers(&need)) {
            need
        } else {
            clamp_to_primary(io, need).await
        });
    }
    let wait = io.db().consistency.replica_wait;
    let deadline = (required.is_some() && !wait.is_zero())
        .then(|| Instant::now().checked_add(wait))
        .flatten();
    // the replicas' positions are re-read for reads the cached ones cannot serve, once
    // per gap for the whole process; faster for a read that chose to wait
    let gap = if deadline.is_some() {
        WAITING_REFRESH_GAP_MS
    } else {
        REFRESH_GAP_MS
    };
    loop {
        match find_replica_for(io, required.clone(), true, gap).await {
            Ok(i) => return Ok(i),
            Err(NoReplica::Behind) => match (deadline, &required) {
                (Some(d), Some(need)) if Instant::now() < d => {
                    let left = d.saturating_duration_since(Instant::now());
                    // where the server can wait for a position, a replica waits
                    // (MariaDB's MASTER_GTID_WAIT); else the positions are polled
                    if !wait_on_replica(io, need, left).await {
                        io.pause(left.min(Duration::from_millis(2))).await;
                    }
                }
                _ => return Err(RouteReason::Behind),
            },
            Err(other) => return Err(other.reason()),
        }
    }
}

/// Waits up to `left` on a usable replica's server for it to apply `need`; `false` when
/// the backend cannot wait on the server (or no replica can be asked), so that the
/// caller polls.
async fn wait_on_replica(io: &mut impl ReadIo, need: &Position, left: Duration) -> bool {
    let db = io.db().clone();
    let primary_position = db.known_primary_position();
    let usable =
        |i: usize| db.replicas.usability(i, primary_position.as_ref()) == Usability::Usable;
    let i = match *io.current_replica() {
        Some(i) if usable(i) => i,
        _ => match db.replicas.pick_among(usable, &mut rand::thread_rng()) {
            Some(i) => i,
            None => return false,
        },
    };
    if !io.open_replica(i).await {
        return false;
    }
    db.counters.meters.replica_wait();
    match io.wait_on(i, need, left).await {
        ServerWait::Unsupported => false,
        ServerWait::Reached => {
            db.replicas.reached(i, need);
            true
        }
        ServerWait::NotReached => true,
    }
}

/// A required position beyond what the primary has been seen to reach: ask the primary
/// (one query). A position beyond its current one cannot be real (a forged token, or one
/// from before the primary was replaced): the scope's requirements are clamped to it, so
/// that such a token costs one query, not a primary read (or a `replica_wait`) each time.
async fn clamp_to_primary(io: &mut impl ReadIo, mut required: Position) -> Position {
    let Some(now) = io.primary_position(false).await.ok().flatten() else {
        return required;
    };
    let db = io.db();
    db.saw_primary_at(&now);
    if !now.covers(&required) {
        tracing::warn!(
            target: "diesel_sharding::consistency",
            database = %db.name,
            required = %required,
            primary = %now,
            "a required position is beyond the primary's: clamped (a forged token, or a replaced primary)"
        );
        scope::clamp(db.id, &now);
        required.clamp_to(&now);
    }
    required
}

/// Reads the primary's position for reads whose writes' positions are not known yet, if it
/// is this connection's turn: one connection at a time, at the process's refresh rate,
/// shared with everyone like the monitor's probe (it covers every write that
/// returned before it started). Returns whether it read one.
pub(crate) async fn refresh_primary_position(io: &mut impl ReadIo) -> bool {
    let db = io.db().clone();
    let Some((_turn, started)) = db.begin_primary_check(REFRESH_GAP_MS) else {
        return false;
    };
    match io.primary_position(false).await {
        Ok(Some(pos)) => {
            db.primary_probed(started, &pos);
            scope::resolve_pending(db.id, &pos, started);
            true
        }
        _ => false,
    }
}

/// The position a read must see in `mode` (`None`: nothing); `Err` when no replica can
/// serve it (what it must see cannot be told).
async fn required_position(
    io: &mut impl ReadIo,
    mode: Consistency,
    reads: Option<&[TableId]>,
) -> Result<Option<Position>, NoReplica> {
    let db = io.db().clone();
    let id = db.id;
    Ok(match mode {
        // every mode honours what the scope must see (its token, what it read, the
        // positions learned for its writes); the modes differ in what they add to it
        Consistency::Pin | Consistency::Eventual | Consistency::ReadYourWrites => {
            scope::required(id, reads)
        }
        Consistency::Causal => {
            // the process's writes left to learn: covered by a primary position read after
            // they returned (the monitor's probe, or a shared refresh when it is due)
            let lazy = match db.lazy_writes_bound(reads) {
                Ok(lazy) => lazy,
                Err(()) if refresh_primary_position(io).await => db
                    .lazy_writes_bound(reads)
                    .map_err(|()| NoReplica::Behind)?,
                Err(()) => return Err(NoReplica::Behind),
            };
            let written = db.process_written(reads).map_err(|()| NoReplica::Behind)?;
            join(join(scope::required(id, reads), written), lazy)
        }
        Consistency::Strong => {
            // one tiny query on the primary; the read itself still runs on a replica
            let now = match io.primary_position(true).await {
                Ok(Some(position)) => position,
                Err(e) if is_connection_error(&e) => return Err(NoReplica::Unreachable),
                Ok(None) | Err(_) => return Err(NoReplica::Behind),
            };
            join(scope::required(id, reads), Some(now))
        }
    })
}

/// A usable replica that has replayed `required` (`None`: any usable one): the current one
/// if it qualifies, else the others in the read strategy's order. Positions come from the
/// monitor's cache and, when that is not enough to decide, from the replica itself. With
/// `monotonic`, a read of the current scope, which must not see older data than the scope's
/// last replica read: when the read moves to another replica than that one, what that one
/// had replayed is learned first. A replica whose cached position is not enough is asked
/// again only when no other connection is asking it and the process's rate of such checks
/// (one per `gap_ms` on average, a few at once) allows: otherwise the cached answer stands,
/// and the read goes elsewhere without a round trip.
pub(crate) async fn find_replica_for(
    io: &mut impl ReadIo,
    mut required: Option<Position>,
    monotonic: bool,
    gap_ms: u64,
) -> Result<usize, NoReplica> {
    let db = io.db().clone();
    let n = db.replicas.len();
    if n == 0 {
        return Err(NoReplica::Unreachable);
    }
    let mut last_read = if monotonic {
        scope::last_read(db.id)
    } else {
        None
    };
    // for the byte lag (none without positions)
    let primary_position = if db.has_positions {
        db.primary_position()
    } else {
        None
    };
    let primary_position = primary_position.as_ref();
    let mut tried = Tried::new(n);
    let mut any_usable = false;
    let mut any_lagging = false;
    let mut next = *io.current_replica();
    for _ in 0..n {
        let candidate = match next.take() {
            Some(i) if !tried.has(i) => Some(i),
            _ => db.replicas.pick_among(
                |i| {
                    !tried.has(i) && db.replicas.usability(i, primary_position) == Usability::Usable
                },
                &mut rand::thread_rng(),
            ),
        };
        let Some(i) = candidate else { break };
        tried.add(i);
        match db.replicas.usability(i, primary_position) {
            Usability::Usable => {}
            Usability::Lagging => {
                any_lagging = true;
                continue;
            }
            Usability::Down => continue,
        }
        if !io.open_replica(i).await {
            continue;
        }
        any_usable = true;
        if let Some(seen) = last_read {
            if seen.replica != i || db.replicas.renewed_since(i, seen.at_ms) {
                // moving away from the replica the scope last read (or it is another
                // server now): never older than what that read saw
                let Some(position) = resolve_read(io, seen).await else {
                    // what it saw cannot be told: no replica is known to be as new
                    return Err(NoReplica::Behind);
                };
                scope::resolved_read(db.id, Some(&position));
                required = join(required, Some(position));
                last_read = None;
            }
        }
        let Some(need) = &required else {
            *io.current_replica() = Some(i);
            return Ok(i);
        };
        if db.replicas.has_replayed(i, need) {
            *io.current_replica() = Some(i);
            return Ok(i);
        }
        // the cached position is not enough: ask the replica itself, if it is this
        // connection's turn (the answer goes to the shared cache for everyone)
        let turn = db.replicas.begin_check(i, gap_ms);
        let caught_up = match turn {
            Some(_) => io.replay_of(i).await.is_some_and(|pos| pos.covers(need)),
            None => false,
        };
        drop(turn);
        if caught_up {
            *io.current_replica() = Some(i);
            return Ok(i);
        }
    }
    // the loop above may have stopped early when the strategy found nothing more
    if !any_usable && !any_lagging {
        any_lagging =
            (0..n).any(|i| db.replicas.usability(i, primary_position) == Usability::Lagging);
    }
    Err(if any_usable {
        NoReplica::Behind
    } else if any_lagging {
        NoReplica::Lagging
    } else {
        NoReplica::Unreachable
    })
}

/// A position at or past what replica `seen.replica` had replayed when the scope read
/// it: from the monitor when it has probed since, else from the replica itself, else
/// (the replica restarted, or cannot be asked) the primary's position, which is past
/// anything a replica has; `None` when nothing can tell.
pub(crate) async fn resolve_read(io: &mut impl ReadIo, seen: scope::LastRead) -> Option<Position> {
    let db = io.db().clone();
    let i = seen.replica;
    if !db.replicas.renewed_since(i, seen.at_ms) {
        if let Some(pos) = db.replicas.replay_since(i, seen.at_ms) {
            return Some(pos);
        }
        let primary_position = db.known_primary_position();
        // a replica that is down or hung cannot tell in time: ask the primary instead
        let usable = db.replicas.usability(i, primary_position.as_ref()) == Usability::Usable;
        if i < io.replica_slots() && usable && io.open_replica(i).await {
            if let Some(pos) = io.replay_of(i).await {
                if !db.replicas.renewed_since(i, seen.at_ms) {
                    return Some(pos);
                }
            }
        }
    }
    io.primary_position(true).await.ok().flatten()
}

/// The sync connection's I/O: blocking calls, so its futures are ready at once.
impl<C: RoutedBackend> ReadIo for RoutedConnection<C> {
    fn db(&self) -> &Arc<PrimaryState> {
        &self.db
    }

    fn current_replica(&mut self) -> &mut Option<usize> {
        &mut self.current_replica
    }

    fn replica_slots(&self) -> usize {
        self.replicas.len()
    }

    fn in_transaction(&mut self) -> bool {
        RoutedConnection::in_transaction(self)
    }

    fn session_on_primary(&self) -> bool {
        self.state.sticky.any()
    }

    fn open_replica(&mut self, i: usize) -> impl Future<Output = bool> + Send {
        std::future::ready(self.ensure_replica_open(i))
    }

    fn replay_of(&mut self, i: usize) -> impl Future<Output = Option<Position>> + Send {
        std::future::ready(self.live_replay(i))
    }

    fn wait_on(
        &mut self,
        i: usize,
        need: &Position,
        left: Duration,
    ) -> impl Future<Output = ServerWait> + Send {
        std::future::ready(self.wait_on_now(i, need, left))
    }

    fn primary_position(
        &mut self,
        flush: bool,
    ) -> impl Future<Output = diesel::QueryResult<Option<Position>>> + Send {
        self.db.counters.meters.position_query();
        std::future::ready(if flush {
            self.primary_call(C::flush_position)
        } else {
            self.primary_call(C::write_position)
        })
    }

    fn pause(&mut self, d: Duration) -> impl Future<Output = ()> + Send {
        std::thread::sleep(d);
        std::future::ready(())
    }
}

impl<C: RoutedBackend> RoutedConnection<C> {
    /// [`ReadIo::wait_on`], blocking.
    fn wait_on_now(&mut self, i: usize, need: &Position, left: Duration) -> ServerWait {
        let Some(replica) = self.replicas[i].as_mut() else {
            return ServerWait::Unsupported;
        };
        let waited = {
            // the server answers by `left`; past that and `replica_timeout`, it is hung
            let _call = replica
                .watch
                .call(Some(left.saturating_add(self.db.replica_timeout)));
            C::wait_for_replay(&mut replica.conn, need, left)
        };
        match waited {
            Ok(None) => ServerWait::Unsupported,
            Ok(Some(true)) => ServerWait::Reached,
            Ok(Some(false)) => ServerWait::NotReached,
            Err(e) => {
                self.replica_call_failed(i, &e);
                ServerWait::NotReached
            }
        }
    }
}

impl<C: RoutedBackend> RoutedConnection<C> {
    /// A usable replica that has replayed `required`, asking the replicas themselves when
    /// the cached positions are not enough ([`find_replica_for`]).
    pub(super) fn find_replica(&mut self, required: &Position) -> Result<usize, NoReplica> {
        ready(find_replica_for(
            self,
            Some(required.clone()),
            false,
            WAITING_REFRESH_GAP_MS,
        ))
    }

    /// [`resolve_read`] on this connection.
    pub(crate) fn resolve_read(&mut self, seen: scope::LastRead) -> Option<Position> {
        ready(resolve_read(self, seen))
    }

    /// A call on replica `i` failed: unanswered within its bound, it counts as hung (for
    /// every connection to it); a lost connection is dropped and the replica skipped.
    fn replica_call_failed(&mut self, i: usize, e: &diesel::result::Error) {
        if self.replicas[i].as_ref().is_some_and(|r| r.watch.was_cut()) {
            self.db.replicas.set_hung(i, true);
        }
        if is_connection_error(e) {
            self.replicas[i] = None;
            super::replica_lost(&self.db, i);
            if self.current_replica == Some(i) {
                self.current_replica = None;
            }
        }
    }

    /// Opens replica `i` if needed; on failure it is skipped for the backoff.
    #[inline]
    fn ensure_replica_open(&mut self, i: usize) -> bool {
        if i >= self.replicas.len() {
            // a replica a reload added after this connection opened
            self.replicas.resize_with(i + 1, || None);
        }
        match &self.replicas[i] {
            Some(r) if r.generation == self.db.replicas.generation(i) => true,
            // opened before the replica last went down, hung or was replaced: reopen
            _ => self.reopen_replica(i),
        }
    }

    /// [`ensure_replica_open`](Self::ensure_replica_open) for a replica not open, or open
    /// before it went down, hung or was replaced.
    #[cold]
    fn reopen_replica(&mut self, i: usize) -> bool {
        self.replicas[i] = None;
        match open_replica::<C>(&self.db, i, &self.instrumentation, self.cache_size) {
            Ok(conn) => {
                super::replica_back(&self.db, i);
                self.replicas[i] = Some(conn);
                if self.db.has_positions {
                    // learns the position, and whether another server answers now
                    self.live_replay(i);
                }
                true
            }
            Err(e) => {
                super::replica_unreachable(&self.db, i, &e);
                false
            }
        }
    }

    /// Asks replica `i` how far it has replayed, and remembers the answer.
    fn live_replay(&mut self, i: usize) -> Option<Position> {
        let replica = self.replicas[i].as_mut()?;
        let asked_ms = self.db.replicas.clock_ms();
        let probed = {
            let _call = replica.watch.call(Some(self.db.replica_timeout));
            if replica.identity == 0 {
                // the connection's first check: which server incarnation it talks to, too
                C::probe_replica(&mut replica.conn).map(|p| {
                    // a promoted server's positions are of another history: none learned
                    p.filter(|p| !p.promoted).map(|p| {
                        replica.identity = p.identity;
                        p.replay
                    })
                })
            } else {
                C::replay_position(&mut replica.conn)
            }
        };
        let identity = replica.identity;
        match probed {
            Ok(Some(replay)) => {
                self.db.replicas.saw_replay(i, asked_ms, &replay, identity);
                Some(replay)
            }
            Ok(None) => None,
            Err(e) => {
                // no answer within replica_timeout: hung, for every connection to it
                self.replica_call_failed(i, &e);
                None
            }
        }
    }
}
