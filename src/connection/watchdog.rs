//! Bounds on calls to servers that stop answering.
//!
//! A PostgreSQL server that is frozen (SIGSTOP, a stuck host) still has a kernel that accepts
//! and acknowledges TCP traffic, so neither `statement_timeout` (the server runs it) nor TCP
//! keepalives or `tcp_user_timeout` (the peer's kernel answers them) end a call to it, and
//! libpq has no read timeout. What works is to shut the call's socket from another thread:
//! libpq's blocked read then returns an error at once.
//!
//! Each physical TCP connection is registered here with its socket (found once, when it
//! opens: the server's `inet_client_port()` names the local port, `/proc/self/net/tcp*` the
//! socket inode with that port, `/proc/self/fd` the descriptor of that inode). Each call on it
//! is wrapped in a [`Call`] guard, which records when it started and its deadline; a single
//! watchdog thread looks at the calls in progress every [`TICK`] and shuts the socket of a
//! call past its deadline, or of a call to a server the monitor found hung. The connection is
//! then dropped by its owner (its next use fails).
//!
//! Unix-socket connections have no port to find: their calls are not bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How often the watchdog looks at the calls in progress.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// One physical connection as the watchdog knows it.
#[derive(Debug)]
pub(crate) struct Watched {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The socket's descriptor; `None`: not found (Unix socket, or `/proc` unreadable).
    fd: Option<i32>,
    /// Set while the server is hung (by the monitor): calls in progress are cut.
    hung: Option<Arc<AtomicBool>>,
    call: Mutex<CallState>,
}

#[derive(Debug, Default)]
struct CallState {
    in_call: bool,
    deadline: Option<Instant>,
    /// The socket was shut: the connection is unusable.
    cut: bool,
}

/// A call in progress; ends when dropped.
#[must_use]
#[derive(Debug)]
pub(crate) struct Call<'a> {
    inner: Option<&'a Inner>,
}

impl Drop for Call<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(inner) = self.inner {
            if let Ok(mut c) = inner.call.lock() {
                c.in_call = false;
                c.deadline = None;
            }
        }
    }
}

thread_local! {
    /// A deadline for every call this thread makes (`on_all_shards_within`).
    static THREAD_DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every call of this thread bounded by `deadline` (the earlier of the two
/// when a call has its own).
pub(crate) fn with_thread_deadline<R>(deadline: Instant, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0;
            let _ = THREAD_DEADLINE.try_with(|d| d.set(previous));
        }
    }
    let previous = THREAD_DEADLINE
        .try_with(|d| d.replace(Some(deadline)))
        .ok()
        .flatten();
    let _restore = Restore(previous);
    f()
}

fn thread_deadline() -> Option<Instant> {
    THREAD_DEADLINE.try_with(|d| d.get()).ok().flatten()
}

impl Watched {
    /// A connection whose socket is `fd`, to a server whose `hung` flag the monitor sets.
    pub(crate) fn new(fd: Option<i32>, hung: Option<Arc<AtomicBool>>) -> Watched {
        let inner = Arc::new(Inner {
            fd,
            hung,
            call: Mutex::new(CallState::default()),
        });
        if inner.fd.is_some() {
            watchdog().register(&inner);
        }
        Watched { inner }
    }

    /// Starts a call that may last until `timeout` from now (`None`: no deadline of its own,
    /// but still cut when the server is hung, or at the thread's deadline).
    #[inline]
    pub(crate) fn call(&self, timeout: Option<Duration>) -> Call<'_> {
        if self.inner.fd.is_none() {
            return Call { inner: None };
        }
        self.start_call(timeout)
    }

    fn start_call(&self, timeout: Option<Duration>) -> Call<'_> {
        let own = timeout.and_then(|t| Instant::now().checked_add(t));
        let deadline = match (own, thread_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Ok(mut c) = self.inner.call.lock() {
            c.in_call = true;
            c.deadline = deadline;
        }
        Call {
            inner: Some(&self.inner),
        }
    }

    /// Has the server closed the connection while it was idle (a restart, a failover, an
    /// idle timeout)? One `poll(2)` that does not wait; `false` when the socket is not known.
    #[allow(unsafe_code)]
    pub(crate) fn peer_closed(&self) -> bool {
        let Some(fd) = self.inner.fd else {
            return false;
        };
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid `pollfd` for a descriptor this connection owns, and it is open:
        // the caller holds the connection, no call is in progress on it, and a zero timeout
        // returns at once.
        let ready = unsafe { libc::poll(&mut p, 1, 0) };
        ready == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Was the socket shut by the watchdog (the last call ran past its bound)?
    pub(crate) fn was_cut(&self) -> bool {
        self.inner.call.lock().map(|c| c.cut).unwrap_or(false)
    }
}

/// The process's watchdog: weak references to every watched connection, and one thread
/// that runs while there are any (it ends when the last watched connection has closed, so
/// that dropping every cluster leaves no thread behind).
struct Watchdog {
    state: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    watched: Vec<Weak<Inner>>,
    running: bool,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| Watchdog {
        state: Mutex::new(Registry::default()),
    })
}

impl Watchdog {
    fn register(&'static self, inner: &Arc<Inner>) {
        let Ok(mut r) = self.state.lock() else { return };
        r.watched.retain(|c| c.strong_count() > 0);
        r.watched.push(Arc::downgrade(inner));
        if !r.running {
            let spawned = std::thread::Builder::new()
                .name("diesel-sharding-watchdog".into())
                .spawn(move || while self.tick() {});
            match spawned {
                Ok(_) => r.running = true,
                Err(e) => tracing::warn!(
                    target: "diesel_sharding::route",
                    error = %e,
                    "cannot start the call watchdog: calls to hung servers are not bounded"
                ),
            }
        }
    }

    /// Sleeps a tick, then cuts what must be cut; `false` when nothing is watched any more
    /// (the thread then ends).
    fn tick(&self) -> bool {
        std::thread::sleep(TICK);
        let live: Vec<Arc<Inner>> = {
            let Ok(mut r) = self.state.lock() else {
                return false;
            };
            r.watched.retain(|c| c.strong_count() > 0);
            if r.watched.is_empty() {
                r.running = false;
                return false;
            }
            r.watched.iter().filter_map(Weak::upgrade).collect()
        };
        let now = Instant::now();
        for inner in live {
            let Ok(mut c) = inner.call.lock() else {
                continue;
            };
            if !c.in_call || c.cut {
                continue;
            }
            let late = c.deadline.is_some_and(|d| now >= d);
            let hung = inner
                .hung
                .as_ref()
                .is_some_and(|h| h.load(Ordering::Relaxed));
            if late || hung {
                if let Some(fd) = inner.fd {
                    // still holding the call's lock: the call cannot end, nor its connection
                    // close, before the socket is shut
                    shutdown_socket(fd);
                    c.cut = true;
                }
            }
        }
        true
    }
}

/// Shuts both directions of socket `fd`: a blocked read or write on it returns at once.
#[allow(unsafe_code)]
fn shutdown_socket(fd: i32) {
    // SAFETY: `shutdown(2)` neither closes nor frees the descriptor; it only ends the
    // connection's traffic. `fd` is the socket of a connection whose call is in progress, and
    // the caller holds that call's lock, so the connection (which owns the descriptor) cannot
    // be closed, and the number reused, while this runs.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// The descriptor of this process's TCP socket whose local port is `local_port` and remote
/// port `remote_port`, from `/proc`.
pub(crate) fn find_socket(local_port: u16, remote_port: u16) -> Option<i32> {
    let mut inode = None;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 {
                continue;
            }
            let port = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            // (a closed connection with the same ports, in TIME_WAIT, owns no socket: its
            // inode is 0; the live one is the other entry)
            if port(fields[1]) == Some(local_port)
                && port(fields[2]) == Some(remote_port)
                && fields[9] != "0"
            {
                inode = Some(fields[9].to_owned());
                break;
            }
        }
        if inode.is_some() {
            break;
        }
    }
    let wanted = format!("socket:[{}]", inode?);
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_str() == Some(wanted.as_str()) {
            return entry.file_name().to_str()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_socket_of_a_tcp_connection_and_cuts_a_blocked_read() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server_port = listener.local_addr().unwrap().port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", server_port)).unwrap();
        let (_server, _) = listener.accept().unwrap(); // accepted, never answers
        let local = client.local_addr().unwrap().port();
        let fd = find_socket(local, server_port).expect("found in /proc");
        let watched = Watched::new(Some(fd), None);
        let started = Instant::now();
        let call = watched.call(Some(Duration::from_millis(100)));
        let mut buf = [0u8; 1];
        let read = client.read(&mut buf);
        drop(call);
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(watched.was_cut());
    }

    #[test]
    fn a_hung_server_cuts_calls_without_a_deadline() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server_port = listener.local_addr().unwrap().port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", server_port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let fd = find_socket(client.local_addr().unwrap().port(), server_port).unwrap();
        let hung = Arc::new(AtomicBool::new(false));
        let watched = Watched::new(Some(fd), Some(hung.clone()));
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            hung.store(true, Ordering::Relaxed);
        });
        let _call = watched.call(None);
        let mut buf = [0u8; 1];
        let _ = client.read(&mut buf);
        setter.join().unwrap();
        assert!(watched.was_cut());
    }
}
