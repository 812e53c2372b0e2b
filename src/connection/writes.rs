//! After a write commits: the pin window and the write's replication position.

use super::{mode_in_scope, record_write, record_write_at, record_write_pending, RoutedConnection};
use crate::backend::RoutedBackend;
use crate::consistency::{scope, Consistency};
use crate::routing::TableId;

impl<C: RoutedBackend> RoutedConnection<C> {
    /// A write committed on the primary (an autocommit statement, or the `COMMIT` of a
    /// transaction that wrote). Opens the pin window; in `strong` reads the primary's
    /// position now, after the commit returned (a position read inside the transaction, or in
    /// the same batch, is before the commit record and would let a stale read through); in the
    /// other modes leaves it to learn when something compares against it (the monitor's next
    /// probe of the primary, a read's shared refresh, a [token](crate::Cluster::token)).
    /// `tables` are the tables it wrote (empty: not known).
    pub(super) fn committed_write(&mut self, tables: &[TableId]) {
        record_write(&self.db);
        if !self.db.has_positions {
            return;
        }
        match mode_in_scope(&self.db) {
            Consistency::Strong => self.capture_position(tables),
            // learned when something compares against it (the monitor's next probe of the
            // primary covers it, or a read's shared refresh; a token asks the primary), not
            // with a round trip per write: right after a write, the replicas almost never
            // have it anyway
            _ => self.write_pending(tables),
        }
    }

    /// Leaves a committed write's position to learn later.
    pub(super) fn write_pending(&mut self, tables: &[TableId]) {
        record_write_pending(&self.db, tables, self.db.replicas.clock_ms());
    }

    /// Leaves the position of a write that is still to happen (through the escape hatch, or
    /// as a cursor is read) to learn when it is needed, by asking the primary then.
    pub(super) fn write_not_yet_done(&mut self, tables: &[TableId]) {
        record_write_pending(&self.db, tables, scope::NOT_YET);
    }

    /// Reads the primary's position for the last committed write. If that fails, the write
    /// stays pending: this scope reads that database from the primary until it is known.
    pub(super) fn capture_position(&mut self, tables: &[TableId]) {
        self.db.counters.meters.position_query();
        let position = match self.primary_call(C::write_position) {
            Ok(position) => position,
            Err(e) => {
                if crate::backend::is_connection_error(&e) {
                    // reopened at the next try
                    self.primary = None;
                }
                None
            }
        };
        match position {
            Some(pos) => record_write_at(&self.db, &pos, tables),
            None => self.write_not_yet_done(tables),
        }
    }
}
