//! The balancing methods served for real: slow start and cascade over DNS, with reports pushed
//! over HTTP and the server's manual clock moved by hand, and address rotation over real UDP.
//! Each slow start and cascade step prints the share of client networks per datacenter (run
//! with `--nocapture` to see them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::client::txt_strings;
use crate::client::{Ask, TIMEOUT, a_records, aaaa_records, decode, reply_ecs};
use crate::policies::{a, load, policies, report};
use crate::support::{Setup, TestServer, ZONE, http, send};

/// Two services added to the shipped example: a slow start over 100 s and a cascade.
const SERVICES: &str = r#"services:
  ramp:
    name: ramp.example.com
    policy: nearest
    order: [eu-west, us-east]
    slow_start_seconds: 100
    pools:
      eu-west: { a: [192.0.2.103] }
      us-east: { a: [192.0.2.101] }
  fill:
    name: fill.example.com
    policy: cascade
    order: [eu-west, us-east, us-west]
    capacity: { low_watermark: 0.5, high_watermark: 0.9, hysteresis: 0.1 }
    pools:
      eu-west: { a: [192.0.2.113] }
      us-east: { a: [192.0.2.111] }
      us-west: { a: [192.0.2.112] }
"#;

/// Client networks: 400 /24s the database cannot place, so every one gets the configured order
/// (the ranking is the same for all: only the network hash tells them apart).
const NETWORKS: u32 = 400;

async fn server() -> TestServer {
    let config = policies().replacen("services:\n", SERVICES, 1);
    TestServer::start(&config, ZONE).await
}

/// The first address each client network gets for `name`, by network.
async fn answers(server: &TestServer, name: &str) -> Vec<u8> {
    let mut firsts = Vec::new();
    for i in 0..NETWORKS {
        let subnet = format!("10.{}.{}.0/24", i / 256, i % 256);
        let got = a(server, name, &subnet).await;
        firsts.push(got[0].octets()[3]);
    }
    firsts
}

/// `dc` as `GET /v1/datacenters` lists it.
async fn listed(server: &TestServer, dc: &str) -> Value {
    let listing: Value = reqwest::get(server.url("/v1/datacenters"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listing
        .as_array()
        .expect("a list")
        .iter()
        .find(|d| d["name"] == dc)
        .unwrap_or_else(|| panic!("{dc} listed"))
        .clone()
}

/// Share of networks per answer, as "name share" pairs for printing.
fn shares(firsts: &[u8], names: &[(u8, &str)]) -> BTreeMap<String, f64> {
    names
        .iter()
        .map(|&(last, name)| {
            let n = firsts.iter().filter(|f| **f == last).count();
            (name.to_owned(), n as f64 / firsts.len() as f64)
        })
        .collect()
}

#[tokio::test]
#[allow(
    clippy::print_stdout,
    reason = "the shares over time are the issue's closing figures"
)]
async fn slow_start_moves_client_networks_back_in_steps_over_time() {
    let server = server().await;
    let names = [(103, "eu-west"), (101, "us-east")];
    report(
        &server,
        "eu-west",
        json!({"healthy": false, "capacity": 100, "load": 0}),
    )
    .await;
    load(&server, "us-east", 10).await;
    let down = answers(&server, "ramp.example.com").await;
    assert!(
        down.iter().all(|f| *f == 101),
        "eu-west down: everyone on us-east"
    );
    // eu-west recovers at t = 0; every 25 s both report again (the reports stay fresh) and the
    // share of networks it takes back grows: k / 20 after k / 20 of 100 s.
    load(&server, "eu-west", 0).await;
    let mut before = down;
    for (t, expected) in [
        (0u64, 0.0),
        (25, 0.25),
        (50, 0.5),
        (75, 0.75),
        (99, 0.95),
        (100, 1.0),
    ] {
        let firsts = answers(&server, "ramp.example.com").await;
        let got = shares(&firsts, &names);
        println!("slow start t={t:>3} s: {got:?}");
        assert!((got["eu-west"] - expected).abs() < 0.06, "t = {t}: {got:?}");
        // Each network moves once: none that came back to eu-west leaves it again.
        for (i, (was, is)) in before.iter().zip(&firsts).enumerate() {
            assert!(
                *was != 103 || *is == 103,
                "network {i} left eu-west at {t} s"
            );
        }
        before = firsts;
        // The ramp is visible in the datacenter listing while it lasts.
        let eu = listed(&server, "eu-west").await;
        let share = eu["slow_start"]["ramp"]["share"].as_f64();
        assert_eq!(share.is_some(), t < 100, "t = {t}: {eu}");
        let next = match t {
            0 => 25,
            25 => 50,
            50 => 75,
            75 => 99,
            99 => 100,
            _ => break,
        };
        server.advance(Duration::from_secs(next - t)).await;
        load(&server, "eu-west", 0).await;
        load(&server, "us-east", 10).await;
    }
}

#[tokio::test]
#[allow(
    clippy::print_stdout,
    reason = "the shares over time are the issue's closing figures"
)]
async fn cascade_fills_in_order_and_spills_by_network() {
    let server = server().await;
    let names = [(113, "eu-west"), (111, "us-east"), (112, "us-west")];
    load(&server, "us-east", 0).await;
    load(&server, "us-west", 0).await;
    #[rustfmt::skip]
    let steps: &[(u32, u32, f64, f64, &str)] = &[
        // eu-west's load, us-east's, eu-west's share, us-east's share, why.
        (30, 0, 1.0, 0.0, "below the low watermark"),
        (60, 0, 0.75, 0.25, "a quarter of the way to the high watermark"),
        (70, 0, 0.5, 0.5, "half way"),
        (80, 0, 0.25, 0.75, "three quarters"),
        (95, 0, 0.0, 1.0, "full"),
        (85, 0, 0.0, 1.0, "still full: above 80 % (hysteresis)"),
        (75, 0, 0.375, 0.625, "below 80 %: back, spilling"),
        (95, 95, 0.0, 0.0, "both full: us-west"),
        (40, 95, 1.0, 0.0, "eu-west empty again"),
    ];
    let mut before: Option<(u32, Vec<u8>)> = None;
    for &(eu, us, eu_share, us_share, why) in steps {
        load(&server, "eu-west", eu).await;
        load(&server, "us-east", us).await;
        let firsts = answers(&server, "fill.example.com").await;
        let got = shares(&firsts, &names);
        println!("cascade eu-west {eu:>2} %, us-east {us:>2} %: {got:?} ({why})");
        assert!((got["eu-west"] - eu_share).abs() < 0.06, "{why}: {got:?}");
        assert!((got["us-east"] - us_share).abs() < 0.06, "{why}: {got:?}");
        // As eu-west's load grows, a network that spilled to us-east stays there.
        if let Some((before_eu, before)) = &before
            && eu > *before_eu
            && us == 0
        {
            for (i, (was, is)) in before.iter().zip(&firsts).enumerate() {
                assert!(*was != 111 || *is == 111, "network {i} came back at {eu} %");
            }
        }
        before = Some((eu, firsts));
    }
}

/// Three services with the same pools, whose addresses rotate `cyclic`, `random` and `fixed`:
/// eu-west has three addresses of each family, us-east one.
const ROTATING: &str = r#"services:
  spin:
    name: spin.example.com
    policy: nearest
    rotation: cyclic
    answers: 2
    pools:
      eu-west: { a: [192.0.2.121, 192.0.2.122, 192.0.2.123], aaaa: ["2001:db8::121", "2001:db8::122", "2001:db8::123"] }
      us-east: { a: [192.0.2.124], aaaa: ["2001:db8::124"] }
  dice:
    name: dice.example.com
    policy: nearest
    rotation: random
    answers: 2
    pools:
      eu-west: { a: [192.0.2.121, 192.0.2.122, 192.0.2.123], aaaa: ["2001:db8::121", "2001:db8::122", "2001:db8::123"] }
      us-east: { a: [192.0.2.124], aaaa: ["2001:db8::124"] }
  still:
    name: still.example.com
    policy: nearest
    answers: 2
    pools:
      eu-west: { a: [192.0.2.121, 192.0.2.122, 192.0.2.123], aaaa: ["2001:db8::121", "2001:db8::122", "2001:db8::123"] }
      us-east: { a: [192.0.2.124], aaaa: ["2001:db8::124"] }
"#;

/// A London network: eu-west is its nearest datacenter.
const LONDON: &str = "81.2.69.0/24";

/// One client socket for every query: the kernel hands its datagrams to one UDP worker (and
/// the test server has one), whose rotation it then sees in turn.
struct Client {
    socket: UdpSocket,
}

impl Client {
    async fn new(server: SocketAddr) -> Client {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a client socket");
        socket.connect(server).await.expect("connect it");
        Client { socket }
    }

    /// The reply to `name`/`qtype` asked with ECS `LONDON`.
    async fn ask(&self, name: &str, qtype: RecordType) -> Message {
        let ask = Ask::new(name, qtype).ecs(LONDON);
        self.socket.send(&ask.to_bytes()).await.expect("send");
        let mut buf = vec![0; 65_535];
        let len = tokio::time::timeout(TIMEOUT, self.socket.recv(&mut buf))
            .await
            .expect("a reply in time")
            .expect("receive");
        let reply = decode(&buf[..len]);
        assert_eq!(reply.metadata.id, ask.id(), "reply id");
        reply
    }
}

/// The answer's addresses, last octet (A) or last segment (AAAA) only, and its ECS scope.
fn addresses(reply: &Message, qtype: RecordType) -> (Vec<u16>, u8) {
    let addresses: Vec<IpAddr> = match qtype {
        RecordType::A => a_records(reply).into_iter().map(IpAddr::V4).collect(),
        _ => aaaa_records(reply).into_iter().map(IpAddr::V6).collect(),
    };
    let lasts = addresses
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => u16::from(v4.octets()[3]),
            IpAddr::V6(v6) => v6.segments()[7],
        })
        .collect();
    let scope = reply_ecs(reply).expect("ECS echoed").scope_prefix();
    (lasts, scope)
}

/// The eu-west pool's addresses as `addresses` gives them: .121 to .123, and ::121 to ::123
/// (0x121 to 0x123).
fn pool(qtype: RecordType) -> [u16; 3] {
    match qtype {
        RecordType::A => [121, 122, 123],
        _ => [0x121, 0x122, 0x123],
    }
}

#[tokio::test]
async fn rotation_spreads_a_datacenters_clients_over_its_addresses_on_both_paths() {
    let config = policies()
        .replacen("server:\n", "server:\n  udp_workers: 1\n", 1)
        .replacen("services:\n", ROTATING, 1);
    let server = TestServer::start(&config, ZONE).await;
    let client = Client::new(server.udp).await;
    for fast_path in [true, false] {
        let (status, body) = toggle(&server, "fast_path", fast_path).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        for qtype in [RecordType::A, RecordType::AAAA] {
            let pool = pool(qtype);
            let path = if fast_path { "fast" } else { "general" };
            // fixed: always the configured order; its scope is the one rotation must keep.
            let (fixed, scope) = addresses(&client.ask("still.example.com", qtype).await, qtype);
            assert_eq!(fixed, pool[..2], "{path} {qtype}");
            // cyclic: each answer starts one address further along the pool, round and round.
            let mut starts = Vec::new();
            for i in 0..9 {
                let reply = client.ask("spin.example.com", qtype).await;
                let (got, got_scope) = addresses(&reply, qtype);
                let start = pool
                    .iter()
                    .position(|&a| a == got[0])
                    .unwrap_or_else(|| panic!("{path} {qtype}: {got:?} not from eu-west"));
                assert_eq!(
                    got,
                    [pool[start], pool[(start + 1) % 3]],
                    "{path} {qtype} {i}"
                );
                assert_eq!(got_scope, scope, "{path} {qtype}: the scope is unchanged");
                starts.push(start);
            }
            for pair in starts.windows(2) {
                assert_eq!(pair[1], (pair[0] + 1) % 3, "{path} {qtype}: {starts:?}");
            }
            // random: any start, every one of them within 100 queries (a miss has a chance of
            // 3 × (2/3)^100, below 1e-17).
            let mut seen = BTreeSet::new();
            for _ in 0..100 {
                let reply = client.ask("dice.example.com", qtype).await;
                let (got, got_scope) = addresses(&reply, qtype);
                let start = pool.iter().position(|&a| a == got[0]).expect("eu-west");
                assert_eq!(got, [pool[start], pool[(start + 1) % 3]], "{path} {qtype}");
                assert_eq!(got_scope, scope, "{path} {qtype}: the scope is unchanged");
                seen.insert(start);
                if seen.len() == 3 {
                    break;
                }
            }
            assert_eq!(seen.len(), 3, "{path} {qtype}: {seen:?}");
        }
    }
    // Explanations say which order an answer got, and that a fixed service does not rotate.
    for (name, rotation) in [
        ("spin", Some("cyclic")),
        ("dice", Some("random")),
        ("still", None),
    ] {
        let url = server.url(&format!("/v1/explain?name={name}.example.com&ecs={LONDON}"));
        let explained: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        let answers = explained["answers"].as_array().expect("answers");
        let Some(rotation) = rotation else {
            assert_eq!(explained.get("rotation"), None, "{explained}");
            continue;
        };
        let said = explained["rotation"].as_str().expect("a rotation");
        let order: usize = said
            .strip_prefix(&format!("{rotation}: order "))
            .and_then(|rest| rest.strip_suffix(" of 3"))
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("{said:?}"));
        // Order k starts at the pool's k-th address (.121 is the first).
        let first = answers[0].as_str().expect("an answer as text");
        assert!(
            first.ends_with(&format!("192.0.2.{}", 120 + order)),
            "{said}: {answers:?}"
        );
    }
}

async fn toggle(server: &TestServer, name: &str, on: bool) -> (reqwest::StatusCode, Value) {
    send(
        http()
            .put(server.url(&format!("/v1/toggles/{name}")))
            .bearer_auth("example-operator-token")
            .json(&json!({ "on": on })),
    )
    .await
}

/// The share of `ramp.example.com`'s client networks that eu-west (192.0.2.103) gets.
async fn eu_west_share(server: &TestServer) -> f64 {
    let firsts = answers(server, "ramp.example.com").await;
    shares(&firsts, &[(103, "eu-west")])["eu-west"]
}

/// Where eu-west's slow start for `ramp` is, as explain (HTTP and TXT), the
/// `meridian_slow_start_share` metric and `GET /v1/datacenters` each say it: all must agree
/// on `percent` (`None`: no ramp) of 100 s, `elapsed` seconds in; the metric is the share
/// served (0 while down, 1 when serving without a ramp).
async fn check_ramp_reported(server: &TestServer, percent: Option<u32>, elapsed: u64, when: &str) {
    let words = percent.map(|p| format!("slow start: {p} % of 100 s"));
    // Explain over HTTP: eu-west's reason.
    let explained: Value = reqwest::get(server.url("/v1/explain?name=ramp.example.com"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reason = explained["datacenters"]
        .as_array()
        .expect("datacenters")
        .iter()
        .find(|dc| dc["name"] == "eu-west")
        .and_then(|dc| dc["reason"].as_str())
        .expect("eu-west explained")
        .to_owned();
    match &words {
        Some(words) => assert!(reason.contains(words), "{when}: {reason:?}, not {words:?}"),
        None => assert!(!reason.contains("slow start"), "{when}: {reason:?}"),
    }
    // Explain over DNS: the same words in the TXT answer.
    let reply = Ask::new("_explain.ramp.example.com", RecordType::TXT)
        .udp(server.udp)
        .await;
    let lines: Vec<String> = reply.answers.iter().flat_map(txt_strings).collect();
    let line = lines
        .iter()
        .find(|line| line.contains(" eu-west"))
        .unwrap_or_else(|| panic!("{when}: eu-west not in {lines:?}"));
    match &words {
        Some(words) => assert!(line.contains(words), "{when}: {line:?}"),
        None => assert!(!line.contains("slow start"), "{when}: {line:?}"),
    }
    // The metric: the share served (1 when not ramping).
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = r#"meridian_slow_start_share{datacenter="eu-west",service="ramp"} "#;
    let value: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .unwrap_or_else(|| panic!("{when}: no {series}"))
        .parse()
        .expect("a number");
    let share = f64::from(percent.unwrap_or(100)) / 100.0;
    let served = if when == "down" { 0.0 } else { share };
    assert!(
        (value - served).abs() < 1e-9,
        "{when}: metric {value}, not {served}"
    );
    // The datacenter listing.
    let eu = listed(server, "eu-west").await;
    let ramp = &eu["slow_start"]["ramp"];
    match percent {
        Some(_) => {
            assert_eq!(ramp["share"].as_f64(), Some(share), "{when}: {eu}");
            assert_eq!(ramp["seconds"].as_u64(), Some(100), "{when}: {eu}");
            assert_eq!(
                ramp["elapsed_seconds"].as_f64(),
                Some(elapsed as f64),
                "{when}: {eu}"
            );
        }
        None => assert!(ramp.is_null(), "{when}: {eu}"),
    }
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_ramp_resumes_it_from_its_stored_start() {
    let state = tempfile::tempdir().expect("a state directory");
    let config = policies().replacen("services:\n", SERVICES, 1);
    let mut setup = Setup::new(&config, ZONE);
    setup.state_dir = Some(state.path().to_owned());
    let clock = setup.clock.clone();
    let first = TestServer::launch(setup).await;
    report(
        &first,
        "eu-west",
        json!({"healthy": false, "capacity": 100, "load": 0}),
    )
    .await;
    check_ramp_reported(&first, None, 0, "down").await;
    // eu-west recovers at t = 0, and reports again at 40 s: 40 % of its networks are back.
    load(&first, "eu-west", 0).await;
    first.advance(Duration::from_secs(40)).await;
    load(&first, "eu-west", 0).await;
    load(&first, "us-east", 10).await;
    assert!((eu_west_share(&first).await - 0.4).abs() < 0.06);
    check_ramp_reported(&first, Some(40), 40, "40 s in").await;
    first.stop().await.expect("a clean stop");

    // The restart comes up at 60 s on the same state directory: the ramp resumes from its
    // stored start (60 %), before eu-west reports again and after.
    clock.advance(Duration::from_secs(20));
    let mut setup = Setup::new(&config, ZONE);
    setup.state_dir = Some(state.path().to_owned());
    setup.clock = clock;
    let second = TestServer::launch(setup).await;
    assert!((eu_west_share(&second).await - 0.6).abs() < 0.06);
    check_ramp_reported(&second, Some(60), 60, "restarted at 60 s").await;
    load(&second, "eu-west", 0).await;
    load(&second, "us-east", 10).await;
    assert!((eu_west_share(&second).await - 0.6).abs() < 0.06);
    check_ramp_reported(&second, Some(60), 60, "reported after the restart").await;
    // And it ends on time: all of eu-west's networks back at 100 s.
    second.advance(Duration::from_secs(40)).await;
    load(&second, "eu-west", 0).await;
    load(&second, "us-east", 10).await;
    assert_eq!(eu_west_share(&second).await, 1.0);
    check_ramp_reported(&second, None, 100, "done at 100 s").await;
}

#[tokio::test]
async fn a_datacenter_added_by_a_reload_ramps_under_slow_start() {
    // `grow` starts with us-east alone; the reload adds eu-north (no report required) and puts
    // it first for the unplaced test networks.
    let grow = "services:
  grow:
    name: grow.example.com
    policy: nearest
    order: [us-east]
    slow_start_seconds: 100
    pools:
      us-east: { a: [192.0.2.151] }
";
    let config = policies().replacen("services:\n", grow, 1);
    let server = TestServer::start(&config, ZONE).await;
    let firsts = answers(&server, "grow.example.com").await;
    assert!(
        firsts.iter().all(|f| *f == 151),
        "before the reload: us-east"
    );
    let grown = config
        .replacen(
            "datacenters:\n",
            "datacenters:\n  eu-north: { latitude: 59.33, longitude: 18.07, country: SE, continent: EU }\n",
            1,
        )
        .replacen("    order: [us-east]\n", "    order: [eu-north, us-east]\n", 1)
        .replacen(
            "      us-east: { a: [192.0.2.151] }\n",
            "      us-east: { a: [192.0.2.151] }\n      eu-north: { a: [192.0.2.152] }\n",
            1,
        );
    server.write_config(&grown);
    server
        .reload()
        .await
        .expect("the grown configuration loads");
    let names = [(152, "eu-north"), (151, "us-east")];
    let mut before = answers(&server, "grow.example.com").await;
    assert_eq!(shares(&before, &names)["eu-north"], 0.0, "at the reload");
    let mut now = 0;
    for (t, expected) in [(30u64, 0.3), (60, 0.6), (100, 1.0)] {
        server.advance(Duration::from_secs(t - now)).await;
        now = t;
        let firsts = answers(&server, "grow.example.com").await;
        let got = shares(&firsts, &names)["eu-north"];
        assert!((got - expected).abs() < 0.06, "t = {t}: {got}");
        for (i, (was, is)) in before.iter().zip(&firsts).enumerate() {
            assert!(
                *was != 152 || *is == 152,
                "network {i} left eu-north at {t} s"
            );
        }
        before = firsts;
    }
}
