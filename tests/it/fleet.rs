//! A fleet: three meridian instances on one real etcd cluster of three members. A write accepted
//! by any instance changes the answers of all three, which then give byte-identical replies; an
//! etcd member's death changes nothing; etcd's total loss keeps DNS answering and makes writes
//! 503 until it returns, and then the fleet converges without a restart.
//!
//! These tests need the `etcd` binary (Debian's `etcd-server`); without it they print a skip line
//! and return.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RecordType};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{Ask, a_records, send_udp, txt_strings};
use crate::etcd::Etcd;
use crate::support::{IDENTITY, TestServer, ZONE, http, send};

const OPERATOR: &str = "example-operator-token";
const EU_WEST: &str = "example-eu-west-token";
const US_EAST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const EU_WEST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
/// A client network in Great Britain: eu-west is nearest.
const GB: &str = "81.2.69.0/24";
/// How long every instance has to converge on a write.
const CONVERGE: Duration = Duration::from_secs(10);

/// The directory test configuration on `etcd`'s members, under its own prefix.
fn config(etcd: &Etcd, prefix: &str) -> String {
    config_on(&etcd.endpoints(), prefix)
}

/// The directory test configuration on etcd `endpoints`, under `prefix`.
fn config_on(endpoints: &[String], prefix: &str) -> String {
    let endpoints = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{}\nstate:\n  backend: etcd\n  etcd:\n    endpoints: [{endpoints}]\n    prefix: {prefix}\n",
        crate::users::config()
    )
}

/// Three instances on `etcd`, each having read the fleet's state.
async fn fleet(etcd: &Etcd, prefix: &str) -> Vec<TestServer> {
    fleet_of(etcd, prefix, 3).await
}

/// `n` instances on `etcd`, each having read the fleet's state.
async fn fleet_of(etcd: &Etcd, prefix: &str, n: usize) -> Vec<TestServer> {
    let config = config(etcd, prefix);
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(TestServer::start(&config, ZONE).await);
    }
    for server in &servers {
        wait_for(server, "the fleet's state", || async {
            metric(server, "meridian_state_backend_up").await == Some(1.0)
        })
        .await;
    }
    servers
}

async fn report(server: &TestServer, healthy: bool) -> (StatusCode, Value) {
    send(
        http()
            .put(server.url("/v1/datacenters/eu-west/report"))
            .bearer_auth(EU_WEST)
            .json(&json!({"healthy": healthy, "capacity": 100, "load": 10})),
    )
    .await
}

async fn www(server: &TestServer) -> Vec<Ipv4Addr> {
    a_records(
        &Ask::new("www.example.com", RecordType::A)
            .ecs(GB)
            .udp(server.udp)
            .await,
    )
}

/// Pins `user` through `server`, which must accept it.
async fn pin(server: &TestServer, user: &str, home: &str, replica: &str) {
    let (status, body) = send(
        http()
            .put(server.url(&format!("/v1/users/{user}/pin")))
            .bearer_auth(OPERATOR)
            .json(&json!({"home": home, "replica": replica})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn home_of(server: &TestServer, user: &str) -> Value {
    let (status, body) = send(
        http()
            .get(server.url(&format!("/v1/users/{user}")))
            .bearer_auth(OPERATOR),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["home"].clone()
}

/// A gauge's value in the server's `/metrics`.
async fn metric(server: &TestServer, name: &str) -> Option<f64> {
    let text = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (bounded by [`CONVERGE`]) until `check` holds.
async fn wait_for<F, Fut>(server: &TestServer, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + CONVERGE;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{} did not reach {what} within {CONVERGE:?}",
            server.http
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every server answers `www.example.com` for GB with `expected`.
async fn converge(servers: &[TestServer], expected: Ipv4Addr) {
    for server in servers {
        wait_for(server, &format!("answering {expected}"), || async {
            www(server).await == [expected]
        })
        .await;
    }
}

/// The raw replies of every server to the same queries.
async fn replies(servers: &[TestServer]) -> Vec<Vec<Vec<u8>>> {
    let queries = [
        Ask::new("www.example.com", RecordType::A).ecs(GB),
        Ask::new("www.example.com", RecordType::AAAA).ecs("198.51.100.0/24"),
        Ask::new("api.example.com", RecordType::A).ecs(GB),
        Ask::new("alice.users.example.com", RecordType::A),
        Ask::new("bob.users.example.com", RecordType::TXT),
    ];
    let mut all = Vec::new();
    for server in servers {
        let mut replies = Vec::new();
        for query in &queries {
            replies.push(send_udp(server.udp, &query.to_bytes()).await);
        }
        all.push(replies);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_changes_the_answers_of_all_three() {
    let Some(mut etcd) = Etcd::start("fleet::a_write_on_one_instance", 3).await else {
        return;
    };
    let servers = fleet(&etcd, "/converge").await;
    converge(&servers, EU_WEST_IP).await;

    // A report through the first instance: it answers by it at once, the others soon.
    let (status, body) = report(&servers[0], false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(www(&servers[0]).await, [US_EAST_IP]);
    converge(&servers, US_EAST_IP).await;

    // The datacenter recovers through the second, is drained through the third.
    let (status, body) = report(&servers[1], true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(www(&servers[1]).await, [EU_WEST_IP]);
    converge(&servers, EU_WEST_IP).await;
    let (status, body) = send(
        http()
            .post(servers[2].url("/v1/datacenters/eu-west/drain"))
            .bearer_auth(OPERATOR)
            // `solo` has only eu-west: the rail must be overridden.
            .json(&json!({"force": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(www(&servers[2]).await, [US_EAST_IP]);
    converge(&servers, US_EAST_IP).await;

    // A pin through the first instance.
    pin(&servers[0], "alice", "sa-east", "us-east").await;
    for server in &servers {
        wait_for(server, "alice's pin", || async {
            home_of(server, "alice").await == "sa-east"
        })
        .await;
    }

    // Every instance serves the same revision and sends the same bytes.
    let revisions: Vec<Option<f64>> = futures_revisions(&servers).await;
    assert!(revisions[0].is_some_and(|r| r > 0.0), "{revisions:?}");
    assert!(
        revisions.iter().all(|r| *r == revisions[0]),
        "{revisions:?}"
    );
    let replies = replies(&servers).await;
    assert_eq!(replies[0], replies[1], "instances 0 and 1 differ");
    assert_eq!(replies[0], replies[2], "instances 0 and 2 differ");

    // One etcd member dies: writes and fan-out go on.
    etcd.kill(0);
    let (status, body) = send(
        http()
            .post(servers[1].url("/v1/datacenters/eu-west/undrain"))
            .bearer_auth(OPERATOR)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    converge(&servers, EU_WEST_IP).await;
    let (status, body) = report(&servers[0], false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    converge(&servers, US_EAST_IP).await;

    // Every instance lists the three, each serving the same revision, and says so per datacenter.
    wait_for(&servers[1], "a fleet that agrees", || async {
        let (status, fleet) = send(http().get(servers[1].url("/v1/fleet"))).await;
        status == StatusCode::OK
            && fleet["backend"] == "etcd"
            && fleet["instances"].as_array().is_some_and(|i| i.len() == 3)
            && fleet["agreed"] == true
    })
    .await;
    let mut seen = Vec::new();
    for server in &servers {
        let (_, datacenters) = send(http().get(server.url("/v1/datacenters"))).await;
        seen.push(datacenters[0]["state_revision"].clone());
    }
    assert!(seen[0].as_i64().is_some_and(|r| r > 0), "{seen:?}");
    assert!(seen.iter().all(|r| *r == seen[0]), "{seen:?}");

    // A datacenter that stops reporting goes stale on every instance at once: its age is
    // measured from the report's own time, stamped once by the instance that accepted it.
    for server in &servers {
        assert_eq!(freshness(server, "eu-west").await, "fresh");
        server.advance(Duration::from_secs(16)).await;
    }
    for server in &servers {
        assert_eq!(freshness(server, "eu-west").await, "stale");
    }
    for server in servers {
        server.stop().await.expect("clean shutdown");
    }
}

async fn freshness(server: &TestServer, dc: &str) -> Value {
    let (status, view) = send(http().get(server.url(&format!("/v1/datacenters/{dc}")))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view["freshness"].clone()
}

async fn futures_revisions(servers: &[TestServer]) -> Vec<Option<f64>> {
    let mut revisions = Vec::new();
    for server in servers {
        revisions.push(metric(server, "meridian_state_revision").await);
    }
    revisions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_dns_answers_writes_are_refused_and_the_fleet_catches_up_after() {
    let Some(mut etcd) = Etcd::start("fleet::without_etcd", 3).await else {
        return;
    };
    let servers = fleet(&etcd, "/outage").await;
    let (status, body) = report(&servers[0], false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    converge(&servers, US_EAST_IP).await;

    for i in 0..3 {
        etcd.kill(i);
    }
    // Every instance notices, turns read-only and unready, and still answers by the last state.
    for server in &servers {
        wait_for(server, "read-only mode", || async {
            metric(server, "meridian_state_read_only").await == Some(1.0)
        })
        .await;
        assert_eq!(www(server).await, [US_EAST_IP]);
        let (status, _) = send(http().get(server.url("/readyz"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(metric(server, "meridian_state_backend_up").await, Some(0.0));
    }
    let (status, body) = report(&servers[1], true).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "read_only", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("etcd")),
        "{body}"
    );
    assert_eq!(www(&servers[1]).await, [US_EAST_IP]);

    // etcd returns: every instance resumes by itself, and a write reaches all three.
    for i in 0..3 {
        etcd.restart(i);
    }
    etcd.wait_healthy().await;
    for server in &servers {
        wait_for(server, "writable mode", || async {
            metric(server, "meridian_state_read_only").await == Some(0.0)
        })
        .await;
    }
    let (status, body) = report(&servers[2], true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    converge(&servers, EU_WEST_IP).await;
    for server in &servers {
        let (status, _) = send(http().get(server.url("/readyz"))).await;
        assert_eq!(status, StatusCode::OK);
    }
    for server in servers {
        server.stop().await.expect("clean shutdown");
    }
}

/// `n` import rows (NDJSON) pinning `user-{i}` to ap-south.
fn import_rows(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!("{{\"user\":\"user-{i}\",\"home\":\"ap-south\",\"replica\":\"sa-east\"}}\n")
        })
        .collect()
}

/// How many keys etcd holds under `prefix`.
async fn keys_under(client: &mut etcd_client::Client, prefix: &str) -> i64 {
    client
        .get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count keys")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_switches_every_instance_to_the_new_pins_at_once() {
    let Some(etcd) = Etcd::start("fleet::a_large_import", 3).await else {
        return;
    };
    let servers = fleet(&etcd, "/import").await;
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd client");
    // A pin before the import, which the import keeps.
    pin(&servers[1], "alice", "sa-east", "us-east").await;
    for server in &servers {
        wait_for(server, "alice's pin", || async {
            metric(server, "meridian_directory_pins").await == Some(1.0)
        })
        .await;
    }
    // What an import that died half-way leaves: pins of a generation never switched to.
    client
        .put(
            "/import/directory/generations/00000000000000000001-crashed/ghost",
            r#"{"home":"us-west","replica":"us-east"}"#,
            None,
        )
        .await
        .expect("put");

    // 10,000 pins through the first instance, far more than one etcd transaction takes.
    const ROWS: usize = 10_000;
    let import = tokio::spawn(send(
        http()
            .post(servers[0].url("/v1/directory/import?confirm=true"))
            .bearer_auth(OPERATOR)
            .timeout(Duration::from_secs(120))
            .body(import_rows(ROWS)),
    ));
    // Meanwhile every instance serves the old pin set or the new one, never a part of it.
    let allowed = [Some(1.0), Some((ROWS + 1) as f64)];
    let mut seen_old = 0;
    while !import.is_finished() {
        for server in &servers {
            let pins = metric(server, "meridian_directory_pins").await;
            assert!(
                allowed.contains(&pins),
                "{} serves {pins:?} pins",
                server.http
            );
            seen_old += usize::from(pins == Some(1.0));
        }
        // Within the per-address rate limit of the control plane.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, report) = import.await.expect("the import task");
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["pins_added"], ROWS, "{report}");
    assert!(
        seen_old > 0,
        "the import ended before any instance was looked at"
    );
    for server in &servers {
        wait_for(server, "the imported pins", || async {
            metric(server, "meridian_directory_pins").await == Some((ROWS + 1) as f64)
        })
        .await;
        assert_eq!(home_of(server, "user-9999").await, "ap-south");
        assert_eq!(home_of(server, "alice").await, "sa-east");
    }
    // One generation is left in etcd: the new one; the crashed import's keys went with the old.
    assert_eq!(
        keys_under(&mut client, "/import/directory/generations/").await,
        (ROWS + 1) as i64
    );
    assert_eq!(keys_under(&mut client, "/import/directory/pins/").await, 0);

    // A pin after the switch lands in the new generation, and an instance started now reads it.
    pin(&servers[2], "bob", "us-west", "us-east").await;
    let late = TestServer::start(&config(&etcd, "/import"), ZONE).await;
    wait_for(&late, "the fleet's pins", || async {
        metric(&late, "meridian_directory_pins").await == Some((ROWS + 2) as f64)
    })
    .await;
    assert_eq!(home_of(&late, "bob").await, "us-west");
    assert_eq!(home_of(&late, "user-0").await, "ap-south");
    late.stop().await.expect("clean shutdown");
    for server in servers {
        server.stop().await.expect("clean shutdown");
    }
}

/// Waits until every instance serves the newest revision any of them serves.
async fn settle(servers: &[TestServer]) {
    let newest = futures_revisions(servers)
        .await
        .into_iter()
        .flatten()
        .fold(0.0, f64::max);
    for server in servers {
        wait_for(server, "the fleet's newest revision", || async {
            metric(server, "meridian_state_revision")
                .await
                .is_some_and(|r| r >= newest)
        })
        .await;
    }
}

async fn drain(server: &TestServer, dc: &str, service: &str, drained: bool) -> (StatusCode, Value) {
    let action = if drained { "drain" } else { "undrain" };
    send(
        http()
            .post(server.url(&format!("/v1/datacenters/{dc}/{action}")))
            .bearer_auth(OPERATOR)
            .json(&json!({"service": service})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_cannot_drain_the_last_two_datacenters_at_once() {
    let Some(etcd) = Etcd::start("fleet::two_instances_cannot_drain", 3).await else {
        return;
    };
    let servers = fleet(&etcd, "/drains").await;
    // `api` runs in us-east, eu-west and us-west: one drained, two left, of which one must stay.
    let (status, body) = drain(&servers[2], "us-east", "api", true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for round in 0..8 {
        settle(&servers).await;
        // Each instance alone would pass the rail: both drains race through two instances.
        let (first, second) = tokio::join!(
            drain(&servers[0], "eu-west", "api", true),
            drain(&servers[1], "us-west", "api", true),
        );
        let passed = [&first, &second]
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .count();
        assert_eq!(passed, 1, "round {round}: {first:?} {second:?}");
        let refused = if first.0 == StatusCode::OK {
            &second
        } else {
            &first
        };
        assert_eq!(
            refused.0,
            StatusCode::CONFLICT,
            "round {round}: {refused:?}"
        );
        // Both undrained again (undrains need no rail) for the next round.
        for (server, dc) in [(&servers[0], "eu-west"), (&servers[1], "us-west")] {
            let (status, body) = drain(server, dc, "api", false).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    for server in servers {
        server.stop().await.expect("clean shutdown");
    }
}

/// What an instance shows over DNS: CHAOS TXT `revision.meridian.`, and the NSID of an answer
/// from the fast path (a plain A query with NSID) and from the general path (TCP).
async fn revision_over_dns(server: &TestServer) -> (String, String, String) {
    let reply = Ask::new("revision.meridian", RecordType::TXT)
        .class(DNSClass::CH)
        .udp(server.udp)
        .await;
    let txt = reply
        .answers
        .first()
        .map(|record| txt_strings(record).join(""))
        .unwrap_or_default();
    let nsid = |reply: hickory_proto::op::Message| match reply
        .edns
        .as_ref()
        .and_then(|edns| edns.option(EdnsCode::NSID))
    {
        Some(EdnsOption::NSID(payload)) => String::from_utf8_lossy(payload.as_ref()).into_owned(),
        other => panic!("no NSID in the reply: {other:?}"),
    };
    let ask = Ask::new("www.example.com", RecordType::A).ecs(GB).nsid();
    (
        txt,
        nsid(ask.udp(server.udp).await),
        nsid(ask.tcp(server.tcp).await),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_shows_its_revision_in_chaos_txt_and_nsid() {
    let Some(etcd) = Etcd::start("fleet::revision_over_dns", 1).await else {
        return;
    };
    let servers = fleet(&etcd, "/revision").await;
    let (status, body) = report(&servers[0], true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut before = Vec::new();
    for server in &servers {
        // Each instance's DNS shows the revision its metric shows, in TXT and in NSID from
        // both paths (the instances' own start-up writes may still move it: wait until they
        // have).
        wait_for(server, "showing its revision over DNS", || async {
            let revision = metric(server, "meridian_state_revision").await;
            let (txt, udp, tcp) = revision_over_dns(server).await;
            revision.is_some_and(|r| r > 0.0 && txt == format!("{r}"))
                && udp == format!("{IDENTITY} rev {txt}")
                && tcp == udp
        })
        .await;
        let (txt, _, _) = revision_over_dns(server).await;
        before.push(txt.parse::<i64>().expect("a decimal revision"));
    }

    // A write through one instance moves every instance's revision, over DNS too.
    let (status, body) = report(&servers[1], false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    converge(&servers, US_EAST_IP).await;
    let written = metric(&servers[1], "meridian_state_revision")
        .await
        .expect("revision metric");
    for (server, before) in servers.iter().zip(before) {
        wait_for(server, "showing the write's revision over DNS", || async {
            let (txt, udp, tcp) = revision_over_dns(server).await;
            txt == format!("{written}") && udp == format!("{IDENTITY} rev {txt}") && tcp == udp
        })
        .await;
        assert!(written > before as f64, "{written} after {before}");
    }
    for server in servers {
        server.stop().await.expect("clean shutdown");
    }
}

/// What `name` answers (A) on `server`: its addresses, empty for NXDOMAIN or NODATA.
async fn a_of(server: &TestServer, name: &str) -> Vec<Ipv4Addr> {
    a_records(&Ask::new(name, RecordType::A).udp(server.udp).await)
}

/// A reload through `server` (`POST /v1/reload`). It checks and publishes every file, a
/// 1.6 MB zone among them, which takes a debug build more than the usual 10 s on a busy
/// machine.
async fn reload(server: &TestServer) -> (StatusCode, Value) {
    let request = http().post(server.url("/v1/reload")).bearer_auth(OPERATOR);
    send(request.timeout(Duration::from_secs(60))).await
}

/// The configuration version `server` serves.
async fn version(server: &TestServer) -> Value {
    let (status, body) = send(http().get(server.url("/v1/config")).bearer_auth(OPERATOR)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["version"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_through_one_instance_reaches_all_three_and_one_that_cannot_load_it_says_so() {
    let Some(etcd) = Etcd::start("fleet::a_reload_through_one_instance", 3).await else {
        return;
    };
    let base = config(&etcd, "/reload");
    let servers = fleet(&etcd, "/reload").await;
    converge(&servers, EU_WEST_IP).await;
    assert!(a_of(&servers[2], "fleet.example.com").await.is_empty());

    // A new configuration and zone, written on the first instance only and reloaded there: it
    // is published through etcd, and every instance serves it.
    let second = base.replace("a: [192.0.2.3]", "a: [192.0.2.33]");
    let second_zone = format!("{ZONE}fleet IN A 192.0.2.99\n");
    servers[0].write_config(&second);
    servers[0].write_zone(&second_zone);
    let (status, body) = reload(&servers[0]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let published = body["version"].clone();
    // A 2xx means this instance answers by it already.
    assert_eq!(www(&servers[0]).await, [Ipv4Addr::new(192, 0, 2, 33)]);
    converge(&servers, Ipv4Addr::new(192, 0, 2, 33)).await;
    for server in &servers {
        assert_eq!(
            a_of(server, "fleet.example.com").await,
            [Ipv4Addr::new(192, 0, 2, 99)]
        );
        assert_eq!(version(server).await, published);
        assert_eq!(
            metric(server, "meridian_state_config_rejected").await,
            Some(0.0)
        );
        // Every instance keeps the version in its history, with its zone file for diffs.
        let (status, versions) = send(
            http()
                .get(server.url("/v1/config/versions"))
                .bearer_auth(OPERATOR),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{versions}");
        let running: Vec<&Value> = versions
            .as_array()
            .expect("a list")
            .iter()
            .filter(|v| v["running"] == true)
            .collect();
        assert_eq!(running.len(), 1, "{versions}");
        assert_eq!(running[0]["version"], published, "{versions}");
    }

    // A version that names a geo database the third instance lacks: the first two serve it,
    // the third keeps the previous version whole (zones included) and says why.
    let third = second
        .replace("a: [192.0.2.33]", "a: [192.0.2.34]")
        .replace("database: geo.mmdb", "database: other.mmdb");
    let third_zone = format!("{ZONE}fleet IN A 192.0.2.98\n");
    for server in &servers[..2] {
        std::fs::copy(
            server.dir().join("geo.mmdb"),
            server.dir().join("other.mmdb"),
        )
        .expect("copy the geo database");
    }
    servers[1].write_config(&third);
    servers[1].write_zone(&third_zone);
    let (status, body) = reload(&servers[1]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let newest = body["version"].clone();
    assert_ne!(newest, published);
    converge(&servers[..2], Ipv4Addr::new(192, 0, 2, 34)).await;
    wait_for(&servers[2], "rejecting the version", || async {
        metric(&servers[2], "meridian_state_config_rejected").await == Some(1.0)
    })
    .await;
    let (status, body) = send(http().get(servers[2].url("/readyz"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let reason = body.as_str().expect("text");
    assert!(
        reason.contains("could not be loaded here") && reason.contains("other.mmdb"),
        "{reason}"
    );
    assert_eq!(www(&servers[2]).await, [Ipv4Addr::new(192, 0, 2, 33)]);
    assert_eq!(
        a_of(&servers[2], "fleet.example.com").await,
        [Ipv4Addr::new(192, 0, 2, 99)]
    );
    assert_eq!(version(&servers[2]).await, published);
    for server in &servers[..2] {
        assert_eq!(
            a_of(server, "fleet.example.com").await,
            [Ipv4Addr::new(192, 0, 2, 98)]
        );
        assert_eq!(
            metric(server, "meridian_state_config_rejected").await,
            Some(0.0)
        );
        let (status, _) = send(http().get(server.url("/readyz"))).await;
        assert_eq!(status, StatusCode::OK);
    }

    // The operator gives the third instance what it lacked, with the fleet's files, and reloads
    // it: it loads the fleet's version (nothing new is published) and is ready again.
    std::fs::copy(
        servers[2].dir().join("geo.mmdb"),
        servers[2].dir().join("other.mmdb"),
    )
    .expect("copy the geo database");
    servers[2].write_config(&third);
    servers[2].write_zone(&third_zone);
    let (status, body) = reload(&servers[2]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], newest);
    assert_eq!(www(&servers[2]).await, [Ipv4Addr::new(192, 0, 2, 34)]);
    assert_eq!(
        metric(&servers[2], "meridian_state_config_rejected").await,
        Some(0.0)
    );
    let (status, body) = send(http().get(servers[2].url("/readyz"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let replies = replies(&servers).await;
    assert_eq!(replies[0], replies[2], "instances 0 and 2 differ");
    for server in servers {
        server.stop().await.expect("clean shutdown");
    }
}

/// A TCP proxy to an etcd member that can hold back etcd's replies, as a network that delays
/// them would, while requests still reach etcd.
struct Proxy {
    addr: SocketAddr,
    hold: Arc<AtomicBool>,
    /// While set, connections are closed and new ones refused: etcd is out of reach.
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound");
        let hold = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let (held, severed) = (hold.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if severed.load(Ordering::Relaxed) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (hold, cut) = (held.clone(), severed.clone());
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let requests = tokio::io::copy(&mut client_read, &mut server_write);
                    let replies = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = server_read.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            while hold.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            client_write.write_all(&buf[..n]).await?;
                        }
                    };
                    let severed = async {
                        while !cut.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    };
                    // Cutting drops both sockets.
                    tokio::select! {
                        _ = async { tokio::join!(requests, replies) } => {}
                        () = severed => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            hold,
            cut,
            task,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An instance that reaches etcd's first member through a [`Proxy`], having read the state.
async fn behind_proxy(etcd: &Etcd, prefix: &str) -> (Proxy, TestServer) {
    let member: SocketAddr = etcd.endpoints()[0]
        .trim_start_matches("http://")
        .parse()
        .expect("a member address");
    let proxy = Proxy::start(member).await;
    let server = TestServer::start(
        &config_on(&[format!("http://{}", proxy.addr)], prefix),
        ZONE,
    )
    .await;
    wait_for(&server, "the fleet's state", || async {
        metric(&server, "meridian_state_backend_up").await == Some(1.0)
    })
    .await;
    (proxy, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_after_a_lost_reply_is_stored_and_audited_once() {
    let Some(etcd) = Etcd::start("fleet::a_write_retried", 1).await else {
        return;
    };
    let (proxy, server) = behind_proxy(&etcd, "/retried").await;

    // etcd applies the drain, but its reply is held past the write's attempt timeout (1 s): the
    // instance sends the transaction again before the first reply arrives.
    proxy.hold.store(true, Ordering::Relaxed);
    let request = tokio::spawn(send(
        http()
            .post(server.url("/v1/datacenters/eu-west/drain"))
            .bearer_auth(OPERATOR)
            .json(&json!({"service": "api", "force": true})),
    ));
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    proxy.hold.store(false, Ordering::Relaxed);
    let (status, body) = request.await.expect("the request task");
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, audit) = send(
        http()
            .get(server.url("/v1/audit?limit=1000"))
            .bearer_auth(OPERATOR),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let drains = audit
        .as_array()
        .expect("a list")
        .iter()
        .filter(|entry| entry["action"] == "drain")
        .count();
    assert_eq!(drains, 1, "{audit}");
    // etcd applied it once: the instance's write key was put once.
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd client");
    let writes = client
        .get(
            "/retried/writes/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    let versions: Vec<i64> = writes.kvs().iter().map(|kv| kv.version()).collect();
    assert_eq!(versions, [1], "one instance, one write");
    server.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_missed_compacted_revisions_reads_the_whole_state_again() {
    let Some(etcd) = Etcd::start("fleet::compacted", 1).await else {
        return;
    };
    let (proxy, far) = behind_proxy(&etcd, "/compacted").await;
    let near = TestServer::start(&config(&etcd, "/compacted"), ZONE).await;
    wait_for(&near, "the fleet's state", || async {
        metric(&near, "meridian_state_backend_up").await == Some(1.0)
    })
    .await;
    let servers = [far, near];
    let (status, body) = report(&servers[1], false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    converge(&servers, US_EAST_IP).await;

    // The first instance loses etcd; meanwhile eu-west recovers and etcd compacts its history
    // past the revision that instance's watch would resume from.
    proxy.cut.store(true, Ordering::Relaxed);
    wait_for(&servers[0], "losing etcd", || async {
        metric(&servers[0], "meridian_state_backend_up").await == Some(0.0)
    })
    .await;
    let (status, body) = report(&servers[1], true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    pin(&servers[1], "alice", "sa-east", "us-east").await;
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd client");
    let revision = client
        .get("/compacted/changes", None)
        .await
        .expect("get")
        .header()
        .expect("a header")
        .revision();
    client
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
    assert_eq!(www(&servers[0]).await, [US_EAST_IP], "still the last state");

    // Back in reach, it reads everything again by itself: the same answers, revision and pins.
    proxy.cut.store(false, Ordering::Relaxed);
    converge(&servers, EU_WEST_IP).await;
    wait_for(&servers[0], "alice's pin", || async {
        home_of(&servers[0], "alice").await == "sa-east"
    })
    .await;
    let compacted = "meridian_state_resyncs_total{reason=\"compacted\"}";
    assert_eq!(metric(&servers[0], compacted).await, Some(1.0));
    assert_eq!(metric(&servers[1], compacted).await, Some(0.0));
    settle(&servers).await;
    let revisions = futures_revisions(&servers).await;
    assert_eq!(revisions[0], revisions[1]);
    for server in servers {
        server.stop().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restored_under_a_running_fleet_is_read_again_without_a_restart() {
    let Some(mut etcd) = Etcd::start("fleet::restored", 1).await else {
        return;
    };
    let servers = fleet(&etcd, "/restored").await;
    let (status, body) = report(&servers[0], false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    pin(&servers[1], "alice", "sa-east", "us-east").await;
    converge(&servers, US_EAST_IP).await;

    // etcd comes back as another cluster, from a backup older than every write above (here:
    // empty), its revision below the one the instances serve.
    etcd.replace().await;
    let restored = "meridian_state_resyncs_total{reason=\"restored\"}";
    for server in &servers {
        wait_for(server, "noticing the restore", || async {
            metric(server, restored).await == Some(1.0)
        })
        .await;
    }
    // Every instance serves the restored state: no report of eu-west, no pin of alice.
    converge(&servers, EU_WEST_IP).await;
    for server in &servers {
        wait_for(server, "alice unpinned", || async {
            metric(server, "meridian_directory_pins").await == Some(0.0)
        })
        .await;
    }
    // And writes go on, on the restored cluster.
    let (status, body) = report(&servers[2], false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    converge(&servers, US_EAST_IP).await;
    for server in servers {
        server.stop().await.expect("clean shutdown");
    }
}

/// The versions whose pieces etcd holds under `prefix`, and how many pieces in all.
async fn config_chunks(etcd: &Etcd, prefix: &str) -> (Vec<String>, usize) {
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("connect to etcd");
    let chunks = format!("{prefix}/config/chunks/");
    let listed = client
        .get(
            chunks.clone(),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("list the pieces");
    let mut versions: Vec<String> = listed
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            Some(key.strip_prefix(&chunks)?.split('/').next()?.to_owned())
        })
        .collect();
    let pieces = versions.len();
    versions.dedup();
    (versions, pieces)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_set_larger_than_one_etcd_request_is_published_in_pieces() {
    let Some(etcd) = Etcd::start("fleet::a_zone_set_larger_than_one_etcd_request", 1).await else {
        return;
    };
    let servers = fleet_of(&etcd, "/large", 2).await;
    // About 1.6 MB of zone text: more than etcd takes in one request (1.5 MiB).
    let mut zone = ZONE.to_owned();
    for i in 0..20_000 {
        zone.push_str(&format!(
            "t{i} IN TXT \"a record that makes the zone larger than one etcd request {i}\"\n"
        ));
    }
    assert!(zone.len() > 3 * 1024 * 1024 / 2, "{} bytes", zone.len());
    servers[0].write_zone(&zone);
    let (status, body) = reload(&servers[0]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = body["version"].as_str().expect("a version").to_owned();
    for server in &servers {
        wait_for(server, "the large zone", || async {
            let reply = Ask::new("t19999.example.com", RecordType::TXT)
                .tcp(server.tcp)
                .await;
            reply.answers.first().is_some_and(|record| {
                txt_strings(record)
                    .join("")
                    .ends_with("one etcd request 19999")
            })
        })
        .await;
        assert_eq!(version(server).await, first.as_str());
    }
    let (versions, pieces) = config_chunks(&etcd, "/large").await;
    assert_eq!(versions, [first.as_str()]);
    assert!(pieces >= 2, "{pieces} pieces");

    // The next version replaces it: only its pieces stay.
    servers[1].write_zone(ZONE);
    let (status, body) = reload(&servers[1]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["version"].as_str().expect("a version").to_owned();
    for server in &servers {
        wait_for(server, "the small zone", || async {
            version(server).await == second.as_str()
        })
        .await;
        let reply = Ask::new("t19999.example.com", RecordType::TXT)
            .udp(server.udp)
            .await;
        assert!(reply.answers.is_empty());
    }
    assert_eq!(config_chunks(&etcd, "/large").await, (vec![second], 1));
    for server in servers {
        server.stop().await.expect("clean shutdown");
    }
}
