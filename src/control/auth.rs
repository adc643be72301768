//! Bearer tokens: who is calling, what they may do, and how often.
//!
//! Tokens are configured as SHA-256 hashes; a request's token is hashed and compared in
//! constant time (`subtle`). Each token has its own rate limit (governor), kept across reloads.

use std::num::NonZeroU32;
use std::sync::Mutex;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ControlConfig, RateLimit, Role};

use super::error::ApiError;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's configured name.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// The operator role.
    Operator,
    /// The datacenter's own token, or an operator.
    ReportFor(&'a str),
    /// A frontend or an operator: reading the user directory.
    Directory,
}

/// Per-token rate limiting.
pub struct Limiter {
    /// A `Mutex` around the limiter only to swap it when a reload changes the quota; checks hold
    /// it for a moment and never across `.await`. The limiter itself is lock-free inside.
    limiter: Mutex<(RateLimit, DefaultKeyedRateLimiter<String>)>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

impl Default for Limiter {
    fn default() -> Self {
        let limit = RateLimit {
            per_second: NonZeroU32::MIN,
            burst: NonZeroU32::MIN,
        };
        Limiter {
            limiter: Mutex::new((limit, keyed(limit))),
        }
    }
}

fn keyed(limit: RateLimit) -> DefaultKeyedRateLimiter<String> {
    RateLimiter::keyed(Quota::per_second(limit.per_second).allow_burst(limit.burst))
}

impl Limiter {
    /// Counts one request of `caller` against `limit`.
    ///
    /// # Errors
    ///
    /// 429 with the seconds to wait.
    pub fn check(&self, caller: &Caller, limit: RateLimit) -> Result<(), ApiError> {
        let mut guard = self.limiter.lock().expect("limiter lock is never poisoned");
        if guard.0 != limit {
            *guard = (limit, keyed(limit));
        }
        match guard.1.check_key(&caller.name) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                Err(ApiError::rate_limited(wait.as_secs_f64().ceil() as u64))
            }
        }
    }
}

/// Identifies the caller from the `Authorization: Bearer` header.
///
/// # Errors
///
/// 401 when the header is missing, malformed or names no configured token.
pub(crate) fn authenticate(
    headers: &HeaderMap,
    control: &ControlConfig,
) -> Result<Caller, ApiError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not \"Bearer <token>\"")
        })?;
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // Compare against every token, in constant time each, so timing says nothing about which
    // (or whether one) matched early.
    let mut found = None;
    for configured in &control.tokens {
        if bool::from(configured.sha256.ct_eq(&hash)) {
            found = Some(configured);
        }
    }
    let configured = found.ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    Ok(Caller {
        name: configured.name.clone(),
        role: configured.role.clone(),
    })
}

impl Caller {
    /// Checks that the caller may do what `need` asks.
    ///
    /// # Errors
    ///
    /// 403 naming the role needed.
    pub fn require(&self, need: Need<'_>) -> Result<(), ApiError> {
        let allowed = match (&self.role, need) {
            (Role::Operator, _) => true,
            (Role::Datacenter(own), Need::ReportFor(dc)) => own == dc,
            (Role::Frontend, Need::Directory) => true,
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(match need {
                Need::Operator => format!(
                    "token {:?} ({}) is not an operator token",
                    self.name, self.role
                ),
                Need::Directory => format!(
                    "token {:?} ({}) may not read the user directory (frontend or operator)",
                    self.name, self.role
                ),
                Need::ReportFor(dc) => format!(
                    "token {:?} ({}) may not report for datacenter {dc:?}",
                    self.name, self.role
                ),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn control() -> ControlConfig {
        Config::from_yaml_str(crate::config::EXAMPLE_CONFIG)
            .expect("example")
            .control
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        headers
    }

    #[test]
    fn tokens_map_to_roles() {
        let control = control();
        let operator = authenticate(&bearer("example-operator-token"), &control).unwrap();
        assert_eq!(operator.role, Role::Operator);
        let eu = authenticate(&bearer("example-eu-west-token"), &control).unwrap();
        assert_eq!(eu.role, Role::Datacenter("eu-west".into()));
        assert!(eu.require(Need::ReportFor("eu-west")).is_ok());
        assert_eq!(
            eu.require(Need::ReportFor("us-east")).unwrap_err().status,
            403
        );
        assert_eq!(eu.require(Need::Operator).unwrap_err().status, 403);
        assert!(operator.require(Need::ReportFor("us-east")).is_ok());
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_unauthorized() {
        let control = control();
        for headers in [HeaderMap::new(), bearer("nope"), bearer("")] {
            assert_eq!(authenticate(&headers, &control).unwrap_err().status, 401);
        }
        let mut basic = HeaderMap::new();
        basic.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(authenticate(&basic, &control).unwrap_err().status, 401);
    }

    #[test]
    fn rate_limits_are_per_token() {
        let limiter = Limiter::default();
        let limit = RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        };
        let a = Caller {
            name: "a".into(),
            role: Role::Operator,
        };
        let b = Caller {
            name: "b".into(),
            role: Role::Operator,
        };
        assert!(limiter.check(&a, limit).is_ok());
        assert!(limiter.check(&a, limit).is_ok());
        let error = limiter.check(&a, limit).unwrap_err();
        assert_eq!(error.status, 429);
        assert!(error.retry_after.is_some());
        assert!(
            limiter.check(&b, limit).is_ok(),
            "another token has its own budget"
        );
    }
}
