//! The `control` section, validated: report freshness, request limits and access tokens.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{self, RawControl};
use super::{DcNames, Problem};

/// The control plane's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    /// Freshness of a report that does not set its own TTL.
    pub report_ttl: Duration,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Per-token rate limit.
    pub rate_limit: RateLimit,
    /// Per-client-address rate limit of every request, checked before authentication.
    pub address_rate_limit: RateLimit,
    /// Directory lookups' own rate limit, per address and per token.
    pub directory_rate_limit: RateLimit,
    /// Time a client has to send a request head (and the longest idle wait between requests).
    pub header_read_timeout: Duration,
    /// Time a connection may pass with no I/O before it is closed.
    pub idle_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Networks allowed to ask `_explain.<name>` TXT queries.
    pub explain_allow: Vec<IpNet>,
    /// Access tokens.
    pub tokens: Vec<TokenConfig>,
}

/// A per-token rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

/// One access token: its holder, the SHA-256 of its secret, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The holder's name, written to the audit log.
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// What the token may do.
    pub role: Role,
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Report for this one datacenter.
    Datacenter(String),
    /// Drain, reload, read everything.
    Operator,
    /// Read the user directory.
    Frontend,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Datacenter(dc) => write!(f, "datacenter:{dc}"),
            Role::Operator => f.write_str("operator"),
            Role::Frontend => f.write_str("frontend"),
        }
    }
}

impl ControlConfig {
    /// Whether `ip` may ask `_explain.` TXT queries.
    pub fn explain_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.explain_allow.iter().any(|net| net.contains(&ip))
    }
}

pub(super) fn validate_control(
    raw: RawControl,
    datacenters: &DcNames<'_>,
    problems: &mut Vec<Problem>,
) -> ControlConfig {
    let report_ttl = raw
        .report_ttl_seconds
        .unwrap_or(raw::DEFAULT_REPORT_TTL_SECONDS);
    if report_ttl == 0 {
        problems.push(Problem::new(
            "control.report_ttl_seconds",
            "must be at least 1",
        ));
    }
    let body_limit = raw
        .body_limit_bytes
        .unwrap_or(raw::DEFAULT_BODY_LIMIT_BYTES);
    if body_limit < 1024 {
        problems.push(Problem::new(
            "control.body_limit_bytes",
            format!("{body_limit} is too small for a report (at least 1024)"),
        ));
    }
    let rate_limit = parse_rate_limit(
        "control.rate_limit",
        raw.rate_limit.as_ref(),
        (raw::DEFAULT_RATE_PER_SECOND, raw::DEFAULT_RATE_BURST),
        problems,
    );
    let address_rate_limit = parse_rate_limit(
        "control.address_rate_limit",
        raw.address_rate_limit.as_ref(),
        (
            raw::DEFAULT_ADDRESS_RATE_PER_SECOND,
            raw::DEFAULT_ADDRESS_RATE_BURST,
        ),
        problems,
    );
    let directory_rate_limit = parse_rate_limit(
        "control.directory_rate_limit",
        raw.directory_rate_limit.as_ref(),
        (
            raw::DEFAULT_DIRECTORY_RATE_PER_SECOND,
            raw::DEFAULT_DIRECTORY_RATE_BURST,
        ),
        problems,
    );
    let mut seconds = |path: &str, value: Option<u64>, default: u64| {
        let value = value.unwrap_or(default);
        if value == 0 {
            problems.push(Problem::new(path, "must be at least 1"));
        }
        Duration::from_secs(value.max(1))
    };
    let header_read_timeout = seconds(
        "control.header_read_timeout_seconds",
        raw.header_read_timeout_seconds,
        raw::DEFAULT_HEADER_READ_TIMEOUT_SECONDS,
    );
    let idle_timeout = seconds(
        "control.idle_timeout_seconds",
        raw.idle_timeout_seconds,
        raw::DEFAULT_IDLE_TIMEOUT_SECONDS,
    );
    let max_connections = raw.max_connections.unwrap_or(raw::DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        problems.push(Problem::new(
            "control.max_connections",
            "must be at least 1",
        ));
    }
    let explain_allow = super::parse_networks(
        "control.explain_allow",
        raw.explain_allow,
        raw::DEFAULT_EXPLAIN_ALLOW,
        problems,
    );
    let mut tokens = Vec::new();
    for (i, token) in raw.tokens.into_iter().enumerate() {
        let path = format!("control.tokens[{i}]");
        let sha256 = parse_sha256(&token.sha256);
        if sha256.is_none() {
            problems.push(Problem::new(
                format!("{path}.sha256"),
                "not a SHA-256 in hex (64 hex digits)",
            ));
        }
        let role = match token.role.as_str() {
            "operator" => Some(Role::Operator),
            "frontend" => Some(Role::Frontend),
            other => match other.strip_prefix("datacenter:") {
                Some(dc) => datacenters
                    .index(dc, &format!("{path}.role"), problems)
                    .map(|_| Role::Datacenter(dc.to_owned())),
                None => {
                    problems.push(Problem::new(
                        format!("{path}.role"),
                        format!("unknown role {other:?} (operator, frontend, datacenter:<name>)"),
                    ));
                    None
                }
            },
        };
        if token.name.is_empty() {
            problems.push(Problem::new(format!("{path}.name"), "must not be empty"));
        }
        if tokens.iter().any(|t: &TokenConfig| t.name == token.name) {
            problems.push(Problem::new(
                format!("{path}.name"),
                format!("{:?} is used by another token", token.name),
            ));
        }
        if let (Some(sha256), Some(role)) = (sha256, role) {
            if tokens.iter().any(|t: &TokenConfig| t.sha256 == sha256) {
                problems.push(Problem::new(
                    format!("{path}.sha256"),
                    "the same token is configured twice",
                ));
            }
            tokens.push(TokenConfig {
                name: token.name,
                sha256,
                role,
            });
        }
    }
    ControlConfig {
        report_ttl: Duration::from_secs(u64::from(report_ttl)),
        body_limit,
        rate_limit,
        address_rate_limit,
        directory_rate_limit,
        header_read_timeout,
        idle_timeout,
        max_connections: max_connections.max(1),
        explain_allow,
        tokens,
    }
}

/// A rate limit from the file (or `default`), both numbers at least 1.
fn parse_rate_limit(
    path: &str,
    raw: Option<&raw::RawRateLimit>,
    default: (u32, u32),
    problems: &mut Vec<Problem>,
) -> RateLimit {
    let (per_second, burst) = raw.map_or(default, |limit| (limit.per_second, limit.burst));
    match (NonZeroU32::new(per_second), NonZeroU32::new(burst)) {
        (Some(per_second), Some(burst)) => RateLimit { per_second, burst },
        _ => {
            problems.push(Problem::new(
                path,
                "per_second and burst must be at least 1",
            ));
            RateLimit {
                per_second: NonZeroU32::MIN,
                burst: NonZeroU32::MIN,
            }
        }
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
