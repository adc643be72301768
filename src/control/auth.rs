//! Bearer tokens: who is calling, what they may do, and how often.
//!
//! Tokens are configured as SHA-256 hashes; a request's token is hashed and compared in
//! constant time (`subtle`). Every request is first counted against its client address's rate
//! limit, and once authorized against its token's (governor); the limiters are kept across
//! reloads.

use std::cell::RefCell;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

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

/// Rate limits: per client address (every request, before authentication) and per token (after
/// authorization, so a token is never charged for what it was not allowed to do), with
/// directory lookups counted apart from everything else on both.
#[derive(Default)]
pub struct Limiter {
    tokens: Keyed<String>,
    addresses: Keyed<AddressKey>,
    token_lookups: Keyed<String>,
    address_lookups: Keyed<AddressKey>,
}

/// Which budget a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Directory lookups (`GET /v1/users/{id}`): `control.directory_rate_limit`.
    Lookups,
    /// Everything else: `control.address_rate_limit` and `control.rate_limit`.
    General,
}

/// A client address as rate limits see it: IPv4 addresses one by one, IPv6 by /64, since one
/// client usually holds a whole /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                AddressKey(IpAddr::V6(prefix.into()))
            }
            v4 => AddressKey(v4),
        }
    }
}

/// One keyed limiter and the quota it was built for.
struct Keyed<K: Hash + Eq + Clone> {
    /// A `Mutex` around the limiter only to swap it when a reload changes the quota; checks hold
    /// it for a moment and never across `.await`. The limiter itself is lock-free inside.
    limiter: Mutex<(RateLimit, DefaultKeyedRateLimiter<K>)>,
    /// Checks since the limiter last forgot idle keys.
    checks: AtomicU32,
}

/// How many checks pass between two sweeps of keys whose budget is full again, so that a flood
/// from many addresses does not grow the limiter's map without bound.
const SWEEP_EVERY: u32 = 4096;

impl<K: Hash + Eq + Clone> Default for Keyed<K> {
    fn default() -> Self {
        let limit = RateLimit {
            per_second: NonZeroU32::MIN,
            burst: NonZeroU32::MIN,
        };
        Keyed {
            limiter: Mutex::new((limit, keyed(limit))),
            checks: AtomicU32::new(0),
        }
    }
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    /// Counts one request of `key` against `limit`; on refusal, the seconds to wait.
    fn check(&self, key: &K, limit: RateLimit) -> Result<(), u64> {
        let mut guard = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.0 != limit {
            *guard = (limit, keyed(limit));
        }
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            guard.1.retain_recent();
        }
        guard.1.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs_f64().ceil() as u64
        })
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

fn keyed<K: Hash + Eq + Clone>(limit: RateLimit) -> DefaultKeyedRateLimiter<K> {
    RateLimiter::keyed(Quota::per_second(limit.per_second).allow_burst(limit.burst))
}

impl Limiter {
    /// Counts one request of `caller` against its token's budget.
    ///
    /// # Errors
    ///
    /// 429 with the seconds to wait.
    pub fn check(
        &self,
        caller: &Caller,
        control: &ControlConfig,
        budget: Budget,
    ) -> Result<(), ApiError> {
        let res = match budget {
            Budget::General => self.tokens.check(&caller.name, control.rate_limit),
            Budget::Lookups => self
                .token_lookups
                .check(&caller.name, control.directory_rate_limit),
        };
        res.map_err(ApiError::rate_limited)
    }

    /// Counts one request from `ip` against its address's budget, before anything else.
    ///
    /// # Errors
    ///
    /// 429 with the seconds to wait, naming the address's limit.
    pub fn check_address(
        &self,
        ip: IpAddr,
        control: &ControlConfig,
        budget: Budget,
    ) -> Result<(), ApiError> {
        let key = AddressKey::of(ip);
        let res = match budget {
            Budget::General => self.addresses.check(&key, control.address_rate_limit),
            Budget::Lookups => self
                .address_lookups
                .check(&key, control.directory_rate_limit),
        };
        res.map_err(|wait| ApiError {
            message: "too many requests from this address".to_owned(),
            ..ApiError::rate_limited(wait)
        })
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
    // The access log names the token; outside a request (unit tests) there is no slot.
    let _ = CALLER.try_with(|slot| slot.replace(Some(configured.name.clone())));
    Ok(Caller {
        name: configured.name.clone(),
        role: configured.role.clone(),
    })
}

tokio::task_local! {
    /// The name of the token that authenticated the current request, for its access log line.
    /// A task-local rather than a request extension because handlers authenticate from the
    /// headers alone; the request's middleware and its handler run in one task, and
    /// `RefCell` suffices since nothing else touches the slot.
    static CALLER: RefCell<Option<String>>;
}

/// Runs `request` (a control-plane request's future) with a slot for its caller's token name,
/// and returns its output with the name, if the request authenticated.
pub(crate) async fn with_caller_slot<T>(request: impl Future<Output = T>) -> (T, Option<String>) {
    CALLER
        .scope(RefCell::new(None), async {
            let output = request.await;
            (output, CALLER.with(RefCell::take))
        })
        .await
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

    #[test]
    fn addresses_are_keyed_by_ipv4_address_and_ipv6_64() {
        let key = |ip: &str| AddressKey::of(ip.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    }
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
        let mut limit = control();
        limit.rate_limit = RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        };
        let limit = &limit;
        let a = Caller {
            name: "a".into(),
            role: Role::Operator,
        };
        let b = Caller {
            name: "b".into(),
            role: Role::Operator,
        };
        assert!(limiter.check(&a, limit, Budget::General).is_ok());
        assert!(limiter.check(&a, limit, Budget::General).is_ok());
        let error = limiter.check(&a, limit, Budget::General).unwrap_err();
        assert_eq!(error.status, 429);
        assert!(error.retry_after.is_some());
        assert!(
            limiter.check(&b, limit, Budget::General).is_ok(),
            "another token has its own budget"
        );
        assert!(
            limiter.check(&a, limit, Budget::Lookups).is_ok(),
            "lookups have their own budget"
        );
    }
}
