//! Routing: which physical connection runs a statement, and why.
//!
//! The decision is a pure function of a few facts (is a transaction open, what kind of
//! statement is it, is the thread pinned, are there replicas), so it is tested without any
//! database. The rules, in order:
//!
//! 1. inside a transaction: the primary (`transaction`);
//! 2. a session stuck to the primary (migrations): the primary (`session`);
//! 3. writes, DDL, unclassifiable SQL: the primary (`write`, `unclassified`); locking reads
//!    (`locking`); reads that call write or session functions (`write_function`);
//! 4. no replicas, or `read_strategy = "primary_only"`: the primary (`primary_only`);
//! 5. a pinned thread: the primary (`pinned` for `pin_this_thread`/`use_primary`; in mode
//!    `pin`, `recent_write` within `pinning.seconds` of this thread's last write);
//! 6. a read that must see a committed write whose position is not known yet: the primary
//!    (`behind`);
//! 7. otherwise a healthy replica chosen by the read strategy (`replica`), or the primary when
//!    none has caught up or can be reached (`behind`, `fallback`).
//!
//! A statement's way through the router: classify (cached per query type) → gather the facts
//! (session, transaction, pin, mode, pending writes) → [`decide`] → run on the chosen server
//! → record (session state, write positions, counters).

mod cache;
mod classify;
mod functions;
mod lexer;
mod replicas;
mod statement;
mod tables;

use std::fmt;

pub(crate) use self::cache::{Classified, KindCache};
pub(crate) use self::classify::{Classifier, StatementKind};
pub(crate) use self::classify::{SessionChange, StatementInfo, TxControl};
pub(crate) use self::replicas::{
    CheckTurn, Limits, ReplicaSet, SharedCheck, Usability, REFRESH_GAP_MS, WAITING_REFRESH_GAP_MS,
};
#[cfg(all(test, feature = "sqlite"))]
pub(crate) use self::tables::interned_count;
pub(crate) use self::tables::{lookup, table_name, tables, TableId, TableUse};

use crate::pin::PinStatus;

/// Why a statement ran where it ran. Reported in tracing events and [`Stats`](crate::Stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RouteReason {
    /// A write (`execute`, `batch_execute`, `INSERT`/`UPDATE`/`DELETE` also with `RETURNING`,
    /// DDL): the primary.
    Write,
    /// A statement inside a transaction: the primary.
    Transaction,
    /// A locking read (`FOR UPDATE`, `FOR SHARE`, ...): the primary.
    Locking,
    /// A read calling a write or session function (`nextval`, advisory locks, ...): the primary.
    WriteFunction,
    /// SQL the classifier could not decide: the primary.
    Unclassified,
    /// The session is stuck to the primary (migrations): the primary.
    Session,
    /// The database has no replicas or reads `primary_only`: the primary.
    PrimaryOnly,
    /// The thread is pinned (`pin_this_thread`, `use_primary`): the primary.
    Pinned,
    /// The thread wrote to this database within `pinning.seconds`: the primary.
    RecentWrite,
    /// No replica could be reached: the primary.
    Fallback,
    /// Every reachable replica is behind by more than both lag limits: the primary.
    Lagging,
    /// No replica has replayed what the read must see (its writes, its token, ...), also
    /// after waiting `replica_wait`: the primary.
    Behind,
    /// A plain read: a replica.
    Replica,
}

impl RouteReason {
    /// Every reason, in declaration order.
    pub const ALL: [RouteReason; 13] = [
        RouteReason::Write,
        RouteReason::Transaction,
        RouteReason::Locking,
        RouteReason::WriteFunction,
        RouteReason::Unclassified,
        RouteReason::Session,
        RouteReason::PrimaryOnly,
        RouteReason::Pinned,
        RouteReason::RecentWrite,
        RouteReason::Fallback,
        RouteReason::Lagging,
        RouteReason::Behind,
        RouteReason::Replica,
    ];

    /// The reason's name in tracing events (`write`, `pinned`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Write => "write",
            RouteReason::Transaction => "transaction",
            RouteReason::Locking => "locking",
            RouteReason::WriteFunction => "write_function",
            RouteReason::Unclassified => "unclassified",
            RouteReason::Session => "session",
            RouteReason::PrimaryOnly => "primary_only",
            RouteReason::Pinned => "pinned",
            RouteReason::RecentWrite => "recent_write",
            RouteReason::Fallback => "fallback",
            RouteReason::Lagging => "lagging",
            RouteReason::Behind => "behind",
            RouteReason::Replica => "replica",
        }
    }

    /// Did the statement run on a replica?
    pub fn is_replica(self) -> bool {
        self == RouteReason::Replica
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RouteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts a read-or-write decision depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub(crate) in_transaction: bool,
    pub(crate) session_on_primary: bool,
    pub(crate) kind: StatementKind,
    pub(crate) has_replicas: bool,
    pub(crate) pin: PinStatus,
    /// The consistency mode in force: a write's time window pins only in mode `pin`.
    pub(crate) mode: crate::Consistency,
    /// A committed write this read must see is not known to be on any replica yet.
    pub(crate) behind: bool,
}

/// The decision before a replica is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Run on the primary, for this reason.
    Primary(RouteReason),
    /// Run on a replica if one can be reached, else the primary (`Fallback`).
    Replica,
}

/// The routing rules (see the module docs).
pub(crate) fn decide(f: Facts) -> Decision {
    if f.in_transaction {
        return Decision::Primary(RouteReason::Transaction);
    }
    if f.session_on_primary {
        return Decision::Primary(RouteReason::Session);
    }
    match f.kind {
        StatementKind::Read => {}
        StatementKind::Locking => return Decision::Primary(RouteReason::Locking),
        StatementKind::WriteFunction => return Decision::Primary(RouteReason::WriteFunction),
        StatementKind::Write => return Decision::Primary(RouteReason::Write),
        _ => return Decision::Primary(RouteReason::Unclassified),
    }
    if !f.has_replicas {
        return Decision::Primary(RouteReason::PrimaryOnly);
    }
    match f.pin {
        PinStatus::Explicit => return Decision::Primary(RouteReason::Pinned),
        // the time window is mode `pin`'s; the other modes go by positions
        PinStatus::RecentWrite if f.mode == crate::Consistency::Pin => {
            return Decision::Primary(RouteReason::RecentWrite)
        }
        _ => {}
    }
    if f.behind {
        return Decision::Primary(RouteReason::Behind);
    }
    Decision::Replica
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: StatementKind) -> Facts {
        Facts {
            in_transaction: false,
            session_on_primary: false,
            kind,
            has_replicas: true,
            pin: PinStatus::Free,
            mode: crate::Consistency::Pin,
            behind: false,
        }
    }

    #[test]
    fn a_write_window_pins_only_in_pin_mode() {
        use crate::Consistency as C;
        for (mode, expected) in [
            (C::Pin, Decision::Primary(RouteReason::RecentWrite)),
            (C::ReadYourWrites, Decision::Replica),
            (C::Causal, Decision::Replica),
            (C::Strong, Decision::Replica),
            (C::Eventual, Decision::Replica),
        ] {
            let f = Facts {
                pin: PinStatus::RecentWrite,
                mode,
                ..facts(StatementKind::Read)
            };
            assert_eq!(decide(f), expected, "{mode}");
        }
    }

    #[test]
    fn a_read_behind_a_write_of_unknown_position_goes_to_the_primary() {
        let f = Facts {
            behind: true,
            mode: crate::Consistency::ReadYourWrites,
            ..facts(StatementKind::Read)
        };
        assert_eq!(decide(f), Decision::Primary(RouteReason::Behind));
        // the stronger reasons come first
        let f = Facts {
            pin: PinStatus::Explicit,
            ..f
        };
        assert_eq!(decide(f), Decision::Primary(RouteReason::Pinned));
        let f = Facts {
            in_transaction: true,
            ..f
        };
        assert_eq!(decide(f), Decision::Primary(RouteReason::Transaction));
    }

    #[test]
    fn a_plain_read_goes_to_a_replica() {
        assert_eq!(decide(facts(StatementKind::Read)), Decision::Replica);
    }

    #[test]
    fn writes_go_to_the_primary() {
        assert_eq!(
            decide(facts(StatementKind::Write)),
            Decision::Primary(RouteReason::Write)
        );
    }

    #[test]
    fn locking_reads_go_to_the_primary() {
        assert_eq!(
            decide(facts(StatementKind::Locking)),
            Decision::Primary(RouteReason::Locking)
        );
    }

    #[test]
    fn reads_calling_write_functions_go_to_the_primary() {
        assert_eq!(
            decide(facts(StatementKind::WriteFunction)),
            Decision::Primary(RouteReason::WriteFunction)
        );
    }

    #[test]
    fn unclassifiable_sql_goes_to_the_primary() {
        assert_eq!(
            decide(facts(StatementKind::Unknown)),
            Decision::Primary(RouteReason::Unclassified)
        );
    }

    #[test]
    fn everything_inside_a_transaction_goes_to_the_primary() {
        let f = Facts {
            in_transaction: true,
            ..facts(StatementKind::Read)
        };
        assert_eq!(decide(f), Decision::Primary(RouteReason::Transaction));
        let f = Facts {
            in_transaction: true,
            pin: PinStatus::Explicit,
            ..facts(StatementKind::Write)
        };
        assert_eq!(decide(f), Decision::Primary(RouteReason::Transaction));
    }

    #[test]
    fn a_session_stuck_to_the_primary_reads_from_it() {
        let f = Facts {
            session_on_primary: true,
            ..facts(StatementKind::Read)
        };
        assert_eq!(decide(f), Decision::Primary(RouteReason::Session));
    }

    #[test]
    fn a_database_without_replicas_reads_from_the_primary() {
        let f = Facts {
            has_replicas: false,
            ..facts(StatementKind::Read)
        };
        assert_eq!(decide(f), Decision::Primary(RouteReason::PrimaryOnly));
    }

    #[test]
    fn a_pinned_thread_reads_from_the_primary() {
        let f = Facts {
            pin: PinStatus::Explicit,
            ..facts(StatementKind::Read)
        };
        assert_eq!(decide(f), Decision::Primary(RouteReason::Pinned));
        let f = Facts {
            pin: PinStatus::RecentWrite,
            ..facts(StatementKind::Read)
        };
        assert_eq!(decide(f), Decision::Primary(RouteReason::RecentWrite));
    }

    #[test]
    fn a_write_is_reported_as_a_write_even_when_pinned() {
        let f = Facts {
            pin: PinStatus::Explicit,
            ..facts(StatementKind::Write)
        };
        assert_eq!(decide(f), Decision::Primary(RouteReason::Write));
    }

    #[test]
    fn reasons_have_stable_names_and_indices() {
        for (i, r) in RouteReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(r.to_string(), r.as_str());
        }
        assert!(RouteReason::Replica.is_replica());
        assert!(!RouteReason::Fallback.is_replica());
    }
}
