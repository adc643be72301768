//! Operating a running server: feature toggles, banned queries, the query log and error
//! collection, each driven over real HTTP and checked in real DNS answers.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::Ask;
use crate::policies::{a, ip, policies};
use crate::support::{Setup, TestServer, ZONE};

const OPERATOR: &str = "example-operator-token";
const LONDON: &str = "81.2.69.0/24";

/// Sends `method path` with `body` as the operator (or `token`); status and JSON body.
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, server.url(path))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn toggle(server: &TestServer, name: &str, on: bool) -> (StatusCode, Value) {
    call(
        server,
        reqwest::Method::PUT,
        &format!("/v1/toggles/{name}"),
        OPERATOR,
        Some(json!({ "on": on })),
    )
    .await
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(server.url("/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("a body")
}

/// `api.example.com` is `nearest-with-capacity`: with eu-west over its high watermark, London
/// goes to us-east (192.0.2.11); with capacity spill off it ranks as `nearest` and London gets
/// eu-west (192.0.2.13) again; switched back on, it sheds again. The switch is audited, shown
/// in metrics and explain, and survives a restart.
#[tokio::test]
async fn switching_capacity_spill_off_ranks_as_nearest_and_back() {
    let state = tempfile::tempdir().expect("a state directory");
    let mut setup = Setup::new(&policies(), ZONE);
    setup.state_dir = Some(state.path().to_path_buf());
    let server = TestServer::launch(setup).await;
    let api = "api.example.com";
    let (status, _) = call(
        &server,
        reqwest::Method::PUT,
        "/v1/datacenters/eu-west/report",
        "example-eu-west-token",
        Some(json!({"healthy": true, "capacity": 100, "load": 90, "ttl_seconds": 3600})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(a(&server, api, LONDON).await, [ip(11)], "spilling");

    let (status, body) = toggle(&server, "capacity_spill", false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(a(&server, api, LONDON).await, [ip(13)], "ranked as nearest");
    let (_, list) = call(&server, reqwest::Method::GET, "/v1/toggles", OPERATOR, None).await;
    let spill = list
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["name"] == "capacity_spill")
        .expect("listed");
    assert_eq!(spill["on"], false);
    let scraped = metrics(&server).await;
    assert!(
        scraped.contains("meridian_toggle_enabled{toggle=\"capacity_spill\"} 0"),
        "{scraped}"
    );
    assert!(scraped.contains("meridian_toggle_enabled{toggle=\"rrl\"} 1"));
    let explained: Value =
        reqwest::get(server.url(&format!("/v1/explain?name={api}&ecs={LONDON}")))
            .await
            .expect("explain")
            .json()
            .await
            .expect("JSON");
    assert_eq!(explained["toggles_off"], json!(["capacity_spill"]));
    assert_eq!(
        explained["answers"][0]
            .as_str()
            .map(|a| a.contains("192.0.2.13")),
        Some(true)
    );
    let (_, audit) = call(&server, reqwest::Method::GET, "/v1/audit", OPERATOR, None).await;
    let last = audit
        .as_array()
        .and_then(|entries| entries.last())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(last["action"], "toggle-off", "{audit}");
    assert_eq!(last["target"], "capacity_spill");

    // Restarted on the same state: still off.
    server.stop().await.expect("a clean stop");
    let mut setup = Setup::new(&policies(), ZONE);
    setup.state_dir = Some(state.path().to_path_buf());
    let server = TestServer::launch(setup).await;
    assert_eq!(
        a(&server, api, LONDON).await,
        [ip(13)],
        "still off after a restart"
    );

    let (status, _) = toggle(&server, "capacity_spill", true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(a(&server, api, LONDON).await, [ip(11)], "spilling again");
}

#[tokio::test]
async fn toggles_are_operator_only_and_named() {
    let server = TestServer::start(&policies(), ZONE).await;
    let (status, body) = toggle(&server, "warp_drive", false).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("capacity_spill")),
        "{body}"
    );
    let (status, _) = call(
        &server,
        reqwest::Method::PUT,
        "/v1/toggles/rrl",
        "example-frontend-token",
        Some(json!({"on": false})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &server,
        reqwest::Method::GET,
        "/v1/toggles",
        "example-frontend-token",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &server,
        reqwest::Method::PUT,
        "/v1/toggles/rrl",
        OPERATOR,
        Some(json!({"on": "no"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// `www.example.com`'s overrides (a network and a country) and the directory over DNS, switched
/// off and on again.
#[tokio::test]
async fn overrides_and_the_directory_over_dns_switch_off() {
    let server = TestServer::start(&policies(), ZONE).await;
    let www = "www.example.com";
    let (mountain_view, sao_paulo) = ("8.8.8.0/24", "200.160.0.0/24");
    assert_eq!(
        a(&server, www, mountain_view).await,
        [ip(3), ip(1)],
        "network override"
    );
    assert_eq!(
        a(&server, www, sao_paulo).await[0],
        ip(1),
        "continent override"
    );
    let (status, _) = toggle(&server, "overrides", false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        a(&server, www, mountain_view).await[0],
        ip(2),
        "nearest: us-west"
    );
    assert_eq!(
        a(&server, www, sao_paulo).await[0],
        ip(5),
        "nearest: sa-east"
    );
    toggle(&server, "overrides", true).await;
    assert_eq!(a(&server, www, mountain_view).await, [ip(3), ip(1)]);

    let user = Ask::new("alice.users.example.com", RecordType::TXT);
    let rcode = |reply: hickory_proto::op::Message| reply.metadata.response_code;
    assert_eq!(rcode(user.udp(server.udp).await), ResponseCode::NoError);
    let (status, _) = toggle(&server, "directory_dns", false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rcode(user.udp(server.udp).await), ResponseCode::Refused);
    // HTTP lookups go on.
    let (status, _) = call(
        &server,
        reqwest::Method::GET,
        "/v1/users/alice",
        "example-frontend-token",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    toggle(&server, "directory_dns", true).await;
    assert_eq!(rcode(user.udp(server.udp).await), ResponseCode::NoError);
}
