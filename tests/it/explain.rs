//! `GET /v1/explain` against DNS: for every kind of name, the explanation's rcode, answer and
//! authority sections are what the server sends over DNS for the same question and client.

use hickory_proto::op::Message;
use hickory_proto::rr::{Record, RecordType};
use meridian::metrics::Rcode;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::Ask;
use crate::support::TestServer;

const OPERATOR: &str = "example-operator-token";

/// One question: name, type, and the ECS subnet the resolver sends (if any).
struct Case {
    kind: &'static str,
    name: &'static str,
    qtype: RecordType,
    ecs: Option<&'static str>,
}

const fn case(
    kind: &'static str,
    name: &'static str,
    qtype: RecordType,
    ecs: Option<&'static str>,
) -> Case {
    Case {
        kind,
        name,
        qtype,
        ecs,
    }
}

/// Every kind of name the server answers.
const CASES: &[Case] = &[
    case("static", "mail.example.com", RecordType::A, None),
    case("static apex", "example.com", RecordType::MX, None),
    case("nodata", "mail.example.com", RecordType::AAAA, None),
    case("wildcard", "anything.dyn.example.com", RecordType::A, None),
    case(
        "wildcard txt",
        "anything.dyn.example.com",
        RecordType::TXT,
        None,
    ),
    case(
        "wildcard nodata",
        "anything.dyn.example.com",
        RecordType::MX,
        None,
    ),
    case("wildcard cname", "x.alias.example.com", RecordType::A, None),
    case(
        "cname to a service",
        "api-docs.example.com",
        RecordType::A,
        Some("81.2.69.0/24"),
    ),
    case(
        "dangling cname",
        "dangling.example.com",
        RecordType::A,
        None,
    ),
    case("referral", "host.sub.example.com", RecordType::A, None),
    case(
        "service",
        "www.example.com",
        RecordType::A,
        Some("81.2.69.0/24"),
    ),
    case("service v6", "www.example.com", RecordType::AAAA, None),
    case("service txt", "www.example.com", RecordType::TXT, None),
    case(
        "directory txt",
        "alice.users.example.com",
        RecordType::TXT,
        None,
    ),
    case(
        "directory a",
        "alice.users.example.com",
        RecordType::A,
        None,
    ),
    case(
        "directory bad label",
        "b32-zzzz.users.example.com",
        RecordType::A,
        None,
    ),
    case("nxdomain", "nothing-here.example.com", RecordType::A, None),
    case("outside our zones", "www.example.net", RecordType::A, None),
];

/// The directory test configuration served with the zone of the answers tests (wildcards, a
/// delegation, dangling CNAMEs).
async fn server() -> TestServer {
    TestServer::start(&crate::users::config(), &crate::answers::zone()).await
}

async fn explain(server: &TestServer, case: &Case) -> Value {
    let mut path = format!("/v1/explain?name={}&type={}", case.name, case.qtype);
    if let Some(ecs) = case.ecs {
        path.push_str(&format!("&ecs={ecs}"));
    }
    let response = reqwest::get(server.url(&path)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

async fn ask(server: &TestServer, case: &Case) -> Message {
    let mut ask = Ask::new(case.name, case.qtype);
    if let Some(ecs) = case.ecs {
        ask = ask.ecs(ecs);
    }
    // TCP: nothing is truncated, as in an explanation.
    ask.tcp(server.tcp).await
}

fn texts(records: &[Record]) -> Vec<String> {
    records.iter().map(Record::to_string).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn explain_shows_what_dns_answers_for_every_kind_of_name() {
    let server = server().await;
    let pinned = reqwest::Client::new()
        .put(server.url("/v1/users/alice/pin"))
        .bearer_auth(OPERATOR)
        .json(&json!({"home": "eu-west", "replica": "us-east"}))
        .send()
        .await
        .unwrap();
    assert_eq!(pinned.status(), StatusCode::OK);
    for case in CASES {
        let explained = explain(&server, case).await;
        let reply = ask(&server, case).await;
        let what = format!("{} ({} {})", case.kind, case.name, case.qtype);
        assert_eq!(
            explained["rcode"].as_str().unwrap(),
            Rcode::from_code(u16::from(reply.metadata.response_code)).label(),
            "{what}: rcode; {explained}"
        );
        assert_eq!(
            strings(&explained["answers"]),
            texts(&reply.answers),
            "{what}: answers"
        );
        assert_eq!(
            strings(&explained["authority"]),
            texts(&reply.authorities),
            "{what}: authority"
        );
    }
}

#[tokio::test]
async fn explained_kinds_are_not_all_alike() {
    // Guards the comparison above against a server that answers everything the same way.
    let server = server().await;
    let mut seen = Vec::new();
    for case in CASES {
        let explained = explain(&server, case).await;
        let shape = (
            explained["rcode"].as_str().unwrap().to_owned(),
            strings(&explained["answers"]).is_empty(),
            strings(&explained["authority"]).is_empty(),
        );
        if !seen.contains(&shape) {
            seen.push(shape);
        }
    }
    // NOERROR with answers, NODATA (SOA only), NXDOMAIN, a referral (NS only, not
    // authoritative but NOERROR: same shape as NODATA here), REFUSED.
    assert!(seen.len() >= 4, "{seen:?}");
    let wildcard = explain(&server, &CASES[3]).await;
    assert_eq!(
        strings(&wildcard["answers"]),
        ["anything.dyn.example.com. 3600 IN A 192.0.2.77"]
    );
}
