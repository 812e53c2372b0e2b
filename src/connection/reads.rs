//! Which replica may serve a read: healthy, within the lag limits, and caught up to what the
//! reader must see.

use std::time::{Duration, Instant};

use super::{open_replica, RoutedConnection};
use crate::backend::{is_connection_error, RoutedBackend};
use crate::consistency::{scope, Consistency, Position};
use crate::primary::join;
use crate::routing::{RouteReason, TableId, Usability, REFRESH_GAP_MS, WAITING_REFRESH_GAP_MS};

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

impl<C: RoutedBackend> RoutedConnection<C> {
    /// The replica for a read in `mode`, waiting up to `replica_wait` for one to catch up.
    /// `reads` are the tables the read touches (`None`: the whole database).
    pub(super) fn choose_for_read(
        &mut self,
        mode: Consistency,
        reads: Option<&[TableId]>,
    ) -> Result<usize, RouteReason> {
        if !self.db.has_positions {
            // no positions (SQLite): any usable replica; the pin decided the rest
            return self
                .find_replica_for(None, false, REFRESH_GAP_MS)
                .map_err(NoReplica::reason);
        }
        let mut required = self
            .required_position(mode, reads)
            .map_err(NoReplica::reason)?;
        if let Some(need) = required.take() {
            let known = self.db.known_primary_position();
            required = Some(if known.is_some_and(|k| k.covers(&need)) {
                need
            } else {
                self.clamp_to_primary(need)
            });
        }
        let wait = self.db.consistency.replica_wait;
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
            match self.find_replica_for(required.clone(), true, gap) {
                Ok(i) => return Ok(i),
                Err(NoReplica::Behind) => match (deadline, &required) {
                    (Some(d), Some(need)) if Instant::now() < d => {
                        let left = d.saturating_duration_since(Instant::now());
                        // where the server can wait for a position, a replica waits
                        // (MariaDB's MASTER_GTID_WAIT); else the positions are polled
                        if !self.wait_on_replica(need, left) {
                            std::thread::sleep(left.min(Duration::from_millis(2)));
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
    fn wait_on_replica(&mut self, need: &Position, left: Duration) -> bool {
        let primary_position = self.db.known_primary_position();
        let usable = |i: usize| {
            self.db.replicas.usability(i, primary_position.as_ref()) == Usability::Usable
        };
        let i = match self.current_replica {
            Some(i) if usable(i) => i,
            _ => match self.db.replicas.pick_among(usable, &mut rand::thread_rng()) {
                Some(i) => i,
                None => return false,
            },
        };
        if !self.ensure_replica_open(i) {
            return false;
        }
        let Some(replica) = self.replicas[i].as_mut() else {
            return false;
        };
        let waited = {
            // the server answers by `left`; past that and `replica_timeout`, it is hung
            let _call = replica
                .watch
                .call(Some(left.saturating_add(self.db.replica_timeout)));
            C::wait_for_replay(&mut replica.conn, need, left)
        };
        match waited {
            Ok(None) => false,
            Ok(Some(true)) => {
                self.db.replicas.reached(i, need);
                true
            }
            Ok(Some(false)) => true,
            Err(e) => {
                self.replica_call_failed(i, &e);
                true
            }
        }
    }

    /// A call on replica `i` failed: unanswered within its bound, it counts as hung (for
    /// every connection to it); a lost connection is dropped and the replica skipped.
    fn replica_call_failed(&mut self, i: usize, e: &diesel::result::Error) {
        if self.replicas[i].as_ref().is_some_and(|r| r.watch.was_cut()) {
            self.db.replicas.set_hung(i, true);
        }
        if is_connection_error(e) {
            self.replicas[i] = None;
            self.db.replicas.mark_down(i);
            self.db.counters.replica_failed();
            if self.current_replica == Some(i) {
                self.current_replica = None;
            }
        }
    }

    /// A required position beyond what the primary has been seen to reach: ask the primary
    /// (one query). A position beyond its current one cannot be real (a forged token, or one
    /// from before the primary was replaced): the scope's requirements are clamped to it, so
    /// that such a token costs one query, not a primary read (or a `replica_wait`) each time.
    fn clamp_to_primary(&mut self, mut required: Position) -> Position {
        let Some(now) = self.primary_call(C::write_position).ok().flatten() else {
            return required;
        };
        self.db.saw_primary_at(&now);
        if !now.covers(&required) {
            tracing::warn!(
                target: "diesel_sharding::consistency",
                database = %self.db.name,
                required = %required,
                primary = %now,
                "a required position is beyond the primary's: clamped (a forged token, or a replaced primary)"
            );
            scope::clamp(self.db.id, &now);
            required.clamp_to(&now);
        }
        required
    }

    /// The position a read must see in `mode` (`None`: nothing); `Err` when no replica can
    /// serve it (what it must see cannot be told).
    fn required_position(
        &mut self,
        mode: Consistency,
        reads: Option<&[TableId]>,
    ) -> Result<Option<Position>, NoReplica> {
        let id = self.db.id;
        Ok(match mode {
            // every mode honours what the scope must see (its token, what it read, the
            // positions learned for its writes); the modes differ in what they add to it
            Consistency::Pin | Consistency::Eventual | Consistency::ReadYourWrites => {
                scope::required(id, reads)
            }
            Consistency::Causal => {
                // the process's writes left to learn: covered by a primary position read after
                // they returned (the monitor's probe, or a shared refresh when it is due)
                let lazy = match self.db.lazy_writes_bound(reads) {
                    Ok(lazy) => lazy,
                    Err(()) if self.refresh_primary_position() => self
                        .db
                        .lazy_writes_bound(reads)
                        .map_err(|()| NoReplica::Behind)?,
                    Err(()) => return Err(NoReplica::Behind),
                };
                let written = self
                    .db
                    .process_written(reads)
                    .map_err(|()| NoReplica::Behind)?;
                join(join(scope::required(id, reads), written), lazy)
            }
            Consistency::Strong => {
                // one tiny query on the primary; the read itself still runs on a replica
                let now = match self.primary_call(C::flush_position) {
                    Ok(Some(position)) => position,
                    Err(e) if crate::backend::is_connection_error(&e) => {
                        return Err(NoReplica::Unreachable)
                    }
                    Ok(None) | Err(_) => return Err(NoReplica::Behind),
                };
                join(scope::required(id, reads), Some(now))
            }
        })
    }

    /// A usable replica that has replayed `required`: the current one if it qualifies, else
    /// the others in the read strategy's order. Positions come from the monitor's cache and,
    /// when that is not enough to decide, from the replica connection itself.
    pub(super) fn find_replica(&mut self, required: &Position) -> Result<usize, NoReplica> {
        self.find_replica_for(Some(required.clone()), false, WAITING_REFRESH_GAP_MS)
    }

    /// [`find_replica`](Self::find_replica); with `monotonic`, a read of the current scope,
    /// which must not see older data than the scope's last replica read: when the read moves
    /// to another replica than that one, what that one had replayed is learned first. A
    /// replica whose cached position is not enough is asked again only when no other
    /// connection is asking it and the process's rate of such checks (one per `gap_ms` on
    /// average, a few at once) allows: otherwise the cached answer stands, and the read goes
    /// elsewhere without a round trip.
    pub(super) fn find_replica_for(
        &mut self,
        mut required: Option<Position>,
        monotonic: bool,
        gap_ms: u64,
    ) -> Result<usize, NoReplica> {
        let n = self.db.replicas.len();
        if n == 0 {
            return Err(NoReplica::Unreachable);
        }
        let mut last_read = if monotonic {
            scope::last_read(self.db.id)
        } else {
            None
        };
        // for the byte lag (none without positions)
        let primary_position = if self.db.has_positions {
            self.db.primary_position()
        } else {
            None
        };
        let primary_position = primary_position.as_ref();
        let mut tried = Tried::new(n);
        let mut any_usable = false;
        let mut any_lagging = false;
        let mut next = self.current_replica;
        for _ in 0..n {
            let candidate = match next.take() {
                Some(i) if !tried.has(i) => Some(i),
                _ => self.db.replicas.pick_among(
                    |i| {
                        !tried.has(i)
                            && self.db.replicas.usability(i, primary_position) == Usability::Usable
                    },
                    &mut rand::thread_rng(),
                ),
            };
            let Some(i) = candidate else { break };
            tried.add(i);
            match self.db.replicas.usability(i, primary_position) {
                Usability::Usable => {}
                Usability::Lagging => {
                    any_lagging = true;
                    continue;
                }
                Usability::Down => continue,
            }
            if !self.ensure_replica_open(i) {
                continue;
            }
            any_usable = true;
            if let Some(seen) = last_read {
                if seen.replica != i || self.db.replicas.renewed_since(i, seen.at_ms) {
                    // moving away from the replica the scope last read (or it is another
                    // server now): never older than what that read saw
                    let Some(position) = self.resolve_read(seen) else {
                        // what it saw cannot be told: no replica is known to be as new
                        return Err(NoReplica::Behind);
                    };
                    scope::resolved_read(self.db.id, Some(&position));
                    required = join(required, Some(position));
                    last_read = None;
                }
            }
            let Some(need) = &required else {
                self.current_replica = Some(i);
                return Ok(i);
            };
            if self.db.replicas.has_replayed(i, need) {
                self.current_replica = Some(i);
                return Ok(i);
            }
            // the cached position is not enough: ask the replica itself, if it is this
            // connection's turn (the answer goes to the shared cache for everyone)
            let db = self.db.clone();
            let turn = db.replicas.begin_check(i, gap_ms);
            let caught_up =
                turn.is_some() && self.live_replay(i).is_some_and(|pos| pos.covers(need));
            drop(turn);
            if caught_up {
                self.current_replica = Some(i);
                return Ok(i);
            }
        }
        // the loop above may have stopped early when the strategy found nothing more
        if !any_usable && !any_lagging {
            any_lagging = (0..n)
                .any(|i| self.db.replicas.usability(i, primary_position) == Usability::Lagging);
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
    pub(crate) fn resolve_read(&mut self, seen: scope::LastRead) -> Option<Position> {
        let i = seen.replica;
        if !self.db.replicas.renewed_since(i, seen.at_ms) {
            if let Some(pos) = self.db.replicas.replay_since(i, seen.at_ms) {
                return Some(pos);
            }
            let primary_position = self.db.known_primary_position();
            // a replica that is down or hung cannot tell in time: ask the primary instead
            let usable =
                self.db.replicas.usability(i, primary_position.as_ref()) == Usability::Usable;
            if i < self.replicas.len() && usable && self.ensure_replica_open(i) {
                if let Some(pos) = self.live_replay(i) {
                    if !self.db.replicas.renewed_since(i, seen.at_ms) {
                        return Some(pos);
                    }
                }
            }
        }
        self.primary_call(C::flush_position).ok().flatten()
    }

    /// Opens replica `i` if needed; on failure it is skipped for the backoff.
    fn ensure_replica_open(&mut self, i: usize) -> bool {
        match &self.replicas[i] {
            // opened before the replica last went down, hung or was replaced: reopen
            Some(r) if r.generation != self.db.replicas.generation(i) => self.replicas[i] = None,
            Some(_) => return true,
            None => {}
        }
        match open_replica::<C>(&self.db, i, &self.instrumentation, self.cache_size) {
            Ok(conn) => {
                self.db.replicas.mark_up(i);
                self.db.replicas.set_hung(i, false);
                self.replicas[i] = Some(conn);
                if self.db.has_positions {
                    // learns the position, and whether another server answers now
                    self.live_replay(i);
                }
                true
            }
            Err(e) => {
                self.db.replicas.mark_down(i);
                self.db.counters.replica_failed();
                let name = self
                    .db
                    .replicas
                    .get(i)
                    .map(|r| r.name.as_str())
                    .unwrap_or("?");
                tracing::warn!(
                    target: "diesel_sharding::route",
                    database = %self.db.name,
                    replica = name,
                    error = %e,
                    "replica unreachable: reading from the primary, retrying it after the backoff"
                );
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
                    p.map(|p| {
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
