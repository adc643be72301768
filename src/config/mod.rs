//! The validated configuration: what the server runs with.
//!
//! `raw.rs` mirrors the YAML; [`Config::from_raw`] checks every value and reports all problems at
//! once, each with its path in the file (`services.www.pools.eu-west.a[1]: not an IPv4 address`).
//! Validated types cannot hold invalid states. Reading the zone files and the geo database is not
//! done here: see `state::load`.

mod control;
mod directory;
mod parse;
mod policy;
pub mod raw;
mod source;
mod state;

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

pub use control::{ControlConfig, RateLimit, Role, TokenConfig};
pub use directory::{DirectoryConfig, Frontends};
pub use policy::{AllDown, Bias, ClientRule, MetricWeights, Rotation, Watermarks};
pub use raw::{MAX_ROTATED_ADDRESSES, SLOW_START_STEPS};
pub use source::{COUNTRIES_CSV, EXAMPLE_CONFIG, Published, Source, short_version};
pub use state::{ETCD_ENDPOINTS_ENV, EtcdConfig, EtcdTls, StateConfig};

use crate::geo::{Continent, Coordinates, CountryCode};
use parse::Damaged;
use raw::RawConfig;

/// Most datacenters one service may use. Nothing in routing is sized by it (decision maps
/// keep only the datacenters an answer needs); it only catches configuration mistakes, far
/// above real deployments.
pub const MAX_POOL_SIZE: usize = 1024;

/// One thing wrong with the configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a YAML path such as `services.www.ttl`, or a file and line.
    pub path: String,
    /// What is wrong, lowercase, naming the bad value.
    pub message: String,
}

impl Problem {
    /// Builds a problem from anything printable.
    pub fn new(path: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The configuration (or a file it names) is invalid; carries every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_problems(.problems))]
pub struct ConfigError {
    /// Every problem, in file order.
    pub problems: Vec<Problem>,
}

fn display_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listen addresses and identity.
    pub server: ServerConfig,
    /// Geo database files.
    pub geo: GeoConfig,
    /// Authoritative zones.
    pub zones: Vec<ZoneConfig>,
    /// Datacenters, in configuration order; other parts refer to them by index.
    pub datacenters: Vec<DatacenterConfig>,
    /// Dynamically answered names.
    pub services: Vec<ServiceConfig>,
    /// The control plane.
    pub control: ControlConfig,
    /// The user directory, if configured.
    pub directory: Option<DirectoryConfig>,
    /// Where the control plane's state is kept (read at start; a reload does not change it).
    pub state: StateConfig,
}

impl Config {
    /// This configuration (a fleet's published version) with the sections that describe one
    /// instance taken from `local` (the instance's own file): `server` (listen addresses, the
    /// identity of NSID and `id.server`, socket and rate-limit settings) and `state` (how to
    /// reach etcd). Everything else (zones, datacenters, services, control, directory, geo) is
    /// the fleet's.
    pub fn with_local_sections(mut self, local: &Config) -> Config {
        self.server = local.server.clone();
        self.state = local.state.clone();
        self
    }
}

/// The `server` section, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// DNS listen addresses (UDP and TCP on each).
    pub dns: Vec<SocketAddr>,
    /// Control-plane HTTP listen address.
    pub control: SocketAddr,
    /// NSID / `id.server` identity; `None` means the host name.
    pub identity: Option<String>,
    /// Largest UDP response we send, at least 512.
    pub max_udp_payload: u16,
    /// DNS/TCP connection limits and timeouts.
    pub tcp: TcpConfig,
    /// Response rate limiting of UDP answers; `None`: off.
    pub rrl: Option<RrlConfig>,
    /// The CHAOS `version.bind` answer; `None`: REFUSED.
    pub version: Option<String>,
    /// Settings that still work but should be changed (deprecated names), with what to use
    /// instead; the server logs each at `warn` when it starts.
    pub deprecations: Vec<Problem>,
    /// DNS/UDP worker threads per DNS address, at least 1.
    pub udp_workers: usize,
    /// The sampled record of recent traffic.
    pub traffic: TrafficConfig,
    /// The query log.
    pub query_log: QueryLogConfig,
}

/// The `server.query_log` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLogConfig {
    /// Where the lines go.
    pub output: QueryLogOutput,
    /// Queries logged per million from start; 0: off.
    pub per_million: u32,
    /// Most lines waiting for the writer, at least 1.
    pub queue_lines: u32,
}

/// Where the query log writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryLogOutput {
    /// Standard error.
    Stderr,
    /// A file, appended to; the path as written, relative to the configuration file.
    File(String),
}

/// The `server.traffic` section, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficConfig {
    /// One query in this many is recorded; 0: none.
    pub sample_one_in: u32,
    /// How far back the record reaches.
    pub window: Duration,
    /// Most (service, client network) pairs kept, at least 1.
    pub max_networks: u32,
}

/// The `server.tcp` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// Most connections open at once, at least 1.
    pub max_connections: u32,
    /// Most connections open at once from one client address, at least 1.
    pub max_connections_per_client: u32,
    /// From the first byte of a message to its last.
    pub message_timeout: Duration,
    /// Between messages.
    pub idle_timeout: Duration,
}

/// The `server.rrl` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses per second per client network and response class, at least 1.
    pub responses_per_second: u32,
    /// Every `slip`th limited response is TC, the rest dropped; 0 drops all.
    pub slip: u32,
    /// IPv4 client network prefix, 1 to 32.
    pub ipv4_prefix: u8,
    /// IPv6 client network prefix, 1 to 128.
    pub ipv6_prefix: u8,
    /// Networks never limited.
    pub exempt: Vec<ipnet::IpNet>,
}

/// The `geo` section: paths relative to the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    /// The MaxMind-format database.
    pub database: String,
    /// The country table; `None` means the shipped one.
    pub countries: Option<String>,
}

/// One authoritative zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The apex, lower-case, without the trailing dot.
    pub origin: String,
    /// The master file, relative to the configuration file.
    pub file: String,
}

/// One datacenter.
#[derive(Debug, Clone, PartialEq)]
pub struct DatacenterConfig {
    /// Its name, as used in pools and (later) reports.
    pub name: String,
    /// Where it is.
    pub coordinates: Coordinates,
    /// Its country.
    pub country: CountryCode,
    /// Its continent.
    pub continent: Continent,
    /// Whether it counts as down until it has reported.
    pub require_report: bool,
}

/// How a service ranks its datacenters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// By great-circle distance from the client.
    Nearest,
    /// By the configured `order`, whatever the client.
    Failover,
    /// By weight, split over client networks by a stable hash.
    Weighted,
    /// As `Nearest`, shedding clients from datacenters near or over their capacity.
    NearestWithCapacity,
    /// By a score from reported latency and cost.
    Metric,
    /// By the configured `order`, each datacenter filled to its high watermark before the next.
    Cascade,
    /// By reported utilization, least loaded first (optionally among the nearest only).
    LeastLoaded,
}

impl Policy {
    /// The policy's name as written in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Nearest => "nearest",
            Policy::Failover => "failover",
            Policy::Weighted => "weighted",
            Policy::NearestWithCapacity => "nearest-with-capacity",
            Policy::Metric => "metric",
            Policy::Cascade => "cascade",
            Policy::LeastLoaded => "least-loaded",
        }
    }

    /// Whether the policy skips datacenters over their high watermark (`capacity`).
    pub fn uses_capacity(&self) -> bool {
        matches!(
            self,
            Policy::NearestWithCapacity | Policy::Cascade | Policy::LeastLoaded
        )
    }

    /// Whether the policy ranks by the client's place (a decision map).
    pub fn is_geographic(&self) -> bool {
        matches!(
            self,
            Policy::Nearest | Policy::NearestWithCapacity | Policy::Metric | Policy::LeastLoaded
        )
    }
}

/// One dynamically answered name.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The key of the service in the `services` map.
    pub id: String,
    /// The DNS name, lower-case, without the trailing dot.
    pub name: String,
    /// How datacenters are ranked.
    pub policy: Policy,
    /// TTL of answers in seconds.
    pub ttl: u32,
    /// How many addresses an answer carries.
    pub answers: NonZeroU32,
    /// Indexes into [`ServiceConfig::pools`]: the failover order and the order for clients whose
    /// location is unknown. Always names every pool exactly once.
    pub order: Vec<usize>,
    /// The datacenters serving this name.
    pub pools: Vec<PoolConfig>,
    /// How long a stale datacenter keeps its last known state.
    pub staleness_grace: Duration,
    /// What to answer when every datacenter is ineligible.
    pub all_down: AllDown,
    /// Watermarks (used by `nearest-with-capacity`).
    pub capacity: Watermarks,
    /// Score weights (used by `metric`).
    pub metric: MetricWeights,
    /// Clients matching a geofence may only use its datacenters.
    pub geofences: Vec<ClientRule>,
    /// Clients matching an override prefer its datacenters, in order.
    pub overrides: Vec<ClientRule>,
    /// How long a datacenter that becomes eligible again takes to get back its whole share of
    /// clients; zero: at once.
    pub slow_start: Duration,
    /// A datacenter reporting a higher service latency (milliseconds) is skipped as if full.
    pub max_service_latency_ms: Option<f64>,
    /// How a datacenter's addresses are ordered across answers.
    pub rotation: Rotation,
    /// `least-loaded`: only datacenters at most this many kilometres farther than the nearest
    /// are ranked by load.
    pub max_extra_km: Option<f64>,
}

/// The addresses one datacenter answers for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Index into [`Config::datacenters`].
    pub datacenter: usize,
    /// IPv4 addresses, in answer order.
    pub a: Vec<Ipv4Addr>,
    /// IPv6 addresses, in answer order.
    pub aaaa: Vec<Ipv6Addr>,
    /// Weight under the `weighted` policy.
    pub weight: NonZeroU32,
    /// `nearest`, `nearest-with-capacity`: how this datacenter's catchment is pulled or pushed.
    pub bias: Bias,
}

impl Config {
    /// Parses and validates YAML text.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] with every problem: syntax, duplicate keys, values of the wrong type,
    /// missing sections and invalid values, each reported once.
    pub fn from_yaml_str(text: &str) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        match parse::parse(text, &mut problems) {
            Some((raw, damaged)) => validate(raw, &damaged, problems),
            None => Err(ConfigError { problems }),
        }
    }

    /// Validates the serde mirror, collecting every problem.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] listing every problem found, in file order.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        validate(raw, &Damaged::default(), Vec::new())
    }

    /// The index of the datacenter called `name`.
    pub fn datacenter_index(&self, name: &str) -> Option<usize> {
        self.datacenters.iter().position(|dc| dc.name == name)
    }
}

/// Validates `raw`, adding to `problems` (those found while reading it). Parts listed in
/// `damaged` were present but unreadable: their problems are reported already, so nothing that
/// depends on them is reported again.
fn validate(
    raw: RawConfig,
    damaged: &Damaged,
    mut problems: Vec<Problem>,
) -> Result<Config, ConfigError> {
    let missing = |name: &str| -> bool { !damaged.section(name) };
    if raw.geo.is_none() && missing("geo") {
        problems.push(Problem::new(
            "geo",
            "missing section: the geo database that locates clients (geo: { database: FILE })",
        ));
    }
    if raw.zones.is_none() && missing("zones") {
        problems.push(Problem::new(
            "zones",
            "missing section: at least one zone is needed (zones: [{ origin: NAME, file: FILE }])",
        ));
    }
    if raw.datacenters.is_none() && missing("datacenters") {
        problems.push(Problem::new(
            "datacenters",
            "missing section: at least one datacenter is needed",
        ));
    }
    let server = validate_server(raw.server, &mut problems);
    let geo = raw.geo.map(|geo| GeoConfig {
        database: geo.database,
        countries: geo.countries,
    });
    // Service and directory names are checked against the zones only when every zone could be
    // read: otherwise a name inside a broken zone would be reported a second time.
    let (zones, zones_complete) = match raw.zones {
        Some(zones) => validate_zones(zones, &mut problems),
        None => (Vec::new(), false),
    };
    let zones_known = zones_complete.then_some(zones.as_slice());
    let declared = raw.datacenters.as_ref().and_then(|map| {
        (!damaged.section("datacenters")).then(|| {
            map.keys()
                .chain(&damaged.datacenters)
                .cloned()
                .collect::<HashSet<_>>()
        })
    });
    let datacenters = match raw.datacenters {
        Some(map) if map.is_empty() && damaged.datacenters.is_empty() => {
            problems.push(Problem::new(
                "datacenters",
                "at least one datacenter is needed",
            ));
            Vec::new()
        }
        Some(map) => validate_datacenters(map, &mut problems),
        None => Vec::new(),
    };
    let names = DcNames {
        valid: &datacenters,
        declared,
    };
    let services = validate_services(raw.services, &names, zones_known, &mut problems);
    let control = control::validate_control(raw.control, &names, &mut problems);
    let directory = raw
        .directory
        .map(|d| directory::validate_directory(d, &names, zones_known, &mut problems));
    let state = state::validate_state(raw.state, &mut problems);
    // Datacenters and services are numbered with u16 on the query path.
    if datacenters.len() > usize::from(u16::MAX) {
        problems.push(Problem::new("datacenters", "at most 65535 datacenters"));
    }
    if services.len() > usize::from(u16::MAX) {
        problems.push(Problem::new("services", "at most 65535 services"));
    }
    match geo {
        Some(geo) if problems.is_empty() => Ok(Config {
            server,
            geo,
            zones,
            datacenters,
            services,
            control,
            directory,
            state,
        }),
        _ => Err(ConfigError { problems }),
    }
}

/// Looks datacenters up by name for the parts that refer to them (pools, tokens, the directory).
///
/// A name the file declares counts as known even when its entry is invalid: that entry's own
/// problem is reported once, not again at every pool, token and frontend that names it.
pub(super) struct DcNames<'a> {
    valid: &'a [DatacenterConfig],
    /// Every name the file declares; `None` when the `datacenters` section is missing or
    /// unreadable, so that no name can be called unknown.
    declared: Option<HashSet<String>>,
}

impl DcNames<'_> {
    /// The index of the valid datacenter `name`; a problem at `path` only when the file does not
    /// declare it at all.
    pub(super) fn index(
        &self,
        name: &str,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<usize> {
        if let Some(index) = self.valid.iter().position(|dc| dc.name == name) {
            return Some(index);
        }
        if self
            .declared
            .as_ref()
            .is_some_and(|declared| !declared.contains(name))
        {
            problems.push(Problem::new(path, format!("unknown datacenter {name:?}")));
        }
        None
    }

    /// The valid datacenters, in configuration order.
    pub(super) fn valid(&self) -> &[DatacenterConfig] {
        self.valid
    }
}

fn validate_server(raw: raw::RawServer, problems: &mut Vec<Problem>) -> ServerConfig {
    let listen = if raw.dns.is_empty() {
        vec![raw::DEFAULT_DNS_LISTEN.to_owned()]
    } else {
        raw.dns
    };
    let mut dns = Vec::new();
    for (i, text) in listen.iter().enumerate() {
        match text.parse::<SocketAddr>() {
            Ok(addr) => dns.push(addr),
            Err(_) => problems.push(Problem::new(
                format!("server.dns[{i}]"),
                format!("{text:?} is not an address with a port (ip:port or [ipv6]:port)"),
            )),
        }
    }
    let control_text = raw
        .control
        .unwrap_or_else(|| raw::DEFAULT_CONTROL_LISTEN.to_owned());
    let control = control_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        problems.push(Problem::new(
            "server.control",
            format!("{control_text:?} is not an address with a port (ip:port or [ipv6]:port)"),
        ));
        raw::DEFAULT_CONTROL_LISTEN.parse().expect("valid default")
    });
    if let Some(identity) = &raw.identity
        && (identity.is_empty() || identity.len() > 255)
    {
        problems.push(Problem::new(
            "server.identity",
            "must be 1 to 255 bytes long",
        ));
    }
    let max_udp_payload = raw.max_udp_payload.unwrap_or(raw::DEFAULT_MAX_UDP_PAYLOAD);
    if max_udp_payload < 512 {
        problems.push(Problem::new(
            "server.max_udp_payload",
            format!("{max_udp_payload} is below the DNS minimum of 512"),
        ));
    }
    let mut deprecations = Vec::new();
    if raw.tcp_idle_timeout_seconds.is_some() {
        deprecations.push(Problem::new(
            "server.tcp_idle_timeout_seconds",
            "is deprecated: use server.tcp.idle_timeout_ms",
        ));
    }
    if raw.tcp_idle_timeout_seconds == Some(0) {
        problems.push(Problem::new(
            "server.tcp_idle_timeout_seconds",
            "must be at least 1",
        ));
    }
    if raw.tcp_max_connections.is_some() {
        deprecations.push(Problem::new(
            "server.tcp_max_connections",
            "is deprecated: use server.tcp.max_connections",
        ));
    }
    let mut tcp = raw.tcp;
    tcp.max_connections = tcp.max_connections.or(raw.tcp_max_connections);
    let tcp = validate_tcp(tcp, raw.tcp_idle_timeout_seconds, problems);
    let rrl = raw.rrl.map(|rrl| validate_rrl(rrl, problems));
    if raw
        .version
        .as_ref()
        .is_some_and(|version| version.is_empty() || version.len() > 255)
    {
        problems.push(Problem::new(
            "server.version",
            "must be 1 to 255 bytes long",
        ));
    }
    ServerConfig {
        dns,
        control,
        identity: raw.identity,
        max_udp_payload,
        tcp,
        rrl,
        version: raw.version,
        deprecations,
        udp_workers: match raw.udp_workers.unwrap_or(raw::DEFAULT_UDP_WORKERS) {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        },
        traffic: validate_traffic(&raw.traffic, problems),
        query_log: validate_query_log(&raw.query_log, problems),
    }
}

/// `server.query_log`: a share from 0 to 1 in millionths, a non-empty output, a queue of 1 to a
/// million lines.
fn validate_query_log(raw: &raw::RawQueryLog, problems: &mut Vec<Problem>) -> QueryLogConfig {
    let output = match raw
        .output
        .as_deref()
        .unwrap_or(raw::DEFAULT_QUERY_LOG_OUTPUT)
    {
        "stderr" => QueryLogOutput::Stderr,
        "" => {
            problems.push(Problem::new(
                "server.query_log.output",
                "is empty: say `stderr` or a file",
            ));
            QueryLogOutput::Stderr
        }
        path => QueryLogOutput::File(path.to_owned()),
    };
    let sample = raw.sample.unwrap_or(raw::DEFAULT_QUERY_LOG_SAMPLE);
    let per_million = match per_million(sample) {
        Some(per_million) => per_million,
        None => {
            problems.push(Problem::new(
                "server.query_log.sample",
                format!("{sample} is not 0, or from 0.000001 to 1"),
            ));
            0
        }
    };
    let queue_lines = raw
        .queue_lines
        .unwrap_or(raw::DEFAULT_QUERY_LOG_QUEUE_LINES);
    check_range(
        problems,
        "server.query_log.queue_lines",
        queue_lines,
        1..=1_000_000,
    );
    QueryLogConfig {
        output,
        per_million,
        queue_lines: queue_lines.max(1),
    }
}

/// A share of queries (0 to 1) in millionths; `None` when it is out of range, or so small that
/// it would round to none.
pub fn per_million(share: f64) -> Option<u32> {
    if !(0.0..=1.0).contains(&share) {
        return None;
    }
    // In range, so the product fits.
    let per_million = (share * 1e6).round() as u32;
    (share == 0.0 || per_million > 0).then_some(per_million)
}

/// Adds a problem at `path` when `value` is outside `range`: "V is not from A to B".
fn check_range<T: PartialOrd + fmt::Display>(
    problems: &mut Vec<Problem>,
    path: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) {
    if !range.contains(&value) {
        problems.push(Problem::new(
            path,
            format!("{value} is not from {} to {}", range.start(), range.end()),
        ));
    }
}

/// `server.traffic`: a window of 10 s to a day, at least one network.
fn validate_traffic(raw: &raw::RawTraffic, problems: &mut Vec<Problem>) -> TrafficConfig {
    let window = raw
        .window_seconds
        .unwrap_or(raw::DEFAULT_TRAFFIC_WINDOW_SECONDS);
    check_range(
        problems,
        "server.traffic.window_seconds",
        window,
        10..=86_400,
    );
    let sample_one_in = raw
        .sample_one_in
        .unwrap_or(raw::DEFAULT_TRAFFIC_SAMPLE_ONE_IN);
    check_range(
        problems,
        "server.traffic.sample_one_in",
        sample_one_in,
        0..=1_000_000,
    );
    let max_networks = raw
        .max_networks
        .unwrap_or(raw::DEFAULT_TRAFFIC_MAX_NETWORKS);
    check_range(
        problems,
        "server.traffic.max_networks",
        max_networks,
        1..=10_000_000,
    );
    TrafficConfig {
        sample_one_in,
        window: Duration::from_secs(u64::from(window)),
        max_networks,
    }
}

/// `server.tcp`, with the deprecated `server.tcp_idle_timeout_seconds` as the idle timeout when
/// `tcp.idle_timeout_ms` is not set.
fn validate_tcp(
    raw: raw::RawTcp,
    legacy_idle_seconds: Option<u64>,
    problems: &mut Vec<Problem>,
) -> TcpConfig {
    let mut at_least_one = |field: &str, value: u64| {
        if value == 0 {
            problems.push(Problem::new(
                format!("server.tcp.{field}"),
                "must be at least 1",
            ));
        }
        value
    };
    let max_connections = raw
        .max_connections
        .unwrap_or(raw::DEFAULT_TCP_MAX_CONNECTIONS);
    at_least_one("max_connections", max_connections.into());
    let max_connections_per_client = raw
        .max_connections_per_client
        .unwrap_or(raw::DEFAULT_TCP_MAX_CONNECTIONS_PER_CLIENT);
    at_least_one(
        "max_connections_per_client",
        max_connections_per_client.into(),
    );
    let message_timeout_ms = raw
        .message_timeout_ms
        .unwrap_or(raw::DEFAULT_TCP_MESSAGE_TIMEOUT_MS);
    at_least_one("message_timeout_ms", message_timeout_ms);
    let idle_timeout_ms = raw.idle_timeout_ms.unwrap_or_else(|| {
        legacy_idle_seconds.map_or(raw::DEFAULT_TCP_IDLE_TIMEOUT_MS, |seconds| {
            seconds.saturating_mul(1000)
        })
    });
    at_least_one("idle_timeout_ms", idle_timeout_ms);
    TcpConfig {
        max_connections,
        max_connections_per_client,
        message_timeout: Duration::from_millis(message_timeout_ms),
        idle_timeout: Duration::from_millis(idle_timeout_ms),
    }
}

fn validate_rrl(raw: raw::RawRrl, problems: &mut Vec<Problem>) -> RrlConfig {
    if !(1..=u32::from(u16::MAX)).contains(&raw.responses_per_second) {
        problems.push(Problem::new(
            "server.rrl.responses_per_second",
            format!(
                "{} is not from 1 to 65535 (remove server.rrl to turn limiting off)",
                raw.responses_per_second
            ),
        ));
    }
    let slip = raw.slip.unwrap_or(raw::DEFAULT_RRL_SLIP);
    if slip > 100 {
        problems.push(Problem::new(
            "server.rrl.slip",
            format!("{slip} is more than 100"),
        ));
    }
    let ipv4_prefix = raw.ipv4_prefix.unwrap_or(raw::DEFAULT_RRL_IPV4_PREFIX);
    if !(1..=32).contains(&ipv4_prefix) {
        problems.push(Problem::new(
            "server.rrl.ipv4_prefix",
            format!("{ipv4_prefix} is not a prefix length from 1 to 32"),
        ));
    }
    let ipv6_prefix = raw.ipv6_prefix.unwrap_or(raw::DEFAULT_RRL_IPV6_PREFIX);
    if !(1..=128).contains(&ipv6_prefix) {
        problems.push(Problem::new(
            "server.rrl.ipv6_prefix",
            format!("{ipv6_prefix} is not a prefix length from 1 to 128"),
        ));
    }
    RrlConfig {
        responses_per_second: raw.responses_per_second,
        slip,
        ipv4_prefix,
        ipv6_prefix,
        exempt: parse_networks("server.rrl.exempt", Some(raw.exempt), &[], problems),
    }
}

/// The valid zones, and whether every zone was valid.
fn validate_zones(raw: Vec<raw::RawZone>, problems: &mut Vec<Problem>) -> (Vec<ZoneConfig>, bool) {
    let n_zones = raw.len();
    let mut zones = Vec::new();
    let mut seen = HashSet::new();
    for (i, zone) in raw.into_iter().enumerate() {
        match normalize_name(&zone.origin) {
            Ok(origin) => {
                if !seen.insert(origin.clone()) {
                    problems.push(Problem::new(
                        format!("zones[{i}].origin"),
                        format!("zone {origin} is configured twice"),
                    ));
                }
                zones.push(ZoneConfig {
                    origin,
                    file: zone.file,
                });
            }
            Err(message) => problems.push(Problem::new(
                format!("zones[{i}].origin"),
                format!("{:?}: {message}", zone.origin),
            )),
        }
    }
    if n_zones == 0 {
        problems.push(Problem::new("zones", "at least one zone is needed"));
    }
    let complete = zones.len() == n_zones;
    (zones, complete)
}

fn validate_datacenters(
    raw: indexmap::IndexMap<String, raw::RawDatacenter>,
    problems: &mut Vec<Problem>,
) -> Vec<DatacenterConfig> {
    let mut datacenters = Vec::new();
    for (name, dc) in raw {
        let path = format!("datacenters.{name}");
        if !is_datacenter_name(&name) {
            problems.push(Problem::new(
                &path,
                "a datacenter name is 1 to 63 characters of a-z, 0-9, '-' and '_'",
            ));
        }
        let coordinates = Coordinates::new(dc.latitude, dc.longitude);
        if coordinates.is_none() {
            problems.push(Problem::new(
                &path,
                format!(
                    "latitude {} / longitude {} out of range (-90..90, -180..180)",
                    dc.latitude, dc.longitude
                ),
            ));
        }
        let country = dc.country.parse::<CountryCode>();
        if let Err(message) = country {
            problems.push(Problem::new(
                format!("{path}.country"),
                format!("{:?}: {message}", dc.country),
            ));
        }
        let continent = dc.continent.parse::<Continent>();
        if let Err(message) = continent {
            problems.push(Problem::new(
                format!("{path}.continent"),
                format!("{:?}: {message}", dc.continent),
            ));
        }
        if let (Some(coordinates), Ok(country), Ok(continent)) = (coordinates, country, continent) {
            datacenters.push(DatacenterConfig {
                name,
                coordinates,
                country,
                continent,
                require_report: dc.require_report.unwrap_or(false),
            });
        }
    }
    datacenters
}

/// Validates the services; `zones` is `None` when some zone is invalid, and then names are not
/// checked against the zones.
fn validate_services(
    raw: indexmap::IndexMap<String, raw::RawService>,
    datacenters: &DcNames<'_>,
    zones: Option<&[ZoneConfig]>,
    problems: &mut Vec<Problem>,
) -> Vec<ServiceConfig> {
    let mut services = Vec::new();
    let mut names = HashSet::new();
    for (id, service) in raw {
        let path = format!("services.{id}");
        let before = problems.len();
        let name = match normalize_name(&service.name) {
            Ok(name) => {
                if let Some(zones) = zones
                    && !zones.iter().any(|zone| is_in_zone(&name, &zone.origin))
                {
                    problems.push(Problem::new(
                        format!("{path}.name"),
                        format!("{name} is not inside any configured zone"),
                    ));
                }
                if !names.insert(name.clone()) {
                    problems.push(Problem::new(
                        format!("{path}.name"),
                        format!("{name} is answered by another service already"),
                    ));
                }
                name
            }
            Err(message) => {
                problems.push(Problem::new(
                    format!("{path}.name"),
                    format!("{:?}: {message}", service.name),
                ));
                String::new()
            }
        };
        let policy = match service.policy.as_str() {
            "nearest" => Policy::Nearest,
            "failover" => Policy::Failover,
            "weighted" => Policy::Weighted,
            "nearest-with-capacity" => Policy::NearestWithCapacity,
            "metric" => Policy::Metric,
            "cascade" => Policy::Cascade,
            "least-loaded" => Policy::LeastLoaded,
            other => {
                problems.push(Problem::new(
                    format!("{path}.policy"),
                    format!(
                        "unknown policy {other:?} (nearest, nearest-with-capacity, metric, failover, weighted, cascade, least-loaded)"
                    ),
                ));
                Policy::Nearest
            }
        };
        let ttl = service.ttl.unwrap_or(raw::DEFAULT_SERVICE_TTL);
        if ttl > i32::MAX as u32 {
            problems.push(Problem::new(
                format!("{path}.ttl"),
                format!("{ttl} is above the DNS maximum of 2147483647 (RFC 2181 §8)"),
            ));
        }
        let answers = NonZeroU32::new(service.answers.unwrap_or(raw::DEFAULT_ANSWERS));
        if answers.is_none() {
            problems.push(Problem::new(
                format!("{path}.answers"),
                "must be at least 1",
            ));
        }
        // The order refers to pools by name, so it is checked against the names as written even
        // when a pool itself is invalid.
        let pool_names: Vec<String> = service.pools.keys().cloned().collect();
        let raw_balance = policy::RawBalance {
            slow_start_seconds: service.slow_start_seconds,
            max_service_latency_ms: service.max_service_latency_ms,
            rotation: service.rotation.clone(),
            max_extra_km: service.max_extra_km,
        };
        let pools = validate_pools(&path, service.pools, datacenters, problems);
        let order = validate_order(&path, service.order, &pool_names, problems);
        let all_down = policy::validate_all_down(&path, service.all_down.as_deref(), problems);
        let capacity = policy::validate_capacity(&path, service.capacity.as_ref(), problems);
        let metric = policy::validate_metric(&path, service.metric.as_ref(), problems);
        let geofences = policy::validate_rules(
            &format!("{path}.geofence"),
            &service.geofence,
            &pool_names,
            false,
            problems,
        );
        let overrides = policy::validate_rules(
            &format!("{path}.overrides"),
            &service.overrides,
            &pool_names,
            true,
            problems,
        );
        check_rules_apply(&path, policy, &geofences, &overrides, problems);
        let balance = policy::validate_balance(&path, policy, &raw_balance, &pools, problems);
        if problems.len() == before {
            services.push(ServiceConfig {
                id,
                name,
                policy,
                ttl,
                answers: answers.expect("checked above"),
                order,
                pools,
                staleness_grace: policy::validate_grace(service.staleness_grace_seconds),
                all_down,
                capacity,
                metric,
                geofences,
                overrides,
                slow_start: balance.slow_start,
                max_service_latency_ms: balance.max_service_latency_ms,
                rotation: balance.rotation,
                max_extra_km: balance.max_extra_km,
            });
        }
    }
    services
}

/// `failover` and `weighted` do not place clients, so geofences and country or continent
/// overrides would be silently ignored: a geofence that does not fence is refused instead.
fn check_rules_apply(
    path: &str,
    policy: Policy,
    geofences: &[ClientRule],
    overrides: &[ClientRule],
    problems: &mut Vec<Problem>,
) {
    if !matches!(
        policy,
        Policy::Failover | Policy::Weighted | Policy::Cascade
    ) {
        return;
    }
    let name = policy.name();
    if !geofences.is_empty() {
        problems.push(Problem::new(
            format!("{path}.geofence"),
            format!(
                "the {name} policy does not place clients, so it cannot apply geofences (use nearest, nearest-with-capacity, metric or least-loaded)"
            ),
        ));
    }
    for (i, rule) in overrides.iter().enumerate() {
        if !rule.countries.is_empty() || !rule.continents.is_empty() {
            problems.push(Problem::new(
                format!("{path}.overrides[{i}]"),
                format!(
                    "the {name} policy does not place clients, so it cannot apply countries or continents (cidrs only)"
                ),
            ));
        }
    }
}

fn validate_pools(
    path: &str,
    raw: indexmap::IndexMap<String, raw::RawPool>,
    datacenters: &DcNames<'_>,
    problems: &mut Vec<Problem>,
) -> Vec<PoolConfig> {
    if raw.is_empty() {
        problems.push(Problem::new(
            format!("{path}.pools"),
            "a service needs at least one datacenter",
        ));
    }
    if raw.len() > MAX_POOL_SIZE {
        problems.push(Problem::new(
            format!("{path}.pools"),
            format!("{} datacenters, at most {MAX_POOL_SIZE} allowed", raw.len()),
        ));
    }
    let mut pools = Vec::new();
    for (dc_name, pool) in raw {
        let pool_path = format!("{path}.pools.{dc_name}");
        let datacenter = datacenters.index(&dc_name, &pool_path, problems);
        let a = parse_addresses::<Ipv4Addr>(&pool_path, "a", "IPv4", &pool.a, problems);
        let aaaa = parse_addresses::<Ipv6Addr>(&pool_path, "aaaa", "IPv6", &pool.aaaa, problems);
        if pool.a.is_empty() && pool.aaaa.is_empty() {
            problems.push(Problem::new(
                &pool_path,
                "a pool needs at least one address (a or aaaa)",
            ));
        }
        let weight = NonZeroU32::new(pool.weight.unwrap_or(1));
        if weight.is_none() {
            problems.push(Problem::new(
                format!("{pool_path}.weight"),
                "must be at least 1 (remove the pool to send it nothing)",
            ));
        }
        let bias = policy::validate_bias(&pool_path, pool.bias.as_deref(), problems);
        if let (Some(datacenter), Some(weight)) = (datacenter, weight) {
            pools.push(PoolConfig {
                datacenter,
                a,
                aaaa,
                weight,
                bias,
            });
        }
    }
    pools
}

pub(super) fn parse_addresses<T: std::str::FromStr>(
    pool_path: &str,
    field: &str,
    family: &str,
    texts: &[String],
    problems: &mut Vec<Problem>,
) -> Vec<T> {
    let mut addresses = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match text.parse::<T>() {
            Ok(addr) => addresses.push(addr),
            Err(_) => problems.push(Problem::new(
                format!("{pool_path}.{field}[{i}]"),
                format!("{text:?} is not an {family} address"),
            )),
        }
    }
    addresses
}

fn validate_order(
    path: &str,
    raw: Option<Vec<String>>,
    pool_names: &[String],
    problems: &mut Vec<Problem>,
) -> Vec<usize> {
    let Some(names) = raw else {
        return (0..pool_names.len()).collect();
    };
    let mut order = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let pool = pool_names.iter().position(|pool| pool == name);
        match pool {
            Some(pool) if order.contains(&pool) => problems.push(Problem::new(
                format!("{path}.order[{i}]"),
                format!("{name:?} is listed twice"),
            )),
            Some(pool) => order.push(pool),
            None => problems.push(Problem::new(
                format!("{path}.order[{i}]"),
                format!("{name:?} is not one of this service's pools"),
            )),
        }
    }
    // Pools the order leaves out come last, in pool order, so every pool stays reachable.
    for pool in 0..pool_names.len() {
        if !order.contains(&pool) {
            order.push(pool);
        }
    }
    order
}

/// Parses a list of networks (`address/prefix`) at `path`, or `defaults` when the list is
/// absent; host bits are cleared.
pub(super) fn parse_networks(
    path: &str,
    texts: Option<Vec<String>>,
    defaults: &[&str],
    problems: &mut Vec<Problem>,
) -> Vec<ipnet::IpNet> {
    let texts = texts.unwrap_or_else(|| defaults.iter().map(|s| (*s).to_owned()).collect());
    let mut networks = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match text.parse::<ipnet::IpNet>() {
            Ok(net) => networks.push(net.trunc()),
            Err(_) => problems.push(Problem::new(
                format!("{path}[{i}]"),
                format!("{text:?} is not a network (address/prefix)"),
            )),
        }
    }
    networks
}

/// Lower-cases a domain name, drops one trailing dot and checks its shape (RFC 1035 §2.3.4:
/// labels of 1 to 63 octets, 253 characters in all).
///
/// # Errors
///
/// What is wrong with the name.
pub fn normalize_name(name: &str) -> Result<String, &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() {
        return Err("the root zone cannot be served");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("every label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("labels may hold only letters, digits, '-' and '_'");
        }
    }
    Ok(name)
}

/// Whether normalized `name` is `origin` or below it.
pub fn is_in_zone(name: &str, origin: &str) -> bool {
    name == origin
        || name
            .strip_suffix(origin)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

fn is_datacenter_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests;
