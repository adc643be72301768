//! Table-driven routing tests: configuration fixture, client address, name, expected ranking.

use std::borrow::Cow;
use std::net::IpAddr;

use super::*;
use crate::config::Config;
use crate::geo::{CountryTable, GeoDb, fixture};

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
"#;

struct World {
    config: Config,
    geo: GeoDb,
    table: RoutingTable,
}

fn world() -> World {
    let config = Config::from_yaml_str(FIXTURE).expect("fixture config");
    let countries = CountryTable::parse(crate::config::COUNTRIES_CSV).unwrap();
    let geo = GeoDb::build(Cow::Owned(fixture::standard()), &countries).unwrap();
    let table = RoutingTable::build(&config, geo.locations());
    World { config, geo, table }
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
    let hit = world.geo.lookup(ip);
    let client = Client {
        cell: hit.cell,
        network_key: network_key(ip, 24),
    };
    let decision = world.table.resolve(ServiceId(service as u16), &client);
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
    let mut first_east = 0;
    let n_networks = 20_000u32;
    for i in 0..n_networks {
        let ip = IpAddr::from((0x0a00_0000u32 + (i << 8)).to_be_bytes());
        let client = Client {
            cell: None,
            network_key: network_key(ip, 24),
        };
        let decision = world.table.resolve(service, &client);
        assert_eq!(decision.basis, Basis::Weight);
        assert_eq!(decision.datacenters.len(), 2);
        // The same network always gets the same ranking.
        assert_eq!(world.table.resolve(service, &client), decision);
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
        0x0490_1d05_7f78_d863
    );
}
