//! The thread-local pin: force this thread's reads to the primary.
//!
//! Two things pin a thread, after django-multidb-router:
//!
//! * an **explicit pin**: [`pin_this_thread`], or a [`use_primary`] scope;
//! * a **write window**: after a statement on this thread writes to a primary, reads of that
//!   primary stay on it for `pinning.seconds` (consistency mode "pin").
//!
//! [`this_thread_is_pinned`] reports either. [`unpin_this_thread`] clears both.
//!
//! Unlike django-multidb-router's `use_primary_db`, scopes nest and restore the previous
//! explicit pin exactly, also when the scope unwinds from a panic. A write inside a scope keeps
//! its write window after the scope ends: the window records a fact (this thread wrote), not a
//! wish, and dropping it would let the next read see a replica that has not caught up. The
//! same rule holds for every scope (pin, mode, token): what the thread *did* outlives the
//! scopes that only *asked* for something; a job scope starts clean and leaves nothing behind.
//!
//! Pins are per thread, so they work in worker jobs and command-line tools, not only in web
//! requests. A worker that runs many jobs on one thread wraps each in [`run_job`], so no pin
//! leaks into the next job.
//!
//! ```
//! use diesel_sharding::pin::{self, this_thread_is_pinned};
//!
//! assert!(!this_thread_is_pinned());
//! pin::use_primary(|| {
//!     assert!(this_thread_is_pinned());
//!     pin::use_primary(|| assert!(this_thread_is_pinned()));
//!     assert!(this_thread_is_pinned()); // the inner scope restored the outer one
//! });
//! assert!(!this_thread_is_pinned()); // and the outer scope restored "not pinned"
//! ```

use std::time::Instant;

use crate::consistency::scope::{self, PinState};

/// Why a thread's reads of one database go to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PinStatus {
    /// Not pinned.
    Free,
    /// `pin_this_thread` or `use_primary`.
    Explicit,
    /// The thread wrote to this database within its pin window.
    RecentWrite,
}

fn with_pin<R>(f: impl FnOnce(&mut PinState) -> R) -> Option<R> {
    scope::with_state(|s| f(&mut s.pin))
}

/// Is this thread pinned to the primary, explicitly or by a recent write?
pub fn this_thread_is_pinned() -> bool {
    with_pin(|p| {
        if p.explicit {
            return true;
        }
        if p.writes.is_empty() {
            return false;
        }
        let now = Instant::now();
        p.writes.iter().any(|(_, until)| *until > now)
    })
    .unwrap_or(false)
}

/// Pins this thread: its reads go to the primary until [`unpin_this_thread`].
pub fn pin_this_thread() {
    with_pin(|p| p.explicit = true);
}

/// Unpins this thread: clears the explicit pin and every write window, so reads go to
/// replicas again.
pub fn unpin_this_thread() {
    with_pin(|p| {
        p.explicit = false;
        p.writes.clear();
    });
}

/// Runs `f` with this thread pinned to the primary, then restores the previous explicit pin
/// exactly (also when `f` panics). Scopes nest.
pub fn use_primary<R>(f: impl FnOnce() -> R) -> R {
    let _guard = use_primary_guard();
    f()
}

/// [`use_primary`] for a future (feature `async`): the future's task is pinned for each of
/// its polls, across `.await`s and threads, and no other task is (see [`crate::task`]).
#[cfg(feature = "async")]
pub fn use_primary_async<F: std::future::Future>(future: F) -> crate::task::Scoped<F> {
    crate::task::Scoped::new(future, scope::Layer::Pin)
}

/// Pins this thread until the returned guard is dropped, which restores the previous explicit
/// pin exactly. The guard form of [`use_primary`].
pub fn use_primary_guard() -> PinGuard {
    PinGuard {
        _guard: scope::set_pin(true),
    }
}

/// Restores the previous explicit pin when dropped; see [`use_primary_guard`].
///
/// Not `Send`: it restores the state of the thread that created it.
#[must_use = "the thread is unpinned again as soon as the guard is dropped"]
#[derive(Debug)]
pub struct PinGuard {
    _guard: scope::Guard,
}

/// Runs one unit of work (a job, a command) with a clean pin and consistency state, and
/// clears whatever the work left behind when it ends (also on panic), so nothing leaks into
/// the next job on the same worker thread. The state from before the call is restored
/// afterwards.
///
/// ```
/// use diesel_sharding::pin;
///
/// pin::pin_this_thread();
/// pin::run_job(|| assert!(!pin::this_thread_is_pinned())); // a job starts clean
/// pin::run_job(|| pin::pin_this_thread());                 // a job's pin ...
/// assert!(pin::this_thread_is_pinned());                    // ... ends with the job
/// pin::unpin_this_thread();
/// ```
pub fn run_job<R>(job: impl FnOnce() -> R) -> R {
    let _scope = scope::enter(Vec::new(), scope::ScopeKind::Job);
    job()
}

/// The pin status of this thread for one database.
pub(crate) fn status(database: u64) -> PinStatus {
    with_pin(|p| {
        if p.explicit {
            return PinStatus::Explicit;
        }
        if p.writes.is_empty() {
            return PinStatus::Free;
        }
        let now = Instant::now();
        match p.writes.iter().find(|(db, _)| *db == database) {
            Some((_, until)) if *until > now => PinStatus::RecentWrite,
            _ => PinStatus::Free,
        }
    })
    .unwrap_or(PinStatus::Free)
}

/// Records that this thread wrote to `database`: its reads stay on the primary until `until`.
pub(crate) fn record_write(database: u64, until: Instant) {
    with_pin(|p| {
        let now = Instant::now();
        p.writes.retain(|(db, t)| *db != database && *t > now);
        p.writes.push((database, until));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    fn clean<R>(f: impl FnOnce() -> R) -> R {
        unpin_this_thread();
        let r = f();
        unpin_this_thread();
        r
    }

    #[test]
    fn pin_and_unpin_toggle_the_thread_state() {
        clean(|| {
            assert!(!this_thread_is_pinned());
            pin_this_thread();
            assert!(this_thread_is_pinned());
            unpin_this_thread();
            assert!(!this_thread_is_pinned());
        })
    }

    #[test]
    fn use_primary_pins_inside_and_restores_unpinned_after() {
        clean(|| {
            let inside = use_primary(this_thread_is_pinned);
            assert!(inside);
            assert!(!this_thread_is_pinned());
        })
    }

    #[test]
    fn use_primary_when_already_pinned_stays_pinned_after() {
        clean(|| {
            pin_this_thread();
            use_primary(|| assert!(this_thread_is_pinned()));
            assert!(this_thread_is_pinned());
        })
    }

    #[test]
    fn nested_use_primary_restores_unpinned_after_the_outer_scope() {
        // django-multidb-router leaves the thread pinned here (its single `old` slot).
        clean(|| {
            use_primary(|| {
                use_primary(|| assert!(this_thread_is_pinned()));
                assert!(this_thread_is_pinned());
            });
            assert!(!this_thread_is_pinned());
        })
    }

    #[test]
    fn unpin_inside_a_scope_is_undone_when_the_scope_ends() {
        clean(|| {
            pin_this_thread();
            use_primary(unpin_this_thread);
            assert!(
                this_thread_is_pinned(),
                "the scope restores the pin it found"
            );
        })
    }

    #[test]
    fn use_primary_restores_the_state_after_a_panic() {
        clean(|| {
            let result = std::panic::catch_unwind(|| {
                use_primary(|| panic!("boom"));
            });
            assert!(result.is_err(), "the panic propagates");
            assert!(!this_thread_is_pinned());
        })
    }

    #[test]
    fn guards_restore_in_reverse_order() {
        clean(|| {
            let outer = use_primary_guard();
            pin_this_thread();
            let inner = use_primary_guard();
            drop(inner);
            assert!(this_thread_is_pinned());
            drop(outer);
            assert!(!this_thread_is_pinned());
        })
    }

    #[test]
    fn pins_are_per_thread() {
        // django-multidb-router's interleaved two-thread scenario.
        let barrier = Arc::new(Barrier::new(2));
        let b1 = barrier.clone();
        let t1 = std::thread::spawn(move || {
            use_primary(|| {
                b1.wait(); // both threads inside their scopes
                b1.wait();
            });
            this_thread_is_pinned()
        });
        let b2 = barrier.clone();
        let t2 = std::thread::spawn(move || {
            pin_this_thread();
            use_primary(|| {
                b2.wait();
                b2.wait();
            });
            this_thread_is_pinned()
        });
        assert!(
            !t1.join().unwrap(),
            "thread 1 entered unpinned and leaves unpinned"
        );
        assert!(
            t2.join().unwrap(),
            "thread 2 entered pinned and leaves pinned"
        );
        assert!(!this_thread_is_pinned(), "the test thread was never pinned");
    }

    #[test]
    fn a_write_pins_reads_of_that_database_until_its_window_ends() {
        clean(|| {
            record_write(7, Instant::now() + Duration::from_millis(80));
            assert_eq!(status(7), PinStatus::RecentWrite);
            assert_eq!(status(8), PinStatus::Free, "other databases are not pinned");
            assert!(this_thread_is_pinned());
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(status(7), PinStatus::Free);
            assert!(!this_thread_is_pinned());
        })
    }

    #[test]
    fn a_write_inside_use_primary_keeps_its_window_after_the_scope() {
        clean(|| {
            use_primary(|| record_write(1, Instant::now() + Duration::from_secs(60)));
            assert_eq!(status(1), PinStatus::RecentWrite);
        })
    }

    #[test]
    fn unpin_clears_write_windows() {
        clean(|| {
            record_write(1, Instant::now() + Duration::from_secs(60));
            unpin_this_thread();
            assert_eq!(status(1), PinStatus::Free);
        })
    }

    #[test]
    fn a_job_starts_clean_and_leaves_nothing_behind() {
        clean(|| {
            record_write(3, Instant::now() + Duration::from_secs(60));
            run_job(|| {
                assert_eq!(status(3), PinStatus::Free, "the job does not inherit a pin");
                pin_this_thread();
                record_write(4, Instant::now() + Duration::from_secs(60));
            });
            assert_eq!(
                status(4),
                PinStatus::Free,
                "the job's write window ended with it"
            );
            assert_eq!(
                status(3),
                PinStatus::RecentWrite,
                "the state from before is back"
            );
            run_job(|| assert!(!this_thread_is_pinned(), "the next job starts clean"));
        })
    }

    #[test]
    fn a_panicking_job_leaves_nothing_behind() {
        clean(|| {
            let r = std::panic::catch_unwind(|| {
                run_job(|| {
                    pin_this_thread();
                    panic!("job failed");
                })
            });
            assert!(r.is_err());
            assert!(!this_thread_is_pinned());
        })
    }
}
