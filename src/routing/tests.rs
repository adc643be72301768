//! Table-driven routing tests: configuration fixture, client address, name, expected ranking.

use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::config::Config;
use crate::geo::{GeoDb, fixture_db};

const FIXTURE: &str = r#"
geo: { database: unused.mmdb }
zones: [{ origin: example.com, file: unused.zone }]
datacenters:
  us-east:  { latitude: 39.0438,  longitude: -77.4874,  country: US, continent: NA }
  us-west:  { latitude: 37.3382,  longitude: -121.8863, country: US, continent: NA }
  eu-west:  { latitude: 53.3498,  longitude: -6.2603,   country: IE, continent: EU }
  ap-south: { latitude: 1.3521,   longitude: 103.8198,  country: SG, continent: AS }
  sa-east:  { latitude: -23.5505, longitude: -46.6333,  country: BR, continent: SA }
services:
  www:
    name: www.example.com
    policy: nearest
    order: [us-east, eu-west]
    pools:
      us-east:  { a: [192.0.2.1] }
      us-west:  { a: [192.0.2.2] }
      eu-west:  { a: [192.0.2.3] }
      ap-south: { a: [192.0.2.4] }
      sa-east:  { a: [192.0.2.5] }
  eu-only:
    name: eu.example.com
    policy: nearest
    pools:
      eu-west:  { a: [192.0.2.3] }
  backup:
    name: backup.example.com
    policy: failover
    order: [eu-west, us-east]
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
  split:
    name: split.example.com
    policy: weighted
    pools:
      us-east:  { a: [192.0.2.1], weight: 3 }
      us-west:  { a: [192.0.2.2], weight: 1 }
  api:
    name: api.example.com
    policy: nearest-with-capacity
    capacity: { low_watermark: 0.5, high_watermark: 0.9, hysteresis: 0.1 }
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      us-west:  { a: [192.0.2.2] }
  strict:
    name: strict.example.com
    policy: nearest
    all_down: servfail
    pools:
      eu-west:  { a: [192.0.2.3] }
      us-east:  { a: [192.0.2.1] }
  fenced:
    name: fenced.example.com
    policy: nearest
    geofence: [{ continents: [EU], datacenters: [eu-west] }]
    overrides:
      - { countries: [AU], datacenters: [eu-west] }
      - { cidrs: [8.8.8.0/24], datacenters: [sa-east] }
    pools:
      us-east:  { a: [192.0.2.1] }
      us-west:  { a: [192.0.2.2] }
      eu-west:  { a: [192.0.2.3] }
      sa-east:  { a: [192.0.2.5] }
  scored:
    name: scored.example.com
    policy: metric
    metric: { latency_weight: 1, cost_weight: 10 }
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
"#;

struct World {
    config: Config,
    geo: Arc<GeoDb>,
    base: Arc<BaseTable>,
    table: RoutingTable,
}

fn world() -> World {
    let config = Config::from_yaml_str(FIXTURE).expect("fixture config");
    let geo = Arc::new(fixture_db());
    let base = Arc::new(BaseTable::build(&config, geo.clone()));
    let states = vec![DcState::default(); config.datacenters.len()];
    let table = RoutingTable::build(base.clone(), &config, &states, None);
    World {
        config,
        geo,
        base,
        table,
    }
}

/// The one caller of the routing API in these tests: the ranking of `qname` for `client_ip`
/// (located in the fixture database, /24 networks), as datacenter names.
fn check(world: &World, client_ip: &str, qname: &str, expected: &[&str], basis: Basis) {
    let ip: IpAddr = client_ip.parse().unwrap();
    let service = world
        .config
        .services
        .iter()
        .position(|s| s.name == qname)
        .expect("service in fixture");
    let client = Client::new(ip, world.geo.lookup(ip), 24);
    let decision = world
        .table
        .resolve(ServiceId(service as u16), &client, Family::A);
    let got: Vec<&str> = decision
        .datacenters
        .iter()
        .map(|dc| world.config.datacenters[usize::from(dc.0)].name.as_str())
        .collect();
    assert_eq!(got, expected, "{qname} for {client_ip}");
    assert_eq!(decision.basis, basis, "{qname} for {client_ip}");
}

#[test]
fn nearest_ranks_by_distance_and_falls_back_to_the_order() {
    let world = world();
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[&str], Basis)] = &[
        // London: Dublin 460 km, Ashburn 5,900, San Jose 8,600, São Paulo 9,500, Singapore 10,900.
        ("81.2.69.160", "www.example.com", &["eu-west", "us-east", "us-west", "sa-east", "ap-south"], Basis::Distance),
        // Sydney: Singapore 6,300 km, San Jose 11,900, São Paulo 13,400, Ashburn 15,700, Dublin 17,200.
        ("1.128.0.1", "www.example.com", &["ap-south", "us-west", "sa-east", "us-east", "eu-west"], Basis::Distance),
        // Mountain View: San Jose 15 km, Ashburn 3,900, Dublin 8,200, São Paulo 10,400.
        ("8.8.8.8", "www.example.com", &["us-west", "us-east", "eu-west", "sa-east", "ap-south"], Basis::Distance),
        // A country-only record: the United States' point is Washington.
        ("3.3.3.3", "www.example.com", &["us-east", "us-west", "eu-west", "sa-east", "ap-south"], Basis::Distance),
        // São Paulo: Ashburn 7,600 km, Dublin 9,400, San Jose 10,400, Singapore 15,900.
        ("200.160.0.1", "www.example.com", &["sa-east", "us-east", "eu-west", "us-west", "ap-south"], Basis::Distance),
        // Singapore: Dublin 11,200 km, San Jose 13,600, Ashburn 15,500, São Paulo 16,000.
        ("2400:cb00::1", "www.example.com", &["ap-south", "eu-west", "us-west", "us-east", "sa-east"], Basis::Distance),
        // Unlocated clients get the configured order, completed by pool order.
        ("10.0.0.1", "www.example.com", &["us-east", "eu-west", "us-west", "ap-south", "sa-east"], Basis::NoLocation),
        ("198.51.100.7", "www.example.com", &["us-east", "eu-west", "us-west", "ap-south", "sa-east"], Basis::NoLocation),
        // A one-datacenter service answers that datacenter for everybody.
        ("1.128.0.1", "eu.example.com", &["eu-west"], Basis::Distance),
        // Failover ignores the client.
        ("8.8.8.8", "backup.example.com", &["eu-west", "us-east"], Basis::Order),
        ("10.0.0.1", "backup.example.com", &["eu-west", "us-east"], Basis::Order),
    ];
    for &(ip, qname, expected, basis) in cases {
        check(&world, ip, qname, expected, basis);
    }
}

#[test]
fn weighted_splits_networks_by_weight_and_keeps_each_network_stable() {
    let world = world();
    let service = ServiceId(3);
    // Networks spread over 10.0.0.0/8; with splitmix the low bits (the bucket) are uniform.
    let mut first_east = 0;
    let n_networks = 20_000u32;
    for i in 0..n_networks {
        let ip = IpAddr::from((0x0a00_0000u32 + (i << 8)).to_be_bytes());
        let client = Client::new(ip, world.geo.lookup(ip), 24);
        let decision = world.table.resolve(service, &client, Family::A);
        assert_eq!(decision.basis, Basis::Weight);
        assert_eq!(decision.datacenters.len(), 2);
        // The same network always gets the same ranking.
        assert_eq!(world.table.resolve(service, &client, Family::A), decision);
        if decision.datacenters[0] == DcId(0) {
            first_east += 1;
        }
    }
    let share = f64::from(first_east) / f64::from(n_networks);
    assert!(
        (0.70..0.80).contains(&share),
        "us-east first for {share:.3}, want 0.75"
    );
}

#[test]
fn rankings_are_stored_once() {
    let world = world();
    // A one-datacenter service has exactly one distinct ranking however many cells exist.
    assert_eq!(world.table.rankings(ServiceId(1)).len(), 1);
    // The five-datacenter service has far fewer rankings than the fixture has cells... or equal.
    assert!(world.table.rankings(ServiceId(0)).len() <= world.geo.locations().len() + 1);
}

#[test]
fn network_keys_ignore_host_bits_and_mapped_addresses() {
    let a = network_key("81.2.69.1".parse().unwrap(), 24);
    assert_eq!(a, network_key("81.2.69.254".parse().unwrap(), 24));
    assert_eq!(a, network_key("::ffff:81.2.69.9".parse().unwrap(), 24));
    assert_ne!(a, network_key("81.2.70.1".parse().unwrap(), 24));
    assert_ne!(a, network_key("81.2.69.1".parse().unwrap(), 23));
    // Fixed value: the key must never change between releases (it places networks in buckets).
    assert_eq!(
        network_key("192.0.2.0".parse().unwrap(), 24),
        0x02de_7d21_6786_ad54
    );
}

// Live state: eligibility, capacity, fail-open, geofences, overrides, metric.

const US_EAST: usize = 0;
const US_WEST: usize = 1;
const EU_WEST: usize = 2;

fn report(healthy: bool, load: f64, age_s: u64) -> ReportState {
    ReportState {
        healthy,
        capacity: 100.0,
        load,
        latency_ms: Default::default(),
        cost: None,
        service_latency_ms: None,
        age: std::time::Duration::from_secs(age_s),
        ttl: std::time::Duration::from_secs(10),
    }
}

impl World {
    /// Rebuilds the live table with `edit` applied to every datacenter's default state.
    fn with_states(&mut self, edit: impl FnOnce(&mut [DcState])) {
        let mut states = vec![DcState::default(); self.config.datacenters.len()];
        edit(&mut states);
        self.table =
            RoutingTable::build(self.base.clone(), &self.config, &states, Some(&self.table));
    }

    fn decide(&self, client_ip: &str, qname: &str) -> (Vec<&str>, Decision<'_>) {
        let ip: IpAddr = client_ip.parse().unwrap();
        let service = self
            .config
            .services
            .iter()
            .position(|s| s.name == qname)
            .unwrap();
        let client = Client::new(ip, self.geo.lookup(ip), 24);
        let decision = self
            .table
            .resolve(ServiceId(service as u16), &client, Family::A);
        let names = decision
            .datacenters
            .iter()
            .map(|dc| self.config.datacenters[usize::from(dc.0)].name.as_str())
            .collect();
        (names, decision)
    }
}

/// A change to the datacenters' states.
type Edit = fn(&mut [DcState]);

#[test]
fn ineligible_datacenters_are_skipped() {
    let mut world = world();
    #[rustfmt::skip]
    let cases: &[(&str, Edit, &[&str])] = &[
        ("drained", |s| s[EU_WEST].drained = true, &["us-east", "us-west", "sa-east", "ap-south"]),
        ("drained for this service", |s| s[EU_WEST].drained_services = vec![ServiceId(0)], &["us-east", "us-west", "sa-east", "ap-south"]),
        ("drained for another service", |s| s[EU_WEST].drained_services = vec![ServiceId(1)], &["eu-west", "us-east", "us-west", "sa-east", "ap-south"]),
        ("reported down", |s| s[EU_WEST].report = Some(report(false, 0.0, 1)), &["us-east", "us-west", "sa-east", "ap-south"]),
        ("fresh and healthy", |s| s[EU_WEST].report = Some(report(true, 0.0, 1)), &["eu-west", "us-east", "us-west", "sa-east", "ap-south"]),
        // TTL 10 s, grace 30 s (the default): at 25 s the last known state (healthy) holds.
        ("stale within grace", |s| s[EU_WEST].report = Some(report(true, 0.0, 25)), &["eu-west", "us-east", "us-west", "sa-east", "ap-south"]),
        ("stale past grace", |s| s[EU_WEST].report = Some(report(true, 0.0, 41)), &["us-east", "us-west", "sa-east", "ap-south"]),
        ("stale and last known down", |s| s[EU_WEST].report = Some(report(false, 0.0, 25)), &["us-east", "us-west", "sa-east", "ap-south"]),
    ];
    for &(what, edit, expected) in cases {
        world.with_states(edit);
        let (got, decision) = world.decide("81.2.69.1", "www.example.com");
        assert_eq!(got, expected, "{what}");
        assert!(!decision.failed_open, "{what}");
    }
}

#[test]
fn all_ineligible_fails_open_or_servfails_as_configured() {
    let mut world = world();
    world.with_states(|s| s.iter_mut().for_each(|dc| dc.drained = true));
    let (got, decision) = world.decide("81.2.69.1", "www.example.com");
    assert_eq!(
        got,
        ["eu-west", "us-east", "us-west", "sa-east", "ap-south"],
        "as if healthy"
    );
    assert!(decision.failed_open);
    let (got, decision) = world.decide("81.2.69.1", "strict.example.com");
    assert!(got.is_empty(), "servfail: no datacenter");
    assert!(!decision.failed_open);
}

#[test]
fn standing_follows_reports_and_requirements() {
    let mut config = Config::from_yaml_str(FIXTURE).unwrap();
    let service = config.services[0].clone();
    let unreported = DcState::default();
    assert_eq!(
        Standing::of(&config.datacenters[0], &unreported, ServiceId(0), &service),
        Standing::Unreported
    );
    config.datacenters[0].require_report = true;
    let standing = Standing::of(&config.datacenters[0], &unreported, ServiceId(0), &service);
    assert_eq!(standing, Standing::NoReport);
    assert!(!standing.is_eligible());
}

/// The share of 2,000 GB client networks whose first datacenter for `api` is eu-west.
fn eu_share(world: &World) -> f64 {
    let n = 2000u32;
    let kept = (0..n)
        .filter(|i| {
            let ip = IpAddr::from((0x5102_4500u32 | (i << 8) & 0xff00).to_be_bytes());
            // 81.2.69.0/24 is the fixture's GB network; vary the key, keep the cell.
            let client = Client {
                network_key: network_key(IpAddr::from(i.to_be_bytes()), 32),
                ..Client::new(ip, world.geo.lookup("81.2.69.1".parse().unwrap()), 24)
            };
            world
                .table
                .resolve(ServiceId(4), &client, Family::A)
                .datacenters[0]
                == DcId(EU_WEST as u16)
        })
        .count();
    kept as f64 / f64::from(n)
}

#[test]
fn nearest_with_capacity_spills_a_growing_share_with_hysteresis() {
    let mut world = world();
    let load = |load: f64| move |s: &mut [DcState]| s[EU_WEST].report = Some(report(true, load, 1));
    // Low watermark 0.5, high 0.9, hysteresis 0.1.
    #[rustfmt::skip]
    let steps: &[(f64, f64, f64, &str)] = &[
        // load, min share kept, max share kept
        (30.0, 1.0, 1.0, "below the low watermark: nobody moves"),
        (70.0, 0.45, 0.55, "half way: half the networks spill"),
        (85.0, 0.05, 0.2, "near the top: most spill"),
        (95.0, 0.0, 0.0, "over the high watermark: nobody new"),
        (85.0, 0.0, 0.0, "hysteresis: still full until below 0.8"),
        (75.0, 0.3, 0.45, "below high - hysteresis: takes clients again"),
    ];
    for &(l, min, max, what) in steps {
        world.with_states(load(l));
        let share = eu_share(&world);
        assert!(
            (min..=max).contains(&share),
            "load {l}: {what}: eu-west keeps {share:.3}"
        );
    }
    // Full datacenters rank last, not out.
    world.with_states(load(95.0));
    world.with_states(load(95.0));
    let (got, _) = world.decide("81.2.69.1", "api.example.com");
    assert_eq!(got, ["us-east", "us-west", "eu-west"]);
}

#[test]
fn a_datacenter_reporting_no_capacity_takes_no_new_clients() {
    let mut world = world();
    let (got, _) = world.decide("81.2.69.1", "api.example.com");
    assert_eq!(got[0], "eu-west", "the nearest, before it reports");
    // Capacity 0 and load 0 used to be utilization 0: the datacenter kept every client.
    let empty = ReportState {
        capacity: 0.0,
        ..report(true, 0.0, 1)
    };
    world.with_states(|s| s[EU_WEST].report = Some(empty.clone()));
    let (got, _) = world.decide("81.2.69.1", "api.example.com");
    assert_eq!(got, ["us-east", "us-west", "eu-west"]);
}

#[test]
fn spilling_is_stable_per_network() {
    let mut world = world();
    let ip: IpAddr = "81.2.69.1".parse().unwrap();
    let hit = world.geo.lookup(ip);
    let mut spilled_at: Option<Vec<bool>> = None;
    for load in (50..90).step_by(2) {
        world.with_states(|s| s[EU_WEST].report = Some(report(true, f64::from(load), 1)));
        let spilled: Vec<bool> = (0..500u32)
            .map(|i| {
                let client = Client {
                    network_key: network_key(IpAddr::from(i.to_be_bytes()), 32),
                    ..Client::new(ip, hit, 24)
                };
                world
                    .table
                    .resolve(ServiceId(4), &client, Family::A)
                    .datacenters[0]
                    != DcId(EU_WEST as u16)
            })
            .collect();
        // A network that spilled at a lower load still spills at a higher one.
        if let Some(previous) = &spilled_at {
            for (i, (was, is)) in std::iter::zip(previous, &spilled).enumerate() {
                assert!(!*was || *is, "network {i} came back at load {load}");
            }
        }
        spilled_at = Some(spilled);
    }
}

#[test]
fn geofences_and_overrides_apply() {
    let world = world();
    #[rustfmt::skip]
    let cases: &[(&str, &[&str], Basis)] = &[
        // GB is in the EU fence: eu-west only.
        ("81.2.69.1", &["eu-west"], Basis::Distance),
        // AU prefers eu-west by override, then by distance.
        ("1.128.0.1", &["eu-west", "us-west", "sa-east", "us-east"], Basis::Distance),
        // 8.8.8.0/24 prefers sa-east by network override, then the configured order.
        ("8.8.8.8", &["sa-east", "us-east", "us-west", "eu-west"], Basis::Override),
        // Elsewhere, plain distance.
        ("200.160.0.1", &["sa-east", "us-east", "eu-west", "us-west"], Basis::Distance),
    ];
    for &(ip, expected, basis) in cases {
        let (got, decision) = world.decide(ip, "fenced.example.com");
        assert_eq!(got, expected, "{ip}");
        assert_eq!(decision.basis, basis, "{ip}");
    }
    let (_, decision) = world.decide("8.8.8.8", "fenced.example.com");
    assert_eq!(decision.scope, Scope::Prefix(24));
}

#[test]
fn metric_ranks_by_latency_and_cost() {
    let mut world = world();
    // No measurements: distance estimates (London: Dublin 460 km, Ashburn 5,900 km).
    assert_eq!(
        world.decide("81.2.69.1", "scored.example.com").0,
        ["eu-west", "us-east"]
    );
    // A costly eu-west (10 × 100) loses to us-east's estimated 64 ms.
    world.with_states(|s| {
        s[EU_WEST].report = Some(ReportState {
            cost: Some(100.0),
            ..report(true, 0.0, 1)
        });
    });
    assert_eq!(
        world.decide("81.2.69.1", "scored.example.com").0,
        ["us-east", "eu-west"]
    );
    // A measured 2 s from GB to us-east (by country) outweighs the cost again.
    world.with_states(|s| {
        s[EU_WEST].report = Some(ReportState {
            cost: Some(100.0),
            ..report(true, 0.0, 1)
        });
        let mut us = report(true, 0.0, 1);
        us.latency_ms.insert("GB".to_owned(), 2000.0);
        s[US_EAST].report = Some(us);
    });
    assert_eq!(
        world.decide("81.2.69.1", "scored.example.com").0,
        ["eu-west", "us-east"]
    );
    // By continent when the country is not measured.
    world.with_states(|s| {
        let mut us = report(true, 0.0, 1);
        us.latency_ms.insert("EU".to_owned(), 1.0);
        s[US_EAST].report = Some(us);
    });
    assert_eq!(
        world.decide("81.2.69.1", "scored.example.com").0,
        ["us-east", "eu-west"]
    );
}

#[test]
fn explanations_match_decisions_and_give_reasons() {
    let mut world = world();
    world.with_states(|s| {
        s[EU_WEST].drained = true;
        s[US_WEST].report = Some(report(true, 0.0, 25));
    });
    let ip: IpAddr = "81.2.69.1".parse().unwrap();
    let hit = world.geo.lookup(ip);
    let client = Client::new(ip, hit, 24);
    let states = {
        let mut states = vec![DcState::default(); world.config.datacenters.len()];
        states[EU_WEST].drained = true;
        states[US_WEST].report = Some(report(true, 0.0, 25));
        states
    };
    let location = hit.cell.map(|cell| world.geo.location(cell));
    let explanation = explain(
        &world.table,
        &world.config,
        &states,
        ServiceId(0),
        &client,
        location,
    );
    let decision = world.table.resolve(ServiceId(0), &client, Family::A);
    assert_eq!(explanation.ranking, decision.datacenters);
    assert_eq!(explanation.datacenters[0].name, "us-east");
    assert!(
        explanation.datacenters[0].reason.starts_with("chosen"),
        "{:?}",
        explanation.datacenters[0]
    );
    let us_west = explanation
        .datacenters
        .iter()
        .find(|d| d.name == "us-west")
        .unwrap();
    assert_eq!(
        us_west.reason,
        "ranked 2: stale 25 s, keeping its last known state"
    );
    let eu_west = explanation
        .datacenters
        .iter()
        .find(|d| d.name == "eu-west")
        .unwrap();
    assert_eq!(eu_west.reason, "skipped: drained");
    assert_eq!(eu_west.rank, None);
    assert!(eu_west.distance_km.unwrap() < 500.0);
}
