//! The control plane under abuse, over real HTTP and raw TCP: configuration reads are
//! operator-only and redacted, rate limits per address (before authentication) and per token
//! (after authorization), slow and idle connections are closed, the connection cap holds, a
//! datacenter reporting no capacity takes no traffic, and an import line cannot be unbounded.
//!
//! The state store's faults (a full disk) are in `faults.rs`; the offline state tools and
//! startup on a damaged state file run the binary, in `cli.rs`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{Ask, a_records};
use crate::support::{TestServer, ZONE, http};

const OPERATOR: &str = "example-operator-token";
const FRONTEND: &str = "example-frontend-token";
const EU_WEST: &str = "example-eu-west-token";

/// The control tests' configuration with `settings` added to its `control` section and a user
/// directory.
fn config_with(settings: &str) -> String {
    crate::control::config().replace(
        "\ncontrol:\n",
        &format!(
            "\ndirectory:
  buckets: 64
control:
{settings}"
        ),
    )
}

async fn server_with(settings: &str) -> TestServer {
    TestServer::start(&config_with(settings), ZONE).await
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.expect("HTTP request");
    (response.status(), response.text().await.expect("body"))
}

#[tokio::test]
async fn configuration_reads_are_operator_only_and_carry_no_token_hash() {
    let server = server_with("").await;
    for path in [
        "/v1/config",
        "/v1/config/versions",
        "/v1/config/diff?from=x",
    ] {
        let (status, body) = send(http().get(server.url(path))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let (status, body) = send(http().get(server.url(path)).bearer_auth(EU_WEST)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    let (status, body) = send(http().get(server.url("/v1/config")).bearer_auth(OPERATOR)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    let text = view["text"].as_str().unwrap();
    // The example's operator token hash, and its plaintext (once in a comment), are both gone.
    assert!(
        !text.contains("cadaee6d96cfc6f48b78f8783c9493f48be29ff3e90ac85c219f014cb73b1eae"),
        "{text}"
    );
    assert!(!text.contains(OPERATOR), "{text}");
    assert_eq!(text.matches("sha256: <redacted>").count(), 7, "{text}");

    // A diff against a reloaded configuration shows the change but no hash on either side.
    let first = view["version"].as_str().unwrap().to_owned();
    server.write_config(&config_with("").replace("ttl: 30", "ttl: 60"));
    server.reload().await.expect("reload");
    let (status, diff) = send(
        http()
            .get(server.url(&format!("/v1/config/diff?from={first}")))
            .bearer_auth(OPERATOR),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert!(diff.contains("+    ttl: 60"), "{diff}");
    assert!(!diff.contains("cadaee6d96cf"), "{diff}");
}

#[tokio::test]
async fn a_token_is_not_charged_for_calls_it_may_not_make() {
    let server = server_with("  rate_limit: { per_second: 1, burst: 3 }\n").await;
    let report = json!({"healthy": true, "capacity": 100, "load": 10});
    for _ in 0..10 {
        let (status, body) = send(
            http()
                .put(server.url("/v1/datacenters/us-east/report"))
                .bearer_auth(EU_WEST)
                .json(&report),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    // Ten forbidden calls later, eu-west can still report for itself.
    let (status, body) = send(
        http()
            .put(server.url("/v1/datacenters/eu-west/report"))
            .bearer_auth(EU_WEST)
            .json(&report),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn every_address_is_limited_before_authentication_and_lookups_have_their_own_budget() {
    let server = server_with(
        "  address_rate_limit: { per_second: 1, burst: 5 }
  directory_rate_limit: { per_second: 1, burst: 50 }
",
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, _) = send(
            http()
                .post(server.url("/v1/reload"))
                .bearer_auth("not-a-token"),
        )
        .await;
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    let (status, body) = send(http().get(server.url("/healthz"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("this address"), "{body}");
    // Directory lookups are counted apart: the address's general budget is spent, and the
    // frontend token's general budget (20/s) is far below what a frontend looks up.
    for i in 0..40 {
        let (status, body) = send(
            http()
                .get(server.url(&format!("/v1/users/user-{i}")))
                .bearer_auth(FRONTEND),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "lookup {i}: {body}");
    }
}

#[tokio::test]
async fn a_datacenter_reporting_no_capacity_takes_no_traffic() {
    let server = server_with("").await;
    let answer = || async {
        a_records(
            &Ask::new("api.example.com", RecordType::A)
                .ecs("81.2.69.0/24")
                .udp(server.udp)
                .await,
        )
    };
    assert_eq!(answer().await, [Ipv4Addr::new(192, 0, 2, 13)], "eu-west");
    let (status, body) = send(
        http()
            .put(server.url("/v1/datacenters/eu-west/report"))
            .bearer_auth(EU_WEST)
            .json(&json!({"healthy": true, "capacity": 0, "load": 0})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(answer().await, [Ipv4Addr::new(192, 0, 2, 11)], "us-east");
}

#[tokio::test]
async fn an_import_line_over_the_cap_is_refused_naming_the_line() {
    let server = server_with("").await;
    let long = format!(
        "{{\"user\": \"{}\", \"home\": \"eu-west\", \"replica\": \"us-east\"}}",
        "x".repeat(200_000)
    );
    let body = format!(
        "{{\"user\": \"alice\", \"home\": \"eu-west\", \"replica\": \"us-east\"}}\n{long}\n"
    );
    let (status, text) = send(
        http()
            .post(server.url("/v1/directory/import?confirm=true"))
            .bearer_auth(OPERATOR)
            .body(body),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("line 2 is longer than"), "{text}");
    // Nothing was imported.
    let (_, user) = send(
        http()
            .get(server.url("/v1/users/alice"))
            .bearer_auth(FRONTEND),
    )
    .await;
    assert!(user.contains("\"source\":\"bucket\""), "{user}");
}

/// Reads from `stream` until the server closes it; returns how long that took, or `None` if it
/// was still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + within).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_headers_and_stalled_connections_are_closed() {
    let server = server_with(
        "  header_read_timeout_seconds: 1
  idle_timeout_seconds: 2
",
    )
    .await;
    // A request head trickling in, one byte every 200 ms: cut off after about a second.
    let mut slow = TcpStream::connect(server.http).await.unwrap();
    let trickle = async {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(3), trickle)
        .await
        .ok();
    let took = closed_within(&mut slow, Duration::from_secs(3)).await;
    assert!(took.is_some(), "a slow request head holds its connection");

    // An idle connection that never sends a byte.
    let mut idle = TcpStream::connect(server.http).await.unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(4)).await;
    assert!(took.is_some(), "an idle connection is held");

    // A request whose body stalls halfway.
    let mut stalled = TcpStream::connect(server.http).await.unwrap();
    stalled
        .write_all(
            b"PUT /v1/datacenters/eu-west/report HTTP/1.1\r\nHost: x\r\n\
              Authorization: Bearer example-eu-west-token\r\nContent-Length: 100\r\n\r\n{\"heal",
        )
        .await
        .unwrap();
    let took = closed_within(&mut stalled, Duration::from_secs(5)).await;
    assert!(took.is_some(), "a stalled body holds its connection");
    assert!(took.unwrap() >= Duration::from_millis(1500), "{took:?}");

    // The server still serves.
    let (status, _) = send(http().get(server.url("/healthz"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_control_plane_caps_its_connections() {
    let server = server_with(
        "  max_connections: 3
  header_read_timeout_seconds: 30
",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.http).await.unwrap());
    }
    // Give the server a moment to accept all three.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let refused = quick.get(server.url("/healthz")).send().await;
    assert!(
        refused.is_err(),
        "a fourth connection was served: {refused:?}"
    );
    held.pop();
    let (status, _) = send(http().get(server.url("/healthz"))).await;
    assert_eq!(status, StatusCode::OK, "served once a connection closed");
    let (_, metrics) = send(http().get(server.url("/metrics"))).await;
    assert!(
        metrics.contains("meridian_control_connections "),
        "{metrics}"
    );
}
