//! One instrumentation for all the physical connections behind a routed connection.
//!
//! `Connection::set_instrumentation` hands over one value, but a routed connection owns a
//! primary and replicas. The value goes into a shared box, and every physical connection gets
//! a handle to it when it opens (or at once, when it is already open).

use std::sync::{Arc, Mutex};

use diesel::connection::{Connection, Instrumentation, InstrumentationEvent};

/// A shared, swappable instrumentation. Installed into physical connections only once the
/// user set one, so the default path takes no lock per query.
#[derive(Clone, Default)]
pub(super) struct SharedInstrumentation {
    inner: Arc<Mutex<Option<Box<dyn Instrumentation>>>>,
    set: bool,
}

impl SharedInstrumentation {
    /// Replaces the user's instrumentation.
    pub(super) fn set(&mut self, instrumentation: impl Instrumentation) {
        if let Ok(mut slot) = self.inner.lock() {
            *slot = Some(Box::new(instrumentation));
        }
        self.set = true;
    }

    /// Gives a physical connection a handle, if the user set an instrumentation.
    pub(super) fn install<C: Connection>(&self, conn: &mut C) {
        if self.set {
            conn.set_instrumentation(self.clone());
        }
    }
}

impl Instrumentation for SharedInstrumentation {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let Ok(mut slot) = self.inner.lock() {
            if let Some(i) = slot.as_mut() {
                i.on_connection_event(event);
            }
        }
    }
}

impl std::fmt::Debug for SharedInstrumentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedInstrumentation")
            .field("set", &self.set)
            .finish()
    }
}
