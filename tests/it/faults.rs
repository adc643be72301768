//! The state store on a full disk, over real HTTP and DNS: the control plane turns read-only
//! (503 with a JSON error), says so in `/readyz`, `/metrics` and `/v1/datacenters`, keeps routing
//! by the last published state however long the outage lasts, and recovers by itself once the
//! disk has room again.
//!
//! The disk is a small tmpfs the test mounts, which needs root; elsewhere the test says why it
//! skips (on stderr, shown with `--nocapture` and in CI's log) and passes.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::{Ask, a_records};
use crate::support::{Setup, TestServer, ZONE, http, send};

const EU_WEST: &str = "example-eu-west-token";
const OPERATOR: &str = "example-operator-token";

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "8m"), or says why it cannot and returns `None`.
    fn mount(size: &str) -> Option<Tmpfs> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned))
            });
        if uid.as_deref() != Some("0") {
            eprintln!(
                "SKIPPED a_full_disk_...: mounting a tmpfs needs root (effective uid {uid:?})"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Tmpfs { dir }),
            Ok(output) => {
                eprintln!(
                    "SKIPPED a_full_disk_...: mount -t tmpfs failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("SKIPPED a_full_disk_...: cannot run mount: {error}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the server's task may still hold the database file for a moment.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes to `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0x5a; 64 * 1024];
    while file
        .write_all(&chunk)
        .and_then(|()| file.sync_all())
        .is_ok()
    {}
}

async fn report(server: &TestServer, load: u32) -> (StatusCode, Value) {
    send(
        http()
            .put(server.url("/v1/datacenters/eu-west/report"))
            .bearer_auth(EU_WEST)
            .json(
                &json!({"healthy": true, "capacity": 1000, "load": load, "latency_ms": {"GB": 12}}),
            ),
    )
    .await
}

async fn text(server: &TestServer, path: &str) -> (StatusCode, String) {
    let response = http()
        .get(server.url(path))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("HTTP request");
    (response.status(), response.text().await.expect("body"))
}

async fn eu_west_view(server: &TestServer) -> Value {
    let (_, body) = text(server, "/v1/datacenters/eu-west").await;
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test]
async fn a_full_disk_makes_the_control_plane_read_only_and_it_recovers_by_itself() {
    let Some(disk) = Tmpfs::mount("8m") else {
        return;
    };
    let state: PathBuf = disk.path().join("state");
    let mut setup = Setup::new(&crate::control::config(), ZONE);
    setup.state_dir = Some(state);
    let server = TestServer::launch(setup).await;
    let (status, body) = report(&server, 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let filler = disk.path().join("filler");
    fill(&filler);
    // The database may still have free pages; keep writing until it needs a new one.
    let mut refused = None;
    for load in 2..400 {
        let (status, body) = report(&server, load).await;
        if status != StatusCode::OK {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("a full disk refuses a write");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "read_only", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    // Later writes get the same clear answer, not redb's "previous I/O error".
    let (status, body) = report(&server, 500).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "read_only", "{body}");

    // Each failed write is kept for operators, with what was being written, and counted.
    let errors: Value = http()
        .get(server.url("/v1/errors"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("GET /v1/errors")
        .json()
        .await
        .expect("JSON");
    let kept = errors.as_array().expect("a list");
    assert!(kept.len() >= 2, "{errors}");
    assert_eq!(kept[0]["kind"], "store", "{errors}");
    assert_eq!(kept[0]["context"], "store apply report eu-west", "{errors}");
    assert!(!kept[0]["message"].as_str().unwrap_or_default().is_empty());

    let (status, ready) = text(&server, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.contains("state store"), "{ready}");
    let (_, metrics) = text(&server, "/metrics").await;
    assert!(metrics.contains("meridian_store_writable 0"), "{metrics}");
    assert!(
        metrics.contains("meridian_internal_errors_total{kind=\"store\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("meridian_store_write_failures_total 0"),
        "{metrics}"
    );

    // Two minutes without a stored report: far past the TTL (15 s) and grace (30 s), yet
    // eu-west keeps its traffic, because the outage is ours, not eu-west's.
    server.advance(Duration::from_secs(120)).await;
    let view = eu_west_view(&server).await;
    assert_eq!(view["frozen"], true, "{view}");
    assert_eq!(view["freshness"], "fresh", "{view}");
    let answer = a_records(
        &Ask::new("www.example.com", RecordType::A)
            .ecs("81.2.69.0/24")
            .udp(server.udp)
            .await,
    );
    assert_eq!(answer, [Ipv4Addr::new(192, 0, 2, 3)]);

    // Room again: the store reopens by itself and the next report is stored.
    std::fs::remove_file(&filler).expect("remove the filler");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = report(&server, 600).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = text(&server, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let (_, metrics) = text(&server, "/metrics").await;
    assert!(metrics.contains("meridian_store_writable 1"), "{metrics}");
    let view = eu_west_view(&server).await;
    assert_eq!(view["frozen"], false, "{view}");
    assert_eq!(view["load"], 600.0, "{view}");
    let (status, audit) = text(&server, "/v1/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    assert!(audit.contains("\"load\":600"), "{audit}");
}
