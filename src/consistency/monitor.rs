//! The replica monitor: one background thread per server keeps each replica's replay position
//! and lag (and the primary's position, for the byte lag) fresh in the shared state.
//!
//! A thread per server, so that a replica that hangs (a frozen process answers no query, and
//! libpq has no read timeout) stalls only its own probe: its last successful probe ages, and
//! the router stops using it once that is older than twice the interval plus the connect
//! timeout. The threads end soon after the cluster is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::Rng;

use crate::backend::RoutedBackend;
use crate::database::Database;

/// How long dropping a monitor waits for its threads: a probe or connect in flight ends
/// within the connect timeout (2 s by default), the sleep between probes at once.
const JOIN_BOUND: Duration = Duration::from_millis(2500);

/// Stops the monitor's threads when dropped, and waits (a bounded time) until they have
/// ended, so that a process can exit right after dropping its cluster.
#[derive(Debug)]
pub(crate) struct Monitor {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = std::time::Instant::now() + JOIN_BOUND;
        for handle in self.threads.drain(..) {
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::warn!(
                    target: "diesel_sharding::monitor",
                    "a replica monitor thread is still inside a database call: left to end by itself"
                );
            }
        }
    }
}

/// Which server a probe thread watches.
#[derive(Debug, Clone, Copy)]
enum Target {
    Primary,
    Replica(usize),
}

impl Monitor {
    /// Starts probing the primary and every replica of `db` every `interval` (with jitter).
    pub(crate) fn spawn<C: RoutedBackend>(db: &Arc<Database>, interval: Duration) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let targets =
            std::iter::once(Target::Primary).chain((0..db.replicas.len()).map(Target::Replica));
        for target in targets {
            let weak = Arc::downgrade(db);
            let stop = stop.clone();
            let name = format!("diesel-sharding-monitor-{}", db.name);
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn(move || probe_loop::<C>(weak, target, interval, stop));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    tracing::warn!(target: "diesel_sharding::monitor", error = %e, "cannot start a replica monitor thread")
                }
            }
        }
        Monitor { stop, threads }
    }
}

fn probe_loop<C: RoutedBackend>(
    db: Weak<Database>,
    target: Target,
    interval: Duration,
    stop: Arc<AtomicBool>,
) {
    let mut conn: Option<(C, crate::connection::watchdog::Watched)> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(database) = db.upgrade() else { return };
        let url = match target {
            Target::Primary => database.url.expose().to_owned(),
            Target::Replica(i) => match database.replicas.get(i) {
                Some(r) => r.url.expose().to_owned(),
                None => return,
            },
        };
        if conn.is_none() {
            conn = C::establish(&C::with_connect_timeout(&url, database.connect_timeout))
                .ok()
                .map(|mut c| {
                    let watch = crate::connection::watch_of(&mut c, None);
                    (c, watch)
                });
            if conn.is_none() {
                if let Target::Replica(i) = target {
                    // a server that takes no connection within connect_timeout answers nothing
                    database.replicas.set_hung(i, true);
                }
            }
        }
        if let Some((c, watch)) = conn.as_mut() {
            // a probe unanswered within replica_timeout: the server counts as hung
            let started_ms = database.replicas.clock_ms();
            let call = watch.call(Some(database.replica_timeout));
            let ok = match target {
                Target::Primary => match C::probe_primary(c) {
                    Ok(Some(pos)) => {
                        // covers every write that returned before the probe started
                        database.primary_probed(started_ms, pos);
                        true
                    }
                    Ok(None) => true,
                    Err(_) => false,
                },
                Target::Replica(i) => match C::probe_replica(c) {
                    Ok(Some(probe)) => {
                        database
                            .replicas
                            .probed(i, probe.replay, probe.lag, probe.identity);
                        true
                    }
                    Ok(None) => true,
                    Err(_) => false,
                },
            };
            drop(call);
            if let Target::Replica(i) = target {
                database.replicas.set_hung(i, !ok && watch.was_cut());
            }
            if !ok {
                conn = None;
            }
        }
        drop(database);
        // next probe between 0.75 and 1.25 intervals, so that processes do not probe in step
        let jitter = rand::thread_rng().gen_range(0.75..1.25);
        let mut left = interval.mul_f64(jitter);
        while !left.is_zero() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let step = left.min(Duration::from_millis(10));
            std::thread::sleep(step);
            left -= step;
        }
    }
}
