//! The `directory` section, validated.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{self, RawDirectory};
use super::{DcNames, Problem, ZoneConfig, is_in_zone, normalize_name};

/// The user directory's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectoryConfig {
    /// Buckets of the initial layout (a power of two).
    pub n_buckets: u32,
    /// Datacenters of the initial layout, as indexes into `Config::datacenters`.
    pub datacenters: Vec<usize>,
    /// `<user>.<zone_name>` is answered over DNS (lower-case, no trailing dot).
    pub zone_name: Option<String>,
    /// Networks allowed to query the directory over DNS.
    pub allow: Vec<IpNet>,
    /// Share of users a change may move without confirmation.
    pub change_limit: f64,
    /// TTL of DNS answers.
    pub ttl: u32,
    /// How long a stale datacenter keeps its last known state.
    pub staleness_grace: Duration,
    /// Largest import or restore body in bytes.
    pub import_limit: usize,
    /// Frontend addresses by datacenter index.
    pub frontends: Vec<Frontends>,
}

/// One datacenter's frontend addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontends {
    /// Index into `Config::datacenters`.
    pub datacenter: usize,
    /// IPv4 addresses.
    pub a: Vec<Ipv4Addr>,
    /// IPv6 addresses.
    pub aaaa: Vec<Ipv6Addr>,
}

impl DirectoryConfig {
    /// Whether `ip` may query the directory over DNS.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

pub(super) fn validate_directory(
    raw: RawDirectory,
    datacenters: &DcNames<'_>,
    zones: Option<&[ZoneConfig]>,
    problems: &mut Vec<Problem>,
) -> DirectoryConfig {
    let n_buckets = raw.buckets.unwrap_or(4096);
    if !n_buckets.is_power_of_two() || n_buckets > 1 << 20 {
        problems.push(Problem::new(
            "directory.buckets",
            format!("{n_buckets} is not a power of two between 1 and 1048576"),
        ));
    }
    let mut layout = Vec::new();
    // Names that are declared but invalid are reported at the datacenter, not here.
    let mut n_named = datacenters.valid().len();
    match raw.datacenters {
        None => layout.extend(0..datacenters.valid().len()),
        Some(names) => {
            n_named = names.len();
            for (i, name) in names.iter().enumerate() {
                let path = format!("directory.datacenters[{i}]");
                match datacenters.index(name, &path, problems) {
                    Some(dc) if !layout.contains(&dc) => layout.push(dc),
                    Some(_) => {
                        problems.push(Problem::new(path, format!("{name:?} is listed twice")));
                    }
                    None => {}
                }
            }
        }
    }
    if n_named == 0 {
        problems.push(Problem::new(
            "directory.datacenters",
            "at least one datacenter is needed",
        ));
    }
    let zone_name = raw.zone_name.and_then(|name| match normalize_name(&name) {
        Ok(name)
            if zones.is_none_or(|zones| zones.iter().any(|z| is_in_zone(&name, &z.origin))) =>
        {
            Some(name)
        }
        Ok(name) => {
            problems.push(Problem::new(
                "directory.zone_name",
                format!("{name} is not inside any configured zone"),
            ));
            None
        }
        Err(message) => {
            problems.push(Problem::new(
                "directory.zone_name",
                format!("{name:?}: {message}"),
            ));
            None
        }
    });
    let allow = super::parse_networks(
        "directory.allow",
        raw.allow,
        raw::DEFAULT_EXPLAIN_ALLOW,
        problems,
    );
    let change_limit = raw.change_limit.unwrap_or(raw::DEFAULT_CHANGE_LIMIT);
    if !(0.0..=1.0).contains(&change_limit) {
        problems.push(Problem::new(
            "directory.change_limit",
            format!("{change_limit} is not a share between 0 and 1"),
        ));
    }
    let mut frontends = Vec::new();
    for (name, pool) in raw.frontends {
        let path = format!("directory.frontends.{name}");
        let Some(datacenter) = datacenters.index(&name, &path, problems) else {
            continue;
        };
        let a = super::parse_addresses::<Ipv4Addr>(&path, "a", "IPv4", &pool.a, problems);
        let aaaa = super::parse_addresses::<Ipv6Addr>(&path, "aaaa", "IPv6", &pool.aaaa, problems);
        if pool.weight.is_some() {
            problems.push(Problem::new(
                format!("{path}.weight"),
                "frontends have no weight",
            ));
        }
        if pool.bias.is_some() {
            problems.push(Problem::new(
                format!("{path}.bias"),
                "frontends have no bias",
            ));
        }
        frontends.push(Frontends {
            datacenter,
            a,
            aaaa,
        });
    }
    DirectoryConfig {
        n_buckets,
        datacenters: layout,
        zone_name,
        allow,
        change_limit,
        ttl: raw.ttl.unwrap_or(raw::DEFAULT_DIRECTORY_TTL),
        staleness_grace: Duration::from_secs(u64::from(
            raw.staleness_grace_seconds
                .unwrap_or(raw::DEFAULT_STALENESS_GRACE_SECONDS),
        )),
        import_limit: raw
            .import_limit_bytes
            .unwrap_or(raw::DEFAULT_IMPORT_LIMIT_BYTES),
        frontends,
    }
}
