//! The HTTP control plane (axum): the only module that speaks HTTP.
//!
//! - `datacenters.rs`: reports, datacenter state, drains (per datacenter and of the instance);
//! - `explain.rs`: `GET /v1/explain`;
//! - `configuration.rs`: reload, the running configuration, its versions and diffs;
//! - `audit.rs`: the audit log;
//! - `errors.rs`: panics in handlers and 500s logged, counted and kept; `GET /v1/errors`;
//! - `log.rs`: `PUT /v1/log`, the log filter changed at runtime for a while;
//! - `querylog.rs`: `GET`/`PUT /v1/querylog`, the query log's rate changed at runtime for a while;
//! - `banned.rs`: `GET`/`POST /v1/banned`, `DELETE /v1/banned/{id}`, banned-query rules;
//! - `simulate.rs`: `GET /v1/traffic` and `POST /v1/simulate`, what-if over the recorded traffic;
//! - `toggles.rs`: `GET /v1/toggles`, `PUT /v1/toggles/{name}`, the feature toggles;
//! - `probes.rs`: `/metrics`, `/healthz`, `/readyz`;
//! - `users/`: the user directory (lookups, pins, bucket moves, import, export, restore);
//! - `write.rs`: what every write shares (admission, bounded JSON bodies, audit entries, outcome);
//! - `auth.rs`: bearer tokens, roles, and rate limits per address and per token;
//! - `serve.rs`: the HTTP accept loop (connection cap, header and idle timeouts, accept errors);
//! - `fuzzing.rs`: the request decoders as plain functions, for the fuzz targets in `fuzz/`;
//! - `error.rs`: [`ApiError`], a status plus a JSON body naming the problem;
//! - this file: the router, its route list and the OpenAPI document.
//!
//! Reads come from the current snapshot; writes go to the state manager
//! ([`crate::state::StateHandle`]), which stores and publishes them before the handler answers.

mod audit;
mod auth;
mod banned;
mod configuration;
mod datacenters;
mod error;
mod errors;
mod explain;
mod extract;
mod fleet;
pub mod fuzzing;
mod log;
mod openapi;
mod probes;
mod querylog;
mod serve;
mod simulate;
mod toggles;
mod users;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use tracing::info;
use utoipa::OpenApi;

pub use auth::{AddressKey, Budget, Caller, Limiter, Need};
pub use error::ApiError;
pub use log::{LogLevels, SetFilter};
pub use serve::serve;
pub use simulate::simulate_offline;

use openapi::StandardResponses;

use crate::dns::Shared;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::querylog::QueryLog;
use crate::state::{Clock, Readiness, StateHandle};
use crate::store::Store;
use crate::traffic::Traffic;

/// How long one control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every route: method and path template. The OpenAPI document must describe exactly these
/// (a test checks both ways).
pub const ROUTES: &[(Method, &str)] = &[
    (Method::PUT, "/v1/datacenters/{dc}/report"),
    (Method::GET, "/v1/datacenters"),
    (Method::GET, "/v1/datacenters/{dc}"),
    (Method::GET, "/v1/fleet"),
    (Method::POST, "/v1/datacenters/{dc}/drain"),
    (Method::POST, "/v1/datacenters/{dc}/undrain"),
    (Method::POST, "/v1/drain"),
    (Method::POST, "/v1/undrain"),
    (Method::GET, "/v1/explain"),
    (Method::POST, "/v1/reload"),
    (Method::GET, "/v1/config"),
    (Method::GET, "/v1/config/versions"),
    (Method::GET, "/v1/config/diff"),
    (Method::GET, "/v1/audit"),
    (Method::PUT, "/v1/log"),
    (Method::GET, "/v1/querylog"),
    (Method::PUT, "/v1/querylog"),
    (Method::GET, "/v1/errors"),
    (Method::GET, "/v1/traffic"),
    (Method::POST, "/v1/simulate"),
    (Method::GET, "/v1/toggles"),
    (Method::PUT, "/v1/toggles/{name}"),
    (Method::GET, "/v1/banned"),
    (Method::POST, "/v1/banned"),
    (Method::DELETE, "/v1/banned/{id}"),
    (Method::GET, "/v1/users/{id}"),
    (Method::PUT, "/v1/users/{id}/pin"),
    (Method::DELETE, "/v1/users/{id}/pin"),
    (Method::GET, "/v1/directory"),
    (Method::POST, "/v1/directory/buckets"),
    (Method::POST, "/v1/directory/import"),
    (Method::GET, "/v1/directory/export"),
    (Method::POST, "/v1/directory/restore"),
    (Method::GET, "/v1/openapi.json"),
    (Method::GET, "/metrics"),
    (Method::GET, "/healthz"),
    (Method::GET, "/readyz"),
];

/// What the handlers share.
#[derive(Clone)]
pub struct ControlState {
    /// The current snapshot (reads).
    pub shared: Shared,
    /// The state manager (writes).
    pub handle: StateHandle,
    /// The store, for the audit log and configuration versions.
    pub store: Arc<Store>,
    /// Metrics, for `/metrics` and request counts.
    pub metrics: Arc<Metrics>,
    /// The control plane's clock.
    pub clock: Clock,
    /// `/readyz`.
    pub readiness: Readiness,
    /// Per-token rate limits, kept across reloads.
    pub limiter: Arc<Limiter>,
    /// The process's log filter, when it can be changed at runtime (`PUT /v1/log`).
    pub log_levels: Option<Arc<LogLevels>>,
    /// The sampled record of recent traffic, for `GET /v1/traffic` and simulations.
    pub traffic: Arc<Traffic>,
    /// The query log, whose rate `PUT /v1/querylog` changes.
    pub query_log: Arc<QueryLog>,
    /// The fleet's shared state, with the etcd backend (`GET /v1/fleet`).
    pub fleet: Option<Fleet>,
}

/// The OpenAPI document of the control plane.
#[derive(OpenApi)]
#[openapi(
    info(title = "meridian control plane", description = "Datacenter reports, drains, explanations, configuration and metrics of a meridian DNS load balancer."),
    paths(
        datacenters::put_report, datacenters::list_datacenters, datacenters::get_datacenter, fleet::get_fleet,
        datacenters::drain, datacenters::undrain, datacenters::drain_instance,
        datacenters::undrain_instance, explain::explain, configuration::reload,
        configuration::get_config, configuration::config_versions, configuration::config_diff,
        audit::audit_log, log::put_log, querylog::get_querylog, querylog::put_querylog, errors::list_errors, simulate::get_traffic, simulate::post_simulate,
        toggles::list_toggles, toggles::put_toggle, banned::list_banned, banned::ban,
        banned::unban, users::get_user, users::pin, users::unpin, users::summary,
        users::move_buckets, users::import, users::export, users::restore, openapi,
        probes::metrics, probes::healthz, probes::readyz
    ),
    modifiers(&BearerAuth, &StandardResponses)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json",
    responses((status = 200, description = "this OpenAPI document", body = Object)))]
async fn openapi(State(state): State<ControlState>) -> axum::Json<serde_json::Value> {
    axum::Json(openapi::for_deployment(&state.shared.load()))
}

/// The control plane's routes.
pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/v1/datacenters/{dc}/report", put(datacenters::put_report))
        .route("/v1/datacenters", get(datacenters::list_datacenters))
        .route("/v1/fleet", get(fleet::get_fleet))
        .route("/v1/datacenters/{dc}", get(datacenters::get_datacenter))
        .route("/v1/datacenters/{dc}/drain", post(datacenters::drain))
        .route("/v1/datacenters/{dc}/undrain", post(datacenters::undrain))
        .route("/v1/drain", post(datacenters::drain_instance))
        .route("/v1/undrain", post(datacenters::undrain_instance))
        .route("/v1/explain", get(explain::explain))
        .route("/v1/reload", post(configuration::reload))
        .route("/v1/config", get(configuration::get_config))
        .route("/v1/config/versions", get(configuration::config_versions))
        .route("/v1/config/diff", get(configuration::config_diff))
        .route("/v1/audit", get(audit::audit_log))
        .route("/v1/log", put(log::put_log))
        .route(
            "/v1/querylog",
            get(querylog::get_querylog).put(querylog::put_querylog),
        )
        .route("/v1/errors", get(errors::list_errors))
        .route("/v1/traffic", get(simulate::get_traffic))
        .route("/v1/simulate", post(simulate::post_simulate))
        .route("/v1/toggles", get(toggles::list_toggles))
        .route("/v1/toggles/{name}", put(toggles::put_toggle))
        .route("/v1/banned", get(banned::list_banned).post(banned::ban))
        .route("/v1/banned/{id}", delete(banned::unban))
        .route("/v1/users/{id}", get(users::get_user))
        .route("/v1/users/{id}/pin", put(users::pin).delete(users::unpin))
        .route("/v1/directory", get(users::summary))
        .route("/v1/directory/buckets", post(users::move_buckets))
        .route("/v1/directory/import", post(users::import))
        .route("/v1/directory/export", get(users::export))
        .route("/v1/directory/restore", post(users::restore))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(probes::metrics))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(errors::catch_panics(
            state.metrics.clone(),
            state.clock.clone(),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), limit_address))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts every request against its client address's budget before anything else (and so before
/// authentication): a flood of unauthenticated or wrong-token requests is refused with 429 as
/// cheaply as possible. Directory lookups are counted against their own, larger budget. A request
/// without a peer address (none in production: [`serve`] records one for every connection) is
/// not limited here.
async fn limit_address(
    State(state): State<ControlState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let lookup = request.method() == Method::GET
            && request
                .extensions()
                .get::<MatchedPath>()
                .is_some_and(|path| path.as_str() == "/v1/users/{id}");
        let budget = if lookup {
            Budget::Lookups
        } else {
            Budget::General
        };
        let snapshot = state.shared.load();
        if let Err(error) =
            state
                .limiter
                .check_address(peer.ip(), &snapshot.loaded.config.control, budget)
        {
            return error.into_response();
        }
    }
    next.run(request).await
}

/// 404 for a path no route matches, with the JSON error body.
async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

/// 405 for a method a path does not have, with the JSON error body; the router adds `Allow`.
async fn no_method(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{} does not allow {method}", uri.path()))
}

/// Bounds, counts and logs every request: 408 (JSON) past [`REQUEST_TIMEOUT`], a count by route
/// template (bounded) and status, and one access log line at `info` (target
/// `meridian::access`: method, path, status, token name, duration to the response head).
/// The access log is for traffic; the audit log records what writes changed.
async fn observe(State(state): State<ControlState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| ROUTES.iter().find(|(_, p)| *p == path.as_str()))
        .map_or("unmatched", |(_, p)| *p);
    let (response, token) = auth::with_caller_slot(async {
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::request_timeout(format!(
                "the request took longer than {} s",
                REQUEST_TIMEOUT.as_secs()
            ))
            .into_response(),
        }
    })
    .await;
    let status = response.status().as_u16();
    state.metrics.record_http(route, status);
    errors::record_failure(
        &state.metrics,
        &state.clock,
        &response,
        method.as_str(),
        route,
    );
    info!(
        target: "meridian::access",
        %method,
        path,
        status,
        token = token.as_deref().unwrap_or("-"),
        duration_ms = started.elapsed().as_micros() as f64 / 1000.0,
        "http request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_exactly_the_routes() {
        let doc = ApiDoc::openapi();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (method, operation) in [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ] {
                if operation.is_some() {
                    documented.push((method.to_owned(), path.clone()));
                }
            }
        }
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.as_str().to_owned(), (*p).to_owned()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }

    /// Every operation of the served document, as JSON (what clients and validators read).
    fn operations() -> Vec<(String, serde_json::Value)> {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        let mut res = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                res.push((format!("{method} {path}"), operation.clone()));
            }
        }
        res
    }

    #[test]
    fn every_response_is_described() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        for (name, operation) in operations() {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let response = match response["$ref"].as_str() {
                    Some(reference) => {
                        let name = reference
                            .strip_prefix("#/components/responses/")
                            .expect("a response reference");
                        &doc["components"]["responses"][name]
                    }
                    None => response,
                };
                let description = response["description"].as_str().unwrap_or_default();
                assert!(!description.is_empty(), "{name} {status}");
            }
        }
    }

    #[test]
    fn shared_error_statuses_are_documented_where_they_can_occur() {
        for (name, operation) in operations() {
            let statuses = operation["responses"].as_object().expect("responses");
            let has = |status: &str| statuses.contains_key(status);
            assert!(has("200") && has("408") && has("429"), "{name}");
            if operation.get("security").is_some() {
                for status in ["401", "403"] {
                    assert!(has(status), "{name} {status}");
                }
            }
            if operation.get("requestBody").is_some() {
                assert!(has("400") && has("413"), "{name}");
            }
            if operation.get("parameters").is_some() {
                assert!(has("400"), "{name}");
            }
        }
    }

    #[test]
    fn optional_bodies_are_not_required() {
        for (name, operation) in operations() {
            // OpenAPI 3.1 §4.8.13: `required` defaults to false.
            let required = operation["requestBody"]["required"]
                .as_bool()
                .unwrap_or(false);
            // Drains take an empty body as "every service, no force".
            let optional = name.ends_with("/drain") || name.ends_with("/undrain");
            if operation.get("requestBody").is_some() {
                assert_eq!(required, !optional, "{name}");
            }
        }
    }
}
