//! The query log over real DNS (UDP and TCP) and real HTTP: off by default it writes nothing;
//! at rate 1 every query gets a line whose fields match the answer the client received; a rate
//! set through `PUT /v1/querylog` takes effect and reverts; and a writer that cannot keep up
//! makes lines drop (counted) while every query is still answered.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::{Ask, a_records, aaaa_records, reply_ecs};
use crate::control::{config, get_with};
use crate::simulate::datacenter_of;
use crate::support::{TestServer, ZONE, http, send};

const OPERATOR: &str = "example-operator-token";
const FRONTEND: &str = "example-frontend-token";
const LOG_FILE: &str = "queries.log";

/// The control tests' configuration with `server.query_log` set to `settings`.
fn config_with(settings: &str) -> String {
    let config = config();
    let with = config.replacen(
        "  identity: meridian-test\n",
        &format!("  identity: meridian-test\n  query_log: {settings}\n"),
        1,
    );
    assert_ne!(with, config, "the configuration has a server section");
    with
}

/// `GET /v1/querylog` as the operator.
async fn state(server: &TestServer) -> Value {
    let (status, body) = get_with(server, "/v1/querylog", Some(OPERATOR)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// `PUT /v1/querylog` with `body` as `token`.
async fn put(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    send(
        http()
            .put(server.url("/v1/querylog"))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

/// Waits (up to 10 s) until the log has written `n` lines in all, then reads them.
async fn lines(server: &TestServer, n: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let written = state(server).await["lines_written"]
            .as_u64()
            .expect("a count");
        if written >= n {
            assert_eq!(written, n, "more lines than queries");
            break;
        }
        assert!(Instant::now() < deadline, "{written} lines of {n} written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    read_lines(&server.dir().join(LOG_FILE))
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("the log file")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// A few queries of every kind over UDP, returning how many were sent.
async fn some_queries(server: &TestServer) -> u64 {
    for name in ["www.example.com", "nothing.example.com", "example.com"] {
        Ask::new(name, RecordType::A).udp(server.udp).await;
        Ask::new(name, RecordType::A)
            .ecs("81.2.69.0/24")
            .tcp(server.tcp)
            .await;
    }
    6
}

#[tokio::test]
async fn off_by_default_it_writes_nothing() {
    // No `server.query_log` at all: off, to stderr, nothing written.
    let server = TestServer::start(&config(), ZONE).await;
    some_queries(&server).await;
    let view = state(&server).await;
    assert_eq!(view["sample"], 0.0, "{view}");
    assert_eq!(view["output"], "stderr", "{view}");
    assert_eq!(view["lines_written"], 0, "{view}");
    // A file named but no sample: the file is opened and stays empty.
    let server = TestServer::start(&config_with(&format!("{{ output: {LOG_FILE} }}")), ZONE).await;
    some_queries(&server).await;
    let view = state(&server).await;
    assert_eq!(view["sample"], 0.0, "{view}");
    assert_eq!(view["lines_written"], 0, "{view}");
    assert_eq!(
        std::fs::read_to_string(server.dir().join(LOG_FILE)).expect("created at start"),
        ""
    );
}

#[tokio::test]
async fn at_rate_one_every_query_is_logged_with_its_answer() {
    let server = TestServer::start(
        &config_with(&format!("{{ output: {LOG_FILE}, sample: 1 }}")),
        ZONE,
    )
    .await;
    // A routed name over UDP with ECS (the fast path), over TCP (the general path), IPv6 ECS,
    // a capacity-aware service, a static name, a name that does not exist.
    let fast = Ask::new("www.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .udp(server.udp)
        .await;
    let tcp = Ask::new("WWW.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .tcp(server.tcp)
        .await;
    let v6 = Ask::new("www.example.com", RecordType::AAAA)
        .ecs("2a02:8800::/32")
        .udp(server.udp)
        .await;
    let api = Ask::new("api.example.com", RecordType::A)
        .ecs("3.0.0.0/24")
        .udp(server.udp)
        .await;
    let plain = Ask::new("www.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    let nxdomain = Ask::new("nothing.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(nxdomain.metadata.response_code, ResponseCode::NXDomain);
    let soa = Ask::new("example.com", RecordType::SOA)
        .tcp(server.tcp)
        .await;

    let nodata = Ask::new("www.example.com", RecordType::MX)
        .udp(server.udp)
        .await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());

    let lines = lines(&server, 8).await;
    let answered = |reply: &hickory_proto::op::Message| -> Vec<&'static str> {
        a_records(reply)
            .into_iter()
            .map(IpAddr::V4)
            .chain(aaaa_records(reply).into_iter().map(IpAddr::V6))
            .map(datacenter_of)
            .collect()
    };
    let expect = [
        (
            &fast,
            "www.example.com.",
            "A",
            "81.2.69.0/24",
            true,
            "fast",
            "udp",
        ),
        (
            &tcp,
            "WWW.example.com.",
            "A",
            "81.2.69.0/24",
            true,
            "general",
            "tcp",
        ),
        (
            &v6,
            "www.example.com.",
            "AAAA",
            "2a02:8800::/32",
            true,
            "fast",
            "udp",
        ),
        (
            &api,
            "api.example.com.",
            "A",
            "3.0.0.0/24",
            true,
            "fast",
            "udp",
        ),
        (
            &plain,
            "www.example.com.",
            "A",
            "127.0.0.0/24",
            false,
            "fast",
            "udp",
        ),
    ];
    for (line, (reply, name, qtype, client, ecs, path, transport)) in lines.iter().zip(expect) {
        assert_eq!(line["name"], name, "{line}");
        assert_eq!(line["type"], qtype, "{line}");
        assert_eq!(line["client"], client, "{line}");
        assert_eq!(line["ecs"], ecs, "{line}");
        assert_eq!(line["rcode"], "NOERROR", "{line}");
        assert_eq!(line["path"], path, "{line}");
        assert_eq!(line["transport"], transport, "{line}");
        assert_eq!(line["sent"], "answer", "{line}");
        assert_eq!(
            line["service"],
            name.split('.').next().unwrap().to_ascii_lowercase(),
            "{line}"
        );
        // What the client received, datacenter for datacenter.
        let datacenters = answered(reply);
        assert!(!datacenters.is_empty(), "{reply:?}");
        assert_eq!(line["datacenters"], json!(datacenters), "{line}");
        assert_eq!(
            line["scope"],
            json!(reply_ecs(reply).map(|ecs| ecs.scope_prefix())),
            "{line}"
        );
        assert!(line["unix_ms"].as_u64().is_some(), "{line}");
    }
    assert_eq!(lines[0]["reason"], "nearest");
    assert_eq!(lines[0]["datacenters"], json!(["eu-west"]));
    assert_eq!(lines[3]["reason"], "nearest", "{}", lines[3]);
    // Unlocated (loopback): the service's order.
    assert_eq!(lines[4]["reason"], "no-location", "{}", lines[4]);
    assert_eq!(lines[5]["reason"], "nxdomain");
    assert_eq!(lines[5]["rcode"], "NXDOMAIN");
    assert_eq!(lines[5]["datacenters"], json!([]));
    assert_eq!(lines[5]["service"], Value::Null);
    assert_eq!(lines[6]["reason"], "static");
    assert_eq!(lines[6]["type"], "SOA");
    assert_eq!(lines[6]["path"], "general");
    assert!(!soa.answers.is_empty());
    assert_eq!(lines[7]["reason"], "nodata", "{}", lines[7]);
    assert_eq!(lines[7]["type"], "MX");
    assert_eq!(lines[7]["datacenters"], json!([]));
}

#[tokio::test]
async fn the_datacenters_logged_follow_drains_spills_and_failing_open() {
    let server = TestServer::start(
        &config_with(&format!("{{ output: {LOG_FILE}, sample: 1 }}")),
        ZONE,
    )
    .await;
    let ask = Ask::new("solo.example.com", RecordType::A).ecs("81.2.69.0/24");
    let before = ask.udp(server.udp).await;
    let (status, _) = crate::control::post(
        &server,
        "/v1/datacenters/eu-west/drain?force=true",
        OPERATOR,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let www = Ask::new("www.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .udp(server.udp)
        .await;
    let failed_open = ask.udp(server.udp).await;
    // us-east past its high watermark: the capacity-aware service spills its clients on.
    let api = Ask::new("api.example.com", RecordType::A).ecs("3.0.0.0/24");
    let near = api.udp(server.udp).await;
    let response = reqwest::Client::new()
        .put(server.url("/v1/datacenters/us-east/report"))
        .bearer_auth("example-us-east-token")
        .json(&json!({"healthy": true, "capacity": 100, "load": 99}))
        .send()
        .await
        .expect("a report");
    assert_eq!(response.status(), StatusCode::OK);
    let spilled = api.udp(server.udp).await;
    let lines = lines(&server, 5).await;
    assert_eq!(a_records(&before), [Ipv4Addr::new(192, 0, 2, 23)]);
    assert_eq!(lines[0]["reason"], "nearest");
    assert_eq!(lines[0]["datacenters"], json!(["eu-west"]));
    // eu-west drained: www goes elsewhere, and the log says where the answer went.
    let www_dc = datacenter_of(IpAddr::V4(a_records(&www)[0]));
    assert_ne!(www_dc, "eu-west");
    assert_eq!(lines[1]["datacenters"], json!([www_dc]));
    // solo's only datacenter is drained: it fails open.
    assert_eq!(a_records(&failed_open), [Ipv4Addr::new(192, 0, 2, 23)]);
    assert_eq!(lines[2]["reason"], "fail-open", "{}", lines[2]);
    assert_eq!(lines[2]["datacenters"], json!(["eu-west"]));
    assert_eq!(datacenter_of(IpAddr::V4(a_records(&near)[0])), "us-east");
    assert_eq!(lines[3]["reason"], "nearest", "{}", lines[3]);
    assert_eq!(lines[3]["datacenters"], json!(["us-east"]));
    let spilled_to = datacenter_of(IpAddr::V4(a_records(&spilled)[0]));
    assert_ne!(spilled_to, "us-east");
    assert_eq!(lines[4]["reason"], "spill", "{}", lines[4]);
    assert_eq!(lines[4]["datacenters"], json!([spilled_to]));
}

#[tokio::test]
async fn the_rate_is_changed_at_runtime_audited_and_reverts() {
    let server = TestServer::start(&config_with(&format!("{{ output: {LOG_FILE} }}")), ZONE).await;
    // Refused: not an operator, a share out of range, a revert out of range.
    let (status, _) = put(&server, FRONTEND, json!({"sample": 1})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for body in [
        json!({"sample": 1.5}),
        json!({"sample": -0.1}),
        json!({"sample": 1, "revert_after_seconds": 0}),
        json!({"sample": 1, "unknown": 1}),
    ] {
        let (status, answer) = put(&server, OPERATOR, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    some_queries(&server).await;
    assert_eq!(state(&server).await["lines_written"], 0);

    let (status, view) = put(
        &server,
        OPERATOR,
        json!({"sample": 1, "revert_after_seconds": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["sample"], 1.0);
    assert_eq!(view["configured_sample"], 0.0);
    assert_eq!(view["revert_after_seconds"], 2);
    let n = some_queries(&server).await;
    assert_eq!(lines(&server, n).await.len(), 6);
    // Audited.
    let (_, audit) = get_with(&server, "/v1/audit", Some(OPERATOR)).await;
    let audit: Value = serde_json::from_str(&audit).expect("JSON");
    let entry = audit
        .as_array()
        .expect("entries")
        .iter()
        .find(|entry| entry["action"] == "querylog")
        .unwrap_or_else(|| panic!("no querylog entry in {audit}"));
    assert_eq!(entry["detail"]["sample"], 1.0);

    // Two seconds later the configured rate (off) is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&server).await["sample"] != 0.0 {
        assert!(Instant::now() < deadline, "the rate did not revert");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    some_queries(&server).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state(&server).await["lines_written"], 6);
}

/// The writer is stuck (its output is a pipe nobody reads): lines beyond the queue are dropped
/// and counted, and every query is still answered at once.
#[tokio::test]
async fn a_full_queue_drops_and_counts_rather_than_blocks() {
    use std::os::unix::fs::OpenOptionsExt;
    let fifo_dir = tempfile::tempdir().expect("a directory");
    let fifo = fifo_dir.path().join("queries.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // The reading end, open (so the server's open for writing does not wait) and never read
    // until the end.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the FIFO for reading");
    let server = TestServer::start(
        &config_with(&format!(
            "{{ output: {}, sample: 1, queue_lines: 8 }}",
            fifo.display()
        )),
        ZONE,
    )
    .await;
    // A pipe holds 64 KiB, about 250 lines; then the writer blocks, the queue fills, and the
    // rest are dropped.
    let n = 1000;
    for i in 0..n {
        let reply = Ask::new("www.example.com", RecordType::A)
            .ecs(&format!("81.2.{}.0/24", i % 256))
            .udp(server.udp)
            .await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    }
    let view = state(&server).await;
    let dropped = view["lines_dropped"].as_u64().expect("a count");
    let written = view["lines_written"].as_u64().expect("a count");
    assert!(dropped > 0, "{view}");
    assert!(dropped + written <= n, "{view}");
    let (_, metrics) = get_with(&server, "/metrics", None).await;
    assert!(
        metrics.contains(&format!(
            "meridian_samples_dropped_total{{record=\"query_log\"}} {dropped}"
        )),
        "{metrics}"
    );
    // What did get through is whole JSON lines.
    let mut text = Vec::new();
    let _ = std::io::Read::read_to_end(&mut &reader, &mut text);
    let text = String::from_utf8_lossy(&text);
    let complete = text.rsplit_once('\n').map_or("", |(whole, _)| whole);
    assert!(complete.lines().count() > 100, "{}", complete.len());
    for line in complete.lines() {
        let line: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(line["name"], "www.example.com.");
    }
}
