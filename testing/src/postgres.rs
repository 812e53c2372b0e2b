//! Real PostgreSQL streaming-replication clusters for integration tests.
//!
//! [`PgCluster::start`] brings up one primary and N hot standbys on 127.0.0.1 in a
//! throw-away directory (in `/dev/shm` when it exists), and [`Drop`] tears them down
//! again, also when the test panics. Lag and faults can be injected per replica (replay
//! pause, apply delay, kill, SIGSTOP freeze), and every node keeps external evidence of
//! which statements it ran (`pg_stat_statements` and a `log_statement = 'all'` log), so a
//! test can check the router's decisions without trusting the crate under test.
//!
//! Requirements: the PostgreSQL server binaries (Debian: `postgresql-15`) and
//! `pg_stat_statements` (`postgresql-contrib`). The newest `/usr/lib/postgresql/*/bin`
//! that has `initdb` is used, or the directory in the `PG_BIN_DIR` environment variable.
//! When the tests run as root, every server command runs as user `postgres` through
//! `runuser`. Missing binaries make [`PgCluster::start`] panic: the tests fail, they
//! never skip.
//!
//! ```no_run
//! use diesel_sharding_testing::postgres::{Node, PgCluster};
//!
//! let cluster = PgCluster::start(2);
//! cluster.create_database("app");
//! cluster.execute(Node::Primary, "app", "CREATE TABLE t (id int PRIMARY KEY)");
//! cluster.pause_replay(0);                       // replica 0 is now stale for certain
//! cluster.execute(Node::Primary, "app", "INSERT INTO t VALUES (1)");
//! cluster.wait_caught_up(1);
//! assert_eq!(cluster.query_i64(Node::Replica(1), "app", "SELECT count(*) FROM t"), 1);
//! assert_eq!(cluster.query_i64(Node::Replica(0), "app", "SELECT count(*) FROM t"), 0);
//! ```

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

/// How long any wait of this harness may take before it panics.
const DEADLINE: Duration = Duration::from_secs(30);
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(10);
/// Lines of a node's log that a panic message quotes.
const TAIL_LINES: usize = 30;
/// Prefix of cluster directories (kept short: socket paths must stay under 108 bytes).
const CLUSTER_PREFIX: &str = "dspg";
/// Name of the file in a cluster directory that records which process owns it.
const OWNER_FILE: &str = "owner";
/// How often a node start is retried with a new port after a port clash.
const PORT_ATTEMPTS: usize = 5;
/// Startup options (percent-encoded) of the harness's own connections: they leave no trace
/// in the statement log or in `pg_stat_statements`, which are evidence for the code under test.
const ADMIN_OPTIONS: &str = "-c%20log_statement%3Dnone%20-c%20pg_stat_statements.track%3Dnone";
/// Ports a cluster never uses (the machine's own PostgreSQL and MariaDB).
const RESERVED_PORTS: [u16; 2] = [5432, 3306];

/// Selects one server of a [`PgCluster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// The read-write primary.
    Primary,
    /// The hot standby with this index, `0..cluster.replicas()`.
    Replica(usize),
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Primary => write!(f, "primary"),
            Node::Replica(i) => write!(f, "replica {i}"),
        }
    }
}

/// One server's fixed facts.
#[derive(Debug)]
struct NodeInfo {
    /// Short name: `p` for the primary, `r0`, `r1`, ... for replicas. Also its `cluster_name`.
    name: String,
    /// Data directory.
    data: PathBuf,
    /// Server log (`pg_ctl -l`).
    log: PathBuf,
    /// TCP port on 127.0.0.1.
    port: u16,
}

/// The PostgreSQL installation in use, found once per process.
#[derive(Debug)]
struct PgInstall {
    /// Directory with `initdb`, `pg_ctl`, `pg_basebackup`, `postgres`.
    bin: PathBuf,
    /// Full server version, e.g. `15.20`.
    version: String,
    /// Effective uid of this process.
    uid: u32,
}

impl PgInstall {
    fn as_root(&self) -> bool {
        self.uid == 0
    }

    /// A command for a server program, run as `postgres` via `runuser` when we are root.
    fn cmd(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_root() {
            let mut c = Command::new(runuser_path());
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        // postgres must be able to stat its working directory; "/" always works.
        cmd.current_dir("/")
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGOPTIONS")
            .stdin(Stdio::null());
        cmd
    }
}

fn runuser_path() -> &'static str {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("runuser")
}

static INSTALL: OnceLock<PgInstall> = OnceLock::new();

fn install() -> &'static PgInstall {
    INSTALL.get_or_init(|| {
        let bin = find_bin_dir();
        let out = Command::new(bin.join("initdb"))
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}/initdb --version: {e}", bin.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        // "initdb (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
        let version: String = text
            .split("(PostgreSQL)")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        let uid = current_uid();
        if uid == 0 {
            let ok = Command::new("id")
                .args(["-u", "postgres"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "the tests run as root, so PostgreSQL must run as user `postgres` \
                 (initdb refuses root), but that user does not exist: install postgresql-15"
            );
        }
        PgInstall { bin, version, uid }
    })
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/*/bin` that has `initdb`.
fn find_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file(),
            "PG_BIN_DIR={} has no `initdb`: point it at the PostgreSQL server binaries \
             (e.g. /usr/lib/postgresql/15/bin)",
            dir.display()
        );
        return dir;
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let bin = entry.path().join("bin");
            if !bin.join("initdb").is_file() {
                return None;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = name.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            Some((key, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin; \
             set PG_BIN_DIR): install postgresql-15 (and postgresql-contrib for \
             pg_stat_statements)"
        ),
    }
}

/// Effective uid, from `/proc/self/status`, else `id -u`.
fn current_uid() -> u32 {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            if let Some(euid) = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()) {
                return euid;
            }
        }
    }
    let out = Command::new("id")
        .arg("-u")
        .output()
        .expect("cannot run `id -u`");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("`id -u` printed no number")
}

/// Where clusters and the initdb cache live: `/dev/shm` (tmpfs) when it exists.
fn base_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command to completion; `Err` carries status and output.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(output_text(&out))
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            output_text(&out)
        ))
    }
}

fn chown_to_postgres(path: &Path, recursive: bool) {
    let mut cmd = Command::new("chown");
    if recursive {
        cmd.arg("-R");
    }
    cmd.arg("postgres:postgres").arg(path);
    if let Err(e) = run(&mut cmd) {
        panic!("cannot hand {} to user postgres: {e}", path.display());
    }
}

fn copy_tree(from: &Path, to: &Path) -> Command {
    let mut cmd = Command::new("cp");
    cmd.arg("-a").arg(from).arg(to).stdin(Stdio::null());
    cmd
}

fn append(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {} for appending: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot append to {}: {e}", path.display()));
}

/// Last `n` lines of a file, for panic messages.
fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

// ---------------------------------------------------------------------------------------
// initdb cache
// ---------------------------------------------------------------------------------------

static CACHE_LOCK: Mutex<()> = Mutex::new(());

fn cache_is_valid(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file() && dir.join("global/pg_control").is_file()
}

/// An untouched `initdb` output for this version and uid, built once and shared by all
/// test processes. It is built in a private temporary directory and renamed into place,
/// so a concurrent process sees either nothing or a complete cache.
fn initdb_cache(pg: &PgInstall) -> PathBuf {
    let base = base_dir();
    let name = format!("diesel-sharding-initdb-{}-{}", pg.version, pg.uid);
    let cache = base.join(&name);
    if cache_is_valid(&cache) {
        return cache;
    }
    let _guard = CACHE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if cache_is_valid(&cache) {
        return cache;
    }
    let work = tempfile::Builder::new()
        .prefix(&format!(".{name}-tmp"))
        .tempdir_in(&base)
        .unwrap_or_else(|e| {
            panic!(
                "cannot create a temporary directory in {}: {e}",
                base.display()
            )
        });
    if pg.as_root() {
        chown_to_postgres(work.path(), false);
    }
    let data = work.path().join("data");
    let result = run(pg
        .cmd("initdb")
        .args([
            "--no-sync",
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-D",
        ])
        .arg(&data));
    if let Err(e) = result {
        panic!(
            "initdb failed while building the cache {}: {e}",
            cache.display()
        );
    }
    if let Err(e) = fs::rename(&data, &cache) {
        // Another process won the race: its cache is as good as ours.
        assert!(
            cache_is_valid(&cache),
            "cannot move the initdb output into {}: {e}",
            cache.display()
        );
    }
    cache
}

// ---------------------------------------------------------------------------------------
// processes
// ---------------------------------------------------------------------------------------

/// `(state, ppid, starttime)` of a process from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

/// Whether a pid is a running (not zombie) process.
fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

/// Direct children of `ppid` (every PostgreSQL server process is a child of its postmaster).
fn children_of(ppid: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(proc_stat(*pid), Some((_, p, _)) if p == ppid))
        .collect()
}

/// First line of `postmaster.pid`, if the file exists.
fn postmaster_pid_of(data: &Path) -> Option<u32> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Sends a signal (`STOP`, `CONT`, `KILL`) to pids with the `kill` command.
fn signal(sig: &str, pids: &[u32]) -> Result<(), String> {
    if pids.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("kill");
    cmd.arg(format!("-{sig}"));
    for pid in pids {
        cmd.arg(pid.to_string());
    }
    run(cmd.stdin(Stdio::null())).map(|_| ())
}

/// `pid starttime` of this process, written to each cluster's owner file.
/// The directories under `base` named `prefix..` whose owner file (`owner_file`, written
/// with [`owner_stamp`]) names a process that is gone: clusters a killed test left behind.
pub(crate) fn orphaned_dirs(base: &Path, prefix: &str, owner_file: &str) -> Vec<PathBuf> {
    fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|dir| {
            fs::read_to_string(dir.join(owner_file)).is_ok_and(|stamp| !owner_alive(&stamp))
        })
        .collect()
}

pub(crate) fn owner_stamp() -> String {
    let pid = std::process::id();
    let start = proc_stat(pid).map(|s| s.2).unwrap_or(0);
    format!("{pid} {start}\n")
}

/// Whether the process recorded in an owner file still runs.
fn owner_alive(stamp: &str) -> bool {
    let mut parts = stamp.split_whitespace();
    let (Some(pid), Some(start)) = (
        parts.next().and_then(|p| p.parse::<u32>().ok()),
        parts.next().and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return true; // unreadable: leave it alone
    };
    matches!(proc_stat(pid), Some((state, _, st)) if st == start && state != 'Z')
}

static REAP: Once = Once::new();

/// Stops and removes clusters left behind by test processes that died without running
/// their destructors (Ctrl-C, SIGKILL). Only directories with this harness's prefix and an
/// owner file naming a dead process are touched.
fn reap_orphans(pg: &PgInstall) {
    for dir in orphaned_dirs(&base_dir(), CLUSTER_PREFIX, OWNER_FILE) {
        let datas: Vec<PathBuf> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("postmaster.pid").is_file())
            .collect();
        stop_immediately(pg, &datas);
        let _ = fs::remove_dir_all(&dir);
    }
}

/// Thaws and stops (`pg_ctl stop -m immediate`, in parallel) the servers of these data
/// directories, then SIGKILLs whatever survived. Never panics.
fn stop_immediately(pg: &PgInstall, datas: &[PathBuf]) {
    let mut pids = Vec::new();
    for data in datas {
        if let Some(pm) = postmaster_pid_of(data) {
            if alive(pm) {
                pids.push(pm);
                pids.extend(children_of(pm));
            }
        }
    }
    // A stopped process cannot act on SIGQUIT: continue everything first.
    let _ = signal("CONT", &pids);
    let children: Vec<Child> = datas
        .iter()
        .filter(|d| d.join("postmaster.pid").is_file())
        .filter_map(|data| {
            pg.cmd("pg_ctl")
                .args(["stop", "-m", "immediate", "-t", "10", "-D"])
                .arg(data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()
        })
        .collect();
    for mut child in children {
        let _ = child.wait();
    }
    let survivors: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
    let _ = signal("KILL", &survivors);
}

// ---------------------------------------------------------------------------------------
// query result rows
// ---------------------------------------------------------------------------------------

#[derive(QueryableByName)]
struct I64Row {
    #[diesel(sql_type = Nullable<BigInt>)]
    v: Option<i64>,
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

/// Strips whitespace and trailing semicolons so a statement can be wrapped as a subquery.
fn scalar_subquery(sql: &str) -> &str {
    sql.trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

// ---------------------------------------------------------------------------------------
// the cluster
// ---------------------------------------------------------------------------------------

/// A running primary with N streaming hot standbys, torn down on drop.
///
/// All servers listen on 127.0.0.1 (ports chosen at start) and on unix sockets in
/// [`dir`](PgCluster::dir); user `postgres` logs in without a password (`trust`). The
/// primary runs with `fsync=off`, `full_page_writes=off`, `shared_buffers=16MB`,
/// `hot_standby_feedback=on`, `wal_receiver_status_interval=1s`,
/// `wal_retrieve_retry_interval=200ms`, `wal_keep_size=128MB`,
/// `shared_preload_libraries='pg_stat_statements'` (`track=all`) and `log_statement='all'`;
/// replicas inherit all of it. Replication is asynchronous and `synchronous_commit` keeps its
/// default (`on`).
///
/// Every method that waits gives up after 30 s and panics with what it waited for and the
/// tail of the relevant server logs. Methods take `&self`, so a cluster can be shared.
#[derive(Debug)]
pub struct PgCluster {
    /// Index 0 is the primary, index `i + 1` is replica `i`. Filled in as `start` goes, so
    /// that a panic halfway still stops what was started.
    nodes: Vec<NodeInfo>,
    /// Number of replicas asked for.
    replicas: usize,
    /// Nodes currently SIGSTOPped, by node index.
    frozen: Mutex<HashSet<usize>>,
    /// The cluster directory; removed after `Drop::drop` has stopped the servers.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Starts a primary and `replicas` hot standbys and waits until every standby streams.
    ///
    /// Takes about 0.5–0.6 s for a primary and 2 replicas on tmpfs (plus about 0.5 s once per
    /// machine to build the initdb cache). Panics with the server logs' tails if anything
    /// fails; what was already started is stopped again.
    pub fn start(replicas: usize) -> PgCluster {
        let pg = install();
        REAP.call_once(|| reap_orphans(pg));
        let cache = initdb_cache(pg);

        let base = base_dir();
        let dir = tempfile::Builder::new()
            .prefix(CLUSTER_PREFIX)
            .tempdir_in(&base)
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create a cluster directory in {}: {e}",
                    base.display()
                )
            });
        fs::write(dir.path().join(OWNER_FILE), owner_stamp())
            .unwrap_or_else(|e| panic!("cannot write the owner file: {e}"));
        // From here on `cluster`'s Drop cleans up after any panic.
        let mut cluster = PgCluster {
            nodes: Vec::with_capacity(replicas + 1),
            replicas,
            frozen: Mutex::new(HashSet::new()),
            dir,
        };
        let root = cluster.dir.path().to_path_buf();
        let socket_len = root.join(".s.PGSQL.65535.lock").as_os_str().len();
        assert!(
            socket_len < 100,
            "cluster directory {} is too long for unix sockets",
            root.display()
        );

        let ports = free_ports(replicas + 1);

        // Primary: a copy of the cached initdb output plus the test settings.
        let primary = NodeInfo {
            name: "p".to_string(),
            data: root.join("p"),
            log: root.join("p.log"),
            port: ports[0],
        };
        if let Err(e) = run(&mut copy_tree(&cache, &primary.data)) {
            panic!("cannot copy the initdb cache: {e}");
        }
        if pg.as_root() {
            chown_to_postgres(&root, true);
        }
        let senders = (replicas + 4).max(10);
        append(
            &primary.data.join("postgresql.conf"),
            &format!(
                "\n# added by diesel-sharding-testing\n\
                 listen_addresses = '127.0.0.1'\n\
                 port = {port}\n\
                 unix_socket_directories = '{sock}'\n\
                 cluster_name = 'p'\n\
                 fsync = off\n\
                 synchronous_commit = on\n\
                 full_page_writes = off\n\
                 shared_buffers = 16MB\n\
                 max_connections = 100\n\
                 wal_level = replica\n\
                 max_wal_senders = {senders}\n\
                 max_replication_slots = {senders}\n\
                 wal_keep_size = 128MB\n\
                 hot_standby = on\n\
                 hot_standby_feedback = on\n\
                 wal_receiver_status_interval = 1s\n\
                 wal_retrieve_retry_interval = 200ms\n\
                 shared_preload_libraries = 'pg_stat_statements'\n\
                 pg_stat_statements.track = all\n\
                 logging_collector = off\n\
                 log_statement = 'all'\n\
                 log_line_prefix = '%m [%p] %q%u@%d app=%a '\n",
                port = primary.port,
                sock = root.display(),
            ),
        );
        cluster.nodes.push(primary);
        cluster.start_nodes(&[0]);
        cluster.execute(
            Node::Primary,
            "postgres",
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        );

        if replicas == 0 {
            return cluster;
        }

        // One base backup (taken after CREATE EXTENSION, so standbys have the view too),
        // copied to every replica before any of them starts.
        let backup = root.join("base");
        let primary_port = cluster.nodes[0].port.to_string();
        if let Err(e) = run(pg
            .cmd("pg_basebackup")
            .args(["-h", "127.0.0.1", "-p", &primary_port, "-U", "postgres"])
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-D"])
            .arg(&backup))
        {
            panic!(
                "pg_basebackup failed: {e}\n{}",
                cluster.log_tails(&[Node::Primary])
            );
        }
        for i in 0..replicas {
            cluster.nodes.push(NodeInfo {
                name: format!("r{i}"),
                data: root.join(format!("r{i}")),
                log: root.join(format!("r{i}.log")),
                port: ports[i + 1],
            });
        }
        // Copy in parallel; the last replica takes the backup itself.
        let copies: Vec<(Command, Child)> = (0..replicas - 1)
            .map(|i| {
                let mut cmd = copy_tree(&backup, &cluster.nodes[i + 1].data);
                let child = cmd
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run cp: {e}"));
                (cmd, child)
            })
            .collect();
        for (cmd, child) in copies {
            let out = child.wait_with_output().expect("cannot wait for cp");
            assert!(
                out.status.success(),
                "{cmd:?} failed: {}",
                output_text(&out)
            );
        }
        fs::rename(&backup, &cluster.nodes[replicas].data)
            .unwrap_or_else(|e| panic!("cannot rename the base backup: {e}"));
        for k in 1..=replicas {
            let node = &cluster.nodes[k];
            append(
                &node.data.join("postgresql.auto.conf"),
                &format!("port = {}\ncluster_name = '{}'\n", node.port, node.name),
            );
        }
        let all: Vec<usize> = (1..=replicas).collect();
        cluster.start_nodes(&all);

        let want = replicas as i64;
        let mut conn: Option<PgConnection> = None;
        cluster.wait_until(
            &format!("{replicas} replicas streaming in the primary's pg_stat_replication"),
            &cluster.all_nodes(),
            || {
                let c = cluster.poll_conn(&mut conn, Node::Primary, "postgres")?;
                let n = query_i64_on(
                    c,
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                )?;
                Ok(n == want)
            },
        );
        cluster
    }

    // -- accessors ------------------------------------------------------------------------

    /// TCP port of the primary on 127.0.0.1.
    pub fn primary_port(&self) -> u16 {
        self.nodes[0].port
    }

    /// TCP port of replica `i` on 127.0.0.1.
    pub fn replica_port(&self, i: usize) -> u16 {
        self.info(Node::Replica(i)).port
    }

    /// TCP port of any node.
    pub fn port(&self, node: Node) -> u16 {
        self.info(node).port
    }

    /// `postgres://postgres@127.0.0.1:PORT/db` for the primary (`db` is not escaped).
    pub fn primary_url(&self, db: &str) -> String {
        self.url(Node::Primary, db)
    }

    /// `postgres://postgres@127.0.0.1:PORT/db` for replica `i` (`db` is not escaped).
    pub fn replica_url(&self, i: usize, db: &str) -> String {
        self.url(Node::Replica(i), db)
    }

    /// Connection URL of any node; append `?connect_timeout=N` etc. as needed.
    pub fn url(&self, node: Node, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.info(node).port,
            db
        )
    }

    /// URL of the harness's own connections: see [`connect`](PgCluster::connect).
    fn admin_url(&self, node: Node, db: &str) -> String {
        format!(
            "{}?connect_timeout=10&options={ADMIN_OPTIONS}",
            self.url(node, db)
        )
    }

    /// Number of replicas.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The primary followed by every replica.
    pub fn all_nodes(&self) -> Vec<Node> {
        std::iter::once(Node::Primary)
            .chain((0..self.replicas).map(Node::Replica))
            .collect()
    }

    /// The cluster directory: data directories `p`, `r0`, `r1`, ..., their logs
    /// `p.log`, `r0.log`, ..., and the unix sockets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Data directory of a node.
    pub fn data_dir(&self, node: Node) -> &Path {
        &self.info(node).data
    }

    /// The server log of a node (`<dir>/p.log`, `<dir>/r<i>.log`), with every statement
    /// (`log_statement = 'all'`, prefix `'%m [%p] %q%u@%d app=%a '`).
    pub fn log_path(&self, node: Node) -> &Path {
        &self.info(node).log
    }

    /// Pid of a node's postmaster, if it runs (`postmaster.pid`, line 1).
    pub fn postmaster_pid(&self, node: Node) -> Option<u32> {
        postmaster_pid_of(&self.info(node).data).filter(|p| alive(*p))
    }

    /// Pids of a node's postmaster and all its children (empty if it does not run).
    pub fn pids(&self, node: Node) -> Vec<u32> {
        match self.postmaster_pid(node) {
            Some(pm) => std::iter::once(pm).chain(children_of(pm)).collect(),
            None => Vec::new(),
        }
    }

    // -- SQL helpers ----------------------------------------------------------------------

    /// Connects to `db` on a node as superuser `postgres`, the way all helpers of this
    /// harness do: `connect_timeout=10`, and with `log_statement=none` and
    /// `pg_stat_statements.track=none`, so the harness's own statements never show up in
    /// [`statement_calls`](PgCluster::statement_calls) or
    /// [`log_contains`](PgCluster::log_contains). Panics with the node's log tail on failure.
    /// Code under test should connect with [`url`](PgCluster::url) instead.
    pub fn connect(&self, node: Node, db: &str) -> PgConnection {
        let url = self.admin_url(node, db);
        PgConnection::establish(&url).unwrap_or_else(|e| {
            panic!(
                "cannot connect to {node} ({url}): {e}\n{}",
                self.log_tails(&[node])
            )
        })
    }

    /// Runs `sql` (one or more statements, simple protocol) as superuser on `db` of a node,
    /// over a [`connect`](PgCluster::connect) connection (neither logged nor counted);
    /// panics on error.
    pub fn execute(&self, node: Node, db: &str, sql: &str) {
        let mut conn = self.connect(node, db);
        if let Err(e) = conn.batch_execute(sql) {
            panic!(
                "{node}, database {db}: `{sql}` failed: {e}\n{}",
                self.log_tails(&[node])
            );
        }
    }

    /// Like [`execute`](PgCluster::execute) but returns the error (e.g. to check that a
    /// write on a standby fails). Still panics if it cannot connect.
    pub fn try_execute(
        &self,
        node: Node,
        db: &str,
        sql: &str,
    ) -> Result<(), diesel::result::Error> {
        self.connect(node, db).batch_execute(sql)
    }

    /// Value of a query returning one row with one column, cast to `bigint`.
    ///
    /// `sql` is wrapped as a scalar subquery (`SELECT (<sql>)::bigint`), so it must be a
    /// `SELECT`/`VALUES` (not `SHOW`; use `current_setting()`). Panics on error, on more than
    /// one row, and on no row or NULL.
    pub fn query_i64(&self, node: Node, db: &str, sql: &str) -> i64 {
        let mut conn = self.connect(node, db);
        query_i64_on(&mut conn, sql)
            .unwrap_or_else(|e| panic!("{node}, database {db}: {e}\n{}", self.log_tails(&[node])))
    }

    /// Like [`query_i64`](PgCluster::query_i64), cast to `text` (handy for LSNs).
    pub fn query_string(&self, node: Node, db: &str, sql: &str) -> String {
        let mut conn = self.connect(node, db);
        query_string_on(&mut conn, sql)
            .unwrap_or_else(|e| panic!("{node}, database {db}: {e}\n{}", self.log_tails(&[node])))
    }

    /// Creates database `name` on the primary and waits until every replica accepts
    /// connections to it (i.e. has replayed it).
    pub fn create_database(&self, name: &str) {
        self.execute(
            Node::Primary,
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        );
        for i in 0..self.replicas {
            let node = Node::Replica(i);
            let url = self.admin_url(node, name);
            self.wait_until(
                &format!("database {name} to reach {node}"),
                &[Node::Primary, node],
                || {
                    PgConnection::establish(&url)
                        .map(|_| true)
                        .map_err(|e| e.to_string())
                },
            );
        }
    }

    // -- replication lag ------------------------------------------------------------------

    /// Pauses WAL replay on replica `i` (`pg_wal_replay_pause()`) and waits until
    /// `pg_get_wal_replay_pause_state()` is `paused`. WAL is still received.
    pub fn pause_replay(&self, i: usize) {
        let node = Node::Replica(i);
        let mut conn = self.connect(node, "postgres");
        if let Err(e) = conn.batch_execute("SELECT pg_wal_replay_pause()") {
            panic!(
                "pg_wal_replay_pause() on {node} failed: {e}\n{}",
                self.log_tails(&[node])
            );
        }
        let mut conn = Some(conn);
        self.wait_until(&format!("{node} to report replay paused"), &[node], || {
            let c = self.poll_conn(&mut conn, node, "postgres")?;
            Ok(query_string_on(c, "SELECT pg_get_wal_replay_pause_state()")? == "paused")
        });
    }

    /// Resumes WAL replay on replica `i` (`pg_wal_replay_resume()`).
    pub fn resume_replay(&self, i: usize) {
        self.execute(
            Node::Replica(i),
            "postgres",
            "SELECT pg_wal_replay_resume()",
        );
    }

    /// Sets `recovery_min_apply_delay` on replica `i` (`ALTER SYSTEM` + `pg_reload_conf()`)
    /// and waits until the server has reloaded it. Commits are held for `delay` after
    /// their primary timestamp; other records replay at once. A zero delay releases commits
    /// already held.
    pub fn set_apply_delay(&self, i: usize, delay: Duration) {
        let node = Node::Replica(i);
        let ms = delay.as_millis().min(i32::MAX as u128) as i64;
        let mut conn = self.connect(node, "postgres");
        // ALTER SYSTEM cannot run in the implicit transaction of a multi-statement string.
        for sql in [
            format!("ALTER SYSTEM SET recovery_min_apply_delay = '{ms}ms'"),
            "SELECT pg_reload_conf()".to_string(),
        ] {
            if let Err(e) = conn.batch_execute(&sql) {
                panic!("{node}: `{sql}` failed: {e}\n{}", self.log_tails(&[node]));
            }
        }
        drop(conn);
        // A new backend sees the postmaster's reloaded value, and the postmaster has
        // signalled the startup process by then.
        let url = self.admin_url(node, "postgres");
        const DELAY_SETTING: &str =
            "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'";
        self.wait_until(
            &format!("{node} to load recovery_min_apply_delay = {ms}ms"),
            &[node],
            || {
                let mut c = PgConnection::establish(&url).map_err(|e| e.to_string())?;
                Ok(query_i64_on(&mut c, DELAY_SETTING)? == ms)
            },
        );
        thread::sleep(Duration::from_millis(20));
    }

    /// Waits until replica `i` has replayed everything the primary had written when this
    /// was called (`pg_last_wal_replay_lsn() >= pg_current_wal_lsn()` of the primary).
    pub fn wait_caught_up(&self, i: usize) {
        let lsn = self.primary_lsn();
        self.wait_replayed(i, &lsn);
    }

    /// [`wait_caught_up`](PgCluster::wait_caught_up) for every replica, against one primary
    /// LSN read at call time.
    pub fn wait_all_caught_up(&self) {
        let lsn = self.primary_lsn();
        for i in 0..self.replicas {
            self.wait_replayed(i, &lsn);
        }
    }

    /// The primary's `pg_current_wal_lsn()` as text, e.g. `0/3023E98`.
    pub fn primary_lsn(&self) -> String {
        self.query_string(Node::Primary, "postgres", "SELECT pg_current_wal_lsn()")
    }

    /// Waits until replica `i` has replayed up to `lsn` (text form, e.g. from
    /// [`primary_lsn`](PgCluster::primary_lsn)).
    pub fn wait_replayed(&self, i: usize, lsn: &str) {
        let node = Node::Replica(i);
        let lsn_literal = lsn.replace('\'', "''");
        let sql = format!(
            "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{lsn_literal}'::pg_lsn), -1)"
        );
        let mut conn = None;
        self.wait_until(
            &format!("{node} to replay up to {lsn}"),
            &[Node::Primary, node],
            || {
                let c = self.poll_conn(&mut conn, node, "postgres")?;
                Ok(query_i64_on(c, &sql)? >= 0)
            },
        );
    }

    // -- faults ---------------------------------------------------------------------------

    /// Crashes replica `i` (`pg_ctl stop -m immediate`): connections are refused until
    /// [`start_replica`](PgCluster::start_replica).
    pub fn kill_replica(&self, i: usize) {
        self.kill_node(Node::Replica(i));
    }

    /// Starts replica `i` again (`pg_ctl start -w`) and waits until its WAL receiver streams.
    pub fn start_replica(&self, i: usize) {
        self.start_node(Node::Replica(i));
    }

    /// Freezes replica `i`: SIGSTOP to its postmaster and every child. The kernel still
    /// accepts TCP connections, but no handshake completes (clients hit `connect_timeout`).
    pub fn freeze_replica(&self, i: usize) {
        self.freeze_node(Node::Replica(i));
    }

    /// Thaws a replica frozen by [`freeze_replica`](PgCluster::freeze_replica) (SIGCONT).
    pub fn thaw_replica(&self, i: usize) {
        self.thaw_node(Node::Replica(i));
    }

    /// Crashes any node (`pg_ctl stop -m immediate`), thawing it first if frozen. After the
    /// primary is killed and restarted, replicas reconnect by themselves within about 0.2 s
    /// (`wal_retrieve_retry_interval = 200ms`).
    pub fn kill_node(&self, node: Node) {
        let k = self.index(node);
        if self.lock_frozen().contains(&k) {
            self.thaw_node(node);
        }
        let pg = install();
        if let Err(e) = run(pg
            .cmd("pg_ctl")
            .args(["stop", "-m", "immediate", "-t", "30", "-D"])
            .arg(&self.nodes[k].data))
        {
            panic!("stopping {node} failed: {e}\n{}", self.log_tails(&[node]));
        }
    }

    /// Promotes replica `i` (`pg_ctl promote -w`): it leaves recovery and takes writes, on
    /// a timeline of its own (a failover, or an operator's mistake).
    pub fn promote_replica(&self, i: usize) {
        let k = self.index(Node::Replica(i));
        let pg = install();
        if let Err(e) = run(pg
            .cmd("pg_ctl")
            .args(["promote", "-w", "-t", "30", "-D"])
            .arg(&self.nodes[k].data))
        {
            panic!("promoting replica {i} failed: {e}");
        }
    }

    /// Fails over to replica `i`, as an orchestrator (Patroni, a managed service) does:
    /// crashes the primary, promotes replica `i` (it writes a new timeline from where its
    /// WAL ends) and moves it to the primary's address, so that every URL of the primary
    /// now reaches it.
    ///
    /// Afterwards [`Node::Primary`] is the promoted server and `Node::Replica(i)` the former
    /// primary's data directory, stopped (its port is replica `i`'s old one; a crashed
    /// primary cannot rejoin without `pg_rewind`). The other replicas stream from the
    /// primary's address: one whose WAL does not go past where replica `i`'s ended follows
    /// the new timeline by itself (a stopped one once started again); one that replayed
    /// further, which is a history the new primary does not have, cannot, and stays on the
    /// old timeline. Replica `i` must be running; the primary may be stopped already.
    pub fn fail_over(&mut self, i: usize) {
        let k = self.index(Node::Replica(i));
        if self.postmaster_pid(Node::Primary).is_some() {
            self.kill_node(Node::Primary);
        }
        self.promote_replica(i);
        let pg = install();
        if let Err(e) = run(pg
            .cmd("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", "30", "-D"])
            .arg(&self.nodes[k].data))
        {
            panic!("stopping the promoted replica {i} failed: {e}");
        }
        let (primary_port, replica_port) = (self.nodes[0].port, self.nodes[k].port);
        append(
            &self.nodes[k].data.join("postgresql.auto.conf"),
            &format!("port = {primary_port}\n"),
        );
        append(
            &self.nodes[0].data.join("postgresql.conf"),
            &format!("port = {replica_port}\n"),
        );
        self.nodes.swap(0, k);
        self.nodes[0].port = primary_port;
        self.nodes[k].port = replica_port;
        {
            let mut frozen = self.lock_frozen();
            frozen.remove(&0);
            frozen.remove(&k);
        }
        if let Err(e) = self.pg_ctl_start(0).wait() {
            panic!(
                "starting the promoted replica at the primary's address failed: {e}\n{}",
                self.log_tails(&[Node::Primary])
            );
        }
    }

    /// Starts a stopped node (`pg_ctl start -w`); for a replica, also waits until its WAL
    /// receiver streams from the primary.
    pub fn start_node(&self, node: Node) {
        let k = self.index(node);
        if let Err(e) = self.pg_ctl_start(k).wait() {
            panic!("starting {node} failed: {e}\n{}", self.log_tails(&[node]));
        }
        if let Node::Replica(_) = node {
            let mut conn = None;
            self.wait_until(
                &format!("{node}'s WAL receiver to stream"),
                &[Node::Primary, node],
                || {
                    let c = self.poll_conn(&mut conn, node, "postgres")?;
                    Ok(query_i64_on(
                        c,
                        "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                    )? == 1)
                },
            );
        }
    }

    /// Starts a stopped replica (`pg_ctl start -w`: until it accepts connections) without
    /// waiting for its WAL receiver, which starts only once the replica has replayed its
    /// local WAL (never, while a recovery delay holds a commit).
    pub fn start_replica_accepting_connections(&self, i: usize) {
        let node = Node::Replica(i);
        let k = self.index(node);
        if let Err(e) = self.pg_ctl_start(k).wait() {
            panic!("starting {node} failed: {e}\n{}", self.log_tails(&[node]));
        }
    }

    /// SIGSTOPs a node's postmaster and then each of its children (each child calls
    /// `setsid()`, so signalling the process group would stop only the postmaster).
    pub fn freeze_node(&self, node: Node) {
        let k = self.index(node);
        let Some(pm) = self.postmaster_pid(node) else {
            panic!(
                "cannot freeze {node}: it is not running\n{}",
                self.log_tails(&[node])
            );
        };
        // Mark first, so Drop thaws it even if we panic below.
        self.lock_frozen().insert(k);
        let result = signal("STOP", &[pm]).and_then(|()| signal("STOP", &children_of(pm)));
        if let Err(e) = result {
            panic!("freezing {node} failed: {e}");
        }
    }

    /// SIGCONTs a node's postmaster and its children.
    pub fn thaw_node(&self, node: Node) {
        let k = self.index(node);
        let pids = self.pids(node);
        if let Err(e) = signal("CONT", &pids) {
            panic!("thawing {node} failed: {e}");
        }
        self.lock_frozen().remove(&k);
    }

    // -- evidence of where statements ran -------------------------------------------------

    /// Total `calls` in a node's `pg_stat_statements` for statements whose normalised text
    /// matches `like_pattern` (SQL `LIKE`), across all databases, excluding queries on
    /// `pg_stat_statements` itself. Constants are normalised to `$n` and comments do not
    /// make new entries, so tell probes apart by structure (e.g. a per-test table name).
    /// Statements of the harness's own helpers are not counted (see
    /// [`connect`](PgCluster::connect)).
    pub fn statement_calls(&self, node: Node, like_pattern: &str) -> i64 {
        let mut conn = self.connect(node, "postgres");
        let row: Result<I64Row, _> = diesel::sql_query(
            "SELECT coalesce(sum(calls), 0)::bigint AS v FROM pg_stat_statements \
             WHERE query LIKE $1 AND query NOT LIKE '%pg_stat_statements%'",
        )
        .bind::<Text, _>(like_pattern)
        .get_result(&mut conn);
        match row {
            Ok(I64Row { v: Some(v) }) => v,
            Ok(I64Row { v: None }) => 0,
            Err(e) => panic!(
                "reading pg_stat_statements on {node} failed: {e}\n{}",
                self.log_tails(&[node])
            ),
        }
    }

    /// Resets a node's `pg_stat_statements` counters (works on standbys too).
    pub fn reset_statement_stats(&self, node: Node) {
        self.execute(node, "postgres", "SELECT pg_stat_statements_reset()");
    }

    /// Resets `pg_stat_statements` on every node.
    pub fn reset_all_statement_stats(&self) {
        for node in self.all_nodes() {
            self.reset_statement_stats(node);
        }
    }

    /// Number of lines in a node's server log containing `needle`. With
    /// `log_statement = 'all'` every statement is logged verbatim, comments included
    /// (`statement: ...` for the simple protocol, `execute <name>: ...` for the extended
    /// one), so a unique comment marker identifies the server that ran a query. The
    /// harness's own helpers are not logged (see [`connect`](PgCluster::connect)).
    pub fn log_contains(&self, node: Node, needle: &str) -> usize {
        let path = self.log_path(node);
        let bytes =
            fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The last `lines` lines of a node's server log.
    pub fn log_tail(&self, node: Node, lines: usize) -> String {
        tail(self.log_path(node), lines)
    }

    // -- internals ------------------------------------------------------------------------

    fn index(&self, node: Node) -> usize {
        match node {
            Node::Primary => 0,
            Node::Replica(i) => {
                assert!(
                    i < self.replicas,
                    "replica {i} does not exist: the cluster has {} replicas",
                    self.replicas
                );
                i + 1
            }
        }
    }

    fn node_at(k: usize) -> Node {
        if k == 0 {
            Node::Primary
        } else {
            Node::Replica(k - 1)
        }
    }

    fn info(&self, node: Node) -> &NodeInfo {
        &self.nodes[self.index(node)]
    }

    fn lock_frozen(&self) -> std::sync::MutexGuard<'_, HashSet<usize>> {
        self.frozen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tails of the logs of these nodes (those that exist yet), for panic messages.
    fn log_tails(&self, nodes: &[Node]) -> String {
        let mut out = String::new();
        for node in nodes {
            let k = match node {
                Node::Primary => 0,
                Node::Replica(i) => i + 1,
            };
            if let Some(info) = self.nodes.get(k) {
                out.push_str(&format!(
                    "--- last {TAIL_LINES} lines of {} ({node}) ---\n{}\n",
                    info.log.display(),
                    tail(&info.log, TAIL_LINES)
                ));
            }
        }
        out
    }

    /// Polls `check` until it returns `Ok(true)`; after [`DEADLINE`] panics naming `what`,
    /// the last error and the tails of `nodes`' logs.
    fn wait_until(
        &self,
        what: &str,
        nodes: &[Node],
        mut check: impl FnMut() -> Result<bool, String>,
    ) {
        let start = Instant::now();
        let mut last;
        loop {
            match check() {
                Ok(true) => return,
                Ok(false) => last = String::from("condition not met"),
                Err(e) => last = e,
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out after {:?} waiting for {what} (last result: {last})\n{}",
                    DEADLINE,
                    self.log_tails(nodes)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// A connection kept across polls; dropped on error so the next poll reconnects.
    fn poll_conn<'c>(
        &self,
        slot: &'c mut Option<PgConnection>,
        node: Node,
        db: &str,
    ) -> Result<&'c mut PgConnection, String> {
        if slot.is_none() {
            let url = self.admin_url(node, db);
            *slot =
                Some(PgConnection::establish(&url).map_err(|e| format!("connect to {node}: {e}"))?);
        }
        Ok(slot.as_mut().expect("just set"))
    }

    fn pg_ctl_start(&self, k: usize) -> PendingStart {
        let info = &self.nodes[k];
        let log_len = fs::metadata(&info.log).map(|m| m.len()).unwrap_or(0);
        let child = install()
            .cmd("pg_ctl")
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(&info.data)
            .arg("-l")
            .arg(&info.log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
        PendingStart {
            child,
            log: info.log.clone(),
            log_len,
        }
    }

    /// Starts these nodes in parallel; a node whose port was taken meanwhile is moved to
    /// a new free port and started again (a few times).
    fn start_nodes(&mut self, ks: &[usize]) {
        let mut todo: Vec<usize> = ks.to_vec();
        for attempt in 1..=PORT_ATTEMPTS {
            let pending: Vec<(usize, PendingStart)> =
                todo.iter().map(|&k| (k, self.pg_ctl_start(k))).collect();
            // Wait for every pg_ctl before panicking, so no server comes up after Drop ran.
            let results: Vec<(usize, Result<(), String>)> =
                pending.into_iter().map(|(k, p)| (k, p.wait())).collect();
            let mut clashed = Vec::new();
            for (k, result) in results {
                let node = Self::node_at(k);
                match result {
                    Ok(()) => {}
                    Err(e)
                        if e.contains("could not bind") || e.contains("Address already in use") =>
                    {
                        if attempt == PORT_ATTEMPTS {
                            panic!("{node}: port clash {PORT_ATTEMPTS} times in a row: {e}");
                        }
                        clashed.push(k);
                    }
                    Err(e) => panic!("starting {node} failed: {e}\n{}", self.log_tails(&[node])),
                }
            }
            if clashed.is_empty() {
                return;
            }
            let ports = free_ports(clashed.len());
            for (&k, port) in clashed.iter().zip(ports) {
                let info = &mut self.nodes[k];
                info.port = port;
                let conf = if k == 0 {
                    "postgresql.conf"
                } else {
                    "postgresql.auto.conf"
                };
                append(&info.data.join(conf), &format!("port = {port}\n"));
            }
            todo = clashed;
        }
    }
}

/// A `pg_ctl start` in flight.
struct PendingStart {
    child: Child,
    log: PathBuf,
    log_len: u64,
}

impl PendingStart {
    /// Waits for `pg_ctl`; `Err` carries its output and what the server logged meanwhile.
    fn wait(self) -> Result<(), String> {
        let out = self
            .child
            .wait_with_output()
            .map_err(|e| format!("cannot wait for pg_ctl: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let new_log = fs::read(&self.log)
            .map(|b| {
                String::from_utf8_lossy(&b[(self.log_len as usize).min(b.len())..]).into_owned()
            })
            .unwrap_or_default();
        let mut msg = format!(
            "pg_ctl start ({}):\n{}\nserver log since the start:\n{new_log}",
            out.status,
            output_text(&out)
        );
        if new_log.contains("pg_stat_statements") {
            msg.push_str("\n(hint: pg_stat_statements comes with postgresql-contrib)");
        }
        Err(msg)
    }
}

fn query_i64_on(conn: &mut PgConnection, sql: &str) -> Result<i64, String> {
    let q = format!("SELECT ({})::bigint AS v", scalar_subquery(sql));
    let row: I64Row = diesel::sql_query(&q)
        .get_result(conn)
        .map_err(|e| format!("`{sql}` failed: {e}"))?;
    row.v
        .ok_or_else(|| format!("`{sql}` returned no row or NULL"))
}

fn query_string_on(conn: &mut PgConnection, sql: &str) -> Result<String, String> {
    let q = format!("SELECT ({})::text AS v", scalar_subquery(sql));
    let row: TextRow = diesel::sql_query(&q)
        .get_result(conn)
        .map_err(|e| format!("`{sql}` failed: {e}"))?;
    row.v
        .ok_or_else(|| format!("`{sql}` returned no row or NULL"))
}

/// `n` distinct free TCP ports on 127.0.0.1 (bound together, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = TcpListener::bind(("127.0.0.1", 0)).expect("cannot bind a free port on 127.0.0.1");
        let port = l.local_addr().expect("no local address").port();
        if !RESERVED_PORTS.contains(&port) {
            ports.push(port);
        }
        listeners.push(l);
    }
    ports
}

impl Drop for PgCluster {
    /// Thaws frozen nodes, crashes every server (`pg_ctl stop -m immediate`, in parallel),
    /// kills survivors; the `TempDir` field then removes the directory. Never panics, so it
    /// is safe while a failing test unwinds.
    fn drop(&mut self) {
        let Some(pg) = INSTALL.get() else { return };
        let datas: Vec<PathBuf> = self.nodes.iter().map(|n| n.data.clone()).collect();
        stop_immediately(pg, &datas);
        self.lock_frozen().clear();
    }
}
