//! One scope state per thread: the pin (explicit, and the write windows), the mode override,
//! and the positions its current scope must see, with one guard type that restores what it
//! changed, also on panic.
//!
//! Outside any scope the thread's own history counts (scripts, simple workers). Inside a
//! [`with_token`](crate::Cluster::with_token) scope it is the scope's token plus what the scope
//! itself writes and reads, so a worker thread that served user A's write does not send user
//! B's request to the primary.
//!
//! What outlives a scope, one rule: what the thread *did* outlives the scopes that only
//! *asked* for something. A write's pin window and position outlive a `use_primary` or
//! `with_consistency` scope (they record a fact); a request scope's writes join the enclosing
//! scope; a job scope (`run_job`) starts clean and leaves nothing behind, pins included.
//!
//! The state sits behind [`with_state`], in a thread-local. Async scopes ([`Layer`], feature
//! `async`, see [`crate::task`]) apply themselves to it for each poll of their future and take
//! themselves back after it, so they follow a task across threads and never leak into
//! another task on the same thread.

use std::cell::RefCell;

use super::{Consistency, Position};
use crate::routing::TableId;

/// `(database id, table id or 0 for the whole database, position)`.
pub(crate) type Entry = (u64, TableId, Position);

#[derive(Debug, Default, Clone)]
pub(crate) struct Scope {
    /// What every read must see: per database, and per table where the tables are known.
    must_see: Vec<Entry>,
    /// What this scope wrote (joins the parent when a request scope ends).
    wrote: Vec<Entry>,
    /// Committed writes whose position is not known yet: `(database, table or 0 for tables
    /// not known, when the latest one returned, in the replica set's clock)`.
    pending: Vec<(u64, TableId, u64)>,
    /// Per database, the replica this scope last read from, while what it had replayed
    /// then is only known as a lower bound.
    last_reads: Vec<(u64, LastRead)>,
}

/// The replica a scope last read a database from, and when (the replica set's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastRead {
    pub(crate) replica: usize,
    pub(crate) at_ms: u64,
}

impl Scope {
    /// A request scope ended: what it wrote (known or pending) joins this, its parent.
    fn absorb(&mut self, child: Scope) {
        for (db, table, pos) in child.wrote {
            Scope::raise(&mut self.must_see, db, table, &pos);
            Scope::raise(&mut self.wrote, db, table, &pos);
        }
        for (db, table, at) in child.pending {
            match self
                .pending
                .iter_mut()
                .find(|(d, t, _)| *d == db && *t == table)
            {
                Some((_, _, a)) => *a = (*a).max(at),
                None => self.pending.push((db, table, at)),
            }
        }
    }

    fn raise(list: &mut Vec<Entry>, db: u64, table: TableId, pos: &Position) {
        match list.iter_mut().find(|(d, t, _)| *d == db && *t == table) {
            Some((_, _, p)) => p.raise(pos),
            None => list.push((db, table, pos.clone())),
        }
    }
}

/// The pin: force reads to the primary.
#[derive(Debug, Default, Clone)]
pub(crate) struct PinState {
    /// `pin_this_thread` or an open `use_primary` scope.
    pub(crate) explicit: bool,
    /// Write windows: (database id, reads of that database stay on the primary until then).
    pub(crate) writes: Vec<(u64, std::time::Instant)>,
}

/// Everything a thread (or a task) carries between statements.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) pin: PinState,
    /// `scopes[0]` is the thread's own history; the last one is current.
    scopes: Vec<Scope>,
    mode: Option<Consistency>,
}

thread_local! {
    static STATE: RefCell<State> = const {
        RefCell::new(State {
            pin: PinState { explicit: false, writes: Vec::new() },
            scopes: Vec::new(),
            mode: None,
        })
    };
}

/// Runs `f` on the current scope state; `None` while the thread is being torn down.
pub(crate) fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    STATE.try_with(|s| f(&mut s.borrow_mut())).ok()
}

fn with_current<R>(f: impl FnOnce(&mut Scope) -> R) -> Option<R> {
    with_state(|s| {
        if s.scopes.is_empty() {
            s.scopes.push(Scope::default());
        }
        let last = s.scopes.len() - 1;
        f(&mut s.scopes[last])
    })
}

/// The position a read of `db` must see in the current scope (`None`: nothing). With
/// `reads`, the tables the read touches, writes to other tables do not count.
pub(crate) fn required(db: u64, reads: Option<&[TableId]>) -> Option<Position> {
    with_current(|s| {
        let mut need: Option<Position> = None;
        for (_, _, p) in s
            .must_see
            .iter()
            .filter(|(d, t, _)| *d == db && (*t == 0 || reads.is_none_or(|r| r.contains(t))))
        {
            match &mut need {
                Some(n) => n.raise(p),
                None => need = Some(p.clone()),
            }
        }
        need
    })
    .flatten()
}

/// Has the current scope committed a write to `db` whose position is not known yet?
pub(crate) fn pending(db: u64) -> bool {
    with_current(|s| s.pending.iter().any(|(d, _, _)| *d == db)).unwrap_or(false)
}

/// The time of a pending write that may not have happened yet when it was marked (the
/// escape hatch `primary()`, a row-by-row cursor): no probe covers it, only a position read
/// later, when it is needed.
pub(crate) const NOT_YET: u64 = u64::MAX - 1;

/// Does `db` have a pending write that only a position read now can cover?
pub(crate) fn pending_not_yet(db: u64) -> bool {
    with_current(|s| {
        s.pending
            .iter()
            .any(|(d, _, at)| *d == db && *at == NOT_YET)
    })
    .unwrap_or(false)
}

/// Does a read of `reads` (`None`: all tables) on `db` depend on a pending write?
pub(crate) fn pending_for(db: u64, reads: Option<&[TableId]>) -> bool {
    with_current(|s| {
        s.pending
            .iter()
            .any(|(d, t, _)| *d == db && (*t == 0 || reads.is_none_or(|r| r.contains(t))))
    })
    .unwrap_or(false)
}

/// This scope committed a write to `db` (to `tables`; empty: not known) whose position is
/// not known yet; `at_ms` is when it returned.
pub(crate) fn write_pending(db: u64, tables: &[TableId], at_ms: u64) {
    with_current(|s| {
        let mut add = |table: TableId| match s
            .pending
            .iter_mut()
            .find(|(d, t, _)| *d == db && *t == table)
        {
            Some((_, _, at)) => *at = (*at).max(at_ms),
            None => s.pending.push((db, table, at_ms)),
        };
        if tables.is_empty() {
            add(0);
        }
        for t in tables {
            add(*t);
        }
    });
}

/// `pos` is a position of `db`'s primary read at or after `since_ms`: it covers every pending
/// write that had returned before then. Returns whether writes of `db` are still pending.
pub(crate) fn resolve_pending(db: u64, pos: &Position, since_ms: u64) -> bool {
    with_current(|s| {
        let mut covered: Vec<TableId> = Vec::new();
        s.pending.retain(|(d, t, at)| {
            if *d == db && *at < since_ms {
                covered.push(*t);
                false
            } else {
                true
            }
        });
        for t in covered {
            Scope::raise(&mut s.must_see, db, t, pos);
            Scope::raise(&mut s.wrote, db, t, pos);
        }
        s.pending.iter().any(|(d, _, _)| *d == db)
    })
    .unwrap_or(false)
}

/// This scope committed a write to `db` at `pos`: to `tables`, or (empty) to tables unknown.
/// A position read after it also covers every write of `db` still pending.
pub(crate) fn wrote(db: u64, tables: &[TableId], pos: &Position) {
    resolve_pending(db, pos, u64::MAX);
    with_current(|s| {
        if tables.is_empty() {
            Scope::raise(&mut s.must_see, db, 0, pos);
            Scope::raise(&mut s.wrote, db, 0, pos);
        }
        for t in tables {
            Scope::raise(&mut s.must_see, db, *t, pos);
            Scope::raise(&mut s.wrote, db, *t, pos);
        }
    });
}

/// This scope read `db` from `replica` at `at_ms`, which had replayed at least `pos` (the
/// monitor's last value, if any): later reads must not see older data, and a token taken
/// now carries it. What the replica really had is learned only when it matters (the next
/// read goes to another replica, or a token is taken).
pub(crate) fn observed(db: u64, replica: usize, at_ms: u64, pos: Option<&Position>) {
    with_current(|s| {
        if let Some(pos) = pos {
            Scope::raise(&mut s.must_see, db, 0, pos);
        }
        let seen = LastRead { replica, at_ms };
        match s.last_reads.iter_mut().find(|(d, _)| *d == db) {
            Some((_, last)) => *last = seen,
            None => s.last_reads.push((db, seen)),
        }
    });
}

/// The replica this scope last read `db` from, while what it had is not known exactly.
pub(crate) fn last_read(db: u64) -> Option<LastRead> {
    with_current(|s| {
        s.last_reads
            .iter()
            .find(|(d, _)| *d == db)
            .map(|(_, seen)| *seen)
    })
    .flatten()
}

/// The scope's last read of `db` saw at most `pos`: every later read sees at least that.
/// `None` (not learnable) changes nothing: the read that needed it goes to the primary, and
/// the next one tries again.
pub(crate) fn resolved_read(db: u64, pos: Option<&Position>) {
    with_current(|s| {
        if let Some(pos) = pos {
            s.last_reads.retain(|(d, _)| *d != db);
            Scope::raise(&mut s.must_see, db, 0, pos);
        }
    });
}

/// What the current scope has read whose exact position is not known, per database.
pub(crate) fn unresolved_reads() -> Vec<(u64, LastRead)> {
    with_current(|s| s.last_reads.clone()).unwrap_or_default()
}

/// Databases the current scope committed writes to whose positions are not known yet.
pub(crate) fn pending_databases() -> Vec<u64> {
    with_current(|s| {
        let mut dbs: Vec<u64> = s.pending.iter().map(|(d, _, _)| *d).collect();
        dbs.dedup();
        dbs
    })
    .unwrap_or_default()
}

/// No requirement of `db` in the current scope goes beyond `limit` (the primary's position).
pub(crate) fn clamp(db: u64, limit: &Position) {
    with_current(|s| {
        for (d, _, p) in s.must_see.iter_mut() {
            if *d == db && !limit.covers(p) {
                p.clamp_to(limit);
            }
        }
    });
}

/// Everything the current scope must see, `(database, table or 0, position)`, for a token.
pub(crate) fn snapshot() -> Vec<Entry> {
    with_current(|s| s.must_see.clone()).unwrap_or_default()
}

/// The mode set by the innermost `with_consistency`, if any.
pub(crate) fn mode() -> Option<Consistency> {
    with_state(|s| s.mode).flatten()
}

/// How a scope ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeKind {
    /// A request scope: its writes join the enclosing scope.
    Request,
    /// A job: it starts clean (no pin, no mode override, no history) and leaves nothing.
    Job,
}

/// What a guard restores when it drops.
#[derive(Debug)]
enum Saved {
    /// The explicit pin as it was.
    Pin(bool),
    /// The mode override as it was.
    Mode(Option<Consistency>),
    /// A scope to end at this depth; a job also restores the pin and mode from before.
    Scope {
        depth: usize,
        kind: ScopeKind,
        before: Option<(PinState, Option<Consistency>)>,
    },
}

/// The one guard of the scope state: restores what it changed when dropped (also on
/// panic). Scopes nest; guards drop in reverse order. Not `Send`: it restores the state of
/// the thread that made it.
#[must_use = "the scope ends as soon as the guard is dropped"]
#[derive(Debug)]
pub(crate) struct Guard {
    saved: Option<Saved>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Guard {
    fn new(saved: Saved) -> Guard {
        Guard {
            saved: Some(saved),
            _not_send: std::marker::PhantomData,
        }
    }
}

/// Pins (or unpins) the thread until the guard drops.
pub(crate) fn set_pin(explicit: bool) -> Guard {
    let previous =
        with_state(|s| std::mem::replace(&mut s.pin.explicit, explicit)).unwrap_or(false);
    Guard::new(Saved::Pin(previous))
}

/// Sets the mode until the guard drops.
pub(crate) fn set_mode(mode: Consistency) -> Guard {
    let previous = with_state(|s| s.mode.replace(mode)).flatten();
    Guard::new(Saved::Mode(previous))
}

/// Opens a scope that must see `must_see`; it ends when the guard drops.
pub(crate) fn enter(must_see: Vec<Entry>, kind: ScopeKind) -> Guard {
    let (depth, before) = with_state(|s| {
        if s.scopes.is_empty() {
            s.scopes.push(Scope::default());
        }
        s.scopes.push(Scope {
            must_see,
            ..Scope::default()
        });
        let before = (kind == ScopeKind::Job).then(|| (std::mem::take(&mut s.pin), s.mode.take()));
        (s.scopes.len() - 1, before)
    })
    .unwrap_or((0, None));
    Guard::new(Saved::Scope {
        depth,
        kind,
        before,
    })
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(saved) = self.saved.take() else {
            return;
        };
        let _ = with_state(|s| match saved {
            Saved::Pin(previous) => s.pin.explicit = previous,
            Saved::Mode(previous) => s.mode = previous,
            Saved::Scope {
                depth,
                kind,
                before,
            } => {
                if let Some((pin, mode)) = before {
                    s.pin = pin;
                    s.mode = mode;
                }
                if depth == 0 || s.scopes.len() <= depth {
                    return;
                }
                let scope = s
                    .scopes
                    .split_off(depth)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                if kind == ScopeKind::Request {
                    s.scopes[depth - 1].absorb(scope);
                }
            }
        });
    }
}

/// A scope layer that a future carries between its polls (feature `async`): applied to the
/// task's state for each poll and taken back after it, so that scopes of futures polled in
/// turn on one task (`join!`) never mix, whatever order they are polled in.
#[cfg_attr(not(feature = "async"), allow(dead_code))]
#[derive(Debug)]
pub(crate) enum Layer {
    /// A request scope (`with_token`): its writes join the enclosing scope when it ends.
    Request(Scope),
    /// A job (`run_job`), or a task's forked state: the whole state, swapped in per poll.
    Own(Box<State>),
    /// The explicit pin (`use_primary`).
    Pin,
    /// A mode override (`with_consistency`).
    Mode(Consistency),
}

#[cfg_attr(not(feature = "async"), allow(dead_code))]
impl Layer {
    /// A request scope that must see `must_see`.
    pub(crate) fn request(must_see: Vec<Entry>) -> Layer {
        Layer::Request(Scope {
            must_see,
            ..Scope::default()
        })
    }

    /// A job: a clean state (no pin, no mode override) whose scope must see `must_see`.
    pub(crate) fn job(must_see: Vec<Entry>) -> Layer {
        Layer::job_with(must_see, false, None)
    }

    /// A job's clean state with its explicit pin and mode.
    pub(crate) fn job_with(must_see: Vec<Entry>, pin: bool, mode: Option<Consistency>) -> Layer {
        Layer::Own(Box::new(State {
            pin: PinState {
                explicit: pin,
                writes: Vec::new(),
            },
            scopes: vec![Scope {
                must_see,
                ..Scope::default()
            }],
            mode,
        }))
    }

    /// A copy of the current state, flattened into one scope: what a spawned task carries
    /// (it must see what its spawner must see and has written, pending writes included, and
    /// keeps its pin and mode); what it writes stays its own.
    pub(crate) fn fork() -> Layer {
        let state = with_state(|s| {
            let mut flat = Scope::default();
            for scope in &s.scopes {
                for (db, table, pos) in &scope.must_see {
                    Scope::raise(&mut flat.must_see, *db, *table, pos);
                }
                for (db, table, at) in &scope.pending {
                    match flat
                        .pending
                        .iter_mut()
                        .find(|(d, t, _)| d == db && t == table)
                    {
                        Some((_, _, a)) => *a = (*a).max(*at),
                        None => flat.pending.push((*db, *table, *at)),
                    }
                }
            }
            if let Some(current) = s.scopes.last() {
                flat.last_reads = current.last_reads.clone();
            }
            State {
                pin: s.pin.clone(),
                scopes: vec![flat],
                mode: s.mode,
            }
        })
        .unwrap_or_default();
        Layer::Own(Box::new(state))
    }

    /// Runs `f` (one poll) with this layer applied to the current state, and takes the
    /// layer's part back afterwards (also when `f` panics).
    pub(crate) fn apply<R>(&mut self, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a mut Layer, Option<(usize, bool, Option<Consistency>)>);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let saved = self.1.take();
                let layer = &mut *self.0;
                let _ = with_state(|s| match (layer, saved) {
                    (Layer::Request(scope), Some((depth, _, _))) if s.scopes.len() > depth => {
                        *scope = s
                            .scopes
                            .split_off(depth)
                            .into_iter()
                            .next()
                            .unwrap_or_default();
                    }
                    (Layer::Own(own), _) => std::mem::swap(&mut **own, s),
                    (Layer::Pin, Some((_, explicit, _))) => s.pin.explicit = explicit,
                    (Layer::Mode(_), Some((_, _, mode))) => s.mode = mode,
                    _ => {}
                });
            }
        }
        let saved = with_state(|s| match &mut *self {
            Layer::Request(scope) => {
                if s.scopes.is_empty() {
                    s.scopes.push(Scope::default());
                }
                s.scopes.push(std::mem::take(scope));
                (s.scopes.len() - 1, false, None)
            }
            Layer::Own(own) => {
                std::mem::swap(&mut **own, s);
                (0, false, None)
            }
            Layer::Pin => (0, std::mem::replace(&mut s.pin.explicit, true), None),
            Layer::Mode(mode) => (0, false, s.mode.replace(*mode)),
        });
        let _restore = Restore(self, saved);
        f()
    }

    /// A forked state's work, awaited in place of the current scope's own (a blocking call),
    /// is done: what it wrote (also writes whose position is not known yet) and its pin
    /// windows join the current scope, as if the work had run here.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn join(self) {
        let Layer::Own(own) = self else {
            return self.finish();
        };
        let own = *own;
        let _ = with_state(|s| {
            if s.scopes.is_empty() {
                s.scopes.push(Scope::default());
            }
            let last = s.scopes.len() - 1;
            for scope in own.scopes {
                s.scopes[last].absorb(scope);
            }
            for (db, until) in own.pin.writes {
                match s.pin.writes.iter_mut().find(|(d, _)| *d == db) {
                    Some((_, u)) => *u = (*u).max(until),
                    None => s.pin.writes.push((db, until)),
                }
            }
        });
    }

    /// The future finished: a request scope's writes join the enclosing scope.
    pub(crate) fn finish(self) {
        if let Layer::Request(scope) = self {
            let _ = with_state(|s| {
                if s.scopes.is_empty() {
                    s.scopes.push(Scope::default());
                }
                let last = s.scopes.len() - 1;
                s.scopes[last].absorb(scope);
            });
        }
    }
}

/// Forgets the whole history of this thread (for tests).
#[cfg(test)]
pub(crate) fn reset() {
    let _ = with_state(|s| *s = State::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    // the tests speak in LSNs (0: nothing required)
    fn lsn(p: Option<Position>) -> u64 {
        p.and_then(|p| p.as_lsn()).unwrap_or(0)
    }
    fn required(db: u64, reads: Option<&[TableId]>) -> u64 {
        lsn(super::required(db, reads))
    }
    fn wrote(db: u64, tables: &[TableId], pos: u64) {
        super::wrote(db, tables, &Position::Lsn(pos))
    }
    fn resolve_pending(db: u64, pos: u64, since_ms: u64) -> bool {
        super::resolve_pending(db, &Position::Lsn(pos), since_ms)
    }
    fn snapshot() -> Vec<(u64, TableId, u64)> {
        super::snapshot()
            .into_iter()
            .map(|(d, t, p)| (d, t, lsn(Some(p))))
            .collect()
    }
    fn enter(must_see: Vec<(u64, TableId, u64)>, kind: ScopeKind) -> Guard {
        super::enter(
            must_see
                .into_iter()
                .map(|(d, t, p)| (d, t, Position::Lsn(p)))
                .collect(),
            kind,
        )
    }

    #[test]
    fn writes_and_reads_raise_what_the_thread_must_see() {
        reset();
        assert_eq!(required(1, None), 0);
        wrote(1, &[], 100);
        observed(1, 0, 1, Some(&Position::Lsn(50)));
        assert_eq!(required(1, None), 100);
        observed(1, 0, 2, Some(&Position::Lsn(150)));
        assert_eq!(required(1, None), 150);
        assert_eq!(required(2, None), 0);
        reset();
    }

    #[test]
    fn a_write_to_one_table_does_not_hold_back_reads_of_another() {
        reset();
        wrote(1, &[7], 100);
        assert_eq!(required(1, Some(&[8])), 0, "another table");
        assert_eq!(
            required(1, Some(&[7, 8])),
            100,
            "a read that joins the written table"
        );
        assert_eq!(required(1, None), 100, "tables unknown: the whole database");
        wrote(1, &[], 50);
        assert_eq!(
            required(1, Some(&[8])),
            50,
            "a write to unknown tables counts for all"
        );
        assert_eq!(snapshot(), vec![(1, 7, 100), (1, 0, 50)]);
        reset();
    }

    #[test]
    fn a_request_scope_sees_its_token_and_not_the_thread_history() {
        reset();
        wrote(1, &[], 500);
        {
            let _g = enter(vec![(1, 0, 10)], ScopeKind::Request);
            assert_eq!(
                required(1, None),
                10,
                "user B's request does not inherit user A's write"
            );
            wrote(1, &[], 20);
            assert_eq!(snapshot(), vec![(1, 0, 20)]);
        }
        assert_eq!(required(1, None), 500);
        reset();
    }

    #[test]
    fn a_request_scope_passes_its_writes_to_the_enclosing_scope() {
        reset();
        {
            let _g = enter(vec![(1, 0, 10)], ScopeKind::Request);
            wrote(1, &[], 900);
        }
        assert_eq!(required(1, None), 900, "this thread wrote it");
        reset();
    }

    #[test]
    fn a_job_scope_leaks_nothing_even_when_it_panics() {
        reset();
        let _m = set_mode(Consistency::Strong);
        let r = std::panic::catch_unwind(|| {
            let _g = enter(vec![(1, 0, 10)], ScopeKind::Job);
            assert_eq!(
                mode(),
                None,
                "a job starts without the caller's mode override"
            );
            wrote(1, &[], 900);
            write_pending(2, &[], 1);
            panic!("job failed");
        });
        assert!(r.is_err());
        assert_eq!(required(1, None), 0);
        assert!(!pending(2));
        assert_eq!(mode(), Some(Consistency::Strong));
        drop(_m);
        assert_eq!(mode(), None);
        reset();
    }

    #[test]
    fn pending_writes_clear_when_their_position_arrives() {
        reset();
        write_pending(3, &[], 1);
        assert!(pending(3));
        wrote(3, &[], 42);
        assert!(!pending(3));
        assert_eq!(required(3, None), 42);
        reset();
    }

    #[test]
    fn a_later_primary_position_covers_the_writes_that_returned_before_it() {
        reset();
        write_pending(4, &[7], 100);
        write_pending(4, &[], 200);
        assert!(
            resolve_pending(4, 5000, 150),
            "the write at 200 is still pending"
        );
        assert_eq!(required(4, Some(&[7])), 5000);
        assert_eq!(required(4, Some(&[8])), 0, "only table 7 is known so far");
        assert!(!resolve_pending(4, 6000, 201));
        assert_eq!(required(4, Some(&[8])), 6000);
        reset();
    }

    #[test]
    fn mode_overrides_nest() {
        reset();
        {
            let _a = set_mode(Consistency::Causal);
            {
                let _b = set_mode(Consistency::Eventual);
                assert_eq!(mode(), Some(Consistency::Eventual));
            }
            assert_eq!(mode(), Some(Consistency::Causal));
        }
        assert_eq!(mode(), None);
    }
}
