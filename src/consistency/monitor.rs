//! The replica monitor: keeps each replica's replay position and lag, and the primary's
//! position, fresh in the shared state.
//!
//! One monitor per cluster, with a few worker threads ([`WORKERS`]) whatever the number of
//! servers: each server is a probe on a queue ordered by when it is due (every
//! `monitor_interval`, with jitter). A database's servers join the queue when the process first
//! takes a connection from its pool, so a process that uses a few shards of thousands probes
//! only those. Workers sleep on a condition variable until the next probe is due: an idle
//! cluster wakes nobody up. A probe has the deadline `replica_timeout` (the watchdog cuts it):
//! a replica that misses it is hung, and a hung server holds a worker at most that long. The
//! workers are stopped and joined when the cluster is dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::backend::RoutedBackend;
use crate::connection::watchdog::Watched;
use crate::primary::PrimaryState;

/// Worker threads of one cluster's monitor, at most.
pub(crate) const WORKERS: usize = 4;

/// How long dropping a monitor waits for its workers: a probe or connect in flight ends
/// within the connect timeout (2 s by default); waiting workers at once.
const JOIN_BOUND: Duration = Duration::from_millis(2500);

/// One server to probe, with its own connection.
trait Probe: Send {
    /// Probes once; `false` when its database is gone.
    fn probe(&mut self) -> bool;
    /// How long until the next probe.
    fn interval(&self) -> Duration;
}

/// Which server a probe watches.
#[derive(Debug, Clone, Copy)]
enum Target {
    Primary,
    Replica(usize),
}

struct ServerProbe<C> {
    db: Weak<PrimaryState>,
    target: Target,
    interval: Duration,
    conn: Option<(C, Watched)>,
}

impl<C: RoutedBackend> Probe for ServerProbe<C> {
    fn interval(&self) -> Duration {
        self.interval
    }

    fn probe(&mut self) -> bool {
        let Some(database) = self.db.upgrade() else {
            return false;
        };
        let url = match self.target {
            Target::Primary => database.url.expose().to_owned(),
            Target::Replica(i) => match database.replicas.get(i) {
                // a replica a reload removed: its probe ends
                Some(r) if !r.is_retired() => r.url.expose().to_owned(),
                _ => return false,
            },
        };
        if self.conn.is_none() {
            self.conn = C::connect(
                &C::with_connect_timeout(&url, database.connect_timeout),
                database.connect_timeout,
            )
            .ok()
            .map(|mut c| {
                let watch = crate::connection::watch_of(&mut c, None);
                (c, watch)
            });
            if self.conn.is_none() {
                if let Target::Replica(i) = self.target {
                    // a server that takes no connection within connect_timeout answers nothing
                    database.replicas.set_hung(i, true);
                    database.replicas.meter_up(i, false);
                }
            }
        }
        if let Some((c, watch)) = self.conn.as_mut() {
            // a probe unanswered within replica_timeout: the server counts as hung
            let started_ms = database.replicas.clock_ms();
            let call = watch.call(Some(database.replica_timeout));
            if let Target::Primary = self.target {
                // first the history it writes, so that a position of a new one is not taken
                // for the old one's (a timeline it cannot tell fails nothing)
                if let Ok(Some(t)) = C::primary_timeline(c) {
                    database.saw_primary_timeline(t);
                }
            }
            let ok = match self.target {
                Target::Primary => match C::probe_primary(c) {
                    Ok(Some(pos)) => {
                        // covers every write that returned before the probe started
                        database.primary_probed(started_ms, &pos);
                        true
                    }
                    Ok(None) => true,
                    Err(_) => false,
                },
                Target::Replica(i) => match C::probe_replica(c) {
                    Ok(Some(probe)) if probe.promoted => {
                        if database.replicas.set_promoted(i, true) {
                            tracing::error!(
                                target: "diesel_sharding::monitor",
                                database = %database.name,
                                replica = %replica_name(&database, i),
                                "a replica is not replaying (promoted?): it takes no reads, and \
                                 its positions are not trusted, until it replays again"
                            );
                        }
                        true
                    }
                    Ok(Some(probe)) => {
                        // a timeline it cannot tell is not a failed probe
                        let timeline = C::replica_timeline(c).ok().flatten();
                        if database.replicas.set_timeline(i, timeline) {
                            tracing::error!(
                                target: "diesel_sharding::monitor",
                                database = %database.name,
                                replica = %replica_name(&database, i),
                                timeline,
                                "a replica replays another timeline than the primary's (it \
                                 follows a former primary): it takes no reads until it \
                                 replays the primary's"
                            );
                        }
                        if database.replicas.set_promoted(i, false) {
                            tracing::info!(
                                target: "diesel_sharding::monitor",
                                database = %database.name,
                                "a replica replays again: it takes reads"
                            );
                        }
                        if !database.replicas.is_on_other_timeline(i) {
                            database.replicas.probed(
                                i,
                                started_ms,
                                &probe.replay,
                                probe.lag,
                                probe.identity,
                            );
                        }
                        let bytes = database
                            .known_primary_position()
                            .and_then(|primary| primary.bytes_ahead_of(&probe.replay));
                        database.replicas.meter_lag(i, probe.lag, bytes);
                        true
                    }
                    Ok(None) => true,
                    Err(_) => false,
                },
            };
            drop(call);
            if let Target::Replica(i) = self.target {
                database.replicas.set_hung(i, !ok && watch.was_cut());
                database.replicas.meter_up(
                    i,
                    ok && database.replicas.is_healthy(i)
                        && !database.replicas.is_promoted(i)
                        && !database.replicas.is_on_other_timeline(i),
                );
            }
            if !ok {
                self.conn = None;
            }
        }
        true
    }
}

/// Replica `i`'s name, for events.
fn replica_name(database: &PrimaryState, i: usize) -> String {
    database
        .replicas
        .get(i)
        .map_or_else(|| "?".to_owned(), |r| r.name.clone())
}

/// Stops and joins the monitor's workers when dropped.
pub(crate) struct Monitor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Every probe; `None` while a worker runs it.
    probes: Vec<Option<Box<dyn Probe>>>,
    /// `(when due, probe index)`, earliest first.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Monitor {
    pub(crate) fn new() -> Monitor {
        Monitor {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                stop: AtomicBool::new(false),
            }),
        }
    }

    /// Arranges for `db`'s primary and replicas to be probed every `interval` once the
    /// process first uses `db` ([`PrimaryState::activate_monitor`]).
    pub(crate) fn watch<C: RoutedBackend>(&self, db: &Arc<PrimaryState>, interval: Duration) {
        let shared = Arc::downgrade(&self.shared);
        let weak_db = Arc::downgrade(db);
        db.set_monitor_activation(Box::new(move || {
            let (Some(shared), Some(db)) = (shared.upgrade(), weak_db.upgrade()) else {
                return;
            };
            // the replicas at activation: a reload may have added some since `watch`
            let targets =
                std::iter::once(Target::Primary).chain((0..db.replicas.len()).map(Target::Replica));
            shared.add(probes::<C>(&db, targets, interval));
        }));
    }

    /// Probes replicas `indices` of `db`, which a reload added after its probes started.
    pub(crate) fn watch_replicas<C: RoutedBackend>(
        &self,
        db: &Arc<PrimaryState>,
        indices: &[usize],
        interval: Duration,
    ) {
        let targets = indices.iter().map(|&i| Target::Replica(i));
        self.shared.add(probes::<C>(db, targets, interval));
    }
}

/// A probe of each target of `db`.
fn probes<C: RoutedBackend>(
    db: &Arc<PrimaryState>,
    targets: impl Iterator<Item = Target>,
    interval: Duration,
) -> Vec<Box<dyn Probe>> {
    targets
        .map(|target| {
            Box::new(ServerProbe::<C> {
                db: Arc::downgrade(db),
                target,
                interval,
                conn: None,
            }) as Box<dyn Probe>
        })
        .collect()
}

impl Shared {
    fn add(self: &Arc<Self>, probes: Vec<Box<dyn Probe>>) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        for probe in probes {
            let index = st.probes.len();
            st.probes.push(Some(probe));
            st.due.push(Reverse((now, index)));
        }
        let wanted = WORKERS.min(st.probes.len());
        while st.workers.len() < wanted {
            let shared = self.clone();
            let spawned = std::thread::Builder::new()
                .name("diesel-sharding-monitor".into())
                .spawn(move || shared.work());
            match spawned {
                Ok(handle) => st.workers.push(handle),
                Err(e) => {
                    tracing::warn!(target: "diesel_sharding::monitor", error = %e, "cannot start a monitor thread");
                    break;
                }
            }
        }
        drop(st);
        self.wake.notify_all();
    }

    /// A worker: takes the next due probe, runs it, puts it back with its next time.
    fn work(&self) {
        loop {
            let (index, mut probe) = {
                let Ok(mut st) = self.state.lock() else {
                    return;
                };
                loop {
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let now = Instant::now();
                    match st.due.peek().copied() {
                        Some(Reverse((at, index))) if at <= now => {
                            st.due.pop();
                            if let Some(probe) = st.probes.get_mut(index).and_then(Option::take) {
                                break (index, probe);
                            }
                        }
                        Some(Reverse((at, _))) => {
                            st = match self.wake.wait_timeout(st, at - now) {
                                Ok((st, _)) => st,
                                Err(_) => return,
                            };
                        }
                        None => {
                            st = match self.wake.wait(st) {
                                Ok(st) => st,
                                Err(_) => return,
                            };
                        }
                    }
                }
            };
            let alive = probe.probe();
            // next probe between 0.75 and 1.25 intervals, so that processes do not probe in
            // step
            let jitter = rand::thread_rng().gen_range(0.75..1.25);
            let next = Instant::now() + probe.interval().mul_f64(jitter);
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            if alive {
                if let Some(slot) = st.probes.get_mut(index) {
                    *slot = Some(probe);
                }
                st.due.push(Reverse((next, index)));
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        let workers = match self.shared.state.lock() {
            Ok(mut st) => std::mem::take(&mut st.workers),
            Err(_) => return,
        };
        let deadline = Instant::now() + JOIN_BOUND;
        for handle in workers {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::warn!(
                    target: "diesel_sharding::monitor",
                    "a monitor thread is still inside a database call: left to end by itself"
                );
            }
        }
    }
}
