//! A Redis server of the test's own: `redis-server` on a free loopback port, keeping nothing
//! on disk, killed when dropped. Requirement: the `redis-server` binary (Debian package
//! `redis-server`; `.ci/run` installs it).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`. A free port may be taken between
    /// choosing it and the server binding it (another test's server, a client's outgoing
    /// connection): the server then exits and is started on another port; a server that
    /// answers is checked to be this one (its directory), never another test's.
    pub(crate) fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let port = TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .expect("cannot bind a free port on 127.0.0.1")
                .port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--daemonize", "no"])
                .args(["--protected-mode", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start redis-server ({e}): install the Redis server (Debian \
                         package `redis-server`; .ci/run does)"
                    )
                });
            loop {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    panic!("redis-server did not answer on port {port}");
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken: another one
                }
                let ours = answers_on(port)
                    && cli_on(port, &["CONFIG", "GET", "dir"]).lines().nth(1)
                        == dir
                            .path()
                            .canonicalize()
                            .ok()
                            .as_deref()
                            .and_then(|p| p.to_str());
                if ours {
                    return RedisServer {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Does it answer `PING` within a second?
    pub(crate) fn answers(&self) -> bool {
        answers_on(self.port)
    }

    /// Runs a command with `redis-cli`; its output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        cli_on(self.port, args)
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} redis-server");
    }

    /// SIGSTOP: it keeps its connections and answers nothing.
    pub(crate) fn freeze(&self) {
        self.signal("-STOP");
    }

    pub(crate) fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Does the server on `port` answer `PING` within a second?
fn answers_on(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Runs a command with `redis-cli` on `port`; its output.
fn cli_on(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (Debian package redis-tools)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-CONT", &self.child.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        self.kill();
    }
}
