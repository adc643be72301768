//! Internal errors as the control plane meets them, and `GET /v1/errors`.
//!
//! - A panic in a request handler is caught at the framework boundary (tower-http's
//!   `CatchPanic`), answered with a 500 JSON error, logged with the route, and kept.
//! - Any other 500 (a store failure, a blocking task that failed) is logged with its route and
//!   message by the `observe` middleware of `mod.rs` and kept ([`record_failure`]): handlers only
//!   return it.
//!
//! Both are counted in `meridian_internal_errors_total{kind}` and kept in the ring of
//! [`Metrics`] (which DNS panics, store failures of the state manager and panics of background
//! tasks reach too); `GET /v1/errors` shows it.

use std::any::Any;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::ToSchema;

use crate::metrics::{ErrorKind, InternalError, Metrics, panic_message};
use crate::state::{Clock, unix_ms};

use super::ControlState;
use super::auth::Need;
use super::error::{ApiError, Failure};
use super::write::admit;

/// One caught error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ErrorRecord {
    /// When, in milliseconds since the Unix epoch.
    unix_ms: u64,
    /// What kind: `panic`, `store` or `internal`.
    kind: &'static str,
    /// Where: `http PUT /v1/log`, `dns udp`, `dns tcp`, `task state-manager`,
    /// `store apply report eu-west`.
    context: String,
    /// The panic's or the failure's message.
    message: String,
}

impl From<InternalError> for ErrorRecord {
    fn from(error: InternalError) -> Self {
        ErrorRecord {
            unix_ms: error.unix_ms,
            kind: error.kind.label(),
            context: error.context,
            message: error.message,
        }
    }
}

/// The layer that turns a handler's panic into a 500 JSON answer, a log line, a count and a
/// ring entry.
pub(crate) fn catch_panics(
    metrics: Arc<Metrics>,
    clock: Clock,
) -> CatchPanicLayer<impl Fn(Box<dyn Any + Send + 'static>) -> Response + Clone> {
    CatchPanicLayer::custom(move |payload: Box<dyn Any + Send + 'static>| {
        let message = panic_message(payload.as_ref());
        tracing::error!(%message, "a control-plane handler panicked; the request got a 500");
        metrics.keep_error(InternalError {
            unix_ms: unix_ms(clock.now()),
            kind: ErrorKind::Panic,
            context: "http".to_owned(),
            message,
        });
        let mut response =
            ApiError::internal("the request failed inside the server; see GET /v1/errors")
                .into_response();
        // Kept above; not again by `record_failure`.
        response.extensions_mut().remove::<Failure>();
        response
    })
}

/// Logs and keeps the failure a 500 response carries (see [`Failure`]), with the request's
/// method and route.
pub(super) fn record_failure(
    metrics: &Metrics,
    clock: &Clock,
    response: &Response,
    method: &str,
    route: &str,
) {
    let Some(Failure { kind, message }) = response.extensions().get::<Failure>() else {
        return;
    };
    tracing::error!(%method, route, kind = kind.label(), %message, "a control-plane request failed inside the server");
    metrics.keep_error(InternalError {
        unix_ms: unix_ms(clock.now()),
        kind: *kind,
        context: format!("http {method} {route}"),
        message: message.clone(),
    });
}

/// The most recent internal errors, oldest first (operator).
#[utoipa::path(get, path = "/v1/errors", security(("bearer" = [])),
    responses((status = 200, description = "the most recent internal errors (at most 256), oldest first", body = [ErrorRecord])))]
pub(crate) async fn list_errors(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ErrorRecord>>, ApiError> {
    let snapshot = state.shared.load();
    admit(&state, &snapshot, &headers, Need::Operator)?;
    Ok(Json(
        state
            .metrics
            .recent_errors()
            .into_iter()
            .map(ErrorRecord::from)
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use axum::Router;
    use axum::routing::get;

    use super::*;

    /// A handler made to panic, behind the same layer as the control plane's routes, over real
    /// HTTP: the request gets a 500 JSON error, the server keeps answering, and the panic is
    /// logged, counted and kept.
    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
        let metrics = Arc::new(Metrics::new());
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let router = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(catch_panics(metrics.clone(), clock));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::new();
        for _ in 0..2 {
            let boom = client
                .get(format!("http://{addr}/boom"))
                .send()
                .await
                .expect("an answer");
            assert_eq!(boom.status(), 500);
            let body: serde_json::Value = boom.json().await.expect("a JSON body");
            assert_eq!(body["error"], "internal", "{body}");
        }
        let fine = client
            .get(format!("http://{addr}/fine"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(fine.text().await.expect("a body"), "fine");
        let kept = metrics.recent_errors();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].message, "injected by the test");
        assert_eq!(kept[0].unix_ms, 1_800_000_000_000);
        assert!(
            metrics
                .render()
                .contains("meridian_internal_errors_total{kind=\"panic\"} 2")
        );
        server.abort();
    }

    /// A 500 a handler returns is logged and kept with its route by `record_failure`, once;
    /// other errors, and 500s already kept by whoever decided them, are not.
    #[test]
    fn a_returned_500_is_kept_with_its_route() {
        let metrics = Metrics::new();
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let failed = ApiError::store_failed("the state store failed: boom").into_response();
        record_failure(&metrics, &clock, &failed, "PUT", "/v1/log");
        for other in [
            ApiError::bad_request("no").into_response(),
            ApiError::read_only("full").into_response(),
            ApiError {
                kind: None,
                ..ApiError::internal("kept already")
            }
            .into_response(),
        ] {
            record_failure(&metrics, &clock, &other, "PUT", "/v1/log");
        }
        let kept = metrics.recent_errors();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].kind, ErrorKind::Store);
        assert_eq!(kept[0].context, "http PUT /v1/log");
        assert_eq!(kept[0].message, "the state store failed: boom");
    }

    /// A handler that always panics, as a bug would.
    async fn boom() -> &'static str {
        panic!("injected by the test")
    }
}
