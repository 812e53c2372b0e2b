//! A physical connection and its watch: the socket the watchdog may shut when a call on it
//! runs past its bound. They open and close together, so a watch never outlives its socket.

use std::ops::{Deref, DerefMut};

use super::watchdog::Watched;

/// A physical connection (`PgConnection`, `SqliteConnection`) with its watch.
#[derive(Debug)]
pub(crate) struct Physical<C> {
    pub(crate) conn: C,
    pub(crate) watch: Watched,
    /// For a replica: its generation when this connection opened. The replica set bumps
    /// it when the server goes down, hangs or is replaced; an older connection is reopened.
    pub(crate) generation: u64,
    /// For a replica: the server incarnation this connection talks to, once a probe told
    /// (0: not yet). It cannot change while the connection lives, so later checks of the
    /// replay position need not ask again.
    pub(crate) identity: u64,
}

impl<C> Deref for Physical<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> DerefMut for Physical<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}
