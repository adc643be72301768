//! Operating a running server: feature toggles, banned queries, the query log and error
//! collection, each driven over real HTTP and checked in real DNS answers.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::Ask;
use crate::policies::{a, ip, policies};
use crate::support::{Setup, TestServer, ZONE, http, send};

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
    let mut request = http().request(method, server.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
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

/// Whether a UDP query gets any reply within 300 ms.
async fn udp_replies(server: &TestServer, ask: &Ask) -> bool {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    socket.connect(server.udp).await.expect("connect");
    socket.send(&ask.to_bytes()).await.expect("send");
    let mut buf = vec![0; 4096];
    tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf))
        .await
        .is_ok()
}

/// Rules by name and qtype, by suffix, and by a byte pattern: matching queries are REFUSED (UDP
/// and TCP) or dropped, others are answered; each rule is counted, listed, audited, kept across a
/// restart and removed again.
#[tokio::test]
async fn banned_queries_are_refused_or_dropped_before_any_other_work() {
    let state = tempfile::tempdir().expect("a state directory");
    let launch = || {
        let mut setup = Setup::new(&policies(), ZONE);
        setup.state_dir = Some(state.path().to_path_buf());
        TestServer::launch(setup)
    };
    let server = launch().await;
    let rcode = |reply: hickory_proto::op::Message| reply.metadata.response_code;
    let www_txt = Ask::new("www.example.com", RecordType::TXT);
    let www_a = Ask::new("www.example.com", RecordType::A).ecs(LONDON);
    assert_eq!(rcode(www_txt.udp(server.udp).await), ResponseCode::NoError);

    let post = |body: Value| {
        call(
            &server,
            reqwest::Method::POST,
            "/v1/banned",
            OPERATOR,
            Some(body),
        )
    };
    let (status, refused) = post(json!({"suffix": "Example.com.", "qtype": "txt"})).await;
    assert_eq!(status, StatusCode::OK, "{refused}");
    let refused_id = refused["id"].as_str().expect("an id").to_owned();
    for _ in 0..2 {
        assert_eq!(rcode(www_txt.udp(server.udp).await), ResponseCode::Refused);
    }
    assert_eq!(rcode(www_txt.tcp(server.tcp).await), ResponseCode::Refused);
    assert_eq!(
        a(&server, "www.example.com", LONDON).await,
        [ip(3), ip(1)],
        "A still answered"
    );
    // The same rule again keeps one.
    let (_, again) = post(json!({"suffix": "example.com", "qtype": "TXT"})).await;
    assert_ne!(
        again["id"], refused["id"],
        "written differently, another rule"
    );

    let (status, dropped) = post(json!({"name": "api.example.com", "action": "drop"})).await;
    assert_eq!(status, StatusCode::OK, "{dropped}");
    let api = Ask::new("api.example.com", RecordType::A);
    assert!(!udp_replies(&server, &api).await, "dropped");
    assert!(udp_replies(&server, &www_a).await);
    // A byte pattern: the opcode NOTIFY (4) in the flags' high octet (offset 2).
    let (status, _) = post(json!({"bytes": {"offset": 2, "hex": "20"}, "action": "drop"})).await;
    assert_eq!(status, StatusCode::OK);
    let notify =
        Ask::new("www.example.com", RecordType::SOA).op_code(hickory_proto::op::OpCode::Notify);
    assert!(!udp_replies(&server, &notify).await, "dropped by its bytes");

    let (_, listed) = call(&server, reqwest::Method::GET, "/v1/banned", OPERATOR, None).await;
    let rule = listed
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["id"] == refused_id.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(rule["suffix"], "Example.com.", "{listed}");
    assert_eq!(rule["qtype"], "TXT");
    assert_eq!(rule["action"], "refuse");
    assert_eq!(rule["matched"], 3, "{listed}");
    let scraped = metrics(&server).await;
    assert!(
        scraped.contains(&format!(
            "meridian_dns_banned_queries_total{{rule=\"{refused_id}\"}} 3"
        )),
        "{scraped}"
    );
    let (_, audit) = call(&server, reqwest::Method::GET, "/v1/audit", OPERATOR, None).await;
    assert!(
        audit.as_array().is_some_and(|entries| entries
            .iter()
            .any(|e| e["action"] == "ban" && e["target"] == refused_id.as_str())),
        "{audit}"
    );

    // Kept across a restart.
    server.stop().await.expect("a clean stop");
    let server = launch().await;
    assert_eq!(rcode(www_txt.udp(server.udp).await), ResponseCode::Refused);
    assert!(!udp_replies(&server, &api).await);

    let delete = |id: String| {
        let server = &server;
        async move {
            let path = format!("/v1/banned/{id}");
            call(server, reqwest::Method::DELETE, &path, OPERATOR, None).await
        }
    };
    let (status, _) = delete(refused_id.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = delete(refused_id.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = delete(dropped["id"].as_str().unwrap_or_default().to_owned()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(udp_replies(&server, &api).await, "answered again");
    let scraped = metrics(&server).await;
    assert!(
        !scraped.contains(&refused_id),
        "a removed rule is not exported"
    );
}

#[tokio::test]
async fn bad_banned_rules_are_refused_with_the_reason() {
    let server = TestServer::start(&policies(), ZONE).await;
    for (body, says) in [
        (json!({}), "a rule needs"),
        (json!({"name": "a..b"}), "not a domain name"),
        (json!({"qtype": "NOPE"}), "not a record type"),
        (json!({"bytes": {"hex": "abc"}}), "hexadecimal"),
        (
            json!({"name": "x.example.com", "action": "ignore"}),
            "neither drop nor refuse",
        ),
        (
            json!({"name": "x.example.com", "extra": 1}),
            "unknown field",
        ),
    ] {
        let (status, answer) = call(
            &server,
            reqwest::Method::POST,
            "/v1/banned",
            OPERATOR,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            answer["message"].as_str().is_some_and(|m| m.contains(says)),
            "{body} {answer}"
        );
    }
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        "/v1/banned",
        "example-frontend-token",
        Some(json!({"name": "x.example.com"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// The thread that widens decision maps, and the threads it starts (they inherit its name),
/// run at nice 19: widening can take tens of CPU-seconds at production scale, and queries,
/// reports and reloads go first.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn scopes_are_widened_at_the_lowest_cpu_priority() {
    let server = TestServer::start(&policies(), ZONE).await;
    // The server runs once it has answered (its task starts when the test first waits).
    let (status, _) = send(http().get(server.url("/readyz"))).await;
    assert_eq!(status, StatusCode::OK);
    // Servers of other tests in this process have widening threads too: every one counts.
    let mut widening = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("a task").path();
        let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if name.trim_end() != "meridian-widen" {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
            continue;
        };
        // Fields after the name in parentheses start at the third; nice is the nineteenth.
        let after_name = &stat[stat.rfind(')').expect("stat names the thread") + 1..];
        let nice: i32 = after_name
            .split_whitespace()
            .nth(16)
            .and_then(|field| field.parse().ok())
            .expect("a nice value");
        assert_eq!(nice, 19, "{}", task.display());
        widening += 1;
    }
    assert!(widening >= 1, "no meridian-widen thread");
    drop(server);
}
