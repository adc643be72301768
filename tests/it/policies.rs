//! `zones/policies.yaml`, the shipped example of every policy and option, served for real: each
//! service is queried over UDP from the fixture database's places (by ECS), datacenters report
//! over HTTP, and the answers are those the file's comments promise.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::{Ask, a_records, aaaa_records, txt_strings};
use crate::support::{TestServer, ZONE};

/// The shipped file, with the fixture database (written beside it by the test server) and the
/// repository's country table.
pub(crate) fn policies() -> String {
    let countries = concat!(env!("CARGO_MANIFEST_DIR"), "/geodata/countries.csv");
    include_str!("../../zones/policies.yaml")
        .replace(
            "database: ../geodata/geo-whois-asn-country.mmdb",
            "database: geo.mmdb",
        )
        .replace(
            "countries: ../geodata/countries.csv",
            &format!("countries: {countries}"),
        )
}

async fn server() -> TestServer {
    let config = policies();
    assert!(
        config.contains("database: geo.mmdb"),
        "the example names its database"
    );
    TestServer::start(&config, ZONE).await
}

// Client networks of the fixture database.
const LONDON: &str = "81.2.69.0/24";
const SYDNEY: &str = "1.128.0.0/24";
const MOUNTAIN_VIEW: &str = "8.8.8.0/24";
const SAO_PAULO: &str = "200.160.0.0/24";
const SINGAPORE: &str = "2400:cb00::/48";
/// Not in the database: the client cannot be placed.
const NOWHERE: &str = "192.0.2.0/24";

/// The A records of `name` for a client in `ecs`.
pub(crate) async fn a(server: &TestServer, name: &str, ecs: &str) -> Vec<Ipv4Addr> {
    a_records(&Ask::new(name, RecordType::A).ecs(ecs).udp(server.udp).await)
}

pub(crate) fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, last)
}

/// `dc` reports `body` with its own example token.
pub(crate) async fn report(server: &TestServer, dc: &str, body: Value) {
    let response = reqwest::Client::new()
        .put(server.url(&format!("/v1/datacenters/{dc}/report")))
        .bearer_auth(format!("example-{dc}-token"))
        .json(&body)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("HTTP request");
    let status = response.status();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

/// A healthy report of `dc` at `load` of a capacity of 100.
pub(crate) async fn load(server: &TestServer, dc: &str, load: u32) {
    report(
        server,
        dc,
        json!({"healthy": true, "capacity": 100, "load": load}),
    )
    .await;
}

async fn down(server: &TestServer, dc: &str) {
    report(
        server,
        dc,
        json!({"healthy": false, "capacity": 100, "load": 0}),
    )
    .await;
}

#[test]
fn check_config_accepts_the_policies_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/zones/policies.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check-config", "--config", path])
        .output()
        .expect("run meridian check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("6 service(s), 5 datacenter(s)"), "{stdout}");
}

#[tokio::test]
async fn nearest_with_answers_overrides_order_and_require_report() {
    let server = server().await;
    let reply = Ask::new("www.example.com", RecordType::A)
        .ecs(LONDON)
        .udp(server.udp)
        .await;
    // answers: 2, nearest first; ttl: 60.
    assert_eq!(a_records(&reply), [ip(3), ip(1)]);
    assert!(reply.answers.iter().all(|r| r.ttl == 60), "{reply:?}");
    let reply = Ask::new("www.example.com", RecordType::AAAA)
        .ecs(LONDON)
        .udp(server.udp)
        .await;
    assert_eq!(
        aaaa_records(&reply),
        [
            "2001:db8::3".parse::<Ipv6Addr>().unwrap(),
            "2001:db8::1".parse().unwrap()
        ]
    );
    // Overrides by country, continent and network come first; the rest stay nearest first.
    assert_eq!(a(&server, "www.example.com", SYDNEY).await, [ip(2), ip(5)]);
    assert_eq!(
        a(&server, "www.example.com", SAO_PAULO).await,
        [ip(1), ip(5)]
    );
    assert_eq!(
        a(&server, "www.example.com", MOUNTAIN_VIEW).await,
        [ip(3), ip(1)]
    );
    // A client the database cannot place gets the order.
    assert_eq!(a(&server, "www.example.com", NOWHERE).await, [ip(1), ip(3)]);
    // ap-south (require_report) is skipped until it has reported.
    assert_eq!(
        a(&server, "www.example.com", SINGAPORE).await,
        [ip(3), ip(2)]
    );
    load(&server, "ap-south", 10).await;
    assert_eq!(
        a(&server, "www.example.com", SINGAPORE).await,
        [ip(4), ip(3)]
    );
}

#[tokio::test]
async fn nearest_with_capacity_sheds_and_takes_back_with_hysteresis() {
    let server = server().await;
    let api = "api.example.com";
    assert_eq!(a(&server, api, LONDON).await, [ip(13)]);
    load(&server, "eu-west", 90).await;
    assert_eq!(
        a(&server, api, LONDON).await,
        [ip(11)],
        "over the high watermark"
    );
    load(&server, "eu-west", 75).await;
    assert_eq!(
        a(&server, api, LONDON).await,
        [ip(11)],
        "not yet under high - hysteresis"
    );
    load(&server, "eu-west", 40).await;
    assert_eq!(
        a(&server, api, LONDON).await,
        [ip(13)],
        "under the low watermark"
    );
}

#[tokio::test]
async fn metric_ranks_by_reported_latency_and_cost() {
    let server = server().await;
    let edge = "edge.example.com";
    // Nothing reported: latency estimated from distance, cost 0.
    assert_eq!(a(&server, edge, LONDON).await, [ip(23)]);
    // eu-west measures 80 ms to Europe: us-east's estimate (about 64 ms) is better.
    let eu = json!({"healthy": true, "capacity": 100, "load": 0, "latency_ms": {"EU": 80}});
    report(&server, "eu-west", eu).await;
    assert_eq!(a(&server, edge, LONDON).await, [ip(21)]);
    // us-east measures 20 ms to GB but costs 7: 20 + 10 x 7 = 90 > 80.
    let us =
        json!({"healthy": true, "capacity": 100, "load": 0, "latency_ms": {"GB": 20}, "cost": 7});
    report(&server, "us-east", us).await;
    assert_eq!(a(&server, edge, LONDON).await, [ip(23)]);
}

#[tokio::test]
async fn weighted_splits_client_networks_by_weight() {
    let server = server().await;
    let n = 400;
    let mut us_east = 0;
    for i in 0..n {
        let subnet = format!("10.{}.{}.0/24", i / 256, i % 256);
        let first = a(&server, "cdn.example.com", &subnet).await;
        assert_eq!(first.len(), 1, "{subnet}: {first:?}");
        assert!([ip(31), ip(32)].contains(&first[0]), "{subnet}: {first:?}");
        if first[0] == ip(31) {
            us_east += 1;
        }
        // A network keeps its answer.
        assert_eq!(a(&server, "cdn.example.com", &subnet).await, first);
    }
    // Weights 3 : 1, so about 300 of 400 (the hash is fixed, so this never flakes).
    assert!(
        (260..=340).contains(&us_east),
        "{us_east} of {n} on us-east"
    );
}

#[tokio::test]
async fn failover_keeps_a_stale_datacenter_for_its_grace_then_servfails_when_all_are_down() {
    let server = server().await;
    let primary = "primary.example.com";
    // The order, wherever the client is.
    assert_eq!(a(&server, primary, MOUNTAIN_VIEW).await, [ip(43)]);
    assert_eq!(a(&server, primary, SYDNEY).await, [ip(43)]);
    let body = json!({"healthy": true, "capacity": 100, "load": 0, "ttl_seconds": 10});
    report(&server, "eu-west", body).await;
    // Stale after 10 s, kept for staleness_grace_seconds (20) more.
    server.advance(Duration::from_secs(25)).await;
    assert_eq!(a(&server, primary, LONDON).await, [ip(43)]);
    server.advance(Duration::from_secs(10)).await;
    assert_eq!(a(&server, primary, LONDON).await, [ip(41)]);
    // all_down: servfail.
    down(&server, "us-east").await;
    let reply = Ask::new(primary, RecordType::A)
        .ecs(LONDON)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn geofences_keep_clients_inside_and_fail_open_inside() {
    let server = server().await;
    let data = "data.example.com";
    assert_eq!(a(&server, data, LONDON).await, [ip(53)]);
    assert_eq!(a(&server, data, SAO_PAULO).await, [ip(55)]);
    assert_eq!(a(&server, data, MOUNTAIN_VIEW).await, [ip(52)], "no fence");
    // eu-west down: London goes to sa-east, inside its fence, not to the nearer us-east.
    down(&server, "eu-west").await;
    assert_eq!(a(&server, data, LONDON).await, [ip(55)]);
    // Everything inside the fence down: fail open, still inside.
    down(&server, "sa-east").await;
    assert_eq!(a(&server, data, LONDON).await, [ip(53)]);
}

#[tokio::test]
async fn the_directory_answers_from_loopback() {
    let server = server().await;
    let reply = Ask::new("alice.users.example.com", RecordType::TXT)
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let text = txt_strings(&reply.answers[0]).join("");
    assert!(
        ["us-east", "eu-west", "us-west"]
            .iter()
            .any(|dc| text.contains(&format!("serve_from={dc}"))),
        "{text}"
    );
}
