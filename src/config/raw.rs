//! The serde mirror of the YAML configuration file.
//!
//! Every field is kept as close to the text as possible (addresses and names stay strings) so
//! that `Config::from_raw` can check them all and report every problem with its path, rather than
//! stopping at the first value serde cannot parse. This file does no validation of its own.
//!
//! `docs/CONFIGURATION.md` is the user's reference for every field here (type, default, meaning);
//! `config::tests::every_raw_field_is_documented` fails when a field is missing from it.

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
/// Default most DNS/TCP connections open at once over all DNS addresses; further connections
/// wait in the listen backlog until one closes. With the control plane's own cap, neither can
/// take every file descriptor.
pub const DEFAULT_TCP_MAX_CONNECTIONS: u32 = 1000;
/// Default most DNS/TCP connections open at once from one client address.
pub const DEFAULT_TCP_MAX_CONNECTIONS_PER_CLIENT: u32 = 20;
/// Default time from the first byte of a DNS/TCP message to its last, in milliseconds; a
/// stalled or dribbling sender is closed after it (Knot's `tcp-io-timeout` is 500 ms too).
pub const DEFAULT_TCP_MESSAGE_TIMEOUT_MS: u64 = 500;
/// Default number of DNS/UDP worker threads per DNS address: 0 means one per core
/// (`std::thread::available_parallelism`).
pub const DEFAULT_UDP_WORKERS: usize = 0;
/// Default time a DNS/TCP connection may sit idle between messages, in milliseconds.
pub const DEFAULT_TCP_IDLE_TIMEOUT_MS: u64 = 10_000;
/// Default RRL slip: every 2nd limited response goes out as an empty TC reply, the rest are
/// dropped (Knot's, NSD's and BIND's default too).
pub const DEFAULT_RRL_SLIP: u32 = 2;
/// Default RRL IPv4 client network prefix: one /24 is one client.
pub const DEFAULT_RRL_IPV4_PREFIX: u8 = 24;
/// Default RRL IPv6 client network prefix: one /56 is one client.
pub const DEFAULT_RRL_IPV6_PREFIX: u8 = 56;
/// Default freshness of a datacenter report that does not set `ttl_seconds`.
pub const DEFAULT_REPORT_TTL_SECONDS: u32 = 15;
/// Default time a stale datacenter keeps its last known state before it counts as down.
pub const DEFAULT_STALENESS_GRACE_SECONDS: u32 = 30;
/// Default largest control-plane request body, in bytes.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Default sustained requests per second per token.
pub const DEFAULT_RATE_PER_SECOND: u32 = 20;
/// Default burst of requests per token.
pub const DEFAULT_RATE_BURST: u32 = 40;
/// Default sustained control-plane requests per second from one client address, counted before
/// authentication (wrong tokens and probes included; directory lookups have their own budget).
pub const DEFAULT_ADDRESS_RATE_PER_SECOND: u32 = 100;
/// Default burst of requests from one client address.
pub const DEFAULT_ADDRESS_RATE_BURST: u32 = 200;
/// Default sustained directory lookups (`GET /v1/users/{id}`) per second, per client address and
/// per token: frontends look users up at high rates, which the general limits would stop.
pub const DEFAULT_DIRECTORY_RATE_PER_SECOND: u32 = 200_000;
/// Default burst of directory lookups.
pub const DEFAULT_DIRECTORY_RATE_BURST: u32 = 200_000;
/// Default time a control-plane client has to send a whole request head, counted from when the
/// server starts waiting for it (so it also bounds how long a kept-alive connection may idle
/// between requests).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
/// Default time a control-plane connection may pass with no byte moving either way (a stalled
/// request body, a client that stops reading a response) before it is closed.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 60;
/// Default most open control-plane connections; more wait in the listen backlog. Kept well
/// under the usual 1024 file descriptor limit, so that the control plane cannot take the
/// descriptors DNS over TCP needs.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default networks allowed to ask `_explain.` TXT queries: loopback.
pub const DEFAULT_EXPLAIN_ALLOW: &[&str] = &["127.0.0.0/8", "::1/128"];
/// Default utilization below which a datacenter sends no clients elsewhere.
pub const DEFAULT_LOW_WATERMARK: f64 = 0.8;
/// Default utilization above which a datacenter gets no new clients.
pub const DEFAULT_HIGH_WATERMARK: f64 = 0.95;
/// Default margin below the high watermark a datacenter must fall to before it takes clients
/// again.
pub const DEFAULT_HYSTERESIS: f64 = 0.05;
/// Steps a slow start ramp is cut into: the decision changes (and is rebuilt) once per step.
pub const SLOW_START_STEPS: u32 = 20;
/// Most addresses of one family a pool may rotate (`rotation: cyclic` or `random`): every
/// starting address is an answer prepared for every ranking.
pub const MAX_ROTATED_ADDRESSES: usize = 32;
/// Default weight of one millisecond of latency in a `metric` score.
pub const DEFAULT_LATENCY_WEIGHT: f64 = 1.0;
/// Default weight of one unit of cost in a `metric` score.
pub const DEFAULT_COST_WEIGHT: f64 = 1.0;

/// The whole configuration file.
///
/// `geo`, `zones` and `datacenters` are required; they are `Option`s here so that a file missing
/// several of them is told about all of them at once.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listen addresses and server identity.
    #[serde(default)]
    pub server: RawServer,
    /// The geo database used to locate clients (required).
    pub geo: Option<RawGeo>,
    /// Authoritative zones, each an RFC 1035 master file (required, at least one).
    pub zones: Option<Vec<RawZone>>,
    /// Datacenters by name, in the order used when nothing else decides (required, at least
    /// one).
    pub datacenters: Option<IndexMap<String, RawDatacenter>>,
    /// Dynamically answered service names, by a short identifier.
    #[serde(default)]
    pub services: IndexMap<String, RawService>,
    /// The control plane: report freshness, limits and access tokens.
    #[serde(default)]
    pub control: RawControl,
    /// The user directory (which datacenter holds a user's data); absent: no directory.
    pub directory: Option<RawDirectory>,
    /// Where reports, drains, pins and the audit log are kept; absent: the embedded store.
    pub state: Option<RawState>,
}

/// Default key prefix of a fleet's state in etcd.
pub const DEFAULT_ETCD_PREFIX: &str = "/meridian";

/// The `state` section: which store holds the state the control plane writes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// `embedded` (the redb file under `--state-dir`, the default) or `etcd` (a fleet's shared
    /// state; `--state-dir` keeps this instance's local copy for warm starts).
    pub backend: Option<String>,
    /// The etcd cluster, required when `backend` is `etcd`.
    pub etcd: Option<RawEtcd>,
}

/// The `state.etcd` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    /// Client URLs of the etcd members (`http://host:2379`, or `https://` with `tls`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Key prefix under which the fleet's state lives; default [`DEFAULT_ETCD_PREFIX`].
    pub prefix: Option<String>,
    /// Client TLS: the CA that signed the members' certificates, and this client's certificate
    /// and key (PEM files).
    pub tls: Option<RawEtcdTls>,
    /// etcd user name (with `password`); absent: no authentication.
    pub user: Option<String>,
    /// etcd password of `user`.
    pub password: Option<String>,
}

/// The `state.etcd.tls` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcdTls {
    /// PEM file of the certificate authority that signed the etcd members' certificates.
    pub ca: Option<std::path::PathBuf>,
    /// PEM file of this client's certificate (with `key`), for client-certificate auth.
    pub cert: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key: Option<std::path::PathBuf>,
}

/// Default share of users a bulk import, restore or bucket move may change unconfirmed.
pub const DEFAULT_CHANGE_LIMIT: f64 = 0.10;
/// Default TTL of directory answers over DNS.
pub const DEFAULT_DIRECTORY_TTL: u32 = 30;
/// Default largest directory import or restore body, in bytes.
pub const DEFAULT_IMPORT_LIMIT_BYTES: usize = 1 << 30;

/// The `directory` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    /// Number of hash buckets, a power of two; default 4096. Sets the initial layout only: once
    /// stored, the bucket map is changed through the API.
    pub buckets: Option<u32>,
    /// Datacenters of the initial layout (bucket b: home = b mod n, replica = the next);
    /// default every datacenter, in configuration order.
    pub datacenters: Option<Vec<String>>,
    /// DNS name under which `<user>.<zone_name>` is answered; absent: no DNS access.
    pub zone_name: Option<String>,
    /// Networks (CIDR) allowed to query the directory over DNS; default loopback.
    pub allow: Option<Vec<String>>,
    /// Share of users an import, restore or bucket move may change without `confirm`; default
    /// [`DEFAULT_CHANGE_LIMIT`].
    pub change_limit: Option<f64>,
    /// TTL of DNS answers; default [`DEFAULT_DIRECTORY_TTL`].
    pub ttl: Option<u32>,
    /// How long a stale datacenter keeps its last known state; default
    /// [`DEFAULT_STALENESS_GRACE_SECONDS`].
    pub staleness_grace_seconds: Option<u32>,
    /// Largest import or restore body; default [`DEFAULT_IMPORT_LIMIT_BYTES`].
    pub import_limit_bytes: Option<usize>,
    /// Frontend addresses per datacenter, answered as A/AAAA at `<user>.<zone_name>`.
    #[serde(default)]
    pub frontends: IndexMap<String, RawPool>,
}

/// The `control` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    /// Freshness of reports that do not set their own; default [`DEFAULT_REPORT_TTL_SECONDS`].
    pub report_ttl_seconds: Option<u32>,
    /// Largest request body; default [`DEFAULT_BODY_LIMIT_BYTES`].
    pub body_limit_bytes: Option<usize>,
    /// Per-token rate limit.
    pub rate_limit: Option<RawRateLimit>,
    /// Per-client-address rate limit of every request, before authentication; default
    /// [`DEFAULT_ADDRESS_RATE_PER_SECOND`] and [`DEFAULT_ADDRESS_RATE_BURST`].
    pub address_rate_limit: Option<RawRateLimit>,
    /// Rate limit of directory lookups, per client address and per token, instead of the two
    /// above; default [`DEFAULT_DIRECTORY_RATE_PER_SECOND`] and [`DEFAULT_DIRECTORY_RATE_BURST`].
    pub directory_rate_limit: Option<RawRateLimit>,
    /// Seconds a client has to send a request head; default
    /// [`DEFAULT_HEADER_READ_TIMEOUT_SECONDS`].
    pub header_read_timeout_seconds: Option<u64>,
    /// Seconds a connection may pass with no I/O; default [`DEFAULT_IDLE_TIMEOUT_SECONDS`].
    pub idle_timeout_seconds: Option<u64>,
    /// Most open connections (read at startup); default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<usize>,
    /// Networks (CIDR) allowed to ask `_explain.<name>` TXT queries; default loopback.
    pub explain_allow: Option<Vec<String>>,
    /// Bearer tokens, stored as hashes.
    #[serde(default)]
    pub tokens: Vec<RawToken>,
}

/// A per-token rate limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

/// One access token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// Who holds it, for the audit log.
    pub name: String,
    /// Hex SHA-256 of the token (`printf %s TOKEN | sha256sum`); the token itself is never stored.
    pub sha256: String,
    /// `operator`, `frontend` or `datacenter:<name>`.
    pub role: String,
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
    /// Deprecated: idle timeout of DNS/TCP connections in seconds; use `tcp.idle_timeout_ms`.
    /// Still accepted, with a warning; when both are set, `tcp.idle_timeout_ms` wins.
    pub tcp_idle_timeout_seconds: Option<u64>,
    /// Deprecated: most open DNS/TCP connections; use `tcp.max_connections`. Still accepted,
    /// with a warning; when both are set, `tcp.max_connections` wins.
    pub tcp_max_connections: Option<u32>,
    /// DNS/TCP connection limits and timeouts.
    #[serde(default)]
    pub tcp: RawTcp,
    /// Response rate limiting of UDP answers; absent: off.
    pub rrl: Option<RawRrl>,
    /// The answer to CHAOS `version.bind` TXT (and `version.server`); absent: REFUSED, so that
    /// the version is not advertised to whoever asks.
    pub version: Option<String>,
    /// DNS/UDP worker threads per DNS address, each with its own `SO_REUSEPORT` socket; default
    /// [`DEFAULT_UDP_WORKERS`] (one per core).
    pub udp_workers: Option<usize>,
    /// The sampled record of recent traffic that simulations replay; default on.
    #[serde(default)]
    pub traffic: RawTraffic,
    /// The query log (sampled queries and their answers as JSON lines); default off.
    #[serde(default)]
    pub query_log: RawQueryLog,
}

/// Default destination of the query log.
pub const DEFAULT_QUERY_LOG_OUTPUT: &str = "stderr";
/// Default share of queries the query log writes at start: none (it is off).
pub const DEFAULT_QUERY_LOG_SAMPLE: f64 = 0.0;
/// Default most lines waiting for the query log's writer; beyond, lines are dropped (counted).
pub const DEFAULT_QUERY_LOG_QUEUE_LINES: u32 = 4096;

/// The `server.query_log` section: sampled queries and answers, one JSON object per line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueryLog {
    /// `stderr`, or a file appended to (relative to the configuration file); default
    /// [`DEFAULT_QUERY_LOG_OUTPUT`].
    pub output: Option<String>,
    /// Share of queries logged from start, 0 to 1 (`PUT /v1/querylog` changes it at runtime);
    /// default [`DEFAULT_QUERY_LOG_SAMPLE`].
    pub sample: Option<f64>,
    /// Most lines waiting for the writer; default [`DEFAULT_QUERY_LOG_QUEUE_LINES`].
    pub queue_lines: Option<u32>,
}

/// Default share of queries the traffic record samples: one in this many.
pub const DEFAULT_TRAFFIC_SAMPLE_ONE_IN: u32 = 16;
/// Default length of the traffic record's sliding window, in seconds.
pub const DEFAULT_TRAFFIC_WINDOW_SECONDS: u32 = 600;
/// Default most (service, client network) pairs the traffic record keeps.
pub const DEFAULT_TRAFFIC_MAX_NETWORKS: u32 = 50_000;

/// The `server.traffic` section: the sampled record of recent traffic.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraffic {
    /// Record one query in this many (per worker); 0 records nothing; default
    /// [`DEFAULT_TRAFFIC_SAMPLE_ONE_IN`].
    pub sample_one_in: Option<u32>,
    /// How far back the record reaches, in seconds; default
    /// [`DEFAULT_TRAFFIC_WINDOW_SECONDS`].
    pub window_seconds: Option<u32>,
    /// Most (service, client network) pairs kept; default [`DEFAULT_TRAFFIC_MAX_NETWORKS`].
    pub max_networks: Option<u32>,
}

/// The `server.tcp` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    /// Most connections open at once; default [`DEFAULT_TCP_MAX_CONNECTIONS`].
    pub max_connections: Option<u32>,
    /// Most connections open at once from one client address; default
    /// [`DEFAULT_TCP_MAX_CONNECTIONS_PER_CLIENT`].
    pub max_connections_per_client: Option<u32>,
    /// From the first byte of a message to its last, in milliseconds; default
    /// [`DEFAULT_TCP_MESSAGE_TIMEOUT_MS`].
    pub message_timeout_ms: Option<u64>,
    /// Between messages, in milliseconds; default [`DEFAULT_TCP_IDLE_TIMEOUT_MS`].
    pub idle_timeout_ms: Option<u64>,
}

/// The `server.rrl` section: response rate limiting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRrl {
    /// Responses per second allowed per client network and response class (required).
    pub responses_per_second: u32,
    /// Every `slip`th limited response is sent as an empty TC reply, the rest dropped; 0 drops
    /// all, 1 sends TC for all; default [`DEFAULT_RRL_SLIP`].
    pub slip: Option<u32>,
    /// IPv4 clients are grouped by this prefix; default [`DEFAULT_RRL_IPV4_PREFIX`].
    pub ipv4_prefix: Option<u8>,
    /// IPv6 clients are grouped by this prefix; default [`DEFAULT_RRL_IPV6_PREFIX`].
    pub ipv6_prefix: Option<u8>,
    /// Networks never limited (`address/prefix`); default none.
    #[serde(default)]
    pub exempt: Vec<String>,
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
    /// Whether the datacenter counts as down until it has reported; default false (a datacenter
    /// that never reported is eligible, one that stopped reporting is not).
    pub require_report: Option<bool>,
}

/// One entry of `services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// The DNS name answered, e.g. `www.example.com`; must lie inside a configured zone.
    pub name: String,
    /// `nearest`, `nearest-with-capacity`, `metric`, `failover`, `weighted`, `cascade` or
    /// `least-loaded`.
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
    /// How long a stale datacenter keeps its last known state before it counts as down;
    /// default [`DEFAULT_STALENESS_GRACE_SECONDS`].
    pub staleness_grace_seconds: Option<u32>,
    /// When every datacenter is ineligible: `fail-open` (default: answer as if all were
    /// healthy) or `servfail`.
    pub all_down: Option<String>,
    /// Watermarks of `nearest-with-capacity`.
    pub capacity: Option<RawCapacity>,
    /// Weights of `metric`.
    pub metric: Option<RawMetric>,
    /// Clients of these places may only use these datacenters.
    #[serde(default)]
    pub geofence: Vec<RawClientRule>,
    /// Clients of these places or networks prefer these datacenters, in this order.
    #[serde(default)]
    pub overrides: Vec<RawClientRule>,
    /// Seconds over which a datacenter that becomes eligible again takes back its share of
    /// clients; default 0 (at once).
    pub slow_start_seconds: Option<u32>,
    /// A datacenter reporting a `service_latency_ms` above this is skipped as if full;
    /// default none.
    pub max_service_latency_ms: Option<f64>,
    /// Order of a datacenter's addresses across answers: `fixed` (default), `cyclic` or
    /// `random`.
    pub rotation: Option<String>,
    /// `least-loaded`: only datacenters at most this much farther than the nearest eligible one
    /// are ranked by load; default no limit.
    pub max_extra_km: Option<f64>,
}

/// Utilization watermarks (load / capacity).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapacity {
    /// Below it, no client is sent elsewhere; default [`DEFAULT_LOW_WATERMARK`].
    pub low_watermark: Option<f64>,
    /// Above it, no new client is sent here; default [`DEFAULT_HIGH_WATERMARK`].
    pub high_watermark: Option<f64>,
    /// How far below the high watermark a full datacenter must fall to take clients again;
    /// default [`DEFAULT_HYSTERESIS`].
    pub hysteresis: Option<f64>,
}

/// Weights of the `metric` score (lower is better).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetric {
    /// Score per millisecond of latency; default [`DEFAULT_LATENCY_WEIGHT`].
    pub latency_weight: Option<f64>,
    /// Score per unit of reported cost; default [`DEFAULT_COST_WEIGHT`].
    pub cost_weight: Option<f64>,
}

/// Which clients a geofence or override applies to, and the datacenters it names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientRule {
    /// ISO country codes of clients.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Continent codes of clients.
    #[serde(default)]
    pub continents: Vec<String>,
    /// Client networks (overrides only).
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// The datacenters, by name.
    pub datacenters: Vec<String>,
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
    /// `nearest` and `nearest-with-capacity`: pulls clients towards this datacenter (positive)
    /// or pushes them away (negative), as `"300 km"` or `"20 %"`; default none.
    pub bias: Option<String>,
}
