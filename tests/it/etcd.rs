//! A real etcd cluster for the fleet tests: members on loopback ports picked by the kernel, data
//! in a temporary directory, every process killed when the value is dropped (a failing test
//! included).
//!
//! The `etcd` binary comes from Debian's `etcd-server` package; `.ci/run` installs it. Without
//! it, [`Etcd::start`] prints a skip line and returns `None`, and the test returns.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader and serve.
const START_TIMEOUT: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running etcd cluster on loopback.
pub(crate) struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    cluster: String,
    /// The initial cluster token: a new one makes a new cluster (a new cluster id).
    token: String,
}

/// A port the kernel hands out now (free for the moment it takes etcd to bind it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

impl Etcd {
    /// Starts `n` members and waits until every one serves; `None` (after a skip line) when
    /// there is no `etcd` binary.
    pub(crate) async fn start(test: &str, n: usize) -> Option<Etcd> {
        if Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!(
                "SKIPPED {test}: no etcd binary on PATH (apt-get install etcd-server; .ci/run does)"
            );
            return None;
        }
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            dir: tempfile::tempdir().expect("create a temporary directory"),
            members,
            cluster,
            token: "meridian-test".to_owned(),
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_healthy().await;
        Some(etcd)
    }

    fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        let data = self.dir.path().join(&member.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))
            .expect("open the member's log");
        let client = format!("http://127.0.0.1:{}", member.client);
        let peer = format!("http://127.0.0.1:{}", member.peer);
        let child = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Client URLs of every member.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// Kills member `i` (as a crash would).
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub(crate) fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    /// Replaces the cluster with a new, empty one on the same ports (a new cluster id, revision
    /// 1), as a restore from an old backup with a new cluster token looks to its clients.
    pub(crate) async fn replace(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
            let data = self.dir.path().join(&self.members[i].name);
            std::fs::remove_dir_all(&data).expect("remove a member's data");
        }
        self.token.push_str("-replaced");
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        self.wait_healthy().await;
    }

    /// Waits until every running member answers `/health` with a leader.
    pub(crate) async fn wait_healthy(&self) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("HTTP client");
        let deadline = Instant::now() + START_TIMEOUT;
        for member in self.members.iter().filter(|m| m.child.is_some()) {
            let url = format!("http://127.0.0.1:{}/health", member.client);
            loop {
                let healthy = match http.get(&url).send().await {
                    Ok(response) => response
                        .text()
                        .await
                        .is_ok_and(|body| body.contains("\"true\"")),
                    Err(_) => false,
                };
                if healthy {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} is not healthy after {START_TIMEOUT:?}; its log is in {}",
                    member.name,
                    self.dir.path().display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
