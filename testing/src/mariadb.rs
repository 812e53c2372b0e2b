//! Real MariaDB GTID-replication clusters for integration tests.
//!
//! [`MariaCluster::start`] brings up one primary and N replicas on 127.0.0.1, on free ports,
//! in a throw-away directory (in `/dev/shm` when it exists), with GTID replication
//! (`MASTER_USE_GTID=slave_pos`, `gtid_strict_mode`), and [`Drop`] kills them again, also
//! when the test panics. Replicas run with `read_only=1`; statements of the code under test
//! should run as the user `app` (password `app`), which `read_only` blocks: `root` is not
//! blocked, and a root write on a replica would create an errant GTID that stops
//! replication. Lag: [`pause`](MariaCluster::pause) / [`resume`](MariaCluster::resume) stop
//! and start a replica's SQL thread (its IO thread keeps receiving).
//!
//! SQL of the harness itself goes through the `mariadb` command-line client as `root`.
//! Requirements: `mariadbd`, `mariadb-install-db` and `mariadb` (Debian: `mariadb-server`,
//! `mariadb-client`). Missing binaries make [`MariaCluster::start`] panic: the tests fail,
//! they never skip. Only the ports and directories the harness chose are touched: a system
//! MariaDB may be running on 3306.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Once, OnceLock};

use crate::postgres::{orphaned_dirs, owner_stamp};
use std::thread;
use std::time::{Duration, Instant};

/// How long any wait of this harness may take before it panics.
const DEADLINE: Duration = Duration::from_secs(30);
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(10);

/// A node of a [`MariaCluster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// The primary.
    Primary,
    /// Replica number `i` (from 0).
    Replica(usize),
}

struct NodeProcess {
    dir: PathBuf,
    port: u16,
    child: Child,
    /// Its server id (`--server-id`), for good: it moves with the server on a failover.
    server_id: usize,
    /// Started with `--read-only=1` (a replica).
    read_only: bool,
}

/// A primary and its GTID replicas; see the module docs.
pub struct MariaCluster {
    dir: tempfile::TempDir,
    nodes: Vec<NodeProcess>,
}

impl std::fmt::Debug for MariaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaCluster")
            .field("dir", &self.dir.path())
            .field(
                "ports",
                &self.nodes.iter().map(|n| n.port).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn base_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Prefix of cluster directories (the install cache's name starts `dsmaria-install`).
const CLUSTER_PREFIX: &str = "dsmaria";
/// The file in a cluster directory that names the test process that owns it.
const OWNER_FILE: &str = "owner";

/// Kills and removes clusters left behind by test processes that died without running their
/// destructors (Ctrl-C, SIGKILL, a timeout): only this harness's directories whose owner is
/// gone. Never panics.
fn reap_orphans() {
    static REAP: Once = Once::new();
    REAP.call_once(|| {
        // the install cache has no owner file: never an orphan
        for dir in orphaned_dirs(&base_dir(), CLUSTER_PREFIX, OWNER_FILE) {
            for node in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let Ok(pid) = fs::read_to_string(node.path().join("pid")) else {
                    continue;
                };
                let pid = pid.trim();
                for signal in ["-CONT", "-KILL"] {
                    let _ = Command::new("kill")
                        .args([signal, pid])
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let _ = fs::remove_dir_all(&dir);
        }
    });
}

/// Server options every node gets, and the install run too (so its files fit them).
const SMALL: [&str; 2] = ["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M"];

/// `mariadb-install-db` output, made once (kept across runs, marked complete by a file
/// written last; built aside and renamed, so concurrent test processes never see half of
/// one) and copied per node.
fn install_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = base_dir().join("dsmaria-install-v1");
        if dir.join("complete").exists() {
            return dir;
        }
        let building = base_dir().join(format!("dsmaria-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&building);
        fs::create_dir_all(&building).unwrap();
        let mut cmd = Command::new("mariadb-install-db");
        cmd.args([
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .args(SMALL)
        .arg(format!("--datadir={}", building.join("data").display()));
        if running_as_root() {
            cmd.arg("--user=mysql");
        }
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run mariadb-install-db ({e}): install the MariaDB server (Debian: mariadb-server)")
        });
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(building.join("complete"), "").unwrap();
        if fs::rename(&building, &dir).is_err() {
            // another test process finished first: use its copy
            let _ = fs::remove_dir_all(&building);
        }
        dir
    })
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("cannot bind a free port on 127.0.0.1")
        .port()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(POLL);
    }
}

/// Starts `mariadbd` with `server_id` on `dir` and `port`, read-only or not, with `extra`
/// arguments.
fn spawn_server(dir: &Path, port: u16, server_id: usize, read_only: bool, extra: &[&str]) -> Child {
    let mut cmd = Command::new("mariadbd");
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", dir.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("sock").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .arg(format!("--server-id={server_id}"))
        .arg(format!("--log-bin={}", dir.join("bin").display()))
        .args(SMALL)
        .args([
            "--binlog-format=ROW",
            "--gtid-strict-mode=1",
            "--log-slave-updates",
            "--innodb-flush-log-at-trx-commit=2",
            "--sync-binlog=0",
            "--performance-schema=0",
            "--userstat=1",
            "--skip-name-resolve",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if running_as_root() {
        cmd.arg("--user=mysql");
    }
    if read_only {
        cmd.arg("--read-only=1");
    }
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot start mariadbd ({e}): install the MariaDB server (Debian: mariadb-server)")
    })
}

impl MariaCluster {
    /// A primary and `replicas` replicas, replicating, with the database `test` and the
    /// users `repl` and `app` (all privileges on `test`).
    pub fn start(replicas: usize) -> MariaCluster {
        Self::start_on(replicas, free_port)
    }

    /// [`start`](Self::start), taking each node's first port from `first_port`.
    fn start_on(replicas: usize, mut first_port: impl FnMut() -> u16) -> MariaCluster {
        reap_orphans();
        let cache = install_cache();
        let dir = tempfile::Builder::new()
            .prefix(CLUSTER_PREFIX)
            .tempdir_in(base_dir())
            .unwrap();
        fs::write(dir.path().join(OWNER_FILE), owner_stamp()).unwrap();
        // the servers run as `mysql` when the tests run as root: let them in
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut nodes = Vec::new();
        for i in 0..=replicas {
            let node_dir = dir.path().join(format!("n{i}"));
            let status = Command::new("cp")
                .arg("-a")
                .arg(cache.join("data"))
                .arg(&node_dir)
                .status()
                .unwrap();
            assert!(status.success(), "cannot copy the install cache");
            let port = first_port();
            let child = spawn_server(&node_dir, port, i + 1, i > 0, &[]);
            nodes.push(NodeProcess {
                dir: node_dir,
                port,
                child,
                server_id: i + 1,
                read_only: i > 0,
            });
        }
        let mut cluster = MariaCluster { dir, nodes };
        for k in 0..=replicas {
            // a free port may be taken between choosing it and the server binding it
            // (another test's server, or a client's outgoing connection): move then
            cluster.wait_started(k, true);
        }
        cluster.sql(
            Node::Primary,
            "CREATE USER 'repl'@'%' IDENTIFIED BY 'repl';
             GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
             CREATE USER 'app'@'%' IDENTIFIED BY 'app';
             CREATE DATABASE test;
             GRANT ALL PRIVILEGES ON test.* TO 'app'@'%';
             GRANT SLAVE MONITOR ON *.* TO 'app'@'%';",
        );
        let primary_port = cluster.port(Node::Primary);
        for r in 0..replicas {
            cluster.sql(
                Node::Replica(r),
                &format!(
                    "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary_port}, \
                     MASTER_USER='repl', MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, \
                     MASTER_CONNECT_RETRY=1;
                     START SLAVE;"
                ),
            );
        }
        cluster.wait_all_caught_up();
        cluster
    }

    /// The loopback port `node` listens on.
    pub fn port(&self, node: Node) -> u16 {
        self.nodes[self.index(node)].port
    }

    fn index(&self, node: Node) -> usize {
        match node {
            Node::Primary => 0,
            Node::Replica(i) => i + 1,
        }
    }

    /// The URL the code under test connects with (user `app`, database `test`).
    pub fn url(&self, node: Node) -> String {
        format!("mysql://app:app@127.0.0.1:{}/test", self.port(node))
    }

    /// The URL of database `db` on a node, as `app`.
    pub fn url_of(&self, node: Node, db: &str) -> String {
        format!("mysql://app:app@127.0.0.1:{}/{db}", self.port(node))
    }

    /// Creates database `db` on the primary, for `app`, and waits for the replicas.
    pub fn create_database(&self, db: &str) {
        self.sql(
            Node::Primary,
            &format!("CREATE DATABASE `{db}`; GRANT ALL PRIVILEGES ON `{db}`.* TO 'app'@'%';"),
        );
        self.wait_all_caught_up();
    }

    /// The node's error log (its last `lines` lines), for failure messages.
    /// A server that crashed logs its backtrace and the statement it ran: that part is
    /// shown whole (from `got signal` to the statement) before the tail.
    pub fn log_tail(&self, node: Node, lines: usize) -> String {
        let text = fs::read_to_string(self.nodes[self.index(node)].dir.join("error.log"))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        match all.iter().position(|l| l.contains("got signal")) {
            Some(start) => {
                let end = all[start..]
                    .iter()
                    .position(|l| l.starts_with("Query ("))
                    .map_or(all.len(), |q| (start + q + 2).min(all.len()));
                format!("{}\n...\n{tail}", all[start..end].join("\n"))
            }
            None => tail,
        }
    }

    /// Runs `sql` on a node as `user` (`root`, or `app` with its password) through the
    /// `mariadb` client; the output rows, tab-separated, or the client's error.
    pub fn try_sql_as(&self, node: Node, user: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new("mariadb");
        cmd.args([
            "--no-defaults",
            "--protocol=TCP",
            "-h",
            "127.0.0.1",
            "--batch",
        ])
        .args(["--skip-column-names", "--connect-timeout=5"])
        .arg(format!("--port={}", self.port(node)))
        .arg(format!("--user={user}"));
        if user == "app" {
            cmd.args(["--password=app", "test"]);
        }
        let out = cmd.arg("-e").arg(sql).output().map_err(|e| {
            format!("cannot run the mariadb client ({e}): install it (Debian: mariadb-client)")
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// [`try_sql_as`](Self::try_sql_as) as `root`.
    pub fn try_sql(&self, node: Node, sql: &str) -> Result<String, String> {
        self.try_sql_as(node, "root", sql)
    }

    /// Runs `sql` as `root`; panics with the node's log on failure.
    pub fn sql(&self, node: Node, sql: &str) -> String {
        self.try_sql(node, sql).unwrap_or_else(|e| {
            panic!("{node:?}: `{sql}` failed: {e}\n{}", self.log_tail(node, 20))
        })
    }

    /// The primary's binlog position: every transaction written so far.
    pub fn primary_position(&self) -> String {
        self.sql(Node::Primary, "SELECT @@gtid_binlog_pos")
    }

    /// What replica `i` has applied (`@@gtid_slave_pos`).
    pub fn applied(&self, i: usize) -> String {
        self.sql(Node::Replica(i), "SELECT @@gtid_slave_pos")
    }

    /// Waits until replica `i` has applied `gtid` (a GTID list).
    pub fn wait_applied(&self, i: usize, gtid: &str) {
        let got = self.sql(
            Node::Replica(i),
            &format!("SELECT MASTER_GTID_WAIT('{gtid}', {})", DEADLINE.as_secs()),
        );
        assert_eq!(
            got,
            "0",
            "replica {i} did not apply {gtid}\n{}",
            self.log_tail(Node::Replica(i), 20)
        );
    }

    /// Waits until every replica has applied everything the primary has written.
    pub fn wait_all_caught_up(&self) {
        let pos = self.primary_position();
        for i in 0..self.nodes.len() - 1 {
            self.wait_applied(i, &pos);
        }
    }

    /// Stops replica `i` applying (it keeps receiving): stale for certain until resumed.
    pub fn pause(&self, i: usize) {
        self.sql(Node::Replica(i), "STOP SLAVE SQL_THREAD");
    }

    /// Lets replica `i` apply again; returns once both replication threads run.
    pub fn resume(&self, i: usize) {
        self.sql(Node::Replica(i), "START SLAVE SQL_THREAD");
        self.wait_replicating(i);
    }

    /// Makes replica `i` apply each transaction `seconds` after its commit on the primary
    /// (`MASTER_DELAY`, whole seconds against the binlog's 1-second timestamps: use 2 or
    /// more for a replica that is stale for certain). The server only takes the change with
    /// replication stopped: it is stopped and started again, and this returns once both
    /// threads run and the receiver is connected (a router watching the replica meanwhile
    /// may have seen replication stopped).
    pub fn set_delay(&self, i: usize, seconds: u32) {
        self.sql(
            Node::Replica(i),
            &format!("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = {seconds}; START SLAVE;"),
        );
        self.wait_replicating(i);
    }

    /// Waits until replica `i`'s receiver is connected to its primary and its applier runs
    /// (`Slave_running`).
    pub fn wait_replicating(&self, i: usize) {
        wait_until(&format!("replica {i} to replicate"), || {
            self.sql(
                Node::Replica(i),
                "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                 WHERE VARIABLE_NAME = 'SLAVE_RUNNING'",
            ) == "ON"
        });
    }

    /// Freezes a node (SIGSTOP): it keeps its connections and answers nothing.
    pub fn freeze(&self, node: Node) {
        self.signal(node, "STOP");
        // the signal is delivered asynchronously: wait until every thread has stopped, so
        // that no statement sent after this returns can still be served
        let pid = self.nodes[self.index(node)].child.id();
        wait_until(&format!("{node:?} to stop"), || {
            let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.flatten().all(|t| {
                fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                    // the state follows the parenthesised command name
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                })
            })
        });
    }

    /// Thaws a frozen node (SIGCONT).
    pub fn thaw(&self, node: Node) {
        self.signal(node, "CONT");
    }

    /// Logs every statement a node receives from now on (`mysql.general_log`).
    pub fn log_statements(&self, node: Node) {
        self.sql(
            node,
            "SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1;",
        );
    }

    /// Empties a node's statement log (not binlogged: on a replica that would be an errant
    /// transaction that stops replication).
    pub fn clear_statement_log(&self, node: Node) {
        self.sql(
            node,
            "SET SESSION sql_log_bin = 0; TRUNCATE mysql.general_log;",
        );
    }

    /// How many statements `user` ran on `node` whose text starts with `prefix` (queries
    /// and executions of prepared statements), since [`log_statements`](Self::log_statements).
    pub fn logged(&self, node: Node, user: &str, prefix: &str) -> i64 {
        self.logged_commands(node, user, &["Query", "Execute"], prefix)
    }

    /// How many commands of the `kinds` (`Query`, `Prepare`, `Execute`, ...) `user` sent
    /// `node` with a text that starts with `prefix`.
    pub fn logged_commands(&self, node: Node, user: &str, kinds: &[&str], prefix: &str) -> i64 {
        let kinds = kinds
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ");
        self.sql(
            node,
            &format!(
                "SELECT COUNT(*) FROM mysql.general_log WHERE command_type IN ({kinds}) \
                 AND user_host LIKE '{user}[%' AND argument LIKE '{prefix}%'"
            ),
        )
        .parse()
        .unwrap()
    }

    /// Kills a node (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self, node: Node) {
        let i = self.index(node);
        let _ = self.nodes[i].child.kill();
        let _ = self.nodes[i].child.wait();
    }

    /// Starts a killed node again on its port and data; `extra` server arguments (such as
    /// `--skip-slave-start`).
    pub fn restart(&mut self, node: Node, extra: &[&str]) {
        let i = self.index(node);
        let n = &self.nodes[i];
        let (dir, port, id, read_only) = (n.dir.clone(), n.port, n.server_id, n.read_only);
        self.nodes[i].child = spawn_server(&dir, port, id, read_only, extra);
        // its URLs name this port: it cannot move
        self.wait_started(i, false);
    }

    /// The node at index `k` of `nodes`.
    fn node_at(k: usize) -> Node {
        match k {
            0 => Node::Primary,
            k => Node::Replica(k - 1),
        }
    }

    /// Waits until node `k`'s server accepts connections on its port, and checks that the
    /// server answering there is this one (its data directory): a port taken by another
    /// process makes the server exit, and a client would reach the other one. With
    /// `may_move` the server is started again on another free port; else it panics.
    fn wait_started(&mut self, k: usize, may_move: bool) {
        let node = Self::node_at(k);
        let ours = self.nodes[k].dir.display().to_string();
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {node:?} to accept connections\n{}",
                self.log_tail(node, 20)
            );
            if let Ok(Some(status)) = self.nodes[k].child.try_wait() {
                let log = self.log_tail(node, 20);
                let port = self.nodes[k].port;
                assert!(
                    may_move,
                    "{node:?} exited ({status}) when starting on port {port}\n{log}"
                );
                let n = &self.nodes[k];
                let port = free_port();
                eprintln!("{node:?}: port {} is taken, moving to {port}", n.port);
                let (dir, id, read_only) = (n.dir.clone(), n.server_id, n.read_only);
                self.nodes[k].child = spawn_server(&dir, port, id, read_only, &[]);
                self.nodes[k].port = port;
                continue;
            }
            match self.try_sql(node, "SELECT @@datadir") {
                Ok(dir) if dir.trim_end_matches('/') == ours => return,
                // another server on this port: this one exits, see above
                Ok(_) | Err(_) => thread::sleep(POLL),
            }
        }
    }

    /// Fails over to replica `i`, as an orchestrator (MaxScale, Orchestrator, a managed
    /// service) does: kills the primary, stops replica `i`'s replication for good (`STOP
    /// SLAVE; RESET SLAVE ALL`), makes it writable and restarts it on the primary's port, so
    /// that every URL of the primary now reaches it (with its own server id).
    ///
    /// Afterwards [`Node::Primary`] is the promoted server and `Node::Replica(i)` the former
    /// primary's data, stopped, on replica `i`'s old port. The other replicas reconnect to
    /// the primary's address: one that has applied no transaction the new primary lacks
    /// replicates from it (GTID); one that has cannot (`gtid_strict_mode`), and stops with
    /// an error, a history of its own.
    pub fn fail_over(&mut self, i: usize) {
        let k = self.index(Node::Replica(i));
        self.kill(Node::Primary);
        self.sql(
            Node::Replica(i),
            "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0;",
        );
        self.kill(Node::Replica(i));
        let (primary_port, replica_port) = (self.nodes[0].port, self.nodes[k].port);
        self.nodes.swap(0, k);
        self.nodes[0].port = primary_port;
        self.nodes[0].read_only = false;
        self.nodes[k].port = replica_port;
        self.nodes[k].read_only = true;
        self.restart(Node::Primary, &[]);
    }

    /// Copies a killed node's data directory aside, as `name` (a backup to restore later).
    pub fn copy_data(&self, node: Node, name: &str) {
        let from = &self.nodes[self.index(node)].dir;
        let to = self.dir.path().join(name);
        let ok = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(&to)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot copy {} to {}", from.display(), to.display());
    }

    /// Replaces a killed node's data directory with the copy `name` (see `copy_data`).
    pub fn restore_data(&self, node: Node, name: &str) {
        let dir = &self.nodes[self.index(node)].dir;
        fs::remove_dir_all(dir).unwrap();
        let ok = Command::new("cp")
            .arg("-a")
            .arg(self.dir.path().join(name))
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot restore {name} to {}", dir.display());
    }

    fn signal(&self, node: Node, signal: &str) {
        let pid = self.nodes[self.index(node)].child.id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot send SIG{signal} to {node:?} ({pid})");
    }
}

impl Drop for MariaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
        }
        for node in &mut self.nodes {
            let _ = node.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node whose port another process holds starts on another one, and the cluster's
    /// URLs reach its own servers (not the process on the taken port).
    #[test]
    fn a_taken_port_moves_the_node_and_no_client_reaches_the_other_process() {
        // another MariaDB server on the port the primary is given first
        let other = MariaCluster::start(0);
        let taken = other.port(Node::Primary);
        let mut first = Some(taken);
        let m = MariaCluster::start_on(1, || first.take().unwrap_or_else(free_port));
        assert_ne!(m.port(Node::Primary), taken);
        let dir = |c: &MariaCluster, node| c.sql(node, "SELECT @@datadir");
        assert_ne!(dir(&m, Node::Primary), dir(&other, Node::Primary));
        // and it replicates: its replica follows this primary, not the other one
        m.sql(
            Node::Primary,
            "CREATE TABLE test.t (id INT PRIMARY KEY); INSERT INTO test.t VALUES (7);",
        );
        m.wait_all_caught_up();
        assert_eq!(m.sql(Node::Replica(0), "SELECT id FROM test.t"), "7");
        assert!(other
            .try_sql(Node::Primary, "SELECT id FROM test.t")
            .is_err());
    }
}
