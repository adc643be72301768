//! The traffic record (sampling, the sliding window, its cap) and simulations over a small
//! configuration located in the fixture database.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Config;
use crate::geo::fixture_db;
use crate::routing::{BaseTable, DcState, ReportState, RoutingTable};

const CONFIG: &str = r#"
geo: { database: unused.mmdb }
zones: [{ origin: example.com, file: unused.zone }]
datacenters:
  us-east:  { latitude: 39.0438,  longitude: -77.4874,  country: US, continent: NA }
  eu-west:  { latitude: 53.3498,  longitude: -6.2603,   country: IE, continent: EU }
  ap-south: { latitude: 1.3521,   longitude: 103.8198,  country: SG, continent: AS }
services:
  www:
    name: www.example.com
    policy: nearest
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      ap-south: { a: [192.0.2.4] }
  solo:
    name: solo.example.com
    policy: nearest
    pools:
      eu-west:  { a: [192.0.2.3] }
"#;

fn settings(sample_one_in: u32, max_networks: u32) -> TrafficConfig {
    TrafficConfig {
        sample_one_in,
        window: Duration::from_secs(100),
        max_networks,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

/// Records `n` queries of service 0 of `config` from `ip` on this thread.
fn record_n(traffic: &Traffic, config: &Arc<Config>, service: u16, ip: IpAddr, n: usize) {
    for _ in 0..n {
        traffic.record(config, ServiceId(service), ip, 32);
    }
}

fn config() -> Arc<Config> {
    Arc::new(Config::from_yaml_str(CONFIG).expect("test config"))
}

#[test]
fn networks_are_cut_to_24_and_48_or_the_ecs_prefix() {
    let cases = [
        ("81.2.69.77", 32, "81.2.69.0/24"),
        ("81.2.69.77", 16, "81.2.0.0/16"),
        ("2a02:8800:1:2::1", 128, "2a02:8800:1::/48"),
        ("2a02:8800:1:2::1", 32, "2a02:8800::/32"),
        ("::ffff:81.2.69.77", 128, "81.2.69.0/24"),
    ];
    for (address, prefix, want) in cases {
        assert_eq!(
            network_of(ip(address), prefix).to_string(),
            want,
            "{address}/{prefix}"
        );
    }
}

#[test]
fn every_query_is_counted_at_one_in_one_and_none_at_zero() {
    let config = config();
    let traffic = Traffic::new(settings(1, 100));
    let now = Instant::now();
    record_n(&traffic, &config, 0, ip("81.2.69.1"), 5);
    record_n(&traffic, &config, 0, ip("81.2.69.200"), 2);
    record_n(&traffic, &config, 1, ip("8.8.8.8"), 3);
    let sample = traffic.sample(now);
    let got: Vec<(String, String, u64)> = sample
        .networks
        .iter()
        .map(|n| (n.service.clone(), n.network.to_string(), n.queries))
        .collect();
    assert_eq!(
        got,
        [
            ("solo".to_owned(), "8.8.8.0/24".to_owned(), 3),
            ("www".to_owned(), "81.2.69.0/24".to_owned(), 7),
        ]
    );
    let off = Traffic::new(settings(0, 100));
    assert!(!off.is_on());
    record_n(&off, &config, 0, ip("81.2.69.1"), 5);
    assert!(off.sample(now).networks.is_empty());
}

#[test]
fn sampling_keeps_about_one_in_n() {
    let config = config();
    let traffic = Traffic::new(settings(16, 100));
    // Two services in turn: a fixed stride would sample only one of them.
    for _ in 0..8000 {
        traffic.record(&config, ServiceId(0), ip("81.2.69.1"), 32);
        traffic.record(&config, ServiceId(1), ip("81.2.69.1"), 32);
    }
    let sample = traffic.sample(Instant::now());
    for entry in &sample.networks {
        // 500 expected per service; the draw is random, the bound generous.
        assert!(
            (350..=650).contains(&entry.queries),
            "{} sampled {} of 8000",
            entry.service,
            entry.queries
        );
    }
    assert_eq!(sample.networks.len(), 2);
}

#[test]
fn the_window_slides_and_forgets_old_networks() {
    let config = config();
    let traffic = Traffic::new(settings(1, 100));
    let start = Instant::now();
    traffic.collect(start);
    record_n(&traffic, &config, 0, ip("81.2.69.1"), 4);
    traffic.collect(start);
    // 55 s later (window 100 s, columns of 10 s): both columns count.
    record_n(&traffic, &config, 0, ip("81.2.69.1"), 1);
    record_n(&traffic, &config, 0, ip("8.8.8.8"), 2);
    let sample = traffic.sample(start + Duration::from_secs(55));
    assert_eq!(sample.networks.iter().map(|n| n.queries).sum::<u64>(), 7);
    // 100 s after the first queries, their column is cleared; the later ones remain.
    let sample = traffic.sample(start + Duration::from_secs(101));
    let got: Vec<(String, u64)> = sample
        .networks
        .iter()
        .map(|n| (n.network.to_string(), n.queries))
        .collect();
    assert_eq!(
        got,
        [("8.8.8.0/24".to_owned(), 2), ("81.2.69.0/24".to_owned(), 1)]
    );
    // Long after, nothing is left.
    assert!(
        traffic
            .sample(start + Duration::from_secs(1000))
            .networks
            .is_empty()
    );
}

#[test]
fn the_cap_drops_new_networks_and_counts_them() {
    let config = config();
    let traffic = Traffic::new(settings(1, 2));
    let now = Instant::now();
    for address in ["81.2.69.1", "8.8.8.8", "1.128.0.1", "1.128.1.1"] {
        record_n(&traffic, &config, 0, ip(address), 1);
    }
    // A network already held still counts.
    record_n(&traffic, &config, 0, ip("81.2.69.9"), 1);
    let sample = traffic.sample(now);
    assert_eq!(sample.networks.len(), 2);
    assert_eq!(sample.dropped, 2);
    assert_eq!(sample.networks.iter().map(|n| n.queries).sum::<u64>(), 3);
}

#[test]
fn a_full_channel_drops_and_counts_without_waiting() {
    let config = config();
    let traffic = Traffic::new(settings(1, 10));
    // Nothing collects: the channel holds `CHANNEL_CAPACITY` samples, and the rest are dropped
    // by `try_send` at once (this test would hang if recording waited).
    record_n(&traffic, &config, 0, ip("81.2.69.1"), CHANNEL_CAPACITY + 5);
    assert_eq!(traffic.dropped.load(Ordering::Relaxed), 5);
    let now = Instant::now();
    assert_eq!(traffic.dropped(now), 5);
    let sample = traffic.sample(now);
    assert_eq!(sample.dropped, 5);
    assert_eq!(sample.networks[0].queries, CHANNEL_CAPACITY as u64);
}

struct Fixture {
    config: Arc<Config>,
    states: Vec<DcState>,
    routing: RoutingTable,
}

impl Fixture {
    fn new(loads: &[(f64, f64)]) -> Fixture {
        let config = config();
        let geo = Arc::new(fixture_db());
        let base = Arc::new(BaseTable::build(&config, geo));
        let states: Vec<DcState> = loads
            .iter()
            .map(|&(load, capacity)| DcState {
                report: Some(ReportState {
                    healthy: true,
                    capacity,
                    load,
                    latency_ms: Default::default(),
                    cost: None,
                    service_latency_ms: None,
                    age: Duration::ZERO,
                    ttl: Duration::from_secs(60),
                }),
                ..DcState::default()
            })
            .collect();
        let routing = RoutingTable::build(base, &config, &states, None);
        Fixture {
            config,
            states,
            routing,
        }
    }

    fn world(&self) -> World<'_> {
        World {
            config: &self.config,
            states: &self.states,
            routing: &self.routing,
        }
    }
}

fn sample(entries: &[(&str, &str, u64)]) -> Sample {
    Sample {
        sample_one_in: 1,
        window: Duration::from_secs(600),
        networks: entries
            .iter()
            .map(|&(service, network, queries)| SampledNetwork {
                service: service.to_owned(),
                network: network.parse().unwrap(),
                queries,
            })
            .collect(),
        dropped: 0,
    }
}

fn drain(dc: &str) -> Change {
    Change::Datacenter(DcChange {
        datacenter: dc.to_owned(),
        drained: Some(true),
        ..DcChange::default()
    })
}

#[test]
fn a_drain_moves_its_queries_and_projects_the_load() {
    // us-east, eu-west, ap-south: (load, capacity).
    let fixture = Fixture::new(&[(60.0, 100.0), (40.0, 100.0), (10.0, 100.0)]);
    let before = fixture.world();
    let after = before.changed(&[drain("eu-west")]).expect("a valid change");
    // GB (81.2.69.0/24) is nearest eu-west; 8.8.8.0/24 (US) us-east; 1.128.0.0/24 (AU)
    // ap-south.
    let sampled = sample(&[
        ("www", "81.2.69.0/24", 40),
        ("www", "8.8.8.0/24", 60),
        ("www", "1.128.0.0/24", 10),
    ]);
    let simulation = simulate(before, after.world(), &sampled);
    assert_eq!(simulation.sampled_queries, 110);
    let www = &simulation.services[0];
    assert_eq!(www.service, "www");
    let shares: Vec<(&str, u64, u64)> = www
        .datacenters
        .iter()
        .map(|d| (d.datacenter.as_str(), d.queries_now, d.queries_after))
        .collect();
    assert_eq!(
        shares,
        [
            ("ap-south", 10, 10),
            ("eu-west", 40, 0),
            ("us-east", 60, 100)
        ]
    );
    assert_eq!(www.moves.len(), 1);
    assert_eq!(www.moves[0].from.as_deref(), Some("eu-west"));
    assert_eq!(www.moves[0].to.as_deref(), Some("us-east"));
    assert_eq!(www.moves[0].queries, 40);
    // us-east: 60 load for 60 queries, gains 40 -> 100 of 100: past the high watermark
    // (default 0.95), and newly so.
    let us_east = &simulation.projections[0];
    assert_eq!(us_east.load_after, Some(100.0));
    assert_eq!(www.watermarks.len(), 1);
    assert_eq!(www.watermarks[0].datacenter, "us-east");
    assert_eq!(www.watermarks[0].past, "high");
    assert!(www.watermarks[0].newly);
    assert_eq!(simulation.newly_past_high("eu-west").len(), 1);
    // The drained datacenter itself is not a finding, and nothing fails open.
    assert_eq!(www.failed_open, 0);
}

#[test]
fn the_last_datacenter_down_fails_open_and_is_reported() {
    let fixture = Fixture::new(&[(0.0, 100.0), (0.0, 100.0), (0.0, 100.0)]);
    let before = fixture.world();
    let down = Change::Datacenter(DcChange {
        datacenter: "eu-west".to_owned(),
        healthy: Some(false),
        ..DcChange::default()
    });
    let after = before.changed(&[down]).expect("a valid change");
    let simulation = simulate(
        before,
        after.world(),
        &sample(&[("solo", "81.2.69.0/24", 5), ("www", "81.2.69.0/24", 3)]),
    );
    let solo = &simulation.services[0];
    assert_eq!(solo.service, "solo");
    assert_eq!(solo.failed_open, 5);
    assert_eq!(solo.failed_open_now, 0);
    assert_eq!(
        solo.failed_open_networks,
        ["81.2.69.0/24".parse::<IpNet>().unwrap()]
    );
    assert!(solo.moves.is_empty(), "failing open still answers eu-west");
    assert_eq!(
        simulation.services[1].moves[0].to.as_deref(),
        Some("us-east")
    );
}

#[test]
fn service_changes_and_candidates_are_applied_by_name() {
    let fixture = Fixture::new(&[(0.0, 100.0), (0.0, 100.0), (0.0, 100.0)]);
    let before = fixture.world();
    let sampled = sample(&[("www", "81.2.69.0/24", 4), ("www", "1.128.0.0/24", 2)]);
    // Keep only us-east and ap-south in www's pools: GB goes to us-east.
    let pools = Change::Service(ServiceChange {
        service: "www".to_owned(),
        policy: None,
        pools: Some(vec!["us-east".to_owned(), "ap-south".to_owned()]),
    });
    let after = before.changed(&[pools]).expect("a valid change");
    let moves = &simulate(before, after.world(), &sampled).services[0].moves;
    assert_eq!(moves.len(), 1);
    assert_eq!(
        (
            moves[0].from.as_deref(),
            moves[0].to.as_deref(),
            moves[0].queries
        ),
        (Some("eu-west"), Some("us-east"), 4)
    );
    // A candidate without eu-west at all, with www's datacenters in another order under
    // failover: everyone goes to the first.
    let candidate = CONFIG
        .replace(
            "  eu-west:  { latitude: 53.3498,  longitude: -6.2603,   country: IE, continent: EU }\n",
            "",
        )
        .replace("      eu-west:  { a: [192.0.2.3] }\n", "")
        .replace("policy: nearest\n    pools:\n      us-east", "policy: failover\n    order: [ap-south, us-east]\n    pools:\n      us-east");
    let candidate = Config::from_yaml_str(&candidate.replace(
        "  solo:\n    name: solo.example.com\n    policy: nearest\n    pools:\n",
        "",
    ))
    .expect("candidate config");
    let after = before
        .changed(&[Change::Config(Arc::new(candidate))])
        .expect("a valid candidate");
    let simulation = simulate(before, after.world(), &sampled);
    let www = &simulation.services[0];
    assert_eq!(www.datacenters.last().unwrap().datacenter, "eu-west");
    assert_eq!(www.datacenters[0].datacenter, "ap-south");
    assert_eq!(www.datacenters[0].queries_after, 6);
    // Unknown names are refused.
    for change in [
        drain("mars"),
        Change::Service(ServiceChange {
            service: "www".to_owned(),
            policy: None,
            pools: Some(vec!["mars".to_owned()]),
        }),
    ] {
        assert!(fixture.world().changed(&[change]).is_err());
    }
}
