//! Service policy settings, validated: staleness, capacity watermarks, metric weights,
//! geofences and overrides.

use std::time::Duration;

use ipnet::IpNet;

use super::Problem;
use super::raw::{self, MAX_ROTATED_ADDRESSES, RawCapacity, RawClientRule, RawMetric};
use crate::geo::{Continent, CountryCode};

/// What a service answers when every datacenter is ineligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllDown {
    /// Answer as if every datacenter were healthy (counted and logged).
    FailOpen,
    /// Answer SERVFAIL, so resolvers try again later.
    ServFail,
}

/// Utilization watermarks of `nearest-with-capacity`, as fractions of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermarks {
    /// Below it, no client goes elsewhere.
    pub low: f64,
    /// Above it, no new client comes here.
    pub high: f64,
    /// A full datacenter takes clients again only below `high - hysteresis`.
    pub hysteresis: f64,
}

/// Weights of the `metric` score: `latency_weight × latency_ms + cost_weight × cost`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricWeights {
    /// Per millisecond of latency.
    pub latency: f64,
    /// Per unit of cost.
    pub cost: f64,
}

/// Clients a rule applies to, and the datacenters (indexes into the service's pools) it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRule {
    /// Client countries.
    pub countries: Vec<CountryCode>,
    /// Client continents.
    pub continents: Vec<Continent>,
    /// Client networks.
    pub cidrs: Vec<IpNet>,
    /// Pool indexes, in the rule's order.
    pub pools: Vec<usize>,
}

impl ClientRule {
    /// Whether a client of this country and continent matches by place.
    pub fn matches_place(
        &self,
        country: Option<CountryCode>,
        continent: Option<Continent>,
    ) -> bool {
        country.is_some_and(|c| self.countries.contains(&c))
            || continent.is_some_and(|c| self.continents.contains(&c))
    }
}

pub(super) fn validate_all_down(
    path: &str,
    raw: Option<&str>,
    problems: &mut Vec<Problem>,
) -> AllDown {
    match raw {
        None | Some("fail-open") => AllDown::FailOpen,
        Some("servfail") => AllDown::ServFail,
        Some(other) => {
            problems.push(Problem::new(
                format!("{path}.all_down"),
                format!("{other:?} is not fail-open or servfail"),
            ));
            AllDown::FailOpen
        }
    }
}

pub(super) fn validate_grace(raw: Option<u32>) -> Duration {
    Duration::from_secs(u64::from(
        raw.unwrap_or(raw::DEFAULT_STALENESS_GRACE_SECONDS),
    ))
}

pub(super) fn validate_capacity(
    path: &str,
    raw: Option<&RawCapacity>,
    problems: &mut Vec<Problem>,
) -> Watermarks {
    let low = raw
        .and_then(|r| r.low_watermark)
        .unwrap_or(raw::DEFAULT_LOW_WATERMARK);
    let high = raw
        .and_then(|r| r.high_watermark)
        .unwrap_or(raw::DEFAULT_HIGH_WATERMARK);
    let hysteresis = raw
        .and_then(|r| r.hysteresis)
        .unwrap_or(raw::DEFAULT_HYSTERESIS);
    // NaN fails every comparison, so this also rejects non-numbers.
    let valid =
        0.0 < low && low < high && high.is_finite() && (0.0..high - low).contains(&hysteresis);
    if !valid {
        problems.push(Problem::new(
            format!("{path}.capacity"),
            format!(
                "need 0 < low_watermark ({low}) < high_watermark ({high}) and 0 <= hysteresis ({hysteresis}) < high - low"
            ),
        ));
    }
    Watermarks {
        low,
        high,
        hysteresis,
    }
}

pub(super) fn validate_metric(
    path: &str,
    raw: Option<&RawMetric>,
    problems: &mut Vec<Problem>,
) -> MetricWeights {
    let latency = raw
        .and_then(|r| r.latency_weight)
        .unwrap_or(raw::DEFAULT_LATENCY_WEIGHT);
    let cost = raw
        .and_then(|r| r.cost_weight)
        .unwrap_or(raw::DEFAULT_COST_WEIGHT);
    if !(latency.is_finite() && cost.is_finite() && latency >= 0.0 && cost >= 0.0) {
        problems.push(Problem::new(
            format!("{path}.metric"),
            "weights must be finite and not negative",
        ));
    }
    MetricWeights { latency, cost }
}

/// Validates geofence (`cidrs_allowed` false) or override rules against the service's pool names.
pub(super) fn validate_rules(
    path: &str,
    raw: &[RawClientRule],
    pool_names: &[String],
    cidrs_allowed: bool,
    problems: &mut Vec<Problem>,
) -> Vec<ClientRule> {
    let mut rules = Vec::new();
    for (i, rule) in raw.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let mut countries = Vec::new();
        for (j, text) in rule.countries.iter().enumerate() {
            match text.parse::<CountryCode>() {
                Ok(code) => countries.push(code),
                Err(message) => problems.push(Problem::new(
                    format!("{path}.countries[{j}]"),
                    format!("{text:?}: {message}"),
                )),
            }
        }
        let mut continents = Vec::new();
        for (j, text) in rule.continents.iter().enumerate() {
            match text.parse::<Continent>() {
                Ok(code) => continents.push(code),
                Err(message) => problems.push(Problem::new(
                    format!("{path}.continents[{j}]"),
                    format!("{text:?}: {message}"),
                )),
            }
        }
        let mut cidrs = Vec::new();
        if !cidrs_allowed && !rule.cidrs.is_empty() {
            problems.push(Problem::new(
                format!("{path}.cidrs"),
                "geofences apply to places; use overrides for networks",
            ));
        }
        for (j, text) in rule.cidrs.iter().enumerate() {
            match text.parse::<IpNet>() {
                Ok(net) if net.trunc() == net => cidrs.push(net),
                Ok(net) => problems.push(Problem::new(
                    format!("{path}.cidrs[{j}]"),
                    format!("{text:?} has host bits set (did you mean {}?)", net.trunc()),
                )),
                Err(_) => problems.push(Problem::new(
                    format!("{path}.cidrs[{j}]"),
                    format!("{text:?} is not a network (address/prefix)"),
                )),
            }
        }
        if countries.is_empty() && continents.is_empty() && cidrs.is_empty() {
            problems.push(Problem::new(
                &path,
                "a rule needs countries, continents or cidrs",
            ));
        }
        let mut pools = Vec::new();
        for (j, name) in rule.datacenters.iter().enumerate() {
            match pool_names.iter().position(|p| p == name) {
                Some(pool) if !pools.contains(&pool) => pools.push(pool),
                Some(_) => problems.push(Problem::new(
                    format!("{path}.datacenters[{j}]"),
                    format!("{name:?} is listed twice"),
                )),
                None => problems.push(Problem::new(
                    format!("{path}.datacenters[{j}]"),
                    format!("{name:?} is not one of this service's pools"),
                )),
            }
        }
        if rule.datacenters.is_empty() {
            problems.push(Problem::new(
                format!("{path}.datacenters"),
                "a rule needs at least one datacenter",
            ));
        }
        rules.push(ClientRule {
            countries,
            continents,
            cidrs,
            pools,
        });
    }
    rules
}

/// How a datacenter's addresses are ordered across answers (BIND's `rrset-order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    /// Always in configured order.
    #[default]
    Fixed,
    /// Each answer starts one address further along, round robin.
    Cyclic,
    /// Each answer starts at an address chosen at random.
    Random,
}

impl Rotation {
    /// The name as written in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Rotation::Fixed => "fixed",
            Rotation::Cyclic => "cyclic",
            Rotation::Random => "random",
        }
    }
}

/// `nearest`: how a datacenter's catchment is pulled (positive) or pushed (negative), like
/// Route 53's geoproximity bias.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Bias {
    /// None.
    #[default]
    None,
    /// Clients count the datacenter this many kilometres nearer than it is.
    Km(f64),
    /// Clients count the datacenter this per cent nearer than it is (-99 to 99).
    Percent(f64),
}

impl Bias {
    /// The score of a datacenter at `distance_km` is `per_km × distance + offset`: these two.
    pub fn score_parameters(&self) -> (f64, f64) {
        match *self {
            Bias::None => (1.0, 0.0),
            Bias::Km(km) => (1.0, -km),
            Bias::Percent(p) => (1.0 - p / 100.0, 0.0),
        }
    }

    /// In words, for explanations; `None` without a bias.
    pub fn describe(&self) -> Option<String> {
        match *self {
            Bias::None => None,
            Bias::Km(km) => Some(format!("bias {km:+} km")),
            Bias::Percent(p) => Some(format!("bias {p:+} %")),
        }
    }
}

/// The balancing fields of a service, as written.
pub(super) struct RawBalance {
    pub(super) slow_start_seconds: Option<u32>,
    pub(super) max_service_latency_ms: Option<f64>,
    pub(super) rotation: Option<String>,
    pub(super) max_extra_km: Option<f64>,
}

/// The balancing settings of a service, validated.
pub(super) struct Balance {
    pub(super) slow_start: Duration,
    pub(super) max_service_latency_ms: Option<f64>,
    pub(super) rotation: Rotation,
    pub(super) max_extra_km: Option<f64>,
}

/// Longest slow start ramp: a day.
const MAX_SLOW_START_SECONDS: u32 = 86_400;

pub(super) fn validate_balance(
    path: &str,
    policy: super::Policy,
    raw: &RawBalance,
    pools: &[super::PoolConfig],
    problems: &mut Vec<Problem>,
) -> Balance {
    let seconds = raw.slow_start_seconds.unwrap_or(0);
    if seconds > MAX_SLOW_START_SECONDS {
        problems.push(Problem::new(
            format!("{path}.slow_start_seconds"),
            format!("{seconds} is more than a day ({MAX_SLOW_START_SECONDS})"),
        ));
    }
    let max_service_latency_ms = raw.max_service_latency_ms;
    if let Some(ms) = max_service_latency_ms
        && !(ms.is_finite() && ms > 0.0)
    {
        problems.push(Problem::new(
            format!("{path}.max_service_latency_ms"),
            format!("{ms} is not a positive number of milliseconds"),
        ));
    }
    let rotation = match raw.rotation.as_deref() {
        None | Some("fixed") => Rotation::Fixed,
        Some("cyclic") => Rotation::Cyclic,
        Some("random") => Rotation::Random,
        Some(other) => {
            problems.push(Problem::new(
                format!("{path}.rotation"),
                format!("{other:?} is not fixed, cyclic or random"),
            ));
            Rotation::Fixed
        }
    };
    // Every order of a pool's addresses is prepared ahead (one answer per starting address):
    // bound how many.
    if rotation != Rotation::Fixed {
        for pool in pools {
            let n = pool.a.len().max(pool.aaaa.len());
            if n > MAX_ROTATED_ADDRESSES {
                problems.push(Problem::new(
                    format!("{path}.rotation"),
                    format!(
                        "{} rotates at most {MAX_ROTATED_ADDRESSES} addresses of a family per pool; a pool has {n}",
                        rotation.name()
                    ),
                ));
                break;
            }
        }
    }
    let max_extra_km = raw.max_extra_km;
    if let Some(km) = max_extra_km {
        if policy != super::Policy::LeastLoaded {
            problems.push(Problem::new(
                format!("{path}.max_extra_km"),
                "only the least-loaded policy uses it",
            ));
        } else if !(km.is_finite() && km >= 0.0) {
            problems.push(Problem::new(
                format!("{path}.max_extra_km"),
                format!("{km} is not a distance (kilometres, 0 or more)"),
            ));
        }
    }
    if !matches!(
        policy,
        super::Policy::Nearest | super::Policy::NearestWithCapacity
    ) && pools.iter().any(|pool| pool.bias != Bias::None)
    {
        problems.push(Problem::new(
            format!("{path}.pools"),
            format!(
                "the {} policy does not rank by distance, so it cannot apply a bias (use nearest or nearest-with-capacity)",
                policy.name()
            ),
        ));
    }
    Balance {
        slow_start: Duration::from_secs(u64::from(seconds)),
        max_service_latency_ms,
        rotation,
        max_extra_km,
    }
}

/// Parses a pool's `bias`: `"300 km"`, `"-300km"`, `"20 %"` or `"-20%"`.
pub(super) fn validate_bias(
    pool_path: &str,
    raw: Option<&str>,
    problems: &mut Vec<Problem>,
) -> Bias {
    let Some(text) = raw else {
        return Bias::None;
    };
    let trimmed = text.trim();
    let parsed = if let Some(number) = trimmed.strip_suffix("km") {
        number
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|km| km.is_finite() && km.abs() <= MAX_BIAS_KM)
            .map(Bias::Km)
    } else if let Some(number) = trimmed.strip_suffix('%') {
        number
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|p| p.is_finite() && p.abs() <= MAX_BIAS_PERCENT)
            .map(Bias::Percent)
    } else {
        None
    };
    parsed.unwrap_or_else(|| {
        problems.push(Problem::new(
            format!("{pool_path}.bias"),
            format!(
                "{text:?} is not a bias: kilometres (\"300 km\", at most {MAX_BIAS_KM}) or per cent (\"-20 %\", -{MAX_BIAS_PERCENT} to {MAX_BIAS_PERCENT})"
            ),
        ));
        Bias::None
    })
}

/// Largest bias in kilometres: half the Earth's circumference.
const MAX_BIAS_KM: f64 = 20_000.0;
/// Largest bias in per cent: 100 would make the datacenter everyone's nearest.
const MAX_BIAS_PERCENT: f64 = 99.0;
