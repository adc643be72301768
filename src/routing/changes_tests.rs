//! A live table rebuilt incrementally (judging only the services a change can touch) is the
//! table a full rebuild makes: a property test over random sequences of datacenter changes and
//! the passing of time, and a test that untouched services are carried over whole.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::geo::fixture_db;

/// Every policy and every time-dependent rule, over pools that hold some datacenters only.
const CONFIG: &str = r#"
geo: { database: unused.mmdb }
zones: [{ origin: example.com, file: unused.zone }]
datacenters:
  us-east:  { latitude: 39.0438,  longitude: -77.4874,  country: US, continent: NA }
  us-west:  { latitude: 37.3382,  longitude: -121.8863, country: US, continent: NA }
  eu-west:  { latitude: 53.3498,  longitude: -6.2603,   country: IE, continent: EU, require_report: true }
  eu-central: { latitude: 50.1109, longitude: 8.6821,   country: DE, continent: EU }
  ap-south: { latitude: 1.3521,   longitude: 103.8198,  country: SG, continent: AS }
  sa-east:  { latitude: -23.5505, longitude: -46.6333,  country: BR, continent: SA }
services:
  www:
    name: www.example.com
    policy: nearest
    staleness_grace_seconds: 15
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      ap-south: { a: [192.0.2.4] }
  api:
    name: api.example.com
    policy: nearest-with-capacity
    capacity: { low_watermark: 0.5, high_watermark: 0.9, hysteresis: 0.1 }
    slow_start_seconds: 40
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      eu-central: { a: [192.0.2.6] }
      us-west:  { a: [192.0.2.2] }
  scored:
    name: scored.example.com
    policy: metric
    metric: { latency_weight: 1, cost_weight: 10 }
    staleness_grace_seconds: 40
    pools:
      us-west:  { a: [192.0.2.2] }
      eu-central: { a: [192.0.2.6] }
      ap-south: { a: [192.0.2.4] }
  least:
    name: least.example.com
    policy: least-loaded
    max_extra_km: 1500
    slow_start_seconds: 60
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      sa-east:  { a: [192.0.2.5] }
  fenced:
    name: fenced.example.com
    policy: nearest
    all_down: servfail
    max_service_latency_ms: 100
    geofence: [{ continents: [EU], datacenters: [eu-west, eu-central] }]
    overrides:
      - { countries: [AU], datacenters: [eu-west] }
      - { cidrs: [20.1.0.0/16], datacenters: [sa-east] }
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      eu-central: { a: [192.0.2.6] }
      sa-east:  { a: [192.0.2.5] }
  split:
    name: split.example.com
    policy: weighted
    slow_start_seconds: 30
    pools:
      us-east:  { a: [192.0.2.1], weight: 3 }
      sa-east:  { a: [192.0.2.5], weight: 1 }
  backup:
    name: backup.example.com
    policy: failover
    order: [eu-central, us-west]
    pools:
      us-west:  { a: [192.0.2.2] }
      eu-central: { a: [192.0.2.6] }
  cascade:
    name: cascade.example.com
    policy: cascade
    order: [eu-west, us-east, ap-south]
    capacity: { low_watermark: 0.5, high_watermark: 0.9, hysteresis: 0.1 }
    max_service_latency_ms: 150
    pools:
      us-east:  { a: [192.0.2.1] }
      eu-west:  { a: [192.0.2.3] }
      ap-south: { a: [192.0.2.4] }
"#;

struct World {
    config: Config,
    base: Arc<BaseTable>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let config = Config::from_yaml_str(CONFIG).expect("config");
        let geo = Arc::new(fixture_db());
        let base = Arc::new(BaseTable::build(&config, geo));
        World { config, base }
    })
}

/// One step of a random history: `(kind, datacenter, a, b)`, read by [`apply`].
type Step = (u8, u8, u8, u8);

/// Applies `step` to `states` (and `toggles`): a report (healthy or not, with random load,
/// measured latencies, cost and service latency), a load change alone, time passing, a drain
/// of the datacenter or of one service lifted or laid, a report forgotten, a restart's
/// unverified mark, a feature switched.
fn apply(step: Step, states: &mut [DcState], toggles: &mut Toggles, n_services: usize) {
    let (kind, dc, a, b) = step;
    let state = &mut states[usize::from(dc) % states.len()];
    let seconds = |n: u8| Duration::from_secs(u64::from(n));
    match kind % 9 {
        0 | 1 => {
            let mut latency_ms = std::collections::BTreeMap::new();
            if b % 3 == 0 {
                latency_ms.insert("GB".to_owned(), f64::from(a));
                latency_ms.insert("NA".to_owned(), f64::from(b) * 2.0);
            }
            state.report = Some(ReportState {
                healthy: kind % 9 == 0 || b % 4 == 0,
                capacity: 100.0,
                load: f64::from(a % 110),
                latency_ms,
                cost: (b % 2 == 0).then(|| f64::from(b % 5)),
                service_latency_ms: (b % 5 < 2).then(|| f64::from(a)),
                age: Duration::ZERO,
                ttl: seconds(10),
            });
            if b % 7 == 0 {
                state.back_for = Some(Duration::ZERO);
            }
        }
        2 => {
            // Only the load moves, often across a watermark and back.
            if let Some(report) = &mut state.report {
                report.load = f64::from(a % 110);
            }
        }
        3 | 4 => {
            // Time passes for every datacenter alike.
            let by = Duration::from_millis(u64::from(a) * 100 + u64::from(b));
            for state in states.iter_mut() {
                if let Some(report) = &mut state.report {
                    report.age += by;
                }
                state.back_for = state.back_for.map(|t| t + by);
                for (_, t) in &mut state.back_for_services {
                    *t += by;
                }
            }
        }
        5 => {
            state.drained = !state.drained;
            if !state.drained {
                state.back_for = Some(Duration::ZERO);
            }
        }
        6 => {
            let service = ServiceId(u16::from(a) % n_services as u16);
            if let Some(i) = state.drained_services.iter().position(|s| *s == service) {
                state.drained_services.remove(i);
                state.back_for_services.retain(|(s, _)| *s != service);
                state.back_for_services.push((service, seconds(b % 3)));
            } else {
                state.drained_services.push(service);
            }
        }
        7 => {
            if b % 2 == 0 {
                state.report = None;
            } else {
                state.unverified = !state.unverified;
            }
        }
        _ => {
            let toggle = Toggle::ALL[usize::from(a) % Toggle::ALL.len()];
            *toggles = toggles.with(toggle, !toggles.is_on(toggle));
        }
    }
}

/// Every service of `table` as decided, to compare two tables.
fn decided(table: &RoutingTable, n_services: usize) -> Vec<String> {
    (0..n_services)
        .map(|s| table.decided(ServiceId(s as u16)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After every step of a random history, the table built from the one before by judging
    /// only the services the change can touch equals the table judging every service makes.
    #[test]
    fn incremental_rebuilds_equal_full_rebuilds(
        start in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()), 0..8),
        history in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()), 1..40),
    ) {
        let world = world();
        let n_services = world.config.services.len();
        let mut states = vec![DcState::default(); world.config.datacenters.len()];
        let mut toggles = Toggles::default();
        for step in start {
            apply(step, &mut states, &mut toggles, n_services);
        }
        let mut table = RoutingTable::build_toggled(world.base.clone(), &world.config, &states, toggles, None);
        for (n, step) in history.into_iter().enumerate() {
            apply(step, &mut states, &mut toggles, n_services);
            let build = |incremental| {
                RoutingTable::build_from(world.base.clone(), &world.config, &states, toggles, Some(&table), incremental)
            };
            let (incremental, full) = (build(true), build(false));
            prop_assert_eq!(decided(&incremental, n_services), decided(&full, n_services), "after step {} {:?}", n, step);
            for s in 0..n_services {
                // Shared with the previous table exactly where the full build shares it.
                let id = ServiceId(s as u16);
                prop_assert_eq!(incremental.same_rankings(&table, id), full.same_rankings(&table, id), "service {} after step {}", s, n);
            }
            table = incremental;
        }
    }
}

/// A report of a datacenter leaves every service whose pool lacks it as it was (the same
/// `Arc`), and a load report leaves the services that do not read load as they were too.
#[test]
fn untouched_services_are_carried_over_whole() {
    let world = world();
    let config = &world.config;
    let id =
        |name: &str| ServiceId(config.services.iter().position(|s| s.id == name).unwrap() as u16);
    let healthy = |load: f64| ReportState {
        healthy: true,
        capacity: 100.0,
        load,
        latency_ms: Default::default(),
        cost: None,
        service_latency_ms: None,
        age: Duration::ZERO,
        ttl: Duration::from_secs(10),
    };
    let mut states = vec![
        DcState {
            report: Some(healthy(10.0)),
            ..DcState::default()
        };
        config.datacenters.len()
    ];
    let first = RoutingTable::build(world.base.clone(), config, &states, None);
    // sa-east is in the pools of `least`, `fenced` and `split` only; it goes down.
    let sa_east = config.datacenter_index("sa-east").unwrap();
    states[sa_east].report = Some(ReportState {
        healthy: false,
        ..healthy(10.0)
    });
    let second = RoutingTable::build(world.base.clone(), config, &states, Some(&first));
    for service in &config.services {
        let touched = ["least", "fenced", "split"].contains(&service.id.as_str());
        assert_eq!(
            second.same_rankings(&first, id(&service.id)),
            !touched,
            "{}",
            service.id
        );
    }
    // A load report from us-east that crosses the high watermark: only the services that read
    // load and hold us-east change (`api`, `least`, `cascade`).
    let us_east = config.datacenter_index("us-east").unwrap();
    states[us_east].report = Some(healthy(95.0));
    let third = RoutingTable::build(world.base.clone(), config, &states, Some(&second));
    for service in &config.services {
        let touched = ["api", "least", "cascade"].contains(&service.id.as_str());
        assert_eq!(
            third.same_rankings(&second, id(&service.id)),
            !touched,
            "{}",
            service.id
        );
        assert_eq!(third.decided(id(&service.id)), {
            let full = RoutingTable::build_from(
                world.base.clone(),
                config,
                &states,
                Toggles::default(),
                Some(&second),
                false,
            );
            full.decided(id(&service.id))
        });
    }
    // Time passing past the TTL and `www`'s 15 s of grace makes every report stale past grace
    // for `www` (down) and stale within grace for `scored` (40 s): both change, by the clock
    // alone.
    for state in &mut states {
        if let Some(report) = &mut state.report {
            report.age = Duration::from_secs(30);
        }
    }
    let fourth = RoutingTable::build(world.base.clone(), config, &states, Some(&third));
    assert!(!fourth.same_rankings(&third, id("www")), "www goes down");
    assert!(
        fourth.same_rankings(&third, id("scored")),
        "scored keeps its stale datacenters within grace"
    );
}
