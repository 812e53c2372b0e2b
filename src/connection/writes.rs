//! After a write commits: the pin window and the write's replication position.

use super::RoutedConnection;
use crate::backend::RoutedBackend;
use crate::consistency::scope;
use crate::routing::TableId;

impl<C: RoutedBackend> RoutedConnection<C> {
    /// A write committed on the primary (an autocommit statement, or the `COMMIT` of a
    /// transaction that wrote). Opens the pin window and, in the modes that route by
    /// positions, reads the primary's position now, after the commit returned: a position
    /// read inside the transaction, or in the same batch, is before the commit record and
    /// would let a stale read through. In `pin` and `eventual` the position is left to learn
    /// when a [token](crate::Cluster::token) is taken. `tables` are the tables it wrote
    /// (empty: not known).
    pub(super) fn committed_write(&mut self, tables: &[TableId]) {
        self.db.wrote();
        if !self.db.has_positions {
            return;
        }
        if self.db.mode().uses_positions() {
            self.capture_position(tables);
        } else {
            scope::write_pending(self.db.id);
        }
    }

    /// Reads the primary's position for the last committed write. If that fails, the write
    /// stays pending: this scope reads that database from the primary until it is known.
    pub(super) fn capture_position(&mut self, tables: &[TableId]) {
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
            Some(pos) => self.db.wrote_at(pos, tables),
            None => scope::write_pending(self.db.id),
        }
    }
}
