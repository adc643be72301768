//! Decision maps and ECS scopes: every address inside the scope of a decision gets the same
//! reply (a property test over a generated database and random datacenter states, for A, AAAA
//! and ANY), and the scope each policy claims.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::{Config, ServiceConfig};
use crate::geo::{CountryTable, GeoDb, fixture::MmdbFixture};

/// The routing fixture's datacenters and services (every policy), over a generated database.
const CONFIG: &str = r#"
geo: { database: unused.mmdb }
zones: [{ origin: example.com, file: unused.zone }]
datacenters:
  us-east:  { latitude: 39.0438,  longitude: -77.4874,  country: US, continent: NA }
  us-west:  { latitude: 37.3382,  longitude: -121.8863, country: US, continent: NA }
  eu-west:  { latitude: 53.3498,  longitude: -6.2603,   country: IE, continent: EU }
  eu-central: { latitude: 50.1109, longitude: 8.6821,   country: DE, continent: EU }
  ap-south: { latitude: 1.3521,   longitude: 103.8198,  country: SG, continent: AS }
  sa-east:  { latitude: -23.5505, longitude: -46.6333,  country: BR, continent: SA }
services:
  www:
    name: www.example.com
    policy: nearest
    pools:
      us-east:  { a: [192.0.2.1] }
      us-west:  { a: [192.0.2.2] }
      eu-west:  { a: [192.0.2.3] }
      eu-central: { a: [192.0.2.6] }
      ap-south: { a: [192.0.2.4] }
      sa-east:  { a: [192.0.2.5] }
  two:
    name: two.example.com
    policy: nearest
    answers: 2
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      eu-central: { a: [192.0.2.6], aaaa: ["2001:db8::6"] }
      ap-south: { a: [192.0.2.4] }
  api:
    name: api.example.com
    policy: nearest-with-capacity
    capacity: { low_watermark: 0.5, high_watermark: 0.9, hysteresis: 0.1 }
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      eu-central: { a: [192.0.2.6] }
      us-west:  { a: [192.0.2.2] }
  split:
    name: split.example.com
    policy: weighted
    pools:
      us-east:  { a: [192.0.2.1], weight: 3 }
      us-west:  { a: [192.0.2.2], weight: 1 }
  backup:
    name: backup.example.com
    policy: failover
    order: [eu-west, us-east]
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
  fenced:
    name: fenced.example.com
    policy: nearest
    all_down: servfail
    geofence: [{ continents: [EU], datacenters: [eu-west, eu-central] }]
    overrides:
      - { countries: [AU], datacenters: [eu-west] }
      - { cidrs: [20.1.0.0/16, 20.1.2.0/24, "2a00:1::/32"], datacenters: [sa-east] }
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      eu-central: { a: [192.0.2.6] }
      sa-east:  { a: [192.0.2.5] }
  scored:
    name: scored.example.com
    policy: metric
    metric: { latency_weight: 1, cost_weight: 10 }
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      ap-south: { a: [192.0.2.4] }
  mirror:
    name: mirror.example.com
    policy: nearest-with-capacity
    pools:
      us-east:  { a: [192.0.2.1] }
      us-west:  { a: [192.0.2.2] }
      eu-west:  { a: [192.0.2.3] }
      eu-central: { a: [192.0.2.6] }
      ap-south: { a: [192.0.2.4] }
      sa-east:  { a: [192.0.2.5] }
  cascade:
    name: cascade.example.com
    policy: cascade
    order: [eu-west, us-east, ap-south]
    capacity: { low_watermark: 0.5, high_watermark: 0.9, hysteresis: 0.1 }
    slow_start_seconds: 120
    max_service_latency_ms: 150
    overrides: [{ cidrs: [20.1.0.0/16], datacenters: [ap-south] }]
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      ap-south: { a: [192.0.2.4] }
  least:
    name: least.example.com
    policy: least-loaded
    slow_start_seconds: 120
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      eu-central: { a: [192.0.2.6] }
      sa-east:  { a: [192.0.2.5] }
  near-least:
    name: near-least.example.com
    policy: least-loaded
    max_extra_km: 1500
    geofence: [{ continents: [EU], datacenters: [eu-west, eu-central] }]
    pools:
      us-east:  { a: [192.0.2.1] }
      us-west:  { a: [192.0.2.2] }
      eu-west:  { a: [192.0.2.3] }
      eu-central: { a: [192.0.2.6] }
      sa-east:  { a: [192.0.2.5] }
  biased:
    name: biased.example.com
    policy: nearest-with-capacity
    slow_start_seconds: 60
    max_service_latency_ms: 100
    pools:
      us-east:  { a: [192.0.2.1], bias: "1500 km" }
      us-west:  { a: [192.0.2.2], bias: "-30 %" }
      eu-west:  { a: [192.0.2.3] }
      eu-central: { a: [192.0.2.6], bias: "40 %" }
      sa-east:  { a: [192.0.2.5] }
  ramped:
    name: ramped.example.com
    policy: weighted
    slow_start_seconds: 100
    pools:
      us-east:  { a: [192.0.2.1], weight: 3 }
      us-west:  { a: [192.0.2.2], weight: 1 }
      eu-west:  { a: [192.0.2.3], weight: 2 }
  dual:
    name: dual.example.com
    policy: nearest
    pools:
      us-east:  { a: [192.0.2.1], aaaa: ["2001:db8::1"] }
      us-west:  { a: [192.0.2.2], aaaa: ["2001:db8::2"] }
      eu-west:  { a: [192.0.2.3], aaaa: ["2001:db8::3"] }
      eu-central: { a: [192.0.2.6], aaaa: ["2001:db8::6"] }
      ap-south: { a: [192.0.2.4], aaaa: ["2001:db8::4"] }
      sa-east:  { a: [192.0.2.5], aaaa: ["2001:db8::5"] }
  mixed:
    name: mixed.example.com
    policy: nearest-with-capacity
    answers: 2
    slow_start_seconds: 60
    capacity: { low_watermark: 0.5, high_watermark: 0.9, hysteresis: 0.1 }
    pools:
      us-east:  { a: [192.0.2.1, 192.0.2.11] }
      us-west:  { aaaa: ["2001:db8::2"] }
      eu-west:  { a: [192.0.2.3], aaaa: ["2001:db8::3", "2001:db8::13"] }
      eu-central: { aaaa: ["2001:db8::6"] }
      ap-south: { a: [192.0.2.4] }
      sa-east:  { a: [192.0.2.5], aaaa: ["2001:db8::5"] }
"#;

/// The families a reply can carry.
const FAMILIES: [Family; 3] = [Family::A, Family::Aaaa, Family::Any];

/// What a reply of `family` carries for `decision` of `service`, worked out from the
/// configuration as `dns::routed` prepares records (in the configured order; a rotation only
/// reorders them): SERVFAIL without datacenters, else each datacenter's addresses along the
/// ranking up to the answer size (ANY: the A records, or the AAAA ones where there are none),
/// and whether the service failed open.
fn reply(
    service: &ServiceConfig,
    decision: &Decision<'_>,
    family: Family,
) -> Option<(Vec<IpAddr>, bool)> {
    if decision.datacenters.is_empty() {
        return None;
    }
    let records = |aaaa: bool| -> Vec<IpAddr> {
        decision
            .datacenters
            .iter()
            .flat_map(|dc| {
                let pool = service
                    .pools
                    .iter()
                    .find(|p| p.datacenter == usize::from(dc.0))
                    .expect("a pool of the service");
                if aaaa {
                    pool.aaaa.iter().map(|ip| IpAddr::from(*ip)).collect()
                } else {
                    pool.a
                        .iter()
                        .map(|ip| IpAddr::from(*ip))
                        .collect::<Vec<_>>()
                }
            })
            .take(service.answers.get() as usize)
            .collect()
    };
    let records = match family {
        Family::A => records(false),
        Family::Aaaa => records(true),
        Family::Any => Some(records(false))
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| records(true)),
    };
    Some((records, decision.failed_open))
}

/// Places records are drawn from: (latitude, longitude, country, continent).
const PLACES: &[(f64, f64, &str, &str)] = &[
    (51.5142, -0.0931, "GB", "EU"),
    (53.34, -6.26, "IE", "EU"),
    (48.85, 2.35, "FR", "EU"),
    (52.52, 13.40, "DE", "EU"),
    (50.45, 3.0, "FR", "EU"),
    (40.71, -74.0, "US", "NA"),
    (41.88, -87.63, "US", "NA"),
    (39.1, -94.6, "US", "NA"),
    (34.05, -118.24, "US", "NA"),
    (37.386, -122.08, "US", "NA"),
    (-33.87, 151.21, "AU", "OC"),
    (1.29, 103.85, "SG", "AS"),
    (35.68, 139.69, "JP", "AS"),
    (-23.55, -46.63, "BR", "SA"),
    (-12.05, -77.04, "PE", "SA"),
    (19.43, -99.13, "MX", "NA"),
];

/// A database of a few thousand networks: /8s split at random depths into networks of random
/// places, country-only records, unplaceable records and holes, in IPv4 and IPv6.
fn generated_db() -> Vec<u8> {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut fixture = MmdbFixture::new();
    let mut leaves: Vec<(u128, u8, bool)> = Vec::new();
    fn fill(
        addr: u128,
        len: u8,
        max: u8,
        is_v4: bool,
        next: &mut dyn FnMut() -> u64,
        out: &mut Vec<(u128, u8, bool)>,
    ) {
        if len >= max || (len > 10 && next().is_multiple_of(4)) {
            out.push((addr, len, is_v4));
            return;
        }
        let width = if is_v4 { 32 } else { 128 };
        fill(addr, len + 1, max, is_v4, next, out);
        fill(
            addr | (1u128 << (width - 1 - len)),
            len + 1,
            max,
            is_v4,
            next,
            out,
        );
    }
    for first in [20u128, 21, 81, 100, 200] {
        fill(first << 24, 8, 26, true, &mut next, &mut leaves);
    }
    for first in [0x2a00u128, 0x2600] {
        fill(first << 112, 16, 36, false, &mut next, &mut leaves);
    }
    for (addr, len, is_v4) in leaves {
        let network = if is_v4 {
            format!("{}/{len}", Ipv4Addr::from_bits(addr as u32))
        } else {
            format!("{}/{len}", Ipv6Addr::from_bits(addr))
        };
        let roll = next() % 100;
        // Neighbours often share a place, as they do in real databases.
        let place = PLACES[((addr >> 100) as usize + (next() % 3) as usize) % PLACES.len()];
        fixture = match roll {
            0..=9 => continue,
            10..=14 => fixture.country(&network, "ZZ"),
            15..=24 => fixture.country(&network, place.2),
            _ => fixture.city(&network, place.0, place.1, place.2, place.3),
        };
    }
    fixture
        .city("3.2.38.0/26", 40.71, -74.0, "US", "NA")
        .city("3.2.38.64/26", 51.5142, -0.0931, "GB", "EU")
        .city("3.2.38.128/26", 1.29, 103.85, "SG", "AS")
        .city("3.2.38.192/26", -23.55, -46.63, "BR", "SA")
        .build()
}

struct World {
    config: Config,
    geo: Arc<GeoDb>,
    base: Arc<BaseTable>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let config = Config::from_yaml_str(CONFIG).expect("config");
        let countries = CountryTable::parse(crate::config::COUNTRIES_CSV).unwrap();
        let geo = Arc::new(GeoDb::build(Cow::Owned(generated_db()), &countries).unwrap());
        let base = Arc::new(BaseTable::build(&config, geo.clone()));
        World { config, geo, base }
    })
}

fn report(healthy: bool, load: f64) -> ReportState {
    ReportState {
        healthy,
        capacity: 100.0,
        load,
        latency_ms: Default::default(),
        cost: None,
        service_latency_ms: None,
        age: Duration::from_secs(1),
        ttl: Duration::from_secs(10),
    }
}

/// A datacenter's state from a small number: default, drained, healthy at some load (with a
/// measured latency for some regions, a service latency, and for some a slow start under way),
/// reported down.
fn state(code: u8, load: u8) -> DcState {
    let mut state = old_state(code, load);
    if let Some(report) = &mut state.report {
        report.service_latency_ms = Some(f64::from(load) * 2.0);
    }
    if code / 5 % 2 == 1 {
        state.back_for = Some(Duration::from_secs(u64::from(load) % 130));
    }
    state
}

fn old_state(code: u8, load: u8) -> DcState {
    match code % 5 {
        0 => DcState::default(),
        1 => DcState {
            drained: true,
            ..DcState::default()
        },
        2 | 3 => {
            let mut report = report(true, f64::from(load % 100));
            if code % 5 == 3 {
                report.latency_ms.insert("GB".to_owned(), f64::from(load));
                report
                    .latency_ms
                    .insert("NA".to_owned(), f64::from(load) * 2.0);
            }
            DcState {
                report: Some(report),
                ..DcState::default()
            }
        }
        _ => DcState {
            report: Some(report(false, 0.0)),
            ..DcState::default()
        },
    }
}

/// The client a DNS query for `ip` makes: hashed over /24 or /48 like `dns::answer`.
fn client(geo: &GeoDb, ip: IpAddr) -> Client {
    let ip = ip.to_canonical();
    let network_prefix = if ip.is_ipv4() { 24 } else { 48 };
    Client::new(ip, geo.lookup(ip), network_prefix)
}

/// `ip` with the bits past `prefix_len` replaced by `fill`'s.
fn within(ip: IpAddr, prefix_len: u8, fill: u128) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = if prefix_len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix_len))
            };
            IpAddr::from(Ipv4Addr::from_bits(
                (v4.to_bits() & mask) | (fill as u32 & !mask),
            ))
        }
        IpAddr::V6(v6) => {
            let mask = if prefix_len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix_len))
            };
            IpAddr::from(Ipv6Addr::from_bits((v6.to_bits() & mask) | (fill & !mask)))
        }
    }
}

/// Addresses near the generated networks, and some anywhere.
fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (
            prop::sample::select(vec![3u32, 20, 21, 81, 100, 200]),
            any::<u32>()
        )
            .prop_map(|(first, rest)| IpAddr::from(Ipv4Addr::from_bits(
                (first << 24) | (rest >> 8)
            ))),
        any::<u32>().prop_map(|v4| IpAddr::from(Ipv4Addr::from_bits(v4))),
        // Around `fenced`'s override networks (20.1.0.0/16 with 20.1.2.0/24 inside).
        any::<u32>()
            .prop_map(|rest| IpAddr::from(Ipv4Addr::from_bits((20 << 24) | (rest & 0x3_ffff)))),
        (
            prop::sample::select(vec![0x2a00u128, 0x2600, 0x2001]),
            any::<u128>()
        )
            .prop_map(|(first, rest)| IpAddr::from(Ipv6Addr::from_bits(
                (first << 112) | (rest >> 16)
            ))),
        any::<u32>().prop_map(|v4| IpAddr::from(Ipv4Addr::from_bits(v4).to_ipv6_mapped())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_address_in_the_scope_gets_the_same_answer(
        ip in address(),
        codes in prop::collection::vec((any::<u8>(), any::<u8>()), 6),
        fills in prop::collection::vec(any::<u128>(), 16),
    ) {
        let world = world();
        let states: Vec<DcState> = codes.iter().map(|&(code, load)| state(code, load)).collect();
        let table = RoutingTable::build(world.base.clone(), &world.config, &states, None);
        // Scopes hold with and without the exact networks a published table adds.
        if codes[0].1 % 2 == 0 {
            table.widen_scopes();
        }
        for (s, config) in world.config.services.iter().enumerate() {
            let service = ServiceId(s as u16);
            for family in FAMILIES {
                let decision = table.resolve(service, &client(&world.geo, ip), family);
                let want = reply(config, &decision, family);
                let scope = decision.prefix_len;
                let first = within(ip.to_canonical(), scope, 0);
                let last = within(ip.to_canonical(), scope, u128::MAX);
                for other in [first, last].into_iter().chain(fills.iter().map(|f| within(ip.to_canonical(), scope, *f))) {
                    let got = table.resolve(service, &client(&world.geo, other), family);
                    prop_assert_eq!(
                        reply(config, &got, family),
                        want.clone(),
                        "service {} {:?} client {} scope /{} address {}",
                        &config.id, family, ip, scope, other
                    );
                }
            }
        }
    }
}

/// Whether some address of `ip`'s network of `len` bits gets another reply of `family` from
/// `service` than `want`: a walk over the network from one decision's scope to the next (each
/// holds everywhere inside, by the test above), so maximal scopes take few steps.
fn holds_another_answer(
    table: &RoutingTable,
    service: ServiceId,
    family: Family,
    ip: IpAddr,
    len: u8,
    want: &Option<(Vec<IpAddr>, bool)>,
) -> bool {
    let config = &world().config.services[usize::from(service.0)];
    let geo = &world().geo;
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    };
    let at = |bits: u128| match ip {
        IpAddr::V4(_) => IpAddr::from(Ipv4Addr::from_bits(bits as u32)),
        IpAddr::V6(_) => IpAddr::from(Ipv6Addr::from_bits(bits)),
    };
    let last = bits(within(ip, len, u128::MAX));
    let mut next = bits(within(ip, len, 0));
    for _ in 0..100_000 {
        let got = table.resolve(service, &client(geo, at(next)), family);
        if reply(config, &got, family) != *want {
            return true;
        }
        let end = bits(within(at(next), got.prefix_len, u128::MAX));
        if end >= last {
            return false;
        }
        next = end + 1;
    }
    panic!("{ip}/{len}: more than 100,000 scopes for {service:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Geographic scopes are the widest: one bit wider, the network holds another reply.
    /// States without balancing (healthy, drained or down), so that no answer is hashed.
    /// Services with override networks are left out: a scope stops short of an override
    /// network even where the override happens to give the same answer.
    #[test]
    fn geographic_scopes_are_the_widest_networks_of_one_answer(
        ip in address(),
        codes in prop::collection::vec(prop::sample::select(vec![0u8, 1, 4]), 6),
    ) {
        let world = world();
        let states: Vec<DcState> = codes.iter().map(|&code| state(code, 0)).collect();
        let table = RoutingTable::build(world.base.clone(), &world.config, &states, None);
        table.widen_scopes();
        for (s, config) in world.config.services.iter().enumerate() {
            if config.overrides.iter().any(|rule| !rule.cidrs.is_empty()) {
                continue;
            }
            let service = ServiceId(s as u16);
            for family in FAMILIES {
                let decision = table.resolve(service, &client(&world.geo, ip), family);
                if decision.scope != Scope::Geo || decision.prefix_len == 0 {
                    continue;
                }
                let want = reply(config, &decision, family);
                let wider = decision.prefix_len - 1;
                prop_assert!(
                    holds_another_answer(&table, service, family, ip.to_canonical(), wider, &want),
                    "service {} {:?} client {} scope /{}: /{} has one reply",
                    &config.id, family, ip, decision.prefix_len, wider
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A map brought up to date from the one before a change is the map a build makes.
    #[test]
    fn maps_brought_up_to_date_equal_maps_built_afresh(
        before in prop::collection::vec((any::<u8>(), any::<u8>()), 6),
        after in prop::collection::vec((any::<u8>(), any::<u8>()), 6),
    ) {
        let world = world();
        let states = |codes: &[(u8, u8)]| -> Vec<DcState> {
            codes.iter().map(|&(code, load)| state(code, load)).collect()
        };
        let old = RoutingTable::build(world.base.clone(), &world.config, &states(&before), None);
        let new = RoutingTable::build(world.base.clone(), &world.config, &states(&after), None);
        for s in 0..world.config.services.len() {
            let id = ServiceId(s as u16);
            let (Some((old_inputs, old_map)), Some((inputs, fresh))) = (old.map_part(id), new.map_part(id)) else {
                continue;
            };
            if let Some(updated) = geomap::GeoMap::update(&world.geo, old_inputs, old_map, inputs) {
                prop_assert_eq!(updated.entries(), fresh.entries(), "service {}", &world.config.services[s].id);
            }
        }
    }
}

/// `metric` with latencies measured for every continent ranks per region: no location is
/// ranked on its own except where a finest quad mixes regions, and every region has one
/// ranking.
#[test]
fn measured_metric_rankings_are_per_region_not_per_location() {
    let world = world();
    let scored = world
        .config
        .services
        .iter()
        .position(|s| s.id == "scored")
        .expect("the metric service");
    let continents = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];
    let states: Vec<DcState> = (0..world.config.datacenters.len())
        .map(|dc| {
            let mut report = report(true, 0.0);
            for (i, continent) in continents.iter().enumerate() {
                // Each continent prefers another datacenter.
                let latency = ((dc + i) % world.config.datacenters.len()) as f64 * 10.0;
                report.latency_ms.insert((*continent).to_owned(), latency);
            }
            DcState {
                report: Some(report),
                ..DcState::default()
            }
        })
        .collect();
    let measured = RoutingTable::build(world.base.clone(), &world.config, &states, None);
    let (_, map) = measured.map_part(ServiceId(scored as u16)).expect("a map");
    let geo = &world.geo;
    let (quads, cells) = map.entries();
    for (cell, _) in &cells {
        let cell = CellId(*cell);
        let region = geo.regions()[usize::from(geo.cell_region(cell).0)];
        assert!(
            geo.quads()[geo.cell_quad(cell).0 as usize].region.is_none()
                || region.continent.is_none(),
            "cell {cell:?} of {region:?} is ranked on its own"
        );
    }
    // One ranking per continent: every quad of one region has its region's ranking.
    let mut by_continent: std::collections::HashMap<_, _> = std::collections::HashMap::new();
    for (start, _, ranking) in &quads {
        if let Some(region) = geo.quads()[*start as usize].region {
            let continent = geo.regions()[usize::from(region.0)].continent;
            if continent.is_some() {
                let first = by_continent.entry(continent).or_insert(*ranking);
                assert_eq!(*first, *ranking, "{continent:?}");
            }
        }
    }
    assert!(by_continent.len() >= 2, "{by_continent:?}");
}

#[test]
fn a_health_flip_brings_maps_up_to_date_instead_of_building_them() {
    let world = world();
    let healthy = vec![DcState::default(); world.config.datacenters.len()];
    let mut down = healthy.clone();
    down[2].report = Some(report(false, 0.0)); // eu-west
    let first = RoutingTable::build(world.base.clone(), &world.config, &healthy, None);
    let fresh = RoutingTable::build(world.base.clone(), &world.config, &down, None);
    let mut updated = 0;
    for s in 0..world.config.services.len() {
        let id = ServiceId(s as u16);
        let (Some((before, map)), Some((inputs, built))) = (first.map_part(id), fresh.map_part(id))
        else {
            continue;
        };
        if before == inputs {
            continue;
        }
        let Some(map) = geomap::GeoMap::update(&world.geo, before, map, inputs) else {
            // Only `max_extra_km` (tiers by distance to the nearest candidate) is built anew.
            assert!(
                inputs.within_km.is_some(),
                "service {s}: candidates changed only"
            );
            continue;
        };
        assert_eq!(map.entries(), built.entries(), "service {s}");
        // And back up.
        let back = geomap::GeoMap::update(&world.geo, inputs, &map, before).unwrap();
        assert_eq!(
            back.entries(),
            first.map_part(id).unwrap().1.entries(),
            "service {s}"
        );
        updated += 1;
    }
    assert!(updated >= 3, "eu-west is in most pools: {updated}");
}

/// (service, client, expected scope, why) under the default state (nothing reported).
#[test]
fn each_policy_claims_its_scope() {
    let world = world();
    let states = vec![DcState::default(); world.config.datacenters.len()];
    let table = RoutingTable::build(world.base.clone(), &world.config, &states, None);
    let scope = |service: usize, ip: &str| {
        let decision = table.resolve(
            ServiceId(service as u16),
            &client(&world.geo, ip.parse().unwrap()),
            Family::A,
        );
        (decision.prefix_len, decision.scope)
    };
    // The database splits 3.2.38.0/24 into four /26s in four countries: a /24 client at its
    // first address holds for its /26 only, longer than the source (RFC 7871 §7.2.1).
    assert_eq!(world.geo.lookup("3.2.38.0".parse().unwrap()).prefix_len, 26);
    assert_eq!(scope(0, "3.2.38.0"), (26, Scope::Geo));
    assert_eq!(scope(0, "3.2.38.64").0, 26);
    // Failover does not depend on the client.
    assert_eq!(scope(4, "3.2.38.0"), (0, Scope::Global));
    // Weighted: the network the hash is taken over.
    assert_eq!(scope(3, "3.2.38.0"), (24, Scope::Network));
    assert_eq!(scope(3, "2a00:1:2::1"), (48, Scope::Network));
    // An override network: its prefix; inside it, a more specific override carves out its own.
    assert_eq!(scope(5, "20.1.2.9"), (24, Scope::Prefix(24)));
    assert_eq!(
        scope(5, "20.1.3.9").0,
        24,
        "20.1.2.0/24 is not ours: 20.1.3.0/24"
    );
    assert_eq!(scope(5, "2a00:1::1"), (32, Scope::Prefix(32)));
    // Next to an override network, the scope never covers it.
    let near = scope(5, "20.0.0.1").0;
    assert!(near >= 16, "20.0.0.0/{near} must not reach 20.1.0.0/16");
    // Unplaceable addresses: the configured order, over the whole hole.
    let hole = world.geo.lookup("10.0.0.1".parse().unwrap());
    assert_eq!(hole.cell, None);
    let (unplaced, basis_scope) = scope(0, "10.0.0.1");
    assert!(unplaced <= hole.prefix_len && basis_scope == Scope::Geo);
    // IPv4-mapped addresses are IPv4 clients, with IPv4 scopes.
    assert_eq!(scope(0, "::ffff:3.2.38.0"), scope(0, "3.2.38.0"));
}

/// A datacenter without addresses of one family passes that family's answers on, so its map
/// ranks every datacenter; the scope of the other family still covers every network whose
/// reply is the same, whatever the order of the datacenters after the first. `www` (A only)
/// and `dual` (A and AAAA everywhere) send the same A records: they claim the same scopes. And
/// AAAA of `www` is NODATA for everyone: scope 0.
#[test]
fn a_family_some_pools_lack_does_not_narrow_the_scope_of_the_other() {
    let world = world();
    let service = |id: &str| {
        let i = world.config.services.iter().position(|s| s.id == id);
        ServiceId(i.expect("a service of the fixture") as u16)
    };
    let (www, dual) = (service("www"), service("dual"));
    let states = vec![DcState::default(); world.config.datacenters.len()];
    let table = RoutingTable::build(world.base.clone(), &world.config, &states, None);
    let www_config = &world.config.services[usize::from(www.0)];
    let dual_config = &world.config.services[usize::from(dual.0)];
    for widened in [false, true] {
        if widened {
            assert!(table.widen_scopes() > 0);
        }
        let mut wide = 0;
        for first in [3u32, 20, 21, 81, 100, 200] {
            for i in 0..256u32 {
                let ip = IpAddr::from(Ipv4Addr::from_bits((first << 24) | (i << 16) | 0x0101));
                let client = client(&world.geo, ip);
                let a = table.resolve(www, &client, Family::A);
                let both = table.resolve(dual, &client, Family::A);
                assert_eq!(
                    reply(www_config, &a, Family::A),
                    reply(dual_config, &both, Family::A),
                    "{ip}"
                );
                assert_eq!(a.prefix_len, both.prefix_len, "{ip} widened: {widened}");
                wide += usize::from(a.prefix_len < 16);
                let aaaa = table.resolve(www, &client, Family::Aaaa);
                assert_eq!(
                    reply(www_config, &aaaa, Family::Aaaa),
                    Some((vec![], false))
                );
                assert_eq!(aaaa.prefix_len, 0, "{ip}");
            }
        }
        assert!(wide > 0, "some scopes are wider than /16");
    }
}

#[test]
fn widening_a_map_is_done_once_and_never_narrows_a_scope() {
    let world = world();
    let states = vec![DcState::default(); world.config.datacenters.len()];
    let table = RoutingTable::build(world.base.clone(), &world.config, &states, None);
    let scopes = |table: &RoutingTable| -> Vec<u8> {
        let mut scopes = Vec::new();
        for s in 0..world.config.services.len() {
            for first in [20u32, 21, 81, 100, 200] {
                for i in 0..1024u32 {
                    let ip = IpAddr::from(Ipv4Addr::from_bits((first << 24) | (i << 14)));
                    let decision =
                        table.resolve(ServiceId(s as u16), &client(&world.geo, ip), Family::A);
                    scopes.push(decision.prefix_len);
                }
            }
        }
        scopes
    };
    let before = scopes(&table);
    // A table replaced before its widening starts (the publisher's thread) widens nothing.
    assert_eq!(table.widen_scopes_while(&|| false), 0);
    assert_eq!(scopes(&table), before);
    assert!(table.widen_scopes() > 0);
    assert_eq!(table.widen_scopes(), 0, "once per map");
    let after = scopes(&table);
    assert!(
        before.iter().zip(&after).all(|(b, a)| a <= b),
        "never narrower"
    );
}

#[test]
fn capacity_spill_scopes_never_claim_more_than_the_hashed_network() {
    let world = world();
    let mut states = vec![DcState::default(); world.config.datacenters.len()];
    // Every datacenter of `api` spills part of its networks.
    for state in &mut states {
        state.report = Some(report(true, 70.0));
    }
    let table = RoutingTable::build(world.base.clone(), &world.config, &states, None);
    let mut split = 0;
    for ip in ["81.0.0.1", "20.5.0.1", "100.100.0.1", "2a00:8::1"] {
        let decision = table.resolve(
            ServiceId(2),
            &client(&world.geo, ip.parse().unwrap()),
            Family::A,
        );
        if decision.scope == Scope::GeoAndNetwork {
            split += 1;
            let network = if ip.contains(':') { 48 } else { 24 };
            assert!(
                decision.prefix_len >= network,
                "{ip}: /{}",
                decision.prefix_len
            );
        }
    }
    assert!(split > 0, "some answer depends on the hash");
    // Below the low watermark nothing spills: the place alone decides, however wide.
    let calm = vec![DcState::default(); world.config.datacenters.len()];
    let table = RoutingTable::build(world.base.clone(), &world.config, &calm, None);
    let decision = table.resolve(
        ServiceId(2),
        &client(&world.geo, "3.2.38.0".parse().unwrap()),
        Family::A,
    );
    assert_eq!((decision.prefix_len, decision.scope), (26, Scope::Geo));
}

#[test]
fn maps_are_shared_and_reused() {
    let world = world();
    let states = vec![DcState::default(); world.config.datacenters.len()];
    let first = RoutingTable::build(world.base.clone(), &world.config, &states, None);
    // `www` and `mirror` differ in policy but not in inputs while nothing is full: one map.
    let www = first.map_report(ServiceId(0)).unwrap();
    assert!(www.stats.quads + www.stats.cells > 0);
    assert!(Arc::ptr_eq(
        first.map_of(ServiceId(0)).unwrap(),
        first.map_of(ServiceId(7)).unwrap()
    ));
    assert!(!www.build_time.is_zero());
    assert!(first.map_report(ServiceId(7)).unwrap().build_time.is_zero());
    // A load report that crosses no watermark reuses every map.
    let mut loaded = states.clone();
    loaded[0].report = Some(report(true, 10.0));
    let second = RoutingTable::build(world.base.clone(), &world.config, &loaded, Some(&first));
    for s in 0..world.config.services.len() {
        let id = ServiceId(s as u16);
        // `least-loaded` ranks by load: its map follows it.
        if world.config.services[s].policy == crate::config::Policy::LeastLoaded {
            continue;
        }
        if let Some(map) = second.map_of(id) {
            assert!(
                Arc::ptr_eq(map, first.map_of(id).unwrap()),
                "service {s} rebuilt its map"
            );
        }
    }
    // Draining a datacenter rebuilds the maps of the services that use it, and only those.
    let mut drained = states.clone();
    drained[5].drained = true; // sa-east: `www`, `fenced` and `mirror`
    let third = RoutingTable::build(world.base.clone(), &world.config, &drained, Some(&first));
    for s in 0..world.config.services.len() {
        let id = ServiceId(s as u16);
        let uses = world.config.services[s]
            .pools
            .iter()
            .any(|p| p.datacenter == 5);
        if let Some(map) = third.map_of(id) {
            assert_eq!(
                !Arc::ptr_eq(map, first.map_of(id).unwrap()),
                uses,
                "service {s}"
            );
        }
    }
}

#[test]
fn pools_of_hundreds_of_datacenters_route() {
    // 300 datacenters on a grid over the world, one service using all of them.
    let mut yaml = String::from(
        "geo: { database: unused.mmdb }\nzones: [{ origin: example.com, file: unused.zone }]\ndatacenters:\n",
    );
    let mut pools = String::new();
    for i in 0..300 {
        let (lat, lon) = (
            -60.0 + f64::from(i / 20) * 8.0,
            -170.0 + f64::from(i % 20) * 17.0,
        );
        yaml.push_str(&format!(
            "  dc{i}: {{ latitude: {lat}, longitude: {lon}, country: US, continent: NA }}\n"
        ));
        pools.push_str(&format!("      dc{i}: {{ a: [192.0.2.1] }}\n"));
    }
    yaml.push_str(
        "services:\n  big:\n    name: big.example.com\n    policy: nearest\n    pools:\n",
    );
    yaml.push_str(&pools);
    let config = Config::from_yaml_str(&yaml).expect("a 300-datacenter pool is valid");
    let geo = world().geo.clone();
    let base = Arc::new(BaseTable::build(&config, geo.clone()));
    let states = vec![DcState::default(); config.datacenters.len()];
    let table = RoutingTable::build(base, &config, &states, None);
    let london: IpAddr = "3.2.38.64".parse().unwrap();
    let decision = table.resolve(ServiceId(0), &client(&geo, london), Family::A);
    let here = geo.location(geo.lookup(london).cell.unwrap()).coordinates;
    let nearest = (0..300)
        .min_by(|&a, &b| {
            let d = |i: usize| here.distance_km(&config.datacenters[i].coordinates);
            d(a).total_cmp(&d(b))
        })
        .unwrap();
    assert_eq!(decision.datacenters[0], DcId(nearest as u16));
}

/// Slow start, cascade spill and the latency limit: while an answer depends on the client's
/// hash bucket, the scope is at least the hashed network, in every policy.
#[test]
fn balancing_scopes_never_claim_more_than_the_hashed_network() {
    let world = world();
    let mut states = vec![DcState::default(); world.config.datacenters.len()];
    for state in &mut states {
        // Half way through a slow start, below the low watermark.
        state.report = Some(report(true, 20.0));
        state.back_for = Some(Duration::from_secs(50));
    }
    let table = RoutingTable::build(world.base.clone(), &world.config, &states, None);
    for (s, service) in world.config.services.iter().enumerate() {
        for ip in [
            "81.0.0.1",
            "20.5.0.1",
            "20.1.9.9",
            "100.100.0.1",
            "2a00:8::1",
            "10.0.0.1",
        ] {
            let decision = table.resolve(
                ServiceId(s as u16),
                &client(&world.geo, ip.parse().unwrap()),
                Family::A,
            );
            let network = if ip.contains(':') { 48 } else { 24 };
            if !service.slow_start.is_zero() && decision.datacenters.len() > 1 {
                assert!(
                    decision.prefix_len >= network,
                    "{} {ip}: /{} {:?}",
                    service.id,
                    decision.prefix_len,
                    decision.scope
                );
            }
        }
    }
    // Cascade with nothing spilling holds for everyone but the override network 20.1.0.0/16:
    // 81.0.0.0/2 is the widest network around 81.0.0.1 that does not reach it.
    let calm = vec![DcState::default(); world.config.datacenters.len()];
    let table = RoutingTable::build(world.base.clone(), &world.config, &calm, None);
    let cascade = world
        .config
        .services
        .iter()
        .position(|s| s.id == "cascade")
        .unwrap();
    let decision = table.resolve(
        ServiceId(cascade as u16),
        &client(&world.geo, "81.0.0.1".parse().unwrap()),
        Family::A,
    );
    assert_eq!((decision.prefix_len, decision.scope), (2, Scope::Global));
}
