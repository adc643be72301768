//! `meridian ctl`: the real binary against a running in-process server, checked against what
//! the control plane and DNS then say: tables by default, the server's JSON with `--json`, the
//! token from `MERIDIAN_TOKEN` or `--token-file`, and exit code 1 with the server's message on
//! an error.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::client::{Ask, a_records};
use crate::control::config;
use crate::support::{TestServer, ZONE};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
const OPERATOR: &str = "example-operator-token";
const EU_WEST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

/// Runs `meridian ctl --server <server> args…` with `token` in `MERIDIAN_TOKEN` (or none), off
/// the runtime's worker threads so the in-process server keeps serving meanwhile.
pub(crate) async fn ctl(server: &TestServer, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .env_remove("RUST_LOG")
        .env_remove("MERIDIAN_TOKEN")
        .env("NO_COLOR", "1")
        .arg("ctl")
        .arg("--server")
        .arg(server.url(""))
        .args(args)
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("MERIDIAN_TOKEN", token);
    }
    tokio::task::spawn_blocking(move || command.output().expect("run meridian ctl"))
        .await
        .expect("the blocking task finishes")
}

pub(crate) fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "ctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 output")
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).expect("--json prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_undrain_through_ctl_change_dns_answers() {
    let server = TestServer::start(&config(), ZONE).await;
    let ask = || Ask::new("www.example.com", RecordType::A).ecs("81.2.69.0/24");
    assert_eq!(a_records(&ask().udp(server.udp).await), [EU_WEST_IP]);

    // The human table: a header, then one row per datacenter in configuration order.
    let table = stdout(&ctl(&server, None, &["datacenters"]).await);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert_eq!(lines.len(), 6, "{table}");
    assert!(lines[3].starts_with("eu-west"), "{table}");

    // `solo` is served only from eu-west: the safety rail refuses, and ctl shows why.
    let refused = ctl(&server, Some(OPERATOR), &["drain", "eu-west"]).await;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("409") && stderr.contains("solo"),
        "{stderr}"
    );
    let drained = json(
        &ctl(
            &server,
            Some(OPERATOR),
            &["--json", "drain", "eu-west", "--service", "www"],
        )
        .await,
    );
    assert_eq!(drained["target"], "eu-west/www", "{drained}");
    assert_ne!(a_records(&ask().udp(server.udp).await), [EU_WEST_IP]);
    let view = json(&ctl(&server, None, &["--json", "datacenters", "eu-west"]).await);
    assert_eq!(view["drained_services"][0], "www", "{view}");

    stdout(
        &ctl(
            &server,
            Some(OPERATOR),
            &["undrain", "eu-west", "--service", "www"],
        )
        .await,
    );
    assert_eq!(a_records(&ask().udp(server.udp).await), [EU_WEST_IP]);

    // Both writes are in the audit log, which the table shows with the operator's token name.
    let audit = json(&ctl(&server, Some(OPERATOR), &["--json", "audit"]).await);
    let actions: Vec<&str> = audit
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|entry| entry["action"].as_str())
        .collect();
    assert!(actions.ends_with(&["drain", "undrain"]), "{audit}");
    let table = stdout(&ctl(&server, Some(OPERATOR), &["audit"]).await);
    assert!(
        table.lines().count() >= 3 && table.contains("undrain"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_a_file_and_errors_exit_1_with_the_servers_message() {
    let server = TestServer::start(&config(), ZONE).await;
    // Without a token an operator read is refused: exit 1, the status and message on stderr.
    let refused = ctl(&server, None, &["config", "versions"]).await;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401"), "{stderr}");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{OPERATOR}\n")).expect("write the token file");
    let file = file.to_str().expect("a UTF-8 path");
    let versions = json(
        &ctl(
            &server,
            Some("wrong"),
            &["--token-file", file, "--json", "config", "versions"],
        )
        .await,
    );
    let running = versions
        .as_array()
        .expect("a list")
        .iter()
        .find(|v| v["running"] == true)
        .expect("the running version is listed");
    assert!(running["version"].is_string(), "{versions}");

    // A report sent through ctl is what the server then holds.
    stdout(
        &ctl(
            &server,
            Some(OPERATOR),
            &["report", "us-west", "--capacity", "100", "--load", "40"],
        )
        .await,
    );
    let view = json(&ctl(&server, None, &["--json", "datacenters", "us-west"]).await);
    assert_eq!(view["load"], 40.0, "{view}");
    assert_eq!(view["healthy"], true, "{view}");

    // Explain prints key/value lines; an unknown datacenter is a 404 with its message.
    let explained = stdout(
        &ctl(
            &server,
            Some(OPERATOR),
            &["explain", "www.example.com", "--client", "81.2.69.1"],
        )
        .await,
    );
    assert!(
        explained.lines().any(|l| l.starts_with("rcode")),
        "{explained}"
    );
    let missing = ctl(&server, None, &["datacenters", "nowhere"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));

    // status: readiness, then the datacenters.
    let status = stdout(&ctl(&server, None, &["status"]).await);
    assert!(status.starts_with("ready"), "{status}");

    // An in-process server has no reloadable log filter: 503, and ctl says so.
    let fixed = ctl(&server, Some(OPERATOR), &["log", "debug"]).await;
    assert_eq!(fixed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&fixed.stderr);
    assert!(
        stderr.contains("503") && stderr.contains("runtime"),
        "{stderr}"
    );

    // Nothing listens: exit 1, saying so.
    let closed = Command::new(BIN)
        .args(["ctl", "--server", "http://127.0.0.1:1", "status"])
        .output()
        .expect("run meridian ctl");
    assert_eq!(closed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&closed.stderr).contains("cannot reach"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toggles_through_ctl() {
    let server = TestServer::start(&config(), ZONE).await;
    let table = stdout(&ctl(&server, Some(OPERATOR), &["toggles"]).await);
    assert!(table.contains("capacity_spill"), "{table}");
    let switched = json(
        &ctl(
            &server,
            Some(OPERATOR),
            &["--json", "toggles", "off", "rrl"],
        )
        .await,
    );
    assert_eq!(switched["action"], "toggle-off", "{switched}");
    let listed = json(&ctl(&server, Some(OPERATOR), &["--json", "toggles"]).await);
    let rrl = listed
        .as_array()
        .and_then(|all| all.iter().find(|t| t["name"] == "rrl"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(rrl["on"], false, "{listed}");
    let unknown = ctl(&server, Some(OPERATOR), &["toggles", "on", "warp"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no toggle"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn querylog_through_ctl() {
    let server = TestServer::start(&config(), ZONE).await;
    let table = stdout(&ctl(&server, Some(OPERATOR), &["querylog"]).await);
    assert!(table.contains("stderr"), "{table}");
    let changed = json(
        &ctl(
            &server,
            Some(OPERATOR),
            &[
                "--json",
                "querylog",
                "--sample",
                "0.01",
                "--revert-after-seconds",
                "60",
            ],
        )
        .await,
    );
    assert_eq!(changed["sample"], 0.01, "{changed}");
    assert_eq!(changed["revert_after_seconds"], 60, "{changed}");
    let shown = json(&ctl(&server, Some(OPERATOR), &["--json", "querylog"]).await);
    assert_eq!(shown["sample"], 0.01, "{shown}");
    assert_eq!(shown["configured_sample"], 0.0, "{shown}");
    let refused = ctl(&server, Some(OPERATOR), &["querylog", "--sample", "2"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("400"));
}
