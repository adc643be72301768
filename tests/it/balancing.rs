//! The balancing methods served for real: slow start and cascade over DNS, with reports pushed
//! over HTTP and the server's manual clock moved by hand. Each step prints the share of client
//! networks per datacenter (run with `--nocapture` to see them).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::policies::{a, load, policies, report};
use crate::support::{TestServer, ZONE};

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
        let listing: Value = reqwest::get(server.url("/v1/datacenters"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let eu = listing
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "eu-west")
            .unwrap();
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
