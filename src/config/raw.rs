//! The serde mirror of the YAML configuration file.
//!
//! Every field is kept as close to the text as possible (addresses and names stay strings) so
//! that `Config::from_raw` can check them all and report every problem with its path, rather than
//! stopping at the first value serde cannot parse. This file does no validation of its own.

use indexmap::IndexMap;
use serde::Deserialize;

/// Default DNS listen address of a local instance: an unprivileged port on loopback.
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:5353";
/// Default control-plane (HTTP) listen address: loopback only, since it will carry operator actions.
pub const DEFAULT_CONTROL_LISTEN: &str = "127.0.0.1:8053";
/// Default service TTL in seconds when a service does not set one.
pub const DEFAULT_SERVICE_TTL: u32 = 30;
/// Default number of addresses in a service answer.
pub const DEFAULT_ANSWERS: u32 = 1;
/// Default largest UDP response we send (bytes); 1232 avoids IP fragmentation on almost any path
/// (DNS flag day 2020).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// Default idle timeout of a DNS/TCP connection, in seconds.
pub const DEFAULT_TCP_IDLE_TIMEOUT_SECONDS: u64 = 10;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listen addresses and server identity.
    #[serde(default)]
    pub server: RawServer,
    /// The geo database used to locate clients.
    pub geo: RawGeo,
    /// Authoritative zones, each an RFC 1035 master file.
    pub zones: Vec<RawZone>,
    /// Datacenters by name, in the order used when nothing else decides.
    pub datacenters: IndexMap<String, RawDatacenter>,
    /// Dynamically answered service names, by a short identifier.
    #[serde(default)]
    pub services: IndexMap<String, RawService>,
}

/// The `server` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// DNS listen addresses (`ip:port`), UDP and TCP on each; default [`DEFAULT_DNS_LISTEN`].
    #[serde(default)]
    pub dns: Vec<String>,
    /// Control-plane HTTP listen address (`ip:port`); default [`DEFAULT_CONTROL_LISTEN`].
    pub control: Option<String>,
    /// The instance's name for NSID (RFC 5001) and CHAOS `id.server`; default the host name.
    pub identity: Option<String>,
    /// Largest UDP response in bytes; default [`DEFAULT_MAX_UDP_PAYLOAD`].
    pub max_udp_payload: Option<u16>,
    /// Idle timeout of DNS/TCP connections in seconds; default [`DEFAULT_TCP_IDLE_TIMEOUT_SECONDS`].
    pub tcp_idle_timeout_seconds: Option<u64>,
}

/// The `geo` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeo {
    /// Path of the MaxMind-format database, relative to the configuration file.
    pub database: String,
    /// Path of a country table (`iso_code,continent,latitude,longitude,name`) used when the
    /// database gives a country but no coordinates; default the table shipped in `geodata/`.
    pub countries: Option<String>,
}

/// One entry of `zones`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    /// The zone's apex, e.g. `example.com`.
    pub origin: String,
    /// Path of the master file, relative to the configuration file.
    pub file: String,
}

/// One entry of `datacenters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatacenter {
    /// Latitude in decimal degrees, -90 to 90.
    pub latitude: f64,
    /// Longitude in decimal degrees, -180 to 180.
    pub longitude: f64,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// Continent code: AF, AN, AS, EU, NA, OC or SA.
    pub continent: String,
}

/// One entry of `services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// The DNS name answered, e.g. `www.example.com`; must lie inside a configured zone.
    pub name: String,
    /// `nearest`, `failover` or `weighted`.
    pub policy: String,
    /// TTL of the answers in seconds; default [`DEFAULT_SERVICE_TTL`].
    pub ttl: Option<u32>,
    /// How many addresses an answer carries; default [`DEFAULT_ANSWERS`].
    pub answers: Option<u32>,
    /// Datacenter order for `failover`, and for every policy the order used for clients whose
    /// location is unknown; default the order of `pools`.
    pub order: Option<Vec<String>>,
    /// Addresses per datacenter, in the order of preference used when nothing else decides.
    pub pools: IndexMap<String, RawPool>,
}

/// The addresses one datacenter answers for one service.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// IPv4 addresses.
    #[serde(default)]
    pub a: Vec<String>,
    /// IPv6 addresses.
    #[serde(default)]
    pub aaaa: Vec<String>,
    /// Relative weight under the `weighted` policy; default 1.
    pub weight: Option<u32>,
}
