//! The HTTP control plane (axum): the only module that speaks HTTP.
//!
//! - `datacenters.rs`: reports, datacenter state, drains (per datacenter and of the instance);
//! - `explain.rs`: `GET /v1/explain`;
//! - `configuration.rs`: reload, the running configuration, its versions and diffs;
//! - `audit.rs`: the audit log;
//! - `probes.rs`: `/metrics`, `/healthz`, `/readyz`;
//! - `users/`: the user directory (lookups, pins, bucket moves, import, export, restore);
//! - `write.rs`: what every write shares (admission, bounded JSON bodies, audit entries, outcome);
//! - `auth.rs`: bearer tokens, roles and per-token rate limits;
//! - `error.rs`: [`ApiError`], a status plus a JSON body naming the problem;
//! - this file: the router, its route list and the OpenAPI document.
//!
//! Reads come from the current snapshot; writes go to the state manager
//! ([`crate::state::StateHandle`]), which stores and publishes them before the handler answers.

mod audit;
mod auth;
mod configuration;
mod datacenters;
mod error;
mod explain;
mod probes;
mod users;
mod write;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

pub use auth::{Caller, Limiter, Need};
pub use error::ApiError;

use crate::dns::Shared;
use crate::metrics::Metrics;
use crate::state::{Clock, Readiness, StateHandle};
use crate::store::Store;

/// How long one control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every route: method and path template. The OpenAPI document must describe exactly these
/// (a test checks both ways).
pub const ROUTES: &[(Method, &str)] = &[
    (Method::PUT, "/v1/datacenters/{dc}/report"),
    (Method::GET, "/v1/datacenters"),
    (Method::GET, "/v1/datacenters/{dc}"),
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
}

/// The OpenAPI document of the control plane.
#[derive(OpenApi)]
#[openapi(
    info(title = "meridian control plane", description = "Datacenter reports, drains, explanations, configuration and metrics of a meridian DNS load balancer."),
    paths(
        datacenters::put_report, datacenters::list_datacenters, datacenters::get_datacenter,
        datacenters::drain, datacenters::undrain, datacenters::drain_instance,
        datacenters::undrain_instance, explain::explain, configuration::reload,
        configuration::get_config, configuration::config_versions, configuration::config_diff,
        audit::audit_log, users::get_user, users::pin, users::unpin, users::summary,
        users::move_buckets, users::import, users::export, users::restore, openapi,
        probes::metrics, probes::healthz, probes::readyz
    ),
    modifiers(&BearerAuth)
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
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "the OpenAPI document")))]
async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// The control plane's routes.
pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/v1/datacenters/{dc}/report", put(datacenters::put_report))
        .route("/v1/datacenters", get(datacenters::list_datacenters))
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
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// Counts requests by route template (bounded) and status.
async fn count_requests(
    State(state): State<ControlState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| ROUTES.iter().find(|(_, p)| *p == path.as_str()))
        .map_or("unmatched", |(_, p)| *p);
    let response = next.run(request).await;
    state.metrics.record_http(route, response.status().as_u16());
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
}
