//! What monitoring reads: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (serving, not drained, not shutting down).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::metrics::Sampler;

use super::ControlState;

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<ControlState>) -> Response {
    // The traffic record sits below `metrics` and counts its own drops.
    state.metrics.samples().catch_up(
        Sampler::Traffic,
        state.traffic.dropped(std::time::Instant::now()),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process is alive", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: serving, not drained, not shutting down, and the state store writes.
#[utoipa::path(get, path = "/readyz",
    responses((status = 200, description = "ready for traffic", body = String),
        (status = 503, description = "not ready: starting, drained, shutting down, the state store cannot write, or the fleet's configuration version could not be loaded here (the reason follows)", body = String)))]
pub(crate) async fn readyz(State(state): State<ControlState>) -> (StatusCode, String) {
    if state.readiness.get() {
        (StatusCode::OK, "ready\n".to_owned())
    } else if state.readiness.store_failing() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the state store cannot write (the control plane is read-only)\n".to_owned(),
        )
    } else if let Some(reason) = state.readiness.config_rejected() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned())
    }
}
