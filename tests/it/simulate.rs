//! What-if, checked against what the server then really answers: traffic from varied client
//! networks is recorded, `POST /v1/simulate` predicts a drain, the drain is made, the same
//! queries are asked again over DNS and the answers are compared with the prediction. Also the
//! drain's capacity rail (409 with the findings, then forced), `meridian ctl simulate`, and
//! `meridian simulate` offline against a sample file and against the server.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::{Ask, a_records, aaaa_records};
use crate::control::{config, get_with, post};
use crate::ctl::{ctl, stdout};
use crate::support::{TestServer, ZONE};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
const OPERATOR: &str = "example-operator-token";

/// Service, ECS network, queries: GB (eu-west), the US by country (us-east), Mountain View
/// (us-west), Australia and Singapore (ap-south), Brazil (sa-east), an unplaced network (the
/// configured order), over IPv4 and IPv6.
const TRAFFIC: &[(&str, &str, usize)] = &[
    ("www", "81.2.69.0/24", 7),
    ("www", "3.0.0.0/24", 5),
    ("www", "3.1.2.0/24", 2),
    ("www", "8.8.8.0/24", 3),
    ("www", "1.128.0.0/24", 4),
    ("www", "1.128.9.0/24", 1),
    ("www", "200.160.0.0/24", 2),
    ("www", "198.51.100.0/24", 1),
    ("www", "2a02:8800::/48", 3),
    ("www", "2400:cb00::/48", 2),
    ("api", "81.2.69.0/24", 6),
    ("api", "3.0.0.0/24", 3),
    ("api", "8.8.8.0/24", 2),
    ("solo", "81.2.69.0/24", 4),
];

/// The control-plane test configuration, recording every query.
fn recording_config() -> String {
    config().replacen(
        "  identity: meridian-test\n",
        "  identity: meridian-test\n  traffic: { sample_one_in: 1 }\n",
        1,
    )
}

/// The datacenter an address of the test configuration belongs to (its last byte).
pub(crate) fn datacenter_of(address: IpAddr) -> &'static str {
    let last = match address {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    };
    match last {
        1 | 11 => "us-east",
        2 | 12 => "us-west",
        3 | 13 | 23 => "eu-west",
        4 => "ap-south",
        5 => "sa-east",
        other => panic!("no datacenter answers with .{other}"),
    }
}

/// The first datacenter DNS answers for `service` from `network`.
async fn first_datacenter(server: &TestServer, service: &str, network: &str) -> &'static str {
    let name = format!("{service}.example.com");
    let address: IpAddr = if network.contains(':') {
        let reply = Ask::new(&name, RecordType::AAAA)
            .ecs(network)
            .udp(server.udp)
            .await;
        aaaa_records(&reply)[0].into()
    } else {
        let reply = Ask::new(&name, RecordType::A)
            .ecs(network)
            .udp(server.udp)
            .await;
        a_records(&reply)[0].into()
    };
    datacenter_of(address)
}

/// Sends [`TRAFFIC`] over DNS: queries per (service, first datacenter), and the first
/// datacenter of each (service, network).
async fn send_traffic(
    server: &TestServer,
) -> (
    BTreeMap<(String, String), u64>,
    BTreeMap<(String, String), String>,
) {
    let mut counts = BTreeMap::new();
    let mut firsts = BTreeMap::new();
    for &(service, network, n) in TRAFFIC {
        for _ in 0..n {
            let dc = first_datacenter(server, service, network).await;
            *counts
                .entry((service.to_owned(), dc.to_owned()))
                .or_insert(0) += 1;
            firsts.insert((service.to_owned(), network.to_owned()), dc.to_owned());
        }
    }
    (counts, firsts)
}

/// Queries per (service, datacenter) a simulation says, now or after.
fn predicted(simulation: &Value, when: &str) -> BTreeMap<(String, String), u64> {
    let mut res = BTreeMap::new();
    for service in simulation["services"].as_array().expect("services") {
        for share in service["shares"].as_array().expect("shares") {
            let n = share[format!("queries_{when}")].as_u64().expect("a count");
            if n > 0 {
                res.insert(
                    (
                        service["service"].as_str().unwrap().to_owned(),
                        share["datacenter"].as_str().unwrap().to_owned(),
                    ),
                    n,
                );
            }
        }
    }
    res
}

fn service<'a>(simulation: &'a Value, id: &str) -> &'a Value {
    simulation["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == id)
        .unwrap_or_else(|| panic!("no service {id} in {simulation}"))
}

#[tokio::test]
async fn a_simulated_drain_predicts_what_dns_answers_after_it() {
    let server = TestServer::start(&recording_config(), ZONE).await;
    let (before, _) = send_traffic(&server).await;

    let (status, simulation) = post(
        &server,
        "/v1/simulate",
        OPERATOR,
        json!({"changes": [{"datacenter": "eu-west", "drained": true}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{simulation}");
    let total: usize = TRAFFIC.iter().map(|t| t.2).sum();
    assert_eq!(simulation["sampled_queries"], total);
    assert_eq!(predicted(&simulation, "now"), before, "{simulation}");
    // solo has only eu-west: it would fail open, and say so.
    let solo = service(&simulation, "solo");
    assert_eq!(solo["failed_open"], 4, "{solo}");
    assert_eq!(solo["failed_open_networks"], json!(["81.2.69.0/24"]));

    // Now make the drain (forced past the last-datacenter rail for solo) and ask again.
    let (status, body) = post(
        &server,
        "/v1/datacenters/eu-west/drain",
        OPERATOR,
        json!({"force": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (after, firsts) = send_traffic(&server).await;
    // solo answers eu-west still (failing open), as predicted: no move.
    assert_eq!(predicted(&simulation, "after"), after, "{simulation}");
    assert!(after.contains_key(&("solo".to_owned(), "eu-west".to_owned())));
    // Every network the simulation says moves now answers where it said.
    let mut n_moved = 0;
    for service in simulation["services"].as_array().unwrap() {
        for moved in service["moves"].as_array().unwrap() {
            assert_eq!(moved["from"], "eu-west", "{moved}");
            for network in moved["networks"].as_array().unwrap() {
                let key = (
                    service["service"].as_str().unwrap().to_owned(),
                    network.as_str().unwrap().to_owned(),
                );
                assert_eq!(moved["to"], firsts[&key], "{key:?}");
                n_moved += 1;
            }
        }
    }
    assert_eq!(n_moved, 3, "GB over IPv4 and IPv6 for www, GB for api");
}

#[tokio::test]
async fn simulations_refuse_unknown_names_and_need_an_operator() {
    let server = TestServer::start(&recording_config(), ZONE).await;
    let cases = [
        (
            json!({"changes": [{"datacenter": "mars", "drained": true}]}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"changes": [{"service": "www", "pools": ["mars"]}]}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"changes": [{"service": "www", "policy": "random"}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"changes": [{"datacenter": "eu-west"}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"changes": [{"datacenter": "eu-west", "load": -1}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"changes": [{"config": "datacenters: {}"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (body, want) in cases {
        let (status, answer) = post(&server, "/v1/simulate", OPERATOR, body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
    }
    let (status, _) = post(
        &server,
        "/v1/simulate",
        "example-eu-west-token",
        json!({"changes": [{"datacenter": "eu-west", "drained": true}]}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = get_with(&server, "/v1/traffic", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_drain_that_would_overload_another_datacenter_is_refused_unless_forced() {
    let server = TestServer::start(&recording_config(), ZONE).await;
    for (dc, token) in [
        ("us-east", "example-us-east-token"),
        ("eu-west", "example-eu-west-token"),
    ] {
        let response = reqwest::Client::new()
            .put(server.url(&format!("/v1/datacenters/{dc}/report")))
            .bearer_auth(token)
            .json(&json!({"healthy": true, "capacity": 100, "load": 50}))
            .send()
            .await
            .expect("a report");
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Ten queries each: us-east carries 50 for 10, so taking eu-west's 10 puts it at 100.
    for network in ["81.2.69.0/24", "3.0.0.0/24"] {
        for _ in 0..10 {
            first_datacenter(&server, "www", network).await;
        }
    }
    let drain = json!({"service": "www"});
    let (status, body) = post(&server, "/v1/datacenters/eu-west/drain", OPERATOR, drain).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "conflict");
    assert!(
        body["message"].as_str().unwrap().contains("us-east"),
        "{body}"
    );
    assert_eq!(
        body["problems"],
        json!([
            "service www: us-east would be at 100 % of capacity, past its high watermark (95 %)"
        ])
    );
    let www = service(&body["simulation"], "www");
    assert_eq!(www["moves"][0]["to"], "us-east", "{www}");
    assert_eq!(
        first_datacenter(&server, "www", "81.2.69.0/24").await,
        "eu-west",
        "refused: nothing changed"
    );
    // `?force=false` forces nothing, and a force that is not a boolean is refused.
    let (status, body) = post(
        &server,
        "/v1/datacenters/eu-west/drain?force=false",
        OPERATOR,
        json!({"service": "www"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = post(
        &server,
        "/v1/datacenters/eu-west/drain?force=yes",
        OPERATOR,
        json!({"service": "www"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        first_datacenter(&server, "www", "81.2.69.0/24").await,
        "eu-west",
        "refused: nothing changed"
    );
    // Forced in the body, or (the same drain again) in the query.
    for (path, body) in [
        (
            "/v1/datacenters/eu-west/drain",
            json!({"service": "www", "force": true}),
        ),
        (
            "/v1/datacenters/eu-west/drain?force=true",
            json!({"service": "www"}),
        ),
    ] {
        let (status, body) = post(&server, path, OPERATOR, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(
            first_datacenter(&server, "www", "81.2.69.0/24").await,
            "us-east"
        );
        let (status, _) = post(
            &server,
            "/v1/datacenters/eu-west/undrain",
            OPERATOR,
            json!({"service": "www"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            first_datacenter(&server, "www", "81.2.69.0/24").await,
            "eu-west"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_simulate_prints_the_moves() {
    let server = TestServer::start(&recording_config(), ZONE).await;
    send_traffic(&server).await;
    let report = stdout(&ctl(&server, Some(OPERATOR), &["simulate", "--drain", "eu-west"]).await);
    assert!(
        report.contains("moves: eu-west -> us-east: 10 queries (81.2.69.0/24, 2a02:8800::/48)"),
        "{report}"
    );
    assert!(
        report.contains("would fail open: 4 queries (81.2.69.0/24)"),
        "{report}"
    );
    let output = ctl(&server, Some(OPERATOR), &["simulate"]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("say what to simulate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meridian_simulate_judges_a_candidate_offline() {
    let server = TestServer::start(&recording_config(), ZONE).await;
    send_traffic(&server).await;
    let (status, sample) = get_with(&server, "/v1/traffic", Some(OPERATOR)).await;
    assert_eq!(status, StatusCode::OK);
    let sample_file = server.dir().join("sample.json");
    std::fs::write(&sample_file, &sample).expect("write the sample");
    // The candidate: www under failover (its order starts with us-east), beside the files the
    // running configuration names.
    let candidate = recording_config().replacen("policy: nearest\n", "policy: failover\n", 1);
    let candidate_file = server.dir().join("candidate.yaml");
    std::fs::write(&candidate_file, candidate).expect("write the candidate");

    let run = |args: Vec<String>| {
        let mut command = Command::new(BIN);
        command
            .env_remove("RUST_LOG")
            .env("MERIDIAN_TOKEN", OPERATOR)
            .env("NO_COLOR", "1")
            .arg("simulate")
            .args(args)
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || command.output().expect("run meridian simulate"))
    };
    let config_arg = candidate_file.display().to_string();
    let from_file = run(vec![
        "--config".into(),
        config_arg.clone(),
        "--sample".into(),
        sample_file.display().to_string(),
        "--json".into(),
    ])
    .await
    .unwrap();
    let from_file: Value = serde_json::from_str(&stdout(&from_file)).expect("JSON");
    let www = service(&from_file, "www");
    // Everyone not on us-east now moves there: 30 queries of www, 22 of them from elsewhere.
    let shares = predicted(&from_file, "after");
    assert_eq!(
        shares[&("www".to_owned(), "us-east".to_owned())],
        30,
        "{www}"
    );
    let moved: u64 = www["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["to"], "us-east");
            m["queries"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(moved, 22, "{www}");
    // api and solo do not change.
    assert!(
        service(&from_file, "api")["moves"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Against the server: the same answer, as a report.
    let from_server = run(vec![
        "--config".into(),
        config_arg.clone(),
        "--server".into(),
        server.url(""),
    ])
    .await
    .unwrap();
    let report = stdout(&from_server);
    assert!(
        report.contains("service www (30 sampled queries)"),
        "{report}"
    );
    assert!(
        report.contains("moves: eu-west -> us-east: 10 queries"),
        "{report}"
    );

    // A candidate that does not validate exits 2 and says why.
    std::fs::write(&candidate_file, "datacenters: {}\n").unwrap();
    let bad = run(vec![
        "--config".into(),
        config_arg,
        "--sample".into(),
        sample_file.display().to_string(),
    ])
    .await
    .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// Samples the traffic record could not keep (here: networks beyond `max_networks`) are counted
/// in `meridian_samples_dropped_total{record="traffic"}`; the query log's count starts at zero.
#[tokio::test]
async fn dropped_traffic_samples_are_counted_in_the_metrics() {
    let config = recording_config().replacen(
        "traffic: { sample_one_in: 1 }",
        "traffic: { sample_one_in: 1, max_networks: 1 }",
        1,
    );
    let server = TestServer::start(&config, ZONE).await;
    for network in ["81.2.69.0/24", "3.0.0.0/24", "3.0.0.0/24", "2.0.0.0/24"] {
        first_datacenter(&server, "www", network).await;
    }
    let (status, metrics) = get_with(&server, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("meridian_samples_dropped_total{record=\"traffic\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meridian_samples_dropped_total{record=\"query_log\"} 0"),
        "{metrics}"
    );
}
