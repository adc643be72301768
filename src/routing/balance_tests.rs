//! Table-driven tests of the balancing methods: slow start under every policy, cascade,
//! least-loaded, the latency limit and bias, with their edges.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

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
services:
  nearest:
    name: nearest.example.com
    policy: nearest
    slow_start_seconds: 120
    pools: { us-east: { a: [192.0.2.1] }, us-west: { a: [192.0.2.2] }, eu-west: { a: [192.0.2.3] } }
  capacity:
    name: capacity.example.com
    policy: nearest-with-capacity
    slow_start_seconds: 120
    pools: { us-east: { a: [192.0.2.1] }, us-west: { a: [192.0.2.2] }, eu-west: { a: [192.0.2.3] } }
  metric:
    name: metric.example.com
    policy: metric
    slow_start_seconds: 120
    pools: { us-east: { a: [192.0.2.1] }, us-west: { a: [192.0.2.2] }, eu-west: { a: [192.0.2.3] } }
  failover:
    name: failover.example.com
    policy: failover
    order: [eu-west, us-east]
    slow_start_seconds: 120
    pools: { us-east: { a: [192.0.2.1] }, eu-west: { a: [192.0.2.3] } }
  weighted:
    name: weighted.example.com
    policy: weighted
    slow_start_seconds: 120
    pools: { us-east: { a: [192.0.2.1], weight: 1 }, eu-west: { a: [192.0.2.3], weight: 1000 } }
  cascade:
    name: cascade.example.com
    policy: cascade
    order: [eu-west, us-east, us-west]
    slow_start_seconds: 120
    capacity: { low_watermark: 0.5, high_watermark: 0.9, hysteresis: 0.1 }
    pools: { us-east: { a: [192.0.2.1] }, us-west: { a: [192.0.2.2] }, eu-west: { a: [192.0.2.3] } }
  least:
    name: least.example.com
    policy: least-loaded
    order: [eu-west, us-east, us-west]
    slow_start_seconds: 120
    capacity: { low_watermark: 0.5, high_watermark: 0.9, hysteresis: 0.1 }
    pools: { us-east: { a: [192.0.2.1] }, us-west: { a: [192.0.2.2] }, eu-west: { a: [192.0.2.3] } }
  near-least:
    name: near-least.example.com
    policy: least-loaded
    max_extra_km: 2000
    pools: { us-east: { a: [192.0.2.1] }, us-west: { a: [192.0.2.2] }, eu-west: { a: [192.0.2.3] } }
  limited:
    name: limited.example.com
    policy: nearest
    max_service_latency_ms: 200
    capacity: { hysteresis: 0.1 }
    pools: { us-east: { a: [192.0.2.1] }, us-west: { a: [192.0.2.2] }, eu-west: { a: [192.0.2.3] } }
  biased:
    name: biased.example.com
    policy: nearest
    pools: { us-east: { a: [192.0.2.1] }, us-west: { a: [192.0.2.2] }, eu-west: { a: [192.0.2.3] } }
"#;

const US_EAST: usize = 0;
const US_WEST: usize = 1;
const EU_WEST: usize = 2;
/// London: Dublin 460 km, Ashburn 5,900 km, San Jose 8,600 km.
const LONDON: &str = "81.2.69.160";

struct World {
    config: Config,
    geo: Arc<GeoDb>,
    base: Arc<BaseTable>,
    table: RoutingTable,
}

fn world_of(yaml: &str) -> World {
    let config = Config::from_yaml_str(yaml).expect("fixture config");
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

fn world() -> World {
    world_of(FIXTURE)
}

fn report(load: f64) -> ReportState {
    ReportState {
        healthy: true,
        capacity: 100.0,
        load,
        latency_ms: Default::default(),
        cost: None,
        service_latency_ms: None,
        age: Duration::from_secs(1),
        ttl: Duration::from_secs(10),
    }
}

impl World {
    fn service(&self, id: &str) -> ServiceId {
        ServiceId(
            self.config
                .services
                .iter()
                .position(|s| s.id == id)
                .unwrap() as u16,
        )
    }

    /// Rebuilds the table from `states`, keeping the previous one's hysteresis.
    fn set(&mut self, states: &[DcState]) {
        self.table =
            RoutingTable::build(self.base.clone(), &self.config, states, Some(&self.table));
    }

    /// The first datacenter for each of `n` client networks at `ip`'s place, and the decision
    /// of the first, as names.
    fn firsts(&self, service: &str, ip: &str, n: u32) -> Vec<&str> {
        let ip: IpAddr = ip.parse().unwrap();
        let hit = self.geo.lookup(ip);
        let service = self.service(service);
        (0..n)
            .map(|i| {
                let client = Client {
                    network_key: network_key(
                        IpAddr::from((0x0a00_0000 + (i << 8)).to_be_bytes()),
                        24,
                    ),
                    ..Client::new(ip, hit, 24)
                };
                let decision = self.table.resolve(service, &client, Family::A);
                self.config.datacenters[usize::from(decision.datacenters[0].0)]
                    .name
                    .as_str()
            })
            .collect()
    }

    fn ranking(&self, service: &str, ip: &str) -> (Vec<&str>, Decision<'_>) {
        let ip: IpAddr = ip.parse().unwrap();
        let client = Client::new(ip, self.geo.lookup(ip), 24);
        let decision = self
            .table
            .resolve(self.service(service), &client, Family::A);
        let names = decision
            .datacenters
            .iter()
            .map(|dc| self.config.datacenters[usize::from(dc.0)].name.as_str())
            .collect();
        (names, decision)
    }
}

fn share(firsts: &[&str], dc: &str) -> f64 {
    firsts.iter().filter(|d| **d == dc).count() as f64 / firsts.len() as f64
}

#[test]
fn slow_start_ramps_every_policy_and_moves_each_network_once() {
    // eu-west serves London first in every service once ramped.
    let policies = [
        "nearest", "capacity", "metric", "failover", "weighted", "cascade", "least",
    ];
    #[rustfmt::skip]
    let ramp: &[(Option<u64>, f64)] = &[
        // Seconds since eu-west came back (None: it has served all along), and the share of
        // London's client networks it takes: k / 20 after k / 20 of 120 s.
        (Some(0), 0.0),
        (Some(5), 0.0),
        (Some(6), 0.05),
        (Some(30), 0.25),
        (Some(60), 0.50),
        (Some(119), 0.95),
        (Some(120), 1.0),
        (None, 1.0),
    ];
    for policy in policies {
        let mut world = world();
        let mut before: Option<Vec<String>> = None;
        for &(back_for, expected) in ramp {
            let mut states = vec![DcState::default(); 3];
            states[EU_WEST].back_for = back_for.map(Duration::from_secs);
            world.set(&states);
            let firsts: Vec<String> = world
                .firsts(policy, LONDON, 4000)
                .into_iter()
                .map(str::to_owned)
                .collect();
            let names: Vec<&str> = firsts.iter().map(String::as_str).collect();
            let got = share(&names, "eu-west");
            assert!(
                (got - expected).abs() < 0.03,
                "{policy} after {back_for:?} s: {got:.3}, want {expected}"
            );
            // A network that moved to eu-west stays there.
            if let Some(before) = &before {
                for (i, (was, is)) in before.iter().zip(&firsts).enumerate() {
                    assert!(
                        *was != "eu-west" || *is == "eu-west",
                        "{policy}: network {i} moved back at {back_for:?}"
                    );
                }
            }
            before = Some(firsts);
        }
    }
}

#[test]
fn slow_start_explains_itself_and_takes_everyone_when_alone() {
    let mut world = world();
    let mut states = vec![DcState::default(); 3];
    states[EU_WEST].back_for = Some(Duration::from_secs(48));
    world.set(&states);
    let failover = world.service("failover");
    let ramp = world.table.ramp(failover, DcId(EU_WEST as u16)).unwrap();
    assert_eq!(ramp.describe(), "slow start: 40 % of 120 s");
    assert_eq!(
        world.table.spill(failover, DcId(EU_WEST as u16)),
        1024 - 409
    );
    // With us-east down there is nobody to keep the other networks: eu-west takes them all.
    states[US_EAST].report = Some(ReportState {
        healthy: false,
        ..report(0.0)
    });
    world.set(&states);
    assert_eq!(
        share(&world.firsts("failover", LONDON, 1000), "eu-west"),
        1.0
    );
    // A ramp only counts for an eligible datacenter, and a restart in the middle resumes it:
    // the same time since its return gives the same share.
    states[EU_WEST].drained = true;
    world.set(&states);
    assert_eq!(world.table.ramp(failover, DcId(EU_WEST as u16)), None);
    assert_eq!(
        ramp_at(Duration::from_secs(48), Duration::from_secs(120)),
        Some(ramp)
    );
    assert_eq!(
        next_step_in(Duration::from_secs(48), Duration::from_secs(120)),
        Some(Duration::from_secs(6))
    );
    assert_eq!(
        next_step_in(Duration::from_secs(120), Duration::from_secs(120)),
        None
    );
    // A per-service undrain ramps that service only.
    let mut states = vec![DcState::default(); 3];
    states[EU_WEST].back_for_services = vec![(failover, Duration::from_secs(0))];
    world.set(&states);
    assert_eq!(
        share(&world.firsts("failover", LONDON, 1000), "eu-west"),
        0.0
    );
    assert_eq!(
        share(&world.firsts("cascade", LONDON, 1000), "eu-west"),
        1.0
    );
}

#[test]
fn cascade_fills_in_order_with_hysteresis_at_both_watermarks() {
    let mut world = world();
    #[rustfmt::skip]
    let steps: &[(f64, f64, f64, &str)] = &[
        // eu-west's load, us-east's, the share of networks eu-west keeps, why.
        (20.0, 0.0, 1.0, "below the low watermark: all stay"),
        (50.0, 0.0, 1.0, "at the low watermark: none spill"),
        (70.0, 0.0, 0.5, "half way: half spill"),
        (90.0, 0.0, 0.0, "at the high watermark: all spill, not full"),
        (91.0, 0.0, 0.0, "over the high watermark: full"),
        (85.0, 0.0, 0.0, "still full: not below high - hysteresis (80)"),
        (79.0, 0.0, 0.275, "below 80: takes clients again, spilling (0.79 - 0.5) / 0.4"),
        (40.0, 0.0, 1.0, "back below the low watermark"),
    ];
    for &(eu, us, kept, why) in steps {
        let mut states = vec![DcState::default(); 3];
        states[EU_WEST].report = Some(report(eu));
        states[US_EAST].report = Some(report(us));
        world.set(&states);
        let firsts = world.firsts("cascade", LONDON, 4000);
        let got = share(&firsts, "eu-west");
        assert!((got - kept).abs() < 0.03, "{why}: eu-west keeps {got:.3}");
        assert!(
            firsts.iter().all(|d| *d != "us-west"),
            "{why}: us-east takes the spill"
        );
        let (_, decision) = world.ranking("cascade", LONDON);
        // At the high watermark every bucket spills but the datacenter is not full: the answer
        // is still split by bucket (all on one side), and the scope says so.
        let split = (kept > 0.0 && kept < 1.0) || eu == 90.0;
        assert_eq!(
            decision.scope == Scope::Network,
            split,
            "{why}: {:?}",
            decision.scope
        );
    }
    // The next one fills the same way: us-east full, eu-west full: us-west.
    let mut states = vec![DcState::default(); 3];
    states[EU_WEST].report = Some(report(95.0));
    states[US_EAST].report = Some(report(95.0));
    world.set(&states);
    assert_eq!(
        world.ranking("cascade", LONDON).0,
        ["us-west", "eu-west", "us-east"]
    );
    // All full: the order, full ones last but still there.
    states[US_WEST].report = Some(report(99.0));
    world.set(&states);
    assert_eq!(
        world.ranking("cascade", LONDON).0,
        ["eu-west", "us-east", "us-west"]
    );
    // All down: fail open in the order.
    let down = vec![
        DcState {
            report: Some(ReportState {
                healthy: false,
                ..report(0.0)
            }),
            ..DcState::default()
        };
        3
    ];
    world.set(&down);
    let (ranking, decision) = world.ranking("cascade", LONDON);
    assert_eq!(ranking, ["eu-west", "us-east", "us-west"]);
    assert!(decision.failed_open);
}

/// Loads of us-east, us-west, eu-west; the ranking for London; with `max_extra_km`; why.
type LoadCase = (
    [f64; 3],
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
);

#[test]
fn least_loaded_ranks_by_utilization_within_reach() {
    let mut world = world();
    #[rustfmt::skip]
    let cases: &[LoadCase] = &[
        // Loads of us-east, us-west, eu-west; the ranking for London; with max_extra_km 2000; why.
        ([0.0, 0.0, 0.0], &["eu-west", "us-east", "us-west"], &["eu-west", "us-east", "us-west"], "all empty: the order"),
        ([30.0, 10.0, 50.0], &["us-west", "us-east", "eu-west"], &["eu-west", "us-west", "us-east"], "least loaded first; only eu-west is within 2000 km"),
        ([30.0, 30.4, 50.0], &["us-east", "us-west", "eu-west"], &["eu-west", "us-east", "us-west"], "rounded to whole per cent: a tie, by order"),
        ([95.0, 10.0, 50.0], &["us-west", "eu-west", "us-east"], &["eu-west", "us-west", "us-east"], "over the high watermark: last"),
        ([85.0, 10.0, 50.0], &["us-west", "eu-west", "us-east"], &["eu-west", "us-west", "us-east"], "hysteresis: still full above 80 %"),
        ([70.0, 10.0, 50.0], &["us-west", "eu-west", "us-east"], &["eu-west", "us-west", "us-east"], "back below 80 %: by load again"),
        ([95.0, 95.0, 95.0], &["eu-west", "us-east", "us-west"], &["eu-west", "us-east", "us-west"], "all full: by order"),
    ];
    for &(loads, expected, near, why) in cases {
        let mut states = vec![DcState::default(); 3];
        for (state, load) in states.iter_mut().zip(loads) {
            state.report = Some(report(load));
        }
        world.set(&states);
        let (got, decision) = world.ranking("least", LONDON);
        assert_eq!(got, expected, "{why}");
        assert_eq!(decision.basis, Basis::Load, "{why}");
        // near-least has no watermarks of its own but the defaults (0.95): only the first rows
        // matter for it; its ranking puts the far ones after, each group by load.
        if loads.iter().all(|l| *l < 95.0) {
            assert_eq!(
                world.ranking("near-least", LONDON).0,
                near,
                "{why} (max_extra_km)"
            );
        }
    }
    // Mountain View: San Jose 15 km, Ashburn 3,900 km: only us-west is within reach.
    let mut states = vec![DcState::default(); 3];
    states[US_WEST].report = Some(report(60.0));
    world.set(&states);
    assert_eq!(
        world.ranking("near-least", "8.8.8.8").0,
        ["us-west", "us-east", "eu-west"]
    );
    assert_eq!(
        world.ranking("least", "8.8.8.8").0,
        ["eu-west", "us-east", "us-west"]
    );
    // All down: fail open.
    let down = vec![
        DcState {
            drained: true,
            ..DcState::default()
        };
        3
    ];
    world.set(&down);
    assert!(world.ranking("least", LONDON).1.failed_open);
}

#[test]
fn least_loaded_with_slow_start_does_not_flood_a_fresh_datacenter() {
    let mut world = world();
    let mut states = vec![DcState::default(); 3];
    states[US_EAST].report = Some(report(60.0));
    states[US_WEST].report = Some(report(70.0));
    // eu-west just came back, empty: the least loaded, but it takes a fifth after 24 s.
    states[EU_WEST].report = Some(report(0.0));
    states[EU_WEST].back_for = Some(Duration::from_secs(24));
    world.set(&states);
    let firsts = world.firsts("least", LONDON, 4000);
    assert!((share(&firsts, "eu-west") - 0.2).abs() < 0.03);
    assert!(
        (share(&firsts, "us-east") - 0.8).abs() < 0.03,
        "the rest stay with the next least loaded"
    );
}

#[test]
fn latency_limit_skips_with_hysteresis() {
    let mut world = world();
    #[rustfmt::skip]
    let steps: &[(Option<f64>, &str, &str)] = &[
        (None, "eu-west", "no latency reported"),
        (Some(150.0), "eu-west", "under the limit"),
        (Some(200.0), "eu-west", "at the limit"),
        (Some(210.0), "us-east", "over the limit: skipped as if full"),
        (Some(190.0), "us-east", "still over until below 200 × (1 - 0.1)"),
        (Some(179.0), "eu-west", "below 180: back"),
    ];
    for &(latency, first, why) in steps {
        let mut states = vec![DcState::default(); 3];
        states[EU_WEST].report = Some(ReportState {
            service_latency_ms: latency,
            ..report(10.0)
        });
        world.set(&states);
        let (got, _) = world.ranking("limited", LONDON);
        assert_eq!(got[0], first, "{why}");
        assert_eq!(
            got.len(),
            3,
            "{why}: a slow datacenter stays in the ranking, last"
        );
        // Services without a limit ignore it.
        assert_eq!(world.ranking("biased", LONDON).0[0], "eu-west", "{why}");
    }
    // Every datacenter over the limit: the ranking is kept.
    let states = vec![
        DcState {
            report: Some(ReportState {
                service_latency_ms: Some(900.0),
                ..report(10.0)
            }),
            ..DcState::default()
        };
        3
    ];
    world.set(&states);
    assert_eq!(
        world.ranking("limited", LONDON).0,
        ["eu-west", "us-east", "us-west"]
    );
}

#[test]
fn bias_pulls_and_pushes_catchments() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str)] = &[
        // us-east's bias, eu-west's, the first for London (Dublin 460 km, Ashburn 5,900 km) and
        // for Mountain View (San Jose 15 km, Ashburn 3,900 km).
        ("0 km", "0 km", "eu-west", "us-west"),
        ("5500 km", "0 km", "us-east", "us-east"),
        ("5000 km", "0 km", "eu-west", "us-east"),
        ("0 km", "-5500 km", "us-east", "us-west"),
        ("99 %", "0 %", "us-east", "us-west"),
        ("0 %", "-99 %", "eu-west", "us-west"),
    ];
    for &(east, west_eu, london, mountain_view) in cases {
        let yaml = FIXTURE.replace(
            "  biased:\n    name: biased.example.com\n    policy: nearest\n    pools: { us-east: { a: [192.0.2.1] }, us-west: { a: [192.0.2.2] }, eu-west: { a: [192.0.2.3] } }",
            &format!("  biased:\n    name: biased.example.com\n    policy: nearest\n    pools: {{ us-east: {{ a: [192.0.2.1], bias: \"{east}\" }}, us-west: {{ a: [192.0.2.2] }}, eu-west: {{ a: [192.0.2.3], bias: \"{west_eu}\" }} }}"),
        );
        assert_ne!(yaml, FIXTURE);
        let world = world_of(&yaml);
        assert_eq!(
            world.ranking("biased", LONDON).0[0],
            london,
            "{east} / {west_eu}: London"
        );
        assert_eq!(
            world.ranking("biased", "8.8.8.8").0[0],
            mountain_view,
            "{east} / {west_eu}: Mountain View"
        );
    }
}
