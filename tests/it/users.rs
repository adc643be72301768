//! The user directory over HTTP and DNS: lookups, pins, failover to the replica, the change
//! limit with dry runs, imports with line-numbered errors, export and restore (whole and one
//! user), restarts, metrics.

use std::net::Ipv4Addr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::{Ask, a_records, txt_strings};
use crate::support::{Setup, TestServer, ZONE, http, send};

const OPERATOR: &str = "example-operator-token";
const FRONTEND: &str = "example-frontend-token";

/// The control test configuration plus a directory over the five datacenters.
pub(crate) fn config() -> String {
    crate::control::config().replace(
        "\ncontrol:\n",
        "\ndirectory:
  buckets: 4096
  zone_name: users.example.com
  frontends:
    us-east:  { a: [192.0.2.101] }
    us-west:  { a: [192.0.2.102] }
    eu-west:  { a: [192.0.2.103] }
    ap-south: { a: [192.0.2.104] }
    sa-east:  { a: [192.0.2.105] }
control:\n",
    )
}

async fn server() -> TestServer {
    TestServer::start(&config(), ZONE).await
}

async fn user(server: &TestServer, id: &str) -> Value {
    let response = http()
        .get(server.url(&format!("/v1/users/{id}")))
        .bearer_auth(FRONTEND)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET /v1/users/{id}");
    response.json().await.unwrap()
}

fn import(server: &TestServer, query: &str, body: String) -> reqwest::RequestBuilder {
    http()
        .post(server.url(&format!("/v1/directory/import{query}")))
        .bearer_auth(OPERATOR)
        .body(body)
}

#[tokio::test]
async fn lookups_follow_the_documented_hash_and_the_bucket_map() {
    let server = server().await;
    let alice = user(&server, "alice").await;
    let bucket = meridian::directory::bucket_of("alice", 4096);
    assert_eq!(alice["bucket"], bucket);
    // The initial layout is round robin over the five datacenters in configuration order.
    let names = ["us-east", "us-west", "eu-west", "ap-south", "sa-east"];
    assert_eq!(alice["home"], names[bucket as usize % 5]);
    assert_eq!(alice["replica"], names[(bucket as usize + 1) % 5]);
    assert_eq!(
        (
            alice["serve_from"].clone(),
            alice["reason"].clone(),
            alice["source"].clone()
        ),
        (alice["home"].clone(), json!("home"), json!("bucket"))
    );
    // Ids are opaque and URL-escaped; a slash is fine.
    let odd = user(&server, "team%2Falice%20smith").await;
    assert_eq!(odd["user"], "team/alice smith");
}

#[tokio::test]
async fn access_and_bad_ids_are_checked() {
    let server = server().await;
    let url = server.url("/v1/users/alice");
    assert_eq!(send(http().get(&url)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(http().get(&url).bearer_auth("example-eu-west-token"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(http().get(&url).bearer_auth(OPERATOR)).await.0,
        StatusCode::OK
    );
    let long = "x".repeat(300);
    let (status, body) = send(
        http()
            .get(server.url(&format!("/v1/users/{long}")))
            .bearer_auth(FRONTEND),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = send(
        http()
            .get(server.url("/v1/users/a%01b"))
            .bearer_auth(FRONTEND),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Frontends read, they do not write.
    let (status, _) = send(
        http()
            .put(server.url("/v1/users/alice/pin"))
            .bearer_auth(FRONTEND)
            .json(&json!({"home": "eu-west", "replica": "us-east"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_pin_overrides_the_bucket_and_the_replica_serves_when_home_is_down() {
    let server = server().await;
    let (status, body) = send(
        http()
            .put(server.url("/v1/users/alice/pin"))
            .bearer_auth(OPERATOR)
            .json(&json!({"home": "eu-west", "replica": "us-east"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice = user(&server, "alice").await;
    assert_eq!(
        (
            alice["home"].clone(),
            alice["replica"].clone(),
            alice["source"].clone()
        ),
        (json!("eu-west"), json!("us-east"), json!("pin"))
    );
    // Home down: the replica, and why.
    send(
        http()
            .put(server.url("/v1/datacenters/eu-west/report"))
            .bearer_auth("example-eu-west-token")
            .json(&json!({"healthy": false, "capacity": 1, "load": 0})),
    )
    .await;
    let alice = user(&server, "alice").await;
    assert_eq!(
        (alice["serve_from"].clone(), alice["reason"].clone()),
        (json!("us-east"), json!("replica"))
    );
    // Both out: the home anyway (fail open), said so.
    send(
        http()
            .post(server.url("/v1/datacenters/us-east/drain"))
            .bearer_auth(OPERATOR)
            .json(&json!({"force": true})),
    )
    .await;
    let alice = user(&server, "alice").await;
    assert_eq!(
        (alice["serve_from"].clone(), alice["reason"].clone()),
        (json!("eu-west"), json!("fallback"))
    );
    // Unpinned: back to the bucket.
    let (status, _) = send(
        http()
            .delete(server.url("/v1/users/alice/pin"))
            .bearer_auth(OPERATOR),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user(&server, "alice").await["source"], "bucket");
    let (_, metrics) = send(http().get(server.url("/metrics"))).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    // alice's own bucket may fail over too (its home may be eu-west), so count the pinned one.
    assert!(
        metrics.contains("meridian_directory_lookups_total{reason=\"replica\",source=\"pin\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("meridian_directory_failovers_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meridian_directory_lookups_total{reason=\"fallback\",source=\"pin\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("meridian_directory_pins 0"), "{metrics}");
}

fn rows(n: usize, home: &str) -> String {
    (0..n)
        .map(|i| {
            format!("{{\"user\": \"user-{i}\", \"home\": \"{home}\", \"replica\": \"us-west\"}}\n")
        })
        .collect()
}

#[tokio::test]
async fn imports_past_the_change_limit_need_confirmation_and_dry_runs_change_nothing() {
    let server = server().await;
    // 200 new pins into an empty directory move (almost) every one of them: over 10 %.
    let (status, report) = send(import(&server, "?dry_run=true", rows(200, "ap-south"))).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (
            report["rows"].clone(),
            report["pins_added"].clone(),
            report["applied"].clone()
        ),
        (json!(200), json!(200), json!(false))
    );
    assert!(report["share"].as_f64().unwrap() > 0.1);
    let (status, report) = send(import(&server, "", rows(200, "ap-south"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{report}");
    assert_eq!(report["applied"], false);
    assert_eq!(
        user(&server, "user-7").await["source"],
        "bucket",
        "nothing applied"
    );
    let (status, report) = send(import(&server, "?confirm=true", rows(200, "ap-south"))).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["applied"], true);
    assert_eq!(user(&server, "user-7").await["home"], "ap-south");
    // Re-importing the same rows changes nobody: within the limit, no confirmation needed.
    let (status, report) = send(import(&server, "", rows(200, "ap-south"))).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["share"], 0.0);
    // CSV, quoted fields, a header.
    let csv =
        "user,home,replica\n\"comma,user\",sa-east,us-east\nplain,sa-east,us-east\n".to_owned();
    let (status, report) = send(import(&server, "?format=csv&confirm=true", csv)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(user(&server, "comma%2Cuser").await["home"], "sa-east");
    // A spreadsheet's export: a UTF-8 byte order mark, a header, CRLF line ends.
    let csv = "\u{feff}user,home,replica\r\nbom-user,us-west,eu-west\r\n".to_owned();
    let (status, report) = send(import(&server, "?format=csv&confirm=true", csv)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["rows"], 1, "the header is not a row: {report}");
    assert_eq!(user(&server, "bom-user").await["home"], "us-west");
    // The same without a header: the first row's user is read without the mark.
    let csv = "\u{feff}bom-first,ap-south,eu-west\n".to_owned();
    let (status, report) = send(import(&server, "?format=csv&confirm=true", csv)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(user(&server, "bom-first").await["home"], "ap-south");
    // And JSON lines may start with one too.
    let ndjson =
        "\u{feff}{\"user\": \"bom-json\", \"home\": \"sa-east\", \"replica\": \"eu-west\"}\n";
    let (status, report) = send(import(&server, "?confirm=true", ndjson.to_owned())).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(user(&server, "bom-json").await["home"], "sa-east");
}

#[tokio::test]
async fn bad_import_rows_are_reported_by_line_and_nothing_is_applied() {
    let server = server().await;
    let body = format!(
        "{}{{\"user\": \"bad\", \"home\": \"mars\", \"replica\": \"us-west\"}}\nnot json\n{{\"user\": \"\", \"home\": \"eu-west\", \"replica\": \"us-west\"}}\n",
        rows(3, "eu-west")
    );
    let (status, error) = send(import(&server, "?confirm=true", body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let message = error["message"].as_str().unwrap();
    for line in [
        "line 4: unknown datacenter \"mars\"",
        "line 5:",
        "line 6: user id",
    ] {
        assert!(message.contains(line), "{line} in {message}");
    }
    assert_eq!(
        user(&server, "user-0").await["source"],
        "bucket",
        "the good rows were not applied either"
    );
    let (status, _) = send(import(&server, "?format=xml", rows(1, "eu-west"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bucket_moves_respect_the_change_limit() {
    let server = server().await;
    let bucket = meridian::directory::bucket_of("alice", 4096);
    let moves = json!({"moves": [{"bucket": bucket, "home": "sa-east", "replica": "ap-south"}]});
    let (status, report) = send(
        http()
            .post(server.url("/v1/directory/buckets"))
            .bearer_auth(OPERATOR)
            .json(&moves),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["buckets_changed"], 1);
    assert_eq!(user(&server, "alice").await["home"], "sa-east");
    // 500 of 4096 buckets is over 10 % (no bucket has this pair yet: sa-east's replica is us-east).
    let many: Vec<Value> = (0..500)
        .map(|b| json!({"bucket": b, "home": "sa-east", "replica": "us-west"}))
        .collect();
    let (status, report) = send(
        http()
            .post(server.url("/v1/directory/buckets"))
            .bearer_auth(OPERATOR)
            .json(&json!({"moves": many})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{report}");
    let (status, _) = send(
        http()
            .post(server.url("/v1/directory/buckets"))
            .bearer_auth(OPERATOR)
            .json(&json!({"moves": [{"bucket": 4096, "home": "us-east", "replica": "us-west"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn export(server: &TestServer) -> String {
    let response = http()
        .get(server.url("/v1/directory/export"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

#[tokio::test]
async fn export_and_restore_whole_or_one_user() {
    let server = server().await;
    send(import(&server, "?confirm=true", rows(50, "eu-west"))).await;
    let saved = export(&server).await;
    assert_eq!(saved.lines().count(), 1 + 4096 + 50);
    // Change two users, then restore only one of them.
    for id in ["user-1", "user-2"] {
        send(
            http()
                .put(server.url(&format!("/v1/users/{id}/pin")))
                .bearer_auth(OPERATOR)
                .json(&json!({"home": "sa-east", "replica": "us-east"})),
        )
        .await;
    }
    let (status, report) = send(
        http()
            .post(server.url("/v1/directory/restore?user=user-1"))
            .bearer_auth(OPERATOR)
            .body(saved.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(user(&server, "user-1").await["home"], "eu-west", "restored");
    assert_eq!(
        user(&server, "user-2").await["home"],
        "sa-east",
        "untouched"
    );
    // A whole restore brings everything back, byte for byte.
    send(
        http()
            .delete(server.url("/v1/users/user-3/pin"))
            .bearer_auth(OPERATOR),
    )
    .await;
    let (status, report) = send(
        http()
            .post(server.url("/v1/directory/restore?confirm=true"))
            .bearer_auth(OPERATOR)
            .body(saved.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(export(&server).await, saved);
    // A damaged export is refused with its line and changes nothing.
    let damaged = saved.replacen("\"eu-west\"", "\"mars\"", 1);
    let (status, error) = send(
        http()
            .post(server.url("/v1/directory/restore?confirm=true"))
            .bearer_auth(OPERATOR)
            .body(damaged),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["message"].as_str().unwrap().contains("line "),
        "{error}"
    );
    assert_eq!(export(&server).await, saved);
}

#[tokio::test]
async fn a_restart_keeps_the_directory() {
    let state_dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(&config(), ZONE);
    setup.state_dir = Some(state_dir.path().to_owned());
    let server = TestServer::launch(setup).await;
    send(
        http()
            .put(server.url("/v1/users/alice/pin"))
            .bearer_auth(OPERATOR)
            .json(&json!({"home": "ap-south", "replica": "sa-east"})),
    )
    .await;
    let bucket = meridian::directory::bucket_of("bob", 4096);
    send(
        http()
            .post(server.url("/v1/directory/buckets"))
            .bearer_auth(OPERATOR)
            .json(&json!({"moves": [{"bucket": bucket, "home": "us-west", "replica": "eu-west"}]})),
    )
    .await;
    let saved = export(&server).await;
    server.stop().await.unwrap();
    let mut setup = Setup::new(&config(), ZONE);
    setup.state_dir = Some(state_dir.path().to_owned());
    let server = TestServer::launch(setup).await;
    assert_eq!(user(&server, "alice").await["home"], "ap-south");
    assert_eq!(user(&server, "bob").await["home"], "us-west");
    assert_eq!(export(&server).await, saved);
}

#[tokio::test]
async fn dns_answers_the_directory_to_allowed_networks() {
    let server = server().await;
    send(
        http()
            .put(server.url("/v1/users/alice/pin"))
            .bearer_auth(OPERATOR)
            .json(&json!({"home": "eu-west", "replica": "us-east"})),
    )
    .await;
    let reply = Ask::new("alice.users.example.com", RecordType::TXT)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let facts = txt_strings(&reply.answers[0]).join("");
    assert!(
        facts.contains("home=eu-west")
            && facts.contains("serve_from=eu-west")
            && facts.contains("source=pin"),
        "{facts}"
    );
    let reply = Ask::new("alice.users.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 103)]);
    // Ids that are not label-safe use the documented base32hex form.
    let label = meridian::directory::id_to_label("Alice.Smith").unwrap();
    assert!(label.starts_with("b32-"), "{label}");
    send(
        http()
            .put(server.url("/v1/users/Alice.Smith/pin"))
            .bearer_auth(OPERATOR)
            .json(&json!({"home": "sa-east", "replica": "us-east"})),
    )
    .await;
    let reply = Ask::new(&format!("{label}.users.example.com"), RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(a_records(&reply), [Ipv4Addr::new(192, 0, 2, 105)]);
    // No AAAA frontends configured: NODATA with the SOA; a bad label: NXDOMAIN.
    let reply = Ask::new("alice.users.example.com", RecordType::AAAA)
        .udp(server.udp)
        .await;
    assert_eq!(
        (
            reply.metadata.response_code,
            reply.answers.len(),
            reply.authorities.len()
        ),
        (ResponseCode::NoError, 0, 1)
    );
    let reply = Ask::new("b32-zzzz.users.example.com", RecordType::TXT)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn dns_refuses_the_directory_outside_its_access_list() {
    let config = config().replace(
        "  zone_name: users.example.com\n",
        "  zone_name: users.example.com\n  allow: [192.0.2.0/24]\n",
    );
    let server = TestServer::start(&config, ZONE).await;
    let reply = Ask::new("alice.users.example.com", RecordType::TXT)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
}
