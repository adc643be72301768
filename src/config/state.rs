//! The `state` section, validated: the embedded store, or a fleet's shared state in etcd.

use std::path::PathBuf;

use super::Problem;
use super::raw::{self, RawEtcd, RawState};

/// The environment variable that points an instance at etcd without editing its configuration:
/// comma-separated client URLs. It replaces `state.etcd.endpoints` and selects the etcd backend.
pub const ETCD_ENDPOINTS_ENV: &str = "MERIDIAN_ETCD_ENDPOINTS";

/// Where the control plane's state is kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateConfig {
    /// The redb file under `--state-dir` (or memory without it): one instance.
    #[default]
    Embedded,
    /// A fleet's shared state in etcd; `--state-dir` keeps the local copy for warm starts.
    Etcd(EtcdConfig),
}

/// How to reach the fleet's etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the members (`http://` or, with `tls`, `https://`).
    pub endpoints: Vec<String>,
    /// Key prefix of the fleet's state, without a trailing `/`.
    pub prefix: String,
    /// Client TLS, when the members require it.
    pub tls: Option<EtcdTls>,
    /// etcd user name and password.
    pub user: Option<(String, String)>,
}

/// Client TLS files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The certificate authority of the members' certificates.
    pub ca: Option<PathBuf>,
    /// This client's certificate and key, for client-certificate authentication.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl StateConfig {
    /// This configuration with the endpoints of [`ETCD_ENDPOINTS_ENV`] (`value`, when set and not
    /// blank) in place of the file's: the etcd backend, with the file's prefix, TLS and user
    /// when it names etcd, else the defaults.
    pub fn with_endpoints_override(self, value: Option<&str>) -> StateConfig {
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
            return self;
        };
        let endpoints = split_endpoints(value);
        match self {
            StateConfig::Etcd(etcd) => StateConfig::Etcd(EtcdConfig { endpoints, ..etcd }),
            StateConfig::Embedded => StateConfig::Etcd(EtcdConfig {
                endpoints,
                prefix: raw::DEFAULT_ETCD_PREFIX.to_owned(),
                tls: None,
                user: None,
            }),
        }
    }
}

/// `a, b,c` as `[a, b, c]`, blanks dropped.
fn split_endpoints(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn validate_state(raw: Option<RawState>, problems: &mut Vec<Problem>) -> StateConfig {
    let Some(raw) = raw else {
        return StateConfig::Embedded;
    };
    match raw.backend.as_deref().unwrap_or("embedded") {
        "embedded" => StateConfig::Embedded,
        "etcd" => match raw.etcd {
            Some(etcd) => StateConfig::Etcd(validate_etcd(etcd, problems)),
            None => {
                problems.push(Problem::new(
                    "state.etcd",
                    "missing section: backend etcd needs its endpoints (etcd: { endpoints: [URL, ...] })",
                ));
                StateConfig::Embedded
            }
        },
        other => {
            problems.push(Problem::new(
                "state.backend",
                format!("unknown backend {other:?} (expected embedded or etcd)"),
            ));
            StateConfig::Embedded
        }
    }
}

fn validate_etcd(raw: RawEtcd, problems: &mut Vec<Problem>) -> EtcdConfig {
    if raw.endpoints.is_empty() {
        problems.push(Problem::new(
            "state.etcd.endpoints",
            "at least one endpoint is needed (http://host:2379)",
        ));
    }
    for (i, endpoint) in raw.endpoints.iter().enumerate() {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            problems.push(Problem::new(
                format!("state.etcd.endpoints[{i}]"),
                format!("{endpoint:?} is not an http:// or https:// URL"),
            ));
        }
    }
    let prefix = raw
        .prefix
        .unwrap_or_else(|| raw::DEFAULT_ETCD_PREFIX.to_owned());
    if !prefix.starts_with('/') || prefix.len() < 2 {
        problems.push(Problem::new(
            "state.etcd.prefix",
            format!("{prefix:?} must start with / and name something (e.g. /meridian)"),
        ));
    }
    let prefix = prefix.trim_end_matches('/').to_owned();
    let tls = raw.tls.map(|tls| {
        let identity = match (tls.cert, tls.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                problems.push(Problem::new(
                    "state.etcd.tls",
                    "cert and key go together: give both or neither",
                ));
                None
            }
        };
        EtcdTls {
            ca: tls.ca,
            identity,
        }
    });
    let user = match (raw.user, raw.password) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        _ => {
            problems.push(Problem::new(
                "state.etcd.user",
                "user and password go together: give both or neither",
            ));
            None
        }
    };
    EtcdConfig {
        endpoints: raw.endpoints,
        prefix,
        tls,
        user,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_etcd(endpoints: &[&str]) -> RawState {
        RawState {
            backend: Some("etcd".to_owned()),
            etcd: Some(RawEtcd {
                endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
                ..RawEtcd::default()
            }),
        }
    }

    #[test]
    fn absent_is_embedded_and_etcd_takes_its_defaults() {
        let mut problems = Vec::new();
        assert_eq!(validate_state(None, &mut problems), StateConfig::Embedded);
        let etcd = validate_state(Some(raw_etcd(&["http://127.0.0.1:2379"])), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            etcd,
            StateConfig::Etcd(EtcdConfig {
                endpoints: vec!["http://127.0.0.1:2379".to_owned()],
                prefix: "/meridian".to_owned(),
                tls: None,
                user: None,
            })
        );
    }

    #[test]
    fn bad_settings_are_each_reported_with_their_path() {
        let mut problems = Vec::new();
        let mut raw = raw_etcd(&["127.0.0.1:2379"]);
        if let Some(etcd) = &mut raw.etcd {
            etcd.prefix = Some("meridian".to_owned());
            etcd.user = Some("root".to_owned());
        }
        validate_state(Some(raw), &mut problems);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "state.etcd.endpoints[0]",
                "state.etcd.prefix",
                "state.etcd.user"
            ]
        );
        let mut problems = Vec::new();
        let unknown = RawState {
            backend: Some("zookeeper".to_owned()),
            etcd: None,
        };
        validate_state(Some(unknown), &mut problems);
        assert_eq!(problems[0].path, "state.backend");
    }

    #[test]
    fn the_environment_selects_etcd_and_replaces_the_endpoints() {
        let env = Some(" http://a:2379, http://b:2379 ,");
        let StateConfig::Etcd(etcd) = StateConfig::Embedded.with_endpoints_override(env) else {
            panic!("the variable selects etcd");
        };
        assert_eq!(etcd.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(etcd.prefix, "/meridian");
        assert_eq!(
            StateConfig::Embedded.with_endpoints_override(Some("  ")),
            StateConfig::Embedded
        );
    }
}
