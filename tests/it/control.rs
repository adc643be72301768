//! The control plane over real HTTP, checked against real DNS answers: reports, capacity
//! spill, staleness (on the server's manual clock), drains and their safety rail, tokens,
//! limits, explain, reload and configuration versions, metrics, readiness, restarts.

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::{Ask, a_records, reply_ecs, txt_strings};
use crate::support::{CONFIG, Setup, TestServer, ZONE, http, send};

/// The test configuration plus a capacity-aware service and the example's tokens.
pub(crate) fn config() -> String {
    let tokens = meridian::config::EXAMPLE_CONFIG
        .split_once("\ncontrol:\n")
        .expect("the example has a control section")
        .1;
    format!(
        "{CONFIG}  api:
    name: api.example.com
    policy: nearest-with-capacity
    capacity: {{ low_watermark: 0.8, high_watermark: 0.95, hysteresis: 0.05 }}
    pools:
      us-east:  {{ a: [192.0.2.11] }}
      eu-west:  {{ a: [192.0.2.13] }}
      us-west:  {{ a: [192.0.2.12] }}
  solo:
    name: solo.example.com
    policy: nearest
    pools:
      eu-west:  {{ a: [192.0.2.23] }}
control:
{tokens}"
    )
}

const OPERATOR: &str = "example-operator-token";
const EU_WEST: &str = "example-eu-west-token";
const US_EAST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const EU_WEST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

async fn server() -> TestServer {
    TestServer::start(&config(), ZONE).await
}

async fn put_report(
    server: &TestServer,
    dc: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = http()
        .put(server.url(&format!("/v1/datacenters/{dc}/report")))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

pub(crate) async fn post(
    server: &TestServer,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    send(http().post(server.url(path)).bearer_auth(token).json(&body)).await
}

async fn get(server: &TestServer, path: &str) -> (StatusCode, String) {
    get_with(server, path, None).await
}

/// A GET with a bearer token (configuration reads are operator-only).
pub(crate) async fn get_with(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut request = http().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("HTTP request");
    (response.status(), response.text().await.expect("body"))
}

async fn answer(server: &TestServer, name: &str, ecs: &str) -> Vec<Ipv4Addr> {
    a_records(&Ask::new(name, RecordType::A).ecs(ecs).udp(server.udp).await)
}

#[tokio::test]
async fn a_report_changes_answers_as_soon_as_it_is_accepted() {
    let server = server().await;
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [EU_WEST_IP]
    );
    let (status, body) = put_report(
        &server,
        "eu-west",
        Some(EU_WEST),
        json!({"healthy": false, "capacity": 100, "load": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // No wait: the 2xx is sent after the new snapshot is serving.
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [US_EAST_IP]
    );
    let (status, _) = put_report(
        &server,
        "eu-west",
        Some(EU_WEST),
        json!({"healthy": true, "capacity": 100, "load": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [EU_WEST_IP]
    );
}

/// eu-west reports itself healthy with `load` of a capacity of 100.
async fn eu_west_load(server: &TestServer, load: u32) {
    let body = json!({"healthy": true, "capacity": 100, "load": load});
    let (status, reply) = put_report(server, "eu-west", Some(EU_WEST), body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

/// How many of `n` GB /48 networks (inside the fixture's 2a02:8800::/32) get eu-west for `api`.
async fn gb_networks_on_eu_west(server: &TestServer, n: u16) -> usize {
    let mut kept = 0;
    for i in 0..n {
        let reply = Ask::new("api.example.com", RecordType::A)
            .ecs(&format!("2a02:8800:{i:x}::/48"))
            .udp(server.udp)
            .await;
        if a_records(&reply) == [Ipv4Addr::new(192, 0, 2, 13)] {
            kept += 1;
        }
    }
    kept
}

#[tokio::test]
async fn an_overloaded_datacenter_sheds_a_share_of_networks_and_gets_them_back() {
    let server = server().await;
    let n = 300;
    assert_eq!(
        gb_networks_on_eu_west(&server, n).await,
        300,
        "idle: every GB network on eu-west"
    );
    // Utilization 0.9: (0.9 - 0.8) / (0.95 - 0.8) = 2/3 of the networks spill.
    eu_west_load(&server, 90).await;
    let kept = gb_networks_on_eu_west(&server, n).await;
    assert!((70..=130).contains(&kept), "{kept} of {n} kept at 90 %");
    // The same networks keep their answers while nothing changes.
    assert_eq!(gb_networks_on_eu_west(&server, n).await, kept);
    // Over the high watermark: nobody new.
    eu_west_load(&server, 97).await;
    assert_eq!(gb_networks_on_eu_west(&server, n).await, 0);
    // Hysteresis: 0.93 is under the watermark but not under 0.95 - 0.05.
    eu_west_load(&server, 93).await;
    assert_eq!(gb_networks_on_eu_west(&server, n).await, 0);
    // Recovered: everybody back.
    eu_west_load(&server, 40).await;
    assert_eq!(gb_networks_on_eu_west(&server, n).await, 300);
}

#[tokio::test]
async fn a_stale_report_counts_as_down_after_its_grace_period() {
    let server = server().await;
    put_report(
        &server,
        "eu-west",
        Some(EU_WEST),
        json!({"healthy": true, "capacity": 100, "load": 10, "ttl_seconds": 10}),
    )
    .await;
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [EU_WEST_IP]
    );
    // Past its TTL but within the 30 s grace: the last known state (healthy) holds.
    server.advance(Duration::from_secs(25)).await;
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [EU_WEST_IP]
    );
    let (_, body) = get(&server, "/v1/datacenters/eu-west").await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["freshness"], "stale");
    assert_eq!(view["services"]["www"], "stale");
    // Past TTL + grace: down.
    server.advance(Duration::from_secs(20)).await;
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [US_EAST_IP]
    );
    let (_, body) = get(&server, "/v1/datacenters/eu-west").await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["services"]["www"], "stale-past-grace");
    // The metrics say so too.
    let (_, metrics) = get(&server, "/metrics").await;
    assert!(
        metrics.contains("meridian_datacenter_state{datacenter=\"eu-west\",state=\"stale\"} 1"),
        "{metrics}"
    );
    // A fresh report brings it back.
    eu_west_load(&server, 10).await;
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [EU_WEST_IP]
    );
}

#[tokio::test]
async fn drains_move_clients_and_the_last_datacenter_is_protected() {
    let server = server().await;
    let (status, body) = post(
        &server,
        "/v1/datacenters/eu-west/drain",
        OPERATOR,
        json!({}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "solo has only eu-west: {body}"
    );
    assert!(body["message"].as_str().unwrap().contains("solo"), "{body}");
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [EU_WEST_IP],
        "nothing changed"
    );
    // Draining for one service only is fine.
    let (status, body) = post(
        &server,
        "/v1/datacenters/eu-west/drain",
        OPERATOR,
        json!({"service": "www"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [US_EAST_IP]
    );
    assert_eq!(
        answer(&server, "solo.example.com", "81.2.69.0/24").await,
        [Ipv4Addr::new(192, 0, 2, 23)]
    );
    // Forced, the whole datacenter goes; solo fails open (counted).
    let (status, _) = post(
        &server,
        "/v1/datacenters/eu-west/drain",
        OPERATOR,
        json!({"force": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer(&server, "solo.example.com", "81.2.69.0/24").await,
        [Ipv4Addr::new(192, 0, 2, 23)]
    );
    let (_, metrics) = get(&server, "/metrics").await;
    assert!(
        metrics.contains("meridian_routing_failed_open_total{service=\"solo\"} 1"),
        "{metrics}"
    );
    // Undrain brings it back.
    post(
        &server,
        "/v1/datacenters/eu-west/undrain",
        OPERATOR,
        json!({}),
    )
    .await;
    post(
        &server,
        "/v1/datacenters/eu-west/undrain",
        OPERATOR,
        json!({"service": "www"}),
    )
    .await;
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [EU_WEST_IP]
    );
    let (_, body) = get(&server, "/v1/datacenters/eu-west").await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["drained"], false);
}

#[tokio::test]
async fn bad_tokens_and_bodies_are_rejected_and_change_nothing() {
    let server = server().await;
    let healthy_down = json!({"healthy": false, "capacity": 100, "load": 0});
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("wrong-token"), StatusCode::UNAUTHORIZED),
        (Some("example-us-east-token"), StatusCode::FORBIDDEN),
        (Some("example-frontend-token"), StatusCode::FORBIDDEN),
    ] {
        let (got, body) = put_report(&server, "eu-west", token, healthy_down.clone()).await;
        assert_eq!(got, status, "{token:?}: {body}");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{body}"
        );
    }
    for (body, needle) in [
        (
            json!({"healthy": true, "capacity": -1, "load": 0}),
            "capacity",
        ),
        (
            json!({"healthy": true, "capacity": 1, "load": 0, "ttl_seconds": 0}),
            "ttl_seconds",
        ),
        (
            json!({"healthy": true, "capacity": 1, "load": 0, "colour": "blue"}),
            "colour",
        ),
        (
            json!({"healthy": true, "capacity": 1, "load": 0, "latency_ms": {"Europe": 3}}),
            "Europe",
        ),
        (json!({"capacity": 1, "load": 0}), "healthy"),
    ] {
        let (status, reply) = put_report(&server, "eu-west", Some(EU_WEST), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(needle),
            "{needle}: {reply}"
        );
    }
    let response = http()
        .put(server.url("/v1/datacenters/eu-west/report"))
        .bearer_auth(EU_WEST)
        .body(vec![b' '; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = put_report(&server, "mars", Some(OPERATOR), healthy_down.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&server, "/v1/reload", EU_WEST, json!({})).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a datacenter token cannot reload"
    );
    // Nothing changed: eu-west still serves and nothing was audited.
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [EU_WEST_IP]
    );
    let response = http()
        .get(server.url("/v1/audit"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    let audit: Value = response.json().await.unwrap();
    assert_eq!(audit, json!([]));
}

#[tokio::test]
async fn writes_are_audited_in_order() {
    let server = server().await;
    eu_west_load(&server, 10).await;
    post(
        &server,
        "/v1/datacenters/us-east/drain",
        OPERATOR,
        json!({"service": "www"}),
    )
    .await;
    let response = http()
        .get(server.url("/v1/audit"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    let audit: Value = response.json().await.unwrap();
    let entries = audit.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(
        (
            entries[0]["seq"].clone(),
            entries[0]["actor"].clone(),
            entries[0]["action"].clone()
        ),
        (json!(1), json!("example-eu-west"), json!("report"))
    );
    assert_eq!(
        (entries[1]["action"].clone(), entries[1]["target"].clone()),
        (json!("drain"), json!("us-east/www"))
    );
    // Reading the audit log needs an operator.
    let response = http()
        .get(server.url("/v1/audit"))
        .bearer_auth(EU_WEST)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn rate_limits_apply_per_token() {
    let config = config().replace(
        "control:\n",
        "control:\n  rate_limit: { per_second: 1, burst: 3 }\n",
    );
    let server = TestServer::start(&config, ZONE).await;
    let body = json!({"healthy": true, "capacity": 100, "load": 1});
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            put_report(&server, "eu-west", Some(EU_WEST), body.clone())
                .await
                .0,
        );
    }
    assert_eq!(&statuses[..3], [StatusCode::OK; 3]);
    assert!(
        statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Another token has its own budget.
    let (status, _) = put_report(&server, "us-east", Some("example-us-east-token"), body).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn explain_matches_dns_over_http_and_txt() {
    let server = server().await;
    post(
        &server,
        "/v1/datacenters/eu-west/drain",
        OPERATOR,
        json!({"service": "www"}),
    )
    .await;
    let (status, body) = get(
        &server,
        "/v1/explain?name=www.example.com&type=A&ecs=81.2.69.0/24",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let explained: Value = serde_json::from_str(&body).unwrap();
    let reply = Ask::new("www.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .udp(server.udp)
        .await;
    let dns_answer = a_records(&reply)[0].to_string();
    assert!(
        explained["answers"][0]
            .as_str()
            .unwrap()
            .ends_with(&dns_answer),
        "{explained}"
    );
    assert_eq!(
        explained["ecs_scope"],
        u64::from(reply_ecs(&reply).unwrap().scope_prefix())
    );
    assert_eq!(explained["country"], "GB");
    assert_eq!(explained["client_source"], "ecs");
    assert_eq!(explained["network"], "81.2.69.0/24");
    // With eu-west drained, GB answers us-east like the unplaced space around it: the answer
    // holds for all of 64.0.0.0/2 (the fixture places nothing else there).
    assert_eq!(explained["scope_network"], "64.0.0.0/2", "{explained}");
    assert_eq!(explained["ecs_scope"], 2);
    let first = &explained["datacenters"][0];
    assert_eq!(
        (first["name"].clone(), first["rank"].clone()),
        (json!("us-east"), json!(1))
    );
    let eu = explained["datacenters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "eu-west")
        .unwrap();
    assert_eq!(eu["reason"], "skipped: drained");
    assert!(eu["distance_km"].as_f64().unwrap() < 500.0);
    // The same over DNS, from loopback (allowed by default).
    let reply = Ask::new("_explain.www.example.com", RecordType::TXT)
        .ecs("81.2.69.0/24")
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let lines: Vec<String> = reply.answers.iter().flat_map(txt_strings).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("81.2.69.0/24") && l.contains("GB")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("1 us-east")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "- eu-west 460 km: skipped: drained"
                || l.starts_with("- eu-west") && l.ends_with("skipped: drained")),
        "{lines:?}"
    );
    // Bad questions get 400.
    for path in [
        "/v1/explain?name=www.example.com&type=BOGUS",
        "/v1/explain?name=www.example.com&ecs=81.2.69.7/24",
        "/v1/explain",
    ] {
        let (status, _) = get(&server, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
}

#[tokio::test]
async fn explain_over_dns_is_refused_outside_the_allowed_networks() {
    let config = config().replace("control:\n", "control:\n  explain_allow: [192.0.2.0/24]\n");
    let server = TestServer::start(&config, ZONE).await;
    let reply = Ask::new("_explain.www.example.com", RecordType::TXT)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn reload_over_http_reports_problems_and_versions_diff() {
    let server = server().await;
    let (_, body) = get_with(&server, "/v1/config", Some(OPERATOR)).await;
    let first: Value = serde_json::from_str(&body).unwrap();
    let first_version = first["version"].as_str().unwrap().to_owned();
    server.write_config(&config().replace("ttl: 30", "ttl: 60"));
    let (status, body) = post(&server, "/v1/reload", OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second_version = body["version"].as_str().unwrap().to_owned();
    assert_ne!(first_version, second_version);
    let reply = Ask::new("www.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(reply.answers[0].ttl, 60);
    let (status, diff) = get_with(
        &server,
        &format!("/v1/config/diff?from={first_version}&to={second_version}"),
        Some(OPERATOR),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        diff.contains("-    ttl: 30") && diff.contains("+    ttl: 60"),
        "{diff}"
    );
    let (_, versions) = get_with(&server, "/v1/config/versions", Some(OPERATOR)).await;
    let versions: Value = serde_json::from_str(&versions).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 2);
    // A broken file: 422 with every problem, and the running configuration stays.
    server.write_config(&config().replace("a: [192.0.2.3]", "a: [not-an-ip]"));
    let (status, body) = post(&server, "/v1/reload", OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("services.www.pools.eu-west.a[0]"),
        "{body}"
    );
    let (_, body) = get_with(&server, "/v1/config", Some(OPERATOR)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["version"],
        second_version.as_str()
    );
    let (status, _) = get_with(&server, "/v1/config/diff?from=nope", Some(OPERATOR)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_zone_edit_makes_a_new_version_whose_diff_shows_it() {
    let server = server().await;
    let (_, body) = get_with(&server, "/v1/config", Some(OPERATOR)).await;
    let first = serde_json::from_str::<Value>(&body).unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    // Reloading unchanged files is the same version.
    let (status, body) = post(&server, "/v1/reload", OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], first.as_str());

    let old_line = "mail    IN A    192.0.2.25";
    let new_line = "mail    IN A    192.0.2.26";
    assert!(ZONE.contains(old_line), "the example zone has {old_line:?}");
    server.write_zone(&ZONE.replace(old_line, new_line));
    // Versions are listed by when they were first seen.
    server.advance(Duration::from_secs(1)).await;
    let (status, body) = post(&server, "/v1/reload", OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["version"].as_str().unwrap().to_owned();
    assert_ne!(first, second, "a zone edit is a new version");
    let reply = Ask::new("mail.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 26)]);

    let (_, versions) = get_with(&server, "/v1/config/versions", Some(OPERATOR)).await;
    let versions: Value = serde_json::from_str(&versions).unwrap();
    let listed: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [first.as_str(), second.as_str()]);

    let (status, diff) = get_with(
        &server,
        &format!("/v1/config/diff?from={first}"),
        Some(OPERATOR),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let expected = format!("--- example.com.zone {first}\n+++ example.com.zone {second}\n");
    assert!(diff.starts_with(&expected), "{diff}");
    assert!(
        diff.contains(&format!("\n-{old_line}\n+{new_line}\n")),
        "{diff}"
    );
    assert!(
        !diff.contains("configuration "),
        "the configuration did not change:\n{diff}"
    );
}

#[tokio::test]
async fn metrics_count_queries_answers_and_reloads() {
    let server = server().await;
    answer(&server, "www.example.com", "81.2.69.0/24").await;
    Ask::new("nope.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    let (status, metrics) = get(&server, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "meridian_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\"} 1",
        "meridian_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\"} 1",
        "meridian_dns_answers_total{datacenter=\"eu-west\",service=\"www\"} 1",
        "meridian_dns_query_duration_seconds_count 2",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
    assert!(
        !metrics.contains("81.2.69"),
        "no client addresses in labels"
    );
}

/// The value of an unlabelled series in a Prometheus text exposition.
fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

#[tokio::test]
async fn a_burst_of_reloads_builds_once_while_dns_answers() {
    const BUILDS: &str = "meridian_config_builds_total";
    let server = server().await;
    let (_, metrics) = get(&server, "/metrics").await;
    assert_eq!(series(&metrics, BUILDS), 0.0);
    server.write_config(&config().replace("ttl: 30", "ttl: 60"));
    let mut reloads = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let request = http()
            .post(server.url("/v1/reload"))
            .bearer_auth(OPERATOR)
            .json(&json!({}));
        reloads.spawn(async move {
            let response = request.send().await.expect("HTTP request");
            (response.status(), response.json::<Value>().await.unwrap())
        });
    }
    let mut queries = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let udp = server.udp;
        queries.spawn(async move {
            let reply = Ask::new("www.example.com", RecordType::A)
                .ecs("81.2.69.0/24")
                .udp(udp)
                .await;
            a_records(&reply)
        });
    }
    let mut versions = Vec::new();
    while let Some(reply) = reloads.join_next().await {
        let (status, body) = reply.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        versions.push(body["version"].as_str().unwrap().to_owned());
    }
    versions.dedup();
    assert_eq!(
        versions.len(),
        1,
        "every reload serves the new files: {versions:?}"
    );
    while let Some(answer) = queries.join_next().await {
        assert_eq!(answer.unwrap(), [EU_WEST_IP], "answered during the reloads");
    }
    let (_, metrics) = get(&server, "/metrics").await;
    assert_eq!(
        series(&metrics, BUILDS),
        1.0,
        "ten reloads of one change build once"
    );
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [EU_WEST_IP]
    );
    let reply = Ask::new("www.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(reply.answers[0].ttl, 60, "the new configuration serves");
    // Unchanged files build nothing; a change builds again.
    let (status, _) = post(&server, "/v1/reload", OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    server.write_config(&config().replace("ttl: 30", "ttl: 90"));
    let (status, _) = post(&server, "/v1/reload", OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, metrics) = get(&server, "/metrics").await;
    assert_eq!(series(&metrics, BUILDS), 2.0);
}

#[tokio::test]
async fn every_error_is_json_with_one_shape() {
    let server = server().await;
    let client = http();
    let cases = [
        // The router: no such path, no such method (which keeps `Allow`).
        (
            client.get(server.url("/v1/nope")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            client.delete(server.url("/v1/datacenters")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        // Query strings and path parameters that do not parse.
        (
            client.get(server.url("/v1/explain")),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            client
                .get(server.url("/v1/audit?limit=-1"))
                .bearer_auth(OPERATOR),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            client
                .get(server.url("/v1/users/%FF"))
                .bearer_auth(OPERATOR),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // Handlers: tokens, roles, unknown things, bodies, safety rails.
        (
            client.post(server.url("/v1/drain")),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            client.post(server.url("/v1/drain")).bearer_auth(EU_WEST),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            client.get(server.url("/v1/datacenters/mars")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            client
                .put(server.url("/v1/datacenters/eu-west/report"))
                .bearer_auth(EU_WEST)
                .body(vec![b' '; 100_000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            client
                .post(server.url("/v1/datacenters/eu-west/drain"))
                .bearer_auth(OPERATOR)
                .json(&json!({"service": "solo"})),
            StatusCode::CONFLICT,
            "conflict",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.expect("HTTP request");
        let url = response.url().clone();
        assert_eq!(response.status(), status, "{url}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{url}"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(response.headers()["allow"], "GET,HEAD", "{url}");
        }
        let body: Value = response.json().await.expect("a JSON body");
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["error", "message"], "{url}: {body}");
        assert_eq!(body["error"], code, "{url}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{url}");
    }
}

#[tokio::test]
async fn the_served_document_names_this_servers_datacenters() {
    let server = server().await;
    let (status, body) = get(&server, "/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&body).unwrap();
    let names = json!(["us-east", "us-west", "eu-west", "ap-south", "sa-east"]);
    let dc = &doc["paths"]["/v1/datacenters/{dc}"]["get"]["parameters"][0];
    assert_eq!(dc["name"], "dc");
    assert_eq!(dc["schema"]["enum"], names);
    let placement = &doc["components"]["schemas"]["PlacementBody"]["properties"];
    assert_eq!(placement["home"]["enum"], names);
    assert_eq!(placement["replica"]["enum"], names);
    // Operations without parameters did not gain an empty list.
    assert!(doc["paths"]["/healthz"]["get"].get("parameters").is_none());
}

#[tokio::test]
async fn every_documented_route_exists() {
    let server = server().await;
    let (status, body) = get(&server, "/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&body).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let n_operations: usize = paths
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        n_operations,
        meridian::control::ROUTES.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = server.url(&path.replace("{dc}", "us-east"));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = http().request(method.clone(), &url).send().await.unwrap();
            // Without a token or parameters most routes refuse, but none is missing.
            assert!(
                response.status() != StatusCode::NOT_FOUND
                    && response.status() != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {}",
                response.status()
            );
        }
    }
}

#[tokio::test]
async fn readiness_follows_the_instance_drain() {
    let mut setup = Setup::new(&config(), ZONE);
    setup.drained = true;
    let server = TestServer::launch(setup).await;
    let (status, _) = get(&server, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "started --drained");
    let (status, _) = get(&server, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(&server, "/v1/undrain", OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&server, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    // DNS answers all along: draining an instance is for load balancers in front of it.
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [EU_WEST_IP]
    );
}

#[tokio::test]
async fn a_restart_keeps_reports_drains_and_the_audit_log() {
    let state_dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(&config(), ZONE);
    setup.state_dir = Some(state_dir.path().to_owned());
    let server = TestServer::launch(setup).await;
    put_report(
        &server,
        "eu-west",
        Some(EU_WEST),
        json!({"healthy": false, "capacity": 100, "load": 0, "ttl_seconds": 3600}),
    )
    .await;
    post(
        &server,
        "/v1/datacenters/us-east/drain",
        OPERATOR,
        json!({"service": "www"}),
    )
    .await;
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [Ipv4Addr::new(192, 0, 2, 2)]
    );
    server.stop().await.unwrap();

    let mut setup = Setup::new(&config(), ZONE);
    setup.state_dir = Some(state_dir.path().to_owned());
    let server = TestServer::launch(setup).await;
    // The first answer after the restart already knows eu-west is down and us-east drained.
    assert_eq!(
        answer(&server, "www.example.com", "81.2.69.0/24").await,
        [Ipv4Addr::new(192, 0, 2, 2)]
    );
    let (_, body) = get(&server, "/v1/datacenters/eu-west").await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (view["healthy"].clone(), view["unverified"].clone()),
        (json!(false), json!(true))
    );
    let response = http()
        .get(server.url("/v1/audit"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    let audit: Value = response.json().await.unwrap();
    assert_eq!(audit.as_array().unwrap().len(), 2);
    // A fresh report verifies it again.
    eu_west_load(&server, 0).await;
    let (_, body) = get(&server, "/v1/datacenters/eu-west").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["unverified"],
        false
    );
}

#[tokio::test]
async fn the_error_ring_is_operator_only_and_empty_on_a_healthy_server() {
    let server = server().await;
    let (status, _) = get_with(&server, "/v1/errors", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get_with(&server, "/v1/errors", Some(EU_WEST)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = get_with(&server, "/v1/errors", Some(OPERATOR)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "[]");
}
