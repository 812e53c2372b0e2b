//! One record of a routed connection's transaction and session state.
//!
//! Every entry point (`load`, `execute`, `batch_execute`, the escape hatches, migrations)
//! reports what its statements did here, in the order they ran, and reads from here whether a
//! transaction is open and whether the session must stay on the primary. What a statement did
//! is decided from the statement itself ([`StatementInfo`]), never from the method it came
//! through: `BEGIN` is a `BEGIN` in `batch_execute`, in `sql_query(..).execute` and after a
//! comment alike.

use crate::routing::{SessionChange, StatementInfo, TableId, TxControl};

/// Why the session stays on the primary until it goes back to the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Sticky {
    /// `stick_to_primary()`, migrations.
    pub(super) explicit: bool,
    /// Settings `RESET ALL` restores (`SET`, `set_config`).
    pub(super) settings: bool,
    /// Anything else only a new session clears (temporary tables, prepared statements, roles,
    /// `LISTEN`, session locks, pragmas, the escape hatch `primary()`, text the router could
    /// not read).
    pub(super) other: bool,
}

impl Sticky {
    pub(super) fn any(self) -> bool {
        self.explicit || self.settings || self.other
    }
}

/// What one statement, or a batch, did that the router must act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Outcome {
    /// A write committed (an autocommit write, or the commit of a transaction that wrote):
    /// the tables it wrote, empty when not known.
    pub(super) committed: Option<Vec<TableId>>,
}

/// A routed connection's transaction and session state for the current checkout.
#[derive(Debug, Default)]
pub(super) struct SessionState {
    /// A transaction is open on the primary, as the SQL sent so far shows (Diesel's
    /// transaction manager sends its `BEGIN` and `COMMIT` through `batch_execute` too).
    tx_open: bool,
    /// The open transaction wrote: its commit is a write.
    tx_wrote: bool,
    /// Tables the open transaction wrote ...
    tx_tables: Vec<TableId>,
    /// ... or it wrote where the tables are not known.
    tx_tables_unknown: bool,
    pub(super) sticky: Sticky,
    /// The physical primary was handed out (`primary()`): its session is reset at check-in.
    primary_handed_out: bool,
    /// Session state that does not change what reads see but is reset at check-in
    /// (session locks, `LISTEN`, prepared statements, configured write functions).
    held: bool,
    /// Replicas whose physical connection was handed out (`replica()`,
    /// `read_only_transaction`): reset at check-in.
    pub(super) replicas_handed_out: Vec<usize>,
    /// The state cannot be known (a batch with transaction control failed halfway): the
    /// connection is discarded at check-in.
    pub(super) unknown: bool,
    /// MySQL's autocommit is off: a transaction is always open, and each `COMMIT` or
    /// `ROLLBACK` opens the next one.
    chained: bool,
    /// The open read-only transaction runs on this replica (a `BEGIN .. READ ONLY` that the
    /// route decision sent there); kept until the replica's transaction manager is done.
    pub(super) tx_replica: Option<usize>,
}

impl SessionState {
    /// Is a transaction open on the primary, as far as the SQL shows?
    pub(super) fn tx_open(&self) -> bool {
        self.tx_open
    }

    /// Must the primary's session be reset before the next checkout?
    pub(super) fn primary_needs_reset(&self) -> bool {
        self.sticky.settings || self.sticky.other || self.held || self.primary_handed_out
    }

    /// Does the session hold something other sessions wait for (session advisory locks,
    /// `LISTEN`, what a configured write function may have taken)?
    pub(super) fn holds_for_others(&self) -> bool {
        self.held
    }

    /// The escape hatch `primary()` handed out the physical primary: anything may happen on
    /// it, so the session stays on the primary and is reset at check-in.
    pub(super) fn primary_handed_out(&mut self) {
        self.primary_handed_out = true;
        self.sticky.other = true;
    }

    /// Was the physical connection of a replica handed out during this checkout?
    #[cfg_attr(
        not(all(
            feature = "async",
            any(feature = "postgres", feature = "mysql"),
            any(feature = "bb8", feature = "deadpool")
        )),
        allow(dead_code)
    )]
    pub(super) fn replica_handed_out_any(&self) -> bool {
        !self.replicas_handed_out.is_empty()
    }

    /// The physical connection of replica `i` was handed out.
    pub(super) fn replica_handed_out(&mut self, i: usize) {
        if !self.replicas_handed_out.contains(&i) {
            self.replicas_handed_out.push(i);
        }
    }

    /// A write outside the routed path (`primary()`, `update_and_fetch`) inside a transaction.
    pub(super) fn note_transaction_write(&mut self, tables: &[TableId]) {
        self.tx_wrote = true;
        if tables.is_empty() {
            self.tx_tables_unknown = true;
        } else {
            self.tx_tables.extend_from_slice(tables);
        }
    }

    /// Forgets the transaction (it ended).
    fn end_transaction(&mut self) -> Option<Vec<TableId>> {
        self.tx_open = false;
        let wrote = std::mem::take(&mut self.tx_wrote);
        let tables = std::mem::take(&mut self.tx_tables);
        let unknown = std::mem::take(&mut self.tx_tables_unknown);
        wrote.then(|| if unknown { Vec::new() } else { tables })
    }

    /// Applies what `statements` did, in order. `written` are the tables the text writes when
    /// known (a single statement), empty otherwise. `ok`: the text ran without error.
    /// `failed_commit_ends`: the backend ends a transaction whose `COMMIT` fails
    /// (PostgreSQL); SQLite keeps it open.
    pub(super) fn apply(
        &mut self,
        statements: &[StatementInfo],
        written: &[TableId],
        ok: bool,
        failed_commit_ends: bool,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        if let [one] = statements {
            // the common case, one plain statement: no loop, no bookkeeping
            if ok && one.tx.is_none() && one.session == SessionChange::None {
                if one.writes {
                    if self.tx_open {
                        self.note_transaction_write(written);
                    } else {
                        outcome.committed = Some(written.to_vec());
                    }
                }
                return outcome;
            }
        }
        if !ok {
            if let [one] = statements {
                // One statement that failed changed nothing, except a COMMIT that ends the
                // transaction anyway (rolled back).
                if matches!(one.tx, Some(TxControl::Commit | TxControl::CommitAndChain))
                    && failed_commit_ends
                {
                    self.end_transaction();
                    if self.chained || one.tx == Some(TxControl::CommitAndChain) {
                        self.tx_open = true;
                    }
                }
                return outcome;
            }
            if statements.is_empty() {
                return outcome;
            }
            // Several statements, and one failed: which ran is unknown. Assume the worst:
            // each write may have committed, and the session may be anywhere.
            if statements.iter().any(|s| s.writes || s.tx.is_some()) {
                outcome.committed = Some(Vec::new());
            }
            if statements.iter().any(|s| s.tx.is_some()) {
                self.tx_open = true;
                self.unknown = true;
            }
            self.sticky.other = true;
            return outcome;
        }
        // what committed: tables, or (`unknown`) somewhere not known
        let mut committed = false;
        let mut tables_committed: Vec<TableId> = Vec::new();
        let mut unknown = false;
        let mut commit = |tables: Option<Vec<TableId>>| {
            if let Some(tables) = tables {
                committed = true;
                if tables.is_empty() {
                    unknown = true;
                } else {
                    tables_committed.extend(tables);
                }
            }
        };
        let single = statements.len() == 1;
        for s in statements {
            // with autocommit off, each COMMIT and ROLLBACK opens the next transaction
            let tx = match s.tx {
                Some(TxControl::Commit) if self.chained => Some(TxControl::CommitAndChain),
                Some(TxControl::Rollback) if self.chained => Some(TxControl::RollbackAndChain),
                other => other,
            };
            match tx {
                Some(TxControl::Begin | TxControl::BeginReadOnly) => {
                    if !self.tx_open {
                        self.end_transaction();
                        self.tx_open = true;
                    }
                }
                Some(TxControl::Commit) => {
                    let tables = self.end_transaction();
                    commit(tables);
                }
                Some(TxControl::CommitAndChain) => {
                    let tables = self.end_transaction();
                    commit(tables);
                    self.tx_open = true;
                }
                Some(TxControl::Rollback) => {
                    self.end_transaction();
                }
                Some(TxControl::RollbackAndChain) => {
                    self.end_transaction();
                    self.tx_open = true;
                }
                Some(TxControl::AutocommitOff) => {
                    if !self.tx_open {
                        self.end_transaction();
                        self.tx_open = true;
                    }
                    self.chained = true;
                }
                Some(TxControl::AutocommitOn) => {
                    // MySQL commits the open transaction when autocommit goes back on
                    if self.tx_open {
                        let tables = self.end_transaction();
                        commit(tables);
                    }
                    self.chained = false;
                }
                Some(TxControl::Savepoint) | None => {}
            }
            if s.writes {
                let tables: &[TableId] = if single { written } else { &[] };
                if self.tx_open {
                    self.note_transaction_write(tables);
                } else {
                    commit(Some(tables.to_vec()));
                }
            }
            match s.session {
                SessionChange::None => {}
                SessionChange::Settings => self.sticky.settings = true,
                SessionChange::Other => self.sticky.other = true,
                SessionChange::Held => self.held = true,
                SessionChange::ResetAll => self.sticky.settings = false,
                SessionChange::DiscardAll => {
                    self.sticky.settings = false;
                    self.sticky.other = false;
                    self.held = false;
                }
            }
        }
        if committed {
            outcome.committed = Some(if unknown {
                Vec::new()
            } else {
                tables_committed
            });
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Classifier;

    fn run(state: &mut SessionState, sql: &str, ok: bool) -> Outcome {
        let mut statements = Vec::new();
        Classifier::new().analyze(sql, |s| statements.push(s));
        state.apply(&statements, &[], ok, true)
    }

    fn run_mysql(state: &mut SessionState, sql: &str) -> Outcome {
        let mut statements = Vec::new();
        Classifier::new()
            .mysql_dialect(true)
            .analyze(sql, |s| statements.push(s));
        state.apply(&statements, &[], true, true)
    }

    #[test]
    fn with_mysql_autocommit_off_writes_commit_at_commit_and_a_transaction_is_always_open() {
        let mut s = SessionState::default();
        assert_eq!(run_mysql(&mut s, "SET autocommit = 0").committed, None);
        assert!(
            s.tx_open() && s.sticky.other,
            "a transaction is open, on the primary"
        );
        assert_eq!(
            run_mysql(&mut s, "INSERT INTO t VALUES (1)").committed,
            None,
            "not committed yet: no position may be taken for it"
        );
        assert_eq!(run_mysql(&mut s, "COMMIT").committed, Some(Vec::new()));
        assert!(s.tx_open(), "the next transaction opens at once");
        assert_eq!(
            run_mysql(&mut s, "COMMIT").committed,
            None,
            "nothing written"
        );
        run_mysql(&mut s, "UPDATE t SET v = 2");
        assert_eq!(run_mysql(&mut s, "ROLLBACK").committed, None);
        assert!(s.tx_open());
        run_mysql(&mut s, "DELETE FROM t");
        assert_eq!(
            run_mysql(&mut s, "SET autocommit = 1").committed,
            Some(Vec::new()),
            "turning autocommit on commits the open transaction"
        );
        assert!(!s.tx_open());
        assert_eq!(
            run_mysql(&mut s, "INSERT INTO t VALUES (2)").committed,
            Some(Vec::new()),
            "statements commit as they run again"
        );
        // a value the router cannot read counts as off
        let mut s = SessionState::default();
        run_mysql(&mut s, "SET @@session.autocommit = @x");
        assert!(s.tx_open());
    }

    #[test]
    fn a_begin_after_a_comment_opens_a_transaction_and_its_commit_is_the_write() {
        let mut s = SessionState::default();
        assert_eq!(run(&mut s, "/* app */ BEGIN", true), Outcome::default());
        assert!(s.tx_open());
        assert_eq!(
            run(&mut s, "INSERT INTO t VALUES (1)", true).committed,
            None
        );
        assert!(s.tx_open());
        assert_eq!(run(&mut s, "COMMIT", true).committed, Some(Vec::new()));
        assert!(!s.tx_open());
    }

    #[test]
    fn a_whole_transaction_in_one_batch_is_one_committed_write() {
        let mut s = SessionState::default();
        let out = run(&mut s, "BEGIN; INSERT INTO t VALUES (1); COMMIT;", true);
        assert_eq!(out.committed, Some(Vec::new()));
        assert!(!s.tx_open());
        let out = run(&mut s, "BEGIN; INSERT INTO t VALUES (1)", true);
        assert_eq!(out.committed, None, "not committed yet");
        assert!(s.tx_open());
        assert_eq!(
            run(&mut s, "ROLLBACK", true).committed,
            None,
            "rolled back: no write"
        );
    }

    #[test]
    fn a_read_only_transaction_commits_no_write() {
        let mut s = SessionState::default();
        run(&mut s, "BEGIN", true);
        run(&mut s, "SELECT 1", true);
        assert_eq!(run(&mut s, "COMMIT", true).committed, None);
    }

    #[test]
    fn a_failed_commit_ends_the_transaction_where_the_backend_ends_it() {
        let mut s = SessionState::default();
        run(&mut s, "BEGIN", true);
        run(&mut s, "INSERT INTO t VALUES (1)", true);
        assert_eq!(run(&mut s, "COMMIT", false), Outcome::default());
        assert!(!s.tx_open(), "PostgreSQL rolled it back");

        let mut s = SessionState::default();
        let mut statements = Vec::new();
        Classifier::new().analyze("BEGIN", |x| statements.push(x));
        s.apply(&statements, &[], true, false);
        statements.clear();
        Classifier::new().analyze("COMMIT", |x| statements.push(x));
        s.apply(&statements, &[], false, false);
        assert!(s.tx_open(), "SQLite keeps it open");
    }

    #[test]
    fn a_failed_batch_assumes_the_worst() {
        let mut s = SessionState::default();
        let out = run(&mut s, "BEGIN; INSERT INTO t VALUES (1); COMMIT", false);
        assert_eq!(out.committed, Some(Vec::new()));
        assert!(s.tx_open() && s.unknown && s.sticky.other);
    }

    #[test]
    fn session_statements_stick_and_reset_all_or_discard_all_release() {
        let mut s = SessionState::default();
        run(&mut s, "SET search_path TO app", true);
        assert!(s.sticky.settings && s.sticky.any());
        run(&mut s, "RESET ALL", true);
        assert!(!s.sticky.any());
        run(&mut s, "CREATE TEMP TABLE t (id int)", true);
        run(&mut s, "RESET ALL", true);
        assert!(s.sticky.other, "RESET ALL does not drop temporary tables");
        run(&mut s, "DISCARD ALL", true);
        assert!(!s.sticky.any());
        run(
            &mut s,
            "SELECT set_config('application_name', 'x', false)",
            true,
        );
        assert!(s.sticky.settings);
    }

    #[test]
    fn set_local_and_failed_session_statements_change_nothing() {
        let mut s = SessionState::default();
        run(&mut s, "BEGIN", true);
        run(&mut s, "SET LOCAL statement_timeout = 5", true);
        assert!(!s.sticky.any());
        run(&mut s, "SET search_path TO nowhere", false);
        assert!(!s.sticky.any());
    }

    #[test]
    fn session_statements_are_not_writes() {
        let mut s = SessionState::default();
        run(&mut s, "LISTEN ch", true);
        assert!(
            !s.sticky.any() && s.primary_needs_reset(),
            "held, not sticky"
        );
        for sql in [
            "SET x = 1",
            "LISTEN ch",
            "PREPARE p AS SELECT 1",
            "CREATE TEMP TABLE t (id int)",
        ] {
            assert_eq!(run(&mut s, sql, true).committed, None, "{sql}");
        }
        assert_eq!(
            run(&mut s, "CREATE TABLE t (id int)", true).committed,
            Some(Vec::new())
        );
    }
}
