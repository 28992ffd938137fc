//! Redis processes the test binary owns: single servers and six-node
//! clusters, started from `redis-server` and `redis-cli` on PATH. Each dies
//! with the test binary (`PR_SET_PDEATHSIG`), so none outlives a run.

use crate::helpers::free_port;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// A `redis-server` owned by the test process (killed on drop).
pub struct RedisServer {
    pub port: u16,
    pid: Option<u32>,
}

impl RedisServer {
    pub fn spawn() -> Self {
        Self::spawn_on(free_port())
    }

    pub fn spawn_on(port: u16) -> Self {
        Self::spawn_with(port, &[])
    }

    fn spawn_with(port: u16, extra: &[&str]) -> Self {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let pid = spawn_owned(command).unwrap_or_else(|e| {
            panic!("cannot start redis-server from PATH ({e}); install Redis (redis-server and redis-cli) or set WIZARD_TEST_REDIS_URL")
        });
        let server = Self {
            port,
            pid: Some(pid),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start listening on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freezes (`-STOP`) or thaws (`-CONT`) the server: a Redis that stalls.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid.expect("running").to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }

    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            let pid = pid.to_string();
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            // Gone once its owner thread has reaped it.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline
                && Command::new("kill")
                    .args(["-0", &pid])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// `redis-cli` against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(&[&["-p", &self.port.to_string()], args].concat())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `command` on a thread that lives as long as the child and reaps
/// it; the child is killed if that thread (so the test binary) dies first.
fn spawn_owned(mut command: Command) -> std::io::Result<u32> {
    let (sent, started) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match command.spawn() {
            Ok(mut child) => {
                let _ = sent.send(Ok(child.id()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = sent.send(Err(e));
            }
        }
    });
    started.recv().expect("the spawning thread answers")
}

pub fn redis_cli(args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli from PATH ({e}); install Redis"));
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// A Redis Cluster of three primaries with one replica each.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: PathBuf,
}

impl RedisCluster {
    pub fn spawn() -> Self {
        let dir =
            std::env::temp_dir().join(format!("signin-wizard-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_arg = dir.to_string_lossy().into_owned();
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let port = free_port();
                let config = format!("nodes-{port}.conf");
                RedisServer::spawn_with(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &config,
                        "--cluster-node-timeout",
                        "1000",
                        "--dir",
                        &dir_arg,
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        let created = redis_cli(&args);
        assert!(
            created.contains("All 16384 slots covered"),
            "redis-cli --cluster create: {created}"
        );
        let cluster = Self { nodes, dir };
        cluster.wait_until_healthy();
        cluster
    }

    /// A node to give the client (it finds the others).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Waits until every node sees the cluster as ok, with every replica in sync.
    pub fn wait_until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let healthy = self.nodes.iter().all(|n| {
                n.cli(&["cluster", "info"]).contains("cluster_state:ok")
                    && !n.cli(&["cluster", "nodes"]).contains("fail")
            }) && self
                .nodes
                .iter()
                .filter(|n| n.cli(&["role"]).starts_with("slave"))
                .all(|n| {
                    n.cli(&["info", "replication"])
                        .contains("master_link_status:up")
                });
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node serving `key`'s slot as primary, and its replica.
    pub fn primary_and_replica_of(&self, key: &str) -> (&RedisServer, &RedisServer) {
        let slot: u16 = self.nodes[0]
            .cli(&["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        let table = self.nodes[0].cli(&["cluster", "nodes"]);
        // Each line: id host:port@bus flags primary-id ping pong epoch link slots...
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let primary = lines
            .iter()
            .find(|f| {
                f.len() > 8 && f[2].contains("master") && f[8..].iter().any(|r| owns(r, slot))
            })
            .expect("a primary owns every slot");
        let replica = lines
            .iter()
            .find(|f| f.len() > 3 && f[2].contains("slave") && f[3] == primary[0])
            .expect("every primary has a replica");
        (self.node_at(primary[1]), self.node_at(replica[1]))
    }

    /// How many slots `node` serves as primary.
    pub fn slots_of(&self, node: &RedisServer) -> usize {
        let table = node.cli(&["cluster", "nodes"]);
        let mine = table
            .lines()
            .find(|l| l.contains("myself"))
            .expect("itself");
        mine.split_whitespace()
            .skip(8)
            .map(|range| match range.split_once('-') {
                Some((from, to)) => {
                    to.parse::<usize>().unwrap() - from.parse::<usize>().unwrap() + 1
                }
                None => 1,
            })
            .sum()
    }

    fn node_at(&self, address: &str) -> &RedisServer {
        let port: u16 = address
            .split(['@', ':'])
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("host:port@bus");
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("one of ours")
    }
}

/// Whether a slot range of `CLUSTER NODES` (`5461` or `0-5460`) holds `slot`.
fn owns(range: &str, slot: u16) -> bool {
    match range.split_once('-') {
        Some((from, to)) => from
            .parse::<u16>()
            .ok()
            .zip(to.parse::<u16>().ok())
            .is_some_and(|(from, to)| (from..=to).contains(&slot)),
        None => range.parse::<u16>().is_ok_and(|s| s == slot),
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cluster the ordinary tests share, isolated by key prefix:
/// WIZARD_TEST_REDIS_CLUSTER_URL, or one started for this test binary.
pub fn shared_cluster_url() -> String {
    static SHARED: OnceLock<(String, Option<Mutex<RedisCluster>>)> = OnceLock::new();
    SHARED
        .get_or_init(|| match std::env::var("WIZARD_TEST_REDIS_CLUSTER_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let cluster = RedisCluster::spawn();
                (cluster.url(), Some(Mutex::new(cluster)))
            }
        })
        .0
        .clone()
}
